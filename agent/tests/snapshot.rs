//! etcd snapshots against the real program: a one-member etcd (Debian
//! package `etcd-server`) with the agent's own command line and derived
//! TLS, on loopback ports chosen free at run time. The snapshot the agent
//! writes is verified by the agent, read by `etcdctl snapshot status` and
//! restored by `etcdctl snapshot restore` (package `etcd-client`); the
//! `Snapshotter` keeps its retention, `agent etcd snapshot --out` works
//! through the control socket, and a failure shows once etcd is gone.
//! Needs no root and no namespace.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use agent::control;
use agent::core::model::ClusterState;
use agent::etcd::snapshot::{self, Reason, Snapshotter, Source};
use agent::etcd::{client_url, peer_url, ClientTls, Launch, TlsFiles};
use agent::node_pki::{write_pki, PkiFiles};
use agent::status::StatusReport;
use cluster_config::ClusterSecret;
use tokio::sync::watch;

mod common;
use common::{free_port, require, wait_healthy, Reaped};

/// Starts a one-member etcd in `dir` with the agent's own command line
/// (listening on loopback only); returns it, its client URL and the
/// agent's client TLS.
fn start_etcd(dir: &Path) -> (Reaped, String, ClientTls) {
    let ip = Ipv4Addr::LOCALHOST;
    let (client_port, peer_port) = (free_port(), free_port());
    let secret = ClusterSecret::new("snapshot-test-secret-0123456789").unwrap();
    let pki_dir = dir.join("pki");
    let (node, _) = write_pki(
        &PkiFiles::under(&pki_dir),
        &secret,
        "snaptest",
        "snap-1",
        ip,
        None,
    )
    .unwrap();
    let launch = Launch {
        binary: "/usr/bin/etcd".into(),
        name: "snap-1".into(),
        data_dir: dir.join("etcd"),
        ip,
        client_port,
        peer_port,
        heartbeat_ms: cluster_config::DEFAULT_ETCD_HEARTBEAT_MS,
        election_timeout_ms: cluster_config::DEFAULT_ETCD_ELECTION_TIMEOUT_MS,
        state: ClusterState::New {
            initial_cluster: format!("snap-1={}", peer_url(ip, peer_port)),
            token: format!("snaptest-{}", std::process::id()),
        },
        tls: TlsFiles::under(&pki_dir),
    };
    // The agent listens on every address; this test on loopback only.
    let argv: Vec<String> = launch
        .argv()
        .into_iter()
        .map(|a| {
            if a.starts_with("--listen-client-urls=") {
                format!("--listen-client-urls={}", client_url(ip, client_port))
            } else {
                a
            }
        })
        .collect();
    let log = std::fs::File::create(dir.join("etcd.log")).unwrap();
    let child = Command::new(&argv[0])
        .args(&argv[1..])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("starting etcd (Debian package etcd-server)");
    (Reaped(child), client_url(ip, client_port), node.client)
}

fn etcdctl(args: &[&str]) -> String {
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(args)
        .output()
        .expect("running etcdctl (Debian package etcd-client)");
    assert!(
        out.status.success(),
        "etcdctl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "current_thread")]
async fn a_real_snapshot_verifies_restores_and_keeps_its_retention() {
    require("etcd", "etcd-server");
    require("etcdctl", "etcd-client");
    let tmp = tempfile::tempdir().unwrap();
    let (etcd, url, tls) = start_etcd(tmp.path());
    let client = wait_healthy(&url, &tls, tmp.path()).await;
    for i in 0..20 {
        client
            .put(&format!("snap/key-{i:02}"), &"v".repeat(1000))
            .await
            .unwrap();
    }
    let source = Source {
        endpoint: url.clone(),
        tls: tls.clone(),
        member_name: "snap-1".into(),
    };
    let dir = tmp.path().join("etcd-snapshots");

    // One snapshot: written whole, verified, readable by etcdctl.
    let (path, meta) = snapshot::take(&source, &dir, Reason::OnDemand, agent::run::now_ms())
        .await
        .unwrap();
    assert_eq!(snapshot::verify(&path).unwrap(), meta);
    assert_eq!(meta.size, std::fs::metadata(&path).unwrap().len());
    assert_eq!(meta.member_name, "snap-1");
    assert!(meta.etcd_version.starts_with("3."), "{meta:?}");
    let status: serde_json::Value = serde_json::from_str(&etcdctl(&[
        "snapshot",
        "status",
        path.to_str().unwrap(),
        "-w",
        "json",
    ]))
    .unwrap();
    // No write came in between: the snapshot holds exactly the revision
    // recorded (1 + 20 puts).
    assert_eq!(status["revision"].as_i64(), Some(meta.revision), "{status}");
    assert_eq!(meta.revision, 21);
    assert!(status["totalKey"].as_i64().unwrap_or(0) >= 20, "{status}");
    // etcdctl's restore checks etcd's trailing SHA-256 too.
    let restored = tmp.path().join("restored");
    etcdctl(&[
        "snapshot",
        "restore",
        path.to_str().unwrap(),
        "--name=r",
        "--initial-cluster=r=https://127.0.0.1:1",
        "--initial-advertise-peer-urls=https://127.0.0.1:1",
        &format!("--data-dir={}", restored.display()),
    ]);
    assert!(restored.join("member/snap/db").is_file());

    // The periodic path: retention 2 over four snapshots.
    let (report_tx, report_rx) = watch::channel(StatusReport::default());
    let snapshotter = Snapshotter::new(source, dir.clone(), 3600, 2, report_tx);
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(5)).await;
        snapshotter.snapshot(Reason::Periodic).await.unwrap();
    }
    let kept = snapshot::list(&dir).unwrap();
    assert_eq!(kept.len(), 2, "{kept:?}");
    assert!(kept.iter().all(|(_, m)| m.reason == Reason::Periodic));
    assert!(!path.exists(), "the oldest snapshot was not pruned");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(files.len(), 4, "{files:?}");
    {
        let r = report_rx.borrow();
        assert_eq!(r.snapshots.count, 2);
        let last = r.snapshots.last.as_ref().unwrap();
        assert_eq!(Path::new(&last.path), kept[0].0);
        assert_eq!(last.revision, 21);
        assert!(r.snapshots.last_error.is_none(), "{:?}", r.snapshots);
        let text = agent::status::render(&r);
        assert!(text.contains("snapshots: last "), "{text}");
        assert!(text.contains("revision 21"), "{text}");
    }

    // `agent etcd snapshot --out` through the control socket: one more
    // snapshot under the same retention, and a verified copy.
    let slot = control::SnapshotSlot::default();
    assert!(slot.set(snapshotter.clone()).is_ok());
    let status_socket = tmp.path().join("run/agent.sock");
    let _control = control::serve(&control::socket_beside(&status_socket), slot).unwrap();
    let out = tmp.path().join("copy/etcd.db");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let (sock_arg, out_arg) = (status_socket.clone(), out.clone());
    let cli = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_agent"))
            .args(["etcd", "snapshot", "--socket"])
            .arg(sock_arg)
            .arg("--out")
            .arg(out_arg)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&cli.stdout);
    assert!(
        cli.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&cli.stderr)
    );
    assert!(stdout.contains("revision 21"), "{stdout}");
    let copied = snapshot::verify(&out).unwrap();
    let kept = snapshot::list(&dir).unwrap();
    assert_eq!(kept.len(), 2, "{kept:?}");
    assert_eq!(kept[0].1.reason, Reason::OnDemand);
    assert_eq!(copied.sha256, kept[0].1.sha256);
    assert_eq!(
        report_rx.borrow().snapshots.last.as_ref().unwrap().reason,
        Reason::OnDemand
    );

    // etcd gone: the failure shows (log and status), nothing is written.
    drop(etcd);
    let e = snapshotter.snapshot(Reason::Periodic).await.unwrap_err();
    assert!(e.to_string().contains(&url), "{e}");
    let r = report_rx.borrow().clone();
    assert!(
        r.snapshots
            .last_error
            .as_deref()
            .is_some_and(|m| m.contains(&url)),
        "{:?}",
        r.snapshots
    );
    assert_eq!(r.snapshots.count, 2);
    assert!(agent::status::render(&r).contains("FAILED at "));
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 4);
}

/// The snapshot before a membership change: streamed from the first live
/// member that gives one (a dead endpoint first is skipped over), marked
/// with the change, skipped while a recent one covers the next change,
/// and a failure is an outcome (naming the endpoint) within the bound,
/// never an error that would stop the change.
#[tokio::test(flavor = "current_thread")]
async fn a_snapshot_before_a_membership_change_is_bounded_and_never_blocks() {
    require("etcd", "etcd-server");
    let tmp = tempfile::tempdir().unwrap();
    let (_etcd, url, tls) = start_etcd(tmp.path());
    let client = wait_healthy(&url, &tls, tmp.path()).await;
    client.put("pre/key", "v").await.unwrap();
    let dir = tmp.path().join("etcd-snapshots");
    let dead = format!("https://127.0.0.1:{}", free_port());
    let now = agent::run::now_ms();
    let first = snapshot::before_change(
        &[dead.clone(), url.clone()],
        &tls,
        &dir,
        8,
        "pre-add-learner",
        now,
    )
    .await;
    let path = match &first.result {
        snapshot::PreChangeResult::Taken { path, endpoint } => {
            assert_eq!(endpoint, &url);
            std::path::PathBuf::from(path)
        }
        other => panic!("{other:?}"),
    };
    let meta = snapshot::verify(&path).unwrap();
    assert_eq!(meta.reason, Reason::MembershipChange);
    assert_eq!(meta.change.as_deref(), Some("pre-add-learner"));
    assert!(first.line().contains("pre-add-learner"), "{}", first.line());
    // The promotion seconds later: covered by the one just taken.
    let second = snapshot::before_change(
        std::slice::from_ref(&url),
        &tls,
        &dir,
        8,
        "pre-promote-9",
        now + 5_000,
    )
    .await;
    assert!(
        matches!(&second.result, snapshot::PreChangeResult::Skipped { reason } if reason.contains(path.to_str().unwrap())),
        "{second:?}"
    );
    assert_eq!(snapshot::list(&dir).unwrap().len(), 1);
    // No member answers: a failure naming the endpoint, within the bound.
    let t0 = Instant::now();
    let failed = snapshot::before_change(
        std::slice::from_ref(&dead),
        &tls,
        &tmp.path().join("other"),
        8,
        "pre-remove-2a",
        now,
    )
    .await;
    assert!(t0.elapsed() <= snapshot::PRE_CHANGE_TIMEOUT + Duration::from_secs(2));
    match &failed.result {
        snapshot::PreChangeResult::Failed { error } => assert!(error.contains(&dead), "{error}"),
        other => panic!("{other:?}"),
    }
    let mut report = agent::status::StatusReport::default();
    report.node.role = "master".into();
    report.snapshots.pre_change = Some(failed);
    let text = agent::status::render(&report);
    assert!(
        text.contains("SNAPSHOT FAILED (the change went ahead)"),
        "{text}"
    );
}
