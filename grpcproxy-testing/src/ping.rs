//! The ping test service: the Go suite's asserting service, plus client streaming and knobs
//! (sleep, error code, payload echo, `x-echo-*` metadata echo) and cancellation tracking.

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_stream::{Stream, StreamExt};
use tonic::metadata::MetadataMap;
use tonic::{Code, Request, Response, Status, Streaming};

use crate::pb::test_service_server::TestService;
use crate::pb::{Empty, PingRequest, PingResponse};
use crate::trailers::ResponseTrailers;

/// The value PingEmpty answers with.
pub const PING_DEFAULT_VALUE: &str = "I like kittens.";
/// The metadata key a client sends and PingEmpty requires.
pub const CLIENT_MD_KEY: &str = "test-client-header";
/// The response header key the service sends.
pub const SERVER_HEADER_MD_KEY: &str = "test-client-header";
/// The response header value the service sends.
pub const SERVER_HEADER_VALUE: &str = "I like turtles.";
/// The trailer key the service sends.
pub const SERVER_TRAILER_MD_KEY: &str = "test-client-trailer";
/// The trailer value the service sends.
pub const SERVER_TRAILER_VALUE: &str = "I like ending turtles.";
/// How many responses PingList streams.
pub const LIST_RESPONSES: i32 = 10;
/// Request metadata with this prefix is echoed back in response headers and trailers.
pub const ECHO_PREFIX: &str = "x-echo-";

/// What the service saw: calls that were cancelled before they finished, and the metadata
/// of the last call.
#[derive(Debug, Default)]
pub struct PingEvents {
    cancelled: AtomicUsize,
    changed: Notify,
    last_metadata: Mutex<Option<MetadataMap>>,
}

impl PingEvents {
    /// Calls dropped by the server before they completed (client cancel, reset, deadline).
    pub fn cancelled(&self) -> usize {
        self.cancelled.load(Ordering::SeqCst)
    }

    /// Waits until at least `n` calls were cancelled; false if `timeout` passed first.
    pub async fn wait_cancelled(&self, n: usize, timeout: Duration) -> bool {
        tokio::time::timeout(timeout, async {
            loop {
                let notified = self.changed.notified();
                if self.cancelled() >= n {
                    return;
                }
                notified.await;
            }
        })
        .await
        .is_ok()
    }

    /// The request metadata of the most recent call.
    pub fn last_metadata(&self) -> Option<MetadataMap> {
        self.last_metadata.lock().unwrap().clone()
    }
}

/// Counts a call as cancelled if it is dropped before `complete()`.
struct CallGuard {
    events: Arc<PingEvents>,
    completed: bool,
}

impl CallGuard {
    fn complete(mut self) {
        self.completed = true;
    }
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        if !self.completed {
            self.events.cancelled.fetch_add(1, Ordering::SeqCst);
            self.events.changed.notify_waiters();
        }
    }
}

/// The response header naming which backend served a call (see [`PingService::named`]).
pub const SERVED_BY_KEY: &str = "x-served-by";

/// The ping service. Serve it with [`crate::serve::ping_backend`].
#[derive(Debug, Clone, Default)]
pub struct PingService {
    events: Arc<PingEvents>,
    name: Option<Arc<str>>,
    counter_offset: i32,
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<PingResponse, Status>> + Send>>;

impl PingService {
    /// A service with fresh event counters.
    pub fn new() -> Self {
        Self::default()
    }

    /// A service that names itself in an `x-served-by` response header.
    pub fn named(name: &str) -> Self {
        Self {
            events: Arc::default(),
            name: Some(Arc::from(name)),
            counter_offset: 0,
        }
    }

    /// A changed version of the service: every `counter` it answers is `offset` higher
    /// (replay tests tell it from the original by the response bytes).
    pub fn with_counter_offset(mut self, offset: i32) -> Self {
        self.counter_offset = offset;
        self
    }

    /// What the service has seen.
    pub fn events(&self) -> &Arc<PingEvents> {
        &self.events
    }

    fn begin(&self, metadata: &MetadataMap) -> CallGuard {
        *self.events.last_metadata.lock().unwrap() = Some(metadata.clone());
        CallGuard {
            events: self.events.clone(),
            completed: false,
        }
    }

    /// Response headers: the server header, `x-served-by`, and echoed `x-echo-*` entries.
    fn response_headers(&self, request: &MetadataMap) -> MetadataMap {
        let mut headers = echoed(request);
        headers.insert(SERVER_HEADER_MD_KEY, SERVER_HEADER_VALUE.parse().unwrap());
        if let Some(name) = &self.name {
            headers.insert(
                SERVED_BY_KEY,
                name.parse().expect("a backend name is ASCII"),
            );
        }
        headers
    }
}

/// Trailers: the server trailer plus echoed `x-echo-*` entries.
fn response_trailers(request: &MetadataMap) -> ResponseTrailers {
    let mut trailers = echoed(request);
    trailers.insert(SERVER_TRAILER_MD_KEY, SERVER_TRAILER_VALUE.parse().unwrap());
    ResponseTrailers(trailers)
}

fn echoed(request: &MetadataMap) -> MetadataMap {
    let mut out = http::HeaderMap::new();
    for (name, value) in request.as_ref() {
        if name.as_str().starts_with(ECHO_PREFIX) {
            out.append(name.clone(), value.clone());
        }
    }
    MetadataMap::from_headers(out)
}

fn with_metadata<T>(message: T, headers: MetadataMap, trailers: ResponseTrailers) -> Response<T> {
    let mut response = Response::new(message);
    *response.metadata_mut() = headers;
    response.extensions_mut().insert(trailers);
    response
}

#[tonic::async_trait]
impl TestService for PingService {
    async fn ping_empty(&self, request: Request<Empty>) -> Result<Response<PingResponse>, Status> {
        let guard = self.begin(request.metadata());
        guard.complete();
        if request.metadata().get(CLIENT_MD_KEY).is_none() {
            return Err(Status::failed_precondition(
                "PingEmpty call must have clients's custom headers in metadata",
            ));
        }
        let mut response = Response::new(PingResponse {
            value: PING_DEFAULT_VALUE.into(),
            counter: 42 + self.counter_offset,
            payload: Default::default(),
        });
        *response.metadata_mut() = self.response_headers(request.metadata());
        Ok(response)
    }

    async fn ping(&self, request: Request<PingRequest>) -> Result<Response<PingResponse>, Status> {
        let guard = self.begin(request.metadata());
        let headers = self.response_headers(request.metadata());
        let trailers = response_trailers(request.metadata());
        let ping = request.into_inner();
        if ping.sleep_ms > 0 {
            tokio::time::sleep(Duration::from_millis(ping.sleep_ms.into())).await;
        }
        guard.complete();
        if ping.error_code != 0 {
            return Err(Status::with_metadata(
                Code::from_i32(ping.error_code),
                format!("error requested: {}", ping.value),
                headers,
            ));
        }
        Ok(with_metadata(
            PingResponse {
                value: ping.value,
                counter: 42 + self.counter_offset,
                payload: ping.payload,
            },
            headers,
            trailers,
        ))
    }

    async fn ping_error(&self, request: Request<PingRequest>) -> Result<Response<Empty>, Status> {
        self.begin(request.metadata()).complete();
        Err(Status::failed_precondition("Userspace error."))
    }

    type PingListStream = ResponseStream;

    async fn ping_list(
        &self,
        request: Request<PingRequest>,
    ) -> Result<Response<ResponseStream>, Status> {
        let guard = self.begin(request.metadata());
        let headers = self.response_headers(request.metadata());
        let trailers = response_trailers(request.metadata());
        let ping = request.into_inner();
        let offset = self.counter_offset;
        let stream = async_stream(move |tx| async move {
            for counter in 0..LIST_RESPONSES {
                if ping.sleep_ms > 0 {
                    tokio::time::sleep(Duration::from_millis(ping.sleep_ms.into())).await;
                }
                let reply = PingResponse {
                    value: ping.value.clone(),
                    counter: counter + offset,
                    payload: ping.payload.clone(),
                };
                if tx.send(Ok(reply)).await.is_err() {
                    return;
                }
                if ping.error_code != 0 && counter == 1 {
                    guard.complete();
                    let status =
                        Status::new(Code::from_i32(ping.error_code), "error after two responses");
                    let _ = tx.send(Err(status)).await;
                    return;
                }
            }
            guard.complete();
        });
        Ok(with_metadata(stream, headers, trailers))
    }

    async fn ping_client_stream(
        &self,
        request: Request<Streaming<PingRequest>>,
    ) -> Result<Response<PingResponse>, Status> {
        let guard = self.begin(request.metadata());
        let headers = self.response_headers(request.metadata());
        let trailers = response_trailers(request.metadata());
        let mut pings = request.into_inner();
        let mut values = Vec::new();
        let mut payload = Vec::new();
        while let Some(ping) = pings.next().await {
            let ping = ping?;
            values.push(ping.value);
            payload.extend_from_slice(&ping.payload);
        }
        guard.complete();
        Ok(with_metadata(
            PingResponse {
                value: values.join(","),
                counter: values.len() as i32 + self.counter_offset,
                payload,
            },
            headers,
            trailers,
        ))
    }

    type PingStreamStream = ResponseStream;

    async fn ping_stream(
        &self,
        request: Request<Streaming<PingRequest>>,
    ) -> Result<Response<ResponseStream>, Status> {
        let guard = self.begin(request.metadata());
        let headers = self.response_headers(request.metadata());
        let trailers = response_trailers(request.metadata());
        let mut pings = request.into_inner();
        // Headers go out as soon as this returns, before any message: the client may wait
        // for them before it sends anything.
        let offset = self.counter_offset;
        let stream = async_stream(move |tx| async move {
            let mut counter = offset;
            while let Some(ping) = pings.next().await {
                match ping {
                    Ok(ping) => {
                        let reply = PingResponse {
                            value: ping.value,
                            counter,
                            payload: ping.payload,
                        };
                        if tx.send(Ok(reply)).await.is_err() {
                            return;
                        }
                        counter += 1;
                    }
                    // The client's stream failed (reset): the call is over, not completed.
                    Err(_) => return,
                }
            }
            guard.complete();
        });
        Ok(with_metadata(stream, headers, trailers))
    }
}

/// A response stream fed by a task; the task (and what it holds) is dropped with the stream.
fn async_stream<F, Fut>(produce: F) -> ResponseStream
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<PingResponse, Status>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let task = tokio::spawn(produce(tx));
    let abort = AbortOnDrop(task);
    Box::pin(
        tokio_stream::wrappers::ReceiverStream::new(rx).map(move |item| {
            let _keep = &abort;
            item
        }),
    )
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The `Echo` service: answers `local:<value>`, for serving next to proxied services.
#[derive(Debug, Clone, Copy, Default)]
pub struct EchoService;

#[tonic::async_trait]
impl crate::pb::echo_server::Echo for EchoService {
    async fn echo(&self, request: Request<PingRequest>) -> Result<Response<PingResponse>, Status> {
        let ping = request.into_inner();
        Ok(Response::new(PingResponse {
            value: format!("local:{}", ping.value),
            counter: 1,
            payload: ping.payload,
        }))
    }
}
