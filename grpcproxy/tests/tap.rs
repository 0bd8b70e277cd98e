//! The message-queue tap: every event of unary and streaming calls, in order, with exact
//! payload bytes and status; a full queue drops and counts, and calls go on.

mod support;

use grpcproxy::mq::{Direction, MemoryQueue, TapEvent};
use grpcproxy::{ProxyRoutes, SingleUpstream, TransparentProxy, Upstream};
use grpcproxy_testing::pb::PingRequest;
use grpcproxy_testing::serve::{ping_backend, ping_client};
use grpcproxy_testing::TestServer;
use prost::Message;
use tokio::sync::mpsc::Receiver;

async fn tapped(
    queue: MemoryQueue,
) -> (
    TestServer,
    TestServer,
    std::sync::Arc<grpcproxy::ProxyStats>,
) {
    let (backend, _service) = ping_backend().await;
    let proxy = TransparentProxy::new(
        queue,
        SingleUpstream::new(Upstream::new(&backend.url()).unwrap()),
    );
    let stats = proxy.stats().clone();
    let server = TestServer::start(ProxyRoutes::new().fallback(proxy).into_routes()).await;
    (backend, server, stats)
}

/// The events published so far (after every call is over).
async fn drain(events: &mut Receiver<TapEvent>, stats: &grpcproxy::ProxyStats) -> Vec<TapEvent> {
    assert!(support::all_streams_closed(stats).await);
    let mut out = Vec::new();
    while let Ok(event) = events.try_recv() {
        out.push(event);
    }
    out
}

/// (direction, sequence, payload) of the message events.
fn messages(events: &[TapEvent]) -> Vec<(Direction, u64, Vec<u8>)> {
    events
        .iter()
        .filter_map(|e| match e {
            TapEvent::Message(m) => Some((m.direction, m.sequence, m.payload.to_vec())),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn unary_call_publishes_start_messages_and_end_in_order() {
    let (queue, mut events) = MemoryQueue::new(100);
    let (_backend, server, stats) = tapped(queue).await;
    let mut client = ping_client(server.addr()).await;
    let ping = PingRequest {
        value: "tap me".into(),
        ..Default::default()
    };
    let mut request = tonic::Request::new(ping.clone());
    request
        .metadata_mut()
        .insert("x-trace", "abc".parse().unwrap());
    let reply = client.ping(request).await.unwrap().into_inner();

    let events = drain(&mut events, &stats).await;
    assert_eq!(events.len(), 4, "{events:#?}");
    let TapEvent::Started(started) = &events[0] else {
        panic!("first: {:?}", events[0])
    };
    assert_eq!(started.method, "/grpcproxy.testing.TestService/Ping");
    assert_eq!(started.metadata.get("x-trace").unwrap(), "abc");
    assert_eq!(started.peer.unwrap().ip().to_string(), "127.0.0.1");
    assert_eq!(
        messages(&events),
        [
            (Direction::Request, 0, ping.encode_to_vec()),
            (Direction::Response, 0, reply.encode_to_vec())
        ]
    );
    let TapEvent::Ended(ended) = &events[3] else {
        panic!("last: {:?}", events[3])
    };
    assert_eq!(ended.call_id, started.call_id);
    assert!(events.iter().all(|e| e.call_id() == started.call_id));
    assert_eq!(ended.code, tonic::Code::Ok);
    assert_eq!((ended.request_messages, ended.response_messages), (1, 1));
    assert_eq!(ended.request_bytes, 5 + ping.encoded_len() as u64);
    let trailers = ended.trailers.as_ref().unwrap();
    assert_eq!(trailers.get("grpc-status").unwrap(), "0");
    assert_eq!(
        trailers.get("test-client-trailer").unwrap(),
        "I like ending turtles."
    );
}

#[tokio::test]
async fn bidi_stream_messages_are_numbered_per_direction() {
    let (queue, mut events) = MemoryQueue::new(100);
    let (_backend, server, stats) = tapped(queue).await;
    let mut client = ping_client(server.addr()).await;
    let pings: Vec<_> = (0..3)
        .map(|i| PingRequest {
            value: format!("m{i}"),
            ..Default::default()
        })
        .collect();
    let mut stream = client
        .ping_stream(tokio_stream::iter(pings.clone()))
        .await
        .unwrap()
        .into_inner();
    let mut replies = Vec::new();
    while let Some(reply) = stream.message().await.unwrap() {
        replies.push(reply);
    }
    drop(stream);
    let events = drain(&mut events, &stats).await;
    let mut requests: Vec<_> = messages(&events)
        .into_iter()
        .filter(|m| m.0 == Direction::Request)
        .collect();
    let responses: Vec<_> = messages(&events)
        .into_iter()
        .filter(|m| m.0 == Direction::Response)
        .collect();
    requests.sort_by_key(|m| m.1);
    assert_eq!(
        requests,
        pings
            .iter()
            .enumerate()
            .map(|(i, p)| (Direction::Request, i as u64, p.encode_to_vec()))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        responses,
        replies
            .iter()
            .enumerate()
            .map(|(i, r)| (Direction::Response, i as u64, r.encode_to_vec()))
            .collect::<Vec<_>>()
    );
    let TapEvent::Ended(ended) = events.last().unwrap() else {
        panic!("{events:#?}")
    };
    assert_eq!(
        (ended.request_messages, ended.response_messages, ended.code),
        (3, 3, tonic::Code::Ok)
    );
}

#[tokio::test]
async fn an_error_call_ends_with_its_status_and_trailers() {
    let (queue, mut events) = MemoryQueue::new(100);
    let (_backend, server, stats) = tapped(queue).await;
    let mut client = ping_client(server.addr()).await;
    client.ping_error(PingRequest::default()).await.unwrap_err();
    let events = drain(&mut events, &stats).await;
    let TapEvent::Ended(ended) = events.last().unwrap() else {
        panic!("{events:#?}")
    };
    assert_eq!(ended.code, tonic::Code::FailedPrecondition);
    assert_eq!(
        ended
            .trailers
            .as_ref()
            .unwrap()
            .get("grpc-message")
            .unwrap(),
        "Userspace%20error.", // as on the wire
    );
    assert_eq!(ended.response_messages, 0);
}

#[tokio::test]
async fn payloads_are_cut_at_the_limit_with_their_full_length_kept() {
    let (queue, mut events) = MemoryQueue::new(100);
    let (_backend, server, stats) = tapped(queue.with_max_payload(4)).await;
    let mut client = ping_client(server.addr()).await;
    let ping = PingRequest {
        value: "a longer value".into(),
        ..Default::default()
    };
    client.ping(ping.clone()).await.unwrap();
    let events = drain(&mut events, &stats).await;
    let TapEvent::Message(first) = &events[1] else {
        panic!("{events:#?}")
    };
    assert_eq!(&first.payload[..], &ping.encode_to_vec()[..4]);
    assert_eq!(first.length as usize, ping.encoded_len());
}

#[tokio::test]
async fn a_full_queue_drops_and_counts_and_calls_go_on() {
    let (queue, _events) = MemoryQueue::new(1); // never read
    let queue_stats = queue.stats().clone();
    let (_backend, server, stats) = tapped(queue).await;
    let mut client = ping_client(server.addr()).await;
    for i in 0..20 {
        let reply = client
            .ping(PingRequest {
                value: format!("{i}"),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(reply.into_inner().value, format!("{i}"));
    }
    assert!(support::all_streams_closed(&stats).await);
    assert_eq!(queue_stats.published(), 1);
    assert_eq!(queue_stats.dropped(), 20 * 4 - 1);
}

#[tokio::test]
async fn filtered_out_calls_publish_nothing() {
    let (queue, mut events) = MemoryQueue::new(100);
    let tap = grpcproxy::mq::Filtered::new(
        queue,
        vec!["/grpcproxy.testing.TestService/PingList".into()],
        1.0,
    );
    let (backend, _) = ping_backend().await;
    let proxy = TransparentProxy::new(
        tap,
        SingleUpstream::new(Upstream::new(&backend.url()).unwrap()),
    );
    let stats = proxy.stats().clone();
    let server = TestServer::start(ProxyRoutes::new().fallback(proxy).into_routes()).await;
    let mut client = ping_client(server.addr()).await;
    client.ping(PingRequest::default()).await.unwrap();
    let mut list = client
        .ping_list(PingRequest::default())
        .await
        .unwrap()
        .into_inner();
    while list.message().await.unwrap().is_some() {}
    drop(list);
    let events = drain(&mut events, &stats).await;
    assert_eq!(events.len(), 1 + 1 + 10 + 1, "only PingList: {events:#?}");
    let TapEvent::Started(started) = &events[0] else {
        panic!()
    };
    assert_eq!(started.method, "/grpcproxy.testing.TestService/PingList");
}
