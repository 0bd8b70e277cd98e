//! One server reflection for every backend behind the proxy: `grpc.reflection.v1` and
//! `v1alpha` answered by the proxy itself, merged from what the backends report.
//!
//! - `list_services` is the union of every backend's services, each counted for the
//!   backend the proxy routes it to ([`ReflectionBackends::owner`]); the lists are asked
//!   live and kept for a TTL ([`ReflectionOptions::cache_ttl`]).
//! - A file or symbol lookup goes to the backend that owns the symbol's service (or that
//!   gave the file before), then to the others in turn until one has it.
//! - One client's stream asks each backend over one stream of its own, kept for the
//!   client's stream: every answer about a backend comes from the same endpoint, never a
//!   mix of builds.
//! - A backend that does not answer (down, or without reflection) is skipped, with a log
//!   line; backends are asked with v1 first, then v1alpha.
//!
//! Served in front of the proxy by [`WithReflection`] (the binary's `reflection = true`):
//!
//! ```no_run
//! use grpcproxy::reflection::{MergedReflection, ReflectionOptions, WithReflection};
//! use grpcproxy::{mq::NoQueue, server, SingleUpstream, TransparentProxy, Upstream};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let users = Upstream::new("http://127.0.0.1:50061")?;
//! let orders = Upstream::new("http://127.0.0.1:50062")?;
//! let backends = vec![("users".to_owned(), users.clone()), ("orders".to_owned(), orders)];
//! let reflection = MergedReflection::new(backends, ReflectionOptions::default());
//! let proxy = TransparentProxy::new(NoQueue, SingleUpstream::new(users));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:50051").await?;
//! let service = WithReflection::new(proxy, reflection);
//! server::serve(listener, service, Default::default(), std::future::pending()).await?;
//! # Ok(()) }
//! ```

mod backend;
mod service;
mod session;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use service::{ReflectionBody, ReflectionFuture, WithReflection};

use crate::Upstream;

/// Who answers calls to a service, as the proxy routes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ownership {
    /// The backend of this name.
    Backend(String),
    /// No backend: calls to it are refused (it is never listed).
    Unrouted,
    /// The first backend that lists it (when the proxy does not route by service).
    FirstLister,
}

/// The backends a merged reflection asks, and which one owns each service.
///
/// A list of `(name, upstream)` pairs is one, every service owned by the first backend
/// that lists it. The binary implements it over its route table and clusters.
///
/// ```
/// use grpcproxy::reflection::{Ownership, ReflectionBackends};
/// use grpcproxy::Upstream;
///
/// let backends = vec![("users".to_owned(), Upstream::new("http://127.0.0.1:50061").unwrap())];
/// assert_eq!(backends.backends().len(), 1);
/// assert_eq!(backends.owner("shop.Users"), Ownership::FirstLister);
/// ```
pub trait ReflectionBackends: Send + Sync + 'static {
    /// The backends to ask now, by name, each with the upstream (one endpoint) to ask.
    fn backends(&self) -> Vec<(String, Upstream)>;

    /// Who answers calls to `service` (`pkg.Service`).
    fn owner(&self, service: &str) -> Ownership {
        let _ = service;
        Ownership::FirstLister
    }
}

impl ReflectionBackends for Vec<(String, Upstream)> {
    fn backends(&self) -> Vec<(String, Upstream)> {
        self.clone()
    }
}

/// Bounds of a merged reflection.
///
/// ```
/// use std::time::Duration;
/// use grpcproxy::reflection::ReflectionOptions;
///
/// let options = ReflectionOptions { cache_ttl: Duration::from_secs(30), ..ReflectionOptions::default() };
/// assert_eq!(options.ask_timeout, Duration::from_secs(5));
/// ```
#[derive(Debug, Clone)]
pub struct ReflectionOptions {
    /// How long a backend's list of services is kept before it is asked again (10 s).
    pub cache_ttl: Duration,
    /// How long a backend may take to answer one question (5 s); past it, it is skipped
    /// for the rest of the client's stream.
    pub ask_timeout: Duration,
}

impl Default for ReflectionOptions {
    fn default() -> Self {
        Self {
            cache_ttl: Duration::from_secs(10),
            ask_timeout: Duration::from_secs(5),
        }
    }
}

/// What merged reflections answered, shared by every clone.
///
/// ```
/// let stats = grpcproxy::reflection::ReflectionStats::default();
/// assert_eq!(stats.answered(), (0, 0));
/// ```
#[derive(Debug, Default)]
pub struct ReflectionStats {
    streams: AtomicU64,
    found: AtomicU64,
    not_found: AtomicU64,
    backend_failures: AtomicU64,
}

impl ReflectionStats {
    /// Client reflection streams served.
    pub fn streams(&self) -> u64 {
        self.streams.load(Ordering::Relaxed)
    }

    /// Questions answered: (with an answer, with an error such as NOT_FOUND).
    pub fn answered(&self) -> (u64, u64) {
        (
            self.found.load(Ordering::Relaxed),
            self.not_found.load(Ordering::Relaxed),
        )
    }

    /// Backends skipped because they did not answer (down, no reflection, too slow).
    pub fn backend_failures(&self) -> u64 {
        self.backend_failures.load(Ordering::Relaxed)
    }

    fn stream(&self) {
        self.streams.fetch_add(1, Ordering::Relaxed);
    }

    fn answered_one(&self, found: bool) {
        let counter = if found { &self.found } else { &self.not_found };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn backend_failed(&self) {
        self.backend_failures.fetch_add(1, Ordering::Relaxed);
    }
}

/// The reflection service the proxy serves: cheap to clone.
#[derive(Clone)]
pub struct MergedReflection {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for MergedReflection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MergedReflection")
            .field("options", &self.shared.options)
            .finish_non_exhaustive()
    }
}

pub(super) struct Shared {
    backends: Box<dyn ReflectionBackends>,
    options: ReflectionOptions,
    /// Each backend's services and when they were asked, by backend name.
    cache: Mutex<HashMap<String, (Instant, Vec<String>)>>,
    stats: Arc<ReflectionStats>,
}

impl Shared {
    /// Backend `name`'s services, if asked less than the TTL ago.
    fn cached(&self, name: &str) -> Option<Vec<String>> {
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let (asked, services) = cache.get(name)?;
        (asked.elapsed() < self.options.cache_ttl).then(|| services.clone())
    }

    fn cache(&self, name: &str, services: Vec<String>, asked: Instant) {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache.insert(name.to_owned(), (asked, services));
    }
}

impl MergedReflection {
    /// A reflection merged from `backends`.
    pub fn new(backends: impl ReflectionBackends, options: ReflectionOptions) -> Self {
        Self::with_stats(backends, options, Arc::default())
    }

    /// Like [`MergedReflection::new`], counting in `stats`.
    pub fn with_stats(
        backends: impl ReflectionBackends,
        options: ReflectionOptions,
        stats: Arc<ReflectionStats>,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                backends: Box::new(backends),
                options,
                cache: Mutex::default(),
                stats,
            }),
        }
    }

    /// What it answered so far.
    pub fn stats(&self) -> &Arc<ReflectionStats> {
        &self.shared.stats
    }
}
