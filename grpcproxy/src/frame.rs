//! Incremental decoding of gRPC length-prefixed message frames.
//!
//! A gRPC message on the wire is 1 flag byte (bit 0: compressed), a 4-byte big-endian length
//! and the payload. HTTP/2 DATA chunks cut these anywhere, so the decoder keeps just enough
//! state to follow message boundaries across chunks without buffering payloads.

/// The 5-byte prefix that starts every gRPC message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageHeader {
    /// Whether the payload is compressed with the call's `grpc-encoding`.
    pub compressed: bool,
    /// Length of the payload in bytes.
    pub len: u32,
}

/// What one fed chunk contained, as seen by a [`FrameDecoder`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameEvent {
    /// A message starts; its payload follows.
    Header(MessageHeader),
    /// `len` payload bytes at `offset` in the chunk belong to the current message.
    Payload {
        /// Where the payload bytes start in the fed chunk.
        offset: usize,
        /// How many payload bytes the chunk holds from there.
        len: usize,
        /// True when these bytes complete the message.
        last: bool,
    },
}

/// Follows gRPC message boundaries across arbitrarily split chunks.
///
/// ```
/// use grpcproxy::frame::{FrameDecoder, FrameEvent, MessageHeader};
///
/// let mut decoder = FrameDecoder::new();
/// let mut headers = Vec::new();
/// // One message of 3 bytes, split inside its prefix.
/// for chunk in [&[0u8, 0, 0][..], &[0, 3, b'a', b'b', b'c'][..]] {
///     decoder.feed(chunk, |event| {
///         if let FrameEvent::Header(h) = event {
///             headers.push(h);
///         }
///     });
/// }
/// assert_eq!(headers, [MessageHeader { compressed: false, len: 3 }]);
/// assert!(decoder.is_at_boundary());
/// ```
#[derive(Debug, Clone, Default)]
pub struct FrameDecoder {
    prefix: [u8; 5],
    prefix_len: u8,
    remaining: u32,
}

impl FrameDecoder {
    /// A decoder positioned at the start of a message.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds one chunk, calling `on_event` for every message start and payload run in it.
    pub fn feed(&mut self, mut chunk: &[u8], mut on_event: impl FnMut(FrameEvent)) {
        let total = chunk.len();
        while !chunk.is_empty() {
            if self.remaining > 0 {
                let take = chunk.len().min(self.remaining as usize);
                self.remaining -= take as u32;
                on_event(FrameEvent::Payload {
                    offset: total - chunk.len(),
                    len: take,
                    last: self.remaining == 0,
                });
                chunk = &chunk[take..];
                continue;
            }
            let need = 5 - self.prefix_len as usize;
            let take = chunk.len().min(need);
            self.prefix[self.prefix_len as usize..self.prefix_len as usize + take]
                .copy_from_slice(&chunk[..take]);
            self.prefix_len += take as u8;
            chunk = &chunk[take..];
            if self.prefix_len == 5 {
                self.prefix_len = 0;
                let header = MessageHeader {
                    compressed: self.prefix[0] & 1 == 1,
                    len: u32::from_be_bytes([
                        self.prefix[1],
                        self.prefix[2],
                        self.prefix[3],
                        self.prefix[4],
                    ]),
                };
                self.remaining = header.len;
                on_event(FrameEvent::Header(header));
            }
        }
    }

    /// True when no message is partly read: the stream may end here without truncation.
    pub fn is_at_boundary(&self) -> bool {
        self.prefix_len == 0 && self.remaining == 0
    }
}

/// Appends one message (its 5-byte prefix, then `payload`) to `out`.
///
/// ```
/// let mut out = bytes::BytesMut::new();
/// grpcproxy::frame::encode(false, b"hi", &mut out);
/// assert_eq!(&out[..], &[0, 0, 0, 0, 2, b'h', b'i']);
/// ```
pub fn encode(compressed: bool, payload: &[u8], out: &mut bytes::BytesMut) {
    out.reserve(5 + payload.len());
    out.extend_from_slice(&[u8::from(compressed)]);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
}

/// A whole body that does not split into messages: where it is cut.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SplitError {
    /// The body ends inside a 5-byte prefix.
    #[error("the body ends inside a message prefix ({0} bytes)")]
    InPrefix(usize),
    /// The body ends inside a message.
    #[error("the body ends inside a message ({have} of {len} bytes)")]
    InMessage {
        /// Payload bytes present.
        have: usize,
        /// The length the prefix announced.
        len: u32,
    },
}

/// Splits a whole body into its messages, each a slice of `body` (no copy).
///
/// ```
/// use grpcproxy::frame::{split, MessageHeader};
///
/// let body = bytes::Bytes::from_static(&[0, 0, 0, 0, 2, b'h', b'i', 1, 0, 0, 0, 0]);
/// let messages = split(body).unwrap();
/// assert_eq!(messages[0], (MessageHeader { compressed: false, len: 2 }, bytes::Bytes::from_static(b"hi")));
/// assert!(messages[1].0.compressed);
/// ```
pub fn split(mut body: bytes::Bytes) -> Result<Vec<(MessageHeader, bytes::Bytes)>, SplitError> {
    let mut messages = Vec::new();
    while !body.is_empty() {
        if body.len() < 5 {
            return Err(SplitError::InPrefix(body.len()));
        }
        let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]);
        let header = MessageHeader {
            compressed: body[0] & 1 == 1,
            len,
        };
        if body.len() - 5 < len as usize {
            return Err(SplitError::InMessage {
                have: body.len() - 5,
                len,
            });
        }
        let mut message = body.split_to(5 + len as usize);
        messages.push((header, message.split_off(5)));
    }
    Ok(messages)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(flag: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = bytes::BytesMut::new();
        encode(flag == 1, payload, &mut out);
        out.to_vec()
    }

    fn headers_and_payload(chunks: &[&[u8]]) -> (Vec<MessageHeader>, Vec<u8>) {
        let mut decoder = FrameDecoder::new();
        let mut headers = Vec::new();
        let mut payload = Vec::new();
        for chunk in chunks {
            decoder.feed(chunk, |event| match event {
                FrameEvent::Header(h) => headers.push(h),
                FrameEvent::Payload { offset, len, .. } => {
                    payload.extend_from_slice(&chunk[offset..offset + len])
                }
            });
        }
        (headers, payload)
    }

    #[test]
    fn every_split_point_yields_the_same_messages() {
        let mut wire = frame(0, b"hello");
        wire.extend(frame(1, b""));
        wire.extend(frame(0, b"world!"));
        for cut in 0..=wire.len() {
            let (a, b) = wire.split_at(cut);
            let (headers, payload) = headers_and_payload(&[a, b]);
            assert_eq!(
                headers,
                [
                    MessageHeader {
                        compressed: false,
                        len: 5
                    },
                    MessageHeader {
                        compressed: true,
                        len: 0
                    },
                    MessageHeader {
                        compressed: false,
                        len: 6
                    },
                ],
                "cut at {cut}"
            );
            assert_eq!(payload, b"helloworld!");
        }
    }

    #[test]
    fn byte_by_byte_feeding_tracks_boundaries() {
        let wire = frame(0, b"abc");
        let mut decoder = FrameDecoder::new();
        for (i, byte) in wire.iter().enumerate() {
            assert_eq!(decoder.is_at_boundary(), i == 0);
            decoder.feed(std::slice::from_ref(byte), |_| {});
        }
        assert!(decoder.is_at_boundary());
    }

    #[test]
    fn huge_length_is_reported_before_any_payload() {
        let (headers, payload) = headers_and_payload(&[&[0, 0xff, 0xff, 0xff, 0xff, 1, 2]]);
        assert_eq!(headers[0].len, u32::MAX);
        assert_eq!(payload, [1, 2]);
    }
}
