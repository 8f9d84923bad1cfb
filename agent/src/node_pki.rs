//! The node's PKI: derives the cluster PKI from the cluster secret and
//! writes this node's etcd certificates and keys (keys mode 0600).

use std::net::{IpAddr, Ipv4Addr};

use anyhow::{Context, Result};
use cluster_config::{ClusterSecret, Role};
use supervisor::notify_status;
use tokio::sync::watch;

use crate::config::Loaded;
use crate::etcd::{ClientTls, TlsFiles};
use crate::status::StatusReport;

/// The node's etcd client TLS: masters (they run etcd) write their etcd
/// certificates under `dir` and report the etcd CA's pin; workers need none
/// of it here and get empty material.
pub fn prepare(
    dir: &std::path::Path,
    loaded: &Loaded,
    name: &str,
    ip: Ipv4Addr,
    report_tx: &watch::Sender<StatusReport>,
) -> Result<ClientTls> {
    let cfg = &loaded.config;
    if cfg.role != Role::Master {
        return Ok(ClientTls {
            ca_pem: String::new(),
            cert_pem: String::new(),
            key_pem: String::new(),
        });
    }
    notify_status("writing certificates");
    let (tls, pin) = write_pki(
        dir,
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
    Ok(tls)
}

/// Writes the etcd TLS files (keys mode 0600) under `dir`, as
/// [`TlsFiles::under`] names them; returns the agent's client TLS material
/// and the etcd CA's pin.
pub fn write_pki(
    dir: &std::path::Path,
    secret: &ClusterSecret,
    cluster: &str,
    name: &str,
    ip: Ipv4Addr,
    vip: Option<Ipv4Addr>,
) -> Result<(ClientTls, String)> {
    let cluster_pki =
        pki::ClusterPki::derive(secret, cluster).context("deriving the cluster PKI")?;
    // The VIP is a name of every master's etcd (it listens on all local
    // addresses), so clients reaching it verify the certificate like any.
    let ips: Vec<IpAddr> = std::iter::once(ip).chain(vip).map(IpAddr::V4).collect();
    let certs = pki::etcd_member_certs(&cluster_pki.etcd_ca, name, &ips)
        .context("issuing the etcd member certificates")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let f = TlsFiles::under(dir);
    let w = |p: &std::path::Path, pem: &str, key: bool| {
        if key {
            pki::write_key_file(p, pem)
        } else {
            pki::write_cert_file(p, pem)
        }
        .with_context(|| format!("writing {}", p.display()))
    };
    w(&f.ca, &cluster_pki.etcd_ca.cert_pem, false)?;
    w(&f.server_cert, &certs.server.cert_pem, false)?;
    w(&f.server_key, &certs.server.key_pem, true)?;
    w(&f.peer_cert, &certs.peer.cert_pem, false)?;
    w(&f.peer_key, &certs.peer.key_pem, true)?;
    w(
        &dir.join("apiserver-etcd-client.crt"),
        &certs.apiserver_client.cert_pem,
        false,
    )?;
    w(
        &dir.join("apiserver-etcd-client.key"),
        &certs.apiserver_client.key_pem,
        true,
    )?;
    Ok((
        ClientTls {
            ca_pem: cluster_pki.etcd_ca.cert_pem.clone(),
            cert_pem: certs.agent_client.cert_pem,
            key_pem: certs.agent_client.key_pem,
        },
        cluster_pki.etcd_ca.spki_pin(),
    ))
}
