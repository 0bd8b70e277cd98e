//! The binary's tap: the `[tap]` section's queue, or none.

use std::sync::Arc;
use std::time::Duration;

use grpcproxy::mq::wire::Encoding;
use grpcproxy::mq::{
    redact_url, FileOptions, FileQueue, Filtered, MessageQueue, NatsOptions, NatsQueue, NatsTls,
    QueueStats, StreamLimits, StreamStorage, TapEvent,
};

use crate::config::{Tap, TapEncoding, TapStorage};

/// The queue the proxy publishes to.
#[derive(Debug)]
pub(crate) enum TapQueue {
    Off,
    Nats(Filtered<NatsQueue>),
    File(Filtered<FileQueue>),
}

/// The default `--instance`: the host name (on Kubernetes, the pod's name), the process id
/// and the start time (UTC, to the second), e.g. `edge-7f9c-1-20261129T091500Z`: unique per
/// start, so a restarted process (a container restarted in its pod keeps the pod's name
/// and often pid 1) never reuses its earlier self's call ids.
pub(crate) fn default_instance() -> String {
    let started = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let compact: String = started
        .chars()
        .filter(|c| !matches!(c, '-' | ':'))
        .collect();
    format!("{}-{}-{compact}", host_name(), std::process::id())
}

/// The host name (on Kubernetes, the pod's name).
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "grpcproxy".to_owned())
}

impl TapQueue {
    /// Starts the configured queue (inside the runtime: NATS connects in the background);
    /// its events say they come from `instance`.
    pub(crate) fn start(config: Option<&Tap>, instance: String) -> anyhow::Result<Self> {
        let Some(tap) = config else {
            return Ok(TapQueue::Off);
        };
        let max_payload = tap.max_payload.unwrap_or(usize::MAX);
        let encoding = match tap.encoding {
            TapEncoding::Protobuf => Encoding::Protobuf,
            TapEncoding::Json => Encoding::Json,
        };
        let filter = |q| Filtered::new(q, tap.methods.clone(), tap.sample_rate);
        if let Some(url) = &tap.nats_url {
            let token = match &tap.token_file {
                Some(path) => Some(
                    std::fs::read_to_string(path)
                        .map_err(|e| anyhow::anyhow!("tap.token_file: cannot read {path}: {e}"))?
                        .trim()
                        .to_owned(),
                ),
                None => None,
            };
            let tls = tap.tls.as_ref().map(|tls| NatsTls {
                ca: tls.ca.as_ref().map(Into::into),
                client_cert: tls.cert.as_ref().map(Into::into),
                client_key: tls.key.as_ref().map(Into::into),
            });
            let options = NatsOptions {
                token,
                credentials_file: tap.credentials_file.as_ref().map(Into::into),
                tls,
                stream: tap.stream.clone(),
                subject_prefix: tap.subject_prefix.clone(),
                capacity: tap.capacity,
                max_buffer_bytes: tap.buffer_bytes,
                overflow_wait: tap.overflow_wait,
                max_payload,
                encoding,
                publish_retry: tap.publish_retry,
                stream_limits: StreamLimits {
                    max_bytes: tap.max_bytes,
                    max_age: tap.max_age,
                    storage: match tap.storage {
                        TapStorage::File => StreamStorage::File,
                        TapStorage::Memory => StreamStorage::Memory,
                    },
                    replicas: tap.replicas,
                },
                instance,
                ..NatsOptions::new(url)
            };
            tracing::info!(url = %redact_url(url), instance = %options.instance, "tap publishing to NATS");
            return Ok(TapQueue::Nats(Filtered::new(
                NatsQueue::start(options),
                tap.methods.clone(),
                tap.sample_rate,
            )));
        }
        let path = tap.file.clone().expect("checked: nats_url or file");
        let options = FileOptions {
            rotate_bytes: tap.rotate_bytes,
            keep: tap.keep,
            capacity: tap.capacity,
            max_buffer_bytes: tap.buffer_bytes,
            overflow_wait: tap.overflow_wait,
            max_payload,
            encoding,
            instance,
            ..FileOptions::new(&path)
        };
        let instance = options.instance.clone();
        let queue = FileQueue::start(options)
            .map_err(|e| anyhow::anyhow!("tap.file: cannot open {path}: {e}"))?;
        tracing::info!(path, %instance, "tap recording to a file");
        Ok(TapQueue::File(filter(queue)))
    }
}

impl TapQueue {
    /// The queue's counters, for `/metrics`; none when the tap is off.
    pub(crate) fn stats(&self) -> Option<Arc<QueueStats>> {
        match self {
            TapQueue::Off => None,
            TapQueue::Nats(q) => Some(q.inner().stats().clone()),
            TapQueue::File(q) => Some(q.inner().stats().clone()),
        }
    }

    /// At exit: waits up to `within` for queued events to reach the broker or the file,
    /// and logs what could not.
    pub(crate) async fn flush(&self, within: Duration) {
        let flushed = match self {
            TapQueue::Off => return,
            TapQueue::Nats(q) => tokio::time::timeout(within, q.inner().flush()).await,
            TapQueue::File(q) => tokio::time::timeout(within, q.inner().flush()).await,
        };
        let stats = self.stats().expect("the tap is on");
        let (published, dropped, failed) = (stats.published(), stats.dropped(), stats.failed());
        match flushed {
            Ok(true) if dropped + failed == 0 => {
                tracing::info!(published, dropped, failed, "tap flushed")
            }
            Ok(true) => tracing::warn!(
                published,
                dropped,
                failed,
                "tap flushed; some events never reached the destination"
            ),
            _ => tracing::warn!(
                published,
                dropped,
                failed,
                ?within,
                "tap not flushed in time; events still queued are lost"
            ),
        }
    }
}

impl MessageQueue for TapQueue {
    fn wants(&self, method: &str) -> bool {
        match self {
            TapQueue::Off => false,
            TapQueue::Nats(q) => q.wants(method),
            TapQueue::File(q) => q.wants(method),
        }
    }

    fn max_payload(&self) -> usize {
        match self {
            TapQueue::Off => 0,
            TapQueue::Nats(q) => q.max_payload(),
            TapQueue::File(q) => q.max_payload(),
        }
    }

    fn publish(&self, event: TapEvent) {
        match self {
            TapQueue::Off => {}
            TapQueue::Nats(q) => q.publish(event),
            TapQueue::File(q) => q.publish(event),
        }
    }

    fn max_wait(&self) -> Option<Duration> {
        match self {
            TapQueue::Off => None,
            TapQueue::Nats(q) => q.max_wait(),
            TapQueue::File(q) => q.max_wait(),
        }
    }

    fn poll_room(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        match self {
            TapQueue::Off => std::task::Poll::Ready(()),
            TapQueue::Nats(q) => q.poll_room(cx),
            TapQueue::File(q) => q.poll_room(cx),
        }
    }
}
