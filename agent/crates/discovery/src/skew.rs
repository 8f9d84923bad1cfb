//! Clock-skew diagnostics (pure): which peers' authenticated messages fall
//! outside (or near the edge of) the accepted time window, by how much, and
//! what to say about it.
//!
//! Every announcement carries its sender's wall-clock time; [`crate::open`]
//! refuses one more than the window (±30 s by default) away from the
//! receiver's clock, *after* checking its tag. So a message refused as
//! stale or future is still known to come from a node holding the cluster
//! secret, and its timestamp measures the two clocks' offset. The tracker
//! keeps that per peer, and tells the runner when to warn (the first time,
//! then at most every [`WARN_EVERY_MS`] per peer).
//!
//! # Decision: the window stays absolute
//!
//! Assembly does **not** tolerate skew beyond the window (for example by
//! checking a peer's timestamps only against its own earlier messages).
//! Replay protection needs a time base shared with a sender *before* its
//! first message is accepted: with a per-peer relative window, the first
//! message heard from a node (after a reboot of the receiver, say) could be
//! a recording of any age, and an old recorded "discovering, proposing X"
//! announcement counts towards the bootstrap decision's live masters and
//! their agreement. That is the one decision that must never see a ghost.
//! A wrong clock is an operator error with a simple fix, so the agent
//! makes it impossible to miss instead: a warning in the journal naming the
//! peer, its address, the measured offset and the fix, and the same in
//! `agent status`.

use std::collections::HashMap;
use std::net::IpAddr;

use serde::Serialize;

use crate::message::NodeId;

/// A peer's warning is repeated at most this often.
pub const WARN_EVERY_MS: u64 = 60_000;
/// A peer not heard (inside or outside the window) for this long is dropped
/// from the report.
pub const FORGET_AFTER_MS: u64 = 300_000;

/// One peer whose clock differs from ours by more than half the window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SkewReport {
    /// The peer's node id.
    pub node_id: NodeId,
    /// Its name, from its (authenticated) announcement.
    pub name: String,
    /// Where its datagrams come from.
    pub address: Option<IpAddr>,
    /// Its clock minus ours, ms (positive: the peer is ahead).
    pub offset_ms: i64,
    /// Its messages refused because of it (outside the window).
    pub rejected: u64,
    /// When we last heard from it (our clock, ms since the epoch).
    pub last_seen_ms: u64,
}

#[derive(Debug, Clone)]
struct Entry {
    report: SkewReport,
    warned_ms: Option<u64>,
}

/// Per-peer clock offsets; see the module docs.
#[derive(Debug, Clone)]
pub struct SkewTracker {
    window_ms: u64,
    peers: HashMap<NodeId, Entry>,
}

/// What the caller should log after an observation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkewNote {
    /// Nothing new.
    Quiet,
    /// Warn with this text (rate-limited per peer).
    Warn(String),
    /// The peer's clock is back within half the window (log at info).
    Recovered(String),
}

fn describe_offset(offset_ms: i64) -> String {
    let secs = offset_ms.unsigned_abs() as f64 / 1000.0;
    if offset_ms >= 0 {
        format!("{secs:.1} s ahead of")
    } else {
        format!("{secs:.1} s behind")
    }
}

impl SkewTracker {
    /// A tracker for a receiver accepting `window_ms` each way.
    pub fn new(window_ms: u64) -> Self {
        SkewTracker {
            window_ms,
            peers: HashMap::new(),
        }
    }

    /// Records one authenticated message from `node_id` stamped
    /// `timestamp_ms`, received at `now_ms`; `accepted` says whether it
    /// passed the time check.
    pub fn observe(
        &mut self,
        node_id: NodeId,
        name: &str,
        address: Option<IpAddr>,
        timestamp_ms: u64,
        now_ms: u64,
        accepted: bool,
    ) -> SkewNote {
        let offset_ms = timestamp_ms as i64 - now_ms as i64;
        let near_edge = offset_ms.unsigned_abs() > self.window_ms / 2;
        if accepted && !near_edge {
            return match self.peers.remove(&node_id) {
                Some(e) => SkewNote::Recovered(format!(
                    "discovery: the clock of peer {name} ({}) is within {:.1} s of this node's again",
                    e.report.address.map_or("?".to_owned(), |a| a.to_string()),
                    offset_ms.unsigned_abs() as f64 / 1000.0
                )),
                None => SkewNote::Quiet,
            };
        }
        let e = self.peers.entry(node_id).or_insert_with(|| Entry {
            report: SkewReport {
                node_id,
                name: name.to_owned(),
                address,
                offset_ms,
                rejected: 0,
                last_seen_ms: now_ms,
            },
            warned_ms: None,
        });
        e.report.name = name.to_owned();
        e.report.address = address.or(e.report.address);
        e.report.offset_ms = offset_ms;
        e.report.last_seen_ms = now_ms;
        if !accepted {
            e.report.rejected += 1;
        }
        if e.warned_ms
            .is_some_and(|w| now_ms.saturating_sub(w) < WARN_EVERY_MS)
        {
            return SkewNote::Quiet;
        }
        e.warned_ms = Some(now_ms);
        let report = e.report.clone();
        SkewNote::Warn(self.warning(&report, accepted, now_ms))
    }

    fn warning(&self, r: &SkewReport, accepted: bool, now_ms: u64) -> String {
        let who = format!(
            "peer {} ({}, node {})",
            r.name,
            r.address.map_or("?".to_owned(), |a| a.to_string()),
            &r.node_id.to_string()[..6]
        );
        let window = self.window_ms as f64 / 1000.0;
        let what = if accepted {
            format!(
                "its messages are still accepted, but discovery refuses anything more than {window:.0} s off"
            )
        } else {
            format!(
                "its messages are refused as {} ({} so far; discovery accepts ±{window:.0} s), \
                 so this node does not count it",
                if r.offset_ms > 0 {
                    "from the future"
                } else {
                    "stale"
                },
                r.rejected
            )
        };
        let mut s = format!(
            "discovery: clock skew: {who} has a clock {} this node's; {what}. \
             Fix: synchronise the clocks (NTP, e.g. systemd-timesyncd or chrony, on every node)",
            describe_offset(r.offset_ms)
        );
        if let Some(n) = self.same_direction(r.offset_ms, now_ms) {
            s.push_str(&format!(
                "; {n} peers show an offset the same way: this node's own clock is probably the wrong one"
            ));
        }
        s
    }

    /// How many live skewed peers are off in the same direction as
    /// `offset_ms`, when more than one (then our clock is the odd one).
    fn same_direction(&self, offset_ms: i64, now_ms: u64) -> Option<usize> {
        let n = self
            .report(now_ms)
            .iter()
            .filter(|r| r.offset_ms.signum() == offset_ms.signum())
            .count();
        (n > 1).then_some(n)
    }

    /// The peers off by more than half the window and heard within
    /// [`FORGET_AFTER_MS`], largest offset first.
    pub fn report(&self, now_ms: u64) -> Vec<SkewReport> {
        let mut v: Vec<SkewReport> = self
            .peers
            .values()
            .filter(|e| now_ms.saturating_sub(e.report.last_seen_ms) < FORGET_AFTER_MS)
            .map(|e| e.report.clone())
            .collect();
        v.sort_by_key(|r| (std::cmp::Reverse(r.offset_ms.unsigned_abs()), r.node_id));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000_000;
    const HOUR2: u64 = 2 * 3600 * 1000;

    fn addr(n: u8) -> Option<IpAddr> {
        Some(IpAddr::from([10, 77, 0, n]))
    }

    #[test]
    fn a_peer_two_hours_ahead_is_named_with_its_offset_and_the_fix() {
        let mut t = SkewTracker::new(30_000);
        let note = t.observe(
            NodeId([7; 16]),
            "master-07",
            addr(7),
            NOW + HOUR2,
            NOW,
            false,
        );
        let SkewNote::Warn(text) = note else {
            panic!("{note:?}")
        };
        for part in [
            "peer master-07 (10.77.0.7, node 070707)",
            "7200.0 s ahead of this node's",
            "refused as from the future (1 so far; discovery accepts ±30 s)",
            "NTP",
        ] {
            assert!(text.contains(part), "{part:?} missing from {text}");
        }
        assert!(!text.contains("probably the wrong one"), "{text}");
        // Rate-limited: not again within a minute, but counted.
        for k in 1..=10 {
            let n = t.observe(
                NodeId([7; 16]),
                "master-07",
                addr(7),
                NOW + HOUR2 + k * 1000,
                NOW + k * 1000,
                false,
            );
            assert_eq!(n, SkewNote::Quiet);
        }
        let r = t.report(NOW + 10_000);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].rejected, 11);
        assert_eq!(r[0].offset_ms, HOUR2 as i64);
        // A minute later the warning comes again.
        assert!(matches!(
            t.observe(
                NodeId([7; 16]),
                "master-07",
                addr(7),
                NOW + HOUR2 + 61_000,
                NOW + 61_000,
                false
            ),
            SkewNote::Warn(_)
        ));
    }

    #[test]
    fn stale_peers_and_the_hint_that_our_own_clock_is_wrong() {
        let mut t = SkewTracker::new(30_000);
        let SkewNote::Warn(one) = t.observe(NodeId([1; 16]), "a", addr(1), NOW - HOUR2, NOW, false)
        else {
            panic!()
        };
        assert!(one.contains("7200.0 s behind this node's"), "{one}");
        assert!(one.contains("refused as stale"), "{one}");
        let SkewNote::Warn(two) =
            t.observe(NodeId([2; 16]), "b", addr(2), NOW - HOUR2 + 5, NOW, false)
        else {
            panic!()
        };
        assert!(
            two.contains("2 peers show an offset the same way: this node's own clock is probably the wrong one"),
            "{two}"
        );
    }

    #[test]
    fn near_the_edge_warns_and_back_in_window_recovers() {
        let mut t = SkewTracker::new(30_000);
        // 20 s ahead: accepted, but worth a warning.
        let SkewNote::Warn(w) = t.observe(NodeId([3; 16]), "c", addr(3), NOW + 20_000, NOW, true)
        else {
            panic!()
        };
        assert!(
            w.contains("20.0 s ahead") && w.contains("still accepted"),
            "{w}"
        );
        assert_eq!(t.report(NOW)[0].rejected, 0);
        // Fixed: recovered once, then quiet; gone from the report.
        assert!(matches!(
            t.observe(NodeId([3; 16]), "c", addr(3), NOW + 1_000, NOW + 900, true),
            SkewNote::Recovered(_)
        ));
        assert_eq!(
            t.observe(
                NodeId([3; 16]),
                "c",
                addr(3),
                NOW + 2_000,
                NOW + 1_900,
                true
            ),
            SkewNote::Quiet
        );
        assert!(t.report(NOW + 2_000).is_empty());
    }

    #[test]
    fn silent_peers_leave_the_report_and_order_is_by_offset() {
        let mut t = SkewTracker::new(30_000);
        t.observe(NodeId([1; 16]), "a", addr(1), NOW + 40_000, NOW, false);
        t.observe(NodeId([2; 16]), "b", addr(2), NOW - HOUR2, NOW, false);
        let r = t.report(NOW);
        assert_eq!(
            r.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
            ["b", "a"]
        );
        assert!(t.report(NOW + FORGET_AFTER_MS).is_empty());
    }
}
