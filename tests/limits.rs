//! Limits through the real binary with the official SDKs: gateway configs made over the REST API
//! with a `limits` object; the OpenAI and Anthropic SDKs see the `x-ratelimit-*` headers on
//! admitted calls and raise their own `RateLimitError` for Airlock's 429 `limit_exceeded`, with
//! `retry-after` and the limit's name; the status endpoint counts what was admitted. Through
//! the binary's own listeners: the limit's gauges on `/metrics`, its first hit in
//! `/v1/audit/events`, and `limits` in the gateway and devbox views.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use airlock_testkit::upstream::{self, RecordingUpstream, UpstreamOptions};
use airlock_testkit::{check_python_output, run_python, workspace_root, TestRequest};
use airlock_tests::{sample, Airlock, ADMIN};
use serde_json::{json, Value};

/// Waits out the last 20 s of a UTC minute: the script's calls count against per-minute limits on
/// the real clock, and must not see the window roll over between them.
async fn early_in_a_minute() {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let into = u64::try_from(ms % 60_000).unwrap();
    if into > 40_000 {
        tokio::time::sleep(std::time::Duration::from_millis(60_000 - into + 50)).await;
    }
}

async fn sdks_see_limit_exceeded(database_url: &str) {
    let start = |responder| RecordingUpstream::start(UpstreamOptions::plain().responder(responder));
    let openai = start(upstream::openai_chat()).await.unwrap();
    let anthropic = start(upstream::anthropic_messages()).await.unwrap();
    let airlock = Airlock::start_on(database_url, &[]).await;
    for name in ["OPENAI_KEY", "ANTHROPIC_KEY"] {
        airlock
            .post(
                "/v1/secrets",
                json!({"name": name, "value": format!("real-{name}")}),
            )
            .await;
    }
    let oa = airlock
        .post(
            "/v1/gateway-configs",
            json!({"name": "openai", "provider": "openai", "api": "openai-completions",
                "endpoint": format!("{}/v1", openai.url()), "auth_mechanism": {"type": "bearer"},
                "limits": {"requests_per_minute": 2}}),
        )
        .await;
    airlock
        .post(
            "/v1/gateway-configs",
            json!({"name": "anthropic", "provider": "anthropic", "api": "anthropic-messages",
                "endpoint": anthropic.url(), "auth_mechanism": {"type": "header", "key": "x-api-key"},
                "limits": {"requests_per_minute": 1}}),
        )
        .await;
    let key = |gateway: &str, secret: &str| json!({"gateway": gateway, "secret": secret});
    let dbx = airlock
        .post(
            "/v1/devboxes",
            json!({"source_addresses": ["127.0.0.1"], "gateways": {
                "OPENAI": key("openai", "OPENAI_KEY"),
                "ANTHROPIC": key("anthropic", "ANTHROPIC_KEY"),
            }}),
        )
        .await;
    let env = &dbx["environment"];
    let var = |n: &str| env[n].as_str().unwrap().to_owned();
    let vars = [
        ("OPENAI_URL", var("OPENAI_URL")),
        ("OPENAI", var("OPENAI")),
        ("ANTHROPIC_URL", var("ANTHROPIC_URL")),
        ("ANTHROPIC", var("ANTHROPIC")),
    ];
    let env: Vec<(&str, &str)> = vars.iter().map(|(n, v)| (*n, v.as_str())).collect();
    early_in_a_minute().await;
    let out = run_python(&workspace_root().join("tests/python/limits_sdk.py"), &env)
        .await
        .unwrap();
    let stdout = check_python_output(&out).unwrap();
    let out: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();

    assert_eq!(
        out["openai_admitted"],
        json!([["2", "1"], ["2", "0"]]),
        "{out}"
    );
    let refused = &out["openai_refused"];
    assert_eq!(refused["status"], 429, "{out}");
    assert_eq!(refused["code"], "limit_exceeded");
    let wait: u64 = refused["retry_after"].as_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains("requests_per_minute"),
        "{out}"
    );
    let refused = &out["anthropic_refused"];
    assert_eq!(refused["status"], 429, "{out}");
    assert_eq!(refused["code"], "limit_exceeded");
    assert!(refused["message"]
        .as_str()
        .unwrap()
        .contains("requests_per_minute"));

    // The status shows the two admitted calls (the ledger may still hold an unspent slice for
    // a moment, never less than what was admitted).
    let (status, body) = airlock
        .call(
            http::Method::GET,
            &format!("/v1/gateway-configs/{}/limits", oa["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let rpm = &body["limits"]["requests_per_minute"];
    assert_eq!(rpm["limit"], 2);
    assert_eq!(rpm["used"], 2, "{body}");
    assert_eq!(rpm["remaining"], 0);

    // The CLI sets and shows the account's limits, and refuses a bad value naming it.
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(airlock_testkit::process::airlock_binary())
            .args(args)
            .env_clear()
            .env("AIRLOCK_URL", &airlock.api)
            .env("AIRLOCK_TOKEN", ADMIN)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    };
    let (ok, out, err) = cli(&[
        "limits",
        "-o",
        "json",
        "--set",
        r#"{"cost_usd_per_month": "250.5"}"#,
    ]);
    assert!(ok, "{err}");
    let shown: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(shown["limits"]["cost_usd_per_month"]["limit"], "250.5");
    assert_eq!(shown["limits"]["cost_usd_per_month"]["used"], "0");
    let (ok, _, err) = cli(&["limits", "--set", r#"{"cost_usd_per_month": "-1"}"#]);
    assert!(!ok);
    assert!(
        err.contains("limits.cost_usd_per_month: must not be negative")
            || err.contains("cost_usd_per_month: must not be negative"),
        "{err}"
    );
    let (ok, out, err) = cli(&["limits", "--gateway", oa["id"].as_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(out.contains("requests_per_minute"), "{out}");
}

#[tokio::test]
async fn sdks_see_limit_exceeded_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("airlock.db").display());
    sdks_see_limit_exceeded(&url).await;
}

#[tokio::test]
async fn sdks_see_limit_exceeded_on_postgres() {
    let url = airlock_testkit::pg::shared()
        .await
        .fresh_database()
        .await
        .unwrap();
    sdks_see_limit_exceeded(&url).await;
}

/// A gateway config's limit through the real binary: its view shows the configured `limits`,
/// `/metrics` on the operations listener shows its gauges and the refusals by limit name, and
/// `/v1/audit/events` holds one `limit.exceeded` event for two refusals.
#[tokio::test]
async fn a_hit_limit_shows_in_metrics_audit_and_views() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("airlock.db").display());
    let up = RecordingUpstream::start(UpstreamOptions::plain().responder(upstream::echo()))
        .await
        .unwrap();
    let airlock = Airlock::start_on(url.as_str(), &[]).await;
    airlock
        .post("/v1/secrets", json!({"name": "K", "value": "real-key"}))
        .await;
    let gw = airlock
        .post(
            "/v1/gateway-configs",
            json!({"name": "capped", "endpoint": up.url(), "auth_mechanism": {"type": "bearer"},
                "limits": {"requests_per_day": 1, "cost_usd_total": "3.5"}}),
        )
        .await;
    let id = gw["id"].as_str().unwrap();
    let limits = json!({"requests_per_day": 1, "cost_usd_total": "3.5"});
    assert_eq!(gw["limits"], limits);
    let (_, got) = airlock
        .call(
            http::Method::GET,
            &format!("/v1/gateway-configs/{id}"),
            None,
        )
        .await;
    assert_eq!(got["limits"], limits);
    let (_, listed) = airlock
        .call(http::Method::GET, "/v1/gateway-configs", None)
        .await;
    assert_eq!(listed["gateway_configs"][0]["limits"], limits);
    let dbx = airlock
        .post(
            "/v1/devboxes",
            json!({"source_addresses": ["127.0.0.1"], "gateways": {"CAPPED": {"gateway": "capped", "secret": "K"}},
                "limits": {"tokens_per_minute": 100000}}),
        )
        .await;
    assert_eq!(dbx["limits"], json!({"tokens_per_minute": 100000}));
    let token = dbx["environment"]["CAPPED"].as_str().unwrap().to_owned();

    let send = || {
        TestRequest::post(&format!("http://{}/v1/x", airlock.proxy_addr))
            .bearer(&token)
            .body("hi")
            .send()
    };
    // The limits reach the data plane within a second; the first request may come before.
    let mut statuses = Vec::new();
    for _ in 0..40 {
        let status = send().await.unwrap().status.as_u16();
        statuses.push(status);
        if status == 429 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");
    assert_eq!(send().await.unwrap().status, 429);

    let scrape = TestRequest::get(&format!("{}/metrics", airlock.ops))
        .send()
        .await
        .unwrap()
        .text();
    let series =
        |name: &str, limit: &str| format!(r#"{name}{{scope="gateway",id="{id}",limit="{limit}"}}"#);
    assert_eq!(
        sample(&scrape, &series("airlock_limit", "requests_per_day")),
        1.0,
        "{scrape}"
    );
    assert_eq!(
        sample(&scrape, &series("airlock_limit", "cost_usd_total")),
        3.5
    );
    assert_eq!(
        sample(&scrape, &series("airlock_limit_used", "requests_per_day")),
        1.0
    );
    assert_eq!(
        sample(
            &scrape,
            r#"airlock_limit_refusals_total{scope="gateway",limit="requests_per_day"}"#
        ),
        2.0
    );
    assert!(
        scrape.contains("# TYPE airlock_limit_leased gauge"),
        "{scrape}"
    );
    assert!(!scrape.contains(dbx["id"].as_str().unwrap()));

    let mut events = Vec::new();
    for _ in 0..100 {
        let (status, body) = airlock
            .call(
                http::Method::GET,
                "/v1/audit/events?action=limit.exceeded",
                None,
            )
            .await;
        assert_eq!(status, 200, "{body}");
        events = body["events"].as_array().cloned().unwrap_or_default();
        if !events.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(events.len(), 1, "{events:?}");
    let e = &events[0];
    assert_eq!(e["object_type"], "gateway");
    assert_eq!(e["object_id"], id);
    assert!(!e.to_string().contains(&token));
    assert_eq!(e["detail"]["limit"], "requests_per_day", "{e}");
}
