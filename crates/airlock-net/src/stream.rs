//! The accepted-stream type: plain TCP or TLS over TCP, with the bytes read while looking for a
//! PROXY header put back in front.

use std::io::IoSlice;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

/// A stream that first yields `prefix`, then reads from `inner`. Writes go to `inner`.
#[derive(Debug)]
pub struct Prefixed<S> {
    prefix: Bytes,
    inner: S,
}

impl<S> Prefixed<S> {
    /// `inner`, with `prefix` read before anything else.
    pub fn new(inner: S, prefix: Bytes) -> Self {
        Prefixed { prefix, inner }
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The bytes not yet read from the prefix, and the wrapped stream.
    pub fn into_parts(self) -> (Bytes, S) {
        (self.prefix, self.inner)
    }

    /// Whether bytes of the prefix are still to be read.
    pub fn has_prefix(&self) -> bool {
        !self.prefix.is_empty()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            if self.prefix.is_empty() {
                // An empty `Bytes` may still hold the buffer it was cut from.
                self.prefix = Bytes::new();
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// An accepted connection, ready for HTTP: plain TCP, or TLS after a completed handshake.
#[derive(Debug)]
pub enum NetStream {
    Plain(Prefixed<TcpStream>),
    Tls(Box<TlsStream<Prefixed<TcpStream>>>),
}

impl NetStream {
    /// Whether the connection is TLS.
    pub fn is_tls(&self) -> bool {
        matches!(self, NetStream::Tls(_))
    }

    /// The protocol the TLS handshake agreed on by ALPN (`h2`, `http/1.1`), if any.
    pub fn alpn(&self) -> Option<&[u8]> {
        match self {
            NetStream::Plain(_) => None,
            NetStream::Tls(tls) => tls.get_ref().1.alpn_protocol(),
        }
    }

    /// Ready when a read would make progress without waiting: the socket has bytes (or its end,
    /// or an error), or bytes were read from it that are still to be handed out (a PROXY
    /// header's tail, plaintext that rustls decrypted). For waiting on an idle connection
    /// without a read buffer.
    pub fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let tcp = match self {
            NetStream::Plain(io) => io,
            // rustls wants more TLS bytes unless it holds plaintext (or the peer's close_notify).
            NetStream::Tls(tls) if !tls.get_ref().1.wants_read() => return Poll::Ready(Ok(())),
            NetStream::Tls(tls) => tls.get_ref().0,
        };
        if tcp.has_prefix() {
            return Poll::Ready(Ok(()));
        }
        tcp.get_ref().poll_read_ready(cx)
    }

    /// The TCP socket underneath.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            NetStream::Plain(io) => io.get_ref(),
            NetStream::Tls(tls) => tls.get_ref().0.get_ref(),
        }
    }
}

impl AsyncRead for NetStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            NetStream::Plain(io) => Pin::new(io).poll_read(cx, buf),
            NetStream::Tls(io) => Pin::new(io.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for NetStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            NetStream::Plain(io) => Pin::new(io).poll_write(cx, buf),
            NetStream::Tls(io) => Pin::new(io.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            NetStream::Plain(io) => Pin::new(io).poll_flush(cx),
            NetStream::Tls(io) => Pin::new(io.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            NetStream::Plain(io) => Pin::new(io).poll_shutdown(cx),
            NetStream::Tls(io) => Pin::new(io.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            NetStream::Plain(io) => Pin::new(io).poll_write_vectored(cx, bufs),
            NetStream::Tls(io) => Pin::new(io.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            NetStream::Plain(io) => io.is_write_vectored(),
            NetStream::Tls(io) => io.is_write_vectored(),
        }
    }
}
