//! The grpcio and grpc-js peers: `python/server.py`, `python/client.py`, `node/server.js`
//! and `node/client.js`, run as child processes from the environments that
//! `interop/install.sh` makes (a virtualenv and `node_modules`). A missing one panics with
//! what to run: the suite never skips.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};

use crate::CheckResult;

/// A gRPC implementation in the matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Runtime {
    /// Python `grpcio` (asyncio API).
    Grpcio,
    /// Node `@grpc/grpc-js`.
    GrpcJs,
    /// Rust tonic, in the test's own process.
    Tonic,
    /// grpc-go (Debian's 1.33), a backend only: `Unary`, `ClientStream` and `Bidi`
    /// (`go/server.go`). Not in the matrix: it checks how request streams end.
    GrpcGo,
    /// The official `grpc-web` client (what browser apps ship) on Node, binary
    /// (`application/grpc-web+proto`): a client only, through the proxy only.
    GrpcWeb,
    /// The same client in text mode (`application/grpc-web-text`, base64).
    GrpcWebText,
}

impl Runtime {
    /// All three, in table order.
    pub const ALL: [Runtime; 3] = [Runtime::Grpcio, Runtime::GrpcJs, Runtime::Tonic];

    /// The matrix's clients: the three, then gRPC-Web binary and text.
    pub const CLIENTS: [Runtime; 5] = [
        Runtime::Grpcio,
        Runtime::GrpcJs,
        Runtime::Tonic,
        Runtime::GrpcWeb,
        Runtime::GrpcWebText,
    ];

    /// Whether it speaks gRPC-Web (and so reaches backends only through the proxy).
    pub fn is_web(self) -> bool {
        matches!(self, Runtime::GrpcWeb | Runtime::GrpcWebText)
    }

    /// Its name in target labels and the table.
    pub fn name(self) -> &'static str {
        match self {
            Runtime::Grpcio => "grpcio",
            Runtime::GrpcJs => "grpc-js",
            Runtime::Tonic => "tonic",
            Runtime::GrpcGo => "grpc-go",
            Runtime::GrpcWeb => "grpc-web",
            Runtime::GrpcWebText => "grpc-web-text",
        }
    }
}

/// How long a peer may take to start serving.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a client may take for all its checks against all targets.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(240);

fn interop_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn require(path: &Path, what: &str) {
    assert!(
        path.exists(),
        "{what} is missing ({}): run `bash interop/install.sh` (scripts/test.sh does)",
        path.display()
    );
}

/// The command that runs `script` (`server` or `client`) of `runtime`.
fn command(runtime: Runtime, script: &str) -> Command {
    let dir = interop_dir();
    let mut command = match runtime {
        Runtime::Grpcio => {
            let python = dir.join("python/.venv/bin/python");
            require(&python, "the grpcio virtualenv");
            let mut command = Command::new(python);
            command.arg(dir.join(format!("python/{script}.py")));
            command
        }
        Runtime::GrpcJs => {
            require(
                &dir.join("node/node_modules/@grpc/grpc-js"),
                "@grpc/grpc-js",
            );
            let mut command = Command::new("node");
            command.arg(dir.join(format!("node/{script}.js")));
            command
        }
        Runtime::GrpcWeb | Runtime::GrpcWebText => {
            assert_eq!(script, "client", "gRPC-Web is a client only");
            require(&dir.join("node/node_modules/grpc-web"), "grpc-web");
            let mut command = Command::new("node");
            let format = if runtime == Runtime::GrpcWeb {
                "binary"
            } else {
                "text"
            };
            command
                .arg(dir.join("node/web_client.js"))
                .args(["--format", format]);
            command
        }
        Runtime::Tonic => panic!("tonic peers run in process"),
        Runtime::GrpcGo => {
            assert_eq!(script, "server", "grpc-go is a backend only");
            let server = dir.join("go/grpc-go-server");
            require(&server, "the grpc-go backend");
            Command::new(server)
        }
    };
    // The peer exits when its standard input closes, so it cannot outlive the test.
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    command
}

/// A grpcio or grpc-js backend process; killed when dropped.
#[derive(Debug)]
pub struct PeerBackend {
    _child: Child,
    _stdin: ChildStdin,
    addr: SocketAddr,
}

impl PeerBackend {
    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// Starts the backend of `runtime` (grpcio, grpc-js or grpc-go) and waits until it listens.
///
/// ```no_run
/// # async fn f() {
/// use grpcproxy_interop::peers::{start_backend, Runtime};
/// let backend = start_backend(Runtime::Grpcio).await;
/// println!("grpcio backend at {}", backend.addr());
/// # }
/// ```
pub async fn start_backend(runtime: Runtime) -> PeerBackend {
    let mut child = command(runtime, "server")
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start the {} backend: {e}", runtime.name()));
    let stdin = child.stdin.take().expect("stdin is piped");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout is piped")).lines();
    let listening = async {
        while let Some(line) = lines.next_line().await.ok().flatten() {
            if let Some(port) = line.strip_prefix("LISTENING ") {
                return port.trim().parse::<u16>().ok();
            }
        }
        None
    };
    let port = tokio::time::timeout(START_TIMEOUT, listening)
        .await
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("the {} backend did not start listening", runtime.name()));
    PeerBackend {
        _child: child,
        _stdin: stdin,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
    }
}

/// Runs the client of `runtime` (grpcio, grpc-js or a gRPC-Web one) against `targets` (`(label,
/// address)` pairs) and collects its results; a client that crashes, prints something
/// that is not a result, or overruns its time adds a failed result saying so.
pub async fn run_client(runtime: Runtime, targets: &[(String, String)]) -> Vec<CheckResult> {
    let mut command = command(runtime, "client");
    command.args(
        targets
            .iter()
            .map(|(label, address)| format!("{label}={address}")),
    );
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start the {} client: {e}", runtime.name()));
    let _stdin = child.stdin.take().expect("stdin is piped");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout is piped")).lines();
    let mut results = Vec::new();
    let failure = |detail: String| CheckResult {
        target: "-".into(),
        check: "client".into(),
        ok: false,
        detail: format!("{} client: {detail}", runtime.name()),
        seen: String::new(),
    };
    let reading = async {
        while let Some(line) = lines.next_line().await.ok().flatten() {
            match serde_json::from_str::<CheckResult>(&line) {
                Ok(result) => results.push(result),
                Err(_) => results.push(failure(format!("printed {line:?}"))),
            }
        }
        child.wait().await
    };
    match tokio::time::timeout(CLIENT_TIMEOUT, reading).await {
        Ok(Ok(status)) if status.success() => {}
        Ok(Ok(status)) => results.push(failure(format!("exited with {status}"))),
        Ok(Err(error)) => results.push(failure(error.to_string())),
        Err(_) => results.push(failure(format!("no exit within {CLIENT_TIMEOUT:?}"))),
    }
    results
}
