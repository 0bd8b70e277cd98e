//! Serving a proxy on its own: an HTTP/2 listener with graceful shutdown (HTTP/1.1 too,
//! for gRPC-Web, with [`ServerOptions::http1`]).
//!
//! HTTP/2 client connections are served with h2 directly: one task per connection drives
//! it, one task per call runs the service and pipes its response. HTTP/1.1 ones are served
//! by hyper (`http1.rs`), each request handed to the same service.

mod connection;
mod cut;
mod http1;
mod idle_watch;
mod open_streams;
mod stream;

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::OwnedSemaphorePermit;
use tower_service::Service;

use crate::boxed::BoxError;
use crate::{ConnectionInfo, Http2Settings, RecvBody};
use connection::Connection;

pub use crate::server_tls::{tls_config, ReloadableTls, ServerTlsError};

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
    /// Watched by one thread for the whole process (`grpcproxy-idle`, started with the
    /// first such connection), which looks every eighth of the timeout (1 s at most), so a
    /// connection closes within an eighth of the timeout after it; calls pay no timer.
    pub idle_timeout: Option<Duration>,
    /// Close (GOAWAY) a client connection this long after it opened, whatever it carries:
    /// its client reconnects, and behind an L4 balancer lands on whichever replica the
    /// balancer picks (a new replica gets its share). In-flight calls finish, for up to
    /// `max_connection_age_grace`. `None` (the default): connections live on.
    pub max_connection_age: Option<Duration>,
    /// Spread of the age, as a fraction (0.1: each connection's age is drawn within ±10 %),
    /// so that connections opened together do not all close together.
    pub max_connection_age_jitter: f64,
    /// How long calls on an aged connection may still run after its GOAWAY; then the
    /// connection closes. `None`: until they finish.
    pub max_connection_age_grace: Option<Duration>,
    /// Serve HTTP/1.1 clients too, for gRPC-Web from browsers: with a service that
    /// answers gRPC-Web ([`GrpcWeb`](crate::web::GrpcWeb)), which refuses anything else
    /// over HTTP/1.1. A TLS listener then offers ALPN `http/1.1` after `h2`. Off (the
    /// default): an HTTP/1.1 client gets `505 HTTP Version Not Supported`.
    ///
    /// HTTP/1.1 connections close gracefully on drain, idle timeout and maximum age (the
    /// response under way finishes first: `max_connection_age_grace` does not apply).
    pub http1: bool,
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
    aged: AtomicU64,
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

    /// Client connections closed because they reached `max_connection_age`.
    pub fn connections_aged(&self) -> u64 {
        self.aged.load(Ordering::Relaxed)
    }

    pub(super) fn aged(&self) {
        self.aged.fetch_add(1, Ordering::Relaxed);
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
            max_connection_age: None,
            max_connection_age_jitter: 0.1,
            max_connection_age_grace: None,
            http1: false,
            stats: Arc::default(),
        }
    }
}

/// Serves `service` (typically a [`TransparentProxy`](crate::TransparentProxy)) on
/// `listener` until `shutdown` completes, then stops accepting, sends GOAWAY, and lets
/// in-flight calls finish for up to [`ServerOptions::drain_timeout`]. Connections still
/// queued on the listener when it closes are accepted and drained too, not reset.
///
/// The service gets each call as a request whose body is a [`RecvBody`]; every request
/// carries a [`ConnectionInfo`] extension (with the client's certificates
/// over mutual TLS). On a cleartext listener, a client that speaks HTTP/1 gets a
/// `505 HTTP Version Not Supported` answer; a TLS listener offers only ALPN `h2` (both
/// unless [`ServerOptions::http1`] serves HTTP/1.1 too). The
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
pub async fn serve<S: CallService>(
    listener: TcpListener,
    service: S,
    options: ServerOptions,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let local_addr = listener.local_addr()?;
    let tls = options.tls.clone().map(|config| {
        let config = if options.http1 {
            let mut config = (*config).clone();
            config.alpn_protocols.push(b"http/1.1".to_vec());
            Arc::new(config)
        } else {
            config
        };
        tokio_rustls::TlsAcceptor::from(config)
    });
    let h2 = options.http2.server_builder(options.max_concurrent_streams);
    let keepalive = options
        .http2
        .keep_alive_interval
        .map(|interval| (interval, options.http2.keep_alive_timeout));
    let (draining, drain_signal) = tokio::sync::watch::channel(false);
    // Cancelled when the drain times out: calls still open end with UNAVAILABLE.
    let cut = tokio_util::sync::CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    let connections =
        std::sync::Arc::new(tokio::sync::Semaphore::new(options.max_connections.max(1)));
    let drain_timeout = options.drain_timeout;
    let drain_cut = cut.clone();
    // Serves one accepted connection in a task of its own, holding its permit.
    let start = move |tasks: &mut tokio::task::JoinSet<()>,
                      stream: TcpStream,
                      remote_addr: SocketAddr,
                      permit: Option<OwnedSemaphorePermit>| {
        let open = OpenConnection::new(&options.stats);
        let _ = stream.set_nodelay(true);
        let info = ConnectionInfo {
            remote_addr: Some(remote_addr),
            local_addr: Some(local_addr),
            peer_certificates: None,
        };
        let connection = Connection {
            h2: h2.clone(),
            service: service.clone(),
            info,
            drain_signal: drain_signal.clone(),
            cut: cut.clone(),
            handshake_timeout: options.preface_timeout,
            idle_timeout: options.idle_timeout,
            age: options.max_connection_age.map(|age| {
                let jitter = options.max_connection_age_jitter.clamp(0.0, 1.0);
                (
                    age.mul_f64(1.0 + jitter * (2.0 * fastrand::f64() - 1.0)),
                    options.max_connection_age_grace,
                )
            }),
            aged: options.stats.clone(),
            keepalive,
            http1: options.http1,
        };
        let tls = tls.clone();
        while tasks.try_join_next().is_some() {}
        tasks.spawn(async move {
            let _open = (permit, open);
            match tls {
                None => connection.serve_cleartext(stream).await,
                Some(acceptor) => connection.serve_tls(acceptor, stream).await,
            }
        });
    };
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
        start(&mut tasks, stream, remote_addr, Some(permit));
    }
    // Connections the kernel has completed but this loop has not accepted yet would be
    // reset when the listener closes (a balancer in front has already handed them a
    // client): accept them too, as draining ones, so that what their clients sent first
    // is answered before the GOAWAY.
    let pending = pending_connections(listener);
    if !pending.is_empty() {
        tracing::debug!(
            connections = pending.len(),
            "serving the connections still queued on the closed listener"
        );
    }
    for (stream, remote_addr) in pending {
        let permit = connections.clone().try_acquire_owned().ok();
        start(&mut tasks, stream, remote_addr, permit);
    }
    let _ = draining.send(true);
    let drained = tokio::time::timeout(drain_timeout, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            connections = tasks.len(),
            "drain timeout reached; ending the calls still open with UNAVAILABLE and closing their connections"
        );
        // Each open call gets trailers saying why it ends; a moment to write them, then
        // whatever is left is dropped.
        drain_cut.cancel();
        let _ = tokio::time::timeout(CUT_GRACE, async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        tasks.shutdown().await;
    }
    Ok(())
}

/// Closes `listener`, first taking every connection queued on it (that the kernel has
/// completed and nobody has accepted yet), ready to be served; without this, closing it
/// would reset them.
fn pending_connections(listener: TcpListener) -> Vec<(TcpStream, SocketAddr)> {
    let mut pending = Vec::new();
    // Taken from the runtime, so that each accept asks the kernel itself rather than
    // the readiness tokio last saw.
    let listener = match listener.into_std() {
        Ok(listener) => listener,
        Err(e) => {
            tracing::warn!(error = %e, "the listener's queued connections are reset");
            return pending;
        }
    };
    loop {
        let accepted = listener.accept().and_then(|(stream, remote_addr)| {
            stream.set_nonblocking(true)?;
            Ok((TcpStream::from_std(stream)?, remote_addr))
        });
        match accepted {
            Ok(connection) => pending.push(connection),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return pending,
            Err(e) => {
                // Out of file descriptors and the like: the rest are reset.
                tracing::warn!(error = %e, "accepting a connection queued on the closing listener failed");
                return pending;
            }
        }
    }
}

/// How long connections get, once the drain timed out, to send the calls still open their
/// UNAVAILABLE trailers.
const CUT_GRACE: Duration = Duration::from_secs(1);

/// What [`serve`] serves: a cloneable tower service that answers every call (it never
/// fails: errors are gRPC statuses in its responses) and can move to the worker threads.
/// Every such service is one, [`TransparentProxy`](crate::TransparentProxy) first.
///
/// ```
/// use grpcproxy::{mq::NoQueue, server::CallService, SingleUpstream, TransparentProxy, Upstream};
///
/// fn servable(_: impl CallService) {}
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let backend = Upstream::new("http://127.0.0.1:50052")?;
/// servable(TransparentProxy::new(NoQueue, SingleUpstream::new(backend)));
/// # Ok(()) }
/// ```
pub trait CallService:
    Service<
        Request<RecvBody>,
        Response = Response<Self::Body>,
        Error = Infallible,
        Future = Self::Call,
    > + Clone
    + Send
    + 'static
{
    /// The body of its responses.
    type Body: http_body::Body<Data = Bytes, Error: Into<BoxError>> + Send + 'static;
    /// The future of one call.
    type Call: Future<Output = Result<Response<Self::Body>, Infallible>> + Send + 'static;
}

impl<S, B> CallService for S
where
    S: Service<Request<RecvBody>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Body = B;
    type Call = S::Future;
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
