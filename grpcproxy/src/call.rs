//! What the proxy knows about one call when it asks the director where to send it.

use std::net::SocketAddr;
use std::sync::Arc;

use http::uri::PathAndQuery;
use http::Extensions;
use rustls_pki_types::CertificateDer;
use tonic::metadata::MetadataMap;

/// The connection a call arrived on, as a server inserts it into request extensions.
///
/// grpcproxy's own server inserts it; calls served by tonic carry tonic's
/// `TcpConnectInfo` / `TlsConnectInfo` instead, which [`CallInfo`] reads as well.
#[derive(Debug, Clone, Default)]
pub struct ConnectionInfo {
    /// The client's address.
    pub remote_addr: Option<SocketAddr>,
    /// The listener address the client connected to.
    pub local_addr: Option<SocketAddr>,
    /// The client's certificate chain, when it presented one over TLS.
    pub peer_certificates: Option<Arc<Vec<CertificateDer<'static>>>>,
}

/// One incoming call, as the [`StreamDirector`](crate::StreamDirector) sees it.
///
/// ```
/// use grpcproxy::CallInfo;
///
/// let call = CallInfo::new("/helloworld.Greeter/SayHello".parse().unwrap(), Default::default());
/// assert_eq!(call.method(), "/helloworld.Greeter/SayHello");
/// assert_eq!(call.service_name(), "helloworld.Greeter");
/// assert_eq!(call.method_name(), "SayHello");
/// ```
#[derive(Debug)]
pub struct CallInfo {
    path: PathAndQuery,
    split: usize,
    metadata: MetadataMap,
    peer: ConnectionInfo,
    extensions: Extensions,
}

impl CallInfo {
    /// A call to `path` (`/pkg.Service/Method`) with the given request metadata.
    ///
    /// A path without a service/method split yields an empty service and the whole path
    /// as the method; the proxy itself answers such calls `UNIMPLEMENTED` before asking.
    pub fn new(path: PathAndQuery, metadata: MetadataMap) -> Self {
        let split = split_method(path.path()).unwrap_or(0);
        Self::split_at(path, split, metadata)
    }

    /// [`CallInfo::new`] for a path already split by [`split_method`].
    pub(crate) fn split_at(path: PathAndQuery, split: usize, metadata: MetadataMap) -> Self {
        Self {
            path,
            split,
            metadata,
            peer: ConnectionInfo::default(),
            extensions: Extensions::new(),
        }
    }

    pub(crate) fn with_peer(mut self, peer: ConnectionInfo, extensions: Extensions) -> Self {
        self.peer = peer;
        self.extensions = extensions;
        self
    }

    /// The full method name, `/pkg.Service/Method`.
    pub fn method(&self) -> &str {
        self.path.path()
    }

    /// The fully qualified service name, `pkg.Service`.
    pub fn service_name(&self) -> &str {
        self.path.path().get(1..self.split).unwrap_or("")
    }

    /// The method name within its service, `Method`.
    pub fn method_name(&self) -> &str {
        &self.path.path()[self.split + 1..]
    }

    /// The request metadata (ASCII and `-bin` entries), minus hop-by-hop headers.
    pub fn metadata(&self) -> &MetadataMap {
        &self.metadata
    }

    /// The request metadata, to edit before forwarding it with [`CallInfo::forward_to`].
    pub fn metadata_mut(&mut self) -> &mut MetadataMap {
        &mut self.metadata
    }

    /// The metadata, taking the call apart (to forward it).
    pub(crate) fn into_metadata(self) -> MetadataMap {
        self.metadata
    }

    /// The client's address, when the server knows it.
    pub fn remote_addr(&self) -> Option<SocketAddr> {
        self.peer.remote_addr
    }

    /// The client's TLS certificate chain (leaf first), when it presented one.
    pub fn peer_certificates(&self) -> Option<&[CertificateDer<'static>]> {
        self.peer.peer_certificates.as_deref().map(Vec::as_slice)
    }

    /// The request's extensions: what tower layers in front of the proxy attached (for
    /// example an authenticated identity).
    pub fn extensions(&self) -> &Extensions {
        &self.extensions
    }
}

/// Where `/service/method` splits: the index of the second `/`, if the path is well formed.
pub(crate) fn split_method(path: &str) -> Option<usize> {
    // Bytes, not `str::find`: a path is short, and a plain scan beats a searcher's set-up.
    let rest = path.as_bytes().strip_prefix(b"/")?;
    let slash = rest.iter().position(|&b| b == b'/')?;
    let (service, method) = (&rest[..slash], &rest[slash + 1..]);
    (!service.is_empty() && !method.is_empty() && !method.contains(&b'/')).then_some(slash + 1)
}

/// Reads the connection info that grpcproxy's server or tonic's put in the extensions.
pub(crate) fn connection_info(extensions: &Extensions) -> ConnectionInfo {
    use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
    if let Some(info) = extensions.get::<ConnectionInfo>() {
        return info.clone();
    }
    // TLS first: a TLS connection may carry a plain TcpConnectInfo as well.
    if let Some(tls) = extensions.get::<TlsConnectInfo<TcpConnectInfo>>() {
        return ConnectionInfo {
            remote_addr: tls.get_ref().remote_addr(),
            local_addr: tls.get_ref().local_addr(),
            peer_certificates: tls.peer_certs(),
        };
    }
    if let Some(tcp) = extensions.get::<TcpConnectInfo>() {
        return ConnectionInfo {
            remote_addr: tcp.remote_addr(),
            local_addr: tcp.local_addr(),
            peer_certificates: None,
        };
    }
    ConnectionInfo::default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn well_formed_paths_split() {
        assert_eq!(split_method("/a.B/C"), Some(4));
        for bad in ["", "/", "//", "/a.B", "/a.B/", "//C", "a.B/C", "/a/b/c"] {
            assert_eq!(split_method(bad), None, "{bad:?}");
        }
    }
}
