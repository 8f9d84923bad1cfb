//! A private layer-2 network for guests: one network namespace holding a
//! bridge (`br0`, 10.77.0.1/24, multicast snooping off so discovery and
//! VRRP multicast reach every port), dnsmasq handing out DHCP leases in
//! 10.77.0.100-199 (never the VIP at .10), and one tap device per guest.
//!
//! Nothing here touches the host's own network: every device lives inside
//! the namespace, and QEMU runs inside it too (`ip netns exec`) so it finds
//! its tap there. [`Network::cut`] and [`Network::heal`] detach a tap from
//! the bridge and attach it again (a partition of one guest).
//!
//! Dropping a [`Network`] kills dnsmasq and deletes the namespace, unless
//! [`Network::keep`] was called (`make cluster` leaves it running; `make
//! cluster-down` removes it with [`Network::open`] + [`Network::destroy`]).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::proc::{kill_pidfile, run};
use crate::{require_program, HarnessError};

/// The bridge inside the namespace.
pub const BRIDGE: &str = "br0";
/// The host side's address on the bridge (the namespace's own address).
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
/// Prefix length of the private network (the image's cluster CIDR).
pub const PREFIX_LEN: u8 = 24;
/// First DHCP address.
pub const DHCP_FIRST: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 100);
/// Last DHCP address.
pub const DHCP_LAST: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 199);

/// The namespace, its bridge and its DHCP server.
#[derive(Debug)]
pub struct Network {
    name: String,
    dir: PathBuf,
    keep: bool,
}

impl Network {
    /// Creates namespace `name` with the bridge and starts dnsmasq; its pid
    /// file, lease file and log go to `dir`. `static_leases` pins a MAC to
    /// an address (inside the DHCP range).
    pub fn create(
        name: &str,
        dir: &Path,
        static_leases: &[(String, Ipv4Addr)],
    ) -> Result<Network, HarnessError> {
        require_program("ip", "iproute2")?;
        let dnsmasq = require_program("dnsmasq", "dnsmasq-base")?;
        std::fs::create_dir_all(dir).map_err(|source| HarnessError::Io {
            what: "creating",
            path: dir.to_owned(),
            source,
        })?;
        run(Command::new("ip").args(["netns", "add", name]))?;
        // From here on, Drop cleans up whatever was made.
        let net = Network {
            name: name.to_owned(),
            dir: dir.to_owned(),
            keep: false,
        };
        net.ip(&["link", "set", "lo", "up"])?;
        net.ip(&[
            "link",
            "add",
            BRIDGE,
            "type",
            "bridge",
            "mcast_snooping",
            "0",
            "stp_state",
            "0",
            "forward_delay",
            "0",
        ])?;
        net.ip(&[
            "addr",
            "add",
            &format!("{GATEWAY}/{PREFIX_LEN}"),
            "dev",
            BRIDGE,
        ])?;
        net.ip(&["link", "set", BRIDGE, "up"])?;
        let mut cmd = net.command(&dnsmasq.display().to_string());
        cmd.args([
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--port=0",
            "--bind-interfaces",
            "--user=root",
            "--group=root",
            "--log-dhcp",
        ])
        .arg(format!("--interface={BRIDGE}"))
        .arg(format!("--dhcp-range={DHCP_FIRST},{DHCP_LAST},12h"))
        .arg(format!(
            "--dhcp-leasefile={}",
            dir.join("dnsmasq.leases").display()
        ))
        .arg(format!("--pid-file={}", net.dnsmasq_pidfile().display()))
        .arg(format!(
            "--log-facility={}",
            dir.join("dnsmasq.log").display()
        ));
        for (mac, ip) in static_leases {
            cmd.arg(format!("--dhcp-host={mac},{ip}"));
        }
        // dnsmasq forks into the background once it listens.
        run(&mut cmd)?;
        tracing::debug!("network namespace {name} ready");
        Ok(net)
    }

    /// Takes over an existing namespace made by [`Network::create`] with the
    /// same `dir` (for `make cluster-down`). Dropping it destroys it.
    pub fn open(name: &str, dir: &Path) -> Network {
        Network {
            name: name.to_owned(),
            dir: dir.to_owned(),
            keep: false,
        }
    }

    /// Whether the namespace exists.
    pub fn exists(name: &str) -> bool {
        Path::new("/run/netns").join(name).exists()
    }

    /// The namespace name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Leaves the namespace and dnsmasq running when this value is dropped.
    pub fn keep(&mut self) {
        self.keep = true;
    }

    fn dnsmasq_pidfile(&self) -> PathBuf {
        self.dir.join("dnsmasq.pid")
    }

    /// dnsmasq's pid while it runs.
    pub fn dnsmasq_pid(&self) -> Option<i32> {
        crate::proc::pidfile_process(&self.dnsmasq_pidfile())
    }

    /// `ip -n <ns> args...`.
    pub fn ip(&self, args: &[&str]) -> Result<String, HarnessError> {
        run(Command::new("ip").arg("-n").arg(&self.name).args(args))
    }

    /// A command that runs `program` inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program])
            .stdin(Stdio::null());
        c
    }

    /// Adds tap `tap` to the bridge (idempotent: an existing tap is put
    /// back on the bridge and up).
    pub fn add_tap(&self, tap: &str) -> Result<(), HarnessError> {
        let exists = self.ip(&["link", "show", "dev", tap]).is_ok();
        if !exists {
            self.ip(&["tuntap", "add", "dev", tap, "mode", "tap"])?;
        }
        self.heal(tap)
    }

    /// Removes tap `tap` (when its guest is gone for good).
    pub fn remove_tap(&self, tap: &str) -> Result<(), HarnessError> {
        self.ip(&["link", "del", "dev", tap]).map(drop)
    }

    /// Partitions the guest on `tap`: the tap leaves the bridge, so nothing
    /// it sends reaches anyone and nothing reaches it.
    pub fn cut(&self, tap: &str) -> Result<(), HarnessError> {
        self.ip(&["link", "set", "dev", tap, "nomaster"]).map(drop)
    }

    /// Ends a partition: the tap joins the bridge again and is up.
    pub fn heal(&self, tap: &str) -> Result<(), HarnessError> {
        self.ip(&["link", "set", "dev", tap, "master", BRIDGE])?;
        self.ip(&["link", "set", "dev", tap, "up"]).map(drop)
    }

    /// Kills dnsmasq and deletes the namespace (with every device in it).
    /// Guests must be stopped first (their taps go with the namespace).
    pub fn destroy(&mut self) -> Result<(), HarnessError> {
        self.keep = true;
        kill_pidfile(&self.dnsmasq_pidfile(), "dnsmasq")?;
        if Network::exists(&self.name) {
            run(Command::new("ip").args(["netns", "del", &self.name]))?;
        }
        Ok(())
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        if !self.keep {
            if let Err(e) = self.destroy() {
                eprintln!("removing network namespace {}: {e}", self.name);
            }
        }
    }
}
