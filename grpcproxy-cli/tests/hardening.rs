//! Hostile clients against the built binary: a rapid-reset flood (CVE-2023-44487 style), a
//! CONTINUATION flood, and a client that never reads while the backend pushes 1 GiB. Each
//! asserts a defined outcome, that a well-behaved client is served meanwhile, and that the
//! proxy's in-flight streams and file descriptors return to their baseline afterwards.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use grpcproxy_testing::pb::PingRequest;
use grpcproxy_testing::raw::{channel_body, grpc_frame, header_map, RawBackend, RawClient};
use grpcproxy_testing::serve::{ping_backend, ping_client};
use grpcproxy_testing::wire::{goaway_code, h2_frame, wait_for_close, PREFACE};
use grpcproxy_testing::TestServer;
use http_body::Frame;
use support::baseline::{assert_back_to, baseline, metric, rss_mib};
use support::Proxy;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A ping backend and the binary in front of it (`config` plus `extra`), with the backend
/// connection already made, so baselines taken now count it.
async fn warmed_proxy(extra: &str) -> (TestServer, Proxy, tempfile::NamedTempFile) {
    let (backend, _service) = ping_backend().await;
    let (proxy, file) =
        support::start_with_config(&(support::one_backend_config(backend.addr(), extra)), 1);
    let mut client = ping_client(proxy.listening[0]).await;
    client.ping(PingRequest::default()).await.unwrap();
    (backend, proxy, file)
}

/// The well-behaved client was served throughout: enough calls, none failed, none slow.
fn assert_served(calls: u32, failures: u32, slowest: Duration) {
    assert!(
        calls >= 10,
        "the well-behaved client made only {calls} calls"
    );
    assert_eq!(failures, 0, "well-behaved calls failed during the flood");
    assert!(
        slowest < Duration::from_secs(2),
        "a well-behaved call took {slowest:?}"
    );
}

/// A well-behaved client calling through the proxy until `stop`: (calls, failures, slowest).
fn well_behaved_client(
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(u32, u32, Duration)> {
    tokio::spawn(async move {
        let mut client = ping_client(addr).await;
        let (mut calls, mut failures, mut slowest) = (0, 0, Duration::ZERO);
        while !stop.load(Ordering::Relaxed) {
            let start = Instant::now();
            let request = PingRequest {
                value: format!("call {calls}"),
                ..Default::default()
            };
            let answer = tokio::time::timeout(Duration::from_secs(5), client.ping(request)).await;
            match answer {
                Ok(Ok(reply)) if reply.get_ref().value == format!("call {calls}") => {}
                other => {
                    eprintln!("well-behaved call {calls} failed: {other:?}");
                    failures += 1
                }
            }
            calls += 1;
            slowest = slowest.max(start.elapsed());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (calls, failures, slowest)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_flood_leaves_the_proxy_serving_others() {
    let (backend, proxy, _file) = warmed_proxy("").await;
    let addr = proxy.listening[0];
    let before = baseline(&proxy);

    // The attacker reconnects whenever the proxy closes a connection on it, for 3 s.
    let stop = Arc::new(AtomicBool::new(false));
    let good = well_behaved_client(addr, stop.clone());
    let (mut connections, mut resets, mut calmed, started) = (0u32, 0u32, 0u32, Instant::now());
    while started.elapsed() < Duration::from_secs(3) {
        let (sent, ended_by) = rapid_reset_connection(addr).await;
        connections += 1;
        resets += sent;
        // GOAWAY ENHANCE_YOUR_CALM (h2's own reset limit: "too_many_resets"; the proxy's
        // rapid-reset rule: "excessive load generating behavior"), or the close right
        // after it when the flood's next write beats the GOAWAY to the reader: either way
        // the proxy hung up.
        if ended_by.contains("too_many_resets") || ended_by.contains("excessive load") {
            calmed += 1;
        } else {
            assert!(
                ended_by.contains("broken pipe") || ended_by.contains("reset"),
                "connection {connections} ended otherwise: {ended_by}"
            );
        }
        assert!(sent < 10_000, "one connection took {sent} resets");
    }
    assert!(calmed > 0, "no connection was told ENHANCE_YOUR_CALM");
    stop.store(true, Ordering::Relaxed);
    let (calls, failures, slowest) = good.await.unwrap();
    eprintln!(
        "rapid reset: {connections} connections, {resets} resets in {:?}, each connection closed \
         by the proxy ({calmed} with GOAWAY ENHANCE_YOUR_CALM seen); well-behaved client: {calls} calls, \
         {failures} failed, slowest {slowest:?}",
        started.elapsed()
    );
    assert_served(calls, failures, slowest);
    // Streams reset before the proxy took them never reach the backend; those reset after
    // their HEADERS left count on their backend connection, which is rotated long before
    // the backend's own limit (hyper/tonic: 20 resets of streams it has not accepted yet)
    // would close it, failing every client's calls on it.
    let endpoint = format!("{{cluster=\"backend\",endpoint=\"{}\"}}", backend.addr());
    let admin = proxy.admin.unwrap();
    let metric_of = |name: &str| metric(admin, &format!("grpcproxy_{name}{endpoint}"));
    let cancelled = metric(
        admin,
        "grpcproxy_requests_total{route=\"route-0\",cluster=\"backend\",\
         method=\"/grpcproxy.testing.TestService/Ping\",grpc_status=\"1\"}",
    );
    eprintln!(
        "rapid reset: {cancelled} calls started and cancelled; backend connections made {}, \
         rotated {}, open {}",
        metric_of("upstream_connects_total"),
        metric_of("upstream_connections_rotated_total"),
        metric_of("upstream_connections"),
    );
    let goaways = support::logged(&proxy, "the backend closed a connection with GOAWAY");
    eprintln!(
        "rapid reset: the backend closed {} connections",
        goaways.len()
    );
    assert!(
        goaways.is_empty(),
        "the backend closed a shared connection: {goaways:?}"
    );
    assert_back_to(&proxy, before).await;
}

/// Opens a connection and opens-and-resets streams on it until the proxy closes it (or
/// 3 s pass): (streams reset, how it ended).
async fn rapid_reset_connection(addr: SocketAddr) -> (u32, String) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut flood, connection) = h2::client::handshake(tcp).await.unwrap();
    let connection = tokio::spawn(connection);
    let (mut resets, started) = (0u32, Instant::now());
    let ended_by = loop {
        if started.elapsed() > Duration::from_secs(3) {
            break "still open after 3 s".to_owned();
        }
        flood = match flood.clone().ready().await {
            Ok(ready) => ready,
            Err(error) => break error.to_string(),
        };
        let request =
            http::Request::post(format!("http://{addr}/grpcproxy.testing.TestService/Ping"))
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                .body(())
                .unwrap();
        match flood.send_request(request, false) {
            Ok((_response, mut stream)) => {
                stream.send_reset(h2::Reason::CANCEL);
                resets += 1;
            }
            Err(error) => break error.to_string(),
        }
        if resets % 100 == 0 {
            tokio::task::yield_now().await;
        }
    };
    drop(flood);
    let _ = tokio::time::timeout(Duration::from_secs(5), connection).await;
    (resets, ended_by)
}

/// Sends a header block that never ends (CONTINUATION after CONTINUATION) until the proxy
/// closes the connection: (bytes written, the GOAWAY error code the proxy sent, if any).
async fn continuation_connection(addr: SocketAddr) -> (usize, Option<u32>) {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(PREFACE).await.unwrap();
    let settings = h2_frame(0x4, 0, 0, &[]);
    tcp.write_all(&settings).await.unwrap();
    // HEADERS without END_HEADERS: `:method: POST` (indexed), then CONTINUATION frames of
    // literal headers (`a: bbb…`), never ending the block.
    tcp.write_all(&h2_frame(0x1, 0, 1, &[0x83])).await.unwrap();
    let field = [&[0x00, 0x01, b'a', 0x64][..], &[b'b'; 100][..]].concat();
    let block: Vec<u8> = field.iter().copied().cycle().take(16 * 1024 - 64).collect();
    let continuation = h2_frame(0x9, 0, 1, &block);
    let (mut read_half, mut write_half) = tcp.into_split();
    let reader = tokio::spawn(async move {
        let mut received = Vec::new();
        let mut buffer = vec![0; 64 * 1024];
        while let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_secs(10), read_half.read(&mut buffer)).await
        {
            if n == 0 {
                break;
            }
            received.extend_from_slice(&buffer[..n]);
        }
        received
    });
    let (mut sent, started) = (0usize, Instant::now());
    while sent < 256 << 20 && started.elapsed() < Duration::from_secs(10) {
        if write_half.write_all(&continuation).await.is_err() {
            break;
        }
        sent += continuation.len();
    }
    drop(write_half);
    (sent, goaway_code(&reader.await.unwrap()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continuation_flood_is_cut_off_with_bounded_memory() {
    let (_backend, proxy, _file) = warmed_proxy("").await;
    let addr = proxy.listening[0];
    let (before, rss_before) = (baseline(&proxy), rss_mib(&proxy));

    let stop = Arc::new(AtomicBool::new(false));
    let good = well_behaved_client(addr, stop.clone());
    let (mut connections, mut most, mut rss_during, started) = (0u32, 0usize, 0, Instant::now());
    let mut codes = std::collections::BTreeSet::new();
    while started.elapsed() < Duration::from_secs(3) {
        let (sent, goaway) = continuation_connection(addr).await;
        connections += 1;
        most = most.max(sent);
        rss_during = rss_during.max(rss_mib(&proxy));
        let goaway = goaway.unwrap_or_else(|| {
            panic!(
                "connection {connections}: no GOAWAY after {} KiB",
                sent >> 10
            )
        });
        // h2 answers an over-long header block with COMPRESSION_ERROR (0x9).
        assert_ne!(
            goaway, 0,
            "connection {connections}: GOAWAY without an error"
        );
        codes.insert(goaway);
    }
    stop.store(true, Ordering::Relaxed);
    let (calls, failures, slowest) = good.await.unwrap();
    eprintln!(
        "continuation flood: {connections} connections in {:?}, each ended by GOAWAY (error codes {codes:x?}); at most \
         {} KiB written per connection (socket buffers included); RSS {rss_before} → at most \
         {rss_during} MiB; well-behaved client: {calls} calls, {failures} failed, slowest \
         {slowest:?}",
        started.elapsed(),
        most >> 10
    );
    assert!(most < 16 << 20, "one connection took {} KiB", most >> 10);
    assert!(
        rss_during < rss_before + 32,
        "RSS grew {rss_before} → {rss_during} MiB"
    );
    assert_served(calls, failures, slowest);
    assert_back_to(&proxy, before).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_holds_back_a_1_gib_push() {
    const MESSAGE: usize = 1 << 20;
    const MESSAGES: u64 = 1024;
    let pushed = Arc::new(AtomicU64::new(0));
    let counter = pushed.clone();
    let backend = RawBackend::start(move |request: http::Request<hyper::body::Incoming>| {
        let pushed = counter.clone();
        let warm_up = request.headers().contains_key("x-warm-up");
        async move {
            let (tx, body) = channel_body();
            if warm_up {
                let trailers = header_map(&[("grpc-status", "0")]);
                let _ = tx.send(Ok(Frame::trailers(trailers))).await;
                let mut response = http::Response::new(body);
                response
                    .headers_mut()
                    .insert("content-type", "application/grpc".parse().unwrap());
                return response;
            }
            tokio::spawn(async move {
                let message = grpc_frame(false, &vec![7u8; MESSAGE]);
                for _ in 0..MESSAGES {
                    if tx.send(Ok(Frame::data(message.clone()))).await.is_err() {
                        return;
                    }
                    pushed.fetch_add(MESSAGE as u64, Ordering::Relaxed);
                }
                let trailers = header_map(&[("grpc-status", "0")]);
                let _ = tx.send(Ok(Frame::trailers(trailers))).await;
            });
            grpcproxy_testing::raw::grpc_response(body)
        }
    })
    .await;
    let (proxy, _file) =
        support::start_with_config(&support::one_backend_config(backend.addr(), ""), 1);
    let addr = proxy.listening[0];
    let client = RawClient::connect(addr).await;
    let warm_up = header_map(&[("x-warm-up", "1")]);
    let answer = client
        .call(
            "/grpcproxy.testing.TestService/PingList",
            warm_up,
            channel_body().1,
        )
        .await;
    assert_eq!(answer.grpc_status(), Some("0"));
    let before = baseline(&proxy);
    let rss_before = rss_mib(&proxy);

    let request = grpc_frame(false, b"");
    let (tx, body) = channel_body();
    tx.send(Ok(Frame::data(request))).await.unwrap();
    let response = client
        .start(
            "/grpcproxy.testing.TestService/PingList",
            header_map(&[]),
            body,
        )
        .await;
    assert_eq!(response.status(), 200);
    // Never read the body: flow control must stop the backend, not the proxy's memory.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let held = pushed.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (later, rss_during) = (pushed.load(Ordering::Relaxed), rss_mib(&proxy));
    eprintln!(
        "never-reading client: the backend stalled after {} MiB of 1024 (its own channel and \
         both HTTP/2 windows); proxy RSS {rss_before} → {rss_during} MiB",
        held >> 20
    );
    assert_eq!(held, later, "the backend kept pushing");
    assert!(held < 64 << 20, "the backend pushed {} MiB", held >> 20);
    assert!(
        rss_during < rss_before + 32,
        "RSS grew {rss_before} → {rss_during} MiB"
    );
    // The client then goes away without a word.
    drop((response, tx));
    client.disconnect();
    assert_back_to(&proxy, before).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_handshakes_are_closed_within_the_handshake_timeout() {
    let limits = "\n[limits]\nhandshake_timeout = \"1s\"\n";
    let (_backend, proxy, _file) = warmed_proxy(limits).await;
    let addr = proxy.listening[0];
    let before = baseline(&proxy);

    // Slowloris variants: nothing at all, half an HTTP/1.1 request line, half the HTTP/2
    // preface. Fifty of each at once, so the timeouts run side by side.
    let starts: [&[u8]; 3] = [b"", b"GET / HTT", b"PRI * HTTP/2.0\r\n"];
    let mut stalls = Vec::new();
    for start in starts {
        for _ in 0..50 {
            let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            tcp.write_all(start).await.unwrap();
            stalls.push((start, tcp));
        }
    }
    let mut slowest = Duration::ZERO;
    for (start, tcp) in &mut stalls {
        let (_, closed) = wait_for_close(tcp, Duration::from_secs(5)).await;
        let closed = closed
            .unwrap_or_else(|| panic!("a connection that sent {start:?} was still open after 5 s"));
        slowest = slowest.max(closed);
    }
    eprintln!("stalled handshakes: 150 connections closed, the last after {slowest:?}");
    assert!(
        slowest < Duration::from_millis(2500),
        "closed only after {slowest:?}"
    );
    // A well-behaved client meanwhile and afterwards.
    ping_client(addr)
        .await
        .ping(PingRequest::default())
        .await
        .unwrap();
    drop(stalls);
    assert_back_to(&proxy, before).await;
}
