//! # grpcproxy
//!
//! A transparent gRPC reverse proxy: every call is forwarded, frame by frame, to a backend
//! that a [`StreamDirector`] picks from the method name and metadata. Messages cross as raw
//! bytes (compressed ones stay compressed); headers, trailers, status details, half-close,
//! cancellation and deadlines are preserved.
//!
//! - [`TransparentProxy`]: the handler, a `tower::Service` (the Go package's
//!   `TransparentHandler(mq, director)`).
//! - [`ProxyRoutes`]: typed tonic services, proxied services ([`ProxyRoutes::register_service`])
//!   and the transparent catch-all ([`ProxyRoutes::fallback`]) on one tonic server.
//! - [`Upstream`]: an HTTP/2 backend (`http://` h2c or `https://` TLS), or a tonic `Channel`.
//! - [`RawCodec`]: a tonic codec of raw bytes.
//! - [`server::serve`]: serve a proxy on its own listener.
//! - [`policy`]: retries, hedging, mirroring, retry budgets, rate limits and per-client
//!   caps, attached to a call by its director ([`Target::retry`], [`Target::hedge`],
//!   [`Target::mirror`]).
//! - [`compare`]: two answers to one call compared byte for byte (mirrors, replay).
//! - [`web`]: gRPC-Web and CORS in front of the proxy (or any gRPC service), for browsers.
//! - `reflection` (feature `reflection`): one server reflection merged from every backend.
//! - `trace` (feature `otel`): W3C trace context continued through the proxy, a span per
//!   call (OpenTelemetry), and a span queue that never blocks a call.
//!
//! The building blocks the proxy is made of are public for tools that handle gRPC frames
//! themselves (replay, fuzzing, benchmarks, other proxies): [`frame`] (the 5-byte message
//! framing), [`headers`] (hop-by-hop rules, `x-forwarded-for`), [`deadline`]
//! (`grpc-timeout`), [`status`] (reset reasons as gRPC codes), [`codec`] and [`worker`].
//! How a call goes through the proxy is not: its phases live in a private module.
//!
//! Cargo features (all off by default): `nats` (the tap to NATS JetStream,
//! `mq::NatsQueue`), `tap-file` (the tap to files, `mq::FileQueue`), `wire` (the tap's
//! protobuf and JSON encoding, `mq::wire`; implied by the other two), `reflection` (one
//! merged server reflection, `reflection::MergedReflection`), `otel` (tracing,
//! `trace::CallTracer`).
//!
//! ```no_run
//! use grpcproxy::{mq::NoQueue, CallInfo, ProxyRoutes, TransparentProxy, Upstream};
//! use tonic::Status;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let users = Upstream::new("http://127.0.0.1:50061")?;
//! let orders = Upstream::new("http://127.0.0.1:50062")?;
//! let director = move |call: CallInfo| {
//!     let (users, orders) = (users.clone(), orders.clone());
//!     async move {
//!         match call.service_name() {
//!             "shop.Users" => Ok(call.forward_to(users)),
//!             "shop.Orders" => Ok(call.forward_to(orders)),
//!             other => Err(Status::unimplemented(format!("unknown service {other}"))),
//!         }
//!     }
//! };
//! let proxy = TransparentProxy::new(NoQueue, director);
//! tonic::transport::Server::builder()
//!     .add_routes(ProxyRoutes::new().fallback(proxy).into_routes())
//!     .serve("127.0.0.1:50051".parse()?)
//!     .await?;
//! # Ok(()) }
//! ```

mod boxed;
mod call;
pub mod codec;
pub mod compare;
pub mod deadline;
mod director;
pub mod frame;
mod header_edits;
pub mod headers;
mod http2;
pub mod mq;
mod observe;
mod pem;
pub mod policy;
mod proxy;
#[cfg(feature = "reflection")]
pub mod reflection;
mod register;
pub mod server;
mod server_tls;
pub mod status;
#[cfg(feature = "otel")]
pub mod trace;
pub(crate) mod upstream;
pub mod web;
pub mod worker;

pub use call::{CallInfo, ConnectionInfo};
pub use codec::RawCodec;
pub use director::{SingleUpstream, StreamDirector, Target};
pub use header_edits::HeaderEdits;
pub use http2::{Http2Settings, RecvBody};
pub use observe::{Attempt, AttemptKind, CallObserver, CallRecord, SharedObserver};
pub use proxy::{ProxyOptions, ProxyStats, ResponseBody, TransparentProxy};
pub use register::{ProxyRoutes, RouteError};
pub use upstream::{
    Upstream, UpstreamBuilder, UpstreamConfigError, UpstreamError, UpstreamErrorKind, UpstreamStats,
};
