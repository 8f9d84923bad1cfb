//! Files that imagegen generates from the profile (pure).
//!
//! Everything an image needs beyond its packages and overlays, as data:
//! sysctls, `modules-load.d`, the cluster configuration in the agent's
//! schema, the Kubernetes presence record, the empty machine id (generated
//! per node at boot), `/init` for the kernel, and masks for console gettys.
//! The pipeline writes these entries into the root filesystem tree.

use std::fmt::Write as _;

use crate::profile::Profile;

/// The Kubernetes record (`/usr/lib/kubeboot/kubernetes.toml`, and the
/// manifest's `kubernetes`): its schema is the `kubernetes-record` crate,
/// shared with the agent, which reads it.
pub use kubernetes_record::{InstalledComponent, KubernetesRecord};

/// Where the CNI manifest is baked (`<dir>/<name>.yaml`).
pub const CNI_DIR: &str = "/usr/lib/kubeboot/cni";
/// Where the profile's sysctls are written.
pub const SYSCTL_PATH: &str = "/etc/sysctl.d/90-kubeboot.conf";
/// Where the boot-time module list is written.
pub const MODULES_LOAD_PATH: &str = "/etc/modules-load.d/kubeboot.conf";

/// One generated entry of the root filesystem (owner root:root).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A regular file.
    File {
        /// Absolute path in the image.
        path: String,
        /// Permission bits.
        mode: u32,
        /// Contents.
        data: Vec<u8>,
    },
    /// A symbolic link.
    Symlink {
        /// Absolute path in the image.
        path: String,
        /// Link target, as written.
        target: String,
    },
}

impl Entry {
    /// The entry's path in the image.
    pub fn path(&self) -> &str {
        match self {
            Entry::File { path, .. } | Entry::Symlink { path, .. } => path,
        }
    }
}

fn file(path: &str, mode: u32, data: impl Into<Vec<u8>>) -> Entry {
    Entry::File {
        path: path.to_owned(),
        mode,
        data: data.into(),
    }
}

fn symlink(path: &str, target: &str) -> Entry {
    Entry::Symlink {
        path: path.to_owned(),
        target: target.to_owned(),
    }
}

/// The generated entries for `profile`, sorted by path.
pub fn generated(profile: &Profile, kubernetes: &KubernetesRecord) -> Vec<Entry> {
    let mut out = Vec::new();

    let mut sysctl = String::from("# Written by imagegen from the profile's [system.sysctls].\n");
    for (key, value) in &profile.system.sysctls {
        let _ = writeln!(sysctl, "{key} = {value}");
    }
    out.push(file(SYSCTL_PATH, 0o644, sysctl));

    let mut modules =
        String::from("# Written by imagegen from the profile's system.modules_load.\n");
    for m in &profile.system.modules_load {
        let _ = writeln!(modules, "{m}");
    }
    out.push(file(MODULES_LOAD_PATH, 0o644, modules));

    let cluster = format!(
        "# Written by imagegen from the profile's [cluster] table\n\
         # (schema: agent/crates/cluster-config).\n{}",
        profile.cluster.to_toml()
    );
    out.push(file(cluster_config::IMAGE_CONFIG_PATH, 0o644, cluster));
    out.push(file(
        kubernetes_record::RECORD_PATH,
        0o644,
        kubernetes.to_toml(),
    ));

    // Empty: systemd generates the id at boot, so nodes differ.
    out.push(file("/etc/machine-id", 0o444, Vec::new()));
    // The kernel runs /init from the initramfs; it is systemd itself.
    out.push(symlink("/init", "usr/lib/systemd/systemd"));
    // No console login in the image: no getty on any console.
    for unit in [
        "getty@.service",
        "serial-getty@.service",
        "console-getty.service",
    ] {
        out.push(symlink(&format!("/etc/systemd/system/{unit}"), "/dev/null"));
    }

    out.sort_by(|a, b| a.path().cmp(b.path()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::{ChainFile, ProfileSpec};
    use std::path::{Path, PathBuf};

    fn profile() -> Profile {
        let text = "[system]\nmodules_load = [\"overlay\", \"br_netfilter\"]\n\
                    [system.sysctls]\n\"net.ipv4.ip_forward\" = 1\n\
                    \"net.bridge.bridge-nf-call-iptables\" = 1\n\
                    [cluster]\nname = \"c1\"\nrole = \"master\"\n";
        Profile::from_chain(&[ChainFile {
            path: PathBuf::from("m.toml"),
            text: text.into(),
            spec: ProfileSpec::parse(Path::new("m.toml"), text).unwrap(),
        }])
        .unwrap()
    }

    fn content(entries: &[Entry], path: &str) -> String {
        match entries.iter().find(|e| e.path() == path) {
            Some(Entry::File { data, .. }) => String::from_utf8(data.clone()).unwrap(),
            other => panic!("{path}: {other:?}"),
        }
    }

    #[test]
    fn sysctls_and_modules_are_rendered() {
        let e = generated(&profile(), &KubernetesRecord::absent(None));
        let sysctl = content(&e, SYSCTL_PATH);
        assert!(sysctl.contains("\nnet.ipv4.ip_forward = 1\n"), "{sysctl}");
        assert!(sysctl.contains("\nnet.bridge.bridge-nf-call-iptables = 1\n"));
        assert_eq!(
            content(&e, MODULES_LOAD_PATH)
                .lines()
                .skip(1)
                .collect::<Vec<_>>(),
            ["overlay", "br_netfilter"]
        );
    }

    #[test]
    fn cluster_config_round_trips_through_the_agent_schema() {
        let e = generated(&profile(), &KubernetesRecord::absent(None));
        let text = content(&e, cluster_config::IMAGE_CONFIG_PATH);
        let spec = cluster_config::ClusterSpec::from_toml("cluster.toml", &text).unwrap();
        let c = spec.validate().unwrap();
        assert_eq!(c.name, "c1");
        assert_eq!(c.role, cluster_config::Role::Master);
    }

    #[test]
    fn absent_kubernetes_is_baked_for_the_agent_with_reason() {
        let rec = KubernetesRecord::absent(Some("v1.30.4".into()));
        let e = generated(&profile(), &rec);
        let path = kubernetes_record::RECORD_PATH;
        let read = KubernetesRecord::from_toml(path, &content(&e, path)).unwrap();
        assert_eq!(read, rec);
        assert_eq!(read.version.as_deref(), Some("v1.30.4"));
        assert_eq!(
            read.verdict(path).unwrap(),
            kubernetes_record::Verdict::Skip {
                reason: kubernetes_record::WITHOUT_KUBERNETES_REASON.into()
            }
        );
    }

    #[test]
    fn entries_are_sorted_and_init_is_systemd() {
        let e = generated(&profile(), &KubernetesRecord::absent(None));
        let paths: Vec<&str> = e.iter().map(Entry::path).collect();
        let mut sorted = paths.clone();
        sorted.sort();
        assert_eq!(paths, sorted);
        assert!(e.contains(&Entry::Symlink {
            path: "/init".into(),
            target: "usr/lib/systemd/systemd".into()
        }));
        assert_eq!(content(&e, "/etc/machine-id"), "");
    }
}
