//! `stream_idle_timeout`: a call on which nothing moves is ended with DEADLINE_EXCEEDED and
//! its backend stream reset; a call whose messages keep flowing is never cut.

mod support;

use std::time::{Duration, Instant};

use grpcproxy::ProxyOptions;
use grpcproxy_testing::pb::PingRequest;
use grpcproxy_testing::raw::{channel_body, RawClient};
use support::hanging::{expect_reset, hanging_backend, next_event, Seen};
use support::{all_streams_closed, serve_proxy, setup_with};

const IDLE: Duration = Duration::from_millis(300);

fn idle_options() -> ProxyOptions {
    ProxyOptions {
        stream_idle_timeout: Some(IDLE),
        ..ProxyOptions::default()
    }
}

/// Calls a hanging backend through a proxy with the idle timeout and no deadline; returns
/// the response, how long it took, and what the backend saw.
async fn idle_call(send_headers: bool) -> (grpcproxy_testing::raw::RawResponse, Duration) {
    let (backend, mut seen) = hanging_backend(send_headers).await;
    let proxy = serve_proxy(&backend.url(), idle_options()).await;
    let client = RawClient::connect(proxy.addr).await;
    let (_tx, body) = channel_body(); // the client's half stays open, silent
    let started = Instant::now();
    let response = tokio::time::timeout(
        Duration::from_secs(5),
        client.call("/pkg.Svc/Quiet", http::HeaderMap::new(), body),
    )
    .await
    .expect("the idle timeout must end the call");
    let elapsed = started.elapsed();
    assert_eq!(
        next_event(&mut seen, Duration::from_secs(1)).await,
        Seen::Request(None)
    );
    expect_reset(&mut seen).await;
    assert!(all_streams_closed(&proxy.stats).await);
    (response, elapsed)
}

fn assert_idle_status(response: &grpcproxy_testing::raw::RawResponse, elapsed: Duration) {
    assert_eq!(response.grpc_status(), Some("4"), "{response:?}");
    let message = response
        .trailers
        .as_ref()
        .unwrap_or(&response.headers)
        .get("grpc-message")
        .unwrap()
        .to_str()
        .unwrap();
    assert!(message.contains("stream%20idle%20timeout"), "{message}");
    assert!(
        elapsed >= IDLE && elapsed < IDLE + Duration::from_millis(300),
        "{elapsed:?}"
    );
}

#[tokio::test]
async fn a_backend_that_never_answers_is_cut_after_the_idle_timeout() {
    let (response, elapsed) = idle_call(false).await;
    assert!(response.trailers_only, "{response:?}");
    assert_idle_status(&response, elapsed);
}

#[tokio::test]
async fn a_backend_silent_after_headers_is_cut_after_the_idle_timeout() {
    let (response, elapsed) = idle_call(true).await;
    assert!(!response.trailers_only);
    assert_eq!(response.headers.get("x-sent-before-hang").unwrap(), "1");
    assert_idle_status(&response, elapsed);
}

#[tokio::test]
async fn a_call_whose_messages_keep_flowing_outlives_the_idle_timeout() {
    let mut setup = setup_with(idle_options()).await;
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let mut replies = setup
        .client
        .ping_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    // Ten messages 150 ms apart: 1.5 s in all, five idle timeouts, never 300 ms quiet.
    for i in 0..10 {
        tx.send(PingRequest {
            value: format!("m{i}"),
            ..Default::default()
        })
        .await
        .unwrap();
        assert_eq!(
            replies.message().await.unwrap().unwrap().value,
            format!("m{i}")
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    drop(tx);
    assert!(replies.message().await.unwrap().is_none(), "ends with OK");

    // A client-streaming call whose backend answers only at the end: the request's
    // messages alone keep it alive while the proxy waits for response headers.
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let sender = tokio::spawn(async move {
        for i in 0..8 {
            tokio::time::sleep(Duration::from_millis(150)).await;
            tx.send(PingRequest {
                value: format!("c{i}"),
                ..Default::default()
            })
            .await
            .unwrap();
        }
    });
    let reply = setup
        .client
        .ping_client_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("a client stream with steady messages is not idle");
    sender.await.unwrap();
    assert_eq!(reply.get_ref().counter, 8, "{reply:?}");
    assert!(all_streams_closed(&setup.stats).await);
}
