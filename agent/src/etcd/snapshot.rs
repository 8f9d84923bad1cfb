//! etcd snapshots (issue 17): every master snapshots its own etcd member
//! into `<state dir>/etcd-snapshots/` on the data partition, every
//! `[etcd] snapshot_interval_s` (default 6 h; 0: no periodic snapshots),
//! keeping the newest `[etcd] snapshot_retain` (default 8).
//!
//! **Who.** Every master, of its own member (the client URL on its own
//! address), not the leader only: after losing quorum any survivor holds a
//! recent copy on its own disk, and a snapshot never crosses the network.
//! The periodic task starts when the plan first finds the local member a
//! healthy voter (the action that also starts the VIP); a learner is
//! refused (its data is not yet the cluster's).
//!
//! **How.** Through the one TLS client constructor ([`tls_client`]):
//! `Status` first (its header gives the revision, the member and cluster
//! ids; the snapshot holds at least that revision, exactly it when no
//! write came in between; etcd 3.4's snapshot stream carries no header),
//! then the `Snapshot` stream. etcd ends that stream with the SHA-256 of
//! the database it sent (what `etcdctl snapshot restore` checks); the
//! writer checks it too, so a truncated or garbled stream never becomes a
//! snapshot. The file is what `etcdctl snapshot save` writes.
//!
//! **Atomicity.** The stream goes to a unique temporary file beside its
//! final name ([`atomic_file::AtomicFile`], mode 0600: a snapshot holds
//! every Kubernetes Secret), written off the async runtime, then fsync,
//! rename, directory fsync. Only then is the sidecar `<name>.json`
//! ([`SnapshotMeta`]: SHA-256 of the whole file, size, revision, time,
//! member) written, atomically too. A snapshot is complete only with its
//! sidecar: a database without one (a crash between the two renames) is a
//! leftover, pruned, and refused by [`verify`].
//!
//! **Names.** `etcd-YYYYMMDDTHHMMSS.mmmZ.db` (UTC, fixed width, so name
//! order is time order) and `etcd-….db.json`. Files of other names in the
//! directory are never touched.
//!
//! **Retention.** After each snapshot the newest `retain` complete
//! snapshots are kept (always including the one just written, even if a
//! clock step made it sort older), older ones are removed with their
//! sidecars, and so are leftovers (a database or sidecar without its
//! partner, temporary files of a crashed write). Snapshots are taken one
//! at a time (one lock), so pruning never sees a write in progress.
//!
//! **Failures** are logged (tracing, `error`) and shown in `agent status`
//! (`snapshots:` section, last error and when), never silent; a failed
//! periodic snapshot is retried after [`RETRY_AFTER`] (or the interval,
//! whichever is shorter).

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;
use tokio::sync::{watch, Mutex};

use super::{tls_client, ClientTls, EtcdError};
use crate::status::StatusReport;

/// The directory name under the state directory.
pub const DIR_NAME: &str = "etcd-snapshots";
/// How long the stream may stay silent before the snapshot is abandoned.
pub const STREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a whole snapshot may take.
pub const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// When a failed periodic snapshot is tried again (at most the interval).
pub const RETRY_AFTER: Duration = Duration::from_secs(5 * 60);
/// The sidecar format this agent writes and reads.
pub const META_FORMAT: u32 = 1;
/// Bytes gathered before each write to disk (off the async runtime).
const WRITE_BATCH: usize = 1 << 20;
/// Length of the SHA-256 digest etcd appends to the stream.
const DIGEST_LEN: usize = 32;

/// Errors taking, pruning or verifying snapshots; each names the endpoint
/// or the path.
#[derive(Debug, Error)]
pub enum SnapshotError {
    /// A file operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// etcd refused or failed a request.
    #[error("snapshot of {endpoint}: {source}")]
    Etcd {
        /// The member's client URL.
        endpoint: String,
        /// The client's error.
        source: EtcdError,
    },
    /// The stream broke off, stalled or ran too long.
    #[error("snapshot of {endpoint}: {reason}")]
    Stream {
        /// The member's client URL.
        endpoint: String,
        /// What happened.
        reason: String,
    },
    /// The member is a learner: its data is not yet the cluster's.
    #[error("snapshot of {endpoint}: the member is a learner (not promoted yet)")]
    Learner {
        /// The member's client URL.
        endpoint: String,
    },
    /// The database does not end with etcd's SHA-256 of the rest.
    #[error("{path}: etcd's SHA-256 at the end of the snapshot does not match its contents (truncated or garbled)")]
    EtcdDigest {
        /// The snapshot (or its temporary file's final name).
        path: PathBuf,
    },
    /// A snapshot has no sidecar (unfinished or not written by the agent).
    #[error("{path}: no sidecar {sidecar} (an unfinished snapshot?)")]
    MissingSidecar {
        /// The snapshot.
        path: PathBuf,
        /// The sidecar it lacks.
        sidecar: PathBuf,
    },
    /// The sidecar does not parse or is of another format.
    #[error("{path}: {reason}")]
    BadSidecar {
        /// The sidecar.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The snapshot differs from what its sidecar recorded.
    #[error("{path} is corrupt: {reason}")]
    Corrupt {
        /// The snapshot.
        path: PathBuf,
        /// Which check failed.
        reason: String,
    },
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> SnapshotError + 'a {
    move |source| SnapshotError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

/// Why a snapshot was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reason {
    /// The periodic task.
    Periodic,
    /// Asked for (`agent etcd snapshot`, tests).
    OnDemand,
    /// Before a membership change the agent makes.
    MembershipChange,
}

impl Reason {
    /// The JSON name.
    pub fn name(self) -> &'static str {
        match self {
            Reason::Periodic => "periodic",
            Reason::OnDemand => "on-demand",
            Reason::MembershipChange => "membership-change",
        }
    }
}

/// The sidecar `<snapshot>.json`: what was written, from where, when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotMeta {
    /// Sidecar format ([`META_FORMAT`]).
    pub format: u32,
    /// The snapshot's file name (in the same directory).
    pub file: String,
    /// SHA-256 of the whole file (hex), etcd's trailing digest included.
    pub sha256: String,
    /// Size of the file in bytes.
    pub size: u64,
    /// The member's revision when the snapshot began (the snapshot holds
    /// at least this revision).
    pub revision: i64,
    /// When the snapshot began, ms since the Unix epoch.
    pub taken_at_ms: u64,
    /// The same, UTC (`YYYY-MM-DDTHH:MM:SS.mmmZ`).
    pub taken_at: String,
    /// The member's id (hex).
    pub member_id: String,
    /// The member's name (the node name).
    pub member_name: String,
    /// The cluster's id (hex).
    pub cluster_id: String,
    /// etcd's version (from `Status`).
    pub etcd_version: String,
    /// Why it was taken.
    pub reason: Reason,
    /// The membership change it was taken before (`pre-add-learner`,
    /// `pre-remove-<member id>`, `pre-promote-<member id>`), with reason
    /// `membership-change`; absent otherwise (and in sidecars of older
    /// agents, which ignore it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change: Option<String>,
}

impl SnapshotMeta {
    /// Parses a sidecar; errors name `path`. Pure.
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<Self, SnapshotError> {
        let meta: SnapshotMeta =
            serde_json::from_slice(bytes).map_err(|e| SnapshotError::BadSidecar {
                path: path.to_owned(),
                reason: e.to_string(),
            })?;
        if meta.format != META_FORMAT {
            return Err(SnapshotError::BadSidecar {
                path: path.to_owned(),
                reason: format!(
                    "format {} (this agent reads format {META_FORMAT})",
                    meta.format
                ),
            });
        }
        Ok(meta)
    }

    /// The sidecar's bytes (pretty JSON, one trailing newline). Pure.
    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).unwrap_or_default();
        v.push(b'\n');
        v
    }
}

/// A date and time, UTC, from ms since the Unix epoch: the compact form
/// of file names (`20231114T221320.000Z`) when `compact`, else RFC 3339
/// (`2023-11-14T22:13:20.000Z`). Pure.
pub fn utc(ms: u64, compact: bool) -> String {
    let secs = ms / 1000;
    let (days, sod) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let (hh, mm, ss, milli) = (sod / 3600, sod % 3600 / 60, sod % 60, ms % 1000);
    if compact {
        format!("{y:04}{m:02}{d:02}T{hh:02}{mm:02}{ss:02}.{milli:03}Z")
    } else {
        format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}.{milli:03}Z")
    }
}

/// The file name of a snapshot begun at `taken_at_ms`. Pure.
pub fn file_name(taken_at_ms: u64) -> String {
    format!("etcd-{}.db", utc(taken_at_ms, true))
}

/// The sidecar of a snapshot file. Pure.
pub fn sidecar_path(db: &Path) -> PathBuf {
    let mut s = db.as_os_str().to_owned();
    s.push(".json");
    PathBuf::from(s)
}

/// What a file in the snapshot directory is. Pure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A snapshot database; its stem (`etcd-<time>`).
    Db(String),
    /// A sidecar; the stem of its database.
    Sidecar(String),
    /// A temporary file of an unfinished write.
    Temp,
    /// Anything else: never touched.
    Other,
}

/// Classifies a file name of the snapshot directory. Pure.
pub fn classify(name: &str) -> Entry {
    let is_stem = |stem: &str| -> bool {
        // etcd-YYYYMMDDTHHMMSS.mmmZ
        let Some(t) = stem.strip_prefix("etcd-") else {
            return false;
        };
        let b = t.as_bytes();
        b.len() == 20
            && b.iter().enumerate().all(|(i, c)| match i {
                8 => *c == b'T',
                15 => *c == b'.',
                19 => *c == b'Z',
                _ => c.is_ascii_digit(),
            })
    };
    if let Some(stem) = name.strip_suffix(".db.json") {
        if is_stem(stem) {
            return Entry::Sidecar(stem.to_owned());
        }
    } else if let Some(stem) = name.strip_suffix(".db") {
        if is_stem(stem) {
            return Entry::Db(stem.to_owned());
        }
    }
    // `atomic_file`'s temporary names: `.<final name>.tmp<pid>.<seq>`.
    if let Some((final_name, _)) = name.strip_prefix('.').and_then(|n| n.rsplit_once(".tmp")) {
        if matches!(classify(final_name), Entry::Db(_) | Entry::Sidecar(_)) {
            return Entry::Temp;
        }
    }
    Entry::Other
}

/// The stems of complete snapshots (database and sidecar), newest first.
/// Pure.
pub fn complete_newest_first(names: &[String]) -> Vec<String> {
    let mut dbs = std::collections::BTreeSet::new();
    let mut sidecars = std::collections::BTreeSet::new();
    for n in names {
        match classify(n) {
            Entry::Db(s) => {
                dbs.insert(s);
            }
            Entry::Sidecar(s) => {
                sidecars.insert(s);
            }
            Entry::Temp | Entry::Other => {}
        }
    }
    let mut both: Vec<String> = dbs.intersection(&sidecars).cloned().collect();
    both.reverse();
    both
}

/// Which files of the snapshot directory to remove so that `retain`
/// complete snapshots stay: the newest, always including the stem `keep`
/// (the one just written), plus every leftover (a database or sidecar
/// without its partner, temporary files). Other names are never listed.
/// Pure; `retain` below 1 counts as 1.
pub fn to_prune(names: &[String], retain: usize, keep: Option<&str>) -> Vec<String> {
    let complete = complete_newest_first(names);
    let mut kept: Vec<&str> = keep.into_iter().collect();
    for stem in &complete {
        if kept.len() >= retain.max(1) {
            break;
        }
        if !kept.contains(&stem.as_str()) {
            kept.push(stem.as_str());
        }
    }
    let mut out: Vec<String> = names
        .iter()
        .filter(|n| match classify(n) {
            Entry::Db(s) | Entry::Sidecar(s) => !kept.contains(&s.as_str()),
            Entry::Temp => true,
            Entry::Other => false,
        })
        .cloned()
        .collect();
    out.sort();
    out
}

/// When the next periodic snapshot is due (ms since the epoch): one
/// interval after the newest one, at once when there is none (or the
/// clock went back past it); `None` when periodic snapshots are off
/// (`interval_s` 0). Pure.
pub fn next_due_ms(newest_taken_ms: Option<u64>, interval_s: u64, now_ms: u64) -> Option<u64> {
    if interval_s == 0 {
        return None;
    }
    Some(match newest_taken_ms {
        Some(t) if t <= now_ms => t.saturating_add(interval_s.saturating_mul(1000)),
        _ => now_ms,
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The two digests of a snapshot stream or file: SHA-256 of everything
/// (the sidecar's) and of everything but the last 32 bytes (etcd's, which
/// those bytes must equal).
struct Digests {
    all: Sha256,
    body: Sha256,
    /// The last bytes seen (at most [`DIGEST_LEN`]), not yet in `body`.
    tail: Vec<u8>,
    size: u64,
}

impl Digests {
    fn new() -> Self {
        Digests {
            all: Sha256::new(),
            body: Sha256::new(),
            tail: Vec::with_capacity(2 * DIGEST_LEN),
            size: 0,
        }
    }

    fn update(&mut self, chunk: &[u8]) {
        self.all.update(chunk);
        self.size += chunk.len() as u64;
        if chunk.len() >= DIGEST_LEN {
            let (body, tail) = chunk.split_at(chunk.len() - DIGEST_LEN);
            self.body.update(&self.tail);
            self.body.update(body);
            self.tail.clear();
            self.tail.extend_from_slice(tail);
        } else {
            self.tail.extend_from_slice(chunk);
            let over = self.tail.len().saturating_sub(DIGEST_LEN);
            self.body.update(&self.tail[..over]);
            self.tail.drain(..over);
        }
    }

    /// (SHA-256 of all, hex; size; etcd's trailing digest matches).
    fn finish(self) -> (String, u64, bool) {
        let etcd_ok = self.tail.len() == DIGEST_LEN && self.body.finalize()[..] == self.tail[..];
        (hex(&self.all.finalize()), self.size, etcd_ok)
    }
}

/// A snapshot being written: a temporary file beside `path` that becomes
/// it only in [`SnapshotWriter::finish`], once etcd's digest matched.
/// Dropped unfinished (a failed stream), it leaves nothing behind.
pub struct SnapshotWriter {
    file: atomic_file::AtomicFile,
    path: PathBuf,
    digests: Digests,
}

impl SnapshotWriter {
    /// Starts a snapshot that will be `path` (mode 0600).
    pub fn create(path: &Path) -> Result<Self, SnapshotError> {
        let file = atomic_file::AtomicFile::create(path, atomic_file::SECRET)
            .map_err(io_err("creating", path))?;
        Ok(SnapshotWriter {
            file,
            path: path.to_owned(),
            digests: Digests::new(),
        })
    }

    /// Appends a chunk of the stream.
    pub fn write(&mut self, chunk: &[u8]) -> Result<(), SnapshotError> {
        self.file
            .write_all(chunk)
            .map_err(io_err("writing", &self.path))?;
        self.digests.update(chunk);
        Ok(())
    }

    /// Checks etcd's trailing digest, then fsyncs and renames the file
    /// into place and writes `meta` (completed with the file's digest and
    /// size) as its sidecar. Returns the sidecar written.
    pub fn finish(self, mut meta: SnapshotMeta) -> Result<SnapshotMeta, SnapshotError> {
        let (sha256, size, etcd_ok) = self.digests.finish();
        if !etcd_ok {
            // Dropping `file` removes the temporary file.
            return Err(SnapshotError::EtcdDigest { path: self.path });
        }
        self.file
            .commit()
            .map_err(io_err("committing", &self.path))?;
        meta.sha256 = sha256;
        meta.size = size;
        let sidecar = sidecar_path(&self.path);
        atomic_file::write(&sidecar, &meta.to_json(), atomic_file::SECRET)
            .map_err(io_err("writing", &sidecar))?;
        Ok(meta)
    }
}

/// Checks a snapshot against its sidecar: present and parsable, same size,
/// same SHA-256, and etcd's trailing digest matches. Returns the sidecar.
/// Errors name the snapshot (or sidecar) path. Reads the whole file:
/// call it off the async runtime.
pub fn verify(db: &Path) -> Result<SnapshotMeta, SnapshotError> {
    let sidecar = sidecar_path(db);
    let bytes = match fs::read(&sidecar) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(SnapshotError::MissingSidecar {
                path: db.to_owned(),
                sidecar,
            })
        }
        Err(e) => return Err(io_err("reading", &sidecar)(e)),
    };
    let meta = SnapshotMeta::parse(&sidecar, &bytes)?;
    let mut file = fs::File::open(db).map_err(io_err("opening", db))?;
    let mut digests = Digests::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut buf).map_err(io_err("reading", db))?;
        if n == 0 {
            break;
        }
        digests.update(&buf[..n]);
    }
    let (sha256, size, etcd_ok) = digests.finish();
    let corrupt = |reason: String| SnapshotError::Corrupt {
        path: db.to_owned(),
        reason,
    };
    if size != meta.size {
        return Err(corrupt(format!(
            "{size} bytes, the sidecar recorded {}",
            meta.size
        )));
    }
    if sha256 != meta.sha256 {
        return Err(corrupt(format!(
            "SHA-256 {sha256}, the sidecar recorded {}",
            meta.sha256
        )));
    }
    if !etcd_ok {
        return Err(SnapshotError::EtcdDigest {
            path: db.to_owned(),
        });
    }
    Ok(meta)
}

/// Copies the snapshot `db` (described by `meta`) to `out` with its
/// sidecar `<out>.json`, both atomically and mode 0600; the copy's
/// SHA-256 and size must match `meta` and etcd's digest must hold, else
/// nothing is left at `out`. (`agent etcd snapshot --out`.)
pub fn copy_verified(db: &Path, meta: &SnapshotMeta, out: &Path) -> Result<(), SnapshotError> {
    let mut src = fs::File::open(db).map_err(io_err("opening", db))?;
    let mut dst = atomic_file::AtomicFile::create(out, atomic_file::SECRET)
        .map_err(io_err("creating", out))?;
    let mut digests = Digests::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = src.read(&mut buf).map_err(io_err("reading", db))?;
        if n == 0 {
            break;
        }
        dst.write_all(&buf[..n]).map_err(io_err("writing", out))?;
        digests.update(&buf[..n]);
    }
    let (sha256, size, etcd_ok) = digests.finish();
    if sha256 != meta.sha256 || size != meta.size {
        return Err(SnapshotError::Corrupt {
            path: db.to_owned(),
            reason: format!(
                "copied {size} bytes with SHA-256 {sha256}, the sidecar recorded {} bytes with {}",
                meta.size, meta.sha256
            ),
        });
    }
    if !etcd_ok {
        return Err(SnapshotError::EtcdDigest {
            path: db.to_owned(),
        });
    }
    dst.commit().map_err(io_err("committing", out))?;
    let copy = SnapshotMeta {
        file: out
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        ..meta.clone()
    };
    let sidecar = sidecar_path(out);
    atomic_file::write(&sidecar, &copy.to_json(), atomic_file::SECRET)
        .map_err(io_err("writing", &sidecar))
}

/// Creates the snapshot directory (mode 0700) if needed.
pub fn ensure_dir(dir: &Path) -> Result<(), SnapshotError> {
    let mut builder = fs::DirBuilder::new();
    std::os::unix::fs::DirBuilderExt::mode(builder.recursive(true), 0o700);
    builder.create(dir).map_err(io_err("creating", dir))
}

fn names_in(dir: &Path) -> Result<Vec<String>, SnapshotError> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err("listing", dir))? {
        let entry = entry.map_err(io_err("listing", dir))?;
        if let Some(n) = entry.file_name().to_str() {
            names.push(n.to_owned());
        }
    }
    names.sort();
    Ok(names)
}

/// Removes what [`to_prune`] lists; returns the paths removed.
pub fn prune(dir: &Path, retain: usize, keep: Option<&str>) -> Result<Vec<PathBuf>, SnapshotError> {
    let mut removed = Vec::new();
    for name in to_prune(&names_in(dir)?, retain, keep) {
        let path = dir.join(&name);
        match fs::remove_file(&path) {
            Ok(()) => removed.push(path),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("removing", &path)(e)),
        }
    }
    Ok(removed)
}

/// The complete snapshots in `dir`, newest first: (path, sidecar). A
/// sidecar that does not parse is an error naming it.
pub fn list(dir: &Path) -> Result<Vec<(PathBuf, SnapshotMeta)>, SnapshotError> {
    let mut out = Vec::new();
    for stem in complete_newest_first(&names_in(dir)?) {
        let db = dir.join(format!("{stem}.db"));
        let sidecar = sidecar_path(&db);
        let bytes = fs::read(&sidecar).map_err(io_err("reading", &sidecar))?;
        out.push((db, SnapshotMeta::parse(&sidecar, &bytes)?));
    }
    Ok(out)
}

/// What to snapshot: one member, reached with the agent's client
/// certificate.
#[derive(Debug, Clone)]
pub struct Source {
    /// The member's client URL (`https://ip:port`).
    pub endpoint: String,
    /// The agent's client TLS material.
    pub tls: ClientTls,
    /// The member's name (the node name), recorded in the sidecar.
    pub member_name: String,
}

/// Takes one snapshot of `source` into `dir` (created if needed) and
/// returns its path and sidecar. Does not prune. On any error nothing is
/// left under a snapshot's name.
pub async fn take(
    source: &Source,
    dir: &Path,
    reason: Reason,
    now_ms: u64,
) -> Result<(PathBuf, SnapshotMeta), SnapshotError> {
    take_for(source, dir, reason, None, now_ms).await
}

/// [`take`], recording the membership `change` in the sidecar.
async fn take_for(
    source: &Source,
    dir: &Path,
    reason: Reason,
    change: Option<String>,
    now_ms: u64,
) -> Result<(PathBuf, SnapshotMeta), SnapshotError> {
    match tokio::time::timeout(
        SNAPSHOT_TIMEOUT,
        take_untimed(source, dir, reason, change, now_ms),
    )
    .await
    {
        Ok(r) => r,
        Err(_) => Err(SnapshotError::Stream {
            endpoint: source.endpoint.clone(),
            reason: format!("not finished within {SNAPSHOT_TIMEOUT:?}"),
        }),
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, SnapshotError> + Send + 'static,
) -> Result<T, SnapshotError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| SnapshotError::Io {
            op: "running a file task for",
            path: PathBuf::from(DIR_NAME),
            source: io::Error::other(e.to_string()),
        })?
}

async fn take_untimed(
    source: &Source,
    dir: &Path,
    reason: Reason,
    change: Option<String>,
    now_ms: u64,
) -> Result<(PathBuf, SnapshotMeta), SnapshotError> {
    let endpoint = source.endpoint.clone();
    let etcd_err = |source: EtcdError| SnapshotError::Etcd {
        endpoint: endpoint.clone(),
        source,
    };
    let stream_err = |reason: String| SnapshotError::Stream {
        endpoint: endpoint.clone(),
        reason,
    };
    // The one constructor; its request timeout must outlast the stream.
    let mut client = tls_client(
        std::slice::from_ref(&source.endpoint),
        &source.tls,
        Duration::from_secs(3),
        SNAPSHOT_TIMEOUT,
    )
    .await
    .map_err(etcd_err)?;
    let status = tokio::time::timeout(Duration::from_secs(10), client.status())
        .await
        .map_err(|_| stream_err("status: no answer within 10 s".to_owned()))?
        .map_err(|source| {
            etcd_err(EtcdError::Rpc {
                op: "status",
                source,
            })
        })?;
    if status.is_learner() {
        return Err(SnapshotError::Learner {
            endpoint: source.endpoint.clone(),
        });
    }
    let header = status.header().ok_or_else(|| {
        etcd_err(EtcdError::Incomplete {
            op: "status",
            field: "header",
        })
    })?;
    let meta = SnapshotMeta {
        format: META_FORMAT,
        file: file_name(now_ms),
        sha256: String::new(),
        size: 0,
        revision: header.revision(),
        taken_at_ms: now_ms,
        taken_at: utc(now_ms, false),
        member_id: format!("{:x}", header.member_id()),
        member_name: source.member_name.clone(),
        cluster_id: format!("{:x}", header.cluster_id()),
        etcd_version: status.version().to_owned(),
        reason,
        change,
    };
    let owned_dir = dir.to_owned();
    let path = dir.join(&meta.file);
    let target = path.clone();
    let mut writer = blocking(move || {
        ensure_dir(&owned_dir)?;
        SnapshotWriter::create(&target)
    })
    .await?;
    let mut stream = client.snapshot().await.map_err(|source| {
        etcd_err(EtcdError::Rpc {
            op: "snapshot",
            source,
        })
    })?;
    let mut batch: Vec<u8> = Vec::with_capacity(WRITE_BATCH);
    loop {
        let msg = tokio::time::timeout(STREAM_IDLE_TIMEOUT, stream.message())
            .await
            .map_err(|_| stream_err(format!("no data for {STREAM_IDLE_TIMEOUT:?}")))?
            .map_err(|source| {
                etcd_err(EtcdError::Rpc {
                    op: "snapshot stream",
                    source,
                })
            })?;
        let done = msg.is_none();
        if let Some(m) = msg {
            batch.extend_from_slice(m.blob());
        }
        if batch.len() >= WRITE_BATCH || (done && !batch.is_empty()) {
            let chunk = std::mem::take(&mut batch);
            let mut w = writer;
            writer = blocking(move || {
                w.write(&chunk)?;
                Ok(w)
            })
            .await?;
        }
        if done {
            break;
        }
    }
    let meta = blocking(move || writer.finish(meta)).await?;
    Ok((path, meta))
}

/// How long a snapshot before a membership change may take, in all (over
/// every endpoint tried): the change waits at most this long.
pub const PRE_CHANGE_TIMEOUT: Duration = Duration::from_secs(20);
/// A membership-change snapshot younger than this covers the next change
/// too (a join's remove → add → promote run within seconds, and join and
/// promote attempts repeat every backoff: without this each retry would
/// stream the whole database again).
pub const PRE_CHANGE_MIN_GAP_MS: u64 = 10 * 60 * 1000;

/// What became of the snapshot before a membership change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum PreChangeResult {
    /// Written and verified (etcd's digest) at `path`.
    Taken {
        /// The snapshot.
        path: String,
        /// The member it came from (client URL).
        endpoint: String,
    },
    /// Not taken: a recent one covers this change.
    Skipped {
        /// Which one, and how old.
        reason: String,
    },
    /// No member gave one in time; the change went ahead anyway.
    Failed {
        /// Every endpoint's error.
        error: String,
    },
}

/// The last snapshot before a membership change (status).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreChange {
    /// The change (`pre-add-learner`, `pre-remove-<id>`, `pre-promote-<id>`).
    pub change: String,
    /// When it was attempted (ms since the epoch).
    pub at_ms: u64,
    /// What became of it.
    #[serde(flatten)]
    pub result: PreChangeResult,
}

impl PreChange {
    /// The status line. Pure.
    pub fn line(&self) -> String {
        let at = utc(self.at_ms, false);
        match &self.result {
            PreChangeResult::Taken { path, endpoint } => {
                format!("  before membership change {} at {at}: {path} (from {endpoint})", self.change)
            }
            PreChangeResult::Skipped { reason } => {
                format!("  before membership change {} at {at}: skipped, {reason}", self.change)
            }
            PreChangeResult::Failed { error } => format!(
                "  before membership change {} at {at}: SNAPSHOT FAILED (the change went ahead): {error}",
                self.change
            ),
        }
    }
}

/// Whether a membership-change snapshot taken at `newest_ms` covers a
/// change at `now_ms` ([`PRE_CHANGE_MIN_GAP_MS`]). Pure.
pub fn pre_change_covered(newest_ms: Option<u64>, now_ms: u64) -> bool {
    newest_ms.is_some_and(|t| t <= now_ms && now_ms - t < PRE_CHANGE_MIN_GAP_MS)
}

/// The snapshot before a membership change `change` the agent is about
/// to make (issue 17): streamed from the first of `endpoints` (live
/// members' client URLs, through the one TLS client) that gives one,
/// into `dir` (this node's snapshot directory) with reason
/// `membership-change` and the change in its sidecar, then pruned to
/// `retain`. Bounded by [`PRE_CHANGE_TIMEOUT`] in all; skipped when one
/// younger than [`PRE_CHANGE_MIN_GAP_MS`] is there. Never fails: the
/// outcome is returned for the log and the status, and the caller makes
/// the change either way (see the agent README, "etcd snapshots").
pub async fn before_change(
    endpoints: &[String],
    tls: &ClientTls,
    dir: &Path,
    retain: u32,
    change: &str,
    now_ms: u64,
) -> PreChange {
    let owned_dir = dir.to_owned();
    let newest = blocking(move || {
        Ok(match list(&owned_dir) {
            Ok(all) => all
                .into_iter()
                .find(|(_, m)| m.reason == Reason::MembershipChange)
                .map(|(p, m)| (p, m.taken_at_ms)),
            Err(_) => None,
        })
    })
    .await
    .unwrap_or(None);
    let done = |result| PreChange {
        change: change.to_owned(),
        at_ms: now_ms,
        result,
    };
    if let Some((path, t)) = &newest {
        if pre_change_covered(Some(*t), now_ms) {
            return done(PreChangeResult::Skipped {
                reason: format!(
                    "{} taken {} s ago covers it",
                    path.display(),
                    (now_ms - t) / 1000
                ),
            });
        }
    }
    let mut errors: Vec<String> = Vec::new();
    let attempt = async {
        for endpoint in endpoints {
            let source = Source {
                endpoint: endpoint.clone(),
                tls: tls.clone(),
                member_name: endpoint.clone(),
            };
            match take_for(
                &source,
                dir,
                Reason::MembershipChange,
                Some(change.to_owned()),
                now_ms,
            )
            .await
            {
                Ok((path, meta)) => return Some((path, meta, endpoint.clone())),
                Err(e) => errors.push(e.to_string()),
            }
        }
        None
    };
    let taken = tokio::time::timeout(PRE_CHANGE_TIMEOUT, attempt).await;
    match taken {
        Ok(Some((path, meta, endpoint))) => {
            let (owned_dir, keep) = (dir.to_owned(), meta.file.trim_end_matches(".db").to_owned());
            if let Err(e) = blocking(move || prune(&owned_dir, retain as usize, Some(&keep))).await
            {
                tracing::error!("etcd snapshot pruning: {e}");
            }
            done(PreChangeResult::Taken {
                path: path.display().to_string(),
                endpoint,
            })
        }
        Ok(None) if endpoints.is_empty() => done(PreChangeResult::Failed {
            error: "no member client URL announced".to_owned(),
        }),
        Ok(None) => done(PreChangeResult::Failed {
            error: errors.join("; "),
        }),
        Err(_) => done(PreChangeResult::Failed {
            error: format!("not finished within {PRE_CHANGE_TIMEOUT:?}"),
        }),
    }
}

/// The `snapshots` section of the status report.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SnapshotsReport {
    /// Snapshots are taken on this node (masters).
    pub enabled: bool,
    /// The directory.
    pub dir: String,
    /// Seconds between periodic snapshots (0: none).
    pub interval_s: u64,
    /// Snapshots kept.
    pub retain: u32,
    /// Complete snapshots in the directory.
    pub count: usize,
    /// The newest complete snapshot.
    pub last: Option<LastSnapshot>,
    /// Its age in seconds when the section was last refreshed (at most a
    /// minute ago).
    pub last_age_s: Option<u64>,
    /// When the next periodic snapshot is due (ms since the epoch).
    pub next_due_ms: Option<u64>,
    /// The last failure (taking, pruning or listing), until a snapshot
    /// succeeds.
    pub last_error: Option<String>,
    /// When it happened (ms since the epoch).
    pub last_error_at_ms: Option<u64>,
    /// The last snapshot before a membership change this node made (also
    /// on a joiner, before its periodic snapshots start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_change: Option<PreChange>,
}

/// The newest snapshot, as `agent status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LastSnapshot {
    /// Its path.
    pub path: String,
    /// When it began (ms since the epoch).
    pub taken_at_ms: u64,
    /// Size in bytes.
    pub size: u64,
    /// The member's revision when it began.
    pub revision: i64,
    /// Why it was taken.
    pub reason: Reason,
}

fn age_text(s: u64) -> String {
    match s {
        0..=119 => format!("{s} s"),
        120..=7199 => format!("{} min", s / 60),
        _ => format!("{} h {} min", s / 3600, s % 3600 / 60),
    }
}

fn size_text(b: u64) -> String {
    match b {
        0..=9_999 => format!("{b} B"),
        10_000..=1_048_575 => format!("{} KiB", b / 1024),
        _ => format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0)),
    }
}

impl SnapshotsReport {
    /// The `snapshots:` line of `agent status` and the lines under it.
    /// Pure.
    pub fn lines(&self) -> Vec<String> {
        let mut out = self.periodic_lines();
        out.extend(self.pre_change.as_ref().map(PreChange::line));
        out
    }

    fn periodic_lines(&self) -> Vec<String> {
        if !self.enabled {
            return vec![
                "snapshots: not started (they start once this master's etcd member is a healthy voter)"
                    .to_owned(),
            ];
        }
        let every = if self.interval_s == 0 {
            "periodic snapshots off".to_owned()
        } else {
            format!("every {}", age_text(self.interval_s))
        };
        let mut out = vec![match &self.last {
            Some(l) => format!(
                "snapshots: last {} ago, {}, revision {}, {} ({}); {} kept of {}, {every}",
                self.last_age_s
                    .map(age_text)
                    .unwrap_or_else(|| "?".to_owned()),
                size_text(l.size),
                l.revision,
                l.path,
                l.reason.name(),
                self.count,
                self.retain,
            ),
            None => format!("snapshots: none yet in {}, {every}", self.dir),
        }];
        if let Some(e) = &self.last_error {
            out.push(format!(
                "  FAILED{}: {e}",
                self.last_error_at_ms
                    .map(|t| format!(" at {}", utc(t, false)))
                    .unwrap_or_default()
            ));
        }
        out
    }
}

/// Takes snapshots of the local member one at a time, prunes, and keeps
/// the status section current.
pub struct Snapshotter {
    source: Source,
    dir: PathBuf,
    retain: usize,
    interval_s: u64,
    report: watch::Sender<StatusReport>,
    /// One snapshot (and prune) at a time.
    lock: Mutex<()>,
}

impl Snapshotter {
    /// A snapshotter of `source` into `dir` that reports into `report`.
    pub fn new(
        source: Source,
        dir: PathBuf,
        interval_s: u64,
        retain: u32,
        report: watch::Sender<StatusReport>,
    ) -> Arc<Self> {
        report.send_modify(|r| {
            r.snapshots = SnapshotsReport {
                enabled: true,
                dir: dir.display().to_string(),
                interval_s,
                retain,
                ..Default::default()
            };
        });
        Arc::new(Snapshotter {
            source,
            dir,
            retain: retain.max(1) as usize,
            interval_s,
            report,
            lock: Mutex::new(()),
        })
    }

    fn failed(&self, e: &SnapshotError, now: u64) {
        tracing::error!("etcd snapshot: {e}");
        self.report.send_modify(|r| {
            r.snapshots.last_error = Some(e.to_string());
            r.snapshots.last_error_at_ms = Some(now);
        });
    }

    /// Re-reads the directory into the status section; returns the newest
    /// snapshot's time.
    async fn refresh(&self, now: u64) -> Option<u64> {
        let dir = self.dir.clone();
        match blocking(move || {
            ensure_dir(&dir)?;
            list(&dir)
        })
        .await
        {
            Ok(all) => {
                let newest = all.first().map(|(_, m)| m.taken_at_ms);
                self.report.send_modify(|r| {
                    let s = &mut r.snapshots;
                    s.count = all.len();
                    s.last = all.first().map(|(p, m)| LastSnapshot {
                        path: p.display().to_string(),
                        taken_at_ms: m.taken_at_ms,
                        size: m.size,
                        revision: m.revision,
                        reason: m.reason,
                    });
                    s.last_age_s = newest.map(|t| now.saturating_sub(t) / 1000);
                });
                newest
            }
            Err(e) => {
                self.failed(&e, now);
                None
            }
        }
    }

    /// Takes a snapshot now, then prunes to the retention; the status
    /// shows the outcome either way (a failure also in the log).
    pub async fn snapshot(&self, reason: Reason) -> Result<(PathBuf, SnapshotMeta), SnapshotError> {
        let _one = self.lock.lock().await;
        let now = crate::run::now_ms();
        let taken = take(&self.source, &self.dir, reason, now).await;
        let result = match taken {
            Ok((path, meta)) => {
                tracing::info!(
                    "etcd snapshot {} ({} bytes, revision {}, {})",
                    path.display(),
                    meta.size,
                    meta.revision,
                    reason.name()
                );
                let (dir, retain) = (self.dir.clone(), self.retain);
                let keep = meta.file.trim_end_matches(".db").to_owned();
                match blocking(move || prune(&dir, retain, Some(&keep))).await {
                    Ok(removed) => {
                        for p in removed {
                            tracing::info!("etcd snapshot pruned: {}", p.display());
                        }
                        self.report.send_modify(|r| {
                            r.snapshots.last_error = None;
                            r.snapshots.last_error_at_ms = None;
                        });
                    }
                    // The snapshot stands; the failure to prune shows.
                    Err(e) => self.failed(&e, now),
                }
                Ok((path, meta))
            }
            Err(e) => {
                self.failed(&e, now);
                Err(e)
            }
        };
        self.refresh(crate::run::now_ms()).await;
        result
    }

    /// The periodic task: a snapshot one interval after the newest one
    /// (at once when there is none), retried after [`RETRY_AFTER`] when it
    /// fails; the status section is refreshed at least every minute (the
    /// last snapshot's age). Returns at once when the interval is 0.
    pub async fn run_periodic(self: Arc<Self>) {
        if self.interval_s == 0 {
            tracing::info!("etcd snapshots: periodic snapshots off (snapshot_interval_s = 0)");
            self.refresh(crate::run::now_ms()).await;
            return;
        }
        let interval_ms = self.interval_s.saturating_mul(1000);
        let retry_ms = (RETRY_AFTER.as_millis() as u64).min(interval_ms);
        // From the newest snapshot on disk at first (none, or unreadable:
        // now); then from this task's own outcomes, so a directory that
        // cannot be listed never makes it snapshot in a loop.
        let mut due = None;
        loop {
            let now = crate::run::now_ms();
            let newest = self.refresh(now).await;
            let due_ms = *due
                .get_or_insert_with(|| next_due_ms(newest, self.interval_s, now).unwrap_or(now));
            self.report
                .send_modify(|r| r.snapshots.next_due_ms = Some(due_ms));
            if due_ms <= now {
                due = Some(match self.snapshot(Reason::Periodic).await {
                    Ok((_, meta)) => meta.taken_at_ms.saturating_add(interval_ms),
                    Err(_) => crate::run::now_ms().saturating_add(retry_ms),
                });
                continue;
            }
            let wait = (due_ms - now).min(60_000);
            tokio::time::sleep(Duration::from_millis(wait)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    const A: &str = "etcd-20240101T000000.000Z";
    const B: &str = "etcd-20240101T060000.000Z";
    const C: &str = "etcd-20240101T120000.000Z";
    const D: &str = "etcd-20240101T180000.000Z";

    fn complete(stems: &[&str]) -> Vec<String> {
        stems
            .iter()
            .flat_map(|st| [format!("{st}.db"), format!("{st}.db.json")])
            .collect()
    }

    /// A stream as etcd sends it: the database, then its SHA-256.
    fn etcd_stream(db: &[u8]) -> Vec<u8> {
        let mut v = db.to_vec();
        v.extend_from_slice(&Sha256::digest(db));
        v
    }

    fn meta() -> SnapshotMeta {
        SnapshotMeta {
            format: META_FORMAT,
            file: format!("{A}.db"),
            sha256: String::new(),
            size: 0,
            revision: 42,
            taken_at_ms: 1_704_067_200_000,
            taken_at: utc(1_704_067_200_000, false),
            member_id: "9".into(),
            member_name: "master-1".into(),
            cluster_id: "2a".into(),
            etcd_version: "3.4.23".into(),
            reason: Reason::Periodic,
            change: None,
        }
    }

    fn names(dir: &Path) -> Vec<String> {
        names_in(dir).unwrap()
    }

    #[test]
    fn utc_names_sort_by_time() {
        assert_eq!(utc(0, true), "19700101T000000.000Z");
        assert_eq!(utc(1_700_000_000_123, false), "2023-11-14T22:13:20.123Z");
        assert_eq!(utc(951_782_400_000, false), "2000-02-29T00:00:00.000Z");
        assert_eq!(file_name(1_704_067_200_000), format!("{A}.db"));
        let mut times = [1_704_067_200_000u64, 999_999_999_999, 1_000_000_000_000, 5];
        let mut by_name: Vec<String> = times.iter().map(|t| file_name(*t)).collect();
        by_name.sort();
        times.sort();
        assert_eq!(
            by_name,
            times.iter().map(|t| file_name(*t)).collect::<Vec<_>>()
        );
    }

    #[test]
    fn classify_knows_only_its_own_names() {
        assert_eq!(classify(&format!("{A}.db")), Entry::Db(A.into()));
        assert_eq!(classify(&format!("{A}.db.json")), Entry::Sidecar(A.into()));
        assert_eq!(classify(&format!(".{A}.db.tmp123.0")), Entry::Temp);
        assert_eq!(classify(&format!(".{A}.db.json.tmp9.4")), Entry::Temp);
        for other in [
            "etcd-manual.db",
            "etcd-20240101T000000Z.db",
            "backup.db",
            ".etcd-x.db.tmp1.0",
            "etcd-20240101T000000.000Z.db.bak",
            "notes.txt",
        ] {
            assert_eq!(classify(other), Entry::Other, "{other}");
        }
    }

    #[test]
    fn retention_keeps_the_newest_and_prunes_oldest_first() {
        let names = complete(&[A, B, C, D]);
        assert_eq!(
            to_prune(&names, 2, Some(D)),
            s(&[
                &format!("{A}.db"),
                &format!("{A}.db.json"),
                &format!("{B}.db"),
                &format!("{B}.db.json")
            ])
        );
        assert!(to_prune(&names, 4, Some(D)).is_empty());
        assert!(to_prune(&names, 8, None).is_empty());
        // retain 0 counts as 1: the newest stays.
        assert_eq!(to_prune(&names, 0, None).len(), 6);
        assert_eq!(complete_newest_first(&names), s(&[D, C, B, A]));
    }

    #[test]
    fn retention_never_prunes_the_one_just_written() {
        // The clock stepped back: the new snapshot A sorts oldest.
        let names = complete(&[A, B, C, D]);
        let pruned = to_prune(&names, 2, Some(A));
        assert!(!pruned.iter().any(|n| n.starts_with(A)), "{pruned:?}");
        assert_eq!(
            pruned,
            s(&[
                &format!("{B}.db"),
                &format!("{B}.db.json"),
                &format!("{C}.db"),
                &format!("{C}.db.json")
            ])
        );
        assert_eq!(to_prune(&names, 1, Some(A)).len(), 6);
    }

    #[test]
    fn leftovers_go_and_foreign_files_stay() {
        let mut names = complete(&[B, C]);
        names.push(format!("{A}.db")); // no sidecar: a crash between renames
        names.push(format!("{D}.db.json")); // no database
        names.push(format!(".{D}.db.tmp77.0")); // a crashed stream
        names.push("etcd-manual.db".into());
        names.push("README".into());
        let pruned = to_prune(&names, 8, Some(C));
        assert_eq!(
            pruned,
            s(&[
                &format!(".{D}.db.tmp77.0"),
                &format!("{A}.db"),
                &format!("{D}.db.json")
            ])
        );
        // A leftover never counts towards the retention.
        assert_eq!(complete_newest_first(&names), s(&[C, B]));
    }

    #[test]
    fn next_due_follows_the_newest_snapshot() {
        let h = 3_600_000;
        assert_eq!(next_due_ms(None, 21_600, 10 * h), Some(10 * h));
        assert_eq!(next_due_ms(Some(h), 21_600, 2 * h), Some(7 * h));
        // Overdue: due at once (the loop sees due <= now).
        assert_eq!(next_due_ms(Some(h), 3600, 5 * h), Some(2 * h));
        // A snapshot from the future (the clock went back): now.
        assert_eq!(next_due_ms(Some(9 * h), 3600, 5 * h), Some(5 * h));
        assert_eq!(next_due_ms(Some(h), 0, 5 * h), None);
    }

    #[test]
    fn sidecar_round_trip_and_bad_sidecars_name_their_path() {
        let m = SnapshotMeta {
            sha256: "ab".repeat(32),
            size: 1234,
            ..meta()
        };
        let p = Path::new("/x/etcd.db.json");
        assert_eq!(SnapshotMeta::parse(p, &m.to_json()).unwrap(), m);
        let text = String::from_utf8(m.to_json()).unwrap();
        assert!(text.contains("\"reason\": \"periodic\""), "{text}");
        let e = SnapshotMeta::parse(p, b"{not json").unwrap_err();
        assert!(e.to_string().contains("/x/etcd.db.json"), "{e}");
        let other = SnapshotMeta {
            format: 2,
            ..m.clone()
        };
        let e = SnapshotMeta::parse(p, &other.to_json()).unwrap_err();
        assert!(e.to_string().contains("format 2"), "{e}");
    }

    #[test]
    fn digests_check_etcds_trailing_sha_whatever_the_chunking() {
        let db: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let stream = etcd_stream(&db);
        for chunk in [1, 5, 31, 32, 33, 4096, stream.len()] {
            let mut d = Digests::new();
            for c in stream.chunks(chunk) {
                d.update(c);
            }
            let (sha, size, ok) = d.finish();
            assert!(ok, "chunk {chunk}");
            assert_eq!(size, stream.len() as u64);
            assert_eq!(sha, hex(&Sha256::digest(&stream)));
        }
        // Truncated by one byte: no longer etcd's digest.
        let mut d = Digests::new();
        d.update(&stream[..stream.len() - 1]);
        assert!(!d.finish().2);
        let mut d = Digests::new();
        d.update(&stream[..10]);
        assert!(!d.finish().2);
    }

    #[test]
    fn a_written_snapshot_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(format!("{A}.db"));
        let stream = etcd_stream(b"a bolt database, as far as this test cares");
        let mut w = SnapshotWriter::create(&path).unwrap();
        for c in stream.chunks(7) {
            w.write(c).unwrap();
        }
        let written = w.finish(meta()).unwrap();
        assert_eq!(written.size, stream.len() as u64);
        assert_eq!(verify(&path).unwrap(), written);
        assert_eq!(
            names(dir.path()),
            s(&[&format!("{A}.db"), &format!("{A}.db.json")])
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "a snapshot holds every Secret");
        let listed = list(dir.path()).unwrap();
        assert_eq!(listed, vec![(path, written)]);
    }

    #[test]
    fn a_failed_write_leaves_nothing_under_the_final_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(format!("{A}.db"));
        // The stream broke off: the writer is dropped unfinished.
        {
            let mut w = SnapshotWriter::create(&path).unwrap();
            w.write(b"half a snapshot").unwrap();
            assert_eq!(names(dir.path()).len(), 1, "only the temporary file");
        }
        assert!(names(dir.path()).is_empty(), "{:?}", names(dir.path()));
        // The stream ended but etcd's digest does not match (truncated).
        let mut stream = etcd_stream(b"some database bytes");
        stream.pop();
        let mut w = SnapshotWriter::create(&path).unwrap();
        w.write(&stream).unwrap();
        let e = w.finish(meta()).unwrap_err();
        assert!(matches!(e, SnapshotError::EtcdDigest { .. }), "{e}");
        assert!(e.to_string().contains(&format!("{A}.db")), "{e}");
        assert!(names(dir.path()).is_empty(), "{:?}", names(dir.path()));
        // A previous snapshot under the same name is left alone.
        fs::write(&path, b"old").unwrap();
        let mut w = SnapshotWriter::create(&path).unwrap();
        w.write(b"new but broken").unwrap();
        drop(w);
        assert_eq!(fs::read(&path).unwrap(), b"old");
    }

    #[test]
    fn a_corrupted_snapshot_is_refused_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(format!("{A}.db"));
        let stream = etcd_stream(b"0123456789 a database of some length");
        let mut w = SnapshotWriter::create(&path).unwrap();
        w.write(&stream).unwrap();
        w.finish(meta()).unwrap();
        // One flipped byte, same size.
        let mut bytes = fs::read(&path).unwrap();
        bytes[3] ^= 0x40;
        fs::write(&path, &bytes).unwrap();
        let e = verify(&path).unwrap_err();
        assert!(matches!(e, SnapshotError::Corrupt { .. }), "{e}");
        assert!(e.to_string().contains(&path.display().to_string()), "{e}");
        assert!(e.to_string().contains("SHA-256"), "{e}");
        // Truncated.
        fs::write(&path, &bytes[..10]).unwrap();
        let e = verify(&path).unwrap_err();
        assert!(e.to_string().contains(&path.display().to_string()), "{e}");
        assert!(e.to_string().contains("bytes"), "{e}");
        // No sidecar.
        fs::remove_file(sidecar_path(&path)).unwrap();
        let e = verify(&path).unwrap_err();
        assert!(matches!(e, SnapshotError::MissingSidecar { .. }), "{e}");
        assert!(e.to_string().contains(&path.display().to_string()), "{e}");
        // A sidecar that agrees with a file etcd never wrote (no digest).
        fs::write(&path, b"not a snapshot at all, but recorded").unwrap();
        let m = SnapshotMeta {
            sha256: hex(&Sha256::digest(fs::read(&path).unwrap())),
            size: fs::metadata(&path).unwrap().len(),
            ..meta()
        };
        fs::write(sidecar_path(&path), m.to_json()).unwrap();
        let e = verify(&path).unwrap_err();
        assert!(matches!(e, SnapshotError::EtcdDigest { .. }), "{e}");
    }

    #[test]
    fn a_copy_is_verified_and_a_bad_one_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(format!("{A}.db"));
        let mut w = SnapshotWriter::create(&path).unwrap();
        w.write(&etcd_stream(b"the database")).unwrap();
        let m = w.finish(meta()).unwrap();
        let out = dir.path().join("copy.db");
        copy_verified(&path, &m, &out).unwrap();
        let copied = verify(&out).unwrap();
        assert_eq!(copied.file, "copy.db");
        assert_eq!((copied.sha256, copied.size), (m.sha256.clone(), m.size));
        // The source changed since its sidecar: no copy.
        fs::write(&path, b"changed").unwrap();
        let out2 = dir.path().join("copy2.db");
        let e = copy_verified(&path, &m, &out2).unwrap_err();
        assert!(e.to_string().contains(&path.display().to_string()), "{e}");
        assert!(!out2.exists() && !sidecar_path(&out2).exists());
    }

    #[test]
    fn prune_on_disk_removes_oldest_and_leftovers_only() {
        let dir = tempfile::tempdir().unwrap();
        for n in complete(&[A, B, C, D]) {
            fs::write(dir.path().join(n), b"x").unwrap();
        }
        fs::write(dir.path().join(format!(".{A}.db.tmp1.0")), b"x").unwrap();
        fs::write(dir.path().join("keep-me.txt"), b"x").unwrap();
        let removed = prune(dir.path(), 2, Some(D)).unwrap();
        assert_eq!(removed.len(), 5);
        assert_eq!(
            names(dir.path()),
            s(&[
                &format!("{C}.db"),
                &format!("{C}.db.json"),
                &format!("{D}.db"),
                &format!("{D}.db.json"),
                "keep-me.txt"
            ])
        );
    }

    #[test]
    fn the_status_lines_show_age_size_revision_and_failure() {
        let mut r = SnapshotsReport {
            enabled: true,
            dir: "/var/lib/kubeboot/etcd-snapshots".into(),
            interval_s: 21_600,
            retain: 8,
            ..Default::default()
        };
        assert_eq!(
            r.lines(),
            ["snapshots: none yet in /var/lib/kubeboot/etcd-snapshots, every 6 h 0 min"]
        );
        r.count = 3;
        r.last_age_s = Some(4000);
        r.last = Some(LastSnapshot {
            path: format!("/var/lib/kubeboot/etcd-snapshots/{A}.db"),
            taken_at_ms: 0,
            size: 3 * 1024 * 1024,
            revision: 1234,
            reason: Reason::Periodic,
        });
        r.last_error = Some("snapshot of https://10.0.0.1:2379: boom".into());
        r.last_error_at_ms = Some(1_700_000_000_123);
        let lines = r.lines();
        assert_eq!(
            lines[0],
            format!(
                "snapshots: last 66 min ago, 3.0 MiB, revision 1234, \
                 /var/lib/kubeboot/etcd-snapshots/{A}.db (periodic); 3 kept of 8, every 6 h 0 min"
            )
        );
        assert_eq!(
            lines[1],
            "  FAILED at 2023-11-14T22:13:20.123Z: snapshot of https://10.0.0.1:2379: boom"
        );
        r.interval_s = 0;
        assert!(r.lines()[0].contains("periodic snapshots off"));
        let waiting = SnapshotsReport::default();
        assert!(waiting.lines()[0].contains("not started"));
    }
}
