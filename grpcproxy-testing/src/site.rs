//! A static web site on a loopback port: the files of one directory over HTTP/1.1, for
//! tests that load a page in a browser.

use std::net::SocketAddr;
use std::path::PathBuf;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper_util::rt::TokioIo;

/// Serves the files under a directory on `127.0.0.1:0` until dropped.
///
/// ```no_run
/// # async fn f() {
/// let site = grpcproxy_testing::site::StaticSite::serve("examples/web").await;
/// println!("http://{}/index.html", site.addr());
/// # }
/// ```
#[derive(Debug)]
pub struct StaticSite {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for StaticSite {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl StaticSite {
    /// Starts serving `root`: `GET /a/b.js` answers `root/a/b.js`, 404 if it is not a file
    /// there (no `..`).
    pub async fn serve(root: impl Into<PathBuf>) -> Self {
        let root = root.into();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port is free");
        let addr = listener.local_addr().expect("the listener has an address");
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let root = root.clone();
                let service =
                    hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
                        let answer = file(&root, request.uri().path());
                        async move { Ok::<_, std::convert::Infallible>(answer) }
                    });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        Self { addr, task }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

fn file(root: &std::path::Path, path: &str) -> Response<Full<Bytes>> {
    let relative = path.trim_start_matches('/');
    let found = (!relative
        .split('/')
        .any(|part| part == ".." || part.is_empty()))
    .then(|| std::fs::read(root.join(relative)).ok())
    .flatten();
    let Some(bytes) = found else {
        let mut response = Response::new(Full::new(Bytes::from_static(b"not found\n")));
        *response.status_mut() = StatusCode::NOT_FOUND;
        return response;
    };
    let content_type = match relative.rsplit('.').next() {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css",
        _ => "application/octet-stream",
    };
    let mut response = Response::new(Full::new(Bytes::from(bytes)));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    response
}
