//! The bodies the proxy forwards: the client's request towards the backend, and the
//! backend's response towards the client.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tonic::Status;

use crate::boxed::BoxError;
use crate::call_state::{abort_status, AbortReason, CallState};
use crate::frame::{FrameDecoder, FrameEvent};
use crate::status::status_from_upstream_error;
use crate::upstream::UpstreamBody;

/// The next frame of `body`, without the empty DATA frames: they carry nothing, and
/// forwarded onto a backend connection that all clients share, every client's empty frames
/// would count against that connection's limit on them (h2 closes a connection after 100
/// with ENHANCE_YOUR_CALM): one client could cut everyone's calls.
fn poll_skipping_empty_data<B: Body<Data = Bytes>>(
    mut body: Pin<&mut B>,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
    loop {
        match body.as_mut().poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) if frame.data_ref().is_some_and(Bytes::is_empty) => {}
            other => return other,
        }
    }
}

/// Checks message prefixes against a size limit as DATA goes by.
#[derive(Debug, Clone)]
pub(crate) struct MessageLimit {
    decoder: FrameDecoder,
    max: u32,
}

impl MessageLimit {
    pub(crate) fn new(max: u32) -> Self {
        Self {
            decoder: FrameDecoder::new(),
            max,
        }
    }

    /// True if a message in `chunk` announces more than the limit.
    fn exceeded_by(&mut self, chunk: &[u8]) -> bool {
        let mut exceeded = false;
        let max = self.max;
        self.decoder.feed(chunk, |event| {
            if let FrameEvent::Header(header) = event {
                exceeded |= header.len > max;
            }
        });
        exceeded
    }
}

/// Why the request stream towards the backend ended with an error.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RequestBodyError {
    /// The client's stream failed (reset, disconnect); the source keeps its h2 reason so
    /// the backend stream is reset with the same one.
    #[error("client request stream failed")]
    Client(#[source] BoxError),
    /// The proxy ended the call; the backend stream is reset with CANCEL.
    #[error("the proxy ended the call ({reason:?})")]
    Aborted {
        reason: AbortReason,
        #[source]
        h2: h2::Error,
    },
}

pin_project! {
    /// The client's request body on its way to the backend.
    pub(crate) struct RequestBody<B> {
        #[pin]
        inner: B,
        call: Arc<CallState>,
        limit: Option<MessageLimit>,
        // Whether messages count as activity (a stream idle timeout is set).
        touch: bool,
    }
}

impl<B> RequestBody<B> {
    pub(crate) fn new(inner: B, call: Arc<CallState>, limit: Option<u32>, touch: bool) -> Self {
        Self {
            inner,
            call,
            limit: limit.map(MessageLimit::new),
            touch,
        }
    }
}

fn aborted(reason: AbortReason) -> RequestBodyError {
    RequestBodyError::Aborted {
        reason,
        h2: h2::Error::from(h2::Reason::CANCEL),
    }
}

impl<B> Body for RequestBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = RequestBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        this.call.register_request_waker(cx.waker());
        if let Some(reason) = this.call.abort_reason() {
            return Poll::Ready(Some(Err(aborted(reason))));
        }
        if let Some(tap) = this.call.tap() {
            std::task::ready!(tap.poll_room(crate::mq::Direction::Request, cx));
        }
        let mut inner = this.inner;
        match poll_skipping_empty_data(inner.as_mut(), cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    if let Some(limit) = this.limit.as_mut() {
                        if limit.exceeded_by(data) {
                            this.call.abort(AbortReason::RequestTooLarge);
                            return Poll::Ready(Some(Err(aborted(AbortReason::RequestTooLarge))));
                        }
                    }
                    this.call.add_request_bytes(data.len());
                    if *this.touch {
                        this.call.touch();
                    }
                    if let Some(tap) = this.call.tap() {
                        tap.data(crate::mq::Direction::Request, data);
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(RequestBodyError::Client(e.into())))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Ends the call (resetting the backend stream) if the response side is dropped before the
/// call finished: the client left, or a layer in front of the proxy gave up on the call.
///
/// Armed when the call starts, so it covers the wait for response headers too; on success
/// it moves into the [`ResponseBody`].
#[derive(Debug)]
pub(crate) struct ResponseGuard {
    call: Arc<CallState>,
    finished: bool,
}

impl ResponseGuard {
    pub(crate) fn new(call: Arc<CallState>) -> Self {
        Self {
            call,
            finished: false,
        }
    }

    pub(crate) fn call(&self) -> &Arc<CallState> {
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
    #[derive(Debug, Default)]
    pub struct ResponseBody {
        upstream: Option<UpstreamBody>,
        #[pin]
        deadline: Option<Sleep>,
        // The stream idle timeout and its timer, re-armed when it fires after activity.
        idle: Option<Duration>,
        #[pin]
        idle_timer: Option<Sleep>,
        guard: Option<ResponseGuard>,
        limit: Option<MessageLimit>,
        backend: Option<Arc<str>>,
        text: Option<Bytes>,
    }
}

impl ResponseBody {
    /// A body of plain text (for HTTP-level errors).
    pub(crate) fn text(text: &'static str) -> Self {
        Self {
            text: Some(Bytes::from_static(text.as_bytes())),
            ..Self::default()
        }
    }

    pub(crate) fn forward(
        upstream: UpstreamBody,
        mut guard: ResponseGuard,
        deadline: Option<Instant>,
        idle: Option<Duration>,
        limit: Option<u32>,
        backend: Arc<str>,
    ) -> Self {
        // A trailers-only response is complete already: hyper will not poll it.
        guard.finished = upstream.is_end_stream();
        let idle_timer = idle.map(|timeout| {
            guard.call.touch(); // the response headers just arrived
            tokio::time::sleep_until(guard.call.idle_at(timeout))
        });
        Self {
            upstream: Some(upstream),
            deadline: deadline.map(tokio::time::sleep_until),
            idle,
            idle_timer,
            guard: Some(guard),
            limit: limit.map(MessageLimit::new),
            backend: Some(backend),
            text: None,
        }
    }
}

/// Ends the forwarding half: drops the backend stream and records a normal finish.
fn finish(upstream: &mut Option<UpstreamBody>, guard: &mut Option<ResponseGuard>, normally: bool) {
    *upstream = None;
    if let Some(guard) = guard.as_mut() {
        guard.finished = normally;
    }
    *guard = None;
}

/// Ends the response with `status` in trailers, recording it for the observer.
fn end_with(
    call: &CallState,
    status: Status,
) -> Poll<Option<Result<Frame<Bytes>, std::convert::Infallible>>> {
    call.set_status(status.code());
    trailers(status)
}

fn trailers(status: Status) -> Poll<Option<Result<Frame<Bytes>, std::convert::Infallible>>> {
    // tonic renders grpc-status, the percent-encoded grpc-message, details and metadata.
    let mut trailers: HeaderMap = status.into_http::<()>().into_parts().0.headers;
    trailers.remove(http::header::CONTENT_TYPE);
    Poll::Ready(Some(Ok(Frame::trailers(trailers))))
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let mut this = self.project();
        if let Some(text) = this.text.take() {
            return Poll::Ready(Some(Ok(Frame::data(text))));
        }
        let Some(upstream) = this.upstream.as_mut() else {
            return Poll::Ready(None);
        };
        if let Some(deadline) = this.deadline.as_mut().as_pin_mut() {
            if deadline.poll(cx).is_ready() {
                let call = this
                    .guard
                    .as_ref()
                    .expect("a forwarding body has a guard")
                    .call
                    .clone();
                call.abort(AbortReason::Deadline);
                finish(this.upstream, this.guard, false);
                return end_with(&call, abort_status(AbortReason::Deadline, None));
            }
        }
        if let (Some(timeout), Some(mut timer)) = (*this.idle, this.idle_timer.as_pin_mut()) {
            let call = &this
                .guard
                .as_ref()
                .expect("a forwarding body has a guard")
                .call;
            // Re-armed only when it fires: activity costs a timestamp, not a timer reset.
            while timer.as_mut().poll(cx).is_ready() {
                let idle_at = call.idle_at(timeout);
                if Instant::now() >= idle_at {
                    let call = call.clone();
                    call.abort(AbortReason::Idle);
                    finish(this.upstream, this.guard, false);
                    return end_with(&call, abort_status(AbortReason::Idle, None));
                }
                timer.as_mut().reset(idle_at);
            }
        }
        if let Some(tap) = this.guard.as_ref().and_then(|g| g.call.tap()) {
            std::task::ready!(tap.poll_room(crate::mq::Direction::Response, cx));
        }
        match poll_skipping_empty_data(Pin::new(upstream), cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let call = &this
                    .guard
                    .as_ref()
                    .expect("a forwarding body has a guard")
                    .call;
                if let Some(data) = frame.data_ref() {
                    if let Some(limit) = this.limit.as_mut() {
                        if limit.exceeded_by(data) {
                            let (max, call) = (limit.max, call.clone());
                            call.abort(AbortReason::ResponseTooLarge);
                            finish(this.upstream, this.guard, false);
                            return end_with(
                                &call,
                                abort_status(AbortReason::ResponseTooLarge, Some(max)),
                            );
                        }
                    }
                    call.add_response_bytes(data.len());
                    if this.idle.is_some() {
                        call.touch();
                    }
                    if let Some(tap) = call.tap() {
                        tap.data(crate::mq::Direction::Response, data);
                    }
                } else if let Some(trailers) = frame.trailers_ref() {
                    let deadline = this.deadline.as_ref().as_pin_ref().map(|d| d.deadline());
                    if crate::deadline::is_late_error(deadline, trailers) {
                        let call = call.clone();
                        finish(this.upstream, this.guard, false);
                        return end_with(&call, abort_status(AbortReason::Deadline, None));
                    }
                    call.set_status_from(trailers);
                    if let Some(tap) = call.tap() {
                        tap.trailers(trailers);
                    }
                    finish(this.upstream, this.guard, true);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(err))) => {
                let guard = this.guard.as_ref().expect("a forwarding body has a guard");
                let status = match guard.call.abort_reason() {
                    Some(reason) => abort_status(reason, this.limit.as_ref().map(|l| l.max)),
                    None => {
                        let backend = this.backend.as_deref().unwrap_or("?");
                        status_from_upstream_error(err.as_ref(), backend)
                    }
                };
                tracing::debug!(code = ?status.code(), message = status.message(), "backend stream failed");
                let call = guard.call.clone();
                finish(this.upstream, this.guard, false);
                end_with(&call, status)
            }
            Poll::Ready(None) => {
                finish(this.upstream, this.guard, true);
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.text.is_none() && self.upstream.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        match (&self.text, &self.upstream) {
            (Some(text), _) => SizeHint::with_exact(text.len() as u64),
            (None, Some(upstream)) => upstream.size_hint(),
            (None, None) => SizeHint::with_exact(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    type FrameResult = Result<Frame<Bytes>, BoxError>;
    type Frames =
        http_body_util::StreamBody<futures_util::stream::Iter<std::vec::IntoIter<FrameResult>>>;

    fn frames(chunks: &[&'static [u8]]) -> Frames {
        let frames: Vec<FrameResult> = chunks
            .iter()
            .map(|c| Ok(Frame::data(Bytes::from_static(c))))
            .collect();
        http_body_util::StreamBody::new(futures_util::stream::iter(frames))
    }

    #[tokio::test]
    async fn empty_data_frames_are_not_forwarded_either_way() {
        let stats = Arc::new(crate::ProxyStats::default());
        let call = CallState::start(&stats);
        let request = RequestBody::new(
            frames(&[b"", b"ab", b"", b"", b"c", b""]),
            call.clone(),
            None,
            false,
        );
        let mut request = std::pin::pin!(request);
        let mut seen = Vec::new();
        while let Some(frame) = request.frame().await {
            seen.push(frame.unwrap().into_data().unwrap());
        }
        assert_eq!(seen, [&b"ab"[..], &b"c"[..]]);

        let mut response = std::pin::pin!(frames(&[b"", b"xy", b""]));
        let mut seen = Vec::new();
        while let Some(frame) =
            std::future::poll_fn(|cx| poll_skipping_empty_data(response.as_mut(), cx)).await
        {
            seen.push(frame.unwrap().into_data().unwrap());
        }
        assert_eq!(seen, [&b"xy"[..]]);
    }
}
