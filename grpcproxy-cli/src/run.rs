//! Running from a configuration file: listeners, routes and clusters, drain on signal.

use anyhow::Context;
use grpcproxy::mq::NoQueue;
use grpcproxy::server::{self, ServerOptions};
use grpcproxy::{Http2Settings, ProxyOptions, TransparentProxy};

use crate::config::LoadedConfig;
use crate::router::Router;

pub(crate) async fn run(loaded: LoadedConfig) -> anyhow::Result<()> {
    let config = &loaded.config;
    let router = Router::build(config)?;
    let options = ProxyOptions {
        max_message_size: config.limits.max_message_size,
        ..ProxyOptions::default()
    };
    let proxy = TransparentProxy::with_options(NoQueue, router, options);
    let limits = &config.limits;
    let server_options = ServerOptions {
        http2: Http2Settings {
            max_header_list_size: limits.max_header_list_size,
            keep_alive_interval: limits.keepalive_interval,
            keep_alive_timeout: limits.keepalive_timeout,
            ..Http2Settings::default()
        },
        max_concurrent_streams: Some(limits.max_concurrent_streams),
        preface_timeout: limits.handshake_timeout,
        drain_timeout: config.server.drain_timeout,
        max_connections: limits.max_connections,
    };

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut servers = tokio::task::JoinSet::new();
    for listener in config.listeners.get_ref() {
        let socket = tokio::net::TcpListener::bind(listener.address)
            .await
            .with_context(|| format!("cannot listen on {}", listener.address))?;
        let local = socket.local_addr()?;
        tracing::info!(listen = %local, config = %loaded.path.display(), "grpcproxy listening");
        let mut stopped = stopped.clone();
        servers.spawn(server::serve(
            socket,
            proxy.clone(),
            server_options.clone(),
            async move {
                let _ = stopped.wait_for(|stop| *stop).await;
            },
        ));
    }
    crate::quick::shutdown_signal().await;
    let _ = stop.send(true);
    while let Some(result) = servers.join_next().await {
        result??;
    }
    tracing::info!(
        live_streams = proxy.stats().live_streams(),
        "grpcproxy stopped"
    );
    Ok(())
}
