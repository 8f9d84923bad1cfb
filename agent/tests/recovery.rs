//! Recovery from quorum loss against the real programs (issue 17): a
//! three-member TLS etcd (Debian package `etcd-server`) on loopback ports
//! chosen at run time, with the agent's own command line and derived PKI;
//! the local member runs under the agent's process supervisor (which the
//! recovery stops), the two others as plain processes. `etcdctl snapshot
//! restore` (package `etcd-client`) does the restore. Needs no root.
//!
//! Shown: `recover` is refused without the confirmation, with another
//! node's name and while a quorum exists (naming the evidence); after two
//! members are killed, a corrupted snapshot is refused with its path, and
//! the recovery restores a one-member cluster with a NEW cluster id and
//! every key, keeps the old data aside and persists epoch 1; a partial
//! restore left by a crash is removed, and a recovery cut short after the
//! restored data went in place resumes safely (`recovery::resume`).

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use agent::core::model::{ClusterState, Membership, PersistedState, RecoveryStage};
use agent::etcd::snapshot::{self, Reason, Source};
use agent::etcd::{client_url, peer_url, ClientTls, Launch, TlsFiles};
use agent::node_pki::{write_pki, PkiFiles};
use agent::recovery::{self, RecoverIo, RecoverRequest, RecoveryError};
use agent::state::StateDir;
use cluster_config::ClusterSecret;
use supervisor::{AnySupervisor, ProcessSupervisor, Supervisor};

mod common;
use common::{free_port, require, wait_healthy, Reaped};

const SECRET: &str = "recovery-test-secret-0123456789";
const CLUSTER: &str = "rectest";

struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    dir: std::path::PathBuf,
}

impl Member {
    fn client_url(&self) -> String {
        client_url(Ipv4Addr::LOCALHOST, self.client_port)
    }
    fn peer_url(&self) -> String {
        peer_url(Ipv4Addr::LOCALHOST, self.peer_port)
    }
    /// Writes its PKI; returns the agent's client TLS.
    fn pki(&self) -> ClientTls {
        let secret = ClusterSecret::new(SECRET).unwrap();
        let (node, _) = write_pki(
            &PkiFiles::under(&self.dir.join("pki")),
            &secret,
            CLUSTER,
            &self.name,
            Ipv4Addr::LOCALHOST,
            None,
        )
        .unwrap();
        node.client
    }
    fn launch(&self, state: ClusterState) -> Launch {
        Launch {
            binary: "/usr/bin/etcd".into(),
            name: self.name.clone(),
            data_dir: self.dir.join("etcd"),
            ip: Ipv4Addr::LOCALHOST,
            client_port: self.client_port,
            peer_port: self.peer_port,
            heartbeat_ms: cluster_config::DEFAULT_ETCD_HEARTBEAT_MS,
            election_timeout_ms: cluster_config::DEFAULT_ETCD_ELECTION_TIMEOUT_MS,
            state,
            tls: TlsFiles::under(&self.dir.join("pki")),
        }
    }
    /// The agent's argv, listening on loopback only.
    fn argv(&self, state: ClusterState) -> Vec<String> {
        let url = self.client_url();
        self.launch(state)
            .argv()
            .into_iter()
            .map(|a| {
                if a.starts_with("--listen-client-urls=") {
                    format!("--listen-client-urls={url}")
                } else {
                    a
                }
            })
            .collect()
    }
    fn spawn(&self, state: ClusterState) -> Reaped {
        let argv = self.argv(state);
        let log = std::fs::File::create(self.dir.join("etcd.log")).unwrap();
        Reaped(
            Command::new(&argv[0])
                .args(&argv[1..])
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("starting etcd (Debian package etcd-server)"),
        )
    }
    /// Starts it under the agent's process supervisor.
    async fn supervise(&self, sup: &AnySupervisor, state: ClusterState) {
        let mut spec = self.launch(state.clone()).service_spec();
        spec.exec = self.argv(state);
        sup.start(&spec).await.unwrap();
    }
}

#[tokio::test(flavor = "current_thread")]
async fn recover_is_refused_with_quorum_then_restores_a_new_one_member_cluster() {
    require("etcd", "etcd-server");
    require("etcdctl", "etcd-client");
    let tmp = tempfile::tempdir().unwrap();
    let members: Vec<Member> = (1..=3)
        .map(|i| Member {
            name: format!("r-{i}"),
            client_port: free_port(),
            peer_port: free_port(),
            dir: tmp.path().join(format!("n{i}")),
        })
        .collect();
    let initial_cluster = members
        .iter()
        .map(|m| format!("{}={}", m.name, m.peer_url()))
        .collect::<Vec<_>>()
        .join(",");
    let new = ClusterState::New {
        initial_cluster,
        token: format!("{CLUSTER}-{}", std::process::id()),
    };
    let tls: Vec<ClientTls> = members.iter().map(Member::pki).collect();
    // Member 1 is "this node": its state dir is n1, etcd under the agent's
    // supervisor; 2 and 3 are the masters about to be lost.
    let state = StateDir::open(&members[0].dir).unwrap();
    let sup: AnySupervisor = ProcessSupervisor::new(members[0].dir.join("logs")).into();
    members[0].supervise(&sup, new.clone()).await;
    let others: Vec<Reaped> = members[1..].iter().map(|m| m.spawn(new.clone())).collect();
    let local = members[0].client_url();
    let client = wait_healthy(&local, &tls[0], tmp.path()).await;
    for i in 0..50 {
        client
            .put(&format!("rec/key-{i:02}"), &format!("value-{i}"))
            .await
            .unwrap();
    }
    let before = client.status().await.unwrap();
    let persisted = PersistedState {
        membership: Some(Membership {
            cluster_id: before.cluster_id,
            member_id: before.member_id,
        }),
        bootstrapped: true,
        ..Default::default()
    };
    state.save(&persisted).unwrap();
    // A snapshot to corrupt later.
    let (good, _) = snapshot::take(
        &Source {
            endpoint: local.clone(),
            tls: tls[0].clone(),
            member_name: "r-1".into(),
        },
        &state.snapshot_dir(),
        Reason::OnDemand,
        agent::run::now_ms(),
    )
    .await
    .unwrap();

    let announced: Vec<String> = members[1..].iter().map(Member::client_url).collect();
    let (p1, c1) = (members[0].peer_url(), local.clone());
    let io = RecoverIo {
        state: &state,
        supervisor: &sup,
        name: "r-1",
        node_id: [1; 16],
        master: true,
        secret: SECRET.as_bytes(),
        cluster_name: CLUSTER,
        peer_url: &p1,
        client_url: &c1,
        announced: announced.clone(),
        tls: &tls[0],
        etcdctl: "/usr/bin/etcdctl".into(),
    };
    let ask = |confirm: Option<&str>, snap: Option<&Path>| RecoverRequest {
        confirm_node: confirm.map(str::to_owned),
        from_snapshot: snap.map(Path::to_owned),
    };

    // Refused: no confirmation, another node's name, a quorum.
    let e = recovery::recover(&io, &persisted, &ask(None, None))
        .await
        .unwrap_err();
    assert!(matches!(e, RecoveryError::NotConfirmed { .. }), "{e}");
    assert!(e.to_string().contains("--confirm-node r-1"), "{e}");
    let e = recovery::recover(&io, &persisted, &ask(Some("r-2"), None))
        .await
        .unwrap_err();
    assert!(matches!(e, RecoveryError::WrongNode { .. }), "{e}");
    let e = recovery::recover(&io, &persisted, &ask(Some("r-1"), None))
        .await
        .unwrap_err();
    match &e {
        RecoveryError::QuorumExists { evidence } => {
            assert!(
                evidence.contains("linearizable read on the local member"),
                "{e}"
            );
            assert!(evidence.contains(&local), "{e}");
        }
        other => panic!("{other}"),
    }
    assert_eq!(
        state.load().unwrap(),
        persisted,
        "a refusal changes nothing"
    );

    // Two masters lost for good.
    drop(others);
    let t0 = Instant::now();
    while client.quorum_read().await.is_ok() {
        assert!(t0.elapsed() < Duration::from_secs(30), "quorum never lost");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A corrupted snapshot is refused with its path; nothing changes.
    let bad = tmp.path().join("bad.db");
    let mut bytes = std::fs::read(&good).unwrap();
    bytes[100] ^= 0x01;
    std::fs::write(&bad, &bytes).unwrap();
    std::fs::copy(snapshot::sidecar_path(&good), snapshot::sidecar_path(&bad)).unwrap();
    let e = recovery::recover(&io, &persisted, &ask(Some("r-1"), Some(&bad)))
        .await
        .unwrap_err();
    assert!(matches!(e, RecoveryError::Snapshot(_)), "{e}");
    assert!(e.to_string().contains(bad.to_str().unwrap()), "{e}");
    assert_eq!(state.load().unwrap(), persisted);
    assert!(state.has_etcd_data());

    // A partial restore left by an earlier crash is no obstacle.
    let partial = state.root().join("recovery/etcd.new/member");
    std::fs::create_dir_all(&partial).unwrap();
    std::fs::write(partial.join("garbage"), b"half a restore").unwrap();

    // The recovery from the member's own data.
    let t0 = Instant::now();
    let (next, steps) = recovery::recover(&io, &persisted, &ask(Some("r-1"), None))
        .await
        .unwrap();
    let restore_ms = t0.elapsed().as_millis();
    assert_eq!(state.load().unwrap(), next);
    assert_eq!(next.epoch.number, 1);
    assert_eq!(next.epoch.by, [1; 16]);
    assert_eq!(next.highest_epoch, next.epoch);
    assert!(next.membership.is_none() && next.bootstrapped);
    let record = next.recovery.clone().unwrap();
    assert_eq!(record.stage, RecoveryStage::Restored);
    assert_eq!(
        record.old_cluster_id,
        Some(format!("{:x}", before.cluster_id))
    );
    assert!(!record.snapshot);
    let aside = std::path::PathBuf::from(record.set_aside.clone().unwrap());
    assert!(
        aside.join("member/snap/db").is_file(),
        "old data not kept at {}",
        aside.display()
    );
    assert!(aside
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .starts_with("etcd.epoch-0."));
    assert!(state.has_etcd_data());
    assert!(
        steps.iter().any(|s| s.contains("etcd stopped")),
        "{steps:?}"
    );

    // A crash after the restored data went in place but before the last
    // save (stage still `restoring`): resuming is safe. The restored copy
    // is set aside too, the first set-aside stays recorded, and the
    // source copy of the member data is used again.
    let mut crashed = next.clone();
    let mut rec = crashed.recovery.clone().unwrap();
    rec.stage = RecoveryStage::Restoring;
    crashed.recovery = Some(rec);
    crashed.epoch = persisted.epoch;
    crashed.highest_epoch = persisted.highest_epoch;
    state.save(&crashed).unwrap();
    std::fs::copy(
        aside.join("member/snap/db"),
        state.root().join("recovery/source.db"),
    )
    .unwrap();
    let (again, steps2) = recovery::resume(&io, &crashed, Instant::now())
        .await
        .unwrap();
    assert_eq!(again.epoch, next.epoch);
    let rec2 = again.recovery.clone().unwrap();
    assert_eq!(rec2.set_aside, record.set_aside, "{steps2:?}");
    assert_eq!(rec2.token, record.token);
    assert_eq!(rec2.stage, RecoveryStage::Restored);
    assert!(aside.join("member/snap/db").is_file());
    assert_eq!(state.load().unwrap(), again);

    // What the plan does next: restart etcd on it, one member.
    members[0]
        .supervise(
            &sup,
            ClusterState::Restart {
                initial_cluster: format!("r-1={}", members[0].peer_url()),
            },
        )
        .await;
    let client = wait_healthy(&local, &tls[0], tmp.path()).await;
    let after = client.status().await.unwrap();
    assert_ne!(after.cluster_id, before.cluster_id, "the cluster id is new");
    let listed = client.members().await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].peer_urls, vec![members[0].peer_url()]);
    for i in 0..50 {
        assert_eq!(
            client.get(&format!("rec/key-{i:02}")).await.unwrap(),
            Some(format!("value-{i}"))
        );
    }
    client.put("rec/after", "x").await.unwrap();
    eprintln!(
        "recovery (refusal checks through restore, not etcd's start): {restore_ms} ms; steps:\n  {}",
        steps.join("\n  ")
    );
    if let AnySupervisor::Process(p) = &sup {
        p.shutdown().await;
    }
}
