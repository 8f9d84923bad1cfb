//! The user input: one profile file as written ([`ProfileSpec`] and its
//! tables), parsed (pure: text in, spec or located error out), checked for
//! the rules a single file can break, and merged with its parent
//! ([`ProfileSpec::merge`]; the rules are in the crate docs).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use cluster_config::ClusterSpec;
use serde::{Deserialize, Serialize};

use crate::error::{line_col, locate_key, Location, ProfileError};
use crate::names::{
    is_module_name, is_package_name, is_registry_host, is_sha256, is_simple_name, is_unit_name,
    ImageRef,
};

/// A sysctl value: TOML string or integer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SysctlValue {
    /// Integer value, for example `1`.
    Int(i64),
    /// String value, for example `"1 65535"`.
    Text(String),
}

impl fmt::Display for SysctlValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SysctlValue::Int(v) => write!(f, "{v}"),
            SysctlValue::Text(v) => f.write_str(v),
        }
    }
}

/// `[archive]`: where packages come from.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchiveSpec {
    /// Mirror URL (default: the host's apt sources).
    pub url: Option<String>,
    /// Suite (default `bookworm`).
    pub suite: Option<String>,
    /// Components (default `["main"]`); a child's list replaces the parent's.
    pub components: Option<Vec<String>>,
    /// Architecture (default `amd64`).
    pub architecture: Option<String>,
    /// OpenPGP keyring that signs the suite's `InRelease`.
    pub keyring: Option<PathBuf>,
}

/// `[packages]`: what to install.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackagesSpec {
    /// Packages requested (their dependencies follow).
    #[serde(default)]
    pub include: Vec<String>,
    /// Packages never installed, even when something depends on them.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Paths removed after unpacking, with everything below them (like
    /// dpkg's path-exclude), for example `/usr/share/man`.
    #[serde(default)]
    pub drop_paths: Vec<String>,
}

/// `[kernel]`: the kernel package and the modules kept.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KernelSpec {
    /// Kernel package (default `linux-image-amd64`).
    pub package: Option<String>,
    /// Module names to keep (their dependencies are kept too).
    #[serde(default)]
    pub modules: Vec<String>,
    /// Kernel command line recorded in the manifest (default `console=ttyS0`).
    pub cmdline: Option<String>,
}

/// One extra system user (`[[system.users]]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UserSpec {
    /// Login name.
    pub name: String,
    /// Fixed uid (default: the next free system uid, deterministic).
    pub uid: Option<u32>,
    /// Supplementary groups (must exist in the image).
    #[serde(default)]
    pub groups: Vec<String>,
    /// Home directory (default `/nonexistent`).
    pub home: Option<String>,
    /// Login shell (default `/usr/sbin/nologin`).
    pub shell: Option<String>,
}

/// `[system]`: declarative replacements for maintainer scripts and setup.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SystemSpec {
    /// Sysctls written to `/etc/sysctl.d/90-kubeboot.conf`.
    #[serde(default)]
    pub sysctls: BTreeMap<String, SysctlValue>,
    /// Modules loaded at boot (`/etc/modules-load.d/kubeboot.conf`).
    #[serde(default)]
    pub modules_load: Vec<String>,
    /// systemd units enabled (by their `[Install]` section).
    #[serde(default)]
    pub enable_units: Vec<String>,
    /// Default target (default `multi-user.target`).
    pub default_target: Option<String>,
    /// Extra system users.
    #[serde(default)]
    pub users: Vec<UserSpec>,
    /// Alternatives: link name (for example `/usr/sbin/iptables`) -> target.
    #[serde(default)]
    pub alternatives: BTreeMap<String, String>,
}

/// One upstream artifact (`[kubernetes.components.<name>]`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComponentSpec {
    /// Upstream download URL.
    pub url: Option<String>,
    /// Lowercase hex SHA256 of the artifact.
    pub sha256: Option<String>,
    /// Install path in the image (default `/usr/bin/<name>`).
    pub path: Option<String>,
    /// The artifact is a gzip-compressed tarball: its regular files are
    /// installed (executable, by file name) into this directory instead of
    /// the artifact itself at `path` (crictl into `/usr/bin`, the CNI
    /// plugins into `/opt/cni/bin`).
    pub unpack_to: Option<String>,
}

/// `[kubernetes.cni]`: the CNI manifest applied after `kubeadm init`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CniSpec {
    /// Name (`flannel`): the manifest is baked as `<name>.yaml`.
    pub name: Option<String>,
    /// Upstream download URL of the manifest.
    pub url: Option<String>,
    /// Lowercase hex SHA256 of the manifest.
    pub sha256: Option<String>,
    /// The pod CIDR as written in the manifest (the agent replaces it with
    /// the cluster's).
    pub pod_cidr: Option<String>,
}

/// The `[kubernetes]` keys a file may list in `replace`.
pub const KUBERNETES_REPLACEABLE: &[&str] = &["components", "images", "cni", "registry_mirrors"];

/// `[kubernetes]`: components fetched from upstream, not from Debian.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesSpec {
    /// Keys of this table whose value in this file replaces the parents'
    /// instead of merging with it (one of [`KUBERNETES_REPLACEABLE`]); see
    /// the module docs.
    #[serde(default)]
    pub replace: Vec<String>,
    /// Version, for example `v1.30.4`.
    pub version: Option<String>,
    /// Components by name (`kubelet`, `kubeadm`, `kubectl`).
    #[serde(default)]
    pub components: BTreeMap<String, ComponentSpec>,
    /// Container images shipped in the image's OCI archive, each pinned by
    /// digest: `registry/name:tag@sha256:<64 hex>`. Lists append.
    #[serde(default)]
    pub images: Vec<String>,
    /// The CNI manifest.
    pub cni: Option<CniSpec>,
    /// Registry mirrors: the registry host as written in `images`
    /// (`registry.k8s.io`, `docker.io`) to the base URL of a mirror serving
    /// the same repositories (`http://127.0.0.1:5000`, a pull-through
    /// cache). The baked image names stay the original references. A table:
    /// overrides key by key.
    #[serde(default)]
    pub registry_mirrors: BTreeMap<String, String>,
}

/// One profile file as written (user input, every field optional).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileSpec {
    /// Image name (default: the leaf file's stem).
    pub name: Option<String>,
    /// Parent profile, relative to this file.
    pub extends: Option<String>,
    /// One-line description.
    pub description: Option<String>,
    /// Fixed timestamp for every file in the image.
    pub source_date_epoch: Option<u64>,
    /// Overlay directories laid over the root filesystem, relative to this file.
    #[serde(default)]
    pub overlays: Vec<String>,
    /// Package archive.
    #[serde(default)]
    pub archive: ArchiveSpec,
    /// Packages.
    #[serde(default)]
    pub packages: PackagesSpec,
    /// Kernel.
    #[serde(default)]
    pub kernel: KernelSpec,
    /// System setup.
    #[serde(default)]
    pub system: SystemSpec,
    /// Kubernetes components.
    #[serde(default)]
    pub kubernetes: KubernetesSpec,
    /// Cluster configuration, in the agent's schema.
    pub cluster: Option<ClusterSpec>,
}

impl ProfileSpec {
    /// Parses one profile file's text. `file` is only used in errors.
    pub fn parse(file: &Path, text: &str) -> Result<Self, ProfileError> {
        // Syntax first, so a syntax error is not reported as a schema error.
        if let Err(e) = text.parse::<toml::Table>() {
            let (line, column) = e
                .span()
                .map(|s| line_col(text, s.start))
                .map_or((None, None), |(l, c)| (Some(l), Some(c)));
            return Err(ProfileError::Syntax {
                location: Location {
                    file: file.to_owned(),
                    line,
                    column,
                    key: None,
                },
                message: e.message().trim_end().to_owned(),
            });
        }
        let de = toml::Deserializer::new(text);
        let spec: ProfileSpec = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let key = (path != ".").then_some(path);
            let pos = inner.span().map(|s| line_col(text, s.start)).or_else(|| {
                let key = key.as_deref()?;
                locate_key(text, &key.split('.').collect::<Vec<_>>())
            });
            ProfileError::Schema {
                location: Location {
                    file: file.to_owned(),
                    line: pos.map(|p| p.0),
                    column: pos.map(|p| p.1),
                    key,
                },
                message: inner.message().trim_end().to_owned(),
            }
        })?;
        spec.check(file, text)?;
        Ok(spec)
    }

    /// Field rules that a single file can break (types are already right).
    fn check(&self, file: &Path, text: &str) -> Result<(), ProfileError> {
        let bad = |key: &[&str], message: String| {
            let pos = locate_key(text, key);
            ProfileError::Invalid {
                location: Location {
                    file: file.to_owned(),
                    line: pos.map(|p| p.0),
                    column: pos.map(|p| p.1),
                    key: Some(key.join(".")),
                },
                message,
            }
        };
        if let Some(name) = &self.name {
            if !is_simple_name(name) {
                return Err(bad(
                    &["name"],
                    format!("{name:?}: use 1-63 characters of a-z, 0-9, '-' and '_'"),
                ));
            }
        }
        for (list, key) in [
            (&self.packages.include, ["packages", "include"]),
            (&self.packages.exclude, ["packages", "exclude"]),
        ] {
            if let Some(p) = list.iter().find(|p| !is_package_name(p)) {
                return Err(bad(
                    &key,
                    format!("{p:?} is not a Debian package name (Policy 5.6.1)"),
                ));
            }
        }
        if let Some(p) = self
            .packages
            .drop_paths
            .iter()
            .find(|p| !p.starts_with('/') || p.as_str() == "/" || p.contains(".."))
        {
            return Err(bad(
                &["packages", "drop_paths"],
                format!("{p:?} must be an absolute path below / without '..'"),
            ));
        }
        for (list, key) in [
            (&self.kernel.modules, ["kernel", "modules"]),
            (&self.system.modules_load, ["system", "modules_load"]),
        ] {
            if let Some(m) = list.iter().find(|m| !is_module_name(m)) {
                return Err(bad(&key, format!("{m:?} is not a kernel module name")));
            }
        }
        if let Some(u) = self.system.enable_units.iter().find(|u| !is_unit_name(u)) {
            return Err(bad(
                &["system", "enable_units"],
                format!("{u:?} is not a systemd unit name (for example containerd.service)"),
            ));
        }
        if let Some(t) = &self.system.default_target {
            if !t.ends_with(".target") || !is_unit_name(t) {
                return Err(bad(
                    &["system", "default_target"],
                    format!("{t:?} is not a target unit"),
                ));
            }
        }
        for key in self.system.sysctls.keys() {
            if key.is_empty()
                || !key
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-/*".contains(c))
            {
                return Err(bad(
                    &["system", "sysctls", key],
                    format!("{key:?} is not a sysctl name"),
                ));
            }
        }
        for user in &self.system.users {
            if !is_simple_name(&user.name) {
                return Err(bad(
                    &["system", "users"],
                    format!("{:?} is not a valid user name", user.name),
                ));
            }
        }
        for (link, target) in &self.system.alternatives {
            if !link.starts_with('/') || !target.starts_with('/') {
                return Err(bad(
                    &["system", "alternatives", link],
                    "alternatives map an absolute link path to an absolute target path".into(),
                ));
            }
        }
        for (name, c) in &self.kubernetes.components {
            if let Some(sha) = &c.sha256 {
                if !is_sha256(sha) {
                    return Err(bad(
                        &["kubernetes", "components", name, "sha256"],
                        format!("{sha:?} is not 64 lowercase hex digits"),
                    ));
                }
            }
            if let Some(url) = &c.url {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return Err(bad(
                        &["kubernetes", "components", name, "url"],
                        format!("{url:?} is not an http(s) URL"),
                    ));
                }
            }
            if let Some(path) = &c.path {
                if !path.starts_with('/') {
                    return Err(bad(
                        &["kubernetes", "components", name, "path"],
                        format!("{path:?} must be absolute"),
                    ));
                }
            }
            if let Some(dir) = &c.unpack_to {
                if !dir.starts_with('/') {
                    return Err(bad(
                        &["kubernetes", "components", name, "unpack_to"],
                        format!("{dir:?} must be absolute"),
                    ));
                }
            }
        }
        if let Some(k) = self
            .kubernetes
            .replace
            .iter()
            .find(|k| !KUBERNETES_REPLACEABLE.contains(&k.as_str()))
        {
            return Err(bad(
                &["kubernetes", "replace"],
                format!(
                    "{k:?} cannot be replaced: list some of {}",
                    KUBERNETES_REPLACEABLE.join(", ")
                ),
            ));
        }
        for image in &self.kubernetes.images {
            if ImageRef::parse(image).is_none() {
                return Err(bad(
                    &["kubernetes", "images"],
                    format!(
                        "{image:?} is not pinned by digest: write name:tag@sha256:<64 lowercase hex>"
                    ),
                ));
            }
        }
        for (host, url) in &self.kubernetes.registry_mirrors {
            if !is_registry_host(host) {
                return Err(bad(
                    &["kubernetes", "registry_mirrors", host],
                    format!(
                        "{host:?} is not a registry host as written in an image reference \
                         (for example \"registry.k8s.io\" or \"docker.io\")"
                    ),
                ));
            }
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(bad(
                    &["kubernetes", "registry_mirrors", host],
                    format!("{url:?} is not an http(s) URL"),
                ));
            }
        }
        if let Some(cni) = &self.kubernetes.cni {
            if let Some(sha) = &cni.sha256 {
                if !is_sha256(sha) {
                    return Err(bad(
                        &["kubernetes", "cni", "sha256"],
                        format!("{sha:?} is not 64 lowercase hex digits"),
                    ));
                }
            }
            if let Some(name) = &cni.name {
                if name.is_empty()
                    || !name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                {
                    return Err(bad(
                        &["kubernetes", "cni", "name"],
                        format!("{name:?}: use letters, digits, '-' and '_' (it names a file)"),
                    ));
                }
            }
        }
        if let Some(url) = &self.archive.url {
            if !(url.starts_with("http://")
                || url.starts_with("https://")
                || url.starts_with("file:/"))
            {
                return Err(bad(
                    &["archive", "url"],
                    format!("{url:?} is not an http(s) or file: URL"),
                ));
            }
        }
        // The merged [cluster] is validated in `Profile::from_chain`; the
        // one rule a single file can break is baking the secret.
        if let Some(spec) = &self.cluster {
            if spec.secret.is_some() {
                return Err(bad(
                    &["cluster", "secret"],
                    "do not bake the cluster secret into an image: pass it at boot as the \
                     kubeboot.secret credential"
                        .into(),
                ));
            }
        }
        Ok(())
    }

    /// Merges `child` over `self` (the parent) with the rules in the module
    /// docs.
    pub fn merge(&self, child: &ProfileSpec) -> ProfileSpec {
        let pick = |a: &Option<String>, b: &Option<String>| b.clone().or_else(|| a.clone());
        let replaces = |key: &str| child.kubernetes.replace.iter().any(|k| k == key);
        let mut components = if replaces("components") {
            BTreeMap::new()
        } else {
            self.kubernetes.components.clone()
        };
        for (name, c) in &child.kubernetes.components {
            let base = components.remove(name).unwrap_or_default();
            components.insert(
                name.clone(),
                ComponentSpec {
                    url: pick(&base.url, &c.url),
                    sha256: pick(&base.sha256, &c.sha256),
                    path: pick(&base.path, &c.path),
                    unpack_to: pick(&base.unpack_to, &c.unpack_to),
                },
            );
        }
        let mut users = self.system.users.clone();
        for u in &child.system.users {
            users.retain(|x| x.name != u.name);
            users.push(u.clone());
        }
        let mut sysctls = self.system.sysctls.clone();
        sysctls.extend(child.system.sysctls.clone());
        let mut alternatives = self.system.alternatives.clone();
        alternatives.extend(child.system.alternatives.clone());
        ProfileSpec {
            name: pick(&self.name, &child.name),
            // The merged spec has no parent left to read.
            extends: None,
            description: pick(&self.description, &child.description),
            source_date_epoch: child.source_date_epoch.or(self.source_date_epoch),
            overlays: union(&self.overlays, &child.overlays),
            archive: ArchiveSpec {
                url: pick(&self.archive.url, &child.archive.url),
                suite: pick(&self.archive.suite, &child.archive.suite),
                components: child
                    .archive
                    .components
                    .clone()
                    .or_else(|| self.archive.components.clone()),
                architecture: pick(&self.archive.architecture, &child.archive.architecture),
                keyring: child
                    .archive
                    .keyring
                    .clone()
                    .or_else(|| self.archive.keyring.clone()),
            },
            packages: PackagesSpec {
                include: union(&self.packages.include, &child.packages.include),
                exclude: union(&self.packages.exclude, &child.packages.exclude),
                drop_paths: union(&self.packages.drop_paths, &child.packages.drop_paths),
            },
            kernel: KernelSpec {
                package: pick(&self.kernel.package, &child.kernel.package),
                modules: union(&self.kernel.modules, &child.kernel.modules),
                cmdline: pick(&self.kernel.cmdline, &child.kernel.cmdline),
            },
            system: SystemSpec {
                sysctls,
                modules_load: union(&self.system.modules_load, &child.system.modules_load),
                enable_units: union(&self.system.enable_units, &child.system.enable_units),
                default_target: pick(&self.system.default_target, &child.system.default_target),
                users,
                alternatives,
            },
            kubernetes: KubernetesSpec {
                // Applied here, to the parents: the merged spec has none left.
                replace: Vec::new(),
                version: pick(&self.kubernetes.version, &child.kubernetes.version),
                components,
                images: if replaces("images") {
                    union(&[], &child.kubernetes.images)
                } else {
                    union(&self.kubernetes.images, &child.kubernetes.images)
                },
                registry_mirrors: {
                    let mut m = if replaces("registry_mirrors") {
                        BTreeMap::new()
                    } else {
                        self.kubernetes.registry_mirrors.clone()
                    };
                    m.extend(child.kubernetes.registry_mirrors.clone());
                    m
                },
                cni: match (&self.kubernetes.cni, &child.kubernetes.cni) {
                    _ if replaces("cni") => child.kubernetes.cni.clone(),
                    (Some(a), Some(b)) => Some(CniSpec {
                        name: pick(&a.name, &b.name),
                        url: pick(&a.url, &b.url),
                        sha256: pick(&a.sha256, &b.sha256),
                        pod_cidr: pick(&a.pod_cidr, &b.pod_cidr),
                    }),
                    (a, b) => b.clone().or_else(|| a.clone()),
                },
            },
            cluster: match (&self.cluster, &child.cluster) {
                (Some(a), Some(b)) => Some(a.merge(b)),
                (a, b) => b.clone().or_else(|| a.clone()),
            },
        }
    }
}

/// `a` followed by the items of `b` not already present.
fn union(a: &[String], b: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(a.len() + b.len());
    for item in a.iter().chain(b) {
        if !out.contains(item) {
            out.push(item.clone());
        }
    }
    out
}
