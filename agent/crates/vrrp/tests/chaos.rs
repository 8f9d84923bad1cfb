//! The quorum rule under randomized failures. 3 and 5 masters in network
//! namespaces, each a `vrrp-node --etcd` beside a real etcd member (Debian's
//! etcd-server). A seeded sequence of steps, each followed by a random
//! dwell: cut a node's link (the holder or another), partition the bridge
//! (holder on the minority or on the majority side), kill etcd, kill a node
//! (processes and link), stop an instance gracefully, repair one node, or
//! repair everything. The VIP holders are sampled every 20 ms (netlink in
//! each namespace) and every advert on the bridges is captured (tcpdump).
//!
//! Judged against the ground truth the test controls ([`common::watch`]):
//! - no node without quorum holds the VIP or advertises a priority above 0
//!   longer than the proof lease (2 s) + 250 ms after it lost quorum;
//! - no node without quorum *starts* holding or advertising (250 ms slack
//!   for a proof in flight at the cut and for sampling);
//! - never two holders on the majority's side (except within 1 s of a
//!   merge: two masters meeting again, the lower yields on one advert);
//! - exactly one holder on the majority's side at the end of every long
//!   (7 s) dwell, and after each sequence once everything is repaired.
//!
//! `cargo test` runs three sequences (two with 3 masters, one with 5;
//! about two minutes); the long run (100 seeds, odd seeds with 3 masters,
//! even with 5; `VRRP_CHAOS_SEEDS` sets the count) is the ignored test
//! `chaos_many`, run by `make bench-vrrp-chaos`, which also writes
//! `bench/results/vrrp-chaos.json`.

mod common;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant, SystemTime};

use common::watch::{judge, AdvertCapture, Bounds, HolderSampler, Timeline, Topology, Verdict};
use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_vrrp-node");
const INTERVAL_CS: u16 = cluster_config::DEFAULT_VRRP_INTERVAL_CS;
const STEPS: usize = 6;
const LONG_DWELL: Duration = Duration::from_secs(7);
const LIVENESS_WINDOW: Duration = Duration::from_millis(1500);

/// The bounds the test holds the product to (lease: the agent's default).
fn bounds() -> Bounds {
    Bounds {
        lease: vrrp::config::DEFAULT_PROOF.lease,
        hold_slack: Duration::from_millis(250),
        claim_slack: Duration::from_millis(250),
        merge_settle: Duration::from_secs(1),
        advert_gap: Duration::from_millis(800),
    }
}

/// splitmix64: small, seedable, good enough to pick steps.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn pick(&mut self, from: &[usize]) -> Option<usize> {
        (!from.is_empty()).then(|| from[self.below(from.len())])
    }
}

struct Cluster {
    lab: Lab,
    n: usize,
    etcd: Vec<Option<usize>>,
    vrrp: Vec<Option<usize>>,
    runs: usize,
    timeline: Timeline,
    sampler: HolderSampler,
    capture: AdvertCapture,
    liveness: Vec<String>,
}

impl Cluster {
    fn new(tag: &str, n: usize) -> Cluster {
        require("etcd", "etcd-server");
        require("tcpdump", "tcpdump");
        let mut lab = Lab::new(tag, n);
        let etcd = (0..n).map(|i| Some(start_etcd(&mut lab, i, n))).collect();
        let sampler = HolderSampler::start(&lab, Duration::from_millis(20));
        let capture = AdvertCapture::start(&lab);
        let mut c = Cluster {
            lab,
            n,
            etcd,
            vrrp: vec![None; n],
            runs: 0,
            timeline: Timeline::new(SystemTime::now(), Topology::healthy(n)),
            sampler,
            capture,
            liveness: Vec::new(),
        };
        for i in 0..n {
            c.start_vrrp(i);
        }
        let one = c
            .sampler
            .wait(Duration::from_secs(60), Duration::from_secs(1), |s| {
                s.nodes().len() == 1
            });
        assert!(
            one.is_some(),
            "{n} masters never settled on one VIP holder; logs in {}",
            c.lab.dir.display()
        );
        c
    }

    fn addrs(&self) -> Vec<Ipv4Addr> {
        self.lab.nodes.iter().map(|n| n.addr).collect()
    }

    fn start_vrrp(&mut self, i: usize) {
        self.runs += 1;
        let name = format!("vrrp{i}-{}", self.runs);
        self.vrrp[i] = Some(start_agent(
            &mut self.lab,
            BIN,
            i,
            &name,
            100,
            INTERVAL_CS,
            &["--etcd", "http://127.0.0.1:2379"],
        ));
    }

    /// The single holder among live nodes, if exactly one.
    fn holder(&self) -> Option<usize> {
        let topo = self.timeline.now();
        match self
            .sampler
            .latest()
            .nodes()
            .into_iter()
            .filter(|&i| i < self.n && !topo.nodes[i].dead)
            .collect::<Vec<_>>()[..]
        {
            [h] => Some(h),
            _ => None,
        }
    }

    fn record(&mut self, at: SystemTime, topo: Topology, what: String, merge: bool) {
        println!("    {what}");
        self.timeline.push(at, topo, what, merge);
    }

    fn cut(&mut self, i: usize) {
        let mut t = self.timeline.now().clone();
        let at = SystemTime::now();
        self.lab.cut(i);
        t.nodes[i].link = false;
        self.record(at, t, format!("cut node {i}"), false);
    }

    fn partition(&mut self, side1: &[usize]) {
        let mut t = self.timeline.now().clone();
        let at = SystemTime::now();
        for i in 0..self.n {
            let br = if side1.contains(&i) { 1 } else { 0 };
            if t.nodes[i].bridge != br {
                self.lab.set_bridge(i, if br == 1 { "br1" } else { "br0" });
                t.nodes[i].bridge = br;
            }
        }
        self.record(at, t, format!("partition: {side1:?} on br1"), true);
    }

    fn kill_etcd(&mut self, i: usize) {
        let mut t = self.timeline.now().clone();
        let at = SystemTime::now();
        if let Some(id) = self.etcd[i].take() {
            self.lab.stop(id, "KILL");
        }
        t.nodes[i].etcd = false;
        self.record(at, t, format!("kill etcd on node {i}"), false);
    }

    fn kill_node(&mut self, i: usize) {
        let mut t = self.timeline.now().clone();
        let at = SystemTime::now();
        self.lab.cut(i);
        for id in [self.vrrp[i].take(), self.etcd[i].take()]
            .into_iter()
            .flatten()
        {
            self.lab.stop(id, "KILL");
        }
        t.nodes[i] = common::watch::NodeState {
            link: false,
            bridge: t.nodes[i].bridge,
            etcd: false,
            vrrp: false,
            dead: true,
            member: true,
        };
        self.record(at, t, format!("kill node {i} (processes and link)"), false);
    }

    fn stop_vrrp(&mut self, i: usize) {
        if let Some(id) = self.vrrp[i].take() {
            let t0 = Instant::now();
            self.lab.stop(id, "TERM");
            let mut t = self.timeline.now().clone();
            t.nodes[i].vrrp = false;
            let took = t0.elapsed().as_millis();
            self.record(
                SystemTime::now(),
                t,
                format!("stop instance on node {i} gracefully ({took} ms)"),
                false,
            );
        }
    }

    /// Brings node `i` back completely: processes, link, bridge 0.
    fn repair(&mut self, i: usize) {
        let mut t = self.timeline.now().clone();
        let was = t.nodes[i];
        if self.etcd[i].is_none() {
            self.etcd[i] = Some(start_etcd(&mut self.lab, i, self.n));
        }
        if self.vrrp[i].is_none() {
            // A restarted instance first removes a VIP a killed one left
            // (its own start-up does that); give it the time before the
            // link comes back.
            self.start_vrrp(i);
            std::thread::sleep(Duration::from_millis(300));
        }
        let at = SystemTime::now();
        if was.bridge != 0 {
            self.lab.set_bridge(i, "br0");
        }
        if !was.link {
            self.lab.heal(i);
        }
        t.nodes[i] = common::watch::NodeState {
            link: true,
            bridge: 0,
            etcd: true,
            vrrp: true,
            dead: false,
            member: true,
        };
        if t.nodes[i] != was {
            self.record(at, t, format!("repair node {i}"), true);
        }
    }

    fn damaged(&self) -> Vec<usize> {
        let healthy = Topology::healthy(self.n);
        (0..self.n)
            .filter(|&i| self.timeline.now().nodes[i] != healthy.nodes[i])
            .collect()
    }

    fn repair_all(&mut self) {
        for i in self.damaged() {
            self.repair(i);
        }
    }

    /// One random step.
    fn step(&mut self, rng: &mut Rng) {
        let topo = self.timeline.now().clone();
        let alive: Vec<usize> = (0..self.n).filter(|&i| !topo.nodes[i].dead).collect();
        let holder = self.holder();
        let others: Vec<usize> = alive
            .iter()
            .copied()
            .filter(|&i| Some(i) != holder)
            .collect();
        let target = |rng: &mut Rng| holder.or_else(|| rng.pick(&alive));
        match rng.below(100) {
            0..=14 => {
                if let Some(i) = target(rng) {
                    self.cut(i)
                }
            }
            15..=24 => {
                if let Some(i) = rng.pick(&others) {
                    self.cut(i)
                }
            }
            25..=39 => {
                // A minority of k nodes, with the holder on it or not;
                // either side may be the one moved to br1.
                let k = 1 + rng.below((self.n - 1) / 2);
                let mut minority = Vec::new();
                let mut pool: Vec<usize> = (0..self.n).collect();
                if let (Some(h), true) = (holder, rng.below(2) == 0) {
                    minority.push(h);
                    pool.retain(|&i| i != h);
                } else if let Some(h) = holder {
                    pool.retain(|&i| i != h);
                }
                while minority.len() < k && !pool.is_empty() {
                    let j = rng.below(pool.len());
                    minority.push(pool.remove(j));
                }
                minority.sort();
                let side1 = if rng.below(2) == 0 {
                    minority
                } else {
                    (0..self.n).filter(|i| !minority.contains(i)).collect()
                };
                self.partition(&side1);
            }
            40..=49 => {
                if let Some(i) = target(rng).filter(|&i| topo.nodes[i].etcd) {
                    self.kill_etcd(i)
                }
            }
            50..=59 => {
                if let Some(i) = target(rng) {
                    self.kill_node(i)
                }
            }
            60..=69 => {
                if let Some(i) = holder {
                    self.stop_vrrp(i)
                }
            }
            70..=84 => {
                let d = self.damaged();
                if let Some(i) = rng.pick(&d) {
                    self.repair(i)
                }
            }
            _ => self.repair_all(),
        }
    }

    /// Checks that the majority's side has exactly one holder in every
    /// sample of the last [`LIVENESS_WINDOW`] (when someone can hold it).
    fn check_liveness(&mut self, what: &str) {
        let topo = self.timeline.now().clone();
        if !topo.holder_possible() {
            return;
        }
        let Some(side) = topo.majority_side() else {
            return;
        };
        let since = SystemTime::now() - LIVENESS_WINDOW;
        let bad: Vec<Vec<usize>> = self
            .sampler
            .samples()
            .iter()
            .filter(|s| s.at >= since)
            .map(|s| {
                s.nodes()
                    .into_iter()
                    .filter(|i| side.contains(i))
                    .collect::<Vec<_>>()
            })
            .filter(|h| h.len() != 1)
            .collect();
        if !bad.is_empty() {
            self.liveness.push(format!(
                "{what}: majority side {side:?} without exactly one holder in {} samples, e.g. {:?}",
                bad.len(),
                bad[0]
            ));
        }
    }

    /// One seeded sequence; returns its verdict (liveness failures in
    /// `self.liveness`).
    fn sequence(&mut self, seed: u64) -> Verdict {
        let mut rng = Rng(seed);
        let from = SystemTime::now();
        println!("  seed {seed} ({} masters):", self.n);
        for step in 0..STEPS {
            self.step(&mut rng);
            if rng.below(10) < 3 {
                std::thread::sleep(LONG_DWELL);
                self.check_liveness(&format!("seed {seed} step {step}"));
            } else {
                std::thread::sleep(Duration::from_millis(300 + rng.below(2700) as u64));
            }
        }
        self.repair_all();
        let settled = self
            .sampler
            .wait(Duration::from_secs(20), Duration::from_secs(1), |s| {
                s.nodes().len() == 1
            });
        if settled.is_none() {
            self.liveness.push(format!(
                "seed {seed}: no single holder within 20 s of repairing everything"
            ));
        }
        std::thread::sleep(LIVENESS_WINDOW);
        self.check_liveness(&format!("seed {seed} after repair"));
        let to = SystemTime::now();
        judge(
            &self.timeline,
            &self.sampler.samples(),
            &self.capture.adverts(),
            &self.addrs(),
            bounds(),
            from,
            to,
        )
    }

    fn report(&self, v: &Verdict) -> String {
        let mut s = format!("{}\n", v.summary());
        for list in [
            &v.minority_samples,
            &v.minority_adverts,
            &v.minority_claims,
            &v.two_holders,
            &self.liveness,
        ] {
            for line in list.iter().take(10) {
                s.push_str(&format!("  {line}\n"));
            }
        }
        s.push_str(&format!(
            "timeline:\n{}\nlogs in {}",
            self.timeline.describe(),
            self.lab.dir.display()
        ));
        s
    }
}

#[test]
fn tcpdump_adverts_parse() {
    let a = common::watch::parse_tcpdump(
        "1732412345.250000 IP 10.77.0.3 > 224.0.0.18: VRRPv3, Advertisement, vrid 51, prio 100, intvl 20cs, length 12",
    )
    .expect("an advert");
    assert_eq!(a.src, Ipv4Addr::new(10, 77, 0, 3));
    assert_eq!(a.priority, 100);
    assert!(common::watch::parse_tcpdump("listening on br0, link-type EN10MB").is_none());
}

/// Seed 1093 of the first 100-seed run: the holder (node 2) was cut for
/// 0.74 s and put back on a side without quorum; it kept the VIP under its
/// lease and resigned 2.2 s after the cut, as designed, but its adverts
/// were invisible during the cut and the first one after it counted as a
/// new claim. A silence while the node's own link is down is not one; the
/// same silence with the link up still is.
#[test]
fn an_advert_silence_while_the_link_was_cut_is_not_a_new_claim() {
    use common::watch::{Advert, Sample};
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
    let ms = |n: u64| t0 + Duration::from_millis(n);
    let addrs: Vec<Ipv4Addr> = (1..=3).map(|i| Ipv4Addr::new(10, 77, 0, i)).collect();
    let judge_with = |moved: fn(&mut Topology)| {
        let mut tl = Timeline::new(t0, Topology::healthy(3));
        let mut lost = Topology::healthy(3);
        moved(&mut lost);
        tl.push(ms(1000), lost, "node 2 loses quorum", false);
        // Back on a bridge alone: still no quorum.
        let mut alone = Topology::healthy(3);
        alone.nodes[2].bridge = 1;
        tl.push(ms(1700), alone, "node 2 alone", true);
        let samples: Vec<Sample> = (0..100)
            .map(|k| Sample {
                at: ms(20 * k),
                holders: 1 << 2,
            })
            .collect();
        let adverts = [900, 1900].map(|at| Advert {
            at: ms(at),
            src: addrs[2],
            priority: 100,
        });
        judge(&tl, &samples, &adverts, &addrs, bounds(), t0, ms(2000))
    };
    let cut = judge_with(|t| t.nodes[2].link = false);
    assert!(cut.clean(), "{}", cut.summary());
    let moved = judge_with(|t| t.nodes[2].bridge = 1);
    assert_eq!(moved.minority_claims.len(), 1, "{}", moved.summary());
}

/// One cluster at a time: timing is judged, and the host has two cores.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn run_seeds(tag: &str, n: usize, seeds: &[u64]) -> (Verdict, Vec<String>, Duration) {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let started = Instant::now();
    let mut c = Cluster::new(tag, n);
    let mut total = Verdict::default();
    for &seed in seeds {
        let v = c.sequence(seed);
        println!("  seed {seed}: {}", v.summary());
        assert!(
            v.clean() && c.liveness.is_empty(),
            "seed {seed} with {n} masters broke the quorum rule: {}",
            c.report(&v)
        );
        total.merge(v);
    }
    (total, c.liveness.clone(), started.elapsed())
}

#[test]
fn chaos_three_masters() {
    let (v, _, took) = run_seeds("c3", 3, &[1, 2]);
    println!("3 masters: {} ({took:?})", v.summary());
    assert!(v.samples > 500 && v.adverts > 50, "{}", v.summary());
}

#[test]
fn chaos_five_masters() {
    let (v, _, took) = run_seeds("c5", 5, &[3]);
    println!("5 masters: {} ({took:?})", v.summary());
    assert!(v.samples > 250 && v.adverts > 25, "{}", v.summary());
}

/// The long run: `VRRP_CHAOS_SEEDS` seeds (default 100), odd ones with 3
/// masters, even ones with 5. Writes `bench/results/vrrp-chaos.json`.
#[test]
#[ignore = "long: run by make bench-vrrp-chaos"]
fn chaos_many() {
    let count: u64 = std::env::var("VRRP_CHAOS_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let first: u64 = std::env::var("VRRP_CHAOS_FIRST_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let seeds: Vec<u64> = (first..first + count).collect();
    let odd: Vec<u64> = seeds.iter().copied().filter(|s| s % 2 == 1).collect();
    let even: Vec<u64> = seeds.iter().copied().filter(|s| s % 2 == 0).collect();
    let mut rows = Vec::new();
    for (tag, n, list) in [("m3", 3, odd), ("m5", 5, even)] {
        if list.is_empty() {
            continue;
        }
        let (v, _, took) = run_seeds(tag, n, &list);
        println!(
            "{n} masters, {} seeds: {} ({took:?})",
            list.len(),
            v.summary()
        );
        rows.push(serde_json::json!({
            "masters": n,
            "seeds": list,
            "samples": v.samples,
            "adverts": v.adverts,
            "minority_holder_samples": v.minority_samples.len(),
            "minority_adverts": v.minority_adverts.len(),
            "minority_claims": v.minority_claims.len(),
            "two_holder_samples": v.two_holders.len(),
            "longest_hold_after_quorum_loss_ms": v.longest_minority_hold.as_millis() as u64,
            "wall_seconds": took.as_secs(),
        }));
    }
    let out = serde_json::json!({
        "benchmark": "vrrp_quorum_chaos",
        "lease_ms": bounds().lease.as_millis() as u64,
        "hold_slack_ms": bounds().hold_slack.as_millis() as u64,
        "claim_slack_ms": bounds().claim_slack.as_millis() as u64,
        "steps_per_seed": STEPS,
        "results": rows,
    });
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../bench/results");
    std::fs::create_dir_all(&dir).expect("bench/results");
    let path = dir.join("vrrp-chaos.json");
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&out).unwrap_or_default(),
    )
    .expect("writing vrrp-chaos.json");
    println!("wrote {}", path.display());
}
