//! What a gRPC-Web front door saw: its requests by kind and outcome, as plain counters.

use std::sync::atomic::{AtomicU64, Ordering};

/// A request's kind, as [`WebStats`] counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum WebRequest {
    /// A binary gRPC-Web call (`application/grpc-web`).
    Binary,
    /// A text gRPC-Web call (`application/grpc-web-text`, base64).
    Text,
    /// A CORS preflight (`OPTIONS`).
    Preflight,
    /// An HTTP/1.1 request that is neither: answered with a 4xx.
    Other,
}

/// What became of a request, as [`WebStats`] counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum WebOutcome {
    /// Forwarded (a call) or answered yes (a preflight).
    Allowed,
    /// Its origin may not call (403).
    RefusedOrigin,
    /// A text body that is not base64 (400, `INTERNAL`).
    InvalidBase64,
    /// A text body over the limit (`RESOURCE_EXHAUSTED`).
    TooLarge,
    /// Not gRPC-Web over HTTP/1.1 (405 or 415).
    Rejected,
}

impl WebRequest {
    /// Its name in metrics: `binary`, `text`, `preflight`, `other`.
    pub fn as_str(self) -> &'static str {
        match self {
            WebRequest::Binary => "binary",
            WebRequest::Text => "text",
            WebRequest::Preflight => "preflight",
            WebRequest::Other => "other",
        }
    }
}

impl WebOutcome {
    /// Its name in metrics: `allowed`, `refused_origin`, `invalid_base64`, `too_large`,
    /// `rejected`.
    pub fn as_str(self) -> &'static str {
        match self {
            WebOutcome::Allowed => "allowed",
            WebOutcome::RefusedOrigin => "refused_origin",
            WebOutcome::InvalidBase64 => "invalid_base64",
            WebOutcome::TooLarge => "too_large",
            WebOutcome::Rejected => "rejected",
        }
    }
}

/// Every (kind, outcome) pair that can happen, in the order [`WebStats::all`] gives them.
const PAIRS: [(WebRequest, WebOutcome); 9] = [
    (WebRequest::Binary, WebOutcome::Allowed),
    (WebRequest::Binary, WebOutcome::RefusedOrigin),
    (WebRequest::Text, WebOutcome::Allowed),
    (WebRequest::Text, WebOutcome::RefusedOrigin),
    (WebRequest::Text, WebOutcome::InvalidBase64),
    (WebRequest::Text, WebOutcome::TooLarge),
    (WebRequest::Preflight, WebOutcome::Allowed),
    (WebRequest::Preflight, WebOutcome::RefusedOrigin),
    (WebRequest::Other, WebOutcome::Rejected),
];

/// Requests a [`GrpcWeb`](super::GrpcWeb) service answered, by kind and outcome: share
/// one between listeners with [`WebOptions::stats`](super::WebOptions::stats).
///
/// ```
/// use grpcproxy::web::{WebOutcome, WebRequest, WebStats};
///
/// let stats = WebStats::default();
/// assert_eq!(stats.get(WebRequest::Preflight, WebOutcome::Allowed), 0);
/// assert_eq!(stats.all().count(), 9);
/// ```
#[derive(Debug, Default)]
pub struct WebStats {
    counts: [AtomicU64; PAIRS.len()],
}

impl WebStats {
    /// How many requests of `kind` ended with `outcome` (0 for a pair that cannot happen).
    pub fn get(&self, kind: WebRequest, outcome: WebOutcome) -> u64 {
        PAIRS
            .iter()
            .position(|pair| *pair == (kind, outcome))
            .map_or(0, |i| self.counts[i].load(Ordering::Relaxed))
    }

    /// Every pair that can happen, with its count.
    pub fn all(&self) -> impl Iterator<Item = (WebRequest, WebOutcome, u64)> + '_ {
        PAIRS
            .iter()
            .zip(&self.counts)
            .map(|(&(kind, outcome), count)| (kind, outcome, count.load(Ordering::Relaxed)))
    }

    pub(super) fn count(&self, kind: WebRequest, outcome: WebOutcome) {
        if let Some(i) = PAIRS.iter().position(|pair| *pair == (kind, outcome)) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
    }
}
