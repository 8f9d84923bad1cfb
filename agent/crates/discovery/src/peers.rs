//! The table of peers heard recently (pure: takes `now`).

use std::collections::BTreeMap;
use std::net::SocketAddr;

use cluster_config::Role;

use crate::message::{Announcement, NodeId};
use crate::rate::peer_ttl;

/// A peer and when it was heard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// Its latest announcement.
    pub announcement: Announcement,
    /// Where its latest message came from, if known.
    pub from: Option<SocketAddr>,
    /// When it was first heard (ms).
    pub first_seen_ms: u64,
    /// When it was last heard (ms).
    pub last_seen_ms: u64,
}

/// What [`PeerTable::observe`] learnt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observed {
    /// A node not in the table (never seen, or expired).
    New,
    /// A known node whose announcement changed.
    Changed,
    /// A known node saying the same thing.
    Refreshed,
}

/// Peers keyed by node id; an entry expires when unheard for its
/// [`peer_ttl`] (which depends on the peer's own role and phase).
#[derive(Debug, Clone)]
pub struct PeerTable {
    base_ms: u64,
    peers: BTreeMap<NodeId, Peer>,
}

impl PeerTable {
    /// An empty table for a cluster announcing every `base_ms`.
    pub fn new(base_ms: u64) -> Self {
        PeerTable {
            base_ms,
            peers: BTreeMap::new(),
        }
    }

    /// Records an announcement heard at `now_ms`.
    pub fn observe(&mut self, ann: Announcement, now_ms: u64) -> Observed {
        self.observe_from(ann, None, now_ms)
    }

    /// Records an announcement heard at `now_ms` from `from`.
    pub fn observe_from(
        &mut self,
        ann: Announcement,
        from: Option<SocketAddr>,
        now_ms: u64,
    ) -> Observed {
        match self.peers.get_mut(&ann.node_id) {
            Some(peer) => {
                let changed = peer.announcement != ann;
                peer.announcement = ann;
                peer.from = from.or(peer.from);
                peer.last_seen_ms = peer.last_seen_ms.max(now_ms);
                if changed {
                    Observed::Changed
                } else {
                    Observed::Refreshed
                }
            }
            None => {
                self.peers.insert(
                    ann.node_id,
                    Peer {
                        announcement: ann,
                        from,
                        first_seen_ms: now_ms,
                        last_seen_ms: now_ms,
                    },
                );
                Observed::New
            }
        }
    }

    /// Drops peers unheard for longer than their ttl; returns their ids.
    pub fn expire(&mut self, now_ms: u64) -> Vec<NodeId> {
        let base = self.base_ms;
        let mut gone = Vec::new();
        self.peers.retain(|id, p| {
            let ttl = peer_ttl(p.announcement.role, p.announcement.phase, base).as_millis() as u64;
            let keep = now_ms.saturating_sub(p.last_seen_ms) <= ttl;
            if !keep {
                gone.push(*id);
            }
            keep
        });
        gone
    }

    /// Every peer, in node id order.
    pub fn peers(&self) -> impl Iterator<Item = &Peer> {
        self.peers.values()
    }

    /// The master peers, in node id order.
    pub fn masters(&self) -> impl Iterator<Item = &Peer> {
        self.peers
            .values()
            .filter(|p| p.announcement.role == Role::Master)
    }

    /// One peer by id.
    pub fn get(&self, id: &NodeId) -> Option<&Peer> {
        self.peers.get(id)
    }

    /// Number of peers.
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// True when no peer is known.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    /// A copy for publishing.
    pub fn snapshot(&self, now_ms: u64) -> PeerSnapshot {
        PeerSnapshot {
            peers: self.peers.values().cloned().collect(),
            at_ms: now_ms,
        }
    }
}

/// What the runner publishes: the peers at one moment, in node id order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerSnapshot {
    /// The peers.
    pub peers: Vec<Peer>,
    /// When the snapshot was taken (ms since the epoch).
    pub at_ms: u64,
}

impl PeerSnapshot {
    /// The master peers, in node id order.
    pub fn masters(&self) -> impl Iterator<Item = &Peer> {
        self.peers
            .iter()
            .filter(|p| p.announcement.role == Role::Master)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Phase;

    fn ann(id: u8, role: Role, phase: Phase) -> Announcement {
        Announcement {
            node_id: NodeId([id; 16]),
            role,
            name: format!("n{id}"),
            addresses: vec![],
            phase,
            etcd: None,
            proposal: vec![],
            kube: None,
            kube_join: None,
            epoch: None,
            restore: None,
        }
    }

    #[test]
    fn observe_new_changed_refreshed() {
        let mut t = PeerTable::new(1000);
        assert_eq!(
            t.observe(ann(1, Role::Master, Phase::Discovering), 0),
            Observed::New
        );
        assert_eq!(
            t.observe(ann(1, Role::Master, Phase::Discovering), 10),
            Observed::Refreshed
        );
        assert_eq!(
            t.observe(ann(1, Role::Master, Phase::Bootstrapping), 20),
            Observed::Changed
        );
        let p = t.get(&NodeId([1; 16])).unwrap();
        assert_eq!((p.first_seen_ms, p.last_seen_ms), (0, 20));
        assert_eq!(p.announcement.phase, Phase::Bootstrapping);
    }

    #[test]
    fn expiry_follows_the_peers_own_rate() {
        let mut t = PeerTable::new(1000);
        t.observe(ann(1, Role::Master, Phase::Discovering), 0); // ttl 4.75 s
        t.observe(ann(2, Role::Master, Phase::Ready), 0); // ttl 19.75 s
        t.observe(ann(3, Role::Worker, Phase::Ready), 0); // ttl 338.5 s
        assert!(t.expire(4_750).is_empty());
        assert_eq!(t.expire(4_751), vec![NodeId([1; 16])]);
        assert_eq!(t.expire(19_751), vec![NodeId([2; 16])]);
        assert_eq!(t.masters().count(), 0);
        assert_eq!(t.len(), 1);
        assert!(t.expire(338_500).is_empty());
        assert_eq!(t.expire(338_501), vec![NodeId([3; 16])]);
        // A node heard again after expiring is new again.
        assert_eq!(
            t.observe(ann(1, Role::Master, Phase::Discovering), 300_000),
            Observed::New
        );
    }

    #[test]
    fn masters_in_id_order() {
        let mut t = PeerTable::new(1000);
        for id in [9, 3, 5] {
            t.observe(ann(id, Role::Master, Phase::Discovering), 0);
        }
        t.observe(ann(4, Role::Worker, Phase::Discovering), 0);
        let ids: Vec<u8> = t.masters().map(|p| p.announcement.node_id.0[0]).collect();
        assert_eq!(ids, vec![3, 5, 9]);
        assert_eq!(t.snapshot(1).masters().count(), 3);
    }
}
