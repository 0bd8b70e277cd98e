//! A scripted HTTP/2 backend that answers each call by its index and records what it
//! received: exact request bytes, `grpc-previous-rpc-attempts`, arrival time.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use grpcproxy_testing::raw::{
    frames_body, grpc_response, header_map, read_request, RawBackend, RawBody,
};
use http::Response;
use http_body::Frame;

/// What the backend does with the try at this index (0 for the first call it sees).
#[derive(Clone, Copy)]
pub enum Answer {
    /// Trailers-only with this `grpc-status` and, optionally, `grpc-retry-pushback-ms`.
    Fail(&'static str, Option<&'static str>),
    /// Waits, then fails with UNAVAILABLE.
    SlowFail(Duration),
    /// Waits, then echoes.
    SlowEcho(Duration),
    /// Echoes the request's bytes, then OK in trailers.
    Echo,
}

/// The script of a backend that fails its first `N` calls with UNAVAILABLE, then echoes.
pub fn fails_then_echoes<const N: usize>(i: usize) -> Answer {
    if i < N {
        Answer::Fail("14", None)
    } else {
        Answer::Echo
    }
}

/// One try as the backend received it.
#[derive(Debug, Clone)]
pub struct Try {
    pub at: Instant,
    pub body: Bytes,
    pub previous_attempts: Option<String>,
}

/// A backend that answers tries by `script` and records them.
pub async fn scripted(script: fn(usize) -> Answer) -> (RawBackend, Arc<Mutex<Vec<Try>>>) {
    let (backend, tries, _) = scripted_counting_cancels(script).await;
    (backend, tries)
}

/// Counts itself when dropped before `done`: a call the client (the proxy) cancelled.
struct CancelCount(Arc<AtomicUsize>, bool);

impl CancelCount {
    fn done(&mut self) {
        self.1 = true;
    }
}

impl Drop for CancelCount {
    fn drop(&mut self) {
        if !self.1 {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// Like [`scripted`], also counting the calls cancelled before they were answered (the
/// backend's handler dropped on RST_STREAM).
pub async fn scripted_counting_cancels(
    script: fn(usize) -> Answer,
) -> (RawBackend, Arc<Mutex<Vec<Try>>>, Arc<AtomicUsize>) {
    let tries = Arc::new(Mutex::new(Vec::new()));
    let cancelled = Arc::new(AtomicUsize::new(0));
    let seen = tries.clone();
    let counter = cancelled.clone();
    let backend = RawBackend::start(move |request: http::Request<hyper::body::Incoming>| {
        let seen = seen.clone();
        let mut guard = CancelCount(counter.clone(), false);
        async move {
            let at = Instant::now();
            let previous_attempts = request
                .headers()
                .get("grpc-previous-rpc-attempts")
                .map(|v| v.to_str().unwrap().to_owned());
            let (body, _) = read_request(request.into_body()).await.unwrap_or_default();
            let index = {
                let mut seen = seen.lock().unwrap();
                seen.push(Try {
                    at,
                    body: body.clone(),
                    previous_attempts,
                });
                seen.len() - 1
            };
            let response = answer(script(index), body).await;
            guard.done();
            response
        }
    })
    .await;
    (backend, tries, cancelled)
}

async fn answer(answer: Answer, body: Bytes) -> Response<RawBody> {
    match answer {
        Answer::Fail(code, pushback) => trailers_only(code, pushback),
        Answer::SlowFail(wait) => {
            tokio::time::sleep(wait).await;
            trailers_only("14", None)
        }
        Answer::SlowEcho(wait) => {
            tokio::time::sleep(wait).await;
            echo(body)
        }
        Answer::Echo => echo(body),
    }
}

fn trailers_only(code: &str, pushback: Option<&str>) -> Response<RawBody> {
    let mut response = grpc_response(frames_body(Vec::new()));
    response
        .headers_mut()
        .insert("grpc-status", code.parse().unwrap());
    if let Some(pushback) = pushback {
        response
            .headers_mut()
            .insert("grpc-retry-pushback-ms", pushback.parse().unwrap());
    }
    response
}

fn echo(body: Bytes) -> Response<RawBody> {
    grpc_response(frames_body(vec![
        Frame::data(body),
        Frame::trailers(header_map(&[("grpc-status", "0")])),
    ]))
}
