//! A bounded in-memory queue, for tests and for embedding the tap in your own program.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;

use super::{MessageQueue, TapEvent};

/// Counters of a [`MemoryQueue`].
#[derive(Debug, Default)]
pub struct QueueStats {
    published: AtomicU64,
    dropped: AtomicU64,
}

impl QueueStats {
    /// Events handed to the receiver.
    pub fn published(&self) -> u64 {
        self.published.load(Ordering::Relaxed)
    }

    /// Events dropped because the receiver fell behind.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    #[cfg_attr(not(feature = "tap-file"), allow(dead_code))]
    pub(crate) fn published_one(&self) {
        self.published.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn dropped_one(&self) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
    }
}

/// Publishes every event into a bounded channel; when it is full, events are dropped and
/// counted, and calls go on.
#[derive(Debug, Clone)]
pub struct MemoryQueue {
    events: mpsc::Sender<TapEvent>,
    stats: Arc<QueueStats>,
    max_payload: usize,
}

impl MemoryQueue {
    /// A queue holding up to `capacity` events, and the receiving end.
    pub fn new(capacity: usize) -> (Self, mpsc::Receiver<TapEvent>) {
        let (events, receiver) = mpsc::channel(capacity.max(1));
        (
            Self {
                events,
                stats: Arc::default(),
                max_payload: usize::MAX,
            },
            receiver,
        )
    }

    /// Publishes at most `max` payload bytes per message.
    pub fn with_max_payload(mut self, max: usize) -> Self {
        self.max_payload = max;
        self
    }

    /// Published and dropped counts.
    pub fn stats(&self) -> &Arc<QueueStats> {
        &self.stats
    }
}

impl MessageQueue for MemoryQueue {
    fn wants(&self, _method: &str) -> bool {
        true
    }

    fn max_payload(&self) -> usize {
        self.max_payload
    }

    fn publish(&self, event: TapEvent) {
        match self.events.try_send(event) {
            Ok(()) => self.stats.published_one(),
            Err(_) => self.stats.dropped_one(),
        }
    }
}
