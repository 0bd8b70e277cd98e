//! What the director sees, and how its outgoing metadata reaches the backend.

mod support;

use std::sync::{Arc, Mutex};

use grpcproxy::mq::NoQueue;
use grpcproxy::{CallInfo, ProxyRoutes, TransparentProxy, Upstream};
use grpcproxy_testing::pb::PingRequest;
use grpcproxy_testing::serve::{ping_backend, ping_client};
use grpcproxy_testing::TestServer;

#[derive(Debug, Clone, PartialEq)]
struct Seen {
    method: String,
    service: String,
    method_name: String,
    remote_ip: Option<String>,
    identity: Option<String>,
}

/// What an authentication layer in front of the proxy attaches to the request.
#[derive(Debug, Clone)]
struct Identity(String);

#[tokio::test]
async fn director_sees_method_peer_and_layer_extensions_and_edits_metadata() {
    let (backend, service) = ping_backend().await;
    let upstream = Upstream::new(&backend.url()).unwrap();
    let seen = Arc::new(Mutex::new(None));
    let director = {
        let seen = seen.clone();
        move |mut call: CallInfo| {
            *seen.lock().unwrap() = Some(Seen {
                method: call.method().to_owned(),
                service: call.service_name().to_owned(),
                method_name: call.method_name().to_owned(),
                remote_ip: call.remote_addr().map(|a| a.ip().to_string()),
                identity: call.extensions().get::<Identity>().map(|i| i.0.clone()),
            });
            let metadata = call.metadata_mut();
            metadata.insert("x-added", "by-director".parse().unwrap());
            metadata.insert("x-replaced", "new".parse().unwrap());
            metadata.remove("x-secret");
            let upstream = upstream.clone();
            async move { Ok(call.forward_to(upstream)) }
        }
    };
    let proxy = TransparentProxy::new(NoQueue, director);
    // An auth layer in front of the proxy: the director runs after it.
    let router = ProxyRoutes::new().fallback(proxy).into_axum_router().layer(
        tower::util::MapRequestLayer::new(|mut request: http::Request<_>| {
            request.extensions_mut().insert(Identity("alice".into()));
            request
        }),
    );
    let server = TestServer::start(tonic::service::Routes::from(router)).await;
    let mut client = ping_client(server.addr()).await;
    let mut request = tonic::Request::new(PingRequest {
        value: "d".into(),
        ..Default::default()
    });
    request
        .metadata_mut()
        .insert("x-replaced", "old".parse().unwrap());
    request
        .metadata_mut()
        .insert("x-secret", "hunter2".parse().unwrap());
    request
        .metadata_mut()
        .insert("x-kept", "yes".parse().unwrap());
    client.ping(request).await.unwrap();

    assert_eq!(
        seen.lock().unwrap().clone().unwrap(),
        Seen {
            method: "/grpcproxy.testing.TestService/Ping".into(),
            service: "grpcproxy.testing.TestService".into(),
            method_name: "Ping".into(),
            remote_ip: Some("127.0.0.1".into()),
            identity: Some("alice".into()),
        }
    );
    let at_backend = service.events().last_metadata().unwrap();
    assert_eq!(at_backend.get("x-added").unwrap(), "by-director");
    assert_eq!(
        at_backend.get_all("x-replaced").iter().collect::<Vec<_>>(),
        ["new"]
    );
    assert!(at_backend.get("x-secret").is_none());
    assert_eq!(at_backend.get("x-kept").unwrap(), "yes");
}
