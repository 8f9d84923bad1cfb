//! PKI behaviour checked with real X.509 verifiers: rustls-webpki (chains,
//! key usage, SANs) and the `openssl` command (Debian package `openssl`).

use std::fs;
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use cluster_config::ClusterSecret;
use pki::{
    derive_service_account, etcd_member_certs, etcd_member_certs_at, write_cert_file,
    write_key_file, ClusterPki, LeafRequest, Usage,
};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use time::OffsetDateTime;
use webpki::{anchor_from_trusted_cert, EndEntityCert, KeyUsage};

const SECRET: &str = "correct-horse-battery-staple-0123";

fn secret(s: &str) -> ClusterSecret {
    ClusterSecret::new(s).unwrap()
}

fn der(pem_text: &str) -> Vec<u8> {
    let (label, doc) = p256::pkcs8::der::Document::from_pem(pem_text).unwrap();
    assert_eq!(label, "CERTIFICATE");
    doc.as_bytes().to_vec()
}

fn openssl(args: &[&str], dir: &Path) -> std::process::Output {
    Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!("running openssl failed ({e}): install the Debian package `openssl`")
        })
}

fn webpki_verify(ca_pem: &str, leaf_pem: &str, usage: KeyUsage) -> Result<(), webpki::Error> {
    let ca_der = CertificateDer::from(der(ca_pem));
    let anchor = anchor_from_trusted_cert(&ca_der).unwrap();
    let leaf_der = CertificateDer::from(der(leaf_pem));
    let leaf = EndEntityCert::try_from(&leaf_der).unwrap();
    leaf.verify_for_usage(
        &[webpki::ring::ECDSA_P256_SHA256],
        &[anchor],
        &[],
        UnixTime::now(),
        usage,
        None,
        None,
    )
    .map(|_| ())
}

fn valid_for(leaf_pem: &str, name: &str) -> bool {
    let leaf_der = CertificateDer::from(der(leaf_pem));
    let leaf = EndEntityCert::try_from(&leaf_der).unwrap();
    let server_name = ServerName::try_from(name.to_owned()).unwrap();
    leaf.verify_is_valid_for_subject_name(&server_name).is_ok()
}

#[test]
fn derivation_is_deterministic_and_secret_bound() {
    let a = ClusterPki::derive(&secret(SECRET), "prod").unwrap();
    let b = ClusterPki::derive(&secret(SECRET), "prod").unwrap();
    for (x, y) in [
        (&a.kubernetes_ca, &b.kubernetes_ca),
        (&a.etcd_ca, &b.etcd_ca),
        (&a.front_proxy_ca, &b.front_proxy_ca),
    ] {
        assert_eq!(
            x.cert_pem, y.cert_pem,
            "CA certificates must be byte-identical"
        );
        assert_eq!(x.key_pem, y.key_pem);
        assert_eq!(x.spki_pin(), y.spki_pin());
    }
    let sa = derive_service_account(&secret(SECRET), "prod").unwrap();
    assert_eq!(sa, derive_service_account(&secret(SECRET), "prod").unwrap());

    // The three CAs and the SA key are distinct keys.
    let pins = [
        a.kubernetes_ca.spki_pin(),
        a.etcd_ca.spki_pin(),
        a.front_proxy_ca.spki_pin(),
    ];
    assert_ne!(pins[0], pins[1]);
    assert_ne!(pins[1], pins[2]);
    assert_ne!(pins[0], pins[2]);

    let other_secret =
        ClusterPki::derive(&secret("correct-horse-battery-staple-0124"), "prod").unwrap();
    let other_name = ClusterPki::derive(&secret(SECRET), "staging").unwrap();
    for other in [&other_secret, &other_name] {
        assert_ne!(a.etcd_ca.key_pem, other.etcd_ca.key_pem);
        assert_ne!(a.etcd_ca.cert_pem, other.etcd_ca.cert_pem);
        assert_ne!(a.kubernetes_ca.spki_pin(), other.kubernetes_ca.spki_pin());
    }
    for (s, name) in [
        ("correct-horse-battery-staple-0124", "prod"),
        (SECRET, "staging"),
    ] {
        let other = derive_service_account(&secret(s), name).unwrap();
        assert_ne!(sa.private_pem, other.private_pem);
        assert_ne!(sa.public_pem, other.public_pem);
    }
    // Debug output never shows a private key.
    assert!(!format!("{a:?}").contains("PRIVATE KEY"));
}

#[test]
fn ca_certificate_fields_are_fixed() {
    let pki = ClusterPki::derive(&secret(SECRET), "prod").unwrap();
    let der = der(&pki.etcd_ca.cert_pem);
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    assert!(cert.is_ca());
    assert_eq!(
        cert.validity().not_before.to_datetime(),
        time::macros::datetime!(2025-01-01 0:00 UTC)
    );
    assert_eq!(
        cert.validity().not_after.to_datetime(),
        time::macros::datetime!(2035-01-01 0:00 UTC)
    );
    assert_eq!(cert.subject().to_string(), "CN=etcd-ca, OU=prod");
    assert_eq!(cert.raw_serial().len(), 16);
    assert!(cert.key_usage().unwrap().unwrap().value.key_cert_sign());
    // Self-signed with a valid signature.
    use p256::ecdsa::signature::Verifier;
    let vk = p256::ecdsa::VerifyingKey::from_sec1_bytes(&cert.public_key().subject_public_key.data)
        .unwrap();
    let sig = p256::ecdsa::Signature::from_der(&cert.signature_value.data).unwrap();
    vk.verify(cert.tbs_certificate.as_ref(), &sig).unwrap();
}

#[test]
fn leaves_from_one_master_verify_against_the_ca_derived_on_another() {
    // Master A issues; master B derived its CA independently.
    let master_a = ClusterPki::derive(&secret(SECRET), "prod").unwrap();
    let master_b = ClusterPki::derive(&secret(SECRET), "prod").unwrap();
    let ips: Vec<IpAddr> = vec![IpAddr::V4(Ipv4Addr::new(10, 77, 0, 11))];
    let certs = etcd_member_certs(&master_a.etcd_ca, "master-1", &ips).unwrap();

    let ca = &master_b.etcd_ca.cert_pem;
    webpki_verify(ca, &certs.server.cert_pem, KeyUsage::server_auth()).unwrap();
    webpki_verify(ca, &certs.peer.cert_pem, KeyUsage::server_auth()).unwrap();
    webpki_verify(ca, &certs.peer.cert_pem, KeyUsage::client_auth()).unwrap();
    webpki_verify(ca, &certs.agent_client.cert_pem, KeyUsage::client_auth()).unwrap();
    webpki_verify(
        ca,
        &certs.apiserver_client.cert_pem,
        KeyUsage::client_auth(),
    )
    .unwrap();
    // A client certificate is not a server certificate.
    assert!(webpki_verify(
        ca,
        &certs.apiserver_client.cert_pem,
        KeyUsage::server_auth()
    )
    .is_err());
    // Another cluster's CA does not accept these leaves.
    let stranger = ClusterPki::derive(&secret("someone-else-entirely-0000"), "prod").unwrap();
    assert!(webpki_verify(
        &stranger.etcd_ca.cert_pem,
        &certs.server.cert_pem,
        KeyUsage::server_auth()
    )
    .is_err());
    // Nor does the Kubernetes CA of the same cluster.
    assert!(webpki_verify(
        &master_b.kubernetes_ca.cert_pem,
        &certs.server.cert_pem,
        KeyUsage::server_auth()
    )
    .is_err());
}

#[test]
fn sans_name_the_node() {
    let pki = ClusterPki::derive(&secret(SECRET), "prod").unwrap();
    let ips: Vec<IpAddr> = vec![
        IpAddr::V4(Ipv4Addr::new(10, 77, 0, 11)),
        IpAddr::V4(Ipv4Addr::new(192, 168, 5, 2)),
    ];
    let certs = etcd_member_certs(&pki.etcd_ca, "master-1", &ips).unwrap();
    for name in [
        "master-1",
        "localhost",
        "127.0.0.1",
        "::1",
        "10.77.0.11",
        "192.168.5.2",
    ] {
        assert!(
            valid_for(&certs.server.cert_pem, name),
            "server cert lacks {name}"
        );
    }
    for name in ["master-1", "10.77.0.11", "192.168.5.2"] {
        assert!(
            valid_for(&certs.peer.cert_pem, name),
            "peer cert lacks {name}"
        );
    }
    for name in ["master-2", "10.77.0.12"] {
        assert!(
            !valid_for(&certs.server.cert_pem, name),
            "server cert must not name {name}"
        );
    }
    assert!(
        !valid_for(&certs.peer.cert_pem, "127.0.0.1"),
        "peer cert must not name loopback"
    );
    // Subjects as etcd and kube-apiserver expect them.
    let der_client = der(&certs.apiserver_client.cert_pem);
    let (_, client) = x509_parser::parse_x509_certificate(&der_client).unwrap();
    assert_eq!(
        client.subject().to_string(),
        "CN=kube-apiserver-etcd-client"
    );
    assert!(!client.is_ca());
}

#[test]
fn leaf_keys_are_random_per_issue() {
    let pki = ClusterPki::derive(&secret(SECRET), "prod").unwrap();
    let a = etcd_member_certs(&pki.etcd_ca, "m", &[]).unwrap();
    let b = etcd_member_certs(&pki.etcd_ca, "m", &[]).unwrap();
    assert_ne!(a.server.key_pem, b.server.key_pem);
    assert_ne!(a.peer.key_pem, a.server.key_pem);
    assert!(!format!("{a:?}").contains("PRIVATE KEY"));
}

#[test]
fn leaf_validity_is_clamped_and_checked() {
    let pki = ClusterPki::derive(&secret(SECRET), "prod").unwrap();
    // Near the CA's end, the leaf ends with the CA.
    let late = time::macros::datetime!(2034-12-01 0:00 UTC);
    let certs = etcd_member_certs_at(&pki.etcd_ca, "m", &[], late).unwrap();
    let d = der(&certs.peer.cert_pem);
    let (_, cert) = x509_parser::parse_x509_certificate(&d).unwrap();
    assert_eq!(
        cert.validity().not_after.to_datetime(),
        time::macros::datetime!(2035-01-01 0:00 UTC)
    );
    // After the CA's end: refused with a reason.
    let err = etcd_member_certs_at(
        &pki.etcd_ca,
        "m",
        &[],
        time::macros::datetime!(2036-01-01 0:00 UTC),
    )
    .unwrap_err();
    assert!(err.to_string().contains("not valid"), "{err}");
    // A non-ASCII DNS name is refused, naming the certificate.
    let req = LeafRequest {
        common_name: "bad".into(),
        dns_names: vec!["bäd".into()],
        ips: vec![],
        usage: Usage::Server,
        organization: None,
    };
    let err = pki
        .etcd_ca
        .issue_at(&req, OffsetDateTime::now_utc())
        .unwrap_err();
    assert!(err.to_string().contains("\"bad\""), "{err}");
}

#[test]
fn openssl_verifies_chains_hosts_and_keys() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pki = ClusterPki::derive(&secret(SECRET), "prod").unwrap();
    let ips: Vec<IpAddr> = vec![IpAddr::V4(Ipv4Addr::new(10, 77, 0, 11))];
    let certs = etcd_member_certs(&pki.etcd_ca, "master-1", &ips).unwrap();
    write_cert_file(d.join("ca.crt"), &pki.etcd_ca.cert_pem).unwrap();
    write_key_file(d.join("ca.key"), &pki.etcd_ca.key_pem).unwrap();
    write_cert_file(d.join("server.crt"), &certs.server.cert_pem).unwrap();
    write_key_file(d.join("server.key"), &certs.server.key_pem).unwrap();
    write_cert_file(d.join("client.crt"), &certs.apiserver_client.cert_pem).unwrap();
    let sa = derive_service_account(&secret(SECRET), "prod").unwrap();
    write_key_file(d.join("sa.key"), &sa.private_pem).unwrap();
    fs::write(d.join("sa.pub"), &sa.public_pem).unwrap();

    for key in ["ca.key", "server.key", "sa.key"] {
        let mode = fs::metadata(d.join(key)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{key}");
    }
    assert_eq!(
        fs::metadata(d.join("ca.crt")).unwrap().permissions().mode() & 0o777,
        0o644
    );

    let ok = |args: &[&str]| {
        let out = openssl(args, d);
        assert!(
            out.status.success(),
            "openssl {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    ok(&[
        "verify",
        "-CAfile",
        "ca.crt",
        "-purpose",
        "sslserver",
        "server.crt",
    ]);
    ok(&[
        "verify",
        "-CAfile",
        "ca.crt",
        "-purpose",
        "sslclient",
        "client.crt",
    ]);
    ok(&[
        "verify",
        "-CAfile",
        "ca.crt",
        "-purpose",
        "sslserver",
        "-verify_hostname",
        "master-1",
        "server.crt",
    ]);
    ok(&[
        "verify",
        "-CAfile",
        "ca.crt",
        "-purpose",
        "sslserver",
        "-verify_ip",
        "127.0.0.1",
        "server.crt",
    ]);
    ok(&[
        "verify",
        "-CAfile",
        "ca.crt",
        "-purpose",
        "sslserver",
        "-verify_ip",
        "10.77.0.11",
        "server.crt",
    ]);
    let wrong_host = openssl(
        &[
            "verify",
            "-CAfile",
            "ca.crt",
            "-verify_hostname",
            "master-2",
            "server.crt",
        ],
        d,
    );
    assert!(
        !wrong_host.status.success(),
        "openssl accepted a wrong host name"
    );
    let wrong_purpose = openssl(
        &[
            "verify",
            "-CAfile",
            "ca.crt",
            "-purpose",
            "sslserver",
            "client.crt",
        ],
        d,
    );
    assert!(
        !wrong_purpose.status.success(),
        "openssl accepted a client cert as server"
    );

    // The keys parse and match: the CA key's public half is the cert's.
    let ca_pub_from_key = ok(&["pkey", "-in", "ca.key", "-pubout"]);
    let ca_pub_from_cert = ok(&["x509", "-in", "ca.crt", "-noout", "-pubkey"]);
    assert_eq!(ca_pub_from_key, ca_pub_from_cert);
    let sa_pub = ok(&["pkey", "-in", "sa.key", "-pubout"]);
    assert_eq!(sa_pub, sa.public_pem);
    // kubeadm before 1.25 loads only RSA for sa.key: a consistent 2048-bit
    // RSA key, PKCS#1 as kubeadm writes it.
    assert!(sa
        .private_pem
        .starts_with("-----BEGIN RSA PRIVATE KEY-----\n"));
    assert!(sa.public_pem.starts_with("-----BEGIN PUBLIC KEY-----\n"));
    let check = ok(&["rsa", "-in", "sa.key", "-check", "-noout"]);
    assert!(check.contains("RSA key ok"), "{check}");
    let text = ok(&["rsa", "-in", "sa.key", "-noout", "-text"]);
    assert!(text.contains("Private-Key: (2048 bit, 2 primes)"), "{text}");
    ok(&["ec", "-in", "server.key", "-check", "-noout"]);
}

#[test]
fn spki_pin_matches_openssl_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    let pki = ClusterPki::derive(&secret(SECRET), "prod").unwrap();
    fs::write(dir.path().join("ca.crt"), &pki.kubernetes_ca.cert_pem).unwrap();
    // kubeadm's documented recipe for --discovery-token-ca-cert-hash.
    let out = Command::new("sh")
        .arg("-c")
        .arg("openssl x509 -pubkey -in ca.crt | openssl pkey -pubin -outform der | sha256sum")
        .current_dir(dir.path())
        .output()
        .expect("sh");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let hex = stdout
        .split_whitespace()
        .next()
        .expect("install the Debian package `openssl`");
    assert_eq!(pki.kubernetes_ca.spki_pin(), format!("sha256:{hex}"));
}

/// The derived service-account key is pinned: its derivation runs the
/// `rsa` crate's prime search on a seeded generator, so another version
/// of `rsa` (or of `num-bigint-dig`) could derive another key from the
/// same secret, and masters running different agent builds would then
/// disagree on `sa.key` (tokens signed by one would not verify on
/// another). If this fails after a dependency update, the update changed
/// the derivation: keep the old version or bump the derivation's label.
#[test]
fn service_account_key_is_pinned() {
    use sha2::{Digest, Sha256};
    let sa = derive_service_account(&secret(SECRET), "prod").unwrap();
    let hash = hex::encode(Sha256::digest(sa.public_pem.as_bytes()));
    assert_eq!(hash, GOLDEN_SA_PUB_SHA256, "{}", sa.public_pem);
}

const GOLDEN_SA_PUB_SHA256: &str =
    "ae2846c117867334686f433beffd70dbac51e725077ce47c80c81954c6fbc241";
