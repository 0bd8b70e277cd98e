//! Client connections' idle timeout, watched by one thread for the whole process instead of
//! a timer per connection. A timer registered on a worker's runtime, even one that fires
//! once an hour, makes each of that worker's waits read the clock and walk the timer wheel
//! (about 350 instructions a wait, and a worker waits twice per message of a streaming
//! call at one stream: BENCHMARKS.md).
//!
//! The thread looks at its connections every eighth of the shortest idle timeout among
//! them (5 ms at least, 1 s at most), so a connection is found idle between its timeout and
//! an eighth more (a second more at most). Without connections to watch it sleeps.

use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError, Weak};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::open_streams::StreamCount;

/// Completes once no stream of the connection has been open for `timeout` (never without
/// a timeout).
pub(super) async fn idle(streams: &Arc<StreamCount>, timeout: Option<Duration>) {
    let Some(timeout) = timeout else {
        return std::future::pending().await;
    };
    let Some(watcher) = Watcher::global() else {
        return idle_by_timer(streams, timeout).await;
    };
    let watched = Arc::new(Watched {
        streams: streams.clone(),
        timeout,
        idle: Notify::new(),
    });
    watcher.watch(&watched);
    loop {
        watched.idle.notified().await;
        // A stream may have opened since the thread looked.
        if watched.is_idle(Instant::now()) {
            return;
        }
    }
}

/// [`idle`] on a timer of the connection's own, when the thread could not start.
async fn idle_by_timer(streams: &StreamCount, timeout: Duration) {
    let sleep = tokio::time::sleep(timeout);
    tokio::pin!(sleep);
    loop {
        sleep.as_mut().await;
        let now = Instant::now();
        match streams.idle_at(timeout) {
            Some(idle_at) if now >= idle_at => return,
            Some(idle_at) => sleep.as_mut().reset(idle_at.into()),
            None => sleep.as_mut().reset((now + timeout).into()),
        }
    }
}

/// One watched connection: its streams, its timeout, and the task waiting for it to idle.
struct Watched {
    streams: Arc<StreamCount>,
    timeout: Duration,
    idle: Notify,
}

impl Watched {
    fn is_idle(&self, now: Instant) -> bool {
        self.streams
            .idle_at(self.timeout)
            .is_some_and(|idle_at| now >= idle_at)
    }
}

/// The connections the thread watches, and how often it looks at them.
#[derive(Default)]
struct Watching {
    connections: Vec<Weak<Watched>>,
    /// How long the thread waits between looks; `None` while it has nothing to watch.
    every: Option<Duration>,
}

/// The thread's side: what it watches, and a way to wake it when a connection needs
/// looking at sooner than it would.
#[derive(Default)]
struct Watcher {
    watching: Mutex<Watching>,
    sooner: Condvar,
}

/// How often to look at a connection idle after `timeout`.
fn look_every(timeout: Duration) -> Duration {
    (timeout / 8).clamp(Duration::from_millis(5), Duration::from_secs(1))
}

impl Watcher {
    /// The process's watcher, its thread started on first use; `None` if the thread could
    /// not start (then each connection uses a timer of its own).
    fn global() -> Option<&'static Watcher> {
        static WATCHER: OnceLock<Option<Arc<Watcher>>> = OnceLock::new();
        WATCHER
            .get_or_init(|| {
                let watcher = Arc::new(Watcher::default());
                let thread = watcher.clone();
                let started = std::thread::Builder::new()
                    .name("grpcproxy-idle".into())
                    .spawn(move || thread.run());
                match started {
                    Ok(_) => Some(watcher),
                    Err(e) => {
                        tracing::warn!(error = %e, "the idle-connection thread did not start; each connection uses a timer of its own");
                        None
                    }
                }
            })
            .as_deref()
    }

    fn lock(&self) -> MutexGuard<'_, Watching> {
        self.watching.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Watches `connection` until it is dropped.
    fn watch(&self, connection: &Arc<Watched>) {
        let every = look_every(connection.timeout);
        let mut watching = self.lock();
        watching.connections.push(Arc::downgrade(connection));
        if watching.every.is_none_or(|now| every < now) {
            watching.every = Some(every);
            self.sooner.notify_one();
        }
    }

    /// Tells each idle connection, forgets those dropped; then waits for the next look.
    fn run(&self) {
        let mut watching = self.lock();
        loop {
            let now = Instant::now();
            let mut every: Option<Duration> = None;
            watching.connections.retain(|connection| {
                let Some(connection) = connection.upgrade() else {
                    return false;
                };
                if connection.is_idle(now) {
                    connection.idle.notify_one();
                }
                let look = look_every(connection.timeout);
                every = Some(every.map_or(look, |every| every.min(look)));
                true
            });
            watching.every = every;
            watching = match every {
                None => self
                    .sooner
                    .wait(watching)
                    .unwrap_or_else(PoisonError::into_inner),
                Some(every) => {
                    self.sooner
                        .wait_timeout(watching, every)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::open_streams::OpenStream;

    #[test]
    fn looks_are_an_eighth_of_the_timeout_within_bounds() {
        assert_eq!(
            look_every(Duration::from_millis(800)),
            Duration::from_millis(100)
        );
        assert_eq!(
            look_every(Duration::from_millis(8)),
            Duration::from_millis(5)
        );
        assert_eq!(
            look_every(Duration::from_secs(3600)),
            Duration::from_secs(1)
        );
    }

    /// A connection with a stream open for 400 ms, then none: `idle` (the thread's or the
    /// timer's) must not complete while the stream is open, and must complete after the
    /// timeout once it ended (within a loaded machine's margin; looks every 12.5 ms).
    async fn idle_only_after_the_timeout_without_streams<F: std::future::Future<Output = ()>>(
        idle: impl FnOnce(Arc<StreamCount>, Duration) -> F,
    ) {
        let streams = Arc::new(StreamCount::new());
        let open = OpenStream::new(&streams);
        let timeout = Duration::from_millis(100);
        let idle = idle(streams.clone(), timeout);
        tokio::pin!(idle);
        let waited = tokio::time::timeout(Duration::from_millis(400), idle.as_mut()).await;
        assert!(waited.is_err(), "idle with a stream open");
        drop(open);
        let closed = Instant::now();
        tokio::time::timeout(Duration::from_secs(2), idle.as_mut())
            .await
            .expect("idle once the stream ended");
        let after = closed.elapsed();
        assert!(after >= timeout, "idle after {after:?}, before the timeout");
        assert!(
            after < timeout + Duration::from_millis(600),
            "idle {after:?} after the stream ended (timeout 100 ms)"
        );
    }

    #[tokio::test]
    async fn a_connection_is_idle_after_its_timeout_without_streams_and_never_with_one() {
        idle_only_after_the_timeout_without_streams(|streams, timeout| async move {
            idle(&streams, Some(timeout)).await
        })
        .await;
    }

    #[tokio::test]
    async fn without_the_thread_a_timer_of_its_own_does_the_same() {
        idle_only_after_the_timeout_without_streams(|streams, timeout| async move {
            idle_by_timer(&streams, timeout).await
        })
        .await;
    }
}
