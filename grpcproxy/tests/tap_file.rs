//! The file queue records every event as length-delimited protobuf, rotated by size.
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
        queue,
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
    tokio::time::sleep(Duration::from_millis(50)).await; // the writer flushes when idle
    assert_eq!(stats.dropped(), 0);
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
