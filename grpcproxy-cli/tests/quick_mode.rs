//! `grpcproxy --listen ADDR --to URL`: the built binary forwards calls and stops cleanly.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use grpcproxy_testing::pb::PingRequest;
use grpcproxy_testing::serve::{ping_backend, ping_client};

/// The binary, killed if the test fails before it stops.
struct Proxy(Child);

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the binary and reads its log until it names the address it listens on.
fn start(
    args: &[&str],
) -> (
    Proxy,
    std::net::SocketAddr,
    std::sync::mpsc::Receiver<String>,
) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_grpcproxy"))
        .args(args)
        .args(["--log-format", "json"])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("the grpcproxy binary starts");
    let stderr = child.stderr.take().unwrap();
    let (lines_tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let proxy = Proxy(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let Ok(line) = lines.recv_timeout(Duration::from_millis(100)) else {
            continue;
        };
        if line.contains("grpcproxy listening") {
            let start = line
                .find("\"listen\":\"")
                .expect("the listen address is logged")
                + 10;
            let end = start + line[start..].find('"').unwrap();
            return (proxy, line[start..end].parse().unwrap(), lines);
        }
    }
    panic!("grpcproxy did not log its listener within 10 s");
}

fn sigterm(proxy: &Proxy) {
    let status = Command::new("kill")
        .args(["-TERM", &proxy.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

fn wait_exit(proxy: &mut Proxy, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = proxy.0.try_wait().unwrap() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "grpcproxy did not exit within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_calls_and_exits_cleanly_on_sigterm() {
    let (backend, service) = ping_backend().await;
    let (mut proxy, addr, _logs) = start(&["--listen", "127.0.0.1:0", "--to", &backend.url()]);
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
