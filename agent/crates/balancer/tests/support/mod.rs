//! Helpers shared by `tests/netns.rs` and `benches/haproxy.rs` (both
//! include this file with `#[path]`), on top of the VRRP tests' lab.
#![allow(dead_code)]

use std::fs::File;
use std::net::IpAddr;
use std::os::fd::AsRawFd;

use crate::common::{Lab, VIP_ADDR};

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
