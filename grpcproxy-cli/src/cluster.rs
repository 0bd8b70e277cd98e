//! Clusters: equivalent backends, their health, the balancer that picks one per call, and
//! the endpoint set that follows DNS.

use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use anyhow::Context;
use arc_swap::ArcSwap;
use grpcproxy::{Http2Settings, Upstream};
use tonic::Code;

use crate::config::{self, Balance, HealthCheck, Outlier};

/// One backend address of a cluster, with its load and health.
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
pub(crate) struct Picked {
    pub(crate) endpoint: Arc<Endpoint>,
    /// Where the call goes if `endpoint` cannot be reached.
    pub(crate) alternate: Option<Arc<Endpoint>>,
    pub(crate) in_flight: InFlight,
}

/// The endpoints of a cluster at one moment.
#[derive(Debug, Default)]
struct EndpointSet {
    list: Vec<Arc<Endpoint>>,
    by_address: HashMap<SocketAddr, usize>,
}

impl EndpointSet {
    /// The endpoint whose upstream has `address`. A call reports the very string its
    /// endpoint's upstream holds, so a small set is searched by pointer, without parsing
    /// or hashing the address on every call.
    fn find(&self, address: &str) -> Option<&Arc<Endpoint>> {
        const SCANNED: usize = 16;
        if self.list.len() <= SCANNED {
            let same = |e: &&Arc<Endpoint>| std::ptr::eq(e.upstream.address(), address);
            if let Some(endpoint) = self.list.iter().find(same) {
                return Some(endpoint);
            }
        }
        let address: SocketAddr = address.parse().ok()?;
        self.by_address.get(&address).map(|&i| &self.list[i])
    }
}

/// How to make an endpoint for an address: the cluster's connection and TLS settings.
#[derive(Debug)]
struct EndpointFactory {
    cluster: String,
    tls: Option<TlsFiles>,
    connections: usize,
    max_streams_per_connection: usize,
    max_connections: usize,
    connect_timeout: Duration,
    settings: Http2Settings,
}

#[derive(Debug)]
struct TlsFiles {
    ca: Option<Vec<u8>>,
    identity: Option<(Vec<u8>, Vec<u8>)>,
    server_name: Option<String>,
}

impl EndpointFactory {
    /// An endpoint for `address`, resolved from `host` (the TLS name unless configured).
    fn make(&self, address: SocketAddr, host: &str) -> anyhow::Result<Endpoint> {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let mut builder = Upstream::builder(&format!("{scheme}://{address}"))?
            .connections(self.connections)
            .max_streams_per_connection(self.max_streams_per_connection)
            .max_connections(self.max_connections)
            .connect_timeout(self.connect_timeout)
            .http2(self.settings.clone());
        if let Some(tls) = &self.tls {
            if let Some(ca) = &tls.ca {
                builder = builder.ca_certificates_pem(ca)?;
            }
            if let Some((cert, key)) = &tls.identity {
                builder = builder.client_identity_pem(cert, key)?;
            }
            builder = builder.server_name(tls.server_name.as_deref().unwrap_or(host))?;
        }
        let upstream = builder
            .build()
            .with_context(|| format!("clusters.{}: endpoint {address}", self.cluster))?;
        Ok(Endpoint {
            upstream,
            in_flight: Arc::default(),
            checked_healthy: AtomicBool::new(true),
            consecutive_failures: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            recent_ejections: AtomicU32::new(0),
            ejections: AtomicU64::new(0),
        })
    }
}

/// A set of equivalent backends.
#[derive(Debug)]
pub(crate) struct Cluster {
    pub(crate) name: String,
    /// The configured `host:port` entries.
    entries: Vec<String>,
    set: ArcSwap<EndpointSet>,
    factory: EndpointFactory,
    balance: Balance,
    next: AtomicUsize,
    epoch: Instant,
    outlier: Outlier,
    health_check: Option<HealthCheck>,
    dns_refresh: Duration,
    /// Below this share (percent) of endpoints available, balance over all of them.
    panic_threshold: u8,
    /// In panic mode at the last pick (to log the changes only).
    panicking: AtomicBool,
    /// What it was built from, to reuse it across reloads when unchanged.
    pub(crate) source: String,
    started: AtomicBool,
}

impl Cluster {
    /// What a cluster is built from: its section, the limits it uses, and the contents of
    /// its TLS files (renewed certificates make a new cluster, with new connections).
    pub(crate) fn source_of(config: &config::Cluster, limits: &config::Limits) -> String {
        use std::hash::{Hash, Hasher};
        // Serialized, not Debug: spans (where the section sits in the file) must not count.
        let section = toml::to_string(config).unwrap_or_else(|_| format!("{config:?}"));
        let mut files = std::collections::hash_map::DefaultHasher::new();
        if let Some(tls) = &config.tls {
            let tls = tls.get_ref();
            for path in [&tls.ca, &tls.cert, &tls.key].into_iter().flatten() {
                std::fs::read(path).ok().hash(&mut files);
            }
        }
        format!(
            "{section} {:?} {:?} {:x}",
            limits.keepalive_interval,
            limits.keepalive_timeout,
            files.finish()
        )
    }

    /// Builds the cluster, resolving its endpoint names once (a name that does not resolve
    /// yet leaves its part of the set empty until a later refresh).
    pub(crate) fn build(
        name: &str,
        config: &config::Cluster,
        limits: &config::Limits,
    ) -> anyhow::Result<Self> {
        let read = |path: &str| {
            std::fs::read(path).with_context(|| format!("clusters.{name}.tls: cannot read {path}"))
        };
        let tls = match config.tls.as_ref().map(|t| t.get_ref()) {
            Some(tls) => Some(TlsFiles {
                ca: tls.ca.as_deref().map(read).transpose()?,
                identity: match (&tls.cert, &tls.key) {
                    (Some(cert), Some(key)) => Some((read(cert)?, read(key)?)),
                    _ => None,
                },
                server_name: tls.server_name.clone(),
            }),
            None => None,
        };
        let factory = EndpointFactory {
            cluster: name.to_owned(),
            tls,
            connections: config.connections_per_endpoint,
            max_streams_per_connection: config.max_streams_per_connection,
            max_connections: config.max_connections_per_endpoint,
            connect_timeout: config.connect_timeout,
            settings: Http2Settings {
                keep_alive_interval: limits.keepalive_interval,
                keep_alive_timeout: limits.keepalive_timeout,
                ..Http2Settings::default()
            },
        };
        let cluster = Self {
            name: name.to_owned(),
            entries: config.endpoints.get_ref().clone(),
            set: ArcSwap::from_pointee(EndpointSet::default()),
            factory,
            balance: config.balance,
            next: AtomicUsize::new(0),
            epoch: Instant::now(),
            outlier: config.outlier.clone(),
            health_check: config.health_check.clone(),
            dns_refresh: config.dns_refresh,
            panic_threshold: config.panic_threshold,
            panicking: AtomicBool::new(false),
            source: Self::source_of(config, limits),
            started: AtomicBool::new(false),
        };
        let resolved = cluster
            .entries
            .iter()
            .flat_map(|entry| match entry.to_socket_addrs() {
                Ok(addresses) => addresses.map(|a| (a, host_of(entry).to_owned())).collect(),
                Err(e) => {
                    tracing::warn!(cluster = name, endpoint = %entry, error = %e, "cannot resolve endpoint yet");
                    Vec::new()
                }
            })
            .collect();
        cluster.update(resolved)?;
        Ok(cluster)
    }

    /// The cluster's endpoints now.
    pub(crate) fn endpoints(&self) -> Vec<Arc<Endpoint>> {
        self.set.load().list.clone()
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// What `/clusters` shows of the cluster: its endpoints with their health, ejection,
    /// load and connections.
    pub(crate) fn status(&self) -> serde_json::Value {
        let now = self.now();
        let endpoints: Vec<serde_json::Value> = self
            .endpoints()
            .iter()
            .map(|e| {
                let ejected_until = e.ejected_until.load(Ordering::Relaxed);
                let stats = e.upstream.stats();
                serde_json::json!({
                    "address": e.upstream.address(),
                    "available": e.available(now),
                    "health_check": match (&self.health_check, e.checked_healthy.load(Ordering::Relaxed)) {
                        (None, _) => "off",
                        (Some(_), true) => "passing",
                        (Some(_), false) => "failing",
                    },
                    "ejected_for_ms": ejected_until.saturating_sub(now),
                    "ejections": e.ejections.load(Ordering::Relaxed),
                    "consecutive_failures": e.consecutive_failures.load(Ordering::Relaxed),
                    "in_flight": e.in_flight.load(Ordering::Relaxed),
                    "connections_open": stats.open_connections,
                    "connects": stats.connects,
                    "connect_failures": stats.connect_failures,
                })
            })
            .collect();
        serde_json::json!({
            "name": self.name,
            "balance": match self.balance {
                Balance::P2c => "p2c",
                Balance::RoundRobin => "round_robin",
            },
            "panic_threshold": self.panic_threshold,
            "panic": self.in_panic(),
            "endpoints": endpoints,
        })
    }

    /// Whether the last pick balanced over every endpoint (panic mode).
    pub(crate) fn in_panic(&self) -> bool {
        self.panicking.load(Ordering::Relaxed)
    }

    /// Whether `endpoint` can take calls now.
    pub(crate) fn is_available(&self, endpoint: &Endpoint) -> bool {
        endpoint.available(self.now())
    }

    /// Makes `resolved` the endpoint set, keeping the endpoints (connections, health) of
    /// addresses already in it. True if the set changed.
    fn update(&self, resolved: Vec<(SocketAddr, String)>) -> anyhow::Result<bool> {
        let current = self.set.load();
        let mut list = Vec::with_capacity(resolved.len());
        let mut by_address = HashMap::new();
        for (address, host) in resolved {
            if by_address.contains_key(&address) {
                continue;
            }
            let endpoint = match current.by_address.get(&address) {
                Some(&i) => current.list[i].clone(),
                None => Arc::new(self.factory.make(address, &host)?),
            };
            by_address.insert(address, list.len());
            list.push(endpoint);
        }
        let changed = list.len() != current.list.len()
            || list
                .iter()
                .zip(&current.list)
                .any(|(a, b)| !Arc::ptr_eq(a, b));
        if changed {
            self.set.store(Arc::new(EndpointSet { list, by_address }));
        }
        Ok(changed)
    }

    /// Picks the endpoint for one call among the available ones (and an alternate), and
    /// counts the call in flight there; `None` when no endpoint is available.
    pub(crate) fn pick(&self) -> Option<Picked> {
        let now = self.now();
        let set = self.set.load();
        let endpoints = &set.list;
        let mut available = endpoints.iter().filter(|e| e.available(now)).count();
        // Panic mode (Envoy's): with too few endpoints available, the health verdicts are
        // less likely than an overload of the few left; balance over all of them.
        let panic = available * 100 < usize::from(self.panic_threshold) * endpoints.len();
        if panic != self.panicking.swap(panic, Ordering::Relaxed) {
            if panic {
                tracing::warn!(cluster = %self.name, available, endpoints = endpoints.len(), threshold = self.panic_threshold, "too few endpoints available: balancing over all of them (panic mode)");
            } else {
                tracing::info!(cluster = %self.name, available, "enough endpoints available again: panic mode over");
            }
        }
        if panic {
            available = endpoints.len();
        }
        let usable = |e: &Endpoint| panic || e.available(now);
        // The k-th usable endpoint, counting from `start`.
        let nth = |start: usize, k: usize| {
            (0..endpoints.len())
                .map(|i| &endpoints[(start + i) % endpoints.len()])
                .filter(|e| usable(e))
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
            endpoint: endpoint.clone(),
            alternate: alternate.cloned(),
            in_flight: InFlight(endpoint.in_flight.clone()),
        })
    }

    /// Learns from a finished call: UNAVAILABLE (and a backend that could not be reached)
    /// count towards ejection; anything else resets the count.
    pub(crate) fn report(&self, backend: &str, status: Code, unreachable: Option<&str>) {
        let set = self.set.load();
        let find = |address: &str| set.find(address);
        if let Some(endpoint) = unreachable.and_then(find) {
            self.failed(endpoint);
        }
        if let Some(endpoint) = find(backend) {
            if status == Code::Unavailable {
                self.failed(endpoint);
            } else {
                // Loads first: most calls succeed, and a store on every call would bounce
                // the endpoint's cache line between worker threads.
                if endpoint.consecutive_failures.load(Ordering::Relaxed) != 0 {
                    endpoint.consecutive_failures.store(0, Ordering::Relaxed);
                }
                if endpoint.recent_ejections.load(Ordering::Relaxed) != 0
                    && endpoint.ejected_until.load(Ordering::Relaxed) <= self.now()
                {
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
        // Never the last one: with no endpoint left the cluster would refuse every call for
        // the whole ejection, even once the backend is back; failing calls say more.
        let others = self.set.load();
        if !others
            .list
            .iter()
            .any(|e| !std::ptr::eq(Arc::as_ptr(e), endpoint) && e.available(now))
        {
            if endpoint.consecutive_failures.swap(0, Ordering::Relaxed) != 0 {
                tracing::debug!(cluster = %self.name, endpoint = endpoint.upstream.address(), "not ejecting the last available endpoint");
            }
            return;
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

    /// Starts the cluster's background work — active health checks of every endpoint, and
    /// DNS refresh when an endpoint is a name. It all ends when the cluster is dropped.
    pub(crate) fn start(self: &Arc<Self>) {
        if self.started.swap(true, Ordering::AcqRel) {
            return; // a cluster kept across a reload is already running
        }
        for endpoint in self.endpoints() {
            self.check_health_of(&endpoint);
        }
        if self
            .entries
            .iter()
            .any(|entry| entry.parse::<SocketAddr>().is_err())
        {
            tokio::spawn(dns_loop(Arc::downgrade(self), self.dns_refresh));
        }
    }

    fn check_health_of(self: &Arc<Self>, endpoint: &Arc<Endpoint>) {
        if let Some(check) = self.health_check.clone() {
            tokio::spawn(health_loop(
                self.name.clone(),
                Arc::downgrade(endpoint),
                check,
            ));
        }
    }

    /// Resolves every entry again and updates the set; a failed lookup keeps the set.
    async fn refresh(self: &Arc<Self>) {
        let mut resolved = Vec::new();
        for entry in &self.entries {
            match tokio::net::lookup_host(entry.as_str()).await {
                Ok(addresses) => resolved.extend(addresses.map(|a| (a, host_of(entry).to_owned()))),
                Err(e) => {
                    tracing::warn!(cluster = %self.name, endpoint = %entry, error = %e, "DNS refresh failed; keeping the endpoints");
                    return;
                }
            }
        }
        let before: Vec<_> = self.endpoints().iter().map(Arc::as_ptr).collect();
        match self.update(resolved) {
            Ok(true) => {
                let endpoints = self.endpoints();
                for endpoint in endpoints
                    .iter()
                    .filter(|e| !before.contains(&Arc::as_ptr(e)))
                {
                    self.check_health_of(endpoint);
                }
                let addresses: Vec<&str> = endpoints.iter().map(|e| e.upstream.address()).collect();
                tracing::info!(cluster = %self.name, endpoints = ?addresses, "endpoint set changed");
            }
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(cluster = %self.name, error = %format!("{e:#}"), "cannot use the new endpoints")
            }
        }
    }
}

/// The host part of `host:port` (brackets of an IPv6 literal removed).
fn host_of(entry: &str) -> &str {
    let host = entry.rsplit_once(':').map_or(entry, |(host, _)| host);
    host.trim_start_matches('[').trim_end_matches(']')
}

async fn dns_loop(cluster: Weak<Cluster>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let Some(cluster) = cluster.upgrade() else {
            return;
        };
        cluster.refresh().await;
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

/// Checks one endpoint until it leaves the cluster (or the cluster goes).
async fn health_loop(cluster: String, endpoint: Weak<Endpoint>, check: HealthCheck) {
    use prost::Message;
    let request = bytes::Bytes::from(
        HealthCheckRequest {
            service: check.service.clone(),
        }
        .encode_to_vec(),
    );
    let (mut passes, mut failures) = (0u32, 0u32);
    loop {
        let Some(endpoint) = endpoint.upgrade() else {
            return;
        };
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
            tracing::warn!(
                cluster,
                endpoint = endpoint.upstream.address(),
                reason,
                "endpoint marked down by health checks"
            );
        } else if !healthy && passes >= check.healthy_threshold {
            endpoint.checked_healthy.store(true, Ordering::Relaxed);
            tracing::info!(
                cluster,
                endpoint = endpoint.upstream.address(),
                "endpoint marked up by health checks"
            );
        }
        drop(endpoint);
        tokio::time::sleep(check.interval).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(entries: &[&str]) -> Arc<Cluster> {
        let text = format!(
            "[[listeners]]\naddress = \"127.0.0.1:0\"\n[clusters.c]\nendpoints = [{}]\n",
            entries
                .iter()
                .map(|e| format!("\"{e}\""))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let config = crate::config::parse(std::path::Path::new("test.toml"), &text).unwrap();
        Arc::new(Cluster::build("c", &config.clusters["c"], &config.limits).unwrap())
    }

    fn addresses(cluster: &Cluster) -> Vec<String> {
        cluster
            .endpoints()
            .iter()
            .map(|e| e.upstream.address().to_owned())
            .collect()
    }

    #[test]
    fn a_changed_address_set_keeps_the_endpoints_that_stay() {
        let cluster = cluster(&["127.0.0.1:1"]);
        let resolved = |ips: &[&str]| {
            ips.iter()
                .map(|ip| (ip.parse().unwrap(), "svc.test".to_owned()))
                .collect()
        };
        assert!(cluster
            .update(resolved(&["10.0.0.1:50051", "10.0.0.2:50051"]))
            .unwrap());
        let kept = cluster.endpoints()[1].clone();
        assert!(
            !cluster
                .update(resolved(&["10.0.0.1:50051", "10.0.0.2:50051"]))
                .unwrap(),
            "same set: no change"
        );
        assert!(cluster
            .update(resolved(&["10.0.0.2:50051", "10.0.0.3:50051"]))
            .unwrap());
        assert_eq!(addresses(&cluster), ["10.0.0.2:50051", "10.0.0.3:50051"]);
        assert!(
            Arc::ptr_eq(&cluster.endpoints()[0], &kept),
            "10.0.0.2 keeps its connections and health"
        );
    }

    #[test]
    fn reports_find_their_endpoint_by_its_own_address_or_by_an_equal_one() {
        let cluster = cluster(&["127.0.0.1:7", "127.0.0.1:8", "127.0.0.1:9"]);
        let [first, second, third] = [0, 1, 2].map(|i| cluster.endpoints()[i].clone());
        // The endpoint's own string, as a call reports it.
        for _ in 0..5 {
            cluster.report(first.upstream.address(), Code::Unavailable, None);
        }
        assert!(!cluster.is_available(&first), "5 failures in a row eject");
        // An equal string elsewhere in memory.
        let copy = second.upstream.address().to_owned();
        assert!(!std::ptr::eq(copy.as_str(), second.upstream.address()));
        for _ in 0..5 {
            cluster.report(&copy, Code::Unavailable, None);
        }
        assert!(!cluster.is_available(&second));
        // Two of three ejected: 33 % available is below the default panic threshold (50).
        let picks: Vec<_> = (0..30).map(|_| cluster.pick().unwrap().endpoint).collect();
        assert!(
            picks.iter().any(|e| Arc::ptr_eq(e, &first)),
            "panic mode uses all"
        );
        // The last available endpoint is never ejected by failures alone.
        for _ in 0..20 {
            cluster.report(third.upstream.address(), Code::Unavailable, None);
        }
        assert!(cluster.is_available(&third));
        assert_eq!(third.ejections.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn renewed_tls_files_make_a_new_cluster_on_reload() {
        let dir = std::env::temp_dir().join(format!("grpcproxy-cluster-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, "first").unwrap();
        let text = format!(
            "[[listeners]]\naddress = \"127.0.0.1:0\"\n[clusters.c]\nendpoints = [\"127.0.0.1:7\"]\ntls = {{ ca = \"{}\" }}\n",
            ca.display()
        );
        let config = crate::config::parse(std::path::Path::new("test.toml"), &text).unwrap();
        let source = || Cluster::source_of(&config.clusters["c"], &config.limits);
        let before = source();
        assert_eq!(source(), before, "same files: the cluster is kept");
        std::fs::write(&ca, "renewed").unwrap();
        assert_ne!(source(), before, "renewed files: a new cluster");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn below_the_panic_threshold_calls_spread_over_every_endpoint() {
        let cluster = cluster(&["127.0.0.1:7", "127.0.0.1:8"]);
        let [first, second] = [0, 1].map(|i| cluster.endpoints()[i].clone());
        first.checked_healthy.store(false, Ordering::Relaxed);
        // 50 % available is not below 50: only the healthy one.
        assert!((0..20).all(|_| Arc::ptr_eq(&cluster.pick().unwrap().endpoint, &second)));
        second.checked_healthy.store(false, Ordering::Relaxed);
        // None available: all of them, rather than refusing every call.
        let picks: Vec<_> = (0..40).map(|_| cluster.pick().unwrap().endpoint).collect();
        assert!(picks.iter().any(|e| Arc::ptr_eq(e, &first)));
        assert!(picks.iter().any(|e| Arc::ptr_eq(e, &second)));
    }

    #[test]
    fn names_resolve_to_every_address_and_unresolvable_names_leave_the_set_empty() {
        assert_eq!(
            addresses(&cluster(&["127.0.0.1:7", "127.0.0.1:7"])),
            ["127.0.0.1:7"]
        );
        let localhost = cluster(&["localhost:7"]);
        assert!(
            addresses(&localhost).contains(&"127.0.0.1:7".to_owned()),
            "{:?}",
            addresses(&localhost)
        );
        let nowhere = cluster(&["name.invalid:7"]);
        assert!(nowhere.endpoints().is_empty());
        assert!(
            nowhere.pick().is_none(),
            "no endpoint: calls get UNAVAILABLE at once"
        );
    }
}
