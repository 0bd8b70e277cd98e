//! Which request headers cross the proxy, and which never do.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// `grpc-status`, looked up by name without parsing a string at every call.
pub(crate) const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
/// `grpc-message`.
pub(crate) const GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");
/// `grpc-timeout`.
pub(crate) const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

/// Whether `name` belongs to one hop and is never forwarded (RFC 9110 §7.6.1, RFC 9113
/// §8.2.2; `te` is judged by its value). Matched by spelling: a switch on the length and
/// one comparison, where comparing `HeaderName`s would compare each with every one.
fn is_hop_by_hop(name: &str) -> bool {
    matches!(
        name,
        "connection" | "keep-alive" | "proxy-connection" | "transfer-encoding" | "upgrade" | "host"
    )
}

/// Removes hop-by-hop headers in place, keeping `te: trailers` (gRPC requires it).
///
/// Headers that a `connection` header names are hop-by-hop too and are removed.
///
/// ```
/// use http::HeaderMap;
/// use grpcproxy::headers::strip_hop_by_hop;
///
/// let mut headers = HeaderMap::new();
/// headers.insert("te", "trailers".parse().unwrap());
/// headers.insert("connection", "x-private".parse().unwrap());
/// headers.insert("x-private", "1".parse().unwrap());
/// headers.insert("x-user", "alice".parse().unwrap());
/// strip_hop_by_hop(&mut headers);
/// assert_eq!(headers.len(), 2);
/// assert_eq!(headers["te"], "trailers");
/// assert_eq!(headers["x-user"], "alice");
/// ```
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    strip_hop_by_hop_reading(headers, None, |_| ());
}

/// Removes hop-by-hop headers as [`strip_hop_by_hop`] does and gives the first value of
/// `wanted` (a name that is not hop-by-hop), read with `read` in the same pass over the
/// fields, before anything is removed.
pub(crate) fn strip_hop_by_hop_reading<T>(
    headers: &mut HeaderMap,
    wanted: Option<&HeaderName>,
    read: impl FnOnce(&HeaderValue) -> T,
) -> Option<T> {
    // One pass over the fields first: a well-formed gRPC request has nothing to remove,
    // and looking each hop-by-hop name up would hash it.
    let (mut clean, mut read, mut value) = (true, Some(read), None);
    for (name, field) in headers.iter() {
        match name.as_str() {
            "te" => clean &= field.as_bytes().eq_ignore_ascii_case(b"trailers"),
            hop if is_hop_by_hop(hop) => clean = false,
            other if wanted.is_some_and(|wanted| wanted.as_str() == other) => {
                value = read.take().map(|read| read(field));
            }
            _ => {}
        }
    }
    if !clean {
        remove_hop_by_hop(headers);
    }
    value
}

/// Removes the hop-by-hop fields `headers` has.
fn remove_hop_by_hop(headers: &mut HeaderMap) {
    if let Some(connection) = headers.remove(header::CONNECTION) {
        let named: Vec<HeaderName> = connection
            .to_str()
            .unwrap_or_default()
            .split(',')
            .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
            .collect();
        for name in named {
            if name != header::TE {
                headers.remove(name);
            }
        }
    }
    let hop_by_hop: Vec<HeaderName> = headers
        .keys()
        .filter(|name| is_hop_by_hop(name.as_str()))
        .cloned()
        .collect();
    for name in hop_by_hop {
        headers.remove(name);
    }
    if !te_is_trailers(headers) {
        headers.remove(header::TE);
    }
}

/// True when every `te` value is `trailers` (or there is none).
fn te_is_trailers(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::TE)
        .iter()
        .all(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"))
}

/// Appends `ip` to `x-forwarded-for` (`existing, ip`), or sets it.
///
/// ```
/// let mut headers = http::HeaderMap::new();
/// grpcproxy::headers::append_forwarded_for(&mut headers, [10, 0, 0, 1].into());
/// grpcproxy::headers::append_forwarded_for(&mut headers, [10, 0, 0, 2].into());
/// assert_eq!(headers["x-forwarded-for"], "10.0.0.1, 10.0.0.2");
/// ```
pub fn append_forwarded_for(headers: &mut HeaderMap, ip: std::net::IpAddr) {
    const X_FORWARDED_FOR: http::HeaderName = http::HeaderName::from_static("x-forwarded-for");
    let value = match headers.get(X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(existing) => format!("{existing}, {ip}"),
        None => ip.to_string(),
    };
    if let Ok(value) = HeaderValue::try_from(value) {
        headers.insert(X_FORWARDED_FOR, value);
    }
}

/// True for the content types gRPC uses: `application/grpc`, `application/grpc+proto`,
/// `application/grpc;...` (not `application/grpc-web`, which needs a translating proxy).
///
/// ```
/// use grpcproxy::headers::is_grpc_content_type;
///
/// assert!(is_grpc_content_type(&"application/grpc+proto".parse().unwrap()));
/// assert!(!is_grpc_content_type(&"application/grpc-web".parse().unwrap()));
/// assert!(!is_grpc_content_type(&"application/json".parse().unwrap()));
/// ```
pub fn is_grpc_content_type(value: &HeaderValue) -> bool {
    let bytes = value.as_bytes();
    const PREFIX: &[u8] = b"application/grpc";
    bytes.len() >= PREFIX.len()
        && bytes[..PREFIX.len()].eq_ignore_ascii_case(PREFIX)
        && matches!(bytes.get(PREFIX.len()), None | Some(b'+' | b';'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn te_other_than_trailers_is_dropped() {
        let mut headers = HeaderMap::new();
        headers.insert(header::TE, HeaderValue::from_static("gzip"));
        strip_hop_by_hop(&mut headers);
        assert!(headers.is_empty());
    }

    #[test]
    fn every_te_value_is_checked_not_only_the_first() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        headers.append(header::TE, HeaderValue::from_static("Trailers"));
        headers.append(header::TE, HeaderValue::from_static("gzip"));
        strip_hop_by_hop(&mut headers);
        assert!(!headers.contains_key(header::TE));
        assert_eq!(headers.len(), 1);

        // `trailers` in any case, however often, is kept as it is.
        let mut headers = HeaderMap::new();
        headers.append(header::TE, HeaderValue::from_static("TRAILERS"));
        headers.append(header::TE, HeaderValue::from_static("trailers"));
        strip_hop_by_hop(&mut headers);
        let kept: Vec<_> = headers.get_all(header::TE).iter().collect();
        assert_eq!(kept, ["TRAILERS", "trailers"]);
    }

    #[test]
    fn grpc_metadata_survives() {
        let mut headers = HeaderMap::new();
        for (k, v) in [
            ("content-type", "application/grpc"),
            ("grpc-timeout", "1S"),
            ("grpc-encoding", "gzip"),
            ("user-agent", "test"),
            ("x-bin", "AAE="),
        ] {
            headers.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        let before = headers.clone();
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers, before);
    }

    /// Every hop-by-hop name, as RFC 9110 §7.6.1 and RFC 9113 §8.2.2 list them.
    const HOP_BY_HOP: [&str; 6] = [
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "upgrade",
        "host",
    ];

    #[test]
    fn hop_by_hop_headers_are_removed() {
        let mut headers = HeaderMap::new();
        for name in HOP_BY_HOP {
            headers.insert(HeaderName::from_static(name), HeaderValue::from_static("x"));
        }
        strip_hop_by_hop(&mut headers);
        assert!(headers.is_empty(), "{headers:?}");
    }

    #[test]
    fn one_hop_by_hop_header_among_grpc_metadata_is_removed() {
        for name in HOP_BY_HOP.into_iter().chain(["te"]) {
            let name = HeaderName::from_static(name);
            let mut headers = HeaderMap::new();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/grpc"),
            );
            headers.insert("x-user", HeaderValue::from_static("alice"));
            headers.insert(name.clone(), HeaderValue::from_static("x"));
            strip_hop_by_hop(&mut headers);
            assert_eq!(headers.len(), 2, "{name} kept: {headers:?}");
            assert!(!headers.contains_key(&name), "{name} kept");
        }
    }
}
