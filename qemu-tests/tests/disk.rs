//! Disk images (imagegen/crates/disk) boot under QEMU (TCG): the raw master
//! image under OVMF (UEFI) and SeaBIOS (legacy BIOS) to multi-user.target
//! with the agent running; on first boot the data partition grows to fill
//! a 4 GiB virtual disk and a file written there survives a reboot, and so
//! does a file written into /opt/cni/bin (an overlay over the image's
//! directory, upper layer on the data partition: opt-cni-bin.mount); the
//! qcow2, vmdk and vdi conversions boot too; `qemu-img info` accepts every
//! format.
//!
//! Needs `$KUBEBOOT_IMAGES/master/disk.{raw,qcow2,vmdk,vdi,vhd}` (default
//! `out/master/`, built by `make disk-image`); QEMU (`qemu-system-x86`),
//! `qemu-img` (`qemu-utils`) and OVMF (`ovmf`). Missing pieces fail naming
//! what installs them. The harness in `src/lib.rs` boots kernels directly,
//! so this file has its own small launcher for firmware + disk boots.
//! Console logs: `target/qemu-logs/disk-<pid>-<tag>.log`.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use qemu_tests::{logs_dir, require_program, strip_ansi, AnsiState, SelfTestReport, IMAGES_ENV};

/// TCG on a busy 2-core machine: firmware + boot loader + kernel + systemd.
const BOOT_TIMEOUT: Duration = Duration::from_secs(600);
const POWEROFF_TIMEOUT: Duration = Duration::from_secs(180);
const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE.fd";
const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS.fd";

fn image_dir() -> PathBuf {
    let base = std::env::var_os(IMAGES_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| qemu_tests::workspace_root().join("out"));
    let base = if base.is_absolute() {
        base
    } else {
        qemu_tests::workspace_root().join(base)
    };
    base.join("master")
}

fn disk_image(name: &str) -> PathBuf {
    let p = image_dir().join(name);
    assert!(
        p.is_file(),
        "{} is missing: run `make disk-image` (imagegen build --format raw,qcow2,vmdk,vdi,vhd,aws)",
        p.display()
    );
    p
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Firmware {
    Uefi,
    Bios,
}

struct Console {
    text: String,
    ansi: AnsiState,
    closed: bool,
}

/// One QEMU booting from a disk image; killed on drop.
struct DiskVm {
    child: Child,
    console: Arc<(Mutex<Console>, Condvar)>,
    log: PathBuf,
    _vars: Option<tempfile::NamedTempFile>,
}

impl DiskVm {
    fn start(
        tag: &str,
        firmware: Firmware,
        disk: &Path,
        format: &str,
        snapshot: bool,
        token: &str,
    ) -> DiskVm {
        let qemu = require_program("qemu-system-x86_64", "qemu-system-x86")
            .unwrap_or_else(|e| panic!("{e}"));
        let log = logs_dir().join(format!("disk-{}-{tag}.log", std::process::id()));
        std::fs::create_dir_all(logs_dir()).expect("creating the QEMU log directory");
        let mut args: Vec<String> = [
            "-machine",
            "q35",
            "-accel",
            "tcg",
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-serial",
            "stdio",
            "-monitor",
            "none",
            "-no-reboot",
            "-m",
            "1536",
            "-smp",
            "2",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let mut vars = None;
        if firmware == Firmware::Uefi {
            for f in [OVMF_CODE, OVMF_VARS] {
                assert!(
                    Path::new(f).is_file(),
                    "{f} is missing: apt-get install ovmf"
                );
            }
            let v = tempfile::NamedTempFile::new().expect("temporary OVMF variable store");
            std::fs::copy(OVMF_VARS, v.path()).expect("copying OVMF_VARS.fd");
            args.push("-drive".into());
            args.push(format!("if=pflash,format=raw,readonly=on,file={OVMF_CODE}"));
            args.push("-drive".into());
            args.push(format!("if=pflash,format=raw,file={}", v.path().display()));
            vars = Some(v);
        }
        args.push("-drive".into());
        args.push(format!(
            "file={},if=virtio,format={format}{}",
            disk.display().to_string().replace(',', ",,"),
            if snapshot { ",snapshot=on" } else { "" }
        ));
        args.push("-smbios".into());
        args.push(format!(
            "type=11,value=io.systemd.credential:{}={token}",
            qemu_tests::SELFTEST_CREDENTIAL
        ));
        let mut file = std::fs::File::create(&log).expect("creating the console log");
        let _ = writeln!(file, "# {} {}", qemu.display(), args.join(" "));
        let mut child = Command::new(&qemu)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", qemu.display()));
        let console = Arc::new((
            Mutex::new(Console {
                text: String::new(),
                ansi: AnsiState::default(),
                closed: false,
            }),
            Condvar::new(),
        ));
        let shared = Arc::clone(&console);
        let mut out = child.stdout.take().expect("QEMU stdout");
        let mut err = child.stderr.take().expect("QEMU stderr");
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = out.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let _ = file.write_all(&buf[..n]);
                let (lock, cv) = &*shared;
                if let Ok(mut c) = lock.lock() {
                    let Console { text, ansi, .. } = &mut *c;
                    strip_ansi(&buf[..n], ansi, text);
                }
                cv.notify_all();
            }
            let mut e = String::new();
            let _ = err.read_to_string(&mut e);
            let _ = write!(file, "\n# qemu stderr:\n{e}");
            let (lock, cv) = &*shared;
            if let Ok(mut c) = lock.lock() {
                c.text.push_str(&e);
                c.closed = true;
            }
            cv.notify_all();
        });
        eprintln!("{tag}: console log {}", log.display());
        DiskVm {
            child,
            console,
            log,
            _vars: vars,
        }
    }

    /// Waits until the console shows `pattern`; returns the whole console.
    fn wait_for(&self, pattern: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        let (lock, cv) = &*self.console;
        let mut c = lock.lock().expect("console lock");
        loop {
            if c.text.contains(pattern) {
                return c.text.clone();
            }
            let now = Instant::now();
            if c.closed || now >= deadline {
                panic!(
                    "{} waiting for {pattern:?} (console log {})",
                    if c.closed { "QEMU exited" } else { "timed out" },
                    self.log.display()
                );
            }
            c = cv.wait_timeout(c, deadline - now).expect("console lock").0;
        }
    }

    fn wait_exit(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!(
            "guest did not power off (console log {})",
            self.log.display()
        );
    }
}

impl Drop for DiskVm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Boots, waits for the self-test report, expects a power-off when the
/// token asks for it; returns the report and the whole console.
fn boot(
    tag: &str,
    firmware: Firmware,
    disk: &Path,
    format: &str,
    snapshot: bool,
    token: &str,
) -> (SelfTestReport, String) {
    let mut vm = DiskVm::start(tag, firmware, disk, format, snapshot, token);
    vm.wait_for("Reached target multi-user.target", BOOT_TIMEOUT);
    vm.wait_for("KUBEBOOT-SELFTEST begin", BOOT_TIMEOUT);
    let text = vm.wait_for("KUBEBOOT-SELFTEST end", BOOT_TIMEOUT);
    if token.ends_with("/poweroff") {
        vm.wait_exit(POWEROFF_TIMEOUT);
    }
    (SelfTestReport::parse(&text), text)
}

fn assert_running(tag: &str, r: &SelfTestReport) {
    assert_eq!(
        r.get("multi-user"),
        Some("active"),
        "{tag}: multi-user.target"
    );
    assert_eq!(
        r.get("unit agent.service"),
        Some("active"),
        "{tag}: agent.service"
    );
    assert_eq!(
        r.get("unit kubeboot-data.service"),
        Some("active"),
        "{tag}: kubeboot-data.service"
    );
}

/// A 4 GiB qcow2 whose backing file is the raw image (the image stays clean).
fn overlay(dir: &Path, raw: &Path) -> PathBuf {
    let qemu_img = require_program("qemu-img", "qemu-utils").unwrap_or_else(|e| panic!("{e}"));
    let out = dir.join("disk-4g.qcow2");
    let st = Command::new(qemu_img)
        .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
        .arg(raw)
        .arg(&out)
        .arg("4G")
        .status()
        .expect("running qemu-img create");
    assert!(st.success(), "qemu-img create of the 4 GiB overlay failed");
    out
}

/// The size the data-disk script printed for the data partition.
fn data_partition_bytes(console: &str) -> Option<u64> {
    console.lines().find_map(|l| {
        let rest = l.split("kubeboot-data: data partition ").nth(1)?;
        rest.split(": ").nth(1)?.split(' ').next()?.parse().ok()
    })
}

#[test]
fn raw_under_uefi_grows_data_to_the_disk_and_keeps_a_file_across_reboot() {
    let raw = disk_image("disk.raw");
    let work = tempfile::tempdir().expect("temporary directory");
    let disk = overlay(work.path(), &raw);
    let pid = std::process::id();
    let first = format!("uefi1-{pid}");
    let (r1, console1) = boot(
        "uefi-boot1",
        Firmware::Uefi,
        &disk,
        "qcow2",
        false,
        &format!("{first}/poweroff"),
    );
    assert_running("UEFI boot 1", &r1);
    assert!(
        console1.contains("BdsDxe: starting") && !console1.contains("SYSLINUX"),
        "not booted by OVMF through systemd-boot"
    );
    let mount = r1.get("data-mount").unwrap_or("");
    assert!(
        mount.starts_with("/dev/vda2") && mount.ends_with("ext4"),
        "data mount: {mount:?}"
    );
    let size =
        data_partition_bytes(&console1).expect("the data-disk script printed no partition size");
    assert!(
        size > 3_900_000_000,
        "data partition not grown to the 4 GiB disk: {size} bytes"
    );
    assert!(
        console1.contains("kubeboot-data: grew partition /dev/vda2"),
        "no growth logged"
    );
    assert_eq!(r1.get("marker-before"), Some("none"));
    assert_eq!(r1.get("marker-now"), Some(first.as_str()));
    // /opt/cni/bin: the image's file shows through the overlay, a new file
    // is writable on the read-only root and lands on the data partition.
    assert_eq!(
        r1.get("cni-bin-mount"),
        Some("overlay"),
        "/opt/cni/bin is not an overlay mount"
    );
    assert_eq!(
        r1.get("cni-bin-image-file"),
        Some("visible"),
        "the image's /opt/cni/bin/README.kubeboot does not show through the overlay"
    );
    assert_eq!(r1.get("cni-bin-marker-before"), Some("none"));
    assert_eq!(
        r1.get("cni-bin-marker-now"),
        Some(first.as_str()),
        "writing into /opt/cni/bin"
    );
    assert_eq!(
        r1.get("cni-bin-upper"),
        Some(first.as_str()),
        "the file written into /opt/cni/bin is not in the overlay's upper layer on the data area"
    );

    let second = format!("uefi2-{pid}");
    let (r2, console2) = boot(
        "uefi-boot2",
        Firmware::Uefi,
        &disk,
        "qcow2",
        false,
        &format!("{second}/poweroff"),
    );
    assert_running("UEFI boot 2", &r2);
    assert_eq!(
        r2.get("marker-before"),
        Some(first.as_str()),
        "the file written on boot 1 is gone"
    );
    assert_eq!(
        r2.get("cni-bin-mount"),
        Some("overlay"),
        "/opt/cni/bin is not an overlay mount on boot 2"
    );
    assert_eq!(
        r2.get("cni-bin-marker-before"),
        Some(first.as_str()),
        "the file written into /opt/cni/bin on boot 1 is gone"
    );
    assert_eq!(
        r2.get("cni-bin-image-file"),
        Some("visible"),
        "boot 2: the image's /opt/cni/bin/README.kubeboot does not show through the overlay"
    );
    assert!(
        !console2.contains("formatting blank partition"),
        "boot 2 formatted the data partition again"
    );
}

#[test]
fn raw_under_seabios_boots_to_multi_user_with_the_agent() {
    let raw = disk_image("disk.raw");
    let token = format!("bios-{}/poweroff", std::process::id());
    let (r, console) = boot("bios", Firmware::Bios, &raw, "raw", true, &token);
    // SeaBIOS prints nothing on the serial port; syslinux (the BIOS path:
    // gptmbr.bin -> ESP boot sector -> ldlinux.sys) does.
    assert!(
        console.contains("SYSLINUX 6.") && console.contains("Loading /kubeboot/a/initramfs.img"),
        "not booted by syslinux"
    );
    assert_running("SeaBIOS", &r);
    assert!(r.get("data-mount").unwrap_or("").starts_with("/dev/vda2"));
}

#[test]
fn qcow2_vmdk_and_vdi_boot() {
    for (file, format, firmware) in [
        ("disk.qcow2", "qcow2", Firmware::Bios),
        ("disk.vmdk", "vmdk", Firmware::Uefi),
        ("disk.vdi", "vdi", Firmware::Bios),
    ] {
        let disk = disk_image(file);
        let token = format!("{format}-{}/poweroff", std::process::id());
        let (r, _) = boot(format, firmware, &disk, format, true, &token);
        assert_running(format, &r);
    }
}

#[test]
fn qemu_img_info_passes_on_every_format() {
    let qemu_img = require_program("qemu-img", "qemu-utils").unwrap_or_else(|e| panic!("{e}"));
    let raw_size = std::fs::metadata(disk_image("disk.raw"))
        .expect("disk.raw")
        .len();
    for (file, format) in [
        ("disk.raw", "raw"),
        ("disk.qcow2", "qcow2"),
        ("disk.vmdk", "vmdk"),
        ("disk.vdi", "vdi"),
        ("disk.vhd", "vpc"),
    ] {
        let out = Command::new(&qemu_img)
            .args(["info", "--output=json", "-f", format])
            .arg(disk_image(file))
            .output()
            .expect("running qemu-img info");
        assert!(
            out.status.success(),
            "qemu-img info {file}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("qemu-img info JSON");
        assert_eq!(v["format"], format, "{file}");
        assert_eq!(v["virtual-size"], raw_size, "{file}");
    }
    let aws: serde_json::Value = serde_json::from_slice(
        &std::fs::read(disk_image("aws-import.json")).expect("aws-import.json"),
    )
    .expect("aws-import.json is JSON");
    assert_eq!(aws["register_image"]["BootMode"], "uefi");
    assert_eq!(aws["register_image"]["EnaSupport"], true);
}
