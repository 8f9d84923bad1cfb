//! `manifest.json`: what went into an image.
//!
//! Written last into the output directory; its presence marks a complete
//! build. Holds no build-host paths, users or times, so two builds of the
//! same profile and lockfile write the same bytes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::bake::KubernetesRecord;

/// File name of the manifest in the output directory.
pub const MANIFEST_FILE: &str = "manifest.json";
/// File name of the kernel in the output directory.
pub const KERNEL_FILE: &str = "vmlinuz";
/// File name of the initramfs in the output directory.
pub const INITRAMFS_FILE: &str = "initramfs.img";
/// Manifest schema version.
pub const FORMAT_VERSION: u32 = 1;

/// One installed Debian package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageRecord {
    /// Name.
    pub name: String,
    /// Exact version.
    pub version: String,
    /// Architecture.
    pub architecture: String,
    /// SHA256 of the `.deb`, from the signed index.
    pub sha256: String,
}

/// The kernel in the image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelRecord {
    /// Package it came from.
    pub package: String,
    /// Kernel release (`uname -r`).
    pub release: String,
    /// Modules kept (requested ones and their dependencies).
    pub modules_kept: Vec<String>,
}

/// Sizes in bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sizes {
    /// Entries in the initramfs.
    pub entries: u64,
    /// Uncompressed cpio archive.
    pub initramfs_uncompressed: u64,
    /// Compressed initramfs.
    pub initramfs_compressed: u64,
    /// Kernel image.
    pub vmlinuz: u64,
}

/// `manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Schema version.
    pub format_version: u32,
    /// Image (profile) name.
    pub profile: String,
    /// Node role.
    pub role: String,
    /// Profile file names of the chain, root first (names only).
    pub profile_files: Vec<String>,
    /// Output format (`initramfs`).
    pub format: String,
    /// Suite.
    pub suite: String,
    /// Architecture.
    pub architecture: String,
    /// The timestamp of every file.
    pub source_date_epoch: u64,
    /// Kernel command line to boot with.
    pub cmdline: String,
    /// Kernel.
    pub kernel: KernelRecord,
    /// Debian packages, sorted by name.
    pub packages: Vec<PackageRecord>,
    /// Kubernetes components (present, or absent with the reason).
    pub kubernetes: KubernetesRecord,
    /// SHA256 of the agent binary baked at `/usr/bin/agent`.
    pub agent_sha256: String,
    /// Sizes.
    pub sizes: Sizes,
    /// SHA256 of each output file (the manifest itself excluded).
    pub outputs: BTreeMap<String, String>,
}

impl Manifest {
    /// Renders the manifest (pretty JSON, trailing newline).
    pub fn to_json(&self) -> String {
        // Plain data with string keys: serialisation cannot fail.
        let mut s = serde_json::to_string_pretty(self).unwrap_or_default();
        s.push('\n');
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_round_trips_and_is_stable() {
        let m = Manifest {
            format_version: FORMAT_VERSION,
            profile: "master".into(),
            role: "master".into(),
            profile_files: vec!["base.toml".into(), "master.toml".into()],
            format: "initramfs".into(),
            suite: "bookworm".into(),
            architecture: "amd64".into(),
            source_date_epoch: 1,
            cmdline: "console=ttyS0".into(),
            kernel: KernelRecord {
                package: "linux-image-amd64".into(),
                release: "6.1.0-1-amd64".into(),
                modules_kept: vec!["overlay".into()],
            },
            packages: vec![PackageRecord {
                name: "runc".into(),
                version: "1.1.5".into(),
                architecture: "amd64".into(),
                sha256: "00".repeat(32),
            }],
            kubernetes: KubernetesRecord::absent(None),
            agent_sha256: "11".repeat(32),
            sizes: Sizes {
                entries: 1,
                initramfs_uncompressed: 2,
                initramfs_compressed: 3,
                vmlinuz: 4,
            },
            outputs: BTreeMap::from([(KERNEL_FILE.into(), "22".repeat(32))]),
        };
        let json = m.to_json();
        assert_eq!(json, m.to_json());
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["kubernetes"]["present"], false);
        assert_eq!(v["kubernetes"]["reason"], "built with --without-kubernetes");
        assert_eq!(v["outputs"]["vmlinuz"], "22".repeat(32));
    }
}
