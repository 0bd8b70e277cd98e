//! A cap on the calls one client address may have in flight at once.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use dashmap::DashMap;
use tonic::Status;

/// At most `max` calls in flight per client IP address; a call over it gets
/// `RESOURCE_EXHAUSTED` and nothing reaches a backend. A client that opens calls it never
/// reads (a zero flow-control window) can then hold only `max` backend calls.
///
/// ```
/// use std::net::IpAddr;
/// use grpcproxy::policy::PeerLimit;
///
/// let limit = PeerLimit::new(1);
/// let peer: IpAddr = "10.0.0.1".parse().unwrap();
/// let first = limit.acquire(Some(peer)).unwrap();
/// assert!(limit.acquire(Some(peer)).is_err());
/// drop(first);
/// assert!(limit.acquire(Some(peer)).is_ok());
/// ```
#[derive(Debug)]
pub struct PeerLimit {
    max: usize,
    in_flight: Arc<DashMap<IpAddr, usize>>,
    refused: AtomicU64,
}

/// One call counted on its client's address until dropped (with the call).
#[derive(Debug)]
pub struct PeerGuard {
    peer: IpAddr,
    in_flight: Arc<DashMap<IpAddr, usize>>,
}

impl Drop for PeerGuard {
    fn drop(&mut self) {
        // The entry goes with its last call: the table holds only addresses with calls.
        self.in_flight.remove_if_mut(&self.peer, |_, count| {
            *count -= 1;
            *count == 0
        });
    }
}

impl PeerLimit {
    /// At most `max` calls in flight per client address.
    pub fn new(max: usize) -> Self {
        Self {
            max,
            in_flight: Arc::default(),
            refused: AtomicU64::new(0),
        }
    }

    /// Counts a call of `peer` (none when the address is unknown: not limited), or returns
    /// the status it gets instead.
    pub fn acquire(&self, peer: Option<IpAddr>) -> Result<Option<PeerGuard>, Status> {
        let Some(peer) = peer else {
            return Ok(None);
        };
        let mut count = self.in_flight.entry(peer).or_insert(0);
        if *count >= self.max {
            drop(count);
            self.refused.fetch_add(1, Ordering::Relaxed);
            return Err(Status::resource_exhausted(format!(
                "the proxy allows {} calls in flight per client address",
                self.max
            )));
        }
        *count += 1;
        Ok(Some(PeerGuard {
            peer,
            in_flight: self.in_flight.clone(),
        }))
    }

    /// Calls refused so far.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}
