//! `grpc-trace-bin`: the OpenCensus binary trace context older gRPC stacks (grpc-java and
//! grpc-go with OpenCensus) send: version 0, then field 0 (16-byte trace id), field 1
//! (8-byte span id) and field 2 (1 byte of options, bit 0: sampled), base64 in metadata.

use base64::Engine;
use http::{HeaderMap, HeaderValue};
use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};

/// The metadata key.
pub(super) const KEY: &str = "grpc-trace-bin";

/// The span context in `headers`' `grpc-trace-bin`, if there is a valid one.
pub(super) fn extract(headers: &HeaderMap) -> Option<SpanContext> {
    let value = headers.get(KEY)?;
    let engine = &base64::engine::general_purpose::STANDARD_NO_PAD;
    let bytes = engine
        .decode(
            value
                .as_bytes()
                .strip_suffix(b"==")
                .or_else(|| value.as_bytes().strip_suffix(b"="))
                .unwrap_or(value.as_bytes()),
        )
        .ok()?;
    let (&version, mut rest) = bytes.split_first()?;
    if version != 0 {
        return None;
    }
    let (mut trace, mut span, mut options) = (None, None, 0u8);
    while let Some((&field, tail)) = rest.split_first() {
        match field {
            0 if tail.len() >= 16 => {
                trace = Some(TraceId::from_bytes(tail[..16].try_into().ok()?));
                rest = &tail[16..];
            }
            1 if tail.len() >= 8 => {
                span = Some(SpanId::from_bytes(tail[..8].try_into().ok()?));
                rest = &tail[8..];
            }
            2 if !tail.is_empty() => {
                options = tail[0];
                rest = &tail[1..];
            }
            // An unknown field ends what can be read (OpenCensus's rule).
            _ => break,
        }
    }
    let context = SpanContext::new(
        trace?,
        span?,
        TraceFlags::new(options & 1),
        true,
        TraceState::default(),
    );
    context.is_valid().then_some(context)
}

/// `context` as a `grpc-trace-bin` value.
pub(super) fn encode(context: &SpanContext) -> HeaderValue {
    let mut bytes = Vec::with_capacity(29);
    bytes.push(0);
    bytes.push(0);
    bytes.extend_from_slice(&context.trace_id().to_bytes());
    bytes.push(1);
    bytes.extend_from_slice(&context.span_id().to_bytes());
    bytes.push(2);
    bytes.push(u8::from(context.is_sampled()));
    let text = base64::engine::general_purpose::STANDARD_NO_PAD.encode(bytes);
    HeaderValue::try_from(text).expect("base64 is a header value")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_what_is_not_one() {
        let context = SpanContext::new(
            TraceId::from_hex("0af7651916cd43dd8448eb211c80319c").unwrap(),
            SpanId::from_hex("b7ad6b7169203331").unwrap(),
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        );
        let mut headers = HeaderMap::new();
        headers.insert(KEY, encode(&context));
        assert_eq!(extract(&headers), Some(context));
        for bad in [
            "AQ",
            "not base64!",
            "AAAAAAAAAAAAAAAAAAAAAAABAAAAAAAAAAACAQ",
            "",
        ] {
            headers.insert(KEY, HeaderValue::from_static(bad));
            assert_eq!(extract(&headers), None, "{bad}");
        }
    }
}
