//! A waker of their own for the futures a connection's task polls beside the connection
//! (a client connection's drain and its cut, idle and age timers; either side's
//! keepalive): the task polls them again only after one of them woke it, not on each of
//! the several wake-ups every call causes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Wake, Waker};

use atomic_waker::AtomicWaker;

/// Whether the side futures woke the task, and the task to wake.
#[derive(Debug)]
struct Flag {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

/// The side futures' waker, and whether they are to be polled: the task polls them with
/// the context [`SideEvents::woken`] gives, when it gives one.
#[derive(Debug)]
pub(crate) struct SideEvents {
    flag: Arc<Flag>,
    waker: Waker,
}

impl SideEvents {
    /// Side futures never polled yet: the first [`SideEvents::woken`] lets them register.
    pub(crate) fn new() -> Self {
        let flag = Arc::new(Flag {
            woken: AtomicBool::new(true),
            task: AtomicWaker::new(),
        });
        let waker = Waker::from(flag.clone());
        Self { flag, waker }
    }

    /// The context to poll the side futures with, when they woke the task since they were
    /// last polled (or are to be polled again); `None` otherwise. Their wake-ups wake the
    /// task of `cx`.
    pub(crate) fn woken(&self, cx: &Context<'_>) -> Option<Context<'_>> {
        // Registered before the flag is read: a wake-up after the read wakes this task.
        // Read before it is cleared: most of the task's polls find it clear, and a load
        // is no atomic read-modify-write.
        self.flag.task.register(cx.waker());
        let woken = &self.flag.woken;
        (woken.load(Ordering::Acquire) && woken.swap(false, Ordering::AcqRel))
            .then(|| Context::from_waker(&self.waker))
    }

    /// Has the side futures polled at the next [`SideEvents::woken`]: one of them was
    /// replaced, or one was ready and the others went unpolled.
    pub(crate) fn poll_again(&self) {
        self.flag.woken.store(true, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::pin;
    use std::task::Poll;
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_side_future_is_polled_again_only_after_it_woke_the_task() {
        let side = SideEvents::new();
        let mut timer = pin!(tokio::time::sleep(Duration::from_secs(1)));
        let task = Waker::noop();
        let cx = Context::from_waker(task);
        // First: polled, so the timer registers with the side waker.
        let mut own = side.woken(&cx).expect("polled the first time");
        assert!(timer.as_mut().poll(&mut own).is_pending());
        // Woken by something else: the timer is not polled.
        assert!(side.woken(&cx).is_none());
        tokio::time::advance(Duration::from_secs(2)).await;
        // The timer fired and woke the side waker: polled again, and ready.
        let mut own = side.woken(&cx).expect("the timer woke the task");
        assert_eq!(timer.as_mut().poll(&mut own), Poll::Ready(()));
        assert!(side.woken(&cx).is_none());
        side.poll_again();
        assert!(side.woken(&cx).is_some());
    }
}
