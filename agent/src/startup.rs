//! Startup: the options of `agent run`, waiting for a valid configuration
//! and the node's cluster address (visibly, never exiting), the node's
//! name and hostname, and the choice of supervisor.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use cluster_config::ClusterConfig;
use supervisor::{
    notify_ready, notify_status, AnySupervisor, ProcessSupervisor, SystemdSupervisor,
};
use tokio::signal::unix::Signal;
use tokio::sync::watch;

use crate::config::{self, Loaded};
use crate::core::model::hex16;
use crate::state::StateDir;
use crate::status::{self, StatusReport};

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

/// Loads the configuration layers (with user data on EC2 only).
pub(crate) async fn load_config(opts: &RunOptions) -> Result<Loaded, config::LoadError> {
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

/// A node with a valid configuration and a cluster address.
pub(crate) struct Configured {
    /// The layered configuration (and the cluster secret).
    pub(crate) loaded: Loaded,
    /// The interface carrying the cluster address.
    pub(crate) iface: String,
    /// The cluster address.
    pub(crate) ip: Ipv4Addr,
    /// The snapshot to bootstrap from, checked (`crate::restore`).
    pub(crate) restore: Option<crate::restore::RestoreSource>,
}

/// Waits for a valid configuration and the cluster address: a failure is
/// a visible, waiting state, never an exit. `None` on SIGTERM.
pub(crate) async fn wait_for_config(
    opts: &RunOptions,
    report_tx: &watch::Sender<StatusReport>,
    hup: &mut Signal,
    term: &mut Signal,
) -> Option<Configured> {
    loop {
        match load_config(opts).await {
            Ok(l) => match cluster_address(&l.config) {
                // The snapshot is checked last (it reads the whole file),
                // once, not on every wait for the address.
                Ok((iface, ip)) => match check_restore(&l.config, &opts.state_dir).await {
                    Ok(restore) => {
                        return Some(Configured {
                            loaded: l,
                            iface,
                            ip,
                            restore,
                        })
                    }
                    Err(reason) => {
                        if !wait_invalid(&reason, report_tx, hup, term).await {
                            return None;
                        }
                    }
                },
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
                        _ = term.recv() => return None,
                    }
                }
            },
            Err(e) => {
                if !wait_invalid(&e.to_string(), report_tx, hup, term).await {
                    return None;
                }
            }
        }
    }
}

/// An invalid configuration: shown (status, `STATUS=`, journal), then
/// waits for `SIGHUP` (true: read it again) or `SIGTERM` (false).
async fn wait_invalid(
    reason: &str,
    report_tx: &watch::Sender<StatusReport>,
    hup: &mut Signal,
    term: &mut Signal,
) -> bool {
    tracing::error!("configuration invalid, waiting for SIGHUP: {reason}");
    notify_status(&format!("failed: {reason}"));
    notify_ready();
    report_tx.send_modify(|r| {
        r.phase = "failed".to_owned();
        r.detail = reason.to_owned();
        r.config.ok = false;
        r.config.error = Some(reason.to_owned());
    });
    tokio::select! {
        _ = hup.recv() => {
            tracing::info!("SIGHUP: re-reading the configuration");
            true
        }
        _ = term.recv() => false,
    }
}

/// Checks `[etcd] restore_from` (`crate::restore::check`, off the async
/// runtime: it reads the whole snapshot); a bad snapshot is a
/// configuration error naming its path.
async fn check_restore(
    cfg: &ClusterConfig,
    state_dir: &std::path::Path,
) -> Result<Option<crate::restore::RestoreSource>, String> {
    let (cfg, dir) = (cfg.clone(), state_dir.to_owned());
    match tokio::task::spawn_blocking(move || crate::restore::check(&cfg, &dir)).await {
        Ok(Ok(restore)) => Ok(restore),
        Ok(Err(e)) => Err(format!("etcd.restore_from: refusing the snapshot: {e}")),
        Err(e) => Err(format!("etcd.restore_from: {e}")),
    }
}

/// Names the node (`<role>-<first 6 hex of its id>`), sets the hostname
/// when asked, logs and reports who it is; returns the name.
pub(crate) fn identify(
    opts: &RunOptions,
    node: &Configured,
    node_id: &[u8; 16],
    report_tx: &watch::Sender<StatusReport>,
) -> String {
    let cfg = &node.loaded.config;
    let role = cfg.role;
    let name = format!("{role}-{}", &hex16(node_id)[..6]);
    if opts.set_hostname {
        maybe_set_hostname(&name);
    }
    tracing::info!(
        "node {name} ({}) on {} {}, config from {}",
        hex16(node_id),
        node.iface,
        node.ip,
        node.loaded.sources.join(" < ")
    );
    report_tx.send_modify(|r| {
        r.node = status::NodeStatus {
            id: hex16(node_id),
            name: name.clone(),
            role: role.to_string(),
            addresses: vec![node.ip.to_string()],
        };
        r.config = status::ConfigStatus {
            ok: true,
            error: None,
            sources: node.loaded.sources.clone(),
            cluster: cfg.name.clone(),
            masters: cfg.masters,
        };
    });
    name
}

/// The supervisor `opts` asks for: systemd over D-Bus, or the agent's own
/// children (logs under the state directory).
pub(crate) async fn connect_supervisor(
    opts: &RunOptions,
    state: &StateDir,
) -> Result<AnySupervisor> {
    Ok(match opts.supervisor {
        SupervisorKind::Systemd => SystemdSupervisor::connect()
            .await
            .context("connecting to systemd over D-Bus (use --supervisor process without systemd)")?
            .into(),
        SupervisorKind::Process => ProcessSupervisor::new(state.root().join("logs")).into(),
    })
}
