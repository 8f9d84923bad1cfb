//! The shell around [`Machine`]: sockets, netlink, timers and channels on
//! tokio. It feeds packets, proof results, health changes and deadlines to
//! the machine as events and carries out the actions it returns (each
//! [`Action::Prove`] is one request of its own, stamped with the moment it
//! was issued, so a slow answer can never pass for a fresh one).

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use thiserror::Error;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::config::VrrpConfig;
use crate::machine::{Action, Event, Health, Machine, Params, ProofParams, State};
use crate::netlink::{LinkInfo, Netlink, NetlinkError};
use crate::packet::{self, Advert, Reject, VRRP_GROUP};
use crate::proof::{EtcdProver, ProofError, Shed, MAX_PROOFS_IN_FLIGHT};
use crate::sock::{garp_frame, GarpSocket, SocketError, VrrpSocket};
use crate::status::{unix_ms, ProofStatus, Status, TransitionRecord};

/// Where quorum comes from.
#[derive(Debug, Clone)]
pub enum Quorum {
    /// Assumed (plain keepalived behaviour; the health input may still
    /// veto it). For the keepalived comparison and interop only.
    Assumed,
    /// Proven afresh by linearizable reads on the local etcd member, under
    /// the bounds of `params` (see [`crate::machine`]).
    Proven {
        /// Issues the proofs.
        prover: EtcdProver,
        /// Renewal period, lease, retry and poll periods.
        params: ProofParams,
        /// While master, hand the etcd leadership to another voter
        /// ([`EtcdProver::shed_leadership`]), so a holder's failure never
        /// needs an etcd election before the next holder's proof.
        shed_leadership: bool,
    },
}

/// A new master sheds the etcd leadership this long after taking over.
const SHED_FIRST: Duration = Duration::from_millis(500);
/// ...and checks again this often while it stays master (one status
/// request to the local member; an election can make it leader again).
const SHED_EVERY: Duration = Duration::from_secs(1);

/// Errors starting or running an instance.
#[derive(Debug, Error)]
pub enum RunError {
    /// Interface lookup or VIP handling failed.
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    /// A raw socket could not be set up.
    #[error(transparent)]
    Socket(#[from] SocketError),
    /// The instance task panicked or was cancelled.
    #[error("the VRRP task ended abnormally: {0}")]
    Task(String),
}

/// A running instance. Dropping it without [`VrrpHandle::shutdown`] still
/// triggers a graceful shutdown on the runtime, but nobody waits for it.
#[derive(Debug)]
pub struct VrrpHandle {
    status: watch::Receiver<Status>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl VrrpHandle {
    /// The current status snapshot.
    pub fn status(&self) -> Status {
        self.status.borrow().clone()
    }

    /// A channel that changes with every status update.
    pub fn subscribe(&self) -> watch::Receiver<Status> {
        self.status.clone()
    }

    /// Graceful shutdown: a master advertises priority 0 and keeps the VIP
    /// until a successor's advert arrives (at most
    /// [`Machine::handover_bound`], or less if its lease ends), then
    /// removes it; returns once done.
    pub async fn shutdown(mut self) -> Result<(), RunError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task)
            .await
            .map_err(|e| RunError::Task(e.to_string()))
    }
}

/// Entry point for embedding: see [`Vrrp::spawn`].
#[derive(Debug)]
pub struct Vrrp;

impl Vrrp {
    /// Starts one instance on the current tokio runtime.
    ///
    /// `quorum` says how quorum is established (the agent always proves
    /// it); `health` is the weighted checks' output (see
    /// [`crate::tracker`]); `peers` the unicast peers (used only when
    /// `config.unicast`; fed from discovery, may change at any time).
    /// Interface lookup and socket setup happen before this returns, so
    /// their errors surface here. A VIP left on the interface by a
    /// previous run is removed first.
    pub async fn spawn(
        config: VrrpConfig,
        quorum: Quorum,
        health: watch::Receiver<Health>,
        peers: watch::Receiver<Vec<Ipv4Addr>>,
    ) -> Result<VrrpHandle, RunError> {
        let netlink = Netlink::open(&config.interface, config.vip)?;
        let link = netlink.link_info().await?;
        netlink.remove_vip(link.index).await?;
        let sock = VrrpSocket::open(
            &config.interface,
            link.index,
            link.local_addr,
            !config.unicast,
        )?;
        let garp = GarpSocket::open(&config.interface, link.index)?;
        let mut status = Status::new(
            &config.interface,
            config.vip,
            config.router_id,
            config.priority,
            config.interval_cs,
        );
        status.local_addr = Some(link.local_addr);
        let (prover, proof, shed) = match quorum {
            Quorum::Assumed => (None, None, false),
            Quorum::Proven {
                prover,
                params,
                shed_leadership,
            } => {
                status.proof = Some(ProofStatus::new(&params, prover.url()));
                (Some(Arc::new(prover)), Some(params), shed_leadership)
            }
        };
        let (status_tx, status_rx) = watch::channel(status.clone());
        let (proofs_tx, proofs_rx) = mpsc::unbounded_channel();
        let (stop_tx, stop_rx) = oneshot::channel();
        let shell = Shell {
            machine: Machine::new(
                Params {
                    vrid: config.router_id,
                    priority: config.priority,
                    interval_cs: config.interval_cs,
                    preempt: config.preempt,
                    preempt_delay: config.preempt_delay,
                    local_addr: link.local_addr,
                    garp_burst: config.garp_burst,
                    garp_spacing: config.garp_spacing,
                    garp_refresh: config.garp_refresh,
                    proof,
                },
                *health.borrow(),
            ),
            prover,
            proofs_tx,
            proofs_in_flight: 0,
            shed,
            shed_at: None,
            garp_frame: garp_frame(link.mac, config.vip.addr()),
            config,
            link,
            netlink,
            sock,
            garp,
            peers: peers.borrow().clone(),
            status,
            status_tx,
            last_logged: None,
        };
        let task = tokio::spawn(shell.run(health, peers, proofs_rx, stop_rx));
        Ok(VrrpHandle {
            status: status_rx,
            stop: Some(stop_tx),
            task,
        })
    }
}

/// One finished proof: when it was issued, how it went, how long it took.
type ProofResult = (Instant, Result<(), ProofError>, Duration);

struct Shell {
    machine: Machine,
    prover: Option<Arc<EtcdProver>>,
    proofs_tx: mpsc::UnboundedSender<ProofResult>,
    proofs_in_flight: usize,
    shed: bool,
    shed_at: Option<Instant>,
    config: VrrpConfig,
    link: LinkInfo,
    netlink: Netlink,
    sock: VrrpSocket,
    garp: GarpSocket,
    garp_frame: [u8; 42],
    peers: Vec<Ipv4Addr>,
    status: Status,
    status_tx: watch::Sender<Status>,
    last_logged: Option<Instant>,
}

impl Shell {
    async fn run(
        mut self,
        mut health: watch::Receiver<Health>,
        mut peers: watch::Receiver<Vec<Ipv4Addr>>,
        mut proofs: mpsc::UnboundedReceiver<ProofResult>,
        mut stop: oneshot::Receiver<()>,
    ) {
        tracing::info!(
            interface = %self.config.interface,
            vip = %self.config.vip,
            vrid = self.config.router_id,
            local = %self.link.local_addr,
            priority = self.config.priority,
            interval_cs = self.config.interval_cs,
            unicast = self.config.unicast,
            quorum_proof = self.prover.as_ref().map(|p| p.url()),
            "VRRP instance starting"
        );
        self.step(Event::Startup).await;
        let mut health_open = true;
        let mut peers_open = true;
        let mut stopping = false;
        let mut buf = vec![0u8; 2048];
        let (shed_tx, mut shed_rx) = mpsc::unbounded_channel::<Result<Shed, ProofError>>();
        loop {
            if stopping && self.machine.state() == State::Initialize {
                tracing::info!("VRRP instance stopped");
                return;
            }
            let deadline = self.machine.next_deadline();
            tokio::select! {
                biased;
                _ = &mut stop, if !stopping => {
                    // A master hands over (Leaving) before the loop ends.
                    stopping = true;
                    self.step(Event::Shutdown).await;
                }
                // Packets before timers: a backup whose process was stalled
                // (a slow TCG guest, a loaded host) must first read the
                // adverts queued meanwhile, or its overdue Master_Down_Timer
                // would make it claim the VIP from a live master. Each
                // packet is followed by a deadline check, so a packet flood
                // cannot starve the advert timer.
                received = self.sock.recv(&mut buf) => match received {
                    Ok(n) => {
                        self.packet(&buf[..n]).await;
                        if self.machine.next_deadline().is_some_and(|d| d <= Instant::now()) {
                            self.step(Event::Timer).await;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "VRRP receive failed");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                },
                // Proof results before timers too: a renewal that arrived
                // in time must count before the lease deadline is judged.
                Some((issued, result, took)) = proofs.recv() => {
                    self.proof_done(issued, result, took).await;
                }
                changed = health.changed(), if health_open => match changed {
                    Ok(()) => {
                        let h = *health.borrow_and_update();
                        self.step(Event::Health(h)).await;
                    }
                    Err(_) => {
                        // The health source is gone: nobody vouches any more.
                        health_open = false;
                        tracing::warn!("health channel closed: treating as no quorum");
                        self.step(Event::Health(Health::NO_QUORUM)).await;
                    }
                },
                changed = peers.changed(), if peers_open => match changed {
                    Ok(()) => self.peers = peers.borrow_and_update().clone(),
                    Err(_) => peers_open = false,
                },
                _ = sleep_until(deadline), if deadline.is_some() => {
                    self.step(Event::Timer).await;
                }
                _ = sleep_until(self.shed_at), if self.shed_at.is_some() => {
                    self.shed_at = Some(Instant::now() + SHED_EVERY);
                    if let Some(prover) = self.prover.clone() {
                        let tx = shed_tx.clone();
                        tokio::spawn(async move {
                            let _ = tx.send(prover.shed_leadership().await);
                        });
                    }
                }
                Some(shed) = shed_rx.recv() => self.shed_done(shed),
            }
        }
    }

    fn shed_done(&mut self, result: Result<Shed, ProofError>) {
        match result {
            Ok(Shed::Moved { to }) => {
                tracing::info!(
                    to = %format!("{to:x}"),
                    "VIP holder handed the etcd leadership to another voter"
                );
                if let Some(p) = &mut self.status.proof {
                    p.leadership_moved += 1;
                }
                self.publish();
            }
            Ok(Shed::NotLeader | Shed::NoTarget) => {}
            Err(e) => tracing::warn!(error = %e, "handing the etcd leadership over failed"),
        }
    }

    async fn proof_done(
        &mut self,
        issued: Instant,
        result: Result<(), ProofError>,
        took: Duration,
    ) {
        if !matches!(result, Err(ProofError::Busy { .. })) {
            self.proofs_in_flight = self.proofs_in_flight.saturating_sub(1);
        }
        let ok = result.is_ok();
        if let Some(p) = &mut self.status.proof {
            match result {
                Ok(()) => {
                    p.ok += 1;
                    p.last_ok_ms = Some(took.as_millis() as u64);
                }
                Err(e) => {
                    p.failed += 1;
                    // The first failure after a success is worth a line;
                    // a run of them is in the status.
                    if p.last_error.is_none() {
                        tracing::warn!(error = %e, "quorum proof failed");
                    }
                    p.last_error = Some(e.to_string());
                }
            }
            if ok && p.last_error.take().is_some() {
                tracing::info!(latency_ms = took.as_millis() as u64, "quorum proven again");
            }
        }
        self.step(Event::Proof { issued, ok }).await;
    }

    async fn packet(&mut self, bytes: &[u8]) {
        match packet::accept(bytes, self.config.router_id, self.config.vip.addr()) {
            Ok(rx) if rx.src == self.link.local_addr => {}
            Ok(rx) => {
                self.status.adverts_received += 1;
                self.step(Event::Advert {
                    src: rx.src,
                    priority: rx.advert.priority,
                    interval_cs: rx.advert.max_adver_int_cs,
                })
                .await;
            }
            Err(reason) => {
                *self.status.rejected.entry(reason).or_default() += 1;
                // Log each reason at most every few seconds: a
                // misconfigured peer must not flood the journal.
                let now = Instant::now();
                if reason != Reject::OtherVrid
                    && self
                        .last_logged
                        .is_none_or(|t| now.duration_since(t).as_secs() >= 5)
                {
                    self.last_logged = Some(now);
                    tracing::warn!(%reason, "rejected a VRRP packet");
                }
                self.publish();
            }
        }
    }

    async fn step(&mut self, event: Event) {
        let before = self.machine.last_transition();
        let claim = self.machine.claiming_since();
        let now = Instant::now();
        let actions = self.machine.handle(event, now);
        for action in actions {
            self.act(action).await;
        }
        self.shed_at = match (self.shed, self.machine.state(), self.shed_at) {
            (true, State::Master, Some(at)) => Some(at),
            (true, State::Master, None) => Some(now + SHED_FIRST),
            _ => None,
        };
        if let Some(t) = self.machine.last_transition() {
            if Some(t) != before {
                let wall = SystemTime::now() - Instant::now().saturating_duration_since(t.at);
                self.status.last_transition = Some(TransitionRecord {
                    at_unix_ms: unix_ms(wall),
                    from: t.from,
                    to: t.to,
                });
                // How long the claim waited for its fresh proof.
                let claimed_ms = claim
                    .filter(|_| t.to == State::Master)
                    .map(|c| now.saturating_duration_since(c).as_millis() as u64);
                tracing::info!(
                    from = %t.from,
                    to = %t.to,
                    priority = self.machine.priority(),
                    quorum = self.machine.quorum(now),
                    holder = ?self.machine.holder(),
                    claimed_ms,
                    "VRRP transition"
                );
            }
        }
        self.publish();
    }

    fn publish(&mut self) {
        let now = Instant::now();
        self.status.state = self.machine.state();
        self.status.holder = self.machine.holder();
        self.status.priority = self.machine.priority();
        self.status.quorum = self.machine.quorum(now);
        if let Some(p) = &mut self.status.proof {
            p.proven_until_unix_ms = self.machine.proven_until().map(|u| {
                let wall = SystemTime::now();
                unix_ms(if u >= now {
                    wall + (u - now)
                } else {
                    wall - (now - u)
                })
            });
            p.claiming = self.machine.claiming_since().is_some();
        }
        self.status_tx.send_replace(self.status.clone());
    }

    async fn act(&mut self, action: Action) {
        match action {
            Action::SendAdvert { priority } => {
                let advert = Advert {
                    vrid: self.config.router_id,
                    priority,
                    max_adver_int_cs: self.config.interval_cs,
                    addresses: vec![self.config.vip.addr()],
                };
                let targets: Vec<Ipv4Addr> = if self.config.unicast {
                    self.peers
                        .iter()
                        .copied()
                        .filter(|p| *p != self.link.local_addr)
                        .collect()
                } else {
                    vec![VRRP_GROUP]
                };
                for dst in targets {
                    let bytes = advert.encode(self.link.local_addr, dst);
                    if let Err(e) = self.sock.send(&bytes, dst) {
                        tracing::warn!(error = %e, "advert not sent");
                    }
                }
                self.status.adverts_sent += 1;
            }
            Action::AddVip => {
                if let Err(e) = self.netlink.add_vip(self.link.index).await {
                    tracing::error!(error = %e, "could not add the VIP");
                }
            }
            Action::RemoveVip => {
                if let Err(e) = self.netlink.remove_vip(self.link.index).await {
                    tracing::error!(error = %e, "could not remove the VIP");
                }
            }
            Action::SendGarp => {
                if let Err(e) = self.garp.send(&self.garp_frame) {
                    tracing::warn!(error = %e, "gratuitous ARP not sent");
                }
            }
            Action::Prove => {
                // Stamped before the request exists: the lease counts from
                // here, never from the answer.
                let issued = Instant::now();
                let tx = self.proofs_tx.clone();
                match self.prover.clone() {
                    Some(_) if self.proofs_in_flight >= MAX_PROOFS_IN_FLIGHT => {
                        let busy = ProofError::Busy {
                            in_flight: self.proofs_in_flight,
                        };
                        let _ = tx.send((issued, Err(busy), Duration::ZERO));
                    }
                    Some(prover) => {
                        self.proofs_in_flight += 1;
                        tokio::spawn(async move {
                            let result = prover.prove().await;
                            let _ = tx.send((issued, result, issued.elapsed()));
                        });
                    }
                    // The machine asks only when a prover was given.
                    None => {
                        let _ = tx.send((issued, Ok(()), Duration::ZERO));
                    }
                }
            }
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    if let Some(d) = deadline {
        tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await;
    }
}
