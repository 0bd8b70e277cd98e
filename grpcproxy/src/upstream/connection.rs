//! One HTTP/2 connection to a backend, driven by h2 directly: its handshake, the task that
//! runs it (with keepalive PINGs), and whether it still takes new calls.

use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::Poll;

use bytes::Bytes;
use h2::client::SendRequest;

use super::{UpstreamError, UpstreamErrorKind};
use crate::http2::{Io, SideEvents};
use crate::Http2Settings;

/// A handshaken connection: clones share it; calls open streams on it.
#[derive(Debug, Clone)]
pub(crate) struct Connection {
    sender: SendRequest<Bytes>,
    state: Arc<State>,
}

/// What the clones of one connection share.
#[derive(Debug)]
struct State {
    /// False once the connection task ended or the connection refused a new stream
    /// (GOAWAY, a connection error), or it was rotated: the pool then makes a new one.
    usable: AtomicBool,
    /// Streams the proxy reset before their answer that the backend may not have accepted
    /// yet: those opened after the last stream it answered.
    unconfirmed_resets: AtomicU32,
    /// The newest stream (by id) the proxy reset before its answer.
    last_reset: AtomicU32,
    /// Streams opened since the backend last answered one: any of them may still wait in
    /// its accept queue, and may be reset next.
    opened_unconfirmed: AtomicU32,
    /// The pool's rotations for unconfirmed resets.
    rotated: Arc<Rotations>,
}

/// A pool's connections rotated for unconfirmed resets: how many, and when the last was.
#[derive(Debug, Default)]
pub(crate) struct Rotations {
    pub(crate) count: AtomicU64,
    /// Milliseconds since [`EPOCH`] of the last rotation (0: none yet).
    last_ms: AtomicU64,
}

/// The clock of [`Rotations::last_ms`].
static EPOCH: std::sync::LazyLock<std::time::Instant> =
    std::sync::LazyLock::new(std::time::Instant::now);

/// How long after a rotation the pool's connections stay wary: a flood comes in bursts,
/// and a fresh connection's first burst of streams may all be reset before any answer.
const WARY_FOR_MS: u64 = 10_000;

impl Rotations {
    fn rotated(&self) {
        self.count.fetch_add(1, Ordering::Relaxed);
        let now = EPOCH.elapsed().as_millis() as u64;
        self.last_ms.store(now.max(1), Ordering::Relaxed);
    }

    /// Whether a rotation happened within [`WARY_FOR_MS`]. No clock is read before the
    /// pool's first rotation.
    fn wary(&self) -> bool {
        self.last_ms.load(Ordering::Relaxed) != 0
            && self.wary_at(EPOCH.elapsed().as_millis() as u64)
    }

    /// Whether the last rotation was within [`WARY_FOR_MS`] of `now` (ms since [`EPOCH`]).
    fn wary_at(&self, now: u64) -> bool {
        let last = self.last_ms.load(Ordering::Relaxed);
        last != 0 && now.saturating_sub(last) < WARY_FOR_MS
    }
}

/// Unconfirmed resets a connection carries before it is rotated. HTTP/2 servers limit the
/// resets of streams still in their accept queue per connection (hyper and tonic: 20) and
/// close the whole connection past the limit (GOAWAY ENHANCE_YOUR_CALM), failing every
/// call on it: rotating below that limit means a rapid-reset flood that slips past the
/// client side can never trip it.
const UNCONFIRMED_RESETS: u32 = 5;

/// Streams a connection that has had an unconfirmed reset may open before the backend
/// answers one: each could be reset too (a flood's calls are reset together), so past
/// this the connection is rotated before more than [`UNCONFIRMED_RESETS`] plus these can
/// ever wait reset in the backend's queue (below hyper's 20).
const OPENED_AFTER_A_RESET: u32 = 10;

impl State {
    /// Rotates the connection if its unconfirmed resets and opens say so.
    fn judge(&self, resets: u32, opened: u32) {
        let risky = resets >= UNCONFIRMED_RESETS || (resets > 0 && opened >= OPENED_AFTER_A_RESET);
        if risky && self.usable.swap(false, Ordering::Relaxed) {
            self.rotated.rotated();
        }
    }
}

impl Connection {
    /// Whether new calls may still use this connection.
    pub(crate) fn is_usable(&self) -> bool {
        self.state.usable.load(Ordering::Relaxed)
    }

    /// Stops handing this connection to new calls (it keeps serving the calls it has).
    pub(crate) fn retire(&self) {
        self.state.usable.store(false, Ordering::Relaxed);
    }

    /// A guard for the call whose response is `response`: dropped unanswered, it counts
    /// as an unconfirmed reset (see [`Unanswered`]).
    ///
    /// Takes the handle: its call has started, and the guard keeps what it needs (moved,
    /// not cloned).
    pub(crate) fn unanswered(self, response: &h2::client::ResponseFuture) -> Unanswered {
        let state = &self.state;
        let opened = state.opened_unconfirmed.fetch_add(1, Ordering::Relaxed) + 1;
        let resets = state.unconfirmed_resets.load(Ordering::Relaxed);
        if resets > 0 {
            state.judge(resets, opened);
        } else if opened >= OPENED_AFTER_A_RESET && state.rotated.wary() {
            // Shortly after a rotation in this pool (a flood under way), a connection takes
            // no more than this many unanswered streams even before its first reset: they
            // could all be reset together.
            if state.usable.swap(false, Ordering::Relaxed) {
                state.rotated.rotated();
            }
        }
        Unanswered {
            state: Some(self.state),
            id: response.stream_id().into(),
        }
    }

    /// The handle to open one stream with: this clone's own, taken from the pool for
    /// one call (a clone of h2's handle takes h2's lock, and so does its drop).
    pub(crate) fn sender(&mut self) -> &mut SendRequest<Bytes> {
        &mut self.sender
    }
}

/// Runs the HTTP/2 handshake over `io` and spawns the task that drives the connection,
/// counted in `open` until it ends; if it is rotated for unconfirmed resets, `rotated`
/// counts it.
pub(crate) async fn handshake(
    address: &Arc<str>,
    settings: &Http2Settings,
    io: Io,
    open: &Arc<AtomicUsize>,
    rotated: &Arc<Rotations>,
) -> Result<Connection, UpstreamError> {
    let (sender, mut connection) = settings
        .client_builder()
        .handshake::<Io, Bytes>(io)
        .await
        .map_err(|e| UpstreamError::new(address.clone(), UpstreamErrorKind::Handshake, e))?;
    let state = Arc::new(State {
        usable: AtomicBool::new(true),
        unconfirmed_resets: AtomicU32::new(0),
        last_reset: AtomicU32::new(0),
        opened_unconfirmed: AtomicU32::new(0),
        rotated: rotated.clone(),
    });
    let keepalive = settings.keep_alive_interval.and_then(|interval| {
        let pings = connection.ping_pong()?;
        Some(crate::http2::keepalive(
            pings,
            interval,
            settings.keep_alive_timeout,
        ))
    });
    let running = Running::new(open.clone(), state.clone());
    let address = address.clone();
    tokio::spawn(async move {
        let _running = running;
        let ended = match keepalive {
            None => connection.await,
            Some(keepalive) => {
                // The PING timer is polled only after it woke the task.
                let mut keepalive = pin!(keepalive);
                let side = SideEvents::new();
                let ended = poll_fn(|cx| {
                    if let Some(mut own) = side.woken(cx) {
                        if let Poll::Ready(silent) = keepalive.as_mut().poll(&mut own) {
                            return Poll::Ready(Err(silent));
                        }
                    }
                    Pin::new(&mut connection).poll(cx).map(Ok)
                })
                .await;
                match ended {
                    Ok(ended) => ended,
                    Err(silent) => {
                        // Dropping the connection fails its streams as a lost connection.
                        tracing::debug!(backend = %address, "backend did not answer a keepalive PING in {silent:?}; closing the connection");
                        return;
                    }
                }
            }
        };
        match ended {
            // The proxy's own h2 closed it: the backend broke a limit, and every call on
            // the connection failed with it. Rare, and worth an operator's look.
            Err(e) if e.is_go_away() && e.is_library() => {
                tracing::warn!(backend = %address, error = %e, "closed a backend connection that broke an HTTP/2 limit");
            }
            // The backend closed it for an error of the proxy's (a limit broken): every
            // call on it failed.
            Err(e)
                if e.is_go_away() && e.is_remote() && e.reason() != Some(h2::Reason::NO_ERROR) =>
            {
                tracing::warn!(backend = %address, error = %e, "the backend closed a connection with GOAWAY");
            }
            Err(e) => {
                tracing::debug!(backend = %address, error = %e, "backend connection closed with an error");
            }
            Ok(()) => {}
        }
    });
    Ok(Connection { sender, state })
}

/// A stream opened on a connection, until its answer (the response head, or the backend's
/// own error) comes. Dropped before, the proxy reset it (the client cancelled, a deadline
/// passed, a hedge won) while the backend may not have accepted it yet; the connection
/// counts it until the backend answers a stream opened after it (servers accept streams in
/// order, so that one's answer means this one was accepted). At [`UNCONFIRMED_RESETS`] the
/// connection is rotated: it serves its calls to the end and takes no new ones; the next
/// call gets a new connection. The backend's limit is then never reached however many
/// resets pass through, at the cost of one new backend connection per
/// [`UNCONFIRMED_RESETS`] of them at worst.
#[derive(Debug)]
pub(crate) struct Unanswered {
    state: Option<Arc<State>>,
    id: u32,
}

impl Unanswered {
    /// The backend answered the stream: every stream opened before it was accepted.
    pub(crate) fn answered(mut self) {
        if let Some(state) = self.state.take() {
            if self.id > state.last_reset.load(Ordering::Relaxed) {
                state.unconfirmed_resets.store(0, Ordering::Relaxed);
            }
            state.opened_unconfirmed.store(0, Ordering::Relaxed);
        }
    }

    /// The backend ended the stream itself (an error of its own): no reset of the proxy's.
    pub(crate) fn ended_by_backend(mut self) {
        self.state = None;
    }
}

impl Drop for Unanswered {
    fn drop(&mut self) {
        let Some(state) = self.state.take() else {
            return;
        };
        state.last_reset.fetch_max(self.id, Ordering::Relaxed);
        let resets = state.unconfirmed_resets.fetch_add(1, Ordering::Relaxed) + 1;
        state.judge(resets, state.opened_unconfirmed.load(Ordering::Relaxed));
    }
}

/// Counts one backend connection as open until its task ends, then marks it unusable.
struct Running {
    open: Arc<AtomicUsize>,
    state: Arc<State>,
}

impl Running {
    fn new(open: Arc<AtomicUsize>, state: Arc<State>) -> Self {
        open.fetch_add(1, Ordering::Relaxed);
        Self { open, state }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.state.usable.store(false, Ordering::Relaxed);
        self.open.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> Arc<State> {
        Arc::new(State {
            usable: AtomicBool::new(true),
            unconfirmed_resets: AtomicU32::new(0),
            last_reset: AtomicU32::new(0),
            opened_unconfirmed: AtomicU32::new(0),
            rotated: Arc::default(),
        })
    }

    fn stream(state: &Arc<State>, id: u32) -> Unanswered {
        Unanswered {
            state: Some(state.clone()),
            id,
        }
    }

    fn rotated(state: &State) -> bool {
        let rotated = state.rotated.count.load(Ordering::Relaxed);
        assert_eq!(rotated == 1, !state.usable.load(Ordering::Relaxed));
        rotated == 1
    }

    #[test]
    fn a_connection_is_rotated_at_its_unconfirmed_resets() {
        let state = state();
        (1..UNCONFIRMED_RESETS).for_each(|i| drop(stream(&state, 2 * i + 1)));
        assert!(!rotated(&state));
        drop(stream(&state, 101));
        assert!(rotated(&state));
        drop(stream(&state, 103));
        assert_eq!(
            state.rotated.count.load(Ordering::Relaxed),
            1,
            "rotated once"
        );
    }

    #[test]
    fn an_answer_to_a_later_stream_confirms_the_resets_before_it() {
        let state = state();
        (1..UNCONFIRMED_RESETS).for_each(|i| drop(stream(&state, 2 * i + 1)));
        // An answer to a stream opened before the last reset confirms nothing.
        stream(&state, 1).answered();
        drop(stream(&state, 51));
        assert!(rotated(&state));

        let state = self::state();
        (1..UNCONFIRMED_RESETS).for_each(|i| drop(stream(&state, 2 * i + 1)));
        stream(&state, 41).answered();
        (1..UNCONFIRMED_RESETS).for_each(|i| drop(stream(&state, 41 + 2 * i)));
        assert!(!rotated(&state));
    }

    #[test]
    fn one_reset_among_many_unanswered_streams_rotates() {
        let state = state();
        state
            .opened_unconfirmed
            .store(OPENED_AFTER_A_RESET - 1, Ordering::Relaxed);
        drop(stream(&state, 1));
        assert!(!rotated(&state), "a reset among 9 unanswered streams");
        state
            .opened_unconfirmed
            .store(OPENED_AFTER_A_RESET, Ordering::Relaxed);
        drop(stream(&state, 3));
        assert!(
            rotated(&state),
            "a reset among 10: any of them may be reset next"
        );
    }

    #[test]
    fn a_pool_that_just_rotated_is_wary_of_fresh_bursts() {
        let rotations = Rotations::default();
        assert!(!rotations.wary(), "never rotated: not wary");
        rotations.rotated();
        assert!(rotations.wary(), "just rotated");
        rotations.last_ms.store(5_000, Ordering::Relaxed);
        assert!(rotations.wary_at(5_000 + WARY_FOR_MS - 1));
        assert!(!rotations.wary_at(5_000 + WARY_FOR_MS));
    }

    #[test]
    fn streams_the_backend_ended_are_no_resets() {
        let state = state();
        (0..2 * UNCONFIRMED_RESETS).for_each(|i| stream(&state, 2 * i + 1).ended_by_backend());
        assert!(!rotated(&state));
    }
}
