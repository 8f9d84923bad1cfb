//! Identity and persisted state under the state directory (default
//! `/var/lib/kubeboot`, on the persistent data area).
//!
//! Layout:
//!
//! | path            | what                                                   |
//! |-----------------|--------------------------------------------------------|
//! | `node-id`       | 16 random bytes as 32 hex characters, created once     |
//! | `state.json`    | [`PersistedState`]: bootstrap decision, join, membership |
//! | `pki/`          | etcd certificates and keys (keys mode 0600)            |
//! | `etcd/`         | etcd's data directory (`etcd/member` once it has data) |
//!
//! Every file is written with `atomic_file::write` (temporary file, fsync,
//! rename, fsync of the directory), so a crash leaves the old or the new
//! content, never half of it. The same disk is the same node after a reboot;
//! a wiped disk is a new node.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Default state directory.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/kubeboot";

/// Errors reading or writing the state directory; each names the path.
#[derive(Debug, Error)]
pub enum StateError {
    /// An I/O operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A file's content is not what this agent writes.
    #[error("{path} is corrupt: {reason}")]
    Corrupt {
        /// The path.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> StateError + 'a {
    move |source| StateError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

/// Writes `bytes` to `path` with the one atomic write (`atomic-file`:
/// temporary file, fsync, rename over `path`, fsync of the directory).
fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), StateError> {
    atomic_file::write(path, bytes, mode).map_err(io("writing", path))
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
}

/// The state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    /// Opens (creating if needed, mode 0700) the state directory.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, StateError> {
        let root = root.into();
        let mut builder = fs::DirBuilder::new();
        std::os::unix::fs::DirBuilderExt::mode(builder.recursive(true), 0o700);
        builder.create(&root).map_err(io("creating", &root))?;
        Ok(Self { root })
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// etcd's data directory.
    pub fn etcd_data_dir(&self) -> PathBuf {
        self.root.join("etcd")
    }

    /// True when etcd has data (`etcd/member` exists): such a node always
    /// restarts etcd with that data, never as a new cluster.
    pub fn has_etcd_data(&self) -> bool {
        self.etcd_data_dir().join("member").is_dir()
    }

    /// Where certificates and keys go.
    pub fn pki_dir(&self) -> PathBuf {
        self.root.join("pki")
    }

    /// Returns the node id, creating it (16 random bytes) on first use.
    pub fn node_id(&self) -> Result<[u8; 16], StateError> {
        let path = self.root.join("node-id");
        match fs::read_to_string(&path) {
            Ok(text) => parse_hex16(text.trim()).ok_or_else(|| StateError::Corrupt {
                path: path.clone(),
                reason: "expected 32 hex characters".to_owned(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let id: [u8; 16] = rand::random();
                write_atomic(&path, format!("{}\n", hex16(&id)).as_bytes(), 0o644)?;
                Ok(id)
            }
            Err(e) => Err(StateError::Io {
                op: "reading",
                path,
                source: e,
            }),
        }
    }

    fn state_path(&self) -> PathBuf {
        self.root.join("state.json")
    }

    /// Loads the persisted state (default when none was written yet).
    pub fn load(&self) -> Result<PersistedState, StateError> {
        let path = self.state_path();
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| StateError::Corrupt {
                path,
                reason: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(PersistedState::default()),
            Err(e) => Err(StateError::Io {
                op: "reading",
                path,
                source: e,
            }),
        }
    }

    /// Saves the persisted state atomically.
    pub fn save(&self, state: &PersistedState) -> Result<(), StateError> {
        // Serialising plain data cannot fail.
        let bytes = serde_json::to_vec_pretty(state).unwrap_or_default();
        write_atomic(&self.state_path(), &bytes, 0o600)
    }
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
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn node_id_created_once_and_stable() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateDir::open(dir.path()).unwrap();
        let a = s.node_id().unwrap();
        let b = StateDir::open(dir.path()).unwrap().node_id().unwrap();
        assert_eq!(a, b);
        // A wiped disk is a new node.
        let other = tempfile::tempdir().unwrap();
        assert_ne!(StateDir::open(other.path()).unwrap().node_id().unwrap(), a);
    }

    #[test]
    fn corrupt_node_id_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("node-id"), "zz").unwrap();
        let err = StateDir::open(dir.path()).unwrap().node_id().unwrap_err();
        assert!(err.to_string().contains("node-id"), "{err}");
    }

    #[test]
    fn state_round_trips_and_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateDir::open(dir.path()).unwrap();
        assert_eq!(s.load().unwrap(), PersistedState::default());
        let st = PersistedState {
            bootstrap: Some(BootstrapDecision {
                members: vec![InitialMember {
                    node_id: "00".repeat(16),
                    name: "master-000000".into(),
                    peer_url: "https://10.0.0.1:2380".into(),
                }],
                token: "t".into(),
            }),
            join: None,
            membership: Some(Membership {
                cluster_id: 7,
                member_id: 9,
            }),
            bootstrapped: true,
        };
        s.save(&st).unwrap();
        assert_eq!(s.load().unwrap(), st);
        let mode = fs::metadata(dir.path().join("state.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_leftover_temp_file_does_not_affect_load() {
        // A crash between write and rename leaves a temp file: the state
        // read back is the old one.
        let dir = tempfile::tempdir().unwrap();
        let s = StateDir::open(dir.path()).unwrap();
        let st = PersistedState {
            bootstrapped: true,
            ..Default::default()
        };
        s.save(&st).unwrap();
        fs::write(dir.path().join(".state.json.tmp.1"), b"{\"bootstr").unwrap();
        assert_eq!(s.load().unwrap(), st);
        // A truncated state file is reported, not silently reset.
        fs::write(dir.path().join("state.json"), b"{\"bootstr").unwrap();
        assert!(matches!(s.load(), Err(StateError::Corrupt { .. })));
    }

    #[test]
    fn hex_round_trip() {
        let id = [0xab; 16];
        assert_eq!(parse_hex16(&hex16(&id)), Some(id));
        assert_eq!(parse_hex16("xyz"), None);
    }
}
