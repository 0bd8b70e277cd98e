//! Upstream connections: lazy, a fixed number per backend, and tonic channels as upstreams.

mod support;

use grpcproxy::mq::NoQueue;
use grpcproxy::{ProxyOptions, ProxyRoutes, SingleUpstream, TransparentProxy, Upstream};
use grpcproxy_testing::pb::PingRequest;
use grpcproxy_testing::raw::{frames_body, header_map, RawBackend, RawClient};
use grpcproxy_testing::serve::{ping_backend, ping_client};
use grpcproxy_testing::TestServer;
use http::{HeaderMap, Response};

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
