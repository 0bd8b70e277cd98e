//! Errors from configuring or reaching an upstream.

use std::error::Error as StdError;
use std::sync::Arc;

use tonic::Status;

use crate::status::{status_from_upstream_error, DisplayChain};

use crate::boxed::BoxError;

/// An upstream could not be configured.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UpstreamConfigError {
    /// The URL did not parse or has no host.
    #[error("invalid upstream URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The URL's scheme is neither `http` (h2c) nor `https`.
    #[error("upstream URL {url:?} must start with http:// (h2c) or https:// (TLS)")]
    UnsupportedScheme {
        /// The URL as given.
        url: String,
    },
    /// A PEM input held no usable certificate or key.
    #[error("{what}: {reason}")]
    InvalidPem {
        /// Which input (CA bundle, client certificate, client key).
        what: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The TLS server name is not a valid DNS name or IP address.
    #[error("invalid TLS server name {0:?}")]
    InvalidServerName(String),
    /// rustls rejected the TLS configuration.
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    /// TLS options were given for a plaintext (`http://`) upstream.
    #[error("TLS options need an https:// upstream")]
    TlsOnPlaintext,
}

impl From<crate::pem::PemError> for UpstreamConfigError {
    fn from(e: crate::pem::PemError) -> Self {
        UpstreamConfigError::InvalidPem {
            what: e.what,
            reason: e.reason,
        }
    }
}

/// What went wrong while reaching a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum UpstreamErrorKind {
    /// The TCP connection could not be made (refused, unreachable, DNS).
    Connect,
    /// Connecting took longer than the connect timeout.
    ConnectTimeout,
    /// The TLS handshake failed.
    Tls,
    /// The HTTP/2 handshake failed.
    Handshake,
    /// The request failed on an established connection.
    Request,
}

/// An error reaching a backend; [`UpstreamError::to_status`] says what the client gets.
///
/// Cheap to clone: one connect failure is handed to every call that waited for it.
#[derive(Debug, Clone)]
pub struct UpstreamError {
    backend: Arc<str>,
    kind: UpstreamErrorKind,
    source: Option<Arc<dyn StdError + Send + Sync>>,
}

impl UpstreamError {
    pub(crate) fn new(
        backend: Arc<str>,
        kind: UpstreamErrorKind,
        source: impl Into<BoxError>,
    ) -> Self {
        Self {
            backend,
            kind,
            source: Some(Arc::from(source.into())),
        }
    }

    pub(crate) fn timeout(backend: Arc<str>) -> Self {
        Self {
            backend,
            kind: UpstreamErrorKind::ConnectTimeout,
            source: None,
        }
    }

    /// What went wrong.
    pub fn kind(&self) -> UpstreamErrorKind {
        self.kind
    }

    /// The backend, as `host:port`.
    pub fn backend(&self) -> &str {
        &self.backend
    }

    /// The status the client receives: `UNAVAILABLE` naming the backend for connection
    /// failures, the spec's mapping for stream resets.
    pub fn to_status(&self) -> Status {
        match (&self.kind, &self.source) {
            (UpstreamErrorKind::Request, Some(source)) => {
                status_from_upstream_error(source.as_ref(), &self.backend)
            }
            _ => Status::unavailable(self.to_string()),
        }
    }
}

impl std::fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match self.kind {
            UpstreamErrorKind::Connect => "cannot connect to backend",
            UpstreamErrorKind::ConnectTimeout => "timed out connecting to backend",
            UpstreamErrorKind::Tls => "TLS handshake failed with backend",
            UpstreamErrorKind::Handshake => "HTTP/2 handshake failed with backend",
            UpstreamErrorKind::Request => "request failed at backend",
        };
        write!(f, "{what} {}", self.backend)?;
        if let Some(source) = &self.source {
            let source: &(dyn StdError + 'static) = source.as_ref();
            write!(f, ": {}", DisplayChain(source))?;
            if let Some(hint) = crate::status::tls_hint(source) {
                write!(f, " ({hint})")?;
            }
        }
        Ok(())
    }
}

impl StdError for UpstreamError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn StdError + 'static))
    }
}
