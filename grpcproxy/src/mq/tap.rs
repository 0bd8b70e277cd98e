//! One call's tap: cuts messages from both directions and publishes them in order.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;

use super::capture::MessageCapture;
use super::{CallEnded, Direction, MessageQueue, TapEvent, TapMessage};

static NEXT_CALL_ID: AtomicU64 = AtomicU64::new(1);

/// The tap of one call, shared by its request and response halves.
pub(crate) struct CallTap {
    pub(crate) call_id: u64,
    queue: Arc<dyn MessageQueue>,
    max_wait: Option<Duration>,
    request: Mutex<Side>,
    response: Mutex<Side>,
    trailers: Mutex<Option<HeaderMap>>,
}

/// One direction's capture, message count, and wait for room in a full queue.
struct Side {
    capture: MessageCapture,
    sequence: u64,
    waiting: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Side {
    fn new(keep: usize) -> Mutex<Self> {
        Mutex::new(Self {
            capture: MessageCapture::new(keep),
            sequence: 0,
            waiting: None,
        })
    }
}

impl std::fmt::Debug for CallTap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallTap")
            .field("call_id", &self.call_id)
            .finish()
    }
}

impl CallTap {
    pub(crate) fn new(queue: Arc<dyn MessageQueue>) -> Self {
        let keep = queue.max_payload();
        Self {
            call_id: NEXT_CALL_ID.fetch_add(1, Ordering::Relaxed),
            max_wait: queue.max_wait(),
            queue,
            request: Side::new(keep),
            response: Side::new(keep),
            trailers: Mutex::new(None),
        }
    }

    pub(crate) fn publish(&self, event: TapEvent) {
        self.queue.publish(event);
    }

    fn side(&self, direction: Direction) -> &Mutex<Side> {
        match direction {
            Direction::Request => &self.request,
            Direction::Response => &self.response,
        }
    }

    /// With the "wait" overflow policy: Pending while the queue is full, for up to the
    /// queue's `max_wait` per frame; then Ready (the next event may be dropped).
    /// Always Ready under the default policy.
    pub(crate) fn poll_room(&self, direction: Direction, cx: &mut Context<'_>) -> Poll<()> {
        let Some(max_wait) = self.max_wait else {
            return Poll::Ready(());
        };
        let mut side = self.side(direction).lock().expect("tap lock poisoned");
        if self.queue.poll_room(cx).is_ready() {
            side.waiting = None;
            return Poll::Ready(());
        }
        let waiting = side
            .waiting
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(max_wait)));
        if waiting.as_mut().poll(cx).is_ready() {
            side.waiting = None;
            return Poll::Ready(());
        }
        Poll::Pending
    }

    /// Publishes every message `chunk` completes in `direction`.
    pub(crate) fn data(&self, direction: Direction, chunk: &Bytes) {
        // Only this direction's body touches its side: the lock is never contended.
        let mut side = self.side(direction).lock().expect("tap lock poisoned");
        let Side {
            capture, sequence, ..
        } = &mut *side;
        capture.feed(chunk, |message| {
            self.queue.publish(TapEvent::Message(TapMessage {
                call_id: self.call_id,
                direction,
                sequence: *sequence,
                compressed: message.header.compressed,
                payload: message.payload,
                length: message.header.len,
            }));
            *sequence += 1;
        });
    }

    /// Remembers the backend's trailers for the end event.
    pub(crate) fn trailers(&self, trailers: &HeaderMap) {
        *self.trailers.lock().expect("tap lock poisoned") = Some(trailers.clone());
    }

    /// The end event's message counts and trailers.
    pub(crate) fn ended(&self, mut end: CallEnded) -> TapEvent {
        end.request_messages = self.request.lock().expect("tap lock poisoned").sequence;
        end.response_messages = self.response.lock().expect("tap lock poisoned").sequence;
        end.trailers = self.trailers.lock().expect("tap lock poisoned").take();
        TapEvent::Ended(end)
    }
}
