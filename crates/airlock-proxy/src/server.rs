//! Accepting connections: the listener loop, per-connection timeouts, and draining on shutdown.
//!
//! hyper-util's auto builder speaks HTTP/1.1 and HTTP/2 (prior knowledge) on the same port.
//! hyper's own HTTP/1 header timeout also runs while a keep-alive connection waits for its next
//! request, which would make the keep-alive idle time equal to the header timeout; so both are
//! enforced here instead, by a per-connection watchdog that reads a few atomics:
//!
//! - header read timeout: once the first byte of an HTTP/1 request head has arrived, the whole
//!   head must arrive (and the request reach the pipeline) within `header_read_timeout`, or the
//!   connection is closed (a slowly dripped header costs a timer, not a worker);
//! - idle timeout: a connection with no request in flight for `idle_timeout` is shut down
//!   gracefully (HTTP/2 gets a GOAWAY);
//! - close deadline: a connection that is shutting down and has no request in flight is dropped
//!   `header_read_timeout` later, whether or not the peer answered the GOAWAY's PING (an HTTP/2
//!   peer that sent its preface and nothing else would otherwise stay for ever);
//! - send timeout: a response that the client does not take (a full socket buffer, an HTTP/2
//!   flow-control window held at zero) for `send_timeout` closes the connection, as nginx's
//!   `send_timeout` does. The response body marks when it handed hyper a frame that hyper has
//!   not come back for; waiting for the upstream is not waiting for the client.
//!
//! HTTP/2 connections are also PINGed every `h2_keep_alive_interval` while quiet, and closed
//! when a PING goes unanswered as long (hyper's keep-alive), so a vanished peer does not hold a
//! stream open.
//!
//! The first byte of a connection must arrive within `header_read_timeout` (the acceptor's
//! first-byte deadline), so a connection that sends nothing holds its slot seconds, not the idle
//! timeout.
//! Before any of that, `airlock_net::Acceptor` turns the TCP connection into a stream for HTTP:
//! the PROXY header from a trusted load balancer (whose named address becomes the caller's),
//! refusal of a PROXY header from anybody else, and the TLS handshake when the listener has TLS
//! (HTTP/2 by ALPN there; in plain text HTTP/2 is recognised by its preface, as below).
//!
//! At most `max_connections` client connections are open at once (`AIRLOCK_MAX_CONNECTIONS`), and
//! at most `max_connections_per_source` from one source (`AIRLOCK_MAX_CONNECTIONS_PER_SOURCE`,
//! `limits::SourceCaps`): the accept loop closes a connection over either cap as soon as it is
//! accepted, and counts it. A trusted load balancer's connections count under the client
//! address its PROXY header names, once that header is read.
//!
//! On shutdown the data plane reports itself draining, the listener is dropped (new connections
//! are refused), every connection is told to finish its requests and close, and whatever is
//! still running after the grace period is cut off.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use airlock_net::NetStream;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::conn::{now_ms, Activity, ServeCtx};
use crate::h1guard::Guarded;
use crate::limits::SourceSlot;
use crate::metrics::ConnectionGuard;
use crate::pipeline;
use crate::{Connections, RequestCtx};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Proto {
    Unknown,
    H1,
    H2,
}

/// The HTTP/2 connection preface (RFC 9113 §3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The accepted socket, watching the bytes read: enough to tell HTTP/1 from HTTP/2 and to
/// notice the start of a request head.
struct Watched {
    stream: NetStream,
    activity: Arc<Activity>,
    proto: Proto,
    /// Bytes of the HTTP/2 preface matched so far.
    prefix_len: usize,
}

impl Watched {
    fn saw(&mut self, bytes: &[u8]) {
        if self.proto == Proto::Unknown {
            // HTTP/2 only with its whole preface, as hyper decides: an HTTP/1 request whose
            // method is "PRI" still gets the header timeout.
            let take = (H2_PREFACE.len() - self.prefix_len).min(bytes.len());
            if bytes[..take] != H2_PREFACE[self.prefix_len..self.prefix_len + take] {
                self.proto = Proto::H1;
            } else {
                self.prefix_len += take;
                if self.prefix_len == H2_PREFACE.len() {
                    self.proto = Proto::H2;
                    self.activity.head_started.store(0, Ordering::Release);
                    return;
                }
            }
        }
        if self.proto != Proto::H2
            && self.activity.in_flight.load(Ordering::Acquire) == 0
            && self.activity.head_started.load(Ordering::Acquire) == 0
        {
            self.activity
                .head_started
                .store(now_ms(), Ordering::Release);
        }
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let polled = Pin::new(&mut this.stream).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            if buf.filled().len() > before {
                let filled = &buf.filled()[before..];
                this.saw(filled);
            }
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

pub(crate) fn builder(config: &crate::ProxyConfig) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // hyper answers 431 itself beyond this; below it the pipeline answers with the JSON error.
    let hyper_limit = config.max_header_bytes.saturating_mul(2).max(8192);
    builder
        .http1()
        .max_buf_size(hyper_limit)
        .header_read_timeout(None)
        .keep_alive(true)
        .half_close(false);
    builder
        .http2()
        .max_header_list_size(u32::try_from(hyper_limit).unwrap_or(u32::MAX))
        .max_concurrent_streams(256)
        // A PING when the connection has been quiet this long, and the connection closed when
        // it goes unanswered as long: a vanished peer does not keep its streams open.
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(config.h2_keep_alive_interval))
        .keep_alive_timeout(config.h2_keep_alive_interval);
    builder
}

pub(crate) async fn serve(
    conns: Arc<Connections>,
    requests: Arc<RequestCtx>,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send,
    grace: Duration,
) -> std::io::Result<()> {
    let ctx = Arc::new(ServeCtx {
        stop: CancellationToken::new(),
        kill: CancellationToken::new(),
        splices: TaskTracker::new(),
    });
    let mut connections = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    // AIRLOCK_MAX_CONNECTIONS: beyond it, close at once (dropping the stream).
                    let Some(open) = conns.metrics.open_connection(conns.max_connections)
                    else {
                        tracing::debug!("closing a new connection: AIRLOCK_MAX_CONNECTIONS are open");
                        continue;
                    };
                    // AIRLOCK_MAX_CONNECTIONS_PER_SOURCE, by the TCP peer; a trusted load
                    // balancer's connections are counted by client in `connection`.
                    let slot = if conns.acceptor.is_trusted(peer.ip()) {
                        None
                    } else {
                        match enter_source(&conns, peer.ip()) {
                            Ok(slot) => slot,
                            Err(()) => continue,
                        }
                    };
                    connections.spawn(connection(
                        conns.clone(),
                        requests.clone(),
                        ctx.clone(),
                        stream,
                        peer,
                        open,
                        slot,
                    ));
                }
                Err(err) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %err, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    conns.draining.store(true, Ordering::Release);
    drop(listener);
    ctx.stop.cancel();
    ctx.splices.close();
    let drained = tokio::time::timeout(grace, async {
        while connections.join_next().await.is_some() {}
        ctx.splices.wait().await;
        requests.drains.wait().await;
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            connections = connections.len(),
            "grace period over; closing the remaining connections"
        );
        ctx.kill.cancel();
        connections.abort_all();
        while connections.join_next().await.is_some() {}
        ctx.splices.wait().await;
    }
    requests.audit.flush().await;
    Ok(())
}

/// Warns about a connection refused before HTTP (a PROXY header from an untrusted peer, a bad
/// one from a trusted peer) at most once per [`REFUSAL_WARN_INTERVAL_MS`]; the others in between
/// are logged at debug level and counted into the next warning, so that a sandbox cannot flood
/// the log.
fn warn_refused(peer: SocketAddr, err: &airlock_net::AcceptError) {
    static LAST: AtomicU64 = AtomicU64::new(0);
    static SUPPRESSED: AtomicU64 = AtomicU64::new(0);
    let now = now_ms();
    let last = LAST.load(Ordering::Acquire);
    let due = last == 0 || now >= last + REFUSAL_WARN_INTERVAL_MS;
    if due
        && LAST
            .compare_exchange(last, now, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    {
        let suppressed = SUPPRESSED.swap(0, Ordering::AcqRel);
        tracing::warn!(peer = %peer, error = %err, suppressed, "closed a connection before HTTP");
    } else {
        SUPPRESSED.fetch_add(1, Ordering::AcqRel);
        tracing::debug!(peer = %peer, error = %err, "closed a connection before HTTP");
    }
}

const REFUSAL_WARN_INTERVAL_MS: u64 = 10_000;

/// A place in the source's connection count; `Err` (counted, logged at debug level) when the
/// source is at `AIRLOCK_MAX_CONNECTIONS_PER_SOURCE`; `Ok(None)` when there is no such cap.
fn enter_source(conns: &Connections, ip: std::net::IpAddr) -> Result<Option<SourceSlot>, ()> {
    let Some(caps) = &conns.sources else {
        return Ok(None);
    };
    match caps.enter(ip) {
        Some(slot) => Ok(Some(slot)),
        None => {
            conns.metrics.refused_per_source();
            tracing::debug!(
                peer = %ip,
                "closing a new connection: AIRLOCK_MAX_CONNECTIONS_PER_SOURCE are open from its source"
            );
            Err(())
        }
    }
}

async fn connection(
    conns: Arc<Connections>,
    requests: Arc<RequestCtx>,
    ctx: Arc<ServeCtx>,
    stream: TcpStream,
    peer: SocketAddr,
    open: ConnectionGuard,
    mut slot: Option<SourceSlot>,
) {
    // Held for as long as the connection lives: its place under AIRLOCK_MAX_CONNECTIONS.
    let _open = open;
    // PROXY header and TLS handshake (TCP_NODELAY is set there); a drain drops a connection
    // that has not reached HTTP yet. Boxed, like the hyper connection and each request's future
    // below: a task's future takes the size of its largest state for the task's whole life, and
    // an idle keep-alive connection should hold only what it uses (docs/performance.md, "Memory
    // per idle connection").
    let accepted = tokio::select! {
        accepted = Box::pin(conns.acceptor.accept(stream, peer)) => match accepted {
            Ok(accepted) => accepted,
            Err(err) if err.is_notable() => {
                warn_refused(peer, &err);
                return;
            }
            Err(err) => {
                tracing::debug!(peer = %peer, error = %err, "closed a connection before HTTP");
                return;
            }
        },
        () = ctx.stop.cancelled() => return,
    };
    // The caller: the address a trusted proxy named, else the socket's peer.
    let peer = accepted.client;
    if conns.acceptor.is_trusted(accepted.peer.ip()) {
        match enter_source(&conns, peer.ip()) {
            Ok(counted) => slot = counted,
            Err(()) => return,
        }
    }
    // Held for as long as the connection lives.
    let _slot = slot;
    let activity = Activity::new();
    let io = Watched {
        stream: accepted.stream,
        activity: activity.clone(),
        proto: Proto::Unknown,
        prefix_len: 0,
    };
    // Every HTTP/1 byte is checked for ambiguous framing before hyper parses it.
    let io = Guarded::new(io, activity.framing.clone());
    let service = {
        let ctx = ctx.clone();
        let activity = activity.clone();
        hyper::service::service_fn(move |req| {
            let requests = requests.clone();
            let ctx = ctx.clone();
            let in_flight = activity.begin();
            Box::pin(async move {
                Ok::<_, Infallible>(pipeline::handle(&requests, &ctx, req, peer, in_flight).await)
            })
        })
    };
    let conn = conns
        .http
        .serve_connection_with_upgrades(TokioIo::new(io), service);
    let mut conn = Box::pin(conn);
    let header_timeout = conns.header_read_timeout;
    let idle_timeout = conns.idle_timeout;
    let send_timeout = conns.send_timeout;
    // A connection shutting down with nothing in flight is dropped this long after.
    let close_grace = header_timeout;
    let tick = header_timeout
        .min(idle_timeout)
        .min(send_timeout)
        .max(Duration::from_millis(10));
    let watchdog = tokio::time::sleep(tick);
    let mut watchdog = std::pin::pin!(watchdog);
    // Since when the connection has been shutting down (GOAWAY sent, or HTTP/1 told to close).
    let mut stopping: Option<u64> = None;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(err) = result {
                    tracing::debug!(error = %err, "connection ended with an error");
                }
                return;
            }
            () = ctx.stop.cancelled(), if stopping.is_none() => {
                stopping = Some(now_ms());
                conn.as_mut().graceful_shutdown();
            }
            () = &mut watchdog => {
                let now = now_ms();
                let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
                let mut next = now + ms(tick);
                if activity.in_flight.load(Ordering::Acquire) == 0 {
                    let head = activity.head_started.load(Ordering::Acquire);
                    let idle = activity.idle_since.load(Ordering::Acquire);
                    if let Some(since) = stopping {
                        // Nothing in flight is lost by closing now; the peer had its chance to
                        // close cleanly.
                        let close_at = since.max(idle) + ms(close_grace);
                        if now >= close_at {
                            tracing::debug!("closing a connection: it did not close after its shutdown");
                            return;
                        }
                        next = next.min(close_at);
                    }
                    if head != 0 {
                        if now >= head + ms(header_timeout) {
                            tracing::debug!("closing a connection: its request head is late");
                            return;
                        }
                        next = next.min(head + ms(header_timeout));
                    } else if now >= idle + ms(idle_timeout) {
                        if stopping.is_none() {
                            stopping = Some(now);
                            conn.as_mut().graceful_shutdown();
                            next = next.min(now + ms(close_grace));
                        }
                    } else {
                        next = next.min(idle + ms(idle_timeout));
                    }
                } else if let Some(since) = activity.oldest_wait() {
                    if now >= since + ms(send_timeout) {
                        tracing::debug!("closing a connection: the client has not taken its response within the send timeout");
                        return;
                    }
                    next = next.min(since + ms(send_timeout));
                }
                let wait = Duration::from_millis(next.saturating_sub(now).max(1));
                watchdog.as_mut().reset(tokio::time::Instant::now() + wait);
            }
        }
    }
}
