//! Serving a proxy on its own: an HTTP/2-only listener with graceful shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tower_service::Service;

use crate::body::BoxError;
use crate::{ConnectionInfo, Http2Settings};

pub use crate::server_tls::{tls_config, ServerTlsError};

/// The HTTP/2 client connection preface every h2 client starts with.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What an HTTP/1 client gets: a definite answer rather than a dropped connection.
const HTTP1_ANSWER: &[u8] = b"HTTP/1.1 505 HTTP Version Not Supported\r\n\
content-type: text/plain; charset=utf-8\r\nconnection: close\r\ncontent-length: 40\r\n\r\n\
grpcproxy: gRPC needs HTTP/2 (h2/h2c)\r\n\r\n";

/// Settings of [`serve`].
///
/// ```
/// use grpcproxy::server::ServerOptions;
/// let options = ServerOptions { max_concurrent_streams: Some(1000), ..ServerOptions::default() };
/// ```
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// HTTP/2 settings for client connections.
    pub http2: Http2Settings,
    /// Streams one client connection may have open at once.
    pub max_concurrent_streams: Option<u32>,
    /// How long a new connection may take to send the HTTP/2 preface.
    pub preface_timeout: Duration,
    /// On shutdown, how long in-flight calls may take to finish before connections close.
    pub drain_timeout: Duration,
    /// Client connections served at once; further clients wait in the listen backlog.
    pub max_connections: usize,
    /// Terminate TLS with this configuration (see [`tls_config`]); `None`: cleartext h2c.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Close (GOAWAY) a client connection that has had no open stream for this long.
    pub idle_timeout: Option<Duration>,
    /// Where the server counts its connections; clone the `Arc` first to read them.
    pub stats: Arc<ServerStats>,
}

/// Connection counters of [`serve`], shared through [`ServerOptions::stats`].
///
/// ```
/// use grpcproxy::server::ServerOptions;
///
/// let options = ServerOptions::default();
/// let stats = options.stats.clone(); // keep a handle, then pass `options` to `serve`
/// assert_eq!(stats.open_connections(), 0);
/// assert_eq!(stats.connections_accepted(), 0);
/// ```
#[derive(Debug, Default)]
pub struct ServerStats {
    open: AtomicUsize,
    accepted: AtomicU64,
}

impl ServerStats {
    /// Client connections open now, from accept (handshake included) to close.
    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Client connections accepted since the server started.
    pub fn connections_accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }
}

/// Counts one client connection as open until dropped.
struct OpenConnection(Arc<ServerStats>);

impl OpenConnection {
    fn new(stats: &Arc<ServerStats>) -> Self {
        stats.accepted.fetch_add(1, Ordering::Relaxed);
        stats.open.fetch_add(1, Ordering::Relaxed);
        Self(stats.clone())
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            http2: Http2Settings::default(),
            max_concurrent_streams: Some(1024),
            preface_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(30),
            max_connections: 10_000,
            tls: None,
            idle_timeout: Some(Duration::from_secs(3600)),
            stats: Arc::default(),
        }
    }
}

/// Serves `service` (typically a [`TransparentProxy`](crate::TransparentProxy)) on
/// `listener` until `shutdown` completes, then stops accepting, sends GOAWAY, and lets
/// in-flight calls finish for up to [`ServerOptions::drain_timeout`].
///
/// Every request carries a [`ConnectionInfo`] extension (with the client's certificates
/// over mutual TLS). On a cleartext listener, a client that speaks HTTP/1 gets a
/// `505 HTTP Version Not Supported` answer; a TLS listener offers only ALPN `h2`. The
/// preface or TLS handshake must finish within [`ServerOptions::preface_timeout`].
///
/// ```no_run
/// use grpcproxy::{mq::NoQueue, server, SingleUpstream, TransparentProxy, Upstream};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let proxy = TransparentProxy::new(NoQueue, SingleUpstream::new(Upstream::new("http://127.0.0.1:50052")?));
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:50051").await?;
/// server::serve(listener, proxy, server::ServerOptions::default(), async {
///     let _ = tokio::signal::ctrl_c().await;
/// })
/// .await?;
/// # Ok(()) }
/// ```
pub async fn serve<S, B>(
    listener: TcpListener,
    service: S,
    options: ServerOptions,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()>
where
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let local_addr = listener.local_addr()?;
    let mut builder = http2::Builder::new(TokioExecutor::new());
    let settings = &options.http2;
    builder
        .timer(TokioTimer::new())
        .auto_date_header(false)
        .initial_stream_window_size(settings.initial_stream_window_size)
        .initial_connection_window_size(settings.initial_connection_window_size)
        .adaptive_window(settings.adaptive_window)
        .max_frame_size(settings.max_frame_size)
        .max_header_list_size(settings.max_header_list_size)
        .max_concurrent_streams(options.max_concurrent_streams)
        .keep_alive_interval(settings.keep_alive_interval)
        .keep_alive_timeout(settings.keep_alive_timeout);
    let (draining, drain_signal) = tokio::sync::watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    let connections =
        std::sync::Arc::new(tokio::sync::Semaphore::new(options.max_connections.max(1)));
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = connections.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let (stream, remote_addr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let open = OpenConnection::new(&options.stats);
        let _ = stream.set_nodelay(true);
        let info = ConnectionInfo {
            remote_addr: Some(remote_addr),
            local_addr: Some(local_addr),
            peer_certificates: None,
        };
        let connection = Connection {
            builder: builder.clone(),
            service: service.clone(),
            info,
            drain_signal: drain_signal.clone(),
            handshake_timeout: options.preface_timeout,
            idle_timeout: options.idle_timeout,
        };
        let tls = options.tls.clone().map(tokio_rustls::TlsAcceptor::from);
        while tasks.try_join_next().is_some() {}
        tasks.spawn(async move {
            let _open = (permit, open);
            match tls {
                None => connection.serve_cleartext(stream).await,
                Some(acceptor) => connection.serve_tls(acceptor, stream).await,
            }
        });
    }
    drop(listener);
    let _ = draining.send(true);
    let drained = tokio::time::timeout(options.drain_timeout, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            connections = tasks.len(),
            "drain timeout reached; closing the remaining connections"
        );
        tasks.shutdown().await;
    }
    Ok(())
}

/// One accepted client connection, about to be served.
struct Connection<S> {
    builder: http2::Builder<TokioExecutor>,
    service: S,
    info: ConnectionInfo,
    /// Becomes true when the server drains.
    drain_signal: tokio::sync::watch::Receiver<bool>,
    handshake_timeout: Duration,
    idle_timeout: Option<Duration>,
}

impl<S, B> Connection<S>
where
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    async fn serve_cleartext(self, stream: TcpStream) {
        match tokio::time::timeout(self.handshake_timeout, starts_with_preface(&stream)).await {
            Ok(Ok(true)) => self.serve(stream).await,
            Ok(Ok(false)) => answer_http1(stream).await,
            Ok(Err(_)) | Err(_) => {}
        }
    }

    async fn serve_tls(mut self, acceptor: tokio_rustls::TlsAcceptor, stream: TcpStream) {
        let peer = self.info.remote_addr;
        let tls = match tokio::time::timeout(self.handshake_timeout, acceptor.accept(stream)).await
        {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                tracing::debug!(peer = ?peer, error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(peer = ?peer, "TLS handshake timed out");
                return;
            }
        };
        if let Some(chain) = tls.get_ref().1.peer_certificates() {
            self.info.peer_certificates = Some(Arc::new(chain.to_vec()));
        }
        self.serve(tls).await;
    }

    async fn serve<T>(mut self, io: T)
    where
        T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
    {
        let peer = self.info.remote_addr;
        let streams = Arc::new(StreamCount::new());
        let service = WithConnectionInfo {
            inner: self.service,
            info: self.info,
            streams: streams.clone(),
        };
        let connection = self.builder.serve_connection(TokioIo::new(io), service);
        tokio::pin!(connection);
        let mut closing = false;
        let result = loop {
            tokio::select! {
                result = connection.as_mut() => break result,
                _ = self.drain_signal.wait_for(|drain| *drain), if !closing => {
                    closing = true;
                    connection.as_mut().graceful_shutdown();
                }
                () = idle(&streams, self.idle_timeout), if !closing => {
                    tracing::debug!(peer = ?peer, "closing an idle client connection");
                    closing = true;
                    connection.as_mut().graceful_shutdown();
                }
            }
        };
        if let Err(e) = result {
            tracing::debug!(peer = ?peer, error = %e, "client connection ended with an error");
        }
    }
}

/// The open streams of one connection, and since when it has had none. Plain atomics: a
/// stream opening or closing wakes nothing and touches no timer.
#[derive(Debug)]
struct StreamCount {
    open: AtomicUsize,
    started: std::time::Instant,
    /// When the last stream closed, in milliseconds since `started`.
    idle_since_ms: AtomicU64,
}

impl StreamCount {
    fn new() -> Self {
        Self {
            open: AtomicUsize::new(0),
            started: std::time::Instant::now(),
            idle_since_ms: AtomicU64::new(0),
        }
    }

    fn opened(&self) {
        self.open.fetch_add(1, Ordering::AcqRel);
    }

    fn closed(&self) {
        if self.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            let ms = self.started.elapsed().as_millis() as u64;
            self.idle_since_ms.store(ms, Ordering::Release);
        }
    }

    /// When the connection becomes idle for `timeout`, if no stream opens before; `None`
    /// while a stream is open.
    fn idle_at(&self, timeout: Duration) -> Option<tokio::time::Instant> {
        if self.open.load(Ordering::Acquire) > 0 {
            return None;
        }
        let since = Duration::from_millis(self.idle_since_ms.load(Ordering::Acquire));
        Some(tokio::time::Instant::from_std(
            self.started + since + timeout,
        ))
    }
}

/// Completes once no stream has been open for `timeout` (never without a timeout). One
/// timer per connection, moved only when it fires early: per-call work stays timer-free.
async fn idle(streams: &StreamCount, timeout: Option<Duration>) {
    let Some(timeout) = timeout else {
        return std::future::pending().await;
    };
    let sleep = tokio::time::sleep(timeout);
    tokio::pin!(sleep);
    loop {
        sleep.as_mut().await;
        let now = tokio::time::Instant::now();
        match streams.idle_at(timeout) {
            Some(idle_at) if now >= idle_at => return,
            Some(idle_at) => sleep.as_mut().reset(idle_at),
            None => sleep.as_mut().reset(now + timeout),
        }
    }
}

/// Waits until the first bytes tell HTTP/2 from anything else.
async fn starts_with_preface(stream: &TcpStream) -> io::Result<bool> {
    let mut buf = [0u8; PREFACE.len()];
    loop {
        let n = stream.peek(&mut buf).await?;
        if n == 0 {
            return Ok(false);
        }
        if buf[..n] != PREFACE[..n] {
            return Ok(false);
        }
        if n == PREFACE.len() {
            return Ok(true);
        }
        // Part of the preface arrived; wait for more without busy-looping.
        stream.readable().await?;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

async fn answer_http1(mut stream: TcpStream) {
    let _ = stream.write_all(HTTP1_ANSWER).await;
    let _ = stream.shutdown().await;
}

/// Adds the connection's [`ConnectionInfo`] to every request, and counts open streams.
#[derive(Debug, Clone)]
struct WithConnectionInfo<S> {
    inner: S,
    info: ConnectionInfo,
    streams: Arc<StreamCount>,
}

impl<S, B> hyper::service::Service<Request<Incoming>> for WithConnectionInfo<S>
where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone,
{
    type Response = Response<Counted<B>>;
    type Error = S::Error;
    type Future = CountedFuture<S::Future>;

    fn call(&self, mut request: Request<Incoming>) -> Self::Future {
        request.extensions_mut().insert(self.info.clone());
        self.streams.opened();
        let stream = OpenStream(self.streams.clone());
        CountedFuture {
            inner: self.inner.clone().call(request),
            stream: Some(stream),
        }
    }
}

/// One open stream of a connection, counted until dropped.
#[derive(Debug)]
struct OpenStream(Arc<StreamCount>);

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.closed();
    }
}

pin_project_lite::pin_project! {
    /// The service's response future; the stream stays counted in its body.
    #[derive(Debug)]
    struct CountedFuture<F> {
        #[pin]
        inner: F,
        stream: Option<OpenStream>,
    }
}

impl<F, B, E> Future for CountedFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<Counted<B>>, E>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let this = self.project();
        let response = std::task::ready!(this.inner.poll(cx))?;
        let stream = this.stream.take();
        std::task::Poll::Ready(Ok(response.map(|inner| Counted {
            inner,
            _stream: stream,
        })))
    }
}

pin_project_lite::pin_project! {
    /// A response body that keeps its stream counted as open.
    #[derive(Debug)]
    struct Counted<B> {
        #[pin]
        inner: B,
        _stream: Option<OpenStream>,
    }
}

impl<B: http_body::Body> http_body::Body for Counted<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
