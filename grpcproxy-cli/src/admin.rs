//! The admin listener: `/metrics`, `/healthz`, `/ready`, `/clusters`, `/config` over
//! HTTP/1.1.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use grpcproxy::ProxyStats;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use crate::telemetry::Telemetry;

/// What the admin endpoints read.
#[derive(Debug)]
pub(crate) struct AdminState {
    pub(crate) telemetry: Arc<Telemetry>,
    pub(crate) stats: Arc<ProxyStats>,
    pub(crate) config_toml: arc_swap::ArcSwap<String>,
    pub(crate) draining: AtomicBool,
}

/// Serves the admin endpoints on `listener` until the process ends.
pub(crate) async fn serve(listener: tokio::net::TcpListener, state: Arc<AdminState>) {
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(answer(&state, &request)) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = connection.await {
                tracing::debug!(peer = %peer, error = %e, "admin connection ended with an error");
            }
        });
    }
}

fn answer(state: &AdminState, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    if request.method() != Method::GET {
        return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n");
    }
    match request.uri().path() {
        "/metrics" => {
            let mut response =
                Response::new(Full::new(Bytes::from(state.telemetry.render(&state.stats))));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            response
        }
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/ready" if state.draining.load(Ordering::Acquire) => {
            text(StatusCode::SERVICE_UNAVAILABLE, "draining\n")
        }
        "/ready" => text(StatusCode::OK, "ready\n"),
        "/clusters" => {
            let mut clusters: Vec<serde_json::Value> = state
                .telemetry
                .clusters()
                .iter()
                .map(|c| c.status())
                .collect();
            clusters.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
            let body = serde_json::json!({ "clusters": clusters }).to_string() + "\n";
            let mut response = Response::new(Full::new(Bytes::from(body)));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/json"),
            );
            response
        }
        "/config" => {
            let mut response = Response::new(Full::new(Bytes::from(
                state.config_toml.load().as_str().to_owned(),
            )));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/toml"),
            );
            response
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /metrics, /healthz, /ready, /clusters, /config\n",
        ),
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Binds the admin address (port 0 picks one; the bound address is logged).
pub(crate) async fn bind(address: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    use anyhow::Context;
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen on admin address {address}"))?;
    tracing::info!(admin = %listener.local_addr()?, "admin listening");
    Ok(listener)
}
