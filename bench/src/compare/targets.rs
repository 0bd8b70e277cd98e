//! Starting and stopping what is measured: the backend, grpcproxy (with and without its
//! tap), nginx with `grpc_pass`, HAProxy with `proto h2`, and HAProxy relaying TCP (the
//! cost of the extra hop alone, with no HTTP/2 work: a floor no HTTP/2 proxy can beat).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

use super::procfs;

/// One of the servers calls go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Kind {
    /// The backend itself.
    Direct,
    Grpcproxy,
    /// grpcproxy in quick mode (`--listen`/`--to`, no configuration file): what people
    /// try first, held to config mode's figures.
    GrpcproxyQuick,
    /// grpcproxy recording every call, payloads included, to a file.
    GrpcproxyTap,
    Nginx,
    Haproxy,
    /// The thinnest HTTP/2 relay on grpcproxy's own crates (`bench/examples/h2_floor.rs`):
    /// what an HTTP/2-aware hop costs at least with tokio and h2 here.
    H2Floor,
    /// HAProxy in `mode tcp`: bytes relayed, nothing parsed. Not a gRPC proxy (it cannot
    /// route calls), measured as the floor of what one more hop costs on this machine.
    L4Relay,
}

impl Kind {
    pub(crate) const ALL: [Kind; 8] = [
        Kind::Direct,
        Kind::Grpcproxy,
        Kind::GrpcproxyQuick,
        Kind::GrpcproxyTap,
        Kind::Nginx,
        Kind::Haproxy,
        Kind::H2Floor,
        Kind::L4Relay,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Direct => "direct",
            Kind::Grpcproxy => "grpcproxy",
            Kind::GrpcproxyQuick => "grpcproxy quick",
            Kind::GrpcproxyTap => "grpcproxy+tap",
            Kind::Nginx => "nginx",
            Kind::Haproxy => "HAProxy",
            Kind::H2Floor => "h2 floor",
            Kind::L4Relay => "L4 relay",
        }
    }
}

/// A started server: killed when dropped.
#[derive(Debug)]
pub(crate) struct Running {
    pub(crate) kind: Kind,
    pub(crate) addr: SocketAddr,
    child: Option<Child>,
}

impl Running {
    /// The processes whose CPU and memory count (none for direct: that is the backend).
    pub(crate) fn pids(&self) -> Vec<u32> {
        match (&self.child, self.kind) {
            (Some(child), Kind::Nginx) => procfs::with_children(child.id()),
            (Some(child), _) => vec![child.id()],
            (None, _) => Vec::new(),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            // SIGTERM first: nginx's master then stops its workers.
            let _ = Command::new("kill").arg(child.id().to_string()).status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The backend process, killed when dropped.
#[derive(Debug)]
pub(crate) struct Backend {
    child: Child,
    pub(crate) addr: SocketAddr,
}

impl Drop for Backend {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The backend: this binary's `backend` command.
pub(crate) fn backend() -> anyhow::Result<Backend> {
    let (child, addr) = spawn_backend()?;
    Ok(Backend { child, addr })
}

fn spawn_backend() -> anyhow::Result<(Child, SocketAddr)> {
    let mut child = Command::new(std::env::current_exe()?)
        .args(["backend", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot start the backend")?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line)?;
    let addr = line
        .trim()
        .strip_prefix("listening ")
        .with_context(|| format!("the backend said {line:?}"))?
        .parse()?;
    Ok((child, addr))
}

/// Starts `kind` in front of `backend`, with its files in `dir`.
pub(crate) fn start(
    kind: Kind,
    backend: SocketAddr,
    grpcproxy: &Path,
    dir: &Path,
) -> anyhow::Result<Running> {
    if kind == Kind::Direct {
        return Ok(Running {
            kind,
            addr: backend,
            child: None,
        });
    }
    let port = free_port()?;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let log = std::fs::File::create(dir.join(format!("{}.log", kind.name())))?;
    let mut command = match kind {
        Kind::Direct => unreachable!("returned above"),
        Kind::Grpcproxy | Kind::GrpcproxyTap => {
            let mut config = format!(
                "[[listeners]]\naddress = \"{addr}\"\n[[routes]]\ncluster = \"backend\"\n\
                 [clusters.backend]\nendpoints = [\"{backend}\"]\n"
            );
            if kind == Kind::GrpcproxyTap {
                config += &format!(
                    "[tap]\nfile = \"{}\"\nrotate_bytes = 268435456\nkeep = 1\n",
                    dir.join("tap.pb").display()
                );
            }
            let path = write(dir, &format!("{}.toml", kind.name()), &config)?;
            let mut command = Command::new(grpcproxy);
            command.args(["--log-level", "warn", "--config"]).arg(path);
            command
        }
        Kind::Nginx => {
            let config = nginx_config(addr, backend, dir);
            let path = write(dir, "nginx.conf", &config)?;
            let mut command = Command::new(find("nginx")?);
            command.arg("-p").arg(dir).arg("-c").arg(path);
            command
        }
        Kind::GrpcproxyQuick => {
            let mut command = Command::new(grpcproxy);
            command.args(["--log-level", "warn", "--listen", &addr.to_string()]);
            command.args(["--to", &format!("http://{backend}")]);
            command
        }
        Kind::H2Floor => {
            let mut command = Command::new(h2_floor()?);
            command.arg(addr.to_string()).arg(backend.to_string());
            command
        }
        Kind::Haproxy | Kind::L4Relay => {
            let config = haproxy_config(addr, backend, kind == Kind::L4Relay);
            let path = write(
                dir,
                &format!("{}.cfg", kind.name().replace(' ', "-")),
                &config,
            )?;
            let mut command = Command::new(find("haproxy")?);
            command.arg("-db").arg("-f").arg(path);
            command
        }
    };
    let child = command
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("cannot start {}", kind.name()))?;
    let running = Running {
        kind,
        addr,
        child: Some(child),
    };
    wait_listening(addr, kind)?;
    Ok(running)
}

/// The h2 floor relay, built beside this binary (`examples/h2_floor` of the same target
/// directory).
fn h2_floor() -> anyhow::Result<std::path::PathBuf> {
    let exe = std::env::current_exe()?;
    let path = exe
        .parent()
        .context("this binary has no directory")?
        .join("examples/h2_floor");
    anyhow::ensure!(
        path.is_file(),
        "{} is missing: build it with `cargo build -p grpcproxy-bench --examples` (add --release for a release run)",
        path.display()
    );
    Ok(path)
}

/// nginx as its documentation and users tune it for gRPC: HTTP/2 on the listener,
/// keepalive connections to the backend reused without limit, no body size limit.
fn nginx_config(addr: SocketAddr, backend: SocketAddr, dir: &Path) -> String {
    let dir = dir.display();
    format!(
        "daemon off;\nuser root;\nworker_processes auto;\npid {dir}/nginx.pid;\nerror_log {dir}/nginx-error.log warn;\n\
         events {{ worker_connections 10240; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {dir}/body;\n  proxy_temp_path {dir}/proxy;\n\
           fastcgi_temp_path {dir}/fastcgi;\n  uwsgi_temp_path {dir}/uwsgi;\n  scgi_temp_path {dir}/scgi;\n\
           keepalive_requests 10000000;\n  http2_max_concurrent_streams 1024;\n\
           upstream backend {{\n    server {backend};\n    keepalive 256;\n    keepalive_requests 10000000;\n    keepalive_timeout 300s;\n  }}\n\
           server {{\n    listen {addr} http2;\n    client_max_body_size 0;\n\
             location / {{\n      grpc_pass grpc://backend;\n      grpc_socket_keepalive on;\n    }}\n  }}\n}}\n"
    )
}

/// HAProxy with HTTP/2 on both sides and connection reuse; or, with `tcp`, relaying each
/// client connection's bytes to a backend connection of its own without parsing them.
fn haproxy_config(addr: SocketAddr, backend: SocketAddr, tcp: bool) -> String {
    if tcp {
        return format!(
            "global\n  maxconn 8000\n\
             defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 300s\n  timeout server 300s\n\
             frontend relay\n  bind {addr}\n  default_backend backend\n\
             backend backend\n  server backend {backend}\n"
        );
    }
    format!(
        "global\n  maxconn 8000\n\
         defaults\n  mode http\n  timeout connect 5s\n  timeout client 300s\n  timeout server 300s\n  http-reuse always\n\
         frontend grpc\n  bind {addr} proto h2\n  default_backend backend\n\
         backend backend\n  server backend {backend} proto h2\n"
    )
}

fn write(dir: &Path, name: &str, text: &str) -> anyhow::Result<PathBuf> {
    let path = dir.join(name);
    std::fs::write(&path, text)?;
    Ok(path)
}

/// A program from PATH or /usr/sbin.
pub(crate) fn find(program: &str) -> anyhow::Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
        .with_context(|| format!("{program} is not installed (scripts/bench.sh installs it)"))
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn wait_listening(addr: SocketAddr, kind: Kind) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(addr).is_err() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "{} did not listen on {addr} within 10 s",
            kind.name()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}
