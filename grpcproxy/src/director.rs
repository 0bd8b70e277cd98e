//! The director: user code that decides, per call, where the call goes.

use std::any::Any;
use std::future::Future;
use std::time::Duration;

use http::uri::Authority;
use tonic::metadata::MetadataMap;
use tonic::Status;

use crate::{CallInfo, Upstream};

impl CallInfo {
    /// Forwards the call to `upstream` with this call's (possibly edited) metadata.
    pub fn forward_to(self, upstream: Upstream) -> Target {
        Target::new(upstream, self.into_metadata())
    }
}

/// Where a call goes and with which metadata: what a [`StreamDirector`] returns.
///
/// ```
/// use grpcproxy::{CallInfo, Target, Upstream};
///
/// let upstream = Upstream::new("http://127.0.0.1:50052").unwrap();
/// let mut call = CallInfo::new("/pkg.Svc/M".parse().unwrap(), Default::default());
/// call.metadata_mut().insert("x-routed-by", "grpcproxy".parse().unwrap());
/// let target: Target = call.forward_to(upstream);
/// assert_eq!(target.metadata().get("x-routed-by").unwrap(), "grpcproxy");
/// ```
#[derive(Debug)]
pub struct Target {
    upstream: Upstream,
    metadata: MetadataMap,
    pub(crate) overrides: CallOverrides,
}

/// Per-call settings a director may set on its [`Target`].
#[derive(Default)]
pub(crate) struct CallOverrides {
    pub(crate) max_timeout: Option<Duration>,
    pub(crate) default_timeout: Option<Duration>,
    pub(crate) authority: Option<Authority>,
    pub(crate) guard: Option<Box<dyn Any + Send + Sync>>,
    pub(crate) observer: Option<crate::SharedObserver>,
    pub(crate) alternate: Option<Upstream>,
    pub(crate) response_edits: Option<std::sync::Arc<crate::HeaderEdits>>,
    pub(crate) retry: Option<std::sync::Arc<crate::policy::RetryPolicy>>,
    pub(crate) hedge: Option<std::sync::Arc<crate::policy::HedgePolicy>>,
    pub(crate) mirror: Option<Box<crate::policy::Mirror>>,
    pub(crate) fan_out: Option<Box<crate::policy::FanOut>>,
}

impl std::fmt::Debug for CallOverrides {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallOverrides")
            .field("max_timeout", &self.max_timeout)
            .field("default_timeout", &self.default_timeout)
            .field("authority", &self.authority)
            .field("guard", &self.guard.is_some())
            .field("observer", &self.observer.is_some())
            .field("alternate", &self.alternate)
            .field("response_edits", &self.response_edits)
            .field("retry", &self.retry)
            .field("hedge", &self.hedge)
            .field("mirror", &self.mirror)
            .field("fan_out", &self.fan_out)
            .finish()
    }
}

impl Target {
    /// Forward to `upstream` with exactly `metadata` as the outgoing request metadata.
    pub fn new(upstream: Upstream, metadata: MetadataMap) -> Self {
        Self {
            upstream,
            metadata,
            overrides: CallOverrides::default(),
        }
    }

    /// Caps this call's deadline at `max` (a client asking for more, or for none, gets `max`)
    /// and gives calls without `grpc-timeout` the `default`. These replace the proxy's
    /// [`ProxyOptions`](crate::ProxyOptions) limits for this call.
    pub fn timeout_limits(mut self, max: Option<Duration>, default: Option<Duration>) -> Self {
        self.overrides.max_timeout = max;
        self.overrides.default_timeout = default;
        self
    }

    /// Sends `authority` as the `:authority` of the outgoing request.
    pub fn authority(mut self, authority: Authority) -> Self {
        self.overrides.authority = Some(authority);
        self
    }

    /// Keeps `guard` alive until the call is completely over (response finished or reset,
    /// request half closed), then drops it: for in-flight accounting such as a load
    /// balancer's counters.
    ///
    /// ```
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    /// use std::sync::Arc;
    /// use grpcproxy::{CallInfo, Target, Upstream};
    ///
    /// struct InFlight(Arc<AtomicUsize>);
    /// impl Drop for InFlight {
    ///     fn drop(&mut self) {
    ///         self.0.fetch_sub(1, Ordering::Relaxed);
    ///     }
    /// }
    ///
    /// let in_flight = Arc::new(AtomicUsize::new(0));
    /// in_flight.fetch_add(1, Ordering::Relaxed);
    /// let call = CallInfo::new("/pkg.Svc/M".parse().unwrap(), Default::default());
    /// let target = call
    ///     .forward_to(Upstream::new("http://127.0.0.1:50052").unwrap())
    ///     .with_guard(InFlight(in_flight.clone()));
    /// drop(target); // a target that is never used drops its guard at once
    /// assert_eq!(in_flight.load(Ordering::Relaxed), 0);
    /// ```
    pub fn with_guard(mut self, guard: impl Any + Send + Sync) -> Self {
        self.overrides.guard = Some(Box::new(guard));
        self
    }

    /// Sends the call to `alternate` instead if no connection to the first upstream can be
    /// made: the request has not left the proxy then, so nothing runs twice. (A load
    /// balancer passes its second choice.)
    pub fn alternate(mut self, alternate: Upstream) -> Self {
        self.overrides.alternate = Some(alternate);
        self
    }

    /// Retries the call under `policy`: a failed try goes again, to the alternate (if any)
    /// and the upstream in turn.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use grpcproxy::{policy::RetryPolicy, Target, Upstream};
    /// use tonic::{metadata::MetadataMap, Code};
    ///
    /// let policy = Arc::new(RetryPolicy::new([Code::Unavailable], 3));
    /// let upstream = Upstream::new("http://127.0.0.1:50052").unwrap();
    /// let target = Target::new(upstream, MetadataMap::new()).retry(policy);
    /// ```
    pub fn retry(mut self, policy: std::sync::Arc<crate::policy::RetryPolicy>) -> Self {
        self.overrides.retry = Some(policy);
        self
    }

    /// Hedges the call under `policy` (idempotent methods only): more tries go out while
    /// none has answered, the first answer wins. Takes the place of a retry policy.
    ///
    /// ```
    /// use std::{sync::Arc, time::Duration};
    /// use grpcproxy::{policy::{HedgeDelay, HedgePolicy}, Target, Upstream};
    /// use tonic::metadata::MetadataMap;
    ///
    /// let policy = Arc::new(HedgePolicy::new(HedgeDelay::Fixed(Duration::from_millis(50)), 2));
    /// let upstream = Upstream::new("http://127.0.0.1:50052").unwrap();
    /// let target = Target::new(upstream, MetadataMap::new()).hedge(policy);
    /// ```
    pub fn hedge(mut self, policy: std::sync::Arc<crate::policy::HedgePolicy>) -> Self {
        self.overrides.hedge = Some(policy);
        self
    }

    /// Mirrors the call (see [`MirrorPolicy`](crate::policy::MirrorPolicy)): it also goes
    /// to the mirror's shadow backend, whose answer never reaches the client. The director
    /// decides which calls (e.g. [`MirrorPolicy::sample`](crate::policy::MirrorPolicy::sample)).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use grpcproxy::policy::{Mirror, MirrorPolicy};
    /// use grpcproxy::{Target, Upstream};
    /// use tonic::metadata::MetadataMap;
    ///
    /// let policy = Arc::new(MirrorPolicy::new(100.0).compare(true));
    /// let shadow = Upstream::new("http://127.0.0.1:50053").unwrap();
    /// let upstream = Upstream::new("http://127.0.0.1:50052").unwrap();
    /// let target = Target::new(upstream, MetadataMap::new()).mirror(Mirror::new(policy, shadow));
    /// ```
    pub fn mirror(mut self, mirror: crate::policy::Mirror) -> Self {
        self.overrides.mirror = Some(Box::new(mirror));
        self
    }

    /// Fans the call out: it goes to every member of `fan` at once (the target's own
    /// upstream is not added: name it as a member), and the members' answers are merged
    /// as `fan`'s [`FanOutMode`](crate::policy::FanOutMode) says. Retries and hedging do
    /// not apply to a fanned-out call; a mirror still does.
    ///
    /// ```
    /// use grpcproxy::policy::{FanOut, FanOutMode};
    /// use grpcproxy::{Target, Upstream};
    /// use tonic::metadata::MetadataMap;
    ///
    /// let dc1 = Upstream::new("http://127.0.0.1:50061").unwrap();
    /// let dc2 = Upstream::new("http://127.0.0.1:50062").unwrap();
    /// let fan = FanOut::new(FanOutMode::All).member("dc1", dc1.clone()).member("dc2", dc2);
    /// let target = Target::new(dc1, MetadataMap::new()).fan_out(fan);
    /// ```
    pub fn fan_out(mut self, fan: crate::policy::FanOut) -> Self {
        self.overrides.fan_out = Some(Box::new(fan));
        self
    }

    /// Edits the response metadata the client receives: the response headers, or the
    /// trailers of a trailers-only response. Trailers after messages pass unchanged.
    pub fn response_metadata(mut self, edits: std::sync::Arc<crate::HeaderEdits>) -> Self {
        self.overrides.response_edits = Some(edits);
        self
    }

    /// The observer the call will tell when it is over, if any.
    pub fn observer(&self) -> Option<&crate::SharedObserver> {
        self.overrides.observer.as_ref()
    }

    /// Tells `observer` about the call when it is over: status, duration, bytes, backend.
    pub fn with_observer(mut self, observer: crate::SharedObserver) -> Self {
        self.overrides.observer = Some(observer);
        self
    }

    /// The backend the call goes to.
    pub fn upstream(&self) -> &Upstream {
        &self.upstream
    }

    /// The outgoing request metadata.
    pub fn metadata(&self) -> &MetadataMap {
        &self.metadata
    }

    /// The outgoing request metadata, to edit.
    pub fn metadata_mut(&mut self) -> &mut MetadataMap {
        &mut self.metadata
    }

    pub(crate) fn into_parts(self) -> (Upstream, MetadataMap, CallOverrides) {
        (self.upstream, self.metadata, self.overrides)
    }
}

/// Decides, for every call, which backend serves it and with which metadata — or rejects it
/// with a status the client receives as is.
///
/// Any `Fn(CallInfo) -> impl Future<Output = Result<Target, Status>>` is a director:
///
/// ```
/// use grpcproxy::{CallInfo, StreamDirector, Target, Upstream};
/// use tonic::Status;
///
/// let backend = Upstream::new("http://127.0.0.1:50052").unwrap();
/// let director = move |call: CallInfo| {
///     let backend = backend.clone();
///     async move {
///         if call.service_name().starts_with("internal.") {
///             return Err(Status::permission_denied("internal services are not exposed"));
///         }
///         Ok(call.forward_to(backend))
///     }
/// };
/// fn assert_director(_: &impl StreamDirector) {}
/// assert_director(&director);
/// ```
///
/// The director runs after every tower layer in front of the proxy, so authentication can be
/// a layer that inserts an identity into the request extensions ([`CallInfo::extensions`]).
/// Cancellation needs no work from the director: when the client goes away, the proxy resets
/// the backend stream.
pub trait StreamDirector: Send + Sync + 'static {
    /// Picks the target for `call`, or returns the status the client should get.
    fn direct(&self, call: CallInfo) -> impl Future<Output = Result<Target, Status>> + Send;
}

impl<F, Fut> StreamDirector for F
where
    F: Fn(CallInfo) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Target, Status>> + Send,
{
    fn direct(&self, call: CallInfo) -> impl Future<Output = Result<Target, Status>> + Send {
        self(call)
    }
}

/// A director that forwards every call, with its metadata unchanged, to one upstream.
///
/// ```
/// use grpcproxy::{SingleUpstream, Upstream};
///
/// let director = SingleUpstream::new(Upstream::new("http://127.0.0.1:50052").unwrap());
/// ```
#[derive(Debug, Clone)]
pub struct SingleUpstream(Upstream);

impl SingleUpstream {
    /// Every call goes to `upstream`.
    pub fn new(upstream: Upstream) -> Self {
        Self(upstream)
    }
}

impl StreamDirector for SingleUpstream {
    fn direct(&self, call: CallInfo) -> impl Future<Output = Result<Target, Status>> + Send {
        std::future::ready(Ok(call.forward_to(self.0.clone())))
    }
}
