//! Test harness: agents in network namespaces joined by a bridge.
//!
//! Every name includes the process id and a per-test tag; [`Net`] removes
//! the namespaces (and with them the veths and the bridge) and kills every
//! process inside them when dropped, also when a test panics.

#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use agent::etcd::{ClientTls, Etcd};
use agent::status::StatusReport;
use cluster_config::ClusterSecret;

/// The secret every well-behaved agent of a test uses.
pub const SECRET: &str = "integration-test-secret-0123456789";

/// Fails (never skips) when `prog` is missing, naming the Debian package
/// that brings it.
pub fn require(prog: &str, package: &str) {
    assert!(
        ["/usr/bin", "/usr/sbin", "/bin", "/sbin"]
            .iter()
            .any(|d| Path::new(d).join(prog).exists()),
        "`{prog}` is missing: install the Debian package `{package}` (make deps does)"
    );
}

/// A child process (etcd, a TLS server) killed and reaped when dropped,
/// also when the test panics.
pub struct Reaped(pub Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A TCP port free on loopback right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// An etcd client once a linearizable read through `url` succeeds; fails
/// the test after 60 s with the last lines of every `*.log` below `logs`
/// (the etcd processes' own logs say why they did not answer).
pub async fn wait_healthy(url: &str, tls: &ClientTls, logs: &Path) -> Etcd {
    let t0 = Instant::now();
    let mut last_error: String;
    loop {
        match Etcd::connect(&[url.to_owned()], tls, Duration::from_secs(2)).await {
            Ok(c) => match c.quorum_read().await {
                Ok(()) => return c,
                Err(e) => last_error = format!("linearizable read: {e}"),
            },
            Err(e) => last_error = format!("connect: {e}"),
        }
        if t0.elapsed() > Duration::from_secs(60) {
            panic!(
                "etcd at {url} never became healthy (last: {last_error})\n{}",
                log_tails(logs)
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The last 15 lines of every `*.log` file below `dir` (two levels).
pub fn log_tails(dir: &Path) -> String {
    let mut files = Vec::new();
    let mut dirs = vec![(dir.to_owned(), 0)];
    while let Some((d, depth)) = dirs.pop() {
        for e in fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() && depth < 2 {
                dirs.push((p, depth + 1));
            } else if p.extension().is_some_and(|x| x == "log") {
                files.push(p);
            }
        }
    }
    files.sort();
    let mut out = String::new();
    for f in files {
        let text = fs::read_to_string(&f).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        out.push_str(&format!("--- {} (last lines)\n", f.display()));
        for l in &lines[lines.len().saturating_sub(15)..] {
            out.push_str(l);
            out.push('\n');
        }
    }
    out
}

/// Fails (never skips) when a program the tests need is missing.
pub fn require_programs() {
    for (prog, package) in [("etcd", "etcd-server"), ("ip", "iproute2")] {
        require(prog, package);
    }
    assert!(
        nix::unistd::geteuid().is_root(),
        "these tests create network namespaces: run them as root"
    );
}

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("running ip (package iproute2)");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn ip_quiet(args: &[&str]) {
    let _ = Command::new("ip")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// A bridge in its own namespace with one namespace per node.
pub struct Net {
    /// Name prefix (`kb<pid><tag>`).
    pub prefix: String,
    hub: String,
    nodes: Vec<String>,
    /// Scratch directory of the test.
    pub dir: tempfile::TempDir,
}

impl Net {
    /// Creates the hub namespace and bridge. `tag`: 2 characters unique per test.
    pub fn new(tag: &str) -> Net {
        require_programs();
        let prefix = format!("kb{}{tag}", std::process::id());
        let hub = format!("{prefix}h");
        let net = Net {
            prefix,
            hub: hub.clone(),
            nodes: Vec::new(),
            dir: tempfile::tempdir().expect("tempdir"),
        };
        ip(&["netns", "add", &hub]);
        ip(&[
            "-n",
            &hub,
            "link",
            "add",
            "br0",
            "type",
            "bridge",
            "mcast_snooping",
            "0",
        ]);
        ip(&["-n", &hub, "link", "set", "br0", "up"]);
        net
    }

    /// Adds node `i` (1-based) with address 10.77.0.i/24 on `eth0`.
    pub fn add_node(&mut self, i: u8) -> String {
        let ns = format!("{}n{i}", self.prefix);
        let a = format!("{}a{i}", self.prefix);
        let b = format!("{}b{i}", self.prefix);
        assert!(a.len() <= 15, "interface name {a} too long");
        ip(&["netns", "add", &ns]);
        self.nodes.push(ns.clone());
        ip(&["link", "add", &a, "type", "veth", "peer", "name", &b]);
        ip(&["link", "set", &a, "netns", &ns]);
        ip(&["link", "set", &b, "netns", &self.hub]);
        ip(&["-n", &self.hub, "link", "set", &b, "master", "br0", "up"]);
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        ip(&["-n", &ns, "link", "set", &a, "name", "eth0"]);
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("10.77.0.{i}/24"),
            "dev",
            "eth0",
        ]);
        ip(&["-n", &ns, "link", "set", "eth0", "up"]);
        ip(&["-n", &ns, "route", "add", "224.0.0.0/4", "dev", "eth0"]);
        ns
    }

    /// SIGKILLs every process in namespace `ns`.
    pub fn kill_all_in(ns: &str) {
        if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                if let Ok(pid) = pid.parse::<i32>() {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in self.nodes.iter().chain(std::iter::once(&self.hub)) {
            Net::kill_all_in(ns);
        }
        std::thread::sleep(Duration::from_millis(100));
        for ns in self.nodes.iter().chain(std::iter::once(&self.hub)) {
            ip_quiet(&["netns", "del", ns]);
        }
    }
}

/// One agent: its namespace, files and process.
pub struct Agent {
    /// Node index (address 10.77.0.i).
    pub i: u8,
    /// Namespace.
    pub ns: String,
    /// Node directory (config, secret, state, socket, log).
    pub dir: PathBuf,
    child: Option<Child>,
    starts: u32,
}

impl Agent {
    /// Prepares node `i` in `net` with a configuration and a secret.
    pub fn new(net: &mut Net, i: u8, cluster: &str, secret: &str) -> Agent {
        let ns = net.add_node(i);
        let dir = net.dir.path().join(format!("node{i}"));
        fs::create_dir_all(&dir).expect("node dir");
        fs::write(
            dir.join("cluster.toml"),
            format!("name = \"{cluster}\"\nrole = \"master\"\nmasters = 3\n[discovery]\ninterval_ms = 200\n"),
        )
        .expect("config");
        fs::write(dir.join("secret"), secret).expect("secret");
        Agent {
            i,
            ns,
            dir,
            child: None,
            starts: 0,
        }
    }

    /// The state directory.
    pub fn state_dir(&self) -> PathBuf {
        self.dir.join("state")
    }

    /// The status socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("agent.sock")
    }

    /// The agent's client URL.
    pub fn client_url(&self) -> String {
        format!("https://10.77.0.{}:2379", self.i)
    }

    /// Starts the agent (logs to `agent.<n>.log`).
    pub fn start(&mut self) {
        let secret = self.dir.join("secret");
        self.start_with_secret(&secret);
    }

    /// The agent's process id (`ip netns exec` execs it).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the agent process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Sends a signal to the agent.
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        if let Some(c) = &self.child {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), sig);
        }
    }

    /// Starts the agent with `secret` as its `--secret-file`.
    pub fn start_with_secret(&mut self, secret: &Path) {
        assert!(self.child.is_none(), "agent {} already running", self.i);
        self.starts += 1;
        let log =
            fs::File::create(self.dir.join(format!("agent.{}.log", self.starts))).expect("log");
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns,
                env!("CARGO_BIN_EXE_agent"),
                "run",
            ])
            .arg("--image-config")
            .arg(self.dir.join("cluster.toml"))
            .arg("--secret-file")
            .arg(secret)
            .arg("--state-dir")
            .arg(self.state_dir())
            .arg("--socket")
            .arg(self.socket())
            .args([
                "--supervisor",
                "process",
                "--no-hostname",
                "--no-imds",
                "--interface",
                "eth0",
            ])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawning the agent");
        self.child = Some(child);
    }

    /// Stops the agent with SIGTERM (it stops its etcd) and waits.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // `ip netns exec` execs the agent: the child pid is the agent's.
            let pid = nix::unistd::Pid::from_raw(c.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(15);
            loop {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                if Instant::now() > deadline {
                    let _ = c.kill();
                    let _ = c.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Net::kill_all_in(&self.ns);
    }

    /// The latest status, if the agent answers.
    pub fn status(&self, rt: &tokio::runtime::Runtime) -> Option<StatusReport> {
        rt.block_on(agent::status::fetch(&self.socket())).ok()
    }

    /// Log tails for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for n in 1..=self.starts {
            let p = self.dir.join(format!("agent.{n}.log"));
            let text = fs::read_to_string(&p).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(15)..];
            out.push_str(&format!(
                "--- agent {} start {n}\n{}\n",
                self.i,
                tail.join("\n")
            ));
        }
        out
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Client TLS material derived the way the agents derive it.
pub fn client_tls(cluster: &str) -> ClientTls {
    let secret = ClusterSecret::new(SECRET).expect("secret");
    let pki = pki::ClusterPki::derive(&secret, cluster).expect("pki");
    let leaf = pki
        .etcd_ca
        .issue(&pki::LeafRequest {
            common_name: "integration-test".into(),
            dns_names: vec![],
            ips: vec![],
            usage: pki::Usage::Client,
            organization: None,
        })
        .expect("client certificate");
    ClientTls {
        ca_pem: pki.etcd_ca.cert_pem,
        cert_pem: leaf.cert_pem,
        key_pem: leaf.key_pem,
    }
}

/// An etcd client to `urls` (from the test process, in the root
/// namespace: it enters node 1's namespace only through the URLs given,
/// so callers pass URLs reachable via [`in_netns`]).
pub async fn etcd(urls: &[String], tls: &ClientTls) -> Etcd {
    Etcd::connect(urls, tls, Duration::from_secs(3))
        .await
        .expect("etcd client")
}

/// Runs `f` on a thread that has entered namespace `ns` (so sockets it
/// opens live there). The thread builds its own runtime.
pub fn in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce(&tokio::runtime::Runtime) -> T + Send + 'static,
) -> T {
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = fs::File::open(&path).expect("netns file");
        nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        f(&rt)
    })
    .join()
    .expect("netns thread panicked")
}

/// Polls `cond` every 200 ms until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, mut cond: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = cond() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The etcd cluster id all `agents` report while every one is `ready` in
/// that one cluster and passes `also` (else `None`): the "one cluster"
/// check of the recovery and restore tests and the recovery bench.
pub fn one_ready_cluster(
    agents: &[Agent],
    rt: &tokio::runtime::Runtime,
    also: impl Fn(&StatusReport) -> bool,
) -> Option<String> {
    let ids: Option<std::collections::BTreeSet<String>> = agents
        .iter()
        .map(|a| {
            let s = a.status(rt)?;
            (s.phase == "ready" && also(&s)).then_some(s.etcd.cluster_id?)
        })
        .collect();
    ids.filter(|s| s.len() == 1)?.into_iter().next()
}

/// A current-thread runtime for the tests' etcd and status clients.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Every agent's rendered status and logs, for a failure message.
pub fn dump(agents: &[impl std::borrow::Borrow<Agent>], rt: &tokio::runtime::Runtime) -> String {
    let mut out = String::new();
    for a in agents.iter().map(std::borrow::Borrow::borrow) {
        match a.status(rt) {
            Some(s) => out.push_str(&format!("agent {}: {}\n", a.i, agent::status::render(&s))),
            None => out.push_str(&format!("agent {}: no status\n", a.i)),
        }
        out.push_str(&a.logs());
    }
    out
}
