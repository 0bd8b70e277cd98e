//! A body onto an HTTP/2 send stream: the one pipe of both sides of the proxy (a client's
//! request towards its backend, a response towards its client).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use atomic_waker::AtomicWaker;

use bytes::Bytes;
use h2::SendStream;
use http_body::Body;
use pin_project_lite::pin_project;

use crate::boxed::BoxError;
use crate::status::{reset_reason, DisplayChain};

pin_project! {
    /// Moves `body` onto `send`, one frame at a time, never more than one DATA frame ahead
    /// of the stream's flow-control window (however slowly the peer reads, at most one
    /// frame waits in h2 and one in the pipe; trailers queue behind the data without
    /// waiting). The stream always ends on a DATA frame or trailers, and a failing body
    /// resets it with the matching reason. Done early when the peer resets the stream.
    ///
    /// ```ignore
    /// tokio::spawn(Pipe::new(body, send_stream));
    /// ```
    pub(crate) struct Pipe<B> {
        #[pin]
        body: B,
        send: SendStream<Bytes>,
        // Data was queued that may still wait for window.
        unsent: bool,
        // A DATA frame taken from the body that waits until the queued data has window.
        held: Option<Bytes>,
        // Resets the stream when cut, even while it waits for window.
        cut: Option<Arc<dyn Cut>>,
    }
}

/// What ends a pipe's stream (RST_STREAM CANCEL) from outside, even while it waits for
/// window and so never polls its body: a call the proxy ended (the client reset it, its
/// deadline passed) whose backend stopped reading, or a copy of a request the proxy gave
/// up on (a fan-out member, a mirror). Given to the pipe as a request extension
/// ([`CutBy`]).
pub(crate) trait Cut: Send + Sync {
    /// Whether the stream is to be reset now; otherwise `cx` is woken when it is.
    fn is_cut(&self, cx: &Context<'_>) -> bool;
}

/// The request extension that gives a pipe its [`Cut`].
#[derive(Clone)]
pub(crate) struct CutBy(pub(crate) Arc<dyn Cut>);

/// A [`Cut`] of its own, for copies of a request.
#[derive(Debug, Default)]
pub(crate) struct PipeCut {
    cut: AtomicBool,
    waker: AtomicWaker,
}

impl PipeCut {
    /// Resets the stream now (or as soon as its pipe runs).
    pub(crate) fn cut(&self) {
        self.cut.store(true, Ordering::Release);
        self.waker.wake();
    }
}

impl Cut for PipeCut {
    fn is_cut(&self, cx: &Context<'_>) -> bool {
        self.waker.register(cx.waker());
        self.cut.load(Ordering::Acquire)
    }
}

impl<B> Pipe<B> {
    /// A pipe for a stream that has nothing queued yet.
    pub(crate) fn new(body: B, send: SendStream<Bytes>) -> Self {
        Self {
            body,
            send,
            unsent: false,
            held: None,
            cut: None,
        }
    }

    /// This pipe, cut by `cut` (see [`Cut`]).
    pub(crate) fn cut_by(mut self, cut: Option<CutBy>) -> Self {
        self.cut = cut.map(|c| c.0);
        self
    }

    /// A pipe for a stream whose first DATA frame is queued already (it waits for window
    /// before the next frame is taken).
    pub(crate) fn after_queued(body: B, send: SendStream<Bytes>) -> Self {
        Self {
            body,
            send,
            unsent: true,
            held: None,
            cut: None,
        }
    }

    /// Ends the stream with `trailers` now, whatever the body still holds.
    pub(crate) fn cut(self: Pin<&mut Self>, trailers: http::HeaderMap) {
        let _ = self.project().send.send_trailers(trailers);
    }
}

impl<B> Future for Pipe<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Output = ();

    /// Ready when the body is sent or the stream ended; errors end in a reset or a log line.
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut me = self.project();
        if me.cut.as_ref().is_some_and(|cut| cut.is_cut(cx)) {
            me.send.send_reset(h2::Reason::CANCEL);
            return Poll::Ready(());
        }
        // Set once h2 holds a no-op waker for the stream instead of this task's (below).
        let mut quiet = false;
        loop {
            // The next frame is taken before the queued data has window: trailers and the
            // end of the stream need none, so a unary response (one DATA frame, then
            // trailers) asks for no window at all. A DATA frame waits in `held` instead.
            let data = match me.held.take() {
                Some(data) => data,
                None => {
                    let frame = match me.body.as_mut().poll_frame(cx) {
                        Poll::Ready(frame) => frame,
                        // Nothing to send until the body has more: a peer's reset meanwhile
                        // ends the pipe (asked only now: a frame at hand finds a reset
                        // stream anyway, as the send fails).
                        Poll::Pending => {
                            if let Poll::Ready(reason) = me.send.poll_reset(cx) {
                                tracing::debug!(
                                    ?reason,
                                    "the peer reset the stream before the body ended"
                                );
                                return Poll::Ready(());
                            }
                            return Poll::Pending;
                        }
                    };
                    match frame {
                        Some(Ok(frame)) => match frame.into_data() {
                            Ok(data) => data,
                            Err(frame) => match frame.into_trailers() {
                                Ok(trailers) => return ended(me.send.send_trailers(trailers)),
                                Err(_) => continue, // no other frame kinds exist
                            },
                        },
                        None => return ended(me.send.send_data(Bytes::new(), true)),
                        Some(Err(e)) => {
                            let e: BoxError = e.into();
                            let reason = reset_reason(e.as_ref());
                            tracing::debug!(error = %DisplayChain(e.as_ref()), ?reason, "body failed; resetting the stream");
                            me.send.send_reset(reason);
                            return Poll::Ready(());
                        }
                    }
                }
            };
            let end = me.body.is_end_stream();
            if data.is_empty() && !end {
                continue;
            }
            if *me.unsent {
                // Everything queued must have window before more data is queued; window is
                // asked for only then, so an idle stream holds back none of the connection's.
                // h2 wakes the task it holds for the stream when it assigns window, even
                // when the window is asked for by that task itself: a wasted poll per frame
                // unless h2 holds a no-op waker meanwhile (the one of the poll for a reset,
                // once per poll; this task's own is given back when it waits again).
                if !quiet {
                    quiet = true;
                    let mut noop = Context::from_waker(Waker::noop());
                    if let Poll::Ready(reason) = me.send.poll_reset(&mut noop) {
                        tracing::debug!(?reason, "the peer reset the stream before the body ended");
                        return Poll::Ready(());
                    }
                }
                me.send.reserve_capacity(1);
                while me.send.capacity() == 0 {
                    match me.send.poll_capacity(cx) {
                        Poll::Ready(Some(Ok(_))) => {}
                        // Reset or closed by the peer: the rest of the body is not needed.
                        Poll::Ready(Some(Err(_)) | None) => return Poll::Ready(()),
                        Poll::Pending => {
                            *me.held = Some(data);
                            return Poll::Pending;
                        }
                    }
                }
            }
            *me.unsent = true;
            match me.send.send_data(data, end) {
                Ok(()) if !end => continue,
                sent => return ended(sent),
            }
        }
    }
}

/// The pipe's end once its last frame was handed to h2 (a failed send is logged).
fn ended(sent: Result<(), h2::Error>) -> Poll<()> {
    if let Err(e) = sent {
        tracing::debug!(error = %e, "the stream ended before the body");
    }
    Poll::Ready(())
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::atomic::AtomicUsize;
    use std::task::Wake;

    use http_body::Frame;
    use http_body_util::StreamBody;
    use tokio_stream::wrappers::ReceiverStream;

    use super::*;

    /// A waker that counts its wake-ups.
    #[derive(Default)]
    struct Wakes(AtomicUsize);

    impl Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// The second frame of a stream asks h2 for window, which h2 assigns at once; the pipe
    /// is woken by its body's frame only, not again by its own request for window (a
    /// wasted poll of the task per frame of every streaming call).
    #[tokio::test]
    async fn asking_for_window_does_not_wake_the_pipe() {
        let (client_io, server_io) = tokio::io::duplex(1 << 16);
        let server = tokio::spawn(async move {
            let mut connection = h2::server::handshake(server_io).await.unwrap();
            let (request, _respond) = connection.accept().await.unwrap().unwrap();
            tokio::spawn(async move {
                let mut body = request.into_body();
                while let Some(Ok(data)) = body.data().await {
                    let _ = body.flow_control().release_capacity(data.len());
                }
            });
            while connection.accept().await.is_some() {}
        });
        let (mut client, connection) = h2::client::handshake(client_io).await.unwrap();
        tokio::spawn(connection);
        let request = http::Request::post("http://test/a.B/C").body(()).unwrap();
        let (_response, send) = client.send_request(request, false).unwrap();
        let (frames, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(4);
        let mut pipe = Box::pin(Pipe::new(StreamBody::new(ReceiverStream::new(rx)), send));
        let wakes = Arc::new(Wakes::default());
        let waker = std::task::Waker::from(wakes.clone());
        let mut cx = Context::from_waker(&waker);

        frames
            .send(Ok(Frame::data(Bytes::from_static(b"one"))))
            .await
            .unwrap();
        assert!(
            pipe.as_mut().poll(&mut cx).is_pending(),
            "waits for the body"
        );
        for _ in 0..10 {
            tokio::task::yield_now().await; // the connections exchange the frame
        }
        // Polled again as after any wake-up: waiting for the body, with h2 holding its waker.
        assert!(pipe.as_mut().poll(&mut cx).is_pending());
        let before = wakes.0.load(Ordering::SeqCst);
        frames
            .send(Ok(Frame::data(Bytes::from_static(b"two"))))
            .await
            .unwrap();
        assert_eq!(
            wakes.0.load(Ordering::SeqCst),
            before + 1,
            "woken by the frame"
        );
        assert!(
            pipe.as_mut().poll(&mut cx).is_pending(),
            "sent, waits for the body"
        );
        assert_eq!(
            wakes.0.load(Ordering::SeqCst),
            before + 1,
            "the pipe's own request for window woke it"
        );
        drop((pipe, frames, client));
        server.abort();
    }
}
