//! `grpcproxy --listen ADDR --to URL`: the built binary forwards calls and stops cleanly.

mod support;

use std::process::Command;
use std::time::Duration;

use grpcproxy_testing::pb::PingRequest;
use grpcproxy_testing::serve::{ping_backend, ping_client};
use support::{sigterm, start, wait_exit};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_calls_and_exits_cleanly_on_sigterm() {
    let (backend, service) = ping_backend().await;
    let mut proxy = start(&["--listen", "127.0.0.1:0", "--to", &backend.url()], 1);
    let addr = proxy.listening[0];
    let mut client = ping_client(addr).await;
    let reply = client
        .ping(PingRequest {
            value: "via binary".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(reply.get_ref().value, "via binary");
    assert!(service.events().last_metadata().is_some());

    // A stream open at SIGTERM finishes: the server drains in-flight calls.
    let mut stream = client
        .ping_list(PingRequest {
            value: "drain".into(),
            sleep_ms: 50,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    sigterm(&proxy);
    let mut received = 0;
    while let Some(message) = stream
        .message()
        .await
        .expect("the open stream completes during drain")
    {
        assert_eq!(message.counter, received);
        received += 1;
    }
    assert_eq!(received, grpcproxy_testing::ping::LIST_RESPONSES);
    drop(client);
    let status = wait_exit(&mut proxy, Duration::from_secs(10));
    assert!(status.success(), "exit status {status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_is_ignored_and_a_second_sigterm_exits_at_once() {
    let (backend, _service) = ping_backend().await;
    let mut proxy = start(&["--listen", "127.0.0.1:0", "--to", &backend.url()], 1);
    let mut client = ping_client(proxy.listening[0]).await;
    support::signal(&proxy, "HUP");
    support::wait_for_log(&proxy, "quick mode has no configuration to reload");
    assert!(
        proxy.child.try_wait().unwrap().is_none(),
        "SIGHUP ended quick mode"
    );
    client
        .ping(PingRequest::default())
        .await
        .expect("still serving after SIGHUP");

    // A stream that would take 10 s holds the drain; a second SIGTERM does not wait for it.
    let _stream = grpcproxy_testing::serve::open_slow_list(&mut client).await;
    sigterm(&proxy);
    support::wait_for_log(&proxy, "SIGTERM received; draining");
    assert!(
        proxy.child.try_wait().unwrap().is_none(),
        "the drain waits for the stream"
    );
    sigterm(&proxy);
    let status = wait_exit(&mut proxy, Duration::from_secs(3));
    assert_eq!(status.code(), Some(130), "{status:?}");
}

#[test]
fn bad_backend_url_is_a_clear_error() {
    let output = Command::new(env!("CARGO_BIN_EXE_grpcproxy"))
        .args(["--listen", "127.0.0.1:0", "--to", "127.0.0.1:50052"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--to 127.0.0.1:50052: upstream URL \"127.0.0.1:50052\" must start with http:// (h2c) or https:// (TLS)"),
        "{stderr}"
    );
}

#[test]
fn listen_without_to_is_a_usage_error() {
    let output = Command::new(env!("CARGO_BIN_EXE_grpcproxy"))
        .args(["--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--to <TO>"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_backend_connections_are_warned_about_without_h2_noise_or_colours() {
    // A backend address with nothing listening (yet).
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_grpcproxy"))
        .args(["--listen", "127.0.0.1:0", "--to", &format!("http://{addr}")])
        .args(["--log-level", "debug", "--log-format", "human"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Killed however the test ends.
    let mut child = support::Proxy {
        child,
        listening: Vec::new(),
        admin: None,
        startup: Vec::new(),
        logs: std::sync::mpsc::channel().1,
    };
    let stderr = child.child.stderr.take().unwrap();
    let (lines_tx, lines) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = lines_tx.send(line);
        }
    });
    let listen = loop {
        let line = lines.recv_timeout(Duration::from_secs(10)).unwrap();
        if let Some(at) = line.find("listen=") {
            break line[at + 7..].split_whitespace().next().unwrap().to_owned();
        }
    };
    let mut client = ping_client(listen.parse().unwrap()).await;
    for _ in 0..5 {
        let status = client.ping(PingRequest::default()).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unavailable);
    }
    // The backend comes up on that address.
    let routes = tonic::service::Routes::new(grpcproxy_testing::serve::ping_server(
        grpcproxy_testing::PingService::new(),
    ));
    let _backend = grpcproxy_testing::TestServer::start_on(addr, routes).await;
    client.ping(PingRequest::default()).await.unwrap();
    std::thread::sleep(Duration::from_millis(200));
    drop(child);
    let logged: Vec<String> = lines.try_iter().collect();
    let warnings: Vec<&String> = logged
        .iter()
        .filter(|l| l.contains("WARN") && l.contains("cannot connect to backend"))
        .collect();
    assert_eq!(
        warnings.len(),
        1,
        "one warning for 5 failures in 10 s: {logged:#?}"
    );
    assert!(
        warnings[0].contains(&format!("backend={addr}")),
        "{}",
        warnings[0]
    );
    assert!(
        logged
            .iter()
            .any(|l| l.contains("INFO") && l.contains("connected to backend again")),
        "{logged:#?}"
    );
    assert!(
        !logged.iter().any(|l| l.contains(" h2::")),
        "h2's debug lines: {logged:#?}"
    );
    assert!(
        !logged.iter().any(|l| l.contains('\u{1b}')),
        "colours in a pipe: {logged:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listen_name_is_resolved_and_a_bad_one_is_a_clear_error() {
    let (backend, _service) = ping_backend().await;
    let proxy = start(&["--listen", "localhost:0", "--to", &backend.url()], 1);
    assert!(
        proxy.listening[0].ip().is_loopback(),
        "{:?}",
        proxy.listening
    );
    let mut client = ping_client(proxy.listening[0]).await;
    client.ping(PingRequest::default()).await.unwrap();

    let output = Command::new(env!("CARGO_BIN_EXE_grpcproxy"))
        .args(["--listen", "nowhere", "--to", &backend.url()])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--listen nowhere: expected host:port"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_mode_has_an_access_log_and_an_admin_listener() {
    let (backend, _service) = ping_backend().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let mut proxy = start(
        &[
            "--listen",
            "127.0.0.1:0",
            "--to",
            &backend.url(),
            "--admin",
            "127.0.0.1:0",
            "--access-log",
            log.to_str().unwrap(),
        ],
        1,
    );
    let admin = proxy.admin.expect("the admin address is logged");
    let mut client = ping_client(proxy.listening[0]).await;
    client.ping(PingRequest::default()).await.unwrap();
    client.ping_error(PingRequest::default()).await.unwrap_err();
    let line = r#"grpcproxy_requests_total{route="quick",cluster="backend",method="/grpcproxy.testing.TestService/Ping",grpc_status="0"} 1"#;
    support::wait_for_metric(admin, line);
    let lines = support::access_log_lines(&log, 2);
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[1]["grpc_status"], 9);
    assert_eq!(lines[1]["endpoint"], backend.addr().to_string());
    let (status, clusters) = support::http_get(admin, "/clusters");
    assert_eq!(status, 200);
    assert!(clusters.contains(&backend.addr().to_string()), "{clusters}");
    sigterm(&proxy);
    assert!(wait_exit(&mut proxy, Duration::from_secs(10)).success());
}
