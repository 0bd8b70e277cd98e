//! One merged server reflection (`reflection = true` on a listener) against real peers: a
//! tonic interop backend (interop.v1.Interop and grpc.health.v1, reflection v1alpha only)
//! and a tonic ping backend (grpcproxy.testing.TestService, reflection v1 and v1alpha)
//! behind one proxy, with a third cluster whose backend has no reflection. A grpcio
//! reflection client (grpcurl's list and describe) sees both backends' services, each
//! resolvable; a tonic v1 client sees the same list; with one backend down the other's are
//! still listed and the proxy logs why.

mod support;

use std::process::Command;
use std::time::Duration;

use grpcproxy_testing::raw::{frames_body, grpc_response, RawBackend};
use serde_json::Value;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1::ServerReflectionRequest;

/// What the grpcio reflection client (`interop/python/reflection_client.py`) saw.
fn python_client(target: std::net::SocketAddr) -> Value {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../interop/python");
    let python = dir.join(".venv/bin/python");
    assert!(
        python.exists(),
        "the grpcio virtualenv is missing: run `bash interop/install.sh` (scripts/test.sh does)"
    );
    let output = Command::new(python)
        .arg(dir.join("reflection_client.py"))
        .arg(target.to_string())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "the reflection client failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// What a tonic `grpc.reflection.v1` client gets through `target` for `questions`, asked
/// on one stream.
async fn v1_ask(
    target: std::net::SocketAddr,
    questions: Vec<MessageRequest>,
) -> Vec<MessageResponse> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{target}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = ServerReflectionClient::new(channel);
    let requests: Vec<ServerReflectionRequest> = questions
        .into_iter()
        .map(|question| ServerReflectionRequest {
            host: String::new(),
            message_request: Some(question),
        })
        .collect();
    let count = requests.len();
    let mut answers = client
        .server_reflection_info(tonic::codegen::tokio_stream::iter(requests))
        .await
        .unwrap()
        .into_inner();
    let mut got = Vec::new();
    for _ in 0..count {
        let answer = answers.message().await.unwrap().expect("an answer");
        got.push(answer.message_response.expect("a response"));
    }
    got
}

/// The services a tonic `grpc.reflection.v1` client lists through `target`.
async fn v1_list(target: std::net::SocketAddr) -> Vec<String> {
    match v1_ask(target, vec![MessageRequest::ListServices(String::new())])
        .await
        .remove(0)
    {
        MessageResponse::ListServicesResponse(list) => {
            list.service.into_iter().map(|s| s.name).collect()
        }
        other => panic!("not a list: {other:?}"),
    }
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_reflection_lists_and_describes_every_backend() {
    let interop = grpcproxy_interop::backend::serve().await;
    let (ping, _service) = grpcproxy_testing::serve::ping_backend_with_reflection().await;
    // Answers every call UNIMPLEMENTED: a backend without reflection.
    let silent = RawBackend::start(|_request: http::Request<hyper::body::Incoming>| async {
        let mut response = grpc_response(frames_body(Vec::new()));
        response
            .headers_mut()
            .insert("grpc-status", "12".parse().unwrap());
        response
    })
    .await;
    let config = format!(
        r#"{head}
[[routes]]
match.service = "grpcproxy.testing.*"
cluster = "ping"

[[routes]]
match.service = "silent.*"
cluster = "silent"

[[routes]]
cluster = "interop"

[clusters.ping]
endpoints = ["{ping}"]

[clusters.silent]
endpoints = ["{silent}"]

[clusters.interop]
endpoints = ["{interop}"]
"#,
        head = support::admin_and_listener("reflection = true\nreflection_cache_ttl = \"100ms\""),
        ping = ping.addr(),
        silent = silent.addr(),
        interop = interop.addr(),
    );
    let (proxy, _file) = support::start_with_config(&config, 1);
    let addr = proxy.listening[0];

    // The ping backend reflects ping.proto, which also declares grpcproxy.testing.Echo.
    let both = [
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
        "grpcproxy.testing.Echo",
        "grpcproxy.testing.TestService",
        "interop.v1.Interop",
    ];
    let seen = tokio::task::spawn_blocking(move || python_client(addr))
        .await
        .unwrap();
    assert_eq!(strings(&seen["services"]), both, "{seen}");
    let described = &seen["described"];
    assert_eq!(
        described["interop.v1.Interop"]["file"], "interop.proto",
        "{seen}"
    );
    assert_eq!(
        strings(&described["interop.v1.Interop"]["methods"]),
        [
            "Unary",
            "ClientStream",
            "ServerStream",
            "Bidi",
            "WasCancelled"
        ],
    );
    assert_eq!(
        described["grpcproxy.testing.TestService"]["file"], "ping.proto",
        "{seen}"
    );
    assert_eq!(
        strings(&described["grpcproxy.testing.TestService"]["methods"]),
        [
            "PingEmpty",
            "Ping",
            "PingError",
            "PingList",
            "PingClientStream",
            "PingStream"
        ],
        "{seen}"
    );
    assert_eq!(
        strings(&described["grpc.health.v1.Health"]["methods"]),
        ["Check", "Watch"],
        "{seen}"
    );
    for service in both {
        assert!(
            described[service].get("error").is_none(),
            "{service}: {seen}"
        );
    }
    assert_eq!(v1_list(addr).await, both);
    // A symbol no backend has: NOT_FOUND naming what each said; the stream goes on.
    let answers = v1_ask(
        addr,
        vec![
            MessageRequest::FileContainingSymbol("no.such.Thing".into()),
            MessageRequest::FileContainingSymbol("grpcproxy.testing.TestService.Ping".into()),
        ],
    )
    .await;
    match &answers[0] {
        MessageResponse::ErrorResponse(e) => {
            assert_eq!(e.error_code, 5, "{e:?}");
            assert!(
                e.error_message.starts_with("no.such.Thing not found ("),
                "{e:?}"
            );
            assert!(e.error_message.contains("ping: "), "{e:?}");
            assert!(e.error_message.contains("interop: "), "{e:?}");
        }
        other => panic!("not an error: {other:?}"),
    }
    assert!(
        matches!(&answers[1], MessageResponse::FileDescriptorResponse(f) if !f.file_descriptor_proto.is_empty()),
        "{:?}",
        answers[1]
    );
    let skipped = support::wait_for_log(&proxy, "merged reflection: skipping a backend");
    assert!(skipped.contains("\"backend\":\"silent\""), "{skipped}");

    // One backend down: the other's services are still listed, and the log says why.
    ping.stop();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let seen = tokio::task::spawn_blocking(move || python_client(addr))
        .await
        .unwrap();
    assert_eq!(
        strings(&seen["services"]),
        [
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection",
            "interop.v1.Interop",
        ],
        "{seen}"
    );
    let down = support::wait_for_log(&proxy, "\"backend\":\"ping\"");
    assert!(down.contains("skipping a backend"), "{down}");
    let admin = proxy.admin.unwrap();
    assert!(support::baseline::metric(admin, "grpcproxy_reflection_streams_total") >= 3);
    assert!(support::baseline::metric(admin, "grpcproxy_reflection_backend_failures_total") >= 2);
}

#[test]
fn check_config_needs_reflection_for_its_ttl() {
    let config = "[[listeners]]\naddress = \"127.0.0.1:0\"\nreflection_cache_ttl = \"5s\"\n\
                  [[routes]]\ncluster = \"c\"\n[clusters.c]\nendpoints = [\"127.0.0.1:1\"]\n";
    let file = support::write_config(config);
    let (code, _, stderr) = support::check_config(file.path());
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(
            "listeners[0].reflection_cache_ttl: only with reflection = true on this listener"
        ),
        "{stderr}"
    );
}
