//! `make bench-balancer`: the agent's balancer against HAProxy on the same
//! backends, the same clients and the same run (issue 18).
//!
//! The lab (network namespaces on a veth bridge, the VRRP tests' one):
//! node 0 holds the VIP and runs both proxies, the agent's [`Balancer`]
//! on VIP:6443 (in this process, two tokio workers, the production
//! [`HealthRules::APISERVER`]) and HAProxy on VIP:8443 (`mode tcp`,
//! configured as the kubeadm HA guide configures it, checks at the same
//! 1 s / fall 3 / rise 2); nodes 1-3 run one `openssl s_server -WWW` each
//! (ECDSA P-256 certificates from the `pki` crate, serving `readyz` and a
//! 1 KiB file); node 4 runs the client.
//!
//! The client is tokio + rustls: one new TCP connection and one full TLS
//! handshake per request (no session resumption), the server certificate
//! verified against the test CA, `GET /file` over HTTP/1.0, the body
//! checked byte for byte; `CONCURRENCY` requests in flight. A request
//! fails on any error or a wrong body.
//!
//! Rows, each run `RUNS` times with the proxies interleaved (agent,
//! HAProxy, direct, agent, ...) after a warm-up through each:
//! - **steady**: `REQUESTS` requests, all backends up: connections/s
//!   (requests completed / wall time), mean, p50 and p99 latency
//!   (connect to last byte). With a fixed number in flight the mean is
//!   `CONCURRENCY / rate` (Little's law): equal rates mean equal means,
//!   and p50/p99 show how the latencies spread around it.
//! - **kill**: the same, with backend 1 killed (SIGKILL) once a third of
//!   the requests completed; failed requests, and those among them that
//!   started after the backend was dead. The backend is restarted and both
//!   proxies see it back before the next run.
//! - **holder restarted gracefully** (a second lab, see `graceful_row`):
//!   two holder nodes, each with the agent side (an in-process
//!   `vrrp::Vrrp` and a balancer on `*:6443`) or, in later runs, Debian's
//!   keepalived (the kubeadm HA guide's configuration) and HAProxy on
//!   `*:6443`; once a third of the requests to `VIP:6443` completed, the
//!   holder stops gracefully: the agent's [`hand_over`] (quiesce, drain,
//!   VRRP shutdown), or what `systemctl restart keepalived haproxy` does
//!   (SIGTERM to keepalived, then HAProxy's soft stop, SIGUSR1). Failed
//!   requests, requests started during the hand-over, its duration, p50
//!   and max latency. Its backends are a concurrent TLS server
//!   (`start_tls_backend`: why there).
//! - **direct** (steady only): the client spreads its requests over the
//!   three backends itself, no proxy: what the TLS servers and the client
//!   alone reach on this machine.
//!
//! Medians of the runs per proxy, the ratios agent / HAProxy, a table on
//! stdout and `bench/results/balancer.json`. `BALANCER_BENCH_RUNS`
//! (default 3) and `BALANCER_BENCH_REQUESTS` (default 3000) change the
//! size. Root, `ip`, `openssl`, `haproxy` and `keepalived` needed.

#[path = "../../vrrp/tests/common/mod.rs"]
mod common;
#[path = "../tests/support/mod.rs"]
mod support;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use balancer::{hand_over, Balancer, BalancerConfig, CheckSpec, HealthRules, POLICY};
use common::{require, run, start_keepalived, Lab, VIP, VIP_ADDR};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use support::{prepare_backend, runtime_in, start_backend, start_holder, Holder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls;

const BACKEND_PORT: u16 = 6443;
const AGENT_PORT: u16 = 6443;
const HAPROXY_PORT: u16 = 8443;
const CONCURRENCY: usize = 8;
const WARMUP: usize = 300;
const FILE_BYTES: usize = 1024;
const CLIENT: usize = 4;
const RULES: HealthRules = HealthRules::APISERVER;

/// What the client talks to.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Target {
    Agent,
    Haproxy,
    /// The backends themselves, in turn.
    Direct,
}

impl Target {
    fn key(self) -> &'static str {
        match self {
            Target::Agent => "agent",
            Target::Haproxy => "haproxy",
            Target::Direct => "direct",
        }
    }
    fn label(self) -> &'static str {
        match self {
            Target::Agent => "agent balancer",
            Target::Haproxy => "HAProxy",
            Target::Direct => "direct (no proxy)",
        }
    }
}

/// The HAProxy configuration: the kubeadm HA guide's (`mode tcp`,
/// `balance roundrobin`, `option httpchk`, its `defaults`), the check
/// path `/readyz` and the checks at the agent's period and thresholds,
/// verified against the cluster CA as the agent's checks are.
fn haproxy_conf(backends: &[SocketAddr], ca: &str, sock: &str, bind: &str) -> String {
    let servers: String = backends
        .iter()
        .enumerate()
        .map(|(i, a)| {
            format!(
                "    server b{} {a} check check-ssl verify required ca-file {ca} inter 1s fall 3 rise 2\n",
                i + 1
            )
        })
        .collect();
    format!(
        "global\n\
         \x20   maxconn 3000\n\
         \x20   stats socket {sock} mode 600 level admin\n\
         \n\
         defaults\n\
         \x20   mode tcp\n\
         \x20   option redispatch\n\
         \x20   retries 1\n\
         \x20   timeout queue 20s\n\
         \x20   timeout connect 5s\n\
         \x20   timeout client 35s\n\
         \x20   timeout server 35s\n\
         \x20   timeout check 10s\n\
         \x20   maxconn 3000\n\
         \n\
         frontend apiserver\n\
         \x20   bind {bind}\n\
         \x20   mode tcp\n\
         \x20   default_backend apiserverbackend\n\
         \n\
         backend apiserverbackend\n\
         \x20   mode tcp\n\
         \x20   option httpchk GET /readyz\n\
         \x20   http-check expect status 200\n\
         \x20   balance roundrobin\n\
         {servers}"
    )
}

/// HAProxy's servers that are UP, from its stats socket.
fn haproxy_up(sock: &str) -> usize {
    let Ok(mut s) = UnixStream::connect(sock) else {
        return 0;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"show stat\n").is_err() {
        return 0;
    }
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.lines()
        .filter(|l| l.starts_with("apiserverbackend,b"))
        .filter(|l| l.split(',').nth(17) == Some("UP"))
        .count()
}

/// The client's TLS configuration: the test CA only, no resumption (every
/// request is a full handshake, as a new client's).
fn tls_config(ca_pem: &[u8]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        roots.add(cert.expect("the CA's PEM")).expect("the CA");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.resumption = rustls::client::Resumption::disabled();
    Arc::new(config)
}

/// One request: connect, handshake, `GET /file`, read to the end.
async fn request(
    tls: &tokio_rustls::TlsConnector,
    addr: SocketAddr,
    expect: &[u8],
) -> Result<(), String> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let name = ServerName::IpAddress(addr.ip().into());
    let mut tls = tls
        .connect(name, tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tls.write_all(b"GET /file HTTP/1.0\r\n\r\n")
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut buf = Vec::with_capacity(FILE_BYTES + 128);
    // `s_server -WWW` closes after the answer; a close without
    // close_notify is fine when the whole body arrived.
    let read = tls.read_to_end(&mut buf).await;
    let body = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| &buf[i + 4..]);
    if !buf.starts_with(b"HTTP/1.0 200") {
        let err = read.err().map(|e| e.to_string()).unwrap_or_default();
        return Err(format!("no 200 answer ({} bytes) {err}", buf.len()));
    }
    if body != Some(expect) {
        let err = read.err().map(|e| e.to_string()).unwrap_or_default();
        return Err(format!("body of {} bytes {err}", buf.len()));
    }
    Ok(())
}

/// One request's outcome.
struct Sample {
    start: Instant,
    latency: Duration,
    result: Result<(), String>,
}

/// `count` requests, `CONCURRENCY` in flight, spread over `addrs` in turn
/// (one address: all to it). `done` counts completed requests.
async fn load(
    tls: Arc<rustls::ClientConfig>,
    addrs: Vec<SocketAddr>,
    expect: Arc<Vec<u8>>,
    count: usize,
    done: Arc<AtomicUsize>,
) -> (Vec<Sample>, Duration) {
    let connector = tokio_rustls::TlsConnector::from(tls);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..CONCURRENCY {
        let (connector, addrs, expect, next, done) = (
            connector.clone(),
            addrs.clone(),
            expect.clone(),
            next.clone(),
            done.clone(),
        );
        workers.spawn(async move {
            let mut out = Vec::new();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= count {
                    return out;
                }
                let addr = addrs[n % addrs.len()];
                let start = Instant::now();
                let result = tokio::time::timeout(
                    Duration::from_secs(10),
                    request(&connector, addr, &expect),
                )
                .await
                .unwrap_or_else(|_| Err("timed out after 10 s".to_owned()));
                out.push(Sample {
                    start,
                    latency: start.elapsed(),
                    result,
                });
                done.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    let mut all = Vec::new();
    while let Some(w) = workers.join_next().await {
        all.extend(w.expect("a client worker"));
    }
    (all, started.elapsed())
}

/// One run's figures.
#[derive(Debug, Clone)]
struct RunResult {
    requests: usize,
    failed: usize,
    failed_after_death: Option<usize>,
    conn_per_s: f64,
    mean_ms: f64,
    p50_ms: f64,
    p99_ms: f64,
    first_error: Option<String>,
}

impl RunResult {
    fn of(samples: &[Sample], wall: Duration, dead_at: Option<Instant>) -> RunResult {
        let mut lat: Vec<f64> = samples
            .iter()
            .filter(|s| s.result.is_ok())
            .map(|s| s.latency.as_secs_f64() * 1000.0)
            .collect();
        lat.sort_by(f64::total_cmp);
        let failed: Vec<&Sample> = samples.iter().filter(|s| s.result.is_err()).collect();
        RunResult {
            requests: samples.len(),
            failed: failed.len(),
            failed_after_death: dead_at.map(|t| failed.iter().filter(|s| s.start > t).count()),
            conn_per_s: lat.len() as f64 / wall.as_secs_f64(),
            mean_ms: lat.iter().sum::<f64>() / lat.len().max(1) as f64,
            p50_ms: percentile(&lat, 0.50),
            p99_ms: percentile(&lat, 0.99),
            first_error: failed
                .first()
                .and_then(|s| s.result.as_ref().err())
                .map(|e| without_urls(e)),
        }
    }
    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "requests": self.requests,
            "failed": self.failed,
            "failed_started_after_backend_dead": self.failed_after_death,
            "conn_per_s": round1(self.conn_per_s),
            "mean_ms": round2(self.mean_ms),
            "p50_ms": round2(self.p50_ms),
            "p99_ms": round2(self.p99_ms),
            "first_error": self.first_error,
        })
    }
}

/// An error text without the links some errors append (rustls points to
/// its manual): the result file keeps what failed, not where to read more.
fn without_urls(e: &str) -> String {
    match e.find(": http") {
        Some(i) => e[..i].to_owned(),
        None => e.to_owned(),
    }
}

/// Nearest-rank percentile of sorted values (NaN when empty).
fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// The lab and what runs in it. Fields drop in order: the balancer and
/// the runtimes first, the lab (processes, namespaces) last.
struct Bench {
    balancer: Balancer,
    client: tokio::runtime::Runtime,
    _balancer_rt: tokio::runtime::Runtime,
    backends: Vec<SocketAddr>,
    procs: Vec<usize>,
    haproxy_sock: String,
    tls: Arc<rustls::ClientConfig>,
    expect: Arc<Vec<u8>>,
    lab: Lab,
}

impl Bench {
    fn new() -> Bench {
        let mut lab = Lab::new("bh", 5);
        run(&[
            "ip",
            "-n",
            &lab.nodes[0].ns,
            "addr",
            "add",
            VIP,
            "dev",
            "eth0",
        ]);
        let secret = cluster_config::ClusterSecret::new("balancer-bench-secret-0123456789")
            .expect("the secret");
        let pki = pki::ClusterPki::derive(&secret, "balancer-bench").expect("the PKI");
        let ca_pem = pki.kubernetes_ca.cert_pem.clone().into_bytes();
        // The same 1 KiB on every backend: the body is checked byte for byte.
        let file: String = (0..FILE_BYTES)
            .map(|i| char::from(b'a' + (i % 26) as u8))
            .collect();
        let mut procs = Vec::new();
        for b in 1..=3 {
            prepare_backend(&lab, &pki, b, &[("file", &file)]);
            procs.push(start_backend(&mut lab, b, BACKEND_PORT));
        }
        let backends: Vec<SocketAddr> = (1..=3)
            .map(|b| SocketAddr::from((lab.nodes[b].addr, BACKEND_PORT)))
            .collect();

        let config = BalancerConfig {
            backends: backends.clone(),
            check: CheckSpec::apiserver_readyz(ca_pem.clone()),
            rules: RULES,
            connect_timeout: Duration::from_secs(2),
        };
        let balancer_rt = runtime_in(&lab.nodes[0].ns);
        let listen = SocketAddr::from((VIP_ADDR, AGENT_PORT));
        let balancer = balancer_rt
            .block_on(balancer_rt.spawn(Balancer::bind(listen, config)))
            .expect("the balancer task")
            .expect("starting the balancer");

        let ca_path = common::path_str(&lab.write("ca.pem", &pki.kubernetes_ca.cert_pem));
        let haproxy_sock = common::path_str(&lab.path("haproxy.sock"));
        let bind = format!("{VIP_ADDR}:{HAPROXY_PORT}");
        let conf = haproxy_conf(&backends, &ca_path, &haproxy_sock, &bind);
        let conf_path = common::path_str(&lab.write("haproxy.cfg", &conf));
        run(&["haproxy", "-c", "-q", "-f", &conf_path]);
        lab.spawn(0, "haproxy", "haproxy", &["-db", "-f", &conf_path]);

        let client = runtime_in(&lab.nodes[CLIENT].ns);
        let mut bench = Bench {
            lab,
            backends,
            procs,
            balancer,
            haproxy_sock,
            tls: tls_config(&ca_pem),
            expect: Arc::new(file.into_bytes()),
            client,
            _balancer_rt: balancer_rt,
        };
        let took = bench.wait_all_up();
        println!("all backends in rotation in both proxies after {took:?}");
        bench
    }

    /// Waits until both proxies have all three backends in rotation.
    fn wait_all_up(&mut self) -> Duration {
        let start = Instant::now();
        let within = RULES.return_bound() * 3 + Duration::from_secs(5);
        loop {
            let agent = self.balancer.status().serving();
            let haproxy = haproxy_up(&self.haproxy_sock);
            if agent == 3 && haproxy == 3 {
                return start.elapsed();
            }
            if start.elapsed() > within {
                panic!(
                    "not all backends up within {within:?}: agent {agent}, HAProxy {haproxy}\n{}\nHAProxy log:\n{}",
                    self.balancer.status(),
                    self.lab.log("haproxy")
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn addrs(&self, target: Target) -> Vec<SocketAddr> {
        match target {
            Target::Agent => vec![SocketAddr::from((VIP_ADDR, AGENT_PORT))],
            Target::Haproxy => vec![SocketAddr::from((VIP_ADDR, HAPROXY_PORT))],
            Target::Direct => self.backends.clone(),
        }
    }

    /// `count` requests through `target`; with `kill`, backend 1 is
    /// killed once a third completed, then restarted and awaited.
    fn run(&mut self, target: Target, count: usize, kill: bool) -> RunResult {
        let done = Arc::new(AtomicUsize::new(0));
        let handle = self.client.spawn(load(
            self.tls.clone(),
            self.addrs(target),
            self.expect.clone(),
            count,
            done.clone(),
        ));
        let mut dead_at = None;
        if kill {
            while done.load(Ordering::Relaxed) < count / 3 && !handle.is_finished() {
                std::thread::sleep(Duration::from_millis(1));
            }
            // `stop` returns once the process exited.
            self.lab.stop(self.procs[0], "KILL");
            dead_at = Some(Instant::now());
        }
        let (samples, wall) = self.client.block_on(handle).expect("the client load task");
        let result = RunResult::of(&samples, wall, dead_at);
        if kill {
            self.procs[0] = start_backend(&mut self.lab, 1, BACKEND_PORT);
            self.wait_all_up();
        }
        result
    }
}

/// The first line `program arg` prints (on stdout, or on stderr as
/// keepalived does).
fn version(program: &str, arg: &str) -> String {
    Command::new(program)
        .arg(arg)
        .output()
        .map(|o| {
            let out = if o.stdout.is_empty() {
                o.stderr
            } else {
                o.stdout
            };
            String::from_utf8_lossy(&out)
                .lines()
                .next()
                .unwrap_or_default()
                .trim()
                .to_owned()
        })
        .unwrap_or_default()
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|r| r.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_default()
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Medians over the runs of one target in one row.
fn summary(runs: &[RunResult]) -> serde_json::Value {
    let m = |f: fn(&RunResult) -> f64| median(runs.iter().map(f).collect());
    serde_json::json!({
        "median": {
            "conn_per_s": round1(m(|r| r.conn_per_s)),
            "mean_ms": round2(m(|r| r.mean_ms)),
            "p50_ms": round2(m(|r| r.p50_ms)),
            "p99_ms": round2(m(|r| r.p99_ms)),
            "failed": m(|r| r.failed as f64),
            "failed_started_after_backend_dead": runs
                .iter()
                .all(|r| r.failed_after_death.is_some())
                .then(|| m(|r| r.failed_after_death.unwrap_or(0) as f64)),
        },
        "runs": runs.iter().map(RunResult::json).collect::<Vec<_>>(),
    })
}

fn main() {
    // `cargo bench` passes "--bench"; ignore arguments.
    require("openssl", "openssl");
    require("haproxy", "haproxy");
    let runs = env_usize("BALANCER_BENCH_RUNS", 3).max(1);
    let requests = env_usize("BALANCER_BENCH_REQUESTS", 3000).max(30);
    let started = Instant::now();
    let mut bench = Bench::new();

    for target in [Target::Agent, Target::Haproxy, Target::Direct] {
        let r = bench.run(target, WARMUP, false);
        println!(
            "warm-up {:<18} {} requests, {} failed",
            target.label(),
            r.requests,
            r.failed
        );
    }

    let steady_targets = [Target::Agent, Target::Haproxy, Target::Direct];
    let kill_targets = [Target::Agent, Target::Haproxy];
    let mut steady: Vec<(Target, Vec<RunResult>)> =
        steady_targets.iter().map(|&t| (t, Vec::new())).collect();
    let mut killed: Vec<(Target, Vec<RunResult>)> =
        kill_targets.iter().map(|&t| (t, Vec::new())).collect();
    for i in 1..=runs {
        for (target, out) in steady.iter_mut() {
            let r = bench.run(*target, requests, false);
            println!(
                "run {i} steady {:<18} {:>7.1} conn/s  p50 {:>6.2} ms  p99 {:>6.2} ms  failed {}",
                target.label(),
                r.conn_per_s,
                r.p50_ms,
                r.p99_ms,
                r.failed
            );
            out.push(r);
        }
        for (target, out) in killed.iter_mut() {
            let r = bench.run(*target, requests, true);
            println!(
                "run {i} kill   {:<18} {:>7.1} conn/s  p50 {:>6.2} ms  p99 {:>6.2} ms  failed {} ({} started after the death){}",
                target.label(),
                r.conn_per_s,
                r.p50_ms,
                r.p99_ms,
                r.failed,
                r.failed_after_death.unwrap_or(0),
                r.first_error
                    .as_deref()
                    .map(|e| format!(", first: {e}"))
                    .unwrap_or_default()
            );
            out.push(r);
        }
    }
    let status = bench.balancer.status();
    let haproxy_cfg = std::fs::read_to_string(bench.lab.path("haproxy.cfg")).unwrap_or_default();
    drop(bench);
    require("keepalived", "keepalived");
    let (graceful_agent, graceful_haproxy, keepalived_cfg) = graceful_row(runs, requests);

    let med = |rows: &[(Target, Vec<RunResult>)], t: Target, f: fn(&RunResult) -> f64| {
        rows.iter()
            .find(|(k, _)| *k == t)
            .map(|(_, r)| median(r.iter().map(f).collect()))
            .unwrap_or(f64::NAN)
    };
    println!();
    println!(
        "API load balancer vs HAProxy: 3 openssl s_server backends, {requests} requests per run, \
         {CONCURRENCY} in flight, a new TLS connection per request; medians of {runs} interleaved runs"
    );
    println!(
        "{:<20} {:<8} {:>9} {:>9} {:>9} {:>9} {:>8} {:>14}",
        "proxy", "row", "conn/s", "mean ms", "p50 ms", "p99 ms", "failed", "after death"
    );
    for (label, rows, is_kill) in [("steady", &steady, false), ("kill b1", &killed, true)] {
        for (t, _) in rows.iter() {
            let after = if is_kill {
                format!(
                    "{:.0}",
                    med(rows, *t, |r| r.failed_after_death.unwrap_or(0) as f64)
                )
            } else {
                "-".to_owned()
            };
            println!(
                "{:<20} {:<8} {:>9.1} {:>9.2} {:>9.2} {:>9.2} {:>8.0} {:>14}",
                t.label(),
                label,
                med(rows, *t, |r| r.conn_per_s),
                med(rows, *t, |r| r.mean_ms),
                med(rows, *t, |r| r.p50_ms),
                med(rows, *t, |r| r.p99_ms),
                med(rows, *t, |r| r.failed as f64),
                after
            );
        }
    }
    println!();
    println!(
        "holder restarted gracefully (two holders, the VIP moves; medians of {runs} runs, failed: total)"
    );
    println!(
        "{:<28} {:>8} {:>16} {:>13} {:>9} {:>9}",
        "proxy", "failed", "started during", "hand-over ms", "p50 ms", "max ms"
    );
    for (label, r) in [
        ("agent (vrrp + balancer)", &graceful_agent),
        ("keepalived + HAProxy", &graceful_haproxy),
    ] {
        let m = |f: fn(&GracefulRun) -> f64| median(r.iter().map(f).collect());
        println!(
            "{:<28} {:>8} {:>16.0} {:>13.0} {:>9.2} {:>9.0}",
            label,
            r.iter().map(|x| x.failed).sum::<usize>(),
            m(|x| x.started_during as f64),
            m(|x| x.handover_ms),
            m(|x| x.p50_ms),
            m(|x| x.max_ms)
        );
    }
    let ratio = |rows: &[(Target, Vec<RunResult>)], f: fn(&RunResult) -> f64| {
        med(rows, Target::Agent, f) / med(rows, Target::Haproxy, f)
    };
    let conn_ratio = ratio(&steady, |r| r.conn_per_s);
    let mean_ratio = ratio(&steady, |r| r.mean_ms);
    let p50_ratio = ratio(&steady, |r| r.p50_ms);
    let p99_ratio = ratio(&steady, |r| r.p99_ms);
    let agent_failed = med(&killed, Target::Agent, |r| r.failed as f64);
    let haproxy_failed = med(&killed, Target::Haproxy, |r| r.failed as f64);
    println!();
    println!("agent / HAProxy, steady: conn/s {conn_ratio:.2} (goal >= 1.00), mean {mean_ratio:.2}, p50 {p50_ratio:.2}, p99 {p99_ratio:.2} (goal <= 1.00)");
    println!(
        "failed requests with a backend killed (median): agent {agent_failed:.0}, HAProxy {haproxy_failed:.0} (goal: agent <= HAProxy)"
    );
    println!("{status}");

    let rows = |rows: &[(Target, Vec<RunResult>)]| {
        let mut m = serde_json::Map::new();
        for (t, r) in rows {
            m.insert(t.key().to_owned(), summary(r));
        }
        serde_json::Value::Object(m)
    };
    let date = Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let out = serde_json::json!({
        "benchmark": "balancer_vs_haproxy",
        "date": date,
        "machine": {
            "cpus": cpus,
            "cpu_model": cpu_model(),
            "caveat": format!(
                "{cpus}-core machine, shared (other jobs may run): the client, the three TLS \
                 servers and both proxies share these cores, so absolute figures move with the \
                 load; the comparison is the ratio of interleaved runs in the same lab"
            ),
        },
        "configuration": {
            "requests_per_run": requests,
            "concurrency": CONCURRENCY,
            "runs": runs,
            "warmup_requests_per_target": WARMUP,
            "order": "per run: steady agent, HAProxy, direct; then kill agent, HAProxy",
            "client": "tokio + rustls (ring), one new TCP connection and full TLS handshake per \
                       request (resumption disabled), server certificate verified against the \
                       test CA, GET /file HTTP/1.0, body compared byte for byte, 10 s limit",
            "file_bytes": FILE_BYTES,
            "backends": format!(
                "3 x `openssl s_server -WWW` ({}), ECDSA P-256 certificates from the pki crate, \
                 serving readyz (\"ok\") and the file, one network namespace each",
                version("openssl", "version")
            ),
            "kill": "backend 1 SIGKILLed once a third of the run's requests completed; restarted \
                     and back in both proxies before the next run",
            "agent": {
                "listen": format!("{VIP_ADDR}:{AGENT_PORT}"),
                "policy": POLICY,
                "check": "GET https://<backend>/readyz, verified against the CA, body contains ok",
                "interval_ms": RULES.interval.as_millis() as u64,
                "timeout_ms": RULES.timeout.as_millis() as u64,
                "fall": RULES.fall,
                "slow_fall": RULES.slow_fall,
                "rise": RULES.rise,
                "connect_timeout_ms": 2000,
                "runtime": "tokio, 2 worker threads",
            },
            "haproxy": {
                "version": version("haproxy", "-v"),
                "listen": format!("{VIP_ADDR}:{HAPROXY_PORT}"),
                "balance": "roundrobin (the kubeadm HA guide's)",
                "config": haproxy_cfg,
            },
        },
        "steady": rows(&steady),
        "kill_one_backend": rows(&killed),
        "holder_restarted_gracefully": {
            "agent": graceful_summary(&graceful_agent),
            "haproxy": graceful_summary(&graceful_haproxy),
            "setup": "a second lab: holders 0 and 1, three openssl s_server backends on port 6444, \
                      the client on a sixth node; both sides serve VIP:6443 from a proxy on \
                      *:6443 on each holder; per run the client load of the other rows (a new \
                      TLS connection per request, 8 in flight) to VIP:6443, the holder stopped \
                      gracefully once a third of the requests completed; runs of the agent side, \
                      then runs of the HAProxy side (the two VRRP stacks cannot share the VIP)",
            "agent_setup": {
                "vrrp": "in-process vrrp::Vrrp, priorities 120/110, advert interval 200 ms (the default), quorum assumed",
                "restart": format!("balancer::hand_over: quiesce (SYN-dropping socket filter), drain (bound {} s), \
                                    then the VRRP shutdown (priority-0 advert); node 0 restarted after the run", G_DRAIN.as_secs()),
            },
            "haproxy_setup": {
                "keepalived": version("keepalived", "--version"),
                "keepalived_config": keepalived_cfg,
                "haproxy_bind": format!("*:{G_PORT}, otherwise the configuration above"),
                "restart": "what `systemctl restart keepalived haproxy` does to the holder: SIGTERM to \
                            keepalived (priority-0 advert, VIP removed, exit), then HAProxy's soft stop \
                            (SIGUSR1: unbind, exit once its connections closed); both restarted after the run",
            },
            "started_during_handover": "requests started between the stop's start and the VIP seen (5 ms polling) on the other node",
            "backends": "not openssl s_server here but a concurrent tokio-rustls server per backend \
                         namespace (same certificates, same answers): s_server serves one connection at \
                         a time, so a proxy connection left open by the old holder (its client gone with \
                         the VIP) blocked every backend until the old proxy exited; with it, keepalived + \
                         HAProxy lost ~2,000 requests per run (measured), an artefact of the lab, not of \
                         either proxy",
            "measured_window": "the stop and the take-over; the restarted node's return (it preempts the VIP back with the guide's priorities on both sides) is after the run",
        },
        "ratio_agent_to_haproxy": {
            "conn_per_s": round2(conn_ratio),
            "mean_ms": round2(mean_ratio),
            "p50_ms": round2(p50_ratio),
            "p99_ms": round2(p99_ratio),
            "goal": "conn/s ratio >= 1, latency ratios <= 1, failed requests with a backend killed no more than HAProxy's",
        },
        "final_agent_status": status,
        "wall_seconds": started.elapsed().as_secs(),
        "notes": [
            "holder_restarted_gracefully: the agent side is the crate's hand_over with an \
             in-process VRRP instance (what the agent runs), not the agent binary",
            "direct: the client spreads its requests over the three backends itself; what the \
             TLS servers and the client reach on this machine without a proxy",
            "HAProxy runs with its defaults for threads (one per CPU) and checks every backend \
             verified against the same CA; both proxies run during every row",
        ],
    });
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../bench/results");
    let path = dir.join("balancer.json");
    let text = serde_json::to_string_pretty(&out).unwrap_or_default();
    match std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, text + "\n")) {
        Ok(()) => println!("wrote {}", path.display()),
        Err(e) => {
            eprintln!("writing {}: {e}", path.display());
            std::process::exit(1);
        }
    }
}

// ---- The graceful-restart row -------------------------------------------

/// The graceful row's lab: holders 0 and 1, backends 2-4 (API servers
/// on 6444, the port plan), the client on 5; the cluster endpoint is
/// `VIP:6443` on both sides.
const G_HOLDERS: [usize; 2] = [0, 1];
const G_BACKENDS: [usize; 3] = [2, 3, 4];
const G_CLIENT: usize = 5;
const G_API_PORT: u16 = 6444;
const G_PORT: u16 = 6443;
/// The agent's drain bound in the hand-over.
const G_DRAIN: Duration = Duration::from_secs(5);

/// keepalived as the kubeadm HA guide configures it (`state`, priority
/// 101 on the first master and 100 on the others, PASS authentication,
/// VRRPv2, advert_int 1 s by default), without its `track_script` (a
/// curl of the local API server every 3 s, weight -2: it plays no part
/// in a graceful restart).
fn guide_keepalived_conf(state: &str, priority: u8) -> String {
    format!(
        "global_defs {{\n    router_id LVS_DEVEL\n}}\n\
         vrrp_instance VI_1 {{\n    state {state}\n    interface eth0\n    virtual_router_id 51\n    \
         priority {priority}\n    authentication {{\n        auth_type PASS\n        auth_pass 42\n    }}\n    \
         virtual_ipaddress {{\n        {VIP}\n    }}\n}}\n"
    )
}

/// A concurrent TLS backend for the graceful row, in place of
/// `openssl s_server`: that serves one connection at a time, so a proxy
/// connection to it left open by the old holder (its client's side gone
/// with the VIP; the old proxy closes it only when it exits) holds the
/// backend up: every check and every request through the new holder
/// queues behind it, the backends drop out of rotation and nearly every
/// request after the move fails, which says nothing about either proxy
/// (an API server serves connections concurrently). This one answers
/// `GET /readyz` with `ok` and `GET /file` with `file`, HTTP/1.0, the
/// same headers as `s_server -WWW`, one task per connection, on the
/// given runtime (whose threads are in the backend's namespace), with
/// the certificate and key `prepare_backend` wrote.
fn start_tls_backend(
    rt: &tokio::runtime::Runtime,
    addr: SocketAddr,
    cert_pem: &[u8],
    key_pem: &[u8],
    file: Arc<Vec<u8>>,
) {
    use rustls_pki_types::PrivateKeyDer;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .expect("the backend's certificate");
    let key = PrivateKeyDer::from_pem_slice(key_pem).expect("the backend's key");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("the backend's TLS configuration");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = rt
        .block_on(rt.spawn(tokio::net::TcpListener::bind(addr)))
        .expect("the bind task")
        .expect("binding a backend");
    rt.spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let (acceptor, file) = (acceptor.clone(), file.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut req = Vec::new();
                let mut chunk = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&chunk[..n]),
                    }
                }
                let line = String::from_utf8_lossy(&req);
                let path = line.split_whitespace().nth(1).unwrap_or_default();
                let body: &[u8] = match path {
                    "/readyz" => b"ok\n",
                    "/file" => &file,
                    _ => b"not found\n",
                };
                let _ = tls
                    .write_all(b"HTTP/1.0 200 ok\r\nContent-type: text/plain\r\n\r\n")
                    .await;
                let _ = tls.write_all(body).await;
                let _ = tls.shutdown().await;
            });
        }
    });
}

/// One graceful-restart run.
#[derive(Debug, Clone)]
struct GracefulRun {
    requests: usize,
    failed: usize,
    /// Requests started between the stop's start and the VIP seen on
    /// the other node.
    started_during: usize,
    /// Failed requests that started before the VIP was seen on the other
    /// node (in flight through the old holder, or sent to it).
    failed_before_move: usize,
    /// From the stop's start to the VIP seen on the other node.
    handover_ms: f64,
    p50_ms: f64,
    max_ms: f64,
    first_error: Option<String>,
}

impl GracefulRun {
    fn of(samples: &[Sample], stop_at: Instant, moved_at: Instant) -> GracefulRun {
        let mut lat: Vec<f64> = samples
            .iter()
            .filter(|s| s.result.is_ok())
            .map(|s| s.latency.as_secs_f64() * 1000.0)
            .collect();
        lat.sort_by(f64::total_cmp);
        let failed: Vec<&Sample> = samples.iter().filter(|s| s.result.is_err()).collect();
        GracefulRun {
            requests: samples.len(),
            failed: failed.len(),
            started_during: samples
                .iter()
                .filter(|s| s.start >= stop_at && s.start <= moved_at)
                .count(),
            failed_before_move: failed.iter().filter(|s| s.start <= moved_at).count(),
            handover_ms: (moved_at - stop_at).as_secs_f64() * 1000.0,
            p50_ms: percentile(&lat, 0.50),
            max_ms: lat.last().copied().unwrap_or(f64::NAN),
            first_error: failed
                .first()
                .and_then(|s| s.result.as_ref().err())
                .map(|e| without_urls(e)),
        }
    }
    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "requests": self.requests,
            "failed": self.failed,
            "started_during_handover": self.started_during,
            "failed_started_before_the_move": self.failed_before_move,
            "handover_ms": round1(self.handover_ms),
            "p50_ms": round2(self.p50_ms),
            "max_ms": round1(self.max_ms),
            "first_error": self.first_error,
        })
    }
}

fn graceful_summary(runs: &[GracefulRun]) -> serde_json::Value {
    let m = |f: fn(&GracefulRun) -> f64| median(runs.iter().map(f).collect());
    serde_json::json!({
        "median": {
            "failed": m(|r| r.failed as f64),
            "started_during_handover": m(|r| r.started_during as f64),
            "handover_ms": round1(m(|r| r.handover_ms)),
            "p50_ms": round2(m(|r| r.p50_ms)),
            "max_ms": round1(m(|r| r.max_ms)),
        },
        "failed_total": runs.iter().map(|r| r.failed).sum::<usize>(),
        "runs": runs.iter().map(GracefulRun::json).collect::<Vec<_>>(),
    })
}

/// Watches, on its own thread (every 5 ms, `ip addr`), for the VIP to be
/// on namespace `ns`; the thread returns when it was first seen.
fn watch_vip(ns: String) -> std::thread::JoinHandle<Option<Instant>> {
    std::thread::spawn(move || {
        let until = Instant::now() + Duration::from_secs(15);
        while Instant::now() < until {
            let out = Command::new("ip")
                .args(["-n", &ns, "-4", "-o", "addr", "show", "dev", "eth0"])
                .output()
                .ok()?;
            if String::from_utf8_lossy(&out.stdout).contains(&format!("inet {VIP_ADDR}/")) {
                return Some(Instant::now());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        None
    })
}

/// Polls until node `i` alone of the holders has the VIP.
fn wait_holder(lab: &Lab, i: usize, within: Duration) -> Instant {
    let until = Instant::now() + within;
    loop {
        if lab.holders(&G_HOLDERS) == [i] {
            return Instant::now();
        }
        assert!(
            Instant::now() < until,
            "the VIP is not on node {i} alone within {within:?}: {:?}",
            lab.holders(&G_HOLDERS)
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Starts the client load on `client` and waits until a third of it
/// completed.
fn start_load(
    client: &tokio::runtime::Runtime,
    tls: &Arc<rustls::ClientConfig>,
    expect: &Arc<Vec<u8>>,
    count: usize,
) -> tokio::task::JoinHandle<(Vec<Sample>, Duration)> {
    let done = Arc::new(AtomicUsize::new(0));
    let handle = client.spawn(load(
        tls.clone(),
        vec![SocketAddr::from((VIP_ADDR, G_PORT))],
        expect.clone(),
        count,
        done.clone(),
    ));
    while done.load(Ordering::Relaxed) < count / 3 && !handle.is_finished() {
        std::thread::sleep(Duration::from_millis(1));
    }
    handle
}

/// The row "holder restarted gracefully": `runs` runs per side of
/// `requests` requests each (the client as in the other rows), the
/// holder stopped gracefully once a third completed. Returns the agent's
/// runs, HAProxy's, and the keepalived configuration used.
fn graceful_row(runs: usize, requests: usize) -> (Vec<GracefulRun>, Vec<GracefulRun>, String) {
    let mut lab = Lab::new("bg", 6);
    let secret =
        cluster_config::ClusterSecret::new("balancer-bench-secret-0123456789").expect("the secret");
    let pki = pki::ClusterPki::derive(&secret, "balancer-bench").expect("the PKI");
    let ca_pem = pki.kubernetes_ca.cert_pem.clone().into_bytes();
    let file: String = (0..FILE_BYTES)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let file_bytes = Arc::new(file.clone().into_bytes());
    let mut backend_rts = Vec::new();
    for b in G_BACKENDS {
        prepare_backend(&lab, &pki, b, &[("file", &file)]);
        let rt = runtime_in(&lab.nodes[b].ns);
        let read = |name: &str| {
            std::fs::read(lab.path(&format!("b{b}/{name}"))).expect("a backend's PEM file")
        };
        start_tls_backend(
            &rt,
            SocketAddr::from((lab.nodes[b].addr, G_API_PORT)),
            &read("cert.pem"),
            &read("key.pem"),
            file_bytes.clone(),
        );
        backend_rts.push(rt);
    }
    let backends: Vec<SocketAddr> = G_BACKENDS
        .iter()
        .map(|&b| SocketAddr::from((lab.nodes[b].addr, G_API_PORT)))
        .collect();
    let tls = tls_config(&ca_pem);
    let expect = Arc::new(file.into_bytes());
    let client = runtime_in(&lab.nodes[G_CLIENT].ns);

    // Agent side: vrrp + balancer on both holders; the holder hands
    // over (quiesce, drain, VRRP shutdown with its priority-0 advert),
    // then its agent "restarts" once the run's load is done (a restarted
    // node 0 preempts the VIP back, outside the measured window).
    let config = BalancerConfig {
        backends: backends.clone(),
        check: CheckSpec::apiserver_readyz(ca_pem.clone()),
        rules: RULES,
        connect_timeout: Duration::from_secs(2),
    };
    let mut agent_runs = Vec::new();
    let h1 = start_holder(&lab, 1, 110, &config, G_PORT);
    for i in 1..=runs {
        let mut h0 = start_holder(&lab, 0, 120, &config, G_PORT);
        wait_holder(&lab, 0, Duration::from_secs(10));
        for h in [&h0, &h1] {
            let within = RULES.return_bound() * 3;
            let start = Instant::now();
            while h.balancer().status().serving() < 3 {
                assert!(
                    start.elapsed() < within,
                    "backends not up: {}",
                    h.balancer().status()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let handle = start_load(&client, &tls, &expect, requests);
        let moved = watch_vip(lab.nodes[1].ns.clone());
        let stop_at = Instant::now();
        let (balancer, vrrp) = (h0.balancer.take().unwrap(), h0.vrrp.take().unwrap());
        let report = h0
            .rt
            .block_on(
                h0.rt
                    .spawn(async move { hand_over(&balancer, G_DRAIN, vrrp.shutdown()).await }),
            )
            .expect("the hand-over task");
        let moved_at = moved.join().ok().flatten().expect("the VIP on node 1");
        wait_holder(&lab, 1, Duration::from_secs(10));
        let (samples, _) = client.block_on(handle).expect("the client load task");
        drop(h0);
        let r = GracefulRun::of(&samples, stop_at, moved_at);
        println!(
            "run {i} graceful agent balancer  failed {} ({} started before the move)  started during the hand-over {}  hand-over {:.0} ms  \
             p50 {:.2} ms  max {:.0} ms  (drained in {:?}, cut {}){}",
            r.failed,
            r.failed_before_move,
            r.started_during,
            r.handover_ms,
            r.p50_ms,
            r.max_ms,
            report.drained,
            report.cut,
            r.first_error.as_deref().map(|e| format!(", first: {e}")).unwrap_or_default()
        );
        agent_runs.push(r);
    }
    let Holder {
        rt,
        vrrp,
        balancer,
        _inputs,
    } = h1;
    if let Some(v) = vrrp {
        let _ = rt.block_on(rt.spawn(v.shutdown()));
    }
    drop((balancer, _inputs));
    drop(rt);

    // HAProxy side: keepalived (the guide's configuration) and HAProxy
    // (bound on *:6443, as the guide's) on both holders. The restart is
    // what `systemctl restart keepalived haproxy` does to the holder's
    // two services: keepalived gets SIGTERM (it advertises priority 0 and
    // removes the VIP, then exits), then HAProxy its soft stop (SIGUSR1:
    // it unbinds its listener and exits once its connections closed);
    // both start again once the run's load is done (keepalived at 101
    // preempts the VIP back, outside the measured window).
    let ca_path = common::path_str(&lab.write("ca.pem", &pki.kubernetes_ca.cert_pem));
    let keepalived = [
        guide_keepalived_conf("MASTER", 101),
        guide_keepalived_conf("BACKUP", 100),
    ];
    let start_haproxy = |lab: &mut Lab, n: usize| -> (usize, String) {
        let sock = common::path_str(&lab.path(&format!("haproxy{n}.sock")));
        let conf = haproxy_conf(&backends, &ca_path, &sock, &format!("*:{G_PORT}"));
        let conf_path = common::path_str(&lab.write(&format!("haproxy{n}.cfg"), &conf));
        (
            lab.spawn(
                n,
                &format!("haproxy{n}"),
                "haproxy",
                &["-db", "-f", &conf_path],
            ),
            sock,
        )
    };
    let (_, sock1) = start_haproxy(&mut lab, 1);
    start_keepalived(&mut lab, 1, "keepalived1", &keepalived[1]);
    let mut haproxy_runs = Vec::new();
    for i in 1..=runs {
        let (hp0, sock0) = start_haproxy(&mut lab, 0);
        let ka0 = start_keepalived(&mut lab, 0, "keepalived0", &keepalived[0]);
        wait_holder(&lab, 0, Duration::from_secs(15));
        let within = RULES.return_bound() * 3 + Duration::from_secs(5);
        let start = Instant::now();
        while haproxy_up(&sock0) < 3 || haproxy_up(&sock1) < 3 {
            assert!(start.elapsed() < within, "HAProxy backends not up");
            std::thread::sleep(Duration::from_millis(20));
        }
        let handle = start_load(&client, &tls, &expect, requests);
        let moved = watch_vip(lab.nodes[1].ns.clone());
        let stop_at = Instant::now();
        lab.stop(ka0, "TERM");
        let keepalived_stopped = stop_at.elapsed();
        lab.signal(hp0, "USR1");
        let moved_at = moved.join().ok().flatten().expect("the VIP on node 1");
        wait_holder(&lab, 1, Duration::from_secs(10));
        let (samples, _) = client.block_on(handle).expect("the client load task");
        // Soft-stopped HAProxy exits once its connections closed (5 s,
        // then SIGKILL).
        lab.stop(hp0, "USR1");
        let haproxy_stopped = stop_at.elapsed();
        let r = GracefulRun::of(&samples, stop_at, moved_at);
        println!(
            "run {i} graceful HAProxy         failed {} ({} started before the move)  started during the hand-over {}  hand-over {:.0} ms  \
             p50 {:.2} ms  max {:.0} ms  (keepalived exited after {keepalived_stopped:?}, HAProxy after {haproxy_stopped:?}){}",
            r.failed,
            r.failed_before_move,
            r.started_during,
            r.handover_ms,
            r.p50_ms,
            r.max_ms,
            r.first_error.as_deref().map(|e| format!(", first: {e}")).unwrap_or_default()
        );
        haproxy_runs.push(r);
    }
    drop(client);
    drop(backend_rts);
    drop(lab);
    (agent_runs, haproxy_runs, keepalived[0].clone())
}
