//! A bounded in-memory queue, for tests and for embedding the tap in your own program.

use std::sync::Arc;

use tokio::sync::mpsc;

use super::{MessageQueue, QueueStats, TapEvent};

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
                stats: Arc::new(QueueStats::new(true)),
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
