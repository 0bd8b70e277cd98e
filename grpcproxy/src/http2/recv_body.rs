//! h2's receive stream as an [`http_body::Body`], giving window back as data is taken
//! (and, for gRPC-Web over HTTP/1.1, hyper's body in the same type).

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use h2::RecvStream;
use http_body::{Body, Frame};

/// A body received over HTTP/2: a client's request body in what [`server::serve`]
/// hands its service, and a backend's response body on the proxy's own connections.
///
/// Its DATA frames come as they arrived, and each gives its bytes of flow-control window
/// back to the peer as it is taken; then the trailers, if any. An error is h2's (a reset
/// or the connection's end).
///
/// With [`ServerOptions::http1`](crate::server::ServerOptions::http1), a request that
/// came over HTTP/1.1 (gRPC-Web from a browser) has its body here too; one that breaks off
/// fails as a cancelled stream (`CANCEL`).
///
/// [`server::serve`]: crate::server::serve
///
/// ```
/// use grpcproxy::RecvBody;
///
/// fn takes_any_body<B: http_body::Body<Data = bytes::Bytes>>() {}
/// takes_any_body::<RecvBody>();
/// ```
#[derive(Debug)]
pub struct RecvBody {
    recv: Recv,
    data_done: bool,
    done: bool,
}

#[derive(Debug)]
enum Recv {
    H2(RecvStream),
    /// Boxed: hyper's body is several times the size of h2's stream, and every HTTP/2
    /// call would move the larger enum.
    Http1(Box<hyper::body::Incoming>),
}

impl RecvBody {
    pub(crate) fn new(recv: RecvStream) -> Self {
        Self {
            recv: Recv::H2(recv),
            data_done: false,
            done: false,
        }
    }

    pub(crate) fn http1(body: hyper::body::Incoming) -> Self {
        Self {
            recv: Recv::Http1(Box::new(body)),
            data_done: false,
            done: false,
        }
    }
}

/// An HTTP/1.1 body that broke off (the client went away, or sent a malformed chunk): to
/// the call, its stream was cancelled.
fn http1_error(e: hyper::Error) -> h2::Error {
    tracing::debug!(error = %e, "HTTP/1.1 request body failed");
    h2::Error::from(h2::Reason::CANCEL)
}

impl Body for RecvBody {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        let recv = match &mut this.recv {
            Recv::H2(recv) => recv,
            Recv::Http1(body) => {
                let frame = ready!(Pin::new(&mut **body).poll_frame(cx));
                if !matches!(frame, Some(Ok(_))) {
                    this.done = true;
                }
                return Poll::Ready(frame.map(|frame| frame.map_err(http1_error)));
            }
        };
        if !this.data_done {
            match ready!(recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    // Taken off the stream: the peer may send that much more.
                    let _ = recv.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(e)) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(e)));
                }
                None => this.data_done = true,
            }
        }
        let trailers = ready!(recv.poll_trailers(cx));
        this.done = true;
        match trailers {
            Ok(Some(trailers)) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
            Ok(None) => Poll::Ready(None),
            Err(e) => Poll::Ready(Some(Err(e))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
            || match &self.recv {
                Recv::H2(recv) => recv.is_end_stream(),
                Recv::Http1(body) => body.is_end_stream(),
            }
    }
}
