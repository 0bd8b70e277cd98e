//! What the tap publishes: one event when a call starts, one per message, one at the end.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::HeaderMap;
use tonic::Code;

/// Which way a message travelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the client to the backend.
    Request,
    /// From the backend to the client.
    Response,
}

/// A call began: published once the director chose its backend.
#[derive(Debug, Clone)]
pub struct CallStarted {
    /// Unique for the life of the proxy.
    pub call_id: u64,
    /// When the call arrived.
    pub time: SystemTime,
    /// `/pkg.Service/Method`.
    pub method: String,
    /// The client's address.
    pub peer: Option<SocketAddr>,
    /// The request metadata as forwarded (ASCII and `-bin` entries, as on the wire).
    pub metadata: HeaderMap,
    /// The backend it went to.
    pub backend: String,
}

/// One gRPC message, cut from the forwarded DATA frames.
#[derive(Debug, Clone)]
pub struct TapMessage {
    /// The call it belongs to.
    pub call_id: u64,
    /// Which way it went.
    pub direction: Direction,
    /// 0, 1, 2… per direction.
    pub sequence: u64,
    /// The message's compressed flag (its payload is then compressed as `grpc-encoding` says).
    pub compressed: bool,
    /// The payload, possibly cut at the queue's payload limit.
    pub payload: Bytes,
    /// The payload's full length on the wire.
    pub length: u32,
}

/// A call ended (both directions are over).
#[derive(Debug, Clone)]
pub struct CallEnded {
    /// The call.
    pub call_id: u64,
    /// The status the client got.
    pub code: Code,
    /// The trailers the backend sent, when it sent any (trailers-only responses: their headers).
    pub trailers: Option<HeaderMap>,
    /// From arrival to the end of both directions.
    pub duration: Duration,
    /// Messages and payload bytes from the client.
    pub request_messages: u64,
    /// Messages from the backend.
    pub response_messages: u64,
    /// DATA bytes from the client.
    pub request_bytes: u64,
    /// DATA bytes to the client.
    pub response_bytes: u64,
}

/// What a mirrored call came to (published when the mirror is over, possibly after the
/// call's [`CallEnded`]).
#[derive(Debug, Clone)]
pub struct MirrorReport {
    /// The primary call.
    pub call_id: u64,
    /// `/pkg.Service/Method`.
    pub method: String,
    /// The shadow it went to.
    pub backend: String,
    /// What it came to.
    pub result: crate::policy::MirrorResult,
    /// With [`MirrorResult::Differ`](crate::policy::MirrorResult::Differ): each
    /// difference, in words.
    pub differences: Vec<String>,
    /// With a differing message byte: its offset in the first differing message.
    pub first_differing_byte: Option<u64>,
}

/// An event of the tap. Kinds are added over time ([`TapEvent::Mirror`] was): match with
/// a wildcard arm.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum TapEvent {
    /// See [`CallStarted`].
    Started(CallStarted),
    /// See [`TapMessage`].
    Message(TapMessage),
    /// See [`CallEnded`].
    Ended(CallEnded),
    /// See [`MirrorReport`].
    Mirror(MirrorReport),
}

impl TapEvent {
    /// The call the event belongs to.
    pub fn call_id(&self) -> u64 {
        match self {
            TapEvent::Started(e) => e.call_id,
            TapEvent::Message(e) => e.call_id,
            TapEvent::Ended(e) => e.call_id,
            TapEvent::Mirror(e) => e.call_id,
        }
    }
}
