//! TLS towards backends (custom CA, SNI, client certificates) and TLS peer info for the director.

mod support;

use std::sync::{Arc, Mutex};

use grpcproxy::mq::NoQueue;
use grpcproxy::{CallInfo, ProxyRoutes, SingleUpstream, TransparentProxy, Upstream};
use grpcproxy_testing::pb::test_service_client::TestServiceClient;
use grpcproxy_testing::pb::PingRequest;
use grpcproxy_testing::pki::TestPki as Pki;
use grpcproxy_testing::serve::{ping_client, ping_server};
use grpcproxy_testing::{PingService, TestServer};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};
use tonic::Code;

/// The ping service over TLS, optionally requiring a client certificate from `pki`'s CA.
async fn tls_backend(
    pki: &Pki,
    require_client_cert: bool,
) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let mut tls =
        ServerTlsConfig::new().identity(Identity::from_pem(&pki.server.cert, &pki.server.key));
    if require_client_cert {
        tls = tls.client_ca_root(Certificate::from_pem(&pki.ca));
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .tls_config(tls)
            .unwrap()
            .add_service(ping_server(PingService::new()))
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await;
    });
    (addr, task)
}

async fn ping_through(upstream: Upstream) -> Result<String, tonic::Status> {
    let proxy = TransparentProxy::new(NoQueue, SingleUpstream::new(upstream));
    let server = TestServer::start(ProxyRoutes::new().fallback(proxy).into_routes()).await;
    let mut client = ping_client(server.addr()).await;
    client
        .ping(PingRequest {
            value: "tls".into(),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner().value)
}

#[tokio::test]
async fn https_upstream_with_custom_ca_and_sni() {
    let pki = Pki::generate();
    let (addr, task) = tls_backend(&pki, false).await;
    let upstream = Upstream::builder(&format!("https://{addr}"))
        .unwrap()
        .ca_certificates_pem(pki.ca.as_bytes())
        .unwrap()
        .server_name("localhost")
        .unwrap()
        .build()
        .unwrap();
    assert_eq!(ping_through(upstream).await.unwrap(), "tls");
    task.abort();
}

#[tokio::test]
async fn untrusted_backend_certificate_is_unavailable_naming_tls() {
    let pki = Pki::generate();
    let other = Pki::generate();
    let (addr, task) = tls_backend(&pki, false).await;
    let upstream = Upstream::builder(&format!("https://{addr}"))
        .unwrap()
        .ca_certificates_pem(other.ca.as_bytes())
        .unwrap()
        .build()
        .unwrap();
    let status = ping_through(upstream).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert!(
        status
            .message()
            .contains("TLS handshake failed with backend"),
        "{}",
        status.message()
    );
    assert!(
        status.message().contains(&addr.to_string()),
        "{}",
        status.message()
    );
    task.abort();
}

#[tokio::test]
async fn mutual_tls_needs_the_client_identity() {
    let pki = Pki::generate();
    let (addr, task) = tls_backend(&pki, true).await;
    let builder = || {
        Upstream::builder(&format!("https://{addr}"))
            .unwrap()
            .ca_certificates_pem(pki.ca.as_bytes())
            .unwrap()
    };
    let without = ping_through(builder().build().unwrap()).await.unwrap_err();
    assert_eq!(without.code(), Code::Unavailable, "{without:?}");
    assert!(
        without.message().ends_with(
            "received fatal alert: CertificateRequired (the backend requires a client certificate: give the cluster tls.cert and tls.key (Upstream::builder().client_identity_pem))"
        ),
        "{without:?}"
    );

    let with = builder()
        .client_identity_pem(pki.client.cert.as_bytes(), pki.client.key.as_bytes())
        .unwrap()
        .build()
        .unwrap();
    assert_eq!(ping_through(with).await.unwrap(), "tls");
    task.abort();
}

#[tokio::test]
async fn director_sees_the_client_tls_certificate() {
    let pki = Pki::generate();
    let (backend, _service) = grpcproxy_testing::serve::ping_backend().await;
    let upstream = Upstream::new(&backend.url()).unwrap();
    let seen = Arc::new(Mutex::new(None));
    let director = {
        let seen = seen.clone();
        move |call: CallInfo| {
            *seen.lock().unwrap() = Some((
                call.peer_certificates().map(|chain| chain.len()),
                call.remote_addr().map(|a| a.ip().to_string()),
            ));
            let upstream = upstream.clone();
            async move { Ok(call.forward_to(upstream)) }
        }
    };
    let proxy = TransparentProxy::new(NoQueue, director);
    let tls = ServerTlsConfig::new()
        .identity(Identity::from_pem(&pki.server.cert, &pki.server.key))
        .client_ca_root(Certificate::from_pem(&pki.ca));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .tls_config(tls)
            .unwrap()
            .add_routes(ProxyRoutes::new().fallback(proxy).into_routes())
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    let channel = tonic::transport::Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(&pki.ca))
                .identity(Identity::from_pem(&pki.client.cert, &pki.client.key))
                .domain_name("localhost"),
        )
        .unwrap()
        .connect()
        .await
        .unwrap();
    let reply = TestServiceClient::new(channel)
        .ping(PingRequest {
            value: "m".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(reply.get_ref().value, "m");
    assert_eq!(
        *seen.lock().unwrap(),
        Some((Some(1), Some("127.0.0.1".to_string())))
    );
    server.abort();
}
