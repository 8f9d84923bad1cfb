//! Glue between the run loop and the kube phase, which lives in the
//! `kubeadm` crate ([`kubeadm::task`]: the gate, the join material, the
//! reconcile task and its [`KubeReport`]). The agent only supplies what
//! the crate must not own:
//!
//! - [`KubeEtcd`]: the task's etcd connection (masters: the init
//!   election) through the agent's one TLS client ([`etcd::tls_client`])
//!   with its client certificate, the local member first;
//! - `start`: fills [`KubeSetup`] from what the agent set up and starts
//!   the phase with both of these;
//! - [`mirror`]: copies the published [`KubeReport`] into the `kube`
//!   section of the agent's [`StatusReport`] on every change.
//!
//! The run loop feeds the gate's inputs on every turn (`actions.rs`, from
//! `peers::Wire::kube_peers`).

use std::time::Duration;

use cluster_config::ClusterSecret;
use kubeadm::paths::Paths;
use kubeadm::report::KubeReport;
use kubeadm::task::{EtcdConnector, Kube, KubeSetup};
use tokio::sync::watch;

use crate::etcd::membership::Ctx;
use crate::etcd::{self, ClientTls, EtcdError};
use crate::node_pki::NodePki;
use crate::status::StatusReport;

/// Starts the kube phase ([`Kube::start`]; skipped at once when the image
/// has no Kubernetes, otherwise a task that waits for its gate) with the
/// agent's etcd connection, and mirrors its report into `status`.
/// `node_id` is hex; `systemd`: read the kubelet's state over D-Bus.
pub(crate) fn start(
    ctx: &Ctx,
    secret: &ClusterSecret,
    node_id: String,
    pki: &NodePki,
    systemd: bool,
    status: &watch::Sender<StatusReport>,
) -> Kube {
    let kube = Kube::start(
        KubeSetup {
            cfg: ctx.cfg.clone(),
            secret: secret.clone(),
            node_id,
            name: ctx.name.clone(),
            ip: ctx.ip,
            apiserver_etcd_client: pki.apiserver_etcd_client.clone(),
            cluster_pki: pki.cluster.clone(),
            paths: Paths::node(),
            systemd,
        },
        KubeEtcd {
            tls: ctx.tls.clone(),
            own_client_url: ctx.own_client_url(),
        },
        watch::channel(KubeReport::default()).0,
    );
    mirror(kube.subscribe(), status.clone());
    kube
}

/// The kube task's etcd connection: the agent's TLS client with its
/// client certificate.
pub struct KubeEtcd {
    /// The agent's etcd client certificate (masters).
    pub tls: ClientTls,
    /// The local etcd member's client URL (tried first).
    pub own_client_url: String,
}

impl EtcdConnector for KubeEtcd {
    /// An etcd client for the init election (masters), with the agent's
    /// client certificate; endpoints: the local member first.
    async fn connect(&self, endpoints: &[String]) -> Result<etcd_client::Client, String> {
        let mut eps = vec![self.own_client_url.clone()];
        eps.extend(
            endpoints
                .iter()
                .filter(|e| **e != self.own_client_url)
                .cloned(),
        );
        etcd::tls_client(
            &eps,
            &self.tls,
            Duration::from_secs(3),
            Duration::from_secs(5),
        )
        .await
        .map_err(|e| match e {
            EtcdError::Timeout { .. } => {
                format!("connecting to etcd at {}: timed out", eps.join(","))
            }
            e => e.to_string(),
        })
    }
}

/// Copies the kube phase's report into `status` now and on every change
/// (a task that ends with the phase).
pub fn mirror(mut kube: watch::Receiver<KubeReport>, status: watch::Sender<StatusReport>) {
    let now = kube.borrow_and_update().clone();
    status.send_modify(|r| r.kube = now);
    tokio::spawn(async move {
        while kube.changed().await.is_ok() {
            let k = kube.borrow_and_update().clone();
            status.send_modify(|r| r.kube = k);
        }
    });
}
