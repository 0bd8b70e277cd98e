//! The tap's wire format: the messages of `proto/tap.proto` (schema version 1), for
//! brokers and for consumers that decode what the tap published, as protobuf or as its
//! proto3 JSON mapping ([`Encoding`]).
//!
//! ```
//! use grpcproxy::mq::wire;
//! use prost::Message;
//!
//! let bytes = wire::TapEvent { schema_version: 1, ..Default::default() }.encode_to_vec();
//! let decoded = wire::TapEvent::decode(bytes.as_slice()).unwrap();
//! assert_eq!(decoded.schema_version, wire::SCHEMA_VERSION);
//! ```
#![allow(missing_docs)] // documented in proto/tap.proto

use std::time::UNIX_EPOCH;

use serde::{Deserialize, Serialize};

use super::{Direction as Dir, TapEvent as Event};

mod json;

/// The schema version this build publishes.
pub const SCHEMA_VERSION: u32 = 1;

/// How events are encoded for a broker or a file.
///
/// ```
/// use grpcproxy::mq::wire::{Encoding, TapEvent, SCHEMA_VERSION};
///
/// let event = TapEvent { schema_version: SCHEMA_VERSION, ..Default::default() };
/// let json = Encoding::Json.encode(&event);
/// assert_eq!(json, br#"{"schemaVersion":1}"#);
/// assert_eq!(Encoding::detect(&json), Encoding::Json);
/// assert_eq!(Encoding::Json.decode(&json).unwrap(), event);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Encoding {
    /// Protobuf, as `proto/tap.proto` says.
    #[default]
    Protobuf,
    /// The proto3 JSON mapping of the same messages: lowerCamelCase names, 64-bit integers
    /// as strings, bytes as standard base64, enums by name. One object, no newlines.
    Json,
}

/// An event that could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Not a protobuf `TapEvent`.
    #[error("not a protobuf tap event: {0}")]
    Protobuf(#[from] prost::DecodeError),
    /// Not a JSON `TapEvent`.
    #[error("not a JSON tap event: {0}")]
    Json(#[from] serde_json::Error),
}

impl Encoding {
    /// Encodes one event.
    pub fn encode(self, event: &TapEvent) -> Vec<u8> {
        use prost::Message as _;
        match self {
            Encoding::Protobuf => event.encode_to_vec(),
            Encoding::Json => serde_json::to_vec(event).expect("tap events always serialize"),
        }
    }

    /// Decodes one event.
    pub fn decode(self, bytes: &[u8]) -> Result<TapEvent, DecodeError> {
        use prost::Message as _;
        Ok(match self {
            Encoding::Protobuf => TapEvent::decode(bytes)?,
            Encoding::Json => serde_json::from_slice(bytes)?,
        })
    }

    /// The encoding of an encoded event (or of a file of them): JSON starts with `{"`,
    /// a protobuf event never does (its first byte is a field tag, a length-delimited
    /// stream's first is a length followed by a tag).
    pub fn detect(bytes: &[u8]) -> Encoding {
        if bytes.starts_with(b"{\"") {
            Encoding::Json
        } else {
            Encoding::Protobuf
        }
    }

    /// The MIME type, for broker headers.
    pub fn content_type(self) -> &'static str {
        match self {
            Encoding::Protobuf => "application/x-protobuf",
            Encoding::Json => "application/json",
        }
    }
}

/// One metadata entry. In protobuf every value is in `value` (v1). In JSON, a value of a
/// key not ending in `-bin` is written as text, `{"key": "x-a", "text": "b"}`, and a
/// `-bin` value as bytes (base64 of the wire form), `{"key": "x-c-bin", "value": "QVA4"}`;
/// both forms are read back into `value`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Metadata {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(bytes = "bytes", tag = "2")]
    pub value: bytes::Bytes,
    /// The JSON encoding's field for a text value; empty in protobuf and once decoded.
    #[prost(string, tag = "3")]
    pub text: String,
}

#[derive(Clone, PartialEq, prost::Message, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct CallStarted {
    #[prost(uint64, tag = "1")]
    #[serde(with = "json::int64")]
    pub call_id: u64,
    #[prost(int64, tag = "2")]
    #[serde(with = "json::int64")]
    pub time_unix_nanos: i64,
    #[prost(string, tag = "3")]
    pub method: String,
    #[prost(string, tag = "4")]
    pub peer: String,
    #[prost(message, repeated, tag = "5")]
    pub metadata: Vec<Metadata>,
    #[prost(string, tag = "6")]
    pub backend: String,
    /// The call's W3C trace id (32 hex digits), from the `traceparent` as forwarded;
    /// empty when the call carried none.
    #[prost(string, tag = "7")]
    pub trace_id: String,
    /// The `traceparent`'s parent id as forwarded (16 hex digits): the proxy's span when
    /// it traces the call, else the caller's.
    #[prost(string, tag = "8")]
    pub span_id: String,
}

/// The trace id and parent id of the `traceparent` in `metadata`, if it is well formed
/// (`00-<32 hex>-<16 hex>-<2 hex>`); empty strings otherwise.
fn trace_ids(metadata: &http::HeaderMap) -> (String, String) {
    let parsed = metadata
        .get("traceparent")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| {
            let mut parts = value.split('-');
            let (_version, trace, span, _flags) =
                (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
            let hex =
                |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit());
            (hex(trace, 32) && hex(span, 16)).then(|| (trace.to_owned(), span.to_owned()))
        });
    parsed.unwrap_or_default()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum Direction {
    Unspecified = 0,
    Request = 1,
    Response = 2,
}

#[derive(Clone, PartialEq, prost::Message, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Message {
    #[prost(uint64, tag = "1")]
    #[serde(with = "json::int64")]
    pub call_id: u64,
    #[prost(enumeration = "Direction", tag = "2")]
    #[serde(with = "json::direction")]
    pub direction: i32,
    #[prost(uint64, tag = "3")]
    #[serde(with = "json::int64")]
    pub sequence: u64,
    #[prost(bool, tag = "4")]
    pub compressed: bool,
    #[prost(bytes = "bytes", tag = "5")]
    #[serde(with = "json::base64")]
    pub payload: bytes::Bytes,
    #[prost(uint32, tag = "6")]
    pub length: u32,
}

#[derive(Clone, PartialEq, prost::Message, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct CallEnded {
    #[prost(uint64, tag = "1")]
    #[serde(with = "json::int64")]
    pub call_id: u64,
    #[prost(int32, tag = "2")]
    pub code: i32,
    #[prost(message, repeated, tag = "3")]
    pub trailers: Vec<Metadata>,
    #[prost(int64, tag = "4")]
    #[serde(with = "json::int64")]
    pub duration_nanos: i64,
    #[prost(uint64, tag = "5")]
    #[serde(with = "json::int64")]
    pub request_messages: u64,
    #[prost(uint64, tag = "6")]
    #[serde(with = "json::int64")]
    pub response_messages: u64,
    #[prost(uint64, tag = "7")]
    #[serde(with = "json::int64")]
    pub request_bytes: u64,
    #[prost(uint64, tag = "8")]
    #[serde(with = "json::int64")]
    pub response_bytes: u64,
}

#[derive(Clone, PartialEq, prost::Message, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct MirrorResult {
    #[prost(uint64, tag = "1")]
    #[serde(with = "json::int64")]
    pub call_id: u64,
    #[prost(string, tag = "2")]
    pub method: String,
    #[prost(string, tag = "3")]
    pub backend: String,
    #[prost(string, tag = "4")]
    pub result: String,
    #[prost(string, repeated, tag = "5")]
    pub differences: Vec<String>,
    #[prost(int64, tag = "6")]
    #[serde(with = "json::int64")]
    pub first_differing_byte: i64,
}

/// The event a `TapEvent` carries. Kinds are added over time (`mirror` was): match
/// with a wildcard arm.
#[derive(Clone, PartialEq, prost::Oneof)]
#[non_exhaustive]
pub enum Kind {
    #[prost(message, tag = "2")]
    Started(CallStarted),
    #[prost(message, tag = "3")]
    Message(Message),
    #[prost(message, tag = "4")]
    Ended(CallEnded),
    #[prost(message, tag = "5")]
    Mirror(MirrorResult),
}

#[derive(Clone, PartialEq, prost::Message, Serialize, Deserialize)]
#[serde(into = "json::Event", try_from = "json::Event")]
pub struct TapEvent {
    #[prost(uint32, tag = "1")]
    pub schema_version: u32,
    #[prost(string, tag = "6")]
    pub instance: String,
    #[prost(oneof = "Kind", tags = "2, 3, 4, 5")]
    pub event: Option<Kind>,
}

fn metadata(headers: &http::HeaderMap) -> Vec<Metadata> {
    headers
        .iter()
        .map(|(k, v)| Metadata {
            key: k.as_str().to_owned(),
            value: bytes::Bytes::copy_from_slice(v.as_bytes()),
            text: String::new(),
        })
        .collect()
}

impl From<&Event> for TapEvent {
    fn from(event: &Event) -> Self {
        let kind = match event {
            Event::Started(e) => Kind::Started({
                let (trace_id, span_id) = trace_ids(&e.metadata);
                CallStarted {
                    call_id: e.call_id,
                    time_unix_nanos: e
                        .time
                        .duration_since(UNIX_EPOCH)
                        .map_or(0, |d| d.as_nanos() as i64),
                    method: e.method.clone(),
                    peer: e.peer.map(|p| p.to_string()).unwrap_or_default(),
                    metadata: metadata(&e.metadata),
                    backend: e.backend.clone(),
                    trace_id,
                    span_id,
                }
            }),
            Event::Message(m) => Kind::Message(Message {
                call_id: m.call_id,
                direction: match m.direction {
                    Dir::Request => Direction::Request,
                    Dir::Response => Direction::Response,
                } as i32,
                sequence: m.sequence,
                compressed: m.compressed,
                payload: m.payload.clone(),
                length: m.length,
            }),
            Event::Ended(e) => Kind::Ended(CallEnded {
                call_id: e.call_id,
                code: e.code as i32,
                trailers: e.trailers.as_ref().map(metadata).unwrap_or_default(),
                duration_nanos: e.duration.as_nanos() as i64,
                request_messages: e.request_messages,
                response_messages: e.response_messages,
                request_bytes: e.request_bytes,
                response_bytes: e.response_bytes,
            }),
            Event::Mirror(m) => Kind::Mirror(MirrorResult {
                call_id: m.call_id,
                method: m.method.clone(),
                backend: m.backend.clone(),
                result: m.result.name().to_owned(),
                differences: m.differences.clone(),
                first_differing_byte: m.first_differing_byte.map_or(-1, |b| b as i64),
            }),
        };
        TapEvent {
            schema_version: SCHEMA_VERSION,
            instance: String::new(),
            event: Some(kind),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::trace_ids;

    fn with(traceparent: &str) -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        headers.insert("traceparent", traceparent.parse().unwrap());
        headers
    }

    #[test]
    fn trace_ids_come_from_a_well_formed_traceparent_only() {
        let good = with("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
        assert_eq!(
            trace_ids(&good),
            (
                "0af7651916cd43dd8448eb211c80319c".to_owned(),
                "b7ad6b7169203331".to_owned()
            )
        );
        for bad in [
            "00-xyz-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c",
            "garbage",
        ] {
            assert_eq!(trace_ids(&with(bad)), Default::default(), "{bad}");
        }
        assert_eq!(trace_ids(&http::HeaderMap::new()), Default::default());
    }
}
