//! `make bench-vrrp`: VIP failover, keepalived and the agent side by side
//! in the same harness and the same run (network namespaces, three routers
//! and a client on one bridge, all routers at priority 100).
//!
//! Disruptions, one per row:
//! Every disruption happens at a uniformly random moment within one advert
//! interval of the holder (a real failure does not pick its phase; without
//! this the harness's own timing fixed the phase and shifted whole rows by
//! up to one interval).
//!
//! - **cut** (a hard node failure): the holder's link is cut at the bridge.
//!   Failover is the time from the cut to the first ping reply from the VIP
//!   that follows a silence of at least 50 ms (the client pings every
//!   10 ms, `ping -D`, so every reply needed an ARP-resolved path to the
//!   holder). Then the cut router's instance is stopped, its link restored
//!   and the instance restarted for the next trial.
//! - **stop** (a planned stop, `systemctl stop`): SIGTERM to the holder's
//!   instance. Handover is the time until another router holds the VIP.
//! - **quorum loss** (agent with etcd only): the etcd members of the two
//!   other routers are killed; the holder must give the VIP up within the
//!   proof lease and nobody may take it. Resign is the time from the kill
//!   until the holder no longer has the address.
//!
//! For every trial: lost pings (sequence numbers never answered from the
//! disruption until one second after the VIP answers again); two-holder
//! samples (connected routers holding the VIP at the same 20 ms sample,
//! through netlink in each namespace); with etcd, the minority-holder
//! counts of the quorum rule judged against the ground truth (samples and
//! adverts captured on the bridge; see `tests/common/watch.rs`): must be 0.
//!
//! Prints a table, the agent/keepalived ratios at equal interval and the
//! graceful-vs-hard comparison, and writes `bench/results/vrrp.json`.
//! `VRRP_BENCH_TRIALS` sets the trials per row (default 20);
//! `VRRP_BENCH_ONLY` (comma-separated scenario keys) runs a subset.

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use common::watch::{judge, AdvertCapture, Bounds, HolderSampler, Timeline, Topology, Verdict};
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

#[derive(Clone, Copy, Debug, PartialEq)]
enum Disruption {
    Cut,
    Stop,
    QuorumLoss,
}

impl Disruption {
    fn key(self) -> &'static str {
        match self {
            Disruption::Cut => "cut",
            Disruption::Stop => "stop",
            Disruption::QuorumLoss => "quorum_loss",
        }
    }
    fn label(self) -> &'static str {
        match self {
            Disruption::Cut => "link cut (hard)",
            Disruption::Stop => "SIGTERM (planned)",
            Disruption::QuorumLoss => "2 of 3 etcd killed",
        }
    }
}

impl Kind {
    fn label(self) -> String {
        match self {
            Kind::KeepalivedDefault => "keepalived defaults (VRRPv2, 1 s)".to_owned(),
            Kind::KeepalivedOurs => format!("keepalived VRRPv3 at {INTERVAL_CS} cs"),
            Kind::Agent => format!("agent {INTERVAL_CS} cs, no quorum rule"),
            Kind::AgentEtcd => format!("agent {INTERVAL_CS} cs + etcd proof"),
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
    /// The advert interval of the routers, centiseconds.
    fn interval_cs(self) -> u64 {
        match self {
            Kind::KeepalivedDefault => 100,
            _ => u64::from(INTERVAL_CS),
        }
    }
    fn tag(self) -> &'static str {
        match self {
            Kind::KeepalivedDefault => "bk",
            Kind::KeepalivedOurs => "bo",
            Kind::Agent => "ba",
            Kind::AgentEtcd => "be",
        }
    }
}

struct Scenario {
    kind: Kind,
    lab: Lab,
    procs: [usize; 3],
    etcd: [Option<usize>; 3],
    runs: usize,
    sampler: HolderSampler,
    capture: Option<AdvertCapture>,
    timeline: Timeline,
}

impl Scenario {
    fn new(kind: Kind) -> Scenario {
        let mut lab = Lab::new(kind.tag(), 4);
        let mut etcd = [None; 3];
        if kind == Kind::AgentEtcd {
            for i in ROUTERS {
                etcd[i] = Some(start_etcd(&mut lab, i, 3));
            }
        }
        let sampler = HolderSampler::start(&lab, Duration::from_millis(20));
        let capture = (kind == Kind::AgentEtcd).then(|| AdvertCapture::start(&lab));
        // The client is no member: all-running, all-connected routers.
        let mut topo = Topology::healthy(4);
        topo.nodes[CLIENT].etcd = false;
        topo.nodes[CLIENT].vrrp = false;
        topo.nodes[CLIENT].member = false;
        let mut s = Scenario {
            kind,
            lab,
            procs: [0; 3],
            etcd,
            runs: 0,
            sampler,
            capture,
            timeline: Timeline::new(SystemTime::now(), topo),
        };
        for i in ROUTERS {
            s.start(i);
        }
        s
    }

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

    fn change(&mut self, what: String, merge: bool, f: impl FnOnce(&mut Topology)) {
        let mut t = self.timeline.now().clone();
        f(&mut t);
        self.timeline.push(SystemTime::now(), t, what, merge);
    }

    /// The routers whose link is up.
    fn connected(&self) -> Vec<usize> {
        let t = self.timeline.now();
        ROUTERS
            .iter()
            .copied()
            .filter(|&i| t.nodes[i].link)
            .collect()
    }
}

#[derive(Default)]
struct Trial {
    /// Cut: first reply after the silence. Stop: another router holds.
    /// Quorum loss: the holder dropped the VIP.
    time: Option<Duration>,
    lost: u64,
    samples: usize,
    two_holders: usize,
}

/// `ping -D` from the client; replies as (wall-clock time, icmp_seq).
fn start_ping(lab: &mut Lab) -> (std::process::Child, mpsc::Receiver<(SystemTime, u64)>) {
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
            let Some(seq) = line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("icmp_seq="))
                .and_then(|s| s.parse::<u64>().ok())
            else {
                continue;
            };
            let t = SystemTime::UNIX_EPOCH + Duration::from_secs_f64(secs);
            if tx.send((t, seq)).is_err() {
                return;
            }
        }
    });
    (child, rx)
}

/// Waits until the same single router has held the VIP for 1 s.
fn stable_holder(s: &Scenario) -> Result<usize, String> {
    s.sampler
        .wait(Duration::from_secs(40), Duration::from_secs(1), |x| {
            x.nodes().len() == 1
        })
        .map(|x| x.nodes()[0])
        .ok_or_else(|| "no stable single holder before the trial".to_owned())
}

fn trial(s: &mut Scenario, d: Disruption) -> Result<Trial, String> {
    let holder = stable_holder(s)?;
    let (mut ping, replies) = start_ping(&mut s.lab);
    let (_, mut last_seq) = replies
        .recv_timeout(Duration::from_secs(5))
        .map_err(|_| "the VIP does not answer before the disruption".to_owned())?;
    std::thread::sleep(Duration::from_millis(100));
    let mut before = None;
    while let Ok((t, seq)) = replies.try_recv() {
        before = Some(t);
        last_seq = seq;
    }
    let mut last_reply = before.unwrap_or_else(SystemTime::now);
    if s.sampler.latest().nodes() != [holder] {
        let _ = ping.kill();
        let _ = ping.wait();
        return Err("the holder changed just before the disruption".to_owned());
    }
    let others: Vec<usize> = ROUTERS.iter().copied().filter(|&i| i != holder).collect();
    // A uniformly random phase relative to the holder's adverts.
    let phase_us = random_u64() % (s.kind.interval_cs() * 10_000);
    std::thread::sleep(Duration::from_micros(phase_us));
    let at = SystemTime::now();
    match d {
        Disruption::Cut => {
            s.lab.cut(holder);
            s.change(format!("cut router {holder}"), false, |t| {
                t.nodes[holder].link = false
            });
        }
        Disruption::Stop => {
            s.lab.signal(s.procs[holder], "TERM");
            s.change(format!("SIGTERM router {holder}"), false, |_| {});
        }
        Disruption::QuorumLoss => {
            for &o in &others {
                if let Some(id) = s.etcd[o].take() {
                    s.lab.stop(id, "KILL");
                }
            }
            s.change(format!("kill etcd of {others:?}"), false, |t| {
                for &o in &others {
                    t.nodes[o].etcd = false;
                }
            });
        }
    }
    // From the moment the disruption is in place (`ip` has returned).
    let t0 = Instant::now();
    let start = SystemTime::now();
    let mut trial = Trial::default();
    let mut answered_at: Option<Instant> = None;
    let mut replied_seqs = Vec::new();
    let limit = match d {
        Disruption::QuorumLoss => Duration::from_secs(6),
        _ => Duration::from_secs(15),
    };
    while t0.elapsed() < limit {
        while let Ok((t, seq)) = replies.try_recv() {
            // Cut: the first reply after the path broke, later than the cut
            // and after a silence of at least 50 ms (a reply stamped late
            // by a loaded host follows the previous one closely).
            let gap = t.duration_since(last_reply).unwrap_or_default();
            if d == Disruption::Cut
                && trial.time.is_none()
                && t > start
                && gap >= Duration::from_millis(50)
            {
                trial.time = t.duration_since(start).ok();
                answered_at = Some(Instant::now());
            }
            last_reply = t;
            if seq > last_seq {
                replied_seqs.push(seq);
            }
        }
        let sample = s.sampler.latest();
        let holds = sample.nodes();
        match d {
            Disruption::Stop
                if trial.time.is_none() && holds.iter().any(|h| others.contains(h)) =>
            {
                trial.time = sample.at.duration_since(at).ok();
                answered_at = Some(Instant::now());
            }
            Disruption::QuorumLoss if trial.time.is_none() && !holds.contains(&holder) => {
                trial.time = sample.at.duration_since(start).ok();
                answered_at = Some(Instant::now());
            }
            _ => {}
        }
        if answered_at.is_some_and(|a| a.elapsed() > Duration::from_secs(1)) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = ping.kill();
    let _ = ping.wait();
    while let Ok((_, seq)) = replies.try_recv() {
        if seq > last_seq {
            replied_seqs.push(seq);
        }
    }
    if d != Disruption::QuorumLoss {
        // Sequence numbers sent after the last reply before the
        // disruption, up to the last one answered, that got no answer.
        replied_seqs.sort_unstable();
        replied_seqs.dedup();
        if let Some(&max) = replied_seqs.last() {
            trial.lost = (max - last_seq) - replied_seqs.len() as u64;
        }
    }
    let end = SystemTime::now();
    let connected = s.connected();
    for x in s
        .sampler
        .samples()
        .iter()
        .filter(|x| x.at >= at && x.at <= end)
    {
        trial.samples += 1;
        if x.nodes().iter().filter(|i| connected.contains(i)).count() > 1 {
            trial.two_holders += 1;
        }
    }

    // Restore for the next trial.
    match d {
        Disruption::Cut => {
            // Stop the cut-off instance (it may hold the VIP on its side
            // until its lease ends), reconnect, restart it as a backup.
            s.lab.stop(s.procs[holder], "TERM");
            s.change(format!("stop router {holder}"), false, |t| {
                t.nodes[holder].vrrp = false
            });
            s.lab.heal(holder);
            s.start(holder);
            s.change(format!("heal and restart router {holder}"), true, |t| {
                t.nodes[holder].link = true;
                t.nodes[holder].vrrp = true;
            });
        }
        Disruption::Stop => {
            s.lab.stop(s.procs[holder], "TERM");
            s.start(holder);
            s.change(format!("restart router {holder}"), true, |_| {});
        }
        Disruption::QuorumLoss => {
            for &o in &others {
                s.etcd[o] = Some(start_etcd(&mut s.lab, o, 3));
            }
            s.change(format!("restart etcd of {others:?}"), true, |t| {
                for &o in &others {
                    t.nodes[o].etcd = true;
                }
            });
        }
    }
    Ok(trial)
}

/// A random number (splitmix64 over the clock and a counter; the bench
/// needs spread, not secrecy).
fn random_u64() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut z = nanos
        .wrapping_add(COUNTER.fetch_add(1, Ordering::Relaxed))
        .wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn stats(v: &[f64]) -> serde_json::Value {
    let mut sorted = v.to_vec();
    sorted.sort_by(f64::total_cmp);
    serde_json::json!({
        "min": sorted.first().copied().unwrap_or(f64::NAN),
        "median": percentile(&sorted, 0.5),
        "p90": percentile(&sorted, 0.9),
        "max": sorted.last().copied().unwrap_or(f64::NAN),
        "all": v,
    })
}

fn bounds() -> Bounds {
    Bounds {
        lease: vrrp::config::DEFAULT_PROOF.lease,
        hold_slack: Duration::from_millis(250),
        claim_slack: Duration::from_millis(250),
        merge_settle: Duration::from_secs(1),
        advert_gap: Duration::from_millis(800),
    }
}

fn row(s: &mut Scenario, d: Disruption, trials: usize) -> serde_json::Value {
    eprintln!(
        "scenario: {} / {} ({trials} trials)",
        s.kind.label(),
        d.label()
    );
    let from = SystemTime::now();
    let mut times = Vec::new();
    let mut lost = Vec::new();
    let (mut failed, mut samples, mut two) = (0, 0, 0);
    for n in 0..trials {
        match trial(s, d) {
            Ok(t) => {
                samples += t.samples;
                two += t.two_holders;
                match t.time {
                    Some(x) => times.push(x.as_secs_f64() * 1000.0),
                    None => failed += 1,
                }
                if d != Disruption::QuorumLoss {
                    lost.push(t.lost as f64);
                }
                eprintln!(
                    "  {} {} trial {}: {}, {} pings lost",
                    s.kind.key(),
                    d.key(),
                    n + 1,
                    t.time.map_or("no result".to_owned(), |x| format!(
                        "{:.0} ms",
                        x.as_secs_f64() * 1000.0
                    )),
                    t.lost
                );
            }
            Err(e) => {
                failed += 1;
                eprintln!("  {} {} trial {}: {e}", s.kind.key(), d.key(), n + 1);
            }
        }
    }
    // The quorum rule, judged on everything this row did.
    let verdict = s.capture.as_ref().map(|c| {
        let addrs: Vec<_> = s.lab.nodes.iter().map(|n| n.addr).collect();
        judge(
            &s.timeline,
            &s.sampler.samples(),
            &c.adverts(),
            &addrs,
            bounds(),
            from,
            SystemTime::now(),
        )
    });
    if let Some(v) = verdict.as_ref().filter(|v| !v.clean()) {
        for l in v
            .minority_samples
            .iter()
            .chain(&v.minority_adverts)
            .chain(&v.minority_claims)
            .chain(&v.two_holders)
            .take(10)
        {
            eprintln!("  VIOLATION {l}");
        }
    }
    serde_json::json!({
        "scenario": s.kind.key(),
        "label": s.kind.label(),
        "disruption": d.key(),
        "disruption_label": d.label(),
        "trials": trials,
        "failed": failed,
        "time_ms": stats(&times),
        "lost_pings": stats(&lost),
        "holder_samples": samples,
        "two_holder_samples": two,
        "quorum_rule": verdict.as_ref().map(verdict_json),
    })
}

fn verdict_json(v: &Verdict) -> serde_json::Value {
    serde_json::json!({
        "samples": v.samples,
        "adverts": v.adverts,
        "minority_holder_samples": v.minority_samples.len(),
        "minority_adverts": v.minority_adverts.len(),
        "minority_claims": v.minority_claims.len(),
        "two_holder_samples": v.two_holders.len(),
        "longest_hold_after_quorum_loss_ms": v.longest_minority_hold.as_millis() as u64,
    })
}

fn median(r: &serde_json::Value, what: &str) -> Option<f64> {
    r[what]["median"].as_f64().filter(|m| m.is_finite())
}

fn main() {
    // `cargo bench` passes "--bench"; ignore arguments.
    require("keepalived", "keepalived");
    require("ping", "iputils-ping");
    require("etcd", "etcd-server");
    require("tcpdump", "tcpdump");
    let trials: usize = std::env::var("VRRP_BENCH_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let started = Instant::now();
    let plan: [(Kind, &[Disruption]); 4] = [
        (Kind::KeepalivedDefault, &[Disruption::Cut]),
        (Kind::KeepalivedOurs, &[Disruption::Cut, Disruption::Stop]),
        (Kind::Agent, &[Disruption::Cut, Disruption::Stop]),
        (
            Kind::AgentEtcd,
            &[Disruption::Cut, Disruption::Stop, Disruption::QuorumLoss],
        ),
    ];
    let only: Option<Vec<String>> = std::env::var("VRRP_BENCH_ONLY")
        .ok()
        .map(|v| v.split(',').map(str::to_owned).collect());
    let mut results = Vec::new();
    for (kind, rows) in plan {
        if only
            .as_ref()
            .is_some_and(|o| !o.iter().any(|k| k == kind.key()))
        {
            continue;
        }
        let mut s = Scenario::new(kind);
        for &d in rows {
            results.push(row(&mut s, d, trials));
        }
    }

    println!();
    println!(
        "VIP failover, 3 routers at priority 100 + a client pinging the VIP every 10 ms (bridge in network namespaces)"
    );
    println!(
        "{:<36} {:<19} {:>6} {:>7} {:>7} {:>7} {:>7} {:>6} {:>10}  {:<12} minority holder",
        "scenario",
        "disruption",
        "trials",
        "min ms",
        "median",
        "p90",
        "max",
        "failed",
        "lost pings",
        "two holders"
    );
    let mut minority_total = 0usize;
    for r in &results {
        let f = &r["time_ms"];
        let num = |k: &str| f[k].as_f64().map_or("-".to_owned(), |v| format!("{v:.0}"));
        let lost = median(r, "lost_pings").map_or("-".to_owned(), |v| format!("{v:.0}"));
        let minority = match &r["quorum_rule"] {
            serde_json::Value::Null => "n/a".to_owned(),
            q => {
                let n = [
                    "minority_holder_samples",
                    "minority_adverts",
                    "minority_claims",
                ]
                .iter()
                .map(|k| q[k].as_u64().unwrap_or(0) as usize)
                .sum::<usize>();
                minority_total += n;
                format!(
                    "{} (samples {}, adverts {}, claims {}; longest {} ms)",
                    n,
                    q["minority_holder_samples"],
                    q["minority_adverts"],
                    q["minority_claims"],
                    q["longest_hold_after_quorum_loss_ms"]
                )
            }
        };
        println!(
            "{:<36} {:<19} {:>6} {:>7} {:>7} {:>7} {:>7} {:>6} {:>10}  {:<12} {}",
            r["label"].as_str().unwrap_or("?"),
            r["disruption_label"].as_str().unwrap_or("?"),
            r["trials"],
            num("min"),
            num("median"),
            num("p90"),
            num("max"),
            r["failed"],
            lost,
            format!("{} of {}", r["two_holder_samples"], r["holder_samples"]),
            minority,
        );
    }
    let find = |k: &str, d: &str| {
        results
            .iter()
            .find(|r| r["scenario"] == k && r["disruption"] == d)
            .cloned()
            .unwrap_or_default()
    };
    let ka = median(&find("keepalived_our_interval", "cut"), "time_ms");
    let mut ratios = serde_json::Map::new();
    println!();
    for k in ["agent_default", "agent_default_etcd_quorum"] {
        if let (Some(a), Some(b)) = (median(&find(k, "cut"), "time_ms"), ka) {
            let ratio = a / b;
            println!(
                "median failover at {INTERVAL_CS} cs, {k} / keepalived: {a:.0} / {b:.0} ms = {ratio:.2} (goal <= 1.00)"
            );
            ratios.insert(k.to_owned(), serde_json::json!(ratio));
        }
    }
    for k in [
        "keepalived_our_interval",
        "agent_default",
        "agent_default_etcd_quorum",
    ] {
        let hard = median(&find(k, "cut"), "lost_pings");
        let soft = median(&find(k, "stop"), "lost_pings");
        if let (Some(h), Some(g)) = (hard, soft) {
            println!("lost pings (median), {k}: planned stop {g:.0} vs hard failure {h:.0}");
        }
    }
    println!(
        "minority holder (samples + adverts + claims past the {} ms lease): {minority_total} (must be 0)",
        bounds().lease.as_millis()
    );
    let out = serde_json::json!({
        "benchmark": "vrrp_failover",
        "interval_cs": INTERVAL_CS,
        "proof_lease_ms": bounds().lease.as_millis() as u64,
        "method": "3 routers (priority 100) + 1 client on a bridge in network namespaces; \
                   each disruption at a uniformly random phase of the advert interval; \
                   cut: first ping reply (10 ms interval, ARP-resolved) after the holder's \
                   link is cut; stop: SIGTERM to the holder, until another router holds; \
                   quorum_loss: the other two etcd members killed, until the holder drops the VIP; \
                   lost pings: sequence numbers never answered; two-holder samples: connected \
                   routers holding the VIP at the same 20 ms sample; quorum_rule: judged against \
                   the test's ground truth (tests/common/watch.rs)",
        "wall_seconds": started.elapsed().as_secs(),
        "ratio_to_keepalived_same_interval": ratios,
        "minority_holder_total": minority_total,
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
