//! Custom trailing metadata for typed tonic services, which tonic cannot send on success.
//!
//! A handler puts [`ResponseTrailers`] into its response's extensions; [`TrailersLayer`]
//! merges them into the trailers the response ends with.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body::{Body, Frame};
use pin_project_lite::pin_project;
use tonic::metadata::MetadataMap;
use tower::{Layer, Service};

/// Trailers to add to a response's final trailers frame.
#[derive(Debug, Clone, Default)]
pub struct ResponseTrailers(pub MetadataMap);

/// Adds [`ResponseTrailers`] found in response extensions to the response trailers.
#[derive(Debug, Clone, Copy, Default)]
pub struct TrailersLayer;

impl<S> Layer<S> for TrailersLayer {
    type Service = TrailersService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        TrailersService { inner }
    }
}

/// The service [`TrailersLayer`] makes.
#[derive(Debug, Clone)]
pub struct TrailersService<S> {
    inner: S,
}

impl<S, B, RB> Service<Request<B>> for TrailersService<S>
where
    S: Service<Request<B>, Response = Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = Response<WithTrailers<RB>>;
    type Error = S::Error;
    type Future =
        Pin<Box<dyn std::future::Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let future = self.inner.call(request);
        Box::pin(async move {
            let mut response = future.await?;
            let extra = response
                .extensions_mut()
                .remove::<ResponseTrailers>()
                .map(|t| t.0.into_headers());
            Ok(response.map(|inner| WithTrailers { inner, extra }))
        })
    }
}

pin_project! {
    /// A body whose trailers get extra entries.
    #[derive(Debug)]
    pub struct WithTrailers<B> {
        #[pin]
        inner: B,
        extra: Option<HeaderMap>,
    }
}

impl<B: Body<Data = Bytes>> Body for WithTrailers<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => match frame.into_trailers() {
                Ok(mut trailers) => {
                    if let Some(extra) = this.extra.take() {
                        for (name, value) in extra.iter() {
                            trailers.append(name.clone(), value.clone());
                        }
                    }
                    Poll::Ready(Some(Ok(Frame::trailers(trailers))))
                }
                Err(frame) => Poll::Ready(Some(Ok(frame))),
            },
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
}
