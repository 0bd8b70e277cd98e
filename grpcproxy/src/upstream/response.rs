//! A backend's response body on grpcproxy's own connections: h2's receive stream as an
//! [`http_body::Body`], giving window back as data is taken.

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use h2::RecvStream;
use http_body::{Body, Frame};

use super::InFlight;
use crate::body::BoxError;

/// The response body of one call; the call stays counted on its connection while it lives.
#[derive(Debug)]
pub(crate) struct ResponseStream {
    recv: RecvStream,
    data_done: bool,
    done: bool,
    _in_flight: InFlight,
}

impl ResponseStream {
    pub(super) fn new(recv: RecvStream, in_flight: InFlight) -> Self {
        Self {
            recv,
            data_done: false,
            done: false,
            _in_flight: in_flight,
        }
    }
}

impl Body for ResponseStream {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        if !this.data_done {
            match ready!(this.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    // Taken off the stream: the backend may send that much more.
                    let _ = this.recv.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(e)) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(e.into())));
                }
                None => this.data_done = true,
            }
        }
        let trailers = ready!(this.recv.poll_trailers(cx));
        this.done = true;
        match trailers {
            Ok(Some(trailers)) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
            Ok(None) => Poll::Ready(None),
            Err(e) => Poll::Ready(Some(Err(e.into()))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.recv.is_end_stream()
    }
}
