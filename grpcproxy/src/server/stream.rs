//! One call on a client connection: the service's answer, its response head, then its
//! body piped onto the stream as the client's window allows.
//!
//! A hand-written state machine rather than an `async fn`: the task is spawned once per
//! call, and its size is what tokio copies into the task (and again when it ends). The
//! service is called before the task starts, so the task holds the service's future and
//! then the response body, never the request.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use h2::server::SendResponse;
use h2::SendStream;
use http::Response;
use http_body::Body;
use pin_project_lite::pin_project;

use super::open_streams::OpenStream;
use crate::boxed::BoxError;
use crate::headers::strip_hop_by_hop;
use crate::status::{reset_reason, DisplayChain};

pin_project! {
    /// Serves one call: waits for the service's response and sends it on the stream. A
    /// client that resets the stream first ends the task, and dropping the service's
    /// future (or the response body) cancels whatever the call started.
    pub(super) struct StreamTask<F, B> {
        reply: SendResponse<Bytes>,
        #[pin]
        state: State<F, B>,
        // Ready when the server's drain times out: the call ends with UNAVAILABLE.
        #[pin]
        cut: Cut,
        _open: OpenStream,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, B> {
        /// The service has not answered yet.
        Waiting { #[pin] response: F },
        /// The response head went out; its body follows.
        Sending { #[pin] pipe: Pipe<B> },
    }
}

impl<F, B> StreamTask<F, B> {
    /// The task for a call whose service future is `response`.
    pub(super) fn new(response: F, reply: SendResponse<Bytes>, open: OpenStream, cut: Cut) -> Self {
        Self {
            reply,
            state: State::Waiting { response },
            cut,
            _open: open,
        }
    }
}

/// Completes when the server gives up waiting for open calls.
pub(super) type Cut = tokio_util::sync::WaitForCancellationFutureOwned;

/// `grpc-status` and `grpc-message` of a call the server ends because it shuts down.
fn shutting_down() -> http::HeaderMap {
    let mut fields = http::HeaderMap::with_capacity(2);
    fields.insert("grpc-status", http::HeaderValue::from_static("14"));
    fields.insert(
        "grpc-message",
        http::HeaderValue::from_static("proxy shutting down"),
    );
    fields
}

impl<F, B> Future for StreamTask<F, B>
where
    F: Future<Output = Result<Response<B>, Infallible>>,
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut me = self.project();
        if poll_call(me.reply, me.state.as_mut(), cx).is_ready() {
            return Poll::Ready(());
        }
        // Waiting on the backend or the client: the drain timeout may cut in (registered
        // only now, so a call answered in one poll never touches it).
        if me.cut.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        // The drain timed out: end the call with trailers that say so (dropping the
        // service's future or body then cancels the backend's side).
        match me.state.as_mut().project() {
            StateProj::Waiting { .. } => {
                let mut head = Response::new(());
                *head.headers_mut() = shutting_down();
                head.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("application/grpc"),
                );
                let _ = me.reply.send_response(head, true);
            }
            StateProj::Sending { pipe } => {
                let _ = pipe.project().send.send_trailers(shutting_down());
            }
        }
        Poll::Ready(())
    }
}

/// Drives the call: the service's answer, its head, then its body.
fn poll_call<F, B>(
    reply: &mut SendResponse<Bytes>,
    mut state: Pin<&mut State<F, B>>,
    cx: &mut Context<'_>,
) -> Poll<()>
where
    F: Future<Output = Result<Response<B>, Infallible>>,
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    loop {
        let response = match state.as_mut().project() {
            StateProj::Sending { pipe } => return pipe.poll(cx),
            StateProj::Waiting { response } => match response.poll(cx) {
                Poll::Ready(Ok(response)) => response,
                Poll::Ready(Err(never)) => match never {},
                // Still waiting for the service: a client's RST_STREAM ends the call.
                Poll::Pending => return reply.poll_reset(cx).map(|_| ()),
            },
        };
        // The client may have reset the stream while the answer was being made (its
        // deadline and the proxy's expire together): then there is no one to answer.
        if reply.poll_reset(cx).is_ready() {
            return Poll::Ready(());
        }
        let (mut head, body) = response.into_parts();
        strip_hop_by_hop(&mut head.headers);
        let end = body.is_end_stream();
        match reply.send_response(Response::from_parts(head, ()), end) {
            Ok(send) if !end => state.set(State::Sending {
                pipe: Pipe {
                    body,
                    send,
                    waiting: None,
                },
            }),
            Ok(_) => return Poll::Ready(()),
            // The stream closed under the answer (a reset between the check above and
            // now): nothing to send, nothing to reset.
            Err(_) if reply.poll_reset(cx).is_ready() => return Poll::Ready(()),
            Err(e) => {
                tracing::debug!(error = %e, "could not send the response head");
                reply.send_reset(h2::Reason::INTERNAL_ERROR);
                return Poll::Ready(());
            }
        }
    }
}

pin_project! {
    /// A response body onto its stream: each DATA frame once the stream has window for it
    /// (so at most one frame waits in h2, however slowly the client reads), then the
    /// trailers. Done early when the client resets the stream.
    struct Pipe<B> {
        #[pin]
        body: B,
        send: SendStream<Bytes>,
        // A DATA frame taken from the body, waiting for window; and whether it ends it.
        waiting: Option<(Bytes, bool)>,
    }
}

impl<B> Future for Pipe<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut me = self.project();
        loop {
            if me.send.poll_reset(cx).is_ready() {
                return Poll::Ready(()); // reset by the client
            }
            if let Some((data, end)) = me.waiting.take() {
                while me.send.capacity() == 0 {
                    match me.send.poll_capacity(cx) {
                        Poll::Ready(Some(Ok(_))) => {}
                        Poll::Ready(_) => return Poll::Ready(()), // the stream ended
                        Poll::Pending => {
                            *me.waiting = Some((data, end));
                            return Poll::Pending;
                        }
                    }
                }
                if me.send.send_data(data, end).is_err() || end {
                    return Poll::Ready(());
                }
                continue;
            }
            let frame = match ready!(me.body.as_mut().poll_frame(cx)) {
                Some(Ok(frame)) => frame,
                None => {
                    let _ = me.send.send_data(Bytes::new(), true);
                    return Poll::Ready(());
                }
                Some(Err(e)) => {
                    let e: BoxError = e.into();
                    let reason = reset_reason(e.as_ref());
                    tracing::debug!(error = %DisplayChain(e.as_ref()), ?reason, "response body failed; resetting the stream");
                    me.send.send_reset(reason);
                    return Poll::Ready(());
                }
            };
            let data = match frame.into_data() {
                Ok(data) => data,
                Err(frame) => {
                    if let Ok(trailers) = frame.into_trailers() {
                        let _ = me.send.send_trailers(trailers);
                        return Poll::Ready(());
                    }
                    continue; // no other frame kinds exist
                }
            };
            let end = me.body.is_end_stream();
            if data.is_empty() && !end {
                continue;
            }
            // Window is asked for only once a frame is in hand: window held back on an idle
            // stream could starve the connection's other streams.
            me.send.reserve_capacity(data.len());
            if data.is_empty() {
                let _ = me.send.send_data(data, true);
                return Poll::Ready(());
            }
            *me.waiting = Some((data, end));
        }
    }
}
