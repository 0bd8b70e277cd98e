//! The bodies of a backend call: the request's end as gRPC wants it, and the response from
//! either kind of upstream connection.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use super::in_flight::InFlight;
use crate::boxed::{BoxBody, BoxError};
use crate::http2::RecvBody;

/// A request body that never reports its end before it has yielded a frame, so that hyper
/// ends an empty request stream with an empty DATA frame instead of END_STREAM on the
/// HEADERS (which gRPC's PROTOCOL-HTTP2.md forbids and grpc-go servers never see).
pub(crate) struct EndsOnData {
    body: BoxBody,
    yielded: bool,
}

impl EndsOnData {
    pub(crate) fn new(body: BoxBody) -> Self {
        Self {
            body,
            yielded: false,
        }
    }
}

impl Body for EndsOnData {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let frame = Pin::new(&mut self.body).poll_frame(cx);
        if let Poll::Ready(Some(Ok(_))) = &frame {
            self.yielded = true;
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.yielded && self.body.is_end_stream()
    }
}

/// A backend's response body: from grpcproxy's own connections or from a tonic `Channel`.
#[derive(Debug)]
pub(crate) enum UpstreamBody {
    /// From grpcproxy's own connections; the call stays counted on its connection while
    /// the body lives.
    Pool {
        body: RecvBody,
        _in_flight: InFlight,
    },
    Tonic(tonic::body::Body),
    /// Made by the proxy from several backends' answers (a fan-out).
    Merged(BoxBody),
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            UpstreamBody::Pool { body, .. } => Pin::new(body).poll_frame(cx).map_err(Into::into),
            UpstreamBody::Tonic(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
            UpstreamBody::Merged(body) => Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Pool { body, .. } => body.is_end_stream(),
            UpstreamBody::Tonic(body) => body.is_end_stream(),
            UpstreamBody::Merged(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Pool { body, .. } => body.size_hint(),
            UpstreamBody::Tonic(body) => body.size_hint(),
            UpstreamBody::Merged(body) => body.size_hint(),
        }
    }
}
