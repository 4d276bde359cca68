//! The way out: one pooled HTTP client whose connector checks where it dials.
//!
//! The connector resolves the upstream's name itself and checks *every* address it resolved to
//! against the upstream policy and Airlock's own listeners before opening any connection: the
//! check happens at dial time, after DNS, so a name that resolves to `169.254.169.254` or to
//! Airlock itself is refused however the gateway config spelled it (SECURITY #3). A name with any
//! refused address is refused whole, rather than dialled on its remaining addresses, because
//! mixed answers are what DNS rebinding looks like.
//!
//! TLS is rustls with the `ring` provider, the web PKI roots plus `AIRLOCK_UPSTREAM_CA_FILE`, and
//! the server name of the endpoint; a failed handshake is a failed request, never a fallback to
//! plaintext (SECURITY #2). ALPN offers `h2` and `http/1.1`; websocket handshakes use a second
//! client that offers `http/1.1` only, since they need an HTTP/1.1 upgrade.
//!
//! The client never retries a request and never follows a redirect.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use airlock_core::endpoint::normalize_ip;
use airlock_core::{Scheme, UpstreamPolicy};
use http::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tokio_util::either::Either;

use crate::body::RequestBody;
use crate::error::{Forbidden, ProxyError};
use crate::metrics::UpstreamErrorKind;

pub(crate) type UpstreamClient = Client<Connector, RequestBody>;

/// Why a connection could not be made. Carries no host name, address or certificate detail that
/// a client could use to probe the network; the log line gets the detail.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectError {
    #[error("the upstream uri has no usable scheme or host")]
    BadUri,
    #[error("cannot resolve the upstream host: {0}")]
    Resolve(io::Error),
    #[error("the upstream address is not allowed")]
    Forbidden(Forbidden),
    #[error("cannot connect to the upstream: {0}")]
    Connect(io::Error),
    #[error("the upstream tls handshake failed: {0}")]
    Tls(io::Error),
    #[error("connecting to the upstream timed out")]
    Timeout,
}

struct Dialer {
    policy: UpstreamPolicy,
    own_addrs: Vec<SocketAddr>,
    tls: TlsConnector,
    connect_timeout: Duration,
}

/// A `tower::Service<Uri>` for hyper-util's client.
#[derive(Clone)]
pub(crate) struct Connector(Arc<Dialer>);

impl Connector {
    pub(crate) fn new(
        policy: UpstreamPolicy,
        own_addrs: Vec<SocketAddr>,
        tls: Arc<ClientConfig>,
        connect_timeout: Duration,
    ) -> Self {
        Connector(Arc::new(Dialer {
            policy,
            own_addrs,
            tls: TlsConnector::from(tls),
            connect_timeout,
        }))
    }
}

impl tower::Service<Uri> for Connector {
    type Response = UpstreamIo;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<UpstreamIo, ConnectError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), ConnectError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let dialer = self.0.clone();
        Box::pin(async move {
            let timeout = dialer.connect_timeout;
            match tokio::time::timeout(timeout, dialer.dial(uri)).await {
                Ok(result) => result,
                Err(_) => Err(ConnectError::Timeout),
            }
        })
    }
}

impl Dialer {
    async fn dial(&self, uri: Uri) -> Result<UpstreamIo, ConnectError> {
        let scheme = match uri.scheme_str() {
            Some("https") => Scheme::Https,
            Some("http") => Scheme::Http,
            _ => return Err(ConnectError::BadUri),
        };
        let host = uri.host().ok_or(ConnectError::BadUri)?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = uri.port_u16().unwrap_or(scheme.default_port());
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
            .await
            .map_err(ConnectError::Resolve)?
            .collect();
        if addrs.is_empty() {
            return Err(ConnectError::Resolve(io::Error::new(
                io::ErrorKind::NotFound,
                "no addresses",
            )));
        }
        for addr in &addrs {
            self.check(scheme, *addr)?;
        }
        let mut last = None;
        let mut connected = None;
        for addr in addrs {
            match TcpStream::connect(addr).await {
                Ok(stream) => {
                    connected = Some(stream);
                    break;
                }
                Err(err) => last = Some(err),
            }
        }
        let Some(stream) = connected else {
            return Err(ConnectError::Connect(
                last.unwrap_or_else(|| io::Error::other("no address accepted")),
            ));
        };
        // Request heads and SSE events are small writes; do not let Nagle hold them back.
        let _ = stream.set_nodelay(true);
        match scheme {
            Scheme::Http => Ok(UpstreamIo {
                io: TokioIo::new(Either::Left(stream)),
                h2: false,
            }),
            Scheme::Https => {
                let name =
                    ServerName::try_from(host.to_owned()).map_err(|_| ConnectError::BadUri)?;
                let tls = self
                    .tls
                    .connect(name, stream)
                    .await
                    .map_err(ConnectError::Tls)?;
                let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2".as_slice());
                Ok(UpstreamIo {
                    io: TokioIo::new(Either::Right(tls)),
                    h2,
                })
            }
        }
    }

    fn check(&self, scheme: Scheme, addr: SocketAddr) -> Result<(), ConnectError> {
        let ip = normalize_ip(addr.ip());
        self.policy
            .check_dial(scheme, ip)
            .map_err(|refused| ConnectError::Forbidden(Forbidden::Policy(refused)))?;
        if airlock_core::endpoint::is_own_listener(&self.own_addrs, addr) {
            return Err(ConnectError::Forbidden(Forbidden::OwnListener));
        }
        Ok(())
    }
}

/// A connection to an upstream, plain (only to allowed private addresses) or TLS.
pub(crate) struct UpstreamIo {
    io: TokioIo<Either<TcpStream, TlsStream<TcpStream>>>,
    h2: bool,
}

impl hyper::rt::Read for UpstreamIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for UpstreamIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
}

impl Connection for UpstreamIo {
    fn connected(&self) -> Connected {
        let connected = Connected::new();
        if self.h2 {
            connected.negotiated_h2()
        } else {
            connected
        }
    }
}

/// The TLS client configuration: web PKI roots plus the operator's extra PEM roots.
pub(crate) fn tls_config(
    extra_roots_pem: Option<&[u8]>,
    alpn: &[&[u8]],
) -> Result<Arc<ClientConfig>, ProxyError> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(pem) = extra_roots_pem {
        let mut added = 0;
        for cert in rustls_pemfile::certs(&mut &pem[..]) {
            let cert = cert.map_err(|e| {
                ProxyError::Config(format!("AIRLOCK_UPSTREAM_CA_FILE does not parse: {e}"))
            })?;
            roots.add(cert).map_err(|e| {
                ProxyError::Config(format!(
                    "AIRLOCK_UPSTREAM_CA_FILE holds an unusable certificate: {e}"
                ))
            })?;
            added += 1;
        }
        if added == 0 {
            return Err(ProxyError::Config(
                "AIRLOCK_UPSTREAM_CA_FILE holds no PEM certificate".into(),
            ));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ProxyError::Config(format!("tls setup failed: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

pub(crate) fn client(connector: Connector) -> UpstreamClient {
    Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(256)
        // A request that the pool could not send is not sent again: the rule is "never retry".
        .retry_canceled_requests(false)
        // The pipeline sets Host to the endpoint's authority itself.
        .set_host(false)
        .http2_adaptive_window(true)
        .build(connector)
}

/// Sorts a client error into the contract's codes, from the connector's own error if there is
/// one, and into the kind the upstream-error metric counts.
pub(crate) fn classify(err: &hyper_util::client::legacy::Error) -> (ProxyError, UpstreamErrorKind) {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(err);
    while let Some(cause) = source {
        if let Some(connect) = cause.downcast_ref::<ConnectError>() {
            tracing::debug!(error = %connect, "upstream connection failed");
            return match connect {
                ConnectError::Forbidden(why) => (
                    ProxyError::UpstreamForbidden(*why),
                    UpstreamErrorKind::RefusedAddress,
                ),
                ConnectError::Tls(_) => (ProxyError::UpstreamTls, UpstreamErrorKind::Tls),
                ConnectError::Timeout => (
                    ProxyError::UpstreamConnectTimeout,
                    UpstreamErrorKind::ConnectTimeout,
                ),
                ConnectError::Resolve(_) => {
                    (ProxyError::UpstreamUnreachable, UpstreamErrorKind::Dns)
                }
                ConnectError::BadUri | ConnectError::Connect(_) => {
                    (ProxyError::UpstreamUnreachable, UpstreamErrorKind::Connect)
                }
            };
        }
        source = cause.source();
    }
    tracing::debug!(error = %err, "upstream request failed");
    if err.is_connect() {
        (ProxyError::UpstreamUnreachable, UpstreamErrorKind::Connect)
    } else {
        (ProxyError::UpstreamFailed, UpstreamErrorKind::Reset)
    }
}
