//! Admission limits: a route's `rate_limit` and `max_in_flight_per_peer`, a cluster's
//! `max_in_flight`. Exact counts of refused calls under a burst, none of them reaching the
//! backend.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use grpcproxy_testing::raw::{frames_body, grpc_frame, header_map, RawClient, RawResponse};
use http::HeaderMap;
use http_body::Frame;
use support::scripted::{scripted, Answer};

fn config(backend: std::net::SocketAddr, route_extra: &str, cluster_extra: &str) -> String {
    support::one_route_config("backend", &[backend], route_extra, cluster_extra)
}

async fn unary(client: &RawClient, headers: HeaderMap) -> RawResponse {
    let body = frames_body(vec![Frame::data(grpc_frame(false, b"hello"))]);
    client.call("/limits.Test/Unary", headers, body).await
}

/// How many calls ended with each `grpc-status`.
fn by_status(responses: &[RawResponse]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for response in responses {
        *counts
            .entry(response.grpc_status().unwrap_or("none").to_owned())
            .or_default() += 1;
    }
    counts
}

/// `n` calls at once from one client; every response.
async fn concurrent(client: &Arc<RawClient>, n: usize) -> Vec<RawResponse> {
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { unary(&client, HeaderMap::new()).await })
        })
        .collect();
    let mut responses = Vec::new();
    for task in tasks {
        responses.push(task.await.unwrap());
    }
    responses
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_admits_its_burst_and_refuses_the_rest_with_pushback() {
    let (backend, tries) = scripted(|_| Answer::Echo).await;
    let limit = r#"rate_limit = { per_second = 1, burst = 5 }"#;
    let (proxy, _file) = support::start_with_config(&config(backend.addr(), limit, ""), 1);
    let client = RawClient::connect(proxy.listening[0]).await;
    let mut responses = Vec::new();
    for _ in 0..20 {
        responses.push(unary(&client, HeaderMap::new()).await);
    }
    let counts = by_status(&responses);
    assert_eq!(counts.get("0"), Some(&5), "{counts:?}");
    assert_eq!(counts.get("8"), Some(&15), "{counts:?}");
    assert_eq!(
        tries.lock().unwrap().len(),
        5,
        "refused calls never reach the backend"
    );
    let refused = responses
        .iter()
        .find(|r| r.grpc_status() == Some("8"))
        .unwrap();
    assert!(refused.trailers_only);
    let pushback: u64 = refused.headers["grpc-retry-pushback-ms"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=1000).contains(&pushback), "pushback {pushback} ms");
    support::wait_for_metric(
        proxy.admin.unwrap(),
        r#"grpcproxy_rate_limited_total{route="r"} 15"#,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_by_header_gives_each_value_its_own_burst() {
    let (backend, tries) = scripted(|_| Answer::Echo).await;
    let limit = r#"rate_limit = { per_second = 1, burst = 2, key = "header:x-tenant" }"#;
    let (proxy, _file) = support::start_with_config(&config(backend.addr(), limit, ""), 1);
    let client = RawClient::connect(proxy.listening[0]).await;
    for tenant in ["a", "b"] {
        let mut responses = Vec::new();
        for _ in 0..5 {
            responses.push(unary(&client, header_map(&[("x-tenant", tenant)])).await);
        }
        let counts = by_status(&responses);
        assert_eq!(counts.get("0"), Some(&2), "tenant {tenant}: {counts:?}");
        assert_eq!(counts.get("8"), Some(&3), "tenant {tenant}: {counts:?}");
    }
    assert_eq!(tries.lock().unwrap().len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_cluster_sheds_calls_with_unavailable() {
    let (backend, tries) = scripted(|_| Answer::SlowEcho(Duration::from_millis(600))).await;
    let (proxy, _file) =
        support::start_with_config(&config(backend.addr(), "", "max_in_flight = 3"), 1);
    let client = Arc::new(RawClient::connect(proxy.listening[0]).await);
    let responses = concurrent(&client, 10).await;
    let counts = by_status(&responses);
    assert_eq!(counts.get("0"), Some(&3), "{counts:?}");
    assert_eq!(counts.get("14"), Some(&7), "{counts:?}");
    assert_eq!(tries.lock().unwrap().len(), 3);
    let shed = responses
        .iter()
        .find(|r| r.grpc_status() == Some("14"))
        .unwrap();
    let message = shed.headers["grpc-message"].to_str().unwrap();
    assert!(message.contains("max_in_flight"), "{message}");
    support::wait_for_metric(
        proxy.admin.unwrap(),
        r#"grpcproxy_cluster_shed_total{cluster="backend"} 7"#,
    );
    // Once the calls are over, the cluster takes calls again.
    let response = unary(&client, HeaderMap::new()).await;
    assert_eq!(response.grpc_status(), Some("0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_may_hold_only_its_share_of_calls() {
    let (backend, tries) = scripted(|_| Answer::SlowEcho(Duration::from_millis(600))).await;
    let (proxy, _file) =
        support::start_with_config(&config(backend.addr(), "max_in_flight_per_peer = 2", ""), 1);
    let client = Arc::new(RawClient::connect(proxy.listening[0]).await);
    let responses = concurrent(&client, 6).await;
    let counts = by_status(&responses);
    assert_eq!(counts.get("0"), Some(&2), "{counts:?}");
    assert_eq!(counts.get("8"), Some(&4), "{counts:?}");
    assert_eq!(tries.lock().unwrap().len(), 2);
    support::wait_for_metric(
        proxy.admin.unwrap(),
        r#"grpcproxy_peer_limited_total{route="r"} 4"#,
    );
    let response = unary(&client, HeaderMap::new()).await;
    assert_eq!(
        response.grpc_status(),
        Some("0"),
        "the client's calls are counted off"
    );
}
