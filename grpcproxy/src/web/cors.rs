//! Cross-origin access for browsers: which pages may call, what a preflight is told, and
//! which response headers a page may read.

use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// The request headers a gRPC-Web client sends: always allowed.
const REQUIRED_ALLOW_HEADERS: [&str; 5] = [
    "content-type",
    "x-grpc-web",
    "x-user-agent",
    "grpc-timeout",
    "grpc-accept-encoding",
];

/// The response headers a gRPC-Web page must be able to read (a trailers-only answer
/// carries the status in them): always exposed.
const REQUIRED_EXPOSE_HEADERS: [&str; 3] =
    ["grpc-status", "grpc-message", "grpc-status-details-bin"];

/// A listener's CORS policy: the origins whose pages may call it, and what a preflight
/// answers. Without one, preflights are refused (403) and responses carry no CORS headers.
///
/// The headers gRPC-Web needs are always allowed (`content-type`, `x-grpc-web`,
/// `x-user-agent`, `grpc-timeout`, `grpc-accept-encoding`) and exposed (`grpc-status`,
/// `grpc-message`, `grpc-status-details-bin`); the lists here add to them.
///
/// ```
/// use std::time::Duration;
/// use grpcproxy::web::Cors;
///
/// let cors = Cors::allow_origins(["https://app.example"])
///     .unwrap()
///     .allow_headers(["authorization"])
///     .unwrap()
///     .expose_headers(["x-request-id"])
///     .unwrap()
///     .max_age(Duration::from_secs(600));
/// assert!(cors.allows("https://app.example"));
/// assert!(!cors.allows("https://evil.example"));
/// assert!(Cors::allow_any_origin().allows("https://anyone.example"));
/// ```
#[derive(Debug, Clone)]
pub struct Cors {
    origins: Origins,
    allow_headers: Vec<HeaderName>,
    expose_headers: Vec<HeaderName>,
    max_age: Option<Duration>,
}

#[derive(Debug, Clone)]
enum Origins {
    Any,
    Exact(Vec<HeaderValue>),
}

/// A header name or origin that a CORS policy cannot carry.
///
/// ```
/// use grpcproxy::web::Cors;
///
/// let error = Cors::allow_origins(["https://app.example/"]).unwrap_err();
/// assert!(error.to_string().contains("https://app.example/"));
/// ```
#[derive(Debug, thiserror::Error)]
pub enum CorsError {
    /// An origin is `scheme://host[:port]`, nothing more (no path, not even `/`).
    #[error("invalid origin {0:?}: expected scheme://host[:port], e.g. https://app.example")]
    Origin(String),
    /// Not a valid HTTP header name.
    #[error("invalid header name {0:?}")]
    HeaderName(String),
}

impl Cors {
    /// Pages from any origin may call (`access-control-allow-origin: *`).
    pub fn allow_any_origin() -> Self {
        Self::with(Origins::Any)
    }

    /// Pages from exactly these origins (`https://app.example`, compared byte for byte)
    /// may call; `*` among them allows any.
    pub fn allow_origins<I, T>(origins: I) -> Result<Self, CorsError>
    where
        I: IntoIterator<Item = T>,
        T: AsRef<str>,
    {
        let mut exact = Vec::new();
        for origin in origins {
            let origin = origin.as_ref();
            if origin == "*" {
                return Ok(Self::allow_any_origin());
            }
            exact.push(parse_origin(origin)?);
        }
        Ok(Self::with(Origins::Exact(exact)))
    }

    fn with(origins: Origins) -> Self {
        Self {
            origins,
            allow_headers: Vec::new(),
            expose_headers: Vec::new(),
            max_age: None,
        }
    }

    /// More request headers pages may send (metadata such as `authorization`).
    pub fn allow_headers<I, T>(mut self, names: I) -> Result<Self, CorsError>
    where
        I: IntoIterator<Item = T>,
        T: AsRef<str>,
    {
        self.allow_headers.extend(header_names(names)?);
        Ok(self)
    }

    /// More response headers pages may read.
    pub fn expose_headers<I, T>(mut self, names: I) -> Result<Self, CorsError>
    where
        I: IntoIterator<Item = T>,
        T: AsRef<str>,
    {
        self.expose_headers.extend(header_names(names)?);
        Ok(self)
    }

    /// How long a browser may cache a preflight's answer (`access-control-max-age`).
    pub fn max_age(mut self, max_age: Duration) -> Self {
        self.max_age = Some(max_age);
        self
    }

    /// Whether a page from `origin` may call.
    pub fn allows(&self, origin: &str) -> bool {
        match &self.origins {
            Origins::Any => true,
            Origins::Exact(list) => list.iter().any(|allowed| allowed == origin),
        }
    }

    pub(super) fn compile(self) -> CompiledCors {
        let join = |required: &[&str], extra: &[HeaderName]| {
            let mut names: Vec<&str> = required.to_vec();
            for name in extra {
                if !names.contains(&name.as_str()) {
                    names.push(name.as_str());
                }
            }
            HeaderValue::try_from(names.join(", ")).expect("header names make a header value")
        };
        CompiledCors {
            allow_headers: join(&REQUIRED_ALLOW_HEADERS, &self.allow_headers),
            expose_headers: join(&REQUIRED_EXPOSE_HEADERS, &self.expose_headers),
            max_age: self.max_age.map(|age| HeaderValue::from(age.as_secs())),
            policy: self,
        }
    }
}

fn parse_origin(origin: &str) -> Result<HeaderValue, CorsError> {
    let invalid = || CorsError::Origin(origin.to_owned());
    let (scheme, rest) = origin.split_once("://").ok_or_else(invalid)?;
    let host_ok = !rest.is_empty()
        && rest
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'));
    if scheme.is_empty() || !scheme.bytes().all(|b| b.is_ascii_alphabetic()) || !host_ok {
        return Err(invalid());
    }
    HeaderValue::try_from(origin).map_err(|_| invalid())
}

fn header_names<I, T>(names: I) -> Result<Vec<HeaderName>, CorsError>
where
    I: IntoIterator<Item = T>,
    T: AsRef<str>,
{
    names
        .into_iter()
        .map(|name| {
            let name = name.as_ref();
            HeaderName::try_from(name).map_err(|_| CorsError::HeaderName(name.to_owned()))
        })
        .collect()
}

/// A policy with its header values made once.
#[derive(Debug)]
pub(super) struct CompiledCors {
    policy: Cors,
    allow_headers: HeaderValue,
    expose_headers: HeaderValue,
    max_age: Option<HeaderValue>,
}

/// What CORS says of one request.
pub(super) enum Verdict {
    /// No `origin` header: not a browser's cross-origin call; no CORS headers.
    NoOrigin,
    /// The origin may call: these headers go on the answer.
    Allowed(Allowed),
    /// The origin may not call (or no policy allows any).
    Refused(HeaderValue),
}

/// The CORS headers an allowed call's answer carries.
#[derive(Debug, Clone)]
pub(super) struct Allowed {
    origin: HeaderValue,
    cors: Arc<CompiledCors>,
}

impl Allowed {
    /// Adds `access-control-allow-origin`, `-expose-headers` and `vary`.
    pub(super) fn apply(&self, headers: &mut HeaderMap) {
        let any = matches!(self.cors.policy.origins, Origins::Any);
        let origin = if any {
            HeaderValue::from_static("*")
        } else {
            self.origin.clone()
        };
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        headers.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            self.cors.expose_headers.clone(),
        );
        if !any {
            headers.append(header::VARY, HeaderValue::from_static("origin"));
        }
    }

    /// The headers of a preflight's answer.
    pub(super) fn preflight(&self, headers: &mut HeaderMap) {
        self.apply(headers);
        headers.remove(header::ACCESS_CONTROL_EXPOSE_HEADERS);
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("POST, OPTIONS"),
        );
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            self.cors.allow_headers.clone(),
        );
        if let Some(max_age) = &self.cors.max_age {
            headers.insert(header::ACCESS_CONTROL_MAX_AGE, max_age.clone());
        }
    }
}

/// Judges a request's `origin` against `cors`.
pub(super) fn check(cors: Option<&Arc<CompiledCors>>, headers: &HeaderMap) -> Verdict {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Verdict::NoOrigin;
    };
    match cors {
        Some(cors)
            if origin
                .to_str()
                .is_ok_and(|origin| cors.policy.allows(origin)) =>
        {
            Verdict::Allowed(Allowed {
                origin: origin.clone(),
                cors: cors.clone(),
            })
        }
        _ => Verdict::Refused(origin.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(value: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::ORIGIN, HeaderValue::from_static(value));
        headers
    }

    #[test]
    fn exact_origins_are_compared_byte_for_byte() {
        let cors = Arc::new(
            Cors::allow_origins(["https://app.example"])
                .unwrap()
                .compile(),
        );
        assert!(matches!(
            check(Some(&cors), &origin("https://app.example")),
            Verdict::Allowed(_)
        ));
        for other in [
            "https://app.example:443",
            "http://app.example",
            "https://APP.example",
        ] {
            let headers =
                HeaderMap::from_iter([(header::ORIGIN, HeaderValue::from_str(other).unwrap())]);
            assert!(
                matches!(check(Some(&cors), &headers), Verdict::Refused(_)),
                "{other}"
            );
        }
        assert!(matches!(
            check(Some(&cors), &HeaderMap::new()),
            Verdict::NoOrigin
        ));
        assert!(matches!(
            check(None, &origin("https://app.example")),
            Verdict::Refused(_)
        ));
    }

    #[test]
    fn answers_carry_the_required_headers_and_the_configured_ones() {
        let cors = Arc::new(
            Cors::allow_origins(["https://app.example"])
                .unwrap()
                .allow_headers(["authorization", "content-type"])
                .unwrap()
                .expose_headers(["x-request-id"])
                .unwrap()
                .max_age(Duration::from_secs(600))
                .compile(),
        );
        let Verdict::Allowed(allowed) = check(Some(&cors), &origin("https://app.example")) else {
            panic!("refused");
        };
        let mut headers = HeaderMap::new();
        allowed.preflight(&mut headers);
        assert_eq!(
            headers["access-control-allow-origin"],
            "https://app.example"
        );
        assert_eq!(
            headers["access-control-allow-headers"],
            "content-type, x-grpc-web, x-user-agent, grpc-timeout, grpc-accept-encoding, authorization"
        );
        assert_eq!(headers["access-control-max-age"], "600");
        assert_eq!(headers["vary"], "origin");
        let mut headers = HeaderMap::new();
        allowed.apply(&mut headers);
        assert_eq!(
            headers["access-control-expose-headers"],
            "grpc-status, grpc-message, grpc-status-details-bin, x-request-id"
        );
    }

    #[test]
    fn origins_must_be_scheme_and_host() {
        for bad in [
            "app.example",
            "https://app.example/",
            "https://",
            "https://a b",
            "",
        ] {
            assert!(Cors::allow_origins([bad]).is_err(), "{bad:?}");
        }
        assert!(Cors::allow_origins(["http://127.0.0.1:8080", "http://[::1]:80"]).is_ok());
        assert!(Cors::allow_headers(Cors::allow_any_origin(), ["bad header"]).is_err());
    }
}
