//! Counting a connection's open streams, for its idle timeout, and the streams its client
//! reset as soon as they opened (a rapid-reset flood): plain atomics, so a stream opening
//! or closing wakes nothing and touches no timer.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The open streams of one connection, and since when it has had none. Plain atomics: a
/// stream opening or closing wakes nothing and touches no timer.
#[derive(Debug)]
pub(super) struct StreamCount {
    open: AtomicUsize,
    started: std::time::Instant,
    /// When the last stream closed, in milliseconds since `started`.
    idle_since_ms: AtomicU64,
    /// Streams ended, and those the client reset within [`RAPID`] of opening, before the
    /// proxy answered. Ended, not accepted: under load a stream's reset is seen some time
    /// after the stream was accepted, and the flood's share must not be diluted by the
    /// streams it opened meanwhile (Envoy judges premature resets among closed streams
    /// too).
    ended: AtomicU32,
    rapid_resets: AtomicU32,
}

/// A reset this soon after its stream opened, before any answer, is a flood's, not a
/// user's change of mind (a person cancels after hundreds of milliseconds).
const RAPID: Duration = Duration::from_millis(50);

/// Rapid resets a connection may make before its share of them is judged.
const RAPID_RESETS_ALLOWED: u32 = 10;

impl StreamCount {
    pub(super) fn new() -> Self {
        Self {
            open: AtomicUsize::new(0),
            started: std::time::Instant::now(),
            idle_since_ms: AtomicU64::new(0),
            ended: AtomicU32::new(0),
            rapid_resets: AtomicU32::new(0),
        }
    }

    /// Whether the client resets its streams as soon as they open: more than
    /// [`RAPID_RESETS_ALLOWED`] such resets, and at least half of its streams that ended. Its calls may
    /// already have reached backends, whose own rapid-reset limits would then close the
    /// connections every client shares.
    pub(super) fn flooding(&self) -> bool {
        let rapid = self.rapid_resets.load(Ordering::Relaxed);
        rapid > RAPID_RESETS_ALLOWED && rapid * 2 >= self.ended.load(Ordering::Relaxed)
    }

    /// The client reset a stream before the proxy accepted it: a stream that ended reset
    /// as soon as it opened, though never open as a call.
    pub(super) fn reset_before_start(&self) {
        self.ended.fetch_add(1, Ordering::Relaxed);
        self.rapid_resets.fetch_add(1, Ordering::Relaxed);
    }

    /// When the connection becomes idle for `timeout`, if no stream opens before; `None`
    /// while a stream is open.
    pub(super) fn idle_at(&self, timeout: Duration) -> Option<std::time::Instant> {
        if self.open.load(Ordering::Acquire) > 0 {
            return None;
        }
        let since = Duration::from_millis(self.idle_since_ms.load(Ordering::Acquire));
        Some(self.started + since + timeout)
    }
}

/// One open stream of a connection, counted until dropped.
#[derive(Debug)]
pub(super) struct OpenStream(Arc<StreamCount>, std::time::Instant);

impl OpenStream {
    pub(super) fn new(streams: &Arc<StreamCount>) -> Self {
        streams.open.fetch_add(1, Ordering::AcqRel);
        Self(streams.clone(), std::time::Instant::now())
    }

    /// The client reset the stream before the proxy answered it.
    pub(super) fn reset_before_answer(&self) {
        if self.1.elapsed() < RAPID {
            self.0.rapid_resets.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        let streams = &self.0;
        streams.ended.fetch_add(1, Ordering::Relaxed);
        if streams.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            let ms = streams.started.elapsed().as_millis() as u64;
            streams.idle_since_ms.store(ms, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection whose `streams` streams ended, `reset_at_once` of them reset as soon
    /// as they opened and `before_start` more before the proxy took them: a flood?
    fn connection(streams: usize, reset_at_once: usize, before_start: usize) -> bool {
        let count = Arc::new(StreamCount::new());
        let open: Vec<OpenStream> = (0..streams).map(|_| OpenStream::new(&count)).collect();
        open.iter()
            .take(reset_at_once)
            .for_each(OpenStream::reset_before_answer);
        (0..before_start).for_each(|_| count.reset_before_start());
        drop(open);
        count.flooding()
    }

    #[test]
    fn a_flood_is_many_rapid_resets_and_most_of_the_ended_streams() {
        assert!(connection(20, 11, 0), "11 rapid resets of 20 streams");
        assert!(!connection(20, 10, 0), "up to 10 are allowed");
        assert!(!connection(30, 11, 0), "11 of 30 streams is a minority");
        assert!(
            connection(0, 0, 11),
            "11 streams reset before they were taken"
        );
        assert!(connection(10, 5, 6), "11 of 16");
    }

    #[test]
    fn streams_still_open_do_not_dilute_a_flood() {
        let count = Arc::new(StreamCount::new());
        let _open: Vec<OpenStream> = (0..100).map(|_| OpenStream::new(&count)).collect();
        let reset: Vec<OpenStream> = (0..11).map(|_| OpenStream::new(&count)).collect();
        reset.iter().for_each(OpenStream::reset_before_answer);
        drop(reset);
        assert!(count.flooding(), "11 of the 11 streams that ended");
    }
}
