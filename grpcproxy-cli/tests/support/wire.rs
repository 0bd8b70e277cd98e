//! HTTP/2 spoken by hand, for peers no client library would be: frames, GOAWAY codes,
//! waiting for the proxy to hang up.

use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;

/// The client connection preface.
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// One HTTP/2 frame: 9-byte header and payload.
pub fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut frame = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    frame.extend_from_slice(&stream.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// The error code of the first GOAWAY frame in `bytes` (server frames, no preface).
pub fn goaway_code(mut bytes: &[u8]) -> Option<u32> {
    while bytes.len() >= 9 {
        let len =
            (usize::from(bytes[0]) << 16) | (usize::from(bytes[1]) << 8) | usize::from(bytes[2]);
        let (kind, payload) = (bytes[3], bytes.get(9..9 + len)?);
        if kind == 0x7 && payload.len() >= 8 {
            return Some(u32::from_be_bytes(payload[4..8].try_into().ok()?));
        }
        bytes = &bytes[9 + len..];
    }
    None
}

/// Reads until the proxy closes the connection (or `within` passes): what it sent, and
/// when it closed (None: still open).
pub async fn wait_for_close(
    tcp: &mut tokio::net::TcpStream,
    within: Duration,
) -> (Vec<u8>, Option<Duration>) {
    let (started, mut received) = (Instant::now(), Vec::new());
    let mut buffer = [0u8; 1024];
    loop {
        let left = within.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, tcp.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (received, Some(started.elapsed())),
            Ok(Ok(n)) => received.extend_from_slice(&buffer[..n]),
            Err(_) => return (received, None),
        }
    }
}

/// An HPACK header block of literal fields (no indexing, no Huffman): what a client that
/// writes its own frames sends.
pub fn literal_headers(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut block = Vec::new();
    for (name, value) in fields {
        block.push(0x00);
        push_string(&mut block, name.as_bytes());
        push_string(&mut block, value.as_bytes());
    }
    block
}

/// An HPACK string literal: a 7-bit-prefix length (RFC 7541 §5.1), then the bytes.
fn push_string(block: &mut Vec<u8>, bytes: &[u8]) {
    let mut len = bytes.len();
    if len < 127 {
        block.push(len as u8);
    } else {
        block.push(127);
        len -= 127;
        while len >= 128 {
            block.push((len % 128) as u8 | 0x80);
            len /= 128;
        }
        block.push(len as u8);
    }
    block.extend_from_slice(bytes);
}

/// The request headers of a gRPC call to `path`, plus `extra` fields.
pub fn grpc_request_headers(path: &str, extra: &[(&str, &str)]) -> Vec<u8> {
    let mut fields = vec![
        (":method", "POST"),
        (":scheme", "http"),
        (":path", path),
        (":authority", "localhost"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ];
    fields.extend_from_slice(extra);
    literal_headers(&fields)
}

/// One HTTP/2 frame as read off the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawFrame {
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
}

impl RawFrame {
    /// The error code of a RST_STREAM (0x3) or GOAWAY (0x7) frame.
    pub fn error_code(&self) -> Option<u32> {
        let at = match self.kind {
            0x3 => 0,
            0x7 => 4,
            _ => return None,
        };
        Some(u32::from_be_bytes(
            self.payload.get(at..at + 4)?.try_into().ok()?,
        ))
    }
}

/// Reads frames until one matches `stop` (returned), the connection closes or `within`
/// passes (`None`).
pub async fn read_until(
    tcp: &mut tokio::net::TcpStream,
    within: Duration,
    stop: impl Fn(&RawFrame) -> bool,
) -> Option<RawFrame> {
    let deadline = Instant::now() + within;
    let mut buffer = Vec::new();
    loop {
        while buffer.len() >= 9 {
            let len = (usize::from(buffer[0]) << 16)
                | (usize::from(buffer[1]) << 8)
                | usize::from(buffer[2]);
            if buffer.len() < 9 + len {
                break;
            }
            let frame = RawFrame {
                kind: buffer[3],
                flags: buffer[4],
                stream: u32::from_be_bytes(buffer[5..9].try_into().unwrap()) & 0x7fff_ffff,
                payload: buffer[9..9 + len].to_vec(),
            };
            buffer.drain(..9 + len);
            if stop(&frame) {
                return Some(frame);
            }
        }
        let mut chunk = [0u8; 16 * 1024];
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, tcp.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buffer.extend_from_slice(&chunk[..n]),
            _ => return None,
        }
    }
}

/// Opens a connection and sends the preface, an empty SETTINGS and `frames`.
pub async fn connect_and_send(
    addr: std::net::SocketAddr,
    frames: &[Vec<u8>],
) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(PREFACE).await.unwrap();
    tcp.write_all(&h2_frame(0x4, 0, 0, &[])).await.unwrap();
    for frame in frames {
        tcp.write_all(frame).await.unwrap();
    }
    tcp
}
