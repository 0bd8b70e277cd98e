//! Requests that are not gRPC get a defined HTTP or gRPC answer and are never forwarded.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use grpcproxy::ProxyOptions;
use grpcproxy_testing::raw::{frames_body, header_map, RawBackend, RawClient};
use http::{HeaderMap, Response};
use support::serve_proxy;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn counting_backend() -> (RawBackend, Arc<AtomicUsize>) {
    let count = Arc::new(AtomicUsize::new(0));
    let backend = {
        let count = count.clone();
        RawBackend::start(move |_request| {
            count.fetch_add(1, Ordering::SeqCst);
            async { Response::new(frames_body(vec![])) }
        })
        .await
    };
    (backend, count)
}

#[tokio::test]
async fn http1_request_gets_505() {
    let (backend, count) = counting_backend().await;
    let proxy = serve_proxy(&backend.url(), ProxyOptions::default()).await;
    let mut stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 505 HTTP Version Not Supported\r\n"),
        "{answer}"
    );
    assert!(
        answer.ends_with("grpcproxy: gRPC needs HTTP/2 (h2/h2c)\r\n\r\n"),
        "{answer}"
    );
    assert_eq!(count.load(Ordering::SeqCst), 0);
}

async fn h2_request(
    proxy: &support::ServedProxy,
    method: &str,
    path: &str,
    headers: HeaderMap,
) -> grpcproxy_testing::raw::RawResponse {
    let stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let mut request = http::Request::new(frames_body(vec![]));
    *request.method_mut() = method.parse().unwrap();
    *request.uri_mut() = format!("http://localhost{path}").parse().unwrap();
    *request.headers_mut() = headers;
    grpcproxy_testing::raw::collect(sender.send_request(request).await.unwrap()).await
}

#[tokio::test]
async fn non_grpc_requests_get_defined_answers() {
    let (backend, count) = counting_backend().await;
    let proxy = serve_proxy(&backend.url(), ProxyOptions::default()).await;
    let grpc = header_map(&[("content-type", "application/grpc")]);

    let get = h2_request(&proxy, "GET", "/pkg.Svc/M", grpc.clone()).await;
    assert_eq!(get.status, 405);
    assert_eq!(get.headers.get("allow").unwrap(), "POST");

    for content_type in ["application/json", "application/grpc-web", "text/plain"] {
        let response = h2_request(
            &proxy,
            "POST",
            "/pkg.Svc/M",
            header_map(&[("content-type", content_type)]),
        )
        .await;
        assert_eq!(response.status, 415, "{content_type}");
        assert_eq!(
            &response.data[..],
            b"grpcproxy: content-type must be application/grpc\n"
        );
    }
    let missing = h2_request(&proxy, "POST", "/pkg.Svc/M", HeaderMap::new()).await;
    assert_eq!(missing.status, 415);

    for path in ["/", "/nomethod", "/pkg.Svc/", "/a/b/c"] {
        let response = h2_request(&proxy, "POST", path, grpc.clone()).await;
        assert_eq!(response.status, 200, "{path}");
        assert_eq!(response.grpc_status(), Some("12"), "{path}: UNIMPLEMENTED");
        assert!(response.trailers_only);
    }

    for timeout in ["", "1", "123456789S", "5x", "-1m"] {
        let client = RawClient::connect(proxy.addr).await;
        let response = client
            .call(
                "/pkg.Svc/M",
                header_map(&[("grpc-timeout", timeout)]),
                frames_body(vec![]),
            )
            .await;
        assert_eq!(
            response.grpc_status(),
            Some("13"),
            "grpc-timeout {timeout:?}: INTERNAL"
        );
        let message = response
            .headers
            .get("grpc-message")
            .unwrap()
            .to_str()
            .unwrap();
        assert!(message.contains("malformed%20grpc-timeout"), "{message}");
    }
    assert_eq!(
        count.load(Ordering::SeqCst),
        0,
        "nothing reached the backend"
    );
    assert!(support::all_streams_closed(&proxy.stats).await);
}

#[tokio::test]
async fn hop_by_hop_headers_are_not_forwarded() {
    let seen = Arc::new(std::sync::Mutex::new(None));
    let backend = {
        let seen = seen.clone();
        RawBackend::start(move |request: http::Request<hyper::body::Incoming>| {
            *seen.lock().unwrap() = Some(request.headers().clone());
            async {
                let mut response = Response::new(frames_body(vec![]));
                response
                    .headers_mut()
                    .insert("grpc-status", "0".parse().unwrap());
                response
            }
        })
        .await
    };
    let proxy = serve_proxy(
        &backend.url(),
        ProxyOptions {
            x_forwarded_for: true,
            ..ProxyOptions::default()
        },
    )
    .await;
    let client = RawClient::connect(proxy.addr).await;
    let response = client
        .call(
            "/pkg.Svc/M",
            header_map(&[("x-user", "alice"), ("te", "trailers")]),
            frames_body(vec![]),
        )
        .await;
    assert_eq!(response.grpc_status(), Some("0"));
    let seen = seen.lock().unwrap().clone().unwrap();
    assert_eq!(seen.get("te").unwrap(), "trailers");
    assert_eq!(seen.get("x-user").unwrap(), "alice");
    assert_eq!(seen.get("content-type").unwrap(), "application/grpc");
    assert_eq!(seen.get("x-forwarded-for").unwrap(), "127.0.0.1");
    assert!(seen.get("host").is_none());
}
