//! The binary's director: config routes, first match wins, each sending to a cluster.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use grpcproxy::{CallInfo, CallRecord, HeaderEdits, SharedObserver, StreamDirector, Target};
use http::header::HeaderName;
use http::uri::Authority;
use regex::Regex;
use tonic::Status;

use crate::cluster::{Cluster, Picked};
use crate::config::{self, Config};
use crate::telemetry::{RouteObserver, Telemetry};

/// Routes compiled from the configuration.
#[derive(Debug)]
pub(crate) struct Router {
    routes: Vec<Route>,
    clusters: Vec<Arc<Cluster>>,
    telemetry: Arc<Telemetry>,
}

/// The router of the current configuration, replaced whole on reload. Calls routed before
/// a reload keep their target and finish on the old configuration.
#[derive(Debug, Clone)]
pub(crate) struct ReloadableRouter(pub(crate) Arc<arc_swap::ArcSwap<Router>>);

impl StreamDirector for ReloadableRouter {
    fn direct(&self, call: CallInfo) -> impl Future<Output = Result<Target, Status>> + Send {
        std::future::ready(self.0.load().route(call))
    }
}

#[derive(Debug)]
struct Route {
    name: String,
    service: Option<Regex>,
    method: Option<String>,
    path_prefix: Option<String>,
    headers: Vec<(HeaderName, HeaderCondition)>,
    cluster: Arc<Cluster>,
    observer: Arc<RouteObserver>,
    max_timeout: Option<Duration>,
    default_timeout: Option<Duration>,
    authority: Option<Authority>,
    x_forwarded_for: bool,
    request_edits: HeaderEdits,
    response_edits: Option<Arc<HeaderEdits>>,
}

#[derive(Debug)]
enum HeaderCondition {
    Exact(String),
    Regex(Regex),
    Present,
    Absent,
}

impl Router {
    /// Compiles the routes of a checked configuration; clusters of `previous` whose
    /// configuration did not change are kept (with their connections, health and counters).
    pub(crate) fn build(
        config: &Config,
        telemetry: &Arc<Telemetry>,
        previous: Option<&Router>,
    ) -> anyhow::Result<Self> {
        let mut clusters = HashMap::new();
        for (name, cluster) in &config.clusters {
            let source = Cluster::source_of(cluster, &config.limits);
            let kept = previous.and_then(|p| {
                p.clusters
                    .iter()
                    .find(|c| c.name == *name && c.source == source)
            });
            let cluster = match kept {
                Some(kept) => kept.clone(),
                None => Arc::new(Cluster::build(name, cluster, &config.limits)?),
            };
            clusters.insert(name.clone(), cluster);
        }
        let routes = config
            .routes
            .iter()
            .enumerate()
            .map(|(i, route)| Route::build(i, route, &clusters, telemetry))
            .collect::<anyhow::Result<_>>()?;
        Ok(Self {
            routes,
            clusters: clusters.into_values().collect(),
            telemetry: telemetry.clone(),
        })
    }

    /// The clusters this router sends to.
    pub(crate) fn clusters(&self) -> &[Arc<Cluster>] {
        &self.clusters
    }

    fn route(&self, call: CallInfo) -> Result<Target, Status> {
        let Some(route) = self.routes.iter().find(|r| r.matches(&call)) else {
            let status = Status::unimplemented(format!("no route matched {}", call.method()));
            let record = refused_record(&call, status.code(), status.message());
            self.telemetry.unrouted(&record);
            return Err(status);
        };
        route.target(call)
    }
}

impl StreamDirector for Router {
    fn direct(&self, call: CallInfo) -> impl Future<Output = Result<Target, Status>> + Send {
        std::future::ready(self.route(call))
    }
}

impl Route {
    fn build(
        index: usize,
        route: &config::Route,
        clusters: &HashMap<String, Arc<Cluster>>,
        telemetry: &Arc<Telemetry>,
    ) -> anyhow::Result<Self> {
        let m = &route.matches;
        let headers = m
            .headers
            .iter()
            .map(|h| {
                let name = HeaderName::from_bytes(h.name.get_ref().as_bytes())?;
                let condition = match (&h.exact, &h.regex, h.present, h.absent) {
                    (Some(exact), ..) => HeaderCondition::Exact(exact.clone()),
                    (_, Some(regex), ..) => HeaderCondition::Regex(Regex::new(regex.get_ref())?),
                    (_, _, Some(true), _) | (_, _, _, Some(false)) => HeaderCondition::Present,
                    _ => HeaderCondition::Absent,
                };
                Ok((name, condition))
            })
            .collect::<anyhow::Result<_>>()?;
        let cluster = clusters
            .get(route.cluster.get_ref())
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("unknown cluster {}", route.cluster.get_ref()))?;
        let name = route
            .name
            .clone()
            .unwrap_or_else(|| format!("route-{index}"));
        let observer = Arc::new(RouteObserver {
            metrics: telemetry.route_metrics(&name, &cluster.name),
            telemetry: telemetry.clone(),
            route: name.clone(),
            cluster: cluster.clone(),
        });
        Ok(Self {
            name,
            observer,
            service: m.service.as_ref().map(|s| glob(s.get_ref())).transpose()?,
            method: m.method.clone(),
            path_prefix: m.path_prefix.clone(),
            headers,
            cluster,
            max_timeout: route.max_timeout.as_ref().map(|t| t.get_ref().0),
            default_timeout: route.default_timeout.as_ref().map(|t| t.get_ref().0),
            authority: route
                .authority
                .as_ref()
                .map(|a| Authority::try_from(a.get_ref().as_str()))
                .transpose()?,
            x_forwarded_for: route.x_forwarded_for,
            request_edits: route.request_metadata.to_header_edits()?,
            response_edits: Some(Arc::new(route.response_metadata.to_header_edits()?))
                .filter(|e| !e.is_empty()),
        })
    }

    fn matches(&self, call: &CallInfo) -> bool {
        self.service
            .as_ref()
            .is_none_or(|re| re.is_match(call.service_name()))
            && self
                .method
                .as_deref()
                .is_none_or(|m| m == call.method_name())
            && self
                .path_prefix
                .as_deref()
                .is_none_or(|p| call.method().starts_with(p))
            && self.headers.iter().all(|(name, condition)| {
                let value = call.metadata().as_ref().get(name);
                match condition {
                    HeaderCondition::Exact(exact) => {
                        value.is_some_and(|v| v.as_bytes() == exact.as_bytes())
                    }
                    HeaderCondition::Regex(re) => value
                        .and_then(|v| v.to_str().ok())
                        .is_some_and(|v| re.is_match(v)),
                    HeaderCondition::Present => value.is_some(),
                    HeaderCondition::Absent => value.is_none(),
                }
            })
    }

    fn target(&self, mut call: CallInfo) -> Result<Target, Status> {
        let forwarded_for = self.x_forwarded_for.then(|| call.remote_addr()).flatten();
        {
            let headers = call.metadata_mut().as_mut();
            self.request_edits.apply(headers);
            if let Some(addr) = forwarded_for {
                grpcproxy::headers::append_forwarded_for(headers, addr.ip());
            }
        }
        let Some(picked) = self.cluster.pick() else {
            let status = Status::unavailable(format!(
                "no healthy endpoint in cluster {}",
                self.cluster.name
            ));
            self.observer
                .refused(&refused_record(&call, status.code(), status.message()));
            return Err(status);
        };
        let Picked {
            endpoint,
            alternate,
            in_flight,
        } = picked;
        tracing::trace!(route = %self.name, cluster = %self.cluster.name, endpoint = endpoint.upstream.address(), "routed");
        let mut target = call
            .forward_to(endpoint.upstream.clone())
            .timeout_limits(self.max_timeout, self.default_timeout)
            .with_guard(in_flight)
            .with_observer(self.observer.clone() as SharedObserver);
        if let Some(authority) = &self.authority {
            target = target.authority(authority.clone());
        }
        if let Some(edits) = &self.response_edits {
            target = target.response_metadata(edits.clone());
        }
        if let Some(alternate) = alternate {
            target = target.alternate(alternate.upstream.clone());
        }
        Ok(target)
    }
}

/// The record of a call the router answers itself, at once.
fn refused_record<'a>(call: &'a CallInfo, code: tonic::Code, message: &'a str) -> CallRecord<'a> {
    CallRecord {
        method: call.method(),
        peer: call.remote_addr(),
        backend: "",
        unreachable: None,
        grpc_status: code,
        started: std::time::SystemTime::now(),
        duration: Duration::ZERO,
        request_bytes: 0,
        response_bytes: 0,
        grpc_message: Some(message),
        authority: None,
        user_agent: call
            .metadata()
            .get("user-agent")
            .and_then(|v| v.to_str().ok()),
    }
}

/// A service-name pattern: `*` matches any run of characters, the rest is literal.
fn glob(pattern: &str) -> Result<Regex, regex::Error> {
    let parts: Vec<String> = pattern.split('*').map(regex::escape).collect();
    Regex::new(&format!("^{}$", parts.join(".*")))
}

#[cfg(test)]
mod tests {
    use super::glob;

    #[test]
    fn globs_match_whole_names() {
        assert!(glob("shop.*").unwrap().is_match("shop.Users"));
        assert!(!glob("shop.*").unwrap().is_match("shopX.Users"));
        assert!(glob("*.Health").unwrap().is_match("grpc.health.v1.Health"));
        assert!(glob("a.B").unwrap().is_match("a.B"));
        assert!(!glob("a.B").unwrap().is_match("a.BC"));
    }
}
