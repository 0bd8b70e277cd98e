//! Routing by metadata: calls carrying `x-tenant: beta` go to the beta backend, the rest to
//! the stable one; calls without an `authorization` header are refused.
//!
//! Run: `cargo run -p grpcproxy-examples --bin route-by-metadata`

use grpcproxy::mq::NoQueue;
use grpcproxy::{CallInfo, ProxyRoutes, TransparentProxy, Upstream};
use grpcproxy_testing::pb::test_service_server::TestServiceServer;
use grpcproxy_testing::pb::PingRequest;
use grpcproxy_testing::ping::{PingService, SERVED_BY_KEY};
use grpcproxy_testing::serve::ping_client;
use grpcproxy_testing::TestServer;
use tonic::service::Routes;
use tonic::Status;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let stable = TestServer::start(Routes::new(TestServiceServer::new(PingService::named(
        "stable",
    ))))
    .await;
    let beta = TestServer::start(Routes::new(TestServiceServer::new(PingService::named(
        "beta",
    ))))
    .await;
    let (stable_up, beta_up) = (Upstream::new(&stable.url())?, Upstream::new(&beta.url())?);

    let director = move |call: CallInfo| {
        let (stable_up, beta_up) = (stable_up.clone(), beta_up.clone());
        async move {
            if call.metadata().get("authorization").is_none() {
                return Err(Status::unauthenticated(
                    "an authorization header is required",
                ));
            }
            let beta = call.metadata().get("x-tenant").is_some_and(|v| v == "beta");
            Ok(call.forward_to(if beta { beta_up } else { stable_up }))
        }
    };
    let proxy = TransparentProxy::new(NoQueue, director);
    let proxy_server = TestServer::start(ProxyRoutes::new().fallback(proxy).into_routes()).await;
    let mut client = ping_client(proxy_server.addr()).await;

    for tenant in ["alpha", "beta"] {
        let mut request = tonic::Request::new(PingRequest {
            value: tenant.into(),
            ..Default::default()
        });
        request
            .metadata_mut()
            .insert("authorization", "Bearer demo".parse()?);
        request.metadata_mut().insert("x-tenant", tenant.parse()?);
        let reply = client.ping(request).await?;
        let served_by = reply
            .metadata()
            .get(SERVED_BY_KEY)
            .map(|v| v.to_str().unwrap_or("?").to_owned());
        println!(
            "x-tenant: {tenant:<6} -> served by {}",
            served_by.unwrap_or_default()
        );
    }
    let refused = client.ping(PingRequest::default()).await.unwrap_err();
    println!(
        "no authorization   -> {:?}: {}",
        refused.code(),
        refused.message()
    );
    Ok(())
}
