//! The DATA frames of a call as the proxy sees them going by: empty ones skipped, message
//! sizes checked against the limit.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame};

use crate::frame::{FrameDecoder, FrameEvent};

/// The next frame of `body`, without the empty DATA frames: they carry nothing, and
/// forwarded onto a backend connection that all clients share, every client's empty frames
/// would count against that connection's limit on them (h2 closes a connection after 100
/// with ENHANCE_YOUR_CALM): one client could cut everyone's calls.
pub(super) fn poll_skipping_empty_data<B: Body<Data = Bytes>>(
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
pub(super) struct MessageLimit {
    decoder: FrameDecoder,
    max: u32,
}

impl MessageLimit {
    pub(super) fn new(max: u32) -> Self {
        Self {
            decoder: FrameDecoder::new(),
            max,
        }
    }

    /// The limit, in bytes.
    pub(super) fn max(&self) -> u32 {
        self.max
    }

    /// True if a message in `chunk` announces more than the limit.
    pub(super) fn exceeded_by(&mut self, chunk: &[u8]) -> bool {
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

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::boxed::BoxError;

    /// A body of one DATA frame per chunk.
    pub(in crate::proxy) fn data_frames(
        chunks: &[&[u8]],
    ) -> impl Body<Data = Bytes, Error = BoxError> {
        let frames: Vec<Result<Frame<Bytes>, BoxError>> = chunks
            .iter()
            .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c))))
            .collect();
        http_body_util::StreamBody::new(futures_util::stream::iter(frames))
    }

    #[tokio::test]
    async fn empty_data_frames_are_skipped() {
        let mut body = std::pin::pin!(data_frames(&[b"", b"xy", b"", b"", b"z", b""]));
        let mut seen = Vec::new();
        while let Some(frame) =
            std::future::poll_fn(|cx| poll_skipping_empty_data(body.as_mut(), cx)).await
        {
            seen.push(frame.unwrap().into_data().unwrap());
        }
        assert_eq!(seen, [&b"xy"[..], &b"z"[..]]);
    }

    #[test]
    fn a_message_over_the_limit_is_seen_in_its_prefix() {
        let mut limit = MessageLimit::new(4);
        assert!(!limit.exceeded_by(&[0, 0, 0, 0, 4, 1, 2]));
        assert!(!limit.exceeded_by(&[3, 4]));
        assert!(limit.exceeded_by(&[0, 0, 0, 0, 5]));
    }
}
