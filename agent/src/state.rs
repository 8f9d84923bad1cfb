//! Identity and persisted state under the state directory (default
//! `/var/lib/kubeboot`, on the persistent data area).
//!
//! Layout:
//!
//! | path            | what                                                   |
//! |-----------------|--------------------------------------------------------|
//! | `node-id`       | 16 random bytes as 32 hex characters, created once     |
//! | `state.json`    | [`PersistedState`] (the pure model, in `core`)          |
//! | `pki/`          | etcd certificates and keys (keys mode 0600)            |
//! | `etcd/`         | etcd's data directory (`etcd/member` once it has data) |
//! | `etcd-snapshots/` | etcd snapshots and their sidecars (`etcd::snapshot`) |
//!
//! Every file is written with `atomic_file::write` (temporary file, fsync,
//! rename, fsync of the directory), so a crash leaves the old or the new
//! content, never half of it. The same disk is the same node after a reboot;
//! a wiped disk is a new node.

use std::fs;
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::core::model::{hex16, parse_hex16, PersistedState};

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

    /// Keeps etcd's data directory aside under `name` (beside it, in the
    /// state directory; a name already taken gets `.1`, `.2`, …): renamed,
    /// never deleted, then the state directory fsynced. Returns where it
    /// went, or `None` when there was no data directory (nothing to keep).
    pub fn set_aside_etcd_data(&self, name: &str) -> Result<Option<PathBuf>, StateError> {
        let from = self.etcd_data_dir();
        if !from.exists() {
            return Ok(None);
        }
        let mut to = self.root.join(name);
        let mut n = 0;
        while to.exists() {
            n += 1;
            to = self.root.join(format!("{name}.{n}"));
        }
        fs::rename(&from, &to).map_err(io("moving etcd's data directory to", &to))?;
        fs::File::open(&self.root)
            .and_then(|d| d.sync_all())
            .map_err(io("syncing", &self.root))?;
        Ok(Some(to))
    }

    /// Where etcd snapshots go (`etcd::snapshot`): beside etcd's data
    /// directory, never in it, so replacing that directory in a recovery
    /// keeps them.
    pub fn snapshot_dir(&self) -> PathBuf {
        self.root.join(crate::etcd::snapshot::DIR_NAME)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::model::{BootstrapDecision, InitialMember, Membership};
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
            ..Default::default()
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
    fn etcd_data_is_set_aside_never_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateDir::open(dir.path()).unwrap();
        assert_eq!(s.set_aside_etcd_data("etcd.epoch-0.1").unwrap(), None);
        for round in 0..2 {
            fs::create_dir_all(s.etcd_data_dir().join("member/snap")).unwrap();
            fs::write(s.etcd_data_dir().join("member/snap/db"), b"db").unwrap();
            let to = s.set_aside_etcd_data("etcd.epoch-0.1").unwrap().unwrap();
            let want = if round == 0 {
                "etcd.epoch-0.1"
            } else {
                "etcd.epoch-0.1.1"
            };
            assert_eq!(to, dir.path().join(want));
            assert_eq!(fs::read(to.join("member/snap/db")).unwrap(), b"db");
            assert!(!s.has_etcd_data());
        }
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
}
