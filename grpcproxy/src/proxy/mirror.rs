//! A call's mirror: the copy of its request on its way to the shadow (a [`CopySender`]),
//! the primary's answer kept for the comparison ([`MirrorWatch`]), and the task that makes
//! the shadow call and counts what it came to. Nothing here waits on the primary's path:
//! the copy is queued without blocking and given up when its buffer is full.

use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use http::uri::{Authority, PathAndQuery};
use http::{HeaderMap, HeaderValue, Request};
use http_body::Body;
use http_body_util::BodyExt;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::request_copy::{request_copy_settled_later, CopySender, CopyWatch, Settle};
use crate::boxed::{BoxBody, BoxError};
use crate::compare::{differences, Answer, Message};
use crate::mq::tap::CallTap;
use crate::mq::{MirrorReport, TapEvent};
use crate::policy::mirror::InFlightMirror;
use crate::policy::{Mirror, MirrorResult};

/// The header every mirrored call carries, so the shadow can tell it from real traffic.
const MIRROR_HEADER: &str = "x-grpcproxy-mirror";

/// Starts mirroring a call whose upstream request has `headers` and goes to `path`: spawns
/// the shadow call and returns the feed for the request body and the watch for the
/// call's state. `None` (counted `dropped`) when the policy has no room for another mirror.
pub(super) fn start(
    mirror: Mirror,
    headers: &HeaderMap,
    path: &PathAndQuery,
    client_authority: Option<Authority>,
    deadline: Option<Instant>,
    tap: Option<&Arc<CallTap>>,
) -> Option<(CopySender, MirrorWatch)> {
    let Mirror {
        policy,
        upstream,
        guard,
    } = mirror;
    let Some(flight) = policy.enter() else {
        policy.stats().record(MirrorResult::Dropped);
        return None;
    };
    // The primary may answer before the client's half-close and read no more (a unary
    // call's END_STREAM in a frame of its own): the shadow then gets what it got.
    let (feed, body, settle) = request_copy_settled_later(policy.buffer_limit());
    let cut = body.cut();
    let mut request = Request::new(BoxBody::new(body));
    *request.method_mut() = http::Method::POST;
    *request.version_mut() = http::Version::HTTP_2;
    *request.uri_mut() = upstream.request_uri(path.clone(), None, client_authority);
    *request.headers_mut() = headers.clone();
    request
        .headers_mut()
        .insert(MIRROR_HEADER, HeaderValue::from_static("1"));
    let (primary_tx, primary_rx) = oneshot::channel();
    let compare = policy.compares();
    let deadline = deadline.unwrap_or_else(|| Instant::now() + policy.timeout_without_deadline());
    let shadow = Shadow {
        flight,
        path: path.clone(),
        feed: feed.watch(),
        tap: tap.filter(|_| policy.publishes()).cloned(),
        _guard: guard,
    };
    tokio::spawn(async move {
        let outcome = shadow
            .run(&upstream, request, cut, deadline, primary_rx)
            .await;
        // Published before it is counted: a count seen means the report is on its way.
        if let Some(tap) = &shadow.tap {
            tap.publish(TapEvent::Mirror(MirrorReport {
                call_id: tap.call_id,
                method: shadow.path.path().to_owned(),
                backend: upstream.address().to_owned(),
                result: outcome.result,
                first_differing_byte: outcome
                    .differences
                    .iter()
                    .find_map(|d| d.first_byte())
                    .map(|b| b as u64),
                differences: outcome
                    .differences
                    .iter()
                    .map(|d| d.describe("primary", "mirror"))
                    .collect(),
            }));
        }
        shadow.flight.policy().stats().record(outcome.result);
    });
    let watch = MirrorWatch {
        capture: compare.then(|| Mutex::new(Capture::new(policy.compare_limit()))),
        primary: primary_tx,
        answered: AtomicBool::new(false),
        settle,
    };
    Some((feed, watch))
}

/// The primary's answer as the comparison needs it, kept as it goes by.
#[derive(Debug)]
struct Capture {
    frames: Vec<Bytes>,
    held: usize,
    limit: usize,
    /// More than `limit` bytes: not compared.
    too_long: bool,
    trailers: Option<HeaderMap>,
}

impl Capture {
    fn new(limit: usize) -> Self {
        Self {
            frames: Vec::new(),
            held: 0,
            limit,
            too_long: false,
            trailers: None,
        }
    }

    /// Keeps `data` (a reference), or gives up past the limit.
    fn keep(&mut self, data: &Bytes) {
        if self.too_long {
            return;
        }
        self.held += data.len();
        if self.held > self.limit {
            self.too_long = true;
            self.frames = Vec::new();
        } else {
            self.frames.push(data.clone());
        }
    }
}

/// How the primary ended, as the shadow's task learns it.
#[derive(Debug)]
enum PrimaryEnd {
    /// Its answer, to compare.
    Answer(Answer),
    /// Not compared: comparison off, or the answer was longer than the limit.
    NotCompared,
}

/// The mirror's watch on the primary call, kept in the call's state.
#[derive(Debug)]
pub(crate) struct MirrorWatch {
    /// The primary's answer so far; `None` when the policy does not compare.
    capture: Option<Mutex<Capture>>,
    primary: oneshot::Sender<PrimaryEnd>,
    /// The primary's backend answered (its trailers went by).
    answered: AtomicBool,
    /// How the copy ends if the primary stopped reading the request before its end.
    settle: Settle,
}

impl MirrorWatch {
    /// A response DATA frame the primary forwards to the client.
    pub(crate) fn response_data(&self, data: &Bytes) {
        if let Some(capture) = &self.capture {
            capture.lock().expect("mirror capture poisoned").keep(data);
        }
    }

    /// The primary's trailers (or trailers-only response headers).
    pub(crate) fn response_trailers(&self, trailers: &HeaderMap) {
        self.answered.store(true, Ordering::Relaxed);
        if let Some(capture) = &self.capture {
            capture.lock().expect("mirror capture poisoned").trailers = Some(trailers.clone());
        }
    }

    /// The primary call is over: with `code` when it completed, `None` when the proxy or
    /// the client ended it (the shadow's call is then cancelled).
    pub(crate) fn primary_ended(self, code: Option<tonic::Code>) {
        let Some(code) = code else {
            return; // dropping the sender and the settle cancels the shadow's call
        };
        if self.answered.load(Ordering::Relaxed) {
            self.settle.completed();
        }
        let capture = self.capture.map(|c| {
            c.into_inner()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
        });
        let end = match capture {
            Some(capture) if !capture.too_long => {
                let mut answer = answer(capture.frames, capture.trailers.as_ref());
                // The status the client got (the proxy's own when it ended the call).
                answer.code = code as i32;
                PrimaryEnd::Answer(answer)
            }
            _ => PrimaryEnd::NotCompared,
        };
        let _ = self.primary.send(end);
    }
}

/// The shadow's call, run by a task of its own.
struct Shadow {
    flight: InFlightMirror,
    path: PathAndQuery,
    feed: CopyWatch,
    /// The call's tap, when the call is tapped and the policy publishes to it.
    tap: Option<Arc<CallTap>>,
    _guard: Option<Box<dyn std::any::Any + Send + Sync>>,
}

/// What a mirrored call came to, and how the answers differ when they do.
struct Outcome {
    result: MirrorResult,
    differences: Vec<crate::compare::Difference>,
}

impl From<MirrorResult> for Outcome {
    fn from(result: MirrorResult) -> Self {
        Self {
            result,
            differences: Vec::new(),
        }
    }
}

/// How the shadow's call went.
enum ShadowEnd {
    Answer(Answer),
    /// Answered, not kept (not compared, or past the limit).
    Answered {
        too_long: bool,
    },
    Failed(BoxError),
}

impl Shadow {
    /// Sends the shadow's call and waits for its answer, the primary's end and the
    /// comparison, all before `deadline`.
    async fn run(
        &self,
        upstream: &crate::Upstream,
        request: Request<BoxBody>,
        cut: Arc<crate::http2::PipeCut>,
        deadline: Instant,
        primary: oneshot::Receiver<PrimaryEnd>,
    ) -> Outcome {
        let policy = self.flight.policy();
        let compare = policy.compares();
        let limit = policy.compare_limit();
        let call = async {
            match upstream.try_send(request, Some(&cut)).await {
                Ok(response) => read_answer(response, compare, limit).await,
                Err(unsent) => ShadowEnd::Failed(Box::new(unsent.error)),
            }
        };
        let mut call = pin!(call);
        let mut primary = pin!(primary);
        let mut primary_end = None;
        let mut expired = pin!(tokio::time::sleep_until(deadline));
        // The shadow's answer, while the primary may end (or be cancelled) meanwhile.
        let shadow = loop {
            tokio::select! {
                shadow = &mut call => break shadow,
                end = &mut primary, if primary_end.is_none() => match end {
                    Ok(end) => primary_end = Some(end),
                    // Cancelled with the primary: dropping `call` resets the shadow's stream.
                    Err(_) => return MirrorResult::Dropped.into(),
                },
                () = &mut expired => return MirrorResult::Dropped.into(),
            }
        };
        let shadow = match shadow {
            ShadowEnd::Failed(_) if self.feed.abandoned() => return MirrorResult::Dropped.into(),
            ShadowEnd::Failed(error) => {
                tracing::debug!(method = self.path.path(), backend = upstream.address(), error = %error, "mirrored call failed");
                return MirrorResult::Error.into();
            }
            ShadowEnd::Answered { too_long: true } => return MirrorResult::Dropped.into(),
            ShadowEnd::Answered { too_long: false } => return MirrorResult::Sent.into(),
            ShadowEnd::Answer(answer) => answer,
        };
        let primary_end = match primary_end {
            Some(end) => end,
            None => tokio::select! {
                end = &mut primary => match end {
                    Ok(end) => end,
                    Err(_) => return MirrorResult::Dropped.into(),
                },
                () = &mut expired => return MirrorResult::Dropped.into(),
            },
        };
        let PrimaryEnd::Answer(primary) = primary_end else {
            return MirrorResult::Dropped.into();
        };
        let found = differences(&primary, &shadow);
        if found.is_empty() {
            return MirrorResult::Match.into();
        }
        if policy.logs_next_difference() {
            let first_byte = found.iter().find_map(|d| d.first_byte());
            let described: Vec<String> = found
                .iter()
                .map(|d| d.describe("primary", "mirror"))
                .collect();
            tracing::warn!(
                mirror = policy.label(),
                method = self.path.path(),
                backend = upstream.address(),
                first_differing_byte = first_byte,
                differences = %described.join("; "),
                "the mirror's answer differs from the primary's"
            );
        }
        Outcome {
            result: MirrorResult::Differ,
            differences: found,
        }
    }
}

/// Reads the shadow's answer: kept whole when comparing (up to `limit` bytes), else
/// read and dropped.
async fn read_answer(
    response: http::Response<crate::upstream::UpstreamBody>,
    compare: bool,
    limit: usize,
) -> ShadowEnd {
    let (head, body) = response.into_parts();
    let mut body = pin!(body);
    let mut capture = Capture::new(if compare { limit } else { 0 });
    let mut trailers = None;
    if !Body::is_end_stream(&*body) {
        while let Some(frame) = body.frame().await {
            let frame = match frame {
                Ok(frame) => frame,
                Err(error) => return ShadowEnd::Failed(error),
            };
            match frame.into_data() {
                Ok(data) => {
                    if compare {
                        capture.keep(&data);
                    }
                }
                Err(frame) => trailers = frame.into_trailers().ok(),
            }
        }
    }
    if !compare {
        return ShadowEnd::Answered { too_long: false };
    }
    if capture.too_long {
        return ShadowEnd::Answered { too_long: true };
    }
    let trailers = trailers.unwrap_or(head.headers);
    ShadowEnd::Answer(answer(capture.frames, Some(&trailers)))
}

/// An answer from its DATA frames and trailers: the messages cut from the bytes (all of
/// them as one message if they do not cut evenly), the status and trailers.
fn answer(frames: Vec<Bytes>, trailers: Option<&HeaderMap>) -> Answer {
    let body = match frames.len() {
        0 => Bytes::new(),
        1 => frames.into_iter().next().unwrap_or_default(),
        _ => {
            let mut body = BytesMut::with_capacity(frames.iter().map(Bytes::len).sum());
            frames.iter().for_each(|f| body.extend_from_slice(f));
            body.freeze()
        }
    };
    let messages = match crate::frame::split(body.clone()) {
        Ok(messages) => messages
            .into_iter()
            .map(|(header, payload)| Message::whole(header.compressed, payload))
            .collect(),
        Err(_) => vec![Message::whole(false, body)],
    };
    let empty = HeaderMap::new();
    let trailers = trailers.unwrap_or(&empty);
    let code = trailers
        .get(crate::headers::GRPC_STATUS)
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .unwrap_or(tonic::Code::Unknown as i32);
    let message = trailers
        .get(crate::headers::GRPC_MESSAGE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let others = trailers
        .iter()
        .filter(|(name, _)| !COMPARED_APART.contains(&name.as_str()))
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                Bytes::copy_from_slice(value.as_bytes()),
            )
        })
        .collect();
    Answer {
        code,
        message,
        trailers: Some(others),
        messages,
    }
}

/// Trailers compared on their own (status, message) or not part of the answer (the
/// `content-type` a trailers-only response carries).
const COMPARED_APART: [&str; 3] = ["grpc-status", "grpc-message", "content-type"];

#[cfg(test)]
mod tests {
    use super::*;

    fn grpc(messages: &[&[u8]]) -> Vec<Bytes> {
        messages
            .iter()
            .map(|m| {
                let mut frame = BytesMut::new();
                crate::frame::encode(false, m, &mut frame);
                frame.freeze()
            })
            .collect()
    }

    fn trailers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(n, v)| {
                (
                    http::HeaderName::from_static(n),
                    HeaderValue::from_static(v),
                )
            })
            .collect()
    }

    #[test]
    fn an_answer_is_its_messages_status_and_other_trailers() {
        let answer = answer(
            grpc(&[b"ab", b"c"]),
            Some(&trailers(&[
                ("grpc-status", "5"),
                ("grpc-message", "gone"),
                ("content-type", "application/grpc"),
                ("x-trace", "1"),
            ])),
        );
        assert_eq!(answer.code, 5);
        assert_eq!(answer.message, "gone");
        assert_eq!(
            answer.trailers,
            Some(vec![("x-trace".to_owned(), Bytes::from_static(b"1"))])
        );
        let payloads: Vec<&[u8]> = answer.messages.iter().map(|m| &m.payload[..]).collect();
        assert_eq!(payloads, [&b"ab"[..], &b"c"[..]]);
    }

    #[test]
    fn a_capture_past_its_limit_holds_nothing() {
        let mut capture = Capture::new(4);
        capture.keep(&Bytes::from_static(b"abc"));
        assert!(!capture.too_long);
        capture.keep(&Bytes::from_static(b"de"));
        assert!(capture.too_long);
        assert!(capture.frames.is_empty());
    }
}
