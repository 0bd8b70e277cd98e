//! One backend address of a cluster: its upstream, its load, its health and ejection
//! state, and the factory that makes one from an address and the cluster's settings.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use grpcproxy::{Http2Settings, Upstream};

/// One backend address of a cluster, with its load and health.
#[derive(Debug)]
pub(crate) struct Endpoint {
    pub(crate) upstream: Upstream,
    pub(super) in_flight: Arc<AtomicUsize>,
    /// Passing active health checks (always true without them).
    pub(super) checked_healthy: AtomicBool,
    pub(super) consecutive_failures: AtomicU32,
    /// Milliseconds since the cluster's epoch until which the endpoint is ejected.
    pub(super) ejected_until: AtomicU64,
    /// Ejections since it last served well: each one lasts twice as long.
    pub(super) recent_ejections: AtomicU32,
    pub(crate) ejections: AtomicU64,
}

impl Endpoint {
    /// Whether it is healthy (checks) and not ejected at `now` (ms since epoch).
    pub(super) fn available(&self, now: u64) -> bool {
        self.checked_healthy.load(Ordering::Relaxed)
            && self.ejected_until.load(Ordering::Relaxed) <= now
    }
}

/// Counts a call in flight on its endpoint until the call is over.
#[derive(Debug)]
pub(crate) struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    /// Counts one more call on `count`.
    pub(super) fn new(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Self(count.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How to make an endpoint for an address: the cluster's connection and TLS settings.
#[derive(Debug)]
pub(super) struct EndpointFactory {
    pub(super) cluster: String,
    pub(super) tls: Option<TlsFiles>,
    pub(super) connections: usize,
    pub(super) max_streams_per_connection: usize,
    pub(super) max_connections: usize,
    pub(super) connect_timeout: Duration,
    pub(super) settings: Http2Settings,
}

#[derive(Debug)]
pub(super) struct TlsFiles {
    pub(super) ca: Option<Vec<u8>>,
    pub(super) identity: Option<(Vec<u8>, Vec<u8>)>,
    pub(super) server_name: Option<String>,
}

impl EndpointFactory {
    /// An endpoint for `address`, resolved from `host` (the TLS name unless configured).
    pub(super) fn make(&self, address: SocketAddr, host: &str) -> anyhow::Result<Endpoint> {
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
