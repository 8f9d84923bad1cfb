//! Three agents alone, each beside a real etcd member (Debian's
//! etcd-server, plain HTTP) on which it proves quorum: exactly one holds
//! the VIP at every sample; cutting the holder off from the others (and so
//! from etcd's quorum) makes it drop the VIP within the proof lease while
//! the majority moves it; killing the holder moves it.

mod common;

use std::time::{Duration, Instant};

use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_vrrp-node");
const INTERVAL_CS: u16 = cluster_config::DEFAULT_VRRP_INTERVAL_CS;

fn others(all: &[usize], x: usize) -> Vec<usize> {
    all.iter().copied().filter(|&i| i != x).collect()
}

#[test]
fn three_agents_with_etcd_quorum() {
    require("etcd", "etcd-server");
    let mut lab = Lab::new("q3", 3);
    let all = [0, 1, 2];
    for i in all {
        start_etcd(&mut lab, i, 3);
    }
    let mut agents = Vec::new();
    for (i, priority) in [(0, 120), (1, 110), (2, 100)] {
        let id = start_agent(
            &mut lab,
            BIN,
            i,
            &format!("agent{i}"),
            priority,
            INTERVAL_CS,
            &["--etcd", "http://127.0.0.1:2379"],
        );
        agents.push(id);
    }

    // 1. Exactly one holder, at every sample.
    let first = lab
        .wait_single_holder(&all, Duration::from_secs(40))
        .unwrap_or_else(|| {
            panic!(
                "no single VIP holder after 40 s; logs in {}",
                lab.dir.display()
            )
        });
    std::thread::sleep(Duration::from_secs(1));
    let (n, bad) = lab.sample(&all, None, Duration::from_secs(3));
    assert!(
        bad.is_empty(),
        "{} of {n} samples without exactly one holder: {bad:?}",
        bad.len()
    );
    let holder = lab.holders(&all)[0];
    println!("holder: node {holder} (first seen: {first})");

    // 2. Partition the holder: it loses etcd quorum and must drop the VIP;
    // the majority (which keeps quorum) moves it.
    let t0 = Instant::now();
    lab.cut(holder);
    let rest = others(&all, holder);
    let moved = lab.wait_single_holder(&rest, Duration::from_secs(10));
    assert!(
        moved.is_some(),
        "the majority did not take the VIP after the holder was cut off"
    );
    println!("majority holder after {:?}", t0.elapsed());
    let mut dropped = None;
    while t0.elapsed() < Duration::from_secs(20) {
        if !lab.holds_vip(holder) {
            dropped = Some(t0.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let dropped = dropped.unwrap_or_else(|| {
        panic!("node {holder}, cut off from the quorum, still holds the VIP after 20 s")
    });
    println!("cut-off node dropped the VIP after {dropped:?}");
    // The bound: its last proof was issued before the cut, valid for the
    // lease; 500 ms for the `ip` polling and the machine's resignation.
    let bound = vrrp::config::DEFAULT_PROOF.lease + Duration::from_millis(500);
    assert!(
        dropped <= bound,
        "the cut-off holder kept the VIP {dropped:?}, more than the {bound:?} bound"
    );
    // ...and never claims it again while cut off.
    let (_, bad) = lab.sample(&[holder], Some(usize::MAX), Duration::from_secs(3));
    assert!(
        bad.iter().all(|h| h.is_empty()),
        "the cut-off node claimed the VIP again: {bad:?}"
    );
    let (n, bad) = lab.sample(&rest, None, Duration::from_secs(1));
    assert!(
        bad.is_empty(),
        "majority: {} of {n} samples without exactly one holder: {bad:?}",
        bad.len()
    );

    // 3. Heal: after settling, exactly one holder again.
    lab.heal(holder);
    assert!(lab
        .wait_single_holder(&all, Duration::from_secs(20))
        .is_some());
    std::thread::sleep(Duration::from_secs(6));
    let (n, bad) = lab.sample(&all, None, Duration::from_secs(3));
    assert!(
        bad.is_empty(),
        "after healing: {} of {n} samples without exactly one holder: {bad:?}",
        bad.len()
    );

    // 4. Kill the holder (the node dies: agent killed hard, link gone).
    let victim = lab.holders(&all)[0];
    let t1 = Instant::now();
    lab.stop(agents[victim], "KILL");
    lab.cut(victim);
    let rest = others(&all, victim);
    let moved = lab.wait_single_holder(&rest, Duration::from_secs(5));
    assert!(
        moved.is_some(),
        "the VIP did not move after its holder died"
    );
    println!("killed node {victim}: VIP moved after {:?}", t1.elapsed());
    let (n, bad) = lab.sample(&rest, None, Duration::from_secs(3));
    assert!(
        bad.is_empty(),
        "after the kill: {} of {n} samples without exactly one holder: {bad:?}",
        bad.len()
    );
}
