//! Server URLs as they may be shown in logs and the admin page: without secrets.

/// The text `redact_url` puts where a secret was.
const REDACTED: &str = "<redacted>";

/// A server URL (or comma-separated list) as it may be shown: a password replaced, and a
/// user given alone (NATS reads it as a token) replaced.
///
/// ```
/// use grpcproxy::mq::redact_url;
/// assert_eq!(redact_url("nats://alice:S3cret@127.0.0.1:4222"), "nats://alice:<redacted>@127.0.0.1:4222");
/// assert_eq!(redact_url("nats://t0ken@nats:4222,nats://b:4222"), "nats://<redacted>@nats:4222,nats://b:4222");
/// assert_eq!(redact_url("nats://127.0.0.1:4222"), "nats://127.0.0.1:4222");
/// ```
pub fn redact_url(urls: &str) -> String {
    urls.split(',')
        .map(|url| {
            let Some((scheme, rest)) = url.split_once("://") else {
                return url.to_owned();
            };
            let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
            let Some(at) = authority.rfind('@') else {
                return url.to_owned();
            };
            let shown = match authority[..at].split_once(':') {
                Some((user, _)) => format!("{user}:{REDACTED}"),
                None => REDACTED.to_owned(),
            };
            format!("{scheme}://{shown}@{}", &rest[at + 1..])
        })
        .collect::<Vec<_>>()
        .join(",")
}
