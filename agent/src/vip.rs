//! The agent's side of the API server's virtual IP: turns the cluster
//! configuration into a [`vrrp::VrrpConfig`], starts the quorum tracker on
//! the local etcd member and the VRRPv3 instance (crate `vrrp`), feeds it
//! the unicast peers from discovery and hands its status to `agent status`.
//!
//! Started once the local etcd member is a healthy voter
//! ([`crate::plan::Action::StartVip`]); the quorum rule itself lives in the
//! `vrrp` crate (no quorum = Fault: never hold or claim the VIP).

use std::net::Ipv4Addr;
use std::path::Path;

use anyhow::{Context, Result};
use cluster_config::ClusterConfig;
use tokio::sync::watch;

use crate::etcd::ClientTls;
use crate::quorum::PeerFacts;

/// A running VIP instance with its tracker.
pub struct Vip {
    handle: vrrp::VrrpHandle,
    // Kept alive for the instance's lifetime: dropping it stops the checks.
    _tracker: vrrp::Tracker,
    peers: watch::Sender<Vec<Ipv4Addr>>,
}

/// The unicast peers (other masters' addresses) in a discovery snapshot.
pub fn master_addresses(peers: &[PeerFacts]) -> Vec<Ipv4Addr> {
    let mut out: Vec<Ipv4Addr> = peers
        .iter()
        .filter(|p| p.master && !p.failed)
        .filter_map(|p| {
            let host = p
                .peer_url
                .trim_start_matches("https://")
                .rsplit_once(':')?
                .0;
            host.parse().ok()
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

impl Vip {
    /// Starts the tracker and the VRRP instance on `interface`; `None` when
    /// the configuration has no VIP. Writes the agent's etcd client
    /// certificate for the quorum check under `pki_dir` (key mode 0600).
    pub async fn start(
        cfg: &ClusterConfig,
        interface: &str,
        pki_dir: &Path,
        tls: &ClientTls,
        peers: Vec<Ipv4Addr>,
    ) -> Result<Option<Vip>> {
        let Some(vip) = cfg.network.vip else {
            tracing::warn!("no network.vip configured: the VIP stays off");
            return Ok(None);
        };
        let cert = pki_dir.join("agent-client.crt");
        let key = pki_dir.join("agent-client.key");
        let ca = pki_dir.join("agent-ca.crt");
        pki::write_cert_file(&cert, &tls.cert_pem)
            .with_context(|| format!("writing {}", cert.display()))?;
        pki::write_key_file(&key, &tls.key_pem)
            .with_context(|| format!("writing {}", key.display()))?;
        pki::write_cert_file(&ca, &tls.ca_pem)
            .with_context(|| format!("writing {}", ca.display()))?;
        let check = vrrp::CheckSpec::etcd_quorum(
            &format!("https://127.0.0.1:{}", cfg.etcd.client_port),
            vrrp::TlsFiles {
                ca: Some(ca),
                cert: Some(cert),
                key: Some(key),
            },
        );
        let tracker =
            vrrp::tracker::spawn(vec![check]).context("starting the VIP health checks")?;
        let config =
            vrrp::VrrpConfig::new(&cfg.vrrp, vip, interface).context("VIP configuration")?;
        let (peers_tx, peers_rx) = watch::channel(peers);
        let handle = vrrp::Vrrp::spawn(config, tracker.health(), peers_rx)
            .await
            .with_context(|| format!("starting VRRP for {vip} on {interface}"))?;
        tracing::info!(
            "VIP {vip} on {interface}: VRRPv3 router {} every {} cs",
            cfg.vrrp.router_id,
            cfg.vrrp.interval_cs
        );
        Ok(Some(Vip {
            handle,
            _tracker: tracker,
            peers: peers_tx,
        }))
    }

    /// Feeds the current unicast peers (used in unicast mode only).
    pub fn set_peers(&self, peers: Vec<Ipv4Addr>) {
        self.peers.send_if_modified(|p| {
            if *p == peers {
                false
            } else {
                *p = peers;
                true
            }
        });
    }

    /// The instance's status as JSON for `agent status`.
    pub fn status_json(&self) -> serde_json::Value {
        serde_json::to_value(self.handle.status()).unwrap_or(serde_json::Value::Null)
    }

    /// Graceful stop: priority-0 advert, VIP removed.
    pub async fn shutdown(self) {
        if let Err(e) = self.handle.shutdown().await {
            tracing::warn!("stopping the VIP: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(url: &str, master: bool, failed: bool) -> PeerFacts {
        PeerFacts {
            id: Default::default(),
            name: "n".into(),
            peer_url: url.into(),
            master,
            has_cluster: true,
            bootstrapping: false,
            cluster_id: None,
            failed,
            proposal: vec![],
            last_seen_ms: 0,
        }
    }

    #[test]
    fn unicast_peers_are_live_masters_addresses() {
        let peers = vec![
            peer("https://10.0.0.3:2380", true, false),
            peer("https://10.0.0.2:2380", true, false),
            peer("https://10.0.0.9:2380", false, false),
            peer("https://10.0.0.4:2380", true, true),
            peer("", true, false),
        ];
        assert_eq!(
            master_addresses(&peers),
            vec![Ipv4Addr::new(10, 0, 0, 2), Ipv4Addr::new(10, 0, 0, 3)]
        );
    }
}
