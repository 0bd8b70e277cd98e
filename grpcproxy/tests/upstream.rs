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
