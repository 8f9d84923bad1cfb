//! Profiles: the declarative description of an image.
//!
//! A profile is a TOML file. It may name a parent with `extends = "base.toml"`
//! (a path relative to the file); the chain is read root first and merged:
//!
//! * **lists append** (a union that keeps the first occurrence's order):
//!   `packages.include`, `packages.exclude`, `kernel.modules`,
//!   `system.modules_load`, `system.enable_units`, `system.users` (by name:
//!   a later user of the same name replaces the earlier one), `overlays`;
//! * **tables override key by key**: `archive`, `kernel`, `system.sysctls`,
//!   `system.alternatives`, `kubernetes.components.<name>` (field by field),
//!   `kubernetes.registry_mirrors`,
//!   and `[cluster]` (with [`ClusterSpec::merge`], the schema's own rule);
//! * **scalars override**: a child's value replaces its parent's;
//! * **replace instead of merge**, where a file says so: `[kubernetes]
//!   replace = ["components", "images"]` makes that file's
//!   `kubernetes.components` and `kubernetes.images` replace whatever its
//!   parents set, instead of merging with it (a listed key the file does
//!   not set becomes empty). The keys that may be listed are
//!   [`KUBERNETES_REPLACEABLE`]: `components`, `images`, `cni`,
//!   `registry_mirrors` (`version` is a scalar and always overrides). The
//!   rule applies to the file's parents only: a profile extending it merges
//!   as usual. This is how a derived profile moves to another Kubernetes
//!   version or other binaries and images without copying its parent;
//!   `imagegen pins --components-dir DIR` prints such a `[kubernetes]`
//!   table for a components directory.
//!
//! Parsing is pure ([`ProfileSpec::parse`] takes text and a file name);
//! [`load`] reads the chain from disk. Every error names the file, the line
//! and the dotted key at fault; an `extends` that cannot be followed (a
//! missing, unreadable, non-UTF-8 or oversized target, a directory or
//! device, a cycle, a chain too long) names the file and line that say
//! `extends`.
//!
//! Bounds on what `extends` makes [`load`] read: a chain holds at most
//! [`MAX_EXTENDS_DEPTH`] (8) files, the leaf included, and each must be a
//! regular file of at most [`MAX_PROFILE_BYTES`] (1 MiB) of UTF-8 text;
//! devices, FIFOs and directories are refused before they are opened.
//!
//! The user input is [`ProfileSpec`]; the validated result is [`Profile`].

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use cluster_config::{ClusterSpec, Role};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Default suite when a profile names none.
pub const DEFAULT_SUITE: &str = "bookworm";
/// Default architecture.
pub const DEFAULT_ARCHITECTURE: &str = "amd64";
/// Default archive keyring (from Debian's `debian-archive-keyring`).
pub const DEFAULT_KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";
/// Default kernel package.
pub const DEFAULT_KERNEL_PACKAGE: &str = "linux-image-amd64";
/// Default kernel command line for QEMU direct boot.
pub const DEFAULT_CMDLINE: &str = "console=ttyS0";
/// Default `SOURCE_DATE_EPOCH` when neither the command line, the
/// environment, the profile nor the lockfile gives one (2024-01-01T00:00:00Z).
pub const DEFAULT_SOURCE_DATE_EPOCH: u64 = 1_704_067_200;
/// The most files an `extends` chain may hold, the leaf included.
pub const MAX_EXTENDS_DEPTH: usize = 8;
/// The largest profile file read (profiles are a few KiB; this bounds what
/// a mistaken `extends` can make imagegen read).
pub const MAX_PROFILE_BYTES: u64 = 1 << 20;

/// Where in a profile something is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The profile file.
    pub file: PathBuf,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// 1-based column, when known.
    pub column: Option<usize>,
    /// Dotted key path, when known (for example `kernel.modules`).
    pub key: Option<String>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(col) = self.column {
                write!(f, ":{col}")?;
            }
        }
        if let Some(key) = &self.key {
            write!(f, ": key `{key}`")?;
        }
        Ok(())
    }
}

/// Errors from reading, parsing, merging or validating a profile.
#[derive(Debug, Error)]
pub enum ProfileError {
    /// The profile file given cannot be used: missing, unreadable, not a
    /// regular file, larger than [`MAX_PROFILE_BYTES`] or not UTF-8.
    #[error("cannot read profile {}: {reason}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why (the I/O error's text, or the rule broken).
        reason: String,
    },
    /// The text is not valid TOML.
    #[error("{location}: TOML syntax error: {message}")]
    Syntax {
        /// Where.
        location: Location,
        /// The parser's message.
        message: String,
    },
    /// A key is unknown or has the wrong type.
    #[error("{location}: {message}")]
    Schema {
        /// Where.
        location: Location,
        /// What is wrong.
        message: String,
    },
    /// A value has the right type but is not allowed.
    #[error("{location}: {message}")]
    Invalid {
        /// Where.
        location: Location,
        /// What is wrong and what would be right.
        message: String,
    },
    /// An `extends` cannot be followed: its target is missing, unreadable,
    /// not a regular file, too large or not UTF-8, or the chain loops or
    /// holds more than [`MAX_EXTENDS_DEPTH`] files.
    #[error("{location}: {reason}")]
    Extends {
        /// The `extends` line of the file that names the target.
        location: Location,
        /// What is wrong, naming the target or the chain.
        reason: String,
    },
    /// [`Profile::from_chain`] was given no file.
    #[error("no profile file to read")]
    EmptyChain,
}

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

/// Converts a byte offset into 1-based (line, column).
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.rfind('\n').map_or(offset, |nl| offset - nl - 1) + 1;
    (line, col)
}

/// Finds the line and column of a dotted key in TOML text (the key itself,
/// or the `[table]` header for a table), using toml_edit's spans.
pub fn locate_key(text: &str, key: &[&str]) -> Option<(usize, usize)> {
    let doc = toml_edit::ImDocument::parse(text).ok()?;
    let mut table: &dyn toml_edit::TableLike = doc.as_table();
    let mut span = None;
    for (i, part) in key.iter().enumerate() {
        let (k, item) = table.get_key_value(part)?;
        span = k.span().or_else(|| item.span());
        if i + 1 < key.len() {
            table = item.as_table_like()?;
        }
    }
    span.map(|s| line_col(text, s.start))
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

fn is_simple_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

/// Debian Policy 5.6.1: lowercase letters, digits, `+ - .`, at least two
/// characters, starting with an alphanumeric.
fn is_package_name(s: &str) -> bool {
    s.len() >= 2
        && s.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c))
}

fn is_module_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn is_unit_name(s: &str) -> bool {
    let Some((stem, suffix)) = s.rsplit_once('.') else {
        return false;
    };
    !stem.is_empty()
        && [
            "service",
            "socket",
            "target",
            "timer",
            "path",
            "mount",
            "automount",
            "swap",
            "slice",
        ]
        .contains(&suffix)
        && stem
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ":-_.\\@".contains(c))
}

/// A registry host as the first component of an image reference:
/// letters, digits, `.`, `-`, and an optional `:port`.
pub fn is_registry_host(s: &str) -> bool {
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (s, None),
    };
    !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
        && port
            .is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.chars().all(|c| c.is_ascii_digit()))
}

/// 64 lowercase hex digits.
pub fn is_sha256(s: &str) -> bool {
    s.len() == 64
        && s.chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
}

/// The validated archive settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Archive {
    /// Mirror URL; `None` means "take it from the host's apt sources".
    pub url: Option<String>,
    /// Suite.
    pub suite: String,
    /// Components.
    pub components: Vec<String>,
    /// Architecture.
    pub architecture: String,
    /// Keyring path.
    pub keyring: PathBuf,
}

/// A validated upstream component.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Component {
    /// Name (`kubelet`).
    pub name: String,
    /// Upstream URL.
    pub url: String,
    /// Expected SHA256 (lowercase hex).
    pub sha256: String,
    /// Install path in the image.
    pub path: String,
    /// A `.tar.gz` whose regular files go into this directory.
    pub unpack_to: Option<String>,
}

/// A container image reference pinned by digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImageRef {
    /// The reference without the digest (`registry.k8s.io/pause:3.9`), as
    /// an OCI archive names it (`org.opencontainers.image.ref.name` /
    /// `io.containerd.image.name`).
    pub name: String,
    /// The manifest (or index) digest, `sha256:<64 hex>`.
    pub digest: String,
}

impl ImageRef {
    /// Parses `name@sha256:<64 lowercase hex>`; `None` if it is not pinned.
    pub fn parse(text: &str) -> Option<ImageRef> {
        let (name, hex) = text.split_once("@sha256:")?;
        if name.is_empty() || name.contains(char::is_whitespace) || !is_sha256(hex) {
            return None;
        }
        Some(ImageRef {
            name: name.to_owned(),
            digest: format!("sha256:{hex}"),
        })
    }
}

/// The validated CNI manifest declaration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Cni {
    /// Name: the manifest is baked as `<name>.yaml`.
    pub name: String,
    /// Upstream URL.
    pub url: String,
    /// Expected SHA256 (lowercase hex).
    pub sha256: String,
    /// The pod CIDR as written in the manifest, if declared.
    pub pod_cidr: Option<String>,
}

/// The validated, merged profile.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    /// Image name.
    pub name: String,
    /// The files read, root first.
    pub files: Vec<PathBuf>,
    /// Description.
    pub description: Option<String>,
    /// Epoch from the profile, if it sets one.
    pub source_date_epoch: Option<u64>,
    /// Overlay directories, resolved against the file that named them.
    pub overlays: Vec<PathBuf>,
    /// Archive.
    pub archive: Archive,
    /// Requested packages (the kernel package included).
    pub include: Vec<String>,
    /// Excluded packages.
    pub exclude: Vec<String>,
    /// Paths removed after unpacking.
    pub drop_paths: Vec<String>,
    /// Kernel package.
    pub kernel_package: String,
    /// Kernel modules to keep.
    pub modules: Vec<String>,
    /// Kernel command line.
    pub cmdline: String,
    /// System setup.
    pub system: SystemSpec,
    /// Default target.
    pub default_target: String,
    /// Kubernetes version, if declared.
    pub kubernetes_version: Option<String>,
    /// Kubernetes components.
    pub components: Vec<Component>,
    /// Container images for the OCI archive, pinned by digest.
    pub images: Vec<ImageRef>,
    /// The CNI manifest, if declared.
    pub cni: Option<Cni>,
    /// Registry mirrors: registry host → mirror base URL
    /// (`[kubernetes] registry_mirrors`).
    pub registry_mirrors: BTreeMap<String, String>,
    /// The cluster configuration to bake (validated, role set).
    pub cluster: ClusterSpec,
    /// The node role.
    pub role: Role,
}

/// One file of a chain, as read: its path, text and parsed spec. Overlay
/// paths are already resolved against the file's directory.
#[derive(Debug, Clone)]
pub struct ChainFile {
    /// Path of the file.
    pub path: PathBuf,
    /// Its text (for locating keys in errors).
    pub text: String,
    /// Its parsed spec.
    pub spec: ProfileSpec,
}

impl Profile {
    /// Merges a chain (root first) and validates the result. Pure: the
    /// chain's texts are already read.
    pub fn from_chain(chain: &[ChainFile]) -> Result<Profile, ProfileError> {
        let leaf = chain.last().ok_or(ProfileError::EmptyChain)?;
        let mut merged = ProfileSpec::default();
        for f in chain {
            merged = merged.merge(&f.spec);
        }
        // A merged-level error points at the last file that set the key (or
        // the leaf when none did).
        let bad = |key: &[&str], message: String| {
            let hit = chain
                .iter()
                .rev()
                .find_map(|f| locate_key(&f.text, key).map(|p| (f, p)));
            let (file, pos) = match hit {
                Some((f, p)) => (f.path.clone(), Some(p)),
                None => (leaf.path.clone(), None),
            };
            ProfileError::Invalid {
                location: Location {
                    file,
                    line: pos.map(|p| p.0),
                    column: pos.map(|p| p.1),
                    key: Some(key.join(".")),
                },
                message,
            }
        };

        let name = match merged.name.clone() {
            Some(n) if chain.len() == 1 || leaf.spec.name.is_some() => n,
            // A child without its own name takes its file stem, not its
            // parent's name.
            _ => {
                let stem = leaf
                    .path
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                if !is_simple_name(&stem) {
                    return Err(bad(
                        &["name"],
                        format!("no name set and the file stem {stem:?} is not a valid name"),
                    ));
                }
                stem
            }
        };

        let cluster_spec = merged.cluster.clone().unwrap_or_default();
        let role = cluster_spec.role.ok_or_else(|| {
            bad(
                &["cluster", "role"],
                "missing: set [cluster] role = \"master\" or \"worker\"".into(),
            )
        })?;
        if let Err(e) = cluster_spec.validate() {
            let (key, message) = match &e {
                cluster_config::ConfigError::Invalid { key, reason } => {
                    let key = key.strip_prefix("cluster.").unwrap_or(key);
                    (format!("cluster.{key}"), reason.clone())
                }
                cluster_config::ConfigError::Parse { message, .. } => {
                    ("cluster".to_owned(), message.clone())
                }
            };
            let parts: Vec<&str> = key.split('.').collect();
            return Err(bad(&parts, message));
        }

        let mut components = Vec::new();
        for (cname, c) in &merged.kubernetes.components {
            let url = c.url.clone().ok_or_else(|| {
                bad(
                    &["kubernetes", "components", cname],
                    format!("component {cname} has no url"),
                )
            })?;
            let sha256 = c.sha256.clone().ok_or_else(|| {
                bad(
                    &["kubernetes", "components", cname],
                    format!("component {cname} has no sha256: pin every upstream artifact"),
                )
            })?;
            components.push(Component {
                name: cname.clone(),
                url,
                sha256,
                path: c
                    .path
                    .clone()
                    .unwrap_or_else(|| format!("/usr/bin/{cname}")),
                unpack_to: c.unpack_to.clone(),
            });
        }
        // Validated by ProfileSpec::validate: every entry parses.
        let images: Vec<ImageRef> = merged
            .kubernetes
            .images
            .iter()
            .filter_map(|i| ImageRef::parse(i))
            .collect();
        let cni = match &merged.kubernetes.cni {
            None => None,
            Some(c) => {
                let need = |v: &Option<String>, key: &str| {
                    v.clone().ok_or_else(|| {
                        bad(
                            &["kubernetes", "cni", key],
                            format!("the CNI declares no {key}"),
                        )
                    })
                };
                Some(Cni {
                    name: need(&c.name, "name")?,
                    url: need(&c.url, "url")?,
                    sha256: need(&c.sha256, "sha256")?,
                    pod_cidr: c.pod_cidr.clone(),
                })
            }
        };
        if !components.is_empty() && merged.kubernetes.version.is_none() {
            return Err(bad(
                &["kubernetes", "version"],
                "components are declared but no version".into(),
            ));
        }

        let kernel_package = merged
            .kernel
            .package
            .clone()
            .unwrap_or_else(|| DEFAULT_KERNEL_PACKAGE.to_owned());
        let mut include = merged.packages.include.clone();
        if !include.contains(&kernel_package) {
            include.push(kernel_package.clone());
        }
        if let Some(p) = include.iter().find(|p| merged.packages.exclude.contains(p)) {
            return Err(bad(
                &["packages", "exclude"],
                format!("{p} is both included and excluded"),
            ));
        }
        let overlays = merged.overlays.iter().map(PathBuf::from).collect();

        Ok(Profile {
            name,
            files: chain.iter().map(|f| f.path.clone()).collect(),
            description: merged.description.clone(),
            source_date_epoch: merged.source_date_epoch,
            overlays,
            archive: Archive {
                url: merged.archive.url.clone(),
                suite: merged
                    .archive
                    .suite
                    .clone()
                    .unwrap_or_else(|| DEFAULT_SUITE.to_owned()),
                components: merged
                    .archive
                    .components
                    .clone()
                    .unwrap_or_else(|| vec!["main".to_owned()]),
                architecture: merged
                    .archive
                    .architecture
                    .clone()
                    .unwrap_or_else(|| DEFAULT_ARCHITECTURE.to_owned()),
                keyring: merged
                    .archive
                    .keyring
                    .clone()
                    .unwrap_or_else(|| PathBuf::from(DEFAULT_KEYRING)),
            },
            include,
            exclude: merged.packages.exclude.clone(),
            drop_paths: merged.packages.drop_paths.clone(),
            kernel_package,
            modules: merged.kernel.modules.clone(),
            cmdline: merged
                .kernel
                .cmdline
                .clone()
                .unwrap_or_else(|| DEFAULT_CMDLINE.to_owned()),
            default_target: merged
                .system
                .default_target
                .clone()
                .unwrap_or_else(|| "multi-user.target".to_owned()),
            system: merged.system.clone(),
            kubernetes_version: merged.kubernetes.version.clone(),
            components,
            images,
            cni,
            registry_mirrors: merged.kubernetes.registry_mirrors.clone(),
            cluster: cluster_spec,
            role,
        })
    }
}

/// Reads one profile file: a regular file (a device such as `/dev/zero`,
/// a FIFO or a directory is refused before it is opened) of at most
/// [`MAX_PROFILE_BYTES`], UTF-8. The error is the reason, for the caller to
/// place.
fn read_profile_text(path: &Path) -> Result<String, String> {
    use std::io::Read;
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if meta.is_dir() {
        return Err("is a directory, not a profile file".into());
    }
    if !meta.is_file() {
        return Err("is not a regular file (a device, FIFO or socket), not a profile".into());
    }
    let too_large =
        || format!("is larger than {MAX_PROFILE_BYTES} bytes, the most a profile may be");
    if meta.len() > MAX_PROFILE_BYTES {
        return Err(too_large());
    }
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut bytes = Vec::new();
    // Bounded again: the file may have grown since it was measured.
    file.take(MAX_PROFILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > MAX_PROFILE_BYTES {
        return Err(too_large());
    }
    String::from_utf8(bytes).map_err(|e| {
        let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let line = valid.iter().filter(|&&b| b == b'\n').count() + 1;
        format!("is not UTF-8 text (line {line})")
    })
}

/// Reads a profile and its `extends` chain from disk, then merges and
/// validates it. Overlay paths come back absolute (resolved against the
/// file that names them). See the module docs for the bounds on `extends`.
pub fn load(path: &Path) -> Result<Profile, ProfileError> {
    let mut chain: Vec<ChainFile> = Vec::new();
    let mut canonicals: Vec<PathBuf> = Vec::new();
    // The next file and, for a parent, the `extends` line that names it.
    let mut next: Option<(PathBuf, Option<Location>)> = Some((path.to_owned(), None));
    while let Some((p, named_at)) = next.take() {
        let fail = |reason: String| match &named_at {
            None => ProfileError::Read {
                path: p.clone(),
                reason,
            },
            Some(location) => ProfileError::Extends {
                location: location.clone(),
                reason,
            },
        };
        // A target that cannot be read: the leaf's own error, or the
        // `extends` line naming it.
        let unreadable = |reason: String| match named_at {
            None => fail(reason),
            Some(_) => fail(format!("extends {}: {reason}", p.display())),
        };
        let canonical = p.canonicalize().map_err(|e| unreadable(e.to_string()))?;
        let names = |extra: &Path| {
            chain
                .iter()
                .map(|f| f.path.display().to_string())
                .chain([extra.display().to_string()])
                .collect::<Vec<_>>()
                .join(" -> ")
        };
        if canonicals.contains(&canonical) {
            return Err(fail(format!("extends cycle: {}", names(&p))));
        }
        if chain.len() >= MAX_EXTENDS_DEPTH {
            return Err(fail(format!(
                "the extends chain is longer than {MAX_EXTENDS_DEPTH} files, the most allowed: {}",
                names(&p)
            )));
        }
        let text = read_profile_text(&canonical).map_err(unreadable)?;
        let mut spec = ProfileSpec::parse(&p, &text)?;
        let dir = canonical.parent().unwrap_or(Path::new("/")).to_owned();
        spec.overlays = spec
            .overlays
            .iter()
            .map(|o| dir.join(o).display().to_string())
            .collect();
        if let Some(parent) = &spec.extends {
            let pos = locate_key(&text, &["extends"]);
            next = Some((
                dir.join(parent),
                Some(Location {
                    file: p.clone(),
                    line: pos.map(|x| x.0),
                    column: pos.map(|x| x.1),
                    key: Some("extends".into()),
                }),
            ));
        }
        canonicals.push(canonical);
        chain.push(ChainFile {
            path: p,
            text,
            spec,
        });
    }
    chain.reverse();
    Profile::from_chain(&chain)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ProfileSpec, ProfileError> {
        ProfileSpec::parse(Path::new("p.toml"), text)
    }

    fn chain(files: &[(&str, &str)]) -> Vec<ChainFile> {
        files
            .iter()
            .map(|(name, text)| ChainFile {
                path: PathBuf::from(name),
                text: text.to_string(),
                spec: ProfileSpec::parse(Path::new(name), text).unwrap(),
            })
            .collect()
    }

    #[test]
    fn syntax_error_names_file_and_line() {
        let err = parse("name = \"x\"\n[packages\ninclude = []\n").unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, ProfileError::Syntax { .. }), "{text}");
        assert!(text.starts_with("p.toml:2:"), "{text}");
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let err = parse("[kernel]\npackage = \"linux-image-amd64\"\nmodles = [\"virtio\"]\n")
            .unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, ProfileError::Schema { .. }), "{text}");
        assert!(text.starts_with("p.toml:3:"), "{text}");
        assert!(text.contains("modles"), "{text}");
    }

    #[test]
    fn wrong_type_names_file_line_and_key() {
        let err = parse("[packages]\ninclude = \"systemd\"\n").unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, ProfileError::Schema { .. }), "{text}");
        assert!(text.starts_with("p.toml:2:"), "{text}");
        assert!(text.contains("key `packages.include`"), "{text}");
    }

    #[test]
    fn wrong_type_in_cluster_table_names_key() {
        let err = parse("[cluster]\nrole = \"master\"\nmasters = \"three\"\n").unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("p.toml:3:"), "{text}");
        assert!(text.contains("cluster.masters"), "{text}");
    }

    #[test]
    fn bad_sha256_names_component_key() {
        let err = parse(
            "[kubernetes]\nversion = \"v1.30.4\"\n[kubernetes.components.kubelet]\n\
             url = \"https://example.invalid/kubelet\"\nsha256 = \"abc\"\n",
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, ProfileError::Invalid { .. }), "{text}");
        assert!(text.starts_with("p.toml:5:"), "{text}");
        assert!(
            text.contains("kubernetes.components.kubelet.sha256"),
            "{text}"
        );
    }

    #[test]
    fn bad_package_name_is_refused() {
        let err = parse("[packages]\ninclude = [\"systemd\", \"Bad_Name\"]\n").unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("p.toml:2:"), "{text}");
        assert!(text.contains("Bad_Name"), "{text}");
    }

    #[test]
    fn relative_drop_path_is_refused() {
        let err = parse("[packages]\ndrop_paths = [\"usr/share/man\"]\n").unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("p.toml:2:"), "{text}");
        assert!(text.contains("packages.drop_paths"), "{text}");
    }

    #[test]
    fn baked_secret_is_refused() {
        let err = parse("[cluster]\nsecret = \"0123456789abcdef0123\"\n").unwrap_err();
        assert!(err.to_string().contains("cluster.secret"), "{err}");
    }

    #[test]
    fn merge_appends_lists_and_overrides_tables() {
        let c = chain(&[
            (
                "base.toml",
                "[packages]\ninclude = [\"systemd\", \"runc\"]\n[kernel]\nmodules = [\"virtio_blk\"]\n\
                 [system.sysctls]\n\"net.ipv4.ip_forward\" = 1\n\"vm.swappiness\" = 10\n\
                 [cluster]\nname = \"c1\"\nrole = \"worker\"\n[cluster.vrrp]\npriority = 50\n",
            ),
            (
                "master.toml",
                "extends = \"base.toml\"\n[packages]\ninclude = [\"etcd-server\", \"runc\"]\n\
                 [kernel]\nmodules = [\"overlay\"]\n[system.sysctls]\n\"vm.swappiness\" = 0\n\
                 [cluster]\nrole = \"master\"\n",
            ),
        ]);
        let p = Profile::from_chain(&c).unwrap();
        assert_eq!(p.name, "master");
        assert_eq!(
            p.include,
            ["systemd", "runc", "etcd-server", DEFAULT_KERNEL_PACKAGE]
        );
        assert_eq!(p.modules, ["virtio_blk", "overlay"]);
        assert_eq!(
            p.system.sysctls.get("vm.swappiness"),
            Some(&SysctlValue::Int(0))
        );
        assert_eq!(
            p.system.sysctls.get("net.ipv4.ip_forward"),
            Some(&SysctlValue::Int(1))
        );
        assert_eq!(p.role, Role::Master);
        assert_eq!(p.cluster.name.as_deref(), Some("c1"));
        assert_eq!(p.cluster.vrrp.priority, Some(50));
        assert_eq!(p.archive.suite, DEFAULT_SUITE);
    }

    #[test]
    fn missing_role_points_at_cluster_role() {
        let c = chain(&[("w.toml", "[cluster]\nname = \"c1\"\n")]);
        let err = Profile::from_chain(&c).unwrap_err();
        assert!(err.to_string().contains("cluster.role"), "{err}");
    }

    #[test]
    fn invalid_cluster_value_names_file_and_line() {
        let c = chain(&[
            ("base.toml", "[cluster]\nrole = \"master\"\n"),
            (
                "m.toml",
                "extends = \"base.toml\"\n[cluster]\nmasters = 4\n",
            ),
        ]);
        let err = Profile::from_chain(&c).unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("m.toml:3:"), "{text}");
        assert!(text.contains("cluster.masters"), "{text}");
    }

    #[test]
    fn component_without_sha_is_refused() {
        let c = chain(&[(
            "m.toml",
            "[kubernetes]\nversion = \"v1\"\n[kubernetes.components.kubelet]\n\
             url = \"https://example.invalid/kubelet\"\n[cluster]\nrole = \"master\"\n",
        )]);
        let err = Profile::from_chain(&c).unwrap_err();
        assert!(err.to_string().contains("no sha256"), "{err}");
    }

    #[test]
    fn image_without_digest_is_refused_with_the_key() {
        let err = parse("[kubernetes]\nimages = [\"registry.k8s.io/pause:3.9\"]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("kubernetes.images"), "{err}");
        assert!(err.contains("not pinned by digest"), "{err}");
    }

    #[test]
    fn images_append_and_cni_merges_field_by_field() {
        let d1 = "a".repeat(64);
        let d2 = "b".repeat(64);
        let parent = format!(
            "[kubernetes]\nimages = [\"r/pause:3.9@sha256:{d1}\"]\n\
             [kubernetes.cni]\nname = \"flannel\"\nurl = \"https://example.invalid/f.yml\"\n\
             sha256 = \"{d1}\"\npod_cidr = \"10.244.0.0/16\"\n"
        );
        let child = format!(
            "extends = \"p.toml\"\n[kubernetes]\nimages = [\"r/dns:v1@sha256:{d2}\"]\n\
             [kubernetes.cni]\nsha256 = \"{d2}\"\n[cluster]\nrole = \"master\"\n"
        );
        let p = Profile::from_chain(&chain(&[("p.toml", &parent), ("m.toml", &child)])).unwrap();
        let names: Vec<&str> = p.images.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["r/pause:3.9", "r/dns:v1"]);
        assert_eq!(p.images[1].digest, format!("sha256:{d2}"));
        let cni = p.cni.unwrap();
        assert_eq!(cni.name, "flannel");
        assert_eq!(cni.sha256, d2);
        assert_eq!(cni.pod_cidr.as_deref(), Some("10.244.0.0/16"));
    }

    #[test]
    fn replace_swaps_the_parents_pins_instead_of_merging() {
        let d = |c: char| c.to_string().repeat(64);
        let base = format!(
            "[kubernetes]\nversion = \"v1.30.4\"\n\
             images = [\"r/apiserver:v1.30.4@sha256:{}\", \"r/pause:3.9@sha256:{}\"]\n\
             [kubernetes.registry_mirrors]\n\"r\" = \"http://127.0.0.1:5000\"\n\
             [kubernetes.components.kubelet]\nurl = \"https://example.invalid/v1.30.4/kubelet\"\n\
             sha256 = \"{}\"\n\
             [kubernetes.components.crictl]\nurl = \"https://example.invalid/crictl.tar.gz\"\n\
             sha256 = \"{}\"\nunpack_to = \"/usr/bin\"\n\
             [kubernetes.cni]\nname = \"flannel\"\nurl = \"https://example.invalid/f.yml\"\n\
             sha256 = \"{}\"\n",
            d('a'),
            d('b'),
            d('c'),
            d('d'),
            d('e')
        );
        let derived = format!(
            "extends = \"base.toml\"\n[kubernetes]\nversion = \"v1.24.0\"\n\
             replace = [\"components\", \"images\"]\n\
             images = [\"r/apiserver:v1.24.0@sha256:{}\"]\n\
             [kubernetes.components.kubelet]\nurl = \"https://example.invalid/v1.24.0/kubelet\"\n\
             sha256 = \"{}\"\n[cluster]\nrole = \"master\"\n",
            d('1'),
            d('2')
        );
        let p = Profile::from_chain(&chain(&[("base.toml", &base), ("m.toml", &derived)])).unwrap();
        assert_eq!(p.kubernetes_version.as_deref(), Some("v1.24.0"));
        let images: Vec<String> = p
            .images
            .iter()
            .map(|i| format!("{}@{}", i.name, i.digest))
            .collect();
        assert_eq!(images, [format!("r/apiserver:v1.24.0@sha256:{}", d('1'))]);
        assert_eq!(p.components.len(), 1, "crictl is gone: {:?}", p.components);
        assert_eq!(p.components[0].name, "kubelet");
        assert_eq!(
            p.components[0].url,
            "https://example.invalid/v1.24.0/kubelet"
        );
        assert_eq!(p.components[0].sha256, d('2'));
        // Keys not listed still merge.
        assert_eq!(p.cni.as_ref().map(|c| c.sha256.clone()), Some(d('e')));
        assert_eq!(p.registry_mirrors.len(), 1);

        // Replaced components are not merged field by field: a component
        // without its url is incomplete, not completed from the parent.
        let no_url = format!(
            "extends = \"base.toml\"\n[kubernetes]\nreplace = [\"components\"]\n\
             [kubernetes.components.kubelet]\nsha256 = \"{}\"\n[cluster]\nrole = \"master\"\n",
            d('2')
        );
        let err = Profile::from_chain(&chain(&[("base.toml", &base), ("m.toml", &no_url)]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("component kubelet has no url"), "{err}");

        // A listed key the file does not set becomes empty; a grandchild
        // without `replace` merges with the replaced value as usual.
        let empty = "extends = \"base.toml\"\n[kubernetes]\nreplace = [\"images\", \"cni\", \"registry_mirrors\"]\n";
        let leaf = format!(
            "extends = \"mid.toml\"\n[kubernetes]\nimages = [\"r/dns:v1@sha256:{}\"]\n\
             [cluster]\nrole = \"worker\"\n",
            d('3')
        );
        let p = Profile::from_chain(&chain(&[
            ("base.toml", &base),
            ("mid.toml", empty),
            ("w.toml", &leaf),
        ]))
        .unwrap();
        let names: Vec<&str> = p.images.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["r/dns:v1"]);
        assert!(p.cni.is_none() && p.registry_mirrors.is_empty());
        assert_eq!(p.components.len(), 2, "components were not listed: kept");
    }

    #[test]
    fn replace_of_an_unknown_key_names_the_line() {
        let err = parse("[kubernetes]\nversion = \"v1\"\nreplace = [\"images\", \"version\"]\n")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "p.toml:3:1: key `kubernetes.replace`: \"version\" cannot be replaced: list some of \
             components, images, cni, registry_mirrors"
        );
    }

    #[test]
    fn registry_mirrors_override_key_by_key_and_are_checked() {
        let parent = "[kubernetes.registry_mirrors]\n\
                      \"registry.k8s.io\" = \"http://127.0.0.1:5000\"\n\
                      \"docker.io\" = \"https://mirror.example\"\n";
        let child = "extends = \"p.toml\"\n[kubernetes.registry_mirrors]\n\
                     \"registry.k8s.io\" = \"http://10.0.0.1:5000\"\n[cluster]\nrole = \"master\"\n";
        let p = Profile::from_chain(&chain(&[("p.toml", parent), ("m.toml", child)])).unwrap();
        assert_eq!(
            p.registry_mirrors
                .get("registry.k8s.io")
                .map(String::as_str),
            Some("http://10.0.0.1:5000")
        );
        assert_eq!(
            p.registry_mirrors.get("docker.io").map(String::as_str),
            Some("https://mirror.example")
        );
        let err =
            parse("[kubernetes.registry_mirrors]\n\"registry.k8s.io\" = \"127.0.0.1:5000\"\n")
                .unwrap_err()
                .to_string();
        assert!(err.contains("kubernetes.registry_mirrors"), "{err}");
        assert!(err.contains("not an http(s) URL"), "{err}");
        let err = parse("[kubernetes.registry_mirrors]\n\"http://r.example\" = \"http://m\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a registry host"), "{err}");
    }

    #[test]
    fn cni_without_url_is_refused() {
        let c = chain(&[(
            "m.toml",
            "[kubernetes.cni]\nname = \"flannel\"\n[cluster]\nrole = \"master\"\n",
        )]);
        let err = Profile::from_chain(&c).unwrap_err().to_string();
        assert!(err.contains("kubernetes.cni.url"), "{err}");
    }

    #[test]
    fn included_and_excluded_is_refused() {
        let c = chain(&[(
            "m.toml",
            "[packages]\ninclude = [\"vim\"]\nexclude = [\"vim\"]\n[cluster]\nrole = \"master\"\n",
        )]);
        let err = Profile::from_chain(&c).unwrap_err();
        assert!(
            err.to_string().contains("both included and excluded"),
            "{err}"
        );
    }

    /// Writes `files` (name, text) into a fresh directory.
    fn profiles(files: &[(&str, &[u8])]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        dir
    }

    #[test]
    fn extends_cycle_names_the_file_and_line_that_close_it() {
        let dir = profiles(&[
            ("a.toml", &b"# leaf\nextends = \"b.toml\"\n"[..]),
            ("b.toml", &b"name = \"b\"\n\nextends = \"a.toml\"\n"[..]),
        ]);
        let (a, b) = (dir.path().join("a.toml"), dir.path().join("b.toml"));
        let err = load(&a).unwrap_err();
        assert!(matches!(err, ProfileError::Extends { .. }), "{err}");
        assert_eq!(
            err.to_string(),
            format!(
                "{}:3:1: key `extends`: extends cycle: {} -> {} -> {}",
                b.display(),
                a.display(),
                b.display(),
                a.display()
            )
        );
    }

    #[test]
    fn extends_chain_longer_than_the_limit_says_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..=MAX_EXTENDS_DEPTH {
            std::fs::write(
                dir.path().join(format!("p{i}.toml")),
                format!("extends = \"p{}.toml\"\n", i + 1),
            )
            .unwrap();
        }
        let err = load(&dir.path().join("p0.toml")).unwrap_err().to_string();
        let last = dir.path().join(format!("p{}.toml", MAX_EXTENDS_DEPTH - 1));
        assert!(
            err.starts_with(&format!("{}:1:1: key `extends`: ", last.display())),
            "{err}"
        );
        assert!(
            err.contains("the extends chain is longer than 8 files, the most allowed: "),
            "{err}"
        );
        assert!(err.ends_with("p8.toml"), "{err}");
        // Exactly the limit is fine (the chain's end is a plain profile).
        std::fs::write(
            dir.path().join(format!("p{}.toml", MAX_EXTENDS_DEPTH - 1)),
            "[cluster]\nrole = \"worker\"\n",
        )
        .unwrap();
        let p = load(&dir.path().join("p0.toml")).unwrap();
        assert_eq!(p.files.len(), MAX_EXTENDS_DEPTH);
    }

    #[test]
    fn unusable_extends_targets_name_the_extends_line() {
        let dir = profiles(&[
            (
                "big.toml",
                vec![b'#'; MAX_PROFILE_BYTES as usize + 1].as_slice(),
            ),
            ("latin1.toml", &b"name = \"x\"\n# caf\xe9\n"[..]),
        ]);
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let d = dir.path();
        for (target, reason) in [
            (
                "nope.toml".to_owned(),
                "No such file or directory (os error 2)".to_owned(),
            ),
            ("sub".into(), "is a directory, not a profile file".into()),
            // Refused before it is opened: the read would never end.
            (
                "/dev/zero".into(),
                "is not a regular file (a device, FIFO or socket), not a profile".into(),
            ),
            (
                "big.toml".into(),
                format!("is larger than {MAX_PROFILE_BYTES} bytes, the most a profile may be"),
            ),
            ("latin1.toml".into(), "is not UTF-8 text (line 2)".into()),
        ] {
            std::fs::write(
                d.join("leaf.toml"),
                format!("# a worker\n\nname = \"w\"\n  extends = \"{target}\"\n[cluster]\nrole = \"worker\"\n"),
            )
            .unwrap();
            let err = load(&d.join("leaf.toml")).unwrap_err();
            assert!(matches!(err, ProfileError::Extends { .. }), "{err}");
            let resolved = if target.starts_with('/') {
                PathBuf::from(&target)
            } else {
                d.join(&target)
            };
            assert_eq!(
                err.to_string(),
                format!(
                    "{}:4:3: key `extends`: extends {}: {reason}",
                    d.join("leaf.toml").display(),
                    resolved.display()
                ),
                "{target}"
            );
        }
    }

    #[test]
    fn unusable_leaf_says_cannot_read_profile() {
        let err = load(Path::new("/dev/zero")).unwrap_err().to_string();
        assert_eq!(
            err,
            "cannot read profile /dev/zero: is not a regular file (a device, FIFO or socket), not a profile"
        );
        let err = load(Path::new("/nonexistent/p.toml"))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "cannot read profile /nonexistent/p.toml: No such file or directory (os error 2)"
        );
    }

    #[test]
    fn repository_profiles_load() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../profiles");
        for (file, role, has_etcd) in [
            ("master.toml", Role::Master, true),
            ("worker.toml", Role::Worker, false),
        ] {
            let p = load(&root.join(file)).unwrap();
            assert_eq!(p.role, role);
            assert_eq!(
                p.include.iter().any(|x| x == "etcd-server"),
                has_etcd,
                "{file}"
            );
            assert!(p.include.iter().any(|x| x == "containerd"), "{file}");
            assert!(p.modules.iter().any(|m| m == "br_netfilter"), "{file}");
            let names: Vec<&str> = p.components.iter().map(|c| c.name.as_str()).collect();
            assert_eq!(
                names,
                ["cni-plugins", "crictl", "kubeadm", "kubectl", "kubelet"],
                "{file}"
            );
            assert!(p
                .images
                .iter()
                .any(|i| i.name == "registry.k8s.io/pause:3.9"));
            assert!(
                p.overlays.iter().all(|o| o.is_dir()),
                "{file}: {:?}",
                p.overlays
            );
        }
    }

    #[test]
    fn line_col_counts_from_one() {
        assert_eq!(line_col("ab\ncd", 0), (1, 1));
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
    }
}
