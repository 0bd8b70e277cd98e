//! gRPC-Web on a listener (`grpc_web = true`, `cors = { ... }`), byte for byte: binary and
//! text calls over HTTP/1.1 and HTTP/2 translated to gRPC and back (trailers as the last
//! frame), native gRPC on the same port, CORS preflights and refusals, and every bad input
//! answered without reaching the backend (a raw backend counts what it gets).

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine;
use bytes::Bytes;
use grpcproxy_testing::raw::{
    frames_body, grpc_frame, grpc_response, header_map, http1, read_request, RawBackend, RawClient,
    RawResponse,
};
use http::{HeaderMap, Method, Request};
use http_body::Frame;
use support::Proxy;

const ORIGIN: &str = "https://app.example";
const PATH: &str = "/shop.Greeter/SayHello";

/// A backend that answers every call with its request message reversed, header
/// `x-seen-content-type` (what it got), trailer `x-note: done` and OK; it keeps each
/// call's request headers.
async fn backend() -> (RawBackend, Arc<Mutex<Vec<HeaderMap>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let backend = RawBackend::start(move |request: Request<hyper::body::Incoming>| {
        let log = log.clone();
        async move {
            let (parts, body) = request.into_parts();
            let content_type = parts.headers["content-type"].clone();
            log.lock().unwrap().push(parts.headers);
            let (body, _) = read_request(body).await.unwrap_or_default();
            let reversed: Vec<u8> = body
                .get(5..)
                .unwrap_or_default()
                .iter()
                .rev()
                .copied()
                .collect();
            let mut response = grpc_response(frames_body(vec![
                Frame::data(grpc_frame(false, &reversed)),
                Frame::trailers(header_map(&[("grpc-status", "0"), ("x-note", "done")])),
            ]));
            response
                .headers_mut()
                .insert("x-seen-content-type", content_type);
            response
        }
    })
    .await;
    (backend, seen)
}

fn web_proxy(backend: SocketAddr, extra_limits: &str) -> (Proxy, tempfile::NamedTempFile) {
    let config = format!(
        r#"
[admin]
address = "127.0.0.1:0"

[limits]
{extra_limits}

[[listeners]]
address = "127.0.0.1:0"
grpc_web = true
cors = {{ allow_origins = ["{ORIGIN}"], allow_headers = ["authorization"], expose_headers = ["x-note"], max_age = "10m" }}

[[routes]]
cluster = "backend"

[clusters.backend]
endpoints = ["{backend}"]
"#
    );
    support::start_with_config(&config, 1)
}

fn request(content_type: &str, origin: Option<&str>, body: impl Into<Bytes>) -> Request<Bytes> {
    let mut builder = Request::post(PATH)
        .header("content-type", content_type)
        .header("x-grpc-web", "1");
    if let Some(origin) = origin {
        builder = builder.header("origin", origin);
    }
    builder.body(body.into()).unwrap()
}

/// The body a gRPC-Web answer to "olleh" carries: the message, then the trailers frame.
fn expected_web_body() -> Vec<u8> {
    let mut body = grpc_frame(false, b"hello").to_vec();
    let trailers = b"grpc-status:0\r\nx-note:done\r\n";
    body.push(0x80);
    body.extend_from_slice(&(trailers.len() as u32).to_be_bytes());
    body.extend_from_slice(trailers);
    body
}

fn base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn metric(proxy: &Proxy, labels: &str) -> i64 {
    support::baseline::metric(
        proxy.admin.unwrap(),
        &format!("grpcproxy_grpc_web_requests_total{{{labels}}}"),
    )
}

#[tokio::test]
async fn binary_and_text_over_http1_are_translated_byte_for_byte() {
    let (backend, seen) = backend().await;
    let (proxy, _config) = web_proxy(backend.addr(), "");
    let addr = proxy.listening[0];

    let binary = http1(
        addr,
        request(
            "application/grpc-web+proto",
            Some(ORIGIN),
            grpc_frame(false, b"olleh"),
        ),
    )
    .await;
    assert_eq!(binary.status, 200);
    // The backend's content-type (application/grpc), as gRPC-Web.
    assert_eq!(binary.headers["content-type"], "application/grpc-web");
    assert_eq!(binary.headers["access-control-allow-origin"], ORIGIN);
    assert_eq!(
        binary.headers["access-control-expose-headers"],
        "grpc-status, grpc-message, grpc-status-details-bin, x-note"
    );
    assert_eq!(
        binary.headers["x-seen-content-type"],
        "application/grpc+proto"
    );
    assert_eq!(&binary.data[..], &expected_web_body()[..]);
    assert!(binary.trailers.is_none(), "HTTP/1.1 carries no trailers");

    let text = http1(
        addr,
        request(
            "application/grpc-web-text",
            None,
            base64(&grpc_frame(false, b"olleh")),
        ),
    )
    .await;
    assert_eq!(text.status, 200);
    assert_eq!(text.headers["content-type"], "application/grpc-web-text");
    assert!(
        text.headers.get("access-control-allow-origin").is_none(),
        "no origin, no CORS"
    );
    assert_eq!(
        std::str::from_utf8(&text.data).unwrap(),
        base64(&expected_web_body()),
        "one base64 text, padded only at its end"
    );

    let headers = seen.lock().unwrap().clone();
    assert_eq!(headers.len(), 2);
    for headers in &headers {
        assert_eq!(headers["te"], "trailers");
        assert_eq!(headers["grpc-accept-encoding"], "identity");
        assert!(headers.get("content-length").is_none());
    }
    assert_eq!(headers[1]["content-type"], "application/grpc");
    assert_eq!(metric(&proxy, "kind=\"binary\",result=\"allowed\""), 1);
    assert_eq!(metric(&proxy, "kind=\"text\",result=\"allowed\""), 1);
}

#[tokio::test]
async fn grpc_web_over_http2_and_native_grpc_share_the_port() {
    let (backend, seen) = backend().await;
    let (proxy, _config) = web_proxy(backend.addr(), "");
    let client = RawClient::connect(proxy.listening[0]).await;

    let web: RawResponse = client
        .call(
            PATH,
            header_map(&[("content-type", "application/grpc-web"), ("origin", ORIGIN)]),
            frames_body(vec![Frame::data(grpc_frame(false, b"olleh"))]),
        )
        .await;
    assert_eq!(web.headers["content-type"], "application/grpc-web");
    assert_eq!(&web.data[..], &expected_web_body()[..]);
    assert!(web.trailers.is_none(), "the trailers went into the body");

    let native = client
        .call(
            PATH,
            HeaderMap::new(),
            frames_body(vec![Frame::data(grpc_frame(false, b"olleh"))]),
        )
        .await;
    assert_eq!(native.headers["content-type"], "application/grpc");
    assert_eq!(&native.data[..], &grpc_frame(false, b"hello")[..]);
    assert_eq!(native.grpc_status(), Some("0"));
    assert_eq!(native.trailers.as_ref().unwrap()["x-note"], "done");
    assert!(native.headers.get("access-control-allow-origin").is_none());
    assert_eq!(seen.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn preflights_are_answered_by_the_proxy() {
    let (backend, seen) = backend().await;
    let (proxy, _config) = web_proxy(backend.addr(), "");
    let addr = proxy.listening[0];
    let preflight = |origin: &str| {
        Request::builder()
            .method(Method::OPTIONS)
            .uri(PATH)
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "content-type,x-grpc-web,authorization",
            )
            .body(Bytes::new())
            .unwrap()
    };

    let allowed = http1(addr, preflight(ORIGIN)).await;
    assert_eq!(allowed.status, 204);
    assert_eq!(allowed.headers["access-control-allow-origin"], ORIGIN);
    assert_eq!(
        allowed.headers["access-control-allow-methods"],
        "POST, OPTIONS"
    );
    assert_eq!(
        allowed.headers["access-control-allow-headers"],
        "content-type, x-grpc-web, x-user-agent, grpc-timeout, grpc-accept-encoding, authorization"
    );
    assert_eq!(allowed.headers["access-control-max-age"], "600");
    assert_eq!(allowed.headers["vary"], "origin");

    let refused = http1(addr, preflight("https://evil.example")).await;
    assert_eq!(refused.status, 403);
    assert!(refused.headers.get("access-control-allow-origin").is_none());

    // The call itself from a refused origin: 403, and nothing reaches the backend.
    let call = http1(
        addr,
        request(
            "application/grpc-web",
            Some("https://evil.example"),
            grpc_frame(false, b"x"),
        ),
    )
    .await;
    assert_eq!(call.status, 403);
    assert!(
        seen.lock().unwrap().is_empty(),
        "a refused origin's call reached the backend"
    );
    assert_eq!(metric(&proxy, "kind=\"preflight\",result=\"allowed\""), 1);
    assert_eq!(
        metric(&proxy, "kind=\"preflight\",result=\"refused_origin\""),
        1
    );
    assert_eq!(
        metric(&proxy, "kind=\"binary\",result=\"refused_origin\""),
        1
    );
}

#[tokio::test]
async fn bad_input_gets_a_defined_answer_and_never_reaches_the_backend() {
    let calls = Arc::new(AtomicUsize::new(0));
    let count = calls.clone();
    let backend = RawBackend::start(move |_request: Request<hyper::body::Incoming>| {
        count.fetch_add(1, Ordering::SeqCst);
        async {
            grpc_response(frames_body(vec![Frame::trailers(header_map(&[(
                "grpc-status",
                "0",
            )]))]))
        }
    })
    .await;
    let (proxy, _config) = web_proxy(backend.addr(), "max_message_size = 1024");
    let addr = proxy.listening[0];

    let invalid = http1(
        addr,
        request(
            "application/grpc-web-text+proto",
            Some(ORIGIN),
            "not base64!",
        ),
    )
    .await;
    assert_eq!(invalid.status, 400);
    assert_eq!(invalid.headers["grpc-status"], "13");
    assert!(
        invalid.headers["grpc-message"]
            .to_str()
            .unwrap()
            .starts_with("invalid%20base64%20in%20a%20grpc-web-text%20request%20body:%20"),
        "{:?}",
        invalid.headers["grpc-message"]
    );
    assert_eq!(
        invalid.headers["content-type"],
        "application/grpc-web-text+proto"
    );
    assert_eq!(
        invalid.headers["access-control-allow-origin"], ORIGIN,
        "the page may read why"
    );

    // 1024-byte messages at most: a text body of one 2000-byte message is refused unread.
    let large = base64(&grpc_frame(false, &[7u8; 2000]));
    let too_large = http1(addr, request("application/grpc-web-text", None, large)).await;
    assert_eq!(too_large.status, 200);
    assert_eq!(too_large.headers["grpc-status"], "8");
    // Binary bodies are forwarded frame by frame: the proxy's message limit answers, at
    // once (trailers-only, the status in the headers, which gRPC-Web allows).
    let binary_large = http1(
        addr,
        request(
            "application/grpc-web",
            None,
            grpc_frame(false, &[7u8; 2000]),
        ),
    )
    .await;
    assert_eq!(binary_large.status, 200);
    assert_eq!(binary_large.headers["grpc-status"], "8");
    assert_eq!(binary_large.headers["content-type"], "application/grpc-web");
    assert!(binary_large.data.is_empty(), "{:?}", binary_large.data);

    // HTTP/1.1 that is not gRPC-Web: a clear 4xx.
    let get = http1(addr, Request::get("/").body(Bytes::new()).unwrap()).await;
    assert_eq!(get.status, 405);
    assert_eq!(get.headers["allow"], "POST, OPTIONS");
    let json = http1(addr, request("application/json", None, "{}")).await;
    assert_eq!(json.status, 415);
    let native = http1(
        addr,
        request("application/grpc", None, grpc_frame(false, b"x")),
    )
    .await;
    assert_eq!(native.status, 415);
    assert!(
        String::from_utf8_lossy(&native.data).contains("gRPC needs HTTP/2"),
        "{:?}",
        native.data
    );

    assert_eq!(
        calls.load(Ordering::SeqCst),
        0,
        "bad input reached the backend"
    );
    assert_eq!(metric(&proxy, "kind=\"text\",result=\"invalid_base64\""), 1);
    assert_eq!(metric(&proxy, "kind=\"text\",result=\"too_large\""), 1);
    assert_eq!(metric(&proxy, "kind=\"other\",result=\"rejected\""), 3);
}

#[tokio::test]
async fn a_listener_without_grpc_web_still_refuses_http1() {
    let (backend, _seen) = backend().await;
    let (proxy, _config) =
        support::start_with_config(&support::one_backend_config(backend.addr(), ""), 1);
    let answer = http1(
        proxy.listening[0],
        request(
            "application/grpc-web",
            Some(ORIGIN),
            grpc_frame(false, b"x"),
        ),
    )
    .await;
    assert_eq!(answer.status, 505);
}

#[test]
fn check_config_names_what_is_wrong_with_cors() {
    let cases = [
        (
            "cors = { allow_origins = [\"https://a.example\"] }",
            "listeners[0].cors: CORS applies to gRPC-Web; set grpc_web = true on this listener",
        ),
        (
            "grpc_web = true\ncors = { allow_origins = [\"https://a.example/\"] }",
            "listeners[0].cors: invalid origin \"https://a.example/\": expected scheme://host[:port], e.g. https://app.example",
        ),
        (
            "grpc_web = true\ncors = { allow_origins = [] }",
            "listeners[0].cors.allow_origins: at least one origin (or \"*\") is needed",
        ),
        (
            "grpc_web = true\ncors = { allow_origins = [\"*\"], allow_headers = [\"bad header\"] }",
            "listeners[0].cors: invalid header name \"bad header\"",
        ),
    ];
    for (listener, message) in cases {
        let config = format!(
            "[[listeners]]\naddress = \"127.0.0.1:0\"\n{listener}\n[[routes]]\ncluster = \"c\"\n\
             [clusters.c]\nendpoints = [\"127.0.0.1:1\"]\n"
        );
        let file = support::write_config(&config);
        let (code, _, stderr) = support::check_config(file.path());
        assert_eq!(code, Some(2), "{listener}: {stderr}");
        assert!(stderr.contains(message), "{listener}: {stderr}");
    }
}

#[tokio::test]
async fn an_http1_client_that_stalls_in_its_request_head_is_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (backend, _seen) = backend().await;
    let (proxy, _config) = web_proxy(backend.addr(), "handshake_timeout = \"300ms\"");
    let mut stream = tokio::net::TcpStream::connect(proxy.listening[0])
        .await
        .unwrap();
    stream
        .write_all(b"POST /shop.Greeter/SayHello HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        stream.read_to_end(&mut rest),
    )
    .await;
    assert!(read.is_ok(), "the connection stayed open");
    let took = started.elapsed();
    assert!(
        took < std::time::Duration::from_secs(2),
        "closed after {took:?}"
    );
    eprintln!(
        "a stalled HTTP/1.1 head was closed after {took:?}: {:?}",
        String::from_utf8_lossy(&rest)
    );
}
