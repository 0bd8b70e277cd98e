//! The JSON-lines access log and its writer thread.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use grpcproxy::CallRecord;
use tokio::sync::mpsc;

/// JSON-lines access log, written by a background task; the call path never waits on it.
#[derive(Debug)]
pub(crate) struct AccessLog {
    lines: mpsc::Sender<Entry>,
    pub(super) dropped: Arc<AtomicU64>,
}

/// What the writer thread gets: a line, or a request to say when all before it is written.
#[derive(Debug)]
enum Entry {
    Line(String),
    Flush(std::sync::mpsc::Sender<()>),
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
        let (lines, mut rx) = mpsc::channel::<Entry>(8192);
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || {
                while let Some(entry) = rx.blocking_recv() {
                    match entry {
                        Entry::Line(line) => {
                            if out.write_all(line.as_bytes()).is_err() {
                                break;
                            }
                            if rx.is_empty() {
                                let _ = out.flush();
                            }
                        }
                        Entry::Flush(done) => {
                            let _ = out.flush();
                            let _ = done.send(());
                        }
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
        });
        if let (Some(trace_id), Some(span_id)) = (call.trace_id, call.span_id) {
            line["trace_id"] = trace_id.into();
            line["span_id"] = span_id.into();
        }
        let mut line = line.to_string();
        line.push('\n');
        if self.lines.try_send(Entry::Line(line)).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Waits (up to `within`) until every line logged so far is written and flushed: at
    /// exit, so the last calls are not lost with the process. False if it took longer.
    pub(crate) async fn flush(&self, within: std::time::Duration) -> bool {
        let (done, written) = std::sync::mpsc::channel();
        let queued = tokio::time::timeout(within, self.lines.send(Entry::Flush(done))).await;
        if !matches!(queued, Ok(Ok(()))) {
            return false;
        }
        tokio::task::spawn_blocking(move || written.recv_timeout(within).is_ok())
            .await
            .unwrap_or(false)
    }
}
