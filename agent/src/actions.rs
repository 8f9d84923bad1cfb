//! Carries out the plan's actions: persist the state, start etcd through
//! the supervisor (and its health monitor), join and promote as tasks,
//! start the VIP; after each turn, feed the kube phase, the API balancer
//! ([`crate::balance`]) and the VIP's health, and publish the phase and
//! status. Results come back to the loop as plan events on the
//! context's channel; nothing here changes the plan itself.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use cluster_config::Role;
use kubeadm::task::{self as kube, Kube};
use supervisor::{notify_status, AnySupervisor, Supervisor};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::balance::Balance;
use crate::control::SnapshotSlot;
use crate::core::model::{hex16, ClusterState};
use crate::core::plan::{Action, AgentPhase, Event, Plan};
use crate::etcd::membership::{join_attempt, member_endpoints, monitor_etcd, promote_attempt, Ctx};
use crate::etcd::snapshot::{self, Snapshotter};
use crate::etcd::Launch;
use crate::node_pki::PkiFiles;
use crate::peers;
use crate::run::{now_ms, reported_phase};
use crate::state::StateDir;
use crate::status::{StatusReport, VipStatus};
use crate::vip::{self, Vip};

/// The shell's side of the plan: what carrying out its actions needs and
/// what it leaves running.
pub(crate) struct Actions {
    /// Shared with the membership tasks.
    ctx: Arc<Ctx>,
    /// The state directory (persisted state, etcd data, PKI).
    state: StateDir,
    /// Starts etcd.
    supervisor: AnySupervisor,
    /// The etcd binary.
    etcd_bin: PathBuf,
    /// The interface the VIP goes on.
    iface: String,
    /// The status the monitor and the VIP report into.
    report_tx: watch::Sender<StatusReport>,
    /// When the plan first entered `Joining` (the dead-member grace).
    joining_since: Option<u64>,
    /// The etcd health monitor, once etcd was started.
    monitor: Option<JoinHandle<()>>,
    /// An etcd start the supervisor refused, retried every turn.
    pending_launch: Option<Launch>,
    /// The VIP, once started.
    vip: Option<Vip>,
    /// The API load balancer (masters), started with the kube phase.
    balance: Balance,
    /// The etcd snapshots of the local member and their periodic task,
    /// once the member is a healthy voter.
    snapshots: Option<(Arc<Snapshotter>, JoinHandle<()>)>,
    /// Where the control socket finds the snapshotter.
    snapshot_slot: SnapshotSlot,
    /// The last `STATUS=` line sent to systemd.
    last_status: String,
}

impl Actions {
    /// Nothing started yet.
    pub(crate) fn new(
        ctx: Arc<Ctx>,
        state: StateDir,
        supervisor: AnySupervisor,
        etcd_bin: PathBuf,
        iface: String,
        report_tx: watch::Sender<StatusReport>,
        snapshot_slot: SnapshotSlot,
    ) -> Self {
        Actions {
            balance: Balance::new(&ctx.cfg, ctx.ip),
            ctx,
            state,
            supervisor,
            etcd_bin,
            iface,
            report_tx,
            joining_since: None,
            monitor: None,
            pending_launch: None,
            vip: None,
            snapshots: None,
            snapshot_slot,
            last_status: String::new(),
        }
    }

    /// Retries an etcd start the supervisor refused.
    pub(crate) async fn retry_launch(&mut self) {
        if let Some(launch) = self.pending_launch.take() {
            if let Err(e) = self.supervisor.start(&launch.service_spec()).await {
                tracing::error!("starting etcd (retry): {e}");
                self.pending_launch = Some(launch);
            }
        }
    }

    /// Steps the plan with `event` and carries out what it returns.
    pub(crate) async fn step(
        &mut self,
        plan: &mut Plan,
        event: Event,
        disc: &peers::Wire,
    ) -> Result<()> {
        let now = now_ms();
        let before = plan.phase;
        let actions = plan.step(event.clone(), now).actions();
        if plan.phase == AgentPhase::Joining && self.joining_since.is_none() {
            self.joining_since = Some(now);
        }
        // The epoch and last recovery in the status (crate::recovery).
        let rec = crate::recovery::RecoveryReport::of(&plan.persisted);
        self.report_tx.send_if_modified(|r| {
            let changed = r.recovery != rec;
            r.recovery = rec;
            changed
        });
        if plan.phase != before {
            tracing::info!("phase {before:?} → {:?}: {}", plan.phase, plan.detail);
            if plan.phase == AgentPhase::Failed {
                tracing::error!("{}", plan.detail);
            }
        }
        for action in actions {
            self.carry_out(action, disc, now).await?;
        }
        Ok(())
    }

    async fn carry_out(&mut self, action: Action, disc: &peers::Wire, now: u64) -> Result<()> {
        let client_port = self.ctx.cfg.etcd.client_port;
        match action {
            Action::Persist(st) => self.state.save(&st)?,
            Action::StartEtcd(cs) => self.start_etcd(cs).await?,
            Action::Join { own_added } => {
                let snap = disc.peers(now_ms());
                let endpoints = member_endpoints(&snap, client_port);
                let live: BTreeSet<String> = snap
                    .iter()
                    .filter(|p| !p.peer_url.is_empty())
                    .map(|p| p.peer_url.clone())
                    .collect();
                let watched = self
                    .joining_since
                    .is_some_and(|s| now.saturating_sub(s) >= self.ctx.grace_ms);
                let c = self.ctx.clone();
                tokio::spawn(async move {
                    let ev = join_attempt(c.clone(), endpoints, own_added, live, watched).await;
                    let _ = c.events.send(ev);
                });
            }
            Action::Promote { member_id } => {
                let endpoints: Vec<String> = member_endpoints(&disc.peers(now_ms()), client_port);
                let c = self.ctx.clone();
                tokio::spawn(async move {
                    let ev = promote_attempt(c.clone(), endpoints, member_id).await;
                    let _ = c.events.send(ev);
                });
            }
            Action::Yield { from, to } => self.yield_epoch(from, to, now).await?,
            Action::StartVip => {
                // The same proof as the VIP's: the local member is a
                // healthy voter, so its data is the cluster's.
                self.start_snapshots();
                self.start_vip(disc).await
            }
        }
        Ok(())
    }

    /// A higher recovery epoch (already persisted): the VIP claim stops at
    /// once, then etcd, then its data directory is kept aside (see
    /// `core::epoch`). etcd that cannot be stopped is an error that ends
    /// the agent: its data is never moved from under a running member (at
    /// the next start the persisted epoch makes the agent yield again).
    async fn yield_epoch(
        &mut self,
        from: crate::core::epoch::Epoch,
        to: crate::core::epoch::Epoch,
        now: u64,
    ) -> Result<()> {
        tracing::warn!(
            "recovery epoch {} seen (this node's etcd state is epoch {}): stopping the VIP and etcd, keeping the data aside, joining the new cluster",
            to.text(),
            from.text()
        );
        crate::recovery::leave_epoch(
            &mut self.vip,
            &self.supervisor,
            &self.state,
            from,
            now,
            &self.report_tx,
        )
        .await?;
        self.pending_launch = None;
        Ok(())
    }

    async fn start_etcd(&mut self, cs: ClusterState) -> Result<()> {
        if let (
            ClusterState::New {
                initial_cluster,
                token,
            },
            Some(source),
        ) = (&cs, self.ctx.restore.clone())
        {
            self.restore_initial(source, initial_cluster.clone(), token.clone())
                .await?;
        }
        let cfg = &self.ctx.cfg;
        let launch = Launch {
            binary: self.etcd_bin.clone(),
            name: self.ctx.name.clone(),
            data_dir: self.state.etcd_data_dir(),
            ip: self.ctx.ip,
            client_port: cfg.etcd.client_port,
            peer_port: cfg.etcd.peer_port,
            heartbeat_ms: cfg.etcd.heartbeat_ms,
            election_timeout_ms: cfg.etcd.election_timeout_ms,
            state: cs.clone(),
            tls: PkiFiles::under(&self.state.pki_dir()).etcd(),
        };
        tracing::info!(
            "starting etcd ({})",
            match cs {
                ClusterState::New { .. } => "new cluster",
                ClusterState::Existing { .. } => "joining",
                ClusterState::Restart { .. } => "restart with data",
            }
        );
        if let Err(e) = self.supervisor.start(&launch.service_spec()).await {
            // Retried on every tick until the supervisor
            // accepts it (for example systemd busy reloading).
            tracing::error!("starting etcd: {e}");
            self.pending_launch = Some(launch.clone());
        } else {
            self.pending_launch = None;
        }
        if self.monitor.is_none() {
            self.monitor = Some(tokio::spawn(monitor_etcd(
                self.ctx.clone(),
                self.report_tx.clone(),
            )));
        }
        Ok(())
    }

    /// A new cluster bootstrapped from a snapshot (`crate::restore`):
    /// fills the empty data directory with the snapshot for the decided
    /// initial set before etcd starts. A failure ends the agent with the
    /// error naming the snapshot or the command (nothing is started; the
    /// persisted decision makes the next start try again).
    async fn restore_initial(
        &self,
        source: crate::restore::RestoreSource,
        initial_cluster: String,
        token: String,
    ) -> Result<()> {
        let (state, etcdctl) = (self.state.clone(), self.etcd_bin.with_file_name("etcdctl"));
        let (name, peer_url) = (self.ctx.name.clone(), self.ctx.own_peer_url());
        let path = source.path.clone();
        let done = tokio::task::spawn_blocking(move || {
            crate::restore::restore_initial(
                &state,
                &source,
                &etcdctl,
                &name,
                &peer_url,
                &initial_cluster,
                &token,
            )
        })
        .await
        .context("restoring the snapshot")?
        .with_context(|| format!("restoring the new cluster from {}", path.display()))?;
        if done {
            tracing::info!(
                "the new cluster's data restored from the snapshot {}",
                path.display()
            );
        }
        Ok(())
    }

    /// Starts the periodic snapshots of the local member (once; see
    /// `etcd::snapshot`: every master snapshots its own member).
    fn start_snapshots(&mut self) {
        if self.snapshots.is_some() {
            return;
        }
        let cfg = &self.ctx.cfg;
        let snapshotter = Snapshotter::new(
            snapshot::Source {
                endpoint: self.ctx.own_client_url(),
                tls: self.ctx.tls.clone(),
                member_name: self.ctx.name.clone(),
            },
            self.state.snapshot_dir(),
            cfg.etcd.snapshot_interval_s,
            cfg.etcd.snapshot_retain,
            self.report_tx.clone(),
        );
        let task = tokio::spawn(snapshotter.clone().run_periodic());
        let _ = self.snapshot_slot.set(snapshotter.clone());
        self.snapshots = Some((snapshotter, task));
    }

    async fn start_vip(&mut self, disc: &peers::Wire) {
        // The local etcd member is a healthy voter: the VIP
        // may run (its tracker keeps checking quorum).
        if self.vip.is_none() {
            let peers = vip::master_addresses(&disc.peers(now_ms()));
            let pki = PkiFiles::under(&self.state.pki_dir());
            match Vip::start(&self.ctx.cfg, &self.iface, &pki, peers).await {
                Ok(v) => self.vip = v,
                Err(e) => {
                    tracing::error!("VIP not started: {e:#}");
                    self.report_tx.send_modify(|r| {
                        r.vip = Some(VipStatus::Failed {
                            error: format!("{e:#}"),
                        });
                    });
                }
            }
        }
    }

    /// After each turn of the loop: feeds the kube phase its gate and facts
    /// from discovery (never waits), announces the current phase, and
    /// reports it (`STATUS=` line, VIP health and peers, the status).
    pub(crate) fn publish(&mut self, plan: &Plan, disc: &peers::Wire, kube: &mut Kube) {
        let cfg = &self.ctx.cfg;
        let master = cfg.role == Role::Master;
        let kube_peers = disc.kube_peers();
        let mut etcd_endpoints = member_endpoints(&disc.peers(now_ms()), cfg.etcd.client_port);
        if master {
            etcd_endpoints.push(self.ctx.own_client_url());
            etcd_endpoints.sort();
            etcd_endpoints.dedup();
        }
        kube.observe_join(&kube_peers);
        kube.update(
            kube::gate(
                cfg.role,
                plan.phase,
                kube.already_set_up(),
                kube.join_known(),
                &kube_peers,
            ),
            kube::Feed {
                master_ips: kube::master_ips(master.then_some(self.ctx.ip), &kube_peers),
                etcd_endpoints,
                joiners_waiting: kube::joiners_waiting(&kube_peers),
                ca_pin: kube.discovered_pin(),
            },
        );
        // Announce and report the current phase.
        disc.announce(peers::OwnState {
            phase: plan.phase,
            proposal: plan.proposal.clone(),
            membership: plan.membership(),
            kube: Some(kube.wire_state()),
            kube_join: kube.announced_join(),
            epoch: plan.persisted.epoch,
        });
        let shown_phase = reported_phase(master, plan.phase, kube_peers.iter().any(|p| p.master));
        let skewed = disc.clock_skew();
        let mut line = format!("{shown_phase}: {}", plan.detail);
        // A peer refused for its clock explains "seen 1 of 3 masters".
        if let Some(s) = skewed.iter().find(|s| s.rejected > 0) {
            line = format!(
                "{line}; {}",
                s.line(discovery::message::DEFAULT_WINDOW_MS / 1000)
            );
        }
        if let Some(k) = kube::status_suffix(&kube.report()) {
            line = format!("{line}; {k}");
        }
        if line != self.last_status {
            notify_status(&line);
            self.last_status = line;
        }
        let stats = disc.stats();
        let peers_now = disc.peer_reports(now_ms());
        let masters = vip::master_addresses(&disc.peers(now_ms()));
        // The hand-off: once the kube phase runs on this master, the local
        // API server's /readyz joins the VIP's checks and the API balancer
        // starts (both with the kube phase's CA).
        let vip_health = kube.vip_health(cfg.kubernetes.apiserver_port);
        let kube_started = matches!(vip_health, kubeadm::VipHealth::EtcdAndApiServer { .. });
        self.balance.reconcile(
            master && kube_started,
            &masters,
            kube.ca_pem(),
            std::time::Instant::now(),
        );
        let balancer_report = self.balance.report();
        if let Some(v) = &mut self.vip {
            if let Err(e) = v.set_health(vip_health, kube.ca_pem()) {
                tracing::error!("VIP health checks: {e:#}");
            }
            v.set_balancer(self.balance.serving());
            v.set_peers(masters);
            let vs = v.status();
            self.report_tx
                .send_modify(|r| r.vip = Some(VipStatus::Running(Box::new(vs))));
        }
        self.report_tx.send_modify(|r| {
            r.balancer = balancer_report;
            r.phase = shown_phase.to_owned();
            r.detail = plan.detail.clone();
            r.discovery.mode = format!("{:?}", cfg.discovery.mode).to_lowercase();
            r.discovery.peers = peers_now;
            r.discovery.accepted = stats.0;
            r.discovery.rejected = stats.1;
            r.discovery.proposal = plan.proposal.iter().map(hex16).collect();
            r.discovery.clock_skew = skewed;
        });
    }

    /// The I/O a recovery needs, from what the loop holds.
    fn recover_io<'a>(
        &'a self,
        disc: &peers::Wire,
        node_id: [u8; 16],
        secret: &'a [u8],
        peer_url: &'a str,
        client_url: &'a str,
    ) -> crate::recovery::RecoverIo<'a> {
        crate::recovery::RecoverIo {
            state: &self.state,
            supervisor: &self.supervisor,
            name: &self.ctx.name,
            node_id,
            master: self.ctx.cfg.role == Role::Master,
            secret,
            cluster_name: &self.ctx.cfg.name,
            peer_url,
            client_url,
            announced: member_endpoints(&disc.peers(now_ms()), self.ctx.cfg.etcd.client_port),
            tls: &self.ctx.tls,
            etcdctl: self.etcd_bin.with_file_name("etcdctl"),
        }
    }

    /// `agent recover` (from the control socket) or a recovery interrupted
    /// by a crash (`resume`): runs it (see `crate::recovery`), hands the
    /// new state to the plan (`Event::Recovered`: etcd restarts as one
    /// member) and waits up to 30 s for the new cluster to answer.
    pub(crate) async fn recover(
        &mut self,
        plan: &mut Plan,
        req: Option<crate::recovery::RecoverRequest>,
        disc: &peers::Wire,
        node_id: [u8; 16],
        secret: &[u8],
    ) -> crate::control::Response {
        use crate::control::Response;
        let (peer_url, client_url) = (self.ctx.own_peer_url(), self.ctx.own_client_url());
        let io = self.recover_io(disc, node_id, secret, &peer_url, &client_url);
        let result = match &req {
            Some(r) => crate::recovery::recover(&io, &plan.persisted, r).await,
            None => crate::recovery::resume(&io, &plan.persisted, std::time::Instant::now()).await,
        };
        let (state, mut steps) = match result {
            Ok(r) => r,
            Err(e) => {
                tracing::error!("recovery: {e}");
                return Response::Error {
                    error: e.to_string(),
                };
            }
        };
        if let Err(e) = self.step(plan, Event::Recovered { state }, disc).await {
            return Response::Error {
                error: format!("{e:#}"),
            };
        }
        let t0 = std::time::Instant::now();
        let local = [client_url];
        while t0.elapsed() < std::time::Duration::from_secs(30) {
            if let Ok(c) =
                crate::etcd::Etcd::connect(&local, &self.ctx.tls, std::time::Duration::from_secs(2))
                    .await
            {
                if let (Ok(s), Ok(())) = (c.status().await, c.quorum_read().await) {
                    steps.push(format!(
                        "etcd answers as cluster {:x}, member {:x} (one voter)",
                        s.cluster_id, s.member_id
                    ));
                    // The status shows the new cluster at once (the monitor
                    // refreshes it, and the member list, from now on).
                    self.report_tx.send_modify(|r| {
                        r.etcd.cluster_id = Some(format!("{:x}", s.cluster_id));
                        r.etcd.member_id = Some(format!("{:x}", s.member_id));
                        r.etcd.members.clear();
                    });
                    let _ = self
                        .step(
                            plan,
                            Event::EtcdStatus {
                                cluster_id: s.cluster_id,
                                member_id: s.member_id,
                                is_learner: s.is_learner,
                            },
                            disc,
                        )
                        .await;
                    break;
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        match plan.persisted.recovery.clone() {
            Some(record) => Response::Recovered(crate::recovery::RecoverOutcome {
                record: *record,
                steps,
            }),
            None => Response::Error {
                error: "the recovery record is missing from the state".to_owned(),
            },
        }
    }

    /// Stops what must stop with the agent: the API balancer and the VIP
    /// (hand-over: quiesce, drain up to `[balancer] drain_timeout_ms`,
    /// then release the VIP with priority 0), and etcd when it is the
    /// agent's child (under systemd etcd is its own unit and keeps
    /// running).
    pub(crate) async fn shutdown(&mut self) {
        // A snapshot being written is dropped: its temporary file goes.
        if let Some((_, task)) = self.snapshots.take() {
            task.abort();
        }
        if self.balance.serving().is_some() {
            let mut shown = self.balance.report();
            shown.state = crate::balance::BalancerState::Quiescing;
            self.report_tx.send_modify(|r| r.balancer = shown);
        }
        let vip = self.vip.take();
        self.balance
            .hand_over(async move {
                if let Some(v) = vip {
                    v.shutdown().await;
                }
            })
            .await;
        let after = self.balance.report();
        self.report_tx.send_modify(|r| r.balancer = after);
        if let AnySupervisor::Process(p) = &self.supervisor {
            p.shutdown().await;
        }
    }
}
