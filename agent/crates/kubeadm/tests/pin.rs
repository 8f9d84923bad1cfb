//! The CA pin against openssl: `openssl x509 -pubkey -noout |
//! openssl pkey -pubin -outform der | sha256sum` over the derived CA.

use std::io::Write;
use std::process::{Command, Stdio};

fn openssl(args: &[&str], input: &[u8]) -> Vec<u8> {
    pipe("openssl", args, input)
}

fn pipe(program: &str, args: &[&str], input: &[u8]) -> Vec<u8> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "running {program} ({e}): install the Debian package openssl/coreutils (make deps)"
            )
        });
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{program} {args:?} failed");
    out.stdout
}

#[test]
fn pin_matches_openssl_for_every_derived_ca() {
    let secret = cluster_config::ClusterSecret::new("a-test-cluster-secret-0123").unwrap();
    let cluster = pki::ClusterPki::derive(&secret, "kubeboot").unwrap();
    for ca in [
        &cluster.kubernetes_ca,
        &cluster.etcd_ca,
        &cluster.front_proxy_ca,
    ] {
        let pubkey = openssl(&["x509", "-pubkey", "-noout"], ca.cert_pem.as_bytes());
        let der = openssl(&["pkey", "-pubin", "-outform", "der"], &pubkey);
        let digest = pipe("sha256sum", &[], &der);
        let hex = String::from_utf8(digest).unwrap();
        let hex = hex.split_whitespace().next().unwrap().to_owned();
        let pin = kubeadm::CaPin::of(ca);
        assert_eq!(pin.as_str(), format!("sha256:{hex}"));
        // And the checked parser accepts what openssl computed.
        assert_eq!(
            kubeadm::CaPin::parse(&format!("sha256:{hex}"), "openssl").unwrap(),
            pin
        );
    }
    // Different CAs, different pins.
    assert_ne!(
        kubeadm::CaPin::of(&cluster.kubernetes_ca),
        kubeadm::CaPin::of(&cluster.etcd_ca)
    );
}
