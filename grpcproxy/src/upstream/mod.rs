//! Upstreams: handles to the HTTP/2 backends calls are forwarded to.

mod body;
mod connection;
mod error;
mod exchange;
mod in_flight;
mod pool;
mod tls;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::uri::{Authority, Scheme};
use http::{Request, Response, Uri};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_util::either::Either;

pub use error::{UpstreamConfigError, UpstreamError, UpstreamErrorKind};

use crate::boxed::BoxBody;
use crate::http2::{Cut, PipeCut};
use crate::Http2Settings;
pub(crate) use body::UpstreamBody;
use exchange::NotStarted;
use pool::{Endpoint, Pool, PoolSize};
use tls::Roots;

/// A backend that calls can be forwarded to: a cheap, cloneable handle.
///
/// Connections are made on first use and made again after they fail. Calls are spread over
/// [`UpstreamBuilder::connections`] of them; when every connection carries
/// [`UpstreamBuilder::max_streams_per_connection`] calls, the next call opens another (up to
/// [`UpstreamBuilder::max_connections`]), so a backend's own per-connection stream limit
/// (200 for hyper and tonic servers, 128 for nginx) never queues calls. `http://` speaks cleartext HTTP/2 (h2c); `https://` speaks TLS with
/// ALPN `h2`.
///
/// ```
/// use grpcproxy::Upstream;
///
/// let plain = Upstream::new("http://127.0.0.1:50052").unwrap();
/// assert_eq!(plain.address(), "127.0.0.1:50052");
/// assert!(Upstream::new("ftp://example.com").is_err());
/// ```
#[derive(Debug, Clone)]
pub struct Upstream {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    scheme: Scheme,
    authority: Authority,
    rewrite_authority: bool,
    transport: Transport,
}

#[derive(Debug)]
enum Transport {
    Pool(Pool),
    Channel {
        channel: tonic::transport::Channel,
        address: Arc<str>,
    },
}

impl Upstream {
    /// An upstream at `url` with default settings.
    pub fn new(url: &str) -> Result<Self, UpstreamConfigError> {
        Self::builder(url)?.build()
    }

    /// Starts configuring an upstream at `url` (`http://host:port` or `https://host:port`).
    pub fn builder(url: &str) -> Result<UpstreamBuilder, UpstreamConfigError> {
        UpstreamBuilder::new(url)
    }

    /// Wraps an existing tonic [`Channel`](tonic::transport::Channel).
    ///
    /// Convenient when you already have one; the channel's own connection handling and
    /// `:authority` apply. `name` is how errors and logs name the backend.
    pub fn from_channel(channel: tonic::transport::Channel, name: &str) -> Self {
        Self {
            inner: Arc::new(Inner {
                scheme: Scheme::HTTP,
                authority: Authority::from_static("channel.invalid"),
                rewrite_authority: false,
                transport: Transport::Channel {
                    channel,
                    address: Arc::from(name),
                },
            }),
        }
    }

    /// The backend's `host:port` (or the name given to [`Upstream::from_channel`]).
    pub fn address(&self) -> &str {
        self.shared_address()
    }

    /// Connection counters of this upstream (zero for a tonic `Channel` upstream).
    pub fn stats(&self) -> UpstreamStats {
        match &self.inner.transport {
            Transport::Pool(pool) => UpstreamStats {
                connects: pool.connects.load(std::sync::atomic::Ordering::Relaxed),
                connect_failures: pool
                    .connect_failures
                    .load(std::sync::atomic::Ordering::Relaxed),
                open_connections: pool.open.load(std::sync::atomic::Ordering::Relaxed),
                rotated: pool
                    .rotated
                    .count
                    .load(std::sync::atomic::Ordering::Relaxed),
            },
            Transport::Channel { .. } => UpstreamStats::default(),
        }
    }

    /// The address as a shared string, for per-call use without allocating.
    pub(crate) fn shared_address(&self) -> &Arc<str> {
        match &self.inner.transport {
            Transport::Pool(pool) => pool.address(),
            Transport::Channel { address, .. } => address,
        }
    }

    /// The URI a call to `path` is sent with: the backend's scheme, and as `:authority` the
    /// director's choice, else the client's unless the upstream rewrites it to its own.
    pub(crate) fn request_uri(
        &self,
        path: http::uri::PathAndQuery,
        chosen: Option<Authority>,
        client_authority: Option<Authority>,
    ) -> Uri {
        let authority = match (chosen, client_authority) {
            (Some(chosen), _) => chosen,
            (None, Some(client)) if !self.inner.rewrite_authority => client,
            _ => self.inner.authority.clone(),
        };
        Uri::from_parts({
            let mut parts = http::uri::Parts::default();
            parts.scheme = Some(self.inner.scheme.clone());
            parts.authority = Some(authority);
            parts.path_and_query = Some(path);
            parts
        })
        .expect("scheme, authority and path make a valid URI")
    }

    /// Sends one request and waits for the response headers. When the request never left
    /// the proxy (no connection could be made), it comes back with the error, so the caller
    /// may send it elsewhere.
    /// `cut`, if any, resets the request's stream when it says so, even while the backend
    /// is not reading (see [`Cut`](crate::http2::Cut)); a tonic `Channel` does without.
    pub(crate) fn try_send<'a, C: Cut + 'static>(
        &'a self,
        request: Request<BoxBody>,
        cut: Option<&'a Arc<C>>,
    ) -> impl Future<Output = Result<Response<UpstreamBody>, Unsent>> + 'a {
        // Not async itself: the request is held once, by the transport's own future.
        match &self.inner.transport {
            Transport::Pool(pool) => Either::Left(self.send_pooled(pool, request, cut)),
            Transport::Channel { channel, .. } => {
                Either::Right(self.send_on_channel(channel, request))
            }
        }
    }

    /// Sends on a tonic `Channel` (a user's, [`Upstream::from_channel`]).
    async fn send_on_channel(
        &self,
        channel: &tonic::transport::Channel,
        request: Request<BoxBody>,
    ) -> Result<Response<UpstreamBody>, Unsent> {
        use tower_service::Service;
        let mut channel = channel.clone();
        let sent = async {
            std::future::poll_fn(|cx| channel.poll_ready(cx)).await?;
            channel
                .call(request.map(|body| tonic::body::Body::new(body::EndsOnData::new(body))))
                .await
        };
        // Boxed: tower's futures are large, and this is not the main path.
        Box::pin(sent)
            .await
            .map(|response| response.map(UpstreamBody::Tonic))
            .map_err(|e| Unsent {
                error: self.request_error(e),
                request: None,
            })
    }

    /// Sends on the pool's connections; a connection found closed (GOAWAY, lost) before the
    /// request left costs one retry on another connection.
    async fn send_pooled<C: Cut + 'static>(
        &self,
        pool: &Pool,
        mut request: Request<BoxBody>,
        cut: Option<&Arc<C>>,
    ) -> Result<Response<UpstreamBody>, Unsent> {
        let mut retried = false;
        loop {
            let (mut connection, in_flight) = match pool.connection().await {
                Ok(connection) => connection,
                Err(error) => {
                    return Err(Unsent {
                        error,
                        request: Some(request),
                    })
                }
            };
            let failed = match exchange::start(&mut connection, request, cut) {
                Ok(response) => {
                    let unanswered = connection.unanswered(&response);
                    return match exchange::response(response, in_flight, unanswered).await {
                        Ok(response) => Ok(response),
                        Err(e) => Err(Unsent {
                            error: self.request_error(e),
                            request: None,
                        }),
                    };
                }
                Err(NotStarted::Closed(back, _)) if !retried => {
                    retried = true;
                    request = *back;
                    continue;
                }
                Err(NotStarted::Closed(back, e)) => Unsent {
                    error: self.request_error(e),
                    request: Some(*back),
                },
                Err(NotStarted::Failed(e)) => Unsent {
                    error: self.request_error(e),
                    request: None,
                },
            };
            return Err(failed);
        }
    }

    /// Sends one HTTP/2 request over this upstream's connections and waits for the response
    /// headers — for tools that frame gRPC messages themselves (replaying recorded calls).
    /// `path` is `/pkg.Service/Method`; the request's own URI is replaced.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    /// use http_body_util::{BodyExt, Full};
    /// let upstream = grpcproxy::Upstream::new("http://127.0.0.1:50052")?;
    /// // One empty, uncompressed message.
    /// let body = Full::new(bytes::Bytes::from_static(&[0, 0, 0, 0, 0]));
    /// let mut request = http::Request::new(body);
    /// request.headers_mut().insert("content-type", "application/grpc".parse()?);
    /// request.headers_mut().insert("te", "trailers".parse()?);
    /// let response = upstream.send("/pkg.Svc/Get", request).await?;
    /// let collected = response.into_body().collect().await?;
    /// println!("{:?}", collected.trailers());
    /// # Ok(()) }
    /// ```
    pub async fn send<B>(
        &self,
        path: &str,
        request: Request<B>,
    ) -> Result<
        Response<impl http_body::Body<Data = Bytes, Error = crate::boxed::BoxError>>,
        UpstreamError,
    >
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<crate::boxed::BoxError>,
    {
        use http_body_util::BodyExt;
        let path: http::uri::PathAndQuery = path.parse().map_err(|e| {
            UpstreamError::new(self.shared_address().clone(), UpstreamErrorKind::Request, e)
        })?;
        let (mut parts, body) = request.into_parts();
        parts.method = http::Method::POST;
        parts.uri = self.request_uri(path, None, None);
        let request = Request::from_parts(parts, body.map_err(Into::into).boxed_unsync());
        self.try_send(request, NO_CUT)
            .await
            .map_err(|unsent| unsent.error)
    }

    /// Makes one unary call to `path` with raw message bytes over this upstream's
    /// connections, and returns the response message — for health checks and tools.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::time::Duration;
    /// let upstream = grpcproxy::Upstream::new("http://127.0.0.1:50052")?;
    /// // grpc.health.v1.Health/Check with an empty HealthCheckRequest.
    /// let reply = upstream
    ///     .unary("/grpc.health.v1.Health/Check", bytes::Bytes::new(), Duration::from_secs(1))
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn unary(
        &self,
        path: &str,
        message: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, tonic::Status> {
        use http_body_util::BodyExt;
        let path: http::uri::PathAndQuery = path.parse().map_err(|_| {
            tonic::Status::invalid_argument(format!("invalid method path {path:?}"))
        })?;
        let mut frame = bytes::BytesMut::new();
        crate::frame::encode(false, &message, &mut frame);
        let body = http_body_util::Full::new(frame.freeze())
            .map_err(|never| match never {})
            .boxed_unsync();
        let mut request = Request::new(body);
        *request.method_mut() = http::Method::POST;
        *request.uri_mut() = self.request_uri(path, None, None);
        let headers = request.headers_mut();
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/grpc"),
        );
        headers.insert(http::header::TE, http::HeaderValue::from_static("trailers"));
        headers.insert("grpc-timeout", crate::deadline::format_timeout(timeout));
        let call = async {
            let response = self
                .try_send(request, NO_CUT)
                .await
                .map_err(|unsent| unsent.error.to_status())?;
            if let Some(status) = tonic::Status::from_header_map(response.headers()) {
                if status.code() != tonic::Code::Ok {
                    return Err(status);
                }
            }
            let collected = response.into_body().collect().await.map_err(|e| {
                crate::status::status_from_upstream_error(e.as_ref(), self.address())
            })?;
            let trailers = collected.trailers().cloned().unwrap_or_default();
            let data = collected.to_bytes();
            match tonic::Status::from_header_map(&trailers) {
                Some(status) if status.code() != tonic::Code::Ok => return Err(status),
                _ => {}
            }
            match crate::frame::split(data).as_deref() {
                Ok([(header, message)]) if !header.compressed => Ok(message.clone()),
                _ => Err(tonic::Status::internal(format!(
                    "backend {} sent no single uncompressed message",
                    self.address()
                ))),
            }
        };
        tokio::time::timeout(timeout, call)
            .await
            .unwrap_or_else(|_| {
                Err(tonic::Status::deadline_exceeded(format!(
                    "backend {} did not answer in {timeout:?}",
                    self.address()
                )))
            })
    }

    fn request_error(
        &self,
        err: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> UpstreamError {
        UpstreamError::new(
            self.shared_address().clone(),
            UpstreamErrorKind::Request,
            err,
        )
    }
}

/// A request that failed; `request` is given back when it never reached the backend.
#[derive(Debug)]
pub(crate) struct Unsent {
    pub(crate) error: UpstreamError,
    pub(crate) request: Option<Request<BoxBody>>,
}

/// No [`Cut`] for a request: its stream ends with its body.
const NO_CUT: Option<&Arc<PipeCut>> = None;

/// Connection counters of an [`Upstream`].
///
/// ```
/// let upstream = grpcproxy::Upstream::new("http://127.0.0.1:50052").unwrap();
/// let stats: grpcproxy::UpstreamStats = upstream.stats();
/// assert_eq!(stats.connects, 0); // connections are made at the first call
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UpstreamStats {
    /// Connections made (TCP, TLS and HTTP/2 handshakes all succeeded).
    pub connects: u64,
    /// Connection attempts that failed.
    pub connect_failures: u64,
    /// Connections open now (closed ones, by either side, are no longer counted).
    pub open_connections: usize,
    /// Connections that took no more calls after the proxy reset 5 streams on them before
    /// the backend answered any later stream, or reset one with 10 opened since the last
    /// answer (a rapid-reset flood passing through): HTTP/2
    /// servers close a connection that carries too many resets of streams they have not
    /// accepted yet, failing every call on it.
    pub rotated: u64,
}

/// Configures an [`Upstream`]: connections, timeouts, HTTP/2 settings, TLS.
///
/// ```no_run
/// use grpcproxy::Upstream;
/// use std::time::Duration;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let ca = std::fs::read("ca.pem")?;
/// let upstream = Upstream::builder("https://10.0.0.7:443")?
///     .ca_certificates_pem(&ca)?
///     .server_name("backend.internal")?
///     .connections(2)
///     .connect_timeout(Duration::from_secs(2))
///     .build()?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct UpstreamBuilder {
    scheme: Scheme,
    authority: Authority,
    host: String,
    size: PoolSize,
    connect_timeout: Duration,
    settings: Http2Settings,
    rewrite_authority: bool,
    roots: Option<Roots>,
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    server_name: Option<ServerName<'static>>,
}

impl UpstreamBuilder {
    fn new(url: &str) -> Result<Self, UpstreamConfigError> {
        let invalid = |reason: &str| UpstreamConfigError::InvalidUrl {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let uri: Uri = url
            .parse()
            .map_err(|e: http::uri::InvalidUri| invalid(&e.to_string()))?;
        let scheme =
            uri.scheme()
                .cloned()
                .ok_or_else(|| UpstreamConfigError::UnsupportedScheme {
                    url: url.to_owned(),
                })?;
        let default_port = match scheme.as_str() {
            "http" => 80,
            "https" => 443,
            _ => {
                return Err(UpstreamConfigError::UnsupportedScheme {
                    url: url.to_owned(),
                })
            }
        };
        if uri.path() != "/" && !uri.path().is_empty() {
            return Err(invalid("a path is not allowed; give scheme://host:port"));
        }
        let authority = uri.authority().cloned().ok_or_else(|| invalid("no host"))?;
        if authority.as_str().contains('@') {
            return Err(invalid("user info is not allowed"));
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = authority.port_u16().unwrap_or(default_port);
        let authority = Authority::try_from(format_address(&host, port).as_str())
            .map_err(|e| invalid(&e.to_string()))?;
        Ok(Self {
            scheme,
            authority,
            host,
            size: PoolSize {
                min: 1,
                max: 64,
                streams_per_connection: 100,
            },
            connect_timeout: Duration::from_secs(5),
            settings: Http2Settings::default(),
            rewrite_authority: false,
            roots: None,
            identity: None,
            server_name: None,
        })
    }

    /// How many HTTP/2 connections calls are spread over from the start (default 1). Each
    /// connection is driven by one task, so more connections spread a busy backend over
    /// more cores.
    pub fn connections(mut self, n: usize) -> Self {
        self.size.min = n.max(1);
        self
    }

    /// Calls one connection carries before the next call opens another connection
    /// (default 100, under the usual server limits of 128 to 200 streams per connection).
    pub fn max_streams_per_connection(mut self, n: usize) -> Self {
        self.size.streams_per_connection = n.max(1);
        self
    }

    /// The most connections made to this backend (default 64). Past that, calls share the
    /// connections evenly, beyond [`UpstreamBuilder::max_streams_per_connection`] each.
    pub fn max_connections(mut self, n: usize) -> Self {
        self.size.max = n.max(1);
        self
    }

    /// How long a TCP + TLS + HTTP/2 handshake may take (default 5 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// HTTP/2 settings for the connections to this backend.
    pub fn http2(mut self, settings: Http2Settings) -> Self {
        self.settings = settings;
        self
    }

    /// Send the backend's own `host:port` as `:authority` instead of the client's.
    pub fn rewrite_authority(mut self, rewrite: bool) -> Self {
        self.rewrite_authority = rewrite;
        self
    }

    /// Trust only the CA certificates in this PEM bundle (default: the system's roots).
    pub fn ca_certificates_pem(mut self, pem: &[u8]) -> Result<Self, UpstreamConfigError> {
        self.roots = Some(Roots::Custom(tls::parse_certificates(pem, "CA bundle")?));
        Ok(self)
    }

    /// Present this client certificate chain and key (mutual TLS).
    pub fn client_identity_pem(
        mut self,
        cert_pem: &[u8],
        key_pem: &[u8],
    ) -> Result<Self, UpstreamConfigError> {
        let chain = tls::parse_certificates(cert_pem, "client certificate")?;
        let key = tls::parse_private_key(key_pem)?;
        self.identity = Some((chain, key));
        Ok(self)
    }

    /// The name to send as SNI and verify the certificate against (default: the URL's host).
    pub fn server_name(mut self, name: &str) -> Result<Self, UpstreamConfigError> {
        let name = ServerName::try_from(name.to_owned())
            .map_err(|_| UpstreamConfigError::InvalidServerName(name.to_owned()))?;
        self.server_name = Some(name);
        Ok(self)
    }

    /// Finishes the upstream. Nothing connects until the first call.
    pub fn build(self) -> Result<Upstream, UpstreamConfigError> {
        let tls = if self.scheme == Scheme::HTTPS {
            let config = tls::client_config(&self.roots.unwrap_or_default(), self.identity)?;
            let name = match self.server_name {
                Some(name) => name,
                None => ServerName::try_from(self.host.clone())
                    .map_err(|_| UpstreamConfigError::InvalidServerName(self.host.clone()))?,
            };
            Some((tokio_rustls::TlsConnector::from(config), name))
        } else {
            if self.roots.is_some() || self.identity.is_some() || self.server_name.is_some() {
                return Err(UpstreamConfigError::TlsOnPlaintext);
            }
            None
        };
        let endpoint = Endpoint {
            address: Arc::from(self.authority.as_str()),
            tls,
            settings: self.settings,
            connect_timeout: self.connect_timeout,
        };
        Ok(Upstream {
            inner: Arc::new(Inner {
                scheme: self.scheme,
                authority: self.authority,
                rewrite_authority: self.rewrite_authority,
                transport: Transport::Pool(Pool::new(endpoint, self.size)),
            }),
        })
    }
}

fn format_address(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Bytes is the only data type the proxy forwards.
const _: fn() = || {
    fn data_is_bytes<B: http_body::Body<Data = Bytes>>() {}
    data_is_bytes::<BoxBody>();
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_with_default_ports() {
        assert_eq!(
            Upstream::new("http://example.com").unwrap().address(),
            "example.com:80"
        );
        assert_eq!(
            Upstream::new("http://[::1]:9000").unwrap().address(),
            "[::1]:9000"
        );
    }

    #[test]
    fn bad_urls_are_named_errors() {
        for (url, want) in [
            ("127.0.0.1:50051", "must start with http://"),
            ("grpc://x:1", "must start with http://"),
            ("http://x:1/path", "a path is not allowed"),
            ("http://", "invalid upstream URL"),
        ] {
            let err = Upstream::new(url).unwrap_err().to_string();
            assert!(err.contains(want), "{url}: {err}");
        }
    }

    #[test]
    fn tls_options_need_https() {
        let err = Upstream::builder("http://x:1")
            .unwrap()
            .server_name("x")
            .unwrap()
            .build();
        assert!(matches!(err, Err(UpstreamConfigError::TlsOnPlaintext)));
    }
}
