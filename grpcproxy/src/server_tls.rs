//! TLS termination for [`server::serve`](crate::server::serve): rustls, ALPN `h2`, optional
//! client certificate verification.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
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

fn certificates(
    pem: &[u8],
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, ServerTlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ServerTlsError::InvalidPem {
            what,
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(ServerTlsError::InvalidPem {
            what,
            reason: "no CERTIFICATE block found".into(),
        });
    }
    Ok(certs)
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
    let chain = certificates(cert_pem, "server certificate")?;
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| ServerTlsError::InvalidPem {
        what: "server private key",
        reason: e.to_string(),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = match client_ca_pem {
        Some(pem) => {
            let mut roots = RootCertStore::empty();
            for cert in certificates(pem, "client CA")? {
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
