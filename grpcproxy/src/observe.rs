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
    /// When the call arrived: the wall clock when it ended, less `duration`.
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
    /// Messages that began in the request (counted from their 5-byte prefixes; 0 when
    /// the observer does not count them, [`CallObserver::counts_messages`]).
    pub request_messages: u64,
    /// Messages that began in the response.
    pub response_messages: u64,
    /// The tries beyond the first (retries, hedges) and the mirror, in the order they
    /// went out; empty for a call sent once.
    pub attempts: &'a [Attempt],
}

/// A try of a call beyond its first, or its mirror ([`CallRecord::attempts`]).
///
/// ```
/// use grpcproxy::{Attempt, AttemptKind};
///
/// fn retries(attempts: &[Attempt]) -> usize {
///     attempts.iter().filter(|a| a.kind == AttemptKind::Retry).count()
/// }
/// assert_eq!(retries(&[]), 0);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// Why it went out.
    pub kind: AttemptKind,
    /// The try's number (the first try is 1); 0 for a mirror.
    pub number: u32,
    /// The backend it was sent to.
    pub endpoint: Arc<str>,
    /// When it went out.
    pub at: SystemTime,
    /// For a retry: the status of the try before it (`DEADLINE_EXCEEDED` for a try cut by
    /// the per-try timeout).
    pub after: Option<Code>,
}

/// Why a call was sent once more ([`Attempt::kind`]).
///
/// ```
/// assert_eq!(grpcproxy::AttemptKind::Hedge.as_str(), "hedge");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptKind {
    /// The try before it failed with a status the retry policy retries.
    Retry,
    /// No try had answered within the hedging delay.
    Hedge,
    /// A copy of the call to the mirror (its answer goes nowhere).
    Mirror,
    /// A mirror the policy had no room for: no copy went out.
    MirrorDropped,
}

impl AttemptKind {
    /// The kind as a lowercase word (`retry`, `hedge`, `mirror`, `mirror_dropped`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Retry => "retry",
            Self::Hedge => "hedge",
            Self::Mirror => "mirror",
            Self::MirrorDropped => "mirror_dropped",
        }
    }
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

    /// Whether it reads [`CallRecord::request_messages`] and
    /// [`response_messages`](CallRecord::response_messages): counting them reads every
    /// message's prefix as DATA goes by. Default `true`; an observer that does not need
    /// them says `false`, and they may be 0.
    fn counts_messages(&self) -> bool {
        true
    }
}

/// An observer shared by many calls.
pub type SharedObserver = Arc<dyn CallObserver>;
