//! The `/readyz` probe against a real TLS server: `openssl s_server -WWW`
//! serving a file named `readyz` from a temporary directory, with a
//! serving certificate from the derived Kubernetes CA for 127.0.0.1.

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kubeadm::phase::ApiHealth;
use kubeadm::probe::ReadyzCheck;

struct Server {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(ca: &pki::Ca, body: &str) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let leaf = ca
        .issue(&pki::LeafRequest {
            common_name: "kube-apiserver".into(),
            dns_names: vec!["localhost".into()],
            ips: vec!["127.0.0.1".parse().unwrap()],
            usage: pki::Usage::Server,
            organization: None,
        })
        .unwrap();
    std::fs::write(dir.path().join("cert.pem"), &leaf.cert_pem).unwrap();
    std::fs::write(dir.path().join("key.pem"), &leaf.key_pem).unwrap();
    std::fs::write(dir.path().join("readyz"), body).unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("openssl")
        .current_dir(dir.path())
        .args(["s_server", "-quiet", "-WWW", "-accept"])
        .arg(format!("127.0.0.1:{port}"))
        .args(["-cert", "cert.pem", "-key", "key.pem"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("running openssl s_server ({e}): install the Debian package openssl")
        });
    let server = Server {
        child,
        port,
        _dir: dir,
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "openssl s_server did not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    server
}

fn secret(s: &str) -> cluster_config::ClusterSecret {
    cluster_config::ClusterSecret::new(s).unwrap()
}

#[tokio::test]
async fn readyz_is_ready_only_with_ok_from_a_server_the_cluster_ca_signed() {
    let cluster =
        pki::ClusterPki::derive(&secret("readyz-test-secret-0123456"), "kubeboot").unwrap();
    let ca = &cluster.kubernetes_ca;
    let t = Duration::from_secs(5);

    let ok = serve(ca, "ok");
    let check = ReadyzCheck::local(ok.port, ca.cert_pem.as_bytes(), t).unwrap();
    assert_eq!(check.check().await, ApiHealth::Ready);

    // A server whose certificate another cluster's CA signed is not ours.
    let other = pki::ClusterPki::derive(&secret("another-cluster-secret-987"), "kubeboot").unwrap();
    let impostor = serve(&other.kubernetes_ca, "ok");
    let check = ReadyzCheck::local(impostor.port, ca.cert_pem.as_bytes(), t).unwrap();
    assert!(matches!(check.check().await, ApiHealth::NotReady { .. }));

    // Answers, but not ready.
    let failing = serve(ca, "[-]etcd failed: reason withheld\nreadyz check failed");
    let check = ReadyzCheck::local(failing.port, ca.cert_pem.as_bytes(), t).unwrap();
    match check.check().await {
        ApiHealth::NotReady { reason } => assert!(reason.contains("etcd failed"), "{reason}"),
        other => panic!("{other:?}"),
    }

    // Nothing listening.
    let port = failing.port;
    drop(failing);
    let check = ReadyzCheck::local(port, ca.cert_pem.as_bytes(), t).unwrap();
    assert!(matches!(check.check().await, ApiHealth::NotReady { .. }));
}
