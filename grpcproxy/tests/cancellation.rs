//! Cancellation both ways: a client reset reaches the backend, a backend reset reaches the client.

mod support;

use std::time::{Duration, Instant};

use grpcproxy::ProxyOptions;
use grpcproxy_testing::pb::PingRequest;
use grpcproxy_testing::raw::{channel_body, grpc_frame, RawBackend, RawClient};
use http::HeaderMap;
use http_body::Frame;
use support::hanging::{expect_reset, hanging_backend, next_event, Seen};
use support::{all_streams_closed, proxy_to, setup};

#[tokio::test]
async fn client_reset_resets_backend_stream_within_1s() {
    // The client sends RST_STREAM(CANCEL) while both halves are open.
    let (backend, mut seen) = hanging_backend(true).await;
    let (proxy, stats) = proxy_to(&backend.url(), ProxyOptions::default()).await;
    let client = RawClient::connect(proxy.addr()).await;
    let (tx, body) = channel_body();
    let response = client.start("/pkg.Svc/Hang", HeaderMap::new(), body).await;
    assert_eq!(response.headers().get("x-sent-before-hang").unwrap(), "1");
    assert!(matches!(
        next_event(&mut seen, Duration::from_secs(1)).await,
        Seen::Request(_)
    ));
    let started = Instant::now();
    tx.send(Err(Box::new(h2::Error::from(h2::Reason::CANCEL))))
        .await
        .unwrap();
    expect_reset(&mut seen).await;
    assert!(started.elapsed() < Duration::from_secs(1));
    drop(response);
    assert!(all_streams_closed(&stats).await);
}

#[tokio::test]
async fn tonic_client_cancel_of_server_stream_resets_backend() {
    let setup = setup().await;
    let mut client = setup.client.clone();
    let mut stream = client
        .ping_list(PingRequest {
            value: "slow".into(),
            sleep_ms: 300,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stream.message().await.unwrap().unwrap().counter, 0);
    drop(stream);
    assert!(
        setup
            .service
            .events()
            .wait_cancelled(1, Duration::from_secs(1))
            .await,
        "the backend must see the reset within 1 s"
    );
    assert!(all_streams_closed(&setup.stats).await);
}

#[tokio::test]
async fn client_cancel_of_unary_call_resets_backend() {
    let setup = setup().await;
    let mut client = setup.client.clone();
    let call = client.ping(PingRequest {
        sleep_ms: 10_000,
        ..Default::default()
    });
    assert!(tokio::time::timeout(Duration::from_millis(200), call)
        .await
        .is_err());
    assert!(
        setup
            .service
            .events()
            .wait_cancelled(1, Duration::from_secs(1))
            .await
    );
    assert!(all_streams_closed(&setup.stats).await);
}

#[tokio::test]
async fn client_disconnect_resets_backend_stream() {
    let (backend, mut seen) = hanging_backend(true).await;
    let (proxy, stats) = proxy_to(&backend.url(), ProxyOptions::default()).await;
    let client = RawClient::connect(proxy.addr()).await;
    let (_tx, body) = channel_body();
    let response = client.start("/pkg.Svc/Hang", HeaderMap::new(), body).await;
    assert_eq!(response.headers().get("x-sent-before-hang").unwrap(), "1");
    assert!(matches!(
        next_event(&mut seen, Duration::from_secs(1)).await,
        Seen::Request(_)
    ));
    client.disconnect(); // the TCP connection drops, no RST_STREAM
    expect_reset(&mut seen).await;
    assert!(all_streams_closed(&stats).await);
}

/// A backend that sends headers and one message, then resets the stream with `reason`.
async fn resetting_backend(reason: h2::Reason) -> RawBackend {
    RawBackend::start(move |_request| async move {
        let (tx, body) = channel_body();
        tokio::spawn(async move {
            let _ = tx.send(Ok(Frame::data(grpc_frame(false, b"one")))).await;
            // Let the DATA frame leave before the reset: h2 drops unsent data on reset.
            tokio::time::sleep(Duration::from_millis(50)).await;
            let _ = tx.send(Err(Box::new(h2::Error::from(reason)) as _)).await;
        });
        grpcproxy_testing::raw::grpc_response(body)
    })
    .await
}

#[tokio::test]
async fn backend_reset_mid_stream_reaches_client_as_spec_status() {
    for (reason, code) in [
        (h2::Reason::CANCEL, "1"),
        (h2::Reason::REFUSED_STREAM, "14"),
        (h2::Reason::ENHANCE_YOUR_CALM, "8"),
        (h2::Reason::INTERNAL_ERROR, "13"),
    ] {
        let backend = resetting_backend(reason).await;
        let (proxy, stats) = proxy_to(&backend.url(), ProxyOptions::default()).await;
        let client = RawClient::connect(proxy.addr()).await;
        let (_tx, body) = channel_body();
        let response = tokio::time::timeout(
            Duration::from_secs(2),
            client.call("/pkg.Svc/Reset", HeaderMap::new(), body),
        )
        .await
        .expect("no hang");
        assert_eq!(&response.data[..], &grpc_frame(false, b"one")[..]);
        assert_eq!(
            response.grpc_status(),
            Some(code),
            "{reason:?}: {:?}",
            response.trailers
        );
        let message = response
            .trailers
            .as_ref()
            .unwrap()
            .get("grpc-message")
            .unwrap()
            .to_str()
            .unwrap();
        assert!(
            message.contains(&backend.addr().to_string()),
            "the message names the backend: {message}"
        );
        assert!(all_streams_closed(&stats).await);
    }
}

#[tokio::test]
async fn client_reset_reaches_a_backend_that_stopped_reading() {
    // The backend takes the request head and never reads the body: once the stream's
    // window is full the proxy's pipe waits for window, and must still pass the client's
    // RST_STREAM on.
    let dropped = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seen = dropped.clone();
    let backend = RawBackend::start(move |request: http::Request<hyper::body::Incoming>| {
        let seen = seen.clone();
        async move {
            struct Dropped(std::sync::Arc<std::sync::atomic::AtomicBool>);
            impl Drop for Dropped {
                fn drop(&mut self) {
                    self.0.store(true, std::sync::atomic::Ordering::SeqCst);
                }
            }
            let _dropped = Dropped(seen);
            let _body = request.into_body();
            tokio::time::sleep(Duration::from_secs(30)).await;
            grpcproxy_testing::raw::grpc_response(grpcproxy_testing::raw::frames_body(Vec::new()))
        }
    })
    .await;
    let (proxy, _stats) = proxy_to(&backend.url(), ProxyOptions::default()).await;
    let client = RawClient::connect(proxy.addr()).await;
    let (tx, body) = channel_body();
    let call =
        tokio::spawn(async move { client.call("/pkg.Svc/Upload", HeaderMap::new(), body).await });
    // 8 MiB: more than the backend's stream window and the proxy's.
    let message = vec![7u8; 64 << 10];
    for _ in 0..128 {
        let sent = tokio::time::timeout(
            Duration::from_millis(200),
            tx.send(Ok(Frame::data(grpc_frame(false, &message)))),
        )
        .await;
        if sent.is_err() {
            break; // the client's window is full too: everything is waiting
        }
    }
    // The client gives up: its stream is reset (RST_STREAM CANCEL).
    let started = Instant::now();
    call.abort();
    drop(tx);
    while !dropped.load(std::sync::atomic::Ordering::SeqCst) {
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "the backend's stream was not reset within 3 s of the client's reset"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
