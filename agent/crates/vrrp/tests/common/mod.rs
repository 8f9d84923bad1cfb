//! Network-namespace lab shared by the integration tests and the failover
//! benchmark: a hub namespace with two bridges (`br0`, where every node
//! starts, and `br1`, the other side of a partition), and one namespace
//! per node joined to a bridge by a veth pair. Names carry the process id
//! and a per-use tag; [`Lab`]'s `Drop` kills every process left in its
//! namespaces and deletes them, also when a test panics. Tests may run
//! `ip`; the product code never does. [`watch`] observes the lab (VIP
//! holders every 20 ms, adverts on the bridges) and judges the quorum rule.
#![allow(dead_code)]

pub mod watch;

use std::fs::File;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The test VIP and its prefix.
pub const VIP: &str = "10.77.0.10/24";
/// The VIP's address.
pub const VIP_ADDR: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 10);

/// Fails with a message naming the Debian package when a program is
/// missing (tests never skip silently).
pub fn require(program: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "{program} not found: install the Debian package `{package}` (apt-get install {package})"
    );
}

/// Runs a command to completion, panicking with its output on failure.
pub fn run(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("running {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One node namespace.
#[derive(Debug, Clone)]
pub struct Node {
    /// Namespace name.
    pub ns: String,
    /// Its address on the lab network.
    pub addr: Ipv4Addr,
    /// Its veth end in the hub namespace (cut it to isolate the node).
    pub hub_if: String,
}

/// A process started in a namespace.
#[derive(Debug)]
pub struct Proc {
    /// The child (`ip netns exec` execs the program, so this is its pid).
    pub child: Child,
    /// Its log (stdout and stderr).
    pub log: PathBuf,
}

/// The lab; dropping it tears everything down.
#[derive(Debug)]
pub struct Lab {
    /// Hub namespace with the bridge.
    pub hub: String,
    /// Node namespaces.
    pub nodes: Vec<Node>,
    /// Scratch directory (logs, configs, etcd data).
    pub dir: PathBuf,
    /// Started processes.
    pub procs: Vec<Option<Proc>>,
}

impl Lab {
    /// Creates `n` nodes at 10.77.0.2, .3, ... plus the hub. `tag` must be
    /// short (namespace names stay unique per process and test).
    pub fn new(tag: &str, n: usize) -> Lab {
        require("ip", "iproute2");
        let base = format!("vr{}{}", std::process::id(), tag);
        let dir = std::env::temp_dir().join(format!("{base}-lab"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("creating the lab directory");
        let mut lab = Lab {
            hub: format!("{base}h"),
            nodes: Vec::new(),
            dir,
            procs: Vec::new(),
        };
        // From here on, Drop cleans up whatever was created.
        run(&["ip", "netns", "add", &lab.hub]);
        for br in ["br0", "br1"] {
            run(&["ip", "-n", &lab.hub, "link", "add", br, "type", "bridge"]);
            run(&["ip", "-n", &lab.hub, "link", "set", br, "up"]);
        }
        for i in 0..n {
            let node = Node {
                ns: format!("{base}n{i}"),
                addr: Ipv4Addr::new(10, 77, 0, 2 + i as u8),
                hub_if: format!("v{i}"),
            };
            lab.nodes.push(node.clone());
            run(&["ip", "netns", "add", &node.ns]);
            run(&[
                "ip",
                "-n",
                &lab.hub,
                "link",
                "add",
                &node.hub_if,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                &node.ns,
            ]);
            run(&[
                "ip",
                "-n",
                &lab.hub,
                "link",
                "set",
                &node.hub_if,
                "master",
                "br0",
            ]);
            run(&["ip", "-n", &lab.hub, "link", "set", &node.hub_if, "up"]);
            let cidr = format!("{}/24", node.addr);
            run(&["ip", "-n", &node.ns, "addr", "add", &cidr, "dev", "eth0"]);
            run(&["ip", "-n", &node.ns, "link", "set", "eth0", "up"]);
            run(&["ip", "-n", &node.ns, "link", "set", "lo", "up"]);
        }
        lab
    }

    /// Starts `program args` in node `i`'s namespace, logging to
    /// `<dir>/<name>.log`; returns a process id for [`Lab::signal`].
    pub fn spawn(&mut self, i: usize, name: &str, program: &str, args: &[&str]) -> usize {
        let log = self.dir.join(format!("{name}.log"));
        let file = File::options()
            .create(true)
            .append(true)
            .open(&log)
            .expect("opening a log file");
        let child = Command::new("ip")
            .args(["netns", "exec", &self.nodes[i].ns, program])
            .args(args)
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("cloning a log file handle"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {program}: {e}"));
        self.procs.push(Some(Proc { child, log }));
        self.procs.len() - 1
    }

    /// Sends `signal` (e.g. "TERM", "KILL") to process `id` and waits for
    /// it to exit (at most 5 s, then SIGKILL).
    pub fn stop(&mut self, id: usize, signal: &str) {
        if let Some(mut p) = self.procs[id].take() {
            let pid = p.child.id().to_string();
            let _ = Command::new("kill").args(["-s", signal, &pid]).status();
            let until = Instant::now() + Duration::from_secs(5);
            loop {
                match p.child.try_wait() {
                    Ok(Some(_)) => break,
                    _ if Instant::now() > until => {
                        let _ = p.child.kill();
                        let _ = p.child.wait();
                        break;
                    }
                    _ => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        }
    }

    /// Sends `signal` to process `id` without waiting (see [`Lab::stop`]).
    pub fn signal(&self, id: usize, signal: &str) {
        if let Some(Some(p)) = self.procs.get(id) {
            let _ = Command::new("kill")
                .args(["-s", signal, &p.child.id().to_string()])
                .status();
        }
    }

    /// The log of process `name`.
    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("{name}.log"))).unwrap_or_default()
    }

    /// Takes node `i`'s link down at the hub (the node is cut off).
    pub fn cut(&self, i: usize) {
        run(&[
            "ip",
            "-n",
            &self.hub,
            "link",
            "set",
            &self.nodes[i].hub_if,
            "down",
        ]);
    }

    /// Brings node `i`'s link back.
    pub fn heal(&self, i: usize) {
        run(&[
            "ip",
            "-n",
            &self.hub,
            "link",
            "set",
            &self.nodes[i].hub_if,
            "up",
        ]);
    }

    /// Moves node `i`'s port to bridge `br` (`br0` or `br1`): nodes on
    /// different bridges are partitioned from each other.
    pub fn set_bridge(&self, i: usize, br: &str) {
        run(&[
            "ip",
            "-n",
            &self.hub,
            "link",
            "set",
            &self.nodes[i].hub_if,
            "master",
            br,
        ]);
    }

    /// Whether process `id` (from [`Lab::spawn`]) still runs.
    pub fn running(&mut self, id: usize) -> bool {
        self.procs
            .get_mut(id)
            .and_then(Option::as_mut)
            .is_some_and(|p| matches!(p.child.try_wait(), Ok(None)))
    }

    /// Removes the VIP from node `i` (what a restarted instance does
    /// first; for a node whose instance was killed hard).
    pub fn drop_vip(&self, i: usize) {
        let _ = Command::new("ip")
            .args(["-n", &self.nodes[i].ns, "addr", "del", VIP, "dev", "eth0"])
            .stderr(Stdio::null())
            .status();
    }

    /// Whether node `i` has the VIP on eth0 now.
    pub fn holds_vip(&self, i: usize) -> bool {
        let out = Command::new("ip")
            .args([
                "-n",
                &self.nodes[i].ns,
                "-4",
                "-o",
                "addr",
                "show",
                "dev",
                "eth0",
            ])
            .output()
            .expect("running ip addr show");
        String::from_utf8_lossy(&out.stdout).contains(&format!("inet {VIP_ADDR}/"))
    }

    /// Which of `nodes` hold the VIP now.
    pub fn holders(&self, nodes: &[usize]) -> Vec<usize> {
        nodes
            .iter()
            .copied()
            .filter(|&i| self.holds_vip(i))
            .collect()
    }

    /// Polls until `nodes` have exactly one holder, returning it.
    pub fn wait_single_holder(&self, nodes: &[usize], timeout: Duration) -> Option<usize> {
        let until = Instant::now() + timeout;
        while Instant::now() < until {
            if let [one] = self.holders(nodes)[..] {
                return Some(one);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Samples `nodes` every 50 ms for `dur`; returns the sample count and
    /// the samples whose holder set was not exactly `[expected]` (or not
    /// exactly one holder, when `expected` is None).
    pub fn sample(
        &self,
        nodes: &[usize],
        expected: Option<usize>,
        dur: Duration,
    ) -> (usize, Vec<Vec<usize>>) {
        let until = Instant::now() + dur;
        let mut n = 0;
        let mut bad = Vec::new();
        while Instant::now() < until {
            let h = self.holders(nodes);
            n += 1;
            let ok = match expected {
                Some(e) => h == [e],
                None => h.len() == 1,
            };
            if !ok {
                bad.push(h);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        (n, bad)
    }

    /// Writes a file into the lab directory.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.join(name);
        std::fs::write(&p, text).expect("writing a lab file");
        p
    }

    /// Path inside the lab directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for p in self.procs.iter_mut().flatten() {
            let _ = Command::new("kill")
                .args(["-s", "TERM", &p.child.id().to_string()])
                .status();
        }
        std::thread::sleep(Duration::from_millis(300));
        for p in self.procs.iter_mut().flatten() {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
        // Anything still inside our namespaces (keepalived's VRRP child,
        // for example) was started by this lab: end it by pid.
        let mut all: Vec<&str> = self.nodes.iter().map(|n| n.ns.as_str()).collect();
        all.push(&self.hub);
        for ns in &all {
            if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-s", "KILL", pid]).status();
                }
            }
        }
        for ns in &all {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        if std::env::var_os("VRRP_KEEP_LAB").is_none() && !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A keepalived config for the lab VIP.
pub fn keepalived_conf(version: u8, vrid: u8, priority: u8, advert_int: &str) -> String {
    format!(
        "global_defs {{\n  vrrp_version {version}\n  router_id lab\n}}\n\
         vrrp_instance VI {{\n  state BACKUP\n  interface eth0\n  virtual_router_id {vrid}\n  \
         priority {priority}\n  advert_int {advert_int}\n  virtual_ipaddress {{\n    {VIP}\n  }}\n}}\n"
    )
}

/// A keepalived config in unicast mode: adverts from `src` to `peer` only.
pub fn keepalived_conf_unicast(
    vrid: u8,
    priority: u8,
    advert_int: &str,
    src: Ipv4Addr,
    peer: Ipv4Addr,
) -> String {
    format!(
        "global_defs {{\n  vrrp_version 3\n  router_id lab\n}}\n\
         vrrp_instance VI {{\n  state BACKUP\n  interface eth0\n  virtual_router_id {vrid}\n  \
         priority {priority}\n  advert_int {advert_int}\n  unicast_src_ip {src}\n  \
         unicast_peer {{\n    {peer}\n  }}\n  virtual_ipaddress {{\n    {VIP}\n  }}\n}}\n"
    )
}

/// Starts keepalived in node `i` with `conf` (VRRP only, foreground,
/// console log, own pid files); returns its process id.
pub fn start_keepalived(lab: &mut Lab, i: usize, name: &str, conf: &str) -> usize {
    require("keepalived", "keepalived");
    let conf_path = lab.write(&format!("{name}.conf"), conf);
    let pid = lab.path(&format!("{name}.pid"));
    let vpid = lab.path(&format!("{name}.vrrp.pid"));
    let args: Vec<String> = vec![
        "-n".into(),
        "-l".into(),
        "-D".into(),
        "-P".into(),
        "-f".into(),
        path_str(&conf_path),
        "-p".into(),
        path_str(&pid),
        "-r".into(),
        path_str(&vpid),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    lab.spawn(i, name, "keepalived", &args)
}

/// Starts `vrrp-node` in node `i`; `extra` adds options.
pub fn start_agent(
    lab: &mut Lab,
    bin: &str,
    i: usize,
    name: &str,
    priority: u8,
    interval_cs: u16,
    extra: &[&str],
) -> usize {
    let prio = priority.to_string();
    let interval = interval_cs.to_string();
    let status = path_str(&lab.path(&format!("{name}.status.json")));
    let mut args = vec![
        "--interface",
        "eth0",
        "--vip",
        VIP,
        "--router-id",
        "51",
        "--priority",
        &prio,
        "--interval-cs",
        &interval,
        "--status-file",
        &status,
    ];
    args.extend_from_slice(extra);
    lab.spawn(i, name, bin, &args)
}

/// A path as a string (lab paths are ASCII).
pub fn path_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// Starts one member of a 3-member (or `n`-member) etcd cluster in node
/// `i`, plain HTTP, clients on the node address and on 127.0.0.1:2379.
pub fn start_etcd(lab: &mut Lab, i: usize, n: usize) -> usize {
    require("etcd", "etcd-server");
    let addr = lab.nodes[i].addr;
    let cluster: Vec<String> = (0..n)
        .map(|j| format!("n{j}=http://{}:2380", lab.nodes[j].addr))
        .collect();
    let data = path_str(&lab.path(&format!("etcd{i}.data")));
    let token = lab.hub.clone();
    let args = [
        "--name".to_owned(),
        format!("n{i}"),
        "--data-dir".to_owned(),
        data,
        "--listen-client-urls".to_owned(),
        format!("http://{addr}:2379,http://127.0.0.1:2379"),
        "--advertise-client-urls".to_owned(),
        format!("http://{addr}:2379"),
        "--listen-peer-urls".to_owned(),
        format!("http://{addr}:2380"),
        "--initial-advertise-peer-urls".to_owned(),
        format!("http://{addr}:2380"),
        "--initial-cluster".to_owned(),
        cluster.join(","),
        "--initial-cluster-state".to_owned(),
        "new".to_owned(),
        "--initial-cluster-token".to_owned(),
        token,
        // As the agent runs it (agent/src/etcd.rs).
        "--pre-vote=true".to_owned(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    lab.spawn(i, &format!("etcd{i}"), "etcd", &args)
}
