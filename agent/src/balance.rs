//! The agent's side of the API load balancer (issue 18; the balancer
//! itself is the `balancer` crate): when it runs, which backends it has,
//! how its health reaches the VIP, how it hands over on stop, and what
//! `agent status` shows of it. One owner, [`Balance`], held by
//! `crate::actions`.
//!
//! # Port plan (k3s-style)
//!
//! | what                                         | address                  |
//! |----------------------------------------------|--------------------------|
//! | the public endpoint: `controlPlaneEndpoint`, every kubeconfig and join | `VIP:api_port` (6443) |
//! | the agent's balancer, on **every** master    | `0.0.0.0:api_port` (6443) |
//! | each master's kube-apiserver (kubeadm `localAPIEndpoint.bindPort`) | `*:apiserver_port` (6444) |
//! | the balancer's backends                      | every master's `node_ip:apiserver_port` |
//! | checks of the *local* API server (the VIP's `/readyz` weight, the kube phase's probes and proof, host-gw) | `127.0.0.1:apiserver_port` |
//!
//! The balancer listens on the wildcard address on every master, so the
//! node that VRRP gives the VIP serves `VIP:6443` the moment the address
//! is added: no `IP_FREEBIND`, no rebinding when the VIP moves, and the
//! standby balancers are already warm (their checks run). The API
//! servers advertise `node_ip:6444`, so the `kubernetes` service's
//! endpoints reach them directly, not through the balancer. Workers are
//! unaffected: they use `VIP:6443`.
//!
//! Alternatives weighed (the balancer crate's README "Port plan" has the
//! crate's side):
//! - **API servers bind the node address, the balancer binds `VIP:6443`
//!   with `IP_FREEBIND`**: keeps one port number everywhere, but every
//!   loopback dial on the masters (kubeadm's own health checks, the
//!   `/readyz` weight, the proof) must move to the node address, the
//!   listener must be opened for an address the node does not have, and
//!   `node_ip:6443` and `VIP:6443` would be two different services on one
//!   port number: a confusing thing to debug.
//! - **The balanced endpoint on another port (`VIP:8443`, as the HAProxy
//!   guides do)**: no API server change, but the public endpoint becomes a
//!   non-standard port and `VIP:6443` still reaches the holder's own API
//!   server: two endpoints, only one balanced.
//!
//! The split port is what k3s and RKE2 do (their supervisor and the API
//! server's port differ). `[balancer] enabled = false` puts the API
//! servers back on `api_port` with no balancer (the single-holder layout).
//!
//! # Life cycle
//!
//! - **Start** with the kube phase on a master: at the same hand-off where
//!   the VIP's health gains the local `/readyz`
//!   ([`kubeadm::VipHealth::EtcdAndApiServer`]), with the kube phase's
//!   cluster CA, the only one the checks trust. A bind failure (the port
//!   taken, for example by an API server of an older configuration) is
//!   reported in `agent status` with the address and retried every
//!   [`RETRY`]; never silent.
//! - **Backends** follow discovery: this master plus every live master
//!   peer ([`backends`]), through `Balancer::set_backends` (kept backends
//!   keep their health and counts).
//! - **Health into the VIP**: [`Balance::serving`] is handed to
//!   [`crate::vip::Vip::set_balancer`]; none in rotation costs
//!   [`crate::vip::BALANCER_WEIGHT`] of VRRP priority.
//! - **Stop** (SIGTERM, [`Balance::hand_over`]): quiesce (new SYNs dropped
//!   silently, so clients retransmit to the next holder), drain proxied
//!   connections up to `[balancer] drain_timeout_ms`, then release the VIP
//!   (VRRP priority 0). agent.service is ordered after kubelet and
//!   containerd, so on shutdown this runs while the API server still
//!   serves.

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use balancer::{Balancer, BalancerConfig, BalancerError, BalancerStatus, CheckSpec, HealthRules};
use cluster_config::{ClusterConfig, Role};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

/// How long after a failed start (bind) the next attempt waits.
pub const RETRY: Duration = Duration::from_secs(2);

/// Time allowed to connect to a backend before trying the next.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// What the balancer is doing, as `agent status` names it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BalancerState {
    /// Not on this node: a worker, or `[balancer] enabled = false`.
    #[default]
    Off,
    /// Enabled; waiting for the kube phase (and its CA) on this master.
    Waiting,
    /// Listening; no backend has passed its checks yet (VIP penalty).
    Starting,
    /// Listening with at least one backend in rotation.
    Serving,
    /// Listening, but every backend left the rotation (VIP penalty).
    NoBackend,
    /// Stopping: new connections dropped, proxied ones draining, then
    /// the VIP is released.
    Quiescing,
    /// The listening address could not be bound; retried.
    BindError,
    /// The balancer could not be set up otherwise (for example a CA it
    /// cannot read); retried.
    Failed,
}

impl std::fmt::Display for BalancerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BalancerState::Off => "off",
            BalancerState::Waiting => "waiting for the kube phase",
            BalancerState::Starting => "starting (no backend in rotation yet)",
            BalancerState::Serving => "serving",
            BalancerState::NoBackend => "no backend in rotation",
            BalancerState::Quiescing => "quiescing (draining, then releasing the VIP)",
            BalancerState::BindError => "bind error (retrying)",
            BalancerState::Failed => "failed (retrying)",
        })
    }
}

/// The `balancer` section of `agent status`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BalancerReport {
    /// What it is doing.
    pub state: BalancerState,
    /// Where it listens (or would), when enabled on this node.
    pub listen: Option<SocketAddr>,
    /// The last start failure (with the address), while failing.
    pub error: Option<String>,
    /// The running balancer's own snapshot: backends, health, rotation,
    /// connections, last errors.
    pub status: Option<BalancerStatus>,
}

impl std::fmt::Display for BalancerReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "balancer:  {}", self.state)?;
        if let Some(listen) = self.listen {
            write!(f, ", listen {listen}")?;
        }
        if let Some(e) = &self.error {
            write!(f, ": {e}")?;
        }
        writeln!(f)?;
        if let Some(s) = &self.status {
            for l in s.to_string().lines() {
                writeln!(f, "  {l}")?;
            }
        }
        Ok(())
    }
}

/// The backends: this master and every other live master, each at the
/// API servers' port, sorted, without duplicates. Pure.
pub fn backends(own_ip: Ipv4Addr, masters: &[Ipv4Addr], apiserver_port: u16) -> Vec<SocketAddr> {
    let mut out: Vec<SocketAddr> = std::iter::once(own_ip)
        .chain(masters.iter().copied())
        .map(|ip| SocketAddr::from((ip, apiserver_port)))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The settings of an enabled balancer.
#[derive(Debug, Clone)]
struct Settings {
    listen: SocketAddr,
    apiserver_port: u16,
    own_ip: Ipv4Addr,
    drain: Duration,
    rules: HealthRules,
}

/// The agent's balancer: off, waiting, or running (see the module docs).
pub struct Balance {
    settings: Option<Settings>,
    running: Option<Balancer>,
    /// A failed start: the state to show, why, and when to try again.
    failed: Option<(BalancerState, String, Instant)>,
    /// A backend was in rotation at some point (then none is
    /// `NoBackend`, not `Starting`).
    served: bool,
    quiescing: bool,
}

impl Balance {
    /// The balancer for this node: off unless a master with `[balancer]
    /// enabled`. Listens on `0.0.0.0:<api_port>`.
    pub fn new(cfg: &ClusterConfig, own_ip: Ipv4Addr) -> Balance {
        Balance::with_listen(
            cfg,
            own_ip,
            SocketAddr::from((Ipv4Addr::UNSPECIFIED, cfg.kubernetes.api_port)),
            HealthRules::APISERVER,
        )
    }

    /// As [`Balance::new`] with another listening address and health
    /// rules (tests).
    pub fn with_listen(
        cfg: &ClusterConfig,
        own_ip: Ipv4Addr,
        listen: SocketAddr,
        rules: HealthRules,
    ) -> Balance {
        let on = cfg.role == Role::Master && cfg.balancer.enabled;
        Balance {
            settings: on.then(|| Settings {
                listen,
                apiserver_port: cfg.kubernetes.apiserver_port,
                own_ip,
                drain: Duration::from_millis(cfg.balancer.drain_timeout_ms),
                rules,
            }),
            running: None,
            failed: None,
            served: false,
            quiescing: false,
        }
    }

    /// Whether this node runs a balancer at all.
    pub fn enabled(&self) -> bool {
        self.settings.is_some()
    }

    /// One turn (never waits): once `start` (the kube phase's hand-off)
    /// and a CA are there, starts the balancer (or retries a failed
    /// start after [`RETRY`]); then keeps its backends at this master
    /// plus `masters`. Must run inside a tokio runtime.
    pub fn reconcile(&mut self, start: bool, masters: &[Ipv4Addr], ca_pem: &str, now: Instant) {
        let Some(s) = &self.settings else { return };
        if self.quiescing {
            return;
        }
        let want = backends(s.own_ip, masters, s.apiserver_port);
        if let Some(b) = &self.running {
            b.set_backends(want);
            if *b.serving().borrow() > 0 {
                self.served = true;
            }
            return;
        }
        if !start || ca_pem.is_empty() {
            return;
        }
        if matches!(&self.failed, Some((_, _, at)) if now < *at) {
            return;
        }
        let config = BalancerConfig {
            backends: want,
            check: CheckSpec::apiserver_readyz(ca_pem.as_bytes().to_vec()),
            rules: s.rules,
            connect_timeout: CONNECT_TIMEOUT,
        };
        match start_balancer(s.listen, config) {
            Ok(b) => {
                tracing::info!(
                    "API balancer on {} ({}): backends {:?}",
                    b.local_addr(),
                    balancer::POLICY,
                    b.status()
                        .backends
                        .iter()
                        .map(|b| b.addr)
                        .collect::<Vec<_>>()
                );
                self.failed = None;
                self.running = Some(b);
            }
            Err(e) => {
                let state = match e {
                    BalancerError::Bind { .. } => BalancerState::BindError,
                    _ => BalancerState::Failed,
                };
                let why = format!("{:#}", anyhow::Error::new(e));
                // Logged when it changes; retried quietly.
                if self.failed.as_ref().is_none_or(|(_, w, _)| *w != why) {
                    tracing::error!("API balancer not started (retrying every {RETRY:?}): {why}");
                }
                self.failed = Some((state, why, now + RETRY));
            }
        }
    }

    /// The running balancer's backends in rotation, for the VIP's
    /// priority; `None` while it does not run.
    pub fn serving(&self) -> Option<watch::Receiver<usize>> {
        self.running.as_ref().map(Balancer::serving)
    }

    /// What `agent status` shows.
    pub fn report(&self) -> BalancerReport {
        let Some(s) = &self.settings else {
            return BalancerReport::default();
        };
        let status = self.running.as_ref().map(Balancer::status);
        let state = match (&status, &self.failed) {
            (Some(st), _) if self.quiescing || st.state != balancer::ListenerState::Serving => {
                BalancerState::Quiescing
            }
            (Some(st), _) if st.serving() > 0 => BalancerState::Serving,
            (Some(_), _) if self.served => BalancerState::NoBackend,
            (Some(_), _) => BalancerState::Starting,
            (None, Some((state, _, _))) => *state,
            (None, None) => BalancerState::Waiting,
        };
        BalancerReport {
            state,
            listen: Some(self.running.as_ref().map_or(s.listen, Balancer::local_addr)),
            error: self.failed.as_ref().map(|(_, why, _)| why.clone()),
            status,
        }
    }

    /// Graceful stop: with a running balancer, quiesces it, drains its
    /// connections up to `[balancer] drain_timeout_ms` and then runs
    /// `release_vip` (`balancer::hand_over`); without one, just runs
    /// `release_vip`. The balancer stays quiesced afterwards.
    pub async fn hand_over<F: Future<Output = ()>>(&mut self, release_vip: F) {
        match (&self.running, &self.settings) {
            (Some(b), Some(s)) => {
                self.quiescing = true;
                tracing::info!(
                    "API balancer: quiescing, draining up to {:?}, then releasing the VIP",
                    s.drain
                );
                let r = balancer::hand_over(b, s.drain, release_vip).await;
                if let Some(e) = &r.quiesce_error {
                    tracing::warn!("API balancer: could not quiesce the listener: {e}");
                }
                tracing::info!(
                    "API balancer handed over: {} connections open at the start, {} cut at the \
                     bound, drained in {:?}, VIP released after {:?}",
                    r.open_at_start,
                    r.cut,
                    r.drained,
                    r.total
                );
            }
            _ => release_vip.await,
        }
    }
}

/// Binds `listen` (std's bind sets `SO_REUSEADDR`, so a restarted agent
/// rebinds over connections in TIME_WAIT) and starts the balancer on it.
fn start_balancer(listen: SocketAddr, config: BalancerConfig) -> Result<Balancer, BalancerError> {
    let bind = |source| BalancerError::Bind {
        addr: listen,
        source,
    };
    let std_listener = std::net::TcpListener::bind(listen).map_err(bind)?;
    std_listener.set_nonblocking(true).map_err(bind)?;
    let listener = tokio::net::TcpListener::from_std(std_listener).map_err(bind)?;
    Balancer::start(listener, config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(extra: &str) -> ClusterConfig {
        cluster_config::ClusterSpec::from_toml(
            "t",
            &format!("role = \"master\"\n[network]\nvip = \"10.77.0.10/24\"\n{extra}"),
        )
        .unwrap()
        .validate()
        .unwrap()
    }

    #[test]
    fn backends_are_every_master_at_the_api_servers_port() {
        let own = Ipv4Addr::new(10, 77, 0, 12);
        assert_eq!(
            backends(
                own,
                &[
                    Ipv4Addr::new(10, 77, 0, 13),
                    Ipv4Addr::new(10, 77, 0, 11),
                    own
                ],
                6444
            ),
            ["10.77.0.11:6444", "10.77.0.12:6444", "10.77.0.13:6444"]
                .map(|a| a.parse::<SocketAddr>().unwrap())
        );
        // Alone (the others not discovered yet): its own API server.
        assert_eq!(
            backends(own, &[], 6444),
            vec![SocketAddr::from((own, 6444))]
        );
    }

    #[test]
    fn off_on_workers_and_when_disabled_waiting_otherwise() {
        let ip = Ipv4Addr::new(10, 77, 0, 11);
        let master = Balance::new(&cfg(""), ip);
        assert!(master.enabled());
        assert_eq!(
            master.report(),
            BalancerReport {
                state: BalancerState::Waiting,
                listen: Some("0.0.0.0:6443".parse().unwrap()),
                error: None,
                status: None,
            }
        );
        assert!(master.serving().is_none());
        let off = Balance::new(&cfg("[balancer]\nenabled = false\n"), ip);
        assert!(!off.enabled());
        assert_eq!(off.report(), BalancerReport::default());
        let mut worker = cfg("");
        worker.role = Role::Worker;
        assert_eq!(Balance::new(&worker, ip).report().state, BalancerState::Off);
    }

    #[tokio::test]
    async fn a_taken_port_is_reported_with_its_address_and_retried() {
        // Hold a port, and point the balancer at it.
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let ip = Ipv4Addr::LOCALHOST;
        let mut b = Balance::with_listen(&cfg(""), ip, addr, HealthRules::APISERVER);
        let ca = "-----BEGIN CERTIFICATE-----\n";
        let t0 = Instant::now();
        // Not before the hand-off, nor without a CA.
        b.reconcile(false, &[], ca, t0);
        b.reconcile(true, &[], "", t0);
        assert_eq!(b.report().state, BalancerState::Waiting);
        b.reconcile(true, &[], ca, t0);
        let r = b.report();
        assert_eq!(r.state, BalancerState::BindError, "{r:?}");
        let e = r.error.expect("the bind error");
        assert!(e.contains(&addr.to_string()), "{e}");
        assert!(b.serving().is_none());
        // Freed: the next attempt after RETRY binds it.
        drop(taken);
        b.reconcile(true, &[], ca, t0 + RETRY / 2);
        assert_eq!(b.report().state, BalancerState::BindError);
        b.reconcile(true, &[], ca, t0 + RETRY);
        let r = b.report();
        // A CA that does not parse is no bind error; with a real one it runs.
        assert!(
            matches!(r.state, BalancerState::Starting | BalancerState::Failed),
            "{r:?}"
        );
    }
}
