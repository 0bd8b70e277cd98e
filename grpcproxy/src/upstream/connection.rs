//! One HTTP/2 connection to a backend, driven by h2 directly: its handshake, the task that
//! runs it (with keepalive PINGs), and whether it still takes new calls.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use h2::client::SendRequest;
use tokio::io::{AsyncRead, AsyncWrite};

use super::{UpstreamError, UpstreamErrorKind};
use crate::Http2Settings;

/// A handshaken connection: clones share it; calls open streams on it.
#[derive(Debug, Clone)]
pub(crate) struct Connection {
    sender: SendRequest<Bytes>,
    /// False once the connection task ended or the connection refused a new stream
    /// (GOAWAY, a connection error): the pool then makes a new one.
    usable: Arc<AtomicBool>,
}

impl Connection {
    /// Whether new calls may still use this connection.
    pub(crate) fn is_usable(&self) -> bool {
        self.usable.load(Ordering::Relaxed)
    }

    /// Stops handing this connection to new calls (it keeps serving the calls it has).
    pub(crate) fn retire(&self) {
        self.usable.store(false, Ordering::Relaxed);
    }

    /// A handle to open one stream with.
    pub(crate) fn sender(&self) -> SendRequest<Bytes> {
        self.sender.clone()
    }
}

/// Runs the HTTP/2 handshake over `io` and spawns the task that drives the connection,
/// counted in `open` until it ends.
pub(crate) async fn handshake<T>(
    address: &Arc<str>,
    settings: &Http2Settings,
    io: T,
    open: &Arc<AtomicUsize>,
) -> Result<Connection, UpstreamError>
where
    T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (sender, mut connection) = settings
        .client_builder()
        .handshake::<T, Bytes>(io)
        .await
        .map_err(|e| UpstreamError::new(address.clone(), UpstreamErrorKind::Handshake, e))?;
    let usable = Arc::new(AtomicBool::new(true));
    let keepalive = settings.keep_alive_interval.and_then(|interval| {
        let pings = connection.ping_pong()?;
        Some(crate::http2::keepalive(
            pings,
            interval,
            settings.keep_alive_timeout,
        ))
    });
    let running = Running::new(open.clone(), usable.clone());
    let address = address.clone();
    tokio::spawn(async move {
        let _running = running;
        let ended = match keepalive {
            None => connection.await,
            Some(keepalive) => tokio::select! {
                ended = &mut connection => ended,
                silent = keepalive => {
                    // Dropping the connection fails its streams as a lost connection.
                    tracing::debug!(backend = %address, "backend did not answer a keepalive PING in {silent:?}; closing the connection");
                    return;
                }
            },
        };
        match ended {
            // The proxy's own h2 closed it: the backend broke a limit, and every call on
            // the connection failed with it. Rare, and worth an operator's look.
            Err(e) if e.is_go_away() && e.is_library() => {
                tracing::warn!(backend = %address, error = %e, "closed a backend connection that broke an HTTP/2 limit");
            }
            Err(e) => {
                tracing::debug!(backend = %address, error = %e, "backend connection closed with an error");
            }
            Ok(()) => {}
        }
    });
    Ok(Connection { sender, usable })
}

/// Counts one backend connection as open until its task ends, then marks it unusable.
struct Running {
    open: Arc<AtomicUsize>,
    usable: Arc<AtomicBool>,
}

impl Running {
    fn new(open: Arc<AtomicUsize>, usable: Arc<AtomicBool>) -> Self {
        open.fetch_add(1, Ordering::Relaxed);
        Self { open, usable }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.usable.store(false, Ordering::Relaxed);
        self.open.fetch_sub(1, Ordering::Relaxed);
    }
}
