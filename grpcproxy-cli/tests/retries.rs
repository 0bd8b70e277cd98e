//! Route retries (`retry = { ... }`) and cluster retry budgets against a scripted HTTP/2
//! backend that records every try it receives: exact request bytes, the
//! `grpc-previous-rpc-attempts` each try carries, and when it arrived.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use grpcproxy_testing::raw::{frames_body, grpc_frame, header_map, RawClient};
use http::HeaderMap;
use http_body::Frame;
use support::scripted::{fails_then_echoes, scripted, Answer};

/// A config: one route `r` with `retry = {retry}` to the cluster `backend`, and
/// `cluster_extra` in the cluster's table (passive ejection off: failures are the point).
fn config(backend: std::net::SocketAddr, retry: &str, cluster_extra: &str) -> String {
    let cluster_extra = format!("outlier.consecutive_failures = 0\n{cluster_extra}");
    support::one_route_config(
        "backend",
        &[backend],
        &format!("retry = {retry}"),
        &cluster_extra,
    )
}

/// Ten messages of client streaming, and their exact bytes.
fn ten_messages(size: usize) -> (Vec<Frame<Bytes>>, Bytes) {
    let mut all = Vec::new();
    let frames = (0..10u8)
        .map(|i| {
            let frame = grpc_frame(false, &vec![b'a' + i; size]);
            all.extend_from_slice(&frame);
            Frame::data(frame)
        })
        .collect();
    (frames, Bytes::from(all))
}

async fn call(
    proxy: &support::Proxy,
    frames: Vec<Frame<Bytes>>,
    headers: HeaderMap,
) -> grpcproxy_testing::raw::RawResponse {
    let client = RawClient::connect(proxy.listening[0]).await;
    client
        .call("/retry.Test/Stream", headers, frames_body(frames))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unavailable_tries_are_retried_with_the_same_bytes_and_the_attempt_count() {
    let (backend, tries) = scripted(fails_then_echoes::<2>).await;
    let retry = r#"{ on = ["unavailable"], attempts = 3, backoff = "1ms", max_backoff = "5ms" }"#;
    let (proxy, _file) = support::start_with_config(&config(backend.addr(), retry, ""), 1);
    let (frames, sent) = ten_messages(30);
    let response = call(&proxy, frames, HeaderMap::new()).await;
    assert_eq!(response.grpc_status(), Some("0"), "{response:?}");
    assert_eq!(
        response.data, sent,
        "the answer of the third try reaches the client"
    );
    let tries = tries.lock().unwrap().clone();
    assert_eq!(tries.len(), 3);
    for attempt in &tries {
        assert_eq!(
            attempt.body, sent,
            "every try carries the request's exact bytes"
        );
    }
    let previous: Vec<Option<&str>> = tries
        .iter()
        .map(|t| t.previous_attempts.as_deref())
        .collect();
    assert_eq!(previous, [None, Some("1"), Some("2")]);
    support::wait_for_metric(
        proxy.admin.unwrap(),
        r#"grpcproxy_retries_total{route="r",result="retried"} 2"#,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_not_named_is_not_retried_and_the_last_answer_is_the_clients() {
    let (backend, tries) = scripted(|_| Answer::Fail("14", None)).await;
    let retry = r#"{ on = ["resource_exhausted"], attempts = 3, backoff = "1ms" }"#;
    let (proxy, _file) = support::start_with_config(&config(backend.addr(), retry, ""), 1);
    let response = call(&proxy, ten_messages(3).0, HeaderMap::new()).await;
    assert_eq!(response.grpc_status(), Some("14"));
    assert_eq!(tries.lock().unwrap().len(), 1);

    // Named but out of tries: three tries, then the backend's own answer.
    let (backend, tries) = scripted(|_| Answer::Fail("8", None)).await;
    let (proxy, _file) = support::start_with_config(&config(backend.addr(), retry, ""), 1);
    let response = call(&proxy, ten_messages(3).0, HeaderMap::new()).await;
    assert_eq!(response.grpc_status(), Some("8"));
    assert!(response.trailers_only);
    assert_eq!(tries.lock().unwrap().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_larger_than_the_buffer_is_not_retried() {
    let (backend, tries) = scripted(fails_then_echoes::<1>).await;
    // 10 messages of 30 + 5 bytes = 350 bytes, over a 200-byte buffer.
    let retry = r#"{ on = ["unavailable"], attempts = 3, backoff = "1ms", buffer_bytes = 200 }"#;
    let (proxy, _file) = support::start_with_config(&config(backend.addr(), retry, ""), 1);
    let response = call(&proxy, ten_messages(30).0, HeaderMap::new()).await;
    assert_eq!(response.grpc_status(), Some("14"));
    assert_eq!(tries.lock().unwrap().len(), 1);
    support::wait_for_metric(
        proxy.admin.unwrap(),
        r#"grpcproxy_retries_total{route="r",result="buffer"} 1"#,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backends_pushback_sets_the_wait_or_stops_the_retries() {
    let (backend, tries) = scripted(|i| {
        if i < 1 {
            Answer::Fail("14", Some("200"))
        } else {
            Answer::Echo
        }
    })
    .await;
    let retry = r#"{ on = ["unavailable"], attempts = 3, backoff = "1ms", max_backoff = "1ms" }"#;
    let (proxy, _file) = support::start_with_config(&config(backend.addr(), retry, ""), 1);
    let response = call(&proxy, ten_messages(3).0, HeaderMap::new()).await;
    assert_eq!(response.grpc_status(), Some("0"));
    let tries = tries.lock().unwrap().clone();
    assert_eq!(tries.len(), 2);
    let waited = tries[1].at - tries[0].at;
    assert!(
        waited >= Duration::from_millis(200),
        "retried after {waited:?}"
    );

    let (backend, tries) = scripted(|_| Answer::Fail("14", Some("-1"))).await;
    let (proxy, _file) = support::start_with_config(&config(backend.addr(), retry, ""), 1);
    let response = call(&proxy, ten_messages(3).0, HeaderMap::new()).await;
    assert_eq!(response.grpc_status(), Some("14"));
    assert_eq!(
        tries.lock().unwrap().len(),
        1,
        "a negative pushback stops retrying"
    );
    support::wait_for_metric(
        proxy.admin.unwrap(),
        r#"grpcproxy_retries_total{route="r",result="pushback"} 1"#,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_budget_caps_retries_of_an_always_failing_backend() {
    let (backend, tries) = scripted(|_| Answer::Fail("14", None)).await;
    let retry = r#"{ on = ["unavailable"], attempts = 3, backoff = "0s", max_backoff = "0s" }"#;
    let budget = "retry_budget = { ratio = 0.2, min_per_second = 1 }";
    let (proxy, _file) = support::start_with_config(&config(backend.addr(), retry, budget), 1);
    let client = Arc::new(RawClient::connect(proxy.listening[0]).await);
    let calls = 1000;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..calls / 8 {
                let body = frames_body(vec![Frame::data(grpc_frame(false, b"x"))]);
                let response = client
                    .call("/retry.Test/Unary", HeaderMap::new(), body)
                    .await;
                assert_eq!(response.grpc_status(), Some("14"));
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let retries = tries.lock().unwrap().len() - calls;
    // In 10 s: 20 % of the calls, plus 1 per second.
    assert!(
        retries <= calls / 5 + 10,
        "{retries} retries for {calls} calls"
    );
    assert!(
        retries >= calls / 5 - 10,
        "{retries} retries: the budget was not used"
    );
    let body = support::wait_for_metric(
        proxy.admin.unwrap(),
        &format!(r#"grpcproxy_retries_total{{route="r",result="retried"}} {retries}"#),
    );
    let skipped: u64 = body
        .lines()
        .find_map(|l| l.strip_prefix(r#"grpcproxy_retries_total{route="r",result="budget"} "#))
        .unwrap()
        .parse()
        .unwrap();
    eprintln!("{calls} calls: {retries} retries made, {skipped} refused by the budget");
    // A call stops at its first refused retry; only calls that made both retries met none.
    let skipped = skipped as usize;
    assert!(
        skipped >= calls - retries / 2 && skipped <= calls,
        "{skipped} refused by the budget, {retries} made"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_never_outlive_the_deadline() {
    let (backend, tries) = scripted(|_| Answer::SlowFail(Duration::from_millis(100))).await;
    let retry = r#"{ on = ["unavailable"], attempts = 10, backoff = "1ms", max_backoff = "1ms" }"#;
    let (proxy, _file) = support::start_with_config(&config(backend.addr(), retry, ""), 1);
    let started = Instant::now();
    let response = call(
        &proxy,
        ten_messages(3).0,
        header_map(&[("grpc-timeout", "250m")]),
    )
    .await;
    let took = started.elapsed();
    assert_eq!(response.grpc_status(), Some("4"), "{response:?}");
    assert!(took < Duration::from_millis(450), "the call took {took:?}");
    assert!(tries.lock().unwrap().len() <= 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_try_over_the_per_try_timeout_is_retried() {
    let (backend, tries) = scripted(|i| {
        if i < 1 {
            Answer::SlowEcho(Duration::from_secs(2))
        } else {
            Answer::Echo
        }
    })
    .await;
    let retry =
        r#"{ on = ["unavailable"], attempts = 2, per_try_timeout = "150ms", backoff = "1ms" }"#;
    let (proxy, _file) = support::start_with_config(&config(backend.addr(), retry, ""), 1);
    let started = Instant::now();
    let (frames, sent) = ten_messages(3);
    let response = call(&proxy, frames, HeaderMap::new()).await;
    assert_eq!(response.grpc_status(), Some("0"), "{response:?}");
    assert_eq!(response.data, sent);
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(tries.lock().unwrap().len(), 2);

    // Every try too slow: DEADLINE_EXCEEDED from the proxy once the last one times out.
    let (backend, _tries) = scripted(|_| Answer::SlowEcho(Duration::from_secs(2))).await;
    let (proxy, _file) = support::start_with_config(&config(backend.addr(), retry, ""), 1);
    let response = call(&proxy, ten_messages(3).0, HeaderMap::new()).await;
    assert_eq!(response.grpc_status(), Some("4"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hedges_answer_from_the_fast_endpoint_and_cancel_the_slow_one() {
    use support::scripted::scripted_counting_cancels;
    let (slow, slow_tries, slow_cancelled) =
        scripted_counting_cancels(|_| Answer::SlowEcho(Duration::from_secs(2))).await;
    let (fast, fast_tries, _) = scripted_counting_cancels(|_| Answer::Echo).await;
    let config = support::one_route_config(
        "pair",
        &[slow.addr(), fast.addr()],
        r#"hedge = { delay = "50ms", max = 2 }"#,
        "balance = \"round_robin\"\noutlier.consecutive_failures = 0",
    );
    let (proxy, _file) = support::start_with_config(&config, 1);
    let client = Arc::new(RawClient::connect(proxy.listening[0]).await);
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut took = Vec::new();
            for _ in 0..25 {
                let started = Instant::now();
                let body = frames_body(vec![Frame::data(grpc_frame(false, b"hedge me"))]);
                let response = client
                    .call("/retry.Test/Unary", HeaderMap::new(), body)
                    .await;
                assert_eq!(response.grpc_status(), Some("0"), "{response:?}");
                assert_eq!(response.data, grpc_frame(false, b"hedge me"));
                took.push(started.elapsed());
            }
            took
        }));
    }
    let mut took = Vec::new();
    for task in tasks {
        took.extend(task.await.unwrap());
    }
    took.sort();
    let p99 = took[took.len() * 99 / 100 - 1];
    eprintln!(
        "200 hedged calls: p50 {:?}, p99 {p99:?}",
        took[took.len() / 2]
    );
    assert!(
        p99 < Duration::from_millis(400),
        "p99 {p99:?}: the slow endpoint's 2 s show"
    );
    let slow_seen = slow_tries.lock().unwrap().len();
    assert!(
        slow_seen > 0,
        "round robin sends first tries to the slow endpoint too"
    );
    assert_eq!(
        fast_tries.lock().unwrap().len(),
        200,
        "every call answered by the fast one"
    );
    // The slow backend saw every one of its calls cancelled (RST_STREAM).
    let deadline = Instant::now() + Duration::from_secs(2);
    while slow_cancelled.load(std::sync::atomic::Ordering::SeqCst) < slow_seen {
        assert!(
            Instant::now() < deadline,
            "the slow backend saw {} cancels of {slow_seen}",
            slow_cancelled.load(std::sync::atomic::Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    support::wait_for_metric(
        proxy.admin.unwrap(),
        &format!(r#"grpcproxy_hedges_total{{route="r",result="cancelled"}} {slow_seen}"#),
    );
}
