//! The tonic interop backend on an address of your choosing, until Ctrl-C: what the
//! browser example (`examples/web/`) calls through the proxy.
//!
//! Usage: `interop-backend [ADDR]` (default `127.0.0.1:50052`).

#[tokio::main]
async fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:50052".into());
    let Ok(addr) = addr.parse() else {
        eprintln!("interop-backend: {addr:?} is not ip:port");
        std::process::exit(2);
    };
    let backend = grpcproxy_interop::backend::serve_on(addr).await;
    println!(
        "interop backend (interop.v1.Interop, grpc.health.v1, reflection) on {}",
        backend.addr()
    );
    let _ = tokio::signal::ctrl_c().await;
}
