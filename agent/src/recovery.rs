//! Recovery from quorum loss (issue 17): `agent recover` on a surviving
//! master rebuilds a one-member etcd cluster from this node's data under a
//! new cluster id and the next recovery epoch; the other masters yield to
//! that epoch ([`crate::core::epoch`]) and rejoin as learners.
//!
//! **Refusals** ([`recover`]): the confirmation must name this node
//! (`--confirm-node <name>`); only a master recovers; and never while a
//! quorum exists — a linearizable read on the local member succeeds, or a
//! majority of the members answers `Status`, or a linearizable read
//! through any member endpoint discovery announces succeeds. The refusal
//! names which.
//!
//! **Steps**, each persisted before the next, so the run loop drives them
//! as a reconciler ([`resume`] at start re-runs an interrupted one):
//!
//! 1. persist the [`RecoveryRecord`] (stage `restoring`: new epoch, token,
//!    source, old cluster id); the epoch of the state is unchanged yet;
//! 2. stop etcd (the supervisor);
//! 3. the source: a named snapshot, checked by `snapshot::verify` (sidecar,
//!    SHA-256, etcd's digest), or this member's `member/snap/db`, first
//!    copied to `<state>/recovery/source.db` (so a re-run after the old
//!    data moved still has it);
//! 4. `etcdctl snapshot restore` into `<state>/recovery/etcd.new` (removed
//!    first if a crash left one) with this node as the only member and a
//!    token derived from the secret and the new epoch
//!    ([`recovery_token`]): a new cluster id;
//! 5. the old data dir to `<state>/etcd.epoch-<n>.<unix time>` (recorded
//!    in the record at once; never deleted), the restored one in its place;
//! 6. persist the new state (epoch + 1, stage `restored`); the plan then
//!    restarts etcd on it (`Event::Recovered`), and once etcd answers, the
//!    new cluster id is recorded (stage `done`).
//!
//! A crash before 6 leaves stage `restoring` and [`resume`] runs 2-6
//! again: the source copy is reused, a partial `etcd.new` is removed, and
//! a data dir that is already the restored copy is set aside too (under
//! another name; the first set-aside stays recorded). A crash after 6 is
//! an ordinary restart with data.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use supervisor::{AnySupervisor, Supervisor};
use thiserror::Error;
use tokio::sync::watch;

use crate::core::epoch::{self, Epoch};
use crate::core::model::{hex16, PersistedState};
use crate::core::model::{recovery_token, RecoveryRecord, RecoveryStage};
use crate::etcd::snapshot::{self, SnapshotError};
use crate::etcd::{ClientTls, Etcd, SERVICE_NAME};
use crate::state::{StateDir, StateError};
use crate::status::StatusReport;
use crate::vip::Vip;

/// The working directory of a recovery, under the state directory.
pub const DIR_NAME: &str = "recovery";

/// Errors and refusals of a recovery; each names the node, path or
/// endpoint concerned.
#[derive(Debug, Error)]
pub enum RecoveryError {
    /// No confirmation given.
    #[error("refusing to recover: give --confirm-node {node} (this node's name) to confirm that this node's data becomes the cluster's")]
    NotConfirmed {
        /// This node's name.
        node: String,
    },
    /// The confirmation names another node.
    #[error("refusing to recover: --confirm-node {given} does not name this node ({node})")]
    WrongNode {
        /// What was given.
        given: String,
        /// This node's name.
        node: String,
    },
    /// Workers have no etcd data.
    #[error("refusing to recover: {node} is not a master (workers run no etcd)")]
    NotMaster {
        /// This node's name.
        node: String,
    },
    /// The cluster still has a quorum.
    #[error("refusing to recover: the cluster has a quorum ({evidence}); recovery is only for a lost quorum")]
    QuorumExists {
        /// What proved it.
        evidence: String,
    },
    /// There is no member db to recover from.
    #[error("no etcd member data at {path} (name a snapshot with --from-snapshot)")]
    NoMemberData {
        /// The missing db file.
        path: PathBuf,
    },
    /// A snapshot failed its check.
    #[error("refusing the snapshot: {0}")]
    Snapshot(#[from] SnapshotError),
    /// A file operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// `etcdctl snapshot restore` failed.
    #[error("`{command}` failed: {output}")]
    Restore {
        /// The command line.
        command: String,
        /// Its exit status and stderr.
        output: String,
    },
    /// Reading or writing the state.
    #[error(transparent)]
    State(#[from] StateError),
    /// etcd could not be stopped.
    #[error("stopping etcd: {0}")]
    Stop(String),
    /// The persisted state has no recovery in progress to resume.
    #[error("no recovery in progress")]
    NothingToResume,
}

/// Maps an I/O error to [`RecoveryError::Io`] naming the operation and
/// the path (the recovery's and the first-boot restore's).
pub(crate) fn io_err<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> RecoveryError + 'a {
    move |source| RecoveryError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

/// What `agent recover` asks for (over the control socket).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoverRequest {
    /// Must name this node.
    pub confirm_node: Option<String>,
    /// Restore this snapshot (with its sidecar) instead of the member's db.
    pub from_snapshot: Option<PathBuf>,
}

/// The result reported to `agent recover`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoverOutcome {
    /// The recovery's facts as persisted.
    pub record: RecoveryRecord,
    /// The steps done, in order, with their times.
    pub steps: Vec<String>,
}

/// What a recovery needs from the running agent.
pub struct RecoverIo<'a> {
    /// The state directory.
    pub state: &'a StateDir,
    /// Runs etcd.
    pub supervisor: &'a AnySupervisor,
    /// This node's name (the etcd member name).
    pub name: &'a str,
    /// This node's id.
    pub node_id: [u8; 16],
    /// True on masters.
    pub master: bool,
    /// The cluster secret's bytes (the token derivation).
    pub secret: &'a [u8],
    /// The cluster name.
    pub cluster_name: &'a str,
    /// This node's peer URL.
    pub peer_url: &'a str,
    /// This node's client URL.
    pub client_url: &'a str,
    /// Client URLs of the members discovery announces.
    pub announced: Vec<String>,
    /// The agent's etcd client TLS.
    pub tls: &'a ClientTls,
    /// The `etcdctl` binary.
    pub etcdctl: PathBuf,
}

/// Evidence of a working quorum, or `None`: a linearizable read on the
/// local member; a majority of the members (as the local member lists
/// them) answering `Status`; a linearizable read through any announced
/// member endpoint. Each probe is bounded (2 s).
pub async fn quorum_evidence(local: &str, announced: &[String], tls: &ClientTls) -> Option<String> {
    let t = Duration::from_secs(2);
    if let Ok(c) = Etcd::connect(&[local.to_owned()], tls, t).await {
        if c.quorum_read().await.is_ok() {
            return Some(format!(
                "a linearizable read on the local member {local} succeeded"
            ));
        }
        if let Ok(members) = c.members().await {
            let urls = members
                .iter()
                .filter_map(|m| m.client_urls.first().cloned());
            let up = answering(urls, tls, t, Probe::Status).await;
            if !members.is_empty() && up.len() * 2 > members.len() {
                return Some(format!(
                    "{} of {} members answer: {}",
                    up.len(),
                    members.len(),
                    up.join(", ")
                ));
            }
        }
    }
    // Discovery still lists a master powered off seconds ago: asked at once.
    let urls = announced.iter().filter(|u| *u != local).cloned();
    if let Some(url) = answering(urls, tls, t, Probe::QuorumRead).await.first() {
        return Some(format!(
            "a linearizable read through the member {url} succeeded"
        ));
    }
    None
}

/// What [`answering`] asks each member.
#[derive(Clone, Copy)]
enum Probe {
    /// `Status` (the member runs).
    Status,
    /// A linearizable read (the member's cluster has a quorum).
    QuorumRead,
}

/// The endpoints among `urls` that answer `probe` within `t`, asked at
/// once: a powered-off member's address answers no SYN, so asking in turn
/// cost the whole bound per member (10 s for three in a QEMU guest).
async fn answering(
    urls: impl Iterator<Item = String>,
    tls: &ClientTls,
    t: Duration,
    probe: Probe,
) -> Vec<String> {
    let mut probes = tokio::task::JoinSet::new();
    for url in urls {
        let tls = tls.clone();
        probes.spawn(async move {
            let c = Etcd::connect(std::slice::from_ref(&url), &tls, t)
                .await
                .ok()?;
            let ok = match probe {
                Probe::Status => tokio::time::timeout(t, c.status())
                    .await
                    .is_ok_and(|r| r.is_ok()),
                Probe::QuorumRead => tokio::time::timeout(t, c.quorum_read())
                    .await
                    .is_ok_and(|r| r.is_ok()),
            };
            ok.then_some(url)
        });
    }
    let mut up = Vec::new();
    while let Some(done) = probes.join_next().await {
        if let Ok(Some(url)) = done {
            up.push(url);
        }
    }
    up.sort();
    up
}

/// `etcdctl snapshot restore`'s command line for a one-member cluster of
/// `name` at `peer_url`. Pure.
pub fn restore_argv(
    etcdctl: &Path,
    source: &Path,
    raw_db: bool,
    name: &str,
    peer_url: &str,
    token: &str,
    data_dir: &Path,
) -> Vec<String> {
    let one = format!("{name}={peer_url}");
    restore_argv_into(
        etcdctl, source, raw_db, name, peer_url, &one, token, data_dir,
    )
}

/// `etcdctl snapshot restore`'s command line for member `name` (at
/// `peer_url`) of the cluster `initial_cluster` (`n1=url1,n2=url2,...`):
/// every member of one cluster runs it with the same snapshot,
/// `initial_cluster` and `token`, so all get the same data and the same
/// cluster id. `raw_db` (a member's `snap/db`, which has no etcd digest)
/// adds `--skip-hash-check`. Pure.
#[allow(clippy::too_many_arguments)]
pub fn restore_argv_into(
    etcdctl: &Path,
    source: &Path,
    raw_db: bool,
    name: &str,
    peer_url: &str,
    initial_cluster: &str,
    token: &str,
    data_dir: &Path,
) -> Vec<String> {
    let mut v = vec![
        etcdctl.display().to_string(),
        "snapshot".to_owned(),
        "restore".to_owned(),
        source.display().to_string(),
        format!("--name={name}"),
        format!("--initial-cluster={initial_cluster}"),
        format!("--initial-advertise-peer-urls={peer_url}"),
        format!("--initial-cluster-token={token}"),
        format!("--data-dir={}", data_dir.display()),
    ];
    if raw_db {
        v.push("--skip-hash-check".to_owned());
    }
    v
}

/// Runs `etcdctl snapshot restore` (the command line of
/// [`restore_argv_into`]) into `new_dir`, removing a partial one left by
/// an earlier attempt first. The one implementation of a restore: `agent
/// recover` and the first-boot restore (`crate::restore`) both call it.
/// Blocking.
pub fn run_restore(argv: &[String], new_dir: &Path) -> Result<(), RecoveryError> {
    if new_dir.exists() {
        fs::remove_dir_all(new_dir).map_err(io_err("removing the partial restore", new_dir))?;
    }
    let etcdctl = Path::new(&argv[0]);
    let out = std::process::Command::new(etcdctl)
        .args(&argv[1..])
        .env("ETCDCTL_API", "3")
        .output()
        .map_err(io_err("running", etcdctl))?;
    if !out.status.success() {
        return Err(RecoveryError::Restore {
            command: argv.join(" "),
            output: format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    Ok(())
}

fn now_ms() -> u64 {
    crate::run::now_ms()
}

/// Runs a recovery: the refusals, then steps 1-6 (see the module docs).
/// Returns the new persisted state (stage `restored`), for the plan's
/// `Event::Recovered`, and the steps done.
pub async fn recover(
    io: &RecoverIo<'_>,
    persisted: &PersistedState,
    req: &RecoverRequest,
) -> Result<(PersistedState, Vec<String>), RecoveryError> {
    let mut steps = Vec::new();
    let t0 = Instant::now();
    let mut step = |s: String| steps.push(stamp(t0, &s));
    match &req.confirm_node {
        None => {
            return Err(RecoveryError::NotConfirmed {
                node: io.name.to_owned(),
            })
        }
        Some(given) if given != io.name => {
            return Err(RecoveryError::WrongNode {
                given: given.clone(),
                node: io.name.to_owned(),
            })
        }
        Some(_) => {}
    }
    if !io.master {
        return Err(RecoveryError::NotMaster {
            node: io.name.to_owned(),
        });
    }
    if let Some(evidence) = quorum_evidence(io.client_url, &io.announced, io.tls).await {
        return Err(RecoveryError::QuorumExists { evidence });
    }
    step("no quorum: no linearizable read on the local member, no majority answering, no announced member serving reads".to_owned());
    let (source, snapshot) = match &req.from_snapshot {
        Some(path) => {
            let p = path.clone();
            let meta = tokio::task::spawn_blocking(move || snapshot::verify(&p))
                .await
                .map_err(|e| RecoveryError::Stop(e.to_string()))??;
            step(format!(
                "snapshot {} verified (revision {}, {} bytes, sha256 {})",
                path.display(),
                meta.revision,
                meta.size,
                meta.sha256
            ));
            (path.display().to_string(), true)
        }
        None => {
            let db = member_db(io.state);
            if !db.is_file() && !source_copy(io.state).is_file() {
                return Err(RecoveryError::NoMemberData { path: db });
            }
            (db.display().to_string(), false)
        }
    };
    // Step 1: the record, before anything changes.
    let from = persisted.epoch.max(persisted.highest_epoch);
    let to = from.next(io.node_id);
    let record = RecoveryRecord {
        epoch: to,
        node: io.name.to_owned(),
        at_ms: now_ms(),
        source,
        snapshot,
        old_cluster_id: persisted.membership.map(|m| format!("{:x}", m.cluster_id)),
        new_cluster_id: None,
        token: recovery_token(io.secret, io.cluster_name, to),
        set_aside: None,
        stage: RecoveryStage::Restoring,
    };
    let mut begun = persisted.clone();
    begun.recovery = Some(Box::new(record));
    io.state.save(&begun)?;
    step(format!(
        "recovery into epoch {} recorded (node {}, id {})",
        to.text(),
        io.name,
        &hex16(&io.node_id)[..6]
    ));
    let (state, more) = resume(io, &begun, t0).await?;
    steps.extend(more);
    Ok((state, steps))
}

fn member_db(state: &StateDir) -> PathBuf {
    state.etcd_data_dir().join("member/snap/db")
}

fn source_copy(state: &StateDir) -> PathBuf {
    state.root().join(DIR_NAME).join("source.db")
}

/// One step's line: milliseconds since `t0`, then what was done (also
/// logged).
fn stamp(t0: Instant, s: &str) -> String {
    tracing::warn!("recovery: {s}");
    format!("{:>6} ms  {s}", t0.elapsed().as_millis())
}

/// Steps 2-6 of a recovery recorded in `persisted` (stage `restoring`):
/// what a restart after a crash runs again. Returns the new state
/// (stage `restored`) and the steps done (times since `t0`).
pub async fn resume(
    io: &RecoverIo<'_>,
    persisted: &PersistedState,
    t0: Instant,
) -> Result<(PersistedState, Vec<String>), RecoveryError> {
    let Some(record) = persisted
        .recovery
        .clone()
        .filter(|r| r.stage == RecoveryStage::Restoring)
    else {
        return Err(RecoveryError::NothingToResume);
    };
    let mut steps = Vec::new();
    io.supervisor
        .stop(SERVICE_NAME)
        .await
        .map_err(|e| RecoveryError::Stop(e.to_string()))?;
    steps.push(stamp(t0, "etcd stopped"));
    let (state, persisted, name, peer_url, etcdctl) = (
        io.state.clone(),
        persisted.clone(),
        io.name.to_owned(),
        io.peer_url.to_owned(),
        io.etcdctl.clone(),
    );
    let (new_state, more) = tokio::task::spawn_blocking(move || {
        restore_data(&state, &persisted, *record, &name, &peer_url, &etcdctl, t0)
    })
    .await
    .map_err(|e| RecoveryError::Stop(e.to_string()))??;
    steps.extend(more);
    Ok((new_state, steps))
}

/// Steps 3-6, blocking (file copies and `etcdctl`): idempotent over the
/// persisted record (see the module docs).
fn restore_data(
    state: &StateDir,
    persisted: &PersistedState,
    mut record: RecoveryRecord,
    name: &str,
    peer_url: &str,
    etcdctl: &Path,
    t0: Instant,
) -> Result<(PersistedState, Vec<String>), RecoveryError> {
    let mut steps = Vec::new();
    let mut step = |s: String| steps.push(stamp(t0, &s));
    let work = state.root().join(DIR_NAME);
    fs::create_dir_all(&work).map_err(io_err("creating", &work))?;
    let source = if record.snapshot {
        let p = PathBuf::from(&record.source);
        snapshot::verify(&p)?;
        p
    } else {
        let copy = source_copy(state);
        if !copy.is_file() {
            let db = member_db(state);
            if !db.is_file() {
                return Err(RecoveryError::NoMemberData { path: db });
            }
            let bytes = fs::read(&db).map_err(io_err("reading", &db))?;
            atomic_file::write(&copy, &bytes, atomic_file::SECRET)
                .map_err(io_err("writing", &copy))?;
            step(format!(
                "member data {} copied to {}",
                db.display(),
                copy.display()
            ));
        }
        copy
    };
    let new_dir = work.join("etcd.new");
    let argv = restore_argv(
        etcdctl,
        &source,
        !record.snapshot,
        name,
        peer_url,
        &record.token,
        &new_dir,
    );
    run_restore(&argv, &new_dir)?;
    step(format!(
        "restored {} into {} (one member {name}, token {})",
        source.display(),
        new_dir.display(),
        record.token
    ));
    let unix_s = now_ms() / 1000;
    let aside = state.set_aside_etcd_data(&epoch::set_aside_name(persisted.epoch, unix_s))?;
    if let Some(a) = &aside {
        step(format!("old etcd data kept at {}", a.display()));
        if record.set_aside.is_none() {
            record.set_aside = Some(a.display().to_string());
            let mut noted = persisted.clone();
            noted.recovery = Some(Box::new(record.clone()));
            state.save(&noted)?;
        }
    }
    let data = state.etcd_data_dir();
    fs::rename(&new_dir, &data).map_err(io_err("moving the restored data to", &data))?;
    fs::File::open(state.root())
        .and_then(|d| d.sync_all())
        .map_err(io_err("syncing", state.root()))?;
    record.stage = RecoveryStage::Restored;
    let to = record.epoch;
    let next = PersistedState {
        bootstrapped: true,
        epoch: to,
        highest_epoch: to,
        recovery: Some(Box::new(record)),
        ..PersistedState::default()
    };
    state.save(&next)?;
    let _ = fs::remove_file(source_copy(state));
    step(format!(
        "epoch {} persisted; etcd restarts as a one-member cluster",
        to.text()
    ));
    Ok((next, steps))
}

/// Leaves an older epoch (the plan's `Action::Yield`): the VIP claim
/// stops at once, then etcd, then the data directory is kept aside. An
/// etcd that cannot be stopped is an error (its data is never moved from
/// under it).
pub async fn leave_epoch(
    vip: &mut Option<Vip>,
    supervisor: &AnySupervisor,
    state: &StateDir,
    from: Epoch,
    now_ms: u64,
    report: &watch::Sender<StatusReport>,
) -> anyhow::Result<()> {
    if let Some(v) = vip.take() {
        v.shutdown().await;
        report.send_modify(|r| r.vip = None);
    }
    supervisor
        .stop(SERVICE_NAME)
        .await
        .map_err(|e| anyhow::anyhow!("stopping etcd to leave epoch {}: {e}", from.text()))?;
    if let Some(to) = state.set_aside_etcd_data(&epoch::set_aside_name(from, now_ms / 1000))? {
        tracing::warn!(
            "etcd data of epoch {} kept at {}",
            from.text(),
            to.display()
        );
    }
    Ok(())
}

/// The `recovery` section of the status: this node's epoch, the highest
/// it has seen, and the last recovery it made.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RecoveryReport {
    /// The epoch of this node's etcd state.
    pub epoch: Epoch,
    /// The highest epoch seen.
    pub highest_epoch: Epoch,
    /// The last recovery this node made.
    pub last: Option<RecoveryRecord>,
}

impl RecoveryReport {
    /// From the persisted state. Pure.
    pub fn of(st: &PersistedState) -> Self {
        RecoveryReport {
            epoch: st.epoch,
            highest_epoch: st.highest_epoch,
            last: st.recovery.as_deref().cloned(),
        }
    }

    /// The `epoch:` line and the last recovery under it. Pure.
    pub fn lines(&self) -> Vec<String> {
        let mut first = format!("epoch:     {}", self.epoch.text());
        if self.highest_epoch > self.epoch {
            first.push_str(&format!(
                " (epoch {} seen: yielding to it)",
                self.highest_epoch.text()
            ));
        }
        let mut out = vec![first];
        if let Some(r) = &self.last {
            out.push(format!(
                "  last recovery: {} by {} at {} from {}{}: cluster {} → {} ({})",
                r.epoch.text(),
                r.node,
                snapshot::utc(r.at_ms, false),
                if r.snapshot {
                    "snapshot "
                } else {
                    "member data "
                },
                r.source,
                r.old_cluster_id.as_deref().unwrap_or("?"),
                r.new_cluster_id.as_deref().unwrap_or("(not yet answered)"),
                match r.stage {
                    RecoveryStage::Restoring => "restoring",
                    RecoveryStage::Restored => "restored, waiting for etcd",
                    RecoveryStage::Done => "done",
                }
            ));
            if let Some(a) = &r.set_aside {
                out.push(format!("  old etcd data kept at {a}"));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_restore_command_makes_one_member_and_skips_the_hash_only_for_a_raw_db() {
        let v = restore_argv(
            Path::new("/usr/bin/etcdctl"),
            Path::new("/s/db"),
            true,
            "m1",
            "https://10.0.0.1:2380",
            "c-epoch1-ab",
            Path::new("/d"),
        );
        assert_eq!(
            v.join(" "),
            "/usr/bin/etcdctl snapshot restore /s/db --name=m1 \
             --initial-cluster=m1=https://10.0.0.1:2380 \
             --initial-advertise-peer-urls=https://10.0.0.1:2380 \
             --initial-cluster-token=c-epoch1-ab --data-dir=/d --skip-hash-check"
        );
        let v = restore_argv(
            Path::new("etcdctl"),
            Path::new("/s/x.db"),
            false,
            "m1",
            "u",
            "t",
            Path::new("/d"),
        );
        assert!(!v.iter().any(|a| a == "--skip-hash-check"));
    }

    #[test]
    fn the_first_boot_restore_names_the_whole_initial_set_and_this_member() {
        let v = restore_argv_into(
            Path::new("etcdctl"),
            Path::new("/s/x.db"),
            false,
            "m2",
            "https://10.0.0.2:2380",
            "m1=https://10.0.0.1:2380,m2=https://10.0.0.2:2380",
            "c-1234",
            Path::new("/d"),
        );
        assert_eq!(
            v.join(" "),
            "etcdctl snapshot restore /s/x.db --name=m2 \
             --initial-cluster=m1=https://10.0.0.1:2380,m2=https://10.0.0.2:2380 \
             --initial-advertise-peer-urls=https://10.0.0.2:2380 \
             --initial-cluster-token=c-1234 --data-dir=/d"
        );
    }

    #[test]
    fn the_status_shows_the_epoch_and_the_last_recovery() {
        let e1 = Epoch::default().next([0xab; 16]);
        let mut r = RecoveryReport::default();
        assert_eq!(r.lines(), ["epoch:     0"]);
        r.highest_epoch = e1;
        assert!(r.lines()[0].contains("yielding"), "{:?}", r.lines());
        r.epoch = e1;
        r.last = Some(RecoveryRecord {
            epoch: e1,
            node: "master-abab".into(),
            at_ms: 0,
            source: "/var/lib/kubeboot/etcd/member/snap/db".into(),
            snapshot: false,
            old_cluster_id: Some("2a".into()),
            new_cluster_id: Some("77".into()),
            token: "t".into(),
            set_aside: Some("/var/lib/kubeboot/etcd.epoch-0.5".into()),
            stage: RecoveryStage::Done,
        });
        let l = r.lines();
        assert_eq!(l[0], "epoch:     1 (by ababab)");
        assert!(l[1].contains("cluster 2a → 77 (done)"), "{}", l[1]);
        assert!(l[2].contains("etcd.epoch-0.5"), "{}", l[2]);
    }
}
