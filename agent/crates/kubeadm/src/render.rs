//! Renders the kubeadm configuration file for each role (pure).
//!
//! - init master: `InitConfiguration` + `ClusterConfiguration` +
//!   `KubeletConfiguration` (kubeadm uploads the last two for joiners);
//! - joining master: `JoinConfiguration` with `controlPlane`;
//! - worker: `JoinConfiguration` without it.
//!
//! The paths inside the documents are the node's real paths
//! ([`crate::paths::Paths`] maps them under a test root for file
//! placement only), so the rendered text is the same in tests and on a
//! node, and the golden files in `test_data/` are exactly what kubeadm
//! reads.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use cluster_config::{Addon, ClusterConfig, CniMode};
use ipnet::Ipv4Net;
use serde::Serialize;
use thiserror::Error;

use crate::api::*;
use crate::paths::{
    config_path, standard, APISERVER_ETCD_CLIENT_CRT, APISERVER_ETCD_CLIENT_KEY, ETCD_CA_CRT,
    PKI_DIR, VOLUME_PLUGIN_DIR,
};
use crate::pin::CaPin;
use crate::token::{go_duration, BootstrapToken, TOKEN_DESCRIPTION};

/// containerd's CRI socket (Debian's containerd default address).
pub const CRI_SOCKET: &str = "unix:///run/containerd/containerd.sock";
/// The kubelet cgroup driver; containerd runs with `SystemdCgroup = true`.
pub const CGROUP_DRIVER: &str = "systemd";
/// The group kubeadm's join RBAC is bound to.
pub const BOOTSTRAP_GROUP: &str = "system:bootstrappers:kubeadm:default-node-token";
/// How long kubeadm waits for the control plane to come up. Generous:
/// under QEMU's TCG emulation the API server takes minutes to start.
pub const CONTROL_PLANE_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// How long a joining kubeadm retries discovery through the VIP before it
/// gives up (and the agent's backoff takes over).
pub const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// Errors from rendering.
#[derive(Debug, Error)]
pub enum RenderError {
    /// An input is missing or inconsistent.
    #[error("kubeadm configuration: {0}")]
    Input(String),
    /// YAML serialisation failed.
    #[error("serialising the kubeadm {kind}: {reason}")]
    Yaml {
        /// The document kind.
        kind: &'static str,
        /// The serialiser's message.
        reason: String,
    },
}

/// Everything the configuration depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeadmInputs {
    /// Cluster name (`clusterName`).
    pub cluster_name: String,
    /// `kubernetesVersion` (from the image's record); it also picks the
    /// configuration API ([`ConfigApi::for_version`]).
    pub kubernetes_version: Option<String>,
    /// This node's name.
    pub node_name: String,
    /// This node's cluster address.
    pub node_ip: Ipv4Addr,
    /// The API VIP.
    pub vip: Ipv4Addr,
    /// The public API port: `controlPlaneEndpoint` is `vip:api_port`
    /// (every kubeconfig and join). With the agent's balancer on, the
    /// balancer listens on it on every master.
    pub api_port: u16,
    /// The port this master's kube-apiserver binds
    /// (`localAPIEndpoint.bindPort`, and so the `kubernetes` service's
    /// endpoints): `[kubernetes] apiserver_port`, equal to `api_port` with
    /// the balancer off.
    pub apiserver_port: u16,
    /// Every master's cluster address (certificate SANs).
    pub master_ips: Vec<Ipv4Addr>,
    /// etcd client URLs (`https://ip:2379`).
    pub etcd_endpoints: Vec<String>,
    /// Pod network.
    pub pod_subnet: Ipv4Net,
    /// Service network.
    pub service_subnet: Ipv4Net,
    /// The derived bootstrap token.
    pub token: BootstrapToken,
    /// Its lifetime at init.
    pub token_ttl: Duration,
    /// The Kubernetes CA pin.
    pub ca_pin: CaPin,
    /// Preflight checks to ignore (for example `NumCPU` on small VMs).
    pub ignore_preflight_errors: Vec<String>,
    /// `imagePullPolicy`: `Some("Never")` when the images come from the
    /// image's archive (air-gapped), `None` for kubeadm's default.
    pub image_pull_policy: Option<String>,
    /// kubeadm add-ons not to install (`skipPhases` of `kubeadm init`).
    pub skip_addons: Vec<Addon>,
    /// The pod network (not a kubeadm setting: which CNI the kube phase
    /// sets up once the node is ready).
    pub cni: CniMode,
    /// Extra flags of the control-plane components (`[kubernetes]
    /// apiserver_args`, `controller_manager_args`, `scheduler_args`).
    pub control_plane_args: ControlPlaneArgs,
    /// Strategic-merge patches of the control-plane static pods
    /// (`[kubernetes.patches]`), component to the patch as JSON.
    pub patches: BTreeMap<String, String>,
}

/// Where the agent writes `[kubernetes.patches]` for kubeadm
/// (`patches.directory`), one `<component>+strategic.json` file each.
pub const PATCHES_DIR: &str = "patches";

/// A patch file: its name in [`PATCHES_DIR`] and its contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatchFile {
    /// `<component>+strategic.json`.
    pub name: String,
    /// The patch (JSON, which kubeadm reads as YAML).
    pub contents: String,
}

/// Extra flags of the control-plane components, flag name (without `--`)
/// to value, appended after the agent's own, so a name given here
/// overrides the agent's value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ControlPlaneArgs {
    /// kube-apiserver.
    pub apiserver: BTreeMap<String, String>,
    /// kube-controller-manager.
    pub controller_manager: BTreeMap<String, String>,
    /// kube-scheduler.
    pub scheduler: BTreeMap<String, String>,
}

/// `extraArgs` entries of a flag map, in name order.
fn args(map: &BTreeMap<String, String>) -> impl Iterator<Item = Arg> + '_ {
    map.iter().map(|(name, value)| Arg {
        name: name.clone(),
        value: value.clone(),
    })
}

impl KubeadmInputs {
    /// Fills the cluster-wide fields from the validated configuration;
    /// the caller supplies what it learnt at run time.
    #[allow(clippy::too_many_arguments)]
    pub fn from_cluster(
        cfg: &ClusterConfig,
        kubernetes_version: Option<String>,
        node_name: &str,
        node_ip: Ipv4Addr,
        master_ips: Vec<Ipv4Addr>,
        etcd_endpoints: Vec<String>,
        token: BootstrapToken,
        ca_pin: CaPin,
    ) -> Result<Self, RenderError> {
        let vip = cfg
            .network
            .vip
            .ok_or_else(|| {
                RenderError::Input(
                    "network.vip is not set: kubeadm needs the VIP as its controlPlaneEndpoint"
                        .into(),
                )
            })?
            .addr();
        Ok(Self {
            cluster_name: cfg.name.clone(),
            kubernetes_version,
            node_name: node_name.to_owned(),
            node_ip,
            vip,
            api_port: cfg.kubernetes.api_port,
            apiserver_port: cfg.kubernetes.apiserver_port,
            master_ips,
            etcd_endpoints,
            pod_subnet: cfg.kubernetes.pod_subnet,
            service_subnet: cfg.kubernetes.service_subnet,
            token,
            token_ttl: crate::token::DEFAULT_TOKEN_TTL,
            ca_pin,
            ignore_preflight_errors: cfg.kubernetes.ignore_preflight_errors.clone(),
            image_pull_policy: None,
            skip_addons: cfg.kubernetes.skip_addons.clone(),
            cni: cfg.kubernetes.cni,
            control_plane_args: ControlPlaneArgs {
                apiserver: cfg.kubernetes.apiserver_args.clone(),
                controller_manager: cfg.kubernetes.controller_manager_args.clone(),
                scheduler: cfg.kubernetes.scheduler_args.clone(),
            },
            patches: cfg
                .kubernetes
                .patches
                .iter()
                .map(|(target, patch)| {
                    serde_json::to_string(patch)
                        .map(|json| (target.clone(), json))
                        .map_err(|e| {
                            RenderError::Input(format!(
                                "kubernetes.patches.{target}: not expressible as JSON: {e}"
                            ))
                        })
                })
                .collect::<Result<_, _>>()?,
        })
    }

    /// `VIP:port`.
    pub fn control_plane_endpoint(&self) -> String {
        format!("{}:{}", self.vip, self.api_port)
    }

    /// The API server certificate's extra SANs: the VIP, every master
    /// (sorted), and the loopback names the VIP's `/readyz` check uses.
    pub fn cert_sans(&self) -> Vec<String> {
        let mut masters = self.master_ips.clone();
        if !masters.contains(&self.node_ip) {
            masters.push(self.node_ip);
        }
        masters.sort();
        masters.dedup();
        let mut sans = vec![self.vip.to_string()];
        sans.extend(
            masters
                .iter()
                .filter(|ip| **ip != self.vip)
                .map(|ip| ip.to_string()),
        );
        sans.push("127.0.0.1".to_owned());
        sans.push("localhost".to_owned());
        sans
    }

    fn check(&self) -> Result<(), RenderError> {
        if self.node_name.is_empty() {
            return Err(RenderError::Input("the node name is empty".into()));
        }
        if self.etcd_endpoints.is_empty() {
            return Err(RenderError::Input(
                "no etcd endpoints: the external etcd needs at least one".into(),
            ));
        }
        if let Some(bad) = self
            .etcd_endpoints
            .iter()
            .find(|e| !e.starts_with("https://"))
        {
            return Err(RenderError::Input(format!(
                "etcd endpoint {bad:?} is not https://"
            )));
        }
        Ok(())
    }

    fn node_registration(&self) -> NodeRegistration {
        NodeRegistration {
            name: self.node_name.clone(),
            cri_socket: CRI_SOCKET.to_owned(),
            taints: None,
            kubelet_extra_args: vec![Arg {
                name: "node-ip".to_owned(),
                value: self.node_ip.to_string(),
            }],
            ignore_preflight_errors: self.ignore_preflight_errors.clone(),
            image_pull_policy: self.image_pull_policy.clone(),
        }
    }

    fn local_endpoint(&self) -> ApiEndpoint {
        ApiEndpoint {
            advertise_address: self.node_ip.to_string(),
            bind_port: self.apiserver_port,
        }
    }

    fn discovery(&self) -> Discovery {
        Discovery {
            bootstrap_token: BootstrapTokenDiscovery {
                api_server_endpoint: self.control_plane_endpoint(),
                token: self.token.expose(),
                ca_cert_hashes: vec![self.ca_pin.as_str().to_owned()],
            },
        }
    }

    /// `control_plane`: wait longer for the local control plane;
    /// `join`: wait longer for discovery (a node may boot well before the
    /// init node's API server answers on the VIP).
    fn timeouts(&self, control_plane: bool, join: bool) -> Timeouts {
        Timeouts {
            control_plane_component_health_check: control_plane
                .then(|| go_duration(CONTROL_PLANE_TIMEOUT)),
            kubelet_health_check: None,
            discovery: join.then(|| go_duration(DISCOVERY_TIMEOUT)),
            tls_bootstrap: None,
        }
    }

    /// `patches.directory`, when there are patches.
    fn patches_dir(&self) -> Option<Patches> {
        (!self.patches.is_empty()).then(|| Patches {
            directory: config_path(PATCHES_DIR),
        })
    }

    /// The patch files kubeadm reads from [`PATCHES_DIR`] (none for a
    /// worker: kubeadm writes no static pod there).
    pub fn patch_files(&self) -> Vec<PatchFile> {
        self.patches
            .iter()
            .map(|(target, json)| PatchFile {
                name: format!("{target}+strategic.json"),
                contents: json.clone(),
            })
            .collect()
    }

    /// The `InitConfiguration` of the init node.
    pub fn init_configuration(&self) -> InitConfiguration {
        InitConfiguration {
            api_version: KUBEADM_API_VERSION.to_owned(),
            kind: "InitConfiguration".to_owned(),
            bootstrap_tokens: vec![crate::api::BootstrapToken {
                token: self.token.expose(),
                description: Some(TOKEN_DESCRIPTION.to_owned()),
                ttl: Some(go_duration(self.token_ttl)),
                usages: vec!["signing".to_owned(), "authentication".to_owned()],
                groups: vec![BOOTSTRAP_GROUP.to_owned()],
            }],
            node_registration: self.node_registration(),
            local_api_endpoint: self.local_endpoint(),
            skip_phases: self
                .skip_addons
                .iter()
                .map(|a| a.init_phase().to_owned())
                .collect(),
            patches: self.patches_dir(),
            timeouts: Some(self.timeouts(true, false)),
        }
    }

    /// The `ClusterConfiguration` (init node only).
    pub fn cluster_configuration(&self) -> ClusterConfiguration {
        ClusterConfiguration {
            api_version: KUBEADM_API_VERSION.to_owned(),
            kind: "ClusterConfiguration".to_owned(),
            cluster_name: self.cluster_name.clone(),
            kubernetes_version: self.kubernetes_version.clone(),
            control_plane_endpoint: self.control_plane_endpoint(),
            certificates_dir: PKI_DIR.to_owned(),
            encryption_algorithm: Some("ECDSA-P256".to_owned()),
            networking: Networking {
                pod_subnet: self.pod_subnet.to_string(),
                service_subnet: self.service_subnet.to_string(),
                dns_domain: None,
            },
            etcd: Etcd {
                external: ExternalEtcd {
                    endpoints: self.etcd_endpoints.clone(),
                    ca_file: standard(ETCD_CA_CRT),
                    cert_file: standard(APISERVER_ETCD_CLIENT_CRT),
                    key_file: standard(APISERVER_ETCD_CLIENT_KEY),
                },
            },
            api_server: ApiServer {
                cert_sans: self.cert_sans(),
                extra_args: args(&self.control_plane_args.apiserver).collect(),
            },
            // kubeadm mounts this directory into the controller manager's
            // pod (creating it): the default under /usr is read-only.
            controller_manager: Some(ControlPlaneComponent {
                extra_args: std::iter::once(Arg {
                    name: "flex-volume-plugin-dir".to_owned(),
                    value: VOLUME_PLUGIN_DIR.to_owned(),
                })
                .chain(args(&self.control_plane_args.controller_manager))
                .collect(),
            }),
            scheduler: (!self.control_plane_args.scheduler.is_empty()).then(|| {
                ControlPlaneComponent {
                    extra_args: args(&self.control_plane_args.scheduler).collect(),
                }
            }),
        }
    }

    /// The `KubeletConfiguration` every kubelet of the cluster gets.
    /// `containerRuntimeEndpoint` exists only in kubelets from 1.27 on
    /// (older kubeadm warns `unknown field` and older kubelets take the
    /// socket from kubeadm's `--container-runtime-endpoint` flag, written
    /// from `nodeRegistration.criSocket`), so it is rendered only for
    /// those (and when the version is unknown: the newest API).
    pub fn kubelet_configuration(&self) -> Result<KubeletConfiguration, RenderError> {
        let endpoint = match &self.kubernetes_version {
            None => true,
            Some(v) => minor_version(v)? >= KUBELET_RUNTIME_ENDPOINT_SINCE,
        };
        Ok(KubeletConfiguration {
            api_version: KUBELET_API_VERSION.to_owned(),
            kind: "KubeletConfiguration".to_owned(),
            cgroup_driver: CGROUP_DRIVER.to_owned(),
            container_runtime_endpoint: endpoint.then(|| CRI_SOCKET.to_owned()),
            volume_plugin_dir: VOLUME_PLUGIN_DIR.to_owned(),
        })
    }

    /// The `JoinConfiguration` of a joining master (`control_plane`) or a
    /// worker.
    pub fn join_configuration(&self, control_plane: bool) -> JoinConfiguration {
        JoinConfiguration {
            api_version: KUBEADM_API_VERSION.to_owned(),
            kind: "JoinConfiguration".to_owned(),
            node_registration: self.node_registration(),
            discovery: self.discovery(),
            control_plane: control_plane.then(|| JoinControlPlane {
                local_api_endpoint: self.local_endpoint(),
            }),
            skip_phases: Vec::new(),
            patches: self.patches_dir().filter(|_| control_plane),
            timeouts: Some(self.timeouts(control_plane, true)),
        }
    }

    /// The kubeadm configuration API the target kubeadm reads, from
    /// `kubernetes_version` (v1beta4 when unknown).
    pub fn config_api(&self) -> Result<ConfigApi, RenderError> {
        match &self.kubernetes_version {
            None => Ok(ConfigApi::V1beta4),
            Some(v) => ConfigApi::for_version(v),
        }
    }

    /// The init node's configuration file.
    pub fn render_init(&self) -> Result<String, RenderError> {
        self.check()?;
        let api = self.config_api()?;
        let mut init = value("InitConfiguration", &self.init_configuration())?;
        let mut cluster = value("ClusterConfiguration", &self.cluster_configuration())?;
        if api == ConfigApi::V1beta3 {
            down_init(&mut init, &mut cluster);
        }
        join_docs(&[
            text("InitConfiguration", &init)?,
            text("ClusterConfiguration", &cluster)?,
            yaml("KubeletConfiguration", &self.kubelet_configuration()?)?,
        ])
    }

    /// A joining master's configuration file.
    pub fn render_join_control_plane(&self) -> Result<String, RenderError> {
        self.check()?;
        self.render_join(true)
    }

    /// A worker's configuration file (no etcd needed).
    pub fn render_join_worker(&self) -> Result<String, RenderError> {
        if self.node_name.is_empty() {
            return Err(RenderError::Input("the node name is empty".into()));
        }
        self.render_join(false)
    }

    fn render_join(&self, control_plane: bool) -> Result<String, RenderError> {
        let api = self.config_api()?;
        let mut join = value("JoinConfiguration", &self.join_configuration(control_plane))?;
        if api == ConfigApi::V1beta3 {
            down_join(&mut join);
        }
        join_docs(&[text("JoinConfiguration", &join)?])
    }
}

/// The kubeadm configuration API version to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigApi {
    /// `kubeadm.k8s.io/v1beta3`: kubeadm 1.22 to 1.30 (deprecated in
    /// 1.31, removed in 1.36).
    V1beta3,
    /// `kubeadm.k8s.io/v1beta4`: kubeadm 1.31 and later.
    V1beta4,
}

impl ConfigApi {
    /// The API a kubeadm of `version` (`v1.30.4`, `1.31.0`, `v1.32.0-rc.1`)
    /// reads; kubeadm older than 1.22 is refused.
    pub fn for_version(version: &str) -> Result<Self, RenderError> {
        match minor_version(version)? {
            m if m >= 31 => Ok(ConfigApi::V1beta4),
            m if m >= 22 => Ok(ConfigApi::V1beta3),
            _ => Err(RenderError::Input(format!(
                "Kubernetes {version} is too old: kubeadm before 1.22 reads neither v1beta3 nor v1beta4"
            ))),
        }
    }
}

/// The first kubelet whose `KubeletConfiguration` has
/// `containerRuntimeEndpoint` (1.27).
pub const KUBELET_RUNTIME_ENDPOINT_SINCE: u32 = 27;

/// The minor version of a Kubernetes `v1.MINOR.PATCH[-pre]` version.
pub fn minor_version(version: &str) -> Result<u32, RenderError> {
    let bad = || {
        RenderError::Input(format!(
            "Kubernetes version {version:?} is not of the form v1.MINOR.PATCH"
        ))
    };
    let v = version.strip_prefix('v').unwrap_or(version);
    let mut parts = v.split(['.', '-', '+']);
    let major: u32 = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
    let minor: u32 = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
    if major != 1 {
        return Err(bad());
    }
    Ok(minor)
}

const KUBEADM_V1BETA3: &str = "kubeadm.k8s.io/v1beta3";

fn key(k: &str) -> serde_yaml_ng::Value {
    serde_yaml_ng::Value::String(k.to_owned())
}

/// v1beta4 `[{name, value}]` → v1beta3 `{name: value}`.
fn args_to_map(list: &serde_yaml_ng::Value) -> serde_yaml_ng::Value {
    let mut map = serde_yaml_ng::Mapping::new();
    if let Some(items) = list.as_sequence() {
        for item in items {
            if let (Some(n), Some(v)) = (item.get("name"), item.get("value")) {
                map.insert(n.clone(), v.clone());
            }
        }
    }
    serde_yaml_ng::Value::Mapping(map)
}

fn down_node_registration(doc: &mut serde_yaml_ng::Value) {
    if let Some(nr) = doc
        .get_mut("nodeRegistration")
        .and_then(|v| v.as_mapping_mut())
    {
        if let Some(args) = nr.get("kubeletExtraArgs").map(args_to_map) {
            nr.insert(key("kubeletExtraArgs"), args);
        }
    }
}

fn set_api_version(doc: &mut serde_yaml_ng::Value) {
    if let Some(m) = doc.as_mapping_mut() {
        m.insert(key("apiVersion"), key(KUBEADM_V1BETA3));
    }
}

/// v1beta4 → v1beta3 for the init documents (the fields kubeboot writes):
/// `kubeletExtraArgs` as a map, no `encryptionAlgorithm` (v1beta3 has no
/// such field; kubeadm then makes RSA keys for the leaf certificates it
/// signs with the ECDSA CAs, which is fine), and the control-plane timeout
/// as `apiServer.timeoutForControlPlane` instead of `timeouts`.
fn down_init(init: &mut serde_yaml_ng::Value, cluster: &mut serde_yaml_ng::Value) {
    set_api_version(init);
    set_api_version(cluster);
    down_node_registration(init);
    let timeout = init
        .as_mapping_mut()
        .and_then(|m| m.shift_remove("timeouts"))
        .and_then(|t| t.get("controlPlaneComponentHealthCheck").cloned());
    if let Some(m) = cluster.as_mapping_mut() {
        m.shift_remove("encryptionAlgorithm");
    }
    for component in ["apiServer", "controllerManager", "scheduler"] {
        if let Some(c) = cluster.get_mut(component).and_then(|c| c.as_mapping_mut()) {
            if let Some(args) = c.get("extraArgs").map(args_to_map) {
                c.insert(key("extraArgs"), args);
            }
        }
    }
    if let (Some(t), Some(api)) = (
        timeout,
        cluster
            .get_mut("apiServer")
            .and_then(|a| a.as_mapping_mut()),
    ) {
        api.insert(key("timeoutForControlPlane"), t);
    }
}

/// v1beta4 → v1beta3 for a join document: `kubeletExtraArgs` as a map and
/// the discovery timeout as `discovery.timeout` (v1beta3 has no
/// `timeouts`; the control-plane wait of a joining master comes from the
/// cluster's `timeoutForControlPlane`).
fn down_join(join: &mut serde_yaml_ng::Value) {
    set_api_version(join);
    down_node_registration(join);
    let discovery_timeout = join
        .as_mapping_mut()
        .and_then(|m| m.shift_remove("timeouts"))
        .and_then(|t| t.get("discovery").cloned());
    if let (Some(t), Some(d)) = (
        discovery_timeout,
        join.get_mut("discovery").and_then(|d| d.as_mapping_mut()),
    ) {
        d.insert(key("timeout"), t);
    }
}

fn value<T: Serialize>(kind: &'static str, doc: &T) -> Result<serde_yaml_ng::Value, RenderError> {
    serde_yaml_ng::to_value(doc).map_err(|e| RenderError::Yaml {
        kind,
        reason: e.to_string(),
    })
}

fn text(kind: &'static str, doc: &serde_yaml_ng::Value) -> Result<String, RenderError> {
    yaml(kind, doc)
}

/// First line of every rendered file.
pub const HEADER: &str =
    "# Written by the kubeboot agent (kubeadm crate); regenerated on every attempt.\n";

fn yaml<T: Serialize>(kind: &'static str, doc: &T) -> Result<String, RenderError> {
    serde_yaml_ng::to_string(doc).map_err(|e| RenderError::Yaml {
        kind,
        reason: e.to_string(),
    })
}

fn join_docs(docs: &[String]) -> Result<String, RenderError> {
    let mut out = String::from(HEADER);
    for (i, d) in docs.iter().enumerate() {
        if i > 0 {
            out.push_str("---\n");
        }
        out.push_str(d);
    }
    Ok(out)
}

/// Splits a multi-document file into documents (for tests and checks).
pub fn split_docs(text: &str) -> Vec<String> {
    let mut docs = vec![String::new()];
    for line in text.lines() {
        if line == "---" {
            docs.push(String::new());
        } else if !line.starts_with('#') {
            if let Some(last) = docs.last_mut() {
                last.push_str(line);
                last.push('\n');
            }
        }
    }
    docs.retain(|d| !d.trim().is_empty());
    docs
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::path::PathBuf;

    /// Fixed inputs for the golden files: a 3-master cluster on
    /// 10.77.0.0/24 with the VIP at .10.
    pub(crate) fn inputs(node: u8) -> KubeadmInputs {
        KubeadmInputs {
            cluster_name: "kubeboot".into(),
            kubernetes_version: Some("v1.31.4".into()),
            node_name: format!("master-{node}"),
            node_ip: Ipv4Addr::new(10, 77, 0, 10 + node),
            vip: Ipv4Addr::new(10, 77, 0, 10),
            api_port: 6443,
            apiserver_port: 6444,
            master_ips: vec![
                Ipv4Addr::new(10, 77, 0, 13),
                Ipv4Addr::new(10, 77, 0, 11),
                Ipv4Addr::new(10, 77, 0, 12),
            ],
            etcd_endpoints: vec![
                "https://10.77.0.11:2379".into(),
                "https://10.77.0.12:2379".into(),
                "https://10.77.0.13:2379".into(),
            ],
            pod_subnet: "10.244.0.0/16".parse().unwrap(),
            service_subnet: "10.96.0.0/12".parse().unwrap(),
            token: BootstrapToken::parse("abcdef.0123456789abcdef", "test").unwrap(),
            token_ttl: crate::token::DEFAULT_TOKEN_TTL,
            ca_pin: CaPin::parse(&format!("sha256:{}", "0123456789abcdef".repeat(4)), "test")
                .unwrap(),
            ignore_preflight_errors: Vec::new(),
            image_pull_policy: Some("Never".into()),
            skip_addons: Vec::new(),
            cni: CniMode::Auto,
            control_plane_args: ControlPlaneArgs::default(),
            patches: BTreeMap::new(),
        }
    }

    pub(crate) fn golden_path(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("test_data")
            .join(name)
    }

    /// Compares with the golden file; `KUBEBOOT_UPDATE_GOLDEN=1` rewrites it.
    fn golden(name: &str, text: &str) {
        let path = golden_path(name);
        if std::env::var_os("KUBEBOOT_UPDATE_GOLDEN").is_some() {
            std::fs::write(&path, text).unwrap();
        }
        let want = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (run with KUBEBOOT_UPDATE_GOLDEN=1 to create it)",
                path.display()
            )
        });
        assert_eq!(text, want, "{} differs from the rendering", path.display());
    }

    #[test]
    fn init_master_matches_golden() {
        golden("init-master.yaml", &inputs(1).render_init().unwrap());
    }

    #[test]
    fn joining_master_matches_golden() {
        golden(
            "join-master.yaml",
            &inputs(2).render_join_control_plane().unwrap(),
        );
    }

    #[test]
    fn worker_matches_golden() {
        let mut w = inputs(0);
        w.node_name = "worker-1".into();
        w.node_ip = Ipv4Addr::new(10, 77, 0, 21);
        golden("join-worker.yaml", &w.render_join_worker().unwrap());
    }

    fn v1beta3(mut i: KubeadmInputs) -> KubeadmInputs {
        i.kubernetes_version = Some("v1.30.4".into());
        i
    }

    #[test]
    fn v1beta3_for_kubeadm_before_1_31_matches_golden() {
        golden(
            "init-master.v1beta3.yaml",
            &v1beta3(inputs(1)).render_init().unwrap(),
        );
        golden(
            "join-master.v1beta3.yaml",
            &v1beta3(inputs(2)).render_join_control_plane().unwrap(),
        );
        let mut w = v1beta3(inputs(0));
        w.node_name = "worker-1".into();
        w.node_ip = Ipv4Addr::new(10, 77, 0, 21);
        golden("join-worker.v1beta3.yaml", &w.render_join_worker().unwrap());
    }

    /// The Kubernetes built by hand for the QEMU test (upstream master of
    /// 2021-12-23): v1beta3, and a kubelet without
    /// `containerRuntimeEndpoint` (kubeadm 1.24 warned `unknown field`).
    #[test]
    fn kubeadm_1_24_matches_golden() {
        let v = |mut i: KubeadmInputs| {
            i.kubernetes_version = Some("v1.24.0-alpha.1".into());
            i
        };
        let init = v(inputs(1)).render_init().unwrap();
        assert!(!init.contains("containerRuntimeEndpoint"), "{init}");
        assert!(init.contains("criSocket: unix:///run/containerd/containerd.sock"));
        golden("init-master.v1.24.yaml", &init);
        // The join files carry no kubelet document: the same as 1.30's.
        assert_eq!(
            v(inputs(2)).render_join_control_plane().unwrap(),
            v1beta3(inputs(2)).render_join_control_plane().unwrap()
        );
    }

    #[test]
    fn container_runtime_endpoint_only_for_kubelets_that_know_it() {
        for (version, want) in [
            (Some("v1.22.0"), false),
            (Some("v1.24.0-alpha.1"), false),
            (Some("v1.26.15"), false),
            (Some("v1.27.0"), true),
            (Some("v1.30.4"), true),
            (Some("v1.31.4"), true),
            (None, true),
        ] {
            let mut i = inputs(1);
            i.kubernetes_version = version.map(str::to_owned);
            let k = i.kubelet_configuration().unwrap();
            assert_eq!(
                k.container_runtime_endpoint.as_deref(),
                want.then_some(CRI_SOCKET),
                "{version:?}"
            );
            // The CRI socket reaches kubeadm in every version.
            assert_eq!(
                i.init_configuration().node_registration.cri_socket,
                CRI_SOCKET
            );
        }
        let mut i = inputs(1);
        i.kubernetes_version = Some("v2.0.0".into());
        assert!(i.kubelet_configuration().is_err());
    }

    /// `[kubernetes] skip_addons` become `skipPhases` of the init (never of
    /// a join: joins run no add-on phase), in both API versions.
    #[test]
    fn skipped_addons_become_init_skip_phases() {
        for version in ["v1.24.0-alpha.1", "v1.30.4", "v1.31.4"] {
            let mut i = inputs(1);
            i.kubernetes_version = Some(version.into());
            i.skip_addons = vec![Addon::CoreDns, Addon::KubeProxy];
            let init = i.render_init().unwrap();
            let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&split_docs(&init)[0]).unwrap();
            assert_eq!(
                doc["skipPhases"],
                serde_yaml_ng::Value::Sequence(vec![
                    "addon/coredns".into(),
                    "addon/kube-proxy".into()
                ]),
                "{version}: {init}"
            );
            for join in [
                i.render_join_control_plane().unwrap(),
                i.render_join_worker().unwrap(),
            ] {
                assert!(!join.contains("skipPhases"), "{join}");
            }
        }
        assert!(!inputs(1).render_init().unwrap().contains("skipPhases"));
    }

    #[test]
    fn config_api_by_kubeadm_version() {
        for (v, want) in [
            ("v1.22.0", Some(ConfigApi::V1beta3)),
            ("v1.30.4", Some(ConfigApi::V1beta3)),
            ("1.30.4", Some(ConfigApi::V1beta3)),
            ("v1.31.0", Some(ConfigApi::V1beta4)),
            ("v1.35.0-rc.1", Some(ConfigApi::V1beta4)),
            ("v1.21.14", None),
            ("v2.0.0", None),
            ("latest", None),
            ("v1", None),
        ] {
            assert_eq!(ConfigApi::for_version(v).ok(), want, "{v}");
        }
        let mut i = inputs(1);
        i.kubernetes_version = Some("stable".into());
        assert!(matches!(i.render_init(), Err(RenderError::Input(_))));
    }

    #[test]
    fn init_parses_back_to_what_was_rendered() {
        let i = inputs(1);
        let docs = split_docs(&i.render_init().unwrap());
        assert_eq!(docs.len(), 3);
        let init: InitConfiguration = serde_yaml_ng::from_str(&docs[0]).unwrap();
        let cluster: ClusterConfiguration = serde_yaml_ng::from_str(&docs[1]).unwrap();
        let kubelet: KubeletConfiguration = serde_yaml_ng::from_str(&docs[2]).unwrap();
        assert_eq!(init, i.init_configuration());
        // The port plan: the public endpoint is the VIP's 6443 (the
        // balancer), the API server itself binds 6444.
        assert_eq!(cluster.control_plane_endpoint, "10.77.0.10:6443");
        assert_eq!(
            init.local_api_endpoint,
            ApiEndpoint {
                advertise_address: "10.77.0.11".into(),
                bind_port: 6444
            }
        );
        assert_eq!(
            cluster.etcd.external.cert_file,
            "/etc/kubernetes/pki/apiserver-etcd-client.crt"
        );
        assert_eq!(
            cluster.etcd.external.ca_file,
            "/etc/kubernetes/pki/etcd/ca.crt"
        );
        assert_eq!(
            cluster.api_server.cert_sans,
            vec![
                "10.77.0.10",
                "10.77.0.11",
                "10.77.0.12",
                "10.77.0.13",
                "127.0.0.1",
                "localhost"
            ]
        );
        assert_eq!(kubelet.cgroup_driver, "systemd");
        assert_eq!(
            kubelet.container_runtime_endpoint.as_deref(),
            Some(CRI_SOCKET)
        );
        assert_eq!(init.node_registration.cri_socket, CRI_SOCKET);
        assert_eq!(init.bootstrap_tokens[0].token, "abcdef.0123456789abcdef");
        assert_eq!(init.bootstrap_tokens[0].ttl.as_deref(), Some("24h0m0s"));
    }

    #[test]
    fn joins_pin_the_ca_and_only_masters_get_a_control_plane() {
        let cp = inputs(2).join_configuration(true);
        let w = inputs(2).join_configuration(false);
        for j in [&cp, &w] {
            assert_eq!(
                j.discovery.bootstrap_token.api_server_endpoint,
                "10.77.0.10:6443"
            );
            assert_eq!(j.discovery.bootstrap_token.ca_cert_hashes.len(), 1);
            assert!(j.discovery.bootstrap_token.ca_cert_hashes[0].starts_with("sha256:"));
        }
        assert_eq!(
            cp.control_plane.unwrap().local_api_endpoint,
            ApiEndpoint {
                advertise_address: "10.77.0.12".into(),
                bind_port: 6444
            }
        );
        assert!(w.control_plane.is_none());
        // Never unsafeSkipCAVerification: the field is not even in our type,
        // and the rendered text does not mention it.
        assert!(!inputs(2)
            .render_join_worker()
            .unwrap()
            .contains("unsafeSkip"));
    }

    #[test]
    fn refuses_missing_or_plaintext_etcd() {
        let mut i = inputs(1);
        i.etcd_endpoints.clear();
        assert!(matches!(i.render_init(), Err(RenderError::Input(_))));
        i.etcd_endpoints = vec!["http://10.77.0.11:2379".into()];
        let err = i.render_init().unwrap_err().to_string();
        assert!(err.contains("http://10.77.0.11:2379"), "{err}");
    }

    #[test]
    fn from_cluster_needs_a_vip_and_takes_subnets() {
        let spec = cluster_config::ClusterSpec::from_toml(
            "t",
            "role = \"master\"\n[network]\nvip = \"10.77.0.10/24\"\n[kubernetes]\npod_subnet = \"10.200.0.0/16\"\n",
        )
        .unwrap();
        let cfg = spec.validate().unwrap();
        let base = inputs(1);
        let i = KubeadmInputs::from_cluster(
            &cfg,
            None,
            "m1",
            Ipv4Addr::new(10, 77, 0, 11),
            vec![],
            base.etcd_endpoints.clone(),
            base.token.clone(),
            base.ca_pin.clone(),
        )
        .unwrap();
        assert_eq!(i.control_plane_endpoint(), "10.77.0.10:6443");
        assert_eq!((i.api_port, i.apiserver_port), (6443, 6444));
        assert_eq!(i.local_endpoint().bind_port, 6444);
        assert_eq!(i.pod_subnet.to_string(), "10.200.0.0/16");
        assert_eq!(i.service_subnet.to_string(), "10.96.0.0/12");
        let no_vip = cluster_config::ClusterSpec::from_toml("t", "role = \"master\"\n")
            .unwrap()
            .validate()
            .unwrap();
        let err = KubeadmInputs::from_cluster(
            &no_vip,
            None,
            "m1",
            Ipv4Addr::new(10, 77, 0, 11),
            vec![],
            vec![],
            base.token,
            base.ca_pin,
        )
        .unwrap_err();
        assert!(err.to_string().contains("network.vip"), "{err}");
    }

    #[test]
    fn balancer_off_puts_the_api_server_back_on_the_public_port() {
        let read = |extra: &str| {
            cluster_config::ClusterSpec::from_toml(
                "t",
                &format!("role = \"master\"\n[network]\nvip = \"10.77.0.10/24\"\n{extra}"),
            )
            .unwrap()
            .validate()
            .unwrap()
        };
        let on = from_config(&read(""), Some("v1.31.4"));
        let off = from_config(&read("[balancer]\nenabled = false\n"), Some("v1.31.4"));
        for (i, bind) in [(&on, 6444), (&off, 6443)] {
            assert_eq!(i.control_plane_endpoint(), "10.77.0.10:6443");
            let init: InitConfiguration =
                serde_yaml_ng::from_str(&split_docs(&i.render_init().unwrap())[0]).unwrap();
            assert_eq!(init.local_api_endpoint.bind_port, bind);
            let join = i.join_configuration(true);
            assert_eq!(
                join.control_plane.unwrap().local_api_endpoint.bind_port,
                bind
            );
            assert_eq!(
                join.discovery.bootstrap_token.api_server_endpoint,
                "10.77.0.10:6443"
            );
        }
        // Off renders exactly what the single-holder layout rendered.
        let mut before = on.clone();
        before.apiserver_port = 6443;
        assert_eq!(off.render_init().unwrap(), before.render_init().unwrap());
    }

    /// The inputs of master m1 from a validated configuration, the rest
    /// as in [`inputs`].
    fn from_config(cfg: &ClusterConfig, version: Option<&str>) -> KubeadmInputs {
        let base = inputs(1);
        KubeadmInputs::from_cluster(
            cfg,
            version.map(str::to_owned),
            "m1",
            Ipv4Addr::new(10, 77, 0, 11),
            vec![],
            base.etcd_endpoints,
            base.token,
            base.ca_pin,
        )
        .unwrap()
    }

    /// `[kubernetes] ignore_preflight_errors` reaches every role's
    /// `nodeRegistration.ignorePreflightErrors`, in both API versions; by
    /// default the field is absent (the goldens).
    #[test]
    fn ignore_preflight_errors_from_the_cluster_configuration() {
        let cfg = cluster_config::ClusterSpec::from_toml(
            "t",
            "role = \"master\"\n[network]\nvip = \"10.77.0.10/24\"\n\
             [kubernetes]\nignore_preflight_errors = [\"NumCPU\", \"Mem\"]\n",
        )
        .unwrap()
        .validate()
        .unwrap();
        let base = inputs(1);
        let from = |version: Option<&str>| from_config(&cfg, version);
        let want = serde_yaml_ng::Value::Sequence(vec!["NumCPU".into(), "Mem".into()]);
        for version in ["v1.31.4", "v1.30.4"] {
            let i = from(Some(version));
            for text in [
                i.render_init().unwrap(),
                i.render_join_control_plane().unwrap(),
                i.render_join_worker().unwrap(),
            ] {
                let first = &split_docs(&text)[0];
                let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(first).unwrap();
                assert_eq!(
                    doc["nodeRegistration"]["ignorePreflightErrors"], want,
                    "{version}: {first}"
                );
            }
        }
        for text in [
            base.render_init().unwrap(),
            base.render_join_worker().unwrap(),
        ] {
            assert!(!text.contains("ignorePreflightErrors"), "{text}");
        }
    }
    /// `[kubernetes] *_args` reach the ClusterConfiguration's extraArgs of
    /// each component, after the agent's own flag: a list of name/value in
    /// v1beta4 (1.31+), a map in v1beta3; no scheduler section without
    /// flags (the goldens).
    #[test]
    fn control_plane_args_from_the_cluster_configuration() {
        let cfg = cluster_config::ClusterSpec::from_toml(
            "t",
            "role = \"master\"\n[network]\nvip = \"10.77.0.10/24\"\n\
             [kubernetes.apiserver_args]\nv = \"2\"\n\
             [kubernetes.controller_manager_args]\nleader-elect-lease-duration = \"60s\"\n\
             [kubernetes.scheduler_args]\nleader-elect-renew-deadline = \"40s\"\n",
        )
        .unwrap()
        .validate()
        .unwrap();
        let base = inputs(1);
        let from = |version: &str| from_config(&cfg, Some(version));
        let cluster_doc = |i: &KubeadmInputs| {
            let text = i.render_init().unwrap();
            let doc = split_docs(&text)
                .into_iter()
                .find(|d| d.contains("kind: ClusterConfiguration"))
                .unwrap();
            serde_yaml_ng::from_str::<serde_yaml_ng::Value>(&doc).unwrap()
        };
        let list = |pairs: &[(&str, &str)]| {
            serde_yaml_ng::from_str::<serde_yaml_ng::Value>(
                &pairs
                    .iter()
                    .map(|(n, v)| format!("- name: {n}\n  value: \"{v}\"\n"))
                    .collect::<String>(),
            )
            .unwrap()
        };
        let new = cluster_doc(&from("v1.31.4"));
        assert_eq!(new["apiServer"]["extraArgs"], list(&[("v", "2")]));
        assert_eq!(
            new["controllerManager"]["extraArgs"],
            list(&[
                ("flex-volume-plugin-dir", VOLUME_PLUGIN_DIR),
                ("leader-elect-lease-duration", "60s")
            ])
        );
        assert_eq!(
            new["scheduler"]["extraArgs"],
            list(&[("leader-elect-renew-deadline", "40s")])
        );
        let old = cluster_doc(&from("v1.24.0-alpha.1"));
        assert_eq!(old["apiServer"]["extraArgs"]["v"], "2");
        assert_eq!(
            old["controllerManager"]["extraArgs"]["leader-elect-lease-duration"],
            "60s"
        );
        assert_eq!(
            old["controllerManager"]["extraArgs"]["flex-volume-plugin-dir"],
            VOLUME_PLUGIN_DIR
        );
        assert_eq!(
            old["scheduler"]["extraArgs"]["leader-elect-renew-deadline"],
            "40s"
        );
        let plain = cluster_doc(&base);
        assert!(plain.get("scheduler").is_none());
        assert!(plain["apiServer"].get("extraArgs").is_none());
    }

    /// `[kubernetes.patches]` become one `<component>+strategic.json` file
    /// each and `patches.directory` in the init and control-plane join
    /// documents (both API versions), never in a worker's; without
    /// patches there is no `patches` field (the goldens).
    #[test]
    fn static_pod_patches_from_the_cluster_configuration() {
        let cfg = cluster_config::ClusterSpec::from_toml(
            "t",
            "role = \"master\"\n[network]\nvip = \"10.77.0.10/24\"\n\
             [[kubernetes.patches.kube-apiserver.spec.containers]]\n\
             name = \"kube-apiserver\"\n\
             livenessProbe = { timeoutSeconds = 60, failureThreshold = 30 }\n",
        )
        .unwrap()
        .validate()
        .unwrap();
        for version in ["v1.31.4", "v1.24.0-alpha.1"] {
            let i = from_config(&cfg, Some(version));
            let files = i.patch_files();
            assert_eq!(files.len(), 1);
            assert_eq!(files[0].name, "kube-apiserver+strategic.json");
            let patch: serde_json::Value = serde_json::from_str(&files[0].contents).unwrap();
            assert_eq!(
                patch["spec"]["containers"][0]["livenessProbe"]["timeoutSeconds"],
                60
            );
            assert_eq!(patch["spec"]["containers"][0]["name"], "kube-apiserver");
            let dir = serde_yaml_ng::Value::from(config_path(PATCHES_DIR));
            for text in [
                i.render_init().unwrap(),
                i.render_join_control_plane().unwrap(),
            ] {
                let first = &split_docs(&text)[0];
                let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(first).unwrap();
                assert_eq!(doc["patches"]["directory"], dir, "{version}: {first}");
            }
            let worker = i.render_join_worker().unwrap();
            assert!(!worker.contains("patches"), "{worker}");
        }
        let base = inputs(1);
        assert!(base.patch_files().is_empty());
        for text in [
            base.render_init().unwrap(),
            base.render_join_control_plane().unwrap(),
        ] {
            assert!(!text.contains("patches"), "{text}");
        }
    }
}
