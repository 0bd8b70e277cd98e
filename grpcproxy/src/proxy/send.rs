//! The send step: the upstream request to the target's backend, and to its alternate when
//! the request never left the proxy. A policy that sends more than once (retry, hedge,
//! mirror) wraps [`Route::send`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::uri::{Authority, PathAndQuery};
use http::{Request, Response};
use pin_project_lite::pin_project;
use tokio::time::Instant;
use tokio_util::either::Either;

use super::call_state::CallState;
use crate::boxed::BoxBody;
use crate::upstream::{Unsent, UpstreamBody};
use crate::{HeaderEdits, Upstream, UpstreamError};

/// What sending gives: the response head and the address of the backend that answered.
pub(super) type Sent = Result<(Response<UpstreamBody>, Arc<str>), UpstreamError>;

/// Where a call goes and how, as its director's target decided.
#[derive(Debug)]
pub(super) struct Route {
    pub(super) upstream: Upstream,
    /// Tried when `upstream` cannot be reached.
    pub(super) alternate: Option<Upstream>,
    /// The `:authority` the director chose.
    pub(super) authority: Option<Authority>,
    pub(super) response_edits: Option<Arc<HeaderEdits>>,
    /// When the call's time is up.
    pub(super) deadline: Option<Instant>,
    /// How the call is sent more than once (retries, hedges), if it is.
    pub(super) resend: Option<super::replay::Resend>,
}

impl Route {
    /// Sends `request` to the target's endpoint (see [`send_to`](Self::send_to)). Not
    /// async itself: the call's future holds the request once.
    pub(super) fn send<'a>(
        &'a self,
        request: Request<BoxBody>,
        path: &'a PathAndQuery,
        client_authority: &'a Option<Authority>,
        call: &'a Arc<CallState>,
    ) -> impl Future<Output = Sent> + 'a {
        let (to, alternate) = self.endpoints_for(1);
        match alternate {
            // No alternate to fail over to: the try itself, its answer labelled.
            None => Either::Left(Answered {
                sending: to.try_send(request, Some(call)),
                upstream: to,
            }),
            Some(_) => {
                Either::Right(self.send_to(to, alternate, request, path, client_authority, call))
            }
        }
    }

    /// Sends `request` to `upstream` and waits for the response head; returns it with the
    /// address of the backend that answered. When `upstream` cannot be reached before
    /// anything was sent, the request goes to `alternate`, if there is one.
    pub(super) async fn send_to(
        &self,
        upstream: &Upstream,
        alternate: Option<&Upstream>,
        request: Request<BoxBody>,
        path: &PathAndQuery,
        client_authority: &Option<Authority>,
        call: &Arc<CallState>,
    ) -> Sent {
        // The call's end reaches the backend even if it stopped reading the request.
        let unsent = match upstream.try_send(request, Some(call)).await {
            Ok(response) => return Ok((response, upstream.shared_address().clone())),
            Err(unsent) => unsent,
        };
        let (alternate, error, mut request) = match (alternate, unsent) {
            (
                Some(alternate),
                Unsent {
                    error,
                    request: Some(request),
                },
            ) => (alternate, error, request),
            (_, unsent) => return Err(unsent.error),
        };
        tracing::debug!(error = %error, alternate = alternate.address(), "backend unreachable; trying the alternate");
        *request.uri_mut() = alternate.request_uri(
            path.clone(),
            self.authority.clone(),
            client_authority.clone(),
        );
        call.failed_over(
            alternate.shared_address().clone(),
            upstream.shared_address().clone(),
        );
        // Boxed: the rare path should not double every call's future.
        match Box::pin(alternate.try_send(request, Some(call))).await {
            Ok(response) => Ok((response, alternate.shared_address().clone())),
            Err(unsent) => Err(unsent.error),
        }
    }

    /// Where try number `attempt` goes, and where it fails over to: the target's endpoint
    /// and its alternate take turns.
    pub(super) fn endpoints_for(
        &self,
        attempt: u32,
    ) -> (&crate::Upstream, Option<&crate::Upstream>) {
        match &self.alternate {
            Some(alternate) if attempt.is_multiple_of(2) => (alternate, Some(&self.upstream)),
            alternate => (&self.upstream, alternate.as_ref()),
        }
    }
}

pin_project! {
    /// A try on an endpoint without an alternate: its response with the endpoint's address,
    /// or its error.
    struct Answered<'a, F> {
        #[pin]
        sending: F,
        upstream: &'a Upstream,
    }
}

impl<F> Future for Answered<'_, F>
where
    F: Future<Output = Result<Response<UpstreamBody>, Unsent>>,
{
    type Output = Sent;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Sent> {
        let this = self.project();
        this.sending.poll(cx).map(|sent| match sent {
            Ok(response) => Ok((response, this.upstream.shared_address().clone())),
            Err(unsent) => Err(unsent.error),
        })
    }
}
