//! p2c and round robin spread calls evenly over a cluster's endpoints.

mod support;

use std::collections::HashMap;

use grpcproxy_testing::pb::test_service_server::TestServiceServer;
use grpcproxy_testing::pb::PingRequest;
use grpcproxy_testing::ping::SERVED_BY_KEY;
use grpcproxy_testing::serve::ping_client;
use grpcproxy_testing::{PingService, TestServer};
use tonic::service::Routes;

const CALLS: usize = 3000;
const WORKERS: usize = 16;

async fn spread(balance: &str) -> HashMap<String, usize> {
    let mut backends = Vec::new();
    for name in ["a", "b", "c"] {
        backends.push(
            TestServer::start(Routes::new(TestServiceServer::new(PingService::named(
                name,
            ))))
            .await,
        );
    }
    let endpoints: Vec<String> = backends
        .iter()
        .map(|b| format!("\"{}\"", b.addr()))
        .collect();
    let config = format!(
        "[[listeners]]\naddress = \"127.0.0.1:0\"\n[[routes]]\ncluster = \"all\"\n\
         [clusters.all]\nendpoints = [{}]\nbalance = \"{balance}\"\n",
        endpoints.join(", ")
    );
    let (proxy, _file) = support::start_with_config(&config, 1);
    let client = ping_client(proxy.listening[0]).await;
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..WORKERS {
        let mut client = client.clone();
        workers.spawn(async move {
            let mut counts: HashMap<String, usize> = HashMap::new();
            for _ in 0..CALLS / WORKERS {
                let reply = client
                    .ping(PingRequest::default())
                    .await
                    .expect("every call succeeds");
                let name = reply
                    .metadata()
                    .get(SERVED_BY_KEY)
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .to_owned();
                *counts.entry(name).or_default() += 1;
            }
            counts
        });
    }
    let mut total: HashMap<String, usize> = HashMap::new();
    while let Some(counts) = workers.join_next().await {
        for (name, n) in counts.unwrap() {
            *total.entry(name).or_default() += n;
        }
    }
    total
}

fn assert_even(counts: &HashMap<String, usize>) {
    let calls: usize = counts.values().sum();
    assert_eq!(calls, CALLS / WORKERS * WORKERS);
    let even = calls as f64 / 3.0;
    for name in ["a", "b", "c"] {
        let n = counts.get(name).copied().unwrap_or(0) as f64;
        assert!(
            (n - even).abs() <= even * 0.2,
            "{name} got {n} of {calls} calls: {counts:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p2c_spreads_3000_calls_within_20_percent() {
    let counts = spread("p2c").await;
    println!("p2c: {counts:?}");
    assert_even(&counts);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_spreads_3000_calls_within_20_percent() {
    let counts = spread("round_robin").await;
    println!("round_robin: {counts:?}");
    assert_even(&counts);
}
