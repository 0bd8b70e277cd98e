//! Metadata edits: entries to set and keys to remove.

use http::header::{HeaderMap, HeaderName, HeaderValue};

/// Entries to remove and to set on a header map, applied in that order.
///
/// ```
/// use grpcproxy::HeaderEdits;
///
/// let edits = HeaderEdits::default()
///     .set("x-served-via".parse().unwrap(), "grpcproxy".parse().unwrap())
///     .remove("x-internal".parse().unwrap());
/// let mut headers = http::HeaderMap::new();
/// headers.insert("x-internal", "secret".parse().unwrap());
/// edits.apply(&mut headers);
/// assert_eq!(headers.len(), 1);
/// assert_eq!(headers["x-served-via"], "grpcproxy");
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderEdits {
    set: Vec<(HeaderName, HeaderValue)>,
    remove: Vec<HeaderName>,
}

impl HeaderEdits {
    /// Also sets `name` to `value` (replacing every existing value).
    pub fn set(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.set.push((name, value));
        self
    }

    /// Also removes every value of `name`.
    pub fn remove(mut self, name: HeaderName) -> Self {
        self.remove.push(name);
        self
    }

    /// True when there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.remove.is_empty()
    }

    /// Removes, then sets.
    pub fn apply(&self, headers: &mut HeaderMap) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, value) in &self.set {
            headers.insert(name.clone(), value.clone());
        }
    }
}
