//! Publishing the tap to NATS JetStream.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use tokio::sync::mpsc;

use super::{wire, MessageQueue, TapEvent};

/// Where and how a [`NatsQueue`] publishes.
///
/// ```
/// let options = grpcproxy::mq::NatsOptions {
///     stream: Some("GRPCPROXY".into()),
///     ..grpcproxy::mq::NatsOptions::new("nats://127.0.0.1:4222")
/// };
/// assert_eq!(options.subject_prefix, "grpcproxy.calls");
/// ```
#[derive(Debug, Clone)]
pub struct NatsOptions {
    /// The server, `nats://host:port`.
    pub url: String,
    /// Events of `/pkg.Service/Method` go to `<prefix>.pkg.Service.Method`.
    pub subject_prefix: String,
    /// Create (or reuse) this JetStream stream over `<prefix>.>` at start.
    pub stream: Option<String>,
    /// Events held while the broker is slow or away; beyond, new events are dropped.
    pub capacity: usize,
    /// Largest payload published per message, in bytes.
    pub max_payload: usize,
    /// Publish acknowledgements awaited at once (each is a pending event in memory).
    pub max_pending_acks: usize,
}

impl NatsOptions {
    /// Defaults for a server at `url`.
    pub fn new(url: &str) -> Self {
        Self {
            url: url.to_owned(),
            subject_prefix: "grpcproxy.calls".into(),
            stream: None,
            capacity: 8192,
            max_payload: usize::MAX,
            max_pending_acks: 1024,
        }
    }
}

/// Counters of a [`NatsQueue`].
#[derive(Debug, Default)]
pub struct NatsStats {
    published: AtomicU64,
    dropped: AtomicU64,
    failed: AtomicU64,
    connected: AtomicBool,
}

impl NatsStats {
    /// Events the broker acknowledged.
    pub fn published(&self) -> u64 {
        self.published.load(Ordering::Relaxed)
    }
    /// Events dropped because the queue was full (the broker slow or away).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
    /// Events the broker did not acknowledge (error or timeout).
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }
    /// Whether the client is connected now.
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }
}

/// A [`MessageQueue`] that publishes every event, protobuf-encoded
/// ([`wire::TapEvent`]), to NATS JetStream. The call path only hands events to a bounded
/// channel; a background task publishes them, reconnects with backoff when the broker goes
/// away, and counts what it could not deliver.
#[derive(Debug, Clone)]
pub struct NatsQueue {
    events: mpsc::Sender<TapEvent>,
    stats: Arc<NatsStats>,
    max_payload: usize,
}

impl NatsQueue {
    /// Starts publishing to `options.url` (connecting in the background: the broker may be
    /// down at start). Must be called inside a tokio runtime.
    pub fn start(options: NatsOptions) -> Self {
        let (events, receiver) = mpsc::channel(options.capacity.max(1));
        let stats = Arc::new(NatsStats::default());
        let max_payload = options.max_payload;
        tokio::spawn(publish_loop(options, receiver, stats.clone()));
        Self {
            events,
            stats,
            max_payload,
        }
    }

    /// Published, dropped, failed, connected.
    pub fn stats(&self) -> &Arc<NatsStats> {
        &self.stats
    }
}

impl MessageQueue for NatsQueue {
    fn wants(&self, _method: &str) -> bool {
        true
    }

    fn max_payload(&self) -> usize {
        self.max_payload
    }

    fn publish(&self, event: TapEvent) {
        if self.events.try_send(event).is_err() {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
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
    mut events: mpsc::Receiver<TapEvent>,
    stats: Arc<NatsStats>,
) {
    let flag = stats.clone();
    let connecting = async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .connection_timeout(Duration::from_secs(2))
        .reconnect_delay_callback(|attempt| {
            Duration::from_millis((100 * 2u64.pow(attempt.min(6) as u32)).min(5_000))
        })
        .event_callback(move |event| {
            let flag = flag.clone();
            async move {
                match event {
                    async_nats::Event::Connected => flag.connected.store(true, Ordering::Relaxed),
                    async_nats::Event::Disconnected | async_nats::Event::Closed => {
                        flag.connected.store(false, Ordering::Relaxed)
                    }
                    other => tracing::debug!(event = %other, "NATS client event"),
                }
            }
        })
        .connect(options.url.as_str())
        .await;
    let client = match connecting {
        Ok(client) => client,
        Err(e) => {
            tracing::error!(url = %options.url, error = %e, "the NATS tap cannot start; events will be dropped");
            while events.recv().await.is_some() {
                stats.dropped.fetch_add(1, Ordering::Relaxed);
            }
            return;
        }
    };
    let mut jetstream = async_nats::jetstream::new(client);
    jetstream.set_timeout(Duration::from_secs(2));
    if let Some(name) = options.stream.clone() {
        let jetstream = jetstream.clone();
        let subjects = vec![format!("{}.>", options.subject_prefix)];
        tokio::spawn(async move {
            let mut delay = Duration::from_millis(100);
            loop {
                let config = async_nats::jetstream::stream::Config {
                    name: name.clone(),
                    subjects: subjects.clone(),
                    ..Default::default()
                };
                match jetstream.get_or_create_stream(config).await {
                    Ok(_) => return tracing::info!(stream = %name, "NATS tap stream ready"),
                    Err(e) => {
                        tracing::warn!(stream = %name, error = %e, "cannot create the NATS tap stream yet")
                    }
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        });
    }
    let mut subjects: HashMap<u64, String> = HashMap::new();
    let mut acks = tokio::task::JoinSet::new();
    loop {
        let event = tokio::select! {
            event = events.recv() => match event {
                Some(event) => event,
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
        };
        let payload = wire::TapEvent::from(&event).encode_to_vec();
        while acks.len() >= options.max_pending_acks {
            reap(acks.join_next().await, &stats);
        }
        match jetstream.publish(subject, payload.into()).await {
            Ok(ack) => {
                acks.spawn(std::future::IntoFuture::into_future(ack));
            }
            Err(e) => {
                tracing::debug!(error = %e, "NATS tap publish failed");
                stats.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    while let Some(done) = acks.join_next().await {
        reap(Some(done), &stats);
    }
}

fn reap(
    done: Option<
        Result<
            Result<
                async_nats::jetstream::publish::PublishAck,
                async_nats::jetstream::context::PublishError,
            >,
            tokio::task::JoinError,
        >,
    >,
    stats: &NatsStats,
) {
    match done {
        Some(Ok(Ok(_))) => stats.published.fetch_add(1, Ordering::Relaxed),
        Some(_) => stats.failed.fetch_add(1, Ordering::Relaxed),
        None => 0,
    };
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
