#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Where the image bakes the cluster configuration (read-only at run time).
pub const IMAGE_CONFIG_PATH: &str = "/usr/lib/kubeboot/cluster.toml";
/// Name of the systemd credential holding the cluster secret.
pub const SECRET_CREDENTIAL: &str = "kubeboot.secret";
/// Name of the systemd credential holding a TOML fragment of `ClusterSpec`.
pub const CONFIG_CREDENTIAL: &str = "kubeboot.config";

/// Default expected number of masters.
pub const DEFAULT_MASTERS: u8 = 3;
/// Default UDP multicast group for discovery (organisation-local scope).
pub const DEFAULT_DISCOVERY_GROUP: Ipv4Addr = Ipv4Addr::new(239, 255, 77, 77);
/// Default UDP port for discovery.
pub const DEFAULT_DISCOVERY_PORT: u16 = 7373;
/// etcd's client port when `[etcd] client_port` is not set.
pub const DEFAULT_ETCD_CLIENT_PORT: u16 = 2379;
/// The cluster's name when `[cluster] name` is not set.
pub const DEFAULT_CLUSTER_NAME: &str = "kubeboot";
/// Default announce interval while a node assembles.
pub const DEFAULT_DISCOVERY_INTERVAL_MS: u64 = 1000;
/// Default VRRP advertisement interval in centiseconds (see the vrrp crate
/// README for how it was chosen against TCG guests).
pub const DEFAULT_VRRP_INTERVAL_CS: u16 = 20;
/// Default VRRP priority of a healthy master.
pub const DEFAULT_VRRP_PRIORITY: u8 = 100;
/// Default time allowed for one VIP quorum proof, in milliseconds.
pub const DEFAULT_PROOF_TIMEOUT_MS: u64 = 1000;
/// Default validity of a VIP quorum proof, in milliseconds.
pub const DEFAULT_PROOF_LEASE_MS: u64 = 2000;
/// etcd's default heartbeat interval, in milliseconds.
pub const DEFAULT_ETCD_HEARTBEAT_MS: u64 = 100;
/// etcd's default election timeout, in milliseconds.
pub const DEFAULT_ETCD_ELECTION_TIMEOUT_MS: u64 = 1000;
/// Default interval between etcd snapshots, in seconds (6 h).
pub const DEFAULT_ETCD_SNAPSHOT_INTERVAL_S: u64 = 6 * 3600;
/// Default number of etcd snapshots a master keeps.
pub const DEFAULT_ETCD_SNAPSHOT_RETAIN: u32 = 8;
/// Minimum length of the cluster secret, in bytes.
pub const MIN_SECRET_LEN: usize = 16;
/// Default public API port: the VIP's (`[kubernetes] api_port`).
pub const DEFAULT_API_PORT: u16 = 6443;
/// Default port every master's kube-apiserver binds while the agent's API
/// balancer holds [`DEFAULT_API_PORT`] (`[kubernetes] apiserver_port`).
pub const DEFAULT_APISERVER_PORT: u16 = 6444;
/// Default bound on draining proxied connections when a master's agent
/// stops (`[balancer] drain_timeout_ms`).
pub const DEFAULT_BALANCER_DRAIN_TIMEOUT_MS: u64 = 5000;

/// Errors from parsing or validating a cluster configuration. Each names the
/// key (dotted path) or the source at fault.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    /// The TOML text did not parse or had an unknown key or wrong type.
    #[error("{source_name}: {message}")]
    Parse {
        /// Where the text came from (a file path or a credential name).
        source_name: String,
        /// The parser's message, with line, column and key.
        message: String,
    },
    /// A value is present but not allowed.
    #[error("{key}: {reason}")]
    Invalid {
        /// Dotted path of the key, for example `cluster.masters`.
        key: &'static str,
        /// What is wrong and what would be right.
        reason: String,
    },
}

fn invalid(key: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        reason: reason.into(),
    }
}

/// The role an image (and so a node) plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Hash, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Control-plane node: etcd member, VIP candidate, API server.
    Master,
    /// Worker node: joins through the VIP.
    Worker,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Master => "master",
            Role::Worker => "worker",
        })
    }
}

/// How pods get their network (`[kubernetes] cni`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CniMode {
    /// The image's CNI manifest when it carries one (the profile's
    /// flannel), else [`CniMode::HostGw`].
    #[default]
    Auto,
    /// The agent's own pod network that needs no container image: the
    /// bridge and host-local CNI plugins with this node's pod CIDR, and a
    /// route to every other node's pod CIDR via its address (flannel's
    /// host-gw, without flannel). Nodes must share one L2 segment.
    HostGw,
    /// No CNI from kubeboot: the operator installs one (nodes stay
    /// NotReady until then).
    #[serde(rename = "none")]
    Off,
}

impl fmt::Display for CniMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CniMode::Auto => "auto",
            CniMode::HostGw => "host-gw",
            CniMode::Off => "none",
        })
    }
}

/// A kubeadm add-on the cluster can go without (`[kubernetes] skip_addons`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Addon {
    /// CoreDNS (kubeadm phase `addon/coredns`).
    #[serde(rename = "coredns")]
    CoreDns,
    /// kube-proxy (kubeadm phase `addon/kube-proxy`).
    KubeProxy,
}

impl Addon {
    /// kubeadm's init phase that installs it (for `skipPhases`).
    pub fn init_phase(self) -> &'static str {
        match self {
            Addon::CoreDns => "addon/coredns",
            Addon::KubeProxy => "addon/kube-proxy",
        }
    }
}

/// How nodes find each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiscoveryMode {
    /// UDP multicast announcements on the cluster network.
    Multicast,
    /// A fixed list of peer addresses (unicast), for networks without multicast.
    Static,
}

/// The per-cluster secret. Its `Debug` never prints the value.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ClusterSecret(String);

impl ClusterSecret {
    /// Wraps a secret, refusing one shorter than [`MIN_SECRET_LEN`] bytes.
    pub fn new(value: impl Into<String>) -> Result<Self, ConfigError> {
        let value: String = value.into();
        let trimmed = value.trim().to_owned();
        if trimmed.len() < MIN_SECRET_LEN {
            return Err(invalid(
                "cluster.secret",
                format!(
                    "the cluster secret must be at least {MIN_SECRET_LEN} bytes (got {})",
                    trimmed.len()
                ),
            ));
        }
        Ok(Self(trimmed))
    }

    /// The secret's bytes, for key derivation only.
    pub fn expose(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClusterSecret(<redacted>)")
    }
}

/// User input for the cluster configuration: every field optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSpec {
    /// Cluster name; part of the cluster identity (keys, token, router id).
    pub name: Option<String>,
    /// The node's role; imagegen sets it per image.
    pub role: Option<Role>,
    /// Expected number of masters (odd; default 3).
    pub masters: Option<u8>,
    /// Accept an even master count (not recommended: no extra fault tolerance).
    pub allow_even_masters: Option<bool>,
    /// The cluster secret. Better passed as the `kubeboot.secret` credential.
    pub secret: Option<ClusterSecret>,
    /// Cluster network.
    #[serde(default)]
    pub network: NetworkSpec,
    /// Peer discovery.
    #[serde(default)]
    pub discovery: DiscoverySpec,
    /// Virtual IP (VRRPv3).
    #[serde(default)]
    pub vrrp: VrrpSpec,
    /// etcd ports.
    #[serde(default)]
    pub etcd: EtcdSpec,
    /// Kubernetes settings.
    #[serde(default)]
    pub kubernetes: KubernetesSpec,
    /// The agent's API load balancer on masters.
    #[serde(default)]
    pub balancer: BalancerSpec,
}

/// API load balancer input (`[balancer]`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BalancerSpec {
    /// Run the agent's L4 balancer on every master on `0.0.0.0:<api_port>`
    /// in front of every master's API server on `apiserver_port` (default
    /// true). Off: the API servers bind `api_port` themselves and the VIP
    /// reaches only the holder's.
    pub enabled: Option<bool>,
    /// How long a stopping agent waits for proxied connections to close
    /// before it releases the VIP, in milliseconds (default 5000; at most
    /// 60000).
    pub drain_timeout_ms: Option<u64>,
}

/// Cluster network input.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkSpec {
    /// Interface carrying the cluster network (default: the one holding `cidr`,
    /// else the first non-loopback interface with an IPv4 address).
    pub interface: Option<String>,
    /// The cluster network, for example `10.77.0.0/24`.
    pub cidr: Option<Ipv4Net>,
    /// The API server's virtual IP with its prefix, for example `10.77.0.10/24`.
    pub vip: Option<Ipv4Net>,
}

/// Discovery input.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscoverySpec {
    /// `multicast` (default) or `static`.
    pub mode: Option<DiscoveryMode>,
    /// Multicast group.
    pub group: Option<Ipv4Addr>,
    /// UDP port.
    pub port: Option<u16>,
    /// Announce interval while assembling, in milliseconds.
    pub interval_ms: Option<u64>,
    /// Static peers (addresses of other nodes), for `mode = "static"`.
    pub peers: Option<Vec<IpAddr>>,
}

/// VRRP input.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VrrpSpec {
    /// Virtual router id 1..=255 (default: derived from the cluster name).
    pub router_id: Option<u8>,
    /// Advertisement interval in centiseconds.
    pub interval_cs: Option<u16>,
    /// Priority 1..=254 of a healthy master.
    pub priority: Option<u8>,
    /// Preempt a lower-priority master (default true).
    pub preempt: Option<bool>,
    /// Delay before preempting, in milliseconds.
    pub preempt_delay_ms: Option<u64>,
    /// Send adverts by unicast to the peers from discovery instead of multicast.
    pub unicast: Option<bool>,
    /// Time allowed for one quorum proof (a linearizable read on the local
    /// etcd member), in milliseconds (default 1000).
    pub proof_timeout_ms: Option<u64>,
    /// How long a successful quorum proof keeps a holder master, in
    /// milliseconds (default 2000): a holder that cannot prove quorum for
    /// this long resigns. Must exceed `proof_timeout_ms`.
    pub proof_lease_ms: Option<u64>,
}

/// etcd input.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdSpec {
    /// Client port (default 2379).
    pub client_port: Option<u16>,
    /// Peer port (default 2380).
    pub peer_port: Option<u16>,
    /// Raft heartbeat interval in milliseconds (etcd's
    /// `--heartbeat-interval`, default 100).
    pub heartbeat_ms: Option<u64>,
    /// Raft election timeout in milliseconds (etcd's `--election-timeout`,
    /// default 1000; at least 5 x `heartbeat_ms`, as etcd requires). Raise
    /// both on slow or overloaded machines (etcd's tuning guide), at the
    /// cost of a slower leader failover.
    pub election_timeout_ms: Option<u64>,
    /// Seconds between the snapshots every master takes of its own etcd
    /// member (default 21600, 6 h; 0 disables the periodic snapshots, not
    /// the on-demand ones). At least 60 when not 0.
    pub snapshot_interval_s: Option<u64>,
    /// How many snapshots a master keeps; older ones are pruned (default
    /// 8, at least 1).
    pub snapshot_retain: Option<u32>,
    /// A snapshot to bootstrap a fresh cluster from (an absolute path on
    /// the node; its `<file>.json` sidecar beside it, as `agent etcd
    /// snapshot --out` writes it). Used only by a master with no etcd
    /// data at the bootstrap decision; every member of the initial set
    /// must be given the same snapshot (by SHA-256). Default: none.
    pub restore_from: Option<std::path::PathBuf>,
}

/// Kubernetes input.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesSpec {
    /// Pod network (default 10.244.0.0/16).
    pub pod_subnet: Option<Ipv4Net>,
    /// Service network (default 10.96.0.0/12).
    pub service_subnet: Option<Ipv4Net>,
    /// The public API port: `controlPlaneEndpoint` VIP:port, every
    /// kubeconfig and join (default 6443). With the balancer on, the
    /// agent's balancer listens on it on every master.
    pub api_port: Option<u16>,
    /// The port every master's kube-apiserver binds (kubeadm's
    /// `localAPIEndpoint.bindPort`; default 6444 with the balancer on,
    /// `api_port` with it off, when it may only equal `api_port`).
    pub apiserver_port: Option<u16>,
    /// kubeadm preflight checks whose errors become warnings (kubeadm's
    /// `nodeRegistration.ignorePreflightErrors`, for example
    /// `["NumCPU", "Mem"]` on small test machines). Default: none — every
    /// check is strict.
    pub ignore_preflight_errors: Option<Vec<String>>,
    /// The pod network (default `auto`).
    pub cni: Option<CniMode>,
    /// kubeadm add-ons not to install (`kubeadm init`'s `skipPhases`), for
    /// components without their images (air-gapped). Default: none.
    pub skip_addons: Option<Vec<Addon>>,
    /// Extra kube-apiserver flags, name (without `--`) to value (kubeadm's
    /// `apiServer.extraArgs`; one set for every master). Default: none.
    pub apiserver_args: Option<BTreeMap<String, String>>,
    /// Extra kube-controller-manager flags (`controllerManager.extraArgs`),
    /// for example a longer `leader-elect-lease-duration` on slow machines.
    pub controller_manager_args: Option<BTreeMap<String, String>>,
    /// Extra kube-scheduler flags (`scheduler.extraArgs`).
    pub scheduler_args: Option<BTreeMap<String, String>>,
    /// Strategic-merge patches to the control-plane static pods kubeadm
    /// writes (kubeadm's `patches.directory`), keyed by component:
    /// `kube-apiserver`, `kube-controller-manager` or `kube-scheduler`.
    /// Each is a TOML table with the shape of a Pod, for example
    /// `[[kubernetes.patches.kube-apiserver.spec.containers]]` with
    /// `name = "kube-apiserver"` and `livenessProbe = { timeoutSeconds = 60 }`
    /// to let a slow machine's API server answer its probes later than
    /// kubeadm's 15 s. Default: none.
    pub patches: Option<BTreeMap<String, toml::Table>>,
    /// How long, after `kubeadm init`/`join` exited 0, the node's own API
    /// server (masters) or its Node (workers) may take to answer before
    /// the step counts as failed, is reset and retried (default 180 s).
    pub proof_timeout_s: Option<u64>,
}

/// The validated cluster configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterConfig {
    /// Cluster name.
    pub name: String,
    /// This node's role.
    pub role: Role,
    /// Expected number of masters.
    pub masters: u8,
    /// The secret, if known yet (the agent refuses to assemble without one).
    pub secret: Option<ClusterSecret>,
    /// Cluster network.
    pub network: Network,
    /// Discovery settings.
    pub discovery: Discovery,
    /// VRRP settings.
    pub vrrp: Vrrp,
    /// etcd settings.
    pub etcd: Etcd,
    /// Kubernetes settings.
    pub kubernetes: Kubernetes,
    /// The API load balancer.
    pub balancer: Balancer,
}

/// Validated API load balancer settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Balancer {
    /// The agent balances `api_port` to every master's `apiserver_port`.
    pub enabled: bool,
    /// Drain bound on stop, milliseconds.
    pub drain_timeout_ms: u64,
}

/// Validated network settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Network {
    /// Explicit interface, if configured.
    pub interface: Option<String>,
    /// Cluster network, if configured.
    pub cidr: Option<Ipv4Net>,
    /// Virtual IP with prefix, if configured.
    pub vip: Option<Ipv4Net>,
}

/// Validated discovery settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Discovery {
    /// Mode.
    pub mode: DiscoveryMode,
    /// Multicast group.
    pub group: Ipv4Addr,
    /// UDP port.
    pub port: u16,
    /// Announce interval in milliseconds.
    pub interval_ms: u64,
    /// Static peers.
    pub peers: Vec<IpAddr>,
}

/// Validated VRRP settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Vrrp {
    /// Virtual router id 1..=255.
    pub router_id: u8,
    /// Advertisement interval in centiseconds (1..=4095).
    pub interval_cs: u16,
    /// Priority 1..=254.
    pub priority: u8,
    /// Preemption.
    pub preempt: bool,
    /// Preempt delay in milliseconds.
    pub preempt_delay_ms: u64,
    /// Unicast mode.
    pub unicast: bool,
    /// Time allowed for one quorum proof, in milliseconds.
    pub proof_timeout_ms: u64,
    /// Validity of a successful quorum proof, in milliseconds.
    pub proof_lease_ms: u64,
}

/// Validated etcd settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Etcd {
    /// Client port.
    pub client_port: u16,
    /// Peer port.
    pub peer_port: u16,
    /// Raft heartbeat interval in milliseconds.
    pub heartbeat_ms: u64,
    /// Raft election timeout in milliseconds.
    pub election_timeout_ms: u64,
    /// Seconds between periodic snapshots; 0: none.
    pub snapshot_interval_s: u64,
    /// Snapshots kept (at least 1).
    pub snapshot_retain: u32,
    /// The snapshot a fresh cluster is bootstrapped from (absolute), if any.
    pub restore_from: Option<std::path::PathBuf>,
}

/// Validated Kubernetes settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Kubernetes {
    /// Pod network.
    pub pod_subnet: Ipv4Net,
    /// Service network.
    pub service_subnet: Ipv4Net,
    /// The public API port (the VIP's; with the balancer on, the
    /// balancer's on every master).
    pub api_port: u16,
    /// The port the masters' kube-apiservers bind: what every check of the
    /// *local* API server dials. Equals `api_port` with the balancer off.
    pub apiserver_port: u16,
    /// kubeadm preflight checks to ignore (empty: none).
    pub ignore_preflight_errors: Vec<String>,
    /// The pod network.
    pub cni: CniMode,
    /// kubeadm add-ons not to install (sorted, no duplicates; empty: none).
    pub skip_addons: Vec<Addon>,
    /// Extra kube-apiserver flags (empty: none).
    pub apiserver_args: BTreeMap<String, String>,
    /// Extra kube-controller-manager flags (empty: none).
    pub controller_manager_args: BTreeMap<String, String>,
    /// Extra kube-scheduler flags (empty: none).
    pub scheduler_args: BTreeMap<String, String>,
    /// Strategic-merge patches to the control-plane static pods, by
    /// component (one of [`PATCH_TARGETS`]; empty: none).
    pub patches: BTreeMap<String, toml::Table>,
    /// The proof's bound after kubeadm exited 0, seconds.
    pub proof_timeout_s: u64,
}

/// The components `[kubernetes.patches]` may patch: kubeadm's static pod
/// patch targets on a cluster with an external etcd.
pub const PATCH_TARGETS: [&str; 3] = [
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
];

/// Default of `[kubernetes] proof_timeout_s`.
pub const DEFAULT_KUBE_PROOF_TIMEOUT_S: u64 = 180;

/// A command-line flag name as kubeadm's `extraArgs` take it: no `--`,
/// lowercase letters, digits and `-`, starting with a letter.
fn is_flag_name(name: &str) -> bool {
    name.len() <= 100
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// Picks `over` when set, else `base` (one field of a merge).
fn pick<T: Clone>(base: &Option<T>, over: &Option<T>) -> Option<T> {
    over.clone().or_else(|| base.clone())
}

impl ClusterSpec {
    /// Parses a TOML document; `source_name` (a path or credential name)
    /// appears in the error together with the parser's line and key.
    pub fn from_toml(source_name: &str, text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            source_name: source_name.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })
    }

    /// Renders the spec as TOML (what imagegen bakes).
    pub fn to_toml(&self) -> String {
        // Serialising plain data with string keys cannot fail.
        toml::to_string_pretty(self).unwrap_or_default()
    }

    /// Returns `self` overridden by every field that `over` sets.
    pub fn merge(&self, over: &ClusterSpec) -> ClusterSpec {
        ClusterSpec {
            name: pick(&self.name, &over.name),
            role: pick(&self.role, &over.role),
            masters: pick(&self.masters, &over.masters),
            allow_even_masters: pick(&self.allow_even_masters, &over.allow_even_masters),
            secret: pick(&self.secret, &over.secret),
            network: NetworkSpec {
                interface: pick(&self.network.interface, &over.network.interface),
                cidr: pick(&self.network.cidr, &over.network.cidr),
                vip: pick(&self.network.vip, &over.network.vip),
            },
            discovery: DiscoverySpec {
                mode: pick(&self.discovery.mode, &over.discovery.mode),
                group: pick(&self.discovery.group, &over.discovery.group),
                port: pick(&self.discovery.port, &over.discovery.port),
                interval_ms: pick(&self.discovery.interval_ms, &over.discovery.interval_ms),
                peers: pick(&self.discovery.peers, &over.discovery.peers),
            },
            vrrp: VrrpSpec {
                router_id: pick(&self.vrrp.router_id, &over.vrrp.router_id),
                interval_cs: pick(&self.vrrp.interval_cs, &over.vrrp.interval_cs),
                priority: pick(&self.vrrp.priority, &over.vrrp.priority),
                preempt: pick(&self.vrrp.preempt, &over.vrrp.preempt),
                preempt_delay_ms: pick(&self.vrrp.preempt_delay_ms, &over.vrrp.preempt_delay_ms),
                unicast: pick(&self.vrrp.unicast, &over.vrrp.unicast),
                proof_timeout_ms: pick(&self.vrrp.proof_timeout_ms, &over.vrrp.proof_timeout_ms),
                proof_lease_ms: pick(&self.vrrp.proof_lease_ms, &over.vrrp.proof_lease_ms),
            },
            etcd: EtcdSpec {
                client_port: pick(&self.etcd.client_port, &over.etcd.client_port),
                peer_port: pick(&self.etcd.peer_port, &over.etcd.peer_port),
                heartbeat_ms: pick(&self.etcd.heartbeat_ms, &over.etcd.heartbeat_ms),
                election_timeout_ms: pick(
                    &self.etcd.election_timeout_ms,
                    &over.etcd.election_timeout_ms,
                ),
                snapshot_interval_s: pick(
                    &self.etcd.snapshot_interval_s,
                    &over.etcd.snapshot_interval_s,
                ),
                snapshot_retain: pick(&self.etcd.snapshot_retain, &over.etcd.snapshot_retain),
                restore_from: pick(&self.etcd.restore_from, &over.etcd.restore_from),
            },
            kubernetes: KubernetesSpec {
                pod_subnet: pick(&self.kubernetes.pod_subnet, &over.kubernetes.pod_subnet),
                service_subnet: pick(
                    &self.kubernetes.service_subnet,
                    &over.kubernetes.service_subnet,
                ),
                api_port: pick(&self.kubernetes.api_port, &over.kubernetes.api_port),
                apiserver_port: pick(
                    &self.kubernetes.apiserver_port,
                    &over.kubernetes.apiserver_port,
                ),
                ignore_preflight_errors: pick(
                    &self.kubernetes.ignore_preflight_errors,
                    &over.kubernetes.ignore_preflight_errors,
                ),
                cni: pick(&self.kubernetes.cni, &over.kubernetes.cni),
                skip_addons: pick(&self.kubernetes.skip_addons, &over.kubernetes.skip_addons),
                apiserver_args: pick(
                    &self.kubernetes.apiserver_args,
                    &over.kubernetes.apiserver_args,
                ),
                controller_manager_args: pick(
                    &self.kubernetes.controller_manager_args,
                    &over.kubernetes.controller_manager_args,
                ),
                scheduler_args: pick(
                    &self.kubernetes.scheduler_args,
                    &over.kubernetes.scheduler_args,
                ),
                patches: pick(&self.kubernetes.patches, &over.kubernetes.patches),
                proof_timeout_s: pick(
                    &self.kubernetes.proof_timeout_s,
                    &over.kubernetes.proof_timeout_s,
                ),
            },
            balancer: BalancerSpec {
                enabled: pick(&self.balancer.enabled, &over.balancer.enabled),
                drain_timeout_ms: pick(
                    &self.balancer.drain_timeout_ms,
                    &over.balancer.drain_timeout_ms,
                ),
            },
        }
    }

    /// Fills defaults and checks every rule, returning the first error.
    pub fn validate(&self) -> Result<ClusterConfig, ConfigError> {
        let name = self
            .name
            .clone()
            .unwrap_or_else(|| DEFAULT_CLUSTER_NAME.to_owned());
        if name.is_empty()
            || name.len() > 63
            || !name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return Err(invalid(
                "cluster.name",
                format!("{name:?} must be 1-63 characters of a-z, 0-9 and '-'"),
            ));
        }
        if let Some(secret) = &self.secret {
            // Deserialisation bypasses `ClusterSecret::new`; check length here.
            ClusterSecret::new(secret.0.clone())?;
        }
        let role = self.role.ok_or_else(|| {
            invalid(
                "cluster.role",
                "missing: set role = \"master\" or \"worker\" (imagegen sets it per image)",
            )
        })?;
        let masters = self.masters.unwrap_or(DEFAULT_MASTERS);
        if masters == 0 {
            return Err(invalid("cluster.masters", "must be at least 1"));
        }
        if masters.is_multiple_of(2) && !self.allow_even_masters.unwrap_or(false) {
            return Err(invalid(
                "cluster.masters",
                format!(
                    "{masters} is even: an even etcd member count tolerates no more failures \
                     than {} and splits more easily; use an odd count or set \
                     allow_even_masters = true",
                    masters - 1
                ),
            ));
        }

        let network = Network {
            interface: self.network.interface.clone(),
            cidr: self.network.cidr.map(|c| c.trunc()),
            vip: self.network.vip,
        };
        if let (Some(vip), Some(cidr)) = (network.vip, network.cidr) {
            if !cidr.contains(&vip.addr()) {
                return Err(invalid(
                    "network.vip",
                    format!("{} is outside the cluster network {cidr}", vip.addr()),
                ));
            }
        }
        if let Some(vip) = network.vip {
            if vip.prefix_len() == 32 {
                return Err(invalid(
                    "network.vip",
                    "give the VIP with the cluster network's prefix (for example /24), not /32",
                ));
            }
        }

        let discovery = Discovery {
            mode: self.discovery.mode.unwrap_or(DiscoveryMode::Multicast),
            group: self.discovery.group.unwrap_or(DEFAULT_DISCOVERY_GROUP),
            port: self.discovery.port.unwrap_or(DEFAULT_DISCOVERY_PORT),
            interval_ms: self
                .discovery
                .interval_ms
                .unwrap_or(DEFAULT_DISCOVERY_INTERVAL_MS),
            peers: self.discovery.peers.clone().unwrap_or_default(),
        };
        if !discovery.group.is_multicast() {
            return Err(invalid(
                "discovery.group",
                format!("{} is not a multicast address", discovery.group),
            ));
        }
        if discovery.port == 0 {
            return Err(invalid("discovery.port", "must not be 0"));
        }
        if !(50..=60_000).contains(&discovery.interval_ms) {
            return Err(invalid("discovery.interval_ms", "must be 50..=60000"));
        }
        if discovery.mode == DiscoveryMode::Static && discovery.peers.is_empty() {
            return Err(invalid(
                "discovery.peers",
                "mode = \"static\" needs at least one peer address",
            ));
        }

        let interval_cs = self.vrrp.interval_cs.unwrap_or(DEFAULT_VRRP_INTERVAL_CS);
        if !(1..=4095).contains(&interval_cs) {
            return Err(invalid("vrrp.interval_cs", "must be 1..=4095 centiseconds"));
        }
        let priority = self.vrrp.priority.unwrap_or(DEFAULT_VRRP_PRIORITY);
        if !(1..=254).contains(&priority) {
            return Err(invalid(
                "vrrp.priority",
                "must be 1..=254 (0 and 255 are reserved by RFC 5798)",
            ));
        }
        let router_id = match self.vrrp.router_id {
            Some(0) => return Err(invalid("vrrp.router_id", "must be 1..=255")),
            Some(id) => id,
            None => derive_router_id(&name),
        };
        let vrrp = Vrrp {
            router_id,
            interval_cs,
            priority,
            preempt: self.vrrp.preempt.unwrap_or(true),
            preempt_delay_ms: self.vrrp.preempt_delay_ms.unwrap_or(0),
            unicast: self.vrrp.unicast.unwrap_or(false),
            proof_timeout_ms: self
                .vrrp
                .proof_timeout_ms
                .unwrap_or(DEFAULT_PROOF_TIMEOUT_MS),
            proof_lease_ms: self.vrrp.proof_lease_ms.unwrap_or(DEFAULT_PROOF_LEASE_MS),
        };
        if vrrp.proof_timeout_ms == 0 {
            return Err(invalid("vrrp.proof_timeout_ms", "must be at least 1"));
        }
        if vrrp.proof_lease_ms <= vrrp.proof_timeout_ms {
            return Err(invalid(
                "vrrp.proof_lease_ms",
                "must exceed vrrp.proof_timeout_ms (a proof that took the whole timeout must still be valid when it arrives)",
            ));
        }

        let etcd = Etcd {
            client_port: self.etcd.client_port.unwrap_or(DEFAULT_ETCD_CLIENT_PORT),
            peer_port: self.etcd.peer_port.unwrap_or(2380),
            heartbeat_ms: self.etcd.heartbeat_ms.unwrap_or(DEFAULT_ETCD_HEARTBEAT_MS),
            election_timeout_ms: self
                .etcd
                .election_timeout_ms
                .unwrap_or(DEFAULT_ETCD_ELECTION_TIMEOUT_MS),
            snapshot_interval_s: self
                .etcd
                .snapshot_interval_s
                .unwrap_or(DEFAULT_ETCD_SNAPSHOT_INTERVAL_S),
            snapshot_retain: self
                .etcd
                .snapshot_retain
                .unwrap_or(DEFAULT_ETCD_SNAPSHOT_RETAIN),
            restore_from: self.etcd.restore_from.clone(),
        };
        if etcd.restore_from.as_ref().is_some_and(|p| !p.is_absolute()) {
            return Err(invalid("etcd.restore_from", "must be an absolute path"));
        }
        if etcd.snapshot_interval_s != 0 && etcd.snapshot_interval_s < 60 {
            return Err(invalid(
                "etcd.snapshot_interval_s",
                "must be 0 (no periodic snapshots) or at least 60 seconds",
            ));
        }
        if etcd.snapshot_retain == 0 {
            return Err(invalid(
                "etcd.snapshot_retain",
                "must be at least 1 (set snapshot_interval_s = 0 to take no periodic snapshots)",
            ));
        }
        if etcd.heartbeat_ms == 0
            || etcd.election_timeout_ms < etcd.heartbeat_ms.saturating_mul(5)
            || etcd.election_timeout_ms > 50_000
        {
            return Err(invalid(
                "etcd.election_timeout_ms",
                "must be 5 x etcd.heartbeat_ms to 50000 (etcd refuses other values), with a non-zero heartbeat",
            ));
        }
        if etcd.client_port == 0 || etcd.peer_port == 0 || etcd.client_port == etcd.peer_port {
            return Err(invalid(
                "etcd.client_port",
                "client and peer ports must be non-zero and differ",
            ));
        }

        let kubernetes = Kubernetes {
            pod_subnet: self.kubernetes.pod_subnet.unwrap_or_else(|| {
                Ipv4Net::new(Ipv4Addr::new(10, 244, 0, 0), 16).unwrap_or_default()
            }),
            service_subnet: self.kubernetes.service_subnet.unwrap_or_else(|| {
                Ipv4Net::new(Ipv4Addr::new(10, 96, 0, 0), 12).unwrap_or_default()
            }),
            api_port: self.kubernetes.api_port.unwrap_or(DEFAULT_API_PORT),
            apiserver_port: 0, // below, with the balancer
            ignore_preflight_errors: self
                .kubernetes
                .ignore_preflight_errors
                .clone()
                .unwrap_or_default(),
            cni: self.kubernetes.cni.unwrap_or_default(),
            skip_addons: {
                let mut v = self.kubernetes.skip_addons.clone().unwrap_or_default();
                v.sort();
                v.dedup();
                v
            },
            apiserver_args: self.kubernetes.apiserver_args.clone().unwrap_or_default(),
            controller_manager_args: self
                .kubernetes
                .controller_manager_args
                .clone()
                .unwrap_or_default(),
            scheduler_args: self.kubernetes.scheduler_args.clone().unwrap_or_default(),
            patches: self.kubernetes.patches.clone().unwrap_or_default(),
            proof_timeout_s: self
                .kubernetes
                .proof_timeout_s
                .unwrap_or(DEFAULT_KUBE_PROOF_TIMEOUT_S),
        };
        if !(10..=3600).contains(&kubernetes.proof_timeout_s) {
            return Err(invalid(
                "kubernetes.proof_timeout_s",
                "must be 10 to 3600 seconds",
            ));
        }
        for (key, args) in [
            ("kubernetes.apiserver_args", &kubernetes.apiserver_args),
            (
                "kubernetes.controller_manager_args",
                &kubernetes.controller_manager_args,
            ),
            ("kubernetes.scheduler_args", &kubernetes.scheduler_args),
        ] {
            if let Some((flag, value)) = args
                .iter()
                .find(|(f, v)| !is_flag_name(f) || v.contains(['\n', '\r', '\0']))
            {
                return Err(invalid(
                    key,
                    format!(
                        "{flag:?} = {value:?}: a flag is its name without `--` (lowercase \
                         letters, digits and '-', starting with a letter) and a one-line value"
                    ),
                ));
            }
        }
        if let Some(bad) = kubernetes
            .patches
            .keys()
            .find(|t| !PATCH_TARGETS.contains(&t.as_str()))
        {
            return Err(invalid(
                "kubernetes.patches",
                format!(
                    "{bad:?} is not a component kubeadm patches here (one of {})",
                    PATCH_TARGETS.join(", ")
                ),
            ));
        }
        if let Some(bad) = kubernetes
            .ignore_preflight_errors
            .iter()
            .find(|c| !is_preflight_check_name(c))
        {
            return Err(invalid(
                "kubernetes.ignore_preflight_errors",
                format!(
                    "{bad:?} is not a preflight check name (a letter, then letters, digits, \
                     '-', '.' or '_'; at most 253 characters)"
                ),
            ));
        }
        if kubernetes
            .pod_subnet
            .contains(&kubernetes.service_subnet.network())
            || kubernetes
                .service_subnet
                .contains(&kubernetes.pod_subnet.network())
        {
            return Err(invalid(
                "kubernetes.service_subnet",
                "pod and service subnets overlap",
            ));
        }

        let balancer = Balancer {
            enabled: self.balancer.enabled.unwrap_or(true),
            drain_timeout_ms: self
                .balancer
                .drain_timeout_ms
                .unwrap_or(DEFAULT_BALANCER_DRAIN_TIMEOUT_MS),
        };
        let mut kubernetes = kubernetes;
        kubernetes.apiserver_port = api_ports(
            kubernetes.api_port,
            self.kubernetes.apiserver_port,
            balancer.enabled,
        )?;
        if balancer.drain_timeout_ms > 60_000 {
            return Err(invalid(
                "balancer.drain_timeout_ms",
                "must be at most 60000 (the agent's unit allows 90 s to stop)",
            ));
        }

        Ok(ClusterConfig {
            name,
            role,
            masters,
            secret: self.secret.clone(),
            network,
            discovery,
            vrrp,
            etcd,
            kubernetes,
            balancer,
        })
    }
}

/// The port the masters' API servers bind, from the public `api_port`,
/// `[kubernetes] apiserver_port` and whether the balancer runs: with the
/// balancer on, the balancer holds `api_port` on every master, so the API
/// servers need another (default [`DEFAULT_APISERVER_PORT`]); with it off,
/// the API servers serve `api_port` themselves.
fn api_ports(
    api_port: u16,
    apiserver_port: Option<u16>,
    balancer: bool,
) -> Result<u16, ConfigError> {
    if api_port == 0 {
        return Err(invalid("kubernetes.api_port", "must not be 0"));
    }
    match (balancer, apiserver_port) {
        (_, Some(0)) => Err(invalid("kubernetes.apiserver_port", "must not be 0")),
        (true, Some(p)) if p == api_port => Err(invalid(
            "kubernetes.apiserver_port",
            format!(
                "{p} equals kubernetes.api_port: with the balancer on, the agent's balancer \
                 listens on api_port on every master, so the API servers need another port \
                 (default {DEFAULT_APISERVER_PORT}); or set [balancer] enabled = false"
            ),
        )),
        (true, Some(p)) => Ok(p),
        (true, None) if api_port == DEFAULT_APISERVER_PORT => Err(invalid(
            "kubernetes.apiserver_port",
            format!(
                "kubernetes.api_port is {api_port}, the API servers' default port with the \
                 balancer on: set apiserver_port to another port"
            ),
        )),
        (true, None) => Ok(DEFAULT_APISERVER_PORT),
        (false, Some(p)) if p != api_port => Err(invalid(
            "kubernetes.apiserver_port",
            format!(
                "{p} differs from kubernetes.api_port {api_port} with the balancer off: \
                 nothing would serve the VIP's port (turn [balancer] enabled on, or drop \
                 apiserver_port)"
            ),
        )),
        (false, _) => Ok(api_port),
    }
}

/// Whether `name` looks like a kubeadm preflight check name (`NumCPU`,
/// `Port-6443`, `FileAvailable--etc-kubernetes-manifests-kube-apiserver.yaml`,
/// `all`): non-empty, a letter first, then ASCII letters, digits, `-`, `.`
/// or `_`. kubeadm itself accepts any string; this refuses typos such as
/// `"NumCPU,Mem"` (one entry) or an empty one.
pub fn is_preflight_check_name(name: &str) -> bool {
    name.len() <= 253
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
}

/// Derives the default VRRP virtual router id (1..=255) from the cluster
/// name, so two clusters on one segment differ by default. FNV-1a by hand:
/// eight lines, no crate needed, and stable across releases (unlike std's
/// `DefaultHasher`).
pub fn derive_router_id(name: &str) -> u8 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in name.bytes() {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    // 1..=255: 0 is not a valid router id.
    (hash % 255) as u8 + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn master() -> ClusterSpec {
        ClusterSpec {
            role: Some(Role::Master),
            ..Default::default()
        }
    }

    #[test]
    fn defaults_validate() {
        let c = master().validate().unwrap();
        assert_eq!(c.name, "kubeboot");
        assert_eq!(c.masters, 3);
        assert_eq!(c.discovery.port, DEFAULT_DISCOVERY_PORT);
        assert_eq!(c.vrrp.router_id, derive_router_id("kubeboot"));
        assert!(c.vrrp.preempt);
        assert!(c.secret.is_none());
    }

    #[test]
    fn port_plan_follows_the_balancer_switch() {
        let read = |t: &str| {
            ClusterSpec::from_toml("c", t)
                .unwrap()
                .merge(&master())
                .validate()
        };
        // Default: the balancer on VIP:6443 (every master), API servers on 6444.
        let c = read("").unwrap();
        assert!(c.balancer.enabled);
        assert_eq!(c.balancer.drain_timeout_ms, 5000);
        assert_eq!(
            (c.kubernetes.api_port, c.kubernetes.apiserver_port),
            (6443, 6444)
        );
        let c = read(
            "[kubernetes]
api_port = 443
apiserver_port = 7443
[balancer]
drain_timeout_ms = 0
",
        )
        .unwrap();
        assert_eq!(
            (c.kubernetes.api_port, c.kubernetes.apiserver_port),
            (443, 7443)
        );
        assert_eq!(c.balancer.drain_timeout_ms, 0);
        // Off: the API servers serve the public port themselves (as before).
        let c = read(
            "[balancer]
enabled = false
",
        )
        .unwrap();
        assert!(!c.balancer.enabled);
        assert_eq!(
            (c.kubernetes.api_port, c.kubernetes.apiserver_port),
            (6443, 6443)
        );
        let c = read(
            "[kubernetes]
api_port = 443
apiserver_port = 443
[balancer]
enabled = false
",
        )
        .unwrap();
        assert_eq!(c.kubernetes.apiserver_port, 443);
        for (bad, key) in [
            (
                "[kubernetes]
apiserver_port = 6443
",
                "kubernetes.apiserver_port",
            ),
            (
                "[kubernetes]
apiserver_port = 0
",
                "kubernetes.apiserver_port",
            ),
            (
                "[kubernetes]
api_port = 0
",
                "kubernetes.api_port",
            ),
            (
                "[kubernetes]
api_port = 6444
",
                "kubernetes.apiserver_port",
            ),
            (
                "[kubernetes]
apiserver_port = 6444
[balancer]
enabled = false
",
                "kubernetes.apiserver_port",
            ),
            (
                "[balancer]
drain_timeout_ms = 60001
",
                "balancer.drain_timeout_ms",
            ),
        ] {
            match read(bad) {
                Err(ConfigError::Invalid { key: k, .. }) => assert_eq!(k, key, "{bad}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
        // api_port 6444 is fine with another apiserver_port.
        assert_eq!(
            read(
                "[kubernetes]
api_port = 6444
apiserver_port = 6445
"
            )
            .unwrap()
            .kubernetes
            .apiserver_port,
            6445
        );
        // A later layer turns the balancer off and keeps the rest.
        let base = ClusterSpec::from_toml(
            "image",
            "[balancer]
drain_timeout_ms = 2000
",
        )
        .unwrap();
        let over = ClusterSpec::from_toml(
            "cred",
            "[balancer]
enabled = false
",
        )
        .unwrap();
        let m = base.merge(&over).merge(&master()).validate().unwrap();
        assert_eq!(
            (m.balancer.enabled, m.balancer.drain_timeout_ms),
            (false, 2000)
        );
        assert!(ClusterSpec::from_toml(
            "c",
            "[balancer]
enable = true
"
        )
        .is_err());
    }

    #[test]
    fn timing_for_slow_machines_is_validated() {
        let c = master().validate().unwrap();
        assert_eq!(
            (c.etcd.heartbeat_ms, c.etcd.election_timeout_ms),
            (100, 1000)
        );
        assert_eq!(
            (c.vrrp.proof_timeout_ms, c.vrrp.proof_lease_ms),
            (1000, 2000)
        );
        let read = |t: &str| {
            ClusterSpec::from_toml("c", t)
                .unwrap()
                .merge(&master())
                .validate()
        };
        let slow = read("[etcd]\nheartbeat_ms = 500\nelection_timeout_ms = 5000\n[vrrp]\nproof_timeout_ms = 10000\nproof_lease_ms = 20000\n").unwrap();
        assert_eq!(slow.etcd.election_timeout_ms, 5000);
        assert_eq!(slow.vrrp.proof_lease_ms, 20000);
        for (bad, key) in [
            ("[etcd]\nheartbeat_ms = 500\n", "etcd.election_timeout_ms"),
            ("[etcd]\nheartbeat_ms = 0\n", "etcd.election_timeout_ms"),
            (
                "[etcd]\nelection_timeout_ms = 60000\n",
                "etcd.election_timeout_ms",
            ),
            ("[vrrp]\nproof_timeout_ms = 2000\n", "vrrp.proof_lease_ms"),
            ("[vrrp]\nproof_timeout_ms = 0\n", "vrrp.proof_timeout_ms"),
        ] {
            match read(bad) {
                Err(ConfigError::Invalid { key: k, .. }) => assert_eq!(k, key, "{bad}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
    }

    #[test]
    fn snapshot_settings_default_merge_and_validate() {
        let c = master().validate().unwrap();
        assert_eq!(
            (c.etcd.snapshot_interval_s, c.etcd.snapshot_retain),
            (
                DEFAULT_ETCD_SNAPSHOT_INTERVAL_S,
                DEFAULT_ETCD_SNAPSHOT_RETAIN
            )
        );
        assert_eq!(c.etcd.snapshot_interval_s, 21600);
        let read = |t: &str| {
            ClusterSpec::from_toml("c", t)
                .unwrap()
                .merge(&master())
                .validate()
        };
        // 0 disables the periodic snapshots; 60 s is the shortest interval.
        let off = read("[etcd]\nsnapshot_interval_s = 0\n").unwrap();
        assert_eq!(off.etcd.snapshot_interval_s, 0);
        let set = read("[etcd]\nsnapshot_interval_s = 60\nsnapshot_retain = 1\n").unwrap();
        assert_eq!(
            (set.etcd.snapshot_interval_s, set.etcd.snapshot_retain),
            (60, 1)
        );
        // A snapshot to bootstrap from: an absolute path, none by default.
        assert_eq!(c.etcd.restore_from, None);
        let restore = read("[etcd]\nrestore_from = \"/srv/old.db\"\n").unwrap();
        assert_eq!(
            restore.etcd.restore_from.as_deref(),
            Some(std::path::Path::new("/srv/old.db"))
        );
        // A higher-precedence fragment overrides one key, keeps the other.
        let base = ClusterSpec::from_toml("image", "[etcd]\nsnapshot_retain = 3\n")
            .unwrap()
            .merge(&master());
        let merged =
            ClusterSpec::from_toml("credential", "[etcd]\nsnapshot_interval_s = 3600\n").unwrap();
        let both = base.merge(&merged).validate().unwrap();
        assert_eq!(
            (both.etcd.snapshot_interval_s, both.etcd.snapshot_retain),
            (3600, 3)
        );
        for (bad, key) in [
            (
                "[etcd]\nsnapshot_interval_s = 59\n",
                "etcd.snapshot_interval_s",
            ),
            (
                "[etcd]\nsnapshot_interval_s = 1\n",
                "etcd.snapshot_interval_s",
            ),
            ("[etcd]\nsnapshot_retain = 0\n", "etcd.snapshot_retain"),
            ("[etcd]\nrestore_from = \"snap.db\"\n", "etcd.restore_from"),
        ] {
            match read(bad) {
                Err(ConfigError::Invalid { key: k, .. }) => assert_eq!(k, key, "{bad}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
    }

    #[test]
    fn even_masters_refused_unless_forced() {
        let mut s = master();
        s.masters = Some(4);
        let err = s.validate().unwrap_err();
        assert!(matches!(
            err,
            ConfigError::Invalid {
                key: "cluster.masters",
                ..
            }
        ));
        s.allow_even_masters = Some(true);
        assert_eq!(s.validate().unwrap().masters, 4);
    }

    #[test]
    fn unknown_key_names_line_and_key() {
        let err = ClusterSpec::from_toml("p.toml", "role = \"master\"\nmastrs = 3\n").unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("p.toml:"), "{text}");
        assert!(text.contains("mastrs"), "{text}");
        assert!(text.contains("line 2"), "{text}");
    }

    #[test]
    fn merge_overrides_only_set_fields() {
        let base = ClusterSpec::from_toml(
            "base",
            "name = \"a\"\nrole = \"master\"\n[vrrp]\npriority = 50\ninterval_cs = 30\n",
        )
        .unwrap();
        let over = ClusterSpec::from_toml("over", "[vrrp]\npriority = 120\n").unwrap();
        let c = base.merge(&over).validate().unwrap();
        assert_eq!(c.name, "a");
        assert_eq!(c.vrrp.priority, 120);
        assert_eq!(c.vrrp.interval_cs, 30);
    }

    #[test]
    fn vip_outside_network_refused() {
        let s = ClusterSpec::from_toml(
            "x",
            "role = \"master\"\n[network]\ncidr = \"10.0.0.0/24\"\nvip = \"10.0.1.5/24\"\n",
        )
        .unwrap();
        assert!(matches!(
            s.validate().unwrap_err(),
            ConfigError::Invalid {
                key: "network.vip",
                ..
            }
        ));
    }

    #[test]
    fn short_secret_refused_and_debug_redacted() {
        assert!(ClusterSecret::new("short").is_err());
        let s = ClusterSecret::new("0123456789abcdef-long-enough").unwrap();
        assert!(!format!("{s:?}").contains("0123"));
    }

    #[test]
    fn missing_role_names_key() {
        let err = ClusterSpec::default().validate().unwrap_err();
        assert!(matches!(
            err,
            ConfigError::Invalid {
                key: "cluster.role",
                ..
            }
        ));
    }

    #[test]
    fn round_trips_through_toml() {
        let s = ClusterSpec::from_toml(
            "x",
            "name = \"c1\"\nrole = \"worker\"\n[network]\nvip = \"10.77.0.10/24\"\n",
        )
        .unwrap();
        let again = ClusterSpec::from_toml("y", &s.to_toml()).unwrap();
        assert_eq!(s, again);
    }

    #[test]
    fn control_plane_args_default_empty_parse_and_are_validated() {
        let parse = |k: &str| {
            ClusterSpec::from_toml("t", &format!("role = \"master\"\n{k}\n"))
                .unwrap()
                .validate()
        };
        let d = parse("").unwrap();
        assert!(d.kubernetes.apiserver_args.is_empty());
        assert!(d.kubernetes.controller_manager_args.is_empty());
        assert!(d.kubernetes.scheduler_args.is_empty());
        // Sub-tables first, then [kubernetes]: the shape of
        // qemu-tests/tcg-timing.toml followed by a test's own keys.
        let c = parse(
            "[kubernetes.controller_manager_args]\nleader-elect-lease-duration = \"60s\"\n\
             [kubernetes.scheduler_args]\nleader-elect-renew-deadline = \"40s\"\n\
             [kubernetes]\ncni = \"host-gw\"\napiserver_args = { v = \"2\" }\n",
        )
        .unwrap();
        assert_eq!(
            c.kubernetes.controller_manager_args["leader-elect-lease-duration"],
            "60s"
        );
        assert_eq!(
            c.kubernetes.scheduler_args["leader-elect-renew-deadline"],
            "40s"
        );
        assert_eq!(c.kubernetes.apiserver_args["v"], "2");
        assert_eq!(d.kubernetes.proof_timeout_s, DEFAULT_KUBE_PROOF_TIMEOUT_S);
        assert_eq!(
            parse("[kubernetes]\nproof_timeout_s = 900")
                .unwrap()
                .kubernetes
                .proof_timeout_s,
            900
        );
        for bad in ["0", "9", "3601"] {
            let e = parse(&format!("[kubernetes]\nproof_timeout_s = {bad}")).unwrap_err();
            assert!(
                matches!(
                    &e,
                    ConfigError::Invalid {
                        key: "kubernetes.proof_timeout_s",
                        ..
                    }
                ),
                "{bad}: {e}"
            );
        }
        for (key, bad) in [
            (
                "kubernetes.apiserver_args",
                "apiserver_args = { \"--v\" = \"2\" }",
            ),
            (
                "kubernetes.scheduler_args",
                "scheduler_args = { Bad = \"1\" }",
            ),
            (
                "kubernetes.controller_manager_args",
                "controller_manager_args = { x = \"a\\nb\" }",
            ),
        ] {
            let e = parse(&format!("[kubernetes]\n{bad}")).unwrap_err();
            assert!(
                matches!(&e, ConfigError::Invalid { key: k, .. } if *k == key),
                "{bad}: {e}"
            );
        }
        // A later layer replaces a map as a whole.
        let base = ClusterSpec::from_toml(
            "base",
            "role = \"master\"\n[kubernetes.scheduler_args]\na = \"1\"\n",
        )
        .unwrap();
        let over =
            ClusterSpec::from_toml("over", "[kubernetes.scheduler_args]\nb = \"2\"\n").unwrap();
        let merged = base.merge(&over).validate().unwrap();
        assert_eq!(
            merged.kubernetes.scheduler_args,
            BTreeMap::from([("b".to_owned(), "2".to_owned())])
        );
    }

    #[test]
    fn ignore_preflight_errors_default_empty_and_validated() {
        let parse = |k: &str| {
            ClusterSpec::from_toml("t", &format!("role = \"master\"\n[kubernetes]\n{k}\n"))
                .unwrap()
                .validate()
        };
        assert!(parse("")
            .unwrap()
            .kubernetes
            .ignore_preflight_errors
            .is_empty());
        let c = parse("ignore_preflight_errors = [\"NumCPU\", \"Mem\", \"Port-6443\", \"FileAvailable--etc-kubernetes-manifests-kube-apiserver.yaml\", \"all\"]").unwrap();
        assert_eq!(c.kubernetes.ignore_preflight_errors.len(), 5);
        assert_eq!(c.kubernetes.ignore_preflight_errors[0], "NumCPU");
        for bad in [
            "\"\"",
            "\"NumCPU,Mem\"",
            "\"Num CPU\"",
            "\"-x\"",
            "\"1abc\"",
        ] {
            let e = parse(&format!("ignore_preflight_errors = [{bad}]")).unwrap_err();
            assert!(
                matches!(
                    e,
                    ConfigError::Invalid {
                        key: "kubernetes.ignore_preflight_errors",
                        ..
                    }
                ),
                "{bad}: {e}"
            );
        }
        // A per-node override replaces the list.
        let base = ClusterSpec::from_toml(
            "b",
            "[kubernetes]\nignore_preflight_errors = [\"NumCPU\"]\n",
        )
        .unwrap();
        let over =
            ClusterSpec::from_toml("o", "[kubernetes]\nignore_preflight_errors = [\"Mem\"]\n")
                .unwrap();
        assert_eq!(
            base.merge(&over).kubernetes.ignore_preflight_errors,
            Some(vec!["Mem".to_owned()])
        );
    }

    #[test]
    fn cni_and_skip_addons_default_and_parse() {
        let parse = |k: &str| {
            ClusterSpec::from_toml("t", &format!("role = \"master\"\n[kubernetes]\n{k}\n"))
                .map(|s| s.validate())
        };
        let d = parse("").unwrap().unwrap();
        assert_eq!(d.kubernetes.cni, CniMode::Auto);
        assert!(d.kubernetes.skip_addons.is_empty());
        for (text, want) in [
            ("auto", CniMode::Auto),
            ("host-gw", CniMode::HostGw),
            ("none", CniMode::Off),
        ] {
            let c = parse(&format!("cni = \"{text}\"")).unwrap().unwrap();
            assert_eq!(c.kubernetes.cni, want);
            assert_eq!(want.to_string(), text);
        }
        assert!(parse("cni = \"flannel\"").is_err());
        assert!(parse("cni = \"Off\"").is_err());
        let c = parse("skip_addons = [\"kube-proxy\", \"coredns\", \"kube-proxy\"]")
            .unwrap()
            .unwrap();
        assert_eq!(
            c.kubernetes.skip_addons,
            vec![Addon::CoreDns, Addon::KubeProxy]
        );
        assert_eq!(
            c.kubernetes
                .skip_addons
                .iter()
                .map(|a| a.init_phase())
                .collect::<Vec<_>>(),
            vec!["addon/coredns", "addon/kube-proxy"]
        );
        let e = parse("skip_addons = [\"dns\"]").unwrap_err();
        assert!(e.to_string().contains("dns"), "{e}");
        // A per-node layer overrides both.
        let base = ClusterSpec::from_toml(
            "b",
            "[kubernetes]\ncni = \"host-gw\"\nskip_addons = [\"coredns\"]\n",
        )
        .unwrap();
        let over = ClusterSpec::from_toml("o", "[kubernetes]\ncni = \"none\"\n").unwrap();
        let m = base.merge(&over);
        assert_eq!(m.kubernetes.cni, Some(CniMode::Off));
        assert_eq!(m.kubernetes.skip_addons, Some(vec![Addon::CoreDns]));
        assert_eq!(ClusterSpec::from_toml("x", &m.to_toml()).unwrap(), m);
    }

    #[test]
    fn router_id_in_range() {
        for name in ["a", "kubeboot", "prod-eu-1", ""] {
            let id = derive_router_id(name);
            assert!(id >= 1);
        }
    }

    /// `[kubernetes.patches]` takes tables for the three control-plane
    /// components and refuses any other target, naming it.
    #[test]
    fn static_pod_patches_parse_and_refuse_unknown_components() {
        let parse = |k: &str| {
            ClusterSpec::from_toml("t", &format!("role = \"master\"\n{k}\n"))
                .unwrap()
                .validate()
        };
        assert!(parse("").unwrap().kubernetes.patches.is_empty());
        let c = parse(
            "[kubernetes.patches.kube-scheduler.spec]\npriority = 5\n\
             [kubernetes.patches.kube-apiserver.metadata]\nlabels = { a = \"b\" }\n",
        )
        .unwrap();
        let targets: Vec<&str> = c.kubernetes.patches.keys().map(String::as_str).collect();
        assert_eq!(targets, ["kube-apiserver", "kube-scheduler"]);
        assert_eq!(
            c.kubernetes.patches["kube-scheduler"]["spec"]["priority"].as_integer(),
            Some(5)
        );
        let e = parse("[kubernetes.patches.etcd.spec]\npriority = 5\n").unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("kubernetes.patches") && text.contains("\"etcd\""),
            "{text}"
        );
    }
}
