//! `[[routes]]` as written in the file, and as the router uses them: compiled once while
//! the configuration is checked:
//! header names, regexes, the service glob, the authority and the metadata edits are
//! parsed here and nowhere else.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use grpcproxy::policy::{HedgeDelay, RateKey, RetryPolicy};
use grpcproxy::HeaderEdits;
use http::header::{HeaderName, HeaderValue};
use http::uri::Authority;
use regex::Regex;
use tonic::Code;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::duration::HumanDuration;
use super::error::Problem;

/// `[[routes]]`: the first route whose match fits the call sends it to its cluster.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Route {
    /// A name for logs and metrics (default: `route-N`).
    pub(crate) name: Option<String>,
    #[serde(default, rename = "match")]
    pub(crate) matches: RouteMatch,
    /// The cluster calls go to.
    pub(crate) cluster: Spanned<String>,
    /// Cap on the call's deadline.
    pub(crate) max_timeout: Option<Spanned<HumanDuration>>,
    /// Deadline for calls that send no `grpc-timeout`.
    pub(crate) default_timeout: Option<Spanned<HumanDuration>>,
    /// `:authority` sent to the backend (default: the client's).
    pub(crate) authority: Option<Spanned<String>>,
    /// Append the client's address to `x-forwarded-for`.
    #[serde(default)]
    pub(crate) x_forwarded_for: bool,
    #[serde(default)]
    pub(crate) request_metadata: MetadataEdits,
    /// Edits of the response headers (or trailers-only headers) the client receives.
    #[serde(default)]
    pub(crate) response_metadata: MetadataEdits,
    /// Retry failed tries (none by default).
    pub(crate) retry: Option<Spanned<Retry>>,
    /// Hedge calls (idempotent methods only; none by default).
    pub(crate) hedge: Option<Spanned<Hedge>>,
    /// Calls admitted per second (none by default).
    pub(crate) rate_limit: Option<Spanned<RateLimit>>,
    /// Calls one client address may have open on this route (none by default).
    pub(crate) max_in_flight_per_peer: Option<Spanned<usize>>,
    /// Mirror a share of the calls to another cluster (none by default).
    pub(crate) mirror: Option<Spanned<Mirror>>,
    /// Send each call to several clusters at once, merging their answers (none by
    /// default).
    pub(crate) fan_out: Option<Spanned<FanOut>>,
}

/// `fan_out = { ... }` of a route: each call goes to the route's cluster and to every
/// cluster in `clusters` (one endpoint of each), and their answers are merged by `mode`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FanOut {
    /// The member clusters (the route's own `cluster` is one whether listed or not).
    pub(crate) clusters: Vec<String>,
    /// "first_success", "all", "concat" (unary methods) or "interleave" (streaming).
    pub(crate) mode: String,
    /// Request bytes each member may have waiting before `slow` applies.
    #[serde(default = "one_mib")]
    pub(crate) buffer_bytes: usize,
    /// Response bytes held per member's answer in the unary modes.
    #[serde(default = "four_mib")]
    pub(crate) response_bytes: usize,
    /// A member too slow to take the request stream: "wait" (backpressure) or "drop".
    #[serde(default = "wait")]
    pub(crate) slow: String,
    /// With `slow = "drop"`: how long a member may leave its buffer full.
    #[serde(default = "one_second", with = "super::duration")]
    pub(crate) drop_after: Duration,
    /// A request header naming the members of each call (comma-separated endpoint
    /// addresses of the fan-out's clusters); calls without it go to every cluster.
    pub(crate) header: Option<String>,
}

fn one_second() -> Duration {
    Duration::from_secs(1)
}

fn wait() -> String {
    "wait".to_owned()
}

/// A checked fan-out: its member clusters (the route's first) and policy settings.
#[derive(Debug, Clone)]
pub(crate) struct CompiledFanOut {
    pub(crate) clusters: Vec<String>,
    pub(crate) mode: grpcproxy::policy::FanOutMode,
    pub(crate) buffer_bytes: usize,
    pub(crate) response_bytes: usize,
    pub(crate) slow: grpcproxy::policy::SlowMember,
    /// The header that names a call's members, if any.
    pub(crate) header: Option<HeaderName>,
}

impl FanOut {
    /// The fan-out of route `i` (whose cluster is `cluster`), or the first problem with
    /// it (its clusters are checked with the others).
    fn compile(
        &self,
        i: usize,
        cluster: &str,
        span: Range<usize>,
    ) -> Result<CompiledFanOut, Problem> {
        use grpcproxy::policy::{FanOutMode, SlowMember};
        let field = format!("routes[{i}].fan_out");
        let problem = |why: String| Problem::new(span.clone(), why);
        let mode = match self.mode.as_str() {
            "first_success" => FanOutMode::FirstSuccess,
            "all" => FanOutMode::All,
            "concat" => FanOutMode::Concat,
            "interleave" => FanOutMode::Interleave,
            other => {
                return Err(problem(format!(
                    "{field}.mode: {other:?} is not \"first_success\", \"all\", \"concat\" or \"interleave\""
                )))
            }
        };
        let slow = match self.slow.as_str() {
            "wait" => SlowMember::Wait,
            "drop" => SlowMember::Drop {
                after: self.drop_after,
            },
            other => {
                return Err(problem(format!(
                    "{field}.slow: {other:?} is not \"wait\" or \"drop\""
                )))
            }
        };
        let mut clusters = vec![cluster.to_owned()];
        for name in &self.clusters {
            if !clusters.contains(name) {
                clusters.push(name.clone());
            }
        }
        if clusters.len() < 2 {
            return Err(problem(format!(
                "{field}.clusters: a fan-out needs a cluster besides the route's own ({cluster:?})"
            )));
        }
        for (name, value) in [
            ("buffer_bytes", self.buffer_bytes),
            ("response_bytes", self.response_bytes),
        ] {
            if value == 0 {
                return Err(problem(format!("{field}.{name}: 0 would fail every call")));
            }
        }
        let header = match &self.header {
            None => None,
            Some(name) => Some(HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                problem(format!(
                    "{field}.header: {name:?} is not a valid metadata key"
                ))
            })?),
        };
        Ok(CompiledFanOut {
            header,
            clusters,
            mode,
            buffer_bytes: self.buffer_bytes,
            response_bytes: self.response_bytes,
            slow,
        })
    }
}

/// `mirror = { ... }` of a route: a share of its calls also goes to `cluster`, whose
/// answers never reach the client and may be compared with the primary's.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Mirror {
    /// The shadow cluster.
    pub(crate) cluster: String,
    /// The share of calls mirrored, 0 (exclusive) to 100.
    pub(crate) percent: f64,
    /// Compare each mirrored answer with the primary's, byte for byte.
    #[serde(default)]
    pub(crate) compare: bool,
    /// Request bytes a mirrored call may have waiting for the shadow before it is dropped.
    #[serde(default = "one_mib")]
    pub(crate) buffer_bytes: usize,
    /// Response bytes held per answer for the comparison.
    #[serde(default = "four_mib")]
    pub(crate) compare_bytes: usize,
    /// Mirrored calls at once (per route); calls past it are not mirrored.
    #[serde(default = "sixty_four")]
    pub(crate) max_in_flight: usize,
    /// How long a mirrored call may take when the primary has no deadline.
    #[serde(default = "ten_seconds", with = "super::duration")]
    pub(crate) timeout: Duration,
    /// Differences logged (the rest only counted).
    #[serde(default = "ten")]
    pub(crate) log_differences: u64,
    /// Publish each mirrored call's result to the tap (for calls the tap records).
    #[serde(default)]
    pub(crate) tap: bool,
}

fn one_mib() -> usize {
    1 << 20
}

fn four_mib() -> usize {
    4 << 20
}

fn sixty_four() -> usize {
    64
}

fn ten_seconds() -> Duration {
    Duration::from_secs(10)
}

fn ten() -> u64 {
    10
}

impl Mirror {
    /// The problems with route `i`'s mirror (its cluster is checked with the others).
    fn check(&self, i: usize, span: Range<usize>, problems: &mut Vec<Problem>) {
        let field = format!("routes[{i}].mirror");
        let mut problem = |why: String| problems.push(Problem::new(span.clone(), why));
        if !(self.percent > 0.0 && self.percent <= 100.0) {
            problem(format!(
                "{field}.percent: {} is not a share above 0 and up to 100",
                self.percent
            ));
        }
        for (name, value) in [
            ("buffer_bytes", self.buffer_bytes),
            ("compare_bytes", self.compare_bytes),
            ("max_in_flight", self.max_in_flight),
        ] {
            if value == 0 {
                problem(format!("{field}.{name}: 0 would drop every mirrored call"));
            }
        }
        if self.timeout.is_zero() {
            problem(format!(
                "{field}.timeout: \"0s\" would drop every mirrored call without a deadline"
            ));
        }
    }

    /// The policy this mirror configures, counting into `stats`.
    pub(crate) fn policy(
        &self,
        route: &str,
        stats: Arc<grpcproxy::policy::MirrorStats>,
    ) -> grpcproxy::policy::MirrorPolicy {
        grpcproxy::policy::MirrorPolicy::new(self.percent)
            .name(route)
            .compare(self.compare)
            .buffer_bytes(self.buffer_bytes)
            .compare_bytes(self.compare_bytes)
            .max_in_flight(self.max_in_flight)
            .timeout(self.timeout)
            .log_differences(self.log_differences)
            .publish_to_tap(self.tap)
            .with_stats(stats)
    }
}

/// `hedge = { ... }` of a route.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Hedge {
    /// The wait before each hedge: a duration, or a percentile of the route's recent
    /// latency such as `"p95"`.
    pub(crate) delay: String,
    /// Tries in all, the first included.
    #[serde(default = "two_tries")]
    pub(crate) max: u32,
    /// With a percentile delay: the least wait (and the wait until enough calls were seen).
    #[serde(default = "twenty_ms", with = "super::duration")]
    pub(crate) min_delay: Duration,
}

fn two_tries() -> u32 {
    2
}

fn twenty_ms() -> Duration {
    Duration::from_millis(20)
}

/// `rate_limit = { ... }` of a route.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RateLimit {
    pub(crate) per_second: u32,
    /// Calls admitted at once above the rate (default: `per_second`).
    pub(crate) burst: Option<u32>,
    /// `"route"` (all calls), `"peer"` (client address) or `"header:NAME"`.
    #[serde(default = "route_key")]
    pub(crate) key: String,
}

fn route_key() -> String {
    "route".to_owned()
}

/// `retry = { ... }` of a route: which statuses are retried and how.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Retry {
    /// Status codes retried, snake_case (`unavailable`, `resource_exhausted`, ...).
    pub(crate) on: Spanned<Vec<String>>,
    /// Tries in all, the first included.
    #[serde(default = "three")]
    pub(crate) attempts: u32,
    /// Each try's own timeout (retried when it fires, if tries remain).
    #[serde(default, with = "super::duration::option")]
    pub(crate) per_try_timeout: Option<Duration>,
    #[serde(default = "twenty_five_ms", with = "super::duration")]
    pub(crate) backoff: Duration,
    #[serde(default = "two_fifty_ms", with = "super::duration")]
    pub(crate) max_backoff: Duration,
    /// Request bytes kept to send a call again; a larger request is not retried.
    #[serde(default = "sixty_four_kib")]
    pub(crate) buffer_bytes: usize,
}

fn three() -> u32 {
    3
}

fn twenty_five_ms() -> Duration {
    Duration::from_millis(25)
}

fn two_fifty_ms() -> Duration {
    Duration::from_millis(250)
}

fn sixty_four_kib() -> usize {
    64 << 10
}

/// What a route matches; every given condition must hold.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RouteMatch {
    /// Service name, exact or with `*` wildcards (`shop.*`).
    pub(crate) service: Option<Spanned<String>>,
    /// Method name within the service, exact.
    pub(crate) method: Option<String>,
    /// Prefix of the path `/pkg.Service/Method`.
    pub(crate) path_prefix: Option<String>,
    #[serde(default)]
    pub(crate) headers: Vec<HeaderMatch>,
}

/// A condition on one request header: exactly one of `exact`, `regex`, `present`, `absent`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HeaderMatch {
    pub(crate) name: Spanned<String>,
    pub(crate) exact: Option<String>,
    pub(crate) regex: Option<Spanned<String>>,
    pub(crate) present: Option<bool>,
    pub(crate) absent: Option<bool>,
}

/// Request metadata edits a route applies before forwarding.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MetadataEdits {
    /// Entries to add or replace.
    pub(crate) set: Option<Spanned<BTreeMap<String, String>>>,
    /// Keys to remove.
    pub(crate) remove: Option<Spanned<Vec<String>>>,
}

impl RouteMatch {
    /// No condition, or only `service = "*"`.
    pub(super) fn matches_everything(&self) -> bool {
        self.service.as_ref().is_none_or(|s| s.get_ref() == "*")
            && self.method.is_none()
            && self
                .path_prefix
                .as_deref()
                .is_none_or(|p| p == "/" || p.is_empty())
            && self.headers.is_empty()
    }

    /// The same conditions as `other` (header conditions compared as written).
    pub(super) fn same_conditions(&self, other: &RouteMatch) -> bool {
        let service = |m: &RouteMatch| m.service.as_ref().map(|s| s.get_ref().clone());
        let headers = |m: &RouteMatch| {
            m.headers
                .iter()
                .map(|h| {
                    (
                        h.name.get_ref().to_ascii_lowercase(),
                        h.exact.clone(),
                        h.regex.as_ref().map(|r| r.get_ref().clone()),
                        h.present,
                        h.absent,
                    )
                })
                .collect::<Vec<_>>()
        };
        service(self) == service(other)
            && self.method == other.method
            && self.path_prefix == other.path_prefix
            && headers(self) == headers(other)
    }
}

/// One route of the file, compiled.
#[derive(Debug, Clone)]
pub(crate) struct CompiledRoute {
    /// For logs and metrics: the configured name, else `route-N`.
    pub(crate) name: String,
    pub(crate) service: Option<Regex>,
    pub(crate) method: Option<String>,
    pub(crate) path_prefix: Option<String>,
    pub(crate) headers: Vec<(HeaderName, HeaderCondition)>,
    /// The cluster's name (checked to exist).
    pub(crate) cluster: String,
    pub(crate) max_timeout: Option<Duration>,
    pub(crate) default_timeout: Option<Duration>,
    pub(crate) authority: Option<Authority>,
    pub(crate) x_forwarded_for: bool,
    pub(crate) request_edits: HeaderEdits,
    /// `None` when there is nothing to edit (the common case costs nothing per call).
    pub(crate) response_edits: Option<Arc<HeaderEdits>>,
    /// The retry policy, without the cluster's budget (the router adds it).
    pub(crate) retry: Option<RetryPolicy>,
    /// The hedge policy.
    pub(crate) hedge: Option<(HedgeDelay, u32)>,
    /// The rate limit: calls per second, burst, key.
    pub(crate) rate_limit: Option<(NonZeroU32, NonZeroU32, RateKey)>,
    pub(crate) max_in_flight_per_peer: Option<usize>,
    /// The mirror (checked; its cluster exists).
    pub(crate) mirror: Option<Mirror>,
    /// The fan-out (checked; its clusters exist).
    pub(crate) fan_out: Option<CompiledFanOut>,
}

impl Hedge {
    /// The delay and tries of route `i`, or the first problem with them.
    fn compile(&self, i: usize, span: Range<usize>) -> Result<(HedgeDelay, u32), Problem> {
        let field = format!("routes[{i}].hedge");
        let delay = match self.delay.strip_prefix('p').map(str::parse::<f64>) {
            Some(Ok(percentile)) if percentile > 0.0 && percentile < 100.0 => {
                HedgeDelay::Percentile {
                    percentile,
                    floor: self.min_delay,
                }
            }
            Some(_) => {
                return Err(Problem::new(
                    span,
                    format!(
                    "{field}.delay: {:?} is not a percentile between p0 and p100 (such as \"p95\")",
                    self.delay
                ),
                ))
            }
            None => match super::duration::parse(&self.delay) {
                Ok(delay) => HedgeDelay::Fixed(delay),
                Err(why) => return Err(Problem::new(span, format!("{field}.delay: {why}"))),
            },
        };
        if self.max < 2 {
            return Err(Problem::new(
                span,
                format!(
                    "{field}.max: {} tries would never hedge; give 2 or more",
                    self.max
                ),
            ));
        }
        Ok((delay, self.max))
    }
}

impl RateLimit {
    /// The limit of route `i`, or the first problem with it.
    fn compile(
        &self,
        i: usize,
        span: Range<usize>,
    ) -> Result<(NonZeroU32, NonZeroU32, RateKey), Problem> {
        let field = format!("routes[{i}].rate_limit");
        let Some(per_second) = NonZeroU32::new(self.per_second) else {
            return Err(Problem::new(
                span,
                format!("{field}.per_second: 0 would refuse every call"),
            ));
        };
        let Some(burst) = NonZeroU32::new(self.burst.unwrap_or(self.per_second)) else {
            return Err(Problem::new(
                span,
                format!("{field}.burst: 0 would refuse every call"),
            ));
        };
        let key = match self.key.as_str() {
            "route" => RateKey::Route,
            "peer" => RateKey::Peer,
            other => match other
                .strip_prefix("header:")
                .map(|name| HeaderName::from_bytes(name.as_bytes()))
            {
                Some(Ok(name)) => RateKey::Header(name),
                _ => {
                    return Err(Problem::new(
                        span,
                        format!(
                            "{field}.key: {other:?} is not \"route\", \"peer\" or \"header:NAME\""
                        ),
                    ))
                }
            },
        };
        Ok((per_second, burst, key))
    }
}

/// The status codes a retry policy may name, as the configuration spells them.
const CODES: [(&str, Code); 16] = [
    ("cancelled", Code::Cancelled),
    ("unknown", Code::Unknown),
    ("invalid_argument", Code::InvalidArgument),
    ("deadline_exceeded", Code::DeadlineExceeded),
    ("not_found", Code::NotFound),
    ("already_exists", Code::AlreadyExists),
    ("permission_denied", Code::PermissionDenied),
    ("resource_exhausted", Code::ResourceExhausted),
    ("failed_precondition", Code::FailedPrecondition),
    ("aborted", Code::Aborted),
    ("out_of_range", Code::OutOfRange),
    ("unimplemented", Code::Unimplemented),
    ("internal", Code::Internal),
    ("unavailable", Code::Unavailable),
    ("data_loss", Code::DataLoss),
    ("unauthenticated", Code::Unauthenticated),
];

impl Retry {
    /// The policy of `retry` (route `i`), or the first problem with it.
    fn compile(
        &self,
        i: usize,
        span: Range<usize>,
        max_timeout: Option<Duration>,
    ) -> Result<RetryPolicy, Problem> {
        let field = format!("routes[{i}].retry");
        let mut codes = Vec::new();
        for name in self.on.get_ref() {
            let Some((_, code)) = CODES.iter().find(|(known, _)| known == name) else {
                let known: Vec<&str> = CODES.iter().map(|(name, _)| *name).collect();
                return Err(Problem::new(
                    self.on.span(),
                    format!(
                        "{field}.on: {name:?} is not a status code that can be retried (known: {})",
                        known.join(", ")
                    ),
                ));
            };
            codes.push(*code);
        }
        if self.attempts == 0 {
            return Err(Problem::new(
                span,
                format!("{field}.attempts: 0 tries would never send the call; 1 means no retry"),
            ));
        }
        let mut policy = RetryPolicy::new(codes, self.attempts)
            .backoff(self.backoff, self.max_backoff)
            .buffer_bytes(self.buffer_bytes);
        if let Some(per_try) = self.per_try_timeout {
            if per_try.is_zero() {
                return Err(Problem::new(
                    span,
                    format!("{field}.per_try_timeout: \"0s\" would end every try at once"),
                ));
            }
            if let Some(max) = max_timeout.filter(|max| per_try > *max) {
                return Err(Problem::new(
                    span,
                    format!("{field}.per_try_timeout ({per_try:?}) is longer than the route's max_timeout ({max:?}): no try could reach it"),
                ));
            }
            policy = policy.per_try_timeout(per_try);
        }
        Ok(policy)
    }
}

/// What a route asks of one request header.
#[derive(Debug, Clone)]
pub(crate) enum HeaderCondition {
    Exact(String),
    Regex(Regex),
    Present,
    Absent,
}

/// A service-name pattern: `*` matches any run of characters, the rest is literal.
fn glob(pattern: &str) -> Regex {
    let parts: Vec<String> = pattern.split('*').map(regex::escape).collect();
    Regex::new(&format!("^{}$", parts.join(".*"))).expect("escaped text and .* make a regex")
}

/// Runs `check` and records its problem, if any; the value when there was none.
fn checked<T>(problems: &mut Vec<Problem>, check: Result<T, Problem>) -> Option<T> {
    check.map_err(|problem| problems.push(problem)).ok()
}

impl Route {
    /// Compiles route `i`, adding every problem with it to `problems` (then `None`).
    pub(crate) fn compile(&self, i: usize, problems: &mut Vec<Problem>) -> Option<CompiledRoute> {
        let before = problems.len();
        let m = &self.matches;
        let service = match &m.service {
            Some(service) if service.get_ref().is_empty() => {
                problems.push(Problem::new(
                    service.span(),
                    format!("routes[{i}].match.service is empty"),
                ));
                None
            }
            Some(service) => Some(glob(service.get_ref())),
            None => None,
        };
        let mut headers = Vec::with_capacity(m.headers.len());
        for (j, header) in m.headers.iter().enumerate() {
            let field = format!("routes[{i}].match.headers[{j}]");
            let condition = match (&header.exact, &header.regex, header.present, header.absent) {
                (Some(exact), None, None, None) => Some(HeaderCondition::Exact(exact.clone())),
                (None, Some(regex), None, None) => checked(
                    problems,
                    Regex::new(regex.get_ref()).map_err(|e| {
                        // regex's message draws a caret over several lines; keep its last line.
                        let text = e.to_string();
                        let reason = text
                            .lines()
                            .last()
                            .unwrap_or_default()
                            .trim_start_matches("error: ");
                        Problem::new(
                            regex.span(),
                            format!(
                                "{field}.regex: invalid regex {:?}: {reason}",
                                regex.get_ref()
                            ),
                        )
                    }),
                )
                .map(HeaderCondition::Regex),
                (None, None, Some(present), None) => Some(if present {
                    HeaderCondition::Present
                } else {
                    HeaderCondition::Absent
                }),
                (None, None, None, Some(absent)) => Some(if absent {
                    HeaderCondition::Absent
                } else {
                    HeaderCondition::Present
                }),
                _ => {
                    problems.push(Problem::new(
                        header.name.span(),
                        format!("{field}: give exactly one of exact, regex, present, absent"),
                    ));
                    None
                }
            };
            let name = checked(
                problems,
                HeaderName::from_bytes(header.name.get_ref().as_bytes()).map_err(|_| {
                    Problem::new(
                        header.name.span(),
                        format!(
                            "{field}.name: {:?} is not a valid header name",
                            header.name.get_ref()
                        ),
                    )
                }),
            );
            if let (Some(name), Some(condition)) = (name, condition) {
                headers.push((name, condition));
            }
        }
        for (field, timeout) in [
            ("max_timeout", &self.max_timeout),
            ("default_timeout", &self.default_timeout),
        ] {
            if let Some(timeout) = timeout.as_ref().filter(|t| t.get_ref().0.is_zero()) {
                problems.push(Problem::new(
                    timeout.span(),
                    format!("routes[{i}].{field}: \"0s\" would end every call at once with DEADLINE_EXCEEDED; leave {field} out for no deadline"),
                ));
            }
        }
        let authority = self.authority.as_ref().and_then(|authority| {
            checked(
                problems,
                Authority::try_from(authority.get_ref().as_str()).map_err(|_| {
                    Problem::new(
                        authority.span(),
                        format!(
                            "routes[{i}].authority: {:?} is not a valid authority",
                            authority.get_ref()
                        ),
                    )
                }),
            )
        });
        let request_edits = checked(
            problems,
            self.request_metadata
                .compile(&format!("routes[{i}].request_metadata")),
        );
        let response_edits = checked(
            problems,
            self.response_metadata
                .compile(&format!("routes[{i}].response_metadata")),
        );
        let max_timeout = self.max_timeout.as_ref().map(|t| t.get_ref().0);
        let retry = self.retry.as_ref().and_then(|retry| {
            checked(
                problems,
                retry.get_ref().compile(i, retry.span(), max_timeout),
            )
        });
        let hedge = self.hedge.as_ref().and_then(|hedge| {
            if self.retry.is_some() {
                problems.push(Problem::new(
                    hedge.span(),
                    format!("routes[{i}]: give retry or hedge, not both (a hedged call is already sent more than once)"),
                ));
            }
            checked(problems, hedge.get_ref().compile(i, hedge.span()))
        });
        let rate_limit = self
            .rate_limit
            .as_ref()
            .and_then(|limit| checked(problems, limit.get_ref().compile(i, limit.span())));
        if let Some(max) = self
            .max_in_flight_per_peer
            .as_ref()
            .filter(|m| *m.get_ref() == 0)
        {
            problems.push(Problem::new(
                max.span(),
                format!("routes[{i}].max_in_flight_per_peer: 0 would refuse every call"),
            ));
        }
        if let Some(mirror) = &self.mirror {
            mirror.get_ref().check(i, mirror.span(), problems);
        }
        let fan_out = self.fan_out.as_ref().and_then(|fan| {
            if self.retry.is_some() || self.hedge.is_some() {
                problems.push(Problem::new(
                    fan.span(),
                    format!("routes[{i}]: fan_out sends each call once to each cluster; leave out retry and hedge"),
                ));
            }
            checked(
                problems,
                fan.get_ref()
                    .compile(i, self.cluster.get_ref(), fan.span()),
            )
        });
        if problems.len() > before {
            return None;
        }
        Some(CompiledRoute {
            name: self.name.clone().unwrap_or_else(|| format!("route-{i}")),
            service,
            method: m.method.clone(),
            path_prefix: m.path_prefix.clone(),
            headers,
            cluster: self.cluster.get_ref().clone(),
            max_timeout: self.max_timeout.as_ref().map(|t| t.get_ref().0),
            default_timeout: self.default_timeout.as_ref().map(|t| t.get_ref().0),
            authority,
            x_forwarded_for: self.x_forwarded_for,
            request_edits: request_edits?,
            response_edits: Some(Arc::new(response_edits?)).filter(|e| !e.is_empty()),
            retry,
            hedge,
            rate_limit,
            max_in_flight_per_peer: self.max_in_flight_per_peer.as_ref().map(|m| *m.get_ref()),
            mirror: self.mirror.as_ref().map(|m| m.get_ref().clone()),
            fan_out,
        })
    }
}

impl MetadataEdits {
    /// The edits as the proxy applies them, or the first problem with them (`field` names
    /// them in it).
    fn compile(&self, field: &str) -> Result<HeaderEdits, Problem> {
        let mut set_entries = Vec::new();
        if let Some(set) = &self.set {
            for (key, value) in set.get_ref() {
                set_entries.push(metadata_entry(key, value).map_err(|why| {
                    Problem::new(
                        set.span(),
                        format!("{field}.set: {key:?} = {value:?}: {why}"),
                    )
                })?);
            }
        }
        let mut edits = HeaderEdits::default();
        if let Some(remove) = &self.remove {
            for key in remove.get_ref() {
                let name = HeaderName::from_bytes(key.as_bytes()).map_err(|_| {
                    Problem::new(
                        remove.span(),
                        format!("{field}.remove: {key:?} is not a valid metadata key"),
                    )
                })?;
                edits = edits.remove(name);
            }
        }
        for (name, value) in set_entries {
            edits = edits.set(name, value);
        }
        Ok(edits)
    }
}

/// `key = value` as metadata to set on requests or responses, or why it may not be.
fn metadata_entry(key: &str, value: &str) -> Result<(HeaderName, HeaderValue), &'static str> {
    let Ok(name) = HeaderName::from_bytes(key.as_bytes()) else {
        return Err("not a valid metadata key (lowercase letters, digits, - _ .)");
    };
    match name.as_str() {
        "grpc-timeout" => {
            return Err("reserved: the proxy sends the call's deadline; set routes' max_timeout or default_timeout instead")
        }
        name if name.starts_with("grpc-") => return Err("reserved: grpc- keys belong to gRPC itself"),
        _ => {}
    }
    let value =
        HeaderValue::from_str(value).map_err(|_| "not a valid metadata value (visible ASCII)")?;
    Ok((name, value))
}

#[cfg(test)]
mod tests {
    use super::glob;

    #[test]
    fn globs_match_whole_names() {
        assert!(glob("shop.*").is_match("shop.Users"));
        assert!(!glob("shop.*").is_match("shopX.Users"));
        assert!(glob("*.Health").is_match("grpc.health.v1.Health"));
        assert!(glob("a.B").is_match("a.B"));
        assert!(!glob("a.B").is_match("a.BC"));
    }
}
