//! State shared by the two halves of one proxied call, and the proxy's live-call gauge.

use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;

use atomic_waker::AtomicWaker;
use tonic::Status;

/// Counters of a [`TransparentProxy`](crate::TransparentProxy), shared by its clones.
///
/// ```
/// use grpcproxy::ProxyStats;
///
/// let stats = ProxyStats::default();
/// assert_eq!(stats.live_streams(), 0);
/// ```
#[derive(Debug, Default)]
pub struct ProxyStats {
    live: AtomicUsize,
    started: AtomicU64,
}

impl ProxyStats {
    /// Calls whose request or response half is still alive anywhere in the proxy
    /// (including a backend stream not yet reset). Back to 0 once every call has ended.
    pub fn live_streams(&self) -> usize {
        self.live.load(Ordering::Acquire)
    }

    /// Calls the proxy has accepted since it was made.
    pub fn calls_started(&self) -> u64 {
        self.started.load(Ordering::Relaxed)
    }
}

/// Why the proxy itself ended a call early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum AbortReason {
    Deadline = 1,
    RequestTooLarge = 2,
    ResponseTooLarge = 3,
    ClientGone = 4,
}

/// One call's shared state: held by the request body (in hyper's pipe to the backend),
/// the response body (towards the client) and the call future; the call is live until
/// all of them are gone.
#[derive(Debug)]
pub(crate) struct CallState {
    abort: AtomicU8,
    request_waker: AtomicWaker,
    stats: Arc<ProxyStats>,
    /// The director's guard ([`Target::with_guard`](crate::Target::with_guard)), dropped
    /// with the call.
    guard: std::sync::OnceLock<Box<dyn std::any::Any + Send + Sync>>,
}

impl CallState {
    pub(crate) fn start(stats: &Arc<ProxyStats>) -> Arc<Self> {
        stats.live.fetch_add(1, Ordering::AcqRel);
        stats.started.fetch_add(1, Ordering::Relaxed);
        Arc::new(Self {
            abort: AtomicU8::new(0),
            request_waker: AtomicWaker::new(),
            stats: stats.clone(),
            guard: std::sync::OnceLock::new(),
        })
    }

    /// Holds `guard` until the call is over.
    pub(crate) fn keep(&self, guard: Box<dyn std::any::Any + Send + Sync>) {
        let _ = self.guard.set(guard);
    }

    /// Ends the call for `reason` (the first reason wins) and wakes the request half so it
    /// resets the backend stream even while the client is silent.
    pub(crate) fn abort(&self, reason: AbortReason) {
        let _ = self
            .abort
            .compare_exchange(0, reason as u8, Ordering::AcqRel, Ordering::Acquire);
        self.request_waker.wake();
    }

    pub(crate) fn abort_reason(&self) -> Option<AbortReason> {
        match self.abort.load(Ordering::Acquire) {
            1 => Some(AbortReason::Deadline),
            2 => Some(AbortReason::RequestTooLarge),
            3 => Some(AbortReason::ResponseTooLarge),
            4 => Some(AbortReason::ClientGone),
            _ => None,
        }
    }

    pub(crate) fn register_request_waker(&self, waker: &std::task::Waker) {
        self.request_waker.register(waker);
    }
}

impl Drop for CallState {
    fn drop(&mut self) {
        self.stats.live.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The status the client gets when the proxy ended the call for `reason`.
pub(crate) fn abort_status(reason: AbortReason, limit: Option<u32>) -> Status {
    match reason {
        AbortReason::Deadline => Status::deadline_exceeded("deadline exceeded at the proxy"),
        AbortReason::RequestTooLarge => Status::resource_exhausted(format!(
            "request message larger than the proxy's limit of {} bytes",
            limit.unwrap_or_default()
        )),
        AbortReason::ResponseTooLarge => Status::resource_exhausted(format!(
            "response message larger than the proxy's limit of {} bytes",
            limit.unwrap_or_default()
        )),
        AbortReason::ClientGone => Status::cancelled("the client went away"),
    }
}
