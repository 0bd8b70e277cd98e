//! The response body the proxy sends to the client, and the guard that ends the call when
//! the client's side goes away first.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tonic::Status;

use super::call_state::{abort_status, AbortReason, CallState};
use super::messages::{poll_skipping_empty_data, MessageMeter};
use super::timeouts::{is_late_error, Timers};
use crate::status::status_from_upstream_error;
use crate::upstream::UpstreamBody;

/// Ends the call (resetting the backend stream) if the response side is dropped before the
/// call finished: the client left, or a layer in front of the proxy gave up on the call.
///
/// Armed when the call starts, so it covers the wait for response headers too; on success
/// it moves into the [`ResponseBody`].
#[derive(Debug)]
pub(super) struct ResponseGuard {
    call: Arc<CallState>,
    finished: bool,
}

impl ResponseGuard {
    pub(super) fn new(call: Arc<CallState>) -> Self {
        Self {
            call,
            finished: false,
        }
    }

    pub(super) fn call(&self) -> &Arc<CallState> {
        &self.call
    }
}

impl Drop for ResponseGuard {
    fn drop(&mut self) {
        if !self.finished {
            self.call.abort(AbortReason::ClientGone);
        }
    }
}

pin_project! {
    /// The response body the proxy sends to the client.
    ///
    /// While forwarding, it passes the backend's frames through untouched; a deadline, a
    /// size limit or a backend failure ends it with trailers carrying the matching status.
    /// An answer of the proxy's own is empty (trailers-only) or a short text (HTTP errors).
    ///
    /// ```
    /// use grpcproxy::ResponseBody;
    /// use http_body::Body;
    ///
    /// // What a trailers-only answer carries.
    /// assert!(ResponseBody::default().is_end_stream());
    /// ```
    #[derive(Debug, Default)]
    pub struct ResponseBody {
        #[pin]
        inner: Inner,
    }
}

pin_project! {
    #[project = InnerProj]
    #[derive(Debug, Default)]
    enum Inner {
        /// Nothing (left): a trailers-only answer, or a body that has ended.
        #[default]
        Empty,
        /// A short text, for an HTTP-level error.
        Text { text: Bytes },
        /// The backend's response, on its way.
        Forward { #[pin] forward: Forwarding },
    }
}

pin_project! {
    /// The forwarding state of a response body.
    #[derive(Debug)]
    struct Forwarding {
        upstream: UpstreamBody,
        timers: Timers,
        guard: ResponseGuard,
        meter: Option<MessageMeter>,
        backend: Arc<str>,
    }
}

impl ResponseBody {
    /// A body of plain text (for HTTP-level errors).
    pub(crate) fn text(text: &'static str) -> Self {
        Self {
            inner: Inner::Text {
                text: Bytes::from_static(text.as_bytes()),
            },
        }
    }

    /// The backend's response body, forwarded under the call's deadline, idle timeout and
    /// message size limit.
    pub(super) fn forward(
        upstream: UpstreamBody,
        mut guard: ResponseGuard,
        timers: Timers,
        limit: Option<u32>,
        backend: Arc<str>,
        trailers_only: bool,
    ) -> Self {
        // A trailers-only response is complete already: it will not be polled.
        guard.finished = trailers_only;
        if timers.has_idle_timeout() {
            guard.call.touch(); // the response headers just arrived
        }
        let meter = MessageMeter::needed(limit, guard.call.counting_messages());
        Self {
            inner: Inner::Forward {
                forward: Forwarding {
                    upstream,
                    timers,
                    guard,
                    meter,
                    backend,
                },
            },
        }
    }
}

/// What one poll of the forwarding body gave.
enum Step {
    /// A frame, and more may follow.
    Frame(Frame<Bytes>),
    /// The last frame: the call is over, normally or not.
    Last(Frame<Bytes>, bool),
    /// The backend's body ended without trailers.
    End,
}

/// The trailers that end a response with `status`, recorded for the observer.
fn status_trailers(call: &CallState, status: Status) -> Frame<Bytes> {
    call.set_status(status.code());
    // tonic renders grpc-status, the percent-encoded grpc-message, details and metadata.
    let mut trailers: HeaderMap = status.into_http::<()>().into_parts().0.headers;
    trailers.remove(http::header::CONTENT_TYPE);
    Frame::trailers(trailers)
}

impl Forwarding {
    /// Ends the call early for `reason`: trailers with the status the client gets.
    fn abort(call: &CallState, reason: AbortReason, limit: Option<u32>) -> Step {
        call.abort(reason);
        Step::Last(status_trailers(call, abort_status(reason, limit)), false)
    }

    fn poll_step(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Step> {
        let this = self.project();
        let call = &this.guard.call;
        if let Poll::Ready(reason) = this.timers.poll_expired(call, cx) {
            return Poll::Ready(Self::abort(call, reason, None));
        }
        if let Some(tap) = call.tap() {
            std::task::ready!(tap.poll_room(crate::mq::Direction::Response, cx));
        }
        let frame = match std::task::ready!(poll_skipping_empty_data(Pin::new(this.upstream), cx)) {
            Some(Ok(frame)) => frame,
            Some(Err(err)) => {
                let status = match call.abort_reason() {
                    Some(reason) => abort_status(reason, this.meter.as_ref().and_then(|m| m.max())),
                    None => status_from_upstream_error(err.as_ref(), this.backend),
                };
                tracing::debug!(code = ?status.code(), message = status.message(), "backend stream failed");
                return Poll::Ready(Step::Last(status_trailers(call, status), false));
            }
            None => return Poll::Ready(Step::End),
        };
        if let Some(data) = frame.data_ref() {
            let messages = match this.meter.as_mut().map(|m| m.feed(data)) {
                Some(Err(_)) => {
                    let max = this.meter.as_ref().and_then(|m| m.max());
                    return Poll::Ready(Self::abort(call, AbortReason::ResponseTooLarge, max));
                }
                Some(Ok(messages)) => messages,
                None => 0,
            };
            call.add_response(data.len(), messages);
            if this.timers.has_idle_timeout() {
                call.touch();
            }
            if let Some(tap) = call.tap() {
                tap.data(crate::mq::Direction::Response, data);
            }
            if let Some(mirror) = call.mirror() {
                mirror.response_data(data);
            }
            return Poll::Ready(Step::Frame(frame));
        }
        if let Some(trailers) = frame.trailers_ref() {
            if is_late_error(this.timers.deadline(), trailers) {
                let status = abort_status(AbortReason::Deadline, None);
                return Poll::Ready(Step::Last(status_trailers(call, status), false));
            }
            call.set_status_from(trailers);
            if let Some(tap) = call.tap() {
                tap.trailers(trailers);
            }
            if let Some(mirror) = call.mirror() {
                mirror.response_trailers(trailers);
            }
            return Poll::Ready(Step::Last(frame, true));
        }
        Poll::Ready(Step::Frame(frame))
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let mut inner = self.project().inner;
        let (frame, normally) = match inner.as_mut().project() {
            InnerProj::Empty => return Poll::Ready(None),
            InnerProj::Text { text } => {
                let text = std::mem::take(text);
                inner.set(Inner::Empty);
                return Poll::Ready(Some(Ok(Frame::data(text))));
            }
            InnerProj::Forward { mut forward } => {
                match std::task::ready!(forward.as_mut().poll_step(cx)) {
                    Step::Frame(frame) => return Poll::Ready(Some(Ok(frame))),
                    Step::Last(frame, normally) => (Some(frame), normally),
                    Step::End => (None, true),
                }
            }
        };
        // The call is over: the backend stream is dropped, and the guard records how.
        if let InnerProj::Forward { forward } = inner.as_mut().project() {
            forward.project().guard.finished = normally;
        }
        inner.set(Inner::Empty);
        Poll::Ready(frame.map(Ok))
    }

    /// A forwarded response is at its end only when it is trailers-only; otherwise the
    /// backend's stream is not asked (that takes h2's lock, and a gRPC response ends on
    /// trailers anyway): a body that is in fact over says so by returning `None`, and
    /// `false` is always allowed.
    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Empty => true,
            Inner::Text { .. } => false,
            Inner::Forward { forward } => forward.guard.finished,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Empty => SizeHint::with_exact(0),
            Inner::Text { text } => SizeHint::with_exact(text.len() as u64),
            Inner::Forward { forward } => forward.upstream.size_hint(),
        }
    }
}
