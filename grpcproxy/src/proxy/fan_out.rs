//! The send step of a fanned-out call: the request copied to every member (each with a
//! bounded buffer), the members' calls made at once, and their answers merged into the
//! one response the respond phase forwards (see [`FanOutMode`]).

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::uri::{Authority, PathAndQuery};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use tokio::task::JoinSet;
use tonic::Code;

use super::request_copy::{request_copy, CopySender, CopyWatch};
use super::send::Sent;
use crate::boxed::{BoxBody, BoxError};
use crate::policy::{FanOut, FanOutMode, FanOutResult, FanOutStats, SlowMember};
use crate::upstream::UpstreamBody;
use crate::Upstream;

/// The trailer that names the members that failed: `name=CODE`, comma-separated.
pub(crate) const FANOUT_ERRORS: HeaderName = HeaderName::from_static("x-grpcproxy-fanout-errors");

/// Sends `request` to every member of `fan` and merges their answers.
pub(super) async fn send(
    fan: FanOut,
    request: Request<BoxBody>,
    path: &PathAndQuery,
    authority: Option<Authority>,
    client_authority: Option<Authority>,
) -> Sent {
    let (mut parts, body) = request.into_parts();
    if fan.mode == FanOutMode::Concat {
        // The parts are joined byte for byte: they must not be compressed.
        parts
            .headers
            .insert("grpc-accept-encoding", HeaderValue::from_static("identity"));
    }
    let (copies, bodies): (Vec<_>, Vec<_>) = fan
        .members
        .iter()
        .map(|_| request_copy(fan.buffer_bytes))
        .unzip();
    let watches: Vec<CopyWatch> = copies.iter().map(CopySender::watch).collect();
    tokio::spawn(feed(body, copies.into_iter().map(Some).collect(), fan.slow));
    let mut calls = JoinSet::new();
    for (index, (((name, upstream), body), watch)) in
        fan.members.iter().zip(bodies).zip(watches).enumerate()
    {
        let cut = body.cut();
        let mut request = Request::new(BoxBody::new(body));
        *request.method_mut() = parts.method.clone();
        *request.version_mut() = parts.version;
        *request.headers_mut() = parts.headers.clone();
        *request.uri_mut() =
            upstream.request_uri(path.clone(), authority.clone(), client_authority.clone());
        let (name, upstream) = (name.clone(), upstream.clone());
        let limit = fan.response_bytes;
        let mode = fan.mode;
        calls.spawn(async move {
            let answer = match call(&upstream, request, cut, mode, limit).await {
                // Its stream was cut because it could not keep up with the request.
                Answer::Failed(..) if watch.abandoned() => Answer::Failed(
                    Code::ResourceExhausted,
                    "fan-out member too slow to take the request".into(),
                ),
                answer => answer,
            };
            (index, name, answer)
        });
    }
    let backend: Arc<str> = Arc::from(fan.names().collect::<Vec<_>>().join(","));
    let members = fan.members.len();
    let (response, result) = match fan.mode {
        FanOutMode::FirstSuccess => first_success(calls, members).await,
        FanOutMode::All => all(collect(calls, members).await),
        FanOutMode::Concat => concat(collect(calls, members).await, &fan),
        FanOutMode::Interleave => interleave(collect(calls, members).await, fan.stats.clone()),
    };
    if let (Some(stats), Some(result)) = (&fan.stats, result) {
        stats.record(result);
    }
    Ok((response, backend))
}

/// One member's answer as far as the fan-out needs it.
enum Answer {
    /// Unary modes: the whole answer, held.
    Whole(Whole),
    /// Interleave: the head, and the body still to come.
    Streaming(HeaderMap, UpstreamBody),
    /// The member failed before answering (or its answer could not be held).
    Failed(Code, String),
}

/// A member's whole answer.
struct Whole {
    headers: HeaderMap,
    data: Bytes,
    trailers: HeaderMap,
    code: Code,
}

/// Makes one member's call: its answer whole (unary modes, up to `limit` bytes) or its
/// head and body (interleave).
async fn call(
    upstream: &Upstream,
    request: Request<BoxBody>,
    cut: Arc<crate::http2::PipeCut>,
    mode: FanOutMode,
    limit: usize,
) -> Answer {
    let response = match upstream.try_send(request, Some(&cut)).await {
        Ok(response) => response,
        Err(unsent) => {
            let status = unsent.error.to_status();
            return Answer::Failed(status.code(), status.message().to_owned());
        }
    };
    let (head, body) = response.into_parts();
    if mode == FanOutMode::Interleave && !Body::is_end_stream(&body) {
        return Answer::Streaming(head.headers, body);
    }
    let mut body = std::pin::pin!(body);
    let (mut data, mut trailers) = (BytesMut::new(), None);
    while let Some(frame) = body.frame().await {
        match frame.map(Frame::into_data) {
            Ok(Ok(chunk)) => {
                if data.len() + chunk.len() > limit {
                    return Answer::Failed(
                        Code::ResourceExhausted,
                        format!("answer larger than the fan-out's {limit} bytes"),
                    );
                }
                data.extend_from_slice(&chunk);
            }
            Ok(Err(frame)) => trailers = frame.into_trailers().ok(),
            Err(error) => {
                let status =
                    crate::status::status_from_upstream_error(error.as_ref(), upstream.address());
                return Answer::Failed(status.code(), status.message().to_owned());
            }
        }
    }
    // A trailers-only answer carries its status in the head.
    let trailers = trailers.unwrap_or_else(|| head.headers.clone());
    Answer::Whole(Whole {
        code: code_of(&trailers),
        headers: head.headers,
        data: data.freeze(),
        trailers,
    })
}

/// The `grpc-status` of `trailers` (UNKNOWN when missing or unreadable).
fn code_of(trailers: &HeaderMap) -> Code {
    trailers
        .get(crate::headers::GRPC_STATUS)
        .and_then(|v| v.to_str().ok()?.parse::<i32>().ok())
        .map_or(Code::Unknown, Code::from_i32)
}

/// Every member's answer, in member order.
async fn collect(
    mut calls: JoinSet<(usize, Arc<str>, Answer)>,
    members: usize,
) -> Vec<(Arc<str>, Answer)> {
    let mut answers: Vec<Option<(Arc<str>, Answer)>> = (0..members).map(|_| None).collect();
    while let Some(done) = calls.join_next().await {
        if let Ok((index, name, answer)) = done {
            answers[index] = Some((name, answer));
        }
    }
    answers
        .into_iter()
        .map(|a| {
            a.unwrap_or_else(|| {
                (
                    Arc::from("?"),
                    Answer::Failed(Code::Internal, "member task failed".into()),
                )
            })
        })
        .collect()
}

/// The first OK answer; the rest are cancelled (dropping the set aborts their tasks,
/// which resets their streams).
async fn first_success(mut calls: JoinSet<(usize, Arc<str>, Answer)>, members: usize) -> Merged {
    let mut failures = Vec::with_capacity(members);
    while let Some(done) = calls.join_next().await {
        let Ok((_, name, answer)) = done else {
            continue;
        };
        match answer {
            Answer::Whole(whole) if whole.code == Code::Ok => {
                let result = tally(true, &failures);
                return (whole_response(whole, &failures), result);
            }
            answer => failures.push((name, answer)),
        }
    }
    (first_failure(failures), Some(FanOutResult::Failed))
}

/// The merged answer, and what the call came to (`None`: known when its body ends).
type Merged = (Response<UpstreamBody>, Option<FanOutResult>);

/// What a call came to: `ok` whether the client gets OK.
fn tally(ok: bool, failures: &[(Arc<str>, Answer)]) -> Option<FanOutResult> {
    Some(match (ok, failures.is_empty()) {
        (false, _) => FanOutResult::Failed,
        (true, true) => FanOutResult::Ok,
        (true, false) => FanOutResult::Partial,
    })
}

/// The first member's answer when all are OK; else the first failure in member order.
fn all(answers: Vec<(Arc<str>, Answer)>) -> Merged {
    if !answers.iter().all(|(_, a)| is_ok(a)) {
        let failures = answers.into_iter().filter(|(_, a)| !is_ok(a)).collect();
        return (first_failure(failures), Some(FanOutResult::Failed));
    }
    match answers.into_iter().next() {
        Some((_, Answer::Whole(whole))) => (whole_response(whole, &[]), Some(FanOutResult::Ok)),
        _ => (
            failure_response(Code::Internal, "a fan-out without members", None),
            Some(FanOutResult::Failed),
        ),
    }
}

/// Every OK member's one message, concatenated in member order (each part followed by the
/// append hook's bytes); the rest named as failures.
fn concat(answers: Vec<(Arc<str>, Answer)>, fan: &FanOut) -> Merged {
    let mut parts = BytesMut::new();
    let mut first_ok: Option<Whole> = None;
    let mut failures = Vec::new();
    for (name, answer) in answers {
        let whole = match answer {
            Answer::Whole(whole) if whole.code == Code::Ok => whole,
            other => {
                failures.push((name, other));
                continue;
            }
        };
        let message = match crate::frame::split(whole.data.clone()).as_deref() {
            Ok([(header, payload)]) if !header.compressed => payload.clone(),
            Ok([(_, _)]) => {
                failures.push((
                    name,
                    Answer::Failed(Code::Internal, "compressed answer in concat mode".into()),
                ));
                continue;
            }
            _ => {
                failures.push((
                    name,
                    Answer::Failed(
                        Code::Internal,
                        "concat mode needs exactly one response message".into(),
                    ),
                ));
                continue;
            }
        };
        parts.extend_from_slice(&message);
        if let Some(hook) = &fan.append {
            parts.extend_from_slice(&hook(&name));
        }
        first_ok.get_or_insert(whole);
    }
    let Some(mut whole) = first_ok else {
        return (first_failure(failures), Some(FanOutResult::Failed));
    };
    let mut framed = BytesMut::with_capacity(parts.len() + 5);
    crate::frame::encode(false, &parts, &mut framed);
    whole.data = framed.freeze();
    whole.headers.remove("grpc-encoding");
    let result = tally(true, &failures);
    (whole_response(whole, &failures), result)
}

fn is_ok(answer: &Answer) -> bool {
    a_code(answer) == Code::Ok
}

/// `name=CODE,...` of the failed members.
fn failure_names(failures: &[(Arc<str>, Answer)]) -> Option<HeaderValue> {
    if failures.is_empty() {
        return None;
    }
    let names: Vec<String> = failures
        .iter()
        .map(|(name, answer)| format!("{name}={}", code_name(a_code(answer))))
        .collect();
    HeaderValue::from_str(&names.join(",")).ok()
}

/// The response for a whole answer, with the failures named in its trailers.
fn whole_response(whole: Whole, failures: &[(Arc<str>, Answer)]) -> Response<UpstreamBody> {
    named_whole_response(whole, failure_names(failures))
}

fn named_whole_response(whole: Whole, names: Option<HeaderValue>) -> Response<UpstreamBody> {
    let Whole {
        headers,
        data,
        mut trailers,
        ..
    } = whole;
    if let Some(names) = names {
        trailers.insert(FANOUT_ERRORS, names);
    }
    let trailers_only = data.is_empty() && headers.contains_key("grpc-status");
    let mut frames = VecDeque::new();
    let mut response = Response::new(());
    if trailers_only {
        // A trailers-only answer: its status (and the failures) stay in the head.
        *response.headers_mut() = trailers;
    } else {
        *response.headers_mut() = headers;
        if !data.is_empty() {
            frames.push_back(Frame::data(data));
        }
        frames.push_back(Frame::trailers(trailers));
    }
    response.map(|()| UpstreamBody::Merged(BoxBody::new(Frames(frames))))
}

/// The answer when every member failed: the first failure's (in the order given), all of
/// them named.
fn first_failure(failures: Vec<(Arc<str>, Answer)>) -> Response<UpstreamBody> {
    let names = failure_names(&failures);
    match failures.into_iter().next() {
        Some((_, Answer::Whole(whole))) => named_whole_response(whole, names),
        Some((_, Answer::Failed(code, message))) => failure_response(code, &message, names),
        _ => failure_response(Code::Internal, "a fan-out without members", names),
    }
}

fn a_code(answer: &Answer) -> Code {
    match answer {
        Answer::Whole(whole) => whole.code,
        Answer::Failed(code, _) => *code,
        Answer::Streaming(..) => Code::Ok,
    }
}

/// A trailers-only response with `code` and `message`, the failures named.
fn failure_response(
    code: Code,
    message: &str,
    names: Option<HeaderValue>,
) -> Response<UpstreamBody> {
    let status = tonic::Status::new(code, message);
    let mut headers = HeaderMap::new();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    let _ = status.add_header(&mut headers);
    if let Some(names) = names {
        headers.insert(FANOUT_ERRORS, names);
    }
    let mut response = Response::new(UpstreamBody::Merged(BoxBody::new(Frames(VecDeque::new()))));
    *response.headers_mut() = headers;
    response
}

/// Streaming members merged: the head of the first member that answered, then every
/// member's messages as they come.
fn interleave(answers: Vec<(Arc<str>, Answer)>, stats: Option<Arc<FanOutStats>>) -> Merged {
    let mut head = None;
    let mut streams = Vec::new();
    let mut failures = Vec::new();
    for (name, answer) in answers {
        match answer {
            Answer::Streaming(headers, body) => {
                head.get_or_insert(headers);
                streams.push(Stream {
                    name,
                    body: Some(body),
                    pending: BytesMut::new(),
                    code: None,
                });
            }
            // Ended OK at once (trailers-only): no messages.
            Answer::Whole(whole) if whole.code == Code::Ok => streams.push(Stream {
                name,
                body: None,
                pending: BytesMut::new(),
                code: Some(Code::Ok),
            }),
            other => failures.push((name, other)),
        }
    }
    let Some(mut headers) = head else {
        return (first_failure(failures), Some(FanOutResult::Failed));
    };
    // The merged head is the fan-out's own: no member's status or encoding.
    headers.remove("grpc-status");
    headers.remove("grpc-message");
    let mut response = Response::new(UpstreamBody::Merged(BoxBody::new(Interleaved {
        streams,
        failures,
        next: 0,
        done: false,
        stats,
    })));
    *response.headers_mut() = headers;
    (response, None)
}

/// One member's stream in an interleaved answer.
struct Stream {
    name: Arc<str>,
    /// `None` once it ended.
    body: Option<UpstreamBody>,
    /// Bytes of a message not whole yet.
    pending: BytesMut,
    /// How it ended.
    code: Option<Code>,
}

impl Stream {
    /// The whole messages at the front of `pending`, if any.
    fn take_messages(&mut self) -> Option<Bytes> {
        let mut end = 0;
        loop {
            let rest = &self.pending[end..];
            if rest.len() < 5 {
                break;
            }
            let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
            if rest.len() < 5 + len {
                break;
            }
            end += 5 + len;
        }
        (end > 0).then(|| self.pending.split_to(end).freeze())
    }
}

/// Every member's messages, whole, in the order they come; the trailers once all ended.
struct Interleaved {
    streams: Vec<Stream>,
    /// Members that failed before answering, or during their stream.
    failures: Vec<(Arc<str>, Answer)>,
    /// The member polled first next time (round robin, so none starves the others).
    next: usize,
    done: bool,
    /// Told what the call came to when it ends.
    stats: Option<Arc<FanOutStats>>,
}

impl Body for Interleaved {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        let count = this.streams.len();
        for k in 0..count {
            let i = (this.next + k) % count;
            let stream = &mut this.streams[i];
            while let Some(body) = stream.body.as_mut() {
                match Pin::new(body).poll_frame(cx) {
                    Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                        Ok(data) => {
                            stream.pending.extend_from_slice(&data);
                            if let Some(messages) = stream.take_messages() {
                                this.next = (i + 1) % count;
                                return Poll::Ready(Some(Ok(Frame::data(messages))));
                            }
                        }
                        Err(frame) => {
                            let trailers = frame.into_trailers().unwrap_or_default();
                            stream.code = Some(code_of(&trailers));
                        }
                    },
                    Poll::Ready(Some(Err(error))) => {
                        let status =
                            crate::status::status_from_upstream_error(error.as_ref(), &stream.name);
                        stream.code = Some(status.code());
                        stream.body = None;
                    }
                    Poll::Ready(None) => {
                        stream.code.get_or_insert(Code::Unknown);
                        stream.body = None;
                    }
                    Poll::Pending => break,
                }
            }
        }
        if this.streams.iter().any(|s| s.body.is_some()) {
            return Poll::Pending;
        }
        this.done = true;
        let mut failures = std::mem::take(&mut this.failures);
        let mut any_ok = false;
        for stream in &this.streams {
            match stream.code {
                Some(Code::Ok) => any_ok = true,
                code => {
                    let code = code.unwrap_or(Code::Unknown);
                    failures.push((stream.name.clone(), Answer::Failed(code, String::new())));
                }
            }
        }
        let code = if any_ok {
            Code::Ok
        } else {
            failures.first().map_or(Code::Unknown, |(_, a)| a_code(a))
        };
        if let (Some(stats), Some(result)) = (&this.stats, tally(any_ok, &failures)) {
            stats.record(result);
        }
        let mut trailers = HeaderMap::new();
        let _ = tonic::Status::new(code, "").add_header(&mut trailers);
        trailers.remove("grpc-message");
        if let Some(names) = failure_names(&failures) {
            trailers.insert(FANOUT_ERRORS, names);
        }
        Poll::Ready(Some(Ok(Frame::trailers(trailers))))
    }
}

/// A body of frames given up front.
struct Frames(VecDeque<Frame<Bytes>>);

impl Body for Frames {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Poll::Ready(self.0.pop_front().map(Ok))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_empty()
    }
}

/// Reads the client's request and copies each frame to every member still taking it.
async fn feed(mut body: BoxBody, mut copies: Vec<Option<CopySender>>, slow: SlowMember) {
    let wait = match slow {
        SlowMember::Wait => None,
        SlowMember::Drop { after } => Some(after),
    };
    loop {
        let frame = match body.frame().await {
            Some(Ok(frame)) => frame,
            // The client's stream failed: dropping the copies resets every member's stream.
            Some(Err(_)) => return,
            None => {
                copies.iter_mut().flatten().for_each(CopySender::end);
                return;
            }
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        for slot in copies.iter_mut() {
            let taken = match slot {
                Some(copy) => copy.send(&data, wait).await,
                None => continue,
            };
            if !taken {
                *slot = None; // given up: its stream is reset
            }
        }
        if copies.iter().all(Option::is_none) {
            return;
        }
    }
}

/// The canonical name of `code`, as gRPC's documentation spells it.
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}
