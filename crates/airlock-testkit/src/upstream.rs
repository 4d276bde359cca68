//! A real upstream server that records what it received.
//!
//! [`RecordingUpstream`] listens on 127.0.0.1 (port 0 unless told otherwise), speaks HTTP/1.1
//! and HTTP/2 (over TLS chosen by ALPN, in plain text by prior knowledge) and keeps, for every
//! request, the method, URI, version, every header value in arrival order (duplicates included),
//! the whole body with the arrival time of each body chunk, the peer address and the connection
//! number. It also counts accepted TCP connections, even ones that never sent a byte, and
//! completed TLS handshakes, and keeps the plaintext bytes it read, so a test can assert that a
//! secret never reached it in any form.
//!
//! What it answers is up to a [`Responder`]: a function from the recorded request to a
//! [`Reply`]: a whole response, an SSE stream written chunk by chunk with pauses, a hang, or a
//! closed connection. [`openai_chat`], [`anthropic_messages`] and [`gemini`] imitate the providers
//! well enough for their official SDKs, with token usage a test can predict ([`llm`]).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use bytes::{Bytes, BytesMut};
use http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::body::{self, AnyBody};

pub mod llm;

pub use self::llm::{anthropic_messages, gemini, openai_chat, ERROR_MODEL};

/// Decides what the upstream answers to a recorded request.
pub type Responder = Arc<dyn Fn(&RecordedRequest) -> Reply + Send + Sync>;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// One request as the upstream received it.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    pub method: Method,
    /// The request target: origin-form (`/path?query`) over HTTP/1.1; over HTTP/2 hyper builds
    /// an absolute URI from `:scheme`, `:authority` and `:path`. See [`path_and_query`](Self::path_and_query).
    pub uri: Uri,
    pub version: Version,
    /// Every header in the order hyper's header map yields them: names lower-cased, each name at
    /// its first appearance with all of its values, duplicates in arrival order.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The whole body.
    pub body: Bytes,
    /// Each body chunk with its arrival time, measured from when the request head arrived.
    pub body_chunks: Vec<(Duration, Bytes)>,
    /// False when the client broke off the body (the request is recorded all the same).
    pub body_complete: bool,
    /// The address the connection came from.
    pub peer: SocketAddr,
    /// The number of the connection this request arrived on, counting from 1.
    pub connection: usize,
    /// When the request head arrived.
    pub received_at: Instant,
}

impl RecordedRequest {
    /// The path, without the query.
    pub fn path(&self) -> &str {
        self.uri.path()
    }

    /// The query, without `?`.
    pub fn query(&self) -> Option<&str> {
        self.uri.query()
    }

    /// The path and query as sent: `/v1/chat/completions?x=1`.
    pub fn path_and_query(&self) -> String {
        self.uri
            .path_and_query()
            .map(|pq| pq.as_str().to_owned())
            .unwrap_or_else(|| "/".to_owned())
    }

    /// Every value of the header `name` (any case), in arrival order.
    pub fn header_values(&self, name: &str) -> Vec<&[u8]> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
            .collect()
    }

    /// The first value of the header `name` (any case), as text (lossy).
    pub fn header_str(&self, name: &str) -> Option<String> {
        self.header_values(name)
            .first()
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }

    /// The body as text (lossy).
    pub fn body_str(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON, if it is JSON.
    pub fn body_json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// Whether `needle` occurs anywhere in the request: the request line (method, URI, version),
    /// any header name or value, or the body.
    pub fn contains_bytes(&self, needle: &[u8]) -> bool {
        let request_line = format!("{} {} {:?}", self.method, self.uri, self.version);
        find(request_line.as_bytes(), needle)
            || self
                .headers
                .iter()
                .any(|(n, v)| find(n.as_bytes(), needle) || find(v, needle))
            || find(&self.body, needle)
    }
}

/// Whether `needle` occurs in `haystack`; an empty needle occurs everywhere.
pub(crate) fn find(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

/// What the upstream answers.
#[derive(Clone, Debug)]
pub enum Reply {
    /// A whole response.
    Full {
        status: u16,
        headers: Vec<(String, String)>,
        body: Bytes,
    },
    /// A response whose body is written chunk by chunk: each chunk after its delay (counted from
    /// the previous chunk), each in its own write, nothing buffered. For SSE use [`Reply::sse`].
    Stream {
        status: u16,
        headers: Vec<(String, String)>,
        chunks: Vec<(Duration, Bytes)>,
    },
    /// Never answers (until the upstream is dropped): for timeout tests.
    Hang,
    /// Closes the connection without a response.
    Close,
}

impl Reply {
    /// A JSON response.
    pub fn json(status: u16, value: &serde_json::Value) -> Reply {
        Reply::Full {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: Bytes::from(value.to_string()),
        }
    }

    /// A `text/plain` response.
    pub fn text(status: u16, text: &str) -> Reply {
        Reply::Full {
            status,
            headers: vec![("content-type".into(), "text/plain; charset=utf-8".into())],
            body: Bytes::copy_from_slice(text.as_bytes()),
        }
    }

    /// A response with no body.
    pub fn empty(status: u16) -> Reply {
        Reply::Full {
            status,
            headers: Vec::new(),
            body: Bytes::new(),
        }
    }

    /// A redirect (`301`, `302`, `303`, `307`, `308`) to `location`.
    pub fn redirect(status: u16, location: &str) -> Reply {
        Reply::Full {
            status,
            headers: vec![("location".into(), location.into())],
            body: Bytes::new(),
        }
    }

    /// A `200 text/event-stream` response: each event is written after its delay.
    pub fn sse(events: Vec<(Duration, String)>) -> Reply {
        Reply::Stream {
            status: 200,
            headers: vec![
                ("content-type".into(), "text/event-stream".into()),
                ("cache-control".into(), "no-cache".into()),
            ],
            chunks: events
                .into_iter()
                .map(|(delay, event)| (delay, Bytes::from(event)))
                .collect(),
        }
    }

    /// Adds a header to a full or streamed response (no effect on `Hang` and `Close`).
    pub fn with_header(mut self, name: &str, value: &str) -> Reply {
        if let Reply::Full { headers, .. } | Reply::Stream { headers, .. } = &mut self {
            headers.push((name.to_owned(), value.to_owned()));
        }
        self
    }
}

/// The default responder: `200 {"ok":true,"method":..,"path":..,"query":..}`.
pub fn echo() -> Responder {
    Arc::new(|req: &RecordedRequest| {
        Reply::json(
            200,
            &serde_json::json!({
                "ok": true,
                "method": req.method.as_str(),
                "path": req.path(),
                "query": req.query(),
            }),
        )
    })
}

/// A responder that always gives `reply`.
pub fn always(reply: Reply) -> Responder {
    Arc::new(move |_: &RecordedRequest| reply.clone())
}

/// How to start a [`RecordingUpstream`].
#[derive(Clone, Default)]
pub struct UpstreamOptions {
    /// Where to listen; default `127.0.0.1:0`.
    pub addr: Option<SocketAddr>,
    /// Serve TLS with this config (give it ALPN `h2` and `http/1.1` for both versions, as
    /// [`crate::tls::TestCa::server_config`] with [`crate::tls::ALPN_H2_HTTP11`] does).
    pub tls: Option<Arc<ServerConfig>>,
    /// What to answer; default [`echo`].
    pub responder: Option<Responder>,
}

impl std::fmt::Debug for UpstreamOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamOptions")
            .field("addr", &self.addr)
            .field("tls", &self.tls.is_some())
            .field("responder", &self.responder.is_some())
            .finish()
    }
}

impl UpstreamOptions {
    /// Plain HTTP on 127.0.0.1, port 0.
    pub fn plain() -> Self {
        Self::default()
    }

    /// TLS with `config` on 127.0.0.1, port 0.
    pub fn tls(config: Arc<ServerConfig>) -> Self {
        Self {
            tls: Some(config),
            ..Self::default()
        }
    }

    /// Listen on `addr` instead.
    pub fn bind(mut self, addr: SocketAddr) -> Self {
        self.addr = Some(addr);
        self
    }

    /// Answer with `responder`.
    pub fn responder(mut self, responder: Responder) -> Self {
        self.responder = Some(responder);
        self
    }
}

struct Shared {
    requests: Mutex<Vec<RecordedRequest>>,
    /// The number of recorded requests, watched by `wait_for_requests`.
    count: watch::Sender<usize>,
    /// Connections accepted since start or the last `clear`.
    connections: AtomicUsize,
    /// TLS handshakes completed since start or the last `clear`.
    handshakes: AtomicUsize,
    /// Numbers connections; never reset, so numbers stay unique.
    next_connection: AtomicUsize,
    responder: Mutex<Responder>,
    /// The plaintext bytes read from all connections, in order of reading.
    raw: Mutex<Vec<u8>>,
}

/// A running upstream; stops (closing every connection) when dropped.
pub struct RecordingUpstream {
    addr: SocketAddr,
    tls: bool,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
    /// Dropped with the upstream: wakes hanging replies and stops streamed ones.
    _shutdown: watch::Sender<()>,
}

impl std::fmt::Debug for RecordingUpstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordingUpstream")
            .field("addr", &self.addr)
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

impl Drop for RecordingUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RecordingUpstream {
    /// Binds and starts serving on the current tokio runtime.
    pub async fn start(opts: UpstreamOptions) -> Result<RecordingUpstream> {
        let bind = opts
            .addr
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
        let listener = TcpListener::bind(bind)
            .await
            .with_context(|| format!("binding the recording upstream to {bind}"))?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            requests: Mutex::new(Vec::new()),
            count: watch::Sender::new(0),
            connections: AtomicUsize::new(0),
            handshakes: AtomicUsize::new(0),
            next_connection: AtomicUsize::new(0),
            responder: Mutex::new(opts.responder.unwrap_or_else(echo)),
            raw: Mutex::new(Vec::new()),
        });
        let (shutdown_tx, shutdown_rx) = watch::channel(());
        let tls = opts.tls.map(TlsAcceptor::from);
        let is_tls = tls.is_some();
        let task = tokio::spawn(accept_loop(listener, shared.clone(), tls, shutdown_rx));
        Ok(RecordingUpstream {
            addr,
            tls: is_tls,
            shared,
            task,
            _shutdown: shutdown_tx,
        })
    }

    /// Plain HTTP on 127.0.0.1 with the default responder.
    pub async fn plain() -> Result<RecordingUpstream> {
        Self::start(UpstreamOptions::plain()).await
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Whether it serves TLS.
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// Its base URL, without a trailing slash: `http://127.0.0.1:PORT`, or over TLS
    /// `https://localhost:PORT` (the name test certificates carry) when bound to 127.0.0.1.
    pub fn url(&self) -> String {
        if self.tls && self.addr.ip() == std::net::Ipv4Addr::LOCALHOST {
            self.url_with_host("localhost")
        } else {
            self.ip_url()
        }
    }

    /// Its base URL with the IP address as host: `http(s)://127.0.0.1:PORT`.
    pub fn ip_url(&self) -> String {
        let host = match self.addr.ip() {
            std::net::IpAddr::V4(ip) => ip.to_string(),
            std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        };
        self.url_with_host(&host)
    }

    /// Its base URL with `host` as host.
    pub fn url_with_host(&self, host: &str) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{host}:{}", self.addr.port())
    }

    /// Every request recorded so far (since the last [`clear`](Self::clear)).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.requests.lock().expect("requests lock").clone()
    }

    /// The most recent request.
    pub fn last_request(&self) -> Option<RecordedRequest> {
        self.shared
            .requests
            .lock()
            .expect("requests lock")
            .last()
            .cloned()
    }

    /// TCP connections accepted, whether or not they sent anything.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// TLS handshakes completed (always 0 for plain HTTP).
    pub fn tls_handshakes(&self) -> usize {
        self.shared.handshakes.load(Ordering::SeqCst)
    }

    /// Every plaintext byte read from all connections (after TLS decryption): request heads and
    /// bodies over HTTP/1.1, frames over HTTP/2 (where HPACK may encode header values).
    pub fn raw_received(&self) -> Vec<u8> {
        self.shared.raw.lock().expect("raw lock").clone()
    }

    /// Whether `needle` occurs in any recorded request ([`RecordedRequest::contains_bytes`]) or
    /// in the raw bytes received.
    pub fn received_contains(&self, needle: &[u8]) -> bool {
        self.requests().iter().any(|r| r.contains_bytes(needle))
            || find(&self.shared.raw.lock().expect("raw lock"), needle)
    }

    /// Waits until at least `n` requests have been recorded (since the last clear) and returns
    /// them all; an error after `timeout` says how many arrived.
    pub async fn wait_for_requests(
        &self,
        n: usize,
        timeout: Duration,
    ) -> Result<Vec<RecordedRequest>> {
        let mut rx = self.shared.count.subscribe();
        let reached = tokio::time::timeout(timeout, rx.wait_for(|count| *count >= n))
            .await
            .is_ok_and(|changed| changed.is_ok());
        if !reached {
            anyhow::bail!(
                "waited {timeout:?} for {n} request(s) at the upstream, got {}",
                self.requests().len()
            );
        }
        Ok(self.requests())
    }

    /// Forgets the recorded requests and raw bytes and resets the connection and handshake
    /// counts. Connection numbers keep counting up.
    pub fn clear(&self) {
        let mut requests = self.shared.requests.lock().expect("requests lock");
        requests.clear();
        self.shared.raw.lock().expect("raw lock").clear();
        self.shared.connections.store(0, Ordering::SeqCst);
        self.shared.handshakes.store(0, Ordering::SeqCst);
        self.shared.count.send_replace(0);
    }

    /// Answers every following request with `responder`.
    pub fn set_responder(&self, responder: Responder) {
        *self.shared.responder.lock().expect("responder lock") = responder;
    }

    /// Answers every following request with `reply`.
    pub fn set_reply(&self, reply: Reply) {
        self.set_responder(always(reply));
    }
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    tls: Option<TlsAcceptor>,
    shutdown: watch::Receiver<()>,
) {
    // Connection tasks live in this set, so aborting the accept loop closes them all.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    shared.connections.fetch_add(1, Ordering::SeqCst);
                    let number = shared.next_connection.fetch_add(1, Ordering::SeqCst) + 1;
                    let conn = Conn {
                        shared: shared.clone(),
                        peer,
                        number,
                        kill: Arc::new(Notify::new()),
                        shutdown: shutdown.clone(),
                    };
                    connections.spawn(serve_connection(stream, tls.clone(), conn));
                }
                // Out of file descriptors and the like: back off instead of spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// What a request handler knows about its connection.
#[derive(Clone)]
struct Conn {
    shared: Arc<Shared>,
    peer: SocketAddr,
    number: usize,
    /// Notified to drop the connection without answering.
    kill: Arc<Notify>,
    shutdown: watch::Receiver<()>,
}

async fn serve_connection(stream: TcpStream, tls: Option<TlsAcceptor>, conn: Conn) {
    let _ = stream.set_nodelay(true);
    match tls {
        None => serve_http(Tap::new(stream, conn.shared.clone()), conn).await,
        Some(acceptor) => {
            let Ok(stream) = acceptor.accept(stream).await else {
                return;
            };
            conn.shared.handshakes.fetch_add(1, Ordering::SeqCst);
            serve_http(Tap::new(stream, conn.shared.clone()), conn).await;
        }
    }
}

async fn serve_http<I>(io: I, conn: Conn)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let kill = conn.kill.clone();
    let service = hyper::service::service_fn(move |req| handle(req, conn.clone()));
    // The auto builder reads the first bytes: the HTTP/2 preface (prior knowledge, or after ALPN
    // h2) selects HTTP/2, anything else HTTP/1.1.
    let builder = auto::Builder::new(TokioExecutor::new());
    let connection = builder.serve_connection(TokioIo::new(io), service);
    tokio::select! {
        _ = connection => {}
        // Dropping the connection future closes the socket without a response.
        () = kill.notified() => {}
    }
}

async fn handle(req: Request<Incoming>, conn: Conn) -> Result<Response<AnyBody>, BoxError> {
    let received_at = Instant::now();
    let (parts, mut body) = req.into_parts();
    let mut all = BytesMut::new();
    let mut chunks = Vec::new();
    let mut body_complete = true;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Ok(data) = frame.into_data() {
                    all.extend_from_slice(&data);
                    chunks.push((received_at.elapsed(), data));
                }
            }
            Err(_) => {
                body_complete = false;
                break;
            }
        }
    }
    let recorded = RecordedRequest {
        method: parts.method,
        uri: parts.uri,
        version: parts.version,
        headers: parts
            .headers
            .iter()
            .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
            .collect(),
        body: all.freeze(),
        body_chunks: chunks,
        body_complete,
        peer: conn.peer,
        connection: conn.number,
        received_at,
    };
    let responder = conn
        .shared
        .responder
        .lock()
        .expect("responder lock")
        .clone();
    let reply = responder(&recorded);
    conn.shared
        .requests
        .lock()
        .expect("requests lock")
        .push(recorded);
    conn.shared.count.send_modify(|count| *count += 1);
    if !body_complete {
        return Err("the client broke off the request body".into());
    }

    match reply {
        Reply::Full {
            status,
            headers,
            body,
        } => response(status, &headers, body::full(body)),
        Reply::Stream {
            status,
            headers,
            chunks,
        } => {
            let mut shutdown = conn.shutdown.clone();
            let stop = async move {
                let _ = shutdown.changed().await;
            };
            response(status, &headers, body::timed(chunks, stop))
        }
        Reply::Hang => {
            let mut shutdown = conn.shutdown.clone();
            let _ = shutdown.changed().await;
            Err("the upstream shut down".into())
        }
        Reply::Close => {
            conn.kill.notify_one();
            Err("closing the connection without a response".into())
        }
    }
}

fn response(
    status: u16,
    headers: &[(String, String)],
    body: AnyBody,
) -> Result<Response<AnyBody>, BoxError> {
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::from_u16(status)?;
    for (name, value) in headers {
        response.headers_mut().append(
            HeaderName::from_bytes(name.as_bytes())?,
            HeaderValue::from_str(value)?,
        );
    }
    Ok(response)
}

/// Passes I/O through and keeps a copy of every byte read.
struct Tap<I> {
    inner: I,
    shared: Arc<Shared>,
}

impl<I> Tap<I> {
    fn new(inner: I, shared: Arc<Shared>) -> Self {
        Tap { inner, shared }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Tap<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &result {
            let new = &buf.filled()[before..];
            if !new.is_empty() {
                this.shared
                    .raw
                    .lock()
                    .expect("raw lock")
                    .extend_from_slice(new);
            }
        }
        result
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Tap<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
