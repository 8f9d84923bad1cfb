//! The kube phase as the agent's run loop drives it: the gate, the join
//! material, and the task that owns the reconciler ([`KubePhase`]). The
//! agent keeps only glue (`agent/src/kube.rs`): it fills [`KubeSetup`]
//! and [`KubePeer`], hands [`Kube::start`] its etcd connection (an
//! [`EtcdConnector`] over its one TLS client) and mirrors the published
//! [`KubeReport`] into its status report.
//!
//! - At start the image's record (`/usr/lib/kubeboot/kubernetes.toml`) is
//!   read once. An image without Kubernetes makes the phase `skipped` with
//!   the record's reason (logged once, shown in `agent status` and in the
//!   `STATUS=` line) and nothing else Kubernetes-related ever happens.
//! - Otherwise one task owns the reconciler and runs one reconcile at a
//!   time, every few seconds, once the [`gate`] opens (masters: the local
//!   etcd member is a healthy voter; workers: a master announces a ready
//!   control plane, or this worker was joined before). The run loop only
//!   hands it the latest [`Feed`] through a watch channel and never waits
//!   for it; the task publishes the [`KubeReport`] (the `kube` section of
//!   the agent's status report) and the state this node announces.
//! - The token, the CA pin and (masters) the shared CA material come from
//!   the cluster secret and the cluster PKI the agent's `node_pki` derived
//!   once ([`DerivedMaterial::derive`]); a
//!   worker gets the VIP from its configuration and the masters' addresses
//!   from authenticated announcements, so nothing secret crosses the wire.
//! - Join material: masters announce the API endpoint (`<VIP>:<port>`)
//!   and the CA pin in their (HMAC-authenticated) announcements; a worker
//!   takes both from there, cross-checks them against its own derivation
//!   and refuses a mismatch ([`resolve_join`]). The token is derived on
//!   every node and never sent. The `kube.join` section of the status
//!   report shows the material (token id only) whether or not the image
//!   has Kubernetes.
//!
//! The decisions ([`gate`], [`joiners_waiting`], [`wire_state`],
//! [`master_ips`], [`status_suffix`], [`kubelet_state`]) are pure.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use cluster_config::{ClusterConfig, ClusterSecret, Role};
use discovery::{KubeJoinInfo, KubeState, Phase as AgentPhase};
use supervisor::{ServiceState, Supervisor, SystemdSupervisor};
use tokio::sync::watch;

use crate::decide::{judge_setup, PhaseState, Setup};
use crate::hostgw::{self, EffectiveCni, HostGw, NetlinkRoutes};
use crate::image::{ImageKubernetes, ImageVerdict, InstalledComponent, IMAGE_KUBERNETES_PATH};
use crate::kubeapi::ApiClient;
use crate::paths::{Paths, ADMIN_CONF, KUBELET_CONF};
use crate::phase::{
    ApiHealth, DerivedMaterial, KubeContext, KubePhase, KubeStatus, KubeletState, Probe,
};
use crate::probe::ReadyzCheck;
use crate::proof::NodeIdentity;
use crate::render::KubeadmInputs;
use crate::report::{JoinReport, JoinSource, KubeReport};
use crate::runner::ProcessRunner;

/// Time between two reconciles once the node is set up (each one reads
/// the election key, probes the kubelet and `/readyz`).
pub const READY_INTERVAL: Duration = Duration::from_secs(5);
/// Time between two reconciles before that (a reconcile inside the
/// backoff after a failure returns at once).
pub const BUSY_INTERVAL: Duration = Duration::from_secs(2);
/// Time before a reconcile that stopped on a configuration error is tried
/// again (it fails the same way until the configuration changes, so the
/// error is logged only when its text changes).
pub const CONFIG_ERROR_INTERVAL: Duration = Duration::from_secs(60);
/// Timeout of one `/readyz` probe.
pub const READYZ_TIMEOUT: Duration = Duration::from_secs(2);

/// What a master waits for before the kube phase starts.
pub const MASTER_WAITS_FOR: &str = "the local etcd member to be a healthy voter";
/// What a worker waits for before the kube phase starts.
pub const WORKER_WAITS_FOR: &str =
    "a master announcing a ready Kubernetes control plane and its join material";

/// What one peer announces about its kube phase (the agent fills it from
/// its discovery snapshot).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubePeer {
    /// The peer's node id (hex).
    pub id: String,
    /// A master.
    pub master: bool,
    /// Its addresses.
    pub addresses: Vec<Ipv4Addr>,
    /// Its kube phase state; `None` from agents that predate it.
    pub kube: Option<KubeState>,
    /// The join material it announces (masters); `None` from agents that
    /// predate it.
    pub join: Option<KubeJoinInfo>,
}

/// How the kube task connects to etcd (masters: the init election). The
/// agent implements it with its one TLS client and its client certificate.
pub trait EtcdConnector: Send + Sync + 'static {
    /// A client for the members' client URLs `endpoints`; the error is
    /// shown in the report while the task retries.
    fn connect(
        &self,
        endpoints: &[String],
    ) -> impl std::future::Future<Output = Result<etcd_client::Client, String>> + Send;
}

/// Whether the kube phase may take its first step. Pure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    /// It may.
    Open,
    /// Not yet.
    Closed {
        /// What it waits for (shown in `agent status`).
        waiting_for: String,
    },
}

/// The gate: a master once its etcd member is a healthy voter (the plan's
/// `Ready`, [`AgentPhase`]; the election needs etcd); a worker once some master announces
/// a ready control plane (`kubeadm join` needs an API server behind the
/// VIP) and it holds join material checked by [`resolve_join`]
/// (`join_known`), or at once when it was already joined before (a
/// restart). Pure.
pub fn gate(
    role: Role,
    phase: AgentPhase,
    already_set_up: bool,
    join_known: bool,
    peers: &[KubePeer],
) -> Gate {
    let open = match role {
        Role::Master => phase == AgentPhase::Ready,
        Role::Worker => {
            already_set_up
                || (join_known
                    && peers
                        .iter()
                        .any(|p| p.master && p.kube == Some(KubeState::Ready)))
        }
    };
    if open {
        Gate::Open
    } else {
        Gate::Closed {
            waiting_for: match role {
                Role::Master => MASTER_WAITS_FOR,
                Role::Worker => WORKER_WAITS_FOR,
            }
            .to_owned(),
        }
    }
}

/// Some authenticated peer announces that it has not joined yet (so a
/// master keeps the bootstrap token alive). Agents that predate the kube
/// field, and skipped or ready nodes, do not count. Pure.
pub fn joiners_waiting(peers: &[KubePeer]) -> bool {
    peers
        .iter()
        .any(|p| p.kube.is_some_and(KubeState::waits_to_join))
}

/// Every master's cluster address: this node's (when it is a master) and
/// each announcing master's first address, sorted (the certificate SANs
/// of `kubeadm init`). Pure.
pub fn master_ips(own: Option<Ipv4Addr>, peers: &[KubePeer]) -> Vec<Ipv4Addr> {
    let mut v: Vec<Ipv4Addr> = own
        .into_iter()
        .chain(
            peers
                .iter()
                .filter(|p| p.master)
                .filter_map(|p| p.addresses.first().copied()),
        )
        .collect();
    v.sort();
    v.dedup();
    v
}

/// This node's own join material, derived from the cluster secret and
/// configuration (the same on every node).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DerivedJoin {
    /// `<VIP>:<API port>`.
    pub api_endpoint: String,
    /// The Kubernetes CA pin.
    pub ca_pin: String,
    /// The bootstrap token's id.
    pub token_id: String,
}

/// Derives [`DerivedJoin`]: the token id from the secret, the pin from the
/// cluster's Kubernetes CA (derived from the secret by
/// the agent's `node_pki`), the endpoint from `network.vip`.
pub fn derive_join(
    cfg: &ClusterConfig,
    secret: &ClusterSecret,
    cluster: &pki::ClusterPki,
) -> Result<DerivedJoin, String> {
    let vip = cfg
        .network
        .vip
        .ok_or("network.vip is not set: the join endpoint is the VIP")?;
    let m = DerivedMaterial::derive(secret, &cfg.name, Role::Worker, cluster, None)
        .map_err(|e| format!("deriving the kubeadm token and CA pin: {e}"))?;
    Ok(DerivedJoin {
        api_endpoint: format!("{}:{}", vip.addr(), cfg.kubernetes.api_port),
        ca_pin: m.pin.as_str().to_owned(),
        token_id: m.token.id().to_owned(),
    })
}

/// The join material this node reports and uses. Pure.
///
/// A master uses its own derivation (`source: derived`). A worker takes the
/// endpoint and the pin from authenticated master announcements (`source:
/// discovery`): `Ok(None)` while no master announced any; an error when
/// masters announce different material, when the pin is not a valid
/// `sha256:` pin, or when either differs from the worker's own derivation
/// (then it does not join).
pub fn resolve_join(
    role: Role,
    own: &DerivedJoin,
    peers: &[KubePeer],
) -> Result<Option<JoinReport>, String> {
    let report = |api_endpoint: &str, ca_pin: &str, source| JoinReport {
        api_endpoint: api_endpoint.to_owned(),
        ca_pin: ca_pin.to_owned(),
        token_id: own.token_id.clone(),
        source,
    };
    if role == Role::Master {
        return Ok(Some(report(
            &own.api_endpoint,
            &own.ca_pin,
            JoinSource::Derived,
        )));
    }
    let mut announced: Vec<&KubeJoinInfo> = peers
        .iter()
        .filter(|p| p.master)
        .filter_map(|p| p.join.as_ref())
        .collect();
    announced.sort_by(|a, b| (&a.api_endpoint, &a.ca_pin).cmp(&(&b.api_endpoint, &b.ca_pin)));
    announced.dedup();
    let got = match announced.as_slice() {
        [] => return Ok(None),
        [one] => *one,
        many => {
            let list: Vec<String> = many
                .iter()
                .map(|j| format!("{} {}", j.api_endpoint, j.ca_pin))
                .collect();
            return Err(format!(
                "masters announce different join material ({}): refusing to join",
                list.join("; ")
            ));
        }
    };
    crate::pin::CaPin::parse(&got.ca_pin, "the CA pin masters announce")
        .map_err(|e| format!("{e}: refusing to join"))?;
    if got.ca_pin != own.ca_pin {
        return Err(format!(
            "the CA pin masters announce ({}) differs from the one derived from \
             the cluster secret ({}): refusing to join",
            got.ca_pin, own.ca_pin
        ));
    }
    if got.api_endpoint != own.api_endpoint {
        return Err(format!(
            "the API endpoint masters announce ({}) differs from this node's \
             VIP endpoint ({}): refusing to join",
            got.api_endpoint, own.api_endpoint
        ));
    }
    Ok(Some(report(
        &got.api_endpoint,
        &got.ca_pin,
        JoinSource::Discovery,
    )))
}

/// Replaces the report with `k`, keeping the join material (owned by
/// [`Kube::observe_join`], not by the reconciler).
fn set_kube(r: &mut KubeReport, k: KubeReport) {
    *r = KubeReport {
        join: r.join.take(),
        join_error: r.join_error.take(),
        ..k
    };
}

/// The state this node announces for its kube report. Pure.
pub fn wire_state(k: &KubeReport) -> KubeState {
    if k.error.is_some() {
        return KubeState::Failed;
    }
    match k.phase {
        PhaseState::Pending => KubeState::Pending,
        PhaseState::Skipped { .. } => KubeState::Skipped,
        PhaseState::WaitingForInit { .. } => KubeState::WaitingForInit,
        PhaseState::Initialising => KubeState::Initialising,
        PhaseState::Joining => KubeState::Joining,
        PhaseState::Retrying { .. } => KubeState::Retrying,
        PhaseState::Ready => KubeState::Ready,
    }
}

/// The kube part of the `STATUS=` line sent to systemd (`None` while
/// pending, so the line is unchanged before the phase matters). Stable
/// between reconciles: no countdown in it. Pure.
pub fn status_suffix(k: &KubeReport) -> Option<String> {
    if let Some(e) = &k.error {
        return Some(format!("kube failed: {e}"));
    }
    Some(match &k.phase {
        PhaseState::Pending => return None,
        PhaseState::Skipped { reason } => format!("kube skipped: {reason}"),
        PhaseState::WaitingForInit { init_node } => format!(
            "kube waiting for init node {}",
            init_node.get(..6).unwrap_or(init_node)
        ),
        PhaseState::Initialising => "kube initialising".to_owned(),
        PhaseState::Joining => "kube joining".to_owned(),
        PhaseState::Retrying {
            failures,
            last_error,
            ..
        } => format!("kube retrying ({failures} failures): {last_error}"),
        PhaseState::Ready => "kube ready".to_owned(),
    })
}

/// The kubelet state of the supervisor's view of `kubelet.service`. Pure.
pub fn kubelet_state(s: &ServiceState) -> KubeletState {
    match s {
        ServiceState::Active | ServiceState::Activating => KubeletState::Active,
        ServiceState::Inactive | ServiceState::Deactivating => KubeletState::Inactive,
        ServiceState::Failed { .. } => KubeletState::Failed,
    }
}

/// Timeout of one Kubernetes API request (Node reads: the worker's proof
/// and host-gw's routes). 30 s: in real-kubeadm run 14 a joined master's
/// `GET /api/v1/nodes` on its own busy API server took longer than the
/// 5 s this was, every time for 25 minutes, so host-gw never wrote that
/// node's CNI configuration and the node stayed NotReady (`cni plugin not
/// initialized`); a `kubectl get nodes` through the VIP took 30-60 s then.
pub const API_TIMEOUT: Duration = Duration::from_secs(30);

/// The agent's probe: the kubelet's unit state over D-Bus (when the agent
/// runs under systemd), the local `/readyz` (masters), and the proof of a
/// kubeadm step (masters: that `/readyz`; workers: their Node object, read
/// with `kubelet.conf`'s credentials through the server it names, the
/// VIP), TLS verified against the derived CA.
struct NodeProbe {
    systemd: Option<SystemdSupervisor>,
    readyz: Option<ReadyzCheck>,
    paths: Paths,
    ca_pem: String,
}

impl Probe for NodeProbe {
    async fn kubelet(&self) -> KubeletState {
        match &self.systemd {
            None => KubeletState::Unknown,
            Some(s) => match s.state("kubelet").await {
                Ok(st) => kubelet_state(&st),
                Err(e) => {
                    tracing::debug!("kubelet state: {e}");
                    KubeletState::Unknown
                }
            },
        }
    }
    async fn api_server(&self) -> ApiHealth {
        match &self.readyz {
            Some(c) => c.check().await,
            None => ApiHealth::Unknown,
        }
    }
    async fn prove(&self, role: Role, node_name: &str) -> Result<String, String> {
        match role {
            Role::Master => match &self.readyz {
                None => Err("no /readyz check (the CA certificate did not load)".to_owned()),
                Some(c) => match c.check().await {
                    ApiHealth::Ready => Ok("this node's API server answered /readyz (TLS \
                                           verified against the cluster CA)"
                        .to_owned()),
                    ApiHealth::NotReady { reason } => Err(reason),
                    other => Err(format!("API server {other:?}")),
                },
            },
            Role::Worker => {
                let api = ApiClient::from_kubeconfig(
                    &self.paths.host(KUBELET_CONF),
                    &self.paths,
                    self.ca_pem.as_bytes(),
                    None,
                    API_TIMEOUT,
                )
                .map_err(|e| e.to_string())?;
                match api.node(node_name).await.map_err(|e| e.to_string())? {
                    Some(_) => Ok(format!(
                        "the API at {} shows Node {node_name} (read with kubelet.conf's \
                         credentials, TLS verified against the cluster CA)",
                        api.server()
                    )),
                    None => Err(format!(
                        "the API at {} has no Node {node_name} yet",
                        api.server()
                    )),
                }
            }
        }
    }
}

/// What the run loop learns from discovery and hands the task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Feed {
    /// Every master's address ([`master_ips`]).
    pub master_ips: Vec<Ipv4Addr>,
    /// The etcd members' client URLs.
    pub etcd_endpoints: Vec<String>,
    /// [`joiners_waiting`].
    pub joiners_waiting: bool,
    /// Workers: the CA pin taken from master announcements
    /// ([`resolve_join`]); the join configuration uses it.
    pub ca_pin: Option<String>,
}

/// Everything the kube phase needs from the agent at start.
pub struct KubeSetup {
    /// The validated cluster configuration.
    pub cfg: ClusterConfig,
    /// The cluster secret.
    pub secret: ClusterSecret,
    /// This node's id (hex; the init election's value).
    pub node_id: String,
    /// This node's name.
    pub name: String,
    /// This node's cluster address.
    pub ip: Ipv4Addr,
    /// kube-apiserver's etcd client certificate (masters), handed over in
    /// memory by the agent's `node_pki`.
    pub apiserver_etcd_client: Option<pki::Issued>,
    /// The cluster's CAs, derived once by the agent's `node_pki`.
    pub cluster_pki: Arc<pki::ClusterPki>,
    /// Where kubeadm's files are (`Paths::node()` on a node).
    pub paths: Paths,
    /// Read the kubelet's state over D-Bus (the agent runs under systemd).
    pub systemd: bool,
}

enum Mode {
    /// Skipped, or stopped on an error before any task: nothing to do.
    Off,
    /// The task runs; `opened` once the gate first opened.
    Active {
        feed: watch::Sender<Option<Feed>>,
        opened: bool,
    },
}

/// The kube phase as the run loop holds it.
pub struct Kube {
    mode: Mode,
    report: watch::Sender<KubeReport>,
    state: watch::Receiver<KubeState>,
    already_set_up: bool,
    ca_pem: String,
    role: Role,
    derived_join: Result<DerivedJoin, String>,
    join: Option<JoinReport>,
}

impl Kube {
    /// Reads the image's record and, when Kubernetes is in the image,
    /// starts the (gated) reconcile task, which connects to etcd through
    /// `etcd` (masters). Never fails: problems are shown in `report` and
    /// logged once.
    pub fn start(
        setup: KubeSetup,
        etcd: impl EtcdConnector,
        report: watch::Sender<KubeReport>,
    ) -> Kube {
        let (state_tx, state) = watch::channel(KubeState::Pending);
        let mut kube = Kube {
            mode: Mode::Off,
            report,
            state,
            already_set_up: false,
            ca_pem: String::new(),
            role: setup.cfg.role,
            derived_join: derive_join(&setup.cfg, &setup.secret, &setup.cluster_pki),
            join: None,
        };
        // Masters show (and announce) their material from the start.
        kube.observe_join(&[]);
        let (verdict, components) = read_record(&setup.paths);
        let cni_manifest = match verdict {
            Ok(ImageVerdict::Skip { reason }) => {
                tracing::info!("kube phase skipped: {reason}");
                kube.finish(
                    &state_tx,
                    KubeReport {
                        phase: PhaseState::Skipped { reason },
                        ..KubeReport::default()
                    },
                );
                return kube;
            }
            Err(e) => {
                kube.fail(&state_tx, format!("{e}"));
                return kube;
            }
            Ok(ImageVerdict::Present {
                version,
                cni_manifest,
                ..
            }) => {
                tracing::info!("kube phase: Kubernetes {version} in the image");
                cni_manifest
            }
        };
        let material = match derive_material(&setup) {
            Ok(m) => m,
            Err(e) => {
                kube.fail(&state_tx, e);
                return kube;
            }
        };
        if let Some(shared) = &material.shared_pki {
            kube.ca_pem = shared.ca_crt.clone();
        }
        kube.already_set_up = set_up(&setup, &material);
        let cni = hostgw::effective_cni(setup.cfg.kubernetes.cni, cni_manifest.as_deref());
        let (feed_tx, feed_rx) = watch::channel(None);
        tokio::spawn(reconcile_task(
            Task {
                setup,
                material,
                cni,
                report: kube.report.clone(),
                state_tx,
                host_gw: None,
                last_error: None,
            },
            components,
            etcd,
            feed_rx,
        ));
        kube.mode = Mode::Active {
            feed: feed_tx,
            opened: false,
        };
        kube
    }

    fn finish(&self, state_tx: &watch::Sender<KubeState>, k: KubeReport) {
        state_tx.send_replace(wire_state(&k));
        self.report.send_modify(|r| set_kube(r, k));
    }

    fn fail(&self, state_tx: &watch::Sender<KubeState>, error: String) {
        tracing::error!("kube phase stopped: {error}");
        self.finish(
            state_tx,
            KubeReport {
                error: Some(error),
                ..KubeReport::default()
            },
        );
    }

    /// Updates the join material from the latest peers ([`resolve_join`])
    /// and the report's `kube.join`/`kube.join_error` when they changed
    /// (a refusal is logged once per new text). Cheap; call it on every
    /// run-loop turn, also when the phase is skipped.
    pub fn observe_join(&mut self, peers: &[KubePeer]) {
        // Without material of its own (no VIP) the report says why; only
        // a refusal of announced material is logged.
        let (join, error, log) = match &self.derived_join {
            Err(e) => (None, Some(format!("no join material: {e}")), false),
            Ok(own) => match resolve_join(self.role, own, peers) {
                Ok(j) => (j, None, true),
                Err(e) => (None, Some(e), true),
            },
        };
        self.join = join.clone();
        self.report.send_if_modified(|r| {
            if r.join == join && r.join_error == error {
                return false;
            }
            if let Some(e) = error.as_ref().filter(|_| log) {
                if r.join_error.as_ref() != Some(e) {
                    tracing::error!("kube phase: {e}");
                }
            } else if let Some(j) = &join {
                tracing::info!(
                    "kube phase: join material {} {} (token id {}, from {})",
                    j.api_endpoint,
                    j.ca_pin,
                    j.token_id,
                    j.source.name()
                );
            }
            r.join = join;
            r.join_error = error;
            true
        });
    }

    /// Whether this node holds checked join material (the worker gate).
    pub fn join_known(&self) -> bool {
        self.join.is_some()
    }

    /// Workers: the CA pin taken from master announcements.
    pub fn discovered_pin(&self) -> Option<String> {
        self.join
            .as_ref()
            .filter(|j| j.source == JoinSource::Discovery)
            .map(|j| j.ca_pin.clone())
    }

    /// What this node announces as join material: masters their derived
    /// endpoint and pin (never the token), and only once their control
    /// plane is proven up (`ready`: kubeadm exited 0 and the API answered)
    /// — or when the image has no Kubernetes (`skipped`: the material is
    /// then informational, no control plane will ever be announced ready);
    /// workers nothing.
    pub fn announced_join(&self) -> Option<KubeJoinInfo> {
        let proven = matches!(self.wire_state(), KubeState::Ready | KubeState::Skipped);
        match (&self.role, &self.derived_join) {
            (Role::Master, Ok(own)) if proven => Some(KubeJoinInfo {
                api_endpoint: own.api_endpoint.clone(),
                ca_pin: own.ca_pin.clone(),
            }),
            _ => None,
        }
    }

    /// Whether kubeadm's files were complete when the agent started.
    pub fn already_set_up(&self) -> bool {
        self.already_set_up
    }

    /// Hands the task the gate and the latest facts (cheap; never waits).
    /// Once the gate has opened it stays open: the reconciler itself
    /// retries whatever is transient.
    pub fn update(&mut self, gate: Gate, feed: Feed) {
        let Mode::Active { feed: tx, opened } = &mut self.mode else {
            return;
        };
        match gate {
            Gate::Open => {
                if !*opened {
                    tracing::info!("kube phase: starting");
                    self.report.send_modify(|r| r.waiting_for = None);
                }
                *opened = true;
                tx.send_if_modified(|f| {
                    if f.as_ref() == Some(&feed) {
                        false
                    } else {
                        *f = Some(feed);
                        true
                    }
                });
            }
            Gate::Closed { waiting_for } if !*opened => {
                self.report.send_if_modified(|r| {
                    if r.waiting_for.as_deref() == Some(waiting_for.as_str()) {
                        false
                    } else {
                        r.waiting_for = Some(waiting_for);
                        true
                    }
                });
            }
            Gate::Closed { .. } => {
                // Keep the task's facts current while it runs.
                tx.send_if_modified(|f| match f {
                    Some(old) if *old != feed => {
                        *old = feed;
                        true
                    }
                    _ => false,
                });
            }
        }
    }

    /// The state to announce.
    pub fn wire_state(&self) -> KubeState {
        *self.state.borrow()
    }

    /// Resolves when the announced state changed (never, once the task
    /// ended or for a skipped phase).
    pub async fn changed(&mut self) {
        if self.state.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// The VIP's health checks for the current state ([`crate::vip_health`]).
    pub fn vip_health(&self, api_port: u16) -> crate::VipHealth {
        crate::vip_health(&self.report.borrow().phase, api_port)
    }

    /// The published report (what the agent mirrors into its status).
    pub fn report(&self) -> watch::Ref<'_, KubeReport> {
        self.report.borrow()
    }

    /// A receiver of the published report, told of every change.
    pub fn subscribe(&self) -> watch::Receiver<KubeReport> {
        self.report.subscribe()
    }

    /// The cluster's Kubernetes CA certificate (masters; empty otherwise).
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }
}

/// The image's Kubernetes record at start: its verdict and installed
/// components.
fn read_record(
    paths: &Paths,
) -> (
    Result<ImageVerdict, crate::image::ImageError>,
    Vec<InstalledComponent>,
) {
    let record_path = paths.host(IMAGE_KUBERNETES_PATH);
    let shown = record_path.display().to_string();
    match std::fs::read_to_string(&record_path) {
        Ok(text) => match ImageKubernetes::from_toml(&shown, &text) {
            Ok(r) => (r.verdict(&shown), r.components),
            Err(e) => (Err(e), Vec::new()),
        },
        // Missing: skipped with a reason naming the file; other errors.
        Err(_) => (crate::image::read_verdict(&record_path), Vec::new()),
    }
}

/// Whether kubeadm's files were complete at start ([`judge_setup`]).
fn set_up(setup: &KubeSetup, material: &DerivedMaterial) -> bool {
    let facts = crate::facts::gather(&setup.paths, setup.cfg.role);
    let me = NodeIdentity {
        node_name: setup.name.clone(),
        ca_pin: material.pin.as_str().to_owned(),
    };
    judge_setup(setup.cfg.role, &facts, SystemTime::now(), &me) == Setup::Complete
}

/// Derives the token, the pin and (masters) the shared CA material with
/// the `apiserver-etcd-client` certificate the node's PKI handed over.
fn derive_material(s: &KubeSetup) -> Result<DerivedMaterial, String> {
    let apiserver_client = match s.cfg.role {
        Role::Master => Some(s.apiserver_etcd_client.clone().ok_or_else(|| {
            "no apiserver-etcd-client certificate from the node's PKI".to_owned()
        })?),
        Role::Worker => None,
    };
    DerivedMaterial::derive(
        &s.secret,
        &s.cfg.name,
        s.cfg.role,
        &s.cluster_pki,
        apiserver_client.as_ref(),
    )
    .map_err(|e| format!("deriving the kubeadm token and CA material: {e}"))
}

/// What the reconcile task owns besides the reconciler.
struct Task {
    setup: KubeSetup,
    material: DerivedMaterial,
    cni: EffectiveCni,
    report: watch::Sender<KubeReport>,
    state_tx: watch::Sender<KubeState>,
    /// Opened on first use (host-gw mode, once the node is ready).
    host_gw: Option<HostGw<NetlinkRoutes>>,
    /// The last configuration error, logged once per new text.
    last_error: Option<String>,
}

/// The reconciler as the task drives it.
type NodePhase = KubePhase<ProcessRunner, NodeProbe>;

/// The task: waits for the gate, then reconciles one step at a time.
async fn reconcile_task(
    mut task: Task,
    components: Vec<InstalledComponent>,
    etcd: impl EtcdConnector,
    mut feed_rx: watch::Receiver<Option<Feed>>,
) {
    // The gate.
    let Some(mut feed) = first_feed(&mut feed_rx).await else {
        return;
    };
    let etcd = if task.setup.cfg.role == Role::Master {
        Some(connect_etcd(&etcd, &feed.etcd_endpoints, &task.report).await)
    } else {
        None
    };
    let runner = ProcessRunner::default().with_components(&components);
    let mut phase = KubePhase::new(
        task.setup.paths.clone(),
        runner,
        task.node_probe().await,
        etcd,
    )
    .with_proof_timeout(
        Duration::from_secs(task.setup.cfg.kubernetes.proof_timeout_s),
        crate::phase::PROOF_POLL,
    );
    // While a step runs (minutes), show Initialising/Joining.
    forward_phase(&phase, task.report.clone(), task.state_tx.clone());
    loop {
        if let Some(f) = feed_rx.borrow_and_update().clone() {
            feed = f;
        }
        let pause = task.step(&mut phase, &feed).await;
        tokio::time::sleep(pause).await;
    }
}

/// The first feed the run loop hands over: the gate opened (`None` when
/// the run loop is gone).
async fn first_feed(feed_rx: &mut watch::Receiver<Option<Feed>>) -> Option<Feed> {
    loop {
        if let Some(f) = feed_rx.borrow_and_update().clone() {
            return Some(f);
        }
        if feed_rx.changed().await.is_err() {
            return None;
        }
    }
}

/// Connects to etcd (masters: the init election), retrying every
/// [`BUSY_INTERVAL`]; while it fails the report says why (logged once).
async fn connect_etcd(
    etcd: &impl EtcdConnector,
    endpoints: &[String],
    report: &watch::Sender<KubeReport>,
) -> etcd_client::Client {
    let mut logged = false;
    loop {
        match etcd.connect(endpoints).await {
            Ok(c) => return c,
            Err(e) => {
                if !logged {
                    tracing::warn!("kube phase: {e} (retrying)");
                    logged = true;
                }
                report.send_modify(|r| r.waiting_for = Some(e.clone()));
                tokio::time::sleep(BUSY_INTERVAL).await;
            }
        }
    }
}

/// Forwards the reconciler's phase to the report and the announced state
/// while a step runs.
fn forward_phase(
    phase: &NodePhase,
    report: watch::Sender<KubeReport>,
    state_tx: watch::Sender<KubeState>,
) {
    let mut watch_phase = phase.watch();
    tokio::spawn(async move {
        while watch_phase.changed().await.is_ok() {
            let p = watch_phase.borrow_and_update().clone();
            report.send_modify(|r| r.phase = p);
            let next = wire_state(&report.borrow());
            state_tx.send_if_modified(|s| {
                if *s == next {
                    false
                } else {
                    *s = next;
                    true
                }
            });
        }
    });
}

/// The pod network's name in the report.
fn cni_name(cni: &EffectiveCni) -> String {
    match cni {
        EffectiveCni::Manifest(m) => format!("manifest {m}"),
        EffectiveCni::HostGw => "host-gw".to_owned(),
        EffectiveCni::Off => "none".to_owned(),
    }
}

impl Task {
    /// The probe: the kubelet over D-Bus (under systemd) and, on masters,
    /// the local `/readyz` with the cluster CA.
    async fn node_probe(&self) -> NodeProbe {
        let systemd = if self.setup.systemd {
            match SystemdSupervisor::connect().await {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::warn!("kube phase: kubelet state unknown (D-Bus: {e})");
                    None
                }
            }
        } else {
            None
        };
        let master = self.setup.cfg.role == Role::Master;
        let readyz = match (&self.material.shared_pki, master) {
            (Some(shared), true) => match ReadyzCheck::local(
                self.setup.cfg.kubernetes.apiserver_port,
                shared.ca_crt.as_bytes(),
                READYZ_TIMEOUT,
            ) {
                Ok(c) => Some(c),
                Err(e) => {
                    tracing::warn!("kube phase: API server health unknown: {e}");
                    None
                }
            },
            _ => None,
        };
        NodeProbe {
            systemd,
            readyz,
            paths: self.setup.paths.clone(),
            ca_pem: self.material.ca_crt.clone(),
        }
    }

    /// Publishes `k` and the state it announces.
    fn publish(&self, k: KubeReport) {
        self.state_tx.send_if_modified(|s| {
            let next = wire_state(&k);
            if *s == next {
                false
            } else {
                *s = next;
                true
            }
        });
        self.report.send_modify(|r| set_kube(r, k));
    }

    /// The reconciler's context for `feed`, or the configuration error.
    fn context(&self, feed: &Feed) -> Result<KubeContext, String> {
        let master = self.setup.cfg.role == Role::Master;
        // Workers join with the pin masters announced (checked against
        // the derived one by `resolve_join` before the gate opened).
        let pin = match (master, &feed.ca_pin) {
            (false, Some(p)) => crate::pin::CaPin::parse(p, "the announced CA pin"),
            _ => Ok(self.material.pin.clone()),
        };
        let inputs = match pin {
            Ok(pin) => KubeadmInputs::from_cluster(
                &self.setup.cfg,
                None,
                &self.setup.name,
                self.setup.ip,
                feed.master_ips.clone(),
                feed.etcd_endpoints.clone(),
                self.material.token.clone(),
                pin,
            )
            .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        }?;
        Ok(KubeContext {
            now: SystemTime::now(),
            role: self.setup.cfg.role,
            node_id: self.setup.node_id.clone(),
            inputs,
            shared_pki: self.material.shared_pki.clone(),
            joiners_waiting: feed.joiners_waiting,
        })
    }

    /// One reconcile and its report; returns the time to the next one.
    async fn step(&mut self, phase: &mut NodePhase, feed: &Feed) -> Duration {
        let result = match self.context(feed) {
            Ok(ctx) => phase.reconcile(&ctx).await.map_err(|e| e.to_string()),
            Err(e) => Err(e),
        };
        match result {
            Ok(st) => self.reconciled(st).await,
            Err(e) => self.stopped(e),
        }
    }

    /// A reconcile that returned a status (host-gw: then the routes).
    async fn reconciled(&mut self, st: KubeStatus) -> Duration {
        self.last_error = None;
        let ready = st.phase == PhaseState::Ready;
        let pause = if ready { READY_INTERVAL } else { BUSY_INTERVAL };
        let host_gw_report = if ready && self.cni == EffectiveCni::HostGw {
            Some(reconcile_host_gw(&self.setup, &self.material.ca_crt, &mut self.host_gw).await)
        } else {
            None
        };
        self.publish(KubeReport {
            phase: st.phase,
            waiting_for: None,
            error: None,
            init_node: st.init_node,
            is_init_node: st.is_init_node,
            joined: st.joined,
            kubelet: st.kubelet,
            api_server: st.api_server,
            images_imported: st.images_imported,
            kubeadm: st.kubeadm,
            proven: st.proven,
            cni: Some(cni_name(&self.cni)),
            host_gw: host_gw_report,
            ..KubeReport::default()
        });
        pause
    }

    /// A reconcile that stopped on a configuration error.
    fn stopped(&mut self, e: String) -> Duration {
        if self.last_error.as_deref() != Some(e.as_str()) {
            tracing::error!("kube phase stopped (configuration): {e}");
            self.last_error = Some(e.clone());
        }
        // What an earlier reconcile learnt about the import stays.
        let images_imported = self.report.borrow().images_imported;
        self.publish(KubeReport {
            error: Some(e),
            images_imported,
            ..KubeReport::default()
        });
        CONFIG_ERROR_INTERVAL
    }
}

/// One host-gw reconcile: the Node list through the API with this node's
/// own credentials (masters: `admin.conf` against their own API server;
/// workers: `kubelet.conf` against the server it names, the VIP), then
/// [`HostGw::reconcile`]. Problems are in the report.
async fn reconcile_host_gw(
    setup: &KubeSetup,
    ca_pem: &str,
    host_gw: &mut Option<HostGw<NetlinkRoutes>>,
) -> hostgw::HostGwReport {
    let failed = |e: String| hostgw::HostGwReport {
        error: Some(e),
        ..hostgw::HostGwReport::default()
    };
    let (kubeconfig, server) = match setup.cfg.role {
        Role::Master => (
            ADMIN_CONF,
            Some(format!(
                "https://127.0.0.1:{}",
                setup.cfg.kubernetes.apiserver_port
            )),
        ),
        Role::Worker => (KUBELET_CONF, None),
    };
    let api = match ApiClient::from_kubeconfig(
        &setup.paths.host(kubeconfig),
        &setup.paths,
        ca_pem.as_bytes(),
        server.as_deref(),
        API_TIMEOUT,
    ) {
        Ok(a) => a,
        Err(e) => return failed(e.to_string()),
    };
    let nodes = match api.nodes().await {
        Ok(n) => n,
        Err(e) => return failed(format!("listing the Nodes: {e}")),
    };
    if host_gw.is_none() {
        match NetlinkRoutes::open() {
            Ok(t) => *host_gw = Some(HostGw::new(setup.paths.clone(), t)),
            Err(e) => return failed(e),
        }
    }
    match host_gw {
        Some(gw) => gw.reconcile(&setup.name, setup.ip, &nodes).await,
        None => failed("no netlink connection".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The agent's etcd connection stands in for nothing here: no test
    /// opens a master's gate.
    struct NoEtcd;

    impl EtcdConnector for NoEtcd {
        async fn connect(&self, _: &[String]) -> Result<etcd_client::Client, String> {
            Err("no etcd in this test".to_owned())
        }
    }

    fn peer(master: bool, ip: [u8; 4], kube: Option<KubeState>) -> KubePeer {
        KubePeer {
            id: "00".repeat(16),
            master,
            addresses: vec![Ipv4Addr::from(ip)],
            kube,
            join: None,
        }
    }

    #[test]
    fn masters_start_once_their_etcd_member_is_a_healthy_voter() {
        for phase in [
            AgentPhase::Starting,
            AgentPhase::Discovering,
            AgentPhase::Bootstrapping,
            AgentPhase::Joining,
            AgentPhase::EtcdMember,
            AgentPhase::Failed,
        ] {
            assert_eq!(
                gate(Role::Master, phase, false, false, &[]),
                Gate::Closed {
                    waiting_for: MASTER_WAITS_FOR.into()
                },
                "{phase:?}"
            );
        }
        assert_eq!(
            gate(Role::Master, AgentPhase::Ready, false, false, &[]),
            Gate::Open
        );
    }

    #[test]
    fn workers_start_once_a_master_announces_a_ready_control_plane() {
        let closed = Gate::Closed {
            waiting_for: WORKER_WAITS_FOR.into(),
        };
        // Workers never reach the plan's Ready: their plan phase is ignored.
        let w = |peers: &[KubePeer], set_up: bool| {
            gate(Role::Worker, AgentPhase::Discovering, set_up, true, peers)
        };
        assert_eq!(w(&[], false), closed);
        // Masters without Kubernetes yet, an old master, a ready worker.
        let not_yet = [
            peer(true, [10, 0, 0, 1], Some(KubeState::Initialising)),
            peer(true, [10, 0, 0, 2], None),
            peer(false, [10, 0, 0, 9], Some(KubeState::Ready)),
        ];
        assert_eq!(w(&not_yet, false), closed);
        let mut ready = not_yet.to_vec();
        ready.push(peer(true, [10, 0, 0, 3], Some(KubeState::Ready)));
        assert_eq!(w(&ready, false), Gate::Open);
        // Without checked join material a ready master is not enough.
        assert_eq!(
            gate(Role::Worker, AgentPhase::Discovering, false, false, &ready),
            closed
        );
        // A worker joined before a restart does not wait for anyone.
        assert_eq!(w(&[], true), Gate::Open);
    }

    #[test]
    fn joiners_waiting_means_a_peer_that_has_not_joined_yet() {
        assert!(!joiners_waiting(&[]));
        let settled = [
            peer(true, [10, 0, 0, 1], Some(KubeState::Ready)),
            peer(false, [10, 0, 0, 9], Some(KubeState::Skipped)),
            peer(false, [10, 0, 0, 8], None),
            peer(false, [10, 0, 0, 7], Some(KubeState::Failed)),
            peer(false, [10, 0, 0, 6], Some(KubeState::Unknown)),
        ];
        assert!(!joiners_waiting(&settled));
        for s in [
            KubeState::Pending,
            KubeState::WaitingForInit,
            KubeState::Joining,
            KubeState::Retrying,
        ] {
            let mut v = settled.to_vec();
            v.push(peer(false, [10, 0, 0, 5], Some(s)));
            assert!(joiners_waiting(&v), "{s:?}");
        }
    }

    #[test]
    fn master_ips_are_the_masters_first_addresses() {
        let peers = [
            peer(true, [10, 0, 0, 3], None),
            peer(false, [10, 0, 0, 9], None),
            peer(true, [10, 0, 0, 2], Some(KubeState::Ready)),
            peer(true, [10, 0, 0, 2], None),
        ];
        assert_eq!(
            master_ips(Some(Ipv4Addr::new(10, 0, 0, 4)), &peers),
            vec![
                Ipv4Addr::new(10, 0, 0, 2),
                Ipv4Addr::new(10, 0, 0, 3),
                Ipv4Addr::new(10, 0, 0, 4)
            ]
        );
        // A worker is not a master.
        assert_eq!(master_ips(None, &peers).len(), 2);
    }

    #[test]
    fn every_report_state_has_a_wire_state_and_a_status_suffix() {
        let r = |phase: PhaseState| KubeReport {
            phase,
            ..KubeReport::default()
        };
        let cases = [
            (r(PhaseState::Pending), KubeState::Pending, None),
            (
                r(PhaseState::Skipped {
                    reason: "built with --without-kubernetes".into(),
                }),
                KubeState::Skipped,
                Some("kube skipped: built with --without-kubernetes"),
            ),
            (
                r(PhaseState::WaitingForInit {
                    init_node: "abcdef0123".into(),
                }),
                KubeState::WaitingForInit,
                Some("kube waiting for init node abcdef"),
            ),
            (
                r(PhaseState::Initialising),
                KubeState::Initialising,
                Some("kube initialising"),
            ),
            (
                r(PhaseState::Joining),
                KubeState::Joining,
                Some("kube joining"),
            ),
            (
                r(PhaseState::Retrying {
                    failures: 3,
                    last_error: "kubeadm join: exit 1".into(),
                    next_attempt_in_s: 17,
                }),
                KubeState::Retrying,
                Some("kube retrying (3 failures): kubeadm join: exit 1"),
            ),
            (r(PhaseState::Ready), KubeState::Ready, Some("kube ready")),
            (
                KubeReport {
                    error: Some("network.vip is not set".into()),
                    ..KubeReport::default()
                },
                KubeState::Failed,
                Some("kube failed: network.vip is not set"),
            ),
        ];
        for (report, wire, suffix) in cases {
            assert_eq!(wire_state(&report), wire, "{report:?}");
            assert_eq!(status_suffix(&report).as_deref(), suffix, "{report:?}");
        }
    }

    const SECRET: &str = "kube-wiring-test-secret-0123456789";

    /// The test cluster's PKI (derived once per test: what node_pki hands
    /// over).
    fn cluster_pki() -> pki::ClusterPki {
        pki::ClusterPki::derive(&ClusterSecret::new(SECRET).unwrap(), "kt").unwrap()
    }

    fn setup(root: &std::path::Path, role: &str) -> KubeSetup {
        let cfg = cluster_config::ClusterSpec::from_toml(
            "test",
            &format!(
                "name = \"kt\"\nrole = \"{role}\"\nmasters = 3\n\
                 [network]\nvip = \"10.0.0.100/24\"\n"
            ),
        )
        .unwrap()
        .validate()
        .unwrap();
        KubeSetup {
            cfg,
            secret: ClusterSecret::new(SECRET).unwrap(),
            node_id: "11".repeat(16),
            name: format!("{role}-111111"),
            ip: Ipv4Addr::new(10, 0, 0, 21),
            apiserver_etcd_client: None,
            cluster_pki: Arc::new(cluster_pki()),
            paths: Paths::under(root),
            systemd: false,
        }
    }

    fn write_record(root: &std::path::Path, text: &str) {
        let p = root.join(IMAGE_KUBERNETES_PATH.trim_start_matches('/'));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    fn feed() -> Feed {
        Feed {
            master_ips: vec![Ipv4Addr::new(10, 0, 0, 11)],
            etcd_endpoints: vec!["https://10.0.0.11:2379".into()],
            joiners_waiting: false,
            ca_pin: None,
        }
    }

    #[tokio::test]
    async fn an_image_without_kubernetes_is_skipped_with_its_reason() {
        let dir = tempfile::tempdir().unwrap();
        write_record(
            dir.path(),
            "present = false\nreason = \"built with --without-kubernetes\"\n",
        );
        let (report, rx) = watch::channel(KubeReport::default());
        let mut kube = Kube::start(setup(dir.path(), "master"), NoEtcd, report);
        let k = rx.borrow().clone();
        assert_eq!(
            k.phase,
            PhaseState::Skipped {
                reason: "built with --without-kubernetes".into()
            }
        );
        assert_eq!(kube.wire_state(), KubeState::Skipped);
        // The join material is there all the same (masters: derived) and
        // announced; the token itself appears nowhere.
        let material = DerivedMaterial::derive(
            &ClusterSecret::new(SECRET).unwrap(),
            "kt",
            Role::Worker,
            &cluster_pki(),
            None,
        )
        .unwrap();
        let join = k.join.clone().expect("join material on a skipped master");
        assert_eq!(join.api_endpoint, "10.0.0.100:6443");
        assert_eq!(join.ca_pin, material.pin.as_str());
        assert_eq!(join.token_id, material.token.id());
        assert_eq!(join.source, JoinSource::Derived);
        assert_eq!(
            kube.announced_join(),
            Some(discovery::KubeJoinInfo {
                api_endpoint: join.api_endpoint.clone(),
                ca_pin: join.ca_pin.clone(),
            })
        );
        let json = serde_json::to_value(&*rx.borrow()).unwrap();
        assert_eq!(json["join"]["source"], "derived");
        assert!(!json.to_string().contains(&material.token.expose()));
        assert_eq!(
            status_suffix(&k).as_deref(),
            Some("kube skipped: built with --without-kubernetes")
        );
        // Nothing else happens: the gate and the feed are ignored, the VIP
        // keeps its etcd-only check, the report does not change.
        kube.update(Gate::Open, feed());
        assert_eq!(*rx.borrow(), k);
        assert_eq!(kube.vip_health(6443), crate::VipHealth::Etcd);
        // No record at all (an image from before it existed): skipped too,
        // and the reason names the file.
        let empty = tempfile::tempdir().unwrap();
        let (report, rx) = watch::channel(KubeReport::default());
        let mut kube = Kube::start(setup(empty.path(), "worker"), NoEtcd, report);
        match &rx.borrow().phase {
            PhaseState::Skipped { reason } => {
                assert!(reason.contains("kubernetes.toml"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(kube.wire_state(), KubeState::Skipped);
        // A skipped worker still takes the join material from masters.
        assert_eq!(rx.borrow().join, None);
        assert_eq!(kube.announced_join(), None);
        let mut m = peer(true, [10, 0, 0, 11], Some(KubeState::Skipped));
        m.join = Some(discovery::KubeJoinInfo {
            api_endpoint: join.api_endpoint.clone(),
            ca_pin: join.ca_pin.clone(),
        });
        kube.observe_join(&[m]);
        let got = rx.borrow().join.clone().expect("join from discovery");
        assert_eq!(got.source, JoinSource::Discovery);
        assert_eq!(got.ca_pin, join.ca_pin);
    }

    /// Join material is what workers start `kubeadm join` with: a master
    /// whose image has Kubernetes announces it only once its control
    /// plane is proven (ready), never while it initialises, waits or
    /// retries; its status shows the derived material all the same.
    #[tokio::test]
    async fn a_master_announces_no_join_material_before_its_control_plane_is_proven() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write_record(root, "present = true\nversion = \"v1.31.4\"\n");
        let secret = ClusterSecret::new(SECRET).unwrap();
        let cluster = pki::ClusterPki::derive(&secret, "kt").unwrap();
        let certs = pki::etcd_member_certs(
            &cluster.etcd_ca,
            "master-111111",
            &["10.0.0.21".parse().unwrap()],
        )
        .unwrap();
        let mut setup = setup(root, "master");
        setup.apiserver_etcd_client = Some(certs.apiserver_client);
        let (report, rx) = watch::channel(KubeReport::default());
        let kube = Kube::start(setup, NoEtcd, report);
        assert_eq!(rx.borrow().error, None);
        assert_eq!(kube.wire_state(), KubeState::Pending);
        assert_eq!(kube.announced_join(), None);
        let join = rx
            .borrow()
            .join
            .clone()
            .expect("derived material in the status");
        assert_eq!(join.source, JoinSource::Derived);
        assert_eq!(
            join.ca_pin,
            crate::CaPin::of(&cluster.kubernetes_ca).as_str()
        );
    }

    #[tokio::test]
    async fn an_invalid_record_is_a_visible_failure() {
        let dir = tempfile::tempdir().unwrap();
        write_record(dir.path(), "present = true\nversoin = \"v1.31.4\"\n");
        let (report, rx) = watch::channel(KubeReport::default());
        let kube = Kube::start(setup(dir.path(), "worker"), NoEtcd, report);
        let k = rx.borrow().clone();
        let e = k.error.clone().expect("an error");
        assert!(
            e.contains("versoin") && e.contains("kubernetes.toml"),
            "{e}"
        );
        assert_eq!(kube.wire_state(), KubeState::Failed);
    }

    /// A stand-in API server: `openssl s_server -WWW` serving `files`
    /// with a serving certificate for 127.0.0.1 from `ca`, demanding a
    /// client certificate from `ca` (as the API server does). Killed on
    /// drop.
    struct StandInApi {
        child: std::process::Child,
        port: u16,
        _dir: tempfile::TempDir,
    }

    impl Drop for StandInApi {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    fn stand_in_api(ca: &pki::Ca, files: &[(&str, &str)]) -> StandInApi {
        let dir = tempfile::tempdir().unwrap();
        let leaf = ca
            .issue(&pki::LeafRequest {
                common_name: "kube-apiserver".into(),
                dns_names: vec![],
                ips: vec!["127.0.0.1".parse().unwrap()],
                usage: pki::Usage::Server,
                organization: None,
            })
            .unwrap();
        std::fs::write(dir.path().join("cert.pem"), &leaf.cert_pem).unwrap();
        std::fs::write(dir.path().join("key.pem"), &leaf.key_pem).unwrap();
        std::fs::write(dir.path().join("ca.pem"), &ca.cert_pem).unwrap();
        for (path, body) in files {
            let p = dir.path().join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, body).unwrap();
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = std::process::Command::new("openssl")
            .current_dir(dir.path())
            .args(["s_server", "-quiet", "-WWW", "-accept"])
            .arg(format!("127.0.0.1:{port}"))
            .args(["-cert", "cert.pem", "-key", "key.pem"])
            .args(["-Verify", "1", "-verify_return_error", "-CAfile", "ca.pem"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("running openssl s_server ({e}): install the Debian package openssl")
            });
        let api = StandInApi {
            child,
            port,
            _dir: dir,
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "openssl s_server did not listen"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        api
    }

    /// A worker with Kubernetes in its (test) image: waits for a ready
    /// master, then runs `kubeadm join` once the gate opens, and is ready
    /// only once the join is proven. kubeadm is a stand-in script that
    /// records its arguments and leaves what a join leaves: the kubelet
    /// configuration and a `kubelet.conf` whose server is a stand-in API
    /// server (`openssl s_server`) that serves this worker's Node and
    /// demands a client certificate from the cluster CA; the agent's own
    /// probe reads the Node through it with the kubelet's credentials.
    #[tokio::test]
    async fn a_worker_waits_for_the_control_plane_then_joins() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let calls = root.join("calls");
        let standin = root.join("kubeadm");
        let secret = ClusterSecret::new(SECRET).unwrap();
        let ca = pki::ClusterPki::derive(&secret, "kt")
            .unwrap()
            .kubernetes_ca;
        let node = "worker-111111";
        let api = stand_in_api(
            &ca,
            &[(
                &format!("api/v1/nodes/{node}"),
                &format!(
                    "{{\"kind\":\"Node\",\"metadata\":{{\"name\":\"{node}\"}},\"spec\":{{}},\"status\":{{}}}}"
                ),
            )],
        );
        // What the kubelet's TLS bootstrap leaves: its certificate and key
        // in one file, named by kubelet.conf.
        let client = ca
            .issue(&pki::LeafRequest {
                common_name: format!("system:node:{node}"),
                dns_names: vec![],
                ips: vec![],
                usage: pki::Usage::Client,
                organization: Some("system:nodes".into()),
            })
            .unwrap();
        let prep = root.join("prep");
        std::fs::create_dir_all(&prep).unwrap();
        std::fs::write(
            prep.join("client.pem"),
            format!("{}{}", client.cert_pem, client.key_pem),
        )
        .unwrap();
        std::fs::write(
            prep.join("kubelet.conf"),
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    server: https://127.0.0.1:{}\n  name: kt\n\
                 users:\n- name: default-auth\n  user:\n    client-certificate: /var/lib/kubelet/pki/kubelet-client-current.pem\n    \
                 client-key: /var/lib/kubelet/pki/kubelet-client-current.pem\n",
                api.port
            ),
        )
        .unwrap();
        let r = root.display();
        std::fs::write(
            &standin,
            format!(
                "#!/bin/sh\necho \"$@\" >> {}\n\
                 if [ \"$1\" = join ]; then\n\
                 mkdir -p {r}/etc/kubernetes {r}/var/lib/kubelet/pki\n\
                 cp {p}/kubelet.conf {r}/etc/kubernetes/kubelet.conf\n\
                 cp {p}/client.pem {r}/var/lib/kubelet/pki/kubelet-client-current.pem\n\
                 echo 'kind: KubeletConfiguration' > {r}/var/lib/kubelet/config.yaml\n\
                 echo '\t[WARNING Hostname]: hostname \"{node}\" could not be reached' >&2\n\
                 fi\n",
                calls.display(),
                p = prep.display(),
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&standin, std::fs::Permissions::from_mode(0o755)).unwrap();
        write_record(
            root,
            &format!(
                "present = true\nversion = \"v1.31.4\"\n[[components]]\nname = \"kubeadm\"\n\
                 path = \"{}\"\nsha256 = \"00\"\n",
                standin.display()
            ),
        );
        // No pod network here: host-gw would program this host's routes.
        let worker_setup = || {
            let mut s = setup(root, "worker");
            s.cfg.kubernetes.cni = cluster_config::CniMode::Off;
            s
        };
        let (report, mut rx) = watch::channel(KubeReport::default());
        let mut kube = Kube::start(worker_setup(), NoEtcd, report);
        assert!(!kube.already_set_up());
        let own = derive_join(
            &setup(root, "worker").cfg,
            &ClusterSecret::new(SECRET).unwrap(),
            &cluster_pki(),
        )
        .unwrap();
        let announced = discovery::KubeJoinInfo {
            api_endpoint: own.api_endpoint.clone(),
            ca_pin: own.ca_pin.clone(),
        };
        let with_join = |mut p: KubePeer| {
            p.join = Some(announced.clone());
            p
        };
        let peers = [with_join(peer(
            true,
            [10, 0, 0, 11],
            Some(KubeState::Initialising),
        ))];
        kube.observe_join(&peers);
        assert!(kube.join_known());
        kube.update(
            gate(
                Role::Worker,
                AgentPhase::Discovering,
                false,
                kube.join_known(),
                &peers,
            ),
            Feed {
                ca_pin: kube.discovered_pin(),
                ..feed()
            },
        );
        assert_eq!(rx.borrow().waiting_for.as_deref(), Some(WORKER_WAITS_FOR));
        assert_eq!(kube.wire_state(), KubeState::Pending);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!calls.exists(), "kubeadm ran before the gate opened");
        let peers = [with_join(peer(
            true,
            [10, 0, 0, 11],
            Some(KubeState::Ready),
        ))];
        kube.observe_join(&peers);
        kube.update(
            gate(
                Role::Worker,
                AgentPhase::Discovering,
                false,
                kube.join_known(),
                &peers,
            ),
            Feed {
                ca_pin: kube.discovered_pin(),
                ..feed()
            },
        );
        let ready = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                if rx.borrow_and_update().phase == PhaseState::Ready {
                    break;
                }
                rx.changed().await.unwrap();
            }
        })
        .await;
        assert!(ready.is_ok(), "not ready: {:?}", *rx.borrow());
        let k = rx.borrow().clone();
        assert!(
            k.joined && k.error.is_none() && k.waiting_for.is_none(),
            "{k:?}"
        );
        assert_eq!(k.api_server, ApiHealth::NotApplicable);
        assert_eq!(
            std::fs::read_to_string(&calls)
                .unwrap()
                .lines()
                .collect::<Vec<_>>(),
            vec!["join --config /var/lib/kubeboot/kubeadm/join.yaml"],
            "one join, proven, and no other"
        );
        // Proven through the stand-in API with the kubelet's credentials.
        let proven = k.proven.clone().expect("a proof");
        assert!(
            proven.contains(&format!("https://127.0.0.1:{}", api.port))
                && proven.contains(&format!("Node {node}")),
            "{proven}"
        );
        let run = k.kubeadm.clone().expect("the proven run");
        assert!(run.succeeded);
        assert_eq!(
            run.warnings,
            vec![format!(
                "[WARNING Hostname]: hostname \"{node}\" could not be reached"
            )]
        );
        assert_eq!(k.cni.as_deref(), Some("none"));
        assert!(root.join("var/lib/kubeboot/kubeadm/proven.json").exists());
        // A restarted agent trusts the record: set up, no second join.
        let (report2, _rx2) = watch::channel(KubeReport::default());
        let again = Kube::start(worker_setup(), NoEtcd, report2);
        assert!(again.already_set_up());
        // The join configuration: the VIP endpoint, the derived token and
        // the pin, no control-plane section.
        let yaml =
            std::fs::read_to_string(root.join("var/lib/kubeboot/kubeadm/join.yaml")).unwrap();
        let material = DerivedMaterial::derive(
            &ClusterSecret::new(SECRET).unwrap(),
            "kt",
            Role::Worker,
            &cluster_pki(),
            None,
        )
        .unwrap();
        assert!(
            yaml.contains("apiServerEndpoint: 10.0.0.100:6443"),
            "{yaml}"
        );
        assert!(yaml.contains(&material.token.expose()), "{yaml}");
        assert!(yaml.contains(material.pin.as_str()), "{yaml}");
        assert!(!yaml.contains("controlPlane"), "{yaml}");
        // The report shows the material taken from discovery, kept across
        // the reconciler's reports.
        assert_eq!(
            k.join,
            Some(JoinReport {
                api_endpoint: "10.0.0.100:6443".into(),
                ca_pin: material.pin.as_str().to_owned(),
                token_id: material.token.id().to_owned(),
                source: JoinSource::Discovery,
            })
        );
        assert!(!serde_json::to_string(&k)
            .unwrap()
            .contains(&material.token.expose()));
        kube.changed().await;
        assert_eq!(kube.wire_state(), KubeState::Ready);
    }

    #[test]
    fn workers_take_checked_join_material_from_masters() {
        let own = DerivedJoin {
            api_endpoint: "10.77.0.10:6443".into(),
            ca_pin: format!("sha256:{}", "ab".repeat(32)),
            token_id: "abc123".into(),
        };
        let info = |ep: &str, pin: &str| discovery::KubeJoinInfo {
            api_endpoint: ep.into(),
            ca_pin: pin.into(),
        };
        let with = |master: bool, j: Option<discovery::KubeJoinInfo>| {
            let mut p = peer(master, [10, 77, 0, 11], Some(KubeState::Ready));
            p.join = j;
            p
        };
        let good = info(&own.api_endpoint, &own.ca_pin);
        // Masters: their own derivation, whatever peers say.
        let m = resolve_join(Role::Master, &own, &[with(true, Some(info("x", "y")))])
            .unwrap()
            .unwrap();
        assert_eq!(m.source, JoinSource::Derived);
        assert_eq!(
            (m.api_endpoint.as_str(), m.ca_pin.as_str()),
            (own.api_endpoint.as_str(), own.ca_pin.as_str())
        );
        // Workers: nothing until a master announces it; old masters and
        // workers' announcements do not count.
        assert_eq!(resolve_join(Role::Worker, &own, &[]), Ok(None));
        assert_eq!(
            resolve_join(
                Role::Worker,
                &own,
                &[with(true, None), with(false, Some(good.clone()))]
            ),
            Ok(None)
        );
        let w = resolve_join(
            Role::Worker,
            &own,
            &[
                with(true, Some(good.clone())),
                with(true, Some(good.clone())),
                with(true, None),
            ],
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            w,
            JoinReport {
                api_endpoint: "10.77.0.10:6443".into(),
                ca_pin: own.ca_pin.clone(),
                token_id: "abc123".into(),
                source: JoinSource::Discovery,
            }
        );
        // A pin that differs from the derived one is refused, naming both.
        let other_pin = format!("sha256:{}", "cd".repeat(32));
        let e = resolve_join(
            Role::Worker,
            &own,
            &[with(true, Some(info(&own.api_endpoint, &other_pin)))],
        )
        .unwrap_err();
        assert!(
            e.contains(&other_pin) && e.contains(&own.ca_pin) && e.contains("refusing to join"),
            "{e}"
        );
        // So is another endpoint, a malformed pin, and masters that disagree.
        let e = resolve_join(
            Role::Worker,
            &own,
            &[with(true, Some(info("10.77.0.99:6443", &own.ca_pin)))],
        )
        .unwrap_err();
        assert!(
            e.contains("10.77.0.99:6443") && e.contains("refusing"),
            "{e}"
        );
        let e = resolve_join(
            Role::Worker,
            &own,
            &[with(true, Some(info(&own.api_endpoint, "md5:00")))],
        )
        .unwrap_err();
        assert!(e.contains("refusing"), "{e}");
        let e = resolve_join(
            Role::Worker,
            &own,
            &[
                with(true, Some(good.clone())),
                with(true, Some(info(&own.api_endpoint, &other_pin))),
            ],
        )
        .unwrap_err();
        assert!(e.contains("masters announce different"), "{e}");
    }

    #[tokio::test]
    async fn a_worker_refuses_a_mismatching_pin_and_reports_it() {
        let dir = tempfile::tempdir().unwrap();
        let (report, rx) = watch::channel(KubeReport::default());
        let mut kube = Kube::start(setup(dir.path(), "worker"), NoEtcd, report);
        let mut m = peer(true, [10, 0, 0, 11], Some(KubeState::Ready));
        m.join = Some(discovery::KubeJoinInfo {
            api_endpoint: "10.0.0.100:6443".into(),
            ca_pin: format!("sha256:{}", "cd".repeat(32)),
        });
        kube.observe_join(std::slice::from_ref(&m));
        assert!(!kube.join_known());
        assert_eq!(kube.discovered_pin(), None);
        let k = rx.borrow().clone();
        assert_eq!(k.join, None);
        let e = k.join_error.clone().expect("a reported refusal");
        assert!(e.contains("differs from the one derived"), "{e}");
        // `agent status` prints it as `  join <join_line>`.
        assert!(rx.borrow().join_line().starts_with("refused: "));
        // The gate stays closed: no join with a pin that does not match.
        assert_ne!(
            gate(
                Role::Worker,
                AgentPhase::Discovering,
                false,
                kube.join_known(),
                &[m]
            ),
            Gate::Open
        );
    }

    #[test]
    fn kubelet_state_from_the_supervisor() {
        assert_eq!(kubelet_state(&ServiceState::Active), KubeletState::Active);
        assert_eq!(
            kubelet_state(&ServiceState::Activating),
            KubeletState::Active
        );
        assert_eq!(
            kubelet_state(&ServiceState::Inactive),
            KubeletState::Inactive
        );
        assert_eq!(
            kubelet_state(&ServiceState::Deactivating),
            KubeletState::Inactive
        );
        assert_eq!(
            kubelet_state(&ServiceState::Failed {
                reason: "exit-code".into()
            }),
            KubeletState::Failed
        );
    }
}
