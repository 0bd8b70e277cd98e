//! Clusters: equivalent backends and the balancer that picks one per call.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use anyhow::Context;
use grpcproxy::{Http2Settings, Upstream};

use crate::config::{self, Balance};

/// One backend of a cluster.
#[derive(Debug)]
pub(crate) struct Endpoint {
    pub(crate) upstream: Upstream,
    in_flight: Arc<AtomicUsize>,
}

/// Counts a call in flight on its endpoint until the call is over.
#[derive(Debug)]
pub(crate) struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A set of equivalent backends.
#[derive(Debug)]
pub(crate) struct Cluster {
    pub(crate) name: String,
    endpoints: Vec<Endpoint>,
    balance: Balance,
    next: AtomicUsize,
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
            });
        }
        Ok(Self {
            name: name.to_owned(),
            endpoints,
            balance: config.balance,
            next: AtomicUsize::new(0),
        })
    }

    /// The cluster's endpoints.
    pub(crate) fn endpoints(&self) -> &[Endpoint] {
        &self.endpoints
    }

    /// Picks the endpoint for one call and counts the call in flight there.
    pub(crate) fn pick(&self) -> (&Endpoint, InFlight) {
        let n = self.endpoints.len();
        let index = match self.balance {
            _ if n == 1 => 0,
            Balance::RoundRobin => self.next.fetch_add(1, Ordering::Relaxed) % n,
            Balance::P2c => {
                let a = fastrand::usize(..n);
                let b = (a + 1 + fastrand::usize(..n - 1)) % n;
                let load = |i: usize| self.endpoints[i].in_flight.load(Ordering::Relaxed);
                if load(b) < load(a) {
                    b
                } else {
                    a
                }
            }
        };
        let endpoint = &self.endpoints[index];
        endpoint.in_flight.fetch_add(1, Ordering::Relaxed);
        (endpoint, InFlight(endpoint.in_flight.clone()))
    }
}
