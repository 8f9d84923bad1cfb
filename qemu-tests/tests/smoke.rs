//! Smoke test: the master image boots under QEMU (TCG) by direct kernel
//! boot, reaches multi-user.target with agent and containerd active,
//! containerd runs runc with the systemd cgroup driver, etcd runs, /usr is
//! read-only, and a file written to the data disk survives a reboot of the
//! same VM with the same disk.
//!
//! Needs the images from `make image` (`out/master/`, or `$KUBEBOOT_IMAGES`).
//! Console logs: `target/qemu-logs/smoke-<pid>-boot<N>.log`.

use std::time::Duration;

use qemu_tests::{
    create_disk, find_image, logs_dir, SelfTestReport, Vm, VmConfig, SELFTEST_CREDENTIAL,
};

/// TCG on a busy 2-core machine: a boot takes 20-90 s; leave headroom.
const BOOT_TIMEOUT: Duration = Duration::from_secs(600);
const REPORT_TIMEOUT: Duration = Duration::from_secs(300);
const POWEROFF_TIMEOUT: Duration = Duration::from_secs(180);

/// Boots once with `token` and returns the report and the log path.
fn boot(
    image: &qemu_tests::Image,
    disk: &std::path::Path,
    boot_no: u32,
    credential: &str,
    expect_poweroff: bool,
) -> (SelfTestReport, String) {
    let log = logs_dir().join(format!("smoke-{}-boot{boot_no}.log", std::process::id()));
    let mut config = VmConfig::new(image.clone(), log.clone());
    config.disks.push(disk.to_owned());
    config
        .credentials
        .push((SELFTEST_CREDENTIAL.to_owned(), credential.to_owned()));
    let mut vm = Vm::start(&config).unwrap_or_else(|e| panic!("boot {boot_no}: {e}"));
    eprintln!("boot {boot_no}: console log {}", log.display());
    vm.wait_for("Reached target multi-user.target", BOOT_TIMEOUT)
        .unwrap_or_else(|e| panic!("boot {boot_no}: {e}"));
    vm.wait_for("KUBEBOOT-SELFTEST begin", REPORT_TIMEOUT)
        .unwrap_or_else(|e| panic!("boot {boot_no}: {e}"));
    let text = vm
        .wait_for("KUBEBOOT-SELFTEST end", REPORT_TIMEOUT)
        .unwrap_or_else(|e| panic!("boot {boot_no}: {e}"));
    if expect_poweroff {
        let status = vm
            .wait_exit(POWEROFF_TIMEOUT)
            .unwrap_or_else(|e| panic!("boot {boot_no}: guest did not power off: {e}"));
        eprintln!("boot {boot_no}: QEMU exited ({status})");
    }
    (SelfTestReport::parse(&text), log.display().to_string())
}

/// Collects failed checks so one run reports all of them.
struct Checks {
    failures: Vec<String>,
}

impl Checks {
    fn eq(&mut self, what: &str, got: Option<&str>, want: &str) {
        if got != Some(want) {
            self.failures
                .push(format!("{what}: got {got:?}, want {want:?}"));
        }
    }
    fn that(&mut self, what: &str, ok: bool, detail: String) {
        if !ok {
            self.failures.push(format!("{what}: {detail}"));
        }
    }
}

#[test]
fn master_boots_serves_and_keeps_data_across_reboot() {
    let image = find_image("master").unwrap_or_else(|e| panic!("{e}"));
    let work = tempfile::tempdir().expect("temporary directory");
    let disk = work.path().join("data.qcow2");
    create_disk(&disk, "2G").unwrap_or_else(|e| panic!("{e}"));
    let pid = std::process::id();

    let first_token = format!("first-{pid}");
    let (r1, log1) = boot(&image, &disk, 1, &format!("{first_token}/poweroff"), true);
    let mut c = Checks {
        failures: Vec::new(),
    };
    c.eq("multi-user.target", r1.get("multi-user"), "active");
    c.eq("agent.service", r1.get("unit agent.service"), "active");
    c.eq(
        "containerd.service",
        r1.get("unit containerd.service"),
        "active",
    );
    c.eq(
        "kubeboot-data.service",
        r1.get("unit kubeboot-data.service"),
        "active",
    );
    c.eq(
        "runc SystemdCgroup in `containerd config dump`",
        r1.runc_systemd_cgroup().as_deref(),
        "true",
    );
    let etcd = r1.get("etcd-version").unwrap_or("");
    c.that(
        "`etcd --version`",
        etcd.starts_with("etcd Version: 3."),
        format!("printed {etcd:?}"),
    );
    c.eq("writing under /usr", r1.get("usr-write"), "refused");
    let data = r1.get("data-mount").unwrap_or("");
    c.that(
        "data disk on /var/lib",
        data.starts_with("/dev/vda") && data.ends_with("ext4"),
        format!("findmnt /var/lib printed {data:?}"),
    );
    c.eq("marker on a blank disk", r1.get("marker-before"), "none");
    c.eq("marker written", r1.get("marker-now"), &first_token);
    c.that(
        "failed units",
        r1.all("failed-unit").is_empty(),
        format!("{:?}", r1.all("failed-unit")),
    );
    assert!(
        c.failures.is_empty(),
        "first boot (console log {log1}):\n  {}",
        c.failures.join("\n  ")
    );

    let second_token = format!("second-{pid}");
    let (r2, log2) = boot(&image, &disk, 2, &second_token, false);
    let mut c = Checks {
        failures: Vec::new(),
    };
    c.eq(
        "marker from the first boot",
        r2.get("marker-before"),
        &first_token,
    );
    c.eq(
        "agent.service after reboot",
        r2.get("unit agent.service"),
        "active",
    );
    c.eq(
        "containerd.service after reboot",
        r2.get("unit containerd.service"),
        "active",
    );
    assert!(
        c.failures.is_empty(),
        "second boot (console log {log2}):\n  {}",
        c.failures.join("\n  ")
    );
}
