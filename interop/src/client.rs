//! The tonic client: every one of [`CHECKS`](crate::CHECKS) against a target, with the
//! same expectations as the grpcio and grpc-js clients (`python/client.py`,
//! `node/client.js`).

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use grpcproxy_testing::compressed::{watch_responses, FirstMessage, WatchedResponses};
use prost::Message as _;
use tonic::codec::CompressionEncoding;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request};
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{health_check_response::ServingStatus, HealthCheckRequest};
use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1alpha::ServerReflectionRequest;

use crate::pb::interop_client::InteropClient;
use crate::pb::{CancelQuery, Request as Message};
use crate::CheckResult;

const CHECK_TIMEOUT: Duration = Duration::from_secs(30);

type Watched = WatchedResponses<Channel, tonic::body::Body>;
type Stub = InteropClient<Watched>;

/// What a check returns: its detail, and what it saw of compression.
type Outcome = Result<(String, &'static str), String>;

/// Runs every check against every `(label, address)` target, one after another (the
/// deadline and cancellation checks time things, so they do not share the peers' CPU with
/// 8 MiB messages).
///
/// ```no_run
/// # async fn f() {
/// let results = grpcproxy_interop::client::run(&[("tonic/direct".into(), "127.0.0.1:50051".into())]).await;
/// assert!(results.iter().all(|r| r.ok));
/// # }
/// ```
pub async fn run(targets: &[(String, String)]) -> Vec<CheckResult> {
    let mut results = Vec::new();
    for (label, address) in targets {
        results.extend(run_target(label, address).await);
    }
    results
}

async fn run_target(label: &str, address: &str) -> Vec<CheckResult> {
    let channel = match Endpoint::from_shared(format!("http://{address}")) {
        Ok(endpoint) => endpoint.connect_lazy(),
        Err(error) => return vec![failed(label, "connect", error.to_string())],
    };
    let watched = watch_responses(channel.clone());
    let stub = InteropClient::new(watched.clone())
        .max_decoding_message_size(crate::MAX_MESSAGE)
        .max_encoding_message_size(crate::MAX_MESSAGE)
        .accept_compressed(CompressionEncoding::Gzip);
    let mut results = Vec::new();
    for check in crate::CHECKS {
        let outcome = match check {
            "unary" => within(unary(stub.clone())).await,
            "client_stream" => within(client_stream(stub.clone())).await,
            "server_stream" => within(server_stream(stub.clone())).await,
            "bidi" => within(bidi(stub.clone())).await,
            "empty_client_stream" => within(empty_client_stream(stub.clone())).await,
            "empty_bidi" => within(empty_bidi(stub.clone())).await,
            "metadata" => within(metadata(stub.clone(), watched.clone())).await,
            "status" => within(status(stub.clone())).await,
            "large_8mib" => within(large(stub.clone())).await,
            "gzip_client" => within(gzip_client(stub.clone())).await,
            "gzip_server" => within(gzip_server(stub.clone())).await,
            "deadline" => within(deadline(stub.clone())).await,
            "cancel" => within(cancel(stub.clone())).await,
            "health" => within(health(channel.clone())).await,
            "reflection" => within(reflection(channel.clone())).await,
            "concurrent_100" => within(concurrent(stub.clone())).await,
            other => Err(format!("no such check {other}")),
        };
        results.push(match outcome {
            Ok((detail, seen)) => CheckResult {
                target: label.to_owned(),
                check: check.to_owned(),
                ok: true,
                detail,
                seen: seen.to_owned(),
            },
            Err(detail) => failed(label, check, detail),
        });
    }
    results
}

fn failed(label: &str, check: &str, detail: String) -> CheckResult {
    CheckResult {
        target: label.to_owned(),
        check: check.to_owned(),
        ok: false,
        detail,
        seen: String::new(),
    }
}

async fn within(check: impl Future<Output = Outcome>) -> Outcome {
    tokio::time::timeout(CHECK_TIMEOUT, check)
        .await
        .unwrap_or_else(|_| Err(format!("no outcome within {CHECK_TIMEOUT:?}")))
}

fn expect(condition: bool, detail: impl FnOnce() -> String) -> Result<(), String> {
    if condition {
        Ok(())
    } else {
        Err(detail())
    }
}

fn pass(detail: &str) -> Outcome {
    Ok((detail.to_owned(), ""))
}

fn pattern(size: usize) -> Bytes {
    (0..size).map(|i| (i % 251) as u8).collect()
}

fn request(payload: impl Into<Bytes>) -> Message {
    Message {
        payload: payload.into(),
        ..Message::default()
    }
}

async fn unary(mut stub: Stub) -> Outcome {
    let mut payload = b"unary \x00\xff".to_vec();
    payload.extend(0..=255u8);
    let response = stub
        .unary(request(payload.clone()))
        .await
        .map_err(describe)?;
    let got = &response.get_ref().payload;
    expect(got[..] == payload[..], || {
        format!("payload of {} bytes differs", got.len())
    })?;
    pass("echoed 264 bytes")
}

async fn client_stream(mut stub: Stub) -> Outcome {
    let parts: Vec<Bytes> = (0..5u8)
        .map(|i| {
            let mut part = format!("part-{i}:").into_bytes();
            part.extend(std::iter::repeat_n(i, i.into()));
            Bytes::from(part)
        })
        .collect();
    let requests = tokio_stream::iter(parts.clone().into_iter().map(request));
    let response = stub.client_stream(requests).await.map_err(describe)?;
    let answer = response.into_inner();
    expect(answer.request_count == 5, || {
        format!("request_count {}", answer.request_count)
    })?;
    expect(answer.payload == parts.concat(), || {
        "concatenated payload differs".into()
    })?;
    pass("5 requests concatenated")
}

async fn empty_client_stream(mut stub: Stub) -> Outcome {
    let requests = tokio_stream::iter(Vec::<Message>::new());
    let answer = stub
        .client_stream(requests)
        .await
        .map_err(describe)?
        .into_inner();
    expect(answer.request_count == 0, || {
        format!("request_count {}", answer.request_count)
    })?;
    expect(answer.payload.is_empty(), || {
        format!("payload of {} bytes", answer.payload.len())
    })?;
    pass("no requests, count 0")
}

async fn empty_bidi(mut stub: Stub) -> Outcome {
    let requests = tokio_stream::iter(Vec::<Message>::new());
    let mut answers = stub.bidi(requests).await.map_err(describe)?.into_inner();
    let first = answers.message().await.map_err(describe)?;
    expect(first.is_none(), || "a response to no request".into())?;
    pass("half-closed at once, no response, OK")
}

async fn server_stream(mut stub: Stub) -> Outcome {
    let message = Message {
        payload: Bytes::from_static(b"stream"),
        response_count: 5,
        ..Message::default()
    };
    let mut stream = open_stream(&mut stub, message).await?;
    let mut payloads = Vec::new();
    while let Some(answer) = stream.message().await.map_err(describe)? {
        payloads.push(answer.payload);
    }
    let expected: Vec<Bytes> = (0..5u8)
        .map(|i| Bytes::from([&b"stream"[..], &[i]].concat()))
        .collect();
    expect(payloads == expected, || format!("got {payloads:?}"))?;
    pass("5 responses, OK")
}

async fn bidi(mut stub: Stub) -> Outcome {
    let ping = |i: u32| Bytes::from(format!("ping-{i}"));
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    // The first request goes before the call returns: tonic waits for response headers,
    // which grpcio and grpc-js servers send with their first response.
    tx.send(request(ping(0)))
        .await
        .map_err(|_| "the request stream closed".to_owned())?;
    let requests = tokio_stream::wrappers::ReceiverStream::new(rx);
    let mut answers = stub.bidi(requests).await.map_err(describe)?.into_inner();
    for i in 0..5u32 {
        let payload = ping(i);
        if i > 0 {
            tx.send(request(payload.clone()))
                .await
                .map_err(|_| "the request stream closed".to_owned())?;
        }
        let answer = answers
            .message()
            .await
            .map_err(describe)?
            .ok_or_else(|| format!("stream ended after {i} responses"))?;
        expect(answer.payload == payload, || {
            format!("response {i} differs")
        })?;
        expect(answer.request_count == i + 1, || {
            format!("response {i}: count {}", answer.request_count)
        })?;
    }
    drop(tx);
    let after = answers.message().await.map_err(describe)?;
    expect(after.is_none(), || "a response after half-close".into())?;
    pass("5 ping-pongs, half-close, OK")
}

async fn metadata(mut stub: Stub, channel: Watched) -> Outcome {
    let (ascii, bin) = ("hello, interop", [0u8, 1, 2, 0xfe, 0xff]);
    let mut call = Request::new(request(Bytes::from_static(b"md")));
    call.metadata_mut()
        .insert("x-interop-ascii", MetadataValue::from_static(ascii));
    call.metadata_mut()
        .insert_bin("x-interop-bin", MetadataValue::from_bytes(&bin));
    let response = stub.unary(call).await.map_err(describe)?;
    let headers = response.metadata();
    let ascii_of = |map: &MetadataMap, key: &str| {
        map.get(key)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let bin_of = |map: &MetadataMap, key: &str| {
        map.get_bin(key)
            .and_then(|v| v.to_bytes().ok())
            .map(|b| b.to_vec())
    };
    expect(
        ascii_of(headers, "x-echo-ascii").as_deref() == Some(ascii),
        || format!("x-echo-ascii: {:?}", headers.get("x-echo-ascii")),
    )?;
    expect(
        bin_of(headers, "x-echo-bin").as_deref() == Some(&bin[..]),
        || format!("x-echo-bin: {:?}", headers.get_bin("x-echo-bin")),
    )?;
    // Tonic gives unary trailers only through the raw body; read them there.
    let trailers = unary_trailers(channel, ascii, &bin).await?;
    let trailer_ascii = format!("trailer {ascii}");
    let reversed: Vec<u8> = bin.iter().rev().copied().collect();
    expect(
        ascii_of(&trailers, "x-trailer-ascii").as_deref() == Some(&trailer_ascii[..]),
        || format!("x-trailer-ascii: {:?}", trailers.get("x-trailer-ascii")),
    )?;
    expect(
        bin_of(&trailers, "x-trailer-bin").as_deref() == Some(&reversed[..]),
        || format!("x-trailer-bin: {:?}", trailers.get_bin("x-trailer-bin")),
    )?;
    pass("ascii and -bin echoed in headers and trailers")
}

/// The trailers of a unary call, which tonic's unary API drops: the same call made as a
/// server-streaming one over the same path, whose `Streaming` exposes them.
async fn unary_trailers(
    channel: Watched,
    ascii: &'static str,
    bin: &[u8],
) -> Result<MetadataMap, String> {
    let mut grpc = tonic::client::Grpc::new(channel).accept_compressed(CompressionEncoding::Gzip);
    grpc.ready().await.map_err(|e| e.to_string())?;
    let mut call = Request::new(request(Bytes::from_static(b"md")));
    call.metadata_mut()
        .insert("x-interop-ascii", MetadataValue::from_static(ascii));
    call.metadata_mut()
        .insert_bin("x-interop-bin", MetadataValue::from_bytes(bin));
    let path = http::uri::PathAndQuery::from_static("/interop.v1.Interop/Unary");
    let codec = tonic_prost::ProstCodec::<Message, crate::pb::Response>::default();
    let mut stream = grpc
        .server_streaming(call, path, codec)
        .await
        .map_err(describe)?
        .into_inner();
    while stream.message().await.map_err(describe)?.is_some() {}
    stream
        .trailers()
        .await
        .map_err(describe)?
        .ok_or_else(|| "no trailers".to_owned())
}

fn status_details(message: &str) -> Bytes {
    let detail = prost_types::Any {
        type_url: "type.googleapis.com/interop.v1.Request".into(),
        value: request(Bytes::from_static(b"detail")).encode_to_vec(),
    };
    crate::pb::rpc::Status {
        code: 9,
        message: message.into(),
        details: vec![detail],
    }
    .encode_to_vec()
    .into()
}

async fn status(mut stub: Stub) -> Outcome {
    let message = "interop: précondition ✓ 100%";
    let details = status_details(message);
    let call = Message {
        fail_code: 9,
        fail_message: message.into(),
        fail_details: details.clone(),
        ..Message::default()
    };
    let status = match stub.unary(call).await {
        Ok(_) => return Err("the call succeeded".into()),
        Err(status) => status,
    };
    expect(status.code() == Code::FailedPrecondition, || {
        format!("code {:?}", status.code())
    })?;
    expect(status.message() == message, || {
        format!("message {:?}", status.message())
    })?;
    expect(status.details() == &details[..], || {
        format!("grpc-status-details-bin {:?}", status.details())
    })?;
    pass("FAILED_PRECONDITION, message and details exact")
}

async fn large(mut stub: Stub) -> Outcome {
    let payload = pattern(8 << 20);
    let response = stub
        .unary(request(payload.clone()))
        .await
        .map_err(describe)?;
    let got = &response.get_ref().payload;
    expect(*got == payload, || {
        format!("{} bytes back, differing", got.len())
    })?;
    pass("8 MiB both ways")
}

async fn gzip_client(stub: Stub) -> Outcome {
    let payload = Bytes::from("compress me ".repeat(20_000));
    let mut stub = stub.send_compressed(CompressionEncoding::Gzip);
    let response = stub
        .unary(request(payload.clone()))
        .await
        .map_err(describe)?;
    let answer = response.into_inner();
    expect(answer.payload == payload, || "payload differs".into())?;
    let seen = match answer.request_compressed.as_str() {
        "yes" => "yes",
        "no" => return Err("the backend saw an uncompressed request".into()),
        _ => "unknown",
    };
    Ok((format!("backend saw compressed: {seen}"), seen))
}

async fn gzip_server(mut stub: Stub) -> Outcome {
    let payload = Bytes::from("compressed answer ".repeat(20_000));
    let response = stub
        .unary(request(payload.clone()))
        .await
        .map_err(describe)?;
    let seen = FirstMessage::describe(response.extensions());
    expect(response.get_ref().payload == payload, || {
        "payload differs".into()
    })?;
    Ok((format!("response arrived compressed: {seen}"), seen))
}

async fn was_cancelled(stub: &mut Stub, call_id: String) -> Result<bool, String> {
    let query = CancelQuery {
        call_id,
        wait_ms: 5000,
    };
    let report = stub.was_cancelled(query).await.map_err(describe)?;
    Ok(report.into_inner().cancelled)
}

/// A call id no other call of this process has (the other clients use UUIDs).
fn call_id(kind: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("tonic-{}-{kind}-{n}", std::process::id())
}

async fn deadline(mut stub: Stub) -> Outcome {
    let id = call_id("deadline");
    let mut call = Request::new(Message {
        sleep_ms: 5000,
        call_id: id.clone(),
        ..Message::default()
    });
    call.set_timeout(Duration::from_millis(300));
    let start = Instant::now();
    let outcome = tokio::time::timeout(Duration::from_secs(5), stub.unary(call)).await;
    let elapsed = start.elapsed();
    let status = match outcome {
        Err(_) => return Err("no answer within 5 s".into()),
        Ok(Ok(_)) => return Err("the call succeeded".into()),
        Ok(Err(status)) => status,
    };
    // Tonic runs its own timer on `grpc-timeout`, in clients (until response headers) and
    // servers, and reports it as CANCELLED "Timeout expired" (tonic 0.14).
    let by = match (status.code(), status.message()) {
        (Code::DeadlineExceeded, _) => "DEADLINE_EXCEEDED",
        (Code::Cancelled, "Timeout expired") => "tonic's deadline answer (CANCELLED)",
        (code, message) => return Err(format!("code {code:?}: {message}")),
    };
    expect(elapsed < Duration::from_millis(2500), || {
        format!("took {elapsed:?}")
    })?;
    expect(was_cancelled(&mut stub, id).await?, || {
        "the backend did not see the call end".into()
    })?;
    Ok((
        format!(
            "{by} after {} ms; backend saw the call end",
            elapsed.as_millis()
        ),
        "",
    ))
}

async fn cancel(mut stub: Stub) -> Outcome {
    let id = call_id("cancel");
    let message = Message {
        payload: Bytes::from_static(b"c"),
        response_count: 1000,
        sleep_ms: 20,
        call_id: id.clone(),
        ..Message::default()
    };
    let mut stream = open_stream(&mut stub, message).await?;
    for _ in 0..2 {
        stream
            .message()
            .await
            .map_err(describe)?
            .ok_or("stream ended early")?;
    }
    drop(stream);
    expect(was_cancelled(&mut stub, id).await?, || {
        "the backend did not see the cancellation".into()
    })?;
    pass("backend saw the cancellation")
}

async fn health(channel: Channel) -> Outcome {
    let mut client = HealthClient::new(channel).accept_compressed(CompressionEncoding::Gzip);
    for service in ["", "interop.v1.Interop"] {
        let request = HealthCheckRequest {
            service: service.into(),
        };
        let status = client
            .check(request)
            .await
            .map_err(describe)?
            .into_inner()
            .status;
        expect(status == ServingStatus::Serving as i32, || {
            format!("{service:?}: {status}")
        })?;
    }
    pass("SERVING for '' and interop.v1.Interop")
}

async fn reflection(channel: Channel) -> Outcome {
    let mut client =
        ServerReflectionClient::new(channel).accept_compressed(CompressionEncoding::Gzip);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .map_err(describe)?
        .into_inner();
    let mut names = Vec::new();
    while let Some(response) = responses.message().await.map_err(describe)? {
        if let Some(MessageResponse::ListServicesResponse(list)) = response.message_response {
            names.extend(list.service.into_iter().map(|s| s.name));
        }
    }
    for wanted in ["interop.v1.Interop", "grpc.health.v1.Health"] {
        expect(names.iter().any(|n| n == wanted), || {
            format!("{wanted} not in {names:?}")
        })?;
    }
    Ok((format!("{} services listed", names.len()), ""))
}

async fn concurrent(stub: Stub) -> Outcome {
    let calls = (0..100).map(|i| {
        let mut stub = stub.clone();
        async move {
            let payload = Bytes::from(format!("call-{i}"));
            let response = stub.unary(request(payload.clone())).await;
            matches!(response, Ok(r) if r.get_ref().payload == payload)
        }
    });
    let wrong = futures_util::future::join_all(calls)
        .await
        .into_iter()
        .filter(|ok| !ok)
        .count();
    expect(wrong == 0, || format!("{wrong} calls answered wrongly"))?;
    pass("100 calls at once, all exact")
}

async fn open_stream(
    stub: &mut Stub,
    message: Message,
) -> Result<tonic::Streaming<crate::pb::Response>, String> {
    let response = stub.server_stream(message).await.map_err(describe)?;
    Ok(response.into_inner())
}

fn describe(status: tonic::Status) -> String {
    format!("{:?}: {}", status.code(), status.message())
}
