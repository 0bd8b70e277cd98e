//! Where and how the NATS tap publishes: the server, credentials, TLS, the stream and its
//! limits, the buffer.

use std::path::PathBuf;
use std::time::Duration;

use super::redact::redact_url;
use super::wire::Encoding;

/// Where and how a [`NatsQueue`] publishes.
///
/// ```
/// let options = grpcproxy::mq::NatsOptions {
///     stream: Some("GRPCPROXY".into()),
///     ..grpcproxy::mq::NatsOptions::new("nats://127.0.0.1:4222")
/// };
/// assert_eq!(options.subject_prefix, "grpcproxy.calls");
/// ```
#[derive(Clone)]
pub struct NatsOptions {
    /// The server, `nats://host:port` (or several, comma-separated; `tls://` for TLS).
    /// Credentials in it (`nats://user:password@host:port`, `nats://token@host:port`) are
    /// taken out before the NATS client sees the URL, and never logged.
    pub url: String,
    /// A token to authenticate with (wins over one in `url`).
    pub token: Option<String>,
    /// A NATS credentials file (user JWT and NKey seed) to authenticate with (wins over
    /// `token` and `url`).
    pub credentials_file: Option<std::path::PathBuf>,
    /// TLS towards the server; `None`: as the URL says (`tls://` needs the system roots
    /// to trust the server).
    pub tls: Option<NatsTls>,
    /// Events of `/pkg.Service/Method` go to `<prefix>.pkg.Service.Method`.
    pub subject_prefix: String,
    /// Create (or reuse) this JetStream stream over `<prefix>.>` at start.
    pub stream: Option<String>,
    /// Events held while the broker is slow or away; beyond, new events are dropped.
    pub capacity: usize,
    /// Payload bytes held in that buffer at most; beyond, new messages are dropped and
    /// counted (the events' count alone does not bound memory when messages are large).
    pub max_buffer_bytes: usize,
    /// Largest payload published per message, in bytes.
    pub max_payload: usize,
    /// Publish acknowledgements awaited at once (each is a pending event in memory).
    pub max_pending_acks: usize,
    /// Protobuf or JSON; each message also carries a `Content-Type` header saying which.
    pub encoding: Encoding,
    /// When the buffer is full: `None` drops and counts at once; `Some(bound)` makes the
    /// call wait up to `bound` for room before each frame it reads (see
    /// [`MessageQueue::max_wait`]).
    pub overflow_wait: Option<Duration>,
    /// How long an event is published again (with the same `Nats-Msg-Id`, so JetStream
    /// stores it once) until the broker acknowledges it; then it counts as failed. Keep it
    /// within the stream's duplicate window (2 minutes by default).
    pub publish_retry: Duration,
    /// Limits of the stream created over `<prefix>.>` (a stream that already exists keeps
    /// its own).
    pub stream_limits: StreamLimits,
    /// Stamped on every event (`TapEvent.instance`): which proxy process published it;
    /// replicas publishing to one stream each say who they are. Empty: not stamped.
    pub instance: String,
}

/// Limits of the JetStream stream the tap creates: past them, the oldest events go.
///
/// ```
/// let limits = grpcproxy::mq::StreamLimits::default();
/// assert_eq!(limits.max_bytes, 1 << 30);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamLimits {
    /// Bytes the stream holds at most (default 1 GiB).
    pub max_bytes: i64,
    /// How long an event is kept (default 24 hours).
    pub max_age: Duration,
    /// Where the stream lives: on disk (default) or in memory.
    pub storage: StreamStorage,
    /// Copies of each event the JetStream cluster keeps (1 to 5; default 1): with 3, the
    /// stream survives the loss of one node.
    pub replicas: usize,
}

impl Default for StreamLimits {
    fn default() -> Self {
        Self {
            max_bytes: 1 << 30,
            max_age: Duration::from_secs(24 * 3600),
            storage: StreamStorage::File,
            replicas: 1,
        }
    }
}

/// Where a JetStream stream keeps its messages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum StreamStorage {
    /// On the server's disk.
    #[default]
    File,
    /// In the server's memory.
    Memory,
}

impl NatsOptions {
    /// Defaults for a server at `url`.
    pub fn new(url: &str) -> Self {
        Self {
            url: url.to_owned(),
            token: None,
            credentials_file: None,
            tls: None,
            subject_prefix: "grpcproxy.calls".into(),
            stream: None,
            capacity: 8192,
            max_buffer_bytes: 64 << 20,
            max_payload: usize::MAX,
            max_pending_acks: 1024,
            encoding: Encoding::Protobuf,
            overflow_wait: None,
            publish_retry: Duration::from_secs(30),
            stream_limits: StreamLimits::default(),
            instance: String::new(),
        }
    }
}

impl std::fmt::Debug for NatsOptions {
    /// Secrets never show: the URL's password or token, and the token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsOptions")
            .field("url", &redact_url(&self.url))
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("credentials_file", &self.credentials_file)
            .field("tls", &self.tls)
            .field("subject_prefix", &self.subject_prefix)
            .field("stream", &self.stream)
            .field("capacity", &self.capacity)
            .field("max_buffer_bytes", &self.max_buffer_bytes)
            .field("max_payload", &self.max_payload)
            .field("max_pending_acks", &self.max_pending_acks)
            .field("encoding", &self.encoding)
            .field("overflow_wait", &self.overflow_wait)
            .field("publish_retry", &self.publish_retry)
            .field("stream_limits", &self.stream_limits)
            .finish()
    }
}

/// TLS towards the NATS server (`tls://` URLs need it too).
///
/// ```
/// let tls = grpcproxy::mq::NatsTls {
///     ca: Some("/etc/nats/ca.pem".into()),
///     ..Default::default()
/// };
/// assert!(tls.client_cert.is_none());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NatsTls {
    /// PEM CA bundle the server's certificate must chain to; default: the system's roots.
    pub ca: Option<PathBuf>,
    /// PEM client certificate, for servers that verify clients (with `client_key`).
    pub client_cert: Option<PathBuf>,
    /// PEM private key of `client_cert`.
    pub client_key: Option<PathBuf>,
}
