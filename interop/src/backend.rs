//! The tonic backend: `interop.v1.Interop` as `proto/interop.proto` describes it, with
//! `grpc.health.v1` and server reflection (v1alpha), on a loopback port.

use std::collections::HashSet;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use grpcproxy_testing::compressed::FirstMessage;
use grpcproxy_testing::trailers::ResponseTrailers;
use grpcproxy_testing::TestServer;
use tokio::sync::{mpsc, Notify};
use tokio_stream::{Stream, StreamExt};
use tonic::codec::CompressionEncoding;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::service::Routes;
use tonic::{Request, Response, Status, Streaming};

use crate::pb::interop_server::{Interop, InteropServer};
use crate::pb::{CancelQuery, CancelReport, Request as Message, Response as Answer};

/// Starts the tonic interop backend on `127.0.0.1:0`; it stops when dropped.
///
/// ```no_run
/// # async fn f() {
/// let backend = grpcproxy_interop::backend::serve().await;
/// println!("tonic backend at {}", backend.url());
/// # }
/// ```
pub async fn serve() -> TestServer {
    serve_on("127.0.0.1:0".parse().expect("an address")).await
}

/// Starts the tonic interop backend on `addr` (what `interop-backend ADDR` runs); it stops
/// when dropped.
///
/// ```no_run
/// # async fn f() {
/// let backend = grpcproxy_interop::backend::serve_on("127.0.0.1:50052".parse().unwrap()).await;
/// # }
/// ```
pub async fn serve_on(addr: std::net::SocketAddr) -> TestServer {
    let (reporter, health) = tonic_health::server::health_reporter();
    for service in ["", "interop.v1.Interop"] {
        reporter
            .set_service_status(service, tonic_health::ServingStatus::Serving)
            .await;
    }
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .expect("the interop descriptors are valid");
    let interop = InteropServer::new(TonicInterop::default())
        .max_decoding_message_size(crate::MAX_MESSAGE)
        .max_encoding_message_size(crate::MAX_MESSAGE)
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip);
    let routes = Routes::new(interop)
        .add_service(health)
        .add_service(reflection);
    TestServer::start_on(addr, routes).await
}

/// Which calls (by `call_id`) ended because their client went away.
#[derive(Debug, Default)]
struct Cancellations {
    ids: Mutex<HashSet<String>>,
    changed: Notify,
}

impl Cancellations {
    fn cancelled(&self, id: &str) {
        if !id.is_empty() {
            self.ids.lock().unwrap().insert(id.to_owned());
            self.changed.notify_waiters();
        }
    }

    async fn wait(&self, id: &str, within: Duration) -> bool {
        let waiting = async {
            loop {
                // Registered before the check, so a cancellation in between still wakes us.
                let mut changed = std::pin::pin!(self.changed.notified());
                changed.as_mut().enable();
                if self.ids.lock().unwrap().contains(id) {
                    return;
                }
                changed.await;
            }
        };
        tokio::time::timeout(within, waiting).await.is_ok()
    }
}

/// Marks its call cancelled when dropped before [`Unfinished::finish`]: tonic drops a
/// handler's future when the client goes away.
struct Unfinished {
    id: String,
    cancellations: Arc<Cancellations>,
}

impl Unfinished {
    fn finish(self) {
        std::mem::forget(self);
    }
}

impl Drop for Unfinished {
    fn drop(&mut self) {
        self.cancellations.cancelled(&self.id);
    }
}

/// The interop service in tonic.
#[derive(Debug, Clone, Default)]
struct TonicInterop {
    cancellations: Arc<Cancellations>,
}

fn failure(request: &Message) -> Option<Status> {
    (request.fail_code != 0).then(|| {
        Status::with_details(
            tonic::Code::from(request.fail_code),
            request.fail_message.clone(),
            request.fail_details.clone(),
        )
    })
}

/// The response headers and trailers a unary call's `x-interop-*` metadata asks for.
fn echoed_metadata(request: &MetadataMap) -> (MetadataMap, MetadataMap) {
    let (mut headers, mut trailers) = (MetadataMap::new(), MetadataMap::new());
    if let Some(value) = request.get("x-interop-ascii") {
        headers.insert("x-echo-ascii", value.clone());
        let trailer = format!("trailer {}", value.to_str().unwrap_or_default());
        if let Ok(trailer) = trailer.parse() {
            trailers.insert("x-trailer-ascii", trailer);
        }
    }
    if let Some(value) = request.get_bin("x-interop-bin") {
        headers.insert_bin("x-echo-bin", value.clone());
        if let Ok(bytes) = value.to_bytes() {
            let reversed: Vec<u8> = bytes.iter().rev().copied().collect();
            trailers.insert_bin("x-trailer-bin", MetadataValue::from_bytes(&reversed));
        }
    }
    (headers, trailers)
}

type Answers = Pin<Box<dyn Stream<Item = Result<Answer, Status>> + Send>>;

#[tonic::async_trait]
impl Interop for TonicInterop {
    async fn unary(&self, request: Request<Message>) -> Result<Response<Answer>, Status> {
        let request_compressed = FirstMessage::describe(request.extensions()).to_owned();
        let (headers, trailers) = echoed_metadata(request.metadata());
        let message = request.into_inner();
        let unfinished = Unfinished {
            id: message.call_id.clone(),
            cancellations: self.cancellations.clone(),
        };
        tokio::time::sleep(Duration::from_millis(message.sleep_ms.into())).await;
        unfinished.finish();
        if let Some(status) = failure(&message) {
            return Err(status);
        }
        let mut response = Response::new(Answer {
            payload: message.payload,
            request_count: 0,
            request_compressed,
        });
        *response.metadata_mut() = headers;
        response.extensions_mut().insert(ResponseTrailers(trailers));
        Ok(response)
    }

    async fn client_stream(
        &self,
        request: Request<Streaming<Message>>,
    ) -> Result<Response<Answer>, Status> {
        let mut stream = request.into_inner();
        let (mut payload, mut count) = (BytesMut::new(), 0);
        while let Some(message) = stream.message().await? {
            payload.extend_from_slice(&message.payload);
            count += 1;
        }
        Ok(Response::new(Answer {
            payload: payload.freeze(),
            request_count: count,
            request_compressed: String::new(),
        }))
    }

    type ServerStreamStream = Answers;

    async fn server_stream(
        &self,
        request: Request<Message>,
    ) -> Result<Response<Self::ServerStreamStream>, Status> {
        let message = request.into_inner();
        if let Some(status) = failure(&message) {
            return Err(status);
        }
        let (tx, rx) = mpsc::channel(1);
        let cancellations = self.cancellations.clone();
        tokio::spawn(async move {
            let interval = Duration::from_millis(message.sleep_ms.into());
            for i in 0..message.response_count {
                if i > 0 {
                    tokio::select! {
                        () = tx.closed() => break,
                        () = tokio::time::sleep(interval) => {}
                    }
                }
                let mut payload = BytesMut::from(&message.payload[..]);
                payload.extend_from_slice(&[(i % 256) as u8]);
                let answer = Answer {
                    payload: payload.freeze(),
                    ..Answer::default()
                };
                if tx.send(Ok(answer)).await.is_err() {
                    break;
                }
            }
            if tx.is_closed() {
                cancellations.cancelled(&message.call_id);
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    type BidiStream = Answers;

    async fn bidi(
        &self,
        request: Request<Streaming<Message>>,
    ) -> Result<Response<Self::BidiStream>, Status> {
        let mut count = 0;
        let answers = request.into_inner().map(move |message| {
            count += 1;
            message.map(|message| Answer {
                payload: message.payload,
                request_count: count,
                request_compressed: String::new(),
            })
        });
        Ok(Response::new(Box::pin(answers)))
    }

    async fn was_cancelled(
        &self,
        request: Request<CancelQuery>,
    ) -> Result<Response<CancelReport>, Status> {
        let query = request.into_inner();
        let within = Duration::from_millis(query.wait_ms.into());
        let cancelled = self.cancellations.wait(&query.call_id, within).await;
        Ok(Response::new(CancelReport { cancelled }))
    }
}

impl From<Bytes> for Message {
    fn from(payload: Bytes) -> Self {
        Self {
            payload,
            ..Self::default()
        }
    }
}
