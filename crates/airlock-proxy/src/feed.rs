//! Keeping the state current: the change-feed task, full reloads, and on-demand token loads.
//!
//! The feed task subscribes first and loads everything second, so that nothing committed in
//! between is missed (a change that lands in both is applied twice, which is harmless: the
//! data plane reloads objects, it never replays deltas). Then it applies each batch of changes
//! with `load_changed`, and reloads everything on `Resync`, on a feed error, on a failed partial
//! load, and every `resync_interval` as a safety net. When the source fails, the last state
//! keeps serving (static stability) and the task retries with capped exponential backoff.
//!
//! The feed is read by its own small task that forwards events into a channel: `ChangeFeed::next`
//! is not promised to be cancellation-safe, and the applier needs to `select!` on it.
//!
//! [`TokenLoader`] asks the source for one token a request presented and the map does not
//! hold yet (minted a moment ago, its notification still on the way). It is guarded so that
//! garbage cannot turn into database load: a negative cache, a concurrency cap and a rate limit.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use airlock_core::state::{Change, ChangeFeed, FeedEvent, SourceError, StateSnapshot, StateSource};
use airlock_core::TokenDigest;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::error::ProxyError;
use crate::metrics::Metrics;
use crate::state::{self, State};

/// How many changes one `load_changed` call takes at most.
const MAX_BATCH: usize = 512;
const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Follows the source until `cancel` fires. `first` is told when the first attempt to load the
/// state has finished, successfully or not.
pub(crate) async fn run<S: StateSource>(
    state: Arc<State>,
    metrics: Arc<Metrics>,
    source: Arc<S>,
    resync_interval: Duration,
    cancel: CancellationToken,
    first: oneshot::Sender<()>,
) {
    let mut first = Some(first);
    let mut backoff = BACKOFF_START;
    loop {
        let attempt = async {
            let feed = source.subscribe().await?;
            full_reload(&state, &metrics, &*source).await?;
            Ok::<_, SourceError>(feed)
        };
        let result = tokio::select! {
            () = cancel.cancelled() => return,
            r = attempt => r,
        };
        if let Some(tx) = first.take() {
            let _ = tx.send(());
        }
        let feed = match result {
            Ok(feed) => feed,
            Err(err) => {
                tracing::warn!(error = %err, retry_in_ms = backoff.as_millis() as u64,
                    "cannot load the data-plane state; serving the last state");
                tokio::select! {
                    () = cancel.cancelled() => return,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
        };
        backoff = BACKOFF_START;
        if follow(&state, &metrics, &*source, feed, resync_interval, &cancel)
            .await
            .is_break()
        {
            return;
        }
    }
}

/// Applies changes until the feed breaks (`Continue`: resubscribe) or `cancel` fires (`Break`).
async fn follow<S: StateSource>(
    state: &Arc<State>,
    metrics: &Metrics,
    source: &S,
    mut feed: S::Feed,
    resync_interval: Duration,
    cancel: &CancellationToken,
) -> std::ops::ControlFlow<()> {
    let (tx, mut rx) = mpsc::channel::<Result<FeedEvent, SourceError>>(4096);
    let reader_cancel = cancel.child_token();
    tokio::spawn({
        let reader_cancel = reader_cancel.clone();
        async move {
            loop {
                let event = tokio::select! {
                    () = reader_cancel.cancelled() => return,
                    e = feed.next() => e,
                };
                let failed = event.is_err();
                if tx.send(event).await.is_err() || failed {
                    return;
                }
            }
        }
    });
    // Stop the reader whichever way this function returns.
    let _stop_reader = reader_cancel.drop_guard();

    let mut resync = tokio::time::interval_at(
        tokio::time::Instant::now() + resync_interval,
        resync_interval,
    );
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut backoff = BACKOFF_START;
    loop {
        let event = tokio::select! {
            () = cancel.cancelled() => return std::ops::ControlFlow::Break(()),
            _ = resync.tick() => None,
            e = rx.recv() => Some(e),
        };
        let outcome = match event {
            // The periodic safety net.
            None => full_reload(state, metrics, source).await,
            Some(None) | Some(Some(Err(_))) => {
                if let Some(Some(Err(err))) = event {
                    tracing::warn!(error = %err, "the change feed failed; resubscribing");
                }
                return std::ops::ControlFlow::Continue(());
            }
            Some(Some(Ok(FeedEvent::Resync))) => full_reload(state, metrics, source).await,
            Some(Some(Ok(FeedEvent::Changed(change)))) => {
                let mut changes = vec![change];
                let mut resync_asked = false;
                let mut broken = false;
                while changes.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(Ok(FeedEvent::Changed(c))) => {
                            if !changes.contains(&c) {
                                changes.push(c);
                            }
                        }
                        Ok(Ok(FeedEvent::Resync)) => resync_asked = true,
                        Ok(Err(_)) | Err(mpsc::error::TryRecvError::Disconnected) => {
                            broken = true;
                            break;
                        }
                        Err(mpsc::error::TryRecvError::Empty) => break,
                    }
                }
                let result = if resync_asked {
                    full_reload(state, metrics, source).await
                } else {
                    apply_changes(state, metrics, source, &changes).await
                };
                if broken {
                    return std::ops::ControlFlow::Continue(());
                }
                result
            }
        };
        if let Err(err) = outcome {
            // Something may have been missed: keep serving the last state and reload everything
            // until it works.
            tracing::warn!(error = %err, "cannot apply state changes; will reload everything");
            loop {
                tokio::select! {
                    () = cancel.cancelled() => return std::ops::ControlFlow::Break(()),
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
                match full_reload(state, metrics, source).await {
                    Ok(()) => break,
                    Err(err) => {
                        tracing::warn!(error = %err, "reload failed; serving the last state")
                    }
                }
            }
        }
        backoff = BACKOFF_START;
    }
}

async fn apply_changes<S: StateSource>(
    state: &Arc<State>,
    metrics: &Metrics,
    source: &S,
    changes: &[Change],
) -> Result<(), SourceError> {
    let snapshot = source
        .load_changed(changes)
        .await
        .inspect_err(|_| metrics.feed_failed())?;
    state.apply(&snapshot, changes);
    metrics.synced(false);
    tracing::debug!(changes = changes.len(), "applied state changes");
    Ok(())
}

/// Loads everything, page by page into a [`state::Builder`], and swaps it in. Each page is a
/// bounded piece of CPU work on this task; the swap, which scans the old state for tokens that
/// are gone, runs on a blocking thread and never stalls the request-serving workers.
pub(crate) async fn full_reload<S: StateSource>(
    state: &Arc<State>,
    metrics: &Metrics,
    source: &S,
) -> Result<(), SourceError> {
    let started = Instant::now();
    let version = state.version();
    let mut builder = state::Builder::new(state.keyring().clone(), Some(state.clone()));
    source
        .load_all_paged(|page| builder.absorb(&page))
        .await
        .inspect_err(|_| metrics.feed_failed())?;
    let state = state.clone();
    let count = tokio::task::spawn_blocking(move || {
        state.replace(builder.finish(), version);
        state.token_count()
    })
    .await
    .map_err(|_| SourceError("building the state failed".into()))?;
    metrics.synced(true);
    tracing::debug!(
        tokens = count,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "loaded the data-plane state"
    );
    Ok(())
}

type LoadFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Option<StateSnapshot>, SourceError>> + Send + 'a>>;

/// `StateSource::load_token`, object-safe, so that the request path is not generic.
pub(crate) trait LoadToken: Send + Sync + 'static {
    fn load_token<'a>(&'a self, digest: &'a TokenDigest) -> LoadFuture<'a>;
}

pub(crate) struct SourceLoader<S>(pub(crate) Arc<S>);

impl<S: StateSource> LoadToken for SourceLoader<S> {
    fn load_token<'a>(&'a self, digest: &'a TokenDigest) -> LoadFuture<'a> {
        Box::pin(self.0.load_token(digest))
    }
}

/// Tokens a request may ask the source for, per second, and at once.
const LOOKUPS_PER_SECOND: f64 = 50.0;
const LOOKUP_BURST: f64 = 100.0;
const LOOKUPS_AT_ONCE: usize = 8;
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);
const LOAD_ATTEMPTS: usize = 4;

/// Guarded on-demand loads of single tokens.
pub(crate) struct TokenLoader {
    source: Box<dyn LoadToken>,
    at_once: Semaphore,
    bucket: Mutex<(f64, Instant)>,
}

impl TokenLoader {
    pub(crate) fn new(source: Box<dyn LoadToken>) -> TokenLoader {
        TokenLoader {
            source,
            at_once: Semaphore::new(LOOKUPS_AT_ONCE),
            bucket: Mutex::new((LOOKUP_BURST, Instant::now())),
        }
    }

    fn take_permit(&self) -> bool {
        let mut b = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let refill = now.duration_since(b.1).as_secs_f64() * LOOKUPS_PER_SECOND;
        b.0 = (b.0 + refill).min(LOOKUP_BURST);
        b.1 = now;
        if b.0 >= 1.0 {
            b.0 -= 1.0;
            true
        } else {
            false
        }
    }

    /// Asks the source for a token the map does not hold. `Ok(true)`: it is in the map now;
    /// `Ok(false)`: the source does not know it either. An error means "cannot tell right now".
    pub(crate) async fn load(
        &self,
        state: &State,
        digest: &TokenDigest,
    ) -> Result<bool, ProxyError> {
        // A burst of first requests with one new token (minted on another replica a moment ago)
        // waits for the lookups ahead of it instead of failing, and is then usually answered by
        // the map: one of those lookups brought its token.
        let Ok(Ok(_permit)) = tokio::time::timeout(LOOKUP_TIMEOUT, self.at_once.acquire()).await
        else {
            return Err(ProxyError::StateUnavailable);
        };
        if state.lookup(digest).is_some() {
            return Ok(true);
        }
        if !self.take_permit() {
            return Err(ProxyError::StateUnavailable);
        }
        // A token minted a moment ago arrives together with its notification, so the feed is
        // often applying changes while we ask; each time the state moves under us the answer
        // may be stale (it could predate a revocation), so ask again, a few times.
        for _ in 0..LOAD_ATTEMPTS {
            let seen = state.version();
            let loaded =
                match tokio::time::timeout(LOOKUP_TIMEOUT, self.source.load_token(digest)).await {
                    Ok(Ok(loaded)) => loaded,
                    Ok(Err(err)) => {
                        tracing::warn!(error = %err, "cannot look up a token");
                        return Err(ProxyError::StateUnavailable);
                    }
                    Err(_) => {
                        tracing::warn!("looking up a token timed out");
                        return Err(ProxyError::StateUnavailable);
                    }
                };
            let Some(snapshot) = loaded else {
                state.remember_unknown(*digest);
                return Ok(false);
            };
            if state.apply_loaded(&snapshot, seen) || state.lookup(digest).is_some() {
                return Ok(true);
            }
        }
        Err(ProxyError::StateUnavailable)
    }
}
