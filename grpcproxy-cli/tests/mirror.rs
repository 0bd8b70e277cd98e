//! Mirroring (`mirror = { ... }` on a route) against real peers: a grpcio primary with a
//! grpc-js shadow answering alike (every call `match`), raw HTTP/2 peers for what must be
//! exact (one differing byte, the metadata the shadow gets), and shadows that hang, do not
//! read, or are down — the primary's calls are never slowed or failed by them.

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use grpcproxy_interop::pb::interop_client::InteropClient;
use grpcproxy_interop::pb::Request as InteropRequest;
use grpcproxy_interop::peers::{start_backend, Runtime};
use grpcproxy_testing::raw::{
    channel_body, frames_body, grpc_frame, grpc_response, header_map, read_request, RawBackend,
    RawClient,
};
use http::HeaderMap;
use http_body::Frame;
use http_body_util::BodyExt;
use support::baseline::rss_mib;
use support::Proxy;

/// A config routing every call to cluster `primary`, mirrored to cluster `shadow` with
/// `mirror` (the inside of the route's `mirror = { ... }`).
fn mirror_config(primary: SocketAddr, shadow: SocketAddr, mirror: &str) -> String {
    support::clusters_config(
        &format!("mirror = {{ cluster = \"shadow\", {mirror} }}"),
        &[("primary", primary), ("shadow", shadow)],
    )
}

/// The binary with [`mirror_config`].
fn mirrored_proxy(
    primary: SocketAddr,
    shadow: SocketAddr,
    mirror: &str,
) -> (Proxy, tempfile::NamedTempFile) {
    support::start_with_config(&mirror_config(primary, shadow, mirror), 1)
}

/// `grpcproxy_mirror_calls_total` of route `r` for `result`.
fn mirrored(proxy: &Proxy, result: &str) -> i64 {
    support::baseline::metric(
        proxy.admin.unwrap(),
        &format!("grpcproxy_mirror_calls_total{{route=\"r\",result=\"{result}\"}}"),
    )
}

/// Waits up to 10 s until the mirror counts (match, differ, dropped, error, sent) add up
/// to `calls`; returns them.
fn settled(proxy: &Proxy, calls: i64) -> [i64; 5] {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let counts = ["match", "differ", "dropped", "error", "sent"].map(|r| mirrored(proxy, r));
        if counts.iter().sum::<i64>() >= calls {
            return counts;
        }
        assert!(
            Instant::now() < deadline,
            "mirror counts {counts:?} never reached {calls} calls"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `calls` unary calls through `proxy` from 8 concurrent tonic clients (accepting gzip),
/// each checked against its payload.
async fn unary_calls(proxy: &Proxy, calls: usize) {
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", proxy.listening[0]))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..8 {
        let mut client = InteropClient::new(channel.clone())
            .accept_compressed(tonic::codec::CompressionEncoding::Gzip);
        tasks.spawn(async move {
            for i in (worker..calls).step_by(8) {
                let payload = Bytes::from(format!("call {i} {}", "x".repeat(i % 97)));
                let request = InteropRequest {
                    payload: payload.clone(),
                    ..Default::default()
                };
                let reply = client.unary(request).await.expect("the primary answers");
                assert_eq!(reply.get_ref().payload, payload);
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
}

/// A backend of `primary` mirrored to one of `shadow` at 100 %, compared, behind the
/// binary; the backends live as long as the returned guards.
async fn compared_pair(primary: Runtime, shadow: Runtime) -> (Proxy, impl Sized) {
    let (primary, shadow) = tokio::join!(start_backend(primary), start_backend(shadow));
    let (proxy, file) = mirrored_proxy(
        primary.addr(),
        shadow.addr(),
        // Room for every call's mirror: a shadow that lags under load must not be
        // dropped here (the cap has a test of its own).
        "percent = 100, compare = true, max_in_flight = 1024",
    );
    (proxy, (primary, shadow, file))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shadow_that_answers_alike_matches_every_call() {
    // Two grpcio backends, as the running version and the next one of a service.
    let (proxy, _peers) = compared_pair(Runtime::Grpcio, Runtime::Grpcio).await;
    let calls = 1000;
    unary_calls(&proxy, calls).await;
    let [matched, differed, dropped, errors, sent] = settled(&proxy, calls as i64);
    eprintln!("mirror: {matched} match, {differed} differ, {dropped} dropped, {errors} error, {sent} sent");
    assert_eq!(
        (matched, differed, dropped, errors, sent),
        (calls as i64, 0, 0, 0, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewrite_on_another_grpc_library_is_told_apart_by_its_trailers() {
    // The service rewritten for Node: grpc-js answers the same messages, but ends each
    // call with `grpc-message: OK` where grpcio sends none. Byte for byte, every answer
    // differs, and the log says how.
    let (proxy, _peers) = compared_pair(Runtime::Grpcio, Runtime::GrpcJs).await;
    unary_calls(&proxy, 20).await;
    let [matched, differed, dropped, errors, sent] = settled(&proxy, 20);
    assert_eq!((matched, differed, dropped, errors, sent), (0, 20, 0, 0, 0));
    let logged = support::logged(&proxy, "the mirror's answer differs from the primary's");
    assert_eq!(logged.len(), 10, "log_differences defaults to 10");
    let line: serde_json::Value = serde_json::from_str(&logged[0]).unwrap();
    assert_eq!(
        line["fields"]["differences"],
        r#"grpc-message: primary "", mirror "OK""#
    );
    assert_eq!(line["fields"]["method"], "/interop.v1.Interop/Unary");
}

/// A request body of one frame that says it ends with it, so the client sends it as one
/// DATA frame with END_STREAM.
fn whole_body(bytes: Bytes) -> grpcproxy_testing::raw::RawBody {
    use http_body_util::BodyExt;
    http_body_util::Full::new(bytes)
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// What a raw shadow saw of each call: its path and headers, and its request bytes.
type Seen = Arc<Mutex<Vec<(String, HeaderMap, Bytes)>>>;

/// The shadow's answer in the difference tests: the echo with the 4th byte of its message
/// (byte 8 of the body: 5 of prefix) flipped.
fn flip_fourth_message_byte(body: Bytes) -> Bytes {
    let mut flipped = body.to_vec();
    flipped[8] ^= 0xff;
    Bytes::from(flipped)
}

/// A raw backend that records each call and answers it with `reply(request bytes)` and
/// `grpc-status: 0`.
async fn recording_backend(reply: fn(Bytes) -> Bytes) -> (RawBackend, Seen) {
    let seen: Seen = Arc::default();
    let record = seen.clone();
    let backend = RawBackend::start(move |request: http::Request<hyper::body::Incoming>| {
        let record = record.clone();
        async move {
            let path = request.uri().path().to_owned();
            let headers = request.headers().clone();
            let (body, _) = read_request(request.into_body()).await.unwrap_or_default();
            record.lock().unwrap().push((path, headers, body.clone()));
            grpc_response(frames_body(vec![
                Frame::data(reply(body)),
                Frame::trailers(header_map(&[("grpc-status", "0")])),
            ]))
        }
    })
    .await;
    (backend, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_differing_byte_is_counted_and_logged_at_its_offset() {
    let (primary, _) = recording_backend(|body| body).await;
    let (shadow, seen) = recording_backend(flip_fourth_message_byte).await;
    let (proxy, _file) = mirrored_proxy(
        primary.addr(),
        shadow.addr(),
        "percent = 100, compare = true, log_differences = 2",
    );
    let client = RawClient::connect(proxy.listening[0]).await;
    let message = b"exact bytes".to_vec();
    for _ in 0..5 {
        let headers = header_map(&[("x-tenant", "blue"), ("grpc-timeout", "5S")]);
        let answer = client
            .call(
                "/pkg.Svc/Get",
                headers,
                // One DATA frame that ends the stream (END_STREAM on the message, as
                // most clients send a unary request).
                whole_body(grpc_frame(false, &message)),
            )
            .await;
        assert_eq!(answer.grpc_status(), Some("0"));
        assert_eq!(
            answer.data,
            grpc_frame(false, &message),
            "the client gets the primary's answer"
        );
    }
    let [matched, differed, dropped, errors, _] = settled(&proxy, 5);
    assert_eq!((matched, differed, dropped, errors), (0, 5, 0, 0));
    // Logged twice (log_differences = 2), with the message's first differing byte.
    let logged = support::logged(&proxy, "the mirror's answer differs from the primary's");
    assert_eq!(logged.len(), 2, "{logged:?}");
    assert!(
        logged[0].contains("\"first_differing_byte\":3"),
        "{}",
        logged[0]
    );
    assert!(logged[0].contains("\"mirror\":\"r\""), "{}", logged[0]);
    assert!(
        logged[0].contains(
            "response message 0: 11 bytes, first difference at byte 3 (primary 0x63, mirror 0x9c)"
        ),
        "{}",
        logged[0]
    );
    // The shadow got the primary's method, metadata and bytes, marked as a mirror.
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 5);
    let (path, headers, body) = &seen[0];
    assert_eq!(path, "/pkg.Svc/Get");
    assert_eq!(headers["x-grpcproxy-mirror"], "1");
    assert_eq!(headers["x-tenant"], "blue");
    assert!(headers.contains_key("grpc-timeout"));
    assert_eq!(body, &grpc_frame(false, &message));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_shadow_never_slows_or_fails_the_primary() {
    let (primary, _) = recording_backend(|body| body).await;
    // Reads each request, then never answers.
    let shadow = RawBackend::start(|request: http::Request<hyper::body::Incoming>| async move {
        let _ = read_request(request.into_body()).await;
        std::future::pending::<()>().await;
        unreachable!()
    })
    .await;
    let calls = 400;
    let run = |proxy_addr: SocketAddr| async move {
        let client = RawClient::connect(proxy_addr).await;
        let mut took = Vec::new();
        for i in 0..calls {
            let message = format!("call {i}");
            let started = Instant::now();
            let answer = client
                .call(
                    "/pkg.Svc/Get",
                    header_map(&[]),
                    frames_body(vec![Frame::data(grpc_frame(false, message.as_bytes()))]),
                )
                .await;
            took.push(started.elapsed());
            assert_eq!(answer.grpc_status(), Some("0"), "call {i}");
            assert_eq!(answer.data, grpc_frame(false, message.as_bytes()));
        }
        took.sort();
        took[took.len() * 99 / 100]
    };
    // The same calls without a mirror, then with the hanging one (at most 8 at once, 1 s).
    let plain = support::one_backend_config(primary.addr(), "");
    let (quiet, _quiet_file) = support::start_with_config(&plain, 1);
    let p99_quiet = run(quiet.listening[0]).await;
    let (proxy, _file) = mirrored_proxy(
        primary.addr(),
        shadow.addr(),
        "percent = 100, compare = true, max_in_flight = 8, timeout = \"1s\"",
    );
    let rss_before = rss_mib(&proxy);
    let p99_mirrored = run(proxy.listening[0]).await;
    eprintln!(
        "hanging shadow: primary p99 {p99_mirrored:?} with the mirror, {p99_quiet:?} without"
    );
    // Every mirror is dropped: past max_in_flight at once, the 8 in flight after 1 s.
    let [matched, differed, dropped, errors, sent] = settled(&proxy, calls);
    assert_eq!(
        (matched, differed, dropped, errors, sent),
        (0, 0, calls, 0, 0)
    );
    let rss_after = rss_mib(&proxy);
    assert!(
        rss_after <= rss_before + 16,
        "RSS grew from {rss_before} MiB to {rss_after} MiB"
    );
    // Loosely (2 shared cores): the mirror costs the primary no waiting.
    assert!(
        p99_mirrored < p99_quiet * 3 + Duration::from_millis(20),
        "primary p99 {p99_mirrored:?} with a hanging mirror, {p99_quiet:?} without"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_that_answers_before_the_half_close_leaves_the_shadow_its_request() {
    // The primary answers with the first message it reads and reads no more (h2 then
    // resets the request's stream with NO_ERROR, RFC 9113 §8.1), as grpcio can answer a
    // unary call whose END_STREAM comes in a frame of its own.
    let primary = RawBackend::start(|request: http::Request<hyper::body::Incoming>| async move {
        let first = request.into_body().frame().await;
        let message = first
            .and_then(Result::ok)
            .and_then(|frame| frame.into_data().ok())
            .unwrap_or_default();
        grpc_response(frames_body(vec![
            Frame::data(message),
            Frame::trailers(header_map(&[("grpc-status", "0")])),
        ]))
    })
    .await;
    // The shadow answers with all it read, once the request ends.
    let (shadow, seen) = recording_backend(|body| body).await;
    let (proxy, _file) = mirrored_proxy(
        primary.addr(),
        shadow.addr(),
        "percent = 100, compare = true",
    );
    let client = RawClient::connect(proxy.listening[0]).await;
    let message = grpc_frame(false, b"one message");
    let (tx, body) = channel_body();
    tx.send(Ok(Frame::data(message.clone()))).await.unwrap();
    // The client's half-close has not come when the primary answers.
    let answer = client.call("/pkg.Svc/Early", header_map(&[]), body).await;
    assert_eq!(answer.grpc_status(), Some("0"));
    assert_eq!(answer.data, message);
    let [matched, differed, dropped, errors, sent] = settled(&proxy, 1);
    assert_eq!((matched, differed, dropped, errors, sent), (1, 0, 0, 0, 0));
    // The shadow got what the primary got, and the end of the request.
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].2, message);
    drop(tx);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shadow_that_stops_reading_is_dropped_past_its_buffer() {
    let (primary, _) = recording_backend(|body| Bytes::from(body.len().to_string())).await;
    // Takes the request head and never reads the body: its window fills, the proxy's
    // buffer for it too.
    let shadow = RawBackend::start(|request: http::Request<hyper::body::Incoming>| async move {
        let _body = request.into_body();
        std::future::pending::<()>().await;
        unreachable!()
    })
    .await;
    let (proxy, _file) = mirrored_proxy(
        primary.addr(),
        shadow.addr(),
        "percent = 100, buffer_bytes = 65536",
    );
    let client = RawClient::connect(proxy.listening[0]).await;
    // A client stream of 4 MiB in 64 messages: the primary reads it all.
    let (tx, body) = channel_body();
    let message = vec![7u8; 64 << 10];
    let sender = tokio::spawn(async move {
        for _ in 0..64 {
            tx.send(Ok(Frame::data(grpc_frame(false, &message))))
                .await
                .unwrap();
        }
    });
    let answer = client.call("/pkg.Svc/Upload", header_map(&[]), body).await;
    sender.await.unwrap();
    assert_eq!(answer.grpc_status(), Some("0"));
    assert_eq!(
        answer.data,
        Bytes::from((64 * (5 + (64 << 10))).to_string())
    );
    let [matched, differed, dropped, errors, sent] = settled(&proxy, 1);
    assert_eq!((matched, differed, dropped, errors, sent), (0, 0, 1, 0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shadow_that_is_down_leaves_the_primary_alone() {
    let (primary, _) = recording_backend(|body| body).await;
    // A port nothing listens on.
    let down = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let down_addr = down.local_addr().unwrap();
    drop(down);
    let (proxy, _file) = mirrored_proxy(primary.addr(), down_addr, "percent = 100, compare = true");
    let client = RawClient::connect(proxy.listening[0]).await;
    for i in 0..20 {
        let message = format!("call {i}");
        let answer = client
            .call(
                "/pkg.Svc/Get",
                header_map(&[]),
                frames_body(vec![Frame::data(grpc_frame(false, message.as_bytes()))]),
            )
            .await;
        assert_eq!(answer.grpc_status(), Some("0"));
        assert_eq!(answer.data, grpc_frame(false, message.as_bytes()));
    }
    let [matched, differed, dropped, errors, sent] = settled(&proxy, 20);
    assert_eq!((matched, differed, dropped, errors, sent), (0, 0, 0, 20, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_the_primary_cancels_the_mirror() {
    // Both backends take the request and answer only after 30 s; each counts the calls
    // whose stream was reset before it answered.
    let counting = || async {
        let cancelled = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = cancelled.clone();
        let backend = RawBackend::start(move |request: http::Request<hyper::body::Incoming>| {
            let count = count.clone();
            async move {
                struct Cancel(Arc<std::sync::atomic::AtomicUsize>);
                impl Drop for Cancel {
                    fn drop(&mut self) {
                        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                }
                let _cancel = Cancel(count);
                let _ = read_request(request.into_body()).await;
                tokio::time::sleep(Duration::from_secs(30)).await;
                grpc_response(frames_body(Vec::new()))
            }
        })
        .await;
        (backend, cancelled)
    };
    let ((primary, primary_cancelled), (shadow, shadow_cancelled)) =
        tokio::join!(counting(), counting());
    let (proxy, _file) = mirrored_proxy(primary.addr(), shadow.addr(), "percent = 100");
    let client = RawClient::connect(proxy.listening[0]).await;
    let call = client.call(
        "/pkg.Svc/Wait",
        header_map(&[]),
        frames_body(vec![Frame::data(grpc_frame(false, b"x"))]),
    );
    // The client gives up after 300 ms: its stream is reset.
    assert!(tokio::time::timeout(Duration::from_millis(300), call)
        .await
        .is_err());
    let deadline = Instant::now() + Duration::from_secs(5);
    let load =
        |c: &Arc<std::sync::atomic::AtomicUsize>| c.load(std::sync::atomic::Ordering::SeqCst);
    while (load(&primary_cancelled), load(&shadow_cancelled)) != (1, 1) {
        assert!(
            Instant::now() < deadline,
            "cancelled: primary {}, shadow {}",
            load(&primary_cancelled),
            load(&shadow_cancelled)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let [_, _, dropped, _, _] = settled(&proxy, 1);
    assert_eq!(dropped, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_mirror_result_is_published_to_the_tap() {
    let (primary, _) = recording_backend(|body| body).await;
    let (shadow, _) = recording_backend(flip_fourth_message_byte).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tap.pb");
    let config = format!(
        "{}\n[tap]\nfile = \"{}\"\n",
        mirror_config(
            primary.addr(),
            shadow.addr(),
            "percent = 100, compare = true, tap = true"
        ),
        file.display()
    );
    let (mut proxy, _file) = support::start_with_config(&config, 1);
    let client = RawClient::connect(proxy.listening[0]).await;
    for _ in 0..2 {
        let answer = client
            .call(
                "/pkg.Svc/Get",
                header_map(&[]),
                whole_body(grpc_frame(false, b"exact bytes")),
            )
            .await;
        assert_eq!(answer.grpc_status(), Some("0"));
    }
    settled(&proxy, 2);
    support::sigterm(&proxy);
    assert!(support::wait_exit(&mut proxy, Duration::from_secs(10)).success());
    let events = grpcproxy::mq::FileQueue::read(&file).unwrap();
    let started: Vec<u64> = events
        .iter()
        .filter_map(|e| match &e.event {
            Some(grpcproxy::mq::wire::Kind::Started(s)) => Some(s.call_id),
            _ => None,
        })
        .collect();
    let mirrors: Vec<&grpcproxy::mq::wire::MirrorResult> = events
        .iter()
        .filter_map(|e| match &e.event {
            Some(grpcproxy::mq::wire::Kind::Mirror(m)) => Some(m),
            _ => None,
        })
        .collect();
    assert_eq!(mirrors.len(), 2, "{events:?}");
    for mirror in mirrors {
        assert!(started.contains(&mirror.call_id), "{mirror:?}");
        assert_eq!(mirror.method, "/pkg.Svc/Get");
        assert_eq!(mirror.backend, shadow.addr().to_string());
        assert_eq!(mirror.result, "differ");
        assert_eq!(mirror.first_differing_byte, 3);
        assert_eq!(
            mirror.differences,
            ["response message 0: 11 bytes, first difference at byte 3 (primary 0x63, mirror 0x9c)"]
        );
    }
}
