//! `server.worker_threads` and `--worker-threads` set how many threads run calls.

mod support;

use std::time::Duration;

/// The proxy's worker threads once their count is stable: threads take their name as they
/// start, so the count is read until it reaches `expected`, then again a little later.
fn workers(proxy: &support::Proxy, expected: usize) -> usize {
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while named_workers(proxy) != expected && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    named_workers(proxy)
}

/// The proxy's threads named by tokio as call workers.
fn named_workers(proxy: &support::Proxy) -> usize {
    let tasks = format!("/proc/{}/task", proxy.child.id());
    std::fs::read_dir(tasks)
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.unwrap().path().join("comm")).ok())
        .filter(|name| name.trim() == "tokio-rt-worker")
        .count()
}

#[test]
fn the_config_and_the_flag_set_the_worker_count() {
    let config = "[[listeners]]\naddress = \"127.0.0.1:0\"\n[server]\nworker_threads = 3\n";
    let (mut proxy, _file) = support::start_with_config(config, 1);
    assert_eq!(workers(&proxy, 3), 3);
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
    assert_eq!(workers(&quick, 1), 1);
    support::sigterm(&quick);
    assert!(support::wait_exit(&mut quick, Duration::from_secs(10)).success());
}
