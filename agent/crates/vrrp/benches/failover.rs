//! `make bench-vrrp`: VIP failover, keepalived and the agent side by side
//! in the same harness (network namespaces, three routers and a client on
//! one bridge).
//!
//! A trial: wait until exactly one router holds the VIP; the client pings
//! the VIP every 10 ms (`ping -D`, so every reply carries its wall-clock
//! time, and every reply needed an ARP-resolved path to the holder); cut
//! the holder's link at the bridge; failover is the time from the cut to
//! the first reply that follows a silence of at least 50 ms. Meanwhile the connected routers' addresses are sampled
//! every 20 ms; a sample with two holders is counted (must be 0). Then the
//! cut router's instance is stopped, its link restored and the instance
//! restarted for the next trial. All routers have priority 100, so no
//! preemption churns between trials.
//!
//! Scenarios: keepalived with its defaults (VRRPv2, advert_int 1),
//! keepalived at our interval (VRRPv3), the agent (`vrrp-node`) at its
//! default interval without a quorum check, and the agent with its etcd
//! quorum check against a real 3-member etcd. Prints a table and writes
//! `bench/results/vrrp.json`. `VRRP_BENCH_TRIALS` sets the trials per
//! scenario (default 20).

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_vrrp-node");
const INTERVAL_CS: u16 = cluster_config::DEFAULT_VRRP_INTERVAL_CS;
const ROUTERS: [usize; 3] = [0, 1, 2];
const CLIENT: usize = 3;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    KeepalivedDefault,
    KeepalivedOurs,
    Agent,
    AgentEtcd,
}

impl Kind {
    fn label(self) -> String {
        match self {
            Kind::KeepalivedDefault => "keepalived defaults (VRRPv2, 1 s)".to_owned(),
            Kind::KeepalivedOurs => format!("keepalived VRRPv3 at {INTERVAL_CS} cs"),
            Kind::Agent => format!("agent default ({INTERVAL_CS} cs)"),
            Kind::AgentEtcd => format!("agent default ({INTERVAL_CS} cs) + etcd quorum"),
        }
    }
    fn key(self) -> &'static str {
        match self {
            Kind::KeepalivedDefault => "keepalived_default",
            Kind::KeepalivedOurs => "keepalived_our_interval",
            Kind::Agent => "agent_default",
            Kind::AgentEtcd => "agent_default_etcd_quorum",
        }
    }
}

struct Scenario {
    kind: Kind,
    lab: Lab,
    procs: [usize; 3],
    runs: usize,
}

impl Scenario {
    fn start(&mut self, i: usize) {
        self.runs += 1;
        let name = format!("r{i}-{}", self.runs);
        self.procs[i] = match self.kind {
            Kind::KeepalivedDefault => {
                // Debian's defaults: VRRPv2, advert_int 1.
                let conf = format!(
                    "global_defs {{\n  router_id r{i}\n}}\nvrrp_instance VI {{\n  state BACKUP\n  \
                     interface eth0\n  virtual_router_id 51\n  priority 100\n  advert_int 1\n  \
                     virtual_ipaddress {{\n    {VIP}\n  }}\n}}\n"
                );
                start_keepalived(&mut self.lab, i, &name, &conf)
            }
            Kind::KeepalivedOurs => {
                let conf =
                    keepalived_conf(3, 51, 100, &format!("{}", f64::from(INTERVAL_CS) / 100.0));
                start_keepalived(&mut self.lab, i, &name, &conf)
            }
            Kind::Agent => start_agent(&mut self.lab, BIN, i, &name, 100, INTERVAL_CS, &[]),
            Kind::AgentEtcd => start_agent(
                &mut self.lab,
                BIN,
                i,
                &name,
                100,
                INTERVAL_CS,
                &["--etcd", "http://127.0.0.1:2379"],
            ),
        };
    }
}

struct Trial {
    failover: Option<Duration>,
    samples: usize,
    two_holders: usize,
}

/// Starts `ping -D` from the client; returns a channel of reply times.
fn start_ping(lab: &mut Lab) -> (std::process::Child, mpsc::Receiver<SystemTime>) {
    let mut child = Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.nodes[CLIENT].ns,
            "ping",
            "-n",
            "-D",
            "-i",
            "0.01",
            "-W",
            "1",
            &VIP_ADDR.to_string(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting ping (Debian package iputils-ping)");
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            // "[1795404834.857123] 64 bytes from 10.77.0.10: icmp_seq=1 ..."
            if !line.contains("bytes from") {
                continue;
            }
            let Some(ts) = line.strip_prefix('[').and_then(|l| l.split(']').next()) else {
                continue;
            };
            let Ok(secs) = ts.parse::<f64>() else {
                continue;
            };
            let t = SystemTime::UNIX_EPOCH + Duration::from_secs_f64(secs);
            if tx.send(t).is_err() {
                return;
            }
        }
    });
    (child, rx)
}

fn trial(s: &mut Scenario) -> Result<Trial, String> {
    // The same single holder for 1 s in a row (the backups have heard it).
    let until = Instant::now() + Duration::from_secs(40);
    let mut stable: Option<(usize, Instant)> = None;
    let holder = loop {
        if Instant::now() > until {
            return Err("no stable single holder before the trial".to_owned());
        }
        let now_holders = s.lab.holders(&ROUTERS);
        match (now_holders.as_slice(), stable) {
            ([h], Some((prev, since))) if *h == prev => {
                if since.elapsed() >= Duration::from_secs(1) {
                    break *h;
                }
            }
            ([h], _) => stable = Some((*h, Instant::now())),
            _ => stable = None,
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (mut ping, replies) = start_ping(&mut s.lab);
    let before_cut = replies
        .recv_timeout(Duration::from_secs(5))
        .map_err(|_| "the VIP does not answer before the cut".to_owned())?;
    if s.lab.holders(&ROUTERS) != [holder] {
        let _ = ping.kill();
        let _ = ping.wait();
        return Err("the holder changed just before the cut".to_owned());
    }

    let rest: Vec<usize> = ROUTERS.iter().copied().filter(|&i| i != holder).collect();
    s.lab.cut(holder);
    // Time from the moment the link is down (`ip` has returned): replies
    // stamped before that came from the old holder while `ip` ran.
    let cut_at = SystemTime::now();
    let t0 = Instant::now();
    let mut failover = None;
    let mut samples = 0;
    let mut two = 0;
    let mut answered_at: Option<Instant> = None;
    let mut last_reply = before_cut;
    while t0.elapsed() < Duration::from_secs(15) {
        while let Ok(t) = replies.try_recv() {
            // The first reply after the path broke: later than the cut and
            // after a silence of at least 50 ms (5 pings). On a loaded host
            // ping may stamp a reply that arrived before the cut a few ms
            // late; it follows the previous reply closely, so it is not
            // mistaken for the failover (which VRRP cannot do in < 50 ms).
            let gap = t.duration_since(last_reply).unwrap_or_default();
            if failover.is_none() && t > cut_at && gap >= Duration::from_millis(50) {
                failover = t.duration_since(cut_at).ok();
                answered_at = Some(Instant::now());
            }
            last_reply = t;
        }
        samples += 1;
        if s.lab.holders(&rest).len() > 1 {
            two += 1;
        }
        if answered_at.is_some_and(|a| a.elapsed() > Duration::from_secs(1)) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = ping.kill();
    let _ = ping.wait();

    // Restore: stop the cut-off instance (it may still hold the VIP on its
    // side), reconnect, restart it as a fresh backup.
    s.lab.stop(s.procs[holder], "TERM");
    s.lab.heal(holder);
    s.start(holder);
    Ok(Trial {
        failover,
        samples,
        two_holders: two,
    })
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn run(kind: Kind, trials: usize) -> serde_json::Value {
    let tag = match kind {
        Kind::KeepalivedDefault => "bk",
        Kind::KeepalivedOurs => "bo",
        Kind::Agent => "ba",
        Kind::AgentEtcd => "be",
    };
    let lab = Lab::new(tag, 4);
    let mut s = Scenario {
        kind,
        lab,
        procs: [0; 3],
        runs: 0,
    };
    if kind == Kind::AgentEtcd {
        for i in ROUTERS {
            start_etcd(&mut s.lab, i, 3);
        }
    }
    for i in ROUTERS {
        s.start(i);
    }
    let mut times = Vec::new();
    let mut failed = 0;
    let mut samples = 0;
    let mut two = 0;
    for n in 0..trials {
        match trial(&mut s) {
            Ok(t) => {
                samples += t.samples;
                two += t.two_holders;
                match t.failover {
                    Some(d) => times.push(d.as_secs_f64() * 1000.0),
                    None => failed += 1,
                }
                eprintln!(
                    "  {} trial {}: {}",
                    kind.key(),
                    n + 1,
                    t.failover
                        .map_or("no answer within 15 s".to_owned(), |d| format!(
                            "{:.0} ms",
                            d.as_secs_f64() * 1000.0
                        ))
                );
            }
            Err(e) => {
                failed += 1;
                eprintln!("  {} trial {}: {e}", kind.key(), n + 1);
            }
        }
    }
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    let mean = if sorted.is_empty() {
        f64::NAN
    } else {
        sorted.iter().sum::<f64>() / sorted.len() as f64
    };
    serde_json::json!({
        "scenario": kind.key(),
        "label": kind.label(),
        "trials": trials,
        "failed": failed,
        "failover_ms": {
            "min": sorted.first().copied().unwrap_or(f64::NAN),
            "median": percentile(&sorted, 0.5),
            "p90": percentile(&sorted, 0.9),
            "max": sorted.last().copied().unwrap_or(f64::NAN),
            "mean": mean,
            "all": times,
        },
        "holder_samples": samples,
        "two_holder_samples": two,
    })
}

fn main() {
    // `cargo bench` passes "--bench"; ignore arguments.
    require("keepalived", "keepalived");
    require("ping", "iputils-ping");
    require("etcd", "etcd-server");
    let trials: usize = std::env::var("VRRP_BENCH_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let started = Instant::now();
    let mut results = Vec::new();
    for kind in [
        Kind::KeepalivedDefault,
        Kind::KeepalivedOurs,
        Kind::Agent,
        Kind::AgentEtcd,
    ] {
        eprintln!("scenario: {} ({trials} trials)", kind.label());
        results.push(run(kind, trials));
    }

    println!();
    println!("VIP failover: cut the holder's link -> VIP answers ping from a client namespace");
    println!(
        "{:<44} {:>6} {:>7} {:>7} {:>7} {:>7} {:>6}  two holders",
        "scenario", "trials", "min ms", "median", "p90", "max", "failed"
    );
    for r in &results {
        let f = &r["failover_ms"];
        let num = |k: &str| f[k].as_f64().map_or("-".to_owned(), |v| format!("{v:.0}"));
        println!(
            "{:<44} {:>6} {:>7} {:>7} {:>7} {:>7} {:>6}  {} of {} samples",
            r["label"].as_str().unwrap_or("?"),
            r["trials"],
            num("min"),
            num("median"),
            num("p90"),
            num("max"),
            r["failed"],
            r["two_holder_samples"],
            r["holder_samples"],
        );
    }
    let out = serde_json::json!({
        "benchmark": "vrrp_failover",
        "interval_cs": INTERVAL_CS,
        "method": "3 routers (priority 100) + 1 client on a bridge in network namespaces; \
                   failover = first ping reply (10 ms interval, ARP-resolved) after the holder's \
                   link is cut at the bridge; two-holder samples count connected routers holding \
                   the VIP at the same 20 ms sample",
        "wall_seconds": started.elapsed().as_secs(),
        "results": results,
    });
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../bench/results");
    let path = dir.join("vrrp.json");
    let text = serde_json::to_string_pretty(&out).unwrap_or_default();
    match std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, text)) {
        Ok(()) => println!("wrote {}", path.display()),
        Err(e) => {
            eprintln!("writing {}: {e}", path.display());
            std::process::exit(1);
        }
    }
}
