//! The agent's own pod network, for clusters without a CNI image
//! (air-gapped, and the tests here): flannel's host-gw without flannel.
//!
//! - This node's pods: a CNI configuration in `/etc/cni/net.d` for the
//!   `bridge` plugin (bridge `kubeboot0`, the pods' default gateway) with
//!   `host-local` addresses from this node's pod CIDR — `spec.podCIDR` of
//!   its Node object, which the controller manager allocates from
//!   kubeadm's `networking.podSubnet` (`--allocate-node-cidrs`, set by
//!   kubeadm whenever `podSubnet` is). The plugins come with the image
//!   (`/opt/cni/bin`); no container image is needed.
//! - Other nodes' pods: one route per other node, its pod CIDR via its
//!   `InternalIP`, in the main table with the agent's own route protocol
//!   number ([`ROUTE_PROTOCOL`]), so the agent finds (and removes) exactly
//!   the routes it made. The nodes must share an L2 segment (as with
//!   flannel's host-gw): the kernel refuses a gateway that is not on-link.
//! - Reconciled from the Node list on every ready reconcile: a node that
//!   joins gets its route, one that is deleted loses it, a changed
//!   address or CIDR is replaced.
//!
//! No masquerading: pod-to-pod and pod-to-node traffic keeps its
//! addresses (every node routes every pod CIDR); traffic from pods to
//! addresses outside the cluster is not NATed (add a rule, or use the
//! manifest CNI, where that matters). No `portmap`: `hostPort` is not
//! supported in this mode.
//!
//! [`plan`] and [`conflist`] are pure; [`HostGw`] carries them out
//! through a [`RouteTable`] ([`NetlinkRoutes`] on a node).

use std::future::Future;
use std::net::Ipv4Addr;

use cluster_config::CniMode;
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::kubeapi::NodeInfo;
use crate::paths::Paths;

/// The CNI configuration the agent writes (root-relative).
pub const CONFLIST: &str = "etc/cni/net.d/10-kubeboot-host-gw.conflist";
/// The bridge the pods of this node hang off.
pub const BRIDGE: &str = "kubeboot0";
/// The route protocol number of the agent's pod routes (`ip route show
/// proto 201`); unassigned in iproute2's `rt_protos`.
pub const ROUTE_PROTOCOL: u8 = 201;

/// Which pod network the cluster gets. Pure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EffectiveCni {
    /// The image's manifest, applied by the init node.
    Manifest(String),
    /// The agent's host-gw network.
    HostGw,
    /// None from kubeboot.
    Off,
}

/// Resolves `[kubernetes] cni` against the image's record: `auto` is the
/// manifest when the image carries one, else host-gw. Pure.
pub fn effective_cni(mode: CniMode, image_manifest: Option<&str>) -> EffectiveCni {
    match (mode, image_manifest) {
        (CniMode::Auto, Some(m)) => EffectiveCni::Manifest(m.to_owned()),
        (CniMode::Auto, None) | (CniMode::HostGw, _) => EffectiveCni::HostGw,
        (CniMode::Off, _) => EffectiveCni::Off,
    }
}

/// A route to another node's pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PodRoute {
    /// Its pod CIDR.
    pub dst: Ipv4Net,
    /// Its address.
    pub via: Ipv4Addr,
}

impl std::fmt::Display for PodRoute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} via {}", self.dst, self.via)
    }
}

/// What the Node list asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// This node's pod CIDR (`None` until the controller manager assigned
    /// one, or while this node's Node is not listed).
    pub own_cidr: Option<Ipv4Net>,
    /// The routes to every other node's pods, sorted.
    pub routes: Vec<PodRoute>,
    /// Nodes left out, and why (no CIDR yet, no address, overlap).
    pub skipped: Vec<String>,
}

/// Plans this node's (`own_name`, `own_ip`) pod network from the Node
/// list. Pure.
pub fn plan(own_name: &str, own_ip: Ipv4Addr, nodes: &[NodeInfo]) -> Plan {
    let mut skipped = Vec::new();
    let mut own_cidr = None;
    for n in nodes.iter().filter(|n| n.name == own_name) {
        match n.pod_cidr.as_deref().map(str::parse::<Ipv4Net>) {
            Some(Ok(c)) => own_cidr = Some(c.trunc()),
            Some(Err(_)) => {
                skipped.push(format!("{}: pod CIDR {:?} is not IPv4", n.name, n.pod_cidr))
            }
            None => skipped.push(format!("{}: no pod CIDR yet", n.name)),
        }
    }
    let mut routes: Vec<PodRoute> = Vec::new();
    for n in nodes.iter().filter(|n| n.name != own_name) {
        let cidr = match n.pod_cidr.as_deref().map(str::parse::<Ipv4Net>) {
            Some(Ok(c)) => c.trunc(),
            Some(Err(_)) => {
                skipped.push(format!("{}: pod CIDR {:?} is not IPv4", n.name, n.pod_cidr));
                continue;
            }
            None => {
                skipped.push(format!("{}: no pod CIDR yet", n.name));
                continue;
            }
        };
        let Some(via) = n.internal_ip else {
            skipped.push(format!("{}: no InternalIP", n.name));
            continue;
        };
        if via == own_ip {
            skipped.push(format!("{}: has this node's address {via}", n.name));
            continue;
        }
        let overlaps = |c: &Ipv4Net| c.contains(&cidr.network()) || cidr.contains(&c.network());
        if own_cidr.as_ref().is_some_and(overlaps) || routes.iter().any(|r| overlaps(&r.dst)) {
            skipped.push(format!(
                "{}: pod CIDR {cidr} overlaps another node's",
                n.name
            ));
            continue;
        }
        routes.push(PodRoute { dst: cidr, via });
    }
    routes.sort();
    Plan {
        own_cidr,
        routes,
        skipped,
    }
}

/// The CNI configuration for this node's pod CIDR. Pure.
pub fn conflist(own_cidr: Ipv4Net) -> String {
    let doc = serde_json::json!({
        "cniVersion": "0.4.0",
        "name": "kubeboot-host-gw",
        "plugins": [{
            "type": "bridge",
            "bridge": BRIDGE,
            "isGateway": true,
            "isDefaultGateway": true,
            "ipMasq": false,
            "hairpinMode": true,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": own_cidr.trunc().to_string()}]]
            }
        }]
    });
    // A json! value always serialises.
    let text = serde_json::to_string_pretty(&doc).unwrap_or_default();
    format!("{text}\n")
}

/// What to change in the route table. Pure.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RouteChanges {
    /// Routes to remove (gone or changed).
    pub remove: Vec<PodRoute>,
    /// Routes to add (new or changed).
    pub add: Vec<PodRoute>,
}

/// The changes from the agent's `current` routes to `want`. Pure.
pub fn changes(current: &[PodRoute], want: &[PodRoute]) -> RouteChanges {
    let mut c = RouteChanges {
        remove: current
            .iter()
            .filter(|r| !want.contains(r))
            .copied()
            .collect(),
        add: want
            .iter()
            .filter(|r| !current.contains(r))
            .copied()
            .collect(),
    };
    c.remove.sort();
    c.remove.dedup();
    c.add.sort();
    c
}

/// The route table, as far as the agent's pod routes go.
pub trait RouteTable: Send + Sync {
    /// The routes with [`ROUTE_PROTOCOL`] in the main table.
    fn list(&self) -> impl Future<Output = Result<Vec<PodRoute>, String>> + Send;
    /// Adds (or replaces) one.
    fn add(&self, r: PodRoute) -> impl Future<Output = Result<(), String>> + Send;
    /// Removes one.
    fn remove(&self, r: PodRoute) -> impl Future<Output = Result<(), String>> + Send;
}

/// The host-gw state as `agent status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct HostGwReport {
    /// This node's pod CIDR (`null` until assigned).
    pub pod_cidr: Option<String>,
    /// The routes in place (`<cidr> via <ip>`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<String>,
    /// Nodes left out, and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<String>,
    /// The last error (listing Nodes, a route, the configuration file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Carries out [`plan`]: the CNI configuration file and the routes.
#[derive(Debug)]
pub struct HostGw<T: RouteTable> {
    paths: Paths,
    table: T,
}

impl<T: RouteTable> HostGw<T> {
    /// Over `paths` (the CNI directory) and `table`.
    pub fn new(paths: Paths, table: T) -> Self {
        Self { paths, table }
    }

    /// One reconcile from the current Node list. Never fails: problems
    /// are in the report (and the next call tries again).
    pub async fn reconcile(
        &self,
        own_name: &str,
        own_ip: Ipv4Addr,
        nodes: &[NodeInfo],
    ) -> HostGwReport {
        let p = plan(own_name, own_ip, nodes);
        let mut report = HostGwReport {
            pod_cidr: p.own_cidr.map(|c| c.to_string()),
            skipped: p.skipped.clone(),
            ..HostGwReport::default()
        };
        let mut errors = Vec::new();
        if let Some(cidr) = p.own_cidr {
            if let Err(e) = self.write_conflist(cidr) {
                errors.push(e);
            }
        }
        match self.table.list().await {
            Err(e) => errors.push(format!("listing the pod routes: {e}")),
            Ok(current) => {
                let c = changes(&current, &p.routes);
                let mut now: Vec<PodRoute> = current.clone();
                for r in c.remove {
                    match self.table.remove(r).await {
                        Ok(()) => {
                            tracing::info!("host-gw: removed the route {r}");
                            now.retain(|x| *x != r);
                        }
                        Err(e) => errors.push(format!("removing the route {r}: {e}")),
                    }
                }
                for r in c.add {
                    match self.table.add(r).await {
                        Ok(()) => {
                            tracing::info!("host-gw: added the route {r}");
                            now.push(r);
                        }
                        Err(e) => errors.push(format!("adding the route {r}: {e}")),
                    }
                }
                now.sort();
                now.dedup();
                report.routes = now.iter().map(|r| r.to_string()).collect();
            }
        }
        if !errors.is_empty() {
            report.error = Some(errors.join("; "));
        }
        report
    }

    fn write_conflist(&self, cidr: Ipv4Net) -> Result<(), String> {
        let path = self.paths.host(CONFLIST);
        let text = conflist(cidr);
        if std::fs::read_to_string(&path).is_ok_and(|t| t == text) {
            return Ok(());
        }
        let shown = path.display().to_string();
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        }
        atomic_file::write(&path, text.as_bytes(), atomic_file::PUBLIC)
            .map_err(|e| format!("writing {shown}: {e}"))?;
        tracing::info!("host-gw: wrote {shown} for the pod CIDR {cidr}");
        Ok(())
    }
}

/// Removes the agent's CNI configuration (after `kubeadm reset`: the node
/// may get another pod CIDR when it registers again). Absent is fine.
pub fn remove_conflist(paths: &Paths) -> std::io::Result<()> {
    match std::fs::remove_file(paths.host(CONFLIST)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// The node's main route table over rtnetlink.
#[derive(Debug)]
pub struct NetlinkRoutes {
    handle: rtnetlink::Handle,
    conn: tokio::task::JoinHandle<()>,
}

impl Drop for NetlinkRoutes {
    fn drop(&mut self) {
        self.conn.abort();
    }
}

impl NetlinkRoutes {
    /// Opens a netlink connection (its driver runs on the current tokio
    /// runtime).
    pub fn open() -> Result<Self, String> {
        let (conn, handle, _) =
            rtnetlink::new_connection().map_err(|e| format!("opening a netlink socket: {e}"))?;
        Ok(Self {
            handle,
            conn: tokio::spawn(conn),
        })
    }

    fn message(r: PodRoute) -> rtnetlink::packet_route::route::RouteMessage {
        rtnetlink::RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(r.dst.network(), r.dst.prefix_len())
            .gateway(r.via)
            .protocol(rtnetlink::packet_route::route::RouteProtocol::Other(
                ROUTE_PROTOCOL,
            ))
            .build()
    }
}

impl RouteTable for NetlinkRoutes {
    async fn list(&self) -> Result<Vec<PodRoute>, String> {
        use futures_util::TryStreamExt as _;
        use rtnetlink::packet_route::route::{
            RouteAddress, RouteAttribute, RouteHeader, RouteProtocol,
        };
        let query = rtnetlink::RouteMessageBuilder::<Ipv4Addr>::new().build();
        let mut stream = self.handle.route().get(query).execute();
        let mut out = Vec::new();
        while let Some(m) = stream.try_next().await.map_err(|e| e.to_string())? {
            if m.header.protocol != RouteProtocol::Other(ROUTE_PROTOCOL) {
                continue;
            }
            let table = m
                .attributes
                .iter()
                .find_map(|a| match a {
                    RouteAttribute::Table(t) => Some(*t),
                    _ => None,
                })
                .unwrap_or(u32::from(m.header.table));
            if table != u32::from(RouteHeader::RT_TABLE_MAIN) {
                continue;
            }
            let dst = m.attributes.iter().find_map(|a| match a {
                RouteAttribute::Destination(RouteAddress::Inet(ip)) => Some(*ip),
                _ => None,
            });
            let via = m.attributes.iter().find_map(|a| match a {
                RouteAttribute::Gateway(RouteAddress::Inet(ip)) => Some(*ip),
                _ => None,
            });
            if let (Some(dst), Some(via)) = (dst, via) {
                if let Ok(net) = Ipv4Net::new(dst, m.header.destination_prefix_length) {
                    out.push(PodRoute { dst: net, via });
                }
            }
        }
        out.sort();
        Ok(out)
    }

    async fn add(&self, r: PodRoute) -> Result<(), String> {
        self.handle
            .route()
            .add(Self::message(r))
            .replace()
            .execute()
            .await
            .map_err(|e| e.to_string())
    }

    async fn remove(&self, r: PodRoute) -> Result<(), String> {
        self.handle
            .route()
            .del(Self::message(r))
            .execute()
            .await
            .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    fn n(name: &str, cidr: Option<&str>, ip: Option<[u8; 4]>) -> NodeInfo {
        NodeInfo {
            name: name.into(),
            pod_cidr: cidr.map(str::to_owned),
            internal_ip: ip.map(Ipv4Addr::from),
            ready: None,
        }
    }

    fn route(dst: &str, via: [u8; 4]) -> PodRoute {
        PodRoute {
            dst: dst.parse().unwrap(),
            via: via.into(),
        }
    }

    const ME: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 21);

    #[test]
    fn the_cni_follows_the_setting_and_the_image() {
        let path = "/usr/lib/kubeboot/cni/flannel.yaml";
        let m = Some(path);
        assert_eq!(
            effective_cni(CniMode::Auto, m),
            EffectiveCni::Manifest(path.into())
        );
        assert_eq!(effective_cni(CniMode::Auto, None), EffectiveCni::HostGw);
        assert_eq!(effective_cni(CniMode::HostGw, m), EffectiveCni::HostGw);
        assert_eq!(effective_cni(CniMode::HostGw, None), EffectiveCni::HostGw);
        assert_eq!(effective_cni(CniMode::Off, m), EffectiveCni::Off);
        assert_eq!(effective_cni(CniMode::Off, None), EffectiveCni::Off);
    }

    #[test]
    fn plan_table() {
        let nodes = [
            n("worker-1", Some("10.244.3.0/24"), Some([10, 77, 0, 21])),
            n("master-1", Some("10.244.0.0/24"), Some([10, 77, 0, 11])),
            n("master-2", Some("10.244.1.0/24"), Some([10, 77, 0, 12])),
            n("master-3", None, Some([10, 77, 0, 13])),
            n("master-4", Some("10.244.4.0/24"), None),
            n("evil", Some("10.244.3.128/25"), Some([10, 77, 0, 99])),
            n("dup", Some("10.244.1.0/24"), Some([10, 77, 0, 98])),
            n("v6", Some("fd00::/64"), Some([10, 77, 0, 97])),
            n("samehost", Some("10.244.9.0/24"), Some([10, 77, 0, 21])),
        ];
        let p = plan("worker-1", ME, &nodes);
        assert_eq!(p.own_cidr, Some("10.244.3.0/24".parse().unwrap()));
        assert_eq!(
            p.routes,
            vec![
                route("10.244.0.0/24", [10, 77, 0, 11]),
                route("10.244.1.0/24", [10, 77, 0, 12])
            ]
        );
        let skipped = p.skipped.join("\n");
        for want in [
            "master-3: no pod CIDR yet",
            "master-4: no InternalIP",
            "evil: pod CIDR 10.244.3.128/25 overlaps",
            "dup: pod CIDR 10.244.1.0/24 overlaps",
            "v6: pod CIDR",
            "samehost: has this node's address",
        ] {
            assert!(skipped.contains(want), "{want} not in {skipped}");
        }
        // Before this node's CIDR is assigned: routes to the others, no
        // configuration file yet.
        let p = plan("master-3", Ipv4Addr::new(10, 77, 0, 13), &nodes[..3]);
        assert_eq!(p.own_cidr, None);
        assert_eq!(p.routes.len(), 3);
        // Not listed at all (before registration).
        let p = plan("nobody", ME, &[]);
        assert_eq!((p.own_cidr, p.routes.len(), p.skipped.len()), (None, 0, 0));
    }

    #[test]
    fn conflist_names_the_plugins_and_the_cidr() {
        let text = conflist("10.244.3.0/24".parse().unwrap());
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["cniVersion"], "0.4.0");
        let bridge = &v["plugins"][0];
        assert_eq!(bridge["type"], "bridge");
        assert_eq!(bridge["bridge"], BRIDGE);
        assert_eq!(bridge["isDefaultGateway"], true);
        assert_eq!(bridge["ipMasq"], false);
        assert_eq!(bridge["ipam"]["type"], "host-local");
        assert_eq!(bridge["ipam"]["ranges"][0][0]["subnet"], "10.244.3.0/24");
        assert_eq!(v["plugins"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn changes_remove_the_stale_and_add_the_missing() {
        let a = route("10.244.0.0/24", [10, 77, 0, 11]);
        let b = route("10.244.1.0/24", [10, 77, 0, 12]);
        let b_moved = route("10.244.1.0/24", [10, 77, 0, 14]);
        let c = route("10.244.2.0/24", [10, 77, 0, 13]);
        assert_eq!(changes(&[a, b], &[a, b]), RouteChanges::default());
        assert_eq!(
            changes(&[a, b], &[a, b_moved, c]),
            RouteChanges {
                remove: vec![b],
                add: vec![b_moved, c]
            }
        );
        assert_eq!(
            changes(&[a, b, c], &[]),
            RouteChanges {
                remove: vec![a, b, c],
                add: vec![]
            }
        );
    }

    #[derive(Clone, Default)]
    struct FakeTable {
        routes: Arc<Mutex<Vec<PodRoute>>>,
        refuse: Option<PodRoute>,
    }

    impl RouteTable for FakeTable {
        async fn list(&self) -> Result<Vec<PodRoute>, String> {
            Ok(self.routes.lock().unwrap().clone())
        }
        async fn add(&self, r: PodRoute) -> Result<(), String> {
            if Some(r) == self.refuse {
                return Err("Network is unreachable".into());
            }
            self.routes.lock().unwrap().push(r);
            Ok(())
        }
        async fn remove(&self, r: PodRoute) -> Result<(), String> {
            self.routes.lock().unwrap().retain(|x| *x != r);
            Ok(())
        }
    }

    #[tokio::test]
    async fn reconcile_writes_the_file_and_follows_the_nodes() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::under(dir.path());
        let table = FakeTable::default();
        let gw = HostGw::new(paths.clone(), table.clone());
        let file = dir.path().join(CONFLIST);
        // Registered, no CIDR yet: nothing written, nothing routed.
        let r = gw
            .reconcile(
                "worker-1",
                ME,
                &[n("worker-1", None, Some([10, 77, 0, 21]))],
            )
            .await;
        assert_eq!(r.pod_cidr, None);
        assert!(!file.exists());
        let mut nodes = vec![
            n("worker-1", Some("10.244.3.0/24"), Some([10, 77, 0, 21])),
            n("master-1", Some("10.244.0.0/24"), Some([10, 77, 0, 11])),
        ];
        let r = gw.reconcile("worker-1", ME, &nodes).await;
        assert_eq!(r.pod_cidr.as_deref(), Some("10.244.3.0/24"));
        assert_eq!(r.routes, vec!["10.244.0.0/24 via 10.77.0.11"]);
        assert_eq!(r.error, None);
        assert_eq!(
            std::fs::read_to_string(&file).unwrap(),
            conflist("10.244.3.0/24".parse().unwrap())
        );
        // A node joins, another moves; a stale route of ours goes.
        table
            .routes
            .lock()
            .unwrap()
            .push(route("10.244.7.0/24", [10, 77, 0, 50]));
        nodes.push(n("master-2", Some("10.244.1.0/24"), Some([10, 77, 0, 12])));
        nodes[1].internal_ip = Some(Ipv4Addr::new(10, 77, 0, 14));
        let r = gw.reconcile("worker-1", ME, &nodes).await;
        assert_eq!(
            r.routes,
            vec![
                "10.244.0.0/24 via 10.77.0.14",
                "10.244.1.0/24 via 10.77.0.12"
            ]
        );
        assert_eq!(
            *table.routes.lock().unwrap(),
            vec![
                route("10.244.0.0/24", [10, 77, 0, 14]),
                route("10.244.1.0/24", [10, 77, 0, 12]),
            ]
        );
        // A route the kernel refuses is reported, the rest goes on.
        let refusing = FakeTable {
            refuse: Some(route("10.244.1.0/24", [10, 77, 0, 12])),
            ..FakeTable::default()
        };
        let gw2 = HostGw::new(paths.clone(), refusing);
        let r = gw2.reconcile("worker-1", ME, &nodes).await;
        assert_eq!(r.routes, vec!["10.244.0.0/24 via 10.77.0.14"]);
        let e = r.error.unwrap();
        assert!(
            e.contains("10.244.1.0/24 via 10.77.0.12") && e.contains("unreachable"),
            "{e}"
        );
        // Reset removes the file.
        remove_conflist(&paths).unwrap();
        assert!(!file.exists());
        remove_conflist(&paths).unwrap();
    }
}
