//! The agent's side of the API server's virtual IP: turns the cluster
//! configuration into a [`vrrp::VrrpConfig`], starts the VRRPv3 instance
//! (crate `vrrp`) with quorum **proven** by linearizable reads on the local
//! etcd member ([`vrrp::Quorum::Proven`] with the crate's default bounds),
//! feeds it the unicast peers from discovery and hands its status to
//! `agent status`.
//!
//! Started once the local etcd member is a healthy voter
//! ([`crate::core::plan::Action::StartVip`]); the quorum rule itself lives in the
//! `vrrp` crate: a backup takes the VIP only on a proof issued after its
//! master-down decision, a master renews its proof ten times a lease
//! (`[vrrp] proof_lease_ms`; 200 ms with the default 2 s lease) and gives
//! the VIP up one lease after the last successful one was issued.
//!
//! Health hand-off ([`Vip::set_health`], from [`kubeadm::vip_health`]):
//! before the kube phase (and when it is skipped) there is no weighted
//! check; from the kube phase's first step on, the local API server's
//! `/readyz` is added as a priority weight ([`APISERVER_WEIGHT`]). Its
//! tracker's health is forwarded (`combiner`) into the one channel VRRP
//! reads, so adding or removing the check never restarts the instance.
//! From the same hand-off on, the agent's API balancer
//! ([`crate::balance`]) reports how many backends it has in rotation
//! ([`Vip::set_balancer`]); none lowers the priority by
//! [`BALANCER_WEIGHT`]: a holder that cannot balance serves nothing on the
//! VIP's API port.

use std::net::Ipv4Addr;
use std::time::Duration;

use anyhow::{Context, Result};
use cluster_config::ClusterConfig;
use kubeadm::VipHealth;
use tokio::sync::watch;
use vrrp::Health;

/// How much a failing local `/readyz` (refused, or an error such as 500
/// not ready) lowers this master's VRRP priority (floored at 1 by `vrrp`):
/// enough that a master with a working API server (default priority 100)
/// wins the VIP over one without.
pub const APISERVER_WEIGHT: u8 = 50;

/// How much a *slow* local `/readyz` (only timeouts, ten in a row; see
/// [`vrrp::CheckSpec::apiserver_readyz`]) lowers the priority: a busy API
/// server still serves, so it ranks just below an answering one and above
/// every standby master.
pub const APISERVER_SLOW_WEIGHT: u8 = 10;

/// How much lower a standby master ranks (no control plane and not
/// building one: waiting for init, joining, retrying; see
/// [`kubeadm::VipHealth`]) than one with a control plane or running
/// `kubeadm init`, on top of the `/readyz` weight. The order, from the
/// default priority 100:
///
/// | master                          | priority |
/// |---------------------------------|----------|
/// | control plane, `/readyz` passes | 100      |
/// | control plane, `/readyz` slow   | 90       |
/// | standby, `/readyz` passes       | 80       |
/// | standby, `/readyz` slow         | 70       |
/// | control plane, `/readyz` fails  | 50       |
/// | standby, `/readyz` fails        | 30       |
///
/// A joining master's own API server answers before its join is done; in
/// real-kubeadm run 13 (standby weight 10 then) it took the VIP from the
/// two joined masters whose checks timed out, then lost it when its API
/// answered 500, back and forth, while its own join went through the VIP.
/// A standby master with an API that answers still wins over a control
/// plane whose API is down (refused or failing), so a join can go on when
/// the joined masters' API servers are gone.
///
/// With the agent's balancer on, [`BALANCER_WEIGHT`] comes on top while
/// the balancer has no backend in rotation (see there for the rows it
/// adds).
pub const STANDBY_WEIGHT: u8 = 20;

/// How much a balancer with no backend in rotation (the agent's API
/// balancer, [`crate::balance`]: no master's `/readyz` passes from here)
/// lowers the priority, on top of the rows of [`STANDBY_WEIGHT`]'s table.
/// Such a master accepts connections on VIP:6443 only to close them, so it
/// must rank below the masters whose balancer serves:
///
/// | master                                             | priority  |
/// |----------------------------------------------------|-----------|
/// | any row of the table above, balancer serving       | 100 … 30  |
/// | control plane, `/readyz` passes, no backend        | 65        |
/// | standby, `/readyz` passes, no backend              | 45        |
/// | control plane, `/readyz` fails, no backend         | 15        |
/// | standby, `/readyz` fails, no backend               | 1 (floor) |
///
/// The normal case is the last two rows: the balancer checks every
/// master's API server, the local one included (by the node address), so
/// when it has none in rotation the local `/readyz` fails too, and such a
/// master ranks below every master that serves (15 < 30). A local
/// `/readyz` that passes while the balancer has none (the first two rows)
/// is short-lived: the balancer has just started and needs `rise` passes
/// (2 s) to take a backend in. The weight is not larger on purpose:
/// during `kubeadm init` no API server answers yet and every master's
/// balancer has none in rotation, and the init node (15) must still rank
/// above the standby masters (1), as [`STANDBY_WEIGHT`] requires; a weight
/// of 50 or more would floor both at 1 and bring back run 13's tie. The
/// balancer starts at the kube phase's hand-off; before it (and with
/// `[balancer] enabled = false`) there is no balancer health and no
/// penalty.
pub const BALANCER_WEIGHT: u8 = 35;

/// The `/readyz` check and the standby weight handed to the combiner.
type ApiHealth = Option<(watch::Receiver<Health>, u8)>;

/// The balancer's backends in rotation, handed to the combiner.
type BalancerHealth = Option<watch::Receiver<usize>>;

/// The health VRRP sees: the `/readyz` check's penalty while it runs,
/// plus `extra` (the standby weight), plus [`BALANCER_WEIGHT`] while the
/// balancer runs with `balancer_serving == Some(0)` backends in rotation;
/// else none. Never a quorum verdict: quorum is proven by `vrrp` itself.
/// Pure.
pub fn combine(api: Option<Health>, extra: u8, balancer_serving: Option<usize>) -> Health {
    let balancer = if balancer_serving == Some(0) {
        BALANCER_WEIGHT
    } else {
        0
    };
    Health {
        quorum: true,
        penalty: api
            .map_or(0, |a| a.penalty.saturating_add(extra))
            .saturating_add(balancer),
    }
}

use crate::core::quorum::PeerFacts;
use crate::node_pki::PkiFiles;

/// A running VIP instance.
pub struct Vip {
    handle: vrrp::VrrpHandle,
    peers: watch::Sender<Vec<Ipv4Addr>>,
    pki: PkiFiles,
    /// The `/readyz` tracker while the kube phase runs.
    api: Option<vrrp::Tracker>,
    /// Hands the combiner the `/readyz` health and standby weight (or none).
    api_tx: watch::Sender<ApiHealth>,
    /// Hands the combiner the balancer's backends in rotation (or none).
    balancer_tx: watch::Sender<BalancerHealth>,
    health: VipHealth,
    combiner: tokio::task::JoinHandle<()>,
}

/// Resolves when `rx` (if any) changes; never without one. `Err` once its
/// sender is gone.
async fn changed<T>(rx: Option<&mut watch::Receiver<T>>) -> Result<(), watch::error::RecvError> {
    match rx {
        Some(rx) => rx.changed().await,
        None => std::future::pending().await,
    }
}

/// Feeds VRRP the `/readyz` check's health and the balancer's while there
/// are any. Runs until the [`Vip`] goes away.
async fn combiner(
    mut api_sel: watch::Receiver<ApiHealth>,
    mut balancer_sel: watch::Receiver<BalancerHealth>,
    out: watch::Sender<Health>,
) {
    let mut api: Option<watch::Receiver<Health>> = None;
    let mut balancer: BalancerHealth = None;
    let mut extra = 0;
    loop {
        let a = api.as_mut().map(|r| *r.borrow_and_update());
        let b = balancer.as_mut().map(|r| *r.borrow_and_update());
        let next = combine(a, extra, b);
        out.send_if_modified(|h| {
            if *h == next {
                false
            } else {
                *h = next;
                true
            }
        });
        tokio::select! {
            r = api_sel.changed() => match r {
                Ok(()) => {
                    let sel = api_sel.borrow_and_update().clone();
                    extra = sel.as_ref().map_or(0, |(_, e)| *e);
                    api = sel.map(|(rx, _)| rx);
                }
                Err(_) => return,
            },
            r = balancer_sel.changed() => match r {
                Ok(()) => balancer = balancer_sel.borrow_and_update().clone(),
                Err(_) => return,
            },
            r = changed(api.as_mut()) => if r.is_err() { api = None },
            r = changed(balancer.as_mut()) => if r.is_err() { balancer = None },
        }
    }
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
    /// Starts the VRRP instance on `interface`; `None` when the
    /// configuration has no VIP. The quorum proof reads the agent's etcd
    /// client certificate that [`crate::node_pki`] wrote under `pki`.
    pub async fn start(
        cfg: &ClusterConfig,
        interface: &str,
        pki: &PkiFiles,
        peers: Vec<Ipv4Addr>,
    ) -> Result<Option<Vip>> {
        let Some(vip) = cfg.network.vip else {
            tracing::warn!("no network.vip configured: the VIP stays off");
            return Ok(None);
        };
        let prover = vrrp::EtcdProver::new(
            &format!("https://127.0.0.1:{}", cfg.etcd.client_port),
            pki.agent_client(),
            Duration::from_millis(cfg.vrrp.proof_timeout_ms),
        )
        .context("setting up the VIP's quorum proof")?;
        let quorum = vrrp::Quorum::Proven {
            prover,
            params: vrrp::ProofParams::with_lease(Duration::from_millis(cfg.vrrp.proof_lease_ms)),
            shed_leadership: true,
        };
        let config =
            vrrp::VrrpConfig::new(&cfg.vrrp, vip, interface).context("VIP configuration")?;
        let (peers_tx, peers_rx) = watch::channel(peers);
        let (health_tx, health_rx) = watch::channel(combine(None, 0, None));
        let (api_tx, api_rx) = watch::channel(None);
        let (balancer_tx, balancer_rx) = watch::channel(None);
        let combiner = tokio::spawn(combiner(api_rx, balancer_rx, health_tx));
        let handle = match vrrp::Vrrp::spawn(config, quorum, health_rx, peers_rx).await {
            Ok(h) => h,
            Err(e) => {
                combiner.abort();
                return Err(e).with_context(|| format!("starting VRRP for {vip} on {interface}"));
            }
        };
        tracing::info!(
            "VIP {vip} on {interface}: VRRPv3 router {} every {} cs",
            cfg.vrrp.router_id,
            cfg.vrrp.interval_cs
        );
        Ok(Some(Vip {
            handle,
            peers: peers_tx,
            pki: pki.clone(),
            api: None,
            api_tx,
            balancer_tx,
            health: VipHealth::Etcd,
            combiner,
        }))
    }

    /// Switches the health checks to `health` (see the module docs); a
    /// no-op when they are already that. `kubernetes_ca_pem` is the
    /// cluster's Kubernetes CA, the only one the `/readyz` check trusts
    /// (written next to the etcd client files). A failure is returned once:
    /// the requested checks are recorded either way, so a caller calling
    /// on every tick does not retry (or log) in a loop.
    pub fn set_health(&mut self, health: VipHealth, kubernetes_ca_pem: &str) -> Result<()> {
        if health == self.health {
            return Ok(());
        }
        let previous = std::mem::replace(&mut self.health, health);
        match health {
            VipHealth::Etcd => {
                self.api = None;
                self.api_tx.send_replace(None);
                tracing::info!("VIP health: proven etcd quorum only");
                Ok(())
            }
            VipHealth::EtcdAndApiServer { api_port, standby } => {
                let extra = if standby { STANDBY_WEIGHT } else { 0 };
                // Only the standby weight changed: keep the running check.
                if let (VipHealth::EtcdAndApiServer { api_port: port, .. }, Some(tracker)) =
                    (previous, &self.api)
                {
                    if port == api_port {
                        self.api_tx.send_replace(Some((tracker.health(), extra)));
                        tracing::info!(
                            "VIP health: standby weight {extra} (this master {} a control plane)",
                            if standby {
                                "has no"
                            } else {
                                "has or is building"
                            }
                        );
                        return Ok(());
                    }
                }
                let ca = self.pki.kubernetes_ca();
                pki::write_cert_file(&ca, kubernetes_ca_pem)
                    .with_context(|| format!("writing {}", ca.display()))?;
                let check = vrrp::CheckSpec::apiserver_readyz(
                    api_port,
                    APISERVER_WEIGHT,
                    APISERVER_SLOW_WEIGHT,
                    vrrp::TlsFiles {
                        ca: Some(ca),
                        cert: None,
                        key: None,
                    },
                );
                let tracker = vrrp::tracker::spawn(vec![check])
                    .context("starting the VIP's /readyz check")?;
                self.api_tx.send_replace(Some((tracker.health(), extra)));
                self.api = Some(tracker);
                tracing::info!(
                    "VIP health: proven etcd quorum, and the local API server's /readyz \
                     (port {api_port}) as a priority weight of {APISERVER_WEIGHT}, standby \
                     weight {extra}"
                );
                Ok(())
            }
        }
    }

    /// Follows the balancer's backends in rotation (`Balancer::serving`)
    /// as a priority weight ([`BALANCER_WEIGHT`] while none); `None`: no
    /// balancer, no weight.
    /// Called every turn: a receiver of the channel already followed
    /// changes nothing.
    pub fn set_balancer(&self, serving: Option<watch::Receiver<usize>>) {
        self.balancer_tx.send_if_modified(|current| {
            let same = match (&*current, &serving) {
                (None, None) => true,
                (Some(a), Some(b)) => a.same_channel(b),
                _ => false,
            };
            if !same {
                *current = serving;
            }
            !same
        });
    }

    /// The health checks in use.
    pub fn health(&self) -> VipHealth {
        self.health
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

    /// The instance's status for `agent status`.
    pub fn status(&self) -> vrrp::Status {
        self.handle.status()
    }

    /// Graceful stop: a holder advertises priority 0 and keeps the VIP
    /// until its successor speaks (bounded), then removes it.
    pub async fn shutdown(self) {
        if let Err(e) = self.handle.shutdown().await {
            tracing::warn!("stopping the VIP: {e}");
        }
        self.combiner.abort();
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
            epoch: Default::default(),
            restore: None,
        }
    }

    #[test]
    fn combined_health_is_the_readyz_penalty_and_never_a_quorum_verdict() {
        // Before the kube phase: nothing to say.
        assert_eq!(combine(None, 0, None), Health::OK);
        // A failing /readyz lowers the priority, never faults.
        let api_failing = Health {
            quorum: true,
            penalty: APISERVER_WEIGHT,
        };
        assert_eq!(combine(Some(api_failing), 0, None), api_failing);
        // A standby master ranks below: the init node wins a tie.
        assert_eq!(
            combine(Some(api_failing), STANDBY_WEIGHT, None).penalty,
            APISERVER_WEIGHT + STANDBY_WEIGHT
        );
        // ... but not below a working API: the standby weight is smaller.
        const { assert!(STANDBY_WEIGHT < APISERVER_WEIGHT) };
        assert_eq!(
            combine(Some(Health::OK), STANDBY_WEIGHT, None).penalty,
            STANDBY_WEIGHT
        );
        // The whole order of STANDBY_WEIGHT's table, from priority 100.
        let priority = |api_penalty: u8, standby: bool| {
            let api = Health {
                quorum: true,
                penalty: api_penalty,
            };
            let extra = if standby { STANDBY_WEIGHT } else { 0 };
            100 - i32::from(combine(Some(api), extra, None).penalty)
        };
        let order = [
            priority(0, false),
            priority(APISERVER_SLOW_WEIGHT, false),
            priority(0, true),
            priority(APISERVER_SLOW_WEIGHT, true),
            priority(APISERVER_WEIGHT, false),
            priority(APISERVER_WEIGHT, true),
        ];
        assert_eq!(order, [100, 90, 80, 70, 50, 30]);
        // Whatever the API check says about quorum, it is not its call.
        assert!(combine(Some(Health::NO_QUORUM), 0, None).quorum);
    }

    #[test]
    fn a_balancer_with_no_backend_lowers_the_priority() {
        // VRRP floors the priority at 1.
        let priority = |api_penalty: u8, standby: bool, serving: Option<usize>| {
            let api = Health {
                quorum: true,
                penalty: api_penalty,
            };
            let extra = if standby { STANDBY_WEIGHT } else { 0 };
            (100 - i32::from(combine(Some(api), extra, serving).penalty)).max(1)
        };
        // Serving (any number in rotation) or no balancer: the old table.
        for serving in [None, Some(1), Some(3)] {
            assert_eq!(priority(0, false, serving), 100);
            assert_eq!(priority(APISERVER_WEIGHT, true, serving), 30);
        }
        // None in rotation: BALANCER_WEIGHT's table.
        assert_eq!(
            [
                priority(0, false, Some(0)),
                priority(0, true, Some(0)),
                priority(APISERVER_WEIGHT, false, Some(0)),
                priority(APISERVER_WEIGHT, true, Some(0)),
            ],
            [65, 45, 15, 1]
        );
        // The usual no-backend master (its own /readyz fails too) ranks
        // below the worst master that serves ...
        assert!(
            priority(APISERVER_WEIGHT, false, Some(0)) < priority(APISERVER_WEIGHT, true, Some(1))
        );
        // ... and during init (nobody serves) the init node still ranks
        // above the standby masters.
        assert!(
            priority(APISERVER_WEIGHT, false, Some(0)) > priority(APISERVER_WEIGHT, true, Some(0))
        );
        // Never a quorum verdict, even without an API check.
        assert_eq!(
            combine(None, 0, Some(0)),
            Health {
                quorum: true,
                penalty: BALANCER_WEIGHT
            }
        );
    }

    #[tokio::test]
    async fn combiner_follows_the_readyz_hand_off() {
        let (api_sel_tx, api_sel_rx) = watch::channel(None);
        let (_balancer_sel_tx, balancer_sel_rx) = watch::channel(None);
        let (out_tx, mut out) = watch::channel(Health::NO_QUORUM);
        let task = tokio::spawn(combiner(api_sel_rx, balancer_sel_rx, out_tx));
        let next = |out: &mut watch::Receiver<Health>| {
            let mut out = out.clone();
            async move {
                tokio::time::timeout(std::time::Duration::from_secs(2), out.changed())
                    .await
                    .expect("combined health changes")
                    .expect("combiner alive");
                *out.borrow_and_update()
            }
        };
        assert_eq!(next(&mut out).await, Health::OK);
        // Hand-off: the /readyz check arrives, failing.
        let (api_tx, api_rx) = watch::channel(Health {
            quorum: true,
            penalty: APISERVER_WEIGHT,
        });
        out.borrow_and_update();
        api_sel_tx.send_replace(Some((api_rx.clone(), 0)));
        assert_eq!(next(&mut out).await.penalty, APISERVER_WEIGHT);
        // The same check with the standby weight.
        out.borrow_and_update();
        api_sel_tx.send_replace(Some((api_rx.clone(), STANDBY_WEIGHT)));
        assert_eq!(
            next(&mut out).await.penalty,
            APISERVER_WEIGHT + STANDBY_WEIGHT
        );
        out.borrow_and_update();
        api_sel_tx.send_replace(Some((api_rx, 0)));
        assert_eq!(next(&mut out).await.penalty, APISERVER_WEIGHT);
        // The API server answers: penalty gone.
        out.borrow_and_update();
        api_tx.send_replace(Health::OK);
        assert_eq!(next(&mut out).await, Health::OK);
        // Back to no /readyz check (and its tracker gone): still OK.
        api_sel_tx.send_replace(None);
        drop(api_tx);
        // The Vip goes away: the combiner ends.
        drop(api_sel_tx);
        tokio::time::timeout(std::time::Duration::from_secs(2), task)
            .await
            .expect("combiner ends")
            .unwrap();
        assert_eq!(*out.borrow(), Health::OK);
    }

    #[tokio::test]
    async fn combiner_follows_the_balancer_serving_count() {
        let (_api_sel_tx, api_sel_rx) = watch::channel(None);
        let (balancer_sel_tx, balancer_sel_rx) = watch::channel(None);
        let (out_tx, mut out) = watch::channel(Health::NO_QUORUM);
        let task = tokio::spawn(combiner(api_sel_rx, balancer_sel_rx, out_tx));
        async fn next(out: &mut watch::Receiver<Health>) -> Health {
            tokio::time::timeout(std::time::Duration::from_secs(2), out.changed())
                .await
                .expect("combined health changes")
                .expect("combiner alive");
            *out.borrow_and_update()
        }
        assert_eq!(next(&mut out).await, Health::OK);
        // The balancer starts with nothing in rotation: penalty.
        let (serving_tx, serving_rx) = watch::channel(0usize);
        balancer_sel_tx.send_replace(Some(serving_rx));
        assert_eq!(next(&mut out).await.penalty, BALANCER_WEIGHT);
        // A backend comes in: no penalty; all leave: penalty again.
        serving_tx.send_replace(2);
        assert_eq!(next(&mut out).await, Health::OK);
        serving_tx.send_replace(0);
        assert_eq!(next(&mut out).await.penalty, BALANCER_WEIGHT);
        // The balancer goes away (its sender dropped): no penalty.
        drop(serving_tx);
        assert_eq!(next(&mut out).await, Health::OK);
        // A new one, then handed back to none.
        let (serving_tx, serving_rx) = watch::channel(0usize);
        balancer_sel_tx.send_replace(Some(serving_rx));
        assert_eq!(next(&mut out).await.penalty, BALANCER_WEIGHT);
        balancer_sel_tx.send_replace(None);
        assert_eq!(next(&mut out).await, Health::OK);
        drop(serving_tx);
        drop(balancer_sel_tx);
        tokio::time::timeout(std::time::Duration::from_secs(2), task)
            .await
            .expect("combiner ends with the Vip")
            .unwrap();
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
