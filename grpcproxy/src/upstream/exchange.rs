//! One call over a backend connection: the request head goes out with whatever of the
//! request body is ready (one write for a unary call), the rest of the body follows as the
//! stream's window allows, and the response comes back as a [`RecvBody`].

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use h2::client::ResponseFuture;
use http::{Request, Response};
use http_body::Body;

use super::body::UpstreamBody;
use super::connection::{Connection, Unanswered};
use super::in_flight::InFlight;
use crate::boxed::{BoxBody, BoxError};
use crate::http2::{Cut, CutBy, Pipe, RecvBody};

/// Why a call could not be started on a connection.
pub(crate) enum NotStarted {
    /// The connection takes no new streams (GOAWAY, closed); nothing was sent, so the
    /// request comes back to be sent on another connection.
    Closed(Box<Request<BoxBody>>, h2::Error),
    /// The call cannot go out, and another connection would not help: h2 refused the
    /// request (malformed headers), or the request body failed before anything was sent
    /// (the client reset the stream, the proxy ended the call), so the backend never hears
    /// of the call.
    Failed(BoxError),
}

/// Opens a stream on `connection` for `request`, sending the head together with the body
/// frame that is ready now (a unary call leaves in one write); the rest of the body is
/// piped by a task of its own. The request always ends on a DATA frame, an empty one when
/// the body had nothing more.
///
/// Not async: nothing here waits. Body polls made here use a no-op waker; when the body has
/// nothing ready, the pipe task polls it again with its own.
pub(crate) fn start<C: Cut + 'static>(
    connection: &mut Connection,
    request: Request<BoxBody>,
    cut: Option<&Arc<C>>,
) -> Result<ResponseFuture, NotStarted> {
    let mut cx = Context::from_waker(Waker::noop());
    // The pool's handle is a fresh clone, ready at once unless the connection failed or got
    // a GOAWAY (or, never in practice, Pending: h2 then queues the stream itself).
    if let Poll::Ready(Err(e)) = connection.sender().poll_ready(&mut cx) {
        connection.retire();
        return Err(NotStarted::Closed(Box::new(request), e));
    }
    let (parts, mut body) = request.into_parts();
    // `None`: nothing ready yet; `Some(None)`: the body has ended. (Polled without asking
    // `is_end_stream` first: an ended body answers `None`, and the question takes h2's lock.)
    let first = match Pin::new(&mut body).poll_frame(&mut cx) {
        Poll::Ready(Some(Ok(frame))) => Some(Some(frame)),
        // A stream reset as soon as it opened (a rapid-reset flood) costs the backend
        // nothing: its HEADERS and RST_STREAM would share the backend connection with
        // every other client, and trip the backend's own reset limits for all of them.
        Poll::Ready(Some(Err(e))) => return Err(NotStarted::Failed(e)),
        Poll::Ready(None) => Some(None),
        Poll::Pending => None,
    };
    // END_STREAM never rides on the request HEADERS: gRPC's PROTOCOL-HTTP2.md says a
    // request stream with no data left to send MUST end with an empty DATA frame, and
    // grpc-go servers never see the end of a request that ends on its HEADERS (the call
    // hangs until its deadline).
    let (response, mut send) = connection
        .sender()
        .send_request(Request::from_parts(parts, ()), false)
        .map_err(|e| {
            if e.is_go_away() || e.is_io() {
                connection.retire();
            }
            NotStarted::Failed(e.into())
        })?;
    let queued = match first {
        Some(None) => {
            // Queued now, it leaves in the same write as the HEADERS frame.
            let _ = send.send_data(Bytes::new(), true);
            return Ok(response);
        }
        Some(Some(frame)) => match frame.into_data() {
            Ok(data) => {
                let end = body.is_end_stream();
                // Queued now, it leaves in the same write as the HEADERS frame.
                let queued = send.send_data(data, end);
                if end || queued.is_err() {
                    return Ok(response);
                }
                true
            }
            Err(frame) => {
                if let Ok(trailers) = frame.into_trailers() {
                    let _ = send.send_trailers(trailers);
                }
                return Ok(response);
            }
        },
        None => false,
    };
    let pipe = if queued {
        Pipe::after_queued(body, send)
    } else {
        Pipe::new(body, send)
    };
    tokio::spawn(pipe.cut_by(cut.map(|cut| CutBy(cut.clone()))));
    Ok(response)
}

/// Waits for the response head of a started call; `unanswered` counts a reset of the
/// proxy's (this future dropped, or the stream reset by the request's pipe) before it comes.
pub(crate) async fn response(
    response: ResponseFuture,
    in_flight: InFlight,
    unanswered: Unanswered,
) -> Result<Response<UpstreamBody>, h2::Error> {
    let response = match response.await {
        Ok(response) => response,
        Err(e) => {
            if e.is_remote() || !e.is_reset() {
                unanswered.ended_by_backend();
            }
            return Err(e);
        }
    };
    unanswered.answered();
    Ok(response.map(|recv| UpstreamBody::Pool {
        body: RecvBody::new(recv),
        _in_flight: in_flight,
    }))
}
