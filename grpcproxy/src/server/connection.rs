//! One client connection: its handshake (TLS, HTTP/2), the task that drives it, and when
//! it closes (drain, idle timeout, keepalive, the client's end).

use std::future::{poll_fn, Future};
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use h2::server::SendResponse;
use h2::RecvStream;
use http::Request;
use tokio::net::TcpStream;

use super::cut::{Cut, Cutter};
use super::idle_watch::idle;
use super::open_streams::{OpenStream, StreamCount};
use super::stream::StreamTask;
use super::{answer_http1, starts_with_preface, CallService};
use crate::http2::{Io, SideEvents};
use crate::{ConnectionInfo, RecvBody};

/// One accepted client connection, about to be served.
pub(super) struct Connection<S> {
    pub(super) h2: h2::server::Builder,
    pub(super) service: S,
    pub(super) info: ConnectionInfo,
    /// Becomes true when the server drains.
    pub(super) drain_signal: tokio::sync::watch::Receiver<bool>,
    /// Cancelled when the drain times out: open calls end with UNAVAILABLE.
    pub(super) cut: tokio_util::sync::CancellationToken,
    pub(super) handshake_timeout: Duration,
    pub(super) idle_timeout: Option<Duration>,
    /// When the connection is closed for its age (jitter applied), and the grace its calls
    /// get then.
    pub(super) age: Option<(Duration, Option<Duration>)>,
    /// Where connections closed for their age are counted.
    pub(super) aged: Arc<super::ServerStats>,
    /// PING interval and how long an answer may take.
    pub(super) keepalive: Option<(Duration, Duration)>,
    /// Serve HTTP/1.1 clients too (gRPC-Web); otherwise they get a 505.
    pub(super) http1: bool,
}

/// What wakes a connection's task.
// Returned once per wake-up, never stored: boxing a new call's parts would allocate for
// every call.
#[allow(clippy::large_enum_variant)]
enum Event {
    /// A new call.
    Stream(Request<RecvStream>, SendResponse<Bytes>),
    /// The connection is over (the client closed it, or it failed).
    Ended(Option<h2::Error>),
    /// The server drains.
    Drain,
    /// No stream for the idle timeout.
    Idle,
    /// The connection reached its maximum age.
    Aged,
    /// The grace after its GOAWAY is over.
    GraceOver,
    /// A keepalive PING went unanswered for this long.
    Silent(Duration),
    /// The server's drain timed out: open calls end with UNAVAILABLE.
    Cut,
}

impl<S: CallService> Connection<S> {
    pub(super) async fn serve_cleartext(self, stream: TcpStream) {
        match tokio::time::timeout(self.handshake_timeout, starts_with_preface(&stream)).await {
            Ok(Ok(true)) => self.serve(Io::Tcp(stream)).await,
            Ok(Ok(false)) if self.http1 => self.serve_http1(stream).await,
            Ok(Ok(false)) => answer_http1(stream).await,
            Ok(Err(_)) | Err(_) => {}
        }
    }

    pub(super) async fn serve_tls(
        mut self,
        acceptor: tokio_rustls::TlsAcceptor,
        stream: TcpStream,
    ) {
        let accept = acceptor.accept(stream);
        let Some(tls) =
            handshake(self.handshake_timeout, self.info.remote_addr, "TLS", accept).await
        else {
            return;
        };
        if let Some(chain) = tls.get_ref().1.peer_certificates() {
            self.info.peer_certificates = Some(Arc::new(chain.to_vec()));
        }
        // ALPN `http/1.1` (offered only with `http1`), or none from a client that cannot
        // say: HTTP/1.1 when it is served. gRPC clients always ask for `h2`.
        let alpn = tls.get_ref().1.alpn_protocol();
        if self.http1 && alpn != Some(b"h2".as_slice()) {
            self.serve_http1(tls).await;
        } else {
            self.serve(Io::ServerTls(Box::new(tls))).await;
        }
    }

    /// Drives the connection until it ends: accepts its calls, each served by a task of its
    /// own, and closes it gracefully (GOAWAY, then in-flight calls finish) on drain or idle
    /// timeout, or at once when keepalive finds the client gone.
    async fn serve(mut self, io: Io) {
        let peer = self.info.remote_addr;
        let h2 = self.h2.handshake::<Io, Bytes>(io);
        let Some(mut connection) = handshake(self.handshake_timeout, peer, "HTTP/2", h2).await
        else {
            return;
        };
        let streams = Arc::new(StreamCount::new());
        let keepalive = self.keepalive.and_then(|(interval, timeout)| {
            let pings = connection.ping_pong()?;
            Some(crate::http2::keepalive(pings, interval, timeout))
        });
        let mut keepalive = pin!(keepalive);
        let mut idle = pin!(idle(&streams, self.idle_timeout));
        let mut drain = pin!(self.drain_signal.wait_for(|drain| *drain));
        // The age timer, then (re-armed) the grace timer; never without an age.
        let (age, grace) = self
            .age
            .map_or((None, None), |(age, grace)| (Some(age), grace));
        let mut age_timer = pin!(age.map(tokio::time::sleep));
        let mut aged = false;
        let mut closing = false;
        // The server's cut, watched once here; the calls watch `cutter`.
        let mut server_cut = pin!(self.cut.cancelled());
        let mut cutter = Cutter::default();
        // Drain, idle, age, keepalive and the cut are polled only after one of them woke
        // the task.
        let side = SideEvents::new();
        loop {
            let event = poll_fn(|cx| {
                if let Some(mut own) = side.woken(cx) {
                    let cx = &mut own;
                    let event = if !closing && drain.as_mut().poll(cx).is_ready() {
                        Some(Event::Drain)
                    } else if !closing && idle.as_mut().poll(cx).is_ready() {
                        Some(Event::Idle)
                    } else if let Some(Poll::Ready(())) =
                        age_timer.as_mut().as_pin_mut().map(|timer| timer.poll(cx))
                    {
                        Some(if aged { Event::GraceOver } else { Event::Aged })
                    } else if let Some(Poll::Ready(after)) = keepalive
                        .as_mut()
                        .as_pin_mut()
                        .map(|keepalive| keepalive.poll(cx))
                    {
                        Some(Event::Silent(after))
                    } else if !cutter.is_cut() && server_cut.as_mut().poll(cx).is_ready() {
                        Some(Event::Cut)
                    } else {
                        None
                    };
                    if let Some(event) = event {
                        // All polled next time: the others may have woken the task too,
                        // and a timer replaced after this event must register.
                        side.poll_again();
                        return Poll::Ready(event);
                    }
                }
                connection.poll_accept(cx).map(|next| match next {
                    Some(Ok((request, reply))) => Event::Stream(request, reply),
                    Some(Err(e)) => Event::Ended(Some(e)),
                    None => Event::Ended(None),
                })
            })
            .await;
            match event {
                Event::Stream(_, mut reply) if streams.flooding() => {
                    // A rapid-reset flood: its calls would reach backends as HEADERS and
                    // RST_STREAM and trip their limits on connections every client shares.
                    reply.send_reset(h2::Reason::REFUSED_STREAM);
                    if !closing {
                        tracing::debug!(peer = ?peer, "client resets its streams as soon as they open; closing the connection (ENHANCE_YOUR_CALM)");
                        closing = true;
                        connection.abrupt_shutdown(h2::Reason::ENHANCE_YOUR_CALM);
                    }
                }
                Event::Stream(request, mut reply) => {
                    // Reset before the proxy took it (the flood's HEADERS and RST_STREAM
                    // came in one read): it never becomes a call, and it counts at once
                    // toward the rule above, before its siblings' calls reach a backend.
                    let mut cx = Context::from_waker(Waker::noop());
                    if reply.poll_reset(&mut cx).is_ready() {
                        streams.reset_before_start();
                        continue;
                    }
                    let (parts, recv) = request.into_parts();
                    let mut request = Request::from_parts(parts, RecvBody::new(recv));
                    request.extensions_mut().insert(self.info.clone());
                    let open = OpenStream::new(&streams);
                    start_call(self.service.clone(), request, reply, open, cutter.watch());
                }
                // Marked cut: the token, ready from now on, is not polled again.
                Event::Cut => cutter.cut(),
                Event::Drain => {
                    closing = true;
                    connection.graceful_shutdown();
                }
                Event::Idle => {
                    tracing::debug!(peer = ?peer, "closing an idle client connection");
                    closing = true;
                    connection.graceful_shutdown();
                }
                Event::Aged => {
                    tracing::debug!(peer = ?peer, "closing a client connection at its maximum age");
                    self.aged.aged();
                    aged = true;
                    if !closing {
                        closing = true;
                        connection.graceful_shutdown();
                    }
                    match grace {
                        Some(grace) => age_timer.set(Some(tokio::time::sleep(grace))),
                        None => age_timer.set(None),
                    }
                }
                Event::GraceOver => {
                    // Dropping the connection fails its streams: their calls end as
                    // cancelled, their backend streams are reset.
                    tracing::debug!(peer = ?peer, "maximum connection age grace over; closing the connection");
                    return;
                }
                Event::Silent(after) => {
                    // Dropping the connection fails its streams: their calls end as
                    // cancelled, never as complete.
                    tracing::debug!(peer = ?peer, "client did not answer a keepalive PING in {after:?}; closing the connection");
                    return;
                }
                Event::Ended(Some(e)) => {
                    tracing::debug!(peer = ?peer, error = %e, "client connection ended with an error");
                    return;
                }
                Event::Ended(None) => return,
            }
        }
    }
}

/// What `handshake` (`what`: TLS, HTTP/2) gives, if it succeeds within `timeout`;
/// otherwise `None`, and a debug line saying why.
async fn handshake<T, E: std::fmt::Display>(
    timeout: Duration,
    peer: Option<std::net::SocketAddr>,
    what: &str,
    handshake: impl Future<Output = Result<T, E>>,
) -> Option<T> {
    match tokio::time::timeout(timeout, handshake).await {
        Ok(Ok(done)) => Some(done),
        Ok(Err(e)) => {
            tracing::debug!(peer = ?peer, error = %e, "{what} handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(peer = ?peer, "{what} handshake timed out");
            None
        }
    }
}

/// Calls `service` with `request` and spawns the task that answers on `reply`. A service
/// that is ready (the proxy always is) is called here, so the task never holds the request.
fn start_call<S: CallService>(
    mut service: S,
    request: Request<RecvBody>,
    reply: SendResponse<Bytes>,
    open: OpenStream,
    cut: Cut,
) {
    match service.poll_ready(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(Ok(())) => {
            tokio::spawn(StreamTask::new(service.call(request), reply, open, cut));
        }
        Poll::Ready(Err(never)) => match never {},
        Poll::Pending => {
            tokio::spawn(async move {
                match poll_fn(|cx| service.poll_ready(cx)).await {
                    Ok(()) => StreamTask::new(service.call(request), reply, open, cut).await,
                    Err(never) => match never {},
                }
            });
        }
    }
}
