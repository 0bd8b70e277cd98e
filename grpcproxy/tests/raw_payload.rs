//! Payloads that are not protobuf pass unchanged, called and served with the raw codec.

mod support;

use bytes::Bytes;
use grpcproxy::{ProxyOptions, ProxyRoutes, RawCodec};
use grpcproxy_testing::TestServer;
use http::uri::PathAndQuery;
use support::proxy_to;

/// A tonic service that echoes raw bytes back, reversed, through `RawCodec`.
#[derive(Clone)]
struct RawEcho;

impl<B> tower::Service<http::Request<B>> for RawEcho
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        struct Reverse;
        impl tonic::server::UnaryService<Bytes> for Reverse {
            type Response = Bytes;
            type Future = std::future::Ready<Result<tonic::Response<Bytes>, tonic::Status>>;
            fn call(&mut self, request: tonic::Request<Bytes>) -> Self::Future {
                let mut bytes = request.into_inner().to_vec();
                bytes.reverse();
                std::future::ready(Ok(tonic::Response::new(Bytes::from(bytes))))
            }
        }
        Box::pin(async move {
            Ok(tonic::server::Grpc::new(RawCodec)
                .unary(Reverse, request)
                .await)
        })
    }
}

#[tokio::test]
async fn non_protobuf_payload_bytes_pass_unchanged() {
    let router = ProxyRoutes::new()
        .into_axum_router()
        .fallback_service(RawEcho);
    let backend = TestServer::start(tonic::service::Routes::from(router)).await;
    let (proxy, _stats) = proxy_to(&backend.url(), ProxyOptions::default()).await;

    let channel = tonic::transport::Endpoint::from_shared(proxy.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = tonic::client::Grpc::new(channel);
    // Not protobuf: invalid varints, NULs, every byte value.
    let payload: Vec<u8> = (0..=255u8)
        .chain([0xff, 0xff, 0xff, 0xff, 0xff, 0x00])
        .collect();
    client.ready().await.unwrap();
    let reply = client
        .unary(
            tonic::Request::new(Bytes::from(payload.clone())),
            PathAndQuery::from_static("/opaque.Blob/Reverse"),
            RawCodec,
        )
        .await
        .unwrap();
    let mut expected = payload;
    expected.reverse();
    assert_eq!(reply.into_inner(), Bytes::from(expected));
}
