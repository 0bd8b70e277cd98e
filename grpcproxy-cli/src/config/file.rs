//! The configuration file's structure, defaults and checks.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::error::Problem;
use super::routes::{CompiledRoute, Route};

/// The whole file, as [`parse`](super::parse) gives it once it passed every check.
///
/// ```
/// let text = "[[listeners]]\naddress = \"127.0.0.1:0\"\n[[routes]]\ncluster = \"c\"\n\
///             [clusters.c]\nendpoints = [\"127.0.0.1:1\"]\n";
/// let config = grpcproxy_cli::config::parse("proxy.toml".as_ref(), text).unwrap();
/// assert!(config.redacted_toml().contains("[clusters.c]"));
/// ```
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub(crate) server: Server,
    #[serde(default)]
    pub(crate) limits: Limits,
    pub(crate) listeners: Spanned<Vec<Listener>>,
    #[serde(default)]
    pub(crate) routes: Vec<Route>,
    #[serde(default)]
    pub(crate) clusters: BTreeMap<String, Cluster>,
    /// The admin HTTP listener (metrics, health, config); none if absent.
    pub(crate) admin: Option<Admin>,
    /// The JSON-lines access log; off if absent.
    pub(crate) access_log: Option<AccessLogConfig>,
    /// The message-queue tap; off if absent.
    pub(crate) tap: Option<Spanned<Tap>>,
    /// Distributed tracing over OTLP; off if absent.
    pub(crate) tracing: Option<Spanned<TracingConfig>>,
    /// The routes as the router uses them, compiled by [`parse`](super::parse).
    #[serde(skip)]
    pub(crate) compiled_routes: Vec<CompiledRoute>,
}

/// `[tracing]`: a span per call, continuing the caller's W3C trace, exported over OTLP.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TracingConfig {
    /// Where spans go: `http://host:4317` (gRPC) or `http://host:4318` (HTTP, `/v1/traces`
    /// added unless given).
    pub(crate) otlp_endpoint: String,
    /// `grpc` (default) or `http` (HTTP/protobuf).
    #[serde(default)]
    pub(crate) protocol: OtlpProtocol,
    /// The spans' `service.name` (default `grpcproxy`).
    #[serde(default = "default_service_name")]
    pub(crate) service_name: String,
    /// Share of calls without a sampled parent that start a trace (0 to 1, default 1);
    /// a caller's sampled trace is always continued.
    #[serde(default = "all")]
    pub(crate) sample_rate: f64,
    /// Headers sent with every export (e.g. an API key); never logged or shown.
    #[serde(default)]
    pub(crate) headers: BTreeMap<String, String>,
}

/// The OTLP transport.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum OtlpProtocol {
    /// OTLP/gRPC.
    #[default]
    Grpc,
    /// OTLP/HTTP with protobuf bodies.
    Http,
}

fn default_service_name() -> String {
    "grpcproxy".into()
}

fn all() -> f64 {
    1.0
}

/// `[tap]`: publish proxied traffic to NATS JetStream or record it to a file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Tap {
    /// NATS server, `nats://host:port` (one of `nats_url` and `file`). Credentials in it
    /// work but are better kept in `credentials_file` or `token_file`; either way they are
    /// never logged or shown.
    pub(crate) nats_url: Option<String>,
    /// NATS credentials file (user JWT and NKey seed).
    pub(crate) credentials_file: Option<String>,
    /// A file holding the NATS token (surrounding white space ignored).
    pub(crate) token_file: Option<String>,
    /// TLS towards NATS: `{ ca, cert, key }`, each a PEM file.
    pub(crate) tls: Option<TapTls>,
    /// JetStream stream to create over `<subject_prefix>.>`.
    pub(crate) stream: Option<String>,
    /// Bytes that stream holds at most; past it, the oldest events go.
    #[serde(default = "stream_max_bytes")]
    pub(crate) max_bytes: i64,
    /// How long that stream keeps an event.
    #[serde(default = "stream_max_age", with = "super::duration")]
    pub(crate) max_age: Duration,
    /// Where that stream lives: `file` or `memory`.
    #[serde(default)]
    pub(crate) storage: TapStorage,
    /// Copies of that stream a JetStream cluster keeps (1 to 5): 3 survives a node's loss.
    #[serde(default = "one")]
    pub(crate) replicas: usize,
    /// This process's name in its events (and the NATS header `Grpcproxy-Instance`);
    /// default: the host name, the process id and the start time. `--instance` wins.
    pub(crate) instance: Option<String>,
    /// How long an unacknowledged event is published again (deduplicated by its message
    /// id) before it counts as failed.
    #[serde(default = "publish_retry", with = "super::duration")]
    pub(crate) publish_retry: Duration,
    #[serde(default = "subject_prefix")]
    pub(crate) subject_prefix: String,
    /// File to record to, length-delimited protobuf (one of `nats_url` and `file`).
    pub(crate) file: Option<String>,
    #[serde(default = "rotate_bytes")]
    pub(crate) rotate_bytes: u64,
    #[serde(default = "keep")]
    pub(crate) keep: usize,
    /// Events held while the destination is slow or away; beyond, dropped and counted.
    #[serde(default = "capacity")]
    pub(crate) capacity: usize,
    /// Payload bytes held in that buffer at most; beyond, messages are dropped and counted.
    #[serde(default = "buffer_bytes")]
    pub(crate) buffer_bytes: usize,
    /// When the buffer is full, calls wait up to this long per frame for room (the
    /// "wait" policy); absent: events are dropped and counted at once.
    #[serde(default, with = "super::duration::option")]
    pub(crate) overflow_wait: Option<Duration>,
    /// Largest payload published per message, in bytes; default: all of it.
    pub(crate) max_payload: Option<usize>,
    /// Method prefixes to tap (`/pkg.Service/`); default: every call.
    #[serde(default)]
    pub(crate) methods: Vec<String>,
    /// Share of calls tapped, 0.0 to 1.0.
    #[serde(default = "one_f64")]
    pub(crate) sample_rate: f64,
    /// How events are encoded: protobuf (`proto/tap.proto`) or its JSON mapping.
    #[serde(default)]
    pub(crate) encoding: TapEncoding,
}

/// `tap.tls`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TapTls {
    /// PEM CA bundle the server must chain to; default: the system's roots.
    pub(crate) ca: Option<String>,
    /// PEM client certificate (with `key`), for servers that verify clients.
    pub(crate) cert: Option<String>,
    /// PEM private key of `cert`.
    pub(crate) key: Option<String>,
}

/// `tap.encoding`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum TapEncoding {
    #[default]
    Protobuf,
    Json,
}

/// `tap.storage`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum TapStorage {
    #[default]
    File,
    Memory,
}

fn stream_max_bytes() -> i64 {
    1 << 30
}
fn stream_max_age() -> Duration {
    Duration::from_secs(24 * 3600)
}
fn publish_retry() -> Duration {
    Duration::from_secs(30)
}
fn subject_prefix() -> String {
    "grpcproxy.calls".into()
}
fn rotate_bytes() -> u64 {
    256 << 20
}
fn keep() -> usize {
    5
}
fn buffer_bytes() -> usize {
    64 << 20
}
fn capacity() -> usize {
    8192
}
fn one_f64() -> f64 {
    1.0
}

/// `[admin]`: the operator's HTTP/1.1 endpoint.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Admin {
    /// `ip:port` serving `/metrics`, `/healthz`, `/ready` and `/config`.
    pub(crate) address: SocketAddr,
}

/// `[access_log]`: one JSON line per call.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AccessLogConfig {
    /// A file to append to, or `-` for standard output.
    pub(crate) path: String,
}

/// `[server]`: process-wide behaviour.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Server {
    /// On SIGTERM/SIGINT, how long in-flight calls may take to finish.
    #[serde(with = "super::duration")]
    pub(crate) drain_timeout: Duration,
    /// Also reload when the file changes (checked every second), not only on SIGHUP.
    pub(crate) watch_config: bool,
    /// Threads that run calls (at least 1); default: one per core. Each runs its own event
    /// loop, listener sockets and backend connections (see `workers.rs`).
    pub(crate) worker_threads: Option<usize>,
    /// Start even while another process listens on the same addresses, and share them
    /// with it (`SO_REUSEPORT`): for a hand-off from an old process to a new one. Off: the
    /// process fails at start with "address in use".
    pub(crate) reuse_port: bool,
    /// Close (GOAWAY) each client connection this long after it opened, so that clients
    /// reconnect and spread over replicas behind an L4 balancer. Default: never.
    #[serde(with = "super::duration::option")]
    pub(crate) max_connection_age: Option<Duration>,
    /// Spread of the age (0.1: within ±10 %).
    pub(crate) max_connection_age_jitter: f64,
    /// How long calls on an aged connection may still run; default: until they finish.
    #[serde(with = "super::duration::option")]
    pub(crate) max_connection_age_grace: Option<Duration>,
}

impl Default for Server {
    fn default() -> Self {
        Self {
            drain_timeout: Duration::from_secs(30),
            watch_config: false,
            worker_threads: None,
            reuse_port: false,
            max_connection_age: None,
            max_connection_age_jitter: 0.1,
            max_connection_age_grace: None,
        }
    }
}

/// `[limits]`: protections for the proxy and its backends.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Limits {
    /// Largest message in either direction, in bytes (`RESOURCE_EXHAUSTED` beyond).
    pub(crate) max_message_size: Option<u32>,
    /// Streams one client connection may have open at once.
    pub(crate) max_concurrent_streams: u32,
    /// Client connections open at once, per listener; more wait in the accept backlog.
    pub(crate) max_connections: usize,
    /// Largest request header list, in bytes.
    pub(crate) max_header_list_size: u32,
    /// How long a new connection may take to start HTTP/2.
    #[serde(with = "super::duration")]
    pub(crate) handshake_timeout: Duration,
    /// HTTP/2 PING interval on client and backend connections (none: off).
    #[serde(with = "super::duration::option")]
    pub(crate) keepalive_interval: Option<Duration>,
    /// How long a PING may go unanswered before the connection is closed.
    #[serde(with = "super::duration")]
    pub(crate) keepalive_timeout: Duration,
    /// Close a client connection with no open stream for this long ("0s": never).
    #[serde(with = "super::duration")]
    pub(crate) idle_timeout: Duration,
    /// End a call on which no message has moved either way for this long, with
    /// `DEADLINE_EXCEEDED` ("0s", the default: never; quiet watch streams are legitimate).
    #[serde(with = "super::duration")]
    pub(crate) stream_idle_timeout: Duration,
    /// Distinct methods a route counts by name in `grpcproxy_requests_total`; calls of
    /// further methods are counted as `method="other"` (clients choose method names).
    pub(crate) max_methods_per_route: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message_size: None,
            max_concurrent_streams: 1024,
            max_connections: 10_000,
            max_header_list_size: 16 << 10,
            handshake_timeout: Duration::from_secs(10),
            keepalive_interval: None,
            keepalive_timeout: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(3600),
            stream_idle_timeout: Duration::ZERO,
            max_methods_per_route: 256,
        }
    }
}

/// `[[listeners]]`: where clients connect.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Listener {
    /// `ip:port`; port 0 picks a free port (logged at start).
    pub(crate) address: SocketAddr,
    /// Terminate TLS here (ALPN h2). Without it: cleartext HTTP/2 (h2c).
    pub(crate) tls: Option<ListenerTls>,
    /// Serve gRPC-Web (binary and text, HTTP/1.1 and HTTP/2) besides gRPC, for browsers.
    #[serde(default)]
    pub(crate) grpc_web: bool,
    /// Which other origins' pages may call (gRPC-Web); none if absent.
    pub(crate) cors: Option<Spanned<CorsConfig>>,
    /// Serve one server reflection (v1 and v1alpha) merged from every routed cluster.
    #[serde(default)]
    pub(crate) reflection: bool,
    /// How long a cluster's list of services is kept (default 10 s).
    #[serde(default, with = "super::duration::option")]
    pub(crate) reflection_cache_ttl: Option<Duration>,
}

/// `cors = { ... }` of a gRPC-Web listener.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CorsConfig {
    /// Exact origins (`https://app.example`), or `"*"` for any.
    pub(crate) allow_origins: Vec<String>,
    /// Request headers pages may send besides the ones gRPC-Web needs.
    #[serde(default)]
    pub(crate) allow_headers: Vec<String>,
    /// Response headers pages may read besides `grpc-status`, `grpc-message` and
    /// `grpc-status-details-bin`.
    #[serde(default)]
    pub(crate) expose_headers: Vec<String>,
    /// How long browsers may cache a preflight's answer.
    #[serde(default, with = "super::duration::option")]
    pub(crate) max_age: Option<Duration>,
}

impl CorsConfig {
    /// The library's policy, or why it cannot be one.
    pub(crate) fn policy(&self) -> Result<grpcproxy::web::Cors, grpcproxy::web::CorsError> {
        let cors = grpcproxy::web::Cors::allow_origins(&self.allow_origins)?
            .allow_headers(&self.allow_headers)?
            .expose_headers(&self.expose_headers)?;
        Ok(match self.max_age {
            Some(age) => cors.max_age(age),
            None => cors,
        })
    }
}

/// TLS on a listener.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListenerTls {
    /// PEM certificate chain, leaf first.
    pub(crate) cert: String,
    /// PEM private key.
    pub(crate) key: String,
    /// PEM CA bundle: when set, clients must present a certificate it signed (mTLS).
    pub(crate) client_ca: Option<String>,
}

/// `retry_budget = { ... }` of a cluster: retries at most `ratio` of the calls plus
/// `min_per_second`, over 10 s.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RetryBudget {
    pub(crate) ratio: f64,
    #[serde(default = "ten")]
    pub(crate) min_per_second: u32,
}

fn ten() -> u32 {
    10
}

/// Load balancing across a cluster's endpoints.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Balance {
    /// Power of two random choices, on in-flight calls.
    #[default]
    P2c,
    /// Each endpoint in turn.
    RoundRobin,
}

/// `[clusters.NAME]`: a set of equivalent backends.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Cluster {
    /// `host:port` of every endpoint.
    pub(crate) endpoints: Spanned<Vec<String>>,
    #[serde(default)]
    pub(crate) balance: Balance,
    /// HTTP/2 connections calls are spread over to each endpoint from the start.
    #[serde(default = "one")]
    pub(crate) connections_per_endpoint: usize,
    /// Calls one connection carries before the next call opens another connection.
    #[serde(default = "hundred")]
    pub(crate) max_streams_per_connection: usize,
    /// The most connections made to each endpoint.
    #[serde(default = "sixty_four")]
    pub(crate) max_connections_per_endpoint: usize,
    #[serde(default = "five_seconds", with = "super::duration")]
    pub(crate) connect_timeout: Duration,
    pub(crate) tls: Option<Spanned<ClusterTls>>,
    /// Active health checks (`grpc.health.v1.Health/Check`); off if absent.
    pub(crate) health_check: Option<HealthCheck>,
    /// Passive ejection of endpoints that keep failing.
    #[serde(default)]
    pub(crate) outlier: Outlier,
    /// Below this share of endpoints available (percent, 0 to 100), calls are balanced
    /// over all endpoints, available or not (Envoy's panic threshold); 0 turns it off.
    #[serde(default = "fifty")]
    pub(crate) panic_threshold: u8,
    /// How often endpoint names are resolved again (every address of a name is an endpoint).
    #[serde(default = "thirty_seconds", with = "super::duration")]
    pub(crate) dns_refresh: Duration,
    /// Calls open at once on the cluster; more are shed with UNAVAILABLE (none by default).
    pub(crate) max_in_flight: Option<usize>,
    /// Limit on the retries of the routes to this cluster (none by default).
    pub(crate) retry_budget: Option<Spanned<RetryBudget>>,
}

fn hundred() -> usize {
    100
}
fn fifty() -> u8 {
    50
}

fn sixty_four() -> usize {
    64
}

fn thirty_seconds() -> Duration {
    Duration::from_secs(30)
}

/// `[clusters.NAME.health_check]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HealthCheck {
    /// Time between checks of each endpoint.
    #[serde(with = "super::duration", default = "five_seconds")]
    pub(crate) interval: Duration,
    /// How long one check may take.
    #[serde(with = "super::duration", default = "one_second")]
    pub(crate) timeout: Duration,
    /// Failed checks in a row that mark an endpoint down.
    #[serde(default = "two")]
    pub(crate) unhealthy_threshold: u32,
    /// Passed checks in a row that bring it back.
    #[serde(default = "two")]
    pub(crate) healthy_threshold: u32,
    /// The service name to ask about ("" is the server as a whole).
    #[serde(default)]
    pub(crate) service: String,
}

/// `[clusters.NAME.outlier]`: eject an endpoint after consecutive UNAVAILABLE results
/// (including connection failures), for `base_ejection` doubling up to `max_ejection`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Outlier {
    /// Failures in a row that eject; 0 turns passive ejection off.
    pub(crate) consecutive_failures: u32,
    #[serde(with = "super::duration")]
    pub(crate) base_ejection: Duration,
    #[serde(with = "super::duration")]
    pub(crate) max_ejection: Duration,
}

impl Default for Outlier {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            base_ejection: Duration::from_secs(10),
            max_ejection: Duration::from_secs(300),
        }
    }
}

fn one_second() -> Duration {
    Duration::from_secs(1)
}

fn two() -> u32 {
    2
}

fn one() -> usize {
    1
}

/// What an instance name must be, for the errors that refuse one.
pub(crate) const INSTANCE_RULE: &str = "1 to 128 visible characters without spaces";

/// Whether `name` can name a process in tap events and a NATS header: 1 to 128 visible
/// ASCII characters ([`INSTANCE_RULE`]).
pub(crate) fn valid_instance(name: &str) -> bool {
    (1..=128).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_graphic())
}

fn five_seconds() -> Duration {
    Duration::from_secs(5)
}

/// TLS towards a cluster's endpoints.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ClusterTls {
    /// PEM CA bundle to verify endpoints with (default: the system's roots).
    pub(crate) ca: Option<String>,
    /// PEM client certificate chain, for mutual TLS (with `key`).
    pub(crate) cert: Option<String>,
    /// PEM private key of `cert`.
    pub(crate) key: Option<String>,
    /// Name to send as SNI and verify (default: the endpoint's host).
    pub(crate) server_name: Option<String>,
}

impl Config {
    /// The configuration as TOML with secrets (key paths, metadata values) redacted.
    pub fn redacted_toml(&self) -> String {
        const REDACTED: &str = "<redacted>";
        let mut config = self.clone();
        for listener in config.listeners.get_mut() {
            if let Some(tls) = &mut listener.tls {
                tls.key = REDACTED.into();
            }
        }
        for cluster in config.clusters.values_mut() {
            if let Some(tls) = &mut cluster.tls {
                if let Some(key) = &mut tls.get_mut().key {
                    *key = REDACTED.into();
                }
            }
        }
        if let Some(tracing) = &mut config.tracing {
            tracing
                .get_mut()
                .headers
                .values_mut()
                .for_each(|v| *v = REDACTED.into());
        }
        if let Some(tap) = &mut config.tap {
            if let Some(url) = &mut tap.get_mut().nats_url {
                *url = grpcproxy::mq::redact_url(url);
            }
        }
        for route in &mut config.routes {
            if let Some(set) = &mut route.request_metadata.set {
                set.get_mut()
                    .values_mut()
                    .for_each(|v| *v = REDACTED.into());
            }
        }
        toml::to_string(&config)
            .unwrap_or_else(|e| format!("# cannot render the configuration: {e}\n"))
    }

    /// The checks serde cannot make: every problem found, not only the first.
    pub(crate) fn check(&self) -> Result<Vec<CompiledRoute>, Vec<Problem>> {
        let mut problems = Vec::new();
        let mut compiled_routes = Vec::with_capacity(self.routes.len());
        if self.listeners.get_ref().is_empty() {
            problems.push(Problem::new(
                self.listeners.span(),
                "listeners: at least one listener is needed",
            ));
        }
        for (i, listener) in self.listeners.get_ref().iter().enumerate() {
            if listener.reflection_cache_ttl.is_some() && !listener.reflection {
                problems.push(Problem::new(
                    self.listeners.span(),
                    format!("listeners[{i}].reflection_cache_ttl: only with reflection = true on this listener"),
                ));
            }
            let Some(cors) = &listener.cors else { continue };
            if !listener.grpc_web {
                problems.push(Problem::new(
                    cors.span(),
                    format!("listeners[{i}].cors: CORS applies to gRPC-Web; set grpc_web = true on this listener"),
                ));
            }
            if cors.get_ref().allow_origins.is_empty() {
                problems.push(Problem::new(
                    cors.span(),
                    format!("listeners[{i}].cors.allow_origins: at least one origin (or \"*\") is needed"),
                ));
            } else if let Err(e) = cors.get_ref().policy() {
                problems.push(Problem::new(
                    cors.span(),
                    format!("listeners[{i}].cors: {e}"),
                ));
            }
        }
        if let Some(tracing) = &self.tracing {
            let span = tracing.span();
            let tracing = tracing.get_ref();
            let endpoint_ok = tracing
                .otlp_endpoint
                .parse::<http::Uri>()
                .ok()
                .is_some_and(|uri| {
                    matches!(uri.scheme_str(), Some("http" | "https")) && uri.host().is_some()
                });
            if !endpoint_ok {
                problems.push(Problem::new(
                    span.clone(),
                    format!(
                        "tracing.otlp_endpoint: {:?} is not an http:// or https:// URL with a host",
                        tracing.otlp_endpoint
                    ),
                ));
            }
            if !(0.0..=1.0).contains(&tracing.sample_rate) {
                problems.push(Problem::new(
                    span.clone(),
                    format!(
                        "tracing.sample_rate: {} is not a share of the calls (0 to 1)",
                        tracing.sample_rate
                    ),
                ));
            }
            for (name, value) in &tracing.headers {
                let valid = http::HeaderName::try_from(name.as_str()).is_ok()
                    && http::HeaderValue::try_from(value.as_str()).is_ok()
                    && name.bytes().all(|b| !b.is_ascii_uppercase());
                if !valid {
                    problems.push(Problem::new(
                        span.clone(),
                        format!("tracing.headers: {name:?} is not a lowercase header name with a valid value"),
                    ));
                }
            }
        }
        let server = &self.server;
        // `[server]` keeps no positions: these name the key instead.
        if server.max_connection_age.is_some_and(|age| age.is_zero()) {
            problems.push(Problem {
                span: None,
                message: "server.max_connection_age: \"0s\" would close every connection at once; leave it out to keep connections".into(),
            });
        }
        if !(0.0..1.0).contains(&server.max_connection_age_jitter) {
            problems.push(Problem {
                span: None,
                message: format!(
                    "server.max_connection_age_jitter: {} is not a fraction below 1 (0.1 is ±10 %)",
                    server.max_connection_age_jitter
                ),
            });
        }
        for (name, cluster) in &self.clusters {
            let endpoints = &cluster.endpoints;
            if endpoints.get_ref().is_empty() {
                problems.push(Problem::new(
                    endpoints.span(),
                    format!("clusters.{name}.endpoints: at least one endpoint is needed"),
                ));
            }
            for endpoint in endpoints.get_ref() {
                if !is_host_port(endpoint) {
                    problems.push(Problem::new(
                        endpoints.span(),
                        format!("clusters.{name}.endpoints: {endpoint:?} is not host:port"),
                    ));
                }
            }
            for (field, value) in [
                ("connections_per_endpoint", cluster.connections_per_endpoint),
                (
                    "max_streams_per_connection",
                    cluster.max_streams_per_connection,
                ),
                (
                    "max_connections_per_endpoint",
                    cluster.max_connections_per_endpoint,
                ),
            ] {
                if value == 0 {
                    problems.push(Problem::new(
                        endpoints.span(),
                        format!("clusters.{name}.{field} must be at least 1"),
                    ));
                }
            }
            if cluster.panic_threshold > 100 {
                problems.push(Problem::new(
                    endpoints.span(),
                    format!(
                        "clusters.{name}.panic_threshold: {} is not a percentage (0 to 100)",
                        cluster.panic_threshold
                    ),
                ));
            }
            if cluster.max_in_flight == Some(0) {
                problems.push(Problem::new(
                    endpoints.span(),
                    format!("clusters.{name}.max_in_flight: 0 would shed every call"),
                ));
            }
            if let Some(budget) = &cluster.retry_budget {
                let ratio = budget.get_ref().ratio;
                if !(0.0..=1.0).contains(&ratio) {
                    problems.push(Problem::new(
                        budget.span(),
                        format!("clusters.{name}.retry_budget.ratio: {ratio} is not a share of the calls (0 to 1)"),
                    ));
                }
            }
            if cluster.max_connections_per_endpoint < cluster.connections_per_endpoint {
                problems.push(Problem::new(
                    endpoints.span(),
                    format!(
                        "clusters.{name}.max_connections_per_endpoint ({}) is below connections_per_endpoint ({})",
                        cluster.max_connections_per_endpoint, cluster.connections_per_endpoint
                    ),
                ));
            }
            if let Some(tls) = &cluster.tls {
                let t = tls.get_ref();
                if t.cert.is_some() != t.key.is_some() {
                    problems.push(Problem::new(
                        tls.span(),
                        format!("clusters.{name}.tls: cert and key go together"),
                    ));
                }
            }
        }
        if self.server.worker_threads == Some(0) {
            problems.push(Problem {
                span: None,
                message: "server.worker_threads: must be at least 1".into(),
            });
        }
        if let Some(tap) = &self.tap {
            let t = tap.get_ref();
            if t.nats_url.is_some() == t.file.is_some() {
                problems.push(Problem::new(
                    tap.span(),
                    "tap: give exactly one of nats_url and file",
                ));
            }
            let nats_only = [
                ("credentials_file", t.credentials_file.is_some()),
                ("token_file", t.token_file.is_some()),
                ("tls", t.tls.is_some()),
                ("replicas", t.replicas != 1),
            ];
            for (field, given) in nats_only {
                if given && t.nats_url.is_none() {
                    problems.push(Problem::new(
                        tap.span(),
                        format!("tap.{field}: only for nats_url"),
                    ));
                }
            }
            if t.credentials_file.is_some() && t.token_file.is_some() {
                problems.push(Problem::new(
                    tap.span(),
                    "tap: give at most one of credentials_file and token_file",
                ));
            }
            if let Some(tls) = &t.tls {
                if tls.cert.is_some() != tls.key.is_some() {
                    problems.push(Problem::new(
                        tap.span(),
                        "tap.tls: cert and key go together",
                    ));
                }
            }
            let files = [
                ("credentials_file", &t.credentials_file),
                ("token_file", &t.token_file),
                ("tls.ca", &t.tls.as_ref().and_then(|t| t.ca.clone())),
                ("tls.cert", &t.tls.as_ref().and_then(|t| t.cert.clone())),
                ("tls.key", &t.tls.as_ref().and_then(|t| t.key.clone())),
            ];
            for (field, path) in files {
                if let Some(path) = path {
                    if let Err(e) = std::fs::File::open(path) {
                        problems.push(Problem::new(
                            tap.span(),
                            format!("tap.{field}: cannot read {path}: {e}"),
                        ));
                    }
                }
            }
            if let Some(file) = &t.file {
                let dir = std::path::Path::new(file)
                    .parent()
                    .filter(|d| !d.as_os_str().is_empty())
                    .unwrap_or(std::path::Path::new("."));
                if !dir.is_dir() {
                    problems.push(Problem::new(
                        tap.span(),
                        format!("tap.file: the directory {} does not exist", dir.display()),
                    ));
                }
            }
            if t.max_bytes < 1 {
                problems.push(Problem::new(
                    tap.span(),
                    format!("tap.max_bytes: {} is not a size in bytes", t.max_bytes),
                ));
            }
            if t.max_age.is_zero() || t.publish_retry.is_zero() {
                problems.push(Problem::new(
                    tap.span(),
                    "tap.max_age and tap.publish_retry must be longer than 0s",
                ));
            }
            if !(0.0..=1.0).contains(&t.sample_rate) {
                problems.push(Problem::new(
                    tap.span(),
                    format!("tap.sample_rate: {} is not between 0 and 1", t.sample_rate),
                ));
            }
            if !(1..=5).contains(&t.replicas) {
                problems.push(Problem::new(
                    tap.span(),
                    format!(
                        "tap.replicas: {} is not 1 to 5 (the copies JetStream keeps of the stream)",
                        t.replicas
                    ),
                ));
            }
            if let Some(instance) = t.instance.as_deref().filter(|i| !valid_instance(i)) {
                problems.push(Problem::new(
                    tap.span(),
                    format!("tap.instance: {instance:?} is not {INSTANCE_RULE}"),
                ));
            }
        }
        let known: Vec<&str> = self.clusters.keys().map(String::as_str).collect();
        let known = if known.is_empty() {
            "none are defined".to_owned()
        } else {
            format!("defined: {}", known.join(", "))
        };
        for (i, route) in self.routes.iter().enumerate() {
            let cluster = &route.cluster;
            if !self.clusters.contains_key(cluster.get_ref()) {
                problems.push(Problem::new(
                    cluster.span(),
                    format!(
                        "routes[{i}].cluster: no cluster named {:?} ({known})",
                        cluster.get_ref()
                    ),
                ));
            }
            if let Some(fan) = &route.fan_out {
                for member in &fan.get_ref().clusters {
                    if !self.clusters.contains_key(member) {
                        problems.push(Problem::new(
                            fan.span(),
                            format!("routes[{i}].fan_out.clusters: no cluster named {member:?} ({known})"),
                        ));
                    }
                }
            }
            if let Some(mirror) = &route.mirror {
                let shadow = &mirror.get_ref().cluster;
                if !self.clusters.contains_key(shadow) {
                    problems.push(Problem::new(
                        mirror.span(),
                        format!(
                            "routes[{i}].mirror.cluster: no cluster named {shadow:?} ({known})"
                        ),
                    ));
                }
            }
            if let Some(compiled) = route.compile(i, &mut problems) {
                compiled_routes.push(compiled);
            }
        }
        if problems.is_empty() {
            Ok(compiled_routes)
        } else {
            Err(problems)
        }
    }
}

impl Config {
    /// What is valid but almost surely not meant: a route that can never match, because an
    /// earlier one matches every call it would (a catch-all, or the same conditions).
    pub(crate) fn warnings(&self) -> Vec<Problem> {
        let mut warnings = Vec::new();
        for (i, route) in self.routes.iter().enumerate() {
            let shadowing = self.routes[..i].iter().enumerate().find(|(_, earlier)| {
                earlier.matches.matches_everything()
                    || earlier.matches.same_conditions(&route.matches)
            });
            if let Some((j, earlier)) = shadowing {
                let why = if earlier.matches.matches_everything() {
                    "matches every call"
                } else {
                    "has the same match"
                };
                warnings.push(Problem::new(
                    route.cluster.span(),
                    format!("routes[{i}] can never match: routes[{j}] comes first and {why} (first match wins)"),
                ));
            }
        }
        warnings
    }
}

fn is_host_port(endpoint: &str) -> bool {
    match endpoint.rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0),
        None => false,
    }
}
