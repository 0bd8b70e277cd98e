//! Raw HTTP/2 peers for byte-exact tests: a scripted backend and a client.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// An error type for scripted bodies; an `h2::Error` inside resets the stream with its reason.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A response or request body made of scripted frames.
pub type RawBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// One gRPC message frame: flag byte, big-endian length, payload.
pub fn grpc_frame(compressed: bool, payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(5 + payload.len());
    out.put_u8(compressed as u8);
    out.put_u32(payload.len() as u32);
    out.put_slice(payload);
    out.freeze()
}

/// A gRPC response (`200`, `content-type: application/grpc`) with `body`.
pub fn grpc_response(body: RawBody) -> Response<RawBody> {
    let mut response = Response::new(body);
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    response
}

/// A body of the given frames, in order; with no frames, a body that is over at once (so
/// a response carrying it is trailers-only: one HEADERS frame with END_STREAM).
pub fn frames_body(frames: Vec<Frame<Bytes>>) -> RawBody {
    if frames.is_empty() {
        return http_body_util::Empty::new()
            .map_err(|never| match never {})
            .boxed_unsync();
    }
    let stream = tokio_stream::iter(frames.into_iter().map(Ok::<_, BoxError>));
    StreamBody::new(stream).boxed_unsync()
}

/// A body fed through a channel: send frames, or an error to reset the stream.
pub fn channel_body() -> (mpsc::Sender<Result<Frame<Bytes>, BoxError>>, RawBody) {
    let (tx, rx) = mpsc::channel(16);
    (
        tx,
        StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx)).boxed_unsync(),
    )
}

/// Trailers with the given entries.
pub fn header_map(entries: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in entries {
        map.append(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            http::HeaderValue::from_str(value).unwrap(),
        );
    }
    map
}

type Handler = Arc<
    dyn Fn(Request<Incoming>) -> Pin<Box<dyn Future<Output = Response<RawBody>> + Send>>
        + Send
        + Sync,
>;

/// A scripted HTTP/2 backend: every request goes to one async handler.
#[derive(Debug)]
pub struct RawBackend {
    addr: SocketAddr,
    accepted: Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl RawBackend {
    /// Starts a backend on `127.0.0.1:0` answering every request with `handler`.
    pub async fn start<F, Fut>(handler: F) -> Self
    where
        F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<RawBody>> + Send + 'static,
    {
        Self::spawn(Arc::new(move |req| Box::pin(handler(req))), false).await
    }

    /// Like [`RawBackend::start`], but every connection is drained as soon as its first
    /// request arrives, as a server with a maximum connection age does: GOAWAY goes out
    /// at once, the streams already open finish, new streams need a new connection.
    pub async fn start_draining<F, Fut>(handler: F) -> Self
    where
        F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<RawBody>> + Send + 'static,
    {
        Self::spawn(Arc::new(move |req| Box::pin(handler(req))), true).await
    }

    async fn spawn(handler: Handler, drain_after_first: bool) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = accepted.clone();
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let _ = stream.set_nodelay(true);
                let handler = handler.clone();
                connections.spawn(async move {
                    let first = Arc::new(tokio::sync::Notify::new());
                    let arrived = first.clone();
                    let service = hyper::service::service_fn(move |req| {
                        arrived.notify_one();
                        let handler = handler.clone();
                        async move { Ok::<_, Infallible>(handler(req).await) }
                    });
                    // Header lists up to 1 MiB: limits under test are the proxy's.
                    let connection = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .auto_date_header(false)
                        .max_header_list_size(1 << 20)
                        .serve_connection(TokioIo::new(stream), service);
                    tokio::pin!(connection);
                    if drain_after_first {
                        tokio::select! {
                            _ = connection.as_mut() => return,
                            () = first.notified() => connection.as_mut().graceful_shutdown(),
                        }
                    }
                    let _ = connection.await;
                });
            }
        });
        Self {
            addr,
            accepted,
            task,
        }
    }

    /// How many TCP connections it has accepted.
    pub fn connections_accepted(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://addr`, for an upstream.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for RawBackend {
    fn drop(&mut self) {
        // Dropping the task drops its JoinSet, which aborts every connection task.
        self.task.abort();
    }
}

/// Everything the client received for one call.
#[derive(Debug)]
pub struct RawResponse {
    /// The HTTP status.
    pub status: StatusCode,
    /// The response headers.
    pub headers: HeaderMap,
    /// True when the headers ended the stream (a gRPC trailers-only response).
    pub trailers_only: bool,
    /// Every DATA byte, concatenated.
    pub data: Bytes,
    /// The trailers, if the stream ended with some.
    pub trailers: Option<HeaderMap>,
    /// The error that ended the stream instead, if any.
    pub error: Option<String>,
}

impl RawResponse {
    /// The `grpc-status`, from the trailers or (trailers-only) the headers.
    pub fn grpc_status(&self) -> Option<&str> {
        self.trailers
            .as_ref()
            .and_then(|t| t.get("grpc-status"))
            .or_else(|| self.headers.get("grpc-status"))
            .and_then(|v| v.to_str().ok())
    }
}

/// A raw HTTP/2 client connection.
#[derive(Debug)]
pub struct RawClient {
    sender: hyper::client::conn::http2::SendRequest<RawBody>,
    /// A second handle on the socket, to cut it from under hyper.
    socket: std::net::TcpStream,
}

impl RawClient {
    /// Connects to `addr` with cleartext HTTP/2.
    pub async fn connect(addr: SocketAddr) -> Self {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        Self::handshake(stream).await
    }

    /// Connects to `addr` from the local address `from` (another loopback address, such
    /// as 127.0.0.2, to be another client to the proxy).
    pub async fn connect_from(from: std::net::IpAddr, addr: SocketAddr) -> Self {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::new(from, 0)).unwrap();
        let stream = socket.connect(addr).await.unwrap();
        Self::handshake(stream).await
    }

    async fn handshake(stream: tokio::net::TcpStream) -> Self {
        stream.set_nodelay(true).unwrap();
        let socket = stream.into_std().unwrap();
        let handle = socket.try_clone().unwrap();
        let stream = tokio::net::TcpStream::from_std(socket).unwrap();
        let (sender, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(connection);
        Self {
            sender,
            socket: handle,
        }
    }

    /// True once the server closed the connection (GOAWAY or EOF).
    pub fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }

    /// Cuts the TCP connection at once, as a crashed client would (no GOAWAY, no resets).
    pub fn disconnect(self) {
        let _ = self.socket.shutdown(std::net::Shutdown::Both);
    }

    /// Sends a POST to `path` with `headers` (plus content-type and te when absent) and
    /// `body`, and collects the whole response.
    pub async fn call(&self, path: &str, headers: HeaderMap, body: RawBody) -> RawResponse {
        let response = self.start(path, headers, body).await;
        collect(response).await
    }

    /// Sends a request and returns the response once its headers arrived.
    pub async fn start(
        &self,
        path: &str,
        mut headers: HeaderMap,
        body: RawBody,
    ) -> Response<Incoming> {
        headers
            .entry("content-type")
            .or_insert(http::HeaderValue::from_static("application/grpc"));
        headers
            .entry("te")
            .or_insert(http::HeaderValue::from_static("trailers"));
        let mut request = Request::new(body);
        *request.method_mut() = http::Method::POST;
        *request.uri_mut() = format!("http://localhost{path}").parse().unwrap();
        *request.headers_mut() = headers;
        self.sender.clone().send_request(request).await.unwrap()
    }
}

/// Sends `request` on a new HTTP/1.1 connection to `addr` and collects the whole response
/// (a gRPC-Web call, a CORS preflight).
///
/// ```no_run
/// # async fn f(addr: std::net::SocketAddr) {
/// let request = http::Request::get("/").body(bytes::Bytes::new()).unwrap();
/// let response = grpcproxy_testing::raw::http1(addr, request).await;
/// println!("{}", response.status);
/// # }
/// ```
pub async fn http1(addr: SocketAddr, request: Request<Bytes>) -> RawResponse {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let mut request = request.map(http_body_util::Full::new);
    if !request.headers().contains_key(http::header::HOST) {
        let host = http::HeaderValue::try_from(addr.to_string()).unwrap();
        request.headers_mut().insert(http::header::HOST, host);
    }
    collect(sender.send_request(request).await.unwrap()).await
}

/// Reads a whole response: headers, every DATA byte, trailers or the error.
pub async fn collect(response: Response<Incoming>) -> RawResponse {
    let (parts, mut body) = response.into_parts();
    let trailers_only = body.is_end_stream();
    let mut data = BytesMut::new();
    let mut trailers = None;
    let mut error = None;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => match frame.into_data() {
                Ok(chunk) => data.extend_from_slice(&chunk),
                Err(frame) => trailers = frame.into_trailers().ok(),
            },
            Err(e) => {
                error = Some(format!("{e:?}"));
                break;
            }
        }
    }
    RawResponse {
        status: parts.status,
        headers: parts.headers,
        trailers_only,
        data: data.freeze(),
        trailers,
        error,
    }
}

/// Reads a request body to the end: every DATA byte and the trailers.
pub async fn read_request(body: Incoming) -> Result<(Bytes, Option<HeaderMap>), hyper::Error> {
    let collected = body.collect().await?;
    let trailers = collected.trailers().cloned();
    Ok((collected.to_bytes(), trailers))
}
