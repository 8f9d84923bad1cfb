//! The agent's state machine (pure): `step(plan, event, now) -> actions`.
//!
//! The I/O shell ([`crate::run`]) feeds observations in as [`Event`]s
//! (discovery snapshots, etcd health, results of joins and promotions) and
//! carries out the returned [`Action`]s, feeding their results back. Every
//! step re-derives what to do from the persisted state, so a restart at any
//! point resumes: the persisted bootstrap decision is reused, a data
//! directory means "restart etcd with it", a recorded learner add is reused.
//!
//! Transitions (→ = on the event named):
//!
//! ```text
//! Starting ─Start─▶ EtcdMember        (etcd data exists: restart with it)
//!          ─Start─▶ Bootstrapping     (decision persisted, no data yet)
//!          ─Start─▶ Joining           (a join recorded, or bootstrapped before but data lost)
//!          ─Start─▶ Discovering       (fresh)
//! Discovering ─Peers─▶ Bootstrapping  (decide() = Bootstrap: persist decision, start etcd new)
//!             ─Peers─▶ Joining        (decide() = Join: a peer reports a cluster)
//! Joining ─Joined─▶ EtcdMember        (persist the join, start etcd existing)
//!         ─JoinFailed─▶ Joining       (retry after a backoff)
//! Bootstrapping/EtcdMember ─EtcdStatus(voter)─▶ Ready (persist membership; start the VIP)
//! EtcdMember ─EtcdStatus(learner)─▶ EtcdMember (promote)
//! EtcdMember/Ready ─Peers(other cluster id)─▶ Failed(conflict) (changes nothing)
//! Starting ─Start(data)─▶ EtcdMember   (listens one settle time, then restarts etcd)
//! any master phase ─Peers(higher epoch)─▶ Discovering → Joining
//!                                     (persist the epoch seen, yield: VIP and etcd
//!                                      stop, data kept aside; a fresh joiner)
//! any master phase ─Recovered─▶ EtcdMember (`agent recover`: one-member cluster
//!                                      of the next epoch, etcd restarted on it)
//! ```
//!
//! Events that do not belong to the current phase leave the plan unchanged
//! and return no action ([`Outcome::Ignored`]).

use std::collections::BTreeSet;

use serde::Serialize;

use super::epoch::{self, Epoch};
use super::model::{
    cluster_token, hex16, parse_hex16, BootstrapDecision, ClusterState, InitialMember, JoinRecord,
    Membership, PersistedState, RecoveryStage,
};
use super::quorum::{self, Decision, Id, PeerFacts, Timing};

/// The agent's phase: the one phase type, which discovery also carries
/// in every announcement (its JSON, kebab-case, is the wire form). It
/// lives in `discovery`'s pure `message` module, so the core still
/// imports nothing that does I/O. `Failed` is a cluster conflict here: an
/// invalid configuration never reaches the plan (`startup::wait_for_config`
/// reports it and waits for a reload before a plan exists).
pub use discovery::message::Phase as AgentPhase;

/// Why the plan is failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailureKind {
    /// A peer belongs to a different etcd cluster (needs an operator).
    Conflict,
}

/// Inputs of the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Configuration and identity are loaded.
    Start {
        /// etcd's `member/` directory exists.
        has_etcd_data: bool,
    },
    /// A discovery snapshot (sent on every change and every interval).
    Peers {
        /// Authenticated, live peers.
        peers: Vec<PeerFacts>,
    },
    /// This node was added as a learner.
    Joined {
        /// Its member id.
        member_id: u64,
        /// `--initial-cluster` to start etcd with.
        initial_cluster: String,
    },
    /// A join attempt failed (or had to wait).
    JoinFailed {
        /// Why.
        reason: String,
    },
    /// The local etcd answered.
    EtcdStatus {
        /// Cluster id.
        cluster_id: u64,
        /// Own member id.
        member_id: u64,
        /// Still a learner.
        is_learner: bool,
    },
    /// The local etcd did not answer.
    EtcdUnhealthy {
        /// Why.
        reason: String,
    },
    /// The promotion succeeded.
    Promoted,
    /// A promotion attempt failed (usually: not caught up yet).
    PromoteFailed {
        /// Why.
        reason: String,
    },
    /// `agent recover` restored this node's data as a one-member cluster
    /// of the next epoch (etcd stopped, the restored data in place, this
    /// state persisted by the recovery): restart etcd on it.
    Recovered {
        /// The persisted state after the recovery.
        state: PersistedState,
    },
}

/// What the shell must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Write the persisted state (atomically) before anything else.
    Persist(PersistedState),
    /// Start (or restart with a changed command line) etcd.
    StartEtcd(ClusterState),
    /// Run one join attempt (membership lock, stale removal, learner add).
    Join {
        /// The learner id this node added before, if any (reused).
        own_added: Option<u64>,
    },
    /// Try to promote this learner.
    Promote {
        /// Own member id.
        member_id: u64,
    },
    /// The local member is a healthy voter: start the VIP runner here.
    StartVip,
    /// A higher recovery epoch was seen (and persisted, in the action
    /// before): stop the VIP claim and etcd at once and keep the etcd data
    /// directory aside (renamed, never deleted), if there is one.
    Yield {
        /// The epoch of the data set aside.
        from: Epoch,
        /// The epoch yielded to.
        to: Epoch,
    },
}

/// Whether the event applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The event was handled (maybe with no action).
    Applied(Vec<Action>),
    /// The event does not belong to this phase; nothing changed.
    Ignored {
        /// The phase it arrived in.
        phase: AgentPhase,
    },
}

impl Outcome {
    /// The actions (none when ignored).
    pub fn actions(self) -> Vec<Action> {
        match self {
            Outcome::Applied(a) => a,
            Outcome::Ignored { .. } => Vec::new(),
        }
    }
}

/// Fixed facts about this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeFacts {
    /// Node id.
    pub id: Id,
    /// Node (and etcd member) name.
    pub name: String,
    /// True for a master (workers run no etcd).
    pub master: bool,
    /// Own etcd peer URL.
    pub peer_url: String,
    /// Expected number of masters.
    pub expected_masters: usize,
    /// Cluster name (for the token).
    pub cluster_name: String,
    /// Decision timing.
    pub timing: Timing,
    /// Delay between join attempts.
    pub join_backoff_ms: u64,
    /// The SHA-256 of the snapshot this node bootstraps from, if any
    /// (`crate::restore`): the initial set must agree on it.
    pub restore: Option<String>,
}

/// The plan's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// This node.
    pub node: NodeFacts,
    /// Current phase.
    pub phase: AgentPhase,
    /// Set in [`AgentPhase::Failed`].
    pub failure: Option<FailureKind>,
    /// Human-readable detail of the phase (the status line).
    pub detail: String,
    /// The persisted state as last written.
    pub persisted: PersistedState,
    /// When discovery began (for the settle time).
    pub listening_since_ms: u64,
    /// Live masters last seen, and when that set last changed.
    pub live: BTreeSet<Id>,
    /// When `live` last changed.
    pub live_changed_ms: u64,
    /// The proposal currently announced.
    pub proposal: Vec<Id>,
    /// A join attempt is running.
    pub join_in_flight: bool,
    /// Why the last join attempt did not add this node (standby, or an
    /// error), shown while it keeps joining.
    pub join_wait: Option<String>,
    /// No join attempt before this time.
    pub next_join_ms: u64,
    /// A promotion attempt is running.
    pub promote_in_flight: bool,
    /// The local member is a learner (last status).
    pub is_learner: bool,
    /// The VIP runner was started.
    pub vip_started: bool,
    /// A master with etcd data listens this long (until this time) for a
    /// higher recovery epoch before restarting etcd.
    pub restart_after_ms: Option<u64>,
    /// Join results still to come from attempts made before a yield:
    /// they concern the cluster left behind and are dropped.
    pub stale_join_results: u32,
}

impl Plan {
    /// A plan in `Starting` with the loaded persisted state.
    pub fn new(node: NodeFacts, persisted: PersistedState) -> Self {
        Self {
            node,
            phase: AgentPhase::Starting,
            failure: None,
            detail: "loading configuration".to_owned(),
            persisted,
            listening_since_ms: 0,
            live: BTreeSet::new(),
            live_changed_ms: 0,
            proposal: Vec::new(),
            join_in_flight: false,
            join_wait: None,
            next_join_ms: 0,
            promote_in_flight: false,
            is_learner: false,
            vip_started: false,
            restart_after_ms: None,
            stale_join_results: 0,
        }
    }

    /// The etcd membership to announce, once known.
    pub fn membership(&self) -> Option<Membership> {
        self.persisted.membership
    }

    /// The `--initial-cluster` for a restart with data.
    fn restart_initial_cluster(&self) -> String {
        if let Some(j) = &self.persisted.join {
            return j.initial_cluster.clone();
        }
        if let Some(b) = &self.persisted.bootstrap {
            return initial_cluster(&b.members);
        }
        format!("{}={}", self.node.name, self.node.peer_url)
    }

    fn fail(&mut self, kind: FailureKind, reason: String) {
        self.phase = AgentPhase::Failed;
        self.failure = Some(kind);
        self.detail = reason;
    }

    /// Applies one event at time `now_ms`.
    pub fn step(&mut self, event: Event, now_ms: u64) -> Outcome {
        use AgentPhase as P;
        let ignored = Outcome::Ignored { phase: self.phase };
        // Any master phase → yield, before anything else: a higher
        // recovery epoch wins over every other rule (issue 17).
        if let Event::Peers { peers } = &event {
            if self.node.master && self.phase != P::Starting {
                if let Some(to) = epoch::must_yield(&self.persisted, peers) {
                    return self.yield_to(to, peers, now_ms);
                }
            }
        }
        if matches!(event, Event::Joined { .. } | Event::JoinFailed { .. })
            && self.stale_join_results > 0
        {
            // An attempt made for the cluster left behind: dropped.
            self.stale_join_results -= 1;
            return Outcome::Applied(vec![]);
        }
        match (self.phase, event) {
            (_, Event::Recovered { state }) if self.node.master => self.recovered(state),
            (P::Starting, Event::Start { has_etcd_data }) => self.start(has_etcd_data, now_ms),
            (P::Discovering, Event::Peers { peers }) => self.discover(&peers, now_ms),
            // Joining → Discovering/Bootstrapping: a node that never was a
            // member re-decides while no attempt runs (the evidence it saw
            // may have been a bootstrap that names it, or may be gone).
            (P::Joining, Event::Peers { peers })
                if !self.join_in_flight
                    && !self.persisted.bootstrapped
                    && self.persisted.join.is_none() =>
            {
                self.discover(&peers, now_ms)
            }
            (P::Joining, Event::Peers { .. }) => Outcome::Applied(self.maybe_join(now_ms)),
            // Joining → EtcdMember: persist the add before etcd creates data.
            (
                P::Joining,
                Event::Joined {
                    member_id,
                    initial_cluster,
                },
            ) => {
                self.join_in_flight = false;
                self.join_wait = None;
                self.persisted.join = Some(JoinRecord {
                    member_id,
                    initial_cluster: initial_cluster.clone(),
                });
                self.phase = P::EtcdMember;
                self.is_learner = true;
                self.detail = format!("added as learner {member_id:x}; starting etcd");
                Outcome::Applied(vec![
                    Action::Persist(self.persisted.clone()),
                    Action::StartEtcd(ClusterState::Existing { initial_cluster }),
                ])
            }
            // Joining → Joining (retry later)
            (P::Joining, Event::JoinFailed { reason }) => {
                self.join_in_flight = false;
                self.join_wait = Some(reason.clone());
                self.next_join_ms = now_ms + self.node.join_backoff_ms;
                self.detail = format!("joining: {reason}");
                Outcome::Applied(vec![])
            }
            (
                P::Bootstrapping | P::EtcdMember | P::Ready,
                Event::EtcdStatus {
                    cluster_id,
                    member_id,
                    is_learner,
                },
            ) => Outcome::Applied(self.etcd_status(cluster_id, member_id, is_learner)),
            (
                P::Failed,
                Event::EtcdStatus {
                    cluster_id,
                    member_id,
                    ..
                },
            ) if self.failure == Some(FailureKind::Conflict) => {
                // Changes nothing: only keeps the membership shown current.
                let _ = (cluster_id, member_id);
                Outcome::Applied(vec![])
            }
            // Ready → EtcdMember while the local etcd does not answer.
            (P::Bootstrapping | P::EtcdMember | P::Ready, Event::EtcdUnhealthy { reason }) => {
                if self.phase == P::Ready {
                    self.phase = P::EtcdMember;
                }
                self.detail = format!("etcd not healthy yet: {reason}");
                Outcome::Applied(vec![])
            }
            (P::EtcdMember, Event::Promoted) => {
                self.promote_in_flight = false;
                self.detail = "promoted to voter".to_owned();
                Outcome::Applied(vec![])
            }
            (P::EtcdMember, Event::PromoteFailed { reason }) => {
                self.promote_in_flight = false;
                self.detail = format!("learner, promotion pending: {reason}");
                Outcome::Applied(vec![])
            }
            // EtcdMember/Ready → Failed(conflict)
            (P::EtcdMember | P::Ready, Event::Peers { peers }) => {
                // EtcdMember → EtcdMember: the settle time before a
                // restart with data is over (no higher epoch heard).
                if let Some(at) = self.restart_after_ms {
                    if now_ms < at {
                        return Outcome::Applied(vec![]);
                    }
                    self.restart_after_ms = None;
                    self.detail = "restarting etcd with its data".to_owned();
                    return Outcome::Applied(vec![Action::StartEtcd(ClusterState::Restart {
                        initial_cluster: self.restart_initial_cluster(),
                    })]);
                }
                // Members of older epochs are not a conflict: they yield
                // when they hear this node.
                if let (Some(own), Some(other)) = (
                    self.persisted.membership,
                    peers.iter().find(|p| {
                        p.epoch >= self.persisted.epoch
                            && p.cluster_id.is_some_and(|c| {
                                Some(c) != self.persisted.membership.map(|m| m.cluster_id)
                            })
                    }),
                ) {
                    let theirs = other.cluster_id.unwrap_or_default();
                    self.fail(
                        FailureKind::Conflict,
                        format!(
                            "CLUSTER CONFLICT: peer {} ({}) reports etcd cluster {theirs:x}, this node is in {:x}; \
                             nothing was changed, an operator must decide",
                            &hex16(&other.id)[..6],
                            other.name,
                            own.cluster_id
                        ),
                    );
                }
                Outcome::Applied(vec![])
            }
            (P::Bootstrapping | P::Failed, Event::Peers { .. }) => Outcome::Applied(vec![]),
            _ => ignored,
        }
    }

    /// Starting → the phase the persisted state and the disk call for.
    fn start(&mut self, has_etcd_data: bool, now_ms: u64) -> Outcome {
        self.listening_since_ms = now_ms;
        self.live_changed_ms = now_ms;
        if !self.node.master {
            self.phase = AgentPhase::Discovering;
            self.detail = "worker: announcing; waiting for the control plane".to_owned();
            return Outcome::Applied(vec![]);
        }
        // Starting → yield: a higher epoch seen before (persisted) means
        // the old member never runs again (a yield cut short by a crash
        // resumes here).
        if let Some(to) = epoch::must_yield(&self.persisted, &[]) {
            return self.yield_to(to, &[], now_ms);
        }
        if has_etcd_data {
            // Starting → EtcdMember: listen for one settle time first, so
            // that a higher recovery epoch is heard before the old member
            // runs (the loop's Peers events end the wait).
            self.phase = AgentPhase::EtcdMember;
            self.restart_after_ms = Some(now_ms + self.node.timing.settle_ms);
            self.detail = format!(
                "listening {} ms for a higher recovery epoch before restarting etcd with its data",
                self.node.timing.settle_ms
            );
            return Outcome::Applied(vec![]);
        }
        if self.persisted.bootstrapped || self.persisted.join.is_some() {
            // Data lost after being a member (or an add never started):
            // never bootstrap again; join as a replacement.
            self.phase = AgentPhase::Joining;
            self.detail = "rejoining the cluster".to_owned();
            return Outcome::Applied(self.maybe_join(now_ms));
        }
        if let Some(decision) = &self.persisted.bootstrap {
            self.phase = AgentPhase::Bootstrapping;
            self.detail = "resuming the persisted bootstrap decision".to_owned();
            self.proposal = decision
                .members
                .iter()
                .filter_map(|m| parse_hex16(&m.node_id))
                .collect();
            return Outcome::Applied(vec![Action::StartEtcd(ClusterState::New {
                initial_cluster: initial_cluster(&decision.members),
                token: decision.token.clone(),
            })]);
        }
        self.phase = AgentPhase::Discovering;
        self.detail = "discovering masters".to_owned();
        Outcome::Applied(vec![])
    }

    fn discover(&mut self, peers: &[PeerFacts], now_ms: u64) -> Outcome {
        if !self.node.master {
            self.detail = format!("worker: {} peers seen", peers.len());
            return Outcome::Applied(vec![]);
        }
        let live = quorum::live_masters(self.node.id, peers);
        if live != self.live {
            self.live = live;
            self.live_changed_ms = now_ms;
        }
        let stable_since = self.live_changed_ms.max(self.listening_since_ms);
        match quorum::decide_restoring(
            self.node.id,
            self.persisted.epoch,
            self.node.restore.as_deref(),
            self.node.expected_masters,
            peers,
            stable_since,
            now_ms,
            self.node.timing,
        ) {
            Decision::Wait { reason, proposal } => {
                self.phase = AgentPhase::Discovering;
                self.detail = reason;
                self.proposal = proposal;
                Outcome::Applied(vec![])
            }
            // Discovering → Joining
            Decision::Join { reason } => {
                self.phase = AgentPhase::Joining;
                self.proposal.clear();
                // Re-deciding while joining: the last attempt's outcome
                // (for example standby) says more than why it joins.
                self.detail = format!("joining: {}", self.join_wait.as_deref().unwrap_or(&reason));
                Outcome::Applied(self.maybe_join(now_ms))
            }
            // Discovering → Bootstrapping: persist BEFORE starting etcd.
            Decision::Bootstrap { members } => {
                let mut initial = Vec::new();
                for id in &members {
                    let (name, url) = if *id == self.node.id {
                        (self.node.name.clone(), self.node.peer_url.clone())
                    } else {
                        match peers.iter().find(|p| p.id == *id) {
                            Some(p) if !p.peer_url.is_empty() => {
                                (p.name.clone(), p.peer_url.clone())
                            }
                            _ => {
                                self.detail =
                                    format!("waiting for the address of {}", &hex16(id)[..6]);
                                return Outcome::Applied(vec![]);
                            }
                        }
                    };
                    initial.push(InitialMember {
                        node_id: hex16(id),
                        name,
                        peer_url: url,
                    });
                }
                let ids: Vec<String> = initial.iter().map(|m| m.node_id.clone()).collect();
                let token = cluster_token(&self.node.cluster_name, &ids);
                let decision = BootstrapDecision {
                    members: initial,
                    token: token.clone(),
                };
                let ic = initial_cluster(&decision.members);
                self.persisted.bootstrap = Some(decision);
                self.proposal = members;
                self.phase = AgentPhase::Bootstrapping;
                self.detail = format!("bootstrapping a new cluster: {ic}");
                Outcome::Applied(vec![
                    Action::Persist(self.persisted.clone()),
                    Action::StartEtcd(ClusterState::New {
                        initial_cluster: ic,
                        token,
                    }),
                ])
            }
        }
    }

    /// Any master phase → Discovering (→ Joining at once when the higher
    /// epoch's members are in sight): persist the highest epoch seen
    /// first, then yield (VIP and etcd stop, data set aside), then persist
    /// the fresh joiner's state, then the normal join path.
    fn yield_to(&mut self, to: Epoch, peers: &[PeerFacts], now_ms: u64) -> Outcome {
        let from = self.persisted.epoch;
        let mut seen = self.persisted.clone();
        seen.highest_epoch = to;
        let fresh = epoch::fresh_joiner(&self.persisted, to);
        self.persisted = fresh.clone();
        self.failure = None;
        self.restart_after_ms = None;
        self.vip_started = false;
        self.is_learner = false;
        self.promote_in_flight = false;
        self.join_wait = None;
        self.next_join_ms = 0;
        self.proposal.clear();
        if self.join_in_flight {
            self.stale_join_results += 1;
            self.join_in_flight = false;
        }
        self.phase = AgentPhase::Discovering;
        self.listening_since_ms = now_ms;
        self.live_changed_ms = now_ms;
        let mut actions = vec![
            Action::Persist(seen),
            Action::Yield { from, to },
            Action::Persist(fresh),
        ];
        actions.extend(self.discover(peers, now_ms).actions());
        if self.phase == AgentPhase::Discovering {
            self.detail = format!(
                "yielded to recovery epoch {} (this node's epoch-{} etcd data is kept aside); \
                 waiting for its members to join them",
                to.text(),
                from.number
            );
        }
        Outcome::Applied(actions)
    }

    /// any → EtcdMember after `agent recover`: the state the recovery
    /// persisted, etcd restarted on the restored data (one member).
    fn recovered(&mut self, state: PersistedState) -> Outcome {
        self.persisted = state;
        self.phase = AgentPhase::EtcdMember;
        self.failure = None;
        self.restart_after_ms = None;
        self.vip_started = false;
        self.is_learner = false;
        self.promote_in_flight = false;
        self.proposal.clear();
        if self.join_in_flight {
            self.stale_join_results += 1;
            self.join_in_flight = false;
        }
        self.detail = format!(
            "recovered into epoch {}: starting etcd as a one-member cluster",
            self.persisted.epoch.text()
        );
        Outcome::Applied(vec![Action::StartEtcd(ClusterState::Restart {
            initial_cluster: self.restart_initial_cluster(),
        })])
    }

    fn maybe_join(&mut self, now_ms: u64) -> Vec<Action> {
        if self.join_in_flight || now_ms < self.next_join_ms {
            return vec![];
        }
        self.join_in_flight = true;
        vec![Action::Join {
            own_added: self.persisted.join.as_ref().map(|j| j.member_id),
        }]
    }

    fn etcd_status(&mut self, cluster_id: u64, member_id: u64, is_learner: bool) -> Vec<Action> {
        let mut actions = Vec::new();
        self.is_learner = is_learner;
        if is_learner {
            // EtcdMember → EtcdMember (promote when caught up)
            self.phase = AgentPhase::EtcdMember;
            self.detail = format!("learner {member_id:x}: waiting to be promoted");
            if !self.promote_in_flight {
                self.promote_in_flight = true;
                actions.push(Action::Promote { member_id });
            }
            return actions;
        }
        let membership = Membership {
            cluster_id,
            member_id,
        };
        let recovery_done =
            self.persisted.recovery.as_ref().is_some_and(|r| {
                r.stage == RecoveryStage::Restored && r.epoch == self.persisted.epoch
            });
        if self.persisted.membership != Some(membership)
            || !self.persisted.bootstrapped
            || recovery_done
        {
            self.persisted.membership = Some(membership);
            self.persisted.bootstrapped = true;
            if let Some(r) = self.persisted.recovery.as_mut().filter(|_| recovery_done) {
                // The recovered cluster answered: its id is proven.
                r.new_cluster_id = Some(format!("{cluster_id:x}"));
                r.stage = RecoveryStage::Done;
            }
            actions.push(Action::Persist(self.persisted.clone()));
        }
        // Bootstrapping/EtcdMember → Ready
        self.phase = AgentPhase::Ready;
        self.proposal.clear();
        self.detail = format!("voting member {member_id:x} of cluster {cluster_id:x}");
        if !self.vip_started {
            self.vip_started = true;
            actions.push(Action::StartVip);
        }
        actions
    }
}

/// `name=peer_url,...` of a decided set.
pub fn initial_cluster(members: &[InitialMember]) -> String {
    members
        .iter()
        .map(|m| format!("{}={}", m.name, m.peer_url))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> Id {
        let mut b = [0u8; 16];
        b[0] = n;
        b
    }

    fn node(n: u8) -> NodeFacts {
        NodeFacts {
            id: id(n),
            name: format!("m{n}"),
            master: true,
            peer_url: format!("https://10.0.0.{n}:2380"),
            expected_masters: 3,
            cluster_name: "c".into(),
            timing: Timing {
                settle_ms: 600,
                agreement_ms: 600,
            },
            join_backoff_ms: 500,
            restore: None,
        }
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

    fn started(n: u8) -> Plan {
        let mut p = Plan::new(node(n), PersistedState::default());
        assert_eq!(
            p.step(
                Event::Start {
                    has_etcd_data: false
                },
                0
            ),
            Outcome::Applied(vec![])
        );
        assert_eq!(p.phase, AgentPhase::Discovering);
        p
    }

    #[test]
    fn fresh_masters_bootstrap_after_agreement_and_settle() {
        let mut p = started(1);
        let peers = vec![peer(2, &[1, 2, 3], 100), peer(3, &[1, 2, 3], 100)];
        // Not settled yet: only the proposal changes.
        assert_eq!(
            p.step(
                Event::Peers {
                    peers: peers.clone()
                },
                100
            ),
            Outcome::Applied(vec![])
        );
        assert_eq!(p.proposal, vec![id(1), id(2), id(3)]);
        let peers = vec![peer(2, &[1, 2, 3], 650), peer(3, &[1, 2, 3], 640)];
        assert_eq!(
            p.step(
                Event::Peers {
                    peers: peers.clone()
                },
                650
            ),
            Outcome::Applied(vec![])
        );
        assert!(p.detail.contains("settling"), "{}", p.detail);
        let actions = p.step(Event::Peers { peers }, 750).actions();
        assert_eq!(p.phase, AgentPhase::Bootstrapping);
        // Persist comes before the start, and the start says new.
        match (&actions[0], &actions[1]) {
            (
                Action::Persist(st),
                Action::StartEtcd(ClusterState::New {
                    initial_cluster,
                    token,
                }),
            ) => {
                let d = st.bootstrap.as_ref().unwrap();
                assert_eq!(d.members.len(), 3);
                assert_eq!(&d.token, token);
                assert_eq!(
                    initial_cluster,
                    "m1=https://10.0.0.1:2380,m2=https://10.0.0.2:2380,m3=https://10.0.0.3:2380"
                );
            }
            a => panic!("{a:?}"),
        }
    }

    #[test]
    fn a_standby_master_keeps_saying_so_while_it_retries() {
        let mut p = started(4);
        let mut member = peer(1, &[], 10);
        member.has_cluster = true;
        member.cluster_id = Some(42);
        let peers = vec![member];
        p.step(
            Event::Peers {
                peers: peers.clone(),
            },
            5000,
        );
        assert!(
            p.detail.contains("reports an existing cluster"),
            "{}",
            p.detail
        );
        let standby = quorum::standby_reason(3, 3);
        p.step(
            Event::JoinFailed {
                reason: standby.clone(),
            },
            5100,
        );
        // Discovery snapshots keep coming: the detail stays the standby.
        for now in [5200, 5300, 7000] {
            p.step(
                Event::Peers {
                    peers: peers.clone(),
                },
                now,
            );
            assert_eq!(p.phase, AgentPhase::Joining);
            assert_eq!(p.detail, format!("joining: {standby}"));
        }
        // Added at last: the standby note is gone.
        p.step(
            Event::Joined {
                member_id: 9,
                initial_cluster: "x=https://10.0.0.4:2380".into(),
            },
            8000,
        );
        assert_eq!(p.join_wait, None);
    }

    #[test]
    fn a_peer_reports_an_existing_cluster_so_join() {
        let mut p = started(1);
        let mut member = peer(7, &[], 10);
        member.has_cluster = true;
        member.cluster_id = Some(42);
        let peers = vec![peer(2, &[1, 2, 3], 10), peer(3, &[1, 2, 3], 10), member];
        let a = p
            .step(
                Event::Peers {
                    peers: peers.clone(),
                },
                5000,
            )
            .actions();
        assert_eq!(p.phase, AgentPhase::Joining);
        assert_eq!(a, vec![Action::Join { own_added: None }]);
        // No second attempt while one runs; after a failure, only after the backoff.
        assert_eq!(
            p.step(
                Event::Peers {
                    peers: peers.clone()
                },
                5001
            )
            .actions(),
            vec![]
        );
        p.step(Event::JoinFailed { reason: "x".into() }, 5100);
        assert_eq!(
            p.step(
                Event::Peers {
                    peers: peers.clone()
                },
                5200
            )
            .actions(),
            vec![]
        );
        assert_eq!(
            p.step(
                Event::Peers {
                    peers: peers.clone()
                },
                5600
            )
            .actions(),
            vec![Action::Join { own_added: None }]
        );
        let a = p
            .step(
                Event::Joined {
                    member_id: 9,
                    initial_cluster: "m7=u,m1=v".into(),
                },
                5700,
            )
            .actions();
        assert_eq!(p.phase, AgentPhase::EtcdMember);
        assert!(matches!(&a[0], Action::Persist(st) if st.join.as_ref().unwrap().member_id == 9));
        assert_eq!(
            a[1],
            Action::StartEtcd(ClusterState::Existing {
                initial_cluster: "m7=u,m1=v".into()
            })
        );
        // Learner → promote (once at a time) → voter → Ready + VIP.
        let a = p
            .step(
                Event::EtcdStatus {
                    cluster_id: 42,
                    member_id: 9,
                    is_learner: true,
                },
                6000,
            )
            .actions();
        assert_eq!(a, vec![Action::Promote { member_id: 9 }]);
        assert_eq!(
            p.step(
                Event::EtcdStatus {
                    cluster_id: 42,
                    member_id: 9,
                    is_learner: true
                },
                6100
            )
            .actions(),
            vec![]
        );
        p.step(
            Event::PromoteFailed {
                reason: "not caught up".into(),
            },
            6200,
        );
        assert_eq!(
            p.step(
                Event::EtcdStatus {
                    cluster_id: 42,
                    member_id: 9,
                    is_learner: true
                },
                6300
            )
            .actions(),
            vec![Action::Promote { member_id: 9 }]
        );
        p.step(Event::Promoted, 6400);
        let a = p
            .step(
                Event::EtcdStatus {
                    cluster_id: 42,
                    member_id: 9,
                    is_learner: false,
                },
                6500,
            )
            .actions();
        assert_eq!(p.phase, AgentPhase::Ready);
        assert!(
            matches!(&a[0], Action::Persist(st) if st.bootstrapped && st.membership == Some(Membership { cluster_id: 42, member_id: 9 }))
        );
        assert_eq!(a[1], Action::StartVip);
        // A second healthy status changes nothing.
        assert_eq!(
            p.step(
                Event::EtcdStatus {
                    cluster_id: 42,
                    member_id: 9,
                    is_learner: false
                },
                7000
            )
            .actions(),
            vec![]
        );
    }

    #[test]
    fn joining_re_decides_until_a_join_is_recorded() {
        let mut p = started(1);
        let mut b = peer(2, &[1, 2, 3], 10);
        b.has_cluster = true;
        p.step(
            Event::Peers {
                peers: vec![b.clone()],
            },
            100,
        );
        assert_eq!(p.phase, AgentPhase::Joining);
        p.step(
            Event::JoinFailed {
                reason: "no member client URL".into(),
            },
            200,
        );
        // The peer turns out to bootstrap a set naming this node: follow it.
        b.bootstrapping = true;
        let a = p
            .step(
                Event::Peers {
                    peers: vec![b.clone(), peer(3, &[1, 2, 3], 10)],
                },
                300,
            )
            .actions();
        assert_eq!(p.phase, AgentPhase::Bootstrapping);
        assert!(matches!(
            &a[..],
            [
                Action::Persist(_),
                Action::StartEtcd(ClusterState::New { .. })
            ]
        ));
        // Evidence gone before any join was recorded: back to discovering.
        let mut q = started(1);
        let mut c = peer(2, &[], 10);
        c.has_cluster = true;
        q.step(Event::Peers { peers: vec![c] }, 100);
        q.step(Event::JoinFailed { reason: "x".into() }, 200);
        q.step(Event::Peers { peers: vec![] }, 300);
        assert_eq!(q.phase, AgentPhase::Discovering);
    }

    #[test]
    fn restart_with_data_never_says_new() {
        let st = PersistedState {
            bootstrap: Some(BootstrapDecision {
                members: vec![InitialMember {
                    node_id: hex16(&id(1)),
                    name: "m1".into(),
                    peer_url: "u1".into(),
                }],
                token: "t".into(),
            }),
            bootstrapped: true,
            ..Default::default()
        };
        let mut p = Plan::new(node(1), st);
        let a = p
            .step(
                Event::Start {
                    has_etcd_data: true,
                },
                0,
            )
            .actions();
        // It listens for one settle time (600 ms here) first.
        assert_eq!(a, vec![]);
        assert_eq!(p.phase, AgentPhase::EtcdMember);
        assert!(p.detail.contains("listening 600 ms"), "{}", p.detail);
        assert_eq!(
            p.step(Event::Peers { peers: vec![] }, 599).actions(),
            vec![]
        );
        assert_eq!(
            p.step(Event::Peers { peers: vec![] }, 600).actions(),
            vec![Action::StartEtcd(ClusterState::Restart {
                initial_cluster: "m1=u1".into()
            })]
        );
        assert_eq!(p.phase, AgentPhase::EtcdMember);
    }

    #[test]
    fn persisted_decision_is_reused_not_redecided() {
        let mut p = started(1);
        let peers = vec![peer(2, &[1, 2, 3], 700), peer(3, &[1, 2, 3], 700)];
        p.step(
            Event::Peers {
                peers: peers.clone(),
            },
            100,
        );
        let a = p.step(Event::Peers { peers }, 700).actions();
        let Action::Persist(st) = &a[0] else {
            panic!("{a:?}")
        };
        // Killed after persisting: the restart resumes the same decision,
        // whatever the peers look like now.
        let mut again = Plan::new(node(1), st.clone());
        let b = again
            .step(
                Event::Start {
                    has_etcd_data: false,
                },
                0,
            )
            .actions();
        assert_eq!(again.phase, AgentPhase::Bootstrapping);
        assert_eq!(b, vec![a[1].clone()]);
    }

    #[test]
    fn bootstrapped_without_data_rejoins() {
        let st = PersistedState {
            bootstrapped: true,
            ..Default::default()
        };
        let mut p = Plan::new(node(1), st);
        assert_eq!(
            p.step(
                Event::Start {
                    has_etcd_data: false
                },
                0
            )
            .actions(),
            vec![Action::Join { own_added: None }]
        );
        assert_eq!(p.phase, AgentPhase::Joining);
        let st = PersistedState {
            join: Some(JoinRecord {
                member_id: 5,
                initial_cluster: "x".into(),
            }),
            ..Default::default()
        };
        let mut p = Plan::new(node(1), st);
        assert_eq!(
            p.step(
                Event::Start {
                    has_etcd_data: false
                },
                0
            )
            .actions(),
            vec![Action::Join { own_added: Some(5) }]
        );
    }

    #[test]
    fn conflict_fails_loudly_and_changes_nothing() {
        let mut p = started(1);
        p.step(
            Event::Peers {
                peers: vec![peer(2, &[1, 2, 3], 700), peer(3, &[1, 2, 3], 700)],
            },
            100,
        );
        p.step(
            Event::Peers {
                peers: vec![peer(2, &[1, 2, 3], 700), peer(3, &[1, 2, 3], 700)],
            },
            700,
        );
        assert_eq!(p.phase, AgentPhase::Bootstrapping);
        p.step(
            Event::EtcdStatus {
                cluster_id: 42,
                member_id: 1,
                is_learner: false,
            },
            800,
        );
        assert_eq!(p.phase, AgentPhase::Ready);
        let mut same = peer(2, &[], 900);
        same.cluster_id = Some(42);
        assert_eq!(
            p.step(
                Event::Peers {
                    peers: vec![same.clone()]
                },
                900
            )
            .actions(),
            vec![]
        );
        assert_eq!(p.phase, AgentPhase::Ready);
        let mut other = peer(9, &[], 900);
        other.cluster_id = Some(43);
        assert_eq!(
            p.step(
                Event::Peers {
                    peers: vec![same, other]
                },
                1000
            )
            .actions(),
            vec![]
        );
        assert_eq!(p.phase, AgentPhase::Failed);
        assert_eq!(p.failure, Some(FailureKind::Conflict));
        assert!(p.detail.contains("CONFLICT"), "{}", p.detail);
        // A config reload does not clear a conflict.
        assert!(matches!(
            p.step(
                Event::Start {
                    has_etcd_data: true
                },
                1100
            ),
            Outcome::Ignored { .. }
        ));
    }

    /// A voting member of cluster `cluster` in epoch `e`, in Ready.
    fn ready_member(n: u8, e: Epoch, cluster: u64) -> Plan {
        let st = PersistedState {
            membership: Some(Membership {
                cluster_id: cluster,
                member_id: u64::from(n),
            }),
            bootstrapped: true,
            epoch: e,
            highest_epoch: e,
            ..Default::default()
        };
        let mut p = Plan::new(node(n), st);
        p.step(
            Event::Start {
                has_etcd_data: true,
            },
            0,
        );
        p.step(Event::Peers { peers: vec![] }, 1000);
        p.step(
            Event::EtcdStatus {
                cluster_id: cluster,
                member_id: u64::from(n),
                is_learner: false,
            },
            1100,
        );
        assert_eq!(p.phase, AgentPhase::Ready);
        p
    }

    fn member_peer(n: u8, e: Epoch, cluster: u64) -> PeerFacts {
        let mut q = peer(n, &[], 2000);
        q.has_cluster = true;
        q.cluster_id = Some(cluster);
        q.epoch = e;
        q
    }

    fn starts_old_member(actions: &[Action]) -> bool {
        actions
            .iter()
            .any(|a| matches!(a, Action::StartEtcd(ClusterState::Restart { .. })))
    }

    #[test]
    fn an_older_epoch_yields_persisting_the_epoch_first_then_joins() {
        let e0 = Epoch::default();
        let e1 = e0.next(id(3));
        let mut p = ready_member(1, e0, 42);
        let a = p
            .step(
                Event::Peers {
                    peers: vec![member_peer(3, e1, 77)],
                },
                2000,
            )
            .actions();
        // Persist the epoch seen (old state otherwise untouched), then the
        // yield (VIP, etcd, data aside), then the fresh joiner, then join.
        match &a[..] {
            [Action::Persist(seen), Action::Yield { from, to }, Action::Persist(fresh), Action::Join { own_added: None }] =>
            {
                assert_eq!(seen.highest_epoch, e1);
                assert_eq!(seen.epoch, e0);
                assert!(seen.membership.is_some());
                assert_eq!((*from, *to), (e0, e1));
                assert_eq!(fresh, &epoch::fresh_joiner(seen, e1));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(p.phase, AgentPhase::Joining);
        assert!(!p.vip_started);
        // The new cluster is no conflict, and nothing yields twice.
        let a = p
            .step(
                Event::Peers {
                    peers: vec![member_peer(3, e1, 77)],
                },
                2100,
            )
            .actions();
        assert!(
            !a.iter().any(|a| matches!(a, Action::Yield { .. })),
            "{a:?}"
        );
        assert_ne!(p.phase, AgentPhase::Failed);
        // A join made before the yield reports late: dropped.
        let mut q = ready_member(2, e0, 42);
        q.phase = AgentPhase::Joining;
        q.join_in_flight = true;
        q.step(
            Event::Peers {
                peers: vec![member_peer(3, e1, 77)],
            },
            2000,
        );
        q.step(
            Event::Joined {
                member_id: 5,
                initial_cluster: "old".into(),
            },
            2050,
        );
        assert_eq!(q.persisted.join, None);
    }

    #[test]
    fn the_recovered_node_does_not_take_old_members_for_a_conflict() {
        let e1 = Epoch::default().next(id(1));
        let mut p = ready_member(1, e1, 77);
        let a = p
            .step(
                Event::Peers {
                    peers: vec![member_peer(2, Epoch::default(), 42)],
                },
                2000,
            )
            .actions();
        assert_eq!(a, vec![]);
        assert_eq!(p.phase, AgentPhase::Ready);
        // Same epoch, another cluster: still a conflict.
        p.step(
            Event::Peers {
                peers: vec![member_peer(2, e1, 42)],
            },
            2100,
        );
        assert_eq!(p.phase, AgentPhase::Failed);
    }

    #[test]
    fn concurrent_recoveries_leave_exactly_one_winner() {
        let e0 = Epoch::default();
        let (ea, eb) = (e0.next(id(1)), e0.next(id(2)));
        let mut a = ready_member(1, ea, 100);
        let mut b = ready_member(2, eb, 200);
        let acts_a = a
            .step(
                Event::Peers {
                    peers: vec![member_peer(2, eb, 200)],
                },
                2000,
            )
            .actions();
        let acts_b = b
            .step(
                Event::Peers {
                    peers: vec![member_peer(1, ea, 100)],
                },
                2000,
            )
            .actions();
        assert!(acts_a
            .iter()
            .any(|x| matches!(x, Action::Yield { to, .. } if *to == eb)));
        assert!(
            !acts_b.iter().any(|x| matches!(x, Action::Yield { .. })),
            "{acts_b:?}"
        );
        assert_eq!(a.persisted.epoch, eb);
        assert_eq!(b.persisted.epoch, eb);
        assert_eq!(b.phase, AgentPhase::Ready);
        // A third, old member hearing both ends in the same epoch.
        let mut c = ready_member(3, e0, 42);
        c.step(
            Event::Peers {
                peers: vec![member_peer(1, ea, 100), member_peer(2, eb, 200)],
            },
            2000,
        );
        assert_eq!(c.persisted.epoch, eb);
    }

    #[test]
    fn a_node_that_saw_a_higher_epoch_never_restarts_its_old_member() {
        let e0 = Epoch::default();
        let e1 = e0.next(id(3));
        // Crash after persisting the epoch seen, before the yield finished.
        let st = PersistedState {
            membership: Some(Membership {
                cluster_id: 42,
                member_id: 1,
            }),
            bootstrapped: true,
            highest_epoch: e1,
            ..Default::default()
        };
        let mut p = Plan::new(node(1), st);
        let a = p
            .step(
                Event::Start {
                    has_etcd_data: true,
                },
                0,
            )
            .actions();
        assert!(
            matches!(a[1], Action::Yield { from, to } if from == e0 && to == e1),
            "{a:?}"
        );
        assert!(!starts_old_member(&a), "{a:?}");
        // Nobody in sight for a long time: still never the old member.
        for t in [1000, 5000, 60_000] {
            let a = p.step(Event::Peers { peers: vec![] }, t).actions();
            assert!(
                !starts_old_member(&a) && !a.iter().any(|x| matches!(x, Action::StartEtcd(_))),
                "{a:?}"
            );
        }
        assert_eq!(p.phase, AgentPhase::Discovering);
        // A restart with data that hears a higher epoch inside its settle
        // time yields instead of restarting.
        let mut q = Plan::new(
            node(2),
            PersistedState {
                bootstrapped: true,
                ..Default::default()
            },
        );
        assert_eq!(
            q.step(
                Event::Start {
                    has_etcd_data: true
                },
                0
            )
            .actions(),
            vec![]
        );
        let a = q
            .step(
                Event::Peers {
                    peers: vec![member_peer(3, e1, 77)],
                },
                300,
            )
            .actions();
        assert!(a.iter().any(|x| matches!(x, Action::Yield { .. })), "{a:?}");
        assert!(!starts_old_member(&a));
        let a = q
            .step(
                Event::Peers {
                    peers: vec![member_peer(3, e1, 77)],
                },
                5000,
            )
            .actions();
        assert!(!starts_old_member(&a), "{a:?}");
    }

    #[test]
    fn a_master_or_worker_without_data_simply_joins() {
        let e1 = Epoch::default().next(id(3));
        let mut p = started(1);
        let a = p
            .step(
                Event::Peers {
                    peers: vec![member_peer(3, e1, 77)],
                },
                100,
            )
            .actions();
        // A fresh master takes the epoch (nothing to set aside) and joins.
        assert!(
            matches!(a.last(), Some(Action::Join { own_added: None })),
            "{a:?}"
        );
        assert_eq!(p.persisted.epoch, e1);
        assert_eq!(p.phase, AgentPhase::Joining);
        // decide(): a higher epoch is a cluster even without a cluster id.
        let mut yielded = member_peer(3, e1, 77);
        yielded.cluster_id = None;
        yielded.has_cluster = false;
        assert!(matches!(
            quorum::decide(
                id(1),
                Epoch::default(),
                3,
                &[yielded],
                0,
                10_000,
                node(1).timing
            ),
            Decision::Join { .. }
        ));
        // A worker runs no etcd plan: nothing to yield.
        let mut w = Plan::new(
            NodeFacts {
                master: false,
                ..node(5)
            },
            PersistedState::default(),
        );
        w.step(
            Event::Start {
                has_etcd_data: false,
            },
            0,
        );
        let a = w
            .step(
                Event::Peers {
                    peers: vec![member_peer(3, e1, 77)],
                },
                100,
            )
            .actions();
        assert_eq!(a, vec![]);
    }

    #[test]
    fn a_recovery_restarts_etcd_alone_and_records_the_new_cluster_id() {
        use crate::core::model::RecoveryRecord;
        let e1 = Epoch::default().next(id(1));
        let mut p = ready_member(1, Epoch::default(), 42);
        let state = PersistedState {
            bootstrapped: true,
            epoch: e1,
            highest_epoch: e1,
            recovery: Some(Box::new(RecoveryRecord {
                epoch: e1,
                node: "m1".into(),
                at_ms: 5,
                source: "member data".into(),
                snapshot: false,
                old_cluster_id: Some("2a".into()),
                new_cluster_id: None,
                token: "c-epoch1-x".into(),
                set_aside: None,
                stage: RecoveryStage::Restored,
            })),
            ..Default::default()
        };
        let a = p.step(Event::Recovered { state }, 3000).actions();
        assert_eq!(
            a,
            vec![Action::StartEtcd(ClusterState::Restart {
                initial_cluster: "m1=https://10.0.0.1:2380".into()
            })]
        );
        assert_eq!(p.phase, AgentPhase::EtcdMember);
        let a = p
            .step(
                Event::EtcdStatus {
                    cluster_id: 0x77,
                    member_id: 1,
                    is_learner: false,
                },
                3100,
            )
            .actions();
        let Action::Persist(st) = &a[0] else {
            panic!("{a:?}")
        };
        let r = st.recovery.as_ref().unwrap();
        assert_eq!(r.stage, RecoveryStage::Done);
        assert_eq!(r.new_cluster_id.as_deref(), Some("77"));
        assert_eq!(a[1], Action::StartVip);
    }

    #[test]
    fn wrong_phase_events_are_ignored() {
        let cases: Vec<(Plan, Event)> = vec![
            (
                Plan::new(node(1), PersistedState::default()),
                Event::Peers { peers: vec![] },
            ),
            (
                Plan::new(node(1), PersistedState::default()),
                Event::Promoted,
            ),
            (
                started(1),
                Event::Joined {
                    member_id: 1,
                    initial_cluster: "x".into(),
                },
            ),
            (
                started(1),
                Event::EtcdStatus {
                    cluster_id: 1,
                    member_id: 1,
                    is_learner: false,
                },
            ),
            (
                started(1),
                Event::Start {
                    has_etcd_data: false,
                },
            ),
            (started(1), Event::PromoteFailed { reason: "x".into() }),
        ];
        for (mut plan, event) in cases {
            let before = plan.clone();
            let out = plan.step(event.clone(), 1);
            assert!(
                matches!(out, Outcome::Ignored { .. }),
                "{event:?} in {:?} gave {out:?}",
                before.phase
            );
            assert_eq!(plan, before, "{event:?} changed the plan");
        }
    }

    #[test]
    fn workers_never_touch_etcd() {
        let mut n = node(1);
        n.master = false;
        let mut p = Plan::new(n, PersistedState::default());
        assert_eq!(
            p.step(
                Event::Start {
                    has_etcd_data: false
                },
                0
            )
            .actions(),
            vec![]
        );
        let mut member = peer(2, &[], 10);
        member.has_cluster = true;
        assert_eq!(
            p.step(
                Event::Peers {
                    peers: vec![member]
                },
                10_000
            )
            .actions(),
            vec![]
        );
        assert_eq!(p.phase, AgentPhase::Discovering);
    }
}

/// A simulation of masters booting on one shared network (pure: plans,
/// announcements and a fake clock), checking the bootstrap protocol over
/// many random schedules: never two different initial sets, and a cluster
/// always forms once enough masters run.
#[cfg(test)]
mod simulation {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    const B: u64 = 200; // announce interval (ms)

    #[derive(Clone)]
    struct Ann {
        phase: AgentPhase,
        proposal: Vec<Id>,
        cluster_id: Option<u64>,
    }

    struct Node {
        plan: Plan,
        start_ms: u64,
        next_announce_ms: u64,
        last: Option<Ann>,
        // What this node has heard: latest announcement per sender.
        heard: std::collections::BTreeMap<usize, Ann>,
        decided: Option<Vec<Id>>,
    }

    fn ann_of(p: &Plan) -> Ann {
        Ann {
            phase: p.phase,
            proposal: p.proposal.clone(),
            cluster_id: p.membership().map(|m| m.cluster_id),
        }
    }

    fn cluster_id_of(set: &[Id]) -> u64 {
        set.iter()
            .map(|i| u64::from(i[0]) * 31 + u64::from(i[1]))
            .sum::<u64>()
            + 1
    }

    /// One boot of `n` masters (expected 3) with random start times and
    /// message delays; returns the distinct decided sets and whether a
    /// cluster formed.
    fn boot(rng: &mut StdRng, n: usize, spread_ms: u64) -> (BTreeSet<Vec<Id>>, bool) {
        let mut nodes: Vec<Node> = (0..n)
            .map(|k| {
                let mut id = [0u8; 16];
                rng.fill(&mut id[..]);
                let start_ms = rng.gen_range(0..=spread_ms);
                let facts = NodeFacts {
                    id,
                    name: format!("m{k}"),
                    master: true,
                    peer_url: format!("https://10.0.0.{k}:2380"),
                    expected_masters: 3,
                    cluster_name: "sim".into(),
                    timing: Timing::from_interval(B),
                    join_backoff_ms: 1000,
                    restore: None,
                };
                Node {
                    plan: Plan::new(facts, PersistedState::default()),
                    start_ms,
                    next_announce_ms: start_ms + rng.gen_range(0..=B / 4),
                    last: None,
                    heard: Default::default(),
                    decided: None,
                }
            })
            .collect();
        // In-flight messages: (deliver_at, from, to, announcement).
        let mut flight: Vec<(u64, usize, usize, Ann)> = Vec::new();
        let mut formed = false;
        let end = spread_ms + 20 * B;
        let mut now = 0;
        while now <= end {
            // Deliver.
            let (due, rest): (Vec<_>, Vec<_>) = flight.into_iter().partition(|m| m.0 <= now);
            flight = rest;
            for (_, from, to, ann) in due {
                nodes[to].heard.insert(from, ann);
            }
            for k in 0..n {
                if now < nodes[k].start_ms {
                    continue;
                }
                if nodes[k].plan.phase == AgentPhase::Starting {
                    nodes[k].plan.step(
                        Event::Start {
                            has_etcd_data: false,
                        },
                        now,
                    );
                }
                // Every 50 ms: a discovery snapshot.
                if now % 50 == 0 {
                    let peers: Vec<PeerFacts> = nodes[k]
                        .heard
                        .iter()
                        .map(|(from, a)| PeerFacts {
                            id: nodes[*from].plan.node.id,
                            name: nodes[*from].plan.node.name.clone(),
                            peer_url: nodes[*from].plan.node.peer_url.clone(),
                            master: true,
                            has_cluster: a.cluster_id.is_some()
                                || matches!(
                                    a.phase,
                                    AgentPhase::Bootstrapping
                                        | AgentPhase::EtcdMember
                                        | AgentPhase::Ready
                                ),
                            bootstrapping: a.phase == AgentPhase::Bootstrapping,
                            cluster_id: a.cluster_id,
                            failed: false,
                            proposal: a.proposal.clone(),
                            last_seen_ms: now,
                            epoch: Default::default(),
                            restore: None,
                        })
                        .collect();
                    for action in nodes[k].plan.step(Event::Peers { peers }, now).actions() {
                        if let Action::Persist(st) = action {
                            if let Some(d) = st.bootstrap {
                                let set: Vec<Id> = d
                                    .members
                                    .iter()
                                    .filter_map(|m| parse_hex16(&m.node_id))
                                    .collect();
                                nodes[k].decided = Some(set);
                            }
                        }
                    }
                }
                // Announce periodically (±25 %) and at once on a change.
                let ann = ann_of(&nodes[k].plan);
                let changed = nodes[k].last.as_ref().is_none_or(|l| {
                    l.phase != ann.phase
                        || l.proposal != ann.proposal
                        || l.cluster_id != ann.cluster_id
                });
                if now >= nodes[k].next_announce_ms || (changed && nodes[k].last.is_some()) {
                    let listening: Vec<usize> = (0..n)
                        .filter(|to| *to != k && now >= nodes[*to].start_ms.saturating_sub(5))
                        .collect();
                    for to in listening {
                        flight.push((now + rng.gen_range(1..=5), k, to, ann.clone()));
                    }
                    nodes[k].last = Some(ann);
                    nodes[k].next_announce_ms = now + rng.gen_range(B * 3 / 4..=B * 5 / 4);
                }
            }
            // Fake etcd: a decided set forms a cluster once a majority of
            // it has decided that same set; its decided members turn healthy.
            let sets: BTreeSet<Vec<Id>> = nodes.iter().filter_map(|n| n.decided.clone()).collect();
            for set in &sets {
                let started: Vec<usize> = (0..n)
                    .filter(|k| nodes[*k].decided.as_ref() == Some(set))
                    .collect();
                if started.len() * 2 > set.len() {
                    formed = true;
                    for k in started {
                        let id = nodes[k].plan.node.id;
                        nodes[k].plan.step(
                            Event::EtcdStatus {
                                cluster_id: cluster_id_of(set),
                                member_id: u64::from(id[0]) + 1,
                                is_learner: false,
                            },
                            now,
                        );
                    }
                }
            }
            now += 10;
        }
        let sets = nodes.iter().filter_map(|n| n.decided.clone()).collect();
        if !formed {
            for n in &nodes {
                eprintln!(
                    "{} start {} {:?} {} proposal {:?}",
                    &hex16(&n.plan.node.id)[..6],
                    n.start_ms,
                    n.plan.phase,
                    n.plan.detail,
                    n.plan
                        .proposal
                        .iter()
                        .map(|i| hex16(i)[..6].to_owned())
                        .collect::<Vec<_>>()
                );
            }
        }
        (sets, formed)
    }

    #[test]
    fn random_boots_never_decide_two_initial_sets() {
        let mut rng = StdRng::seed_from_u64(0x6b75_6265);
        for round in 0..400 {
            let n = 3 + round % 4; // 3..=6 masters, expected 3
            let spread = [0, 300, 1000, 3000][round % 4];
            let (sets, formed) = boot(&mut rng, n, spread as u64);
            assert!(
                sets.len() <= 1,
                "round {round}: {n} masters decided {} different sets",
                sets.len()
            );
            assert!(
                formed,
                "round {round}: {n} masters (spread {spread} ms) formed no cluster"
            );
        }
    }
}
