//! `make cluster`, `make cluster-status`, `make cluster-down`: three masters
//! (plus `--workers N`) from the same images on a private network under
//! QEMU (TCG), left running in the background. Same library as the tests
//! (`qemu_tests::cluster`).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use qemu_tests::cluster::{self, Cluster, ClusterOptions, Node, Role, VIP};
use qemu_tests::net::Network;
use qemu_tests::status::{self, Reading};

/// Masters the images expect (`[cluster] masters`).
const MASTERS: u8 = 3;
/// First worker index (workers are 10.77.0.111 and up).
const FIRST_WORKER: u8 = 11;

#[derive(Parser)]
#[command(about = "Boot a kubeboot cluster under QEMU on a private network")]
struct Cli {
    /// Where disks, console logs, status streams and pid files live.
    #[arg(long, env = "RUN_DIR", default_value = "run/cluster", global = true)]
    run_dir: PathBuf,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Boot three masters (and workers), follow them to a healthy quorum.
    Up {
        /// Workers to boot after the masters.
        #[arg(long, env = "WORKERS", default_value_t = 0)]
        workers: u8,
        /// The cluster secret file (default: generated once into
        /// <run-dir>/secret, mode 0600).
        #[arg(long, env = "SECRET_FILE")]
        secret_file: Option<PathBuf>,
        /// Seconds to wait for a healthy quorum and a VIP holder.
        #[arg(long, env = "CLUSTER_TIMEOUT", default_value_t = 900)]
        timeout: u64,
        /// Seconds to wait, after the quorum, for every node's kube phase
        /// to be ready (images with Kubernetes only; kubeadm init under
        /// TCG takes 10-20 min).
        #[arg(long, env = "KUBE_TIMEOUT", default_value_t = 2700)]
        kube_timeout: u64,
        /// Guest memory, MiB (default 1536; 3072 for images with
        /// Kubernetes, kubeadm's preflight wants 1700 MB on a master).
        #[arg(long, env = "MEMORY")]
        memory: Option<u32>,
        /// vCPUs per guest (default 1; 2 for images with Kubernetes,
        /// kubeadm's preflight wants 2 on a master).
        #[arg(long, env = "CPUS")]
        cpus: Option<u32>,
        /// Seconds between two guests' power-on.
        #[arg(long, default_value_t = 3)]
        stagger: u64,
        /// A cluster configuration file (TOML, the schema of the image's
        /// /usr/lib/kubeboot/cluster.toml) given to every node as the
        /// `kubeboot.config` credential, over the image's settings: for
        /// example `[kubernetes] cni`, or `[etcd]`/`[vrrp]` timing for a slow
        /// machine.
        #[arg(long, env = "CLUSTER_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Print `agent status` of every node (from its status stream).
    Status,
    /// Measure power-on to a healthy quorum (three masters powered on at
    /// once) and VIP failover inside the guests, `--runs` times, each in a
    /// fresh cluster under <run-dir>/bench-<n>; print a table and write
    /// JSON. TCG: guest time runs several times slower than on hardware.
    Bench {
        /// Runs (the medians need at least 3).
        #[arg(long, default_value_t = 3)]
        runs: u32,
        /// Machine-readable results.
        #[arg(long, default_value = "bench/results/cluster.json")]
        out: PathBuf,
        /// Seconds to wait for a healthy quorum per run.
        #[arg(long, default_value_t = 900)]
        timeout: u64,
    },
    /// With images carrying Kubernetes: power-on of three masters (2 vCPUs,
    /// 3072 MiB each) to the API answering `/readyz` on the VIP (TLS
    /// verified against the CA derived from the secret), then a power cut
    /// of the VIP holder to the API answering on the VIP again, `--runs`
    /// times in fresh clusters under <run-dir>/kbench-<n>; print a table
    /// and write JSON. TCG: kubeadm init alone takes 5-10 min here.
    BenchKubernetes {
        /// Runs (the medians need at least 3).
        #[arg(long, default_value_t = 3)]
        runs: u32,
        /// Machine-readable results.
        #[arg(long, default_value = "bench/results/kubernetes.json")]
        out: PathBuf,
        /// Seconds to wait for the API on the VIP per run.
        #[arg(long, default_value_t = 2700)]
        timeout: u64,
        /// A cluster configuration given to every node (as `up --config`),
        /// for example etcd/VIP timing for TCG.
        #[arg(long, env = "CLUSTER_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Stop the guests and remove the network; disks stay unless --purge.
    Down {
        /// Delete disks, logs and the secret too.
        #[arg(long, env = "PURGE", value_parser = parse_flag, default_value = "0")]
        purge: bool,
    },
}

fn parse_flag(s: &str) -> Result<bool, String> {
    match s {
        "" | "0" | "false" | "no" => Ok(false),
        "1" | "true" | "yes" => Ok(true),
        _ => Err(format!("expected 0 or 1, got {s:?}")),
    }
}

fn main() -> Result<()> {
    // A command-line tool whose output is piped (`make cluster-status |
    // head`) ends quietly when the reader goes, as Unix tools do, instead
    // of panicking in `println!` (Rust ignores SIGPIPE by default).
    // SAFETY: restoring the default disposition of one signal, before any
    // thread is started; no handler runs Rust code.
    unsafe {
        let _ = nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGPIPE,
            nix::sys::signal::SigHandler::SigDfl,
        );
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let mut cli = Cli::parse();
    // dnsmasq and QEMU daemonize (and change to `/`), so every path handed
    // to them must be absolute: `make cluster` passes a relative run dir.
    cli.run_dir = std::path::absolute(&cli.run_dir)
        .with_context(|| format!("resolving {}", cli.run_dir.display()))?;
    match cli.command {
        Cmd::Up {
            workers,
            secret_file,
            timeout,
            kube_timeout,
            memory,
            cpus,
            stagger,
            config,
        } => up(
            &cli.run_dir,
            workers,
            secret_file.as_deref(),
            (
                Duration::from_secs(timeout),
                Duration::from_secs(kube_timeout),
            ),
            (memory, cpus),
            Duration::from_secs(stagger),
            config.as_deref(),
        ),
        Cmd::Status => status_cmd(&cli.run_dir),
        Cmd::Bench { runs, out, timeout } => {
            bench(&cli.run_dir, runs, &out, Duration::from_secs(timeout))
        }
        Cmd::BenchKubernetes {
            runs,
            out,
            timeout,
            config,
        } => bench_kubernetes(
            &cli.run_dir,
            runs,
            &out,
            Duration::from_secs(timeout),
            config.as_deref(),
        ),
        Cmd::Down { purge } => down(&cli.run_dir, purge),
    }
}

/// The cluster configuration file's text, checked (`None` without one).
fn read_config(config: Option<&Path>) -> Result<Option<String>> {
    let Some(path) = config else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the cluster configuration {}", path.display()))?;
    // Refused here, with the file's line, rather than by every agent.
    cluster_config::ClusterSpec::from_toml(&path.display().to_string(), &text)?;
    Ok(Some(text))
}

/// The secret from `file`, or the one generated once in `<run>/secret`.
fn secret(run_dir: &Path, file: Option<&Path>) -> Result<String> {
    if let Some(f) = file {
        let s = std::fs::read_to_string(f)
            .with_context(|| format!("reading the secret file {}", f.display()))?;
        return Ok(s.trim().to_owned());
    }
    let path = run_dir.join("secret");
    if path.exists() {
        let s = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        return Ok(s.trim().to_owned());
    }
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("reading /dev/urandom")?;
    let s: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    writeln!(f, "{s}").with_context(|| format!("writing {}", path.display()))?;
    println!("cluster: generated a cluster secret in {}", path.display());
    Ok(s)
}

/// Phases of one node as `make cluster` reports them.
#[derive(Default)]
struct Progress {
    booted: Option<Duration>,
    multi_user: Option<Duration>,
    peers: Option<Duration>,
    member: Option<Duration>,
    voter: Option<Duration>,
    vip: Option<Duration>,
    phase: String,
    /// The kube phase's last summary line.
    kube: String,
    /// When the kube phase was first seen ready (or skipped).
    kube_done: Option<Duration>,
    print: bool,
}

fn up(
    run_dir: &Path,
    workers: u8,
    secret_file: Option<&Path>,
    (timeout, kube_timeout): (Duration, Duration),
    (memory, cpus): (Option<u32>, Option<u32>),
    stagger: Duration,
    config: Option<&Path>,
) -> Result<()> {
    std::fs::create_dir_all(run_dir).with_context(|| format!("creating {}", run_dir.display()))?;
    // A cluster already up: say so and show it.
    if let Ok(state) = cluster::read_state(run_dir) {
        let running: Vec<&Node> = state.nodes.values().filter(|n| n.running()).collect();
        if !running.is_empty() {
            println!(
                "cluster: already running ({} guests in namespace {}); `make cluster-down` stops it",
                running.len(),
                state.netns
            );
            return status_cmd(run_dir);
        }
        if Network::exists(&state.netns) {
            Network::open(&state.netns, run_dir)
                .destroy()
                .context("removing the previous cluster's network")?;
        }
    }
    let secret = secret(run_dir, secret_file)?;
    let mut opts = ClusterOptions::new(
        run_dir.to_owned(),
        format!("kb-c{}", std::process::id()),
        secret,
    );
    let kubernetes = qemu_tests::find_image_in(&opts.images, "master")?.kubernetes;
    opts.fit_for_kubeadm(&kubernetes);
    opts.memory_mib = memory.unwrap_or(opts.memory_mib);
    opts.cpus = cpus.unwrap_or(opts.cpus);
    opts.config = read_config(config)?;
    let say = |text: String| {
        for line in status::wrap("cluster: ", &text, status::LINE_WIDTH) {
            println!("{line}");
        }
    };
    if kubernetes.present {
        say(format!(
            "images with Kubernetes {} from {}: etcd + VIP, then kubeadm init/join \
             (10-20 min under TCG); {} vCPUs and {} MiB a guest",
            kubernetes.version.as_deref().unwrap_or("?"),
            opts.images.display(),
            opts.cpus,
            opts.memory_mib
        ));
    } else {
        say(format!(
            "images without Kubernetes from {}: etcd + VIP only, the kube phase reports itself \
             skipped ({})",
            opts.images.display(),
            kubernetes.reason.as_deref().unwrap_or("no reason recorded"),
        ));
    }
    let mut c = Cluster::create(opts).context("creating the private network")?;
    say(format!(
        "private network 10.77.0.0/24 (namespace {}, bridge br0 10.77.0.1/24, DHCP .100-.199, \
         VIP {VIP})",
        c.options().netns
    ));
    say(format!(
        "per node in {}: <node>.qcow2 (data disk), <node>.console.log, <node>.status.jsonl",
        run_dir.display()
    ));
    let t0 = Instant::now();
    let mut names = Vec::new();
    for i in 1..=MASTERS {
        let name = format!("master-{i}");
        let fresh = !run_dir.join(format!("{name}.qcow2")).exists();
        let n = c.start(&name, Role::Master, i, None, false)?;
        println!(
            "[{:>6.1}s] {name}: powered on ({}, {} data disk)",
            t0.elapsed().as_secs_f64(),
            n.ip(),
            if fresh { "blank" } else { "existing" },
        );
        names.push(name);
        std::thread::sleep(stagger);
    }
    for w in 0..workers {
        let name = format!("worker-{}", w + 1);
        let n = c.start(&name, Role::Worker, FIRST_WORKER + w, None, false)?;
        println!(
            "[{:>6.1}s] {name}: powered on ({})",
            t0.elapsed().as_secs_f64(),
            n.ip(),
        );
        names.push(name);
        std::thread::sleep(stagger);
    }
    // From here the guests run on their own; the network must outlive us.
    c.keep();
    let healthy_after = follow(&c, t0, timeout, true).with_context(|| {
        format!(
            "the guests keep running (`make cluster-status`, console logs in {}; \
             `make cluster-down` stops them)",
            run_dir.display()
        )
    })?;
    let (took, summary, mut progress) = healthy_after;
    println!();
    println!(
        "cluster: healthy after {:.0} s from the first power-on",
        took.as_secs_f64()
    );
    for line in summary {
        println!("{line}");
    }
    let kube_result = if kubernetes.present {
        println!(
            "cluster: waiting for the kube phase on every node (up to {} s)",
            kube_timeout.as_secs()
        );
        follow_kube(&c, t0, kube_timeout, &mut progress)
    } else {
        Ok(())
    };
    // One line per node (short kube state), then each distinct kube
    // summary once with the nodes it applies to: a long reason (an image
    // built without Kubernetes) is said once, wrapped, not on every line.
    let mut kube_texts: Vec<(Vec<String>, String)> = Vec::new();
    for (name, n) in c.nodes() {
        let p = &progress[name];
        let at =
            |d: Option<Duration>| d.map_or("-".to_owned(), |d| format!("{:.0}s", d.as_secs_f64()));
        let reading = n.status();
        let state = reading
            .as_ref()
            .and_then(|r| status::kube(&r.report))
            .map_or("not reported".to_owned(), |k| k.phase.name().to_owned());
        let text = reading
            .as_ref()
            .map_or("not reported".to_owned(), kube_line);
        match kube_texts.iter_mut().find(|(_, t)| *t == text) {
            Some((names, _)) => names.push(name.clone()),
            None => kube_texts.push((vec![name.clone()], text)),
        }
        println!(
            "{}",
            status::fit(
                &format!(
                    "  {name:<9} {:<12} multi-user {:>5}  etcd voter {:>5}  kube {:>5} {state}",
                    n.ip(),
                    at(p.multi_user),
                    at(p.voter),
                    at(p.kube_done),
                ),
                status::LINE_WIDTH
            )
        );
    }
    for (names, text) in &kube_texts {
        for line in status::wrap(
            "  kube:    ",
            &format!("{}: {text}", names.join(", ")),
            status::LINE_WIDTH,
        ) {
            println!("{line}");
        }
    }
    let say = |prefix: &str, text: String| {
        for line in status::wrap(prefix, &text, status::LINE_WIDTH) {
            println!("{line}");
        }
    };
    let command = |prefix: &str, text: String| {
        for line in status::wrap_command(prefix, &text, status::LINE_WIDTH) {
            println!("{line}");
        }
    };
    say(
        "  console: ",
        format!("{}/<node>.console.log", run_dir.display()),
    );
    let etcd = c.etcd()?;
    say(
        "  status:  ",
        format!(
            "make cluster-status (status streams: {}/<node>.status.jsonl)",
            run_dir.display()
        ),
    );
    let endpoints: Vec<String> = c
        .nodes()
        .values()
        .filter(|n| n.role == Role::Master)
        .map(Node::etcd_endpoint)
        .collect();
    command(
        "  etcd:    ",
        format!(
            "{} endpoint status -w table",
            etcd.command_line(&endpoints.join(","))
        ),
    );
    if kubernetes.present {
        let api = c.kubernetes()?;
        println!(
            "  API:     (kubectl from the components; admin certificate derived from the secret)"
        );
        command("           ", format!("{} get nodes", api.command_line()));
        command(
            "           ",
            format!(
                "ip netns exec {} curl --cacert {} https://{VIP}:{}/readyz",
                c.options().netns,
                api.ca.display(),
                cluster::API_PORT
            ),
        );
    }
    say(
        "  stop:    ",
        format!(
            "make cluster-down (disks kept in {}; PURGE=1 deletes them)",
            run_dir.display()
        ),
    );
    kube_result.with_context(|| {
        format!(
            "the guests keep running (`make cluster-status`, console logs in {}; \
             `make cluster-down` stops them)",
            run_dir.display()
        )
    })
}

/// After the quorum: follows every node's kube phase until each reports
/// it ready and joined (kubelet active; on masters the API server ready)
/// or `timeout` passes, printing every change.
fn follow_kube(
    c: &Cluster,
    t0: Instant,
    timeout: Duration,
    progress: &mut BTreeMap<String, Progress>,
) -> Result<()> {
    let start = Instant::now();
    loop {
        let snap = c.snapshot();
        let mut all_ready = true;
        for (name, n) in c.nodes() {
            let p = progress.entry(name.clone()).or_default();
            report_progress(name, n, snap.get(name).and_then(Option::as_ref), p, t0);
            let k = snap
                .get(name)
                .and_then(Option::as_ref)
                .and_then(|r| status::kube(&r.report));
            let ready = k.is_some_and(|k| {
                k.node_ready()
                    && (n.role == Role::Worker || k.api_server == status::ApiHealth::Ready)
            });
            all_ready &= ready;
        }
        if all_ready {
            println!(
                "cluster: Kubernetes ready on every node after {:.0} s from the first power-on",
                t0.elapsed().as_secs_f64()
            );
            return Ok(());
        }
        if start.elapsed() > timeout {
            eprintln!("{}", c.describe());
            bail!(
                "the kube phase is not ready on every node after {} s (KUBE_TIMEOUT raises it)",
                timeout.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(1000));
    }
}

/// Follows every node until the cluster is healthy (see [`healthy`]),
/// printing phases when `print`; returns the time, the summary and each
/// node's phase times.
fn follow(
    c: &Cluster,
    t0: Instant,
    timeout: Duration,
    print: bool,
) -> Result<(Duration, Vec<String>, BTreeMap<String, Progress>)> {
    let mut progress: BTreeMap<String, Progress> = BTreeMap::new();
    loop {
        let snap = c.snapshot();
        for (name, n) in c.nodes() {
            let p = progress.entry(name.clone()).or_default();
            p.print = print;
            report_progress(name, n, snap.get(name).and_then(Option::as_ref), p, t0);
        }
        if let Some(summary) = healthy(c, &snap) {
            return Ok((t0.elapsed(), summary, progress));
        }
        for n in c.nodes().values() {
            if !n.running() {
                bail!(
                    "{}: QEMU exited during boot; console {}",
                    n.name,
                    n.console.display()
                );
            }
        }
        if t0.elapsed() > timeout {
            eprintln!("{}", c.describe());
            bail!(
                "no healthy quorum with a VIP holder after {} s",
                timeout.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Prints the phases `n` reached since the last call.
fn report_progress(name: &str, n: &Node, r: Option<&Reading>, p: &mut Progress, t0: Instant) {
    let now = t0.elapsed();
    let print = p.print;
    let say = |what: &str| {
        if print {
            println!("[{:>6.1}s] {name}: {what}", now.as_secs_f64())
        }
    };
    if p.multi_user.is_none() && console_has(&n.console, "Reached target multi-user.target") {
        p.multi_user = Some(now);
        say("systemd reached multi-user.target");
    }
    let Some(r) = r else { return };
    let s = &r.report;
    if p.booted.is_none() {
        p.booted = Some(now);
        say(&match (s.node.name.as_str(), status::address(s)) {
            (name, Some(ip)) if !name.is_empty() => {
                format!("booted: status stream up, agent node {name} at {ip}")
            }
            _ => "booted: status stream up, no cluster address yet".to_owned(),
        });
    }
    // What fits after the `[ 123.4s] master-1: ` prefix.
    let room = status::LINE_WIDTH.saturating_sub(12 + name.len());
    if s.phase != p.phase {
        p.phase = s.phase.clone();
        say(&status::fit(
            &format!("agent phase {} ({})", s.phase, s.detail),
            room,
        ));
    }
    let want_peers = match n.role {
        Role::Master => usize::from(MASTERS - 1),
        Role::Worker => 1,
    };
    if p.peers.is_none() && s.discovery.peers.len() >= want_peers {
        p.peers = Some(now);
        let names: Vec<&str> = s.discovery.peers.iter().map(|x| x.name.as_str()).collect();
        say(&format!("peers discovered: {}", names.join(", ")));
    }
    if p.member.is_none() {
        if let Some(id) = &s.etcd.member_id {
            p.member = Some(now);
            say(&format!(
                "etcd member {id}{}",
                if s.etcd.learner { " (learner)" } else { "" }
            ));
        }
    }
    // The member list comes from a separate etcd call: wait for it so the
    // line does not say "0 members".
    if p.voter.is_none()
        && s.etcd.member_id.is_some()
        && !s.etcd.learner
        && !s.etcd.members.is_empty()
    {
        p.voter = Some(now);
        say(&format!(
            "etcd voter, cluster {}, {} members",
            s.etcd.cluster_id.as_deref().unwrap_or("?"),
            s.etcd.members.len()
        ));
    }
    if let Some(k) = status::kube(s) {
        let line = kube_line(r);
        if line != p.kube {
            say(&status::fit(&format!("kube {line}"), room));
            p.kube = line;
        }
        let done = matches!(k.phase, status::PhaseState::Skipped { .. }) || k.node_ready();
        if done && p.kube_done.is_none() {
            p.kube_done = Some(now);
        }
    }
    if p.vip.is_none() && status::holds_vip(s) {
        p.vip = Some(now);
        say(&format!("VIP holder ({VIP})"));
    } else if p.vip.is_some() && !status::holds_vip(s) {
        p.vip = None;
        say(&format!(
            "gave up the VIP (vrrp {})",
            status::vip_state(s).unwrap_or("off")
        ));
    }
}

/// A node's kube phase on one line, as the agent renders it (see
/// [`status::kube_text`]).
fn kube_line(r: &Reading) -> String {
    status::kube_text(&r.line).unwrap_or_else(|| "not reported".to_owned())
}

/// Whether the console log contains `pattern` (colours do not split it).
fn console_has(path: &Path, pattern: &str) -> bool {
    std::fs::read(path)
        .map(|b| {
            let mut state = qemu_tests::AnsiState::default();
            let mut text = String::new();
            qemu_tests::strip_ansi(&b, &mut state, &mut text);
            text.contains(pattern)
        })
        .unwrap_or(false)
}

/// The summary once every master is a healthy voter of one 3-member
/// cluster, exactly one holds the VIP and every worker reports: lines of
/// at most [`status::LINE_WIDTH`] columns.
fn healthy(c: &Cluster, snap: &BTreeMap<String, Option<Reading>>) -> Option<Vec<String>> {
    let mut cluster_ids = Vec::new();
    let mut holders = Vec::new();
    let mut leader = None;
    for (name, n) in c.nodes() {
        let r = snap.get(name)?.as_ref()?;
        if n.role == Role::Worker {
            continue;
        }
        if !status::healthy_voter_of(&r.report, usize::from(MASTERS)) {
            return None;
        }
        cluster_ids.push(r.report.etcd.cluster_id.clone());
        leader = r.report.etcd.leader.clone();
        if status::holds_vip(&r.report) {
            holders.push(name.clone());
        }
    }
    cluster_ids.dedup();
    if cluster_ids.len() != 1 || holders.len() != 1 {
        return None;
    }
    let leader = leader.unwrap_or_default();
    let leader_name = snap
        .iter()
        .find_map(|(name, r)| {
            let r = r.as_ref()?;
            (r.report.etcd.member_id.as_deref() == Some(leader.as_str())).then(|| name.clone())
        })
        .unwrap_or_default();
    let any = snap.values().flatten().next()?;
    let members: Vec<String> = any
        .report
        .etcd
        .members
        .iter()
        .map(|m| format!("{} ({})", m.name, m.id))
        .collect();
    let mut lines = status::wrap(
        "  etcd:    ",
        &format!(
            "one cluster {}, 3 voters: {}; leader {leader_name} ({leader})",
            cluster_ids[0].clone().unwrap_or_default(),
            members.join(", "),
        ),
        status::LINE_WIDTH,
    );
    lines.push(format!("  VIP:     {VIP} on {}", holders[0]));
    Some(lines)
}

fn status_cmd(run_dir: &Path) -> Result<()> {
    let state = match cluster::read_state(run_dir) {
        Ok(s) => s,
        Err(_) => {
            println!(
                "cluster: none in {} (`make cluster` starts one)",
                run_dir.display()
            );
            return Ok(());
        }
    };
    println!(
        "cluster: namespace {} ({}), {} nodes",
        state.netns,
        if Network::exists(&state.netns) {
            "up"
        } else {
            "gone"
        },
        state.nodes.len()
    );
    for n in state.nodes.values() {
        println!();
        let running = n.pid();
        println!(
            "== {} ({:?}, {}) {}",
            n.name,
            n.role,
            n.ip(),
            match running {
                Some(pid) => format!("running, pid {pid}, up {} s", n.uptime().as_secs()),
                None => "powered off".to_owned(),
            },
        );
        println!("console:   {}", n.console.display());
        if running.is_none() {
            continue;
        }
        match n.status() {
            Some(r) => {
                if r.age > Duration::from_secs(5) {
                    println!("(last report {} s old)", r.age.as_secs());
                }
                print!("{}", status::render(&r.line));
            }
            None => println!("no status yet (the guest is booting)"),
        }
    }
    Ok(())
}

fn down(run_dir: &Path, purge: bool) -> Result<()> {
    match Cluster::open(run_dir, None) {
        Ok(mut c) => {
            let running = c.running();
            c.destroy().context("stopping the cluster")?;
            println!(
                "cluster: stopped {} and removed namespace {}",
                if running.is_empty() {
                    "no running guest".to_owned()
                } else {
                    running.join(", ")
                },
                c.options().netns
            );
        }
        Err(_) => println!("cluster: none in {}", run_dir.display()),
    }
    if purge && run_dir.exists() {
        std::fs::remove_dir_all(run_dir)
            .with_context(|| format!("removing {}", run_dir.display()))?;
        println!(
            "cluster: removed {} (disks, logs, secret)",
            run_dir.display()
        );
    } else if run_dir.exists() {
        println!(
            "cluster: disks and logs kept in {} (`make cluster-down PURGE=1` deletes them)",
            run_dir.display()
        );
    }
    Ok(())
}

/// One bench run, seconds.
#[derive(Debug, Clone, serde::Serialize)]
struct BenchRun {
    /// Power-on of the three masters to a healthy 3-voter quorum with one
    /// VIP holder.
    power_on_to_quorum_s: f64,
    /// Power-on to the last master's multi-user.target (guest boot).
    power_on_to_multi_user_s: f64,
    /// The rest: agent + etcd (quorum minus boot).
    agent_and_etcd_s: f64,
    /// SIGKILL of the VIP holder to another master reporting it holds the
    /// VIP (status stream: 1 s resolution).
    failover_status_s: f64,
    /// SIGKILL of the VIP holder to the first successful etcd write through
    /// the VIP.
    failover_write_s: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn bench(run_dir: &Path, runs: u32, out: &Path, timeout: Duration) -> Result<()> {
    let mut rows: Vec<BenchRun> = Vec::new();
    println!(
        "bench: {runs} runs of three masters powered on at once (TCG, 1 vCPU each), then a power cut of the VIP holder"
    );
    for i in 1..=runs {
        let dir = run_dir.join(format!("bench-{i}"));
        if dir.exists() {
            std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        }
        let pid = std::process::id();
        let opts = ClusterOptions::new(
            dir.clone(),
            format!("kb-b{pid}"),
            format!("kubeboot-bench-secret-{pid}-{i}"),
        );
        let mut c = Cluster::create(opts).context("creating the private network")?;
        let t0 = Instant::now();
        for m in 1..=MASTERS {
            c.start(&format!("master-{m}"), Role::Master, m, None, false)?;
        }
        let (quorum, _, progress) = follow(&c, t0, timeout, false)
            .with_context(|| format!("run {i}: console logs in {}", dir.display()))?;
        let boot = progress
            .values()
            .filter_map(|p| p.multi_user)
            .max()
            .unwrap_or_default();
        let holder = c
            .snapshot()
            .iter()
            .find_map(|(name, r)| {
                r.as_ref()
                    .is_some_and(|r| status::holds_vip(&r.report))
                    .then(|| name.clone())
            })
            .context("no VIP holder")?;
        let others: Vec<String> = c
            .nodes()
            .keys()
            .filter(|n| **n != holder)
            .cloned()
            .collect();
        let etcd = c.etcd()?;
        c.power_off(&holder)?;
        let cut = Instant::now();
        c.wait(
            "another VIP holder",
            Duration::from_secs(300),
            Duration::from_millis(100),
            |snap| {
                others
                    .iter()
                    .any(|n| {
                        snap.get(n)
                            .and_then(Option::as_ref)
                            .is_some_and(|r| status::holds_vip(&r.report))
                    })
                    .then_some(())
            },
        )?;
        let failover_status = cut.elapsed();
        let vip = format!("https://{VIP}:2379");
        while etcd.put(&vip, "/kubeboot-bench/failover", "ok").is_err() {
            if cut.elapsed() > Duration::from_secs(300) {
                bail!("run {i}: no write through the VIP 300 s after the power cut");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let row = BenchRun {
            power_on_to_quorum_s: quorum.as_secs_f64(),
            power_on_to_multi_user_s: boot.as_secs_f64(),
            agent_and_etcd_s: quorum.saturating_sub(boot).as_secs_f64(),
            failover_status_s: failover_status.as_secs_f64(),
            failover_write_s: cut.elapsed().as_secs_f64(),
        };
        println!(
            "run {i}: quorum {:.1}s (boot {:.1}s + agent/etcd {:.1}s), failover {:.1}s (status) / {:.1}s (write through the VIP)",
            row.power_on_to_quorum_s,
            row.power_on_to_multi_user_s,
            row.agent_and_etcd_s,
            row.failover_status_s,
            row.failover_write_s
        );
        rows.push(row);
        drop(c);
        let _ = std::fs::remove_dir_all(&dir);
    }
    let col = |f: fn(&BenchRun) -> f64| median(rows.iter().map(f).collect());
    let med = BenchRun {
        power_on_to_quorum_s: col(|r| r.power_on_to_quorum_s),
        power_on_to_multi_user_s: col(|r| r.power_on_to_multi_user_s),
        agent_and_etcd_s: col(|r| r.agent_and_etcd_s),
        failover_status_s: col(|r| r.failover_status_s),
        failover_write_s: col(|r| r.failover_write_s),
    };
    println!();
    println!("| median of {runs} (TCG, 2 host cores) | seconds |");
    println!("|---|---|");
    println!(
        "| power-on to healthy quorum + VIP | {:.1} |",
        med.power_on_to_quorum_s
    );
    println!(
        "| power-on to multi-user.target (last master) | {:.1} |",
        med.power_on_to_multi_user_s
    );
    println!("| agent + etcd (the rest) | {:.1} |", med.agent_and_etcd_s);
    println!("| VIP failover, status | {:.1} |", med.failover_status_s);
    println!(
        "| VIP failover, first write through the VIP | {:.1} |",
        med.failover_write_s
    );
    let doc = serde_json::json!({
        "bench": "cluster",
        "accel": "tcg",
        "note": "QEMU TCG on a shared 2-core host: guest time runs several times slower than under KVM or on hardware",
        "runs": rows,
        "median": med,
    });
    write_results(out, &doc)
}

/// One Kubernetes bench run, seconds.
#[derive(Debug, Clone, serde::Serialize)]
struct KubeBenchRun {
    /// Power-on of the three masters to `/readyz` answering `ok` on the
    /// VIP.
    power_on_to_api_on_vip_s: f64,
    /// Power cut of the VIP holder to `/readyz` answering `ok` on the VIP
    /// again (from another master).
    power_cut_to_api_on_vip_s: f64,
}

/// Polls `GET https://VIP:6443/readyz` until it says `ok` or `timeout`.
fn wait_api_on_vip(api: &qemu_tests::cluster::KubeClient, timeout: Duration) -> Result<Duration> {
    let t = Instant::now();
    loop {
        if api
            .get(VIP, "readyz", false)
            .is_ok_and(|body| body.trim() == "ok")
        {
            return Ok(t.elapsed());
        }
        if t.elapsed() > timeout {
            bail!(
                "the API did not answer /readyz on {VIP} within {} s",
                timeout.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Waits until every master reports the kube phase ready, joined and its
/// own API server ready.
fn wait_masters_joined(c: &Cluster, timeout: Duration) -> Result<()> {
    let t = Instant::now();
    loop {
        let snap = c.snapshot();
        let joined = (1..=MASTERS)
            .filter(|m| {
                snap.get(&format!("master-{m}"))
                    .and_then(Option::as_ref)
                    .and_then(|r| status::kube(&r.report))
                    .is_some_and(|k| {
                        k.phase == status::PhaseState::Ready
                            && k.joined
                            && k.api_server == status::ApiHealth::Ready
                    })
            })
            .count();
        if joined == usize::from(MASTERS) {
            return Ok(());
        }
        if t.elapsed() > timeout {
            bail!(
                "{joined} of {MASTERS} masters joined the control plane within {} s",
                timeout.as_secs()
            );
        }
        std::thread::sleep(Duration::from_secs(2));
    }
}

fn bench_kubernetes(
    run_dir: &Path,
    runs: u32,
    out: &Path,
    timeout: Duration,
    config: Option<&Path>,
) -> Result<()> {
    let config = read_config(config)?;
    let mut rows: Vec<KubeBenchRun> = Vec::new();
    for i in 1..=runs {
        let dir = run_dir.join(format!("kbench-{i}"));
        if dir.exists() {
            std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        }
        let pid = std::process::id();
        let mut opts = ClusterOptions::new(
            dir.clone(),
            format!("kb-kb{pid}"),
            format!("kubeboot-bench-secret-{pid}-{i}"),
        );
        let kubernetes = qemu_tests::find_image_in(&opts.images, "master")?.kubernetes;
        if !kubernetes.present {
            bail!(
                "the images in {} carry no Kubernetes ({}): build them from a components \
                 directory (make k8s-image K8S_COMPONENTS=DIR)",
                opts.images.display(),
                kubernetes.reason.as_deref().unwrap_or("no reason recorded")
            );
        }
        opts.fit_for_kubeadm(&kubernetes);
        opts.config = config.clone();
        if i == 1 {
            println!(
                "bench: {runs} runs of three masters with Kubernetes {} ({} vCPUs, {} MiB \
                 each, TCG), then a power cut of the VIP holder",
                kubernetes.version.as_deref().unwrap_or("?"),
                opts.cpus,
                opts.memory_mib
            );
        }
        let mut c = Cluster::create(opts).context("creating the private network")?;
        let api = c.kubernetes()?;
        let t0 = Instant::now();
        for m in 1..=MASTERS {
            c.start(&format!("master-{m}"), Role::Master, m, None, false)?;
        }
        wait_api_on_vip(&api, timeout)
            .with_context(|| format!("run {i}: console logs in {}", dir.display()))?;
        let power_on = t0.elapsed();
        // The power cut needs a second control plane to fail over to:
        // wait until every master has joined (kubeadm's own proof).
        wait_masters_joined(&c, timeout)
            .with_context(|| format!("run {i}: console logs in {}", dir.display()))?;
        println!(
            "run {i}: API on the VIP {:.0} s after power-on, every master joined after {:.0} s",
            power_on.as_secs_f64(),
            t0.elapsed().as_secs_f64()
        );
        let holder = c
            .snapshot()
            .iter()
            .find_map(|(name, r)| {
                r.as_ref()
                    .is_some_and(|r| status::holds_vip(&r.report))
                    .then(|| name.clone())
            })
            .context("no master reports holding the VIP")?;
        c.power_off(&holder)?;
        let cut = wait_api_on_vip(&api, Duration::from_secs(600))
            .with_context(|| format!("run {i} after the power cut of {holder}"))?;
        let row = KubeBenchRun {
            power_on_to_api_on_vip_s: power_on.as_secs_f64(),
            power_cut_to_api_on_vip_s: cut.as_secs_f64(),
        };
        println!(
            "run {i}: API on the VIP {:.1} s after power-on; power cut of {holder}: API on the \
             VIP again after {:.1} s",
            row.power_on_to_api_on_vip_s, row.power_cut_to_api_on_vip_s
        );
        rows.push(row);
        drop(c);
        let _ = std::fs::remove_dir_all(&dir);
    }
    let col = |f: fn(&KubeBenchRun) -> f64| median(rows.iter().map(f).collect());
    let med = KubeBenchRun {
        power_on_to_api_on_vip_s: col(|r| r.power_on_to_api_on_vip_s),
        power_cut_to_api_on_vip_s: col(|r| r.power_cut_to_api_on_vip_s),
    };
    println!();
    println!("| median of {runs} (TCG, 2 host cores) | seconds |");
    println!("|---|---|");
    println!(
        "| power-on to API ready on the VIP | {:.1} |",
        med.power_on_to_api_on_vip_s
    );
    println!(
        "| master power cut to API answering on the VIP | {:.1} |",
        med.power_cut_to_api_on_vip_s
    );
    let doc = serde_json::json!({
        "bench": "kubernetes",
        "accel": "tcg",
        "note": "QEMU TCG on a shared 2-core host, three masters of 2 vCPUs: guest time runs many times slower than under KVM or on hardware",
        "config": config,
        "runs": rows,
        "median": med,
    });
    write_results(out, &doc)
}

/// Writes a bench's JSON results to `out` (creating its directory).
fn write_results(out: &Path, doc: &serde_json::Value) -> Result<()> {
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(out, serde_json::to_string_pretty(doc)? + "\n")
        .with_context(|| format!("writing {}", out.display()))?;
    println!("bench: wrote {}", out.display());
    Ok(())
}
