//! Statuses from the backend and from the director reach the client exactly.

mod support;

use bytes::Bytes;
use grpcproxy::mq::NoQueue;
use grpcproxy::{CallInfo, ProxyRoutes, TransparentProxy};
use grpcproxy_testing::pb::PingRequest;
use grpcproxy_testing::serve::ping_client;
use grpcproxy_testing::TestServer;
use support::{expect_err, setup, REJECTING_MD_KEY};
use tonic::{Code, Status};

#[tokio::test]
async fn app_error_code_and_message_propagate() {
    let mut setup = setup().await;
    let status = expect_err(
        setup
            .client
            .ping_error(PingRequest {
                value: "foo".into(),
                ..Default::default()
            })
            .await,
    );
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(status.message(), "Userspace error.");
}

#[tokio::test]
async fn director_error_propagates() {
    let mut setup = setup().await;
    let mut request = tonic::Request::new(PingRequest {
        value: "foo".into(),
        ..Default::default()
    });
    request
        .metadata_mut()
        .insert(REJECTING_MD_KEY, "true".parse().unwrap());
    let status = expect_err(setup.client.ping(request).await);
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(status.message(), "testing rejection");
    assert!(
        setup.service.events().last_metadata().is_none(),
        "the backend must not see the call"
    );
}

#[tokio::test]
async fn director_status_details_and_metadata_reach_the_client() {
    let details = Bytes::from_static(&[8, 7, 0, 0xff, 0x10, 0x80]);
    let director = {
        let details = details.clone();
        move |_call: CallInfo| {
            let details = details.clone();
            async move {
                let mut metadata = tonic::metadata::MetadataMap::new();
                metadata.insert("x-reason", "quota".parse().unwrap());
                Err::<grpcproxy::Target, _>(Status::with_details_and_metadata(
                    Code::ResourceExhausted,
                    "quota exceeded: 100% used",
                    details,
                    metadata,
                ))
            }
        }
    };
    let proxy = TransparentProxy::new(NoQueue, director);
    let server = TestServer::start(ProxyRoutes::new().fallback(proxy).into_routes()).await;
    let mut client = ping_client(server.addr()).await;
    let status = expect_err(client.ping(PingRequest::default()).await);
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert_eq!(status.message(), "quota exceeded: 100% used");
    assert_eq!(status.details(), &details[..]);
    assert_eq!(status.metadata().get("x-reason").unwrap(), "quota");
}

#[tokio::test]
async fn backend_error_after_headers_keeps_headers() {
    let mut setup = setup().await;
    let request = PingRequest {
        value: "x".into(),
        error_code: Code::Aborted as i32,
        ..Default::default()
    };
    let response = setup
        .client
        .ping_list(request)
        .await
        .expect("headers arrive before the error");
    assert_eq!(
        response
            .metadata()
            .get(grpcproxy_testing::ping::SERVER_HEADER_MD_KEY)
            .unwrap(),
        grpcproxy_testing::ping::SERVER_HEADER_VALUE
    );
    let mut stream = response.into_inner();
    assert_eq!(stream.message().await.unwrap().unwrap().counter, 0);
    assert_eq!(stream.message().await.unwrap().unwrap().counter, 1);
    let status = stream.message().await.unwrap_err();
    assert_eq!(status.code(), Code::Aborted);
    assert_eq!(status.message(), "error after two responses");
}
