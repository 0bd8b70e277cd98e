//! The library fallback under test: a tonic server whose every call goes to
//! grpcproxy's [`TransparentProxy`], as a user embeds it, with gRPC-Web served in front
//! ([`GrpcWebLayer`], HTTP/1.1 accepted).

use std::net::SocketAddr;

use grpcproxy::mq::NoQueue;
use grpcproxy::web::{Cors, GrpcWebLayer, WebOptions, WebRequestBody};
use grpcproxy::{ProxyRoutes, SingleUpstream, TransparentProxy, Upstream};
use tokio::sync::oneshot;
use tokio_stream::wrappers::TcpListenerStream;

/// A running library proxy on a loopback port; dropping it stops it.
#[derive(Debug)]
pub struct LibraryProxy {
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl LibraryProxy {
    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for LibraryProxy {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        self.task.abort();
    }
}

/// Serves, on `127.0.0.1:0`, a tonic server with no services of its own and the
/// transparent proxy as its fallback, forwarding every call to `backend` (a URL); gRPC-Web
/// (any origin) over HTTP/1.1 and HTTP/2 besides gRPC.
///
/// ```no_run
/// # async fn f() {
/// let proxy = grpcproxy_interop::library_proxy("http://127.0.0.1:50052").await;
/// println!("proxy at {}", proxy.addr());
/// # }
/// ```
pub async fn library_proxy(backend: &str) -> LibraryProxy {
    let upstream = Upstream::new(backend).expect("the backend URL is valid");
    let proxy = TransparentProxy::new(NoQueue, SingleUpstream::new(upstream));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port is free");
    let addr = listener.local_addr().expect("the listener has an address");
    let (shutdown, stopped) = oneshot::channel();
    let routes = ProxyRoutes::new().fallback(proxy).into_routes();
    // tonic's routes take tonic's body: the layer's requests are mapped to it.
    let web = tower::ServiceBuilder::new()
        .layer(GrpcWebLayer::new(
            WebOptions::new().cors(Cors::allow_any_origin()),
        ))
        .map_request(
            |request: http::Request<WebRequestBody<tonic::body::Body>>| {
                request.map(tonic::body::Body::new)
            },
        );
    let task = tokio::spawn(async move {
        let served = tonic::transport::Server::builder()
            .accept_http1(true)
            .layer(web)
            .add_routes(routes)
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                let _ = stopped.await;
            })
            .await;
        if let Err(error) = served {
            eprintln!("library proxy stopped with an error: {error}");
        }
    });
    LibraryProxy {
        addr,
        shutdown: Some(shutdown),
        task,
    }
}
