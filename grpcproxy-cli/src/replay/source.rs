//! Where recorded events come from: tap files, or a JetStream stream.

use std::collections::HashMap;
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

/// The servers of a comma-separated list (a cluster's nodes: any one that is up serves).
fn servers(urls: &str) -> Vec<&str> {
    urls.split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .collect()
}

/// How many times a consumer is asked for before the replay gives up.
const CONSUMER_TRIES: u32 = 5;

/// Reads the stream from its first message to the last one present when the read began.
async fn jetstream(
    url: &str,
    name: &str,
    subject: Option<&str>,
) -> anyhow::Result<Vec<wire::TapEvent>> {
    use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
    let client = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(5))
        .connect(servers(url))
        .await
        .with_context(|| format!("cannot connect to NATS at {url}"))?;
    let jetstream = async_nats::jetstream::new(client);
    let mut stream = jetstream
        .get_stream(name)
        .await
        .with_context(|| format!("no JetStream stream {name}"))?;
    let info = stream.info().await?;
    let (state, replicas) = (info.state.clone(), info.config.num_replicas);
    let mut events = Vec::new();
    if state.messages == 0 {
        return Ok(Vec::new());
    }
    // Replicated as the stream is: with a node of the cluster down, creating a consumer of
    // one replica (an ordered one) timed out in most runs (nats-server 2.9.10); one
    // replicated like the stream works while the stream does.
    let config = pull::Config {
        filter_subject: subject.unwrap_or_default().to_owned(),
        deliver_policy: DeliverPolicy::All,
        ack_policy: AckPolicy::None,
        inactive_threshold: Duration::from_secs(30),
        num_replicas: replicas,
        memory_storage: true,
        ..Default::default()
    };
    let mut tries = 1;
    let consumer = loop {
        match stream.create_consumer(config.clone()).await {
            Ok(consumer) => break consumer,
            // A cluster that lost a node may place the consumer there, and time out.
            Err(e) if tries < CONSUMER_TRIES => {
                eprintln!("grpcproxy replay: creating a consumer failed ({e}); trying again");
                tries += 1;
            }
            Err(e) => return Err(e).context(format!("cannot create a consumer ({tries} tries)")),
        }
    };
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
        let order = message
            .headers
            .as_ref()
            .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
            .and_then(|id| publish_order(id.as_str()));
        events.push((order, event));
        if pending == 0 || sequence >= state.last_sequence {
            break;
        }
    }
    Ok(in_publish_order(events))
}

/// The publisher and the place of an event in its order, from the `Nats-Msg-Id` the tap
/// gives it (`<publisher>-<n>`, the publisher a random id per process start).
fn publish_order(id: &str) -> Option<(String, u64)> {
    let (publisher, n) = id.rsplit_once('-')?;
    Some((publisher.to_owned(), n.parse().ok()?))
}

/// The events as each publisher published them. An event whose first publish was not
/// acknowledged (a NATS node lost) is published again, and lands in the stream after
/// events that followed it: a call's start after its messages, say. Each publisher's
/// events are put back in its own order (publishers in the order they first appear;
/// events without a tap message id stay where they are, as one publisher).
fn in_publish_order(events: Vec<(Option<(String, u64)>, wire::TapEvent)>) -> Vec<wire::TapEvent> {
    let mut publishers: HashMap<Option<String>, usize> = HashMap::new();
    let mut keyed: Vec<((usize, u64), wire::TapEvent)> = events
        .into_iter()
        .enumerate()
        .map(|(arrival, (order, event))| {
            let next = publishers.len();
            let (publisher, n) = match order {
                Some((publisher, n)) => (Some(publisher), n),
                None => (None, arrival as u64),
            };
            let publisher = *publishers.entry(publisher).or_insert(next);
            ((publisher, n), event)
        })
        .collect();
    keyed.sort_by_key(|(key, _)| *key);
    keyed.into_iter().map(|(_, event)| event).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use grpcproxy::mq::wire::{CallStarted, Kind, TapEvent};

    fn started(call_id: u64) -> TapEvent {
        TapEvent {
            instance: String::new(),
            schema_version: 1,
            event: Some(Kind::Started(CallStarted {
                call_id,
                ..Default::default()
            })),
        }
    }

    fn ids(events: &[TapEvent]) -> Vec<u64> {
        events
            .iter()
            .map(|e| match &e.event {
                Some(Kind::Started(s)) => s.call_id,
                _ => unreachable!(),
            })
            .collect()
    }

    #[test]
    fn events_published_again_go_back_to_their_place() {
        let order = |id: &str| publish_order(id);
        assert_eq!(order("00ab-7"), Some(("00ab".to_owned(), 7)));
        assert_eq!(order("no-number-x"), None);
        // Publisher a's events 1 and 3 were acknowledged first; 2 was published again.
        let events = vec![
            (order("a-1"), started(1)),
            (order("b-1"), started(10)),
            (order("a-3"), started(3)),
            (order("a-2"), started(2)),
            (None, started(100)),
            (order("b-2"), started(11)),
            (None, started(101)),
        ];
        assert_eq!(ids(&in_publish_order(events)), [1, 2, 3, 10, 11, 100, 101]);
    }
}
