//! The persisted model (pure): what a node decides about its etcd
//! membership and keeps across restarts, and how etcd is told to start.
//!
//! [`PersistedState`] is the content of `state.json` (the state directory
//! itself, I/O, is [`crate::state`]); [`ClusterState`] is the one input of
//! etcd's command line that the [`plan`](super::plan) decides;
//! [`cluster_token`] derives the `--initial-cluster-token` from the decided
//! set. Nothing here touches files, sockets or clocks.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::epoch::Epoch;

/// How etcd is told to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterState {
    /// First start of a bootstrapping member: `--initial-cluster-state=new`.
    New {
        /// `name=peer_url` pairs of the decided initial set.
        initial_cluster: String,
        /// `--initial-cluster-token`.
        token: String,
    },
    /// A learner joining an existing cluster: `--initial-cluster-state=existing`.
    Existing {
        /// The member list etcd returned when the learner was added.
        initial_cluster: String,
    },
    /// A member with a data directory: restarts with its data. etcd ignores
    /// the initial-cluster flags when `member/` exists; `existing` is passed
    /// so that even a data dir lost between the check and the start can
    /// never make etcd create a new cluster.
    Restart {
        /// The last known `--initial-cluster` (own entry at least).
        initial_cluster: String,
    },
}

/// The `--initial-cluster-token`: derived from the cluster name and a hash
/// of the initial set, so it is identical on every member of the set and
/// differs between any two sets.
pub fn cluster_token(cluster_name: &str, member_ids_hex: &[String]) -> String {
    let mut h = Sha256::new();
    h.update(cluster_name.as_bytes());
    for id in member_ids_hex {
        h.update([0u8]);
        h.update(id.as_bytes());
    }
    let digest = h.finalize();
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("{cluster_name}-{hex}")
}

/// One member of the decided initial etcd cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InitialMember {
    /// The node id (hex).
    pub node_id: String,
    /// The etcd member name (the node's name).
    pub name: String,
    /// The peer URL.
    pub peer_url: String,
}

/// The persisted bootstrap decision: written BEFORE etcd is first started
/// with `--initial-cluster-state=new`; reused after any restart, so the
/// decision is made once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootstrapDecision {
    /// The initial members, sorted by node id.
    pub members: Vec<InitialMember>,
    /// The `--initial-cluster-token`.
    pub token: String,
}

/// A join in progress or done: the member list etcd returned when this
/// node was added as a learner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinRecord {
    /// The member id etcd assigned.
    pub member_id: u64,
    /// `--initial-cluster` for the joining member (`name=peer_url,...`).
    pub initial_cluster: String,
}

/// Membership once etcd answered as this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    /// etcd cluster id.
    pub cluster_id: u64,
    /// This node's member id.
    pub member_id: u64,
}

/// The agent's persisted state (`state.json`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PersistedState {
    /// The bootstrap decision, once made.
    pub bootstrap: Option<BootstrapDecision>,
    /// The learner join, once etcd accepted it.
    pub join: Option<JoinRecord>,
    /// The membership, once etcd answered.
    pub membership: Option<Membership>,
    /// Set once this node's etcd has been a healthy member: a restart never
    /// bootstraps again.
    pub bootstrapped: bool,
    /// The recovery epoch of this node's etcd state ([`super::epoch`]; 0,
    /// the default, for the cluster formed at first boot and in states
    /// written by older agents).
    #[serde(default)]
    pub epoch: Epoch,
    /// The highest epoch this node has seen, persisted before it acts on
    /// it: above `epoch`, the node never starts its old member again.
    #[serde(default)]
    pub highest_epoch: Epoch,
    /// The last recovery this node made (`agent recover`), kept across
    /// later yields for the status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery: Option<Box<RecoveryRecord>>,
}

/// Where a recovery (`agent recover`) stands; each stage is persisted
/// before the next step, so a crash re-runs from the last one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RecoveryStage {
    /// Decided (refusals passed): the data is being restored into a new
    /// data directory; the old one is still in place.
    Restoring,
    /// The restored data is in place and the new epoch persisted; etcd
    /// runs it as a one-member cluster.
    Restored,
    /// etcd answered as the new cluster (its id recorded).
    Done,
}

/// The facts of a recovery: who, when, from what, the old and new
/// cluster ids.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoveryRecord {
    /// The epoch the recovery created.
    pub epoch: Epoch,
    /// The node that recovered (its name).
    pub node: String,
    /// When it was decided (ms since the Unix epoch).
    pub at_ms: u64,
    /// What the data came from (the member's db file or a snapshot path).
    pub source: String,
    /// The source is a snapshot file (checked against its sidecar);
    /// otherwise the member's own db file (restored with
    /// `--skip-hash-check`: a raw db carries no snapshot digest).
    pub snapshot: bool,
    /// The cluster id before (hex), when known.
    pub old_cluster_id: Option<String>,
    /// The new cluster's id (hex), once etcd answered.
    pub new_cluster_id: Option<String>,
    /// The new `--initial-cluster-token`.
    pub token: String,
    /// Where the old data directory was kept.
    pub set_aside: Option<String>,
    /// How far it got.
    pub stage: RecoveryStage,
}

/// The `--initial-cluster-token` of the cluster a recovery into `epoch`
/// creates: derived from the cluster secret (its bytes), the cluster name
/// and the epoch, so the new cluster's id differs from every earlier one
/// and no node without the secret can predict it.
pub fn recovery_token(secret: &[u8], cluster_name: &str, epoch: Epoch) -> String {
    let mut h = Sha256::new();
    h.update(b"kubeboot recovery token\0");
    h.update(secret);
    h.update([0u8]);
    h.update(cluster_name.as_bytes());
    h.update(epoch.number.to_be_bytes());
    h.update(epoch.by);
    let digest = h.finalize();
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("{cluster_name}-epoch{}-{hex}", epoch.number)
}

/// Lower-case hex of 16 bytes.
pub fn hex16(bytes: &[u8; 16]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses 32 hex characters.
pub fn parse_hex16(text: &str) -> Option<[u8; 16]> {
    if text.len() != 32 || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_depends_on_name_and_set() {
        let a = vec!["01".to_owned(), "02".to_owned()];
        let b = vec!["01".to_owned(), "03".to_owned()];
        assert_eq!(cluster_token("c", &a), cluster_token("c", &a));
        assert_ne!(cluster_token("c", &a), cluster_token("c", &b));
        assert_ne!(cluster_token("c", &a), cluster_token("d", &a));
        assert!(cluster_token("c", &a).starts_with("c-"));
    }

    #[test]
    fn recovery_tokens_differ_per_epoch_and_secret() {
        let e1 = Epoch::default().next([1; 16]);
        let e1b = Epoch::default().next([2; 16]);
        let t = recovery_token(b"s", "c", e1);
        assert_eq!(t, recovery_token(b"s", "c", e1));
        assert_ne!(t, recovery_token(b"s", "c", e1b));
        assert_ne!(t, recovery_token(b"t", "c", e1));
        assert!(t.starts_with("c-epoch1-"), "{t}");
        // A state written before epochs existed reads as epoch 0.
        let old: PersistedState = serde_json::from_str(
            r#"{"bootstrap":null,"join":null,"membership":null,"bootstrapped":true}"#,
        )
        .unwrap();
        assert_eq!(old.epoch, Epoch::default());
        assert_eq!(old.highest_epoch, Epoch::default());
    }

    #[test]
    fn hex_round_trip() {
        let id = [0xab; 16];
        assert_eq!(parse_hex16(&hex16(&id)), Some(id));
        assert_eq!(parse_hex16("xyz"), None);
    }
}
