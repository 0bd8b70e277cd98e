//! What a hostile peer may not leave behind in the proxy process: streams, connections,
//! file descriptors, memory.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::{http_get, Proxy};

/// The proxy process's open file descriptors.
pub fn open_fds(proxy: &Proxy) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", proxy.child.id()))
        .expect("the proxy's /proc entry is readable")
        .count()
}

/// The proxy process's resident memory, in MiB.
pub fn rss_mib(proxy: &Proxy) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", proxy.child.id())).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS is reported");
    kib / 1024
}

/// The value of the unlabelled metric `name` on the admin listener.
pub fn metric(admin: SocketAddr, name: &str) -> i64 {
    let (_, metrics) = http_get(admin, "/metrics");
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} is exported"))
}

/// Backend connections open now, over every endpoint.
pub fn upstream_connections(admin: SocketAddr) -> i64 {
    let (_, metrics) = http_get(admin, "/metrics");
    metrics
        .lines()
        .filter(|line| line.starts_with("grpcproxy_upstream_connections{"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<i64>().ok())
        .sum()
}

/// The proxy's gauges and descriptors before a case.
#[derive(Debug, Clone, Copy)]
pub struct Baseline {
    pub fds: usize,
    pub client_connections: i64,
    pub upstream_connections: i64,
}

/// Takes the baseline now.
pub fn baseline(proxy: &Proxy) -> Baseline {
    let admin = proxy.admin.expect("the admin address is logged");
    Baseline {
        fds: open_fds(proxy),
        client_connections: metric(admin, "grpcproxy_client_connections"),
        upstream_connections: upstream_connections(admin),
    }
}

/// Waits until no stream is in flight and client connections and descriptors are back
/// to `baseline` (or fewer); panics after 10 s. Backend connections the proxy opened under
/// load stay open for later calls: each may keep one descriptor past the baseline.
pub async fn assert_back_to(proxy: &Proxy, baseline: Baseline) {
    let admin = proxy.admin.expect("the admin address is logged");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let streams = metric(admin, "grpcproxy_streams_in_flight");
        let connections = metric(admin, "grpcproxy_client_connections");
        let fds = open_fds(proxy);
        let grown = (upstream_connections(admin) - baseline.upstream_connections).max(0) as usize;
        if streams == 0 && connections <= baseline.client_connections && fds <= baseline.fds + grown
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not back to baseline after 10 s: {streams} streams in flight, {connections} client \
             connections, {fds} fds with {grown} more backend connections (baseline {baseline:?})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
