//! A throwaway PKI for TLS tests: a CA, a server certificate for `localhost`/`127.0.0.1`,
//! and a client certificate, all as PEM.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

/// A certificate and its private key, PEM-encoded.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The certificate.
    pub cert: String,
    /// Its private key.
    pub key: String,
}

/// A CA and the leaf certificates it signed.
#[derive(Debug, Clone)]
pub struct TestPki {
    /// The CA certificate.
    pub ca: String,
    /// Valid for `localhost` and `127.0.0.1`.
    pub server: Identity,
    /// A client certificate (CN `client.test`).
    pub client: Identity,
}

impl TestPki {
    /// A fresh CA with a server and a client certificate.
    pub fn generate() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "grpcproxy test CA");
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let leaf = |names: Vec<String>, cn: &str| {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(names).unwrap();
            params.distinguished_name.push(DnType::CommonName, cn);
            let cert = params.signed_by(&key, &ca).unwrap();
            Identity {
                cert: cert.pem(),
                key: key.serialize_pem(),
            }
        };
        Self {
            ca: ca.pem(),
            server: leaf(vec!["localhost".into(), "127.0.0.1".into()], "localhost"),
            client: leaf(vec!["client.test".into()], "client.test"),
        }
    }

    /// Writes `ca.pem`, `server.pem`, `server.key`, `client.pem`, `client.key` into `dir`.
    pub fn write_to(&self, dir: &Path) -> PkiFiles {
        let write = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        PkiFiles {
            ca: write("ca.pem", &self.ca),
            server_cert: write("server.pem", &self.server.cert),
            server_key: write("server.key", &self.server.key),
            client_cert: write("client.pem", &self.client.cert),
            client_key: write("client.key", &self.client.key),
        }
    }
}

/// Where [`TestPki::write_to`] put the files.
#[derive(Debug, Clone)]
pub struct PkiFiles {
    /// CA certificate.
    pub ca: PathBuf,
    /// Server certificate.
    pub server_cert: PathBuf,
    /// Server key.
    pub server_key: PathBuf,
    /// Client certificate.
    pub client_cert: PathBuf,
    /// Client key.
    pub client_key: PathBuf,
}
