//! A client connection's shared bookkeeping, between the connection task (`server`), the
//! pipeline and the response body: what is in flight, since when it has been idle, and since when
//! a response has waited for the client (the send timeout), plus the signals of one `serve` call.
//!
//! It sits below `server`, `pipeline` and `body`, so that none of them has to reach up into
//! another: `server` drives connections and reads these atomics, `pipeline` starts requests,
//! `body` reports the progress of a response.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::h1guard;

/// Milliseconds on a monotonic clock, never 0 (0 means "unset" in the atomics below).
pub(crate) fn now_ms() -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    let base = *BASE.get_or_init(Instant::now);
    u64::try_from(base.elapsed().as_millis()).unwrap_or(u64::MAX - 1) + 1
}

/// What the watchdog needs to know about one connection.
pub(crate) struct Activity {
    pub(crate) in_flight: AtomicUsize,
    /// When the first byte of a request head arrived while no request was in flight; 0: none.
    pub(crate) head_started: AtomicU64,
    /// When the last request finished (or the connection opened).
    pub(crate) idle_since: AtomicU64,
    /// Tells the connection's HTTP/1 framing guard how its requests were answered.
    pub(crate) framing: Arc<h1guard::Signal>,
    /// The connection task asked hyper to end an idle HTTP/1 connection so that it can park the
    /// socket: hyper's shutdown of the socket is skipped (`server::Watched`).
    pub(crate) parking: AtomicBool,
    /// The send-timeout clock of one request in flight, kept inline: HTTP/1 has one request at a
    /// time and most HTTP/2 connections too, so most requests take no allocation and no lock.
    inline: Stream,
    inline_taken: AtomicBool,
    /// The other requests in flight (concurrent HTTP/2 streams). Connection-local: its lock is
    /// taken twice per such request and by the watchdog, never across connections.
    streams: Mutex<Vec<Arc<Stream>>>,
}

/// One request in flight, as the send timeout sees it.
#[derive(Default)]
struct Stream {
    /// When the response body handed hyper a frame (or came into being) and hyper has not
    /// polled it since, so the client has not taken that frame yet; 0: the body is being polled,
    /// is waiting for the upstream, or has ended.
    waiting_since: AtomicU64,
}

impl Activity {
    pub(crate) fn new() -> Arc<Activity> {
        Arc::new(Activity {
            in_flight: AtomicUsize::new(0),
            head_started: AtomicU64::new(0),
            idle_since: AtomicU64::new(now_ms()),
            framing: Arc::default(),
            parking: AtomicBool::new(false),
            inline: Stream::default(),
            inline_taken: AtomicBool::new(false),
            streams: Mutex::default(),
        })
    }

    /// A request reached the pipeline: its head is complete.
    pub(crate) fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.head_started.store(0, Ordering::Release);
        let slot = if self
            .inline_taken
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            Slot::Inline
        } else {
            let stream = Arc::new(Stream::default());
            lock(&self.streams).push(stream.clone());
            Slot::Listed(stream)
        };
        InFlight {
            activity: self.clone(),
            slot,
        }
    }

    /// Since when the longest-waiting response has been waiting for the client, if one is.
    pub(crate) fn oldest_wait(&self) -> Option<u64> {
        let inline = self.inline.waiting_since.load(Ordering::Acquire);
        lock(&self.streams)
            .iter()
            .map(|s| s.waiting_since.load(Ordering::Acquire))
            .chain(std::iter::once(inline))
            .filter(|&t| t != 0)
            .min()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Where a request's send-timeout clock lives.
enum Slot {
    /// The connection's inline one.
    Inline,
    /// One of its own, in the connection's list.
    Listed(Arc<Stream>),
}

/// Held while a request (and its response body) is in flight.
pub(crate) struct InFlight {
    activity: Arc<Activity>,
    slot: Slot,
}

impl InFlight {
    fn stream(&self) -> &Stream {
        match &self.slot {
            Slot::Inline => &self.activity.inline,
            Slot::Listed(stream) => stream,
        }
    }

    /// The request is answered with 101: the connection stops being HTTP/1.
    pub(crate) fn upgraded(&self) {
        self.activity.framing.upgraded();
    }

    /// The response body gave hyper a frame (or exists and has yet to be polled): from now on
    /// it waits for the client to take it.
    pub(crate) fn handed(&self) {
        self.stream()
            .waiting_since
            .store(now_ms(), Ordering::Release);
    }

    /// hyper polls the response body again: the client took what it had.
    pub(crate) fn taken(&self) {
        self.stream().waiting_since.store(0, Ordering::Release);
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let a = &self.activity;
        match &self.slot {
            Slot::Inline => {
                // Cleared before it is given back, so the next request starts from nothing.
                a.inline.waiting_since.store(0, Ordering::Release);
                a.inline_taken.store(false, Ordering::Release);
            }
            Slot::Listed(stream) => lock(&a.streams).retain(|s| !Arc::ptr_eq(s, stream)),
        }
        a.idle_since.store(now_ms(), Ordering::Release);
        a.in_flight.fetch_sub(1, Ordering::AcqRel);
        a.framing.request_done();
    }
}

/// Tasks and signals of one `serve` call, shared with its connections.
pub(crate) struct ServeCtx {
    /// Stop taking new requests and close when idle.
    pub(crate) stop: CancellationToken,
    /// Cut everything off (the grace period is over).
    pub(crate) kill: CancellationToken,
    /// Spliced websocket connections, which outlive their HTTP connection.
    pub(crate) splices: TaskTracker,
}
