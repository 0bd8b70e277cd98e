//! `server.max_connection_age`: client connections are told to go (GOAWAY) at their age,
//! so that clients reconnect (and spread over replicas behind an L4 balancer).

mod support;

use std::time::Duration;

use grpcproxy_testing::raw::{frames_body, grpc_frame, RawClient};
use http::HeaderMap;
use http_body::Frame;
use support::scripted::{scripted, Answer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_closed_at_their_age_and_counted() {
    let (backend, _tries) = scripted(|_| Answer::Echo).await;
    let server = "[server]\nmax_connection_age = \"300ms\"\nmax_connection_age_jitter = 0.0";
    let config = support::one_route_config("backend", &[backend.addr()], "", server);
    let (proxy, _file) = support::start_with_config(&config, 1);
    let client = RawClient::connect(proxy.listening[0]).await;
    let body = frames_body(vec![Frame::data(grpc_frame(false, b"young"))]);
    let response = client.call("/age.Test/Unary", HeaderMap::new(), body).await;
    assert_eq!(response.grpc_status(), Some("0"));
    for _ in 0..200 {
        if client.is_closed() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(client.is_closed(), "GOAWAY at 300 ms");
    support::wait_for_metric(
        proxy.admin.unwrap(),
        "grpcproxy_client_connections_aged_total 1",
    );
    // A new connection serves as before.
    let client = RawClient::connect(proxy.listening[0]).await;
    let body = frames_body(vec![Frame::data(grpc_frame(false, b"again"))]);
    let response = client.call("/age.Test/Unary", HeaderMap::new(), body).await;
    assert_eq!(response.grpc_status(), Some("0"));
}
