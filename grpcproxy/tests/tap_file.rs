//! The file queue records every event as length-delimited protobuf or JSON lines, rotated
//! by size.
#![cfg(feature = "tap-file")]

mod support;

use std::time::{Duration, Instant};

use grpcproxy::mq::{wire, FileOptions, FileQueue};
use grpcproxy::{ProxyRoutes, SingleUpstream, TransparentProxy, Upstream};
use grpcproxy_testing::pb::PingRequest;
use grpcproxy_testing::serve::{ping_backend, ping_client};
use grpcproxy_testing::TestServer;
use prost::Message;

async fn record(options: FileOptions, calls: usize) -> Vec<PingRequest> {
    let queue = FileQueue::start(options).unwrap();
    let stats = queue.stats().clone();
    let (backend, _) = ping_backend().await;
    let proxy = TransparentProxy::new(
        queue.clone(),
        SingleUpstream::new(Upstream::new(&backend.url()).unwrap()),
    );
    let proxy_stats = proxy.stats().clone();
    let server = TestServer::start(ProxyRoutes::new().fallback(proxy).into_routes()).await;
    let mut client = ping_client(server.addr()).await;
    let mut sent = Vec::new();
    for i in 0..calls {
        let ping = PingRequest {
            value: format!("recorded {i}"),
            ..Default::default()
        };
        client.ping(ping.clone()).await.unwrap();
        sent.push(ping);
    }
    assert!(support::all_streams_closed(&proxy_stats).await);
    let deadline = Instant::now() + Duration::from_secs(5);
    while stats.published() < 4 * calls as u64 {
        assert!(
            Instant::now() < deadline,
            "{} events written",
            stats.published()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(queue.flush().await, "the writer thread is alive");
    assert_eq!((stats.dropped(), stats.failed()), (0, 0));
    sent
}

#[tokio::test]
async fn calls_are_recorded_in_order_with_exact_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tap.pb");
    let sent = record(FileOptions::new(&path), 2).await;
    let events = FileQueue::read(&path).unwrap();
    assert_eq!(events.len(), 8);
    use wire::Kind;
    for (call, ping) in events.chunks(4).zip(&sent) {
        match (&call[0].event, &call[1].event, &call[3].event) {
            (Some(Kind::Started(s)), Some(Kind::Message(m)), Some(Kind::Ended(e))) => {
                assert_eq!(s.method, "/grpcproxy.testing.TestService/Ping");
                assert_eq!(&m.payload[..], &ping.encode_to_vec()[..]);
                assert_eq!((e.code, e.call_id), (0, s.call_id));
            }
            other => panic!("unexpected events: {other:?}"),
        }
    }
}

#[tokio::test]
async fn files_rotate_by_size_and_old_ones_are_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tap.pb");
    let options = FileOptions {
        rotate_bytes: 600,
        keep: 2,
        ..FileOptions::new(&path)
    };
    record(options, 20).await;
    let numbered = |n: usize| dir.path().join(format!("tap.pb.{n}"));
    assert!(path.exists() && numbered(1).exists() && numbered(2).exists());
    assert!(!numbered(3).exists(), "only `keep` rotated files stay");
    for file in [path.clone(), numbered(1), numbered(2)] {
        let size = std::fs::metadata(&file).unwrap().len();
        assert!(size <= 600, "{} is {size} bytes", file.display());
        assert!(
            !FileQueue::read(&file).unwrap().is_empty(),
            "{} decodes",
            file.display()
        );
    }
}

#[tokio::test]
async fn json_lines_record_the_same_events() {
    let dir = tempfile::tempdir().unwrap();
    let (json, protobuf) = (dir.path().join("tap.jsonl"), dir.path().join("tap.pb"));
    let options = |path| FileOptions {
        encoding: wire::Encoding::Json,
        ..FileOptions::new(path)
    };
    record(options(&json), 2).await;
    record(FileOptions::new(&protobuf), 2).await;
    let text = std::fs::read_to_string(&json).unwrap();
    assert_eq!(text.lines().count(), 8, "one event per line");
    assert!(text.lines().all(|l| l.starts_with("{\"")));
    let (json, protobuf) = (
        FileQueue::read(&json).unwrap(),
        FileQueue::read(&protobuf).unwrap(),
    );
    assert_eq!(json.len(), protobuf.len());
    // Equal but for call ids, times, peers and durations.
    let comparable = |events: Vec<wire::TapEvent>| -> Vec<_> {
        events
            .into_iter()
            .map(|e| match e.event {
                Some(wire::Kind::Started(s)) => format!("{} {:?}", s.method, s.metadata.len()),
                Some(wire::Kind::Message(m)) => {
                    format!("{} {} {:?}", m.direction, m.sequence, m.payload)
                }
                Some(wire::Kind::Ended(e)) => {
                    format!("{} {:?} {}", e.code, e.trailers, e.response_bytes)
                }
                _ => String::new(),
            })
            .collect()
    };
    assert_eq!(comparable(json), comparable(protobuf));
}

/// A request message event of `payload`, as the tap publishes it.
fn request_message(sequence: u64, payload: &bytes::Bytes) -> grpcproxy::mq::TapEvent {
    grpcproxy::mq::TapEvent::Message(grpcproxy::mq::TapMessage {
        call_id: 1,
        direction: grpcproxy::mq::Direction::Request,
        sequence,
        compressed: false,
        payload: payload.clone(),
        length: payload.len() as u32,
    })
}

#[tokio::test]
async fn the_buffer_is_bounded_in_bytes_as_well_as_events() {
    use grpcproxy::mq::MessageQueue;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tap.pb");
    let queue = FileQueue::start(FileOptions {
        capacity: 1000,
        max_buffer_bytes: (1 << 20) + 1,
        ..FileOptions::new(&path)
    })
    .unwrap();
    let payload = bytes::Bytes::from(vec![7u8; 1 << 20]);
    for sequence in 0..100 {
        // Handing over an event is a reference count: far faster than writing 1 MiB.
        queue.publish(request_message(sequence, &payload));
    }
    assert!(queue.flush().await);
    let stats = queue.stats();
    assert!(stats.dropped() > 0, "100 MiB cannot fit a 1 MiB buffer");
    assert_eq!(stats.published() + stats.dropped(), 100);
    let recorded = FileQueue::read(&path).unwrap();
    assert_eq!(recorded.len() as u64, stats.published());
    // Room comes back as events are written: the queue takes messages again.
    queue.publish(request_message(100, &payload));
    assert!(queue.flush().await);
    assert_eq!(
        FileQueue::read(&path).unwrap().len() as u64,
        stats.published()
    );
    assert_eq!(stats.published() + stats.dropped(), 101);
    assert_eq!(stats.dropped(), 100 - (recorded.len() as u64));
}

#[tokio::test]
async fn waiting_for_room_loses_nothing() {
    use grpcproxy::mq::MessageQueue;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tap.pb");
    let queue = FileQueue::start(FileOptions {
        capacity: 2,
        max_buffer_bytes: (1 << 20) + 1,
        overflow_wait: Some(Duration::from_secs(10)),
        ..FileOptions::new(&path)
    })
    .unwrap();
    assert_eq!(queue.max_wait(), Some(Duration::from_secs(10)));
    let payload = bytes::Bytes::from(vec![7u8; 1 << 20]);
    for sequence in 0..50 {
        // What a call does before each frame under the wait policy.
        std::future::poll_fn(|cx| queue.poll_room(cx)).await;
        queue.publish(request_message(sequence, &payload));
    }
    assert!(queue.flush().await);
    assert_eq!(
        (queue.stats().published(), queue.stats().dropped()),
        (50, 0)
    );
    assert_eq!(FileQueue::read(&path).unwrap().len(), 50);
}
