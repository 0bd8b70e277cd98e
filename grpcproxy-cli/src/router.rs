//! The binary's director: config routes, first match wins, each sending to a cluster.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use grpcproxy::policy::{
    FanOut, HedgePolicy, Mirror, MirrorPolicy, MirrorResult, PeerLimit, RateLimit, RetryPolicy,
};
use grpcproxy::{CallInfo, CallRecord, SharedObserver, StreamDirector, Target};
use tonic::Status;

use grpcproxy::reflection::{Ownership, ReflectionBackends};

use crate::cluster::{Cluster, NoPick, Picked};
use crate::config::{CompiledRoute, Config, HeaderCondition};
use crate::telemetry::{PolicyCounts, RouteObserver, Telemetry};

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

/// The merged reflection's backends: one endpoint of each cluster the routes send to, and
/// the cluster each service's calls go to.
impl ReflectionBackends for ReloadableRouter {
    fn backends(&self) -> Vec<(String, grpcproxy::Upstream)> {
        self.0.load().reflection_backends()
    }

    fn owner(&self, service: &str) -> Ownership {
        match self.0.load().owner_of(service) {
            Some(cluster) => Ownership::Backend(cluster.to_owned()),
            None => Ownership::Unrouted,
        }
    }
}

impl StreamDirector for ReloadableRouter {
    fn direct(&self, call: CallInfo) -> impl Future<Output = Result<Target, Status>> + Send {
        std::future::ready(self.0.load().route(call))
    }
}

/// A compiled route of the configuration, with its cluster and observer.
#[derive(Debug)]
struct Route {
    rule: CompiledRoute,
    cluster: Arc<Cluster>,
    observer: Arc<RouteObserver>,
    /// The route's retry policy with its cluster's budget.
    retry: Option<Arc<RetryPolicy>>,
    hedge: Option<Arc<HedgePolicy>>,
    rate_limit: Option<RateLimit>,
    peer_limit: Option<PeerLimit>,
    /// The mirror policy and the shadow cluster.
    mirror: Option<(Arc<MirrorPolicy>, Arc<Cluster>)>,
    /// The fan-out's member clusters other than the route's own (which is the first).
    fan_out: Option<Vec<Arc<Cluster>>>,
    /// What the route's policies did (kept across reloads).
    counts: Arc<PolicyCounts>,
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
            .compiled_routes
            .iter()
            .map(|rule| {
                Route::build(
                    rule,
                    &clusters,
                    telemetry,
                    config.limits.max_methods_per_route,
                )
            })
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

    /// The cluster calls to `service` go to: that of the first route a call to it takes
    /// whatever its method and with no metadata (routes for one method, or that need a
    /// header, do not own a service). For the merged reflection.
    pub(crate) fn owner_of(&self, service: &str) -> Option<&str> {
        self.routes
            .iter()
            .find(|route| route.owns(service))
            .map(|route| route.cluster.name.as_str())
    }

    /// One endpoint of each cluster the routes send to, in route order, picked as for a
    /// call (an available one). For the merged reflection.
    pub(crate) fn reflection_backends(&self) -> Vec<(String, grpcproxy::Upstream)> {
        let mut backends: Vec<(String, grpcproxy::Upstream)> = Vec::new();
        for route in &self.routes {
            let name = &route.cluster.name;
            if backends.iter().any(|(known, _)| known == name) {
                continue;
            }
            match route.cluster.pick() {
                Ok(picked) => backends.push((name.clone(), picked.endpoint.upstream.clone())),
                Err(_) => {
                    tracing::warn!(cluster = %name, "merged reflection: skipping a cluster with no available endpoint")
                }
            }
        }
        backends
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
        rule: &CompiledRoute,
        clusters: &HashMap<String, Arc<Cluster>>,
        telemetry: &Arc<Telemetry>,
        max_methods: usize,
    ) -> anyhow::Result<Self> {
        let cluster = clusters
            .get(&rule.cluster)
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("unknown cluster {}", rule.cluster))?;
        let observer = Arc::new(RouteObserver {
            metrics: telemetry.route_metrics(&rule.name, &cluster.name, max_methods),
            telemetry: telemetry.clone(),
            route: rule.name.clone(),
            cluster: cluster.clone(),
        });
        let counts = telemetry.policy_counts(&rule.name);
        let retry = rule.retry.clone().map(|policy| {
            let policy = policy.with_stats(counts.retries.clone());
            Arc::new(match &cluster.retry_budget {
                Some(budget) => policy.budget(budget.clone()),
                None => policy,
            })
        });
        let mirror = match &rule.mirror {
            Some(mirror) => {
                let shadow = clusters
                    .get(&mirror.cluster)
                    .cloned()
                    .ok_or_else(|| anyhow::anyhow!("unknown mirror cluster {}", mirror.cluster))?;
                Some((
                    Arc::new(mirror.policy(&rule.name, counts.mirrors.clone())),
                    shadow,
                ))
            }
            None => None,
        };
        let fan_out = match &rule.fan_out {
            Some(fan) => Some(
                fan.clusters[1..]
                    .iter()
                    .map(|name| {
                        clusters
                            .get(name)
                            .cloned()
                            .ok_or_else(|| anyhow::anyhow!("unknown fan-out cluster {name}"))
                    })
                    .collect::<anyhow::Result<Vec<_>>>()?,
            ),
            None => None,
        };
        Ok(Self {
            rule: rule.clone(),
            cluster,
            mirror,
            fan_out,
            observer,
            retry,
            hedge: rule.hedge.map(|(delay, max)| {
                Arc::new(HedgePolicy::new(delay, max).with_stats(counts.hedges.clone()))
            }),
            rate_limit: rule
                .rate_limit
                .clone()
                .map(|(per_second, burst, key)| RateLimit::new(per_second, burst, key)),
            peer_limit: rule.max_in_flight_per_peer.map(PeerLimit::new),
            counts,
        })
    }

    /// Whether a call to `service`, whatever its method and with no metadata, takes this
    /// route.
    fn owns(&self, service: &str) -> bool {
        self.rule
            .service
            .as_ref()
            .is_none_or(|re| re.is_match(service))
            && self.rule.method.is_none()
            && self
                .rule
                .path_prefix
                .as_deref()
                .is_none_or(|p| format!("/{service}/").starts_with(p))
            && self
                .rule
                .headers
                .iter()
                .all(|(_, condition)| matches!(condition, HeaderCondition::Absent))
    }

    fn matches(&self, call: &CallInfo) -> bool {
        self.rule
            .service
            .as_ref()
            .is_none_or(|re| re.is_match(call.service_name()))
            && self
                .rule
                .method
                .as_deref()
                .is_none_or(|m| m == call.method_name())
            && self
                .rule
                .path_prefix
                .as_deref()
                .is_none_or(|p| call.method().starts_with(p))
            && self.rule.headers.iter().all(|(name, condition)| {
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

    /// The call's target, with its span when tracing is on: the span continues the
    /// caller's trace, the backend gets the span as its parent, and the span ends with the
    /// call (or its refusal).
    fn target(&self, mut call: CallInfo) -> Result<Target, Status> {
        let Some(tracer) = self.observer.telemetry.tracer() else {
            return self.untraced_target(call);
        };
        let traced = tracer.start(&mut call, || {
            vec![
                opentelemetry::KeyValue::new("grpcproxy.route", self.rule.name.clone()),
                opentelemetry::KeyValue::new("grpcproxy.cluster", self.cluster.name.clone()),
            ]
        });
        match (self.untraced_target(call), traced) {
            (Ok(target), Some(traced)) => {
                let inner = target.observer().cloned();
                Ok(target.with_observer(traced.observer(inner)))
            }
            (Err(status), Some(traced)) => {
                traced.refused(&status);
                Err(status)
            }
            (routed, None) => routed,
        }
    }

    fn untraced_target(&self, mut call: CallInfo) -> Result<Target, Status> {
        // Admission first: a refused call costs no pick and reaches no backend.
        if let Some(limit) = &self.rate_limit {
            if let Err(status) = limit.check(&call) {
                self.counts.rate_limited.fetch_add(1, Ordering::Relaxed);
                return Err(self.refuse(&call, status));
            }
        }
        let peer_guard = match &self.peer_limit {
            Some(limit) => match limit.acquire(call.remote_addr().map(|a| a.ip())) {
                Ok(guard) => guard,
                Err(status) => {
                    self.counts.peer_limited.fetch_add(1, Ordering::Relaxed);
                    return Err(self.refuse(&call, status));
                }
            },
            None => None,
        };
        let forwarded_for = self
            .rule
            .x_forwarded_for
            .then(|| call.remote_addr())
            .flatten();
        {
            let headers = call.metadata_mut().as_mut();
            self.rule.request_edits.apply(headers);
            if let Some(addr) = forwarded_for {
                grpcproxy::headers::append_forwarded_for(headers, addr.ip());
            }
        }
        let picked = match self.cluster.pick() {
            Ok(picked) => picked,
            Err(NoPick::Unavailable) => {
                let status = Status::unavailable(format!(
                    "no healthy endpoint in cluster {}",
                    self.cluster.name
                ));
                return Err(self.refuse(&call, status));
            }
            Err(NoPick::Full(max)) => {
                let status = Status::unavailable(format!(
                    "cluster {} has {max} calls open (max_in_flight): load shed",
                    self.cluster.name
                ));
                return Err(self.refuse(&call, status));
            }
        };
        let Picked {
            endpoint,
            alternate,
            in_flight,
        } = picked;
        let (fan, member_guards) = match self.fan_out(&call, &endpoint.upstream) {
            Ok(Some((fan, guards))) => (Some(fan), guards),
            Ok(None) => (None, Vec::new()),
            Err(status) => return Err(self.refuse(&call, status)),
        };
        tracing::trace!(route = %self.rule.name, cluster = %self.cluster.name, endpoint = endpoint.upstream.address(), "routed");
        let mut target = call
            .forward_to(endpoint.upstream.clone())
            .timeout_limits(self.rule.max_timeout, self.rule.default_timeout)
            .with_guard((in_flight, peer_guard, member_guards))
            .with_observer(self.observer.clone() as SharedObserver);
        if let Some(authority) = &self.rule.authority {
            target = target.authority(authority.clone());
        }
        if let Some(edits) = &self.rule.response_edits {
            target = target.response_metadata(edits.clone());
        }
        if let Some(alternate) = alternate {
            target = target.alternate(alternate.upstream.clone());
        }
        if let Some(retry) = &self.retry {
            target = target.retry(retry.clone());
        }
        if let Some(hedge) = &self.hedge {
            target = target.hedge(hedge.clone());
        }
        if let Some(fan) = fan {
            target = target.fan_out(fan);
        }
        if let Some((policy, shadow)) = self.mirror.as_ref().filter(|(p, _)| p.sample()) {
            match shadow.pick() {
                Ok(picked) => {
                    let mirror = Mirror::new(policy.clone(), picked.endpoint.upstream.clone());
                    target = target.mirror(mirror.with_guard(picked.in_flight));
                }
                // No shadow endpoint to take it: counted, the primary goes on.
                Err(_) => policy.stats().record(MirrorResult::Error),
            }
        }
        Ok(target)
    }
}

impl Route {
    /// The call's fan-out, if the route has one, with the members' in-flight guards: the
    /// endpoints the call names in the fan-out's header (INVALID_ARGUMENT for a name that
    /// is no endpoint of the fan-out's clusters), else `first` (the endpoint picked in the
    /// route's cluster) and one endpoint of each other member cluster (UNAVAILABLE when one
    /// has none to give).
    #[allow(
        clippy::type_complexity,
        reason = "a fan-out and its guards, used once"
    )]
    fn fan_out(
        &self,
        call: &CallInfo,
        first: &grpcproxy::Upstream,
    ) -> Result<Option<(FanOut, Vec<Box<dyn std::any::Any + Send + Sync>>)>, Status> {
        let (Some(members), Some(rule)) = (&self.fan_out, &self.rule.fan_out) else {
            return Ok(None);
        };
        let fan = FanOut::new(rule.mode)
            .buffer_bytes(rule.buffer_bytes)
            .response_bytes(rule.response_bytes)
            .slow_member(rule.slow)
            .with_stats(self.counts.fan_outs.clone());
        let mut guards: Vec<Box<dyn std::any::Any + Send + Sync>> = Vec::new();
        let named = rule
            .header
            .as_ref()
            .and_then(|header| Some((header, call.metadata().as_ref().get(header)?)));
        if let Some((header, value)) = named {
            let mut fan = fan;
            let value = value.to_str().unwrap_or_default();
            let mut names: Vec<&str> = Vec::new();
            for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                if !names.contains(&name) {
                    names.push(name);
                }
            }
            if names.is_empty() {
                return Err(Status::invalid_argument(format!(
                    "{header}: no fan-out target named"
                )));
            }
            for name in names {
                let found = std::iter::once(&self.cluster)
                    .chain(members)
                    .find_map(|cluster| cluster.endpoint_named(name));
                let Some((endpoint, in_flight)) = found else {
                    return Err(Status::invalid_argument(format!(
                        "{header}: no endpoint {name:?} in the fan-out's clusters"
                    )));
                };
                fan = fan.member(name, endpoint.upstream.clone());
                guards.push(Box::new(in_flight));
            }
            return Ok(Some((fan, guards)));
        }
        let mut fan = fan.member(self.cluster.name.as_str(), first.clone());
        for cluster in members {
            let picked = cluster.pick().map_err(|_| {
                Status::unavailable(format!(
                    "no healthy endpoint in fan-out cluster {}",
                    cluster.name
                ))
            })?;
            fan = fan.member(cluster.name.as_str(), picked.endpoint.upstream.clone());
            guards.push(Box::new(picked.in_flight));
        }
        Ok(Some((fan, guards)))
    }

    /// Tells the route's observer of a call the router answers with `status` itself.
    fn refuse(&self, call: &CallInfo, status: Status) -> Status {
        self.observer
            .refused(&refused_record(call, status.code(), status.message()));
        status
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
        trace_id: None,
        span_id: None,
        request_messages: 0,
        response_messages: 0,
        attempts: &[],
    }
}
