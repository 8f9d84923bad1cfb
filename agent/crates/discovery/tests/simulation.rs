//! A discrete-event simulation (virtual time, no sockets) of discovery
//! traffic in a cluster of 3 masters and up to 4,997 workers, driven by the
//! crate's real rate policy, peer table and reply limiter. It checks the
//! per-node message rates the README documents.
//!
//! Scenario: masters boot within the first 10 s and assemble (fast rate)
//! until t = 30 s, then are steady; workers boot uniformly over the first
//! 120 s (a mass power-on) and announce at the worker rate. Multicast is
//! modelled as the README describes: masters' announcements reach every
//! booted node, workers' announcements reach only the masters, replies
//! reach one node.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::Ipv4Addr;

use cluster_config::Role;
use discovery::rate::{jittered, replies_to_new_peers, ReplyLimiter, REPLY_BUDGET_PER_S};
use discovery::{announce_interval, Announcement, NodeId, Observed, PeerTable, Phase};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const BASE_MS: u64 = 1000;
const MASTERS: usize = 3;
const MASTER_STEADY_AT_MS: u64 = 30_000;
const WORKER_BOOT_SPREAD_MS: u64 = 120_000;
const DURATION_MS: u64 = 600_000;
const WINDOW_MS: u64 = 10_000;
const WINDOWS: usize = (DURATION_MS / WINDOW_MS) as usize;

struct Node {
    ann: Announcement,
    boot_ms: u64,
    table: PeerTable,
    limiter: ReplyLimiter,
    /// Messages received / sent per 10 s window.
    rx: Vec<u32>,
    tx: Vec<u32>,
    /// When this node first heard each master (workers only).
    heard_master_ms: [Option<u64>; MASTERS],
}

struct Report {
    /// Worst 10 s window, msg/s.
    master_rx_peak: f64,
    master_tx_peak: f64,
    worker_rx_peak: f64,
    worker_tx_peak: f64,
    /// Mean over the last 5 minutes (steady state), msg/s.
    master_rx_steady: f64,
    worker_rx_steady: f64,
    /// Time for a worker to hear all masters after both are up, ms:
    /// 99th percentile and slowest.
    worker_all_masters_p99_ms: u64,
    worker_all_masters_max_ms: u64,
    /// Smallest number of peers any master knows at the end.
    min_master_peers: usize,
}

fn phase_at(role: Role, now: u64) -> Phase {
    match role {
        Role::Master if now < MASTER_STEADY_AT_MS => Phase::Discovering,
        _ => Phase::Ready,
    }
}

fn window(now: u64) -> usize {
    ((now / WINDOW_MS) as usize).min(WINDOWS - 1)
}

fn simulate(workers: usize, seed: u64) -> Report {
    let mut rng = StdRng::seed_from_u64(seed);
    let n = MASTERS + workers;
    let mut nodes: Vec<Node> = (0..n)
        .map(|i| {
            let role = if i < MASTERS {
                Role::Master
            } else {
                Role::Worker
            };
            let mut id = [0u8; 16];
            id[..8].copy_from_slice(&(i as u64).to_be_bytes());
            let boot_ms = match role {
                Role::Master => rng.gen_range(0..10_000),
                Role::Worker => rng.gen_range(0..WORKER_BOOT_SPREAD_MS),
            };
            Node {
                ann: Announcement {
                    node_id: NodeId(id),
                    role,
                    name: format!("node-{i}"),
                    addresses: vec![Ipv4Addr::from(0x0a00_0000 + i as u32)],
                    phase: Phase::Discovering,
                    etcd: None,
                    proposal: vec![],
                    kube: None,
                    kube_join: None,
                    epoch: None,
                    restore: None,
                },
                boot_ms,
                table: PeerTable::new(BASE_MS),
                limiter: ReplyLimiter::new(REPLY_BUDGET_PER_S, boot_ms),
                rx: vec![0; WINDOWS],
                tx: vec![0; WINDOWS],
                heard_master_ms: [None; MASTERS],
            }
        })
        .collect();

    // (time, node): the node's next periodic announcement. The first one
    // comes at most base/4 after boot, as in the runner.
    let mut events: BinaryHeap<Reverse<(u64, usize)>> = nodes
        .iter()
        .enumerate()
        .map(|(i, node)| Reverse((node.boot_ms + rng.gen_range(0..BASE_MS / 4), i)))
        .collect();
    let mut next_expiry = BASE_MS;

    while let Some(Reverse((now, sender))) = events.pop() {
        if now >= DURATION_MS {
            break;
        }
        while next_expiry <= now {
            for node in nodes.iter_mut().take(MASTERS) {
                node.table.expire(next_expiry);
            }
            next_expiry += BASE_MS;
        }
        let role = nodes[sender].ann.role;
        let phase = phase_at(role, now);
        nodes[sender].ann.phase = phase;
        let ann = nodes[sender].ann.clone();
        nodes[sender].tx[window(now)] += 1;
        match role {
            Role::Master => {
                // To group G: every booted node but the sender hears it.
                for (i, node) in nodes.iter_mut().enumerate() {
                    if i == sender || node.boot_ms > now {
                        continue;
                    }
                    node.rx[window(now)] += 1;
                    if node.ann.role == Role::Master {
                        node.table.observe(ann.clone(), now);
                    } else {
                        node.heard_master_ms[sender].get_or_insert(now);
                    }
                }
            }
            Role::Worker => {
                // To group G': only the masters hear it; a master answers a
                // node it did not know, within its reply budget.
                for m in 0..MASTERS {
                    if nodes[m].boot_ms > now {
                        continue;
                    }
                    nodes[m].rx[window(now)] += 1;
                    let observed = nodes[m].table.observe(ann.clone(), now);
                    if observed == Observed::New
                        && replies_to_new_peers(Role::Master)
                        && nodes[m].limiter.try_take(now)
                    {
                        nodes[m].tx[window(now)] += 1;
                        nodes[sender].rx[window(now)] += 1;
                        nodes[sender].heard_master_ms[m].get_or_insert(now);
                    }
                }
            }
        }
        let delay = jittered(announce_interval(role, phase, BASE_MS), rng.gen::<f64>());
        events.push(Reverse((now + delay.as_millis() as u64, sender)));
    }

    let per_s = |count: u32| f64::from(count) / (WINDOW_MS as f64 / 1000.0);
    let peak = |range: std::ops::Range<usize>, f: &dyn Fn(&Node) -> &Vec<u32>| {
        nodes[range]
            .iter()
            .flat_map(|node| f(node).iter().copied())
            .map(per_s)
            .fold(0.0, f64::max)
    };
    let steady_from = WINDOWS / 2;
    let steady = |range: std::ops::Range<usize>| {
        let nodes = &nodes[range];
        let total: u64 = nodes
            .iter()
            .map(|node| {
                node.rx[steady_from..]
                    .iter()
                    .map(|&c| u64::from(c))
                    .sum::<u64>()
            })
            .sum();
        total as f64
            / nodes.len() as f64
            / ((WINDOWS - steady_from) as f64 * WINDOW_MS as f64 / 1000.0)
    };
    let mut heard_all: Vec<u64> = nodes[MASTERS..]
        .iter()
        .map(|node| {
            let last = node
                .heard_master_ms
                .iter()
                .map(|t| t.unwrap_or(u64::MAX))
                .max()
                .unwrap_or(u64::MAX);
            // Masters that booted after the worker count from their boot.
            let start = nodes[..MASTERS]
                .iter()
                .map(|m| m.boot_ms)
                .max()
                .unwrap_or(0)
                .max(node.boot_ms);
            last.saturating_sub(start)
        })
        .collect();
    heard_all.sort_unstable();
    let worker_all_masters_p99_ms = heard_all[heard_all.len() * 99 / 100];
    let worker_all_masters_max_ms = heard_all.last().copied().unwrap_or(0);
    Report {
        master_rx_peak: peak(0..MASTERS, &|node| &node.rx),
        master_tx_peak: peak(0..MASTERS, &|node| &node.tx),
        worker_rx_peak: peak(MASTERS..n, &|node| &node.rx),
        worker_tx_peak: peak(MASTERS..n, &|node| &node.tx),
        master_rx_steady: steady(0..MASTERS),
        worker_rx_steady: steady(MASTERS..n),
        worker_all_masters_p99_ms,
        worker_all_masters_max_ms,
        min_master_peers: nodes[..MASTERS]
            .iter()
            .map(|m| m.table.len())
            .min()
            .unwrap_or(0),
    }
}

fn print(workers: usize, r: &Report) {
    println!(
        "N={:>5} (3 masters, {workers:>4} workers): master rx peak {:6.1}/s steady {:6.1}/s, tx peak {:5.1}/s | \
         worker rx peak {:4.1}/s steady {:4.2}/s, tx peak {:4.2}/s | worker hears all masters: p99 {} ms, max {} ms",
        workers + MASTERS,
        r.master_rx_peak,
        r.master_rx_steady,
        r.master_tx_peak,
        r.worker_rx_peak,
        r.worker_rx_steady,
        r.worker_tx_peak,
        r.worker_all_masters_p99_ms,
        r.worker_all_masters_max_ms,
    );
}

#[test]
fn five_thousand_nodes_stay_within_rate_bounds() {
    let r = simulate(5_000 - MASTERS, 7);
    print(5_000 - MASTERS, &r);
    // Masters: under 100 msg/s received and sent in every 10 s window,
    // including the mass boot.
    assert!(
        r.master_rx_peak < 100.0,
        "master receives {:.1} msg/s",
        r.master_rx_peak
    );
    assert!(
        r.master_tx_peak < 100.0,
        "master sends {:.1} msg/s",
        r.master_tx_peak
    );
    // Steady: (M-1)/5 + W/90 = 0.4 + 55.5 (±10 % for jitter and randomness).
    let expected = 2.0 / 5.0 + (5_000 - MASTERS) as f64 / 90.0;
    assert!(
        (r.master_rx_steady - expected).abs() < expected * 0.1,
        "{:.1} vs {expected:.1}",
        r.master_rx_steady
    );
    // Workers: a handful per second at most (3 assembling masters at 1/s
    // plus their replies), 0.6/s steady; they send 1/90 s.
    assert!(
        r.worker_rx_peak <= 4.0,
        "worker receives {:.1} msg/s",
        r.worker_rx_peak
    );
    assert!(
        (r.worker_rx_steady - 0.6).abs() < 0.06,
        "worker steady {:.2}",
        r.worker_rx_steady
    );
    assert!(
        r.worker_tx_peak <= 0.3,
        "worker sends {:.2} msg/s",
        r.worker_tx_peak
    );
    // Assembly stays fast: 99 % of workers hear every master within 1 s of
    // both being up (a master's reply); when a mass boot exhausts the reply
    // budget, the master's next steady announcement (at most 6.25 s) comes
    // instead. Every master knows every other node at the end.
    assert!(
        r.worker_all_masters_p99_ms <= 1_000,
        "p99 {} ms",
        r.worker_all_masters_p99_ms
    );
    assert!(
        r.worker_all_masters_max_ms <= 6_250 + BASE_MS,
        "max {} ms",
        r.worker_all_masters_max_ms
    );
    assert_eq!(r.min_master_peers, 5_000 - 1);
}

#[test]
fn worker_rate_does_not_grow_with_cluster_size() {
    let small = simulate(200, 11);
    let large = simulate(5_000 - MASTERS, 11);
    print(200, &small);
    print(5_000 - MASTERS, &large);
    assert!(
        (small.worker_rx_steady - large.worker_rx_steady).abs() < 0.05,
        "worker steady rate {:.3} (N=203) vs {:.3} (N=5000)",
        small.worker_rx_steady,
        large.worker_rx_steady
    );
    // The master's rate grows linearly with the workers (W/90), as documented.
    assert!(large.master_rx_steady > small.master_rx_steady * 10.0);
}
