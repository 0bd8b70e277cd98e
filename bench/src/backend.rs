//! The benchmark backend: `helloworld.Greeter/SayHello` and the streaming shapes, on tonic,
//! tuned only as a production service would be (no-delay sockets, larger HTTP/2 windows).

use std::net::SocketAddr;
use std::pin::Pin;

use bytes::Bytes;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use crate::pb::bench::streaming_server::{Streaming as StreamingService, StreamingServer};
use crate::pb::bench::{Chunk, PushRequest};
use crate::pb::helloworld::greeter_server::{Greeter, GreeterServer};
use crate::pb::helloworld::{HelloReply, HelloRequest};

#[derive(Debug, Default)]
struct Hello;

#[tonic::async_trait]
impl Greeter for Hello {
    async fn say_hello(
        &self,
        request: Request<HelloRequest>,
    ) -> Result<Response<HelloReply>, Status> {
        let mut message = request.into_inner().name;
        message.insert_str(0, "Hello ");
        Ok(Response::new(HelloReply { message }))
    }
}

#[derive(Debug, Default)]
struct Shapes;

type ChunkStream = Pin<Box<dyn Stream<Item = Result<Chunk, Status>> + Send>>;

#[tonic::async_trait]
impl StreamingService for Shapes {
    type PingPongStream = ChunkStream;

    async fn ping_pong(
        &self,
        request: Request<Streaming<Chunk>>,
    ) -> Result<Response<ChunkStream>, Status> {
        Ok(Response::new(Box::pin(request.into_inner())))
    }

    type PushStream = ChunkStream;

    async fn push(&self, request: Request<PushRequest>) -> Result<Response<ChunkStream>, Status> {
        let PushRequest { count, size } = request.into_inner();
        let data = Bytes::from(vec![b'x'; size as usize]);
        let chunks = tokio_stream::iter(0..)
            .take_while(move |n| count == 0 || *n < count)
            .map(move |_| Ok(Chunk { data: data.clone() }));
        Ok(Response::new(Box::pin(chunks)))
    }
}

/// Serves until the process ends; prints `listening <addr>` once bound.
pub(crate) async fn run(listen: SocketAddr) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    println!("listening {}", listener.local_addr()?);
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener).map(|s| {
        s.inspect(|s| {
            let _ = s.set_nodelay(true);
        })
    });
    tonic::transport::Server::builder()
        .initial_stream_window_size(1 << 20)
        .initial_connection_window_size(16 << 20)
        .max_concurrent_streams(None)
        .add_service(GreeterServer::new(Hello).max_decoding_message_size(64 << 20))
        .add_service(StreamingServer::new(Shapes).max_decoding_message_size(64 << 20))
        .serve_with_incoming(incoming)
        .await?;
    Ok(())
}
