//! Clusters: equivalent backends, their health, and the balancer that picks one per call.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use anyhow::Context;
use grpcproxy::{Http2Settings, Upstream};
use tonic::Code;

use crate::config::{self, Balance, HealthCheck, Outlier};

/// One backend of a cluster, with its load and health.
#[derive(Debug)]
pub(crate) struct Endpoint {
    pub(crate) upstream: Upstream,
    in_flight: Arc<AtomicUsize>,
    /// Passing active health checks (always true without them).
    checked_healthy: AtomicBool,
    consecutive_failures: AtomicU32,
    /// Milliseconds since the cluster's epoch until which the endpoint is ejected.
    ejected_until: AtomicU64,
    /// Ejections since it last served well: each one lasts twice as long.
    recent_ejections: AtomicU32,
    pub(crate) ejections: AtomicU64,
}

impl Endpoint {
    /// Whether it is healthy (checks) and not ejected at `now` (ms since epoch).
    fn available(&self, now: u64) -> bool {
        self.checked_healthy.load(Ordering::Relaxed)
            && self.ejected_until.load(Ordering::Relaxed) <= now
    }
}

/// Counts a call in flight on its endpoint until the call is over.
#[derive(Debug)]
pub(crate) struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The balancer's choice for one call.
#[derive(Debug)]
pub(crate) struct Picked<'a> {
    pub(crate) endpoint: &'a Endpoint,
    /// Where the call goes if `endpoint` cannot be reached.
    pub(crate) alternate: Option<&'a Endpoint>,
    pub(crate) in_flight: InFlight,
}

/// A set of equivalent backends.
#[derive(Debug)]
pub(crate) struct Cluster {
    pub(crate) name: String,
    endpoints: Vec<Endpoint>,
    by_address: HashMap<String, usize>,
    balance: Balance,
    next: AtomicUsize,
    epoch: Instant,
    outlier: Outlier,
    health_check: Option<HealthCheck>,
}

impl Cluster {
    pub(crate) fn build(
        name: &str,
        config: &config::Cluster,
        limits: &config::Limits,
    ) -> anyhow::Result<Self> {
        let tls = config.tls.as_ref().map(|t| t.get_ref());
        let read = |path: &str| {
            std::fs::read(path).with_context(|| format!("clusters.{name}.tls: cannot read {path}"))
        };
        let settings = Http2Settings {
            keep_alive_interval: limits.keepalive_interval,
            keep_alive_timeout: limits.keepalive_timeout,
            ..Http2Settings::default()
        };
        let mut endpoints = Vec::new();
        for address in config.endpoints.get_ref() {
            let scheme = if tls.is_some() { "https" } else { "http" };
            let mut builder = Upstream::builder(&format!("{scheme}://{address}"))?
                .connections(config.connections_per_endpoint)
                .connect_timeout(config.connect_timeout)
                .http2(settings.clone());
            if let Some(tls) = tls {
                if let Some(ca) = &tls.ca {
                    builder = builder.ca_certificates_pem(&read(ca)?)?;
                }
                if let (Some(cert), Some(key)) = (&tls.cert, &tls.key) {
                    builder = builder.client_identity_pem(&read(cert)?, &read(key)?)?;
                }
                if let Some(server_name) = &tls.server_name {
                    builder = builder.server_name(server_name)?;
                }
            }
            let upstream = builder
                .build()
                .with_context(|| format!("clusters.{name}: endpoint {address}"))?;
            endpoints.push(Endpoint {
                upstream,
                in_flight: Arc::default(),
                checked_healthy: AtomicBool::new(true),
                consecutive_failures: AtomicU32::new(0),
                ejected_until: AtomicU64::new(0),
                recent_ejections: AtomicU32::new(0),
                ejections: AtomicU64::new(0),
            });
        }
        let by_address = endpoints
            .iter()
            .enumerate()
            .map(|(i, e)| (e.upstream.address().to_owned(), i))
            .collect();
        Ok(Self {
            name: name.to_owned(),
            endpoints,
            by_address,
            balance: config.balance,
            next: AtomicUsize::new(0),
            epoch: Instant::now(),
            outlier: config.outlier.clone(),
            health_check: config.health_check.clone(),
        })
    }

    /// The cluster's endpoints.
    pub(crate) fn endpoints(&self) -> &[Endpoint] {
        &self.endpoints
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Whether endpoint `endpoint` can take calls now.
    pub(crate) fn is_available(&self, endpoint: &Endpoint) -> bool {
        endpoint.available(self.now())
    }

    /// Picks the endpoint for one call among the available ones (and an alternate), and
    /// counts the call in flight there; `None` when no endpoint is available.
    pub(crate) fn pick(&self) -> Option<Picked<'_>> {
        let now = self.now();
        let available = self.endpoints.iter().filter(|e| e.available(now)).count();
        // The k-th available endpoint, counting from `start`.
        let nth = |start: usize, k: usize| {
            (0..self.endpoints.len())
                .map(|i| &self.endpoints[(start + i) % self.endpoints.len()])
                .filter(|e| e.available(now))
                .nth(k)
        };
        let (endpoint, alternate) = match (available, self.balance) {
            (0, _) => return None,
            (1, _) => (nth(0, 0)?, None),
            (_, Balance::RoundRobin) => {
                let start = self.next.fetch_add(1, Ordering::Relaxed);
                (nth(start, 0)?, nth(start, 1))
            }
            (n, Balance::P2c) => {
                let a = fastrand::usize(..n);
                let b = (a + 1 + fastrand::usize(..n - 1)) % n;
                let (a, b) = (nth(0, a)?, nth(0, b)?);
                let load = |e: &Endpoint| e.in_flight.load(Ordering::Relaxed);
                if load(b) < load(a) {
                    (b, Some(a))
                } else {
                    (a, Some(b))
                }
            }
        };
        endpoint.in_flight.fetch_add(1, Ordering::Relaxed);
        Some(Picked {
            endpoint,
            alternate,
            in_flight: InFlight(endpoint.in_flight.clone()),
        })
    }

    /// Learns from a finished call: UNAVAILABLE (and a backend that could not be reached)
    /// count towards ejection; anything else resets the count.
    pub(crate) fn report(&self, backend: &str, status: Code, unreachable: Option<&str>) {
        if let Some(index) = unreachable.and_then(|address| self.by_address.get(address)) {
            self.failed(&self.endpoints[*index]);
        }
        if let Some(index) = self.by_address.get(backend) {
            let endpoint = &self.endpoints[*index];
            if status == Code::Unavailable {
                self.failed(endpoint);
            } else {
                endpoint.consecutive_failures.store(0, Ordering::Relaxed);
                if endpoint.ejected_until.load(Ordering::Relaxed) <= self.now() {
                    endpoint.recent_ejections.store(0, Ordering::Relaxed);
                }
            }
        }
    }

    fn failed(&self, endpoint: &Endpoint) {
        let threshold = self.outlier.consecutive_failures;
        if threshold == 0
            || endpoint
                .consecutive_failures
                .fetch_add(1, Ordering::Relaxed)
                + 1
                < threshold
        {
            return;
        }
        let now = self.now();
        if endpoint.ejected_until.load(Ordering::Relaxed) > now {
            return; // already ejected: calls in flight when it was ejected are still ending
        }
        endpoint.consecutive_failures.store(0, Ordering::Relaxed);
        let doublings = endpoint
            .recent_ejections
            .fetch_add(1, Ordering::Relaxed)
            .min(16);
        let duration =
            (self.outlier.base_ejection * 2u32.pow(doublings)).min(self.outlier.max_ejection);
        endpoint
            .ejected_until
            .store(now + duration.as_millis() as u64, Ordering::Relaxed);
        endpoint.ejections.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(cluster = %self.name, endpoint = endpoint.upstream.address(), ?duration, "endpoint ejected after consecutive failures");
    }

    /// Starts the active health checks, one task per endpoint; they end with the cluster.
    pub(crate) fn start_health_checks(self: &Arc<Self>) {
        let Some(check) = self.health_check.clone() else {
            return;
        };
        for index in 0..self.endpoints.len() {
            tokio::spawn(health_loop(Arc::downgrade(self), index, check.clone()));
        }
    }
}

/// `grpc.health.v1.HealthCheckRequest`.
#[derive(Clone, PartialEq, prost::Message)]
struct HealthCheckRequest {
    #[prost(string, tag = "1")]
    service: String,
}

/// `grpc.health.v1.HealthCheckResponse`.
#[derive(Clone, PartialEq, prost::Message)]
struct HealthCheckResponse {
    #[prost(int32, tag = "1")]
    status: i32,
}

const SERVING: i32 = 1;

async fn health_loop(cluster: Weak<Cluster>, index: usize, check: HealthCheck) {
    use prost::Message;
    let request = bytes::Bytes::from(
        HealthCheckRequest {
            service: check.service.clone(),
        }
        .encode_to_vec(),
    );
    let (mut passes, mut failures) = (0u32, 0u32);
    loop {
        let Some(cluster) = cluster.upgrade() else {
            return;
        };
        let endpoint = &cluster.endpoints[index];
        let answer = endpoint
            .upstream
            .unary(
                "/grpc.health.v1.Health/Check",
                request.clone(),
                check.timeout,
            )
            .await;
        let serving = matches!(&answer, Ok(reply) if HealthCheckResponse::decode(reply.clone()).is_ok_and(|r| r.status == SERVING));
        if serving {
            (passes, failures) = (passes + 1, 0);
        } else {
            (passes, failures) = (0, failures + 1);
        }
        let healthy = endpoint.checked_healthy.load(Ordering::Relaxed);
        if healthy && failures >= check.unhealthy_threshold {
            endpoint.checked_healthy.store(false, Ordering::Relaxed);
            let reason = match &answer {
                Ok(_) => "not serving".to_owned(),
                Err(status) => format!("{:?}: {}", status.code(), status.message()),
            };
            tracing::warn!(cluster = %cluster.name, endpoint = endpoint.upstream.address(), reason, "endpoint marked down by health checks");
        } else if !healthy && passes >= check.healthy_threshold {
            endpoint.checked_healthy.store(true, Ordering::Relaxed);
            tracing::info!(cluster = %cluster.name, endpoint = endpoint.upstream.address(), "endpoint marked up by health checks");
        }
        drop(cluster);
        tokio::time::sleep(check.interval).await;
    }
}

/// Ejection backoff is capped; keep `Duration` math from overflowing.
const _: () = assert!(Duration::from_secs(300).as_secs() * (1 << 16) < u64::MAX);
