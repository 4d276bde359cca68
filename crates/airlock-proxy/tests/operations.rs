//! What an operator watches and bounds: the metrics move by exactly what happened, the request
//! id travels everywhere, and the three limits (connections, requests in flight per upstream,
//! requests per devbox) answer at once instead of queueing.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly by design.

mod support;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use airlock_core::AuthMechanism;
use airlock_proxy::RateLimit;
use airlock_testkit::upstream::Responder;
use airlock_testkit::{RecordedRequest, Reply, TestRequest};
use base64::Engine as _;
use bytes::Bytes;
use support::{code, get, sample, scrape, sqlite, wait_sample, Harness, Options};
use tokio::io::AsyncReadExt;

const SECRET: &str = "sk-SENTINEL-metrics-secret-5151";

/// `/missing` → 404, `/slow` → 200 whose body ends after 3 s, `/theirs` → 200 with the
/// upstream's own request id, anything else → 200.
fn responder() -> Responder {
    Arc::new(|req: &RecordedRequest| match req.path() {
        p if p.ends_with("/missing") => Reply::text(404, "no such thing"),
        p if p.ends_with("/slow") => Reply::Stream {
            status: 200,
            headers: vec![("content-type".into(), "text/plain".into())],
            chunks: vec![(Duration::from_secs(3), Bytes::from_static(b"slow"))],
        },
        p if p.ends_with("/theirs") => {
            Reply::text(200, "hello").with_header("x-request-id", "req_upstream_own_id")
        }
        _ => Reply::text(200, "hello"),
    })
}

async fn harness(
    configure: impl FnOnce(&mut airlock_proxy::ProxyConfig) + Send + 'static,
) -> Harness {
    Harness::start(
        sqlite().await,
        Options {
            responder: Some(responder()),
            configure: Box::new(configure),
            ..Options::default()
        },
    )
    .await
}

fn forms(secret: &str) -> Vec<String> {
    let bytes = secret.as_bytes();
    vec![
        secret.to_owned(),
        base64::engine::general_purpose::STANDARD.encode(bytes),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes),
        bytes.iter().map(|b| format!("{b:02x}")).collect(),
        bytes.iter().map(|b| format!("%{b:02X}")).collect(),
    ]
}

fn requests(gateway: &str, code: &str) -> String {
    format!("airlock_proxy_requests_total{{gateway=\"{gateway}\",code=\"{code}\"}}")
}

#[tokio::test]
async fn requests_are_counted_by_gateway_and_status_exactly() {
    let h = harness(|_| {}).await;
    let s = h.simple(AuthMechanism::Bearer, SECRET).await;
    let gw = s.gateway.id.as_str();
    for _ in 0..3 {
        assert_eq!(get(&h, "/ok", &s.token).await.status, 200);
    }
    for _ in 0..2 {
        assert_eq!(get(&h, "/missing", &s.token).await.status, 404);
    }
    // Refused before any token was known: counted under gateway="none".
    let r = TestRequest::get(&h.url("/ok")).send().await.unwrap();
    assert_eq!(code(&r), "missing_token");

    wait_sample(&h, &requests(gw, "200"), 3.0).await;
    wait_sample(&h, &requests(gw, "404"), 2.0).await;
    wait_sample(&h, &requests("none", "401"), 1.0).await;
    let text = scrape(&h);
    assert_eq!(
        sample(
            &text,
            r#"airlock_proxy_refusals_total{reason="missing_token"}"#
        ),
        1.0
    );
    // Every response the upstream gave has a time to head and a whole duration.
    let count = |name: &str| sample(&text, &format!("{name}_count{{gateway=\"{gw}\"}}"));
    assert_eq!(count("airlock_proxy_request_duration_seconds"), 5.0);
    assert_eq!(count("airlock_proxy_request_total_duration_seconds"), 5.0);
    assert_eq!(
        sample(
            &text,
            &format!(
                "airlock_proxy_request_duration_seconds_bucket{{le=\"+Inf\",gateway=\"{gw}\"}}"
            )
        ),
        5.0
    );
    // Nothing else moved them: the counts are exactly the requests sent.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let again = scrape(&h);
    assert_eq!(sample(&again, &requests(gw, "200")), 3.0);
    assert_eq!(sample(&again, &requests(gw, "404")), 2.0);

    // A scrape never holds the token, the secret or the path.
    for needle in forms(SECRET).into_iter().chain(forms(s.token.expose())) {
        assert!(!again.contains(&needle), "the scrape holds {needle:?}");
    }
    assert!(!again.contains("/missing"));
    assert!(!again.contains("127.0.0.1"));
}

#[tokio::test]
async fn upstream_errors_are_counted_by_kind() {
    let h = harness(|_| {}).await;
    // A port nobody listens on: the dial is refused.
    let closed = airlock_testkit::free_port();
    let refused = h
        .seed
        .gateway(
            &format!("http://127.0.0.1:{closed}"),
            AuthMechanism::Bearer,
            vec![],
        )
        .await;
    // An address the upstream policy does not allow.
    let forbidden = h
        .seed
        .gateway("https://10.0.0.1", AuthMechanism::Bearer, vec![])
        .await;
    let secret = h.seed.secret(&support::unique_name(), SECRET).await;
    let (_, tokens) = h
        .seed
        .devbox(
            &["127.0.0.1"],
            &[(&refused, &secret), (&forbidden, &secret)],
        )
        .await;

    let r = get(&h, "/x", &tokens[0]).await;
    assert_eq!(
        (r.status.as_u16(), code(&r).as_str()),
        (502, "upstream_unreachable")
    );
    let r = get(&h, "/x", &tokens[1]).await;
    assert_eq!(
        (r.status.as_u16(), code(&r).as_str()),
        (502, "upstream_forbidden")
    );

    wait_sample(&h, &requests(refused.id.as_str(), "502"), 1.0).await;
    wait_sample(&h, &requests(forbidden.id.as_str(), "502"), 1.0).await;
    let text = scrape(&h);
    let errors = |kind: &str| {
        sample(
            &text,
            &format!("airlock_proxy_upstream_errors_total{{kind=\"{kind}\"}}"),
        )
    };
    assert_eq!(errors("connect"), 1.0);
    assert_eq!(errors("refused_address"), 1.0);
    assert_eq!(errors("tls"), 0.0);
    let refusals = |reason: &str| {
        sample(
            &text,
            &format!("airlock_proxy_refusals_total{{reason=\"{reason}\"}}"),
        )
    };
    assert_eq!(refusals("upstream_unreachable"), 1.0);
    assert_eq!(refusals("upstream_forbidden"), 1.0);
    // Neither upstream answered, so neither has a time to head.
    let heads = format!(
        "airlock_proxy_request_duration_seconds_count{{gateway=\"{}\"}}",
        refused.id.as_str()
    );
    assert_eq!(sample(&text, &heads), 0.0);
    assert!(!text.contains("10.0.0.1"));
}

#[tokio::test]
async fn the_tokens_gauge_follows_a_devbox_shutdown() {
    let h = harness(|_| {}).await;
    let s = h.simple(AuthMechanism::Bearer, SECRET).await;
    let other = h.simple(AuthMechanism::Bearer, SECRET).await;
    wait_sample(&h, "airlock_proxy_tokens", 2.0).await;
    assert_eq!(sample(&scrape(&h), "airlock_proxy_state_loaded"), 1.0);
    h.seed.shutdown(&s.devbox).await;
    wait_sample(&h, "airlock_proxy_tokens", 1.0).await;
    assert_eq!(get(&h, "/ok", &other.token).await.status, 200);
}

#[tokio::test]
async fn audit_queue_depth_and_spills_move_while_the_sink_is_down() {
    let h = harness(|_| {}).await;
    let s = h.simple(AuthMechanism::Bearer, SECRET).await;

    // A database that hangs: the writer holds its batch, and new events wait in the queue.
    h.sink.stalled.store(true, Ordering::SeqCst);
    assert_eq!(get(&h, "/ok", &s.token).await.status, 200);
    let writing = Harness::eventually(Duration::from_secs(5), || async {
        h.sink.writes.load(Ordering::SeqCst) >= 1
    })
    .await;
    assert!(writing);
    for _ in 0..5 {
        assert_eq!(get(&h, "/ok", &s.token).await.status, 200);
    }
    wait_sample(&h, "airlock_audit_queue_depth", 5.0).await;
    h.sink.stalled.store(false, Ordering::SeqCst);
    wait_sample(&h, "airlock_audit_queue_depth", 0.0).await;
    let seed = h.seed.clone();
    let written = Harness::eventually(Duration::from_secs(10), || {
        let seed = seed.clone();
        async move { seed.request_events().await.len() == 6 }
    })
    .await;
    assert!(written, "the held events were not written");
    assert_eq!(sample(&scrape(&h), "airlock_audit_spilled_total"), 0.0);

    // A database that refuses writes: events go to the spill file, and come back from it.
    h.sink.failures.store(1_000, Ordering::SeqCst);
    for _ in 0..2 {
        assert_eq!(get(&h, "/ok", &s.token).await.status, 200);
    }
    wait_sample(&h, "airlock_audit_spilled_total", 2.0).await;
    assert_eq!(sample(&scrape(&h), "airlock_audit_spill_pending"), 1.0);
    h.sink.failures.store(0, Ordering::SeqCst);
    let replayed = Harness::eventually(Duration::from_secs(30), || async {
        sample(&scrape(&h), "airlock_audit_spill_pending") == 0.0
    })
    .await;
    assert!(replayed, "the spill file was never replayed");
    assert_eq!(h.seed.request_events().await.len(), 8);
    // Spilled events are counted once, not again when a replay puts them back.
    assert_eq!(sample(&scrape(&h), "airlock_audit_spilled_total"), 2.0);
}

#[tokio::test]
async fn connections_beyond_the_cap_are_closed_and_counted() {
    let h = harness(|c| c.max_connections = 2).await;
    let s = h.simple(AuthMechanism::Bearer, SECRET).await;
    let first = tokio::net::TcpStream::connect(h.proxy).await.unwrap();
    let _second = tokio::net::TcpStream::connect(h.proxy).await.unwrap();
    wait_sample(&h, "airlock_proxy_connections_active", 2.0).await;

    let mut third = tokio::net::TcpStream::connect(h.proxy).await.unwrap();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(10), third.read(&mut buf))
        .await
        .expect("the connection over the cap was not closed");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    wait_sample(&h, "airlock_proxy_connections_refused_total", 1.0).await;
    assert_eq!(sample(&scrape(&h), "airlock_proxy_connections_active"), 2.0);

    // A slot freed is a slot usable.
    drop(first);
    wait_sample(&h, "airlock_proxy_connections_active", 1.0).await;
    assert_eq!(get(&h, "/ok", &s.token).await.status, 200);
    assert_eq!(
        sample(&scrape(&h), "airlock_proxy_connections_refused_total"),
        1.0
    );
}

#[tokio::test]
async fn requests_over_the_upstream_cap_get_503_at_once_and_the_cap_recovers() {
    let h = harness(|c| c.upstream_max_concurrency = 2).await;
    let s = h.simple(AuthMechanism::Bearer, SECRET).await;
    let token = s.token.expose().to_owned();
    let slow: Vec<_> = (0..2)
        .map(|_| {
            let url = h.url("/slow");
            let token = token.clone();
            tokio::spawn(async move { TestRequest::get(&url).bearer(&token).send().await })
        })
        .collect();
    let both_in_flight = Harness::eventually(Duration::from_secs(10), || async {
        h.upstream.requests().len() == 2
    })
    .await;
    assert!(both_in_flight);

    let busy = get(&h, "/fast", &s.token).await;
    assert_eq!(busy.status, 503);
    assert_eq!(code(&busy), "upstream_busy");
    assert_eq!(busy.header("retry-after").as_deref(), Some("1"));
    assert!(
        slow.iter().all(|t| !t.is_finished()),
        "the 503 came only after a slow request finished"
    );
    // It never reached the upstream.
    assert_eq!(h.upstream.requests().len(), 2);

    for task in slow {
        let r = task.await.unwrap().unwrap();
        assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "slow"));
    }
    let after = Harness::eventually(Duration::from_secs(5), || async {
        get(&h, "/fast", &s.token).await.status == 200
    })
    .await;
    assert!(
        after,
        "requests did not succeed again after the slow ones finished"
    );
    let text = scrape(&h);
    assert_eq!(
        sample(&text, r#"airlock_proxy_upstream_errors_total{kind="busy"}"#),
        1.0
    );
    assert_eq!(
        sample(
            &text,
            r#"airlock_proxy_refusals_total{reason="upstream_busy"}"#
        ),
        1.0
    );
}

#[tokio::test]
async fn a_devbox_over_its_rate_gets_429_and_others_do_not() {
    let h = harness(|c| {
        c.devbox_rate_limit = Some(RateLimit::parse("3/m").unwrap());
    })
    .await;
    let a = h.simple(AuthMechanism::Bearer, SECRET).await;
    let b = h.simple(AuthMechanism::Bearer, SECRET).await;
    for i in 0..3 {
        assert_eq!(get(&h, "/ok", &a.token).await.status, 200, "request {i}");
    }
    let limited = get(&h, "/ok", &a.token).await;
    assert_eq!(limited.status, 429);
    assert_eq!(code(&limited), "rate_limited");
    let wait: u64 = limited.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=20).contains(&wait), "retry-after {wait}");
    assert_eq!(h.upstream.requests().len(), 3);
    // Another devbox has its own budget.
    assert_eq!(get(&h, "/ok", &b.token).await.status, 200);
    wait_sample(
        &h,
        r#"airlock_proxy_refusals_total{reason="rate_limited"}"#,
        1.0,
    )
    .await;
}

#[tokio::test]
async fn the_request_id_travels_upstream_back_and_into_the_audit() {
    let h = harness(|_| {}).await;
    let s = h.simple(AuthMechanism::Bearer, SECRET).await;
    let t = s.token.expose();
    let seen_upstream = || {
        h.upstream
            .last_request()
            .unwrap()
            .header_str("x-request-id")
            .unwrap()
    };

    // A usable id from the client is kept.
    let r = TestRequest::get(&h.url("/ok"))
        .bearer(t)
        .header("x-request-id", "client-id-123")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-request-id").as_deref(), Some("client-id-123"));
    assert_eq!(seen_upstream(), "client-id-123");

    // One that is too long is replaced, and the new one is what the upstream saw.
    let long = "x".repeat(129);
    let r = TestRequest::get(&h.url("/ok"))
        .bearer(t)
        .header("x-request-id", &long)
        .send()
        .await
        .unwrap();
    let replaced = r.header("x-request-id").unwrap();
    assert_eq!(replaced.len(), 26);
    assert_eq!(seen_upstream(), replaced);

    // None at all: one is generated.
    let r = get(&h, "/ok", &s.token).await;
    let generated = r.header("x-request-id").unwrap();
    assert_eq!(seen_upstream(), generated);
    assert_ne!(generated, replaced);

    // Airlock's own errors carry one too.
    let refused = TestRequest::get(&h.url("/ok")).send().await.unwrap();
    let refused_id = refused.header("x-request-id").unwrap();
    assert_eq!(code(&refused), "missing_token");

    // The upstream's own id is kept aside, not lost.
    let r = TestRequest::get(&h.url("/theirs"))
        .bearer(t)
        .header("x-request-id", "client-id-456")
        .send()
        .await
        .unwrap();
    assert_eq!(r.header("x-request-id").as_deref(), Some("client-id-456"));
    assert_eq!(
        r.header("x-upstream-request-id").as_deref(),
        Some("req_upstream_own_id")
    );

    let seed = h.seed.clone();
    let all = Harness::eventually(Duration::from_secs(5), || {
        let seed = seed.clone();
        async move { seed.request_events().await.len() >= 4 }
    })
    .await;
    assert!(all);
    let ids: Vec<String> = h
        .seed
        .request_events()
        .await
        .into_iter()
        .map(|e| e.request_id.expect("every event has a request id"))
        .collect();
    for id in ["client-id-123", &replaced, &generated, "client-id-456"] {
        assert!(ids.iter().any(|i| i == id), "{id} not in {ids:?}");
    }
    // The refused request had no token, so it belongs to no account: it is not in this
    // account's audit list, but it was answered with an id all the same.
    assert_eq!(refused_id.len(), 26);
}
