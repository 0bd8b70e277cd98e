//! State shared by the two halves of one proxied call, and the proxy's live-call gauge.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicI32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Instant, SystemTime};

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
    Idle = 5,
    /// The last try of a retried call outran the per-try timeout.
    TryTimeout = 6,
}

/// One call's shared state: held by the request body (in the pipe to the backend),
/// the response body (towards the client) and the call future; the call is live until
/// all of them are gone.
#[derive(Debug)]
pub(crate) struct CallState {
    abort: AtomicU8,
    request_waker: AtomicWaker,
    stats: Arc<ProxyStats>,
    /// The director's guard ([`Target::with_guard`](crate::Target::with_guard)), dropped
    /// with the call.
    guard: OnceLock<Box<dyn std::any::Any + Send + Sync>>,
    /// What the observer is told when the call is over.
    record: OnceLock<Observed>,
    /// (backend used, backend that could not be reached) when the call failed over.
    failover: OnceLock<(Arc<str>, Arc<str>)>,
    status: AtomicI32,
    /// The status's message, kept only for an observer and only when not OK.
    message: OnceLock<Box<str>>,
    request_bytes: AtomicU64,
    response_bytes: AtomicU64,
    request_messages: AtomicU64,
    response_messages: AtomicU64,
    /// Retries, hedges and the mirror, kept only for an observer.
    attempts: Mutex<Vec<crate::Attempt>>,
    /// The message-queue tap of the call, when the queue wants it.
    tap: OnceLock<Arc<crate::mq::tap::CallTap>>,
    /// The mirror's watch on the call, when it is mirrored.
    mirror: OnceLock<super::mirror::MirrorWatch>,
    started: Instant,
    /// When a message last went by, in milliseconds since `started` (stream idle timeout).
    active_ms: AtomicU64,
}

/// The parts of a [`CallRecord`](crate::CallRecord) known once the director has answered.
#[derive(Debug)]
pub(crate) struct Observed {
    pub(crate) observer: crate::SharedObserver,
    pub(crate) method: http::uri::PathAndQuery,
    pub(crate) peer: Option<SocketAddr>,
    pub(crate) backend: Arc<str>,
    pub(crate) authority: Option<http::uri::Authority>,
    pub(crate) user_agent: Option<http::HeaderValue>,
}

impl std::fmt::Debug for dyn crate::CallObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CallObserver")
    }
}

const NO_STATUS: i32 = -1;

impl CallState {
    /// The state of a call the proxy received at `started`.
    pub(crate) fn start(stats: &Arc<ProxyStats>, started: Instant) -> Arc<Self> {
        stats.live.fetch_add(1, Ordering::AcqRel);
        stats.started.fetch_add(1, Ordering::Relaxed);
        Arc::new(Self {
            abort: AtomicU8::new(0),
            request_waker: AtomicWaker::new(),
            stats: stats.clone(),
            guard: OnceLock::new(),
            record: OnceLock::new(),
            failover: OnceLock::new(),
            status: AtomicI32::new(NO_STATUS),
            message: OnceLock::new(),
            request_bytes: AtomicU64::new(0),
            response_bytes: AtomicU64::new(0),
            request_messages: AtomicU64::new(0),
            response_messages: AtomicU64::new(0),
            attempts: Mutex::new(Vec::new()),
            tap: OnceLock::new(),
            mirror: OnceLock::new(),
            started,
            active_ms: AtomicU64::new(0),
        })
    }

    /// Taps the call: its messages and end are published through `tap`.
    pub(crate) fn tap_with(&self, tap: Arc<crate::mq::tap::CallTap>) {
        let _ = self.tap.set(tap);
    }

    /// The call's tap, if it is tapped.
    pub(crate) fn tap(&self) -> Option<&Arc<crate::mq::tap::CallTap>> {
        self.tap.get()
    }

    /// Mirrors the call: the primary's answer and end go to `watch`.
    pub(crate) fn mirror_with(&self, watch: super::mirror::MirrorWatch) {
        let _ = self.mirror.set(watch);
    }

    /// The call's mirror watch, if it is mirrored.
    pub(crate) fn mirror(&self) -> Option<&super::mirror::MirrorWatch> {
        self.mirror.get()
    }

    /// Whether the observer wants the message counts (the tap counts its own).
    pub(crate) fn counting_messages(&self) -> bool {
        self.record
            .get()
            .is_some_and(|observed| observed.observer.counts_messages())
    }

    /// Whether anyone (observer or tap) wants the byte and message counts.
    fn counting(&self) -> bool {
        self.record.get().is_some() || self.tap.get().is_some()
    }

    /// Reports the call to `observed.observer` when it is over.
    pub(crate) fn observe(&self, observed: Observed) {
        let _ = self.record.set(observed);
    }

    /// Records that the call went to `used` because `unreachable` could not be reached.
    pub(crate) fn failed_over(&self, used: Arc<str>, unreachable: Arc<str>) {
        let _ = self.failover.set((used, unreachable));
    }

    /// Records the status the client gets (the first one recorded wins).
    pub(crate) fn set_status(&self, code: tonic::Code) {
        let _ = self.status.compare_exchange(
            NO_STATUS,
            code as i32,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
    }

    /// Counts `bytes` of request DATA in which `messages` messages began.
    pub(crate) fn add_request(&self, bytes: usize, messages: u64) {
        if self.counting() {
            self.request_bytes
                .fetch_add(bytes as u64, Ordering::Relaxed);
            if messages > 0 {
                self.request_messages.fetch_add(messages, Ordering::Relaxed);
            }
        }
    }

    /// Counts `bytes` of response DATA in which `messages` messages began.
    pub(crate) fn add_response(&self, bytes: usize, messages: u64) {
        if self.counting() {
            self.response_bytes
                .fetch_add(bytes as u64, Ordering::Relaxed);
            if messages > 0 {
                self.response_messages
                    .fetch_add(messages, Ordering::Relaxed);
            }
        }
    }

    /// Records a try beyond the first (or the mirror) for the observer, if there is one.
    pub(crate) fn attempted(
        &self,
        kind: crate::AttemptKind,
        number: u32,
        endpoint: &Arc<str>,
        after: Option<tonic::Code>,
    ) {
        if self.record.get().is_some() {
            let attempt = crate::Attempt {
                kind,
                number,
                endpoint: endpoint.clone(),
                at: SystemTime::now(),
                after,
            };
            self.attempts
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(attempt);
        }
    }

    /// Records the status the proxy itself gives the client, with its message.
    pub(crate) fn set_status_of(&self, status: &tonic::Status) {
        self.set_status(status.code());
        self.keep_message(status.code(), || Some(status.message().into()));
    }

    /// Records the `grpc-status` in trailers (or trailers-only headers), if any, and its
    /// `grpc-message`.
    pub(crate) fn set_status_from(&self, headers: &http::HeaderMap) {
        if let Some(code) = headers
            .get(crate::headers::GRPC_STATUS)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<i32>().ok())
        {
            let code = tonic::Code::from_i32(code);
            self.set_status(code);
            self.keep_message(code, || {
                let raw = headers.get(crate::headers::GRPC_MESSAGE)?;
                let text = percent_encoding::percent_decode(raw.as_bytes()).decode_utf8_lossy();
                Some(text.into())
            });
        }
    }

    /// Keeps the message of a failed call for the observer (the first one wins).
    fn keep_message(&self, code: tonic::Code, message: impl FnOnce() -> Option<Box<str>>) {
        if code != tonic::Code::Ok && self.record.get().is_some() && self.message.get().is_none() {
            if let Some(message) = message().filter(|m| !m.is_empty()) {
                let _ = self.message.set(message);
            }
        }
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
            5 => Some(AbortReason::Idle),
            6 => Some(AbortReason::TryTimeout),
            _ => None,
        }
    }

    /// Records that a message (or the response headers) just went by.
    pub(crate) fn touch(&self) {
        let ms = self.started.elapsed().as_millis() as u64;
        self.active_ms.fetch_max(ms, Ordering::Relaxed);
    }

    /// When the call goes idle for `timeout` unless a message goes by first.
    pub(crate) fn idle_at(&self, timeout: std::time::Duration) -> tokio::time::Instant {
        let active = std::time::Duration::from_millis(self.active_ms.load(Ordering::Relaxed));
        tokio::time::Instant::from_std(self.started + active + timeout)
    }

    pub(crate) fn register_request_waker(&self, waker: &std::task::Waker) {
        self.request_waker.register(waker);
    }
}

/// A call the proxy ended resets its backend stream, even while the request's pipe waits
/// for window (a backend that stopped reading): the pipe shares the request half's waker.
impl crate::http2::Cut for CallState {
    fn is_cut(&self, cx: &std::task::Context<'_>) -> bool {
        self.register_request_waker(cx.waker());
        self.abort_reason().is_some()
    }
}

impl Drop for CallState {
    fn drop(&mut self) {
        let status = match self.status.load(Ordering::Acquire) {
            NO_STATUS => tonic::Code::Cancelled,
            code => tonic::Code::from_i32(code),
        };
        if let Some(watch) = self.mirror.take() {
            // A call the proxy or the client ended cancels its mirror.
            watch.primary_ended(self.abort_reason().is_none().then_some(status));
        }
        let duration = self.started.elapsed();
        if let Some(tap) = self.tap.get() {
            tap.publish(tap.ended(crate::mq::CallEnded {
                call_id: tap.call_id,
                code: status,
                trailers: None,
                duration,
                request_messages: 0,
                response_messages: 0,
                request_bytes: self.request_bytes.load(Ordering::Relaxed),
                response_bytes: self.response_bytes.load(Ordering::Relaxed),
            }));
        }
        let attempts = std::mem::take(self.attempts.get_mut().unwrap_or_else(|e| e.into_inner()));
        if let Some(observed) = self.record.get() {
            let (backend, unreachable) = match self.failover.get() {
                Some((used, unreachable)) => (used, Some(&**unreachable)),
                None => (&observed.backend, None),
            };
            observed.observer.call_ended(&crate::CallRecord {
                method: observed.method.path(),
                peer: observed.peer,
                backend,
                unreachable,
                grpc_status: status,
                // The wall clock read once, at the end, for both ends of the call.
                started: SystemTime::now() - duration,
                duration,
                request_bytes: self.request_bytes.load(Ordering::Relaxed),
                response_bytes: self.response_bytes.load(Ordering::Relaxed),
                grpc_message: self.message.get().map(|m| &**m),
                authority: observed.authority.as_ref().map(|a| a.as_str()),
                user_agent: observed.user_agent.as_ref().and_then(|v| v.to_str().ok()),
                trace_id: None,
                span_id: None,
                request_messages: self.request_messages.load(Ordering::Relaxed),
                response_messages: self.response_messages.load(Ordering::Relaxed),
                attempts: &attempts,
            });
        }
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
        AbortReason::Idle => {
            Status::deadline_exceeded("stream idle timeout at the proxy: no message either way")
        }
        AbortReason::TryTimeout => {
            Status::deadline_exceeded("per-try timeout at the proxy: every try took too long")
        }
    }
}
