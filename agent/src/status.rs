//! The status report: what `agent status` prints, served by the running
//! agent on a Unix socket (default [`DEFAULT_SOCKET`]).
//!
//! Protocol: connect, read one JSON document ([`StatusReport`]) until EOF.
//! `agent status --json` prints it as is; without `--json` it is rendered
//! by [`render`], one section per phase (config, discovery, PKI, etcd, VIP,
//! API balancer, Kubernetes).

use std::collections::BTreeMap;
use std::path::Path;

pub use kubeadm::phase::{ApiHealth, KubeletState};
pub use kubeadm::report::{JoinReport, JoinSource, KubeReport};
pub use kubeadm::PhaseState;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

pub use crate::balance::{BalancerReport, BalancerState};
pub use balancer::{BackendHealth, BackendStatus, BalancerStatus, ListenerState};

use crate::socket::{self, SocketError};

/// Default socket path.
pub const DEFAULT_SOCKET: &str = "/run/kubeboot/agent.sock";

/// The `vip` section of a report (the JSON is the variant's own: untagged).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum VipStatus {
    /// The VRRP instance runs: its own status.
    Running(Box<vrrp::Status>),
    /// The instance could not be started.
    Failed {
        /// Why, with its causes.
        error: String,
    },
}

/// Everything `agent status` shows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    /// The agent's phase (kebab-case name).
    pub phase: String,
    /// Detail of the phase.
    pub detail: String,
    /// This node.
    pub node: NodeStatus,
    /// Configuration.
    pub config: ConfigStatus,
    /// Discovery.
    pub discovery: DiscoveryStatus,
    /// PKI.
    pub pki: PkiStatus,
    /// etcd.
    pub etcd: EtcdReport,
    /// The VIP instance's status, once the VIP is started (or why it
    /// could not start).
    pub vip: Option<VipStatus>,
    /// The Kubernetes (kubeadm) phase. Absent in reports of agents that
    /// predate it (then: pending).
    #[serde(default)]
    pub kube: KubeReport,
    /// etcd snapshots on this node (masters; issue 17). Absent in reports
    /// of agents that predate them.
    #[serde(default)]
    pub snapshots: crate::etcd::snapshot::SnapshotsReport,
    /// The recovery epoch and the last recovery (masters; issue 17).
    /// Absent in reports of older agents (then: epoch 0).
    #[serde(default)]
    pub recovery: crate::recovery::RecoveryReport,
    /// The API load balancer (masters; issue 18). Absent in reports of
    /// agents that predate it (then: off).
    #[serde(default)]
    pub balancer: BalancerReport,
}

/// This node.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// Node id (hex).
    pub id: String,
    /// Node name.
    pub name: String,
    /// Role.
    pub role: String,
    /// Cluster addresses.
    pub addresses: Vec<String>,
}

/// Configuration status.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ConfigStatus {
    /// Loaded and valid.
    pub ok: bool,
    /// The error, when not ok.
    pub error: Option<String>,
    /// Sources that contributed, lowest precedence first.
    pub sources: Vec<String>,
    /// Cluster name.
    pub cluster: String,
    /// Expected masters.
    pub masters: u8,
}

/// One peer as discovery sees it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PeerStatus {
    /// Node id (hex).
    pub id: String,
    /// Name.
    pub name: String,
    /// Role.
    pub role: String,
    /// Announced phase.
    pub phase: String,
    /// Addresses.
    pub addresses: Vec<String>,
    /// etcd cluster id, if it reports one (hex).
    pub cluster_id: Option<String>,
    /// Its announced kube phase state, if it announces one.
    #[serde(default)]
    pub kube: Option<String>,
    /// Milliseconds since its announcement last changed.
    pub last_seen_ms_ago: u64,
    /// Milliseconds since it was first heard.
    pub first_seen_ms_ago: u64,
}

/// Discovery status.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DiscoveryStatus {
    /// `multicast` or `static`.
    pub mode: String,
    /// Live peers.
    pub peers: Vec<PeerStatus>,
    /// Accepted messages.
    pub accepted: u64,
    /// Rejected messages by reason.
    pub rejected: BTreeMap<String, u64>,
    /// The proposal this node announces (ids, hex).
    pub proposal: Vec<String>,
    /// Peers whose clocks are off by more than half the accepted window
    /// (their messages are refused beyond it).
    #[serde(default)]
    pub clock_skew: Vec<ClockSkew>,
}

/// A peer whose clock differs from this node's (see `discovery::skew`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClockSkew {
    /// Node id (hex).
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its address.
    pub address: Option<String>,
    /// Its clock minus this node's, ms (positive: ahead).
    pub offset_ms: i64,
    /// Its messages refused for it.
    pub rejected: u64,
}

impl ClockSkew {
    /// One line for `agent status` and the systemd status: who, by how
    /// much, and the fix.
    pub fn line(&self, window_s: u64) -> String {
        let secs = self.offset_ms.unsigned_abs() as f64 / 1000.0;
        let dir = if self.offset_ms >= 0 {
            "ahead"
        } else {
            "behind"
        };
        let fate = if self.rejected > 0 {
            format!("{} messages refused (window ±{window_s} s)", self.rejected)
        } else {
            format!("near the ±{window_s} s window")
        };
        format!(
            "clock skew: peer {} ({}) is {secs:.1} s {dir}: {fate}; synchronise the clocks (NTP)",
            self.name,
            self.address.as_deref().unwrap_or("?"),
        )
    }
}

/// PKI status.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PkiStatus {
    /// Certificates written.
    pub ready: bool,
    /// The etcd CA's SPKI pin.
    pub etcd_ca_pin: Option<String>,
    /// Error, if any.
    pub error: Option<String>,
}

/// One etcd member.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MemberReport {
    /// Member id (hex).
    pub id: String,
    /// Name.
    pub name: String,
    /// Peer URLs.
    pub peer_urls: Vec<String>,
    /// Learner (else voter).
    pub learner: bool,
    /// Answered a status request at its client URL.
    pub healthy: bool,
}

/// etcd status.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EtcdReport {
    /// The service is running.
    pub running: bool,
    /// Cluster id (hex).
    pub cluster_id: Option<String>,
    /// Own member id (hex).
    pub member_id: Option<String>,
    /// Leader id (hex).
    pub leader: Option<String>,
    /// Own member is a learner.
    pub learner: bool,
    /// Members.
    pub members: Vec<MemberReport>,
    /// Last error, if any.
    pub error: Option<String>,
}

/// Renders the report for humans. Pure.
pub fn render(r: &StatusReport) -> String {
    let mut out = String::new();
    let mut line = |s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    line(format!("phase:     {} ({})", r.phase, r.detail));
    line(format!(
        "node:      {} {} id {} addresses {}",
        r.node.role,
        r.node.name,
        r.node.id,
        r.node.addresses.join(", ")
    ));
    match &r.config.error {
        None => line(format!(
            "config:    ok, cluster {:?}, {} masters, from {}",
            r.config.cluster,
            r.config.masters,
            r.config.sources.join(" < ")
        )),
        Some(e) => line(format!("config:    FAILED: {e}")),
    }
    let rejected: Vec<String> = r
        .discovery
        .rejected
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    line(format!(
        "discovery: {} peers, {} accepted, rejected: {}",
        r.discovery.peers.len(),
        r.discovery.accepted,
        if rejected.is_empty() {
            "none".to_owned()
        } else {
            rejected.join(", ")
        }
    ));
    if !r.discovery.proposal.is_empty() {
        line(format!("  proposal: {}", r.discovery.proposal.join(", ")));
    }
    for s in &r.discovery.clock_skew {
        line(format!(
            "  {}",
            s.line(discovery::message::DEFAULT_WINDOW_MS / 1000)
        ));
    }
    for p in &r.discovery.peers {
        line(format!(
            "  {} {} {} {} {}{}{} (changed {} ms ago)",
            p.id.get(..6).unwrap_or(&p.id),
            p.name,
            p.role,
            p.phase,
            p.addresses.join(","),
            p.cluster_id
                .as_ref()
                .map(|c| format!(" cluster {c}"))
                .unwrap_or_default(),
            p.kube
                .as_ref()
                .map(|k| format!(" kube {k}"))
                .unwrap_or_default(),
            p.last_seen_ms_ago
        ));
    }
    match (&r.pki.error, r.pki.ready) {
        (Some(e), _) => line(format!("pki:       FAILED: {e}")),
        (None, true) => line(format!(
            "pki:       ready, etcd CA {}",
            r.pki.etcd_ca_pin.clone().unwrap_or_default()
        )),
        (None, false) => line("pki:       not written yet".to_owned()),
    }
    let e = &r.etcd;
    line(format!(
        "etcd:      {}{}{}{}{}",
        if e.running { "running" } else { "not running" },
        e.member_id
            .as_ref()
            .map(|m| format!(", member {m}"))
            .unwrap_or_default(),
        if e.learner { " (learner)" } else { "" },
        e.cluster_id
            .as_ref()
            .map(|c| format!(", cluster {c}"))
            .unwrap_or_default(),
        e.leader
            .as_ref()
            .map(|l| format!(", leader {l}"))
            .unwrap_or_default(),
    ));
    if let Some(err) = &e.error {
        line(format!("  error: {err}"));
    }
    for m in &e.members {
        line(format!(
            "  {} {} {} {} {}",
            m.id,
            if m.name.is_empty() {
                "(unstarted)"
            } else {
                &m.name
            },
            if m.learner { "learner" } else { "voter" },
            if m.healthy { "healthy" } else { "unhealthy" },
            m.peer_urls.join(",")
        ));
    }
    // etcd snapshots (masters): crate::etcd::snapshot.
    if r.snapshots.enabled || r.node.role == "master" {
        for l in r.snapshots.lines() {
            line(l);
        }
        // The recovery epoch: crate::recovery.
        for l in r.recovery.lines() {
            line(l);
        }
    }
    match &r.vip {
        // The VRRP instance's own rendering.
        Some(VipStatus::Running(st)) => line(format!(
            "vip:       {}",
            st.to_string().replace('\n', "\n           ")
        )),
        Some(VipStatus::Failed { error }) => line(format!("vip:       not started: {error}")),
        None => line("vip:       not started".to_owned()),
    }
    // The API balancer (masters): crate::balance.
    if r.balancer.state != BalancerState::Off || r.node.role == "master" {
        line(r.balancer.to_string().trim_end().to_owned());
    }
    let k = &r.kube;
    line(format!(
        "kube:      {}",
        k.summary(
            r.discovery
                .peers
                .iter()
                .map(|p| (p.id.as_str(), p.name.as_str())),
        )
    ));
    if k.started() {
        line(format!("  {}", k.node_line()));
        for l in k.detail_lines() {
            line(format!("  {l}"));
        }
    }
    line(format!("  join {}", k.join_line()));
    out
}

/// Errors serving or reading the status socket.
pub type StatusError = SocketError;

/// Binds the socket (replacing a stale one) and serves the latest report to
/// every client until the task is dropped.
pub async fn serve(
    path: &Path,
    report: watch::Receiver<StatusReport>,
) -> Result<tokio::task::JoinHandle<()>, StatusError> {
    let listener = socket::bind("status", path, None)?;
    Ok(tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                continue;
            };
            let body = serde_json::to_vec(&*report.borrow()).unwrap_or_default();
            tokio::spawn(async move {
                if let Err(e) = sock.write_all(&body).await {
                    tracing::debug!("status client went away: {e}");
                }
                let _ = sock.shutdown().await;
            });
        }
    }))
}

/// Reads the report from a running agent.
pub async fn fetch(path: &Path) -> Result<StatusReport, StatusError> {
    let read = |reason: String| SocketError::Exchange {
        doing: "reading the status from",
        path: path.to_owned(),
        reason,
    };
    let mut sock = socket::connect(path).await?;
    let mut buf = Vec::new();
    sock.read_to_end(&mut buf)
        .await
        .map_err(|e| read(e.to_string()))?;
    serde_json::from_slice(&buf).map_err(|e| read(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kubeadm::hostgw::HostGwReport;
    use kubeadm::outcome::KubeadmRun;

    fn sample() -> StatusReport {
        let mut r = StatusReport {
            phase: "ready".into(),
            detail: "voting member".into(),
            ..Default::default()
        };
        r.config.ok = true;
        r.config.sources = vec!["image".into(), "credential kubeboot.secret".into()];
        r.discovery.rejected.insert("bad-mac".into(), 4);
        r.discovery.peers.push(PeerStatus {
            id: "abcdef0123".into(),
            name: "master-abcdef".into(),
            role: "master".into(),
            phase: "ready".into(),
            addresses: vec!["10.0.0.2".into()],
            cluster_id: Some("2a".into()),
            kube: Some("waiting-for-init".into()),
            last_seen_ms_ago: 12,
            first_seen_ms_ago: 100,
        });
        r.etcd = EtcdReport {
            running: true,
            cluster_id: Some("2a".into()),
            member_id: Some("9".into()),
            leader: Some("9".into()),
            learner: false,
            members: vec![MemberReport {
                id: "9".into(),
                name: "master-123456".into(),
                peer_urls: vec!["https://10.0.0.1:2380".into()],
                learner: false,
                healthy: true,
            }],
            error: None,
        };
        r
    }

    #[test]
    fn render_shows_every_section() {
        let text = render(&sample());
        for needle in [
            "phase:     ready",
            "config:    ok",
            "rejected: bad-mac 4",
            "master-abcdef",
            "cluster 2a",
            "master-123456 voter healthy",
            "leader 9",
            "vip:       not started",
            "kube waiting-for-init",
            "kube:      pending",
        ] {
            assert!(text.contains(needle), "{needle:?} missing in\n{text}");
        }
        assert!(!text.contains("clock skew"), "{text}");
        let mut failed = sample();
        failed.config.error = Some("no cluster secret".into());
        assert!(render(&failed).contains("config:    FAILED: no cluster secret"));
    }

    fn balancer_sample(state: BalancerState) -> BalancerReport {
        BalancerReport {
            state,
            listen: Some("0.0.0.0:6443".parse().unwrap()),
            error: None,
            status: Some(BalancerStatus {
                listen: "0.0.0.0:6443".parse().unwrap(),
                policy: balancer::POLICY.to_owned(),
                state: ListenerState::Serving,
                open: 3,
                backends: vec![
                    BackendStatus {
                        addr: "10.77.0.11:6444".parse().unwrap(),
                        health: BackendHealth::Up,
                        in_rotation: true,
                        active: 3,
                        total: 120,
                        connect_failures: 0,
                        last_error: None,
                    },
                    BackendStatus {
                        addr: "10.77.0.12:6444".parse().unwrap(),
                        health: BackendHealth::Down,
                        in_rotation: false,
                        active: 0,
                        total: 7,
                        connect_failures: 2,
                        last_error: Some("GET https://10.77.0.12:6444/readyz: 500".into()),
                    },
                ],
            }),
        }
    }

    #[test]
    fn the_balancer_section_renders_and_round_trips() {
        let mut r = sample();
        r.node.role = "master".into();
        // A master before the kube phase: waiting, with the address.
        r.balancer = BalancerReport {
            state: BalancerState::Waiting,
            listen: Some("0.0.0.0:6443".parse().unwrap()),
            ..Default::default()
        };
        assert!(
            render(&r).contains("balancer:  waiting for the kube phase, listen 0.0.0.0:6443\n"),
            "{}",
            render(&r)
        );
        // Serving: state, backends with health, rotation and connections.
        r.balancer = balancer_sample(BalancerState::Serving);
        let text = render(&r);
        for needle in [
            "balancer:  serving, listen 0.0.0.0:6443\n",
            "1/2 backends in rotation, 3 connections open",
            "\n    10.77.0.11:6444        up   in  active     3 total      120",
            "\n    10.77.0.12:6444        down out active     0 total        7 connect failures     2 (GET https://10.77.0.12:6444/readyz: 500)",
        ] {
            assert!(text.contains(needle), "{needle:?} missing in\n{text}");
        }
        // A bind error names the address and says it is retried.
        r.balancer = BalancerReport {
            state: BalancerState::BindError,
            listen: Some("0.0.0.0:6443".parse().unwrap()),
            error: Some("binding 0.0.0.0:6443: Address in use (os error 98)".into()),
            status: None,
        };
        assert!(render(&r).contains(
            "balancer:  bind error (retrying), listen 0.0.0.0:6443: binding 0.0.0.0:6443: Address in use (os error 98)"
        ));
        // JSON: typed, kebab-case state, round trip.
        for state in [
            BalancerState::Off,
            BalancerState::Waiting,
            BalancerState::Starting,
            BalancerState::Serving,
            BalancerState::NoBackend,
            BalancerState::Quiescing,
            BalancerState::BindError,
            BalancerState::Failed,
        ] {
            r.balancer = balancer_sample(state);
            let json = serde_json::to_string(&r).unwrap();
            let back: StatusReport = serde_json::from_str(&json).unwrap();
            assert_eq!(back, r);
        }
        r.balancer = balancer_sample(BalancerState::BindError);
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["balancer"]["state"], "bind-error");
        assert_eq!(v["balancer"]["status"]["backends"][1]["health"], "down");
        // Reports of agents before the balancer: off, and not rendered on workers.
        let mut old = serde_json::to_value(sample()).unwrap();
        old.as_object_mut().unwrap().remove("balancer");
        let old: StatusReport = serde_json::from_value(old).unwrap();
        assert_eq!(old.balancer, BalancerReport::default());
        assert!(!render(&old).contains("balancer:"), "{}", render(&old));
    }

    #[test]
    fn render_names_a_skewed_peer_its_offset_and_the_fix() {
        let mut r = sample();
        r.discovery.rejected.insert("future".into(), 452);
        r.discovery.clock_skew.push(ClockSkew {
            id: "07".repeat(16),
            name: "master-070707".into(),
            address: Some("10.77.0.7".into()),
            offset_ms: 7_200_312,
            rejected: 452,
        });
        r.discovery.clock_skew.push(ClockSkew {
            id: "08".repeat(16),
            name: "master-080808".into(),
            address: Some("10.77.0.8".into()),
            offset_ms: -20_000,
            rejected: 0,
        });
        let text = render(&r);
        for needle in [
            "rejected: bad-mac 4, future 452",
            "  clock skew: peer master-070707 (10.77.0.7) is 7200.3 s ahead: 452 messages refused (window ±30 s); synchronise the clocks (NTP)",
            "  clock skew: peer master-080808 (10.77.0.8) is 20.0 s behind: near the ±30 s window",
        ] {
            assert!(text.contains(needle), "{needle:?} missing in\n{text}");
        }
        // JSON keeps it for tools.
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["discovery"]["clock_skew"][0]["offset_ms"], 7_200_312);
    }

    fn kube_text(k: KubeReport) -> String {
        let mut r = sample();
        r.discovery.peers[0].id = "abcdef0123456789abcdef0123456789".into();
        r.kube = k;
        let text = render(&r);
        text.lines()
            .skip_while(|l| !l.starts_with("kube:"))
            .take_while(|l| !l.starts_with("  join "))
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn render_kubeadm_runs_and_the_pod_network() {
        let failed = KubeadmRun {
            command: "kubeadm init --config /var/lib/kubeboot/kubeadm/init.yaml --skip-token-print"
                .into(),
            succeeded: false,
            exit_code: Some(1),
            failed_phase: Some("wait-control-plane".into()),
            error: Some(
                "error execution phase wait-control-plane: couldn't initialize a Kubernetes cluster"
                    .into(),
            ),
            warnings: vec!["[WARNING Hostname]: hostname \"m1\" could not be reached".into()],
            output_tail: vec!["\ttimed out waiting for the condition".into()],
        };
        let text = kube_text(KubeReport {
            phase: PhaseState::Retrying {
                failures: 1,
                last_error: "kubeadm init failed in phase wait-control-plane: couldn't initialize a Kubernetes cluster".into(),
                next_attempt_in_s: 5,
            },
            is_init_node: true,
            kubeadm: Some(failed),
            cni: Some("host-gw".into()),
            ..KubeReport::default()
        });
        let want = [
            "  kubeadm: `kubeadm init --config /var/lib/kubeboot/kubeadm/init.yaml --skip-token-print` failed in phase wait-control-plane (exit 1)",
            "    error: error execution phase wait-control-plane: couldn't initialize a Kubernetes cluster",
            "    | \ttimed out waiting for the condition",
            "    warning: [WARNING Hostname]: hostname \"m1\" could not be reached",
            "  pod network: host-gw",
        ];
        for w in want {
            assert!(text.contains(w), "{w:?} not in\n{text}");
        }
        let ready = KubeReport {
            phase: PhaseState::Ready,
            joined: true,
            kubeadm: Some(KubeadmRun {
                command: "kubeadm join --config /var/lib/kubeboot/kubeadm/join.yaml".into(),
                succeeded: true,
                exit_code: Some(0),
                failed_phase: None,
                error: None,
                warnings: vec![],
                output_tail: vec![],
            }),
            proven: Some("Node worker-1 registered".into()),
            cni: Some("host-gw".into()),
            host_gw: Some(HostGwReport {
                pod_cidr: Some("10.244.3.0/24".into()),
                routes: vec!["10.244.0.0/24 via 10.77.0.11".into()],
                skipped: vec!["master-3: no pod CIDR yet".into()],
                error: None,
            }),
            ..KubeReport::default()
        };
        let text = kube_text(ready.clone());
        for w in [
            "  kubeadm: `kubeadm join --config /var/lib/kubeboot/kubeadm/join.yaml` succeeded, proven: Node worker-1 registered",
            "  pod network: host-gw, pod CIDR 10.244.3.0/24, 1 route",
            "    route 10.244.0.0/24 via 10.77.0.11",
            "    waiting: master-3: no pod CIDR yet",
        ] {
            assert!(text.contains(w), "{w:?} not in\n{text}");
        }
        // JSON round trip; the new fields are absent when unset.
        let v = serde_json::to_value(&ready).unwrap();
        assert_eq!(v["host_gw"]["pod_cidr"], "10.244.3.0/24");
        assert_eq!(v["kubeadm"]["succeeded"], true);
        assert_eq!(serde_json::from_value::<KubeReport>(v).unwrap(), ready);
        let v = serde_json::to_value(KubeReport::default()).unwrap();
        for k in ["kubeadm", "proven", "cni", "host_gw"] {
            assert!(v.get(k).is_none(), "{k} in {v}");
        }
    }

    #[test]
    fn render_every_kube_state() {
        let base = KubeReport::default();
        assert_eq!(kube_text(base.clone()), "kube:      pending");
        assert_eq!(
            kube_text(KubeReport {
                waiting_for: Some("the local etcd member to be a healthy voter".into()),
                ..base.clone()
            }),
            "kube:      pending: waiting for the local etcd member to be a healthy voter"
        );
        assert_eq!(
            kube_text(KubeReport {
                phase: PhaseState::Skipped {
                    reason: "built with --without-kubernetes".into()
                },
                ..base.clone()
            }),
            "kube:      skipped: built with --without-kubernetes"
        );
        let id = "abcdef0123456789abcdef0123456789".to_owned();
        assert_eq!(
            kube_text(KubeReport {
                phase: PhaseState::WaitingForInit {
                    init_node: id.clone()
                },
                init_node: Some(id.clone()),
                kubelet: KubeletState::Inactive,
                ..base.clone()
            }),
            "kube:      waiting for init node master-abcdef (abcdef)\n  \
             init node abcdef, not joined, kubelet inactive, API server unknown"
        );
        assert_eq!(
            kube_text(KubeReport {
                phase: PhaseState::Initialising,
                init_node: Some("me".into()),
                is_init_node: true,
                ..base.clone()
            }),
            "kube:      initialising (kubeadm init on this node)\n  \
             init node this node, not joined, kubelet unknown, API server unknown"
        );
        assert_eq!(
            kube_text(KubeReport {
                phase: PhaseState::Joining,
                api_server: ApiHealth::NotApplicable,
                ..base.clone()
            }),
            "kube:      joining (kubeadm join)\n  \
             init node -, not joined, kubelet unknown, API server none (worker)"
        );
        assert_eq!(
            kube_text(KubeReport {
                phase: PhaseState::Joining,
                api_server: ApiHealth::NotApplicable,
                images_imported: Some(false),
                ..base.clone()
            }),
            "kube:      joining (kubeadm join)\n  \
             init node -, not joined, kubelet unknown, API server none (worker), \
             images not imported yet"
        );
        assert_eq!(
            kube_text(KubeReport {
                phase: PhaseState::Retrying {
                    failures: 2,
                    last_error: "kubeadm join: exit 1".into(),
                    next_attempt_in_s: 9
                },
                ..base.clone()
            }),
            "kube:      retrying in 9 s after 2 failures: kubeadm join: exit 1\n  \
             init node -, not joined, kubelet unknown, API server unknown"
        );
        assert_eq!(
            kube_text(KubeReport {
                phase: PhaseState::Ready,
                init_node: Some(id.clone()),
                joined: true,
                kubelet: KubeletState::Active,
                api_server: ApiHealth::NotReady {
                    reason: "GET https://127.0.0.1:6443/readyz: 500".into()
                },
                ..base.clone()
            }),
            "kube:      ready\n  \
             init node abcdef, joined, kubelet active, \
             API server not ready (GET https://127.0.0.1:6443/readyz: 500)"
        );
        assert_eq!(
            kube_text(KubeReport {
                phase: PhaseState::Ready,
                joined: true,
                is_init_node: true,
                kubelet: KubeletState::Failed,
                api_server: ApiHealth::Ready,
                ..base.clone()
            }),
            "kube:      ready\n  \
             init node this node, joined, kubelet failed, API server ready"
        );
        assert_eq!(
            kube_text(KubeReport {
                phase: PhaseState::Ready,
                joined: true,
                is_init_node: true,
                kubelet: KubeletState::Active,
                api_server: ApiHealth::Ready,
                images_imported: Some(true),
                ..base.clone()
            }),
            "kube:      ready\n  \
             init node this node, joined, kubelet active, API server ready, images imported"
        );
        assert_eq!(
            kube_text(KubeReport {
                error: Some("network.vip is not set".into()),
                ..base
            }),
            "kube:      failed: network.vip is not set"
        );
    }

    #[test]
    fn reports_without_a_kube_section_still_parse() {
        // An agent that predates the kube phase (or a newer client).
        let mut v = serde_json::to_value(sample()).unwrap();
        v.as_object_mut().unwrap().remove("kube");
        v["discovery"]["peers"][0]
            .as_object_mut()
            .unwrap()
            .remove("kube");
        let r: StatusReport = serde_json::from_value(v).unwrap();
        assert_eq!(r.kube, KubeReport::default());
        // The skipped state in JSON: tagged, with the reason.
        let mut s = sample();
        s.kube.phase = PhaseState::Skipped {
            reason: "built with --without-kubernetes".into(),
        };
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(
            v["kube"]["phase"],
            serde_json::json!({"state": "skipped", "reason": "built with --without-kubernetes"})
        );
        // images_imported: absent unless the image has an archive; then a
        // bool (what qemu-tests/src/status.rs reads).
        assert!(v["kube"].get("images_imported").is_none());
        s.kube.images_imported = Some(true);
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["kube"]["images_imported"], serde_json::json!(true));
        let back: StatusReport = serde_json::from_value(v).unwrap();
        assert_eq!(back.kube.images_imported, Some(true));
    }

    #[test]
    fn join_material_in_json_and_text() {
        let pin = format!("sha256:{}", "0f".repeat(32));
        let mut r = sample();
        r.kube.phase = PhaseState::Skipped {
            reason: "built with --without-kubernetes".into(),
        };
        r.kube.join = Some(JoinReport {
            api_endpoint: "10.77.0.10:6443".into(),
            ca_pin: pin.clone(),
            token_id: "abc123".into(),
            source: JoinSource::Discovery,
        });
        // The field names the QEMU test asserts on a worker.
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(
            v["kube"]["join"],
            serde_json::json!({
                "api_endpoint": "10.77.0.10:6443",
                "ca_pin": pin,
                "token_id": "abc123",
                "source": "discovery",
            })
        );
        assert_eq!(v["kube"]["join_error"], serde_json::Value::Null);
        let back: StatusReport = serde_json::from_value(v).unwrap();
        assert_eq!(back, r);
        let text = render(&r);
        assert!(
            text.contains(&format!(
                "\n  join 10.77.0.10:6443 CA pin {pin} token id abc123 (from discovery)\n"
            )),
            "{text}"
        );
        // Masters: derived.
        r.kube.join.as_mut().unwrap().source = JoinSource::Derived;
        assert_eq!(
            serde_json::to_value(&r).unwrap()["kube"]["join"]["source"],
            "derived"
        );
        assert!(render(&r).contains("(from derived)"));
        // A refusal wins over material, and is shown.
        r.kube.join = None;
        r.kube.join_error = Some("pin mismatch".into());
        assert!(render(&r).contains("\n  join refused: pin mismatch\n"));
        r.kube.join_error = None;
        assert!(render(&r).contains("\n  join not known yet (no master announced it)\n"));
        // Reports of agents that predate the fields parse.
        let mut v = serde_json::to_value(sample()).unwrap();
        let k = v["kube"].as_object_mut().unwrap();
        k.remove("join");
        k.remove("join_error");
        let parsed: StatusReport = serde_json::from_value(v).unwrap();
        assert_eq!(parsed.kube.join, None);
    }

    #[tokio::test]
    async fn serves_the_latest_report() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/agent.sock");
        // A stale socket file from a previous run is replaced.
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, b"").unwrap();
        let (tx, rx) = watch::channel(StatusReport::default());
        let server = serve(&path, rx).await.unwrap();
        tx.send(sample()).unwrap();
        assert_eq!(fetch(&path).await.unwrap(), sample());
        server.abort();
        let missing = dir.path().join("none.sock");
        assert!(matches!(
            fetch(&missing).await,
            Err(StatusError::Connect { .. })
        ));
    }
    #[test]
    fn the_vip_section_is_typed_and_keeps_its_wire_form() {
        let st = vrrp::Status::new("enp0s1", "10.77.0.10/24".parse().unwrap(), 51, 100, 20);
        let mut r = StatusReport {
            vip: Some(VipStatus::Running(Box::new(st.clone()))),
            ..StatusReport::default()
        };
        // The instance's own JSON, as qemu-tests and operators read it.
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["vip"], serde_json::to_value(&st).unwrap());
        assert_eq!(v["vip"]["router_id"], 51);
        let back: StatusReport = serde_json::from_value(v).unwrap();
        assert_eq!(back, r);
        assert!(render(&r).contains("vip:       "), "{}", render(&r));

        r.vip = Some(VipStatus::Failed {
            error: "binding the VRRP socket: permission denied".into(),
        });
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(
            v["vip"],
            serde_json::json!({"error": "binding the VRRP socket: permission denied"})
        );
        assert_eq!(serde_json::from_value::<StatusReport>(v).unwrap(), r);
        assert!(render(&r)
            .contains("vip:       not started: binding the VRRP socket: permission denied"));

        // A form neither variant has is refused, not kept as untyped JSON
        // (qemu-tests shows such a line as JSON with the reason).
        let v = serde_json::json!({"state": "master", "holder": "10.77.0.101"});
        assert!(serde_json::from_value::<VipStatus>(v).is_err());
    }
}
