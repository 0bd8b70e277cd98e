//! Requests no client library would send, written frame by frame against the built binary:
//! header values and names that could smuggle metadata, oversized header lists, and a
//! frame cut off by a dying client. Each gets a defined answer, none reaches the backend
//! as a well-formed call, and the proxy's gauges and descriptors return to baseline.

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use grpcproxy_testing::raw::{frames_body, read_request, RawBackend, RawClient};
use grpcproxy_testing::wire::{
    connect_and_send, grpc_request_headers, h2_frame, literal_headers, read_until, RawFrame,
};
use http_body::Frame;
use support::baseline::{assert_back_to, baseline};

/// What the backend saw of one call: its path, a header the tests look for, and how its
/// request body ended (bytes read, or the error).
type Seen = (String, Option<String>, Result<usize, String>);

/// A backend that records every call and answers it `OK` once the request ended.
async fn recording_backend() -> (RawBackend, Arc<Mutex<Vec<Seen>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let backend = RawBackend::start(move |request: http::Request<hyper::body::Incoming>| {
        let log = log.clone();
        async move {
            let path = request.uri().path().to_owned();
            let probe = request
                .headers()
                .get("x-probe")
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
            let body = read_request(request.into_body())
                .await
                .map(|(bytes, _)| bytes.len())
                .map_err(|e| format!("{e:?}"));
            log.lock().unwrap().push((path, probe, body));
            let ok = grpcproxy_testing::raw::header_map(&[("grpc-status", "0")]);
            grpcproxy_testing::raw::grpc_response(frames_body(vec![Frame::trailers(ok)]))
        }
    })
    .await;
    (backend, seen)
}

/// The proxy's answer to stream 1: a RST_STREAM on it, a GOAWAY, or response HEADERS.
async fn answer_to_stream_1(tcp: &mut tokio::net::TcpStream) -> RawFrame {
    read_until(tcp, Duration::from_secs(3), |f| {
        (f.stream == 1 && matches!(f.kind, 0x1 | 0x3)) || f.kind == 0x7
    })
    .await
    .expect("the proxy must answer the stream or close the connection within 3 s")
}

const PATH: &str = "/grpcproxy.testing.TestService/PingEmpty";

/// One call through the proxy, so the backend connection exists before the baseline is
/// taken; then forgets what the backend saw.
async fn warm_up(addr: SocketAddr, seen: &Mutex<Vec<Seen>>) {
    let client = RawClient::connect(addr).await;
    let answer = client
        .call(PATH, http::HeaderMap::new(), frames_body(vec![]))
        .await;
    assert_eq!(answer.grpc_status(), Some("0"), "{answer:?}");
    seen.lock().unwrap().clear();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggling_header_names_and_values_are_refused_before_the_backend() {
    let (backend, seen) = recording_backend().await;
    let (proxy, _file) =
        support::start_with_config(&support::one_backend_config(backend.addr(), ""), 1);
    let addr = proxy.listening[0];
    warm_up(addr, &seen).await;
    let before = baseline(&proxy);

    let grpc = |extra: &[(&str, &str)]| grpc_request_headers(PATH, extra);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "CR LF in a value",
            grpc(&[("x-probe", "a\r\nx-injected: 1")]),
        ),
        ("LF in a value", grpc(&[("x-probe", "a\nx-injected: 1")])),
        ("NUL in a value", grpc(&[("x-probe", "a\0b")])),
        ("uppercase name", grpc(&[("X-Probe", "1")])),
        ("space in a name", grpc(&[("x probe", "1")])),
        ("colon in a name", grpc(&[("x-probe:x-injected", "1")])),
        (
            "connection-specific header",
            grpc(&[("connection", "close")]),
        ),
        (
            "transfer-encoding",
            grpc(&[("transfer-encoding", "chunked")]),
        ),
        ("te other than trailers", grpc(&[("te", "gzip")])),
        ("unknown pseudo-header", grpc(&[(":probe", "1")])),
        (
            "duplicate :path",
            grpc(&[(":path", "/other.Service/Method")]),
        ),
        (
            "pseudo-header after a regular one",
            literal_headers(&[
                (":method", "POST"),
                (":scheme", "http"),
                ("content-type", "application/grpc"),
                (":path", PATH),
                (":authority", "localhost"),
            ]),
        ),
    ];
    for (case, block) in &cases {
        // HEADERS with END_STREAM and END_HEADERS: a complete request but for the flaw.
        let mut tcp = connect_and_send(addr, &[h2_frame(0x1, 0x5, 1, block)]).await;
        let answer = answer_to_stream_1(&mut tcp).await;
        assert!(
            matches!(answer.kind, 0x3 | 0x7) && answer.error_code() == Some(0x1),
            "{case}: expected RST_STREAM or GOAWAY with PROTOCOL_ERROR, got {answer:?}"
        );
        eprintln!(
            "{case}: {} PROTOCOL_ERROR",
            if answer.kind == 0x3 {
                "RST_STREAM"
            } else {
                "GOAWAY"
            }
        );
    }
    assert!(
        seen.lock().unwrap().is_empty(),
        "malformed requests reached the backend: {:?}",
        seen.lock().unwrap()
    );

    // A well-formed request with odd but valid metadata passes untouched.
    let valid = grpc(&[("x-probe", "tab\tand UTF-8 bytes \u{e9} ok")]);
    let mut tcp = connect_and_send(addr, &[h2_frame(0x1, 0x5, 1, &valid)]).await;
    let answer = answer_to_stream_1(&mut tcp).await;
    assert_eq!(answer.kind, 0x1, "response HEADERS: {answer:?}");
    let calls = seen.lock().unwrap().clone();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].0, PATH);
    assert_eq!(
        calls[0].1.as_deref(),
        Some("tab\tand UTF-8 bytes \u{e9} ok")
    );
    drop(tcp);
    assert_back_to(&proxy, before).await;
}

/// A request whose header block holds one `x-probe` value of `size` bytes, split into
/// HEADERS and CONTINUATION frames of at most 16 KiB.
fn big_header_request(size: usize) -> Vec<Vec<u8>> {
    let value = "v".repeat(size);
    let block = grpc_request_headers(PATH, &[("x-probe", &value)]);
    let mut frames = Vec::new();
    let chunks: Vec<&[u8]> = block.chunks(16 * 1024).collect();
    for (i, chunk) in chunks.iter().enumerate() {
        let end_headers = if i + 1 == chunks.len() { 0x4 } else { 0 };
        frames.push(if i == 0 {
            h2_frame(0x1, 0x1 | end_headers, 1, chunk)
        } else {
            h2_frame(0x9, end_headers, 1, chunk)
        });
    }
    frames
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_header_lists_are_refused_per_the_configured_limit() {
    let (backend, seen) = recording_backend().await;
    let (proxy, _file) =
        support::start_with_config(&support::one_backend_config(backend.addr(), ""), 1);
    let addr = proxy.listening[0];
    warm_up(addr, &seen).await;
    let before = baseline(&proxy);

    // Over the default limit of 16 KiB: refused, never forwarded.
    let mut tcp = connect_and_send(addr, &big_header_request(20 * 1024)).await;
    let answer = answer_to_stream_1(&mut tcp).await;
    // h2 answers `:status: 431` and ends the stream: 0x48 is a literal field with the
    // static name `:status`, 0x83 a 3-byte Huffman string, 0x69 0x90 0xff is "431".
    assert_eq!(
        (answer.kind, answer.flags, &answer.payload[..]),
        (0x1, 0x5, &[0x48, 0x83, 0x69, 0x90, 0xff][..]),
        "{answer:?}"
    );
    assert!(
        seen.lock().unwrap().is_empty(),
        "{:?}",
        seen.lock().unwrap()
    );
    drop(tcp);

    // Under it: forwarded with the value intact.
    assert_forwarded_big_header(addr, &seen, 15 * 1024).await;
    assert_back_to(&proxy, before).await;

    // A proxy configured for 64 KiB takes the 20 KiB list.
    let (proxy, _file) = support::start_with_config(
        &support::one_backend_config(backend.addr(), "\n[limits]\nmax_header_list_size = 65536\n"),
        1,
    );
    warm_up(proxy.listening[0], &seen).await;
    assert_forwarded_big_header(proxy.listening[0], &seen, 20 * 1024).await;
}

/// Sends a request with a `size`-byte header value and asserts it was answered `200` and
/// reached the backend with the value intact (the only call it saw since the warm-up).
async fn assert_forwarded_big_header(addr: SocketAddr, seen: &Mutex<Vec<Seen>>, size: usize) {
    let mut tcp = connect_and_send(addr, &big_header_request(size)).await;
    let answer = answer_to_stream_1(&mut tcp).await;
    assert_status_200(&answer);
    assert_eq!(
        seen.lock().unwrap()[0].1.as_ref().map(String::len),
        Some(size)
    );
}

/// Response HEADERS opening with `:status: 200` (HPACK static entry 8, 0x88).
fn assert_status_200(answer: &RawFrame) {
    assert_eq!(
        (answer.kind, answer.payload[0]),
        (0x1, 0x88),
        "`:status: 200`: {answer:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_cut_off_by_a_dying_client_resets_the_backend_stream() {
    let (backend, seen) = recording_backend().await;
    let (proxy, _file) =
        support::start_with_config(&support::one_backend_config(backend.addr(), ""), 1);
    let addr = proxy.listening[0];
    warm_up(addr, &seen).await;
    let before = baseline(&proxy);

    // HEADERS, one whole DATA frame, then a DATA frame that announces 100 bytes and
    // carries 40 before the connection dies.
    let headers = grpc_request_headers("/pkg.Svc/Upload", &[]);
    let whole = h2_frame(0x0, 0, 1, &[0, 0, 0, 0, 3, 1, 2, 3]);
    let mut cut = h2_frame(0x0, 0, 1, &[7u8; 100]);
    cut.truncate(9 + 40);
    let tcp = connect_and_send(addr, &[h2_frame(0x1, 0x4, 1, &headers), whole, cut]).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(tcp);

    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    let upload = loop {
        let found = seen
            .lock()
            .unwrap()
            .iter()
            .find(|s| s.0 == "/pkg.Svc/Upload")
            .cloned();
        if let Some(found) = found {
            break found;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the backend saw nothing within 2 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        upload.2.is_err(),
        "the backend must see the upload fail, not end cleanly: {upload:?}"
    );
    eprintln!(
        "cut-off frame: the backend's request stream ended with {:?}",
        upload.2
    );
    assert_back_to(&proxy, before).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_data_frames_from_clients_never_reach_the_shared_backend_connection() {
    // h2 closes a connection after 100 empty non-final DATA frames (ENHANCE_YOUR_CALM).
    // Every client's calls share the proxy's backend connection, so forwarded empty frames
    // from a few clients would add up there and cut everyone's calls. (h2 drops them on
    // receipt, and the proxy skips empty frames from any body too: a unit test in
    // grpcproxy's proxy/messages.rs covers that part.)
    let (backend, seen) = recording_backend().await;
    let (proxy, _file) =
        support::start_with_config(&support::one_backend_config(backend.addr(), ""), 1);
    let (addr, admin) = (proxy.listening[0], proxy.admin.unwrap());
    warm_up(addr, &seen).await;
    let before = baseline(&proxy);

    // A well-behaved call in flight throughout.
    let client = RawClient::connect(addr).await;
    let (tx, body) = grpcproxy_testing::raw::channel_body();
    let call = tokio::spawn(async move {
        client
            .call("/pkg.Svc/Long", http::HeaderMap::new(), body)
            .await
    });

    // Three connections, each under its own limit: 90 empty DATA frames, then the end.
    let headers = grpc_request_headers("/pkg.Svc/Empty", &[]);
    for _ in 0..3 {
        let mut frames = vec![h2_frame(0x1, 0x4, 1, &headers)];
        frames.extend((0..90).map(|_| h2_frame(0x0, 0, 1, &[])));
        frames.push(h2_frame(0x0, 0x1, 1, &[]));
        let mut tcp = connect_and_send(addr, &frames).await;
        assert_status_200(&answer_to_stream_1(&mut tcp).await);
    }

    tx.send(Ok(Frame::data(grpcproxy_testing::raw::grpc_frame(
        false,
        b"still here",
    ))))
    .await
    .unwrap();
    drop(tx);
    let answer = call.await.unwrap();
    assert_eq!(
        answer.grpc_status(),
        Some("0"),
        "the long call survived: {answer:?}"
    );
    let calls = seen.lock().unwrap().clone();
    assert_eq!(
        calls
            .iter()
            .filter(|c| c.0 == "/pkg.Svc/Empty" && c.2 == Ok(0))
            .count(),
        3,
        "{calls:?}"
    );
    assert!(
        calls
            .iter()
            .any(|c| c.0 == "/pkg.Svc/Long" && c.2 == Ok(15)),
        "{calls:?}"
    );
    // Every backend connection ever made is still open: none was cut (each worker thread
    // has connections of its own, so there may be more than one).
    let endpoint = format!("{{cluster=\"backend\",endpoint=\"{}\"}}", backend.addr());
    let metric = |name: &str| support::baseline::metric(admin, &format!("{name}{endpoint}"));
    assert_eq!(
        metric("grpcproxy_upstream_connects_total"),
        metric("grpcproxy_upstream_connections"),
        "a backend connection was cut"
    );
    assert_back_to(&proxy, before).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_racing_the_proxys_own_answer_is_quiet() {
    let (backend, seen) = recording_backend().await;
    let url = backend.url();
    let proxy = support::start(
        &[
            "--listen",
            "127.0.0.1:0",
            "--to",
            &url,
            "--log-level",
            "debug",
        ],
        1,
    );
    // Each stream: a call the proxy answers itself at once (an unreadable grpc-timeout),
    // reset by the client in the same write, as when both deadlines expire together.
    let mut frames = Vec::new();
    for i in 0..10u32 {
        let stream = 1 + 2 * i;
        let head = grpc_request_headers(PATH, &[("grpc-timeout", "soon")]);
        frames.push(h2_frame(0x1, 0x4, stream, &head));
        frames.push(h2_frame(0x3, 0, stream, &8u32.to_be_bytes())); // CANCEL
    }
    frames.push(h2_frame(0x6, 0, 0, b"racing!!"));
    let mut tcp = connect_and_send(proxy.listening[0], &frames).await;
    // When the proxy's answer wins the race (the client's RST_STREAM not read yet), h2
    // closes the answered stream with RST_STREAM NO_ERROR, as HTTP/2 has a server do after
    // a complete response: that is not a reset of a stream the client had reset. Any other
    // RST_STREAM is.
    let answered = std::cell::RefCell::new(std::collections::HashSet::new());
    let reset_by_proxy = read_until(&mut tcp, Duration::from_secs(3), |f| {
        if f.kind == 0x1 && f.flags & 0x1 != 0 {
            answered.borrow_mut().insert(f.stream);
        }
        let closes_an_answer = f.payload == [0, 0, 0, 0] && answered.borrow().contains(&f.stream);
        (f.kind == 0x3 && f.stream != 0 && !closes_an_answer)
            || (f.kind == 0x6 && f.flags & 0x1 != 0)
    })
    .await
    .expect("the proxy acknowledges the PING that follows the streams");
    assert_eq!(
        reset_by_proxy.kind, 0x6,
        "the proxy reset a stream the client had reset: {reset_by_proxy:?}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let logged: Vec<String> = proxy.logs.try_iter().collect();
    let noisy: Vec<&String> = logged
        .iter()
        .filter(|l| l.contains("could not send the response head"))
        .collect();
    assert!(
        noisy.is_empty(),
        "{} lines like {:?}",
        noisy.len(),
        noisy.first()
    );
    assert!(
        seen.lock().unwrap().is_empty(),
        "no call reaches the backend"
    );
}
