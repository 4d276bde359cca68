//! Nothing secret leaves the real binary (SECURITY #20): `airlock serve` runs at debug level
//! with JSON logs while the control plane and the data plane are driven through their success
//! and failure paths with sentinel secrets and tokens. Afterwards every log line, every answer
//! (except the two that hand out a token by design), every audit row read back through the
//! API, the metrics (when the binary serves them) and the database files are searched for every
//! sentinel in raw, base64, hex and URL-encoded forms.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use airlock_testkit::tls::{TestCa, ALPN_H2_HTTP11};
use airlock_testkit::upstream::{RecordingUpstream, UpstreamOptions};
use airlock_testkit::TestRequest;
use airlock_tests::{Airlock, ADMIN, MASTER};
use serde_json::{json, Value};

const SECRET: &str = "sk-SENTINEL-e2e-leak-check-51a7c3";
const ROTATED: &str = "sk-SENTINEL-e2e-rotated-90be44";
const CUSTOM: &str = "org-SENTINEL-e2e-custom-3d2f10";

fn forms(secret: &str) -> Vec<String> {
    use base64::Engine as _;
    let bytes = secret.as_bytes();
    vec![
        secret.to_owned(),
        base64::engine::general_purpose::STANDARD.encode(bytes),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes),
        bytes.iter().map(|b| format!("{b:02x}")).collect(),
        bytes.iter().map(|b| format!("%{b:02X}")).collect(),
    ]
}

/// The Prometheus text of the operations listener, when this build has one.
///
/// The operations listener's `/metrics` (every role serves it; the test harness gives it a free
/// address): the searches below cover the metrics too.
async fn scrape_metrics(airlock: &Airlock) -> Option<String> {
    let resp = airlock_testkit::TestRequest::get(&format!("{}/metrics", airlock.ops))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status.as_u16(), 200, "{}", resp.text());
    let text = resp.text();
    assert!(text.contains("airlock_proxy_requests_total"), "{text}");
    Some(text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_secret_in_logs_answers_audit_rows_metrics_or_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("airlock.db");
    let database_url = format!("sqlite://{}", db.display());
    let ca = TestCa::new();
    let ca_file = ca.write_pem(dir.path());
    let upstream = RecordingUpstream::start(UpstreamOptions::tls(
        ca.server_config(&["localhost"], ALPN_H2_HTTP11),
    ))
    .await
    .unwrap();
    let mut airlock = Airlock::start(&[
        ("AIRLOCK_DATABASE_URL", &database_url),
        ("AIRLOCK_MASTER_KEY", MASTER),
        ("AIRLOCK_ADMIN_TOKEN", ADMIN),
        ("AIRLOCK_LOG_FORMAT", "json"),
        ("AIRLOCK_UPSTREAM_CA_FILE", ca_file.to_str().unwrap()),
        ("AIRLOCK_ALLOW_PRIVATE_UPSTREAMS", "127.0.0.0/8"),
    ])
    .await;
    let api = airlock.api.clone();
    let proxy = format!("http://{}", airlock.proxy_addr);
    let mut answers: Vec<String> = Vec::new();
    let mut tokens: Vec<String> = Vec::new();

    // Control plane: writes, rotations, and refusals that carry a secret in the wrong place.
    let call = |method: http::Method, path: &str, body: Option<Value>| {
        let url = format!("{api}{path}");
        async move {
            let mut req = TestRequest::new(method, &url).bearer(ADMIN);
            if let Some(b) = body {
                req = req.json(&b);
            }
            req.send().await.unwrap()
        }
    };
    for (method, path, body) in [
        (
            http::Method::POST,
            "/v1/secrets",
            json!({"name": "KEY", "value": SECRET}),
        ),
        (
            http::Method::POST,
            "/v1/secrets",
            json!({"name": "ORG", "value": CUSTOM}),
        ),
        (
            http::Method::POST,
            "/v1/secrets",
            json!({"name": "KEY", "value": SECRET}),
        ),
        (
            http::Method::POST,
            "/v1/secrets",
            json!({"name": SECRET, "value": "x"}),
        ),
        (
            http::Method::POST,
            "/v1/secrets",
            json!({"nme": SECRET, "value": SECRET}),
        ),
        (
            http::Method::POST,
            "/v1/secrets",
            json!({"name": "K2", "value": 5, "extra": SECRET}),
        ),
        (
            http::Method::POST,
            "/v1/secrets/KEY",
            json!({"value": ROTATED}),
        ),
        (
            http::Method::POST,
            "/v1/secrets/NOPE",
            json!({"value": SECRET}),
        ),
        (
            http::Method::POST,
            "/v1/gateway-configs",
            json!({"name": "gw", "endpoint": format!("https://localhost:{}/v1", upstream.addr().port()), "auth_mechanism": {"type": "bearer"}, "custom_headers": [{"name": "x-org", "secret": "ORG"}]}),
        ),
        (
            http::Method::POST,
            "/v1/gateway-configs",
            json!({"name": "gw3", "endpoint": "https://x.example", "auth_mechanism": {"type": "bearer"}, "custom_headers": [{"name": "x-a", "value": CUSTOM, "secret": "ORG"}]}),
        ),
    ] {
        let r = call(method, path, Some(body)).await;
        answers.push(r.text());
    }
    let r = TestRequest::post(&format!("{api}/v1/secrets"))
        .header("content-type", "application/json")
        .bearer(ADMIN)
        .body(format!("{{\"name\": \"BROKEN\", \"value\": \"{SECRET}"))
        .send()
        .await
        .unwrap();
    answers.push(r.text());
    let r = call(
        http::Method::POST,
        "/v1/devboxes",
        Some(json!({"source_addresses": ["127.0.0.1"], "gateways": {"GW": {"gateway": "gw", "secret": "KEY"}}})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let devbox = r.json().unwrap();
    tokens.push(devbox["environment"]["GW"].as_str().unwrap().to_owned());
    let id = devbox["id"].as_str().unwrap().to_owned();
    for _ in 0..2 {
        let r = TestRequest::post(&format!("{api}/v1/devboxes/{id}/create_gateway_token"))
            .bearer(ADMIN)
            .header("Idempotency-Key", "mint-once")
            .json(&json!({"gateway": "gw", "secret": "KEY"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        tokens.push(r.json().unwrap()["token"].as_str().unwrap().to_owned());
    }
    for path in [
        "/v1/secrets",
        "/v1/secrets/KEY",
        "/v1/gateway-configs",
        &format!("/v1/devboxes/{id}"),
    ] {
        answers.push(call(http::Method::GET, path, None).await.text());
    }

    // Data plane: success, then refusals with the token in them.
    let token = tokens[0].clone();
    let ok = TestRequest::get(&format!("{proxy}/models"))
        .bearer(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status, 200, "{}", ok.text());
    answers.push(ok.text());
    let mut bad = token.clone().into_bytes();
    bad[8] = if bad[8] == b'a' { b'b' } else { b'a' };
    let bad = String::from_utf8(bad).unwrap();
    tokens.push(bad.clone());
    for req in [
        TestRequest::get(&format!("{proxy}/x")).bearer(&bad),
        TestRequest::get(&format!("{proxy}/x?key={token}")).bearer(&token),
        TestRequest::get(&format!("{proxy}/x"))
            .header("x-note", &token)
            .bearer(&token),
        TestRequest::get(&format!("{proxy}/../x")).bearer(&token),
        TestRequest::get(&format!("{proxy}/x"))
            .bearer(&token)
            .from_ip("127.0.0.2".parse().unwrap()),
    ] {
        let r = req.send().await.unwrap();
        assert!(r.status.is_client_error(), "{}", r.status);
        answers.push(format!("{:?} {}", r.headers, r.text()));
    }
    let smuggle = format!(
        "POST /x HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    );
    answers.push(raw(airlock.proxy_addr, smuggle.as_bytes()).await);
    let r = call(
        http::Method::POST,
        &format!("/v1/devboxes/{id}/shutdown"),
        None,
    )
    .await;
    answers.push(r.text());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = TestRequest::get(&format!("{proxy}/x"))
        .bearer(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status, 403, "{}", r.text());
    answers.push(r.text());

    // Audit rows through the API, and the metrics.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let audit = call(http::Method::GET, "/v1/audit/events?limit=5000", None)
        .await
        .text();
    let requests = call(http::Method::GET, "/v1/audit/requests?limit=5000", None)
        .await
        .text();
    assert!(audit.contains("secret.rotate"), "{audit}");
    assert!(requests.contains("address_not_allowed"), "{requests}");
    let metrics = scrape_metrics(&airlock).await.unwrap_or_default();

    airlock.process.signal("TERM").unwrap();
    airlock
        .process
        .wait_exit(Duration::from_secs(30))
        .await
        .unwrap();
    let log = airlock.process.log();
    assert!(log.lines().count() > 20, "too little was logged: {log}");
    assert!(
        log.contains("DEBUG") || log.contains("\"level\":\"DEBUG\""),
        "not at debug level"
    );
    let mut database = Vec::new();
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.to_string_lossy().contains("airlock.db") {
            database.extend(std::fs::read(path).unwrap());
        }
    }
    let database = String::from_utf8_lossy(&database).into_owned();

    for secret in [SECRET, ROTATED, CUSTOM, ADMIN, MASTER]
        .into_iter()
        .chain(tokens.iter().map(String::as_str))
    {
        for form in forms(secret) {
            let short = &form[..8.min(form.len())];
            for line in log.lines() {
                assert!(!line.contains(&form), "a log line holds {short}…: {line}");
            }
            for answer in &answers {
                assert!(
                    !answer.contains(&form),
                    "an answer holds {short}…: {answer}"
                );
            }
            assert!(!audit.contains(&form), "an audit row holds {short}…");
            assert!(
                !requests.contains(&form),
                "a request audit row holds {short}…"
            );
            assert!(!metrics.contains(&form), "a metric holds {short}…");
            if secret != MASTER {
                assert!(!database.contains(&form), "the database holds {short}…");
            }
        }
    }
    assert!(
        !log.contains("gws_"),
        "a log line holds something token-like"
    );
}

async fn raw(addr: std::net::SocketAddr, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _ = stream.write_all(request).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}
