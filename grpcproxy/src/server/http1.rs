//! HTTP/1.1 client connections ([`ServerOptions::http1`](super::ServerOptions::http1)),
//! for gRPC-Web from browsers: hyper reads the requests, the same service answers them as
//! HTTP/2 calls. The connection closes gracefully on drain, idle timeout and maximum age,
//! at once when the drain times out.

use std::convert::Infallible;
use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::sync::Arc;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};

use super::connection::Connection;
use super::idle_watch::idle;
use super::open_streams::{OpenStream, StreamCount};
use super::CallService;
use crate::{ConnectionInfo, RecvBody};

impl<S: CallService> Connection<S> {
    /// Serves an HTTP/1.1 connection until the client closes it or the server lets it go.
    pub(super) async fn serve_http1<T>(self, io: T)
    where
        T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let peer = self.info.remote_addr;
        let streams = Arc::new(StreamCount::new());
        let service = Http1Service {
            service: self.service.clone(),
            info: self.info.clone(),
            streams: streams.clone(),
        };
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(self.handshake_timeout)
            .keep_alive(true);
        let mut connection = pin!(builder.serve_connection(TokioIo::new(io), service));
        let mut idle = pin!(idle(&streams, self.idle_timeout));
        let mut drain_signal = self.drain_signal.clone();
        let mut drain = pin!(drain_signal.wait_for(|drain| *drain));
        let mut age = pin!(async {
            match self.age {
                Some((age, _)) => tokio::time::sleep(age).await,
                None => std::future::pending().await,
            }
        });
        let mut cut = pin!(self.cut.cancelled());
        let mut closing = false;
        loop {
            tokio::select! {
                ended = connection.as_mut() => {
                    if let Err(e) = ended {
                        tracing::debug!(peer = ?peer, error = %e, "HTTP/1.1 client connection ended with an error");
                    }
                    return;
                }
                _ = drain.as_mut(), if !closing => closing = true,
                () = idle.as_mut(), if !closing => {
                    tracing::debug!(peer = ?peer, "closing an idle HTTP/1.1 client connection");
                    closing = true;
                }
                () = age.as_mut(), if !closing => {
                    self.aged.aged();
                    closing = true;
                }
                // The drain timed out: dropping the connection ends its call as cancelled.
                () = cut.as_mut() => return,
            }
            // Closing: the response under way finishes, then the connection closes.
            connection.as_mut().graceful_shutdown();
        }
    }
}

/// Hands each HTTP/1.1 request to the service as a call.
struct Http1Service<S> {
    service: S,
    info: ConnectionInfo,
    streams: Arc<StreamCount>,
}

type Http1Call<B> = Pin<Box<dyn Future<Output = Result<Response<B>, Infallible>> + Send>>;

impl<S: CallService> hyper::service::Service<Request<Incoming>> for Http1Service<S> {
    type Response = Response<S::Body>;
    type Error = Infallible;
    type Future = Http1Call<S::Body>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let (parts, body) = request.into_parts();
        let mut request = Request::from_parts(parts, RecvBody::http1(body));
        request.extensions_mut().insert(self.info.clone());
        // Counted open until the answer's head is out (HTTP/1.1 calls one at a time).
        let open = OpenStream::new(&self.streams);
        let mut service = self.service.clone();
        Box::pin(async move {
            let Ok(()) = poll_fn(|cx| service.poll_ready(cx)).await;
            let response = service.call(request).await;
            drop(open);
            response
        })
    }
}
