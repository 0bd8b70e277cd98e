//! Counters every queue keeps, for metrics and tests.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// What a queue did with the events it was given.
///
/// ```
/// let (queue, _events) = grpcproxy::mq::MemoryQueue::new(16);
/// assert_eq!(queue.stats().published(), 0);
/// assert!(queue.stats().connected());
/// ```
#[derive(Debug)]
pub struct QueueStats {
    published: AtomicU64,
    dropped: AtomicU64,
    failed: AtomicU64,
    connected: AtomicBool,
}

impl QueueStats {
    pub(crate) fn new(connected: bool) -> Self {
        Self {
            published: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            connected: AtomicBool::new(connected),
        }
    }

    /// Events delivered (handed to the receiver, written, or acknowledged by the broker).
    pub fn published(&self) -> u64 {
        self.published.load(Ordering::Relaxed)
    }

    /// Events dropped because the queue was full (its destination slow or away).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Events the destination refused (a write error, a broker error or ack timeout).
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    /// Whether the destination is reachable now (a broker connection; always true for
    /// local queues).
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    pub(crate) fn published_one(&self) {
        self.published.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn dropped_one(&self) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
    }

    #[cfg_attr(not(feature = "wire"), allow(dead_code))]
    pub(crate) fn failed_one(&self) {
        self.failed.fetch_add(1, Ordering::Relaxed);
    }

    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    pub(crate) fn set_connected(&self, connected: bool) {
        self.connected.store(connected, Ordering::Relaxed);
    }
}
