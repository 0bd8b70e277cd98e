//! Outlier ejection: an endpoint that fails calls in a row is left out for a while, twice
//! as long each time it does it again, and never when it is the last one available.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::endpoint::Endpoint;
use super::set::EndpointSet;
use crate::config::Outlier;

/// A call on `endpoint` went well; `now` tells the time (ms since the cluster's epoch),
/// asked only when the endpoint was ejected lately.
pub(super) fn served(endpoint: &Endpoint, now: impl FnOnce() -> u64) {
    // Loads first: most calls succeed, and a store on every call would bounce the
    // endpoint's cache line between worker threads.
    if endpoint.consecutive_failures.load(Ordering::Relaxed) != 0 {
        endpoint.consecutive_failures.store(0, Ordering::Relaxed);
    }
    if endpoint.recent_ejections.load(Ordering::Relaxed) != 0
        && endpoint.ejected_until.load(Ordering::Relaxed) <= now()
    {
        endpoint.recent_ejections.store(0, Ordering::Relaxed);
    }
}

/// A call on `endpoint` (one of `set`, in cluster `cluster`) failed at `now`: after
/// `outlier.consecutive_failures` in a row, it is ejected.
pub(super) fn failed(
    cluster: &str,
    outlier: &Outlier,
    set: &EndpointSet,
    endpoint: &Endpoint,
    now: u64,
) {
    let threshold = outlier.consecutive_failures;
    if threshold == 0
        || endpoint
            .consecutive_failures
            .fetch_add(1, Ordering::Relaxed)
            + 1
            < threshold
    {
        return;
    }
    if endpoint.ejected_until.load(Ordering::Relaxed) > now {
        return; // already ejected: calls in flight when it was ejected are still ending
    }
    // Never the last one: with no endpoint left the cluster would refuse every call for
    // the whole ejection, even once the backend is back; failing calls say more.
    if !set
        .list
        .iter()
        .any(|e| !std::ptr::eq(Arc::as_ptr(e), endpoint) && e.available(now))
    {
        if endpoint.consecutive_failures.swap(0, Ordering::Relaxed) != 0 {
            tracing::debug!(
                cluster,
                endpoint = endpoint.upstream.address(),
                "not ejecting the last available endpoint"
            );
        }
        return;
    }
    endpoint.consecutive_failures.store(0, Ordering::Relaxed);
    let doublings = endpoint
        .recent_ejections
        .fetch_add(1, Ordering::Relaxed)
        .min(16);
    let duration = (outlier.base_ejection * 2u32.pow(doublings)).min(outlier.max_ejection);
    endpoint
        .ejected_until
        .store(now + duration.as_millis() as u64, Ordering::Relaxed);
    endpoint.ejections.fetch_add(1, Ordering::Relaxed);
    tracing::warn!(
        cluster,
        endpoint = endpoint.upstream.address(),
        ?duration,
        "endpoint ejected after consecutive failures"
    );
}
