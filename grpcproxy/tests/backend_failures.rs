//! An unreachable or dying backend gives the client a prompt, named error, never a hang.

mod support;

use std::time::{Duration, Instant};

use grpcproxy::ProxyOptions;
use grpcproxy_testing::pb::PingRequest;
use grpcproxy_testing::raw::{channel_body, grpc_frame, RawBackend, RawClient};
use grpcproxy_testing::serve::{open_ping_stream, ping, ping_backend, ping_client};
use http::{HeaderMap, Response};
use http_body::Frame;
use http_body_util::BodyExt;
use support::{all_streams_closed, expect_err, proxy_to};
use tonic::Code;

#[tokio::test]
async fn unreachable_backend_is_unavailable_within_1s_naming_it() {
    // A port that was just free: nothing listens there.
    let free = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let (proxy, stats) = proxy_to(&format!("http://{free}"), ProxyOptions::default()).await;
    let mut client = ping_client(proxy.addr()).await;
    for _ in 0..3 {
        let started = Instant::now();
        let status = expect_err(client.ping(PingRequest::default()).await);
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(status.code(), Code::Unavailable);
        assert!(
            status.message().contains(&free.to_string()),
            "names the backend: {}",
            status.message()
        );
    }
    assert!(all_streams_closed(&stats).await);
}

#[tokio::test]
async fn backend_dies_mid_stream_client_gets_error_without_hang() {
    // The backend sends headers and one message, then its process "dies": every connection
    // is dropped without GOAWAY or trailers.
    let backend = RawBackend::start(|_request| async {
        let (tx, body) = channel_body();
        tokio::spawn(async move {
            let _ = tx.send(Ok(Frame::data(grpc_frame(false, b"first")))).await;
            tx.closed().await;
        });
        grpcproxy_testing::raw::grpc_response(body)
    })
    .await;
    let (proxy, stats) = proxy_to(&backend.url(), ProxyOptions::default()).await;
    let client = RawClient::connect(proxy.addr()).await;
    let (_tx, body) = channel_body();
    let response = client
        .start("/pkg.Svc/Stream", HeaderMap::new(), body)
        .await;
    let (parts, mut body) = response.into_parts();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(&first[..], &grpc_frame(false, b"first")[..]);
    drop(backend);
    let rest = tokio::time::timeout(
        Duration::from_secs(3),
        grpcproxy_testing::raw::collect(Response::from_parts(parts, body)),
    )
    .await
    .expect("the client must not hang when the backend dies");
    assert_eq!(
        rest.grpc_status(),
        Some("14"),
        "UNAVAILABLE: {:?}",
        rest.trailers
    );
    let message = rest
        .trailers
        .as_ref()
        .unwrap()
        .get("grpc-message")
        .unwrap()
        .to_str()
        .unwrap();
    assert!(
        message.contains("127.0.0.1"),
        "names the backend: {message}"
    );
    assert!(all_streams_closed(&stats).await);
}

#[tokio::test]
async fn proxy_reconnects_after_backend_restart() {
    let (backend, _service) = ping_backend().await;
    let addr = backend.addr();
    let (proxy, _stats) = proxy_to(&backend.url(), ProxyOptions::default()).await;
    let mut client = ping_client(proxy.addr()).await;
    client.ping(PingRequest::default()).await.unwrap();
    backend.stop();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        expect_err(client.ping(PingRequest::default()).await).code(),
        Code::Unavailable
    );

    // Same address, new server: the proxy connects again by itself.
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let service = grpcproxy_testing::PingService::new();
    let routes = tonic::service::Routes::new(grpcproxy_testing::serve::ping_server(service));
    let _server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_routes(routes)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let reply = client
        .ping(PingRequest {
            value: "back".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(reply.get_ref().value, "back");
}

/// A gRPC response of `messages`, each sent `gap` after the previous one, then status OK.
fn paced_response(
    messages: &'static [&'static str],
    gap: Duration,
) -> Response<grpcproxy_testing::raw::RawBody> {
    let (tx, body) = channel_body();
    tokio::spawn(async move {
        for (i, message) in messages.iter().enumerate() {
            if i > 0 {
                tokio::time::sleep(gap).await;
            }
            let _ = tx
                .send(Ok(Frame::data(grpc_frame(false, message.as_bytes()))))
                .await;
        }
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", "0".parse().unwrap());
        let _ = tx.send(Ok(Frame::trailers(trailers))).await;
    });
    grpcproxy_testing::raw::grpc_response(body)
}

#[tokio::test]
async fn backend_goaway_lets_in_flight_calls_finish_and_moves_new_ones() {
    // Every backend connection sends GOAWAY as soon as its first call arrives (a maximum
    // connection age of one call): the call in flight must finish on the old connection,
    // the next calls must go to new ones.
    let backend =
        RawBackend::start_draining(|request: http::Request<hyper::body::Incoming>| async move {
            match request.uri().path() {
                "/pkg.Svc/Slow" => paced_response(&["one", "two"], Duration::from_millis(400)),
                _ => paced_response(&["quick"], Duration::ZERO),
            }
        })
        .await;
    let (proxy, stats) = proxy_to(&backend.url(), ProxyOptions::default()).await;
    let client = RawClient::connect(proxy.addr()).await;
    let (_tx, body) = channel_body();
    let slow = client.start("/pkg.Svc/Slow", HeaderMap::new(), body).await;
    let (parts, mut slow_body) = slow.into_parts();
    let first = slow_body
        .frame()
        .await
        .unwrap()
        .unwrap()
        .into_data()
        .unwrap();
    assert_eq!(&first[..], &grpc_frame(false, b"one")[..]);
    tokio::time::sleep(Duration::from_millis(50)).await; // the GOAWAY is in

    for n in 1..=3 {
        let started = Instant::now();
        let quick = client
            .call(
                "/pkg.Svc/Quick",
                HeaderMap::new(),
                grpcproxy_testing::raw::frames_body(vec![]),
            )
            .await;
        assert_eq!(
            quick.grpc_status(),
            Some("0"),
            "call {n} after GOAWAY: {quick:?}"
        );
        assert_eq!(&quick.data[..], &grpc_frame(false, b"quick")[..]);
        assert!(
            started.elapsed() < Duration::from_millis(300),
            "call {n} took {:?}",
            started.elapsed()
        );
        assert_eq!(
            backend.connections_accepted(),
            n + 1,
            "call {n} went to a new connection"
        );
    }

    let rest = grpcproxy_testing::raw::collect(Response::from_parts(parts, slow_body)).await;
    assert_eq!(
        rest.grpc_status(),
        Some("0"),
        "the call in flight finished: {rest:?}"
    );
    assert_eq!(&rest.data[..], &grpc_frame(false, b"two")[..]);
    assert!(all_streams_closed(&stats).await);
}

#[tokio::test]
async fn backend_killed_mid_bidi_fails_both_directions_promptly() {
    let (backend, _service) = ping_backend().await;
    let (proxy, stats) = proxy_to(&backend.url(), ProxyOptions::default()).await;
    let mut client = ping_client(proxy.addr()).await;
    let (tx, mut replies) = open_ping_stream(&mut client, "before").await;

    backend.kill();
    let started = Instant::now();
    let status = tokio::time::timeout(Duration::from_secs(3), replies.message())
        .await
        .expect("the client must not hang when the backend dies mid-bidi")
        .expect_err("the call must fail");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("127.0.0.1"),
        "names the backend: {}",
        status.message()
    );
    // The request half is over too: the client's sends end (no one reads them any more).
    let closed = tokio::time::timeout(Duration::from_secs(1), async {
        while tx.send(ping("after")).await.is_ok() {}
    })
    .await;
    assert!(
        closed.is_ok(),
        "the client's request stream must be released"
    );
    assert!(all_streams_closed(&stats).await);
}

#[tokio::test]
async fn proxy_reconnects_after_backend_restart_under_load() {
    let (backend, _service) = ping_backend().await;
    let addr = backend.addr();
    let (proxy, stats) = proxy_to(&backend.url(), ProxyOptions::default()).await;
    let client = ping_client(proxy.addr()).await;
    let restarted = std::sync::Arc::new(tokio::sync::OnceCell::<Instant>::new());
    // 8 clients call back to back for the whole test.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let (mut client, stop, restarted) = (client.clone(), stop.clone(), restarted.clone());
            tokio::spawn(async move {
                let (mut ok, mut unavailable, mut ok_after_restart) = (0u32, 0u32, 0u32);
                let mut failed_after_restart = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let result = client.ping(PingRequest::default()).await;
                    let after = restarted
                        .get()
                        .is_some_and(|at| at.elapsed() > Duration::from_millis(500));
                    match result {
                        Ok(_) if after => ok_after_restart += 1,
                        Ok(_) => ok += 1,
                        Err(status) if after => failed_after_restart.push(status),
                        Err(status) => {
                            assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                            unavailable += 1;
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                    }
                }
                (ok, unavailable, ok_after_restart, failed_after_restart)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    backend.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let routes = tonic::service::Routes::new(grpcproxy_testing::serve::ping_server(
        grpcproxy_testing::PingService::new(),
    ));
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_routes(routes)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    restarted.set(Instant::now()).unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut ok, mut unavailable, mut ok_after) = (0, 0, 0);
    for worker in workers {
        let (o, u, a, failed) = worker.await.unwrap();
        assert!(
            failed.is_empty(),
            "calls failed 500 ms after the restart: {failed:?}"
        );
        (ok, unavailable, ok_after) = (ok + o, unavailable + u, ok_after + a);
    }
    println!("before/around the restart: {ok} ok, {unavailable} UNAVAILABLE; after: {ok_after} ok");
    assert!(
        unavailable > 0,
        "the backend was down for 300 ms: some calls must have failed"
    );
    assert!(
        ok_after > 100,
        "after the restart calls flow again: {ok_after}"
    );
    assert!(all_streams_closed(&stats).await);
    server.abort();
}
