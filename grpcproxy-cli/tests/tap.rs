//! The `[tap]` section: the binary records every proxied call (here to a file).

mod support;

use std::time::Duration;

use grpcproxy::mq::{wire, FileQueue};
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
    let (mut proxy, _config) = support::start_with_config(&config, 1);
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
