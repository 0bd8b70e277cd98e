//! One call through the proxy, phase by phase, in the order it happens:
//!
//! 1. **admit**: a gRPC request with a well-formed method and a readable deadline; hop-by-hop
//!    headers go, the client's address may be appended; the call starts.
//! 2. **direct**: the director picks the [`Target`](crate::Target), within the call's deadline.
//! 3. **build**: the upstream request: the target's metadata, the deadline left, the tap,
//!    the observer and the mirror set up.
//! 4. **send**: to the backend, failing over to the alternate ([`Route::send`]).
//! 5. **respond**: the response head (or the status the proxy gives instead), and the body
//!    that forwards the rest under the call's limits.
//!
//! Each phase is a function of its own; a policy around a phase (a retry or a mirror around
//! send) wraps that function alone.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{HeaderValue, HOST, TE};
use http::uri::{Authority, PathAndQuery};
use http::{Method, Request, Response, Version};
use http_body_util::BodyExt;
use tokio::time::Instant;
use tonic::metadata::MetadataMap;
use tonic::Status;

use super::call_state::{abort_status, AbortReason, CallState, Observed};
use super::replay::{Destination, Resend, ResendPolicy};
use super::request_body::RequestBody;
use super::response_body::{ResponseBody, ResponseGuard};
use super::retry;
use super::send::{Route, Sent};
use super::timeouts::{effective_timeout, is_late_error, Bounded, Timers};
use super::{mirror, reject, Shared};
use crate::boxed::{BoxBody, BoxError};
use crate::call::{connection_info, split_method};
use crate::deadline::{format_timeout, parse_timeout};
use crate::headers::{strip_hop_by_hop_reading, GRPC_TIMEOUT};
use crate::mq::tap::CallTap;
use crate::mq::{CallStarted, MessageQueue, TapEvent};
use crate::{CallInfo, StreamDirector, Target};

/// A call the proxy admitted: what it knows before the director is asked.
struct Admitted {
    received: Instant,
    path: PathAndQuery,
    /// The timeout the client asked for (`grpc-timeout`).
    requested: Option<Duration>,
    client_authority: Option<Authority>,
    peer: Option<SocketAddr>,
    /// The call's state, ended if the client's side goes away.
    guard: ResponseGuard,
}

impl Admitted {
    fn state(&self) -> &Arc<CallState> {
        self.guard.call()
    }
}

/// The status for a path that is not `/package.Service/Method`.
fn malformed_method(path: &str) -> Status {
    Status::unimplemented(format!(
        "malformed method name {path:?}: expected /package.Service/Method"
    ))
}

/// A trailers-only response carrying `status`.
fn status_response(status: Status) -> Response<ResponseBody> {
    status.into_http()
}

impl<D: StreamDirector, Q: MessageQueue> Shared<D, Q> {
    /// The call, phase by phase.
    pub(super) async fn forward<B>(
        self: Arc<Self>,
        request: Request<B>,
    ) -> Result<Response<ResponseBody>, Infallible>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        if let Some(rejection) = reject::non_grpc_request(&request) {
            return Ok(rejection);
        }
        let (parts, body) = request.into_parts();
        let (call, info) = match self.admit(parts) {
            Ok(admitted) => admitted,
            Err(refusal) => return Ok(refusal),
        };
        // The call's timers, carried from phase to phase.
        let mut timers = Timers::default();
        let target = match self.direct(&call, info, &mut timers).await {
            Ok(Ok(target)) => target,
            // The director's refusal: its own to count.
            Ok(Err(status)) => return Ok(status_response(status)),
            Err(_) => {
                let status = abort_status(AbortReason::Deadline, None);
                return Ok(self.refused(call.path.path(), call.peer, call.received, status));
            }
        };
        let (route, request, fan_out) = self.build(&call, target, body);
        // Moved whole into the condition (a `None` left in a variable would live on in the
        // call's future).
        if let Some(fan) = { fan_out } {
            // Boxed: only fanned-out calls pay for the members' state.
            return Ok(Box::pin(self.fanned(call, route, request, *fan, timers)).await);
        }
        let idle = self.options.stream_idle_timeout;
        let sent = match route
            .resend
            .as_ref()
            .map(|resend| (resend, resend.policy()))
        {
            Some((resend, ResendPolicy::Hedge(policy))) => {
                let (path, authority) = (&call.path, &call.client_authority);
                let send =
                    route.send_hedged(resend, policy, request, path, authority, call.state());
                // Boxed: only hedged calls pay for the race's state.
                let (deadline, state) = (route.deadline, call.state());
                Bounded::new(Box::pin(send), &mut timers, deadline, idle, state).await
            }
            _ => {
                // The first try, on the common path; a retry policy's per-try timeout
                // bounds it, and only a call that needs another try pays for more.
                let first_deadline = retry::start_first_try(&route);
                // Pinned where it is built (the bound holds a reference, not a second
                // copy), in a block of its own so that its room is free after it.
                let first = {
                    let send = std::pin::pin!(route.send(
                        request,
                        &call.path,
                        &call.client_authority,
                        call.state()
                    ));
                    Bounded::new(send, &mut timers, first_deadline, idle, call.state()).await
                };
                match route
                    .resend
                    .as_ref()
                    .and_then(|r| Some((r, r.retry_policy()?)))
                {
                    Some((resend, policy)) => match retry::after_first(first, route.deadline) {
                        Ok(tried) if retry::may_retry(policy, &tried) => {
                            let (path, authority) = (&call.path, &call.client_authority);
                            let again = route.retry_after(
                                resend,
                                policy,
                                tried,
                                path,
                                authority,
                                call.state(),
                            );
                            let (deadline, state) = (route.deadline, call.state());
                            Bounded::new(Box::pin(again), &mut timers, deadline, idle, state)
                                .await
                                .and_then(|sent| sent)
                        }
                        Ok(tried) => tried.ok_or(AbortReason::TryTimeout),
                        Err(reason) => Err(reason),
                    },
                    None => first,
                }
            }
        };
        Ok(self.respond(call, route, sent, timers))
    }

    /// Send and respond for a fanned-out call: every member at once, their answers merged
    /// into the one the respond phase forwards.
    async fn fanned(
        &self,
        call: Admitted,
        route: Route,
        request: Request<BoxBody>,
        fan: crate::policy::FanOut,
        mut timers: Timers,
    ) -> Response<ResponseBody> {
        let send = super::fan_out::send(
            fan,
            request,
            &call.path,
            route.authority.clone(),
            call.client_authority.clone(),
        );
        let idle = self.options.stream_idle_timeout;
        let sent = Bounded::new(send, &mut timers, route.deadline, idle, call.state()).await;
        self.respond(call, route, sent, timers)
    }

    /// Admit: checks the method name and the deadline, prepares the metadata and starts
    /// the call; or answers the call at once.
    #[allow(
        clippy::result_large_err,
        reason = "the admitted call is larger than the refusal: boxing it would save nothing"
    )]
    fn admit(
        &self,
        mut parts: http::request::Parts,
    ) -> Result<(Admitted, CallInfo), Response<ResponseBody>> {
        let received = Instant::now();
        let split = parts
            .uri
            .path_and_query()
            .and_then(|path| Some((path.clone(), split_method(path.path())?)));
        let peer = connection_info(&parts.extensions);
        let Some((path, split)) = split else {
            let status = malformed_method(parts.uri.path());
            return Err(self.refused(parts.uri.path(), peer.remote_addr, received, status));
        };
        let client_authority = parts.uri.authority().cloned().or_else(|| {
            let host = parts.headers.get(HOST)?;
            Authority::try_from(host.as_bytes()).ok()
        });
        // The deadline, read in the pass that looks for hop-by-hop fields.
        let timeout =
            strip_hop_by_hop_reading(&mut parts.headers, Some(&GRPC_TIMEOUT), parse_timeout);
        let requested = match timeout {
            None => None,
            Some(Ok(requested)) => Some(requested),
            Some(Err(invalid)) => {
                let status = Status::internal(invalid.to_string());
                return Err(self.refused(path.path(), peer.remote_addr, received, status));
            }
        };
        if let (true, Some(addr)) = (self.options.x_forwarded_for, peer.remote_addr) {
            crate::headers::append_forwarded_for(&mut parts.headers, addr.ip());
        }
        let admitted = Admitted {
            received,
            path: path.clone(),
            requested,
            client_authority,
            peer: peer.remote_addr,
            guard: ResponseGuard::new(CallState::start(&self.stats, received.into_std())),
        };
        let metadata = MetadataMap::from_headers(parts.headers);
        let info = CallInfo::split_at(path, split, metadata).with_peer(peer, parts.extensions);
        Ok((admitted, info))
    }

    /// Direct: the director's answer, within the deadline the proxy would enforce anyway.
    fn direct<'a>(
        &'a self,
        call: &'a Admitted,
        info: CallInfo,
        timers: &'a mut Timers,
    ) -> Bounded<'a, impl Future<Output = Result<Target, Status>> + 'a> {
        let deadline = self
            .options
            .effective_timeout(call.requested)
            .map(|t| call.received + t);
        Bounded::new(
            self.director.direct(info),
            timers,
            deadline,
            None,
            call.state(),
        )
    }

    /// Build: the upstream request for `target`, with the call's tap and observer set up
    /// (and the fan-out to send it to, for a fanned-out call).
    #[allow(
        clippy::type_complexity,
        reason = "the build's three results, taken apart at once by the caller"
    )]
    fn build<B>(
        &self,
        call: &Admitted,
        target: Target,
        body: B,
    ) -> (Route, Request<BoxBody>, Option<Box<crate::policy::FanOut>>)
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let state = call.state();
        let (upstream, metadata, overrides) = target.into_parts();
        if let Some(director_guard) = overrides.guard {
            state.keep(director_guard);
        }
        if let Some(observer) = overrides.observer {
            state.observe(Observed {
                observer,
                method: call.path.clone(),
                peer: call.peer,
                backend: upstream.shared_address().clone(),
                authority: call.client_authority.clone(),
                user_agent: metadata.as_ref().get(http::header::USER_AGENT).cloned(),
            });
        }
        let timeout = if overrides.max_timeout.is_some() || overrides.default_timeout.is_some() {
            effective_timeout(
                call.requested,
                overrides.max_timeout,
                overrides.default_timeout,
            )
        } else {
            self.options.effective_timeout(call.requested)
        };
        let deadline = timeout.map(|t| call.received + t);
        let mut headers = metadata.into_headers();
        headers.insert(TE, HeaderValue::from_static("trailers"));
        if self.queue.wants(call.path.path()) {
            let queue: Arc<dyn MessageQueue> = self.queue.clone();
            let tap = Arc::new(CallTap::new(queue));
            tap.publish(TapEvent::Started(CallStarted {
                call_id: tap.call_id,
                time: SystemTime::now() - call.received.elapsed(),
                method: call.path.path().to_owned(),
                peer: call.peer,
                metadata: headers.clone(),
                backend: upstream.address().to_owned(),
            }));
            state.tap_with(tap);
        }
        if let (true, Some(deadline)) = (timeout != call.requested, deadline) {
            let remaining = deadline.saturating_duration_since(Instant::now());
            headers.insert(GRPC_TIMEOUT, format_timeout(remaining));
        }
        let feed = overrides.mirror.and_then(|to| {
            let endpoint = to.upstream.shared_address().clone();
            let started = mirror::start(
                *to,
                &headers,
                &call.path,
                call.client_authority.clone(),
                deadline,
                state.tap(),
            );
            let kind = match started {
                Some(_) => crate::AttemptKind::Mirror,
                None => crate::AttemptKind::MirrorDropped,
            };
            state.attempted(kind, 0, &endpoint, None);
            let (feed, watch) = started?;
            state.mirror_with(watch);
            Some(feed)
        });
        let limit = self.options.max_message_size;
        let touch = self.options.stream_idle_timeout.is_some();
        let body = BoxBody::new(
            RequestBody::new(body, state.clone(), limit, touch)
                .mirrored(feed)
                .map_err(|e| Box::new(e) as BoxError),
        );
        // A hedge policy wins over a retry policy: a method is one or the other (gRPC A6).
        // A fanned-out call is sent once to each member: no retries, no hedges.
        let resend = match (overrides.hedge, overrides.retry) {
            _ if overrides.fan_out.is_some() => None,
            (Some(hedge), _) => Some(ResendPolicy::Hedge(hedge)),
            (None, Some(retry)) => Some(ResendPolicy::Retry(retry)),
            (None, None) => None,
        };
        let (resend, body) = match resend {
            Some(policy) => {
                let destination = Destination {
                    path: call.path.clone(),
                    authority: overrides.authority.clone(),
                    client_authority: call.client_authority.clone(),
                };
                let (resend, first) = Resend::new(policy, body, &headers, destination);
                (Some(resend), first)
            }
            None => (None, body),
        };
        let mut request = Request::new(body);
        *request.method_mut() = Method::POST;
        *request.version_mut() = Version::HTTP_2;
        *request.uri_mut() = upstream.request_uri(
            call.path.clone(),
            overrides.authority.clone(),
            call.client_authority.clone(),
        );
        *request.headers_mut() = headers;
        let route = Route {
            upstream,
            alternate: overrides.alternate,
            authority: overrides.authority,
            response_edits: overrides.response_edits,
            deadline,
            resend,
        };
        (route, request, overrides.fan_out)
    }

    /// Respond: the backend's response head with a body that forwards the rest, or the
    /// status the proxy answers with when the call ended before it. Inlined: its four
    /// arguments (the call, its route, the response, the timers) are not copied into it.
    #[inline(always)]
    fn respond(
        &self,
        call: Admitted,
        route: Route,
        sent: Result<Sent, AbortReason>,
        mut timers: Timers,
    ) -> Response<ResponseBody> {
        let state = call.state();
        let limit = self.options.max_message_size;
        let (mut response, backend) = match sent {
            Ok(Ok(sent)) => sent,
            Ok(Err(err)) => {
                let status = match state.abort_reason() {
                    Some(reason) => abort_status(reason, limit),
                    None => err.to_status(),
                };
                tracing::debug!(error = %err, code = ?status.code(), "call failed before response headers");
                state.set_status_of(&status);
                return status_response(status);
            }
            Err(reason) => {
                state.abort(reason);
                let status = abort_status(reason, None);
                state.set_status_of(&status);
                return status_response(status);
            }
        };
        if is_late_error(route.deadline, response.headers()) {
            state.abort(AbortReason::Deadline);
            let status = abort_status(AbortReason::Deadline, None);
            state.set_status_of(&status);
            return status_response(status);
        }
        state.set_status_from(response.headers());
        let trailers_only = http_body::Body::is_end_stream(response.body());
        if trailers_only {
            // Trailers-only: the status is in the headers.
            if let Some(tap) = state.tap() {
                tap.trailers(response.headers());
            }
            if let Some(mirror) = state.mirror() {
                mirror.response_trailers(response.headers());
            }
        }
        if let Some(edits) = &route.response_edits {
            edits.apply(response.headers_mut());
        }
        timers.set(route.deadline, self.options.stream_idle_timeout, state);
        response.map(|body| {
            ResponseBody::forward(body, call.guard, timers, limit, backend, trailers_only)
        })
    }
}
