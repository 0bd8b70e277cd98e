//! Endpoint health: active checks take endpoints out and back; a backend killed under load
//! costs at most the calls in flight on it.

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use grpcproxy_testing::pb::PingRequest;
use grpcproxy_testing::ping::SERVED_BY_KEY;
use grpcproxy_testing::serve::{health_backend, ping_client};
use tonic_health::ServingStatus;

fn served_by<T>(reply: &tonic::Response<T>) -> String {
    reply
        .metadata()
        .get(SERVED_BY_KEY)
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_mark_an_endpoint_down_and_up_again() {
    let (a, a_health) = health_backend("a").await;
    let (b, b_health) = health_backend("b").await;
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("access.log");
    let config = format!(
        r#"
[admin]
address = "127.0.0.1:0"
[access_log]
path = "{log}"
[[listeners]]
address = "127.0.0.1:0"
[[routes]]
cluster = "pair"
[clusters.pair]
endpoints = ["{a}", "{b}"]
balance = "round_robin"
health_check = {{ interval = "50ms", timeout = "500ms", unhealthy_threshold = 2, healthy_threshold = 2 }}
panic_threshold = 0
"#,
        a = a.addr(),
        b = b.addr(),
        log = log_path.display(),
    );
    let (proxy, _file) = support::start_with_config(&config, 1);
    let admin = proxy.admin.unwrap();
    let mut client = ping_client(proxy.listening[0]).await;
    let b_healthy = |up: u8| {
        format!(
            r#"grpcproxy_endpoint_healthy{{cluster="pair",endpoint="{}"}} {up}"#,
            b.addr()
        )
    };

    let mut seen = HashMap::<String, usize>::new();
    for _ in 0..10 {
        *seen
            .entry(served_by(
                &client.ping(PingRequest::default()).await.unwrap(),
            ))
            .or_default() += 1;
    }
    assert_eq!(seen.get("b"), Some(&5), "{seen:?}");

    b_health
        .set_service_status("", ServingStatus::NotServing)
        .await;
    support::wait_for_metric(admin, &b_healthy(0));
    for _ in 0..20 {
        assert_eq!(
            served_by(&client.ping(PingRequest::default()).await.unwrap()),
            "a"
        );
    }

    // With every endpoint down, calls get UNAVAILABLE at once.
    a_health
        .set_service_status("", ServingStatus::NotServing)
        .await;
    support::wait_for_metric(
        admin,
        &format!(
            r#"grpcproxy_endpoint_healthy{{cluster="pair",endpoint="{}"}} 0"#,
            a.addr()
        ),
    );
    let started = Instant::now();
    for _ in 0..5 {
        let status = client.ping(PingRequest::default()).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert_eq!(status.message(), "no healthy endpoint in cluster pair");
    }
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    let (_, clusters) = support::http_get(admin, "/clusters");
    let clusters: serde_json::Value = serde_json::from_str(&clusters).unwrap();
    let pair = &clusters["clusters"][0];
    assert_eq!(pair["panic"], false, "{pair}");
    for endpoint in pair["endpoints"].as_array().unwrap() {
        assert_eq!(endpoint["health_check"], "failing", "{endpoint}");
        assert_eq!(endpoint["available"], false, "{endpoint}");
    }
    // Answered by the proxy, still counted under the route, and logged.
    support::wait_for_metric(
        admin,
        r#"grpcproxy_requests_total{route="route-0",cluster="pair",method="/grpcproxy.testing.TestService/Ping",grpc_status="14"} 5"#,
    );
    let log = support::access_log_lines(&log_path, 35);
    assert_eq!(log.len(), 35, "one line per call: {log:?}");
    let refused: Vec<&serde_json::Value> = log.iter().filter(|l| l["grpc_status"] == 14).collect();
    assert_eq!(refused.len(), 5, "{log:?}");
    for line in refused {
        assert_eq!(line["route"], "route-0");
        assert_eq!(line["cluster"], "pair");
        assert!(line["endpoint"].is_null(), "{line}");
        assert_eq!(line["grpc_message"], "no healthy endpoint in cluster pair");
    }
    a_health
        .set_service_status("", ServingStatus::Serving)
        .await;
    support::wait_for_metric(
        admin,
        &format!(
            r#"grpcproxy_endpoint_healthy{{cluster="pair",endpoint="{}"}} 1"#,
            a.addr()
        ),
    );
    b_health
        .set_service_status("", ServingStatus::Serving)
        .await;
    support::wait_for_metric(admin, &b_healthy(1));
    let mut seen = HashMap::<String, usize>::new();
    for _ in 0..10 {
        *seen
            .entry(served_by(
                &client.ping(PingRequest::default()).await.unwrap(),
            ))
            .or_default() += 1;
    }
    assert_eq!(seen.get("b"), Some(&5), "b takes calls again: {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_killed_under_load_costs_only_its_in_flight_calls() {
    const WORKERS: usize = 8;
    let (a, _) = health_backend("a").await;
    let (b, _) = health_backend("b").await;
    let (c, _) = health_backend("c").await;
    let config = format!(
        "[admin]\naddress = \"127.0.0.1:0\"\n[[listeners]]\naddress = \"127.0.0.1:0\"\n[[routes]]\ncluster = \"all\"\n\
         [clusters.all]\nendpoints = [\"{}\", \"{}\", \"{}\"]\n",
        a.addr(),
        b.addr(),
        c.addr()
    );
    let (proxy, _file) = support::start_with_config(&config, 1);
    let client = ping_client(proxy.listening[0]).await;
    let started = Instant::now();
    let run_for = Duration::from_millis(2500);
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..WORKERS {
        let mut client = client.clone();
        workers.spawn(async move {
            let mut outcomes = Vec::new();
            while started.elapsed() < run_for {
                let at = started.elapsed();
                let result = client
                    .ping(PingRequest {
                        sleep_ms: 10,
                        ..Default::default()
                    })
                    .await;
                outcomes.push((
                    at,
                    result
                        .map(|r| served_by(&r))
                        .map_err(|s| format!("{:?}: {}", s.code(), s.message())),
                ));
            }
            outcomes
        });
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    let killed_at = started.elapsed();
    c.kill();

    let mut outcomes = Vec::new();
    while let Some(worker) = workers.join_next().await {
        outcomes.extend(worker.unwrap());
    }
    let failed: Vec<_> = outcomes.iter().filter(|(_, r)| r.is_err()).collect();
    let after: Vec<_> = outcomes
        .iter()
        .filter(|(at, _)| *at > killed_at + Duration::from_millis(100))
        .collect();
    println!(
        "{} calls, {} failed after killing c at {killed_at:?}: {:?}",
        outcomes.len(),
        failed.len(),
        failed
            .iter()
            .map(|(_, r)| r.as_ref().unwrap_err())
            .collect::<Vec<_>>()
    );
    assert!(
        outcomes
            .iter()
            .filter(|(at, _)| *at + Duration::from_millis(100) < killed_at)
            .all(|(_, r)| r.is_ok()),
        "no failures among calls that ended before the kill"
    );
    assert!(
        failed.len() <= WORKERS,
        "at most the calls in flight on c may fail, {} did",
        failed.len()
    );
    assert!(
        !after.is_empty()
            && after
                .iter()
                .all(|(_, r)| matches!(r, Ok(name) if name != "c")),
        "traffic moved to a and b"
    );
    let served: HashMap<&str, usize> = after.iter().fold(HashMap::new(), |mut m, (_, r)| {
        *m.entry(r.as_ref().unwrap().as_str()).or_default() += 1;
        m
    });
    assert!(
        served.get("a").is_some_and(|n| *n > 10) && served.get("b").is_some_and(|n| *n > 10),
        "{served:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_endpoint_is_never_ejected_and_serves_as_soon_as_it_is_back() {
    let (backend, _) = health_backend("a").await;
    let addr = backend.addr();
    let outlier = r#"outlier = { consecutive_failures = 2, base_ejection = "30s" }"#;
    let config = support::one_backend_config(addr, outlier);
    let (proxy, _file) = support::start_with_config(&config, 1);
    let admin = proxy.admin.unwrap();
    let mut client = ping_client(proxy.listening[0]).await;
    client.ping(PingRequest::default()).await.unwrap();
    backend.stop();
    tokio::time::sleep(Duration::from_millis(100)).await;
    for _ in 0..10 {
        let status = client.ping(PingRequest::default()).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert_ne!(status.message(), "no healthy endpoint in cluster backend");
    }
    let (status, clusters) = support::http_get(admin, "/clusters");
    assert_eq!(status, 200);
    let clusters: serde_json::Value = serde_json::from_str(&clusters).unwrap();
    let endpoint = &clusters["clusters"][0]["endpoints"][0];
    assert_eq!(clusters["clusters"][0]["name"], "backend");
    assert_eq!(endpoint["address"], addr.to_string());
    assert_eq!(endpoint["available"], true, "{endpoint}");
    assert_eq!(endpoint["ejections"], 0, "{endpoint}");
    assert_eq!(endpoint["health_check"], "off");
    assert!(
        endpoint["connect_failures"].as_u64().unwrap() >= 1,
        "{endpoint}"
    );
    assert_eq!(endpoint["in_flight"], 0, "{endpoint}");
    let (_, metrics) = support::http_get(admin, "/metrics");
    let ejections =
        format!(r#"grpcproxy_endpoint_ejections_total{{cluster="backend",endpoint="{addr}"}} 0"#);
    assert!(metrics.lines().any(|l| l == ejections), "{metrics}");

    // Back on the same address: served at once, not after a 30 s ejection.
    let routes = tonic::service::Routes::new(grpcproxy_testing::serve::ping_server(
        grpcproxy_testing::PingService::named("a"),
    ));
    let _back = grpcproxy_testing::TestServer::start_on(addr, routes).await;
    let started = Instant::now();
    let reply = loop {
        match client.ping(PingRequest::default()).await {
            Ok(reply) => break reply,
            Err(status) => {
                assert!(started.elapsed() < Duration::from_secs(2), "{status:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    assert_eq!(served_by(&reply), "a");
}
