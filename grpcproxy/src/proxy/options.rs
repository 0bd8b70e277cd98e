//! Settings of a transparent proxy.

use std::time::Duration;

/// How a [`TransparentProxy`](crate::TransparentProxy) treats the calls it forwards.
///
/// ```
/// use std::time::Duration;
/// use grpcproxy::ProxyOptions;
///
/// let options = ProxyOptions {
///     max_message_size: Some(4 << 20),
///     max_timeout: Some(Duration::from_secs(30)),
///     ..ProxyOptions::default()
/// };
/// ```
#[derive(Debug, Clone, Default)]
pub struct ProxyOptions {
    /// Largest message, in bytes, accepted in either direction; a larger one ends the call
    /// with `RESOURCE_EXHAUSTED` without being buffered. `None` (the default): no limit.
    pub max_message_size: Option<u32>,
    /// Cap on every call's deadline: a client asking for more (or for none) gets this.
    pub max_timeout: Option<Duration>,
    /// Deadline for calls whose client sends no `grpc-timeout` (within `max_timeout`).
    pub default_timeout: Option<Duration>,
    /// Append the client's address to `x-forwarded-for`.
    pub x_forwarded_for: bool,
    /// End a call that has carried no message in either direction (nor, before them, the
    /// backend's response headers) for this long, with `DEADLINE_EXCEEDED`, resetting
    /// the backend stream. `None` (the default): a quiet call may stay open until its
    /// deadline, as gRPC allows long-lived watch streams.
    pub stream_idle_timeout: Option<Duration>,
    /// Told about every gRPC call the proxy answers itself before a target is chosen: a
    /// malformed method name (`UNIMPLEMENTED`), an unreadable `grpc-timeout` (`INTERNAL`),
    /// a director that did not answer within the call's deadline (`DEADLINE_EXCEEDED`).
    /// Calls the director refuses are the director's to count, and forwarded calls are
    /// reported to their target's observer
    /// ([`Target::with_observer`](crate::Target::with_observer)): with all three, every
    /// call is reported once. The record's `backend` is empty.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use grpcproxy::{CallObserver, CallRecord, ProxyOptions};
    ///
    /// struct Log;
    /// impl CallObserver for Log {
    ///     fn call_ended(&self, call: &CallRecord<'_>) {
    ///         eprintln!("answered {} itself: {:?}", call.method, call.grpc_status);
    ///     }
    /// }
    /// let options = ProxyOptions {
    ///     refusal_observer: Some(Arc::new(Log)),
    ///     ..ProxyOptions::default()
    /// };
    /// ```
    pub refusal_observer: Option<crate::SharedObserver>,
}

impl ProxyOptions {
    /// The timeout to enforce for a call whose client asked for `requested`.
    pub(crate) fn effective_timeout(&self, requested: Option<Duration>) -> Option<Duration> {
        super::timeouts::effective_timeout(requested, self.max_timeout, self.default_timeout)
    }
}
