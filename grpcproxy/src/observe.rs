//! Reporting finished calls: what a metrics or access-log layer needs from the proxy.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tonic::Code;

/// One finished call, as the proxy saw it.
#[derive(Debug, Clone)]
pub struct CallRecord<'a> {
    /// The full method, `/pkg.Service/Method`.
    pub method: &'a str,
    /// The client's address, when known.
    pub peer: Option<SocketAddr>,
    /// The backend the call went to.
    pub backend: &'a str,
    /// A backend that could not be reached first, when the call went to its alternate
    /// ([`Target::alternate`](crate::Target::alternate)).
    pub unreachable: Option<&'a str>,
    /// The status the client got: the backend's, or the proxy's own (deadline, limits,
    /// backend failure). `CANCELLED` when the client went away before any status.
    pub grpc_status: Code,
    /// When the call arrived.
    pub started: SystemTime,
    /// From arrival until both directions were over.
    pub duration: Duration,
    /// DATA bytes received from the client (message prefixes included).
    pub request_bytes: u64,
    /// DATA bytes sent to the client.
    pub response_bytes: u64,
    /// The `grpc-message` the client got with a status other than OK, percent-decoded.
    pub grpc_message: Option<&'a str>,
    /// The `:authority` the client sent.
    pub authority: Option<&'a str>,
    /// The client's `user-agent`.
    pub user_agent: Option<&'a str>,
    /// The call's trace id (32 hex digits), when the call was traced: the tracing
    /// observer (`trace::TracedCall::observer`, feature `otel`) sets it for the observers
    /// it wraps; `None` otherwise.
    pub trace_id: Option<&'a str>,
    /// The proxy's span id in that trace (16 hex digits), when traced.
    pub span_id: Option<&'a str>,
}

/// Told about every call it was attached to ([`Target::with_observer`](crate::Target::with_observer))
/// once the call is completely over. Runs on the proxy's tasks: keep it short and
/// non-blocking (count, or hand off to a channel).
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use grpcproxy::{CallObserver, CallRecord};
///
/// #[derive(Default)]
/// struct Failures(AtomicU64);
///
/// impl CallObserver for Failures {
///     fn call_ended(&self, call: &CallRecord<'_>) {
///         if call.grpc_status != tonic::Code::Ok {
///             self.0.fetch_add(1, Ordering::Relaxed);
///         }
///     }
/// }
/// ```
pub trait CallObserver: Send + Sync + 'static {
    /// The call is over.
    fn call_ended(&self, call: &CallRecord<'_>);
}

/// An observer shared by many calls.
pub type SharedObserver = Arc<dyn CallObserver>;
