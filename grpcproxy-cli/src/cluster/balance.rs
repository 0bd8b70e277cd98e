//! The balancers: which usable endpoint takes a call, and which one is its alternate.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::endpoint::Endpoint;
use crate::config::Balance;

/// The endpoint for one call among the `available` usable ones of `endpoints`, and an
/// alternate for when it cannot be reached: the next in turn (round robin, `next` counts
/// the turns), or the less loaded of two picked at random and the other (P2C).
pub(super) fn choose<'a>(
    endpoints: &'a [Arc<Endpoint>],
    usable: impl Fn(&Endpoint) -> bool,
    available: usize,
    balance: Balance,
    next: &AtomicUsize,
) -> Option<(&'a Arc<Endpoint>, Option<&'a Arc<Endpoint>>)> {
    // The k-th usable endpoint, counting from `start`.
    let nth = |start: usize, k: usize| {
        (0..endpoints.len())
            .map(|i| &endpoints[(start + i) % endpoints.len()])
            .filter(|e| usable(e))
            .nth(k)
    };
    Some(match (available, balance) {
        (0, _) => return None,
        (1, _) => (nth(0, 0)?, None),
        (_, Balance::RoundRobin) => {
            let start = next.fetch_add(1, Ordering::Relaxed);
            (nth(start, 0)?, nth(start, 1))
        }
        (n, Balance::P2c) => {
            let a = fastrand::usize(..n);
            let b = (a + 1 + fastrand::usize(..n - 1)) % n;
            let (a, b) = (nth(0, a)?, nth(0, b)?);
            let load = |e: &Endpoint| e.in_flight.load(Ordering::Relaxed);
            if load(b) < load(a) {
                (b, Some(a))
            } else {
                (a, Some(b))
            }
        }
    })
}
