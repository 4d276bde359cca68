//! The data plane's Prometheus metrics.
//!
//! The request path only ever touches atomics: no lock, no allocation, no label strings. Each
//! gateway config gets one [`GatewayStats`] the first time a request uses it (a lock-free
//! [`LazyMap`] lookup by id afterwards), holding a small table of counters by status code and
//! two histograms. Refusals and upstream errors are fixed arrays indexed by code or kind. Labels
//! are written only when a scrape encodes them, through prometheus-client's [`Collector`].
//! Gauges that the data plane already knows (tokens in memory, audit queue depth) are read at
//! scrape time and cost the request path nothing.
//!
//! Labels carry gateway config ids, status codes, error codes and kinds: never a token, a
//! secret, a path, a header or an address.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use airlock_core::{GatewayConfigId, Metered};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;

use crate::audit::AuditQueue;
use crate::error::Code;
use crate::shardmap::LazyMap;
use crate::state::State;

/// Histogram bucket bounds in seconds: from 50 µs, fine enough to see Airlock's own overhead on
/// a fast upstream (a cached or local one answers in well under a millisecond), to LLM calls of
/// minutes.
const BUCKETS: [f64; 20] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// A histogram of durations, in atomics.
struct Histogram {
    /// Per bucket (not cumulative), the last one is +Inf.
    counts: [AtomicU64; BUCKETS.len() + 1],
    sum_us: AtomicU64,
}

impl Histogram {
    fn new() -> Self {
        Histogram {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_us: AtomicU64::new(0),
        }
    }

    fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = BUCKETS
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(BUCKETS.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    fn encode(&self, encoder: &mut prometheus_client::encoding::MetricEncoder<'_>) -> Fmt {
        let mut buckets = [(0.0, 0u64); BUCKETS.len() + 1];
        let mut count = 0;
        for (i, slot) in buckets.iter_mut().enumerate() {
            let n = self.counts[i].load(Ordering::Relaxed);
            *slot = (BUCKETS.get(i).copied().unwrap_or(f64::INFINITY), n);
            count += n;
        }
        let sum = self.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }
}

/// Distinct status codes counted per gateway; more are counted under `code="other"`.
const CODE_SLOTS: usize = 24;

/// Request counts by status code: a tiny open table that fills itself with compare-and-swap.
struct CodeCounts {
    codes: [AtomicU16; CODE_SLOTS],
    counts: [AtomicU64; CODE_SLOTS],
    other: AtomicU64,
}

impl CodeCounts {
    fn new() -> Self {
        CodeCounts {
            codes: std::array::from_fn(|_| AtomicU16::new(0)),
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            other: AtomicU64::new(0),
        }
    }

    fn inc(&self, code: u16) {
        for (slot, count) in self.codes.iter().zip(&self.counts) {
            let mut seen = slot.load(Ordering::Acquire);
            if seen == 0 {
                seen = match slot.compare_exchange(0, code, Ordering::AcqRel, Ordering::Acquire) {
                    Ok(_) => code,
                    Err(other) => other,
                };
            }
            if seen == code {
                count.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        self.other.fetch_add(1, Ordering::Relaxed);
    }
}

/// Distinct models counted per gateway; more are counted under `model="other"`.
const MODEL_SLOTS: usize = 16;

/// The token kinds of `airlock_proxy_llm_tokens_total`, in `ModelUsage::tokens` order.
const TOKEN_KINDS: [&str; 5] = ["input", "output", "cache_read", "cache_write", "reasoning"];

/// Metered usage of one model at one gateway.
#[derive(Default)]
struct ModelUsage {
    /// Set once, by the request that claimed the slot; a slot claimed but not yet named is
    /// skipped (two racing requests may then name two slots alike: a scrape adds them up).
    name: OnceLock<Box<str>>,
    claimed: AtomicBool,
    requests: AtomicU64,
    /// Requests whose usage was estimated (`exact: false`).
    estimated: AtomicU64,
    tokens: [AtomicU64; TOKEN_KINDS.len()],
    cost_nanos: AtomicU64,
}

impl ModelUsage {
    fn add(&self, m: &Metered) {
        let u = &m.usage;
        self.requests.fetch_add(1, Ordering::Relaxed);
        if !u.exact {
            self.estimated.fetch_add(1, Ordering::Relaxed);
        }
        for (slot, n) in self.tokens.iter().zip([
            u.input_tokens,
            u.output_tokens,
            u.cache_read_tokens,
            u.cache_write_tokens,
            u.reasoning_tokens,
        ]) {
            slot.fetch_add(n, Ordering::Relaxed);
        }
        self.cost_nanos
            .fetch_add(m.cost_nanos.unwrap_or(0), Ordering::Relaxed);
    }
}

/// Metered usage by model: a few slots named by their first request, then `other`, so that
/// the label set stays bounded whatever models upstreams report. Allocated on a gateway's first
/// metered request only.
#[derive(Default)]
struct ModelTable {
    slots: OnceLock<Box<[ModelUsage; MODEL_SLOTS]>>,
    other: ModelUsage,
}

impl ModelTable {
    fn add(&self, m: &Metered) {
        let model = m.model.as_deref().unwrap_or("unknown");
        let slots = self
            .slots
            .get_or_init(|| Box::new(std::array::from_fn(|_| ModelUsage::default())));
        for slot in slots.iter() {
            match slot.name.get() {
                Some(name) if **name == *model => return slot.add(m),
                Some(_) => continue,
                None => {}
            }
            if slot
                .claimed
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                let _ = slot.name.set(model.into());
                return slot.add(m);
            }
        }
        self.other.add(m);
    }

    /// (model, usage) of every named slot, and `other` when used.
    fn each(&self) -> Vec<(&str, &ModelUsage)> {
        let mut out: Vec<(&str, &ModelUsage)> = self
            .slots
            .get()
            .map(|slots| {
                slots
                    .iter()
                    .filter_map(|s| s.name.get().map(|n| (&**n, s)))
                    .collect()
            })
            .unwrap_or_default();
        if self.other.requests.load(Ordering::Relaxed) > 0 {
            out.push(("other", &self.other));
        }
        out.sort_by(|a, b| a.0.cmp(b.0));
        out
    }
}

/// The status classes of upstream responses: 1xx to 5xx (anything else counts as 5xx).
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// What one gateway config's requests add up to.
pub(crate) struct GatewayStats {
    codes: CodeCounts,
    /// Response heads the upstream sent, by status class (Airlock's own answers are not here).
    upstream_classes: [AtomicU64; CLASSES.len()],
    /// Error responses Airlock produced, by [`Code`] (at `code as usize`).
    refusals: [AtomicU64; Code::ALL.len()],
    /// Upstream failures, by kind (in [`UpstreamErrorKind::ALL`] order).
    upstream_errors: [AtomicU64; UpstreamErrorKind::ALL.len()],
    /// Request body bytes sent upstream, and response bytes sent to the client.
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    /// From the request's arrival to the upstream's response head.
    head: Histogram,
    /// From the request's arrival to the end of the response body.
    total: Histogram,
    /// Metered usage and cost, by model.
    models: ModelTable,
}

impl GatewayStats {
    fn new() -> Self {
        GatewayStats {
            codes: CodeCounts::new(),
            upstream_classes: std::array::from_fn(|_| AtomicU64::new(0)),
            refusals: std::array::from_fn(|_| AtomicU64::new(0)),
            upstream_errors: std::array::from_fn(|_| AtomicU64::new(0)),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            head: Histogram::new(),
            total: Histogram::new(),
            models: ModelTable::default(),
        }
    }

    /// A metered request's usage and cost.
    pub(crate) fn metered(&self, m: &Metered) {
        self.models.add(m);
    }
}

/// Why a request to the upstream failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum UpstreamErrorKind {
    /// The name did not resolve.
    Dns,
    /// The TCP connection was refused or failed.
    Connect,
    /// The TLS handshake or certificate was refused.
    Tls,
    /// Connecting (TCP and TLS) took longer than the connect timeout.
    ConnectTimeout,
    /// The response head did not arrive within the response-header timeout.
    Timeout,
    /// The name resolved to an address the upstream policy refuses, or to Airlock itself.
    RefusedAddress,
    /// The connection broke before the response head arrived.
    Reset,
    /// The response body broke off while streaming.
    Body,
    /// `AIRLOCK_UPSTREAM_MAX_CONCURRENCY` was reached (answered 503 `upstream_busy`).
    Busy,
}

impl UpstreamErrorKind {
    const ALL: [UpstreamErrorKind; 9] = [
        Self::Dns,
        Self::Connect,
        Self::Tls,
        Self::ConnectTimeout,
        Self::Timeout,
        Self::RefusedAddress,
        Self::Reset,
        Self::Body,
        Self::Busy,
    ];

    /// The kind's name, as in the metric's label and the access log's `upstream_error`.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::Dns => "dns",
            Self::Connect => "connect",
            Self::Tls => "tls",
            Self::ConnectTimeout => "connect_timeout",
            Self::Timeout => "timeout",
            Self::RefusedAddress => "refused_address",
            Self::Reset => "reset",
            Self::Body => "body",
            Self::Busy => "busy",
        }
    }
}

/// Milliseconds since `base`, never 0 (0 means "never").
fn since(base: Instant) -> u64 {
    u64::try_from(base.elapsed().as_millis()).unwrap_or(u64::MAX - 1) + 1
}

/// Every counter of one data plane.
pub(crate) struct Metrics {
    started: Instant,
    gateways: LazyMap<GatewayConfigId, GatewayStats>,
    /// Requests refused before a token (and so a gateway) was known.
    no_gateway: GatewayStats,
    upstream_errors: [AtomicU64; UpstreamErrorKind::ALL.len()],
    /// By [`Code`], at `code as usize`.
    refusals: [AtomicU64; Code::ALL.len()],
    connections_active: AtomicI64,
    connections_parked: AtomicI64,
    connections_refused: AtomicU64,
    connections_refused_per_source: AtomicU64,
    /// When the state was last loaded or updated from the source (ms after `started`; 0: never).
    synced_at_ms: AtomicU64,
    full_loads: AtomicU64,
    feed_failures: AtomicU64,
}

impl Metrics {
    pub(crate) fn new() -> Self {
        Metrics {
            started: Instant::now(),
            gateways: LazyMap::new(),
            no_gateway: GatewayStats::new(),
            upstream_errors: std::array::from_fn(|_| AtomicU64::new(0)),
            refusals: std::array::from_fn(|_| AtomicU64::new(0)),
            connections_active: AtomicI64::new(0),
            connections_parked: AtomicI64::new(0),
            connections_refused: AtomicU64::new(0),
            connections_refused_per_source: AtomicU64::new(0),
            synced_at_ms: AtomicU64::new(0),
            full_loads: AtomicU64::new(0),
            feed_failures: AtomicU64::new(0),
        }
    }

    /// The stats of a gateway config (made on its first request).
    pub(crate) fn gateway(&self, id: &GatewayConfigId) -> Arc<GatewayStats> {
        self.gateways
            .get_or_insert(id, || (id.clone(), GatewayStats::new()))
    }

    /// One finished request, counted under its gateway (or `none`).
    pub(crate) fn request(&self, gateway: Option<&GatewayStats>, done: &Finished) {
        let stats = gateway.unwrap_or(&self.no_gateway);
        stats.codes.inc(done.status);
        if let Some(head) = done.head {
            stats.head.observe(head);
            stats.total.observe(done.total);
        }
        if let Some(status) = done.upstream_status {
            let class = usize::from(status / 100).clamp(1, CLASSES.len()) - 1;
            stats.upstream_classes[class].fetch_add(1, Ordering::Relaxed);
        }
        if let Some(n) = done.refusal.and_then(|c| stats.refusals.get(c as usize)) {
            n.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(i) = done
            .upstream_error
            .and_then(|kind| UpstreamErrorKind::ALL.iter().position(|k| *k == kind))
        {
            stats.upstream_errors[i].fetch_add(1, Ordering::Relaxed);
        }
        stats.bytes_in.fetch_add(done.bytes_in, Ordering::Relaxed);
        stats.bytes_out.fetch_add(done.bytes_out, Ordering::Relaxed);
    }

    pub(crate) fn refusal(&self, code: Code) {
        if let Some(n) = self.refusals.get(code as usize) {
            n.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn upstream_error(&self, kind: UpstreamErrorKind) {
        if let Some(i) = UpstreamErrorKind::ALL.iter().position(|k| *k == kind) {
            self.upstream_errors[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts a new client connection, unless `max` are open already (then it is counted as
    /// refused and `None` comes back). Called by the accept loop alone, so the check and the
    /// increment cannot race with another accept.
    pub(crate) fn open_connection(self: &Arc<Self>, max: usize) -> Option<ConnectionGuard> {
        let open = self.connections_active.load(Ordering::Acquire);
        if usize::try_from(open).unwrap_or(0) >= max {
            self.connections_refused.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        self.connections_active.fetch_add(1, Ordering::AcqRel);
        Some(ConnectionGuard(self.clone()))
    }

    /// A new connection was closed because its source had
    /// `AIRLOCK_MAX_CONNECTIONS_PER_SOURCE` open.
    /// An idle connection gave back its HTTP buffers; it counts as parked until it is dropped.
    pub(crate) fn parked(self: &Arc<Self>) -> ParkedGuard {
        self.connections_parked.fetch_add(1, Ordering::AcqRel);
        ParkedGuard(self.clone())
    }

    pub(crate) fn refused_per_source(&self) {
        self.connections_refused_per_source
            .fetch_add(1, Ordering::Relaxed);
    }

    /// The state was brought up to date with the source; `full`: by a full reload.
    pub(crate) fn synced(&self, full: bool) {
        self.synced_at_ms
            .store(since(self.started), Ordering::Release);
        if full {
            self.full_loads.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Loading from the source failed (the last state keeps serving).
    pub(crate) fn feed_failed(&self) {
        self.feed_failures.fetch_add(1, Ordering::Relaxed);
    }
}

/// What a finished request adds to its gateway's counters.
pub(crate) struct Finished {
    pub(crate) status: u16,
    pub(crate) upstream_status: Option<u16>,
    /// The error response Airlock produced, if it did.
    pub(crate) refusal: Option<Code>,
    pub(crate) upstream_error: Option<UpstreamErrorKind>,
    /// When the upstream's head arrived, if it did.
    pub(crate) head: Option<Duration>,
    pub(crate) total: Duration,
    pub(crate) bytes_in: u64,
    pub(crate) bytes_out: u64,
}

/// Held by a connection's task: the connection counts as open until it is dropped.
pub(crate) struct ConnectionGuard(Arc<Metrics>);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.connections_active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Held while a connection is parked.
pub(crate) struct ParkedGuard(Arc<Metrics>);

impl Drop for ParkedGuard {
    fn drop(&mut self) {
        self.0.connections_parked.fetch_sub(1, Ordering::AcqRel);
    }
}

type Fmt = Result<(), std::fmt::Error>;

/// Encodes one data plane's metrics at scrape time: its counters, and the gauges read from its
/// state and its audit queue.
pub(crate) struct ProxyCollector {
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) state: Arc<State>,
    pub(crate) audit: AuditQueue,
    /// Budgets and rate limits: their gauges and refusal counters.
    pub(crate) quota: Arc<crate::quota::Quota>,
}

impl std::fmt::Debug for ProxyCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProxyCollector")
    }
}

fn counter(encoder: &mut DescriptorEncoder<'_>, name: &str, help: &str, value: u64) -> Fmt {
    let c = ConstCounter::new(value);
    c.encode(encoder.encode_descriptor(name, help, None, c.metric_type())?)
}

fn gauge<T>(encoder: &mut DescriptorEncoder<'_>, name: &str, help: &str, value: T) -> Fmt
where
    ConstGauge<T>: EncodeMetric,
{
    let g = ConstGauge::new(value);
    g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)
}

impl Collector for ProxyCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Fmt {
        let m = &self.metrics;
        let mut gateways: Vec<(&str, &GatewayStats)> = Vec::new();
        // Sorted by id, so that scrapes are stable.
        let mut owned: Vec<(GatewayConfigId, Arc<GatewayStats>)> = Vec::new();
        m.gateways
            .for_each_arc(|id, stats| owned.push((id.clone(), stats)));
        owned.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
        gateways.push(("none", &m.no_gateway));
        gateways.extend(owned.iter().map(|(id, s)| (id.as_str(), &**s)));

        {
            let mut family = encoder.encode_descriptor(
                "airlock_proxy_requests",
                "Requests answered by the data plane, by gateway config id and HTTP status (gateway=\"none\": refused before a token was known).",
                None,
                MetricType::Counter,
            )?;
            for (gateway, stats) in &gateways {
                let c = &stats.codes;
                for (slot, count) in c.codes.iter().zip(&c.counts) {
                    let code = slot.load(Ordering::Acquire);
                    if code == 0 {
                        continue;
                    }
                    let code = itoa_u16(code);
                    let labels = [("gateway", *gateway), ("code", code.as_str())];
                    let n = count.load(Ordering::Relaxed);
                    family
                        .encode_family(&labels)?
                        .encode_counter::<NoLabelSet, _, f64>(&n, None)?;
                }
                let other = c.other.load(Ordering::Relaxed);
                if other > 0 {
                    let labels = [("gateway", *gateway), ("code", "other")];
                    family
                        .encode_family(&labels)?
                        .encode_counter::<NoLabelSet, _, f64>(&other, None)?;
                }
            }
        }
        for (name, help, pick) in [
            (
                "airlock_proxy_request_duration_seconds",
                "Time from a request's arrival to the upstream's response head, by gateway config id.",
                (|s: &GatewayStats| &s.head) as fn(&GatewayStats) -> &Histogram,
            ),
            (
                "airlock_proxy_request_total_duration_seconds",
                "Time from a request's arrival to the end of its response body, by gateway config id.",
                |s: &GatewayStats| &s.total,
            ),
        ] {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
            for (gateway, stats) in gateways.iter().skip(1) {
                let labels = [("gateway", *gateway)];
                pick(stats).encode(&mut family.encode_family(&labels)?)?;
            }
        }
        {
            let mut family = encoder.encode_descriptor(
                "airlock_proxy_llm_tokens",
                "Tokens of metered requests, by gateway config id, model (the first 16 per gateway, then \"other\") and kind (input counts cached tokens too; reasoning is part of output).",
                None,
                MetricType::Counter,
            )?;
            for (gateway, stats) in gateways.iter().skip(1) {
                for (model, usage) in stats.models.each() {
                    for (kind, n) in TOKEN_KINDS.iter().zip(&usage.tokens) {
                        let labels = [("gateway", *gateway), ("model", model), ("kind", *kind)];
                        family
                            .encode_family(&labels)?
                            .encode_counter::<NoLabelSet, _, f64>(
                                &n.load(Ordering::Relaxed),
                                None,
                            )?;
                    }
                }
            }
        }
        for (name, help, pick) in [
            (
                "airlock_proxy_llm_requests",
                "Metered requests, by gateway config id and model.",
                (|u: &ModelUsage| u.requests.load(Ordering::Relaxed)) as fn(&ModelUsage) -> u64,
            ),
            (
                "airlock_proxy_llm_estimated_requests",
                "Metered requests whose usage was estimated (the client left before it arrived, or the upstream sent none), by gateway config id and model.",
                |u: &ModelUsage| u.estimated.load(Ordering::Relaxed),
            ),
        ] {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (gateway, stats) in gateways.iter().skip(1) {
                for (model, usage) in stats.models.each() {
                    let labels = [("gateway", *gateway), ("model", model)];
                    family
                        .encode_family(&labels)?
                        .encode_counter::<NoLabelSet, _, f64>(&pick(usage), None)?;
                }
            }
        }
        {
            let mut family = encoder.encode_descriptor(
                "airlock_proxy_llm_cost_usd",
                "Cost of metered requests in US dollars (from integer nano-dollars; requests of unpriced models add 0), by gateway config id and model.",
                None,
                MetricType::Counter,
            )?;
            for (gateway, stats) in gateways.iter().skip(1) {
                for (model, usage) in stats.models.each() {
                    let labels = [("gateway", *gateway), ("model", model)];
                    let usd = usage.cost_nanos.load(Ordering::Relaxed) as f64 / 1e9;
                    family
                        .encode_family(&labels)?
                        .encode_counter::<NoLabelSet, _, f64>(&usd, None)?;
                }
            }
        }
        {
            let mut family = encoder.encode_descriptor(
                "airlock_proxy_upstream_errors",
                "Requests that failed on the way to or from the upstream, by kind.",
                None,
                MetricType::Counter,
            )?;
            for (kind, n) in UpstreamErrorKind::ALL.iter().zip(&m.upstream_errors) {
                let labels = [("kind", kind.label())];
                family
                    .encode_family(&labels)?
                    .encode_counter::<NoLabelSet, _, f64>(&n.load(Ordering::Relaxed), None)?;
            }
        }
        {
            let mut family = encoder.encode_descriptor(
                "airlock_proxy_upstream_responses",
                "Response heads the upstream sent, by gateway config id and status class (Airlock's own error responses are not counted here: see airlock_proxy_gateway_refusals).",
                None,
                MetricType::Counter,
            )?;
            for (gateway, stats) in gateways.iter().skip(1) {
                for (class, n) in CLASSES.iter().zip(&stats.upstream_classes) {
                    let n = n.load(Ordering::Relaxed);
                    if n > 0 {
                        let labels = [("gateway", *gateway), ("class", *class)];
                        family
                            .encode_family(&labels)?
                            .encode_counter::<NoLabelSet, _, f64>(&n, None)?;
                    }
                }
            }
        }
        {
            let mut family = encoder.encode_descriptor(
                "airlock_proxy_gateway_refusals",
                "Error responses that Airlock itself produced, by gateway config id (\"none\": before a token was known) and x-airlock-error code; only codes seen.",
                None,
                MetricType::Counter,
            )?;
            for (gateway, stats) in &gateways {
                for (code, n) in Code::ALL.iter().zip(&stats.refusals) {
                    let n = n.load(Ordering::Relaxed);
                    if n > 0 {
                        let labels = [("gateway", *gateway), ("reason", code.as_str())];
                        family
                            .encode_family(&labels)?
                            .encode_counter::<NoLabelSet, _, f64>(&n, None)?;
                    }
                }
            }
        }
        {
            let mut family = encoder.encode_descriptor(
                "airlock_proxy_gateway_upstream_errors",
                "Requests that failed on the way to or from the upstream, by gateway config id and kind (dns, connect, tls, ...); only kinds seen.",
                None,
                MetricType::Counter,
            )?;
            for (gateway, stats) in gateways.iter().skip(1) {
                for (kind, n) in UpstreamErrorKind::ALL.iter().zip(&stats.upstream_errors) {
                    let n = n.load(Ordering::Relaxed);
                    if n > 0 {
                        let labels = [("gateway", *gateway), ("kind", kind.label())];
                        family
                            .encode_family(&labels)?
                            .encode_counter::<NoLabelSet, _, f64>(&n, None)?;
                    }
                }
            }
        }
        for (name, help, pick) in [
            (
                "airlock_proxy_received_bytes",
                "Request body bytes forwarded to the upstream, by gateway config id.",
                (|s: &GatewayStats| &s.bytes_in) as fn(&GatewayStats) -> &AtomicU64,
            ),
            (
                "airlock_proxy_sent_bytes",
                "Response body bytes sent to clients, by gateway config id (\"none\": Airlock's refusals before a token was known).",
                |s: &GatewayStats| &s.bytes_out,
            ),
        ] {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (gateway, stats) in &gateways {
                let n = pick(stats).load(Ordering::Relaxed);
                let labels = [("gateway", *gateway)];
                family
                    .encode_family(&labels)?
                    .encode_counter::<NoLabelSet, _, f64>(&n, None)?;
            }
        }
        {
            let mut family = encoder.encode_descriptor(
                "airlock_proxy_refusals",
                "Error responses that Airlock itself produced, by their x-airlock-error code.",
                None,
                MetricType::Counter,
            )?;
            for (code, n) in Code::ALL.iter().zip(&m.refusals) {
                let labels = [("reason", code.as_str())];
                family
                    .encode_family(&labels)?
                    .encode_counter::<NoLabelSet, _, f64>(&n.load(Ordering::Relaxed), None)?;
            }
        }
        gauge(
            &mut encoder,
            "airlock_proxy_connections_active",
            "Client connections open on the data-plane listener.",
            m.connections_active.load(Ordering::Relaxed),
        )?;
        gauge(
            &mut encoder,
            "airlock_proxy_connections_parked",
            "Idle HTTP/1 client connections that hold no HTTP buffers until their next request.",
            m.connections_parked.load(Ordering::Relaxed),
        )?;
        counter(
            &mut encoder,
            "airlock_proxy_memory_trims",
            "Times this process asked the allocator to give freed memory back, after idle connections parked.",
            crate::memory::trims(),
        )?;
        counter(
            &mut encoder,
            "airlock_proxy_connections_refused",
            "Client connections closed at once because AIRLOCK_MAX_CONNECTIONS were open.",
            m.connections_refused.load(Ordering::Relaxed),
        )?;
        counter(
            &mut encoder,
            "airlock_proxy_connections_refused_per_source",
            "Client connections closed at once because AIRLOCK_MAX_CONNECTIONS_PER_SOURCE were open from their source.",
            m.connections_refused_per_source.load(Ordering::Relaxed),
        )?;
        gauge(
            &mut encoder,
            "airlock_proxy_tokens",
            "Active gateway tokens held in memory.",
            i64::try_from(self.state.token_count()).unwrap_or(i64::MAX),
        )?;
        gauge(
            &mut encoder,
            "airlock_proxy_state_loaded",
            "1 once a full snapshot of the state has been loaded, else 0.",
            i64::from(self.state.ready()),
        )?;
        let synced = m.synced_at_ms.load(Ordering::Acquire);
        let now = since(m.started);
        // Never synced: the age of the process's data plane.
        let age_ms = if synced == 0 {
            now
        } else {
            now.saturating_sub(synced)
        };
        gauge(
            &mut encoder,
            "airlock_proxy_state_sync_age_seconds",
            "Seconds since the state was last loaded or updated from the database (it grows up to the resync interval while nothing changes).",
            age_ms as f64 / 1000.0,
        )?;
        counter(
            &mut encoder,
            "airlock_proxy_state_full_loads",
            "Full reloads of the state: the first load, resyncs after a lost change feed, and the periodic safety net.",
            m.full_loads.load(Ordering::Relaxed),
        )?;
        counter(
            &mut encoder,
            "airlock_proxy_state_load_failures",
            "Failed attempts to load or update the state (the last state keeps serving).",
            m.feed_failures.load(Ordering::Relaxed),
        )?;
        gauge(
            &mut encoder,
            "airlock_audit_queue_depth",
            "Request audit events waiting in memory to be written.",
            i64::try_from(self.audit.depth()).unwrap_or(i64::MAX),
        )?;
        counter(
            &mut encoder,
            "airlock_audit_caught_up",
            "Request audit events written by the catch-up writer because the idle-priority background writer fell behind (the machine's cores were busy).",
            self.audit.caught_up(),
        )?;
        counter(
            &mut encoder,
            "airlock_audit_spilled",
            "Request audit events written to the local spill file because the database could not take them.",
            self.audit.spilled(),
        )?;
        gauge(
            &mut encoder,
            "airlock_audit_spill_pending",
            "1 while the spill file holds events not yet replayed into the database, else 0.",
            i64::from(self.audit.spill_pending()),
        )?;
        self.quota.encode_metrics(&mut encoder)?;
        Ok(())
    }
}

/// A status code as text, without allocating.
struct StatusText([u8; 5], usize);

impl StatusText {
    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0[..self.1]).unwrap_or("other")
    }
}

fn itoa_u16(mut n: u16) -> StatusText {
    let mut digits = [0u8; 5];
    let mut len = 0;
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    digits[..len].reverse();
    StatusText(digits, len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_fill_slots_and_overflow_to_other() {
        let c = CodeCounts::new();
        for code in 100..(100 + CODE_SLOTS as u16 + 3) {
            c.inc(code);
        }
        c.inc(100);
        assert_eq!(c.counts[0].load(Ordering::Relaxed), 2);
        assert_eq!(c.other.load(Ordering::Relaxed), 3);
        assert_eq!(itoa_u16(404).as_str(), "404");
        assert_eq!(itoa_u16(0).as_str(), "0");
    }

    #[test]
    fn histogram_buckets() {
        let h = Histogram::new();
        h.observe(Duration::from_micros(30));
        h.observe(Duration::from_micros(80));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_millis(700));
        h.observe(Duration::from_secs(1000));
        assert_eq!(h.counts[0].load(Ordering::Relaxed), 1, "<= 50 µs");
        assert_eq!(h.counts[1].load(Ordering::Relaxed), 1, "<= 100 µs");
        assert_eq!(h.counts[6].load(Ordering::Relaxed), 1, "<= 5 ms");
        assert_eq!(h.counts[13].load(Ordering::Relaxed), 1, "<= 1 s");
        assert_eq!(h.counts[BUCKETS.len()].load(Ordering::Relaxed), 1);
    }
}
