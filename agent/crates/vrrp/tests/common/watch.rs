//! Watching a [`Lab`] run and judging the quorum rule against the ground
//! truth the test itself controls:
//!
//! - [`HolderSampler`]: which nodes hold the VIP, every 20 ms, through
//!   netlink sockets opened inside each node's namespace (the crate's own
//!   [`vrrp::netlink::Netlink`]; no `ip` process per sample).
//! - [`AdvertCapture`]: every VRRP advert crossing `br0` and `br1`
//!   (tcpdump in the hub namespace), with its sender and priority.
//! - [`Topology`] / [`Timeline`]: who is cut off, on which side of a
//!   partition, whose etcd runs, which nodes are dead; from that, which
//!   nodes have quorum (their etcd runs and sees a majority of the members
//!   with running etcd) and since when they have not.
//! - [`judge`]: the verdict over samples and adverts (see [`Bounds`] for
//!   what counts as a violation).

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use super::{require, Lab, VIP};

/// One sample: when, and a bit per node holding the VIP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// Wall-clock time of the sample.
    pub at: SystemTime,
    /// Bit `i` set: node `i` holds the VIP.
    pub holders: u32,
}

impl Sample {
    /// The holders as node indexes.
    pub fn nodes(&self) -> Vec<usize> {
        (0..32).filter(|i| self.holders & (1 << i) != 0).collect()
    }
}

/// Samples the VIP holders of a lab periodically on its own thread.
pub struct HolderSampler {
    samples: Arc<Mutex<Vec<Sample>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

fn setns(path: &str) -> std::io::Result<File> {
    let f = File::open(path)?;
    // SAFETY: setns(2) on a valid descriptor; it only changes this
    // thread's network namespace.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(f)
}

impl HolderSampler {
    /// Starts sampling every `period`; returns once the first sample is in.
    pub fn start(lab: &Lab, period: Duration) -> HolderSampler {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let namespaces: Vec<String> = lab.nodes.iter().map(|n| n.ns.clone()).collect();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = {
            let samples = samples.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("sampler runtime");
                rt.block_on(async move {
                    // Each socket is created inside its node's namespace and
                    // stays bound to it after the thread switches back.
                    let own = File::open("/proc/thread-self/ns/net").expect("own netns");
                    let mut links = Vec::new();
                    for ns in &namespaces {
                        let _node = setns(&format!("/var/run/netns/{ns}"))
                            .unwrap_or_else(|e| panic!("entering {ns}: {e}"));
                        let nl = vrrp::netlink::Netlink::open("eth0", VIP.parse().expect("VIP"))
                            .expect("netlink socket");
                        // SAFETY: as above, back to the thread's own namespace.
                        assert_eq!(
                            unsafe { libc::setns(own.as_raw_fd(), libc::CLONE_NEWNET) },
                            0,
                            "leaving {ns}"
                        );
                        let index = nl.link_info().await.expect("eth0 in the node").index;
                        links.push((nl, index));
                    }
                    let mut first = true;
                    let mut tick = tokio::time::interval(period);
                    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    while !stop.load(Ordering::Relaxed) {
                        tick.tick().await;
                        let at = SystemTime::now();
                        let mut holders = 0u32;
                        for (i, (nl, index)) in links.iter().enumerate() {
                            if nl.has_vip(*index).await.unwrap_or(false) {
                                holders |= 1 << i;
                            }
                        }
                        samples
                            .lock()
                            .expect("samples lock")
                            .push(Sample { at, holders });
                        if first {
                            first = false;
                            let _ = ready_tx.send(());
                        }
                    }
                });
            })
        };
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the holder sampler took its first sample");
        HolderSampler {
            samples,
            stop,
            thread: Some(thread),
        }
    }

    /// All samples so far.
    pub fn samples(&self) -> Vec<Sample> {
        self.samples.lock().expect("samples lock").clone()
    }

    /// The newest sample.
    pub fn latest(&self) -> Sample {
        *self
            .samples
            .lock()
            .expect("samples lock")
            .last()
            .expect("at least one sample")
    }

    /// Waits until the newest samples show `cond` for `stable` in a row;
    /// returns that sample, or None after `timeout`.
    pub fn wait(
        &self,
        timeout: Duration,
        stable: Duration,
        cond: impl Fn(&Sample) -> bool,
    ) -> Option<Sample> {
        let until = std::time::Instant::now() + timeout;
        let mut since: Option<SystemTime> = None;
        while std::time::Instant::now() < until {
            let s = self.latest();
            if cond(&s) {
                let start = *since.get_or_insert(s.at);
                if s.at.duration_since(start).unwrap_or_default() >= stable {
                    return Some(s);
                }
            } else {
                since = None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for HolderSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One advert seen on a bridge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Advert {
    /// Capture time (wall clock).
    pub at: SystemTime,
    /// Sender.
    pub src: Ipv4Addr,
    /// Advertised priority.
    pub priority: u8,
}

/// Parses one line of `tcpdump -n -tt` output for a VRRP advert:
/// `1732412345.123456 IP 10.77.0.3 > 224.0.0.18: VRRPv3, Advertisement,
/// vrid 51, prio 100, intvl 20cs, length 12`.
pub fn parse_tcpdump(line: &str) -> Option<Advert> {
    let mut words = line.split_whitespace();
    let ts: f64 = words.next()?.parse().ok()?;
    if words.next()? != "IP" {
        return None;
    }
    let src: Ipv4Addr = words.next()?.parse().ok()?;
    let rest: Vec<&str> = words.collect();
    let at = rest.iter().position(|w| *w == "prio")?;
    let priority: u8 = rest.get(at + 1)?.trim_end_matches(',').parse().ok()?;
    Some(Advert {
        at: SystemTime::UNIX_EPOCH + Duration::from_secs_f64(ts),
        src,
        priority,
    })
}

/// tcpdump on both bridges of the hub, collecting adverts.
pub struct AdvertCapture {
    children: Vec<Child>,
    adverts: Arc<Mutex<Vec<Advert>>>,
}

impl AdvertCapture {
    /// Starts capturing; returns once tcpdump listens on both bridges.
    pub fn start(lab: &Lab) -> AdvertCapture {
        require("tcpdump", "tcpdump");
        let adverts = Arc::new(Mutex::new(Vec::new()));
        let mut children = Vec::new();
        for br in ["br0", "br1"] {
            let mut child = Command::new("ip")
                .args(["netns", "exec", &lab.hub, "tcpdump", "-i", br])
                .args(["-n", "-tt", "-l", "-p", "-U", "vrrp"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("starting tcpdump (Debian package tcpdump)");
            let stdout = child.stdout.take().expect("piped stdout");
            let stderr = child.stderr.take().expect("piped stderr");
            let sink = adverts.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    if let Some(a) = parse_tcpdump(&line) {
                        sink.lock().expect("adverts lock").push(a);
                    }
                }
            });
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if line.contains("listening on") {
                        let _ = tx.send(());
                    }
                }
            });
            rx.recv_timeout(Duration::from_secs(10))
                .unwrap_or_else(|_| panic!("tcpdump did not start listening on {br}"));
            children.push(child);
        }
        AdvertCapture { children, adverts }
    }

    /// All adverts so far, in capture order per bridge.
    pub fn adverts(&self) -> Vec<Advert> {
        let mut v = self.adverts.lock().expect("adverts lock").clone();
        v.sort_by_key(|a| a.at);
        v
    }
}

impl Drop for AdvertCapture {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The state of one node, as the test set it up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeState {
    /// Its port on the hub is up.
    pub link: bool,
    /// The bridge its port is on (0 or 1).
    pub bridge: u8,
    /// Its etcd runs.
    pub etcd: bool,
    /// Its VRRP instance runs.
    pub vrrp: bool,
    /// The node is dead (processes killed, link down): its leftover
    /// address reaches nobody and is not judged.
    pub dead: bool,
    /// The node is an etcd member (a client node is not).
    pub member: bool,
}

/// Every node's state; the ground truth of quorum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    /// Per node.
    pub nodes: Vec<NodeState>,
}

impl Topology {
    /// `n` connected nodes, all running.
    pub fn healthy(n: usize) -> Topology {
        Topology {
            nodes: vec![
                NodeState {
                    link: true,
                    bridge: 0,
                    etcd: true,
                    vrrp: true,
                    dead: false,
                    member: true,
                };
                n
            ],
        }
    }

    /// Nodes `i` and `j` can talk.
    pub fn connected(&self, i: usize, j: usize) -> bool {
        let (a, b) = (&self.nodes[i], &self.nodes[j]);
        if a.dead || b.dead {
            return false;
        }
        i == j || (a.link && b.link && a.bridge == b.bridge)
    }

    /// Node `i` has quorum: it is a member, its etcd runs and, with the
    /// members it can reach whose etcd runs, forms a majority of all
    /// members.
    pub fn quorum(&self, i: usize) -> bool {
        let n = self.nodes.len();
        let members = self.nodes.iter().filter(|s| s.member).count();
        let s = &self.nodes[i];
        s.member
            && s.etcd
            && !s.dead
            && (0..n)
                .filter(|&j| self.connected(i, j) && self.nodes[j].member && self.nodes[j].etcd)
                .count()
                > members / 2
    }

    /// The nodes connected to a node with quorum (the majority's side),
    /// if there is one.
    pub fn majority_side(&self) -> Option<Vec<usize>> {
        let n = self.nodes.len();
        let q = (0..n).find(|&i| self.quorum(i))?;
        Some((0..n).filter(|&j| self.connected(q, j)).collect())
    }

    /// Someone can hold the VIP: a node with quorum runs its instance.
    pub fn holder_possible(&self) -> bool {
        (0..self.nodes.len()).any(|i| self.quorum(i) && self.nodes[i].vrrp)
    }
}

/// The topology over time, as the test changed it.
#[derive(Debug, Clone)]
pub struct Timeline {
    /// (from when, topology, what happened, whether it merged sides).
    pub events: Vec<(SystemTime, Topology, String, bool)>,
}

impl Timeline {
    /// Starts with `topo` at `at`.
    pub fn new(at: SystemTime, topo: Topology) -> Timeline {
        Timeline {
            events: vec![(at, topo, "start".to_owned(), false)],
        }
    }

    /// Records a change that took effect at `at` (take the time *before*
    /// carrying it out: a loss of quorum then counts from the earliest
    /// moment it can have happened). `merge`: it reconnected nodes or
    /// restarted instances (two masters may meet for one advert interval).
    pub fn push(&mut self, at: SystemTime, topo: Topology, what: impl Into<String>, merge: bool) {
        self.events.push((at, topo, what.into(), merge));
    }

    /// The current topology.
    pub fn now(&self) -> &Topology {
        &self.events.last().expect("a start event").1
    }

    fn index_at(&self, t: SystemTime) -> usize {
        self.events
            .iter()
            .rposition(|(at, ..)| *at <= t)
            .unwrap_or(0)
    }

    /// The topology in force at `t`.
    pub fn at(&self, t: SystemTime) -> &Topology {
        &self.events[self.index_at(t)].1
    }

    /// Since when node `i` has been without quorum at `t` (None if it
    /// has quorum at `t`).
    pub fn no_quorum_since(&self, i: usize, t: SystemTime) -> Option<SystemTime> {
        let mut k = self.index_at(t);
        if self.events[k].1.quorum(i) {
            return None;
        }
        while k > 0 && !self.events[k - 1].1.quorum(i) {
            k -= 1;
        }
        Some(self.events[k].0)
    }

    /// Node `i`'s link was down (cut, or the node dead) at some moment
    /// in `[from, to]`: its adverts could not reach the capture then.
    pub fn link_down_between(&self, i: usize, from: SystemTime, to: SystemTime) -> bool {
        self.events[self.index_at(from)..=self.index_at(to)]
            .iter()
            .any(|(_, topo, ..)| {
                let s = &topo.nodes[i];
                !s.link || s.dead
            })
    }

    /// The last merge at or before `t`.
    pub fn last_merge(&self, t: SystemTime) -> Option<SystemTime> {
        self.events[..=self.index_at(t)]
            .iter()
            .rev()
            .find(|e| e.3)
            .map(|e| e.0)
    }

    /// What happened, one line per event, times relative to the start.
    pub fn describe(&self) -> String {
        let t0 = self.events[0].0;
        self.events
            .iter()
            .map(|(at, _, what, _)| format!("  {:>8.3} s {what}", secs(*at, t0)))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn secs(t: SystemTime, t0: SystemTime) -> f64 {
    match t.duration_since(t0) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

/// What counts as a violation of the quorum rule.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// The proof lease: a node without quorum may keep the VIP this long
    /// after it lost quorum (its last proof can be that recent), no more.
    pub lease: Duration,
    /// Added to the lease for sampling and processing (20 ms samples,
    /// the resignation itself, the `ip` command that cut the link).
    pub hold_slack: Duration,
    /// A node that starts holding (first sample, or first advert after
    /// silence or priority 0) later than this after losing quorum claimed
    /// without quorum (its proof cannot have been issued after the cut;
    /// this covers a proof in flight at the cut and sampling).
    pub claim_slack: Duration,
    /// Two holders on the majority's side are tolerated this long after a
    /// merge (two masters meet; the lower one yields on the first advert).
    pub merge_settle: Duration,
    /// Silence after which an advert starts a new mastership (unless the
    /// node's own link was down during the silence: its adverts were
    /// sent but reached no capture, and the samples judge whether it
    /// kept holding).
    pub advert_gap: Duration,
}

/// The verdict over one run.
#[derive(Debug, Clone, Default)]
pub struct Verdict {
    /// Samples judged.
    pub samples: usize,
    /// Adverts judged.
    pub adverts: usize,
    /// Samples where a node held the VIP past lease + slack without quorum.
    pub minority_samples: Vec<String>,
    /// Adverts (priority > 0) from a node without quorum past lease + slack.
    pub minority_adverts: Vec<String>,
    /// A node without quorum started holding or advertising.
    pub minority_claims: Vec<String>,
    /// Samples with two holders on the majority's side (outside merges).
    pub two_holders: Vec<String>,
    /// The longest a node was seen holding after losing quorum.
    pub longest_minority_hold: Duration,
}

impl Verdict {
    /// No violation of any kind.
    pub fn clean(&self) -> bool {
        self.minority_samples.is_empty()
            && self.minority_adverts.is_empty()
            && self.minority_claims.is_empty()
            && self.two_holders.is_empty()
    }

    /// Adds another run's verdict.
    pub fn merge(&mut self, o: Verdict) {
        self.samples += o.samples;
        self.adverts += o.adverts;
        self.minority_samples.extend(o.minority_samples);
        self.minority_adverts.extend(o.minority_adverts);
        self.minority_claims.extend(o.minority_claims);
        self.two_holders.extend(o.two_holders);
        self.longest_minority_hold = self.longest_minority_hold.max(o.longest_minority_hold);
    }

    /// One line of counts.
    pub fn summary(&self) -> String {
        format!(
            "{} samples, {} adverts: {} minority-holder samples, {} minority adverts, \
             {} minority claims, {} two-holder samples; longest hold after losing quorum {} ms",
            self.samples,
            self.adverts,
            self.minority_samples.len(),
            self.minority_adverts.len(),
            self.minority_claims.len(),
            self.two_holders.len(),
            self.longest_minority_hold.as_millis()
        )
    }
}

/// Judges `samples` and `adverts` (restricted to `[from, to]`) against the
/// timeline. `addrs[i]` is node `i`'s address.
pub fn judge(
    tl: &Timeline,
    samples: &[Sample],
    adverts: &[Advert],
    addrs: &[Ipv4Addr],
    b: Bounds,
    from: SystemTime,
    to: SystemTime,
) -> Verdict {
    let t0 = tl.events[0].0;
    let mut v = Verdict::default();
    let mut held_before = 0u32;
    for s in samples.iter().filter(|s| s.at <= to) {
        if s.at < from {
            held_before = s.holders;
            continue;
        }
        v.samples += 1;
        let topo = tl.at(s.at);
        let alive = |i: usize| !topo.nodes[i].dead;
        for i in s.nodes().into_iter().filter(|&i| i < topo.nodes.len()) {
            if !alive(i) {
                continue;
            }
            let started = held_before & (1 << i) == 0;
            if let Some(lost) = tl.no_quorum_since(i, s.at) {
                let held = s.at.duration_since(lost).unwrap_or_default();
                v.longest_minority_hold = v.longest_minority_hold.max(held);
                let at = secs(s.at, t0);
                if held > b.lease + b.hold_slack {
                    v.minority_samples.push(format!(
                        "{at:.3} s: node {i} holds the VIP {} ms after losing quorum",
                        held.as_millis()
                    ));
                }
                if started && held > b.claim_slack {
                    v.minority_claims.push(format!(
                        "{at:.3} s: node {i} took the VIP {} ms after losing quorum",
                        held.as_millis()
                    ));
                }
            }
        }
        held_before = s.holders;
        if let Some(side) = topo.majority_side() {
            let on_side: Vec<usize> = s.nodes().into_iter().filter(|i| side.contains(i)).collect();
            let merging = tl
                .last_merge(s.at)
                .is_some_and(|m| s.at.duration_since(m).unwrap_or_default() < b.merge_settle);
            if on_side.len() > 1 && !merging {
                v.two_holders.push(format!(
                    "{:.3} s: nodes {on_side:?} hold the VIP on the majority's side",
                    secs(s.at, t0)
                ));
            }
        }
    }
    let mut last: HashMap<Ipv4Addr, Advert> = HashMap::new();
    for a in adverts.iter().filter(|a| a.at <= to) {
        let prev = last.insert(a.src, *a);
        if a.at < from {
            continue;
        }
        v.adverts += 1;
        let Some(i) = addrs.iter().position(|x| *x == a.src) else {
            continue;
        };
        let topo = tl.at(a.at);
        if a.priority == 0 || topo.nodes[i].dead {
            continue;
        }
        let Some(lost) = tl.no_quorum_since(i, a.at) else {
            continue;
        };
        let held = a.at.duration_since(lost).unwrap_or_default();
        let at = secs(a.at, t0);
        if held > b.lease + b.hold_slack {
            v.minority_adverts.push(format!(
                "{at:.3} s: node {i} advertised priority {} {} ms after losing quorum",
                a.priority,
                held.as_millis()
            ));
        }
        let starts = prev.is_none_or(|p| {
            p.priority == 0
                || (a.at.duration_since(p.at).unwrap_or_default() > b.advert_gap
                    && !tl.link_down_between(i, p.at, a.at))
        });
        if starts && held > b.claim_slack {
            v.minority_claims.push(format!(
                "{at:.3} s: node {i} began advertising priority {} {} ms after losing quorum",
                a.priority,
                held.as_millis()
            ));
        }
    }
    v
}
