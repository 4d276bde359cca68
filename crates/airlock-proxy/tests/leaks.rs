//! Nothing secret in logs, errors, audit rows or `Debug` (SECURITY #20), for the data plane:
//! every event at debug level and above, from every crate in the process, is captured while
//! requests go through the success path, the failure paths and the whole attack suite
//! (`tests/attacks/`), and every log line, every answer, every audit row and the `Debug` output
//! are searched for every token minted and every secret, in raw, base64, hex and URL-encoded
//! forms.
//!
//! This file holds one test, because it installs the process-wide tracing subscriber.
//!
//! Metrics: this branch has no metrics endpoint yet. When the operations listener
//! (`AIRLOCK_METRICS_ADDR`, `GET /metrics`) exists, `tests/leaks.rs` at the workspace root
//! scrapes it through the real binary (see `scrape_metrics` there).

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly by design.
#![allow(unreachable_pub)] // The attack modules are shared with tests/attacks.

mod support;

#[path = "attacks"]
mod attacks {
    pub mod carriers;
    pub mod common;
    pub mod h2;
    pub mod limits;
    pub mod line_endings;
    pub mod routing;
    pub mod smuggling;
    pub mod traversal;
}

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use airlock_core::{AuthMechanism, BearerSecret, CustomHeader, HeaderSource, SecretKind};
use airlock_testkit::tls::self_signed_server_config;
use airlock_testkit::upstream::Responder;
use airlock_testkit::{RecordedRequest, RecordingUpstream, Reply, TestRequest, UpstreamOptions};
use base64::Engine as _;
use support::{Harness, Options};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

const SENTINEL: &str = "sk-SENTINEL-secret-value-4242";
const CUSTOM: &str = "org-SENTINEL-custom-9191";

/// Collects every event and span field at debug level and above, as text.
struct Capture {
    out: Arc<Mutex<String>>,
    next: AtomicU64,
}

struct Fields<'a>(&'a mut String);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let _ = write!(self.0, "{}={:?} ", field.name(), value);
    }
}

impl Subscriber for Capture {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        *metadata.level() <= Level::DEBUG
    }

    fn new_span(&self, span: &Attributes<'_>) -> Id {
        let mut line = String::new();
        span.record(&mut Fields(&mut line));
        self.out.lock().unwrap().push_str(&(line + "\n"));
        Id::from_u64(self.next.fetch_add(1, Ordering::Relaxed) + 1)
    }

    fn record(&self, _span: &Id, values: &Record<'_>) {
        let mut line = String::new();
        values.record(&mut Fields(&mut line));
        self.out.lock().unwrap().push_str(&(line + "\n"));
    }

    fn record_follows_from(&self, _span: &Id, _follows: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut line = format!(
            "{} {}: ",
            event.metadata().level(),
            event.metadata().target()
        );
        event.record(&mut Fields(&mut line));
        self.out.lock().unwrap().push_str(&(line + "\n"));
    }

    fn enter(&self, _span: &Id) {}

    fn exit(&self, _span: &Id) {}
}

fn forms(secret: &str) -> Vec<String> {
    let bytes = secret.as_bytes();
    vec![
        secret.to_owned(),
        // A header name that held it would be logged lower-cased.
        secret.to_ascii_lowercase(),
        base64::engine::general_purpose::STANDARD.encode(bytes),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes),
        bytes.iter().map(|b| format!("{b:02x}")).collect(),
        bytes.iter().map(|b| format!("%{b:02X}")).collect(),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_token_or_secret_in_logs_errors_or_debug() {
    let out = Arc::new(Mutex::new(String::new()));
    tracing::subscriber::set_global_default(Capture {
        out: out.clone(),
        next: AtomicU64::new(0),
    })
    .unwrap();

    // The upstream reflects the credential, so the scrubbing path (which logs) runs too.
    let responder: Responder = Arc::new(|req: &RecordedRequest| {
        let mut reply = Reply::json(200, &serde_json::json!({"ok": true}));
        if let Some(v) = req.header_str("authorization") {
            reply = reply.with_header("x-echo", &v);
            // And as a header's name, whose removal is logged without the name.
            if let Some(key) = v.strip_prefix("Bearer ") {
                reply = reply.with_header(&format!("x-{}", key.to_ascii_lowercase()), "1");
            }
        }
        reply
    });
    let h = Harness::start(
        support::sqlite().await,
        Options {
            responder: Some(responder),
            sink_failures: 2,
            configure: Box::new(|c| c.header_read_timeout = Duration::from_millis(500)),
            ..Options::default()
        },
    )
    .await;
    let org = h.seed.secret("ORG", CUSTOM).await;
    let custom = vec![CustomHeader {
        name: "x-org".into(),
        source: HeaderSource::Secret(org.id.clone()),
    }];
    let gateway = h
        .seed
        .gateway(&h.endpoint("/v1"), AuthMechanism::Bearer, custom)
        .await;
    let secret = h.seed.secret("KEY", SENTINEL).await;
    let (devbox, tokens) = h.seed.devbox(&["127.0.0.1"], &[(&gateway, &secret)]).await;
    let token = tokens[0].expose().to_owned();

    // Success, then every kind of refusal with this token in it.
    let mut bodies = Vec::new();
    let send = |req: TestRequest| async move { req.send().await.unwrap() };
    let ok = send(TestRequest::get(&h.url("/models")).bearer(&token)).await;
    assert_eq!(ok.status, 200);
    bodies.push(ok.text());
    let mut bad = token.clone().into_bytes();
    bad[10] = if bad[10] == b'a' { b'b' } else { b'a' };
    let bad = String::from_utf8(bad).unwrap();
    let stranger = BearerSecret::generate(SecretKind::Gateway);
    for req in [
        TestRequest::get(&h.url("/x")).bearer(&bad),
        TestRequest::get(&h.url("/x")).bearer(stranger.expose()),
        TestRequest::get(&h.url("/x"))
            .bearer(&token)
            .header("x-api-key", stranger.expose()),
        TestRequest::get(&h.url(&format!("/x?key={token}"))).bearer(&token),
        TestRequest::get(&h.url("/x")).header("authorization", &format!("Basic {token}")),
        TestRequest::get(&h.url("/../x")).bearer(&token),
        TestRequest::get(&h.url("/x"))
            .bearer(&token)
            .from_ip("127.0.0.2".parse().unwrap()),
    ] {
        let r = send(req).await;
        assert!(r.status.is_client_error(), "{}", r.status);
        bodies.push(r.text());
    }
    // Upstream failures: a self-signed upstream.
    let untrusted = RecordingUpstream::start(UpstreamOptions::tls(self_signed_server_config(&[
        "localhost",
    ])))
    .await
    .unwrap();
    let bad_gateway = h
        .seed
        .gateway(&untrusted.url(), AuthMechanism::Bearer, Vec::new())
        .await;
    let (_, more) = h
        .seed
        .devbox(&["127.0.0.1"], &[(&bad_gateway, &secret)])
        .await;
    let r = send(TestRequest::get(&h.url("/x")).bearer(more[0].expose())).await;
    assert_eq!(r.status, 502);
    bodies.push(r.text());
    // A rotation and a shutdown go through the feed.
    h.seed.rotate(&secret, &format!("{SENTINEL}-2")).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    bodies.push(
        send(TestRequest::get(&h.url("/x")).bearer(&token))
            .await
            .text(),
    );
    h.seed.shutdown(&devbox).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    bodies.push(
        send(TestRequest::get(&h.url("/x")).bearer(&token))
            .await
            .text(),
    );
    // The whole attack suite, with its own sentinel secret.
    let mut seen = attacks::common::Seen::default();
    attacks::smuggling::run(&h, &mut seen).await;
    attacks::line_endings::run(&h, &mut seen).await;
    attacks::routing::run(&h, &mut seen).await;
    attacks::carriers::run(&h, &mut seen).await;
    attacks::traversal::run(&h, &mut seen).await;
    attacks::limits::run(&h, &mut seen).await;
    attacks::h2::run(&h, &mut seen).await;
    assert!(seen.answers.len() > 100, "the attack suite did not run");
    bodies.extend(seen.answers);

    // Let the failing audit writes happen and be logged, and every event reach the store.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let debug = format!("{:?}", h.plane);
    let request_rows = format!("{:?}", h.seed.request_events().await);
    assert!(
        request_rows.contains("address_not_allowed"),
        "the audit rows are missing"
    );
    // Every row of every table, whatever its account (refusals before a token is known have
    // none): the database files themselves.
    let db_path = h.db.url.strip_prefix("sqlite://").unwrap().to_owned();
    let mut database = Vec::new();
    for suffix in ["", "-wal", "-journal"] {
        if let Ok(bytes) = std::fs::read(format!("{db_path}{suffix}")) {
            database.extend(bytes);
        }
    }
    let database = String::from_utf8_lossy(&database).into_owned();
    assert!(
        database.contains("misplaced_token"),
        "the request events are not in the database"
    );
    let write_rows = format!(
        "{:?}",
        h.seed
            .store
            .list_audit_events(
                &h.seed.account,
                &airlock_store::AuditFilter::default(),
                &airlock_store::Page {
                    limit: 100_000,
                    starting_after: None,
                    include_total_count: false,
                },
            )
            .await
            .unwrap()
            .items
    );

    let logs = out.lock().unwrap().clone();
    assert!(
        logs.contains("refused a request"),
        "nothing was captured: is the subscriber installed?"
    );
    assert!(
        logs.contains("cannot write audit events"),
        "the audit failure path did not run"
    );
    assert!(
        logs.contains("reflected an injected secret"),
        "the scrubbing path did not run"
    );
    let minted = h.seed.minted.lock().unwrap().clone();
    assert!(
        minted.len() >= 10,
        "the tokens of the attack suite were not recorded"
    );
    let fixed = [
        bad.as_str(),
        stranger.expose(),
        SENTINEL,
        CUSTOM,
        attacks::common::SECRET,
    ];
    for secret in fixed
        .iter()
        .copied()
        .chain(minted.iter().map(String::as_str))
    {
        for form in forms(secret) {
            assert!(
                !logs.contains(&form),
                "a log line holds a secret in the form {form:.8}…"
            );
            assert!(!debug.contains(&form), "Debug holds a secret");
            assert!(
                !request_rows.contains(&form),
                "a request audit row holds a secret"
            );
            assert!(!write_rows.contains(&form), "an audit row holds a secret");
            assert!(!database.contains(&form), "the database holds a secret");
            for body in &bodies {
                assert!(!body.contains(&form), "an answer holds a secret: {body}");
            }
        }
    }
    assert!(
        !logs.contains("gws_"),
        "a log line holds something token-like"
    );
}
