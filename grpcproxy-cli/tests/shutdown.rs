//! Shutdown past `server.drain_timeout`: calls still open end with UNAVAILABLE "proxy
//! shutting down" trailers (or a trailers-only answer, before response headers), not a
//! reset connection, and the backend's side of each is cancelled.

mod support;

use std::time::{Duration, Instant};

use grpcproxy_testing::pb::PingRequest;
use grpcproxy_testing::serve::{ping_backend, ping_client};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_open_at_the_drain_timeout_end_with_unavailable() {
    let (backend, service) = ping_backend().await;
    let config =
        support::one_backend_config(backend.addr(), "[server]\ndrain_timeout = \"300ms\"\n");
    let (mut proxy, _file) = support::start_with_config(&config, 1);
    let mut client = ping_client(proxy.listening[0]).await;
    // A stream that has sent its response headers and one message, and would take 10 s …
    let mut streaming = grpcproxy_testing::serve::open_slow_list(&mut client).await;
    // … and a unary call whose backend answers in 10 s (no response headers yet).
    let mut unary_client = client.clone();
    let unary = tokio::spawn(async move {
        unary_client
            .ping(PingRequest {
                sleep_ms: 10_000,
                ..Default::default()
            })
            .await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stopped = Instant::now();
    support::sigterm(&proxy);
    // Bounded: calls the cut misses would run on for the backend's 10 s, or hang.
    let bound = Duration::from_secs(5);
    let status = tokio::time::timeout(bound, async {
        loop {
            match streaming.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("the stream ended OK"),
                Err(status) => break status,
            }
        }
    })
    .await
    .expect("the stream was not cut");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert_eq!(status.message(), "proxy shutting down");
    let status = tokio::time::timeout(bound, unary)
        .await
        .expect("the unary call was not cut")
        .unwrap()
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert_eq!(status.message(), "proxy shutting down");
    assert!(
        stopped.elapsed() < Duration::from_secs(3),
        "{:?}",
        stopped.elapsed()
    );
    drop(client);
    assert!(support::wait_exit(&mut proxy, Duration::from_secs(5)).success());
    // The backend saw both calls end early.
    let deadline = Instant::now() + Duration::from_secs(2);
    while service.events().cancelled() < 2 {
        assert!(
            Instant::now() < deadline,
            "{} cancelled",
            service.events().cancelled()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
