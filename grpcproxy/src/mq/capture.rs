//! Cutting whole gRPC messages out of DATA chunks, whatever the chunk boundaries.

use bytes::{Bytes, BytesMut};

use crate::frame::{FrameDecoder, FrameEvent, MessageHeader};

/// Assembles messages from chunks: a message inside one chunk is a zero-copy slice of it
/// (a copy when it is cut short);
/// one split across chunks is copied together, up to `keep` bytes (the rest is counted,
/// not kept).
#[derive(Debug)]
pub(crate) struct MessageCapture {
    decoder: FrameDecoder,
    current: Option<(MessageHeader, BytesMut)>,
    keep: usize,
}

/// A message cut from the stream: its prefix, and its payload up to the capture limit.
#[derive(Debug)]
pub(crate) struct Captured {
    pub(crate) header: MessageHeader,
    pub(crate) payload: Bytes,
}

impl MessageCapture {
    pub(crate) fn new(keep: usize) -> Self {
        Self {
            decoder: FrameDecoder::new(),
            current: None,
            keep,
        }
    }

    /// Feeds one chunk; calls `done` for every message it completes.
    pub(crate) fn feed(&mut self, chunk: &Bytes, mut done: impl FnMut(Captured)) {
        let keep = self.keep;
        let current = &mut self.current;
        self.decoder.feed(chunk, |event| match event {
            FrameEvent::Header(header) => {
                if header.len == 0 {
                    done(Captured {
                        header,
                        payload: Bytes::new(),
                    });
                } else {
                    *current = Some((header, BytesMut::new()));
                }
            }
            FrameEvent::Payload { offset, len, last } => {
                let Some((header, buffer)) = current.as_mut() else {
                    return;
                };
                let room = keep.saturating_sub(buffer.len());
                let take = len.min(room);
                if last && buffer.is_empty() {
                    // The whole (kept part of the) message is in this chunk: no copy, unless
                    // the message was cut short. A slice holds on to the whole buffer the
                    // chunk came in, while the tap's byte bound counts only the slice: a
                    // few bytes kept of each large message would hold every buffer.
                    let kept = offset..offset + take;
                    let payload = if take < len {
                        Bytes::copy_from_slice(&chunk[kept])
                    } else {
                        chunk.slice(kept)
                    };
                    let header = *header;
                    *current = None;
                    done(Captured { header, payload });
                    return;
                }
                buffer.extend_from_slice(&chunk[offset..offset + take]);
                if last {
                    let (header, buffer) = current.take().expect("checked above");
                    done(Captured {
                        header,
                        payload: exact(buffer),
                    });
                }
            }
        });
    }
}

/// The assembled payload, in an allocation of about its size. The buffer grew by
/// doubling while the message's pieces arrived (a message one byte over 1 MiB ends in a 2
/// MiB allocation); queued for the tap, that slack would be allocated on top of what the
/// tap's byte bound counts. Copied once when the slack is over a quarter.
fn exact(buffer: BytesMut) -> Bytes {
    if buffer.capacity() - buffer.len() > buffer.len() / 4 {
        Bytes::copy_from_slice(&buffer)
    } else {
        buffer.freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut out = bytes::BytesMut::new();
        crate::frame::encode(false, payload, &mut out);
        out.to_vec()
    }

    #[test]
    fn a_message_assembled_from_pieces_holds_about_its_own_size() {
        let payload = vec![7u8; (1 << 20) + 4];
        let wire = frame(&payload);
        let mut capture = MessageCapture::new(usize::MAX);
        let mut got = Vec::new();
        for piece in wire.chunks(16 << 10) {
            capture.feed(&Bytes::copy_from_slice(piece), |m| got.push(m.payload));
        }
        assert_eq!(got.len(), 1);
        assert_eq!(got[0], payload);
        let held = got.pop().unwrap().try_into_mut().unwrap().capacity();
        assert!(
            held <= payload.len() * 5 / 4,
            "{held} bytes held for {}",
            payload.len()
        );
    }

    #[test]
    fn a_payload_cut_short_holds_its_own_bytes_not_the_chunk() {
        let wire = frame(&[9u8; 8192]);
        let chunk = Bytes::from(wire);
        let mut capture = MessageCapture::new(16);
        let mut got = Vec::new();
        capture.feed(&chunk, |m| got.push(m.payload));
        assert_eq!(got, [&[9u8; 16][..]]);
        let kept = got.pop().unwrap().try_into_mut();
        assert!(kept.is_ok(), "the 16 bytes kept share the 8 KiB chunk");
        assert!(kept.unwrap().capacity() < 1024);
        // A message kept whole is still a zero-copy slice of its chunk.
        let mut whole = MessageCapture::new(usize::MAX);
        whole.feed(&chunk, |m| got.push(m.payload));
        assert_eq!(got[0].len(), 8192);
        assert_eq!(got[0].as_ptr(), chunk[5..].as_ptr());
    }

    #[test]
    fn messages_are_cut_exactly_at_every_split() {
        let mut wire = frame(b"first message");
        wire.extend(frame(b""));
        wire.extend(frame(b"second"));
        for cut in 0..=wire.len() {
            let mut capture = MessageCapture::new(usize::MAX);
            let mut got = Vec::new();
            for chunk in [&wire[..cut], &wire[cut..]] {
                capture.feed(&Bytes::copy_from_slice(chunk), |m| got.push(m.payload));
            }
            assert_eq!(got, [&b"first message"[..], b"", b"second"], "cut at {cut}");
        }
    }

    #[test]
    fn payloads_are_cut_at_the_limit_but_messages_still_end() {
        let mut wire = frame(b"0123456789");
        wire.extend(frame(b"abcdef"));
        for cut in 0..=wire.len() {
            let mut capture = MessageCapture::new(4);
            let mut got = Vec::new();
            for chunk in [&wire[..cut], &wire[cut..]] {
                capture.feed(&Bytes::copy_from_slice(chunk), |m| {
                    got.push((m.header.len, m.payload))
                });
            }
            assert_eq!(
                got,
                [
                    (10, Bytes::from_static(b"0123")),
                    (6, Bytes::from_static(b"abcd"))
                ],
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn a_message_in_one_chunk_is_not_copied() {
        let chunk = Bytes::from(frame(b"zero copy"));
        let mut capture = MessageCapture::new(usize::MAX);
        let mut got = None;
        capture.feed(&chunk, |m| got = Some(m.payload));
        let payload = got.unwrap();
        assert_eq!(
            payload.as_ptr(),
            chunk[5..].as_ptr(),
            "a slice of the chunk itself"
        );
    }
}
