//! Load against the built binary: 10,000 streams open at once through one proxy, every
//! message checked; and a soak run behind a flag, with steady memory and zero errors.
//!
//! The soak: `GRPCPROXY_SOAK_SECS=180 cargo test --release -p grpcproxy-cli --test load
//! -- --ignored --nocapture soak` (the release build tests the release binary).

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use grpcproxy_testing::pb::test_service_client::TestServiceClient;
use grpcproxy_testing::pb::PingRequest;
use grpcproxy_testing::serve::ping_server;
use grpcproxy_testing::PingService;
use support::baseline::{assert_back_to, baseline, metric, rss_mib};
use tokio::sync::{mpsc, Barrier};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

/// A ping backend that takes any number of concurrent streams (tonic's default is 200
/// per connection; the limits under test are the proxy's).
async fn roomy_backend() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        tonic::transport::Server::builder()
            .max_concurrent_streams(100_000)
            .add_service(ping_server(PingService::new()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
            .unwrap();
    });
    (addr, server)
}

async fn channel(addr: SocketAddr) -> TestServiceClient<Channel> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    TestServiceClient::new(channel)
}

fn ping(value: String) -> PingRequest {
    PingRequest {
        value,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_concurrent_streams_through_one_proxy() {
    const CONNECTIONS: usize = 10;
    const PER_CONNECTION: usize = 1000;
    const STREAMS: usize = CONNECTIONS * PER_CONNECTION;
    let (backend, server) = roomy_backend().await;
    let (proxy, _file) = support::start_with_config(&support::one_backend_config(backend, ""), 1);
    let (addr, admin) = (proxy.listening[0], proxy.admin.unwrap());
    let mut clients = Vec::new();
    for _ in 0..CONNECTIONS {
        let mut client = channel(addr).await;
        client.ping(ping("warm".into())).await.unwrap();
        clients.push(client);
    }
    let before = baseline(&proxy);
    let rss_before = rss_mib(&proxy);

    // Every stream sends a message and reads its echo, then waits until all 10,000 are
    // open at once; then each sends a second message, half-closes and reads to the end.
    let all_open = Arc::new(Barrier::new(STREAMS + 1));
    let go_on = Arc::new(Barrier::new(STREAMS + 1));
    let firsts = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut streams = tokio::task::JoinSet::new();
    for i in 0..STREAMS {
        let mut client = clients[i % CONNECTIONS].clone();
        let (all_open, go_on) = (all_open.clone(), go_on.clone());
        let firsts = firsts.clone();
        streams.spawn(async move {
            let (tx, rx) = mpsc::channel(2);
            tx.send(ping(format!("{i}:first"))).await.unwrap();
            let mut replies = client
                .ping_stream(ReceiverStream::new(rx))
                .await
                .map_err(|s| format!("stream {i}: {s:?}"))?
                .into_inner();
            let first = replies.message().await.map_err(|s| format!("{i}: {s:?}"))?;
            firsts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            all_open.wait().await;
            go_on.wait().await; // while the gauges are read
            tx.send(ping(format!("{i}:second"))).await.unwrap();
            drop(tx);
            let second = replies.message().await.map_err(|s| format!("{i}: {s:?}"))?;
            let end = replies.message().await.map_err(|s| format!("{i}: {s:?}"))?;
            let got = (
                first.map(|r| (r.value, r.counter)),
                second.map(|r| (r.value, r.counter)),
                end.is_none(),
            );
            let want = (
                Some((format!("{i}:first"), 0)),
                Some((format!("{i}:second"), 1)),
                true,
            );
            if got == want {
                Ok(())
            } else {
                Err(format!("stream {i}: got {got:?}, want {want:?}"))
            }
        });
    }
    let opened = tokio::time::timeout(Duration::from_secs(60), all_open.wait()).await;
    assert!(
        opened.is_ok(),
        "10,000 streams did not all open within 60 s: {} did, {} in flight in the proxy",
        firsts.load(std::sync::atomic::Ordering::Relaxed),
        metric(admin, "grpcproxy_streams_in_flight")
    );
    let open_after = started.elapsed();
    let in_flight = metric(admin, "grpcproxy_streams_in_flight");
    let rss_open = rss_mib(&proxy);
    let backend_connections = support::baseline::upstream_connections(admin);
    go_on.wait().await;
    assert_eq!(in_flight, STREAMS as i64, "streams in flight with all open");
    let mut failures = Vec::new();
    while let Some(result) = streams.join_next().await {
        if let Err(failure) = result.unwrap() {
            failures.push(failure);
        }
    }
    eprintln!(
        "10,000 streams over {CONNECTIONS} connections: all open after {open_after:?}, \
         {in_flight} in flight over {backend_connections} backend connections, proxy RSS \
         {rss_before} → {rss_open} MiB; done after {:?}, {} failed",
        started.elapsed(),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert_back_to(&proxy, before).await;
    server.abort();
}

/// One call of kind `kind` (unary, server-, client-, bidi-streaming): whether its answer
/// was right.
async fn mixed_call(
    client: &mut TestServiceClient<Channel>,
    kind: u64,
    value: String,
) -> Result<bool, tonic::Status> {
    let pings: Vec<PingRequest> = (0..5).map(|i| ping(format!("{value}.{i}"))).collect();
    Ok(match kind {
        0 => client.ping(ping(value.clone())).await?.get_ref().value == value,
        1 => {
            let mut list = client.ping_list(ping(value)).await?.into_inner();
            let mut n = 0;
            while list.message().await?.is_some() {
                n += 1;
            }
            n == grpcproxy_testing::ping::LIST_RESPONSES
        }
        2 => {
            client
                .ping_client_stream(tokio_stream::iter(pings))
                .await?
                .get_ref()
                .counter
                == 5
        }
        _ => {
            let mut replies = client
                .ping_stream(tokio_stream::iter(pings))
                .await?
                .into_inner();
            let mut n = 0;
            while replies.message().await?.is_some() {
                n += 1;
            }
            n == 5
        }
    })
}

/// `GRPCPROXY_SOAK_SECS` (default 180) of mixed calls from 16 clients; zero errors and
/// steady memory. Behind `--ignored`: minutes long.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "minutes long: run with --ignored (see the file's doc)"]
async fn soak() {
    let secs: u64 = std::env::var("GRPCPROXY_SOAK_SECS")
        .ok()
        .map(|s| {
            s.parse()
                .expect("GRPCPROXY_SOAK_SECS is a number of seconds")
        })
        .unwrap_or(180);
    let (backend, server) = roomy_backend().await;
    let (proxy, _file) = support::start_with_config(&support::one_backend_config(backend, ""), 1);
    let (addr, admin) = (proxy.listening[0], proxy.admin.unwrap());
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..16usize {
        let mut client = channel(addr).await;
        let stop = stop.clone();
        workers.spawn(async move {
            let (mut calls, mut errors) = (0u64, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let value = format!("{worker}:{calls}");
                let ok = mixed_call(&mut client, calls % 4, value).await;
                match ok {
                    Ok(true) => {}
                    Ok(false) => errors.push(format!("call {calls}: wrong answer")),
                    Err(status) => errors.push(format!("call {calls}: {status:?}")),
                }
                calls += 1;
            }
            (calls, errors)
        });
    }
    // Warm-up, then RSS every 10 s.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let rss_start = rss_mib(&proxy);
    let mut samples = vec![rss_start];
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(secs) {
        tokio::time::sleep(Duration::from_secs(10)).await;
        samples.push(rss_mib(&proxy));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut calls, mut errors) = (0, Vec::new());
    while let Some(result) = workers.join_next().await {
        let (c, e) = result.unwrap();
        calls += c;
        errors.extend(e);
    }
    let rss_end = *samples.last().unwrap();
    eprintln!(
        "soak: {secs} s after a 10 s warm-up, 16 clients, {calls} calls, {} errors; proxy RSS \
         start {rss_start} MiB, end {rss_end} MiB, samples {samples:?}",
        errors.len()
    );
    assert!(errors.is_empty(), "{:?}", &errors[..errors.len().min(5)]);
    assert!(
        rss_end <= rss_start + 16,
        "RSS grew {rss_start} → {rss_end} MiB"
    );
    assert_eq!(metric(admin, "grpcproxy_streams_in_flight"), 0);
    server.abort();
}
