//! `server.worker_threads` and `--worker-threads` set how many threads run calls: per-core
//! worker threads of their own (`grpcproxy-wN`), from a config file and in quick mode.

mod support;

use std::time::Duration;

/// The proxy's threads named as call workers once their count is stable: threads take
/// their name as they start, so the count is read until it reaches `expected`, then again
/// a little later.
fn workers(proxy: &support::Proxy, named: fn(&str) -> bool, expected: usize) -> usize {
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while named_workers(proxy, named) != expected && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    named_workers(proxy, named)
}

fn named_workers(proxy: &support::Proxy, named: fn(&str) -> bool) -> usize {
    let tasks = format!("/proc/{}/task", proxy.child.id());
    std::fs::read_dir(tasks)
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.unwrap().path().join("comm")).ok())
        .filter(|name| named(name.trim()))
        .count()
}

fn per_core(name: &str) -> bool {
    name.starts_with("grpcproxy-w")
}

fn tokio_worker(name: &str) -> bool {
    name == "tokio-rt-worker"
}

#[test]
fn the_config_and_the_flag_set_the_worker_count() {
    let config = "[[listeners]]\naddress = \"127.0.0.1:0\"\n[server]\nworker_threads = 3\n";
    let (mut proxy, _file) = support::start_with_config(config, 1);
    assert_eq!(workers(&proxy, per_core, 3), 3);
    assert_eq!(
        named_workers(&proxy, tokio_worker),
        0,
        "the main thread runs the rest"
    );
    support::sigterm(&proxy);
    assert!(support::wait_exit(&mut proxy, Duration::from_secs(10)).success());

    let mut quick = support::start(
        &[
            "--worker-threads",
            "1",
            "--listen",
            "127.0.0.1:0",
            "--to",
            "http://127.0.0.1:1",
        ],
        1,
    );
    // Quick mode runs as a one-route configuration: per-core workers too.
    assert_eq!(workers(&quick, per_core, 1), 1);
    assert_eq!(named_workers(&quick, tokio_worker), 0);
    support::sigterm(&quick);
    assert!(support::wait_exit(&mut quick, Duration::from_secs(10)).success());
}

/// Starts a second binary on `config` and returns its exit code and standard error once
/// it exits (within 10 s), or `None` if it kept running (and was killed).
fn second_instance(config: &str) -> (Option<i32>, String) {
    use std::io::Read;
    let file = support::write_config(config);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_grpcproxy"))
        .args(["--config", file.path().to_str().unwrap()])
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (code, stderr)
}

#[test]
fn a_second_process_cannot_take_a_listener_unless_it_opts_in() {
    let config = |port: u16, reuse: bool| {
        format!("[[listeners]]\naddress = \"127.0.0.1:{port}\"\n[server]\nworker_threads = 2\nreuse_port = {reuse}\n")
    };
    let (first, _file) = support::start_with_config(&config(0, false), 1);
    let port = first.listening[0].port();
    let (code, stderr) = second_instance(&config(port, false));
    assert_eq!(code, Some(1), "the second process must fail: {stderr}");
    assert!(
        stderr.contains("address in use: another process listens there (set server.reuse_port = true to share it on purpose)"),
        "{stderr}"
    );
    // A hand-off: the new process opts in and listens beside the old one.
    let (second, _file2) = support::start_with_config(&config(port, true), 1);
    assert_eq!(second.listening[0], first.listening[0]);
}
