//! The "wait" overflow policy: while the tap's queue is full, a call waits for room before
//! each message (it slows down instead of losing events), and never longer than the bound.

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use grpcproxy::mq::{MessageQueue, TapEvent};
use grpcproxy::{ProxyRoutes, SingleUpstream, TransparentProxy, Upstream};
use grpcproxy_testing::pb::PingRequest;
use grpcproxy_testing::serve::{ping_backend, ping_client};
use grpcproxy_testing::TestServer;

/// A queue that is full until opened.
struct Gate {
    open: AtomicBool,
    waiting: Mutex<Vec<Waker>>,
    max_wait: Duration,
    published: AtomicUsize,
}

impl Gate {
    fn new(max_wait: Duration) -> Arc<Self> {
        Arc::new(Self {
            open: AtomicBool::new(false),
            waiting: Mutex::default(),
            max_wait,
            published: AtomicUsize::new(0),
        })
    }

    fn open(&self) {
        self.open.store(true, Ordering::SeqCst);
        self.waiting.lock().unwrap().drain(..).for_each(Waker::wake);
    }
}

impl MessageQueue for Gate {
    fn wants(&self, _method: &str) -> bool {
        true
    }

    fn publish(&self, _event: TapEvent) {
        self.published.fetch_add(1, Ordering::SeqCst);
    }

    fn max_wait(&self) -> Option<Duration> {
        Some(self.max_wait)
    }

    fn poll_room(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.open.load(Ordering::SeqCst) {
            return Poll::Ready(());
        }
        self.waiting.lock().unwrap().push(cx.waker().clone());
        Poll::Pending
    }
}

async fn proxy_with(gate: Arc<Gate>) -> (TestServer, TestServer) {
    let (backend, _) = ping_backend().await;
    let proxy = TransparentProxy::new(
        gate,
        SingleUpstream::new(Upstream::new(&backend.url()).unwrap()),
    );
    let server = TestServer::start(ProxyRoutes::new().fallback(proxy).into_routes()).await;
    (backend, server)
}

fn ping() -> PingRequest {
    PingRequest {
        value: "waits".into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_waits_while_the_queue_is_full_and_goes_on_when_room_frees() {
    let gate = Gate::new(Duration::from_secs(30));
    let (_backend, server) = proxy_with(gate.clone()).await;
    let mut client = ping_client(server.addr()).await;
    let call = tokio::spawn(async move { client.ping(ping()).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!call.is_finished(), "the request message waits for room");
    assert_eq!(
        gate.published.load(Ordering::SeqCst),
        1,
        "only call-started so far"
    );
    gate.open();
    let reply = tokio::time::timeout(Duration::from_secs(5), call)
        .await
        .expect("room frees the call")
        .unwrap()
        .unwrap();
    assert_eq!(reply.into_inner().value, "waits");
    let deadline = Instant::now() + Duration::from_secs(5);
    while gate.published.load(Ordering::SeqCst) < 4 {
        assert!(Instant::now() < deadline, "start, request, response, end");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_never_waits_longer_than_the_bound_per_message() {
    let gate = Gate::new(Duration::from_millis(100));
    let (_backend, server) = proxy_with(gate.clone()).await;
    let mut client = ping_client(server.addr()).await;
    let started = Instant::now();
    let reply = tokio::time::timeout(Duration::from_secs(5), client.ping(ping()))
        .await
        .expect("a full queue does not hold a call past its bound")
        .unwrap();
    let took = started.elapsed();
    assert_eq!(reply.into_inner().value, "waits");
    // The request and the response message each waited the whole bound.
    assert!(took >= Duration::from_millis(200), "{took:?}");
}
