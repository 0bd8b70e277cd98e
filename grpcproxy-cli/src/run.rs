//! Running from a configuration file: listeners, routes and clusters, drain on signal.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;

use anyhow::Context;
use grpcproxy::reflection::{MergedReflection, ReflectionOptions, ReflectionStats, WithReflection};
use grpcproxy::server::{ReloadableTls, ServerOptions};
use grpcproxy::web::{GrpcWeb, WebOptions, WebStats};
use grpcproxy::{Http2Settings, ProxyOptions, TransparentProxy};

use crate::admin::{self, AdminState};
use crate::cluster::Cluster;
use crate::config::{self, Config, LoadedConfig};
use crate::router::{ReloadableRouter, Router};
use crate::tap::TapQueue;
use crate::telemetry::{AccessLog, Telemetry, Unrouted};

/// Everything built from a configuration before anything binds: what can fail on files
/// (certificates, keys, the access log) fails here, so `check-config` catches it too.
#[derive(Debug)]
pub(crate) struct Prepared {
    router: Router,
    listener_tls: Vec<Option<Arc<ReloadableTls>>>,
    telemetry: Arc<Telemetry>,
}

/// Builds what `loaded` describes; `for_real` also opens the access log.
pub(crate) fn prepare(loaded: &LoadedConfig, for_real: bool) -> anyhow::Result<Prepared> {
    let config = &loaded.config;
    let access_log = match (&config.access_log, for_real) {
        (Some(log), true) => Some(
            AccessLog::open(&log.path)
                .with_context(|| format!("access_log: cannot open {}", log.path))?,
        ),
        _ => None,
    };
    let telemetry = Arc::new(Telemetry::new(access_log));
    let router = Router::build(config, &telemetry, None)?;
    let listener_tls = listener_tls(config)?;
    Ok(Prepared {
        router,
        listener_tls,
        telemetry,
    })
}

/// Each listener's TLS, read from its files (none for a cleartext listener).
fn listener_tls(config: &Config) -> anyhow::Result<Vec<Option<Arc<ReloadableTls>>>> {
    config
        .listeners
        .get_ref()
        .iter()
        .enumerate()
        .map(|(i, listener)| {
            listener
                .tls
                .as_ref()
                .map(|tls| {
                    let (cert, key, client_ca) = read_listener_tls(i, tls)?;
                    ReloadableTls::new(&cert, &key, client_ca.as_deref())
                        .map(Arc::new)
                        .with_context(|| format!("listeners[{i}].tls"))
                })
                .transpose()
        })
        .collect()
}

/// The PEM files of listener `i`: certificate chain, key, client CA.
type ListenerPems = (Vec<u8>, Vec<u8>, Option<Vec<u8>>);

fn read_listener_tls(i: usize, tls: &config::ListenerTls) -> anyhow::Result<ListenerPems> {
    let read = |path: &str| {
        std::fs::read(path).with_context(|| format!("listeners[{i}].tls: cannot read {path}"))
    };
    let client_ca = tls.client_ca.as_deref().map(read).transpose()?;
    Ok((read(&tls.cert)?, read(&tls.key)?, client_ca))
}

/// Serves the listeners' certificate files as they are now; nothing changes unless every
/// listener's files load.
fn reload_listener_tls(running: &Config, tls: &[Option<Arc<ReloadableTls>>]) -> anyhow::Result<()> {
    // Every listener's files are read once and must load before any is served.
    let mut loaded = Vec::new();
    for (i, (listener, current)) in running.listeners.get_ref().iter().zip(tls).enumerate() {
        if let (Some(files), Some(current)) = (&listener.tls, current) {
            let (cert, key, client_ca) = read_listener_tls(i, files)?;
            ReloadableTls::new(&cert, &key, client_ca.as_deref())
                .with_context(|| format!("listeners[{i}].tls"))?;
            loaded.push((i, current, cert, key, client_ca));
        }
    }
    for (i, current, cert, key, client_ca) in loaded {
        current
            .reload(&cert, &key, client_ca.as_deref())
            .with_context(|| format!("listeners[{i}].tls"))?;
    }
    Ok(())
}

/// The certificate and key files the running configuration reads (listeners, clusters).
fn tls_files(config: &Config) -> Vec<PathBuf> {
    let listeners = config.listeners.get_ref().iter().flat_map(|l| {
        l.tls.iter().flat_map(|t| {
            [Some(&t.cert), Some(&t.key), t.client_ca.as_ref()]
                .into_iter()
                .flatten()
        })
    });
    let clusters = config.clusters.values().flat_map(|c| {
        c.tls.iter().flat_map(|t| {
            let t = t.get_ref();
            [t.ca.as_ref(), t.cert.as_ref(), t.key.as_ref()]
                .into_iter()
                .flatten()
        })
    });
    listeners.chain(clusters).map(PathBuf::from).collect()
}

/// What a reload made: the new router, the configuration that now runs (the file's routes
/// and clusters, the running values of every restart-only section), and the restart-only
/// sections in which the file differs from what runs.
struct Reloaded {
    router: Router,
    running: Config,
    pending: Vec<&'static str>,
}

/// Loads the file again and builds its router, for a reload. Sections that need a restart
/// (listeners, admin, limits, server, access log, tap) keep their running values; where
/// the file differs from them, a warning says so.
fn reload(
    path: &Path,
    running: &Config,
    previous: &Router,
    telemetry: &Arc<Telemetry>,
) -> anyhow::Result<Reloaded> {
    let loaded = config::load(path)?;
    for warning in &loaded.warnings {
        tracing::warn!(%warning, "configuration");
    }
    let file = loaded.config;
    listener_tls(&file)?;
    let router = Router::build(&file, telemetry, Some(previous))?;
    let pending: Vec<&'static str> = restart_only(&file)
        .into_iter()
        .zip(restart_only(running))
        .filter(|((_, new), (_, old))| new != old)
        .map(|((name, _), _)| name)
        .collect();
    for section in &pending {
        tracing::warn!(
            section,
            "this section differs from the running configuration; it takes effect at the next restart"
        );
    }
    let running = Config {
        listeners: running.listeners.clone(),
        admin: running.admin.clone(),
        limits: running.limits.clone(),
        server: running.server.clone(),
        access_log: running.access_log.clone(),
        tap: running.tap.clone(),
        tracing: running.tracing.clone(),
        ..file
    };
    Ok(Reloaded {
        router,
        running,
        pending,
    })
}

/// What `/config` shows: the running configuration, and which sections of the file wait
/// for a restart.
fn shown_config(running: &Config, pending: &[&str]) -> String {
    let text = running.redacted_toml();
    if pending.is_empty() {
        return text;
    }
    format!(
        "# The running configuration. Changed in the file, waiting for a restart: {}\n{text}",
        pending.join(", ")
    )
}

/// Serves `loaded` on `threads` per-core workers (see [`crate::workers`]) until a signal,
/// then drains. Runs on the main thread's runtime: the admin listener, reloads, health
/// checks and the tap live there, with backend connections of their own.
pub(crate) async fn run(
    loaded: LoadedConfig,
    prepared: Prepared,
    threads: usize,
    instance: String,
) -> anyhow::Result<()> {
    grpcproxy::worker::enter(threads);
    for warning in &loaded.warnings {
        tracing::warn!(%warning, "configuration");
    }
    let config = &loaded.config;
    let Prepared {
        router,
        listener_tls,
        telemetry,
    } = prepared;
    telemetry.set_clusters(router.clusters().to_vec());
    router.clusters().iter().for_each(Cluster::start);
    let current = Arc::new(ArcSwap::from_pointee(router));
    let options = ProxyOptions {
        max_message_size: config.limits.max_message_size,
        stream_idle_timeout: Some(config.limits.stream_idle_timeout).filter(|t| !t.is_zero()),
        refusal_observer: Some(Arc::new(Unrouted(telemetry.clone()))),
        ..ProxyOptions::default()
    };
    if let Some(tracing) = &config.tracing {
        telemetry.set_tracing(crate::telemetry::Tracing::start(
            tracing.get_ref(),
            &instance,
        )?);
    }
    let tap = Arc::new(TapQueue::start(
        config.tap.as_ref().map(|t| t.get_ref()),
        instance,
    )?);
    if let Some(stats) = tap.stats() {
        telemetry.set_tap(stats);
    }
    let proxy =
        TransparentProxy::with_options(tap.clone(), ReloadableRouter(current.clone()), options);
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
        idle_timeout: Some(limits.idle_timeout).filter(|t| !t.is_zero()),
        max_connection_age: config.server.max_connection_age,
        max_connection_age_jitter: config.server.max_connection_age_jitter,
        max_connection_age_grace: config.server.max_connection_age_grace,
        http1: false,
        stats: Arc::default(),
    };
    telemetry.set_server(server_options.stats.clone());

    let admin = match &config.admin {
        Some(admin) => {
            let listener = admin::bind(admin.address).await?;
            let state = Arc::new(AdminState {
                telemetry: telemetry.clone(),
                stats: proxy.stats().clone(),
                config_toml: ArcSwap::from_pointee(config.redacted_toml()),
                draining: AtomicBool::new(false),
            });
            tokio::spawn(admin::serve(listener, state.clone()));
            Some(state)
        }
        None => None,
    };

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let web_stats = Arc::new(WebStats::default());
    if config.listeners.get_ref().iter().any(|l| l.grpc_web) {
        telemetry.set_web(web_stats.clone());
    }
    let reflection_stats = Arc::new(ReflectionStats::default());
    if config.listeners.get_ref().iter().any(|l| l.reflection) {
        telemetry.set_reflection(reflection_stats.clone());
    }
    let listeners = config
        .listeners
        .get_ref()
        .iter()
        .zip(&listener_tls)
        .map(|(listener, tls)| crate::workers::Listener {
            address: listener.address,
            options: ServerOptions {
                tls: tls.as_ref().map(|tls| tls.config()),
                http1: listener.grpc_web,
                ..server_options.clone()
            },
            service: front_door(
                listener,
                &proxy,
                limits.max_message_size,
                &web_stats,
                listener.reflection.then(|| {
                    let options = ReflectionOptions {
                        cache_ttl: listener
                            .reflection_cache_ttl
                            .unwrap_or(ReflectionOptions::default().cache_ttl),
                        ..ReflectionOptions::default()
                    };
                    let backends = ReloadableRouter(current.clone());
                    MergedReflection::with_stats(backends, options, reflection_stats.clone())
                }),
            ),
        })
        .collect();
    // Caught before the proxy says it listens (see `signals`).
    let shutdown = crate::signals::shutdown();
    let hangups = crate::signals::hangups();
    let (workers, bound) =
        crate::workers::start(threads, listeners, stopped, config.server.reuse_port).await?;
    for (listener, local) in config.listeners.get_ref().iter().zip(bound) {
        let tls = match &listener.tls {
            None => "off",
            Some(tls) if tls.client_ca.is_some() => "mtls",
            Some(_) => "tls",
        };
        let grpc_web = listener.grpc_web;
        tracing::info!(listen = %local, tls, grpc_web, workers = threads, config = %loaded.path.display(), "grpcproxy listening");
    }
    // Quick mode has no file to read again: SIGHUP is logged and ignored.
    let reloader = if loaded.from_file {
        Some(tokio::spawn(reload_on_sighup(
            hangups,
            loaded.path.clone(),
            loaded.config.clone(),
            Reloadable {
                router: current,
                listener_tls,
            },
            telemetry.clone(),
            admin.clone(),
        )))
    } else {
        crate::signals::ignore_hangups(hangups);
        None
    };
    shutdown.await;
    if let Some(reloader) = reloader {
        reloader.abort();
    }
    if let Some(admin) = &admin {
        admin.draining.store(true, Ordering::Release);
    }
    let _ = stop.send(true);
    workers.join().await?;
    tap.flush(config.server.drain_timeout).await;
    telemetry.flush_tracing(config.server.drain_timeout).await;
    telemetry
        .flush_access_log(config.server.drain_timeout)
        .await;
    tracing::info!(
        live_streams = proxy.stats().live_streams(),
        "grpcproxy stopped"
    );
    Ok(())
}

/// The sections a reload does not apply, rendered for comparison.
fn restart_only(config: &Config) -> [(&'static str, String); 7] {
    [
        ("listeners", format!("{:?}", config.listeners.get_ref())),
        ("admin", format!("{:?}", config.admin)),
        ("limits", format!("{:?}", config.limits)),
        ("server", format!("{:?}", config.server)),
        ("access_log", format!("{:?}", config.access_log)),
        (
            "tap",
            format!("{:?}", config.tap.as_ref().map(|t| t.get_ref())),
        ),
        (
            "tracing",
            format!("{:?}", config.tracing.as_ref().map(|t| t.get_ref())),
        ),
    ]
}

/// What a reload replaces while the process runs.
struct Reloadable {
    router: Arc<ArcSwap<Router>>,
    listener_tls: Vec<Option<Arc<ReloadableTls>>>,
}

/// Reloads the configuration on every SIGHUP, when the file changes if the config says so,
/// and when a certificate or key file of the running configuration changes. An invalid
/// file, or certificates that do not load, keep the running configuration; either way the
/// result is logged and counted.
async fn reload_on_sighup(
    hangups: Option<tokio::signal::unix::Signal>,
    path: PathBuf,
    mut running: Config,
    reloadable: Reloadable,
    telemetry: Arc<Telemetry>,
    admin: Option<Arc<AdminState>>,
) {
    let Some(mut hangups) = hangups else {
        return; // logged by `signals::hangups`
    };
    let watch = running.server.watch_config;
    let modified = |path: &Path| std::fs::metadata(path).and_then(|m| m.modified()).ok();
    // What the watch compares: the config file (with watch_config) and every certificate
    // and key file the running configuration reads.
    let fingerprint = |running: &Config| {
        let mut files = tls_files(running);
        if watch {
            files.push(path.clone());
        }
        files.iter().map(|f| modified(f)).collect::<Vec<_>>()
    };
    let mut seen = fingerprint(&running);
    let mut ticks = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tokio::select! {
            signal = hangups.recv() => if signal.is_none() { return },
            _ = ticks.tick() => {
                let now = fingerprint(&running);
                if now == seen {
                    continue;
                }
                seen = now;
                tracing::info!(config = %path.display(), "configuration or certificate file changed");
            }
        }
        let outcome =
            reload(&path, &running, &reloadable.router.load(), &telemetry).and_then(|reloaded| {
                reload_listener_tls(&reloaded.running, &reloadable.listener_tls)?;
                Ok(reloaded)
            });
        match outcome {
            Ok(reloaded) => {
                let router = reloaded.router;
                telemetry.set_clusters(router.clusters().to_vec());
                router.clusters().iter().for_each(Cluster::start);
                reloadable.router.store(Arc::new(router));
                if let Some(admin) = &admin {
                    let shown = shown_config(&reloaded.running, &reloaded.pending);
                    admin.config_toml.store(Arc::new(shown));
                }
                running = reloaded.running;
                seen = fingerprint(&running);
                telemetry.reloaded(true);
                tracing::info!(config = %path.display(), "configuration reloaded");
            }
            Err(e) => {
                telemetry.reloaded(false);
                tracing::error!(config = %path.display(), error = %format!("{e:#}"), "reload rejected; the running configuration and certificates stay");
            }
        }
    }
}

/// What answers a listener's calls: the proxy, behind the merged reflection and gRPC-Web
/// when the listener serves them.
fn front_door<P: Clone>(
    listener: &config::Listener,
    proxy: &P,
    max_message_size: Option<u32>,
    stats: &Arc<WebStats>,
    reflection: Option<MergedReflection>,
) -> GrpcWeb<WithReflection<P>> {
    let proxy = match reflection {
        Some(reflection) => WithReflection::new(proxy.clone(), reflection),
        None => WithReflection::disabled(proxy.clone()),
    };
    if !listener.grpc_web {
        return GrpcWeb::disabled(proxy);
    }
    let mut options = WebOptions::new().stats(stats.clone());
    // A text body is read whole: one message and its prefix (browsers send one).
    if let Some(max) = max_message_size {
        options = options.max_text_request_bytes(max as usize + 5);
    }
    if let Some(cors) = &listener.cors {
        // Checked when the configuration was read.
        if let Ok(policy) = cors.get_ref().policy() {
            options = options.cors(policy);
        }
    }
    GrpcWeb::new(proxy, options)
}
