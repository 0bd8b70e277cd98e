//! The load generator: HTTP/2 (h2) clients driving one shape at a fixed concurrency (closed
//! loop) or a fixed rate (open loop), with HDR-histogram latencies.

mod calls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// What each operation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Shape {
    /// One `helloworld.Greeter/SayHello` call per operation.
    Unary,
    /// The same call as gRPC-Web (binary, over HTTP/2): the proxy must serve gRPC-Web.
    WebUnary,
    /// One message and its echo on a long-lived bidi stream per operation.
    PingPong,
    /// One message of a server-push stream per operation (throughput).
    Push,
}

/// `grpcproxy-bench load`'s arguments.
#[derive(Debug, Clone, clap::Args, Serialize, Deserialize)]
pub(crate) struct LoadArgs {
    /// host:port of the server (h2c).
    #[arg(long)]
    pub(crate) target: SocketAddr,
    #[arg(long, value_enum, default_value = "unary")]
    pub(crate) shape: Shape,
    /// Payload bytes per message (16, 1024, 65536, 1048576, …).
    #[arg(long, default_value_t = 16)]
    pub(crate) size: usize,
    /// HTTP/2 connections.
    #[arg(long, default_value_t = 1)]
    pub(crate) connections: usize,
    /// Concurrent streams per connection (closed loop).
    #[arg(long, default_value_t = 1)]
    pub(crate) streams: usize,
    /// Open loop: start this many unary calls per second instead, without waiting for
    /// answers (so a slow server cannot slow the generator down).
    #[arg(long)]
    pub(crate) rate: Option<f64>,
    /// Measured time.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde_compat")]
    pub(crate) duration: Duration,
    /// Unmeasured time before it.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde_compat")]
    pub(crate) warmup: Duration,
}

/// Durations as seconds in JSON.
mod humantime_serde_compat {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_secs_f64(f64::deserialize(d)?))
    }
}

/// Latency percentiles, in microseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub(crate) struct Latency {
    pub(crate) p50: u64,
    pub(crate) p90: u64,
    pub(crate) p99: u64,
    pub(crate) p999: u64,
    pub(crate) max: u64,
}

/// One run's result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Report {
    pub(crate) args: LoadArgs,
    /// Operations completed in the measured time.
    pub(crate) ops: u64,
    pub(crate) errors: u64,
    pub(crate) ops_per_sec: f64,
    /// Response payload bytes per second (frames included).
    pub(crate) bytes_per_sec: f64,
    pub(crate) latency_us: Latency,
    /// The first error seen, if any.
    pub(crate) first_error: Option<String>,
}

/// What one worker measured.
pub(crate) struct Tally {
    pub(crate) ops: u64,
    pub(crate) errors: u64,
    pub(crate) bytes: u64,
    pub(crate) latency: Histogram<u64>,
    pub(crate) first_error: Option<String>,
}

impl Tally {
    fn new() -> Self {
        Self {
            ops: 0,
            errors: 0,
            bytes: 0,
            latency: Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid bounds"),
            first_error: None,
        }
    }

    pub(crate) fn ok(&mut self, started: Instant, bytes: usize) {
        self.record(started.elapsed(), bytes);
    }

    pub(crate) fn record(&mut self, latency: Duration, bytes: usize) {
        self.ops += 1;
        self.bytes += bytes as u64;
        let us = latency.as_micros().clamp(1, 120_000_000) as u64;
        let _ = self.latency.record(us);
    }

    pub(crate) fn error(&mut self, error: impl std::fmt::Display) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(error.to_string());
        }
    }

    fn merge(&mut self, other: Tally) {
        self.ops += other.ops;
        self.errors += other.errors;
        self.bytes += other.bytes;
        let _ = self.latency.add(&other.latency);
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }
}

/// When a run measures.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Window {
    pub(crate) from: Instant,
    pub(crate) until: Instant,
}

impl Window {
    pub(crate) fn measuring(&self, at: Instant) -> bool {
        at >= self.from && at < self.until
    }
}

/// The encoded request message of `shape` with `size` payload bytes, with its 5-byte prefix.
pub(crate) fn request_frame(shape: Shape, size: usize) -> Bytes {
    use prost::Message;
    let message = match shape {
        Shape::Unary | Shape::WebUnary => crate::pb::helloworld::HelloRequest {
            name: "x".repeat(size),
        }
        .encode_to_vec(),
        Shape::PingPong => crate::pb::bench::Chunk {
            data: vec![b'x'; size].into(),
        }
        .encode_to_vec(),
        Shape::Push => crate::pb::bench::PushRequest {
            count: 0,
            size: size as u32,
        }
        .encode_to_vec(),
    };
    let mut frame = Vec::with_capacity(5 + message.len());
    frame.push(0);
    frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
    frame.extend_from_slice(&message);
    frame.into()
}

/// Runs the load and reports.
pub(crate) async fn run(args: &LoadArgs) -> anyhow::Result<Report> {
    anyhow::ensure!(
        args.connections > 0 && args.streams > 0,
        "--connections and --streams must be at least 1"
    );
    let mut senders = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        senders.push(calls::connect(args.target).await?);
    }
    let start = Instant::now();
    let window = Window {
        from: start + args.warmup,
        until: start + args.warmup + args.duration,
    };
    let frame = request_frame(args.shape, args.size);
    let target = Arc::new(calls::Target::new(args.target, args.shape));
    let mut workers = tokio::task::JoinSet::new();
    match args.rate {
        Some(rate) => {
            anyhow::ensure!(
                matches!(args.shape, Shape::Unary | Shape::WebUnary),
                "--rate drives unary calls only"
            );
            anyhow::ensure!(rate.is_finite() && rate > 0.0, "--rate must be positive");
            workers.spawn(calls::open_loop(senders, target, frame, window, rate));
        }
        None => {
            for sender in &senders {
                for _ in 0..args.streams {
                    let (sender, target, frame) = (sender.clone(), target.clone(), frame.clone());
                    workers.spawn(calls::closed_loop(sender, target, frame, window));
                }
            }
        }
    }
    let mut total = Tally::new();
    while let Some(tally) = workers.join_next().await {
        total.merge(tally?);
    }
    let seconds = args.duration.as_secs_f64();
    let h = &total.latency;
    let latency_us = if total.ops == 0 || args.shape == Shape::Push {
        Latency::default()
    } else {
        Latency {
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    };
    Ok(Report {
        args: args.clone(),
        ops: total.ops,
        errors: total.errors,
        ops_per_sec: total.ops as f64 / seconds,
        bytes_per_sec: total.bytes as f64 / seconds,
        latency_us,
        first_error: total.first_error,
    })
}
