//! Budgets and rate limits through the real data plane and the real stores (`docs/limits.md`):
//! a request limit is exact on one SQLite process; 50 concurrent requests from two replicas on
//! one Postgres against a limit that admits 10 get exactly 10 through (SECURITY #27); the
//! ledger of a token limit settles at the sum of the metered usage; a scoped token's
//! `max_requests` holds across two replicas (SECURITY #31); a spent lease with the ledger
//! unreachable fails closed by default.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly by design.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use airlock_core::state::LlmSettings;
use airlock_core::{
    Api, AuthMechanism, BearerSecret, CounterKey, LimitKind, LimitScope, Limits, ModelSpec, Price,
    TokenScope,
};
use airlock_store::{GatewayConfigRow, SecretRow};
use airlock_testkit::{HttpResponse, TestRequest};
use support::{replica, Harness, Options};

async fn set_limits(h: &Harness, scope: LimitScope, limits: &[(LimitKind, u64)]) {
    let mut l = Limits::default();
    for (k, v) in limits {
        l.set(*k, Some(*v));
    }
    h.seed
        .store
        .set_limits(
            &h.seed.account,
            &scope,
            &l,
            airlock_core::time::now_ms(),
            None,
        )
        .await
        .unwrap();
}

async fn get(addr: SocketAddr, path: &str, token: &BearerSecret) -> HttpResponse {
    TestRequest::get(&format!("http://{addr}{path}"))
        .bearer(token.expose())
        .send()
        .await
        .unwrap()
}

/// A devbox on `gateway` whose own limit is high, set after the limits under test: once a
/// replica shows its header, it has loaded every limit written before.
async fn probe(h: &Harness, gateway: &GatewayConfigRow, secret: &SecretRow) -> BearerSecret {
    let (devbox, mut tokens) = h.seed.devbox(&["127.0.0.1"], &[(gateway, secret)]).await;
    set_limits(
        h,
        LimitScope::Devbox(devbox.id),
        &[(LimitKind::RequestsPerDay, 1_000_000)],
    )
    .await;
    tokens.remove(0)
}

/// Waits until the replica at `addr` enforces the limits written before `probe`'s.
async fn loaded(addr: SocketAddr, probe: &BearerSecret) {
    let ok = Harness::eventually(Duration::from_secs(10), || async {
        get(addr, "/v1/probe", probe)
            .await
            .header("x-ratelimit-limit-requests-per-day")
            .is_some()
    })
    .await;
    assert!(ok, "the replica never loaded the limits");
}

/// Waits until the ledger's counter of `scope`'s requests today holds `want`, or fails saying
/// what it holds (`what`: what did not happen).
async fn ledger_reaches(h: &Harness, scope: LimitScope, want: i64, what: &str) {
    let key = CounterKey {
        scope,
        kind: LimitKind::RequestsPerDay,
        window_start_ms: LimitKind::RequestsPerDay
            .window()
            .start(airlock_core::time::now_ms()),
    };
    let reached = Harness::eventually(Duration::from_secs(10), || async {
        h.db.store.limit_used(&key).await.unwrap() == want
    })
    .await;
    let used = h.db.store.limit_used(&key).await.unwrap();
    assert!(reached, "{what}: the ledger holds {used}, not {want}");
}

fn upstream_count(h: &Harness, path: &str) -> usize {
    h.upstream
        .requests()
        .iter()
        .filter(|r| r.path().ends_with(path))
        .count()
}

/// Waits out the last 10 s of a UTC minute: a test that counts against a per-minute limit on the
/// real clock must not see its window roll over half way (which once in a while it did).
async fn early_in_a_minute() {
    let into = airlock_core::time::now_ms().rem_euclid(60_000);
    if into > 50_000 {
        let left = u64::try_from(60_000 - into).unwrap_or(0) + 50;
        tokio::time::sleep(Duration::from_millis(left)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_limit_is_exact_on_sqlite() {
    early_in_a_minute().await;
    let h = Harness::sqlite().await;
    let s = h.simple(AuthMechanism::Bearer, "sk-limits").await;
    set_limits(
        &h,
        LimitScope::Devbox(s.devbox.id.clone()),
        &[(LimitKind::RequestsPerMinute, 5)],
    )
    .await;
    let probe = probe(&h, &s.gateway, &s.secret).await;
    loaded(h.proxy, &probe).await;

    let mut statuses = Vec::new();
    for i in 0..8 {
        let r = get(h.proxy, "/v1/limited", &s.token).await;
        if r.status == 200 {
            assert_eq!(
                r.header("x-ratelimit-limit-requests-per-minute").as_deref(),
                Some("5")
            );
            assert_eq!(
                r.header("x-ratelimit-remaining-requests-per-minute")
                    .as_deref(),
                Some((4 - i).to_string().as_str()),
            );
        } else {
            assert_eq!(r.status, 429, "{}", r.text());
            assert_eq!(support::code(&r), "limit_exceeded");
            assert!(r.text().contains("requests_per_minute"), "{}", r.text());
            let wait: u64 = r.header("retry-after").unwrap().parse().unwrap();
            assert!((1..=60).contains(&wait), "{wait}");
        }
        statuses.push(r.status.as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429, 429, 429]);
    assert_eq!(
        upstream_count(&h, "/v1/limited"),
        5,
        "refused requests never go upstream"
    );
    // Refusals are counted by their code.
    assert_eq!(
        support::sample(
            &support::scrape(&h),
            r#"airlock_proxy_refusals_total{reason="limit_exceeded"}"#
        ),
        3.0
    );
    // Another devbox on the same gateway is not limited by this one's limit.
    let r = get(h.proxy, "/v1/limited", &probe).await;
    assert_eq!(r.status, 200);
}

/// SECURITY #27: 50 concurrent requests, alternating between two replicas on one Postgres,
/// against a limit that admits 10: exactly 10 are admitted, and the ledger says 10.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_racing_requests_on_two_replicas_get_ten_through() {
    let h = Harness::start(support::postgres().await, Options::default()).await;
    let s = h.simple(AuthMechanism::Bearer, "sk-race").await;
    set_limits(
        &h,
        LimitScope::Devbox(s.devbox.id.clone()),
        &[(LimitKind::RequestsPerDay, 10)],
    )
    .await;
    let probe = probe(&h, &s.gateway, &s.secret).await;
    let (_second, second) = replica(&h).await;
    loaded(h.proxy, &probe).await;
    loaded(second, &probe).await;

    let token = Arc::new(s.token);
    let mut tasks = Vec::new();
    for i in 0..50 {
        let addr = if i % 2 == 0 { h.proxy } else { second };
        let token = token.clone();
        tasks.push(tokio::spawn(async move {
            get(addr, "/v1/race", &token).await.status.as_u16()
        }));
    }
    let mut admitted = 0;
    for t in tasks {
        match t.await.unwrap() {
            200 => admitted += 1,
            429 => {}
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(admitted, 10, "the documented bound for request limits is 0");
    assert_eq!(upstream_count(&h, "/v1/race"), 10);
    let key = CounterKey {
        scope: LimitScope::Devbox(s.devbox.id.clone()),
        kind: LimitKind::RequestsPerDay,
        window_start_ms: LimitKind::RequestsPerDay
            .window()
            .start(airlock_core::time::now_ms()),
    };
    assert_eq!(h.db.store.limit_used(&key).await.unwrap(), 10);
}

/// The ledger of a token limit settles at exactly the sum of the metered usage (the
/// reservations, estimated from the body and `max_tokens`, are trued up), on both replicas.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_ledger_settles_at_the_metered_usage() {
    let h = Harness::start(
        support::postgres().await,
        Options {
            responder: Some(airlock_testkit::upstream::openai_chat()),
            ..Options::default()
        },
    )
    .await;
    let gateway = h
        .seed
        .gateway_llm(
            &h.endpoint("/v1"),
            AuthMechanism::Bearer,
            Vec::new(),
            LlmSettings {
                provider: Some("openai".into()),
                api: Api::OpenaiCompletions,
                models: vec![ModelSpec {
                    id: "gpt-test".into(),
                    cost: Some(Price {
                        input: 1_000_000_000,
                        output: 2_000_000_000,
                        cache_read: 0,
                        cache_write: 0,
                    }),
                    ..ModelSpec::default()
                }],
            },
        )
        .await;
    let secret = h.seed.secret(&support::unique_name(), "sk-ledger").await;
    let (devbox, tokens) = h.seed.devbox(&["127.0.0.1"], &[(&gateway, &secret)]).await;
    let scope = LimitScope::Devbox(devbox.id.clone());
    set_limits(
        &h,
        scope.clone(),
        &[
            (LimitKind::TokensPerDay, 1_000_000),
            (LimitKind::CostUsdPerDay, 1_000_000_000),
        ],
    )
    .await;
    let probe = probe(&h, &gateway, &secret).await;
    let (_second, second) = replica(&h).await;
    loaded(h.proxy, &probe).await;
    loaded(second, &probe).await;

    for i in 0..6 {
        let addr = if i % 2 == 0 { h.proxy } else { second };
        let mut body = serde_json::json!({
            "model": "gpt-test",
            "messages": [{"role": "user", "content": format!("say hello number {i}")}],
        });
        if i % 3 == 0 {
            body["max_tokens"] = 50.into();
        }
        if i % 2 == 1 {
            body["stream"] = true.into();
        }
        let r = TestRequest::post(&format!("http://{addr}/v1/chat/completions"))
            .bearer(tokens[0].expose())
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(r.header("x-ratelimit-remaining-tokens-per-day").is_some());
    }
    let day = LimitKind::TokensPerDay
        .window()
        .start(airlock_core::time::now_ms());
    let key = |kind| CounterKey {
        scope: scope.clone(),
        kind,
        window_start_ms: day,
    };
    let metered = || async {
        let events: Vec<_> = h
            .seed
            .request_events()
            .await
            .into_iter()
            .filter(|e| e.devbox_id.as_ref() == Some(&devbox.id))
            .collect();
        let tokens: u64 = events
            .iter()
            .map(|e| e.llm.as_ref().unwrap().usage.total_tokens())
            .sum();
        let cost: u64 = events
            .iter()
            .map(|e| e.llm.as_ref().unwrap().cost_nanos.unwrap())
            .sum();
        (events.len(), tokens, cost)
    };
    let settled = Harness::eventually(Duration::from_secs(20), || async {
        let (n, tokens, cost) = metered().await;
        let store = &h.db.store;
        n == 6
            && store
                .limit_used(&key(LimitKind::TokensPerDay))
                .await
                .unwrap()
                == tokens as i64
            && store
                .limit_used(&key(LimitKind::CostUsdPerDay))
                .await
                .unwrap()
                == cost as i64
    })
    .await;
    let (n, tokens, cost) = metered().await;
    assert!(
        settled,
        "ledger {:?} / {:?}, metered {n} events {tokens} tokens {cost} nanos",
        h.db.store.limit_used(&key(LimitKind::TokensPerDay)).await,
        h.db.store.limit_used(&key(LimitKind::CostUsdPerDay)).await,
    );
    assert!(tokens > 0 && cost > 0);
}

/// SECURITY #31: a token's `max_requests` holds across two replicas.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn max_requests_holds_across_replicas() {
    let h = Harness::start(support::postgres().await, Options::default()).await;
    let s = h.simple(AuthMechanism::Bearer, "sk-max").await;
    let token = BearerSecret::generate(airlock_core::token::SecretKind::Gateway);
    let row = airlock_store::TokenRow {
        id: airlock_core::TokenId::generate(),
        account_id: h.seed.account.clone(),
        devbox_id: s.devbox.id.clone(),
        gateway_config_id: s.gateway.id.clone(),
        secret_id: Some(s.secret.id.clone()),
        prefix: None,
        digest: token.digest(),
        create_time_ms: airlock_core::time::now_ms(),
        expire_time_ms: None,
        scope: TokenScope::with_max_requests(None, Some(3)),
    };
    let audit = airlock_store::AuditRow {
        id: airlock_core::AuditId::generate().into_string(),
        time_ms: airlock_core::time::now_ms(),
        account_id: h.seed.account.clone(),
        api_key_id: None,
        action: "devbox.create_gateway_token".into(),
        object_type: "gateway_token".into(),
        object_id: row.id.as_str().into(),
        detail: "{}".into(),
        client_addr: None,
    };
    h.seed
        .store
        .insert_gateway_token(&row, &audit)
        .await
        .unwrap();
    let (_second, second) = replica(&h).await;
    let mut statuses = Vec::new();
    for i in 0..6 {
        let addr = if i % 2 == 0 { h.proxy } else { second };
        let r = get(addr, "/v1/scoped", &token).await;
        if r.status != 200 {
            assert_eq!(support::code(&r), "token_scope", "{}", r.text());
        }
        statuses.push(r.status.as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 403, 403, 403]);
    assert_eq!(upstream_count(&h, "/v1/scoped"), 3);
}

/// With the ledger unreachable and no lease left, a limited request is refused with 503
/// `limits_unavailable` (the default, `AIRLOCK_LIMITS_ON_OUTAGE=closed`); an unlimited one is
/// not affected; once the ledger is back, requests pass again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spent_lease_fails_closed_while_the_ledger_is_down() {
    early_in_a_minute().await;
    let h = Harness::sqlite().await;
    let s = h.simple(AuthMechanism::Bearer, "sk-outage").await;
    set_limits(
        &h,
        LimitScope::Devbox(s.devbox.id.clone()),
        &[(LimitKind::RequestsPerMinute, 5)],
    )
    .await;
    let probe = probe(&h, &s.gateway, &s.secret).await;
    loaded(h.proxy, &probe).await;
    h.source.ledger_down.store(true, Ordering::SeqCst);
    let r = get(h.proxy, "/v1/outage", &s.token).await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(support::code(&r), "limits_unavailable");
    let unlimited = h.simple(AuthMechanism::Bearer, "sk-free").await;
    assert_eq!(get(h.proxy, "/v1/free", &unlimited.token).await.status, 200);
    h.source.ledger_down.store(false, Ordering::SeqCst);
    assert_eq!(get(h.proxy, "/v1/outage", &s.token).await.status, 200);
}

/// An estimate that was too low is still charged: a stream whose usage is far past its
/// reservation (a `max_tokens` of 1 that the upstream ignores) finishes whole, the ledger holds
/// its metered usage, and the next request is refused with `tokens_per_day` in the message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_past_the_limit_finishes_and_the_next_request_is_refused() {
    let h = Harness::start(
        support::sqlite().await,
        Options {
            responder: Some(airlock_testkit::upstream::openai_chat()),
            ..Options::default()
        },
    )
    .await;
    let gateway = h
        .seed
        .gateway_llm(
            &h.endpoint("/v1"),
            AuthMechanism::Bearer,
            Vec::new(),
            LlmSettings {
                provider: Some("openai".into()),
                api: Api::OpenaiCompletions,
                models: Vec::new(),
            },
        )
        .await;
    let secret = h.seed.secret(&support::unique_name(), "sk-stream").await;
    let (devbox, tokens) = h.seed.devbox(&["127.0.0.1"], &[(&gateway, &secret)]).await;
    // 300 one-letter words: about 150 tokens by bytes / 4, 308 by the upstream's count.
    let prompt = vec!["a"; 300].join(" ");
    let body = serde_json::json!({
        "model": "gpt-test", "max_tokens": 1, "stream": true,
        "messages": [{"role": "user", "content": prompt}],
    });
    let estimate = serde_json::to_vec(&body).unwrap().len().div_ceil(4) as u64 + 1;
    set_limits(
        &h,
        LimitScope::Devbox(devbox.id.clone()),
        &[(LimitKind::TokensPerDay, estimate + 10)],
    )
    .await;
    let probe = probe(&h, &gateway, &secret).await;
    loaded(h.proxy, &probe).await;

    let send = || {
        TestRequest::post(&h.url("/v1/chat/completions"))
            .bearer(tokens[0].expose())
            .json(&body)
            .send()
    };
    let first = send().await.unwrap();
    assert_eq!(first.status, 200, "{}", first.text());
    assert!(first.text().contains("[DONE]"), "the stream finished whole");
    let key = CounterKey {
        scope: LimitScope::Devbox(devbox.id.clone()),
        kind: LimitKind::TokensPerDay,
        window_start_ms: LimitKind::TokensPerDay
            .window()
            .start(airlock_core::time::now_ms()),
    };
    let used = || async { h.db.store.limit_used(&key).await.unwrap() };
    let charged = Harness::eventually(Duration::from_secs(10), || async {
        used().await as u64 > estimate + 10
    })
    .await;
    assert!(charged, "the overshoot was not charged: {}", used().await);
    let second = send().await.unwrap();
    assert_eq!(second.status, 429, "{}", second.text());
    assert_eq!(support::code(&second), "limit_exceeded");
    assert!(second.text().contains("tokens_per_day"));
}

/// Every applicable limit must pass: the account's, the devbox's and the gateway config's at
/// once. Two devboxes on one gateway share the account's and the gateway's limits; the refusal
/// names the limit that was hit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_on_all_three_levels_at_once() {
    early_in_a_minute().await;
    let h = Harness::sqlite().await;
    let a = h.simple(AuthMechanism::Bearer, "sk-levels").await;
    let (b, mut b_tokens) = h
        .seed
        .devbox(&["127.0.0.1"], &[(&a.gateway, &a.secret)])
        .await;
    let b_token = b_tokens.remove(0);
    set_limits(
        &h,
        LimitScope::Devbox(a.devbox.id.clone()),
        &[(LimitKind::RequestsPerMinute, 2)],
    )
    .await;
    set_limits(
        &h,
        LimitScope::GatewayConfig(a.gateway.id.clone()),
        &[(LimitKind::RequestsPerDay, 100)],
    )
    .await;
    // The probe below is one request of the account: 4 are left for the two devboxes.
    set_limits(
        &h,
        LimitScope::Account(h.seed.account.clone()),
        &[(LimitKind::RequestsPerMinute, 5)],
    )
    .await;
    let probe = probe(&h, &a.gateway, &a.secret).await;
    loaded(h.proxy, &probe).await;

    let mut seen = Vec::new();
    for (token, name) in [
        (&a.token, "a"),
        (&a.token, "a"),
        (&a.token, "a"),
        (&b_token, "b"),
        (&b_token, "b"),
        (&b_token, "b"),
    ] {
        let r = get(h.proxy, "/v1/levels", token).await;
        let limit = if r.status == 200 {
            assert_eq!(
                r.header("x-ratelimit-limit-requests-per-day").as_deref(),
                Some("100")
            );
            "ok".to_owned()
        } else {
            assert_eq!(support::code(&r), "limit_exceeded");
            r.text()
        };
        seen.push((name, r.status.as_u16(), limit));
    }
    let statuses: Vec<_> = seen.iter().map(|(n, s, _)| (*n, *s)).collect();
    // a: its own limit of 2; b: the account's 2 that are left.
    assert_eq!(
        statuses,
        [
            ("a", 200),
            ("a", 200),
            ("a", 429),
            ("b", 200),
            ("b", 200),
            ("b", 429)
        ]
    );
    assert!(seen[2].2.contains("requests_per_minute"), "{seen:?}");
    assert!(seen[5].2.contains("requests_per_minute"), "{seen:?}");
    assert_eq!(upstream_count(&h, "/v1/levels"), 4);
    let _ = b;
}

/// An aborted stream is charged: the client leaves after the first event, the rest of the
/// stream is drained for its usage (as metering does), and the ledger ends at exactly the
/// metered usage of the drained stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aborted_stream_is_charged() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let h = Harness::start(
        support::sqlite().await,
        Options {
            responder: Some(airlock_testkit::upstream::anthropic_messages()),
            ..Options::default()
        },
    )
    .await;
    let gateway = h
        .seed
        .gateway_llm(
            &h.endpoint(""),
            AuthMechanism::Header {
                key: "x-api-key".into(),
            },
            Vec::new(),
            LlmSettings {
                provider: Some("anthropic".into()),
                api: Api::AnthropicMessages,
                models: Vec::new(),
            },
        )
        .await;
    let secret = h.seed.secret(&support::unique_name(), "sk-abort").await;
    let (devbox, tokens) = h.seed.devbox(&["127.0.0.1"], &[(&gateway, &secret)]).await;
    let scope = LimitScope::Devbox(devbox.id.clone());
    set_limits(&h, scope.clone(), &[(LimitKind::TokensPerMinute, 100_000)]).await;
    let probe = probe(&h, &gateway, &secret).await;
    loaded(h.proxy, &probe).await;

    let mut stream = tokio::net::TcpStream::connect(h.proxy).await.unwrap();
    let body = r#"{"model":"claude-test-slow","max_tokens":100,"stream":true,"messages":[{"role":"user","content":"one two three"}]}"#;
    let request = format!(
        "POST /v1/messages HTTP/1.1\r\nHost: localhost\r\nx-api-key: {}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        tokens[0].expose(),
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains("message_start") {
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed early");
        got.extend_from_slice(&buf[..n]);
    }
    drop(stream);

    let key = CounterKey {
        scope,
        kind: LimitKind::TokensPerMinute,
        window_start_ms: 0,
    };
    let event = || async {
        h.seed
            .request_events()
            .await
            .into_iter()
            .find(|e| e.devbox_id.as_ref() == Some(&devbox.id))
    };
    let settled = Harness::eventually(Duration::from_secs(20), || async {
        let Some(e) = event().await else {
            return false;
        };
        let total = e.llm.as_ref().unwrap().usage.total_tokens() as i64;
        let window = LimitKind::TokensPerMinute.window().start(e.time_ms);
        let key = CounterKey {
            window_start_ms: window,
            ..key.clone()
        };
        h.db.store.limit_used(&key).await.unwrap() == total
    })
    .await;
    let e = event().await.expect("the aborted request's event");
    assert_eq!(e.error_code.as_deref(), Some("client_disconnected"));
    assert!(e.llm.as_ref().unwrap().usage.exact, "drained to its end");
    assert!(
        settled,
        "the ledger never settled at the drained stream's usage"
    );
}

/// The limits' clock of `windows_roll_over`: moved by the test, never slept on.
static CLOCK: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);

fn test_clock() -> i64 {
    CLOCK.load(Ordering::SeqCst)
}

/// A data plane on SQLite whose limits read `clock`, set first to 10 s into the current UTC
/// minute (so that a retry-after is known); returns the start of that minute.
async fn on_clock(
    clock: &'static std::sync::atomic::AtomicI64,
    read: fn() -> i64,
) -> (Harness, i64) {
    let now = airlock_core::time::now_ms();
    let minute = now - now % 60_000;
    clock.store(minute + 10_000, Ordering::SeqCst);
    let h = Harness::start(
        support::sqlite().await,
        Options {
            configure: Box::new(move |c| c.limits_clock = Some(read)),
            ..Options::default()
        },
    )
    .await;
    (h, minute)
}

/// Windows roll over (a test clock, not sleeps): a minute limit spent in one minute admits
/// again in the next, and its refusal says to retry when the minute ends; a day limit spent
/// stays spent until the next day.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_roll_over() {
    let (h, _) = on_clock(&CLOCK, test_clock).await;
    let s = h.simple(AuthMechanism::Bearer, "sk-windows").await;
    set_limits(
        &h,
        LimitScope::Devbox(s.devbox.id.clone()),
        &[
            (LimitKind::RequestsPerMinute, 2),
            (LimitKind::RequestsPerDay, 3),
        ],
    )
    .await;
    let probe = probe(&h, &s.gateway, &s.secret).await;
    loaded(h.proxy, &probe).await;

    let status = || async { get(h.proxy, "/v1/windows", &s.token).await };
    assert_eq!(status().await.status, 200);
    assert_eq!(status().await.status, 200);
    let refused = status().await;
    assert_eq!(refused.status, 429);
    assert!(refused.text().contains("requests_per_minute"));
    assert_eq!(refused.header("retry-after").as_deref(), Some("50"));
    // The next minute: the minute limit admits again, until the day's 3 are spent.
    CLOCK.fetch_add(60_000, Ordering::SeqCst);
    assert_eq!(status().await.status, 200);
    let refused = status().await;
    assert_eq!(refused.status, 429);
    assert!(
        refused.text().contains("requests_per_day"),
        "{}",
        refused.text()
    );
    // The next day: both admit again.
    CLOCK.fetch_add(86_400_000, Ordering::SeqCst);
    assert_eq!(status().await.status, 200);
    assert_eq!(upstream_count(&h, "/v1/windows"), 4);
}

/// The clock of `a_request_whose_counter_was_forgotten_still_counts_in_its_window`.
static LATE_CLOCK: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);

fn late_clock() -> i64 {
    LATE_CLOCK.load(Ordering::SeqCst)
}

/// A request finds its counters when its head arrives and takes from them when its body has
/// (under a token limit, the body makes the estimate). A counter of a window long over is
/// forgotten once settled; a request that still held it then takes from the counter of the same
/// window made anew, whose lease is settled like any other, so the ledger holds exactly that
/// request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_whose_counter_was_forgotten_still_counts_in_its_window() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (h, minute) = on_clock(&LATE_CLOCK, late_clock).await;
    let s = h.simple(AuthMechanism::Bearer, "sk-late").await;
    let scope = LimitScope::Devbox(s.devbox.id.clone());
    set_limits(
        &h,
        scope.clone(),
        &[
            (LimitKind::RequestsPerMinute, 100),
            (LimitKind::TokensPerMinute, 1_000_000),
        ],
    )
    .await;
    let probe = probe(&h, &s.gateway, &s.secret).await;
    loaded(h.proxy, &probe).await;

    let mut stream = tokio::net::TcpStream::connect(h.proxy).await.unwrap();
    let body = br#"{"input":"a body that arrives late"}"#;
    let head = format!(
        "POST /v1/late HTTP/1.1\r\nHost: localhost\r\nauthorization: Bearer {}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n",
        s.token.expose(),
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body[..5]).await.unwrap();
    // The minute ends and is forgotten (5 s after its end, at a tick) while the body is awaited.
    tokio::time::sleep(Duration::from_millis(300)).await;
    LATE_CLOCK.fetch_add(70_000, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    stream.write_all(&body[5..]).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains("\r\n\r\n") {
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed early");
        got.extend_from_slice(&buf[..n]);
    }
    assert!(
        String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    assert_eq!(upstream_count(&h, "/v1/late"), 1);

    // The request's window is the minute its head arrived in; its lease (a tenth of the limit)
    // was given back but for the one request it used.
    let key = CounterKey {
        scope,
        kind: LimitKind::RequestsPerMinute,
        window_start_ms: minute,
    };
    let settled = Harness::eventually(Duration::from_secs(10), || async {
        h.db.store.limit_used(&key).await.unwrap() == 1
    })
    .await;
    let used = h.db.store.limit_used(&key).await.unwrap();
    assert!(
        settled,
        "the ledger holds {used} requests of that minute, not 1"
    );
}

/// No database round trip per request: under a limit of 10 000 a day, 50 requests are
/// served from one leased slice (a tenth of the limit), and the slice goes back when idle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_limit_is_spent_from_one_lease() {
    let h = Harness::sqlite().await;
    let s = h.simple(AuthMechanism::Bearer, "sk-lease").await;
    let scope = LimitScope::Devbox(s.devbox.id.clone());
    set_limits(&h, scope.clone(), &[(LimitKind::RequestsPerDay, 10_000)]).await;
    let probe = probe(&h, &s.gateway, &s.secret).await;
    loaded(h.proxy, &probe).await;
    let before = h.source.leases.load(Ordering::SeqCst);
    for _ in 0..50 {
        assert_eq!(get(h.proxy, "/v1/lease", &s.token).await.status, 200);
    }
    assert_eq!(h.source.leases.load(Ordering::SeqCst) - before, 1);
    // Idle, the unspent 950 go back: the ledger says what was used.
    ledger_reaches(&h, scope, 50, "the idle slice was not given back").await;
}

/// `AIRLOCK_LIMITS_ON_OUTAGE=open`, on Postgres: with the ledger unreachable and no lease to
/// spend from, requests under a limit are admitted (not 503 as in closed mode) and reach the
/// upstream; once the ledger is back, their usage is charged to it, so the limit counts them
/// and refuses past it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_outage_admits_and_charges_the_ledger_later() {
    let h = Harness::start(
        support::postgres().await,
        Options {
            configure: Box::new(|c| c.limits_on_outage = airlock_proxy::OnOutage::Open),
            ..Options::default()
        },
    )
    .await;
    let s = h.simple(AuthMechanism::Bearer, "sk-open").await;
    let scope = LimitScope::Devbox(s.devbox.id.clone());
    set_limits(&h, scope.clone(), &[(LimitKind::RequestsPerDay, 3)]).await;
    let probe = probe(&h, &s.gateway, &s.secret).await;
    loaded(h.proxy, &probe).await;

    h.source.ledger_down.store(true, Ordering::SeqCst);
    for _ in 0..2 {
        let r = get(h.proxy, "/v1/open-outage", &s.token).await;
        assert_eq!(r.status, 200, "open mode admits: {}", r.text());
    }
    assert_eq!(upstream_count(&h, "/v1/open-outage"), 2);
    h.source.ledger_down.store(false, Ordering::SeqCst);

    ledger_reaches(&h, scope, 2, "the outage's requests were not charged").await;
    // The limit counts them: one more is admitted, then 429.
    assert_eq!(get(h.proxy, "/v1/open-outage", &s.token).await.status, 200);
    let refused = get(h.proxy, "/v1/open-outage", &s.token).await;
    assert_eq!(refused.status, 429, "{}", refused.text());
    assert_eq!(upstream_count(&h, "/v1/open-outage"), 3);
}

/// The limits' metrics and audit events: a gateway config's limit has gauges (its value, what
/// its counter holds, this replica's outstanding lease) labelled by the config's id; refusals
/// are counted by scope kind and limit name, with no series per devbox; the first refusal of a
/// limit in its window writes one `limit.exceeded` event to the control-plane audit trail, with
/// ids and no token, however many refusals follow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hit_limit_is_audited_once_and_has_gauges() {
    let h = Harness::sqlite().await;
    let s = h.simple(AuthMechanism::Bearer, "sk-gauges").await;
    let other = h.simple(AuthMechanism::Bearer, "sk-gauges-2").await;
    let gateway = LimitScope::GatewayConfig(s.gateway.id.clone());
    set_limits(&h, gateway.clone(), &[(LimitKind::RequestsPerDay, 2)]).await;
    set_limits(
        &h,
        LimitScope::Account(h.seed.account.clone()),
        &[(LimitKind::RequestsPerDay, 1000)],
    )
    .await;
    set_limits(
        &h,
        LimitScope::Devbox(other.devbox.id.clone()),
        &[(LimitKind::RequestsPerDay, 1)],
    )
    .await;
    let probe = probe(&h, &other.gateway, &other.secret).await;
    loaded(h.proxy, &probe).await;

    let statuses = {
        let mut v = Vec::new();
        for _ in 0..5 {
            v.push(get(h.proxy, "/v1/gauged", &s.token).await.status.as_u16());
        }
        v
    };
    assert_eq!(statuses, [200, 200, 429, 429, 429]);
    // Another scope's first hit: once its event is written, so is any event queued before it.
    assert_eq!(get(h.proxy, "/v1/gauged", &other.token).await.status, 200);
    assert_eq!(get(h.proxy, "/v1/gauged", &other.token).await.status, 429);

    let events = || async {
        h.db.store
            .list_audit_events(
                &h.seed.account,
                &airlock_store::AuditFilter {
                    action: Some("limit.exceeded".into()),
                    ..Default::default()
                },
                &airlock_store::Page {
                    limit: 100,
                    starting_after: None,
                    include_total_count: false,
                },
            )
            .await
            .unwrap()
            .items
    };
    let written = Harness::eventually(Duration::from_secs(10), || async {
        events()
            .await
            .iter()
            .any(|e| e.object_id == other.devbox.id.as_str())
    })
    .await;
    assert!(written, "no limit.exceeded event for the devbox");
    let events = events().await;
    let on_gateway: Vec<_> = events
        .iter()
        .filter(|e| e.object_id == s.gateway.id.as_str())
        .collect();
    assert_eq!(on_gateway.len(), 1, "one event for three refusals");
    let e = on_gateway[0];
    assert_eq!(e.object_type, "gateway");
    assert_eq!(e.api_key_id, None);
    let detail: serde_json::Value = serde_json::from_str(&e.detail).unwrap();
    assert_eq!(detail["limit"], "requests_per_day");
    assert_eq!(detail["value"], "2");
    assert_eq!(detail["devbox_id"], s.devbox.id.as_str());
    let day = LimitKind::RequestsPerDay
        .window()
        .start(airlock_core::time::now_ms());
    assert_eq!(detail["window_start_ms"], day);
    assert_eq!(detail["resets_at_ms"], day + 86_400_000);
    assert!(!e.detail.contains(s.token.expose()));
    assert_eq!(events.len(), 2, "{events:?}");

    let series = |name: &str, scope: &str, id: &str| {
        format!(r#"{name}{{scope="{scope}",id="{id}",limit="requests_per_day"}}"#)
    };
    let gw = s.gateway.id.as_str();
    let scrape = support::scrape(&h);
    assert_eq!(
        support::sample(&scrape, &series("airlock_limit", "gateway", gw)),
        2.0,
        "{scrape}"
    );
    assert_eq!(
        support::sample(
            &scrape,
            &series("airlock_limit", "account", h.seed.account.as_str())
        ),
        1000.0
    );
    assert_eq!(
        support::sample(
            &scrape,
            r#"airlock_limit_refusals_total{scope="gateway",limit="requests_per_day"}"#
        ),
        3.0
    );
    assert_eq!(
        support::sample(
            &scrape,
            r#"airlock_limit_refusals_total{scope="devbox",limit="requests_per_day"}"#
        ),
        1.0
    );
    // Bounded labels: no series names a devbox.
    assert!(!scrape.contains(s.devbox.id.as_str()));
    assert!(!scrape.contains(other.devbox.id.as_str()));
    // The gateway's counter holds the two admitted; no lease is outstanding once idle. The
    // account's slice (a tenth of 1000) is outstanding until it has been idle a second, then
    // goes back: what its gauge shows used is then what the ledger holds.
    support::wait_sample(&h, &series("airlock_limit_used", "gateway", gw), 2.0).await;
    support::wait_sample(&h, &series("airlock_limit_leased", "gateway", gw), 0.0).await;
    let account = series("airlock_limit_leased", "account", h.seed.account.as_str());
    support::wait_sample(&h, &account, 0.0).await;
    let key = CounterKey {
        scope: LimitScope::Account(h.seed.account.clone()),
        kind: LimitKind::RequestsPerDay,
        window_start_ms: day,
    };
    let ledger = h.db.store.limit_used(&key).await.unwrap() as f64;
    assert!(ledger >= 4.0, "{ledger}");
    support::wait_sample(
        &h,
        &series("airlock_limit_used", "account", h.seed.account.as_str()),
        ledger,
    )
    .await;
}

static FROZEN: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);

fn frozen_clock() -> i64 {
    FROZEN.load(Ordering::SeqCst)
}

/// A spent limit costs the ledger one statement a second, not one per refused request: on a
/// clock that stands still, ten requests past the limit ask the ledger once; a second later,
/// the next refusal asks it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spent_limit_is_refused_from_memory() {
    let now = airlock_core::time::now_ms();
    FROZEN.store(now - now % 60_000 + 10_000, Ordering::SeqCst);
    let h = Harness::start(
        support::sqlite().await,
        Options {
            configure: Box::new(|c| c.limits_clock = Some(frozen_clock)),
            ..Options::default()
        },
    )
    .await;
    let s = h.simple(AuthMechanism::Bearer, "sk-spent").await;
    set_limits(
        &h,
        LimitScope::Devbox(s.devbox.id.clone()),
        &[(LimitKind::RequestsPerMinute, 2)],
    )
    .await;
    let probe = probe(&h, &s.gateway, &s.secret).await;
    loaded(h.proxy, &probe).await;
    for _ in 0..2 {
        assert_eq!(get(h.proxy, "/v1/spent", &s.token).await.status, 200);
    }
    let before = h.source.leases.load(Ordering::SeqCst);
    for _ in 0..10 {
        assert_eq!(get(h.proxy, "/v1/spent", &s.token).await.status, 429);
    }
    assert_eq!(h.source.leases.load(Ordering::SeqCst) - before, 1);
    FROZEN.fetch_add(1_500, Ordering::SeqCst);
    assert_eq!(get(h.proxy, "/v1/spent", &s.token).await.status, 429);
    assert_eq!(h.source.leases.load(Ordering::SeqCst) - before, 2);
    assert_eq!(upstream_count(&h, "/v1/spent"), 2);
}
