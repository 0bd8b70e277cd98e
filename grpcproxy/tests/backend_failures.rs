//! An unreachable or dying backend gives the client a prompt, named error, never a hang.

mod support;

use std::time::{Duration, Instant};

use grpcproxy::ProxyOptions;
use grpcproxy_testing::pb::PingRequest;
use grpcproxy_testing::raw::{channel_body, grpc_frame, RawBackend, RawClient};
use grpcproxy_testing::serve::{ping_backend, ping_client};
use http::{HeaderMap, Response};
use http_body::Frame;
use http_body_util::BodyExt;
use support::{all_streams_closed, expect_err, proxy_to};
use tonic::Code;

#[tokio::test]
async fn unreachable_backend_is_unavailable_within_1s_naming_it() {
    // A port that was just free: nothing listens there.
    let free = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let (proxy, stats) = proxy_to(&format!("http://{free}"), ProxyOptions::default()).await;
    let mut client = ping_client(proxy.addr()).await;
    for _ in 0..3 {
        let started = Instant::now();
        let status = expect_err(client.ping(PingRequest::default()).await);
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(status.code(), Code::Unavailable);
        assert!(
            status.message().contains(&free.to_string()),
            "names the backend: {}",
            status.message()
        );
    }
    assert!(all_streams_closed(&stats).await);
}

#[tokio::test]
async fn backend_dies_mid_stream_client_gets_error_without_hang() {
    // The backend sends headers and one message, then its process "dies": every connection
    // is dropped without GOAWAY or trailers.
    let backend = RawBackend::start(|_request| async {
        let (tx, body) = channel_body();
        tokio::spawn(async move {
            let _ = tx.send(Ok(Frame::data(grpc_frame(false, b"first")))).await;
            tx.closed().await;
        });
        let mut response = Response::new(body);
        response
            .headers_mut()
            .insert("content-type", "application/grpc".parse().unwrap());
        response
    })
    .await;
    let (proxy, stats) = proxy_to(&backend.url(), ProxyOptions::default()).await;
    let client = RawClient::connect(proxy.addr()).await;
    let (_tx, body) = channel_body();
    let response = client
        .start("/pkg.Svc/Stream", HeaderMap::new(), body)
        .await;
    let (parts, mut body) = response.into_parts();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(&first[..], &grpc_frame(false, b"first")[..]);
    drop(backend);
    let rest = tokio::time::timeout(
        Duration::from_secs(3),
        grpcproxy_testing::raw::collect(Response::from_parts(parts, body)),
    )
    .await
    .expect("the client must not hang when the backend dies");
    assert_eq!(
        rest.grpc_status(),
        Some("14"),
        "UNAVAILABLE: {:?}",
        rest.trailers
    );
    let message = rest
        .trailers
        .as_ref()
        .unwrap()
        .get("grpc-message")
        .unwrap()
        .to_str()
        .unwrap();
    assert!(
        message.contains("127.0.0.1"),
        "names the backend: {message}"
    );
    assert!(all_streams_closed(&stats).await);
}

#[tokio::test]
async fn proxy_reconnects_after_backend_restart() {
    let (backend, _service) = ping_backend().await;
    let addr = backend.addr();
    let (proxy, _stats) = proxy_to(&backend.url(), ProxyOptions::default()).await;
    let mut client = ping_client(proxy.addr()).await;
    client.ping(PingRequest::default()).await.unwrap();
    backend.stop();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        expect_err(client.ping(PingRequest::default()).await).code(),
        Code::Unavailable
    );

    // Same address, new server: the proxy connects again by itself.
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let service = grpcproxy_testing::PingService::new();
    let routes = tonic::service::Routes::new(grpcproxy_testing::serve::ping_server(service));
    let _server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_routes(routes)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let reply = client
        .ping(PingRequest {
            value: "back".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(reply.get_ref().value, "back");
}
