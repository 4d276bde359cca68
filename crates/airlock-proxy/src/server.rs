//! Accepting connections: the listener loop, per-connection timeouts, and draining on shutdown.
//!
//! HTTP/1.1 and HTTP/2 (prior knowledge, or by ALPN) share the port: a connection's first bytes
//! tell HTTP/2's preface from HTTP/1, as hyper-util's auto builder does, and the connection task
//! then drives hyper's HTTP/1 or HTTP/2 connection itself ([`Conn`]).
//!
//! An HTTP/1 connection with nothing in flight for [`PARK_AFTER_MS`] is parked: hyper's
//! connection is ended without closing the socket (which costs nothing on the wire), its read
//! and write buffers (about 24 KiB) are freed, and the socket waits for readiness alone; when the
//! next bytes come, a new hyper connection takes the socket, with whatever the old one had read
//! and not parsed put back in front. The framing guard and the connection's bookkeeping stay
//! with the socket, so a parked connection is the same connection to everything but hyper.
//!
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
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use airlock_net::{NetStream, Prefixed};
use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::{AbortOnDropHandle, TaskTracker};

use crate::body::ResponseBody;
use crate::conn::{now_ms, Activity, ServeCtx};
use crate::h1guard::Guarded;
use crate::limits::SourceSlot;
use crate::memory;
use crate::metrics::{ConnectionGuard, ParkedGuard};
use crate::pipeline;
use crate::{Connections, RequestCtx};

/// What a connection's first bytes say it speaks.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Proto {
    H1,
    H2,
}

/// The HTTP/2 connection preface (RFC 9113 §3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The accepted socket, watching the bytes read: enough to notice the start of an HTTP/1
/// request head (the header timeout's clock).
struct Watched {
    stream: NetStream,
    activity: Arc<Activity>,
    /// Set once the connection's first bytes were HTTP/2's preface ([`Sniff`]): its requests
    /// have no heads to time.
    h2: bool,
}

impl Watched {
    fn saw(&mut self) {
        if !self.h2
            && self.activity.in_flight.load(Ordering::Acquire) == 0
            && self.activity.head_started.load(Ordering::Acquire) == 0
        {
            self.activity
                .head_started
                .store(now_ms(), Ordering::Release);
        }
    }

    /// The connection turned out to be HTTP/2: the bytes of its preface started no head.
    fn is_h2(&mut self) {
        self.h2 = true;
        self.activity.head_started.store(0, Ordering::Release);
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
                this.saw();
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
        // Ending hyper's connection to park the socket: the socket stays open.
        if self.activity.parking.load(Ordering::Acquire) {
            return Poll::Ready(Ok(()));
        }
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

/// hyper's HTTP/1 and HTTP/2 server settings. The connection task tells the two apart by the
/// HTTP/2 preface, as hyper-util's auto builder does, but drives hyper's HTTP/1 connection itself
/// so that it can park an idle one ([`Conn`]).
pub(crate) struct Http {
    h1: http1::Builder,
    h2: http2::Builder<TokioExecutor>,
}

pub(crate) fn builder(config: &crate::ProxyConfig) -> Http {
    // hyper answers 431 itself beyond this; below it the pipeline answers with the JSON error.
    let hyper_limit = config.max_header_bytes.saturating_mul(2).max(8192);
    let mut h1 = http1::Builder::new();
    h1.max_buf_size(hyper_limit)
        .header_read_timeout(None)
        .keep_alive(true)
        .half_close(false);
    let mut h2 = http2::Builder::new(TokioExecutor::new());
    h2.max_header_list_size(u32::try_from(hyper_limit).unwrap_or(u32::MAX))
        .max_concurrent_streams(256)
        // A PING when the connection has been quiet this long, and the connection closed when
        // it goes unanswered as long: a vanished peer does not keep its streams open.
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(config.h2_keep_alive_interval))
        .keep_alive_timeout(config.h2_keep_alive_interval);
    Http { h1, h2 }
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
    // Gives the memory of parked connections' buffers back to the system while this serves.
    let _release = AbortOnDropHandle::new(tokio::spawn(memory::release_after_parks()));
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
        h2: false,
    };
    let service = Service {
        requests,
        ctx: ctx.clone(),
        activity: activity.clone(),
        peer,
    };
    let header_timeout = ms(conns.header_read_timeout);
    let tick = header_timeout
        .min(ms(conns.idle_timeout))
        .min(ms(conns.send_timeout))
        .max(10);
    let mut conn = Conn {
        // Every HTTP/1 byte is checked for ambiguous framing before hyper parses it.
        phase: Phase::Sniff(Sniff {
            io: Guarded::new(io, activity.framing.clone()),
            buf: [0; H2_PREFACE.len()],
            len: 0,
        }),
        service,
        woke: 0,
        answered: 0,
        activity,
        watchdog: Box::pin(tokio::time::sleep(Duration::from_millis(tick))),
        deadline: now_ms() + tick,
        tick,
        stopping: None,
    };
    loop {
        tokio::select! {
            () = std::future::poll_fn(|cx| conn.poll(&conns, cx)) => return,
            () = ctx.stop.cancelled(), if conn.stopping.is_none() => {
                conn.stopping = Some(now_ms());
                if conn.shutdown() {
                    return;
                }
            }
        }
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX / 2)
}

/// An HTTP/1 connection with nothing in flight for this long gives back hyper's buffers (about
/// 24 KiB) and waits for its next request on the bare socket ([`Phase::Parked`]). A connection
/// in steady use never idles this long, so it is never rebuilt; an agent's connection, quiet for
/// seconds between model calls, holds no buffers while it waits.
const PARK_AFTER_MS: u64 = 250;

/// What hyper reads from and writes to: the socket (`Watched`), checked by the framing guard,
/// with bytes that were read before this hyper connection took over (by the protocol sniff, or
/// by the hyper connection before a park) put back in front.
type Io = Prefixed<Guarded<Watched>>;

/// The service of one client connection: each request goes to the pipeline.
#[derive(Clone)]
struct Service {
    requests: Arc<RequestCtx>,
    ctx: Arc<ServeCtx>,
    activity: Arc<Activity>,
    peer: SocketAddr,
}

type Answer = Result<Response<ResponseBody>, Infallible>;

impl hyper::service::Service<Request<Incoming>> for Service {
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Answer> + Send>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let requests = self.requests.clone();
        let ctx = self.ctx.clone();
        let peer = self.peer;
        let in_flight = self.activity.begin();
        Box::pin(async move { Ok(pipeline::handle(&requests, &ctx, req, peer, in_flight).await) })
    }
}

/// A client connection as it goes from one protocol phase to the next.
struct Conn {
    phase: Phase,
    /// Cloned into each hyper connection.
    service: Service,
    activity: Arc<Activity>,
    /// When the connection last woke from a park (0: never); it parks again only
    /// [`PARK_AFTER_MS`] after that.
    woke: u64,
    /// Requests answered when last looked at: a change means a request ended.
    answered: u64,
    /// The timeouts' clock (below), and when it is set to go off (`now_ms`).
    watchdog: Pin<Box<tokio::time::Sleep>>,
    deadline: u64,
    /// The longest the watchdog sleeps.
    tick: u64,
    /// Since when the connection has been shutting down (GOAWAY sent, or HTTP/1 told to close).
    stopping: Option<u64>,
}

enum Phase {
    /// Reading the first bytes until they are, or cannot be, HTTP/2's preface.
    Sniff(Sniff),
    /// Boxed, like each request's future: the connection task stays small while it is parked.
    H1(Box<http1::UpgradeableConnection<TokioIo<Io>, Service>>),
    H2(Pin<Box<http2::Connection<TokioIo<Io>, Service, TokioExecutor>>>),
    /// An idle HTTP/1 connection without hyper's buffers: a new hyper connection is made for it
    /// when the socket turns readable.
    Parked {
        io: Io,
        _counted: ParkedGuard,
    },
    Done,
}

struct Sniff {
    io: Guarded<Watched>,
    buf: [u8; H2_PREFACE.len()],
    len: usize,
}

impl Sniff {
    /// HTTP/2 or HTTP/1 once known (decided as hyper-util's auto builder decides, and as hyper
    /// would: HTTP/2 only with its whole preface, so an HTTP/1 request whose method is "PRI"
    /// still gets the header timeout), `None` if the connection ended before its first byte.
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<Option<Proto>>> {
        loop {
            let mut buf = ReadBuf::new(&mut self.buf[self.len..]);
            ready!(Pin::new(&mut self.io).poll_read(cx, &mut buf))?;
            let read = buf.filled().len();
            if read == 0 {
                return Poll::Ready(Ok((self.len > 0).then_some(Proto::H1)));
            }
            let (from, to) = (self.len, self.len + read);
            self.len = to;
            if self.buf[from..to] != H2_PREFACE[from..to] {
                return Poll::Ready(Ok(Some(Proto::H1)));
            }
            if to == H2_PREFACE.len() {
                return Poll::Ready(Ok(Some(Proto::H2)));
            }
        }
    }

    /// The stream, with the bytes read so far to be read again.
    fn into_io(self) -> Io {
        Prefixed::new(self.io, Bytes::copy_from_slice(&self.buf[..self.len]))
    }
}

/// A hyper HTTP/1 connection over `io`.
fn h1(conns: &Connections, service: &Service, io: Io) -> Phase {
    let conn = conns
        .http
        .h1
        .serve_connection(TokioIo::new(io), service.clone());
    Phase::H1(Box::new(conn.with_upgrades()))
}

impl Conn {
    /// Drives the connection to its end: its timeouts, and its protocol phases.
    fn poll(&mut self, conns: &Connections, cx: &mut Context<'_>) -> Poll<()> {
        if self.watchdog.as_mut().poll(cx).is_ready() {
            let now = now_ms();
            match self.watch(conns, now) {
                Some(next) => self.set_watchdog(now, next, cx),
                None => return Poll::Ready(()),
            }
        }
        self.drive(conns, cx)
    }

    /// The timeouts, when the watchdog goes off: `None` to close the connection now, else when
    /// to look again.
    ///
    /// - header read timeout: once the first byte of a request head has arrived, the head must
    ///   be whole within `header_read_timeout`;
    /// - idle timeout: nothing in flight for `idle_timeout`: a graceful shutdown;
    /// - close deadline: shutting down with nothing in flight, dropped `header_read_timeout`
    ///   later;
    /// - send timeout: a response the client has not taken any of for `send_timeout`;
    /// - park: an HTTP/1 connection with nothing in flight for [`PARK_AFTER_MS`].
    fn watch(&mut self, conns: &Connections, now: u64) -> Option<u64> {
        let header_timeout = ms(conns.header_read_timeout);
        // A connection shutting down with nothing in flight is dropped this long after.
        let close_grace = header_timeout;
        let a = &self.activity;
        let mut next = now + self.tick;
        if a.in_flight.load(Ordering::Acquire) == 0 {
            let head = a.head_started.load(Ordering::Acquire);
            let idle = a.idle_since.load(Ordering::Acquire);
            if let Some(since) = self.stopping {
                // Nothing in flight is lost by closing now; the peer had its chance to close
                // cleanly.
                let close_at = since.max(idle) + close_grace;
                if now >= close_at {
                    tracing::debug!("closing a connection: it did not close after its shutdown");
                    return None;
                }
                next = next.min(close_at);
            }
            if head != 0 {
                if now >= head + header_timeout {
                    tracing::debug!("closing a connection: its request head is late");
                    return None;
                }
                next = next.min(head + header_timeout);
            } else if now >= idle + ms(conns.idle_timeout) {
                if self.stopping.is_none() {
                    self.stopping = Some(now);
                    if self.shutdown() {
                        return None;
                    }
                    next = next.min(now + close_grace);
                }
            } else {
                next = next.min(idle + ms(conns.idle_timeout));
                if self.stopping.is_none() && self.can_park() {
                    let park_at = idle.max(self.woke) + PARK_AFTER_MS;
                    if now >= park_at {
                        self.park();
                    } else {
                        next = next.min(park_at);
                    }
                }
            }
        } else if let Some(since) = a.oldest_wait() {
            let send_timeout = ms(conns.send_timeout);
            if now >= since + send_timeout {
                tracing::debug!(
                    "closing a connection: the client has not taken its response within the send timeout"
                );
                return None;
            }
            next = next.min(since + send_timeout);
        }
        Some(next)
    }

    fn set_watchdog(&mut self, now: u64, next: u64, cx: &mut Context<'_>) {
        let next = next.max(now + 1);
        self.deadline = next;
        let at = tokio::time::Instant::now() + Duration::from_millis(next - now);
        self.watchdog.as_mut().reset(at);
        // Registers the waker for the new deadline.
        let _ = self.watchdog.as_mut().poll(cx);
    }

    /// The protocol phases, parking and waking on the way.
    fn drive(&mut self, conns: &Connections, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            match &mut self.phase {
                Phase::Sniff(sniff) => {
                    let proto = match ready!(sniff.poll(cx)) {
                        Ok(Some(proto)) => proto,
                        Ok(None) => return Poll::Ready(()),
                        Err(err) => {
                            tracing::debug!(error = %err, "connection ended with an error");
                            return Poll::Ready(());
                        }
                    };
                    let Phase::Sniff(mut sniff) = std::mem::replace(&mut self.phase, Phase::Done)
                    else {
                        unreachable!("matched above");
                    };
                    self.phase = if proto == Proto::H2 {
                        sniff.io.get_mut().is_h2();
                        let io = sniff.into_io();
                        let conn = conns
                            .http
                            .h2
                            .serve_connection(TokioIo::new(io), self.service.clone());
                        Phase::H2(Box::pin(conn))
                    } else {
                        h1(conns, &self.service, sniff.into_io())
                    };
                }
                Phase::H1(conn) => {
                    let Poll::Ready(ended) = Pin::new(&mut **conn).poll(cx) else {
                        self.idled(cx);
                        return Poll::Pending;
                    };
                    let parking = self.activity.parking.swap(false, Ordering::AcqRel);
                    if let Err(err) = ended {
                        tracing::debug!(error = %err, "connection ended with an error");
                        return Poll::Ready(());
                    }
                    if !parking {
                        return Poll::Ready(());
                    }
                    let Phase::H1(conn) = std::mem::replace(&mut self.phase, Phase::Done) else {
                        unreachable!("matched above");
                    };
                    // `None`: the connection was upgraded, and its socket went to the splice.
                    let Some(parts) = conn.into_parts() else {
                        return Poll::Ready(());
                    };
                    // What hyper had read and not parsed comes before what it had not read of
                    // the previous prefix. Copied: the `Bytes` hyper gives back holds its whole
                    // read buffer, even when empty.
                    let (rest, io) = parts.io.into_inner().into_parts();
                    let unread = if parts.read_buf.is_empty() && rest.is_empty() {
                        Bytes::new()
                    } else {
                        Bytes::from([&parts.read_buf[..], &rest[..]].concat())
                    };
                    self.phase = Phase::Parked {
                        io: Prefixed::new(io, unread),
                        _counted: conns.metrics.parked(),
                    };
                    memory::parked();
                }
                Phase::H2(conn) => {
                    if let Err(err) = ready!(conn.as_mut().poll(cx)) {
                        tracing::debug!(error = %err, "connection ended with an error");
                    }
                    return Poll::Ready(());
                }
                Phase::Parked { io, .. } => {
                    // Bytes already read, or the socket's (an error is hyper's to meet and report).
                    let readable = io.has_prefix()
                        || io.get_ref().has_buffered()
                        || io.get_ref().get_ref().stream.poll_read_ready(cx).is_ready();
                    if !readable {
                        return Poll::Pending;
                    }
                    let Phase::Parked { io, .. } = std::mem::replace(&mut self.phase, Phase::Done)
                    else {
                        unreachable!("matched above");
                    };
                    self.woke = now_ms();
                    self.phase = h1(conns, &self.service, io);
                }
                Phase::Done => return Poll::Ready(()),
            }
        }
    }

    /// After hyper's connection ran: if a request ended, the watchdog is set to park the
    /// connection [`PARK_AFTER_MS`] later, unless it is set to go off sooner. In steady use this
    /// moves the timer about once per `PARK_AFTER_MS`, not once per request.
    fn idled(&mut self, cx: &mut Context<'_>) {
        let answered = self.activity.framing.answered();
        if answered == self.answered {
            return;
        }
        self.answered = answered;
        let idle = self.activity.idle_since.load(Ordering::Acquire);
        let park_at = idle.max(self.woke) + PARK_AFTER_MS;
        if self.deadline > park_at && self.activity.in_flight.load(Ordering::Acquire) == 0 {
            self.set_watchdog(now_ms(), park_at, cx);
        }
    }

    /// Whether [`Conn::park`] would park: an HTTP/1 connection not already on its way to.
    fn can_park(&self) -> bool {
        matches!(self.phase, Phase::H1(_)) && !self.activity.parking.load(Ordering::Acquire)
    }

    /// Ends hyper's connection without closing the socket. Call with nothing in flight: a request
    /// hyper had parsed would be answered with `Connection: close`.
    fn park(&mut self) {
        if let Phase::H1(conn) = &mut self.phase {
            self.activity.parking.store(true, Ordering::Release);
            Pin::new(&mut **conn).graceful_shutdown();
        }
    }

    /// Starts a graceful shutdown (HTTP/2 GOAWAY, HTTP/1 close after the request in flight);
    /// true if there is nothing to finish and the connection may be dropped now.
    fn shutdown(&mut self) -> bool {
        match &mut self.phase {
            Phase::H1(conn) => {
                self.activity.parking.store(false, Ordering::Release);
                Pin::new(&mut **conn).graceful_shutdown();
                false
            }
            Phase::H2(conn) => {
                conn.as_mut().graceful_shutdown();
                false
            }
            Phase::Sniff(_) | Phase::Parked { .. } | Phase::Done => true,
        }
    }
}
