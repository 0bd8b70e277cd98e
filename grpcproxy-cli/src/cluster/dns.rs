//! Endpoint names: resolved once when the cluster is built, then again every
//! `dns_refresh` while the cluster lives.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Weak;
use std::time::Duration;

use super::Cluster;

/// The host part of `host:port` (brackets of an IPv6 literal removed).
fn host_of(entry: &str) -> &str {
    let host = entry.rsplit_once(':').map_or(entry, |(host, _)| host);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// Every address of `entries`, each with the host it came from, resolved now (blocking);
/// a name that does not resolve yet is logged and left out.
pub(super) fn resolve_now(cluster: &str, entries: &[String]) -> Vec<(SocketAddr, String)> {
    entries
        .iter()
        .flat_map(|entry| match entry.to_socket_addrs() {
            Ok(addresses) => addresses.map(|a| (a, host_of(entry).to_owned())).collect(),
            Err(e) => {
                tracing::warn!(cluster, endpoint = %entry, error = %e, "cannot resolve endpoint yet");
                Vec::new()
            }
        })
        .collect()
}

/// Every address of `entries`, or `None` (logged) when a lookup fails: a failed refresh
/// keeps the endpoints the cluster has.
pub(super) async fn resolve(
    cluster: &str,
    entries: &[String],
) -> Option<Vec<(SocketAddr, String)>> {
    let mut resolved = Vec::new();
    for entry in entries {
        match tokio::net::lookup_host(entry.as_str()).await {
            Ok(addresses) => resolved.extend(addresses.map(|a| (a, host_of(entry).to_owned()))),
            Err(e) => {
                tracing::warn!(cluster, endpoint = %entry, error = %e, "DNS refresh failed; keeping the endpoints");
                return None;
            }
        }
    }
    Some(resolved)
}

/// Refreshes `cluster` every `every` until it is dropped.
pub(super) async fn refresh_loop(cluster: Weak<Cluster>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let Some(cluster) = cluster.upgrade() else {
            return;
        };
        cluster.refresh().await;
    }
}
