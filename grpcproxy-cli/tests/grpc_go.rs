//! A grpc-go backend (Debian's grpc-go 1.33, `interop/go/server.go`) behind the proxy.
//! grpc-go servers see the end of a request stream only on a DATA frame, so a call whose
//! client half-closes at once hangs until its deadline unless the proxy ends the backend's
//! request stream with an empty DATA frame. Direct, through the binary's quick mode and
//! through the library fallback, every call must complete.
//!
//! The backend comes from `bash interop/install.sh` (scripts/test.sh runs it); without it
//! this test fails, it does not skip.

mod support;

use std::time::Duration;

use bytes::Bytes;
use grpcproxy_interop::library_proxy;
use grpcproxy_interop::pb::interop_client::InteropClient;
use grpcproxy_interop::pb::Request as Message;
use grpcproxy_interop::peers::{start_backend, Runtime};
use tonic::transport::Channel;

/// How long one call may take: the backend answers at once.
const CALL: Duration = Duration::from_secs(3);

fn message(payload: &'static [u8]) -> Message {
    Message {
        payload: Bytes::from_static(payload),
        ..Message::default()
    }
}

/// Runs the checks against `address`; returns what failed.
async fn check(address: std::net::SocketAddr) -> Vec<String> {
    let channel = Channel::from_shared(format!("http://{address}"))
        .unwrap()
        .connect_lazy();
    let mut stub = InteropClient::new(channel);
    let mut failures = Vec::new();
    let mut fail = |what: String| failures.push(what);
    for i in 0..10 {
        let empty = tokio_stream::iter(Vec::<Message>::new());
        match tokio::time::timeout(CALL, stub.client_stream(empty)).await {
            Ok(Ok(answer)) => {
                let answer = answer.into_inner();
                if answer.request_count != 0 || !answer.payload.is_empty() {
                    fail(format!("empty client stream {i}: answered {answer:?}"));
                }
            }
            Ok(Err(status)) => fail(format!("empty client stream {i}: {status:?}")),
            Err(_) => fail(format!(
                "empty client stream {i}: no answer within {CALL:?}"
            )),
        }
    }
    for i in 0..10 {
        let empty = tokio_stream::iter(Vec::<Message>::new());
        let call = async {
            let mut answers = stub.bidi(empty).await?.into_inner();
            answers.message().await
        };
        match tokio::time::timeout(CALL, call).await {
            Ok(Ok(None)) => {}
            Ok(Ok(Some(answer))) => fail(format!("empty bidi {i}: answered {answer:?}")),
            Ok(Err(status)) => fail(format!("empty bidi {i}: {status:?}")),
            Err(_) => fail(format!("empty bidi {i}: no end within {CALL:?}")),
        }
    }
    // Streams with messages, as a baseline: ended by the last message's frame or an empty one.
    let parts = [&b"part-0"[..], b"part-1", b"part-2"];
    let requests = tokio_stream::iter(parts.map(message));
    match tokio::time::timeout(CALL, stub.client_stream(requests)).await {
        Ok(Ok(answer)) => {
            let answer = answer.into_inner();
            if answer.request_count != 3 || answer.payload[..] != b"part-0part-1part-2"[..] {
                fail(format!("client stream of 3: answered {answer:?}"));
            }
        }
        other => fail(format!("client stream of 3: {other:?}")),
    }
    let requests = tokio_stream::iter([message(b"one"), message(b"two")]);
    let call = async {
        let mut answers = stub.bidi(requests).await?.into_inner();
        let mut seen = Vec::new();
        while let Some(answer) = answers.message().await? {
            seen.push((answer.payload, answer.request_count));
        }
        Ok::<_, tonic::Status>(seen)
    };
    match tokio::time::timeout(CALL, call).await {
        Ok(Ok(seen)) if seen == [(Bytes::from("one"), 1), (Bytes::from("two"), 2)] => {}
        other => fail(format!("bidi of 2: {other:?}")),
    }
    failures
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_that_half_close_at_once_complete_against_grpc_go() {
    let backend = start_backend(Runtime::GrpcGo).await;
    let url = format!("http://{}", backend.addr());
    let quick = support::start(&["--listen", "127.0.0.1:0", "--to", &url], 1);
    let library = library_proxy(&url).await;
    let mut failures = Vec::new();
    for (path, address) in [
        ("direct", backend.addr()),
        ("quick", quick.listening[0]),
        ("library", library.addr()),
    ] {
        failures.extend(
            check(address)
                .await
                .into_iter()
                .map(|f| format!("{path}: {f}")),
        );
    }
    assert!(
        failures.is_empty(),
        "against grpc-go:\n{}",
        failures.join("\n")
    );
}
