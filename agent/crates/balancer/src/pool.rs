//! The backend pool: which API servers are in rotation, how many
//! connections each carries, and which one takes the next connection.
//! Pure: check outcomes and connection events in, picks and a status
//! snapshot out; no sockets, no clock.
//!
//! Health is counted per backend by [`vrrp::verdict::Verdict`], the
//! fall/rise counter of the VIP's own checks: a backend leaves the
//! rotation after `fall` failed checks in a row and comes back after `rise`
//! passes in a row; it starts out of rotation. Timeouts alone (a busy
//! backend) take `slow_fall` checks and make it *slow*: out of rotation,
//! but still used when no backend passes (a busy API server serves what
//! reaches it; none at all serves nothing).
//!
//! The pick is *least connections, round robin among ties*: see the crate
//! docs for why.

use std::net::SocketAddr;
use std::time::Duration;

use vrrp::verdict::{Outcome, Standing, Verdict};

use crate::status::{BackendHealth, BackendStatus};

/// How backends are checked and counted: the check period, the time one
/// check may take, and the fall/rise thresholds. The bounds below follow
/// from these four numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthRules {
    /// Time between the starts of two checks of one backend.
    pub interval: Duration,
    /// Time one check may take (connect, TLS, answer).
    pub timeout: Duration,
    /// Consecutive failed checks (refused, TLS failure, not ready) that
    /// take a backend out of rotation.
    pub fall: u32,
    /// Consecutive timeouts that make a backend slow (at least `fall`).
    pub slow_fall: u32,
    /// Consecutive passes that bring a backend back.
    pub rise: u32,
}

impl HealthRules {
    /// The API server defaults: `/readyz` every second, 2 s to answer,
    /// out after 3 failures, slow after 5 timeouts, back after 2 passes.
    /// A stopped or not-ready API server leaves within 3 s (at most
    /// [`HealthRules::leave_bound`], 5 s); a ready one comes back within
    /// 2 s (at most [`HealthRules::return_bound`], 4 s).
    pub const APISERVER: HealthRules = HealthRules {
        interval: Duration::from_secs(1),
        timeout: Duration::from_secs(2),
        fall: 3,
        slow_fall: 5,
        rise: 2,
    };

    /// The longest a backend that refuses connections or answers "not
    /// ready" stays in rotation: `fall × interval + timeout`. The first
    /// check that starts after the failure starts within one interval,
    /// the `fall`-th within `fall` intervals, and it takes at most
    /// `timeout`. Refused proxied connections count as failed checks too,
    /// so under traffic a dead backend leaves sooner.
    pub fn leave_bound(&self) -> Duration {
        self.interval * self.fall.max(1) + self.timeout
    }

    /// The longest a backend whose checks only time out (hung, or very
    /// busy) stays in rotation: `slow_fall × max(interval, timeout) +
    /// interval` (a check that runs into its timeout delays the next).
    pub fn slow_bound(&self) -> Duration {
        self.interval.max(self.timeout) * self.slow_fall.max(self.fall).max(1) + self.interval
    }

    /// The longest a backend that is ready again stays out of rotation:
    /// `rise × interval + timeout`.
    pub fn return_bound(&self) -> Duration {
        self.interval * self.rise.max(1) + self.timeout
    }

    fn verdict(&self) -> Verdict {
        Verdict::with_slow_fall(self.fall, self.slow_fall, self.rise)
    }
}

/// A backend's number in the pool: given in the order backends were
/// added (the first `n` given to [`Pool::new`] are `0..n`), never reused
/// after a [`Pool::remove`], so a connection that outlives its backend's
/// removal cannot touch a backend added later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackendId(usize);

impl BackendId {
    /// The number (equal to the position in the pool until a backend is
    /// removed).
    pub fn index(self) -> usize {
        self.0
    }
}

#[derive(Debug, Clone)]
struct Backend {
    id: BackendId,
    addr: SocketAddr,
    verdict: Verdict,
    /// Connections picked and not yet released (connecting or open).
    active: u32,
    /// Connections established through this backend.
    total: u64,
    /// Proxied connections this backend refused or did not accept in time.
    connect_failures: u64,
    /// Why the last check or connection failed, while it is failing.
    last_error: Option<String>,
}

/// The backends, their health and connection counts. Pure.
#[derive(Debug, Clone)]
pub struct Pool {
    /// In the order they were added (round robin follows it).
    backends: Vec<Backend>,
    /// Where the round robin among equally loaded backends starts next
    /// (a position in `backends`).
    next: usize,
    /// The number the next added backend gets.
    next_id: usize,
    rules: HealthRules,
}

impl Pool {
    /// A pool of `addrs`, every backend out of rotation until it passes
    /// `rules.rise` checks.
    pub fn new(addrs: impl IntoIterator<Item = SocketAddr>, rules: &HealthRules) -> Self {
        let mut pool = Pool {
            backends: Vec::new(),
            next: 0,
            next_id: 0,
            rules: *rules,
        };
        for addr in addrs {
            pool.add(addr);
        }
        pool
    }

    /// Adds a backend at the end of the round-robin order, out of
    /// rotation until it passes `rise` checks, and returns its id.
    pub fn add(&mut self, addr: SocketAddr) -> BackendId {
        let id = BackendId(self.next_id);
        self.next_id += 1;
        self.backends.push(Backend {
            id,
            addr,
            verdict: self.rules.verdict(),
            active: 0,
            total: 0,
            connect_failures: 0,
            last_error: None,
        });
        id
    }

    /// Removes backend `id` at once: it is never picked again, and later
    /// events for it (a connection to it closing, a check finishing) are
    /// ignored. Returns its address (`None`: no such backend).
    pub fn remove(&mut self, id: BackendId) -> Option<SocketAddr> {
        let at = self.at(id)?;
        let b = self.backends.remove(at);
        // Keep the round robin where it was: on the backend after the
        // removed one.
        if at < self.next {
            self.next -= 1;
        }
        if self.next >= self.backends.len() {
            self.next = 0;
        }
        Some(b.addr)
    }

    /// The id of the backend at `addr`, if there is one.
    pub fn find(&self, addr: SocketAddr) -> Option<BackendId> {
        self.backends.iter().find(|b| b.addr == addr).map(|b| b.id)
    }

    /// Position of `id` in `backends`.
    fn at(&self, id: BackendId) -> Option<usize> {
        self.backends.iter().position(|b| b.id == id)
    }

    fn get(&self, id: BackendId) -> Option<&Backend> {
        self.at(id).map(|i| &self.backends[i])
    }

    fn get_mut(&mut self, id: BackendId) -> Option<&mut Backend> {
        self.at(id).map(|i| &mut self.backends[i])
    }

    /// Number of backends.
    pub fn len(&self) -> usize {
        self.backends.len()
    }

    /// Whether the pool has no backends.
    pub fn is_empty(&self) -> bool {
        self.backends.is_empty()
    }

    /// The ids of all backends, in round-robin order.
    pub fn ids(&self) -> impl Iterator<Item = BackendId> + '_ {
        self.backends.iter().map(|b| b.id)
    }

    /// Backend `id`'s address (`None`: no such backend).
    pub fn addr(&self, id: BackendId) -> Option<SocketAddr> {
        self.get(id).map(|b| b.addr)
    }

    /// Backend `id`'s health (`None`: no such backend).
    pub fn health(&self, id: BackendId) -> Option<BackendHealth> {
        self.get(id).map(|b| health_of(&b.verdict))
    }

    /// How the pool picks: passing backends; when none passes, slow
    /// ones; never failing ones.
    fn eligible(&self) -> Standing {
        if self.backends.iter().any(|b| b.verdict.passing()) {
            Standing::Passing
        } else {
            Standing::Slow
        }
    }

    /// Whether backend `id` takes new connections now.
    pub fn in_rotation(&self, id: BackendId) -> bool {
        let want = self.eligible();
        self.get(id).is_some_and(|b| b.verdict.standing() == want)
    }

    /// Number of backends that take new connections now: what the VIP's
    /// priority should see (zero: this node cannot serve the API).
    pub fn serving(&self) -> usize {
        self.ids().filter(|&id| self.in_rotation(id)).count()
    }

    /// Picks the backend for a new connection and reserves it (counts it
    /// as active until [`Pool::release`]): among the backends in rotation
    /// and not in `tried`, the one with the fewest active connections;
    /// among equals, the next in round-robin order. `None`: no backend
    /// left to try.
    pub fn pick(&mut self, tried: &[BackendId]) -> Option<BackendId> {
        let n = self.backends.len();
        let want = self.eligible();
        let mut best: Option<(usize, u32)> = None;
        for step in 0..n {
            let i = (self.next + step) % n;
            let b = &self.backends[i];
            if b.verdict.standing() != want || tried.contains(&b.id) {
                continue;
            }
            // Strictly fewer only: the first in round-robin order wins ties.
            if best.is_none_or(|(_, active)| b.active < active) {
                best = Some((i, b.active));
            }
        }
        let (i, _) = best?;
        self.next = (i + 1) % n;
        self.backends[i].active += 1;
        Some(self.backends[i].id)
    }

    /// The connection picked for `id` reached it.
    pub fn connected(&mut self, id: BackendId) {
        if let Some(b) = self.get_mut(id) {
            b.total += 1;
        }
    }

    /// A connection picked for `id` ended (closed, or failed to connect).
    pub fn release(&mut self, id: BackendId) {
        if let Some(b) = self.get_mut(id) {
            b.active = b.active.saturating_sub(1);
        }
    }

    /// A proxied connection to `id` failed: counted, and recorded like a
    /// failed check ([`Outcome::Fail`] refused, [`Outcome::Slow`] timed
    /// out), so a dead backend leaves sooner under traffic. Returns the
    /// new health when it changed.
    pub fn connect_failed(
        &mut self,
        id: BackendId,
        outcome: Outcome,
        why: String,
    ) -> Option<BackendHealth> {
        if let Some(b) = self.get_mut(id) {
            b.connect_failures += 1;
        }
        self.record(id, outcome, Some(why))
    }

    /// Records one check of `id` (`why`: the reason when it did not pass).
    /// Returns the new health when it changed.
    pub fn record(
        &mut self,
        id: BackendId,
        outcome: Outcome,
        why: Option<String>,
    ) -> Option<BackendHealth> {
        let b = self.get_mut(id)?;
        if outcome == Outcome::Pass {
            b.last_error = None;
        } else if why.is_some() {
            b.last_error = why;
        }
        b.verdict.record(outcome).then(|| health_of(&b.verdict))
    }

    /// The status snapshot: every backend with its health, whether it is
    /// in rotation, and its connection counts.
    pub fn snapshot(&self) -> Vec<BackendStatus> {
        self.backends
            .iter()
            .map(|b| BackendStatus {
                addr: b.addr,
                health: health_of(&b.verdict),
                in_rotation: self.in_rotation(b.id),
                active: b.active,
                total: b.total,
                connect_failures: b.connect_failures,
                last_error: b.last_error.clone(),
            })
            .collect()
    }
}

fn health_of(v: &Verdict) -> BackendHealth {
    match v.standing() {
        Standing::Passing => BackendHealth::Up,
        Standing::Slow => BackendHealth::Slow,
        Standing::Failing => BackendHealth::Down,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: HealthRules = HealthRules {
        interval: Duration::from_millis(200),
        timeout: Duration::from_millis(500),
        fall: 3,
        slow_fall: 5,
        rise: 2,
    };

    fn addrs(n: u8) -> Vec<SocketAddr> {
        (0..n)
            .map(|i| SocketAddr::from(([10, 0, 0, 2 + i], 6443)))
            .collect()
    }

    /// A pool of `n` backends that all passed `rise` checks.
    fn up(n: u8) -> Pool {
        let mut p = Pool::new(addrs(n), &RULES);
        for id in p.ids().collect::<Vec<_>>() {
            for _ in 0..RULES.rise {
                p.record(id, Outcome::Pass, None);
            }
        }
        p
    }

    #[test]
    fn backends_start_out_of_rotation_and_come_in_after_rise_passes() {
        let mut p = Pool::new(addrs(2), &RULES);
        assert_eq!(p.pick(&[]), None, "nothing has passed yet");
        assert_eq!(p.serving(), 0);
        let a = BackendId(0);
        assert_eq!(p.record(a, Outcome::Pass, None), None);
        assert_eq!(p.record(a, Outcome::Pass, None), Some(BackendHealth::Up));
        assert_eq!(p.serving(), 1);
        assert_eq!(p.pick(&[]), Some(a));
        assert_eq!(p.pick(&[]), Some(a), "the only backend in rotation");
    }

    #[test]
    fn sequential_connections_go_round_robin() {
        let mut p = up(3);
        let mut order = Vec::new();
        for _ in 0..6 {
            let id = p.pick(&[]).unwrap();
            p.connected(id);
            p.release(id);
            order.push(id.index());
        }
        assert_eq!(order, [0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn least_connections_wins_over_round_robin() {
        let mut p = up(3);
        // Two long-lived connections on 0, one on 1.
        let a = p.pick(&[]).unwrap();
        let b = p.pick(&[]).unwrap();
        let c = p.pick(&[]).unwrap();
        assert_eq!((a.index(), b.index(), c.index()), (0, 1, 2));
        p.release(c);
        let d = p.pick(&[]).unwrap();
        assert_eq!(d.index(), 2, "2 has none");
        p.release(b);
        p.release(d);
        let a2 = p.pick(&[]).unwrap();
        assert_eq!(
            a2.index(),
            1,
            "1 and 2 are idle: round robin from 0 reaches 1 first"
        );
        assert_eq!(p.pick(&[]).unwrap().index(), 2, "then 2, the one left idle");
    }

    #[test]
    fn spread_of_3000_picks_is_within_ten_percent() {
        // Connections of varying lifetimes: each pick holds its backend
        // for a while (a pseudo-random number of later picks), as
        // watches and short requests do, so least connections is what
        // decides and the ties are what round robin breaks.
        let mut p = up(3);
        let mut open: Vec<(u32, BackendId)> = Vec::new();
        let mut seed: u32 = 0x9e37_79b9;
        for t in 0..3000u32 {
            open.retain(|&(until, id)| {
                let keep = until > t;
                if !keep {
                    p.release(id);
                }
                keep
            });
            let id = p.pick(&[]).unwrap();
            p.connected(id);
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            open.push((t + 1 + seed % 40, id));
        }
        let totals: Vec<u64> = p.snapshot().iter().map(|b| b.total).collect();
        assert_eq!(totals.iter().sum::<u64>(), 3000);
        for (i, &n) in totals.iter().enumerate() {
            assert!(
                (900..=1100).contains(&n),
                "backend {i}: {n} of 3000 ({totals:?})"
            );
        }
    }

    #[test]
    fn a_failing_backend_leaves_after_fall_and_is_never_picked() {
        let mut p = up(3);
        let dead = BackendId(1);
        for _ in 0..2 {
            assert_eq!(p.record(dead, Outcome::Fail, Some("refused".into())), None);
        }
        assert!(p.in_rotation(dead), "still in after two failures");
        assert_eq!(
            p.record(dead, Outcome::Fail, Some("refused".into())),
            Some(BackendHealth::Down)
        );
        assert!(!p.in_rotation(dead));
        for _ in 0..300 {
            let id = p.pick(&[]).unwrap();
            assert_ne!(id, dead);
            p.release(id);
        }
        let s = &p.snapshot()[1];
        assert_eq!((s.health, s.in_rotation), (BackendHealth::Down, false));
        assert_eq!(s.last_error.as_deref(), Some("refused"));
        // Back after `rise` passes; the error is gone.
        p.record(dead, Outcome::Pass, None);
        assert!(!p.in_rotation(dead));
        assert_eq!(p.record(dead, Outcome::Pass, None), Some(BackendHealth::Up));
        assert!(p.in_rotation(dead));
        assert_eq!(p.snapshot()[1].last_error, None);
    }

    #[test]
    fn refused_connections_count_as_failed_checks() {
        let mut p = up(2);
        let id = p.pick(&[]).unwrap();
        p.release(id);
        for _ in 0..RULES.fall {
            p.connect_failed(id, Outcome::Fail, "connection refused".into());
        }
        assert!(!p.in_rotation(id));
        assert_eq!(p.snapshot()[id.index()].connect_failures, 3);
        assert_eq!(p.snapshot()[id.index()].total, 0);
    }

    #[test]
    fn tried_backends_are_skipped_and_then_there_is_none() {
        let mut p = up(3);
        let a = p.pick(&[]).unwrap();
        p.release(a);
        let b = p.pick(&[a]).unwrap();
        p.release(b);
        let c = p.pick(&[a, b]).unwrap();
        p.release(c);
        assert_eq!(p.pick(&[a, b, c]), None);
        let mut all = vec![a, b, c];
        all.sort();
        assert_eq!(all, p.ids().collect::<Vec<_>>());
    }

    #[test]
    fn slow_backends_serve_only_when_none_passes() {
        let mut p = up(2);
        let (a, b) = (BackendId(0), BackendId(1));
        for _ in 0..RULES.slow_fall {
            p.record(a, Outcome::Slow, Some("timed out".into()));
        }
        assert_eq!(p.health(a), Some(BackendHealth::Slow));
        assert!(!p.in_rotation(a), "b passes: a is out");
        assert_eq!(p.serving(), 1);
        for _ in 0..RULES.fall {
            p.record(b, Outcome::Fail, None);
        }
        assert!(p.in_rotation(a), "nothing passes: the slow one serves");
        assert_eq!(p.pick(&[]), Some(a));
        assert_eq!(p.serving(), 1);
        for _ in 0..RULES.fall {
            p.record(a, Outcome::Fail, None);
        }
        assert_eq!(p.serving(), 0);
        assert_eq!(p.pick(&[]), None, "failing backends are never picked");
    }

    #[test]
    fn unknown_ids_are_ignored() {
        let mut p = up(1);
        let ghost = BackendId(7);
        assert_eq!(p.record(ghost, Outcome::Fail, None), None);
        p.connected(ghost);
        p.release(ghost);
        assert_eq!(p.addr(ghost), None);
        assert_eq!(p.health(ghost), None);
        assert!(!p.in_rotation(ghost));
        assert!(Pool::new([], &RULES).is_empty());
        assert_eq!(Pool::new([], &RULES).pick(&[]), None);
    }

    #[test]
    fn removed_backends_leave_at_once_and_late_events_are_ignored() {
        let mut p = up(3);
        let (a, b, c) = (BackendId(0), BackendId(1), BackendId(2));
        // A long-lived connection on b, then b is removed.
        assert_eq!(p.pick(&[]), Some(a));
        p.release(a);
        assert_eq!(p.pick(&[]), Some(b));
        p.connected(b);
        assert_eq!(p.remove(b), Some(addrs(3)[1]));
        assert_eq!(p.remove(b), None, "already gone");
        assert_eq!(p.serving(), 2);
        assert_eq!(p.ids().collect::<Vec<_>>(), [a, c]);
        // The round robin goes on after b: c, then a.
        let mut order = Vec::new();
        for _ in 0..4 {
            let id = p.pick(&[]).unwrap();
            p.release(id);
            order.push(id);
        }
        assert_eq!(order, [c, a, c, a]);
        // Its connection closing, or a late check, touches nothing.
        p.release(b);
        assert_eq!(p.record(b, Outcome::Fail, None), None);
        // Added again: a new id, out of rotation until `rise` passes,
        // at the end of the order, with fresh counts.
        let b2 = p.add(addrs(3)[1]);
        assert_ne!(b2, b);
        assert_eq!(p.find(addrs(3)[1]), Some(b2));
        assert!(!p.in_rotation(b2));
        for _ in 0..RULES.rise {
            p.record(b2, Outcome::Pass, None);
        }
        assert!(p.in_rotation(b2));
        let s = p.snapshot();
        assert_eq!(
            s.iter().map(|b| b.addr).collect::<Vec<_>>(),
            [addrs(3)[0], addrs(3)[2], addrs(3)[1]]
        );
        assert_eq!(s[2].total, 0);
        // Removing the last one in the order wraps the round robin.
        let mut p = up(2);
        assert_eq!(p.pick(&[]), Some(a));
        p.release(a);
        p.remove(b);
        assert_eq!(p.pick(&[]), Some(a));
        p.remove(a);
        assert!(p.is_empty());
        assert_eq!(p.pick(&[]), None);
    }

    #[test]
    fn bounds_follow_from_interval_timeout_and_thresholds() {
        let r = HealthRules::APISERVER;
        assert_eq!(r.leave_bound(), Duration::from_secs(5));
        assert_eq!(r.return_bound(), Duration::from_secs(4));
        assert_eq!(r.slow_bound(), Duration::from_secs(11));
        assert_eq!(RULES.leave_bound(), Duration::from_millis(1100));
    }
}
