//! Airlock's data plane.
//!
//! A sandbox calls the data plane with a `gws_` token as its API key. The data plane checks the
//! token and the caller's address, removes the token, applies the real credential and streams
//! the request to the gateway config's upstream and the response back; then it records the
//! request in the audit trail. The request's journey is in `pipeline` (read it top to bottom);
//! the rest supports it:
//!
//! - `server`: the listener (PROXY protocol and TLS through `airlock-net`), HTTP/1.1 and HTTP/2,
//!   per-connection timeouts, parking idle HTTP/1 connections without hyper's buffers, graceful
//!   drain;
//! - `memory`: asking the allocator to give the parked connections' freed buffers back;
//! - [`h1guard`]: strict HTTP/1 framing, checked on the bytes before hyper parses them;
//! - `rewrite`: finding the token, checking the path, rewriting headers (pure functions);
//! - `state` and `feed`: what the data plane knows, and keeping it current from the store;
//! - `upstream`: the pooled client and its connector, which checks every address it dials;
//! - `body`: request and response bodies passed through unbuffered, counted;
//! - `audit`: the request events, batched to the store, spilled to a file when it is down;
//! - `metrics`: Prometheus counters and histograms in atomics, encoded at scrape time;
//! - `limits`: the per-origin concurrency cap and the per-devbox rate limit;
//! - `shardmap`: the one concurrent map (lock-free reads, writers copy a shard), which `state`,
//!   `limits`, `metrics` and `meter` keep their per-key data in;
//! - `request_id`: the `x-request-id` every request carries;
//! - [`error`]: the one error type, mapped to a status and a code in one place.
//!
//! Invariants: the data plane never imports the store (it sees a [`StateSource`] and an
//! [`AuditSink`]); a plaintext secret exists only in its memory and in the requests it sends
//! upstream; no token or secret appears in a log line, an error or a `Debug` output.

pub mod error;

#[cfg(feature = "bench")]
#[doc(hidden)]
pub mod bench;

mod audit;
mod body;
mod conn;
mod feed;
#[doc(hidden)] // For the fuzz targets and property tests (`crates/airlock-fuzz`); not an API.
pub mod fuzzing;
#[doc(hidden)] // Public for the fuzz targets (`crates/airlock-fuzz`).
pub mod h1guard;
mod limits;
mod memory;
mod meter;
mod metrics;
mod pipeline;
mod quota;
mod request_id;
mod rewrite;
mod router;
mod scrub;
mod server;
mod shardmap;
mod stage;
mod state;
mod trace;
mod upstream;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use airlock_core::state::{AuditSink, StateSource};
use airlock_core::UpstreamPolicy;
use airlock_crypto::Keyring;
use tokio_util::sync::CancellationToken;

pub use crate::error::{Origin, ProxyError};
pub use crate::limits::RateLimit;
pub use crate::quota::OnOutage;
pub use crate::trace::Tracer;

/// How the data plane runs. The binary fills it from the environment.
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    /// Where upstream connections may go (`AIRLOCK_ALLOW_PRIVATE_UPSTREAMS`).
    pub policy: UpstreamPolicy,
    /// Extra PEM trust roots for upstream TLS (`AIRLOCK_UPSTREAM_CA_FILE`'s contents), added to
    /// the web PKI roots.
    pub extra_roots_pem: Option<Vec<u8>>,
    /// Airlock's own listeners: never dialled as an upstream.
    pub own_addrs: Vec<SocketAddr>,
    /// An HTTP/1 request head must arrive within this, once its first byte has.
    pub header_read_timeout: Duration,
    /// A connection with no request in flight for this long is closed.
    pub idle_timeout: Duration,
    /// A response the client does not take any of for this long closes its connection (a full
    /// socket buffer, an HTTP/2 window held at zero), like nginx's `send_timeout`.
    pub send_timeout: Duration,
    /// HTTP/2 connections quiet this long are PINGed, and closed when the PING goes unanswered
    /// as long.
    pub h2_keep_alive_interval: Duration,
    /// Resolving and connecting to the upstream, TLS included.
    pub connect_timeout: Duration,
    /// The upstream must send its response head within this (504 otherwise). LLM calls are slow.
    pub response_header_timeout: Duration,
    /// The request head's size limit (431 beyond it).
    pub max_header_bytes: usize,
    /// How often the whole state is reloaded, as a safety net behind the change feed.
    pub resync_interval: Duration,
    /// Where audit events go while the audit sink cannot take them.
    pub audit_spill_path: PathBuf,
    /// TLS on the listener (`AIRLOCK_PROXY_TLS_CERT_FILE` and `..._KEY_FILE`); `None`: plain
    /// HTTP. The handshake must finish within `header_read_timeout` of the first byte.
    pub tls: Option<airlock_net::TlsServer>,
    /// Load balancers whose connections start with a PROXY header naming the real client
    /// (`AIRLOCK_TRUSTED_PROXIES`). From any other peer a PROXY header closes the connection.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Client connections open at once (`AIRLOCK_MAX_CONNECTIONS`); beyond it a new connection
    /// is closed at once.
    pub max_connections: usize,
    /// Client connections open at once from one source, an IPv4 address or an IPv6 /64
    /// (`AIRLOCK_MAX_CONNECTIONS_PER_SOURCE`); beyond it a new connection is closed at once.
    /// 0: no cap per source.
    pub max_connections_per_source: usize,
    /// Requests in flight to one upstream origin (`AIRLOCK_UPSTREAM_MAX_CONCURRENCY`); beyond it
    /// 503 `upstream_busy`. 0: unlimited.
    pub upstream_max_concurrency: usize,
    /// Requests per devbox (`AIRLOCK_DEVBOX_RATE_LIMIT`); beyond it 429 `rate_limited`.
    pub devbox_rate_limit: Option<RateLimit>,
    /// What a limit does when its lease is spent and the ledger cannot be reached
    /// (`AIRLOCK_LIMITS_ON_OUTAGE`).
    pub limits_on_outage: OnOutage,
    /// The clock of the limits' windows; `None`: the wall clock. For tests that roll a window
    /// over without waiting for it.
    #[doc(hidden)]
    pub limits_clock: Option<fn() -> i64>,
    /// Where request spans go (`AIRLOCK_OTLP_ENDPOINT`); `None`: no spans at all.
    pub tracer: Option<Tracer>,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            policy: UpstreamPolicy::default(),
            extra_roots_pem: None,
            own_addrs: Vec::new(),
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(90),
            send_timeout: Duration::from_secs(60),
            h2_keep_alive_interval: Duration::from_secs(20),
            connect_timeout: Duration::from_secs(10),
            response_header_timeout: Duration::from_secs(300),
            max_header_bytes: 64 * 1024,
            resync_interval: Duration::from_secs(60),
            audit_spill_path: PathBuf::from("airlock-audit.spill"),
            tls: None,
            trusted_proxies: Vec::new(),
            max_connections: 10_000,
            max_connections_per_source: 1_000,
            upstream_max_concurrency: 0,
            devbox_rate_limit: None,
            limits_on_outage: OnOutage::Closed,
            limits_clock: None,
            tracer: None,
        }
    }
}

/// Responses read on at once after their client left (an LLM stream whose usage is still to
/// come); beyond this, such a request is recorded with estimated usage.
const MAX_DRAINS: usize = 256;
/// How long one such response is read on at most.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(120);

/// How long `start` waits for the first load before returning not ready.
const FIRST_LOAD_WAIT: Duration = Duration::from_secs(15);

/// What the pipeline serves a request with (`pipeline::handle`): the state, the upstream
/// clients, the limits on requests, and where a request is recorded.
pub(crate) struct RequestCtx {
    config: RequestConfig,
    state: Arc<state::State>,
    loader: feed::TokenLoader,
    client: upstream::UpstreamClient,
    ws_client: upstream::UpstreamClient,
    gates: limits::OriginGates,
    limiter: Option<limits::DevboxLimiter>,
    audit: audit::AuditQueue,
    metrics: Arc<metrics::Metrics>,
    /// Responses read on after their client left, for the stages that need their ends.
    drains: Arc<body::Drains>,
    /// Budgets and rate limits, leased from the source's ledger.
    quota: Arc<quota::Quota>,
    /// Where request spans go; `None`: traces are off and no request pays for them.
    tracer: Option<Tracer>,
}

/// The settings of [`ProxyConfig`] that a request is served with.
pub(crate) struct RequestConfig {
    /// The request head's size limit (431 beyond it).
    max_header_bytes: usize,
    /// The upstream must send its response head within this (504 otherwise).
    response_header_timeout: Duration,
}

/// What the accept loop and its connections need (`server`): how a TCP connection becomes HTTP,
/// and the limits on connections. Their requests go on to the pipeline with a [`RequestCtx`].
pub(crate) struct Connections {
    acceptor: airlock_net::Acceptor,
    http: server::Http,
    /// An HTTP/1 request head must arrive within this, once its first byte has.
    header_read_timeout: Duration,
    /// A connection with no request in flight for this long is closed.
    idle_timeout: Duration,
    /// A response the client does not take any of for this long closes its connection.
    send_timeout: Duration,
    /// `AIRLOCK_MAX_CONNECTIONS`.
    max_connections: usize,
    /// `AIRLOCK_MAX_CONNECTIONS_PER_SOURCE`, unless 0.
    sources: Option<limits::SourceCaps>,
    /// Counts open and refused connections.
    metrics: Arc<metrics::Metrics>,
    /// Set when `serve` begins its drain.
    draining: AtomicBool,
}

/// A running data plane: its state follows the source in the background until it is dropped.
pub struct DataPlane {
    state: Arc<state::State>,
    connections: Arc<Connections>,
    requests: Arc<RequestCtx>,
    cancel: CancellationToken,
}

impl std::fmt::Debug for DataPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataPlane")
            .field("ready", &self.ready())
            .field("tokens", &self.token_count())
            .finish_non_exhaustive()
    }
}

/// Loads the state and starts following the change feed (a background task that reconnects
/// and resyncs by itself). If the source cannot be reached, `start` still succeeds: the task
/// keeps trying, [`DataPlane::ready`] stays false and requests with tokens get 503
/// `state_not_loaded` until it succeeds. Fails only on configuration it cannot use.
pub async fn start<S: StateSource, A: AuditSink>(
    config: ProxyConfig,
    keyring: Arc<Keyring>,
    source: Arc<S>,
    audit: Arc<A>,
) -> Result<DataPlane, ProxyError> {
    let roots = config.extra_roots_pem.as_deref();
    let tls = upstream::tls_config(roots, &[b"h2", b"http/1.1"])?;
    let ws_tls = upstream::tls_config(roots, &[b"http/1.1"])?;
    let connector = |tls| {
        upstream::Connector::new(
            config.policy.clone(),
            config.own_addrs.clone(),
            tls,
            config.connect_timeout,
        )
    };
    let cancel = CancellationToken::new();
    let state = Arc::new(state::State::new(keyring));
    let metrics = Arc::new(metrics::Metrics::new());
    let quota = Arc::new(quota::Quota::new(
        Box::new(quota::SourceLedger {
            source: source.clone(),
            audit: audit.clone(),
        }),
        config.limits_on_outage,
        config.limits_clock,
    ));
    let requests = Arc::new(RequestCtx {
        config: RequestConfig {
            max_header_bytes: config.max_header_bytes,
            response_header_timeout: config.response_header_timeout,
        },
        state: state.clone(),
        loader: feed::TokenLoader::new(Box::new(feed::SourceLoader(source.clone()))),
        client: upstream::client(connector(tls)),
        ws_client: upstream::client(connector(ws_tls)),
        gates: limits::OriginGates::new(config.upstream_max_concurrency),
        limiter: config.devbox_rate_limit.map(limits::DevboxLimiter::new),
        audit: audit::AuditQueue::start(
            audit,
            config.audit_spill_path.clone(),
            cancel.child_token(),
        ),
        metrics: metrics.clone(),
        drains: body::Drains::new(MAX_DRAINS, DRAIN_TIMEOUT),
        quota: quota.clone(),
        tracer: config.tracer.clone(),
    });
    let connections = Arc::new(Connections {
        acceptor: airlock_net::Acceptor::new(airlock_net::AcceptOptions {
            tls: config.tls.clone(),
            trusted_proxies: config.trusted_proxies.clone(),
            // A connection that sends nothing holds a slot no longer than a late head would.
            first_byte_timeout: config.header_read_timeout,
            handshake_timeout: config.header_read_timeout,
        }),
        http: server::builder(&config),
        header_read_timeout: config.header_read_timeout,
        idle_timeout: config.idle_timeout,
        send_timeout: config.send_timeout,
        max_connections: config.max_connections,
        sources: (config.max_connections_per_source > 0)
            .then(|| limits::SourceCaps::new(config.max_connections_per_source)),
        metrics: metrics.clone(),
        draining: AtomicBool::new(false),
    });
    let (first_tx, first_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(feed::run(
        state.clone(),
        metrics,
        source,
        config.resync_interval,
        cancel.child_token(),
        first_tx,
    ));
    // Wait for the first attempt, so that a healthy start returns ready; a failed (or hanging)
    // one returns and keeps retrying in the background.
    let _ = tokio::time::timeout(FIRST_LOAD_WAIT, first_rx).await;
    let _ = tokio::time::timeout(FIRST_LOAD_WAIT, quota.reload()).await;
    tokio::spawn(quota::run(quota, cancel.child_token()));
    Ok(DataPlane {
        state,
        connections,
        requests,
        cancel,
    })
}

/// The control plane's view of this data plane's routers (`GET …/status`, `…/routing-log`,
/// `POST …/route-preview`), answered from memory.
impl airlock_core::router::RouterInspector for DataPlane {
    fn status(
        &self,
        id: &airlock_core::GatewayConfigId,
    ) -> Option<Vec<airlock_core::router::BackendStatus>> {
        let router = self.state.router(id)?;
        Some(router::status(&router, airlock_core::time::now_ms()))
    }

    fn routing_log(
        &self,
        id: &airlock_core::GatewayConfigId,
        limit: usize,
    ) -> Option<Vec<airlock_core::router::RoutingDecision>> {
        Some(self.state.router(id)?.log.latest(limit))
    }

    fn preview(
        &self,
        id: &airlock_core::GatewayConfigId,
        anthropic: bool,
        body: &[u8],
    ) -> Option<Result<airlock_core::router::RoutePreview, airlock_core::InvalidInput>> {
        let router = self.state.router(id)?;
        let dialect = if anthropic {
            airlock_llm::translate::Dialect::AnthropicMessages
        } else {
            airlock_llm::translate::Dialect::OpenaiChat
        };
        Some(router::preview(
            &router,
            dialect,
            body,
            &self.requests.quota,
        ))
    }
}

impl DataPlane {
    /// Whether a full snapshot of the state has been loaded.
    pub fn ready(&self) -> bool {
        self.state.ready()
    }

    /// Whether a shutdown has begun: the listener no longer accepts and open requests are
    /// finishing. A readiness probe should fail from this moment.
    pub fn draining(&self) -> bool {
        self.connections.draining.load(Ordering::Acquire)
    }

    /// Active tokens in memory.
    pub fn token_count(&self) -> usize {
        self.state.token_count()
    }

    /// Adds this data plane's metrics to a Prometheus registry; they are read when it is
    /// encoded (a scrape), and cost the request path only atomic increments.
    pub fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register_collector(Box::new(metrics::ProxyCollector {
            metrics: self.requests.metrics.clone(),
            state: self.state.clone(),
            audit: self.requests.audit.clone(),
            quota: self.requests.quota.clone(),
        }));
    }

    /// This data plane's metrics alone, in the Prometheus text format (for tests and tools).
    pub fn encode_metrics(&self) -> String {
        let mut registry = prometheus_client::registry::Registry::default();
        self.register_metrics(&mut registry);
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
        text
    }

    /// Serves on an already-bound listener until `shutdown` resolves, then reports
    /// [`draining`](Self::draining), stops accepting, lets
    /// open requests finish (up to `grace`), flushes the audit queue and returns.
    pub async fn serve(
        &self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send,
        grace: Duration,
    ) -> std::io::Result<()> {
        server::serve(
            self.connections.clone(),
            self.requests.clone(),
            listener,
            shutdown,
            grace,
        )
        .await
    }
}

impl Drop for DataPlane {
    fn drop(&mut self) {
        // Stops the feed task; the audit writer flushes what it holds and stops.
        self.cancel.cancel();
    }
}
