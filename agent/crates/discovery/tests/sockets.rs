//! Real sockets on loopback: multicast between sockets (IP_MULTICAST_LOOP),
//! the runner end to end (peers found, wrong secret ignored and counted),
//! the static-peers source, and forged/replayed/stale datagrams on the wire.
//! Every test picks a random group and a free port, so tests may run in
//! parallel with each other and with other crates' tests.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cluster_config::{ClusterSecret, Role};
use discovery::{
    masters_group, seal, Announcement, Destination, Discovery, DiscoveryHandle, DiscoveryKeys,
    DiscoveryOptions, DiscoverySource, EtcdInfo, MulticastOptions, MulticastSource, NodeId, Phase,
    StaticPeersSource,
};
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio::time::{timeout, Instant};

const SECRET: &str = "loopback-test-secret-0123456789";

fn keys(secret: &str) -> DiscoveryKeys {
    DiscoveryKeys::derive(&ClusterSecret::new(secret).unwrap(), "loop")
}

fn ann(id: u8, role: Role) -> Announcement {
    Announcement {
        node_id: NodeId([id; 16]),
        role,
        name: format!("node-{id}"),
        addresses: vec![Ipv4Addr::LOCALHOST],
        phase: Phase::Discovering,
        etcd: None,
        proposal: vec![],
        kube: None,
        kube_join: None,
        epoch: None,
        restore: None,
    }
}

/// A random organisation-local group whose masters' group differs from it.
fn random_group() -> Ipv4Addr {
    let [a, b]: [u8; 2] = rand::random();
    Ipv4Addr::new(239, 255, a, b | 0x02)
}

async fn free_port() -> u16 {
    UdpSocket::bind("0.0.0.0:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn mcast(group: Ipv4Addr, port: u16, role: Role) -> MulticastSource {
    MulticastSource::bind(&MulticastOptions {
        group,
        port,
        interface: Ipv4Addr::LOCALHOST,
        role,
        multicast_loop: true,
    })
    .unwrap()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Waits until `cond` holds on the handle's latest peers, or fails.
async fn wait_for(
    handle: &mut DiscoveryHandle,
    what: &str,
    cond: impl Fn(&discovery::PeerSnapshot) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if cond(&handle.peers.borrow_and_update()) {
            return;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if timeout(left, handle.peers.changed()).await.is_err() {
            panic!(
                "timed out waiting for {what}; peers: {:?}",
                handle.peers.borrow()
            );
        }
    }
}

#[tokio::test]
async fn multicast_reaches_the_right_sockets() {
    let group = random_group();
    let port = free_port().await;
    let master = mcast(group, port, Role::Master);
    let worker = mcast(group, port, Role::Worker);
    let other_worker = mcast(group, port, Role::Worker);
    let mut buf = [0u8; 1500];

    // Master → everyone: both workers hear it.
    master
        .send(b"from-master", Destination::Everyone)
        .await
        .unwrap();
    for w in [&worker, &other_worker] {
        let (n, _) = timeout(Duration::from_secs(5), w.recv(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&buf[..n], b"from-master");
    }
    // Worker → masters' group: the master hears it, the other worker does not.
    worker
        .send(b"from-worker", Destination::Masters)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (n, from) = timeout(deadline - Instant::now(), master.recv(&mut buf))
            .await
            .unwrap()
            .unwrap();
        if &buf[..n] == b"from-worker" {
            assert_eq!(from.ip(), Ipv4Addr::LOCALHOST);
            break;
        }
        // The master's own multicast looped back; keep reading.
        assert_eq!(&buf[..n], b"from-master");
    }
    assert!(
        timeout(Duration::from_millis(300), other_worker.recv(&mut buf))
            .await
            .is_err(),
        "a worker received a worker's announcement (group {})",
        masters_group(group)
    );
}

#[tokio::test]
async fn runners_find_each_other_and_ignore_a_wrong_secret() {
    let group = random_group();
    let port = free_port().await;
    let opts = DiscoveryOptions::new(100);
    let (_a_tx, a_rx) = watch::channel(ann(1, Role::Master));
    let (b_tx, b_rx) = watch::channel(ann(2, Role::Master));
    let (_w_tx, w_rx) = watch::channel(ann(3, Role::Worker));
    let (_rogue_tx, rogue_rx) = watch::channel(ann(66, Role::Master));
    let mut a = Discovery::spawn(
        mcast(group, port, Role::Master),
        keys(SECRET),
        a_rx,
        opts.clone(),
    );
    let _b = Discovery::spawn(
        mcast(group, port, Role::Master),
        keys(SECRET),
        b_rx,
        opts.clone(),
    );
    let mut w = Discovery::spawn(
        mcast(group, port, Role::Worker),
        keys(SECRET),
        w_rx,
        opts.clone(),
    );
    let _rogue = Discovery::spawn(
        mcast(group, port, Role::Master),
        keys("a-different-secret-9876543210"),
        rogue_rx,
        opts.clone(),
    );

    wait_for(&mut a, "master A to see B and the worker", |s| {
        s.peers.len() == 2 && s.masters().count() == 1
    })
    .await;
    wait_for(&mut w, "the worker to see both masters", |s| {
        s.masters().count() == 2
    })
    .await;

    // A phase change reaches the others promptly.
    b_tx.send_modify(|b| {
        b.phase = Phase::EtcdMember;
        b.etcd = Some(EtcdInfo {
            cluster_id: 42,
            member_id: 7,
        });
    });
    wait_for(&mut a, "B's new phase", |s| {
        s.peers
            .iter()
            .any(|p| p.announcement.etcd.map(|e| e.cluster_id) == Some(42))
    })
    .await;

    // The rogue was heard but never accepted; its messages were counted.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let snapshot = a.peers.borrow().clone();
    assert!(snapshot
        .peers
        .iter()
        .all(|p| p.announcement.node_id != NodeId([66; 16])));
    let stats = *a.stats.borrow();
    assert!(stats.rejected.bad_mac > 0, "{stats:?}");
    assert!(
        stats.accepted > 0 && stats.sent > 0 && stats.own > 0,
        "{stats:?}"
    );
    // Masters answered the worker directly when they first saw it.
    assert!(stats.replies >= 1, "{stats:?}");
}

#[tokio::test]
async fn static_peers_worker_learns_master_from_replies() {
    let master_src = StaticPeersSource::bind("127.0.0.1:0".parse().unwrap(), vec![])
        .await
        .unwrap();
    let master_addr = master_src.local_addr().unwrap();
    let worker_src = StaticPeersSource::bind("127.0.0.1:0".parse().unwrap(), vec![master_addr])
        .await
        .unwrap();
    let mut opts = DiscoveryOptions::new(100);
    opts.reply_to_known = true;
    let (_m_tx, m_rx) = watch::channel(ann(1, Role::Master));
    let (_w_tx, w_rx) = watch::channel(ann(2, Role::Worker));
    let mut m = Discovery::spawn(master_src, keys(SECRET), m_rx, opts.clone());
    let mut w = Discovery::spawn(worker_src, keys(SECRET), w_rx, opts);
    wait_for(&mut m, "the master to see the worker", |s| {
        s.peers.len() == 1
    })
    .await;
    wait_for(&mut w, "the worker to see the master", |s| {
        s.masters().count() == 1
    })
    .await;
}

#[tokio::test]
async fn forged_replayed_and_stale_datagrams_are_counted_not_accepted() {
    let src = StaticPeersSource::bind("127.0.0.1:0".parse().unwrap(), vec![])
        .await
        .unwrap();
    let target: SocketAddr = src.local_addr().unwrap();
    let (_tx, rx) = watch::channel(ann(1, Role::Worker));
    let mut handle = Discovery::spawn(src, keys(SECRET), rx, DiscoveryOptions::new(1000));
    let attacker = UdpSocket::bind("127.0.0.1:0").await.unwrap();

    let k = keys(SECRET);
    let good = seal(&ann(9, Role::Master), &k, now_ms(), rand::random());
    let mut forged = good.clone();
    let last = forged.len() - 40;
    forged[last] ^= 1; // inside the body
    let stale = seal(
        &ann(8, Role::Master),
        &k,
        now_ms() - 120_000,
        rand::random(),
    );
    let wrong = seal(
        &ann(7, Role::Master),
        &keys("a-different-secret-9876543210"),
        now_ms(),
        rand::random(),
    );
    for msg in [&good, &good, &forged, &stale, &wrong, &b"garbage".to_vec()] {
        attacker.send_to(msg, target).await.unwrap();
    }

    wait_for(&mut handle, "the genuine peer", |s| s.peers.len() == 1).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stats = *handle.stats.borrow();
        if stats.received >= 6 {
            assert_eq!(stats.accepted, 1, "{stats:?}");
            assert_eq!(stats.rejected.replayed, 1, "{stats:?}");
            assert_eq!(stats.rejected.bad_mac, 2, "{stats:?}");
            assert_eq!(stats.rejected.stale, 1, "{stats:?}");
            assert_eq!(stats.rejected.malformed, 1, "{stats:?}");
            break;
        }
        assert!(Instant::now() < deadline, "only {stats:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let peers = handle.peers.borrow().clone();
    assert_eq!(peers.peers[0].announcement.node_id, NodeId([9; 16]));
    // The stale but genuine message names its sender and the offset.
    let skew = handle.skew.borrow().clone();
    assert_eq!(skew.len(), 1, "{skew:?}");
    assert_eq!(skew[0].node_id, NodeId([8; 16]));
    assert!(
        (-121_000..=-119_000).contains(&skew[0].offset_ms),
        "{skew:?}"
    );
}

#[tokio::test]
async fn a_peer_two_hours_ahead_is_reported_by_name_until_its_clock_is_fixed() {
    let src = StaticPeersSource::bind("127.0.0.1:0".parse().unwrap(), vec![])
        .await
        .unwrap();
    let target: SocketAddr = src.local_addr().unwrap();
    let (_tx, rx) = watch::channel(ann(1, Role::Master));
    let mut handle = Discovery::spawn(src, keys(SECRET), rx, DiscoveryOptions::new(1000));
    let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let k = keys(SECRET);
    const AHEAD: u64 = 2 * 3600 * 1000;
    for _ in 0..3 {
        let msg = seal(&ann(5, Role::Master), &k, now_ms() + AHEAD, rand::random());
        peer.send_to(&msg, target).await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let report = loop {
        let r = handle.skew.borrow().clone();
        if r.first().is_some_and(|p| p.rejected == 3) {
            break r;
        }
        assert!(Instant::now() < deadline, "no skew report: {r:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(report[0].name, "node-5");
    assert_eq!(
        report[0].address,
        Some(std::net::IpAddr::from([127, 0, 0, 1]))
    );
    let off = report[0].offset_ms;
    assert!(
        (AHEAD as i64 - 2_000..=AHEAD as i64).contains(&off),
        "{off}"
    );
    assert_eq!(handle.stats.borrow().rejected.future, 3);
    assert!(
        handle.peers.borrow().peers.is_empty(),
        "a skewed peer is never counted"
    );
    // Its clock fixed: accepted, and gone from the report.
    let msg = seal(&ann(5, Role::Master), &k, now_ms(), rand::random());
    peer.send_to(&msg, target).await.unwrap();
    wait_for(&mut handle, "the fixed peer", |s| s.peers.len() == 1).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !handle.skew.borrow().is_empty() {
        assert!(Instant::now() < deadline, "{:?}", handle.skew.borrow());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
