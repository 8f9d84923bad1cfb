//! The `/readyz` probe and the API client against a real TLS server:
//! `openssl s_server -WWW` serving files (`readyz`, `api/v1/nodes`, ...)
//! from a temporary directory, with a serving certificate from the derived
//! Kubernetes CA for 127.0.0.1, and (for the Node reads) requiring a
//! client certificate from that CA, as the API server does.

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kubeadm::kubeapi::{ApiClient, ApiError};
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
    serve_files(ca, &[("readyz", body)], false)
}

/// Serves `files` (path, content); `client_auth`: require a client
/// certificate signed by `ca`.
fn serve_files(ca: &pki::Ca, files: &[(&str, &str)], client_auth: bool) -> Server {
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
    for (path, body) in files {
        let p = dir.path().join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, body).unwrap();
    }
    std::fs::write(dir.path().join("client-ca.pem"), &ca.cert_pem).unwrap();
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
        .args(if client_auth {
            &[
                "-Verify",
                "1",
                "-verify_return_error",
                "-CAfile",
                "client-ca.pem",
            ][..]
        } else {
            &[][..]
        })
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

fn client_cert(ca: &pki::Ca, cn: &str) -> pki::Issued {
    ca.issue(&pki::LeafRequest {
        common_name: cn.into(),
        dns_names: vec![],
        ips: vec![],
        usage: pki::Usage::Client,
        organization: Some("system:nodes".into()),
    })
    .unwrap()
}

const NODE: &str = r#"{"kind":"Node","apiVersion":"v1","metadata":{"name":"worker-1"},
"spec":{"podCIDR":"10.244.3.0/24"},
"status":{"addresses":[{"type":"InternalIP","address":"10.77.0.21"}],
"conditions":[{"type":"Ready","status":"True"}]}}"#;

/// The API client presents the kubeconfig's client certificate (the
/// server refuses a client without one, or with another cluster's), trusts
/// only the derived CA, and reads a Node and the Node list.
#[tokio::test]
async fn the_api_client_reads_nodes_with_the_kubeconfigs_certificate() {
    use base64::Engine as _;
    let cluster =
        pki::ClusterPki::derive(&secret("apiclient-test-secret-01234"), "kubeboot").unwrap();
    let ca = &cluster.kubernetes_ca;
    let t = Duration::from_secs(5);
    let list = format!(r#"{{"kind":"NodeList","apiVersion":"v1","items":[{NODE}]}}"#);
    let one = serve_files(ca, &[("api/v1/nodes/worker-1", NODE)], true);
    let all = serve_files(ca, &[("api/v1/nodes", &list)], true);

    // A kubeconfig as kubeadm writes it (embedded data), re-rooted files.
    let dir = tempfile::tempdir().unwrap();
    let paths = kubeadm::paths::Paths::under(dir.path());
    let cert = client_cert(ca, "system:node:worker-1");
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let kubeconfig = |port: u16, c: &pki::Issued| {
        let path = dir.path().join(format!("kubelet-{port}.conf"));
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    server: https://127.0.0.1:{port}\n  name: k\n\
                 users:\n- name: u\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\n",
                b64(&c.cert_pem),
                b64(&c.key_pem)
            ),
        )
        .unwrap();
        path
    };
    let api = ApiClient::from_kubeconfig(
        &kubeconfig(one.port, &cert),
        &paths,
        ca.cert_pem.as_bytes(),
        None,
        t,
    )
    .unwrap();
    assert_eq!(api.server(), format!("https://127.0.0.1:{}", one.port));
    let node = api.node("worker-1").await.unwrap().expect("the node");
    assert_eq!(node.pod_cidr.as_deref(), Some("10.244.3.0/24"));
    assert_eq!(node.internal_ip, Some("10.77.0.21".parse().unwrap()));
    assert_eq!(node.ready, Some(true));
    let api = ApiClient::from_kubeconfig(
        &kubeconfig(all.port, &cert),
        &paths,
        ca.cert_pem.as_bytes(),
        None,
        t,
    )
    .unwrap();
    let nodes = api.nodes().await.unwrap();
    assert_eq!(nodes.len(), 1);
    assert_eq!(nodes[0].name, "worker-1");

    // No client certificate: the server refuses the handshake.
    let anonymous = ApiClient::new(
        &format!("https://127.0.0.1:{}", one.port),
        ca.cert_pem.as_bytes(),
        None,
        t,
    )
    .unwrap();
    assert!(matches!(
        anonymous.node("worker-1").await,
        Err(ApiError::Request { .. })
    ));
    // Another cluster's client certificate: refused too.
    let other = pki::ClusterPki::derive(&secret("another-cluster-secret-987"), "kubeboot").unwrap();
    let stranger = client_cert(&other.kubernetes_ca, "system:node:worker-1");
    let api = ApiClient::from_kubeconfig(
        &kubeconfig(one.port, &stranger),
        &paths,
        ca.cert_pem.as_bytes(),
        None,
        t,
    )
    .unwrap();
    assert!(api.node("worker-1").await.is_err());
    // A server the cluster CA did not sign is not trusted, whatever the
    // client presents.
    let impostor = serve_files(
        &other.kubernetes_ca,
        &[("api/v1/nodes/worker-1", NODE)],
        false,
    );
    let api = ApiClient::from_kubeconfig(
        &kubeconfig(impostor.port, &cert),
        &paths,
        ca.cert_pem.as_bytes(),
        None,
        t,
    )
    .unwrap();
    match api.node("worker-1").await {
        Err(ApiError::Request { reason, .. }) => {
            assert!(reason.to_lowercase().contains("certificate"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    // What is not a Node (s_server answers a missing file with text).
    let api = ApiClient::from_kubeconfig(
        &kubeconfig(one.port, &cert),
        &paths,
        ca.cert_pem.as_bytes(),
        None,
        t,
    )
    .unwrap();
    assert!(matches!(
        api.node("worker-2").await,
        Err(ApiError::Decode { .. })
    ));
    // The server can be overridden (a master reads through its own API
    // server with admin.conf, whose server is the VIP).
    let api = ApiClient::from_kubeconfig(
        &kubeconfig(9, &cert),
        &paths,
        ca.cert_pem.as_bytes(),
        Some(&format!("https://127.0.0.1:{}", all.port)),
        t,
    )
    .unwrap();
    assert_eq!(api.nodes().await.unwrap().len(), 1);
}
