//! The data plane through the real binary: the official OpenAI and Anthropic SDKs against a
//! recording upstream over TLS, source binding, rotation and shutdown across two replicas that
//! share one Postgres, and the request audit trail.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::IpAddr;
use std::time::{Duration, Instant};

use airlock_testkit::tls::{TestCa, ALPN_H2_HTTP11};
use airlock_testkit::upstream::{self, RecordingUpstream, UpstreamOptions};
use airlock_testkit::{run_python, workspace_root, TestRequest};
use airlock_tests::{Airlock, ADMIN, MASTER};
use serde_json::{json, Value};

const OPENAI_KEY: &str = "sk-openai-real-key-7e1f0d9c8b";
const ANTHROPIC_KEY: &str = "sk-ant-real-key-4c3b2a190807";

struct Rig {
    airlock: Airlock,
    _ca_dir: tempfile::TempDir,
    openai: RecordingUpstream,
    anthropic: RecordingUpstream,
    env: Value,
    devbox: String,
    database_url: String,
}

async fn rig() -> Rig {
    let url = airlock_testkit::pg::shared()
        .await
        .fresh_database()
        .await
        .unwrap();
    rig_on(url).await
}

async fn rig_on(database_url: String) -> Rig {
    let ca = TestCa::new();
    let ca_dir = tempfile::tempdir().unwrap();
    let ca_file = ca.write_pem(ca_dir.path());
    let tls = || UpstreamOptions::tls(ca.server_config(&["localhost"], ALPN_H2_HTTP11));
    let openai = RecordingUpstream::start(tls().responder(upstream::openai_chat()))
        .await
        .unwrap();
    let anthropic = RecordingUpstream::start(tls().responder(upstream::anthropic_messages()))
        .await
        .unwrap();
    let airlock = Airlock::start(&[
        ("AIRLOCK_DATABASE_URL", &database_url),
        ("AIRLOCK_MASTER_KEY", MASTER),
        ("AIRLOCK_ADMIN_TOKEN", ADMIN),
        ("AIRLOCK_UPSTREAM_CA_FILE", ca_file.to_str().unwrap()),
        ("AIRLOCK_ALLOW_PRIVATE_UPSTREAMS", "127.0.0.0/8"),
    ])
    .await;
    airlock
        .post(
            "/v1/secrets",
            json!({"name": "OPENAI_KEY", "value": OPENAI_KEY}),
        )
        .await;
    airlock
        .post(
            "/v1/secrets",
            json!({"name": "ANTHROPIC_KEY", "value": ANTHROPIC_KEY}),
        )
        .await;
    airlock
        .post("/v1/gateway-configs", json!({"name": "openai", "endpoint": format!("https://localhost:{}/v1", openai.addr().port()), "auth_mechanism": {"type": "bearer"}}))
        .await;
    airlock
        .post(
            "/v1/gateway-configs",
            json!({"name": "anthropic", "endpoint": format!("https://localhost:{}", anthropic.addr().port()), "auth_mechanism": {"type": "header", "key": "x-api-key"}}),
        )
        .await;
    let dbx = airlock
        .post(
            "/v1/devboxes",
            json!({"source_addresses": ["127.0.0.1", "127.0.0.2"], "gateways": {
                "OPENAI": {"gateway": "openai", "secret": "OPENAI_KEY"},
                "ANTHROPIC": {"gateway": "anthropic", "secret": "ANTHROPIC_KEY"}}}),
        )
        .await;
    Rig {
        devbox: dbx["id"].as_str().unwrap().to_owned(),
        env: dbx["environment"].clone(),
        airlock,
        _ca_dir: ca_dir,
        openai,
        anthropic,
        database_url,
    }
}

/// Every request the upstream saw carries the real key exactly once and no trace of a token.
fn assert_clean(upstream: &RecordingUpstream, header: &str, expected: &str) {
    let requests = upstream.requests();
    assert!(!requests.is_empty());
    for r in &requests {
        assert_eq!(
            r.header_values(header),
            vec![expected.as_bytes()],
            "{} {}",
            r.method,
            r.uri
        );
        assert!(
            !r.contains_bytes(b"gws_"),
            "a gws_ token reached the upstream: {:?}",
            r.headers
        );
    }
    assert!(!upstream.received_contains(b"gws_"));
}

async fn sdk(script: &str, env: &[(&str, &str)]) -> Value {
    let out = run_python(&workspace_root().join("tests/python").join(script), env)
        .await
        .unwrap();
    let stdout = airlock_testkit::check_python_output(&out).unwrap();
    serde_json::from_str(stdout.lines().last().unwrap()).unwrap()
}

fn assert_streamed(seen: &Value) {
    let arrivals: Vec<f64> = seen["stream"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a[0].as_f64().unwrap())
        .collect();
    assert!(arrivals.len() >= 3, "{seen}");
    // The upstream writes an event every 50 ms: if the proxy buffered, they would arrive together.
    let spread = arrivals.last().unwrap() - arrivals.first().unwrap();
    assert!(
        spread > 0.05 * (arrivals.len() as f64 - 2.0),
        "events arrived together: {arrivals:?}"
    );
}

#[tokio::test]
async fn official_sdks_through_the_proxy() {
    let rig = rig().await;
    let e = |k: &str| rig.env[k].as_str().unwrap().to_owned();
    let seen = sdk(
        "openai_sdk.py",
        &[("OPENAI_URL", &e("OPENAI_URL")), ("OPENAI", &e("OPENAI"))],
    )
    .await;
    assert!(seen["text"].as_str().unwrap().contains("ping"), "{seen}");
    assert_streamed(&seen);
    assert_eq!(seen["tool"], "get_weather");
    assert_eq!(seen["error"], 429);
    assert_clean(
        &rig.openai,
        "authorization",
        &format!("Bearer {OPENAI_KEY}"),
    );
    assert!(rig
        .openai
        .requests()
        .iter()
        .all(|r| r.path().starts_with("/v1/chat/completions")));

    let seen = sdk(
        "anthropic_sdk.py",
        &[
            ("ANTHROPIC_URL", &e("ANTHROPIC_URL")),
            ("ANTHROPIC", &e("ANTHROPIC")),
        ],
    )
    .await;
    assert!(seen["text"].as_str().unwrap().contains("ping"), "{seen}");
    assert_streamed(&seen);
    assert_eq!(seen["tool"], "get_weather");
    assert_eq!(seen["error"], 429);
    assert_clean(&rig.anthropic, "x-api-key", ANTHROPIC_KEY);
    for r in rig.anthropic.requests() {
        assert!(
            r.header_values("authorization").is_empty(),
            "the SDK's Authorization carried the token and must be gone"
        );
    }

    // The audit trail holds one row per request sent (4 per SDK run; the stream is one request).
    let sent = rig.openai.requests().len() + rig.anthropic.requests().len();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, v) = rig
            .airlock
            .call(
                http::Method::GET,
                &format!("/v1/audit/requests?devbox_id={}&limit=100", rig.devbox),
                None,
            )
            .await;
        if v["total_count"].as_u64() == Some(sent as u64) {
            let statuses: Vec<u64> = v["requests"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["status"].as_u64().unwrap())
                .collect();
            assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 2);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "audit rows {} != requests {sent}",
            v["total_count"]
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let log = rig.airlock.process.log();
    for secret in [OPENAI_KEY, ANTHROPIC_KEY, &e("OPENAI"), &e("ANTHROPIC")] {
        assert!(
            !log.contains(secret),
            "a secret or token reached the debug log"
        );
    }
}

async fn call_from(proxy: &str, ip: &str, token: &str) -> u16 {
    TestRequest::post(&format!("{proxy}/v1/chat/completions"))
        .from_ip(ip.parse::<IpAddr>().unwrap())
        .bearer(token)
        .json(&json!({"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap()
        .status
        .as_u16()
}

#[tokio::test]
async fn source_binding_rotation_and_shutdown_on_two_replicas() {
    let rig = rig().await;
    let token = rig.env["OPENAI"].as_str().unwrap().to_owned();
    let first = format!("http://{}", rig.airlock.proxy_addr);
    // A second data plane on the same Postgres.
    let replica = Airlock::start(&[
        ("AIRLOCK_DATABASE_URL", &rig.database_url),
        ("AIRLOCK_MASTER_KEY", MASTER),
        ("AIRLOCK_ADMIN_TOKEN", ADMIN),
        (
            "AIRLOCK_UPSTREAM_CA_FILE",
            rig._ca_dir.path().join("test-ca.pem").to_str().unwrap(),
        ),
        ("AIRLOCK_ALLOW_PRIVATE_UPSTREAMS", "127.0.0.0/8"),
    ])
    .await;
    let second = format!("http://{}", replica.proxy_addr);
    for proxy in [&first, &second] {
        assert_eq!(call_from(proxy, "127.0.0.1", &token).await, 200);
        assert_eq!(call_from(proxy, "127.0.0.2", &token).await, 200);
        assert_eq!(
            call_from(proxy, "127.0.0.3", &token).await,
            403,
            "outside source_addresses"
        );
    }

    // Rotation: a stream of requests on both replicas; none fails, and after the rotation has
    // been seen, every request carries the new key.
    rig.openai.clear();
    let rotate_at = 10;
    let mut rotated_seen = [false, false];
    for i in 0..40 {
        if i == rotate_at {
            rig.airlock
                .post(
                    "/v1/secrets/OPENAI_KEY",
                    json!({"value": "sk-openai-rotated-1234"}),
                )
                .await;
        }
        for (n, proxy) in [&first, &second].into_iter().enumerate() {
            assert_eq!(
                call_from(proxy, "127.0.0.1", &token).await,
                200,
                "request {i} on replica {n}"
            );
            let last = rig.openai.last_request().unwrap();
            let auth = last.header_str("authorization").unwrap();
            if auth == "Bearer sk-openai-rotated-1234" {
                rotated_seen[n] = true;
            } else {
                assert!(!rotated_seen[n], "replica {n} went back to the old key");
                assert!(i >= rotate_at || auth == format!("Bearer {OPENAI_KEY}"));
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        rotated_seen,
        [true, true],
        "both replicas picked up the rotation within 1.5 s"
    );

    // Shutdown revokes on both replicas within a second.
    rig.airlock
        .post(&format!("/v1/devboxes/{}/shutdown", rig.devbox), json!({}))
        .await;
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut refused = [false, false];
    while refused != [true, true] && Instant::now() < deadline + Duration::from_millis(500) {
        for (n, proxy) in [&first, &second].into_iter().enumerate() {
            let status = call_from(proxy, "127.0.0.1", &token).await;
            if status == 401 || status == 403 {
                refused[n] = true;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(refused, [true, true]);
}

/// SECURITY #22: with Postgres stopped, tokens already known keep working, unknown tokens are
/// refused, the control plane answers 503, and after Postgres returns nothing needs a restart
/// and no audit row is lost.
#[tokio::test]
async fn database_outage_under_traffic() {
    let cluster = airlock_testkit::pg::PgCluster::start().await.unwrap();
    let rig = rig_on(cluster.fresh_database().await.unwrap()).await;
    let token = rig.env["OPENAI"].as_str().unwrap().to_owned();
    let proxy = format!("http://{}", rig.airlock.proxy_addr);
    let mut sent = 0;
    for _ in 0..10 {
        assert_eq!(call_from(&proxy, "127.0.0.1", &token).await, 200);
        sent += 1;
    }
    cluster.stop().await.unwrap();
    for i in 0..20 {
        assert_eq!(
            call_from(&proxy, "127.0.0.1", &token).await,
            200,
            "request {i} during the outage"
        );
        sent += 1;
    }
    // Right format and checksum, never minted: refused without the database to ask.
    let stranger = airlock_core::token::BearerSecret::generate(airlock_core::SecretKind::Gateway)
        .expose()
        .to_owned();
    // Refused: 401 if the data plane can tell it is unknown, 503 if it cannot ask the database
    // whether it was minted a moment ago. Either way nothing reaches the upstream.
    let before = rig.openai.requests().len();
    let status = call_from(&proxy, "127.0.0.1", &stranger).await;
    assert!(
        status == 401 || status == 503,
        "an unknown token during the outage got {status}"
    );
    assert_eq!(rig.openai.requests().len(), before);
    let (status, body) = rig
        .airlock
        .call(http::Method::GET, "/v1/secrets", None)
        .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "database_unavailable");
    cluster.resume().await.unwrap();
    for i in 0..10 {
        assert_eq!(
            call_from(&proxy, "127.0.0.1", &token).await,
            200,
            "request {i} after the outage"
        );
        sent += 1;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, v) = rig
            .airlock
            .call(
                http::Method::GET,
                &format!("/v1/audit/requests?devbox_id={}&limit=1", rig.devbox),
                None,
            )
            .await;
        if status == 200 && v["total_count"].as_u64() == Some(sent) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "audit rows {} != requests {sent}",
            v["total_count"]
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
