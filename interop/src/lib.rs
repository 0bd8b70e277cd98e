//! grpcproxy's interop suite: clients and backends of three gRPC implementations (Python
//! `grpcio`, Node `@grpc/grpc-js` and Rust tonic) talking through the proxy.
//!
//! Every backend implements `interop.v1.Interop` (`proto/interop.proto`) exactly alike,
//! plus `grpc.health.v1` and server reflection; every client runs the same [`CHECKS`]
//! against a list of targets and reports one [`CheckResult`] per check. The grpcio and
//! grpc-js peers are the scripts in `python/` and `node/`, run as child processes
//! ([`peers`]); the tonic ones live here ([`backend`], [`client`]). [`matrix`] judges the
//! results and prints the table; [`library_proxy`] is the library fallback under test.

pub mod backend;
pub mod client;
pub mod matrix;
pub mod peers;
mod proxy;

pub use proxy::{library_proxy, LibraryProxy};

/// The generated code of `proto/interop.proto` and `google/rpc/status.proto`.
#[allow(
    missing_docs,
    unreachable_pub,
    missing_debug_implementations,
    clippy::all
)]
pub mod pb {
    tonic::include_proto!("interop.v1");

    /// `google.rpc`: the message carried in `grpc-status-details-bin`.
    pub mod rpc {
        tonic::include_proto!("google.rpc");
    }
}

/// The encoded descriptors of the interop protos, for the reflection service.
pub const DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/interop_descriptor.bin"));

/// The largest message every interop peer accepts (the suite sends 8 MiB ones).
pub const MAX_MESSAGE: usize = 16 << 20;

/// The checks every client runs against every target, in table order.
pub const CHECKS: [&str; 16] = [
    "unary",
    "client_stream",
    "server_stream",
    "bidi",
    "empty_client_stream",
    "empty_bidi",
    "metadata",
    "status",
    "large_8mib",
    "gzip_client",
    "gzip_server",
    "deadline",
    "cancel",
    "health",
    "reflection",
    "concurrent_100",
];

/// One check's outcome against one target, as every client prints it (a JSON line).
///
/// ```
/// let line = r#"{"target":"tonic/quick","check":"unary","ok":true,"detail":"echoed","seen":""}"#;
/// let result: grpcproxy_interop::CheckResult = serde_json::from_str(line).unwrap();
/// assert!(result.ok);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CheckResult {
    /// The target's label, `backend/path` (e.g. `grpcio/quick`).
    pub target: String,
    /// One of [`CHECKS`].
    pub check: String,
    /// Whether the check passed.
    pub ok: bool,
    /// What was seen, or what went wrong.
    pub detail: String,
    /// For the compression checks: whether the peer saw compressed frames, `yes`, `no` or
    /// `unknown` (its library does not tell).
    #[serde(default)]
    pub seen: String,
}
