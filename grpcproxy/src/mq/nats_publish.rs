//! Getting each tap event into JetStream exactly once: the stream before the first event,
//! a message id per event, and publishing again until the broker acknowledges it.

use std::time::Duration;

use async_nats::jetstream::context::{Context, PublishAckFuture, PublishError};
use bytes::Bytes;

use super::nats_options::{NatsOptions, StreamStorage};

/// Creates (or finds) the stream `name` over `<prefix>.>`, trying again with backoff until
/// it exists; a stream that exists keeps its own configuration.
pub(crate) async fn ensure_stream(jetstream: &Context, name: &str, options: &NatsOptions) {
    use async_nats::jetstream::stream;
    let limits = &options.stream_limits;
    let config = stream::Config {
        name: name.to_owned(),
        subjects: vec![format!("{}.>", options.subject_prefix)],
        max_bytes: limits.max_bytes,
        max_age: limits.max_age,
        storage: match limits.storage {
            StreamStorage::File => stream::StorageType::File,
            StreamStorage::Memory => stream::StorageType::Memory,
        },
        discard: stream::DiscardPolicy::Old,
        num_replicas: limits.replicas,
        ..Default::default()
    };
    let mut delay = Duration::from_millis(100);
    loop {
        match jetstream.get_or_create_stream(config.clone()).await {
            Ok(_) => return tracing::info!(stream = %name, "NATS tap stream ready"),
            Err(e) => {
                tracing::warn!(stream = %name, error = %e, "cannot create the NATS tap stream yet; events wait in the buffer")
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// `Nats-Msg-Id`s unique across processes and restarts: a random instance prefix and a
/// sequence number. JetStream stores a message published twice under one id once.
pub(crate) struct MessageIds {
    instance: u64,
    next: u64,
}

impl MessageIds {
    pub(crate) fn new() -> Self {
        Self {
            instance: fastrand::u64(..),
            next: 0,
        }
    }

    pub(crate) fn next(&mut self) -> String {
        self.next += 1;
        format!("{:016x}-{}", self.instance, self.next)
    }
}

/// One event as published: kept until the broker acknowledges it.
pub(crate) struct Message {
    pub(crate) subject: String,
    pub(crate) headers: async_nats::HeaderMap,
    pub(crate) payload: Bytes,
}

/// Waits for the acknowledgement of the first attempt (`first`), publishing again with
/// backoff while none comes, for up to `retry_for`. True once acknowledged; false when it
/// gave up (the event counts as failed).
pub(crate) async fn until_acked(
    jetstream: Context,
    message: Message,
    first: Result<PublishAckFuture, PublishError>,
    retry_for: Duration,
) -> bool {
    let started = tokio::time::Instant::now();
    let mut attempt = first;
    let mut delay = Duration::from_millis(100);
    loop {
        let error = match attempt {
            Ok(ack) => match ack.await {
                Ok(_) => return true,
                Err(e) => e.to_string(),
            },
            Err(e) => e.to_string(),
        };
        if started.elapsed() + delay > retry_for {
            tracing::debug!(%error, "NATS tap event not acknowledged; giving up");
            return false;
        }
        tracing::debug!(%error, "NATS tap event not acknowledged yet; publishing it again");
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(2));
        attempt = jetstream
            .publish_with_headers(
                message.subject.clone(),
                message.headers.clone(),
                message.payload.clone(),
            )
            .await;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn message_ids_are_unique_per_process_and_event() {
        let (mut a, mut b) = (super::MessageIds::new(), super::MessageIds::new());
        let (first, second) = (a.next(), a.next());
        assert_ne!(first, second);
        assert!(
            first.ends_with("-1") && second.ends_with("-2"),
            "{first} {second}"
        );
        assert_ne!(a.next(), b.next());
    }
}
