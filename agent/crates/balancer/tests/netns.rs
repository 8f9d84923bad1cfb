//! The balancer against three real TLS servers (`openssl s_server -WWW`,
//! each serving a `readyz` file and a `name` file) in network namespaces
//! on a veth bridge: the balancer listens on the VIP in its own
//! namespace, clients connect from a fourth. Checks the spread of 3,000
//! connections, a killed backend leaving within the documented bound
//! while connections keep succeeding, its return after `rise` passes,
//! a live backend answering "not ready" that no new connection reaches
//! once it is out, and a backend killed with no traffic (the checks
//! alone) leaving within the bound.
//!
//! The lab (namespaces, bridge, processes, clean-up on drop, also on
//! panic) is the VRRP tests' one. Needs root, `ip` and `openssl`.

#[path = "../../vrrp/tests/common/mod.rs"]
mod common;
mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use balancer::{Balancer, BalancerConfig, CheckSpec, HealthRules};
use common::{require, run, Lab, VIP, VIP_ADDR};
use support::{
    errors, load, per_backend, prepare_backend, runtime_in, start_backend, wait_for, Sample,
};

/// Fast checks so the test takes seconds: out within 1.25 s, back
/// within 1 s.
const RULES: HealthRules = HealthRules {
    interval: Duration::from_millis(250),
    timeout: Duration::from_millis(500),
    fall: 3,
    slow_fall: 5,
    rise: 2,
};

/// Scheduling allowance on top of a bound (the machine is shared with
/// builds); the measured figures are printed.
const SLACK: Duration = Duration::from_millis(750);

const PORT: u16 = 6443;

#[test]
fn spreads_drops_dead_and_not_ready_backends_and_takes_them_back() {
    require("openssl", "openssl");
    let mut lab = Lab::new("bl", 5);
    // Node 0 runs the balancer on the VIP, 1-3 the backends, 4 the clients.
    run(&[
        "ip",
        "-n",
        &lab.nodes[0].ns,
        "addr",
        "add",
        VIP,
        "dev",
        "eth0",
    ]);

    let secret = cluster_config::ClusterSecret::new("balancer-test-secret-0123456789").unwrap();
    let pki = pki::ClusterPki::derive(&secret, "balancer-test").unwrap();
    let ca_pem = pki.kubernetes_ca.cert_pem.clone().into_bytes();
    let mut procs = BTreeMap::new();
    for b in 1..=3 {
        prepare_backend(&lab, &pki, b, &[("name", &format!("b{b}\n"))]);
        procs.insert(b, start_backend(&mut lab, b, PORT));
    }

    let backends: Vec<SocketAddr> = (1..=3)
        .map(|b| SocketAddr::from((lab.nodes[b].addr, PORT)))
        .collect();
    let config = BalancerConfig {
        backends: backends.clone(),
        check: CheckSpec::apiserver_readyz(ca_pem.clone()),
        rules: RULES,
        connect_timeout: Duration::from_millis(500),
    };
    let brt = runtime_in(&lab.nodes[0].ns);
    let listen = SocketAddr::from((VIP_ADDR, PORT));
    let balancer = brt
        .block_on(brt.spawn(Balancer::bind(listen, config)))
        .unwrap()
        .unwrap();
    let crt = runtime_in(&lab.nodes[4].ns);
    let never = Arc::new(AtomicBool::new(false));

    let took = wait_for(
        &balancer,
        "all three in rotation",
        Duration::from_secs(10),
        |s| s.serving() == 3,
    );
    println!("all backends in rotation after {took:?}");

    // 1. Spread: 3,000 connections, 6 at a time.
    let t = Instant::now();
    let samples = crt
        .block_on(crt.spawn(load(ca_pem.clone(), PORT, 3000, 6, never.clone())))
        .unwrap();
    let counts = per_backend(&samples);
    println!("3000 connections in {:?}: {counts:?}", t.elapsed());
    assert!(errors(&samples).is_empty(), "{:?}", errors(&samples));
    for b in 1..=3 {
        let n = counts.get(&format!("b{b}")).copied().unwrap_or(0);
        assert!(
            (900..=1100).contains(&n),
            "b{b} took {n} of 3000: {counts:?}"
        );
    }
    let status = balancer.status();
    println!("{status}");
    let totals: Vec<u64> = status.backends.iter().map(|b| b.total).collect();
    assert_eq!(totals.iter().sum::<u64>(), 3000, "{status}");

    // 2. Kill b1 under load: out of rotation within the bound, every
    // connection that starts after its death succeeds (a refused connect
    // is retried on the next backend).
    let stop = Arc::new(AtomicBool::new(false));
    let bg = crt.spawn(load(ca_pem.clone(), PORT, usize::MAX, 4, stop.clone()));
    std::thread::sleep(Duration::from_millis(500));
    let killed_at = Instant::now();
    lab.stop(procs[&1], "KILL");
    // Dead now (`stop` waited for the exit). Connections started before
    // may have been mid-handshake with b1, or queued in its listen backlog
    // (connected, as far as any L4 balancer can tell): those are lost with
    // it. Every connection started after it must succeed.
    let dead_at = Instant::now();
    wait_for(
        &balancer,
        "killed b1 out",
        RULES.leave_bound() + SLACK,
        |s| !s.backends[0].in_rotation,
    );
    // Seen out now (the status was polled every 10 ms).
    let out_at = Instant::now();
    let out = out_at - killed_at;
    println!(
        "killed b1 out of rotation after {out:?} (bound {:?})",
        RULES.leave_bound()
    );
    std::thread::sleep(RULES.leave_bound());
    stop.store(true, Ordering::Relaxed);
    let samples = crt.block_on(bg).unwrap();
    let after_kill: Vec<&Sample> = samples.iter().filter(|s| s.start > dead_at).collect();
    let failed: Vec<&str> = after_kill
        .iter()
        .filter_map(|s| s.got.as_ref().err().map(String::as_str))
        .collect();
    assert!(
        failed.is_empty(),
        "connections after the kill failed: {failed:?}"
    );
    let reached_b1 = after_kill
        .iter()
        .filter(|s| s.start > out_at && s.got.as_deref() == Ok("b1"))
        .count();
    assert_eq!(reached_b1, 0);
    println!(
        "during the kill: {:?}, {} started after it, all succeeded",
        per_backend(&samples),
        after_kill.len()
    );
    let status = balancer.status();
    println!("{status}");
    assert!(status.backends[0].last_error.is_some(), "{status}");

    // 3. Restart b1: back after `rise` passes, and it takes connections.
    let restarted_at = Instant::now();
    procs.insert(1, start_backend(&mut lab, 1, PORT));
    let back = wait_for(&balancer, "b1 back", RULES.return_bound() + SLACK, |s| {
        s.backends[0].in_rotation
    });
    println!(
        "restarted b1 back in rotation after {back:?} (bound {:?})",
        RULES.return_bound()
    );
    assert!(restarted_at.elapsed() >= RULES.interval, "needs two passes");
    let samples = crt
        .block_on(crt.spawn(load(ca_pem.clone(), PORT, 300, 3, never.clone())))
        .unwrap();
    let counts = per_backend(&samples);
    println!("300 connections after b1's return: {counts:?}");
    assert!(errors(&samples).is_empty(), "{:?}", errors(&samples));
    assert!(counts.get("b1").copied().unwrap_or(0) >= 80, "{counts:?}");

    // 4. b2 alive but not ready: out within the bound, and no connection
    // that starts after that reaches it although it still accepts.
    let stop = Arc::new(AtomicBool::new(false));
    let bg = crt.spawn(load(ca_pem.clone(), PORT, usize::MAX, 4, stop.clone()));
    std::thread::sleep(Duration::from_millis(500));
    let unready_at = Instant::now();
    lab.write("b2/readyz", "[-]etcd failed: not ready\n");
    let out = wait_for(
        &balancer,
        "not-ready b2 out",
        RULES.leave_bound() + SLACK,
        |s| !s.backends[1].in_rotation,
    );
    println!(
        "not-ready b2 out of rotation after {out:?} (bound {:?})",
        RULES.leave_bound()
    );
    let out_at = Instant::now();
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    let samples = crt.block_on(bg).unwrap();
    assert!(errors(&samples).is_empty(), "{:?}", errors(&samples));
    let later: Vec<&Sample> = samples.iter().filter(|s| s.start > out_at).collect();
    let reached_b2 = later
        .iter()
        .filter(|s| s.got.as_deref() == Ok("b2"))
        .count();
    println!(
        "{} connections after b2 left, {reached_b2} reached it: {:?}",
        later.len(),
        per_backend(&samples)
    );
    assert!(later.len() > 50, "too little load to show anything");
    assert_eq!(reached_b2, 0, "a new connection reached the not-ready b2");
    let before: usize = samples
        .iter()
        .filter(|s| s.start < unready_at && s.got.as_deref() == Ok("b2"))
        .count();
    assert!(before > 0, "b2 served before it went not ready");

    lab.write("b2/readyz", "ok\n");
    let back = wait_for(&balancer, "b2 back", RULES.return_bound() + SLACK, |s| {
        s.backends[1].in_rotation
    });
    println!("b2 ready again, back after {back:?}");

    // 5. Kill b3 with no traffic: only the checks can tell, and they do
    // within the bound; then connections go to the other two.
    let killed_at = Instant::now();
    lab.stop(procs[&3], "KILL");
    let out = killed_at.elapsed()
        + wait_for(&balancer, "idle b3 out", RULES.leave_bound() + SLACK, |s| {
            !s.backends[2].in_rotation
        });
    println!(
        "killed b3 (no traffic) out of rotation after {out:?} (bound {:?})",
        RULES.leave_bound()
    );
    assert!(out <= RULES.leave_bound() + SLACK);
    let samples = crt
        .block_on(crt.spawn(load(ca_pem.clone(), PORT, 300, 3, never.clone())))
        .unwrap();
    let counts = per_backend(&samples);
    println!("300 connections without b3: {counts:?}");
    assert!(errors(&samples).is_empty(), "{:?}", errors(&samples));
    assert_eq!(counts.get("b3"), None);
    println!("{}", balancer.status());

    drop(balancer);
    drop(brt);
    drop(crt);
}
