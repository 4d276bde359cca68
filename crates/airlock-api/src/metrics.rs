//! `airlock_api_requests_total{route, code}`: control-plane requests by route template (never the
//! raw path, which holds ids and names) and status; and, when traces are exported, a server span
//! per request named by its method and route template (docs/observability.md).

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use std::sync::Arc;

use airlock_core::trace_context::TraceParent;
use opentelemetry::global::BoxedTracer;
use opentelemetry::trace::{
    Span as _, SpanBuilder, SpanContext, SpanId, SpanKind, Status, TraceContextExt as _,
    TraceFlags, TraceId, TraceState, Tracer as _,
};
use opentelemetry::{Context, KeyValue};

use crate::AppState;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Labels {
    /// The route template, as `/v1/secrets/{name}`; `unmatched` for paths no route knows.
    route: String,
    code: u16,
}

/// The control plane's metrics. Cheap to clone (the counters are shared).
#[derive(Clone, Debug, Default)]
pub struct ApiMetrics {
    requests: Family<Labels, Counter>,
    /// Where request spans go; `None`: traces are off.
    tracer: Option<Arc<BoxedTracer>>,
}

impl ApiMetrics {
    /// Also a span per request, to this tracer (`AIRLOCK_OTLP_ENDPOINT`).
    pub fn with_tracer(mut self, tracer: BoxedTracer) -> ApiMetrics {
        self.tracer = Some(Arc::new(tracer));
        self
    }

    /// Adds the control plane's metrics to a Prometheus registry.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "airlock_api_requests",
            // prometheus-client adds the final period.
            "Control-plane requests by route template and HTTP status",
            self.requests.clone(),
        );
    }
}

/// Counts every request once its response exists.
pub(crate) async fn count(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_owned();
    let span = state.metrics.tracer.as_ref().map(|tracer| {
        let method = req.method().as_str().to_owned();
        let builder = SpanBuilder::from_name(format!("{method} {route}"))
            .with_kind(SpanKind::Server)
            .with_attributes([
                KeyValue::new("http.request.method", method),
                KeyValue::new("http.route", route.clone()),
            ]);
        tracer.build_with_context(builder, &client_context(req.headers()))
    });
    let response = next.run(req).await;
    if let Some(mut span) = span {
        let status = response.status();
        span.set_attribute(KeyValue::new(
            "http.response.status_code",
            i64::from(status.as_u16()),
        ));
        if status.is_server_error() {
            span.set_status(Status::error(""));
        }
        span.end();
    }
    let labels = Labels {
        route,
        code: response.status().as_u16(),
    };
    state.metrics.requests.get_or_create(&labels).inc();
    response
}

/// The client's trace, when it sent one well-formed `traceparent` (parsed strictly, only its ids
/// kept); a new trace otherwise.
fn client_context(headers: &http::HeaderMap) -> Context {
    let mut values = headers.get_all("traceparent").iter();
    match (
        values.next().and_then(|v| TraceParent::parse(v.as_bytes())),
        values.next(),
    ) {
        (Some(parent), None) => Context::new().with_remote_span_context(SpanContext::new(
            TraceId::from_bytes(parent.trace_id),
            SpanId::from_bytes(parent.span_id),
            TraceFlags::new(parent.flags),
            true,
            TraceState::default(),
        )),
        _ => Context::new(),
    }
}
