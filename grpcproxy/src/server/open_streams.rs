//! Counting a connection's open streams, for its idle timeout: plain atomics, so a stream
//! opening or closing wakes nothing and touches no timer.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The open streams of one connection, and since when it has had none. Plain atomics: a
/// stream opening or closing wakes nothing and touches no timer.
#[derive(Debug)]
pub(super) struct StreamCount {
    open: AtomicUsize,
    started: std::time::Instant,
    /// When the last stream closed, in milliseconds since `started`.
    idle_since_ms: AtomicU64,
}

impl StreamCount {
    pub(super) fn new() -> Self {
        Self {
            open: AtomicUsize::new(0),
            started: std::time::Instant::now(),
            idle_since_ms: AtomicU64::new(0),
        }
    }

    /// When the connection becomes idle for `timeout`, if no stream opens before; `None`
    /// while a stream is open.
    pub(super) fn idle_at(&self, timeout: Duration) -> Option<tokio::time::Instant> {
        if self.open.load(Ordering::Acquire) > 0 {
            return None;
        }
        let since = Duration::from_millis(self.idle_since_ms.load(Ordering::Acquire));
        Some(tokio::time::Instant::from_std(
            self.started + since + timeout,
        ))
    }
}

/// One open stream of a connection, counted until dropped.
#[derive(Debug)]
pub(super) struct OpenStream(Arc<StreamCount>);

impl OpenStream {
    pub(super) fn new(streams: &Arc<StreamCount>) -> Self {
        streams.open.fetch_add(1, Ordering::AcqRel);
        Self(streams.clone())
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        let streams = &self.0;
        if streams.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            let ms = streams.started.elapsed().as_millis() as u64;
            streams.idle_since_ms.store(ms, Ordering::Release);
        }
    }
}
