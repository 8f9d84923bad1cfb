//! The baked images archive imports into a real containerd (started here
//! with its own root, state and socket) and lists the pinned image.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use imagegen::images;
use imagegen::profile::ImageRef;

/// Kills the containerd started by the test, also on failure.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn ctr(sock: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new("ctr")
        .arg("--address")
        .arg(sock)
        .args(["--namespace", "k8s.io"])
        .args(args)
        .output()
        .expect("ctr is installed (make deps)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn merged_archive_imports_into_containerd() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("images")).unwrap();
    let (tar, digest) = images::tiny_archive("registry.k8s.io/pause:3.9", 1).unwrap();
    std::fs::write(d.join("images/pause.tar"), tar).unwrap();
    let pinned = [ImageRef {
        name: "registry.k8s.io/pause:3.9".into(),
        digest: digest.clone(),
    }];
    let merged = images::collect(d, &pinned, 1704067200).unwrap();
    let archive = d.join("images.oci.tar");
    std::fs::write(&archive, merged).unwrap();

    let config = d.join("config.toml");
    std::fs::write(&config, "version = 2\n").unwrap();
    let sock = d.join("containerd.sock");
    let child = Command::new("containerd")
        .arg("--config")
        .arg(&config)
        .arg("--root")
        .arg(d.join("root"))
        .arg("--state")
        .arg(d.join("state"))
        .arg("--address")
        .arg(&sock)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(d.join("containerd.log")).unwrap())
        .spawn()
        .expect("containerd is installed (make deps)");
    let _daemon = Daemon(child);
    let start = Instant::now();
    while !ctr(&sock, &["version"]).0 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "containerd did not answer: {}",
            std::fs::read_to_string(d.join("containerd.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (ok, out) = ctr(&sock, &["images", "import", archive.to_str().unwrap()]);
    assert!(ok, "import: {out}");
    let (ok, out) = ctr(&sock, &["images", "ls"]);
    assert!(ok, "{out}");
    let line = out
        .lines()
        .find(|l| l.starts_with("registry.k8s.io/pause:3.9 "))
        .unwrap_or_else(|| panic!("pause:3.9 not listed: {out}"));
    assert!(line.contains(&digest), "{line}");
}
