//! Schema check of the golden kubeadm files, independent of the types the
//! crate renders with: the structs below mirror kubeadm's published
//! `kubeadm.k8s.io/v1beta4` API (every field of the types we touch, with
//! its JSON name and Go type, from `cmd/kubeadm/app/apis/kubeadm/v1beta4`
//! and the generated "kubeadm Configuration (v1beta4)" reference) and the
//! part of `kubelet.config.k8s.io/v1beta1` we use. Unknown fields are
//! refused, so a misspelt or misplaced field in a golden file fails here
//! even if the crate's own types were misspelt the same way.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

// Go `int32` → i32, `bool` → bool, `metav1.Duration` → String (Go syntax,
// checked separately), `[]T` → Vec<T>, pointers and omitempty → Option.

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct InitConfiguration {
    api_version: String,
    kind: String,
    bootstrap_tokens: Option<Vec<BootstrapToken>>,
    dry_run: Option<bool>,
    node_registration: Option<NodeRegistrationOptions>,
    #[serde(rename = "localAPIEndpoint")]
    local_api_endpoint: Option<ApiEndpoint>,
    certificate_key: Option<String>,
    skip_phases: Option<Vec<String>>,
    patches: Option<Patches>,
    timeouts: Option<Timeouts>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ClusterConfiguration {
    api_version: String,
    kind: String,
    etcd: Option<Etcd>,
    networking: Option<Networking>,
    kubernetes_version: Option<String>,
    control_plane_endpoint: Option<String>,
    api_server: Option<ApiServer>,
    controller_manager: Option<ControlPlaneComponent>,
    scheduler: Option<ControlPlaneComponent>,
    dns: Option<Dns>,
    proxy: Option<Proxy>,
    certificates_dir: Option<String>,
    image_repository: Option<String>,
    feature_gates: Option<BTreeMap<String, bool>>,
    cluster_name: Option<String>,
    encryption_algorithm: Option<EncryptionAlgorithm>,
    certificate_validity_period: Option<String>,
    ca_certificate_validity_period: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct JoinConfiguration {
    api_version: String,
    kind: String,
    dry_run: Option<bool>,
    node_registration: Option<NodeRegistrationOptions>,
    ca_cert_path: Option<String>,
    discovery: Discovery,
    control_plane: Option<JoinControlPlane>,
    skip_phases: Option<Vec<String>>,
    patches: Option<Patches>,
    timeouts: Option<Timeouts>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct BootstrapToken {
    token: String,
    description: Option<String>,
    ttl: Option<String>,
    expires: Option<String>,
    usages: Option<Vec<String>>,
    groups: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct NodeRegistrationOptions {
    name: Option<String>,
    cri_socket: Option<String>,
    taints: Option<Vec<Taint>>,
    kubelet_extra_args: Option<Vec<Arg>>,
    ignore_preflight_errors: Option<Vec<String>>,
    image_pull_policy: Option<PullPolicy>,
    image_pull_serial: Option<bool>,
}

#[derive(Deserialize)]
enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

#[derive(Deserialize)]
enum EncryptionAlgorithm {
    #[serde(rename = "RSA-2048")]
    Rsa2048,
    #[serde(rename = "RSA-3072")]
    Rsa3072,
    #[serde(rename = "RSA-4096")]
    Rsa4096,
    #[serde(rename = "ECDSA-P256")]
    EcdsaP256,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Taint {
    key: String,
    value: Option<String>,
    effect: String,
    time_added: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Arg {
    name: String,
    value: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ApiEndpoint {
    advertise_address: Option<String>,
    bind_port: Option<i32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Patches {
    directory: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Timeouts {
    control_plane_component_health_check: Option<String>,
    kubelet_health_check: Option<String>,
    #[serde(rename = "kubernetesAPICall")]
    kubernetes_api_call: Option<String>,
    etcd_api_call: Option<String>,
    tls_bootstrap: Option<String>,
    discovery: Option<String>,
    upgrade_manifests: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Etcd {
    local: Option<BTreeMap<String, serde_yaml_ng::Value>>,
    external: Option<ExternalEtcd>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ExternalEtcd {
    endpoints: Vec<String>,
    ca_file: String,
    cert_file: String,
    key_file: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Networking {
    service_subnet: Option<String>,
    pod_subnet: Option<String>,
    dns_domain: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ControlPlaneComponent {
    extra_args: Option<Vec<Arg>>,
    extra_volumes: Option<Vec<BTreeMap<String, serde_yaml_ng::Value>>>,
    extra_envs: Option<Vec<BTreeMap<String, serde_yaml_ng::Value>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ApiServer {
    extra_args: Option<Vec<Arg>>,
    extra_volumes: Option<Vec<BTreeMap<String, serde_yaml_ng::Value>>>,
    extra_envs: Option<Vec<BTreeMap<String, serde_yaml_ng::Value>>>,
    #[serde(rename = "certSANs")]
    cert_sans: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Dns {
    image_repository: Option<String>,
    image_tag: Option<String>,
    disabled: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Proxy {
    disabled: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Discovery {
    bootstrap_token: Option<BootstrapTokenDiscovery>,
    file: Option<FileDiscovery>,
    tls_bootstrap_token: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct BootstrapTokenDiscovery {
    token: String,
    #[serde(rename = "apiServerEndpoint")]
    api_server_endpoint: Option<String>,
    #[serde(rename = "caCertHashes")]
    ca_cert_hashes: Option<Vec<String>>,
    #[serde(rename = "unsafeSkipCAVerification")]
    unsafe_skip_ca_verification: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct FileDiscovery {
    kube_config_path: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct JoinControlPlane {
    #[serde(rename = "localAPIEndpoint")]
    local_api_endpoint: Option<ApiEndpoint>,
    certificate_key: Option<String>,
}

/// The `KubeletConfiguration` fields kubeboot may set (the full type has
/// about a hundred; a field outside this list is refused so it gets
/// checked against the kubelet's reference before it is added here).
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct KubeletConfiguration {
    api_version: String,
    kind: String,
    cgroup_driver: Option<CgroupDriver>,
    container_runtime_endpoint: Option<String>,
    cluster_dns: Option<Vec<String>>,
    cluster_domain: Option<String>,
    rotate_certificates: Option<bool>,
    server_tls_bootstrap: Option<bool>,
    fail_swap_on: Option<bool>,
    /// `VolumePluginDir string \`json:"volumePluginDir,omitempty"\``.
    volume_plugin_dir: Option<String>,
}

/// The same for kubelets before 1.27, whose `KubeletConfiguration` has
/// no `containerRuntimeEndpoint` (checked in
/// `staging/src/k8s.io/kubelet/config/v1beta1/types.go` of 1.24; the
/// field arrived in 1.27).
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[allow(dead_code)]
struct KubeletConfigurationBefore127 {
    api_version: String,
    kind: String,
    cgroup_driver: Option<CgroupDriver>,
    cluster_dns: Option<Vec<String>>,
    cluster_domain: Option<String>,
    rotate_certificates: Option<bool>,
    server_tls_bootstrap: Option<bool>,
    fail_swap_on: Option<bool>,
    volume_plugin_dir: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum CgroupDriver {
    Systemd,
    Cgroupfs,
}

/// `kubeadm.k8s.io/v1beta3` (kubeadm 1.22–1.35), from
/// `cmd/kubeadm/app/apis/kubeadm/v1beta3/types.go`: map-form `extraArgs`,
/// no `timeouts`, `apiServer.timeoutForControlPlane`, `discovery.timeout`,
/// no `encryptionAlgorithm`, `proxy` or `dryRun`.
mod v1beta3 {
    use super::*;

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    pub struct InitConfiguration {
        api_version: String,
        kind: String,
        bootstrap_tokens: Option<Vec<BootstrapToken>>,
        node_registration: Option<NodeRegistrationOptions>,
        #[serde(rename = "localAPIEndpoint")]
        local_api_endpoint: Option<ApiEndpoint>,
        certificate_key: Option<String>,
        skip_phases: Option<Vec<String>>,
        patches: Option<Patches>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    pub struct ClusterConfiguration {
        api_version: String,
        kind: String,
        etcd: Option<Etcd>,
        networking: Option<Networking>,
        kubernetes_version: Option<String>,
        control_plane_endpoint: Option<String>,
        api_server: Option<ApiServer>,
        controller_manager: Option<ControlPlaneComponent>,
        scheduler: Option<ControlPlaneComponent>,
        dns: Option<Dns>,
        certificates_dir: Option<String>,
        image_repository: Option<String>,
        feature_gates: Option<BTreeMap<String, bool>>,
        cluster_name: Option<String>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    struct ControlPlaneComponent {
        extra_args: Option<BTreeMap<String, String>>,
        extra_volumes: Option<Vec<BTreeMap<String, serde_yaml_ng::Value>>>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    struct ApiServer {
        extra_args: Option<BTreeMap<String, String>>,
        extra_volumes: Option<Vec<BTreeMap<String, serde_yaml_ng::Value>>>,
        #[serde(rename = "certSANs")]
        cert_sans: Option<Vec<String>>,
        timeout_for_control_plane: Option<String>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    struct Dns {
        image_repository: Option<String>,
        image_tag: Option<String>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    struct NodeRegistrationOptions {
        name: Option<String>,
        cri_socket: Option<String>,
        taints: Option<Vec<Taint>>,
        kubelet_extra_args: Option<BTreeMap<String, String>>,
        ignore_preflight_errors: Option<Vec<String>>,
        image_pull_policy: Option<PullPolicy>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    pub struct JoinConfiguration {
        api_version: String,
        kind: String,
        node_registration: Option<NodeRegistrationOptions>,
        ca_cert_path: Option<String>,
        pub discovery: Discovery,
        pub control_plane: Option<JoinControlPlane>,
        skip_phases: Option<Vec<String>>,
        patches: Option<Patches>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    pub struct Discovery {
        pub bootstrap_token: Option<BootstrapTokenDiscovery>,
        file: Option<FileDiscovery>,
        tls_bootstrap_token: Option<String>,
        pub timeout: Option<String>,
    }
}

fn golden(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("test_data")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Parses every document of a file with the mirror for its `kind`,
/// returning the kinds in order.
fn check_file(text: &str) -> Result<Vec<String>, String> {
    let mut kinds = Vec::new();
    for doc in kubeadm::render::split_docs(text) {
        let head: BTreeMap<String, serde_yaml_ng::Value> =
            serde_yaml_ng::from_str(&doc).map_err(|e| e.to_string())?;
        let api = head
            .get("apiVersion")
            .and_then(|v| v.as_str())
            .unwrap_or_default();
        let kind = head
            .get("kind")
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_owned();
        let r = match (api, kind.as_str()) {
            ("kubeadm.k8s.io/v1beta4", "InitConfiguration") => {
                serde_yaml_ng::from_str::<InitConfiguration>(&doc).map(|_| ())
            }
            ("kubeadm.k8s.io/v1beta4", "ClusterConfiguration") => {
                serde_yaml_ng::from_str::<ClusterConfiguration>(&doc).map(|_| ())
            }
            ("kubeadm.k8s.io/v1beta4", "JoinConfiguration") => {
                serde_yaml_ng::from_str::<JoinConfiguration>(&doc).map(|_| ())
            }
            ("kubeadm.k8s.io/v1beta3", "InitConfiguration") => {
                serde_yaml_ng::from_str::<v1beta3::InitConfiguration>(&doc).map(|_| ())
            }
            ("kubeadm.k8s.io/v1beta3", "ClusterConfiguration") => {
                serde_yaml_ng::from_str::<v1beta3::ClusterConfiguration>(&doc).map(|_| ())
            }
            ("kubeadm.k8s.io/v1beta3", "JoinConfiguration") => {
                serde_yaml_ng::from_str::<v1beta3::JoinConfiguration>(&doc).map(|_| ())
            }
            ("kubelet.config.k8s.io/v1beta1", "KubeletConfiguration") => {
                serde_yaml_ng::from_str::<KubeletConfiguration>(&doc).map(|_| ())
            }
            other => return Err(format!("unexpected document {other:?}")),
        };
        r.map_err(|e| format!("{kind}: {e}"))?;
        kinds.push(kind);
    }
    Ok(kinds)
}

/// Go's `time.ParseDuration` for the forms we write (`1h2m3s`).
fn is_go_duration(s: &str) -> bool {
    let mut rest = s;
    let mut units = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(|b| b.is_ascii_digit()).count();
        if digits == 0 {
            return false;
        }
        rest = &rest[digits..];
        let unit = rest.bytes().take_while(|b| b.is_ascii_alphabetic()).count();
        if !matches!(&rest[..unit], "h" | "m" | "s" | "ms") {
            return false;
        }
        rest = &rest[unit..];
        units += 1;
    }
    units > 0
}

#[test]
fn golden_files_match_the_published_schema() {
    assert_eq!(
        check_file(&golden("init-master.yaml")).unwrap(),
        vec![
            "InitConfiguration",
            "ClusterConfiguration",
            "KubeletConfiguration"
        ]
    );
    assert_eq!(
        check_file(&golden("join-master.yaml")).unwrap(),
        vec!["JoinConfiguration"]
    );
    assert_eq!(
        check_file(&golden("join-worker.yaml")).unwrap(),
        vec!["JoinConfiguration"]
    );
}

#[test]
fn golden_values_have_the_right_shapes() {
    let init = golden("init-master.yaml");
    let docs = kubeadm::render::split_docs(&init);
    let i: InitConfiguration = serde_yaml_ng::from_str(&docs[0]).unwrap();
    let token = &i.bootstrap_tokens.as_ref().unwrap()[0];
    assert!(is_go_duration(token.ttl.as_deref().unwrap()));
    kubeadm::BootstrapToken::parse(&token.token, "golden").unwrap();
    let t = i.timeouts.unwrap();
    assert!(is_go_duration(
        &t.control_plane_component_health_check.unwrap()
    ));
    let c: ClusterConfiguration = serde_yaml_ng::from_str(&docs[1]).unwrap();
    let ext = c.etcd.unwrap().external.unwrap();
    assert!(ext.endpoints.iter().all(|e| e.starts_with("https://")));
    let net = c.networking.unwrap();
    net.pod_subnet.unwrap().parse::<ipnet::Ipv4Net>().unwrap();
    net.service_subnet
        .unwrap()
        .parse::<ipnet::Ipv4Net>()
        .unwrap();
    let endpoint = c.control_plane_endpoint.unwrap();
    endpoint.parse::<std::net::SocketAddrV4>().unwrap();

    for name in ["join-master.yaml", "join-worker.yaml"] {
        let j: JoinConfiguration =
            serde_yaml_ng::from_str(&kubeadm::render::split_docs(&golden(name))[0]).unwrap();
        let bt = j.discovery.bootstrap_token.unwrap();
        assert_eq!(bt.unsafe_skip_ca_verification, None, "{name}");
        let pins = bt.ca_cert_hashes.unwrap();
        assert_eq!(pins.len(), 1);
        kubeadm::CaPin::parse(&pins[0], name).unwrap();
        bt.api_server_endpoint
            .unwrap()
            .parse::<std::net::SocketAddrV4>()
            .unwrap();
        assert_eq!(j.control_plane.is_some(), name == "join-master.yaml");
    }
}

#[test]
fn a_misspelt_or_misplaced_field_fails_the_check() {
    let init = golden("init-master.yaml");
    let cases = [
        ("controlPlaneEndpoint:", "controlPlaneEndpont:"),
        ("certSANs:", "certSans:"),
        ("criSocket:", "crisocket:"),
        ("caCertHashes:", "caCertHash:"),
        ("cgroupDriver: systemd", "cgroupDriver: systemdd"),
        (
            "encryptionAlgorithm: ECDSA-P256",
            "encryptionAlgorithm: ECDSA-P384",
        ),
        ("bindPort: 6444", "bindPort: \"6444\""),
        ("imagePullPolicy: Never", "imagePullPolicy: never"),
        // v1beta3's map form of extraArgs is not v1beta4.
        (
            "  - name: node-ip\n    value: 10.77.0.11\n",
            "    node-ip: 10.77.0.11\n",
        ),
    ];
    for (from, to) in cases {
        let base = if from == "caCertHashes:" {
            golden("join-worker.yaml")
        } else {
            init.clone()
        };
        assert!(base.contains(from), "{from} not in the golden file");
        let broken = base.replacen(from, to, 1);
        assert!(
            check_file(&broken).is_err(),
            "{to:?} passed the schema check"
        );
    }
    // v1beta4 content labelled v1beta3 (list extraArgs, timeouts,
    // encryptionAlgorithm) fails, and so do v1beta4-only fields added to
    // the v1beta3 golden file.
    let relabelled = init.replace("kubeadm.k8s.io/v1beta4", "kubeadm.k8s.io/v1beta3");
    assert!(check_file(&relabelled).is_err());
    let old = golden("init-master.v1beta3.yaml");
    assert!(check_file(&old).is_ok());
    for (from, to) in [
        (
            "certificatesDir:",
            "encryptionAlgorithm: ECDSA-P256\ncertificatesDir:",
        ),
        ("localAPIEndpoint:", "timeouts: {}\nlocalAPIEndpoint:"),
        ("timeoutForControlPlane:", "timeoutForControlPlan:"),
    ] {
        assert!(old.contains(from), "{from}");
        assert!(
            check_file(&old.replacen(from, to, 1)).is_err(),
            "{to:?} passed"
        );
    }
}

/// The file for kubeadm 1.24 (the hand-built QEMU components) passes the
/// v1beta3 mirrors and, unlike the 1.30 one, the pre-1.27 kubelet mirror;
/// skipped add-ons are a valid `skipPhases` in both API versions.
#[test]
fn the_1_24_file_fits_the_1_24_kubelet_and_skip_phases_fit_both_apis() {
    let kubelet_doc = |text: &str| {
        kubeadm::render::split_docs(text)
            .into_iter()
            .find(|d| d.contains("kind: KubeletConfiguration"))
            .unwrap()
    };
    let v124 = golden("init-master.v1.24.yaml");
    assert_eq!(
        check_file(&v124).unwrap(),
        vec![
            "InitConfiguration",
            "ClusterConfiguration",
            "KubeletConfiguration"
        ]
    );
    serde_yaml_ng::from_str::<KubeletConfigurationBefore127>(&kubelet_doc(&v124)).unwrap();
    let v130 = golden("init-master.v1beta3.yaml");
    assert!(
        serde_yaml_ng::from_str::<KubeletConfigurationBefore127>(&kubelet_doc(&v130)).is_err(),
        "containerRuntimeEndpoint passed the pre-1.27 kubelet mirror"
    );
    for v in [
        "kubeadm.k8s.io/v1beta3\nkind: InitConfiguration",
        "kubeadm.k8s.io/v1beta4\nkind: InitConfiguration",
    ] {
        let base = if v.contains("v1beta3") {
            v124.clone()
        } else {
            golden("init-master.yaml")
        };
        assert!(base.contains(v), "{v}");
        let with = base.replacen(
            "localAPIEndpoint:",
            "skipPhases:\n- addon/coredns\n- addon/kube-proxy\nlocalAPIEndpoint:",
            1,
        );
        assert!(check_file(&with).is_ok(), "{with}");
    }
}
