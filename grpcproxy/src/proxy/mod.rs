//! The transparent handler: a tower service that forwards every gRPC call it receives.

mod call_state;
mod fan_out;
mod forward;
mod hedge;
mod messages;
mod mirror;
mod options;
mod reject;
mod replay;
mod request_body;
mod request_copy;
mod response_body;
mod retry;
mod send;
mod timeouts;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;

use bytes::Bytes;
use http::{Request, Response};
use tokio::time::Instant;
use tonic::Status;
use tower_service::Service;

pub use call_state::ProxyStats;
pub use options::ProxyOptions;
pub use response_body::ResponseBody;

use crate::boxed::BoxError;
use crate::mq::MessageQueue;
use crate::StreamDirector;

/// Forwards every gRPC call it receives to the backend its director picks, frame by frame.
///
/// It is a `tower::Service<http::Request<B>>` and cheap to clone, so it serves as the
/// fallback of a tonic server ([`ProxyRoutes::fallback`](crate::ProxyRoutes::fallback)),
/// for named services ([`ProxyRoutes::register_service`](crate::ProxyRoutes::register_service)),
/// or on its own with [`server::serve`](crate::server::serve). Like the Go package's
/// `TransparentHandler(mq, director)`, it takes a message queue and a director.
///
/// ```no_run
/// use grpcproxy::{mq::NoQueue, ProxyRoutes, SingleUpstream, TransparentProxy, Upstream};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let backend = Upstream::new("http://127.0.0.1:50052")?;
/// let proxy = TransparentProxy::new(NoQueue, SingleUpstream::new(backend));
/// let routes = ProxyRoutes::new().fallback(proxy);
/// tonic::transport::Server::builder()
///     .add_routes(routes.into_routes())
///     .serve("127.0.0.1:50051".parse()?)
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct TransparentProxy<D, Q = crate::mq::NoQueue> {
    shared: Arc<Shared<D, Q>>,
}

#[derive(Debug)]
struct Shared<D, Q> {
    director: D,
    queue: Arc<Q>,
    options: ProxyOptions,
    stats: Arc<ProxyStats>,
}

impl<D, Q> Clone for TransparentProxy<D, Q> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<D: StreamDirector, Q: MessageQueue> TransparentProxy<D, Q> {
    /// A proxy that asks `director` where each call goes, with default options.
    pub fn new(mq: Q, director: D) -> Self {
        Self::with_options(mq, director, ProxyOptions::default())
    }

    /// A proxy with explicit [`ProxyOptions`].
    pub fn with_options(mq: Q, director: D, options: ProxyOptions) -> Self {
        Self {
            shared: Arc::new(Shared {
                director,
                queue: Arc::new(mq),
                options,
                stats: Arc::new(ProxyStats::default()),
            }),
        }
    }

    /// Live counters (for metrics): live streams, calls started.
    pub fn stats(&self) -> &Arc<ProxyStats> {
        &self.shared.stats
    }

    /// The options this proxy was made with.
    pub fn options(&self) -> &ProxyOptions {
        &self.shared.options
    }
}

impl<D, Q, B> Service<Request<B>> for TransparentProxy<D, Q>
where
    D: StreamDirector,
    Q: MessageQueue,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<ResponseBody>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        // The room first, then the future made in it: `Box::pin(future)` would make the
        // future on the stack and copy all of it (its size, not what it holds yet).
        boxed_in_place(|| self.shared.clone().forward(request))
    }
}

/// The future `make` makes, made in its box.
fn boxed_in_place<F>(make: impl FnOnce() -> F) -> Pin<Box<F>> {
    let room = Box::<F>::new_uninit();
    Box::into_pin(Box::write(room, make()))
}

/// What the refusal observer is told of a call the proxy answered itself.
fn refusal_record<'a>(
    method: &'a str,
    peer: Option<std::net::SocketAddr>,
    received: Instant,
    status: &'a Status,
) -> crate::CallRecord<'a> {
    let duration = received.elapsed();
    crate::CallRecord {
        method,
        peer,
        backend: "",
        unreachable: None,
        grpc_status: status.code(),
        started: SystemTime::now() - duration,
        duration,
        request_bytes: 0,
        response_bytes: 0,
        grpc_message: Some(status.message()).filter(|m| !m.is_empty()),
        authority: None,
        user_agent: None,
        trace_id: None,
        span_id: None,
        request_messages: 0,
        response_messages: 0,
        attempts: &[],
    }
}

impl<D: StreamDirector, Q: MessageQueue> Shared<D, Q> {
    /// Answers a call with `status` before any target, telling the refusal observer.
    fn refused(
        &self,
        method: &str,
        peer: Option<std::net::SocketAddr>,
        received: Instant,
        status: Status,
    ) -> Response<ResponseBody> {
        if let Some(observer) = &self.options.refusal_observer {
            observer.call_ended(&refusal_record(method, peer, received, &status));
        }
        status.into_http()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{mq::NoQueue, SingleUpstream, Upstream};

    /// The per-call future is boxed and moved on every call (BENCHMARKS.md): it must not
    /// grow unnoticed. Its size is the same in test and release builds.
    #[tokio::test]
    async fn the_per_call_future_stays_small() {
        let upstream = Upstream::new("http://127.0.0.1:9").unwrap();
        let proxy = TransparentProxy::new(NoQueue, SingleUpstream::new(upstream));
        let request = Request::new(tonic::body::Body::empty());
        let future = proxy.shared.clone().forward(request);
        let size = std::mem::size_of_val(&future);
        println!("per-call future: {size} bytes");
        // 3,280 before the call was split into phases (#18), 2,200 after, 2,240 with the
        // retry step (#19), 2,264 with the reference to the call's cut held by the send
        // step (a client's reset reaches a backend that stopped reading, #20), 2,080 with
        // the call's timers boxed and carried from phase to phase (#24), 1,832 with the send
        // pinned where it is built and the upstream's try no async layer of its own (#24).
        let bound = 1_832;
        assert!(
            size <= bound,
            "per-call future grew to {size} bytes (bound {bound})"
        );
    }
}
