//! Integration tests with real etcd (Debian's `etcd-server`): agents in
//! network namespaces joined by a bridge, each running etcd as a child
//! through the process supervisor.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{client_tls, dump, in_netns, runtime, wait_for, Agent, Net, SECRET};

/// (member id, name, learner) of every member, via a client cert, from
/// inside namespace `ns`.
fn members(
    ns: &str,
    urls: Vec<String>,
    cluster: &'static str,
) -> Result<Vec<(u64, String, bool)>, String> {
    in_netns(ns, move |rt| {
        rt.block_on(async {
            let c = common::etcd(&urls, &client_tls(cluster)).await;
            let m = c.members().await.map_err(|e| e.to_string())?;
            Ok(m.into_iter()
                .map(|m| (m.id, m.name, m.is_learner))
                .collect())
        })
    })
}

fn voters(ns: &str, urls: Vec<String>, cluster: &'static str) -> Option<Vec<(u64, String)>> {
    let m = members(ns, urls, cluster).ok()?;
    if m.iter()
        .any(|(_, name, learner)| *learner || name.is_empty())
    {
        return None;
    }
    Some(m.into_iter().map(|(id, name, _)| (id, name)).collect())
}

fn ready_member_id(a: &Agent, rt: &tokio::runtime::Runtime) -> Option<String> {
    let s = a.status(rt)?;
    (s.phase == "ready").then_some(())?;
    s.etcd.member_id
}

#[test]
fn masters_assemble_grow_restart_and_replace() {
    const CLUSTER: &str = "itest";
    let rt = runtime();
    let mut net = Net::new("q");
    let mut agents: Vec<Agent> = (1..=3)
        .map(|i| Agent::new(&mut net, i, CLUSTER, SECRET))
        .collect();
    let mut intruder = Agent::new(&mut net, 9, CLUSTER, "a-completely-different-secret-42");
    intruder.start();
    for a in &mut agents {
        a.start();
    }
    let ns = agents[0].ns.clone();
    let urls = |agents: &[Agent]| agents.iter().map(Agent::client_url).collect::<Vec<_>>();

    // Three masters form one cluster with three voting members over TLS.
    let three = wait_for(Duration::from_secs(60), || {
        let v = voters(&ns, urls(&agents), CLUSTER)?;
        (v.len() == 3).then_some(v)
    });
    let all: Vec<&Agent> = agents.iter().chain(std::iter::once(&intruder)).collect();
    let three = three.unwrap_or_else(|| panic!("no 3-voter cluster\n{}", dump(&all, &rt)));
    let ids = wait_for(Duration::from_secs(20), || {
        let ids: Option<BTreeSet<String>> =
            agents.iter().map(|a| ready_member_id(a, &rt)).collect();
        ids.filter(|s| s.len() == 3)
    })
    .unwrap_or_else(|| panic!("agents not all ready\n{}", dump(&all, &rt)));
    let expected: BTreeSet<String> = three.iter().map(|(id, _)| format!("{id:x}")).collect();
    assert_eq!(ids, expected);
    let cluster_ids: BTreeSet<String> = agents
        .iter()
        .filter_map(|a| a.status(&rt)?.etcd.cluster_id)
        .collect();
    assert_eq!(cluster_ids.len(), 1, "{cluster_ids:?}");

    // A client without a certificate is refused (client-cert-auth on).
    let url = agents[0].client_url();
    let tls = client_tls(CLUSTER);
    let refused = in_netns(&ns, move |rt| {
        rt.block_on(async {
            use etcd_client::{Certificate, Client, ConnectOptions, TlsOptions};
            let opts = ConnectOptions::new()
                .with_tls(
                    TlsOptions::new().ca_certificate(Certificate::from_pem(tls.ca_pem.as_bytes())),
                )
                .with_connect_timeout(Duration::from_secs(2))
                .with_timeout(Duration::from_secs(2));
            match Client::connect([url.as_str()], Some(opts)).await {
                Err(_) => true,
                Ok(mut c) => c.get("x", None).await.is_err(),
            }
        })
    });
    assert!(refused, "a client without a certificate was served");

    // The intruder (wrong secret) is ignored: never a member, still alone,
    // and its messages are counted as rejected (bad MAC) by the others.
    let s = agents[0].status(&rt).expect("status");
    assert!(
        s.discovery.rejected.get("bad-mac").copied().unwrap_or(0) > 0,
        "{s:?}"
    );
    assert!(s
        .discovery
        .peers
        .iter()
        .all(|p| p.addresses != ["10.77.0.9"]));
    let intr = intruder.status(&rt).expect("intruder status");
    assert_eq!(intr.phase, "discovering", "{intr:?}");
    assert!(intr.discovery.peers.is_empty());

    // Write a key before the restarts.
    let (ns2, u) = (ns.clone(), urls(&agents));
    in_netns(&ns2, move |rt| {
        rt.block_on(async {
            let c = common::etcd(&u, &client_tls(CLUSTER)).await;
            c.put("kubeboot/test", "survives").await.expect("put");
        })
    });

    // A fourth master (masters = 3) stays standby: never a member, not
    // even a learner, and says so; the cluster keeps its three voters.
    let mut fourth = Agent::new(&mut net, 4, CLUSTER, SECRET);
    fourth.start();
    agents.push(fourth);
    let standby = wait_for(Duration::from_secs(40), || {
        let s = agents[3].status(&rt)?;
        (s.phase == "joining" && s.detail.contains("standby:")).then_some(s)
    });
    let all: Vec<&Agent> = agents.iter().collect();
    let standby =
        standby.unwrap_or_else(|| panic!("the fourth master is not standby\n{}", dump(&all, &rt)));
    assert!(
        standby.detail.contains("3 voting members (masters = 3)"),
        "{}",
        standby.detail
    );
    std::thread::sleep(Duration::from_secs(3));
    let still = members(&ns, urls(&agents[..3]), CLUSTER).expect("member list");
    assert_eq!(
        still.iter().map(|(id, _, _)| *id).collect::<BTreeSet<_>>(),
        three.iter().map(|(id, _)| *id).collect::<BTreeSet<_>>(),
        "the standby changed the membership: {still:?}"
    );
    let log = std::fs::read_to_string(agents[3].dir.join("agent.1.log")).unwrap_or_default();
    assert!(!log.contains("added as etcd learner"), "{log}");

    // An agent restarted with its state rejoins with its data: same member id.
    let before = ready_member_id(&agents[1], &rt).expect("agent 2 ready");
    agents[1].stop();
    agents[1].start();
    let after = wait_for(Duration::from_secs(40), || ready_member_id(&agents[1], &rt));
    let all: Vec<&Agent> = agents.iter().collect();
    assert_eq!(
        after.as_deref(),
        Some(before.as_str()),
        "\n{}",
        dump(&all, &rt)
    );
    let u = vec![agents[1].client_url()];
    let value = in_netns(&ns, move |rt| {
        rt.block_on(async {
            common::etcd(&u, &client_tls(CLUSTER))
                .await
                .get("kubeboot/test")
                .await
        })
    });
    assert_eq!(value.expect("get").as_deref(), Some("survives"));

    // An agent with its state wiped is replaced: stale member removed, a
    // new one added, one change at a time. The slot goes to the wiped node
    // (new node id, new name) or to the standby, whichever asks first; the
    // other stays standby, and the cluster has three voters again.
    let old_name = agents[2].status(&rt).expect("status").node.name;
    let old_id = ready_member_id(&agents[2], &rt).expect("agent 3 ready");
    agents[2].stop();
    std::fs::remove_dir_all(agents[2].state_dir()).expect("wipe");
    agents[2].start();
    // Agents 1 and 2 stay members throughout: ask them (an endpoint
    // without etcd, the standby's, can fail the whole request).
    let replaced = wait_for(Duration::from_secs(60), || {
        let v = voters(&ns, urls(&agents[..2]), CLUSTER)?;
        let names: Vec<&String> = v.iter().map(|(_, n)| n).collect();
        (v.len() == 3 && !names.contains(&&old_name)).then_some(v)
    });
    let all: Vec<&Agent> = agents.iter().collect();
    let replaced =
        replaced.unwrap_or_else(|| panic!("the wiped agent was not replaced\n{}", dump(&all, &rt)));
    assert!(replaced.iter().all(|(id, _)| format!("{id:x}") != old_id));
    // Members 1 and 2 are still there.
    for (id, name) in &three {
        if *name != old_name {
            assert!(replaced.iter().any(|(i, _)| i == id), "member {name} lost");
        }
    }
    let newcomer = replaced
        .iter()
        .find(|(id, _)| !three.iter().any(|(i, _)| i == id))
        .expect("a new member")
        .1
        .clone();
    let (joined, waiting) = if agents[3]
        .status(&rt)
        .is_some_and(|s| s.node.name == newcomer)
    {
        (3, 2)
    } else {
        (2, 3)
    };
    let ready = wait_for(Duration::from_secs(30), || {
        ready_member_id(&agents[joined], &rt)
    });
    assert!(
        ready.is_some(),
        "the new member is not ready\n{}",
        dump(&all, &rt)
    );
    let standby = wait_for(Duration::from_secs(30), || {
        agents[waiting]
            .status(&rt)
            .filter(|s| s.detail.contains("standby:"))
    });
    assert!(
        standby.is_some(),
        "agent {} is not standby\n{}",
        waiting + 1,
        dump(&all, &rt)
    );
    let log = std::fs::read_to_string(
        agents[joined]
            .dir
            .join(format!("agent.{}.log", if joined == 2 { 2 } else { 1 })),
    )
    .unwrap_or_default();
    assert!(
        log.contains("removing etcd member") || log.contains("added as etcd learner"),
        "{log}"
    );
    // The intruder never became a member.
    assert!(replaced.iter().all(|(_, n)| !n.is_empty()));
    assert_eq!(intruder.status(&rt).expect("intruder").phase, "discovering");
}

#[test]
fn two_groups_never_form_two_clusters() {
    const CLUSTER: &str = "twogroups";
    const ROUNDS: usize = 10;
    let rt = runtime();
    let mut net = Net::new("g");
    let mut agents: Vec<Agent> = (1..=6)
        .map(|i| Agent::new(&mut net, i, CLUSTER, SECRET))
        .collect();
    for round in 0..ROUNDS {
        for a in &mut agents {
            let _ = std::fs::remove_dir_all(a.state_dir());
        }
        // Group A (nodes 1-3) and group B (4-6) start separately, each node
        // after a random delay; group B starts 0-2 s after group A.
        let b_offset = rand::random::<u64>() % 2000;
        let mut order: Vec<(u64, usize)> = (0..6)
            .map(|k| {
                let own = rand::random::<u64>() % 800;
                (if k < 3 { own } else { b_offset + own }, k)
            })
            .collect();
        order.sort();
        let t0 = std::time::Instant::now();
        for (at, k) in order {
            let wait = Duration::from_millis(at).saturating_sub(t0.elapsed());
            std::thread::sleep(wait);
            agents[k].start();
        }
        // Wait for a cluster, then give a second one time to appear.
        let formed = wait_for(Duration::from_secs(40), || {
            let ready = agents
                .iter()
                .filter(|a| a.status(&rt).is_some_and(|s| s.phase == "ready"))
                .count();
            (ready >= 3).then_some(())
        });
        let all: Vec<&Agent> = agents.iter().collect();
        assert!(
            formed.is_some(),
            "round {round}: no cluster\n{}",
            dump(&all, &rt)
        );
        std::thread::sleep(Duration::from_millis(1500));
        let mut cluster_ids = BTreeSet::new();
        let mut decisions = BTreeSet::new();
        for a in &agents {
            if let Some(c) = a.status(&rt).and_then(|s| s.etcd.cluster_id) {
                cluster_ids.insert(c);
            }
            let state =
                std::fs::read_to_string(a.state_dir().join("state.json")).unwrap_or_default();
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&state) {
                if let Some(token) = v["bootstrap"]["token"].as_str() {
                    decisions.insert(token.to_owned());
                }
            }
        }
        assert!(
            cluster_ids.len() == 1 && decisions.len() == 1,
            "round {round}: cluster ids {cluster_ids:?}, bootstrap decisions {decisions:?}\n{}",
            dump(&all, &rt)
        );
        // Six masters, masters = 3: three voters, the other three standby
        // (never 4, 5 or 6 voters).
        let settled = wait_for(Duration::from_secs(30), || {
            let (mut ready, mut standby) = (0, 0);
            for a in &agents {
                let s = a.status(&rt)?;
                if s.phase == "ready" {
                    ready += 1;
                } else if s.detail.contains("standby:") {
                    standby += 1;
                }
            }
            // Ask the ready ones (a standby's endpoint has no etcd).
            let ready_urls: Vec<String> = agents
                .iter()
                .filter(|a| a.status(&rt).is_some_and(|s| s.phase == "ready"))
                .map(Agent::client_url)
                .collect();
            let voters = voters(&agents[0].ns, ready_urls, CLUSTER)?;
            (ready == 3 && standby == 3 && voters.len() == 3).then_some(())
        });
        assert!(
            settled.is_some(),
            "round {round}: not 3 voters + 3 standby\n{}",
            dump(&all, &rt)
        );
        for a in &mut agents {
            a.stop();
        }
    }
}

#[test]
fn invalid_config_is_a_visible_failed_state_until_sighup() {
    let rt = runtime();
    let mut net = Net::new("c");
    let mut a = Agent::new(&mut net, 1, "cfgtest", SECRET);
    // No secret anywhere: the agent stays up, failed, and says why.
    std::fs::remove_file(a.dir.join("secret")).expect("remove secret");
    a.start_with_secret(&a.dir.join("no-such-secret"));
    let failed = wait_for(Duration::from_secs(20), || {
        a.status(&rt).filter(|s| s.phase == "failed")
    })
    .unwrap_or_else(|| panic!("no failed status\n{}", a.logs()));
    assert!(!failed.config.ok);
    let reason = failed.config.error.expect("reason");
    assert!(reason.contains("no-such-secret"), "{reason}");
    assert!(a.is_running(), "the agent exited instead of waiting");
    // `agent status` (text and --json) shows the same reason.
    let run = |json: bool| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_agent"));
        cmd.arg("status").arg("--socket").arg(a.socket());
        if json {
            cmd.arg("--json");
        }
        let out = cmd.output().expect("agent status");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let text = run(false);
    assert!(
        text.contains("config:    FAILED:") && text.contains("no-such-secret"),
        "{text}"
    );
    let json: serde_json::Value = serde_json::from_str(&run(true)).expect("json");
    assert_eq!(json["phase"], "failed");
    assert!(json["config"]["error"]
        .as_str()
        .unwrap_or_default()
        .contains("no-such-secret"));
    // Provide the secret and send SIGHUP: it re-reads and goes on.
    std::fs::write(a.dir.join("no-such-secret"), SECRET).expect("secret");
    a.signal(nix::sys::signal::Signal::SIGHUP);
    let s = wait_for(Duration::from_secs(20), || {
        a.status(&rt)
            .filter(|s| s.phase == "discovering" && s.detail.contains("1 of 3"))
    })
    .unwrap_or_else(|| panic!("not discovering after SIGHUP\n{}", a.logs()));
    assert!(s.config.ok && s.pki.ready);
}
