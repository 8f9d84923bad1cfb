//! The balancer's status snapshot, what `agent status` shows: the
//! listening address, the pick policy and, per backend, its health,
//! whether it takes new connections, and its connection counts.
//! `Serialize` for the JSON status, `Display` for people. Pure.

use std::fmt;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// A backend's health, from its checks (see [`crate::pool`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendHealth {
    /// Passing its checks: in rotation.
    Up,
    /// Its checks time out: in rotation only when no backend is up.
    Slow,
    /// Failing its checks (or never passed yet): out of rotation.
    Down,
}

impl fmt::Display for BackendHealth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BackendHealth::Up => "up",
            BackendHealth::Slow => "slow",
            BackendHealth::Down => "down",
        })
    }
}

/// Whether the listener takes new connections (see
/// [`crate::proxy::hand_over`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ListenerState {
    /// Taking new connections.
    Serving,
    /// Quiesced: new connections are dropped silently; the open ones are
    /// draining before the VIP is released.
    Draining,
    /// Drained (or cut at the bound) and the VIP released: still
    /// quiesced until resumed.
    HandedOver,
}

impl fmt::Display for ListenerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ListenerState::Serving => "serving",
            ListenerState::Draining => "draining",
            ListenerState::HandedOver => "handed over",
        })
    }
}

/// One backend in the snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendStatus {
    /// The API server's address.
    pub addr: SocketAddr,
    /// Its health.
    pub health: BackendHealth,
    /// Whether it takes new connections now.
    pub in_rotation: bool,
    /// Connections open (or connecting) through it now.
    pub active: u32,
    /// Connections established through it since the balancer started.
    pub total: u64,
    /// Proxied connections it refused or did not accept in time.
    pub connect_failures: u64,
    /// Why its last check or connection failed, while it is failing.
    pub last_error: Option<String>,
}

/// The whole snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BalancerStatus {
    /// Where the balancer accepts connections.
    pub listen: SocketAddr,
    /// The pick policy, in words.
    pub policy: String,
    /// Whether the listener takes new connections.
    pub state: ListenerState,
    /// Client connections open through the balancer now.
    pub open: usize,
    /// The backends, in round-robin order.
    pub backends: Vec<BackendStatus>,
}

impl BalancerStatus {
    /// Backends that take new connections now.
    pub fn serving(&self) -> usize {
        self.backends.iter().filter(|b| b.in_rotation).count()
    }
}

impl fmt::Display for BalancerStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "balancer {} {} ({}): {}/{} backends in rotation, {} connections open",
            self.listen,
            self.state,
            self.policy,
            self.serving(),
            self.backends.len(),
            self.open
        )?;
        for b in &self.backends {
            let rotation = if b.in_rotation { "in" } else { "out" };
            write!(
                f,
                "  {:<22} {:<4} {:<3} active {:>5} total {:>8} connect failures {:>5}",
                b.addr.to_string(),
                b.health.to_string(),
                rotation,
                b.active,
                b.total,
                b.connect_failures
            )?;
            if let Some(why) = &b.last_error {
                write!(f, " ({why})")?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> BalancerStatus {
        BalancerStatus {
            listen: SocketAddr::from(([10, 77, 0, 10], 6443)),
            policy: "least connections".to_owned(),
            state: ListenerState::Draining,
            open: 4,
            backends: vec![
                BackendStatus {
                    addr: SocketAddr::from(([10, 77, 0, 3], 6443)),
                    health: BackendHealth::Up,
                    in_rotation: true,
                    active: 4,
                    total: 1021,
                    connect_failures: 0,
                    last_error: None,
                },
                BackendStatus {
                    addr: SocketAddr::from(([10, 77, 0, 4], 6443)),
                    health: BackendHealth::Down,
                    in_rotation: false,
                    active: 0,
                    total: 990,
                    connect_failures: 3,
                    last_error: Some("connection refused".to_owned()),
                },
            ],
        }
    }

    #[test]
    fn display_lists_backends_health_and_connections() {
        let text = sample().to_string();
        assert_eq!(
            text,
            "balancer 10.77.0.10:6443 draining (least connections): 1/2 backends in rotation, 4 connections open\n\
             \x20 10.77.0.3:6443         up   in  active     4 total     1021 connect failures     0\n\
             \x20 10.77.0.4:6443         down out active     0 total      990 connect failures     3 (connection refused)\n"
        );
    }

    #[test]
    fn json_round_trips_with_lowercase_health() {
        let s = sample();
        let json = serde_json::to_string(&s).unwrap();
        assert!(json.contains(r#""health":"down""#), "{json}");
        assert!(json.contains(r#""state":"draining""#), "{json}");
        let back: BalancerStatus = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);
    }
}
