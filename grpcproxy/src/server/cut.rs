//! The drain timeout's cut, carried from a client connection to its calls: the connection
//! watches the server's cut once, and its calls watch the connection, each with a waiter
//! on one `Notify` (a clone of the server's `CancellationToken` per call would take its
//! lock twice more).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tokio::sync::futures::OwnedNotified;
use tokio::sync::Notify;

pin_project! {
    /// Completes when the server gives up waiting for the connection's open calls: the
    /// call then ends with UNAVAILABLE.
    #[project = CutProj]
    pub(super) enum Cut {
        /// Waiting for the connection's cut.
        Watching { #[pin] notified: OwnedNotified },
        /// The connection was cut before the call started.
        Now,
    }
}

impl Future for Cut {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        match self.project() {
            CutProj::Watching { notified } => notified.poll(cx),
            CutProj::Now => Poll::Ready(()),
        }
    }
}

/// A connection's side of the cut: what its calls watch, and the cut itself.
#[derive(Debug, Default)]
pub(super) struct Cutter {
    notify: Arc<Notify>,
    cut: bool,
}

impl Cutter {
    /// What a call starting now watches.
    pub(super) fn watch(&self) -> Cut {
        if self.cut {
            Cut::Now
        } else {
            // Completes on a `notify_waiters` made after this, polled or not yet.
            Cut::Watching {
                notified: self.notify.clone().notified_owned(),
            }
        }
    }

    /// Whether the calls are cut.
    pub(super) fn is_cut(&self) -> bool {
        self.cut
    }

    /// Cuts every call watching, and every call that starts from now on.
    pub(super) fn cut(&mut self) {
        self.cut = true;
        self.notify.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use std::pin::pin;
    use std::task::Waker;

    use super::*;

    #[test]
    fn calls_watching_before_the_cut_and_after_it_are_cut() {
        let mut cx = Context::from_waker(Waker::noop());
        let mut cutter = Cutter::default();
        let mut polled = pin!(cutter.watch());
        let mut unpolled = pin!(cutter.watch());
        assert!(polled.as_mut().poll(&mut cx).is_pending());
        cutter.cut();
        assert!(polled.as_mut().poll(&mut cx).is_ready());
        assert!(unpolled.as_mut().poll(&mut cx).is_ready());
        let mut later = pin!(cutter.watch());
        assert!(later.as_mut().poll(&mut cx).is_ready());
    }

    #[test]
    fn no_call_is_cut_before_the_cut() {
        let mut cx = Context::from_waker(Waker::noop());
        let cutter = Cutter::default();
        let mut call = pin!(cutter.watch());
        assert!(call.as_mut().poll(&mut cx).is_pending());
        assert!(call.as_mut().poll(&mut cx).is_pending());
    }
}
