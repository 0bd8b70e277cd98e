//! When a call is tried again: which statuses, how many times, how long each try may take,
//! how long to wait between tries, and how much of the request is kept to send it again.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tonic::Code;

use super::RetryBudget;

/// How a call is retried: only the statuses named, at most `attempts` tries in all, each
/// to another endpoint when the target has one.
///
/// A try is retried only while nothing has reached the client: when it failed before the
/// backend answered (the status the proxy would give, e.g. `UNAVAILABLE` for an unreachable
/// backend), or when the backend answered trailers-only with a named status. Retries never
/// go past the call's deadline, honour the backend's `grpc-retry-pushback-ms` (negative or
/// unreadable: no retry, gRPC A6), carry `grpc-previous-rpc-attempts`, and are made only
/// while the request is still whole in the retry buffer (`buffer_bytes`) and the budget
/// (if any) allows.
///
/// ```
/// use std::time::Duration;
/// use grpcproxy::policy::RetryPolicy;
/// use tonic::Code;
///
/// let policy = RetryPolicy::new([Code::Unavailable], 3)
///     .per_try_timeout(Duration::from_secs(1))
///     .backoff(Duration::from_millis(25), Duration::from_millis(250));
/// assert!(policy.retries_on(Code::Unavailable));
/// assert!(!policy.retries_on(Code::PermissionDenied));
/// ```
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    codes: u32,
    attempts: u32,
    per_try_timeout: Option<Duration>,
    backoff: Duration,
    max_backoff: Duration,
    buffer_bytes: usize,
    budget: Option<Arc<RetryBudget>>,
    stats: Arc<RetryStats>,
}

impl RetryPolicy {
    /// Retries the statuses in `on`, up to `attempts` tries in all (the first included;
    /// at least 1). Backoff 25 ms doubling up to 250 ms, a 64 KiB buffer, no per-try
    /// timeout, no budget.
    pub fn new(on: impl IntoIterator<Item = Code>, attempts: u32) -> Self {
        Self {
            codes: on.into_iter().fold(0, |set, code| set | 1 << (code as u32)),
            attempts: attempts.max(1),
            per_try_timeout: None,
            backoff: Duration::from_millis(25),
            max_backoff: Duration::from_millis(250),
            buffer_bytes: 64 << 10,
            budget: None,
            stats: Arc::default(),
        }
    }

    /// Each try ends after `timeout` (and is retried, if tries remain, like Envoy's
    /// `per_try_timeout`); the call's own deadline still bounds them all.
    pub fn per_try_timeout(mut self, timeout: Duration) -> Self {
        self.per_try_timeout = Some(timeout);
        self
    }

    /// The wait before the first retry, doubled for each further one up to `max`; each
    /// wait is drawn at random below it (full jitter).
    pub fn backoff(mut self, base: Duration, max: Duration) -> Self {
        self.backoff = base;
        self.max_backoff = max.max(base);
        self
    }

    /// How many bytes of the request are kept to send it again; a request that outgrows
    /// them is not retried.
    pub fn buffer_bytes(mut self, bytes: usize) -> Self {
        self.buffer_bytes = bytes;
        self
    }

    /// Retries take from `budget` (shared with the other calls that use it).
    pub fn budget(mut self, budget: Arc<RetryBudget>) -> Self {
        self.budget = Some(budget);
        self
    }

    /// Counts into `stats` (to keep one count across rebuilt policies).
    pub fn with_stats(mut self, stats: Arc<RetryStats>) -> Self {
        self.stats = stats;
        self
    }

    /// Whether a try that ended with `code` may be retried.
    pub fn retries_on(&self, code: Code) -> bool {
        self.codes & (1 << (code as u32)) != 0
    }

    /// Tries in all, the first included.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// The per-try timeout, if any.
    pub fn try_timeout(&self) -> Option<Duration> {
        self.per_try_timeout
    }

    /// The request bytes kept for retries.
    pub fn buffer_limit(&self) -> usize {
        self.buffer_bytes
    }

    /// The budget retries take from, if any.
    pub fn retry_budget(&self) -> Option<&Arc<RetryBudget>> {
        self.budget.as_ref()
    }

    /// What this policy did so far (shared by its clones).
    pub fn stats(&self) -> &Arc<RetryStats> {
        &self.stats
    }

    /// The wait before retry number `retry` (1 for the first), jittered.
    pub(crate) fn backoff_before(&self, retry: u32) -> Duration {
        let ceiling = self
            .backoff
            .saturating_mul(1 << retry.saturating_sub(1).min(16))
            .min(self.max_backoff);
        ceiling.mul_f64(fastrand::f64())
    }
}

/// Counts of what a [`RetryPolicy`] did.
///
/// ```
/// use grpcproxy::policy::RetryStats;
///
/// let stats = RetryStats::default();
/// assert_eq!(stats.retries(), 0);
/// ```
#[derive(Debug, Default)]
pub struct RetryStats {
    retries: AtomicU64,
    no_budget: AtomicU64,
    over_buffer: AtomicU64,
    pushback: AtomicU64,
    no_time: AtomicU64,
}

/// Why a retry was not made although the status was retryable and tries remained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Skipped {
    Budget,
    Buffer,
    Pushback,
    Deadline,
}

impl RetryStats {
    /// Retries made.
    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }

    /// Retries not made because the budget was spent.
    pub fn skipped_budget(&self) -> u64 {
        self.no_budget.load(Ordering::Relaxed)
    }

    /// Retries not made because the request outgrew the retry buffer.
    pub fn skipped_buffer(&self) -> u64 {
        self.over_buffer.load(Ordering::Relaxed)
    }

    /// Retries not made because the backend's pushback said not to.
    pub fn skipped_pushback(&self) -> u64 {
        self.pushback.load(Ordering::Relaxed)
    }

    /// Retries not made because the call's deadline would pass first.
    pub fn skipped_deadline(&self) -> u64 {
        self.no_time.load(Ordering::Relaxed)
    }

    pub(crate) fn retried(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn skipped(&self, why: Skipped) {
        let counter = match why {
            Skipped::Budget => &self.no_budget,
            Skipped::Buffer => &self.over_buffer,
            Skipped::Pushback => &self.pushback,
            Skipped::Deadline => &self.no_time,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let policy = RetryPolicy::new([Code::Unavailable], 5)
            .backoff(Duration::from_millis(10), Duration::from_millis(30));
        for _ in 0..100 {
            assert!(policy.backoff_before(1) <= Duration::from_millis(10));
            assert!(policy.backoff_before(2) <= Duration::from_millis(20));
            assert!(policy.backoff_before(9) <= Duration::from_millis(30));
        }
    }
}
