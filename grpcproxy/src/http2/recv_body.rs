//! h2's receive stream as an [`http_body::Body`], giving window back as data is taken.

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
    recv: RecvStream,
    data_done: bool,
    done: bool,
}

impl RecvBody {
    pub(crate) fn new(recv: RecvStream) -> Self {
        Self {
            recv,
            data_done: false,
            done: false,
        }
    }
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
        if !this.data_done {
            match ready!(this.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    // Taken off the stream: the peer may send that much more.
                    let _ = this.recv.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(e)) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(e)));
                }
                None => this.data_done = true,
            }
        }
        let trailers = ready!(this.recv.poll_trailers(cx));
        this.done = true;
        match trailers {
            Ok(Some(trailers)) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
            Ok(None) => Poll::Ready(None),
            Err(e) => Poll::Ready(Some(Err(e))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.recv.is_end_stream()
    }
}
