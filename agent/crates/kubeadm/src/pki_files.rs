//! The shared CA material every master places under `/etc/kubernetes/pki`
//! before kubeadm runs: kubeadm then uses these CAs instead of generating
//! its own, and signs each node's own certificates (API server serving,
//! kubelet client, front-proxy client) with them.
//!
//! Because every master derives the same CAs from the cluster secret (the
//! pki crate), no CA key ever travels over the network. That is also why
//! `kubeadm init` runs without `--upload-certs` and joins without a
//! `certificateKey`: the kubeadm-certs Secret would only be a second, less
//! protected copy of keys every master already has. (Workers get nothing
//! here: `kubeadm join` writes their `ca.crt` from authenticated discovery.)
//!
//! Files (the "manual certificate distribution" list of kubeadm's HA guide,
//! for external etcd): `ca.crt`/`ca.key`, `front-proxy-ca.crt`/`.key`,
//! `sa.key`/`sa.pub`, `etcd/ca.crt`, `apiserver-etcd-client.crt`/`.key`.
//! Keys are written 0600, certificates 0644, atomically.

use std::fmt;
use std::path::PathBuf;

use thiserror::Error;

use crate::paths::*;

/// Writing a file failed.
#[derive(Debug, Error)]
#[error("placing {path}: {source}")]
pub struct PlaceError {
    /// The file.
    pub path: PathBuf,
    /// The I/O error.
    pub source: std::io::Error,
}

/// The shared material, PEM. `Debug` never prints keys.
#[derive(Clone, PartialEq, Eq)]
pub struct SharedPki {
    /// Kubernetes CA certificate.
    pub ca_crt: String,
    /// Kubernetes CA key. Secret.
    pub ca_key: String,
    /// Front-proxy CA certificate.
    pub front_proxy_ca_crt: String,
    /// Front-proxy CA key. Secret.
    pub front_proxy_ca_key: String,
    /// Service-account private key. Secret.
    pub sa_key: String,
    /// Service-account public key.
    pub sa_pub: String,
    /// etcd CA certificate.
    pub etcd_ca_crt: String,
    /// The API server's etcd client certificate.
    pub apiserver_etcd_client_crt: String,
    /// Its key. Secret.
    pub apiserver_etcd_client_key: String,
}

impl fmt::Debug for SharedPki {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SharedPki(<certificates and redacted keys>)")
    }
}

impl SharedPki {
    /// From the derived cluster PKI, the derived service-account key
    /// (`pki::derive_service_account`, RSA) and this node's
    /// `apiserver-etcd-client` certificate (issued by the etcd CA, see
    /// `pki::etcd_member_certs`).
    pub fn from_cluster(
        cluster: &pki::ClusterPki,
        service_account: &pki::KeyPairPem,
        apiserver_etcd_client: &pki::Issued,
    ) -> Self {
        Self {
            ca_crt: cluster.kubernetes_ca.cert_pem.clone(),
            ca_key: cluster.kubernetes_ca.key_pem.clone(),
            front_proxy_ca_crt: cluster.front_proxy_ca.cert_pem.clone(),
            front_proxy_ca_key: cluster.front_proxy_ca.key_pem.clone(),
            sa_key: service_account.private_pem.clone(),
            sa_pub: service_account.public_pem.clone(),
            etcd_ca_crt: cluster.etcd_ca.cert_pem.clone(),
            apiserver_etcd_client_crt: apiserver_etcd_client.cert_pem.clone(),
            apiserver_etcd_client_key: apiserver_etcd_client.key_pem.clone(),
        }
    }

    /// `(root-relative path, content, is a private key)` of every file.
    pub fn files(&self) -> Vec<(&'static str, &str, bool)> {
        vec![
            (CA_CRT, self.ca_crt.as_str(), false),
            (CA_KEY, self.ca_key.as_str(), true),
            (FRONT_PROXY_CA_CRT, self.front_proxy_ca_crt.as_str(), false),
            (FRONT_PROXY_CA_KEY, self.front_proxy_ca_key.as_str(), true),
            (SA_KEY, self.sa_key.as_str(), true),
            (SA_PUB, self.sa_pub.as_str(), false),
            (ETCD_CA_CRT, self.etcd_ca_crt.as_str(), false),
            (
                APISERVER_ETCD_CLIENT_CRT,
                self.apiserver_etcd_client_crt.as_str(),
                false,
            ),
            (
                APISERVER_ETCD_CLIENT_KEY,
                self.apiserver_etcd_client_key.as_str(),
                true,
            ),
        ]
    }

    /// Writes every file under `paths` (keys 0600, certificates 0644).
    /// Returns the node paths written, in order.
    pub fn place(&self, paths: &Paths) -> Result<Vec<String>, PlaceError> {
        let mut written = Vec::new();
        for (rel, pem, secret) in self.files() {
            let path = paths.host(rel);
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|source| PlaceError {
                    path: dir.to_owned(),
                    source,
                })?;
            }
            let r = if secret {
                pki::write_key_file(&path, pem)
            } else {
                pki::write_cert_file(&path, pem)
            };
            r.map_err(|source| PlaceError {
                path: path.clone(),
                source,
            })?;
            written.push(standard(rel));
        }
        Ok(written)
    }
}
