//! gRPC-Web: calls from browsers (`application/grpc-web`, `application/grpc-web-text`),
//! translated to ordinary gRPC for the service behind and back, with CORS.
//!
//! [`GrpcWeb`] (or its [`GrpcWebLayer`]) wraps a gRPC service — a
//! [`TransparentProxy`](crate::TransparentProxy), a tonic server's routes — and serves
//! both: gRPC calls pass untouched; gRPC-Web calls get `content-type` and `te` rewritten,
//! a text body decoded from base64, and their answer's trailers sent as the last
//! length-prefixed frame of the body (flag `0x80`), base64 again for text. Messages are
//! never decoded: binary gRPC-Web forwards the body frames as they come.
//!
//! Browsers speak HTTP/1.1 as often as HTTP/2: serve with
//! [`ServerOptions::http1`](crate::server::ServerOptions::http1) on. Over HTTP/1.1 only
//! gRPC-Web and CORS preflights are answered; anything else gets a 4xx that says why.
//!
//! What a browser can call is unary and server streaming; a `grpc-web-text` request body
//! is read in full (up to [`WebOptions::max_text_request_bytes`]) before the call starts,
//! so that invalid base64 never reaches a backend.
//!
//! ```no_run
//! use grpcproxy::web::{Cors, GrpcWeb, WebOptions};
//! use grpcproxy::{mq::NoQueue, server, SingleUpstream, TransparentProxy, Upstream};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let proxy = TransparentProxy::new(NoQueue, SingleUpstream::new(Upstream::new("http://127.0.0.1:50052")?));
//! let web = WebOptions::new().cors(Cors::allow_origins(["https://app.example"])?);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! let options = server::ServerOptions { http1: true, ..Default::default() };
//! server::serve(listener, GrpcWeb::new(proxy, web), options, std::future::pending()).await?;
//! # Ok(()) }
//! ```

mod body;
mod cors;
mod stats;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use http_body::Body;
use http_body_util::BodyExt;
use pin_project_lite::pin_project;
use tonic::Status;
use tower::Layer;
use tower_service::Service;

use crate::boxed::BoxError;
use crate::headers::is_grpc_content_type;
pub use body::{WebRequestBody, WebResponseBody};
use cors::{Allowed, CompiledCors, Verdict};
pub use cors::{Cors, CorsError};
pub use stats::{WebOutcome, WebRequest, WebStats};

/// How a listener serves gRPC-Web.
///
/// ```
/// use grpcproxy::web::{Cors, WebOptions};
///
/// let options = WebOptions::new()
///     .cors(Cors::allow_any_origin())
///     .max_text_request_bytes(1 << 20);
/// ```
#[derive(Debug, Clone)]
pub struct WebOptions {
    cors: Option<Arc<CompiledCors>>,
    max_text_request_bytes: usize,
    stats: Arc<WebStats>,
}

impl Default for WebOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl WebOptions {
    /// No CORS policy (same-origin pages only; preflights are refused), text request
    /// bodies up to 16 MiB decoded.
    pub fn new() -> Self {
        Self {
            cors: None,
            max_text_request_bytes: 16 << 20,
            stats: Arc::default(),
        }
    }

    /// Counts requests in `stats` (shared by every listener that gets a clone).
    pub fn stats(mut self, stats: Arc<WebStats>) -> Self {
        self.stats = stats;
        self
    }

    /// Lets pages from other origins call, as `cors` says.
    pub fn cors(mut self, cors: Cors) -> Self {
        self.cors = Some(Arc::new(cors.compile()));
        self
    }

    /// The largest `grpc-web-text` request body, decoded, that is read before the call
    /// starts; a larger one is answered `RESOURCE_EXHAUSTED` and never forwarded.
    pub fn max_text_request_bytes(mut self, bytes: usize) -> Self {
        self.max_text_request_bytes = bytes;
        self
    }
}

/// A tower layer that makes [`GrpcWeb`] services: for tonic's `Server::layer`, or
/// `ServiceBuilder`.
///
/// ```
/// use grpcproxy::web::{GrpcWebLayer, WebOptions};
/// use tower::Layer;
///
/// let layer = GrpcWebLayer::new(WebOptions::new());
/// let _service = layer.layer(tower::service_fn(|_: http::Request<grpcproxy::web::WebRequestBody<grpcproxy::RecvBody>>| async {
///     Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Empty::<bytes::Bytes>::new()))
/// }));
/// ```
#[derive(Debug, Clone, Default)]
pub struct GrpcWebLayer {
    options: Arc<WebOptions>,
}

impl GrpcWebLayer {
    /// A layer serving gRPC-Web with `options`.
    pub fn new(options: WebOptions) -> Self {
        Self {
            options: Arc::new(options),
        }
    }
}

impl<S> Layer<S> for GrpcWebLayer {
    type Service = GrpcWeb<S>;

    fn layer(&self, inner: S) -> GrpcWeb<S> {
        GrpcWeb {
            inner,
            options: Some(self.options.clone()),
        }
    }
}

/// Serves gRPC-Web (and CORS) in front of a gRPC service, gRPC itself unchanged.
///
/// Its service gets requests whose body is a [`WebRequestBody`]; a tonic server's routes
/// want tonic's body: map it (`tonic::body::Body::new`).
///
/// ```
/// use grpcproxy::web::{GrpcWeb, WebOptions};
/// use grpcproxy::{mq::NoQueue, server::CallService, SingleUpstream, TransparentProxy, Upstream};
///
/// fn servable(_: impl CallService) {}
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let proxy = TransparentProxy::new(NoQueue, SingleUpstream::new(Upstream::new("http://127.0.0.1:50052")?));
/// servable(GrpcWeb::new(proxy.clone(), WebOptions::new()));
/// // The same type serving gRPC only, for listeners without gRPC-Web.
/// servable(GrpcWeb::disabled(proxy));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct GrpcWeb<S> {
    inner: S,
    options: Option<Arc<WebOptions>>,
}

impl<S> GrpcWeb<S> {
    /// `inner`, serving gRPC-Web with `options` besides gRPC.
    pub fn new(inner: S, options: WebOptions) -> Self {
        Self {
            inner,
            options: Some(Arc::new(options)),
        }
    }

    /// `inner` as it is, gRPC only: for listeners without gRPC-Web when every listener
    /// serves one service type.
    pub fn disabled(inner: S) -> Self {
        Self {
            inner,
            options: None,
        }
    }

    /// Whether gRPC-Web is served.
    pub fn enabled(&self) -> bool {
        self.options.is_some()
    }
}

/// What a request is, by its method and `content-type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A gRPC call, or anything else the service answers itself.
    Grpc,
    /// A gRPC-Web call; `text`: base64 bodies.
    Web { text: bool },
    /// A CORS preflight.
    Preflight,
}

const WEB: &str = "application/grpc-web";
const GRPC_ACCEPT_ENCODING: header::HeaderName =
    header::HeaderName::from_static("grpc-accept-encoding");
const WEB_TEXT: &str = "application/grpc-web-text";

/// The part of a gRPC-Web `content-type` after its type: `+proto`, `;charset=…`, or
/// nothing; with whether it is text.
fn web_content_type(value: &HeaderValue) -> Option<(bool, &str)> {
    let value = value.to_str().ok()?;
    let lower_starts = |prefix: &str| {
        value.len() >= prefix.len() && value[..prefix.len()].eq_ignore_ascii_case(prefix)
    };
    let (text, rest) = if lower_starts(WEB_TEXT) {
        (true, &value[WEB_TEXT.len()..])
    } else if lower_starts(WEB) {
        (false, &value[WEB.len()..])
    } else {
        return None;
    };
    matches!(rest.bytes().next(), None | Some(b'+' | b';')).then_some((text, rest))
}

fn kind<B>(request: &Request<B>) -> Kind {
    if request.method() == Method::OPTIONS
        && request.headers().contains_key(header::ORIGIN)
        && request
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
    {
        return Kind::Preflight;
    }
    match request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(web_content_type)
    {
        Some((text, _)) if request.method() == Method::POST => Kind::Web { text },
        _ => Kind::Grpc,
    }
}

/// Rewrites a gRPC-Web request's head into a gRPC one's.
fn to_grpc(parts: &mut http::request::Parts) {
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(web_content_type)
        .and_then(|(_, rest)| HeaderValue::try_from(format!("application/grpc{rest}")).ok())
        .unwrap_or(HeaderValue::from_static("application/grpc"));
    parts.headers.insert(header::CONTENT_TYPE, content_type);
    parts.headers.remove(header::CONTENT_LENGTH);
    parts
        .headers
        .insert(header::TE, HeaderValue::from_static("trailers"));
    // A gRPC-Web client that says nothing decodes only uncompressed messages; some
    // servers compress unless told (grpcio with a default compression).
    if !parts.headers.contains_key(GRPC_ACCEPT_ENCODING) {
        parts
            .headers
            .insert(GRPC_ACCEPT_ENCODING, HeaderValue::from_static("identity"));
    }
    parts.version = Version::HTTP_2;
}

/// What a gRPC-Web call's answer needs: text or binary, and its CORS headers.
#[derive(Debug, Clone)]
struct WebCall {
    text: bool,
    cors: Option<Allowed>,
}

impl WebCall {
    fn content_type(&self, rest: &str) -> HeaderValue {
        let base = if self.text { WEB_TEXT } else { WEB };
        HeaderValue::try_from(format!("{base}{rest}")).unwrap_or(HeaderValue::from_static(WEB))
    }

    /// The service's gRPC answer as a gRPC-Web one.
    fn response<RB>(&self, response: Response<RB>) -> Response<WebResponseBody<RB>> {
        let (mut head, body) = response.into_parts();
        if let Some(cors) = &self.cors {
            cors.apply(&mut head.headers);
        }
        let web = head
            .headers
            .get(header::CONTENT_TYPE)
            .filter(|value| is_grpc_content_type(value))
            .map(|value| {
                // What follows `application/grpc` (`+proto`, `;…`), kept.
                let rest = value.to_str().unwrap_or_default();
                self.content_type(rest.get("application/grpc".len()..).unwrap_or_default())
            });
        let Some(content_type) = web else {
            // Not a gRPC answer (an HTTP error of the service's): as it is.
            return Response::from_parts(head, WebResponseBody::native(body));
        };
        head.headers.insert(header::CONTENT_TYPE, content_type);
        Response::from_parts(head, WebResponseBody::web(body, self.text))
    }

    /// A trailers-only gRPC-Web answer with `status`, under HTTP `http`.
    fn status<RB>(&self, status: Status, http: StatusCode) -> Response<WebResponseBody<RB>> {
        let mut response = status
            .into_http::<()>()
            .map(|()| WebResponseBody::fixed(Bytes::new()));
        *response.status_mut() = http;
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, self.content_type("+proto"));
        if let Some(cors) = &self.cors {
            cors.apply(headers);
        }
        response
    }
}

/// A plain-text answer of the layer's own.
fn plain<RB>(status: StatusCode, text: &'static str) -> Response<WebResponseBody<RB>> {
    let mut response = Response::new(WebResponseBody::fixed(Bytes::from_static(text.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn refused<RB>(origin: &HeaderValue) -> Response<WebResponseBody<RB>> {
    tracing::debug!(
        ?origin,
        "gRPC-Web: origin not allowed by the listener's CORS policy"
    );
    plain(
        StatusCode::FORBIDDEN,
        "grpcproxy: this origin may not call this listener (CORS)\n",
    )
}

/// The answer to a request over HTTP/1.x that is neither gRPC-Web nor a preflight.
fn not_web<B, RB>(request: &Request<B>) -> Response<WebResponseBody<RB>> {
    if request.method() != Method::POST {
        let mut response = plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "grpcproxy: over HTTP/1.1 this listener answers gRPC-Web (POST) and CORS preflights (OPTIONS) only\n",
        );
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST, OPTIONS"));
        return response;
    }
    plain(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "grpcproxy: over HTTP/1.1 content-type must be application/grpc-web or application/grpc-web-text (gRPC needs HTTP/2)\n",
    )
}

/// The answer to a preflight.
fn preflight<B, RB>(options: &WebOptions, request: &Request<B>) -> Response<WebResponseBody<RB>> {
    let verdict = cors::check(options.cors.as_ref(), request.headers());
    let outcome = match verdict {
        Verdict::Allowed(_) => WebOutcome::Allowed,
        _ => WebOutcome::RefusedOrigin,
    };
    options.stats.count(WebRequest::Preflight, outcome);
    match verdict {
        Verdict::Allowed(allowed) => {
            let mut response = plain(StatusCode::NO_CONTENT, "");
            response.headers_mut().remove(header::CONTENT_TYPE);
            allowed.preflight(response.headers_mut());
            response
        }
        Verdict::Refused(origin) => refused(&origin),
        Verdict::NoOrigin => unreachable!("a preflight has an origin"),
    }
}

type Boxed<RB> =
    Pin<Box<dyn Future<Output = Result<Response<WebResponseBody<RB>>, Infallible>> + Send>>;

pin_project! {
    /// The future of a [`GrpcWeb`] call.
    #[must_use = "futures do nothing unless polled"]
    pub struct WebFuture<F, RB> {
        #[pin]
        kind: FutureKind<F, RB>,
    }
}

impl<F, RB> std::fmt::Debug for WebFuture<F, RB> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebFuture").finish_non_exhaustive()
    }
}

pin_project! {
    #[project = FutureKindProj]
    enum FutureKind<F, RB> {
        Grpc { #[pin] call: F },
        Web { #[pin] call: F, web: WebCall },
        /// A text call: its body is read and decoded first.
        Text { call: Boxed<RB> },
        Ready { response: Option<Response<WebResponseBody<RB>>> },
    }
}

impl<F, RB> WebFuture<F, RB> {
    fn ready(response: Response<WebResponseBody<RB>>) -> Self {
        Self {
            kind: FutureKind::Ready {
                response: Some(response),
            },
        }
    }
}

impl<F, RB> Future for WebFuture<F, RB>
where
    F: Future<Output = Result<Response<RB>, Infallible>>,
{
    type Output = Result<Response<WebResponseBody<RB>>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            FutureKindProj::Grpc { call } => call
                .poll(cx)
                .map_ok(|response| response.map(WebResponseBody::native)),
            FutureKindProj::Web { call, web } => {
                call.poll(cx).map_ok(|response| web.response(response))
            }
            FutureKindProj::Text { call } => call.as_mut().poll(cx),
            FutureKindProj::Ready { response } => {
                Poll::Ready(Ok(response.take().expect("polled after completion")))
            }
        }
    }
}

impl<S, B, RB> Service<Request<B>> for GrpcWeb<S>
where
    S: Service<Request<WebRequestBody<B>>, Response = Response<RB>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
    RB: Send + 'static,
{
    type Response = Response<WebResponseBody<RB>>;
    type Error = Infallible;
    type Future = WebFuture<S::Future, RB>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let Some(options) = &self.options else {
            return WebFuture {
                kind: FutureKind::Grpc {
                    call: self.inner.call(request.map(WebRequestBody::stream)),
                },
            };
        };
        let text = match kind(&request) {
            Kind::Preflight => return WebFuture::ready(preflight(options, &request)),
            Kind::Grpc if request.version() < Version::HTTP_2 => {
                options.stats.count(WebRequest::Other, WebOutcome::Rejected);
                return WebFuture::ready(not_web(&request));
            }
            Kind::Grpc => {
                return WebFuture {
                    kind: FutureKind::Grpc {
                        call: self.inner.call(request.map(WebRequestBody::stream)),
                    },
                }
            }
            Kind::Web { text } => text,
        };
        let counted = if text {
            WebRequest::Text
        } else {
            WebRequest::Binary
        };
        let cors = match cors::check(options.cors.as_ref(), request.headers()) {
            Verdict::NoOrigin => None,
            Verdict::Allowed(allowed) => Some(allowed),
            // A page that may not call: nothing reaches the service.
            Verdict::Refused(origin) if options.cors.is_some() => {
                options.stats.count(counted, WebOutcome::RefusedOrigin);
                return WebFuture::ready(refused(&origin));
            }
            // No policy: the browser itself keeps other origins' pages from reading.
            Verdict::Refused(_) => None,
        };
        let web = WebCall { text, cors };
        let (mut parts, body) = request.into_parts();
        to_grpc(&mut parts);
        if !text {
            options.stats.count(WebRequest::Binary, WebOutcome::Allowed);
            let call = self
                .inner
                .call(Request::from_parts(parts, WebRequestBody::stream(body)));
            return WebFuture {
                kind: FutureKind::Web { call, web },
            };
        }
        // The service was made ready for this call: take it, leave a clone.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let (max, stats) = (options.max_text_request_bytes, options.stats.clone());
        WebFuture {
            kind: FutureKind::Text {
                call: Box::pin(text_call(inner, parts, body, (max, stats), web)),
            },
        }
    }
}

/// A `grpc-web-text` call: the body read in full (bounded) and decoded, then the call.
async fn text_call<S, B, RB>(
    mut inner: S,
    parts: http::request::Parts,
    body: B,
    (max, stats): (usize, Arc<WebStats>),
    web: WebCall,
) -> Result<Response<WebResponseBody<RB>>, Infallible>
where
    S: Service<Request<WebRequestBody<B>>, Response = Response<RB>, Error = Infallible>,
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    // Base64 takes 4 characters for 3 bytes.
    let limit = max.div_ceil(3).saturating_mul(4);
    let encoded = match http_body_util::Limited::new(body, limit).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            stats.count(WebRequest::Text, WebOutcome::TooLarge);
            let status = Status::resource_exhausted(format!(
                "grpc-web-text request body larger than {max} bytes (decoded)"
            ));
            return Ok(web.status(status, StatusCode::OK));
        }
        Err(e) => {
            let status = Status::cancelled(format!("the request body broke off: {e}"));
            return Ok(web.status(status, StatusCode::OK));
        }
    };
    let decoded = match body::decode_text(&encoded) {
        Ok(decoded) => decoded,
        Err(e) => {
            stats.count(WebRequest::Text, WebOutcome::InvalidBase64);
            tracing::debug!(error = %e, "gRPC-Web: invalid base64 in a grpc-web-text request body");
            let status = Status::internal(format!(
                "invalid base64 in a grpc-web-text request body: {e}"
            ));
            return Ok(web.status(status, StatusCode::BAD_REQUEST));
        }
    };
    stats.count(WebRequest::Text, WebOutcome::Allowed);
    let request = Request::from_parts(parts, WebRequestBody::decoded(decoded));
    let Ok(response) = inner.call(request).await;
    Ok(web.response(response))
}
