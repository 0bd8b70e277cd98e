//! How failures on the way to and from a backend become gRPC statuses.

use std::error::Error as StdError;

use h2::Reason;
use tonic::{Code, Status};

/// The gRPC code for a stream reset with `reason`, per the gRPC HTTP/2 spec
/// ("Errors" in PROTOCOL-HTTP2.md).
///
/// ```
/// use grpcproxy::status::code_for_reset;
/// use tonic::Code;
///
/// assert_eq!(code_for_reset(h2::Reason::CANCEL), Code::Cancelled);
/// assert_eq!(code_for_reset(h2::Reason::REFUSED_STREAM), Code::Unavailable);
/// ```
pub fn code_for_reset(reason: Reason) -> Code {
    match reason {
        Reason::REFUSED_STREAM => Code::Unavailable,
        Reason::CANCEL => Code::Cancelled,
        Reason::ENHANCE_YOUR_CALM => Code::ResourceExhausted,
        Reason::INADEQUATE_SECURITY => Code::PermissionDenied,
        _ => Code::Internal,
    }
}

/// True when `headers` carry a non-OK `grpc-status`.
pub(crate) fn is_error_status(headers: &http::HeaderMap) -> bool {
    headers
        .get(crate::headers::GRPC_STATUS)
        .is_some_and(|status| status.as_bytes() != b"0")
}

/// The status for an error from a backend stream or connection, naming the backend.
///
/// A stream reset maps per the spec; a lost connection or GOAWAY is `UNAVAILABLE`.
pub(crate) fn status_from_upstream_error(err: &(dyn StdError + 'static), backend: &str) -> Status {
    let mut cause = Some(err);
    while let Some(e) = cause {
        if let Some(h2) = e.downcast_ref::<h2::Error>() {
            if let Some(reason) = h2.reason() {
                if h2.is_go_away() && h2.is_library() {
                    // h2 itself closed the connection: the backend broke one of its limits.
                    return Status::unavailable(format!(
                        "the proxy closed its connection to backend {backend} (GOAWAY {reason})"
                    ));
                }
                if h2.is_go_away() {
                    return Status::unavailable(format!(
                        "backend {backend} closed the connection (GOAWAY {reason})"
                    ));
                }
                if h2.is_reset() {
                    return Status::new(
                        code_for_reset(reason),
                        format!("backend {backend} reset the stream ({reason})"),
                    );
                }
            }
            if h2.is_io() {
                let hint = tls_hint(h2).map(|h| format!(" ({h})")).unwrap_or_default();
                return Status::unavailable(format!(
                    "connection to backend {backend} lost: {h2}{hint}"
                ));
            }
        }
        if let Some(status) = e.downcast_ref::<Status>() {
            return status.clone();
        }
        cause = e.source();
    }
    Status::unavailable(format!("backend {backend} failed: {}", DisplayChain(err)))
}

/// What a TLS alert from the backend means for its operator, when the error chain holds
/// one about client certificates (rustls only names the alert). Read from the text: h2
/// keeps an I/O error's message, not the rustls error inside it.
pub(crate) fn tls_hint(err: &(dyn StdError + 'static)) -> Option<&'static str> {
    const REQUIRED: &str = "the backend requires a client certificate: give the cluster tls.cert and tls.key (Upstream::builder().client_identity_pem)";
    const REFUSED: &str = "the backend refused the proxy's client certificate";
    let text = DisplayChain(err).to_string();
    let alert = text.split("received fatal alert: ").nth(1)?;
    let alert = alert.split(|c: char| !c.is_ascii_alphanumeric()).next()?;
    match alert {
        "CertificateRequired" | "HandshakeFailure" => Some(REQUIRED),
        "BadCertificate"
        | "UnknownCA"
        | "CertificateUnknown"
        | "CertificateExpired"
        | "CertificateRevoked"
        | "UnsupportedCertificate"
        | "AccessDenied" => Some(REFUSED),
        _ => None,
    }
}

/// The reset reason a body error carries: the peer's own reset reason (CANCEL when the
/// proxy ended the call), CANCEL when the peer's connection is gone (the caller left),
/// else INTERNAL_ERROR.
pub(crate) fn reset_reason(error: &(dyn StdError + 'static)) -> Reason {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if let Some(h2) = e.downcast_ref::<h2::Error>() {
            if let Some(reason) = h2.reason() {
                return reason;
            }
            if h2.is_io() {
                return Reason::CANCEL;
            }
        }
        cause = e.source();
    }
    Reason::INTERNAL_ERROR
}

/// Displays an error with its causes, `outer: inner: innermost`.
pub(crate) struct DisplayChain<'a>(pub(crate) &'a (dyn StdError + 'static));

impl std::fmt::Display for DisplayChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(e) = cause {
            write!(f, ": {e}")?;
            cause = e.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_reasons_map_per_spec() {
        for (reason, code) in [
            (Reason::NO_ERROR, Code::Internal),
            (Reason::PROTOCOL_ERROR, Code::Internal),
            (Reason::INTERNAL_ERROR, Code::Internal),
            (Reason::FLOW_CONTROL_ERROR, Code::Internal),
            (Reason::FRAME_SIZE_ERROR, Code::Internal),
            (Reason::REFUSED_STREAM, Code::Unavailable),
            (Reason::CANCEL, Code::Cancelled),
            (Reason::COMPRESSION_ERROR, Code::Internal),
            (Reason::CONNECT_ERROR, Code::Internal),
            (Reason::ENHANCE_YOUR_CALM, Code::ResourceExhausted),
            (Reason::INADEQUATE_SECURITY, Code::PermissionDenied),
        ] {
            assert_eq!(code_for_reset(reason), code, "{reason:?}");
        }
    }

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] Box<dyn StdError + Send + Sync>);

    #[test]
    fn resets_carry_the_reason_found_in_the_error_chain() {
        let cancel = Outer(Box::new(h2::Error::from(Reason::CANCEL)));
        assert_eq!(reset_reason(&cancel), Reason::CANCEL);
        let io = Outer(Box::new(std::io::Error::other("gone")));
        assert_eq!(reset_reason(&io), Reason::INTERNAL_ERROR);
    }
}
