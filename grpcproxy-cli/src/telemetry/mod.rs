//! Metrics (Prometheus / OpenMetrics text) and the access log, fed by call observers: the
//! registry here, the per-route handles and observers in `route`, what is read at scrape
//! time in `collector`, the access log's writer in `access_log`.

mod access_log;
mod collector;
mod route;
mod traces;

pub(crate) use access_log::AccessLog;
pub(crate) use route::{RouteMetrics, RouteObserver, Unrouted};
pub(crate) use traces::{RouteTracer, Tracing};

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use arc_swap::ArcSwap;
use grpcproxy::mq::QueueStats;
use grpcproxy::policy::{FanOutStats, HedgeStats, MirrorStats, RetryStats};
use grpcproxy::reflection::ReflectionStats;
use grpcproxy::server::ServerStats;
use grpcproxy::trace::SpanQueueStats;
use grpcproxy::web::WebStats;
use grpcproxy::{CallRecord, ProxyStats};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::cluster::Cluster;
use collector::UpstreamCollector;

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
    web: Arc<OnceLock<Arc<WebStats>>>,
    reflection: Arc<OnceLock<Arc<ReflectionStats>>>,
    spans: Arc<OnceLock<Arc<SpanQueueStats>>>,
    /// `[tracing]`, once started.
    tracing: OnceLock<Tracing>,
    access_log: Option<AccessLog>,
    /// Policy counts by route name.
    policies: PolicyCountsByRoute,
}

/// What a route's policies did, kept across reloads (a counter never goes back).
#[derive(Debug, Default)]
pub(crate) struct PolicyCounts {
    pub(crate) retries: Arc<RetryStats>,
    pub(crate) hedges: Arc<HedgeStats>,
    pub(crate) mirrors: Arc<MirrorStats>,
    pub(crate) fan_outs: Arc<FanOutStats>,
    /// Calls refused by the route's rate limit.
    pub(crate) rate_limited: AtomicU64,
    /// Calls refused because their client had `max_in_flight_per_peer` calls open.
    pub(crate) peer_limited: AtomicU64,
}

/// Each route's policy counts, by route name.
pub(super) type PolicyCountsByRoute = Arc<Mutex<BTreeMap<String, Arc<PolicyCounts>>>>;

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
        let web = Arc::new(OnceLock::new());
        let reflection = Arc::new(OnceLock::new());
        let spans = Arc::new(OnceLock::new());
        let policies = Arc::new(Mutex::new(BTreeMap::new()));
        registry.register_collector(Box::new(UpstreamCollector {
            policies: policies.clone(),
            clusters: clusters.clone(),
            access_log_dropped: dropped,
            tap: tap.clone(),
            server: server.clone(),
            web: web.clone(),
            reflection: reflection.clone(),
            spans: spans.clone(),
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
            web,
            reflection,
            spans,
            tracing: OnceLock::new(),
            access_log,
            policies,
        }
    }

    /// Writes out what the access log still holds (at exit), waiting up to `within`.
    pub(crate) async fn flush_access_log(&self, within: std::time::Duration) {
        if let Some(log) = &self.access_log {
            if !log.flush(within).await {
                tracing::warn!("access log not flushed in time; its last lines may be lost");
            }
        }
    }

    /// The policy counts of route `route`, kept across reloads.
    pub(crate) fn policy_counts(&self, route: &str) -> Arc<PolicyCounts> {
        let mut policies = self.policies.lock().unwrap_or_else(|e| e.into_inner());
        policies.entry(route.to_owned()).or_default().clone()
    }

    /// Exports the listeners' connection counters (once, before serving).
    pub(crate) fn set_server(&self, stats: Arc<ServerStats>) {
        let _ = self.server.set(stats);
    }

    /// Exports the gRPC-Web listeners' counters (once, before serving, when a listener
    /// serves gRPC-Web).
    pub(crate) fn set_web(&self, stats: Arc<WebStats>) {
        let _ = self.web.set(stats);
    }

    /// Exports the merged reflection's counters (once, before serving, when a listener
    /// serves it).
    pub(crate) fn set_reflection(&self, stats: Arc<ReflectionStats>) {
        let _ = self.reflection.set(stats);
    }

    /// Traces calls with `tracing` from now on (once, before serving), and exports its
    /// counters.
    pub(crate) fn set_tracing(&self, tracing: Tracing) {
        let _ = self.spans.set(tracing.stats());
        let _ = self.tracing.set(tracing);
    }

    /// The tracer routes start calls' spans with, when tracing is on.
    pub(crate) fn tracer(&self) -> Option<&RouteTracer> {
        self.tracing.get().map(|tracing| &tracing.tracer)
    }

    /// Exports the spans still queued (at exit), waiting up to `timeout`.
    pub(crate) async fn flush_tracing(&self, timeout: std::time::Duration) {
        if let Some(tracing) = self.tracing.get() {
            tracing.flush(timeout).await;
        }
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
    pub(crate) fn route_metrics(
        &self,
        route: &str,
        cluster: &str,
        max_methods: usize,
    ) -> RouteMetrics {
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
            max_methods,
            labels,
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
            trace_id: None,
            span_id: None,
            request_messages: 0,
            response_messages: 0,
            attempts: &[],
        }
    }

    #[test]
    fn route_metrics_count_by_method_and_status_across_rebuilds() {
        let telemetry = Telemetry::new(None);
        let before = telemetry.route_metrics("r", "c", 256);
        before.record(&call("/a.S/M", Code::Ok));
        before.record(&call("/a.S/M", Code::Ok));
        before.record(&call("/a.S/M", Code::Unavailable));
        before.record(&call("/a.S/N", Code::Unauthenticated));
        // A reload builds the route again: its counters continue the same series.
        let after = telemetry.route_metrics("r", "c", 256);
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

    #[tokio::test]
    async fn a_flushed_access_log_holds_every_line_logged_before() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let log = super::AccessLog::open(path.to_str().unwrap()).unwrap();
        for _ in 0..5000 {
            log.write("r", "c", &call("/a.S/M", Code::Ok));
        }
        assert!(log.flush(Duration::from_secs(5)).await);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text.lines().count(),
            5000,
            "lines lost before the flush returned"
        );
        assert_eq!(log.dropped.load(std::sync::atomic::Ordering::Relaxed), 0);
    }

    #[test]
    fn methods_past_the_cap_are_counted_as_other() {
        let telemetry = Telemetry::new(None);
        let metrics = telemetry.route_metrics("r", "c", 2);
        for method in ["/a.S/A", "/a.S/B", "/a.S/C", "/a.S/D", "/a.S/A"] {
            metrics.record(&call(method, Code::Ok));
        }
        let text = telemetry.render(&ProxyStats::default());
        for line in [
            r#"grpcproxy_requests_total{route="r",cluster="c",method="/a.S/A",grpc_status="0"} 2"#,
            r#"grpcproxy_requests_total{route="r",cluster="c",method="/a.S/B",grpc_status="0"} 1"#,
            r#"grpcproxy_requests_total{route="r",cluster="c",method="other",grpc_status="0"} 2"#,
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
