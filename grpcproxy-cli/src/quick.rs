//! Quick mode: `grpcproxy --listen ADDR --to URL` forwards every call to one backend.

use std::net::SocketAddr;

use anyhow::Context;
use grpcproxy::mq::NoQueue;
use grpcproxy::server::{self, ServerOptions};
use grpcproxy::{SingleUpstream, TransparentProxy, Upstream};

pub(crate) async fn run(listen: SocketAddr, to: &str) -> anyhow::Result<()> {
    let upstream = Upstream::new(to).with_context(|| format!("--to {to}"))?;
    let proxy = TransparentProxy::new(NoQueue, SingleUpstream::new(upstream));
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let local = listener.local_addr()?;
    tracing::info!(listen = %local, to, "grpcproxy listening");
    server::serve(listener, proxy, ServerOptions::default(), shutdown_signal()).await?;
    tracing::info!("grpcproxy stopped");
    Ok(())
}

/// Completes on Ctrl-C or SIGTERM.
pub(crate) async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("interrupt received; draining"),
        () = term => tracing::info!("SIGTERM received; draining"),
    }
}
