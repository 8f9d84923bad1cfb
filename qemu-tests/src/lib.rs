//! QEMU (TCG) harness for kubeboot's end-to-end tests.
//!
//! [`Vm::start`] boots a kernel + initramfs by direct kernel boot with
//! optional data disks and systemd credentials passed as SMBIOS type 11
//! strings, and copies the serial console into a log file under
//! `target/qemu-logs/` while keeping it in memory for [`Vm::wait_for`].
//! Dropping a [`Vm`] kills QEMU.
//!
//! The guest answers the tests without any login: the images carry
//! `kubeboot-selftest.service`, which runs only when the `kubeboot.selftest`
//! credential is present and prints `KUBEBOOT-SELFTEST key=value` lines on
//! the console; [`SelfTestReport`] parses them.
//!
//! Nothing is skipped silently: a missing program fails with the Debian
//! package that provides it, missing images fail naming `make image`.
#![warn(missing_docs)]

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use thiserror::Error;

pub mod cluster;
pub mod net;
pub mod oci;
pub mod proc;
pub mod status;

/// Prefix of the self-test report lines.
pub const SELFTEST_PREFIX: &str = "KUBEBOOT-SELFTEST ";
/// Name of the credential that turns the self-test on.
pub const SELFTEST_CREDENTIAL: &str = "kubeboot.selftest";
/// Environment variable naming the images directory (default `<workspace>/out`).
pub const IMAGES_ENV: &str = "KUBEBOOT_IMAGES";

/// Harness errors; each says what to do about it.
#[derive(Debug, Error)]
pub enum HarnessError {
    /// A program is not installed.
    #[error("{program} not found: install the Debian package {package} (make deps)")]
    MissingProgram {
        /// The program.
        program: String,
        /// The Debian package providing it.
        package: String,
    },
    /// An image file is missing.
    #[error("image file {} is missing: run `make image` first (or set {IMAGES_ENV})", path.display())]
    MissingImage {
        /// The missing file.
        path: PathBuf,
    },
    /// QEMU could not be started.
    #[error("starting {program}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        source: std::io::Error,
    },
    /// A file operation failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A command failed.
    #[error("{command} failed: {detail}")]
    Command {
        /// The command line.
        command: String,
        /// Its stderr or status.
        detail: String,
    },
    /// A pattern did not appear on the console in time.
    #[error("timed out after {}s waiting for {pattern:?} on the console; log: {}", waited.as_secs(), log.display())]
    Timeout {
        /// The pattern.
        pattern: String,
        /// How long we waited.
        waited: Duration,
        /// The console log.
        log: PathBuf,
    },
    /// A cluster state file is missing or does not parse.
    #[error("cluster state {}: {reason}", path.display())]
    State {
        /// The state file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A cluster condition did not hold in time.
    #[error("timed out after {}s waiting for {what}\nnodes:\n{nodes}\nlogs:\n{}", waited.as_secs(), logs.iter().map(|p| format!("  {}", p.display())).collect::<Vec<_>>().join("\n"))]
    Wait {
        /// The condition.
        what: String,
        /// How long we waited.
        waited: Duration,
        /// Every node's last status, one line each.
        nodes: String,
        /// Console logs and status streams.
        logs: Vec<PathBuf>,
    },
    /// No node of that name in the cluster.
    #[error("no node named {0:?} in this cluster")]
    UnknownNode(String),
    /// The cluster secret or the PKI derived from it is unusable.
    #[error("cluster PKI: {0}")]
    Pki(String),
    /// QEMU exited while we waited for a pattern.
    #[error("QEMU exited ({status}) while waiting for {pattern:?}; log: {}", log.display())]
    Exited {
        /// The pattern.
        pattern: String,
        /// Exit status.
        status: String,
        /// The console log.
        log: PathBuf,
    },
}

/// The workspace root (parent of this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Where console logs go: `<workspace>/target/qemu-logs/`.
pub fn logs_dir() -> PathBuf {
    workspace_root().join("target").join("qemu-logs")
}

/// Finds `program` on `PATH`, or fails naming the Debian `package`.
pub fn require_program(program: &str, package: &str) -> Result<PathBuf, HarnessError> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
        .ok_or_else(|| HarnessError::MissingProgram {
            program: program.to_owned(),
            package: package.to_owned(),
        })
}

/// A built image: kernel, initramfs and its manifest.
#[derive(Debug, Clone)]
pub struct Image {
    /// `vmlinuz`.
    pub kernel: PathBuf,
    /// `initramfs.img`.
    pub initrd: PathBuf,
    /// Kernel command line from the manifest (`console=ttyS0` when absent).
    pub cmdline: String,
    /// What the manifest says about the Kubernetes components.
    pub kubernetes: ImageKubernetes,
}

/// The `kubernetes` record of an image's `manifest.json` (imagegen writes
/// the same into the image's `/usr/lib/kubeboot/kubernetes.toml`, which
/// the agent reads). Tolerant: absent fields are defaulted.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(default)]
pub struct ImageKubernetes {
    /// kubelet, kubeadm and kubectl are in the image.
    pub present: bool,
    /// Why they are not (`present = false`): the agent's kube phase
    /// reports itself skipped with exactly this reason.
    pub reason: Option<String>,
    /// The Kubernetes version.
    pub version: Option<String>,
    /// The OCI archive of control-plane images in the image (imported
    /// into containerd before kubeadm runs).
    pub images_archive: Option<String>,
}

/// The images directory: `$KUBEBOOT_IMAGES` (relative paths from the
/// workspace root), default `<workspace>/out`.
pub fn images_dir() -> PathBuf {
    std::env::var_os(IMAGES_ENV)
        .map(PathBuf::from)
        .map(|p| absolute_in_workspace(&p))
        .unwrap_or_else(|| workspace_root().join("out"))
}

/// `p` itself when absolute, else `p` under the workspace root.
pub fn absolute_in_workspace(p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_owned()
    } else {
        workspace_root().join(p)
    }
}

/// Finds the image `name` (`master`, `worker`) under [`images_dir`],
/// failing with `make image` when missing.
pub fn find_image(name: &str) -> Result<Image, HarnessError> {
    find_image_in(&images_dir(), name)
}

/// Finds the image `name` under `base` (`<base>/<name>/vmlinuz`,
/// `initramfs.img`, `manifest.json`), failing with `make image` when
/// missing.
pub fn find_image_in(base: &Path, name: &str) -> Result<Image, HarnessError> {
    let dir = base.join(name);
    let kernel = dir.join("vmlinuz");
    let initrd = dir.join("initramfs.img");
    let manifest = dir.join("manifest.json");
    for p in [&kernel, &initrd, &manifest] {
        if !p.is_file() {
            return Err(HarnessError::MissingImage { path: p.clone() });
        }
    }
    let text = std::fs::read_to_string(&manifest).map_err(|source| HarnessError::Io {
        what: "reading",
        path: manifest.clone(),
        source,
    })?;
    let v = serde_json::from_str::<serde_json::Value>(&text).unwrap_or_default();
    let cmdline = v
        .get("cmdline")
        .and_then(|c| c.as_str().map(str::to_owned))
        .unwrap_or_else(|| "console=ttyS0".to_owned());
    let kubernetes = v
        .get("kubernetes")
        .and_then(|k| serde_json::from_value(k.clone()).ok())
        .unwrap_or_default();
    Ok(Image {
        kernel,
        initrd,
        cmdline,
        kubernetes,
    })
}

/// Creates a blank qcow2 disk of `size` (for example `2G`).
pub fn create_disk(path: &Path, size: &str) -> Result<(), HarnessError> {
    let qemu_img = require_program("qemu-img", "qemu-utils")?;
    let out = Command::new(&qemu_img)
        .args(["create", "-q", "-f", "qcow2"])
        .arg(path)
        .arg(size)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| HarnessError::Spawn {
            program: qemu_img.display().to_string(),
            source,
        })?;
    if !out.status.success() {
        return Err(HarnessError::Command {
            command: format!("qemu-img create {}", path.display()),
            detail: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    Ok(())
}

/// Creates a qcow2 data disk of `size` that already carries the data
/// filesystem the images look for (ext4 labelled `kubeboot-data`, see
/// overlays/common/usr/lib/kubeboot/data-disk) with the tree under `seed`
/// in it (`mkfs.ext4 -d`: no mount, no loop device). The guest mounts it
/// on `/var/lib` as if it had formatted it: a new machine whose disk was
/// prepared with files, for example an etcd snapshot to restore.
pub fn create_seeded_disk(path: &Path, size_bytes: u64, seed: &Path) -> Result<(), HarnessError> {
    let mkfs = require_program("mkfs.ext4", "e2fsprogs")?;
    let qemu_img = require_program("qemu-img", "qemu-utils")?;
    let raw = path.with_extension("seed.raw");
    let io = |what: &'static str, p: &Path| {
        let p = p.to_owned();
        move |source| HarnessError::Io {
            what,
            path: p,
            source,
        }
    };
    std::fs::File::create(&raw)
        .and_then(|f| f.set_len(size_bytes))
        .map_err(io("creating", &raw))?;
    let result = crate::proc::run(
        Command::new(&mkfs)
            .args(["-q", "-F", "-L", "kubeboot-data", "-d"])
            .arg(seed)
            .arg(&raw),
    )
    .and_then(|_| {
        crate::proc::run(
            Command::new(&qemu_img)
                .args(["convert", "-q", "-f", "raw", "-O", "qcow2"])
                .arg(&raw)
                .arg(path),
        )
    });
    let _ = std::fs::remove_file(&raw);
    result.map(drop)
}

/// The host's `agent` binary of this build (`target/<profile>/agent`,
/// beside the test binaries' `deps/`): the CLI an operator runs against
/// nodes without a login (`agent recover --node`, `agent etcd snapshot
/// --node`). `make test` and `make image` build it.
pub fn host_agent() -> Result<PathBuf, HarnessError> {
    let exe = std::env::current_exe().map_err(|source| HarnessError::Io {
        what: "locating",
        path: PathBuf::from("the test binary"),
        source,
    })?;
    let candidates: Vec<PathBuf> = exe
        .ancestors()
        .skip(1)
        .take(2)
        .map(|d| d.join("agent"))
        .collect();
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .ok_or_else(|| HarnessError::Command {
            command: "finding the host's agent binary".to_owned(),
            detail: format!(
                "none of {candidates:?} exists: build it first (cargo build --release -p agent; \
                 make test and make image do)"
            ),
        })
}

/// Kernel command line every guest gets under TCG, after the image's.
///
/// `tsc=reliable`: the clocksource watchdog compares the TSC with the HPET
/// and, when the host preempts a vCPU between the two reads, marks the
/// TSC unstable and moves the guest to the HPET (seen after 1,989 s in
/// real-kubeadm run 12: "hpet read-back delay ... marking unstable").
/// Every clock read is then an emulated MMIO access instead of a vDSO
/// `rdtsc`, and Go programs (etcd, the kubelet, the control plane) read
/// the clock constantly. TCG's TSC is the host's, which is stable.
pub const TCG_CMDLINE: &str = "tsc=reliable";

/// How to start a VM.
#[derive(Debug, Clone)]
pub struct VmConfig {
    /// The image to boot.
    pub image: Image,
    /// Extra kernel command line appended to the image's.
    pub extra_cmdline: String,
    /// Memory in MiB.
    pub memory_mib: u32,
    /// vCPUs.
    pub cpus: u32,
    /// qcow2 data disks, attached as virtio disks in order.
    pub disks: Vec<PathBuf>,
    /// systemd credentials (name, value) passed as SMBIOS type 11 strings.
    pub credentials: Vec<(String, String)>,
    /// Console log file.
    pub log: PathBuf,
    /// Extra QEMU arguments (for example network devices).
    pub extra_args: Vec<String>,
    /// Run QEMU in the background (`-daemonize`) with this pid file; the
    /// serial console then goes straight to [`VmConfig::log`]
    /// (`-serial file:`) instead of stdio. Used by [`cluster`].
    pub daemon_pidfile: Option<PathBuf>,
}

impl VmConfig {
    /// Defaults from the brief: q35, 1536 MiB, 2 vCPUs, no disks.
    pub fn new(image: Image, log: PathBuf) -> Self {
        VmConfig {
            image,
            extra_cmdline: String::new(),
            memory_mib: 1536,
            cpus: 2,
            disks: Vec::new(),
            credentials: Vec::new(),
            log,
            extra_args: Vec::new(),
            daemon_pidfile: None,
        }
    }

    /// The QEMU arguments for this configuration (pure).
    pub fn args(&self) -> Vec<String> {
        let mut append = self.image.cmdline.clone();
        append.push(' ');
        append.push_str(TCG_CMDLINE);
        if !self.extra_cmdline.is_empty() {
            append.push(' ');
            append.push_str(&self.extra_cmdline);
        }
        let mut a: Vec<String> = [
            "-machine",
            "q35",
            "-accel",
            "tcg",
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-monitor",
            "none",
            "-no-reboot",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        match &self.daemon_pidfile {
            None => a.extend(["-serial".into(), "stdio".into()]),
            Some(pidfile) => a.extend([
                "-serial".into(),
                format!("file:{}", self.log.display()),
                "-daemonize".into(),
                "-pidfile".into(),
                pidfile.display().to_string(),
            ]),
        }
        a.extend(["-m".into(), self.memory_mib.to_string()]);
        a.extend(["-smp".into(), self.cpus.to_string()]);
        a.extend(["-kernel".into(), self.image.kernel.display().to_string()]);
        a.extend(["-initrd".into(), self.image.initrd.display().to_string()]);
        a.extend(["-append".into(), append]);
        for d in &self.disks {
            a.push("-drive".into());
            a.push(format!(
                "file={},if=virtio,format=qcow2",
                qemu_escape(&d.display().to_string())
            ));
        }
        for (name, value) in &self.credentials {
            a.push("-smbios".into());
            if value.contains('\n') {
                // A multi-line value (a TOML file) travels base64-encoded:
                // systemd's `io.systemd.credential.binary:` form.
                use base64::Engine as _;
                let encoded = base64::engine::general_purpose::STANDARD.encode(value);
                a.push(format!(
                    "type=11,value=io.systemd.credential.binary:{}",
                    qemu_escape(&format!("{name}={encoded}"))
                ));
            } else {
                a.push(format!(
                    "type=11,value=io.systemd.credential:{}",
                    qemu_escape(&format!("{name}={value}"))
                ));
            }
        }
        a.extend(self.extra_args.iter().cloned());
        a
    }
}

/// Escapes a value inside a QEMU option list (commas are doubled).
pub fn qemu_escape(value: &str) -> String {
    value.replace(',', ",,")
}

#[derive(Default)]
struct Console {
    text: String,
    ansi: AnsiState,
    closed: bool,
}

/// Where [`strip_ansi`] is inside an escape sequence (kept across reads).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum AnsiState {
    /// Plain text.
    #[default]
    Text,
    /// After ESC.
    Escape,
    /// Inside a CSI sequence (`ESC [` ... final byte).
    Csi,
}

/// Appends `bytes` to `out` without ANSI escape sequences and carriage
/// returns, so patterns match what a person reads on the console (systemd
/// colours its status lines). Eight lines by hand instead of a crate; the
/// state carries over chunk boundaries.
pub fn strip_ansi(bytes: &[u8], state: &mut AnsiState, out: &mut String) {
    let mut plain = Vec::with_capacity(bytes.len());
    for &b in bytes {
        *state = match (*state, b) {
            (AnsiState::Text, 0x1b) => AnsiState::Escape,
            (AnsiState::Text, b'\r') => AnsiState::Text,
            (AnsiState::Text, _) => {
                plain.push(b);
                AnsiState::Text
            }
            (AnsiState::Escape, b'[') => AnsiState::Csi,
            (AnsiState::Escape, _) => AnsiState::Text,
            (AnsiState::Csi, 0x40..=0x7e) => AnsiState::Text,
            (AnsiState::Csi, _) => AnsiState::Csi,
        };
    }
    out.push_str(&String::from_utf8_lossy(&plain));
}

/// A running QEMU guest. Dropping it kills QEMU.
pub struct Vm {
    child: Child,
    console: Arc<(Mutex<Console>, Condvar)>,
    cursor: usize,
    log: PathBuf,
    reader: Option<JoinHandle<()>>,
}

impl Vm {
    /// Starts QEMU with `config`; the console goes to `config.log`.
    pub fn start(config: &VmConfig) -> Result<Vm, HarnessError> {
        let qemu = require_program("qemu-system-x86_64", "qemu-system-x86")?;
        for p in [&config.image.kernel, &config.image.initrd] {
            if !p.is_file() {
                return Err(HarnessError::MissingImage { path: p.clone() });
            }
        }
        if let Some(dir) = config.log.parent() {
            std::fs::create_dir_all(dir).map_err(|source| HarnessError::Io {
                what: "creating",
                path: dir.to_owned(),
                source,
            })?;
        }
        let mut log_file = File::create(&config.log).map_err(|source| HarnessError::Io {
            what: "creating",
            path: config.log.clone(),
            source,
        })?;
        let _ = writeln!(log_file, "# {} {}", qemu.display(), config.args().join(" "));
        let mut child = Command::new(&qemu)
            .args(config.args())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| HarnessError::Spawn {
                program: qemu.display().to_string(),
                source,
            })?;
        let console = Arc::new((Mutex::new(Console::default()), Condvar::new()));
        let mut stdout = child.stdout.take();
        let mut stderr = child.stderr.take();
        let shared = Arc::clone(&console);
        let reader = std::thread::spawn(move || {
            // QEMU's own errors (stderr) go to the log too, after the console.
            let mut buf = [0u8; 4096];
            if let Some(out) = stdout.as_mut() {
                loop {
                    match out.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            let _ = log_file.write_all(&buf[..n]);
                            let (lock, cv) = &*shared;
                            if let Ok(mut c) = lock.lock() {
                                let Console { text, ansi, .. } = &mut *c;
                                strip_ansi(&buf[..n], ansi, text);
                            }
                            cv.notify_all();
                        }
                    }
                }
            }
            let mut err = String::new();
            if let Some(e) = stderr.as_mut() {
                let _ = e.read_to_string(&mut err);
            }
            if !err.is_empty() {
                let _ = write!(log_file, "\n# qemu stderr:\n{err}");
            }
            let _ = log_file.flush();
            let (lock, cv) = &*shared;
            if let Ok(mut c) = lock.lock() {
                if !err.is_empty() {
                    c.text.push_str("\n# qemu stderr:\n");
                    c.text.push_str(&err);
                }
                c.closed = true;
            }
            cv.notify_all();
        });
        Ok(Vm {
            child,
            console,
            cursor: 0,
            log: config.log.clone(),
            reader: Some(reader),
        })
    }

    /// The console log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Everything the console printed so far.
    pub fn console(&self) -> String {
        self.console
            .0
            .lock()
            .map(|c| c.text.clone())
            .unwrap_or_default()
    }

    /// Waits until `pattern` appears on the console after the previous
    /// match; returns the console text from the previous match's end up to
    /// and including the line holding `pattern`.
    pub fn wait_for(&mut self, pattern: &str, timeout: Duration) -> Result<String, HarnessError> {
        let start = Instant::now();
        let (lock, cv) = &*self.console;
        let mut guard = lock.lock().map_err(|_| HarnessError::Command {
            command: "console reader".into(),
            detail: "poisoned lock".into(),
        })?;
        loop {
            if let Some(pos) = guard.text[self.cursor..].find(pattern) {
                let abs = self.cursor + pos;
                let end = guard.text[abs..]
                    .find('\n')
                    .map_or(guard.text.len(), |n| abs + n + 1);
                let out = guard.text[self.cursor..end].to_owned();
                self.cursor = end;
                return Ok(out);
            }
            if guard.closed {
                drop(guard);
                let status = self
                    .child
                    .try_wait()
                    .ok()
                    .flatten()
                    .map_or_else(|| "unknown".to_owned(), |s| s.to_string());
                return Err(HarnessError::Exited {
                    pattern: pattern.to_owned(),
                    status,
                    log: self.log.clone(),
                });
            }
            let elapsed = start.elapsed();
            if elapsed >= timeout {
                return Err(HarnessError::Timeout {
                    pattern: pattern.to_owned(),
                    waited: elapsed,
                    log: self.log.clone(),
                });
            }
            let (g, _) =
                cv.wait_timeout(guard, timeout - elapsed)
                    .map_err(|_| HarnessError::Command {
                        command: "console reader".into(),
                        detail: "poisoned lock".into(),
                    })?;
            guard = g;
        }
    }

    /// Waits for QEMU to exit by itself (guest power-off), up to `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus, HarnessError> {
        let start = Instant::now();
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => {
                    if let Some(r) = self.reader.take() {
                        let _ = r.join();
                    }
                    return Ok(status);
                }
                Ok(None) if start.elapsed() < timeout => {
                    std::thread::sleep(Duration::from_millis(200))
                }
                Ok(None) => {
                    return Err(HarnessError::Timeout {
                        pattern: "<QEMU exit>".into(),
                        waited: start.elapsed(),
                        log: self.log.clone(),
                    })
                }
                Err(source) => {
                    return Err(HarnessError::Io {
                        what: "waiting for QEMU, log",
                        path: self.log.clone(),
                        source,
                    })
                }
            }
        }
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

/// The facts printed by `kubeboot-selftest` (pure parser).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SelfTestReport {
    /// `key=value` facts; a key seen twice keeps every value in order.
    pub facts: BTreeMap<String, Vec<String>>,
    /// Lines of `containerd config dump` that the guest selected.
    pub containerd_dump: Vec<String>,
}

impl SelfTestReport {
    /// Parses the console text between `begin` and `end` of a report.
    pub fn parse(console: &str) -> SelfTestReport {
        let mut r = SelfTestReport::default();
        for line in console.lines() {
            let Some(pos) = line.find(SELFTEST_PREFIX) else {
                continue;
            };
            let rest = line[pos + SELFTEST_PREFIX.len()..].trim_end();
            if let Some(dump) = rest.strip_prefix("containerd-dump: ") {
                r.containerd_dump.push(dump.to_owned());
                continue;
            }
            // "unit agent.service=active" -> key "unit agent.service".
            if let Some((k, v)) = rest.split_once('=') {
                r.facts.entry(k.to_owned()).or_default().push(v.to_owned());
            } else {
                r.facts.entry(rest.to_owned()).or_default();
            }
        }
        r
    }

    /// The first value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.facts.get(key)?.first().map(String::as_str)
    }

    /// Every value of `key`.
    pub fn all(&self, key: &str) -> &[String] {
        self.facts.get(key).map_or(&[], Vec::as_slice)
    }

    /// The `SystemdCgroup` value inside the runc runtime's options table of
    /// `containerd config dump`, if any.
    pub fn runc_systemd_cgroup(&self) -> Option<String> {
        let mut in_runc_options = false;
        for line in &self.containerd_dump {
            let t = line.trim();
            if t.starts_with('[') {
                in_runc_options =
                    t == "[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc.options]";
                continue;
            }
            if in_runc_options {
                if let Some((k, v)) = t.split_once('=') {
                    if k.trim() == "SystemdCgroup" {
                        return Some(v.trim().to_owned());
                    }
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seeded_disk_carries_the_files_on_the_data_filesystem() {
        let dir = tempfile::tempdir().unwrap();
        let seed = dir.path().join("seed");
        std::fs::create_dir_all(seed.join("kubeboot-restore")).unwrap();
        std::fs::write(seed.join("kubeboot-restore/snapshot.db"), b"etcd bytes").unwrap();
        let disk = dir.path().join("node.qcow2");
        create_seeded_disk(&disk, 64 << 20, &seed).unwrap();
        assert!(
            !disk.with_extension("seed.raw").exists(),
            "the raw image is removed"
        );
        // Read back through the qcow2, as the guest would see it.
        let raw = dir.path().join("back.raw");
        crate::proc::run(
            Command::new("qemu-img")
                .args(["convert", "-f", "qcow2", "-O", "raw"])
                .arg(&disk)
                .arg(&raw),
        )
        .unwrap();
        let label = crate::proc::run(
            Command::new("blkid")
                .args(["-o", "value", "-s", "LABEL"])
                .arg(&raw),
        )
        .unwrap();
        assert_eq!(label.trim(), "kubeboot-data");
        let file = crate::proc::run(
            Command::new("debugfs")
                .args(["-R", "cat /kubeboot-restore/snapshot.db"])
                .arg(&raw),
        )
        .unwrap();
        assert_eq!(file, "etcd bytes");
    }

    #[test]
    fn report_parses_facts_and_runc_options() {
        let console = "boot noise\n\
            [  OK  ] Reached target multi-user.target\n\
            KUBEBOOT-SELFTEST begin token=a1\n\
            KUBEBOOT-SELFTEST unit agent.service=active\n\
            KUBEBOOT-SELFTEST failed-unit=x.service\n\
            KUBEBOOT-SELFTEST failed-unit=y.service\n\
            KUBEBOOT-SELFTEST containerd-dump:     [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc]\n\
            KUBEBOOT-SELFTEST containerd-dump:     [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc.options]\n\
            KUBEBOOT-SELFTEST containerd-dump:       SystemdCgroup = true\n\
            KUBEBOOT-SELFTEST end\n";
        let r = SelfTestReport::parse(console);
        assert_eq!(r.get("begin token"), Some("a1"));
        assert_eq!(r.get("unit agent.service"), Some("active"));
        assert_eq!(r.all("failed-unit"), ["x.service", "y.service"]);
        assert_eq!(r.runc_systemd_cgroup().as_deref(), Some("true"));
        assert!(r.facts.contains_key("end"));
    }

    #[test]
    fn systemd_cgroup_outside_runc_options_does_not_count() {
        let console = "KUBEBOOT-SELFTEST containerd-dump: [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc]\n\
            KUBEBOOT-SELFTEST containerd-dump:   SystemdCgroup = true\n";
        assert_eq!(SelfTestReport::parse(console).runc_systemd_cgroup(), None);
    }

    #[test]
    fn finds_an_image_and_its_kubernetes_record() {
        let dir = tempfile::tempdir().unwrap();
        let m = dir.path().join("master");
        std::fs::create_dir_all(&m).unwrap();
        std::fs::write(m.join("vmlinuz"), "k").unwrap();
        std::fs::write(m.join("initramfs.img"), "i").unwrap();
        std::fs::write(
            m.join("manifest.json"),
            r#"{"cmdline":"console=ttyS0 quiet","kubernetes":{"present":false,"version":"v1.30.4","reason":"built with --without-kubernetes","components":[]}}"#,
        )
        .unwrap();
        let img = find_image_in(dir.path(), "master").unwrap();
        assert_eq!(img.cmdline, "console=ttyS0 quiet");
        assert!(!img.kubernetes.present);
        assert_eq!(
            img.kubernetes.reason.as_deref(),
            Some("built with --without-kubernetes")
        );
        assert!(matches!(
            find_image_in(dir.path(), "worker"),
            Err(HarnessError::MissingImage { .. })
        ));
    }

    #[test]
    fn args_escape_commas_and_pass_credentials() {
        let image = Image {
            kernel: "/k".into(),
            initrd: "/i".into(),
            cmdline: "console=ttyS0".into(),
            kubernetes: ImageKubernetes::default(),
        };
        let mut c = VmConfig::new(image, "/tmp/log".into());
        c.disks.push("/d/a,b.qcow2".into());
        c.credentials
            .push(("kubeboot.selftest".into(), "t1,x".into()));
        c.credentials
            .push(("kubeboot.config".into(), "a = 1\nb = 2\n".into()));
        c.extra_cmdline = "quiet".into();
        let a = c.args();
        assert!(a.contains(&"file=/d/a,,b.qcow2,if=virtio,format=qcow2".to_string()));
        assert!(
            a.contains(&"type=11,value=io.systemd.credential:kubeboot.selftest=t1,,x".to_string())
        );
        // Multi-line values go base64 ("a = 1\nb = 2\n").
        assert!(a.contains(
            &"type=11,value=io.systemd.credential.binary:kubeboot.config=YSA9IDEKYiA9IDIK"
                .to_string()
        ));
        let i = a.iter().position(|x| x == "-append").unwrap();
        assert_eq!(a[i + 1], "console=ttyS0 tsc=reliable quiet");
    }

    #[test]
    fn ansi_sequences_are_stripped_across_chunks() {
        let mut state = AnsiState::default();
        let mut out = String::new();
        strip_ansi(
            b"[\x1b[0;32m  OK  \x1b[0m] Reached target \x1b[0;1",
            &mut state,
            &mut out,
        );
        strip_ansi(b";39mmulti-user.target\x1b[0m\r\n", &mut state, &mut out);
        assert_eq!(out, "[  OK  ] Reached target multi-user.target\n");
    }

    #[test]
    fn missing_program_names_package() {
        let err = require_program("no-such-program-kubeboot", "some-package").unwrap_err();
        assert!(err.to_string().contains("some-package"));
    }
}
