//! Record and replay: the binary's tap records every RPC kind (to a file in either
//! encoding, or to JetStream), exports its counters, flushes at exit, and
//! `grpcproxy replay` reports every call matching against the same backend and the exact
//! differences against a changed one.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use grpcproxy_testing::nats::NatsServer;
use grpcproxy_testing::pb::{Empty, PingRequest};
use grpcproxy_testing::ping::{PingService, CLIENT_MD_KEY, LIST_RESPONSES};
use grpcproxy_testing::serve::{ping_backend, ping_client, ping_server};
use grpcproxy_testing::TestServer;
use tonic::Request;

/// Runs every RPC kind once through `proxy` (7 calls, 2 of them failing by design) and
/// returns how many tap events they make.
async fn traffic(proxy: SocketAddr) -> usize {
    let mut client = ping_client(proxy).await;
    let ping = |value: &str, error_code| PingRequest {
        value: value.into(),
        error_code,
        payload: vec![7; 300],
        ..Default::default()
    };
    let mut request = Request::new(ping("unary", 0));
    request
        .metadata_mut()
        .insert("x-echo-a", "b".parse().unwrap());
    request.metadata_mut().insert_bin(
        "x-echo-c-bin",
        tonic::metadata::MetadataValue::from_bytes(&[0, 255]),
    );
    client.ping(request).await.unwrap();
    let status = client.ping(ping("missing", 5)).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);
    let mut empty = Request::new(Empty {});
    empty
        .metadata_mut()
        .insert(CLIENT_MD_KEY, "x".parse().unwrap());
    client.ping_empty(empty).await.unwrap();
    client.ping_error(ping("e", 0)).await.unwrap_err();
    let mut list = client
        .ping_list(ping("list", 0))
        .await
        .unwrap()
        .into_inner();
    while list.message().await.unwrap().is_some() {}
    let pings = [ping("a", 0), ping("b", 0), ping("c", 0)];
    client
        .ping_client_stream(tokio_stream::iter(pings.clone()))
        .await
        .unwrap();
    let mut bidi = client
        .ping_stream(tokio_stream::iter(pings))
        .await
        .unwrap()
        .into_inner();
    while bidi.message().await.unwrap().is_some() {}
    // Per call: started + request messages + response messages + ended.
    [
        2 + 1 + 1,
        2 + 1,
        2 + 1 + 1,
        2 + 1,
        2 + 1 + LIST_RESPONSES as usize,
        2 + 3 + 1,
        2 + 3 + 3,
    ]
    .iter()
    .sum()
}

async fn replay(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_grpcproxy"))
            .arg("replay")
            .args(&args)
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

async fn changed_backend() -> TestServer {
    let changed = PingService::new().with_counter_offset(1);
    TestServer::start(tonic::service::Routes::new(ping_server(changed))).await
}

/// Replays `source` against the original backend (all 7 match) and a changed one (the 5
/// calls whose responses carry a counter differ; the 2 failing calls still match).
async fn replay_both_ways(source: &[String], original: &TestServer) {
    let mut args = vec!["--target".to_owned(), original.url()];
    args.extend_from_slice(source);
    let same = replay(args).await;
    let out = stdout(&same);
    assert_eq!(
        same.status.code(),
        Some(0),
        "{out}\n{}",
        String::from_utf8_lossy(&same.stderr)
    );
    assert_eq!(
        out.lines()
            .filter(|l| l.starts_with("MATCH  call "))
            .count(),
        7,
        "{out}"
    );
    assert!(
        out.ends_with("summary: 7 match, 0 differ, 0 skipped, 0 failed\n"),
        "{out}"
    );

    let changed = changed_backend().await;
    let mut args = vec!["--target".to_owned(), changed.url()];
    args.extend_from_slice(source);
    let differ = replay(args).await;
    let out = stdout(&differ);
    assert_eq!(differ.status.code(), Some(1), "{out}");
    assert!(
        out.ends_with("summary: 2 match, 5 differ, 0 skipped, 0 failed\n"),
        "{out}"
    );
    for method in ["PingError", "Ping"] {
        // The failing calls: same status, same (no) responses.
        let line = format!("/grpcproxy.testing.TestService/{method}\n");
        assert!(
            out.lines()
                .any(|l| l.starts_with("MATCH") && format!("{l}\n").ends_with(&line)),
            "{out}"
        );
    }
    // PingResponse { value: "unary", counter: 42 → 43, payload }: field 2's varint is the
    // byte after "unary" (tag 0x0a, length 5, 5 bytes, tag 0x10).
    // Calls are named by the instance that recorded them and their id there.
    let instance = out
        .lines()
        .find_map(|l| {
            l.strip_prefix("DIFFER call ")?
                .split_once('/')
                .map(|(i, _)| i)
        })
        .expect("a DIFFER line");
    assert!(
        out.contains(&format!(
            "DIFFER call {instance}/1 /grpcproxy.testing.TestService/Ping\n         response message 0: 312 bytes, first difference at byte 8 (recorded 0x2a, replayed 0x2b)\n"
        )),
        "{out}"
    );
    assert!(
        out.contains("/PingList\n         response message 0: "),
        "{out}"
    );
    assert!(
        out.contains("         5 more response messages differ\n"),
        "{out}"
    );

    let mut args = vec![
        "--target".to_owned(),
        changed.url(),
        "--filter".into(),
        "/grpcproxy.testing.TestService/PingError".into(),
        "--rate".into(),
        "50".into(),
    ];
    args.extend_from_slice(source);
    let filtered = replay(args).await;
    assert_eq!(filtered.status.code(), Some(0), "{}", stdout(&filtered));
    assert!(stdout(&filtered).ends_with("summary: 1 match, 0 differ, 0 skipped, 0 failed\n"));
}

async fn record_to_file(encoding: &str, file: &Path) -> TestServer {
    let (backend, _) = ping_backend().await;
    let config = format!(
        "[admin]\naddress = \"127.0.0.1:0\"\n[[listeners]]\naddress = \"127.0.0.1:0\"\n[[routes]]\ncluster = \"ping\"\n\
         [clusters.ping]\nendpoints = [\"{}\"]\n[tap]\nfile = \"{}\"\nencoding = \"{encoding}\"\n",
        backend.addr(),
        file.display()
    );
    let (mut proxy, _config) = support::start_with_config(&config, 1);
    let events = traffic(proxy.listening[0]).await;
    let admin = proxy.admin.unwrap();
    support::wait_for_metric(
        admin,
        &format!("grpcproxy_tap_events_published_total {events}"),
    );
    let (_, metrics) = support::http_get(admin, "/metrics");
    for line in [
        "grpcproxy_tap_events_dropped_total 0",
        "grpcproxy_tap_events_failed_total 0",
        "grpcproxy_tap_connected 1",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "no {line:?} in\n{metrics}"
        );
    }
    support::sigterm(&proxy);
    assert!(support::wait_exit(&mut proxy, Duration::from_secs(10)).success());
    let logs: Vec<String> = proxy.logs.try_iter().collect();
    assert!(logs.iter().any(|l| l.contains("tap flushed")), "{logs:#?}");
    backend
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_protobuf_recording_replays_matching_and_differing() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tap.pb");
    let backend = record_to_file("protobuf", &file).await;
    let source = ["--file".to_owned(), file.display().to_string()];
    replay_both_ways(&source, &backend).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_recording_is_proto3_json_lines_and_replays_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tap.jsonl");
    let backend = record_to_file("json", &file).await;
    let text = std::fs::read_to_string(&file).unwrap();
    let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(first["schemaVersion"], 1);
    assert_eq!(
        first["started"]["callId"], "1",
        "64-bit integers are strings: {first}"
    );
    assert_eq!(
        first["started"]["method"],
        "/grpcproxy.testing.TestService/Ping"
    );
    let message: serde_json::Value = serde_json::from_str(text.lines().nth(1).unwrap()).unwrap();
    assert_eq!(message["message"]["direction"], "REQUEST", "{message}");
    assert!(
        message["message"]["payload"]
            .as_str()
            .unwrap()
            .starts_with("CgV1bmFyeSKsAgcHBwcH"),
        "{message}"
    );
    let source = ["--file".to_owned(), file.display().to_string()];
    replay_both_ways(&source, &backend).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jetstream_recording_replays_matching_and_differing() {
    let nats = NatsServer::start();
    let (backend, _) = ping_backend().await;
    let config = format!(
        "[admin]\naddress = \"127.0.0.1:0\"\n[[listeners]]\naddress = \"127.0.0.1:0\"\n[[routes]]\ncluster = \"ping\"\n\
         [clusters.ping]\nendpoints = [\"{}\"]\n[tap]\nnats_url = \"{}\"\nstream = \"REPLAY\"\n",
        backend.addr(),
        nats.url()
    );
    let (mut proxy, _config) = support::start_with_config(&config, 1);
    let admin = proxy.admin.unwrap();
    support::wait_for_metric(admin, "grpcproxy_tap_connected 1");
    let events = traffic(proxy.listening[0]).await;
    support::sigterm(&proxy);
    assert!(support::wait_exit(&mut proxy, Duration::from_secs(10)).success());
    let logs: Vec<String> = proxy.logs.try_iter().collect();
    let flushed = logs
        .iter()
        .find(|l| l.contains("tap flushed"))
        .expect("flushed at exit");
    assert!(
        flushed.contains(&format!("\"published\":{events}")),
        "{flushed}"
    );
    let source = [
        "--nats".to_owned(),
        nats.url(),
        "--stream".into(),
        "REPLAY".into(),
    ];
    replay_both_ways(&source, &backend).await;
}

#[tokio::test]
async fn an_unreadable_recording_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("garbage.pb");
    std::fs::write(&file, b"\x05abc").unwrap();
    let output = replay(vec![
        "--target".into(),
        "http://127.0.0.1:1".into(),
        "--file".into(),
        file.display().to_string(),
    ])
    .await;
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.starts_with("grpcproxy replay: cannot read "),
        "{stderr}"
    );
    assert!(stderr.contains("byte 0: "), "{stderr}");
}
