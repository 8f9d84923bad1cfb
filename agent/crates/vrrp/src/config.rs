//! [`VrrpConfig`]: the validated settings of one VRRP instance, built from
//! the cluster configuration's [`cluster_config::Vrrp`] plus the VIP and
//! the interface (which the agent resolves).

use std::time::Duration;

use ipnet::Ipv4Net;
use thiserror::Error;

use crate::machine::ProofParams;

/// Gratuitous ARPs sent on becoming master (keepalived sends 5 by default;
/// 3 spaced ones cover a lost frame without flooding).
pub const DEFAULT_GARP_BURST: u8 = 3;
/// Spacing between those gratuitous ARPs.
pub const DEFAULT_GARP_SPACING: Duration = Duration::from_millis(100);
/// Refresh period of the gratuitous ARP while master.
pub const DEFAULT_GARP_REFRESH: Duration = Duration::from_secs(10);

/// The bounds of the quorum proof (see the crate README, "The quorum
/// rule", for how they were chosen): a master renews every 200 ms (one
/// default advert interval); a proof is valid 2 s after it was issued, so
/// a holder cut off from the majority drops the VIP at most 2 s after its
/// last successful proof was issued, while an etcd leader election on the
/// majority side (1-2 s with etcd's default 1 s election timeout) usually
/// passes without moving the VIP; a claiming backup retries every 100 ms;
/// backups poll every 500 ms.
pub const DEFAULT_PROOF: ProofParams = ProofParams {
    renew: Duration::from_millis(200),
    lease: Duration::from_millis(2000),
    retry: Duration::from_millis(100),
    poll: Duration::from_millis(500),
};

impl ProofParams {
    /// The default bounds scaled to another lease: a master renews ten
    /// times a lease and backups poll four times a lease, as in
    /// [`DEFAULT_PROOF`] (a 2 s lease gives exactly the defaults); the
    /// claim retry stays at 100 ms. A longer lease (a slow machine, see
    /// `[vrrp] proof_lease_ms`) thus costs etcd proportionally fewer
    /// linearizable reads instead of ten a second whatever the lease.
    pub fn with_lease(lease: Duration) -> Self {
        ProofParams {
            renew: lease / 10,
            lease,
            poll: lease / 4,
            ..DEFAULT_PROOF
        }
    }
}

/// A setting that cannot be used, with the key at fault.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    /// The VIP was given as a /32.
    #[error("network.vip: {vip} must carry the cluster network's prefix, not /32")]
    HostPrefix {
        /// The VIP.
        vip: Ipv4Net,
    },
    /// The interface name is empty or longer than the kernel allows.
    #[error("network.interface: {name:?} is not a valid interface name (1-15 bytes)")]
    Interface {
        /// The name.
        name: String,
    },
    /// Interval outside 1..=4095 cs.
    #[error("vrrp.interval_cs: {interval_cs} is outside 1..=4095 centiseconds")]
    Interval {
        /// The interval.
        interval_cs: u16,
    },
    /// Priority outside 1..=254.
    #[error("vrrp.priority: {priority} is outside 1..=254")]
    Priority {
        /// The priority.
        priority: u8,
    },
    /// Router id 0.
    #[error("vrrp.router_id: 0 is not a valid virtual router id")]
    RouterId,
}

/// Validated settings of one VRRP instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VrrpConfig {
    /// Interface carrying the cluster network.
    pub interface: String,
    /// The VIP with the cluster network's prefix.
    pub vip: Ipv4Net,
    /// Virtual router id.
    pub router_id: u8,
    /// Advertisement interval in centiseconds.
    pub interval_cs: u16,
    /// Priority of a healthy node.
    pub priority: u8,
    /// Preempt lower-priority masters.
    pub preempt: bool,
    /// Tolerate a lower-priority master this long before preempting.
    pub preempt_delay: Duration,
    /// Send adverts by unicast to the peers instead of multicast.
    pub unicast: bool,
    /// Gratuitous ARPs on becoming master.
    pub garp_burst: u8,
    /// Spacing of those.
    pub garp_spacing: Duration,
    /// Refresh period while master.
    pub garp_refresh: Duration,
}

impl VrrpConfig {
    /// Builds the instance settings from the cluster configuration.
    pub fn new(
        vrrp: &cluster_config::Vrrp,
        vip: Ipv4Net,
        interface: impl Into<String>,
    ) -> Result<Self, ConfigError> {
        let interface = interface.into();
        if interface.is_empty() || interface.len() > 15 || interface.contains(['/', ' ']) {
            return Err(ConfigError::Interface { name: interface });
        }
        if vip.prefix_len() == 32 {
            return Err(ConfigError::HostPrefix { vip });
        }
        if !(1..=crate::packet::MAX_INTERVAL_CS).contains(&vrrp.interval_cs) {
            return Err(ConfigError::Interval {
                interval_cs: vrrp.interval_cs,
            });
        }
        if !(1..=254).contains(&vrrp.priority) {
            return Err(ConfigError::Priority {
                priority: vrrp.priority,
            });
        }
        if vrrp.router_id == 0 {
            return Err(ConfigError::RouterId);
        }
        Ok(VrrpConfig {
            interface,
            vip,
            router_id: vrrp.router_id,
            interval_cs: vrrp.interval_cs,
            priority: vrrp.priority,
            preempt: vrrp.preempt,
            preempt_delay: Duration::from_millis(vrrp.preempt_delay_ms),
            unicast: vrrp.unicast,
            garp_burst: DEFAULT_GARP_BURST,
            garp_spacing: DEFAULT_GARP_SPACING,
            garp_refresh: DEFAULT_GARP_REFRESH,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vrrp() -> cluster_config::Vrrp {
        cluster_config::Vrrp {
            router_id: 51,
            interval_cs: cluster_config::DEFAULT_VRRP_INTERVAL_CS,
            priority: 100,
            preempt: true,
            preempt_delay_ms: 1500,
            unicast: false,
            proof_timeout_ms: cluster_config::DEFAULT_PROOF_TIMEOUT_MS,
            proof_lease_ms: cluster_config::DEFAULT_PROOF_LEASE_MS,
        }
    }

    #[test]
    fn proof_bounds_scale_with_the_lease() {
        // The default lease gives exactly the defaults.
        assert_eq!(
            ProofParams::with_lease(Duration::from_millis(
                cluster_config::DEFAULT_PROOF_LEASE_MS
            )),
            DEFAULT_PROOF
        );
        // qemu-tests/tcg-timing.toml's 20 s lease: a renewal every 2 s,
        // a backup's poll every 5 s, claims still retried every 100 ms.
        let slow = ProofParams::with_lease(Duration::from_secs(20));
        assert_eq!(slow.renew, Duration::from_secs(2));
        assert_eq!(slow.poll, Duration::from_secs(5));
        assert_eq!(slow.retry, Duration::from_millis(100));
        assert_eq!(slow.lease, Duration::from_secs(20));
    }

    #[test]
    fn builds_from_cluster_config() {
        let c = VrrpConfig::new(&vrrp(), "10.77.0.10/24".parse().unwrap(), "eth0").unwrap();
        assert_eq!(c.router_id, 51);
        assert_eq!(c.preempt_delay, Duration::from_millis(1500));
        assert_eq!(c.vip.prefix_len(), 24);
    }

    #[test]
    fn refuses_bad_values_naming_the_key() {
        let vip: Ipv4Net = "10.77.0.10/24".parse().unwrap();
        assert!(matches!(
            VrrpConfig::new(&vrrp(), "10.77.0.10/32".parse().unwrap(), "eth0"),
            Err(ConfigError::HostPrefix { .. })
        ));
        assert!(matches!(
            VrrpConfig::new(&vrrp(), vip, "a-very-long-interface-name"),
            Err(ConfigError::Interface { .. })
        ));
        assert!(matches!(
            VrrpConfig::new(&vrrp(), vip, ""),
            Err(ConfigError::Interface { .. })
        ));
        let mut v = vrrp();
        v.interval_cs = 4096;
        assert!(matches!(
            VrrpConfig::new(&v, vip, "eth0"),
            Err(ConfigError::Interval { .. })
        ));
        let mut v = vrrp();
        v.priority = 255;
        let err = VrrpConfig::new(&v, vip, "eth0").unwrap_err();
        assert!(err.to_string().starts_with("vrrp.priority"), "{err}");
        let mut v = vrrp();
        v.router_id = 0;
        assert_eq!(VrrpConfig::new(&v, vip, "eth0"), Err(ConfigError::RouterId));
    }
}
