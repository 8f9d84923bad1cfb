//! The certificates work with the real program: a one-member etcd (Debian
//! package `etcd-server`) with client and peer TLS and client-certificate
//! authentication on, queried with `etcdctl` (package `etcd-client`) on
//! loopback ports chosen free at run time.

use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use cluster_config::ClusterSecret;
use pki::{etcd_member_certs, write_cert_file, write_key_file, ClusterPki};

/// Kills and reaps etcd even when the test panics.
struct Etcd(Child);

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn etcdctl(dir: &Path, endpoint: &str, client: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = Command::new("etcdctl");
    cmd.env("ETCDCTL_API", "3")
        .current_dir(dir)
        .arg(format!("--endpoints={endpoint}"))
        .arg("--cacert=ca.crt")
        .arg("--dial-timeout=2s")
        .arg("--command-timeout=3s");
    if let Some(name) = client {
        cmd.arg(format!("--cert={name}.crt"))
            .arg(format!("--key={name}.key"));
    }
    cmd.args(args).output().unwrap_or_else(|e| {
        panic!("running etcdctl failed ({e}): install the Debian package `etcd-client`")
    })
}

#[test]
fn etcd_serves_tls_with_the_derived_ca_and_refuses_strangers() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let secret = ClusterSecret::new("etcd-tls-test-secret-0123456789").unwrap();
    let pki = ClusterPki::derive(&secret, "etcdtest").unwrap();
    let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let certs = etcd_member_certs(&pki.etcd_ca, "m1", &[lo]).unwrap();
    write_cert_file(dir.join("ca.crt"), &pki.etcd_ca.cert_pem).unwrap();
    for (name, issued) in [
        ("server", &certs.server),
        ("peer", &certs.peer),
        ("agent", &certs.agent_client),
        ("apiserver", &certs.apiserver_client),
    ] {
        write_cert_file(dir.join(format!("{name}.crt")), &issued.cert_pem).unwrap();
        write_key_file(dir.join(format!("{name}.key")), &issued.key_pem).unwrap();
    }
    // A client certificate from another cluster's etcd CA.
    let stranger = ClusterPki::derive(
        &ClusterSecret::new("another-cluster-secret-000000").unwrap(),
        "etcdtest",
    )
    .unwrap();
    let stranger_client = etcd_member_certs(&stranger.etcd_ca, "x", &[lo])
        .unwrap()
        .agent_client;
    write_cert_file(dir.join("stranger.crt"), &stranger_client.cert_pem).unwrap();
    write_key_file(dir.join("stranger.key"), &stranger_client.key_pem).unwrap();

    let (client_port, peer_port) = (free_port(), free_port());
    let client_url = format!("https://127.0.0.1:{client_port}");
    let peer_url = format!("https://127.0.0.1:{peer_port}");
    let child = Command::new("etcd")
        .current_dir(dir)
        .args([
            "--name=m1",
            "--data-dir=data",
            &format!("--listen-client-urls={client_url}"),
            &format!("--advertise-client-urls={client_url}"),
            &format!("--listen-peer-urls={peer_url}"),
            &format!("--initial-advertise-peer-urls={peer_url}"),
            &format!("--initial-cluster=m1={peer_url}"),
            "--initial-cluster-state=new",
            "--initial-cluster-token=pki-test",
            "--client-cert-auth",
            "--trusted-ca-file=ca.crt",
            "--cert-file=server.crt",
            "--key-file=server.key",
            "--peer-client-cert-auth",
            "--peer-trusted-ca-file=ca.crt",
            "--peer-cert-file=peer.crt",
            "--peer-key-file=peer.key",
        ])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("etcd.log")).unwrap())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("starting etcd failed ({e}): install the Debian package `etcd-server`")
        });
    let _etcd = Etcd(child);

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = etcdctl(dir, &client_url, Some("agent"), &["endpoint", "health"]);
        if out.status.success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "etcd never became healthy over TLS: {}\netcd log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(dir.join("etcd.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    let put = etcdctl(dir, &client_url, Some("apiserver"), &["put", "k", "v"]);
    assert!(
        put.status.success(),
        "{}",
        String::from_utf8_lossy(&put.stderr)
    );
    let get = etcdctl(
        dir,
        &client_url,
        Some("agent"),
        &["get", "k", "--print-value-only"],
    );
    assert_eq!(String::from_utf8_lossy(&get.stdout).trim(), "v");

    let stranger = etcdctl(dir, &client_url, Some("stranger"), &["get", "k"]);
    assert!(
        !stranger.status.success(),
        "etcd accepted another cluster's client certificate"
    );
    let anonymous = etcdctl(dir, &client_url, None, &["get", "k"]);
    assert!(
        !anonymous.status.success(),
        "etcd accepted a client without a certificate"
    );
}
