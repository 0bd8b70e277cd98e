//! Compressed messages cross the proxy untouched: flag, grpc-encoding and bytes.

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use flate2::write::GzEncoder;
use grpcproxy::ProxyOptions;
use grpcproxy_testing::pb::PingRequest;
use grpcproxy_testing::raw::{
    frames_body, grpc_frame, header_map, read_request, RawBackend, RawClient,
};
use http::{HeaderMap, Response};
use http_body::Frame;
use support::{proxy_to, setup};
use tonic::codec::CompressionEncoding;

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

#[derive(Default)]
struct Seen {
    headers: Option<HeaderMap>,
    body: Option<Bytes>,
}

#[tokio::test]
async fn compressed_messages_arrive_at_backend_as_sent() {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let response_payload = gzip(b"compressed response payload");
    let backend = {
        let seen = seen.clone();
        let response_payload = response_payload.clone();
        RawBackend::start(move |request: http::Request<hyper::body::Incoming>| {
            let seen = seen.clone();
            let response_payload = response_payload.clone();
            async move {
                let (parts, body) = request.into_parts();
                let (bytes, _) = read_request(body).await.unwrap();
                *seen.lock().unwrap() = Seen {
                    headers: Some(parts.headers),
                    body: Some(bytes),
                };
                let mut response = Response::new(frames_body(vec![
                    Frame::data(grpc_frame(true, &response_payload)),
                    Frame::trailers(header_map(&[("grpc-status", "0")])),
                ]));
                response
                    .headers_mut()
                    .insert("content-type", "application/grpc".parse().unwrap());
                response
                    .headers_mut()
                    .insert("grpc-encoding", "gzip".parse().unwrap());
                response
            }
        })
        .await
    };
    let (proxy, _stats) = proxy_to(&backend.url(), ProxyOptions::default()).await;
    let client = RawClient::connect(proxy.addr()).await;
    let compressed = gzip(&[b'a'; 4096]);
    let mut wire = grpc_frame(true, &compressed).to_vec();
    wire.extend_from_slice(&grpc_frame(false, b"plain second message"));
    let response = client
        .call(
            "/pkg.Svc/Method",
            header_map(&[
                ("grpc-encoding", "gzip"),
                ("grpc-accept-encoding", "gzip,identity"),
            ]),
            frames_body(vec![Frame::data(Bytes::from(wire.clone()))]),
        )
        .await;

    let seen = seen.lock().unwrap();
    let headers = seen.headers.as_ref().unwrap();
    assert_eq!(headers.get("grpc-encoding").unwrap(), "gzip");
    assert_eq!(
        headers.get("grpc-accept-encoding").unwrap(),
        "gzip,identity"
    );
    let body = seen.body.as_ref().unwrap();
    assert_eq!(body[0], 1, "the compressed flag must arrive set");
    assert_eq!(
        &body[..],
        &wire[..],
        "the backend must receive the exact bytes the client sent"
    );

    assert_eq!(response.headers.get("grpc-encoding").unwrap(), "gzip");
    assert_eq!(&response.data[..], &grpc_frame(true, &response_payload)[..]);
    assert_eq!(response.grpc_status(), Some("0"));
}

#[tokio::test]
async fn gzip_requested_by_client_and_server_works_end_to_end() {
    let setup = setup().await;
    let mut client = setup
        .client
        .clone()
        .send_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Gzip);
    let payload = vec![7u8; 64 * 1024];
    let reply = client
        .ping(PingRequest {
            value: "zip".into(),
            payload: payload.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(reply.get_ref().payload, payload);
    assert_eq!(
        reply.metadata().get("grpc-encoding").unwrap(),
        "gzip",
        "the backend compressed its answer"
    );
    let seen = setup.service.events().last_metadata().unwrap();
    assert_eq!(
        seen.get("grpc-encoding").unwrap(),
        "gzip",
        "the backend received a compressed request"
    );
}
