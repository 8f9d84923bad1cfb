//! The subset of kubeadm's configuration API (`kubeadm.k8s.io/v1beta4`)
//! and the kubelet's (`kubelet.config.k8s.io/v1beta1`) that the agent
//! writes. Field names and types follow kubeadm's published Go types
//! (`cmd/kubeadm/app/apis/kubeadm/v1beta4/types.go` and the generated
//! reference "kubeadm Configuration (v1beta4)"); JSON tags are camelCase.
//!
//! Why v1beta4 and not v1beta3: v1beta4 is accepted by kubeadm 1.31 and
//! every later release; v1beta3 was deprecated in 1.31 and removed in 1.36
//! (kubernetes/kubernetes#136016), so a v1beta3 file would stop working
//! on any current Kubernetes. v1beta4 also has `encryptionAlgorithm`
//! (`ECDSA-P256` matches the pki crate's ECDSA CAs) and list-form
//! `extraArgs` (`[{name, value}]`).
//!
//! For an image whose kubeadm is 1.22–1.30 the rendering converts these
//! documents down to v1beta3 ([`crate::render::ConfigApi`]): map-form
//! `extraArgs`, `apiServer.timeoutForControlPlane` and `discovery.timeout`
//! instead of `timeouts`, no `encryptionAlgorithm`.
//!
//! Every struct refuses unknown fields when parsed, and the independent
//! strict mirror in `tests/schema.rs` parses the golden files again.

use serde::{Deserialize, Serialize};

/// `apiVersion` of the kubeadm documents.
pub const KUBEADM_API_VERSION: &str = "kubeadm.k8s.io/v1beta4";
/// `apiVersion` of the kubelet document.
pub const KUBELET_API_VERSION: &str = "kubelet.config.k8s.io/v1beta1";

/// `InitConfiguration`: node-local settings of `kubeadm init`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InitConfiguration {
    /// `kubeadm.k8s.io/v1beta4`.
    pub api_version: String,
    /// `InitConfiguration`.
    pub kind: String,
    /// Tokens kubeadm creates at init.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bootstrap_tokens: Vec<BootstrapToken>,
    /// How this node registers.
    pub node_registration: NodeRegistration,
    /// Where this node's API server listens.
    #[serde(rename = "localAPIEndpoint")]
    pub local_api_endpoint: ApiEndpoint,
    /// Phases to skip.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skip_phases: Vec<String>,
    /// Patches to the static pod manifests kubeadm writes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patches: Option<Patches>,
    /// Timeouts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<Timeouts>,
}

/// `ClusterConfiguration`: cluster-wide settings (init only; kubeadm
/// stores it in the `kubeadm-config` ConfigMap for joiners).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterConfiguration {
    /// `kubeadm.k8s.io/v1beta4`.
    pub api_version: String,
    /// `ClusterConfiguration`.
    pub kind: String,
    /// Cluster name (kubeconfig files, controller manager).
    pub cluster_name: String,
    /// The control plane's version, for example `v1.31.4`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes_version: Option<String>,
    /// The VIP and port: the stable endpoint every node uses.
    pub control_plane_endpoint: String,
    /// Where the certificates are.
    pub certificates_dir: String,
    /// Key type of the certificates kubeadm generates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption_algorithm: Option<String>,
    /// Pod and service networks.
    pub networking: Networking,
    /// External etcd.
    pub etcd: Etcd,
    /// API server settings.
    #[serde(rename = "apiServer")]
    pub api_server: ApiServer,
    /// Controller manager settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controller_manager: Option<ControlPlaneComponent>,
    /// Scheduler settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduler: Option<ControlPlaneComponent>,
}

/// `ControlPlaneComponent` (the controller manager's or scheduler's settings).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ControlPlaneComponent {
    /// Extra flags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_args: Vec<Arg>,
}

/// `JoinConfiguration`: settings of `kubeadm join` (control plane or worker).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JoinConfiguration {
    /// `kubeadm.k8s.io/v1beta4`.
    pub api_version: String,
    /// `JoinConfiguration`.
    pub kind: String,
    /// How this node registers.
    pub node_registration: NodeRegistration,
    /// Where to find and how to trust the cluster.
    pub discovery: Discovery,
    /// Present for a control-plane join: kubeadm then deploys a control
    /// plane instance on this node (this replaces `--control-plane`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_plane: Option<JoinControlPlane>,
    /// Phases to skip.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skip_phases: Vec<String>,
    /// Patches to the static pod manifests kubeadm writes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patches: Option<Patches>,
    /// Timeouts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<Timeouts>,
}

/// `Patches` (v1beta3 and v1beta4): a directory of
/// `target[suffix][+patchtype].extension` files kubeadm applies to the
/// manifests it writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Patches {
    /// The directory.
    pub directory: String,
}

/// A bootstrap token entry of `InitConfiguration.bootstrapTokens`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BootstrapToken {
    /// `id.secret`.
    pub token: String,
    /// Human-readable purpose.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Lifetime (Go duration, for example `24h0m0s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
    /// Usages (`signing`, `authentication`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub usages: Vec<String>,
    /// Groups the token authenticates as.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
}

/// `NodeRegistrationOptions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeRegistration {
    /// Node name.
    pub name: String,
    /// CRI socket URL.
    pub cri_socket: String,
    /// Taints; `None` lets kubeadm default (control-plane taint on masters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub taints: Option<Vec<Taint>>,
    /// Extra kubelet flags (list form in v1beta4).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kubelet_extra_args: Vec<Arg>,
    /// Preflight checks to ignore.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ignore_preflight_errors: Vec<String>,
    /// `Never`: the images come from the image's archive, never a registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<String>,
}

/// A node taint (`core/v1.Taint`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Taint {
    /// Key.
    pub key: String,
    /// Value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// `NoSchedule`, `PreferNoSchedule` or `NoExecute`.
    pub effect: String,
}

/// A `name`/`value` argument (v1beta4's `Arg`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Arg {
    /// Flag name without dashes.
    pub name: String,
    /// Value.
    pub value: String,
}

/// `APIEndpoint`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApiEndpoint {
    /// The node's own address.
    pub advertise_address: String,
    /// The API server port.
    pub bind_port: u16,
}

/// `Networking`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Networking {
    /// Pod network CIDR.
    pub pod_subnet: String,
    /// Service network CIDR.
    pub service_subnet: String,
    /// DNS domain of services.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_domain: Option<String>,
}

/// `Etcd` (external only: the agent runs etcd itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Etcd {
    /// The agent's etcd cluster.
    pub external: ExternalEtcd,
}

/// `ExternalEtcd`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExternalEtcd {
    /// Client URLs of the members.
    pub endpoints: Vec<String>,
    /// etcd CA certificate.
    pub ca_file: String,
    /// The API server's etcd client certificate.
    pub cert_file: String,
    /// Its key.
    pub key_file: String,
}

/// `APIServer`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApiServer {
    /// Extra SANs of the serving certificate.
    #[serde(rename = "certSANs")]
    pub cert_sans: Vec<String>,
    /// Extra flags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_args: Vec<Arg>,
}

/// `Discovery`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Discovery {
    /// Token discovery.
    pub bootstrap_token: BootstrapTokenDiscovery,
}

/// `BootstrapTokenDiscovery`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BootstrapTokenDiscovery {
    /// The API endpoint (VIP:port).
    #[serde(rename = "apiServerEndpoint")]
    pub api_server_endpoint: String,
    /// `id.secret`.
    pub token: String,
    /// CA public key pins (`sha256:<hex>`). Never empty: kubeboot never
    /// skips CA verification.
    #[serde(rename = "caCertHashes")]
    pub ca_cert_hashes: Vec<String>,
}

/// `JoinControlPlane`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JoinControlPlane {
    /// Where this node's API server listens.
    #[serde(rename = "localAPIEndpoint")]
    pub local_api_endpoint: ApiEndpoint,
}

/// `Timeouts` (v1beta4; Go durations).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Timeouts {
    /// Wait for the control-plane components (default 4m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_plane_component_health_check: Option<String>,
    /// Wait for the kubelet (default 4m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubelet_health_check: Option<String>,
    /// Token discovery (default 5m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discovery: Option<String>,
    /// TLS bootstrap (default 5m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_bootstrap: Option<String>,
}

/// The `KubeletConfiguration` fields kubeboot sets (kubeadm passes the
/// document to every kubelet through the `kubelet-config` ConfigMap).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KubeletConfiguration {
    /// `kubelet.config.k8s.io/v1beta1`.
    pub api_version: String,
    /// `KubeletConfiguration`.
    pub kind: String,
    /// `systemd`, matching containerd's `SystemdCgroup = true`.
    pub cgroup_driver: String,
    /// containerd's CRI socket (kubelet 1.27 and later only; older ones
    /// get it as a flag from kubeadm).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_runtime_endpoint: Option<String>,
    /// FlexVolume plugin directory (writable: `/usr` is read-only).
    pub volume_plugin_dir: String,
}
