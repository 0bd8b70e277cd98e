//! The library fallback under test: a tonic server whose every call goes to
//! grpcproxy's [`TransparentProxy`], as a user embeds it.

use std::net::SocketAddr;

use grpcproxy::mq::NoQueue;
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
/// transparent proxy as its fallback, forwarding every call to `backend` (a URL).
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
    let task = tokio::spawn(async move {
        let served = tonic::transport::Server::builder()
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
