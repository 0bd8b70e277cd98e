//! The binary's tap: the `[tap]` section's queue, or none.

use grpcproxy::mq::{
    FileOptions, FileQueue, Filtered, MessageQueue, NatsOptions, NatsQueue, TapEvent,
};

use crate::config::Tap;

/// The queue the proxy publishes to.
#[derive(Debug)]
pub(crate) enum TapQueue {
    Off,
    Nats(Filtered<NatsQueue>),
    File(Filtered<FileQueue>),
}

impl TapQueue {
    /// Starts the configured queue (inside the runtime: NATS connects in the background).
    pub(crate) fn start(config: Option<&Tap>) -> anyhow::Result<Self> {
        let Some(tap) = config else {
            return Ok(TapQueue::Off);
        };
        let max_payload = tap.max_payload.unwrap_or(usize::MAX);
        let filter = |q| Filtered::new(q, tap.methods.clone(), tap.sample_rate);
        if let Some(url) = &tap.nats_url {
            let options = NatsOptions {
                stream: tap.stream.clone(),
                subject_prefix: tap.subject_prefix.clone(),
                capacity: tap.capacity,
                max_payload,
                ..NatsOptions::new(url)
            };
            tracing::info!(url, "tap publishing to NATS");
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
            max_payload,
            ..FileOptions::new(&path)
        };
        let queue = FileQueue::start(options)
            .map_err(|e| anyhow::anyhow!("tap.file: cannot open {path}: {e}"))?;
        tracing::info!(path, "tap recording to a file");
        Ok(TapQueue::File(filter(queue)))
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
}
