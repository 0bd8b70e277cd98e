//! A real `nats-server` (with JetStream) for tests: a free port, a temporary store, and
//! stop / restart on the same port.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `nats-server`; killed when dropped.
#[derive(Debug)]
pub struct NatsServer {
    port: u16,
    store: std::path::PathBuf,
    args: Vec<String>,
    child: Option<Child>,
}

impl NatsServer {
    /// Starts `nats-server -js` on a free loopback port. Panics (loudly, never skipping)
    /// when the binary is missing: `scripts/test.sh` installs Debian's `nats-server`.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts it with more command-line arguments (kept for restarts), such as
    /// `["--user", "alice", "--pass", "secret"]`, `["--auth", "token"]` or `["--tls",
    /// "--tlscert", "server.pem", "--tlskey", "server.key"]`.
    pub fn start_with(args: &[&str]) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let store =
            std::env::temp_dir().join(format!("grpcproxy-nats-{}-{port}", std::process::id()));
        let mut server = Self {
            port,
            store,
            args: args.iter().map(|a| a.to_string()).collect(),
            child: None,
        };
        server.restart();
        server
    }

    /// `nats://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the server (as a crash would).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and store, and waits until it accepts connections.
    pub fn restart(&mut self) {
        self.stop();
        let binary = ["nats-server", "/usr/sbin/nats-server", "/usr/bin/nats-server"]
            .into_iter()
            .find(|b| Command::new(b).arg("--version").output().is_ok())
            .expect("nats-server is not installed: run `bash scripts/test.sh` (it installs Debian's nats-server)");
        let child = Command::new(binary)
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-sd",
            ])
            .arg(&self.store)
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server starts");
        self.child = Some(child);
        let address: SocketAddr = ([127, 0, 0, 1], self.port).into();
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(address).is_err() {
            assert!(
                Instant::now() < deadline,
                "nats-server did not listen within 10 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.store);
    }
}

/// A JetStream cluster of nats-servers on loopback, each routed to the others (one
/// cluster name, a server name each); nodes can be killed one by one.
#[derive(Debug)]
pub struct NatsCluster {
    /// The nodes, in the order they were started.
    pub nodes: Vec<NatsServer>,
}

impl NatsCluster {
    /// Starts `nodes` servers (3 for an R3 stream). JetStream elects its meta leader a
    /// few seconds later: clients that create streams must retry until then.
    pub fn start(nodes: usize) -> Self {
        let cluster_ports: Vec<u16> = (0..nodes)
            .map(|_| {
                std::net::TcpListener::bind("127.0.0.1:0")
                    .unwrap()
                    .local_addr()
                    .unwrap()
                    .port()
            })
            .collect();
        let routes: Vec<String> = cluster_ports
            .iter()
            .map(|p| format!("nats://127.0.0.1:{p}"))
            .collect();
        let routes = routes.join(",");
        let nodes = cluster_ports
            .iter()
            .enumerate()
            .map(|(i, port)| {
                let name = format!("n{i}");
                let cluster = format!("nats://127.0.0.1:{port}");
                NatsServer::start_with(&[
                    "--server_name",
                    &name,
                    "--cluster_name",
                    "grpcproxy-test",
                    "--cluster",
                    &cluster,
                    "--routes",
                    &routes,
                ])
            })
            .collect();
        Self { nodes }
    }

    /// The client URLs of the nodes still running, comma-separated.
    pub fn urls(&self) -> String {
        let urls: Vec<String> = self
            .nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(NatsServer::url)
            .collect();
        urls.join(",")
    }
}
