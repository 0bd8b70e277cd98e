//! The message queue the transparent handler publishes proxied traffic to (the "tap").
//!
//! For every call a queue [wants](MessageQueue::wants), the proxy publishes a
//! [`CallStarted`], one [`TapMessage`] per gRPC message each way (cut from the forwarded
//! DATA frames, without decoding or decompressing them), and a [`CallEnded`]. Publishing
//! never blocks and never fails a call: a queue that cannot keep up drops and counts.
//!
//! ```
//! use grpcproxy::mq::{MemoryQueue, TapEvent};
//!
//! let (queue, mut events) = MemoryQueue::new(1024);
//! // TransparentProxy::new(queue, director) … then, as calls flow:
//! while let Ok(event) = events.try_recv() {
//!     if let TapEvent::Message(m) = event {
//!         println!("call {} message {} ({} bytes)", m.call_id, m.sequence, m.length);
//!     }
//! }
//! ```

#[cfg(feature = "wire")]
mod budget;
#[cfg(feature = "wire")]
mod buffer;
use std::task::{Context, Poll};
use std::time::Duration;

pub(crate) mod capture;
mod event;
#[cfg(feature = "tap-file")]
mod file;
mod filter;
mod memory;
#[cfg(feature = "nats")]
mod nats;
#[cfg(feature = "nats")]
mod nats_connect;
#[cfg(feature = "nats")]
mod nats_options;
#[cfg(feature = "nats")]
mod nats_publish;
mod redact;
#[cfg(feature = "wire")]
mod room;
mod stats;
pub(crate) mod tap;
#[cfg(feature = "wire")]
pub mod wire;

pub use event::{CallEnded, CallStarted, Direction, MirrorReport, TapEvent, TapMessage};
#[cfg(feature = "tap-file")]
pub use file::{FileOptions, FileQueue};
pub use filter::Filtered;
pub use memory::MemoryQueue;
#[cfg(feature = "nats")]
pub use nats::{NatsOptions, NatsQueue, StreamLimits, StreamStorage, INSTANCE_HEADER};
#[cfg(feature = "nats")]
pub use nats_options::NatsTls;
pub use redact::redact_url;
pub use stats::QueueStats;

/// A message queue the proxy publishes its traffic to.
pub trait MessageQueue: Send + Sync + 'static {
    /// Whether calls to `method` are published (when false, the proxy does no tap work for
    /// the call at all). Sampling and method filters live here.
    fn wants(&self, method: &str) -> bool;

    /// Largest payload to publish per message, in bytes (longer ones are cut; the event
    /// keeps the full length). 0 publishes messages without payloads.
    fn max_payload(&self) -> usize {
        usize::MAX
    }

    /// Publishes one event. Must not block: a queue that is full drops and counts.
    fn publish(&self, event: TapEvent);

    /// How long a call may wait for room when the queue is full, each time it reads a frame
    /// from the client or the backend (the "wait" overflow policy: the call slows down
    /// instead of losing events, up to this bound per frame; then it goes on and a full
    /// queue drops and counts). `None`, the default, never waits.
    fn max_wait(&self) -> Option<Duration> {
        None
    }

    /// Ready when the queue has room for what one frame of a call publishes (the built-in
    /// queues: at most half their buffer in use); otherwise registers the waker of `cx`,
    /// woken when room frees. Asked only when [`max_wait`](Self::max_wait) is set.
    fn poll_room(&self, _cx: &mut Context<'_>) -> Poll<()> {
        Poll::Ready(())
    }
}

/// A queue that publishes nothing: the proxy forwards without a tap, at no cost.
///
/// ```
/// use grpcproxy::mq::{MessageQueue, NoQueue};
/// assert!(!NoQueue.wants("/pkg.Svc/M"));
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct NoQueue;

impl MessageQueue for NoQueue {
    fn wants(&self, _method: &str) -> bool {
        false
    }

    fn publish(&self, _event: TapEvent) {}
}

/// A shared queue: keep a handle (for its counters, or to flush it at exit) and give the
/// proxy a clone.
impl<Q: MessageQueue + ?Sized> MessageQueue for std::sync::Arc<Q> {
    fn wants(&self, method: &str) -> bool {
        (**self).wants(method)
    }

    fn max_payload(&self) -> usize {
        (**self).max_payload()
    }

    fn publish(&self, event: TapEvent) {
        (**self).publish(event)
    }

    fn max_wait(&self) -> Option<Duration> {
        (**self).max_wait()
    }

    fn poll_room(&self, cx: &mut Context<'_>) -> Poll<()> {
        (**self).poll_room(cx)
    }
}
