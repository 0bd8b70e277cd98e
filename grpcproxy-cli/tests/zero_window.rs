//! A client that sets SETTINGS_INITIAL_WINDOW_SIZE 0 and opens server-streaming calls it
//! never reads pins a backend call for each: against a backend with a small handler pool,
//! it starves everyone else. `max_in_flight_per_peer` caps what one client address can
//! hold, so a normal client (another address) keeps its latency.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use grpcproxy_testing::raw::{
    frames_body, grpc_frame, grpc_response, header_map, RawBackend, RawBody, RawClient,
};
use http::Response;
use http_body::Frame;
use http_body_util::BodyExt;
use tokio::sync::Semaphore;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Handlers the backend runs at once, as a thread pool would.
const POOL: usize = 16;

/// A backend whose calls each hold one of `pool` slots until their response is sent: unary
/// calls answer at once, `/zw.Test/Watch` streams 4 MiB (it stalls once the proxy stops
/// reading).
async fn pooled_backend(pool: usize) -> RawBackend {
    let pool = Arc::new(Semaphore::new(pool));
    RawBackend::start(move |request: http::Request<hyper::body::Incoming>| {
        let pool = pool.clone();
        async move {
            let permit = pool.acquire_owned().await.unwrap();
            let watch = request.uri().path() == "/zw.Test/Watch";
            let _ = request.into_body().collect().await;
            if !watch {
                drop(permit);
                return grpc_response(frames_body(vec![
                    Frame::data(grpc_frame(false, b"pong")),
                    Frame::trailers(header_map(&[("grpc-status", "0")])),
                ]));
            }
            let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, BoxError>>(1);
            tokio::spawn(async move {
                let _permit = permit; // held until the stream is sent, or given up
                let chunk = grpc_frame(false, &vec![0u8; 64 << 10]);
                for _ in 0..64 {
                    if tx.send(Ok(Frame::data(chunk.clone()))).await.is_err() {
                        return;
                    }
                }
                let _ = tx
                    .send(Ok(Frame::trailers(header_map(&[("grpc-status", "0")]))))
                    .await;
            });
            let body: RawBody =
                http_body_util::StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx))
                    .boxed_unsync();
            let response: Response<RawBody> = grpc_response(body);
            response
        }
    })
    .await
}

/// `connections` HTTP/2 connections with a zero initial window, each opening `calls`
/// watch calls and never reading them. Kept alive while the returned value lives.
async fn zero_window_client(
    proxy: std::net::SocketAddr,
    connections: usize,
    calls: usize,
) -> Vec<(
    h2::client::SendRequest<Bytes>,
    Vec<h2::client::ResponseFuture>,
)> {
    let mut held = Vec::new();
    for _ in 0..connections {
        let socket = tokio::net::TcpStream::connect(proxy).await.unwrap();
        let (mut sender, connection) = h2::client::Builder::new()
            .initial_window_size(0)
            .handshake::<_, Bytes>(socket)
            .await
            .unwrap();
        tokio::spawn(connection);
        let mut responses = Vec::new();
        for _ in 0..calls {
            sender = sender.ready().await.unwrap();
            let request = http::Request::builder()
                .method("POST")
                .uri(format!("http://{proxy}/zw.Test/Watch"))
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                .body(())
                .unwrap();
            let (response, mut send) = sender.send_request(request, false).unwrap();
            // A call over the per-peer cap is answered (and its stream closed) at once,
            // which may come before this: then there is nothing to send.
            let _ = send.send_data(grpc_frame(false, b"watch"), true);
            responses.push(response);
        }
        held.push((sender, responses));
    }
    held
}

/// p99 of `n` unary calls from 127.0.0.2, each with a 2 s deadline; `None` if any failed.
async fn p99_from_another_client(proxy: std::net::SocketAddr, n: usize) -> Option<Duration> {
    let client = RawClient::connect_from("127.0.0.2".parse().unwrap(), proxy).await;
    let mut took = Vec::new();
    for _ in 0..n {
        let started = Instant::now();
        let body = frames_body(vec![Frame::data(grpc_frame(false, b"ping"))]);
        let response = client
            .call(
                "/zw.Test/Unary",
                header_map(&[("grpc-timeout", "2S")]),
                body,
            )
            .await;
        if response.grpc_status() != Some("0") {
            eprintln!("a normal call failed: {:?}", response.grpc_status());
            return None;
        }
        took.push(started.elapsed());
    }
    took.sort();
    Some(took[n * 99 / 100 - 1])
}

fn config(backend: std::net::SocketAddr, route_extra: &str) -> String {
    support::one_route_config("backend", &[backend], route_extra, "")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zero_window_client_cannot_starve_the_others_under_a_per_peer_cap() {
    let backend = pooled_backend(POOL).await;
    let (proxy, _file) =
        support::start_with_config(&config(backend.addr(), "max_in_flight_per_peer = 8"), 1);
    let addr = proxy.listening[0];
    let quiet = p99_from_another_client(addr, 200)
        .await
        .expect("quiet calls succeed");
    let _attack = zero_window_client(addr, 5, 50).await;
    tokio::time::sleep(Duration::from_millis(300)).await; // the attacker's calls are open
    let attacked = p99_from_another_client(addr, 200)
        .await
        .expect("no normal call fails under the attack");
    eprintln!("normal client p99: quiet {quiet:?}, under attack {attacked:?}");
    // On 2 shared cores, a quiet p99 of a few milliseconds is noise: 5 ms is the floor.
    let allowed = 2 * quiet.max(Duration::from_millis(5));
    assert!(
        attacked <= allowed,
        "p99 {attacked:?} under attack, {quiet:?} quiet"
    );
}

/// The same attack without the cap: the test above would fail (the pool is pinned).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_cap_the_zero_window_client_pins_the_backend_pool() {
    let backend = pooled_backend(POOL).await;
    let (proxy, _file) = support::start_with_config(&config(backend.addr(), ""), 1);
    let addr = proxy.listening[0];
    let _attack = zero_window_client(addr, 5, 50).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        p99_from_another_client(addr, 5).await,
        None,
        "with every pool slot pinned, normal calls reach their deadline"
    );
}

/// Stalled calls hold their data in the proxy, up to one stream window each, but not the
/// backend connection's window: the other calls on that connection go on. (Found by the
/// test above: with a 2 MiB connection window, two stalled 1 MiB streams stopped every
/// call on their backend connection.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_calls_do_not_stall_their_backend_connection() {
    let backend = pooled_backend(1000).await;
    let (proxy, _file) = support::start_with_config(&config(backend.addr(), ""), 1);
    let addr = proxy.listening[0];
    let _stalled = zero_window_client(addr, 1, 10).await;
    tokio::time::sleep(Duration::from_millis(300)).await; // 10 MiB waits in the proxy
    let p99 = p99_from_another_client(addr, 50)
        .await
        .expect("calls beside stalled ones on the backend connection succeed");
    assert!(p99 < Duration::from_millis(500), "p99 {p99:?}");
}
