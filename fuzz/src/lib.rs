//! What the fuzz targets check, as plain functions: the targets call them with fuzzer
//! input, and `tests/seeds.rs` runs them over the seed corpus with `cargo test`.
//!
//! Each function panics when an invariant breaks; returning means the input was handled.

use grpcproxy::frame::{FrameDecoder, FrameEvent, MessageHeader};
use http::header::{HeaderMap, HeaderName, HeaderValue};

use grpcproxy_cli::config;

/// Everything a decoder reported over a whole stream.
#[derive(Debug, Default, PartialEq, Eq)]
struct Decoded {
    headers: Vec<MessageHeader>,
    payload: Vec<u8>,
    completed: usize,
    at_boundary: bool,
}

fn decode<'a>(chunks: impl IntoIterator<Item = &'a [u8]>) -> Decoded {
    let mut decoder = FrameDecoder::new();
    let mut decoded = Decoded::default();
    for chunk in chunks {
        decoder.feed(chunk, |event| match event {
            FrameEvent::Header(header) => decoded.headers.push(header),
            FrameEvent::Payload { offset, len, last } => {
                assert!(len > 0, "empty payload run");
                decoded
                    .payload
                    .extend_from_slice(&chunk[offset..offset + len]);
                decoded.completed += usize::from(last);
            }
        });
    }
    decoded.at_boundary = decoder.is_at_boundary();
    decoded
}

/// The frame decoder reports the same messages however the stream is cut into chunks,
/// and its payload runs are exactly the bytes after each 5-byte prefix.
///
/// The first byte of `data` picks the cut points, the rest is the stream.
pub fn frame_decoder(data: &[u8]) {
    let Some((&seed, wire)) = data.split_first() else {
        return;
    };
    let whole = decode([wire]);
    // Cut every `step` bytes (1 to 16), and at every byte.
    let step = usize::from(seed % 16) + 1;
    assert_eq!(decode(wire.chunks(step)), whole, "cut every {step} bytes");
    assert_eq!(decode(wire.chunks(1)), whole, "fed byte by byte");

    // Against a straightforward reading of the wire format.
    let (mut rest, mut expected) = (wire, Decoded::default());
    expected.at_boundary = loop {
        if rest.is_empty() {
            break true;
        }
        if rest.len() < 5 {
            break false; // a partial prefix
        }
        let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
        expected.headers.push(MessageHeader {
            compressed: rest[0] & 1 == 1,
            len: len as u32,
        });
        let body = &rest[5..];
        let take = body.len().min(len);
        expected.payload.extend_from_slice(&body[..take]);
        // Messages with a payload end with a `last` run; empty ones have no run at all.
        expected.completed += usize::from(take == len && len > 0);
        rest = &body[take..];
        if take < len {
            break false; // a partial payload
        }
    };
    assert_eq!(whole, expected);
}

/// Parsing any text as a configuration gives a configuration or an error naming a line and
/// column inside the text; it never panics.
pub fn config_parser(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match config::parse(std::path::Path::new("fuzz.toml"), text) {
        Ok(config) => {
            // What `/config` shows must render too.
            let _ = config.redacted_toml();
        }
        Err(error) => {
            let message = error.to_string();
            let lines = text.matches('\n').count() + 1;
            let errors = match error {
                config::ConfigError::Several(errors) => errors,
                error => vec![error],
            };
            for error in errors {
                if let config::ConfigError::Invalid { line, column, .. } = error {
                    assert!(
                        line >= 1 && line <= lines,
                        "line {line} of {lines}: {message}"
                    );
                    assert!(column >= 1, "{message}");
                }
            }
        }
    }
}

/// Hop-by-hop headers never survive the filter, `te` only as `trailers`, and every other
/// header survives with its values in order.
///
/// `data` is a list of `name\0value\0` pairs; pairs that are not valid HTTP are skipped,
/// as hyper would refuse them before the filter.
pub fn header_filter(data: &[u8]) {
    let mut headers = HeaderMap::new();
    let mut fields = data.split(|&b| b == 0);
    while let (Some(name), Some(value)) = (fields.next(), fields.next()) {
        if let (Ok(name), Ok(value)) =
            (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
        {
            headers.append(name, value);
        }
    }
    let before = headers.clone();
    let named: Vec<HeaderName> = before
        .get_all(http::header::CONNECTION)
        .iter()
        .take(1)
        .flat_map(|v| v.to_str().unwrap_or_default().split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    let mut after = headers;
    grpcproxy::headers::strip_hop_by_hop(&mut after);

    const HOP: [&str; 6] = [
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "upgrade",
        "host",
    ];
    for name in after.keys() {
        assert!(!HOP.contains(&name.as_str()), "{name} was forwarded");
        assert!(before.contains_key(name), "{name} appeared from nowhere");
        let kept: Vec<_> = after.get_all(name).iter().collect();
        let original: Vec<_> = before.get_all(name).iter().collect();
        assert_eq!(kept, original, "{name} changed");
    }
    for value in after.get_all(http::header::TE) {
        assert!(
            value.as_bytes().eq_ignore_ascii_case(b"trailers"),
            "te: {value:?}"
        );
    }
    for name in before.keys() {
        let dropped = HOP.contains(&name.as_str())
            || (named.contains(name) && name != http::header::TE)
            || name == http::header::TE;
        if !dropped {
            assert!(after.contains_key(name), "{name} was dropped");
        }
    }
    // The value checks the proxy relies on never panic either.
    for value in before.values() {
        let _ = grpcproxy::headers::is_grpc_content_type(value);
        if let Ok(timeout) = grpcproxy::deadline::parse_timeout(value) {
            let again =
                grpcproxy::deadline::parse_timeout(&grpcproxy::deadline::format_timeout(timeout))
                    .expect("a formatted timeout parses");
            assert!(again >= timeout, "{value:?}: {timeout:?} -> {again:?}");
        }
    }
}
