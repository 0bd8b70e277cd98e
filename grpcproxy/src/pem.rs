//! PEM inputs: certificate chains and private keys, for client and server TLS alike.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A PEM input held no usable certificate or key.
#[derive(Debug)]
pub(crate) struct PemError {
    pub(crate) what: &'static str,
    pub(crate) reason: String,
}

/// Every certificate in `pem` (at least one); `what` names the input in errors.
pub(crate) fn certificates(
    pem: &[u8],
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PemError {
            what,
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(PemError {
            what,
            reason: "no CERTIFICATE block found".into(),
        });
    }
    Ok(certs)
}

/// The private key in `pem`.
pub(crate) fn private_key(
    pem: &[u8],
    what: &'static str,
) -> Result<PrivateKeyDer<'static>, PemError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| PemError {
        what,
        reason: e.to_string(),
    })
}
