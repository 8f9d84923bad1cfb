//! Prints the size of typical announcements and the cost of `seal` and
//! `open` on this machine: `cargo run --release -p discovery --example measure`.

use std::net::Ipv4Addr;
use std::time::Instant;

use cluster_config::{ClusterSecret, Role};
use discovery::{open, seal, Announcement, DiscoveryKeys, EtcdInfo, NodeId, Phase, ReplayGuard};

fn main() {
    let secret = match ClusterSecret::new("measure-secret-0123456789abcdef") {
        Ok(s) => s,
        Err(e) => return eprintln!("{e}"),
    };
    let keys = DiscoveryKeys::derive(&secret, "kubeboot");
    let master = Announcement {
        node_id: NodeId::random(),
        role: Role::Master,
        name: "master-0123456789ab".to_owned(),
        addresses: vec![Ipv4Addr::new(10, 77, 0, 11)],
        phase: Phase::Discovering,
        etcd: Some(EtcdInfo {
            cluster_id: u64::MAX,
            member_id: u64::MAX,
        }),
        proposal: (0..3).map(|_| NodeId::random()).collect(),
        kube: Some(discovery::KubeState::Ready),
        kube_join: Some(discovery::KubeJoinInfo {
            api_endpoint: "255.255.255.255:65535".to_owned(),
            ca_pin: format!("sha256:{}", "0".repeat(64)),
        }),
        epoch: Some(discovery::EpochInfo {
            number: u32::MAX,
            by: NodeId::random(),
        }),
        restore: Some("f".repeat(64)),
    };
    let worker = Announcement {
        role: Role::Worker,
        name: "worker-0123456789ab".to_owned(),
        etcd: None,
        proposal: vec![],
        kube: Some(discovery::KubeState::Joining),
        kube_join: None,
        epoch: None,
        restore: None,
        phase: Phase::Ready,
        ..master.clone()
    };
    for (what, ann) in [
        ("master (3-member proposal, etcd info)", &master),
        ("worker", &worker),
    ] {
        println!(
            "{what}: {} bytes on the wire",
            seal(ann, &keys, 0, [0; 16]).len()
        );
    }
    // 100,000 messages from 1,000 senders spread over 25 s of timestamps,
    // as a master hearing many nodes would see them.
    let n = 100_000u64;
    let now = 1_800_000_000_000u64;
    let senders: Vec<Announcement> = (0..1000)
        .map(|_| Announcement {
            node_id: NodeId::random(),
            ..master.clone()
        })
        .collect();
    let t = Instant::now();
    let msgs: Vec<Vec<u8>> = (0..n)
        .map(|i| {
            let ts = now - 25_000 + i / 4;
            seal(
                &senders[(i % 1000) as usize],
                &keys,
                ts,
                u128::from(i).to_be_bytes(),
            )
        })
        .collect();
    let seal_us = t.elapsed().as_secs_f64() * 1e6 / n as f64;
    let mut guard = ReplayGuard::default();
    let t = Instant::now();
    let ok = msgs
        .iter()
        .filter(|m| open(m, &keys, now, &mut guard).is_ok())
        .count();
    let open_us = t.elapsed().as_secs_f64() * 1e6 / n as f64;
    let replayed = msgs
        .iter()
        .take(1000)
        .filter(|m| open(m, &keys, now, &mut guard).is_ok())
        .count();
    println!("seal {seal_us:.2} us, open {open_us:.2} us per message ({ok} of {n} accepted, {replayed} of 1000 replays accepted)");
}
