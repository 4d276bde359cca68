//! The control plane through the real binary: first start on the embedded default, the
//! bootstrap key, Runloop's generated SDK unchanged, the CLI, and usage from a metered request.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use airlock_testkit::{
    airlock_binary, free_addr, run_python, workspace_root, AirlockProcess, TestRequest,
};
use airlock_tests::{Airlock, ADMIN};
use serde_json::json;

/// A fresh working directory and no settings but the listen addresses: SQLite and a master key
/// file are created, and the admin key is printed once.
#[tokio::test]
async fn first_start_on_the_embedded_default() {
    let api_addr = free_addr();
    let env = vec![
        ("AIRLOCK_API_ADDR".to_owned(), api_addr.to_string()),
        ("AIRLOCK_PROXY_ADDR".to_owned(), free_addr().to_string()),
    ];
    let mut first = AirlockProcess::spawn(&airlock_binary(), &["serve"], env.clone()).unwrap();
    let api = format!("http://{api_addr}");
    first
        .wait_http_ok(&format!("{api}/readyz"), Duration::from_secs(60))
        .await
        .unwrap();
    let log = first
        .wait_for_log("export AIRLOCK_TOKEN=", Duration::from_secs(10))
        .await
        .unwrap();
    let key = log
        .split("export AIRLOCK_TOKEN=")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    assert!(key.starts_with("alk_"));
    assert!(log.contains("generated a new master key"), "{log}");
    let data = first.workdir().join("airlock-data");
    assert!(data.join("airlock.db").exists());
    // The key file, the database (and its WAL files) and their directory are the owner's alone.
    let mode = |path: &std::path::Path| {
        let meta = std::fs::metadata(path).unwrap();
        std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777
    };
    assert_eq!(mode(&data), 0o700);
    for file in [
        "master.key",
        "airlock.db",
        "airlock.db-wal",
        "airlock.db-shm",
    ] {
        let path = data.join(file);
        if file == "master.key" || file == "airlock.db" || path.exists() {
            assert_eq!(mode(&path), 0o600, "{file}");
        }
    }

    let resp = TestRequest::post(&format!("{api}/v1/secrets"))
        .bearer(&key)
        .json(&json!({"name": "K", "value": "first-start-sentinel"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());

    // A restart keeps the data and the key file, and does not print a new admin key.
    first.signal("TERM").unwrap();
    first.wait_exit(Duration::from_secs(30)).await.unwrap();
    first.respawn().unwrap();
    first
        .wait_http_ok(&format!("{api}/readyz"), Duration::from_secs(60))
        .await
        .unwrap();
    let resp = TestRequest::get(&format!("{api}/v1/secrets/K"))
        .bearer(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    let log = first.log();
    assert_eq!(log.matches("export AIRLOCK_TOKEN=").count(), 1, "{log}");
    assert!(!log.contains("first-start-sentinel"));
}

#[tokio::test]
async fn settings_that_do_not_parse_stop_the_start_with_one_line() {
    for (var, value, expected) in [
        ("AIRLOCK_API_ADDR", "not-an-address", "AIRLOCK_API_ADDR"),
        ("AIRLOCK_DATABASE_URL", "mysql://x", "AIRLOCK_DATABASE_URL"),
        ("AIRLOCK_MASTER_KEY", "too-short", "AIRLOCK_MASTER_KEY"),
        (
            "AIRLOCK_ALLOW_PRIVATE_UPSTREAMS",
            "10.0.0.0/99",
            "AIRLOCK_ALLOW_PRIVATE_UPSTREAMS",
        ),
        ("AIRLOCK_LOG_FORMAT", "yaml", "AIRLOCK_LOG_FORMAT"),
        ("AIRLOCK_ROLE", "both", "AIRLOCK_ROLE"),
        (
            "AIRLOCK_METRICS_ADDR",
            "localhost:7090",
            "AIRLOCK_METRICS_ADDR: \"localhost:7090\" is not an address",
        ),
        (
            "AIRLOCK_MAX_CONNECTIONS",
            "0",
            "AIRLOCK_MAX_CONNECTIONS: \"0\" is not a whole number ≥ 1",
        ),
        (
            "AIRLOCK_UPSTREAM_MAX_CONCURRENCY",
            "-1",
            "AIRLOCK_UPSTREAM_MAX_CONCURRENCY",
        ),
        (
            "AIRLOCK_DEVBOX_RATE_LIMIT",
            "10/h",
            "AIRLOCK_DEVBOX_RATE_LIMIT: \"10/h\": the unit must be s or m",
        ),
    ] {
        let mut p = AirlockProcess::spawn(
            &airlock_binary(),
            &["serve"],
            vec![(var.to_owned(), value.to_owned())],
        )
        .unwrap();
        let status = p.wait_exit(Duration::from_secs(30)).await.unwrap();
        assert!(!status.success(), "{var}");
        let log = p.log();
        assert!(log.contains(expected), "{var}: {log}");
        assert!(!log.contains("panicked"), "{log}");
        if var == "AIRLOCK_MASTER_KEY" {
            assert!(
                !log.contains("too-short"),
                "the key's text must not be echoed: {log}"
            );
        }
    }
    // Postgres without a master key refuses to start.
    let url = airlock_testkit::pg::shared()
        .await
        .fresh_database()
        .await
        .unwrap();
    let mut p = AirlockProcess::spawn(
        &airlock_binary(),
        &["serve"],
        vec![("AIRLOCK_DATABASE_URL".to_owned(), url)],
    )
    .unwrap();
    assert!(!p
        .wait_exit(Duration::from_secs(30))
        .await
        .unwrap()
        .success());
    assert!(p.log().contains("AIRLOCK_MASTER_KEY"), "{}", p.log());
}

/// Runloop's generated SDK (`runloop_api_client`), pointed at Airlock with `base_url`, manages
/// gateway configs and secrets and mints a token without any change.
#[tokio::test]
async fn runloop_sdk_works_unchanged() {
    let url = airlock_testkit::pg::shared()
        .await
        .fresh_database()
        .await
        .unwrap();
    let master = "q2Vx0JqL3m0l2m8r8y6Wb5XyZ0a1b2c3d4e5f6g7h8k=";
    let airlock = Airlock::start(&[
        ("AIRLOCK_DATABASE_URL", &url),
        ("AIRLOCK_MASTER_KEY", master),
        ("AIRLOCK_ADMIN_TOKEN", ADMIN),
    ])
    .await;
    let dbx = airlock
        .post("/v1/devboxes", json!({"source_addresses": ["127.0.0.1"]}))
        .await;
    let script = workspace_root().join("tests/python/runloop_sdk.py");
    let out = run_python(
        &script,
        &[
            ("AIRLOCK_URL", &airlock.api),
            ("AIRLOCK_TOKEN", ADMIN),
            ("DEVBOX_ID", dbx["id"].as_str().unwrap()),
        ],
    )
    .await
    .unwrap();
    let stdout = airlock_testkit::check_python_output(&out).unwrap();
    let seen: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(seen["token_prefix"], "gws_");
    assert!(seen["gateway"].as_str().unwrap().starts_with("gwc_"));
    // Nothing the SDK sent as a value shows up in the server's debug log.
    let log = airlock.process.log();
    assert!(
        !log.contains("sdk-sentinel-value"),
        "a secret value reached the log"
    );
}

/// Runs the real binary as a CLI client of the control plane at `api` with the admin key:
/// (succeeded, standard output, standard error).
fn run_cli(
    api: &str,
    args: &[&str],
    stdin: Option<&str>,
    extra: &[(&str, &str)],
) -> (bool, String, String) {
    let mut cmd = std::process::Command::new(airlock_binary());
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("AIRLOCK_URL", api)
        .env("AIRLOCK_TOKEN", ADMIN)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    for (k, v) in extra {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    {
        use std::io::Write;
        let mut input = child.stdin.take().unwrap();
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The LLM commands through the real binary: `providers`, `gateway create --provider`, and
/// `usage` as a table and as JSON over request events written behind the server's back (the
/// data plane that meters them is tested on its own).
#[tokio::test]
async fn cli_providers_presets_and_usage() {
    let url = airlock_testkit::pg::shared()
        .await
        .fresh_database()
        .await
        .unwrap();
    let airlock = Airlock::start(&[
        ("AIRLOCK_DATABASE_URL", &url),
        (
            "AIRLOCK_MASTER_KEY",
            "q2Vx0JqL3m0l2m8r8y6Wb5XyZ0a1b2c3d4e5f6g7h8k=",
        ),
        ("AIRLOCK_ADMIN_TOKEN", ADMIN),
    ])
    .await;
    let cli = |args: &[&str]| run_cli(&airlock.api, args, None, &[]);

    let (ok, out, err) = cli(&["providers"]);
    assert!(ok, "{err}");
    let mut lines = out.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["ID", "NAME", "API", "AUTH", "ENDPOINT"]);
    let anthropic = lines.find(|l| l.starts_with("anthropic ")).unwrap();
    for part in [
        "Anthropic",
        "anthropic-messages",
        "header:x-api-key",
        "https://api.anthropic.com",
    ] {
        assert!(anthropic.contains(part), "{anthropic}");
    }
    assert!(
        out.lines()
            .any(|l| l.starts_with("azure-openai ") && l.ends_with("(give --endpoint)")),
        "{out}"
    );
    let (ok, out, _) = cli(&["providers", "--output", "json"]);
    assert!(ok);
    let listed: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(listed["providers"].as_array().unwrap().len() >= 24);

    let (ok, out, err) = cli(&[
        "gateway",
        "create",
        "--provider",
        "anthropic",
        "--name",
        "claude",
        "-o",
        "json",
    ]);
    assert!(ok, "{err}");
    let created: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(created["provider"], "anthropic");
    assert_eq!(created["api"], "anthropic-messages");
    assert_eq!(created["endpoint"], "https://api.anthropic.com");
    assert_eq!(
        created["auth_mechanism"],
        json!({"type": "header", "key": "x-api-key"})
    );
    assert_eq!(
        created["custom_headers"],
        json!([{"name": "anthropic-version", "value": "2023-06-01"}])
    );
    let (ok, out, err) = cli(&[
        "gateway",
        "create",
        "--provider",
        "openai",
        "--name",
        "gpt-proxy",
        "--endpoint",
        "https://llm-proxy.example.com/v1",
        "--api",
        "openai-responses",
        "-o",
        "json",
    ]);
    assert!(ok, "{err}");
    let gpt: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (&gpt["endpoint"], &gpt["api"], &gpt["auth_mechanism"]),
        (
            &json!("https://llm-proxy.example.com/v1"),
            &json!("openai-responses"),
            &json!({"type": "bearer"})
        )
    );
    for (args, expected) in [
        (
            &[
                "gateway",
                "create",
                "--provider",
                "azure-openai",
                "--name",
                "az",
            ][..],
            "endpoint: is required with provider azure-openai",
        ),
        (
            &["gateway", "create", "--provider", "nope", "--name", "x"][..],
            "provider: is not a known provider",
        ),
        // Without a provider, the endpoint is required before anything is sent.
        (&["gateway", "create", "--name", "x"][..], "--endpoint"),
        (&["usage", "--group-by", "models"][..], "group_by: must be"),
        (&["usage", "--since", "a week"][..], "--since a week"),
        (
            &["usage", "--gateway", "claude"][..],
            "gateway_id: must be an id",
        ),
    ] {
        let (ok, _, err) = cli(args);
        assert!(!ok, "{args:?}");
        assert!(err.contains(expected), "{args:?}: {err}");
    }

    // Metered events as the data plane writes them: two days, two models, one unknown cost,
    // and one ten minutes ago for --since.
    let account = created["account_id"].as_str().unwrap();
    let gateway = created["id"].as_str().unwrap();
    let t = 1_767_225_600_000_i64; // 2026-01-01T00:00:00Z
    let now = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap();
    let mut values = vec![];
    for (i, (time_ms, model, input, output, cost)) in [
        (t, "'claude-sonnet-4-5'", 1_000, 100, "4215000"),
        (t + 60_000, "'claude-sonnet-4-5'", 2_000, 50, "1000000"),
        (t + 86_400_000, "'claude-haiku-4-5'", 300, 30, "NULL"),
        (now - 600_000, "'recent-model'", 7, 7, "7"),
    ]
    .into_iter()
    .enumerate()
    {
        values.push(format!(
            "('aud_01kdxz0000000000000000000{i}', {time_ms}, '{account}', 'dbx_01kdxz00000000000000000000', '{gateway}',
              'POST', '/v1/messages', 200, 5, 1, 1, '10.0.0.1', 'anthropic', {model}, {input}, {output}, 0, 0, 0, 1, {cost})"
        ));
    }
    airlock_testkit::pg::psql(
        &url,
        &format!(
            "INSERT INTO request_events (id, time_ms, account_id, devbox_id, gateway_config_id, method, path, status,
               latency_us, bytes_in, bytes_out, client_addr, provider, model, input_tokens, output_tokens,
               cache_read_tokens, cache_write_tokens, reasoning_tokens, usage_exact, cost_nanos) VALUES {}",
            values.join(", ")
        ),
    )
    .await
    .unwrap();

    let end = (t + 2 * 86_400_000).to_string();
    let (ok, out, err) = cli(&["usage", "--group-by", "day,model", "--end-ms", &end]);
    assert!(ok, "{err}");
    let rows: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows,
        vec![
            vec![
                "DAY",
                "MODEL",
                "REQUESTS",
                "INPUT",
                "OUTPUT",
                "CACHE",
                "READ",
                "CACHE",
                "WRITE",
                "REASONING",
                "COST",
                "USD",
                "UNPRICED"
            ],
            vec![
                "2026-01-01",
                "claude-sonnet-4-5",
                "2",
                "3000",
                "150",
                "0",
                "0",
                "0",
                "0.005215",
                "0"
            ],
            vec![
                "2026-01-02",
                "claude-haiku-4-5",
                "1",
                "300",
                "30",
                "0",
                "0",
                "0",
                "-",
                "1"
            ],
        ],
        "{out}"
    );
    let (ok, out, err) = cli(&[
        "usage",
        "--start-ms",
        &(t + 1).to_string(),
        "--end-ms",
        &end,
        "--gateway",
        gateway,
        "--output",
        "json",
    ]);
    assert!(ok, "{err}");
    let usage: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        usage,
        json!({"usage": [{"requests": 2, "input_tokens": 2300, "output_tokens": 80, "cache_read_tokens": 0,
                          "cache_write_tokens": 0, "reasoning_tokens": 0, "cost_usd": "0.001", "unpriced_requests": 1}]})
    );
    let (ok, out, err) = cli(&["usage", "--since", "1h", "--group-by", "model"]);
    assert!(ok, "{err}");
    let rows: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows[1..],
        [vec![
            "recent-model",
            "1",
            "7",
            "7",
            "0",
            "0",
            "0",
            "0.000000007",
            "0"
        ]],
        "{out}"
    );
    let (ok, out, err) = cli(&["usage", "--since", "1h", "--model", "claude-haiku-4-5"]);
    assert!(ok, "{err}");
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(err.contains("no metered requests match"), "{err}");
}

/// The CLI's admin commands against a running control plane, and a master key rotation with
/// `airlock keys rewrap` followed by retiring the old key (SECURITY #18).
#[tokio::test]
async fn cli_commands_and_master_key_rotation() {
    let url = airlock_testkit::pg::shared()
        .await
        .fresh_database()
        .await
        .unwrap();
    let old_key = "q2Vx0JqL3m0l2m8r8y6Wb5XyZ0a1b2c3d4e5f6g7h8k=";
    let mut airlock = Airlock::start(&[
        ("AIRLOCK_DATABASE_URL", &url),
        ("AIRLOCK_MASTER_KEY", old_key),
        ("AIRLOCK_ADMIN_TOKEN", ADMIN),
        ("AIRLOCK_ALLOW_PRIVATE_UPSTREAMS", "127.0.0.0/8"),
    ])
    .await;
    // A gateway to a closed local port: after the rotation its requests must fail at the dial
    // (upstream_unreachable), not at the binding check (gateway_unverified).
    let closed = airlock_testkit::free_port();
    airlock
        .post(
            "/v1/gateway-configs",
            json!({"name": "local-gw", "endpoint": format!("https://localhost:{closed}"), "auth_mechanism": {"type": "bearer"}}),
        )
        .await;
    let cli = |args: &[&str], stdin: Option<&str>, extra: &[(&str, &str)]| {
        run_cli(&airlock.api, args, stdin, extra)
    };
    let (ok, out, err) = cli(
        &["secret", "set", "CLI_KEY"],
        Some("cli-sentinel-value\n"),
        &[],
    );
    assert!(ok, "{out}{err}");
    assert!(!out.contains("cli-sentinel-value"));
    // Setting it again rotates.
    let (ok, _, err) = cli(
        &["secret", "set", "CLI_KEY"],
        Some("cli-sentinel-value-2\n"),
        &[],
    );
    assert!(ok, "{err}");
    let (ok, out, err) = cli(
        &[
            "gateway",
            "create",
            "--name",
            "cli-gw",
            "--endpoint",
            "https://api.example.com/v1",
            "--auth",
            "header:x-api-key",
            "-o",
            "json",
        ],
        None,
        &[],
    );
    assert!(ok, "{err}");
    assert!(out.contains("\"x-api-key\""), "{out}");
    let (ok, out, _) = cli(&["gateway", "list"], None, &[]);
    assert!(ok && out.contains("cli-gw"), "{out}");
    let (ok, out, err) = cli(
        &[
            "devbox",
            "register",
            "--source",
            "10.1.2.3",
            "--gateway",
            "EXAMPLE=cli-gw:CLI_KEY",
        ],
        None,
        &[],
    );
    assert!(ok, "{err}");
    assert!(out.contains("export EXAMPLE_URL=http://"), "{out}");
    assert!(out.contains("export EXAMPLE=gws_"), "{out}");
    let id = err.split_whitespace().last().unwrap().to_owned();
    assert!(id.starts_with("dbx_"), "{err}");
    // The devbox's tokens, listed and revoked one by one.
    let (ok, out, err) = cli(&["devbox", "tokens", &id, "--output", "json"], None, &[]);
    assert!(ok, "{err}");
    let listed: serde_json::Value = serde_json::from_str(&out).unwrap();
    let token_id = listed["gateway_tokens"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(listed["gateway_tokens"][0]["prefix"], "EXAMPLE");
    let (ok, out, _) = cli(&["devbox", "tokens", &id], None, &[]);
    assert!(
        ok && out.starts_with("ID") && out.contains("active"),
        "{out}"
    );
    let (ok, out, err) = cli(
        &["devbox", "revoke-token", &id, &token_id, "-o", "json"],
        None,
        &[],
    );
    assert!(ok && out.contains("\"revoked\""), "{out}{err}");
    let (ok, _, err) = cli(
        &[
            "devbox",
            "revoke-token",
            &id,
            "gwt_01h8xg3r5y3vq6z8k9m2n4p6r8",
        ],
        None,
        &[],
    );
    assert!(
        !ok && err.contains("404") || err.contains("not found"),
        "{err}"
    );
    let (ok, out, _) = cli(&["devbox", "shutdown", &id, "-o", "json"], None, &[]);
    assert!(ok && out.contains("\"shutdown\""), "{out}");
    let (ok, _, err) = cli(
        &[
            "gateway",
            "create",
            "--name",
            "x",
            "--endpoint",
            "https://u:p@x.com",
        ],
        None,
        &[],
    );
    assert!(!ok && err.contains("user info"), "{err}");

    // Rotate the master key: the new key first, the old one still listed; rewrap; retire.
    let (ok, new_key, _) = cli(&["keys", "generate"], None, &[]);
    assert!(ok);
    let new_key = new_key.trim().to_owned();
    let both = format!("{new_key},{old_key}");
    let db = [("AIRLOCK_DATABASE_URL", url.as_str())];
    let (ok, out, err) = cli(
        &["keys", "rewrap"],
        None,
        &[db[0], ("AIRLOCK_MASTER_KEY", &both)],
    );
    assert!(ok, "{err}");
    assert!(out.contains("re-wrapped 1 secret(s)"), "{out}");
    assert!(out.contains("re-bound 2 gateway config(s)"), "{out}");
    let (ok, out, _) = cli(
        &["keys", "rewrap"],
        None,
        &[db[0], ("AIRLOCK_MASTER_KEY", &both)],
    );
    assert!(ok && out.contains("re-wrapped 0 secret(s)"), "{out}");
    assert!(out.contains("re-bound 0 gateway config(s)"), "{out}");
    airlock.process.kill();
    // Only the new key: everything still opens (a rotation through the API proves the server runs).
    let mut restarted = Airlock::start(&[
        ("AIRLOCK_DATABASE_URL", &url),
        ("AIRLOCK_MASTER_KEY", &new_key),
        ("AIRLOCK_ADMIN_TOKEN", ADMIN),
        ("AIRLOCK_ALLOW_PRIVATE_UPSTREAMS", "127.0.0.0/8"),
    ])
    .await;
    let local = restarted.post("/v1/devboxes", json!({"source_addresses": ["127.0.0.1"], "gateways": {"L": {"gateway": "local-gw", "secret": "CLI_KEY"}}})).await;
    let response = TestRequest::get(&format!("http://{}/x", restarted.proxy_addr))
        .bearer(local["environment"]["L"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.header("x-airlock-error").as_deref(),
        Some("upstream_unreachable"),
        "the re-bound gateway config must pass its check under the new key: {}",
        response.text()
    );
    let dbx = restarted.post("/v1/devboxes", json!({"source_addresses": ["127.0.0.1"], "gateways": {"E": {"gateway": "cli-gw", "secret": "CLI_KEY"}}})).await;
    assert!(dbx["environment"]["E"]
        .as_str()
        .unwrap()
        .starts_with("gws_"));
    let log = restarted
        .process
        .wait_for_log("data plane listening", Duration::from_secs(10))
        .await
        .unwrap();
    assert!(
        !log.contains("secret_unavailable") && !log.contains("cannot open"),
        "{log}"
    );
    restarted.process.kill();
    // Only the old key: the re-wrapped secret no longer opens, and the tools say so.
    let (ok, _, err) = cli(
        &["keys", "rewrap"],
        None,
        &[db[0], ("AIRLOCK_MASTER_KEY", old_key)],
    );
    assert!(!ok, "a retired key must not open re-wrapped secrets");
    assert!(err.contains("no master key with id"), "{err}");
    assert!(!err.contains("cli-sentinel-value"));
}

/// The whole loop through the real binary: a gateway config made from a preset with its own
/// model price, a request through the data plane to an OpenAI imitation, and the metered event
/// in `GET /v1/audit/requests`, `GET /v1/usage` and `airlock usage`.
#[tokio::test]
async fn a_metered_request_shows_in_usage() {
    use airlock_testkit::tls::{TestCa, ALPN_H2_HTTP11};
    use airlock_testkit::upstream::{self, RecordingUpstream, UpstreamOptions};

    let url = airlock_testkit::pg::shared()
        .await
        .fresh_database()
        .await
        .unwrap();
    let ca = TestCa::new();
    let ca_dir = tempfile::tempdir().unwrap();
    let ca_file = ca.write_pem(ca_dir.path());
    let openai = RecordingUpstream::start(
        UpstreamOptions::tls(ca.server_config(&["localhost"], ALPN_H2_HTTP11))
            .responder(upstream::openai_chat()),
    )
    .await
    .unwrap();
    let airlock = Airlock::start(&[
        ("AIRLOCK_DATABASE_URL", &url),
        (
            "AIRLOCK_MASTER_KEY",
            "q2Vx0JqL3m0l2m8r8y6Wb5XyZ0a1b2c3d4e5f6g7h8k=",
        ),
        ("AIRLOCK_ADMIN_TOKEN", ADMIN),
        ("AIRLOCK_UPSTREAM_CA_FILE", ca_file.to_str().unwrap()),
        ("AIRLOCK_ALLOW_PRIVATE_UPSTREAMS", "127.0.0.0/8"),
    ])
    .await;
    airlock
        .post(
            "/v1/secrets",
            json!({"name": "OPENAI_KEY", "value": "sk-usage-sentinel-1234"}),
        )
        .await;
    // $1 per million input tokens and $2 per million output tokens: the gateway's own price
    // wins over the bundled table, so the cost is known exactly.
    let gateway = airlock
        .post(
            "/v1/gateway-configs",
            json!({"name": "gpt", "provider": "openai",
                   "endpoint": format!("https://localhost:{}/v1", openai.addr().port()),
                   "models": [{"id": "gpt-4o-mini", "cost": {"input": 1, "output": 2}}]}),
        )
        .await;
    assert_eq!(gateway["api"], "openai-completions");
    let dbx = airlock
        .post(
            "/v1/devboxes",
            json!({"source_addresses": ["127.0.0.1"],
                   "gateways": {"OPENAI": {"gateway": "gpt", "secret": "OPENAI_KEY"}}}),
        )
        .await;
    let token = dbx["environment"]["OPENAI"].as_str().unwrap();
    let answer = TestRequest::post(&format!(
        "http://{}/chat/completions",
        airlock.proxy_addr
    ))
    .bearer(token)
    .json(&json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "count my tokens please"}]}))
    .send()
    .await
    .unwrap();
    assert_eq!(answer.status, 200, "{}", answer.text());
    let reply: serde_json::Value = answer.json().unwrap();

    // Events are written in batches: wait for this one.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let event = loop {
        let (_, listed) = airlock
            .call(http::Method::GET, "/v1/audit/requests", None)
            .await;
        if let Some(e) = listed["requests"].as_array().and_then(|r| r.first()) {
            break e.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no request event within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let input = reply["usage"]["prompt_tokens"].as_u64().unwrap();
    let output = reply["usage"]["completion_tokens"].as_u64().unwrap();
    assert!(input > 0 && output > 0, "{reply}");
    assert_eq!(event["provider"], "openai", "{event}");
    assert_eq!(event["model"], reply["model"], "{event}");
    assert_eq!(event["usage"]["input_tokens"], input, "{event}");
    assert_eq!(event["usage"]["output_tokens"], output, "{event}");
    assert_eq!(event["usage"]["exact"], true, "{event}");
    // input × 1000 + output × 2000 nano-dollars, as a decimal string of dollars.
    let nanos = input * 1_000 + output * 2_000;
    let cost = format!("0.{:09}", nanos).trim_end_matches('0').to_owned();
    assert_eq!(event["cost_usd"], cost.as_str(), "{event}");

    let (status, usage) = airlock
        .call(
            http::Method::GET,
            "/v1/usage?group_by=provider,model,gateway",
            None,
        )
        .await;
    assert_eq!(status, 200, "{usage}");
    assert_eq!(
        usage,
        json!({"usage": [{"provider": "openai", "model": reply["model"], "gateway_id": gateway["id"],
                          "requests": 1, "input_tokens": input, "output_tokens": output,
                          "cache_read_tokens": event["usage"]["cache_read_tokens"],
                          "cache_write_tokens": event["usage"]["cache_write_tokens"],
                          "reasoning_tokens": event["usage"]["reasoning_tokens"],
                          "cost_usd": cost, "unpriced_requests": 0}]})
    );
    let (ok, out, err) = run_cli(
        &airlock.api,
        &["usage", "--group-by", "model", "--since", "1h"],
        None,
        &[],
    );
    assert!(ok, "{err}");
    let row: Vec<&str> = out.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(row[0], reply["model"].as_str().unwrap(), "{out}");
    assert_eq!(row[1], "1", "{out}");
    assert_eq!(row[7], cost, "{out}");
}
