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

/// The call's deadline and its stream idle timer: made once per call and carried from
/// phase to phase (the director, the send, the response body), so a timer registered while
/// the proxy waits for the backend stays registered for the body. Each timer is boxed, and
/// only when set: a call without a deadline or idle timeout carries 32 bytes and no
/// allocation (the call's future and its response are moved whole, BENCHMARKS.md).
#[derive(Debug, Default)]
pub(super) struct Timers {
    deadline: Option<Pin<Box<Sleep>>>,
    // The stream idle timeout and its timer, re-armed when it fires after activity.
    idle: Option<Duration>,
    idle_timer: Option<Pin<Box<Sleep>>>,
}

impl Timers {
    /// The limits of the next phase: the deadline moves to `deadline` (a timer already
    /// registered for the same instant stays as it is), the idle timer starts or stops.
    pub(super) fn set(
        &mut self,
        deadline: Option<Instant>,
        idle: Option<Duration>,
        call: &CallState,
    ) {
        match (deadline, &mut self.deadline) {
            (Some(at), Some(sleep)) if sleep.deadline() != at => sleep.as_mut().reset(at),
            (Some(_), Some(_)) => {}
            (Some(at), slot @ None) => *slot = Some(Box::pin(tokio::time::sleep_until(at))),
            (None, slot) => *slot = None,
        }
        match (idle, self.idle) {
            (Some(timeout), Some(running)) if timeout == running => {}
            (Some(timeout), _) => {
                self.idle = Some(timeout);
                let at = call.idle_at(timeout);
                self.idle_timer = Some(Box::pin(tokio::time::sleep_until(at)));
            }
            (None, _) => {
                self.idle = None;
                self.idle_timer = None;
            }
        }
    }

    /// The call's deadline.
    pub(super) fn deadline(&self) -> Option<Instant> {
        self.deadline.as_ref().map(|sleep| sleep.deadline())
    }

    /// Whether a stream idle timeout is set (then messages count as activity).
    pub(super) fn has_idle_timeout(&self) -> bool {
        self.idle.is_some()
    }

    /// Ready with the reason once the deadline has passed or `call` has carried nothing for
    /// the idle timeout.
    pub(super) fn poll_expired(
        &mut self,
        call: &CallState,
        cx: &mut Context<'_>,
    ) -> Poll<AbortReason> {
        if let Some(deadline) = &mut self.deadline {
            if deadline.as_mut().poll(cx).is_ready() {
                return Poll::Ready(AbortReason::Deadline);
            }
        }
        if let (Some(timeout), Some(timer)) = (self.idle, &mut self.idle_timer) {
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
    /// or the idle timeout ([`AbortReason::Idle`]), on the call's [`Timers`].
    ///
    /// One small struct instead of nested `async fn` wrappers: each of those would hold its
    /// future twice (as argument and as awaited value), and the call's future is moved
    /// (copied) whole on every call.
    pub(super) struct Bounded<'a, F> {
        #[pin]
        future: F,
        timers: &'a mut Timers,
        call: &'a CallState,
    }
}

impl<'a, F: Future> Bounded<'a, F> {
    /// `future`, until `deadline` (if any) and until `call` has been idle for `idle` (if
    /// set), on the call's `timers` (moved to this phase's limits). Inlined: the struct
    /// holds the phase's future, built in place only when the call's future builds it.
    #[inline(always)]
    pub(super) fn new(
        future: F,
        timers: &'a mut Timers,
        deadline: Option<Instant>,
        idle: Option<Duration>,
        call: &'a CallState,
    ) -> Self {
        timers.set(deadline, idle, call);
        Self {
            future,
            timers,
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
