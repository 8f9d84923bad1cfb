//! Where kubeadm and the kubelet keep their files, under a configurable
//! root: `/` on a node, a temporary directory in tests. Documents handed
//! to kubeadm always name the real paths ([`standard`]); only the agent's
//! own reads and writes go through [`Paths::host`].

use std::path::{Path, PathBuf};

/// The kubelet's (and the controller manager's) FlexVolume plugin
/// directory: the upstream default under `/usr/libexec` is read-only on
/// kubeboot images, `/var/lib` is the persistent data disk.
pub const VOLUME_PLUGIN_DIR: &str = "/var/lib/kubelet/volumeplugins";
/// kubeadm's certificate directory.
pub const PKI_DIR: &str = "/etc/kubernetes/pki";
/// Kubernetes CA certificate.
pub const CA_CRT: &str = "etc/kubernetes/pki/ca.crt";
/// Kubernetes CA key.
pub const CA_KEY: &str = "etc/kubernetes/pki/ca.key";
/// Front-proxy CA certificate.
pub const FRONT_PROXY_CA_CRT: &str = "etc/kubernetes/pki/front-proxy-ca.crt";
/// Front-proxy CA key.
pub const FRONT_PROXY_CA_KEY: &str = "etc/kubernetes/pki/front-proxy-ca.key";
/// Service-account signing key.
pub const SA_KEY: &str = "etc/kubernetes/pki/sa.key";
/// Service-account public key.
pub const SA_PUB: &str = "etc/kubernetes/pki/sa.pub";
/// etcd CA certificate (no key: kubeadm never signs for external etcd).
pub const ETCD_CA_CRT: &str = "etc/kubernetes/pki/etcd/ca.crt";
/// The API server's etcd client certificate.
pub const APISERVER_ETCD_CLIENT_CRT: &str = "etc/kubernetes/pki/apiserver-etcd-client.crt";
/// Its key.
pub const APISERVER_ETCD_CLIENT_KEY: &str = "etc/kubernetes/pki/apiserver-etcd-client.key";
/// The kubelet's bootstrap kubeconfig, written by `kubeadm join` first and
/// removed once the kubelet has its certificate.
pub const BOOTSTRAP_KUBELET_CONF: &str = "etc/kubernetes/bootstrap-kubelet.conf";
/// The kubelet's kubeconfig, written by `kubeadm init`/`join`.
pub const KUBELET_CONF: &str = "etc/kubernetes/kubelet.conf";
/// The admin kubeconfig (control-plane nodes).
pub const ADMIN_CONF: &str = "etc/kubernetes/admin.conf";
/// The API server's static pod manifest (control-plane nodes).
pub const APISERVER_MANIFEST: &str = "etc/kubernetes/manifests/kube-apiserver.yaml";
/// The kubelet configuration kubeadm writes.
pub const KUBELET_CONFIG: &str = "var/lib/kubelet/config.yaml";
/// Where the agent writes the rendered kubeadm configuration (mode 0600:
/// it holds the bootstrap token).
pub const KUBEADM_CONFIG_DIR: &str = "var/lib/kubeboot/kubeadm";

/// A file of the rendered configuration directory, as kubeadm sees it.
pub fn config_path(name: &str) -> String {
    format!("{}/{name}", standard(KUBEADM_CONFIG_DIR))
}

/// The absolute path on a node of a root-relative constant.
pub fn standard(rel: &str) -> String {
    format!("/{rel}")
}

/// File locations under a root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    root: PathBuf,
}

impl Paths {
    /// The node's own file system.
    pub fn node() -> Self {
        Self {
            root: PathBuf::from("/"),
        }
    }

    /// Everything under `root` (tests).
    pub fn under(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the agent reads or writes `rel` (a root-relative constant, or
    /// an absolute node path, which is re-rooted).
    pub fn host(&self, rel: &str) -> PathBuf {
        self.root.join(rel.trim_start_matches('/'))
    }

    /// The rendered configuration file for `name` (for example `init.yaml`),
    /// as the agent writes it.
    pub fn config_file(&self, name: &str) -> PathBuf {
        self.host(KUBEADM_CONFIG_DIR).join(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn re_roots_relative_and_absolute_paths() {
        let p = Paths::under("/tmp/x");
        assert_eq!(
            p.host(CA_KEY),
            PathBuf::from("/tmp/x/etc/kubernetes/pki/ca.key")
        );
        assert_eq!(
            p.host("/var/lib/kubelet/pki/kubelet-client-current.pem"),
            PathBuf::from("/tmp/x/var/lib/kubelet/pki/kubelet-client-current.pem")
        );
        assert_eq!(
            Paths::node().host(KUBELET_CONF),
            PathBuf::from("/etc/kubernetes/kubelet.conf")
        );
        assert_eq!(standard(ETCD_CA_CRT), "/etc/kubernetes/pki/etcd/ca.crt");
    }
}
