//! The retry step around send: while the policy, the budget, the backend's pushback and the
//! call's deadline allow, a failed try is sent again to the next endpoint.

use http::header::{HeaderMap, HeaderName};
use http::uri::{Authority, PathAndQuery};
use http_body::Body;
use tokio::time::Instant;
use tonic::Code;

use super::call_state::{AbortReason, CallState};
use super::replay::Resend;
use super::send::{Route, Sent};
use crate::policy::retry::Skipped;
use crate::policy::RetryPolicy;

const PUSHBACK: HeaderName = HeaderName::from_static("grpc-retry-pushback-ms");

/// The `grpc-status` of a trailers-only answer.
fn status_of(headers: &HeaderMap) -> Option<Code> {
    let code = headers
        .get(crate::headers::GRPC_STATUS)?
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

/// The status a try ended with, and the answer's headers when it was trailers-only; `None`
/// when the answer goes to the client whatever the policy (response headers came).
fn outcome(tried: &Option<Sent>) -> Option<(Code, Option<&HeaderMap>)> {
    match tried {
        None => Some((Code::DeadlineExceeded, None)),
        Some(Ok((response, _))) if response.body().is_end_stream() => {
            Some((status_of(response.headers())?, Some(response.headers())))
        }
        Some(Ok(_)) => None,
        Some(Err(error)) => Some((error.to_status().code(), None)),
    }
}

/// Starts the first try of a call on `route`: counts the call towards its retry budget,
/// and says when the try is up (the call's deadline, or sooner the per-try timeout).
pub(super) fn start_first_try(route: &Route) -> Option<Instant> {
    let Some(policy) = route.resend.as_ref().and_then(Resend::retry_policy) else {
        return route.deadline;
    };
    if let Some(budget) = policy.retry_budget() {
        budget.deposit();
    }
    let per_try = policy.try_timeout().map(|t| Instant::now() + t);
    match (route.deadline, per_try) {
        (Some(deadline), Some(per_try)) => Some(deadline.min(per_try)),
        (deadline, per_try) => deadline.or(per_try),
    }
}

/// The first try as the retry step sees it: its answer, or `None` when the per-try timeout
/// (not the call's deadline) cut it; the call's own end otherwise.
pub(super) fn after_first(
    first: Result<Sent, AbortReason>,
    deadline: Option<Instant>,
) -> Result<Option<Sent>, AbortReason> {
    match first {
        Ok(sent) => Ok(Some(sent)),
        Err(AbortReason::Deadline) if deadline.is_none_or(|d| Instant::now() < d) => Ok(None),
        Err(reason) => Err(reason),
    }
}

/// Whether `policy` would try again after a try that ended with `tried` (`None`: cut by
/// the per-try timeout). Cheap, and allocation-free: asked after every first try.
pub(super) fn may_retry(policy: &RetryPolicy, tried: &Option<Sent>) -> bool {
    policy.attempts() > 1
        && match outcome(tried) {
            Some((code, _)) => tried.is_none() || policy.retries_on(code),
            None => false,
        }
}

impl Route {
    /// After try `attempt` ended with `tried` (`None`: cut by the per-try timeout), sends
    /// the call again while the policy allows; the last try's answer is the call's, and a
    /// last try cut by the per-try timeout ends the call with [`AbortReason::TryTimeout`].
    /// The first try runs on the common path (`forward`): only a call that fails comes here.
    pub(super) async fn retry_after(
        &self,
        resend: &Resend,
        policy: &RetryPolicy,
        mut tried: Option<Sent>,
        path: &PathAndQuery,
        client_authority: &Option<Authority>,
        call: &std::sync::Arc<CallState>,
    ) -> Result<Sent, AbortReason> {
        let mut attempt = 1;
        loop {
            let finish = |tried: Option<Sent>| tried.ok_or(AbortReason::TryTimeout);
            let Some((code, headers)) = outcome(&tried) else {
                return finish(tried); // response headers: the answer goes to the client
            };
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
            } else if !resend.replayable() {
                Some(Skipped::Buffer)
            } else if policy.retry_budget().is_some_and(|b| !b.try_withdraw()) {
                Some(Skipped::Budget)
            } else {
                None
            };
            // From here the earlier try's request stream fails (and is reset).
            let next_body = match skipped {
                None => resend.body_for(attempt + 1).ok_or(Skipped::Buffer),
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
            let (to, alternate) = self.endpoints_for(attempt);
            call.attempted(
                crate::AttemptKind::Retry,
                attempt,
                to.shared_address(),
                Some(code),
            );
            let request = resend.request_for(to, body, attempt, self.deadline);
            let send = self.send_to(to, alternate, request, path, client_authority, call);
            tried = match policy.try_timeout() {
                Some(timeout) => tokio::time::timeout(timeout, send).await.ok(),
                None => Some(send.await),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

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
