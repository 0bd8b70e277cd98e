//! A call counted in flight on something (a connection) until the guard is dropped.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// One call counted on `count` until dropped (with the response body).
#[derive(Debug)]
pub(crate) struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    pub(crate) fn new(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Self(count.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
