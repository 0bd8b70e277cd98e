//! The JSON-lines access log and its writer thread.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use grpcproxy::CallRecord;
use tokio::sync::mpsc;

/// JSON-lines access log, written by a background task; the call path never waits on it.
#[derive(Debug)]
pub(crate) struct AccessLog {
    lines: mpsc::Sender<String>,
    pub(super) dropped: Arc<AtomicU64>,
}

impl AccessLog {
    /// Writes to `path` (appending), or to stdout for `-`.
    pub(crate) fn open(path: &str) -> std::io::Result<Self> {
        let mut out: Box<dyn Write + Send> = if path == "-" {
            Box::new(std::io::stdout())
        } else {
            Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            )
        };
        let (lines, mut rx) = mpsc::channel::<String>(8192);
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || {
                while let Some(line) = rx.blocking_recv() {
                    if out.write_all(line.as_bytes()).is_err() {
                        break;
                    }
                    if rx.is_empty() {
                        let _ = out.flush();
                    }
                }
            })?;
        Ok(Self {
            lines,
            dropped: Arc::default(),
        })
    }

    pub(super) fn write(&self, route: &str, cluster: &str, call: &CallRecord<'_>) {
        let mut line = serde_json::json!({
            "time": humantime::format_rfc3339_millis(call.started).to_string(),
            "peer": call.peer.map(|p| p.to_string()),
            "method": call.method,
            "route": route,
            "cluster": cluster,
            "endpoint": Some(call.backend).filter(|b| !b.is_empty()),
            "grpc_status": call.grpc_status as i32,
            "duration_ms": call.duration.as_secs_f64() * 1e3,
            "bytes_in": call.request_bytes,
            "bytes_out": call.response_bytes,
            "grpc_message": call.grpc_message,
            "authority": call.authority,
            "user_agent": call.user_agent,
        })
        .to_string();
        line.push('\n');
        if self.lines.try_send(line).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}
