//! The tap's wire format: the messages of `proto/tap.proto` (schema version 1), for
//! brokers and for consumers that decode what the tap published.
//!
//! ```
//! use grpcproxy::mq::wire;
//! use prost::Message;
//!
//! let bytes = wire::TapEvent { schema_version: 1, event: None }.encode_to_vec();
//! let decoded = wire::TapEvent::decode(bytes.as_slice()).unwrap();
//! assert_eq!(decoded.schema_version, wire::SCHEMA_VERSION);
//! ```
#![allow(missing_docs)] // documented in proto/tap.proto

use std::time::UNIX_EPOCH;

use super::{Direction as Dir, TapEvent as Event};

/// The schema version this build publishes.
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Clone, PartialEq, prost::Message)]
pub struct Metadata {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(bytes = "bytes", tag = "2")]
    pub value: bytes::Bytes,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct CallStarted {
    #[prost(uint64, tag = "1")]
    pub call_id: u64,
    #[prost(int64, tag = "2")]
    pub time_unix_nanos: i64,
    #[prost(string, tag = "3")]
    pub method: String,
    #[prost(string, tag = "4")]
    pub peer: String,
    #[prost(message, repeated, tag = "5")]
    pub metadata: Vec<Metadata>,
    #[prost(string, tag = "6")]
    pub backend: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum Direction {
    Unspecified = 0,
    Request = 1,
    Response = 2,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Message {
    #[prost(uint64, tag = "1")]
    pub call_id: u64,
    #[prost(enumeration = "Direction", tag = "2")]
    pub direction: i32,
    #[prost(uint64, tag = "3")]
    pub sequence: u64,
    #[prost(bool, tag = "4")]
    pub compressed: bool,
    #[prost(bytes = "bytes", tag = "5")]
    pub payload: bytes::Bytes,
    #[prost(uint32, tag = "6")]
    pub length: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct CallEnded {
    #[prost(uint64, tag = "1")]
    pub call_id: u64,
    #[prost(int32, tag = "2")]
    pub code: i32,
    #[prost(message, repeated, tag = "3")]
    pub trailers: Vec<Metadata>,
    #[prost(int64, tag = "4")]
    pub duration_nanos: i64,
    #[prost(uint64, tag = "5")]
    pub request_messages: u64,
    #[prost(uint64, tag = "6")]
    pub response_messages: u64,
    #[prost(uint64, tag = "7")]
    pub request_bytes: u64,
    #[prost(uint64, tag = "8")]
    pub response_bytes: u64,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Kind {
    #[prost(message, tag = "2")]
    Started(CallStarted),
    #[prost(message, tag = "3")]
    Message(Message),
    #[prost(message, tag = "4")]
    Ended(CallEnded),
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct TapEvent {
    #[prost(uint32, tag = "1")]
    pub schema_version: u32,
    #[prost(oneof = "Kind", tags = "2, 3, 4")]
    pub event: Option<Kind>,
}

fn metadata(headers: &http::HeaderMap) -> Vec<Metadata> {
    headers
        .iter()
        .map(|(k, v)| Metadata {
            key: k.as_str().to_owned(),
            value: bytes::Bytes::copy_from_slice(v.as_bytes()),
        })
        .collect()
}

impl From<&Event> for TapEvent {
    fn from(event: &Event) -> Self {
        let kind = match event {
            Event::Started(e) => Kind::Started(CallStarted {
                call_id: e.call_id,
                time_unix_nanos: e
                    .time
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as i64),
                method: e.method.clone(),
                peer: e.peer.map(|p| p.to_string()).unwrap_or_default(),
                metadata: metadata(&e.metadata),
                backend: e.backend.clone(),
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
        };
        TapEvent {
            schema_version: SCHEMA_VERSION,
            event: Some(kind),
        }
    }
}
