//! The control plane's accept loop: `airlock_net::Acceptor` (TLS when configured, with ALPN
//! `h2` and `http/1.1`), then hyper-util's auto builder (HTTP/1.1 and HTTP/2 on one port) over
//! the axum router.
//!
//! On shutdown the listener is dropped (new connections are refused), every connection is told
//! to finish its requests and close, and whatever is still open after the grace period is cut
//! off.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use airlock_net::{AcceptOptions, Acceptor, TlsServer};
use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tower::ServiceExt;

/// Whether the request arrived over TLS (a request extension): the console's cookie is then
/// `Secure` and its same-origin check expects `https://`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ServedOverTls(pub bool);

/// How the control plane's listener works.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// TLS on the listener (`AIRLOCK_API_TLS_CERT_FILE` and `..._KEY_FILE`); `None`: plain HTTP.
    pub tls: Option<TlsServer>,
    /// How long open requests may run after `shutdown` resolves (`AIRLOCK_SHUTDOWN_GRACE`).
    pub grace: Duration,
    /// A request head, and before it the TLS handshake, must arrive within this of its first
    /// byte.
    pub header_read_timeout: Duration,
    /// A connection that sends nothing is closed after this.
    pub idle_timeout: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            tls: None,
            grace: Duration::from_secs(30),
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(90),
        }
    }
}

pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let acceptor = Arc::new(Acceptor::new(AcceptOptions {
        tls: options.tls.clone(),
        trusted_proxies: Vec::new(),
        // A connection that sends nothing holds its socket no longer than a late head would.
        first_byte_timeout: options.header_read_timeout,
        handshake_timeout: options.header_read_timeout,
    }));
    let mut http = auto::Builder::new(TokioExecutor::new());
    http.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout)
        .keep_alive(true);
    // HTTP/2 has no header timeout: a PING every 20 s on a quiet connection, unanswered for
    // 20 s, closes it, so a peer that sent its preface and went silent does not stay for ever.
    http.http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(20)))
        .keep_alive_timeout(Duration::from_secs(20));
    let http = Arc::new(http);
    let (stop_tx, stop) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    connections.spawn(connection(
                        acceptor.clone(),
                        http.clone(),
                        router.clone(),
                        tcp,
                        peer,
                        options.tls.is_some(),
                        stop.clone(),
                    ));
                }
                Err(err) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %err, "cannot accept a control-plane connection");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(options.grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            connections = connections.len(),
            "grace period over; closing the remaining control-plane connections"
        );
        connections.abort_all();
        while connections.join_next().await.is_some() {}
    }
    Ok(())
}

async fn connection(
    acceptor: Arc<Acceptor>,
    http: Arc<auto::Builder<TokioExecutor>>,
    router: Router,
    tcp: TcpStream,
    peer: SocketAddr,
    tls: bool,
    mut stop: watch::Receiver<bool>,
) {
    let accepted = tokio::select! {
        accepted = acceptor.accept(tcp, peer) => match accepted {
            Ok(accepted) => accepted,
            Err(err) => {
                tracing::debug!(peer = %peer, error = %err, "closed a control-plane connection before HTTP");
                return;
            }
        },
        _ = stop.wait_for(|stopping| *stopping) => return,
    };
    // Handlers read the caller's address (for the audit trail) as axum's `ConnectInfo`.
    let service = router.map_request(move |mut req: http::Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        req.extensions_mut().insert(ServedOverTls(tls));
        req
    });
    let conn = http.serve_connection_with_upgrades(
        TokioIo::new(accepted.stream),
        TowerToHyperService::new(service),
    );
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(err) = result {
                tracing::debug!(error = %err, "control-plane connection ended with an error");
            }
            return;
        }
        _ = stop.wait_for(|stopping| *stopping) => {}
    }
    conn.as_mut().graceful_shutdown();
    if let Err(err) = conn.await {
        tracing::debug!(error = %err, "control-plane connection ended with an error");
    }
}
