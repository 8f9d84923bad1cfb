//! The node's PKI: derives the cluster PKI from the cluster secret once
//! (the only place the agent does), writes this node's etcd certificates
//! and keys (keys mode 0600) and owns every file name under the state
//! directory's `pki/` ([`PkiFiles`]). What other parts need in memory (the
//! cluster's CAs for the kube phase, the agent's etcd client TLS, the
//! kube-apiserver's etcd client certificate) is handed over as
//! [`NodePki`], never read back from disk or derived again.
//!
//! | file                         | what                                        |
//! |------------------------------|---------------------------------------------|
//! | `etcd-ca.crt`                | the etcd CA (etcd, and the VIP's quorum proof) |
//! | `etcd-server.{crt,key}`      | etcd's client-port certificate              |
//! | `etcd-peer.{crt,key}`        | etcd's peer certificate                     |
//! | `agent-client.{crt,key}`     | the agent's etcd client certificate (the VIP's quorum proof) |
//! | `kubernetes-ca.crt`          | the Kubernetes CA (the VIP's `/readyz` check) |

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use cluster_config::{ClusterSecret, Role};
use supervisor::notify_status;
use tokio::sync::watch;

use crate::config::Loaded;
use crate::etcd::{ClientTls, TlsFiles};
use crate::status::StatusReport;

/// The file names of the node's PKI under one directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PkiFiles {
    dir: PathBuf,
}

impl PkiFiles {
    /// The files under `dir` (the state directory's `pki/`).
    pub fn under(dir: &Path) -> Self {
        Self {
            dir: dir.to_owned(),
        }
    }

    /// etcd's TLS files (named by [`TlsFiles::under`]).
    pub fn etcd(&self) -> TlsFiles {
        TlsFiles::under(&self.dir)
    }

    /// The agent's etcd client certificate, key and the etcd CA, as the
    /// VIP's quorum proof reads them.
    pub fn agent_client(&self) -> vrrp::TlsFiles {
        vrrp::TlsFiles {
            ca: Some(self.etcd().ca),
            cert: Some(self.dir.join("agent-client.crt")),
            key: Some(self.dir.join("agent-client.key")),
        }
    }

    /// The Kubernetes CA certificate the VIP's `/readyz` check trusts.
    pub fn kubernetes_ca(&self) -> PathBuf {
        self.dir.join("kubernetes-ca.crt")
    }
}

/// What the node's PKI hands over in memory.
#[derive(Clone)]
pub struct NodePki {
    /// The cluster's CAs, derived from the secret (every role: a worker
    /// pins the Kubernetes CA from it).
    pub cluster: Arc<pki::ClusterPki>,
    /// The agent's etcd client TLS material (empty on workers).
    pub client: ClientTls,
    /// kube-apiserver's etcd client certificate (masters).
    pub apiserver_etcd_client: Option<pki::Issued>,
}

/// The node's PKI: masters (they run etcd) write their certificates under
/// `files` and report the etcd CA's pin; workers need none of it here and
/// get empty material.
pub fn prepare(
    files: &PkiFiles,
    loaded: &Loaded,
    name: &str,
    ip: Ipv4Addr,
    report_tx: &watch::Sender<StatusReport>,
) -> Result<NodePki> {
    let cfg = &loaded.config;
    if cfg.role != Role::Master {
        let cluster = pki::ClusterPki::derive(&loaded.secret, &cfg.name)
            .context("deriving the cluster PKI")?;
        return Ok(NodePki {
            cluster: Arc::new(cluster),
            client: ClientTls {
                ca_pem: String::new(),
                cert_pem: String::new(),
                key_pem: String::new(),
            },
            apiserver_etcd_client: None,
        });
    }
    notify_status("writing certificates");
    let (node, pin) = write_pki(
        files,
        &loaded.secret,
        &cfg.name,
        name,
        ip,
        cfg.network.vip.map(|v| v.addr()),
    )?;
    report_tx.send_modify(|r| {
        r.pki.ready = true;
        r.pki.etcd_ca_pin = Some(pin);
    });
    Ok(node)
}

/// Derives the cluster PKI and writes a master's files (keys mode 0600)
/// as [`PkiFiles`] names them; returns what is handed over in memory and
/// the etcd CA's pin.
pub fn write_pki(
    files: &PkiFiles,
    secret: &ClusterSecret,
    cluster: &str,
    name: &str,
    ip: Ipv4Addr,
    vip: Option<Ipv4Addr>,
) -> Result<(NodePki, String)> {
    let cluster_pki =
        pki::ClusterPki::derive(secret, cluster).context("deriving the cluster PKI")?;
    // The VIP is a name of every master's etcd (it listens on all local
    // addresses), so clients reaching it verify the certificate like any.
    let ips: Vec<IpAddr> = std::iter::once(ip).chain(vip).map(IpAddr::V4).collect();
    let certs = pki::etcd_member_certs(&cluster_pki.etcd_ca, name, &ips)
        .context("issuing the etcd member certificates")?;
    std::fs::create_dir_all(&files.dir)
        .with_context(|| format!("creating {}", files.dir.display()))?;
    let w = |p: &Path, pem: &str, key: bool| {
        if key {
            pki::write_key_file(p, pem)
        } else {
            pki::write_cert_file(p, pem)
        }
        .with_context(|| format!("writing {}", p.display()))
    };
    let f = files.etcd();
    w(&f.ca, &cluster_pki.etcd_ca.cert_pem, false)?;
    w(&f.server_cert, &certs.server.cert_pem, false)?;
    w(&f.server_key, &certs.server.key_pem, true)?;
    w(&f.peer_cert, &certs.peer.cert_pem, false)?;
    w(&f.peer_key, &certs.peer.key_pem, true)?;
    let agent = files.agent_client();
    if let (Some(cert), Some(key)) = (&agent.cert, &agent.key) {
        w(cert, &certs.agent_client.cert_pem, false)?;
        w(key, &certs.agent_client.key_pem, true)?;
    }
    let pin = cluster_pki.etcd_ca.spki_pin();
    Ok((
        NodePki {
            client: ClientTls {
                ca_pem: cluster_pki.etcd_ca.cert_pem.clone(),
                cert_pem: certs.agent_client.cert_pem,
                key_pem: certs.agent_client.key_pem,
            },
            apiserver_etcd_client: Some(certs.apiserver_client),
            cluster: Arc::new(cluster_pki),
        },
        pin,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_etcd_ca_is_written_once_and_every_file_is_named_here() {
        let dir = tempfile::tempdir().unwrap();
        let files = PkiFiles::under(dir.path());
        let secret = ClusterSecret::new("0123456789abcdef0123456789abcdef").unwrap();
        let (node, pin) = write_pki(
            &files,
            &secret,
            "c",
            "master-aaaaaa",
            Ipv4Addr::new(10, 0, 0, 1),
            None,
        )
        .unwrap();
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "agent-client.crt",
                "agent-client.key",
                "etcd-ca.crt",
                "etcd-peer.crt",
                "etcd-peer.key",
                "etcd-server.crt",
                "etcd-server.key",
            ]
        );
        assert_eq!(
            std::fs::read_to_string(files.agent_client().ca.unwrap()).unwrap(),
            node.client.ca_pem
        );
        assert!(node.apiserver_etcd_client.is_some());
        assert!(!pin.is_empty());
    }
}
