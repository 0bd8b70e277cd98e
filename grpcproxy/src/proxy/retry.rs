//! The retry step around send: the request is kept (up to the policy's buffer) as it goes
//! out, and sent again to the next endpoint while the policy, the budget, the backend's
//! pushback and the call's deadline allow.

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery};
use http::{Method, Request, Version};
use http_body::{Body, Frame};
use tokio::time::Instant;
use tonic::Code;

use super::call_state::{AbortReason, CallState};
use super::send::{Route, Sent};
use crate::boxed::{BoxBody, BoxError};
use crate::deadline::format_timeout;
use crate::policy::retry::Skipped;
use crate::policy::RetryPolicy;

const PREVIOUS_ATTEMPTS: HeaderName = HeaderName::from_static("grpc-previous-rpc-attempts");
const PUSHBACK: HeaderName = HeaderName::from_static("grpc-retry-pushback-ms");
const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

/// A frame kept to be sent again.
enum Kept {
    Data(Bytes),
    Trailers(HeaderMap),
}

/// The client's request body, with what it yielded so far kept for the next try.
struct Recording {
    inner: BoxBody,
    kept: Vec<Kept>,
    /// Frames taken from `inner` so far.
    taken: usize,
    bytes: usize,
    limit: usize,
    /// More than `limit` bytes went by: `kept` was dropped, no try can start again.
    overflowed: bool,
    /// `inner` failed: no try can start again.
    failed: bool,
    /// The try whose body may be polled; older tries' bodies fail, resetting their streams.
    attempt: u32,
}

/// The request of a call that may be retried: each try gets a [`ReplayBody`].
#[derive(Clone)]
pub(super) struct Replay(Arc<Mutex<Recording>>);

impl std::fmt::Debug for Replay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Replay")
    }
}

impl Replay {
    /// Keeps up to `limit` bytes of `body` as it is sent.
    pub(super) fn new(body: BoxBody, limit: usize) -> Self {
        Self(Arc::new(Mutex::new(Recording {
            inner: body,
            kept: Vec::new(),
            taken: 0,
            bytes: 0,
            limit,
            overflowed: false,
            failed: false,
            attempt: 1,
        })))
    }

    fn lock(&self) -> MutexGuard<'_, Recording> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The body of try number `attempt` (1 for the first); the bodies of earlier tries fail
    /// from now on. `None` when the request can no longer be sent whole.
    fn body_for(&self, attempt: u32) -> Option<ReplayBody> {
        let mut recording = self.lock();
        if recording.overflowed || recording.failed {
            return None;
        }
        recording.attempt = attempt;
        Some(ReplayBody {
            replay: self.clone(),
            attempt,
            next: 0,
        })
    }

    /// Whether another try could send the request whole.
    fn replayable(&self) -> bool {
        let recording = self.lock();
        !recording.overflowed && !recording.failed
    }
}

/// One try's request body: the kept frames, then the rest of the client's body.
pub(super) struct ReplayBody {
    replay: Replay,
    attempt: u32,
    /// The next frame this try sends, counted from the request's first.
    next: usize,
}

/// The error that ends an earlier try's request stream (reset with CANCEL).
fn superseded() -> BoxError {
    Box::new(h2::Error::from(h2::Reason::CANCEL))
}

impl Body for ReplayBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let mut recording = this.replay.lock();
        if recording.attempt != this.attempt {
            return Poll::Ready(Some(Err(superseded())));
        }
        if this.next < recording.taken {
            let frame = match recording.kept.get(this.next) {
                Some(Kept::Data(data)) => Frame::data(data.clone()),
                Some(Kept::Trailers(trailers)) => Frame::trailers(trailers.clone()),
                None => return Poll::Ready(Some(Err(superseded()))),
            };
            this.next += 1;
            return Poll::Ready(Some(Ok(frame)));
        }
        let recording = &mut *recording;
        let frame = match std::task::ready!(Pin::new(&mut recording.inner).poll_frame(cx)) {
            Some(Ok(frame)) => frame,
            Some(Err(e)) => {
                recording.failed = true;
                return Poll::Ready(Some(Err(e)));
            }
            None => return Poll::Ready(None),
        };
        recording.taken += 1;
        this.next = recording.taken;
        if !recording.overflowed {
            let kept = if let Some(data) = frame.data_ref() {
                recording.bytes += data.len();
                Kept::Data(data.clone())
            } else if let Some(trailers) = frame.trailers_ref() {
                Kept::Trailers(trailers.clone())
            } else {
                return Poll::Ready(Some(Ok(frame)));
            };
            if recording.bytes > recording.limit {
                recording.overflowed = true;
                recording.kept = Vec::new();
            } else {
                recording.kept.push(kept);
            }
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        let recording = self.replay.lock();
        recording.attempt == self.attempt
            && self.next >= recording.taken
            && recording.inner.is_end_stream()
    }
}

/// What the client's request looks like, to make each try's.
#[derive(Debug)]
pub(super) struct Retrying {
    pub(super) policy: Arc<RetryPolicy>,
    pub(super) replay: Replay,
    pub(super) headers: HeaderMap,
}

impl Retrying {
    /// The retry state of a call with `policy`, and the first try's request body.
    pub(super) fn new(
        policy: Arc<RetryPolicy>,
        body: BoxBody,
        headers: &HeaderMap,
    ) -> (Self, BoxBody) {
        let replay = Replay::new(body, policy.buffer_limit());
        let first = replay.body_for(1).expect("a new recording is whole");
        let retrying = Self {
            policy,
            replay,
            headers: headers.clone(),
        };
        (retrying, BoxBody::new(first))
    }
}

/// The `grpc-status` of a trailers-only answer.
fn status_of(headers: &HeaderMap) -> Option<Code> {
    let code = headers
        .get("grpc-status")?
        .to_str()
        .ok()?
        .parse::<i32>()
        .ok()?;
    Some(Code::from_i32(code))
}

/// The backend's pushback: `Some(Ok(wait))`, `Some(Err(()))` for "do not retry" (negative
/// or unreadable), `None` when it sent none.
fn pushback(headers: &HeaderMap) -> Option<Result<std::time::Duration, ()>> {
    let value = headers.get(PUSHBACK)?;
    let ms = value
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse::<i64>().ok());
    Some(match ms {
        Some(ms) if ms >= 0 => Ok(std::time::Duration::from_millis(ms as u64)),
        _ => Err(()),
    })
}

impl Route {
    /// Sends `request` and, while the policy allows, sends it again to the next endpoint.
    /// The last try's answer is the call's; a last try cut by the per-try timeout ends the
    /// call with [`AbortReason::TryTimeout`].
    pub(super) async fn send_retrying(
        &self,
        retrying: &Retrying,
        first: Request<BoxBody>,
        path: &PathAndQuery,
        client_authority: &Option<Authority>,
        call: &CallState,
    ) -> Result<Sent, AbortReason> {
        let policy = &retrying.policy;
        if let Some(budget) = policy.retry_budget() {
            budget.deposit();
        }
        let mut request = first;
        let mut attempt = 1;
        loop {
            let (to, alternate) = self.endpoints_for(attempt);
            let send = self.send_to(to, alternate, request, path, client_authority, call);
            let tried = match policy.try_timeout() {
                Some(timeout) => tokio::time::timeout(timeout, send).await.ok(),
                None => Some(send.await),
            };
            let (code, headers) = match &tried {
                None => (Code::DeadlineExceeded, None),
                Some(Ok((response, _))) if response.body().is_end_stream() => {
                    match status_of(response.headers()) {
                        Some(code) => (code, Some(response.headers())),
                        None => return Ok(tried.expect("matched Some")),
                    }
                }
                // Response headers: the answer goes to the client as it comes.
                Some(Ok(_)) => return Ok(tried.expect("matched Some")),
                Some(Err(error)) => (error.to_status().code(), None),
            };
            let finish = |tried: Option<Sent>| tried.ok_or(AbortReason::TryTimeout);
            let retryable = tried.is_none() || policy.retries_on(code);
            if !retryable || attempt >= policy.attempts() || call.abort_reason().is_some() {
                return finish(tried);
            }
            let wait = match headers.and_then(pushback) {
                Some(Ok(wait)) => wait,
                Some(Err(())) => {
                    policy.stats().skipped(Skipped::Pushback);
                    return finish(tried);
                }
                None => policy.backoff_before(attempt),
            };
            let skipped = if self.deadline.is_some_and(|d| Instant::now() + wait >= d) {
                Some(Skipped::Deadline)
            } else if !retrying.replay.replayable() {
                Some(Skipped::Buffer)
            } else if policy.retry_budget().is_some_and(|b| !b.try_withdraw()) {
                Some(Skipped::Budget)
            } else {
                None
            };
            // From here the earlier try's request stream fails (and is reset).
            let next_body = match skipped {
                None => retrying.replay.body_for(attempt + 1).ok_or(Skipped::Buffer),
                Some(why) => Err(why),
            };
            let body = match next_body {
                Ok(body) => body,
                Err(why) => {
                    policy.stats().skipped(why);
                    return finish(tried);
                }
            };
            policy.stats().retried();
            tracing::debug!(attempt, ?code, ?wait, "retrying the call");
            drop(tried); // an answer not taken: its backend stream is released
            tokio::time::sleep(wait).await;
            attempt += 1;
            let (to, _) = self.endpoints_for(attempt);
            request = self.retry_request(retrying, to, body, attempt, path, client_authority);
        }
    }

    /// The request of try number `attempt` to `to`: the client's metadata with
    /// `grpc-previous-rpc-attempts` and the time left as `grpc-timeout`.
    fn retry_request(
        &self,
        retrying: &Retrying,
        to: &crate::Upstream,
        body: ReplayBody,
        attempt: u32,
        path: &PathAndQuery,
        client_authority: &Option<Authority>,
    ) -> Request<BoxBody> {
        let mut headers = retrying.headers.clone();
        headers.insert(PREVIOUS_ATTEMPTS, HeaderValue::from(attempt - 1));
        if let Some(deadline) = self.deadline {
            let remaining = deadline.saturating_duration_since(Instant::now());
            headers.insert(GRPC_TIMEOUT, format_timeout(remaining));
        }
        let mut request = Request::new(BoxBody::new(body));
        *request.method_mut() = Method::POST;
        *request.version_mut() = Version::HTTP_2;
        *request.uri_mut() = to.request_uri(
            path.clone(),
            self.authority.clone(),
            client_authority.clone(),
        );
        *request.headers_mut() = headers;
        request
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::messages::tests::data_frames;
    use http_body_util::BodyExt;

    async fn collect(body: ReplayBody) -> Result<Vec<Bytes>, BoxError> {
        let mut body = std::pin::pin!(body);
        let mut out = Vec::new();
        while let Some(frame) = body.frame().await {
            out.push(frame?.into_data().unwrap());
        }
        Ok(out)
    }

    #[tokio::test]
    async fn a_retry_sends_the_same_frames_and_supersedes_the_first_try() {
        let replay = Replay::new(BoxBody::new(data_frames(&[b"ab", b"cd"])), 1024);
        let mut first = replay.body_for(1).unwrap();
        let frame = std::pin::pin!(&mut first).frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), &b"ab"[..]);
        let second = replay.body_for(2).unwrap();
        assert!(
            collect(first).await.is_err(),
            "the first try's body fails once superseded"
        );
        assert_eq!(collect(second).await.unwrap(), [&b"ab"[..], &b"cd"[..]]);
    }

    #[tokio::test]
    async fn a_request_over_the_buffer_cannot_be_sent_again() {
        let replay = Replay::new(BoxBody::new(data_frames(&[b"abc", b"def"])), 4);
        let first = replay.body_for(1).unwrap();
        assert_eq!(collect(first).await.unwrap().len(), 2);
        assert!(!replay.replayable());
        assert!(replay.body_for(2).is_none());
    }

    #[test]
    fn pushback_values() {
        let with = |v: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(PUSHBACK, HeaderValue::from_static(v));
            pushback(&headers)
        };
        assert_eq!(with("200"), Some(Ok(std::time::Duration::from_millis(200))));
        assert_eq!(with("-1"), Some(Err(())));
        assert_eq!(with("soon"), Some(Err(())));
        assert_eq!(pushback(&HeaderMap::new()), None);
    }
}
