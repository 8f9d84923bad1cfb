//! Recovery epochs (pure): which etcd cluster a node belongs to after an
//! `agent recover`, and when a node must give up its own (issue 17).
//!
//! A cluster formed at first boot is epoch 0. `agent recover` on a
//! survivor rebuilds a one-member cluster (new cluster id) and moves that
//! node to epoch `n + 1`, recorded with the recovering node's id:
//! [`Epoch`] `(number, by)`, ordered lexicographically. The epoch is
//! persisted (`PersistedState::epoch`) and announced in authenticated
//! discovery.
//!
//! **The yield rule** ([`must_yield`]). A master whose epoch is lower than
//! the highest epoch it has seen (from any authenticated master, or
//! persisted earlier) yields: it persists that highest epoch *before*
//! acting, stops its VIP claim, stops etcd, keeps its member data aside
//! (`<state>/etcd.epoch-<n>.<unix time>`, never deleted), becomes a fresh
//! joiner of the higher epoch ([`fresh_joiner`]) and joins it as a learner
//! through the normal join path. Because the highest epoch seen is
//! persisted first, a node that has seen a higher epoch never starts its
//! old member again, whatever happens next (crash, reboot, the peer
//! vanishing).
//!
//! **Two recoveries.** Two survivors on both sides of a partition may both
//! run `agent recover` from epoch `n`: both become epoch `n + 1`, with
//! different ids. `(n + 1, a) < (n + 1, b)` when `a < b`, on every node,
//! so when the partition heals the lower one yields to the higher one:
//! exactly one wins everywhere. Writes accepted by the loser after its
//! recovery are lost (kept in its set-aside data dir): the confirmation
//! naming the node is the operator's guard against doing it twice.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

use super::model::{hex16, parse_hex16, PersistedState};
use super::quorum::{Id, PeerFacts};

/// A recovery epoch: its number and the node that recovered into it (all
/// zero for epoch 0), ordered lexicographically.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Epoch {
    /// 0 for the cluster formed at first boot, +1 per recovery.
    pub number: u32,
    /// The recovering node's id (zero for epoch 0).
    pub by: Id,
}

impl Ord for Epoch {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.number, self.by).cmp(&(other.number, other.by))
    }
}

impl PartialOrd for Epoch {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Epoch {
    /// The epoch a recovery by `node` starts from this one.
    pub fn next(self, node: Id) -> Epoch {
        Epoch {
            number: self.number.saturating_add(1),
            by: node,
        }
    }

    /// `3 (by 3f2a1c)`, or `0`.
    pub fn text(&self) -> String {
        if self.number == 0 && self.by == [0; 16] {
            "0".to_owned()
        } else {
            format!("{} (by {})", self.number, &hex16(&self.by)[..6])
        }
    }
}

/// The persisted and JSON form: `{"number": 1, "by": "<32 hex>"}`.
#[derive(Serialize, Deserialize)]
struct EpochWire {
    number: u32,
    by: String,
}

impl Serialize for Epoch {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        EpochWire {
            number: self.number,
            by: hex16(&self.by),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Epoch {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let w = EpochWire::deserialize(d)?;
        let by = parse_hex16(&w.by)
            .ok_or_else(|| serde::de::Error::custom("epoch `by`: expected 32 hex characters"))?;
        Ok(Epoch {
            number: w.number,
            by,
        })
    }
}

/// The highest epoch announced by an authenticated master, if any.
pub fn highest_announced(peers: &[PeerFacts]) -> Option<Epoch> {
    peers.iter().filter(|p| p.master).map(|p| p.epoch).max()
}

/// The epoch a master must yield to: the highest it has seen (announced
/// now, or persisted), when that is above the epoch of its own state.
/// `None`: it stays.
pub fn must_yield(state: &PersistedState, peers: &[PeerFacts]) -> Option<Epoch> {
    let seen = highest_announced(peers)
        .into_iter()
        .chain([state.highest_epoch])
        .max()
        .unwrap_or_default();
    (seen > state.epoch).then_some(seen)
}

/// The state of a fresh joiner of epoch `to`: no bootstrap decision, no
/// join, no membership, not bootstrapped; the epoch and the highest seen
/// set to `to`; the last recovery's facts kept. Pure.
pub fn fresh_joiner(state: &PersistedState, to: Epoch) -> PersistedState {
    PersistedState {
        epoch: to,
        highest_epoch: to,
        recovery: state.recovery.clone(),
        ..PersistedState::default()
    }
}

/// The name the etcd data directory is kept under when a node leaves
/// epoch `old` at `unix_s` (under the state directory). Pure.
pub fn set_aside_name(old: Epoch, unix_s: u64) -> String {
    format!("etcd.epoch-{}.{unix_s}", old.number)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::model::Membership;

    fn id(n: u8) -> Id {
        let mut b = [0u8; 16];
        b[0] = n;
        b
    }

    fn master(n: u8, epoch: Epoch) -> PeerFacts {
        PeerFacts {
            id: id(n),
            name: format!("m{n}"),
            peer_url: format!("https://10.0.0.{n}:2380"),
            master: true,
            has_cluster: true,
            bootstrapping: false,
            cluster_id: Some(u64::from(n)),
            failed: false,
            proposal: vec![],
            last_seen_ms: 0,
            epoch,
            restore: None,
        }
    }

    fn member_of(epoch: Epoch) -> PersistedState {
        PersistedState {
            membership: Some(Membership {
                cluster_id: 7,
                member_id: 9,
            }),
            bootstrapped: true,
            epoch,
            highest_epoch: epoch,
            ..Default::default()
        }
    }

    #[test]
    fn epochs_order_by_number_then_recovering_node() {
        let e0 = Epoch::default();
        let a = e0.next(id(1));
        let b = e0.next(id(2));
        assert!(e0 < a && a < b);
        assert!(b < a.next(id(1)));
        assert_eq!(a.number, 1);
        assert_eq!(e0.text(), "0");
        assert_eq!(a.text(), "1 (by 010000)");
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(serde_json::from_str::<Epoch>(&json).unwrap(), a);
        assert!(serde_json::from_str::<Epoch>(r#"{"number":1,"by":"xx"}"#).is_err());
    }

    #[test]
    fn an_older_epoch_yields_and_the_same_or_a_lower_one_stays() {
        let e0 = Epoch::default();
        let e1 = e0.next(id(3));
        let old = member_of(e0);
        assert_eq!(must_yield(&old, &[master(3, e1)]), Some(e1));
        assert_eq!(must_yield(&old, &[master(2, e0)]), None);
        // The recovered node does not yield to the old members it sees.
        assert_eq!(must_yield(&member_of(e1), &[master(2, e0)]), None);
        // Workers' announcements do not count (they hold no etcd).
        let mut w = master(5, e1.next(id(5)));
        w.master = false;
        assert_eq!(must_yield(&member_of(e1), &[w]), None);
        // The fresh joiner of e1: no trace of the old membership.
        let fresh = fresh_joiner(&old, e1);
        assert_eq!(fresh.epoch, e1);
        assert_eq!(fresh.highest_epoch, e1);
        assert!(fresh.membership.is_none() && !fresh.bootstrapped);
        assert!(fresh.bootstrap.is_none() && fresh.join.is_none());
        assert_eq!(must_yield(&fresh, &[master(3, e1)]), None);
        assert_eq!(set_aside_name(e0, 1700000000), "etcd.epoch-0.1700000000");
    }

    #[test]
    fn concurrent_recoveries_of_the_same_number_have_exactly_one_winner() {
        // Two survivors recovered from epoch 0 on both sides of a
        // partition; once it heals, every node (both, an old member, a
        // fresh one) ends in the same epoch.
        let e0 = Epoch::default();
        let (a, b) = (e0.next(id(1)), e0.next(id(2)));
        let views = [master(1, a), master(2, b), master(3, e0)];
        let winner = views.iter().map(|p| p.epoch).max().unwrap();
        assert_eq!(winner, b);
        let mut ends = Vec::new();
        for own in [
            member_of(a),
            member_of(b),
            member_of(e0),
            PersistedState::default(),
        ] {
            let end = match must_yield(&own, &views) {
                Some(to) => fresh_joiner(&own, to).epoch,
                None => own.epoch,
            };
            ends.push(end);
        }
        assert_eq!(ends, vec![b, b, b, b]);
        // The winner never yields to the loser, whatever the order heard.
        assert_eq!(must_yield(&member_of(b), &[master(1, a)]), None);
        assert_eq!(must_yield(&member_of(a), &[master(2, b)]), Some(b));
    }

    #[test]
    fn a_node_that_saw_a_higher_epoch_never_restarts_its_old_data() {
        // Persisted first: the higher epoch seen, before anything else.
        let e0 = Epoch::default();
        let e1 = e0.next(id(3));
        let mut st = member_of(e0);
        st.highest_epoch = e1;
        // Nobody announces anything any more (the peer vanished, a
        // reboot): the persisted highest epoch still says yield.
        assert_eq!(must_yield(&st, &[]), Some(e1));
        // Even old peers of its own epoch do not change that.
        assert_eq!(must_yield(&st, &[master(2, e0)]), Some(e1));
    }

    #[test]
    fn a_node_without_data_simply_joins_the_higher_epoch() {
        let e1 = Epoch::default().next(id(3));
        let blank = PersistedState::default();
        let to = must_yield(&blank, &[master(3, e1)]).unwrap();
        let fresh = fresh_joiner(&blank, to);
        assert_eq!(fresh.epoch, e1);
        assert_eq!(
            fresh,
            PersistedState {
                epoch: e1,
                highest_epoch: e1,
                ..Default::default()
            }
        );
    }
}
