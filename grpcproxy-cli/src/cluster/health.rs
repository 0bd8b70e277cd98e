//! Active health checks: `grpc.health.v1.Health/Check` against each endpoint, marking it
//! down and up after the configured thresholds.

use std::sync::atomic::Ordering;
use std::sync::Weak;

use super::endpoint::Endpoint;
use crate::config::HealthCheck;

/// `grpc.health.v1.HealthCheckRequest`.
#[derive(Clone, PartialEq, prost::Message)]
struct HealthCheckRequest {
    #[prost(string, tag = "1")]
    service: String,
}

/// `grpc.health.v1.HealthCheckResponse`.
#[derive(Clone, PartialEq, prost::Message)]
struct HealthCheckResponse {
    #[prost(int32, tag = "1")]
    status: i32,
}

const SERVING: i32 = 1;

/// Checks one endpoint until it leaves the cluster (or the cluster goes).
pub(super) async fn health_loop(cluster: String, endpoint: Weak<Endpoint>, check: HealthCheck) {
    use prost::Message;
    let request = bytes::Bytes::from(
        HealthCheckRequest {
            service: check.service.clone(),
        }
        .encode_to_vec(),
    );
    let (mut passes, mut failures) = (0u32, 0u32);
    loop {
        let Some(endpoint) = endpoint.upgrade() else {
            return;
        };
        let answer = endpoint
            .upstream
            .unary(
                "/grpc.health.v1.Health/Check",
                request.clone(),
                check.timeout,
            )
            .await;
        let serving = matches!(&answer, Ok(reply) if HealthCheckResponse::decode(reply.clone()).is_ok_and(|r| r.status == SERVING));
        if serving {
            (passes, failures) = (passes + 1, 0);
        } else {
            (passes, failures) = (0, failures + 1);
        }
        let healthy = endpoint.checked_healthy.load(Ordering::Relaxed);
        if healthy && failures >= check.unhealthy_threshold {
            endpoint.checked_healthy.store(false, Ordering::Relaxed);
            let reason = match &answer {
                Ok(_) => "not serving".to_owned(),
                Err(status) => format!("{:?}: {}", status.code(), status.message()),
            };
            tracing::warn!(
                cluster,
                endpoint = endpoint.upstream.address(),
                reason,
                "endpoint marked down by health checks"
            );
        } else if !healthy && passes >= check.healthy_threshold {
            endpoint.checked_healthy.store(true, Ordering::Relaxed);
            tracing::info!(
                cluster,
                endpoint = endpoint.upstream.address(),
                "endpoint marked up by health checks"
            );
        }
        drop(endpoint);
        tokio::time::sleep(check.interval).await;
    }
}
