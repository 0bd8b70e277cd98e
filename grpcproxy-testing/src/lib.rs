//! Test peers for grpcproxy: the ping service (a port of the Go grpc-proxy test service),
//! a scripted raw HTTP/2 backend, and a raw HTTP/2 client that sees exact bytes.

pub mod compressed;
pub mod nats;
pub mod ping;
pub mod pki;
pub mod raw;
pub mod relay;
pub mod serve;
pub mod site;
pub mod trailers;
pub mod wire;

/// The generated code of `proto/ping.proto`.
#[allow(
    missing_docs,
    unreachable_pub,
    missing_debug_implementations,
    clippy::all
)]
pub mod pb {
    tonic::include_proto!("grpcproxy.testing");

    /// The encoded descriptors of `proto/ping.proto`, for a reflection service.
    pub const DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/ping_descriptor.bin"));
}

pub use ping::PingService;
pub use serve::TestServer;
