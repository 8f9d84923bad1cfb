//! The status snapshot `agent status` prints.

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::time::SystemTime;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::machine::State;
use crate::packet::Reject;

/// A state change with wall-clock time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransitionRecord {
    /// Milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
    /// Previous state.
    pub from: State,
    /// New state.
    pub to: State,
}

/// Snapshot of one VRRP instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// Interface.
    pub interface: String,
    /// The VIP with prefix.
    pub vip: Ipv4Net,
    /// Virtual router id.
    pub router_id: u8,
    /// Our primary address (the source of our adverts).
    pub local_addr: Option<Ipv4Addr>,
    /// Our state.
    pub state: State,
    /// Who holds the VIP as far as we know (our address when master).
    pub holder: Option<Ipv4Addr>,
    /// The priority we advertise now.
    pub priority: u8,
    /// Configured priority of a healthy node.
    pub base_priority: u8,
    /// Whether the quorum check passes.
    pub quorum: bool,
    /// Our advertisement interval, centiseconds.
    pub interval_cs: u16,
    /// The last state change.
    pub last_transition: Option<TransitionRecord>,
    /// Advertisements sent.
    pub adverts_sent: u64,
    /// Valid advertisements received for our router id.
    pub adverts_received: u64,
    /// Received packets rejected, by reason.
    pub rejected: BTreeMap<Reject, u64>,
}

impl Status {
    /// A fresh status for an instance that has not started.
    pub fn new(
        interface: &str,
        vip: Ipv4Net,
        router_id: u8,
        priority: u8,
        interval_cs: u16,
    ) -> Self {
        Status {
            interface: interface.to_owned(),
            vip,
            router_id,
            local_addr: None,
            state: State::Initialize,
            holder: None,
            priority,
            base_priority: priority,
            quorum: false,
            interval_cs,
            last_transition: None,
            adverts_sent: 0,
            adverts_received: 0,
            rejected: BTreeMap::new(),
        }
    }
}

/// Milliseconds since the epoch of a wall-clock time (0 before 1970).
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let opt = |a: Option<Ipv4Addr>| a.map_or_else(|| "-".to_owned(), |a| a.to_string());
        writeln!(
            f,
            "vip {} on {} (vrid {}, interval {} cs)",
            self.vip, self.interface, self.router_id, self.interval_cs
        )?;
        writeln!(
            f,
            "  state {}  holder {}  priority {}/{}  quorum {}",
            self.state,
            opt(self.holder),
            self.priority,
            self.base_priority,
            if self.quorum { "yes" } else { "no" }
        )?;
        match self.last_transition {
            Some(t) => writeln!(
                f,
                "  last transition {} -> {} at {} ms",
                t.from, t.to, t.at_unix_ms
            )?,
            None => writeln!(f, "  last transition -")?,
        }
        write!(
            f,
            "  adverts sent {}  received {}",
            self.adverts_sent, self.adverts_received
        )?;
        for (reason, n) in &self.rejected {
            write!(f, "\n  rejected {n}: {reason}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_state_holder_and_rejections() {
        let mut s = Status::new("eth0", "10.77.0.10/24".parse().unwrap(), 51, 100, 20);
        s.state = State::Backup;
        s.holder = Some(Ipv4Addr::new(10, 77, 0, 2));
        s.rejected.insert(Reject::BadTtl, 3);
        let text = s.to_string();
        assert!(text.contains("state backup"), "{text}");
        assert!(text.contains("holder 10.77.0.2"), "{text}");
        assert!(text.contains("rejected 3: TTL is not 255"), "{text}");
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["rejected"]["bad_ttl"], 3);
        assert_eq!(json["state"], "backup");
        // `agent status` may fetch it as JSON from the daemon: it round-trips.
        let back: Status = serde_json::from_value(json).unwrap();
        assert_eq!(back, s);
    }
}
