//! Distributed tracing (`[tracing]`) against a real OTLP receiver: a small OTLP/gRPC and
//! OTLP/HTTP receiver built from the official `opentelemetry-proto` definitions
//! (`interop/python/otlp_receiver.py`, grpcio) records every span it gets. A raw backend
//! records the `traceparent` it receives, so the test sees the whole chain: client →
//! proxy span → backend.

mod support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use grpcproxy_testing::raw::{
    frames_body, grpc_frame, grpc_response, header_map, read_request, RawBackend, RawClient,
};
use http_body::Frame;
use serde_json::Value;

/// The receiver, its port and the spans it printed; killed when dropped.
struct Receiver {
    child: Child,
    _stdin: ChildStdin,
    port: u16,
    spans: mpsc::Receiver<Value>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Receiver {
    fn start(args: &[&str]) -> Self {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../interop/python");
        let python = dir.join(".venv/bin/python");
        assert!(
            python.exists(),
            "the Python peers are missing: run `bash interop/install.sh` (scripts/test.sh does)"
        );
        let mut child = Command::new(python)
            .arg(dir.join("otlp_receiver.py"))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = lines.next().expect("the receiver starts").unwrap();
        let port = first
            .strip_prefix("LISTENING ")
            .unwrap_or_else(|| panic!("not a port: {first}"))
            .parse()
            .unwrap();
        let (tx, spans) = mpsc::channel();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                if tx.send(serde_json::from_str(&line).unwrap()).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            _stdin: stdin,
            port,
            spans,
        }
    }

    fn next_span(&self) -> Value {
        self.spans
            .recv_timeout(Duration::from_secs(10))
            .expect("a span within 10 s")
    }
}

/// A backend that reads the whole request, then answers OK (or with the status its
/// `x-fail` header names) after `x-delay-ms`, with `x-answers` messages (default 1; 0:
/// trailers-only), and keeps the `traceparent` of each call.
async fn backend() -> (RawBackend, Arc<Mutex<Vec<Option<String>>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let backend = RawBackend::start(move |request: http::Request<hyper::body::Incoming>| {
        let header = |name: &str| {
            request
                .headers()
                .get(name)
                .map(|v| v.to_str().unwrap().to_owned())
        };
        log.lock().unwrap().push(header("traceparent"));
        let status = header("x-fail").unwrap_or_else(|| "0".into());
        let delay: u64 = header("x-delay-ms").map_or(0, |v| v.parse().unwrap());
        let answers: usize = header("x-answers").map_or(1, |v| v.parse().unwrap());
        async move {
            let _ = read_request(request.into_body()).await;
            tokio::time::sleep(Duration::from_millis(delay)).await;
            let trailers = header_map(&[("grpc-status", &status), ("grpc-message", "as asked")]);
            if answers == 0 {
                // Trailers-only: the status in the one HEADERS frame.
                let mut response = grpc_response(frames_body(Vec::new()));
                response.headers_mut().extend(trailers);
                return response;
            }
            let mut frames: Vec<_> = (0..answers)
                .map(|_| Frame::data(grpc_frame(false, b"ok")))
                .collect();
            frames.push(Frame::trailers(trailers));
            grpc_response(frames_body(frames))
        }
    })
    .await;
    (backend, seen)
}

fn traced_proxy(backend: SocketAddr, tracing: &str) -> (support::Proxy, tempfile::NamedTempFile) {
    traced_proxy_with(backend, tracing, "")
}

/// A traced proxy with `extra` tables (an access log, a tap).
fn traced_proxy_with(
    backend: SocketAddr,
    tracing: &str,
    extra: &str,
) -> (support::Proxy, tempfile::NamedTempFile) {
    let config = format!(
        "{}\n{extra}\n[tracing]\n{tracing}\n",
        support::one_route_config("backend", &[backend], "", "")
    );
    support::start_with_config(&config, 1)
}

/// The JSON lines of `path` once it has `n` of them (within 10 s).
fn lines(path: &std::path::Path, n: usize) -> Vec<Value> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        if lines.len() >= n {
            return lines;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} lines in {}",
            lines.len(),
            path.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

async fn call(proxy: SocketAddr, headers: &[(&str, &str)]) -> Option<String> {
    let client = RawClient::connect(proxy).await;
    let response = client
        .call(
            "/shop.Greeter/SayHello",
            header_map(headers),
            frames_body(vec![Frame::data(grpc_frame(false, b"hi"))]),
        )
        .await;
    response.grpc_status().map(str::to_owned)
}

/// The `traceparent` of the backend's latest call.
fn last_traceparent(seen: &Mutex<Vec<Option<String>>>) -> String {
    let last = seen.lock().unwrap().last().cloned().flatten();
    last.expect("the backend's latest call carried a traceparent")
}

const TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const PARENT: &str = "b7ad6b7169203331";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_continues_the_callers_trace_and_the_backend_continues_the_proxys() {
    let receiver = Receiver::start(&[]);
    let (backend, seen) = backend().await;
    let dir = tempfile::tempdir().unwrap();
    let (access_log, tap) = (dir.path().join("access.log"), dir.path().join("tap.json"));
    let (proxy, _file) = traced_proxy_with(
        backend.addr(),
        &format!(
            "otlp_endpoint = \"http://127.0.0.1:{}\"\nservice_name = \"edge\"\nsample_rate = 1.0",
            receiver.port
        ),
        &format!(
            "[access_log]\npath = \"{}\"\n[tap]\nfile = \"{}\"\nencoding = \"json\"\n",
            access_log.display(),
            tap.display()
        ),
    );
    let addr = proxy.listening[0];

    // A caller's sampled trace: the proxy's span is its child, the backend's parent.
    let traceparent = format!("00-{TRACE}-{PARENT}-01");
    assert_eq!(
        call(
            addr,
            &[("traceparent", &traceparent), ("tracestate", "vendor=x")]
        )
        .await
        .as_deref(),
        Some("0")
    );
    let span = receiver.next_span();
    assert_eq!(span["trace_id"], TRACE, "{span}");
    assert_eq!(span["parent_span_id"], PARENT, "{span}");
    let proxy_span = span["span_id"].as_str().unwrap().to_owned();
    assert_eq!(proxy_span.len(), 16);
    assert_ne!(proxy_span, PARENT);
    assert_eq!(
        seen.lock().unwrap()[0].as_deref(),
        Some(format!("00-{TRACE}-{proxy_span}-01").as_str()),
        "the backend's parent is the proxy's span"
    );
    assert_eq!(span["name"], "/shop.Greeter/SayHello");
    assert_eq!(span["kind"], 2, "SPAN_KIND_SERVER");
    assert_eq!(span["service_name"], "edge");
    assert_eq!(span["status_code"], 0, "unset: the call was OK");
    let attributes = &span["attributes"];
    for (key, value) in [
        ("rpc.system", "grpc"),
        ("rpc.service", "shop.Greeter"),
        ("rpc.method", "SayHello"),
        ("grpcproxy.route", "r"),
        ("grpcproxy.cluster", "backend"),
        ("network.peer.address", "127.0.0.1"),
    ] {
        assert_eq!(attributes[key], value, "{key}: {span}");
    }
    assert_eq!(attributes["grpcproxy.endpoint"], backend.addr().to_string());
    assert_eq!(attributes["rpc.grpc.status_code"], 0);
    assert_eq!(attributes["grpcproxy.request_bytes"], 7);
    assert_eq!(attributes["grpcproxy.response_bytes"], 7);
    assert_eq!(attributes["grpcproxy.request_messages"], 1);
    assert_eq!(attributes["grpcproxy.response_messages"], 1);
    assert_eq!(span["events"], Value::Array(vec![]), "sent once: {span}");
    // The access log and the tap name the trace and the proxy's span.
    let logged = &lines(&access_log, 1)[0];
    assert_eq!(logged["trace_id"], TRACE, "{logged}");
    assert_eq!(logged["span_id"], proxy_span.as_str(), "{logged}");
    let started = lines(&tap, 1)
        .into_iter()
        .find(|event| event.get("started").is_some())
        .expect("a CallStarted event");
    assert_eq!(started["started"]["traceId"], TRACE, "{started}");
    assert_eq!(
        started["started"]["spanId"],
        proxy_span.as_str(),
        "{started}"
    );

    // No caller trace, sample_rate 1: a root span, and the backend continues it.
    assert_eq!(call(addr, &[]).await.as_deref(), Some("0"));
    let root = receiver.next_span();
    assert_eq!(root["parent_span_id"], "", "{root}");
    let forwarded = seen.lock().unwrap()[1].clone().expect("a traceparent");
    assert_eq!(
        forwarded,
        format!(
            "00-{}-{}-01",
            root["trace_id"].as_str().unwrap(),
            root["span_id"].as_str().unwrap()
        )
    );

    // Malformed traceparents are ignored (W3C): a new root, never an error.
    for bad in [
        format!("ff-{TRACE}-{PARENT}-01"),
        format!("00-{}-{PARENT}-01", "0".repeat(32)),
        format!("00-{TRACE}-{}-01", "0".repeat(16)),
        "00-not-hex-at-all".to_owned(),
    ] {
        assert_eq!(
            call(addr, &[("traceparent", &bad)]).await.as_deref(),
            Some("0"),
            "{bad}"
        );
        let span = receiver.next_span();
        assert_eq!(span["parent_span_id"], "", "{bad}: {span}");
        assert_ne!(span["trace_id"], TRACE, "{bad}");
    }

    // An OpenCensus caller (grpc-trace-bin, no traceparent) is continued the same way.
    let census = {
        use base64::Engine;
        let hex = |s: &str| -> Vec<u8> {
            (0..s.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
                .collect()
        };
        let mut bytes = vec![0, 0];
        bytes.extend(hex(TRACE));
        bytes.push(1);
        bytes.extend(hex(PARENT));
        bytes.extend([2, 1]);
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(bytes)
    };
    assert_eq!(
        call(addr, &[("grpc-trace-bin", &census)]).await.as_deref(),
        Some("0")
    );
    let span = receiver.next_span();
    assert_eq!(
        (&span["trace_id"], &span["parent_span_id"]),
        (&Value::from(TRACE), &Value::from(PARENT)),
        "{span}"
    );
    let forwarded = last_traceparent(&seen);
    assert_eq!(
        forwarded,
        format!("00-{TRACE}-{}-01", span["span_id"].as_str().unwrap())
    );

    // A failed call: the span says so.
    assert_eq!(call(addr, &[("x-fail", "5")]).await.as_deref(), Some("5"));
    let failed = receiver.next_span();
    assert_eq!(failed["status_code"], 2, "STATUS_CODE_ERROR: {failed}");
    assert_eq!(failed["attributes"]["rpc.grpc.status_code"], 5);
    assert_eq!(failed["status_message"], "NotFound: as asked");

    let exported = support::wait_for_metric(
        proxy.admin.unwrap(),
        "grpcproxy_tracing_spans_total{result=\"exported\"} 8",
    );
    assert!(
        exported.contains("grpcproxy_tracing_spans_total{result=\"dropped\"} 0"),
        "{exported}"
    );
}

/// The events of `span`, as (name, attributes), checked to fall within the span.
fn events(span: &Value) -> Vec<(String, Value)> {
    let (start, end) = (
        span["start_time_unix_nano"].as_u64().unwrap(),
        span["end_time_unix_nano"].as_u64().unwrap(),
    );
    let events = span["events"].as_array().unwrap();
    events
        .iter()
        .map(|event| {
            let at = event["time_unix_nano"].as_u64().unwrap();
            assert!(start <= at && at <= end, "{event} outside the span {span}");
            (
                event["name"].as_str().unwrap().to_owned(),
                event["attributes"].clone(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_hedges_mirrors_and_messages_are_on_the_span() {
    let receiver = Receiver::start(&[]);
    let (backend, seen) = backend().await;
    let addr = backend.addr();
    let config = format!(
        r#"{}
[[routes]]
name = "retried"
match.method = "Retried"
cluster = "backend"
retry = {{ on = ["unavailable"], attempts = 3, backoff = "1ms", max_backoff = "1ms" }}

[[routes]]
name = "hedged"
match.method = "Hedged"
cluster = "backend"
hedge = {{ delay = "50ms", max = 2 }}

[[routes]]
name = "mirrored"
match.method = "Mirrored"
cluster = "backend"
mirror = {{ cluster = "shadow", percent = 100 }}

[[routes]]
name = "r"
cluster = "backend"

[clusters.backend]
endpoints = ["{addr}"]

[clusters.shadow]
endpoints = ["{addr}"]

[tracing]
otlp_endpoint = "http://127.0.0.1:{}"
sample_rate = 1.0
"#,
        support::admin_and_listener(""),
        receiver.port
    );
    let (proxy, _file) = support::start_with_config(&config, 1);
    let client = RawClient::connect(proxy.listening[0]).await;
    let endpoint = Value::from(addr.to_string());
    let call = |method: &'static str, headers: &'static [(&'static str, &'static str)]| {
        let client = &client;
        async move {
            let path = format!("/shop.Greeter/{method}");
            let body = frames_body(vec![Frame::data(grpc_frame(false, b"hi"))]);
            let response = client.call(&path, header_map(headers), body).await;
            response.grpc_status().map(str::to_owned)
        }
    };

    // Every try fails with UNAVAILABLE (trailers-only, so retryable): two retries, each an
    // event after the try it replaces, and the span ends with the last try's status.
    let failing = &[("x-fail", "14"), ("x-answers", "0")];
    assert_eq!(call("Retried", failing).await.as_deref(), Some("14"));
    let span = receiver.next_span();
    eprintln!("a retried call's span: {span}");
    assert_eq!(span["attributes"]["grpcproxy.route"], "retried", "{span}");
    assert_eq!(span["attributes"]["rpc.grpc.status_code"], 14);
    let retries = events(&span);
    assert_eq!(retries.len(), 2, "{span}");
    for ((name, attributes), attempt) in retries.iter().zip([2, 3]) {
        assert_eq!(name, "retry");
        assert_eq!(attributes["grpcproxy.attempt"], attempt, "{span}");
        assert_eq!(attributes["grpcproxy.previous_status_code"], 14, "{span}");
        assert_eq!(attributes["grpcproxy.endpoint"], endpoint, "{span}");
    }
    // Each try went to the backend with the proxy's span as its parent.
    let proxy_span = span["span_id"].as_str().unwrap();
    let tries: Vec<String> = seen.lock().unwrap().drain(..).flatten().collect();
    assert_eq!(tries.len(), 3, "{tries:?}");
    assert!(tries.iter().all(|t| t.contains(proxy_span)), "{tries:?}");

    // No answer within 50 ms: a hedge went out; the first answer won.
    assert_eq!(
        call("Hedged", &[("x-delay-ms", "300")]).await.as_deref(),
        Some("0")
    );
    let span = receiver.next_span();
    assert_eq!(span["attributes"]["grpcproxy.route"], "hedged", "{span}");
    let hedges = events(&span);
    assert_eq!(hedges.len(), 1, "{span}");
    assert_eq!(hedges[0].0, "hedge");
    assert_eq!(hedges[0].1["grpcproxy.attempt"], 2, "{span}");
    assert_eq!(hedges[0].1["grpcproxy.endpoint"], endpoint, "{span}");
    assert!(hedges[0].1.get("grpcproxy.previous_status_code").is_none());

    // A mirrored call: the copy to the shadow is an event.
    assert_eq!(call("Mirrored", &[]).await.as_deref(), Some("0"));
    let span = receiver.next_span();
    assert_eq!(span["attributes"]["grpcproxy.route"], "mirrored", "{span}");
    let mirrors = events(&span);
    assert_eq!(mirrors.len(), 1, "{span}");
    assert_eq!(mirrors[0].0, "mirror");
    assert_eq!(mirrors[0].1["grpcproxy.endpoint"], endpoint, "{span}");
    assert!(mirrors[0].1.get("grpcproxy.attempt").is_none(), "{span}");

    // Messages each way: three in two DATA frames (two in the first), four answers.
    let two = [grpc_frame(false, b"a"), grpc_frame(false, b"bc")].concat();
    let response = client
        .call(
            "/shop.Greeter/SayHello",
            header_map(&[("x-answers", "4")]),
            frames_body(vec![
                Frame::data(two.into()),
                Frame::data(grpc_frame(false, b"d")),
            ]),
        )
        .await;
    assert_eq!(response.grpc_status(), Some("0"));
    let span = receiver.next_span();
    let attributes = &span["attributes"];
    assert_eq!(attributes["grpcproxy.request_messages"], 3, "{span}");
    assert_eq!(attributes["grpcproxy.response_messages"], 4, "{span}");
    assert_eq!(attributes["grpcproxy.request_bytes"], 5 * 3 + 4, "{span}");
    assert_eq!(attributes["grpcproxy.response_bytes"], 7 * 4, "{span}");
    assert!(events(&span).is_empty(), "{span}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sample_rate_zero_traces_only_what_callers_sampled() {
    let receiver = Receiver::start(&[]);
    let (backend, seen) = backend().await;
    let (proxy, _file) = traced_proxy(
        backend.addr(),
        &format!(
            "otlp_endpoint = \"http://127.0.0.1:{}\"\nsample_rate = 0.0",
            receiver.port
        ),
    );
    let addr = proxy.listening[0];
    for _ in 0..20 {
        assert_eq!(call(addr, &[]).await.as_deref(), Some("0"));
    }
    assert!(
        seen.lock().unwrap().iter().all(Option::is_none),
        "an untraced call forwards no traceparent"
    );
    // A caller's sampled trace is continued whatever the rate (parent-based).
    let traceparent = format!("00-{TRACE}-{PARENT}-01");
    assert_eq!(
        call(addr, &[("traceparent", &traceparent)])
            .await
            .as_deref(),
        Some("0")
    );
    let span = receiver.next_span();
    assert_eq!(
        span["trace_id"], TRACE,
        "the only span is the caller's: {span}"
    );
    assert!(
        receiver
            .spans
            .recv_timeout(Duration::from_millis(500))
            .is_err(),
        "no span for the 20 untraced calls"
    );
    // A caller's unsampled trace: no span, but the backend's parent is still the proxy's.
    let unsampled = format!("00-{TRACE}-{PARENT}-00");
    assert_eq!(
        call(addr, &[("traceparent", &unsampled)]).await.as_deref(),
        Some("0")
    );
    let forwarded = last_traceparent(&seen);
    assert!(
        forwarded.starts_with(&format!("00-{TRACE}-")) && forwarded.ends_with("-00"),
        "{forwarded}"
    );
    assert!(!forwarded.contains(PARENT), "{forwarded}");
    assert!(receiver
        .spans
        .recv_timeout(Duration::from_millis(500))
        .is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_over_http_protobuf() {
    let receiver = Receiver::start(&["--http"]);
    let (backend, _seen) = backend().await;
    let (proxy, _file) = traced_proxy(
        backend.addr(),
        &format!(
            "otlp_endpoint = \"http://127.0.0.1:{}\"\nprotocol = \"http\"\nheaders = {{ x-api-key = \"secret\" }}",
            receiver.port
        ),
    );
    assert_eq!(call(proxy.listening[0], &[]).await.as_deref(), Some("0"));
    let span = receiver.next_span();
    assert_eq!(span["name"], "/shop.Greeter/SayHello", "{span}");
    let (_, config) = support::http_get(proxy.admin.unwrap(), "/config");
    assert!(!config.contains("secret"), "{config}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_is_down_or_slow_costs_no_call() {
    let (backend, _seen) = backend().await;
    // Nothing listens there.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (down, _file) = traced_proxy(
        backend.addr(),
        &format!("otlp_endpoint = \"http://{closed}\""),
    );
    let slow = Receiver::start(&["--delay-ms", "3000"]);
    let (slowed, _file2) = traced_proxy(
        backend.addr(),
        &format!("otlp_endpoint = \"http://127.0.0.1:{}\"", slow.port),
    );
    for proxy in [&down, &slowed] {
        let client = RawClient::connect(proxy.listening[0]).await;
        let started = std::time::Instant::now();
        for _ in 0..300 {
            let response = client
                .call(
                    "/shop.Greeter/SayHello",
                    header_map(&[]),
                    frames_body(vec![Frame::data(grpc_frame(false, b"hi"))]),
                )
                .await;
            assert_eq!(response.grpc_status(), Some("0"));
        }
        let took = started.elapsed();
        eprintln!("300 traced calls with the collector down or slow: {took:?}");
        assert!(took < Duration::from_secs(10), "{took:?}");
    }
    // The spans of the calls to the proxy whose collector is down failed to export (or
    // were dropped when the queue was full): counted, never waited for.
    let admin = down.admin.unwrap();
    let counted = |result: &str| {
        support::baseline::metric(
            admin,
            &format!("grpcproxy_tracing_spans_total{{result=\"{result}\"}}"),
        )
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while counted("failed") + counted("dropped") < 300 {
        assert!(
            std::time::Instant::now() < deadline,
            "failed {} dropped {}",
            counted("failed"),
            counted("dropped")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(counted("exported"), 0);
}

#[test]
fn check_config_names_bad_tracing_settings() {
    for (tracing, message) in [
        ("otlp_endpoint = \"127.0.0.1:4317\"", "tracing.otlp_endpoint: \"127.0.0.1:4317\" is not an http:// or https:// URL with a host"),
        ("otlp_endpoint = \"http://c:4317\"\nsample_rate = 1.5", "tracing.sample_rate: 1.5 is not a share of the calls (0 to 1)"),
        ("otlp_endpoint = \"http://c:4317\"\nprotocol = \"thrift\"", "unknown variant `thrift`"),
        ("otlp_endpoint = \"http://c:4317\"\nheaders = { \"Bad Name\" = \"x\" }", "tracing.headers: \"Bad Name\" is not a lowercase header name"),
    ] {
        let config = format!(
            "[[listeners]]\naddress = \"127.0.0.1:0\"\n[[routes]]\ncluster = \"c\"\n\
             [clusters.c]\nendpoints = [\"127.0.0.1:1\"]\n[tracing]\n{tracing}\n"
        );
        let file = support::write_config(&config);
        let (code, _, stderr) = support::check_config(file.path());
        assert_eq!(code, Some(2), "{tracing}: {stderr}");
        assert!(stderr.contains(message), "{tracing}: {stderr}");
    }
}
