//! The kube phase reconciler: one [`KubePhase::reconcile`] call looks at
//! the node, decides with [`crate::decide`], runs at most one kubeadm step
//! and reports a [`KubeStatus`]. The agent calls it on every tick of its
//! run loop once etcd is healthy; calling it again is always safe.
//!
//! ```text
//! image manifest says no Kubernetes ─────────────────────────→ Skipped
//! files complete & certificate valid ────────────────────────→ Ready
//!     (init node: mark init-done if missing, apply the CNI once;
//!      any master: recreate the token while joiners wait)
//! inside the backoff after a failure ────────────────────────→ Retrying
//! master: elect (etcd txn) → won, no cluster  → [reset] place PKI, init → Ready
//!                            (holding the init-alive lease from the first attempt,
//!                             through failures and backoff, until init-done)
//!                          → lost, no cluster → WaitingForInit
//!                            (no init-alive for the grace → take over → init)
//!                          → cluster exists   → [reset] place PKI, join --config (controlPlane) → Ready
//! worker:                                       [reset] join --config → Ready
//!   (before any init/join: import the image's OCI archive of control-plane
//!    images with ctr, once per agent process, when the image has one)
//! a failed step ─────────────────────────────────────────────→ Retrying (backoff)
//! ```
//!
//! `[reset]` is `kubeadm reset --force`, run only when an earlier attempt
//! left some but not all of kubeadm's files (its preflight checks refuse
//! such a node); it never runs on a complete node. An attempt that failed
//! late (a join in `kubelet-start` or `control-plane-join`, an init after
//! `wait-control-plane`) is instead continued from its failed phase with
//! `--skip-phases`, at most [`MAX_RESUMES`] times in a row
//! ([`decide::resume_skip_phases`]); it is proven like any other attempt.

use std::future::Future;
use std::path::PathBuf;
use std::time::SystemTime;

use cluster_config::{CniMode, Role};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::decide::{self, Backoff, InitView, PhaseState, RetryState, Setup, Step};
use crate::election::{self, ElectionError};
use crate::image::{self, ImageError, ImageVerdict, IMAGE_KUBERNETES_PATH};
use crate::outcome::KubeadmRun;
use crate::paths::{standard, Paths, ADMIN_CONF};
use crate::pki_files::SharedPki;
use crate::proof::{self, NodeIdentity, ProofFact, ProofRecord, ProvenStep};
use crate::render::{KubeadmInputs, RenderError, CRI_SOCKET};
use crate::runner::{FileSpec, Invocation, KubeadmRunner, Program, RunError};
use crate::token::{self, BootstrapToken};

/// Errors that stop the phase until the configuration changes (everything
/// transient — etcd, kubeadm — is retried with backoff instead).
#[derive(Debug, Error)]
pub enum KubeError {
    /// The image's Kubernetes manifest is unreadable or invalid.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// The inputs cannot make a kubeadm configuration.
    #[error(transparent)]
    Render(#[from] RenderError),
    /// A master was given no etcd client (the election needs one).
    #[error("the kube phase on a master needs an etcd client for the init election")]
    NoEtcd,
    /// A master was given no shared CA material.
    #[error("the kube phase on a master needs the shared CA material (pki crate)")]
    NoSharedPki,
}

/// The kubelet service's state (from systemd).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KubeletState {
    /// Not known (no probe).
    Unknown,
    /// Running.
    Active,
    /// Not running.
    Inactive,
    /// Failed.
    Failed,
}

/// The local API server's health.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "health", rename_all = "kebab-case")]
pub enum ApiHealth {
    /// Not known (no probe).
    Unknown,
    /// A worker runs no API server.
    NotApplicable,
    /// `/readyz` answered `ok`.
    Ready,
    /// It did not.
    NotReady {
        /// Why.
        reason: String,
    },
}

/// Reads the kubelet's and the API server's state (the agent implements it
/// with systemd over D-Bus and the Kubernetes API), and proves a kubeadm
/// step ([`crate::proof`]).
pub trait Probe: Send + Sync {
    /// The kubelet unit's state.
    fn kubelet(&self) -> impl Future<Output = KubeletState> + Send;
    /// The local API server's `/readyz`.
    fn api_server(&self) -> impl Future<Output = ApiHealth> + Send;
    /// Whether the kubeadm init/join that just exited 0 took effect on
    /// node `node_name`: masters — the node's own API server answers
    /// `/readyz` (TLS verified against the derived CA); workers — the API
    /// shows the Node object, read with the kubelet's credentials.
    /// `Ok(what was checked)` or `Err(why not)`.
    fn prove(
        &self,
        role: Role,
        node_name: &str,
    ) -> impl Future<Output = Result<String, String>> + Send;
}

/// A probe that knows nothing and proves nothing (before the agent wires
/// one): a node with it never becomes ready.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProbe;

impl Probe for NoProbe {
    async fn kubelet(&self) -> KubeletState {
        KubeletState::Unknown
    }
    async fn api_server(&self) -> ApiHealth {
        ApiHealth::Unknown
    }
    async fn prove(&self, _role: Role, _node_name: &str) -> Result<String, String> {
        Err("no probe: nothing can prove the step".to_owned())
    }
}

/// A probe whose answers a test sets (and changes while the phase runs):
/// a stand-in for the API server behind a stand-in kubeadm.
#[derive(Debug, Clone)]
pub struct ScriptedProbe {
    proof: std::sync::Arc<std::sync::Mutex<Result<String, String>>>,
    proofs_asked: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl ScriptedProbe {
    /// A probe that proves every step (`"scripted proof"`).
    pub fn proving() -> Self {
        Self {
            proof: std::sync::Arc::new(std::sync::Mutex::new(Ok("scripted proof".to_owned()))),
            proofs_asked: Default::default(),
        }
    }

    /// From now on, proofs fail with `why` (`None`: they succeed again).
    pub fn fail_proofs(&self, why: Option<&str>) {
        if let Ok(mut p) = self.proof.lock() {
            *p = match why {
                Some(w) => Err(w.to_owned()),
                None => Ok("scripted proof".to_owned()),
            };
        }
    }

    /// How many times a proof was asked for.
    pub fn proofs_asked(&self) -> usize {
        self.proofs_asked.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Probe for ScriptedProbe {
    async fn kubelet(&self) -> KubeletState {
        KubeletState::Unknown
    }
    async fn api_server(&self) -> ApiHealth {
        ApiHealth::Unknown
    }
    async fn prove(&self, _role: Role, _node_name: &str) -> Result<String, String> {
        self.proofs_asked
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.proof
            .lock()
            .map(|p| p.clone())
            .unwrap_or_else(|_| Err("poisoned".to_owned()))
    }
}

/// The kube phase as `agent status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KubeStatus {
    /// Where the phase is.
    pub phase: PhaseState,
    /// The elected init node's id (masters; `None` before the election).
    pub init_node: Option<String>,
    /// This node is the init node.
    pub is_init_node: bool,
    /// kubeadm init/join completed on this node.
    pub joined: bool,
    /// The kubelet.
    pub kubelet: KubeletState,
    /// The local API server.
    pub api_server: ApiHealth,
    /// Whether the image's OCI archive of control-plane images was
    /// imported into containerd (`ctr -n k8s.io images import`) on this
    /// boot or an earlier one ([`IMAGES_IMPORTED_MARKER`]); absent when the
    /// image carries no archive (or the phase is skipped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub images_imported: Option<bool>,
    /// The last kubeadm init/join: on a ready node the proven one (with
    /// its warnings, also after a restart); otherwise this agent's last
    /// attempt (the failed phase, the error, the last lines, warnings).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubeadm: Option<KubeadmRun>,
    /// What proved the setup (ready nodes; [`crate::proof`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proven: Option<String>,
}

/// The file (under [`config_path`]'s directory, on the data disk) written
/// after a successful import of the image's archive of control-plane
/// images: `<kubernetes version> <archive path>`, so an image with another
/// version does not count as imported.
pub const IMAGES_IMPORTED_MARKER: &str = "images-imported";

/// What the agent knows at each reconcile.
#[derive(Debug, Clone)]
pub struct KubeContext {
    /// The time of this call.
    pub now: SystemTime,
    /// This node's role.
    pub role: Role,
    /// This node's stable id (the election value).
    pub node_id: String,
    /// Everything the kubeadm configuration needs.
    pub inputs: KubeadmInputs,
    /// The shared CA material (masters).
    pub shared_pki: Option<SharedPki>,
    /// Some node is waiting to join (from discovery): keep the token alive.
    pub joiners_waiting: bool,
}

/// The file name of the CNI manifest copy with the cluster's pod CIDR
/// (under [`config_path`]'s directory), when the shipped one differs.
pub const CNI_MANIFEST_COPY: &str = "cni.yaml";

pub use crate::paths::config_path;

/// The kube phase reconciler.
pub struct KubePhase<R: KubeadmRunner, P: Probe = NoProbe> {
    paths: Paths,
    runner: R,
    probe: P,
    etcd: Option<etcd_client::Client>,
    backoff: Backoff,
    retry: RetryState,
    cni_applied: bool,
    images_imported: bool,
    image_manifest: PathBuf,
    state: tokio::sync::watch::Sender<PhaseState>,
    last_token_check: Option<SystemTime>,
    alive_absent_since: Option<SystemTime>,
    takeover_grace: std::time::Duration,
    alive: Option<AliveHold>,
    alive_ttl_s: i64,
    /// The holder of the join lock last seen while waiting for it.
    join_waiting_for: Option<String>,
    last_init: Option<(String, bool)>,
    last_run: Option<KubeadmRun>,
    /// The last attempt failed in a phase the next one may go on from.
    resume: Option<Resume>,
    proof_timeout: std::time::Duration,
    proof_poll: std::time::Duration,
}

/// An attempt that failed late, to be continued from its failed phase
/// instead of reset ([`decide::resume_skip_phases`]). Kept in memory only:
/// after an agent restart the leftovers are reset as before.
#[derive(Debug, Clone)]
struct Resume {
    step: Step,
    failed_phase: String,
    skip: Vec<&'static str>,
    /// Consecutive resumed attempts, this one included.
    count: u32,
}

/// Consecutive attempts that go on from a failed phase before the next
/// one resets and starts over (a phase that keeps failing may be failing
/// for a reason a reset clears).
pub const MAX_RESUMES: u32 = 2;

/// The init node's hold on the liveness key: its lease and the task that
/// keeps the lease alive. Taken at the first init attempt, kept across
/// failed attempts and the backoff between them, given back once
/// init-done is recorded. Dropping it (the reconciler, i.e. the agent,
/// goes away) stops the keep-alive, so the lease expires after its TTL and
/// a waiting master may take over after its grace.
struct AliveHold {
    lease: i64,
    keeper: tokio::task::JoinHandle<()>,
}

impl Drop for AliveHold {
    fn drop(&mut self) {
        self.keeper.abort();
    }
}

/// Lifetime of the init node's liveness lease (kept alive every third of it).
pub const INIT_ALIVE_TTL_S: i64 = 15;
/// Lifetime of the control-plane join lock's lease (kept alive every third
/// of it while the join runs; a master that dies mid-join frees it after
/// this long).
pub const JOIN_LOCK_TTL_S: i64 = 15;
/// How long a waiting master must see no liveness from the init node
/// before it takes over (well above the lease's TTL).
pub const DEFAULT_TAKEOVER_GRACE: std::time::Duration = std::time::Duration::from_secs(60);

/// How often a master looks at the bootstrap token while nodes wait to
/// join (each look runs `kubeadm token list`).
pub const TOKEN_CHECK_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

/// How long the phase keeps asking for the proof after kubeadm exited 0
/// (kubeadm itself has just waited for the same API, so the proof is
/// normally immediate; a worker's Node may take a moment to be readable).
pub const DEFAULT_PROOF_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(180);
/// Time between two proof attempts.
pub const PROOF_POLL: std::time::Duration = std::time::Duration::from_secs(2);

/// containerd's socket path (for `ctr --address`).
pub const CONTAINERD_SOCKET: &str = "/run/containerd/containerd.sock";

impl<R: KubeadmRunner, P: Probe> KubePhase<R, P> {
    /// A reconciler over `paths`; masters need `etcd`.
    pub fn new(paths: Paths, runner: R, probe: P, etcd: Option<etcd_client::Client>) -> Self {
        let image_manifest = paths.host(IMAGE_KUBERNETES_PATH);
        Self {
            paths,
            runner,
            probe,
            etcd,
            backoff: Backoff::default(),
            retry: RetryState::default(),
            cni_applied: false,
            images_imported: false,
            image_manifest,
            state: tokio::sync::watch::Sender::new(PhaseState::Pending),
            last_token_check: None,
            alive_absent_since: None,
            takeover_grace: DEFAULT_TAKEOVER_GRACE,
            alive: None,
            alive_ttl_s: INIT_ALIVE_TTL_S,
            join_waiting_for: None,
            last_init: None,
            last_run: None,
            resume: None,
            proof_timeout: DEFAULT_PROOF_TIMEOUT,
            proof_poll: PROOF_POLL,
        }
    }

    /// Replaces how long (and how often) the proof is asked for after
    /// kubeadm exited 0 (tests).
    pub fn with_proof_timeout(
        mut self,
        timeout: std::time::Duration,
        poll: std::time::Duration,
    ) -> Self {
        self.proof_timeout = timeout;
        self.proof_poll = poll;
        self
    }

    /// The phase state as it changes, also while kubeadm runs (a call to
    /// [`KubePhase::reconcile`] can take minutes): `Initialising` or
    /// `Joining` during the step, then its outcome. For `agent status` and
    /// for [`crate::vip_health`].
    pub fn watch(&self) -> tokio::sync::watch::Receiver<PhaseState> {
        self.state.subscribe()
    }

    /// Replaces the takeover grace (tests).
    pub fn with_takeover_grace(mut self, grace: std::time::Duration) -> Self {
        self.takeover_grace = grace;
        self
    }

    /// Replaces the liveness lease's TTL (seconds, at least 1; tests).
    pub fn with_alive_ttl(mut self, ttl_s: i64) -> Self {
        self.alive_ttl_s = ttl_s.max(1);
        self
    }

    /// Whether this node holds the init node's liveness key (the init
    /// winner, from its first attempt until init-done is recorded).
    pub fn holds_init_alive(&self) -> bool {
        self.alive.is_some()
    }

    /// Replaces the backoff schedule.
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// The failures so far.
    pub fn retry_state(&self) -> &RetryState {
        &self.retry
    }

    /// One reconcile step (see the module docs).
    pub async fn reconcile(&mut self, ctx: &KubeContext) -> Result<KubeStatus, KubeError> {
        let mut result = self.reconcile_once(ctx).await;
        if let Ok(status) = &mut result {
            // The election's outcome stays in the status while the phase
            // waits out a backoff (when it does not look at etcd), and on a
            // ready node whose read of it failed (a slow etcd: the status
            // flapped between "init node" and not).
            match &status.init_node {
                Some(w) => self.last_init = Some((w.clone(), status.is_init_node)),
                None if matches!(
                    status.phase,
                    PhaseState::Retrying { .. } | PhaseState::Ready
                ) =>
                {
                    if let Some((w, me)) = &self.last_init {
                        status.init_node = Some(w.clone());
                        status.is_init_node = *me;
                    }
                }
                None => {}
            }
            if status.kubeadm.is_none() {
                status.kubeadm = self.last_run.clone();
            }
            self.state.send_replace(status.phase.clone());
        }
        result
    }

    async fn reconcile_once(&mut self, ctx: &KubeContext) -> Result<KubeStatus, KubeError> {
        let mut status = KubeStatus {
            phase: PhaseState::Pending,
            init_node: None,
            is_init_node: false,
            joined: false,
            kubelet: KubeletState::Unknown,
            api_server: if ctx.role == Role::Worker {
                ApiHealth::NotApplicable
            } else {
                ApiHealth::Unknown
            },
            images_imported: None,
            kubeadm: None,
            proven: None,
        };
        let (version, cni_manifest, cni_pod_cidr, images_archive) =
            match image::read_verdict(&self.image_manifest)? {
                ImageVerdict::Skip { reason } => {
                    status.phase = PhaseState::Skipped { reason };
                    return Ok(status);
                }
                ImageVerdict::Present {
                    version,
                    cni_manifest,
                    cni_pod_cidr,
                    images_archive,
                } => (version, cni_manifest, cni_pod_cidr, images_archive),
            };
        status.images_imported = images_archive
            .as_deref()
            .map(|a| self.images_imported_marked(&version, a));
        let mut inputs = ctx.inputs.clone();
        // The kubeadm in the image decides the version (and so the
        // configuration API, v1beta3 or v1beta4).
        inputs.kubernetes_version = Some(version.clone());
        if images_archive.is_some() {
            // The images come from the archive: never from a registry.
            inputs.image_pull_policy = Some("Never".to_owned());
        }
        if ctx.role == Role::Master {
            if self.etcd.is_none() {
                return Err(KubeError::NoEtcd);
            }
            if ctx.shared_pki.is_none() {
                return Err(KubeError::NoSharedPki);
            }
        }

        let facts = crate::facts::gather(&self.paths, ctx.role);
        let setup = decide::judge_setup(ctx.role, &facts, ctx.now, &identity(ctx));

        if setup == Setup::Complete {
            status.joined = true;
            status.phase = PhaseState::Ready;
            if let ProofFact::Recorded(r) = &facts.proof {
                status.proven = Some(r.proof.clone());
                status.kubeadm = Some(KubeadmRun {
                    command: r.command.clone(),
                    succeeded: true,
                    exit_code: Some(0),
                    failed_phase: None,
                    error: None,
                    warnings: r.warnings.clone(),
                    output_tail: Vec::new(),
                });
            }
            self.retry = RetryState::default();
            if ctx.role == Role::Master {
                // The election (idempotent) for the status and the
                // init-done marker; etcd trouble does not make a set-up
                // node less ready.
                match self.init_view(&ctx.node_id).await {
                    Ok(v) => {
                        status.init_node = Some(v.winner.clone());
                        status.is_init_node = v.is_self;
                        self.maintain(ctx, &v, cni_manifest.as_deref(), cni_pod_cidr.as_deref())
                            .await;
                    }
                    Err(e) => tracing::warn!("kube phase: reading the init election: {e}"),
                }
            }
            return Ok(self.probed(status).await);
        }

        // Not set up: nothing (not even the election) before the backoff
        // after a failure has passed, so an unreachable etcd is retried on
        // the same schedule as a failing kubeadm.
        // The init node keeps its liveness key through the backoff too.
        self.refresh_alive(ctx).await;
        if !self.retry.may_attempt(ctx.now) {
            status.phase = self.retrying_state(ctx.now);
            return Ok(status);
        }
        let mut view = if ctx.role == Role::Master {
            match self.init_view(&ctx.node_id).await {
                Ok(v) => Some(v),
                Err(e) => return Ok(self.fail(ctx, status, format!("init election: {e}"))),
            }
        } else {
            None
        };
        if let Some(v) = view.as_mut() {
            if !v.is_self && !v.done {
                match self.check_takeover(ctx).await {
                    Ok(true) => {
                        v.is_self = true;
                        v.winner = ctx.node_id.clone();
                    }
                    Ok(false) => {}
                    Err(e) => return Ok(self.fail(ctx, status, format!("init takeover: {e}"))),
                }
            }
        }
        if let Some(v) = &view {
            status.init_node = Some(v.winner.clone());
            status.is_init_node = v.is_self;
        }

        let step = decide::next_step(ctx.role, &setup, view.as_ref());
        match step {
            Step::Nothing => {
                status.joined = true;
                status.phase = PhaseState::Ready;
                Ok(status)
            }
            Step::WaitForInit { init_node } => {
                // The images this master's join will need, imported while
                // it waits: under TCG the import took 70-90 s of both
                // vCPUs, and done at join time it landed on the busy
                // minutes when the new control plane's API answers slowly.
                // A failure here is only logged: the join imports again.
                if let Err(e) = self
                    .import_images(&version, images_archive.as_deref())
                    .await
                {
                    let why = match e {
                        StepError::Transient(m) => m,
                        StepError::Config(e) => e.to_string(),
                    };
                    tracing::warn!("kube phase: while waiting for init: {why}");
                }
                if images_archive.is_some() && self.images_imported {
                    status.images_imported = Some(true);
                }
                status.phase = PhaseState::WaitingForInit { init_node };
                Ok(status)
            }
            Step::Init | Step::JoinControlPlane | Step::JoinWorker => {
                self.state.send_replace(if step == Step::Init {
                    PhaseState::Initialising
                } else {
                    PhaseState::Joining
                });
                // The init node holds its liveness key from its first
                // attempt until init-done is recorded (not only during
                // the step: a failed attempt keeps it through the backoff).
                if step == Step::Init && self.alive.is_none() {
                    match self.announce_alive(ctx).await {
                        Ok(Some(hold)) => self.alive = Some(hold),
                        Ok(None) => {
                            // Replaced by a taker meanwhile: never init.
                            status.init_node = None;
                            status.is_init_node = false;
                            status.phase = PhaseState::WaitingForInit {
                                init_node: String::new(),
                            };
                            return Ok(status);
                        }
                        Err(e) => return Ok(self.fail(ctx, status, format!("init liveness: {e}"))),
                    }
                }
                // Control-plane joins one at a time (see `election`).
                let join_lock = if step == Step::JoinControlPlane {
                    match self.take_join_lock(ctx).await {
                        Ok(Some(lease)) => Some(lease),
                        Ok(None) => {
                            status.phase = PhaseState::Joining;
                            return Ok(status);
                        }
                        Err(e) => return Ok(self.fail(ctx, status, format!("join lock: {e}"))),
                    }
                } else {
                    None
                };
                let result = match self
                    .import_images(&version, images_archive.as_deref())
                    .await
                {
                    Ok(()) => self.run_step(&step, &setup, ctx, &inputs).await,
                    Err(e) => Err(e),
                };
                if let Some(hold) = join_lock {
                    hold.keeper.abort();
                    if let Some(client) = self.etcd.as_mut() {
                        election::release_join_lock(client, hold.lease).await;
                    }
                }
                if images_archive.is_some() && self.images_imported {
                    status.images_imported = Some(true);
                }
                match result {
                    Ok(record) => {
                        self.retry = RetryState::default();
                        status.joined = true;
                        status.phase = PhaseState::Ready;
                        status.proven = Some(record.proof);
                        if step == Step::Init {
                            if let Some(v) = &view {
                                self.maintain(
                                    ctx,
                                    v,
                                    cni_manifest.as_deref(),
                                    cni_pod_cidr.as_deref(),
                                )
                                .await;
                            }
                        }
                        Ok(self.probed(status).await)
                    }
                    Err(StepError::Config(e)) => Err(e),
                    Err(StepError::Transient(msg)) => Ok(self.fail(ctx, status, msg)),
                }
            }
        }
    }

    async fn probed(&self, mut status: KubeStatus) -> KubeStatus {
        status.kubelet = self.probe.kubelet().await;
        if status.api_server != ApiHealth::NotApplicable {
            status.api_server = self.probe.api_server().await;
        }
        status
    }

    fn retrying_state(&self, now: SystemTime) -> PhaseState {
        PhaseState::Retrying {
            failures: self.retry.failures,
            last_error: self.retry.last_error.clone().unwrap_or_default(),
            next_attempt_in_s: self
                .retry
                .next_attempt
                .and_then(|t| t.duration_since(now).ok())
                .map(|d| d.as_secs())
                .unwrap_or(0),
        }
    }

    fn fail(&mut self, ctx: &KubeContext, mut status: KubeStatus, message: String) -> KubeStatus {
        self.retry = self.retry.failed(&self.backoff, ctx.now, message.clone());
        tracing::warn!(
            "kube phase: {message} (failure {}, retrying in {:?})",
            self.retry.failures,
            self.backoff.delay(self.retry.failures)
        );
        status.phase = self.retrying_state(ctx.now);
        status
    }

    /// A waiting master: takes over from an init node that has shown no
    /// liveness for the grace period. Returns whether this node is now the
    /// init node.
    async fn check_takeover(&mut self, ctx: &KubeContext) -> Result<bool, ElectionError> {
        let grace = self.takeover_grace;
        let Some(client) = self.etcd.as_mut() else {
            return Ok(false);
        };
        if election::init_alive(client).await? {
            self.alive_absent_since = None;
            return Ok(false);
        }
        let since = *self.alive_absent_since.get_or_insert(ctx.now);
        if !decide::takeover_due(ctx.now, Some(since), grace) {
            return Ok(false);
        }
        let Some(seen) = election::read_init(client).await? else {
            return Ok(false);
        };
        if seen.winner == ctx.node_id {
            return Ok(true);
        }
        let won = election::take_over(client, &ctx.node_id, &seen).await?;
        if won {
            tracing::warn!(
                "kube phase: init node {} showed no liveness for {grace:?}: this node takes over",
                seen.winner
            );
        }
        self.alive_absent_since = None;
        Ok(won)
    }

    /// Puts the liveness key on a new lease (only while the election key
    /// names this node) and starts keeping the lease alive.
    async fn announce_alive(
        &mut self,
        ctx: &KubeContext,
    ) -> Result<Option<AliveHold>, ElectionError> {
        let ttl = self.alive_ttl_s;
        let Some(client) = self.etcd.as_mut() else {
            return Ok(None);
        };
        let Some(lease) = election::announce_alive(client, &ctx.node_id, ttl).await? else {
            return Ok(None);
        };
        let period = std::time::Duration::from_millis((ttl as u64 * 1000 / 3).max(100));
        let keeper = tokio::spawn(election::keep_alive(client.clone(), lease, period));
        Ok(Some(AliveHold { lease, keeper }))
    }

    /// Takes the control-plane join lock on a lease kept alive for the
    /// join (the same hold as the init liveness key). `None` while
    /// another master holds it: logged when the holder changes, the
    /// phase stays `joining` and asks again on the next turn.
    async fn take_join_lock(
        &mut self,
        ctx: &KubeContext,
    ) -> Result<Option<AliveHold>, ElectionError> {
        let ttl = JOIN_LOCK_TTL_S;
        let Some(client) = self.etcd.as_mut() else {
            return Ok(None);
        };
        match election::take_join_lock(client, &ctx.node_id, ttl).await? {
            election::JoinLock::Held(lease) => {
                self.join_waiting_for = None;
                let period = std::time::Duration::from_millis((ttl as u64 * 1000 / 3).max(100));
                let keeper = tokio::spawn(election::keep_alive(client.clone(), lease, period));
                Ok(Some(AliveHold { lease, keeper }))
            }
            election::JoinLock::Busy { holder } => {
                if self.join_waiting_for.as_deref() != Some(holder.as_str()) {
                    tracing::info!(
                        "kube phase: waiting for the control-plane join of {holder} \
                         (control-plane joins run one at a time)"
                    );
                    self.join_waiting_for = Some(holder);
                }
                Ok(None)
            }
        }
    }

    /// The init node whose lease is gone (its keep-alive task ended: an
    /// etcd outage longer than the TTL) announces again — which succeeds
    /// only while the election key still names it; if a taker replaced
    /// it meanwhile, it lets go and will wait for the new init node.
    async fn refresh_alive(&mut self, ctx: &KubeContext) {
        if !self.alive.as_ref().is_some_and(|h| h.keeper.is_finished()) {
            return;
        }
        match self.announce_alive(ctx).await {
            Ok(Some(hold)) => {
                tracing::warn!("kube phase: the init liveness lease had expired: announced again");
                self.alive = Some(hold);
            }
            Ok(None) => {
                tracing::warn!(
                    "kube phase: the init liveness lease expired and another master took over the init"
                );
                self.alive = None;
            }
            Err(e) => tracing::warn!("kube phase: renewing the init liveness lease: {e}"),
        }
    }

    /// Gives the liveness key back (init-done is recorded).
    async fn release_alive(&mut self) {
        if let Some(hold) = self.alive.take() {
            hold.keeper.abort();
            if let Some(client) = self.etcd.as_mut() {
                election::release_alive(client, hold.lease).await;
            }
        }
    }

    async fn init_view(&mut self, node_id: &str) -> Result<InitView, ElectionError> {
        // Checked by the caller: masters always have a client.
        let Some(client) = self.etcd.as_mut() else {
            return Err(ElectionError::NoValue {
                key: election::INIT_NODE_KEY,
            });
        };
        let elected = election::elect_init_node(client, node_id).await?;
        let done = election::init_done(client).await?.is_some();
        Ok(InitView {
            winner: elected.winner,
            is_self: elected.won,
            done,
        })
    }

    /// Housekeeping of a set-up master: the init-done marker, the CNI and
    /// the token. Failures are logged and tried again on the next call.
    async fn maintain(
        &mut self,
        ctx: &KubeContext,
        view: &InitView,
        cni_manifest: Option<&str>,
        cni_pod_cidr: Option<&str>,
    ) {
        if view.is_self {
            let done = view.done
                || match self.etcd.as_mut() {
                    Some(client) => match election::mark_init_done(client, &ctx.node_id).await {
                        Ok(()) => true,
                        Err(e) => {
                            tracing::warn!("kube phase: recording init-done: {e}");
                            false
                        }
                    },
                    None => false,
                };
            // Only once init-done is recorded: without it a taker could
            // start a second init after the grace.
            if done {
                self.release_alive().await;
            }
        }
        // The manifest only in `auto` mode (host-gw is set up by the
        // agent itself, `none` leaves the CNI to the operator).
        let cni_manifest = cni_manifest.filter(|_| ctx.inputs.cni == CniMode::Auto);
        if view.is_self && !self.cni_applied {
            match cni_manifest {
                None => self.cni_applied = true,
                Some(manifest) => {
                    // The manifest as shipped, or a copy whose pod CIDR is
                    // the cluster's (kubeadm's podSubnet).
                    let pod_subnet = ctx.inputs.pod_subnet.to_string();
                    let (path, files) = match cni_pod_cidr.filter(|c| *c != pod_subnet) {
                        None => (manifest.to_owned(), vec![]),
                        Some(_) => {
                            let host = self.paths.host(manifest);
                            match std::fs::read_to_string(&host) {
                                Ok(text) => match image::cni_manifest_for_cluster(
                                    &text,
                                    cni_pod_cidr,
                                    &pod_subnet,
                                ) {
                                    Some(copy) => (
                                        config_path(CNI_MANIFEST_COPY),
                                        vec![FileSpec {
                                            path: self.paths.config_file(CNI_MANIFEST_COPY),
                                            contents: copy,
                                            mode: 0o644,
                                        }],
                                    ),
                                    None => (manifest.to_owned(), vec![]),
                                },
                                Err(e) => {
                                    tracing::warn!(
                                        "kube phase: reading the CNI manifest {}: {e}",
                                        host.display()
                                    );
                                    return;
                                }
                            }
                        }
                    };
                    let inv = Invocation {
                        program: Program::Kubectl,
                        args: vec![
                            "--kubeconfig".into(),
                            standard(ADMIN_CONF),
                            "apply".into(),
                            "-f".into(),
                            path,
                        ],
                        files,
                        redact: vec![],
                    };
                    match self.runner.run(&inv).await {
                        Ok(_) => self.cni_applied = true,
                        Err(e) => tracing::warn!("kube phase: applying the CNI: {e}"),
                    }
                }
            }
        }
        let due = match self.last_token_check {
            None => true,
            Some(t) => ctx
                .now
                .duration_since(t)
                .map_or(true, |d| d >= TOKEN_CHECK_INTERVAL),
        };
        if ctx.joiners_waiting && due {
            self.last_token_check = Some(ctx.now);
            if let Err(e) = self.maintain_token(ctx, &ctx.inputs.token).await {
                tracing::warn!("kube phase: bootstrap token: {e}");
            }
        }
    }

    async fn maintain_token(
        &self,
        ctx: &KubeContext,
        token: &BootstrapToken,
    ) -> Result<(), String> {
        let admin = standard(ADMIN_CONF);
        let redact = vec![token.expose()];
        let list = Invocation {
            program: Program::Kubeadm,
            args: vec![
                "token".into(),
                "list".into(),
                "-o".into(),
                "json".into(),
                "--kubeconfig".into(),
                admin.clone(),
            ],
            files: vec![],
            redact: redact.clone(),
        };
        // The listing is parsed unredacted in memory (it is matched by id).
        let out = self.runner.run(&list).await.map_err(|e| e.to_string())?;
        let listed = token::listed_expiry(&out.stdout, token).map_err(|e| e.to_string())?;
        let action =
            token::decide_token(ctx.now, listed, ctx.joiners_waiting, token::MIN_REMAINING);
        for args in token::token_commands(action, token, ctx.inputs.token_ttl, &admin) {
            let inv = Invocation {
                program: Program::Kubeadm,
                args,
                files: vec![],
                redact: redact.clone(),
            };
            match self.runner.run(&inv).await {
                Ok(_) => {}
                // Another master recreated it first.
                Err(RunError::Failed { stderr_tail, .. })
                    if stderr_tail.contains("already exists") => {}
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok(())
    }

    /// Imports the image's OCI archive of control-plane images into
    /// containerd's `k8s.io` namespace (the kubelet's), once per agent
    /// process and only before a kubeadm step: importing is idempotent but
    /// slow, and a set-up node already has the images.
    async fn import_images(
        &mut self,
        version: &str,
        archive: Option<&str>,
    ) -> Result<(), StepError> {
        let Some(archive) = archive else {
            return Ok(());
        };
        if self.images_imported {
            return Ok(());
        }
        let inv = Invocation {
            program: Program::Ctr,
            args: vec![
                "--address".into(),
                CONTAINERD_SOCKET.into(),
                "--namespace".into(),
                "k8s.io".into(),
                "images".into(),
                "import".into(),
                archive.to_owned(),
            ],
            files: vec![],
            redact: vec![],
        };
        self.runner.run(&inv).await.map_err(|e| {
            StepError::Transient(format!("importing the control-plane images: {e}"))
        })?;
        self.images_imported = true;
        // Only the status reads the marker: a failure to write it is
        // logged, the step goes on.
        let marker = self.paths.config_file(IMAGES_IMPORTED_MARKER);
        if let Err(e) = write_atomic(&marker, &images_marker_text(version, archive)) {
            tracing::warn!(
                "kube phase: recording the image import in {}: {e}",
                marker.display()
            );
        }
        Ok(())
    }

    /// Whether the import of `archive` (of Kubernetes `version`) succeeded
    /// in this process or, per the marker, on an earlier boot.
    fn images_imported_marked(&self, version: &str, archive: &str) -> bool {
        self.images_imported
            || std::fs::read_to_string(self.paths.config_file(IMAGES_IMPORTED_MARKER))
                .is_ok_and(|t| t == images_marker_text(version, archive))
    }

    async fn run_step(
        &mut self,
        step: &Step,
        setup: &Setup,
        ctx: &KubeContext,
        inputs: &KubeadmInputs,
    ) -> Result<ProofRecord, StepError> {
        let (file, text, mut args, proven_step, what) = match step {
            Step::Init => (
                "init.yaml",
                inputs
                    .render_init()
                    .map_err(|e| StepError::Config(e.into()))?,
                vec!["init".to_owned()],
                ProvenStep::Init,
                "kubeadm init",
            ),
            Step::JoinControlPlane => (
                "join.yaml",
                inputs
                    .render_join_control_plane()
                    .map_err(|e| StepError::Config(e.into()))?,
                vec!["join".to_owned()],
                ProvenStep::JoinControlPlane,
                "kubeadm join (control plane)",
            ),
            _ => (
                "join.yaml",
                inputs
                    .render_join_worker()
                    .map_err(|e| StepError::Config(e.into()))?,
                vec!["join".to_owned()],
                ProvenStep::JoinWorker,
                "kubeadm join",
            ),
        };
        args.push("--config".to_owned());
        args.push(config_path(file));
        if *step == Step::Init {
            // Keep the token out of kubeadm's output (and so out of logs).
            args.push("--skip-token-print".to_owned());
        }
        let redact = vec![inputs.token.expose()];

        // An old proof never outlives a new attempt: whatever happens
        // below, only a proven success writes one again.
        proof::remove(&self.paths)
            .map_err(|e| StepError::Transient(format!("removing the old proof record: {e}")))?;
        // Go on from the phase the last attempt of this same step failed
        // in, over the files it left (only those: a node that is not
        // partial has nothing to go on from).
        let resuming = self
            .resume
            .take()
            .filter(|r| r.step == *step && matches!(setup, Setup::Partial { .. }));
        if let Some(r) = &resuming {
            tracing::warn!(
                "kube phase: {what} failed in phase {} last time; going on from it \
                 (attempt {} of {MAX_RESUMES} before a reset), skipping the phases \
                 that completed: {}",
                r.failed_phase,
                r.count,
                r.skip.join(",")
            );
            args.push(format!("--skip-phases={}", r.skip.join(",")));
        } else if let Setup::Partial { reason } = setup {
            tracing::warn!("kube phase: leftovers of an earlier attempt ({reason}): kubeadm reset");
            let reset = Invocation {
                program: Program::Kubeadm,
                args: vec![
                    "reset".into(),
                    "--force".into(),
                    "--cri-socket".into(),
                    CRI_SOCKET.into(),
                ],
                files: vec![],
                redact: redact.clone(),
            };
            self.runner
                .run(&reset)
                .await
                .map_err(|e| StepError::Transient(format!("kubeadm reset: {e}")))?;
            // What reset leaves and the agent owns: its CNI configuration
            // for this node's old pod CIDR.
            crate::hostgw::remove_conflist(&self.paths).map_err(|e| {
                StepError::Transient(format!("removing the host-gw CNI configuration: {e}"))
            })?;
        }
        if ctx.role == Role::Master {
            // After a reset too: reset empties the certificate directory.
            if let Some(shared) = &ctx.shared_pki {
                shared
                    .place(&self.paths)
                    .map_err(|e| StepError::Transient(e.to_string()))?;
            }
        }
        // The patches of this attempt only: a patch dropped from the
        // configuration must not linger in kubeadm's directory.
        let patches_dir = self.paths.config_file(crate::render::PATCHES_DIR);
        match std::fs::remove_dir_all(&patches_dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(StepError::Transient(format!(
                    "removing the old kubeadm patches {}: {e}",
                    patches_dir.display()
                )))
            }
        }
        let mut files = vec![FileSpec {
            path: self.paths.config_file(file),
            contents: text,
            mode: 0o600,
        }];
        if *step != Step::JoinWorker {
            files.extend(inputs.patch_files().into_iter().map(|p| FileSpec {
                path: patches_dir.join(p.name),
                contents: p.contents,
                mode: 0o644,
            }));
        }
        let inv = Invocation {
            program: Program::Kubeadm,
            args,
            files,
            redact,
        };
        let command = inv.display();
        tracing::info!("kube phase: {command}");
        let run = match self.runner.run(&inv).await {
            Ok(out) => KubeadmRun::succeeded(&command, &out),
            Err(e) => {
                let run = KubeadmRun::failed(&command, &e);
                let summary = run.summary(what);
                let count = resuming.as_ref().map_or(0, |r| r.count) + 1;
                self.resume = run
                    .failed_phase
                    .as_deref()
                    .and_then(|phase| {
                        Some(Resume {
                            step: step.clone(),
                            failed_phase: phase.to_owned(),
                            skip: decide::resume_skip_phases(step, phase)?,
                            count,
                        })
                    })
                    .filter(|_| count <= MAX_RESUMES);
                if !run.output_tail.is_empty() {
                    tracing::warn!(
                        "kube phase: {summary}; last output:\n{}",
                        run.output_tail.join("\n")
                    );
                }
                self.last_run = Some(run);
                return Err(StepError::Transient(summary));
            }
        };
        for w in &run.warnings {
            tracing::warn!("kube phase: {what}: {w}");
        }
        let warnings = run.warnings.clone();
        self.last_run = Some(run);
        // Exit 0 is not enough: the result must answer.
        let proof_text = self.prove_within(ctx).await.map_err(|why| {
            StepError::Transient(format!(
                "{what} exited 0 but its result was not proven within {:?}: {why}",
                self.proof_timeout
            ))
        })?;
        let record = ProofRecord {
            step: proven_step,
            command,
            node_name: ctx.inputs.node_name.clone(),
            ca_pin: ctx.inputs.ca_pin.as_str().to_owned(),
            kubernetes_version: inputs.kubernetes_version.clone().unwrap_or_default(),
            proof: proof_text,
            proven_at_unix_s: ctx
                .now
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            warnings,
        };
        proof::write(&self.paths, &record)
            .map_err(|e| StepError::Transient(format!("writing the proof record: {e}")))?;
        tracing::info!("kube phase: {what} proven: {}", record.proof);
        // After an init, `maintain` records init-done (and gives the
        // liveness key back), on this call or, if etcd fails, the next.
        Ok(record)
    }

    /// Asks the probe for the proof until it comes or the timeout passes.
    async fn prove_within(&self, ctx: &KubeContext) -> Result<String, String> {
        let deadline = tokio::time::Instant::now() + self.proof_timeout;
        loop {
            match self.probe.prove(ctx.role, &ctx.inputs.node_name).await {
                Ok(p) => return Ok(p),
                Err(why) if tokio::time::Instant::now() >= deadline => return Err(why),
                Err(why) => {
                    tracing::debug!("kube phase: not proven yet: {why}");
                    tokio::time::sleep(self.proof_poll).await;
                }
            }
        }
    }
}

/// This node as the proof record names it.
fn identity(ctx: &KubeContext) -> NodeIdentity {
    NodeIdentity {
        node_name: ctx.inputs.node_name.clone(),
        ca_pin: ctx.inputs.ca_pin.as_str().to_owned(),
    }
}

/// The contents of [`IMAGES_IMPORTED_MARKER`].
fn images_marker_text(version: &str, archive: &str) -> String {
    format!("{version} {archive}\n")
}

/// Writes `text` to `path` with the one atomic write (creating the
/// directory).
fn write_atomic(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    atomic_file::write(path, text.as_bytes(), atomic_file::PUBLIC)
}

enum StepError {
    Config(KubeError),
    Transient(String),
}

/// What the kube phase derives from the cluster secret (the same on every
/// node): the bootstrap token, the Kubernetes CA pin, and on masters the
/// shared CA material to place.
#[derive(Debug, Clone)]
pub struct DerivedMaterial {
    /// The bootstrap token.
    pub token: BootstrapToken,
    /// The Kubernetes CA pin (`caCertHashes`).
    pub pin: crate::pin::CaPin,
    /// The Kubernetes CA certificate (PEM; every role): what the agent's
    /// API client trusts.
    pub ca_crt: String,
    /// Masters only: the files of [`SharedPki`].
    pub shared_pki: Option<SharedPki>,
}

/// Errors deriving [`DerivedMaterial`].
#[derive(Debug, Error)]
pub enum DeriveError {
    /// The token derivation failed.
    #[error(transparent)]
    Token(#[from] token::TokenError),
    /// The PKI derivation failed.
    #[error(transparent)]
    Pki(#[from] pki::PkiError),
    /// A master needs its `apiserver-etcd-client` certificate.
    #[error("a master needs its apiserver-etcd-client certificate (pki::etcd_member_certs)")]
    NoApiserverClient,
}

impl DerivedMaterial {
    /// Derives everything for a node of `role` from the cluster PKI the
    /// agent derived once (`cluster`, from the same `secret`) and the
    /// secret (the token; on masters the service-account key). Masters
    /// pass the `apiserver_client` certificate the agent issued for etcd
    /// (see `pki::etcd_member_certs`); workers pass `None` and get no CA
    /// keys. A worker computes the pin from the derived CA in memory: it
    /// holds the cluster secret, so this is authenticated by construction.
    pub fn derive(
        secret: &cluster_config::ClusterSecret,
        cluster_name: &str,
        role: Role,
        cluster: &pki::ClusterPki,
        apiserver_client: Option<&pki::Issued>,
    ) -> Result<Self, DeriveError> {
        let shared_pki = match role {
            Role::Master => {
                let client = apiserver_client.ok_or(DeriveError::NoApiserverClient)?;
                let sa = pki::derive_service_account(secret, cluster_name)?;
                Some(SharedPki::from_cluster(cluster, &sa, client))
            }
            Role::Worker => None,
        };
        Ok(Self {
            token: BootstrapToken::derive(secret, cluster_name)?,
            pin: crate::pin::CaPin::of(&cluster.kubernetes_ca),
            ca_crt: cluster.kubernetes_ca.cert_pem.clone(),
            shared_pki,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_serialises_for_agent_status() {
        let s = KubeStatus {
            phase: PhaseState::WaitingForInit {
                init_node: "id-1".into(),
            },
            init_node: Some("id-1".into()),
            is_init_node: false,
            joined: false,
            kubelet: KubeletState::Inactive,
            api_server: ApiHealth::NotReady {
                reason: "connection refused".into(),
            },
            images_imported: None,
            kubeadm: None,
            proven: None,
        };
        let v: serde_json::Value = serde_json::to_value(&s).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "phase": {"state": "waiting-for-init", "init_node": "id-1"},
                "init_node": "id-1",
                "is_init_node": false,
                "joined": false,
                "kubelet": "inactive",
                "api_server": {"health": "not-ready", "reason": "connection refused"}
            })
        );
        let back: KubeStatus = serde_json::from_value(v).unwrap();
        assert_eq!(back, s);
        // With an archive in the image: a plain bool.
        let s = KubeStatus {
            images_imported: Some(true),
            ..s
        };
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["images_imported"], serde_json::json!(true));
        assert_eq!(serde_json::from_value::<KubeStatus>(v).unwrap(), s);
    }

    #[test]
    fn derived_material_per_role() {
        let secret = cluster_config::ClusterSecret::new("derived-material-secret-01").unwrap();
        let cluster = pki::ClusterPki::derive(&secret, "c1").unwrap();
        let certs =
            pki::etcd_member_certs(&cluster.etcd_ca, "m1", &["10.0.0.1".parse().unwrap()]).unwrap();
        let m = DerivedMaterial::derive(
            &secret,
            "c1",
            Role::Master,
            &cluster,
            Some(&certs.apiserver_client),
        )
        .unwrap();
        let w = DerivedMaterial::derive(&secret, "c1", Role::Worker, &cluster, None).unwrap();
        assert_eq!(m.token, w.token);
        assert_eq!(m.pin, w.pin);
        assert_eq!(w.ca_crt, cluster.kubernetes_ca.cert_pem);
        assert_eq!(m.ca_crt, w.ca_crt);
        assert!(w.shared_pki.is_none());
        let shared = m.shared_pki.unwrap();
        assert_eq!(shared.ca_key, cluster.kubernetes_ca.key_pem);
        assert_eq!(shared.etcd_ca_crt, cluster.etcd_ca.cert_pem);
        assert_eq!(
            shared.apiserver_etcd_client_crt,
            certs.apiserver_client.cert_pem
        );
        assert!(matches!(
            DerivedMaterial::derive(&secret, "c1", Role::Master, &cluster, None),
            Err(DeriveError::NoApiserverClient)
        ));
    }
}
