//! Helpers shared by the payload's integration tests: a private containerd
//! (its own config, root, state and socket under a test directory, killed
//! on drop) and the `ctr` calls the tests make against it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Kills a daemon started by a test, also on failure.
pub struct Daemon(pub Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A containerd of the test's own, answering on its socket.
pub struct Containerd {
    sock: PathBuf,
    _daemon: Daemon,
}

impl Containerd {
    /// Starts containerd with everything below `dir` and waits (30 s at
    /// most) until `ctr version` answers.
    pub fn start(dir: &Path) -> Containerd {
        let config = dir.join("containerd.toml");
        std::fs::write(&config, "version = 2\n").unwrap();
        let sock = dir.join("containerd.sock");
        let log = dir.join("containerd.log");
        let child = Command::new("containerd")
            .arg("--config")
            .arg(&config)
            .arg("--root")
            .arg(dir.join("root"))
            .arg("--state")
            .arg(dir.join("state"))
            .arg("--address")
            .arg(&sock)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("containerd is installed (Makefile APT_PACKAGES)");
        let containerd = Containerd {
            sock,
            _daemon: Daemon(child),
        };
        let start = Instant::now();
        while !containerd.ctr(&["version"]).0 {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "containerd did not answer: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        containerd
    }

    /// `ctr` in the `k8s.io` namespace (the kubelet's): success and
    /// stdout+stderr.
    fn ctr(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new("ctr")
            .arg("--address")
            .arg(&self.sock)
            .args(["--namespace", "k8s.io"])
            .args(args)
            .output()
            .expect("ctr is installed (Makefile APT_PACKAGES)");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    /// `ctr images import <archive>` the way the agent imports (without
    /// `--all-platforms`), then asserts `ctr images ls` lists each `name`
    /// with its `digest`.
    pub fn import_and_expect(&self, archive: &Path, images: &[(&str, &str)]) {
        let (ok, out) = self.ctr(&["images", "import", archive.to_str().unwrap()]);
        assert!(ok, "import: {out}");
        let (ok, out) = self.ctr(&["images", "ls"]);
        assert!(ok, "{out}");
        for (name, digest) in images {
            let line = out
                .lines()
                .find(|l| l.starts_with(&format!("{name} ")))
                .unwrap_or_else(|| panic!("{name} not listed: {out}"));
            assert!(line.contains(digest), "{line}");
        }
    }
}
