//! Fall/rise counting for one health check (keepalived's `fall` and
//! `rise`), with a separate, slower fall for timeouts. Pure: outcomes in,
//! standing out; no clock, no sockets.
//!
//! The `tracker` module (feature `runtime`) runs it for the VIP's weighted checks; the API load
//! balancer (`agent/crates/balancer`) runs one per backend, so a backend
//! and a VIP check leave and come back by the same rules.

/// The result of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Answered as expected within the timeout.
    Pass,
    /// Refused, failed or answered wrong: the service is down or broken.
    Fail,
    /// No answer within the timeout: busy, or hung.
    Slow,
}

/// Where a check stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// Passing.
    Passing,
    /// Failing on timeouts only: the service is there but busy (or hung).
    Slow,
    /// Failing: refused, broken or answering errors.
    Failing,
}

/// Fall/rise counting for one check. Pure.
///
/// - passing → slow after `slow_fall` consecutive timeouts;
/// - passing → failing after `fall` consecutive misses with at least one
///   [`Outcome::Fail`] among them;
/// - slow → failing after `fall` consecutive [`Outcome::Fail`]s;
/// - slow or failing → passing after `rise` consecutive passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    fall: u32,
    slow_fall: u32,
    rise: u32,
    standing: Standing,
    /// Consecutive passes.
    passes: u32,
    /// Consecutive misses (timeouts or failures).
    misses: u32,
    /// [`Outcome::Fail`]s among the current misses.
    hard: u32,
    /// Consecutive [`Outcome::Fail`]s.
    fails: u32,
}

impl Verdict {
    /// A verdict that starts failing; timeouts fall after `fall` too.
    pub fn new(fall: u32, rise: u32) -> Self {
        Verdict::with_slow_fall(fall, fall, rise)
    }

    /// A verdict that starts failing, with `slow_fall` (at least `fall`)
    /// consecutive timeouts to turn a passing check slow.
    pub fn with_slow_fall(fall: u32, slow_fall: u32, rise: u32) -> Self {
        let fall = fall.max(1);
        Verdict {
            fall,
            slow_fall: slow_fall.max(fall),
            rise: rise.max(1),
            standing: Standing::Failing,
            passes: 0,
            misses: 0,
            hard: 0,
            fails: 0,
        }
    }

    /// Whether the check counts as passing.
    pub fn passing(&self) -> bool {
        self.standing == Standing::Passing
    }

    /// Where the check stands.
    pub fn standing(&self) -> Standing {
        self.standing
    }

    /// Records one result; returns true when the standing changed.
    pub fn record(&mut self, outcome: Outcome) -> bool {
        match outcome {
            Outcome::Pass => {
                self.passes += 1;
                (self.misses, self.hard, self.fails) = (0, 0, 0);
            }
            Outcome::Slow => {
                self.passes = 0;
                self.misses += 1;
                self.fails = 0;
            }
            Outcome::Fail => {
                self.passes = 0;
                self.misses += 1;
                self.hard += 1;
                self.fails += 1;
            }
        }
        let next = match self.standing {
            Standing::Slow | Standing::Failing if self.passes >= self.rise => Standing::Passing,
            Standing::Passing if self.hard > 0 && self.misses >= self.fall => Standing::Failing,
            Standing::Passing if self.hard == 0 && self.misses >= self.slow_fall => Standing::Slow,
            Standing::Slow if self.fails >= self.fall => Standing::Failing,
            s => s,
        };
        let changed = next != self.standing;
        self.standing = next;
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdict_needs_rise_successes_and_fall_failures() {
        let mut v = Verdict::new(3, 2);
        assert!(!v.passing());
        assert!(!v.record(Outcome::Pass));
        assert!(v.record(Outcome::Pass), "second success flips to passing");
        assert!(v.passing());
        assert!(!v.record(Outcome::Fail));
        assert!(!v.record(Outcome::Fail));
        // A success in between resets the count.
        assert!(!v.record(Outcome::Pass));
        assert!(!v.record(Outcome::Fail));
        assert!(!v.record(Outcome::Fail));
        assert!(v.record(Outcome::Fail), "third consecutive failure flips");
        assert!(!v.passing());
    }

    #[test]
    fn timeouts_alone_make_a_check_slow_and_refusals_make_it_fail() {
        use Outcome::*;
        let mut v = Verdict::with_slow_fall(3, 10, 2);
        assert_eq!(v.standing(), Standing::Failing);
        v.record(Pass);
        assert!(v.record(Pass));
        // Nine timeouts in a row: still passing (a busy server).
        for _ in 0..9 {
            assert!(!v.record(Slow));
        }
        assert!(v.record(Slow), "the tenth timeout turns it slow");
        assert_eq!(v.standing(), Standing::Slow);
        assert!(!v.passing());
        // Slow, then the server dies: three refusals in a row fail it.
        assert!(!v.record(Fail));
        assert!(!v.record(Slow), "a timeout breaks the run of refusals");
        assert!(!v.record(Fail));
        assert!(!v.record(Fail));
        assert!(v.record(Fail));
        assert_eq!(v.standing(), Standing::Failing);
        // Failing stays failing on timeouts until it passes `rise` times.
        for _ in 0..20 {
            assert!(!v.record(Slow));
        }
        v.record(Pass);
        assert!(v.record(Pass));
        assert!(v.passing());
        // From passing, misses with one refusal among them fail after `fall`.
        assert!(!v.record(Slow));
        assert!(!v.record(Fail));
        assert!(v.record(Slow), "third miss with a refusal in it");
        assert_eq!(v.standing(), Standing::Failing);
        // Slow, then passes: back to passing after `rise`.
        v.record(Pass);
        v.record(Pass);
        for _ in 0..10 {
            v.record(Slow);
        }
        assert_eq!(v.standing(), Standing::Slow);
        assert!(!v.record(Pass));
        assert!(v.record(Pass));
        assert!(v.passing());
        // A pass in between resets the run of misses.
        assert!(!v.record(Fail));
        assert!(!v.record(Pass));
        for _ in 0..9 {
            assert!(!v.record(Slow));
        }
        assert!(v.record(Slow));
        // slow_fall below fall acts as fall; new() treats timeouts alike.
        let mut w = Verdict::with_slow_fall(3, 1, 1);
        assert!(w.record(Pass));
        assert!(!w.record(Slow));
        assert!(!w.record(Slow));
        assert!(w.record(Slow));
    }

    #[test]
    fn zero_fall_or_rise_acts_as_one() {
        let mut v = Verdict::new(0, 0);
        assert!(v.record(Outcome::Pass));
        assert!(v.record(Outcome::Fail));
    }
}
