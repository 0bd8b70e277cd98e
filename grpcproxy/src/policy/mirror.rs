//! Mirroring: a share of a route's calls also goes to a shadow backend, whose answer never
//! reaches the client and may be compared with the primary's.

use std::any::Any;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::Upstream;

/// How calls are mirrored: which share, whether the answers are compared, and the bounds
/// that keep a mirror from ever slowing or failing the primary call.
///
/// A mirrored call carries the primary's method, metadata (plus `x-grpcproxy-mirror: 1`)
/// and request messages. It has a request buffer of its own (`buffer_bytes`): when the
/// shadow falls that far behind the client, the mirror is cancelled and counted
/// `dropped`. At most `max_in_flight` mirrored calls run at once; past that, calls are not
/// mirrored (`dropped`). A mirrored call ends at the primary's deadline (or after
/// `timeout` when the primary has none), and is cancelled when the primary is.
///
/// With `compare`, the shadow's status, trailers and response messages are compared with
/// the primary's byte for byte ([`crate::compare`]), each answer held up to
/// `compare_bytes`; the first `log_differences` differences are logged (WARN) with the
/// first differing byte.
///
/// ```
/// use std::{sync::Arc, time::Duration};
/// use grpcproxy::policy::{Mirror, MirrorPolicy};
/// use grpcproxy::{Target, Upstream};
/// use tonic::metadata::MetadataMap;
///
/// let policy = Arc::new(MirrorPolicy::new(10.0).compare(true));
/// let primary = Upstream::new("http://127.0.0.1:50052").unwrap();
/// let shadow = Upstream::new("http://127.0.0.1:50053").unwrap();
/// let mut target = Target::new(primary, MetadataMap::new());
/// // The director samples: exactly one call in ten is mirrored.
/// if policy.sample() {
///     target = target.mirror(Mirror::new(policy.clone(), shadow));
/// }
/// assert_eq!((0..100).filter(|_| policy.sample()).count(), 10);
/// ```
#[derive(Debug)]
pub struct MirrorPolicy {
    /// The share mirrored, in millionths.
    share: u64,
    compare: bool,
    buffer_bytes: usize,
    compare_bytes: usize,
    max_in_flight: usize,
    timeout: Duration,
    log_differences: u64,
    tap: bool,
    name: Option<Arc<str>>,
    sampled: AtomicU64,
    pub(crate) in_flight: AtomicUsize,
    logged: AtomicU64,
    stats: Arc<MirrorStats>,
}

/// What a mirror policy's calls came to. Shared: give the same stats to the policies of
/// successive configurations to keep counting.
#[derive(Debug, Default)]
pub struct MirrorStats {
    matched: AtomicU64,
    differed: AtomicU64,
    dropped: AtomicU64,
    errors: AtomicU64,
    sent: AtomicU64,
}

/// What one mirrored call came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MirrorResult {
    /// Compared: the same status, trailers and response bytes as the primary.
    Match,
    /// Compared: some difference.
    Differ,
    /// Not mirrored or not finished: too many mirrors in flight, its request buffer full,
    /// an answer past `compare_bytes`, its deadline passed, or the primary cancelled.
    Dropped,
    /// The shadow could not be reached, or its stream failed.
    Error,
    /// Not compared: the shadow answered.
    Sent,
}

impl MirrorResult {
    /// How metrics and the tap name it: `match`, `differ`, `dropped`, `error`, `sent`.
    pub fn name(self) -> &'static str {
        match self {
            MirrorResult::Match => "match",
            MirrorResult::Differ => "differ",
            MirrorResult::Dropped => "dropped",
            MirrorResult::Error => "error",
            MirrorResult::Sent => "sent",
        }
    }
}

impl MirrorStats {
    /// Calls that ended with `result`.
    pub fn count(&self, result: MirrorResult) -> u64 {
        self.counter(result).load(Ordering::Relaxed)
    }

    /// Counts one call that ended with `result` (e.g. a director that found no shadow
    /// endpoint counts an [`MirrorResult::Error`]).
    pub fn record(&self, result: MirrorResult) {
        self.counter(result).fetch_add(1, Ordering::Relaxed);
    }

    fn counter(&self, result: MirrorResult) -> &AtomicU64 {
        match result {
            MirrorResult::Match => &self.matched,
            MirrorResult::Differ => &self.differed,
            MirrorResult::Dropped => &self.dropped,
            MirrorResult::Error => &self.errors,
            MirrorResult::Sent => &self.sent,
        }
    }
}

impl MirrorPolicy {
    /// Mirrors `percent` of the calls it is asked about (0 to 100; see
    /// [`sample`](Self::sample)), without comparing. Bounds: 1 MiB of request buffer per
    /// call, 4 MiB per answer compared, 64 calls in flight, 10 s without a deadline,
    /// 10 differences logged.
    pub fn new(percent: f64) -> Self {
        Self {
            share: (percent.clamp(0.0, 100.0) * 10_000.0).round() as u64,
            compare: false,
            buffer_bytes: 1 << 20,
            compare_bytes: 4 << 20,
            max_in_flight: 64,
            timeout: Duration::from_secs(10),
            log_differences: 10,
            tap: false,
            name: None,
            sampled: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            logged: AtomicU64::new(0),
            stats: Arc::default(),
        }
    }

    /// Compares each mirrored call's answer with the primary's.
    pub fn compare(mut self, compare: bool) -> Self {
        self.compare = compare;
        self
    }

    /// Request bytes a mirrored call may have waiting for the shadow before it is dropped.
    pub fn buffer_bytes(mut self, bytes: usize) -> Self {
        self.buffer_bytes = bytes;
        self
    }

    /// Response bytes held per answer for the comparison; a longer answer is not compared.
    pub fn compare_bytes(mut self, bytes: usize) -> Self {
        self.compare_bytes = bytes;
        self
    }

    /// Mirrored calls at once; calls past it are not mirrored.
    pub fn max_in_flight(mut self, calls: usize) -> Self {
        self.max_in_flight = calls;
        self
    }

    /// How long a mirrored call may take when the primary has no deadline.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How many differences are logged (the rest only counted).
    pub fn log_differences(mut self, differences: u64) -> Self {
        self.log_differences = differences;
        self
    }

    /// Publishes each mirrored call's result (a [`MirrorReport`](crate::mq::MirrorReport))
    /// to the tap, for calls the tap records.
    pub fn publish_to_tap(mut self, publish: bool) -> Self {
        self.tap = publish;
        self
    }

    pub(crate) fn publishes(&self) -> bool {
        self.tap
    }

    /// A name for the policy's log lines (the binary gives the route's).
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.name = Some(name.into());
        self
    }

    pub(crate) fn label(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// Counts into `stats` (to keep counting across policies).
    pub fn with_stats(mut self, stats: Arc<MirrorStats>) -> Self {
        self.stats = stats;
        self
    }

    /// What the policy's calls came to.
    pub fn stats(&self) -> &Arc<MirrorStats> {
        &self.stats
    }

    /// Whether to mirror the next call: exactly the policy's share of the calls asked
    /// about, spread evenly (call `n` is mirrored when the share of `n + 1` calls passes
    /// a whole call), with no randomness.
    pub fn sample(&self) -> bool {
        if self.share == 0 {
            return false;
        }
        let n = self.sampled.fetch_add(1, Ordering::Relaxed);
        (n + 1) * self.share / 1_000_000 > n * self.share / 1_000_000
    }

    pub(crate) fn compares(&self) -> bool {
        self.compare
    }

    pub(crate) fn buffer_limit(&self) -> usize {
        self.buffer_bytes
    }

    pub(crate) fn compare_limit(&self) -> usize {
        self.compare_bytes
    }

    pub(crate) fn timeout_without_deadline(&self) -> Duration {
        self.timeout
    }

    /// Takes a place among the mirrored calls in flight; `None` when they are all taken.
    pub(crate) fn enter(self: &Arc<Self>) -> Option<InFlightMirror> {
        if self.in_flight.fetch_add(1, Ordering::AcqRel) >= self.max_in_flight {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(InFlightMirror(self.clone()))
    }

    /// Whether a difference found now is still to be logged.
    pub(crate) fn logs_next_difference(&self) -> bool {
        self.logged.fetch_add(1, Ordering::Relaxed) < self.log_differences
    }
}

/// A mirrored call in flight, counted until dropped.
#[derive(Debug)]
pub(crate) struct InFlightMirror(Arc<MirrorPolicy>);

impl InFlightMirror {
    pub(crate) fn policy(&self) -> &Arc<MirrorPolicy> {
        &self.0
    }
}

impl Drop for InFlightMirror {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Where one call is mirrored: the policy and the shadow's upstream (see
/// [`Target::mirror`](crate::Target::mirror)).
pub struct Mirror {
    pub(crate) policy: Arc<MirrorPolicy>,
    pub(crate) upstream: Upstream,
    pub(crate) guard: Option<Box<dyn Any + Send + Sync>>,
}

impl Mirror {
    /// Mirrors to `upstream` under `policy`.
    pub fn new(policy: Arc<MirrorPolicy>, upstream: Upstream) -> Self {
        Self {
            policy,
            upstream,
            guard: None,
        }
    }

    /// Holds `guard` until the mirrored call is over (e.g. the shadow cluster's count of
    /// calls in flight).
    pub fn with_guard(mut self, guard: impl Any + Send + Sync) -> Self {
        self.guard = Some(Box::new(guard));
        self
    }
}

impl std::fmt::Debug for Mirror {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mirror")
            .field("policy", &self.policy)
            .field("upstream", &self.upstream)
            .field("guard", &self.guard.is_some())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling_takes_exactly_the_share_spread_evenly() {
        let count = |percent: f64, calls: usize| {
            let policy = MirrorPolicy::new(percent);
            (0..calls).filter(|_| policy.sample()).count()
        };
        assert_eq!(count(10.0, 1000), 100);
        assert_eq!(count(100.0, 1000), 1000);
        assert_eq!(count(0.0, 1000), 0);
        assert_eq!(count(0.1, 1000), 1);
        assert_eq!(count(33.3, 1000), 333);
        let policy = MirrorPolicy::new(50.0);
        let picks: Vec<bool> = (0..6).map(|_| policy.sample()).collect();
        assert_eq!(picks, [false, true, false, true, false, true]);
    }

    #[test]
    fn mirrors_past_the_in_flight_cap_are_refused_until_one_ends() {
        let policy = Arc::new(MirrorPolicy::new(100.0).max_in_flight(2));
        let first = policy.enter().unwrap();
        let _second = policy.enter().unwrap();
        assert!(policy.enter().is_none());
        drop(first);
        assert!(policy.enter().is_some());
    }
}
