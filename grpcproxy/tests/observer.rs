//! A call observer learns each call's final status, bytes, backend and duration.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use grpcproxy::mq::NoQueue;
use grpcproxy::{CallInfo, CallObserver, CallRecord, ProxyRoutes, TransparentProxy, Upstream};
use grpcproxy_testing::pb::PingRequest;
use grpcproxy_testing::serve::{ping_backend, ping_client};
use grpcproxy_testing::TestServer;
use prost::Message;
use tonic::Code;

#[derive(Debug, Clone, PartialEq)]
struct Seen {
    method: String,
    backend: String,
    status: Code,
    request_bytes: u64,
    response_bytes: u64,
}

#[derive(Default)]
struct Recorder(Mutex<Vec<(Seen, Duration)>>);

impl CallObserver for Recorder {
    fn call_ended(&self, call: &CallRecord<'_>) {
        let seen = Seen {
            method: call.method.to_owned(),
            backend: call.backend.to_owned(),
            status: call.grpc_status,
            request_bytes: call.request_bytes,
            response_bytes: call.response_bytes,
        };
        self.0.lock().unwrap().push((seen, call.duration));
    }
}

#[tokio::test]
async fn observer_sees_status_bytes_and_backend_of_every_call() {
    let (backend, service) = ping_backend().await;
    let upstream = Upstream::new(&backend.url()).unwrap();
    let recorder = Arc::new(Recorder::default());
    let director = {
        let recorder = recorder.clone();
        move |call: CallInfo| {
            let target = call
                .forward_to(upstream.clone())
                .with_observer(recorder.clone());
            async move { Ok(target) }
        }
    };
    let proxy = TransparentProxy::new(NoQueue, director);
    let stats = proxy.stats().clone();
    let server = TestServer::start(ProxyRoutes::new().fallback(proxy).into_routes()).await;
    let mut client = ping_client(server.addr()).await;

    let request = PingRequest {
        value: "abc".into(),
        ..Default::default()
    };
    let reply = client.ping(request.clone()).await.unwrap().into_inner();
    client.ping_error(PingRequest::default()).await.unwrap_err();
    let mut slow = tonic::Request::new(PingRequest {
        sleep_ms: 5_000,
        ..Default::default()
    });
    slow.set_timeout(Duration::from_millis(100));
    client.ping(slow).await.unwrap_err();
    let cancelled = client.ping(PingRequest {
        sleep_ms: 5_000,
        ..Default::default()
    });
    assert!(tokio::time::timeout(Duration::from_millis(100), cancelled)
        .await
        .is_err());
    assert!(
        service
            .events()
            .wait_cancelled(2, Duration::from_secs(2))
            .await
    );
    assert!(support::all_streams_closed(&stats).await);

    let seen: Vec<Seen> = recorder
        .0
        .lock()
        .unwrap()
        .iter()
        .map(|(s, _)| s.clone())
        .collect();
    let backend = backend.addr().to_string();
    let ping = |status, request_bytes, response_bytes| Seen {
        method: "/grpcproxy.testing.TestService/Ping".into(),
        backend: backend.clone(),
        status,
        request_bytes,
        response_bytes,
    };
    let frame = |len: usize| 5 + len as u64;
    let slow_len = PingRequest {
        sleep_ms: 5_000,
        ..Default::default()
    }
    .encoded_len();
    assert_eq!(seen.len(), 4, "{seen:#?}");
    assert_eq!(
        seen[0],
        ping(
            Code::Ok,
            frame(request.encoded_len()),
            frame(reply.encoded_len())
        )
    );
    assert_eq!(
        seen[1],
        Seen {
            method: "/grpcproxy.testing.TestService/PingError".into(),
            ..ping(Code::FailedPrecondition, 5, 0)
        }
    );
    // A tonic host answers an expired deadline before headers with CANCELLED itself; the
    // proxy's record says what the proxy saw: the call never got a status.
    assert!(
        matches!(seen[2].status, Code::DeadlineExceeded | Code::Cancelled),
        "{:?}",
        seen[2]
    );
    assert_eq!(seen[2].request_bytes, frame(slow_len));
    assert_eq!(seen[3], ping(Code::Cancelled, frame(slow_len), 0));
}
