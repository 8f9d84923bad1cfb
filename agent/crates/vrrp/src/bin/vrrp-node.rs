//! `vrrp-node`: one VRRP instance, standalone. Used by the integration
//! tests and the failover benchmark; also handy to try the crate on a real
//! network. Logs every transition with a timestamp; stops gracefully on
//! SIGTERM or SIGINT (a master advertises priority 0 and keeps the VIP
//! until its successor speaks, bounded, then removes it).
//!
//! Exit codes: 0 after a graceful stop, 1 on a setup error (bad option,
//! missing interface, no permission for raw sockets).

use std::io::IsTerminal;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use ipnet::Ipv4Net;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;
use vrrp::config::DEFAULT_PROOF;
use vrrp::proof::DEFAULT_PROOF_TIMEOUT;
use vrrp::{tracker, CheckRole, CheckSpec, EtcdProver, Health, Quorum, TlsFiles, Vrrp, VrrpConfig};

#[derive(Debug, Parser)]
#[command(about = "Run one VRRPv3 instance (the agent's virtual IP) standalone")]
struct Args {
    /// Interface carrying the cluster network.
    #[arg(long)]
    interface: String,
    /// The VIP with the network's prefix, for example 10.77.0.10/24.
    #[arg(long)]
    vip: Ipv4Net,
    /// Virtual router id.
    #[arg(long, default_value_t = 51)]
    router_id: u8,
    /// Advertisement interval in centiseconds.
    #[arg(long, default_value_t = cluster_config::DEFAULT_VRRP_INTERVAL_CS)]
    interval_cs: u16,
    /// Priority of a healthy node (1..=254).
    #[arg(long, default_value_t = cluster_config::DEFAULT_VRRP_PRIORITY)]
    priority: u8,
    /// Do not preempt a lower-priority master.
    #[arg(long)]
    no_preempt: bool,
    /// Preempt delay in milliseconds.
    #[arg(long, default_value_t = 0)]
    preempt_delay_ms: u64,
    /// Unicast peer (repeat); switches to unicast mode.
    #[arg(long = "peer")]
    peers: Vec<Ipv4Addr>,
    /// etcd client URL of the local member: quorum is proven by a
    /// linearizable read on it for every claim, and renewed under a lease
    /// while master. Without it, quorum is assumed (plain keepalived
    /// behaviour).
    #[arg(long)]
    etcd: Option<String>,
    /// Proof lease in milliseconds (default: the agent's).
    #[arg(long)]
    proof_lease_ms: Option<u64>,
    /// Proof renewal period of a master in milliseconds (default: the agent's).
    #[arg(long)]
    proof_renew_ms: Option<u64>,
    /// Do not hand the etcd leadership away while master (the agent does).
    #[arg(long)]
    keep_etcd_leadership: bool,
    /// URL of a weighted health check (for example the API server's
    /// https://127.0.0.1:6443/readyz).
    #[arg(long)]
    readyz: Option<String>,
    /// Priority lost while the --readyz check fails.
    #[arg(long, default_value_t = 50)]
    weight: u8,
    /// Check interval in milliseconds (--readyz).
    #[arg(long)]
    check_interval_ms: Option<u64>,
    /// Consecutive failures before a check fails (--readyz).
    #[arg(long)]
    fall: Option<u32>,
    /// Consecutive successes before a check passes again (--readyz).
    #[arg(long)]
    rise: Option<u32>,
    /// CA bundle (PEM) for HTTPS checks and the proof.
    #[arg(long)]
    tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for HTTPS checks.
    #[arg(long)]
    tls_cert: Option<PathBuf>,
    /// Client key (PEM) for HTTPS checks.
    #[arg(long)]
    tls_key: Option<PathBuf>,
    /// Write the status as JSON to this file whenever it changes.
    #[arg(long)]
    status_file: Option<PathBuf>,
}

fn tls(args: &Args) -> TlsFiles {
    TlsFiles {
        ca: args.tls_ca.clone(),
        cert: args.tls_cert.clone(),
        key: args.tls_key.clone(),
    }
}

fn quorum(args: &Args) -> Result<Quorum> {
    let Some(etcd) = &args.etcd else {
        return Ok(Quorum::Assumed);
    };
    let mut params = DEFAULT_PROOF;
    if let Some(ms) = args.proof_lease_ms {
        params.lease = Duration::from_millis(ms);
    }
    if let Some(ms) = args.proof_renew_ms {
        params.renew = Duration::from_millis(ms);
    }
    let prover = EtcdProver::new(etcd, tls(args), DEFAULT_PROOF_TIMEOUT.min(params.lease))
        .context("setting up the quorum proof")?;
    Ok(Quorum::Proven {
        prover,
        params,
        shed_leadership: !args.keep_etcd_leadership,
    })
}

fn checks(args: &Args) -> Vec<CheckSpec> {
    let tls = tls(args);
    let mut out = Vec::new();
    if let Some(url) = &args.readyz {
        // Slow counts as failing here (slow weight = weight).
        let mut c = CheckSpec::apiserver_readyz(6443, args.weight, args.weight, tls);
        c.url = url.clone();
        c.role = CheckRole::Weight(args.weight);
        out.push(c);
    }
    for c in &mut out {
        if let Some(ms) = args.check_interval_ms {
            c.interval = Duration::from_millis(ms);
        }
        if let Some(f) = args.fall {
            c.fall = f;
        }
        if let Some(r) = args.rise {
            c.rise = r;
        }
    }
    out
}

async fn run(args: Args) -> Result<()> {
    let spec = cluster_config::Vrrp {
        router_id: args.router_id,
        interval_cs: args.interval_cs,
        priority: args.priority,
        preempt: !args.no_preempt,
        preempt_delay_ms: args.preempt_delay_ms,
        unicast: !args.peers.is_empty(),
        // Not read by VrrpConfig: the proof bounds come from `quorum`.
        proof_timeout_ms: cluster_config::DEFAULT_PROOF_TIMEOUT_MS,
        proof_lease_ms: cluster_config::DEFAULT_PROOF_LEASE_MS,
    };
    let config = VrrpConfig::new(&spec, args.vip, args.interface.clone())?;
    let checks = checks(&args);
    let quorum = quorum(&args)?;
    let tracker = if checks.is_empty() {
        None
    } else {
        Some(tracker::spawn(checks).context("starting the health checks")?)
    };
    let (_health_tx, fixed_health) = watch::channel(Health::OK);
    let health = tracker.as_ref().map_or(fixed_health, |t| t.health());
    let (_peers_tx, peers) = watch::channel(args.peers.clone());
    let handle = Vrrp::spawn(config, quorum, health, peers)
        .await
        .context("starting the VRRP instance")?;

    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut status = handle.subscribe();
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            changed = status.changed() => {
                if changed.is_err() {
                    break;
                }
                if let Some(path) = &args.status_file {
                    let json = serde_json::to_vec_pretty(&*status.borrow_and_update())
                        .context("serialising the status")?;
                    atomic_file::write(path, &json, atomic_file::PUBLIC)
                        .with_context(|| format!("writing {}", path.display()))?;
                }
            }
        }
    }
    tracing::info!("stopping");
    let last = handle.status();
    handle
        .shutdown()
        .await
        .context("stopping the VRRP instance")?;
    println!("{last}");
    Ok(())
}

fn main() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("vrrp-node: starting the runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = runtime.block_on(run(args)) {
        eprintln!("vrrp-node: {e:#}");
        std::process::exit(1);
    }
}
