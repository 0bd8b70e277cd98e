//! 16 MiB messages cross both ways by default; a configured limit answers RESOURCE_EXHAUSTED.

mod support;

use grpcproxy::ProxyOptions;
use grpcproxy_testing::pb::PingRequest;
use grpcproxy_testing::raw::{frames_body, grpc_frame, header_map, RawBackend, RawClient};
use http::{HeaderMap, Response};
use http_body::Frame;
use support::{all_streams_closed, expect_err, proxy_to, setup, setup_with};
use tonic::Code;

const SIXTEEN_MIB: usize = 16 << 20;

#[tokio::test]
async fn sixteen_mib_message_both_ways() {
    let mut setup = setup().await;
    let payload: Vec<u8> = (0..SIXTEEN_MIB).map(|i| (i % 251) as u8).collect();
    let reply = setup
        .client
        .ping(PingRequest {
            value: "big".into(),
            payload: payload.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(reply.get_ref().payload.len(), SIXTEEN_MIB);
    assert!(
        reply.get_ref().payload == payload,
        "payload must come back byte for byte"
    );
}

#[tokio::test]
async fn request_over_the_limit_is_resource_exhausted() {
    let mut setup = setup_with(ProxyOptions {
        max_message_size: Some(1 << 20),
        ..ProxyOptions::default()
    })
    .await;
    let small = setup
        .client
        .ping(PingRequest {
            payload: vec![1; 1000],
            ..Default::default()
        })
        .await;
    assert!(small.is_ok(), "a message under the limit passes: {small:?}");
    let status = expect_err(
        setup
            .client
            .ping(PingRequest {
                payload: vec![1; 2 << 20],
                ..Default::default()
            })
            .await,
    );
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("1048576"), "{}", status.message());
    assert!(all_streams_closed(&setup.stats).await);
}

#[tokio::test]
async fn response_over_the_limit_is_resource_exhausted() {
    // The backend answers with a prefix announcing 2 MiB: the proxy refuses it from the
    // prefix alone, without waiting for (or buffering) the payload.
    let backend = RawBackend::start(|_request| async {
        let mut response = Response::new(frames_body(vec![
            Frame::data(grpc_frame(false, &[9u8; 64])),
            Frame::data(grpc_frame(false, &vec![9u8; 2 << 20])),
            Frame::trailers(header_map(&[("grpc-status", "0")])),
        ]));
        response
            .headers_mut()
            .insert("content-type", "application/grpc".parse().unwrap());
        response
    })
    .await;
    let options = ProxyOptions {
        max_message_size: Some(1 << 20),
        ..ProxyOptions::default()
    };
    let (proxy, stats) = proxy_to(&backend.url(), options).await;
    let client = RawClient::connect(proxy.addr()).await;
    let response = client
        .call("/pkg.Svc/Big", HeaderMap::new(), frames_body(vec![]))
        .await;
    assert_eq!(response.grpc_status(), Some("8"), "{:?}", response.trailers);
    assert!(
        response.data.len() < (1 << 20),
        "the oversized message must not be forwarded ({} bytes were)",
        response.data.len()
    );
    assert!(all_streams_closed(&stats).await);
}
