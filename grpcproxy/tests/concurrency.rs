//! Many concurrent streams over one client connection; nothing stays live afterwards.

mod support;

use grpcproxy_testing::pb::PingRequest;
use support::{all_streams_closed, setup};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_concurrent_streams_over_one_connection() {
    let setup = setup().await;
    // One tonic channel = one HTTP/2 connection to the proxy.
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..1000 {
        let mut client = setup.client.clone();
        calls.spawn(async move {
            let (tx, rx) = tokio::sync::mpsc::channel(1);
            let mut stream = client
                .ping_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
                .await
                .map_err(|s| format!("call {i}: {s}"))?
                .into_inner();
            // Every stream is open at once: each waits for the barrier-like sleep below.
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            tx.send(PingRequest {
                value: format!("{i}"),
                ..Default::default()
            })
            .await
            .unwrap();
            let reply = stream
                .message()
                .await
                .map_err(|s| format!("call {i}: {s}"))?
                .unwrap();
            drop(tx);
            let end = stream
                .message()
                .await
                .map_err(|s| format!("call {i}: {s}"))?;
            Ok::<_, String>((reply.value == format!("{i}")) && end.is_none())
        });
    }
    let mut ok = 0;
    let mut live_peak = 0;
    while let Some(result) = calls.join_next().await {
        live_peak = live_peak.max(setup.stats.live_streams());
        assert!(
            result.unwrap().unwrap(),
            "every stream echoes its own message and ends cleanly"
        );
        ok += 1;
    }
    assert_eq!(ok, 1000);
    assert!(
        live_peak > 500,
        "streams were concurrent (peak {live_peak} live)"
    );
    assert!(
        all_streams_closed(&setup.stats).await,
        "live streams back to 0, got {}",
        setup.stats.live_streams()
    );
}
