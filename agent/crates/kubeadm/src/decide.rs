//! The kube phase's pure decisions: is this node already set up, what to
//! run next, when to retry, and which health check the VIP uses.
//!
//! Nothing here touches files, processes or etcd: [`NodeFacts`] is
//! gathered by [`crate::facts`], the answers are carried out by
//! [`crate::phase`].

use std::time::{Duration, SystemTime};

use cluster_config::Role;
use serde::{Deserialize, Serialize};

use crate::proof::{NodeIdentity, ProofFact};

/// The kubelet's client certificate as read from `kubelet.conf`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KubeletCert {
    /// `kubelet.conf` does not exist.
    Missing,
    /// `kubelet.conf` exists but its client certificate could not be read.
    Unreadable {
        /// Why (names the file).
        reason: String,
    },
    /// The certificate's end of validity.
    ValidUntil(SystemTime),
}

/// What is on disk from an earlier kubeadm run, and the agent's record
/// that the run was proven ([`crate::proof`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeFacts {
    /// The proof record.
    pub proof: ProofFact,
    /// `/var/lib/kubelet/config.yaml` exists.
    pub kubelet_config: bool,
    /// `/etc/kubernetes/kubelet.conf` and its client certificate.
    pub kubelet_cert: KubeletCert,
    /// `/etc/kubernetes/admin.conf` exists.
    pub admin_conf: bool,
    /// `/etc/kubernetes/manifests/kube-apiserver.yaml` exists.
    pub apiserver_manifest: bool,
    /// Files `kubeadm join` writes before anything above and the agent
    /// never writes (`/etc/kubernetes/bootstrap-kubelet.conf`, and on a
    /// worker `/etc/kubernetes/pki/ca.crt`): a join that failed early
    /// (kubelet-start, before the kubelet's configuration) leaves only
    /// these, and kubeadm's preflight refuses the retry unless they go.
    pub early_join_files: Vec<String>,
}

impl NodeFacts {
    /// A node kubeadm never ran on.
    pub fn fresh() -> Self {
        Self {
            proof: ProofFact::Missing,
            kubelet_config: false,
            kubelet_cert: KubeletCert::Missing,
            admin_conf: false,
            apiserver_manifest: false,
            early_join_files: Vec::new(),
        }
    }
}

/// How far an earlier kubeadm run got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Setup {
    /// Nothing from kubeadm: run it.
    Absent,
    /// Initialised or joined *and proven* (the proof record matches this
    /// node), with all of kubeadm's files and a valid kubelet
    /// certificate: never run kubeadm init/join again.
    Complete,
    /// Leftovers: some of kubeadm's files exist but not all, or all exist
    /// without a matching proof (kubeadm writes them before it fails), or
    /// the kubelet's certificate is unusable: `kubeadm reset` before
    /// trying again (its preflight checks refuse a node with leftovers).
    Partial {
        /// What is missing or wrong.
        reason: String,
    },
}

/// What [`judge_setup`] says when kubeadm's files exist without a proof.
pub const NO_PROOF: &str = "no proof that kubeadm init/join succeeded on this node \
    (the files of a failed or interrupted attempt)";

/// Judges the files and the proof record on disk for `role` (this node
/// being `me`) at `now`. Pure.
pub fn judge_setup(role: Role, facts: &NodeFacts, now: SystemTime, me: &NodeIdentity) -> Setup {
    let master = role == Role::Master;
    let any = facts.kubelet_config
        || facts.kubelet_cert != KubeletCert::Missing
        || (master && (facts.admin_conf || facts.apiserver_manifest))
        || !facts.early_join_files.is_empty()
        || facts.proof != ProofFact::Missing;
    if !any {
        return Setup::Absent;
    }
    let mut missing = Vec::new();
    if !facts.kubelet_config {
        missing.push("/var/lib/kubelet/config.yaml is missing".to_owned());
    }
    match &facts.kubelet_cert {
        KubeletCert::Missing => missing.push("/etc/kubernetes/kubelet.conf is missing".to_owned()),
        KubeletCert::Unreadable { reason } => missing.push(reason.clone()),
        KubeletCert::ValidUntil(end) if *end <= now => {
            missing.push("the kubelet's client certificate has expired".to_owned())
        }
        KubeletCert::ValidUntil(_) => {}
    }
    if master && !facts.admin_conf {
        missing.push("/etc/kubernetes/admin.conf is missing".to_owned());
    }
    if master && !facts.apiserver_manifest {
        missing.push("/etc/kubernetes/manifests/kube-apiserver.yaml is missing".to_owned());
    }
    match &facts.proof {
        ProofFact::Missing => missing.push(NO_PROOF.to_owned()),
        ProofFact::Unreadable { reason } => missing.push(reason.clone()),
        ProofFact::Recorded(r) => missing.extend(crate::proof::mismatch(r, role, me)),
    }
    if missing.is_empty() {
        Setup::Complete
    } else {
        Setup::Partial {
            reason: missing.join("; "),
        }
    }
}

/// What the init election and the init marker say, for a master.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitView {
    /// The elected init node's id.
    pub winner: String,
    /// This node is it.
    pub is_self: bool,
    /// The init node finished `kubeadm init` (the marker key exists).
    pub done: bool,
}

/// The next kubeadm step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Already set up: nothing to run.
    Nothing,
    /// `kubeadm init` (this node won the election, no cluster yet).
    Init,
    /// Wait: another master is initialising.
    WaitForInit {
        /// The init node's id.
        init_node: String,
    },
    /// `kubeadm join` as a control-plane node.
    JoinControlPlane,
    /// `kubeadm join` as a worker.
    JoinWorker,
}

/// Picks the next step. Pure.
///
/// - complete → nothing;
/// - master, cluster not initialised, this node won → init;
/// - master, not initialised, another won → wait for it;
/// - master, initialised → join as control plane, *also the init winner*
///   if it lost its files after the cluster formed: initialising a second
///   time over a live cluster is never right;
/// - worker → join (no election: workers wait by retrying discovery).
pub fn next_step(role: Role, setup: &Setup, init: Option<&InitView>) -> Step {
    if *setup == Setup::Complete {
        return Step::Nothing;
    }
    match (role, init) {
        (Role::Worker, _) => Step::JoinWorker,
        (Role::Master, Some(v)) if v.done => Step::JoinControlPlane,
        (Role::Master, Some(v)) if v.is_self => Step::Init,
        (Role::Master, Some(v)) => Step::WaitForInit {
            init_node: v.winner.clone(),
        },
        // A master always elects first; without a view it waits.
        (Role::Master, None) => Step::WaitForInit {
            init_node: String::new(),
        },
    }
}

/// Whether a waiting master may take over from an init node whose
/// liveness key it has not seen since `absent_since`. Pure.
pub fn takeover_due(now: SystemTime, absent_since: Option<SystemTime>, grace: Duration) -> bool {
    match absent_since {
        None => false,
        Some(since) => now.duration_since(since).is_ok_and(|d| d >= grace),
    }
}

/// `kubeadm init`'s top-level phases, in the order it runs them (1.22 on).
const INIT_PHASES: &[&str] = &[
    "preflight",
    "certs",
    "kubeconfig",
    "kubelet-start",
    "control-plane",
    "etcd",
    "wait-control-plane",
    "upload-config",
    "upload-certs",
    "mark-control-plane",
    "bootstrap-token",
    "kubelet-finalize",
    "addon",
    "show-join-command",
];

/// `kubeadm join`'s top-level phases, in order (1.22-1.30; workers run
/// the control-plane ones as no-ops).
const JOIN_PHASES: &[&str] = &[
    "preflight",
    "control-plane-prepare",
    "kubelet-start",
    "control-plane-join",
];

/// The first phase a run may resume from: everything before it left its
/// results on disk (certificates, kubeconfigs, manifests) and, for init,
/// the control plane answered (`wait-control-plane` passed).
fn first_resumable(step: &Step) -> Option<(&'static [&'static str], &'static str)> {
    match step {
        Step::Init => Some((INIT_PHASES, "upload-config")),
        Step::JoinControlPlane | Step::JoinWorker => Some((JOIN_PHASES, "kubelet-start")),
        _ => None,
    }
}

/// The phases to skip when `step` is run again after it failed in
/// `failed_phase` (`control-plane-join/mark-control-plane`, as kubeadm
/// prints it), or `None` when the attempt must be reset and started over.
/// Pure.
///
/// kubeadm runs its phases in order and stops at the first error, and its
/// phases are written to be idempotent, so a run that failed late (a 10 s
/// API request timing out while the kubelet registers or the node is
/// labelled) can go on from the failed phase: `--skip-phases` with the
/// ones before it. Only the late phases resume (a join from
/// `kubelet-start`, an init after `wait-control-plane`): an earlier
/// failure, or a phase this table does not know (another kubeadm
/// version), is reset as before.
pub fn resume_skip_phases(step: &Step, failed_phase: &str) -> Option<Vec<&'static str>> {
    let (order, first) = first_resumable(step)?;
    let top = failed_phase.split('/').next().unwrap_or_default();
    let at = order.iter().position(|p| *p == top)?;
    let from = order.iter().position(|p| *p == first)?;
    (at >= from).then(|| order[..at].to_vec())
}

/// Exponential backoff between failed attempts. Pure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Delay after the first failure.
    pub base: Duration,
    /// Largest delay.
    pub max: Duration,
}

impl Default for Backoff {
    /// 5 s, doubling, at most 5 minutes: kubeadm's own waits are minutes
    /// long, so retrying faster only adds load.
    fn default() -> Self {
        Self {
            base: Duration::from_secs(5),
            max: Duration::from_secs(300),
        }
    }
}

impl Backoff {
    /// The delay after `failures` consecutive failures (`0` → none).
    pub fn delay(&self, failures: u32) -> Duration {
        if failures == 0 {
            return Duration::ZERO;
        }
        let shift = (failures - 1).min(30);
        self.base.saturating_mul(1u32 << shift).min(self.max)
    }
}

/// Failures so far and when to try again.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RetryState {
    /// Consecutive failures.
    pub failures: u32,
    /// The last failure's message.
    pub last_error: Option<String>,
    /// Not before this time.
    pub next_attempt: Option<SystemTime>,
}

impl RetryState {
    /// Records a failure at `now`. Pure.
    pub fn failed(&self, backoff: &Backoff, now: SystemTime, error: String) -> Self {
        let failures = self.failures.saturating_add(1);
        Self {
            failures,
            last_error: Some(error),
            next_attempt: Some(now + backoff.delay(failures)),
        }
    }

    /// Whether an attempt may run at `now`.
    pub fn may_attempt(&self, now: SystemTime) -> bool {
        match self.next_attempt {
            None => true,
            Some(t) => now >= t,
        }
    }
}

/// The kube phase's state, as `agent status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum PhaseState {
    /// The kube phase has not started (etcd not healthy yet).
    Pending,
    /// The image has no Kubernetes.
    Skipped {
        /// From the image's manifest.
        reason: String,
    },
    /// Waiting for the init node.
    WaitingForInit {
        /// Its id.
        init_node: String,
    },
    /// Running (or about to run) `kubeadm init`.
    Initialising,
    /// Running (or about to run) `kubeadm join`.
    Joining,
    /// A step failed; it is retried after the backoff.
    Retrying {
        /// Consecutive failures.
        failures: u32,
        /// The last error.
        last_error: String,
        /// Seconds until the next attempt.
        next_attempt_in_s: u64,
    },
    /// Initialised or joined.
    Ready,
}

impl PhaseState {
    /// The state's name, as in the JSON (`state`).
    pub fn name(&self) -> &'static str {
        match self {
            PhaseState::Pending => "pending",
            PhaseState::Skipped { .. } => "skipped",
            PhaseState::WaitingForInit { .. } => "waiting-for-init",
            PhaseState::Initialising => "initialising",
            PhaseState::Joining => "joining",
            PhaseState::Retrying { .. } => "retrying",
            PhaseState::Ready => "ready",
        }
    }
}

/// Which health checks the VIP runs, per kube phase state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VipHealth {
    /// Only the local etcd member's health (before the kube phase, and
    /// when there is no Kubernetes).
    Etcd,
    /// etcd stays the hard quorum check (never hold the VIP without
    /// quorum); the local API server's `https://127.0.0.1:<port>/readyz`
    /// is added as a priority weight (`vrrp::CheckSpec::apiserver_readyz`),
    /// so the VIP moves to a master whose API answers. A weight and not a
    /// fault: while no API server is up yet (during init) some master must
    /// still hold the VIP, and the init node's API wins it as soon as it
    /// answers.
    EtcdAndApiServer {
        /// The port the local API server binds (`[kubernetes]
        /// apiserver_port`: 6444 behind the agent's balancer, else the
        /// public `api_port`).
        api_port: u16,
        /// This master has no control plane yet and is not building one
        /// (waiting for the init node, joining, or retrying a failed
        /// step): it ranks below the init node and below masters with a
        /// control plane even while their `/readyz` fails too. Without
        /// this, a busy init node whose adverts came late lost the VIP to
        /// a waiting master (equal priority, higher address) and its own
        /// `kubeadm init`, which talks to the API through the VIP, waited
        /// on a node with no API server.
        standby: bool,
    },
}

/// The VIP's health checks for a kube phase state (masters only). Pure.
pub fn vip_health(state: &PhaseState, api_port: u16) -> VipHealth {
    match state {
        PhaseState::Pending | PhaseState::Skipped { .. } => VipHealth::Etcd,
        PhaseState::WaitingForInit { .. } | PhaseState::Joining | PhaseState::Retrying { .. } => {
            VipHealth::EtcdAndApiServer {
                api_port,
                standby: true,
            }
        }
        PhaseState::Initialising | PhaseState::Ready => VipHealth::EtcdAndApiServer {
            api_port,
            standby: false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proof::{ProofRecord, ProvenStep};

    fn at(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(s)
    }

    fn me() -> NodeIdentity {
        NodeIdentity {
            node_name: "n1".into(),
            ca_pin: "sha256:aa".into(),
        }
    }

    fn record(step: ProvenStep) -> ProofRecord {
        ProofRecord {
            step,
            command: "kubeadm init".into(),
            node_name: "n1".into(),
            ca_pin: "sha256:aa".into(),
            kubernetes_version: "v1.24.0-alpha.1".into(),
            proof: "checked".into(),
            proven_at_unix_s: 900,
            warnings: vec![],
        }
    }

    /// `judge_setup` for this node.
    fn judge(role: Role, facts: &NodeFacts, now: SystemTime) -> Setup {
        judge_setup(role, facts, now, &me())
    }

    fn complete(until: u64) -> NodeFacts {
        NodeFacts {
            proof: ProofFact::Recorded(record(ProvenStep::Init)),
            kubelet_config: true,
            kubelet_cert: KubeletCert::ValidUntil(at(until)),
            admin_conf: true,
            apiserver_manifest: true,
            early_join_files: Vec::new(),
        }
    }

    #[test]
    fn a_join_that_failed_in_kubelet_start_leaves_files_to_reset() {
        // Seen with the real kubeadm 1.24 on a worker: join failed in
        // kubelet-start ("cannot get Node") after writing the bootstrap
        // kubeconfig and the CA; every retry then failed preflight
        // ("/etc/kubernetes/pki/ca.crt already exists").
        let facts = NodeFacts {
            early_join_files: vec!["/etc/kubernetes/pki/ca.crt".into()],
            ..NodeFacts::fresh()
        };
        match judge(Role::Worker, &facts, at(1000)) {
            Setup::Partial { reason } => assert!(reason.contains("missing"), "{reason}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn setup_judgement_table() {
        let now = at(1000);
        assert_eq!(judge(Role::Master, &NodeFacts::fresh(), now), Setup::Absent);
        assert_eq!(judge(Role::Worker, &NodeFacts::fresh(), now), Setup::Absent);
        assert_eq!(judge(Role::Master, &complete(2000), now), Setup::Complete);
        // A worker needs no admin.conf or API server manifest.
        let worker = NodeFacts {
            proof: ProofFact::Recorded(record(ProvenStep::JoinWorker)),
            admin_conf: false,
            apiserver_manifest: false,
            ..complete(2000)
        };
        assert_eq!(judge(Role::Worker, &worker, now), Setup::Complete);
        match judge(Role::Master, &worker, now) {
            Setup::Partial { reason } => {
                assert!(reason.contains("admin.conf"), "{reason}");
                assert!(reason.contains("kube-apiserver.yaml"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        // Expired certificate: partial, to be reset and joined again.
        match judge(Role::Worker, &complete(999), now) {
            Setup::Partial { reason } => assert!(reason.contains("expired"), "{reason}"),
            other => panic!("{other:?}"),
        }
        // kubelet.conf missing but config.yaml there (kubeadm died midway).
        let half = NodeFacts {
            kubelet_cert: KubeletCert::Missing,
            ..complete(2000)
        };
        assert!(matches!(
            judge(Role::Worker, &half, now),
            Setup::Partial { .. }
        ));
        let unreadable = NodeFacts {
            kubelet_cert: KubeletCert::Unreadable {
                reason: "kubelet.conf: no user".into(),
            },
            ..complete(2000)
        };
        match judge(Role::Master, &unreadable, now) {
            Setup::Partial { reason } => assert_eq!(reason, "kubelet.conf: no user"),
            other => panic!("{other:?}"),
        }
        // Only an API server manifest on a worker is not kubeadm's doing
        // for that role: a worker ignores it.
        let stray = NodeFacts {
            apiserver_manifest: true,
            ..NodeFacts::fresh()
        };
        assert_eq!(judge(Role::Worker, &stray, now), Setup::Absent);
        assert!(matches!(
            judge(Role::Master, &stray, now),
            Setup::Partial { .. }
        ));
    }

    /// Ready means proven: kubeadm's files alone (what a failed init
    /// leaves) are leftovers; so are a record of another node, cluster or
    /// role, an unreadable record, and a record without the files.
    #[test]
    fn files_without_a_matching_proof_are_leftovers() {
        let now = at(1000);
        let unproven = NodeFacts {
            proof: ProofFact::Missing,
            ..complete(2000)
        };
        for role in [Role::Master, Role::Worker] {
            match judge(role, &unproven, now) {
                Setup::Partial { reason } => assert_eq!(reason, NO_PROOF),
                other => panic!("{role}: {other:?}"),
            }
        }
        let with = |proof: ProofFact| NodeFacts {
            proof,
            ..complete(2000)
        };
        let other_node = ProofRecord {
            node_name: "n2".into(),
            ..record(ProvenStep::Init)
        };
        let other_cluster = ProofRecord {
            ca_pin: "sha256:bb".into(),
            ..record(ProvenStep::JoinControlPlane)
        };
        let cases = [
            (
                Role::Master,
                with(ProofFact::Recorded(other_node)),
                "\"n2\"",
            ),
            (
                Role::Master,
                with(ProofFact::Recorded(other_cluster)),
                "another cluster",
            ),
            (
                Role::Master,
                with(ProofFact::Recorded(record(ProvenStep::JoinWorker))),
                "not of a master",
            ),
            (
                Role::Worker,
                with(ProofFact::Recorded(record(ProvenStep::Init))),
                "not of a worker",
            ),
            (
                Role::Master,
                with(ProofFact::Unreadable {
                    reason: "proven.json: EOF".into(),
                }),
                "proven.json: EOF",
            ),
        ];
        for (role, facts, want) in cases {
            match judge(role, &facts, now) {
                Setup::Partial { reason } => assert!(reason.contains(want), "{reason}"),
                other => panic!("{role} {facts:?}: {other:?}"),
            }
        }
        // A joined master's record: complete.
        assert_eq!(
            judge(
                Role::Master,
                &with(ProofFact::Recorded(record(ProvenStep::JoinControlPlane))),
                now
            ),
            Setup::Complete
        );
        // The record alone (kubeadm's files lost): reset and set up again.
        let only_record = NodeFacts {
            proof: ProofFact::Recorded(record(ProvenStep::JoinWorker)),
            ..NodeFacts::fresh()
        };
        match judge(Role::Worker, &only_record, now) {
            Setup::Partial { reason } => {
                assert!(reason.contains("kubelet.conf is missing"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
    }

    fn view(is_self: bool, done: bool) -> InitView {
        InitView {
            winner: if is_self { "me".into() } else { "other".into() },
            is_self,
            done,
        }
    }

    #[test]
    fn next_step_table() {
        let absent = Setup::Absent;
        let partial = Setup::Partial { reason: "x".into() };
        let cases = [
            (
                Role::Master,
                Setup::Complete,
                Some(view(true, true)),
                Step::Nothing,
            ),
            (Role::Worker, Setup::Complete, None, Step::Nothing),
            (
                Role::Master,
                absent.clone(),
                Some(view(true, false)),
                Step::Init,
            ),
            (
                Role::Master,
                partial.clone(),
                Some(view(true, false)),
                Step::Init,
            ),
            (
                Role::Master,
                absent.clone(),
                Some(view(false, false)),
                Step::WaitForInit {
                    init_node: "other".into(),
                },
            ),
            (
                Role::Master,
                absent.clone(),
                Some(view(false, true)),
                Step::JoinControlPlane,
            ),
            // The init winner that lost its files after the cluster formed
            // joins; it never initialises a second time.
            (
                Role::Master,
                partial.clone(),
                Some(view(true, true)),
                Step::JoinControlPlane,
            ),
            (Role::Worker, absent, None, Step::JoinWorker),
            (
                Role::Worker,
                partial,
                Some(view(false, false)),
                Step::JoinWorker,
            ),
            (
                Role::Master,
                Setup::Absent,
                None,
                Step::WaitForInit {
                    init_node: String::new(),
                },
            ),
        ];
        for (role, setup, init, want) in cases {
            assert_eq!(
                next_step(role, &setup, init.as_ref()),
                want,
                "{role} {setup:?} {init:?}"
            );
        }
    }

    #[test]
    fn late_failures_resume_from_the_failed_phase() {
        // A control-plane join that failed while the kubelet registered,
        // or while the node was labelled, goes on from that phase.
        assert_eq!(
            resume_skip_phases(&Step::JoinControlPlane, "kubelet-start"),
            Some(vec!["preflight", "control-plane-prepare"])
        );
        assert_eq!(
            resume_skip_phases(
                &Step::JoinControlPlane,
                "control-plane-join/mark-control-plane"
            ),
            Some(vec!["preflight", "control-plane-prepare", "kubelet-start"])
        );
        assert_eq!(
            resume_skip_phases(&Step::JoinWorker, "kubelet-start"),
            Some(vec!["preflight", "control-plane-prepare"])
        );
        // An init whose control plane answered goes on after it.
        assert_eq!(
            resume_skip_phases(&Step::Init, "addon/kube-proxy"),
            Some(INIT_PHASES[..12].to_vec())
        );
        assert_eq!(
            resume_skip_phases(&Step::Init, "upload-config/kubelet"),
            Some(INIT_PHASES[..7].to_vec())
        );
        // Early failures, unknown phases and other steps start over.
        for (step, phase) in [
            (Step::Init, "wait-control-plane"),
            (Step::Init, "preflight"),
            (Step::Init, "certs/apiserver"),
            (Step::JoinControlPlane, "preflight"),
            (Step::JoinControlPlane, "control-plane-prepare/certs"),
            (Step::JoinControlPlane, "kubelet-wait-bootstrap"),
            (Step::JoinWorker, ""),
            (Step::Nothing, "kubelet-start"),
        ] {
            assert_eq!(resume_skip_phases(&step, phase), None, "{step:?} {phase}");
        }
    }

    #[test]
    fn takeover_only_after_the_grace() {
        let g = Duration::from_secs(60);
        assert!(!takeover_due(at(1000), None, g));
        assert!(!takeover_due(at(1000), Some(at(1000)), g));
        assert!(!takeover_due(at(1059), Some(at(1000)), g));
        assert!(takeover_due(at(1060), Some(at(1000)), g));
        // A clock that went backwards never triggers it.
        assert!(!takeover_due(at(900), Some(at(1000)), g));
    }

    #[test]
    fn backoff_schedule() {
        let b = Backoff::default();
        let secs: Vec<u64> = (0..10).map(|n| b.delay(n).as_secs()).collect();
        assert_eq!(secs, vec![0, 5, 10, 20, 40, 80, 160, 300, 300, 300]);
        // No overflow for absurd counts.
        assert_eq!(b.delay(u32::MAX), Duration::from_secs(300));
    }

    #[test]
    fn retry_state_waits_out_the_backoff() {
        let b = Backoff::default();
        let r0 = RetryState::default();
        assert!(r0.may_attempt(at(0)));
        let r1 = r0.failed(&b, at(100), "boom".into());
        assert_eq!(r1.failures, 1);
        assert_eq!(r1.next_attempt, Some(at(105)));
        assert!(!r1.may_attempt(at(104)));
        assert!(r1.may_attempt(at(105)));
        let r2 = r1.failed(&b, at(105), "boom again".into());
        assert_eq!(r2.next_attempt, Some(at(115)));
        assert_eq!(r2.last_error.as_deref(), Some("boom again"));
    }

    #[test]
    fn vip_moves_to_readyz_once_the_kube_phase_begins() {
        assert_eq!(vip_health(&PhaseState::Pending, 6444), VipHealth::Etcd);
        assert_eq!(
            vip_health(
                &PhaseState::Skipped {
                    reason: "none".into()
                },
                6444
            ),
            VipHealth::Etcd
        );
        for (s, standby) in [
            (
                PhaseState::WaitingForInit {
                    init_node: "a".into(),
                },
                true,
            ),
            (PhaseState::Initialising, false),
            (PhaseState::Joining, true),
            (PhaseState::Ready, false),
            (
                PhaseState::Retrying {
                    failures: 1,
                    last_error: "x".into(),
                    next_attempt_in_s: 5,
                },
                true,
            ),
        ] {
            assert_eq!(
                vip_health(&s, 6444),
                VipHealth::EtcdAndApiServer {
                    api_port: 6444,
                    standby
                },
                "{s:?}"
            );
        }
    }

    #[test]
    fn phase_state_serialises_with_a_tag() {
        let s = serde_json::to_string(&PhaseState::Skipped { reason: "r".into() }).unwrap();
        assert_eq!(s, r#"{"state":"skipped","reason":"r"}"#);
        let back: PhaseState = serde_json::from_str(&s).unwrap();
        assert_eq!(back, PhaseState::Skipped { reason: "r".into() });
    }
}
