//! `make bench-quorum` (`cargo bench -p agent --bench quorum`): time from the last of three agents starting to a
//! healthy 3-member etcd cluster, split into etcd's own start-up and the
//! agent's overhead, plus the idle agent's resident memory.
//!
//! etcd's own share is measured in the same run by starting the same three
//! members by hand with a static `--initial-cluster` (same TLS, same
//! namespaces). "Healthy" is the same check for both: every member answers
//! `Status` and a linearizable read with a client certificate, and the
//! member list has three started voters. Prints a table and writes
//! `bench/results/quorum.json`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::net::Ipv4Addr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use agent::core::model::ClusterState;
use agent::etcd::{Etcd, Launch, TlsFiles};
use cluster_config::ClusterSecret;
use common::{client_tls, in_netns, Agent, Net, SECRET};

const CLUSTER: &str = "bench";
const RUNS: usize = 5;
const INTERVALS: [u64; 2] = [300, 1000];

/// Milliseconds from `t0` until the three members are healthy.
fn wait_healthy(
    ns: &str,
    t0: Instant,
    timeout: Duration,
    name_prefix: &'static str,
) -> Option<u64> {
    let urls: Vec<String> = (1..=3)
        .map(|i| format!("https://10.77.0.{i}:2379"))
        .collect();
    in_netns(ns, move |rt| {
        rt.block_on(async move {
            let tls = client_tls(CLUSTER);
            while t0.elapsed() < timeout {
                let mut ok = true;
                for u in &urls {
                    let Ok(c) =
                        Etcd::connect(std::slice::from_ref(u), &tls, Duration::from_millis(300))
                            .await
                    else {
                        ok = false;
                        break;
                    };
                    if c.status().await.is_err() || c.quorum_read().await.is_err() {
                        ok = false;
                        break;
                    }
                }
                if ok {
                    if let Ok(c) = Etcd::connect(&urls, &tls, Duration::from_millis(300)).await {
                        if let Ok(m) = c.members().await {
                            if m.len() == 3
                                && m.iter()
                                    .all(|m| !m.is_learner && m.name.starts_with(name_prefix))
                            {
                                return Some(t0.elapsed().as_millis() as u64);
                            }
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            None
        })
    })
}

fn median(v: &[u64]) -> u64 {
    let mut s = v.to_vec();
    s.sort_unstable();
    s[s.len() / 2]
}

fn rss_kib(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Kills everything in the namespaces and waits until they are empty, so
/// the next measurement starts from nothing (ports free, no old cluster).
fn quiesce(nss: &[String]) {
    for _ in 0..100 {
        let mut busy = false;
        for ns in nss {
            Net::kill_all_in(ns);
            let out = Command::new("ip")
                .args(["netns", "pids", ns])
                .output()
                .expect("ip netns pids");
            busy |= !out.stdout.iter().all(u8::is_ascii_whitespace);
        }
        if !busy {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("processes left in the bench namespaces");
}

/// One static (hand-configured) etcd cluster start; returns ms to healthy.
fn static_run(net: &Net, nss: &[String]) -> u64 {
    quiesce(nss);
    let secret = ClusterSecret::new(SECRET).expect("secret");
    let initial: Vec<String> = (1..=3)
        .map(|i| format!("static{i}=https://10.77.0.{i}:2380"))
        .collect();
    let mut children: Vec<Child> = Vec::new();
    let mut launches = Vec::new();
    for i in 1..=3u8 {
        let dir = net.dir.path().join(format!("static{i}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let ip = Ipv4Addr::new(10, 77, 0, i);
        agent::node_pki::write_pki(
            &agent::node_pki::PkiFiles::under(&dir.join("pki")),
            &secret,
            CLUSTER,
            &format!("static{i}"),
            ip,
            None,
        )
        .expect("pki");
        launches.push(Launch {
            binary: "/usr/bin/etcd".into(),
            name: format!("static{i}"),
            data_dir: dir.join("etcd"),
            ip,
            client_port: 2379,
            peer_port: 2380,
            heartbeat_ms: cluster_config::DEFAULT_ETCD_HEARTBEAT_MS,
            election_timeout_ms: cluster_config::DEFAULT_ETCD_ELECTION_TIMEOUT_MS,
            state: ClusterState::New {
                initial_cluster: initial.join(","),
                token: format!("static-{}", rand::random::<u32>()),
            },
            tls: TlsFiles::under(&dir.join("pki")),
        });
    }
    // One token for the three.
    let token = format!("static-{}", rand::random::<u32>());
    for l in &mut launches {
        l.state = ClusterState::New {
            initial_cluster: initial.join(","),
            token: token.clone(),
        };
    }
    for (l, ns) in launches.iter().zip(nss) {
        let log = std::fs::File::create(l.data_dir.with_extension("log")).expect("log");
        children.push(
            Command::new("ip")
                .args(["netns", "exec", ns])
                .args(l.argv())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("etcd"),
        );
    }
    let t0 = Instant::now();
    let ms = wait_healthy(&nss[0], t0, Duration::from_secs(60), "static")
        .expect("static etcd cluster never healthy");
    for mut c in children {
        let _ = c.kill();
        let _ = c.wait();
    }
    quiesce(nss);
    ms
}

/// One agent run with `interval_ms`; returns (ms to healthy, max idle RSS KiB).
fn agent_run(agents: &mut [Agent], interval_ms: u64, measure_rss: bool) -> (u64, Option<u64>) {
    let nss: Vec<String> = agents.iter().map(|a| a.ns.clone()).collect();
    quiesce(&nss);
    for a in agents.iter_mut() {
        a.stop();
        let _ = std::fs::remove_dir_all(a.state_dir());
        std::fs::write(
            a.dir.join("cluster.toml"),
            format!("name = \"{CLUSTER}\"\nrole = \"master\"\nmasters = 3\n[discovery]\ninterval_ms = {interval_ms}\n"),
        )
        .expect("config");
    }
    for a in agents.iter_mut() {
        a.start();
    }
    let t0 = Instant::now();
    let ms = wait_healthy(&agents[0].ns, t0, Duration::from_secs(90), "master-")
        .expect("agent cluster never healthy");
    let mut rss = None;
    if measure_rss {
        // Idle: the cluster is formed; let the agents settle.
        std::thread::sleep(Duration::from_secs(5));
        rss = agents
            .iter()
            .filter_map(|a| a.pid().and_then(rss_kib))
            .max();
    }
    (ms, rss)
}

fn main() {
    common::require_programs();
    let mut net = Net::new("b");
    let mut agents: Vec<Agent> = (1..=3)
        .map(|i| Agent::new(&mut net, i, CLUSTER, SECRET))
        .collect();
    let nss: Vec<String> = agents.iter().map(|a| a.ns.clone()).collect();

    let mut etcd_ms = Vec::new();
    let mut by_interval = Vec::new();
    let mut rss = 0u64;
    for run in 0..RUNS {
        etcd_ms.push(static_run(&net, &nss));
        for interval in INTERVALS {
            let (ms, r) = agent_run(&mut agents, interval, run == 0 && interval == 1000);
            if let Some(r) = r {
                rss = rss.max(r);
            }
            by_interval.push((interval, ms));
        }
    }
    for a in agents.iter_mut() {
        a.stop();
    }
    let etcd_median = median(&etcd_ms);
    println!("quorum bench ({RUNS} runs each; medians; time from the last start to a healthy 3-voter TLS cluster)");
    println!("| setup | interval | total ms | etcd ms | agent overhead ms | runs |");
    println!("|---|---|---|---|---|---|");
    println!("| static etcd (hand-written config) | - | {etcd_median} | {etcd_median} | 0 | {etcd_ms:?} |");
    let mut json_agents = Vec::new();
    for interval in INTERVALS {
        let runs: Vec<u64> = by_interval
            .iter()
            .filter(|(i, _)| *i == interval)
            .map(|(_, m)| *m)
            .collect();
        let total = median(&runs);
        let overhead = total.saturating_sub(etcd_median);
        println!("| agents (discovery interval {interval} ms) | {interval} | {total} | {etcd_median} | {overhead} | {runs:?} |");
        json_agents.push(serde_json::json!({
            "discovery_interval_ms": interval,
            "settle_ms": 3 * interval,
            "total_ms_runs": runs,
            "total_ms_median": total,
            "agent_overhead_ms": overhead,
            "goal_overhead_ms": 2000,
        }));
    }
    println!(
        "idle agent RSS: {} KiB ({:.1} MB; goal < 20 MB)",
        rss,
        rss as f64 / 1024.0
    );
    let out = serde_json::json!({
        "bench": "quorum",
        "runs": RUNS,
        "etcd_static_ms_runs": etcd_ms,
        "etcd_static_ms_median": etcd_median,
        "agents": json_agents,
        "idle_agent_rss_kib": rss,
        "goal_idle_rss_kib": 20 * 1024,
        "agent_binary_profile": if cfg!(debug_assertions) { "debug" } else { "release" },
    });
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench/results");
    std::fs::create_dir_all(&dir).expect("bench/results");
    let path = dir.join("quorum.json");
    std::fs::write(&path, serde_json::to_string_pretty(&out).expect("json")).expect("write");
    println!("wrote {}", path.display());
}
