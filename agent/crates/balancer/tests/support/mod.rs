//! Helpers shared by `tests/netns.rs` and `benches/haproxy.rs` (both
//! include this file with `#[path]`, `tests/handover.rs` too), on top of
//! the VRRP tests' lab.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use balancer::{Balancer, BalancerConfig, BalancerStatus};
use tokio::sync::watch;
use vrrp::{Health, Quorum, Vrrp, VrrpConfig, VrrpHandle};

use crate::common::{Lab, VIP, VIP_ADDR};

/// A tokio runtime whose threads live in network namespace `ns`: built on
/// a thread that entered `ns`, so its workers (and their blocking pool)
/// inherit it. Work must be `spawn`ed onto it (`block_on` polls on the
/// caller's thread, in the caller's namespace).
pub fn runtime_in(ns: &str) -> tokio::runtime::Runtime {
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || {
        let f = File::open(&path).unwrap_or_else(|e| panic!("opening {path}: {e}"));
        // SAFETY: setns on a valid namespace fd; affects this thread only.
        let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("building a runtime")
    })
    .join()
    .expect("the runtime thread")
}

/// Backend `b` (lab node `b`): a server certificate from the cluster's
/// Kubernetes CA for its address and the VIP, written with `readyz` and
/// `files` (name, contents) into its directory for `openssl s_server -WWW`.
pub fn prepare_backend(lab: &Lab, pki: &pki::ClusterPki, b: usize, files: &[(&str, &str)]) {
    let leaf = pki
        .kubernetes_ca
        .issue(&pki::LeafRequest {
            common_name: "kube-apiserver".to_owned(),
            dns_names: Vec::new(),
            ips: vec![IpAddr::V4(lab.nodes[b].addr), IpAddr::V4(VIP_ADDR)],
            usage: pki::Usage::Server,
            organization: None,
        })
        .expect("a server certificate");
    std::fs::create_dir_all(lab.path(&format!("b{b}"))).expect("a backend directory");
    lab.write(&format!("b{b}/cert.pem"), &leaf.cert_pem);
    lab.write(&format!("b{b}/key.pem"), &leaf.key_pem);
    lab.write(&format!("b{b}/readyz"), "ok\n");
    for (name, contents) in files {
        lab.write(&format!("b{b}/{name}"), contents);
    }
}

/// Starts backend `b` prepared by [`prepare_backend`]: a real
/// `openssl s_server -WWW` on its address and `port`; returns the lab's
/// process index.
pub fn start_backend(lab: &mut Lab, b: usize, port: u16) -> usize {
    let dir = lab.path(&format!("b{b}"));
    let addr = lab.nodes[b].addr;
    let cmd = format!(
        "cd {} && exec openssl s_server -accept {addr}:{port} -cert cert.pem -key key.pem -WWW -quiet",
        dir.display()
    );
    lab.spawn(b, &format!("b{b}"), "sh", &["-c", &cmd])
}

/// One client connection: when it started and ended, and the backend's
/// name or the error.
pub struct Sample {
    /// Before the connection was opened.
    pub start: Instant,
    /// When the answer (or the error) was in.
    pub end: Instant,
    /// The backend's name, or the error chain.
    pub got: Result<String, String>,
}

/// An error with its sources.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s = format!("{s}: {c}");
        src = c.source();
    }
    s
}

/// `concurrency` workers each GET `/name` through `VIP:port` on a new
/// TLS connection (verified against the CA, server name the VIP) until
/// `count` connections were made or `stop` is set.
pub async fn load(
    ca_pem: Vec<u8>,
    port: u16,
    count: usize,
    concurrency: usize,
    stop: Arc<AtomicBool>,
) -> Vec<Sample> {
    let client = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&ca_pem).unwrap())
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let url = format!("https://{VIP_ADDR}:{port}/name");
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (client, url, next, stop) = (client.clone(), url.clone(), next.clone(), stop.clone());
        workers.spawn(async move {
            let mut out = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < count && !stop.load(Ordering::Relaxed) {
                let start = Instant::now();
                let got = match client.get(&url).send().await {
                    Ok(r) => r
                        .text()
                        .await
                        .map(|b| b.trim().to_owned())
                        .map_err(|e| chain(&e)),
                    Err(e) => Err(chain(&e)),
                };
                out.push(Sample {
                    start,
                    end: Instant::now(),
                    got,
                });
            }
            out
        });
    }
    let mut all = Vec::new();
    while let Some(w) = workers.join_next().await {
        all.extend(w.unwrap());
    }
    all
}

/// Connections per backend name (`error`: failed).
pub fn per_backend(samples: &[Sample]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for s in samples {
        let key = match &s.got {
            Ok(name) => name.clone(),
            Err(_) => "error".to_owned(),
        };
        *m.entry(key).or_insert(0) += 1;
    }
    m
}

/// The failed connections' errors.
pub fn errors(samples: &[Sample]) -> Vec<&str> {
    samples
        .iter()
        .filter_map(|s| s.got.as_ref().err().map(String::as_str))
        .collect()
}

/// Polls the status every 10 ms until `pred` holds; the time it took.
pub fn wait_for(
    balancer: &Balancer,
    what: &str,
    within: Duration,
    pred: impl Fn(&BalancerStatus) -> bool,
) -> Duration {
    let start = Instant::now();
    loop {
        let status = balancer.status();
        if pred(&status) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "{what}: not within {within:?}\n{status}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// One holder node: its runtime (threads in the node's namespace), its
/// VRRP instance and its balancer.
pub struct Holder {
    /// Its runtime.
    pub rt: tokio::runtime::Runtime,
    /// Its VRRP instance (taken for the shutdown).
    pub vrrp: Option<VrrpHandle>,
    /// Its balancer (taken for a hand-over).
    pub balancer: Option<Balancer>,
    /// The instance's health and peers inputs (fixed; kept open).
    pub _inputs: (watch::Sender<Health>, watch::Sender<Vec<Ipv4Addr>>),
}

/// Starts lab node `i` as a master does: a VRRP instance for the lab VIP
/// (router id 51, `priority`, the default interval, quorum assumed)
/// and a balancer on `0.0.0.0:port` with `config`.
pub fn start_holder(
    lab: &Lab,
    i: usize,
    priority: u8,
    config: &BalancerConfig,
    port: u16,
) -> Holder {
    let rt = runtime_in(&lab.nodes[i].ns);
    let spec = cluster_config::Vrrp {
        router_id: 51,
        interval_cs: cluster_config::DEFAULT_VRRP_INTERVAL_CS,
        priority,
        preempt: true,
        preempt_delay_ms: 0,
        unicast: false,
        proof_timeout_ms: cluster_config::DEFAULT_PROOF_TIMEOUT_MS,
        proof_lease_ms: cluster_config::DEFAULT_PROOF_LEASE_MS,
    };
    let vrrp_config = VrrpConfig::new(&spec, VIP.parse().unwrap(), "eth0").unwrap();
    let (health_tx, health) = watch::channel(Health::OK);
    let (peers_tx, peers) = watch::channel(Vec::<Ipv4Addr>::new());
    let (vrrp, balancer) = rt
        .block_on(rt.spawn({
            let config = config.clone();
            async move {
                let vrrp = Vrrp::spawn(vrrp_config, Quorum::Assumed, health, peers)
                    .await
                    .expect("starting VRRP");
                let listen = SocketAddr::from(([0, 0, 0, 0], port));
                let balancer = Balancer::bind(listen, config)
                    .await
                    .expect("binding the balancer");
                (vrrp, balancer)
            }
        }))
        .unwrap();
    Holder {
        rt,
        vrrp: Some(vrrp),
        balancer: Some(balancer),
        _inputs: (health_tx, peers_tx),
    }
}

impl Holder {
    /// Its balancer (panics once taken).
    pub fn balancer(&self) -> &Balancer {
        self.balancer.as_ref().unwrap()
    }
}
