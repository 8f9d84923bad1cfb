//! The host-gw routes through real netlink, in a network namespace this
//! test creates (`ip netns add`) and always removes: a veth interface on
//! 10.77.0.0/24 stands for the cluster network. Needs root and `ip`
//! (Debian package iproute2).

use std::net::Ipv4Addr;
use std::process::Command;

use kubeadm::hostgw::{HostGw, NetlinkRoutes, PodRoute, RouteTable, ROUTE_PROTOCOL};
use kubeadm::kubeapi::NodeInfo;
use kubeadm::paths::Paths;

struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn ip(args: &[&str]) -> String {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running ip ({e}): install the Debian package iproute2"));
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn netns() -> Netns {
    let name = format!("kb-hostgw-{}", std::process::id());
    ip(&["netns", "add", &name]);
    let ns = Netns(name);
    for cmd in [
        "link add d0 type veth peer name d1",
        "link set d1 up",
        "addr add 10.77.0.21/24 dev d0",
        "link set d0 up",
        "link set lo up",
        // Someone else's route: never touched.
        "route add 10.250.0.0/24 via 10.77.0.9",
    ] {
        let mut args = vec!["-n", ns.0.as_str()];
        args.extend(cmd.split(' '));
        ip(&args);
    }
    ns
}

fn route(dst: &str, via: [u8; 4]) -> PodRoute {
    PodRoute {
        dst: dst.parse().unwrap(),
        via: via.into(),
    }
}

fn node(name: &str, cidr: &str, ip: [u8; 4]) -> NodeInfo {
    NodeInfo {
        name: name.into(),
        pod_cidr: Some(cidr.into()),
        internal_ip: Some(ip.into()),
        ready: Some(true),
    }
}

#[test]
fn pod_routes_through_netlink_in_a_namespace() {
    let ns = netns();
    let path = format!("/var/run/netns/{}", ns.0);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_owned();
    let reports = std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap();
        nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let table = NetlinkRoutes::open().unwrap();
            assert_eq!(table.list().await.unwrap(), vec![]);
            // Add, list (only ours), remove.
            table
                .add(route("10.244.1.0/24", [10, 77, 0, 12]))
                .await
                .unwrap();
            assert_eq!(
                table.list().await.unwrap(),
                vec![route("10.244.1.0/24", [10, 77, 0, 12])]
            );
            // Replacing is idempotent.
            table
                .add(route("10.244.1.0/24", [10, 77, 0, 12]))
                .await
                .unwrap();
            // A gateway that is not on-link is refused by the kernel.
            assert!(table
                .add(route("10.244.9.0/24", [10, 99, 0, 1]))
                .await
                .is_err());
            table
                .remove(route("10.244.1.0/24", [10, 77, 0, 12]))
                .await
                .unwrap();
            assert_eq!(table.list().await.unwrap(), vec![]);
            // The reconciler over the real table, as nodes come and go.
            let gw = HostGw::new(Paths::under(&root), table);
            let me = Ipv4Addr::new(10, 77, 0, 21);
            let mut nodes = vec![
                node("worker-1", "10.244.3.0/24", [10, 77, 0, 21]),
                node("master-1", "10.244.0.0/24", [10, 77, 0, 11]),
                node("master-2", "10.244.1.0/24", [10, 77, 0, 12]),
            ];
            let first = gw.reconcile("worker-1", me, &nodes).await;
            nodes.remove(1);
            nodes[1].internal_ip = Some(Ipv4Addr::new(10, 77, 0, 13));
            let second = gw.reconcile("worker-1", me, &nodes).await;
            (first, second)
        })
    })
    .join()
    .expect("the namespace thread panicked");
    let (first, second) = reports;
    assert_eq!(first.error, None);
    assert_eq!(
        first.routes,
        vec![
            "10.244.0.0/24 via 10.77.0.11",
            "10.244.1.0/24 via 10.77.0.12"
        ]
    );
    assert_eq!(second.error, None);
    assert_eq!(second.routes, vec!["10.244.1.0/24 via 10.77.0.13"]);
    // What `ip` sees: exactly our route with our protocol, the foreign one
    // untouched.
    let ours = ip(&[
        "-n",
        &ns.0,
        "route",
        "show",
        "proto",
        &ROUTE_PROTOCOL.to_string(),
    ]);
    assert_eq!(ours.trim(), "10.244.1.0/24 via 10.77.0.13 dev d0");
    let all = ip(&["-n", &ns.0, "route", "show"]);
    assert!(all.contains("10.250.0.0/24 via 10.77.0.9 dev d0"), "{all}");
    assert!(dir
        .path()
        .join("etc/cni/net.d/10-kubeboot-host-gw.conflist")
        .exists());
}
