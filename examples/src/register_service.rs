//! register_service next to a typed tonic service: one server serves `Echo` itself and
//! proxies only `TestService/Ping` and `TestService/PingList` to a backend. Other
//! `TestService` methods answer UNIMPLEMENTED at the proxy.
//!
//! Run: `cargo run -p grpcproxy-examples --bin register-service`

use grpcproxy::mq::NoQueue;
use grpcproxy::{ProxyRoutes, SingleUpstream, TransparentProxy, Upstream};
use grpcproxy_testing::pb::echo_client::EchoClient;
use grpcproxy_testing::pb::echo_server::EchoServer;
use grpcproxy_testing::pb::{Empty, PingRequest};
use grpcproxy_testing::ping::EchoService;
use grpcproxy_testing::serve::{ping_backend, ping_client};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (backend, _service) = ping_backend().await;
    let proxy = TransparentProxy::new(NoQueue, SingleUpstream::new(Upstream::new(&backend.url())?));

    let routes = ProxyRoutes::new()
        .add_service(EchoServer::new(EchoService))?
        .register_service(
            proxy,
            "grpcproxy.testing.TestService",
            &["Ping", "PingList"],
        )?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_routes(routes.into_routes())
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );

    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    let local = EchoClient::new(channel)
        .echo(PingRequest {
            value: "hi".into(),
            ..Default::default()
        })
        .await?;
    println!("Echo (typed, served locally): {:?}", local.get_ref().value);

    let mut client = ping_client(addr).await;
    let proxied = client
        .ping(PingRequest {
            value: "hi".into(),
            ..Default::default()
        })
        .await?;
    println!(
        "TestService/Ping (proxied):   {:?}",
        proxied.get_ref().value
    );

    let refused = client.ping_empty(Empty {}).await.unwrap_err();
    println!(
        "TestService/PingEmpty (not registered): {:?} {:?}",
        refused.code(),
        refused.message()
    );
    Ok(())
}
