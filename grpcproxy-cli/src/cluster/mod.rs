//! Clusters: equivalent backends behind one name. The cluster holds its endpoint set
//! (`set`, following `dns`), picks an endpoint per call (`balance`), learns from each call
//! (`outlier`) and from active checks (`health`); an `endpoint` is one backend address.

mod balance;
mod dns;
mod endpoint;
mod health;
mod outlier;
mod set;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use arc_swap::ArcSwap;
use grpcproxy::Http2Settings;
use tonic::Code;

use crate::config::{self, Balance, HealthCheck, Outlier};
pub(crate) use endpoint::{Endpoint, InFlight};
use endpoint::{EndpointFactory, TlsFiles};
use set::EndpointSet;

/// The balancer's choice for one call.
#[derive(Debug)]
pub(crate) struct Picked {
    pub(crate) endpoint: Arc<Endpoint>,
    /// Where the call goes if `endpoint` cannot be reached.
    pub(crate) alternate: Option<Arc<Endpoint>>,
    /// The call counted on its endpoint and on its cluster.
    pub(crate) in_flight: (InFlight, InFlight),
}

/// Why a cluster picked no endpoint for a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NoPick {
    /// No endpoint is available.
    Unavailable,
    /// The cluster has `max_in_flight` calls open: the call is shed.
    Full(usize),
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
    /// Calls open on the cluster, and the cap on them (calls over it are shed).
    in_flight: Arc<AtomicUsize>,
    max_in_flight: Option<usize>,
    shed: AtomicU64,
    /// The budget the retries of calls to it take from.
    pub(crate) retry_budget: Option<Arc<grpcproxy::policy::RetryBudget>>,
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
            retry_budget: config.retry_budget.as_ref().map(|b| {
                let b = b.get_ref();
                Arc::new(grpcproxy::policy::RetryBudget::new(
                    b.ratio,
                    b.min_per_second,
                ))
            }),
            started: AtomicBool::new(false),
            in_flight: Arc::default(),
            max_in_flight: config.max_in_flight,
            shed: AtomicU64::new(0),
        };
        cluster.update(dns::resolve_now(name, &cluster.entries))?;
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
        let next = self.set.load().next(resolved, &self.factory)?;
        let changed = next.is_some();
        if let Some(next) = next {
            self.set.store(Arc::new(next));
        }
        Ok(changed)
    }

    /// Picks the endpoint for one call among the available ones (and an alternate), and
    /// counts the call in flight there; `None` when no endpoint is available.
    pub(crate) fn pick(&self) -> Result<Picked, NoPick> {
        if let Some(max) = self.max_in_flight {
            if self.in_flight.load(Ordering::Relaxed) >= max {
                self.shed.fetch_add(1, Ordering::Relaxed);
                return Err(NoPick::Full(max));
            }
        }
        let set = self.set.load();
        let endpoints = &set.list;
        // The clock is read only when an endpoint has been ejected (most picks never
        // need it); one ejected meanwhile counts as ejected now.
        let ejections = endpoints
            .iter()
            .any(|e| e.ejected_until.load(Ordering::Relaxed) != 0);
        let now = if ejections { self.now() } else { 0 };
        let mut available = endpoints.iter().filter(|e| e.available(now)).count();
        // Panic mode (Envoy's): with too few endpoints available, the health verdicts are
        // less likely than an overload of the few left; balance over all of them.
        let panic = available * 100 < usize::from(self.panic_threshold) * endpoints.len();
        // Read before it is written: the flag is shared by every worker's picks, and a write
        // on every call would move its cache line between cores.
        if panic != self.panicking.load(Ordering::Relaxed)
            && panic != self.panicking.swap(panic, Ordering::Relaxed)
        {
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
        let (endpoint, alternate) =
            balance::choose(endpoints, usable, available, self.balance, &self.next)
                .ok_or(NoPick::Unavailable)?;
        Ok(Picked {
            endpoint: endpoint.clone(),
            alternate: alternate.cloned(),
            in_flight: (
                InFlight::new(&endpoint.in_flight),
                InFlight::new(&self.in_flight),
            ),
        })
    }

    /// The endpoint whose address is `name` (as `/clusters` shows it), counted in flight
    /// for one call: a fan-out member the client named.
    pub(crate) fn endpoint_named(
        &self,
        name: &str,
    ) -> Option<(Arc<Endpoint>, (InFlight, InFlight))> {
        let set = self.set.load();
        let endpoint = set.list.iter().find(|e| e.upstream.address() == name)?;
        let in_flight = (
            InFlight::new(&endpoint.in_flight),
            InFlight::new(&self.in_flight),
        );
        Some((endpoint.clone(), in_flight))
    }

    /// Calls shed so far (over `max_in_flight`).
    pub(crate) fn shed(&self) -> u64 {
        self.shed.load(Ordering::Relaxed)
    }

    /// Learns from a finished call: UNAVAILABLE (and a backend that could not be reached)
    /// count towards ejection; anything else resets the count.
    pub(crate) fn report(&self, backend: &str, status: Code, unreachable: Option<&str>) {
        let set = self.set.load();
        let failed =
            |endpoint| outlier::failed(&self.name, &self.outlier, &set, endpoint, self.now());
        if let Some(endpoint) = unreachable.and_then(|address| set.find(address)) {
            failed(endpoint);
        }
        if let Some(endpoint) = set.find(backend) {
            if status == Code::Unavailable {
                failed(endpoint);
            } else {
                outlier::served(endpoint, || self.now());
            }
        }
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
            tokio::spawn(dns::refresh_loop(Arc::downgrade(self), self.dns_refresh));
        }
    }

    fn check_health_of(self: &Arc<Self>, endpoint: &Arc<Endpoint>) {
        if let Some(check) = self.health_check.clone() {
            tokio::spawn(health::health_loop(
                self.name.clone(),
                Arc::downgrade(endpoint),
                check,
            ));
        }
    }

    /// Resolves every entry again and updates the set; a failed lookup keeps the set.
    async fn refresh(self: &Arc<Self>) {
        let Some(resolved) = dns::resolve(&self.name, &self.entries).await else {
            return;
        };
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
    fn an_ejected_endpoint_gets_no_pick_until_its_ejection_ends() {
        let cluster = cluster(&["127.0.0.1:7", "127.0.0.1:8", "127.0.0.1:9"]);
        let first = cluster.endpoints()[0].clone();
        let picked_first = |cluster: &Cluster| {
            (0..30).any(|_| Arc::ptr_eq(&cluster.pick().unwrap().endpoint, &first))
        };
        assert!(picked_first(&cluster), "before any failure");
        for _ in 0..5 {
            cluster.report(first.upstream.address(), Code::Unavailable, None);
        }
        // Two of three available (above the panic threshold): the ejected one is left out.
        assert!(!picked_first(&cluster));
        // Its ejection over (moved to the past), it is picked again.
        first.ejected_until.store(1, Ordering::Relaxed);
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert!(picked_first(&cluster));
    }

    #[test]
    fn below_the_panic_threshold_calls_spread_over_every_endpoint() {
        let cluster = cluster(&["127.0.0.1:7", "127.0.0.1:8"]);
        let [first, second] = [0, 1].map(|i| cluster.endpoints()[i].clone());
        first.checked_healthy.store(false, Ordering::Relaxed);
        // 50 % available is not below 50: only the healthy one.
        assert!((0..20).all(|_| Arc::ptr_eq(&cluster.pick().unwrap().endpoint, &second)));
        assert!(!cluster.in_panic());
        second.checked_healthy.store(false, Ordering::Relaxed);
        // None available: all of them, rather than refusing every call.
        let picks: Vec<_> = (0..40).map(|_| cluster.pick().unwrap().endpoint).collect();
        assert!(picks.iter().any(|e| Arc::ptr_eq(e, &first)));
        assert!(picks.iter().any(|e| Arc::ptr_eq(e, &second)));
        assert!(cluster.in_panic(), "the gauge and /clusters say so");
        // Healthy again: out of panic mode at the next pick.
        first.checked_healthy.store(true, Ordering::Relaxed);
        second.checked_healthy.store(true, Ordering::Relaxed);
        cluster.pick().unwrap();
        assert!(!cluster.in_panic());
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
            nowhere.pick().is_err(),
            "no endpoint: calls get UNAVAILABLE at once"
        );
    }
}
