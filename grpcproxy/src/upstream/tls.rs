//! TLS origination towards backends (rustls, ring).

use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

use super::UpstreamConfigError;

/// Root certificates a TLS upstream trusts.
#[derive(Debug, Clone, Default)]
pub(crate) enum Roots {
    /// The operating system's store.
    #[default]
    System,
    /// Only these CA certificates.
    Custom(Vec<CertificateDer<'static>>),
}

pub(crate) fn parse_certificates(
    pem: &[u8],
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, UpstreamConfigError> {
    Ok(crate::pem::certificates(pem, what)?)
}

pub(crate) fn parse_private_key(pem: &[u8]) -> Result<PrivateKeyDer<'static>, UpstreamConfigError> {
    Ok(crate::pem::private_key(pem, "client private key")?)
}

/// Builds the client config: TLS 1.2+ with rustls' safe defaults, ALPN `h2`.
pub(crate) fn client_config(
    roots: &Roots,
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
) -> Result<Arc<ClientConfig>, UpstreamConfigError> {
    let mut store = RootCertStore::empty();
    match roots {
        Roots::System => {
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                // A store may hold certificates rustls cannot use; skip those like browsers do.
                let _ = store.add(cert);
            }
            if store.is_empty() {
                return Err(UpstreamConfigError::InvalidPem {
                    what: "system root certificates",
                    reason: "none could be loaded; give a CA bundle instead".into(),
                });
            }
        }
        Roots::Custom(certs) => {
            for cert in certs {
                store.add(cert.clone())?;
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(store);
    let mut config = match identity {
        Some((chain, key)) => builder.with_client_auth_cert(chain, key)?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}
