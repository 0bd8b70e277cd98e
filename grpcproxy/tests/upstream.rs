//! Upstream connections: lazy, a fixed number per backend, and tonic channels as upstreams.

mod support;

use grpcproxy::mq::NoQueue;
use grpcproxy::{ProxyOptions, ProxyRoutes, SingleUpstream, TransparentProxy, Upstream};
use grpcproxy_testing::pb::PingRequest;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use grpcproxy_testing::raw::{
    channel_body, frames_body, grpc_response, header_map, RawBackend, RawClient,
};
use grpcproxy_testing::serve::{ping_backend, ping_client};
use grpcproxy_testing::TestServer;
use http::{HeaderMap, Response};
use http_body::Frame;

async fn ok_backend() -> RawBackend {
    RawBackend::start(|_request| async {
        let mut response = Response::new(frames_body(vec![]));
        *response.headers_mut() =
            header_map(&[("content-type", "application/grpc"), ("grpc-status", "0")]);
        response
    })
    .await
}

#[tokio::test]
async fn connects_lazily_and_keeps_the_configured_number_of_connections() {
    let backend = ok_backend().await;
    let upstream = Upstream::builder(&backend.url())
        .unwrap()
        .connections(3)
        .build()
        .unwrap();
    let proxy = TransparentProxy::new(NoQueue, SingleUpstream::new(upstream));
    let server = TestServer::start(ProxyRoutes::new().fallback(proxy).into_routes()).await;
    assert_eq!(
        backend.connections_accepted(),
        0,
        "no connection before the first call"
    );
    let client = RawClient::connect(server.addr()).await;
    for _ in 0..12 {
        let response = client
            .call("/pkg.Svc/M", HeaderMap::new(), frames_body(vec![]))
            .await;
        assert_eq!(response.grpc_status(), Some("0"));
    }
    assert_eq!(
        backend.connections_accepted(),
        3,
        "calls are spread over exactly 3 connections"
    );
}

#[tokio::test]
async fn one_connection_by_default() {
    let backend = ok_backend().await;
    let (server, _stats) = support::proxy_to(&backend.url(), ProxyOptions::default()).await;
    let client = RawClient::connect(server.addr()).await;
    for _ in 0..5 {
        client
            .call("/pkg.Svc/M", HeaderMap::new(), frames_body(vec![]))
            .await;
    }
    assert_eq!(backend.connections_accepted(), 1);
}

#[tokio::test]
async fn a_tonic_channel_can_be_the_upstream() {
    let (backend, service) = ping_backend().await;
    let channel = tonic::transport::Endpoint::from_shared(backend.url())
        .unwrap()
        .connect_lazy();
    let upstream = Upstream::from_channel(channel, "ping-backend");
    assert_eq!(upstream.address(), "ping-backend");
    let proxy = TransparentProxy::new(NoQueue, SingleUpstream::new(upstream));
    let server = TestServer::start(ProxyRoutes::new().fallback(proxy).into_routes()).await;
    let mut client = ping_client(server.addr()).await;
    let reply = client
        .ping(PingRequest {
            value: "via channel".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(reply.get_ref().value, "via channel");
    assert_eq!(
        reply.metadata().get("test-client-trailer").unwrap(),
        "I like ending turtles."
    );
    let mut stream = client
        .ping_list(PingRequest::default())
        .await
        .unwrap()
        .into_inner();
    let mut n = 0;
    while stream.message().await.unwrap().is_some() {
        n += 1;
    }
    assert_eq!(n, 10);
    assert!(service.events().last_metadata().is_some());
}

#[tokio::test]
async fn unreachable_channel_upstream_is_unavailable() {
    let free = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{free}"))
        .unwrap()
        .connect_lazy();
    let proxy = TransparentProxy::new(
        NoQueue,
        SingleUpstream::new(Upstream::from_channel(channel, "gone")),
    );
    let server = TestServer::start(ProxyRoutes::new().fallback(proxy).into_routes()).await;
    let status = ping_client(server.addr())
        .await
        .ping(PingRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
}

#[derive(Default)]
struct LastRecord(std::sync::Mutex<Option<(String, Option<String>, tonic::Code)>>);

impl grpcproxy::CallObserver for LastRecord {
    fn call_ended(&self, call: &grpcproxy::CallRecord<'_>) {
        *self.0.lock().unwrap() = Some((
            call.backend.to_owned(),
            call.unreachable.map(str::to_owned),
            call.grpc_status,
        ));
    }
}

#[tokio::test]
async fn a_call_that_cannot_reach_its_backend_goes_to_the_alternate() {
    let (backend, service) = ping_backend().await;
    let free = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let (dead, alive) = (
        Upstream::new(&format!("http://{free}")).unwrap(),
        Upstream::new(&backend.url()).unwrap(),
    );
    let record = std::sync::Arc::new(LastRecord::default());
    let director = {
        let record = record.clone();
        move |call: grpcproxy::CallInfo| {
            let target = call
                .forward_to(dead.clone())
                .alternate(alive.clone())
                .with_observer(record.clone());
            async move { Ok(target) }
        }
    };
    let proxy = TransparentProxy::new(NoQueue, director);
    let stats = proxy.stats().clone();
    let server = TestServer::start(ProxyRoutes::new().fallback(proxy).into_routes()).await;
    let mut client = ping_client(server.addr()).await;
    let reply = client
        .ping(PingRequest {
            value: "failover".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(reply.get_ref().value, "failover");
    assert!(service.events().last_metadata().is_some());
    assert!(support::all_streams_closed(&stats).await);
    assert_eq!(
        record.0.lock().unwrap().clone(),
        Some((
            backend.addr().to_string(),
            Some(free.to_string()),
            tonic::Code::Ok
        ))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_upstream_opens_more_connections_instead_of_queueing_calls() {
    // The backend takes at most 10 streams per connection (as servers limit them: hyper
    // and tonic 200, nginx 128). 50 calls open at once must all be served, over more
    // connections, none waiting for another to end.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = listener.local_addr().unwrap();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .max_concurrent_streams(10)
            .add_service(grpcproxy_testing::serve::ping_server(
                grpcproxy_testing::PingService::new(),
            ))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let upstream = Upstream::builder(&format!("http://{backend}"))
        .unwrap()
        .max_streams_per_connection(8)
        .max_connections(16)
        .build()
        .unwrap();
    let proxy = TransparentProxy::new(NoQueue, SingleUpstream::new(upstream.clone()));
    let proxy = TestServer::start(ProxyRoutes::new().fallback(proxy).into_routes()).await;
    let client = ping_client(proxy.addr()).await;

    const CALLS: usize = 50;
    let all_open = std::sync::Arc::new(tokio::sync::Barrier::new(CALLS + 1));
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..CALLS {
        let (mut client, all_open) = (client.clone(), all_open.clone());
        calls.spawn(async move {
            let (tx, rx) = tokio::sync::mpsc::channel(1);
            let ping = |v: String| PingRequest {
                value: v,
                ..Default::default()
            };
            tx.send(ping(format!("{i}"))).await.unwrap();
            let mut replies = client
                .ping_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
                .await
                .unwrap()
                .into_inner();
            let first = replies.message().await.unwrap().unwrap().value;
            all_open.wait().await;
            drop(tx);
            assert!(replies.message().await.unwrap().is_none());
            first == format!("{i}")
        });
    }
    tokio::time::timeout(std::time::Duration::from_secs(5), all_open.wait())
        .await
        .expect("all 50 calls open at once: none queued behind the backend's stream limit");
    let stats = upstream.stats();
    println!(
        "50 calls open: {} backend connections",
        stats.open_connections
    );
    // 8 per connection: 7 connections; concurrent picks may load one past 8, never past 10.
    assert!(
        (5..=8).contains(&stats.open_connections)
            && stats.connects == stats.open_connections as u64,
        "{stats:?}"
    );
    while let Some(echoed) = calls.join_next().await {
        assert!(echoed.unwrap());
    }
    server.abort();
}

/// A 16-byte message in a DATA frame of its own: what a streaming backend that flushes
/// every message sends.
fn tick() -> bytes::Bytes {
    grpcproxy_testing::raw::grpc_frame(false, &[7; 16])
}

/// A backend that streams ticks, one DATA frame each: `x-count` of them then `OK`, or
/// (without the header) until the call ends, counting them in `sent`.
async fn ticking_backend(sent: Arc<AtomicUsize>) -> RawBackend {
    RawBackend::start(move |request: http::Request<hyper::body::Incoming>| {
        let sent = sent.clone();
        async move {
            let count: Option<usize> = request
                .headers()
                .get("x-count")
                .and_then(|v| v.to_str().ok()?.parse().ok());
            let (tx, body) = channel_body();
            tokio::spawn(async move {
                let mut n = 0;
                while Some(n) != count {
                    if tx.send(Ok(Frame::data(tick()))).await.is_err() {
                        return;
                    }
                    n += 1;
                    if count.is_none() {
                        sent.fetch_add(1, Ordering::Relaxed);
                    }
                }
                let ok = header_map(&[("grpc-status", "0")]);
                let _ = tx.send(Ok(Frame::trailers(ok))).await;
            });
            grpc_response(body)
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_of_small_messages_leaves_the_shared_backend_connection_open() {
    // h2 charges every small DATA frame a connection holds unread against a budget, and
    // closes the connection (GOAWAY ENHANCE_YOUR_CALM) when it runs out. A client that
    // stops reading a stream of small messages leaves them waiting in the proxy's backend
    // connection, up to the stream's window: with h2's default budget (half the
    // connection window, about 4,500 frames of this size) that closed the connection
    // every other call shares.
    let sent = Arc::new(AtomicUsize::new(0));
    let backend = ticking_backend(sent.clone()).await;
    let (server, _stats) = support::proxy_to(&backend.url(), ProxyOptions::default()).await;

    let mut unread = slow_call(server.addr()).await;

    // 20,000 frames sent: about 3,100 fit the client's window, the rest wait in the proxy.
    assert!(
        backend_sent(&sent, 20_000).await,
        "the backend could send only {} frames: the proxy's backend connection was closed",
        sent.load(Ordering::Relaxed)
    );

    // Another call on the same backend connection completes, every byte there.
    let client = RawClient::connect(server.addr()).await;
    let mut headers = HeaderMap::new();
    headers.insert("x-count", "5000".parse().unwrap());
    let answer = client
        .call("/pkg.Feed/Ticks", headers, frames_body(vec![]))
        .await;
    assert_eq!(answer.grpc_status(), Some("0"), "{:?}", answer.error);
    assert_eq!(answer.data, tick().repeat(5000));
    assert_eq!(
        backend.connections_accepted(),
        1,
        "the backend connection was replaced"
    );

    // And the slow call goes on from where it stopped, nothing lost.
    let mut received = Vec::new();
    while received.len() < 25_000 * 21 {
        let chunk = unread.data().await.expect("the slow call ended").unwrap();
        let _ = unread.flow_control().release_capacity(chunk.len());
        received.extend_from_slice(&chunk);
    }
    assert!(received.chunks(21).all(|m| m == &tick()[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_data_frame_budget_is_what_the_backend_connection_allows() {
    // 25,600 bytes (h2's floor): about 110 frames of this size past the client's window.
    let sent = Arc::new(AtomicUsize::new(0));
    let backend = ticking_backend(sent.clone()).await;
    let settings = grpcproxy::Http2Settings {
        data_frame_budget: Some(25_600),
        ..grpcproxy::Http2Settings::default()
    };
    let upstream = Upstream::builder(&backend.url())
        .unwrap()
        .http2(settings)
        .build()
        .unwrap();
    let proxy = TransparentProxy::new(NoQueue, SingleUpstream::new(upstream));
    let server = TestServer::start(ProxyRoutes::new().fallback(proxy).into_routes()).await;
    let mut unread = slow_call(server.addr()).await;
    assert!(!backend_sent(&sent, 20_000).await);
    let stalled = sent.load(Ordering::Relaxed);
    assert!(stalled < 5_000, "{stalled} frames sent");

    // The client gets what was forwarded, then the call's end: UNAVAILABLE, saying why.
    while let Some(chunk) = unread.data().await {
        let _ = unread.flow_control().release_capacity(chunk.unwrap().len());
    }
    let trailers = unread.trailers().await.unwrap().unwrap();
    assert_eq!(trailers["grpc-status"], "14");
    // Percent-encoded, as grpc-message is on the wire; this one needs spaces only.
    let message = trailers["grpc-message"]
        .to_str()
        .unwrap()
        .replace("%20", " ");
    assert!(
        message.starts_with("the proxy closed its connection to backend 127.0.0.1:")
            && message.ends_with("(GOAWAY detected excessive load generating behavior)"),
        "{message}"
    );
}

/// Starts a call as a client that never reads: a 64 KiB window, and its own budget for
/// small frames raised, so that only the proxy's is tested. The response body, unread.
async fn slow_call(addr: std::net::SocketAddr) -> h2::RecvStream {
    let io = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (slow, connection) = h2::client::Builder::new()
        .data_frame_budget(usize::MAX >> 1)
        .handshake::<_, bytes::Bytes>(io)
        .await
        .unwrap();
    tokio::spawn(connection);
    let request = http::Request::post(format!("http://{addr}/pkg.Feed/Ticks"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
    let mut slow = slow.ready().await.unwrap();
    let (response, _) = slow.send_request(request, true).unwrap();
    response.await.unwrap().into_body()
}

/// True once the backend has sent `frames` ticks on unbounded calls; false if it stalls
/// short of that for 3 s.
async fn backend_sent(sent: &AtomicUsize, frames: usize) -> bool {
    let mut last = (0, tokio::time::Instant::now());
    loop {
        let now = sent.load(Ordering::Relaxed);
        if now >= frames {
            return true;
        }
        if now != last.0 {
            last = (now, tokio::time::Instant::now());
        } else if last.1.elapsed() > std::time::Duration::from_secs(3) {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}
