//! The transparent handler: a tower service that forwards every gRPC call it receives.

mod bounded;
mod options;
mod reject;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, HOST, TE};
use http::uri::Authority;
use http::{Method, Request, Response, Version};
use http_body_util::BodyExt;
use tokio::time::Instant;
use tonic::metadata::MetadataMap;
use tonic::Status;
use tower_service::Service;

pub use options::ProxyOptions;

use bounded::Bounded;
use options::effective_timeout;

use crate::body::{RequestBody, ResponseBody, ResponseGuard};
use crate::boxed::{BoxBody, BoxError};
use crate::call::{connection_info, split_method};
use crate::call_state::{abort_status, AbortReason, CallState, Observed, ProxyStats};
use crate::deadline::{format_timeout, parse_timeout};
use crate::headers::strip_hop_by_hop;
use crate::mq::tap::CallTap;
use crate::mq::{CallStarted, MessageQueue, TapEvent};
use crate::upstream::Unsent;
use crate::{CallInfo, StreamDirector};

const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

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
        Box::pin(self.shared.clone().forward(request))
    }
}

/// The status for a path that is not `/package.Service/Method`.
fn malformed_method(path: &str) -> Status {
    Status::unimplemented(format!(
        "malformed method name {path:?}: expected /package.Service/Method"
    ))
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
    }
}

/// The client's address, for a call answered before it is taken apart.
fn peer_of(parts: &http::request::Parts) -> Option<std::net::SocketAddr> {
    connection_info(&parts.extensions).remote_addr
}

/// A trailers-only response carrying `status`.
fn status_response(status: Status) -> Response<ResponseBody> {
    status.into_http()
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
        status_response(status)
    }

    async fn forward<B>(
        self: Arc<Self>,
        request: Request<B>,
    ) -> Result<Response<ResponseBody>, Infallible>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        if let Some(rejection) = reject::non_grpc_request(&request) {
            return Ok(rejection);
        }
        let received = Instant::now();
        let (mut parts, body) = request.into_parts();
        let split = parts
            .uri
            .path_and_query()
            .and_then(|path| Some((path.clone(), split_method(path.path())?)));
        let Some((path, split)) = split else {
            let (status, peer) = (malformed_method(parts.uri.path()), peer_of(&parts));
            return Ok(self.refused(parts.uri.path(), peer, received, status));
        };
        let requested = match parts
            .headers
            .get(GRPC_TIMEOUT)
            .map(parse_timeout)
            .transpose()
        {
            Ok(requested) => requested,
            Err(invalid) => {
                let status = Status::internal(invalid.to_string());
                return Ok(self.refused(path.path(), peer_of(&parts), received, status));
            }
        };
        let client_authority = parts.uri.authority().cloned().or_else(|| {
            let host = parts.headers.get(HOST)?;
            Authority::try_from(host.as_bytes()).ok()
        });
        let peer = connection_info(&parts.extensions);
        let peer_addr = peer.remote_addr;
        strip_hop_by_hop(&mut parts.headers);
        if self.options.x_forwarded_for {
            if let Some(addr) = peer.remote_addr {
                crate::headers::append_forwarded_for(&mut parts.headers, addr.ip());
            }
        }
        let call_info = CallInfo::split_at(
            path.clone(),
            split,
            MetadataMap::from_headers(parts.headers),
        )
        .with_peer(peer, parts.extensions);
        let guard = ResponseGuard::new(CallState::start(&self.stats));
        let call = guard.call().clone();

        // The director's time counts against the deadline the proxy would enforce anyway.
        let director_deadline = self
            .options
            .effective_timeout(requested)
            .map(|t| received + t);
        let target =
            match Bounded::new(self.director.direct(call_info), director_deadline, None).await {
                Ok(Ok(target)) => target,
                Ok(Err(status)) => return Ok(status_response(status)),
                Err(_) => {
                    let status = abort_status(AbortReason::Deadline, None);
                    return Ok(self.refused(path.path(), peer_addr, received, status));
                }
            };
        let (upstream, metadata, overrides) = target.into_parts();
        if let Some(director_guard) = overrides.guard {
            call.keep(director_guard);
        }
        if let Some(observer) = overrides.observer {
            call.observe(Observed {
                observer,
                method: path.clone(),
                peer: peer_addr,
                backend: upstream.shared_address().clone(),
                started: SystemTime::now() - received.elapsed(),
                started_at: received.into_std(),
                authority: client_authority.clone(),
                user_agent: metadata.as_ref().get(http::header::USER_AGENT).cloned(),
            });
        }
        let timeout = if overrides.max_timeout.is_some() || overrides.default_timeout.is_some() {
            effective_timeout(requested, overrides.max_timeout, overrides.default_timeout)
        } else {
            self.options.effective_timeout(requested)
        };
        let deadline = timeout.map(|t| received + t);
        let mut headers = metadata.into_headers();
        headers.insert(TE, HeaderValue::from_static("trailers"));
        if self.queue.wants(path.path()) {
            let queue: Arc<dyn MessageQueue> = self.queue.clone();
            let tap = Arc::new(CallTap::new(queue));
            tap.publish(TapEvent::Started(CallStarted {
                call_id: tap.call_id,
                time: SystemTime::now() - received.elapsed(),
                method: path.path().to_owned(),
                peer: peer_addr,
                metadata: headers.clone(),
                backend: upstream.address().to_owned(),
            }));
            call.tap_with(tap);
        }
        if timeout != requested {
            if let Some(deadline) = deadline {
                let remaining = deadline.saturating_duration_since(Instant::now());
                headers.insert(GRPC_TIMEOUT, format_timeout(remaining));
            }
        }

        let limit = self.options.max_message_size;
        let idle = self.options.stream_idle_timeout;
        let body = BoxBody::new(
            RequestBody::new(body, call.clone(), limit, idle.is_some())
                .map_err(|e| Box::new(e) as BoxError),
        );
        let mut outgoing = Request::new(body);
        *outgoing.method_mut() = Method::POST;
        *outgoing.version_mut() = Version::HTTP_2;
        *outgoing.uri_mut() = upstream.request_uri(
            path.clone(),
            overrides.authority.clone(),
            client_authority.clone(),
        );
        *outgoing.headers_mut() = headers;

        let alternate = overrides.alternate;
        let sent = Bounded::new(
            async {
                match upstream.try_send(outgoing).await {
                    Ok(response) => Ok((response, upstream)),
                    Err(Unsent {
                        error,
                        request: Some(mut request),
                    }) if alternate.is_some() => {
                        let alternate = alternate.expect("checked above");
                        tracing::debug!(error = %error, alternate = alternate.address(), "backend unreachable; trying the alternate");
                        *request.uri_mut() = alternate.request_uri(
                            path.clone(),
                            overrides.authority.clone(),
                            client_authority.clone(),
                        );
                        call.failed_over(
                            alternate.shared_address().clone(),
                            upstream.shared_address().clone(),
                        );
                        // Boxed: the rare path should not double every call's future.
                        match Box::pin(alternate.try_send(request)).await {
                            Ok(response) => Ok((response, alternate)),
                            Err(unsent) => Err(unsent.error),
                        }
                    }
                    Err(unsent) => Err(unsent.error),
                }
            },
            deadline,
            idle.map(|timeout| (&*call, timeout)),
        );
        let (response, upstream) = match sent.await {
            Ok(Ok(sent)) => sent,
            Err(AbortReason::Idle) => {
                call.abort(AbortReason::Idle);
                let status = abort_status(AbortReason::Idle, None);
                call.set_status_of(&status);
                return Ok(status_response(status));
            }
            Ok(Err(err)) => {
                let status = match call.abort_reason() {
                    Some(reason) => abort_status(reason, limit),
                    None => err.to_status(),
                };
                tracing::debug!(error = %err, code = ?status.code(), "call failed before response headers");
                call.set_status_of(&status);
                return Ok(status_response(status));
            }
            Err(_) => {
                call.abort(AbortReason::Deadline);
                call.set_status(tonic::Code::DeadlineExceeded);
                return Ok(status_response(abort_status(AbortReason::Deadline, None)));
            }
        };
        if crate::deadline::is_late_error(deadline, response.headers()) {
            call.abort(AbortReason::Deadline);
            call.set_status(tonic::Code::DeadlineExceeded);
            return Ok(status_response(abort_status(AbortReason::Deadline, None)));
        }
        call.set_status_from(response.headers());
        if let (Some(tap), true) = (call.tap(), http_body::Body::is_end_stream(response.body())) {
            tap.trailers(response.headers()); // trailers-only: the status is in the headers
        }
        let mut response = response;
        if let Some(edits) = &overrides.response_edits {
            edits.apply(response.headers_mut());
        }
        let backend = upstream.shared_address().clone();
        Ok(response.map(|body| ResponseBody::forward(body, guard, deadline, idle, limit, backend)))
    }
}
