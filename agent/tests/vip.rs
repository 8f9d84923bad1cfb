//! The agent's own VIP path end to end: three masters with `network.vip`
//! set assemble over TLS and exactly one holds the VIP, having proven
//! quorum with linearizable reads on its local etcd member through etcd's
//! JSON gateway with the agent's client certificate (what `vrrp-node`
//! tests cover over plain HTTP); a planned stop (SIGTERM) hands the VIP
//! over to another master.

mod common;

use std::time::Duration;

use common::{dump, runtime, wait_for, Agent, Net, SECRET};

const CLUSTER: &str = "viptest";
const VIP: &str = "10.77.0.100";

/// The VIP section of an agent's status, when it runs, in its wire form
/// (what operators and the QEMU tests read).
fn vip(a: &Agent, rt: &tokio::runtime::Runtime) -> Option<serde_json::Value> {
    serde_json::to_value(a.status(rt)?.vip?).ok()
}

fn holders(agents: &[Agent], rt: &tokio::runtime::Runtime) -> Vec<usize> {
    agents
        .iter()
        .enumerate()
        .filter(|(_, a)| vip(a, rt).is_some_and(|v| v["state"] == "master"))
        .map(|(i, _)| i)
        .collect()
}

#[test]
fn masters_prove_quorum_over_tls_and_hand_the_vip_over_on_stop() {
    let rt = runtime();
    let mut net = Net::new("v");
    let mut agents: Vec<Agent> = (1..=3)
        .map(|i| Agent::new(&mut net, i, CLUSTER, SECRET))
        .collect();
    for a in &mut agents {
        let path = a.dir.join("cluster.toml");
        let mut cfg = std::fs::read_to_string(&path).expect("config");
        cfg.push_str(&format!("[network]\nvip = \"{VIP}/24\"\n"));
        std::fs::write(&path, cfg).expect("config with a VIP");
        a.start();
    }
    let holder = wait_for(
        Duration::from_secs(90),
        || match holders(&agents, &rt)[..] {
            [h] => Some(h),
            _ => None,
        },
    )
    .unwrap_or_else(|| panic!("no single VIP holder\n{}", dump(&agents, &rt)));

    // The holder proved quorum over TLS on its own member.
    let v = vip(&agents[holder], &rt).expect("vip status");
    let proof = &v["proof"];
    assert_eq!(proof["url"], "https://127.0.0.1:2379/v3/kv/range", "{v:#}");
    assert!(proof["ok"].as_u64().unwrap_or(0) > 0, "{v:#}");
    assert_eq!(v["quorum"], true, "{v:#}");
    assert_eq!(proof["lease_ms"], 2000, "{v:#}");
    // The others are backups with quorum proven too.
    for (i, a) in agents.iter().enumerate().filter(|(i, _)| *i != holder) {
        let b = wait_for(Duration::from_secs(10), || {
            vip(a, &rt).filter(|b| b["state"] == "backup" && b["quorum"] == true)
        });
        assert!(
            b.is_some(),
            "agent {} is no proven backup\n{}",
            i + 1,
            dump(&agents, &rt)
        );
    }

    // A planned stop: another master takes the VIP.
    agents[holder].stop();
    let next = wait_for(
        Duration::from_secs(10),
        || match holders(&agents, &rt)[..] {
            [h] if h != holder => Some(h),
            _ => None,
        },
    );
    assert!(
        next.is_some(),
        "no new holder after the planned stop\n{}",
        dump(&agents, &rt)
    );
    let log = std::fs::read_to_string(agents[holder].dir.join("agent.1.log")).unwrap_or_default();
    assert!(
        log.contains("from=master to=leaving") && log.contains("from=leaving to=initialize"),
        "the stopped holder did not hand over:\n{log}"
    );
}
