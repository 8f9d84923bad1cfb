//! The I/O edge: the TCP proxy and the checks that feed the pool.
//!
//! [`Balancer::start`] takes a bound listener and the configuration and
//! spawns, on the current tokio runtime, one check task per backend and
//! the accept loop. Each accepted connection is proxied on its own task:
//! pick a backend ([`Pool::pick`]), connect within `connect_timeout`; on a
//! refused or timed-out connect, record it ([`Pool::connect_failed`]) and
//! try the next backend in rotation, until none is left (the client's
//! connection is then closed); once connected, copy bytes both ways
//! (`copy_bidirectional`) until either side closes. The pool sits behind
//! a mutex held only for a pick or a count, never across an await.
//!
//! [`Balancer::set_backends`] follows the masters list: a new backend
//! gets its own check task and starts out of rotation (it comes in after
//! `rise` passing checks, as at start); a removed one leaves rotation at
//! once and its check task stops, while connections already proxied to
//! it run on until they close.
//!
//! Handing the VIP over ([`hand_over`]): the listener stops taking new
//! connections *silently* ([`Balancer::quiesce`]: a socket filter drops
//! every incoming SYN, so clients get no RST and retransmit the SYN
//! about a second later), the connections this balancer proxies drain,
//! bounded by a timeout that cuts the rest, and only then is the VIP
//! released; the retransmitted SYNs reach the new holder.
//!
//! Dropping the [`Balancer`] stops the accept loop and the checks;
//! connections already proxied run on until they close.

use std::collections::BTreeSet;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use thiserror::Error;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinSet};
use vrrp::verdict::Outcome;

use crate::check::{self, CheckError, CheckSpec};
use crate::pool::{BackendId, HealthRules, Pool};
use crate::status::{BackendHealth, BalancerStatus, ListenerState};

/// The pick policy as the status names it.
pub const POLICY: &str = "least connections, round robin among ties";

/// What the balancer needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BalancerConfig {
    /// The API servers, in a fixed order (round robin follows it).
    pub backends: Vec<SocketAddr>,
    /// The health check.
    pub check: CheckSpec,
    /// Check period, timeout and fall/rise thresholds.
    pub rules: HealthRules,
    /// Time allowed to connect to a backend before trying the next.
    pub connect_timeout: Duration,
}

/// Errors starting the balancer.
#[derive(Debug, Error)]
pub enum BalancerError {
    /// No backend configured.
    #[error("the balancer has no backends")]
    NoBackends,
    /// The listening socket could not be bound.
    #[error("binding {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The listener's own address could not be read.
    #[error("reading the listener's address: {source}")]
    LocalAddr {
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The health checks could not be set up.
    #[error(transparent)]
    Check(#[from] CheckError),
}

struct Shared {
    pool: Mutex<Pool>,
    listen: SocketAddr,
    connect_timeout: Duration,
    /// Backends in rotation, published on every change.
    serving: watch::Sender<usize>,
    /// Client connections accepted and not yet closed.
    open: watch::Sender<usize>,
    /// Set when a hand-over's drain ran out: open connections close.
    cut: watch::Sender<bool>,
    /// Whether the listener takes new connections.
    state: watch::Sender<ListenerState>,
}

impl Shared {
    /// The pool. A panic while holding the lock cannot leave it torn
    /// (every method is a few field updates), so a poisoned lock is used
    /// as is.
    fn pool(&self) -> MutexGuard<'_, Pool> {
        self.pool.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Logs a health change and publishes the number in rotation.
    fn changed(&self, pool: &Pool, id: BackendId, health: Option<BackendHealth>) {
        if let Some(health) = health {
            let backend = pool.addr(id).map(|a| a.to_string()).unwrap_or_default();
            tracing::info!(%backend, %health, "backend health changed");
            self.serving.send_replace(pool.serving());
        }
    }

    fn record(&self, id: BackendId, outcome: Outcome, why: Option<String>) {
        let mut pool = self.pool();
        let health = pool.record(id, outcome, why);
        self.changed(&pool, id, health);
    }

    fn connect_failed(&self, id: BackendId, outcome: Outcome, why: String) {
        let mut pool = self.pool();
        let health = pool.connect_failed(id, outcome, why);
        self.changed(&pool, id, health);
    }
}

/// Releases a picked backend when the connection ends, however it ends
/// (closed, failed, or the task cancelled).
struct Reservation {
    shared: Arc<Shared>,
    id: BackendId,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.shared.pool().release(self.id);
    }
}

/// Counts a client connection as open from its accept until it ends,
/// however it ends.
struct Open(Arc<Shared>);

impl Open {
    fn new(shared: Arc<Shared>) -> Open {
        shared.open.send_modify(|n| *n += 1);
        Open(shared)
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.open.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// The background tasks: the accept loop and one check per backend.
struct Tasks {
    set: JoinSet<()>,
    checks: Vec<(BackendId, AbortHandle)>,
}

/// What the check tasks of backends added later need.
struct Checker {
    client: reqwest::Client,
    spec: CheckSpec,
    interval: Duration,
}

/// A running balancer; dropping it stops accepting and checking.
pub struct Balancer {
    shared: Arc<Shared>,
    listener: Arc<TcpListener>,
    checker: Checker,
    /// Serialises [`Balancer::set_backends`] calls and holds the tasks
    /// (aborted when the balancer is dropped).
    tasks: Mutex<Tasks>,
}

/// What [`Balancer::set_backends`] changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackendChange {
    /// Backends added (out of rotation until they pass `rise` checks).
    pub added: Vec<SocketAddr>,
    /// Backends removed (out of rotation at once).
    pub removed: Vec<SocketAddr>,
}

impl BackendChange {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty()
    }
}

/// What [`hand_over`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandOverReport<T> {
    /// Why the listener could not be quiesced (`None`: it was). The
    /// hand-over goes on without it: new connections are then accepted
    /// during the drain, and cut with the rest at the bound.
    pub quiesce_error: Option<String>,
    /// Proxied connections open when the drain began.
    pub open_at_start: usize,
    /// Proxied connections still open at the drain bound, cut then (zero:
    /// every connection closed by itself).
    pub cut: usize,
    /// From the start to the end of the drain (the VIP release began).
    pub drained: Duration,
    /// From the start until the VIP release returned.
    pub total: Duration,
    /// What the VIP release returned.
    pub released: T,
}

/// Hands the VIP over without failing a client request: stops taking
/// new connections silently ([`Balancer::quiesce`]; a new client's SYN
/// is dropped, so it retransmits it about a second later), waits until
/// every connection this balancer proxies has closed, at most `drain`
/// (the ones still open then, long-lived watches, are closed: their
/// clients reconnect, and reach the new holder), then runs
/// `release_vip` (in the agent, the VRRP shutdown: a priority-0
/// advertisement, so a backup takes over at once) and returns what
/// happened. The listener stays quiesced afterwards
/// ([`ListenerState::HandedOver`]); [`Balancer::resume`] undoes it.
///
/// Generic over the release, so this crate needs no VRRP runtime.
pub async fn hand_over<F: Future>(
    balancer: &Balancer,
    drain: Duration,
    release_vip: F,
) -> HandOverReport<F::Output> {
    let start = Instant::now();
    let quiesce_error = balancer.quiesce().err().map(|e| e.to_string());
    let mut open = balancer.shared.open.subscribe();
    let open_at_start = *open.borrow_and_update();
    // A connection whose handshake completed just before the filter went
    // on is still in the accept queue: give the accept loop a moment to
    // take it (and count it) before trusting a zero.
    tokio::time::sleep(ACCEPT_SETTLE.min(drain)).await;
    let closed = tokio::time::timeout(
        drain.saturating_sub(start.elapsed()),
        open.wait_for(|&n| n == 0),
    )
    .await
    .is_ok();
    let cut = match closed {
        true => 0,
        false => {
            let n = *balancer.shared.open.borrow();
            tracing::info!(open = n, ?drain, "drain bound reached: closing the rest");
            balancer.shared.cut.send_replace(true);
            // The proxy tasks drop their sockets as soon as they see it.
            let _ = tokio::time::timeout(CUT_WAIT, open.wait_for(|&n| n == 0)).await;
            n
        }
    };
    let drained = start.elapsed();
    balancer
        .shared
        .state
        .send_replace(ListenerState::HandedOver);
    let released = release_vip.await;
    let total = start.elapsed();
    tracing::info!(open_at_start, cut, ?drained, ?total, "VIP handed over");
    HandOverReport {
        quiesce_error,
        open_at_start,
        cut,
        drained,
        total,
        released,
    }
}

/// See [`hand_over`]: how long the accept loop gets to take connections
/// already queued when the filter went on.
const ACCEPT_SETTLE: Duration = Duration::from_millis(50);

/// See [`hand_over`]: how long cut connections get to close.
const CUT_WAIT: Duration = Duration::from_millis(500);

/// The listener's filter while quiesced, classic BPF: drop a segment
/// with SYN set, accept anything else.
///
/// Linux runs a listening socket's filter on every segment that reaches
/// it (`tcp_filter` in `tcp_v4_rcv`): new SYNs and also the final ACK of
/// a handshake already in progress (the request socket's listener's
/// filter). A filter that drops everything (`ret #0`) would strand such
/// a half-open connection: the client sees it established, the server
/// never does, and after the VIP moves the new holder answers it with a
/// RST. Dropping only SYNs lets those handshakes complete (the
/// connection is then accepted and drained like the others). Accepted
/// sockets inherit the listener's filter when they are created, which is
/// harmless for this one: an established connection carries no SYN.
/// The filter sees the segment from its TCP header on (byte 13 holds
/// the flags).
fn syn_drop_filter() -> [socket2::SockFilter; 4] {
    use libc::{BPF_ABS, BPF_B, BPF_JMP, BPF_JSET, BPF_K, BPF_LD, BPF_RET};
    use socket2::SockFilter;
    // The codes are 16 bits wide (linux/filter.h); libc types them u32.
    const LD_B_ABS: u16 = (BPF_LD | BPF_B | BPF_ABS) as u16;
    const JSET_K: u16 = (BPF_JMP | BPF_JSET | BPF_K) as u16;
    const RET_K: u16 = (BPF_RET | BPF_K) as u16;
    const TCP_FLAGS: u32 = 13;
    const SYN: u32 = 0x02;
    [
        SockFilter::new(LD_B_ABS, 0, 0, TCP_FLAGS),
        // SYN set: to the next instruction (drop), else skip it (accept).
        SockFilter::new(JSET_K, 0, 1, SYN),
        SockFilter::new(RET_K, 0, 0, 0),
        SockFilter::new(RET_K, 0, 0, u32::MAX),
    ]
}

impl std::fmt::Debug for Balancer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Balancer")
            .field("listen", &self.shared.listen)
            .field("state", &*self.shared.state.borrow())
            .finish_non_exhaustive()
    }
}

impl Balancer {
    /// Binds `addr` and starts (see [`Balancer::start`]). A wildcard
    /// address (`0.0.0.0:6443`) serves every address of the node, the
    /// VIP included as soon as it is added; the socket has
    /// `SO_REUSEADDR`, so a restarted agent binds again at once while
    /// old connections sit in `TIME_WAIT`.
    pub async fn bind(addr: SocketAddr, config: BalancerConfig) -> Result<Balancer, BalancerError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| BalancerError::Bind { addr, source })?;
        Balancer::start(listener, config)
    }

    /// Starts the checks and the accept loop on `listener`, on the
    /// current tokio runtime. Every backend starts out of rotation and
    /// comes in after `rules.rise` passing checks. At least one backend
    /// is needed here; [`Balancer::set_backends`] may change the set
    /// later (also to none).
    pub fn start(listener: TcpListener, config: BalancerConfig) -> Result<Balancer, BalancerError> {
        if config.backends.is_empty() {
            return Err(BalancerError::NoBackends);
        }
        let client = check::client(&config.check, config.rules.timeout)?;
        let listen = listener
            .local_addr()
            .map_err(|source| BalancerError::LocalAddr { source })?;
        let shared = Arc::new(Shared {
            pool: Mutex::new(Pool::new([], &config.rules)),
            listen,
            connect_timeout: config.connect_timeout,
            serving: watch::channel(0).0,
            open: watch::channel(0).0,
            cut: watch::channel(false).0,
            state: watch::channel(ListenerState::Serving).0,
        });
        let listener = Arc::new(listener);
        let mut set = JoinSet::new();
        let (accept_listener, accept_shared) = (listener.clone(), shared.clone());
        set.spawn(async move { accept(accept_listener, accept_shared).await });
        let balancer = Balancer {
            shared,
            listener,
            checker: Checker {
                client,
                spec: config.check,
                interval: config.rules.interval,
            },
            tasks: Mutex::new(Tasks {
                set,
                checks: Vec::new(),
            }),
        };
        balancer.set_backends(config.backends);
        Ok(balancer)
    }

    /// Makes the backend set `backends` (the masters list; duplicates
    /// count once), idempotent for an unchanged set. A new backend gets
    /// a check task and starts out of rotation: it takes connections
    /// after `rise` passing checks (a master that just joined is not
    /// assumed ready). A removed one leaves rotation at once and its
    /// check task stops; connections already proxied to it run on until
    /// they close. Kept backends keep their health and counts; new ones
    /// go to the end of the round-robin order.
    pub fn set_backends(&self, backends: Vec<SocketAddr>) -> BackendChange {
        let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        let want: BTreeSet<SocketAddr> = backends.iter().copied().collect();
        let mut change = BackendChange::default();
        let mut added = Vec::new();
        {
            let mut pool = self.shared.pool();
            let have: Vec<(BackendId, SocketAddr)> = pool
                .ids()
                .filter_map(|id| pool.addr(id).map(|a| (id, a)))
                .collect();
            for (id, addr) in have {
                if !want.contains(&addr) {
                    pool.remove(id);
                    change.removed.push(addr);
                    tasks.checks.retain(|(check, handle)| {
                        if *check == id {
                            handle.abort();
                        }
                        *check != id
                    });
                }
            }
            let mut seen = BTreeSet::new();
            for addr in backends {
                if seen.insert(addr) && pool.find(addr).is_none() {
                    added.push((pool.add(addr), addr));
                    change.added.push(addr);
                }
            }
            self.shared.serving.send_replace(pool.serving());
        }
        for (id, addr) in added {
            let handle = tasks.set.spawn(check_loop(
                self.checker.client.clone(),
                self.checker.spec.url(addr),
                self.checker.spec.expect_body.clone(),
                self.checker.interval,
                id,
                self.shared.clone(),
            ));
            tasks.checks.push((id, handle));
        }
        // Reap the aborted check tasks.
        while tasks.set.try_join_next().is_some() {}
        if !change.is_empty() {
            tracing::info!(added = ?change.added, removed = ?change.removed, "backends changed");
        }
        change
    }

    /// Stops taking new connections, silently: attaches a socket filter
    /// to the listener that drops every incoming SYN, so a new client
    /// gets neither an accept nor a RST and retransmits its SYN (after
    /// about 1 s, then 2 s, 4 s...): by then the VIP has moved and the
    /// retransmission reaches the new holder. The listener stays open
    /// (closing it would answer SYNs with RSTs); connections already
    /// accepted, or queued for accept, go on. Idempotent.
    pub fn quiesce(&self) -> std::io::Result<()> {
        socket2::SockRef::from(&*self.listener).attach_filter(&syn_drop_filter())?;
        self.shared.state.send_if_modified(|s| {
            let was = *s;
            if was == ListenerState::Serving {
                *s = ListenerState::Draining;
            }
            was == ListenerState::Serving
        });
        tracing::info!(listen = %self.shared.listen, "listener quiesced: new connections are dropped silently");
        Ok(())
    }

    /// Takes new connections again (removes the filter of
    /// [`Balancer::quiesce`]); after a [`hand_over`], for when this node
    /// stays up and should serve again.
    pub fn resume(&self) -> std::io::Result<()> {
        match socket2::SockRef::from(&*self.listener).detach_filter() {
            // ENOENT: no filter attached, already serving.
            Err(e) if e.raw_os_error() != Some(libc::ENOENT) => return Err(e),
            _ => {}
        }
        self.shared.cut.send_replace(false);
        self.shared.state.send_replace(ListenerState::Serving);
        Ok(())
    }

    /// Whether the listener takes new connections.
    pub fn state(&self) -> ListenerState {
        *self.shared.state.borrow()
    }

    /// Client connections accepted and not yet closed.
    pub fn open_connections(&self) -> usize {
        *self.shared.open.borrow()
    }

    /// Where the balancer accepts connections.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.listen
    }

    /// The status snapshot.
    pub fn status(&self) -> BalancerStatus {
        BalancerStatus {
            listen: self.shared.listen,
            policy: POLICY.to_owned(),
            state: self.state(),
            open: self.open_connections(),
            backends: self.shared.pool().snapshot(),
        }
    }

    /// The number of backends in rotation, updated on every change: what
    /// the VIP's priority should follow (zero: this node cannot serve the
    /// API through the VIP).
    pub fn serving(&self) -> watch::Receiver<usize> {
        self.shared.serving.subscribe()
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        let tasks = self.tasks.get_mut().unwrap_or_else(|e| e.into_inner());
        tasks.set.abort_all();
    }
}

/// One backend's checks, every `interval`, until aborted.
async fn check_loop(
    client: reqwest::Client,
    url: String,
    expect: Option<String>,
    interval: Duration,
    id: BackendId,
    shared: Arc<Shared>,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let (outcome, why) = check::probe(&client, &url, expect.as_deref()).await;
        if let Some(why) = &why {
            tracing::debug!(%url, ?outcome, %why, "check failed");
        }
        shared.record(id, outcome, why);
    }
}

async fn accept(listener: Arc<TcpListener>, shared: Arc<Shared>) {
    loop {
        match listener.accept().await {
            Ok((client, peer)) => {
                let open = Open::new(shared.clone());
                tokio::spawn(proxy(client, peer, shared.clone(), open));
            }
            Err(e) => {
                // Out of file descriptors and the like: back off instead
                // of spinning; the listener itself stays.
                tracing::warn!(error = %e, "accepting a connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Proxies one client connection (see the module docs).
async fn proxy(mut client: TcpStream, peer: SocketAddr, shared: Arc<Shared>, _open: Open) {
    let mut cut = shared.cut.subscribe();
    let mut tried = Vec::new();
    loop {
        let Some(id) = shared.pool().pick(&tried) else {
            tracing::warn!(%peer, tried = tried.len(), "no backend to take the connection");
            return;
        };
        tried.push(id);
        let reserved = Reservation {
            shared: shared.clone(),
            id,
        };
        let Some(addr) = shared.pool().addr(id) else {
            return;
        };
        let outcome = tokio::time::timeout(shared.connect_timeout, TcpStream::connect(addr)).await;
        let mut upstream = match outcome {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::debug!(%peer, backend = %addr, error = %e, "connecting to a backend");
                drop(reserved);
                shared.connect_failed(id, Outcome::Fail, format!("connect: {e}"));
                continue;
            }
            Err(_) => {
                tracing::debug!(%peer, backend = %addr, "connecting to a backend timed out");
                drop(reserved);
                shared.connect_failed(id, Outcome::Slow, "connect timed out".to_owned());
                continue;
            }
        };
        shared.pool().connected(id);
        let _ = client.set_nodelay(true);
        let _ = upstream.set_nodelay(true);
        tokio::select! {
            copied = tokio::io::copy_bidirectional(&mut client, &mut upstream) => match copied {
                Ok((up, down)) => tracing::trace!(%peer, backend = %addr, up, down, "closed"),
                Err(e) => tracing::debug!(%peer, backend = %addr, error = %e, "connection ended"),
            },
            _ = cut.wait_for(|&c| c) => {
                tracing::debug!(%peer, backend = %addr, "closed at the hand-over's drain bound");
            }
        }
        drop(reserved);
        return;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Checks every hour: the first check (which fails: the backends are
    /// plain TCP echo servers) runs at start, the next never during a
    /// test, and one failure is below `fall`. [`Balancer::force_up`]
    /// stands in for passing checks.
    const RULES: HealthRules = HealthRules {
        interval: Duration::from_secs(3600),
        timeout: Duration::from_millis(200),
        fall: 3,
        slow_fall: 5,
        rise: 2,
    };

    impl Balancer {
        /// Records `rise` passing checks for every backend.
        fn force_up(&self) {
            let ids: Vec<BackendId> = self.shared.pool().ids().collect();
            for id in ids {
                for _ in 0..RULES.rise {
                    self.shared.record(id, Outcome::Pass, None);
                }
            }
        }

        fn check_tasks(&self) -> Vec<BackendId> {
            let tasks = self.tasks.lock().unwrap();
            tasks.checks.iter().map(|(id, _)| *id).collect()
        }
    }

    fn config(backends: Vec<SocketAddr>) -> BalancerConfig {
        let secret = cluster_config::ClusterSecret::new("0123456789abcdef-long-enough").unwrap();
        let pki = pki::ClusterPki::derive(&secret, "test").unwrap();
        BalancerConfig {
            backends,
            check: CheckSpec::apiserver_readyz(pki.kubernetes_ca.cert_pem.into_bytes()),
            rules: RULES,
            connect_timeout: Duration::from_millis(500),
        }
    }

    /// A TCP echo server on loopback.
    async fn echo() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    /// Sends `msg` and reads it back.
    async fn round_trip(s: &mut TcpStream, msg: &[u8]) {
        s.write_all(msg).await.unwrap();
        let mut back = vec![0; msg.len()];
        tokio::time::timeout(Duration::from_secs(2), s.read_exact(&mut back))
            .await
            .expect("echo within 2 s")
            .unwrap();
        assert_eq!(back, msg);
    }

    fn addrs(b: &Balancer) -> Vec<SocketAddr> {
        b.status().backends.iter().map(|s| s.addr).collect()
    }

    /// Which backend a new connection through `b` reaches: the one whose
    /// `total` grew.
    async fn next_backend(b: &Balancer) -> (SocketAddr, TcpStream) {
        let before = b.status().backends;
        let mut s = TcpStream::connect(b.local_addr()).await.unwrap();
        round_trip(&mut s, b"which").await;
        let after = b.status().backends;
        let grown = after
            .iter()
            .find(|a| {
                before
                    .iter()
                    .find(|x| x.addr == a.addr)
                    .is_none_or(|x| x.total < a.total)
            })
            .expect("one backend took it");
        (grown.addr, s)
    }

    #[tokio::test]
    async fn set_backends_follows_the_list_and_is_idempotent() {
        let (a, b, c) = (echo().await, echo().await, echo().await);
        let bal = Balancer::bind("127.0.0.1:0".parse().unwrap(), config(vec![a, b]))
            .await
            .unwrap();
        assert_eq!(addrs(&bal), [a, b]);
        assert_eq!(bal.check_tasks().len(), 2);
        assert!(bal.set_backends(vec![b, a, a]).is_empty(), "same set");
        assert_eq!(bal.check_tasks().len(), 2);
        bal.force_up();
        assert_eq!(*bal.serving().borrow(), 2);

        // A long-lived connection on a, then a leaves the list.
        let (first, mut on_a) = next_backend(&bal).await;
        assert_eq!(first, a, "round robin starts at the first");
        let change = bal.set_backends(vec![b, c]);
        assert_eq!(
            change,
            BackendChange {
                added: vec![c],
                removed: vec![a]
            }
        );
        assert_eq!(addrs(&bal), [b, c]);
        let checks = bal.check_tasks();
        assert_eq!(checks.len(), 2, "a's check task is gone: {checks:?}");
        let st = bal.status();
        assert!(st.backends[0].in_rotation, "b kept its health");
        assert!(!st.backends[1].in_rotation, "c starts out of rotation");
        assert_eq!(*bal.serving().borrow(), 1);
        // The connection to a runs on; new ones go to b only (c is not up).
        round_trip(&mut on_a, b"still here").await;
        for _ in 0..3 {
            assert_eq!(next_backend(&bal).await.0, b);
        }
        // c comes in after its rise passes.
        bal.force_up();
        let mut seen = BTreeSet::new();
        for _ in 0..4 {
            seen.insert(next_backend(&bal).await.0);
        }
        assert_eq!(seen, BTreeSet::from([b, c]));
        round_trip(&mut on_a, b"and still").await;
        drop(on_a);
        // An empty list: nothing serves; connections are closed.
        bal.set_backends(Vec::new());
        assert_eq!(*bal.serving().borrow(), 0);
        assert!(bal.check_tasks().is_empty());
        let mut s = TcpStream::connect(bal.local_addr()).await.unwrap();
        let mut buf = [0; 1];
        let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await;
        assert!(matches!(n, Ok(Ok(0)) | Ok(Err(_))), "closed: {n:?}");
    }

    #[tokio::test]
    async fn binds_the_wildcard_address() {
        let a = echo().await;
        let bal = Balancer::bind("0.0.0.0:0".parse().unwrap(), config(vec![a]))
            .await
            .unwrap();
        bal.force_up();
        let port = bal.local_addr().port();
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        round_trip(&mut s, b"through the wildcard").await;
        // Rebinding the same port with the connection just closed (the
        // agent restarted: its connections sit in TIME_WAIT):
        // SO_REUSEADDR lets the new listener bind once the old is gone
        // (the aborted accept task drops it on the next poll).
        drop(bal);
        drop(s);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let again = Balancer::bind(SocketAddr::from(([0, 0, 0, 0], port)), config(vec![a])).await;
        assert!(again.is_ok(), "rebinding :{port}: {again:?}");
    }

    #[tokio::test]
    async fn a_quiesced_listener_drops_new_connections_silently_and_keeps_open_ones() {
        let a = echo().await;
        let bal = Balancer::bind("127.0.0.1:0".parse().unwrap(), config(vec![a]))
            .await
            .unwrap();
        bal.force_up();
        let mut open = TcpStream::connect(bal.local_addr()).await.unwrap();
        round_trip(&mut open, b"before").await;
        assert_eq!(bal.state(), ListenerState::Serving);

        bal.quiesce().unwrap();
        bal.quiesce().unwrap();
        assert_eq!(bal.state(), ListenerState::Draining);
        let started = Instant::now();
        let attempt = tokio::time::timeout(
            Duration::from_millis(300),
            TcpStream::connect(bal.local_addr()),
        )
        .await;
        // A RST would be an immediate `ConnectionRefused`; an accept a
        // connected stream. Neither: the SYN was dropped.
        assert!(attempt.is_err(), "connect within 300 ms: {attempt:?}");
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert_eq!(bal.open_connections(), 1, "nothing accepted");
        round_trip(&mut open, b"established connections keep working").await;
        let st = bal.status();
        assert_eq!((st.state, st.open), (ListenerState::Draining, 1));

        bal.resume().unwrap();
        bal.resume().unwrap();
        assert_eq!(bal.state(), ListenerState::Serving);
        let mut again = TcpStream::connect(bal.local_addr()).await.unwrap();
        round_trip(&mut again, b"after resume").await;
    }

    #[tokio::test]
    async fn hand_over_waits_for_open_connections_then_releases() {
        let a = echo().await;
        let bal = Balancer::bind("127.0.0.1:0".parse().unwrap(), config(vec![a]))
            .await
            .unwrap();
        bal.force_up();
        let mut open = TcpStream::connect(bal.local_addr()).await.unwrap();
        round_trip(&mut open, b"x").await;
        let closed_at = Arc::new(Mutex::new(None::<Instant>));
        let closer = closed_at.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(400)).await;
            round_trip(&mut open, b"still served while draining").await;
            *closer.lock().unwrap() = Some(Instant::now());
            drop(open);
        });
        let start = Instant::now();
        let report = hand_over(&bal, Duration::from_secs(5), async {
            // The release runs after the last connection closed.
            let closed = closed_at
                .lock()
                .unwrap()
                .expect("closed before the release");
            assert_eq!(bal.state(), ListenerState::HandedOver);
            Instant::now().duration_since(closed)
        })
        .await;
        assert_eq!(report.quiesce_error, None);
        assert_eq!((report.open_at_start, report.cut), (1, 0));
        assert!(report.drained >= Duration::from_millis(400), "{report:?}");
        assert!(report.drained < Duration::from_secs(3), "{report:?}");
        assert!(report.total <= start.elapsed());
        assert!(report.released < Duration::from_secs(1), "{report:?}");
        assert_eq!(bal.state(), ListenerState::HandedOver);
    }

    #[tokio::test]
    async fn hand_over_cuts_connections_open_at_the_bound() {
        let a = echo().await;
        let bal = Balancer::bind("127.0.0.1:0".parse().unwrap(), config(vec![a]))
            .await
            .unwrap();
        bal.force_up();
        let mut watch = TcpStream::connect(bal.local_addr()).await.unwrap();
        round_trip(&mut watch, b"a long watch").await;
        let report = hand_over(&bal, Duration::from_millis(300), async { 7 }).await;
        assert_eq!(
            (report.open_at_start, report.cut, report.released),
            (1, 1, 7)
        );
        assert!(report.drained >= Duration::from_millis(300), "{report:?}");
        assert!(report.drained < Duration::from_millis(1500), "{report:?}");
        assert_eq!(bal.open_connections(), 0);
        let mut buf = [0; 1];
        let n = tokio::time::timeout(Duration::from_secs(2), watch.read(&mut buf)).await;
        assert!(
            matches!(n, Ok(Ok(0)) | Ok(Err(_))),
            "the watch was closed: {n:?}"
        );
    }
}
