//! Which worker thread the caller runs on, so that upstreams keep each worker's calls on
//! connections of its own.
//!
//! A proxy that runs one single-threaded runtime per core (each with its own listener
//! socket, `SO_REUSEPORT`) keeps a call on one thread only if the backend connection it
//! uses is driven on that thread too. A thread that calls [`enter`] gets its own group of
//! connections in every [`Upstream`](crate::Upstream); threads that never call it share
//! group 0, which is right for a multi-threaded runtime.
//!
//! ```
//! std::thread::spawn(|| {
//!     grpcproxy::worker::enter(1);
//!     assert_eq!(grpcproxy::worker::current(), Some(1));
//! })
//! .join()
//! .unwrap();
//! assert_eq!(grpcproxy::worker::current(), None);
//! ```

use std::cell::Cell;

thread_local! {
    static INDEX: Cell<Option<usize>> = const { Cell::new(None) };
}

/// Marks the calling thread as worker `index`: upstream connections it makes are its own.
pub fn enter(index: usize) {
    INDEX.set(Some(index));
}

/// The worker index of the calling thread, if it called [`enter`].
pub fn current() -> Option<usize> {
    INDEX.get()
}
