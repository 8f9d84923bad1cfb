//! A cluster of QEMU guests on a private network ([`crate::net`]): the
//! one implementation behind `make cluster` (binary `kubeboot-cluster`) and
//! `tests/cluster.rs`.
//!
//! Every guest boots the master or worker image by direct kernel boot
//! ([`VmConfig`]), 1 vCPU, with its own persistent qcow2 data disk, the
//! cluster secret as the systemd credential `kubeboot.secret`, a virtio NIC
//! on its own tap (deterministic MAC, so a DHCP lease pinned to it), its
//! serial console in `<run>/<node>.console.log` and the agent's status
//! stream (virtio-serial port `org.kubeboot.status`) in
//! `<run>/<node>.status.jsonl`. QEMU runs in the background (`-daemonize`,
//! pid file `<run>/<node>.pid`); [`Cluster::power_off`] is a SIGKILL, a
//! power cut with no shutdown.
//!
//! `<run>/cluster.json` records the namespace and the nodes so a later
//! command ([`Cluster::open`]) can show their status or stop them.
//! Dropping a [`Cluster`] kills every guest and removes the network, unless
//! [`Cluster::keep`] was called.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

use crate::net::Network;
use crate::proc::{kill_pidfile, pidfile_process, run};
use crate::status::{self, Reading};
use crate::{create_disk, find_image_in, images_dir, require_program, HarnessError, VmConfig};

/// The image's virtual IP (profiles/base.toml `[cluster.network] vip`).
pub const VIP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 10);
/// The cluster name baked into the images (`[cluster] name`); the etcd CA
/// is derived from the secret and this name.
pub const DEFAULT_CLUSTER_NAME: &str = cluster_config::DEFAULT_CLUSTER_NAME;
/// The credential carrying a cluster configuration fragment.
pub const CONFIG_CREDENTIAL: &str = "kubeboot.config";
/// The credential carrying the cluster secret.
pub const SECRET_CREDENTIAL: &str = "kubeboot.secret";
/// The virtio-serial port the guest writes its status to.
pub const STATUS_PORT: &str = "org.kubeboot.status";
/// etcd's client port in the guests.
pub const ETCD_CLIENT_PORT: u16 = 2379;
/// The state file inside the run directory.
pub const STATE_FILE: &str = "cluster.json";
/// Highest node index (addresses 10.77.0.101-199).
pub const MAX_INDEX: u8 = 99;
/// The public Kubernetes API port: the VIP's (`[kubernetes] api_port`),
/// served by the agent's balancer on every master.
pub const API_PORT: u16 = 6443;
/// The port each master's own kube-apiserver binds behind the balancer
/// (`[kubernetes] apiserver_port`, the default with `[balancer] enabled`).
pub const APISERVER_PORT: u16 = 6444;
/// Guest memory for images with Kubernetes (kubeadm's preflight wants
/// 1700 MB on a control-plane node; the API server, controller manager,
/// scheduler and etcd share it).
pub const KUBEADM_MEMORY_MIB: u32 = 3072;

/// A node's role: which image it boots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The master image.
    Master,
    /// The worker image.
    Worker,
}

impl Role {
    /// The image directory name (`master`, `worker`).
    pub fn image(self) -> &'static str {
        match self {
            Role::Master => "master",
            Role::Worker => "worker",
        }
    }
}

/// One guest: its name in the harness, its files and its fixed addresses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// The harness's name (`master-1`); the agent picks its own node name.
    pub name: String,
    /// Role.
    pub role: Role,
    /// Index 1..=99: MAC `52:54:00:77:00:<index>`, address 10.77.0.(100+index).
    pub index: u8,
    /// Persistent data disk (qcow2).
    pub disk: PathBuf,
    /// Serial console log.
    pub console: PathBuf,
    /// The agent's status stream (one JSON report a line).
    pub status: PathBuf,
    /// QEMU's pid file.
    pub pidfile: PathBuf,
    /// When QEMU was last started (milliseconds since the Unix epoch).
    pub powered_on_unix_ms: u64,
}

impl Node {
    /// The NIC's MAC address (deterministic per index).
    pub fn mac(&self) -> String {
        mac_for(self.index)
    }

    /// The address dnsmasq leases to this node.
    pub fn ip(&self) -> Ipv4Addr {
        ip_for(self.index)
    }

    /// The tap device in the namespace.
    pub fn tap(&self) -> String {
        format!("tap{}", self.index)
    }

    /// etcd's client URL on this node.
    pub fn etcd_endpoint(&self) -> String {
        format!("https://{}:{ETCD_CLIENT_PORT}", self.ip())
    }

    /// QEMU's pid while it runs.
    pub fn pid(&self) -> Option<i32> {
        pidfile_process(&self.pidfile)
    }

    /// Whether QEMU runs.
    pub fn running(&self) -> bool {
        self.pid().is_some()
    }

    /// The last report of the status stream (see [`crate::status::read`]).
    pub fn status(&self) -> Option<Reading> {
        status::read(&self.status)
    }

    /// Time since QEMU was started.
    pub fn uptime(&self) -> Duration {
        let now = unix_ms(SystemTime::now());
        Duration::from_millis(now.saturating_sub(self.powered_on_unix_ms))
    }
}

/// MAC of node `index`.
pub fn mac_for(index: u8) -> String {
    format!("52:54:00:77:00:{index:02x}")
}

/// Leased address of node `index`.
pub fn ip_for(index: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 77, 0, 100 + index.min(MAX_INDEX))
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// How to build a cluster.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Where disks, logs, status streams and pid files go.
    pub run_dir: PathBuf,
    /// Network namespace name (carries a pid so parallel runs never clash).
    pub netns: String,
    /// The cluster secret (at least `cluster_config::MIN_SECRET_LEN` bytes).
    pub secret: String,
    /// The cluster name baked into the image (for the etcd client PKI).
    pub cluster_name: String,
    /// Guest memory, MiB.
    pub memory_mib: u32,
    /// vCPUs per guest.
    pub cpus: u32,
    /// Size of a new data disk (`qemu-img` syntax).
    pub disk_size: String,
    /// Where the `master` and `worker` images are (default
    /// [`crate::images_dir`]: `$KUBEBOOT_IMAGES` or `<workspace>/out`).
    pub images: PathBuf,
    /// A TOML fragment of the cluster configuration every node gets as the
    /// `kubeboot.config` credential (on top of the image's), for example
    /// `[kubernetes]` settings of a test; `None`: the image's alone.
    pub config: Option<String>,
    /// Appended to every guest's kernel command line (for example
    /// `systemd.mask=<unit>` to break a piece on purpose); empty: nothing.
    pub extra_cmdline: String,
}

impl ClusterOptions {
    /// Defaults: 1 vCPU, 1536 MiB, 8G sparse disks, cluster `kubeboot`,
    /// images from [`crate::images_dir`].
    pub fn new(run_dir: PathBuf, netns: String, secret: String) -> Self {
        ClusterOptions {
            run_dir,
            netns,
            secret,
            cluster_name: DEFAULT_CLUSTER_NAME.to_owned(),
            memory_mib: 1536,
            cpus: 1,
            disk_size: "8G".to_owned(),
            images: images_dir(),
            config: None,
            extra_cmdline: String::new(),
        }
    }

    /// Sizes guests for kubeadm when `kubernetes` says the images carry
    /// it: kubeadm's preflight refuses a control-plane node with fewer
    /// than 2 CPUs or 1700 MB of memory (the agent ignores no preflight
    /// error), so at least 2 vCPUs and [`KUBEADM_MEMORY_MIB`].
    pub fn fit_for_kubeadm(&mut self, kubernetes: &crate::ImageKubernetes) {
        if kubernetes.present {
            self.cpus = self.cpus.max(2);
            self.memory_mib = self.memory_mib.max(KUBEADM_MEMORY_MIB);
        }
    }
}

/// What `<run>/cluster.json` records.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    /// The namespace.
    pub netns: String,
    /// The cluster name.
    pub cluster_name: String,
    /// Nodes by harness name.
    pub nodes: BTreeMap<String, Node>,
}

/// The guests and their network.
pub struct Cluster {
    opts: ClusterOptions,
    net: Network,
    nodes: BTreeMap<String, Node>,
    keep: bool,
}

impl Cluster {
    /// Creates the network (namespace, bridge, DHCP with a lease pinned to
    /// every node index) in `opts.run_dir`. No guest runs yet.
    pub fn create(opts: ClusterOptions) -> Result<Cluster, HarnessError> {
        require_program("qemu-system-x86_64", "qemu-system-x86")?;
        require_program("qemu-img", "qemu-utils")?;
        crate::proc::become_subreaper();
        cluster_config::ClusterSecret::new(opts.secret.clone())
            .map_err(|e| HarnessError::Pki(e.to_string()))?;
        let leases: Vec<(String, Ipv4Addr)> =
            (1..=MAX_INDEX).map(|i| (mac_for(i), ip_for(i))).collect();
        let net = Network::create(&opts.netns, &opts.run_dir, &leases)?;
        let c = Cluster {
            opts,
            net,
            nodes: BTreeMap::new(),
            keep: false,
        };
        c.save()?;
        Ok(c)
    }

    /// Opens the cluster recorded in `run_dir` (its namespace may be gone).
    /// The secret is not needed to show status or stop guests; pass it to
    /// boot more.
    pub fn open(run_dir: &Path, secret: Option<String>) -> Result<Cluster, HarnessError> {
        let state = read_state(run_dir)?;
        let mut opts = ClusterOptions::new(
            run_dir.to_owned(),
            state.netns.clone(),
            secret.unwrap_or_default(),
        );
        opts.cluster_name = state.cluster_name;
        Ok(Cluster {
            net: Network::open(&state.netns, run_dir),
            opts,
            nodes: state.nodes,
            // Opening never destroys by accident: call destroy() for that.
            keep: true,
        })
    }

    /// The options.
    pub fn options(&self) -> &ClusterOptions {
        &self.opts
    }

    /// The network.
    pub fn network(&self) -> &Network {
        &self.net
    }

    /// Leaves guests and network running when this value is dropped.
    pub fn keep(&mut self) {
        self.keep = true;
        self.net.keep();
    }

    /// Every node, by name.
    pub fn nodes(&self) -> &BTreeMap<String, Node> {
        &self.nodes
    }

    /// One node.
    pub fn node(&self, name: &str) -> Result<&Node, HarnessError> {
        self.nodes
            .get(name)
            .ok_or_else(|| HarnessError::UnknownNode(name.to_owned()))
    }

    fn save(&self) -> Result<(), HarnessError> {
        let state = State {
            netns: self.opts.netns.clone(),
            cluster_name: self.opts.cluster_name.clone(),
            nodes: self.nodes.clone(),
        };
        let path = self.opts.run_dir.join(STATE_FILE);
        let text = serde_json::to_string_pretty(&state).unwrap_or_default();
        atomic_file::write(&path, text.as_bytes(), atomic_file::PUBLIC).map_err(|source| {
            HarnessError::Io {
                what: "writing",
                path,
                source,
            }
        })
    }

    /// Powers on node `name` (new or known) with `role` and `index`:
    /// creates its data disk when missing (`blank` deletes an existing one
    /// first), its tap, and starts QEMU in the background. `secret`
    /// overrides the cluster secret (an intruder). Returns once QEMU runs.
    pub fn start(
        &mut self,
        name: &str,
        role: Role,
        index: u8,
        secret: Option<&str>,
        blank: bool,
    ) -> Result<&Node, HarnessError> {
        if index == 0 || index > MAX_INDEX {
            return Err(HarnessError::UnknownNode(format!(
                "{name}: index {index} outside 1..={MAX_INDEX}"
            )));
        }
        if let Some(n) = self.nodes.get(name) {
            if n.running() {
                return Err(HarnessError::Command {
                    command: format!("start {name}"),
                    detail: format!("already running (pid file {})", n.pidfile.display()),
                });
            }
        }
        let dir = &self.opts.run_dir;
        let mut node = Node {
            name: name.to_owned(),
            role,
            index,
            disk: self.disk_path(name),
            console: dir.join(format!("{name}.console.log")),
            status: dir.join(format!("{name}.status.jsonl")),
            pidfile: dir.join(format!("{name}.pid")),
            powered_on_unix_ms: 0,
        };
        if blank {
            match std::fs::remove_file(&node.disk) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(HarnessError::Io {
                        what: "removing",
                        path: node.disk.clone(),
                        source,
                    })
                }
            }
        }
        if !node.disk.exists() {
            create_disk(&node.disk, &self.opts.disk_size)?;
        }
        let image = find_image_in(&self.opts.images, role.image())?;
        self.net.add_tap(&node.tap())?;
        let mut config = VmConfig::new(image, node.console.clone());
        config.memory_mib = self.opts.memory_mib;
        config.cpus = self.opts.cpus;
        config.disks.push(node.disk.clone());
        config.credentials.push((
            SECRET_CREDENTIAL.to_owned(),
            secret.unwrap_or(&self.opts.secret).to_owned(),
        ));
        if let Some(fragment) = &self.opts.config {
            config
                .credentials
                .push((CONFIG_CREDENTIAL.to_owned(), fragment.clone()));
        }
        config.daemon_pidfile = Some(node.pidfile.clone());
        config.extra_args = node_args(&node);
        config.extra_cmdline = self.opts.extra_cmdline.clone();
        // A stale stream from the previous boot must not look current.
        let _ = std::fs::remove_file(&node.status);
        let args = config.args();
        let shown: Vec<String> = args
            .iter()
            .map(|a| {
                if a.contains(SECRET_CREDENTIAL) {
                    format!("type=11,value=io.systemd.credential:{SECRET_CREDENTIAL}=<secret>")
                } else {
                    a.clone()
                }
            })
            .collect();
        let _ = std::fs::write(
            dir.join(format!("{name}.qemu-args")),
            format!("qemu-system-x86_64 {}\n", shown.join(" ")),
        );
        let mut cmd = self.net.command("qemu-system-x86_64");
        cmd.args(&args);
        node.powered_on_unix_ms = unix_ms(SystemTime::now());
        run(&mut cmd)?;
        tracing::debug!("{name}: QEMU started, pid {:?}", node.pid());
        self.nodes.insert(name.to_owned(), node);
        self.save()?;
        self.node(name)
    }

    /// Replaces the configuration fragment the nodes started from now on
    /// get as the `kubeboot.config` credential (running nodes keep theirs).
    pub fn set_config(&mut self, fragment: Option<String>) {
        self.opts.config = fragment;
    }

    /// Where node `name`'s data disk is (or will be) kept.
    pub fn disk_path(&self, name: &str) -> PathBuf {
        self.opts.run_dir.join(format!("{name}.qcow2"))
    }

    /// Starts a known node again with its disk (after [`Cluster::power_off`]).
    pub fn restart(&mut self, name: &str) -> Result<&Node, HarnessError> {
        let n = self.node(name)?.clone();
        self.start(name, n.role, n.index, None, false)
    }

    /// Power cut: SIGKILL of QEMU, no shutdown. The disk stays.
    pub fn power_off(&mut self, name: &str) -> Result<(), HarnessError> {
        let n = self.node(name)?;
        kill_pidfile(&n.pidfile, &format!("QEMU of {name}"))
    }

    /// Partitions node `name` from the others (its tap leaves the bridge).
    pub fn cut(&self, name: &str) -> Result<(), HarnessError> {
        self.net.cut(&self.node(name)?.tap())
    }

    /// Ends the partition of node `name`.
    pub fn heal(&self, name: &str) -> Result<(), HarnessError> {
        self.net.heal(&self.node(name)?.tap())
    }

    /// Forgets node `name` (powered off for good): removes its tap.
    pub fn remove(&mut self, name: &str) -> Result<(), HarnessError> {
        self.power_off(name)?;
        if let Some(n) = self.nodes.remove(name) {
            let _ = self.net.remove_tap(&n.tap());
        }
        self.save()
    }

    /// The names of the nodes whose QEMU runs.
    pub fn running(&self) -> Vec<String> {
        self.nodes
            .values()
            .filter(|n| n.running())
            .map(|n| n.name.clone())
            .collect()
    }

    /// The last status of every node (None: no report yet or powered off).
    pub fn snapshot(&self) -> BTreeMap<String, Option<Reading>> {
        self.nodes
            .iter()
            .map(|(name, n)| (name.clone(), n.running().then(|| n.status()).flatten()))
            .collect()
    }

    /// One line per node for progress and failure messages.
    pub fn describe(&self) -> String {
        let snap = self.snapshot();
        self.nodes
            .values()
            .map(|n| describe_node(n, snap.get(&n.name).and_then(Option::as_ref)))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Polls the nodes every `every` until `check` returns `Some`, up to
    /// `timeout`; the error names `what` and shows every node.
    pub fn wait<T>(
        &self,
        what: &str,
        timeout: Duration,
        every: Duration,
        mut check: impl FnMut(&BTreeMap<String, Option<Reading>>) -> Option<T>,
    ) -> Result<T, HarnessError> {
        let start = Instant::now();
        loop {
            if let Some(v) = check(&self.snapshot()) {
                return Ok(v);
            }
            if start.elapsed() >= timeout {
                return Err(HarnessError::Wait {
                    what: what.to_owned(),
                    waited: start.elapsed(),
                    nodes: self.describe(),
                    logs: self.log_paths(),
                });
            }
            std::thread::sleep(every);
        }
    }

    /// Console logs and status streams of every node.
    pub fn log_paths(&self) -> Vec<PathBuf> {
        self.nodes
            .values()
            .flat_map(|n| [n.console.clone(), n.status.clone()])
            .collect()
    }

    /// An etcd client (etcdctl in the namespace) with a client certificate
    /// minted from the cluster secret, files under `<run>/etcd-client/`.
    pub fn etcd(&self) -> Result<EtcdClient, HarnessError> {
        EtcdClient::mint(
            &self.opts.secret,
            &self.opts.cluster_name,
            &self.opts.run_dir.join("etcd-client"),
            &self.opts.netns,
        )
    }

    /// A client of the Kubernetes API (curl in the namespace) with the
    /// Kubernetes CA and an admin client certificate (`system:masters`)
    /// derived from the cluster secret as the agents derive them; files
    /// and a kubeconfig under `<run>/kubernetes/`.
    pub fn kubernetes(&self) -> Result<KubeClient, HarnessError> {
        KubeClient::mint(
            &self.opts.secret,
            &self.opts.cluster_name,
            &self.opts.run_dir.join("kubernetes"),
            &self.opts.netns,
        )
    }

    /// Kills every guest, then dnsmasq, and deletes the namespace. Disks,
    /// logs and the state file stay.
    pub fn destroy(&mut self) -> Result<(), HarnessError> {
        self.keep = true;
        let mut first_err = None;
        for n in self.nodes.values() {
            if let Err(e) = kill_pidfile(&n.pidfile, &format!("QEMU of {}", n.name)) {
                first_err.get_or_insert(e);
            }
        }
        if let Err(e) = self.net.destroy() {
            first_err.get_or_insert(e);
        }
        first_err.map_or(Ok(()), Err)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        if let Err(e) = self.destroy() {
            eprintln!("cluster cleanup: {e}");
        }
        if std::thread::panicking() {
            eprintln!(
                "cluster: console logs and status streams kept in {}",
                self.opts.run_dir.display()
            );
        }
    }
}

/// Stops what earlier runs left behind when their process died before it
/// could clean up (killed by a timeout or SIGKILL, so no Drop ran): for
/// every `<logs>/<prefix><pid>/cluster.json` whose `<pid>` no longer runs
/// and whose guests, dnsmasq or namespace still exist, kills them and
/// deletes the namespace ([`Cluster::destroy`]). Returns the run
/// directories cleaned; failures are logged and skipped.
pub fn reap_abandoned(logs: &Path, prefix: &str) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(logs) else {
        return Vec::new();
    };
    let mut cleaned = Vec::new();
    for e in entries.flatten() {
        let dir = e.path();
        let owner = e
            .file_name()
            .to_str()
            .and_then(|n| n.strip_prefix(prefix))
            .and_then(|pid| pid.parse::<i32>().ok());
        let Some(owner) = owner else { continue };
        if crate::proc::alive(owner) || !dir.join(STATE_FILE).is_file() {
            continue;
        }
        let Ok(mut c) = Cluster::open(&dir, None) else {
            continue;
        };
        let left = c.nodes.values().any(Node::running)
            || c.net.dnsmasq_pid().is_some()
            || Network::exists(c.net.name());
        if !left {
            continue;
        }
        match c.destroy() {
            Ok(()) => cleaned.push(dir),
            Err(e) => tracing::warn!("cleaning up {}: {e}", dir.display()),
        }
    }
    cleaned
}

/// Reads `<run_dir>/cluster.json`.
pub fn read_state(run_dir: &Path) -> Result<State, HarnessError> {
    let path = run_dir.join(STATE_FILE);
    let text = std::fs::read_to_string(&path).map_err(|source| HarnessError::Io {
        what: "reading",
        path: path.clone(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| HarnessError::State {
        path,
        reason: e.to_string(),
    })
}

/// QEMU arguments of a node besides the image, disk and credentials: the
/// NIC on its tap and the status port. Pure.
pub fn node_args(n: &Node) -> Vec<String> {
    [
        "-name".to_owned(),
        format!("kubeboot-{}", n.name),
        "-netdev".to_owned(),
        format!("tap,id=n0,ifname={},script=no,downscript=no", n.tap()),
        "-device".to_owned(),
        format!("virtio-net-pci,netdev=n0,mac={}", n.mac()),
        "-device".to_owned(),
        "virtio-serial-pci".to_owned(),
        "-chardev".to_owned(),
        format!(
            "file,id=kbstatus,path={}",
            crate::qemu_escape(&n.status.display().to_string())
        ),
        "-device".to_owned(),
        format!("virtserialport,chardev=kbstatus,name={STATUS_PORT}"),
    ]
    .to_vec()
}

/// One line about a node: harness name, address, agent's node name, phase,
/// etcd and VIP. Pure.
pub fn describe_node(n: &Node, r: Option<&Reading>) -> String {
    let head = format!("{:<9} {:<12}", n.name, n.ip());
    let Some(r) = r else {
        return format!(
            "{head} {}",
            if n.running() {
                "powered on, no status yet"
            } else {
                "powered off"
            }
        );
    };
    let s = &r.report;
    let e = &s.etcd;
    let etcd = match &e.member_id {
        Some(id) => format!(
            "member {id} {}, {} members ({} voters), leader {}",
            if e.learner { "learner" } else { "voter" },
            e.members.len(),
            e.members.iter().filter(|m| !m.learner).count(),
            e.leader.as_deref().unwrap_or("-")
        ),
        None => "no member".to_owned(),
    };
    format!(
        "{head} {} phase {} | peers {} | {etcd} | vip {}{}",
        s.node.name,
        s.phase,
        s.discovery.peers.len(),
        status::vip_state(s).unwrap_or("off"),
        if r.age > Duration::from_secs(5) {
            format!(" | status {} s old", r.age.as_secs())
        } else {
            String::new()
        }
    )
}

/// The cluster's CAs, derived from the secret and the cluster name like the
/// agents derive them.
fn derive_pki(secret: &str, cluster_name: &str) -> Result<pki::ClusterPki, HarnessError> {
    let secret = cluster_config::ClusterSecret::new(secret.to_owned())
        .map_err(|e| HarnessError::Pki(e.to_string()))?;
    pki::ClusterPki::derive(&secret, cluster_name).map_err(|e| HarnessError::Pki(e.to_string()))
}

/// The files of a client certificate written by [`issue_client`].
struct ClientFiles {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    ca_pin: String,
}

/// Issues a client certificate (`common_name`, `organization`) from `ca`
/// and writes `ca.crt`, `<name>.crt` and `<name>.key` (0600) in `dir`.
fn issue_client(
    ca: &pki::Ca,
    dir: &Path,
    name: &str,
    common_name: &str,
    organization: Option<&str>,
) -> Result<ClientFiles, HarnessError> {
    let leaf = ca
        .issue(&pki::LeafRequest {
            common_name: common_name.to_owned(),
            dns_names: Vec::new(),
            ips: Vec::new(),
            usage: pki::Usage::Client,
            organization: organization.map(str::to_owned),
        })
        .map_err(|e| HarnessError::Pki(e.to_string()))?;
    std::fs::create_dir_all(dir).map_err(|source| HarnessError::Io {
        what: "creating",
        path: dir.to_owned(),
        source,
    })?;
    let f = ClientFiles {
        ca: dir.join("ca.crt"),
        cert: dir.join(format!("{name}.crt")),
        key: dir.join(format!("{name}.key")),
        ca_pin: ca.spki_pin(),
    };
    pki::write_cert_file(&f.ca, &ca.cert_pem).map_err(writing(&f.ca))?;
    pki::write_cert_file(&f.cert, &leaf.cert_pem).map_err(writing(&f.cert))?;
    pki::write_key_file(&f.key, &leaf.key_pem).map_err(writing(&f.key))?;
    Ok(f)
}

/// Maps an error writing `path` to [`HarnessError::Io`].
fn writing(path: &Path) -> impl FnOnce(std::io::Error) -> HarnessError {
    let path = path.to_owned();
    move |source| HarnessError::Io {
        what: "writing",
        path,
        source,
    }
}

/// etcdctl run inside the namespace with a client certificate from the
/// cluster's etcd CA (derived from the secret, like the agents do).
#[derive(Debug, Clone)]
pub struct EtcdClient {
    netns: String,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    ca_pin: String,
}

impl EtcdClient {
    /// Derives the etcd CA from `secret` and `cluster_name`, issues a
    /// client certificate and writes CA, certificate and key (0600) in
    /// `dir`.
    pub fn mint(
        secret: &str,
        cluster_name: &str,
        dir: &Path,
        netns: &str,
    ) -> Result<EtcdClient, HarnessError> {
        require_program("etcdctl", "etcd-client")?;
        let pki = derive_pki(secret, cluster_name)?;
        let f = issue_client(&pki.etcd_ca, dir, "client", "kubeboot-harness", None)?;
        Ok(EtcdClient {
            netns: netns.to_owned(),
            ca: f.ca,
            cert: f.cert,
            key: f.key,
            ca_pin: f.ca_pin,
        })
    }

    /// The SPKI pin of the etcd CA (compare with a guest's `pki.etcd_ca_pin`).
    pub fn ca_pin(&self) -> &str {
        &self.ca_pin
    }

    /// The etcdctl command line prefix (for people: copy and paste).
    pub fn command_line(&self, endpoint: &str) -> String {
        format!(
            "ip netns exec {} env ETCDCTL_API=3 etcdctl --endpoints {endpoint} --cacert {} --cert {} --key {}",
            self.netns,
            self.ca.display(),
            self.cert.display(),
            self.key.display()
        )
    }

    /// Runs etcdctl against `endpoint`, verifying the server certificate
    /// against the etcd CA derived from the secret (the members'
    /// certificates name their own address and the VIP) and presenting the
    /// client certificate.
    pub fn etcdctl(&self, endpoint: &str, args: &[&str]) -> Result<String, HarnessError> {
        let mut cmd = std::process::Command::new("ip");
        cmd.args(["netns", "exec", &self.netns, "etcdctl"])
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={endpoint}"))
            .arg(format!("--cacert={}", self.ca.display()))
            .arg(format!("--cert={}", self.cert.display()))
            .arg(format!("--key={}", self.key.display()))
            .args(["--dial-timeout=5s", "--command-timeout=10s"]);
        cmd.args(args);
        run(&mut cmd)
    }

    /// `put key value`.
    pub fn put(&self, endpoint: &str, key: &str, value: &str) -> Result<(), HarnessError> {
        self.etcdctl(endpoint, &["put", key, value]).map(drop)
    }

    /// `get key` from the member's own store (serializable read: what this
    /// member has, without asking the leader); `None` when absent.
    pub fn get_local(&self, endpoint: &str, key: &str) -> Result<Option<String>, HarnessError> {
        let out = self.etcdctl(
            endpoint,
            &["get", key, "--consistency=s", "--print-value-only"],
        )?;
        let v = out.trim_end_matches('\n');
        Ok((!out.is_empty()).then(|| v.to_owned()))
    }
}

/// The Kubernetes API seen from the host side of the test network: curl
/// run in the namespace, verifying the API server's certificate against
/// the Kubernetes CA derived from the secret (the agents place the same
/// CA; the API server's certificate names the VIP and every master).
#[derive(Debug, Clone)]
pub struct KubeClient {
    netns: String,
    /// The Kubernetes CA certificate.
    pub ca: PathBuf,
    /// An admin client certificate (`O=system:masters`).
    pub cert: PathBuf,
    /// Its key (0600).
    pub key: PathBuf,
    /// A kubeconfig naming the VIP, the CA and the admin certificate.
    pub kubeconfig: PathBuf,
    ca_pin: String,
}

impl KubeClient {
    /// Derives the Kubernetes CA from `secret` and `cluster_name`, issues
    /// an admin client certificate and writes CA, certificate, key (0600)
    /// and `admin.conf` (file paths, API on the VIP) in `dir`.
    pub fn mint(
        secret: &str,
        cluster_name: &str,
        dir: &Path,
        netns: &str,
    ) -> Result<KubeClient, HarnessError> {
        let pki = derive_pki(secret, cluster_name)?;
        let f = issue_client(
            &pki.kubernetes_ca,
            dir,
            "admin",
            "kubeboot-harness-admin",
            Some("system:masters"),
        )?;
        let c = KubeClient {
            netns: netns.to_owned(),
            ca: f.ca,
            cert: f.cert,
            key: f.key,
            kubeconfig: dir.join("admin.conf"),
            ca_pin: f.ca_pin,
        };
        let conf = kubeconfig(cluster_name, &c.ca, &c.cert, &c.key);
        pki::write_key_file(&c.kubeconfig, &conf).map_err(writing(&c.kubeconfig))?;
        Ok(c)
    }

    /// The Kubernetes CA's SPKI pin (what `kube.join.ca_pin` must say).
    pub fn ca_pin(&self) -> &str {
        &self.ca_pin
    }

    /// `GET https://<host>:6443/<path>` ([`API_PORT`]), server
    /// certificate verified against the CA; anonymous unless `admin`
    /// (then with the admin client certificate). Returns the body; an
    /// HTTP error fails.
    pub fn get(&self, host: Ipv4Addr, path: &str, admin: bool) -> Result<String, HarnessError> {
        self.get_at(host, API_PORT, path, admin)
    }

    /// As [`KubeClient::get`] on another port (a master's own API server:
    /// [`APISERVER_PORT`]).
    pub fn get_at(
        &self,
        host: Ipv4Addr,
        port: u16,
        path: &str,
        admin: bool,
    ) -> Result<String, HarnessError> {
        require_program("curl", "curl")?;
        let mut cmd = std::process::Command::new("ip");
        cmd.args(["netns", "exec", &self.netns, "curl"])
            .args(["--silent", "--show-error", "--fail", "--max-time", "10"])
            .arg("--cacert")
            .arg(&self.ca);
        if admin {
            cmd.arg("--cert")
                .arg(&self.cert)
                .arg("--key")
                .arg(&self.key);
        }
        cmd.arg(format!("https://{host}:{port}/{path}"));
        run(&mut cmd)
    }

    /// The kubectl command line prefix for people (kubectl from the
    /// components, run in the namespace).
    pub fn command_line(&self) -> String {
        format!(
            "ip netns exec {} kubectl --kubeconfig {}",
            self.netns,
            self.kubeconfig.display()
        )
    }
}

/// A kubeconfig for the API on the VIP with file references. Pure.
pub fn kubeconfig(cluster_name: &str, ca: &Path, cert: &Path, key: &Path) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: {cluster_name}\n  cluster:\n    \
         server: https://{VIP}:{API_PORT}\n    certificate-authority: {}\ncontexts:\n- name: \
         admin@{cluster_name}\n  context:\n    cluster: {cluster_name}\n    user: admin\n\
         current-context: admin@{cluster_name}\nusers:\n- name: admin\n  user:\n    \
         client-certificate: {}\n    client-key: {}\n",
        ca.display(),
        cert.display(),
        key.display()
    )
}

/// The nodes the API lists (`GET /api/v1/nodes` as JSON): name and whether
/// its `Ready` condition is `True`. Pure.
pub fn api_nodes(json: &str) -> Option<Vec<(String, bool)>> {
    let v: serde_json::Value = serde_json::from_str(json).ok()?;
    v.get("items")?
        .as_array()?
        .iter()
        .map(|n| {
            let name = n.get("metadata")?.get("name")?.as_str()?.to_owned();
            let ready = n
                .get("status")
                .and_then(|s| s.get("conditions"))
                .and_then(|c| c.as_array())
                .is_some_and(|c| {
                    c.iter().any(|c| {
                        c.get("type").and_then(|t| t.as_str()) == Some("Ready")
                            && c.get("status").and_then(|t| t.as_str()) == Some("True")
                    })
                });
            Some((name, ready))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_api_nodes_and_their_ready_condition() {
        let json = r#"{"kind":"NodeList","items":[
            {"metadata":{"name":"master-ab"},"status":{"conditions":[{"type":"MemoryPressure","status":"False"},{"type":"Ready","status":"True"}]}},
            {"metadata":{"name":"worker-cd"},"status":{"conditions":[{"type":"Ready","status":"False","reason":"KubeletNotReady"}]}},
            {"metadata":{"name":"new"}}]}"#;
        assert_eq!(
            api_nodes(json).unwrap(),
            [
                ("master-ab".to_owned(), true),
                ("worker-cd".to_owned(), false),
                ("new".to_owned(), false)
            ]
        );
        assert_eq!(api_nodes("not json"), None);
        assert_eq!(api_nodes(r#"{"items":[{"metadata":{}}]}"#), None);
    }

    #[test]
    fn kubeconfig_names_the_vip_and_the_files() {
        let k = kubeconfig(
            "kubeboot",
            Path::new("/r/ca.crt"),
            Path::new("/r/admin.crt"),
            Path::new("/r/admin.key"),
        );
        assert!(k.contains("server: https://10.77.0.10:6443\n"), "{k}");
        assert!(k.contains("certificate-authority: /r/ca.crt\n"), "{k}");
        assert!(k.contains("client-certificate: /r/admin.crt\n"), "{k}");
        assert!(k.contains("client-key: /r/admin.key\n"), "{k}");
        assert!(k.contains("current-context: admin@kubeboot\n"), "{k}");
    }

    #[test]
    fn minted_clients_carry_the_derived_ca_and_a_private_key() {
        use std::os::unix::fs::PermissionsExt;
        let secret = "mint-test-secret-0123456789abcdef";
        let tmp = tempfile::tempdir().unwrap();
        let pki = derive_pki(secret, "kubeboot").unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;

        let kube = KubeClient::mint(secret, "kubeboot", &tmp.path().join("kube"), "ns").unwrap();
        assert_eq!(kube.ca, tmp.path().join("kube/ca.crt"));
        assert_eq!(kube.cert, tmp.path().join("kube/admin.crt"));
        assert_eq!(kube.key, tmp.path().join("kube/admin.key"));
        assert_eq!(kube.ca_pin(), pki.kubernetes_ca.spki_pin());
        let ca = std::fs::read_to_string(&kube.ca).unwrap();
        assert_eq!(ca, pki.kubernetes_ca.cert_pem);
        assert!(std::fs::read_to_string(&kube.cert)
            .unwrap()
            .contains("BEGIN CERTIFICATE"));
        assert_eq!(mode(&kube.key), 0o600);
        assert_eq!(mode(&kube.kubeconfig), 0o600);

        let etcd =
            issue_client(&pki.etcd_ca, &tmp.path().join("etcd"), "client", "t", None).unwrap();
        assert_eq!(etcd.cert, tmp.path().join("etcd/client.crt"));
        assert_eq!(etcd.ca_pin, pki.etcd_ca.spki_pin());
        assert_ne!(etcd.ca_pin, kube.ca_pin());
        let ca = std::fs::read_to_string(&etcd.ca).unwrap();
        assert_eq!(ca, pki.etcd_ca.cert_pem);
        assert_eq!(mode(&etcd.key), 0o600);
    }
}
