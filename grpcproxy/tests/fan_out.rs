//! The library's fan-out with a director of its own: the `append` hook of concat mode,
//! and members whose answers concat cannot join (compressed, or two messages).

use std::sync::Arc;

use bytes::Bytes;
use grpcproxy::mq::NoQueue;
use grpcproxy::policy::{FanOut, FanOutMode};
use grpcproxy::{CallInfo, ProxyRoutes, TransparentProxy, Upstream};
use grpcproxy_testing::raw::{
    frames_body, grpc_frame, grpc_response, header_map, read_request, RawBackend, RawClient,
};
use grpcproxy_testing::TestServer;
use http_body::Frame;

/// A backend answering every call with `body` (raw DATA bytes) and OK.
async fn answering(body: Bytes) -> RawBackend {
    RawBackend::start(move |request: http::Request<hyper::body::Incoming>| {
        let body = body.clone();
        async move {
            let _ = read_request(request.into_body()).await;
            grpc_response(frames_body(vec![
                Frame::data(body),
                Frame::trailers(header_map(&[("grpc-status", "0")])),
            ]))
        }
    })
    .await
}

/// A proxy fanning every call out to `members` (named n0, n1, …) in concat mode, each
/// part followed by field 9 holding the member's name.
async fn concat_proxy(members: &[&RawBackend]) -> TestServer {
    fanned_proxy(members, |fan| fan).await
}

/// A proxy fanning every call out to `members` in concat mode (as [`concat_proxy`]),
/// the fan-out shaped further by `shape`.
async fn fanned_proxy(members: &[&RawBackend], shape: fn(FanOut) -> FanOut) -> TestServer {
    let upstreams: Vec<Upstream> = members
        .iter()
        .map(|m| Upstream::new(&m.url()).unwrap())
        .collect();
    let director = move |call: CallInfo| {
        let upstreams = upstreams.clone();
        async move {
            let name_field = Arc::new(|name: &str| {
                let mut field = vec![0x4a, name.len() as u8];
                field.extend_from_slice(name.as_bytes());
                Bytes::from(field)
            });
            let mut fan = FanOut::new(FanOutMode::Concat).append(name_field);
            for (i, upstream) in upstreams.iter().enumerate() {
                fan = fan.member(format!("n{i}"), upstream.clone());
            }
            Ok(call.forward_to(upstreams[0].clone()).fan_out(shape(fan)))
        }
    };
    let proxy = TransparentProxy::new(NoQueue, director);
    TestServer::start(ProxyRoutes::new().fallback(proxy).into_routes()).await
}

/// One `/pkg.Svc/List` call with an empty message through `server`.
async fn list(server: &TestServer) -> grpcproxy_testing::raw::RawResponse {
    let client = RawClient::connect(server.addr()).await;
    client
        .call(
            "/pkg.Svc/List",
            header_map(&[]),
            frames_body(vec![Frame::data(grpc_frame(false, b""))]),
        )
        .await
}

/// The members the answer names as failed.
fn fanout_errors(answer: &grpcproxy_testing::raw::RawResponse) -> &str {
    answer.trailers.as_ref().unwrap()["x-grpcproxy-fanout-errors"]
        .to_str()
        .unwrap()
}

#[tokio::test]
async fn concat_appends_each_members_name_after_its_part() {
    let a = answering(grpc_frame(false, b"\x0a\x01a")).await;
    let b = answering(grpc_frame(false, b"\x0a\x01b")).await;
    let server = concat_proxy(&[&a, &b]).await;
    let answer = list(&server).await;
    assert_eq!(answer.grpc_status(), Some("0"));
    assert_eq!(
        answer.data,
        grpc_frame(false, b"\x0a\x01a\x4a\x02n0\x0a\x01b\x4a\x02n1")
    );
}

#[tokio::test]
async fn concat_counts_compressed_or_several_messages_as_failed() {
    let plain = answering(grpc_frame(false, b"\x0a\x01p")).await;
    let compressed = answering(grpc_frame(true, b"\x1f\x8b")).await;
    let two = answering(Bytes::from(
        [
            grpc_frame(false, b"\x0a\x01x"),
            grpc_frame(false, b"\x0a\x01y"),
        ]
        .concat(),
    ))
    .await;
    let server = concat_proxy(&[&plain, &compressed, &two]).await;
    let answer = list(&server).await;
    assert_eq!(answer.grpc_status(), Some("0"));
    assert_eq!(answer.data, grpc_frame(false, b"\x0a\x01p\x4a\x02n0"));
    assert_eq!(fanout_errors(&answer), "n1=INTERNAL,n2=INTERNAL");
}

#[tokio::test]
async fn an_answer_past_the_response_bound_counts_as_failed() {
    let small = answering(grpc_frame(false, b"\x0a\x01s")).await;
    let large = answering(grpc_frame(false, &[b'x'; 100])).await;
    let server = fanned_proxy(&[&small, &large], |fan| fan.response_bytes(64)).await;
    let answer = list(&server).await;
    // The small member's part only; the large one is named, nothing of it is held.
    assert_eq!(answer.grpc_status(), Some("0"));
    assert_eq!(answer.data, grpc_frame(false, b"\x0a\x01s\x4a\x02n0"));
    assert_eq!(fanout_errors(&answer), "n1=RESOURCE_EXHAUSTED");
}
