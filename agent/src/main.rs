//! `agent`: the node agent binary. Thin: parses the command line and calls
//! the library.
//!
//! Exit codes: 0 success; 1 the agent could not run (for example the state
//! directory is unusable) or `agent status` could not reach it. An invalid
//! configuration does NOT exit: the agent stays up in a visible failed
//! state (status line, journal, `agent status`) and re-reads on SIGHUP.
use std::path::PathBuf;

use agent::startup::{RunOptions, SupervisorKind};
use agent::status;
use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};

/// The kubeboot node agent.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent (the default).
    Run(RunArgs),
    /// Print the running agent's status.
    Status {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Keep printing, every SECONDS (with --json: one compact JSON
        /// document per line, for a log or a virtio-serial port). An agent
        /// that cannot be reached is reported on stderr and retried.
        #[arg(long, value_name = "SECONDS")]
        watch: Option<u64>,
        /// The agent's status socket.
        #[arg(long, default_value = status::DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// etcd operations through the running agent.
    #[command(subcommand)]
    Etcd(EtcdCommand),
    /// Recover from etcd quorum loss on this surviving master: the running
    /// agent rebuilds a one-member etcd cluster from this node's data (its
    /// member's db, or --from-snapshot FILE) under a new cluster id and
    /// the next recovery epoch; the other masters then yield to that epoch
    /// (their old data kept aside) and rejoin as learners. Refused while
    /// the cluster has a quorum (the answer says what proved it) and
    /// without --confirm-node naming this node. Writes made on the old
    /// cluster after this node's data was taken are lost. Exit 1 when
    /// refused or failed.
    Recover {
        /// This node's name (as `agent status` shows it): the
        /// confirmation that this node's data becomes the cluster's.
        #[arg(long, value_name = "NODE")]
        confirm_node: Option<String>,
        /// Restore this snapshot (an agent snapshot with its `.json`
        /// sidecar, verified first) instead of the member's own db.
        #[arg(long, value_name = "FILE")]
        from_snapshot: Option<PathBuf>,
        #[command(flatten)]
        target: Target,
    },
    /// Start real pods through containerd's CRI, as kubelet does, and print
    /// what they saw as `key=value` lines (the image self-test; see
    /// agent/crates/cri). Exit 1 when a step fails.
    CriCheck(CriCheckArgs),
}

#[derive(Subcommand)]
enum EtcdCommand {
    /// Ask the running agent (a master whose etcd member is a healthy
    /// voter) for an etcd snapshot now; it is written and verified in the
    /// agent's snapshot directory and kept under the retention like the
    /// periodic ones. Exit 1 when the agent refuses or fails.
    Snapshot {
        /// Also copy it (with its `.json` sidecar, verified) to FILE. With
        /// --node: stream it from that master's etcd (client port 2379,
        /// a client certificate issued here from the secret) to FILE on
        /// this machine, the off-node copy that survives losing every
        /// master (`[etcd] restore_from`).
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        #[command(flatten)]
        target: Target,
    },
}

/// Which agent a request goes to: this node's, over its control socket, or
/// another node's over the network (`--node`).
#[derive(clap::Args)]
struct Target {
    /// The agent's status socket (the control socket is beside it).
    #[arg(long, default_value = status::DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Ask the agent at ADDR (IP or IP:PORT, port 7374 by default) over
    /// the network instead: mutual TLS with a client certificate issued
    /// here from the cluster secret (--secret-file), for nodes without a
    /// login.
    #[arg(long, value_name = "ADDR", requires = "secret_file")]
    node: Option<String>,
    /// The cluster secret (with --node): the file the nodes got as the
    /// `kubeboot.secret` credential.
    #[arg(long, value_name = "FILE")]
    secret_file: Option<PathBuf>,
    /// The cluster's name (with --node): `[cluster] name` of its
    /// configuration.
    #[arg(long, value_name = "NAME", default_value = cluster_config::DEFAULT_CLUSTER_NAME)]
    cluster_name: String,
}

impl Target {
    /// `--node` as an address, `port` when it names none.
    fn addr(&self, node: &str, port: u16) -> Result<std::net::SocketAddr> {
        Ok(match node.parse() {
            Ok(a) => a,
            Err(_) => std::net::SocketAddr::new(
                node.parse()
                    .with_context(|| format!("--node {node}: expected an IP or IP:PORT"))?,
                port,
            ),
        })
    }

    /// The cluster's CAs, derived from `--secret-file` and `--cluster-name`
    /// as every node derives them.
    fn pki(&self) -> Result<pki::ClusterPki> {
        let file = self
            .secret_file
            .as_deref()
            .context("--node needs --secret-file")?;
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("reading the cluster secret {}", file.display()))?;
        let secret = cluster_config::ClusterSecret::new(text)
            .with_context(|| format!("the cluster secret in {}", file.display()))?;
        pki::ClusterPki::derive(&secret, &self.cluster_name).context("deriving the cluster's CAs")
    }

    /// Sends `request` to the chosen agent.
    async fn ask(&self, request: &agent::control::Request) -> Result<agent::control::Response> {
        let Some(node) = &self.node else {
            let path = agent::control::socket_beside(&self.socket);
            return Ok(agent::control::ask(&path, request).await?);
        };
        let addr = self.addr(node, agent::remote::CONTROL_PORT)?;
        let pki = self.pki()?;
        Ok(agent::remote::ask(addr, &pki.control_ca, request).await?)
    }
}

#[derive(clap::Args)]
struct CriCheckArgs {
    /// The CRI socket.
    #[arg(long, default_value = cri::DEFAULT_SOCKET)]
    socket: PathBuf,
    /// The image to run (busybox at /bin/busybox and /bin/sh), already in
    /// the runtime.
    #[arg(long)]
    image: String,
    /// Host directory for the pods' mounts and logs (emptied first).
    #[arg(long)]
    work_dir: PathBuf,
    /// What the server pod serves and the client pod must fetch.
    #[arg(long)]
    token: String,
    /// The non-root uid and gid of the containers.
    #[arg(long, default_value_t = 1000)]
    uid: u32,
    /// Budget of each wait, in seconds.
    #[arg(long, default_value_t = 180)]
    timeout: u64,
}

#[derive(Clone, Copy, ValueEnum)]
enum SupervisorArg {
    /// systemd over D-Bus (images).
    Systemd,
    /// Child processes of the agent (tests, machines without systemd).
    Process,
}

#[derive(clap::Args)]
struct RunArgs {
    /// Extra configuration (TOML `ClusterSpec` fragment), highest precedence.
    #[arg(long)]
    config: Option<PathBuf>,
    /// The cluster secret, highest precedence.
    #[arg(long)]
    secret_file: Option<PathBuf>,
    /// The image configuration.
    #[arg(long, default_value = cluster_config::IMAGE_CONFIG_PATH)]
    image_config: PathBuf,
    /// Persistent state directory.
    #[arg(long, default_value = agent::state::DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
    /// Cluster network interface (overrides the configuration).
    #[arg(long)]
    interface: Option<String>,
    /// Status socket.
    #[arg(long, default_value = status::DEFAULT_SOCKET)]
    socket: PathBuf,
    /// How etcd is run.
    #[arg(long, value_enum, default_value = "systemd")]
    supervisor: SupervisorArg,
    /// The etcd binary.
    #[arg(long, default_value = "/usr/bin/etcd")]
    etcd_bin: PathBuf,
    /// Never set the hostname (tests sharing the host's UTS namespace).
    #[arg(long)]
    no_hostname: bool,
    /// Never contact the EC2 metadata service, even on EC2.
    #[arg(long)]
    no_imds: bool,
    /// Grace period before a member no node announces counts as dead.
    #[arg(long, default_value_t = 30_000)]
    dead_member_grace_ms: u64,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colour only on a terminal: under systemd stderr is the journal,
        // where escape codes would end up verbatim in every line.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    // One thread: the agent is I/O bound and small (idle RSS goal < 20 MB).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    match cli.command {
        Some(Command::Status {
            json,
            watch: None,
            socket,
        }) => rt.block_on(async {
            let report = status::fetch(&socket).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", status::render(&report));
            }
            Ok(())
        }),
        Some(Command::Status {
            json,
            watch: Some(every),
            socket,
        }) => rt.block_on(watch_status(&socket, json, every)),
        Some(Command::Run(args)) => rt.block_on(agent::run::run(options(args))),
        Some(Command::CriCheck(args)) => rt.block_on(cri_check(args)),
        Some(Command::Recover {
            confirm_node,
            from_snapshot,
            target,
        }) => rt.block_on(recover(&target, confirm_node, from_snapshot)),
        Some(Command::Etcd(EtcdCommand::Snapshot { out, target })) => {
            rt.block_on(etcd_snapshot(&target, out.as_deref()))
        }
        None => {
            let args = RunArgs::parse_from(["agent"]);
            rt.block_on(agent::run::run(options(args)))
        }
    }
}

/// `agent cri-check`: runs the CRI check, printing each fact as it comes.
async fn cri_check(args: CriCheckArgs) -> Result<()> {
    let config = cri::check::CheckConfig {
        socket: args.socket,
        image: args.image,
        work_dir: args.work_dir,
        token: args.token,
        uid: args.uid,
        timeout: std::time::Duration::from_secs(args.timeout),
    };
    let mut emit = |key: &str, value: &str| println!("{key}={value}");
    cri::check::run(&config, &mut emit)
        .await
        .context("CRI check")
}

/// `agent etcd snapshot`: asks the agent over its control socket, prints
/// what it wrote, and copies it to `out` when given.
async fn etcd_snapshot(target: &Target, out: Option<&std::path::Path>) -> Result<()> {
    use agent::control::{Request, Response};
    if let (Some(node), Some(out)) = (&target.node, out) {
        return etcd_snapshot_to_here(target, node, out).await;
    }
    match target.ask(&Request::EtcdSnapshot).await? {
        Response::Snapshot { path, meta } => {
            println!(
                "etcd snapshot {}: {} bytes, revision {}, member {} ({}), sha256 {}",
                path.display(),
                meta.size,
                meta.revision,
                meta.member_name,
                meta.member_id,
                meta.sha256
            );
            if let Some(out) = out {
                agent::etcd::snapshot::copy_verified(&path, &meta, out)?;
                println!(
                    "copied to {} (sidecar {}.json)",
                    out.display(),
                    out.display()
                );
            }
            Ok(())
        }
        Response::Error { error } => anyhow::bail!("etcd snapshot: {error}"),
        Response::Recovered(_) => anyhow::bail!("etcd snapshot: unexpected answer"),
    }
}

/// `agent etcd snapshot --node ADDR --out FILE`: streams a snapshot from
/// the master's etcd member straight to `out` (with its sidecar, verified),
/// through the one snapshot implementation the agents use.
async fn etcd_snapshot_to_here(target: &Target, node: &str, out: &std::path::Path) -> Result<()> {
    use agent::etcd::snapshot;
    let addr = target.addr(node, cluster_config::DEFAULT_ETCD_CLIENT_PORT)?;
    let pki = target.pki()?;
    let client = pki
        .etcd_ca
        .issue(&pki::LeafRequest::client(agent::remote::CLIENT_CN))
        .context("issuing an etcd client certificate")?;
    let source = snapshot::Source {
        endpoint: format!("https://{addr}"),
        tls: agent::etcd::ClientTls {
            ca_pem: pki.etcd_ca.cert_pem.clone(),
            cert_pem: client.cert_pem,
            key_pem: client.key_pem,
        },
        member_name: node.to_owned(),
    };
    // Written beside `out` first (same filesystem), then moved into place
    // by the verified copy; the temporary directory goes either way.
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    let work = parent.join(format!(".agent-snapshot-{}", std::process::id()));
    let now_ms = agent::run::now_ms();
    let taken = snapshot::take(&source, &work, snapshot::Reason::OnDemand, now_ms).await;
    let copied = taken
        .as_ref()
        .map_err(|e| anyhow::anyhow!("etcd snapshot from {addr}: {e}"))
        .and_then(|(path, meta)| {
            snapshot::copy_verified(path, meta, out)?;
            Ok(meta.clone())
        });
    let _ = std::fs::remove_dir_all(&work);
    let meta = copied?;
    println!(
        "etcd snapshot of {addr} written to {} (sidecar {}.json): {} bytes, revision {}, \
         cluster {}, sha256 {}",
        out.display(),
        out.display(),
        meta.size,
        meta.revision,
        meta.cluster_id,
        meta.sha256
    );
    Ok(())
}

/// `agent recover`: asks the running agent, prints the steps and the
/// result.
async fn recover(
    target: &Target,
    confirm_node: Option<String>,
    from_snapshot: Option<PathBuf>,
) -> Result<()> {
    use agent::control::{Request, Response};
    let from_snapshot = match from_snapshot {
        // The agent reads it: make a relative path the caller's (a path
        // on that node with --node).
        Some(p) if p.is_relative() && target.node.is_none() => {
            Some(std::env::current_dir()?.join(p))
        }
        other => other,
    };
    let req = Request::Recover(agent::recovery::RecoverRequest {
        confirm_node,
        from_snapshot,
    });
    match target.ask(&req).await? {
        Response::Recovered(out) => {
            for s in &out.steps {
                println!("{s}");
            }
            let r = &out.record;
            println!(
                "recovered: epoch {}, cluster {} → {}, old data kept at {}",
                r.epoch.text(),
                r.old_cluster_id.as_deref().unwrap_or("?"),
                r.new_cluster_id
                    .as_deref()
                    .unwrap_or("(etcd not answering yet)"),
                r.set_aside.as_deref().unwrap_or("(none)")
            );
            Ok(())
        }
        Response::Error { error } => anyhow::bail!("recover: {error}"),
        Response::Snapshot { .. } => anyhow::bail!("recover: unexpected answer"),
    }
}

/// `agent status --watch`: prints the status every `every` seconds until
/// killed (or stdout goes away); an unreachable agent is not fatal.
async fn watch_status(socket: &std::path::Path, json: bool, every: u64) -> Result<()> {
    use std::io::Write;
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(every.max(1)));
    loop {
        tick.tick().await;
        let text = match status::fetch(socket).await {
            Ok(report) if json => format!("{}\n", serde_json::to_string(&report)?),
            Ok(report) => format!("{}\n", status::render(&report)),
            Err(e) => {
                eprintln!("agent status: {e}");
                continue;
            }
        };
        let mut out = std::io::stdout().lock();
        out.write_all(text.as_bytes())
            .and_then(|()| out.flush())
            .context("writing the status")?;
    }
}

fn options(a: RunArgs) -> RunOptions {
    RunOptions {
        load: agent::config::LoadOptions {
            image_path: a.image_config,
            credentials_dir: agent::config::credentials_dir(
                std::env::var_os("CREDENTIALS_DIRECTORY"),
                std::path::Path::new(agent::config::SYSTEM_CREDENTIALS_DIR),
            ),
            cli_config: a.config,
            cli_secret: a.secret_file,
        },
        state_dir: a.state_dir,
        interface: a.interface,
        socket: a.socket,
        supervisor: match a.supervisor {
            SupervisorArg::Systemd => SupervisorKind::Systemd,
            SupervisorArg::Process => SupervisorKind::Process,
        },
        etcd_bin: a.etcd_bin,
        set_hostname: !a.no_hostname,
        imds: !a.no_imds,
        dead_member_grace_ms: a.dead_member_grace_ms,
    }
}

// `RunArgs` is also parsed standalone for the default command.
impl RunArgs {
    fn parse_from<I: IntoIterator<Item = &'static str>>(it: I) -> Self {
        #[derive(Parser)]
        struct Wrap {
            #[command(flatten)]
            args: RunArgs,
        }
        Wrap::parse_from(it).args
    }
}
