//! Response headers and trailers reach the client exactly, whatever route the call took.

mod support;

use std::time::Duration;

use grpcproxy::ProxyOptions;
use grpcproxy_testing::pb::PingRequest;
use grpcproxy_testing::ping::{
    SERVER_HEADER_MD_KEY, SERVER_HEADER_VALUE, SERVER_TRAILER_MD_KEY, SERVER_TRAILER_VALUE,
};
use grpcproxy_testing::raw::{
    channel_body, frames_body, grpc_frame, header_map, RawBackend, RawBody, RawClient,
};
use http::{HeaderMap, Response};
use http_body::Frame;
use support::{proxy_to, setup};

#[tokio::test]
async fn backend_headers_and_trailers_reach_client_through_register_service() {
    let mut setup = setup().await;
    // `Ping` is routed by register_service.
    let reply = setup
        .client
        .ping(PingRequest {
            value: "foo".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(reply.get_ref().value, "foo");
    assert_eq!(reply.get_ref().counter, 42);
    assert_eq!(
        reply.metadata().get(SERVER_HEADER_MD_KEY).unwrap(),
        SERVER_HEADER_VALUE
    );
    assert_eq!(
        reply.metadata().get(SERVER_TRAILER_MD_KEY).unwrap(),
        SERVER_TRAILER_VALUE
    );
}

#[tokio::test]
async fn backend_headers_and_trailers_reach_client_through_fallback() {
    let mut setup = setup().await;
    // `PingList` is routed by the fallback.
    let response = setup
        .client
        .ping_list(PingRequest {
            value: "foo".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        response.metadata().get(SERVER_HEADER_MD_KEY).unwrap(),
        SERVER_HEADER_VALUE
    );
    let mut stream = response.into_inner();
    while stream.message().await.unwrap().is_some() {}
    let trailers = stream.trailers().await.unwrap().unwrap();
    assert_eq!(
        trailers.get(SERVER_TRAILER_MD_KEY).unwrap(),
        SERVER_TRAILER_VALUE
    );
}

/// A backend answering with fixed headers, messages and (optionally) trailers.
async fn scripted(
    headers: HeaderMap,
    data: Vec<bytes::Bytes>,
    trailers: Option<HeaderMap>,
) -> RawBackend {
    RawBackend::start(move |_req| {
        let headers = headers.clone();
        let mut frames: Vec<_> = data.iter().cloned().map(Frame::data).collect();
        frames.extend(trailers.clone().map(Frame::trailers));
        async move {
            let mut response = Response::new(frames_body(frames));
            *response.headers_mut() = headers;
            response
        }
    })
    .await
}

#[tokio::test]
async fn trailers_pass_byte_for_byte_with_status_details() {
    // Arbitrary bytes in grpc-status-details-bin, a percent-encoded message, custom trailers.
    let details = "CAMSBmFyZ3VtZW50GhUKE3R5cGUuZ29vZ2xlYXBpcy5jb20";
    let trailers = header_map(&[
        ("grpc-status", "3"),
        ("grpc-message", "bad%20argument%3A%20%E2%9C%93"),
        ("grpc-status-details-bin", details),
        ("x-custom-trailer", "one"),
        ("x-custom-trailer", "two"),
        ("x-trace-bin", "AAECAw"),
    ]);
    let backend = scripted(
        header_map(&[
            ("content-type", "application/grpc"),
            ("x-custom-header", "h"),
        ]),
        vec![grpc_frame(false, b"partial")],
        Some(trailers.clone()),
    )
    .await;
    let (proxy, stats) = proxy_to(&backend.url(), ProxyOptions::default()).await;
    let client = RawClient::connect(proxy.addr()).await;
    let response = client
        .call(
            "/pkg.Svc/Method",
            HeaderMap::new(),
            frames_body(vec![Frame::data(grpc_frame(false, b"req"))]),
        )
        .await;
    assert_eq!(response.status, 200);
    assert_eq!(response.headers.get("x-custom-header").unwrap(), "h");
    assert!(!response.trailers_only);
    assert_eq!(&response.data[..], &grpc_frame(false, b"partial")[..]);
    assert_eq!(
        response.trailers.as_ref(),
        Some(&trailers),
        "trailers must arrive exactly as sent"
    );
    assert!(support::all_streams_closed(&stats).await);
}

#[tokio::test]
async fn trailers_only_error_stays_trailers_only() {
    let headers = header_map(&[
        ("content-type", "application/grpc"),
        ("grpc-status", "7"),
        ("grpc-message", "nope"),
        ("x-why", "policy"),
    ]);
    let backend = scripted(headers.clone(), vec![], None).await;
    // grpcproxy's own server: the response is exactly the backend's.
    let served = support::serve_proxy(&backend.url(), ProxyOptions::default()).await;
    // Hosted in tonic: the same, plus the `date` header tonic's server adds.
    let (tonic_hosted, _stats) = proxy_to(&backend.url(), ProxyOptions::default()).await;
    for (addr, adds_date) in [(served.addr, false), (tonic_hosted.addr(), true)] {
        let client = RawClient::connect(addr).await;
        let mut response = client
            .call("/pkg.Svc/Method", HeaderMap::new(), frames_body(vec![]))
            .await;
        assert_eq!(response.headers.remove("date").is_some(), adds_date);
        assert!(
            response.trailers_only,
            "a trailers-only response must stay one HEADERS frame"
        );
        assert_eq!(response.trailers, None);
        assert!(response.data.is_empty());
        assert_eq!(response.headers, headers);
    }
}

#[tokio::test]
async fn headers_sent_before_any_message_reach_client_first() {
    // The backend sends headers, then waits for the client's first message before it sends
    // anything else. A proxy that held headers back until the first message would deadlock.
    let backend = RawBackend::start(|request: http::Request<hyper::body::Incoming>| async move {
        let (tx, body) = channel_body();
        tokio::spawn(async move {
            use http_body_util::BodyExt;
            let mut incoming = request.into_body();
            while let Some(Ok(frame)) = incoming.frame().await {
                if let Ok(data) = frame.into_data() {
                    let _ = tx.send(Ok(Frame::data(data))).await;
                    break;
                }
            }
            let _ = tx
                .send(Ok(Frame::trailers(header_map(&[("grpc-status", "0")]))))
                .await;
        });
        let mut response = Response::new(body);
        response
            .headers_mut()
            .insert("content-type", "application/grpc".parse().unwrap());
        response
            .headers_mut()
            .insert("x-early", "yes".parse().unwrap());
        response
    })
    .await;
    let (proxy, _stats) = proxy_to(&backend.url(), ProxyOptions::default()).await;
    let client = RawClient::connect(proxy.addr()).await;
    let (tx, body): (_, RawBody) = channel_body();
    let response = tokio::time::timeout(
        Duration::from_secs(2),
        client.start("/pkg.Svc/Bidi", HeaderMap::new(), body),
    )
    .await
    .expect("response headers must arrive before the client sends any message");
    assert_eq!(response.headers().get("x-early").unwrap(), "yes");
    tx.send(Ok(Frame::data(grpc_frame(false, b"first"))))
        .await
        .unwrap();
    drop(tx);
    let response = grpcproxy_testing::raw::collect(response).await;
    assert_eq!(&response.data[..], &grpc_frame(false, b"first")[..]);
    assert_eq!(response.grpc_status(), Some("0"));
}

#[tokio::test]
async fn bidi_headers_arrive_before_first_message_with_tonic_client() {
    let mut setup = setup().await;
    let (tx, rx) = tokio::sync::mpsc::channel::<PingRequest>(1);
    let response = tokio::time::timeout(
        Duration::from_secs(2),
        setup
            .client
            .ping_stream(tokio_stream::wrappers::ReceiverStream::new(rx)),
    )
    .await
    .expect("headers must arrive before any message is sent")
    .unwrap();
    assert_eq!(
        response.metadata().get(SERVER_HEADER_MD_KEY).unwrap(),
        SERVER_HEADER_VALUE
    );
    let mut stream = response.into_inner();
    tx.send(PingRequest {
        value: "after headers".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(
        stream.message().await.unwrap().unwrap().value,
        "after headers"
    );
}
