//! The proxy enforces grpc-timeout over the whole call: DEADLINE_EXCEEDED on time, and the
//! backend stream is reset.

mod support;

use std::time::{Duration, Instant};

use grpcproxy::ProxyOptions;
use grpcproxy_testing::raw::{channel_body, header_map, RawClient};
use support::hanging::{expect_reset, hanging_backend, next_event, Seen};
use support::{all_streams_closed, proxy_to, serve_proxy};

const SLACK: Duration = Duration::from_millis(300);

/// Calls `/pkg.Svc/Slow` at `addr` with `grpc-timeout: timeout` (or none), the client's
/// half left open; returns the response and how long it took.
async fn slow_call(
    addr: std::net::SocketAddr,
    timeout: Option<&str>,
) -> (grpcproxy_testing::raw::RawResponse, Duration) {
    let client = RawClient::connect(addr).await;
    let (_tx, body) = channel_body();
    let headers = match timeout {
        Some(t) => header_map(&[("grpc-timeout", t)]),
        None => http::HeaderMap::new(),
    };
    let started = Instant::now();
    let response = tokio::time::timeout(
        Duration::from_secs(5),
        client.call("/pkg.Svc/Slow", headers, body),
    )
    .await
    .expect("the proxy must answer by the deadline, not hang");
    (response, started.elapsed())
}

/// The backend got a `grpc-timeout` of what remained of `timeout` when the proxy sent it.
fn assert_forwarded_timeout(seen: Seen, timeout: Duration) {
    let Seen::Request(Some(value)) = seen else {
        panic!("expected a request with grpc-timeout, got {seen:?}")
    };
    let forwarded = grpcproxy::deadline::parse_timeout(&value.parse().unwrap()).unwrap();
    assert!(
        forwarded <= timeout && forwarded > timeout - Duration::from_millis(50),
        "{value}"
    );
}

#[tokio::test]
async fn deadline_before_response_headers() {
    let (backend, mut seen) = hanging_backend(false).await;
    let proxy = serve_proxy(&backend.url(), ProxyOptions::default()).await;
    let (response, elapsed) = slow_call(proxy.addr, Some("200m")).await;
    assert_eq!(response.grpc_status(), Some("4"), "{response:?}");
    assert!(response.trailers_only);
    assert!(
        elapsed >= Duration::from_millis(200) && elapsed < Duration::from_millis(200) + SLACK,
        "{elapsed:?}"
    );
    assert_eq!(
        next_event(&mut seen, Duration::from_secs(1)).await,
        Seen::Request(Some("200m".into()))
    );
    expect_reset(&mut seen).await;
    assert!(all_streams_closed(&proxy.stats).await);
}

#[tokio::test]
async fn deadline_before_headers_in_a_tonic_server_ends_on_time_and_resets_backend() {
    // tonic's server enforces grpc-timeout itself until response headers and reports
    // CANCELLED ("Timeout expired"); either way the call ends on time, and dropping the
    // proxy's call resets the backend stream although the client's half is still open.
    let (backend, mut seen) = hanging_backend(false).await;
    let (proxy, stats) = proxy_to(&backend.url(), ProxyOptions::default()).await;
    let (response, elapsed) = slow_call(proxy.addr(), Some("200m")).await;
    assert!(
        matches!(response.grpc_status(), Some("4" | "1")),
        "{response:?}"
    );
    assert!(elapsed < Duration::from_millis(200) + SLACK);
    assert!(matches!(
        next_event(&mut seen, Duration::from_secs(1)).await,
        Seen::Request(_)
    ));
    expect_reset(&mut seen).await;
    assert!(all_streams_closed(&stats).await);
}

#[tokio::test]
async fn deadline_after_response_headers_keeps_headers() {
    let (backend, mut seen) = hanging_backend(true).await;
    let (proxy, stats) = proxy_to(&backend.url(), ProxyOptions::default()).await;
    let (response, elapsed) = slow_call(proxy.addr(), Some("300m")).await;
    assert_eq!(response.headers.get("x-sent-before-hang").unwrap(), "1");
    assert_eq!(response.grpc_status(), Some("4"), "{response:?}");
    assert!(
        !response.trailers_only,
        "headers went out first; the status comes in trailers"
    );
    assert!(
        elapsed >= Duration::from_millis(300) && elapsed < Duration::from_millis(300) + SLACK,
        "{elapsed:?}"
    );
    assert!(matches!(
        next_event(&mut seen, Duration::from_secs(1)).await,
        Seen::Request(_)
    ));
    expect_reset(&mut seen).await;
    assert!(all_streams_closed(&stats).await);
}

#[tokio::test]
async fn deadline_cap_rewrites_grpc_timeout_and_is_enforced() {
    let (backend, mut seen) = hanging_backend(false).await;
    let options = ProxyOptions {
        max_timeout: Some(Duration::from_millis(150)),
        ..ProxyOptions::default()
    };
    let (proxy, _stats) = proxy_to(&backend.url(), options).await;
    let (response, elapsed) = slow_call(proxy.addr(), Some("10S")).await;
    assert_eq!(response.grpc_status(), Some("4"));
    assert!(elapsed < Duration::from_millis(150) + SLACK);
    assert_forwarded_timeout(
        next_event(&mut seen, Duration::from_secs(1)).await,
        Duration::from_millis(150),
    );
}

#[tokio::test]
async fn default_timeout_applies_when_client_sends_none() {
    let (backend, mut seen) = hanging_backend(false).await;
    let options = ProxyOptions {
        default_timeout: Some(Duration::from_millis(100)),
        ..ProxyOptions::default()
    };
    let (proxy, _stats) = proxy_to(&backend.url(), options).await;
    let (response, _) = slow_call(proxy.addr(), None).await;
    assert_eq!(response.grpc_status(), Some("4"));
    assert_forwarded_timeout(
        next_event(&mut seen, Duration::from_secs(1)).await,
        Duration::from_millis(100),
    );
}

#[tokio::test]
async fn tonic_client_deadline_through_proxy_is_deadline_or_cancelled_at_client() {
    // With a tonic client both sides enforce the deadline; whichever fires first, the call
    // ends on time and the backend sees the reset.
    let setup = support::setup().await;
    let mut client = setup.client.clone();
    let mut request = tonic::Request::new(grpcproxy_testing::pb::PingRequest {
        sleep_ms: 5_000,
        ..Default::default()
    });
    request.set_timeout(Duration::from_millis(200));
    let started = Instant::now();
    let status = client.ping(request).await.unwrap_err();
    assert!(
        matches!(
            status.code(),
            tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
        ),
        "{status:?}"
    );
    assert!(started.elapsed() < Duration::from_millis(200) + SLACK);
    assert!(
        setup
            .service
            .events()
            .wait_cancelled(1, Duration::from_secs(1))
            .await,
        "backend must see the reset"
    );
}
