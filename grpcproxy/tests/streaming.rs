//! Server, client and bidi streaming: order, half-close, end of stream, trailers.

mod support;

use grpcproxy_testing::pb::PingRequest;
use grpcproxy_testing::ping::{
    LIST_RESPONSES, SERVER_HEADER_MD_KEY, SERVER_TRAILER_MD_KEY, SERVER_TRAILER_VALUE,
};
use support::{all_streams_closed, setup, Setup};

const ROUND_TRIPS: i32 = 20;

async fn bidi_full_duplex(setup: &mut Setup) {
    let (tx, rx) = tokio::sync::mpsc::channel::<PingRequest>(1);
    let response = setup
        .client
        .ping_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap();
    assert!(
        response.metadata().get(SERVER_HEADER_MD_KEY).is_some(),
        "header must arrive before all entries"
    );
    let mut stream = response.into_inner();
    for i in 0..ROUND_TRIPS {
        tx.send(PingRequest {
            value: format!("foo:{i}"),
            ..Default::default()
        })
        .await
        .unwrap();
        let reply = stream.message().await.unwrap().expect("a reply per ping");
        assert_eq!(
            reply.counter, i,
            "ping round trip must succeed with the correct id"
        );
        assert_eq!(reply.value, format!("foo:{i}"));
    }
    drop(tx); // half-close
    assert!(
        stream.message().await.unwrap().is_none(),
        "stream should close with EOF, meaning OK"
    );
    let trailers = stream.trailers().await.unwrap().expect("trailers");
    assert_eq!(
        trailers.get(SERVER_TRAILER_MD_KEY).unwrap(),
        SERVER_TRAILER_VALUE
    );
    let headers = trailers.clone().into_headers();
    let custom: Vec<_> = headers
        .keys()
        .filter(|k| !k.as_str().starts_with("grpc-"))
        .collect();
    assert_eq!(
        custom,
        [SERVER_TRAILER_MD_KEY],
        "exactly one custom trailer"
    );
}

#[tokio::test]
async fn bidi_20_lockstep_round_trips() {
    let mut setup = setup().await;
    bidi_full_duplex(&mut setup).await;
}

#[tokio::test]
async fn bidi_stress_50() {
    let mut setup = setup().await;
    for _ in 0..50 {
        bidi_full_duplex(&mut setup).await;
    }
    assert!(all_streams_closed(&setup.stats).await);
}

#[tokio::test]
async fn server_stream_of_10_with_trailer() {
    let mut setup = setup().await;
    let mut stream = setup
        .client
        .ping_list(PingRequest {
            value: "list".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut counters = Vec::new();
    while let Some(reply) = stream.message().await.unwrap() {
        assert_eq!(reply.value, "list");
        counters.push(reply.counter);
    }
    assert_eq!(counters, (0..LIST_RESPONSES).collect::<Vec<_>>());
    let trailers = stream.trailers().await.unwrap().unwrap();
    assert_eq!(
        trailers.get(SERVER_TRAILER_MD_KEY).unwrap(),
        SERVER_TRAILER_VALUE
    );
}

#[tokio::test]
async fn client_streaming_delivers_every_message_in_order() {
    let mut setup = setup().await;
    let pings: Vec<_> = (0..100)
        .map(|i| PingRequest {
            value: format!("m{i}"),
            payload: vec![i as u8; i],
            ..Default::default()
        })
        .collect();
    let expected_payload: Vec<u8> = pings.iter().flat_map(|p| p.payload.clone()).collect();
    let reply = setup
        .client
        .ping_client_stream(tokio_stream::iter(pings))
        .await
        .unwrap();
    assert_eq!(reply.get_ref().counter, 100);
    let expected_values: Vec<String> = (0..100).map(|i| format!("m{i}")).collect();
    assert_eq!(reply.get_ref().value, expected_values.join(","));
    assert_eq!(reply.get_ref().payload, expected_payload);
    assert_eq!(
        reply.metadata().get(SERVER_TRAILER_MD_KEY).unwrap(),
        SERVER_TRAILER_VALUE
    );
}

#[tokio::test]
async fn empty_client_stream_completes() {
    let mut setup = setup().await;
    let reply = setup
        .client
        .ping_client_stream(tokio_stream::iter(Vec::<PingRequest>::new()))
        .await
        .unwrap();
    assert_eq!(reply.get_ref().counter, 0);
}
