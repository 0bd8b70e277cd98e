//! Running from a configuration file: listeners, routes and clusters, drain on signal.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context;
use grpcproxy::mq::NoQueue;
use grpcproxy::server::{self, ServerOptions};
use grpcproxy::{Http2Settings, ProxyOptions, TransparentProxy};

use crate::admin::{self, AdminState};
use crate::config::LoadedConfig;
use crate::router::Router;
use crate::telemetry::AccessLog;

/// Everything built from a configuration before anything binds: what can fail on files
/// (certificates, keys) fails here, so `check-config` catches it too.
#[derive(Debug)]
pub(crate) struct Prepared {
    router: Router,
    listener_tls: Vec<Option<Arc<rustls::ServerConfig>>>,
}

pub(crate) fn prepare(loaded: &LoadedConfig) -> anyhow::Result<Prepared> {
    let config = &loaded.config;
    let access_log = config
        .access_log
        .as_ref()
        .map(|log| {
            AccessLog::open(&log.path)
                .with_context(|| format!("access_log: cannot open {}", log.path))
        })
        .transpose()?;
    let router = Router::build(config, access_log)?;
    let listener_tls = config
        .listeners
        .get_ref()
        .iter()
        .enumerate()
        .map(|(i, listener)| {
            listener
                .tls
                .as_ref()
                .map(|tls| {
                    let read = |path: &str| {
                        std::fs::read(path)
                            .with_context(|| format!("listeners[{i}].tls: cannot read {path}"))
                    };
                    let client_ca = tls.client_ca.as_deref().map(read).transpose()?;
                    server::tls_config(&read(&tls.cert)?, &read(&tls.key)?, client_ca.as_deref())
                        .with_context(|| format!("listeners[{i}].tls"))
                })
                .transpose()
        })
        .collect::<anyhow::Result<_>>()?;
    Ok(Prepared {
        router,
        listener_tls,
    })
}

pub(crate) async fn run(loaded: LoadedConfig, prepared: Prepared) -> anyhow::Result<()> {
    let config = &loaded.config;
    let Prepared {
        router,
        listener_tls,
    } = prepared;
    let telemetry = router.telemetry().clone();
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
        tls: None,
    };

    let admin = match &config.admin {
        Some(admin) => {
            let listener = admin::bind(admin.address).await?;
            let state = Arc::new(AdminState {
                telemetry,
                stats: proxy.stats().clone(),
                config_toml: config.redacted_toml(),
                draining: AtomicBool::new(false),
            });
            tokio::spawn(admin::serve(listener, state.clone()));
            Some(state)
        }
        None => None,
    };

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut servers = tokio::task::JoinSet::new();
    for (listener, tls) in config.listeners.get_ref().iter().zip(listener_tls) {
        let socket = tokio::net::TcpListener::bind(listener.address)
            .await
            .with_context(|| format!("cannot listen on {}", listener.address))?;
        let local = socket.local_addr()?;
        tracing::info!(listen = %local, tls = tls.is_some(), config = %loaded.path.display(), "grpcproxy listening");
        let mut stopped = stopped.clone();
        let options = ServerOptions {
            tls,
            ..server_options.clone()
        };
        servers.spawn(server::serve(socket, proxy.clone(), options, async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        }));
    }
    crate::quick::shutdown_signal().await;
    if let Some(admin) = &admin {
        admin.draining.store(true, Ordering::Release);
    }
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
