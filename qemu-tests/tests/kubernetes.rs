//! The real-kubeadm end-to-end test: three masters and one worker booted
//! under QEMU (TCG) from images built WITH the Kubernetes components
//! (`make test K8S_COMPONENTS=DIR` builds them into `$(OUT)/k8s/` and sets
//! `KUBEBOOT_K8S_IMAGES`), on the private network of `qemu_tests::cluster`.
//!
//! Without `KUBEBOOT_K8S_IMAGES` it prints one line saying it was skipped
//! and that no Kubernetes cluster was formed, and returns: CI and a plain
//! `make test` have no Kubernetes components (their upstream is not
//! reachable), so this test costs them only its compile time.
//!
//! With it, the test asserts what the agents report and what the host side
//! of the network sees:
//!
//! - the masters form the etcd quorum with one VIP holder (as in
//!   `tests/cluster.rs`);
//! - exactly one init node is elected: every master names the same
//!   `kube.init_node`, and exactly one master (the one with that id) says
//!   `is_init_node`;
//! - every master reports the kube phase `ready`, `joined`, kubelet
//!   `active` and its API server `ready`;
//! - the worker reports `ready`, `joined`, kubelet `active`, with join
//!   material whose `source` is `discovery` and whose CA pin is the one
//!   derived here from the secret;
//! - `https://VIP:6443/readyz` and every master's own `:6443/readyz`
//!   answer `ok` from the host side, the server certificate verified
//!   against the Kubernetes CA derived here from the secret;
//! - the control-plane images came from the image's archive: the agent's
//!   `kube.images_imported` when it reports it, otherwise (older agents)
//!   the only possible source, since the agent sets `imagePullPolicy:
//!   Never` when the image has an archive and the test network has no
//!   route to any registry.
//!
//! Time budgets (TCG: kubeadm init alone takes 10-20 min): the etcd quorum
//! `KUBEBOOT_K8S_ASSEMBLY_TIMEOUT` (s, default 900), the kube phase on
//! every node `KUBEBOOT_K8S_TIMEOUT` (s, default 2700). Guest size:
//! `KUBEBOOT_K8S_MEMORY_MIB` (default 3072), `KUBEBOOT_K8S_CPUS` (default
//! 2; kubeadm's preflight refuses a control-plane node with fewer).
//! Console logs and status streams: `target/qemu-logs/kubernetes-<pid>/`,
//! named in every failure.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use qemu_tests::cluster::{
    reap_abandoned, Cluster, ClusterOptions, Role, API_PORT, KUBEADM_MEMORY_MIB, VIP,
};
use qemu_tests::net::Network;
use qemu_tests::status::{self, KubeReport, Reading};
use qemu_tests::{absolute_in_workspace, find_image_in, logs_dir};

/// The images with Kubernetes (`<dir>/master`, `<dir>/worker`).
const IMAGES_ENV: &str = "KUBEBOOT_K8S_IMAGES";
const POLL: Duration = Duration::from_secs(2);
/// How long an agent may report a stopping configuration error before the
/// test gives up (it does not retry those).
const ERROR_GRACE: Duration = Duration::from_secs(60);

/// Seconds from `name` in the environment, else `default`.
fn env_secs(name: &str, default: u64) -> Duration {
    Duration::from_secs(env_u64(name, default))
}

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("{name}={v:?} is not a number: {e}")),
        Err(_) => default,
    }
}

struct Timeline(Instant);

impl Timeline {
    fn log(&self, msg: impl AsRef<str>) {
        eprintln!(
            "[{:>7.1}s] {}",
            self.0.elapsed().as_secs_f64(),
            msg.as_ref()
        );
    }
}

/// Panics with `msg`, every node's last status and kube phase, and the
/// console logs and status streams to read.
fn fail(c: &Cluster, msg: impl AsRef<str>) -> ! {
    let snap = c.snapshot();
    let kube: Vec<String> = snap
        .iter()
        .map(|(name, r)| {
            format!(
                "  {name}: kube {}",
                r.as_ref()
                    .and_then(|r| status::kube(&r.report))
                    .map_or("no report".to_owned(), |k| k.summary())
            )
        })
        .collect();
    let logs: Vec<String> = c
        .log_paths()
        .iter()
        .map(|p| format!("  {}", p.display()))
        .collect();
    panic!(
        "kubernetes end-to-end: {}\nnodes:\n{}\nkube phase:\n{}\nconsole logs and status streams:\n{}",
        msg.as_ref(),
        c.describe(),
        kube.join("\n"),
        logs.join("\n")
    )
}

/// The kube sections of `names` (all present) from one snapshot.
fn kube_of(
    snap: &BTreeMap<String, Option<Reading>>,
    names: &[&str],
) -> Option<BTreeMap<String, (KubeReport, String)>> {
    names
        .iter()
        .map(|n| {
            let r = &snap.get(*n)?.as_ref()?.report;
            Some((n.to_string(), (status::kube(r)?, r.node.id.clone())))
        })
        .collect()
}

/// The masters are healthy voters of one 3-member etcd cluster with
/// exactly one VIP holder.
fn quorum(snap: &BTreeMap<String, Option<Reading>>, masters: &[&str]) -> Option<String> {
    let mut ids = BTreeSet::new();
    let mut holders = Vec::new();
    for m in masters {
        let r = &snap.get(*m)?.as_ref()?.report;
        if !status::healthy_voter_of(r, 3) {
            return None;
        }
        ids.insert(r.etcd.cluster_id.clone()?);
        if status::holds_vip(r) {
            holders.push(m.to_string());
        }
    }
    (ids.len() == 1 && holders.len() == 1).then(|| holders.remove(0))
}

#[test]
fn kubeadm_forms_a_cluster_from_images_with_kubernetes() {
    let Some(images) = std::env::var_os(IMAGES_ENV).filter(|v| !v.is_empty()) else {
        // Straight to stderr (not through the test harness's capture), so
        // the line shows in every `cargo test` and `make test` log.
        let _ = writeln!(
            std::io::stderr(),
            "kubernetes end-to-end: SKIPPED: no components directory given \
             (make test K8S_COMPONENTS=DIR); no Kubernetes cluster was formed by this run"
        );
        return;
    };
    let images = absolute_in_workspace(&PathBuf::from(images));
    let tl = Timeline(Instant::now());
    let assembly_timeout = env_secs("KUBEBOOT_K8S_ASSEMBLY_TIMEOUT", 900);
    let kube_timeout = env_secs("KUBEBOOT_K8S_TIMEOUT", 2700);

    // The images must carry Kubernetes: a test that boots images without
    // it would only show the kube phase skipped.
    for role in ["master", "worker"] {
        let img = find_image_in(&images, role).unwrap_or_else(|e| {
            panic!(
                "kubernetes end-to-end: {IMAGES_ENV}={}: {e}",
                images.display()
            )
        });
        assert!(
            img.kubernetes.present,
            "kubernetes end-to-end: {}/{role} was built without Kubernetes ({}); \
             build it from a components directory (make test K8S_COMPONENTS=DIR)",
            images.display(),
            img.kubernetes
                .reason
                .as_deref()
                .unwrap_or("no reason recorded")
        );
        tl.log(format!(
            "{role} image {}/{role}: Kubernetes {}, images archive {}",
            images.display(),
            img.kubernetes.version.as_deref().unwrap_or("?"),
            img.kubernetes.images_archive.as_deref().unwrap_or("none")
        ));
    }
    let archive = find_image_in(&images, "master")
        .ok()
        .and_then(|i| i.kubernetes.images_archive);

    let pid = std::process::id();
    for dir in reap_abandoned(&logs_dir(), "kubernetes-") {
        tl.log(format!(
            "stopped the guests and network an earlier run left: {}",
            dir.display()
        ));
    }
    let run_dir = logs_dir().join(format!("kubernetes-{pid}"));
    let secret = format!("qemu-tests-kubernetes-secret-{pid}");
    let mut opts = ClusterOptions::new(run_dir.clone(), format!("kb-k{pid}"), secret.clone());
    opts.images = images.clone();
    opts.cpus = env_u64("KUBEBOOT_K8S_CPUS", 2) as u32;
    opts.memory_mib = env_u64("KUBEBOOT_K8S_MEMORY_MIB", u64::from(KUBEADM_MEMORY_MIB)) as u32;
    let (cpus, memory) = (opts.cpus, opts.memory_mib);
    let mut c = Cluster::create(opts)
        .unwrap_or_else(|e| panic!("kubernetes end-to-end: creating the private network: {e}"));
    let api = c
        .kubernetes()
        .unwrap_or_else(|e| panic!("kubernetes end-to-end: deriving the Kubernetes CA: {e}"));
    let want_pin = api.ca_pin().to_owned();
    tl.log(format!(
        "network namespace kb-k{pid}; {cpus} vCPUs and {memory} MiB a guest; logs and status \
         streams in {}; budgets: quorum {} s, kube phase {} s",
        run_dir.display(),
        assembly_timeout.as_secs(),
        kube_timeout.as_secs()
    ));

    let masters = ["master-1", "master-2", "master-3"];
    for (i, name) in masters.iter().enumerate() {
        let index = i as u8 + 1;
        match c.start(name, Role::Master, index, None, true) {
            Ok(n) => tl.log(format!(
                "{name}: powered on ({}), console {}",
                n.ip(),
                n.console.display()
            )),
            Err(e) => fail(&c, format!("starting {name}: {e}")),
        }
        std::thread::sleep(Duration::from_secs(4));
    }
    match c.start("worker-1", Role::Worker, 21, None, true) {
        Ok(n) => tl.log(format!(
            "worker-1: powered on ({}), console {}",
            n.ip(),
            n.console.display()
        )),
        Err(e) => fail(&c, format!("starting worker-1: {e}")),
    }
    let all: Vec<&str> = masters.iter().copied().chain(["worker-1"]).collect();

    // The etcd quorum and the VIP come first (the kube phase starts once
    // the local member is a healthy voter).
    let holder = c
        .wait(
            "three healthy etcd voters and one VIP holder",
            assembly_timeout,
            POLL,
            |snap| quorum(snap, &masters),
        )
        .unwrap_or_else(|e| fail(&c, format!("etcd quorum: {e}")));
    tl.log(format!("etcd quorum of three voters, VIP on {holder}"));

    // The kube phase on every node, its changes printed as they happen.
    let kube_start = Instant::now();
    let mut last: BTreeMap<String, String> = BTreeMap::new();
    let mut error_since: BTreeMap<String, Instant> = BTreeMap::new();
    loop {
        let snap = c.snapshot();
        let mut done = true;
        for name in &all {
            let Some(r) = snap.get(*name).and_then(Option::as_ref) else {
                done = false;
                continue;
            };
            let Some(k) = status::kube(&r.report) else {
                fail(
                    &c,
                    format!("{name}: the agent reports no kube section in its status"),
                );
            };
            let line = k.summary();
            if last.get(*name) != Some(&line) {
                tl.log(format!("{name}: kube {line}"));
                last.insert(name.to_string(), line);
            }
            if k.phase.state == "skipped" {
                fail(
                    &c,
                    format!(
                        "{name}: kube phase skipped ({}) although the image has Kubernetes",
                        k.phase.reason.as_deref().unwrap_or("no reason")
                    ),
                );
            }
            if let Some(e) = &k.error {
                let since = *error_since
                    .entry(name.to_string())
                    .or_insert_with(Instant::now);
                if since.elapsed() > ERROR_GRACE {
                    fail(&c, format!("{name}: kube phase stopped by an error: {e}"));
                }
            } else {
                error_since.remove(*name);
            }
            let role_done = match *name {
                "worker-1" => k.kubelet == "active",
                _ => k.kubelet == "active" && k.api_server.health == "ready",
            };
            done &= k.phase.state == "ready" && k.joined && role_done;
        }
        if done {
            break;
        }
        if kube_start.elapsed() > kube_timeout {
            fail(
                &c,
                format!(
                    "not every node reported the kube phase ready, joined, kubelet active \
                     (and on masters the API server ready) within {} s \
                     (KUBEBOOT_K8S_TIMEOUT raises the budget)",
                    kube_timeout.as_secs()
                ),
            );
        }
        std::thread::sleep(POLL);
    }
    tl.log(format!(
        "every node reports the kube phase ready ({:.0} s after the quorum)",
        kube_start.elapsed().as_secs_f64()
    ));

    // Exactly one init node, the same for every master.
    let snap = c.snapshot();
    let kube = kube_of(&snap, &all).unwrap_or_else(|| fail(&c, "a node's status vanished"));
    let named: BTreeSet<Option<String>> = masters
        .iter()
        .map(|m| kube[*m].0.init_node.clone())
        .collect();
    let claimants: Vec<&str> = masters
        .iter()
        .copied()
        .filter(|m| kube[*m].0.is_init_node)
        .collect();
    let init_id = match named.iter().next() {
        Some(Some(id)) if named.len() == 1 => id.clone(),
        _ => fail(
            &c,
            format!("the masters do not agree on one init node: {named:?}"),
        ),
    };
    if claimants.len() != 1 || kube[claimants[0]].1 != init_id {
        fail(
            &c,
            format!("exactly one master must be the init node {init_id}; claimants: {claimants:?}"),
        );
    }
    tl.log(format!(
        "one init node: {} (node id {init_id}), named by every master",
        claimants[0]
    ));

    // Masters: joined, kubelet active, API server ready (checked in the
    // loop); the worker joined with material from discovery.
    let worker = &kube["worker-1"].0;
    let join = worker.join.clone().unwrap_or_default();
    if join.source != "discovery"
        || join.ca_pin != want_pin
        || join.api_endpoint != format!("{VIP}:{API_PORT}")
    {
        fail(
            &c,
            format!(
                "worker-1 joined with unexpected join material {join:?}: want source discovery, \
                 endpoint {VIP}:{API_PORT}, CA pin {want_pin}"
            ),
        );
    }
    tl.log("worker-1 joined with the join material from discovery (CA pin matches the secret)");

    // The API on the VIP and on every master, TLS verified against the
    // Kubernetes CA derived from the secret.
    let mut targets = vec![("the VIP".to_owned(), VIP)];
    for m in masters {
        match c.node(m) {
            Ok(n) => targets.push((m.to_owned(), n.ip())),
            Err(e) => fail(&c, e.to_string()),
        }
    }
    for (what, ip) in targets {
        let start = Instant::now();
        loop {
            match api.get(ip, "readyz", false) {
                Ok(body) if body.trim() == "ok" => break,
                Ok(body) if start.elapsed() > Duration::from_secs(120) => fail(
                    &c,
                    format!("https://{ip}:{API_PORT}/readyz ({what}) answered {body:?}"),
                ),
                Err(e) if start.elapsed() > Duration::from_secs(120) => fail(
                    &c,
                    format!(
                        "https://{ip}:{API_PORT}/readyz ({what}, CA {}): {e}",
                        api.ca.display()
                    ),
                ),
                _ => std::thread::sleep(Duration::from_secs(2)),
            }
        }
        tl.log(format!(
            "https://{ip}:{API_PORT}/readyz ({what}): ok, certificate verified against the derived CA"
        ));
    }

    // Four nodes registered with the API (admin client certificate from
    // the derived CA); their Ready condition needs the CNI and is shown.
    let nodes = api
        .get(VIP, "api/v1/nodes", true)
        .ok()
        .and_then(|j| qemu_tests::cluster::api_nodes(&j))
        .unwrap_or_else(|| {
            fail(
                &c,
                "GET /api/v1/nodes through the VIP with the admin certificate failed",
            )
        });
    let agent_names: BTreeSet<String> = all
        .iter()
        .filter_map(|n| Some(snap.get(*n)?.as_ref()?.report.node.name.clone()))
        .collect();
    let api_names: BTreeSet<String> = nodes.iter().map(|(n, _)| n.clone()).collect();
    if nodes.len() != 4 || api_names != agent_names {
        fail(
            &c,
            format!("the API lists nodes {nodes:?}; the agents are {agent_names:?}"),
        );
    }
    let ready = nodes.iter().filter(|(_, r)| *r).count();
    tl.log(format!(
        "the API lists the four nodes {api_names:?}; {ready} of 4 Ready (Ready needs the CNI)"
    ));

    // The control-plane images came from the image's archive.
    let reported: Vec<(&str, Option<bool>)> = all
        .iter()
        .map(|n| (*n, kube[*n].0.images_imported))
        .collect();
    if reported.iter().any(|(_, v)| v.is_some()) {
        let missing: Vec<&str> = reported
            .iter()
            .filter(|(_, v)| *v != Some(true))
            .map(|(n, _)| *n)
            .collect();
        if !missing.is_empty() {
            fail(
                &c,
                format!("these nodes do not report the images imported: {missing:?}"),
            );
        }
        tl.log("every node reports the image's control-plane images imported");
    } else {
        match &archive {
            Some(a) => tl.log(format!(
                "images: the agent does not report the import; the image ships {a} and the \
                 agent sets imagePullPolicy Never for it, the test network has no route to a \
                 registry, so the running control plane's images came from that archive"
            )),
            None => fail(
                &c,
                "the image records no images archive, and the agent does not report an import",
            ),
        }
    }

    tl.log(format!(
        "kubernetes end-to-end: PASS: a Kubernetes cluster of 3 masters and 1 worker formed \
         with kubeadm in {:.0} s ({ready} of 4 nodes Ready)",
        tl.0.elapsed().as_secs_f64()
    ));

    // Cleanup leaves nothing running.
    let netns = c.network().name().to_owned();
    let pids: Vec<i32> = c.nodes().values().filter_map(|n| n.pid()).collect();
    drop(c);
    assert!(
        !Network::exists(&netns),
        "network namespace {netns} still exists after cleanup"
    );
    for pid in pids {
        assert!(
            !qemu_tests::proc::alive(pid),
            "QEMU (pid {pid}) still runs after cleanup"
        );
    }
    if let Ok(entries) = std::fs::read_dir(&run_dir) {
        for e in entries.flatten() {
            if e.path().extension().is_some_and(|x| x == "qcow2") {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}
