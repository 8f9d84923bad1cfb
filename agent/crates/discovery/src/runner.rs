//! The async runner: announces our own [`Announcement`] on a source at the
//! policy's rate, opens what arrives, keeps the [`PeerTable`], answers new
//! peers, and publishes snapshots and counters on watch channels. All
//! decisions come from the pure modules; this file only does I/O and time.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cluster_config::Role;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{sleep_until, Instant};

use crate::message::{
    open, parse_frame, peek_authenticated, seal, Announcement, Rejected, ReplayGuard,
    DEFAULT_WINDOW_MS, MAX_MESSAGE_LEN,
};
use crate::peers::{Observed, PeerSnapshot, PeerTable};
use crate::rate::{
    announce_interval, backoff, jittered, replies_to_new_peers, ReplyLimiter, REPLY_BUDGET_PER_S,
};
use crate::skew::{SkewNote, SkewReport, SkewTracker};
use crate::source::{Destination, DiscoverySource};
use crate::DiscoveryKeys;

/// Rejected messages by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct RejectCounts {
    /// [`Rejected::Malformed`].
    pub malformed: u64,
    /// [`Rejected::UnsupportedVersion`].
    pub unsupported_version: u64,
    /// [`Rejected::BadMac`].
    pub bad_mac: u64,
    /// [`Rejected::Stale`].
    pub stale: u64,
    /// [`Rejected::Future`].
    pub future: u64,
    /// [`Rejected::Replayed`].
    pub replayed: u64,
    /// [`Rejected::TooManySenders`].
    pub too_many_senders: u64,
}

impl RejectCounts {
    /// Counts one rejection.
    pub fn record(&mut self, why: Rejected) {
        let slot = match why {
            Rejected::Malformed => &mut self.malformed,
            Rejected::UnsupportedVersion => &mut self.unsupported_version,
            Rejected::BadMac => &mut self.bad_mac,
            Rejected::Stale => &mut self.stale,
            Rejected::Future => &mut self.future,
            Rejected::Replayed => &mut self.replayed,
            Rejected::TooManySenders => &mut self.too_many_senders,
        };
        *slot += 1;
    }

    /// All rejections.
    pub fn total(&self) -> u64 {
        self.malformed
            + self.unsupported_version
            + self.bad_mac
            + self.stale
            + self.future
            + self.replayed
            + self.too_many_senders
    }
}

/// Counters of one runner.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct DiscoveryStats {
    /// Own announcements sent (periodic and on change).
    pub sent: u64,
    /// Direct replies sent to newly seen peers.
    pub replies: u64,
    /// Sends that failed (retried with backoff).
    pub send_errors: u64,
    /// Datagrams received.
    pub received: u64,
    /// Authenticated announcements from other nodes.
    pub accepted: u64,
    /// Our own multicasts looped back (ignored).
    pub own: u64,
    /// Messages dropped, by reason.
    pub rejected: RejectCounts,
}

/// Runner settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveryOptions {
    /// `discovery.interval_ms`: the assembling masters' interval.
    pub base_interval_ms: u64,
    /// Accepted clock difference each way (see [`ReplayGuard`]).
    pub window_ms: u64,
    /// Masters answer every announcement (within the reply budget), not
    /// only new nodes: for sources where nodes do not hear the masters'
    /// periodic announcements ([`crate::StaticPeersSource`]).
    pub reply_to_known: bool,
}

impl DiscoveryOptions {
    /// Defaults for `base_interval_ms`.
    pub fn new(base_interval_ms: u64) -> Self {
        DiscoveryOptions {
            base_interval_ms,
            window_ms: DEFAULT_WINDOW_MS,
            reply_to_known: false,
        }
    }
}

/// A running discovery task; dropping the handle stops it.
#[derive(Debug)]
pub struct DiscoveryHandle {
    /// The peers heard: republished at once when one appears or changes,
    /// and within one base interval when one expires or is heard again
    /// (so `last_seen_ms` lags by at most `base_interval_ms`).
    pub peers: watch::Receiver<PeerSnapshot>,
    /// Counters, including rejected messages by reason.
    pub stats: watch::Receiver<DiscoveryStats>,
    /// Peers whose clocks are off by more than half the time window (see
    /// [`crate::skew`]); republished when that changes.
    pub skew: watch::Receiver<Vec<SkewReport>>,
    task: JoinHandle<()>,
}

impl Drop for DiscoveryHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The discovery runner.
#[derive(Debug)]
pub struct Discovery;

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Discovery {
    /// Starts announcing `own` (its latest value, re-sent promptly when it
    /// changes) and listening on `source`. Must run inside a Tokio runtime.
    /// The task ends when the handle is dropped or `own`'s sender is.
    pub fn spawn<S: DiscoverySource + 'static>(
        source: S,
        keys: DiscoveryKeys,
        own: watch::Receiver<Announcement>,
        options: DiscoveryOptions,
    ) -> DiscoveryHandle {
        let (peers_tx, peers) = watch::channel(PeerSnapshot::default());
        let (stats_tx, stats) = watch::channel(DiscoveryStats::default());
        let (skew_tx, skew) = watch::channel(Vec::new());
        let task = tokio::spawn(run(
            Arc::new(source),
            keys,
            own,
            options,
            Outputs {
                peers: peers_tx,
                stats: stats_tx,
                skew: skew_tx,
            },
        ));
        DiscoveryHandle {
            peers,
            stats,
            skew,
            task,
        }
    }
}

fn destination_for(role: Role) -> Destination {
    match role {
        Role::Master => Destination::Everyone,
        Role::Worker => Destination::Masters,
    }
}

/// What the runner publishes.
struct Outputs {
    peers: watch::Sender<PeerSnapshot>,
    stats: watch::Sender<DiscoveryStats>,
    skew: watch::Sender<Vec<SkewReport>>,
}

/// Feeds one authenticated message's timestamp to the skew tracker, logs
/// what it says and republishes the report when it changed.
fn note_skew(
    skew: &mut SkewTracker,
    tx: &watch::Sender<Vec<SkewReport>>,
    ann: &Announcement,
    from: std::net::SocketAddr,
    timestamp_ms: u64,
    now_ms: u64,
    accepted: bool,
) {
    let note = skew.observe(
        ann.node_id,
        &ann.name,
        Some(from.ip()),
        timestamp_ms,
        now_ms,
        accepted,
    );
    match note {
        SkewNote::Quiet => {}
        SkewNote::Warn(text) => tracing::warn!("{text}"),
        SkewNote::Recovered(text) => tracing::info!("{text}"),
    }
    let report = skew.report(now_ms);
    tx.send_if_modified(|r| {
        // Republished when anything in it changed (a skewed peer's
        // count and time do with each of its messages: one per interval).
        if *r == report {
            false
        } else {
            *r = report;
            true
        }
    });
}

async fn run<S: DiscoverySource>(
    source: Arc<S>,
    keys: DiscoveryKeys,
    mut own: watch::Receiver<Announcement>,
    options: DiscoveryOptions,
    out: Outputs,
) {
    let Outputs {
        peers: peers_tx,
        stats: stats_tx,
        skew: skew_tx,
    } = out;
    let mut skew = SkewTracker::new(options.window_ms);
    let base = options.base_interval_ms.max(1);
    let mut table = PeerTable::new(base);
    let mut replay = ReplayGuard::new(options.window_ms);
    let mut limiter = ReplyLimiter::new(REPLY_BUDGET_PER_S, wall_ms());
    let mut buf = vec![0u8; MAX_MESSAGE_LEN + 1];
    let mut failures = 0u32;
    // First announcement after a short random delay (at most base/4), so a
    // rack powered on at once does not speak in the same millisecond.
    let quarter = Duration::from_millis(base / 4);
    let mut next_announce = Instant::now() + quarter.mul_f64(rand::random::<f64>());
    let mut last_change_announce = Instant::now() - quarter;
    // Refreshes (same announcement again) only move `last_seen_ms`: they are
    // published with the next tick (at most `base` late) rather than at
    // once, so a master hearing thousands of workers does not copy its
    // whole table for every datagram.
    let mut refreshed = false;
    let mut expire_tick = tokio::time::interval(Duration::from_millis(base));
    expire_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    loop {
        tokio::select! {
            () = sleep_until(next_announce) => {
                let ann = own.borrow().clone();
                let msg = seal(&ann, &keys, wall_ms(), rand::random());
                if msg.len() > MAX_MESSAGE_LEN {
                    tracing::error!(
                        bytes = msg.len(),
                        max = MAX_MESSAGE_LEN,
                        "discovery: own announcement too large; peers will reject it (shorten the name, addresses or proposal)"
                    );
                }
                let interval = announce_interval(ann.role, ann.phase, base);
                match source.send(&msg, destination_for(ann.role)).await {
                    Ok(()) => {
                        failures = 0;
                        stats_tx.send_modify(|s| s.sent += 1);
                        next_announce = Instant::now() + jittered(interval, rand::random());
                    }
                    Err(e) => {
                        failures = failures.saturating_add(1);
                        stats_tx.send_modify(|s| s.send_errors += 1);
                        let delay = backoff(failures, interval);
                        tracing::warn!(error = %e, retry_ms = delay.as_millis() as u64, "discovery: announce failed");
                        next_announce = Instant::now() + delay;
                    }
                }
            }
            changed = own.changed() => {
                if changed.is_err() {
                    tracing::debug!("discovery: own announcement sender dropped, stopping");
                    return;
                }
                // Announce the change soon, but at most once per base/4.
                let soon = (last_change_announce + quarter).max(Instant::now());
                if soon < next_announce {
                    next_announce = soon;
                    last_change_announce = soon;
                }
            }
            received = source.recv(&mut buf) => {
                let (len, from) = match received {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::warn!(error = %e, "discovery: receive failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let now = wall_ms();
                stats_tx.send_modify(|s| s.received += 1);
                let ann = match open(&buf[..len], &keys, now, &mut replay) {
                    Ok(ann) => ann,
                    Err(why) => {
                        tracing::debug!(%from, reason = %why, "discovery: message rejected");
                        stats_tx.send_modify(|s| s.rejected.record(why));
                        // Genuine but outside the window: a clock is off.
                        if matches!(why, Rejected::Stale | Rejected::Future) {
                            if let Some((ann, ts)) = peek_authenticated(&buf[..len], &keys) {
                                if ann.node_id != own.borrow().node_id {
                                    note_skew(&mut skew, &skew_tx, &ann, from, ts, now, false);
                                }
                            }
                        }
                        continue;
                    }
                };
                let me = own.borrow().clone();
                if ann.node_id == me.node_id {
                    stats_tx.send_modify(|s| s.own += 1);
                    continue;
                }
                stats_tx.send_modify(|s| s.accepted += 1);
                if let Ok(frame) = parse_frame(&buf[..len]) {
                    note_skew(&mut skew, &skew_tx, &ann, from, frame.timestamp_ms, now, true);
                }
                let observed = table.observe_from(ann, Some(from), now);
                if observed == Observed::Refreshed {
                    refreshed = true;
                } else {
                    peers_tx.send_replace(table.snapshot(now));
                    refreshed = false;
                }
                let wants_reply = observed == Observed::New || options.reply_to_known;
                if wants_reply && replies_to_new_peers(me.role) && limiter.try_take(now) {
                    let msg = seal(&me, &keys, now, rand::random());
                    match source.send(&msg, Destination::Node(from)).await {
                        Ok(()) => stats_tx.send_modify(|s| s.replies += 1),
                        Err(e) => {
                            stats_tx.send_modify(|s| s.send_errors += 1);
                            tracing::debug!(%from, error = %e, "discovery: reply failed");
                        }
                    }
                }
            }
            _ = expire_tick.tick() => {
                let now = wall_ms();
                let gone = table.expire(now);
                if !gone.is_empty() {
                    tracing::info!(count = gone.len(), "discovery: peers expired");
                }
                if !gone.is_empty() || refreshed {
                    peers_tx.send_replace(table.snapshot(now));
                    refreshed = false;
                }
            }
        }
    }
}
