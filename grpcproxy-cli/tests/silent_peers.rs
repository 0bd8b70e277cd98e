//! Peers that stop answering, against the built binary: keepalive PINGs find a silent
//! client or backend and close its connection; the stream idle timeout ends a call on which
//! nothing moves. Each time the calls involved end with a defined status, healthy peers
//! keep their connections, and the proxy's gauges and descriptors return to baseline.

mod support;

use std::time::{Duration, Instant};

use grpcproxy_testing::raw::{channel_body, RawBackend, RawClient};
use grpcproxy_testing::relay::Relay;
use grpcproxy_testing::serve::{open_ping_stream, ping, ping_backend, ping_client};
use grpcproxy_testing::wire::{grpc_request_headers, h2_frame, wait_for_close, PREFACE};
use support::baseline::{assert_back_to, baseline, metric};
use tokio::io::AsyncWriteExt;
use tonic::Code;

/// PINGs every 200 ms, unanswered after 300 ms: a silent peer is found within ~0.5 s.
const KEEPALIVE: &str =
    "\n[limits]\nkeepalive_interval = \"200ms\"\nkeepalive_timeout = \"300ms\"\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_answering_pings_is_closed_by_keepalive() {
    let (backend, service) = ping_backend().await;
    let (proxy, _file) =
        support::start_with_config(&support::one_backend_config(backend.addr(), KEEPALIVE), 1);
    let (addr, admin) = (proxy.listening[0], proxy.admin.unwrap());
    let mut healthy = ping_client(addr).await;
    healthy.ping(ping("warm")).await.unwrap();
    let before = baseline(&proxy);
    let accepted = metric(admin, "grpcproxy_client_connections_accepted_total");

    // A client that opens a bidi call and then goes silent: it never answers a PING (as
    // a peer behind a dead network path or a frozen process).
    let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    let headers = grpc_request_headers("/grpcproxy.testing.TestService/PingStream", &[]);
    for frame in [
        PREFACE.to_vec(),
        h2_frame(0x4, 0, 0, &[]),        // SETTINGS
        h2_frame(0x1, 0x4, 1, &headers), // HEADERS, END_HEADERS, stream open
    ] {
        silent.write_all(&frame).await.unwrap();
    }
    let started = Instant::now();
    let (_, closed) = wait_for_close(&mut silent, Duration::from_secs(5)).await;
    let closed = closed.expect("the proxy must close a connection whose PINGs go unanswered");
    assert!(
        closed < Duration::from_millis(1500),
        "closed after {closed:?}"
    );
    // hyper ends the streams of a connection it closes for keepalive with NO_ERROR, which
    // its request bodies report as a clean end: the backend may see the call's request
    // half end before the reset that follows (see HARDENING.md). Either way the call is
    // over at the backend and nothing stays in flight in the proxy.
    eprintln!(
        "silent client: connection closed {:?} after it went quiet (PING every 200 ms, 300 ms to answer)",
        started.elapsed()
    );
    let _ = service;

    // The healthy client answered every PING meanwhile: same connection, still served.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        healthy.ping(ping("still")).await.unwrap().get_ref().value,
        "still"
    );
    assert_eq!(
        metric(admin, "grpcproxy_client_connections_accepted_total"),
        accepted + 1,
        "only the silent client connected since the baseline"
    );
    drop(silent);
    assert_back_to(&proxy, before).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_goes_silent_is_dropped_by_keepalive() {
    let (backend, _service) = ping_backend().await;
    let relay = Relay::start(backend.addr()).await;
    let (proxy, _file) =
        support::start_with_config(&support::one_backend_config(relay.addr(), KEEPALIVE), 1);
    let (addr, admin) = (proxy.listening[0], proxy.admin.unwrap());
    let mut client = ping_client(addr).await;
    client.ping(ping("warm")).await.unwrap();
    let before = baseline(&proxy);

    let (tx, mut replies) = open_ping_stream(&mut client, "before").await;

    // The path to the backend dies silently: no FIN, no RST, nothing.
    relay.freeze();
    let started = Instant::now();
    let status = tokio::time::timeout(Duration::from_secs(5), replies.message())
        .await
        .expect("keepalive must end a call whose backend went silent")
        .expect_err("the call must fail");
    let elapsed = started.elapsed();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(elapsed < Duration::from_millis(1500), "{elapsed:?}");
    eprintln!("silent backend: the call in flight failed UNAVAILABLE after {elapsed:?}");

    // The next call goes over a new backend connection.
    assert_eq!(
        client.ping(ping("after")).await.unwrap().get_ref().value,
        "after"
    );
    let endpoint = format!("{{cluster=\"backend\",endpoint=\"{}\"}}", relay.addr());
    assert_eq!(
        metric(
            admin,
            &format!("grpcproxy_upstream_connects_total{endpoint}")
        ),
        2
    );
    assert_eq!(
        metric(admin, &format!("grpcproxy_upstream_connections{endpoint}")),
        1
    );
    drop((tx, replies));
    assert_back_to(&proxy, before).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_on_which_nothing_moves_ends_at_the_stream_idle_timeout() {
    // A backend that accepts calls and never answers them.
    let backend = RawBackend::start(|_request| std::future::pending()).await;
    let limits = "\n[limits]\nstream_idle_timeout = \"300ms\"\n";
    let (proxy, _file) =
        support::start_with_config(&support::one_backend_config(backend.addr(), limits), 1);
    let client = RawClient::connect(proxy.listening[0]).await;
    // The first call also makes the backend connection; the second is measured against
    // the baseline taken between them.
    let mut before = None;
    for _ in 0..2 {
        let (_tx, body) = channel_body(); // the client's half stays open and silent
        let started = Instant::now();
        let response = tokio::time::timeout(
            Duration::from_secs(5),
            client.call("/pkg.Svc/Quiet", http::HeaderMap::new(), body),
        )
        .await
        .expect("the stream idle timeout must end the call");
        let elapsed = started.elapsed();
        assert_eq!(response.grpc_status(), Some("4"), "{response:?}");
        let message = response
            .headers
            .get("grpc-message")
            .unwrap()
            .to_str()
            .unwrap();
        assert!(message.starts_with("stream%20idle%20timeout"), "{message}");
        assert!(
            elapsed >= Duration::from_millis(300) && elapsed < Duration::from_millis(800),
            "{elapsed:?}"
        );
        before.get_or_insert_with(|| baseline(&proxy));
    }
    let before = before.unwrap();
    assert_back_to(&proxy, before).await;
}
