//! Backends that never finish, and report when the proxy resets their stream.

use std::time::Duration;

use grpcproxy_testing::raw::{channel_body, RawBackend};
use http::Response;
use tokio::sync::mpsc;

/// What a hanging backend saw.
#[derive(Debug, PartialEq, Eq)]
pub enum Seen {
    /// A request arrived, with its grpc-timeout header if any.
    Request(Option<String>),
    /// The stream was reset (the handler or the response body was dropped).
    Reset,
}

struct DropSignal(mpsc::UnboundedSender<Seen>);

impl Drop for DropSignal {
    fn drop(&mut self) {
        let _ = self.0.send(Seen::Reset);
    }
}

/// A backend that never completes a call: with `send_headers` it answers headers and then
/// nothing; without, it never answers at all.
pub async fn hanging_backend(send_headers: bool) -> (RawBackend, mpsc::UnboundedReceiver<Seen>) {
    let (events, seen) = mpsc::unbounded_channel();
    let backend = RawBackend::start(move |request: http::Request<hyper::body::Incoming>| {
        let events = events.clone();
        async move {
            let timeout = request
                .headers()
                .get("grpc-timeout")
                .map(|v| v.to_str().unwrap().to_owned());
            let _ = events.send(Seen::Request(timeout));
            let signal = DropSignal(events);
            if !send_headers {
                // Never answer; dropping this future (on reset) fires the signal.
                std::future::pending::<()>().await;
            }
            let (tx, body) = channel_body();
            tokio::spawn(async move {
                tx.closed().await; // the response body was dropped: the stream was reset
                drop(signal);
            });
            let mut response = Response::new(body);
            response
                .headers_mut()
                .insert("content-type", "application/grpc".parse().unwrap());
            response
                .headers_mut()
                .insert("x-sent-before-hang", "1".parse().unwrap());
            response
        }
    })
    .await;
    (backend, seen)
}

/// The next event, or a panic after `within`.
pub async fn next_event(seen: &mut mpsc::UnboundedReceiver<Seen>, within: Duration) -> Seen {
    tokio::time::timeout(within, seen.recv())
        .await
        .expect("the backend saw nothing in time")
        .expect("backend gone")
}

/// Asserts the backend saw the stream reset within 1 s (after its request event).
pub async fn expect_reset(seen: &mut mpsc::UnboundedReceiver<Seen>) {
    assert_eq!(
        next_event(seen, Duration::from_secs(1)).await,
        Seen::Reset,
        "backend must see the reset"
    );
}
