//! The retry step around send: while the policy, the budget, the backend's pushback and the
//! call's deadline allow, a failed try is sent again to the next endpoint.

use http::header::{HeaderMap, HeaderName};
use http::uri::{Authority, PathAndQuery};
use http::Request;
use http_body::Body;
use tokio::time::Instant;
use tonic::Code;

use super::call_state::{AbortReason, CallState};
use super::replay::Resend;
use super::send::{Route, Sent};
use crate::boxed::BoxBody;
use crate::policy::retry::Skipped;
use crate::policy::RetryPolicy;

const PUSHBACK: HeaderName = HeaderName::from_static("grpc-retry-pushback-ms");

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
        resend: &Resend,
        policy: &RetryPolicy,
        first: Request<BoxBody>,
        path: &PathAndQuery,
        client_authority: &Option<Authority>,
        call: &CallState,
    ) -> Result<Sent, AbortReason> {
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
            } else if !resend.replay.replayable() {
                Some(Skipped::Buffer)
            } else if policy.retry_budget().is_some_and(|b| !b.try_withdraw()) {
                Some(Skipped::Budget)
            } else {
                None
            };
            // From here the earlier try's request stream fails (and is reset).
            let next_body = match skipped {
                None => resend.replay.body_for(attempt + 1).ok_or(Skipped::Buffer),
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
            request = resend.request_for(to, body, attempt, self.deadline);
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
