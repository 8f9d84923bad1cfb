//! A throwaway single-member etcd (Debian's `etcd-server`) on 127.0.0.1
//! with free ports and a temporary data directory, killed and removed on
//! drop (also when a test panics).

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The etcd binary.
pub const ETCD: &str = "/usr/bin/etcd";

/// A running etcd.
pub struct EtcdGuard {
    child: Child,
    /// The client URL (`http://127.0.0.1:<port>`).
    pub client_url: String,
    _dir: tempfile::TempDir,
}

impl Drop for EtcdGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding 127.0.0.1:0 for a free port")
}

/// Starts etcd and waits until it answers; panics (naming the Debian
/// package) when the binary is missing.
pub async fn start_etcd(tag: &str) -> EtcdGuard {
    assert!(
        Path::new(ETCD).exists(),
        "{ETCD} is missing: install the Debian package etcd-server (make deps)"
    );
    let dir = tempfile::tempdir().expect("temporary directory");
    for attempt in 0..5 {
        let (cp, pp) = (free_port(), free_port());
        let client_url = format!("http://127.0.0.1:{cp}");
        let peer_url = format!("http://127.0.0.1:{pp}");
        let name = format!("kubeadm-test-{tag}-{}-{attempt}", std::process::id());
        let child = Command::new(ETCD)
            .arg(format!("--name={name}"))
            .arg(format!(
                "--data-dir={}",
                dir.path().join(format!("d{attempt}")).display()
            ))
            .arg(format!("--listen-client-urls={client_url}"))
            .arg(format!("--advertise-client-urls={client_url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster={name}={peer_url}"))
            .arg("--log-level=error")
            .arg("--logger=zap")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting etcd");
        let mut guard = EtcdGuard {
            child,
            client_url: client_url.clone(),
            _dir: tempfile::tempdir().expect("temporary directory"),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = guard.child.try_wait() {
                break; // port taken between probe and bind: try again
            }
            if let Ok(mut c) = etcd_client::Client::connect([client_url.as_str()], None).await {
                if c.get("probe", None).await.is_ok() {
                    // Keep the data directory alive with the guard.
                    guard._dir = dir;
                    return guard;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        drop(guard);
    }
    panic!("etcd did not start on 127.0.0.1 after 5 attempts");
}

/// A client of `g`.
pub async fn client(g: &EtcdGuard) -> etcd_client::Client {
    etcd_client::Client::connect([g.client_url.as_str()], None)
        .await
        .expect("connecting to the test etcd")
}
