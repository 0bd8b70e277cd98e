//! SIGHUP reloads routes and clusters: in-flight calls finish on the old configuration, new
//! calls use the new one; an invalid file keeps the running configuration.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use grpcproxy_testing::pb::test_service_server::TestServiceServer;
use grpcproxy_testing::pb::PingRequest;
use grpcproxy_testing::ping::SERVED_BY_KEY;
use grpcproxy_testing::serve::ping_client;
use grpcproxy_testing::{PingService, TestServer};
use support::http_get;
use tonic::service::Routes;

fn sighup(proxy: &support::Proxy) {
    let status = Command::new("kill")
        .args(["-HUP", &proxy.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

fn wait_for_log(proxy: &support::Proxy, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(line) = proxy.logs.recv_timeout(Duration::from_millis(100)) {
            if line.contains(needle) {
                return line;
            }
        }
    }
    panic!("no log line with {needle:?} within 5 s");
}

fn config(a: std::net::SocketAddr, b: std::net::SocketAddr, with_b_route: bool) -> String {
    let b_route = if with_b_route {
        "[[routes]]\nname = \"lists\"\nmatch.method = \"PingList\"\ncluster = \"b\"\n"
    } else {
        ""
    };
    format!(
        "[admin]\naddress = \"127.0.0.1:0\"\n[[listeners]]\naddress = \"127.0.0.1:0\"\n{b_route}\
         [[routes]]\nname = \"all\"\ncluster = \"a\"\n\
         [clusters.a]\nendpoints = [\"{a}\"]\n[clusters.b]\nendpoints = [\"{b}\"]\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_adds_a_route_while_a_stream_stays_open_and_rejects_a_bad_file() {
    let a = TestServer::start(Routes::new(TestServiceServer::new(PingService::named("a")))).await;
    let b = TestServer::start(Routes::new(TestServiceServer::new(PingService::named("b")))).await;
    let (proxy, file) = support::start_with_config(&config(a.addr(), b.addr(), false), 1);
    let admin = proxy.admin.unwrap();
    let mut client = ping_client(proxy.listening[0]).await;

    // A stream opened before the reload (200 ms between messages: ~2 s in all).
    let open = client
        .ping_list(PingRequest {
            value: "before".into(),
            sleep_ms: 200,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(open.metadata().get(SERVED_BY_KEY).unwrap(), "a");
    let mut open = open.into_inner();
    assert_eq!(open.message().await.unwrap().unwrap().counter, 0);

    std::fs::write(file.path(), config(a.addr(), b.addr(), true)).unwrap();
    sighup(&proxy);
    wait_for_log(&proxy, "configuration reloaded");

    // The new route works...
    let after = client.ping_list(PingRequest::default()).await.unwrap();
    assert_eq!(after.metadata().get(SERVED_BY_KEY).unwrap(), "b");
    assert_eq!(
        client
            .ping(PingRequest::default())
            .await
            .unwrap()
            .metadata()
            .get(SERVED_BY_KEY)
            .unwrap(),
        "a"
    );
    // The unchanged cluster was kept: no new connection to its backend.
    assert_eq!(
        a.connections_accepted(),
        1,
        "cluster a kept its connection across the reload"
    );
    // ...and the stream opened before it completes on the old configuration.
    let mut received = 1;
    while let Some(message) = open
        .message()
        .await
        .expect("the open stream is not disturbed")
    {
        assert_eq!(message.counter, received);
        received += 1;
    }
    assert_eq!(received, 10);

    // An invalid file: rejected, logged, counted; the running configuration stays.
    std::fs::write(file.path(), "[[routes]]\ncluster = \"nope\"\n").unwrap();
    sighup(&proxy);
    let line = wait_for_log(&proxy, "reload rejected");
    assert!(line.contains("missing field `listeners`"), "{line}");
    let reply = client.ping_list(PingRequest::default()).await.unwrap();
    assert_eq!(
        reply.metadata().get(SERVED_BY_KEY).unwrap(),
        "b",
        "the previous configuration still routes"
    );

    let (_, metrics) = http_get(admin, "/metrics");
    assert!(
        metrics
            .lines()
            .any(|l| l == r#"grpcproxy_config_reloads_total{result="ok"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics
            .lines()
            .any(|l| l == r#"grpcproxy_config_reloads_total{result="error"} 1"#),
        "{metrics}"
    );
    let (_, shown) = http_get(admin, "/config");
    assert!(
        shown.contains("lists"),
        "/config shows the reloaded configuration:\n{shown}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_config_reloads_when_the_file_changes() {
    let a = TestServer::start(Routes::new(TestServiceServer::new(PingService::named("a")))).await;
    let b = TestServer::start(Routes::new(TestServiceServer::new(PingService::named("b")))).await;
    let config = |target: &str| {
        format!(
            "[server]\nwatch_config = true\n[[listeners]]\naddress = \"127.0.0.1:0\"\n[[routes]]\ncluster = \"{target}\"\n\
             [clusters.a]\nendpoints = [\"{}\"]\n[clusters.b]\nendpoints = [\"{}\"]\n",
            a.addr(),
            b.addr()
        )
    };
    let (proxy, file) = support::start_with_config(&config("a"), 1);
    let mut client = ping_client(proxy.listening[0]).await;
    assert_eq!(
        client
            .ping(PingRequest::default())
            .await
            .unwrap()
            .metadata()
            .get(SERVED_BY_KEY)
            .unwrap(),
        "a"
    );
    std::thread::sleep(Duration::from_millis(50));
    std::fs::write(file.path(), config("b")).unwrap(); // no signal
    wait_for_log(&proxy, "configuration reloaded");
    assert_eq!(
        client
            .ping(PingRequest::default())
            .await
            .unwrap()
            .metadata()
            .get(SERVED_BY_KEY)
            .unwrap(),
        "b"
    );
}

/// The lines logged up to and including the first that contains `needle` (within 5 s).
fn logs_until(proxy: &support::Proxy, needle: &str) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut lines = Vec::new();
    while Instant::now() < deadline {
        if let Ok(line) = proxy.logs.recv_timeout(Duration::from_millis(100)) {
            let done = line.contains(needle);
            lines.push(line);
            if done {
                return lines;
            }
        }
    }
    panic!("no log line with {needle:?} within 5 s: {lines:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_and_restart_warnings_follow_what_runs() {
    let a = TestServer::start(Routes::new(TestServiceServer::new(PingService::named("a")))).await;
    let original = config(a.addr(), a.addr(), false);
    let (proxy, file) = support::start_with_config(&original, 1);
    let admin = proxy.admin.unwrap();
    let other_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let moved = original.replacen(
        "[[listeners]]\naddress = \"127.0.0.1:0\"",
        &format!("[[listeners]]\naddress = \"127.0.0.1:{other_port}\""),
        1,
    );
    assert_ne!(moved, original);

    // The listener moves in the file: a warning, and /config still shows what runs.
    std::fs::write(file.path(), &moved).unwrap();
    sighup(&proxy);
    let lines = logs_until(&proxy, "configuration reloaded");
    let warned: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("next restart"))
        .collect();
    assert_eq!(warned.len(), 1, "{lines:?}");
    assert!(
        warned[0].contains("\"section\":\"listeners\""),
        "{}",
        warned[0]
    );
    let (_, shown) = http_get(admin, "/config");
    assert!(!shown.contains(&other_port.to_string()), "{shown}");
    assert!(shown.contains("address = \"127.0.0.1:0\""), "{shown}");
    assert!(
        shown.starts_with(
            "# The running configuration. Changed in the file, waiting for a restart: listeners\n"
        ),
        "{shown}"
    );

    // Back to what runs: no warning, nothing pending.
    std::fs::write(file.path(), &original).unwrap();
    sighup(&proxy);
    let lines = logs_until(&proxy, "configuration reloaded");
    assert!(
        !lines.iter().any(|l| l.contains("next restart")),
        "{lines:?}"
    );
    let (_, shown) = http_get(admin, "/config");
    assert!(!shown.starts_with('#'), "{shown}");
    assert!(shown.contains("address = \"127.0.0.1:0\""), "{shown}");
}
