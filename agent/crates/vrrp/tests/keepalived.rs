//! Interoperability with Debian's real keepalived (`vrrp_version 3`, same
//! virtual router id, `advert_int` equal to our interval) in network
//! namespaces: whoever has the higher priority holds the VIP, the other
//! stays backup; stopping the holder moves the VIP; starting it again
//! preempts back; keepalived's log shows no checksum, TTL or interval
//! complaint about our packets, and we reject none of its packets.

mod common;

use std::time::{Duration, Instant};

use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_vrrp-node");
const INTERVAL_CS: u16 = cluster_config::DEFAULT_VRRP_INTERVAL_CS;
const KA: usize = 0;
const AGENT: usize = 1;
const BOTH: [usize; 2] = [KA, AGENT];

fn advert_int() -> String {
    format!("{}", f64::from(INTERVAL_CS) / 100.0)
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Who {
    Keepalived,
    Agent,
}

fn start(lab: &mut Lab, who: Who, priority: u8, run: &mut usize, unicast: bool) -> usize {
    *run += 1;
    let (ka_addr, agent_addr) = (lab.nodes[KA].addr, lab.nodes[AGENT].addr);
    match who {
        Who::Keepalived => {
            let conf = if unicast {
                keepalived_conf_unicast(51, priority, &advert_int(), ka_addr, agent_addr)
            } else {
                keepalived_conf(3, 51, priority, &advert_int())
            };
            start_keepalived(lab, KA, &format!("keepalived{run}"), &conf)
        }
        Who::Agent => {
            let peer = ka_addr.to_string();
            let extra: &[&str] = if unicast { &["--peer", &peer] } else { &[] };
            start_agent(
                lab,
                BIN,
                AGENT,
                &format!("agent{run}"),
                priority,
                INTERVAL_CS,
                extra,
            )
        }
    }
}

fn node(who: Who) -> usize {
    match who {
        Who::Keepalived => KA,
        Who::Agent => AGENT,
    }
}

fn wait_for(lab: &Lab, expected: usize, timeout: Duration) -> Option<Duration> {
    let t0 = Instant::now();
    while t0.elapsed() < timeout {
        if lab.holders(&BOTH) == [expected] {
            return Some(t0.elapsed());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

/// One round: `high` holds, `low` stays backup; stop `high` → `low` takes
/// over; start `high` again → it preempts back.
fn round(lab: &mut Lab, high: Who, low: Who, run: &mut usize, unicast: bool) {
    let hi = start(lab, high, 150, run, unicast);
    assert!(
        wait_for(lab, node(high), Duration::from_secs(5)).is_some(),
        "{high:?} (priority 150, alone) never took the VIP; logs in {}",
        lab.dir.display()
    );
    let lo = start(lab, low, 100, run, unicast);
    let (n, bad) = lab.sample(&BOTH, Some(node(high)), Duration::from_secs(3));
    assert!(bad.is_empty(), "{high:?} should hold the VIP alone while {low:?} is backup: {} of {n} samples wrong: {bad:?}", bad.len());

    lab.stop(hi, "TERM");
    let took = wait_for(lab, node(low), Duration::from_secs(3));
    assert!(
        took.is_some(),
        "{low:?} did not take over after {high:?} stopped"
    );
    println!(
        "{high:?} stopped -> {low:?} holds after {:?}",
        took.unwrap_or_default()
    );
    let (_, bad) = lab.sample(&BOTH, Some(node(low)), Duration::from_secs(1));
    assert!(bad.is_empty(), "{low:?} should hold alone: {bad:?}");

    let hi = start(lab, high, 150, run, unicast);
    let back = wait_for(lab, node(high), Duration::from_secs(6));
    assert!(back.is_some(), "{high:?} did not preempt back");
    println!(
        "{high:?} restarted -> preempted after {:?}",
        back.unwrap_or_default()
    );
    let (n, bad) = lab.sample(&BOTH, Some(node(high)), Duration::from_secs(2));
    assert!(
        bad.is_empty(),
        "after preemption {high:?} should hold alone: {} of {n} wrong: {bad:?}",
        bad.len()
    );

    lab.stop(lo, "TERM");
    lab.stop(hi, "TERM");
    assert!(
        lab.holders(&BOTH).is_empty(),
        "a graceful stop must remove the VIP"
    );
}

fn interop(tag: &str, unicast: bool) {
    require("keepalived", "keepalived");
    let mut lab = Lab::new(tag, 2);
    let mut run = 0;
    round(&mut lab, Who::Keepalived, Who::Agent, &mut run, unicast);
    round(&mut lab, Who::Agent, Who::Keepalived, &mut run, unicast);
    check_logs(&lab, run);
}

#[test]
fn interoperates_with_keepalived_both_ways() {
    interop("ka", false);
}

/// The same in unicast mode (keepalived's `unicast_peer`, our `--peer`):
/// the checksum's pseudo-header then carries the peer's address.
#[test]
fn interoperates_with_keepalived_unicast() {
    interop("ku", true);
}

fn check_logs(lab: &Lab, run: usize) {
    // keepalived found nothing wrong with our packets.
    let mut saw_ours = false;
    for r in 1..=run {
        let log = lab.log(&format!("keepalived{r}"));
        for line in log.lines() {
            let l = line.to_ascii_lowercase();
            for bad in [
                "checksum", "ttl", "interval", "invalid", "mismatch", "error",
            ] {
                assert!(!l.contains(bad), "keepalived complained ({bad}): {line}");
            }
            if l.contains("10.77.0.3") {
                saw_ours = true;
            }
        }
    }
    assert!(
        saw_ours,
        "keepalived's logs never mention our node: did it see our adverts?"
    );

    // We rejected none of keepalived's packets and heard its adverts.
    let mut received = 0;
    for r in 1..=run {
        let Ok(text) = std::fs::read_to_string(lab.path(&format!("agent{r}.status.json"))) else {
            continue;
        };
        let status: serde_json::Value = serde_json::from_str(&text).expect("status file is JSON");
        assert_eq!(
            status["rejected"],
            serde_json::json!({}),
            "agent{r} rejected packets"
        );
        received += status["adverts_received"].as_u64().unwrap_or(0);
    }
    assert!(
        received > 0,
        "the agent never received keepalived's adverts"
    );
}
