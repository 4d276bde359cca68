//! OpenTelemetry spans of proxied requests, when the binary exports traces
//! (`AIRLOCK_OTLP_ENDPOINT`, docs/observability.md).
//!
//! A request gets a server span (`airlock.proxy`) when it arrives, continuing the client's trace
//! when it sent a valid `traceparent` (`airlock_core::trace_context`). Each call upstream is a
//! client span under it (`airlock.upstream`; a router's failed attempts are ended ones, the
//! served attempt stays open), whose context goes upstream as the `traceparent` header. The
//! phases (`admitted`, `upstream_head`, `first_byte`, `end`) are events of the server span. When
//! the request ends, the [`crate::audit::Recorder`] hands its finished audit event over and the
//! spans take their attributes from it: the ids, the statuses, the refusal code and, for a
//! metered gateway, the `gen_ai.*` attributes.
//!
//! **Invariant: only ids, statuses, the recorded path (token-like paths redacted, never a query)
//! and counts go into spans.** Never a header value but the parsed `traceparent` ids.
//!
//! **Invariant: without a tracer nothing here runs.** The recorder holds `None` and every hook
//! is one branch on it; the client's `traceparent` then passes through like any other header.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use airlock_core::state::RequestAuditEvent;
use airlock_core::trace_context::TraceParent;
use http::{HeaderMap, HeaderValue};
use opentelemetry::global::{BoxedSpan, BoxedTracer};
use opentelemetry::trace::{
    Span as _, SpanBuilder, SpanContext, SpanId, SpanKind, Status, TraceContextExt as _,
    TraceFlags, TraceId, TraceState, Tracer as _,
};
use opentelemetry::{Context, KeyValue};

const TRACEPARENT: &str = "traceparent";
const TRACESTATE: &str = "tracestate";
/// Longest `tracestate` taken from a client (the specification's own bound).
const MAX_TRACESTATE: usize = 512;

/// Where the data plane's spans go: an OpenTelemetry tracer. Cheap to clone.
#[derive(Clone)]
pub struct Tracer(Arc<BoxedTracer>);

impl Tracer {
    pub fn new(tracer: BoxedTracer) -> Tracer {
        Tracer(Arc::new(tracer))
    }
}

impl std::fmt::Debug for Tracer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tracer")
    }
}

/// One request's spans.
pub(crate) struct RequestTrace {
    tracer: Tracer,
    server: BoxedSpan,
    /// The call upstream in flight, or the one that served the request.
    upstream: Option<BoxedSpan>,
    admitted: bool,
    first_byte: bool,
}

/// The parent a client's headers name: its `traceparent`, with its `tracestate` when both are
/// well formed; an empty context (a new trace) otherwise.
pub(crate) fn client_context(headers: &HeaderMap) -> Context {
    let mut parents = headers.get_all(TRACEPARENT).iter();
    let (Some(value), None) = (parents.next(), parents.next()) else {
        return Context::new();
    };
    let Some(parent) = TraceParent::parse(value.as_bytes()) else {
        return Context::new();
    };
    let mut states = headers.get_all(TRACESTATE).iter();
    let state = match (states.next(), states.next()) {
        (Some(v), None) if v.len() <= MAX_TRACESTATE => v
            .to_str()
            .ok()
            .and_then(|s| s.parse::<TraceState>().ok())
            .unwrap_or_default(),
        _ => TraceState::default(),
    };
    Context::new().with_remote_span_context(SpanContext::new(
        TraceId::from_bytes(parent.trace_id),
        SpanId::from_bytes(parent.span_id),
        TraceFlags::new(parent.flags),
        true,
        state,
    ))
}

impl RequestTrace {
    /// Starts the server span of a request, under the client's trace if it named one.
    pub(crate) fn start(
        tracer: &Tracer,
        headers: &HeaderMap,
        method: &str,
        path: &str,
        client: IpAddr,
    ) -> Box<RequestTrace> {
        let builder = SpanBuilder::from_name("airlock.proxy")
            .with_kind(SpanKind::Server)
            .with_attributes([
                KeyValue::new("http.request.method", method.to_owned()),
                KeyValue::new("url.path", path.to_owned()),
                KeyValue::new("client.address", client.to_string()),
            ]);
        let server = tracer
            .0
            .build_with_context(builder, &client_context(headers));
        Box::new(RequestTrace {
            tracer: tracer.clone(),
            server,
            upstream: None,
            admitted: false,
            first_byte: false,
        })
    }

    /// A call upstream starts: the `admitted` event (at the first call), the call's client span,
    /// and its context into the request's `traceparent` (and `tracestate`), replacing the
    /// client's.
    pub(crate) fn upstream(
        &mut self,
        headers: &mut HeaderMap,
        method: &str,
        authority: &http::uri::Authority,
        attributes: Vec<KeyValue>,
    ) {
        if !self.admitted {
            self.admitted = true;
            self.server.add_event("admitted", Vec::new());
        }
        let mut attrs = vec![
            KeyValue::new("http.request.method", method.to_owned()),
            KeyValue::new("server.address", authority.host().to_owned()),
        ];
        if let Some(port) = authority.port_u16() {
            attrs.push(KeyValue::new("server.port", i64::from(port)));
        }
        attrs.extend(attributes);
        let builder = SpanBuilder::from_name("airlock.upstream")
            .with_kind(SpanKind::Client)
            .with_attributes(attrs);
        let parent = Context::new().with_remote_span_context(self.server.span_context().clone());
        let span = self.tracer.0.build_with_context(builder, &parent);
        inject(span.span_context(), headers);
        if let Some(open) = self.upstream.replace(span) {
            // Not ended by `attempt_failed`: it failed without a word.
            end_failed(open, "unknown", None);
        }
    }

    /// A router's attempt did not serve the request: its span ends with why.
    pub(crate) fn attempt_failed(&mut self, why: &'static str, status: Option<u16>) {
        if let Some(span) = self.upstream.take() {
            end_failed(span, why, status);
        }
    }

    /// The upstream's response head arrived.
    pub(crate) fn upstream_head(&mut self) {
        self.server.add_event("upstream_head", Vec::new());
    }

    /// A byte of the response body is on its way to the client.
    pub(crate) fn body_bytes(&mut self) {
        if !self.first_byte {
            self.first_byte = true;
            self.server.add_event("first_byte", Vec::new());
        }
    }

    /// The request ended as `event` records it: the attributes, the `end` event, and both spans
    /// ended.
    pub(crate) fn finish(
        &mut self,
        event: &RequestAuditEvent,
        refusal: Option<&'static str>,
        upstream_error: Option<&'static str>,
    ) {
        let now = SystemTime::now();
        let server = &mut self.server;
        server.set_attribute(KeyValue::new(
            "http.response.status_code",
            i64::from(event.status),
        ));
        let ids = [
            ("airlock.request_id", event.request_id.as_deref()),
            (
                "airlock.account_id",
                event.account_id.as_ref().map(|i| i.as_str()),
            ),
            (
                "airlock.gateway_config_id",
                event.gateway_config_id.as_ref().map(|i| i.as_str()),
            ),
            (
                "airlock.devbox_id",
                event.devbox_id.as_ref().map(|i| i.as_str()),
            ),
            (
                "airlock.token_id",
                event.token_id.as_ref().map(|i| i.as_str()),
            ),
            ("airlock.refusal", refusal),
            ("error.type", event.error_code.as_deref()),
        ];
        for (key, value) in ids {
            if let Some(value) = value {
                server.set_attribute(KeyValue::new(key, value.to_owned()));
            }
        }
        if event.status >= 500 {
            server.set_status(Status::error(event.error_code.clone().unwrap_or_default()));
        }
        server.add_event_with_timestamp("end", now, Vec::new());
        if let Some(mut upstream) = self.upstream.take() {
            if let Some(status) = event.upstream_status {
                upstream.set_attribute(KeyValue::new(
                    "http.response.status_code",
                    i64::from(status),
                ));
                if status >= 400 {
                    upstream.set_status(Status::error(""));
                }
            }
            if let Some(kind) = upstream_error {
                upstream.set_attribute(KeyValue::new("error.type", kind));
                upstream.set_status(Status::error(""));
            }
            if let Some(llm) = &event.llm {
                if let Some(provider) = &llm.provider {
                    upstream.set_attribute(KeyValue::new("gen_ai.provider.name", provider.clone()));
                    upstream.set_attribute(KeyValue::new("gen_ai.system", provider.clone()));
                }
                if let Some(model) = &llm.model {
                    upstream.set_attribute(KeyValue::new("gen_ai.response.model", model.clone()));
                }
                let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
                upstream.set_attribute(KeyValue::new(
                    "gen_ai.usage.input_tokens",
                    count(llm.usage.input_tokens),
                ));
                upstream.set_attribute(KeyValue::new(
                    "gen_ai.usage.output_tokens",
                    count(llm.usage.output_tokens),
                ));
                upstream.set_attribute(KeyValue::new("airlock.usage.exact", llm.usage.exact));
            }
            upstream.end_with_timestamp(now);
        }
        self.server.end_with_timestamp(now);
    }
}

fn end_failed(mut span: BoxedSpan, why: &'static str, status: Option<u16>) {
    if let Some(status) = status {
        span.set_attribute(KeyValue::new(
            "http.response.status_code",
            i64::from(status),
        ));
    }
    span.set_attribute(KeyValue::new("airlock.attempt.outcome", why));
    span.set_attribute(KeyValue::new("error.type", why));
    span.set_status(Status::error(""));
    span.end();
}

/// Writes a span's context as the W3C headers of a request going upstream.
fn inject(context: &SpanContext, headers: &mut HeaderMap) {
    let value = format!(
        "00-{}-{}-{:02x}",
        context.trace_id(),
        context.span_id(),
        context.trace_flags().to_u8()
    );
    if let Ok(value) = HeaderValue::from_str(&value) {
        headers.insert(TRACEPARENT, value);
    }
    let state = context.trace_state().header();
    match HeaderValue::from_str(&state) {
        Ok(value) if !state.is_empty() => {
            headers.insert(TRACESTATE, value);
        }
        _ => {
            headers.remove(TRACESTATE);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_context_needs_one_well_formed_traceparent() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let mut headers = HeaderMap::new();
        headers.insert(TRACEPARENT, HeaderValue::from_static(tp));
        headers.insert(TRACESTATE, HeaderValue::from_static("vendor=opaque"));
        let cx = client_context(&headers);
        let span = cx.span();
        let sc = span.span_context();
        assert!(sc.is_remote() && sc.is_sampled());
        assert_eq!(
            format!("{}", sc.trace_id()),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(sc.trace_state().header(), "vendor=opaque");
        let mut out = HeaderMap::new();
        inject(sc, &mut out);
        assert_eq!(out[TRACEPARENT], tp);
        assert_eq!(out[TRACESTATE], "vendor=opaque");

        headers.append(TRACEPARENT, HeaderValue::from_static(tp));
        assert!(!client_context(&headers).has_active_span());
        let mut upper = HeaderMap::new();
        upper.insert(
            TRACEPARENT,
            HeaderValue::from_str(&tp.to_uppercase()).unwrap(),
        );
        assert!(!client_context(&upper).has_active_span());
    }
}
