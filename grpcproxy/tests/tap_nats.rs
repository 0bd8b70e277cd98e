//! The tap against a real nats-server with JetStream: every event arrives in order with
//! exact bytes; killing the broker costs no call, drops are counted, and publishing
//! resumes after a restart.
#![cfg(feature = "nats")]

mod support;

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use grpcproxy::mq::{wire, NatsOptions, NatsQueue};
use grpcproxy::{ProxyRoutes, SingleUpstream, TransparentProxy, Upstream};
use grpcproxy_testing::nats::NatsServer;
use grpcproxy_testing::pb::PingRequest;
use grpcproxy_testing::serve::{ping_backend, ping_client};
use grpcproxy_testing::TestServer;
use prost::Message;

const STREAM: &str = "GRPCPROXY_TAP";

async fn proxy_with(queue: NatsQueue) -> (TestServer, TestServer) {
    let (backend, _) = ping_backend().await;
    let proxy = TransparentProxy::new(
        queue,
        SingleUpstream::new(Upstream::new(&backend.url()).unwrap()),
    );
    (
        backend,
        TestServer::start(ProxyRoutes::new().fallback(proxy).into_routes()).await,
    )
}

async fn queue_for(nats: &NatsServer) -> NatsQueue {
    let queue = NatsQueue::start(NatsOptions {
        stream: Some(STREAM.into()),
        ..NatsOptions::new(&nats.url())
    });
    let deadline = Instant::now() + Duration::from_secs(5);
    while !queue.stats().connected() {
        assert!(
            Instant::now() < deadline,
            "the tap did not connect to nats-server"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The stream is created in the background: wait until it exists.
    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    while js.get_stream(STREAM).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "the tap did not create its stream"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    queue
}

/// Receives `n` events from the subscription, or fewer after 5 s.
async fn receive(
    subscription: &mut async_nats::Subscriber,
    n: usize,
) -> Vec<(String, wire::TapEvent)> {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while out.len() < n {
        match tokio::time::timeout_at(deadline, subscription.next()).await {
            Ok(Some(message)) => out.push((
                message.subject.to_string(),
                wire::TapEvent::decode(message.payload).unwrap(),
            )),
            _ => break,
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_arrives_in_order_with_exact_bytes() {
    let nats = NatsServer::start();
    let queue = queue_for(&nats).await;
    let stats = queue.stats().clone();
    let subscriber = async_nats::connect(nats.url()).await.unwrap();
    let mut subscription = subscriber.subscribe("grpcproxy.calls.>").await.unwrap();
    subscriber.flush().await.unwrap();
    let (_backend, proxy) = proxy_with(queue).await;
    let mut client = ping_client(proxy.addr()).await;

    let ping = PingRequest {
        value: "over nats".into(),
        ..Default::default()
    };
    let reply = client.ping(ping.clone()).await.unwrap().into_inner();
    let pings: Vec<_> = (0..3)
        .map(|i| PingRequest {
            value: format!("s{i}"),
            ..Default::default()
        })
        .collect();
    let mut stream = client
        .ping_stream(tokio_stream::iter(pings.clone()))
        .await
        .unwrap()
        .into_inner();
    while stream.message().await.unwrap().is_some() {}

    let events = receive(&mut subscription, 4 + 8).await;
    assert_eq!(events.len(), 12, "{events:#?}");
    let unary: Vec<_> = events
        .iter()
        .filter(|(s, _)| s == "grpcproxy.calls.grpcproxy.testing.TestService.Ping")
        .collect();
    assert_eq!(unary.len(), 4);
    use wire::Kind;
    match (
        &unary[0].1.event,
        &unary[1].1.event,
        &unary[2].1.event,
        &unary[3].1.event,
    ) {
        (
            Some(Kind::Started(s)),
            Some(Kind::Message(req)),
            Some(Kind::Message(resp)),
            Some(Kind::Ended(end)),
        ) => {
            assert_eq!(s.method, "/grpcproxy.testing.TestService/Ping");
            assert_eq!(&req.payload[..], &ping.encode_to_vec()[..]);
            assert_eq!(req.direction, wire::Direction::Request as i32);
            assert_eq!(&resp.payload[..], &reply.encode_to_vec()[..]);
            assert_eq!(resp.direction, wire::Direction::Response as i32);
            assert_eq!(
                (end.code, end.request_messages, end.response_messages),
                (0, 1, 1)
            );
            assert!(end.trailers.iter().any(
                |m| m.key == "test-client-trailer" && &m.value[..] == b"I like ending turtles."
            ));
        }
        other => panic!("unexpected order: {other:?}"),
    }
    assert!(events
        .iter()
        .all(|(_, e)| e.schema_version == wire::SCHEMA_VERSION));
    let streaming: Vec<_> = events
        .iter()
        .filter(|(s, _)| s.ends_with("TestService.PingStream"))
        .collect();
    let requests: Vec<Vec<u8>> = streaming
        .iter()
        .filter_map(|(_, e)| match &e.event {
            Some(Kind::Message(m)) if m.direction == wire::Direction::Request as i32 => {
                Some(m.payload.to_vec())
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        requests,
        pings.iter().map(|p| p.encode_to_vec()).collect::<Vec<_>>()
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while stats.published() < 12 {
        assert!(
            Instant::now() < deadline,
            "acks: {} published, {} failed",
            stats.published(),
            stats.failed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_outage_costs_no_call_and_every_event_is_counted_once_by_its_fate() {
    let mut nats = NatsServer::start();
    let queue = queue_for(&nats).await;
    let stats = queue.stats().clone();
    let flusher = queue.clone();
    let (_backend, proxy) = proxy_with(queue).await;
    let mut client = ping_client(proxy.addr()).await;
    // 60 calls over about 4.5 s; the broker is down for 3 s in the middle of them.
    let started = Instant::now();
    for i in 0..60 {
        if i == 10 {
            nats.stop();
        }
        if i == 50 {
            assert!(!stats.connected());
            nats.restart();
        }
        let reply = client
            .ping(PingRequest {
                value: format!("{i}"),
                ..Default::default()
            })
            .await
            .expect("calls succeed while the broker is down");
        assert_eq!(reply.into_inner().value, format!("{i}"));
        let pause = if (10..50).contains(&i) { 75 } else { 20 };
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
    println!("60 calls in {:?}", started.elapsed());
    assert!(
        tokio::time::timeout(Duration::from_secs(40), flusher.flush())
            .await
            .unwrap(),
        "the tap flushes"
    );
    // Each call is 4 events (start, request, response, end). Events whose acknowledgement
    // was lost with the connection were published again under the same message id: each
    // counts once, as published, and the stream holds each once.
    let (published, dropped, failed) = (stats.published(), stats.dropped(), stats.failed());
    println!("published {published}, dropped {dropped}, failed {failed}");
    assert_eq!((published, dropped, failed), (240, 0, 0));
    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    let held = js
        .get_stream(STREAM)
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .state
        .messages;
    assert_eq!(held, 240, "the stream holds every event once");
    assert!(stats.connected());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_down_at_start_costs_no_call_and_publishing_starts_when_it_comes_up() {
    let mut nats = NatsServer::start();
    nats.stop();
    let queue = NatsQueue::start(NatsOptions {
        stream: Some(STREAM.into()),
        capacity: 16,
        ..NatsOptions::new(&nats.url())
    });
    let stats = queue.stats().clone();
    let (_backend, proxy) = proxy_with(queue).await;
    let mut client = ping_client(proxy.addr()).await;
    let started = Instant::now();
    for i in 0..50 {
        let reply = client
            .ping(PingRequest {
                value: format!("{i}"),
                ..Default::default()
            })
            .await
            .expect("calls succeed with no broker");
        assert_eq!(reply.into_inner().value, format!("{i}"));
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "calls do not wait on the broker"
    );
    assert!(!stats.connected());
    // Undelivered events are counted: dropped when the buffer is full, failed when their
    // acknowledgement times out.
    let deadline = Instant::now() + Duration::from_secs(10);
    while stats.dropped() + stats.failed() == 0 {
        assert!(Instant::now() < deadline, "undelivered events are counted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(stats.published(), 0);

    nats.restart();
    let deadline = Instant::now() + Duration::from_secs(15);
    while stats.published() == 0 {
        assert!(
            Instant::now() < deadline,
            "the tap did not connect and publish once the broker came up"
        );
        client.ping(PingRequest::default()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(stats.connected());
}
