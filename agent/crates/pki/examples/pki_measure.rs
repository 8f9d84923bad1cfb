//! Prints how long deriving the cluster PKI and issuing an etcd member's
//! certificates take: `cargo run --release -p pki --example pki_measure`.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use cluster_config::ClusterSecret;
use pki::{derive_service_account, etcd_member_certs, ClusterPki};

fn main() {
    let secret = match ClusterSecret::new("measure-secret-0123456789abcdef") {
        Ok(s) => s,
        Err(e) => return eprintln!("{e}"),
    };
    let runs = 20u32;
    let t = Instant::now();
    let mut pki = None;
    for _ in 0..runs {
        pki = ClusterPki::derive(&secret, "kubeboot").ok();
    }
    let derive_ms = t.elapsed().as_secs_f64() * 1e3 / f64::from(runs);
    let Some(pki) = pki else {
        return eprintln!("derivation failed");
    };
    let t = Instant::now();
    for _ in 0..runs {
        if let Err(e) = etcd_member_certs(
            &pki.etcd_ca,
            "master-1",
            &[IpAddr::V4(Ipv4Addr::new(10, 77, 0, 11))],
        ) {
            return eprintln!("{e}");
        }
    }
    let issue_ms = t.elapsed().as_secs_f64() * 1e3 / f64::from(runs);
    let sa_runs = 5u32;
    let t = Instant::now();
    for _ in 0..sa_runs {
        if let Err(e) = derive_service_account(&secret, "kubeboot") {
            return eprintln!("{e}");
        }
    }
    let sa_ms = t.elapsed().as_secs_f64() * 1e3 / f64::from(sa_runs);
    println!(
        "ClusterPki::derive: {derive_ms:.2} ms; etcd_member_certs (4 leaves): {issue_ms:.2} ms; \
         derive_service_account (RSA 2048): {sa_ms:.1} ms"
    );
    println!("kubernetes CA pin: {}", pki.kubernetes_ca.spki_pin());
}
