//! The thinnest HTTP/2 relay that can be built on grpcproxy's own stack (tokio and h2):
//! no routing, no checks, no metrics, headers passed as they come. Not a proxy anyone
//! should run; a measuring stick for BENCHMARKS.md: what grpcproxy's features cost over
//! the crates it is built on.
//!
//! Like grpcproxy, it runs one single-threaded runtime per core (2), each with its own
//! listening socket (`SO_REUSEPORT`) and its own backend connection.
//!
//! ```text
//! cargo build --release -p grpcproxy-bench --example h2_floor
//! target/release/examples/h2_floor 127.0.0.1:50060 127.0.0.1:50052 [spawn|inline]
//! ```
//!
//! `spawn` (the default) serves each call in a task of its own, as grpcproxy does;
//! `inline` polls every call of a client connection in the connection's task.
use std::net::SocketAddr;

use bytes::Bytes;
use futures_util::stream::{FuturesUnordered, StreamExt};
use h2::client::SendRequest;
use h2::server::SendResponse;
use h2::RecvStream;
use http::{Request, Response};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let listen: SocketAddr = args[1].parse().unwrap();
    let backend: SocketAddr = args[2].parse().unwrap();
    let inline = args.get(3).map(|s| s == "inline").unwrap_or(false);
    let threads = 2;
    let mut handles = Vec::new();
    for _ in 0..threads {
        handles.push(std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let socket = TcpSocket::new_v4().unwrap();
                socket.set_reuseaddr(true).unwrap();
                socket.set_reuseport(true).unwrap();
                socket.bind(listen).unwrap();
                let listener: TcpListener = socket.listen(1024).unwrap();
                let io = TcpStream::connect(backend).await.unwrap();
                io.set_nodelay(true).unwrap();
                // h2's default budget for small DATA frames (half the window) closes the
                // connection under 256 concurrent unary calls: the same budget grpcproxy sizes.
                let (client, conn) = h2::client::Builder::new()
                    .initial_window_size(1 << 20)
                    .initial_connection_window_size(2 << 20)
                    .data_frame_budget((2 << 20) / 5 * 251)
                    .handshake(io)
                    .await
                    .unwrap();
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                loop {
                    let (stream, _) = listener.accept().await.unwrap();
                    stream.set_nodelay(true).unwrap();
                    let client = client.clone();
                    tokio::spawn(serve(stream, client, inline));
                }
            });
        }));
    }
    for h in handles {
        h.join().unwrap();
    }
}

async fn serve(stream: TcpStream, client: SendRequest<Bytes>, inline: bool) {
    let handshake = h2::server::Builder::new()
        .initial_window_size(1 << 20)
        .initial_connection_window_size(2 << 20)
        .data_frame_budget((2 << 20) / 5 * 251)
        .handshake(stream);
    let mut conn = match handshake.await {
        Ok(c) => c,
        Err(_) => return,
    };
    if !inline {
        while let Some(Ok((req, respond))) = conn.accept().await {
            tokio::spawn(relay(req, respond, client.clone()));
        }
        return;
    }
    let mut calls = FuturesUnordered::new();
    loop {
        tokio::select! {
            next = conn.accept() => match next {
                Some(Ok((req, respond))) => calls.push(relay(req, respond, client.clone())),
                _ => break,
            },
            Some(()) = calls.next(), if !calls.is_empty() => {}
        }
    }
}

async fn relay(
    req: Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
    client: SendRequest<Bytes>,
) {
    let mut client = match client.ready().await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ready: {e}");
            return;
        }
    };
    let (parts, mut body) = req.into_parts();
    let end = body.is_end_stream();
    let (response, mut send) = match client.send_request(Request::from_parts(parts, ()), end) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("send_request: {e}");
            return;
        }
    };
    let up = async move {
        if end {
            return;
        }
        while let Some(Ok(chunk)) = body.data().await {
            let _ = body.flow_control().release_capacity(chunk.len());
            let end = body.is_end_stream();
            if send.send_data(chunk, end).is_err() || end {
                return;
            }
        }
        match body.trailers().await {
            Ok(Some(t)) => {
                let _ = send.send_trailers(t);
            }
            _ => {
                let _ = send.send_data(Bytes::new(), true);
            }
        }
    };
    let down = async move {
        let response = match response.await {
            Ok(r) => r,
            Err(e) => {
                eprintln!("response: {e}");
                return;
            }
        };
        let (parts, mut rbody) = response.into_parts();
        let end = rbody.is_end_stream();
        let Ok(mut out) = respond.send_response(Response::from_parts(parts, ()), end) else {
            return;
        };
        if end {
            return;
        }
        while let Some(Ok(chunk)) = rbody.data().await {
            let _ = rbody.flow_control().release_capacity(chunk.len());
            if out.send_data(chunk, false).is_err() {
                return;
            }
        }
        if let Ok(Some(t)) = rbody.trailers().await {
            let _ = out.send_trailers(t);
        }
    };
    tokio::join!(up, down);
}
