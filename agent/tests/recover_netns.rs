//! `agent recover` through the running agents (issue 17): three agents in
//! network namespaces (real etcd under the process supervisor), two of
//! them stopped for good; `agent recover` on the survivor is refused while
//! the quorum exists and without the confirmation, then rebuilds a
//! one-member cluster with a new cluster id; the two lost masters, started
//! again with their OLD disks, hear the new epoch, keep their data aside,
//! rejoin as learners and are promoted: one cluster of three voters, every
//! key back. Needs root (namespaces), `etcd-server`, `etcd-client`,
//! iproute2.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{client_tls, dump, in_netns, runtime, wait_for, Agent, Net, SECRET};

fn recover(a: &Agent, confirm: Option<&str>) -> (bool, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_agent"));
    cmd.arg("recover").arg("--socket").arg(a.socket());
    run_recover(cmd, confirm)
}

/// `agent recover --node` from `from`'s namespace to `a`'s address over
/// the remote control endpoint, authenticated with the secret in `secret`.
fn recover_remote(
    from: &Agent,
    a: &Agent,
    secret: &std::path::Path,
    confirm: Option<&str>,
) -> (bool, String) {
    let mut cmd = Command::new("ip");
    cmd.args([
        "netns",
        "exec",
        &from.ns,
        env!("CARGO_BIN_EXE_agent"),
        "recover",
    ])
    .args([
        "--node",
        &format!("10.77.0.{}", a.i),
        "--cluster-name",
        CLUSTER,
    ])
    .arg("--secret-file")
    .arg(secret);
    run_recover(cmd, confirm)
}

fn run_recover(mut cmd: Command, confirm: Option<&str>) -> (bool, String) {
    if let Some(c) = confirm {
        cmd.args(["--confirm-node", c]);
    }
    run_cli(cmd)
}

/// Runs an `agent` command: (success, stdout and stderr).
fn run_cli(mut cmd: Command) -> (bool, String) {
    let out = cmd.env("RUST_BACKTRACE", "0").output().expect("agent");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

const CLUSTER: &str = "rtest";

#[test]
fn recover_then_old_disks_rejoin_the_new_cluster() {
    common::require_programs();
    let rt = runtime();
    let mut net = Net::new("r");
    let mut agents: Vec<Agent> = (1..=3)
        .map(|i| Agent::new(&mut net, i, CLUSTER, SECRET))
        .collect();
    for a in &mut agents {
        a.start();
    }
    let ns = agents[0].ns.clone();
    let old_cluster = wait_for(Duration::from_secs(90), || {
        common::one_ready_cluster(&agents, &rt, |_| true)
    })
    .unwrap_or_else(|| panic!("no cluster\n{}", dump(&agents[..], &rt)));
    let urls: Vec<String> = agents.iter().map(Agent::client_url).collect();
    in_netns(&ns, move |rt| {
        rt.block_on(async {
            let c = common::etcd(&urls, &client_tls(CLUSTER)).await;
            for i in 0..20 {
                c.put(&format!("rec/{i}"), &format!("v{i}"))
                    .await
                    .expect("put");
            }
        })
    });
    let name = agents[0].status(&rt).expect("status").node.name;

    // Refused while the quorum exists, and without the confirmation.
    let (ok, out) = recover(&agents[0], Some(&name));
    assert!(!ok && out.contains("has a quorum"), "{out}");
    assert!(
        out.contains("linearizable read on the local member"),
        "{out}"
    );
    let (ok, out) = recover(&agents[0], None);
    assert!(!ok && out.contains("--confirm-node"), "{out}");
    // The same over the network, from another node (nodes without a
    // login): the same refusals; another secret is not even answered.
    let secret = agents[0].dir.join("secret");
    let (ok, out) = recover_remote(&agents[1], &agents[0], &secret, Some(&name));
    assert!(!ok && out.contains("has a quorum"), "{out}");
    let (ok, out) = recover_remote(&agents[1], &agents[0], &secret, None);
    assert!(!ok && out.contains("--confirm-node"), "{out}");
    let wrong = agents[0].dir.join("wrong-secret");
    std::fs::write(&wrong, "not-the-cluster-secret-0123456789").expect("secret");
    let (ok, out) = recover_remote(&agents[1], &agents[0], &wrong, Some(&name));
    assert!(
        !ok && out.contains("reaching the agent's control endpoint 10.77.0.1:7374"),
        "{out}"
    );

    // Two masters lost for good (their disks stay, for later).
    agents[1].stop();
    agents[2].stop();
    let lost = wait_for(Duration::from_secs(30), || {
        let s = agents[0].status(&rt)?;
        (s.phase != "ready").then_some(())
    });
    assert!(
        lost.is_some(),
        "quorum not lost\n{}",
        dump(&agents[..], &rt)
    );
    let (ok, out) = recover(&agents[0], Some("master-000000"));
    assert!(!ok && out.contains("does not name this node"), "{out}");
    let t0 = std::time::Instant::now();
    let (ok, out) = recover(&agents[0], Some(&name));
    assert!(ok, "{out}\n{}", dump(&agents[..], &rt));
    eprintln!("agent recover took {} ms:\n{out}", t0.elapsed().as_millis());
    assert!(out.contains("recovered: epoch 1"), "{out}");
    let s = wait_for(Duration::from_secs(30), || {
        let s = agents[0].status(&rt)?;
        (s.phase == "ready" && s.etcd.cluster_id.as_deref() != Some(old_cluster.as_str()))
            .then_some(s)
    })
    .unwrap_or_else(|| panic!("not ready after recover\n{}", dump(&agents[..], &rt)));
    let new_cluster = s.etcd.cluster_id.clone().expect("cluster id");
    assert_ne!(new_cluster, old_cluster);
    assert_eq!(s.recovery.epoch.number, 1);
    let last = s.recovery.last.clone().expect("last recovery");
    assert_eq!(last.new_cluster_id.as_deref(), Some(new_cluster.as_str()));
    assert!(agent::status::render(&s).contains("last recovery: 1 (by"));

    // The lost masters come back with their old disks: they yield and join.
    agents[1].start();
    agents[2].start();
    let joined = wait_for(Duration::from_secs(120), || {
        common::one_ready_cluster(&agents, &rt, |s| s.recovery.epoch.number == 1)
    });
    let id =
        joined.unwrap_or_else(|| panic!("old disks did not rejoin\n{}", dump(&agents[..], &rt)));
    assert_eq!(Some(id), Some(new_cluster.clone()));
    for a in &agents[1..] {
        let kept: Vec<String> = std::fs::read_dir(a.state_dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("etcd.epoch-0."))
            .collect();
        assert_eq!(
            kept.len(),
            1,
            "old data of agent {} not kept: {kept:?}",
            a.i
        );
        let log = std::fs::read_to_string(a.dir.join("agent.2.log")).unwrap_or_default();
        assert!(log.contains("this node's etcd state is epoch 0"), "{log}");
        // Rule (b): heard inside the settle time, the old member never ran
        // (timing-dependent under load, so reported rather than asserted).
        eprintln!(
            "agent {}: old member started before the yield: {}",
            a.i,
            log.contains("starting etcd (restart with data)")
        );
    }
    let urls: Vec<String> = agents.iter().map(Agent::client_url).collect();
    let (members, values) = in_netns(&ns, move |rt| {
        rt.block_on(async {
            let c = common::etcd(&urls, &client_tls(CLUSTER)).await;
            let m = c.members().await.expect("members");
            let mut v = Vec::new();
            for i in 0..20 {
                v.push(c.get(&format!("rec/{i}")).await.expect("get"));
            }
            (m, v)
        })
    });
    assert_eq!(members.len(), 3, "{members:?}");
    assert!(members.iter().all(|m| !m.is_learner), "{members:?}");
    for (i, v) in values.iter().enumerate() {
        assert_eq!(v.as_deref(), Some(format!("v{i}").as_str()));
    }

    // An off-node copy of the new cluster, streamed to this machine from
    // another namespace with a client certificate issued from the secret:
    // the file a fresh cluster is restored from (`[etcd] restore_from`).
    let out = agents[0].dir.join("offnode").join("backup.db");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let mut snap = Command::new("ip");
    snap.args(["netns", "exec", &agents[2].ns, env!("CARGO_BIN_EXE_agent")])
        .args([
            "etcd",
            "snapshot",
            "--node",
            "10.77.0.1",
            "--cluster-name",
            CLUSTER,
        ])
        .arg("--secret-file")
        .arg(&secret)
        .arg("--out")
        .arg(&out);
    let (ok, text) = run_cli(snap);
    assert!(ok, "{text}");
    let meta = agent::etcd::snapshot::verify(&out).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(meta.cluster_id, new_cluster, "{text}");
    assert!(text.contains(&format!("cluster {new_cluster}")), "{text}");
    assert!(meta.revision > 20, "{meta:?}");
    let left: Vec<_> = std::fs::read_dir(out.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left.len(), 2, "only the snapshot and its sidecar: {left:?}");
}
