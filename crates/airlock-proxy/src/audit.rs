//! The request audit trail: one [`RequestAuditEvent`] per request, written in batches off the
//! request path, never lost across a database outage or a clean restart.
//!
//! A request never waits for the audit: its [`Recorder`] pushes the finished event into a
//! bounded queue with `try_send`, and wakes nobody. A background writer, on a thread of its own
//! at idle priority, looks at the queue every [`TICK`] and writes batches (up to [`BATCH`]
//! events, or what waited [`GATHER`]) through [`AuditSink::write_batch`]; a catch-up writer at
//! normal priority takes over while the background one falls behind (see [`Shared`]).
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
use std::future::Future;
use std::io::{self, BufRead, BufReader, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use airlock_core::state::{AuditSink, RequestAuditEvent};
use airlock_core::{
    AccountId, AuditId, DevboxId, GatewayConfigId, Metered, SecretId, TokenId, Usage,
};
use http::{HeaderValue, Method, Uri};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, Notify};
use tokio_util::sync::CancellationToken;

use crate::error::{Code, ProxyError};
use crate::metrics::{Finished, Metrics, UpstreamErrorKind};
use crate::rewrite;
use crate::stage::{End, Runs};
use crate::state::{Owner, TokenEntry};
use crate::trace::{RequestTrace, Tracer};

/// Events per database write of the catch-up writer at most.
pub(crate) const BATCH: usize = 500;
/// Events per database write of the background writer: about one statement
/// (`airlock_store::EVENTS_PER_STATEMENT`), so that a write the scheduler holds back keeps the
/// catch-up writer from the database for one statement at most.
const IDLE_BATCH: usize = 100;
/// How often the background writer looks at the queue while events keep coming. It looks
/// rather than waits: a writer waiting on the queue would be woken by every event, and the
/// request that pushed it would pay for the wake.
const TICK: Duration = Duration::from_millis(10);
/// How long events may wait in the queue for a batch to fill before they are written.
const GATHER: Duration = Duration::from_millis(200);
/// Ticks that find the queue empty before the background writer sleeps until the next event.
const IDLE_TICKS: u32 = 100;
/// Events the queue holds before requests spill directly.
const QUEUE: usize = 8_192;
/// How often the catch-up writer checks that the background writer makes progress.
const STALL_CHECK: Duration = Duration::from_millis(500);
/// How long the background writer stands by after the catch-up writer handed back, in ms.
const STAND_BY_MS: i64 = 1_000;
/// How long one write may take before it counts as failed.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
const RETRY_START: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// Where requests put their events. Cheap to clone.
#[derive(Clone)]
pub(crate) struct AuditQueue {
    shared: Arc<Shared>,
    flush: mpsc::Sender<oneshot::Sender<()>>,
    spill: Arc<Spill>,
}

/// What the request path and the two writers share.
///
/// Two writers drain one queue. The background writer runs on a thread of its own at idle
/// priority (`SCHED_IDLE` on Linux), with a database connection of its own that its thread
/// opens, so that SQLite's connection thread inherits the policy: the audit's work then never
/// holds a core that a request wants, not even for the rest of a scheduler slice
/// (docs/performance.md, "The one-connection tail"). An idle-priority thread can starve while
/// the machine is saturated, so a second writer at normal priority, the catch-up writer, takes
/// over when the queue backs up or the background writer stops making progress, and hands
/// back when the queue is short again. It also answers flushes and writes what is left at
/// shutdown, so that nothing that must finish waits for an idle-priority thread.
///
/// A store that takes one write at a time (SQLite) must not make the catch-up writer wait on
/// a background writer that the scheduler holds back in the middle of a write (a priority
/// inversion): while the background writer holds a batch, the catch-up writer sends its
/// batches to the spill file, which the background writer replays later.
struct Shared {
    tx: mpsc::Sender<RequestAuditEvent>,
    /// Locked by a writer only while it takes a batch out (never across a write).
    rx: Mutex<mpsc::Receiver<RequestAuditEvent>>,
    /// Queued events from which the catch-up writer helps.
    backlog: usize,
    /// Whether the sink takes one write at a time ([`AuditSink::single_writer`]).
    single_writer: bool,
    /// Set while the background writer sleeps on an empty queue; the next push wakes it.
    asleep: AtomicBool,
    wake: Notify,
    /// Wakes the catch-up writer: the queue holds `backlog` events or more.
    behind: Notify,
    /// Batches the background writer has taken (the catch-up writer watches it move).
    progress: AtomicU64,
    /// Set while the catch-up writer drains the queue; the background writer then stands by.
    catching_up: AtomicBool,
    /// When the catch-up writer last handed back (ms since the epoch); the background writer
    /// stands by for [`STAND_BY_MS`] after it, so that it does not take a batch, and with it the
    /// store's write lock, while the machine is still busy.
    caught_up_at: AtomicI64,
    /// Held by the background writer while it has a batch in hand, and by a replay or a flush.
    writing: tokio::sync::Mutex<()>,
    /// Events the catch-up writer took (a metric).
    caught_up: AtomicU64,
}

impl Shared {
    fn depth(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    fn receiver(&self) -> std::sync::MutexGuard<'_, mpsc::Receiver<RequestAuditEvent>> {
        self.rx.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes up to `n` queued events.
    fn take(&self, n: usize) -> Vec<RequestAuditEvent> {
        take_from(&mut self.receiver(), n)
    }

    /// Takes up to `n` queued events, or `None` when the other writer is taking its batch (it
    /// may be an idle-priority thread that the scheduler holds, so this does not wait for it).
    fn try_take(&self, n: usize) -> Option<Vec<RequestAuditEvent>> {
        let mut rx = match self.rx.try_lock() {
            Ok(rx) => rx,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return None,
        };
        Some(take_from(&mut rx, n))
    }
}

fn take_from(rx: &mut mpsc::Receiver<RequestAuditEvent>, n: usize) -> Vec<RequestAuditEvent> {
    let mut batch = Vec::with_capacity(n.min(rx.len()));
    while batch.len() < n {
        match rx.try_recv() {
            Ok(event) => batch.push(event),
            Err(_) => break,
        }
    }
    batch
}

impl AuditQueue {
    /// Starts the two writers and returns the queue.
    pub(crate) fn start<A: AuditSink>(
        sink: Arc<A>,
        spill_path: PathBuf,
        cancel: CancellationToken,
    ) -> AuditQueue {
        Self::with_capacity(sink, spill_path, cancel, QUEUE)
    }

    /// [`start`](Self::start) with a queue of `queue` events; the catch-up writer helps from a
    /// sixteenth of it.
    fn with_capacity<A: AuditSink>(
        sink: Arc<A>,
        spill_path: PathBuf,
        cancel: CancellationToken,
        queue: usize,
    ) -> AuditQueue {
        let (tx, rx) = mpsc::channel(queue);
        let (flush, flush_rx) = mpsc::channel(8);
        let spill = Arc::new(Spill::new(spill_path));
        let shared = Arc::new(Shared {
            tx,
            rx: Mutex::new(rx),
            backlog: (queue / 16).max(1),
            single_writer: sink.single_writer(),
            asleep: AtomicBool::new(false),
            wake: Notify::new(),
            behind: Notify::new(),
            progress: AtomicU64::new(0),
            catching_up: AtomicBool::new(false),
            caught_up_at: AtomicI64::new(0),
            writing: tokio::sync::Mutex::new(()),
            caught_up: AtomicU64::new(0),
        });
        let (sh, sp, c, s) = (shared.clone(), spill.clone(), cancel.clone(), sink.clone());
        spawn_writer("audit-writer", true, async move {
            Writer::new(s, sp, IDLE_BATCH).run(sh, c).await;
        });
        let (sh, sp) = (shared.clone(), spill.clone());
        spawn_writer("audit-catch-up", false, async move {
            Writer::new(sink, sp, BATCH)
                .catch_up(sh, flush_rx, cancel)
                .await;
        });
        AuditQueue {
            shared,
            flush,
            spill,
        }
    }

    /// Never blocks on the database. When the queue is full, the event goes to the spill file.
    pub(crate) fn push(&self, event: RequestAuditEvent) {
        let shared = &*self.shared;
        match shared.tx.try_send(event) {
            Ok(()) => {
                // Pairs with the background writer's store before it looks at the queue a
                // last time: either it sees this event, or this sees it asleep.
                std::sync::atomic::fence(Ordering::SeqCst);
                if shared.asleep.load(Ordering::Relaxed)
                    && shared.asleep.swap(false, Ordering::AcqRel)
                {
                    shared.wake.notify_one();
                }
                if shared.depth() >= shared.backlog {
                    shared.behind.notify_one();
                }
            }
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
        self.shared.depth()
    }

    /// Events written by the catch-up writer so far (the background writer fell behind).
    pub(crate) fn caught_up(&self) -> u64 {
        self.shared.caught_up.load(Ordering::Relaxed)
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

/// Runs a writer on a thread of its own with a runtime of its own, at idle priority if `idle`
/// (where the system has it); on the caller's runtime if the thread cannot start.
fn spawn_writer<F>(name: &'static str, idle: bool, writer: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            tracing::warn!(error = %err, thread = name, "cannot start the audit writer's runtime");
            tokio::spawn(writer);
            return;
        }
    };
    // Taken by the thread, or back by this function if the thread does not start.
    let slot = Arc::new(Mutex::new(Some(writer)));
    let taken = slot.clone();
    let started = std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            if idle && !idle_priority() {
                tracing::info!(
                    "SCHED_IDLE is not available; the audit writer runs at normal priority"
                );
            }
            let writer = taken.lock().unwrap_or_else(|p| p.into_inner()).take();
            if let Some(writer) = writer {
                runtime.block_on(writer);
            }
        });
    if let Err(err) = started {
        tracing::warn!(error = %err, thread = name, "cannot start the audit writer's thread");
        if let Some(writer) = slot.lock().unwrap_or_else(|p| p.into_inner()).take() {
            tokio::spawn(writer);
        }
    }
}

/// Puts the calling thread into `SCHED_IDLE`: it runs only on a core that nothing else of
/// normal priority wants, and never holds one that a request is woken for. False where the
/// system refuses (or has no such policy).
#[cfg(target_os = "linux")]
fn idle_priority() -> bool {
    use thread_priority::{
        thread_native_id, thread_schedule_policy, NormalThreadSchedulePolicy, ThreadPriority,
        ThreadSchedulePolicy,
    };
    let idle = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);
    // The crate also sets the thread's nice value to 0, which a process started with a higher
    // one may not do; the policy is what counts.
    let _ = thread_priority::set_thread_priority_and_policy(
        thread_native_id(),
        ThreadPriority::Min,
        idle,
    );
    thread_schedule_policy().is_ok_and(|p| p == idle)
}

#[cfg(not(target_os = "linux"))]
fn idle_priority() -> bool {
    false
}

struct Writer<A> {
    sink: Arc<A>,
    spill: Arc<Spill>,
    /// Events per write and per replayed chunk.
    batch: usize,
    /// While the sink is failing, batches spill without trying it until then.
    sink_down_until: Option<Instant>,
    retry: Duration,
}

impl<A: AuditSink> Writer<A> {
    /// A writer on a connection of its own where the sink offers one. Called on the writer's
    /// own thread: the connection's threads, if any, are started by it and take its priority.
    fn new(sink: Arc<A>, spill: Arc<Spill>, batch: usize) -> Self {
        Writer {
            sink: sink.dedicated().map_or(sink, Arc::new),
            spill,
            batch,
            sink_down_until: None,
            retry: RETRY_START,
        }
    }

    /// The background writer: every [`TICK`], writes a batch when one is full or its first
    /// event has waited [`GATHER`]; sleeps on an empty queue; replays the spill file.
    async fn run(mut self, shared: Arc<Shared>, cancel: CancellationToken) {
        if self.spill.pending() {
            let _writing = shared.writing.lock().await;
            self.replay(Some(&shared.catching_up)).await;
        }
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut empty_ticks = 0;
        let mut waiting_since: Option<Instant> = None;
        loop {
            // Spilled events are retried when the sink's pause is over, or soon if it is not
            // paused (the spill came from a full queue or the catch-up writer).
            let retry_at = self.spill.pending().then(|| {
                self.sink_down_until
                    .unwrap_or_else(|| Instant::now() + RETRY_START)
            });
            let asleep = empty_ticks >= IDLE_TICKS;
            tokio::select! {
                biased;
                () = cancel.cancelled() => return,
                () = shared.wake.notified(), if asleep => {
                    empty_ticks = 0;
                }
                due = tick.tick(), if !asleep => {
                    let depth = shared.depth();
                    if depth == 0 {
                        waiting_since = None;
                        empty_ticks += 1;
                        if empty_ticks >= IDLE_TICKS {
                            shared.asleep.store(true, Ordering::SeqCst);
                            if shared.depth() > 0 {
                                shared.asleep.store(false, Ordering::SeqCst);
                                empty_ticks = 0;
                            }
                        }
                        continue;
                    }
                    empty_ticks = 0;
                    let since = *waiting_since.get_or_insert_with(Instant::now);
                    // The catch-up writer's work: more than two statements' worth waiting (the
                    // load is rising faster than this writer should follow), or a core so busy
                    // that this thread's tick came late; a write started then would likely be
                    // held back half done, holding the store's write lock. And for a while after
                    // the catch-up writer handed back.
                    let stand_by = depth > 2 * IDLE_BATCH
                        || due.elapsed() > TICK
                        || shared.catching_up.load(Ordering::Acquire)
                        || airlock_core::time::now_ms()
                            .saturating_sub(shared.caught_up_at.load(Ordering::Acquire))
                            < STAND_BY_MS;
                    if stand_by || (depth < IDLE_BATCH && since.elapsed() < GATHER) {
                        continue;
                    }
                    let Ok(_writing) = shared.writing.try_lock() else { continue };
                    let batch = shared.take(IDLE_BATCH);
                    shared.progress.fetch_add(1, Ordering::Release);
                    if depth <= IDLE_BATCH {
                        waiting_since = None;
                    }
                    if self.write(batch).await && self.spill.pending() {
                        self.replay(Some(&shared.catching_up)).await;
                    }
                }
                () = sleep_until(retry_at) => {
                    let busy = shared.catching_up.load(Ordering::Acquire)
                        || shared.depth() >= shared.backlog;
                    // The sink's pause is over either way; if the replay waits for a calmer
                    // moment, the next try is RETRY_START from now.
                    self.sink_down_until = None;
                    if let (false, Ok(_writing)) = (busy, shared.writing.try_lock()) {
                        self.replay(Some(&shared.catching_up)).await;
                    }
                }
            }
        }
    }

    /// The catch-up writer: when the queue backs up, or holds events that the background
    /// writer has not moved for a [`STALL_CHECK`], writes batches until the queue is short.
    /// Answers flushes, and writes what is left when the data plane stops.
    async fn catch_up(
        mut self,
        shared: Arc<Shared>,
        mut flush: mpsc::Receiver<oneshot::Sender<()>>,
        cancel: CancellationToken,
    ) {
        // The background writer's progress and whether events were waiting, at the last check.
        let mut last = (0, false);
        loop {
            let behind = tokio::select! {
                biased;
                () = cancel.cancelled() => {
                    let _writing = shared.writing.lock().await;
                    self.write_all(&shared).await;
                    return;
                }
                Some(ack) = flush.recv() => {
                    // Waits for a batch the background writer holds.
                    let _writing = shared.writing.lock().await;
                    self.write_all(&shared).await;
                    if self.spill.pending() {
                        self.replay(None).await;
                    }
                    let _ = ack.send(());
                    continue;
                }
                () = shared.behind.notified() => shared.depth() >= shared.backlog,
                () = tokio::time::sleep(STALL_CHECK) => false,
            };
            let progress = shared.progress.load(Ordering::Acquire);
            let waiting = shared.depth() > 0;
            let stalled = waiting && last == (progress, true);
            last = (progress, waiting);
            if !(behind || stalled) {
                continue;
            }
            shared.catching_up.store(true, Ordering::Release);
            loop {
                let Some(batch) = shared.try_take(BATCH) else {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    continue;
                };
                let n = batch.len();
                shared.caught_up.fetch_add(n as u64, Ordering::Relaxed);
                // Held while writing, so that the background writer does not start a write of
                // its own meanwhile.
                let writing = shared.writing.try_lock();
                if shared.single_writer && writing.is_err() {
                    self.spill_async(batch).await;
                } else {
                    self.write(batch).await;
                }
                drop(writing);
                if n < BATCH {
                    break;
                }
            }
            shared
                .caught_up_at
                .store(airlock_core::time::now_ms(), Ordering::Release);
            shared.catching_up.store(false, Ordering::Release);
            last = (shared.progress.load(Ordering::Acquire), false);
        }
    }

    /// Writes everything queued (the catch-up writer, for a flush or at shutdown).
    async fn write_all(&mut self, shared: &Shared) {
        loop {
            let Some(batch) = shared.try_take(BATCH) else {
                tokio::time::sleep(Duration::from_millis(1)).await;
                continue;
            };
            if batch.is_empty() {
                return;
            }
            self.write(batch).await;
        }
    }

    /// Writes `events`: to the sink if it is believed up, else to the spill file. True if the
    /// sink took them.
    async fn write(&mut self, events: Vec<RequestAuditEvent>) -> bool {
        if events.is_empty() {
            return true;
        }
        let sink_up = self.sink_down_until.is_none_or(|t| Instant::now() >= t);
        if sink_up && self.try_sink(&events).await {
            return true;
        }
        self.spill_async(events).await;
        false
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
    /// Replays in chunks of this writer's batch; stops early, putting the rest back, when
    /// `stop` is set (the catch-up writer has taken over from the background writer).
    async fn replay(&mut self, stop: Option<&AtomicBool>) {
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
            let batch = self.batch;
            loop {
                if stop.is_some_and(|s| s.load(Ordering::Acquire)) {
                    let spill = self.spill.clone();
                    let _ =
                        tokio::task::spawn_blocking(move || spill.end_replay(&[], Some(reader)))
                            .await;
                    return;
                }
                let read = tokio::task::spawn_blocking(move || {
                    let chunk = read_chunk(&mut reader, batch);
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

    /// A sink that records what each thread wrote, and holds the background writer's writes
    /// while `gate` is closed: a background writer the scheduler starves.
    #[derive(Default)]
    struct Recording {
        single: bool,
        gate: std::sync::atomic::AtomicBool,
        held: AtomicU64,
        written: Mutex<Vec<(String, AuditId)>>,
    }

    impl AuditSink for Recording {
        async fn write_batch(
            &self,
            events: &[RequestAuditEvent],
        ) -> Result<(), airlock_core::state::SourceError> {
            let thread = std::thread::current().name().unwrap_or_default().to_owned();
            if thread == "audit-writer" {
                self.held.fetch_add(1, Ordering::SeqCst);
                while !self.gate.load(Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            let mut written = self.written.lock().unwrap();
            written.extend(events.iter().map(|e| (thread.clone(), e.id.clone())));
            Ok(())
        }

        fn single_writer(&self) -> bool {
            self.single
        }
    }

    async fn until(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// The background writer is held in the middle of a write; the catch-up writer takes a
    /// backlog and events left waiting, to the sink, or (`single`, a store that takes one
    /// write at a time) to the spill file rather than wait behind the held write. Nothing is
    /// lost, nothing is written twice.
    async fn starved_background_writer(single: bool) {
        let dir = tempfile::tempdir().unwrap();
        let sink = Arc::new(Recording {
            single,
            ..Recording::default()
        });
        let cancel = CancellationToken::new();
        let queue = AuditQueue::with_capacity(
            sink.clone(),
            dir.path().join("audit.spill"),
            cancel.clone(),
            256,
        );
        let mut sent = Vec::new();
        let mut push = |n: usize| {
            for i in 0..n {
                let e = event(i as i64);
                sent.push(e.id.clone());
                queue.push(e);
            }
        };
        push(3);
        until("the background writer holds a batch", || {
            sink.held.load(Ordering::SeqCst) == 1
        })
        .await;
        let by_catch_up = || {
            let written = sink.written.lock().unwrap();
            written
                .iter()
                .filter(|(t, _)| t == "audit-catch-up")
                .count()
        };
        let taken = |n: u64| {
            if single {
                queue.spilled() == n
            } else {
                by_catch_up() == n as usize
            }
        };
        // A backlog (a sixteenth of the queue and more) wakes the catch-up writer.
        push(40);
        until("the catch-up writer took the backlog", || taken(40)).await;
        // A few events that the held writer does not move are taken after two stall checks.
        push(5);
        until("the catch-up writer took the waiting events", || taken(45)).await;
        assert_eq!(queue.caught_up(), 45);
        assert_eq!(queue.depth(), 0);
        if single {
            assert_eq!(
                by_catch_up(),
                0,
                "the catch-up writer wrote beside the held one"
            );
        }
        // The background writer comes back; a flush writes the rest and replays the spill.
        sink.gate.store(true, Ordering::SeqCst);
        push(4);
        queue.flush().await;
        let mut written: Vec<AuditId> = sink
            .written
            .lock()
            .unwrap()
            .iter()
            .map(|(_, id)| id.clone())
            .collect();
        written.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        sent.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        assert_eq!(written, sent);
        assert!(!queue.spill_pending());
        assert_eq!(queue.depth(), 0);
        cancel.cancel();
    }

    #[tokio::test]
    async fn a_starved_background_writer_loses_nothing() {
        starved_background_writer(false).await;
    }

    #[tokio::test]
    async fn a_starved_background_writer_is_not_waited_for_on_a_single_writer_store() {
        starved_background_writer(true).await;
    }

    /// The scheduling policy (field 41 of `/proc/self/task/*/stat`) of this process's threads,
    /// by thread name.
    #[cfg(target_os = "linux")]
    fn policies() -> Vec<(String, u32)> {
        let mut out = Vec::new();
        for task in std::fs::read_dir("/proc/self/task").unwrap() {
            let Ok(stat) = std::fs::read_to_string(task.unwrap().path().join("stat")) else {
                continue;
            };
            let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
                continue;
            };
            let name = stat[open + 1..close].to_owned();
            // Fields after the name start at field 3.
            let policy = stat[close + 1..].split_whitespace().nth(41 - 3).unwrap();
            out.push((name, policy.parse().unwrap()));
        }
        out
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn the_background_writer_runs_sqlite_itself_in_sched_idle() {
        const SCHED_IDLE: u32 = 5;
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("airlock.db").display());
        let store = airlock_store::Store::connect(&url).await.unwrap();
        store.migrate().await.unwrap();
        let mut db = <sqlx::SqliteConnection as sqlx::Connection>::connect(&url)
            .await
            .unwrap();
        // sqlx's SQLite connection threads (named `sqlx-sqlite-worker-N`, cut to 15 bytes: the
        // store's pool and `db`), before the audit writers start.
        let sqlx_sqlite = |threads: &[(String, u32)]| -> Vec<u32> {
            threads
                .iter()
                .filter(|(n, _)| n == "sqlx-sqlite-wor")
                .map(|(_, p)| *p)
                .collect()
        };
        let before = sqlx_sqlite(&policies());
        let cancel = CancellationToken::new();
        let queue = AuditQueue::start(
            Arc::new(store.clone()),
            dir.path().join("audit.spill"),
            cancel.clone(),
        );
        let e = event(1);
        let id = e.id.clone();
        queue.push(e);
        // Written by the background writer, not a flush (the catch-up writer answers those).
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let stored: i64 =
                sqlx::query_scalar("SELECT count(*) FROM request_events WHERE id = ?")
                    .bind(id.as_str())
                    .fetch_one(&mut db)
                    .await
                    .unwrap();
            if stored == 1 {
                break;
            }
            assert!(Instant::now() < deadline, "the event was not written");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(queue.caught_up(), 0);

        let threads = policies();
        let of = |name: &str| -> Vec<u32> {
            threads
                .iter()
                .filter(|(n, _)| n == name)
                .map(|(_, p)| *p)
                .collect()
        };
        assert!(!of("audit-writer").is_empty());
        assert!(
            of("audit-writer").iter().all(|&p| p == SCHED_IDLE),
            "{threads:?}"
        );
        assert!(of("audit-catch-up").iter().all(|&p| p == 0), "{threads:?}");
        // The background writer's thread ran SQLite itself, on its own connection: no sqlx
        // connection thread (which would run the write at its own priority) was started for it.
        assert!(before.iter().all(|&p| p == 0), "{threads:?}");
        assert_eq!(sqlx_sqlite(&threads), before, "{threads:?}");
        cancel.cancel();
    }
}
