//! OpenTelemetry trace export over OTLP/HTTP with protobuf bodies (`AIRLOCK_OTLP_ENDPOINT`,
//! docs/observability.md).
//!
//! The SDK's batch processor gathers ended spans on a thread of its own and hands each batch to
//! the OTLP exporter, which posts it to `<endpoint>/v1/traces` with [`Client`]: the CLI's small
//! hyper client (plain HTTP, or rustls with the web roots), each post run on the process's tokio
//! runtime. A request never waits for any of it: ending a span is a `try_send` into a bounded
//! queue, and a span that finds [`MAX_QUEUE`] spans waiting is dropped and counted
//! (`airlock_trace_spans_dropped_total{reason="queue_full"}`), as are the spans of a batch the
//! collector did not take (`reason="export_failed"`).

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Result};
use bytes::Bytes;
use http_body_util::Full;
use opentelemetry::global::BoxedTracer;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::{Context, KeyValue};
use opentelemetry_http::{HttpClient, HttpError};
use opentelemetry_otlp::{Protocol, WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider, Span, SpanData,
    SpanExporter, SpanProcessor,
};
use opentelemetry_sdk::Resource;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use crate::client::ApiClient;

/// Spans waiting for export at most; beyond it new ones are dropped.
const MAX_QUEUE: usize = 4096;
/// Spans per export request at most.
const MAX_BATCH: usize = 512;
/// How long a batch gathers before it is sent.
const DELAY: Duration = Duration::from_secs(2);
/// One export request, connection included.
const TIMEOUT: Duration = Duration::from_secs(10);

/// What traces need from the settings.
pub(crate) struct TraceSettings {
    /// The collector's base URL; spans go to `<base>/v1/traces`.
    pub(crate) endpoint: String,
    /// `OTEL_SERVICE_NAME`, else `airlock`.
    pub(crate) service_name: String,
    /// The share of new traces sampled (`AIRLOCK_TRACE_SAMPLE_RATIO`); a client's own trace
    /// keeps its sampling decision.
    pub(crate) sample_ratio: f64,
}

impl TraceSettings {
    /// Where spans are posted: the spec's rule for `OTEL_EXPORTER_OTLP_ENDPOINT`, the signal's
    /// path appended to the base.
    pub(crate) fn traces_url(&self) -> String {
        format!("{}/v1/traces", self.endpoint.trim_end_matches('/'))
    }
}

/// The running exporter: a tracer for each plane and a way to flush at shutdown.
pub(crate) struct Traces {
    provider: SdkTracerProvider,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DropLabels {
    reason: &'static str,
}

/// Spans in the queue, and the counters of what happened to them.
#[derive(Debug, Default)]
struct Stats {
    queued: AtomicUsize,
    exported: Counter,
    dropped: Family<DropLabels, Counter>,
}

impl Stats {
    fn drop_spans(&self, reason: &'static str, n: usize) {
        self.dropped
            .get_or_create(&DropLabels { reason })
            .inc_by(n as u64);
    }
}

impl Traces {
    /// Builds the exporter and registers its metrics. Needs the tokio runtime it runs on.
    pub(crate) fn start(settings: &TraceSettings, registry: &mut Registry) -> Result<Traces> {
        let client = Client {
            api: Arc::new(ApiClient::new(&settings.endpoint, None, None)?),
            runtime: tokio::runtime::Handle::current(),
        };
        let stats = Arc::new(Stats::default());
        registry.register(
            "airlock_trace_spans_exported",
            "Spans the OTLP collector accepted",
            stats.exported.clone(),
        );
        registry.register(
            "airlock_trace_spans_dropped",
            "Spans never exported: the queue was full, or the collector did not take their batch",
            stats.dropped.clone(),
        );
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(client)
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(settings.traces_url())
            .with_timeout(TIMEOUT)
            .build()
            .map_err(|e| anyhow!("AIRLOCK_OTLP_ENDPOINT: cannot build the exporter: {e}"))?;
        let batch = BatchSpanProcessor::builder(Counted {
            inner: exporter,
            stats: stats.clone(),
        })
        .with_batch_config(
            BatchConfigBuilder::default()
                .with_max_queue_size(MAX_QUEUE)
                .with_max_export_batch_size(MAX_BATCH)
                .with_scheduled_delay(DELAY)
                .build(),
        )
        .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(Bounded {
                inner: batch,
                stats,
            })
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                settings.sample_ratio,
            ))))
            .with_resource(
                Resource::builder_empty()
                    .with_service_name(settings.service_name.clone())
                    .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
                    .build(),
            )
            .build();
        Ok(Traces { provider })
    }

    /// A tracer for one part of Airlock (`airlock.proxy`, `airlock.api`).
    pub(crate) fn tracer(&self, scope: &'static str) -> BoxedTracer {
        BoxedTracer::new(Box::new(self.provider.tracer(scope)))
    }

    /// Sends what is queued, within a few seconds; called once the servers have stopped.
    pub(crate) async fn shutdown(self) {
        let provider = self.provider;
        let done = tokio::task::spawn_blocking(move || {
            provider.shutdown_with_timeout(Duration::from_secs(5))
        })
        .await;
        if !matches!(done, Ok(Ok(()))) {
            tracing::warn!("traces: not every span could be exported at shutdown");
        }
    }
}

/// Keeps the batch processor's queue below its own bound, so that every span it would drop is
/// dropped here and counted.
#[derive(Debug)]
struct Bounded {
    inner: BatchSpanProcessor,
    stats: Arc<Stats>,
}

impl SpanProcessor for Bounded {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        if self.stats.queued.fetch_add(1, Ordering::Relaxed) >= MAX_QUEUE {
            self.stats.queued.fetch_sub(1, Ordering::Relaxed);
            self.stats.drop_spans("queue_full", 1);
            return;
        }
        self.inner.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// The OTLP exporter, counting what it sent and what it could not.
#[derive(Debug)]
struct Counted<E> {
    inner: E,
    stats: Arc<Stats>,
}

impl<E: SpanExporter> SpanExporter for Counted<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let n = batch.len();
        let result = self.inner.export(batch).await;
        self.stats.queued.fetch_sub(n, Ordering::Relaxed);
        match &result {
            Ok(()) => {
                self.stats.exported.inc_by(n as u64);
            }
            Err(err) => {
                self.stats.drop_spans("export_failed", n);
                tracing::warn!(spans = n, error = %err, "traces: a batch could not be exported");
            }
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// Posts one export request. The batch processor calls it from its own thread, outside tokio,
/// so the request runs on the runtime and this waits for its answer.
struct Client {
    api: Arc<ApiClient>,
    runtime: tokio::runtime::Handle,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("otlp::Client")
    }
}

#[async_trait::async_trait]
impl HttpClient for Client {
    async fn send_bytes(
        &self,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, HttpError> {
        let api = self.api.clone();
        let (mut parts, body) = request.into_parts();
        // The connection is to the collector already: the request line takes the path alone.
        if let Some(authority) = parts.uri.authority() {
            parts
                .headers
                .insert(http::header::HOST, authority.as_str().parse()?);
        }
        parts.uri = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .parse()?;
        let request = http::Request::from_parts(parts, Full::new(body));
        let sent = self
            .runtime
            .spawn(async move { tokio::time::timeout(TIMEOUT, api.send(request)).await });
        let (status, body) = sent.await?.map_err(|_| anyhow!("timed out"))??;
        Ok(http::Response::builder().status(status).body(body)?)
    }
}
