//! The bodies of a translated call: the request the service gets, and the response the
//! browser gets (trailers as the final length-prefixed frame; base64 in text mode).

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use base64::Engine;
use bytes::{BufMut, Bytes, BytesMut};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use pin_project_lite::pin_project;

/// The length of a frame's prefix: flag byte, then a 4-byte big-endian length.
const HEADER_LEN: usize = 5;

/// The flag byte of the frame that carries a gRPC-Web response's trailers.
const TRAILER_FLAG: u8 = 0x80;

pin_project! {
    /// The request body [`GrpcWeb`](super::GrpcWeb) hands its service: the client's
    /// body as it comes (gRPC and binary gRPC-Web), or a `grpc-web-text` body decoded
    /// from base64 in full before the call starts.
    ///
    /// ```
    /// use grpcproxy::web::WebRequestBody;
    ///
    /// fn takes_any_body<B: http_body::Body<Data = bytes::Bytes>>() {}
    /// takes_any_body::<WebRequestBody<grpcproxy::RecvBody>>();
    /// ```
    #[derive(Debug)]
    pub struct WebRequestBody<B> {
        #[pin]
        kind: RequestKind<B>,
    }
}

pin_project! {
    #[project = RequestKindProj]
    #[derive(Debug)]
    enum RequestKind<B> {
        Stream { #[pin] body: B },
        Decoded { #[pin] body: Full<Bytes> },
    }
}

impl<B> WebRequestBody<B> {
    pub(super) fn stream(body: B) -> Self {
        Self {
            kind: RequestKind::Stream { body },
        }
    }

    pub(super) fn decoded(bytes: Bytes) -> Self {
        Self {
            kind: RequestKind::Decoded {
                body: Full::new(bytes),
            },
        }
    }
}

impl<B: Body<Data = Bytes>> Body for WebRequestBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match self.project().kind.project() {
            RequestKindProj::Stream { body } => body.poll_frame(cx),
            RequestKindProj::Decoded { body } => {
                body.poll_frame(cx).map_err(|never| match never {})
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            RequestKind::Stream { body } => body.is_end_stream(),
            RequestKind::Decoded { body } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            RequestKind::Stream { body } => body.size_hint(),
            RequestKind::Decoded { body } => body.size_hint(),
        }
    }
}

pin_project! {
    /// The response body of [`GrpcWeb`](super::GrpcWeb): a gRPC call's body as is, or a
    /// gRPC-Web call's with its trailers as the final frame (flag `0x80`, then
    /// `name:value\r\n` lines) and, for `grpc-web-text`, base64 (bytes carried over so that
    /// padding comes only at the end); or the layer's own short answer.
    ///
    /// ```
    /// use grpcproxy::web::WebResponseBody;
    ///
    /// fn takes_any_body<B: http_body::Body<Data = bytes::Bytes>>() {}
    /// takes_any_body::<WebResponseBody<grpcproxy::ResponseBody>>();
    /// ```
    #[derive(Debug)]
    pub struct WebResponseBody<B> {
        #[pin]
        kind: ResponseKind<B>,
    }
}

pin_project! {
    #[project = ResponseKindProj]
    #[derive(Debug)]
    enum ResponseKind<B> {
        /// gRPC: every frame as it comes, trailers included.
        Native { #[pin] body: B },
        /// gRPC-Web: trailers become a frame; `text` base64-encodes.
        Web { #[pin] body: B, text: Option<Base64Carry>, ended: bool },
        /// An answer of the layer's own (a preflight, a refusal).
        Fixed { #[pin] body: Full<Bytes> },
    }
}

/// Up to two bytes waiting for a third, so that every base64 chunk but the last has no
/// padding (some clients decode a stream in 4-character groups).
#[derive(Debug, Default)]
pub(super) struct Base64Carry {
    bytes: [u8; 2],
    len: u8,
}

impl Base64Carry {
    /// `data` after the bytes carried, encoded up to a multiple of three bytes; the rest is
    /// carried. Padded, with nothing carried, when `last`.
    fn encode(&mut self, data: &[u8], last: bool) -> Bytes {
        let carried = usize::from(self.len);
        let total = carried + data.len();
        let take = if last { total } else { total - total % 3 };
        let mut joined = Vec::with_capacity(take);
        joined.extend_from_slice(&self.bytes[..carried.min(take)]);
        let from_data = take.saturating_sub(carried);
        joined.extend_from_slice(&data[..from_data]);
        // What is left: carried bytes not taken (only when `take` < `carried`), then data.
        let mut rest = [0u8; 2];
        let mut rest_len = 0;
        for &b in self.bytes[take.min(carried)..carried]
            .iter()
            .chain(&data[from_data..])
        {
            rest[rest_len] = b;
            rest_len += 1;
        }
        self.bytes = rest;
        self.len = rest_len as u8;
        Bytes::from(base64::engine::general_purpose::STANDARD.encode(joined))
    }
}

impl<B> WebResponseBody<B> {
    pub(super) fn native(body: B) -> Self {
        Self {
            kind: ResponseKind::Native { body },
        }
    }

    pub(super) fn web(body: B, text: bool) -> Self {
        Self {
            kind: ResponseKind::Web {
                body,
                text: text.then(Base64Carry::default),
                ended: false,
            },
        }
    }

    pub(super) fn fixed(bytes: Bytes) -> Self {
        Self {
            kind: ResponseKind::Fixed {
                body: Full::new(bytes),
            },
        }
    }
}

/// The frame that carries `trailers` in a gRPC-Web body.
pub(super) fn trailer_frame(trailers: &HeaderMap) -> Bytes {
    let block: usize = trailers
        .iter()
        .map(|(name, value)| name.as_str().len() + 1 + value.len() + 2)
        .sum();
    let mut frame = BytesMut::with_capacity(HEADER_LEN + block);
    frame.put_u8(TRAILER_FLAG);
    frame.put_u32(u32::try_from(block).unwrap_or(u32::MAX));
    for (name, value) in trailers {
        frame.put_slice(name.as_str().as_bytes());
        frame.put_u8(b':');
        frame.put_slice(value.as_bytes());
        frame.put_slice(b"\r\n");
    }
    frame.freeze()
}

impl<B> Body for WebResponseBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match self.project().kind.project() {
            ResponseKindProj::Native { body } => body.poll_frame(cx),
            ResponseKindProj::Fixed { body } => body.poll_frame(cx).map_err(|never| match never {}),
            ResponseKindProj::Web {
                mut body,
                text,
                ended,
            } => loop {
                if *ended {
                    return Poll::Ready(None);
                }
                let frame = match ready!(body.as_mut().poll_frame(cx)) {
                    Some(Ok(frame)) => frame,
                    Some(Err(e)) => {
                        *ended = true;
                        return Poll::Ready(Some(Err(e)));
                    }
                    None => {
                        *ended = true;
                        // Ended without trailers: flush what base64 still carries.
                        return Poll::Ready(match text {
                            Some(carry) if carry.len > 0 => {
                                Some(Ok(Frame::data(carry.encode(&[], true))))
                            }
                            _ => None,
                        });
                    }
                };
                let (data, last) = match frame.into_data() {
                    Ok(data) => (data, false),
                    Err(frame) => match frame.into_trailers() {
                        Ok(trailers) => {
                            *ended = true;
                            (trailer_frame(&trailers), true)
                        }
                        // A frame of a kind HTTP/1.1 cannot carry: skipped.
                        Err(_) => continue,
                    },
                };
                let data = match text {
                    Some(carry) => carry.encode(&data, last),
                    None => data,
                };
                if data.is_empty() && !last {
                    continue;
                }
                return Poll::Ready(Some(Ok(Frame::data(data))));
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            ResponseKind::Native { body } => body.is_end_stream(),
            ResponseKind::Web { body, text, ended } => {
                *ended || (body.is_end_stream() && text.as_ref().is_none_or(|c| c.len == 0))
            }
            ResponseKind::Fixed { body } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            ResponseKind::Native { body } => body.size_hint(),
            ResponseKind::Web { .. } => SizeHint::default(),
            ResponseKind::Fixed { body } => body.size_hint(),
        }
    }
}

/// Decodes a `grpc-web-text` request body: base64, possibly several padded pieces one
/// after another (some clients encode each message on its own). `None` if it is not.
pub(super) fn decode_text(encoded: &[u8]) -> Result<Bytes, base64::DecodeError> {
    let engine = &base64::engine::general_purpose::STANDARD;
    let mut decoded = Vec::with_capacity(encoded.len() / 4 * 3);
    let mut start = 0;
    // A piece ends after a quantum (4 characters) that holds padding.
    let mut at = 0;
    while at < encoded.len() {
        let end = (at + 4).min(encoded.len());
        if encoded[at..end].contains(&b'=') || end == encoded.len() {
            engine.decode_vec(&encoded[start..end], &mut decoded)?;
            start = end;
        }
        at = end;
    }
    Ok(Bytes::from(decoded))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};

    fn trailers() -> HeaderMap {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", "0".parse().unwrap());
        trailers.insert("grpc-message", "fine".parse().unwrap());
        trailers
    }

    async fn web_body(frames: Vec<Frame<Bytes>>, text: bool) -> Vec<Bytes> {
        let stream =
            futures_util::stream::iter(frames.into_iter().map(Ok::<_, std::convert::Infallible>));
        let mut body = WebResponseBody::web(StreamBody::new(stream), text);
        let mut out = Vec::new();
        while let Some(frame) = body.frame().await {
            out.push(frame.unwrap().into_data().unwrap());
        }
        assert!(body.is_end_stream());
        out
    }

    #[test]
    fn trailers_become_the_last_frame() {
        let frame = trailer_frame(&trailers());
        assert_eq!(
            &frame[..],
            b"\x80\x00\x00\x00\x22grpc-status:0\r\ngrpc-message:fine\r\n"
        );
    }

    #[tokio::test]
    async fn binary_passes_data_and_frames_the_trailers() {
        let message = Bytes::from_static(b"\x00\x00\x00\x00\x02hi");
        let out = web_body(
            vec![Frame::data(message.clone()), Frame::trailers(trailers())],
            false,
        )
        .await;
        assert_eq!(out, vec![message, trailer_frame(&trailers())]);
    }

    #[tokio::test]
    async fn text_pads_only_at_the_end_and_decodes_to_the_binary_body() {
        let chunks: Vec<Bytes> = ["\x00\x00\x00\x00\x05", "abcde", "\x00", "\x00\x00\x00\x01x"]
            .into_iter()
            .map(|s| Bytes::from_static(s.as_bytes()))
            .collect();
        let mut frames: Vec<_> = chunks.iter().cloned().map(Frame::data).collect();
        frames.push(Frame::trailers(trailers()));
        let out = web_body(frames, true).await;
        let (last, middle) = out.split_last().unwrap();
        for piece in middle {
            assert_eq!(piece.len() % 4, 0);
            assert!(!piece.contains(&b'='), "{piece:?}");
        }
        assert!(last.ends_with(b"="), "{last:?}");
        let joined: Vec<u8> = out.concat();
        let decoded = decode_text(&joined).unwrap();
        let mut expected: Vec<u8> = chunks.concat();
        expected.extend_from_slice(&trailer_frame(&trailers()));
        assert_eq!(decoded, expected);
    }

    #[test]
    fn text_requests_may_be_padded_pieces() {
        let engine = &base64::engine::general_purpose::STANDARD;
        let joined = format!("{}{}", engine.encode(b"ab"), engine.encode(b"cde"));
        assert_eq!(&decode_text(joined.as_bytes()).unwrap()[..], b"abcde");
        assert!(decode_text(b"not base64!").is_err());
        assert!(decode_text(b"YWJj=").is_err());
        assert_eq!(&decode_text(b"").unwrap()[..], b"");
    }
}
