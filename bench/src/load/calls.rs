//! The calls themselves, on raw h2 streams: the generator does as little as possible per
//! operation so that it measures the server, not itself.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use h2::client::SendRequest;
use h2::RecvStream;
use http::{HeaderValue, Method, Request, Uri};

use super::{Shape, Tally, Window};

/// Opens one HTTP/2 connection (no-delay, large windows) and drives it in the background.
pub(super) async fn connect(target: SocketAddr) -> anyhow::Result<SendRequest<Bytes>> {
    let tcp = tokio::net::TcpStream::connect(target).await?;
    tcp.set_nodelay(true)?;
    let (sender, connection) = h2::client::Builder::new()
        .initial_window_size(1 << 20)
        .initial_connection_window_size(16 << 20)
        .max_concurrent_reset_streams(100_000)
        .handshake(tcp)
        .await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

/// Where calls go and what they are.
pub(super) struct Target {
    uri: Uri,
    shape: Shape,
}

impl Target {
    pub(super) fn new(addr: SocketAddr, shape: Shape) -> Self {
        let path = match shape {
            Shape::Unary | Shape::WebUnary => "/helloworld.Greeter/SayHello",
            Shape::PingPong => "/grpcproxy.bench.Streaming/PingPong",
            Shape::Push => "/grpcproxy.bench.Streaming/Push",
        };
        Self {
            uri: format!("http://{addr}{path}").parse().expect("a valid URI"),
            shape,
        }
    }

    fn request(&self) -> Request<()> {
        let mut request = Request::new(());
        *request.method_mut() = Method::POST;
        *request.uri_mut() = self.uri.clone();
        let headers = request.headers_mut();
        if self.shape == Shape::WebUnary {
            headers.insert(
                "content-type",
                HeaderValue::from_static("application/grpc-web+proto"),
            );
            headers.insert("x-grpc-web", HeaderValue::from_static("1"));
            return request;
        }
        headers.insert("content-type", HeaderValue::from_static("application/grpc"));
        headers.insert("te", HeaderValue::from_static("trailers"));
        request
    }
}

/// One stream slot, calls back to back until the window closes.
pub(super) async fn closed_loop(
    sender: SendRequest<Bytes>,
    target: Arc<Target>,
    frame: Bytes,
    window: Window,
) -> Tally {
    let mut tally = Tally::new();
    match target.shape {
        Shape::Unary | Shape::WebUnary => loop {
            let started = Instant::now();
            if started >= window.until {
                break;
            }
            let result = unary(&sender, &target, &frame).await;
            if window.measuring(started) {
                match result {
                    Ok(bytes) => tally.ok(started, bytes),
                    Err(e) => tally.error(e),
                }
            } else if let Err(e) = result {
                tally.error(e);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        },
        Shape::PingPong => {
            if let Err(e) = ping_pong(&sender, &target, &frame, window, &mut tally).await {
                tally.error(e);
            }
        }
        Shape::Push => {
            if let Err(e) = push(&sender, &target, &frame, window, &mut tally).await {
                tally.error(e);
            }
        }
    }
    tally
}

/// Unary calls started at `rate` per second across the connections, whether or not earlier
/// ones have answered.
pub(super) async fn open_loop(
    senders: Vec<SendRequest<Bytes>>,
    target: Arc<Target>,
    frame: Bytes,
    window: Window,
    rate: f64,
) -> Tally {
    let interval = Duration::from_secs_f64(1.0 / rate);
    let mut calls = tokio::task::JoinSet::new();
    let mut tally = Tally::new();
    let start = Instant::now();
    for n in 0u64.. {
        let intended = start + interval.mul_f64(n as f64);
        if intended >= window.until {
            break;
        }
        tokio::time::sleep_until(intended.into()).await;
        while let Some(done) = calls.try_join_next() {
            settle(&mut tally, done, window);
        }
        let (sender, target, frame) = (
            senders[n as usize % senders.len()].clone(),
            target.clone(),
            frame.clone(),
        );
        calls.spawn(async move {
            // Timers tick in milliseconds: latency counts from the actual start, which never
            // waits on responses (the dispatcher does not), so slow answers still show.
            let started = Instant::now();
            let result = unary(&sender, &target, &frame).await;
            // Measured here: the dispatcher collects results only between its ticks.
            (started, result.map(|bytes| (bytes, started.elapsed())))
        });
    }
    while let Some(done) = calls.join_next().await {
        settle(&mut tally, done, window);
    }
    tally
}

/// Counts a finished open-loop call if it was meant to start in the measured window.
fn settle(
    tally: &mut Tally,
    done: Result<(Instant, anyhow::Result<(usize, Duration)>), tokio::task::JoinError>,
    window: Window,
) {
    match done {
        Ok((started, _)) if !window.measuring(started) => {}
        Ok((_, Ok((bytes, latency)))) => tally.record(latency, bytes),
        Ok((_, Err(e))) => tally.error(e),
        Err(e) => tally.error(e),
    }
}

/// One unary call: returns the response DATA bytes after checking `grpc-status: 0`.
async fn unary(
    sender: &SendRequest<Bytes>,
    target: &Target,
    frame: &Bytes,
) -> anyhow::Result<usize> {
    let mut sender = sender.clone().ready().await?;
    let (response, mut stream) = sender.send_request(target.request(), false)?;
    stream.send_data(frame.clone(), true)?;
    let response = response.await?;
    if let Some(status) = response.headers().get("grpc-status") {
        anyhow::bail!("trailers-only response, grpc-status {status:?}");
    }
    let mut body = response.into_body();
    if target.shape == Shape::WebUnary {
        return web_answer(&mut body).await;
    }
    let bytes = drain(&mut body).await?;
    let trailers = body.trailers().await?.unwrap_or_default();
    match trailers.get("grpc-status").map(HeaderValue::as_bytes) {
        Some(b"0") => Ok(bytes),
        other => anyhow::bail!("grpc-status {other:?}"),
    }
}

/// Reads a gRPC-Web answer: its messages, then the trailers frame (flag 0x80), which must
/// say `grpc-status:0`; the bytes before that frame.
async fn web_answer(body: &mut RecvStream) -> anyhow::Result<usize> {
    let mut all = bytes::BytesMut::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        body.flow_control().release_capacity(chunk.len())?;
        all.extend_from_slice(&chunk);
    }
    let mut at = 0;
    while all.len() >= at + 5 {
        let len = u32::from_be_bytes([all[at + 1], all[at + 2], all[at + 3], all[at + 4]]) as usize;
        let frame = all
            .get(at + 5..at + 5 + len)
            .ok_or_else(|| anyhow::anyhow!("a gRPC-Web frame is cut short"))?;
        if all[at] & 0x80 != 0 {
            return match frame.windows(15).any(|w| w == b"grpc-status:0\r\n") {
                true => Ok(at),
                false => anyhow::bail!("trailers {:?}", String::from_utf8_lossy(frame)),
            };
        }
        at += 5 + len;
    }
    anyhow::bail!("no trailers frame in the gRPC-Web answer")
}

/// Reads the rest of a body, releasing flow control as it goes.
async fn drain(body: &mut RecvStream) -> anyhow::Result<usize> {
    let mut bytes = 0;
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        bytes += chunk.len();
        body.flow_control().release_capacity(chunk.len())?;
    }
    Ok(bytes)
}

/// Ping-pong on one stream: send a message, wait for its echo, repeat.
async fn ping_pong(
    sender: &SendRequest<Bytes>,
    target: &Target,
    frame: &Bytes,
    window: Window,
    tally: &mut Tally,
) -> anyhow::Result<()> {
    let mut sender = sender.clone().ready().await?;
    let (response, mut stream) = sender.send_request(target.request(), false)?;
    let mut pending_response = Some(response);
    let mut body: Option<RecvStream> = None;
    let mut buffered = 0usize;
    loop {
        let started = Instant::now();
        if started >= window.until {
            break;
        }
        stream.send_data(frame.clone(), false)?;
        if let Some(response) = pending_response.take() {
            body = Some(response.await?.into_body());
        }
        let body = body.as_mut().expect("set above");
        // The echo is exactly as long as what was sent.
        while buffered < frame.len() {
            let chunk = body
                .data()
                .await
                .ok_or_else(|| anyhow::anyhow!("the stream ended"))??;
            buffered += chunk.len();
            body.flow_control().release_capacity(chunk.len())?;
        }
        buffered -= frame.len();
        if window.measuring(started) {
            tally.ok(started, frame.len());
        }
    }
    stream.send_data(Bytes::new(), true)?;
    Ok(())
}

/// Reads a server-push stream: every message counts as an operation.
async fn push(
    sender: &SendRequest<Bytes>,
    target: &Target,
    frame: &Bytes,
    window: Window,
    tally: &mut Tally,
) -> anyhow::Result<()> {
    let size = {
        use prost::Message;
        let request = crate::pb::bench::PushRequest::decode(&frame[5..])?;
        let chunk = crate::pb::bench::Chunk {
            data: vec![0; request.size as usize].into(),
        };
        5 + chunk.encoded_len()
    };
    let mut sender = sender.clone().ready().await?;
    let (response, mut stream) = sender.send_request(target.request(), false)?;
    stream.send_data(frame.clone(), true)?;
    let mut body = response.await?.into_body();
    let mut bytes = 0usize;
    let mut counted_from: Option<usize> = None;
    while Instant::now() < window.until {
        let chunk = tokio::time::timeout_at(window.until.into(), body.data()).await;
        let Ok(chunk) = chunk else { break };
        let chunk = chunk.ok_or_else(|| anyhow::anyhow!("the push stream ended"))??;
        bytes += chunk.len();
        body.flow_control().release_capacity(chunk.len())?;
        if counted_from.is_none() && Instant::now() >= window.from {
            counted_from = Some(bytes);
        }
    }
    if let Some(from) = counted_from {
        let measured = bytes - from;
        tally.ops += (measured / size) as u64;
        tally.bytes += measured as u64;
    }
    // Dropping the stream resets it (CANCEL): the backend stops pushing.
    Ok(())
}
