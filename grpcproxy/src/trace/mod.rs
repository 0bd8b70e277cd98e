//! Distributed tracing (feature `otel`): every call continues its caller's W3C trace
//! (`traceparent`, `tracestate`) with a span of the proxy's own, and the backend gets a
//! `traceparent` whose parent is that span, so the hop shows in the trace.
//!
//! - [`CallTracer`] does it for one call from a director: extracts the caller's context
//!   from the metadata (`traceparent`, else OpenCensus `grpc-trace-bin`; a malformed one is
//!   ignored, as W3C says), starts the span
//!   (sampled as the tracer's sampler says: parent-based ratio in the binary), rewrites
//!   `traceparent`/`tracestate` for the backend, and gives an observer that ends the span
//!   with the call's status, endpoint, bytes and messages each way, and an event per retry,
//!   hedge and mirror.
//! - [`Traced`] wraps any [`StreamDirector`] with it.
//! - [`SpanQueue`] exports finished spans without ever blocking a call: a bounded queue,
//!   batches sent by a task, drops and failures counted.
//!
//! ```no_run
//! use grpcproxy::trace::{CallTracer, Traced};
//! use grpcproxy::{mq::NoQueue, SingleUpstream, TransparentProxy, Upstream};
//! use opentelemetry::trace::TracerProvider as _;
//!
//! # fn run(provider: opentelemetry_sdk::trace::SdkTracerProvider) -> Result<(), Box<dyn std::error::Error>> {
//! let tracer = CallTracer::new(provider.tracer("grpcproxy"));
//! let director = Traced::new(SingleUpstream::new(Upstream::new("http://127.0.0.1:50052")?), tracer);
//! let proxy = TransparentProxy::new(NoQueue, director);
//! # Ok(()) }
//! ```

mod census;
mod headers;
mod queue;

use std::future::Future;
use std::sync::{Arc, Mutex};

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{Span as _, SpanBuilder, SpanKind, Status, TraceContextExt, Tracer};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::propagation::TraceContextPropagator;

pub use queue::{SpanQueue, SpanQueueOptions, SpanQueueStats};

use crate::{CallInfo, CallObserver, CallRecord, SharedObserver, StreamDirector, Target};
use headers::{Carried, Extract, Inject};

/// Starts a span for each call it is given, continuing the caller's trace.
///
/// ```
/// use grpcproxy::trace::CallTracer;
/// use opentelemetry::trace::noop::NoopTracer;
///
/// let tracer = CallTracer::new(NoopTracer::new());
/// ```
#[derive(Debug, Clone)]
pub struct CallTracer<T> {
    tracer: T,
    propagator: Arc<TraceContextPropagator>,
}

impl<T> CallTracer<T>
where
    T: Tracer + Send + Sync,
    T::Span: Send + Sync + 'static,
{
    /// Spans from `tracer` (its sampler decides which calls are traced).
    pub fn new(tracer: T) -> Self {
        Self {
            tracer,
            propagator: Arc::new(TraceContextPropagator::new()),
        }
    }

    /// Starts `call`'s span (named after its method, kind server, with the RPC attributes
    /// and `attributes()`, made only for a span that records) as a child of the caller's
    /// context, and sets the `traceparent` the backend gets: the span's, when it is sampled
    /// or the caller sent a valid one (then also unsampled, as W3C asks of
    /// intermediaries); otherwise the call carries none. `None` when the call is not traced.
    pub fn start(
        &self,
        call: &mut CallInfo,
        attributes: impl FnOnce() -> Vec<KeyValue>,
    ) -> Option<TracedCall<T::Span>> {
        let headers = call.metadata().as_ref();
        let carried = Carried::in_headers(headers);
        let mut parent = if carried.traceparent {
            self.propagator
                .extract_with_context(&Context::new(), &Extract(headers))
        } else {
            Context::new()
        };
        // No W3C context: an OpenCensus one, from older gRPC stacks.
        if carried.census && !parent.span().span_context().is_valid() {
            if let Some(context) = census::extract(headers) {
                parent = Context::new().with_remote_span_context(context);
            }
        }
        let has_parent = parent.span().span_context().is_valid();
        let builder = SpanBuilder::from_name(call.method().to_owned()).with_kind(SpanKind::Server);
        let mut span = self.tracer.build_with_context(builder, &parent);
        if span.is_recording() {
            let mut all = Vec::with_capacity(8);
            all.extend([
                KeyValue::new("rpc.system", "grpc"),
                KeyValue::new("rpc.service", call.service_name().to_owned()),
                KeyValue::new("rpc.method", call.method_name().to_owned()),
                KeyValue::new("grpc.method", call.method().to_owned()),
            ]);
            if let Some(peer) = call.remote_addr() {
                all.push(KeyValue::new("network.peer.address", peer.ip().to_string()));
                all.push(KeyValue::new("network.peer.port", i64::from(peer.port())));
            }
            all.extend(attributes());
            span.set_attributes(all);
        }
        let context = span.span_context().clone();
        let headers = call.metadata_mut().as_mut();
        carried.remove_from(headers);
        if !(context.is_sampled() || has_parent) || !context.is_valid() {
            return None;
        }
        let ids = (
            context.trace_id().to_string(),
            context.span_id().to_string(),
        );
        if carried.census {
            // The backend reads the same kind of context it was sent, with the proxy's hop.
            headers.insert(census::KEY, census::encode(&context));
        }
        let forwarded = Context::new().with_remote_span_context(context);
        self.propagator
            .inject_context(&forwarded, &mut Inject(headers));
        Some(TracedCall {
            span: Arc::new(Mutex::new(Some(span))),
            ids: Arc::new(ids),
        })
    }
}

/// A traced call's span, ended by its observer.
#[derive(Debug)]
pub struct TracedCall<S> {
    span: Arc<Mutex<Option<S>>>,
    /// The trace id and the proxy's span id, as hex.
    ids: Arc<(String, String)>,
}

impl<S> TracedCall<S> {
    /// The trace id and the proxy's span id, as hex (for logs).
    pub fn ids(&self) -> (&str, &str) {
        (&self.ids.0, &self.ids.1)
    }

    /// Ends the span of a call the director refused with `status`.
    pub fn refused(self, status: &tonic::Status)
    where
        S: opentelemetry::trace::Span,
    {
        let span = self.span.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(mut span) = span {
            span.set_attribute(KeyValue::new("rpc.grpc.status_code", status.code() as i64));
            span.set_status(Status::error(format!(
                "{:?}: {}",
                status.code(),
                status.message()
            )));
            span.end();
        }
    }

    /// The observer that ends the span when the call is over (status, endpoint, bytes and
    /// messages each way, an event per retry, hedge and mirror), then tells `inner`.
    pub fn observer(self, inner: Option<SharedObserver>) -> SharedObserver
    where
        S: opentelemetry::trace::Span + Send + Sync + 'static,
    {
        Arc::new(SpanEnd {
            span: self.span,
            ids: self.ids,
            inner,
        })
    }
}

struct SpanEnd<S> {
    span: Arc<Mutex<Option<S>>>,
    ids: Arc<(String, String)>,
    inner: Option<SharedObserver>,
}

impl<S> CallObserver for SpanEnd<S>
where
    S: opentelemetry::trace::Span + Send + Sync + 'static,
{
    fn call_ended(&self, call: &CallRecord<'_>) {
        let span = self.span.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(mut span) = span.filter(|span| span.is_recording()) {
            span.set_attributes([
                KeyValue::new("rpc.grpc.status_code", call.grpc_status as i64),
                KeyValue::new("grpcproxy.endpoint", call.backend.to_owned()),
                KeyValue::new("grpcproxy.request_bytes", call.request_bytes as i64),
                KeyValue::new("grpcproxy.response_bytes", call.response_bytes as i64),
                KeyValue::new("grpcproxy.request_messages", call.request_messages as i64),
                KeyValue::new("grpcproxy.response_messages", call.response_messages as i64),
            ]);
            for attempt in call.attempts {
                span.add_event_with_timestamp(
                    attempt.kind.as_str(),
                    attempt.at,
                    attempt_attributes(attempt),
                );
            }
            if let Some(unreachable) = call.unreachable {
                span.set_attribute(KeyValue::new(
                    "grpcproxy.unreachable",
                    unreachable.to_owned(),
                ));
            }
            if call.grpc_status != tonic::Code::Ok {
                let message = call.grpc_message.unwrap_or_default();
                span.set_status(Status::error(format!("{:?}: {message}", call.grpc_status)));
            }
            span.end_with_timestamp(call.started + call.duration);
        }
        if let Some(inner) = &self.inner {
            inner.call_ended(&CallRecord {
                trace_id: Some(&self.ids.0),
                span_id: Some(&self.ids.1),
                ..call.clone()
            });
        }
    }
}

/// What a retry, hedge or mirror event on the span says of its try.
fn attempt_attributes(attempt: &crate::Attempt) -> Vec<KeyValue> {
    let mut attributes = Vec::with_capacity(3);
    if attempt.number > 0 {
        attributes.push(KeyValue::new(
            "grpcproxy.attempt",
            i64::from(attempt.number),
        ));
    }
    attributes.push(KeyValue::new(
        "grpcproxy.endpoint",
        attempt.endpoint.to_string(),
    ));
    if let Some(after) = attempt.after {
        attributes.push(KeyValue::new(
            "grpcproxy.previous_status_code",
            after as i64,
        ));
    }
    attributes
}

/// Any director, with every call traced by a [`CallTracer`].
///
/// ```
/// use grpcproxy::trace::{CallTracer, Traced};
/// use grpcproxy::{SingleUpstream, StreamDirector, Upstream};
/// use opentelemetry::trace::noop::NoopTracer;
///
/// fn director(_: impl StreamDirector) {}
/// let backend = Upstream::new("http://127.0.0.1:50052").unwrap();
/// director(Traced::new(SingleUpstream::new(backend), CallTracer::new(NoopTracer::new())));
/// ```
#[derive(Debug, Clone)]
pub struct Traced<D, T> {
    inner: D,
    tracer: CallTracer<T>,
}

impl<D, T> Traced<D, T> {
    /// `inner`, traced by `tracer`.
    pub fn new(inner: D, tracer: CallTracer<T>) -> Self {
        Self { inner, tracer }
    }
}

impl<D, T> StreamDirector for Traced<D, T>
where
    D: StreamDirector,
    T: Tracer + Send + Sync + 'static,
    T::Span: Send + Sync + 'static,
{
    fn direct(
        &self,
        mut call: CallInfo,
    ) -> impl Future<Output = Result<Target, tonic::Status>> + Send {
        let traced = self.tracer.start(&mut call, Vec::new);
        let directed = self.inner.direct(call);
        async move {
            match (directed.await, traced) {
                (Ok(target), Some(traced)) => {
                    let inner = target.overrides.observer.clone();
                    Ok(target.with_observer(traced.observer(inner)))
                }
                (Err(status), Some(traced)) => {
                    traced.refused(&status);
                    Err(status)
                }
                (directed, None) => directed,
            }
        }
    }
}
