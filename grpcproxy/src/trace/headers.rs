//! W3C trace context in gRPC metadata: the propagator's view of a request's headers.

use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::propagation::{Extractor, Injector};

/// The trace headers a request carries, found in one pass over its header names (cheaper
/// than a lookup per name: most calls carry none, and each lookup hashes its name).
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Carried {
    pub(super) traceparent: bool,
    pub(super) tracestate: bool,
    pub(super) census: bool,
}

impl Carried {
    pub(super) fn in_headers(headers: &HeaderMap) -> Self {
        let mut carried = Self::default();
        for name in headers.keys() {
            match name.as_str() {
                "traceparent" => carried.traceparent = true,
                "tracestate" => carried.tracestate = true,
                super::census::KEY => carried.census = true,
                _ => {}
            }
        }
        carried
    }

    /// Removes the trace headers found, so that only the proxy's go on.
    pub(super) fn remove_from(self, headers: &mut HeaderMap) {
        if self.traceparent {
            headers.remove("traceparent");
        }
        if self.tracestate {
            headers.remove("tracestate");
        }
        if self.census {
            headers.remove(super::census::KEY);
        }
    }
}

/// Reads trace context from request headers.
pub(super) struct Extract<'a>(pub(super) &'a HeaderMap);

impl Extractor for Extract<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

/// Writes trace context into the headers sent to the backend.
pub(super) struct Inject<'a>(pub(super) &'a mut HeaderMap);

impl Injector for Inject<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(key), HeaderValue::try_from(value)) {
            self.0.insert(name, value);
        }
    }
}
