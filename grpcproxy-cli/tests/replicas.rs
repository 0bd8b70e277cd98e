//! Many replicas behind a real L4 balancer (HAProxy `mode tcp`): 8 long-lived tonic client
//! channels through HAProxy to 3 grpcproxy replicas, then a 4th replica comes up. With
//! `server.max_connection_age = "2s"` its clients' connections move (GOAWAY, reconnect) and
//! the new replica gets a share of the calls within 10 s; without it, it gets none: the
//! HTTP/2 connections never move (grpc/grpc #7957). Shares are read from each replica's
//! `/metrics`, and printed. And a rolling restart (SIGTERM, drain, start again, one replica
//! at a time) under 8 grpcio client loops fails no call, with HAProxy checking each
//! replica's `/ready` and sending a refused connection to another replica.

mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
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

/// The loopback address each test of this file picks its addresses on: its own, so that
/// no other test's listener (on 127.0.0.1, or the other test's here) nor any outgoing
/// connection (their source is 127.0.0.1) can take one between its pick and the bind of
/// the replica or HAProxy given it. (Both tests once shared 127.0.0.3: a replica found its
/// port taken, and HAProxy, which binds with SO_REUSEPORT, could share one with the other
/// test's HAProxy, which then took some of this test's connections.)
const SCALE_UP_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));
const ROLLING_RESTART_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 4));

/// `n` distinct free addresses on `ip`.
fn free_addrs(ip: IpAddr, n: usize) -> Vec<SocketAddr> {
    let held: Vec<_> = (0..n)
        .map(|_| std::net::TcpListener::bind((ip, 0)).unwrap())
        .collect();
    held.iter().map(|l| l.local_addr().unwrap()).collect()
}

fn haproxy_binary() -> PathBuf {
    ["/usr/sbin/haproxy", "/usr/bin/haproxy"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .expect("haproxy is missing: install it (`apt-get install haproxy`; scripts/test.sh does)")
}

impl Haproxy {
    /// Checked by connecting to each replica's port.
    fn start(replicas: &[SocketAddr]) -> Self {
        let servers: String = replicas
            .iter()
            .enumerate()
            .map(|(i, r)| format!("  server r{i} {r} check inter 200ms fall 1 rise 1\n"))
            .collect();
        Self::start_with(replicas[0].ip(), &servers, "")
    }

    /// As a rolling restart wants it: each replica checked on its admin `/ready` (503
    /// once it drains), and a connection that a replica refuses sent to another one.
    fn start_ready_checked(replicas: &[(SocketAddr, SocketAddr)]) -> Self {
        let servers: String = replicas
            .iter()
            .enumerate()
            .map(|(i, (r, admin))| {
                format!(
                    "  server r{i} {r} check port {} inter 200ms fall 1 rise 2\n",
                    admin.port()
                )
            })
            .collect();
        let options = "  option httpchk GET /ready\n  option redispatch\n  retries 3\n";
        Self::start_with(replicas[0].0.ip(), &servers, options)
    }

    /// Listening on `ip`, its test's own loopback address.
    fn start_with(ip: IpAddr, servers: &str, backend_options: &str) -> Self {
        let addr = free_addrs(ip, 1)[0];
        let config = format!(
            "global\n  maxconn 1000\n\
             defaults\n  mode tcp\n  timeout connect 1s\n  timeout client 60s\n  timeout server 60s\n\
             frontend grpc\n  bind {addr}\n  default_backend replicas\n\
             backend replicas\n  balance roundrobin\n{backend_options}{servers}"
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

/// A replica on fixed listener and admin addresses (so that it can restart on them).
fn fixed_replica(
    address: SocketAddr,
    admin: SocketAddr,
    backend: SocketAddr,
) -> (support::Proxy, tempfile::NamedTempFile) {
    let config = format!(
        "[server]\ndrain_timeout = \"10s\"\n[admin]\naddress = \"{admin}\"\n\
         [[listeners]]\naddress = \"{address}\"\n\
         [[routes]]\ncluster = \"ping\"\n[clusters.ping]\nendpoints = [\"{backend}\"]\n"
    );
    support::start_with_config(&config, 1)
}

/// grpcio clients calling in loops (`interop/python/call_loops.py`), one channel each.
struct CallLoops {
    child: Child,
    stdin: Option<std::process::ChildStdin>,
    stdout: std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
}

impl Drop for CallLoops {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl CallLoops {
    /// `loops` channels to `target` calling Ping("roll"); returns once each has had an
    /// answer.
    fn start(target: SocketAddr, loops: usize) -> Self {
        use std::io::BufRead;
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../interop/python");
        let python = dir.join(".venv/bin/python");
        assert!(
            python.exists(),
            "the Python peers are missing: run `bash interop/install.sh` (scripts/test.sh does)"
        );
        // PingRequest { value: "roll" }
        let request = "0a04726f6c6c";
        let mut child = Command::new(python)
            .arg(dir.join("call_loops.py"))
            .args([&target.to_string(), &loops.to_string()])
            .args(["/grpcproxy.testing.TestService/Ping", request])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take();
        let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let first = stdout.next().expect("the loops start").unwrap();
        assert_eq!(first, "STARTED");
        Self {
            child,
            stdin,
            stdout,
        }
    }

    /// Stops the loops: (calls that succeeded, calls that failed, the failures by kind).
    fn finish(mut self) -> (u64, u64, serde_json::Value) {
        drop(self.stdin.take());
        let line = self.stdout.next().expect("the loops report").unwrap();
        let report: serde_json::Value = serde_json::from_str(&line).unwrap();
        (
            report["ok"].as_u64().unwrap(),
            report["failed"].as_u64().unwrap(),
            report["errors"].clone(),
        )
    }
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
    let addresses = free_addrs(SCALE_UP_IP, 4);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_under_load_fails_no_call() {
    let (backend, _service) = ping_backend().await;
    let slots: Vec<(SocketAddr, SocketAddr)> = free_addrs(ROLLING_RESTART_IP, 6)
        .chunks(2)
        .map(|pair| (pair[0], pair[1]))
        .collect();
    let mut replicas: Vec<_> = slots
        .iter()
        .map(|(address, admin)| fixed_replica(*address, *admin, backend.addr()))
        .collect();
    let haproxy = Haproxy::start_ready_checked(&slots);
    // Two passing checks (200 ms apart) put each replica in rotation.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let loops = tokio::task::spawn_blocking(move || CallLoops::start(haproxy.addr, 8))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let started = Instant::now();
    for (i, (address, admin)) in slots.iter().enumerate() {
        // SIGTERM, drain (GOAWAY; in-flight calls finish), exit; then start it again.
        let served_before = served(&replicas[i].0);
        support::sigterm(&replicas[i].0);
        let status = support::wait_exit(&mut replicas[i].0, Duration::from_secs(20));
        assert!(status.success(), "replica {i}: {status:?}");
        replicas[i] = fixed_replica(*address, *admin, backend.addr());
        eprintln!("replica {i} restarted (it had served {served_before} calls)");
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let took = started.elapsed();
    let (ok, failed, errors) = tokio::task::spawn_blocking(move || loops.finish())
        .await
        .unwrap();
    let now: Vec<u64> = replicas.iter().map(|(r, _)| served(r)).collect();
    eprintln!(
        "rolling restart of 3 replicas in {took:?} under 8 grpcio loops: {ok} calls ok, {failed} failed {errors}; served since the restarts {now:?}"
    );
    assert_eq!(failed, 0, "{errors}");
    assert!(ok > 1000, "the loops kept calling: {ok}");
    // The connections of each replica restarted went to the others: the first two
    // restarted serve again (the last one gets connections only as clients reconnect,
    // which without max_connection_age they no longer do).
    assert!(
        now[0] > 0 && now[1] > 0,
        "the restarted replicas serve again: {now:?}"
    );
}
