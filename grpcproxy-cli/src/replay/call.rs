//! Sending one recorded call again, byte for byte, and collecting what came back.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use grpcproxy::Upstream;
use http::{HeaderMap, HeaderName, HeaderValue};
use http_body_util::BodyExt;

use super::recording::{RecordedCall, RecordedMessage};

/// What the target answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Outcome {
    pub(crate) code: i32,
    /// `grpc-message` as sent (percent-encoded), empty if none.
    pub(crate) message: String,
    pub(crate) responses: Vec<RecordedMessage>,
}

/// Sends `call`'s recorded metadata and request messages (then half-closes) and reads the
/// whole response. Errors are transport failures, as text.
pub(crate) async fn replay(
    target: &Upstream,
    call: &RecordedCall,
    timeout: Duration,
) -> Result<Outcome, String> {
    let mut body = BytesMut::new();
    for message in &call.requests {
        grpcproxy::frame::encode(message.compressed, &message.payload, &mut body);
    }
    let mut request = http::Request::new(http_body_util::Full::new(body.freeze()));
    *request.headers_mut() = headers(call)?;
    let exchange = async {
        let response = target
            .send(&call.method, request)
            .await
            .map_err(|e| e.to_string())?;
        if let Some(code) = status(response.headers()) {
            return Ok(Outcome {
                code,
                message: text(response.headers(), "grpc-message"),
                responses: Vec::new(),
            });
        }
        let collected = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("reading the response: {e}"))?;
        let trailers = collected.trailers().cloned().unwrap_or_default();
        let responses = messages(collected.to_bytes())?;
        let code = status(&trailers).ok_or("the response ended without grpc-status")?;
        Ok(Outcome {
            code,
            message: text(&trailers, "grpc-message"),
            responses,
        })
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .unwrap_or_else(|_| Err(format!("no complete response within {timeout:?}")))
}

fn headers(call: &RecordedCall) -> Result<HeaderMap, String> {
    let mut headers = HeaderMap::with_capacity(call.metadata.len() + 2);
    for entry in &call.metadata {
        if entry.key.starts_with(':') {
            continue;
        }
        let name = HeaderName::from_bytes(entry.key.as_bytes())
            .map_err(|_| format!("recorded metadata key {:?} is not a header name", entry.key))?;
        let value = HeaderValue::from_maybe_shared(entry.value.clone())
            .map_err(|_| format!("recorded metadata {:?} has an invalid value", entry.key))?;
        headers.append(name, value);
    }
    // Connection-level headers were about the recording's hop, not the call.
    grpcproxy::headers::strip_hop_by_hop(&mut headers);
    headers.remove(http::header::CONTENT_LENGTH);
    headers
        .entry(http::header::CONTENT_TYPE)
        .or_insert(HeaderValue::from_static("application/grpc"));
    headers.insert(http::header::TE, HeaderValue::from_static("trailers"));
    Ok(headers)
}

fn status(headers: &HeaderMap) -> Option<i32> {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

fn text(headers: &HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default()
}

/// Splits a response body into its messages.
fn messages(body: Bytes) -> Result<Vec<RecordedMessage>, String> {
    let messages = grpcproxy::frame::split(body).map_err(|e| {
        e.to_string()
            .replacen("the body ends", "the response ends", 1)
    })?;
    Ok(messages
        .into_iter()
        .map(|(header, payload)| RecordedMessage {
            compressed: header.compressed,
            length: header.len,
            payload,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    #[test]
    fn bodies_split_into_messages() {
        let body = bytes::Bytes::from_static(&[0, 0, 0, 0, 2, b'h', b'i', 1, 0, 0, 0, 0]);
        let messages = super::messages(body).unwrap();
        assert_eq!(messages.len(), 2);
        assert_eq!(messages[0].payload, &b"hi"[..]);
        assert!(messages[1].compressed && messages[1].payload.is_empty());
        let cut = bytes::Bytes::from_static(&[0, 0, 0, 0, 9, b'h']);
        assert_eq!(
            super::messages(cut).unwrap_err(),
            "the response ends inside a message (1 of 9 bytes)"
        );
    }
}
