//! etcd membership I/O: the tasks that join this node as a learner,
//! promote it, and watch the local member's health. Each runs on its own
//! and reports back as a plan [`Event`]; the decisions (which change to
//! make, when) are the pure [`quorum`] functions.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use cluster_config::ClusterConfig;
use tokio::sync::{mpsc, watch};

use super::snapshot::{self, PreChangeResult};
use super::{client_url, initial_cluster_of, peer_url, ClientTls, Etcd, MemberView};
use crate::core::plan::Event;
use crate::core::quorum::{self, ClusterMember, JoinStep, PeerFacts};
use crate::run::now_ms;
use crate::status::{self, StatusReport};

/// Shared, read-mostly context of the tasks.
pub(crate) struct Ctx {
    pub(crate) cfg: ClusterConfig,
    pub(crate) name: String,
    pub(crate) ip: Ipv4Addr,
    pub(crate) tls: ClientTls,
    pub(crate) events: mpsc::UnboundedSender<Event>,
    pub(crate) grace_ms: u64,
    /// This node's etcd snapshot directory (snapshots before membership
    /// changes go there too).
    pub(crate) snapshot_dir: std::path::PathBuf,
    /// The status (the pre-change snapshot's outcome).
    pub(crate) report: watch::Sender<StatusReport>,
    /// The snapshot a new cluster is bootstrapped from (`crate::restore`).
    pub(crate) restore: Option<crate::restore::RestoreSource>,
}

impl Ctx {
    /// The snapshot before the membership change `change` (bounded, never
    /// stops the change: see `snapshot::before_change`), logged and shown
    /// in the status.
    pub(crate) async fn snapshot_before(&self, endpoints: &[String], change: &str) {
        let outcome = snapshot::before_change(
            endpoints,
            &self.tls,
            &self.snapshot_dir,
            self.cfg.etcd.snapshot_retain,
            change,
            now_ms(),
        )
        .await;
        match &outcome.result {
            PreChangeResult::Failed { error } => tracing::error!(
                "etcd snapshot before membership change {change} failed (making the change anyway): {error}"
            ),
            PreChangeResult::Taken { path, .. } => {
                tracing::info!("etcd snapshot before membership change {change}: {path}")
            }
            PreChangeResult::Skipped { reason } => {
                tracing::debug!("etcd snapshot before membership change {change}: skipped, {reason}")
            }
        }
        self.report
            .send_modify(|r| r.snapshots.pre_change = Some(outcome));
    }
    pub(crate) fn own_peer_url(&self) -> String {
        peer_url(self.ip, self.cfg.etcd.peer_port)
    }
    pub(crate) fn own_client_url(&self) -> String {
        client_url(self.ip, self.cfg.etcd.client_port)
    }
}

/// One join attempt: membership lock, then one change at a time until this
/// node is added as a learner (or has to wait).
pub(crate) async fn join_attempt(
    ctx: Arc<Ctx>,
    endpoints: Vec<String>,
    own_added: Option<u64>,
    live_peer_urls: BTreeSet<String>,
    watched_enough: bool,
) -> Event {
    let result: Result<Event, String> = async {
        if endpoints.is_empty() {
            return Err("no member client URL announced yet".to_owned());
        }
        let client = Etcd::connect(&endpoints, &ctx.tls, Duration::from_secs(3))
            .await
            .map_err(|e| e.to_string())?;
        // A standby master (the cluster has its voters) re-checks every
        // backoff: read-only, without taking the membership lock.
        let view = |members: &[MemberView]| -> Vec<ClusterMember> {
            members
                .iter()
                .map(|m| ClusterMember {
                    id: m.id,
                    name: m.name.clone(),
                    peer_urls: m.peer_urls.clone(),
                    is_learner: m.is_learner,
                })
                .collect()
        };
        let members = client.members().await.map_err(|e| e.to_string())?;
        match quorum::join_step(
            &view(&members),
            &ctx.own_peer_url(),
            own_added,
            &live_peer_urls,
            usize::from(ctx.cfg.masters),
            watched_enough,
        ) {
            JoinStep::Wait { reason } if quorum::is_standby(&reason) => return Err(reason),
            // A change is coming: the snapshot before it, taken before the
            // membership lock (whose lease is not kept alive) and bounded.
            JoinStep::Remove { id, .. } => {
                ctx.snapshot_before(&endpoints, &format!("pre-remove-{id:x}"))
                    .await
            }
            JoinStep::AddLearner => ctx.snapshot_before(&endpoints, "pre-add-learner").await,
            JoinStep::Wait { .. } | JoinStep::AlreadyMember { .. } => {}
        }
        let (key, lease) = client
            .lock_membership(15)
            .await
            .map_err(|e| e.to_string())?;
        let outcome = async {
            for _ in 0..4 {
                let members = client.members().await.map_err(|e| e.to_string())?;
                match quorum::join_step(
                    &view(&members),
                    &ctx.own_peer_url(),
                    own_added,
                    &live_peer_urls,
                    usize::from(ctx.cfg.masters),
                    watched_enough,
                ) {
                    JoinStep::Remove { id, reason } => {
                        tracing::warn!("removing etcd member {id:x}: {reason}");
                        client.remove(id).await.map_err(|e| e.to_string())?;
                    }
                    JoinStep::AddLearner => {
                        let (id, members) = client
                            .add_learner(&ctx.own_peer_url())
                            .await
                            .map_err(|e| e.to_string())?;
                        tracing::info!("added as etcd learner {id:x}");
                        return Ok(Event::Joined {
                            member_id: id,
                            initial_cluster: initial_cluster_of(
                                &members,
                                &ctx.name,
                                &ctx.own_peer_url(),
                            ),
                        });
                    }
                    JoinStep::AlreadyMember { id } => {
                        return Ok(Event::Joined {
                            member_id: id,
                            initial_cluster: initial_cluster_of(
                                &members,
                                &ctx.name,
                                &ctx.own_peer_url(),
                            ),
                        });
                    }
                    JoinStep::Wait { reason } => return Err(reason),
                }
            }
            Err("membership still changing; retrying".to_owned())
        }
        .await;
        if let Err(e) = client.unlock(key, lease).await {
            tracing::debug!("unlocking membership: {e}");
        }
        outcome
    }
    .await;
    result.unwrap_or_else(|reason| Event::JoinFailed { reason })
}

/// One promotion attempt through the other members.
pub(crate) async fn promote_attempt(
    ctx: Arc<Ctx>,
    endpoints: Vec<String>,
    member_id: u64,
) -> Event {
    ctx.snapshot_before(&endpoints, &format!("pre-promote-{member_id:x}"))
        .await;
    let r = async {
        let client = Etcd::connect(&endpoints, &ctx.tls, Duration::from_secs(3)).await?;
        client.promote(member_id).await
    }
    .await;
    match r {
        Ok(()) => {
            tracing::info!("promoted etcd learner {member_id:x} to voter");
            Event::Promoted
        }
        Err(e) => {
            // Typically "not in sync with the leader" until it catches up.
            tokio::time::sleep(Duration::from_millis(300)).await;
            Event::PromoteFailed {
                reason: e.to_string(),
            }
        }
    }
}

/// Watches the local etcd: sends `EtcdStatus` (voter: only after a quorum
/// read) or `EtcdUnhealthy`, and refreshes the etcd part of the status.
/// Polls every 100 ms (short timeouts) until healthy, then every second;
/// the member list with per-member health every 5 s (clients cached).
pub(crate) async fn monitor_etcd(ctx: Arc<Ctx>, report: watch::Sender<StatusReport>) {
    let mut client: Option<(Etcd, bool)> = None;
    let mut healthy = false;
    let mut last_members = 0u64;
    let mut member_clients: std::collections::HashMap<String, Etcd> =
        std::collections::HashMap::new();
    loop {
        // A client whose timeout suits the state: short while starting.
        if client
            .as_ref()
            .is_none_or(|(_, for_healthy)| *for_healthy != healthy)
        {
            let timeout = Duration::from_millis(if healthy { 2000 } else { 500 });
            client = Etcd::connect(&[ctx.own_client_url()], &ctx.tls, timeout)
                .await
                .ok()
                .map(|c| (c, healthy));
        }
        let Some((c, _)) = client.clone() else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let status = c.status().await;
        let event = match &status {
            Ok(s) if s.is_learner => Event::EtcdStatus {
                cluster_id: s.cluster_id,
                member_id: s.member_id,
                is_learner: true,
            },
            Ok(s) => match c.quorum_read().await {
                Ok(()) => Event::EtcdStatus {
                    cluster_id: s.cluster_id,
                    member_id: s.member_id,
                    is_learner: false,
                },
                Err(e) => Event::EtcdUnhealthy {
                    reason: e.to_string(),
                },
            },
            Err(e) => Event::EtcdUnhealthy {
                reason: e.to_string(),
            },
        };
        healthy = matches!(event, Event::EtcdStatus { .. });
        if ctx.events.send(event.clone()).is_err() {
            return;
        }
        let now = now_ms();
        if healthy && now.saturating_sub(last_members) >= 5000 {
            last_members = now;
            if let Ok(members) = c.members().await {
                let mut out = Vec::new();
                for m in &members {
                    let mut ok = false;
                    if let Some(url) = m.client_urls.first() {
                        if !member_clients.contains_key(url) {
                            if let Ok(mc) = Etcd::connect(
                                std::slice::from_ref(url),
                                &ctx.tls,
                                Duration::from_millis(700),
                            )
                            .await
                            {
                                member_clients.insert(url.clone(), mc);
                            }
                        }
                        if let Some(mc) = member_clients.get(url) {
                            ok = mc.status().await.is_ok();
                        }
                    }
                    out.push(status::MemberReport {
                        id: format!("{:x}", m.id),
                        name: m.name.clone(),
                        peer_urls: m.peer_urls.clone(),
                        learner: m.is_learner,
                        healthy: ok,
                    });
                }
                // Forget clients of members that left.
                member_clients.retain(|url, _| members.iter().any(|m| m.client_urls.contains(url)));
                report.send_modify(|r| r.etcd.members = out);
            }
        }
        report.send_modify(|r| {
            r.etcd.running = true;
            match (&event, &status) {
                (
                    Event::EtcdStatus {
                        cluster_id,
                        member_id,
                        is_learner,
                    },
                    Ok(s),
                ) => {
                    r.etcd.cluster_id = Some(format!("{cluster_id:x}"));
                    r.etcd.member_id = Some(format!("{member_id:x}"));
                    r.etcd.leader = (s.leader != 0).then(|| format!("{:x}", s.leader));
                    r.etcd.learner = *is_learner;
                    r.etcd.error = None;
                }
                (Event::EtcdUnhealthy { reason }, _) => r.etcd.error = Some(reason.clone()),
                _ => {}
            }
        });
        let pause = if healthy { 1000 } else { 100 };
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
}

/// The client URLs of the members discovery shows (peers that announce
/// an etcd cluster id), on `client_port`: only those of the highest
/// recovery epoch announced (members of an older epoch are a cluster left
/// behind, about to yield).
pub(crate) fn member_endpoints(peers: &[PeerFacts], client_port: u16) -> Vec<String> {
    let top = peers
        .iter()
        .filter(|p| p.cluster_id.is_some())
        .map(|p| p.epoch)
        .max();
    let mut v: Vec<String> = peers
        .iter()
        .filter(|p| p.cluster_id.is_some() && !p.peer_url.is_empty() && Some(p.epoch) == top)
        .filter_map(|p| {
            let host = p
                .peer_url
                .trim_start_matches("https://")
                .rsplit_once(':')?
                .0
                .to_owned();
            Some(format!("https://{host}:{client_port}"))
        })
        .collect();
    v.sort();
    v.dedup();
    v
}
