//! A transparent proxy with a director: every service the server does not know is
//! forwarded; calls to `internal.*` services are refused by the director.
//!
//! Run: `cargo run -p grpcproxy-examples --bin transparent-director`
//! It starts an in-process ping backend, serves the proxy on 127.0.0.1:50051 with tonic,
//! makes two calls through it, and keeps serving until Ctrl-C.

use grpcproxy::mq::NoQueue;
use grpcproxy::{CallInfo, ProxyRoutes, TransparentProxy, Upstream};
use grpcproxy_testing::pb::PingRequest;
use grpcproxy_testing::serve::{ping_backend, ping_client};
use tonic::Status;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt().with_env_filter("info").init();
    let (backend, _service) = ping_backend().await;
    let upstream = Upstream::new(&backend.url())?;

    // The director sees the full method name and the request metadata of every call.
    let director = move |mut call: CallInfo| {
        let upstream = upstream.clone();
        async move {
            if call.service_name().starts_with("internal.") {
                return Err(Status::permission_denied(
                    "internal services are not exposed",
                ));
            }
            // Outgoing metadata defaults to the incoming one; add to it before forwarding.
            call.metadata_mut()
                .insert("x-proxied-by", "grpcproxy".parse().unwrap());
            Ok(call.forward_to(upstream))
        }
    };
    let proxy = TransparentProxy::new(NoQueue, director);
    let listen = "127.0.0.1:50051".parse()?;
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_routes(ProxyRoutes::new().fallback(proxy).into_routes())
            .serve_with_shutdown(listen, async {
                let _ = tokio::signal::ctrl_c().await;
            }),
    );
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;

    let mut client = ping_client(listen).await;
    let reply = client
        .ping(PingRequest {
            value: "through the proxy".into(),
            ..Default::default()
        })
        .await?;
    println!("Ping answered {:?}", reply.get_ref().value);

    println!("proxy listening on {listen}; Ctrl-C to stop");
    server.await??;
    Ok(())
}
