//! Rate limits on calls (GCRA, with the `governor` crate), per route, per client address or
//! per value of a request header.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use http::header::{HeaderName, HeaderValue};
use tonic::metadata::MetadataMap;
use tonic::Status;

use crate::CallInfo;

/// What a [`RateLimit`] counts calls by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RateKey {
    /// All calls together.
    Route,
    /// The client's IP address.
    Peer,
    /// The value of this request header (calls without it share one limit).
    Header(HeaderName),
}

/// The key of one call.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    All,
    Peer(Option<IpAddr>),
    Header(Option<HeaderValue>),
}

/// Keys kept before forgotten ones are swept out (an attacker choosing header values
/// must not grow the table without bound).
const SWEEP_ABOVE: usize = 10_000;

/// Admits at most `per_second` calls a second per key, with bursts of `burst`; a call over
/// the limit gets `RESOURCE_EXHAUSTED` with `grpc-retry-pushback-ms` (when the next call
/// would be admitted), and nothing reaches a backend.
///
/// ```
/// use std::num::NonZeroU32;
/// use grpcproxy::policy::{RateKey, RateLimit};
///
/// let limit = RateLimit::new(NonZeroU32::new(100).unwrap(), NonZeroU32::new(20).unwrap(), RateKey::Peer);
/// assert_eq!(limit.limited(), 0);
/// ```
#[derive(Debug)]
pub struct RateLimit {
    limiter: DefaultKeyedRateLimiter<Key>,
    clock: DefaultClock,
    key: RateKey,
    limited: AtomicU64,
}

impl RateLimit {
    /// `per_second` calls a second per key, in bursts of up to `burst`.
    pub fn new(per_second: NonZeroU32, burst: NonZeroU32, key: RateKey) -> Self {
        let quota = Quota::per_second(per_second).allow_burst(burst);
        Self {
            limiter: DefaultKeyedRateLimiter::keyed(quota),
            clock: DefaultClock::default(),
            key,
            limited: AtomicU64::new(0),
        }
    }

    /// Admits `call`, or returns the status it gets instead.
    pub fn check(&self, call: &CallInfo) -> Result<(), Status> {
        let key = match &self.key {
            RateKey::Route => Key::All,
            RateKey::Peer => Key::Peer(call.remote_addr().map(|a| a.ip())),
            RateKey::Header(name) => Key::Header(call.metadata().as_ref().get(name).cloned()),
        };
        let Err(not_until) = self.limiter.check_key(&key) else {
            return Ok(());
        };
        if self.limiter.len() > SWEEP_ABOVE {
            self.limiter.retain_recent();
        }
        self.limited.fetch_add(1, Ordering::Relaxed);
        let wait = not_until.wait_time_from(self.clock.now());
        let mut metadata = MetadataMap::new();
        let ms = wait.as_millis().max(1).to_string();
        if let Ok(value) = ms.parse() {
            metadata.insert("grpc-retry-pushback-ms", value);
        }
        Err(Status::with_metadata(
            tonic::Code::ResourceExhausted,
            "rate limit of the proxy exceeded",
            metadata,
        ))
    }

    /// Calls refused so far.
    pub fn limited(&self) -> u64 {
        self.limited.load(Ordering::Relaxed)
    }
}
