//! Whether a gRPC message arrived compressed, which tonic does not tell its handlers or
//! clients: a body wrapper reads the compressed-flag byte of the first message.
//!
//! [`TestServer`](crate::TestServer) puts a [`FirstMessage`] into every request's
//! extensions; [`watch_responses`] does the same for a client's responses.

use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame};
use pin_project_lite::pin_project;
use tower::util::MapResponse;
use tower::{Service, ServiceExt};

const UNSEEN: u8 = 0;
const PLAIN: u8 = 1;
const COMPRESSED: u8 = 2;

/// What the first message of a body said about compression, once it has been read.
#[derive(Debug, Clone, Default)]
pub struct FirstMessage(Arc<AtomicU8>);

impl FirstMessage {
    /// `Some(true)` if the first message had its compressed flag set, `Some(false)` if
    /// not, `None` if no message has been read yet.
    pub fn compressed(&self) -> Option<bool> {
        match self.0.load(Ordering::Acquire) {
            PLAIN => Some(false),
            COMPRESSED => Some(true),
            _ => None,
        }
    }

    /// What `extensions` (of a request or response) say: `yes` (compressed), `no`, or
    /// `unknown` (no [`FirstMessage`], or no message read yet).
    pub fn describe(extensions: &http::Extensions) -> &'static str {
        match extensions.get::<Self>().and_then(Self::compressed) {
            Some(true) => "yes",
            Some(false) => "no",
            None => "unknown",
        }
    }

    fn saw(&self, flag: u8) {
        let seen = if flag == 0 { PLAIN } else { COMPRESSED };
        let _ = self
            .0
            .compare_exchange(UNSEEN, seen, Ordering::AcqRel, Ordering::Acquire);
    }
}

pin_project! {
    /// A body that records its first byte (the first message's compressed flag).
    #[derive(Debug)]
    pub struct Watched<B> {
        #[pin]
        inner: B,
        first: Option<FirstMessage>,
    }
}

impl<B> Watched<B> {
    /// Wraps `inner`, reporting to `first`.
    pub fn new(inner: B, first: FirstMessage) -> Self {
        Self {
            inner,
            first: Some(first),
        }
    }
}

impl<B: Body<Data = Bytes>> Body for Watched<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(&flag) = frame.data_ref().and_then(|data| data.first()) {
                if let Some(first) = this.first.take() {
                    first.saw(flag);
                }
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Server side: puts a [`FirstMessage`] for the request body into the request extensions.
#[derive(Debug, Clone)]
pub struct RequestCompression<S> {
    inner: S,
}

impl<S> RequestCompression<S> {
    /// Wraps `inner`; as a layer: `tower::layer::layer_fn(RequestCompression::new)`.
    pub fn new(inner: S) -> Self {
        Self { inner }
    }
}

impl<S> Service<Request<tonic::body::Body>> for RequestCompression<S>
where
    S: Service<Request<tonic::body::Body>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<tonic::body::Body>) -> Self::Future {
        let first = FirstMessage::default();
        request.extensions_mut().insert(first.clone());
        self.inner
            .call(request.map(|body| tonic::body::Body::new(Watched::new(body, first))))
    }
}

/// A service whose responses carry a [`FirstMessage`] (see [`watch_responses`]).
pub type WatchedResponses<S, B> = MapResponse<S, WatchResponse<B>>;

/// What [`watch_responses`] does to each response.
pub type WatchResponse<B> = fn(Response<B>) -> Response<Watched<B>>;

/// Client side: wraps a channel so every response carries a [`FirstMessage`] for its
/// body in its extensions (tonic passes them on to `tonic::Response::extensions`).
///
/// ```no_run
/// # async fn f() -> Result<(), tonic::transport::Error> {
/// let channel = tonic::transport::Endpoint::from_static("http://127.0.0.1:50051").connect().await?;
/// let watched = grpcproxy_testing::compressed::watch_responses(channel);
/// # Ok(()) }
/// ```
pub fn watch_responses<S, B>(inner: S) -> WatchedResponses<S, B>
where
    S: Service<Request<tonic::body::Body>, Response = Response<B>>,
{
    inner.map_response(watch_response::<B> as WatchResponse<B>)
}

fn watch_response<B>(mut response: Response<B>) -> Response<Watched<B>> {
    let first = FirstMessage::default();
    response.extensions_mut().insert(first.clone());
    response.map(|body| Watched::new(body, first))
}
