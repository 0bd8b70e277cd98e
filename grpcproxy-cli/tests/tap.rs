//! The `[tap]` section: the binary records every proxied call (here to a file).

mod support;

use std::time::Duration;

use grpcproxy::mq::{wire, FileQueue};
use grpcproxy_testing::nats::NatsServer;
use grpcproxy_testing::pb::PingRequest;
use grpcproxy_testing::serve::{ping_backend, ping_client};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_records_calls_from_its_tap_section() {
    let (backend, _) = ping_backend().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tap.pb");
    let config = format!(
        "[[listeners]]\naddress = \"127.0.0.1:0\"\n[[routes]]\ncluster = \"ping\"\n[clusters.ping]\nendpoints = [\"{}\"]\n\
         [tap]\nfile = \"{}\"\nmethods = [\"/grpcproxy.testing.TestService/Ping\"]\n",
        backend.addr(),
        file.display()
    );
    let (mut proxy, _config) =
        support::start_with_config_args(&config, 1, &["--instance", "replica-7"]);
    let mut client = ping_client(proxy.listening[0]).await;
    for i in 0..3 {
        client
            .ping(PingRequest {
                value: format!("{i}"),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    client
        .ping_empty(grpcproxy_testing::pb::Empty {})
        .await
        .unwrap_err(); // not tapped: PingEmpty
    drop(client);
    // No waiting here: at exit the proxy flushes what its tap still holds.
    support::sigterm(&proxy);
    assert!(support::wait_exit(&mut proxy, Duration::from_secs(10)).success());

    let events = FileQueue::read(&file).unwrap();
    let started: Vec<String> = events
        .iter()
        .filter_map(|e| match &e.event {
            Some(wire::Kind::Started(s)) => Some(s.method.clone()),
            _ => None,
        })
        .collect();
    // "/…/Ping" is a prefix of "/…/PingEmpty" too: method filters are prefixes.
    assert_eq!(started.len(), 4, "{started:?}");
    // Every event says which process recorded it.
    assert!(
        events.iter().all(|e| e.instance == "replica-7"),
        "{events:?}"
    );
    assert_eq!(
        events.len(),
        3 * 4 + 3,
        "3 Ping calls (start, 2 messages, end) and PingEmpty (start, request, end)"
    );
}

#[test]
fn a_tap_needs_exactly_one_destination() {
    let file = support::write_config(
        "[[listeners]]\naddress = \"127.0.0.1:0\"\n[tap]\nsample_rate = 0.5\n",
    );
    let (code, _, stderr) = support::check_config(file.path());
    assert_eq!(code, Some(2));
    assert!(
        stderr.ends_with(": tap: give exactly one of nats_url and file\n"),
        "{stderr}"
    );
}

/// A tap config publishing to NATS at `url` (plus `extra` lines in `[tap]`), with an admin
/// listener, routing every call to `backend`.
fn nats_tap_config(backend: std::net::SocketAddr, url: &str, extra: &str) -> String {
    format!(
        "[admin]\naddress = \"127.0.0.1:0\"\n[[listeners]]\naddress = \"127.0.0.1:0\"\n[[routes]]\ncluster = \"ping\"\n\
         [clusters.ping]\nendpoints = [\"{backend}\"]\n[tap]\nnats_url = \"{url}\"\nstream = \"TAP\"\n{extra}"
    )
}

/// Makes 3 calls through the proxy and waits (5 s at most) until `nats` delivered all 12
/// of their events to a subscriber; returns every log line the proxy wrote meanwhile.
async fn three_calls_reach_nats(proxy: &support::Proxy, nats: async_nats::Client) -> Vec<String> {
    use tokio_stream::StreamExt;
    let mut events = nats.subscribe("grpcproxy.calls.>").await.unwrap();
    nats.flush().await.unwrap();
    let mut client = ping_client(proxy.listening[0]).await;
    for _ in 0..3 {
        client.ping(PingRequest::default()).await.unwrap();
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    for seen in 0..12 {
        if tokio::time::timeout_at(deadline, events.next())
            .await
            .is_err()
        {
            let logs: Vec<String> = proxy.logs.try_iter().collect();
            panic!(
                "NATS delivered {seen} of 12 events; the proxy logged:\n{}",
                logs.join("\n")
            );
        }
    }
    proxy.logs.try_iter().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_credentials_in_the_url_authenticate_and_never_show() {
    let nats = NatsServer::start_with(&["--user", "alice", "--pass", "S3cretPW"]);
    let (backend, _) = ping_backend().await;
    let url = nats.url().replace("nats://", "nats://alice:S3cretPW@");
    let config = nats_tap_config(backend.addr(), &url, "");
    let (proxy, _file) = support::start_with_config_args(&config, 1, &["--log-level", "debug"]);
    let subscriber =
        async_nats::ConnectOptions::with_user_and_password("alice".into(), "S3cretPW".into())
            .connect(nats.url())
            .await
            .unwrap();
    let mut logs = proxy.startup.clone();
    logs.extend(three_calls_reach_nats(&proxy, subscriber).await);
    let shown = logs
        .iter()
        .find(|l| l.contains("tap publishing to NATS"))
        .expect("the tap's start is logged");
    assert!(
        shown.contains("nats://alice:<redacted>@127.0.0.1:"),
        "{shown}"
    );
    let leaked: Vec<&String> = logs.iter().filter(|l| l.contains("S3cretPW")).collect();
    assert!(leaked.is_empty(), "{leaked:?}");
    let (status, config_text) = support::http_get(proxy.admin.unwrap(), "/config");
    assert_eq!(status, 200);
    assert!(!config_text.contains("S3cretPW"), "{config_text}");
    assert!(
        config_text.contains("nats://alice:<redacted>@"),
        "{config_text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_file_authenticates_without_the_token_in_the_config() {
    let nats = NatsServer::start_with(&["--auth", "T0kenS3cret"]);
    let (backend, _) = ping_backend().await;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("nats.token");
    std::fs::write(&token, "T0kenS3cret\n").unwrap();
    let extra = format!(
        "token_file = \"{}\"\nmax_bytes = 1048576\nmax_age = \"1h\"\nstorage = \"memory\"\n",
        token.display()
    );
    let config = nats_tap_config(backend.addr(), &nats.url(), &extra);
    let (proxy, _file) = support::start_with_config_args(&config, 1, &["--log-level", "debug"]);
    let subscriber = async_nats::ConnectOptions::with_token("T0kenS3cret".into())
        .connect(nats.url())
        .await
        .unwrap();
    let mut logs = proxy.startup.clone();
    logs.extend(three_calls_reach_nats(&proxy, subscriber).await);
    let leaked: Vec<&String> = logs.iter().filter(|l| l.contains("T0kenS3cret")).collect();
    assert!(leaked.is_empty(), "{leaked:?}");
    // The stream was made with the configured limits.
    let js = async_nats::jetstream::new(
        async_nats::ConnectOptions::with_token("T0kenS3cret".into())
            .connect(nats.url())
            .await
            .unwrap(),
    );
    let mut stream = js.get_stream("TAP").await.unwrap();
    let info = stream.info().await.unwrap();
    assert_eq!(info.config.max_bytes, 1 << 20);
    assert_eq!(info.config.max_age, Duration::from_secs(3600));
    assert_eq!(
        info.config.storage,
        async_nats::jetstream::stream::StorageType::Memory
    );
    assert_eq!(info.state.messages, 12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tap_reaches_nats_over_tls_with_a_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let pki = grpcproxy_testing::pki::TestPki::generate().write_to(dir.path());
    let (cert, key, ca) = (
        pki.server_cert.to_str().unwrap(),
        pki.server_key.to_str().unwrap(),
        pki.ca.to_str().unwrap(),
    );
    let nats = NatsServer::start_with(&[
        "--tlsverify",
        "--tlscert",
        cert,
        "--tlskey",
        key,
        "--tlscacert",
        ca,
    ]);
    let (backend, _) = ping_backend().await;
    let extra = format!(
        "tls = {{ ca = \"{}\", cert = \"{}\", key = \"{}\" }}\n",
        pki.ca.display(),
        pki.client_cert.display(),
        pki.client_key.display()
    );
    let config = nats_tap_config(backend.addr(), &nats.url(), &extra);
    let (proxy, _file) = support::start_with_config(&config, 1);
    let subscriber = async_nats::ConnectOptions::new()
        .require_tls(true)
        .add_root_certificates(pki.ca.clone())
        .add_client_certificate(pki.client_cert.clone(), pki.client_key.clone())
        .connect(nats.url())
        .await
        .unwrap();
    three_calls_reach_nats(&proxy, subscriber).await;
}

#[test]
fn tap_credentials_and_files_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    let cases = [
        (
            format!(
                "nats_url = \"nats://n:4222\"\ntoken_file = \"{}\"\n",
                missing.display()
            ),
            format!(
                "tap.token_file: cannot read {}: No such file or directory (os error 2)",
                missing.display()
            ),
        ),
        (
            "file = \"t.pb\"\ntls = { ca = \"ca.pem\" }\n".to_string(),
            "tap.tls: only for nats_url".to_string(),
        ),
        (
            "nats_url = \"nats://n:4222\"\ntls = { cert = \"c.pem\" }\n".to_string(),
            "tap.tls: cert and key go together".to_string(),
        ),
        (
            format!("file = \"{}/tap.pb\"\n", missing.display()),
            format!(
                "tap.file: the directory {} does not exist",
                missing.display()
            ),
        ),
        (
            "nats_url = \"nats://n:4222\"\nreplicas = 7\n".to_string(),
            "tap.replicas: 7 is not 1 to 5 (the copies JetStream keeps of the stream)".to_string(),
        ),
        (
            "file = \"t.pb\"\nreplicas = 3\n".to_string(),
            "tap.replicas: only for nats_url".to_string(),
        ),
        (
            "file = \"t.pb\"\ninstance = \"edge 1\"\n".to_string(),
            "tap.instance: \"edge 1\" is not 1 to 128 visible characters without spaces"
                .to_string(),
        ),
    ];
    for (tap, message) in cases {
        let file = support::write_config(&format!(
            "[[listeners]]\naddress = \"127.0.0.1:0\"\n[tap]\n{tap}"
        ));
        let (code, _, stderr) = support::check_config(file.path());
        assert_eq!(code, Some(2), "{tap}");
        assert!(
            stderr.lines().any(|l| l.ends_with(&message)),
            "{tap}: {stderr}"
        );
    }
}

#[test]
fn a_bad_instance_name_on_the_command_line_is_refused() {
    let file = support::write_config(
        "[[listeners]]\naddress = \"127.0.0.1:0\"\n[[routes]]\ncluster = \"c\"\n\
         [clusters.c]\nendpoints = [\"127.0.0.1:1\"]\n",
    );
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_grpcproxy"))
        .args(["--config", file.path().to_str().unwrap(), "--instance", ""])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("--instance \"\" is not 1 to 128 visible characters without spaces"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_nats_is_a_warning_and_its_return_is_logged_once() {
    let mut nats = NatsServer::start();
    let (backend, _) = ping_backend().await;
    let config = nats_tap_config(backend.addr(), &nats.url(), "");
    let (proxy, _file) = support::start_with_config(&config, 1);
    if !proxy
        .startup
        .iter()
        .any(|l| l.contains("NATS tap stream ready"))
    {
        support::wait_for_log(&proxy, "NATS tap stream ready");
    }
    nats.stop();
    let lost = support::wait_for_log(&proxy, "the tap lost its connection to NATS");
    assert!(lost.contains("\"level\":\"WARN\""), "{lost}");
    nats.restart();
    let back = support::wait_for_log(&proxy, "the tap reconnected to NATS");
    assert!(back.contains("\"level\":\"INFO\""), "{back}");
}
