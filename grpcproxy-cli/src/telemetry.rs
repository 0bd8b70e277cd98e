//! Metrics (Prometheus / OpenMetrics text) and the access log, fed by call observers.

use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, PoisonError, RwLock};

use arc_swap::ArcSwap;
use grpcproxy::mq::QueueStats;
use grpcproxy::server::ServerStats;
use grpcproxy::{CallObserver, CallRecord, ProxyStats};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use tokio::sync::mpsc;

use crate::cluster::{Cluster, Endpoint};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    route: String,
    cluster: String,
    method: String,
    grpc_status: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
    cluster: String,
}

/// Every metric the proxy exports, and the access log.
#[derive(Debug)]
pub(crate) struct Telemetry {
    registry: Registry,
    requests: Family<CallLabels, Counter>,
    duration: Family<RouteLabels, Histogram>,
    request_bytes: Family<RouteLabels, Counter>,
    response_bytes: Family<RouteLabels, Counter>,
    streams_in_flight: Gauge,
    reloads: Family<ReloadLabels, Counter>,
    clusters: Arc<ArcSwap<Vec<Arc<Cluster>>>>,
    tap: Arc<OnceLock<Arc<QueueStats>>>,
    server: Arc<OnceLock<Arc<ServerStats>>>,
    access_log: Option<AccessLog>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabels {
    result: &'static str,
}

impl Telemetry {
    /// Metrics that live as long as the process (across reloads).
    pub(crate) fn new(access_log: Option<AccessLog>) -> Self {
        let mut registry = Registry::with_prefix("grpcproxy");
        let requests = Family::<CallLabels, Counter>::default();
        registry.register(
            "requests",
            "Calls by route, cluster, method and grpc-status",
            requests.clone(),
        );
        let duration = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.000_25, 2.0, 18))
        });
        registry.register(
            "request_duration_seconds",
            "Call duration, arrival to end of both directions",
            duration.clone(),
        );
        let request_bytes = Family::<RouteLabels, Counter>::default();
        registry.register(
            "request_bytes",
            "DATA bytes received from clients",
            request_bytes.clone(),
        );
        let response_bytes = Family::<RouteLabels, Counter>::default();
        registry.register(
            "response_bytes",
            "DATA bytes sent to clients",
            response_bytes.clone(),
        );
        let streams_in_flight = Gauge::default();
        registry.register(
            "streams_in_flight",
            "Calls in progress",
            streams_in_flight.clone(),
        );
        let reloads = Family::<ReloadLabels, Counter>::default();
        registry.register(
            "config_reloads",
            "Configuration reloads by result (ok, error)",
            reloads.clone(),
        );
        let clusters = Arc::new(ArcSwap::from_pointee(Vec::new()));
        let dropped = access_log.as_ref().map(|log| log.dropped.clone());
        let tap = Arc::new(OnceLock::new());
        let server = Arc::new(OnceLock::new());
        registry.register_collector(Box::new(UpstreamCollector {
            clusters: clusters.clone(),
            access_log_dropped: dropped,
            tap: tap.clone(),
            server: server.clone(),
        }));
        Self {
            registry,
            requests,
            duration,
            request_bytes,
            response_bytes,
            streams_in_flight,
            reloads,
            clusters,
            tap,
            server,
            access_log,
        }
    }

    /// Exports the listeners' connection counters (once, before serving).
    pub(crate) fn set_server(&self, stats: Arc<ServerStats>) {
        let _ = self.server.set(stats);
    }

    /// Exports the tap's counters (once, when the tap starts).
    pub(crate) fn set_tap(&self, stats: Arc<QueueStats>) {
        let _ = self.tap.set(stats);
    }

    /// The clusters whose connection counters are exported (those of the current config).
    pub(crate) fn set_clusters(&self, clusters: Vec<Arc<Cluster>>) {
        self.clusters.store(Arc::new(clusters));
    }

    /// The clusters of the current configuration.
    pub(crate) fn clusters(&self) -> Arc<Vec<Arc<Cluster>>> {
        self.clusters.load_full()
    }

    /// Counts a reload attempt.
    pub(crate) fn reloaded(&self, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.reloads.get_or_create(&ReloadLabels { result }).inc();
    }

    /// The OpenMetrics text of every metric.
    pub(crate) fn render(&self, stats: &ProxyStats) -> String {
        self.streams_in_flight.set(stats.live_streams() as i64);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }

    /// Counts and logs a call answered without a route: none matched, or the proxy
    /// refused it before routing (malformed method, unreadable `grpc-timeout`). Counted
    /// with empty route, cluster and method labels: such methods are attacker-chosen.
    pub(crate) fn unrouted(&self, call: &CallRecord<'_>) {
        self.requests
            .get_or_create(&CallLabels {
                route: String::new(),
                cluster: String::new(),
                method: String::new(),
                grpc_status: (call.grpc_status as i32).to_string(),
            })
            .inc();
        if let Some(log) = &self.access_log {
            log.write("", "", call);
        }
    }

    /// One route's metric handles, resolved once so that a call only bumps atomics.
    pub(crate) fn route_metrics(&self, route: &str, cluster: &str) -> RouteMetrics {
        let labels = RouteLabels {
            route: route.to_owned(),
            cluster: cluster.to_owned(),
        };
        RouteMetrics {
            duration: self.duration.get_or_create(&labels).clone(),
            request_bytes: self.request_bytes.get_or_create(&labels).clone(),
            response_bytes: self.response_bytes.get_or_create(&labels).clone(),
            requests: self.requests.clone(),
            by_method: RwLock::default(),
            labels,
        }
    }
}

/// Number of gRPC status codes (`OK` = 0 … `UNAUTHENTICATED` = 16).
const STATUS_CODES: usize = 17;

/// A method's `requests` counters, by grpc-status, created on first use.
type MethodCounters = [OnceLock<Counter>; STATUS_CODES];

/// One route's metrics. The handles share their values with the registry's families, so a
/// call bumps an atomic instead of hashing and cloning its labels.
#[derive(Debug)]
pub(crate) struct RouteMetrics {
    labels: RouteLabels,
    duration: Histogram,
    request_bytes: Counter,
    response_bytes: Counter,
    requests: Family<CallLabels, Counter>,
    by_method: RwLock<HashMap<Box<str>, MethodCounters>>,
}

impl RouteMetrics {
    fn record(&self, call: &CallRecord<'_>) {
        self.count_request(call.method, call.grpc_status);
        self.duration.observe(call.duration.as_secs_f64());
        self.request_bytes.inc_by(call.request_bytes);
        self.response_bytes.inc_by(call.response_bytes);
    }

    fn count_request(&self, method: &str, status: tonic::Code) {
        if status as usize >= STATUS_CODES {
            // A code this table has no slot for (none today): count it the slow way.
            self.requests
                .get_or_create(&self.call_labels(method, status))
                .inc();
            return;
        }
        let by_method = self
            .by_method
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(counters) = by_method.get(method) {
            self.counter(counters, method, status).inc();
            return;
        }
        drop(by_method);
        let mut by_method = self
            .by_method
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let counters = by_method
            .entry(method.into())
            .or_insert_with(|| std::array::from_fn(|_| OnceLock::new()));
        self.counter(counters, method, status).inc();
    }

    fn counter<'a>(
        &self,
        counters: &'a MethodCounters,
        method: &str,
        status: tonic::Code,
    ) -> &'a Counter {
        // In range: `count_request` checked the code.
        counters[status as usize].get_or_init(|| {
            self.requests
                .get_or_create(&self.call_labels(method, status))
                .clone()
        })
    }

    fn call_labels(&self, method: &str, status: tonic::Code) -> CallLabels {
        CallLabels {
            route: self.labels.route.clone(),
            cluster: self.labels.cluster.clone(),
            method: method.to_owned(),
            grpc_status: (status as i32).to_string(),
        }
    }
}

/// What a route attaches to each of its calls.
#[derive(Debug)]
pub(crate) struct RouteObserver {
    pub(crate) telemetry: Arc<Telemetry>,
    pub(crate) metrics: RouteMetrics,
    pub(crate) route: String,
    pub(crate) cluster: Arc<Cluster>,
}

impl RouteObserver {
    /// Counts and logs a call of this route that the router answered itself (no healthy
    /// endpoint): no endpoint's health is concerned.
    pub(crate) fn refused(&self, call: &CallRecord<'_>) {
        tracing::debug!(route = %self.route, cluster = %self.cluster.name, method = call.method, endpoint = call.backend, grpc_status = call.grpc_status as i32, duration_ms = call.duration.as_secs_f64() * 1e3, "call ended");
        self.metrics.record(call);
        if let Some(log) = &self.telemetry.access_log {
            log.write(&self.route, &self.cluster.name, call);
        }
    }
}

impl CallObserver for RouteObserver {
    fn call_ended(&self, call: &CallRecord<'_>) {
        self.cluster
            .report(call.backend, call.grpc_status, call.unreachable);
        self.refused(call);
    }
}

/// Told about the calls the proxy answers before routing them (malformed method name,
/// unreadable `grpc-timeout`, routing past the deadline).
#[derive(Debug)]
pub(crate) struct Unrouted(pub(crate) Arc<Telemetry>);

impl CallObserver for Unrouted {
    fn call_ended(&self, call: &CallRecord<'_>) {
        self.0.unrouted(call);
    }
}

/// A per-endpoint value read at scrape time.
type EndpointValue = fn(&Cluster, &Endpoint) -> u64;

/// The per-endpoint metrics: name, help, counter (else gauge), value.
const PER_ENDPOINT: [(&str, &str, bool, EndpointValue); 5] = [
    (
        "upstream_connects",
        "Connections made to backends",
        true,
        |_, e| e.upstream.stats().connects,
    ),
    (
        "upstream_connect_failures",
        "Failed connection attempts to backends",
        true,
        |_, e| e.upstream.stats().connect_failures,
    ),
    (
        "upstream_connections",
        "Connections to backends open now",
        false,
        |_, e| e.upstream.stats().open_connections as u64,
    ),
    (
        "endpoint_healthy",
        "1 if the endpoint takes calls (health checks pass, not ejected)",
        false,
        |c, e| u64::from(c.is_available(e)),
    ),
    (
        "endpoint_ejections",
        "Passive ejections of endpoints after consecutive failures",
        true,
        |_, e| e.ejections.load(Ordering::Relaxed),
    ),
];

/// Per-endpoint connection counters and endpoint counts, read at scrape time.
#[derive(Debug)]
struct UpstreamCollector {
    clusters: Arc<ArcSwap<Vec<Arc<Cluster>>>>,
    access_log_dropped: Option<Arc<AtomicU64>>,
    tap: Arc<OnceLock<Arc<QueueStats>>>,
    server: Arc<OnceLock<Arc<ServerStats>>>,
}

/// The tap's metrics: name, help, counter (else gauge), value.
type TapValue = fn(&QueueStats) -> u64;
const TAP: [(&str, &str, bool, TapValue); 4] = [
    (
        "tap_events_published",
        "Tap events delivered (acknowledged by the broker, or written)",
        true,
        QueueStats::published,
    ),
    (
        "tap_events_dropped",
        "Tap events dropped because the tap's buffer was full",
        true,
        QueueStats::dropped,
    ),
    (
        "tap_events_failed",
        "Tap events the destination refused (broker error or ack timeout, write error)",
        true,
        QueueStats::failed,
    ),
    (
        "tap_connected",
        "1 while the tap's destination is reachable",
        false,
        |s| u64::from(s.connected()),
    ),
];

impl Collector for UpstreamCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let clusters = self.clusters.load();
        for (name, help, counter, value) in PER_ENDPOINT {
            let kind = if counter {
                MetricType::Counter
            } else {
                MetricType::Gauge
            };
            let mut metric = encoder.encode_descriptor(name, help, None, kind)?;
            for cluster in clusters.iter() {
                for endpoint in cluster.endpoints() {
                    let labels = [
                        ("cluster", cluster.name.as_str()),
                        ("endpoint", endpoint.upstream.address()),
                    ];
                    let value = value(cluster, &endpoint);
                    let family = metric.encode_family(&labels)?;
                    if counter {
                        ConstCounter::new(value).encode(family)?;
                    } else {
                        ConstGauge::new(value as i64).encode(family)?;
                    }
                }
            }
        }
        let mut metric = encoder.encode_descriptor(
            "cluster_endpoints",
            "Endpoints per cluster",
            None,
            MetricType::Gauge,
        )?;
        for cluster in clusters.iter() {
            ConstGauge::new(cluster.endpoints().len() as i64)
                .encode(metric.encode_family(&[("cluster", cluster.name.as_str())])?)?;
        }
        let mut metric = encoder.encode_descriptor(
            "cluster_panic",
            "1 while a cluster balances over all its endpoints, too few being available",
            None,
            MetricType::Gauge,
        )?;
        for cluster in clusters.iter() {
            ConstGauge::new(i64::from(cluster.in_panic()))
                .encode(metric.encode_family(&[("cluster", cluster.name.as_str())])?)?;
        }
        if let Some(server) = self.server.get() {
            let metric = encoder.encode_descriptor(
                "client_connections",
                "Client connections open now (handshakes included)",
                None,
                MetricType::Gauge,
            )?;
            ConstGauge::new(server.open_connections() as i64).encode(metric)?;
            let metric = encoder.encode_descriptor(
                "client_connections_accepted",
                "Client connections accepted",
                None,
                MetricType::Counter,
            )?;
            ConstCounter::new(server.connections_accepted()).encode(metric)?;
        }
        if let Some(dropped) = &self.access_log_dropped {
            let metric = encoder.encode_descriptor(
                "access_log_dropped",
                "Access log lines dropped because the writer fell behind",
                None,
                MetricType::Counter,
            )?;
            ConstCounter::new(dropped.load(Ordering::Relaxed)).encode(metric)?;
        }
        if let Some(tap) = self.tap.get() {
            for (name, help, counter, value) in TAP {
                let kind = if counter {
                    MetricType::Counter
                } else {
                    MetricType::Gauge
                };
                let metric = encoder.encode_descriptor(name, help, None, kind)?;
                if counter {
                    ConstCounter::new(value(tap)).encode(metric)?;
                } else {
                    ConstGauge::new(value(tap) as i64).encode(metric)?;
                }
            }
        }
        Ok(())
    }
}

/// JSON-lines access log, written by a background task; the call path never waits on it.
#[derive(Debug)]
pub(crate) struct AccessLog {
    lines: mpsc::Sender<String>,
    dropped: Arc<AtomicU64>,
}

impl AccessLog {
    /// Writes to `path` (appending), or to stdout for `-`.
    pub(crate) fn open(path: &str) -> std::io::Result<Self> {
        let mut out: Box<dyn Write + Send> = if path == "-" {
            Box::new(std::io::stdout())
        } else {
            Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            )
        };
        let (lines, mut rx) = mpsc::channel::<String>(8192);
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || {
                while let Some(line) = rx.blocking_recv() {
                    if out.write_all(line.as_bytes()).is_err() {
                        break;
                    }
                    if rx.is_empty() {
                        let _ = out.flush();
                    }
                }
            })?;
        Ok(Self {
            lines,
            dropped: Arc::default(),
        })
    }

    fn write(&self, route: &str, cluster: &str, call: &CallRecord<'_>) {
        let mut line = serde_json::json!({
            "time": humantime::format_rfc3339_millis(call.started).to_string(),
            "peer": call.peer.map(|p| p.to_string()),
            "method": call.method,
            "route": route,
            "cluster": cluster,
            "endpoint": Some(call.backend).filter(|b| !b.is_empty()),
            "grpc_status": call.grpc_status as i32,
            "duration_ms": call.duration.as_secs_f64() * 1e3,
            "bytes_in": call.request_bytes,
            "bytes_out": call.response_bytes,
            "grpc_message": call.grpc_message,
            "authority": call.authority,
            "user_agent": call.user_agent,
        })
        .to_string();
        line.push('\n');
        if self.lines.try_send(line).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use grpcproxy::{CallRecord, ProxyStats};
    use tonic::Code;

    use super::Telemetry;

    fn call(method: &str, status: Code) -> CallRecord<'_> {
        CallRecord {
            method,
            peer: None,
            backend: "127.0.0.1:1",
            unreachable: None,
            grpc_status: status,
            started: SystemTime::now(),
            duration: Duration::from_millis(3),
            request_bytes: 10,
            response_bytes: 100,
            grpc_message: None,
            authority: None,
            user_agent: None,
        }
    }

    #[test]
    fn route_metrics_count_by_method_and_status_across_rebuilds() {
        let telemetry = Telemetry::new(None);
        let before = telemetry.route_metrics("r", "c");
        before.record(&call("/a.S/M", Code::Ok));
        before.record(&call("/a.S/M", Code::Ok));
        before.record(&call("/a.S/M", Code::Unavailable));
        before.record(&call("/a.S/N", Code::Unauthenticated));
        // A reload builds the route again: its counters continue the same series.
        let after = telemetry.route_metrics("r", "c");
        after.record(&call("/a.S/M", Code::Ok));
        let text = telemetry.render(&ProxyStats::default());
        for line in [
            r#"grpcproxy_requests_total{route="r",cluster="c",method="/a.S/M",grpc_status="0"} 3"#,
            r#"grpcproxy_requests_total{route="r",cluster="c",method="/a.S/M",grpc_status="14"} 1"#,
            r#"grpcproxy_requests_total{route="r",cluster="c",method="/a.S/N",grpc_status="16"} 1"#,
            r#"grpcproxy_request_duration_seconds_count{route="r",cluster="c"} 5"#,
            r#"grpcproxy_request_bytes_total{route="r",cluster="c"} 50"#,
            r#"grpcproxy_response_bytes_total{route="r",cluster="c"} 500"#,
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in:\n{text}");
        }
        assert_eq!(
            text.matches("grpcproxy_requests_total{").count(),
            3,
            "{text}"
        );
    }
}
