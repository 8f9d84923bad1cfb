//! The status snapshot `agent status` prints.

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::time::SystemTime;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::machine::{ProofParams, State};
use crate::packet::Reject;

/// The quorum proofs of an instance that proves quorum.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProofStatus {
    /// The request each proof sends (a linearizable read).
    pub url: String,
    /// How long a proof stays valid after it was issued, ms.
    pub lease_ms: u64,
    /// How often a master renews it, ms.
    pub renew_ms: u64,
    /// Wall-clock end of the newest successful proof's lease (ms since
    /// the epoch); none before the first success.
    pub proven_until_unix_ms: Option<u64>,
    /// A backup is waiting for a fresh proof to take the VIP.
    pub claiming: bool,
    /// Proofs that succeeded.
    pub ok: u64,
    /// Proofs that failed or timed out.
    pub failed: u64,
    /// Latency of the last successful proof, ms.
    pub last_ok_ms: Option<u64>,
    /// The error of the last proof, while proofs fail (cleared by a success).
    pub last_error: Option<String>,
    /// Times this node, as VIP holder, handed the etcd leadership away.
    #[serde(default)]
    pub leadership_moved: u64,
}

impl ProofStatus {
    /// Before the first proof.
    pub fn new(params: &ProofParams, url: &str) -> Self {
        ProofStatus {
            url: url.to_owned(),
            lease_ms: params.lease.as_millis() as u64,
            renew_ms: params.renew.as_millis() as u64,
            proven_until_unix_ms: None,
            claiming: false,
            ok: 0,
            failed: 0,
            last_ok_ms: None,
            last_error: None,
            leadership_moved: 0,
        }
    }
}

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
    /// Whether quorum counts as held: proven within the lease (or, without
    /// a proof rule, not vetoed).
    pub quorum: bool,
    /// The quorum proofs (none when quorum is assumed).
    #[serde(default)]
    pub proof: Option<ProofStatus>,
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
            proof: None,
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
        if let Some(p) = &self.proof {
            let left = p
                .proven_until_unix_ms
                .map(|u| u as i64 - unix_ms(SystemTime::now()) as i64);
            match left {
                Some(ms) if ms > 0 => write!(
                    f,
                    "  quorum proof: valid {:.1} s more (lease {} ms, renewed every {} ms by a master)",
                    ms as f64 / 1000.0,
                    p.lease_ms,
                    p.renew_ms
                )?,
                _ => write!(f, "  quorum proof: none valid (lease {} ms)", p.lease_ms)?,
            }
            write!(f, "; {} ok, {} failed", p.ok, p.failed)?;
            if let Some(ms) = p.last_ok_ms {
                write!(f, ", last took {ms} ms")?;
            }
            if p.claiming {
                write!(f, "; claiming the VIP")?;
            }
            if p.leadership_moved > 0 {
                write!(
                    f,
                    "; handed the etcd leadership away {} times",
                    p.leadership_moved
                )?;
            }
            writeln!(f)?;
            if let Some(e) = &p.last_error {
                writeln!(f, "  last proof error: {e}")?;
            }
        }
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
        assert!(!text.contains("quorum proof"), "{text}");
        let params = ProofParams {
            renew: std::time::Duration::from_millis(200),
            lease: std::time::Duration::from_millis(2000),
            retry: std::time::Duration::from_millis(100),
            poll: std::time::Duration::from_millis(500),
        };
        let mut p = ProofStatus::new(&params, "http://127.0.0.1:2379/v3/kv/range");
        p.failed = 4;
        p.last_error = Some("http://127.0.0.1:2379/v3/kv/range: operation timed out".into());
        s.proof = Some(p.clone());
        let text = s.to_string();
        assert!(
            text.contains("quorum proof: none valid (lease 2000 ms); 0 ok, 4 failed"),
            "{text}"
        );
        assert!(text.contains("last proof error: http"), "{text}");
        p.proven_until_unix_ms = Some(unix_ms(SystemTime::now()) + 1500);
        p.last_error = None;
        p.ok = 9;
        p.last_ok_ms = Some(3);
        p.claiming = true;
        s.proof = Some(p);
        let text = s.to_string();
        assert!(text.contains("quorum proof: valid 1."), "{text}");
        assert!(
            text.contains("9 ok, 4 failed, last took 3 ms; claiming"),
            "{text}"
        );
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["rejected"]["bad_ttl"], 3);
        assert_eq!(json["proof"]["lease_ms"], 2000);
        assert_eq!(json["state"], "backup");
        // `agent status` may fetch it as JSON from the daemon: it round-trips.
        let back: Status = serde_json::from_value(json).unwrap();
        assert_eq!(back, s);
    }
}
