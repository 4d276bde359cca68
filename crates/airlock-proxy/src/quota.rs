//! Budgets and rate limits that hold across replicas (`docs/limits.md`), as a stage.
//!
//! The limits of every account, devbox and gateway config that has some are kept in memory
//! (reloaded from the source every half second, so a change reaches every replica within a
//! second). A request under some limits gets a [`LimitRun`]: it reads the request body (capped)
//! when a token or cost limit applies, to estimate what the request may use (input bytes / 4
//! plus `max_tokens`, [`DEFAULT_MAX_TOKENS`] when absent, priced with the model's price), and
//! the pipeline then takes a *reservation* of that estimate from each limit ([`Ticket::admit`]).
//!
//! A reservation is taken from the replica's *lease* of the limit's counter in the current
//! window, in memory (one mutex per counter, no database round trip); only when the lease is
//! spent does the replica ask the source for another slice (a tenth of the limit, or what the
//! request needs, or what is left), with one conditional update. When the request ends, the run
//! trues the reservation up with the metered usage: what was not used goes back to the lease,
//! what was used beyond it is a debt charged to the counter. A lease idle for a second is given
//! back, so the ledger settles at the sum of the metered usage.
//!
//! The overshoot past a limit is bounded by what requests in flight use beyond their
//! reservations: a request is only admitted when its whole estimate fits in what the counter
//! has left. Request counts are exact (a request reserves exactly 1).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method};

use airlock_core::limits::Measure;
use airlock_core::state::{AuditSink, Lease, RequestAuditEvent, SourceError, StateSource};
use airlock_core::{
    AccountId, Api, CounterKey, LimitHit, LimitKind, LimitScope, Limits, LimitsRecord,
};
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

use crate::error::ProxyError;
use crate::shardmap::LazyMap;
use crate::stage::{End, StageRun};
use crate::state::{DevboxSlot, GatewayEntry, GatewaySlot, TokenEntry};

/// Output tokens reserved for a request that does not say its `max_tokens`, under a token or
/// cost limit.
pub(crate) const DEFAULT_MAX_TOKENS: u64 = 4096;

/// The largest request body read to estimate a reservation; a larger one is estimated from its
/// `content-length` (or not at all, when it has none) with the default `max_tokens`.
const BODY_CAP: usize = crate::meter::BODY_CAP;

/// How often the limits are reloaded and idle leases given back.
pub(crate) const TICK: Duration = Duration::from_millis(500);

/// Every this many ticks (a minute), every limit is reloaded, not only the changed ones.
const FULL_RELOAD_TICKS: u32 = 120;

/// A lease unused this long is given back to the counter.
const IDLE_MS: i64 = 1_000;

/// A counter of a window that ended this long ago is forgotten (once settled).
const FORGET_MS: i64 = 5_000;

/// `limit.exceeded` events kept while they cannot be written.
const MAX_PENDING_HITS: usize = 1024;

/// What a replica does when it cannot reach the ledger and its lease does not cover a request
/// (`AIRLOCK_LIMITS_ON_OUTAGE`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnOutage {
    /// Refuse with 503 `limits_unavailable` (the default).
    #[default]
    Closed,
    /// Admit, and charge the ledger once it is back.
    Open,
}

impl OnOutage {
    /// `closed` or `open`.
    pub fn parse(text: &str) -> Option<OnOutage> {
        match text {
            "closed" => Some(OnOutage::Closed),
            "open" => Some(OnOutage::Open),
            _ => None,
        }
    }
}

type LedgerFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, SourceError>> + Send + 'a>>;

/// The source's limit methods, object-safe, so that the request path is not generic.
pub(crate) trait Ledger: Send + Sync + 'static {
    fn limits_since(&self, since_ms: i64) -> LedgerFuture<'_, Vec<LimitsRecord>>;
    fn lease<'a>(&'a self, key: &'a CounterKey, limit: u64, want: u64) -> LedgerFuture<'a, Lease>;
    fn settle<'a>(&'a self, key: &'a CounterKey, delta: i64) -> LedgerFuture<'a, ()>;
    /// Writes `limit.exceeded` audit events (through the request audit trail's sink).
    fn limit_hits<'a>(&'a self, hits: &'a [LimitHit]) -> LedgerFuture<'a, ()>;
}

/// The ledger of a source, and the audit sink that records limits first hit.
pub(crate) struct SourceLedger<S, A> {
    pub(crate) source: Arc<S>,
    pub(crate) audit: Arc<A>,
}

impl<S: StateSource, A: AuditSink> Ledger for SourceLedger<S, A> {
    fn limits_since(&self, since_ms: i64) -> LedgerFuture<'_, Vec<LimitsRecord>> {
        Box::pin(self.source.limits_since(since_ms))
    }

    fn lease<'a>(&'a self, key: &'a CounterKey, limit: u64, want: u64) -> LedgerFuture<'a, Lease> {
        Box::pin(self.source.lease(key, limit, want))
    }

    fn settle<'a>(&'a self, key: &'a CounterKey, delta: i64) -> LedgerFuture<'a, ()> {
        Box::pin(self.source.settle(key, delta))
    }

    fn limit_hits<'a>(&'a self, hits: &'a [LimitHit]) -> LedgerFuture<'a, ()> {
        Box::pin(self.audit.write_limit_hits(hits))
    }
}

/// A replica's share of one counter.
struct Pool {
    key: CounterKey,
    window_end_ms: Option<i64>,
    state: Mutex<PoolState>,
}

#[derive(Default)]
struct PoolState {
    /// Leased and not reserved; below 0: usage beyond the leases, still to be charged.
    available: i64,
    /// The counter as the last lease left it.
    ledger_used: u64,
    /// Reservations not yet trued up.
    holds: u32,
    /// What those reservations hold: with `available`, this replica's outstanding lease.
    held: u64,
    /// This counter refused a request in this window (its audit event is written once).
    hit: bool,
    /// Until then, a request that does not fit in `available` is refused from memory, without
    /// asking the ledger again: the ledger refused one under a limit of `spent_limit` at most
    /// [`IDLE_MS`] ago. Bounds the database round trips of a spent limit to one a second.
    spent_until_ms: i64,
    spent_limit: u64,
    last_activity_ms: i64,
    /// Taken out of [`Quota::pools`] (settled, its window long over): a request that still holds
    /// it (from a [`Scoped`] cache) takes from the map's pool of its key instead.
    forgotten: bool,
}

impl Pool {
    fn lock(&self) -> MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn signed(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The scope kinds, in [`scope_index`] order (the refusal counters' `scope` label).
const SCOPE_KINDS: [&str; 5] = ["account", "devbox", "gateway", "token", "router_backend"];

fn scope_index(scope: &LimitScope) -> usize {
    match scope {
        LimitScope::Account(_) => 0,
        LimitScope::Devbox(_) => 1,
        LimitScope::GatewayConfig(_) => 2,
        LimitScope::Token(_) => 3,
        LimitScope::RouterBackend(_) => 4,
    }
}

/// The refusal counters per scope kind: [`LimitKind::ALL`], then `max_requests`.
const KIND_SLOTS: usize = LimitKind::ALL.len() + 1;

fn kind_index(kind: LimitKind) -> usize {
    LimitKind::ALL
        .iter()
        .position(|k| *k == kind)
        .unwrap_or(LimitKind::ALL.len())
}

/// A scope's limits, as loaded.
struct Scoped {
    scope: LimitScope,
    /// Each limit set, in [`Limits::iter`] order.
    each: Box<[ScopedLimit]>,
}

/// One limit of a scope.
struct ScopedLimit {
    kind: LimitKind,
    limit: u64,
    /// The limit as its `x-ratelimit-limit-*` value, formatted once.
    header: Option<HeaderValue>,
    /// The counter of the window a request last took from: the next request of the same window
    /// finds it without building and hashing its key.
    current: ArcSwapOption<Pool>,
}

impl Scoped {
    fn new(scope: LimitScope, limits: &Limits) -> Scoped {
        let each = limits
            .iter()
            .map(|(kind, limit)| ScopedLimit {
                kind,
                limit,
                header: ratelimit_value(kind, limit),
                current: ArcSwapOption::empty(),
            })
            .collect();
        Scoped { scope, each }
    }
}

impl Clone for Scoped {
    fn clone(&self) -> Scoped {
        Scoped {
            scope: self.scope.clone(),
            each: self
                .each
                .iter()
                .map(|l| ScopedLimit {
                    kind: l.kind,
                    limit: l.limit,
                    header: l.header.clone(),
                    current: ArcSwapOption::new(l.current.load_full()),
                })
                .collect(),
        }
    }
}

/// Limits in memory, the leases of this replica, and the ledger behind them.
pub(crate) struct Quota {
    ledger: Box<dyn Ledger>,
    /// Scopes with limits, by id (ids carry their kind's prefix, so one map serves all). Ids are
    /// Airlock's own, not chosen by clients, so a fast hasher will do.
    limits: ArcSwap<HashMap<String, Scoped, foldhash::fast::RandomState>>,
    pools: LazyMap<CounterKey, Pool>,
    /// Requests refused, by scope kind and limit (bounded labels, not a series per devbox).
    refused: [[AtomicU64; KIND_SLOTS]; SCOPE_KINDS.len()],
    /// Limits first hit in their windows, waiting for the next tick to be written.
    hits: Mutex<Vec<LimitHit>>,
    on_outage: OnOutage,
    /// The newest `update_time_ms` seen.
    cursor: Mutex<i64>,
    /// What time it is for the windows (tests move it).
    clock: fn() -> i64,
}

/// One limit a request must pass: its counter in the request's window.
struct Claim {
    pool: Arc<Pool>,
    limit: u64,
    /// `limit` as its `x-ratelimit-limit-*` value, when formatted already.
    header: Option<HeaderValue>,
}

impl Quota {
    pub(crate) fn new(
        ledger: Box<dyn Ledger>,
        on_outage: OnOutage,
        clock: Option<fn() -> i64>,
    ) -> Quota {
        Quota {
            clock: clock.unwrap_or(airlock_core::time::now_ms),
            ledger,
            limits: ArcSwap::from_pointee(HashMap::default()),
            pools: LazyMap::new(),
            refused: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))),
            hits: Mutex::new(Vec::new()),
            on_outage,
            cursor: Mutex::new(0),
        }
    }

    /// Reloads the limits that changed since the last reload (all of them the first time).
    pub(crate) async fn reload(&self) -> Result<(), SourceError> {
        let since = *self.cursor.lock().unwrap_or_else(|e| e.into_inner());
        // Rows written by another replica's clock a little behind ours are still seen.
        let records = self
            .ledger
            .limits_since(if since == 0 { 0 } else { since - 5_000 })
            .await?;
        if records.is_empty() {
            return Ok(());
        }
        let mut next = HashMap::clone(&self.limits.load());
        let mut newest = since;
        for r in records {
            newest = newest.max(r.update_time_ms);
            if r.limits.is_empty() {
                next.remove(r.scope.id());
            } else {
                let id = r.scope.id().to_owned();
                next.insert(id, Scoped::new(r.scope, &r.limits));
            }
        }
        self.limits.store(Arc::new(next));
        *self.cursor.lock().unwrap_or_else(|e| e.into_inner()) = newest;
        Ok(())
    }

    /// The run of a request under some limits; `None` (and no allocation) when none applies.
    pub(crate) fn start(
        &self,
        token: &TokenEntry,
        method: &Method,
        api: Api,
        priced_by: Option<&Arc<GatewayEntry>>,
    ) -> Option<(Box<dyn StageRun>, Ticket)> {
        let max_requests = token.scope.as_ref().and_then(|s| s.max_requests);
        let limits = self.limits.load();
        if limits.is_empty() && max_requests.is_none() {
            return None;
        }
        let now = (self.clock)();
        let mut claims = Vec::new();
        // Looked up by id first, so that a request under no limit allocates nothing.
        let ids = [
            token.account_id.as_str(),
            token.devbox.id.as_str(),
            token.gateway.id.as_str(),
        ];
        for id in ids {
            if let Some(scoped) = limits.get(id) {
                for l in &scoped.each {
                    let window_start_ms = l.kind.window().start(now);
                    let cached = l.current.load();
                    let pool = match &*cached {
                        Some(pool) if pool.key.window_start_ms == window_start_ms => pool.clone(),
                        _ => {
                            let pool = self.pool(&CounterKey {
                                scope: scoped.scope.clone(),
                                kind: l.kind,
                                window_start_ms,
                            });
                            l.current.store(Some(pool.clone()));
                            pool
                        }
                    };
                    claims.push(Claim {
                        pool,
                        limit: l.limit,
                        header: l.header.clone(),
                    });
                }
            }
        }
        if let Some(n) = max_requests {
            claims.push(Claim {
                pool: self.pool(&CounterKey {
                    scope: LimitScope::Token(token.id.clone()),
                    kind: LimitKind::MaxRequests,
                    window_start_ms: 0,
                }),
                limit: n,
                header: None,
            });
        }
        if claims.is_empty() {
            return None;
        }
        let weighed = claims
            .iter()
            .any(|c| c.pool.key.kind.measure() != Measure::Requests);
        let shared = Arc::new(Mutex::new(Shared::default()));
        let run = LimitRun {
            shared: shared.clone(),
            api: api.is_metered().then_some(api),
            priced_by: priced_by.filter(|_| api.is_metered()).cloned(),
            read_body: weighed && method == Method::POST,
            weighed,
            content_length: None,
        };
        let who = Who::of(token);
        Some((
            Box::new(run),
            Ticket {
                claims,
                shared,
                who,
            },
        ))
    }

    fn pool(&self, key: &CounterKey) -> Arc<Pool> {
        self.pools.get_or_insert(key, || {
            let end = key.kind.window().end(key.window_start_ms);
            (
                key.clone(),
                Pool {
                    key: key.clone(),
                    window_end_ms: end,
                    state: Mutex::new(PoolState::default()),
                },
            )
        })
    }

    /// Takes `amount` of `claim` from this replica's lease, leasing more when it is short.
    async fn take(
        &self,
        claim: &Claim,
        amount: u64,
        now: i64,
        who: &Who,
    ) -> Result<Hold, ProxyError> {
        let mut pool = claim.pool.clone();
        let need = loop {
            let mut st = pool.lock();
            if st.forgotten {
                drop(st);
                let live = self.pool(&pool.key);
                pool = live;
                continue;
            }
            st.last_activity_ms = now;
            if st.available >= signed(amount) {
                st.available -= signed(amount);
                st.holds += 1;
                return Ok(self.hold(claim, pool.clone(), amount, &mut st));
            }
            if now < st.spent_until_ms && claim.limit <= st.spent_limit {
                drop(st);
                self.refused(claim, now, false, who);
                return Err(exceeded(claim, now));
            }
            break u64::try_from(signed(amount) - st.available).unwrap_or(u64::MAX);
        };
        let slice = (claim.limit / 10).max(1);
        match self
            .ledger
            .lease(&pool.key, claim.limit, need.max(slice))
            .await
        {
            Ok(lease) => {
                let mut st = pool.lock();
                st.available += signed(lease.granted);
                st.ledger_used = lease.used;
                if st.available >= signed(amount) {
                    st.available -= signed(amount);
                    st.holds += 1;
                    Ok(self.hold(claim, pool.clone(), amount, &mut st))
                } else {
                    let first = !std::mem::replace(&mut st.hit, true);
                    st.spent_until_ms = now + IDLE_MS;
                    st.spent_limit = claim.limit;
                    drop(st);
                    self.refused(claim, now, first, who);
                    Err(exceeded(claim, now))
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, limit = pool.key.kind.as_str(), "cannot lease a limit");
                match self.on_outage {
                    OnOutage::Closed => Err(ProxyError::LimitsUnavailable),
                    OnOutage::Open => {
                        let mut st = pool.lock();
                        st.available -= signed(amount);
                        st.holds += 1;
                        Ok(self.hold(claim, pool.clone(), amount, &mut st))
                    }
                }
            }
        }
    }

    /// What time it is for the windows.
    pub(crate) fn now(&self) -> i64 {
        (self.clock)()
    }

    /// Takes each claim's reservation (a request, `tokens`, `cost`), or none of them.
    async fn take_all(
        &self,
        claims: &[Claim],
        tokens: u64,
        cost: u64,
        who: &Who,
    ) -> Result<Vec<Hold>, ProxyError> {
        let mut holds = Vec::with_capacity(claims.len());
        let now = (self.clock)();
        for claim in claims {
            let amount = match claim.pool.key.kind.measure() {
                Measure::Requests => 1,
                Measure::Tokens => tokens,
                Measure::CostNanos => cost,
            };
            match self.take(claim, amount, now, who).await {
                Ok(hold) => holds.push(hold),
                Err(err) => {
                    release_all(holds, |_| 0);
                    return Err(err);
                }
            }
        }
        Ok(holds)
    }

    /// Whether this replica knows a router backend's quota to be spent now: which quota, and
    /// when its window ends. From memory only (a refusal by the ledger in the last second).
    pub(crate) fn spent(&self, quota: &BackendQuota) -> Option<(LimitKind, i64)> {
        let now = (self.clock)();
        quota.limits.iter().find_map(|(_, kind, limit)| {
            let window = kind.window();
            let key = CounterKey {
                scope: quota.scope.clone(),
                kind,
                window_start_ms: window.start(now),
            };
            let pool = self.pools.get(&key)?;
            let st = pool.lock();
            let spent = now < st.spent_until_ms && limit <= st.spent_limit && st.available <= 0;
            spent.then(|| (kind, window.end(now).unwrap_or(now)))
        })
    }

    /// Reserves one request and `tokens` of a router backend's quota for an attempt, or says
    /// which quota is spent and until when (`None`: the ledger cannot be reached and
    /// `AIRLOCK_LIMITS_ON_OUTAGE` is `closed`; try again in a second).
    pub(crate) async fn reserve_backend(
        &self,
        quota: &BackendQuota,
        tokens: u64,
        who: &Who,
    ) -> Result<BackendHolds, (Option<LimitKind>, i64)> {
        let now = (self.clock)();
        let claims: Vec<Claim> = quota
            .limits
            .iter()
            .map(|(_, kind, limit)| Claim {
                pool: self.pool(&CounterKey {
                    scope: quota.scope.clone(),
                    kind,
                    window_start_ms: kind.window().start(now),
                }),
                limit,
                header: None,
            })
            .collect();
        match self.take_all(&claims, tokens, 0, who).await {
            Ok(holds) => Ok(BackendHolds(holds)),
            Err(ProxyError::LimitExceeded(kind, wait)) => {
                let wait = i64::try_from(wait.as_millis()).unwrap_or(i64::MAX);
                Err((Some(kind), now.saturating_add(wait)))
            }
            // The ledger cannot be reached (closed): the backend is not used.
            Err(_) => Err((None, now + IDLE_MS)),
        }
    }

    /// Counts a refusal, and queues its audit event when it is the counter's first in this
    /// window on this replica (written by the next tick, off the request path).
    fn refused(&self, claim: &Claim, now: i64, first: bool, who: &Who) {
        let key = &claim.pool.key;
        self.refused[scope_index(&key.scope)][kind_index(key.kind)].fetch_add(1, Ordering::Relaxed);
        if !first {
            return;
        }
        let hit = LimitHit {
            time_ms: now,
            account_id: AccountId::clone(&who.account),
            scope: key.scope.clone(),
            kind: key.kind,
            limit: claim.limit,
            window_start_ms: key.window_start_ms,
            resets_at_ms: key.kind.window().end(key.window_start_ms),
            devbox_id: who.devbox.id.clone(),
            gateway_config_id: who.gateway.id.clone(),
        };
        let mut hits = self.hits.lock().unwrap_or_else(|e| e.into_inner());
        // Bounded while the database is down: the events past this are lost, not the requests.
        if hits.len() < MAX_PENDING_HITS {
            hits.push(hit);
        }
    }

    fn hold(&self, claim: &Claim, pool: Arc<Pool>, amount: u64, st: &mut PoolState) -> Hold {
        st.held = st.held.saturating_add(amount);
        let remaining = claim
            .limit
            .saturating_sub(st.ledger_used)
            .saturating_add(u64::try_from(st.available).unwrap_or(0))
            .min(claim.limit);
        Hold {
            clock: self.clock,
            kind: claim.pool.key.kind,
            limit: claim.limit,
            limit_header: claim.header.clone(),
            remaining,
            pool,
            amount,
        }
    }

    /// Gives back idle leases, charges debts and forgets settled counters of past windows.
    pub(crate) async fn settle(&self, all: bool) {
        let now = (self.clock)();
        let mut due = Vec::new();
        self.pools.for_each_arc(|key, pool| {
            let mut st = pool.lock();
            let ended = pool.window_end_ms.is_some_and(|e| e <= now);
            let idle = now - st.last_activity_ms >= IDLE_MS || ended || all;
            let delta = if st.available < 0 || (st.available > 0 && idle) {
                -st.available
            } else {
                return;
            };
            st.available = 0;
            due.push((key.clone(), pool.clone(), delta));
        });
        for (key, pool, delta) in due {
            match self.ledger.settle(&key, delta).await {
                Ok(()) => {
                    let mut st = pool.lock();
                    st.ledger_used = u64::try_from(signed(st.ledger_used) + delta).unwrap_or(0);
                }
                Err(err) => {
                    tracing::warn!(error = %err, "cannot settle a limit's counter; will retry");
                    pool.lock().available -= delta;
                }
            }
        }
        self.write_hits().await;
        let mut stale = Vec::new();
        self.pools.for_each_arc(|key, pool| {
            if pool.window_end_ms.is_some_and(|e| e + FORGET_MS <= now) {
                stale.push(key.clone());
            }
        });
        for key in stale {
            self.pools.retain_shard_of(&key, |pool| {
                let mut st = pool.lock();
                let forget = pool.window_end_ms.is_some_and(|e| e + FORGET_MS <= now)
                    && st.available == 0
                    && st.holds == 0;
                st.forgotten |= forget;
                !forget
            });
        }
    }
}

impl Quota {
    /// Writes the queued `limit.exceeded` events; on failure they wait for the next tick.
    async fn write_hits(&self) {
        let hits = std::mem::take(&mut *self.hits.lock().unwrap_or_else(|e| e.into_inner()));
        if hits.is_empty() {
            return;
        }
        if let Err(err) = self.ledger.limit_hits(&hits).await {
            tracing::warn!(error = %err, "cannot record limits hit; will retry");
            let mut pending = self.hits.lock().unwrap_or_else(|e| e.into_inner());
            let room = MAX_PENDING_HITS.saturating_sub(pending.len());
            pending.extend(hits.into_iter().take(room));
        }
    }

    /// The limits' metrics (`docs/limits.md`): for each account and gateway config limit, its
    /// value, what its counter holds as this replica last saw it, and this replica's
    /// outstanding lease; requests refused by scope kind and limit.
    pub(crate) fn encode_metrics(
        &self,
        encoder: &mut DescriptorEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
        let now = (self.clock)();
        let limits = self.limits.load();
        let mut rows: Vec<(&Scoped, LimitKind, u64, Option<Arc<Pool>>)> = Vec::new();
        for scoped in limits.values() {
            if !matches!(
                scoped.scope,
                LimitScope::Account(_) | LimitScope::GatewayConfig(_)
            ) {
                continue;
            }
            for &ScopedLimit { kind, limit, .. } in &scoped.each {
                let key = CounterKey {
                    scope: scoped.scope.clone(),
                    kind,
                    window_start_ms: kind.window().start(now),
                };
                rows.push((scoped, kind, limit, self.pools.get(&key)));
            }
        }
        rows.sort_by(|a, b| (a.0.scope.id(), a.1).cmp(&(b.0.scope.id(), b.1)));
        // Cost limits in dollars, counts as they are.
        let amount = |kind: LimitKind, v: u64| match kind.measure() {
            Measure::CostNanos => v as f64 / 1e9,
            Measure::Requests | Measure::Tokens => v as f64,
        };
        type Pick = fn(u64, Option<&PoolState>) -> u64;
        let families: [(&str, &str, Pick); 3] = [
            (
                "airlock_limit",
                "A limit of an account or a gateway config, by scope (account, gateway), id and limit name; cost limits in US dollars.",
                |limit, _| limit,
            ),
            (
                "airlock_limit_used",
                "What the limit's counter holds in the current window as this replica last saw it (leased slices included); cost in US dollars.",
                |_, st| st.map_or(0, |st| st.ledger_used),
            ),
            (
                "airlock_limit_leased",
                "What this replica holds leased of the limit in the current window and has not spent (reserved by requests in flight or unreserved); the replicas' sum bounds how early a limit can look spent.",
                |_, st| {
                    st.map_or(0, |st| {
                        st.held
                            .saturating_add(u64::try_from(st.available).unwrap_or(0))
                    })
                },
            ),
        ];
        for (name, help, pick) in families {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (scoped, kind, limit, pool) in &rows {
                let st = pool.as_ref().map(|p| p.lock());
                let value = amount(*kind, pick(*limit, st.as_deref()));
                drop(st);
                let labels = [
                    ("scope", scoped.scope.kind()),
                    ("id", scoped.scope.id()),
                    ("limit", kind.as_str()),
                ];
                family.encode_family(&labels)?.encode_gauge(&value)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "airlock_limit_refusals",
            "Requests refused by a limit (429 limit_exceeded, 403 token_scope for max_requests), by scope kind (account, devbox, gateway, token) and limit name; devboxes and tokens are counted together, not one series each.",
            None,
            MetricType::Counter,
        )?;
        for (scope, row) in SCOPE_KINDS.iter().zip(&self.refused) {
            let kinds = LimitKind::ALL.iter().chain([&LimitKind::MaxRequests]);
            for (kind, n) in kinds.zip(row) {
                let n = n.load(Ordering::Relaxed);
                if n > 0 {
                    let labels = [("scope", *scope), ("limit", kind.as_str())];
                    family
                        .encode_family(&labels)?
                        .encode_counter::<NoLabelSet, _, f64>(&n, None)?;
                }
            }
        }
        Ok(())
    }
}

/// Whose request a reservation is for: the ids a `limit.exceeded` event names.
pub(crate) struct Who {
    account: Arc<AccountId>,
    devbox: Arc<DevboxSlot>,
    gateway: Arc<GatewaySlot>,
}

impl Who {
    pub(crate) fn of(token: &TokenEntry) -> Who {
        Who {
            account: token.account_id.clone(),
            devbox: token.devbox.clone(),
            gateway: token.gateway.clone(),
        }
    }
}

/// A router backend's provider quota (`backends[i].limits`), counted like a limit under the
/// scope `<router id>#<index>`.
pub(crate) struct BackendQuota {
    scope: LimitScope,
    limits: airlock_core::router::BackendLimits,
}

impl BackendQuota {
    /// `None` when the backend declares no quota.
    pub(crate) fn new(
        router: &airlock_core::GatewayConfigId,
        index: usize,
        limits: airlock_core::router::BackendLimits,
    ) -> Option<BackendQuota> {
        (!limits.is_empty()).then(|| BackendQuota {
            scope: LimitScope::router_backend(router, index),
            limits,
        })
    }
}

/// What an attempt on a router backend holds of its quota.
pub(crate) struct BackendHolds(Vec<Hold>);

/// Dropped without [`StageRun::finish`] (an attempt that served nothing): the request counts
/// (the provider saw it), its tokens do not.
impl Drop for BackendHolds {
    fn drop(&mut self) {
        release_all(std::mem::take(&mut self.0), |measure| {
            u64::from(measure == Measure::Requests)
        });
    }
}

/// The served attempt's holds, trued up with the metered usage when the request ends.
impl StageRun for BackendHolds {
    fn finish(&mut self, _end: End, event: &mut RequestAuditEvent) {
        let tokens = event.llm.as_ref().map_or(0, |m| m.usage.total_tokens());
        release_all(std::mem::take(&mut self.0), |measure| match measure {
            Measure::Requests => 1,
            Measure::Tokens => tokens,
            Measure::CostNanos => 0,
        });
    }
}

fn exceeded(claim: &Claim, now: i64) -> ProxyError {
    let kind = claim.pool.key.kind;
    if kind == LimitKind::MaxRequests {
        return ProxyError::TokenScope;
    }
    let wait = kind.window().end(now).map_or(86_400_000, |end| end - now);
    ProxyError::LimitExceeded(
        kind,
        Duration::from_millis(u64::try_from(wait).unwrap_or(0)),
    )
}

/// What one request holds of one limit.
struct Hold {
    clock: fn() -> i64,
    kind: LimitKind,
    limit: u64,
    /// `limit` as its `x-ratelimit-limit-*` value, when formatted already.
    limit_header: Option<HeaderValue>,
    /// What the limit had left after this reservation, as far as this replica knows.
    remaining: u64,
    pool: Arc<Pool>,
    amount: u64,
}

impl Hold {
    /// Trues the reservation up with what the request used.
    fn release(self, used: u64, now: i64) {
        let mut st = self.pool.lock();
        st.available += signed(self.amount) - signed(used);
        st.holds = st.holds.saturating_sub(1);
        st.held = st.held.saturating_sub(self.amount);
        st.last_activity_ms = now;
    }
}

/// Trues up a request's holds, `used(measure)` of each (one reading of the clock for all).
fn release_all(holds: Vec<Hold>, used: impl Fn(Measure) -> u64) {
    let Some(first) = holds.first() else {
        return;
    };
    let now = (first.clock)();
    for hold in holds {
        let amount = used(hold.kind.measure());
        hold.release(amount, now);
    }
}

/// What a request's run and its ticket share.
#[derive(Default)]
struct Shared {
    /// The estimate: tokens and cost, once the body (or its length) was seen.
    estimate: Option<(u64, u64)>,
    holds: Vec<Hold>,
}

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

/// The pipeline's handle on a request's reservations: [`Ticket::admit`] takes them.
pub(crate) struct Ticket {
    claims: Vec<Claim>,
    shared: Arc<Mutex<Shared>>,
    who: Who,
}

impl Ticket {
    /// Reserves the request's estimate from every limit, or refuses it (and holds nothing).
    pub(crate) async fn admit(&self, quota: &Quota) -> Result<(), ProxyError> {
        let (tokens, cost) = lock(&self.shared)
            .estimate
            .unwrap_or((DEFAULT_MAX_TOKENS, 0));
        let holds = quota
            .take_all(&self.claims, tokens, cost, &self.who)
            .await?;
        lock(&self.shared).holds = holds;
        Ok(())
    }

    /// Adds the `x-ratelimit-*` headers of what [`Ticket::admit`] reserved (a router's answer,
    /// which is not the head a run saw).
    pub(crate) fn response_headers(&self, headers: &mut http::HeaderMap) {
        ratelimit_headers(&lock(&self.shared), headers);
    }
}

/// A request's run under limits: estimates from the body, adds the `x-ratelimit-*` headers, and
/// trues the reservations up at the end.
struct LimitRun {
    shared: Arc<Mutex<Shared>>,
    /// The API the body is read in, when it is metered.
    api: Option<Api>,
    /// The gateway config whose prices (its own list, then its provider's) price the estimate.
    priced_by: Option<Arc<GatewayEntry>>,
    read_body: bool,
    /// A token or cost limit applies.
    weighed: bool,
    content_length: Option<u64>,
}

impl LimitRun {
    fn estimate(&self, body: Option<&[u8]>) -> (u64, u64) {
        if !self.weighed {
            return (0, 0);
        }
        let bytes = body.map_or(self.content_length.unwrap_or(0), |b| b.len() as u64);
        let info = match (self.api, body) {
            (Some(api), Some(body)) => airlock_llm::parse_request(api, body).ok(),
            _ => None,
        };
        let input = airlock_llm::meter::estimate_tokens(bytes);
        let output = info
            .as_ref()
            .and_then(|i| i.max_tokens)
            .unwrap_or(DEFAULT_MAX_TOKENS);
        let model = info.and_then(|i| i.model);
        let cost = match (self.priced_by.as_deref().map(|g| &g.llm), model) {
            (Some(llm), Some(model)) => {
                crate::meter::resolve_price(&llm.models, llm.provider.as_deref(), &model, input)
                    .map_or(0, |price| {
                        price.cost_nanos(&airlock_core::Usage {
                            input_tokens: input,
                            output_tokens: output,
                            exact: false,
                            ..airlock_core::Usage::default()
                        })
                    })
            }
            _ => 0,
        };
        (input.saturating_add(output), cost)
    }
}

impl StageRun for LimitRun {
    fn body_cap(&self) -> Option<usize> {
        self.read_body.then_some(BODY_CAP)
    }

    fn request_body(&mut self, body: Option<&mut Bytes>) -> Result<(), ProxyError> {
        let estimate = self.estimate(body.as_deref().map(|b| &b[..]));
        lock(&self.shared).estimate = Some(estimate);
        Ok(())
    }

    fn upstream_request(&mut self, head: &mut http::request::Parts) {
        let mut shared = lock(&self.shared);
        if shared.estimate.is_none() {
            self.content_length = head
                .headers
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok());
            shared.estimate = Some(self.estimate(None));
        }
    }

    fn response_head(&mut self, head: &mut http::response::Parts) {
        ratelimit_headers(&lock(&self.shared), &mut head.headers);
    }

    fn finish(&mut self, _end: End, event: &mut RequestAuditEvent) {
        let holds = std::mem::take(&mut lock(&self.shared).holds);
        let (tokens, cost) = event.llm.as_ref().map_or((0, 0), |m| {
            (m.usage.total_tokens(), m.cost_nanos.unwrap_or(0))
        });
        release_all(holds, |measure| match measure {
            Measure::Requests => 1,
            Measure::Tokens => tokens,
            Measure::CostNanos => cost,
        });
    }
}

/// Follows the limits and settles the leases every [`TICK`] until cancelled; then gives every
/// lease back.
pub(crate) async fn run(quota: Arc<Quota>, cancel: tokio_util::sync::CancellationToken) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ticks: u32 = 0;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = cancel.cancelled() => break,
        }
        ticks = ticks.wrapping_add(1);
        if ticks.is_multiple_of(FULL_RELOAD_TICKS) {
            // A safety net behind the cursor: a row written by a replica whose clock is far
            // behind ours is still seen within a minute.
            *quota.cursor.lock().unwrap_or_else(|e| e.into_inner()) = 0;
        }
        if let Err(err) = quota.reload().await {
            tracing::warn!(error = %err, "cannot reload the limits");
        }
        quota.settle(false).await;
    }
    quota.settle(true).await;
}

/// The `x-ratelimit-limit-*` / `x-ratelimit-remaining-*` headers of a request's holds. The names
/// are constants and the counts are formatted straight into their values: a request under limits
/// pays no header-name parsing and no `format!` for them.
fn ratelimit_headers(shared: &Shared, headers: &mut http::HeaderMap) {
    headers.reserve(2 * shared.holds.len());
    for h in &shared.holds {
        let limit = h
            .limit_header
            .clone()
            .or_else(|| ratelimit_value(h.kind, h.limit));
        insert_ratelimit_headers(h.kind, limit, h.remaining, headers);
    }
}

/// The headers of one limit: its value (formatted already) and what it has left.
fn insert_ratelimit_headers(
    kind: LimitKind,
    limit: Option<HeaderValue>,
    remaining: u64,
    headers: &mut http::HeaderMap,
) {
    let [limit_name, remaining_name] = ratelimit_names(kind);
    if let (Some(lv), Some(rv)) = (limit, ratelimit_value(kind, remaining)) {
        headers.insert(limit_name, lv);
        headers.insert(remaining_name, rv);
    }
}

/// A count of `kind`'s measure as a header value: requests and tokens as integers, cost in
/// dollars.
fn ratelimit_value(kind: LimitKind, count: u64) -> Option<HeaderValue> {
    match kind.measure() {
        Measure::CostNanos => {
            HeaderValue::from_str(airlock_core::llm::Usd::of(count).as_str()).ok()
        }
        Measure::Requests | Measure::Tokens => Some(decimal(count)),
    }
}

/// `n` in decimal as a header value, formatted on the stack and copied once (`HeaderValue`'s
/// `From<u64>` allocates a spare buffer and then a shared header for it).
fn decimal(mut n: u64) -> HeaderValue {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    HeaderValue::from_bytes(&digits[at..]).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

/// `x-ratelimit-limit-{name}` and `x-ratelimit-remaining-{name}` for `LimitKind::header_name`.
const fn ratelimit_names(kind: LimitKind) -> [HeaderName; 2] {
    macro_rules! names {
        ($name:literal) => {
            [
                HeaderName::from_static(concat!("x-ratelimit-limit-", $name)),
                HeaderName::from_static(concat!("x-ratelimit-remaining-", $name)),
            ]
        };
    }
    match kind {
        LimitKind::RequestsPerMinute => names!("requests-per-minute"),
        LimitKind::RequestsPerDay => names!("requests-per-day"),
        LimitKind::TokensPerMinute => names!("tokens-per-minute"),
        LimitKind::TokensPerDay => names!("tokens-per-day"),
        LimitKind::CostUsdPerDay => names!("cost-usd-per-day"),
        LimitKind::CostUsdPerMonth => names!("cost-usd-per-month"),
        LimitKind::CostUsdTotal => names!("cost-usd-total"),
        LimitKind::MaxRequests => names!("max-requests"),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn ratelimit_header_names_follow_the_kinds_header_name() {
        for kind in LimitKind::ALL.into_iter().chain([LimitKind::MaxRequests]) {
            let [limit, remaining] = ratelimit_names(kind);
            assert_eq!(
                limit.as_str(),
                format!("x-ratelimit-limit-{}", kind.header_name())
            );
            assert_eq!(
                remaining.as_str(),
                format!("x-ratelimit-remaining-{}", kind.header_name())
            );
        }
    }

    #[test]
    fn decimal_values_are_the_counts() {
        for n in [0, 7, 10, 599, 1 << 53, u64::MAX] {
            assert_eq!(decimal(n).to_str().unwrap(), n.to_string());
        }
    }

    #[test]
    fn ratelimit_values_are_the_formatted_counts() {
        let mut headers = http::HeaderMap::new();
        for (kind, limit, remaining) in [
            (LimitKind::RequestsPerMinute, 600, 599),
            (LimitKind::CostUsdPerDay, 5_000_000_000, 4_215_000),
        ] {
            insert_ratelimit_headers(kind, ratelimit_value(kind, limit), remaining, &mut headers);
        }
        let got = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        assert_eq!(got("x-ratelimit-limit-requests-per-minute"), Some("600"));
        assert_eq!(
            got("x-ratelimit-remaining-requests-per-minute"),
            Some("599")
        );
        assert_eq!(got("x-ratelimit-limit-cost-usd-per-day"), Some("5"));
        assert_eq!(
            got("x-ratelimit-remaining-cost-usd-per-day"),
            Some("0.004215")
        );
        assert_eq!(headers.len(), 4);
    }
}
