//! The agent's side of discovery: builds the source (multicast or static
//! peers) and the runner from the `discovery` crate, publishes this node's
//! announcement, and turns the peer snapshot into the plan's
//! [`PeerFacts`] and the status report's peers.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use anyhow::{Context, Result};
use cluster_config::{ClusterConfig, ClusterSecret, DiscoveryMode, Role};
use discovery::{
    Announcement, Discovery, DiscoveryHandle, DiscoveryKeys, DiscoveryOptions, EpochInfo, EtcdInfo,
    KubeJoinInfo, KubeState, MulticastOptions, MulticastSource, NodeId, Phase, StaticPeersSource,
};
use tokio::sync::watch;

use kubeadm::task::KubePeer;

use crate::core::epoch::Epoch;
use crate::core::model::{hex16, Membership};
use crate::core::plan::AgentPhase;
use crate::core::quorum::{Id, PeerFacts};
use crate::status::{ClockSkew, PeerStatus};

/// What this node announces beyond its fixed identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnState {
    /// The plan's phase.
    pub phase: AgentPhase,
    /// The proposal (empty unless assembling).
    pub proposal: Vec<Id>,
    /// etcd membership, once known.
    pub membership: Option<Membership>,
    /// The kube phase's state (see [`kubeadm::task::wire_state`]).
    pub kube: Option<KubeState>,
    /// Masters: the public join material (API endpoint, CA pin) workers
    /// take from authenticated announcements (see [`kubeadm::task::Kube::announced_join`]).
    pub kube_join: Option<KubeJoinInfo>,
    /// The recovery epoch of this node's etcd state (announced unless 0).
    pub epoch: Epoch,
}

/// Converts one peer's announcement into the plan's facts. A peer shows
/// evidence of a cluster when it reports an etcd cluster id or a phase past
/// the bootstrap decision. Pure.
pub fn facts(ann: &Announcement, last_seen_ms: u64, peer_port: u16) -> PeerFacts {
    PeerFacts {
        id: ann.node_id.0,
        name: ann.name.clone(),
        peer_url: ann
            .addresses
            .first()
            .map(|ip| crate::etcd::peer_url(*ip, peer_port))
            .unwrap_or_default(),
        master: ann.role == Role::Master,
        has_cluster: ann.etcd.is_some()
            || matches!(
                ann.phase,
                Phase::Bootstrapping | Phase::EtcdMember | Phase::Ready
            ),
        bootstrapping: ann.phase == Phase::Bootstrapping,
        cluster_id: ann.etcd.map(|e| e.cluster_id),
        failed: ann.phase == Phase::Failed && ann.etcd.is_none(),
        proposal: ann.proposal.iter().map(|n| n.0).collect(),
        last_seen_ms,
        epoch: ann
            .epoch
            .map(|e| Epoch {
                number: e.number,
                by: e.by.0,
            })
            .unwrap_or_default(),
        restore: ann.restore.clone(),
    }
}

/// A running discovery with this node's announcement.
pub struct Wire {
    own: watch::Sender<Announcement>,
    handle: DiscoveryHandle,
    peer_port: u16,
}

/// Starts discovery on `ip` (multicast on the interface, or the static peers).
/// `restore`: the SHA-256 of the snapshot this node bootstraps from
/// (`crate::restore`), announced unchanged for the agent's lifetime.
pub async fn start(
    cfg: &ClusterConfig,
    secret: &ClusterSecret,
    ip: Ipv4Addr,
    node_id: Id,
    name: &str,
    restore: Option<String>,
) -> Result<Wire> {
    let keys = DiscoveryKeys::derive(secret, &cfg.name);
    let (own, own_rx) = watch::channel(Announcement {
        node_id: NodeId(node_id),
        role: cfg.role,
        name: name.to_owned(),
        addresses: vec![ip],
        phase: Phase::Starting,
        etcd: None,
        proposal: Vec::new(),
        kube: None,
        kube_join: None,
        epoch: None,
        restore,
    });
    let mut options = DiscoveryOptions::new(cfg.discovery.interval_ms);
    let handle = match cfg.discovery.mode {
        DiscoveryMode::Multicast => {
            let source = MulticastSource::bind(&MulticastOptions {
                group: cfg.discovery.group,
                port: cfg.discovery.port,
                interface: ip,
                role: cfg.role,
                multicast_loop: false,
            })
            .context("binding the discovery multicast socket")?;
            Discovery::spawn(source, keys, own_rx, options)
        }
        DiscoveryMode::Static => {
            options.reply_to_known = true;
            let peers: Vec<SocketAddr> = cfg
                .discovery
                .peers
                .iter()
                .filter(|p| **p != IpAddr::V4(ip))
                .map(|p| SocketAddr::new(*p, cfg.discovery.port))
                .collect();
            let source =
                StaticPeersSource::bind(SocketAddr::new(IpAddr::V4(ip), cfg.discovery.port), peers)
                    .await
                    .context("binding the static-peers discovery socket")?;
            Discovery::spawn(source, keys, own_rx, options)
        }
    };
    Ok(Wire {
        own,
        handle,
        peer_port: cfg.etcd.peer_port,
    })
}

impl Wire {
    /// The live peers as plan facts, heard as of `now_ms`: the runner
    /// republishes its table only when a peer appears, changes or expires
    /// (unheard for 3 of its intervals), so an entry present with an
    /// unchanged announcement has been re-heard within that time.
    pub fn peers(&self, now_ms: u64) -> Vec<PeerFacts> {
        self.handle
            .peers
            .borrow()
            .peers
            .iter()
            .map(|p| facts(&p.announcement, now_ms, self.peer_port))
            .collect()
    }

    /// Resolves when the peer snapshot changed (never, if the runner ended).
    pub async fn changed(&mut self) {
        if self.handle.peers.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Updates this node's announcement (re-sent promptly when it changed).
    pub fn announce(&self, s: OwnState) {
        self.own.send_if_modified(|a| {
            let next_phase = s.phase;
            let next_proposal: Vec<NodeId> = s.proposal.iter().map(|i| NodeId(*i)).collect();
            let next_etcd = s.membership.map(|m| EtcdInfo {
                cluster_id: m.cluster_id,
                member_id: m.member_id,
            });
            let next_epoch = (s.epoch != Epoch::default()).then_some(EpochInfo {
                number: s.epoch.number,
                by: NodeId(s.epoch.by),
            });
            if a.phase == next_phase
                && a.proposal == next_proposal
                && a.etcd == next_etcd
                && a.kube == s.kube
                && a.kube_join == s.kube_join
                && a.epoch == next_epoch
            {
                return false;
            }
            a.epoch = next_epoch;
            a.phase = next_phase;
            a.proposal = next_proposal;
            a.etcd = next_etcd;
            a.kube = s.kube;
            a.kube_join = s.kube_join;
            true
        });
    }

    /// The live peers' kube phase announcements.
    pub fn kube_peers(&self) -> Vec<KubePeer> {
        self.handle
            .peers
            .borrow()
            .peers
            .iter()
            .map(|p| KubePeer {
                id: hex16(&p.announcement.node_id.0),
                master: p.announcement.role == Role::Master,
                addresses: p.announcement.addresses.clone(),
                kube: p.announcement.kube,
                join: p.announcement.kube_join.clone(),
            })
            .collect()
    }

    /// Accepted messages and rejections by reason.
    pub fn stats(&self) -> (u64, BTreeMap<String, u64>) {
        let s = *self.handle.stats.borrow();
        let r = s.rejected;
        let mut m = BTreeMap::new();
        for (k, v) in [
            ("malformed", r.malformed),
            ("unsupported-version", r.unsupported_version),
            ("bad-mac", r.bad_mac),
            ("stale", r.stale),
            ("future", r.future),
            ("replayed", r.replayed),
            ("too-many-senders", r.too_many_senders),
        ] {
            if v > 0 {
                m.insert(k.to_owned(), v);
            }
        }
        (s.accepted, m)
    }

    /// Peers whose clocks are off (see `discovery::skew`), for the status.
    pub fn clock_skew(&self) -> Vec<ClockSkew> {
        self.handle
            .skew
            .borrow()
            .iter()
            .map(|s| ClockSkew {
                id: hex16(&s.node_id.0),
                name: s.name.clone(),
                address: s.address.map(|a| a.to_string()),
                offset_ms: s.offset_ms,
                rejected: s.rejected,
            })
            .collect()
    }

    /// The peers for the status report.
    pub fn peer_reports(&self, now_ms: u64) -> Vec<PeerStatus> {
        self.handle
            .peers
            .borrow()
            .peers
            .iter()
            .map(|p| {
                let a = &p.announcement;
                PeerStatus {
                    id: hex16(&a.node_id.0),
                    name: a.name.clone(),
                    role: a.role.to_string(),
                    phase: serde_json::to_value(a.phase)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default(),
                    addresses: a.addresses.iter().map(|i| i.to_string()).collect(),
                    cluster_id: a.etcd.map(|e| format!("{:x}", e.cluster_id)),
                    kube: a.kube.and_then(|k| {
                        serde_json::to_value(k)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_owned))
                    }),
                    last_seen_ms_ago: now_ms.saturating_sub(p.last_seen_ms),
                    first_seen_ms_ago: now_ms.saturating_sub(p.first_seen_ms),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ann(phase: Phase, etcd: Option<EtcdInfo>) -> Announcement {
        Announcement {
            node_id: NodeId([7; 16]),
            role: Role::Master,
            name: "master-070707".into(),
            addresses: vec![Ipv4Addr::new(10, 0, 0, 7)],
            phase,
            etcd,
            proposal: vec![NodeId([1; 16])],
            kube: None,
            kube_join: None,
            epoch: None,
            restore: None,
        }
    }

    #[test]
    fn cluster_evidence_from_phase_or_etcd_info() {
        assert!(!facts(&ann(Phase::Discovering, None), 0, 2380).has_cluster);
        assert!(!facts(&ann(Phase::Joining, None), 0, 2380).has_cluster);
        for p in [Phase::Bootstrapping, Phase::EtcdMember, Phase::Ready] {
            assert!(facts(&ann(p, None), 0, 2380).has_cluster, "{p:?}");
        }
        let f = facts(
            &ann(
                Phase::Failed,
                Some(EtcdInfo {
                    cluster_id: 5,
                    member_id: 6,
                }),
            ),
            0,
            2380,
        );
        assert!(f.has_cluster && !f.failed);
        assert_eq!(f.cluster_id, Some(5));
        assert_eq!(f.peer_url, "https://10.0.0.7:2380");
        assert_eq!(f.proposal, vec![[1; 16]]);
        assert!(facts(&ann(Phase::Failed, None), 0, 2380).failed);
    }

    #[test]
    fn plan_phases_go_on_the_wire_by_their_status_names() {
        for p in [
            AgentPhase::Starting,
            AgentPhase::Discovering,
            AgentPhase::Bootstrapping,
            AgentPhase::Joining,
            AgentPhase::EtcdMember,
            AgentPhase::Ready,
            AgentPhase::Failed,
        ] {
            let w = serde_json::to_value(p).unwrap();
            assert_eq!(w.as_str().unwrap(), crate::run::phase_name(p));
        }
    }
}
