//! Shared setup for the integration tests: a ping backend, a proxy in front of it, clients.
#![allow(dead_code, unreachable_pub)]

pub mod hanging;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use grpcproxy::mq::NoQueue;
use grpcproxy::server::{self, ServerOptions};
use grpcproxy::{
    CallInfo, ProxyOptions, ProxyRoutes, ProxyStats, StreamDirector, TransparentProxy, Upstream,
};
use grpcproxy_testing::pb::test_service_client::TestServiceClient;
use grpcproxy_testing::serve::{ping_backend, ping_client};
use grpcproxy_testing::{PingService, TestServer};
use tonic::transport::Channel;
use tonic::Status;

/// Metadata that makes the director refuse the call (as in the Go suite).
pub const REJECTING_MD_KEY: &str = "test-reject-rpc-if-in-context";
pub const TEST_SERVICE: &str = "grpcproxy.testing.TestService";

/// The Go suite's director: refuse calls carrying `REJECTING_MD_KEY`, forward the rest.
pub fn rejecting_director(upstream: Upstream) -> impl StreamDirector {
    move |call: CallInfo| {
        let upstream = upstream.clone();
        async move {
            if call.metadata().get(REJECTING_MD_KEY).is_some() {
                return Err(Status::permission_denied("testing rejection"));
            }
            Ok(call.forward_to(upstream))
        }
    }
}

/// A ping backend behind a proxy (tonic server: `Ping` registered, the rest by fallback).
pub struct Setup {
    pub backend: TestServer,
    pub service: PingService,
    pub proxy: TestServer,
    pub stats: Arc<ProxyStats>,
    pub client: TestServiceClient<Channel>,
}

pub async fn setup() -> Setup {
    setup_with(ProxyOptions::default()).await
}

pub async fn setup_with(options: ProxyOptions) -> Setup {
    let (backend, service) = ping_backend().await;
    let upstream = Upstream::new(&backend.url()).unwrap();
    let proxy = TransparentProxy::with_options(NoQueue, rejecting_director(upstream), options);
    let stats = proxy.stats().clone();
    let routes = ProxyRoutes::new()
        .register_service(proxy.clone(), TEST_SERVICE, &["Ping"])
        .unwrap()
        .fallback(proxy);
    let proxy = TestServer::start(routes.into_routes()).await;
    let client = ping_client(proxy.addr()).await;
    Setup {
        backend,
        service,
        proxy,
        stats,
        client,
    }
}

/// A fallback-only tonic proxy server forwarding every call to `url`.
pub async fn proxy_to(url: &str, options: ProxyOptions) -> (TestServer, Arc<ProxyStats>) {
    let upstream = Upstream::new(url).unwrap();
    let proxy = TransparentProxy::with_options(NoQueue, rejecting_director(upstream), options);
    let stats = proxy.stats().clone();
    let server = TestServer::start(ProxyRoutes::new().fallback(proxy).into_routes()).await;
    (server, stats)
}

/// A proxy served by grpcproxy's own HTTP/2 server (what the binary runs).
pub struct ServedProxy {
    pub addr: SocketAddr,
    pub stats: Arc<ProxyStats>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Drop for ServedProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.abort();
    }
}

pub async fn serve_proxy(url: &str, options: ProxyOptions) -> ServedProxy {
    let server = ServerOptions {
        drain_timeout: Duration::from_secs(1),
        ..ServerOptions::default()
    };
    serve_proxy_with(url, options, server).await
}

pub async fn serve_proxy_with(
    url: &str,
    options: ProxyOptions,
    server: ServerOptions,
) -> ServedProxy {
    let upstream = Upstream::new(url).unwrap();
    let proxy = TransparentProxy::with_options(NoQueue, rejecting_director(upstream), options);
    let stats = proxy.stats().clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server::serve(listener, proxy, server, async {
        let _ = stopped.await;
    }));
    ServedProxy {
        addr,
        stats,
        stop: Some(stop),
        task,
    }
}

/// Waits until no call is live in the proxy; false if some still are after 5 s.
pub async fn all_streams_closed(stats: &ProxyStats) -> bool {
    for _ in 0..500 {
        if stats.live_streams() == 0 {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

/// A call's error, or a panic naming what succeeded instead.
pub fn expect_err<T: std::fmt::Debug>(result: Result<T, Status>) -> Status {
    match result {
        Ok(value) => panic!("expected an error status, got {value:?}"),
        Err(status) => status,
    }
}
