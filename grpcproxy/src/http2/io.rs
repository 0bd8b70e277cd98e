//! The one transport every HTTP/2 connection of the proxy runs on, client's or backend's,
//! cleartext or TLS.
//!
//! h2's connection code is generic over its transport: a type per transport would build it
//! once per type (four copies: cleartext and TLS, server and client), and with four copies
//! the compiler no longer inlines the frame path into one piece as it does for one, so every
//! frame is moved a few more times between h2's functions. One type keeps one copy; telling
//! the transports apart costs a branch per read or write.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A TCP connection, with or without TLS. The TLS sessions are boxed: they are large, and
/// cleartext connections need not carry their size.
pub(crate) enum Io {
    /// Cleartext.
    Tcp(TcpStream),
    /// TLS, accepted from a client.
    ServerTls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    /// TLS, opened to a backend.
    ClientTls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

/// The same call on whichever transport `$io` (an `&Io` or `&mut Io`) is.
macro_rules! each {
    ($io:expr, $stream:ident => $call:expr) => {
        match $io {
            Io::Tcp($stream) => $call,
            Io::ServerTls($stream) => $call,
            Io::ClientTls($stream) => $call,
        }
    };
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        each!(self.get_mut(), s => Pin::new(s).poll_read(cx, buf))
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        each!(self.get_mut(), s => Pin::new(s).poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        each!(self.get_mut(), s => Pin::new(s).poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        each!(self, s => s.is_write_vectored())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self.get_mut(), s => Pin::new(s).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self.get_mut(), s => Pin::new(s).poll_shutdown(cx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Bytes written through an `Io` arrive as written, and a read through one reads them;
    /// a shutdown reaches the peer as the end of the stream.
    #[tokio::test]
    async fn cleartext_io_carries_bytes_both_ways_and_the_shutdown() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (client, accepted) = tokio::join!(TcpStream::connect(address), listener.accept());
        let mut client = Io::Tcp(client.unwrap());
        let mut server = Io::Tcp(accepted.unwrap().0);
        assert!(client.is_write_vectored());
        client.write_all(b"PRI * HTTP/2.0").await.unwrap();
        let mut read = [0u8; 14];
        server.read_exact(&mut read).await.unwrap();
        assert_eq!(&read, b"PRI * HTTP/2.0");
        let slices = [IoSlice::new(b"ab"), IoSlice::new(b"cd")];
        let written = server.write_vectored(&slices).await.unwrap();
        server.shutdown().await.unwrap();
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).await.unwrap();
        assert_eq!(written, 4);
        assert_eq!(rest, b"abcd");
    }
}
