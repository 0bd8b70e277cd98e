//! One route's metric handles, and the observers that feed them and the access log.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, PoisonError, RwLock};

use grpcproxy::{CallObserver, CallRecord};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;

use super::{CallLabels, RouteLabels, Telemetry};
use crate::cluster::Cluster;

/// Number of gRPC status codes (`OK` = 0 … `UNAUTHENTICATED` = 16).
const STATUS_CODES: usize = 17;

/// A method's `requests` counters, by grpc-status, created on first use.
type MethodCounters = [OnceLock<Counter>; STATUS_CODES];

/// One route's metrics. The handles share their values with the registry's families, so a
/// call bumps an atomic instead of hashing and cloning its labels.
#[derive(Debug)]
pub(crate) struct RouteMetrics {
    pub(super) labels: RouteLabels,
    pub(super) duration: Histogram,
    pub(super) request_bytes: Counter,
    pub(super) response_bytes: Counter,
    pub(super) requests: Family<CallLabels, Counter>,
    /// Hashed with foldhash, not SipHash: looked up on every call, and never larger than
    /// `max_methods`, so a client's choice of names cannot make it slow.
    pub(super) by_method: RwLock<HashMap<Box<str>, MethodCounters, foldhash::fast::RandomState>>,
    /// Methods counted by name; the calls of further ones count as `other`.
    pub(super) max_methods: usize,
}

/// The `method` label of calls beyond a route's `max_methods_per_route`.
const OTHER: &str = "other";

impl RouteMetrics {
    pub(super) fn record(&self, call: &CallRecord<'_>) {
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
        // Method names are the client's to choose: past the cap, one label for the rest.
        let method = if by_method.len() >= self.max_methods && !by_method.contains_key(method) {
            OTHER
        } else {
            method
        };
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

    /// Metrics and the access log count bytes, not messages (a traced call's span
    /// observer, around this one, does).
    fn counts_messages(&self) -> bool {
        false
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
