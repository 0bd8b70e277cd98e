//! Fan-out (`fan_out = { clusters, mode }` on a route) against real peers: grpcio and
//! tonic interop backends with a raw HTTP/2 one whose answer each test scripts (failing,
//! hanging, a fixed message). Every mode's exact answer for unary and server-streaming
//! calls, a failing member named in the trailers, a hanging member cut at the deadline,
//! and a client's cancel reaching every member.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use grpcproxy_interop::pb::{Request as InteropRequest, Response as InteropResponse};
use grpcproxy_interop::peers::{start_backend, Runtime};
use grpcproxy_testing::raw::{
    frames_body, grpc_frame, grpc_response, header_map, read_request, RawBackend, RawClient,
    RawResponse,
};
use http_body::Frame;
use prost::Message;
use support::Proxy;

/// A config whose one route sends each call to clusters `a`, `b` and `c` (one endpoint
/// each), merged by `mode`.
fn fan_out_config(members: [SocketAddr; 3], fan: &str) -> String {
    let [a, b, c] = members;
    support::clusters_config(
        &format!("fan_out = {{ clusters = [\"a\", \"b\", \"c\"], {fan} }}"),
        &[("a", a), ("b", b), ("c", c)],
    )
}

fn fanned_proxy(members: [SocketAddr; 3], fan: &str) -> (Proxy, tempfile::NamedTempFile) {
    support::start_with_config(&fan_out_config(members, fan), 1)
}

/// What a raw member does with each call.
#[derive(Clone, Copy)]
enum Script {
    /// Trailers-only UNAVAILABLE at once.
    Unavailable,
    /// Answers this one message after the wait, then OK.
    Answer(&'static [u8], Duration),
    /// Never answers (its handler waits 30 s).
    Hang,
    /// Answers with the number of request bytes it read, as text.
    Count,
    /// Never reads the request body, never answers.
    NeverReads,
}

/// A raw member following `script`, and the number of its calls that were cancelled
/// (their stream reset before it answered).
async fn raw_member(script: Script) -> (RawBackend, Arc<AtomicUsize>) {
    let cancelled = Arc::new(AtomicUsize::new(0));
    let count = cancelled.clone();
    let backend = RawBackend::start(move |request: http::Request<hyper::body::Incoming>| {
        let count = count.clone();
        async move {
            struct Cancel(Arc<AtomicUsize>, bool);
            impl Drop for Cancel {
                fn drop(&mut self) {
                    if !self.1 {
                        self.0.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
            let mut guard = Cancel(count, false);
            if let Script::NeverReads = script {
                let _body = request.into_body();
                tokio::time::sleep(Duration::from_secs(30)).await;
                return grpc_response(frames_body(Vec::new()));
            }
            let (body, _) = read_request(request.into_body()).await.unwrap_or_default();
            let response = match script {
                Script::Count | Script::NeverReads => grpc_response(frames_body(vec![
                    Frame::data(grpc_frame(false, body.len().to_string().as_bytes())),
                    Frame::trailers(header_map(&[("grpc-status", "0")])),
                ])),
                Script::Unavailable => {
                    let mut response = grpc_response(frames_body(Vec::new()));
                    response
                        .headers_mut()
                        .insert("grpc-status", "14".parse().unwrap());
                    response
                }
                Script::Answer(message, wait) => {
                    tokio::time::sleep(wait).await;
                    grpc_response(frames_body(vec![
                        Frame::data(grpc_frame(false, message)),
                        Frame::trailers(header_map(&[("grpc-status", "0")])),
                    ]))
                }
                Script::Hang => {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    grpc_response(frames_body(Vec::new()))
                }
            };
            guard.1 = true;
            response
        }
    })
    .await;
    (backend, cancelled)
}

/// One unary call through `proxy` with raw bytes: the framed `message` to `path`.
async fn raw_call(proxy: &Proxy, path: &str, message: &[u8], timeout: Option<&str>) -> RawResponse {
    let client = RawClient::connect(proxy.listening[0]).await;
    let headers = match timeout {
        Some(t) => header_map(&[("grpc-timeout", t)]),
        None => header_map(&[]),
    };
    client
        .call(
            path,
            headers,
            frames_body(vec![Frame::data(grpc_frame(false, message))]),
        )
        .await
}

/// The interop request with `payload`, encoded.
fn interop_request(payload: &[u8], response_count: u32) -> Vec<u8> {
    InteropRequest {
        payload: Bytes::copy_from_slice(payload),
        response_count,
        ..Default::default()
    }
    .encode_to_vec()
}

/// The trailer naming the failed members.
fn fanout_errors(answer: &RawResponse) -> Option<String> {
    let trailers = if answer.trailers_only {
        &answer.headers
    } else {
        answer.trailers.as_ref()?
    };
    trailers
        .get("x-grpcproxy-fanout-errors")
        .map(|v| v.to_str().unwrap().to_owned())
}

fn status_of(answer: &RawResponse) -> Option<String> {
    answer.grpc_status().map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_answers_the_first_members_answer_only_when_every_member_is_ok() {
    // A grpcio and a tonic interop backend, and a raw member answering after 20 ms.
    let grpcio = start_backend(Runtime::Grpcio).await;
    let tonic = grpcproxy_interop::backend::serve().await;
    let (ok, _) = raw_member(Script::Answer(b"raw", Duration::from_millis(20))).await;
    let (proxy, _file) = fanned_proxy([grpcio.addr(), tonic.addr(), ok.addr()], "mode = \"all\"");
    let answer = raw_call(
        &proxy,
        "/interop.v1.Interop/Unary",
        &interop_request(b"hi", 0),
        None,
    )
    .await;
    assert_eq!(status_of(&answer).as_deref(), Some("0"), "{answer:?}");
    assert_eq!(fanout_errors(&answer), None);
    // Member a's answer (grpcio's, which says it cannot tell compression), whole.
    let messages = grpcproxy::frame::split(answer.data.clone()).unwrap();
    assert_eq!(messages.len(), 1);
    let reply = InteropResponse::decode(messages[0].1.clone()).unwrap();
    assert_eq!(reply.payload, Bytes::from_static(b"hi"));
    assert_eq!(reply.request_compressed, "unknown");

    // The same with member c failing: the client gets c's error, c named.
    let (failing, _) = raw_member(Script::Unavailable).await;
    let (proxy, _file) = fanned_proxy(
        [grpcio.addr(), tonic.addr(), failing.addr()],
        "mode = \"all\"",
    );
    let answer = raw_call(
        &proxy,
        "/interop.v1.Interop/Unary",
        &interop_request(b"hi", 0),
        None,
    )
    .await;
    assert_eq!(status_of(&answer).as_deref(), Some("14"), "{answer:?}");
    assert_eq!(fanout_errors(&answer).as_deref(), Some("c=UNAVAILABLE"));
    assert!(answer.data.is_empty());
    let metrics = support::wait_for_metric(
        proxy.admin.unwrap(),
        "grpcproxy_fanout_calls_total{route=\"r\",result=\"failed\"} 1",
    );
    assert!(metrics.contains("grpcproxy_fanout_calls_total{route=\"r\",result=\"ok\"} 0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_success_takes_the_first_ok_answer_and_cancels_the_others() {
    let (failing, _) = raw_member(Script::Unavailable).await;
    let (quick, _) = raw_member(Script::Answer(b"quick", Duration::from_millis(50))).await;
    let (hanging, hang_cancelled) = raw_member(Script::Hang).await;
    let (proxy, _file) = fanned_proxy(
        [failing.addr(), quick.addr(), hanging.addr()],
        "mode = \"first_success\"",
    );
    let started = Instant::now();
    let answer = raw_call(&proxy, "/pkg.Svc/Get", b"q", None).await;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(status_of(&answer).as_deref(), Some("0"), "{answer:?}");
    assert_eq!(answer.data, grpc_frame(false, b"quick"));
    // The member that failed before the winner answered is named.
    assert_eq!(fanout_errors(&answer).as_deref(), Some("a=UNAVAILABLE"));
    wait_until("the hanging member's call is cancelled", || {
        hang_cancelled.load(Ordering::SeqCst) == 1
    })
    .await;
    support::wait_for_metric(
        proxy.admin.unwrap(),
        "grpcproxy_fanout_calls_total{route=\"r\",result=\"partial\"} 1",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concat_joins_every_ok_answer_in_member_order() {
    // Three members answering one field each of a message whose fields are repeated:
    // field 1, a length-delimited "a1" / "b22" / "c333".
    let (a, _) = raw_member(Script::Answer(b"\x0a\x02a1", Duration::from_millis(30))).await;
    let (b, _) = raw_member(Script::Answer(b"\x0a\x03b22", Duration::ZERO)).await;
    let (c, _) = raw_member(Script::Answer(b"\x0a\x04c333", Duration::from_millis(10))).await;
    let (proxy, _file) = fanned_proxy([a.addr(), b.addr(), c.addr()], "mode = \"concat\"");
    let answer = raw_call(&proxy, "/pkg.Svc/List", b"", None).await;
    assert_eq!(status_of(&answer).as_deref(), Some("0"), "{answer:?}");
    assert_eq!(
        answer.data,
        grpc_frame(false, b"\x0a\x02a1\x0a\x03b22\x0a\x04c333"),
        "one message, the parts in member order whatever order they came in"
    );
    assert_eq!(fanout_errors(&answer), None);

    // Member b failing: the others' parts, b named.
    let (failing, _) = raw_member(Script::Unavailable).await;
    let (proxy, _file) = fanned_proxy([a.addr(), failing.addr(), c.addr()], "mode = \"concat\"");
    let answer = raw_call(&proxy, "/pkg.Svc/List", b"", None).await;
    assert_eq!(status_of(&answer).as_deref(), Some("0"), "{answer:?}");
    assert_eq!(answer.data, grpc_frame(false, b"\x0a\x02a1\x0a\x04c333"));
    assert_eq!(fanout_errors(&answer).as_deref(), Some("b=UNAVAILABLE"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interleave_merges_server_streams_and_names_the_failed_member() {
    let grpcio = start_backend(Runtime::Grpcio).await;
    let tonic = grpcproxy_interop::backend::serve().await;
    let (failing, _) = raw_member(Script::Unavailable).await;
    let (proxy, _file) = fanned_proxy(
        [grpcio.addr(), tonic.addr(), failing.addr()],
        "mode = \"interleave\"",
    );
    let client = RawClient::connect(proxy.listening[0]).await;
    // Identity only: grpcio would compress its stream otherwise.
    let answer = client
        .call(
            "/interop.v1.Interop/ServerStream",
            header_map(&[("grpc-accept-encoding", "identity")]),
            frames_body(vec![Frame::data(grpc_frame(
                false,
                &interop_request(b"s", 3),
            ))]),
        )
        .await;
    assert_eq!(status_of(&answer).as_deref(), Some("0"), "{answer:?}");
    assert_eq!(fanout_errors(&answer).as_deref(), Some("c=UNAVAILABLE"));
    // 3 responses from each of the two streaming members, whole messages: payload "s"
    // followed by the byte i.
    let mut payloads: Vec<Vec<u8>> = grpcproxy::frame::split(answer.data.clone())
        .unwrap()
        .into_iter()
        .map(|(_, m)| InteropResponse::decode(m).unwrap().payload.to_vec())
        .collect();
    payloads.sort();
    assert_eq!(
        payloads,
        [b"s\x00", b"s\x00", b"s\x01", b"s\x01", b"s\x02", b"s\x02"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_hanging_past_the_deadline_ends_the_call_and_every_member_is_reset() {
    let (a, a_cancelled) = raw_member(Script::Answer(b"a", Duration::ZERO)).await;
    let (b, b_cancelled) = raw_member(Script::Answer(b"b", Duration::ZERO)).await;
    let (hanging, hang_cancelled) = raw_member(Script::Hang).await;
    let (proxy, _file) = fanned_proxy([a.addr(), b.addr(), hanging.addr()], "mode = \"all\"");
    let started = Instant::now();
    let answer = raw_call(&proxy, "/pkg.Svc/Get", b"x", Some("400m")).await;
    let took = started.elapsed();
    assert_eq!(status_of(&answer).as_deref(), Some("4"), "{answer:?}");
    assert!(
        took >= Duration::from_millis(390) && took < Duration::from_secs(3),
        "took {took:?}"
    );
    wait_until("the hanging member's call is reset", || {
        hang_cancelled.load(Ordering::SeqCst) == 1
    })
    .await;
    // The members that answered were not cancelled.
    assert_eq!(a_cancelled.load(Ordering::SeqCst), 0);
    assert_eq!(b_cancelled.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_cancel_reaches_every_member() {
    let (a, a_cancelled) = raw_member(Script::Hang).await;
    let (b, b_cancelled) = raw_member(Script::Hang).await;
    let (c, c_cancelled) = raw_member(Script::Hang).await;
    let (proxy, _file) = fanned_proxy([a.addr(), b.addr(), c.addr()], "mode = \"all\"");
    let call = raw_call(&proxy, "/pkg.Svc/Get", b"x", None);
    assert!(tokio::time::timeout(Duration::from_millis(300), call)
        .await
        .is_err());
    wait_until("every member's call is cancelled", || {
        [&a_cancelled, &b_cancelled, &c_cancelled]
            .iter()
            .all(|c| c.load(Ordering::SeqCst) == 1)
    })
    .await;
}

/// A client stream of `messages` interop requests of `size` payload bytes each.
fn client_stream(messages: usize, size: usize) -> grpcproxy_testing::raw::RawBody {
    let frames = (0..messages)
        .map(|i| {
            let payload = vec![b'a' + i as u8; size];
            Frame::data(grpc_frame(false, &interop_request(&payload, 0)))
        })
        .collect();
    frames_body(frames)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_stream_reaches_every_member_and_a_slow_one_is_dropped() {
    let grpcio = start_backend(Runtime::Grpcio).await;
    let tonic = grpcproxy_interop::backend::serve().await;
    let (counting, _) = raw_member(Script::Count).await;
    let (proxy, _file) = fanned_proxy(
        [tonic.addr(), grpcio.addr(), counting.addr()],
        "mode = \"all\"",
    );
    let client = RawClient::connect(proxy.listening[0]).await;
    let body = client_stream(5, 1000);
    let answer = client
        .call("/interop.v1.Interop/ClientStream", header_map(&[]), body)
        .await;
    assert_eq!(status_of(&answer).as_deref(), Some("0"), "{answer:?}");
    // Member a's answer (tonic's: grpcio gzips its answer whatever the client accepts):
    // every payload, in order, and the count.
    let messages = grpcproxy::frame::split(answer.data.clone()).unwrap();
    let reply = InteropResponse::decode(messages[0].1.clone()).unwrap();
    let expected: Vec<u8> = (0..5u8).flat_map(|i| vec![b'a' + i; 1000]).collect();
    assert_eq!(reply.payload, expected);
    assert_eq!(reply.request_count, 5);

    // A member that never reads, dropped past its 512 KiB buffer (and its HTTP/2 window)
    // while the client streams 2 MiB; the members that read keep up.
    let (never, never_cancelled) = raw_member(Script::NeverReads).await;
    let (proxy, _file) = fanned_proxy(
        [tonic.addr(), grpcio.addr(), never.addr()],
        "mode = \"all\", buffer_bytes = 524288, slow = \"drop\"",
    );
    let client = RawClient::connect(proxy.listening[0]).await;
    let body = client_stream(32, 64 << 10);
    let started = Instant::now();
    let answer = client
        .call("/interop.v1.Interop/ClientStream", header_map(&[]), body)
        .await;
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(status_of(&answer).as_deref(), Some("8"), "{answer:?}");
    assert_eq!(
        fanout_errors(&answer).as_deref(),
        Some("c=RESOURCE_EXHAUSTED")
    );
    // Its stream is reset though it waits for window (the proxy never sees its body end).
    wait_until("the member that stopped reading is reset", || {
        never_cancelled.load(Ordering::SeqCst) == 1
    })
    .await;
}

async fn wait_until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within 5 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_names_the_members_of_each_call() {
    let (a, _) = raw_member(Script::Answer(b"\x0a\x02a1", Duration::ZERO)).await;
    let (b, _) = raw_member(Script::Answer(b"\x0a\x03b22", Duration::ZERO)).await;
    let (c, _) = raw_member(Script::Answer(b"\x0a\x04c333", Duration::ZERO)).await;
    let (proxy, _file) = fanned_proxy(
        [a.addr(), b.addr(), c.addr()],
        "mode = \"concat\", header = \"x-targets\"",
    );
    let client = RawClient::connect(proxy.listening[0]).await;
    let call = |targets: Option<String>| {
        let headers = match &targets {
            Some(t) => header_map(&[("x-targets", t.as_str())]),
            None => header_map(&[]),
        };
        client.call(
            "/pkg.Svc/List",
            headers,
            frames_body(vec![Frame::data(grpc_frame(false, b""))]),
        )
    };
    // Named (c first, b repeated): those members only, in the order named, once each.
    let named = format!("{}, {},{}", c.addr(), b.addr(), c.addr());
    let answer = call(Some(named)).await;
    assert_eq!(status_of(&answer).as_deref(), Some("0"), "{answer:?}");
    assert_eq!(answer.data, grpc_frame(false, b"\x0a\x04c333\x0a\x03b22"));
    // Without the header: every cluster.
    let answer = call(None).await;
    assert_eq!(
        answer.data,
        grpc_frame(false, b"\x0a\x02a1\x0a\x03b22\x0a\x04c333")
    );
    // A name that is no endpoint of the fan-out's clusters is refused; nothing is sent.
    let answer = call(Some("10.9.9.9:1".into())).await;
    assert_eq!(status_of(&answer).as_deref(), Some("3"), "{answer:?}");
    assert_eq!(
        answer.headers["grpc-message"],
        "x-targets:%20no%20endpoint%20%2210.9.9.9:1%22%20in%20the%20fan-out's%20clusters"
    );
}
