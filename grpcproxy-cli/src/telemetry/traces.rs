//! `[tracing]`: every call's span exported over OTLP (gRPC or HTTP/protobuf) through a
//! queue that never blocks a call; the spans themselves are started by the routes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use grpcproxy::trace::{CallTracer, SpanQueue, SpanQueueOptions, SpanQueueStats};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::KeyValue;
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider};
use opentelemetry_sdk::Resource;

use crate::config::{OtlpProtocol, TracingConfig};

/// The tracer the routes start spans with.
pub(crate) type RouteTracer = CallTracer<SdkTracer>;

/// Tracing, running: the tracer, and the queue in front of the exporter.
pub(crate) struct Tracing {
    pub(crate) tracer: RouteTracer,
    queue: SpanQueue<opentelemetry_otlp::SpanExporter>,
    /// Kept so that the tracer's spans have somewhere to go.
    _provider: SdkTracerProvider,
}

impl std::fmt::Debug for Tracing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracing").finish_non_exhaustive()
    }
}

impl Tracing {
    /// Builds the exporter, the queue and the tracer of `config`, and starts exporting (on
    /// the current runtime). `instance` names this process in the spans' resource.
    pub(crate) fn start(config: &TracingConfig, instance: &str) -> anyhow::Result<Self> {
        let timeout = Duration::from_secs(5);
        let exporter = match config.protocol {
            OtlpProtocol::Grpc => {
                let mut metadata = tonic::metadata::MetadataMap::new();
                for (name, value) in &config.headers {
                    let name: tonic::metadata::MetadataKey<tonic::metadata::Ascii> =
                        name.parse().context("tracing.headers")?;
                    metadata.insert(name, value.parse().context("tracing.headers")?);
                }
                opentelemetry_otlp::SpanExporter::builder()
                    .with_tonic()
                    .with_endpoint(config.otlp_endpoint.clone())
                    .with_timeout(timeout)
                    .with_metadata(metadata)
                    .build()
            }
            OtlpProtocol::Http => {
                let endpoint = config.otlp_endpoint.trim_end_matches('/');
                let endpoint = if endpoint.ends_with("/v1/traces") {
                    endpoint.to_owned()
                } else {
                    format!("{endpoint}/v1/traces")
                };
                let headers: HashMap<String, String> = config.headers.clone().into_iter().collect();
                opentelemetry_otlp::SpanExporter::builder()
                    .with_http()
                    .with_endpoint(endpoint)
                    .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                    .with_timeout(timeout)
                    .with_headers(headers)
                    .build()
            }
        }
        .context("tracing: cannot build the OTLP exporter")?;
        let queue = SpanQueue::new(exporter, SpanQueueOptions::default());
        let sampler =
            Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(config.sample_rate)));
        let resource = Resource::builder()
            .with_service_name(config.service_name.clone())
            .with_attribute(KeyValue::new("service.instance.id", instance.to_owned()))
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(queue.clone())
            .with_sampler(sampler)
            .with_resource(resource)
            .build();
        queue.start();
        Ok(Self {
            tracer: CallTracer::new(provider.tracer("grpcproxy")),
            queue,
            _provider: provider,
        })
    }

    /// The queue's counters.
    pub(crate) fn stats(&self) -> Arc<SpanQueueStats> {
        self.queue.stats().clone()
    }

    /// Exports the spans still queued, waiting up to `timeout`.
    pub(crate) async fn flush(&self, timeout: Duration) {
        self.queue.flush(timeout).await;
    }
}
