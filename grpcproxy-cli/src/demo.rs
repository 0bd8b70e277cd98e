//! `grpcproxy demo`: every RPC kind through the proxy, against an in-process backend.

use std::time::{Duration, Instant};

use grpcproxy::mq::NoQueue;
use grpcproxy::server::{self, ServerOptions};
use grpcproxy::{SingleUpstream, TransparentProxy, Upstream};
use grpcproxy_testing::pb::{Empty, PingRequest};
use grpcproxy_testing::ping::{CLIENT_MD_KEY, LIST_RESPONSES, SERVER_TRAILER_MD_KEY};
use grpcproxy_testing::raw::{frames_body, grpc_frame, header_map, RawClient};
use grpcproxy_testing::serve::{ping_backend, ping_client};
use http_body::Frame;
use prost::Message;
use tokio_stream::StreamExt;
use tonic::Code;

struct Row {
    call: &'static str,
    kind: &'static str,
    result: Result<String, String>,
    latency: Duration,
}

pub(crate) async fn run() -> anyhow::Result<()> {
    let (backend, _service) = ping_backend().await;
    let upstream = Upstream::new(&backend.url())?;
    let proxy = TransparentProxy::new(NoQueue, SingleUpstream::new(upstream));
    let stats = proxy.stats().clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let proxy_addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(server::serve(
        listener,
        proxy,
        ServerOptions::default(),
        async {
            let _ = stopped.await;
        },
    ));
    println!(
        "backend (ping service) on {}, grpcproxy on {proxy_addr}\n",
        backend.addr()
    );

    let mut client = ping_client(proxy_addr).await;
    let mut rows = Vec::new();

    let started = Instant::now();
    let mut request = tonic::Request::new(Empty {});
    request
        .metadata_mut()
        .insert(CLIENT_MD_KEY, "true".parse()?);
    let result = match client.ping_empty(request).await {
        Ok(r) => Ok(format!(
            "value {:?}, counter {}",
            r.get_ref().value,
            r.get_ref().counter
        )),
        Err(s) => Err(format!("{:?}: {}", s.code(), s.message())),
    };
    rows.push(Row {
        call: "PingEmpty",
        kind: "unary",
        result,
        latency: started.elapsed(),
    });

    let started = Instant::now();
    let result = match client
        .ping(PingRequest {
            value: "hello".into(),
            ..Default::default()
        })
        .await
    {
        Ok(r) => {
            let trailer = r.metadata().get(SERVER_TRAILER_MD_KEY).is_some();
            Ok(format!(
                "echo {:?}, trailer {}",
                r.get_ref().value,
                if trailer { "kept" } else { "LOST" }
            ))
        }
        Err(s) => Err(format!("{:?}: {}", s.code(), s.message())),
    };
    rows.push(Row {
        call: "Ping",
        kind: "unary",
        result,
        latency: started.elapsed(),
    });

    let started = Instant::now();
    let result = match client.ping_error(PingRequest::default()).await {
        Err(s) if s.code() == Code::FailedPrecondition => {
            Ok(format!("{:?} {:?} (expected)", s.code(), s.message()))
        }
        Err(s) => Err(format!("unexpected {:?}: {}", s.code(), s.message())),
        Ok(_) => Err("succeeded, expected an error".into()),
    };
    rows.push(Row {
        call: "PingError",
        kind: "unary",
        result,
        latency: started.elapsed(),
    });

    let started = Instant::now();
    let result = async {
        let mut stream = client
            .ping_list(PingRequest {
                value: "list".into(),
                ..Default::default()
            })
            .await
            .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?
            .into_inner();
        let mut n = 0;
        while let Some(item) = stream.next().await {
            item.map_err(|s| format!("{:?}: {}", s.code(), s.message()))?;
            n += 1;
        }
        let trailers = stream.trailers().await.map_err(|s| s.to_string())?;
        let trailer = trailers.is_some_and(|t| t.get(SERVER_TRAILER_MD_KEY).is_some());
        if n == LIST_RESPONSES {
            Ok(format!(
                "{n} messages, trailer {}",
                if trailer { "kept" } else { "LOST" }
            ))
        } else {
            Err(format!("{n} messages, expected {LIST_RESPONSES}"))
        }
    }
    .await;
    rows.push(Row {
        call: "PingList",
        kind: "server streaming",
        result,
        latency: started.elapsed(),
    });

    let started = Instant::now();
    let pings = (0..5).map(|i| PingRequest {
        value: format!("m{i}"),
        ..Default::default()
    });
    let result = match client.ping_client_stream(tokio_stream::iter(pings)).await {
        Ok(r) => Ok(format!(
            "{} messages joined: {:?}",
            r.get_ref().counter,
            r.get_ref().value
        )),
        Err(s) => Err(format!("{:?}: {}", s.code(), s.message())),
    };
    rows.push(Row {
        call: "PingClientStream",
        kind: "client streaming",
        result,
        latency: started.elapsed(),
    });

    let started = Instant::now();
    let result = async {
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let mut responses = client
            .ping_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?
            .into_inner();
        for i in 0..20 {
            tx.send(PingRequest {
                value: format!("{i}"),
                ..Default::default()
            })
            .await
            .map_err(|e| e.to_string())?;
            let reply = responses
                .next()
                .await
                .ok_or("stream ended early")?
                .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?;
            if reply.counter != i {
                return Err(format!("round trip {i} answered counter {}", reply.counter));
            }
        }
        drop(tx);
        match responses.next().await {
            None => Ok("20 lockstep round trips, clean half-close".to_string()),
            Some(other) => Err(format!("expected end of stream, got {other:?}")),
        }
    }
    .await;
    rows.push(Row {
        call: "PingStream",
        kind: "bidi streaming",
        result,
        latency: started.elapsed(),
    });

    // tonic's client enforces grpc-timeout itself (and reports CANCELLED), so this row uses a
    // raw HTTP/2 client to show what the proxy itself answers when the deadline passes.
    let started = Instant::now();
    let raw = RawClient::connect(proxy_addr).await;
    let slow = PingRequest {
        sleep_ms: 2_000,
        ..Default::default()
    };
    let response = raw
        .call(
            "/grpcproxy.testing.TestService/Ping",
            header_map(&[("grpc-timeout", "100m")]),
            frames_body(vec![Frame::data(grpc_frame(false, &slow.encode_to_vec()))]),
        )
        .await;
    let result = match response.grpc_status() {
        Some("4") => {
            Ok("DEADLINE_EXCEEDED from the proxy after a 100 ms deadline (expected)".into())
        }
        other => Err(format!("expected grpc-status 4, got {other:?}")),
    };
    rows.push(Row {
        call: "Ping (sleeps 2 s)",
        kind: "deadline",
        result,
        latency: started.elapsed(),
    });
    drop(raw);

    drop(client);
    let _ = stop.send(());
    server.await??;
    drop(backend);

    println!("{:<20} {:<17} {:>10}  result", "call", "kind", "latency");
    println!("{}", "-".repeat(90));
    let mut failures = 0;
    for row in &rows {
        let (mark, text) = match &row.result {
            Ok(text) => ("ok  ", text),
            Err(text) => {
                failures += 1;
                ("FAIL", text)
            }
        };
        println!(
            "{:<20} {:<17} {:>8.2}ms  {mark} {text}",
            row.call,
            row.kind,
            row.latency.as_secs_f64() * 1e3
        );
    }
    println!(
        "\n{} calls through the proxy, {} live streams left",
        stats.calls_started(),
        stats.live_streams()
    );
    if failures > 0 {
        anyhow::bail!("{failures} of {} demo calls failed", rows.len());
    }
    println!("all {} calls behaved as expected", rows.len());
    Ok(())
}
