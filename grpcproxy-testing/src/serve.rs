//! Starting test servers on `127.0.0.1:0` that stop when dropped.

use std::net::SocketAddr;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::service::Routes;

use crate::compressed::RequestCompression;
use crate::pb::test_service_server::TestServiceServer;
use crate::trailers::TrailersLayer;
use crate::PingService;

/// A tonic server on a loopback port; dropping it stops the server. Handlers find a
/// [`FirstMessage`](crate::compressed::FirstMessage) in every request's extensions.
#[derive(Debug)]
pub struct TestServer {
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
    /// Second handles on every accepted socket, to cut them in [`TestServer::kill`].
    sockets: Sockets,
}

type Sockets = std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>;

impl TestServer {
    /// Serves `routes` on `127.0.0.1:0`.
    pub async fn start(routes: Routes) -> Self {
        Self::start_on("127.0.0.1:0".parse().unwrap(), routes).await
    }

    /// Serves `routes` on `addr` (say, where a stopped server was, as a restart would).
    pub async fn start_on(addr: SocketAddr, routes: Routes) -> Self {
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel();
        let sockets = Sockets::default();
        let incoming = nodelay(TcpListenerStream::new(listener), sockets.clone());
        let task = tokio::spawn(async move {
            let result = tonic::transport::Server::builder()
                .layer(TrailersLayer)
                .layer(tower::layer::layer_fn(RequestCompression::new))
                .add_routes(routes)
                .serve_with_incoming_shutdown(incoming, async {
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
            sockets,
        }
    }

    /// How many connections it has accepted.
    pub fn connections_accepted(&self) -> usize {
        self.sockets.lock().unwrap().len()
    }

    /// Dies like a crashed process: stops listening and cuts every connection at once (no
    /// GOAWAY, no trailers).
    pub fn kill(self) {
        self.task.abort();
        for socket in self.sockets.lock().unwrap().drain(..) {
            let _ = socket.shutdown(std::net::Shutdown::Both);
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
fn nodelay(
    incoming: TcpListenerStream,
    sockets: Sockets,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use tokio_stream::StreamExt;
    incoming.map(move |stream| {
        let stream = stream?;
        stream.set_nodelay(true)?;
        let socket = stream.into_std()?;
        sockets.lock().unwrap().push(socket.try_clone()?);
        tokio::net::TcpStream::from_std(socket)
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

/// A ping backend named `name` that also serves `grpc.health.v1.Health`, reporting the
/// whole server (service "") as SERVING until told otherwise through the reporter.
pub async fn health_backend(name: &str) -> (TestServer, tonic_health::server::HealthReporter) {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    let routes = Routes::new(ping_server(PingService::named(name))).add_service(health);
    (TestServer::start(routes).await, reporter)
}

/// Starts the ping service as a backend; returns the server and the service (for events).
pub async fn ping_backend() -> (TestServer, PingService) {
    let service = PingService::new();
    let server = TestServer::start(Routes::new(ping_server(service.clone()))).await;
    (server, service)
}

/// Like [`ping_backend`], with server reflection (`grpc.reflection.v1` and `v1alpha`)
/// describing `grpcproxy.testing.TestService`.
pub async fn ping_backend_with_reflection() -> (TestServer, PingService) {
    let service = PingService::new();
    let v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::pb::DESCRIPTOR_SET)
        .build_v1()
        .expect("the ping descriptors are valid");
    let v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::pb::DESCRIPTOR_SET)
        .build_v1alpha()
        .expect("the ping descriptors are valid");
    let routes = Routes::new(ping_server(service.clone()))
        .add_service(v1)
        .add_service(v1alpha);
    let server = TestServer::start(routes).await;
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

/// A ping carrying `value`.
pub fn ping(value: impl Into<String>) -> crate::pb::PingRequest {
    crate::pb::PingRequest {
        value: value.into(),
        ..Default::default()
    }
}

/// Opens a bidi `PingStream` call and waits for `first` to come back: the sender for more
/// pings and the replies, with the call known to flow end to end.
pub async fn open_ping_stream(
    client: &mut crate::pb::test_service_client::TestServiceClient<tonic::transport::Channel>,
    first: &str,
) -> (
    tokio::sync::mpsc::Sender<crate::pb::PingRequest>,
    tonic::Streaming<crate::pb::PingResponse>,
) {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(ping(first)).await.unwrap();
    let mut replies = client
        .ping_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(replies.message().await.unwrap().unwrap().value, first);
    (tx, replies)
}

/// Opens a `PingList` call whose ten responses come a second apart (about 10 s in all) and
/// waits for the first: a call that is open, with its response headers sent.
pub async fn open_slow_list(
    client: &mut crate::pb::test_service_client::TestServiceClient<tonic::transport::Channel>,
) -> tonic::Streaming<crate::pb::PingResponse> {
    let mut stream = client
        .ping_list(crate::pb::PingRequest {
            sleep_ms: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    stream.message().await.unwrap().unwrap();
    stream
}
