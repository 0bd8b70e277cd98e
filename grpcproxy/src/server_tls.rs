//! TLS termination for [`server::serve`](crate::server::serve): rustls, ALPN `h2`, optional
//! client certificate verification, and certificates that can be replaced while serving.

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
    /// A reload would turn client certificate verification on or off, which only a new
    /// configuration can.
    #[error("requiring client certificates or not is fixed until restart")]
    ClientAuthFixed,
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
        Some(pem) => builder.with_client_cert_verifier(client_verifier(pem, &provider)?),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// A server TLS configuration whose certificate, key and client CA can be replaced while
/// it serves (say, on SIGHUP after a certificate renewal): handshakes after
/// [`reload`](ReloadableTls::reload) use the new ones, connections already open keep theirs.
/// Whether clients must present a certificate is fixed at [`new`](ReloadableTls::new).
///
/// ```no_run
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let read = |path: &str| std::fs::read(path);
/// let tls = grpcproxy::server::ReloadableTls::new(&read("server.pem")?, &read("server.key")?, None)?;
/// let options = grpcproxy::server::ServerOptions {
///     tls: Some(tls.config()),
///     ..Default::default()
/// };
/// // … later, after the files were renewed: a failure keeps the running ones.
/// tls.reload(&read("server.pem")?, &read("server.key")?, None)?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct ReloadableTls {
    config: Arc<ServerConfig>,
    cert: Arc<CurrentCert>,
    verifier: Option<Arc<CurrentVerifier>>,
}

impl ReloadableTls {
    /// Like [`tls_config`], with what it serves replaceable.
    pub fn new(
        cert_pem: &[u8],
        key_pem: &[u8],
        client_ca_pem: Option<&[u8]>,
    ) -> Result<Self, ServerTlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let cert = Arc::new(CurrentCert(arc_swap::ArcSwap::from(certified_key(
            cert_pem, key_pem, &provider,
        )?)));
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?;
        let (builder, verifier) = match client_ca_pem {
            Some(pem) => {
                let verifier = Arc::new(CurrentVerifier(arc_swap::ArcSwap::from_pointee(
                    client_verifier(pem, &provider)?,
                )));
                (
                    builder.with_client_cert_verifier(verifier.clone()),
                    Some(verifier),
                )
            }
            None => (builder.with_no_client_auth(), None),
        };
        let mut config = builder.with_cert_resolver(cert.clone());
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Self {
            config: Arc::new(config),
            cert,
            verifier,
        })
    }

    /// The configuration to serve with ([`ServerOptions::tls`](crate::server::ServerOptions::tls)).
    pub fn config(&self) -> Arc<ServerConfig> {
        self.config.clone()
    }

    /// Serves `cert_pem` and `key_pem` from the next handshake on, and verifies clients
    /// against `client_ca_pem`. Nothing changes unless all of them load; a client CA given
    /// to a configuration made without one (or none to one made with one) is an error.
    pub fn reload(
        &self,
        cert_pem: &[u8],
        key_pem: &[u8],
        client_ca_pem: Option<&[u8]>,
    ) -> Result<(), ServerTlsError> {
        let provider = rustls::crypto::ring::default_provider();
        let cert = certified_key(cert_pem, key_pem, &provider)?;
        let verifier = match (&self.verifier, client_ca_pem) {
            (Some(_), Some(pem)) => Some(client_verifier(pem, &Arc::new(provider))?),
            (None, None) => None,
            _ => return Err(ServerTlsError::ClientAuthFixed),
        };
        self.cert.0.store(cert);
        if let (Some(current), Some(verifier)) = (&self.verifier, verifier) {
            current.0.store(Arc::new(verifier));
        }
        Ok(())
    }
}

fn certified_key(
    cert_pem: &[u8],
    key_pem: &[u8],
    provider: &rustls::crypto::CryptoProvider,
) -> Result<Arc<rustls::sign::CertifiedKey>, ServerTlsError> {
    let chain = crate::pem::certificates(cert_pem, "server certificate")?;
    let key = crate::pem::private_key(key_pem, "server private key")?;
    Ok(Arc::new(rustls::sign::CertifiedKey::from_der(
        chain, key, provider,
    )?))
}

fn client_verifier(
    pem: &[u8],
    provider: &Arc<rustls::crypto::CryptoProvider>,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, ServerTlsError> {
    let mut roots = RootCertStore::empty();
    for cert in crate::pem::certificates(pem, "client CA")? {
        roots.add(cert)?;
    }
    Ok(WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone()).build()?)
}

/// The certificate served now.
#[derive(Debug)]
struct CurrentCert(arc_swap::ArcSwap<rustls::sign::CertifiedKey>);

impl rustls::server::ResolvesServerCert for CurrentCert {
    fn resolve(
        &self,
        _hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.load_full())
    }
}

/// The client verifier used now. It names no CA to clients (the names would have to
/// outlive a reload): clients send the certificate they have.
#[derive(Debug)]
struct CurrentVerifier(arc_swap::ArcSwap<Arc<dyn rustls::server::danger::ClientCertVerifier>>);

impl rustls::server::danger::ClientCertVerifier for CurrentVerifier {
    fn offer_client_auth(&self) -> bool {
        self.0.load().offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.0.load().client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        intermediates: &[rustls::pki_types::CertificateDer<'_>],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        self.0
            .load()
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.load().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.load().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.load().supported_verify_schemes()
    }
}
