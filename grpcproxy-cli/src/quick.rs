//! Quick mode: `grpcproxy --listen ADDR --to URL` forwards every call to one backend.

use std::net::SocketAddr;

use anyhow::Context;
use grpcproxy::mq::NoQueue;
use grpcproxy::server::{self, ServerOptions};
use grpcproxy::{SingleUpstream, TransparentProxy, Upstream};

pub(crate) async fn run(listen: &str, to: &str) -> anyhow::Result<()> {
    let upstream = Upstream::new(to).with_context(|| format!("--to {to}"))?;
    let listen: SocketAddr = tokio::net::lookup_host(listen)
        .await
        .with_context(|| format!("--listen {listen}: expected host:port"))?
        .next()
        .with_context(|| format!("--listen {listen}: the name has no address"))?;
    let proxy = TransparentProxy::new(NoQueue, SingleUpstream::new(upstream));
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let local = listener.local_addr()?;
    tracing::info!(listen = %local, to, "grpcproxy listening");
    crate::signals::ignore_hangups();
    server::serve(
        listener,
        proxy,
        ServerOptions::default(),
        crate::signals::shutdown(),
    )
    .await?;
    tracing::info!("grpcproxy stopped");
    Ok(())
}
