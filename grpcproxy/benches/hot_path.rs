//! Micro-benchmarks of the per-call and per-frame pieces of the proxy's hot path:
//! `cargo bench -p grpcproxy --bench hot_path`.

use std::hint::black_box;

use bytes::Bytes;
use criterion::{criterion_main, BatchSize, Criterion, Throughput};
use grpcproxy::frame::{FrameDecoder, FrameEvent};
use grpcproxy::headers::strip_hop_by_hop;
use http::{HeaderMap, HeaderValue};

/// `count` messages of `size` bytes, framed, as one buffer.
fn framed(count: usize, size: usize) -> Bytes {
    let mut out = Vec::with_capacity(count * (5 + size));
    for _ in 0..count {
        out.push(0);
        out.extend_from_slice(&(size as u32).to_be_bytes());
        out.extend(std::iter::repeat_n(b'x', size));
    }
    out.into()
}

fn frame_decoding(c: &mut Criterion) {
    let mut group = c.benchmark_group("frame_decoder");
    for (name, count, size, chunk) in [
        ("16B messages, one chunk", 1000, 16, usize::MAX),
        ("16B messages, 7-byte chunks", 1000, 16, 7),
        ("64KiB messages, 16KiB chunks", 16, 64 << 10, 16 << 10),
    ] {
        let data = framed(count, size);
        group.throughput(Throughput::Bytes(data.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut decoder = FrameDecoder::new();
                let mut messages = 0;
                for piece in data.chunks(chunk.min(data.len())) {
                    decoder.feed(black_box(piece), |event| {
                        if let FrameEvent::Header(_) = event {
                            messages += 1;
                        }
                    });
                }
                assert_eq!(messages, count);
            })
        });
    }
    group.finish();
}

/// Request headers as a grpc-go or grpc-java client sends them, plus hop-by-hop ones.
fn client_headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in [
        ("content-type", "application/grpc"),
        ("te", "trailers"),
        ("user-agent", "grpc-go/1.64.0"),
        ("grpc-accept-encoding", "gzip"),
        ("grpc-timeout", "999847u"),
        (
            "authorization",
            "Bearer abcdefghijklmnopqrstuvwxyz0123456789",
        ),
        ("x-request-id", "5d0c7c36-1b7e-4a5e-9a53-3c1f0f9e2b11"),
        ("connection", "keep-alive"),
        ("keep-alive", "timeout=5"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    headers
}

fn header_filtering(c: &mut Criterion) {
    let headers = client_headers();
    c.bench_function("strip_hop_by_hop (9 headers, 2 hop-by-hop)", |b| {
        b.iter_batched_ref(
            || headers.clone(),
            |headers| strip_hop_by_hop(black_box(headers)),
            BatchSize::SmallInput,
        )
    });
}

/// The group criterion runs (its generated function is undocumented).
#[allow(missing_docs, unreachable_pub)]
mod group {
    use super::{frame_decoding, header_filtering};
    criterion::criterion_group!(benches, frame_decoding, header_filtering);
}

criterion_main!(group::benches);
