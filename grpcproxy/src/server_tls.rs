//! TLS termination for [`server::serve`](crate::server::serve): rustls, ALPN `h2`, optional
//! client certificate verification.

use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

/// A TLS server configuration could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerTlsError {
    /// A PEM input held no usable certificate or key.
    #[error("{what}: {reason}")]
    InvalidPem {
        /// Which input.
        what: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// rustls rejected the certificate, key or CA.
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    /// The client CA bundle cannot verify clients.
    #[error("client CA: {0}")]
    ClientVerifier(#[from] rustls::server::VerifierBuilderError),
}

impl From<crate::pem::PemError> for ServerTlsError {
    fn from(e: crate::pem::PemError) -> Self {
        ServerTlsError::InvalidPem {
            what: e.what,
            reason: e.reason,
        }
    }
}

/// A server TLS configuration: TLS 1.2 and 1.3 with rustls' safe defaults (ring), ALPN
/// `h2`, and — when `client_ca_pem` is given — required client certificates signed by it.
///
/// ```no_run
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let config = grpcproxy::server::tls_config(
///     &std::fs::read("server.pem")?,
///     &std::fs::read("server.key")?,
///     Some(&std::fs::read("clients-ca.pem")?),
/// )?;
/// # Ok(()) }
/// ```
pub fn tls_config(
    cert_pem: &[u8],
    key_pem: &[u8],
    client_ca_pem: Option<&[u8]>,
) -> Result<Arc<ServerConfig>, ServerTlsError> {
    let chain = crate::pem::certificates(cert_pem, "server certificate")?;
    let key = crate::pem::private_key(key_pem, "server private key")?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = match client_ca_pem {
        Some(pem) => {
            let mut roots = RootCertStore::empty();
            for cert in crate::pem::certificates(pem, "client CA")? {
                roots.add(cert)?;
            }
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider).build()?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}
