//! The I/O shell: loads configuration and identity, writes certificates,
//! runs discovery, feeds the [`plan`](crate::core::plan) and carries out its
//! actions (persist, start etcd through the supervisor, join, promote),
//! serves the status socket and reports the phase to systemd.
//!
//! Everything long-running (a join attempt, a promotion, the etcd health
//! monitor) runs as a task that reports back on one channel as a
//! [`Event`]; the loop below is the only place the plan changes.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use cluster_config::{ClusterConfig, ClusterSecret, Role};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, watch};

use crate::config::{self, Loaded};
use crate::core::model::{hex16, ClusterState};
use crate::core::plan::{Action, AgentPhase, Event, NodeFacts, Plan};
use crate::core::quorum::Timing;
use crate::etcd::membership::{join_attempt, member_endpoints, monitor_etcd, promote_attempt, Ctx};
use crate::etcd::{ClientTls, Launch, TlsFiles};
use crate::kube::{self, Kube};
use crate::state::StateDir;
use crate::status::{self, StatusReport};
use crate::vip::{self, Vip};
use crate::wire;

/// How etcd is supervised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SupervisorKind {
    /// systemd over D-Bus.
    Systemd,
    /// Children of the agent.
    Process,
}

/// Options of `agent run`.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Where configuration comes from.
    pub load: config::LoadOptions,
    /// Persistent state directory.
    pub state_dir: PathBuf,
    /// Interface override.
    pub interface: Option<String>,
    /// Status socket.
    pub socket: PathBuf,
    /// Supervisor.
    pub supervisor: SupervisorKind,
    /// etcd binary.
    pub etcd_bin: PathBuf,
    /// Set the hostname when the image default is in place.
    pub set_hostname: bool,
    /// Allow the EC2 metadata service (only used when DMI says EC2).
    pub imds: bool,
    /// Grace period before an unannounced member counts as dead.
    pub dead_member_grace_ms: u64,
}

/// Milliseconds since the Unix epoch (the time base of discovery too).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

use supervisor::{
    notify_ready, notify_status, AnySupervisor, ProcessSupervisor, Supervisor, SystemdSupervisor,
};

/// Loads the configuration layers (with user data on EC2 only).
async fn load_config(opts: &RunOptions) -> Result<Loaded, config::LoadError> {
    let mut sources = config::gather(&opts.load)?;
    let (sys, board) = config::read_dmi_vendors(std::path::Path::new("/sys/class/dmi/id"));
    if opts.imds && config::is_ec2(sys.as_deref(), board.as_deref()) {
        match config::fetch_user_data(config::IMDS_BASE_URL, Duration::from_secs(2)).await {
            Ok(text) => sources.user_data = config::user_data_layer(text),
            Err(e) => tracing::warn!("EC2 user data not used: {e}"),
        }
    }
    let mut loaded = config::layer(&sources)?;
    if let Some(i) = &opts.interface {
        loaded.config.network.interface = Some(i.clone());
    }
    Ok(loaded)
}

/// The node's cluster address: the first IPv4 address of the configured
/// interface, else the first address inside the configured CIDR, else the
/// first non-loopback IPv4 address.
pub fn cluster_address(cfg: &ClusterConfig) -> Result<(String, Ipv4Addr)> {
    let addrs = nix::ifaddrs::getifaddrs().context("listing network interfaces")?;
    let mut found: Vec<(String, Ipv4Addr)> = Vec::new();
    for a in addrs {
        if let Some(ip) = a
            .address
            .as_ref()
            .and_then(|s| s.as_sockaddr_in())
            .map(|s| s.ip())
        {
            found.push((a.interface_name.clone(), ip));
        }
    }
    let pick = if let Some(iface) = &cfg.network.interface {
        found.iter().find(|(n, _)| n == iface).cloned()
    } else if let Some(cidr) = cfg.network.cidr {
        found.iter().find(|(_, ip)| cidr.contains(ip)).cloned()
    } else {
        found.iter().find(|(_, ip)| !ip.is_loopback()).cloned()
    };
    pick.with_context(|| match &cfg.network.interface {
        Some(i) => format!("interface {i} has no IPv4 address"),
        None => "no interface with a usable IPv4 address".to_owned(),
    })
}

/// Sets the hostname to `name` when the image default (`localhost` or
/// empty) is in place. sethostname(2) directly: no shelling out.
fn maybe_set_hostname(name: &str) {
    let current = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default();
    if current.is_empty() || current == "localhost" || current == "(none)" {
        match nix::unistd::sethostname(name) {
            Ok(()) => tracing::info!("hostname set to {name}"),
            Err(e) => tracing::warn!("setting the hostname to {name}: {e}"),
        }
    }
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
    let mut hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;

    // Configuration: a failure is a visible, waiting state, never an exit.
    let (loaded, iface, ip) = loop {
        match load_config(&opts).await {
            Ok(l) => match cluster_address(&l.config) {
                Ok((iface, ip)) => break (l, iface, ip),
                Err(e) => {
                    // At boot the address may not be there yet (DHCP):
                    // wait for it, visibly, instead of exiting.
                    let reason = format!("waiting for the cluster address: {e:#}");
                    notify_status(&reason);
                    notify_ready();
                    report_tx.send_modify(|r| r.detail = reason.clone());
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = hup.recv() => tracing::info!("SIGHUP: re-reading the configuration"),
                        _ = term.recv() => return Ok(()),
                    }
                }
            },
            Err(e) => {
                let reason = e.to_string();
                tracing::error!("configuration invalid, waiting for SIGHUP: {reason}");
                notify_status(&format!("failed: {reason}"));
                notify_ready();
                report_tx.send_modify(|r| {
                    r.phase = "failed".to_owned();
                    r.detail = reason.clone();
                    r.config.ok = false;
                    r.config.error = Some(reason.clone());
                });
                tokio::select! {
                    _ = hup.recv() => tracing::info!("SIGHUP: re-reading the configuration"),
                    _ = term.recv() => return Ok(()),
                }
            }
        }
    };
    notify_ready();
    let cfg = loaded.config.clone();
    let role = cfg.role;
    let name = format!("{role}-{}", &hex16(&node_id)[..6]);
    if opts.set_hostname {
        maybe_set_hostname(&name);
    }
    tracing::info!(
        "node {name} ({}) on {iface} {ip}, config from {}",
        hex16(&node_id),
        loaded.sources.join(" < ")
    );
    report_tx.send_modify(|r| {
        r.node = status::NodeStatus {
            id: hex16(&node_id),
            name: name.clone(),
            role: role.to_string(),
            addresses: vec![ip.to_string()],
        };
        r.config = status::ConfigStatus {
            ok: true,
            error: None,
            sources: loaded.sources.clone(),
            cluster: cfg.name.clone(),
            masters: cfg.masters,
        };
    });

    // PKI (masters run etcd; workers need none of it here).
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let master = role == Role::Master;
    let tls = if master {
        notify_status("writing certificates");
        let (tls, pin) = write_pki(
            &state.pki_dir(),
            &loaded.secret,
            &cfg.name,
            &name,
            ip,
            cfg.network.vip.map(|v| v.addr()),
        )?;
        report_tx.send_modify(|r| {
            r.pki.ready = true;
            r.pki.etcd_ca_pin = Some(pin);
        });
        tls
    } else {
        ClientTls {
            ca_pem: String::new(),
            cert_pem: String::new(),
            key_pem: String::new(),
        }
    };
    let ctx = Arc::new(Ctx {
        cfg: cfg.clone(),
        name: name.clone(),
        ip,
        tls,
        events: events_tx.clone(),
        grace_ms: opts.dead_member_grace_ms,
    });

    // Discovery.
    let mut disc = wire::start(&cfg, &loaded.secret, ip, node_id, &name)
        .await
        .context("starting discovery")?;

    let supervisor: AnySupervisor = match opts.supervisor {
        SupervisorKind::Systemd => SystemdSupervisor::connect()
            .await
            .context("connecting to systemd over D-Bus (use --supervisor process without systemd)")?
            .into(),
        SupervisorKind::Process => ProcessSupervisor::new(state.root().join("logs")).into(),
    };

    // The Kubernetes phase: skipped at once when the image has none;
    // otherwise a task that waits for its gate (see `kube::gate`).
    let mut kube = Kube::start(
        kube::KubeSetup {
            cfg: cfg.clone(),
            secret: loaded.secret.clone(),
            node_id: hex16(&node_id),
            name: name.clone(),
            ip,
            tls: ctx.tls.clone(),
            pki_dir: state.pki_dir(),
            own_client_url: ctx.own_client_url(),
            paths: kubeadm::paths::Paths::node(),
            systemd: opts.supervisor == SupervisorKind::Systemd,
        },
        report_tx.clone(),
    );

    let timing = Timing::from_interval(cfg.discovery.interval_ms);
    let mut plan = Plan::new(
        NodeFacts {
            id: node_id,
            name: name.clone(),
            master,
            peer_url: ctx.own_peer_url(),
            expected_masters: usize::from(cfg.masters),
            cluster_name: cfg.name.clone(),
            timing,
            join_backoff_ms: 1000.max(cfg.discovery.interval_ms),
        },
        state.load()?,
    );
    let mut joining_since: Option<u64> = None;
    let mut monitor: Option<tokio::task::JoinHandle<()>> = None;
    let mut pending = vec![Event::Start {
        has_etcd_data: state.has_etcd_data(),
    }];
    let mut tick = tokio::time::interval(Duration::from_millis(
        (cfg.discovery.interval_ms / 2).max(50),
    ));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_status = String::new();
    let mut pending_launch: Option<Launch> = None;
    let mut vip_instance: Option<Vip> = None;
    loop {
        if let Some(launch) = pending_launch.take() {
            if let Err(e) = supervisor.start(&launch.service_spec()).await {
                tracing::error!("starting etcd (retry): {e}");
                pending_launch = Some(launch);
            }
        }
        for event in pending.drain(..) {
            let now = now_ms();
            let before = plan.phase;
            let actions = plan.step(event.clone(), now).actions();
            if plan.phase == AgentPhase::Joining && joining_since.is_none() {
                joining_since = Some(now);
            }
            if plan.phase != before {
                tracing::info!("phase {before:?} → {:?}: {}", plan.phase, plan.detail);
                if plan.phase == AgentPhase::Failed {
                    tracing::error!("{}", plan.detail);
                }
            }
            for action in actions {
                match action {
                    Action::Persist(st) => state.save(&st)?,
                    Action::StartEtcd(cs) => {
                        let launch = Launch {
                            binary: opts.etcd_bin.clone(),
                            name: name.clone(),
                            data_dir: state.etcd_data_dir(),
                            ip,
                            client_port: cfg.etcd.client_port,
                            peer_port: cfg.etcd.peer_port,
                            heartbeat_ms: cfg.etcd.heartbeat_ms,
                            election_timeout_ms: cfg.etcd.election_timeout_ms,
                            state: cs.clone(),
                            tls: TlsFiles::under(&state.pki_dir()),
                        };
                        tracing::info!(
                            "starting etcd ({})",
                            match cs {
                                ClusterState::New { .. } => "new cluster",
                                ClusterState::Existing { .. } => "joining",
                                ClusterState::Restart { .. } => "restart with data",
                            }
                        );
                        if let Err(e) = supervisor.start(&launch.service_spec()).await {
                            // Retried on every tick until the supervisor
                            // accepts it (for example systemd busy reloading).
                            tracing::error!("starting etcd: {e}");
                            pending_launch = Some(launch.clone());
                        } else {
                            pending_launch = None;
                        }
                        if monitor.is_none() {
                            monitor =
                                Some(tokio::spawn(monitor_etcd(ctx.clone(), report_tx.clone())));
                        }
                    }
                    Action::Join { own_added } => {
                        let snap = disc.peers(now_ms());
                        let endpoints = member_endpoints(&snap, cfg.etcd.client_port);
                        let live: BTreeSet<String> = snap
                            .iter()
                            .filter(|p| !p.peer_url.is_empty())
                            .map(|p| p.peer_url.clone())
                            .collect();
                        let watched =
                            joining_since.is_some_and(|s| now.saturating_sub(s) >= ctx.grace_ms);
                        let c = ctx.clone();
                        tokio::spawn(async move {
                            let ev =
                                join_attempt(c.clone(), endpoints, own_added, live, watched).await;
                            let _ = c.events.send(ev);
                        });
                    }
                    Action::Promote { member_id } => {
                        let endpoints: Vec<String> =
                            member_endpoints(&disc.peers(now_ms()), cfg.etcd.client_port);
                        let c = ctx.clone();
                        tokio::spawn(async move {
                            let ev = promote_attempt(c.clone(), endpoints, member_id).await;
                            let _ = c.events.send(ev);
                        });
                    }
                    Action::StartVip => {
                        // The local etcd member is a healthy voter: the VIP
                        // may run (its tracker keeps checking quorum).
                        if vip_instance.is_none() {
                            let peers = vip::master_addresses(&disc.peers(now_ms()));
                            match Vip::start(&cfg, &iface, &state.pki_dir(), &ctx.tls, peers).await
                            {
                                Ok(v) => vip_instance = v,
                                Err(e) => {
                                    tracing::error!("VIP not started: {e:#}");
                                    report_tx.send_modify(|r| {
                                        r.vip =
                                            Some(serde_json::json!({ "error": format!("{e:#}") }));
                                    });
                                }
                            }
                        }
                    }
                }
            }
        }
        // The kube phase: gate and facts from discovery (never waits).
        let kube_peers = disc.kube_peers();
        let mut etcd_endpoints = member_endpoints(&disc.peers(now_ms()), cfg.etcd.client_port);
        if master {
            etcd_endpoints.push(ctx.own_client_url());
            etcd_endpoints.sort();
            etcd_endpoints.dedup();
        }
        kube.observe_join(&kube_peers);
        kube.update(
            kube::gate(
                role,
                plan.phase,
                kube.already_set_up(),
                kube.join_known(),
                &kube_peers,
            ),
            kube::Feed {
                master_ips: kube::master_ips(master.then_some(ip), &kube_peers),
                etcd_endpoints,
                joiners_waiting: kube::joiners_waiting(&kube_peers),
                ca_pin: kube.discovered_pin(),
            },
        );
        // Announce and report the current phase.
        disc.announce(wire::OwnState {
            phase: plan.phase,
            proposal: plan.proposal.clone(),
            membership: plan.membership(),
            kube: Some(kube.wire_state()),
            kube_join: kube.announced_join(),
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
        if let Some(k) = kube::status_suffix(&report_tx.borrow().kube) {
            line = format!("{line}; {k}");
        }
        if line != last_status {
            notify_status(&line);
            last_status = line;
        }
        let stats = disc.stats();
        let peers_now = disc.peer_reports(now_ms());
        if let Some(v) = &mut vip_instance {
            // The hand-off: /readyz joins the checks once the kube phase runs.
            if let Err(e) = v.set_health(kube.vip_health(cfg.kubernetes.api_port), kube.ca_pem()) {
                tracing::error!("VIP health checks: {e:#}");
            }
            v.set_peers(vip::master_addresses(&disc.peers(now_ms())));
            let vs = v.status_json();
            report_tx.send_modify(|r| r.vip = Some(vs));
        }
        report_tx.send_modify(|r| {
            r.phase = shown_phase.to_owned();
            r.detail = plan.detail.clone();
            r.discovery.mode = format!("{:?}", cfg.discovery.mode).to_lowercase();
            r.discovery.peers = peers_now;
            r.discovery.accepted = stats.0;
            r.discovery.rejected = stats.1;
            r.discovery.proposal = plan.proposal.iter().map(hex16).collect();
            r.discovery.clock_skew = skewed;
        });

        tokio::select! {
            _ = tick.tick() => pending.push(Event::Peers { peers: disc.peers(now_ms()) }),
            _ = disc.changed() => pending.push(Event::Peers { peers: disc.peers(now_ms()) }),
            Some(ev) = events.recv() => pending.push(ev),
            _ = kube.changed() => {}
            _ = hup.recv() => {
                match load_config(&opts).await {
                    Ok(l) if l.config == cfg => tracing::info!("SIGHUP: configuration unchanged"),
                    Ok(_) => tracing::warn!("SIGHUP: configuration changed; restart the agent to apply it"),
                    Err(e) => tracing::error!("SIGHUP: configuration invalid (the running one stays): {e}"),
                }
            }
            _ = term.recv() => {
                tracing::info!("SIGTERM: stopping");
                if let Some(v) = vip_instance.take() {
                    v.shutdown().await;
                }
                // Under systemd etcd keeps running (it is its own unit);
                // children of the agent are stopped with it.
                if let AnySupervisor::Process(p) = &supervisor {
                    p.shutdown().await;
                }
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
