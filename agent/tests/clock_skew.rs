//! A master whose clock is two hours ahead: its announcements (sealed with
//! the real cluster secret) are refused as "future", so the agent that
//! hears them never counts it; instead of a silent "seen 1 of 3 masters",
//! `agent status` names the peer, its address, the measured offset and the
//! fix, and the journal carries one warning saying the same (rate-limited:
//! one per peer per minute, however many messages are refused).

mod common;

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cluster_config::{ClusterSecret, Role};
use common::{in_netns, runtime, wait_for, Agent, Net, SECRET};
use discovery::{seal, Announcement, DiscoveryKeys, NodeId, Phase};

const CLUSTER: &str = "skewtest";
const AHEAD_MS: u64 = 2 * 3600 * 1000;

#[test]
fn a_peer_two_hours_ahead_is_named_in_status_and_journal() {
    let rt = runtime();
    let mut net = Net::new("k");
    let mut a = Agent::new(&mut net, 1, CLUSTER, SECRET);
    a.start();
    let ns2 = net.add_node(2);

    // The skewed master in node 2's namespace, announcing every 200 ms.
    let stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            in_netns(&ns2, move |rt| {
                rt.block_on(async move {
                    let keys = DiscoveryKeys::derive(
                        &ClusterSecret::new(SECRET).expect("secret"),
                        CLUSTER,
                    );
                    let ann = Announcement {
                        node_id: NodeId([0x5e; 16]),
                        role: Role::Master,
                        name: "master-skewed".into(),
                        addresses: vec![Ipv4Addr::new(10, 77, 0, 2)],
                        phase: Phase::Discovering,
                        etcd: None,
                        proposal: vec![],
                        kube: None,
                        kube_join: None,
                        epoch: None,
                        restore: None,
                    };
                    let sock = tokio::net::UdpSocket::bind("10.77.0.2:0")
                        .await
                        .expect("bind in node 2");
                    let to = (
                        cluster_config::DEFAULT_DISCOVERY_GROUP,
                        cluster_config::DEFAULT_DISCOVERY_PORT,
                    );
                    let mut sent = 0u32;
                    while !stop.load(Ordering::Relaxed) {
                        let now = SystemTime::now()
                            .duration_since(UNIX_EPOCH)
                            .expect("clock")
                            .as_millis() as u64;
                        let msg = seal(&ann, &keys, now + AHEAD_MS, rand::random());
                        sock.send_to(&msg, to).await.expect("send");
                        sent += 1;
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    sent
                })
            })
        })
    };

    let status = wait_for(Duration::from_secs(30), || {
        let s = a.status(&rt)?;
        let skew = s.discovery.clock_skew.first()?;
        (skew.rejected >= 10).then_some(s)
    });
    stop.store(true, Ordering::Relaxed);
    let sent = sender.join().expect("sender thread");
    let s = status
        .unwrap_or_else(|| panic!("no clock-skew report after {sent} messages\n{}", a.logs()));

    let skew = &s.discovery.clock_skew[0];
    assert_eq!(skew.name, "master-skewed");
    assert_eq!(skew.address.as_deref(), Some("10.77.0.2"));
    assert_eq!(skew.id, "5e".repeat(16));
    let ahead = AHEAD_MS as i64;
    assert!(
        (ahead - 5_000..=ahead + 1_000).contains(&skew.offset_ms),
        "offset {} ms",
        skew.offset_ms
    );
    assert!(s.discovery.rejected.get("future").copied().unwrap_or(0) >= 10);
    // Never counted as a master.
    assert!(s.discovery.peers.is_empty(), "{:?}", s.discovery.peers);
    assert!(s.detail.contains("1 of 3"), "{}", s.detail);

    // `agent status` says who, by how much, and the fix.
    let text = agent::status::render(&s);
    assert!(
        text.contains("clock skew: peer master-skewed (10.77.0.2) is 7200.")
            && text.contains("s ahead:")
            && text.contains("synchronise the clocks (NTP)"),
        "{text}"
    );

    // The journal: one warning (rate-limited), at warning level, with the fix.
    let log = std::fs::read_to_string(a.dir.join("agent.1.log")).unwrap_or_default();
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("clock skew: peer master-skewed"))
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    let w = warnings[0];
    assert!(w.contains("WARN"), "{w}");
    assert!(
        w.contains("7200.") && w.contains("ahead of this node's") && w.contains("NTP"),
        "{w}"
    );
}
