//! Starting test servers on `127.0.0.1:0` that stop when dropped.

use std::net::SocketAddr;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::service::Routes;

use crate::pb::test_service_server::TestServiceServer;
use crate::trailers::TrailersLayer;
use crate::PingService;

/// A tonic server on a loopback port; dropping it stops the server.
#[derive(Debug)]
pub struct TestServer {
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl TestServer {
    /// Serves `routes` on `127.0.0.1:0`.
    pub async fn start(routes: Routes) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(async move {
            let result = tonic::transport::Server::builder()
                .layer(TrailersLayer)
                .add_routes(routes)
                .serve_with_incoming_shutdown(nodelay(TcpListenerStream::new(listener)), async {
                    let _ = rx.await;
                })
                .await;
            if let Err(e) = result {
                eprintln!("test server stopped with an error: {e}");
            }
        });
        Self {
            addr,
            shutdown: Some(tx),
            task,
        }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://addr`, for an upstream or a client endpoint.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting and closes connections now.
    pub fn stop(mut self) {
        self.shutdown_now();
    }

    fn shutdown_now(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.task.abort();
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown_now();
    }
}

/// Sets TCP_NODELAY on every accepted connection, as production servers do: without it,
/// small streamed messages wait on Nagle's algorithm and delayed ACKs (~40 ms each).
pub fn nodelay(
    incoming: TcpListenerStream,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use tokio_stream::StreamExt;
    incoming.map(|stream| {
        let stream = stream?;
        stream.set_nodelay(true)?;
        Ok(stream)
    })
}

/// The ping service with no message size limits (the tests send 16 MiB messages).
pub fn ping_server(service: PingService) -> TestServiceServer<PingService> {
    TestServiceServer::new(service)
        .max_decoding_message_size(usize::MAX)
        .max_encoding_message_size(usize::MAX)
        .accept_compressed(tonic::codec::CompressionEncoding::Gzip)
        .send_compressed(tonic::codec::CompressionEncoding::Gzip)
}

/// Starts the ping service as a backend; returns the server and the service (for events).
pub async fn ping_backend() -> (TestServer, PingService) {
    let service = PingService::new();
    let server = TestServer::start(Routes::new(ping_server(service.clone()))).await;
    (server, service)
}

/// A ping client for `addr` with no message size limits.
pub async fn ping_client(
    addr: SocketAddr,
) -> crate::pb::test_service_client::TestServiceClient<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    crate::pb::test_service_client::TestServiceClient::new(channel)
        .max_decoding_message_size(usize::MAX)
        .max_encoding_message_size(usize::MAX)
}
