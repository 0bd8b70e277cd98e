//! The client's request body on its way to the backend: counted, size-checked, tapped,
//! and cut when the proxy ends the call.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use super::call_state::{AbortReason, CallState};
use super::messages::{poll_skipping_empty_data, MessageMeter};
use super::request_copy::CopySender;
use crate::boxed::BoxError;

/// Why the request stream towards the backend ended with an error.
#[derive(Debug, thiserror::Error)]
pub(super) enum RequestBodyError {
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
    pub(super) struct RequestBody<B> {
        #[pin]
        inner: B,
        call: Arc<CallState>,
        meter: Option<MessageMeter>,
        // Whether messages count as activity (a stream idle timeout is set).
        touch: bool,
        // The copy for the call's mirror, if it is mirrored.
        mirror: Option<CopySender>,
    }
}

impl<B> RequestBody<B> {
    pub(super) fn new(inner: B, call: Arc<CallState>, limit: Option<u32>, touch: bool) -> Self {
        Self {
            inner,
            meter: MessageMeter::needed(limit, call.counting_messages()),
            call,
            touch,
            mirror: None,
        }
    }

    /// Copies what the body forwards to `feed` (the call's mirror).
    pub(super) fn mirrored(mut self, mut feed: Option<CopySender>) -> Self
    where
        B: Body,
    {
        // A request without a body is never polled: its half-close is now. (The body is
        // asked only for a mirrored call: the question takes h2's lock.)
        if let Some(feed) = feed.as_mut() {
            if self.inner.is_end_stream() {
                feed.end();
            }
        }
        self.mirror = feed;
        self
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
                    let messages = match this.meter.as_mut().map(|m| m.feed(data)) {
                        Some(Err(_)) => {
                            this.call.abort(AbortReason::RequestTooLarge);
                            return Poll::Ready(Some(Err(aborted(AbortReason::RequestTooLarge))));
                        }
                        Some(Ok(messages)) => messages,
                        None => 0,
                    };
                    this.call.add_request(data.len(), messages);
                    if *this.touch {
                        this.call.touch();
                    }
                    if let Some(tap) = this.call.tap() {
                        tap.data(crate::mq::Direction::Request, data);
                    }
                    if let Some(mirror) = this.mirror.as_mut() {
                        // Never waits: a shadow that fell behind is given up.
                        mirror.send_now(data);
                    }
                }
                // The frame that ends the stream (END_STREAM on it): the sender may not
                // poll again to see the end. (Asked only for a mirrored call.)
                if let Some(mirror) = this.mirror {
                    if inner.is_end_stream() {
                        mirror.end();
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(RequestBodyError::Client(e.into())))),
            Poll::Ready(None) => {
                if let Some(mirror) = this.mirror {
                    mirror.end();
                }
                Poll::Ready(None)
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::messages::tests::data_frames;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn empty_data_frames_are_not_forwarded() {
        let body = data_frames(&[b"", b"ab", b"", b"", b"c", b""]);
        let stats = Arc::new(super::super::ProxyStats::default());
        let request = RequestBody::new(
            body,
            CallState::start(&stats, std::time::Instant::now()),
            None,
            false,
        );
        let mut request = std::pin::pin!(request);
        let mut seen = Vec::new();
        while let Some(frame) = request.frame().await {
            seen.push(frame.unwrap().into_data().unwrap());
        }
        assert_eq!(seen, [&b"ab"[..], &b"c"[..]]);
    }
}
