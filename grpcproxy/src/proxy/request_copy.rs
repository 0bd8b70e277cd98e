//! A copy of a call's request stream for another backend (a mirror's shadow, a fan-out
//! member): the same `Bytes` queued (no copy of the bytes), within a byte budget, and the
//! body that gives them to that backend's stream.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame};
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::boxed::BoxError;
use crate::http2::PipeCut;

/// A copy with room for `buffer` bytes not yet taken by its backend's stream: the sending
/// end (kept with the request) and the body (sent to the other backend).
pub(super) fn request_copy(buffer: usize) -> (CopySender, CopyBody) {
    copy(buffer, None)
}

/// A copy like [`request_copy`]'s, for a request whose first backend may stop reading it
/// before the client's half-close (it answered and needs no more, RFC 9113 §8.1): a sender
/// dropped then leaves the copy open until the [`Settle`] says how the call ended, and the
/// copy then ends as its first backend's request did (what it read, then the half-close)
/// or is given up.
pub(super) fn request_copy_settled_later(buffer: usize) -> (CopySender, CopyBody, Settle) {
    let (settle, settled) = oneshot::channel();
    let (sender, body) = copy(buffer, Some(settled));
    let settle = Settle {
        completed: Some(settle),
        shared: body.shared.clone(),
    };
    (sender, body, settle)
}

fn copy(buffer: usize, settled: Option<oneshot::Receiver<()>>) -> (CopySender, CopyBody) {
    let (tx, rx) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        room: Semaphore::new(buffer),
        abandoned: AtomicBool::new(false),
        left_open: AtomicBool::new(false),
        cut: Arc::default(),
    });
    let sender = CopySender {
        tx: Some(tx),
        shared: shared.clone(),
        buffer,
        settled_later: settled.is_some(),
    };
    let body = CopyBody {
        rx,
        shared,
        buffer,
        settled,
    };
    (sender, body)
}

/// How a copy whose sender went away before the client's half-close ends (see
/// [`request_copy_settled_later`]); dropped without [`Settle::completed`], a copy left
/// open is given up and its stream reset.
#[derive(Debug)]
pub(super) struct Settle {
    completed: Option<oneshot::Sender<()>>,
    shared: Arc<Shared>,
}

impl Settle {
    /// The call completed with its backend's answer: the copy ends with what it has.
    pub(super) fn completed(mut self) {
        if let Some(completed) = self.completed.take() {
            let _ = completed.send(());
        }
    }
}

impl Drop for Settle {
    /// The call did not complete: a copy left open is given up, even while its stream
    /// waits for window.
    fn drop(&mut self) {
        let unsettled = self.completed.take().is_some();
        if unsettled && self.shared.left_open.load(Ordering::Acquire) {
            self.shared.abandoned.store(true, Ordering::Release);
            self.shared.cut.cut();
        }
    }
}

/// One piece of the copy.
enum Item {
    Data(Bytes),
    /// The client half-closed: the copy ends here.
    End,
}

/// What the two ends share.
#[derive(Debug)]
struct Shared {
    /// Bytes the copy may still queue.
    room: Semaphore,
    /// The proxy gave the copy up (its backend fell behind, the request ended early).
    abandoned: AtomicBool,
    /// The sender went away before the half-close, leaving the copy to its [`Settle`].
    left_open: AtomicBool,
    /// Resets the copy's stream, even while it waits for window.
    cut: Arc<PipeCut>,
}

/// The sending end of a copy.
#[derive(Debug)]
pub(super) struct CopySender {
    /// `None` once the copy ended or was given up.
    tx: Option<mpsc::UnboundedSender<Item>>,
    shared: Arc<Shared>,
    buffer: usize,
    /// Dropped before the half-close, the copy waits for its [`Settle`].
    settled_later: bool,
}

impl CopySender {
    /// Queues `data` if there is room now; gives the copy up otherwise. False when the
    /// copy is over (given up, or its backend's stream gone).
    pub(super) fn send_now(&mut self, data: &Bytes) -> bool {
        let taken = self.shared.room.try_acquire_many(self.room_for(data));
        // The room comes back when the copy's stream takes the bytes.
        let taken = taken.map(|permit| permit.forget()).is_ok();
        self.queue(taken, data)
    }

    /// Queues `data` once there is room, waiting up to `wait` (`None`: as long as it
    /// takes); gives the copy up when the wait runs out. False when the copy is over.
    pub(super) async fn send(&mut self, data: &Bytes, wait: Option<Duration>) -> bool {
        if self.tx.is_none() {
            return false;
        }
        let want = self.room_for(data);
        let room = &self.shared.room;
        let taken = match wait {
            None => room.acquire_many(want).await.ok(),
            Some(wait) => tokio::time::timeout(wait, room.acquire_many(want))
                .await
                .ok()
                .and_then(Result::ok),
        };
        let taken = taken.map(|permit| permit.forget()).is_some();
        self.queue(taken, data)
    }

    /// The room `data` takes: its length, at most the whole buffer (a message larger than
    /// the buffer waits for an empty buffer, not for room that never comes).
    fn room_for(&self, data: &Bytes) -> u32 {
        data.len().min(self.buffer) as u32
    }

    /// Queues `data` when its room was `taken`; gives the copy up otherwise.
    fn queue(&mut self, taken: bool, data: &Bytes) -> bool {
        let Some(tx) = &self.tx else { return false };
        let sent = taken && tx.send(Item::Data(data.clone())).is_ok();
        if !sent {
            self.abandon();
        }
        sent
    }

    /// The client half-closed: the copy ends cleanly.
    pub(super) fn end(&mut self) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(Item::End);
        }
    }

    /// Gives the copy up: its stream is reset, even while it waits for window.
    pub(super) fn abandon(&mut self) {
        if let Some(tx) = self.tx.take() {
            // A copy whose backend's stream is gone is not given up by the proxy.
            if !tx.is_closed() {
                self.shared.abandoned.store(true, Ordering::Release);
            }
            self.shared.cut.cut();
        }
    }

    /// A way to ask later whether the proxy gave this copy up.
    pub(super) fn watch(&self) -> CopyWatch {
        CopyWatch(self.shared.clone())
    }
}

/// Tells whether the proxy gave a copy up (rather than its backend failing).
#[derive(Debug)]
pub(super) struct CopyWatch(Arc<Shared>);

impl CopyWatch {
    pub(super) fn abandoned(&self) -> bool {
        self.0.abandoned.load(Ordering::Acquire)
    }
}

impl Drop for CopySender {
    /// A request that ends without its half-close (the client reset it, the call failed):
    /// the copy's stream is reset too, or, when the copy is settled later, left to its
    /// [`Settle`].
    fn drop(&mut self) {
        if self.settled_later {
            if self.tx.take().is_some() {
                self.shared.left_open.store(true, Ordering::Release);
            }
        } else {
            self.abandon();
        }
    }
}

/// The copy as a request body for the other backend.
#[derive(Debug)]
pub(super) struct CopyBody {
    rx: mpsc::UnboundedReceiver<Item>,
    shared: Arc<Shared>,
    buffer: usize,
    /// How the copy ends if its sender goes away before the half-close.
    settled: Option<oneshot::Receiver<()>>,
}

impl CopyBody {
    /// What resets this copy's stream when it is given up: the request extension the
    /// stream's pipe looks for.
    pub(super) fn cut(&self) -> Arc<PipeCut> {
        self.shared.cut.clone()
    }
}

impl Drop for CopyBody {
    fn drop(&mut self) {
        // A sender waiting for room in a body that is gone stops waiting.
        self.shared.room.close();
    }
}

/// The copy ended without the client's half-close.
#[derive(Debug, thiserror::Error)]
#[error("the proxy gave up this copy of the request (its backend fell behind, or the request ended early)")]
struct GivenUp;

impl Body for CopyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match std::task::ready!(self.rx.poll_recv(cx)) {
            Some(Item::Data(data)) => {
                let taken = data.len().min(self.buffer);
                self.shared.room.add_permits(taken);
                Poll::Ready(Some(Ok(Frame::data(data))))
            }
            Some(Item::End) => Poll::Ready(None),
            None => {
                // The sender went away before the half-close without giving the copy up:
                // the call's end says how the copy ends.
                let abandoned = self.shared.abandoned.load(Ordering::Acquire);
                let Some(settled) = self.settled.as_mut().filter(|_| !abandoned) else {
                    return Poll::Ready(Some(Err(Box::new(GivenUp))));
                };
                let completed = std::task::ready!(Pin::new(settled).poll(cx)).is_ok();
                self.settled = None;
                if completed {
                    return Poll::Ready(None);
                }
                // Given up by the settle's drop.
                Poll::Ready(Some(Err(Box::new(GivenUp))))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn a_copy_that_falls_behind_is_given_up_and_cut() {
        let (mut sender, mut body) = request_copy(5);
        let watch = sender.watch();
        assert!(sender.send_now(&Bytes::from_static(b"abc")));
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(first, "abc");
        // Taken by its stream: room again for 5 bytes.
        assert!(sender.send_now(&Bytes::from_static(b"defgh")));
        assert!(!watch.abandoned());
        assert!(!sender.send_now(&Bytes::from_static(b"i")));
        assert!(watch.abandoned());
        let second = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(second, "defgh");
        assert!(
            body.frame().await.unwrap().is_err(),
            "the copy's stream fails"
        );
    }

    #[tokio::test]
    async fn a_half_close_ends_the_copy() {
        let (mut sender, mut body) = request_copy(5);
        let watch = sender.watch();
        assert!(sender.send_now(&Bytes::from_static(b"ab")));
        sender.end();
        drop(sender);
        let data = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(data, "ab");
        assert!(body.frame().await.is_none());
        assert!(!watch.abandoned());
    }

    /// A copy settled later that got `ab`, whose sender then went away before the
    /// half-close (its first backend answered and read no more).
    fn left_open() -> (CopyBody, Settle, CopyWatch) {
        let (mut sender, body, settle) = request_copy_settled_later(5);
        let watch = sender.watch();
        assert!(sender.send_now(&Bytes::from_static(b"ab")));
        drop(sender);
        (body, settle, watch)
    }

    /// The next frame of `body`, as data.
    async fn next_data(body: &mut CopyBody) -> Bytes {
        body.frame().await.unwrap().unwrap().into_data().unwrap()
    }

    #[tokio::test]
    async fn a_copy_settled_later_ends_with_what_it_has_when_the_call_completed() {
        let (mut body, settle, watch) = left_open();
        assert_eq!(next_data(&mut body).await, "ab");
        // Nothing more until the call's end is known.
        let mut next = std::pin::pin!(body.frame());
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(next.as_mut().poll(&mut cx).is_pending());
        settle.completed();
        assert!(next.await.is_none(), "the copy ends cleanly");
        assert!(!watch.abandoned());
    }

    #[tokio::test]
    async fn a_copy_settled_later_is_given_up_when_the_call_did_not_complete() {
        let (mut body, settle, watch) = left_open();
        let cut = body.cut();
        let cx = Context::from_waker(std::task::Waker::noop());
        assert!(!crate::http2::Cut::is_cut(&*cut, &cx));
        drop(settle);
        // Reset even while its stream waits for window.
        assert!(crate::http2::Cut::is_cut(&*cut, &cx));
        assert_eq!(next_data(&mut body).await, "ab");
        assert!(
            body.frame().await.unwrap().is_err(),
            "the copy's stream fails"
        );
        assert!(watch.abandoned());
    }

    #[tokio::test]
    async fn a_copy_settled_later_that_fell_behind_stays_given_up() {
        let (mut sender, mut body, settle) = request_copy_settled_later(2);
        let watch = sender.watch();
        assert!(sender.send_now(&Bytes::from_static(b"ab")));
        assert!(
            !sender.send_now(&Bytes::from_static(b"c")),
            "no room: given up"
        );
        drop(sender);
        settle.completed();
        assert_eq!(next_data(&mut body).await, "ab");
        assert!(
            body.frame().await.unwrap().is_err(),
            "the copy's stream fails"
        );
        assert!(watch.abandoned());
    }

    #[tokio::test(start_paused = true)]
    async fn a_sender_waits_for_room_up_to_its_limit() {
        let (mut sender, mut body) = request_copy(4);
        let watch = sender.watch();
        assert!(sender.send(&Bytes::from_static(b"abcd"), None).await);
        // Full: the next waits, and gives up after the wait.
        let wait = Some(Duration::from_millis(100));
        assert!(!sender.send(&Bytes::from_static(b"e"), wait).await);
        assert!(watch.abandoned());
        let _ = body.frame().await;
    }
}
