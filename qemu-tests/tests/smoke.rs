//! Smoke test: the master and worker images boot under QEMU (TCG) by
//! direct kernel boot, reach multi-user.target with agent and containerd
//! active, containerd runs runc with the systemd cgroup driver, etcd runs
//! (master), / and /usr are read-only, and a file written to the data disk
//! survives a reboot of the same VM with the same disk.
//!
//! Both roles also start real containers through containerd's CRI (the
//! guest's `agent cri-check`, run by kubeboot-selftest): two pod sandboxes
//! on a CNI bridge, a non-root container that writes a file and fetches the
//! other pod's token over the bridge, with /etc/resolv.conf and /etc/hosts
//! asserted inside it; and the node basics on the host (stage 0's root with
//! a parent mount, pivot_root, resolved, iptables/ip6tables/ebtables, the
//! programs kubeadm's preflight wants, CNI plugins, kubeadm's host paths,
//! the waiting kubelet unit). The container image is built here from
//! Debian's busybox-static (`qemu_tests::oci`) and attached as a read-only
//! raw disk: the booted initramfs is byte for byte the built one (its
//! SHA256 is checked against the manifest before and after).
//!
//! Needs the images from `make image` (`out/master/`, `out/worker/`, or
//! `$KUBEBOOT_IMAGES`) and busybox-static. Console logs:
//! `target/qemu-logs/smoke-<pid>-<role>-boot<N>.log`.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use qemu_tests::{
    create_disk, find_image, images_dir, logs_dir, oci, SelfTestReport, Vm, VmConfig,
    SELFTEST_CREDENTIAL,
};
use sha2::{Digest, Sha256};

/// One guest at a time: two TCG guests at once on two shared cores would
/// only make both slow.
static ONE_GUEST: Mutex<()> = Mutex::new(());

/// TCG on a busy 2-core machine: a boot takes 20-90 s; leave headroom.
const BOOT_TIMEOUT: Duration = Duration::from_secs(600);
const REPORT_TIMEOUT: Duration = Duration::from_secs(300);
const POWEROFF_TIMEOUT: Duration = Duration::from_secs(180);

/// Boots once with `token` (and the CRI test image disk `cri`) and
/// returns the report and the log path.
fn boot(
    image: &qemu_tests::Image,
    disk: &Path,
    cri: Option<&Path>,
    boot_no: u32,
    credential: &str,
    expect_poweroff: bool,
) -> (SelfTestReport, String) {
    let role = image
        .kernel
        .parent()
        .and_then(Path::file_name)
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let log = logs_dir().join(format!(
        "smoke-{}-{role}-boot{boot_no}.log",
        std::process::id()
    ));
    let mut config = VmConfig::new(image.clone(), log.clone());
    // A node name other than localhost, so that "the node name resolves"
    // means something (the agent may rename the node; the report says).
    config.extra_cmdline = format!("systemd.hostname=kubeboot-smoke-{role}");
    config.disks.push(disk.to_owned());
    if let Some(archive) = cri {
        config.extra_args.extend(oci::cri_disk_args(archive));
    }
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

/// SHA256 (hex) of a file.
fn sha256_file(path: &Path) -> String {
    let data = std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    Sha256::digest(&data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The initramfs the test boots is the one imagegen built and recorded:
/// its SHA256 equals `outputs."initramfs.img"` of the image's manifest.
fn assert_image_as_built(role: &str, initrd: &Path) {
    let manifest = images_dir().join(role).join("manifest.json");
    let text = std::fs::read_to_string(&manifest)
        .unwrap_or_else(|e| panic!("reading {}: {e}", manifest.display()));
    let v: serde_json::Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("parsing {}: {e}", manifest.display()));
    let recorded = v["outputs"]["initramfs.img"].as_str().unwrap_or("");
    assert_eq!(
        sha256_file(initrd),
        recorded,
        "{role}: {} is not the initramfs its manifest records",
        initrd.display()
    );
}

/// The CRI test image archive, built once per test process from Debian's
/// busybox-static.
fn cri_archive() -> PathBuf {
    static ARCHIVE: Mutex<Option<PathBuf>> = Mutex::new(None);
    let mut slot = ARCHIVE.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(p) = slot.as_ref() {
        return p.clone();
    }
    let out = logs_dir().join(format!("smoke-{}-cri-image.tar", std::process::id()));
    std::fs::create_dir_all(logs_dir()).expect("creating the logs directory");
    let path = oci::build_archive(Path::new(oci::BUSYBOX_STATIC), &out)
        .unwrap_or_else(|e| panic!("building the CRI test image: {e}"));
    *slot = Some(path.clone());
    path
}

/// The node basics and the CRI check, for any role (`token`: the boot's
/// self-test token, which the server pod serves).
fn node_and_cri_checks(c: &mut Checks, r: &SelfTestReport, token: &str) {
    let parent = r.get("root-parent").unwrap_or("");
    c.that(
        "/ is a mount with a parent (stage 0)",
        parent.starts_with("mount "),
        format!("root-parent={parent:?}"),
    );
    c.eq("pivot_root in a mount namespace", r.get("pivot-root"), "ok");
    c.eq("writing to /", r.get("root-write"), "refused");
    let root = r.get("root-mount").unwrap_or("");
    c.that(
        "/ mounted read-only",
        root.split_whitespace()
            .nth(1)
            .is_some_and(|o| o.split(',').any(|o| o == "ro")),
        format!("findmnt / printed {root:?}"),
    );
    c.eq(
        "systemd-resolved.service",
        r.get("unit systemd-resolved.service"),
        "active",
    );
    c.eq(
        "/etc/resolv.conf",
        r.get("resolv-conf-link"),
        "../run/systemd/resolve/stub-resolv.conf",
    );
    c.eq(
        "nameserver of /etc/resolv.conf",
        r.get("resolv-conf-nameserver"),
        "127.0.0.53",
    );
    let host = r.get("hostname").unwrap_or("");
    c.that(
        "a node name other than localhost",
        !host.is_empty() && host != "localhost",
        format!("hostname={host:?}"),
    );
    c.eq("the node name resolves", r.get("hostname-resolves"), "yes");
    let lo = r.get("localhost-resolves").unwrap_or("");
    c.that(
        "localhost resolves",
        lo == "127.0.0.1" || lo == "::1",
        format!("getent hosts localhost printed {lo:?}"),
    );
    for cmd in [
        "iptables -L -n",
        "iptables -t nat -L -n",
        "ip6tables -L -n",
        "ip6tables -t nat -L -n",
        "ebtables -L",
    ] {
        c.eq(
            &format!("`{cmd}` on the host"),
            r.get(&format!("host-cmd {cmd}")),
            "ok",
        );
    }
    for prog in ["conntrack", "socat", "ethtool", "ebtables"] {
        let at = r.get(&format!("program {prog}")).unwrap_or("absent");
        c.that(
            &format!("{prog} on PATH"),
            at.starts_with('/'),
            format!("command -v printed {at:?}"),
        );
    }
    for plugin in ["bridge", "host-local", "loopback", "portmap"] {
        c.eq(
            &format!("CNI plugin {plugin} in /opt/cni/bin"),
            r.get(&format!("cni-plugin {plugin}")),
            "present",
        );
    }
    for dir in [
        "/etc/ssl/certs",
        "/usr/share/ca-certificates",
        "/usr/libexec/kubernetes/kubelet-plugins/volume/exec",
    ] {
        c.eq(
            &format!("kubeadm host path {dir}"),
            r.get(&format!("host-dir {dir}")),
            "present",
        );
    }
    c.eq(
        "kubelet.service enabled, waiting for kubeadm",
        r.get("kubelet"),
        "enabled inactive condition=no",
    );

    // Real containers through the CRI.
    c.eq("CRI test image imported", r.get("cri-import"), "ok");
    let sandbox = r.get("cri-sandbox-image").unwrap_or("");
    c.that(
        "pod sandbox image available",
        !sandbox.is_empty() && !sandbox.ends_with("(absent)"),
        format!("cri-sandbox-image={sandbox:?}"),
    );
    c.that(
        "CRI runtime ready with a CNI network",
        r.get("cri-ready").is_some(),
        format!("cri-error={:?}", r.get("cri-error")),
    );
    let server = r.get("cri-server-ip").unwrap_or("");
    let client = r.get("cri-client-ip").unwrap_or("");
    c.that(
        "two pods on the CNI bridge (10.85.0.0/24), each its own address",
        server.starts_with("10.85.0.") && client.starts_with("10.85.0.") && server != client,
        format!("server {server:?}, client {client:?}"),
    );
    c.eq("client container exit code", r.get("cri-client-exit"), "0");
    c.eq("container runs as uid", r.get("cri-client-uid"), "1000");
    c.eq(
        "file the container wrote, owner on the host",
        r.get("cri-file-owner"),
        "1000",
    );
    c.eq(
        "container writes its own root",
        r.get("cri-rootfs-write"),
        "own-root",
    );
    c.eq(
        "token fetched from the other pod over the bridge",
        r.get("cri-peer"),
        token,
    );
    c.eq(
        "container's /etc/resolv.conf nameserver",
        r.get("cri-resolv-nameserver"),
        "127.0.0.53",
    );
    c.eq(
        "container's /etc/resolv.conf is the node's",
        r.get("cri-resolv-matches-host"),
        "yes",
    );
    c.eq(
        "container's /etc/hosts maps localhost",
        r.get("cri-hosts-localhost"),
        "yes",
    );
    c.eq("pods removed", r.get("cri-cleanup"), "removed");
    c.eq("agent cri-check exit status", r.get("cri-check-exit"), "0");
}

#[test]
fn master_boots_serves_runs_containers_and_keeps_data_across_reboot() {
    let _one = ONE_GUEST.lock().unwrap_or_else(|p| p.into_inner());
    let image = find_image("master").unwrap_or_else(|e| panic!("{e}"));
    assert_image_as_built("master", &image.initrd);
    let cri = cri_archive();
    let work = tempfile::tempdir().expect("temporary directory");
    let disk = work.path().join("data.qcow2");
    create_disk(&disk, "2G").unwrap_or_else(|e| panic!("{e}"));
    let pid = std::process::id();

    let first_token = format!("first-{pid}");
    let (r1, log1) = boot(
        &image,
        &disk,
        Some(&cri),
        1,
        &format!("{first_token}/poweroff"),
        true,
    );
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
    // `agent recover` and a first-boot restore need etcdctl on the master.
    let etcdctl = r1.get("etcdctl-version").unwrap_or("");
    c.that(
        "`etcdctl version`",
        etcdctl.starts_with("etcdctl version: 3."),
        format!("printed {etcdctl:?}"),
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
    node_and_cri_checks(&mut c, &r1, &first_token);
    assert!(
        c.failures.is_empty(),
        "first boot (console log {log1}):\n  {}",
        c.failures.join("\n  ")
    );

    let second_token = format!("second-{pid}");
    let (r2, log2) = boot(&image, &disk, None, 2, &second_token, false);
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
    c.eq(
        "kubelet.service after reboot",
        r2.get("kubelet"),
        "enabled inactive condition=no",
    );
    c.eq(
        "no CRI disk on the second boot",
        r2.get("cri"),
        "no-test-image",
    );
    assert!(
        c.failures.is_empty(),
        "second boot (console log {log2}):\n  {}",
        c.failures.join("\n  ")
    );
    assert_image_as_built("master", &image.initrd);
}

#[test]
fn worker_boots_and_runs_containers() {
    let _one = ONE_GUEST.lock().unwrap_or_else(|p| p.into_inner());
    let image = find_image("worker").unwrap_or_else(|e| panic!("{e}"));
    assert_image_as_built("worker", &image.initrd);
    let cri = cri_archive();
    let work = tempfile::tempdir().expect("temporary directory");
    let disk = work.path().join("data.qcow2");
    create_disk(&disk, "2G").unwrap_or_else(|e| panic!("{e}"));
    let token = format!("worker-{}", std::process::id());
    let (r, log) = boot(
        &image,
        &disk,
        Some(&cri),
        1,
        &format!("{token}/poweroff"),
        true,
    );
    let mut c = Checks {
        failures: Vec::new(),
    };
    c.eq("multi-user.target", r.get("multi-user"), "active");
    c.eq(
        "containerd.service",
        r.get("unit containerd.service"),
        "active",
    );
    c.eq(
        "no etcd in the worker image",
        r.get("etcd-version"),
        "absent",
    );
    c.eq(
        "no etcdctl in the worker image",
        r.get("etcdctl-version"),
        "absent",
    );
    c.that(
        "failed units",
        r.all("failed-unit").is_empty(),
        format!("{:?}", r.all("failed-unit")),
    );
    node_and_cri_checks(&mut c, &r, &token);
    assert!(
        c.failures.is_empty(),
        "worker boot (console log {log}):\n  {}",
        c.failures.join("\n  ")
    );
    assert_image_as_built("worker", &image.initrd);
}
