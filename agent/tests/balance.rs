//! The agent's balancer module ([`agent::balance`]) against real TLS
//! servers: two `openssl s_server -WWW` API-server stand-ins on loopback
//! addresses (127.0.0.2 and 127.0.0.3, the "masters"), certificates from
//! the cluster's Kubernetes CA derived from the secret. Checks that the
//! balancer starts at the hand-off with the CA, takes both backends into
//! rotation, proxies a verified TLS request, follows the masters list,
//! reports a backend that died and, with none left, the state and the
//! VIP penalty (`vip::combine`); then the hand-over runs the VIP release.
//! Needs `openssl` and `curl` (Debian packages of the same names); no
//! root, no namespaces.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agent::balance::{Balance, BalancerState};
use agent::vip::{combine, BALANCER_WEIGHT};
use balancer::{BackendHealth, HealthRules};
use cluster_config::{ClusterSecret, ClusterSpec};

mod common;
use common::{free_port, Reaped};

const MASTERS: [Ipv4Addr; 2] = [Ipv4Addr::new(127, 0, 0, 2), Ipv4Addr::new(127, 0, 0, 3)];

/// Faster than [`HealthRules::APISERVER`], same shape.
const RULES: HealthRules = HealthRules {
    interval: Duration::from_millis(200),
    timeout: Duration::from_secs(1),
    fall: 2,
    slow_fall: 3,
    rise: 2,
};

/// An API server stand-in on `ip:port` serving `readyz` from `dir`.
fn serve(dir: &Path, ip: Ipv4Addr, port: u16) -> Reaped {
    let child = Command::new("openssl")
        .current_dir(dir)
        .args(["s_server", "-quiet", "-WWW", "-accept"])
        .arg(format!("{ip}:{port}"))
        .args(["-cert", "cert.pem", "-key", "key.pem"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("running openssl s_server ({e}): install the Debian package openssl")
        });
    let start = Instant::now();
    while std::net::TcpStream::connect((ip, port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "openssl s_server did not listen on {ip}:{port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Reaped(child)
}

async fn wait_until(what: &str, bound: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < bound, "{what}: not within {bound:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agents_balancer_serves_follows_masters_and_feeds_the_vip_penalty() {
    let tmp = tempfile::tempdir().unwrap();
    let secret = ClusterSecret::new("balance-test-secret-0123456789").unwrap();
    let pki = pki::ClusterPki::derive(&secret, "baltest").unwrap();
    let ca_path = tmp.path().join("ca.pem");
    std::fs::write(&ca_path, &pki.kubernetes_ca.cert_pem).unwrap();
    let apiserver_port = free_port();
    let mut listen_port = free_port();
    while listen_port == apiserver_port {
        listen_port = free_port();
    }
    let mut servers = Vec::new();
    for (i, ip) in MASTERS.iter().enumerate() {
        let dir = tmp.path().join(format!("m{i}"));
        std::fs::create_dir_all(&dir).unwrap();
        // The clients below reach the backends through the balancer's
        // 127.0.0.1: it is a SAN, as the VIP is on real API servers.
        let leaf = pki
            .kubernetes_ca
            .issue(&pki::LeafRequest {
                common_name: "kube-apiserver".into(),
                dns_names: vec![],
                ips: vec![IpAddr::V4(*ip), IpAddr::V4(Ipv4Addr::LOCALHOST)],
                usage: pki::Usage::Server,
                organization: None,
            })
            .unwrap();
        std::fs::write(dir.join("cert.pem"), &leaf.cert_pem).unwrap();
        std::fs::write(dir.join("key.pem"), &leaf.key_pem).unwrap();
        std::fs::write(dir.join("readyz"), "ok\n").unwrap();
        servers.push(Some(serve(&dir, *ip, apiserver_port)));
    }

    let cfg = ClusterSpec::from_toml(
        "test",
        &format!(
            "role = \"master\"\nname = \"baltest\"\n[network]\nvip = \"10.77.0.10/24\"\n\
             [kubernetes]\napi_port = {listen_port}\napiserver_port = {apiserver_port}\n\
             [balancer]\ndrain_timeout_ms = 1000\n"
        ),
    )
    .unwrap()
    .validate()
    .unwrap();
    let listen = SocketAddr::from((Ipv4Addr::LOCALHOST, listen_port));
    let own = MASTERS[0];
    let mut balance = Balance::with_listen(&cfg, own, listen, RULES);
    let ca = pki.kubernetes_ca.cert_pem.clone();

    // Before the kube phase's hand-off: waiting, nothing listens.
    balance.reconcile(false, &[MASTERS[1]], &ca, Instant::now());
    assert_eq!(balance.report().state, BalancerState::Waiting);
    assert!(std::net::TcpStream::connect(listen).is_err());
    // The hand-off: listening, both masters as backends, none in rotation
    // yet, so the VIP pays the penalty.
    balance.reconcile(true, &[MASTERS[1]], &ca, Instant::now());
    let serving = balance.serving().expect("running");
    let r = balance.report();
    assert!(
        matches!(r.state, BalancerState::Starting | BalancerState::Serving),
        "{r:?}"
    );
    let backends: Vec<SocketAddr> = r.status.unwrap().backends.iter().map(|b| b.addr).collect();
    assert_eq!(
        backends,
        MASTERS
            .map(|ip| SocketAddr::from((ip, apiserver_port)))
            .to_vec()
    );
    let penalty =
        |s: &tokio::sync::watch::Receiver<usize>| combine(None, 0, Some(*s.borrow())).penalty;

    // Both pass their /readyz (TLS verified against the derived CA).
    wait_until("both backends in rotation", Duration::from_secs(10), || {
        *serving.borrow() == 2
    })
    .await;
    assert_eq!(penalty(&serving), 0);
    balance.reconcile(true, &[MASTERS[1]], &ca, Instant::now());
    assert_eq!(balance.report().state, BalancerState::Serving);

    // A request through the balancer reaches an API server stand-in.
    for _ in 0..4 {
        let out = tokio::task::spawn_blocking({
            let ca_path = ca_path.clone();
            move || {
                Command::new("curl")
                    .args([
                        "--silent",
                        "--show-error",
                        "--fail",
                        "--max-time",
                        "5",
                        "--cacert",
                    ])
                    .arg(&ca_path)
                    .arg(format!("https://127.0.0.1:{listen_port}/readyz"))
                    .output()
                    .unwrap_or_else(|e| {
                        panic!("running curl ({e}): install the Debian package curl")
                    })
            }
        })
        .await
        .unwrap();
        assert!(
            out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "ok",
            "curl through the balancer: {out:?}"
        );
    }
    let st = balance.report().status.unwrap();
    assert_eq!(
        st.backends.iter().map(|b| b.total).sum::<u64>(),
        4,
        "four connections proxied: {st:?}"
    );
    assert!(
        st.backends.iter().all(|b| b.total == 2),
        "spread evenly: {st:?}"
    );

    // The masters list shrinks (the other master left discovery) and
    // comes back: the backend set follows.
    balance.reconcile(true, &[], &ca, Instant::now());
    assert_eq!(balance.report().status.unwrap().backends.len(), 1);
    balance.reconcile(true, &[MASTERS[1]], &ca, Instant::now());
    assert_eq!(balance.report().status.unwrap().backends.len(), 2);
    wait_until(
        "the returning backend back in rotation",
        Duration::from_secs(10),
        || *serving.borrow() == 2,
    )
    .await;

    // One API server dies: out of rotation, still serving.
    servers[1] = None;
    wait_until(
        "the dead backend out of rotation",
        Duration::from_secs(10),
        || *serving.borrow() == 1,
    )
    .await;
    balance.reconcile(true, &[MASTERS[1]], &ca, Instant::now());
    let r = balance.report();
    assert_eq!(r.state, BalancerState::Serving);
    let dead = &r.status.unwrap().backends[1];
    assert_eq!(
        (dead.health, dead.in_rotation),
        (BackendHealth::Down, false)
    );
    assert_eq!(penalty(&serving), 0);

    // Both dead: no backend, and the VIP's priority pays for it.
    servers[0] = None;
    wait_until("no backend in rotation", Duration::from_secs(10), || {
        *serving.borrow() == 0
    })
    .await;
    balance.reconcile(true, &[MASTERS[1]], &ca, Instant::now());
    assert_eq!(balance.report().state, BalancerState::NoBackend);
    assert_eq!(penalty(&serving), BALANCER_WEIGHT);

    // The hand-over runs the VIP release (after the drain; nothing open).
    let released = Arc::new(AtomicBool::new(false));
    let flag = released.clone();
    let start = Instant::now();
    balance
        .hand_over(async move { flag.store(true, Ordering::SeqCst) })
        .await;
    assert!(released.load(Ordering::SeqCst), "the VIP release ran");
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "drained within the bound"
    );
    assert_eq!(balance.report().state, BalancerState::Quiescing);
}
