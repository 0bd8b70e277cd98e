//! A future run until the call's deadline, or until the call has been idle too long.
//!
//! One small struct instead of nested `async fn` wrappers: each of those would hold its
//! future twice (as argument and as awaited value), and the call's future is moved (copied)
//! whole on every call.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

use crate::call_state::{AbortReason, CallState};

pin_project! {
    /// Runs `future` until the deadline ([`AbortReason::Deadline`]) or until the call has
    /// had no activity for the idle timeout ([`AbortReason::Idle`]).
    pub(super) struct Bounded<'a, F> {
        #[pin]
        future: F,
        #[pin]
        deadline: Option<Sleep>,
        #[pin]
        idle_timer: Option<Sleep>,
        idle: Option<(&'a CallState, Duration)>,
    }
}

impl<'a, F: Future> Bounded<'a, F> {
    /// `future` until `deadline` (if any), and until `call` has been idle for the timeout
    /// in `idle` (if any). Built in one go: the struct is large, so no builder copies it.
    pub(super) fn new(
        future: F,
        deadline: Option<Instant>,
        idle: Option<(&'a CallState, Duration)>,
    ) -> Self {
        Self {
            future,
            deadline: deadline.map(tokio::time::sleep_until),
            idle_timer: idle.map(|(call, timeout)| tokio::time::sleep_until(call.idle_at(timeout))),
            idle,
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
        if let Some(deadline) = this.deadline.as_pin_mut() {
            if deadline.poll(cx).is_ready() {
                return Poll::Ready(Err(AbortReason::Deadline));
            }
        }
        if let (Some((call, timeout)), Some(mut timer)) = (this.idle, this.idle_timer.as_pin_mut())
        {
            // Re-armed only when it fires: activity costs a timestamp, not a timer reset.
            while timer.as_mut().poll(cx).is_ready() {
                let idle_at = call.idle_at(*timeout);
                if Instant::now() >= idle_at {
                    return Poll::Ready(Err(AbortReason::Idle));
                }
                timer.as_mut().reset(idle_at);
            }
        }
        Poll::Pending
    }
}
