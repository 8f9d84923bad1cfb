//! `make bench-recovery` (`cargo bench -p agent --bench recovery`): the
//! recovery time objective and the cost of a snapshot (issue 17), with real
//! agents and real etcd in network namespaces (the harness of
//! `tests/recover_netns.rs`; needs root, `etcd-server`, `etcd-client`,
//! iproute2).
//!
//! **RTO** (3 runs per scenario): a ready 3-master cluster with 100 keys
//! loses two masters (their agents and etcd stopped); the clock starts
//! when `agent recover --confirm-node` is run on the survivor and stops
//! when all three agents report `ready` (a healthy voter each, checked by
//! the agent through etcd) in the one new cluster. The two lost masters are
//! started as soon as `agent recover` returns, either with their **old
//! disks** (they hear the new epoch, set their data aside, join as learners
//! and are promoted) or as **blank replacements** (wiped state: new node
//! ids, a plain learner join). Also reported: `agent recover`'s own time,
//! the time to the one-member cluster, and the **RTO with the VIP**: the
//! masters run the agent's VRRP with `[network] vip` on their bridge (the
//! clock starts once the survivor, without quorum, has dropped the VIP), and
//! that clock stops when the three are healthy voters, exactly one agent
//! holds the VIP and a write through the VIP (from another node's
//! namespace, TLS verified) succeeds; also when the first write through
//! the VIP succeeds after `agent recover` (the one-member cluster is a
//! quorum, so the survivor takes the VIP back).
//!
//! **Snapshot** (3 runs): 10,000 keys (100-byte values) written into the
//! recovered cluster, then `agent etcd snapshot` (the CLI, through the
//! control socket: streamed, hashed, fsynced, sidecar written, pruned)
//! timed end to end; the size and revision come from the sidecar.
//!
//! Prints a table and writes `bench/results/recovery.json` (medians and
//! every run). Not a timed test: nothing is asserted about speed.

#[path = "../tests/common/mod.rs"]
mod common;

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{client_tls, in_netns, Agent, Net, SECRET};

const CLUSTER: &str = "rbench";
const RUNS: usize = 3;
const SNAPSHOT_KEYS: usize = 10_000;
const VALUE_BYTES: usize = 100;
const INTERVAL_MS: u64 = 1000;
const VIP: &str = "10.77.0.100";

fn median(v: &[u64]) -> u64 {
    let mut s = v.to_vec();
    s.sort_unstable();
    s[s.len() / 2]
}

fn configure(a: &Agent) {
    std::fs::write(
        a.dir.join("cluster.toml"),
        format!(
            "name = \"{CLUSTER}\"\nrole = \"master\"\nmasters = 3\n[discovery]\ninterval_ms = {INTERVAL_MS}\n\
             [network]\nvip = \"{VIP}/24\"\n"
        ),
    )
    .expect("config");
}

fn wipe(a: &Agent) {
    let _ = std::fs::remove_dir_all(a.state_dir());
}

/// Polls until every agent is ready in one cluster (other than `not`).
fn one_cluster(
    agents: &[Agent],
    rt: &tokio::runtime::Runtime,
    not: Option<&str>,
    timeout: Duration,
) -> String {
    let t0 = Instant::now();
    while t0.elapsed() < timeout {
        if let Some(id) = common::one_ready_cluster(agents, rt, |_| true) {
            if Some(id.as_str()) != not {
                return id;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("no cluster\n{}", common::dump(agents, rt));
}

/// How many agents report holding the VIP.
fn vip_holders(agents: &[Agent], rt: &tokio::runtime::Runtime) -> usize {
    agents
        .iter()
        .filter(|a| {
            a.status(rt)
                .and_then(|s| serde_json::to_value(s.vip?).ok())
                .is_some_and(|v| v["state"] == "master")
        })
        .count()
}

/// Whether one write through the VIP succeeds from namespace `ns` within
/// 3 s (TLS verified: the members' certificates name the VIP).
fn write_via_vip(ns: &str) -> bool {
    in_netns(ns, |rt| {
        rt.block_on(async {
            let urls = vec![format!("https://{VIP}:2379")];
            let put = async {
                let c =
                    agent::etcd::Etcd::connect(&urls, &client_tls(CLUSTER), Duration::from_secs(2))
                        .await
                        .ok()?;
                c.put("rto/vip", "ok").await.ok()
            };
            matches!(
                tokio::time::timeout(Duration::from_secs(3), put).await,
                Ok(Some(_))
            )
        })
    })
}

/// Polls until exactly one agent holds the VIP and a write through it
/// from `ns` succeeds; returns when (ms since `t0`).
fn until_vip_serves(
    agents: &[Agent],
    rt: &tokio::runtime::Runtime,
    ns: &str,
    t0: Instant,
    timeout: Duration,
) -> u64 {
    while t0.elapsed() < timeout {
        if vip_holders(agents, rt) == 1 && write_via_vip(ns) {
            return t0.elapsed().as_millis() as u64;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "the VIP did not serve within {timeout:?}\n{}",
        common::dump(agents, rt)
    );
}

fn put_keys(ns: &str, prefix: &'static str, n: usize) {
    let urls: Vec<String> = (1..=3)
        .map(|i| format!("https://10.77.0.{i}:2379"))
        .collect();
    in_netns(ns, move |rt| {
        rt.block_on(async move {
            let c = Arc::new(common::etcd(&urls, &client_tls(CLUSTER)).await);
            let value = "x".repeat(VALUE_BYTES);
            for chunk in (0..n).collect::<Vec<_>>().chunks(64) {
                let mut set = tokio::task::JoinSet::new();
                for i in chunk {
                    let (c, v, k) = (c.clone(), value.clone(), format!("{prefix}/{i:05}"));
                    set.spawn(async move { c.put(&k, &v).await.expect("put") });
                }
                while set.join_next().await.is_some() {}
            }
        })
    });
}

struct RtoRun {
    scenario: &'static str,
    recover_cli_ms: u64,
    one_member_ms: u64,
    vip_back_ms: u64,
    three_voters_ms: u64,
    three_voters_vip_ms: u64,
}

/// One recovery: fresh cluster, two masters lost, `agent recover`, the two
/// restarted (old disks, or wiped when `blank`).
fn rto_run(agents: &mut [Agent], rt: &tokio::runtime::Runtime, blank: bool) -> RtoRun {
    // Everything stopped and wiped before anything starts: no agent of the
    // previous run may be heard (its epoch would be joined).
    for a in agents.iter_mut() {
        a.stop();
        wipe(a);
        configure(a);
    }
    for a in agents.iter_mut() {
        a.start();
    }
    let old = one_cluster(agents, rt, None, Duration::from_secs(120));
    put_keys(&agents[0].ns.clone(), "rto", 100);
    let name = agents[0].status(rt).expect("status").node.name;
    agents[1].stop();
    agents[2].stop();
    while agents[0].status(rt).is_some_and(|s| s.phase == "ready") {
        std::thread::sleep(Duration::from_millis(100));
    }
    // The survivor without quorum must have dropped the VIP before the
    // clock starts (the VIP follows quorum).
    let lost = Instant::now();
    while vip_holders(agents, rt) > 0 {
        assert!(
            lost.elapsed() < Duration::from_secs(30),
            "the survivor kept the VIP without quorum\n{}",
            common::dump(agents, rt)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let t0 = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_agent"))
        .arg("recover")
        .arg("--socket")
        .arg(agents[0].socket())
        .args(["--confirm-node", &name])
        .output()
        .expect("agent recover");
    let recover_cli_ms = t0.elapsed().as_millis() as u64;
    assert!(
        out.status.success(),
        "agent recover: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for a in agents[1..].iter_mut() {
        if blank {
            wipe(a);
        }
        a.start();
    }
    let one_member_ms = loop {
        let s = agents[0].status(rt);
        if s.is_some_and(|s| s.phase == "ready" && s.etcd.cluster_id.as_deref() != Some(&old)) {
            break t0.elapsed().as_millis() as u64;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let other_ns = agents[1].ns.clone();
    let vip_back_ms = until_vip_serves(agents, rt, &other_ns, t0, Duration::from_secs(120));
    one_cluster(agents, rt, Some(&old), Duration::from_secs(180));
    let three_voters_ms = t0.elapsed().as_millis() as u64;
    let three_voters_vip_ms =
        until_vip_serves(agents, rt, &other_ns, t0, Duration::from_secs(120)).max(three_voters_ms);
    RtoRun {
        scenario: if blank {
            "blank replacements"
        } else {
            "old disks"
        },
        recover_cli_ms,
        one_member_ms,
        vip_back_ms,
        three_voters_ms,
        three_voters_vip_ms,
    }
}

fn main() {
    common::require_programs();
    let rt = common::runtime();
    let mut net = Net::new("v");
    let mut agents: Vec<Agent> = (1..=3)
        .map(|i| Agent::new(&mut net, i, CLUSTER, SECRET))
        .collect();

    let mut rto = Vec::new();
    for run in 0..RUNS {
        for blank in [false, true] {
            let r = rto_run(&mut agents, &rt, blank);
            eprintln!(
                "run {run} {}: recover {} ms, one member {} ms, VIP back {} ms, three voters {} ms, with the VIP {} ms",
                r.scenario,
                r.recover_cli_ms,
                r.one_member_ms,
                r.vip_back_ms,
                r.three_voters_ms,
                r.three_voters_vip_ms
            );
            rto.push(r);
        }
    }

    // Snapshots of 10,000 keys, in the last recovered cluster.
    let t_put = Instant::now();
    put_keys(&agents[0].ns.clone(), "snap", SNAPSHOT_KEYS);
    let put_ms = t_put.elapsed().as_millis() as u64;
    let mut snaps = Vec::new();
    for _ in 0..RUNS {
        let t0 = Instant::now();
        let out = Command::new(env!("CARGO_BIN_EXE_agent"))
            .args(["etcd", "snapshot", "--socket"])
            .arg(agents[0].socket())
            .output()
            .expect("agent etcd snapshot");
        let ms = t0.elapsed().as_millis() as u64;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // "etcd snapshot PATH: N bytes, revision R, ..."
        let path = text
            .split_whitespace()
            .nth(2)
            .map(|p| p.trim_end_matches(':').to_owned())
            .expect("snapshot path");
        let meta = agent::etcd::snapshot::verify(std::path::Path::new(&path)).expect("verify");
        snaps.push((ms, meta.size, meta.revision));
    }
    for a in agents.iter_mut() {
        a.stop();
    }

    println!(
        "recovery bench ({RUNS} runs; medians; real etcd, agents with their VRRP in network namespaces, discovery interval {INTERVAL_MS} ms)"
    );
    println!("| lost masters come back as | agent recover ms | to one member ms | VIP writes again ms | to 3 healthy voters ms | RTO: 3 voters + VIP serving ms | RTO runs |");
    println!("|---|---|---|---|---|---|---|");
    let mut json_rto = Vec::new();
    for scenario in ["old disks", "blank replacements"] {
        let runs: Vec<&RtoRun> = rto.iter().filter(|r| r.scenario == scenario).collect();
        let cli: Vec<u64> = runs.iter().map(|r| r.recover_cli_ms).collect();
        let one: Vec<u64> = runs.iter().map(|r| r.one_member_ms).collect();
        let three: Vec<u64> = runs.iter().map(|r| r.three_voters_ms).collect();
        let back: Vec<u64> = runs.iter().map(|r| r.vip_back_ms).collect();
        let rto: Vec<u64> = runs.iter().map(|r| r.three_voters_vip_ms).collect();
        println!(
            "| {scenario} | {} | {} | {} | {} | {} | {rto:?} |",
            median(&cli),
            median(&one),
            median(&back),
            median(&three),
            median(&rto)
        );
        json_rto.push(serde_json::json!({
            "scenario": scenario,
            "agent_recover_ms_runs": cli,
            "agent_recover_ms_median": median(&cli),
            "one_member_ms_runs": one,
            "one_member_ms_median": median(&one),
            "three_voters_ms_runs": three,
            "three_voters_ms_median": median(&three),
            "vip_writes_again_ms_runs": back,
            "vip_writes_again_ms_median": median(&back),
            "rto_three_voters_and_vip_ms_runs": rto,
            "rto_three_voters_and_vip_ms_median": median(&rto),
        }));
    }
    let ms: Vec<u64> = snaps.iter().map(|s| s.0).collect();
    let sizes: Vec<u64> = snaps.iter().map(|s| s.1).collect();
    println!();
    println!(
        "| snapshot of {SNAPSHOT_KEYS} keys ({VALUE_BYTES}-byte values) | ms | bytes | runs ms |"
    );
    println!("|---|---|---|---|");
    println!(
        "| agent etcd snapshot (CLI → agent → etcd stream → file, fsync, sidecar) | {} | {} | {ms:?} |",
        median(&ms),
        median(&sizes)
    );
    let out = serde_json::json!({
        "bench": "recovery",
        "date": agent::etcd::snapshot::utc(agent::run::now_ms(), false),
        "runs": RUNS,
        "machine": {
            "caveat": "2-core machine, shared (other jobs may run, including QEMU under TCG): three etcd members, three agents and the client share these cores, so absolute figures move with the load",
            "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        },
        "configuration": {
            "masters": 3,
            "discovery_interval_ms": INTERVAL_MS,
            "settle_ms": 3 * INTERVAL_MS,
            "supervisor": "process (etcd as the agent's child)",
            "etcd": "Debian etcd-server (3.4), TLS peers and clients",
            "vip": "the agent's VRRP on the namespaces' bridge; the RTO ends when the 3 masters are healthy voters, exactly one holds the VIP and a write through the VIP from another node's namespace succeeds",
            "keys_before_loss": 100,
            "agent_binary_profile": if cfg!(debug_assertions) { "debug" } else { "release" },
        },
        "rto": json_rto,
        "snapshot": {
            "keys": SNAPSHOT_KEYS,
            "value_bytes": VALUE_BYTES,
            "write_keys_ms": put_ms,
            "ms_runs": ms,
            "ms_median": median(&ms),
            "bytes_runs": sizes,
            "bytes_median": median(&sizes),
            "revisions": snaps.iter().map(|s| s.2).collect::<Vec<_>>(),
        },
    });
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench/results");
    std::fs::create_dir_all(&dir).expect("bench/results");
    let path = dir.join("recovery.json");
    std::fs::write(&path, serde_json::to_string_pretty(&out).expect("json")).expect("write");
    println!("wrote {}", path.display());
}
