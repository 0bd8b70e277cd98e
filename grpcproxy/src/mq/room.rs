//! Waking calls that wait for room in a full queue (the `wait` overflow policy).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::task::Waker;

/// The wakers of calls waiting for a queue to drain.
#[derive(Debug, Default)]
pub(crate) struct Room {
    waiting: AtomicBool,
    wakers: Mutex<Vec<Waker>>,
}

impl Room {
    /// Wakes `waker` at the next [`freed`](Self::freed).
    pub(crate) fn wait(&self, waker: &Waker) {
        let mut wakers = self.wakers.lock().expect("room lock poisoned");
        if !wakers.iter().any(|w| w.will_wake(waker)) {
            wakers.push(waker.clone());
        }
        self.waiting.store(true, Ordering::Release);
    }

    /// The queue took an event out: wakes every waiting call (cheap when none waits).
    pub(crate) fn freed(&self) {
        if self.waiting.swap(false, Ordering::AcqRel) {
            let wakers = std::mem::take(&mut *self.wakers.lock().expect("room lock poisoned"));
            wakers.into_iter().for_each(Waker::wake);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;
    use std::task::Wake;

    use super::*;

    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn waiters_are_woken_once_per_wait() {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let room = Room::default();
        room.freed();
        room.wait(&waker);
        room.wait(&waker);
        room.freed();
        room.freed();
        assert_eq!(count.0.load(Ordering::Relaxed), 1);
    }
}
