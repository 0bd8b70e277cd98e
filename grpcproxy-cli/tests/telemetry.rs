//! The admin listener: metrics after known traffic, health, readiness during drain, the
//! redacted config; and the JSON access log.

mod support;

use std::time::Duration;

use grpcproxy_testing::pb::{PingRequest, PingResponse};
use grpcproxy_testing::raw::{frames_body, RawClient};
use grpcproxy_testing::serve::{ping_backend, ping_client};
use prost::Message;
use support::http_get;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_health_config_and_access_log_after_known_traffic() {
    let (backend, _service) = ping_backend().await;
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("access.log");
    let config = format!(
        r#"
[admin]
address = "127.0.0.1:0"

[access_log]
path = "{log}"

[[listeners]]
address = "127.0.0.1:0"

[[routes]]
name = "ping"
match.service = "grpcproxy.testing.TestService"
cluster = "ping"
request_metadata.set = {{ "authorization" = "Bearer s3cret-token" }}

[clusters.ping]
endpoints = ["{backend}"]
"#,
        log = log_path.display(),
        backend = backend.addr()
    );
    let (mut proxy, _file) = support::start_with_config(&config, 1);
    let admin = proxy.admin.expect("the admin address is logged");
    let addr = proxy.listening[0];
    let mut client = ping_client(addr).await;

    let request = PingRequest {
        value: "metrics".into(),
        ..Default::default()
    };
    for _ in 0..3 {
        client.ping(request.clone()).await.unwrap();
    }
    client.ping_error(PingRequest::default()).await.unwrap_err();
    let raw = RawClient::connect(addr).await;
    let unrouted = raw
        .call(
            "/other.Service/Method",
            Default::default(),
            frames_body(vec![]),
        )
        .await;
    assert_eq!(unrouted.grpc_status(), Some("12"));
    // Answered by the proxy before routing: counted and logged like the rest.
    let malformed = raw
        .call("/no-method", Default::default(), frames_body(vec![]))
        .await;
    assert_eq!(malformed.grpc_status(), Some("12"));
    let bad_timeout = raw
        .call(
            "/grpcproxy.testing.TestService/Ping",
            grpcproxy_testing::raw::header_map(&[("grpc-timeout", "soon")]),
            frames_body(vec![]),
        )
        .await;
    assert_eq!(bad_timeout.grpc_status(), Some("13"));

    let ping = r#"route="ping",cluster="ping",method="/grpcproxy.testing.TestService/Ping""#;
    let body = support::wait_for_metric(
        admin,
        &format!("grpcproxy_requests_total{{{ping},grpc_status=\"0\"}} 3"),
    );
    let error = r#"route="ping",cluster="ping",method="/grpcproxy.testing.TestService/PingError""#;
    let body = if body.contains(&format!("{{{error},grpc_status=\"9\"}} 1")) {
        body
    } else {
        support::wait_for_metric(
            admin,
            &format!("grpcproxy_requests_total{{{error},grpc_status=\"9\"}} 1"),
        )
    };
    let reply_len = PingResponse {
        value: "metrics".into(),
        counter: 42,
        payload: vec![],
    }
    .encoded_len();
    let request_bytes =
        3 * (5 + request.encoded_len()) + (5 + PingRequest::default().encoded_len());
    for line in [
        r#"grpcproxy_requests_total{route="",cluster="",method="",grpc_status="12"} 2"#.to_string(),
        r#"grpcproxy_requests_total{route="",cluster="",method="",grpc_status="13"} 1"#.to_string(),
        r#"grpcproxy_request_duration_seconds_count{route="ping",cluster="ping"} 4"#.to_string(),
        format!(r#"grpcproxy_request_bytes_total{{route="ping",cluster="ping"}} {request_bytes}"#),
        format!(
            r#"grpcproxy_response_bytes_total{{route="ping",cluster="ping"}} {}"#,
            3 * (5 + reply_len)
        ),
        "grpcproxy_streams_in_flight 0".to_string(),
        format!(
            r#"grpcproxy_upstream_connects_total{{cluster="ping",endpoint="{}"}} 1"#,
            backend.addr()
        ),
        format!(
            r#"grpcproxy_upstream_connect_failures_total{{cluster="ping",endpoint="{}"}} 0"#,
            backend.addr()
        ),
        format!(
            r#"grpcproxy_upstream_connections{{cluster="ping",endpoint="{}"}} 1"#,
            backend.addr()
        ),
        r#"grpcproxy_cluster_endpoints{cluster="ping"} 1"#.to_string(),
        // The tonic client and the raw client, both still connected.
        "grpcproxy_client_connections 2".to_string(),
        "grpcproxy_client_connections_accepted_total 2".to_string(),
    ] {
        assert!(
            body.lines().any(|l| l == line),
            "no line {line:?} in:\n{body}"
        );
    }

    assert_eq!(http_get(admin, "/healthz"), (200, "ok\n".to_string()));
    assert_eq!(http_get(admin, "/ready"), (200, "ready\n".to_string()));
    assert_eq!(http_get(admin, "/nope").0, 404);
    let (status, config_text) = http_get(admin, "/config");
    assert_eq!(status, 200);
    assert!(config_text.contains("[[listeners]]"), "{config_text}");
    assert!(config_text.contains("<redacted>"), "{config_text}");
    assert!(
        !config_text.contains("s3cret-token"),
        "secrets must not be shown:\n{config_text}"
    );

    let lines = support::access_log_lines(&log_path, 7);
    assert_eq!(lines.len(), 7, "one line per call: {lines:?}");
    let (lines, unrouted): (Vec<_>, Vec<_>) = lines.iter().partition(|l| l["route"] == "ping");
    let mut unrouted: Vec<(&str, i64, &str)> = unrouted
        .iter()
        .map(|l| {
            assert_eq!(l["route"], "", "{l}");
            assert_eq!(l["cluster"], "", "{l}");
            assert!(l["endpoint"].is_null(), "{l}");
            assert!(l["peer"].as_str().unwrap().starts_with("127.0.0.1:"), "{l}");
            (
                l["method"].as_str().unwrap(),
                l["grpc_status"].as_i64().unwrap(),
                l["grpc_message"].as_str().unwrap(),
            )
        })
        .collect();
    unrouted.sort();
    assert_eq!(
        unrouted,
        [
            (
                "/grpcproxy.testing.TestService/Ping",
                13,
                "malformed grpc-timeout \"soon\": expected 1 to 8 digits and a unit of H, M, S, m, u or n"
            ),
            (
                "/no-method",
                12,
                "malformed method name \"/no-method\": expected /package.Service/Method"
            ),
            (
                "/other.Service/Method",
                12,
                "no route matched /other.Service/Method"
            )
        ]
    );
    for (line, (method, status)) in
        lines
            .iter()
            .zip([("Ping", 0), ("Ping", 0), ("Ping", 0), ("PingError", 9)])
    {
        assert_eq!(
            line["method"],
            format!("/grpcproxy.testing.TestService/{method}")
        );
        assert_eq!(line["route"], "ping");
        assert_eq!(line["cluster"], "ping");
        assert_eq!(line["endpoint"], backend.addr().to_string());
        assert_eq!(line["grpc_status"], status);
        assert!(line["peer"].as_str().unwrap().starts_with("127.0.0.1:"));
        assert!(line["time"].as_str().unwrap().ends_with('Z'));
        assert!(line["duration_ms"].as_f64().unwrap() > 0.0);
        assert_eq!(line["authority"], addr.to_string(), "{line}");
        assert!(
            line["user_agent"].as_str().unwrap().starts_with("tonic/"),
            "{line}"
        );
        let message = if status == 0 {
            None
        } else {
            Some("Userspace error.")
        };
        assert_eq!(line["grpc_message"].as_str(), message, "{line}");
    }
    assert_eq!(lines[0]["bytes_in"], 5 + request.encoded_len());
    assert_eq!(lines[0]["bytes_out"], 5 + reply_len);

    // While draining, /ready says so; the open stream still completes.
    let mut stream = client
        .ping_list(PingRequest {
            sleep_ms: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    support::sigterm(&proxy);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(http_get(admin, "/ready"), (503, "draining\n".to_string()));
    let mut n = 0;
    while stream.message().await.unwrap().is_some() {
        n += 1;
    }
    assert_eq!(n, 10);
    drop(client);
    drop(raw);
    assert!(support::wait_exit(&mut proxy, Duration::from_secs(10)).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_reach_the_log_even_at_trace_level() {
    let (backend, _service) = ping_backend().await;
    let config = format!(
        r#"
[admin]
address = "127.0.0.1:0"

[[listeners]]
address = "127.0.0.1:0"

[[routes]]
match.service = "grpcproxy.testing.TestService"
cluster = "ping"
request_metadata.set = {{ "authorization" = "Bearer config-s3cret" }}

[clusters.ping]
endpoints = ["{}"]
"#,
        backend.addr()
    );
    let file = support::write_config(&config);
    let path = file.path().to_str().unwrap();
    // Every library at trace too (a bare "trace" is grpcproxy's own).
    let mut proxy = support::start(&["--config", path, "--log-level", "trace,h2=trace"], 1);
    let addr = proxy.listening[0];

    // Calls that succeed, fail at the backend, and match no route, each carrying
    // credentials in metadata.
    let mut client = ping_client(addr).await;
    let with_secrets = |mut request: tonic::Request<PingRequest>| {
        let metadata = request.metadata_mut();
        metadata.insert("authorization", "Bearer client-s3cret".parse().unwrap());
        metadata.insert("x-api-key", "key-s3cret".parse().unwrap());
        metadata.insert_bin(
            "token-bin",
            tonic::metadata::BinaryMetadataValue::from_bytes(b"bin-s3cret"),
        );
        request
    };
    client
        .ping(with_secrets(tonic::Request::new(PingRequest::default())))
        .await
        .unwrap();
    client
        .ping_error(with_secrets(tonic::Request::new(PingRequest {
            error_code: 7,
            ..Default::default()
        })))
        .await
        .unwrap_err();
    let raw = RawClient::connect(addr).await;
    let mut headers = http::HeaderMap::new();
    headers.insert("authorization", "Bearer raw-s3cret".parse().unwrap());
    let unrouted = raw
        .call("/other.Service/Method", headers, frames_body(vec![]))
        .await;
    assert_eq!(unrouted.grpc_status(), Some("12"));
    let (_, shown) = http_get(proxy.admin.unwrap(), "/config");
    assert!(!shown.contains("s3cret"), "{shown}");

    support::sigterm(&proxy);
    support::wait_exit(&mut proxy, Duration::from_secs(10));
    let lines: Vec<String> = proxy.logs.try_iter().collect();
    assert!(
        lines.len() > 50,
        "trace logging was on: {} lines",
        lines.len()
    );
    // base64 of "bin-s3cret", as a `-bin` value travels.
    let leaks: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("s3cret") || l.contains("YmluLXMzY3JldA"))
        .collect();
    assert!(leaks.is_empty(), "secrets in the log: {leaks:#?}");
}
