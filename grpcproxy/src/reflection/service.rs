//! Serving the merged reflection: tonic's generated servers for v1 and v1alpha over one
//! implementation, and [`WithReflection`], which answers reflection calls in front of
//! another service and passes every other call through.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use pin_project_lite::pin_project;
use prost::Message;
use tonic::codegen::tokio_stream::{self, wrappers::ReceiverStream};
use tonic::{Status, Streaming};
use tonic_reflection::pb::{v1, v1alpha};
use tower_service::Service;

use super::backend::{V1, V1ALPHA};
use super::session::Session;
use super::MergedReflection;
use crate::boxed::BoxError;

type Answers<T> = Pin<Box<dyn tokio_stream::Stream<Item = Result<T, Status>> + Send>>;

/// Runs one client's stream: each request answered in order, until the client half-closes
/// or goes away. `into` and `from` convert v1alpha messages (the same fields, the same
/// wire bytes) to and from v1.
fn serve_stream<In, Out>(
    reflection: &MergedReflection,
    mut requests: Streaming<In>,
    into: fn(In) -> v1::ServerReflectionRequest,
    from: fn(v1::ServerReflectionResponse) -> Out,
) -> Answers<Out>
where
    In: Send + 'static,
    Out: Send + 'static,
{
    reflection.shared.stats.stream();
    let mut session = Session::new(reflection.shared.clone());
    let (answers, receiver) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        while let Ok(Some(request)) = requests.message().await {
            let answer = session.answer(into(request)).await;
            if answers.send(Ok(from(answer))).await.is_err() {
                break;
            }
        }
    });
    Box::pin(ReceiverStream::new(receiver))
}

/// The same message in another package's generated type (v1 and v1alpha share fields).
fn recode<A: Message, B: Message + Default>(message: A) -> B {
    B::decode(message.encode_to_vec().as_slice()).unwrap_or_default()
}

#[tonic::async_trait]
impl v1::server_reflection_server::ServerReflection for MergedReflection {
    type ServerReflectionInfoStream = Answers<v1::ServerReflectionResponse>;

    async fn server_reflection_info(
        &self,
        request: tonic::Request<Streaming<v1::ServerReflectionRequest>>,
    ) -> Result<tonic::Response<Self::ServerReflectionInfoStream>, Status> {
        Ok(tonic::Response::new(serve_stream(
            self,
            request.into_inner(),
            |r| r,
            |r| r,
        )))
    }
}

#[tonic::async_trait]
impl v1alpha::server_reflection_server::ServerReflection for MergedReflection {
    type ServerReflectionInfoStream = Answers<v1alpha::ServerReflectionResponse>;

    async fn server_reflection_info(
        &self,
        request: tonic::Request<Streaming<v1alpha::ServerReflectionRequest>>,
    ) -> Result<tonic::Response<Self::ServerReflectionInfoStream>, Status> {
        Ok(tonic::Response::new(serve_stream(
            self,
            request.into_inner(),
            recode,
            recode,
        )))
    }
}

/// Answers reflection calls (`grpc.reflection.v1` and `v1alpha`) with a
/// [`MergedReflection`] in front of another service, which gets every other call.
///
/// ```
/// use grpcproxy::reflection::{MergedReflection, ReflectionOptions, WithReflection};
/// use grpcproxy::{mq::NoQueue, server::CallService, SingleUpstream, TransparentProxy, Upstream};
///
/// fn servable(_: impl CallService) {}
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let backend = Upstream::new("http://127.0.0.1:50052")?;
/// let reflection = MergedReflection::new(vec![("b".to_owned(), backend.clone())], ReflectionOptions::default());
/// let proxy = TransparentProxy::new(NoQueue, SingleUpstream::new(backend));
/// servable(WithReflection::new(proxy.clone(), reflection));
/// // The same type passing everything through, for listeners without it.
/// servable(WithReflection::disabled(proxy));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct WithReflection<S> {
    inner: S,
    reflection: Option<Servers>,
}

#[derive(Clone)]
struct Servers {
    v1: v1::server_reflection_server::ServerReflectionServer<MergedReflection>,
    v1alpha: v1alpha::server_reflection_server::ServerReflectionServer<MergedReflection>,
}

impl std::fmt::Debug for Servers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Servers")
    }
}

impl<S> WithReflection<S> {
    /// `inner`, with reflection calls answered by `reflection`.
    pub fn new(inner: S, reflection: MergedReflection) -> Self {
        Self {
            inner,
            reflection: Some(Servers {
                v1: v1::server_reflection_server::ServerReflectionServer::new(reflection.clone()),
                v1alpha: v1alpha::server_reflection_server::ServerReflectionServer::new(reflection),
            }),
        }
    }

    /// `inner` alone: every call passes through.
    pub fn disabled(inner: S) -> Self {
        Self {
            inner,
            reflection: None,
        }
    }
}

/// The response body of [`WithReflection`]: the inner service's (`Left`), or the
/// reflection's (`Right`).
///
/// ```
/// use grpcproxy::reflection::ReflectionBody;
///
/// fn takes_any_body<B: http_body::Body<Data = bytes::Bytes>>() {}
/// takes_any_body::<ReflectionBody<grpcproxy::ResponseBody>>();
/// ```
pub type ReflectionBody<B> = http_body_util::Either<B, tonic::body::Body>;

type Local = Pin<Box<dyn Future<Output = Result<Response<tonic::body::Body>, Infallible>> + Send>>;

pin_project! {
    /// The future of a [`WithReflection`] call.
    #[must_use = "futures do nothing unless polled"]
    pub struct ReflectionFuture<F> {
        #[pin]
        kind: FutureKind<F>,
    }
}

pin_project! {
    #[project = FutureKindProj]
    enum FutureKind<F> {
        Inner { #[pin] call: F },
        Reflection { call: Local },
    }
}

impl<F> std::fmt::Debug for ReflectionFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReflectionFuture")
    }
}

impl<F, B> Future for ReflectionFuture<F>
where
    F: Future<Output = Result<Response<B>, Infallible>>,
{
    type Output = Result<Response<ReflectionBody<B>>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            FutureKindProj::Inner { call } => call
                .poll(cx)
                .map_ok(|response| response.map(ReflectionBody::Left)),
            FutureKindProj::Reflection { call } => call
                .as_mut()
                .poll(cx)
                .map_ok(|response| response.map(ReflectionBody::Right)),
        }
    }
}

impl<S, B, RB> Service<Request<B>> for WithReflection<S>
where
    S: Service<Request<B>, Response = Response<RB>, Error = Infallible>,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError> + Send,
{
    type Response = Response<ReflectionBody<RB>>;
    type Error = Infallible;
    type Future = ReflectionFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        if let Some(servers) = &mut self.reflection {
            let path = request.uri().path();
            if path == V1 {
                return ReflectionFuture {
                    kind: FutureKind::Reflection {
                        call: Box::pin(servers.v1.call(request)),
                    },
                };
            }
            if path == V1ALPHA {
                return ReflectionFuture {
                    kind: FutureKind::Reflection {
                        call: Box::pin(servers.v1alpha.call(request)),
                    },
                };
            }
        }
        ReflectionFuture {
            kind: FutureKind::Inner {
                call: self.inner.call(request),
            },
        }
    }
}
