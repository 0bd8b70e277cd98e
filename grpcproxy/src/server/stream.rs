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
use std::task::{Context, Poll};

use bytes::Bytes;
use h2::server::SendResponse;
use http::Response;
use http_body::Body;
use pin_project_lite::pin_project;

use super::cut::Cut;
use super::open_streams::OpenStream;
use crate::boxed::BoxError;
use crate::headers::strip_hop_by_hop;
use crate::http2::Pipe;

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
        open: OpenStream,
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
            open,
        }
    }
}

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
        if poll_call(me.reply, me.state.as_mut(), me.open, cx).is_ready() {
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
            StateProj::Sending { pipe } => pipe.cut(shutting_down()),
        }
        Poll::Ready(())
    }
}

/// Drives the call: the service's answer, its head, then its body.
fn poll_call<F, B>(
    reply: &mut SendResponse<Bytes>,
    mut state: Pin<&mut State<F, B>>,
    open: &OpenStream,
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
                Poll::Pending => {
                    return reply.poll_reset(cx).map(|_| open.reset_before_answer());
                }
            },
        };
        let (mut head, body) = response.into_parts();
        strip_hop_by_hop(&mut head.headers);
        let end = body.is_end_stream();
        match reply.send_response(Response::from_parts(head, ()), end) {
            Ok(send) if !end => state.set(State::Sending {
                pipe: Pipe::new(body, send),
            }),
            Ok(_) => return Poll::Ready(()),
            // The client reset the stream while the answer was being made (its deadline
            // and the proxy's expire together; h2 refuses the head of a reset stream):
            // there is no one to answer, nothing to reset. Asked only now, so an answered
            // call takes h2's lock once less.
            Err(_) if reply.poll_reset(cx).is_ready() => {
                open.reset_before_answer();
                return Poll::Ready(());
            }
            Err(e) => {
                tracing::debug!(error = %e, "could not send the response head");
                reply.send_reset(h2::Reason::INTERNAL_ERROR);
                return Poll::Ready(());
            }
        }
    }
}
