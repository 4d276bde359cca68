//! The request audit trail: one [`RequestAuditEvent`] per request, written in batches off the
//! request path, never lost across a database outage or a clean restart.
//!
//! A request never waits for the audit: its [`Recorder`] pushes the finished event into a
//! bounded queue with `try_send`. A writer task drains the queue in batches (up to
//! [`BATCH`] events, or what arrived within [`GATHER`]) through [`AuditSink::write_batch`].
//! When a write fails, the batch goes to a local spill file (JSON lines, ids and numbers only:
//! no token, no secret, no query string), and for a while every batch goes there directly
//! instead of waiting on a database that is down. When a write succeeds again, the spill file
//! is replayed and emptied. A full queue (the writer cannot keep up) spills from the request
//! path itself, a rare and short blocking append. On shutdown the queue is flushed (to the
//! database, or the spill file); on start, a spill file left behind is replayed.
//!
//! Replay first renames the spill file to `<spill>.replay`, so that new spills and the replay do
//! not mix; a `.replay` left by a crash is replayed first. Delivery is at least once: a crash in
//! the middle of a replay can write a batch twice.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use airlock_core::state::{AuditSink, RequestAuditEvent};
use airlock_core::{
    AccountId, AuditId, DevboxId, GatewayConfigId, Metered, SecretId, TokenId, Usage,
};
use http::{HeaderValue, Method, Uri};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::error::{Code, ProxyError};
use crate::metrics::{Finished, Metrics, UpstreamErrorKind};
use crate::rewrite;
use crate::stage::{End, Runs};
use crate::state::{Owner, TokenEntry};
use crate::trace::{RequestTrace, Tracer};

/// Events per database write at most.
pub(crate) const BATCH: usize = 500;
/// How long the writer gathers events after the first one before writing.
const GATHER: Duration = Duration::from_millis(200);
/// Events the queue holds before requests spill directly.
const QUEUE: usize = 65_536;
/// How long one write may take before it counts as failed.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
const RETRY_START: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// Where requests put their events. Cheap to clone.
#[derive(Clone)]
pub(crate) struct AuditQueue {
    tx: mpsc::Sender<RequestAuditEvent>,
    flush: mpsc::Sender<oneshot::Sender<()>>,
    spill: Arc<Spill>,
}

impl AuditQueue {
    /// Starts the writer task and returns the queue.
    pub(crate) fn start<A: AuditSink>(
        sink: Arc<A>,
        spill_path: PathBuf,
        cancel: CancellationToken,
    ) -> AuditQueue {
        let (tx, rx) = mpsc::channel(QUEUE);
        let (flush, flush_rx) = mpsc::channel(8);
        let spill = Arc::new(Spill::new(spill_path));
        tokio::spawn(Writer::new(sink, spill.clone()).run(rx, flush_rx, cancel));
        AuditQueue { tx, flush, spill }
    }

    /// Never blocks on the database. When the queue is full, the event goes to the spill file.
    pub(crate) fn push(&self, event: RequestAuditEvent) {
        match self.tx.try_send(event) {
            Ok(()) => {}
            Err(
                mpsc::error::TrySendError::Full(event) | mpsc::error::TrySendError::Closed(event),
            ) => {
                if let Err(err) = self.spill.spill(std::slice::from_ref(&event)) {
                    tracing::error!(
                        error = %err,
                        "the audit queue is full and the spill file fails; an audit event is lost"
                    );
                }
            }
        }
    }

    /// Events waiting in the queue.
    pub(crate) fn depth(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    /// Events written to the spill file so far (replays putting events back not counted).
    pub(crate) fn spilled(&self) -> u64 {
        self.spill.spilled.load(Ordering::Relaxed)
    }

    /// Whether the spill file holds events not yet replayed.
    pub(crate) fn spill_pending(&self) -> bool {
        self.spill.pending()
    }

    /// Writes everything queued so far (to the sink, or the spill file) and returns when done.
    pub(crate) async fn flush(&self) {
        let (ack, done) = oneshot::channel();
        if self.flush.send(ack).await.is_ok() {
            let _ = done.await;
        }
    }
}

struct Writer<A> {
    sink: Arc<A>,
    spill: Arc<Spill>,
    /// While the sink is failing, batches spill without trying it until then.
    sink_down_until: Option<Instant>,
    retry: Duration,
}

impl<A: AuditSink> Writer<A> {
    fn new(sink: Arc<A>, spill: Arc<Spill>) -> Self {
        Writer {
            sink,
            spill,
            sink_down_until: None,
            retry: RETRY_START,
        }
    }

    async fn run(
        mut self,
        mut rx: mpsc::Receiver<RequestAuditEvent>,
        mut flush: mpsc::Receiver<oneshot::Sender<()>>,
        cancel: CancellationToken,
    ) {
        let mut batch = Vec::with_capacity(BATCH);
        if self.spill.pending() {
            self.replay().await;
        }
        loop {
            // Spilled events are retried when the sink's pause is over, or soon if it is not
            // paused (the spill came from a full queue).
            let retry_at = self.spill.pending().then(|| {
                self.sink_down_until
                    .unwrap_or_else(|| Instant::now() + RETRY_START)
            });
            tokio::select! {
                biased;
                () = cancel.cancelled() => {
                    drain(&mut rx, &mut batch);
                    self.write(&mut batch).await;
                    return;
                }
                Some(ack) = flush.recv() => {
                    drain(&mut rx, &mut batch);
                    self.write(&mut batch).await;
                    if self.spill.pending() {
                        self.replay().await;
                    }
                    let _ = ack.send(());
                }
                n = rx.recv_many(&mut batch, BATCH) => {
                    if n == 0 {
                        return;
                    }
                    let deadline = tokio::time::Instant::now() + GATHER;
                    while batch.len() < BATCH {
                        let room = BATCH - batch.len();
                        let more = rx.recv_many(&mut batch, room);
                        if !matches!(tokio::time::timeout_at(deadline, more).await, Ok(1..)) {
                            break;
                        }
                    }
                    self.write(&mut batch).await;
                }
                () = sleep_until(retry_at) => {
                    self.sink_down_until = None;
                    self.replay().await;
                }
            }
        }
    }

    /// Writes and empties `batch`: to the sink if it is believed up, else to the spill file.
    async fn write(&mut self, batch: &mut Vec<RequestAuditEvent>) {
        if batch.is_empty() {
            return;
        }
        let events = std::mem::take(batch);
        let sink_up = self.sink_down_until.is_none_or(|t| Instant::now() >= t);
        if sink_up && self.try_sink(&events).await {
            if self.spill.pending() {
                self.replay().await;
            }
            return;
        }
        self.spill_async(events).await;
    }

    /// One write to the sink; on failure the sink counts as down for a growing while.
    async fn try_sink(&mut self, events: &[RequestAuditEvent]) -> bool {
        let result = tokio::time::timeout(WRITE_TIMEOUT, self.sink.write_batch(events)).await;
        match result {
            Ok(Ok(())) => {
                self.sink_down_until = None;
                self.retry = RETRY_START;
                true
            }
            failed => {
                match failed {
                    Ok(Err(err)) => {
                        tracing::warn!(
                            error = %err,
                            events = events.len(),
                            "cannot write audit events; spilling them to the local file"
                        )
                    }
                    _ => tracing::warn!(
                        events = events.len(),
                        "writing audit events timed out; spilling them to the local file"
                    ),
                }
                self.sink_down_until = Some(Instant::now() + self.retry);
                self.retry = (self.retry * 2).min(RETRY_MAX);
                false
            }
        }
    }

    async fn spill_async(&mut self, events: Vec<RequestAuditEvent>) {
        let spill = self.spill.clone();
        let n = events.len();
        let result = tokio::task::spawn_blocking(move || spill.spill(&events)).await;
        match result {
            Ok(Ok(())) => {}
            Ok(Err(err)) => {
                tracing::error!(
                    error = %err,
                    events = n,
                    "cannot write the audit spill file; audit events are lost"
                )
            }
            Err(_) => tracing::error!(
                events = n,
                "the audit spill task failed; audit events are lost"
            ),
        }
    }

    /// Replays the spill file into the sink; what cannot be written goes back into it.
    async fn replay(&mut self) {
        loop {
            let spill = self.spill.clone();
            let opened = tokio::task::spawn_blocking(move || spill.begin_replay()).await;
            let mut reader = match opened {
                Ok(Ok(Some(reader))) => reader,
                Ok(Ok(None)) => return,
                Ok(Err(err)) => {
                    tracing::error!(error = %err, "cannot read the audit spill file");
                    return;
                }
                Err(_) => return,
            };
            loop {
                let read = tokio::task::spawn_blocking(move || {
                    let chunk = read_chunk(&mut reader, BATCH);
                    (reader, chunk)
                })
                .await;
                let Ok((back, chunk)) = read else { return };
                reader = back;
                let chunk = match chunk {
                    Ok(chunk) => chunk,
                    Err(err) => {
                        tracing::error!(error = %err, "cannot read the audit spill file");
                        return;
                    }
                };
                if chunk.is_empty() {
                    let spill = self.spill.clone();
                    let _ = tokio::task::spawn_blocking(move || spill.end_replay(&[], None)).await;
                    break;
                }
                if !self.try_sink(&chunk).await {
                    // Put back what was not written, and try again later.
                    let spill = self.spill.clone();
                    let put_back =
                        tokio::task::spawn_blocking(move || spill.end_replay(&chunk, Some(reader)))
                            .await;
                    if !matches!(put_back, Ok(Ok(()))) {
                        tracing::error!(
                            "cannot put unreplayed audit events back into the spill file"
                        );
                    }
                    return;
                }
            }
        }
    }
}

fn drain(rx: &mut mpsc::Receiver<RequestAuditEvent>, batch: &mut Vec<RequestAuditEvent>) {
    while let Ok(event) = rx.try_recv() {
        batch.push(event);
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// The local spill file.
pub(crate) struct Spill {
    path: PathBuf,
    replay_path: PathBuf,
    /// Serialises appends (from requests and the writer) with the replay's renames.
    lock: Mutex<()>,
    /// Whether the files may hold events: set by every append, cleared when a replay finds
    /// nothing left.
    pending: AtomicBool,
    /// Events spilled (a metric).
    spilled: AtomicU64,
}

impl Spill {
    fn new(path: PathBuf) -> Spill {
        let mut replay = path.clone().into_os_string();
        replay.push(".replay");
        let spill = Spill {
            path,
            replay_path: PathBuf::from(replay),
            lock: Mutex::new(()),
            pending: AtomicBool::new(false),
            spilled: AtomicU64::new(0),
        };
        // Left behind by an earlier run: replayed at start.
        spill.pending.store(spill.has_events(), Ordering::Release);
        spill
    }

    fn pending(&self) -> bool {
        self.pending.load(Ordering::Acquire)
    }

    fn guard(&self) -> std::sync::MutexGuard<'_, ()> {
        self.lock.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn has_events(&self) -> bool {
        let non_empty = |p: &Path| std::fs::metadata(p).is_ok_and(|m| m.len() > 0);
        non_empty(&self.path) || non_empty(&self.replay_path)
    }

    /// Appends events that the sink could not take (counted as spilled).
    fn spill(&self, events: &[RequestAuditEvent]) -> io::Result<()> {
        self.append(events)?;
        self.spilled
            .fetch_add(events.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    fn append(&self, events: &[RequestAuditEvent]) -> io::Result<()> {
        let mut text = String::with_capacity(events.len() * 320);
        for e in events {
            text.push_str(&to_line(e));
            text.push('\n');
        }
        let _g = self.guard();
        self.pending.store(true, Ordering::Release);
        append_to(&self.path)?.write_all(text.as_bytes())
    }

    /// Opens the file to replay: a `.replay` left behind, else the spill file moved aside.
    fn begin_replay(&self) -> io::Result<Option<BufReader<File>>> {
        let _g = self.guard();
        if !self.replay_path.exists() {
            match std::fs::metadata(&self.path) {
                Ok(m) if m.len() > 0 => std::fs::rename(&self.path, &self.replay_path)?,
                Ok(_) => {
                    self.pending.store(false, Ordering::Release);
                    return Ok(None);
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    self.pending.store(false, Ordering::Release);
                    return Ok(None);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(Some(BufReader::new(File::open(&self.replay_path)?)))
    }

    /// Ends a replay: `unwritten` and the rest of `reader` go back into the spill file.
    fn end_replay(
        &self,
        unwritten: &[RequestAuditEvent],
        reader: Option<BufReader<File>>,
    ) -> io::Result<()> {
        if !unwritten.is_empty() {
            self.append(unwritten)?;
        }
        let _g = self.guard();
        if let Some(mut reader) = reader {
            self.pending.store(true, Ordering::Release);
            let mut out = append_to(&self.path)?;
            io::copy(&mut reader, &mut out)?;
        }
        std::fs::remove_file(&self.replay_path)
    }
}

fn append_to(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)
}

/// Reads up to `n` events; lines that do not parse (a torn last line, a hand edit) are skipped.
fn read_chunk(reader: &mut BufReader<File>, n: usize) -> io::Result<Vec<RequestAuditEvent>> {
    let mut out = Vec::with_capacity(n);
    let mut line = String::new();
    while out.len() < n {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            break;
        }
        match from_line(&line) {
            Some(event) => out.push(event),
            None if line.trim().is_empty() => {}
            None => tracing::warn!("skipping an unreadable line of the audit spill file"),
        }
    }
    Ok(out)
}

/// One line of the spill file: a request event as JSON. Its shape is this struct's; a field
/// added to events is a field here (optional, so older files still read).
#[derive(Serialize, Deserialize)]
struct SpillLine {
    id: String,
    time_ms: i64,
    account_id: Option<String>,
    devbox_id: Option<String>,
    gateway_config_id: Option<String>,
    token_id: Option<String>,
    secret_id: Option<String>,
    secret_version: Option<i64>,
    method: String,
    path: String,
    status: u16,
    upstream_status: Option<u16>,
    latency_us: i64,
    ttfb_us: Option<i64>,
    bytes_in: i64,
    bytes_out: i64,
    client_addr: IpAddr,
    error_code: Option<String>,
    /// Absent in spill files written before request ids existed.
    #[serde(default)]
    request_id: Option<String>,
    /// Absent for gateways that are not metered, and in files written before metering.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    llm: Option<SpillLlm>,
}

/// The metered part of a [`SpillLine`].
#[derive(Serialize, Deserialize)]
struct SpillLlm {
    provider: Option<String>,
    model: Option<String>,
    input_tokens: u64,
    output_tokens: u64,
    cache_read_tokens: u64,
    cache_write_tokens: u64,
    reasoning_tokens: u64,
    exact: bool,
    cost_nanos: Option<u64>,
}

impl SpillLine {
    fn of(e: &RequestAuditEvent) -> SpillLine {
        let s = |id: Option<&str>| id.map(str::to_owned);
        SpillLine {
            id: e.id.as_str().to_owned(),
            time_ms: e.time_ms,
            account_id: s(e.account_id.as_ref().map(AccountId::as_str)),
            devbox_id: s(e.devbox_id.as_ref().map(DevboxId::as_str)),
            gateway_config_id: s(e.gateway_config_id.as_ref().map(GatewayConfigId::as_str)),
            token_id: s(e.token_id.as_ref().map(TokenId::as_str)),
            secret_id: s(e.secret_id.as_ref().map(SecretId::as_str)),
            secret_version: e.secret_version,
            method: e.method.clone(),
            path: e.path.clone(),
            status: e.status,
            upstream_status: e.upstream_status,
            latency_us: e.latency_us,
            ttfb_us: e.ttfb_us,
            bytes_in: e.bytes_in,
            bytes_out: e.bytes_out,
            client_addr: e.client_addr,
            error_code: e.error_code.clone(),
            request_id: e.request_id.clone(),
            llm: e.llm.as_ref().map(|m| SpillLlm {
                provider: m.provider.clone(),
                model: m.model.clone(),
                input_tokens: m.usage.input_tokens,
                output_tokens: m.usage.output_tokens,
                cache_read_tokens: m.usage.cache_read_tokens,
                cache_write_tokens: m.usage.cache_write_tokens,
                reasoning_tokens: m.usage.reasoning_tokens,
                exact: m.usage.exact,
                cost_nanos: m.cost_nanos,
            }),
        }
    }

    /// The event; ids are parsed, not trusted, since the file is outside the database.
    fn into_event(self) -> Option<RequestAuditEvent> {
        fn id<T>(
            text: Option<String>,
            parse: fn(&str, &str) -> Result<T, airlock_core::InvalidInput>,
        ) -> Option<Option<T>> {
            match text {
                None => Some(None),
                Some(t) => parse("id", &t).ok().map(Some),
            }
        }
        Some(RequestAuditEvent {
            id: AuditId::parse("id", &self.id).ok()?,
            time_ms: self.time_ms,
            account_id: id(self.account_id, AccountId::parse)?,
            devbox_id: id(self.devbox_id, DevboxId::parse)?,
            gateway_config_id: id(self.gateway_config_id, GatewayConfigId::parse)?,
            token_id: id(self.token_id, TokenId::parse)?,
            secret_id: id(self.secret_id, SecretId::parse)?,
            secret_version: self.secret_version,
            method: self.method,
            path: self.path,
            status: self.status,
            upstream_status: self.upstream_status,
            latency_us: self.latency_us,
            ttfb_us: self.ttfb_us,
            bytes_in: self.bytes_in,
            bytes_out: self.bytes_out,
            client_addr: self.client_addr,
            error_code: self.error_code,
            request_id: self.request_id,
            llm: self.llm.map(|m| Metered {
                provider: m.provider,
                model: m.model,
                usage: Usage {
                    input_tokens: m.input_tokens,
                    output_tokens: m.output_tokens,
                    cache_read_tokens: m.cache_read_tokens,
                    cache_write_tokens: m.cache_write_tokens,
                    reasoning_tokens: m.reasoning_tokens,
                    exact: m.exact,
                },
                cost_nanos: m.cost_nanos,
            }),
        })
    }
}

/// An event as one line of the spill file (without the newline).
pub(crate) fn to_line(e: &RequestAuditEvent) -> String {
    // Serialising plain strings and numbers cannot fail.
    serde_json::to_string(&SpillLine::of(e)).unwrap_or_default()
}

/// The event of one spill line; `None` for a line that does not read as one.
pub(crate) fn from_line(line: &str) -> Option<RequestAuditEvent> {
    serde_json::from_str::<SpillLine>(line).ok()?.into_event()
}

/// Longest path kept in an event.
const MAX_PATH: usize = 2048;

/// The per-request context: follows one request from its head to its end, holds the runs of its
/// gateway's stages (`stage`), and turns it into an event when it ends: when the response body
/// has been sent, or when the client went away (the recorder is dropped), or when a drain of
/// the rest of the response ends. Exactly one event per request.
///
/// It holds owned copies, never hyper's `Uri` or header values: those share the connection's
/// read buffer, and keeping one alive until the response ends keeps that buffer referenced
/// while hyper reads ahead, so hyper allocates another (docs/performance.md, "Memory per idle
/// connection").
pub(crate) struct Recorder {
    queue: AuditQueue,
    metrics: Arc<Metrics>,
    request_id: HeaderValue,
    started: Instant,
    time_ms: i64,
    /// The method if it may be recorded (see [`recorded_method`]).
    method: Option<Method>,
    /// The path as recorded: redacted or truncated already (see [`recorded_path`]).
    path: String,
    client_addr: IpAddr,
    token: Option<Arc<TokenEntry>>,
    /// A routed request's backend secret (a router token has none of its own).
    backend_secret: Option<SecretId>,
    /// A gone token's owner (see [`Recorder::owner`]); `None` when `token` is set.
    owner: Option<Arc<Owner>>,
    secret_version: Option<i64>,
    /// 0 until a response exists.
    status: u16,
    upstream_status: Option<u16>,
    ttfb: Option<Duration>,
    bytes_in: Option<Arc<AtomicU64>>,
    bytes_out: u64,
    error_code: Option<&'static str>,
    /// The error response Airlock produced, for the gateway's refusal counters.
    refusal: Option<Code>,
    upstream_error: Option<UpstreamErrorKind>,
    completed: bool,
    /// The client left and the rest of the response was read without it.
    drained: bool,
    /// The stages' state for this request; empty for a gateway without stages.
    runs: Runs,
    /// The request's spans, when traces are exported (`trace`); `None` costs nothing.
    trace: Option<Box<RequestTrace>>,
}

impl Recorder {
    pub(crate) fn new(
        queue: &AuditQueue,
        metrics: &Arc<Metrics>,
        request_id: HeaderValue,
        method: &Method,
        uri: &Uri,
        client_addr: IpAddr,
    ) -> Box<Recorder> {
        // Boxed: it travels from the pipeline into the response body, and a pointer moves
        // cheaper than its 300 bytes (and keeps hyper's per-connection future slot small).
        Box::new(Recorder {
            queue: queue.clone(),
            metrics: metrics.clone(),
            request_id,
            started: Instant::now(),
            time_ms: airlock_core::time::now_ms(),
            method: recorded_method(method),
            path: recorded_path(uri.path()),
            client_addr,
            token: None,
            backend_secret: None,
            owner: None,
            secret_version: None,
            status: 0,
            upstream_status: None,
            ttfb: None,
            bytes_in: None,
            bytes_out: 0,
            error_code: None,
            refusal: None,
            upstream_error: None,
            completed: false,
            drained: false,
            runs: Runs::default(),
            trace: None,
        })
    }

    /// Starts the request's server span (traces are exported), continuing the client's trace
    /// when its headers name one.
    pub(crate) fn traced(&mut self, tracer: &Tracer, headers: &http::HeaderMap) {
        let method = self.method.as_ref().map_or("_OTHER", Method::as_str);
        self.trace = Some(RequestTrace::start(
            tracer,
            headers,
            method,
            &self.path,
            self.client_addr,
        ));
    }

    /// A call upstream starts: when traced, its span, whose context goes into the request's
    /// headers.
    /// `attributes` is called only then.
    pub(crate) fn trace_upstream<B>(
        &mut self,
        req: &mut http::Request<B>,
        authority: &http::uri::Authority,
        attributes: impl FnOnce() -> Vec<opentelemetry::KeyValue>,
    ) {
        if let Some(trace) = &mut self.trace {
            let method = req.method().clone();
            trace.upstream(req.headers_mut(), method.as_str(), authority, attributes());
        }
    }

    /// A router's attempt did not serve the request.
    pub(crate) fn trace_attempt_failed(&mut self, why: &'static str, status: Option<u16>) {
        if let Some(trace) = &mut self.trace {
            trace.attempt_failed(why, status);
        }
    }

    /// The stages' runs of this request.
    pub(crate) fn runs(&mut self) -> &mut Runs {
        &mut self.runs
    }

    /// Whether the request's gateway has stages that run for it.
    pub(crate) fn has_runs(&self) -> bool {
        !self.runs.is_empty()
    }

    /// Whether a stage holds bytes back that must still reach the client.
    pub(crate) fn holds(&self) -> bool {
        self.runs.holds()
    }

    /// Whether reading the rest of the response after the client left is worth it.
    pub(crate) fn wants_drain(&self) -> bool {
        self.runs.wants_drain()
    }

    /// The client left, and the rest of the response was read without it (as far as it went).
    pub(crate) fn drained(mut self) {
        self.drained = true;
    }

    pub(crate) fn token(&mut self, token: &Arc<TokenEntry>) {
        self.token = Some(token.clone());
    }

    /// Whose token a refused request carried, when the token is gone but its tombstone
    /// remembers (the event is then the account's, with the token's ids).
    pub(crate) fn owner(&mut self, owner: Option<Arc<Owner>>) {
        self.owner = owner;
    }

    pub(crate) fn secret_version(&mut self, version: i64) {
        self.secret_version = Some(version);
    }

    /// A routed stream ended with an error event after its content started.
    pub(crate) fn stream_error(&mut self, code: &'static str) {
        self.error_code.get_or_insert(code);
    }

    /// The secret a router's backend used for this request.
    pub(crate) fn backend_secret(&mut self, id: SecretId, version: i64) {
        self.backend_secret = Some(id);
        self.secret_version = Some(version);
    }

    /// A routed request answered by the router itself (its own error, in the client's
    /// dialect): the status and the code it recorded.
    pub(crate) fn answered(&mut self, status: u16, code: Option<&'static str>) {
        self.status = status;
        self.error_code = code;
    }

    pub(crate) fn bytes_in(&mut self, counter: Arc<AtomicU64>) {
        self.bytes_in = Some(counter);
    }

    /// The upstream answered with its head.
    pub(crate) fn upstream(&mut self, status: u16) {
        self.upstream_status = Some(status);
        self.status = status;
        self.ttfb = Some(self.started.elapsed());
        if let Some(trace) = &mut self.trace {
            trace.upstream_head();
        }
    }

    pub(crate) fn refused(&mut self, err: &ProxyError) {
        let d = err.describe();
        self.status = d.status.as_u16();
        self.error_code = Some(d.code.as_str());
        self.refusal = Some(d.code);
    }

    /// The way to or from the upstream failed: counted now in the data plane's metrics, and
    /// with the request's gateway when it ends; the kind goes into the access log line.
    pub(crate) fn upstream_failed(&mut self, kind: UpstreamErrorKind) {
        self.metrics.upstream_error(kind);
        self.upstream_error = Some(kind);
    }

    pub(crate) fn add_bytes_out(&mut self, n: usize) {
        self.bytes_out += n as u64;
        if let (Some(trace), 1..) = (&mut self.trace, n) {
            trace.body_bytes();
        }
    }

    /// For a spliced (websocket) connection, whose bytes are counted by the splice.
    pub(crate) fn spliced(&mut self, to_upstream: u64, to_client: u64) {
        self.bytes_in
            .get_or_insert_with(Default::default)
            .fetch_add(to_upstream, Ordering::Relaxed);
        self.bytes_out += to_client;
    }

    /// The response ended with an error while streaming (the upstream broke off).
    pub(crate) fn broken(mut self, code: &'static str) {
        if code == "upstream_failed" {
            self.upstream_failed(UpstreamErrorKind::Body);
        }
        self.error_code.get_or_insert(code);
        self.completed = true;
    }

    /// The response was sent to its end.
    pub(crate) fn complete(mut self) {
        self.completed = true;
    }

    fn event(&mut self) -> RequestAuditEvent {
        let end = match (self.completed, self.drained) {
            (_, true) => End::Drained,
            (false, false) => End::ClientGone,
            (true, false) if self.error_code.is_some() || self.upstream_status.is_none() => {
                End::Failed
            }
            (true, false) => End::Complete,
        };
        if !self.completed {
            self.error_code.get_or_insert("client_disconnected");
            if self.status == 0 {
                // nginx's "client closed request": no response was ever produced.
                self.status = 499;
            }
        }
        let token = self.token.as_ref();
        let owner = self.owner.as_deref();
        let path = std::mem::take(&mut self.path);
        let us = |d: Duration| i64::try_from(d.as_micros()).unwrap_or(i64::MAX);
        let mut event = RequestAuditEvent {
            id: AuditId::generate(),
            time_ms: self.time_ms,
            account_id: token
                .map(|t| AccountId::clone(&t.account_id))
                .or_else(|| owner.map(|o| AccountId::clone(&o.account_id))),
            devbox_id: token
                .map(|t| t.devbox.id.clone())
                .or_else(|| owner.map(|o| o.devbox_id.clone())),
            gateway_config_id: token
                .map(|t| t.gateway.id.clone())
                .or_else(|| owner.map(|o| o.gateway_config_id.clone())),
            token_id: token
                .map(|t| t.id.clone())
                .or_else(|| owner.map(|o| o.token_id.clone())),
            secret_id: self
                .backend_secret
                .clone()
                .or_else(|| token.and_then(|t| t.secret.as_ref().map(|s| s.id.clone()))),
            secret_version: self.secret_version,
            method: self
                .method
                .as_ref()
                .map_or("<invalid>", Method::as_str)
                .to_owned(),
            path,
            status: self.status,
            upstream_status: self.upstream_status,
            latency_us: us(self.started.elapsed()),
            ttfb_us: self.ttfb.map(us),
            bytes_in: self.bytes_in.as_ref().map_or(0, |b| {
                i64::try_from(b.load(Ordering::Relaxed)).unwrap_or(i64::MAX)
            }),
            bytes_out: i64::try_from(self.bytes_out).unwrap_or(i64::MAX),
            client_addr: self.client_addr,
            error_code: self.error_code.map(str::to_owned),
            request_id: self.request_id.to_str().ok().map(str::to_owned),
            llm: None,
        };
        self.runs.finish(end, &mut event);
        event
    }
}

/// The method as an event records it: only one that passed the pipeline's own check, or was
/// refused for a reason that makes it safe to keep (`TRACE`). A method refused for its length
/// or for holding a token is recorded as `<invalid>`, so neither reaches the audit trail or the
/// access log.
fn recorded_method(method: &Method) -> Option<Method> {
    match rewrite::check_method(method) {
        Err(ProxyError::BadMethod | ProxyError::MisplacedToken) => None,
        _ => Some(method.clone()),
    }
}

/// The path as an event records it: a path that carries a token (by the same test as the
/// refusal, `misplaced_token`, so also percent-encoded) is never recorded; a long one is cut at
/// [`MAX_PATH`].
fn recorded_path(path: &str) -> String {
    if rewrite::token_like(path.as_bytes()) {
        "/<redacted>".to_owned()
    } else if path.len() > MAX_PATH {
        let mut end = MAX_PATH;
        while !path.is_char_boundary(end) {
            end -= 1;
        }
        path[..end].to_owned()
    } else {
        path.to_owned()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        let event = self.event();
        let gateway = self
            .token
            .as_ref()
            .map(|t| self.metrics.gateway(&t.gateway.id));
        if let (Some(stats), Some(metered)) = (&gateway, &event.llm) {
            stats.metered(metered);
        }
        self.metrics.request(
            gateway.as_deref(),
            &Finished {
                status: event.status,
                upstream_status: event.upstream_status,
                refusal: self.refusal,
                upstream_error: self.upstream_error,
                head: self.ttfb,
                total: self.started.elapsed(),
                bytes_in: u64::try_from(event.bytes_in).unwrap_or(0),
                bytes_out: u64::try_from(event.bytes_out).unwrap_or(0),
            },
        );
        // The access log: one line per request, under its own target so that it can be
        // silenced alone (`AIRLOCK_LOG=info,airlock_proxy::access=warn`).
        tracing::info!(
            target: "airlock_proxy::access",
            request_id = event.request_id.as_deref().unwrap_or_default(),
            method = %event.method,
            path = %event.path,
            status = event.status,
            upstream_status = event.upstream_status,
            error_code = event.error_code.as_deref(),
            upstream_error = self.upstream_error.map(UpstreamErrorKind::label),
            latency_us = event.latency_us,
            ttfb_us = event.ttfb_us,
            bytes_in = event.bytes_in,
            bytes_out = event.bytes_out,
            client_addr = %event.client_addr,
            devbox_id = event.devbox_id.as_ref().map(DevboxId::as_str),
            gateway_config_id = event.gateway_config_id.as_ref().map(GatewayConfigId::as_str),
            token_id = event.token_id.as_ref().map(TokenId::as_str),
            model = event.llm.as_ref().and_then(|m| m.model.as_deref()),
            input_tokens = event.llm.as_ref().map(|m| m.usage.input_tokens),
            output_tokens = event.llm.as_ref().map(|m| m.usage.output_tokens),
            usage_exact = event.llm.as_ref().map(|m| m.usage.exact),
            cost_nanos = event.llm.as_ref().and_then(|m| m.cost_nanos),
            "request"
        );
        if let Some(mut trace) = self.trace.take() {
            trace.finish(
                &event,
                self.refusal.map(Code::as_str),
                self.upstream_error.map(UpstreamErrorKind::label),
            );
        }
        self.queue.push(event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn event(i: i64) -> RequestAuditEvent {
        RequestAuditEvent {
            id: AuditId::generate(),
            time_ms: 1_700_000_000_000 + i,
            account_id: Some(AccountId::generate()),
            devbox_id: None,
            gateway_config_id: Some(GatewayConfigId::generate()),
            token_id: Some(TokenId::generate()),
            secret_id: Some(SecretId::generate()),
            secret_version: Some(3),
            method: "POST".into(),
            path: "/v1/chat/completions".into(),
            status: 200,
            upstream_status: None,
            latency_us: 1234,
            ttfb_us: Some(99),
            bytes_in: 10,
            bytes_out: 20,
            client_addr: "::1".parse().unwrap(),
            error_code: Some("upstream_failed".into()),
            request_id: Some("req-1".into()),
            llm: None,
        }
    }

    #[test]
    fn spill_lines_round_trip() {
        let mut e = event(1);
        let back = from_line(&to_line(&e)).unwrap();
        assert_eq!(format!("{e:?}"), format!("{back:?}"));
        e.llm = Some(Metered {
            provider: Some("anthropic".into()),
            model: Some("claude-sonnet-4-5".into()),
            usage: Usage {
                input_tokens: 12,
                output_tokens: 34,
                cache_read_tokens: 5,
                cache_write_tokens: 6,
                reasoning_tokens: 7,
                exact: true,
            },
            cost_nanos: Some(987_654),
        });
        let back = from_line(&to_line(&e)).unwrap();
        assert_eq!(back.llm, e.llm);
        assert!(from_line(r#"{"time_ms": 1}"#).is_none());
        let mut v: Value = serde_json::from_str(&to_line(&e)).unwrap();
        v["token_id"] = json!("not-an-id");
        assert!(from_line(&v.to_string()).is_none());
        // A line from before request ids and metering still reads.
        let mut old: Value = serde_json::from_str(&to_line(&event(2))).unwrap();
        old.as_object_mut().unwrap().remove("request_id");
        assert!(old.get("llm").is_none());
        let back = from_line(&old.to_string()).unwrap();
        assert_eq!((back.request_id, back.llm), (None, None));
    }

    #[test]
    fn spill_append_and_replay_files() {
        let dir = tempfile::tempdir().unwrap();
        let spill = Spill::new(dir.path().join("audit.spill"));
        assert!(!spill.has_events());
        spill.append(&[event(1), event(2), event(3)]).unwrap();
        assert!(spill.has_events());
        let mut reader = spill.begin_replay().unwrap().unwrap();
        // New spills during a replay go to the spill file, not the one being replayed.
        spill.append(&[event(4)]).unwrap();
        let first = read_chunk(&mut reader, 2).unwrap();
        assert_eq!(first.len(), 2);
        // The write of `first` failed: it and the rest go back.
        spill.end_replay(&first, Some(reader)).unwrap();
        let mut reader = spill.begin_replay().unwrap().unwrap();
        let all = read_chunk(&mut reader, 100).unwrap();
        let mut times: Vec<i64> = all.iter().map(|e| e.time_ms - 1_700_000_000_000).collect();
        times.sort();
        assert_eq!(times, [1, 2, 3, 4]);
        spill.end_replay(&[], None).unwrap();
        assert!(!spill.has_events());
        assert!(spill.begin_replay().unwrap().is_none());
    }
}
