//! Starting the built `grpcproxy` binary and reading its log.
#![allow(dead_code, unreachable_pub)]

pub mod baseline;
pub mod scripted;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The running binary; killed if a test ends before it stops.
pub struct Proxy {
    pub child: Child,
    /// Addresses it logged as listening, in order.
    pub listening: Vec<SocketAddr>,
    /// The admin listener's address, if it has one.
    pub admin: Option<SocketAddr>,
    /// The lines logged until it listened (read by `start`).
    pub startup: Vec<String>,
    pub logs: mpsc::Receiver<String>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the binary with `args` and waits until it logged `listeners` listening addresses.
pub fn start(args: &[&str], listeners: usize) -> Proxy {
    let mut child = Command::new(env!("CARGO_BIN_EXE_grpcproxy"))
        .args(args)
        .args(["--log-format", "json"])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("the grpcproxy binary starts");
    let stderr = child.stderr.take().unwrap();
    let (lines_tx, logs) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut proxy = Proxy {
        child,
        listening: Vec::new(),
        startup: Vec::new(),
        admin: None,
        logs,
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while proxy.listening.len() < listeners {
        assert!(
            Instant::now() < deadline,
            "grpcproxy did not log its listeners within 10 s"
        );
        if let Some(status) = proxy.child.try_wait().unwrap() {
            std::thread::sleep(Duration::from_millis(100)); // its last lines
            let log: Vec<String> = proxy
                .startup
                .drain(..)
                .chain(proxy.logs.try_iter())
                .collect();
            panic!("grpcproxy exited early: {status:?}; its log: {log:#?}");
        }
        let Ok(line) = proxy.logs.recv_timeout(Duration::from_millis(100)) else {
            continue;
        };
        proxy.startup.push(line.clone());
        if line.contains("admin listening") {
            proxy.admin = Some(field(&line, "admin").parse().unwrap());
        }
        if line.contains("grpcproxy listening") {
            let start = line
                .find("\"listen\":\"")
                .expect("the listen address is logged")
                + 10;
            let end = start + line[start..].find('"').unwrap();
            proxy.listening.push(line[start..end].parse().unwrap());
        }
    }
    proxy
}

/// A config with an admin listener and one listener, every call routed to the cluster
/// `backend` of one endpoint; then `extra` (more sections, such as `[limits]`).
pub fn one_backend_config(backend: impl std::fmt::Display, extra: &str) -> String {
    config_text("", "backend", &[backend.to_string()], extra)
}

/// A config with an admin listener, one listener, and one route named `r` (with
/// `route_extra` in its table) to the cluster `cluster` of `endpoints` (with
/// `cluster_extra`).
pub fn one_route_config(
    cluster: &str,
    endpoints: &[SocketAddr],
    route_extra: &str,
    cluster_extra: &str,
) -> String {
    let endpoints: Vec<String> = endpoints.iter().map(ToString::to_string).collect();
    let route = format!("name = \"r\"\n{route_extra}");
    config_text(&route, cluster, &endpoints, cluster_extra)
}

/// The head of most test configs: an admin listener and one listener (with
/// `listener_extra` in its table), both on free ports; routes and clusters follow.
pub fn admin_and_listener(listener_extra: &str) -> String {
    format!(
        "[admin]\naddress = \"127.0.0.1:0\"\n\n[[listeners]]\naddress = \"127.0.0.1:0\"\n{listener_extra}\n"
    )
}

/// Admin, one listener, one route (`route` in its table) to `cluster`, then the cluster's
/// table (its endpoints, then `cluster_extra`).
fn config_text(route: &str, cluster: &str, endpoints: &[String], cluster_extra: &str) -> String {
    let endpoints: Vec<String> = endpoints.iter().map(|e| format!("\"{e}\"")).collect();
    format!(
        r#"{}
[[routes]]
cluster = "{cluster}"
{route}

[clusters.{cluster}]
endpoints = [{}]
{cluster_extra}"#,
        admin_and_listener(""),
        endpoints.join(", ")
    )
}

/// A config with an admin listener, one listener, one route named `r` to the cluster
/// named first (with `route_extra` in its table), and a cluster of one endpoint for each of
/// `clusters` (name, address).
pub fn clusters_config(route_extra: &str, clusters: &[(&str, SocketAddr)]) -> String {
    let tables: String = clusters
        .iter()
        .map(|(name, addr)| format!("\n[clusters.{name}]\nendpoints = [\"{addr}\"]\n"))
        .collect();
    format!(
        "[admin]\naddress = \"127.0.0.1:0\"\n\n[[listeners]]\naddress = \"127.0.0.1:0\"\n\n\
         [[routes]]\nname = \"r\"\ncluster = \"{}\"\n{route_extra}\n{tables}",
        clusters[0].0
    )
}

/// Writes a config file and starts the binary with it.
pub fn start_with_config(config: &str, listeners: usize) -> (Proxy, tempfile::NamedTempFile) {
    start_with_config_args(config, listeners, &[])
}

/// Writes a config file and starts the binary with it and more arguments.
pub fn start_with_config_args(
    config: &str,
    listeners: usize,
    args: &[&str],
) -> (Proxy, tempfile::NamedTempFile) {
    let file = write_config(config);
    let mut all = vec!["--config", file.path().to_str().unwrap()];
    all.extend_from_slice(args);
    let proxy = start(&all, listeners);
    (proxy, file)
}

pub fn write_config(config: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    std::io::Write::write_all(&mut file, config.as_bytes()).unwrap();
    file
}

pub fn sigterm(proxy: &Proxy) {
    signal(proxy, "TERM");
}

/// Sends the signal `name` (`TERM`, `HUP`, `INT`) to the proxy.
pub fn signal(proxy: &Proxy, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &proxy.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Waits up to 5 s for a log line containing `text`; the lines read meanwhile are gone.
pub fn wait_for_log(proxy: &Proxy, text: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match proxy.logs.recv_timeout(left) {
            Ok(line) if line.contains(text) => return line,
            Ok(_) => {}
            Err(_) => panic!("no log line with {text:?} within 5 s"),
        }
    }
}

/// The log lines so far that contain `text` (every line read now is gone).
pub fn logged(proxy: &Proxy, text: &str) -> Vec<String> {
    proxy
        .logs
        .try_iter()
        .filter(|line| line.contains(text))
        .collect()
}

pub fn wait_exit(proxy: &mut Proxy, within: Duration) -> ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = proxy.child.try_wait().unwrap() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "grpcproxy did not exit within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The string value of `name` in a JSON log line.
pub fn field<'a>(line: &'a str, name: &str) -> &'a str {
    let key = format!("\"{name}\":\"");
    let start = line
        .find(&key)
        .unwrap_or_else(|| panic!("no {name} in {line}"))
        + key.len();
    let end = start + line[start..].find('"').unwrap();
    &line[start..end]
}

/// GETs `path` from an HTTP/1.1 server: (status code, body).
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nhost: admin\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// Scrapes `/metrics` until `line` appears (observers report when a call is fully over),
/// for up to 5 s; returns the scrape.
pub fn wait_for_metric(admin: SocketAddr, line: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, body) = http_get(admin, "/metrics");
        assert_eq!(status, 200);
        if body.lines().any(|l| l == line) {
            return body;
        }
        assert!(Instant::now() < deadline, "no line {line:?} in:\n{body}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `grpcproxy check-config path`: (exit code, stdout, stderr).
pub fn check_config(path: &std::path::Path) -> (Option<i32>, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_grpcproxy"))
        .arg("check-config")
        .arg(path)
        .output()
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The access log's lines, parsed, once it has at least `n` (waiting up to 5 s: lines are
/// written by a background thread).
pub fn access_log_lines(path: &std::path::Path, n: usize) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let log = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<serde_json::Value> = log
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        if lines.len() >= n || Instant::now() >= deadline {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
