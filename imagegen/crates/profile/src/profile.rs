//! The validated result: [`Profile`], made by merging a chain of parsed
//! files root first and validating the merge ([`Profile::from_chain`],
//! pure), with the defaults for what no file sets.

use std::collections::BTreeMap;
use std::path::PathBuf;

use cluster_config::{ClusterSpec, Role};
use serde::Serialize;

use crate::error::{locate_key, Location, ProfileError};
use crate::names::{is_simple_name, ImageRef};
use crate::spec::{ProfileSpec, SystemSpec};

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
