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

/// Reads message prefixes as DATA goes by: counts the messages that begin and checks
/// their sizes against the limit.
#[derive(Debug, Clone)]
pub(super) struct MessageMeter {
    decoder: FrameDecoder,
    max: Option<u32>,
}

/// A message announced more than the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct TooLarge;

impl MessageMeter {
    /// A meter for a call's direction, when one is needed: there is a size limit, or
    /// the call's observer counts its messages.
    pub(super) fn needed(max: Option<u32>, counting: bool) -> Option<Self> {
        (max.is_some() || counting).then(|| Self {
            decoder: FrameDecoder::new(),
            max,
        })
    }

    /// The limit, in bytes.
    pub(super) fn max(&self) -> Option<u32> {
        self.max
    }

    /// The number of messages that begin in `chunk`, or [`TooLarge`] when one announces
    /// more than the limit.
    pub(super) fn feed(&mut self, chunk: &[u8]) -> Result<u64, TooLarge> {
        let (mut begun, mut largest) = (0u64, 0u32);
        self.decoder.feed(chunk, |event| {
            if let FrameEvent::Header(header) = event {
                begun += 1;
                largest = largest.max(header.len);
            }
        });
        match self.max {
            Some(max) if largest > max => Err(TooLarge),
            _ => Ok(begun),
        }
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
        let mut meter = MessageMeter::needed(Some(4), false).unwrap();
        assert_eq!(meter.feed(&[0, 0, 0, 0, 4, 1, 2]), Ok(1));
        assert_eq!(meter.feed(&[3, 4]), Ok(0));
        assert_eq!(meter.feed(&[0, 0, 0, 0, 5]), Err(TooLarge));
    }

    #[test]
    fn messages_are_counted_where_they_begin() {
        assert!(MessageMeter::needed(None, false).is_none());
        let mut meter = MessageMeter::needed(None, true).unwrap();
        // Two whole messages in one chunk, then a third split inside its prefix.
        assert_eq!(meter.feed(&[0, 0, 0, 0, 1, 9, 0, 0, 0, 0, 0, 0, 0]), Ok(2));
        assert_eq!(meter.feed(&[0, 0, 2, 7]), Ok(1));
        assert_eq!(meter.feed(&[8]), Ok(0));
        assert_eq!(meter.feed(&[0, 0, 0, 0, 0]), Ok(1));
    }
}
