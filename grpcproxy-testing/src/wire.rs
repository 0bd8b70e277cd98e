//! HTTP/2 spoken by hand, for peers no client library would be: frames, GOAWAY codes,
//! waiting for the proxy to hang up, and a backend that records the exact frames it gets.

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
    /// The frame type (0x0 DATA, 0x1 HEADERS, 0x3 RST_STREAM, 0x4 SETTINGS, …).
    pub kind: u8,
    /// The flags byte (0x1 END_STREAM on DATA and HEADERS, 0x4 END_HEADERS).
    pub flags: u8,
    /// The stream identifier (0 for the connection).
    pub stream: u32,
    /// The payload, after the 9-byte header.
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
        while let Some(frame) = take_frame(&mut buffer) {
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

/// Splits the first whole frame off `buffer`, if it holds one.
fn take_frame(buffer: &mut Vec<u8>) -> Option<RawFrame> {
    if buffer.len() < 9 {
        return None;
    }
    let len =
        (usize::from(buffer[0]) << 16) | (usize::from(buffer[1]) << 8) | usize::from(buffer[2]);
    if buffer.len() < 9 + len {
        return None;
    }
    let frame = RawFrame {
        kind: buffer[3],
        flags: buffer[4],
        stream: u32::from_be_bytes([buffer[5], buffer[6], buffer[7], buffer[8]]) & 0x7fff_ffff,
        payload: buffer[9..9 + len].to_vec(),
    };
    buffer.drain(..9 + len);
    Some(frame)
}

/// A backend that speaks HTTP/2 by hand and records every frame its clients send on
/// request streams, in order. Each request stream is answered, once the client has ended
/// it (END_STREAM on HEADERS or DATA), with a trailers-only `grpc-status: 0`; a stream
/// left open stays unanswered, as a grpc-go server leaves a call whose request never
/// ended. For asserting the exact frame sequence a proxy sends a backend.
///
/// ```no_run
/// # async fn example() {
/// let backend = grpcproxy_testing::wire::FrameRecorder::start().await;
/// // … send a call through a proxy to `backend.addr()` …
/// let frames = backend.frames();
/// assert_eq!(frames[0].kind, 0x1); // HEADERS first
/// # }
/// ```
#[derive(Debug)]
pub struct FrameRecorder {
    addr: std::net::SocketAddr,
    frames: std::sync::Arc<std::sync::Mutex<Vec<RawFrame>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl FrameRecorder {
    /// Listens on `127.0.0.1:0` and serves every connection until dropped.
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let frames = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let recorded = frames.clone();
        let accept = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((tcp, _)) = listener.accept().await {
                connections.spawn(Self::serve(tcp, recorded.clone()));
            }
        });
        Self {
            addr,
            frames,
            accept,
        }
    }

    /// Where it listens.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.addr
    }

    /// The frames received so far on request streams (stream id other than 0), in order.
    pub fn frames(&self) -> Vec<RawFrame> {
        self.frames.lock().unwrap().clone()
    }

    async fn serve(
        mut tcp: tokio::net::TcpStream,
        frames: std::sync::Arc<std::sync::Mutex<Vec<RawFrame>>>,
    ) {
        use tokio::io::AsyncWriteExt;
        let mut preface = [0u8; 24];
        if tcp.read_exact(&mut preface).await.is_err() || preface != PREFACE {
            return;
        }
        if tcp.write_all(&h2_frame(0x4, 0, 0, &[])).await.is_err() {
            return;
        }
        let mut buffer = Vec::new();
        let mut chunk = [0u8; 16 * 1024];
        loop {
            while let Some(frame) = take_frame(&mut buffer) {
                let reply = match (frame.kind, frame.stream) {
                    (0x4, 0) if frame.flags & 0x1 == 0 => Some(h2_frame(0x4, 0x1, 0, &[])),
                    (0x6, 0) if frame.flags & 0x1 == 0 => {
                        Some(h2_frame(0x6, 0x1, 0, &frame.payload))
                    }
                    (0x0 | 0x1, stream) if stream != 0 && frame.flags & 0x1 != 0 => {
                        let head = literal_headers(&[
                            (":status", "200"),
                            ("content-type", "application/grpc"),
                            ("grpc-status", "0"),
                        ]);
                        Some(h2_frame(0x1, 0x5, stream, &head))
                    }
                    _ => None,
                };
                if frame.stream != 0 {
                    frames.lock().unwrap().push(frame);
                }
                if let Some(reply) = reply {
                    if tcp.write_all(&reply).await.is_err() {
                        return;
                    }
                }
            }
            match tcp.read(&mut chunk).await {
                Ok(n) if n > 0 => buffer.extend_from_slice(&chunk[..n]),
                _ => return,
            }
        }
    }
}

impl Drop for FrameRecorder {
    fn drop(&mut self) {
        self.accept.abort();
    }
}
