//! HTTP/2 keepalive: PINGs that find a peer gone silent, on either side of the proxy.

use std::time::Duration;

/// Sends a PING every `interval`; returns (with the timeout) when one goes unanswered for
/// `timeout`. A PING that cannot be sent means the connection is ending: it waits forever
/// then, and the connection's own end wins.
pub(crate) async fn keepalive(
    mut pings: h2::PingPong,
    interval: Duration,
    timeout: Duration,
) -> Duration {
    loop {
        tokio::time::sleep(interval).await;
        if pings.send_ping(h2::Ping::opaque()).is_err() {
            return std::future::pending().await;
        }
        let pong = std::future::poll_fn(|cx| pings.poll_pong(cx));
        match tokio::time::timeout(timeout, pong).await {
            Ok(Ok(_)) => {}
            Ok(Err(_)) => return std::future::pending().await,
            Err(_) => return timeout,
        }
    }
}
