//! A request that can be sent more than once: what the client sent so far is kept (up to a
//! limit) as it goes out, so a retry or a hedge sends the same bytes, and the tries that
//! lost are cut.

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery};
use http::{Method, Request, Version};
use http_body::{Body, Frame};
use tokio::time::Instant;

use crate::boxed::{BoxBody, BoxError};
use crate::deadline::format_timeout;
use crate::headers::GRPC_TIMEOUT;
use crate::policy::{HedgePolicy, RetryPolicy};

const PREVIOUS_ATTEMPTS: HeaderName = HeaderName::from_static("grpc-previous-rpc-attempts");

/// Request bytes a hedged call keeps to send again (retries set their own).
const HEDGE_BUFFER: usize = 64 << 10;

/// A frame kept to be sent again.
enum Kept {
    Data(Bytes),
    Trailers(HeaderMap),
}

/// The frames kept, the first one inline: a unary request (one DATA frame) is kept without
/// an allocation of its own.
#[derive(Default)]
struct KeptFrames {
    first: Option<Kept>,
    rest: Vec<Kept>,
}

impl KeptFrames {
    fn get(&self, i: usize) -> Option<&Kept> {
        match i {
            0 => self.first.as_ref(),
            i => self.rest.get(i - 1),
        }
    }

    fn push(&mut self, frame: Kept) {
        if self.first.is_none() {
            self.first = Some(frame);
        } else {
            self.rest.push(frame);
        }
    }
}

/// The client's request body, with what it yielded so far kept for the next try.
struct Recording {
    inner: BoxBody,
    kept: KeptFrames,
    /// Frames taken from `inner` so far.
    taken: usize,
    bytes: usize,
    limit: usize,
    /// More than `limit` bytes went by: `kept` was dropped, no try can start again.
    overflowed: bool,
    /// `inner` failed: no try can start again.
    failed: bool,
    /// `inner` ended.
    ended: bool,
    /// The one try whose body may still be polled, once one is chosen (a retry, or a
    /// hedge's winner); the others' bodies fail, resetting their streams.
    only: Option<u32>,
    /// Tries (hedges) waiting for the client's next frame, woken when another try took it.
    waiters: Vec<Waker>,
}

/// A call sent more than once: its request, kept as it goes, its metadata and policy, all in
/// one allocation shared with every try's [`ReplayBody`].
#[derive(Clone)]
pub(super) struct Resend(Arc<Shared>);

struct Shared {
    recording: Mutex<Recording>,
    policy: ResendPolicy,
    headers: HeaderMap,
    path: PathAndQuery,
    /// The `:authority` the director chose, and the client's.
    authority: Option<Authority>,
    client_authority: Option<Authority>,
}

impl std::fmt::Debug for Resend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resend")
            .field("policy", &self.0.policy)
            .finish_non_exhaustive()
    }
}

/// Where the tries of a call go: its path, and the authorities each try's URI is made with.
#[derive(Debug)]
pub(super) struct Destination {
    pub(super) path: PathAndQuery,
    pub(super) authority: Option<Authority>,
    pub(super) client_authority: Option<Authority>,
}

impl Resend {
    /// The state of a call sent under `policy`, and the first try's request body.
    pub(super) fn new(
        policy: ResendPolicy,
        body: BoxBody,
        headers: &HeaderMap,
        destination: Destination,
    ) -> (Self, BoxBody) {
        let limit = match &policy {
            ResendPolicy::Retry(retry) => retry.buffer_limit(),
            ResendPolicy::Hedge(_) => HEDGE_BUFFER,
        };
        let resend = Self(Arc::new(Shared {
            recording: Mutex::new(Recording {
                inner: body,
                kept: KeptFrames::default(),
                taken: 0,
                bytes: 0,
                limit,
                overflowed: false,
                failed: false,
                ended: false,
                only: None,
                waiters: Vec::new(),
            }),
            policy,
            headers: headers.clone(),
            path: destination.path,
            authority: destination.authority,
            client_authority: destination.client_authority,
        }));
        let first = resend.body_alongside(1).expect("a new recording is whole");
        (resend, BoxBody::new(first))
    }

    /// How the call is sent more than once.
    pub(super) fn policy(&self) -> &ResendPolicy {
        &self.0.policy
    }

    /// The retry policy, when the call is retried (rather than hedged).
    pub(super) fn retry_policy(&self) -> Option<&Arc<RetryPolicy>> {
        match &self.0.policy {
            ResendPolicy::Retry(policy) => Some(policy),
            ResendPolicy::Hedge(_) => None,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Recording> {
        self.0.recording.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The body of try number `attempt` (1 for the first); the bodies of earlier tries fail
    /// from now on. `None` when the request can no longer be sent whole.
    pub(super) fn body_for(&self, attempt: u32) -> Option<ReplayBody> {
        let body = self.body(attempt, false)?;
        self.keep_only(attempt);
        Some(body)
    }

    /// The body of try number `attempt`, sent alongside the others (a hedge). `None` when
    /// the request can no longer be sent whole, or one try was kept already.
    pub(super) fn body_alongside(&self, attempt: u32) -> Option<ReplayBody> {
        self.body(attempt, true)
    }

    fn body(&self, attempt: u32, alongside: bool) -> Option<ReplayBody> {
        let recording = self.lock();
        if recording.overflowed || recording.failed || (alongside && recording.only.is_some()) {
            return None;
        }
        Some(ReplayBody {
            resend: self.clone(),
            attempt,
            next: 0,
        })
    }

    /// From now on only try number `attempt` may send: the others' request streams fail.
    pub(super) fn keep_only(&self, attempt: u32) {
        let mut recording = self.lock();
        recording.only = Some(attempt);
        for waiter in recording.waiters.drain(..) {
            waiter.wake();
        }
    }

    /// Whether another try could send the request whole.
    pub(super) fn replayable(&self) -> bool {
        let recording = self.lock();
        !recording.overflowed && !recording.failed
    }

    /// The request of try number `attempt` (a retry or a hedge) to `to`: the client's
    /// metadata with `grpc-previous-rpc-attempts` and the time left until `deadline` as
    /// `grpc-timeout`.
    pub(super) fn request_for(
        &self,
        to: &crate::Upstream,
        body: ReplayBody,
        attempt: u32,
        deadline: Option<Instant>,
    ) -> Request<BoxBody> {
        let shared = &self.0;
        let mut headers = shared.headers.clone();
        headers.insert(PREVIOUS_ATTEMPTS, HeaderValue::from(attempt - 1));
        if let Some(deadline) = deadline {
            let remaining = deadline.saturating_duration_since(Instant::now());
            headers.insert(GRPC_TIMEOUT, format_timeout(remaining));
        }
        let mut request = Request::new(BoxBody::new(body));
        *request.method_mut() = Method::POST;
        *request.version_mut() = Version::HTTP_2;
        *request.uri_mut() = to.request_uri(
            shared.path.clone(),
            shared.authority.clone(),
            shared.client_authority.clone(),
        );
        *request.headers_mut() = headers;
        request
    }
}

/// One try's request body: the kept frames, then the rest of the client's body.
pub(super) struct ReplayBody {
    resend: Resend,
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
        let mut recording = this.resend.lock();
        if recording.only.is_some_and(|only| only != this.attempt) {
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
        if recording.ended {
            return Poll::Ready(None);
        }
        let recording = &mut *recording;
        let polled = Pin::new(&mut recording.inner).poll_frame(cx);
        let frame = match polled {
            Poll::Pending => {
                // Another try may take the frame first: it wakes this one then.
                if !recording.waiters.iter().any(|w| w.will_wake(cx.waker())) {
                    recording.waiters.push(cx.waker().clone());
                }
                return Poll::Pending;
            }
            Poll::Ready(Some(Ok(frame))) => frame,
            Poll::Ready(Some(Err(e))) => {
                recording.failed = true;
                return Poll::Ready(Some(Err(e)));
            }
            Poll::Ready(None) => {
                recording.ended = true;
                recording.waiters.drain(..).for_each(Waker::wake);
                return Poll::Ready(None);
            }
        };
        recording.waiters.drain(..).for_each(Waker::wake);
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
                recording.kept = KeptFrames::default();
            } else {
                recording.kept.push(kept);
            }
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        let recording = self.resend.lock();
        recording.only.is_none_or(|only| only == self.attempt)
            && self.next >= recording.taken
            && (recording.ended || recording.inner.is_end_stream())
    }
}

/// How a call is sent more than once.
#[derive(Debug)]
pub(super) enum ResendPolicy {
    Retry(Arc<RetryPolicy>),
    Hedge(Arc<HedgePolicy>),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::messages::tests::data_frames;
    use http_body_util::BodyExt;

    fn recording(chunks: &[&[u8]], limit: usize) -> Resend {
        let policy = RetryPolicy::new([], 2).buffer_bytes(limit);
        let destination = Destination {
            path: PathAndQuery::from_static("/a.S/M"),
            authority: None,
            client_authority: None,
        };
        let body = BoxBody::new(data_frames(chunks));
        let policy = ResendPolicy::Retry(Arc::new(policy));
        Resend::new(policy, body, &HeaderMap::new(), destination).0
    }

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
        let replay = recording(&[b"ab", b"cd"], 1024);
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
        let replay = recording(&[b"abc", b"def"], 4);
        let first = replay.body_for(1).unwrap();
        assert_eq!(collect(first).await.unwrap().len(), 2);
        assert!(!replay.replayable());
        assert!(replay.body_for(2).is_none());
    }
}
