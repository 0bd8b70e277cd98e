//! Which calls a queue publishes: method filters and sampling, around any queue.

use super::{MessageQueue, TapEvent};

/// Publishes only the calls `inner` should see: methods matching one of `methods` (prefixes
/// of `/pkg.Service/Method`; empty: all), and of those, a `sample_rate` share (0.0–1.0).
/// Unwanted calls cost the proxy nothing: no message is even cut.
///
/// ```
/// use grpcproxy::mq::{Filtered, MemoryQueue, MessageQueue};
///
/// let (queue, _events) = MemoryQueue::new(100);
/// let tap = Filtered::new(queue, vec!["/shop.Orders/".into()], 1.0);
/// assert!(tap.wants("/shop.Orders/Get"));
/// assert!(!tap.wants("/shop.Users/Get"));
/// ```
#[derive(Debug, Clone)]
pub struct Filtered<Q> {
    inner: Q,
    methods: Vec<String>,
    sample_rate: f64,
}

impl<Q: MessageQueue> Filtered<Q> {
    /// Wraps `inner`.
    pub fn new(inner: Q, methods: Vec<String>, sample_rate: f64) -> Self {
        Self {
            inner,
            methods,
            sample_rate: sample_rate.clamp(0.0, 1.0),
        }
    }

    /// The wrapped queue.
    pub fn inner(&self) -> &Q {
        &self.inner
    }
}

impl<Q: MessageQueue> MessageQueue for Filtered<Q> {
    fn wants(&self, method: &str) -> bool {
        let listed = self.methods.is_empty()
            || self
                .methods
                .iter()
                .any(|prefix| method.starts_with(prefix.as_str()));
        listed
            && self.inner.wants(method)
            && (self.sample_rate >= 1.0
                || (self.sample_rate > 0.0 && fastrand::f64() < self.sample_rate))
    }

    fn max_payload(&self) -> usize {
        self.inner.max_payload()
    }

    fn publish(&self, event: TapEvent) {
        self.inner.publish(event);
    }

    fn max_wait(&self) -> Option<std::time::Duration> {
        self.inner.max_wait()
    }

    fn poll_room(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        self.inner.poll_room(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mq::MemoryQueue;

    #[test]
    fn sampling_keeps_about_the_given_share() {
        let (queue, _events) = MemoryQueue::new(1);
        let tap = Filtered::new(queue, vec![], 0.25);
        let kept = (0..10_000).filter(|_| tap.wants("/a.B/C")).count();
        assert!((2_000..3_000).contains(&kept), "{kept} of 10000 at 25%");
        let (queue, _events) = MemoryQueue::new(1);
        assert!(!Filtered::new(queue, vec![], 0.0).wants("/a.B/C"));
    }
}
