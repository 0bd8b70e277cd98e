//! Where recorded events come from: tap files, or a JetStream stream.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use grpcproxy::mq::wire::{self, Encoding};
use grpcproxy::mq::FileQueue;
use tokio_stream::StreamExt;

/// A recording.
#[derive(Debug, Clone)]
pub(crate) enum Source {
    /// Tap files, read in the order given (rotated files: oldest first).
    Files(Vec<PathBuf>),
    /// Every message of a JetStream stream, optionally only a subject's.
    JetStream {
        url: String,
        stream: String,
        subject: Option<String>,
    },
}

impl Source {
    /// Reads every recorded event, in order.
    pub(crate) async fn events(&self) -> anyhow::Result<Vec<wire::TapEvent>> {
        match self {
            Source::Files(paths) => {
                let mut events = Vec::new();
                for path in paths {
                    events.extend(
                        FileQueue::read(path)
                            .with_context(|| format!("cannot read {}", path.display()))?,
                    );
                }
                Ok(events)
            }
            Source::JetStream {
                url,
                stream,
                subject,
            } => jetstream(url, stream, subject.as_deref()).await,
        }
    }
}

/// Reads the stream from its first message to the last one present when the read began.
async fn jetstream(
    url: &str,
    name: &str,
    subject: Option<&str>,
) -> anyhow::Result<Vec<wire::TapEvent>> {
    use async_nats::jetstream::consumer::{pull::OrderedConfig, DeliverPolicy};
    let client = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(5))
        .connect(url)
        .await
        .with_context(|| format!("cannot connect to NATS at {url}"))?;
    let jetstream = async_nats::jetstream::new(client);
    let mut stream = jetstream
        .get_stream(name)
        .await
        .with_context(|| format!("no JetStream stream {name}"))?;
    let state = stream.info().await?.state.clone();
    let mut events = Vec::new();
    if state.messages == 0 {
        return Ok(events);
    }
    let consumer = stream
        .create_consumer(OrderedConfig {
            filter_subject: subject.unwrap_or_default().to_owned(),
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .context("cannot create a consumer")?;
    let mut messages = consumer.messages().await?;
    loop {
        // A filtered read may have nothing more to deliver before the stream's end.
        let next = tokio::time::timeout(Duration::from_secs(2), messages.next()).await;
        let Ok(Some(message)) = next else { break };
        let message = message.context("reading the stream")?;
        let info = message.info().map_err(|e| anyhow::anyhow!("{e}"))?;
        let (sequence, pending) = (info.stream_sequence, info.pending);
        let event = Encoding::detect(&message.payload)
            .decode(&message.payload)
            .with_context(|| format!("stream message {sequence}"))?;
        events.push(event);
        if pending == 0 || sequence >= state.last_sequence {
            break;
        }
    }
    Ok(events)
}
