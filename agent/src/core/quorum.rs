//! Quorum decisions (pure): when to bootstrap a new etcd cluster and with
//! which members, and which membership change a joiner makes.
//!
//! # Never two clusters
//!
//! A master bootstraps only when all of these hold ([`decide`]):
//!
//! 1. no authenticated peer shows evidence of a cluster (an etcd cluster id
//!    in its announcement, or a phase past the decision: bootstrapping,
//!    member, ready);
//! 2. it sees at least `masters` live masters, itself included;
//! 3. it is among the `masters` lowest node ids it sees (the proposal,
//!    announced in every message);
//! 4. every member of the proposal currently announces exactly the same
//!    proposal (heard within the agreement window), and the same snapshot
//!    to restore from, if any ([`decide_restoring`]: the SHA-256 of `[etcd]
//!    restore_from`; a mismatch only withholds the bootstrap, so the
//!    argument below is unchanged);
//! 5. its set of live masters has not changed for the settle time (3
//!    announce intervals), and it has been listening at least that long.
//!
//! Why two disjoint majorities cannot both form on a shared network: every
//! node announces on start and then every interval, so a node running for
//! the settle time has heard every master that was running before the
//! settle window began. Suppose group P bootstraps at time T and a
//! different group Q at T' ≥ T. A node of Q needed a stable view during
//! [T' − settle, T']: had it heard a member of P announce "bootstrapping"
//! (from T on) it would have refused (rule 1), so T' − T is under one
//! interval; then the Q node was already running at T − settle + interval,
//! so its announcements reached the P nodes inside their own settle windows,
//! changing their views (rule 5) or their proposals (rule 3) — P could not
//! have decided at T. Both groups agreeing on the same lowest ids (rule 4)
//! makes the proposal identical wherever the views are identical, so two
//! overlapping sets cannot differ either. The initial set is a function of
//! node ids only, never of clocks or chance.
//!
//! Residual risk: a network partitioned at first boot (or losing every
//! announcement for the whole settle time) where each side already holds
//! `masters` masters. The operator guard is the expected master count:
//! booting exactly `masters` masters for the first formation makes a second
//! majority impossible, since each side would need `masters` of them.

use std::collections::BTreeSet;

use super::epoch::Epoch;
use super::model::hex16;

/// A node id: 16 bytes, ordered bytewise (the same order as its hex form).
pub type Id = [u8; 16];

/// What the decision needs to know about one peer (from its latest
/// authenticated announcement).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerFacts {
    /// The peer's node id.
    pub id: Id,
    /// Its name (etcd member name).
    pub name: String,
    /// Its etcd peer URL (empty when it announced no address).
    pub peer_url: String,
    /// True for a master.
    pub master: bool,
    /// The peer reports an etcd cluster id, or a phase past the bootstrap
    /// decision (bootstrapping, etcd member, ready).
    pub has_cluster: bool,
    /// The peer has decided and is bootstrapping its `proposal` (its etcd
    /// has not answered yet).
    pub bootstrapping: bool,
    /// The etcd cluster id it reports, if any.
    pub cluster_id: Option<u64>,
    /// The peer has given up (failed state): not counted as live.
    pub failed: bool,
    /// The proposal it announces (empty when none).
    pub proposal: Vec<Id>,
    /// When its latest announcement arrived.
    pub last_seen_ms: u64,
    /// The recovery epoch it announces (0 when it announces none).
    pub epoch: Epoch,
    /// The SHA-256 of the snapshot it bootstraps from (`crate::restore`),
    /// if it announces one.
    pub restore: Option<String>,
}

/// Timing parameters of the decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// The view must be unchanged this long before bootstrapping.
    pub settle_ms: u64,
    /// Proposals heard longer ago than this do not count as agreement.
    pub agreement_ms: u64,
}

impl Timing {
    /// The documented policy: settle = 3 intervals, agreement = 3 intervals.
    pub fn from_interval(interval_ms: u64) -> Self {
        Self {
            settle_ms: 3 * interval_ms,
            agreement_ms: 3 * interval_ms,
        }
    }
}

/// The outcome of [`decide`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Keep discovering; `proposal` (maybe empty) is what to announce.
    Wait {
        /// Why, for the status.
        reason: String,
        /// The proposal to announce.
        proposal: Vec<Id>,
    },
    /// Bootstrap a new cluster with these members (sorted ids).
    Bootstrap {
        /// The initial member set.
        members: Vec<Id>,
    },
    /// A cluster exists: join it as a learner.
    Join {
        /// Why, for the status.
        reason: String,
    },
}

/// The live masters (self included): peers that are masters and not failed.
pub fn live_masters(own: Id, peers: &[PeerFacts]) -> BTreeSet<Id> {
    let mut set: BTreeSet<Id> = peers
        .iter()
        .filter(|p| p.master && !p.failed)
        .map(|p| p.id)
        .collect();
    set.insert(own);
    set
}

/// The proposal: the `expected` lowest ids of `live`, or empty when fewer
/// masters are live.
pub fn proposal(live: &BTreeSet<Id>, expected: usize) -> Vec<Id> {
    if live.len() < expected {
        return Vec::new();
    }
    live.iter().take(expected).copied().collect()
}

fn short(id: &Id) -> String {
    hex16(id)[..6].to_owned()
}

/// The bootstrap decision of a master that has no etcd data and no
/// persisted decision. `stable_since_ms` is when its live-master set last
/// changed (or when it started listening, if later).
/// `own_epoch` is this node's recovery epoch: a master announcing a
/// higher one has a cluster (a recovery made it), whatever else it says.
/// For a node given no snapshot to restore; see [`decide_restoring`].
pub fn decide(
    own: Id,
    own_epoch: Epoch,
    expected: usize,
    peers: &[PeerFacts],
    stable_since_ms: u64,
    now_ms: u64,
    timing: Timing,
) -> Decision {
    decide_restoring(
        own,
        own_epoch,
        None,
        expected,
        peers,
        stable_since_ms,
        now_ms,
        timing,
    )
}

/// [`decide`] for a node that bootstraps from the snapshot whose SHA-256
/// is `own_restore` (`None`: from nothing). The snapshot is part of the
/// proposal: a member of the set announcing another one (or none where
/// this node has one, or the reverse) does not agree, so nobody
/// bootstraps (rule 4), and a bootstrap in progress with another snapshot
/// is not followed. Every member of a new cluster thus starts from the
/// same data (see `crate::restore`).
#[allow(clippy::too_many_arguments)]
pub fn decide_restoring(
    own: Id,
    own_epoch: Epoch,
    own_restore: Option<&str>,
    expected: usize,
    peers: &[PeerFacts],
    stable_since_ms: u64,
    now_ms: u64,
    timing: Timing,
) -> Decision {
    if let Some(p) = peers.iter().find(|p| p.master && p.epoch > own_epoch) {
        return Decision::Join {
            reason: format!(
                "peer {} announces the higher recovery epoch {}",
                short(&p.id),
                p.epoch.text()
            ),
        };
    }
    let committed: Vec<&PeerFacts> = peers.iter().filter(|p| p.has_cluster).collect();
    if let Some(first) = committed.first() {
        // A bootstrap in progress that names this node, with no other
        // cluster in sight: follow it (same initial set, same token), or
        // its members would wait for this node forever.
        let set = &first.proposal;
        if set.contains(&own)
            && committed
                .iter()
                .all(|p| p.bootstrapping && p.cluster_id.is_none() && p.proposal == *set)
        {
            if let Some(p) = committed
                .iter()
                .find(|p| p.restore.as_deref() != own_restore)
            {
                // Following would start this member from other data.
                return Decision::Wait {
                    reason: snapshot_mismatch(p, own_restore),
                    proposal: Vec::new(),
                };
            }
            return Decision::Bootstrap {
                members: set.clone(),
            };
        }
        return Decision::Join {
            reason: format!("peer {} reports an existing cluster", short(&first.id)),
        };
    }
    let live = live_masters(own, peers);
    let prop = proposal(&live, expected);
    if prop.is_empty() {
        return Decision::Wait {
            reason: format!("seen {} of {expected} masters", live.len()),
            proposal: prop,
        };
    }
    if !prop.contains(&own) {
        return Decision::Wait {
            reason: "not in the initial member set: waiting for it to form, then joining"
                .to_owned(),
            proposal: prop,
        };
    }
    let horizon = now_ms.saturating_sub(timing.agreement_ms);
    if let Some(p) = peers
        .iter()
        .find(|p| prop.contains(&p.id) && p.proposal == prop && p.restore.as_deref() != own_restore)
    {
        return Decision::Wait {
            reason: snapshot_mismatch(p, own_restore),
            proposal: prop,
        };
    }
    let disagreeing: Vec<String> = prop
        .iter()
        .filter(|id| **id != own)
        .filter(|id| {
            !peers
                .iter()
                .any(|p| p.id == **id && p.proposal == prop && p.last_seen_ms >= horizon)
        })
        .map(short)
        .collect();
    if !disagreeing.is_empty() {
        return Decision::Wait {
            reason: format!(
                "waiting for {} to announce the same proposal",
                disagreeing.join(", ")
            ),
            proposal: prop,
        };
    }
    let stable_for = now_ms.saturating_sub(stable_since_ms);
    if stable_for < timing.settle_ms {
        return Decision::Wait {
            reason: format!(
                "settling: view stable for {stable_for} of {} ms",
                timing.settle_ms
            ),
            proposal: prop,
        };
    }
    Decision::Bootstrap { members: prop }
}

fn snapshot_mismatch(p: &PeerFacts, own: Option<&str>) -> String {
    let show = |s: Option<&str>| match s {
        Some(h) => format!("snapshot sha256 {}", &h[..h.len().min(12)]),
        None => "no snapshot".to_owned(),
    };
    format!(
        "SNAPSHOT MISMATCH: {} restores from {}, this node from {}: every initial member must be given the same snapshot (etcd.restore_from); not bootstrapping",
        short(&p.id),
        show(p.restore.as_deref()),
        show(own)
    )
}

/// A member of the existing cluster, as the joiner sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterMember {
    /// Member id.
    pub id: u64,
    /// Name (empty while not started).
    pub name: String,
    /// Peer URLs.
    pub peer_urls: Vec<String>,
    /// Learner.
    pub is_learner: bool,
}

/// One membership step of a joiner (one change at a time).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinStep {
    /// Remove this member first, then re-evaluate.
    Remove {
        /// The member to remove.
        id: u64,
        /// Why, for the journal.
        reason: String,
    },
    /// Add self as a learner.
    AddLearner,
    /// Already a member with this id (a previous add survived a restart).
    AlreadyMember {
        /// The member id.
        id: u64,
    },
    /// Nothing can be done now.
    Wait {
        /// Why.
        reason: String,
    },
}

/// Decides the joiner's next membership change.
///
/// * A member with the joiner's peer URL is its former self (a wiped disk)
///   or its own earlier, never-started add: remove it — unless it is the
///   unstarted learner this very node added (`own_added`), which is reused.
/// * Another learner that is not live blocks the single learner slot of
///   etcd 3.4: remove it. A live one: wait for it to be promoted.
/// * With at least `masters` members, a voting member whose peer URL no
///   live peer announces is dead once the joiner has watched for the grace
///   period (`watched_enough`): remove it (then this node takes its place).
/// * With at least `masters` members and none dead: **standby** (wait).
///   The voter count is exactly the configured `masters` (odd by
///   validation), never more: a sixth master booted beside a 3-voter
///   cluster would otherwise make it 4, 5, 6 voters, and an even count
///   tolerates no more failures than the odd count below it while needing
///   a larger majority. Masters beyond `masters` stay out of etcd (not even
///   learners: etcd 3.4 allows one, and a learner holds no vote) and
///   replace the first voter that stays unannounced for the grace period.
/// * Otherwise add self as a learner.
pub fn join_step(
    members: &[ClusterMember],
    own_peer_url: &str,
    own_added: Option<u64>,
    live_peer_urls: &BTreeSet<String>,
    masters: usize,
    watched_enough: bool,
) -> JoinStep {
    if let Some(m) = members
        .iter()
        .find(|m| m.peer_urls.iter().any(|u| u == own_peer_url))
    {
        if own_added == Some(m.id) && m.name.is_empty() {
            return JoinStep::AlreadyMember { id: m.id };
        }
        return JoinStep::Remove {
            id: m.id,
            reason: format!(
                "stale member {:x} ({}) holds this node's peer URL {own_peer_url}",
                m.id,
                if m.name.is_empty() {
                    "never started"
                } else {
                    &m.name
                }
            ),
        };
    }
    let is_live = |m: &ClusterMember| m.peer_urls.iter().any(|u| live_peer_urls.contains(u));
    if let Some(l) = members.iter().find(|m| m.is_learner) {
        if !is_live(l) && watched_enough {
            return JoinStep::Remove {
                id: l.id,
                reason: format!("learner {:x} is not announced by any live node", l.id),
            };
        }
        return JoinStep::Wait {
            reason: format!(
                "learner {:x} is still joining (etcd allows one learner)",
                l.id
            ),
        };
    }
    if members.len() >= masters {
        if watched_enough {
            if let Some(dead) = members.iter().find(|m| !is_live(m)) {
                return JoinStep::Remove {
                    id: dead.id,
                    reason: format!(
                        "member {:x} ({}) has not been announced for the grace period",
                        dead.id, dead.name
                    ),
                };
            }
        }
        return JoinStep::Wait {
            reason: standby_reason(members.len(), masters),
        };
    }
    JoinStep::AddLearner
}

/// The status of a master kept out of etcd by the voter policy (see
/// [`join_step`]); starts with `standby`.
pub fn standby_reason(voters: usize, masters: usize) -> String {
    format!(
        "standby: the cluster has {voters} voting members (masters = {masters}); \
         this master replaces the first one unannounced for the grace period"
    )
}

/// Whether a join outcome's reason is the standby of [`join_step`].
pub fn is_standby(reason: &str) -> bool {
    reason.starts_with("standby:")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> Id {
        let mut b = [0u8; 16];
        b[0] = n;
        b
    }

    fn peer(n: u8, proposal: &[u8], seen: u64) -> PeerFacts {
        PeerFacts {
            id: id(n),
            name: format!("m{n}"),
            peer_url: format!("https://10.0.0.{n}:2380"),
            master: true,
            has_cluster: false,
            bootstrapping: false,
            cluster_id: None,
            failed: false,
            proposal: proposal.iter().map(|n| id(*n)).collect(),
            last_seen_ms: seen,
            epoch: Default::default(),
            restore: None,
        }
    }

    const T: Timing = Timing {
        settle_ms: 600,
        agreement_ms: 600,
    };

    #[test]
    fn member_set_is_the_lowest_ids() {
        let live: BTreeSet<Id> = [5, 1, 9, 3].iter().map(|n| id(*n)).collect();
        assert_eq!(proposal(&live, 3), vec![id(1), id(3), id(5)]);
        assert!(proposal(&live, 5).is_empty());
        // Bytewise order is the hex order.
        let mut a = [0u8; 16];
        a[15] = 0xff;
        let mut b = [0u8; 16];
        b[0] = 1;
        assert!(a < b && hex16(&a) < hex16(&b));
    }

    #[test]
    fn bootstraps_when_all_agree_and_stable() {
        let peers = vec![peer(2, &[1, 2, 3], 1000), peer(3, &[1, 2, 3], 1000)];
        assert_eq!(
            decide(id(1), Epoch::default(), 3, &peers, 300, 1000, T),
            Decision::Bootstrap {
                members: vec![id(1), id(2), id(3)]
            }
        );
    }

    #[test]
    fn waits_while_settling_or_disagreeing_or_few() {
        let peers = vec![peer(2, &[1, 2, 3], 1000), peer(3, &[1, 2, 3], 1000)];
        assert!(matches!(
            decide(id(1), Epoch::default(), 3, &peers, 500, 1000, T),
            Decision::Wait { .. }
        ));
        let peers2 = vec![peer(2, &[1, 2, 3], 1000), peer(3, &[2, 3, 4], 1000)];
        match decide(id(1), Epoch::default(), 3, &peers2, 0, 1000, T) {
            Decision::Wait { reason, proposal } => {
                assert!(reason.contains("same proposal"), "{reason}");
                assert_eq!(proposal, vec![id(1), id(2), id(3)]);
            }
            d => panic!("{d:?}"),
        }
        // Agreement heard too long ago does not count.
        let old = vec![peer(2, &[1, 2, 3], 100), peer(3, &[1, 2, 3], 1000)];
        assert!(matches!(
            decide(id(1), Epoch::default(), 3, &old, 0, 1000, T),
            Decision::Wait { .. }
        ));
        let few = vec![peer(2, &[], 1000)];
        match decide(id(1), Epoch::default(), 3, &few, 0, 1000, T) {
            Decision::Wait { reason, proposal } => {
                assert!(reason.contains("2 of 3"), "{reason}");
                assert!(proposal.is_empty());
            }
            d => panic!("{d:?}"),
        }
    }

    #[test]
    fn a_snapshot_to_restore_is_part_of_the_agreement() {
        let sha = "ab".repeat(32);
        let other = "cd".repeat(32);
        let with = |n: u8, s: Option<&str>| PeerFacts {
            restore: s.map(str::to_owned),
            ..peer(n, &[1, 2, 3], 1000)
        };
        let d = |own: Option<&str>, peers: &[PeerFacts]| {
            decide_restoring(id(1), Epoch::default(), own, 3, peers, 300, 1000, T)
        };
        // The same snapshot everywhere: the bootstrap of `decide`.
        let same = [with(2, Some(&sha)), with(3, Some(&sha))];
        assert_eq!(
            d(Some(&sha), &same),
            Decision::Bootstrap {
                members: vec![id(1), id(2), id(3)]
            }
        );
        // Another snapshot, none where this node has one, one where this
        // node has none: nobody bootstraps, and the reason says why.
        for (own, peers) in [
            (
                Some(sha.as_str()),
                [with(2, Some(&sha)), with(3, Some(&other))],
            ),
            (Some(sha.as_str()), [with(2, Some(&sha)), with(3, None)]),
            (None, [with(2, None), with(3, Some(&sha))]),
        ] {
            match d(own, &peers) {
                Decision::Wait { reason, proposal } => {
                    assert!(reason.contains("SNAPSHOT MISMATCH"), "{reason}");
                    assert_eq!(proposal, vec![id(1), id(2), id(3)]);
                }
                other => panic!("{other:?}"),
            }
        }
        // A bootstrap in progress from another snapshot is not followed.
        let mut b = with(2, Some(&other));
        b.has_cluster = true;
        b.bootstrapping = true;
        match d(Some(&sha), &[b.clone()]) {
            Decision::Wait { reason, .. } => assert!(reason.contains("SNAPSHOT MISMATCH")),
            other => panic!("{other:?}"),
        }
        b.restore = Some(sha.clone());
        assert!(matches!(d(Some(&sha), &[b]), Decision::Bootstrap { .. }));
    }

    #[test]
    fn a_peer_with_a_cluster_means_join() {
        let mut p = peer(9, &[], 1000);
        p.has_cluster = true;
        let peers = vec![peer(2, &[1, 2, 3], 1000), peer(3, &[1, 2, 3], 1000), p];
        assert!(matches!(
            decide(id(1), Epoch::default(), 3, &peers, 0, 1000, T),
            Decision::Join { .. }
        ));
    }

    #[test]
    fn a_bootstrap_in_progress_naming_this_node_is_followed() {
        let mut b = peer(2, &[1, 2, 3], 1000);
        b.has_cluster = true;
        b.bootstrapping = true;
        // Even before this node's own view settled.
        assert_eq!(
            decide(id(1), Epoch::default(), 3, &[b.clone()], 999, 1000, T),
            Decision::Bootstrap {
                members: vec![id(1), id(2), id(3)]
            }
        );
        // Not named: join (wait for the cluster) instead.
        assert!(matches!(
            decide(id(4), Epoch::default(), 3, &[b.clone()], 0, 1000, T),
            Decision::Join { .. }
        ));
        // Another peer with a real cluster id: join, never bootstrap.
        let mut c = peer(5, &[], 1000);
        c.has_cluster = true;
        c.cluster_id = Some(9);
        assert!(matches!(
            decide(id(1), Epoch::default(), 3, &[b.clone(), c], 0, 1000, T),
            Decision::Join { .. }
        ));
        // Two bootstraps with different sets: join, never pick one.
        let mut d = peer(3, &[1, 3, 4], 1000);
        d.has_cluster = true;
        d.bootstrapping = true;
        assert!(matches!(
            decide(id(1), Epoch::default(), 3, &[b, d], 0, 1000, T),
            Decision::Join { .. }
        ));
    }

    #[test]
    fn not_in_proposal_waits_workers_and_failed_do_not_count() {
        let peers = vec![
            peer(1, &[1, 2, 3], 1000),
            peer(2, &[1, 2, 3], 1000),
            peer(3, &[1, 2, 3], 1000),
        ];
        match decide(id(4), Epoch::default(), 3, &peers, 0, 1000, T) {
            Decision::Wait { proposal, .. } => assert_eq!(proposal, vec![id(1), id(2), id(3)]),
            d => panic!("{d:?}"),
        }
        let mut w = peer(2, &[], 1000);
        w.master = false;
        let mut f = peer(3, &[], 1000);
        f.failed = true;
        assert_eq!(live_masters(id(1), &[w, f]).len(), 1);
    }

    fn m(id: u64, name: &str, ip: u8, learner: bool) -> ClusterMember {
        ClusterMember {
            id,
            name: name.into(),
            peer_urls: vec![format!("https://10.0.0.{ip}:2380")],
            is_learner: learner,
        }
    }

    fn live(ips: &[u8]) -> BTreeSet<String> {
        ips.iter()
            .map(|i| format!("https://10.0.0.{i}:2380"))
            .collect()
    }

    #[test]
    fn join_removes_stale_self_first() {
        let members = vec![
            m(1, "a", 1, false),
            m(2, "b", 2, false),
            m(3, "old-c", 3, false),
        ];
        let own = "https://10.0.0.3:2380";
        assert!(matches!(
            join_step(&members, own, None, &live(&[1, 2]), 3, false),
            JoinStep::Remove { id: 3, .. }
        ));
        // Our own unstarted add is reused, not removed.
        let members = vec![m(1, "a", 1, false), m(7, "", 3, true)];
        assert_eq!(
            join_step(&members, own, Some(7), &live(&[1]), 3, false),
            JoinStep::AlreadyMember { id: 7 }
        );
        assert!(matches!(
            join_step(&members, own, Some(6), &live(&[1]), 3, false),
            JoinStep::Remove { id: 7, .. }
        ));
    }

    #[test]
    fn join_waits_for_a_live_learner_and_removes_a_dead_one() {
        let members = vec![
            m(1, "a", 1, false),
            m(2, "b", 2, false),
            m(3, "c", 3, false),
            m(4, "", 4, true),
        ];
        let own = "https://10.0.0.5:2380";
        assert!(matches!(
            join_step(&members, own, None, &live(&[1, 2, 3, 4]), 3, true),
            JoinStep::Wait { .. }
        ));
        assert!(matches!(
            join_step(&members, own, None, &live(&[1, 2, 3]), 3, true),
            JoinStep::Remove { id: 4, .. }
        ));
        assert!(matches!(
            join_step(&members, own, None, &live(&[1, 2, 3]), 3, false),
            JoinStep::Wait { .. }
        ));
    }

    #[test]
    fn join_replaces_a_dead_member_only_after_grace_and_at_full_size() {
        let members = vec![
            m(1, "a", 1, false),
            m(2, "b", 2, false),
            m(3, "c", 3, false),
        ];
        let own = "https://10.0.0.5:2380";
        assert!(matches!(
            join_step(&members, own, None, &live(&[1, 2]), 3, true),
            JoinStep::Remove { id: 3, .. }
        ));
        // Not watched long enough yet: standby, never a fourth voter.
        assert!(matches!(
            join_step(&members, own, None, &live(&[1, 2]), 3, false),
            JoinStep::Wait { reason } if is_standby(&reason)
        ));
        // Below the expected size nothing is removed.
        assert_eq!(
            join_step(&members[..2], own, None, &live(&[1]), 3, true),
            JoinStep::AddLearner
        );
    }

    #[test]
    fn masters_beyond_the_configured_count_stay_standby() {
        // Six masters booted at once with masters = 3: the three outside
        // the initial set find a full, live cluster and wait.
        let three = vec![
            m(1, "a", 1, false),
            m(2, "b", 2, false),
            m(3, "c", 3, false),
        ];
        for (ip, watched) in [(4, false), (5, true), (6, true)] {
            let own = format!("https://10.0.0.{ip}:2380");
            let step = join_step(&three, &own, None, &live(&[1, 2, 3, 4, 5, 6]), 3, watched);
            let JoinStep::Wait { reason } = step else {
                panic!("master {ip} would join: {step:?}")
            };
            assert!(is_standby(&reason), "{reason}");
            assert!(
                reason.contains("3 voting members (masters = 3)"),
                "{reason}"
            );
        }
        // masters = 5: grows to five (one change at a time), never six.
        let mut five: Vec<ClusterMember> = (1..=4).map(|i| m(i, "x", i as u8, false)).collect();
        let own = "https://10.0.0.9:2380";
        let all = live(&[1, 2, 3, 4, 5, 9]);
        assert_eq!(
            join_step(&five, own, None, &all, 5, true),
            JoinStep::AddLearner
        );
        five.push(m(5, "e", 5, false));
        assert!(matches!(
            join_step(&five, own, None, &all, 5, true),
            JoinStep::Wait { reason } if is_standby(&reason)
        ));
        // A standby replaces a voter gone for the grace period.
        let gone = live(&[1, 2, 3, 4, 9]);
        assert!(matches!(
            join_step(&five, own, None, &gone, 5, true),
            JoinStep::Remove { id: 5, .. }
        ));
        assert_eq!(
            join_step(&five[..4], own, None, &gone, 5, true),
            JoinStep::AddLearner
        );
    }
}
