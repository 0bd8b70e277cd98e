//! Hedging: more tries of a call sent while the first is still out, the first answer
//! taken and the others cancelled.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// When the next hedge goes out.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum HedgeDelay {
    /// This long after the previous try.
    Fixed(Duration),
    /// The given percentile (0 to 100) of the recent times to an answer, so that only the
    /// slowest calls are hedged; `floor` while too few calls were seen.
    Percentile {
        /// The percentile, e.g. 95.0.
        percentile: f64,
        /// The delay until enough answers were timed (and the least delay ever).
        floor: Duration,
    },
}

/// Sends up to `max` tries of a call (the first included), one more each `delay` while no
/// answer has come, each to another endpoint when the target has one; the first answer
/// (response headers, or a trailers-only status) is the call's, and the other tries are
/// cancelled (their backends get RST_STREAM). Only for idempotent methods: every try may
/// run to completion on its backend.
///
/// ```
/// use std::time::Duration;
/// use grpcproxy::policy::{HedgeDelay, HedgePolicy};
///
/// let policy = HedgePolicy::new(HedgeDelay::Fixed(Duration::from_millis(50)), 2);
/// assert_eq!(policy.delay(), Duration::from_millis(50));
/// ```
#[derive(Debug)]
pub struct HedgePolicy {
    delay: HedgeDelay,
    max: u32,
    latency: LatencyTracker,
    stats: Arc<HedgeStats>,
}

impl HedgePolicy {
    /// Up to `max` tries in all (at least 1), a new one after each `delay`.
    pub fn new(delay: HedgeDelay, max: u32) -> Self {
        Self {
            delay,
            max: max.max(1),
            latency: LatencyTracker::default(),
            stats: Arc::default(),
        }
    }

    /// Counts into `stats` (to keep one count across rebuilt policies).
    pub fn with_stats(mut self, stats: Arc<HedgeStats>) -> Self {
        self.stats = stats;
        self
    }

    /// Tries in all, the first included.
    pub fn max(&self) -> u32 {
        self.max
    }

    /// The wait before the next hedge, now.
    pub fn delay(&self) -> Duration {
        match self.delay {
            HedgeDelay::Fixed(delay) => delay,
            HedgeDelay::Percentile { percentile, floor } => self
                .latency
                .percentile(percentile)
                .map_or(floor, |p| p.max(floor)),
        }
    }

    /// What this policy did so far.
    pub fn stats(&self) -> &Arc<HedgeStats> {
        &self.stats
    }

    /// Records how long a call took to its answer (for a percentile delay).
    pub(crate) fn answered_after(&self, took: Duration) {
        if matches!(self.delay, HedgeDelay::Percentile { .. }) {
            self.latency.record(took);
        }
    }
}

/// Counts of what a [`HedgePolicy`] did.
///
/// ```
/// use grpcproxy::policy::HedgeStats;
///
/// assert_eq!(HedgeStats::default().hedges(), 0);
/// ```
#[derive(Debug, Default)]
pub struct HedgeStats {
    hedges: AtomicU64,
    won: AtomicU64,
    cancelled: AtomicU64,
}

impl HedgeStats {
    /// Hedges sent (tries after the first).
    pub fn hedges(&self) -> u64 {
        self.hedges.load(Ordering::Relaxed)
    }

    /// Calls whose answer came from a hedge rather than the first try.
    pub fn won(&self) -> u64 {
        self.won.load(Ordering::Relaxed)
    }

    /// Tries cancelled because another answered first.
    pub fn cancelled(&self) -> u64 {
        self.cancelled.load(Ordering::Relaxed)
    }

    pub(crate) fn hedged(&self) {
        self.hedges.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn settled(&self, winner: u32, cancelled: usize) {
        if winner > 1 {
            self.won.fetch_add(1, Ordering::Relaxed);
        }
        self.cancelled
            .fetch_add(cancelled as u64, Ordering::Relaxed);
    }
}

/// Buckets of the recent times to an answer: 100 µs, then each 25 % longer (up to ~3 min).
const BUCKETS: usize = 64;
/// Answers between two halvings of every bucket: recent calls weigh more.
const DECAY_EVERY: u64 = 1024;
/// Answers to see before a percentile is trusted.
const ENOUGH: u64 = 20;

/// A decaying histogram of times to an answer, lock-free.
#[derive(Debug)]
struct LatencyTracker {
    buckets: [AtomicU64; BUCKETS],
    seen: AtomicU64,
}

impl Default for LatencyTracker {
    fn default() -> Self {
        Self {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            seen: AtomicU64::new(0),
        }
    }
}

/// The upper bound of bucket `i`.
fn bucket_bound(i: usize) -> Duration {
    Duration::from_micros(100).mul_f64(1.25f64.powi(i as i32))
}

impl LatencyTracker {
    fn record(&self, took: Duration) {
        let i = (0..BUCKETS)
            .find(|&i| took <= bucket_bound(i))
            .unwrap_or(BUCKETS - 1);
        self.buckets[i].fetch_add(2, Ordering::Relaxed);
        if self.seen.fetch_add(1, Ordering::Relaxed) % DECAY_EVERY == DECAY_EVERY - 1 {
            for bucket in &self.buckets {
                let _ = bucket.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| Some(n / 2));
            }
        }
    }

    fn percentile(&self, percentile: f64) -> Option<Duration> {
        if self.seen.load(Ordering::Relaxed) < ENOUGH {
            return None;
        }
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        let wanted = (total as f64 * percentile.clamp(0.0, 100.0) / 100.0).ceil() as u64;
        let mut below = 0;
        for (i, count) in counts.iter().enumerate() {
            below += count;
            if below >= wanted.max(1) {
                return Some(bucket_bound(i));
            }
        }
        Some(bucket_bound(BUCKETS - 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_percentile_delay_follows_recent_answers() {
        let policy = HedgePolicy::new(
            HedgeDelay::Percentile {
                percentile: 95.0,
                floor: Duration::from_millis(1),
            },
            2,
        );
        assert_eq!(
            policy.delay(),
            Duration::from_millis(1),
            "too few answers yet"
        );
        for i in 0..100 {
            let took = if i < 95 { 10 } else { 400 };
            policy.answered_after(Duration::from_millis(took));
        }
        let delay = policy.delay();
        assert!(
            delay >= Duration::from_millis(10) && delay < Duration::from_millis(13),
            "{delay:?}"
        );
    }
}
