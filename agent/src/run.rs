//! The agent's loop: sets the node up ([`crate::startup`]: configuration,
//! identity; [`crate::node_pki`]: certificates; discovery, supervisor, the
//! kube phase), then turns events into [`plan`](crate::core::plan) steps
//! whose actions `crate::actions` carries out, and serves the status
//! socket.
//!
//! Everything long-running (a join attempt, a promotion, the etcd health
//! monitor) runs as a task that reports back on one channel as an
//! [`Event`]; the loop below is the only place the plan changes.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use cluster_config::Role;
use supervisor::notify_ready;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, watch};

use crate::actions::Actions;
use crate::control;
use crate::core::model::hex16;
use crate::core::plan::{AgentPhase, Event, NodeFacts, Plan};
use crate::core::quorum::Timing;
use crate::etcd::membership::Ctx;
use crate::kube;
use crate::node_pki::{self, PkiFiles};
use crate::peers;
use crate::remote;
use crate::startup::{self, Configured, RunOptions, SupervisorKind};
use crate::state::StateDir;
use crate::status::{self, StatusReport};

/// Milliseconds since the Unix epoch (the time base of discovery too).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

/// Runs the agent until SIGTERM/SIGINT.
pub async fn run(opts: RunOptions) -> Result<()> {
    let state = StateDir::open(&opts.state_dir)?;
    let node_id = state.node_id()?;
    let (report_tx, report_rx) = watch::channel(StatusReport {
        phase: "starting".to_owned(),
        detail: "loading configuration".to_owned(),
        ..Default::default()
    });
    let _server = status::serve(&opts.socket, report_rx).await?;
    // `agent etcd snapshot`: answered once the snapshotter exists.
    let snapshot_slot = control::SnapshotSlot::default();
    // `agent recover`: handed to the loop below, which owns etcd and the plan.
    let (recover_tx, mut recover_rx) = mpsc::channel(1);
    let _control = control::serve_with(
        &control::socket_beside(&opts.socket),
        snapshot_slot.clone(),
        Some(recover_tx.clone()),
    )?;
    let mut hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let Some(node) = startup::wait_for_config(&opts, &report_tx, &mut hup, &mut term).await else {
        return Ok(());
    };
    notify_ready();
    let name = startup::identify(&opts, &node, &node_id, &report_tx);
    let Configured {
        loaded,
        iface,
        ip,
        restore,
    } = node;
    if let Some(r) = &restore {
        tracing::info!(
            "a new cluster will be bootstrapped from the snapshot {} (sha256 {}, revision {})",
            r.path.display(),
            r.sha256,
            r.revision
        );
    }
    let restore_sha = restore.as_ref().map(|r| r.sha256.clone());
    let cfg = loaded.config.clone();
    let master = cfg.role == Role::Master;

    // PKI (masters run etcd; workers need none of it here).
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let pki_files = PkiFiles::under(&state.pki_dir());
    let node_pki = node_pki::prepare(&pki_files, &loaded, &name, ip, &report_tx)?;
    // The same requests over the network, for nodes without a login
    // (mutual TLS under the control CA; see `remote`). A bind failure is
    // logged and leaves the local socket working.
    let remote_addr = std::net::SocketAddr::new(ip.into(), remote::CONTROL_PORT);
    let serving = async {
        let tls = remote::server_config(&node_pki.cluster.control_ca, &name, ip.into())?;
        remote::serve(remote_addr, tls, snapshot_slot.clone(), Some(recover_tx)).await
    };
    let _remote = match serving.await {
        Ok(task) => {
            tracing::info!("remote control endpoint on {remote_addr} (mutual TLS)");
            Some(task)
        }
        Err(e) => {
            tracing::error!("{e}; `agent recover --node` cannot reach this node");
            None
        }
    };
    let ctx = Arc::new(Ctx {
        cfg: cfg.clone(),
        name: name.clone(),
        ip,
        tls: node_pki.client.clone(),
        events: events_tx.clone(),
        grace_ms: opts.dead_member_grace_ms,
        snapshot_dir: state.snapshot_dir(),
        report: report_tx.clone(),
        restore,
    });

    // Discovery.
    let mut disc = peers::start(
        &cfg,
        &loaded.secret,
        ip,
        node_id,
        &name,
        restore_sha.clone(),
    )
    .await
    .context("starting discovery")?;

    let supervisor = startup::connect_supervisor(&opts, &state).await?;

    // The Kubernetes phase: skipped at once when the image has none;
    // otherwise a task that waits for its gate (see `kubeadm::task::gate`).
    let mut kube = kube::start(
        &ctx,
        &loaded.secret,
        hex16(&node_id),
        &node_pki,
        opts.supervisor == SupervisorKind::Systemd,
        &report_tx,
    );

    let mut plan = Plan::new(
        NodeFacts {
            id: node_id,
            name: name.clone(),
            master,
            peer_url: ctx.own_peer_url(),
            expected_masters: usize::from(cfg.masters),
            cluster_name: cfg.name.clone(),
            timing: Timing::from_interval(cfg.discovery.interval_ms),
            join_backoff_ms: 1000.max(cfg.discovery.interval_ms),
            restore: restore_sha,
        },
        state.load()?,
    );
    // A recovery cut short by a crash (stage `restoring`) is finished
    // before anything else (crate::recovery: each step is re-runnable).
    let resume_recovery = plan
        .persisted
        .recovery
        .as_ref()
        .is_some_and(|r| r.stage == crate::core::model::RecoveryStage::Restoring);
    let mut pending = vec![Event::Start {
        has_etcd_data: state.has_etcd_data(),
    }];
    let mut tick = tokio::time::interval(Duration::from_millis(
        (cfg.discovery.interval_ms / 2).max(50),
    ));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut actions = Actions::new(
        ctx,
        state,
        supervisor,
        opts.etcd_bin.clone(),
        iface,
        report_tx,
        snapshot_slot,
    );
    if resume_recovery {
        tracing::warn!("resuming the recovery recorded in the state");
        for event in pending.drain(..) {
            actions.step(&mut plan, event, &disc).await?;
        }
        if let control::Response::Error { error } = actions
            .recover(&mut plan, None, &disc, node_id, loaded.secret.expose())
            .await
        {
            tracing::error!("resuming the recovery: {error}");
        }
    }
    // The loop: events in, actions out; the only place the plan changes.
    loop {
        actions.retry_launch().await;
        for event in pending.drain(..) {
            actions.step(&mut plan, event, &disc).await?;
        }
        actions.publish(&plan, &disc, &mut kube);

        tokio::select! {
            _ = tick.tick() => pending.push(Event::Peers { peers: disc.peers(now_ms()) }),
            _ = disc.changed() => pending.push(Event::Peers { peers: disc.peers(now_ms()) }),
            Some(ev) = events.recv() => pending.push(ev),
            _ = kube.changed() => {}
            Some((req, reply)) = recover_rx.recv() => {
                // The loop waits for the recovery (seconds): the node has
                // no quorum, and the VIP runs on its own task.
                let answer = actions
                    .recover(&mut plan, Some(req), &disc, node_id, loaded.secret.expose())
                    .await;
                let _ = reply.send(answer);
            }
            _ = hup.recv() => {
                match startup::load_config(&opts).await {
                    Ok(l) if l.config == cfg => tracing::info!("SIGHUP: configuration unchanged"),
                    Ok(_) => tracing::warn!("SIGHUP: configuration changed; restart the agent to apply it"),
                    Err(e) => tracing::error!("SIGHUP: configuration invalid (the running one stays): {e}"),
                }
            }
            _ = term.recv() => {
                tracing::info!("SIGTERM: stopping");
                // Under systemd etcd keeps running (it is its own unit);
                // children of the agent are stopped with it.
                actions.shutdown().await;
                return Ok(());
            }
        }
    }
}

/// The phase `agent status` and the `STATUS=` line show. Masters: their
/// plan's phase. Workers run no etcd plan (theirs stays `Discovering`,
/// which is also what they announce): `discovering` until an
/// authenticated master has announced itself, then `discovered` — the
/// worker's further progress is the `kube` section. Pure.
pub fn reported_phase(master: bool, plan: AgentPhase, masters_seen: bool) -> &'static str {
    if !master && plan == AgentPhase::Discovering && masters_seen {
        "discovered"
    } else {
        phase_name(plan)
    }
}

/// The kebab-case name of a phase (status and STATUS= line).
pub fn phase_name(p: AgentPhase) -> &'static str {
    match p {
        AgentPhase::Starting => "starting",
        AgentPhase::Discovering => "discovering",
        AgentPhase::Bootstrapping => "bootstrapping",
        AgentPhase::Joining => "joining",
        AgentPhase::EtcdMember => "etcd-member",
        AgentPhase::Ready => "ready",
        AgentPhase::Failed => "failed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_report_discovered_once_a_master_announced_itself() {
        assert_eq!(
            reported_phase(false, AgentPhase::Discovering, false),
            "discovering"
        );
        assert_eq!(
            reported_phase(false, AgentPhase::Discovering, true),
            "discovered"
        );
        // Masters show their plan, whatever they have seen.
        for p in [
            AgentPhase::Discovering,
            AgentPhase::Ready,
            AgentPhase::Failed,
        ] {
            assert_eq!(reported_phase(true, p, true), phase_name(p));
        }
        // A failed worker (bad configuration) stays failed.
        assert_eq!(reported_phase(false, AgentPhase::Failed, true), "failed");
    }
}
