//! One call's tap: cuts messages from both directions and publishes them in order.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::HeaderMap;

use super::capture::MessageCapture;
use super::{CallEnded, Direction, MessageQueue, TapEvent, TapMessage};

static NEXT_CALL_ID: AtomicU64 = AtomicU64::new(1);

/// The tap of one call, shared by its request and response halves.
pub(crate) struct CallTap {
    pub(crate) call_id: u64,
    queue: Arc<dyn MessageQueue>,
    request: Mutex<(MessageCapture, u64)>,
    response: Mutex<(MessageCapture, u64)>,
    trailers: Mutex<Option<HeaderMap>>,
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
            queue,
            request: Mutex::new((MessageCapture::new(keep), 0)),
            response: Mutex::new((MessageCapture::new(keep), 0)),
            trailers: Mutex::new(None),
        }
    }

    pub(crate) fn publish(&self, event: TapEvent) {
        self.queue.publish(event);
    }

    /// Publishes every message `chunk` completes in `direction`.
    pub(crate) fn data(&self, direction: Direction, chunk: &Bytes) {
        let side = match direction {
            Direction::Request => &self.request,
            Direction::Response => &self.response,
        };
        // Only this direction's body touches its capture: the lock is never contended.
        let mut side = side.lock().expect("tap lock poisoned");
        let (capture, sequence) = &mut *side;
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
        end.request_messages = self.request.lock().expect("tap lock poisoned").1;
        end.response_messages = self.response.lock().expect("tap lock poisoned").1;
        end.trailers = self.trailers.lock().expect("tap lock poisoned").take();
        TapEvent::Ended(end)
    }
}
