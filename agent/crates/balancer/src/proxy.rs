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
//! Dropping the [`Balancer`] stops the accept loop and the checks;
//! connections already proxied run on until they close.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use thiserror::Error;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use vrrp::verdict::Outcome;

use crate::check::{self, CheckError, CheckSpec};
use crate::pool::{BackendId, HealthRules, Pool};
use crate::status::{BackendHealth, BalancerStatus};

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

/// A running balancer; dropping it stops accepting and checking.
pub struct Balancer {
    shared: Arc<Shared>,
    _tasks: JoinSet<()>,
}

impl std::fmt::Debug for Balancer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Balancer")
            .field("listen", &self.shared.listen)
            .finish_non_exhaustive()
    }
}

impl Balancer {
    /// Binds `addr` and starts (see [`Balancer::start`]).
    pub async fn bind(addr: SocketAddr, config: BalancerConfig) -> Result<Balancer, BalancerError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| BalancerError::Bind { addr, source })?;
        Balancer::start(listener, config)
    }

    /// Starts the checks and the accept loop on `listener`, on the
    /// current tokio runtime. Every backend starts out of rotation and
    /// comes in after `rules.rise` passing checks.
    pub fn start(listener: TcpListener, config: BalancerConfig) -> Result<Balancer, BalancerError> {
        if config.backends.is_empty() {
            return Err(BalancerError::NoBackends);
        }
        let client = check::client(&config.check, config.rules.timeout)?;
        let listen = listener
            .local_addr()
            .map_err(|source| BalancerError::LocalAddr { source })?;
        let pool = Pool::new(config.backends.iter().copied(), &config.rules);
        let ids: Vec<BackendId> = pool.ids().collect();
        let (serving, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            pool: Mutex::new(pool),
            listen,
            connect_timeout: config.connect_timeout,
            serving,
        });
        let mut tasks = JoinSet::new();
        for (id, addr) in ids.into_iter().zip(&config.backends) {
            let url = config.check.url(*addr);
            let expect = config.check.expect_body.clone();
            let (client, shared, interval) =
                (client.clone(), shared.clone(), config.rules.interval);
            tasks.spawn(async move {
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
            });
        }
        let accept_shared = shared.clone();
        tasks.spawn(async move { accept(listener, accept_shared).await });
        Ok(Balancer {
            shared,
            _tasks: tasks,
        })
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

async fn accept(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        match listener.accept().await {
            Ok((client, peer)) => {
                tokio::spawn(proxy(client, peer, shared.clone()));
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
async fn proxy(mut client: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
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
        match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
            Ok((up, down)) => tracing::trace!(%peer, backend = %addr, up, down, "closed"),
            Err(e) => tracing::debug!(%peer, backend = %addr, error = %e, "connection ended"),
        }
        drop(reserved);
        return;
    }
}
