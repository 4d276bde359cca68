//! OpenTelemetry traces through the real binary: `AIRLOCK_OTLP_ENDPOINT` points at an OTLP/HTTP
//! receiver this test runs (a hyper server decoding protobuf `ExportTraceServiceRequest`s), and
//! requests go through the data plane to the testkit's recording upstreams.
//!
//! Checked: the server span of a proxied request and its upstream child span, with their
//! attributes and links; the `traceparent` the upstream received names Airlock's trace and its
//! upstream span; a client's `traceparent` is continued; a refusal's span names the refusal; the
//! `gen_ai.*` attributes of a metered Anthropic gateway; control-plane spans; no token, secret,
//! admin key or query value anywhere in the exported bytes; and an unreachable collector fails
//! no request, its spans counted as dropped.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use airlock_testkit::upstream::{self, RecordingUpstream, Reply, UpstreamOptions};
use airlock_testkit::{free_addr, http_get, TestRequest};
use airlock_tests::{Airlock, ADMIN, MASTER};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use serde_json::json;

const PLAIN_KEY: &str = "sk-plain-SENTINEL-0123456789";
const ANTHROPIC_KEY: &str = "sk-ant-SENTINEL-9876543210";
const QUERY_SECRET: &str = "query-SENTINEL-55aa";
const CLIENT_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const CLIENT_SPAN: &str = "b7ad6b7169203331";

/// What the receiver got: every decoded span, and every request body as it came.
#[derive(Default)]
struct Received {
    spans: Vec<Span>,
    raw: Vec<u8>,
    posts: Vec<String>,
}

/// A minimal OTLP/HTTP receiver: `POST /v1/traces` with a protobuf body.
async fn receiver() -> (SocketAddr, Arc<Mutex<Received>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let received = Arc::new(Mutex::new(Received::default()));
    let store = received.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let store = store.clone();
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let store = store.clone();
                        async move {
                            let path = req.uri().path().to_owned();
                            let kind = req
                                .headers()
                                .get(http::header::CONTENT_TYPE)
                                .map(|v| v.to_str().unwrap().to_owned())
                                .unwrap_or_default();
                            let body = req.into_body().collect().await?.to_bytes();
                            let decoded = ExportTraceServiceRequest::decode(body.as_ref()).unwrap();
                            let mut r = store.lock().unwrap();
                            r.posts.push(format!("{path} {kind}"));
                            r.raw.extend_from_slice(&body);
                            for rs in decoded.resource_spans {
                                for ss in rs.scope_spans {
                                    r.spans.extend(ss.spans);
                                }
                            }
                            Ok::<_, hyper::Error>(
                                http::Response::builder()
                                    .header(http::header::CONTENT_TYPE, "application/x-protobuf")
                                    .body(Full::new(Bytes::new()))
                                    .unwrap(),
                            )
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    (addr, received)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn attrs(span: &Span) -> BTreeMap<String, String> {
    span.attributes
        .iter()
        .map(|kv| {
            let value = match kv.value.as_ref().and_then(|v| v.value.clone()) {
                Some(Any::StringValue(s)) => s,
                Some(Any::IntValue(i)) => i.to_string(),
                Some(Any::BoolValue(b)) => b.to_string(),
                other => format!("{other:?}"),
            };
            (kv.key.clone(), value)
        })
        .collect()
}

fn events(span: &Span) -> Vec<String> {
    span.events.iter().map(|e| e.name.clone()).collect()
}

/// Waits (up to a minute: batches go every 2 s) until `find` finds what it looks for.
async fn wait_for<T>(received: &Mutex<Received>, find: impl Fn(&Received) -> Option<T>) -> T {
    for _ in 0..600 {
        if let Some(found) = find(&received.lock().unwrap()) {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = received.lock().unwrap();
    let names: Vec<_> = r.spans.iter().map(|s| (&s.name, attrs(s))).collect();
    panic!("not exported; spans so far: {names:#?}");
}

/// The server span whose `airlock.request_id` is `id`, and its children.
fn request_spans(r: &Received, id: &str) -> Option<(Span, Vec<Span>)> {
    let server = r.spans.iter().find(|s| {
        s.name == "airlock.proxy"
            && attrs(s).get("airlock.request_id").map(String::as_str) == Some(id)
    })?;
    let children: Vec<Span> = r
        .spans
        .iter()
        .filter(|s| s.parent_span_id == server.span_id && s.trace_id == server.trace_id)
        .cloned()
        .collect();
    Some((server.clone(), children))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_an_otlp_receiver_and_traceparent_goes_upstream() {
    let (collector, received) = receiver().await;
    let plain = RecordingUpstream::start(
        UpstreamOptions::plain().responder(upstream::always(Reply::text(200, "plain answer"))),
    )
    .await
    .unwrap();
    let anthropic = RecordingUpstream::start(
        UpstreamOptions::plain().responder(upstream::anthropic_messages()),
    )
    .await
    .unwrap();
    // A router's first backend is overloaded: its attempt fails, the second one serves.
    let down = RecordingUpstream::start(UpstreamOptions::plain().responder(upstream::always(
        Reply::json(
            529,
            &json!({"type": "error", "error": {"type": "overloaded_error", "message": "busy"}}),
        ),
    )))
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/airlock.db", dir.path().display());
    let endpoint = format!("http://{collector}");
    let airlock = Airlock::start_on(
        &db,
        &[
            ("AIRLOCK_OTLP_ENDPOINT", &endpoint),
            ("OTEL_SERVICE_NAME", "airlock-under-test"),
        ],
    )
    .await;
    for (name, value) in [("PLAIN_KEY", PLAIN_KEY), ("ANTHROPIC_KEY", ANTHROPIC_KEY)] {
        airlock
            .post("/v1/secrets", json!({"name": name, "value": value}))
            .await;
    }
    let plain_gw = airlock
        .post(
            "/v1/gateway-configs",
            json!({"name": "plain", "endpoint": format!("{}/base", plain.url()),
                "auth_mechanism": {"type": "bearer"}}),
        )
        .await;
    let anthropic_gw = airlock
        .post(
            "/v1/gateway-configs",
            json!({"name": "anthropic", "provider": "anthropic", "api": "anthropic-messages",
                "endpoint": anthropic.url(),
                "auth_mechanism": {"type": "header", "key": "x-api-key"}}),
        )
        .await;
    for (name, url) in [("down", down.url()), ("claude", anthropic.url())] {
        airlock
            .post(
                "/v1/gateway-configs",
                json!({"name": name, "provider": "anthropic", "endpoint": url,
                    "models": [{"id": "claude-plain"}]}),
            )
            .await;
    }
    airlock
        .post(
            "/v1/gateway-configs",
            json!({"name": "llm", "type": "router", "backends": [
                {"gateway": "down", "secret": "ANTHROPIC_KEY", "priority": 0},
                {"gateway": "claude", "secret": "ANTHROPIC_KEY", "priority": 1},
            ]}),
        )
        .await;
    let dbx = airlock
        .post(
            "/v1/devboxes",
            json!({"source_addresses": ["127.0.0.1"], "gateways": {
                "PLAIN": {"gateway": "plain", "secret": "PLAIN_KEY"},
                "ANTHROPIC": {"gateway": "anthropic", "secret": "ANTHROPIC_KEY"},
                "LLM": {"gateway": "llm"}}}),
        )
        .await;
    let devbox = dbx["id"].as_str().unwrap().to_owned();
    let plain_token = dbx["environment"]["PLAIN"].as_str().unwrap().to_owned();
    let anthropic_token = dbx["environment"]["ANTHROPIC"].as_str().unwrap().to_owned();
    let router_token = dbx["environment"]["LLM"].as_str().unwrap().to_owned();
    let proxy = format!("http://{}", airlock.proxy_addr);

    // 1. A request of Airlock's own trace, with a secret in its query.
    let resp = TestRequest::get(&format!("{proxy}/v1/things?key={QUERY_SECRET}"))
        .bearer(&plain_token)
        .header("x-request-id", "trace-req-1")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status, 200);
    let seen = plain.last_request().unwrap();
    let traceparent = seen
        .header_str("traceparent")
        .expect("a traceparent upstream");
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(
        (parts.len(), parts[0], parts[3]),
        (4, "00", "01"),
        "{traceparent}"
    );
    let (server, children) = wait_for(&received, |r| {
        request_spans(r, "trace-req-1").filter(|(_, c)| !c.is_empty())
    })
    .await;
    assert_eq!(server.kind, 2, "server kind");
    assert!(server.parent_span_id.is_empty(), "a trace of its own");
    let a = attrs(&server);
    assert_eq!(a["http.request.method"], "GET");
    assert_eq!(a["url.path"], "/v1/things");
    assert_eq!(a["http.response.status_code"], "200");
    assert_eq!(
        a["airlock.gateway_config_id"],
        plain_gw["id"].as_str().unwrap()
    );
    assert_eq!(a["airlock.devbox_id"], devbox);
    assert!(a.contains_key("airlock.token_id"));
    let phases = events(&server);
    for phase in ["admitted", "upstream_head", "first_byte", "end"] {
        assert!(phases.contains(&phase.to_owned()), "{phase} in {phases:?}");
    }
    assert_eq!(children.len(), 1, "one upstream call");
    let up = &children[0];
    assert_eq!((up.name.as_str(), up.kind), ("airlock.upstream", 3));
    let u = attrs(up);
    assert_eq!(u["server.address"], plain.addr().ip().to_string());
    assert_eq!(u["server.port"], plain.addr().port().to_string());
    assert_eq!(u["http.response.status_code"], "200");
    // The upstream's traceparent: Airlock's trace, its upstream span as the parent.
    assert_eq!(parts[1], hex(&server.trace_id));
    assert_eq!(parts[2], hex(&up.span_id));

    // 2. A client's trace is continued; its tracestate passed on.
    let resp = TestRequest::post(&format!("{proxy}/v1/more"))
        .header("x-api-key", &plain_token)
        .header("x-request-id", "trace-req-2")
        .header(
            "traceparent",
            &format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"),
        )
        .header("tracestate", "vendor=opaque")
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status, 200);
    let seen = plain.last_request().unwrap();
    let traceparent = seen.header_str("traceparent").unwrap();
    assert!(
        traceparent.starts_with(&format!("00-{CLIENT_TRACE}-")),
        "{traceparent}"
    );
    assert!(
        !traceparent.contains(CLIENT_SPAN),
        "the parent is Airlock's span"
    );
    assert_eq!(seen.header_str("tracestate").unwrap(), "vendor=opaque");
    let (server, children) = wait_for(&received, |r| {
        request_spans(r, "trace-req-2").filter(|(_, c)| !c.is_empty())
    })
    .await;
    assert_eq!(hex(&server.trace_id), CLIENT_TRACE);
    assert_eq!(hex(&server.parent_span_id), CLIENT_SPAN);
    assert_eq!(
        traceparent,
        format!("00-{CLIENT_TRACE}-{}-01", hex(&children[0].span_id))
    );

    // 3. A malformed client traceparent starts a new trace and is not passed on.
    let bogus = "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01";
    let resp = TestRequest::get(&format!("{proxy}/v1/bogus"))
        .bearer(&plain_token)
        .header("x-request-id", "trace-req-3")
        .header("traceparent", bogus)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status, 200);
    let seen = plain
        .last_request()
        .unwrap()
        .header_str("traceparent")
        .unwrap();
    assert_ne!(seen, bogus);
    let (server, _) = wait_for(&received, |r| request_spans(r, "trace-req-3")).await;
    assert!(server.parent_span_id.is_empty());

    // 4. A refusal: the span says why; nothing went upstream.
    let resp = TestRequest::get(&format!("{proxy}/v1/things"))
        .header("x-request-id", "trace-req-4")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status, 401);
    let code = resp.header("x-airlock-error").unwrap();
    let (server, children) = wait_for(&received, |r| request_spans(r, "trace-req-4")).await;
    assert!(children.is_empty());
    let a = attrs(&server);
    assert_eq!(a["airlock.refusal"], code);
    assert_eq!(a["http.response.status_code"], "401");

    // 5. A metered gateway: the gen_ai attributes from the meter.
    let resp = TestRequest::post(&format!("{proxy}/v1/messages"))
        .header("x-api-key", &anthropic_token)
        .header("anthropic-version", "2023-06-01")
        .header("x-request-id", "trace-req-5")
        .json(&json!({"model": "claude-plain", "max_tokens": 64,
            "messages": [{"role": "user", "content": "one two three"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    let (server, children) = wait_for(&received, |r| {
        request_spans(r, "trace-req-5").filter(|(_, c)| !c.is_empty())
    })
    .await;
    assert_eq!(
        attrs(&server)["airlock.gateway_config_id"],
        anthropic_gw["id"].as_str().unwrap()
    );
    let g = attrs(&children[0]);
    assert_eq!(g["gen_ai.provider.name"], "anthropic");
    assert_eq!(g["gen_ai.system"], "anthropic");
    assert_eq!(g["gen_ai.response.model"], "claude-plain");
    assert_eq!(g["gen_ai.usage.input_tokens"], "11");
    assert_eq!(g["gen_ai.usage.output_tokens"], "10");

    // 6. A router: each backend tried is an upstream span; the failed one says why.
    let resp = TestRequest::post(&format!("{proxy}/v1/messages"))
        .header("x-api-key", &router_token)
        .header("anthropic-version", "2023-06-01")
        .header("x-request-id", "trace-req-6")
        .json(&json!({"model": "claude-plain", "max_tokens": 64,
            "messages": [{"role": "user", "content": "one two three"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.header("x-airlock-attempts").as_deref(), Some("2"));
    let (_, children) = wait_for(&received, |r| {
        request_spans(r, "trace-req-6").filter(|(_, c)| c.len() == 2)
    })
    .await;
    let mut attempts: Vec<_> = children.iter().map(attrs).collect();
    attempts.sort_by_key(|a| a.contains_key("airlock.attempt.outcome"));
    assert_eq!(
        attempts[0]["server.port"],
        anthropic.addr().port().to_string()
    );
    assert_eq!(attempts[0]["gen_ai.usage.input_tokens"], "11");
    assert_eq!(attempts[0]["gen_ai.request.model"], "claude-plain");
    assert_eq!(attempts[1]["server.port"], down.addr().port().to_string());
    assert_eq!(attempts[1]["airlock.attempt.outcome"], "upstream_5xx");
    assert_eq!(attempts[1]["http.response.status_code"], "529");
    // Each backend saw a traceparent naming its own attempt's span.
    let served = down
        .last_request()
        .unwrap()
        .header_str("traceparent")
        .unwrap();
    assert!(children.iter().any(|c| served.contains(&hex(&c.span_id))));

    // 7. The control plane's requests, by route template.
    let devbox_route = format!("/v1/devboxes/{devbox}");
    let (status, _) = airlock.call(http::Method::GET, &devbox_route, None).await;
    assert_eq!(status, 200);
    let registered = wait_for(&received, |r| {
        r.spans
            .iter()
            .find(|s| s.name == "POST /v1/devboxes")
            .cloned()
    })
    .await;
    let a = attrs(&registered);
    assert_eq!(registered.kind, 2);
    assert_eq!(a["http.route"], "/v1/devboxes");
    assert_eq!(a["http.response.status_code"], "200");
    let got = wait_for(&received, |r| {
        r.spans
            .iter()
            .find(|s| s.name == "GET /v1/devboxes/{id}")
            .cloned()
    })
    .await;
    assert_eq!(attrs(&got)["http.route"], "/v1/devboxes/{id}");

    // Nothing secret anywhere in what was exported; the resource names the service.
    let r = received.lock().unwrap();
    assert!(
        r.posts
            .iter()
            .all(|p| p == "/v1/traces application/x-protobuf"),
        "{:?}",
        r.posts
    );
    let raw = String::from_utf8_lossy(&r.raw);
    assert!(raw.contains("airlock-under-test"));
    for secret in [
        PLAIN_KEY,
        ANTHROPIC_KEY,
        QUERY_SECRET,
        ADMIN,
        MASTER,
        &plain_token,
        &anthropic_token,
        "gws_",
    ] {
        assert!(!raw.contains(secret), "{secret} was exported");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_collector_fails_no_request() {
    let up = RecordingUpstream::start(
        UpstreamOptions::plain().responder(upstream::always(Reply::text(200, "ok"))),
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/airlock.db", dir.path().display());
    // Nobody listens there.
    let endpoint = format!("http://{}", free_addr());
    let airlock = Airlock::start_on(&db, &[("AIRLOCK_OTLP_ENDPOINT", &endpoint)]).await;
    airlock
        .post("/v1/secrets", json!({"name": "KEY", "value": PLAIN_KEY}))
        .await;
    airlock
        .post(
            "/v1/gateway-configs",
            json!({"name": "plain", "endpoint": up.url(), "auth_mechanism": {"type": "bearer"}}),
        )
        .await;
    let dbx = airlock
        .post(
            "/v1/devboxes",
            json!({"source_addresses": ["127.0.0.1"], "gateways": {
                "PLAIN": {"gateway": "plain", "secret": "KEY"}}}),
        )
        .await;
    let token = dbx["environment"]["PLAIN"].as_str().unwrap().to_owned();
    let proxy = format!("http://{}", airlock.proxy_addr);
    for _ in 0..20 {
        let resp = TestRequest::get(&format!("{proxy}/x"))
            .bearer(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status, 200);
    }
    assert_eq!(up.requests().len(), 20);
    assert!(up
        .requests()
        .iter()
        .all(|r| r.header_str("traceparent").is_some()));
    // The spans are counted as dropped once their batch fails.
    let mut dropped = 0.0;
    for _ in 0..600 {
        let (_, body) = http_get(&format!("{}/metrics", airlock.ops)).await.unwrap();
        let text = String::from_utf8_lossy(&body).into_owned();
        dropped = text
            .lines()
            .find(|l| l.starts_with("airlock_trace_spans_dropped_total{reason=\"export_failed\"}"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
        if dropped > 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(dropped > 0.0, "no failed export counted");
}
