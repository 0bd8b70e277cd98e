//! Publishing the tap to NATS JetStream.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::buffer::{Buffer, Command, Freed};
use super::nats_connect;
pub use super::nats_options::{NatsOptions, StreamLimits, StreamStorage};
use super::nats_publish;
use super::redact::redact_url;
use super::wire;
use super::{MessageQueue, QueueStats, TapEvent};

/// The NATS header every tap message carries when the queue has an instance
/// ([`NatsOptions::instance`]): which proxy process published it.
///
/// ```
/// assert_eq!(grpcproxy::mq::INSTANCE_HEADER, "Grpcproxy-Instance");
/// ```
pub const INSTANCE_HEADER: &str = "Grpcproxy-Instance";

/// A [`MessageQueue`] that publishes every event, protobuf-encoded
/// ([`wire::TapEvent`]), to NATS JetStream. The call path only hands events to a bounded
/// channel; a background task publishes them, reconnects with backoff when the broker goes
/// away, and counts what it could not deliver.
#[derive(Clone)]
pub struct NatsQueue {
    buffer: Buffer,
    stats: Arc<QueueStats>,
    max_payload: usize,
    overflow_wait: Option<Duration>,
}

impl NatsQueue {
    /// Starts publishing to `options.url` (connecting in the background: the broker may be
    /// down at start). Must be called inside a tokio runtime.
    pub fn start(options: NatsOptions) -> Self {
        let stats = Arc::new(QueueStats::new(false));
        let (buffer, receiver, freed) =
            Buffer::new(options.capacity, options.max_buffer_bytes, stats.clone());
        let max_payload = options.max_payload;
        let overflow_wait = options.overflow_wait;
        tokio::spawn(publish_loop(options, receiver, stats.clone(), freed));
        Self {
            buffer,
            stats,
            max_payload,
            overflow_wait,
        }
    }

    /// Published (acknowledged), dropped, failed, connected.
    pub fn stats(&self) -> &Arc<QueueStats> {
        &self.stats
    }

    /// Waits until every event published so far is acknowledged by the broker or counted
    /// as failed. Returns false if the publishing task is gone.
    pub async fn flush(&self) -> bool {
        self.buffer.flush().await
    }
}

impl std::fmt::Debug for NatsQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsQueue")
            .field("stats", &self.stats)
            .field("max_payload", &self.max_payload)
            .finish_non_exhaustive()
    }
}

impl MessageQueue for NatsQueue {
    fn wants(&self, _method: &str) -> bool {
        true
    }

    fn max_payload(&self) -> usize {
        self.max_payload
    }

    fn max_wait(&self) -> Option<Duration> {
        self.overflow_wait
    }

    fn poll_room(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        self.buffer.poll_room(cx)
    }

    fn publish(&self, event: TapEvent) {
        self.buffer.publish(event);
    }
}

/// `<prefix>.pkg.Service.Method` for `/pkg.Service/Method`.
fn subject(prefix: &str, method: &str) -> String {
    let name: String = method
        .trim_start_matches('/')
        .chars()
        .map(|c| match c {
            '/' => '.',
            c if c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-' => c,
            _ => '_',
        })
        .collect();
    format!("{prefix}.{name}")
}

async fn publish_loop(
    options: NatsOptions,
    mut events: mpsc::Receiver<Command>,
    stats: Arc<QueueStats>,
    freed: Freed,
) {
    let connecting = nats_connect::connect(&options, &stats).await;
    let client = match connecting {
        Ok(client) => client,
        Err(e) => {
            tracing::error!(url = %redact_url(&options.url), error = %e, "the NATS tap cannot start; events will be dropped");
            while let Some(command) = events.recv().await {
                match command {
                    Command::Event(event) => {
                        freed.event(&event);
                        stats.dropped_one();
                    }
                    Command::Flush(done) => drop(done.send(())),
                }
            }
            return;
        }
    };
    let mut jetstream = async_nats::jetstream::new(client);
    jetstream.set_timeout(Duration::from_secs(2));
    if let Some(name) = &options.stream {
        // Events wait in the buffer until the stream exists: published before it, they
        // would be refused (no stream listens on their subjects).
        nats_publish::ensure_stream(&jetstream, name, &options).await;
    }
    let mut ids = nats_publish::MessageIds::new();
    let mut subjects: HashMap<u64, String> = HashMap::new();
    let mut acks = tokio::task::JoinSet::new();
    loop {
        let event = tokio::select! {
            command = events.recv() => match command {
                Some(Command::Event(event)) => event,
                Some(Command::Flush(done)) => {
                    freed.slot();
                    while let Some(finished) = acks.join_next().await {
                        reap(Some(finished), &stats);
                    }
                    let _ = done.send(());
                    continue;
                }
                None => break,
            },
            // Acknowledgements are counted as they come, also while no event arrives.
            Some(done) = acks.join_next(), if !acks.is_empty() => {
                reap(Some(done), &stats);
                continue;
            }
        };
        let subject = match &event {
            TapEvent::Started(started) => subjects
                .entry(started.call_id)
                .or_insert_with(|| subject(&options.subject_prefix, &started.method))
                .clone(),
            TapEvent::Message(m) => subjects
                .get(&m.call_id)
                .cloned()
                .unwrap_or_else(|| format!("{}.unknown", options.subject_prefix)),
            TapEvent::Ended(e) => subjects
                .remove(&e.call_id)
                .unwrap_or_else(|| format!("{}.unknown", options.subject_prefix)),
            // Often after the call's end: the subject comes from the method again.
            TapEvent::Mirror(m) => subject(&options.subject_prefix, &m.method),
        };
        let mut wire_event = wire::TapEvent::from(&event);
        wire_event.instance.clone_from(&options.instance);
        let payload = options.encoding.encode(&wire_event);
        freed.event(&event);
        while acks.len() >= options.max_pending_acks {
            reap(acks.join_next().await, &stats);
        }
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Content-Type", options.encoding.content_type());
        // `<publisher>-<n>`, n in publish order: JetStream stores an event published again
        // once, and readers put events that landed late (published again after a lost
        // acknowledgement) back in their publisher's order.
        headers.insert(async_nats::header::NATS_MESSAGE_ID, ids.next());
        if !options.instance.is_empty() {
            // Readers can pick an instance's events without decoding them.
            headers.insert(INSTANCE_HEADER, options.instance.as_str());
        }
        // The first attempt goes out here, in event order; the acknowledgement (and any
        // retry, deduplicated by the message id) is awaited off this loop.
        let message = nats_publish::Message {
            subject,
            headers,
            payload: payload.into(),
        };
        let first = jetstream
            .publish_with_headers(
                message.subject.clone(),
                message.headers.clone(),
                message.payload.clone(),
            )
            .await;
        acks.spawn(nats_publish::until_acked(
            jetstream.clone(),
            message,
            first,
            options.publish_retry,
        ));
    }
    while let Some(done) = acks.join_next().await {
        reap(Some(done), &stats);
    }
}

/// Counts a finished publication by its final fate.
fn reap(done: Option<Result<bool, tokio::task::JoinError>>, stats: &QueueStats) {
    match done {
        Some(Ok(true)) => stats.published_one(),
        Some(_) => stats.failed_one(),
        None => {}
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn subjects_follow_the_method() {
        assert_eq!(
            super::subject("grpcproxy.calls", "/pkg.Svc/Get"),
            "grpcproxy.calls.pkg.Svc.Get"
        );
        assert_eq!(super::subject("p", "/a.B/C*>x"), "p.a.B.C__x");
    }
}
