//! End-to-end scenarios of issue 6 on three masters booted once from the
//! same image, in a private network namespace (qemu_tests::cluster), run in
//! sequence because every TCG boot costs minutes:
//!
//! 1. self-assembly: one etcd cluster of three voters over TLS, exactly one
//!    VIP holder, a key written through the VIP readable on every member;
//!    7a. power cut during assembly: one master (seeded choice) is killed
//!    at a seeded point 5-90 s after its power-on (kernel, systemd,
//!    discovery, etcd start or bootstrap) and booted again with its disk;
//!    the masters must still converge, and no snapshot may ever show two
//!    etcd cluster ids ("never two clusters");
//! 2. failover: SIGKILL of the VIP holder's QEMU, another master holds the
//!    VIP and writes through the VIP succeed with two members;
//! 3. rejoin: the killed master boots again with its disk: same member id,
//!    its data, three healthy voters;
//! 6. intruder: a guest with a wrong secret never becomes a member and does
//!    not move the VIP, while the masters count its messages as rejected;
//! 5. partition: the VIP holder's tap is cut: it gives the VIP up, the other
//!    two keep quorum and the VIP; healed, all converge to three voters;
//! 4. replacement: a master gone for good is replaced by a blank one: the
//!    stale member is removed, the new one added and promoted;
//!    7b. power cut during the join: the blank master-4 is killed at a
//!    seeded point 5-90 s after its power-on and booted again with the
//!    same (half-written) disk; the replacement must still converge;
//! 8. worker (booted with the replacement): sees every master through
//!    discovery, is no etcd member, reports the Kubernetes join skipped
//!    with the reason (images built without Kubernetes), and reports the
//!    join material it got from discovery: API endpoint on the VIP, the
//!    Kubernetes CA pin and the token id the harness derives itself from
//!    the secret (never the token secret).
//! 9. quorum loss and recovery (issue 17): keys written through the VIP;
//!    the two masters that do not hold the VIP are powered off for good;
//!    the survivor reports the quorum lost and drops the VIP; `agent
//!    recover --node` from the host (the images have no login; mutual TLS
//!    from the secret) is refused while the quorum exists and without
//!    `--confirm-node`, then rebuilds a one-member cluster (new cluster id,
//!    epoch 1; writes through the VIP again); two blank masters join: three
//!    voters, every key readable through the VIP. The lost masters' OLD
//!    disks boot again: both report epoch 1, neither holds the VIP for the
//!    old cluster, one replaces a master lost in turn as a voter of the new
//!    cluster (the other stands by);
//! 10. every master lost: an off-node snapshot taken beforehand (`agent
//!     etcd snapshot --node --out`) restores the data on three new machines
//!     (`[etcd] restore_from`, the file on their data disks): one new
//!     cluster of three voters, every key back.
//!
//! The power cuts are seeded: `KUBEBOOT_SEED=<n>` replays a run (the seed
//! is printed at the start and with every panic); without it the seed
//! comes from the clock. `make test-power-cut SEEDS="1 2 3"` runs the test
//! once per seed.
//!
//! Needs `make image` (out/master), root (network namespaces), QEMU, dnsmasq
//! and etcdctl. Console logs and status streams:
//! `target/qemu-logs/cluster-<pid>/` (kept; paths printed on failure).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use qemu_tests::cluster::{reap_abandoned, Cluster, ClusterOptions, EtcdClient, Role, VIP};
use qemu_tests::net::Network;
use qemu_tests::status::{self, Reading};
use qemu_tests::{find_image, logs_dir, HarnessError};

/// Three TCG guests on two cores: kernel + systemd + etcd start in 1-4 min.
const ASSEMBLY_TIMEOUT: Duration = Duration::from_secs(600);
/// The agent's VRRP failover bound is 722 ms (20 cs adverts, priority 100);
/// etcd must also elect a leader again when the holder led it. Under TCG a
/// second of guest time can take several on the host: generous slack.
const FAILOVER_TIMEOUT: Duration = Duration::from_secs(120);
const REJOIN_TIMEOUT: Duration = Duration::from_secs(480);
const BOOT_TIMEOUT: Duration = Duration::from_secs(420);
/// Long enough for several discovery rounds of the intruder (its messages
/// must be counted as rejected), short enough not to cost CI time.
const INTRUDER_WATCH: Duration = Duration::from_secs(25);
/// Power cuts (7) happen this many seconds after the victim's power-on:
/// from kernel boot to etcd bootstrap/join under TCG.
const CUT_WINDOW: std::ops::RangeInclusive<u64> = 5..=90;
/// How long a cut guest stays off before it powers on again.
const CUT_PAUSE: Duration = Duration::from_secs(3);
const PARTITION_TIMEOUT: Duration = Duration::from_secs(180);
/// Dead-member grace (30 s) + boot + join as learner + promotion.
const REPLACE_TIMEOUT: Duration = Duration::from_secs(600);
/// How long an agent may report phase `failed` during assembly.
const FAILED_GRACE: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_secs(1);
const FAST_POLL: Duration = Duration::from_millis(250);

/// SplitMix64: a tiny deterministic PRNG, enough to pick power-cut points
/// reproducibly from a seed (the workspace's `rand` versions are not
/// qemu-tests dependencies; this avoids adding one for three numbers).
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform enough in `range` (modulo bias is irrelevant here).
    fn in_range(&mut self, range: std::ops::RangeInclusive<u64>) -> u64 {
        let span = range.end() - range.start() + 1;
        range.start() + self.next() % span
    }
}

/// The seed of this run: `KUBEBOOT_SEED` or the clock. Every panic message
/// is followed by the line that replays the run.
fn seed() -> u64 {
    let seed = match std::env::var("KUBEBOOT_SEED") {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("KUBEBOOT_SEED={v:?} is not a u64: {e}")),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64 % 1_000_000)
            .unwrap_or(0),
    };
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default(info);
        eprintln!(
            "*** power-cut seed {seed}: reproduce with KUBEBOOT_SEED={seed} make test-cluster ***"
        );
    }));
    seed
}

/// The etcd cluster ids the nodes in `names` report (stale reports of a
/// powered-off node are not in the snapshot).
fn cluster_ids(snap: &BTreeMap<String, Option<Reading>>, names: &[&str]) -> BTreeSet<String> {
    names
        .iter()
        .filter_map(|n| snap.get(*n)?.as_ref()?.report.etcd.cluster_id.clone())
        .collect()
}

/// Where a node is at a power cut: its reported phase, or "no status yet".
fn phase_of(snap: &BTreeMap<String, Option<Reading>>, name: &str) -> String {
    match snap.get(name).and_then(Option::as_ref) {
        Some(r) => format!(
            "phase {}{}",
            r.report.phase,
            r.report
                .etcd
                .member_id
                .as_ref()
                .map(|m| format!(", etcd member {m}"))
                .unwrap_or_default()
        ),
        None => "no status yet (kernel/systemd)".to_owned(),
    }
}

struct Timeline(Instant);

impl Timeline {
    fn log(&self, msg: impl AsRef<str>) {
        eprintln!(
            "[{:>6.1}s] {}",
            self.0.elapsed().as_secs_f64(),
            msg.as_ref()
        );
    }
}

trait OrPanic<T> {
    fn or_panic(self, what: &str) -> T;
}

impl<T> OrPanic<T> for Result<T, HarnessError> {
    fn or_panic(self, what: &str) -> T {
        self.unwrap_or_else(|e| panic!("{what}: {e}"))
    }
}

/// What a converged cluster looks like.
#[derive(Debug, Clone)]
struct Converged {
    cluster_id: String,
    holder: String,
    /// Harness node name -> etcd member id.
    members: BTreeMap<String, String>,
    leader: String,
}

/// `names` are all healthy voters of one 3-member cluster and exactly one of
/// them holds the VIP.
fn converged(snap: &BTreeMap<String, Option<Reading>>, names: &[&str]) -> Option<Converged> {
    let mut ids = BTreeSet::new();
    let mut holders = Vec::new();
    let mut members = BTreeMap::new();
    let mut leader = String::new();
    for name in names {
        let r = &snap.get(*name)?.as_ref()?.report;
        if !status::healthy_voter_of(r, 3) {
            return None;
        }
        ids.insert(r.etcd.cluster_id.clone()?);
        members.insert(name.to_string(), r.etcd.member_id.clone()?);
        leader = r.etcd.leader.clone().unwrap_or_default();
        if status::holds_vip(r) {
            holders.push(name.to_string());
        }
        // Every member list names exactly the members we see.
        let listed: BTreeSet<&str> = r.etcd.members.iter().map(|m| m.id.as_str()).collect();
        if listed.len() != names.len() {
            return None;
        }
    }
    let seen: BTreeSet<&str> = members.values().map(String::as_str).collect();
    let listed: BTreeSet<&str> = snap
        .get(names[0])?
        .as_ref()?
        .report
        .etcd
        .members
        .iter()
        .map(|m| m.id.as_str())
        .collect();
    if ids.len() != 1 || holders.len() != 1 || seen != listed {
        return None;
    }
    Some(Converged {
        cluster_id: ids.into_iter().next()?,
        holder: holders.remove(0),
        members,
        leader,
    })
}

/// Nodes among `names` that report holding the VIP.
fn holders(snap: &BTreeMap<String, Option<Reading>>, names: &[&str]) -> Vec<String> {
    names
        .iter()
        .filter(|n| {
            snap.get(**n)
                .and_then(Option::as_ref)
                .is_some_and(|r| status::holds_vip(&r.report))
        })
        .map(|n| n.to_string())
        .collect()
}

/// Retries a write through the VIP until it succeeds; returns how long.
fn put_via_vip(etcd: &EtcdClient, key: &str, value: &str, timeout: Duration) -> Duration {
    let start = Instant::now();
    let endpoint = format!("https://{VIP}:2379");
    loop {
        // The members' server certificates name the VIP: verified like
        // any member endpoint, with the client certificate presented.
        match etcd.put(&endpoint, key, value) {
            Ok(()) => return start.elapsed(),
            Err(e) if start.elapsed() > timeout => {
                panic!("write of {key} through the VIP {endpoint} failed for {timeout:?}: {e}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(500)),
        }
    }
}

/// Reads `key` from the local store of `node` (serializable), retrying while
/// the member catches up.
fn read_local(c: &Cluster, etcd: &EtcdClient, node: &str, key: &str, want: &str) {
    let endpoint = c.node(node).or_panic("node").etcd_endpoint();
    let start = Instant::now();
    let mut last = String::new();
    while start.elapsed() < Duration::from_secs(60) {
        match etcd.get_local(&endpoint, key) {
            Ok(Some(v)) if v == want => return,
            Ok(v) => last = format!("got {v:?}"),
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    panic!("{key} not readable on {node} ({endpoint}) as {want:?}: {last}");
}

/// The Kubernetes CA pin and bootstrap token id the agents derive from
/// `secret` (same crates, same derivation).
fn join_material(secret: &str) -> (String, String) {
    let secret = cluster_config::ClusterSecret::new(secret.to_owned()).expect("test secret");
    let name = qemu_tests::cluster::DEFAULT_CLUSTER_NAME;
    let pki = pki::ClusterPki::derive(&secret, name).expect("deriving the PKI");
    let token = kubeadm::BootstrapToken::derive(&secret, name).expect("deriving the token");
    (pki.kubernetes_ca.spki_pin(), token.id().to_owned())
}

/// Keys scenario 9 writes through the VIP before the quorum is lost.
const REC_KEYS: usize = 20;
/// Written through the VIP right after `agent recover`.
const AFTER_RECOVERY_KEY: &str = "/kubeboot-test/after-recovery";
/// Written through the VIP just before the off-node snapshot of 10.
const BEFORE_BACKUP_KEY: &str = "/kubeboot-test/before-backup";

fn rec_key(i: usize) -> String {
    format!("/kubeboot-test/rec/{i:02}")
}

fn rec_value(i: usize) -> String {
    format!("before-the-loss-{i}")
}

/// Every key of [`rec_key`] through the VIP (a linearizable read).
fn read_rec_keys_via_vip(etcd: &EtcdClient) {
    let endpoint = format!("https://{VIP}:2379");
    let out = etcd
        .etcdctl(&endpoint, &["get", "/kubeboot-test/rec/", "--prefix"])
        .unwrap_or_else(|e| panic!("reading the keys through the VIP {endpoint}: {e}"));
    let lines: Vec<&str> = out.lines().collect();
    let want: Vec<String> = (0..REC_KEYS)
        .flat_map(|i| [rec_key(i), rec_value(i)])
        .collect();
    assert_eq!(
        lines, want,
        "the keys written before the quorum loss, through the VIP"
    );
}

/// The recovery epoch node `name` reports.
fn epoch_of(snap: &BTreeMap<String, Option<Reading>>, name: &str) -> Option<u64> {
    snap.get(name)?
        .as_ref()?
        .report
        .other
        .get("recovery")?
        .get("epoch")?
        .get("number")?
        .as_u64()
}

/// The host's `agent` CLI run in the test network, as on an operator's
/// machine on the cluster network: (success, stdout and stderr).
fn agent_cli(c: &Cluster, args: &[String]) -> (bool, String) {
    let bin = qemu_tests::host_agent().or_panic("the host's agent binary");
    let out = c
        .network()
        .command(&bin.display().to_string())
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap_or_else(|e| panic!("running {} {args:?}: {e}", bin.display()));
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn three_masters_assemble_and_survive_faults() {
    let pid = std::process::id();
    let tl = Timeline(Instant::now());
    let run_dir = logs_dir().join(format!("cluster-{pid}"));
    let secret = format!("qemu-tests-cluster-secret-{pid}");
    let wrong_secret = format!("an-intruder-with-another-secret-{pid}");
    // A run killed before its cleanup (timeout, SIGKILL) leaves guests
    // running that would slow this one down and hold the same addresses.
    for dir in reap_abandoned(&logs_dir(), "cluster-") {
        tl.log(format!(
            "stopped the guests and network an earlier run left: {}",
            dir.display()
        ));
    }
    // These scenarios run on images without Kubernetes (`make
    // test-cluster` builds them with K8S=none): every node must report
    // the kube phase skipped with the reason its image records. The
    // real-kubeadm path is tests/kubernetes.rs.
    let skip_reason = |role: &str| -> String {
        let img = find_image(role).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            !img.kubernetes.present,
            "the {role} image has Kubernetes {}: these scenarios need images built without it \
             (make test-cluster builds them with K8S=none; tests/kubernetes.rs is the kubeadm test)",
            img.kubernetes.version.as_deref().unwrap_or("")
        );
        img.kubernetes
            .reason
            .filter(|r| !r.is_empty())
            .unwrap_or_else(|| {
                panic!("the {role} image records no reason for having no Kubernetes")
            })
    };
    let master_reason = skip_reason("master");
    let worker_reason = skip_reason("worker");
    let seed = seed();
    let mut rng = SplitMix64(seed);
    let cut_a_index = rng.in_range(1..=3) as u8;
    let cut_a_after = Duration::from_secs(rng.in_range(CUT_WINDOW));
    let cut_b_after = Duration::from_secs(rng.in_range(CUT_WINDOW));
    tl.log(format!(
        "*** power-cut seed {seed} (KUBEBOOT_SEED={seed} replays it): \
         7a cuts master-{cut_a_index} {}s after its power-on, \
         7b cuts master-4 {}s after its power-on ***",
        cut_a_after.as_secs(),
        cut_b_after.as_secs()
    ));
    let join_secret = secret.clone();
    let opts = ClusterOptions::new(run_dir.clone(), format!("kb-t{pid}"), secret);
    let mut c = Cluster::create(opts).or_panic("creating the private network");
    let etcd = c.etcd().or_panic("minting the etcd client certificate");
    tl.log(format!(
        "network namespace kb-t{pid}; logs and status streams in {}",
        run_dir.display()
    ));

    // 1. Self-assembly, with the power cut of 7a.
    let mut cut_a_at = Instant::now();
    for i in 1..=3u8 {
        let name = format!("master-{i}");
        let n = c
            .start(&name, Role::Master, i, None, false)
            .or_panic("starting a master");
        tl.log(format!(
            "{name}: powered on ({}), console {}",
            n.ip(),
            n.console.display()
        ));
        if i == cut_a_index {
            cut_a_at = Instant::now() + cut_a_after;
        }
        if i < 3 {
            std::thread::sleep(Duration::from_secs(4));
        }
    }
    let mut masters: Vec<String> = (1..=3).map(|i| format!("master-{i}")).collect();
    let names = |m: &[String]| m.iter().map(String::clone).collect::<Vec<_>>();
    let m = names(&masters);
    let refs: Vec<&str> = m.iter().map(String::as_str).collect();
    let mut booted = BTreeSet::new();
    let mut failed_since: BTreeMap<String, Instant> = BTreeMap::new();
    let cut_a = format!("master-{cut_a_index}");
    // Every snapshot of the assembly: at most one etcd cluster id, and a
    // failed agent says why now instead of after the timeout.
    let mut watch = |snap: &BTreeMap<String, Option<Reading>>| {
        let ids = cluster_ids(snap, &refs);
        assert!(
            ids.len() <= 1,
            "two etcd clusters during the assembly: {ids:?}\n{}",
            snap.keys()
                .map(|n| format!("{n}: {}", phase_of(snap, n)))
                .collect::<Vec<_>>()
                .join("\n")
        );
        for (name, r) in snap {
            let Some(r) = r else { continue };
            if booted.insert(name.clone()) {
                tl.log(format!(
                    "{name}: status stream up, phase {}",
                    r.report.phase
                ));
            }
            // A failed agent (bad configuration, no secret) stays
            // failed: say why now instead of after the timeout.
            if r.report.phase == "failed" {
                let since = *failed_since
                    .entry(name.clone())
                    .or_insert_with(Instant::now);
                assert!(
                    since.elapsed() < FAILED_GRACE,
                    "{name}: the agent reports phase failed for {}s: {}\nlogs in {}",
                    FAILED_GRACE.as_secs(),
                    r.report.detail,
                    run_dir.display()
                );
            } else {
                failed_since.remove(name);
            }
        }
    };
    // 7a. The power cut: unless the cluster converged before the cut point
    // (it cannot under TCG in 90 s, but then the cut still happens).
    let at_cut = c
        .wait(
            &format!("the power-cut point of {cut_a}"),
            cut_a_after + Duration::from_secs(30),
            POLL,
            |snap| {
                watch(snap);
                (Instant::now() >= cut_a_at).then(|| phase_of(snap, &cut_a))
            },
        )
        .or_panic("waiting for the power-cut point");
    c.power_off(&cut_a).or_panic("power cut during assembly");
    tl.log(format!(
        "7a. power cut of {cut_a} {}s after its power-on ({at_cut})",
        cut_a_after.as_secs()
    ));
    std::thread::sleep(CUT_PAUSE);
    c.restart(&cut_a)
        .or_panic("powering the cut master on again");
    tl.log(format!("7a. {cut_a} powered on again with its disk"));
    let a = c
        .wait(
            "three healthy voters of one cluster and one VIP holder",
            ASSEMBLY_TIMEOUT,
            POLL,
            |snap| {
                watch(snap);
                converged(snap, &refs)
            },
        )
        .or_panic("self-assembly");
    tl.log(format!(
        "7a. power cut during assembly: PASS (one cluster {} despite the cut of {cut_a}; never two cluster ids)",
        a.cluster_id
    ));
    tl.log(format!(
        "1. assembled: cluster {}, members {:?}, leader {}, VIP on {}",
        a.cluster_id, a.members, a.leader, a.holder
    ));
    for name in &refs {
        let r = c.node(name).or_panic("node").status().expect("status");
        assert_eq!(
            r.report.pki.etcd_ca_pin.as_deref(),
            Some(etcd.ca_pin()),
            "{name}: etcd CA differs from the one derived from the secret"
        );
    }
    // The kube phase starts once the local member is a healthy voter; on
    // these images it must end skipped with the image's own reason.
    let kube = c
        .wait(
            "every master to report its kube phase",
            Duration::from_secs(60),
            POLL,
            |snap| {
                refs.iter()
                    .map(|n| {
                        let k = status::kube(&snap.get(*n)?.as_ref()?.report)?;
                        (k.phase != status::PhaseState::Pending).then(|| (n.to_string(), k))
                    })
                    .collect::<Option<BTreeMap<_, _>>>()
            },
        )
        .or_panic("kube phase on the masters");
    for (name, k) in &kube {
        assert!(
            k.phase
                == status::PhaseState::Skipped {
                    reason: master_reason.clone()
                },
            "{name}: kube phase {:?}: the image has no Kubernetes, so it must be skipped \
             with the image's reason {master_reason:?}",
            k.progress()
        );
    }
    tl.log(format!(
        "1. every master reports the kube phase skipped: {master_reason}"
    ));
    let took = put_via_vip(
        &etcd,
        "/kubeboot-test/one",
        "written-through-the-vip",
        Duration::from_secs(60),
    );
    tl.log(format!(
        "1. wrote /kubeboot-test/one through the VIP ({:.1}s)",
        took.as_secs_f64()
    ));
    for name in &refs {
        read_local(
            &c,
            &etcd,
            name,
            "/kubeboot-test/one",
            "written-through-the-vip",
        );
    }
    tl.log("1. self-assembly: PASS (key readable from every member's own endpoint)");

    // 2. Failover.
    let victim = a.holder.clone();
    let others: Vec<&str> = refs.iter().copied().filter(|n| *n != victim).collect();
    c.power_off(&victim).or_panic("power cut");
    let cut_at = Instant::now();
    tl.log(format!("2. power cut of the VIP holder {victim}"));
    let mut double = 0;
    let new_holder = c
        .wait(
            "another master to hold the VIP",
            FAILOVER_TIMEOUT,
            FAST_POLL,
            |snap| {
                let h = holders(snap, &others);
                double = if h.len() > 1 { double + 1 } else { 0 };
                assert!(double < 12, "two VIP holders for 3 s: {h:?}");
                (h.len() == 1).then(|| h[0].clone())
            },
        )
        .or_panic("failover");
    let status_failover = cut_at.elapsed();
    let write = put_via_vip(
        &etcd,
        "/kubeboot-test/two",
        "after-failover",
        FAILOVER_TIMEOUT,
    );
    tl.log(format!(
        "2. failover: {new_holder} reports holding the VIP {:.1}s after the power cut; \
         first write through the VIP succeeded {:.1}s after it ({:.1}s of retries)",
        status_failover.as_secs_f64(),
        cut_at.elapsed().as_secs_f64(),
        write.as_secs_f64()
    ));
    tl.log("2. failover: PASS");

    // 3. Rejoin with the same disk; the intruder of 6 powers on at the same
    // time so the two boots share the minute a TCG boot costs (the rejoin
    // then also shows the intruder cannot disturb it).
    let old_id = a.members[&victim].clone();
    let rejected = |c: &Cluster| -> u64 {
        refs.iter()
            .filter_map(|n| c.node(n).ok()?.status())
            .map(|r| r.report.discovery.rejected.values().sum::<u64>())
            .sum()
    };
    let rejected_before = rejected(&c);
    c.restart(&victim).or_panic("restarting the killed master");
    tl.log(format!("3. {victim} powered on again with its disk"));
    c.start("intruder", Role::Master, 9, Some(&wrong_secret), true)
        .or_panic("starting the intruder");
    tl.log("6. intruder powered on with a wrong secret (boots during the rejoin)");
    let r3 = c
        .wait(
            &format!("{victim} back as member {old_id} with three healthy voters"),
            REJOIN_TIMEOUT,
            POLL,
            |snap| {
                let conv = converged(snap, &refs)?;
                (conv.members[&victim] == old_id).then_some(conv)
            },
        )
        .or_panic("rejoin");
    read_local(
        &c,
        &etcd,
        &victim,
        "/kubeboot-test/one",
        "written-through-the-vip",
    );
    read_local(&c, &etcd, &victim, "/kubeboot-test/two", "after-failover");
    tl.log(format!(
        "3. rejoin: PASS ({victim} is member {old_id} again with its data; VIP on {})",
        r3.holder
    ));

    // 6. Intruder with a wrong secret (powered on with the rejoin).
    c.wait("the intruder's status stream", BOOT_TIMEOUT, POLL, |snap| {
        snap.get("intruder")?.as_ref().map(drop)
    })
    .or_panic("intruder boot");
    tl.log(format!(
        "6. intruder booted; watching for {}s",
        INTRUDER_WATCH.as_secs()
    ));
    let watch_start = Instant::now();
    while watch_start.elapsed() < INTRUDER_WATCH {
        let snap = c.snapshot();
        let now = converged(&snap, &refs).unwrap_or_else(|| {
            panic!(
                "the masters stopped being a converged 3-voter cluster with the intruder up:\n{}",
                c.describe()
            )
        });
        assert_eq!(
            now.members, r3.members,
            "member set changed with the intruder up"
        );
        assert_eq!(now.holder, r3.holder, "the VIP moved with the intruder up");
        if let Some(Some(i)) = snap.get("intruder") {
            assert_ne!(
                i.report.etcd.cluster_id.as_deref(),
                Some(r3.cluster_id.as_str()),
                "the intruder joined the cluster"
            );
        }
        std::thread::sleep(POLL);
    }
    let rejected_after = rejected(&c);
    assert!(
        rejected_after > rejected_before,
        "the masters rejected no message while the intruder ran ({rejected_before} -> {rejected_after}): was it on the network?\n{}",
        c.describe()
    );
    c.remove("intruder").or_panic("removing the intruder");
    tl.log(format!(
        "6. intruder: PASS (never a member, VIP stayed on {}, masters rejected {} messages)",
        r3.holder,
        rejected_after - rejected_before
    ));

    // 5. Partition of the VIP holder.
    let cut = r3.holder.clone();
    let rest: Vec<&str> = refs.iter().copied().filter(|n| *n != cut).collect();
    c.cut(&cut).or_panic("cutting the tap");
    let cut_at = Instant::now();
    tl.log(format!("5. cut {cut} (VIP holder) off the network"));
    let (gave_up, taken) = c
        .wait(
            &format!("{cut} to give up the VIP and one of {rest:?} to hold it"),
            PARTITION_TIMEOUT,
            FAST_POLL,
            |snap| {
                let cut_state = snap
                    .get(&cut)?
                    .as_ref()
                    .and_then(|r| status::vip_state(&r.report).map(str::to_owned))?;
                let h = holders(snap, &rest);
                (cut_state != "master" && h.len() == 1).then(|| (cut_state, h[0].clone()))
            },
        )
        .or_panic("partition");
    tl.log(format!(
        "5. {cut} reports vrrp {gave_up}, {taken} holds the VIP ({:.1}s after the cut)",
        cut_at.elapsed().as_secs_f64()
    ));
    put_via_vip(
        &etcd,
        "/kubeboot-test/three",
        "during-partition",
        PARTITION_TIMEOUT,
    );
    tl.log("5. the two others keep quorum: write through the VIP succeeded");
    c.heal(&cut).or_panic("healing the tap");
    let healed_at = Instant::now();
    let r5 = c
        .wait(
            "all three to converge after the heal",
            REJOIN_TIMEOUT,
            POLL,
            |snap| converged(snap, &refs),
        )
        .or_panic("heal");
    read_local(&c, &etcd, &cut, "/kubeboot-test/three", "during-partition");
    tl.log(format!(
        "5. partition: PASS (converged {:.1}s after the heal, VIP on {})",
        healed_at.elapsed().as_secs_f64(),
        r5.holder
    ));

    // 4. Replacement of a master gone for good by a blank one.
    let gone = rest
        .iter()
        .copied()
        .find(|n| *n != r5.holder)
        .unwrap_or(rest[0])
        .to_owned();
    let gone_id = r5.members[&gone].clone();
    c.remove(&gone).or_panic("removing a master for good");
    masters.retain(|n| *n != gone);
    masters.push("master-4".to_owned());
    c.start("master-4", Role::Master, 4, None, true)
        .or_panic("starting the replacement");
    let replaced_at = Instant::now();
    tl.log(format!(
        "4. {gone} (member {gone_id}) powered off for good; master-4 powered on with a blank disk"
    ));
    // 8 (worker) shares this boot: the worker image powers on now.
    c.start("worker-1", Role::Worker, 21, None, true)
        .or_panic("starting the worker");
    tl.log("8. worker-1 powered on (boots during the replacement)");
    let m = names(&masters);
    let refs4: Vec<&str> = m.iter().map(String::as_str).collect();
    // 7b. Power cut of the joining master at the seeded point.
    let at_cut = c
        .wait(
            "the power-cut point of master-4",
            cut_b_after + Duration::from_secs(30),
            POLL,
            |snap| {
                let ids = cluster_ids(snap, &refs4);
                assert!(ids.len() <= 1, "two etcd clusters during the join: {ids:?}");
                (replaced_at.elapsed() >= cut_b_after).then(|| phase_of(snap, "master-4"))
            },
        )
        .or_panic("waiting for the power-cut point");
    c.power_off("master-4")
        .or_panic("power cut during the join");
    tl.log(format!(
        "7b. power cut of master-4 {}s after its power-on ({at_cut})",
        cut_b_after.as_secs()
    ));
    std::thread::sleep(CUT_PAUSE);
    c.restart("master-4").or_panic("powering master-4 on again");
    tl.log("7b. master-4 powered on again with its (half-written) disk");
    let r4 = c
        .wait(
            &format!("member {gone_id} removed and master-4 a healthy voter"),
            REPLACE_TIMEOUT,
            POLL,
            |snap| {
                let ids = cluster_ids(snap, &refs4);
                assert!(ids.len() <= 1, "two etcd clusters during the join: {ids:?}");
                let conv = converged(snap, &refs4)?;
                (!conv.members.values().any(|id| *id == gone_id)).then_some(conv)
            },
        )
        .or_panic("replacement");
    read_local(
        &c,
        &etcd,
        "master-4",
        "/kubeboot-test/one",
        "written-through-the-vip",
    );
    tl.log(format!(
        "4. replacement: PASS ({:.1}s; members {:?}, VIP on {})",
        replaced_at.elapsed().as_secs_f64(),
        r4.members,
        r4.holder
    ));
    tl.log("7b. power cut during the join: PASS");

    // 8. Worker: finds every live master through discovery, is no etcd
    // member, and reports the Kubernetes join as skipped with the reason
    // (these images are built without Kubernetes components; the join
    // material is derived from the secret, see agent/README.md).
    let master_ips: BTreeSet<String> = refs4
        .iter()
        .map(|n| c.node(n).or_panic("node").ip().to_string())
        .collect();
    let (kube_state, reason) = c
        .wait(
            "worker-1 to see every master and report its kube phase",
            BOOT_TIMEOUT,
            POLL,
            |snap| {
                let w = &snap.get("worker-1")?.as_ref()?.report;
                let seen: BTreeSet<String> = w
                    .discovery
                    .peers
                    .iter()
                    .filter(|p| p.role == "master")
                    .flat_map(|p| p.addresses.iter().cloned())
                    .collect();
                let phase = w.other.get("kube")?.get("phase")?;
                let state = phase.get("state")?.as_str()?.to_owned();
                let reason = phase
                    .get("reason")
                    .and_then(|r| r.as_str())
                    .unwrap_or("")
                    .to_owned();
                (seen.is_superset(&master_ips) && state != "pending").then_some((state, reason))
            },
        )
        .or_panic("worker");
    let w = c
        .node("worker-1")
        .or_panic("node")
        .status()
        .expect("worker status");
    assert_eq!(w.report.node.role, "worker", "worker-1 reports its role");
    assert_eq!(
        w.report.etcd.member_id, None,
        "the worker must not be an etcd member"
    );
    assert!(
        kube_state == "skipped" && reason == worker_reason,
        "worker-1: kube phase {kube_state:?} ({reason:?}); the image has no Kubernetes, \
         so the join must be reported as skipped with the image's reason {worker_reason:?}"
    );
    // The join material the worker got from authenticated discovery: the
    // API endpoint on the VIP, the Kubernetes CA pin and the token id, all
    // equal to what the harness derives itself from the secret.
    let (want_pin, want_token_id) = join_material(&join_secret);
    let join = c
        .wait(
            "worker-1 to report the join material",
            Duration::from_secs(60),
            POLL,
            |snap| {
                let w = &snap.get("worker-1")?.as_ref()?.report;
                w.other.get("kube")?.get("join").cloned()
            },
        )
        .or_panic("worker join material");
    let field = |k: &str| join.get(k).and_then(|v| v.as_str()).unwrap_or("");
    assert_eq!(
        field("api_endpoint"),
        format!("{VIP}:6443"),
        "worker-1: join API endpoint is not on the VIP: {join}"
    );
    assert_eq!(
        field("ca_pin"),
        want_pin,
        "worker-1: join CA pin differs from the Kubernetes CA derived from the secret: {join}"
    );
    assert_eq!(
        field("token_id"),
        want_token_id,
        "worker-1: join token id differs from the one derived from the secret: {join}"
    );
    assert_eq!(
        field("source"),
        "discovery",
        "worker-1: the join material must come from discovery: {join}"
    );
    let derived = kubeadm::BootstrapToken::derive(
        &cluster_config::ClusterSecret::new(join_secret.clone()).expect("test secret"),
        qemu_tests::cluster::DEFAULT_CLUSTER_NAME,
    )
    .expect("deriving the token");
    assert!(
        !join.to_string().contains(&derived.expose()[7..]),
        "worker-1 reports the token secret in its status: never allowed"
    );
    tl.log(format!(
        "8. worker join material from discovery: {VIP}:6443, CA pin matches, token id {want_token_id}"
    ));
    let after = converged(&c.snapshot(), &refs4).unwrap_or_else(|| {
        panic!(
            "the masters stopped being a converged 3-voter cluster with the worker up:\n{}",
            c.describe()
        )
    });
    assert_eq!(
        after.members, r4.members,
        "member set changed with the worker up"
    );
    tl.log(format!(
        "8. worker: PASS (sees masters {master_ips:?}, no etcd member, kube {kube_state}: {reason})"
    ));

    // 9. Quorum loss and `agent recover` (issue 17). The worker's part is
    // done: it powers off and leaves its core to the masters.
    c.power_off("worker-1").or_panic("powering the worker off");
    let secret_file = run_dir.join("cluster.secret");
    // Mode 0600, like any key.
    pki::write_key_file(&secret_file, &join_secret).expect("writing the secret file");
    let secret_arg = secret_file.display().to_string();
    let survivor = after.holder.clone();
    let survivor_ip = c.node(&survivor).or_panic("node").ip().to_string();
    let survivor_name = c
        .node(&survivor)
        .or_panic("node")
        .status()
        .expect("survivor status")
        .report
        .node
        .name;
    let lost: Vec<String> = refs4
        .iter()
        .filter(|n| **n != survivor)
        .map(|n| n.to_string())
        .collect();
    let old_cluster = after.cluster_id.clone();
    for i in 0..REC_KEYS {
        put_via_vip(&etcd, &rec_key(i), &rec_value(i), FAILOVER_TIMEOUT);
    }
    let recover_args = |confirm: Option<&str>| -> Vec<String> {
        let mut a: Vec<String> = [
            "recover",
            "--node",
            &survivor_ip,
            "--secret-file",
            &secret_arg,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if let Some(name) = confirm {
            a.extend(["--confirm-node".to_owned(), name.to_owned()]);
        }
        a
    };
    // Refused while the cluster has a quorum (from the operator's machine
    // on the cluster network: the images have no login).
    let (ok, out) = agent_cli(&c, &recover_args(Some(&survivor_name)));
    assert!(
        !ok && out.contains("has a quorum"),
        "agent recover must be refused while the quorum exists:\n{out}"
    );
    for n in &lost {
        c.power_off(n).or_panic("powering a master off for good");
    }
    tl.log(format!(
        "9. {REC_KEYS} keys written through the VIP; {lost:?} powered off for good \
         (their disks kept for later); survivor {survivor} ({survivor_name})"
    ));
    let lost_phase = c
        .wait(
            &format!("{survivor} to report the quorum lost and drop the VIP"),
            FAILOVER_TIMEOUT,
            POLL,
            |snap| {
                let r = &snap.get(survivor.as_str())?.as_ref()?.report;
                (r.phase != "ready" && !status::holds_vip(r))
                    .then(|| format!("{}: {}", r.phase, r.detail))
            },
        )
        .or_panic("quorum loss");
    tl.log(format!(
        "9. survivor without quorum, VIP dropped ({lost_phase})"
    ));
    let (ok, out) = agent_cli(&c, &recover_args(None));
    assert!(
        !ok && out.contains("--confirm-node"),
        "agent recover without the confirmation must be refused and name the flag:\n{out}"
    );
    let recover_at = Instant::now();
    let (ok, out) = agent_cli(&c, &recover_args(Some(&survivor_name)));
    let recover_took = recover_at.elapsed();
    assert!(
        ok && out.contains("recovered: epoch 1"),
        "agent recover on {survivor}:\n{out}\n{}",
        c.describe()
    );
    tl.log(format!(
        "9. agent recover --node {survivor_ip} --confirm-node {survivor_name}: {:.1}s\n{out}",
        recover_took.as_secs_f64()
    ));
    // The one-member cluster is a quorum: the VIP comes back with it.
    put_via_vip(
        &etcd,
        AFTER_RECOVERY_KEY,
        "written-after-recover",
        REJOIN_TIMEOUT,
    );
    let vip_back = recover_at.elapsed();
    tl.log(format!(
        "9. write through the VIP {:.1}s after agent recover began",
        vip_back.as_secs_f64()
    ));
    // Two blank machines replace the lost masters.
    let blanks = ["master-5", "master-6"];
    for (name, index) in blanks.iter().zip([5u8, 6]) {
        c.start(name, Role::Master, index, None, true)
            .or_panic("powering on a blank master");
    }
    let recovered_set = [survivor.as_str(), blanks[0], blanks[1]];
    let rec = c
        .wait(
            "the survivor and two blank masters to be one healthy 3-voter cluster",
            REPLACE_TIMEOUT,
            POLL,
            |snap| {
                let conv = converged(snap, &recovered_set)?;
                (conv.cluster_id != old_cluster).then_some(conv)
            },
        )
        .or_panic("recovery");
    let rto = recover_at.elapsed();
    read_rec_keys_via_vip(&etcd);
    assert_eq!(
        cluster_ids(&c.snapshot(), &recovered_set),
        BTreeSet::from([rec.cluster_id.clone()]),
        "one cluster id everywhere after the recovery"
    );
    tl.log(format!(
        "9. recovery: 3 healthy voters with the VIP on {} {:.1}s after agent recover began \
         (cluster {old_cluster} -> {}); every key readable through the VIP",
        rec.holder,
        rto.as_secs_f64(),
        rec.cluster_id
    ));
    // The lost masters' OLD disks boot again (while master-6 is lost in
    // turn, so a voter's place frees up after the dead-member grace):
    // they must hear epoch 1, keep their old data aside and join the new
    // cluster, never bring the old one back.
    c.power_off(blanks[1]).or_panic("powering master-6 off");
    for n in &lost {
        c.restart(n).or_panic("booting an old disk again");
    }
    tl.log(format!(
        "9. old disks of {lost:?} powered on again; {} powered off",
        blanks[1]
    ));
    let lost_refs: Vec<&str> = lost.iter().map(String::as_str).collect();
    let mut every: Vec<&str> = vec![survivor.as_str(), blanks[0]];
    every.extend(&lost_refs);
    let rejoined = c
        .wait(
            "an old disk to replace master-6 as a voter of the new cluster, the other in epoch 1",
            REPLACE_TIMEOUT,
            POLL,
            |snap| {
                for n in &every {
                    let Some(r) = snap.get(*n).and_then(Option::as_ref) else {
                        continue;
                    };
                    assert!(
                        !(r.report.etcd.cluster_id.as_deref() == Some(old_cluster.as_str())
                            && status::holds_vip(&r.report)),
                        "{n} holds the VIP for the OLD cluster {old_cluster}: resurrected\n{}",
                        c.describe()
                    );
                }
                let ids = cluster_ids(snap, &[survivor.as_str(), blanks[0]]);
                assert!(
                    ids.len() <= 1 && !ids.contains(&old_cluster),
                    "the recovered voters report {ids:?} (old cluster {old_cluster})"
                );
                let all_epoch_1 = lost_refs.iter().all(|n| epoch_of(snap, n) == Some(1));
                let voter = lost_refs.iter().find(|n| {
                    converged(snap, &[survivor.as_str(), blanks[0], n])
                        .is_some_and(|conv| conv.cluster_id == rec.cluster_id)
                })?;
                all_epoch_1.then(|| voter.to_string())
            },
        )
        .or_panic("old disks rejoining");
    let standby = lost_refs
        .iter()
        .find(|n| **n != rejoined)
        .map(|n| n.to_string())
        .unwrap_or_default();
    read_local(
        &c,
        &etcd,
        &rejoined,
        AFTER_RECOVERY_KEY,
        "written-after-recover",
    );
    let sr = c
        .node(&standby)
        .or_panic("node")
        .status()
        .expect("standby status");
    assert_ne!(
        sr.report.etcd.cluster_id.as_deref(),
        Some(old_cluster.as_str()),
        "{standby} runs the old cluster"
    );
    tl.log(format!(
        "9. old disks: {rejoined} is a voter of the new cluster, {standby} in epoch 1 ({}: {}); \
         neither brought the old cluster back",
        sr.report.phase, sr.report.detail
    ));
    tl.log(format!(
        "9. quorum loss and recovery: PASS (agent recover {:.1}s, VIP writes {:.1}s, \
         3 voters {:.1}s after it began)",
        recover_took.as_secs_f64(),
        vip_back.as_secs_f64(),
        rto.as_secs_f64()
    ));

    // 10. Every master lost; three new blank machines restore the latest
    // snapshot, streamed off the cluster beforehand (`agent etcd snapshot
    // --node --out`): the data is back, in a new cluster.
    put_via_vip(&etcd, BEFORE_BACKUP_KEY, "in-the-backup", FAILOVER_TIMEOUT);
    let holder_ip = c
        .node(
            &holders(&c.snapshot(), &[survivor.as_str(), blanks[0], &rejoined])
                .first()
                .cloned()
                .unwrap_or_else(|| survivor.clone()),
        )
        .or_panic("node")
        .ip()
        .to_string();
    let seed_dir = run_dir.join("seed");
    let restore_dir = seed_dir.join("kubeboot-restore");
    std::fs::create_dir_all(&restore_dir).expect("seed dir");
    let backup = restore_dir.join("snapshot.db");
    let backup_arg = backup.display().to_string();
    let (ok, out) = agent_cli(
        &c,
        &[
            "etcd",
            "snapshot",
            "--node",
            &holder_ip,
            "--secret-file",
            &secret_arg,
            "--out",
            &backup_arg,
        ]
        .map(str::to_owned),
    );
    assert!(
        ok,
        "agent etcd snapshot --node {holder_ip} --out {backup_arg}:\n{out}"
    );
    let meta = agent::etcd::snapshot::verify(&backup).unwrap_or_else(|e| panic!("{e}\n{out}"));
    assert_eq!(meta.cluster_id, rec.cluster_id, "the backup's cluster");
    tl.log(format!("10. off-node snapshot: {}", out.trim()));
    let running = c.running();
    for n in &running {
        c.power_off(n).or_panic("powering every master off");
    }
    tl.log(format!(
        "10. every master powered off for good: {running:?}"
    ));
    c.set_config(Some(
        "[etcd]\nrestore_from = \"/var/lib/kubeboot-restore/snapshot.db\"\n".to_owned(),
    ));
    let fresh = ["master-7", "master-8", "master-9"];
    let restore_at = Instant::now();
    for (name, index) in fresh.iter().zip([7u8, 8, 9]) {
        qemu_tests::create_seeded_disk(&c.disk_path(name), 8 << 30, &seed_dir)
            .or_panic("a data disk carrying the snapshot");
        c.start(name, Role::Master, index, None, false)
            .or_panic("powering on a new master");
    }
    let restored = c
        .wait(
            "three new masters to bootstrap one cluster from the snapshot",
            REPLACE_TIMEOUT,
            POLL,
            |snap| {
                let ids = cluster_ids(snap, &fresh);
                assert!(ids.len() <= 1, "two clusters from one snapshot: {ids:?}");
                converged(snap, &fresh)
            },
        )
        .or_panic("restore");
    assert!(
        restored.cluster_id != old_cluster && restored.cluster_id != rec.cluster_id,
        "the restored cluster must have a new id: {}",
        restored.cluster_id
    );
    read_rec_keys_via_vip(&etcd);
    for (key, want) in [
        (AFTER_RECOVERY_KEY, "written-after-recover"),
        (BEFORE_BACKUP_KEY, "in-the-backup"),
    ] {
        for n in fresh {
            read_local(&c, &etcd, n, key, want);
        }
    }
    tl.log(format!(
        "10. restore from the snapshot: PASS (3 voters, cluster {}, VIP on {}, every key back; \
         {:.1}s from power-on)",
        restored.cluster_id,
        restored.holder,
        restore_at.elapsed().as_secs_f64()
    ));

    tl.log(format!(
        "all scenarios passed in {:.1}s",
        tl.0.elapsed().as_secs_f64()
    ));

    // Cleanup leaves nothing running: no guest, no dnsmasq, no namespace.
    let netns = c.network().name().to_owned();
    let mut pids: Vec<(String, i32)> = c
        .nodes()
        .values()
        .filter_map(|n| Some((format!("QEMU of {}", n.name), n.pid()?)))
        .collect();
    pids.extend(c.network().dnsmasq_pid().map(|p| ("dnsmasq".to_owned(), p)));
    assert!(
        pids.len() >= 4,
        "expected 3 guests and dnsmasq running: {pids:?}"
    );
    drop(c);
    assert!(
        !Network::exists(&netns),
        "network namespace {netns} still exists after cleanup"
    );
    for (what, pid) in &pids {
        assert!(
            !qemu_tests::proc::alive(*pid),
            "{what} (pid {pid}) still runs after cleanup"
        );
    }
    // Success: the disks, the snapshot and the secret file go, the logs
    // stay (small) for the curious.
    let _ = std::fs::remove_dir_all(&seed_dir);
    let _ = std::fs::remove_file(&secret_file);
    if let Ok(entries) = std::fs::read_dir(&run_dir) {
        for e in entries.flatten() {
            if e.path().extension().is_some_and(|x| x == "qcow2") {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    tl.log(format!(
        "cleanup verified: namespace {netns} gone, {} processes stopped; total {:.1}s",
        pids.len(),
        tl.0.elapsed().as_secs_f64()
    ));
}
