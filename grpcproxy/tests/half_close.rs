//! How a request stream ends at the backend: always on a DATA frame (an empty one when the
//! client sent nothing more), never END_STREAM on the HEADERS. gRPC's PROTOCOL-HTTP2.md
//! requires it, and grpc-go servers never see the end of a request that ends on its HEADERS.

mod support;

use std::time::Duration;

use grpcproxy::mq::NoQueue;
use grpcproxy::{ProxyOptions, ProxyRoutes, SingleUpstream, TransparentProxy, Upstream};
use grpcproxy_testing::raw::{channel_body, frames_body, grpc_frame, RawBody, RawClient};
use grpcproxy_testing::wire::{FrameRecorder, RawFrame};
use grpcproxy_testing::TestServer;
use http::HeaderMap;
use http_body::Frame;

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const END_STREAM: u8 = 0x1;

/// The frames of the call's stream as (type, END_STREAM set, payload length).
fn shape(frames: &[RawFrame]) -> Vec<(u8, bool, usize)> {
    frames
        .iter()
        .filter(|f| f.kind == DATA || f.kind == HEADERS)
        .map(|f| (f.kind, f.flags & END_STREAM != 0, f.payload.len()))
        .collect()
}

/// A request body that ends without a message: one the client half-closes at once. `eos_on_headers`:
/// the client itself put END_STREAM on its HEADERS; otherwise it sends an empty DATA frame.
fn empty_request(eos_on_headers: bool) -> RawBody {
    if eos_on_headers {
        frames_body(vec![])
    } else {
        let (tx, body) = channel_body();
        drop(tx);
        body
    }
}

/// Calls through `proxy` and returns the shape of what `backend` received.
async fn frames_through(
    proxy: std::net::SocketAddr,
    backend: &FrameRecorder,
    body: RawBody,
) -> Vec<(u8, bool, usize)> {
    let client = RawClient::connect(proxy).await;
    let response = tokio::time::timeout(
        Duration::from_secs(5),
        client.call("/pkg.Svc/Stream", HeaderMap::new(), body),
    )
    .await
    .expect("the backend answers once the request has ended: the proxy never ended it");
    assert_eq!(response.grpc_status(), Some("0"));
    shape(&backend.frames())
}

async fn tonic_hosted(upstream: Upstream) -> TestServer {
    let proxy = TransparentProxy::new(NoQueue, SingleUpstream::new(upstream));
    TestServer::start(ProxyRoutes::new().fallback(proxy).into_routes()).await
}

#[tokio::test]
async fn a_request_without_messages_ends_on_an_empty_data_frame() {
    for eos_on_headers in [false, true] {
        // grpcproxy's own HTTP/2 server (what the binary runs) …
        let backend = FrameRecorder::start().await;
        let served = support::serve_proxy(
            &format!("http://{}", backend.addr()),
            ProxyOptions::default(),
        )
        .await;
        let seen = frames_through(served.addr, &backend, empty_request(eos_on_headers)).await;
        assert_eq!(
            seen,
            [(HEADERS, false, seen[0].2), (DATA, true, 0)],
            "served, END_STREAM on the client's HEADERS: {eos_on_headers}"
        );
        // … and the handler hosted by a tonic server.
        let backend = FrameRecorder::start().await;
        let upstream = Upstream::new(&format!("http://{}", backend.addr())).unwrap();
        let server = tonic_hosted(upstream).await;
        let seen = frames_through(server.addr(), &backend, empty_request(eos_on_headers)).await;
        assert_eq!(
            seen,
            [(HEADERS, false, seen[0].2), (DATA, true, 0)],
            "tonic-hosted, END_STREAM on the client's HEADERS: {eos_on_headers}"
        );
    }
}

#[tokio::test]
async fn a_channel_upstream_ends_an_empty_request_on_a_data_frame_too() {
    let backend = FrameRecorder::start().await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", backend.addr()))
        .unwrap()
        .connect_lazy();
    let server = tonic_hosted(Upstream::from_channel(channel, "recorder")).await;
    for eos_on_headers in [false, true] {
        let before = backend.frames().len();
        frames_through(server.addr(), &backend, empty_request(eos_on_headers)).await;
        let seen = shape(&backend.frames()[before..]);
        assert_eq!(
            seen,
            [(HEADERS, false, seen[0].2), (DATA, true, 0)],
            "END_STREAM on the client's HEADERS: {eos_on_headers}"
        );
    }
}

/// The stream opened on HEADERS without END_STREAM, carried `data` bytes of DATA and ended
/// on a DATA frame (the message and the end may leave together or as two frames).
fn assert_ends_on_data(seen: &[(u8, bool, usize)], data: usize) {
    assert_eq!(seen[0].0, HEADERS, "{seen:?}");
    assert!(!seen[0].1, "END_STREAM on the HEADERS: {seen:?}");
    assert!(seen[1..].iter().all(|s| s.0 == DATA), "{seen:?}");
    assert_eq!(seen.last().map(|s| s.1), Some(true), "{seen:?}");
    assert_eq!(
        seen[1..].iter().map(|s| s.2).sum::<usize>(),
        data,
        "{seen:?}"
    );
}

#[tokio::test]
async fn a_stream_with_messages_ends_on_a_data_frame_with_them() {
    for half_close_apart in [false, true] {
        let backend = FrameRecorder::start().await;
        let served = support::serve_proxy(
            &format!("http://{}", backend.addr()),
            ProxyOptions::default(),
        )
        .await;
        let body = if half_close_apart {
            // The client half-closes with an empty DATA frame after its message.
            let (tx, body) = channel_body();
            tx.send(Ok(Frame::data(grpc_frame(false, b"hello"))))
                .await
                .unwrap();
            drop(tx);
            body
        } else {
            frames_body(vec![Frame::data(grpc_frame(false, b"hello"))])
        };
        let seen = frames_through(served.addr, &backend, body).await;
        assert_ends_on_data(&seen, 10);
    }
}
