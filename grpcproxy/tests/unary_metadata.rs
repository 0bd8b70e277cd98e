//! Unary calls carry the client's metadata to the backend, and metadata comes back.

mod support;

use grpcproxy_testing::pb::{Empty, PingRequest};
use grpcproxy_testing::ping::{CLIENT_MD_KEY, PING_DEFAULT_VALUE};
use grpcproxy_testing::raw::{frames_body, grpc_frame, header_map, RawClient};
use http_body::Frame;
use prost::Message;
use support::{all_streams_closed, setup};
use tonic::metadata::{BinaryMetadataValue, MetadataValue};

async fn ping_empty_carries_client_metadata(setup: &mut support::Setup) {
    let mut request = tonic::Request::new(Empty {});
    request
        .metadata_mut()
        .insert(CLIENT_MD_KEY, MetadataValue::from_static("true"));
    let reply = setup
        .client
        .ping_empty(request)
        .await
        .expect("PingEmpty should succeed");
    assert_eq!(reply.get_ref().value, PING_DEFAULT_VALUE);
    assert_eq!(reply.get_ref().counter, 42);
}

#[tokio::test]
async fn unary_carries_client_metadata_to_backend() {
    let mut setup = setup().await;
    ping_empty_carries_client_metadata(&mut setup).await;
    let seen = setup.service.events().last_metadata().unwrap();
    assert_eq!(seen.get(CLIENT_MD_KEY).unwrap(), "true");
}

#[tokio::test]
async fn unary_without_client_metadata_is_refused_by_backend() {
    let mut setup = setup().await;
    let status = setup.client.ping_empty(Empty {}).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
}

#[tokio::test]
async fn unary_stress_50_sequential_calls() {
    let mut setup = setup().await;
    for _ in 0..50 {
        ping_empty_carries_client_metadata(&mut setup).await;
    }
    assert_eq!(setup.stats.calls_started(), 50);
    assert!(all_streams_closed(&setup.stats).await);
}

#[tokio::test]
async fn ascii_and_binary_metadata_cross_both_ways() {
    let mut setup = setup().await;
    let binary: &[u8] = &[0, 1, 2, 0xfe, 0xff, b'\n'];
    let mut request = tonic::Request::new(PingRequest {
        value: "md".into(),
        ..Default::default()
    });
    request
        .metadata_mut()
        .insert("x-echo-text", MetadataValue::from_static("hello, world"));
    request
        .metadata_mut()
        .insert_bin("x-echo-data-bin", BinaryMetadataValue::from_bytes(binary));
    let reply = setup.client.ping(request).await.unwrap();

    let seen = setup.service.events().last_metadata().unwrap();
    assert_eq!(seen.get("x-echo-text").unwrap(), "hello, world");
    assert_eq!(
        seen.get_bin("x-echo-data-bin").unwrap().to_bytes().unwrap(),
        binary
    );
    assert_eq!(reply.metadata().get("x-echo-text").unwrap(), "hello, world");
    assert_eq!(
        reply
            .metadata()
            .get_bin("x-echo-data-bin")
            .unwrap()
            .to_bytes()
            .unwrap(),
        binary
    );
}

#[tokio::test]
async fn echoed_metadata_is_byte_exact_in_headers_and_trailers() {
    // On the wire, through both routes (Ping: register_service; PingList: fallback).
    let setup = setup().await;
    let client = RawClient::connect(setup.proxy.addr()).await;
    let ping = PingRequest {
        value: "raw".into(),
        ..Default::default()
    }
    .encode_to_vec();
    for method in ["Ping", "PingList"] {
        let response = client
            .call(
                &format!("/grpcproxy.testing.TestService/{method}"),
                header_map(&[
                    ("x-echo-text", "hello, world"),
                    ("x-echo-data-bin", "AAEC/v8K"),
                ]),
                frames_body(vec![Frame::data(grpc_frame(false, &ping))]),
            )
            .await;
        assert_eq!(response.grpc_status(), Some("0"), "{method}: {response:?}");
        let trailers = response.trailers.as_ref().expect("trailers");
        for map in [&response.headers, trailers] {
            assert_eq!(map.get("x-echo-text").unwrap(), "hello, world", "{method}");
            assert_eq!(map.get("x-echo-data-bin").unwrap(), "AAEC/v8K", "{method}");
        }
    }
}
