//! The VRRPv3 state machine of [RFC 5798 §6.4], extended with a `Fault`
//! state and the fresh-proof quorum rule, and a make-before-break
//! `Leaving` state for planned stops. Pure: it takes an [`Event`] and
//! `now`, and returns the [`Action`]s for the shell to carry out; timers
//! are deadlines the shell sleeps until ([`Machine::next_deadline`]).
//!
//! States and the transitions this module implements:
//!
//! - `Initialize → Fault` on startup when quorum must be proven
//!   ([`Params::proof`]); the first successful proof makes it
//!   `Fault → Backup`. Without a proof rule: `Initialize → Backup` when the
//!   health says quorum, `Initialize → Fault` when it does not.
//! - `Backup → Master` when Master_Down_Timer fires (silence, a
//!   priority-0 advert followed by Skew_Time, or preemption of a
//!   lower-priority master) **and** a quorum proof whose request was
//!   issued at or after that moment has succeeded. Until it has, the
//!   backup is *claiming*: it re-issues a proof every [`ProofParams::retry`]
//!   and sends nothing; an advert from an acceptable master cancels the
//!   claim. A cached verdict never makes a master.
//! - `Master → Fault` when the newest successful proof was issued more
//!   than [`ProofParams::lease`] ago (a master renews every
//!   [`ProofParams::renew`]): it sends a priority-0 advert and removes the
//!   VIP at that deadline, so it never advertises or holds the VIP longer
//!   than the lease after its last proof.
//! - `Backup → Fault` the same way (no successful proof within the lease:
//!   the status says so, and a claim in progress is dropped);
//!   `Fault → Backup` on the next successful proof, with a fresh
//!   Master_Down_Timer, so it only claims if no one else is master.
//! - `Master → Backup` on an advert with a higher priority, or an equal
//!   priority from a higher primary address.
//! - `Backup | Master | Leaving → Fault` when the health input says no
//!   quorum (a veto from the embedding program; a master first sends a
//!   priority-0 advert and removes the VIP). `Fault` never claims the VIP.
//! - `Master → Leaving` on shutdown: a priority-0 advert (repeated every
//!   interval) while the VIP stays; `Leaving → Initialize` (VIP removed)
//!   as soon as a successor's advert arrives, or after
//!   [`Machine::handover_bound`] without one, or at once when the lease
//!   runs out. The successor claims after its Skew_Time and a fresh proof;
//!   having taken over from a master that announced priority 0, it sends
//!   its advert first and adds the VIP [`HANDOVER_GAP`] later, the time
//!   for the leaving master to hear it and remove the address: break
//!   before make, with a gap of milliseconds where RFC 5798's
//!   remove-first leaves the address unanswered for Skew_Time.
//! - `any other → Initialize` on shutdown.
//!
//! Preempt delay (keepalived's `preempt_delay`, not in RFC 5798): a backup
//! with preemption on keeps accepting adverts from a lower-priority master
//! until that master has been seen for the delay, then ignores them and
//! takes over (with a fresh proof) when Master_Down_Timer fires.
//!
//! [RFC 5798 §6.4]: https://www.rfc-editor.org/rfc/rfc5798#section-6.4

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Bounds of the fresh-proof quorum rule (see the crate docs for why
/// these values). Every duration is measured from the moment a proof's
/// request was *issued*: a successful proof shows that the local etcd
/// member reached a quorum at some moment after that.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProofParams {
    /// A master issues a new proof this often.
    pub renew: Duration,
    /// A proof is valid this long after its request was issued; a master
    /// whose newest successful proof is older resigns.
    pub lease: Duration,
    /// A claiming backup issues another proof this often until one
    /// succeeds.
    pub retry: Duration,
    /// Backups and faulted nodes check this often (status, and
    /// `Fault → Backup`).
    pub poll: Duration,
}

/// Fixed parameters of one virtual router instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    /// Virtual router id.
    pub vrid: u8,
    /// Priority when every health check passes (1..=254).
    pub priority: u8,
    /// Our advertisement interval in centiseconds.
    pub interval_cs: u16,
    /// Preempt a lower-priority master.
    pub preempt: bool,
    /// How long a lower-priority master is tolerated before preempting.
    pub preempt_delay: Duration,
    /// Our primary address on the interface (the tie-breaker).
    pub local_addr: Ipv4Addr,
    /// Gratuitous ARPs sent on becoming master.
    pub garp_burst: u8,
    /// Spacing between the gratuitous ARPs of a burst.
    pub garp_spacing: Duration,
    /// Period of the refresh gratuitous ARP while master.
    pub garp_refresh: Duration,
    /// The fresh-proof rule; `None` is plain keepalived behaviour (quorum
    /// taken from the health input alone).
    pub proof: Option<ProofParams>,
}

/// The state of the instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Not started, or shut down.
    Initialize,
    /// Listening to a master; takes over when it goes silent.
    Backup,
    /// Holding the VIP and advertising.
    Master,
    /// No proven quorum: never holds or claims the VIP.
    Fault,
    /// Stopping: still holds the VIP, advertises priority 0 until a
    /// successor is heard (bounded).
    Leaving,
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            State::Initialize => "initialize",
            State::Backup => "backup",
            State::Master => "master",
            State::Fault => "fault",
            State::Leaving => "leaving",
        })
    }
}

/// What the health input says about this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Health {
    /// False vetoes mastership (`Fault`). True is necessary, not
    /// sufficient, when a proof rule is set: a claim still needs a fresh
    /// proof.
    pub quorum: bool,
    /// Sum of the weights of the failing weighted checks, subtracted from
    /// the configured priority (floored at 1).
    pub penalty: u8,
}

impl Health {
    /// Healthy: quorum and no penalty.
    pub const OK: Health = Health {
        quorum: true,
        penalty: 0,
    };
    /// No quorum (also the state before the first check completes).
    pub const NO_QUORUM: Health = Health {
        quorum: false,
        penalty: 0,
    };
}

/// An input to the machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The instance starts.
    Startup,
    /// A valid advertisement for our router id arrived.
    Advert {
        /// Sender's address.
        src: Ipv4Addr,
        /// Sender's priority.
        priority: u8,
        /// Sender's advertisement interval, centiseconds.
        interval_cs: u16,
    },
    /// The health input changed.
    Health(Health),
    /// A quorum proof requested with [`Action::Prove`] finished.
    Proof {
        /// When its request was issued (before it was sent).
        issued: Instant,
        /// It succeeded.
        ok: bool,
    },
    /// A deadline from [`Machine::next_deadline`] passed.
    Timer,
    /// Graceful shutdown.
    Shutdown,
}

/// Something for the shell to do, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Send an advertisement with this priority.
    SendAdvert {
        /// Priority to advertise (0 when leaving).
        priority: u8,
    },
    /// Add the VIP to the interface.
    AddVip,
    /// Remove the VIP from the interface.
    RemoveVip,
    /// Send one gratuitous ARP for the VIP.
    SendGarp,
    /// Issue one quorum proof now and report it as [`Event::Proof`],
    /// stamped with the moment it was issued.
    Prove,
}

/// A state change, for the status and the logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// When it happened.
    pub at: Instant,
    /// Previous state.
    pub from: State,
    /// New state.
    pub to: State,
}

/// Skew_Time = ((256 − priority) × interval) / 256 (RFC 5798 §6.1), with
/// the interval in centiseconds; returned as a duration in microseconds
/// precision.
pub fn skew_time(priority: u8, interval_cs: u16) -> Duration {
    let us = (256 - u64::from(priority)) * u64::from(interval_cs) * 10_000 / 256;
    Duration::from_micros(us)
}

/// Master_Down_Interval = 3 × interval + Skew_Time (RFC 5798 §6.1).
pub fn master_down_interval(priority: u8, interval_cs: u16) -> Duration {
    cs(interval_cs) * 3 + skew_time(priority, interval_cs)
}

/// After a handover (the previous master announced priority 0 and still
/// holds the VIP until it hears us), a new master adds the VIP this long
/// after its first advert: the leaving master's time to remove it.
pub const HANDOVER_GAP: Duration = Duration::from_millis(20);

fn cs(centis: u16) -> Duration {
    Duration::from_millis(u64::from(centis) * 10)
}

/// One VRRP instance's state and timers.
#[derive(Debug, Clone)]
pub struct Machine {
    params: Params,
    state: State,
    health: Health,
    master_adver_interval_cs: u16,
    master_down_at: Option<Instant>,
    adver_at: Option<Instant>,
    garp_at: Option<Instant>,
    garps_left: u8,
    lower_master_since: Option<Instant>,
    holder: Option<Ipv4Addr>,
    last_transition: Option<Transition>,
    /// Issue time of the newest successful proof plus the lease.
    proven_until: Option<Instant>,
    /// Set while a backup claims: proofs issued before it do not count.
    claim_since: Option<Instant>,
    /// When to issue the next proof.
    prove_at: Option<Instant>,
    /// While leaving: when to give up waiting for a successor.
    leave_until: Option<Instant>,
    /// When a master (priority > 0) was last heard, or the instance
    /// started: the start of the current silence.
    heard_at: Option<Instant>,
    /// The VIP is on the interface (we told the shell to add it).
    vip_held: bool,
    /// A new master adds the VIP then (after a handover).
    vip_at: Option<Instant>,
    /// The master we followed announced priority 0 (it is leaving).
    handover_from: Option<Ipv4Addr>,
}

impl Machine {
    /// A machine in `Initialize`; nothing is claimed before the health
    /// says quorum and, with a proof rule, before a proof succeeds.
    pub fn new(params: Params, health: Health) -> Self {
        let interval = params.interval_cs;
        Machine {
            params,
            state: State::Initialize,
            health,
            master_adver_interval_cs: interval,
            master_down_at: None,
            adver_at: None,
            garp_at: None,
            garps_left: 0,
            lower_master_since: None,
            holder: None,
            last_transition: None,
            proven_until: None,
            claim_since: None,
            prove_at: None,
            leave_until: None,
            heard_at: None,
            vip_held: false,
            vip_at: None,
            handover_from: None,
        }
    }

    /// Whether the VIP is on the interface (a new master may hold it a
    /// [`HANDOVER_GAP`] later than it became master).
    pub fn holds_vip(&self) -> bool {
        self.vip_held
    }

    /// Current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// The parameters.
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// Current health input.
    pub fn health(&self) -> Health {
        self.health
    }

    /// Whether quorum counts as held at `now`: the health input says so
    /// and, with a proof rule, a proof issued less than the lease ago
    /// succeeded.
    pub fn quorum(&self, now: Instant) -> bool {
        self.health.quorum
            && (self.params.proof.is_none() || self.proven_until.is_some_and(|u| now < u))
    }

    /// Until when the newest successful proof is valid (issue + lease).
    pub fn proven_until(&self) -> Option<Instant> {
        self.proven_until
    }

    /// A backup waiting for a fresh proof to take over: since when.
    pub fn claiming_since(&self) -> Option<Instant> {
        self.claim_since
    }

    /// The priority we advertise now: configured minus penalty, at least 1.
    pub fn priority(&self) -> u8 {
        self.params
            .priority
            .saturating_sub(self.health.penalty)
            .max(1)
    }

    /// Who holds the VIP as far as we know (us when master or leaving).
    pub fn holder(&self) -> Option<Ipv4Addr> {
        self.holder
    }

    /// The last state change.
    pub fn last_transition(&self) -> Option<Transition> {
        self.last_transition
    }

    /// The master's advertisement interval we currently time against.
    pub fn master_adver_interval_cs(&self) -> u16 {
        self.master_adver_interval_cs
    }

    /// How long a leaving master keeps the VIP waiting for a successor:
    /// Master_Down_Interval at priority 1 (the slowest backup's silence
    /// timer), which covers a successor's Skew_Time plus its proof with a
    /// wide margin, and a lost first priority-0 advert.
    pub fn handover_bound(&self) -> Duration {
        master_down_interval(1, self.params.interval_cs)
    }

    /// The earliest pending deadline; the shell sends [`Event::Timer`]
    /// once it passes.
    pub fn next_deadline(&self) -> Option<Instant> {
        let lease = match self.state {
            State::Master | State::Backup | State::Leaving if self.params.proof.is_some() => {
                self.proven_until
            }
            _ => None,
        };
        [
            self.master_down_at,
            self.adver_at,
            self.garp_at,
            self.prove_at,
            lease,
            self.leave_until,
            self.vip_at,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn master_down_interval(&self) -> Duration {
        master_down_interval(self.priority(), self.master_adver_interval_cs)
    }

    fn go(&mut self, to: State, now: Instant) {
        if self.state != to {
            self.last_transition = Some(Transition {
                at: now,
                from: self.state,
                to,
            });
            self.state = to;
        }
        self.lower_master_since = None;
    }

    /// Clears the VRRP timers; the proof schedule is set by each `enter_*`.
    fn clear_timers(&mut self) {
        self.master_down_at = None;
        self.adver_at = None;
        self.garp_at = None;
        self.garps_left = 0;
        self.claim_since = None;
        self.leave_until = None;
        self.vip_at = None;
    }

    /// Removes the VIP if it is on the interface.
    fn drop_vip(&mut self, out: &mut Vec<Action>) {
        if self.vip_held {
            out.push(Action::RemoveVip);
            self.vip_held = false;
        }
    }

    /// Adds the VIP and starts the gratuitous ARP burst.
    fn add_vip(&mut self, now: Instant, out: &mut Vec<Action>) {
        out.push(Action::AddVip);
        out.push(Action::SendGarp);
        self.vip_held = true;
        self.vip_at = None;
        self.garps_left = self.params.garp_burst.saturating_sub(1);
        self.garp_at = Some(
            now + if self.garps_left > 0 {
                self.params.garp_spacing
            } else {
                self.params.garp_refresh
            },
        );
    }

    /// Schedules the next proof `period` from now (no-op without a rule).
    fn schedule_proof(&mut self, now: Instant, period: impl Fn(&ProofParams) -> Duration) {
        self.prove_at = self.params.proof.as_ref().map(|p| now + period(p));
    }

    /// Issues a proof now and schedules the next one.
    fn prove_now(
        &mut self,
        now: Instant,
        out: &mut Vec<Action>,
        period: impl Fn(&ProofParams) -> Duration,
    ) {
        if self.params.proof.is_some() {
            out.push(Action::Prove);
            self.schedule_proof(now, period);
        }
    }

    /// → Backup. Master_Down_Timer runs from the start of the current
    /// silence (the last master heard, else the start), so a node that
    /// was faulted while nobody advertised claims at once, and one that
    /// heard a master in the meantime waits the full interval.
    fn enter_backup(&mut self, now: Instant) {
        self.clear_timers();
        self.handover_from = None;
        self.master_adver_interval_cs = self.params.interval_cs;
        self.go(State::Backup, now);
        let silence = self.heard_at.unwrap_or(now);
        self.master_down_at = Some((silence + self.master_down_interval()).max(now));
        self.schedule_proof(now, |p| p.poll);
    }

    fn enter_fault(&mut self, now: Instant, out: &mut Vec<Action>) {
        if matches!(self.state, State::Master | State::Leaving) {
            out.push(Action::SendAdvert { priority: 0 });
            self.drop_vip(out);
            self.holder = None;
            // We were the master: the silence starts now.
            self.heard_at = Some(now);
        }
        self.handover_from = None;
        self.clear_timers();
        self.go(State::Fault, now);
        self.schedule_proof(now, |p| p.retry);
    }

    fn enter_master(&mut self, now: Instant, out: &mut Vec<Action>) {
        out.push(Action::SendAdvert {
            priority: self.priority(),
        });
        let handover = self.handover_from.take().is_some();
        self.clear_timers();
        self.go(State::Master, now);
        self.holder = Some(self.params.local_addr);
        self.adver_at = Some(now + cs(self.params.interval_cs));
        if handover {
            // Break before make: the leaving master removes the VIP on
            // our advert; we add it a moment later.
            self.vip_at = Some(now + HANDOVER_GAP);
        } else {
            self.add_vip(now, out);
        }
        self.schedule_proof(now, |p| p.renew);
    }

    /// Backup → claiming: the master-down decision is taken at `now`.
    /// Without a proof rule the backup becomes master at once.
    fn claim(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.params.proof.is_none() {
            self.enter_master(now, out);
            return;
        }
        self.master_down_at = None;
        self.claim_since = Some(now);
        self.prove_now(now, out, |p| p.retry);
    }

    /// Leaving | any → Initialize.
    fn stop(&mut self, now: Instant, out: &mut Vec<Action>) {
        self.drop_vip(out);
        self.handover_from = None;
        self.clear_timers();
        self.prove_at = None;
        self.holder = None;
        self.go(State::Initialize, now);
    }

    /// Feeds one event; returns what to do, in order.
    pub fn handle(&mut self, event: Event, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        match (self.state, event) {
            // Initialize → Fault until a proof succeeds (proof rule), else
            // Initialize → Backup (quorum) or Initialize → Fault.
            (State::Initialize, Event::Startup) => {
                self.heard_at = Some(now);
                if self.params.proof.is_some() {
                    self.enter_fault(now, &mut out);
                    self.prove_now(now, &mut out, |p| p.retry);
                } else if self.health.quorum {
                    self.enter_backup(now);
                } else {
                    self.enter_fault(now, &mut out);
                }
            }
            // Startup in any other phase is a no-op: already running.
            (_, Event::Startup) => {}
            // Before startup and after shutdown nothing but Startup matters.
            (State::Initialize, Event::Health(h)) => self.health = h,
            (State::Initialize, _) => {}

            // Master → Leaving: priority 0 now, the VIP until a successor
            // speaks (make-before-break).
            (State::Master, Event::Shutdown) => {
                out.push(Action::SendAdvert { priority: 0 });
                self.clear_timers();
                self.prove_at = None;
                self.go(State::Leaving, now);
                self.adver_at = Some(now + cs(self.params.interval_cs));
                self.leave_until = Some(now + self.handover_bound());
            }
            (State::Leaving, Event::Shutdown) => {}
            (_, Event::Shutdown) => self.stop(now, &mut out),

            (state, Event::Health(h)) => {
                let before = self.priority();
                self.health = h;
                match state {
                    // Backup | Master | Leaving → Fault: vetoed.
                    State::Backup | State::Master | State::Leaving if !h.quorum => {
                        if state == State::Leaving {
                            self.stop(now, &mut out);
                        } else {
                            self.enter_fault(now, &mut out);
                        }
                    }
                    // Fault → Backup once quorum is back (and proven).
                    State::Fault if self.quorum(now) => self.enter_backup(now),
                    // A master tells the others its new priority at once,
                    // so a healthier backup can preempt without waiting.
                    State::Master if self.priority() != before => {
                        out.push(Action::SendAdvert {
                            priority: self.priority(),
                        });
                        self.adver_at = Some(now + cs(self.params.interval_cs));
                    }
                    _ => {}
                }
            }

            (state, Event::Proof { issued, ok }) => {
                if let (true, Some(p)) = (ok, self.params.proof) {
                    let until = issued + p.lease;
                    // A proof that took longer than the lease proves nothing now.
                    if now < until {
                        self.proven_until = Some(self.proven_until.map_or(until, |u| u.max(until)));
                    }
                }
                let fresh =
                    ok && self.quorum(now) && self.claim_since.is_some_and(|since| issued >= since);
                match state {
                    // Fault → Backup: quorum proven again.
                    State::Fault if self.quorum(now) => self.enter_backup(now),
                    // Backup → Master: a proof issued after the decision.
                    State::Backup if fresh => self.enter_master(now, &mut out),
                    _ => {}
                }
            }

            (State::Fault, Event::Advert { src, priority, .. }) => {
                // Only track who holds it (and since when it is silent);
                // never claim.
                self.holder = (priority != 0).then_some(src);
                if priority != 0 {
                    self.heard_at = Some(now);
                }
            }
            (State::Fault, Event::Timer) => {
                if self.prove_at.is_some_and(|t| t <= now) {
                    self.prove_now(now, &mut out, |p| p.retry);
                }
            }

            (
                State::Backup,
                Event::Advert {
                    src,
                    priority,
                    interval_cs,
                },
            ) => self.backup_advert(src, priority, interval_cs, now),
            (State::Backup, Event::Timer) => {
                if self.params.proof.is_some() && !self.quorum(now) {
                    // Backup → Fault: nothing proven within the lease.
                    self.enter_fault(now, &mut out);
                    self.prove_now(now, &mut out, |p| p.retry);
                } else if self.master_down_at.is_some_and(|t| t <= now) {
                    // Backup → claiming (→ Master): the master went silent.
                    self.claim(now, &mut out);
                } else if self.prove_at.is_some_and(|t| t <= now) {
                    if self.claim_since.is_some() {
                        self.prove_now(now, &mut out, |p| p.retry);
                    } else {
                        self.prove_now(now, &mut out, |p| p.poll);
                    }
                }
            }

            (
                State::Master,
                Event::Advert {
                    src,
                    priority,
                    interval_cs,
                },
            ) => self.master_advert(src, priority, interval_cs, now, &mut out),
            (State::Master, Event::Timer) => {
                if self.params.proof.is_some() && !self.quorum(now) {
                    // Master → Fault: the lease ran out without a renewal.
                    self.enter_fault(now, &mut out);
                    self.prove_now(now, &mut out, |p| p.retry);
                    return out;
                }
                if self.vip_at.is_some_and(|t| t <= now) {
                    self.add_vip(now, &mut out);
                }
                if self.prove_at.is_some_and(|t| t <= now) {
                    self.prove_now(now, &mut out, |p| p.renew);
                }
                if self.adver_at.is_some_and(|t| t <= now) {
                    out.push(Action::SendAdvert {
                        priority: self.priority(),
                    });
                    self.adver_at = Some(now + cs(self.params.interval_cs));
                }
                if self.garp_at.is_some_and(|t| t <= now) {
                    out.push(Action::SendGarp);
                    if self.garps_left > 0 {
                        self.garps_left -= 1;
                    }
                    self.garp_at = Some(
                        now + if self.garps_left > 0 {
                            self.params.garp_spacing
                        } else {
                            self.params.garp_refresh
                        },
                    );
                }
            }

            // Leaving → Initialize: a successor is master.
            (State::Leaving, Event::Advert { priority, .. }) if priority != 0 => {
                self.stop(now, &mut out);
            }
            (State::Leaving, Event::Advert { .. }) => {}
            (State::Leaving, Event::Timer) => {
                let lease_over = self.params.proof.is_some() && !self.quorum(now);
                if lease_over || self.leave_until.is_some_and(|t| t <= now) {
                    // Leaving → Initialize: no successor in time, or no
                    // more proof to hold the VIP on.
                    self.stop(now, &mut out);
                } else if self.adver_at.is_some_and(|t| t <= now) {
                    out.push(Action::SendAdvert { priority: 0 });
                    self.adver_at = Some(now + cs(self.params.interval_cs));
                }
            }
        }
        out
    }

    fn backup_advert(&mut self, src: Ipv4Addr, priority: u8, interval_cs: u16, now: Instant) {
        if priority == 0 {
            // The master is leaving: take over after Skew_Time alone (a
            // repeated priority 0 never postpones an earlier deadline, and
            // a claim in progress goes on). It keeps the VIP until it
            // hears its successor: remember to leave it that moment.
            if self.holder == Some(src) {
                self.handover_from = Some(src);
            }
            self.holder = None;
            if self.claim_since.is_none() {
                let at = now + skew_time(self.priority(), self.master_adver_interval_cs);
                self.master_down_at = Some(self.master_down_at.map_or(at, |t| t.min(at)));
            }
            return;
        }
        self.holder = Some(src);
        self.heard_at = Some(now);
        let lower = priority < self.priority();
        let tolerate = if self.params.preempt && lower {
            let since = *self.lower_master_since.get_or_insert(now);
            now < since + self.params.preempt_delay
        } else {
            self.lower_master_since = None;
            true
        };
        if tolerate {
            // A master is there: any claim in progress is dropped.
            self.claim_since = None;
            self.handover_from = None;
            self.master_adver_interval_cs = interval_cs;
            self.master_down_at = Some(now + self.master_down_interval());
        }
        // Otherwise discard: Master_Down_Timer fires and we preempt.
    }

    fn master_advert(
        &mut self,
        src: Ipv4Addr,
        priority: u8,
        interval_cs: u16,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        if priority == 0 {
            // Another master is leaving: assert ourselves at once.
            out.push(Action::SendAdvert {
                priority: self.priority(),
            });
            self.adver_at = Some(now + cs(self.params.interval_cs));
            return;
        }
        let ours = self.priority();
        if priority > ours || (priority == ours && src > self.params.local_addr) {
            // Master → Backup: a better master exists.
            self.drop_vip(out);
            self.clear_timers();
            self.go(State::Backup, now);
            self.heard_at = Some(now);
            self.holder = Some(src);
            self.master_adver_interval_cs = interval_cs;
            self.master_down_at = Some(now + self.master_down_interval());
            self.schedule_proof(now, |p| p.poll);
        }
        // Otherwise discard: it will yield to our adverts.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 5);
    const LOW: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
    const HIGH: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 9);

    fn params() -> Params {
        Params {
            vrid: 7,
            priority: 100,
            interval_cs: 20,
            preempt: true,
            preempt_delay: Duration::ZERO,
            local_addr: ME,
            garp_burst: 3,
            garp_spacing: Duration::from_millis(100),
            garp_refresh: Duration::from_secs(10),
            proof: None,
        }
    }

    fn advert(src: Ipv4Addr, priority: u8) -> Event {
        Event::Advert {
            src,
            priority,
            interval_cs: 20,
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A machine already in Backup at `t0`.
    fn backup(p: Params) -> (Machine, Instant) {
        let t0 = Instant::now();
        let mut m = Machine::new(p, Health::OK);
        assert!(m.handle(Event::Startup, t0).is_empty());
        assert_eq!(m.state(), State::Backup);
        (m, t0)
    }

    /// A machine already in Master at the returned instant.
    fn master(p: Params) -> (Machine, Instant) {
        let (mut m, _) = backup(p);
        let t = m.next_deadline().unwrap();
        m.handle(Event::Timer, t);
        assert_eq!(m.state(), State::Master);
        (m, t)
    }

    #[test]
    fn skew_formula_matches_rfc() {
        // RFC 5798 §6.1 with interval 100 cs: priority 100 → 156*100/256 cs.
        assert_eq!(skew_time(100, 100), Duration::from_micros(609_375));
        assert_eq!(skew_time(255, 100), Duration::from_micros(3_906));
        assert_eq!(skew_time(1, 20), Duration::from_micros(199_218));
        assert_eq!(
            master_down_interval(100, 20),
            Duration::from_millis(600) + Duration::from_micros(121_875)
        );
        // Higher priority waits less.
        assert!(master_down_interval(200, 20) < master_down_interval(100, 20));
    }

    #[test]
    fn startup_without_quorum_goes_to_fault_and_never_claims() {
        let t0 = Instant::now();
        let mut m = Machine::new(params(), Health::NO_QUORUM);
        assert!(m.handle(Event::Startup, t0).is_empty());
        assert_eq!(m.state(), State::Fault);
        assert_eq!(m.next_deadline(), None);
        // Silence for ages and timers: still no claim.
        assert!(m
            .handle(Event::Timer, t0 + Duration::from_secs(60))
            .is_empty());
        assert_eq!(m.state(), State::Fault);
        // A master's adverts are tracked as the holder, nothing more.
        assert!(m.handle(advert(LOW, 50), t0).is_empty());
        assert_eq!(m.holder(), Some(LOW));
    }

    #[test]
    fn backup_becomes_master_after_master_down_interval() {
        let (mut m, t0) = backup(params());
        let down = t0 + master_down_interval(100, 20);
        assert_eq!(m.next_deadline(), Some(down));
        assert!(m.handle(Event::Timer, down - ms(1)).is_empty());
        assert_eq!(
            m.handle(Event::Timer, down),
            vec![
                Action::SendAdvert { priority: 100 },
                Action::AddVip,
                Action::SendGarp
            ]
        );
        assert_eq!(m.state(), State::Master);
        assert_eq!(m.holder(), Some(ME));
        let tr = m.last_transition().unwrap();
        assert_eq!(
            (tr.from, tr.to, tr.at),
            (State::Backup, State::Master, down)
        );
    }

    #[test]
    fn master_advertises_every_interval_and_spaces_garps() {
        let (mut m, t) = master(params());
        // Burst: two more GARPs 100 ms apart, then refresh every 10 s.
        assert_eq!(m.handle(Event::Timer, t + ms(100)), vec![Action::SendGarp]);
        assert_eq!(
            m.handle(Event::Timer, t + ms(200)),
            vec![Action::SendAdvert { priority: 100 }, Action::SendGarp]
        );
        assert_eq!(m.next_deadline(), Some(t + ms(400)));
        assert_eq!(
            m.handle(Event::Timer, t + ms(400)),
            vec![Action::SendAdvert { priority: 100 }]
        );
        let refresh = t + ms(200) + Duration::from_secs(10);
        let mut now = t + ms(400);
        let mut garps = 0;
        while now < refresh {
            now = m.next_deadline().unwrap();
            garps += m
                .handle(Event::Timer, now)
                .iter()
                .filter(|a| **a == Action::SendGarp)
                .count();
        }
        assert_eq!(garps, 1);
    }

    #[test]
    fn backup_accepts_higher_or_equal_and_resets_timer() {
        let (mut m, t0) = backup(params());
        let t1 = t0 + ms(500);
        assert!(m.handle(advert(HIGH, 150), t1).is_empty());
        assert_eq!(m.holder(), Some(HIGH));
        assert_eq!(m.next_deadline(), Some(t1 + master_down_interval(100, 20)));
        // Equal priority also resets it.
        let t2 = t1 + ms(200);
        m.handle(advert(LOW, 100), t2);
        assert_eq!(m.next_deadline(), Some(t2 + master_down_interval(100, 20)));
    }

    #[test]
    fn backup_adopts_masters_interval() {
        let (mut m, t0) = backup(params());
        m.handle(
            Event::Advert {
                src: HIGH,
                priority: 200,
                interval_cs: 100,
            },
            t0,
        );
        assert_eq!(m.master_adver_interval_cs(), 100);
        assert_eq!(m.next_deadline(), Some(t0 + master_down_interval(100, 100)));
    }

    #[test]
    fn backup_with_preempt_ignores_lower_master_and_takes_over() {
        let (mut m, t0) = backup(params());
        let first = m.next_deadline().unwrap();
        m.handle(advert(LOW, 50), t0 + ms(100));
        // Not reset: the lower master's adverts are discarded.
        assert_eq!(m.next_deadline(), Some(first));
        assert_eq!(
            m.handle(Event::Timer, first)[0],
            Action::SendAdvert { priority: 100 }
        );
        assert_eq!(m.state(), State::Master);
    }

    #[test]
    fn backup_without_preempt_follows_lower_master() {
        let (mut m, t0) = backup(Params {
            preempt: false,
            ..params()
        });
        let t1 = t0 + ms(100);
        m.handle(advert(LOW, 50), t1);
        assert_eq!(m.next_deadline(), Some(t1 + master_down_interval(100, 20)));
    }

    #[test]
    fn preempt_delay_tolerates_lower_master_for_a_while() {
        let (mut m, t0) = backup(Params {
            preempt_delay: Duration::from_secs(2),
            ..params()
        });
        let t1 = t0 + ms(100);
        m.handle(advert(LOW, 50), t1);
        assert_eq!(m.next_deadline(), Some(t1 + master_down_interval(100, 20)));
        let t2 = t1 + Duration::from_secs(1);
        m.handle(advert(LOW, 50), t2);
        assert_eq!(m.next_deadline(), Some(t2 + master_down_interval(100, 20)));
        // After the delay the adverts no longer reset the timer.
        let t3 = t1 + Duration::from_secs(2);
        m.handle(advert(LOW, 50), t3);
        assert_eq!(m.next_deadline(), Some(t2 + master_down_interval(100, 20)));
    }

    #[test]
    fn backup_takes_over_after_skew_on_priority_zero() {
        let (mut m, t0) = backup(params());
        m.handle(advert(HIGH, 150), t0);
        let t1 = t0 + ms(100);
        assert!(m.handle(advert(HIGH, 0), t1).is_empty());
        assert_eq!(m.holder(), None);
        let at = t1 + skew_time(100, 20);
        assert_eq!(m.next_deadline(), Some(at));
        m.handle(Event::Timer, at);
        assert_eq!(m.state(), State::Master);
    }

    #[test]
    fn master_yields_to_higher_priority() {
        let (mut m, t) = master(params());
        let t1 = t + ms(50);
        assert_eq!(m.handle(advert(LOW, 150), t1), vec![Action::RemoveVip]);
        assert_eq!(m.state(), State::Backup);
        assert_eq!(m.holder(), Some(LOW));
        assert_eq!(m.next_deadline(), Some(t1 + master_down_interval(100, 20)));
    }

    #[test]
    fn master_tie_break_by_address() {
        let (mut m, t) = master(params());
        // Equal priority from a lower address: keep mastership.
        assert!(m.handle(advert(LOW, 100), t).is_empty());
        assert_eq!(m.state(), State::Master);
        // Equal priority from a higher address: yield.
        assert_eq!(m.handle(advert(HIGH, 100), t), vec![Action::RemoveVip]);
        assert_eq!(m.state(), State::Backup);
    }

    #[test]
    fn master_ignores_lower_and_answers_priority_zero() {
        let (mut m, t) = master(params());
        assert!(m.handle(advert(HIGH, 50), t).is_empty());
        assert_eq!(
            m.handle(advert(HIGH, 0), t + ms(10)),
            vec![Action::SendAdvert { priority: 100 }]
        );
        assert_eq!(m.state(), State::Master);
        // Next: the burst GARP at +100 ms, then the advert at +210 ms.
        assert_eq!(m.next_deadline(), Some(t + ms(100)));
    }

    #[test]
    fn master_losing_quorum_leaves_with_priority_zero() {
        let (mut m, t) = master(params());
        assert_eq!(
            m.handle(Event::Health(Health::NO_QUORUM), t),
            vec![Action::SendAdvert { priority: 0 }, Action::RemoveVip]
        );
        assert_eq!(m.state(), State::Fault);
        assert_eq!(m.next_deadline(), None);
        // Quorum back: Fault → Backup; Master_Down_Timer counts from the
        // start of the silence (our own resignation).
        let t1 = t + ms(300);
        assert!(m.handle(Event::Health(Health::OK), t1).is_empty());
        assert_eq!(m.state(), State::Backup);
        assert_eq!(m.next_deadline(), Some(t + master_down_interval(100, 20)));
    }

    #[test]
    fn backup_losing_quorum_goes_to_fault_and_ignores_master_down() {
        let (mut m, t0) = backup(params());
        assert!(m.handle(Event::Health(Health::NO_QUORUM), t0).is_empty());
        assert_eq!(m.state(), State::Fault);
        assert!(m.handle(advert(HIGH, 0), t0).is_empty());
        assert!(m
            .handle(Event::Timer, t0 + Duration::from_secs(5))
            .is_empty());
        assert_eq!(m.state(), State::Fault);
    }

    #[test]
    fn penalty_lowers_priority_and_master_advertises_it_at_once() {
        let (mut m, t) = master(params());
        let hurt = Health {
            quorum: true,
            penalty: 60,
        };
        assert_eq!(
            m.handle(Event::Health(hurt), t + ms(10)),
            vec![Action::SendAdvert { priority: 40 }]
        );
        assert_eq!(m.priority(), 40);
        // Same health again: nothing new to say.
        assert!(m.handle(Event::Health(hurt), t + ms(20)).is_empty());
        // Floored at 1, never 0 (0 means "leaving").
        m.handle(
            Event::Health(Health {
                quorum: true,
                penalty: 255,
            }),
            t + ms(30),
        );
        assert_eq!(m.priority(), 1);
        // Now a priority-50 backup preempts us.
        assert_eq!(
            m.handle(advert(LOW, 50), t + ms(40)),
            vec![Action::RemoveVip]
        );
    }

    #[test]
    fn shutdown_from_each_state() {
        // Master → Leaving: priority 0 at once, the VIP stays until a
        // successor's advert, then Leaving → Initialize.
        let (mut m, t) = master(params());
        assert_eq!(
            m.handle(Event::Shutdown, t),
            vec![Action::SendAdvert { priority: 0 }]
        );
        assert_eq!(m.state(), State::Leaving);
        assert_eq!(m.holder(), Some(ME));
        // A second stop request changes nothing.
        assert!(m.handle(Event::Shutdown, t).is_empty());
        // Priority 0 again every interval while nobody took over.
        assert_eq!(m.next_deadline(), Some(t + ms(200)));
        assert_eq!(
            m.handle(Event::Timer, t + ms(200)),
            vec![Action::SendAdvert { priority: 0 }]
        );
        // Another leaver's priority 0 is no successor.
        assert!(m.handle(advert(LOW, 0), t + ms(250)).is_empty());
        assert_eq!(
            m.handle(advert(LOW, 100), t + ms(300)),
            vec![Action::RemoveVip]
        );
        assert_eq!(m.state(), State::Initialize);
        assert_eq!(m.holder(), None);
        assert_eq!(m.next_deadline(), None);

        // No successor: the VIP goes after the handover bound.
        let (mut m, t) = master(params());
        m.handle(Event::Shutdown, t);
        let bound = t + m.handover_bound();
        assert_eq!(m.handover_bound(), master_down_interval(1, 20));
        let mut now = t;
        while now < bound {
            now = m.next_deadline().unwrap();
            let acts = m.handle(Event::Timer, now);
            if now < bound {
                assert_eq!(acts, vec![Action::SendAdvert { priority: 0 }]);
            } else {
                assert_eq!(acts, vec![Action::RemoveVip]);
            }
        }
        assert_eq!(m.state(), State::Initialize);

        // A health veto while leaving removes the VIP at once.
        let (mut m, t) = master(params());
        m.handle(Event::Shutdown, t);
        assert_eq!(
            m.handle(Event::Health(Health::NO_QUORUM), t + ms(1)),
            vec![Action::RemoveVip]
        );
        assert_eq!(m.state(), State::Initialize);

        let (mut m, t) = backup(params());
        assert!(m.handle(Event::Shutdown, t).is_empty());
        assert_eq!(m.state(), State::Initialize);

        let mut m = Machine::new(params(), Health::NO_QUORUM);
        m.handle(Event::Startup, t);
        assert!(m.handle(Event::Shutdown, t).is_empty());
        assert_eq!(m.state(), State::Initialize);
    }

    #[test]
    fn wrong_phase_events_are_ignored() {
        let t = Instant::now();
        let mut m = Machine::new(params(), Health::OK);
        // Before startup: adverts, timers and shutdown do nothing.
        assert!(m.handle(advert(HIGH, 0), t).is_empty());
        assert!(m.handle(Event::Timer, t).is_empty());
        assert!(m.handle(Event::Shutdown, t).is_empty());
        assert_eq!(m.state(), State::Initialize);
        assert!(m.last_transition().is_none());
        // Health before startup is remembered.
        m.handle(Event::Health(Health::NO_QUORUM), t);
        m.handle(Event::Startup, t);
        assert_eq!(m.state(), State::Fault);
        // A second Startup while running is a no-op.
        assert!(m.handle(Event::Startup, t).is_empty());
        assert_eq!(m.state(), State::Fault);
        // Master with timers not due yet: nothing.
        let (mut m, t) = master(params());
        assert!(m.handle(Event::Timer, t + ms(1)).is_empty());
    }

    // --- The fresh-proof rule ---

    const LEASE: Duration = Duration::from_millis(2000);

    fn proven() -> Params {
        Params {
            proof: Some(ProofParams {
                renew: ms(200),
                lease: LEASE,
                retry: ms(100),
                poll: ms(500),
            }),
            ..params()
        }
    }

    fn ok(issued: Instant) -> Event {
        Event::Proof { issued, ok: true }
    }

    fn failed(issued: Instant) -> Event {
        Event::Proof { issued, ok: false }
    }

    /// A proof-rule machine in Backup (its first proof issued at `t0`).
    fn proven_backup() -> (Machine, Instant) {
        let t0 = Instant::now();
        let mut m = Machine::new(proven(), Health::OK);
        assert_eq!(m.handle(Event::Startup, t0), vec![Action::Prove]);
        assert_eq!(m.state(), State::Fault);
        assert!(!m.quorum(t0));
        assert!(m.handle(ok(t0), t0).is_empty());
        assert_eq!(m.state(), State::Backup);
        assert_eq!(m.proven_until(), Some(t0 + LEASE));
        (m, t0)
    }

    /// A proof-rule machine that just became master at the returned instant.
    fn proven_master() -> (Machine, Instant) {
        let (mut m, t) = proven_backup();
        let down = t + master_down_interval(100, 20);
        // Polls on the way (answered at once) keep the lease fresh.
        let now = loop {
            let now = m.next_deadline().unwrap();
            let acts = m.handle(Event::Timer, now);
            if now >= down {
                assert_eq!(acts, vec![Action::Prove], "the claim issues a proof");
                break now;
            }
            if acts == vec![Action::Prove] {
                m.handle(ok(now), now + ms(2));
            }
        };
        assert_eq!(m.state(), State::Backup, "no master before the proof");
        assert_eq!(m.claiming_since(), Some(now));
        let at = now + ms(4);
        assert_eq!(
            m.handle(ok(now), at),
            vec![
                Action::SendAdvert { priority: 100 },
                Action::AddVip,
                Action::SendGarp
            ]
        );
        assert_eq!(m.state(), State::Master);
        (m, at)
    }

    #[test]
    fn proof_rule_starts_in_fault_until_a_proof_succeeds() {
        let t0 = Instant::now();
        let mut m = Machine::new(proven(), Health::OK);
        assert_eq!(m.handle(Event::Startup, t0), vec![Action::Prove]);
        assert_eq!(m.state(), State::Fault);
        // Retried every 100 ms while faulted.
        assert_eq!(m.next_deadline(), Some(t0 + ms(100)));
        assert!(m.handle(failed(t0), t0 + ms(50)).is_empty());
        let mut now = t0;
        for _ in 0..5 {
            now = m.next_deadline().unwrap();
            // Silence and timers never make a master without a proof.
            assert_eq!(m.handle(Event::Timer, now), vec![Action::Prove]);
            m.handle(failed(now), now + ms(20));
        }
        assert_eq!(now, t0 + ms(500));
        assert_eq!(m.state(), State::Fault);
        // Fault → Backup on the first success; Master_Down_Timer runs
        // from the start (nobody heard since), not from now.
        let t1 = t0 + ms(620);
        assert!(m.handle(ok(t0 + ms(600)), t1).is_empty());
        assert_eq!(m.state(), State::Backup);
        assert_eq!(m.next_deadline(), Some(t0 + master_down_interval(100, 20)));
    }

    #[test]
    fn fault_to_backup_claims_at_once_after_a_long_silence() {
        let (mut m, t) = proven_master();
        // The lease runs out (every renewal fails): Master → Fault.
        let mut now = t;
        while m.state() == State::Master {
            now = m.next_deadline().unwrap();
            if m.handle(Event::Timer, now).contains(&Action::Prove) {
                m.handle(failed(now), now + ms(1));
            }
        }
        // Nobody advertises; quorum comes back 1.5 s later.
        let back = now + ms(1500);
        m.handle(ok(back), back + ms(2));
        assert_eq!(m.state(), State::Backup);
        // The silence began at the resignation, long enough ago: claim now.
        assert_eq!(m.next_deadline(), Some(back + ms(2)));
        assert_eq!(m.handle(Event::Timer, back + ms(2)), vec![Action::Prove]);
        assert_eq!(m.claiming_since(), Some(back + ms(2)));
        // Had a master been heard while faulted, the full interval applies.
        let (mut m, t) = proven_master();
        let mut now = t;
        while m.state() == State::Master {
            now = m.next_deadline().unwrap();
            if m.handle(Event::Timer, now).contains(&Action::Prove) {
                m.handle(failed(now), now + ms(1));
            }
        }
        let heard = now + ms(1000);
        m.handle(advert(HIGH, 100), heard);
        m.handle(ok(heard + ms(10)), heard + ms(12));
        assert_eq!(m.state(), State::Backup);
        // A poll first, then the claim a full interval after the advert.
        assert_eq!(m.next_deadline(), Some(heard + ms(512)));
        assert_eq!(m.handle(Event::Timer, heard + ms(512)), vec![Action::Prove]);
        assert_eq!(
            m.next_deadline(),
            Some(heard + master_down_interval(100, 20))
        );
    }

    #[test]
    fn claim_needs_a_proof_issued_after_the_decision() {
        let (mut m, t) = proven_backup();
        // A poll issued just before the master-down decision...
        let poll = m.next_deadline().unwrap();
        assert_eq!(m.handle(Event::Timer, poll), vec![Action::Prove]);
        let down = t + master_down_interval(100, 20);
        let mut now = poll;
        while now < down {
            now = m.next_deadline().unwrap();
            let acts = m.handle(Event::Timer, now);
            if now == down {
                assert_eq!(acts, vec![Action::Prove]);
            }
        }
        let stale_issue = down - ms(1);
        // ...answers after it: it renews the lease but is no claim proof.
        assert!(m.handle(ok(stale_issue), down + ms(2)).is_empty());
        assert_eq!(m.state(), State::Backup);
        assert_eq!(m.proven_until(), Some(stale_issue + LEASE));
        // The proof issued at the decision does.
        assert_eq!(m.handle(ok(down), down + ms(3))[1], Action::AddVip);
        assert_eq!(m.state(), State::Master);
        assert_eq!(m.holder(), Some(ME));
    }

    #[test]
    fn a_claim_without_proof_never_takes_the_vip_and_faults_at_the_lease() {
        let (mut m, t) = proven_backup();
        let proven_until = m.proven_until().unwrap();
        let mut now = t;
        let mut proofs = 0;
        while m.state() == State::Backup {
            now = m.next_deadline().unwrap();
            for a in m.handle(Event::Timer, now) {
                assert_eq!(a, Action::Prove, "only proofs while unproven");
                proofs += 1;
                // Every proof times out.
                m.handle(failed(now), now + ms(50));
            }
        }
        assert_eq!(m.state(), State::Fault);
        assert_eq!(now, proven_until, "Backup → Fault exactly at the lease");
        // Claiming retried every 100 ms from 722 ms to 2000 ms.
        assert!(proofs >= 13, "{proofs}");
        // In Fault: only proofs, whatever time passes.
        for _ in 0..20 {
            now = m.next_deadline().unwrap();
            assert_eq!(m.handle(Event::Timer, now), vec![Action::Prove]);
        }
    }

    #[test]
    fn an_advert_cancels_a_claim() {
        let (mut m, t) = proven_backup();
        let down = t + master_down_interval(100, 20);
        let mut now = t;
        while now < down {
            now = m.next_deadline().unwrap();
            m.handle(Event::Timer, now);
        }
        assert!(m.claiming_since().is_some());
        // A master shows up (equal priority) before our proof returns.
        m.handle(advert(HIGH, 100), down + ms(1));
        assert_eq!(m.claiming_since(), None);
        assert!(m.handle(ok(down), down + ms(2)).is_empty());
        assert_eq!(m.state(), State::Backup);
        assert_eq!(m.holder(), Some(HIGH));
    }

    #[test]
    fn priority_zero_and_preemption_also_need_a_fresh_proof() {
        // Priority 0: Skew_Time, then a claim.
        let (mut m, t) = proven_backup();
        m.handle(advert(HIGH, 150), t);
        let t1 = t + ms(100);
        assert!(m.handle(advert(HIGH, 0), t1).is_empty());
        let at = t1 + skew_time(100, 20);
        assert_eq!(m.next_deadline(), Some(at));
        assert_eq!(m.handle(Event::Timer, at), vec![Action::Prove]);
        assert_eq!(m.state(), State::Backup);
        // A repeated priority 0 during the claim does not restart it.
        assert!(m.handle(advert(HIGH, 0), at + ms(1)).is_empty());
        assert_eq!(m.claiming_since(), Some(at));
        assert!(m.handle(failed(at), at + ms(5)).is_empty());
        assert_eq!(m.handle(Event::Timer, at + ms(100)), vec![Action::Prove]);
        // A handover: our advert first, the VIP a gap later (the leaving
        // master removes it when it hears us).
        let won = at + ms(104);
        assert_eq!(
            m.handle(ok(at + ms(100)), won),
            vec![Action::SendAdvert { priority: 100 }]
        );
        assert_eq!(m.state(), State::Master);
        assert!(!m.holds_vip());
        assert_eq!(m.next_deadline(), Some(won + HANDOVER_GAP));
        assert_eq!(
            m.handle(Event::Timer, won + HANDOVER_GAP),
            vec![Action::AddVip, Action::SendGarp]
        );
        assert!(m.holds_vip());

        // Preemption of a lower master: its adverts are discarded, the
        // timer fires, and only a fresh proof makes us master.
        let (mut m, t) = proven_backup();
        let down = t + master_down_interval(100, 20);
        let mut now = t;
        while now < down {
            m.handle(advert(LOW, 50), now);
            now = m.next_deadline().unwrap();
            m.handle(Event::Timer, now);
        }
        assert_eq!(m.claiming_since(), Some(down));
        assert_eq!(m.state(), State::Backup);
        assert_eq!(m.handle(ok(down), down + ms(1))[1], Action::AddVip);
    }

    #[test]
    fn a_handover_master_yielding_before_its_gap_never_touches_the_vip() {
        let (mut m, t) = backup(params());
        m.handle(advert(HIGH, 150), t);
        m.handle(advert(HIGH, 0), t + ms(10));
        let at = m.next_deadline().unwrap();
        assert_eq!(
            m.handle(Event::Timer, at),
            vec![Action::SendAdvert { priority: 100 }]
        );
        // Someone better speaks before the VIP was added: nothing to remove.
        assert!(m.handle(advert(HIGH, 150), at + ms(5)).is_empty());
        assert_eq!(m.state(), State::Backup);
        assert!(!m.holds_vip());
        // A priority 0 from a master we did not follow is no handover
        // (it still shortens the timer, as RFC 5798 says).
        let (mut m, t) = backup(params());
        m.handle(advert(HIGH, 150), t);
        m.handle(advert(LOW, 0), t + ms(10));
        let down = m.next_deadline().unwrap();
        assert_eq!(down, t + ms(10) + skew_time(100, 20));
        assert_eq!(m.handle(Event::Timer, down)[1], Action::AddVip);
    }

    #[test]
    fn a_priority_zero_never_postpones_an_earlier_deadline() {
        let (mut m, t) = backup(params());
        m.handle(advert(HIGH, 150), t);
        m.handle(advert(HIGH, 0), t + ms(10));
        let first = m.next_deadline().unwrap();
        m.handle(advert(HIGH, 0), t + ms(100));
        assert_eq!(m.next_deadline(), Some(first));
    }

    #[test]
    fn master_renews_and_resigns_exactly_at_the_lease() {
        let (mut m, t) = proven_master();
        let last_good = m.proven_until().unwrap();
        // Renewals that succeed keep it master for as long as they come.
        let mut now = t;
        let until = t + Duration::from_secs(10);
        while now < until {
            now = m.next_deadline().unwrap();
            for a in m.handle(Event::Timer, now) {
                if a == Action::Prove {
                    m.handle(ok(now), now + ms(3));
                }
            }
        }
        assert_eq!(m.state(), State::Master);
        assert!(m.proven_until().unwrap() > last_good);
        // From now on every proof fails: the last good one was issued at
        // most one renew period ago.
        let lease_end = m.proven_until().unwrap();
        let mut last_positive_advert = now;
        while m.state() == State::Master {
            now = m.next_deadline().unwrap();
            let acts = m.handle(Event::Timer, now);
            for a in &acts {
                match a {
                    Action::Prove => {
                        m.handle(failed(now), now + ms(1));
                    }
                    Action::SendAdvert { priority } if *priority > 0 => last_positive_advert = now,
                    _ => {}
                }
            }
            if m.state() == State::Fault {
                assert_eq!(now, lease_end);
                assert_eq!(
                    acts,
                    vec![
                        Action::SendAdvert { priority: 0 },
                        Action::RemoveVip,
                        Action::Prove
                    ]
                );
            }
        }
        // Adverts with a real priority up to the lease's end, none after.
        assert!(last_positive_advert < lease_end);
        assert!(lease_end - last_positive_advert <= ms(200));
        // Fault → Backup on the next proof, and a new claim needs another.
        assert!(m.handle(ok(now + ms(500)), now + ms(503)).is_empty());
        assert_eq!(m.state(), State::Backup);
    }

    #[test]
    fn a_proof_answered_after_its_lease_proves_nothing() {
        let (mut m, t) = proven_master();
        let until = m.proven_until().unwrap();
        // Issued long ago, answered now: no extension.
        m.handle(ok(t - LEASE), t + ms(1));
        assert_eq!(m.proven_until(), Some(until));
        // An older success never shortens the lease.
        m.handle(ok(t - ms(500)), t + ms(2));
        assert_eq!(m.proven_until(), Some(until));
    }

    #[test]
    fn leaving_ends_when_the_lease_does() {
        let (mut m, t) = proven_master();
        let lease_end = m.proven_until().unwrap();
        // Stop just before the lease runs out (proofs failing).
        let stop = lease_end - ms(50);
        assert_eq!(
            m.handle(Event::Shutdown, stop),
            vec![Action::SendAdvert { priority: 0 }]
        );
        assert_eq!(m.state(), State::Leaving);
        assert!(stop + m.handover_bound() > lease_end);
        assert_eq!(m.next_deadline(), Some(lease_end));
        assert_eq!(m.handle(Event::Timer, lease_end), vec![Action::RemoveVip]);
        assert_eq!(m.state(), State::Initialize);
        // Late proof answers after shutdown change nothing.
        assert!(m.handle(ok(t), lease_end + ms(1)).is_empty());
        assert_eq!(m.state(), State::Initialize);
    }

    #[test]
    fn health_veto_faults_a_proven_master_and_blocks_fault_to_backup() {
        let (mut m, t) = proven_master();
        assert_eq!(
            m.handle(Event::Health(Health::NO_QUORUM), t + ms(1)),
            vec![Action::SendAdvert { priority: 0 }, Action::RemoveVip]
        );
        assert_eq!(m.state(), State::Fault);
        // Proofs alone do not lift a veto.
        m.handle(ok(t + ms(2)), t + ms(3));
        assert_eq!(m.state(), State::Fault);
        // The veto lifted with a valid proof: Fault → Backup.
        m.handle(Event::Health(Health::OK), t + ms(4));
        assert_eq!(m.state(), State::Backup);
    }

    #[test]
    fn master_yielding_keeps_polling() {
        let (mut m, t) = proven_master();
        assert_eq!(
            m.handle(advert(HIGH, 150), t + ms(10)),
            vec![Action::RemoveVip]
        );
        assert_eq!(m.state(), State::Backup);
        assert_eq!(m.claiming_since(), None);
        assert_eq!(m.next_deadline(), Some(t + ms(510)));
    }
}
