//! The hedge step around send: more tries go out while none has answered, the first
//! answer is the call's, and the others are cancelled.

use std::future::Future;
use std::task::Poll;

use http::uri::{Authority, PathAndQuery};
use http::Request;
use tokio::time::Instant;

use super::call_state::CallState;
use super::replay::Resend;
use super::send::{Route, Sent};
use crate::boxed::BoxBody;
use crate::policy::HedgePolicy;

/// What woke the hedging loop.
enum Event {
    /// Try number `.0` (at index `.1` of the racing tries) ended with `.2`.
    Done(u32, usize, Sent),
    /// Time for the next hedge.
    Hedge,
}

impl Route {
    /// Sends `first`, then up to `policy.max() - 1` hedges, one per delay while no try has
    /// answered (at once when every try out has failed before an answer); returns the first
    /// answer and cancels the rest.
    pub(super) async fn send_hedged(
        &self,
        resend: &Resend,
        policy: &HedgePolicy,
        first: Request<BoxBody>,
        path: &PathAndQuery,
        client_authority: &Option<Authority>,
        call: &std::sync::Arc<CallState>,
    ) -> Sent {
        let started = Instant::now();
        let send = |attempt: u32, request: Request<BoxBody>| {
            let (to, alternate) = self.endpoints_for(attempt);
            Box::pin(self.send_to(to, alternate, request, path, client_authority, call))
        };
        let mut racing = vec![(1, send(1, first))];
        let mut sent = 1;
        let mut timer = Box::pin(tokio::time::sleep(policy.delay()));
        loop {
            let event = std::future::poll_fn(|cx| {
                for (i, (attempt, try_)) in racing.iter_mut().enumerate() {
                    if let Poll::Ready(result) = try_.as_mut().poll(cx) {
                        return Poll::Ready(Event::Done(*attempt, i, result));
                    }
                }
                if sent < policy.max() && timer.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Event::Hedge);
                }
                Poll::Pending
            })
            .await;
            let hedge_now = match event {
                Event::Done(attempt, _, Ok(answer)) => {
                    // The first answer wins: the other tries' request streams fail, and
                    // dropping their futures resets their backend streams.
                    resend.keep_only(attempt);
                    policy.stats().settled(attempt, racing.len() - 1);
                    policy.answered_after(started.elapsed());
                    return Ok(answer);
                }
                Event::Done(_, i, Err(error)) => {
                    drop(racing.swap_remove(i));
                    if !racing.is_empty() {
                        continue;
                    }
                    if sent >= policy.max() {
                        return Err(error);
                    }
                    true // every try out failed before an answer: the next one goes now
                }
                Event::Hedge => true,
            };
            if hedge_now {
                let Some(body) = resend.body_alongside(sent + 1) else {
                    // The request outgrew what is kept: no more hedges; wait for the rest.
                    sent = policy.max();
                    continue;
                };
                sent += 1;
                policy.stats().hedged();
                tracing::debug!(attempt = sent, "hedging the call");
                let (to, _) = self.endpoints_for(sent);
                call.attempted(crate::AttemptKind::Hedge, sent, to.shared_address(), None);
                let request = resend.request_for(to, body, sent, self.deadline);
                racing.push((sent, send(sent, request)));
                timer.as_mut().reset(Instant::now() + policy.delay());
            }
        }
    }
}
