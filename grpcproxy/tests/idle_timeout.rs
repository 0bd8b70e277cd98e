//! Client connections with no open stream are closed after the idle timeout; a stream
//! that stays open keeps its connection.

mod support;

use std::time::{Duration, Instant};

use grpcproxy::server::ServerOptions;
use grpcproxy::ProxyOptions;
use grpcproxy_testing::raw::{channel_body, frames_body, RawClient};
use http::HeaderMap;
use support::hanging::hanging_backend;

fn idle_after(timeout: Duration) -> ServerOptions {
    ServerOptions {
        idle_timeout: Some(timeout),
        ..ServerOptions::default()
    }
}

async fn wait_closed(client: &RawClient, within: Duration) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < within {
        if client.is_closed() {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

#[tokio::test]
async fn an_idle_connection_is_closed_after_the_timeout() {
    let (backend, _seen) = hanging_backend(true).await;
    let proxy = support::serve_proxy_with(
        &backend.url(),
        ProxyOptions::default(),
        idle_after(Duration::from_millis(200)),
    )
    .await;
    let client = RawClient::connect(proxy.addr).await;
    // One short call (the backend answers headers; the client resets after reading them).
    let response = client
        .start("/pkg.Svc/M", HeaderMap::new(), frames_body(vec![]))
        .await;
    drop(response);
    let closed = wait_closed(&client, Duration::from_secs(2)).await;
    let closed = closed.expect("the idle connection is closed");
    assert!(
        closed >= Duration::from_millis(150),
        "not before the timeout: {closed:?}"
    );
}

#[tokio::test]
async fn an_open_stream_keeps_its_connection() {
    let (backend, _seen) = hanging_backend(true).await;
    let proxy = support::serve_proxy_with(
        &backend.url(),
        ProxyOptions::default(),
        idle_after(Duration::from_millis(100)),
    )
    .await;
    let client = RawClient::connect(proxy.addr).await;
    let (tx, body) = channel_body();
    let response = client.start("/pkg.Svc/Long", HeaderMap::new(), body).await;
    assert_eq!(
        wait_closed(&client, Duration::from_millis(600)).await,
        None,
        "a stream is open: not idle"
    );
    drop((response, tx)); // both halves of the stream end
    assert!(
        wait_closed(&client, Duration::from_secs(2)).await.is_some(),
        "idle once the stream is over"
    );
}
