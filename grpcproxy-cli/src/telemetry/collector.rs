//! What `/metrics` reads at scrape time: per-endpoint connection counters and health,
//! endpoint counts, panic mode, client connections, the access log's drops, the tap.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;
use grpcproxy::mq::QueueStats;
use grpcproxy::policy::{FanOutResult, MirrorResult};
use grpcproxy::reflection::ReflectionStats;
use grpcproxy::server::ServerStats;
use grpcproxy::trace::SpanQueueStats;
use grpcproxy::web::WebStats;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;

use crate::cluster::{Cluster, Endpoint};

/// A per-endpoint value read at scrape time.
type EndpointValue = fn(&Cluster, &Endpoint) -> u64;

/// The per-endpoint metrics: name, help, counter (else gauge), value.
const PER_ENDPOINT: [(&str, &str, bool, EndpointValue); 6] = [
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
        "upstream_connections_rotated",
        "Backend connections that took no new calls after the proxy reset 5 streams on them that the backend had not yet shown it accepted (a rapid-reset flood passing through)",
        true,
        |_, e| e.upstream.stats().rotated,
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
pub(super) struct UpstreamCollector {
    pub(super) policies: super::PolicyCountsByRoute,
    pub(super) clusters: Arc<ArcSwap<Vec<Arc<Cluster>>>>,
    pub(super) access_log_dropped: Option<Arc<AtomicU64>>,
    pub(super) tap: Arc<OnceLock<Arc<QueueStats>>>,
    pub(super) server: Arc<OnceLock<Arc<ServerStats>>>,
    pub(super) web: Arc<OnceLock<Arc<WebStats>>>,
    pub(super) reflection: Arc<OnceLock<Arc<ReflectionStats>>>,
    pub(super) spans: Arc<OnceLock<Arc<SpanQueueStats>>>,
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
        let policies = self.policies.lock().unwrap_or_else(|e| e.into_inner());
        if !policies.is_empty() {
            let mut metric = encoder.encode_descriptor(
                "retries",
                "Retries by route: made (retried), or not made for lack of budget, buffer, time, or by the backend's pushback",
                None,
                MetricType::Counter,
            )?;
            for (route, counts) in policies.iter() {
                let stats = &counts.retries;
                for (result, value) in [
                    ("retried", stats.retries()),
                    ("budget", stats.skipped_budget()),
                    ("buffer", stats.skipped_buffer()),
                    ("pushback", stats.skipped_pushback()),
                    ("deadline", stats.skipped_deadline()),
                ] {
                    let labels = [("route", route.as_str()), ("result", result)];
                    ConstCounter::new(value).encode(metric.encode_family(&labels)?)?;
                }
            }
            let mut metric = encoder.encode_descriptor(
                "hedges",
                "Hedged calls by route: tries sent after the first, answers won by a hedge, tries cancelled because another answered first",
                None,
                MetricType::Counter,
            )?;
            for (route, counts) in policies.iter() {
                let stats = &counts.hedges;
                for (result, value) in [
                    ("sent", stats.hedges()),
                    ("won", stats.won()),
                    ("cancelled", stats.cancelled()),
                ] {
                    let labels = [("route", route.as_str()), ("result", result)];
                    ConstCounter::new(value).encode(metric.encode_family(&labels)?)?;
                }
            }
            let mut metric = encoder.encode_descriptor(
                "mirror_calls",
                "Mirrored calls by route: answers compared equal (match) or not (differ), not mirrored or not finished (dropped), shadow failed (error), answered but not compared (sent)",
                None,
                MetricType::Counter,
            )?;
            for (route, counts) in policies.iter() {
                let stats = &counts.mirrors;
                for (result, which) in [
                    ("match", MirrorResult::Match),
                    ("differ", MirrorResult::Differ),
                    ("dropped", MirrorResult::Dropped),
                    ("error", MirrorResult::Error),
                    ("sent", MirrorResult::Sent),
                ] {
                    let labels = [("route", route.as_str()), ("result", result)];
                    ConstCounter::new(stats.count(which)).encode(metric.encode_family(&labels)?)?;
                }
            }
            let mut metric = encoder.encode_descriptor(
                "fanout_calls",
                "Fanned-out calls by route: every member OK (ok), OK to the client though some members failed (partial), an error to the client (failed)",
                None,
                MetricType::Counter,
            )?;
            for (route, counts) in policies.iter() {
                for (result, which) in [
                    ("ok", FanOutResult::Ok),
                    ("partial", FanOutResult::Partial),
                    ("failed", FanOutResult::Failed),
                ] {
                    let labels = [("route", route.as_str()), ("result", result)];
                    ConstCounter::new(counts.fan_outs.count(which))
                        .encode(metric.encode_family(&labels)?)?;
                }
            }
            for (name, help, value) in [
                (
                    "rate_limited",
                    "Calls refused by a route's rate limit (RESOURCE_EXHAUSTED)",
                    (|c: &super::PolicyCounts| c.rate_limited.load(Ordering::Relaxed)) as fn(&super::PolicyCounts) -> u64,
                ),
                (
                    "peer_limited",
                    "Calls refused because their client had max_in_flight_per_peer calls open (RESOURCE_EXHAUSTED)",
                    |c| c.peer_limited.load(Ordering::Relaxed),
                ),
            ] {
                let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
                for (route, counts) in policies.iter() {
                    ConstCounter::new(value(counts))
                        .encode(metric.encode_family(&[("route", route.as_str())])?)?;
                }
            }
        }
        drop(policies);
        let mut metric = encoder.encode_descriptor(
            "cluster_shed",
            "Calls refused because their cluster had max_in_flight calls open (UNAVAILABLE)",
            None,
            MetricType::Counter,
        )?;
        for cluster in clusters.iter() {
            ConstCounter::new(cluster.shed())
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
            let metric = encoder.encode_descriptor(
                "client_connections_aged",
                "Client connections closed (GOAWAY) at server.max_connection_age",
                None,
                MetricType::Counter,
            )?;
            ConstCounter::new(server.connections_aged()).encode(metric)?;
        }
        if let Some(web) = self.web.get() {
            let mut metric = encoder.encode_descriptor(
                "grpc_web_requests",
                "gRPC-Web requests by kind (binary, text, preflight, other HTTP/1.1) and result",
                None,
                MetricType::Counter,
            )?;
            for (kind, outcome, count) in web.all() {
                let labels = [("kind", kind.as_str()), ("result", outcome.as_str())];
                ConstCounter::new(count).encode(metric.encode_family(&labels)?)?;
            }
        }
        if let Some(spans) = self.spans.get() {
            let mut metric = encoder.encode_descriptor(
                "tracing_spans",
                "Spans of traced calls: exported, dropped (the export queue was full), failed (the collector refused or timed out)",
                None,
                MetricType::Counter,
            )?;
            for (result, count) in [
                ("exported", spans.exported()),
                ("dropped", spans.dropped()),
                ("failed", spans.failed()),
            ] {
                ConstCounter::new(count).encode(metric.encode_family(&[("result", result)])?)?;
            }
        }
        if let Some(reflection) = self.reflection.get() {
            let metric = encoder.encode_descriptor(
                "reflection_streams",
                "Client server-reflection streams the merged reflection served",
                None,
                MetricType::Counter,
            )?;
            ConstCounter::new(reflection.streams()).encode(metric)?;
            let mut metric = encoder.encode_descriptor(
                "reflection_answers",
                "Reflection questions answered: found, or an error (not found on any backend)",
                None,
                MetricType::Counter,
            )?;
            let (found, not_found) = reflection.answered();
            for (result, count) in [("found", found), ("not_found", not_found)] {
                ConstCounter::new(count).encode(metric.encode_family(&[("result", result)])?)?;
            }
            let metric = encoder.encode_descriptor(
                "reflection_backend_failures",
                "Backends skipped by the merged reflection (down, without reflection, too slow)",
                None,
                MetricType::Counter,
            )?;
            ConstCounter::new(reflection.backend_failures()).encode(metric)?;
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
