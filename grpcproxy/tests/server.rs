//! grpcproxy's own HTTP/2 server ([`grpcproxy::server::serve`]) against clients and
//! backends written frame by frame: what its client connections allow, and how a connection
//! it closes ends the calls on it.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use grpcproxy::server::ServerOptions;
use grpcproxy::{Http2Settings, ProxyOptions};
use grpcproxy_testing::raw::{channel_body, grpc_response, read_request, RawBackend};
use support::{serve_proxy, serve_proxy_with};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A 16-byte message in a DATA frame of its own.
fn tick() -> Bytes {
    grpcproxy_testing::raw::grpc_frame(false, &[7; 16])
}

/// The head of a gRPC request for `path` on `proxy`, for an h2 client.
fn grpc_head(proxy: std::net::SocketAddr, path: &str) -> http::Request<()> {
    http::Request::post(format!("http://{proxy}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap()
}

/// A backend on h2 itself that never reads a request body (its window: h2's default 64
/// KiB) and never answers, with its own budget for small frames raised so that only the
/// proxy's is tested.
async fn backend_that_never_reads() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((io, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut connection = h2::server::Builder::new()
                    .data_frame_budget(usize::MAX >> 1)
                    .handshake::<_, Bytes>(io)
                    .await
                    .unwrap();
                let mut held = Vec::new();
                while let Some(Ok(call)) = connection.accept().await {
                    held.push(call);
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_streaming_small_messages_to_a_slow_backend_keeps_its_connection() {
    // h2 charges every small DATA frame a connection holds unread against a budget and
    // closes the connection (GOAWAY ENHANCE_YOUR_CALM) when it runs out. A backend that
    // reads slowly leaves a client's small messages waiting in the proxy, up to the
    // stream's window (1 MiB: about 50,000 frames of this size); h2's default budget (half
    // the connection window) ran out after about 4,500 and cut the client's connection.
    let backend = backend_that_never_reads().await;
    let proxy = serve_proxy(&format!("http://{backend}"), ProxyOptions::default()).await;

    let io = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let (client, connection) = h2::client::Builder::new()
        .initial_window_size(16 << 20)
        .initial_connection_window_size(16 << 20)
        .data_frame_budget(usize::MAX >> 1)
        .handshake::<_, Bytes>(io)
        .await
        .unwrap();
    let connection = tokio::spawn(connection);
    let request = grpc_head(proxy.addr, "/pkg.Upload/Ticks");
    let mut client = client.ready().await.unwrap();
    let (_response, mut upload) = client.send_request(request, false).unwrap();

    // Send as flow control allows, until it stops allowing for half a second.
    let mut sent = 0usize;
    loop {
        upload.reserve_capacity(tick().len());
        let capacity = std::future::poll_fn(|cx| upload.poll_capacity(cx));
        match tokio::time::timeout(Duration::from_millis(500), capacity).await {
            Ok(Some(Ok(n))) if n >= tick().len() => {}
            Ok(Some(Ok(_))) => continue,
            Ok(ended) => panic!("the upload ended after {sent} messages: {ended:?}"),
            Err(_) => break, // no window left: held back by flow control
        }
        if let Err(e) = upload.send_data(tick(), false) {
            panic!("the proxy closed the connection after {sent} messages: {e}");
        }
        sent += 1;
        if sent.is_multiple_of(64) {
            tokio::task::yield_now().await;
        }
    }
    assert!(sent > 40_000, "held back after {sent} messages");
    assert!(
        !connection.is_finished(),
        "the proxy closed the client's connection: {:?}",
        connection.await
    );
    eprintln!("small uploads: {sent} messages of 21 bytes in flight, the connection open");
}

/// What a backend saw of each call's request body: its bytes, or the error that ended it.
type Seen = Arc<Mutex<Vec<Result<usize, String>>>>;

/// A backend that answers each call's headers at once and records how its request body
/// ended; the response ends with it.
async fn recording_backend() -> (RawBackend, Seen) {
    let seen = Seen::default();
    let log = seen.clone();
    let backend = RawBackend::start(move |request: http::Request<hyper::body::Incoming>| {
        let log = log.clone();
        async move {
            let (tx, body) = channel_body();
            tokio::spawn(async move {
                let ended = read_request(request.into_body()).await;
                log.lock().unwrap().push(
                    ended
                        .map(|(bytes, _)| bytes.len())
                        .map_err(|e| format!("{e:?}")),
                );
                drop(tx);
            });
            grpc_response(body)
        }
    })
    .await;
    (backend, seen)
}

/// One HTTP/2 frame.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    out.extend([kind, flags]);
    out.extend(stream.to_be_bytes());
    out.extend(payload);
    out
}

/// A header field as an HPACK literal without indexing, with a new name.
fn literal(name: &str, value: &str) -> Vec<u8> {
    let mut out = vec![0, name.len() as u8];
    out.extend(name.as_bytes());
    out.push(value.len() as u8);
    out.extend(value.as_bytes());
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_closed_by_keepalive_fails_its_calls_at_the_backend() {
    // A client that goes silent mid-call: the proxy's PINGs go unanswered and it drops the
    // connection. The call's request half must end as failed at the backend, never as if
    // the client had finished sending.
    let (backend, seen) = recording_backend().await;
    let server = ServerOptions {
        http2: Http2Settings {
            keep_alive_interval: Some(Duration::from_millis(200)),
            keep_alive_timeout: Duration::from_millis(300),
            ..Http2Settings::default()
        },
        ..ServerOptions::default()
    };
    let proxy = serve_proxy_with(&backend.url(), ProxyOptions::default(), server).await;

    let mut silent = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let mut headers = Vec::new();
    for (name, value) in [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", "/pkg.Svc/Upload"),
        (":authority", "localhost"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ] {
        headers.extend(literal(name, value));
    }
    let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    bytes.extend(frame(0x4, 0, 0, &[])); // SETTINGS
    bytes.extend(frame(0x1, 0x4, 1, &headers)); // HEADERS, END_HEADERS: the call opens
    bytes.extend(frame(0x0, 0, 1, &tick())); // one message, more to come
    silent.write_all(&bytes).await.unwrap();

    // Read (and never answer) until the proxy closes the connection.
    let started = std::time::Instant::now();
    let mut buf = vec![0; 64 << 10];
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        while let Ok(n) = silent.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "keepalive must close a silent client");
    eprintln!("silent client closed after {:?}", started.elapsed());

    for _ in 0..100 {
        if !seen.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "{seen:?}");
    let ended = &seen[0];
    assert!(
        ended.as_ref().is_err_and(|e| e.contains("CANCEL")),
        "the backend must see the request fail (reset CANCEL): {ended:?}"
    );
}

/// A service that is not ready the first time it is asked on each clone (it wakes the
/// caller at once), then forwards to the proxy: [`server::serve`] must wait for readiness
/// rather than call a service that has not said it is ready.
#[derive(Clone)]
struct ReadyOnSecondAsk<S> {
    inner: S,
    asked: bool,
    calls_before_ready: Arc<std::sync::atomic::AtomicUsize>,
}

impl<S, R> tower_service::Service<R> for ReadyOnSecondAsk<S>
where
    S: tower_service::Service<R>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), S::Error>> {
        if !self.asked {
            self.asked = true;
            cx.waker().wake_by_ref();
            return std::task::Poll::Pending;
        }
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> S::Future {
        if !self.asked {
            self.calls_before_ready
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        self.inner.call(request)
    }
}

/// A ping backend, and a proxy to it (for `serve` to serve); the backend lives as long as
/// its handle.
async fn proxy_to_ping_backend() -> (
    grpcproxy_testing::serve::TestServer,
    grpcproxy::TransparentProxy<grpcproxy::SingleUpstream, grpcproxy::mq::NoQueue>,
) {
    let (backend, _service) = grpcproxy_testing::serve::ping_backend().await;
    let upstream = grpcproxy::Upstream::new(&backend.url()).unwrap();
    let proxy = grpcproxy::TransparentProxy::new(
        grpcproxy::mq::NoQueue,
        grpcproxy::SingleUpstream::new(upstream),
    );
    (backend, proxy)
}

#[tokio::test]
async fn a_service_that_is_not_ready_yet_is_waited_for() {
    let (_backend, proxy) = proxy_to_ping_backend().await;
    let calls_before_ready = Arc::default();
    let service = ReadyOnSecondAsk {
        inner: proxy,
        asked: false,
        calls_before_ready: Arc::clone(&calls_before_ready),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(grpcproxy::server::serve(
        listener,
        service,
        ServerOptions::default(),
        async {
            let _ = stopped.await;
        },
    ));
    let mut client = grpcproxy_testing::serve::ping_client(addr).await;
    for i in 0..3 {
        let reply = client
            .ping(grpcproxy_testing::serve::ping(format!("ready {i}")))
            .await
            .unwrap();
        assert_eq!(reply.get_ref().value, format!("ready {i}"));
    }
    assert_eq!(
        calls_before_ready.load(std::sync::atomic::Ordering::Relaxed),
        0,
        "called before it was ready"
    );
    let _ = stop.send(());
    server.await.unwrap().unwrap();
}

/// A backend that answers each call after `wait`, echoing its request.
async fn slow_echo(wait: Duration) -> RawBackend {
    RawBackend::start(
        move |request: http::Request<hyper::body::Incoming>| async move {
            let (body, _) = read_request(request.into_body()).await.unwrap_or_default();
            tokio::time::sleep(wait).await;
            grpc_response(grpcproxy_testing::raw::frames_body(vec![
                http_body::Frame::data(body),
                http_body::Frame::trailers(grpcproxy_testing::raw::header_map(&[(
                    "grpc-status",
                    "0",
                )])),
            ]))
        },
    )
    .await
}

fn aged(age: Duration, grace: Option<Duration>) -> ServerOptions {
    ServerOptions {
        drain_timeout: Duration::from_secs(1),
        max_connection_age: Some(age),
        max_connection_age_jitter: 0.0,
        max_connection_age_grace: grace,
        ..ServerOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_past_its_age_is_closed_after_its_calls_finish() {
    let backend = slow_echo(Duration::from_millis(600)).await;
    let options = aged(Duration::from_millis(300), None);
    let stats = options.stats.clone();
    let proxy = serve_proxy_with(&backend.url(), ProxyOptions::default(), options).await;
    let client = grpcproxy_testing::raw::RawClient::connect(proxy.addr).await;
    let started = std::time::Instant::now();
    let frame = grpcproxy_testing::raw::grpc_frame(false, b"aged");
    let body = grpcproxy_testing::raw::frames_body(vec![http_body::Frame::data(frame.clone())]);
    let response = client.call("/a.S/M", http::HeaderMap::new(), body).await;
    assert_eq!(
        response.grpc_status(),
        Some("0"),
        "the call in flight at the GOAWAY finishes"
    );
    assert_eq!(response.data, frame);
    assert!(started.elapsed() >= Duration::from_millis(600));
    for _ in 0..100 {
        if client.is_closed() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        client.is_closed(),
        "the client was told to go (GOAWAY) at 300 ms"
    );
    assert_eq!(stats.connections_aged(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_past_the_age_grace_are_cut() {
    let backend = slow_echo(Duration::from_secs(3)).await;
    let options = aged(Duration::from_millis(200), Some(Duration::from_millis(200)));
    let proxy = serve_proxy_with(&backend.url(), ProxyOptions::default(), options).await;
    let client = grpcproxy_testing::raw::RawClient::connect(proxy.addr).await;
    let started = std::time::Instant::now();
    let body = grpcproxy_testing::raw::frames_body(vec![http_body::Frame::data(
        grpcproxy_testing::raw::grpc_frame(false, b"too slow"),
    )]);
    // The connection is dropped under the call: the client sees an error (RawClient
    // panics on a failed send) or a failed status, never the answer.
    let call =
        tokio::spawn(async move { client.call("/a.S/M", http::HeaderMap::new(), body).await });
    let outcome = call.await;
    let took = started.elapsed();
    match outcome {
        Err(failed) => assert!(failed.is_panic()),
        Ok(response) => assert_ne!(response.grpc_status(), Some("0"), "{response:?}"),
    }
    assert!(
        took >= Duration::from_millis(350) && took < Duration::from_secs(2),
        "cut after {took:?}: age 200 ms + grace 200 ms"
    );
    assert!(
        support::all_streams_closed(&proxy.stats).await,
        "the backend call ended too"
    );
}

/// A backend on h2 itself that answers every call with `messages` DATA frames (message
/// `i` is 1,000 bytes of `i`), then trailers `grpc-status: 0` and `x-last: yes`, all at once.
async fn backend_that_answers_at_once(messages: u8) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((io, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut connection = h2::server::handshake(io).await.unwrap();
                while let Some(Ok((_request, mut reply))) = connection.accept().await {
                    let head = http::Response::builder()
                        .header("content-type", "application/grpc")
                        .body(())
                        .unwrap();
                    let mut send = reply.send_response(head, false).unwrap();
                    for i in 0..messages {
                        let message = grpcproxy_testing::raw::grpc_frame(false, &[i; 1_000]);
                        send.send_data(message, false).unwrap();
                    }
                    let mut trailers = http::HeaderMap::new();
                    trailers.insert("grpc-status", "0".parse().unwrap());
                    trailers.insert("x-last", "yes".parse().unwrap());
                    send.send_trailers(trailers).unwrap();
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_gets_every_message_in_order_then_the_trailers() {
    // The response pipe takes the next frame while earlier data still waits for the
    // client's window: a DATA frame waits in the pipe, trailers go behind the data. A client
    // with a 100-byte window that reads slowly must still get every byte in order, then the
    // trailers, whatever the backend had sent at once.
    let backend = backend_that_answers_at_once(5).await;
    let proxy = serve_proxy(&format!("http://{backend}"), ProxyOptions::default()).await;

    let io = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let (client, connection) = h2::client::Builder::new()
        .initial_window_size(100)
        .handshake::<_, Bytes>(io)
        .await
        .unwrap();
    tokio::spawn(connection);
    let request = grpc_head(proxy.addr, "/pkg.Download/Five");
    let mut client = client.ready().await.unwrap();
    let (response, mut upload) = client.send_request(request, false).unwrap();
    upload
        .send_data(grpcproxy_testing::raw::grpc_frame(false, b"go"), true)
        .unwrap();
    let response = tokio::time::timeout(Duration::from_secs(5), response)
        .await
        .expect("response head")
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let mut received = Vec::new();
    let read = async {
        while let Some(chunk) = body.data().await {
            let chunk = chunk.unwrap();
            received.extend_from_slice(&chunk);
            tokio::time::sleep(Duration::from_millis(5)).await;
            body.flow_control().release_capacity(chunk.len()).unwrap();
        }
        body.trailers().await.unwrap()
    };
    let trailers = tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("the whole body within 10 s")
        .expect("trailers");
    let expected: Vec<u8> = (0..5u8)
        .flat_map(|i| grpcproxy_testing::raw::grpc_frame(false, &[i; 1_000]).to_vec())
        .collect();
    assert_eq!(
        received.len(),
        expected.len(),
        "every byte of the 5 messages"
    );
    assert!(received == expected, "the messages in order, byte for byte");
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(trailers["x-last"], "yes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_queued_on_the_listener_when_the_server_stops_is_served_not_reset() {
    // A balancer in front (HAProxy in `mode tcp`) hands a client a connection as soon as
    // the kernel has completed it; closing the listener with it still queued would reset it
    // (grpcio: "Socket closed"), failing a call the client had already sent.
    let (_backend, proxy) = proxy_to_ping_backend().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    // One connection at a time: a second one waits on the listener, not accepted.
    let options = ServerOptions {
        max_connections: 1,
        drain_timeout: Duration::from_secs(5),
        ..ServerOptions::default()
    };
    let server = tokio::spawn(grpcproxy::server::serve(listener, proxy, options, async {
        let _ = stopped.await;
    }));
    let mut first = grpcproxy_testing::serve::ping_client(addr).await;
    first
        .ping(grpcproxy_testing::serve::ping("first"))
        .await
        .unwrap();

    let io = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (client, connection) = h2::client::handshake(io).await.unwrap();
    let driver = tokio::spawn(connection);
    let mut client = client.ready().await.unwrap();
    let head = grpc_head(addr, "/grpcproxy.testing.TestService/Ping");
    let (response, mut send) = client.send_request(head, false).unwrap();
    // PingRequest { value: "queued" }
    let request = grpcproxy_testing::raw::grpc_frame(false, b"\x0a\x06queued");
    send.send_data(request, true).unwrap();
    // The request reaches the queued connection's socket; then the server stops.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = stop.send(());

    let response = tokio::time::timeout(Duration::from_secs(5), response)
        .await
        .expect("answered within 5 s")
        .expect("the queued connection was served, not reset");
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let mut received = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        let _ = body.flow_control().release_capacity(chunk.len());
        received.extend_from_slice(&chunk);
    }
    let trailers = body.trailers().await.unwrap().expect("trailers");
    assert_eq!(trailers["grpc-status"], "0", "{trailers:?}");
    assert!(
        received.windows(6).any(|w| w == b"queued"),
        "the echo: {received:?}"
    );
    drop((first, client, send));
    server.await.unwrap().unwrap();
    driver.abort();
}
