//! Restore into a fresh cluster at first boot (issue 17): blank masters
//! given a snapshot (`[etcd] restore_from = "/path"`) bootstrap their
//! cluster *from* it.
//!
//! The bootstrap protocol is the one of `core::quorum::decide`: the same
//! rules choose the same initial set and token. Only the members' initial
//! data differs: instead of an empty data directory, each member of the
//! agreed set runs `etcdctl snapshot restore` (the one implementation,
//! [`crate::recovery::run_restore`]) with the set's `--initial-cluster`,
//! the decision's `--initial-cluster-token` and its own `--name` /
//! `--initial-advertise-peer-urls`, then starts etcd as for any new
//! cluster. etcd derives the cluster id and the member ids from exactly
//! those inputs, so every member gets the same data and the same cluster
//! id.
//!
//! That needs the same snapshot on every member. Each master announces the
//! SHA-256 of the snapshot it was given (`Announcement::restore`, none
//! without one) and `decide` treats it as part of the proposal: a member of
//! the set announcing another snapshot (or none, or one where this node has
//! none) is a member that does not agree, so nobody bootstraps and the
//! status names the mismatch. Giving the snapshot to only some masters is
//! therefore refused, loudly, never half-applied.
//!
//! The snapshot is checked with `etcd::snapshot::verify` before anything
//! is announced (its `.json` sidecar is required: a bare `etcdctl snapshot
//! save` file is refused as unverifiable) and again, against the announced
//! SHA-256, right before the restore. A bad snapshot is a configuration
//! error naming its path (the agent waits for `SIGHUP`, as for any invalid
//! configuration). `restore_from` is ignored once this node has etcd data
//! (`etcd/member`): it is a first-boot input only.

use std::fs;
use std::path::{Path, PathBuf};

use cluster_config::{ClusterConfig, Role};

use crate::etcd::snapshot::{self, SnapshotError};
use crate::recovery::{io_err, restore_argv_into, run_restore, RecoveryError};
use crate::state::StateDir;

/// The snapshot this node bootstraps from, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreSource {
    /// The snapshot file.
    pub path: PathBuf,
    /// Its SHA-256 (hex), as its sidecar records it and `verify` found.
    pub sha256: String,
    /// The revision the snapshot holds (at least).
    pub revision: i64,
}

/// The snapshot to bootstrap from: `None` without `[etcd] restore_from`,
/// on a worker, or when this node already has etcd data (the restore is a
/// first-boot input only). A snapshot that fails `snapshot::verify` is an
/// error naming its path. Reads the whole file: call it off the async
/// runtime for large snapshots.
pub fn check(
    cfg: &ClusterConfig,
    state_dir: &Path,
) -> Result<Option<RestoreSource>, SnapshotError> {
    let Some(path) = cfg.etcd.restore_from.as_ref() else {
        return Ok(None);
    };
    if cfg.role != Role::Master || state_dir.join("etcd").join("member").exists() {
        return Ok(None);
    }
    let meta = snapshot::verify(path)?;
    Ok(Some(RestoreSource {
        path: path.clone(),
        sha256: meta.sha256,
        revision: meta.revision,
    }))
}

/// Fills this member's empty etcd data directory from `source` for the
/// new cluster `initial_cluster` with `token` (the persisted bootstrap
/// decision). Nothing to do when `etcd/member` exists (restored before a
/// restart). Checks the snapshot again (it must still be the one
/// announced), restores into `<state>/restore/etcd.new`, then renames it
/// into place (a data directory without `member` is a leftover and is
/// replaced). Idempotent; blocking.
pub fn restore_initial(
    state: &StateDir,
    source: &RestoreSource,
    etcdctl: &Path,
    name: &str,
    peer_url: &str,
    initial_cluster: &str,
    token: &str,
) -> Result<bool, RecoveryError> {
    let data = state.etcd_data_dir();
    if data.join("member").exists() {
        return Ok(false);
    }
    let meta = snapshot::verify(&source.path)?;
    if meta.sha256 != source.sha256 {
        return Err(RecoveryError::Snapshot(SnapshotError::Corrupt {
            path: source.path.clone(),
            reason: format!(
                "SHA-256 {} changed since it was announced ({})",
                meta.sha256, source.sha256
            ),
        }));
    }
    let work = state.root().join("restore");
    fs::create_dir_all(&work).map_err(io_err("creating", &work))?;
    let new_dir = work.join("etcd.new");
    let argv = restore_argv_into(
        etcdctl,
        &source.path,
        false,
        name,
        peer_url,
        initial_cluster,
        token,
        &new_dir,
    );
    run_restore(&argv, &new_dir)?;
    if data.exists() {
        fs::remove_dir_all(&data).map_err(io_err("removing the leftover", &data))?;
    }
    fs::rename(&new_dir, &data).map_err(io_err("moving the restored data to", &data))?;
    fs::File::open(state.root())
        .and_then(|d| d.sync_all())
        .map_err(io_err("syncing", state.root()))?;
    Ok(true)
}
