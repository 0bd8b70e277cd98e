//! Typed and proxied services on one server; route conflicts are errors, not panics.

mod support;

use grpcproxy::mq::NoQueue;
use grpcproxy::{ProxyRoutes, RouteError, SingleUpstream, TransparentProxy, Upstream};
use grpcproxy_testing::pb::echo_client::EchoClient;
use grpcproxy_testing::pb::echo_server::EchoServer;
use grpcproxy_testing::pb::{Empty, PingRequest};
use grpcproxy_testing::ping::EchoService;
use grpcproxy_testing::serve::{ping_backend, ping_client};
use grpcproxy_testing::TestServer;
use support::{expect_err, TEST_SERVICE};
use tonic::Code;

fn proxy() -> TransparentProxy<SingleUpstream> {
    TransparentProxy::new(
        NoQueue,
        SingleUpstream::new(Upstream::new("http://127.0.0.1:1").unwrap()),
    )
}

#[tokio::test]
async fn typed_and_proxied_services_on_one_server() {
    let (backend, service) = ping_backend().await;
    let proxy = TransparentProxy::new(
        NoQueue,
        SingleUpstream::new(Upstream::new(&backend.url()).unwrap()),
    );
    let routes = ProxyRoutes::new()
        .add_service(EchoServer::new(EchoService))
        .unwrap()
        .register_service(proxy, TEST_SERVICE, &["Ping", "PingList"])
        .unwrap();
    let server = TestServer::start(routes.into_routes()).await;

    let channel = tonic::transport::Endpoint::from_shared(server.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let local = EchoClient::new(channel)
        .echo(PingRequest {
            value: "a".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        local.get_ref().value,
        "local:a",
        "Echo is served in-process"
    );

    let mut client = ping_client(server.addr()).await;
    let proxied = client
        .ping(PingRequest {
            value: "b".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(proxied.get_ref().value, "b");
    assert!(
        service.events().last_metadata().is_some(),
        "Ping reached the backend"
    );

    // A method of the service that was not registered is not proxied.
    let status = expect_err(client.ping_empty(Empty {}).await);
    assert_eq!(status.code(), Code::Unimplemented);
    // Nor is an unknown service, without a fallback.
    let status = expect_err(client.ping_error(PingRequest::default()).await);
    assert_eq!(status.code(), Code::Unimplemented);
}

#[test]
fn proxying_a_typed_service_is_a_conflict() {
    let err = ProxyRoutes::new()
        .add_service(EchoServer::new(EchoService))
        .unwrap()
        .register_service(proxy(), "grpcproxy.testing.Echo", &[])
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "/grpcproxy.testing.Echo/* is already routed to a typed service"
    );
}

#[test]
fn registering_a_method_twice_is_a_conflict() {
    let err = ProxyRoutes::new()
        .register_service(proxy(), "pkg.Svc", &["A"])
        .unwrap()
        .register_service(proxy(), "pkg.Svc", &["B", "A"])
        .unwrap_err();
    assert_eq!(
        err,
        RouteError::Conflict {
            path: "/pkg.Svc/A".into(),
            existing: "proxied methods"
        }
    );
}

#[test]
fn methods_of_a_wholly_proxied_service_conflict() {
    let err = ProxyRoutes::new()
        .register_service(proxy(), "pkg.Svc", &[])
        .unwrap()
        .register_service(proxy(), "pkg.Svc", &["A"])
        .unwrap_err();
    assert_eq!(err.to_string(), "/pkg.Svc/A is already routed to the proxy");
}

#[test]
fn more_methods_can_be_added_to_a_service() {
    ProxyRoutes::new()
        .register_service(proxy(), "pkg.Svc", &["A"])
        .unwrap()
        .register_service(proxy(), "pkg.Svc", &["B"])
        .unwrap();
}

#[test]
fn invalid_names_are_rejected() {
    for (service, methods) in [
        ("", &[][..]),
        ("pkg/Svc", &[]),
        ("pkg.{x}", &[]),
        ("pkg.Svc", &["a.b"]),
        ("pkg.Svc", &[""]),
    ] {
        let err = ProxyRoutes::new()
            .register_service(proxy(), service, methods)
            .unwrap_err();
        assert!(
            matches!(err, RouteError::InvalidName { .. }),
            "{service:?} {methods:?}: {err}"
        );
    }
}
