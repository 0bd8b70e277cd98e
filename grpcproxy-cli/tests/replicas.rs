//! Many replicas behind a real L4 balancer (HAProxy `mode tcp`): 8 long-lived tonic client
//! channels through HAProxy to 3 grpcproxy replicas, then a 4th replica comes up. With
//! `server.max_connection_age = "2s"` its clients' connections move (GOAWAY, reconnect) and
//! the new replica gets a share of the calls within 10 s; without it, it gets none: the
//! HTTP/2 connections never move (grpc/grpc #7957). Shares are read from each replica's
//! `/metrics`, and printed.

mod support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use grpcproxy_testing::pb::PingRequest;
use grpcproxy_testing::serve::{ping_backend, ping_client};

/// HAProxy in `mode tcp` in front of `replicas` (health-checked every 200 ms, so a replica
/// that starts listening is in rotation within a second); killed when dropped.
struct Haproxy {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn haproxy_binary() -> PathBuf {
    ["/usr/sbin/haproxy", "/usr/bin/haproxy"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .expect("haproxy is missing: install it (`apt-get install haproxy`; scripts/test.sh does)")
}

impl Haproxy {
    fn start(replicas: &[SocketAddr]) -> Self {
        let addr = free_addr();
        let servers: String = replicas
            .iter()
            .enumerate()
            .map(|(i, r)| format!("  server r{i} {r} check inter 200ms fall 1 rise 1\n"))
            .collect();
        let config = format!(
            "global\n  maxconn 1000\n\
             defaults\n  mode tcp\n  timeout connect 1s\n  timeout client 60s\n  timeout server 60s\n\
             frontend grpc\n  bind {addr}\n  default_backend replicas\n\
             backend replicas\n  balance roundrobin\n{servers}"
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("haproxy.cfg");
        std::fs::write(&path, config).unwrap();
        let child = Command::new(haproxy_binary())
            .args(["-db", "-f"])
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "haproxy did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self {
            child,
            addr,
            _dir: dir,
        }
    }
}

fn replica(
    address: SocketAddr,
    backend: SocketAddr,
    server: &str,
) -> (support::Proxy, tempfile::NamedTempFile) {
    let config = format!(
        "[server]\n{server}\n[admin]\naddress = \"127.0.0.1:0\"\n\
         [[listeners]]\naddress = \"{address}\"\n\
         [[routes]]\ncluster = \"ping\"\n[clusters.ping]\nendpoints = [\"{backend}\"]\n"
    );
    support::start_with_config(&config, 1)
}

/// Calls the replica served so far.
fn served(replica: &support::Proxy) -> u64 {
    let (_, metrics) = support::http_get(replica.admin.unwrap(), "/metrics");
    metrics
        .lines()
        .filter(|l| l.starts_with("grpcproxy_requests_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// 3 replicas behind HAProxy, 8 client channels calling in loops; after 2 s a 4th
/// replica starts; what each replica served in the 10 s after that.
async fn scale_up(server: &str) -> Vec<u64> {
    let (backend, _service) = ping_backend().await;
    let addresses: Vec<SocketAddr> = (0..4).map(|_| free_addr()).collect();
    let mut replicas: Vec<(support::Proxy, tempfile::NamedTempFile)> = addresses[..3]
        .iter()
        .map(|a| replica(*a, backend.addr(), server))
        .collect();
    let haproxy = Haproxy::start(&addresses);
    // HAProxy starts with every server up; its first checks (every 200 ms) mark the 4th,
    // not listening yet, down before any client connects.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    for _ in 0..8 {
        let mut client = ping_client(haproxy.addr).await;
        let (stop, failures) = (stop.clone(), failures.clone());
        clients.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let request = PingRequest {
                    value: "share".into(),
                    ..Default::default()
                };
                if client.ping(request).await.is_err() {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    replicas.push(replica(addresses[3], backend.addr(), server));
    let before: Vec<u64> = replicas.iter().map(|(r, _)| served(r)).collect();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let after: Vec<u64> = replicas.iter().map(|(r, _)| served(r)).collect();
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }
    let share: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    eprintln!(
        "{server:?}: calls per replica in the 10 s after the 4th came up: {share:?}, failed calls {}",
        failures.load(Ordering::Relaxed)
    );
    share
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_replica_gets_a_share_only_when_connections_age() {
    let aging = scale_up("max_connection_age = \"2s\"\nmax_connection_age_grace = \"5s\"").await;
    assert!(
        aging.iter().all(|&calls| calls > 0),
        "every replica, the new one too, served calls: {aging:?}"
    );
    let total: u64 = aging.iter().sum();
    assert!(
        aging[3] * 10 >= total,
        "the new replica got at least a tenth of the calls: {aging:?}"
    );
    let pinned = scale_up("").await;
    assert_eq!(
        pinned[3], 0,
        "without an age no connection moves: {pinned:?}"
    );
    assert!(pinned[..3].iter().all(|&calls| calls > 0), "{pinned:?}");
}
