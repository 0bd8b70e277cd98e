//! Config routes send calls by service, method and header to the right cluster.

mod support;

use std::time::{Duration, Instant};

use grpcproxy_testing::pb::test_service_server::TestServiceServer;
use grpcproxy_testing::pb::PingRequest;
use grpcproxy_testing::ping::SERVED_BY_KEY;
use grpcproxy_testing::raw::{frames_body, RawClient};
use grpcproxy_testing::serve::ping_client;
use grpcproxy_testing::{PingService, TestServer};
use tonic::service::Routes;
use tonic::Code;

async fn named_backend(name: &str) -> (TestServer, PingService) {
    let service = PingService::named(name);
    let server = TestServer::start(Routes::new(TestServiceServer::new(service.clone()))).await;
    (server, service)
}

fn served_by<T>(response: &tonic::Response<T>) -> String {
    response
        .metadata()
        .get(SERVED_BY_KEY)
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_by_header_method_and_service_first_match_wins() {
    let (a, _) = named_backend("a").await;
    let (b, _) = named_backend("b").await;
    let (c, c_service) = named_backend("c").await;
    let config = format!(
        r#"
[[listeners]]
address = "127.0.0.1:0"

[[routes]]
name = "beta"
match.headers = [{{ name = "x-tenant", exact = "beta" }}]
cluster = "c"
request_metadata.set = {{ "x-routed-by" = "grpcproxy" }}
request_metadata.remove = ["x-secret"]
response_metadata.set = {{ "x-served-via" = "grpcproxy" }}
response_metadata.remove = ["test-client-header"]

[[routes]]
name = "lists"
match.service = "grpcproxy.testing.TestService"
match.method = "PingList"
cluster = "b"

[[routes]]
name = "testing"
match.service = "grpcproxy.testing.*"
cluster = "a"
max_timeout = "200ms"

[clusters.a]
endpoints = ["{a}"]
[clusters.b]
endpoints = ["{b}"]
[clusters.c]
endpoints = ["{c}"]
"#,
        a = a.addr(),
        b = b.addr(),
        c = c.addr()
    );
    let (proxy, _file) = support::start_with_config(&config, 1);
    let addr = proxy.listening[0];
    let mut client = ping_client(addr).await;

    // By service (glob).
    let reply = client.ping(PingRequest::default()).await.unwrap();
    assert_eq!(served_by(&reply), "a");
    // By method, ahead of the service route.
    let reply = client.ping_list(PingRequest::default()).await.unwrap();
    assert_eq!(served_by(&reply), "b");
    // By header, ahead of both; with metadata edits.
    let mut request = tonic::Request::new(PingRequest::default());
    request
        .metadata_mut()
        .insert("x-tenant", "beta".parse().unwrap());
    request
        .metadata_mut()
        .insert("x-secret", "s3cret".parse().unwrap());
    let reply = client.ping(request).await.unwrap();
    assert_eq!(served_by(&reply), "c");
    assert_eq!(reply.metadata().get("x-served-via").unwrap(), "grpcproxy");
    assert!(
        reply.metadata().get("test-client-header").is_none(),
        "removed from the response"
    );
    let seen = c_service.events().last_metadata().unwrap();
    assert_eq!(seen.get("x-routed-by").unwrap(), "grpcproxy");
    assert!(seen.get("x-secret").is_none());

    // No route: UNIMPLEMENTED, saying so.
    let raw = RawClient::connect(addr).await;
    let response = raw
        .call(
            "/other.Service/Method",
            Default::default(),
            frames_body(vec![]),
        )
        .await;
    assert_eq!(response.grpc_status(), Some("12"));
    assert_eq!(
        response.headers.get("grpc-message").unwrap(),
        "no%20route%20matched%20/other.Service/Method"
    );

    // The route's deadline cap: the proxy answers DEADLINE_EXCEEDED (the client set none).
    let started = Instant::now();
    let status = client
        .ping(PingRequest {
            sleep_ms: 3_000,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(
        started.elapsed() < Duration::from_millis(700),
        "{:?}",
        started.elapsed()
    );
}
