//! The kube phase's status: the `kube` section of `agent status`
//! ([`KubeReport`], with the join material, [`JoinReport`]) and its text
//! (the summary, node and detail lines the agent's `status::render` and
//! the QEMU harness print). Pure data and text; the agent re-exports the
//! types from `agent::status`.

use serde::{Deserialize, Serialize};

use crate::decide::PhaseState;
use crate::hostgw::HostGwReport;
use crate::outcome::KubeadmRun;
use crate::phase::{ApiHealth, KubeletState};

/// The Kubernetes phase as `agent status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KubeReport {
    /// Where the phase is: pending, skipped (with the reason),
    /// waiting-for-init, initialising, joining, retrying (with the last
    /// error), ready.
    pub phase: PhaseState,
    /// While pending: what the phase waits for.
    #[serde(default)]
    pub waiting_for: Option<String>,
    /// A configuration error that stops the phase (not retried until the
    /// agent restarts with another configuration or image).
    #[serde(default)]
    pub error: Option<String>,
    /// The elected init node's id (hex), once known (masters).
    #[serde(default)]
    pub init_node: Option<String>,
    /// This node is the init node.
    #[serde(default)]
    pub is_init_node: bool,
    /// kubeadm init/join completed on this node.
    #[serde(default)]
    pub joined: bool,
    /// The kubelet unit's state.
    pub kubelet: KubeletState,
    /// The local API server's `/readyz`.
    pub api_server: ApiHealth,
    /// Whether the image's OCI archive of control-plane images
    /// (`/usr/lib/kubeboot/images.oci.tar`) was imported into containerd
    /// (`ctr -n k8s.io images import`) on this boot or an earlier one: a
    /// JSON bool; absent when the image has no archive or Kubernetes, or
    /// the phase has not looked yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub images_imported: Option<bool>,
    /// The join material this node uses (present whether or not the image
    /// has Kubernetes; `null` on a worker until a master announced it).
    #[serde(default)]
    pub join: Option<JoinReport>,
    /// Why a worker refuses the join material masters announce (a pin or
    /// endpoint that differs from its own derivation, or masters that
    /// disagree); `null` otherwise.
    #[serde(default)]
    pub join_error: Option<String>,
    /// The last kubeadm init/join: on a ready node the proven run (its
    /// warnings); otherwise this agent's last attempt (failed phase,
    /// error, last lines of output, warnings).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubeadm: Option<KubeadmRun>,
    /// What proved that init/join worked (ready nodes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proven: Option<String>,
    /// The pod network (`manifest <path>`, `host-gw` or `none`), once the
    /// phase runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cni: Option<String>,
    /// The host-gw pod network on this node (host-gw mode, ready nodes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_gw: Option<HostGwReport>,
}

/// The Kubernetes join material of a node, as `agent status` shows it.
/// The bootstrap token itself is never shown, only its public id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinReport {
    /// `<VIP>:<API port>` (`kubeadm join`'s endpoint).
    pub api_endpoint: String,
    /// `sha256:<hex>` of the Kubernetes CA's SubjectPublicKeyInfo.
    pub ca_pin: String,
    /// The bootstrap token's id (the 6 characters before the dot).
    pub token_id: String,
    /// Where the endpoint and the pin come from.
    pub source: JoinSource,
}

/// Where a node took its join material from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum JoinSource {
    /// Authenticated master announcements (workers).
    Discovery,
    /// Derived from the cluster secret and configuration (masters).
    Derived,
}

impl JoinSource {
    /// The JSON name.
    pub fn name(self) -> &'static str {
        match self {
            JoinSource::Discovery => "discovery",
            JoinSource::Derived => "derived",
        }
    }
}

impl Default for KubeReport {
    fn default() -> Self {
        Self {
            phase: PhaseState::Pending,
            waiting_for: None,
            error: None,
            init_node: None,
            is_init_node: false,
            joined: false,
            kubelet: KubeletState::Unknown,
            api_server: ApiHealth::Unknown,
            images_imported: None,
            join: None,
            join_error: None,
            kubeadm: None,
            proven: None,
            cni: None,
            host_gw: None,
        }
    }
}

impl KubeReport {
    /// The one-line summary (the `kube:` line of `agent::status::render`, and the
    /// suffix of the `STATUS=` line sent to systemd). `peers` (id, name)
    /// names the init node when discovery knows it.
    pub fn summary<'a>(&self, peers: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
        let peers: Vec<(&str, &str)> = peers.into_iter().collect();
        let name_of = |id: &str| -> String {
            if id.is_empty() {
                return "(not elected yet)".to_owned();
            }
            let short = id.get(..6).unwrap_or(id);
            match peers.iter().find(|(pid, _)| *pid == id) {
                Some((_, name)) if !name.is_empty() => format!("{name} ({short})"),
                _ => short.to_owned(),
            }
        };
        if let Some(e) = &self.error {
            return format!("failed: {e}");
        }
        match &self.phase {
            PhaseState::Pending => match &self.waiting_for {
                Some(w) => format!("pending: waiting for {w}"),
                None => "pending".to_owned(),
            },
            PhaseState::Skipped { reason } => format!("skipped: {reason}"),
            PhaseState::WaitingForInit { init_node } => {
                format!("waiting for init node {}", name_of(init_node))
            }
            PhaseState::Initialising => "initialising (kubeadm init on this node)".to_owned(),
            PhaseState::Joining => "joining (kubeadm join)".to_owned(),
            PhaseState::Retrying {
                failures,
                last_error,
                next_attempt_in_s,
            } => format!(
                "retrying in {next_attempt_in_s} s after {failures} failure{}: {last_error}",
                if *failures == 1 { "" } else { "s" }
            ),
            PhaseState::Ready => "ready".to_owned(),
        }
    }

    /// The `join` line of `agent::status::render`.
    pub fn join_line(&self) -> String {
        match (&self.join, &self.join_error) {
            (_, Some(e)) => format!("refused: {e}"),
            (Some(j), None) => format!(
                "{} CA pin {} token id {} (from {})",
                j.api_endpoint,
                j.ca_pin,
                j.token_id,
                j.source.name()
            ),
            (None, None) => "not known yet (no master announced it)".to_owned(),
        }
    }

    /// The lines about kubeadm's last run and the pod network (indented
    /// under the `kube:` line of `agent::status::render`).
    pub fn detail_lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(run) = &self.kubeadm {
            if run.succeeded {
                out.push(format!(
                    "kubeadm: `{}` succeeded{}",
                    run.command,
                    match &self.proven {
                        Some(p) => format!(", proven: {p}"),
                        None => ", not proven".to_owned(),
                    }
                ));
            } else {
                out.push(format!(
                    "kubeadm: `{}` failed{}{}",
                    run.command,
                    run.failed_phase
                        .as_ref()
                        .map(|p| format!(" in phase {p}"))
                        .unwrap_or_default(),
                    run.exit_code
                        .map(|c| format!(" (exit {c})"))
                        .unwrap_or_default()
                ));
                if let Some(e) = &run.error {
                    out.extend(e.lines().map(|l| format!("  error: {}", l.trim())));
                }
                out.extend(run.output_tail.iter().map(|l| format!("  | {l}")));
            }
            out.extend(run.warnings.iter().map(|w| format!("  warning: {w}")));
        }
        match (&self.cni, &self.host_gw) {
            (Some(c), Some(h)) => {
                out.push(format!(
                    "pod network: {c}, pod CIDR {}, {} route{}{}",
                    h.pod_cidr.as_deref().unwrap_or("not assigned yet"),
                    h.routes.len(),
                    if h.routes.len() == 1 { "" } else { "s" },
                    h.error
                        .as_ref()
                        .map(|e| format!(", error: {e}"))
                        .unwrap_or_default()
                ));
                out.extend(h.routes.iter().map(|r| format!("  route {r}")));
                out.extend(h.skipped.iter().map(|r| format!("  waiting: {r}")));
            }
            (Some(c), None) => out.push(format!("pod network: {c}")),
            _ => {}
        }
        out
    }

    /// Whether the phase shows anything beyond its summary (it started).
    pub fn started(&self) -> bool {
        !matches!(self.phase, PhaseState::Pending | PhaseState::Skipped { .. })
            && self.error.is_none()
    }

    /// This node's facts under the `kube:` line of `agent::status::render`: init node,
    /// joined, kubelet, API server, images.
    pub fn node_line(&self) -> String {
        let init = match (&self.init_node, self.is_init_node) {
            (_, true) => "this node".to_owned(),
            (Some(id), false) => id.get(..6).unwrap_or(id).to_owned(),
            (None, false) => "-".to_owned(),
        };
        format!(
            "init node {init}, {}, kubelet {}, API server {}{}",
            if self.joined { "joined" } else { "not joined" },
            kubelet_name(self.kubelet),
            api_health_text(&self.api_server),
            match self.images_imported {
                None => "",
                Some(true) => ", images imported",
                Some(false) => ", images not imported yet",
            }
        )
    }

    /// One line for progress output (the QEMU harness): [`Self::summary`],
    /// then [`Self::node_line`] once the phase has started.
    pub fn progress(&self) -> String {
        let summary = self.summary([]);
        if self.started() {
            format!("{summary}; {}", self.node_line())
        } else {
            summary
        }
    }

    /// kubeadm init/join is proven on this node and its kubelet runs.
    pub fn node_ready(&self) -> bool {
        self.phase == PhaseState::Ready && self.joined && self.kubelet == KubeletState::Active
    }
}

fn kubelet_name(k: KubeletState) -> &'static str {
    match k {
        KubeletState::Unknown => "unknown",
        KubeletState::Active => "active",
        KubeletState::Inactive => "inactive",
        KubeletState::Failed => "failed",
    }
}

fn api_health_text(a: &ApiHealth) -> String {
    match a {
        ApiHealth::Unknown => "unknown".to_owned(),
        ApiHealth::NotApplicable => "none (worker)".to_owned(),
        ApiHealth::Ready => "ready".to_owned(),
        ApiHealth::NotReady { reason } => format!("not ready ({reason})"),
    }
}
