//! TLS and mutual-TLS listeners: valid clients are served, others refused.

mod support;

use std::time::Duration;

use grpcproxy_testing::pb::test_service_client::TestServiceClient;
use grpcproxy_testing::pb::PingRequest;
use grpcproxy_testing::pki::{PkiFiles, TestPki};
use grpcproxy_testing::serve::ping_backend;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

fn config(files: &PkiFiles, backend: std::net::SocketAddr) -> String {
    format!(
        r#"
[[listeners]]
address = "127.0.0.1:0"
tls = {{ cert = "{cert}", key = "{key}" }}

[[listeners]]
address = "127.0.0.1:0"
tls = {{ cert = "{cert}", key = "{key}", client_ca = "{ca}" }}

[[routes]]
cluster = "ping"

[clusters.ping]
endpoints = ["{backend}"]
"#,
        cert = files.server_cert.display(),
        key = files.server_key.display(),
        ca = files.ca.display(),
    )
}

async fn ping(addr: std::net::SocketAddr, tls: Option<ClientTlsConfig>) -> Result<String, String> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut endpoint = Endpoint::from_shared(format!("{scheme}://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(2));
    if let Some(tls) = tls {
        endpoint = endpoint.tls_config(tls).unwrap();
    }
    let call = async {
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| format!("connect: {e:?}"))?;
        let reply = TestServiceClient::new(channel)
            .ping(PingRequest {
                value: "tls".into(),
                ..Default::default()
            })
            .await
            .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?;
        Ok(reply.into_inner().value)
    };
    tokio::time::timeout(Duration::from_secs(5), call)
        .await
        .map_err(|_| "hung".to_string())?
}

fn client_tls(
    pki: &TestPki,
    identity: Option<&grpcproxy_testing::pki::Identity>,
) -> ClientTlsConfig {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&pki.ca))
        .domain_name("localhost");
    if let Some(identity) = identity {
        tls = tls.identity(Identity::from_pem(&identity.cert, &identity.key));
    }
    tls
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_mtls_listeners_serve_valid_clients_and_refuse_others() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::generate();
    let files = pki.write_to(dir.path());
    let (backend, _service) = ping_backend().await;
    let (proxy, _file) = support::start_with_config(&config(&files, backend.addr()), 2);
    let (tls_addr, mtls_addr) = (proxy.listening[0], proxy.listening[1]);

    assert_eq!(
        ping(tls_addr, Some(client_tls(&pki, None))).await.unwrap(),
        "tls"
    );
    assert!(
        ping(tls_addr, None).await.is_err(),
        "cleartext to a TLS listener fails"
    );

    assert_eq!(
        ping(mtls_addr, Some(client_tls(&pki, Some(&pki.client))))
            .await
            .unwrap(),
        "tls"
    );
    let without = ping(mtls_addr, Some(client_tls(&pki, None))).await;
    println!("without a certificate: {without:?}");
    assert!(
        without.is_err(),
        "a client without a certificate is refused: {without:?}"
    );
    let stranger = TestPki::generate();
    let foreign = ping(mtls_addr, Some(client_tls(&pki, Some(&stranger.client)))).await;
    println!("foreign certificate: {foreign:?}");
    assert!(
        foreign.is_err(),
        "a certificate from another CA is refused: {foreign:?}"
    );
}

#[test]
fn unreadable_or_invalid_certificates_fail_check_config() {
    let dir = tempfile::tempdir().unwrap();
    let files = TestPki::generate().write_to(dir.path());
    let mut missing = files.clone();
    missing.server_cert = dir.path().join("missing.pem");
    let mut swapped = files.clone();
    swapped.server_cert = files.server_key.clone();
    for (files, expected) in [
        (
            missing,
            format!(
                "listeners[0].tls: cannot read {}: No such file or directory (os error 2)",
                dir.path().join("missing.pem").display()
            ),
        ),
        (
            swapped,
            "listeners[0].tls: server certificate: no CERTIFICATE block found".to_string(),
        ),
    ] {
        let file = support::write_config(&config(&files, "127.0.0.1:1".parse().unwrap()));
        let (code, _, stderr) = support::check_config(file.path());
        assert_eq!(code, Some(2));
        assert_eq!(
            stderr,
            format!("grpcproxy: {}: {expected}\n", file.path().display())
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clusters_originate_tls_and_mutual_tls_to_backends() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::generate();
    let files = pki.write_to(dir.path());
    // The backend speaks TLS only and requires a client certificate from the test CA.
    let tls = tonic::transport::ServerTlsConfig::new()
        .identity(Identity::from_pem(&pki.server.cert, &pki.server.key))
        .client_ca_root(Certificate::from_pem(&pki.ca));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = listener.local_addr().unwrap();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .tls_config(tls)
            .unwrap()
            .add_service(grpcproxy_testing::serve::ping_server(
                grpcproxy_testing::PingService::new(),
            ))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let config = |client_cert: bool| {
        let identity = if client_cert {
            format!(
                ", cert = \"{}\", key = \"{}\"",
                files.client_cert.display(),
                files.client_key.display()
            )
        } else {
            String::new()
        };
        format!(
            "[[listeners]]\naddress = \"127.0.0.1:0\"\n[[routes]]\ncluster = \"secure\"\n\
             [clusters.secure]\nendpoints = [\"{backend}\"]\n\
             tls = {{ ca = \"{}\", server_name = \"localhost\"{identity} }}\n",
            files.ca.display()
        )
    };
    let (with_cert, _file) = support::start_with_config(&config(true), 1);
    assert_eq!(ping(with_cert.listening[0], None).await.unwrap(), "tls");
    let (without_cert, _file) = support::start_with_config(&config(false), 1);
    let refused = ping(without_cert.listening[0], None).await.unwrap_err();
    assert!(refused.starts_with("Unavailable"), "{refused}");
    server.abort();
}
