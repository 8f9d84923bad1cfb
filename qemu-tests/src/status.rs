//! A guest's status as the agent reports it on the virtio-serial port
//! `org.kubeboot.status`: `agent status --json --watch 1` writes one compact
//! JSON [`StatusReport`] per line, every second; QEMU copies the port into a
//! file (`-chardev file`). The last complete line is the node's current
//! status; the file's modification time says how fresh it is.
//!
//! [`StatusReport`] mirrors the part of the agent's `agent::status::
//! StatusReport` the harness reads, every field defaulted and unknown
//! fields ignored: a guest built from an older or newer agent still
//! parses, so the harness's decisions (healthy, VIP holder, kube ready) do
//! not depend on the exact agent version.
//!
//! What people read is rendered by the agent's own renderer
//! (`agent::status::render`, what `agent status` prints in the guest):
//! [`render`] and [`kube_text`] parse the raw line as the agent's report.
//! One renderer, so `make cluster-status` shows exactly what `agent status`
//! shows; a line the agent's type cannot read (a guest from another agent
//! version) is shown as indented JSON, with the reason.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::time::{Duration, SystemTime};

use serde::Deserialize;

/// The agent's status report (the fields the harness uses).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, serde::Serialize)]
#[serde(default)]
pub struct StatusReport {
    /// The agent's phase.
    pub phase: String,
    /// Detail of the phase.
    pub detail: String,
    /// This node.
    pub node: NodeReport,
    /// Discovery.
    pub discovery: DiscoveryReport,
    /// PKI.
    pub pki: PkiReport,
    /// etcd.
    pub etcd: EtcdReport,
    /// The VRRP instance's status (`state`, `holder`, `quorum`, ...).
    pub vip: Option<serde_json::Value>,
    /// Everything else the agent reports, as is.
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

/// This node.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, serde::Serialize)]
#[serde(default)]
pub struct NodeReport {
    /// Node id (hex).
    pub id: String,
    /// Node name the agent chose.
    pub name: String,
    /// Role.
    pub role: String,
    /// Cluster addresses.
    pub addresses: Vec<String>,
}

/// One peer discovery sees.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, serde::Serialize)]
#[serde(default)]
pub struct PeerReport {
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
}

/// Discovery.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, serde::Serialize)]
#[serde(default)]
pub struct DiscoveryReport {
    /// Live peers.
    pub peers: Vec<PeerReport>,
    /// Accepted messages.
    pub accepted: u64,
    /// Rejected messages by reason.
    pub rejected: BTreeMap<String, u64>,
}

/// PKI.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, serde::Serialize)]
#[serde(default)]
pub struct PkiReport {
    /// Certificates written.
    pub ready: bool,
    /// The etcd CA's SPKI pin.
    pub etcd_ca_pin: Option<String>,
}

/// One etcd member.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, serde::Serialize)]
#[serde(default)]
pub struct MemberReport {
    /// Member id (hex).
    pub id: String,
    /// Name (empty while unstarted).
    pub name: String,
    /// Peer URLs.
    pub peer_urls: Vec<String>,
    /// Learner (else voter).
    pub learner: bool,
    /// Answered at its client URL.
    pub healthy: bool,
}

/// etcd.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, serde::Serialize)]
#[serde(default)]
pub struct EtcdReport {
    /// The service runs.
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
    /// Last error.
    pub error: Option<String>,
}

/// The kube section, as the agent's own type: the harness tests the agent
/// of its own checkout, so its decisions (ready, joined, kubelet, API
/// server) read the agent's typed report, and its progress lines are the
/// agent's words ([`KubeReport::progress`]).
pub use agent::status::{ApiHealth, JoinSource, KubeReport, KubeletState, PhaseState};

/// The API balancer section, as the agent's own type (issue 18).
pub use agent::status::{BalancerReport, BalancerState};

/// The report's balancer section, `None` from agents without one (or
/// when it does not parse as [`BalancerReport`]).
pub fn balancer(r: &StatusReport) -> Option<BalancerReport> {
    serde_json::from_value(r.other.get("balancer")?.clone()).ok()
}

/// The report's kube section, `None` from agents without one (or when it
/// does not parse as [`KubeReport`]).
pub fn kube(r: &StatusReport) -> Option<KubeReport> {
    serde_json::from_value(r.other.get("kube")?.clone()).ok()
}

/// How much of the end of the file is read to find the last line (one
/// report is 2-6 KiB).
const TAIL_BYTES: u64 = 128 * 1024;

/// The last complete line of `text` (ends with `\n`), trimmed; `None` when
/// there is none. Pure.
pub fn last_complete_line(text: &[u8]) -> Option<&[u8]> {
    let end = text.iter().rposition(|&b| b == b'\n')?;
    let body = &text[..end];
    let start = body.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
    let line = &body[start..];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    (!line.is_empty()).then_some(line)
}

/// One reading of a guest's status stream.
#[derive(Debug, Clone)]
pub struct Reading {
    /// The report.
    pub report: StatusReport,
    /// The report's JSON line as the agent wrote it (for [`render`]).
    pub line: String,
    /// How long ago the stream last wrote (file modification time).
    pub age: Duration,
    /// How many lines the stream holds (reports since power-on).
    pub lines: usize,
}

/// Reads the last complete report in `path`; `None` while the guest has not
/// written one (not booted yet) or when the last line does not parse.
pub fn read(path: &Path) -> Option<Reading> {
    let mut f = File::open(path).ok()?;
    let meta = f.metadata().ok()?;
    let len = meta.len();
    let start = len.saturating_sub(TAIL_BYTES);
    f.seek(SeekFrom::Start(start)).ok()?;
    let mut buf = Vec::with_capacity((len - start) as usize);
    f.read_to_end(&mut buf).ok()?;
    let line = last_complete_line(&buf)?;
    let report: StatusReport = serde_json::from_slice(line).ok()?;
    let line = String::from_utf8_lossy(line).into_owned();
    let age = meta
        .modified()
        .ok()
        .and_then(|m| SystemTime::now().duration_since(m).ok())
        .unwrap_or_default();
    // Lines are counted in the tail only past the first 128 KiB; good
    // enough for "has it started".
    let lines = buf.iter().filter(|&&b| b == b'\n').count();
    Some(Reading {
        report,
        line,
        age,
        lines,
    })
}

/// The VRRP state in a report (`master`, `backup`, `fault`,
/// `initialize`), or `None` before the VIP runner starts.
pub fn vip_state(r: &StatusReport) -> Option<&str> {
    r.vip.as_ref()?.get("state")?.as_str()
}

/// Whether the report says this node holds the VIP (VRRP master).
pub fn holds_vip(r: &StatusReport) -> bool {
    vip_state(r) == Some("master")
}

/// Whether the node is a voting etcd member of a cluster with `n` voters,
/// all of them healthy.
pub fn healthy_voter_of(r: &StatusReport, n: usize) -> bool {
    let e = &r.etcd;
    e.member_id.is_some()
        && !e.learner
        && e.cluster_id.is_some()
        && e.members.len() == n
        && e.members.iter().all(|m| !m.learner && m.healthy)
}

/// Renders a report's JSON line for people with the agent's renderer: the
/// text `agent status` prints in the guest (phase, node, config, discovery,
/// PKI, etcd members, VIP, kube phase and join material). A line the
/// agent's type does not read is shown as indented JSON after the reason.
pub fn render(line: &str) -> String {
    match serde_json::from_str::<agent::status::StatusReport>(line) {
        Ok(r) => agent::status::render(&r),
        Err(e) => {
            let json = serde_json::from_str::<serde_json::Value>(line)
                .ok()
                .and_then(|v| serde_json::to_string_pretty(&v).ok())
                .unwrap_or_else(|| line.to_owned());
            format!("(a report this agent version's renderer cannot read: {e})\n{json}\n")
        }
    }
}

/// The kube section of [`render`] on one line: the `kube:` summary and,
/// once the phase started, its detail (init node, joined, kubelet, API
/// server, images), joined by `; `. `None` when the agent's type does not
/// read the line.
pub fn kube_text(line: &str) -> Option<String> {
    let r = serde_json::from_str::<agent::status::StatusReport>(line).ok()?;
    let text = agent::status::render(&r);
    let parts: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.starts_with("kube:"))
        .take_while(|l| !l.starts_with("  join "))
        .map(|l| l.trim_start_matches("kube:").trim())
        .collect();
    (!parts.is_empty()).then(|| parts.join("; "))
}

/// The width `make cluster`'s progress and summary lines keep to.
pub const LINE_WIDTH: usize = 100;

/// `text` cut to at most `width` characters, ending in `...` when cut. Pure.
pub fn fit(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_owned();
    }
    let kept: String = text.chars().take(width.saturating_sub(3)).collect();
    format!("{kept}...")
}

/// `prefix` then `text`, wrapped at spaces into lines of at most `width`
/// characters; continuation lines are indented to the prefix's width, and a
/// word longer than a line is split. Pure.
pub fn wrap(prefix: &str, text: &str, width: usize) -> Vec<String> {
    let indent = " ".repeat(prefix.chars().count());
    let room = width.saturating_sub(indent.len()).max(1);
    let mut lines = Vec::new();
    let mut line = prefix.to_owned();
    let mut empty = true;
    for word in text.split_whitespace() {
        let mut word: Vec<char> = word.chars().collect();
        loop {
            let used = line.chars().count();
            let sep = usize::from(!empty);
            if used + sep + word.len() <= width {
                if !empty {
                    line.push(' ');
                }
                line.extend(word.iter());
                empty = false;
                break;
            }
            if !empty {
                lines.push(std::mem::replace(&mut line, indent.clone()));
                empty = true;
                continue;
            }
            // An empty line and still too long: split the word.
            let take = width.saturating_sub(used).max(1).min(room);
            line.extend(word.drain(..take.min(word.len())));
            lines.push(std::mem::replace(&mut line, indent.clone()));
            if word.is_empty() {
                break;
            }
        }
    }
    if !empty || lines.is_empty() {
        lines.push(line);
    }
    lines
}

/// A shell command after `prefix`, broken at spaces into lines of at most
/// `width` characters that end in ` \` (continuation lines indented two
/// more than the prefix), so it can still be pasted into a shell. For
/// commands without quoted arguments (the harness's own); a word longer
/// than a line stays whole. Pure.
pub fn wrap_command(prefix: &str, command: &str, width: usize) -> Vec<String> {
    let indent = " ".repeat(prefix.chars().count() + 2);
    let mut lines = Vec::new();
    let mut line = prefix.to_owned();
    let mut empty = true;
    for word in command.split_whitespace() {
        let used = line.chars().count();
        // Room for the word and, if more follows, " \".
        if !empty && used + 1 + word.chars().count() + 2 > width {
            line.push_str(" \\");
            lines.push(std::mem::replace(&mut line, indent.clone()));
            empty = true;
        }
        if !empty {
            line.push(' ');
        }
        line.push_str(word);
        empty = false;
    }
    lines.push(line);
    lines
}

/// The node's cluster address (first of `node.addresses`).
pub fn address(r: &StatusReport) -> Option<&str> {
    r.node.addresses.first().map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_line_ignores_a_partial_one() {
        assert_eq!(last_complete_line(b""), None);
        assert_eq!(last_complete_line(b"{\"a\":1"), None);
        assert_eq!(
            last_complete_line(b"{\"a\":1}\n{\"a\":2}\n{\"a\":"),
            Some(&b"{\"a\":2}"[..])
        );
        assert_eq!(last_complete_line(b"x\r\n"), Some(&b"x"[..]));
        assert_eq!(last_complete_line(b"one\n"), Some(&b"one"[..]));
    }

    #[test]
    fn tolerates_sections_and_fields_it_does_not_know() {
        // A line as the 99432dd agent writes it, plus a field no agent has
        // yet: the kube section lands in `other`, unknown fields are
        // ignored, and rendering shows the section.
        let line = br#"{"phase":"ready","detail":"voting member 1 of cluster 2","node":{"id":"ab","name":"master-ab","role":"master","addresses":["10.77.0.101"],"future":1},"config":{"ok":true},"discovery":{"mode":"multicast","peers":[],"accepted":3,"rejected":{"bad-mac":2},"proposal":[]},"pki":{"ready":true,"etcd_ca_pin":"sha256:x","error":null},"etcd":{"running":true,"cluster_id":"2","member_id":"1","leader":"1","learner":false,"members":[{"id":"1","name":"m","peer_urls":[],"learner":false,"healthy":true}],"error":null},"vip":{"state":"master","holder":"10.77.0.101","vip":"10.77.0.10/24"},"kube":{"phase":{"state":"skipped","reason":"built with --without-kubernetes"},"joined":false,"kubelet":"unknown","api_server":{"health":"unknown"}},"next":{"x":[1]}}"#;
        let r: StatusReport = serde_json::from_slice(line).unwrap();
        assert_eq!(r.node.addresses, ["10.77.0.101"]);
        assert_eq!(r.discovery.rejected["bad-mac"], 2);
        assert!(holds_vip(&r));
        assert!(healthy_voter_of(&r, 1));
        assert_eq!(r.other["kube"]["phase"]["state"], "skipped");
        assert!(r.other.contains_key("next"));
        let k = kube(&r).unwrap();
        assert_eq!(
            k.phase,
            PhaseState::Skipped {
                reason: "built with --without-kubernetes".into()
            }
        );
        assert_eq!(k.progress(), "skipped: built with --without-kubernetes");
        // A report from an agent without most sections still parses.
        let old: StatusReport = serde_json::from_slice(br#"{"phase":"starting"}"#).unwrap();
        assert_eq!(old.phase, "starting");
        assert!(old.vip.is_none() && !holds_vip(&old));
    }

    #[test]
    fn kube_section_of_a_ready_master_and_a_retrying_one() {
        let ready = br#"{"phase":"ready","kube":{"phase":{"state":"ready"},"waiting_for":null,"error":null,"init_node":"ab12","is_init_node":true,"joined":true,"kubelet":"active","api_server":{"health":"ready"},"join":{"api_endpoint":"10.77.0.10:6443","ca_pin":"sha256:00","token_id":"abcdef","source":"derived"},"join_error":null}}"#;
        let r: StatusReport = serde_json::from_slice(ready).unwrap();
        let k = kube(&r).unwrap();
        assert!(k.joined && k.is_init_node);
        assert_eq!(k.init_node.as_deref(), Some("ab12"));
        assert_eq!(k.api_server, ApiHealth::Ready);
        assert_eq!(k.join.as_ref().unwrap().source, JoinSource::Derived);
        assert_eq!(k.images_imported, None);
        assert!(k.node_ready());
        assert_eq!(
            k.progress(),
            "ready; init node this node, joined, kubelet active, API server ready"
        );
        let retrying = br#"{"kube":{"phase":{"state":"retrying","failures":2,"last_error":"kubeadm init: exit 1","next_attempt_in_s":20},"joined":false,"kubelet":"inactive","api_server":{"health":"not-ready","reason":"connection refused"}}}"#;
        let r: StatusReport = serde_json::from_slice(retrying).unwrap();
        assert_eq!(
            kube(&r).unwrap().progress(),
            "retrying in 20 s after 2 failures: kubeadm init: exit 1; init node -, not joined, \
             kubelet inactive, API server not ready (connection refused)"
        );
        let none: StatusReport = serde_json::from_slice(br#"{"phase":"ready"}"#).unwrap();
        assert_eq!(kube(&none), None);
    }

    /// A line as the agent writes it, from the agent's own type.
    fn agent_line(kube: agent::status::KubeReport) -> String {
        let r = agent::status::StatusReport {
            phase: "ready".into(),
            detail: "voting member 1 of cluster 2".into(),
            kube,
            ..Default::default()
        };
        serde_json::to_string(&r).unwrap()
    }

    #[test]
    fn renders_with_the_agents_renderer() {
        use agent::status::KubeReport as K;
        use kubeadm::PhaseState;
        let line = agent_line(K {
            phase: PhaseState::Skipped {
                reason: "built with --without-kubernetes".into(),
            },
            ..K::default()
        });
        let text = render(&line);
        assert_eq!(
            text,
            agent::status::render(&serde_json::from_str(&line).unwrap()),
            "not the agent's text"
        );
        assert!(
            text.contains("\nkube:      skipped: built with --without-kubernetes\n"),
            "{text}"
        );
        // No JSON object anywhere: every section is readable lines.
        assert!(!text.contains('{'), "{text}");
        assert_eq!(
            kube_text(&line).as_deref(),
            Some("skipped: built with --without-kubernetes")
        );
        let line = agent_line(K {
            phase: PhaseState::Initialising,
            init_node: Some("ab12cd34".into()),
            is_init_node: true,
            ..K::default()
        });
        assert_eq!(
            kube_text(&line).as_deref(),
            Some(
                "initialising (kubeadm init on this node); init node this node, not joined, \
                 kubelet unknown, API server unknown"
            )
        );
        // A line the agent's type cannot read: the reason, then the JSON.
        let odd = render(r#"{"phase":7}"#);
        assert!(
            odd.starts_with("(a report this agent version's renderer cannot read: "),
            "{odd}"
        );
        assert!(odd.contains("\"phase\": 7"), "{odd}");
        assert_eq!(kube_text(r#"{"phase":7}"#), None);
    }

    #[test]
    fn fit_and_wrap_keep_to_the_width() {
        assert_eq!(fit("short", 10), "short");
        assert_eq!(fit("0123456789abc", 10), "0123456...");
        let reason = "Kubernetes components unreachable at build time: \
                      https://dl.k8s.io/release/v1.30.4/bin/linux/amd64/kubelet; rebuild with \
                      --components-dir DIR or from a machine that reaches upstream";
        let text = format!("master-1, master-2, master-3: skipped: {reason}");
        let lines = wrap("  kube:    ", &text, 100);
        assert!(lines.len() > 1, "{lines:?}");
        for l in &lines {
            assert!(l.chars().count() <= 100, "{l:?}");
        }
        assert!(lines[0].starts_with("  kube:    master-1, master-2, master-3: skipped: "));
        assert!(lines[1].starts_with("           ") && !lines[1].starts_with("            "));
        let words = |t: &str| t.split_whitespace().map(str::to_owned).collect::<Vec<_>>();
        assert_eq!(
            words(&lines.join(" ")),
            words(&format!(
                "kube: master-1, master-2, master-3: skipped: {reason}"
            ))
        );
        // A word longer than a line is split, not left overlong.
        let long = "x".repeat(150);
        let lines = wrap("p: ", &long, 100);
        assert!(lines.iter().all(|l| l.chars().count() <= 100), "{lines:?}");
        assert_eq!(lines.concat().matches('x').count(), 150);
        assert_eq!(wrap("p: ", "", 100), ["p: "]);
    }

    #[test]
    fn wrapped_commands_stay_commands() {
        let cmd = "ip netns exec kb-c21721 env ETCDCTL_API=3 etcdctl --endpoints \
                   https://10.77.0.101:2379,https://10.77.0.102:2379,https://10.77.0.103:2379 \
                   --cacert /work/run/cluster/etcd-client/ca.crt --cert \
                   /work/run/cluster/etcd-client/client.crt --key \
                   /work/run/cluster/etcd-client/client.key endpoint status -w table";
        let lines = wrap_command("  etcd:    ", cmd, 100);
        assert!(lines.len() > 1, "{lines:?}");
        for (i, l) in lines.iter().enumerate() {
            assert!(l.chars().count() <= 100, "{l:?}");
            assert_eq!(l.ends_with(" \\"), i + 1 < lines.len(), "{l:?}");
        }
        assert!(lines[1].starts_with("             ") && !lines[1].starts_with("              "));
        // Joined back as a shell would, it is the same command.
        let joined = lines.join("\n").replace(" \\\n", " ");
        assert_eq!(
            joined
                .trim_start_matches("  etcd:    ")
                .split_whitespace()
                .collect::<Vec<_>>(),
            cmd.split_whitespace().collect::<Vec<_>>()
        );
        assert_eq!(
            wrap_command("x: ", "make cluster-down", 100),
            ["x: make cluster-down"]
        );
    }

    #[test]
    fn reads_the_latest_report_and_vip_state() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.jsonl");
        assert!(read(&p).is_none());
        let mut r = StatusReport {
            phase: "joining".into(),
            ..Default::default()
        };
        let mut text = serde_json::to_string(&r).unwrap() + "\n";
        r.phase = "ready".into();
        r.vip = Some(serde_json::json!({"state": "master", "holder": "10.77.0.101"}));
        text += &(serde_json::to_string(&r).unwrap() + "\n{\"phase\":");
        std::fs::write(&p, text).unwrap();
        let got = read(&p).unwrap();
        assert_eq!(got.report.phase, "ready");
        assert_eq!(got.line, serde_json::to_string(&r).unwrap());
        assert!(holds_vip(&got.report));
        assert_eq!(got.lines, 2);
        assert!(!healthy_voter_of(&got.report, 3));
    }
}
