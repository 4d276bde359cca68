//! The operations listener through the real binary, split into a control-plane process and a
//! proxy-only process on one Postgres: `/healthz` and `/readyz` in both roles, `/metrics` that
//! moves when requests flow, and scrapes that never hold a token, a secret, a raw path or an id
//! from a URL.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use airlock_testkit::upstream::{self, RecordingUpstream, UpstreamOptions};
use airlock_testkit::TestRequest;
use airlock_tests::{sample, Airlock, ADMIN, MASTER};
use base64::Engine as _;
use serde_json::{json, Value};

const SENTINEL: &str = "sk-SENTINEL-ops-secret-7373";

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

async fn get(url: &str) -> (u16, String) {
    let r = TestRequest::get(url).send().await.unwrap();
    (r.status.as_u16(), r.text())
}

async fn wait_sample(ops: &str, series: &str, value: f64) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, text) = get(&format!("{ops}/metrics")).await;
        assert_eq!(status, 200);
        if sample(&text, series) == value {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{series} never became {value}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_proxy_only_process_serves_metrics_health_and_readiness() {
    let database_url = airlock_testkit::pg::shared()
        .await
        .fresh_database()
        .await
        .unwrap();
    let upstream = RecordingUpstream::start(UpstreamOptions::plain().responder(upstream::echo()))
        .await
        .unwrap();
    let common = [
        ("AIRLOCK_DATABASE_URL", database_url.as_str()),
        ("AIRLOCK_MASTER_KEY", MASTER),
        ("AIRLOCK_ADMIN_TOKEN", ADMIN),
        ("AIRLOCK_ALLOW_PRIVATE_UPSTREAMS", "127.0.0.0/8"),
    ];
    let control =
        Airlock::start(&[common.as_slice(), &[("AIRLOCK_ROLE", "control")]].concat()).await;
    let proxy = Airlock::start(&[common.as_slice(), &[("AIRLOCK_ROLE", "proxy")]].concat()).await;

    // Health and readiness in both roles, on the operations listener.
    for airlock in [&control, &proxy] {
        assert_eq!(get(&format!("{}/healthz", airlock.ops)).await.0, 200);
        let (status, body) = get(&format!("{}/readyz", airlock.ops)).await;
        assert_eq!(status, 200, "{body}");
    }
    let ready: Value =
        serde_json::from_str(&get(&format!("{}/readyz", proxy.ops)).await.1).unwrap();
    assert_eq!(ready["data_plane_loaded"], true);
    assert_eq!(
        ready["database"],
        Value::Null,
        "a proxy-only process has no control plane"
    );
    let ready: Value =
        serde_json::from_str(&get(&format!("{}/readyz", control.ops)).await.1).unwrap();
    assert_eq!(ready["database"], true);
    assert_eq!(ready["data_plane_loaded"], Value::Null);
    // The proxy-only process has no control-plane listener at all.
    assert!(TestRequest::get(&format!("{}/healthz", proxy.api))
        .send()
        .await
        .is_err());

    // A secret, a gateway and a devbox, through the control plane.
    control
        .post("/v1/secrets", json!({"name": "OPS_KEY", "value": SENTINEL}))
        .await;
    let gateway = control
        .post(
            "/v1/gateway-configs",
            json!({"name": "echo", "endpoint": format!("http://127.0.0.1:{}/v1", upstream.addr().port()), "auth_mechanism": {"type": "bearer"}}),
        )
        .await;
    let gateway_id = gateway["id"].as_str().unwrap().to_owned();
    let devbox = control
        .post(
            "/v1/devboxes",
            json!({"source_addresses": ["127.0.0.1"], "gateways": {"ECHO": {"gateway": "echo", "secret": "OPS_KEY"}}}),
        )
        .await;
    let token = devbox["environment"]["ECHO"].as_str().unwrap().to_owned();
    let devbox_id = devbox["id"].as_str().unwrap().to_owned();

    // Requests through the proxy-only process move its metrics by exactly their number.
    let series = format!("airlock_proxy_requests_total{{gateway=\"{gateway_id}\",code=\"200\"}}");
    let proxy_url = format!("http://{}", proxy.proxy_addr);
    let deadline = Instant::now() + Duration::from_secs(10);
    // The token reaches the proxy through the change feed; wait for the first success.
    loop {
        let r = TestRequest::get(&format!("{proxy_url}/secret-path/first"))
            .bearer(&token)
            .send()
            .await
            .unwrap();
        if r.status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the token never worked: {}",
            r.status
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_sample(&proxy.ops, &series, 1.0).await;
    for i in 0..4 {
        let r = TestRequest::post(&format!("{proxy_url}/secret-path/{i}?key=value"))
            .bearer(&token)
            .header("x-request-id", "ops-e2e-request")
            .body("hello")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-request-id").as_deref(), Some("ops-e2e-request"));
    }
    let scrape = wait_sample(&proxy.ops, &series, 5.0).await;
    assert_eq!(sample(&scrape, "airlock_proxy_tokens"), 1.0);
    assert_eq!(sample(&scrape, "airlock_proxy_state_loaded"), 1.0);
    assert!(scrape.contains("airlock_proxy_connections_active"));
    assert!(scrape.contains("airlock_audit_queue_depth"));
    assert!(
        !scrape.contains("airlock_api_requests"),
        "a proxy-only process has no control-plane metrics"
    );

    // The control plane counts by route template, never by the path with its ids.
    let (_, api_scrape) = get(&format!("{}/metrics", control.ops)).await;
    assert!(
        sample(
            &api_scrape,
            r#"airlock_api_requests_total{route="/v1/devboxes",code="200"}"#
        ) >= 1.0,
        "{api_scrape}"
    );
    control
        .call(
            http::Method::GET,
            &format!("/v1/devboxes/{devbox_id}"),
            None,
        )
        .await;
    let (_, api_scrape) = get(&format!("{}/metrics", control.ops)).await;
    assert_eq!(
        sample(
            &api_scrape,
            r#"airlock_api_requests_total{route="/v1/devboxes/{id}",code="200"}"#
        ),
        1.0,
        "{api_scrape}"
    );
    assert!(!api_scrape.contains(&airlock_tests::ADMIN.to_string()));

    // Neither scrape holds the token, the secret, a raw path, an id from a URL or an address.
    for text in [&scrape, &api_scrape] {
        for needle in forms(SENTINEL).into_iter().chain(forms(&token)) {
            assert!(!text.contains(&needle), "a scrape holds {needle:?}");
        }
        for needle in [
            "secret-path",
            "key=value",
            "ops-e2e-request",
            devbox_id.as_str(),
            "127.0.0.1",
        ] {
            assert!(!text.contains(needle), "a scrape holds {needle:?}");
        }
    }

    // The request id is in the audit trail (written in batches, a moment later).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, audit) = control
            .call(http::Method::GET, "/v1/audit/requests?limit=100", None)
            .await;
        assert_eq!(status, 200);
        let tagged = audit["requests"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["request_id"] == "ops-e2e-request")
            .count();
        if tagged == 4 {
            break;
        }
        assert!(Instant::now() < deadline, "{audit}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn the_operations_listener_can_be_turned_off_and_a_taken_address_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("a.db").display());
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap().to_string();
    let api_addr = airlock_testkit::free_addr();
    let env = |metrics: &str| {
        vec![
            ("AIRLOCK_DATABASE_URL".to_owned(), db.clone()),
            ("AIRLOCK_API_ADDR".to_owned(), api_addr.to_string()),
            (
                "AIRLOCK_PROXY_ADDR".to_owned(),
                airlock_testkit::free_addr().to_string(),
            ),
            ("AIRLOCK_ADMIN_TOKEN".to_owned(), ADMIN.to_owned()),
            ("AIRLOCK_METRICS_ADDR".to_owned(), metrics.to_owned()),
        ]
    };
    let binary = airlock_testkit::airlock_binary();
    let mut clash =
        airlock_testkit::AirlockProcess::spawn(&binary, &["serve"], env(&taken_addr)).unwrap();
    let status = clash.wait_exit(Duration::from_secs(60)).await.unwrap();
    assert!(!status.success());
    assert!(
        clash
            .log()
            .contains("AIRLOCK_METRICS_ADDR: cannot listen on"),
        "{}",
        clash.log()
    );

    let mut off = airlock_testkit::AirlockProcess::spawn(&binary, &["serve"], env("off")).unwrap();
    assert!(off.metrics_addr().is_none());
    off.wait_http_ok(
        &format!("http://{api_addr}/readyz"),
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    assert!(!off.log().contains("operations listener"));
    drop(taken);
}

/// The metrics an operator acts on: the upstream's answers by status class apart from Airlock's
/// own refusals (an upstream 429 is not an Airlock 429), the gateway on refusals and upstream
/// errors, the reason an upstream was unreachable (in the metric and the access log line), bytes
/// both ways, build info, the process's memory and CPU, and buckets below a millisecond.
#[tokio::test]
async fn metrics_separate_the_upstream_from_airlock_and_name_the_gateway() {
    use airlock_testkit::upstream::Reply;

    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/airlock.db", dir.path().display());
    let upstream = RecordingUpstream::start(UpstreamOptions::plain().responder(upstream::echo()))
        .await
        .unwrap();
    let mut airlock = Airlock::start_on(db.as_str(), &[]).await;
    airlock
        .post("/v1/secrets", json!({"name": "K", "value": SENTINEL}))
        .await;
    let up = airlock
        .post(
            "/v1/gateway-configs",
            json!({"name": "up", "endpoint": format!("http://127.0.0.1:{}", upstream.addr().port()), "auth_mechanism": {"type": "bearer"}}),
        )
        .await;
    let closed = airlock_testkit::free_port();
    let down = airlock
        .post(
            "/v1/gateway-configs",
            json!({"name": "down", "endpoint": format!("http://127.0.0.1:{closed}"), "auth_mechanism": {"type": "bearer"}}),
        )
        .await;
    let (up, down) = (up["id"].as_str().unwrap(), down["id"].as_str().unwrap());
    let devbox = airlock
        .post(
            "/v1/devboxes",
            json!({"source_addresses": ["127.0.0.1"], "gateways": {"UP": {"gateway": "up", "secret": "K"}, "DOWN": {"gateway": "down", "secret": "K"}}}),
        )
        .await;
    let token = |p: &str| devbox["environment"][p].as_str().unwrap().to_owned();
    let proxy = format!("http://{}", airlock.proxy_addr);
    let send = |token: String, body: &'static str| {
        let url = format!("{proxy}/v1/x");
        async move {
            TestRequest::post(&url)
                .bearer(&token)
                .body(body)
                .send()
                .await
                .unwrap()
        }
    };
    assert_eq!(send(token("UP"), "hello").await.status, 200);
    upstream.set_reply(Reply::json(429, &json!({"error": "slow down"})));
    let limited = send(token("UP"), "again").await;
    assert_eq!(limited.status, 429);
    assert!(limited.header("x-airlock-error").is_none());
    let unreachable = send(token("DOWN"), "x").await;
    assert_eq!(
        unreachable.header("x-airlock-error").as_deref(),
        Some("upstream_unreachable")
    );
    let missing = TestRequest::get(&format!("{proxy}/v1/x"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status, 401);

    let ops = &airlock.ops;
    let text = wait_sample(
        ops,
        &format!(r#"airlock_proxy_gateway_refusals_total{{gateway="{down}",reason="upstream_unreachable"}}"#),
        1.0,
    )
    .await;
    let text = if sample(
        &text,
        r#"airlock_proxy_gateway_refusals_total{gateway="none",reason="missing_token"}"#,
    ) == 1.0
    {
        text
    } else {
        wait_sample(
            ops,
            r#"airlock_proxy_gateway_refusals_total{gateway="none",reason="missing_token"}"#,
            1.0,
        )
        .await
    };
    let text = if sample(
        &text,
        &format!(r#"airlock_proxy_upstream_responses_total{{gateway="{up}",class="4xx"}}"#),
    ) == 1.0
    {
        text
    } else {
        wait_sample(
            ops,
            &format!(r#"airlock_proxy_upstream_responses_total{{gateway="{up}",class="4xx"}}"#),
            1.0,
        )
        .await
    };
    for (series, value) in [
        (
            format!(r#"airlock_proxy_upstream_responses_total{{gateway="{up}",class="2xx"}}"#),
            1.0,
        ),
        (
            format!(r#"airlock_proxy_upstream_responses_total{{gateway="{up}",class="4xx"}}"#),
            1.0,
        ),
        // The upstream's 429 is no refusal of Airlock's.
        (
            format!(
                r#"airlock_proxy_gateway_refusals_total{{gateway="{up}",reason="rate_limited"}}"#
            ),
            0.0,
        ),
        (
            format!(r#"airlock_proxy_upstream_responses_total{{gateway="{down}",class="5xx"}}"#),
            0.0,
        ),
        (
            format!(
                r#"airlock_proxy_gateway_upstream_errors_total{{gateway="{down}",kind="connect"}}"#
            ),
            1.0,
        ),
        (
            r#"airlock_proxy_upstream_errors_total{kind="connect"}"#.to_owned(),
            1.0,
        ),
        (
            format!(r#"airlock_proxy_received_bytes_total{{gateway="{up}"}}"#),
            10.0,
        ),
        (
            r#"airlock_proxy_sent_bytes_total{gateway="none"}"#.to_owned(),
            missing.body.len() as f64,
        ),
    ] {
        assert_eq!(sample(&text, &series), value, "{series}\n{text}");
    }
    assert!(
        sample(
            &text,
            &format!(r#"airlock_proxy_sent_bytes_total{{gateway="{up}"}}"#)
        ) > 0.0
    );
    // Buckets start at 50 µs.
    assert!(
        text.contains(&format!(
            r#"airlock_proxy_request_duration_seconds_bucket{{le="5e-5",gateway="{up}"}}"#
        )) || text.contains(&format!(
            r#"airlock_proxy_request_duration_seconds_bucket{{le="0.00005",gateway="{up}"}}"#
        )),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            &format!(
                r#"airlock_build_info{{version="{}"}}"#,
                env!("CARGO_PKG_VERSION")
            )
        ),
        1.0,
        "{text}"
    );
    assert!(
        sample(&text, "process_resident_memory_bytes") > 1_000_000.0,
        "{text}"
    );
    assert!(sample(&text, "process_cpu_seconds_total") > 0.0, "{text}");
    assert!(sample(&text, "process_open_fds") > 0.0, "{text}");
    // The access log line names why the upstream was unreachable.
    let log = airlock
        .process
        .wait_for_log("upstream_unreachable", Duration::from_secs(10))
        .await
        .unwrap();
    assert!(
        log.lines().any(|l| l.contains("upstream_unreachable")
            && l.contains("upstream_error")
            && l.contains("connect")),
        "{log}"
    );
    for form in forms(SENTINEL) {
        assert!(!text.contains(&form));
    }
    // Help texts are sentences with one final period.
    let doubled: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("# HELP") && l.ends_with(".."))
        .collect();
    assert!(doubled.is_empty(), "{doubled:?}");
}

/// `airlock config check` prints the effective settings that matter and warns about settings
/// that have no effect or look like mistakes; `--strict` fails on a warning.
#[test]
fn config_check_prints_effective_settings_and_warns() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/airlock.db", dir.path().display());
    let run = |extra: &[(&str, &str)], strict: bool| {
        let mut cmd = std::process::Command::new(airlock_testkit::airlock_binary());
        cmd.args(["config", "check"])
            .env_clear()
            .env("AIRLOCK_DATABASE_URL", &db)
            .env("AIRLOCK_MASTER_KEY", MASTER);
        if strict {
            cmd.arg("--strict");
        }
        cmd.envs(extra.iter().copied());
        let out = cmd.output().unwrap();
        (
            out.status.code().unwrap(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let line = |out: &str, name: &str| {
        out.lines()
            .find(|l| l.trim_start().starts_with(name))
            .map(|l| l.trim_start()[name.len()..].trim().to_owned())
            .unwrap_or_else(|| panic!("no {name} line in\n{out}"))
    };

    // The embedded default on loopback: nothing to warn about, even when strict.
    let (code, out, err) = run(&[("AIRLOCK_DEVBOX_RATE_LIMIT", "10/s")], true);
    assert_eq!(code, 0, "{out}{err}");
    assert!(!err.contains("warning"), "{err}");
    assert_eq!(line(&out, "role"), "all");
    assert_eq!(line(&out, "control plane"), "127.0.0.1:7070 (plain HTTP)");
    assert_eq!(line(&out, "data plane"), "127.0.0.1:7080 (plain HTTP)");
    assert_eq!(line(&out, "devbox rate limit"), "10 per 1 s");
    assert_eq!(line(&out, "trusted proxies"), "none");
    assert_eq!(line(&out, "tracing (OTLP)"), "off");
    assert!(line(&out, "master keys").starts_with("1 (active "), "{out}");

    // A proxy-only process with control-plane settings, a trust-everything proxy list and
    // SQLite: each is named; without --strict it still passes.
    let odd = [
        ("AIRLOCK_ROLE", "proxy"),
        ("AIRLOCK_ADMIN_TOKEN", "e2e-admin-token-0123456789abcdef"),
        ("AIRLOCK_TRUSTED_PROXIES", "0.0.0.0/0"),
        ("AIRLOCK_ALLOW_PRIVATE_UPSTREAMS", "10.0.0.0/8,127.0.0.0/8"),
    ];
    let (code, out, err) = run(&odd, false);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        line(&out, "control plane"),
        "off (this role does not run it)"
    );
    assert_eq!(line(&out, "trusted proxies"), "0.0.0.0/0");
    assert_eq!(line(&out, "private upstreams"), "10.0.0.0/8, 127.0.0.0/8");
    for expected in [
        "AIRLOCK_ADMIN_TOKEN has no effect: AIRLOCK_ROLE=proxy runs no control plane",
        "AIRLOCK_TRUSTED_PROXIES trusts every address",
        "AIRLOCK_ROLE=proxy: with SQLite",
    ] {
        assert!(err.contains(expected), "{expected:?} not in\n{err}");
    }
    assert!(
        !out.contains("e2e-admin-token"),
        "the admin token is never printed"
    );
    let (code, _, err) = run(&odd, true);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("--strict: 3 warning(s)"), "{err}");

    // Tracing: the URL spans go to; a sample ratio without an endpoint does nothing.
    let (code, out, err) = run(
        &[
            ("AIRLOCK_OTLP_ENDPOINT", "http://127.0.0.1:4318/"),
            ("AIRLOCK_TRACE_SAMPLE_RATIO", "0.25"),
        ],
        true,
    );
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        line(&out, "tracing (OTLP)"),
        "http://127.0.0.1:4318/v1/traces (service airlock, sample ratio 0.25)"
    );
    let (code, _, err) = run(&[("AIRLOCK_TRACE_SAMPLE_RATIO", "0.5")], true);
    assert_eq!(code, 1);
    assert!(
        err.contains("AIRLOCK_TRACE_SAMPLE_RATIO has no effect"),
        "{err}"
    );
    for (value, expected) in [
        ("127.0.0.1:4318", "must be an http:// or https:// URL"),
        (
            "http://collector:4318/?token=x",
            "without a query or user name",
        ),
        (
            "http://me:hunter2@collector:4318",
            "without a query or user name",
        ),
    ] {
        let (code, _, err) = run(&[("AIRLOCK_OTLP_ENDPOINT", value)], false);
        assert_eq!(code, 1, "{value}");
        assert!(err.contains(expected), "{value}: {err}");
        assert!(
            !err.contains("hunter2") && !err.contains("token=x"),
            "{err}"
        );
    }
    let (code, _, err) = run(&[("AIRLOCK_TRACE_SAMPLE_RATIO", "1.5")], false);
    assert_eq!(code, 1);
    assert!(err.contains("not a number from 0 to 1"), "{err}");
}
