//! From an accepted TCP connection to a stream ready for HTTP, in three bounded steps:
//!
//! 1. wait for the first byte (at most `first_byte_timeout`, the listener's idle timeout: a
//!    connection opened ahead of use may wait as long as an idle keep-alive one);
//! 2. from a trusted proxy, read the PROXY header, which is required; from anybody else, look at
//!    the first bytes and close the connection if they start a PROXY header;
//! 3. with TLS, complete the handshake.
//!
//! Steps 2 and 3 together must finish within `handshake_timeout` of the first byte, so a client
//! that drips its header or its ClientHello costs a timer, not a worker.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use ipnet::IpNet;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use crate::proxy_protocol::{self, starts_proxy_header, ProxyHeaderError};
use crate::stream::{NetStream, Prefixed};
use crate::tls::TlsServer;

/// How a listener accepts connections.
#[derive(Clone, Debug)]
pub struct AcceptOptions {
    /// TLS on this listener; `None`: plain TCP.
    pub tls: Option<TlsServer>,
    /// Peers whose connections must start with a PROXY header naming the real client.
    pub trusted_proxies: Vec<IpNet>,
    /// A connection that sends nothing is closed after this.
    pub first_byte_timeout: Duration,
    /// The PROXY header and the TLS handshake must be done within this of the first byte.
    pub handshake_timeout: Duration,
}

impl Default for AcceptOptions {
    fn default() -> Self {
        AcceptOptions {
            tls: None,
            trusted_proxies: Vec::new(),
            first_byte_timeout: Duration::from_secs(90),
            handshake_timeout: Duration::from_secs(10),
        }
    }
}

/// A connection ready for HTTP.
#[derive(Debug)]
pub struct Accepted {
    pub stream: NetStream,
    /// The socket's peer.
    pub peer: SocketAddr,
    /// The caller: the address a trusted proxy's header named, else the socket's peer.
    pub client: SocketAddr,
}

/// Why a connection was closed before it reached HTTP.
#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    #[error("closed by the peer before sending anything")]
    Closed,
    #[error("no data within {0:?}")]
    Idle(Duration),
    #[error("PROXY header and TLS handshake not done within {0:?}")]
    Timeout(Duration),
    #[error("a PROXY header from {0}, which is not a trusted proxy (AIRLOCK_TRUSTED_PROXIES)")]
    UntrustedProxyHeader(IpAddr),
    #[error("from trusted proxy {peer}: {error}")]
    ProxyHeader {
        peer: IpAddr,
        error: ProxyHeaderError,
    },
    #[error("TLS handshake: {0}")]
    Tls(std::io::Error),
    #[error("reading from the connection: {0}")]
    Io(#[from] std::io::Error),
}

impl AcceptError {
    /// Whether the refusal points at a misconfiguration or an attack (worth a warning) rather
    /// than at an ordinary client going away or timing out.
    pub fn is_notable(&self) -> bool {
        matches!(
            self,
            AcceptError::UntrustedProxyHeader(_) | AcceptError::ProxyHeader { .. }
        )
    }
}

/// Turns accepted TCP connections into [`Accepted`] ones. Cheap to share.
#[derive(Clone)]
pub struct Acceptor {
    options: AcceptOptions,
    tls: Option<TlsAcceptor>,
}

impl std::fmt::Debug for Acceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acceptor")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Acceptor {
    pub fn new(options: AcceptOptions) -> Acceptor {
        let tls = options
            .tls
            .as_ref()
            .map(|tls| TlsAcceptor::from(tls.config().clone()));
        Acceptor { options, tls }
    }

    /// Whether the listener speaks TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Whether `ip` may send a PROXY header (IPv4-mapped IPv6 compares as IPv4).
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.options
            .trusted_proxies
            .iter()
            .any(|net| net.contains(&ip))
    }

    /// Runs the steps in the module docs on one connection. Sets `TCP_NODELAY`: small writes
    /// (SSE events, the end of a response) must not wait for Nagle.
    pub async fn accept(&self, tcp: TcpStream, peer: SocketAddr) -> Result<Accepted, AcceptError> {
        let _ = tcp.set_nodelay(true);
        let mut tcp = tcp;
        // 1. Look at the first bytes without taking them.
        let mut head = [0u8; 12];
        let first = self.options.first_byte_timeout;
        let seen = tokio::time::timeout(first, tcp.peek(&mut head))
            .await
            .map_err(|_| AcceptError::Idle(first))??;
        if seen == 0 {
            return Err(AcceptError::Closed);
        }
        let limit = self.options.handshake_timeout;
        let deadline = Instant::now() + limit;

        // 2. The PROXY header: required from a trusted peer, refused from anybody else.
        let bounded = async {
            let (client, prefix) = if self.is_trusted(peer.ip()) {
                let header = proxy_protocol::read_header(&mut tcp)
                    .await
                    .map_err(|error| AcceptError::ProxyHeader {
                        peer: peer.ip(),
                        error,
                    })?;
                (header.source.unwrap_or(peer), header.rest)
            } else {
                match starts_proxy_header(&head[..seen]) {
                    Some(false) => (peer, Bytes::new()),
                    Some(true) => return Err(AcceptError::UntrustedProxyHeader(peer.ip())),
                    None => (peer, sniff_more(&mut tcp, peer).await?),
                }
            };
            // 3. TLS.
            let io = Prefixed::new(tcp, prefix);
            let stream = match &self.tls {
                None => NetStream::Plain(io),
                Some(acceptor) => NetStream::Tls(Box::new(
                    acceptor.accept(io).await.map_err(AcceptError::Tls)?,
                )),
            };
            Ok(Accepted {
                stream,
                peer,
                client,
            })
        };
        tokio::time::timeout_at(deadline, bounded)
            .await
            .map_err(|_| AcceptError::Timeout(limit))?
    }
}

/// The first bytes from an untrusted peer were too few to tell whether they start a PROXY
/// header: take them off the socket and read until it is clear; returns what was read.
async fn sniff_more(tcp: &mut TcpStream, peer: SocketAddr) -> Result<Bytes, AcceptError> {
    let mut buf = BytesMut::with_capacity(64);
    loop {
        let n = tcp.read_buf(&mut buf).await?;
        if n == 0 {
            return Err(AcceptError::Closed);
        }
        match starts_proxy_header(&buf) {
            Some(false) => return Ok(buf.freeze()),
            Some(true) => return Err(AcceptError::UntrustedProxyHeader(peer.ip())),
            None => {}
        }
    }
}
