//! A call's time limits: the deadline it gets, the stream idle timeout, and the late-status
//! rule. One pair of timers serves the whole call: [`Bounded`] while the proxy waits (for
//! the director, for the response headers), then the response body.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

use super::call_state::{AbortReason, CallState};

/// The timeout for a call whose client asked for `requested`, under a cap and a default.
pub(crate) fn effective_timeout(
    requested: Option<Duration>,
    max_timeout: Option<Duration>,
    default_timeout: Option<Duration>,
) -> Option<Duration> {
    let wanted = requested.or(default_timeout);
    match (wanted, max_timeout) {
        (Some(wanted), Some(cap)) => Some(wanted.min(cap)),
        (None, Some(cap)) => Some(cap),
        (wanted, None) => wanted,
    }
}

/// The late-status rule, for response headers and trailers alike: a non-OK `grpc-status`
/// that arrives at or after the call's deadline is the deadline's (`DEADLINE_EXCEEDED`).
/// The backend's own timer fired a hair before the proxy's (tonic servers report
/// `CANCELLED`); past the deadline the call's outcome is the deadline.
pub(super) fn is_late_error(deadline: Option<Instant>, headers: &http::HeaderMap) -> bool {
    deadline.is_some_and(|d| Instant::now() >= d) && crate::status::is_error_status(headers)
}

pin_project! {
    /// The call's deadline and its stream idle timer.
    #[derive(Debug)]
    pub(super) struct Timers {
        #[pin]
        deadline: Option<Sleep>,
        // The stream idle timeout and its timer, re-armed when it fires after activity.
        idle: Option<Duration>,
        #[pin]
        idle_timer: Option<Sleep>,
    }
}

impl Timers {
    /// Timers for `deadline` (if any) and for `call` going idle for `idle` (if set).
    pub(super) fn new(deadline: Option<Instant>, idle: Option<Duration>, call: &CallState) -> Self {
        Self {
            deadline: deadline.map(tokio::time::sleep_until),
            idle,
            idle_timer: idle.map(|timeout| tokio::time::sleep_until(call.idle_at(timeout))),
        }
    }

    /// The call's deadline.
    pub(super) fn deadline(&self) -> Option<Instant> {
        self.deadline.as_ref().map(Sleep::deadline)
    }

    /// Whether a stream idle timeout is set (then messages count as activity).
    pub(super) fn has_idle_timeout(&self) -> bool {
        self.idle.is_some()
    }

    /// Ready with the reason once the deadline has passed or `call` has carried nothing for
    /// the idle timeout.
    pub(super) fn poll_expired(
        self: Pin<&mut Self>,
        call: &CallState,
        cx: &mut Context<'_>,
    ) -> Poll<AbortReason> {
        let this = self.project();
        if let Some(deadline) = this.deadline.as_pin_mut() {
            if deadline.poll(cx).is_ready() {
                return Poll::Ready(AbortReason::Deadline);
            }
        }
        if let (Some(timeout), Some(mut timer)) = (*this.idle, this.idle_timer.as_pin_mut()) {
            // Re-armed only when it fires: activity costs a timestamp, not a timer reset.
            while timer.as_mut().poll(cx).is_ready() {
                let idle_at = call.idle_at(timeout);
                if Instant::now() >= idle_at {
                    return Poll::Ready(AbortReason::Idle);
                }
                timer.as_mut().reset(idle_at);
            }
        }
        Poll::Pending
    }
}

pin_project! {
    /// Runs `future` until the call's time is up: its deadline ([`AbortReason::Deadline`])
    /// or the idle timeout ([`AbortReason::Idle`]).
    ///
    /// One small struct instead of nested `async fn` wrappers: each of those would hold its
    /// future twice (as argument and as awaited value), and the call's future is moved
    /// (copied) whole on every call.
    pub(super) struct Bounded<'a, F> {
        #[pin]
        future: F,
        #[pin]
        timers: Timers,
        call: &'a CallState,
    }
}

impl<'a, F: Future> Bounded<'a, F> {
    /// `future`, until `deadline` (if any) and until `call` has been idle for `idle` (if
    /// set). Built in one go: the struct is large, so no builder copies it.
    pub(super) fn new(
        future: F,
        deadline: Option<Instant>,
        idle: Option<Duration>,
        call: &'a CallState,
    ) -> Self {
        Self {
            future,
            timers: Timers::new(deadline, idle, call),
            call,
        }
    }
}

impl<F: Future> Future for Bounded<'_, F> {
    type Output = Result<F::Output, AbortReason>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(output) = this.future.poll(cx) {
            return Poll::Ready(Ok(output));
        }
        this.timers.poll_expired(this.call, cx).map(Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_and_default_combine() {
        let s = Duration::from_secs;
        assert_eq!(effective_timeout(None, Some(s(10)), Some(s(5))), Some(s(5)));
        assert_eq!(
            effective_timeout(Some(s(60)), Some(s(10)), Some(s(5))),
            Some(s(10))
        );
        assert_eq!(
            effective_timeout(Some(s(1)), Some(s(10)), Some(s(5))),
            Some(s(1))
        );
        assert_eq!(effective_timeout(None, None, None), None);
    }
}
