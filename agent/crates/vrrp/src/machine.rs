//! The VRRPv3 state machine of [RFC 5798 §6.4], extended with a `Fault`
//! state for the quorum rule. Pure: it takes an [`Event`] and `now`, and
//! returns the [`Action`]s for the shell to carry out; timers are
//! deadlines the shell sleeps until ([`Machine::next_deadline`]).
//!
//! States and the transitions this module implements:
//!
//! - `Initialize → Backup` on startup when the tracker reports quorum,
//!   `Initialize → Fault` when it does not.
//! - `Backup → Master` when Master_Down_Timer fires.
//! - `Master → Backup` on an advert with a higher priority, or an equal
//!   priority from a higher primary address.
//! - `Backup | Master → Fault` when quorum is lost (a master first sends a
//!   priority-0 advert and removes the VIP); `Fault → Backup` when it
//!   returns. `Fault` never claims the VIP, whatever the timers say.
//! - `any → Initialize` on shutdown (a master sends priority 0 and
//!   removes the VIP, so a backup takes over after Skew_Time alone).
//!
//! Preempt delay (keepalived's `preempt_delay`, not in RFC 5798): a backup
//! with preemption on keeps accepting adverts from a lower-priority master
//! until that master has been seen for the delay, then ignores them and
//! takes over when Master_Down_Timer fires.
//!
//! [RFC 5798 §6.4]: https://www.rfc-editor.org/rfc/rfc5798#section-6.4

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

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
    /// No quorum: never holds or claims the VIP.
    Fault,
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            State::Initialize => "initialize",
            State::Backup => "backup",
            State::Master => "master",
            State::Fault => "fault",
        })
    }
}

/// What the tracker says about this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Health {
    /// The local etcd member is part of a quorum. Without it the node must
    /// not hold the VIP (see the crate docs for the exact rule).
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
    /// The tracker's view changed.
    Health(Health),
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
}

impl Machine {
    /// A machine in `Initialize`; the health is "no quorum" until told
    /// otherwise, so nothing is claimed before the first check passes.
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
        }
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

    /// The priority we advertise now: configured minus penalty, at least 1.
    pub fn priority(&self) -> u8 {
        self.params
            .priority
            .saturating_sub(self.health.penalty)
            .max(1)
    }

    /// Who holds the VIP as far as we know (us when master).
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

    /// The earliest pending deadline; the shell sends [`Event::Timer`]
    /// once it passes.
    pub fn next_deadline(&self) -> Option<Instant> {
        [self.master_down_at, self.adver_at, self.garp_at]
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

    fn clear_timers(&mut self) {
        self.master_down_at = None;
        self.adver_at = None;
        self.garp_at = None;
        self.garps_left = 0;
    }

    fn enter_backup(&mut self, now: Instant) {
        self.clear_timers();
        self.master_adver_interval_cs = self.params.interval_cs;
        self.go(State::Backup, now);
        self.master_down_at = Some(now + self.master_down_interval());
    }

    fn enter_fault(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.state == State::Master {
            out.push(Action::SendAdvert { priority: 0 });
            out.push(Action::RemoveVip);
            self.holder = None;
        }
        self.clear_timers();
        self.go(State::Fault, now);
    }

    fn enter_master(&mut self, now: Instant, out: &mut Vec<Action>) {
        out.push(Action::SendAdvert {
            priority: self.priority(),
        });
        out.push(Action::AddVip);
        out.push(Action::SendGarp);
        self.clear_timers();
        self.go(State::Master, now);
        self.holder = Some(self.params.local_addr);
        self.adver_at = Some(now + cs(self.params.interval_cs));
        self.garps_left = self.params.garp_burst.saturating_sub(1);
        self.garp_at = Some(
            now + if self.garps_left > 0 {
                self.params.garp_spacing
            } else {
                self.params.garp_refresh
            },
        );
    }

    /// Feeds one event; returns what to do, in order.
    pub fn handle(&mut self, event: Event, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        match (self.state, event) {
            // Initialize → Backup (quorum) or Initialize → Fault.
            (State::Initialize, Event::Startup) => {
                if self.health.quorum {
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

            (_, Event::Shutdown) => {
                // Master → Initialize: priority 0 so a backup takes over
                // after Skew_Time instead of Master_Down_Interval.
                if self.state == State::Master {
                    out.push(Action::SendAdvert { priority: 0 });
                    out.push(Action::RemoveVip);
                }
                self.clear_timers();
                self.holder = None;
                self.go(State::Initialize, now);
            }

            (state, Event::Health(h)) => {
                let before = self.priority();
                self.health = h;
                match state {
                    // Backup | Master → Fault: no quorum, no VIP.
                    State::Backup | State::Master if !h.quorum => self.enter_fault(now, &mut out),
                    // Fault → Backup once quorum is back.
                    State::Fault if h.quorum => self.enter_backup(now),
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

            (State::Fault, Event::Advert { src, priority, .. }) => {
                // Only track who holds it; never claim.
                self.holder = (priority != 0).then_some(src);
            }
            (State::Fault, Event::Timer) => {}

            (
                State::Backup,
                Event::Advert {
                    src,
                    priority,
                    interval_cs,
                },
            ) => self.backup_advert(src, priority, interval_cs, now),
            (State::Backup, Event::Timer) => {
                // Backup → Master: the master went silent.
                if self.master_down_at.is_some_and(|t| t <= now) {
                    self.enter_master(now, &mut out);
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
        }
        out
    }

    fn backup_advert(&mut self, src: Ipv4Addr, priority: u8, interval_cs: u16, now: Instant) {
        if priority == 0 {
            // The master is leaving: take over after Skew_Time alone.
            self.holder = None;
            self.master_down_at =
                Some(now + skew_time(self.priority(), self.master_adver_interval_cs));
            return;
        }
        self.holder = Some(src);
        let lower = priority < self.priority();
        let tolerate = if self.params.preempt && lower {
            let since = *self.lower_master_since.get_or_insert(now);
            now < since + self.params.preempt_delay
        } else {
            self.lower_master_since = None;
            true
        };
        if tolerate {
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
            out.push(Action::RemoveVip);
            self.clear_timers();
            self.go(State::Backup, now);
            self.holder = Some(src);
            self.master_adver_interval_cs = interval_cs;
            self.master_down_at = Some(now + self.master_down_interval());
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
        // Quorum back: Fault → Backup with a fresh Master_Down_Timer.
        let t1 = t + ms(300);
        assert!(m.handle(Event::Health(Health::OK), t1).is_empty());
        assert_eq!(m.state(), State::Backup);
        assert_eq!(m.next_deadline(), Some(t1 + master_down_interval(100, 20)));
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
        let (mut m, t) = master(params());
        assert_eq!(
            m.handle(Event::Shutdown, t),
            vec![Action::SendAdvert { priority: 0 }, Action::RemoveVip]
        );
        assert_eq!(m.state(), State::Initialize);
        assert_eq!(m.next_deadline(), None);

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
}
