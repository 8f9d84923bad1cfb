//! The announce rate policy (pure): how often each node speaks, and to whom.
//!
//! With `b` = `discovery.interval_ms` (default 1 s), M masters and W workers:
//!
//! | who | when | interval | sent to |
//! |---|---|---|---|
//! | master | assembling (`Starting`..`Joining`) | b | everyone (group G) |
//! | master | steady (`EtcdMember`, `Ready`, `Failed`) | 5 b | everyone (group G) |
//! | worker | always | 90 b | masters only (group G', which only masters join) |
//! | master | a node it has never seen (or had expired) | once, at most [`REPLY_BUDGET_PER_S`]/s | that node, unicast |
//!
//! Every interval is jittered uniformly by ±25 % so nodes booted together
//! drift apart, and a node announces at once (after a short random delay,
//! at most b/4) when its own announcement changes, rate-limited to one per
//! b/4. A failed send backs off exponentially from 100 ms to the interval.
//!
//! Per-node message rates (steady state, b = 1 s; see README for the table
//! and the simulation that checks them):
//!
//! - master receives (M-1)/5 + W/90 msg/s, sends 1/5 msg/s (+ replies to
//!   new nodes, at most [`REPLY_BUDGET_PER_S`]/s, only while nodes arrive);
//! - worker receives M/5 msg/s (plus one reply per master when it starts),
//!   sends 1/90 msg/s: independent of W.
//!
//! At W = 5,000 a master receives about 56 msg/s (under 100 even during a
//! mass boot), a worker 0.6.

use std::time::Duration;

use cluster_config::Role;

use crate::message::Phase;

/// Steady masters announce this many times slower than the base interval.
pub const MASTER_STEADY_FACTOR: u64 = 5;
/// Workers announce this many times slower than the base interval.
pub const WORKER_FACTOR: u64 = 90;
/// Jitter: each delay is the interval times a factor in `1 ± JITTER`.
pub const JITTER: f64 = 0.25;
/// Replies a master sends per second at most (token bucket, burst the same).
pub const REPLY_BUDGET_PER_S: u32 = 50;
/// A peer unheard for this many of its own announce intervals expires.
pub const EXPIRY_INTERVALS: u64 = 3;
/// First retry delay after a failed send.
pub const BACKOFF_START_MS: u64 = 100;

/// The mean announce interval for a node of `role` in `phase`.
pub fn announce_interval(role: Role, phase: Phase, base_ms: u64) -> Duration {
    let factor = match (role, phase.is_assembling()) {
        (Role::Master, true) => 1,
        (Role::Master, false) => MASTER_STEADY_FACTOR,
        (Role::Worker, _) => WORKER_FACTOR,
    };
    Duration::from_millis(base_ms.saturating_mul(factor))
}

/// The delay before the next announcement: `interval` scaled by a jitter
/// sample `u` in `[0, 1)` to `interval × (1 - JITTER + 2 JITTER u)`.
pub fn jittered(interval: Duration, u: f64) -> Duration {
    let u = if u.is_finite() {
        u.clamp(0.0, 1.0)
    } else {
        0.5
    };
    interval.mul_f64(1.0 - JITTER + 2.0 * JITTER * u)
}

/// How long a peer stays in the table without being heard: a few of its
/// own (maximally jittered) intervals, plus one base interval of slack.
pub fn peer_ttl(role: Role, phase: Phase, base_ms: u64) -> Duration {
    let interval = announce_interval(role, phase, base_ms);
    jittered(interval, 1.0) * EXPIRY_INTERVALS as u32 + Duration::from_millis(base_ms)
}

/// The retry delay after `failures` consecutive failed sends.
pub fn backoff(failures: u32, interval: Duration) -> Duration {
    let ms = BACKOFF_START_MS.saturating_mul(1u64 << failures.min(20).saturating_sub(1));
    Duration::from_millis(ms).min(interval)
}

/// Whether a node answers a newly seen peer directly: masters do, so a
/// booting node learns every master within one round trip instead of
/// waiting for the next (possibly slow, steady) announcement.
pub fn replies_to_new_peers(own_role: Role) -> bool {
    own_role == Role::Master
}

/// A token bucket limiting replies to [`REPLY_BUDGET_PER_S`] per second, so
/// a mass boot of thousands of workers cannot make a master flood.
#[derive(Debug, Clone)]
pub struct ReplyLimiter {
    tokens: f64,
    last_ms: u64,
    per_s: f64,
}

impl ReplyLimiter {
    /// A full bucket of `per_s` tokens refilled at `per_s` per second.
    pub fn new(per_s: u32, now_ms: u64) -> Self {
        ReplyLimiter {
            tokens: f64::from(per_s),
            last_ms: now_ms,
            per_s: f64::from(per_s),
        }
    }

    /// Takes a token if one is left at `now_ms`.
    pub fn try_take(&mut self, now_ms: u64) -> bool {
        let elapsed_s = now_ms.saturating_sub(self.last_ms) as f64 / 1000.0;
        self.last_ms = self.last_ms.max(now_ms);
        self.tokens = (self.tokens + elapsed_s * self.per_s).min(self.per_s);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

impl Default for ReplyLimiter {
    fn default() -> Self {
        Self::new(REPLY_BUDGET_PER_S, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_by_role_and_phase() {
        let b = 1000;
        assert_eq!(
            announce_interval(Role::Master, Phase::Discovering, b),
            Duration::from_secs(1)
        );
        assert_eq!(
            announce_interval(Role::Master, Phase::Joining, b),
            Duration::from_secs(1)
        );
        assert_eq!(
            announce_interval(Role::Master, Phase::Ready, b),
            Duration::from_secs(5)
        );
        assert_eq!(
            announce_interval(Role::Worker, Phase::Discovering, b),
            Duration::from_secs(90)
        );
        assert_eq!(
            announce_interval(Role::Worker, Phase::Ready, b),
            Duration::from_secs(90)
        );
    }

    #[test]
    fn jitter_bounds() {
        let i = Duration::from_secs(4);
        assert_eq!(jittered(i, 0.0), Duration::from_secs(3));
        assert_eq!(jittered(i, 1.0), Duration::from_secs(5));
        assert_eq!(jittered(i, 0.5), i);
        assert_eq!(jittered(i, f64::NAN), i);
    }

    #[test]
    fn ttl_covers_missed_announcements() {
        let ttl = peer_ttl(Role::Master, Phase::Ready, 1000);
        assert!(ttl > jittered(Duration::from_secs(5), 1.0) * 2);
        assert_eq!(ttl, Duration::from_millis(3 * 6250 + 1000));
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let i = Duration::from_secs(1);
        assert_eq!(backoff(1, i), Duration::from_millis(100));
        assert_eq!(backoff(2, i), Duration::from_millis(200));
        assert_eq!(backoff(4, i), Duration::from_millis(800));
        assert_eq!(backoff(5, i), i);
        assert_eq!(backoff(u32::MAX, i), i);
    }

    #[test]
    fn reply_limiter_bursts_then_refills() {
        let mut l = ReplyLimiter::new(50, 0);
        let burst = (0..100).filter(|_| l.try_take(0)).count();
        assert_eq!(burst, 50);
        assert!(!l.try_take(10));
        assert!(l.try_take(20)); // 20 ms refills one token at 50/s
        let later = (0..100).filter(|_| l.try_take(1020)).count();
        assert_eq!(later, 50);
    }
}
