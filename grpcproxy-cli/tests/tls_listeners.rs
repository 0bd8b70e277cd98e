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
    // The start-up log tells the two apart.
    let modes: Vec<&str> = proxy
        .startup
        .iter()
        .filter(|l| l.contains("grpcproxy listening"))
        .map(|l| {
            if l.contains("\"tls\":\"mtls\"") {
                "mtls"
            } else if l.contains("\"tls\":\"tls\"") {
                "tls"
            } else {
                "?"
            }
        })
        .collect();
    assert_eq!(modes, ["tls", "mtls"], "{:?}", proxy.startup);
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

/// Runs `openssl s_client` against `addr` with `args`: (handshake completed, what it
/// printed: the session's protocol, cipher and ALPN, or the alert that ended it).
fn s_client(addr: std::net::SocketAddr, ca: &std::path::Path, args: &[&str]) -> (bool, String) {
    let output = std::process::Command::new("openssl")
        .args(["s_client", "-connect", &addr.to_string()])
        .args(["-servername", "localhost", "-CAfile"])
        .arg(ca)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("openssl (Debian package openssl) runs; scripts/test.sh installs it");
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    // A TLS 1.3 client prints its session before the server's alert can arrive.
    (
        text.contains("New, TLSv1") && !text.contains(" alert "),
        text,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_modern_tls_with_alpn_h2_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let files = TestPki::generate().write_to(dir.path());
    let (backend, _service) = ping_backend().await;
    let (proxy, _file) = support::start_with_config(&config(&files, backend.addr()), 2);
    let addr = proxy.listening[0];
    // (what the client offers, accepted, what must be printed)
    let cases: [(&str, &[&str], bool, &str); 6] = [
        (
            "TLS 1.3",
            &["-tls1_3", "-alpn", "h2"],
            true,
            "New, TLSv1.3, Cipher is TLS_",
        ),
        (
            "TLS 1.2 with ECDHE and AES-GCM",
            &[
                "-tls1_2",
                "-cipher",
                "ECDHE-ECDSA-AES128-GCM-SHA256",
                "-alpn",
                "h2",
            ],
            true,
            "New, TLSv1.2, Cipher is ECDHE-ECDSA-AES128-GCM-SHA256",
        ),
        (
            "TLS 1.2 with a CBC suite",
            &[
                "-tls1_2",
                "-cipher",
                "ECDHE-ECDSA-AES128-SHA",
                "-alpn",
                "h2",
            ],
            false,
            "alert handshake failure",
        ),
        (
            "TLS 1.1",
            &["-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0", "-alpn", "h2"],
            false,
            "alert handshake failure",
        ),
        (
            "TLS 1.0",
            &["-tls1", "-cipher", "DEFAULT@SECLEVEL=0", "-alpn", "h2"],
            false,
            "alert handshake failure",
        ),
        (
            "ALPN without h2",
            &["-tls1_3", "-alpn", "http/1.1"],
            false,
            "alert no application protocol",
        ),
    ];
    for (case, args, accepted, expected) in cases {
        let (established, text) = s_client(addr, &files.ca, args);
        assert_eq!(established, accepted, "{case}:\n{text}");
        assert!(
            text.contains(expected),
            "{case}: no {expected:?} in:\n{text}"
        );
        if accepted {
            assert!(text.contains("ALPN protocol: h2"), "{case}:\n{text}");
        }
        println!("{case}: {}", if accepted { "accepted" } else { "refused" });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_tls_handshakes_are_closed_within_the_handshake_timeout() {
    use tokio::io::AsyncWriteExt;
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::generate();
    let files = pki.write_to(dir.path());
    let (backend, _service) = ping_backend().await;
    let text = config(&files, backend.addr())
        + "\n[admin]\naddress = \"127.0.0.1:0\"\n\n[limits]\nhandshake_timeout = \"1s\"\n";
    let (proxy, _file) = support::start_with_config(&text, 2);
    let addr = proxy.listening[0];
    assert_eq!(
        ping(addr, Some(client_tls(&pki, None))).await.unwrap(),
        "tls"
    );
    let before = support::baseline::baseline(&proxy);

    // Fifty connections that say nothing, fifty that stop inside a ClientHello record
    // (the header announces 512 bytes; 16 arrive).
    let partial_hello = [&[0x16, 0x03, 0x01, 0x02, 0x00][..], &[0x01; 16][..]].concat();
    let mut stalls = Vec::new();
    for start in [&[][..], &partial_hello[..]] {
        for _ in 0..50 {
            let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            tcp.write_all(start).await.unwrap();
            stalls.push(tcp);
        }
    }
    let mut slowest = Duration::ZERO;
    for tcp in &mut stalls {
        let (_, closed) =
            grpcproxy_testing::wire::wait_for_close(tcp, Duration::from_secs(5)).await;
        slowest = slowest.max(closed.expect("a stalled TLS handshake was still open after 5 s"));
    }
    println!("stalled TLS handshakes: 100 connections closed, the last after {slowest:?}");
    assert!(slowest < Duration::from_millis(2500), "{slowest:?}");
    assert_eq!(
        ping(addr, Some(client_tls(&pki, None))).await.unwrap(),
        "tls"
    );
    drop(stalls);
    support::baseline::assert_back_to(&proxy, before).await;
}

/// The certificate the listener at `addr` serves now, as PEM (read by `openssl s_client`).
fn served_certificate(addr: std::net::SocketAddr, ca: &std::path::Path) -> String {
    let (_, text) = s_client(addr, ca, &[]);
    let start = text
        .find("-----BEGIN CERTIFICATE-----")
        .unwrap_or_else(|| panic!("no certificate in:\n{text}"));
    let end = text[start..].find("-----END CERTIFICATE-----").unwrap() + start;
    text[start..end].split_whitespace().collect()
}

fn pem_body(pem: &str) -> String {
    let end = pem.find("-----END CERTIFICATE-----").unwrap();
    pem[..end].split_whitespace().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listener_certificates_reload_on_sighup_and_when_their_files_change() {
    let (backend, _) = ping_backend().await;
    let dir = tempfile::tempdir().unwrap();
    let (first, second) = (TestPki::generate(), TestPki::generate());
    let files = first.write_to(dir.path());
    let config = format!(
        "[[listeners]]\naddress = \"127.0.0.1:0\"\ntls = {{ cert = \"{}\", key = \"{}\" }}\n\
         [[routes]]\ncluster = \"ping\"\n[clusters.ping]\nendpoints = [\"{}\"]\n",
        files.server_cert.display(),
        files.server_key.display(),
        backend.addr()
    );
    let (proxy, _file) = support::start_with_config(&config, 1);
    let addr = proxy.listening[0];
    assert_eq!(
        served_certificate(addr, &files.ca),
        pem_body(&first.server.cert)
    );

    // Renewed files and SIGHUP: new handshakes get the new certificate.
    std::fs::write(&files.server_cert, &second.server.cert).unwrap();
    std::fs::write(&files.server_key, &second.server.key).unwrap();
    support::signal(&proxy, "HUP");
    support::wait_for_log(&proxy, "configuration reloaded");
    assert_eq!(
        served_certificate(addr, &files.ca),
        pem_body(&second.server.cert)
    );

    // A certificate that does not load: rejected, the running one stays.
    std::fs::write(&files.server_cert, "not a certificate").unwrap();
    support::signal(&proxy, "HUP");
    let line = support::wait_for_log(&proxy, "reload rejected");
    assert!(line.contains("listeners[0].tls"), "{line}");
    assert_eq!(
        served_certificate(addr, &files.ca),
        pem_body(&second.server.cert)
    );

    // No signal: the files changing is enough.
    std::fs::write(&files.server_key, &first.server.key).unwrap();
    std::fs::write(&files.server_cert, &first.server.cert).unwrap();
    support::wait_for_log(&proxy, "configuration reloaded");
    assert_eq!(
        served_certificate(addr, &files.ca),
        pem_body(&first.server.cert)
    );
    // And the renewed listener still serves calls.
    assert_eq!(
        ping(addr, Some(client_tls(&first, None))).await.unwrap(),
        "tls"
    );
}

/// `curl` over TLS to `url` with `args`: (status line and headers, body).
fn curl(ca: &std::path::Path, args: &[&str], url: &str, body: &str) -> (String, String) {
    let output = std::process::Command::new("curl")
        .args(["-s", "-D", "-", "-o", "-", "--max-time", "10", "--cacert"])
        .arg(ca)
        .args(args)
        .args(["-X", "POST", "--data-binary", body, url])
        .output()
        .expect("curl (Debian package curl) runs; scripts/test.sh installs it");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (head.to_owned(), body.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_web_tls_listener_offers_http1_after_h2() {
    let dir = tempfile::tempdir().unwrap();
    let files = TestPki::generate().write_to(dir.path());
    let (backend, _service) = ping_backend().await;
    let config = format!(
        "[[listeners]]\naddress = \"127.0.0.1:0\"\ngrpc_web = true\n\
         tls = {{ cert = \"{}\", key = \"{}\" }}\n\
         [[routes]]\ncluster = \"ping\"\n[clusters.ping]\nendpoints = [\"{}\"]\n",
        files.server_cert.display(),
        files.server_key.display(),
        backend.addr()
    );
    let (proxy, _file) = support::start_with_config(&config, 1);
    let addr = proxy.listening[0];
    // ALPN: h2 first, http/1.1 for browsers that ask for it.
    let (established, text) = s_client(addr, &files.ca, &["-tls1_3", "-alpn", "http/1.1"]);
    assert!(
        established && text.contains("ALPN protocol: http/1.1"),
        "{text}"
    );
    let (established, text) = s_client(addr, &files.ca, &["-tls1_3", "-alpn", "h2,http/1.1"]);
    assert!(established && text.contains("ALPN protocol: h2"), "{text}");

    // A text call (PingRequest { value: "web" }) over each.
    let request = "AAAAAAUKA3dlYg==";
    let url = format!(
        "https://localhost:{}/grpcproxy.testing.TestService/Ping",
        addr.port()
    );
    let web = ["-H", "content-type: application/grpc-web-text"];
    for (version, line) in [("--http1.1", "HTTP/1.1 200"), ("--http2", "HTTP/2 200")] {
        let mut args = vec![version, "--resolve"];
        let resolve = format!("localhost:{}:127.0.0.1", addr.port());
        args.push(&resolve);
        args.extend_from_slice(&web);
        let (head, body) = curl(&files.ca, &args, &url, request);
        assert!(head.starts_with(line), "{version}: {head}");
        assert!(
            head.contains("content-type: application/grpc-web-text"),
            "{version}: {head}"
        );
        let decoded = base64_decode(body.trim());
        // The echo ("web") as a message, then the trailers frame with status 0.
        assert!(
            decoded.windows(3).any(|w| w == b"web"),
            "{version}: {decoded:?}"
        );
        let trailers = String::from_utf8_lossy(&decoded);
        assert!(
            trailers.contains("grpc-status:0\r\n"),
            "{version}: {trailers}"
        );
    }
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap_or_else(|e| panic!("{e}: {text:?}"))
}
