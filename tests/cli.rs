//! The admin CLI through the real binary against a real control plane: every noun, the output
//! formats (`-o table|json|id|env`), exit codes, names where people think in names, `--url` and
//! `--token` beside the environment, an `https://` control plane with `--ca-cert`, and the token
//! lifecycle as an operator sees it (list, revoke, and refusals attributed in the audit trail).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use airlock_testkit::tls::TestCa;
use airlock_testkit::{airlock_binary, TestRequest};
use airlock_tests::{Airlock, ADMIN};
use serde_json::Value;

/// What a CLI run did: its exit code, standard output and standard error.
struct Run {
    code: i32,
    out: String,
    err: String,
}

impl Run {
    fn ok(&self) -> &str {
        assert_eq!(self.code, 0, "stdout: {}\nstderr: {}", self.out, self.err);
        &self.out
    }

    fn json(&self) -> Value {
        serde_json::from_str(self.ok()).unwrap_or_else(|e| panic!("{e}: {}", self.out))
    }

    fn failed(&self, code: i32, message: &str) {
        assert_eq!(
            self.code, code,
            "stdout: {}\nstderr: {}",
            self.out, self.err
        );
        assert!(
            self.err.contains(message),
            "{message:?} not in {}",
            self.err
        );
    }
}

/// Runs the binary with only `env` (and PATH) in its environment.
fn run(args: &[&str], stdin: Option<&str>, env: &[(&str, &str)]) -> Run {
    let mut cmd = std::process::Command::new(airlock_binary());
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    for (k, v) in env {
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
    Run {
        code: out.status.code().unwrap_or(-1),
        out: String::from_utf8_lossy(&out.stdout).into_owned(),
        err: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

async fn sqlite_airlock(dir: &std::path::Path) -> Airlock {
    let db = format!("sqlite://{}/airlock.db", dir.display());
    Airlock::start(&[
        ("AIRLOCK_DATABASE_URL", &db),
        (
            "AIRLOCK_MASTER_KEY",
            "q2Vx0JqL3m0l2m8r8y6Wb5XyZ0a1b2c3d4e5f6g7h8k=",
        ),
        ("AIRLOCK_ADMIN_TOKEN", ADMIN),
        ("AIRLOCK_ALLOW_PRIVATE_UPSTREAMS", "127.0.0.0/8"),
    ])
    .await
}

#[test]
fn help_says_what_airlock_is() {
    let help = run(&["--help"], None, &[]);
    assert!(
        help.ok()
            .starts_with("Airlock: a credential-isolating gateway for AI agents"),
        "{}",
        help.out
    );
    assert!(help.out.contains("Exit codes"), "{}", help.out);
    let sub = run(&["devbox", "register", "--help"], None, &[]);
    assert!(sub.ok().contains("Example"), "{}", sub.out);
    // A wrong command line is a usage error: 2.
    run(&["devbox", "frobnicate"], None, &[]).failed(2, "frobnicate");
    run(&["secret", "list", "-o", "yaml"], None, &[]).failed(2, "yaml");
}

#[tokio::test]
async fn every_noun_with_names_formats_and_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let airlock = sqlite_airlock(dir.path()).await;
    let env = [
        ("AIRLOCK_URL", airlock.api.as_str()),
        ("AIRLOCK_TOKEN", ADMIN),
    ];
    let cli = |args: &[&str]| run(args, None, &env);

    // Secrets: create from standard input, a second create of the name is a conflict (4).
    let secret = run(
        &["secret", "create", "CLI_KEY", "-o", "json"],
        Some("cli-sentinel-value\n"),
        &env,
    )
    .json();
    assert!(secret["id"].as_str().unwrap().starts_with("sec_"));
    run(&["secret", "create", "CLI_KEY"], Some("x\n"), &env).failed(4, "already exists");
    let listed = cli(&["secret", "list", "-o", "id"]);
    assert_eq!(listed.ok().trim(), secret["id"].as_str().unwrap());
    let rotated = run(
        &["secret", "rotate", "CLI_KEY", "-o", "json"],
        Some("cli-sentinel-value-2"),
        &env,
    )
    .json();
    assert!(rotated["update_time_ms"].as_i64() >= rotated["create_time_ms"].as_i64());
    let shown = cli(&["secret", "get", "CLI_KEY"]);
    assert!(shown.ok().contains("CLI_KEY"), "{}", shown.out);
    assert!(!shown.out.contains("cli-sentinel"), "{}", shown.out);
    cli(&["secret", "get", "NOPE"]).failed(3, "404");
    cli(&["secret", "list", "-o", "env"]).failed(2, "-o env");

    // Gateways by name; a reused name warns and then means the newest.
    let first = cli(&[
        "gateway",
        "create",
        "--name",
        "gw",
        "--endpoint",
        "https://api.example.com/v1",
        "-o",
        "id",
    ]);
    let first_id = first.ok().trim().to_owned();
    assert!(first_id.starts_with("gwc_"), "{first_id}");
    assert!(!first.err.contains("warning"), "{}", first.err);
    let second = cli(&[
        "gateway",
        "create",
        "--name",
        "gw",
        "--endpoint",
        "https://api2.example.com",
        "--auth",
        "header:x-api-key",
        "-o",
        "id",
    ]);
    let second_id = second.ok().trim().to_owned();
    assert!(
        second.err.contains("warning") && second.err.contains(&first_id),
        "{}",
        second.err
    );
    let got = cli(&["gateway", "get", "gw", "-o", "json"]).json();
    assert_eq!(got["id"], second_id.as_str());
    let table = cli(&["gateway", "get", &first_id]);
    assert!(
        table
            .ok()
            .lines()
            .any(|l| l.starts_with("endpoint") && l.ends_with("https://api.example.com/v1")),
        "{}",
        table.out
    );
    let updated = cli(&[
        "gateway",
        "update",
        &first_id,
        "--description",
        "the first",
        "-o",
        "json",
    ])
    .json();
    assert_eq!(updated["description"], "the first");
    cli(&["gateway", "update", &first_id]).failed(2, "nothing to change");
    cli(&["gateway", "get", "no-such-gateway"]).failed(3, "no gateway config is named");
    let list = cli(&["gateway", "list"]);
    let lines: Vec<&str> = list.ok().lines().collect();
    assert!(
        lines[0].starts_with("ID ") && lines.len() == 3,
        "{}",
        list.out
    );
    cli(&[
        "gateway",
        "create",
        "--name",
        "bad",
        "--endpoint",
        "ftp://x",
    ])
    .failed(2, "endpoint");

    // Devboxes: register for a launcher script (-o json: id, tokens, environment), by name.
    let registered = cli(&[
        "devbox",
        "register",
        "--name",
        "box",
        "--source",
        "127.0.0.1",
        "--gateway",
        &format!("E={first_id}:CLI_KEY"),
        "--metadata",
        "team=a",
        "-o",
        "json",
    ])
    .json();
    let id = registered["id"].as_str().unwrap().to_owned();
    assert!(registered["environment"]["E"]
        .as_str()
        .unwrap()
        .starts_with("gws_"));
    assert!(registered["environment"]["E_URL"]
        .as_str()
        .unwrap()
        .starts_with("http://"));
    assert_eq!(registered["metadata"]["team"], "a");
    assert_eq!(cli(&["devbox", "get", "box", "-o", "id"]).ok().trim(), id);
    assert!(cli(&["devbox", "list", "-o", "id"]).ok().contains(&id));
    let moved = cli(&[
        "devbox",
        "update",
        "box",
        "--source",
        "127.0.0.1",
        "--source",
        "10.9.0.0/16",
        "-o",
        "json",
    ])
    .json();
    assert_eq!(
        moved["source_addresses"],
        serde_json::json!(["127.0.0.1", "10.9.0.0/16"])
    );
    let minted = cli(&[
        "devbox",
        "mint-token",
        "box",
        "--gateway",
        "gw",
        "--secret",
        "CLI_KEY",
        "--prefix",
        "MORE",
        "-o",
        "env",
    ]);
    let lines: Vec<&str> = minted.ok().lines().collect();
    assert!(
        lines.iter().any(|l| l.starts_with("export MORE=gws_"))
            && lines
                .iter()
                .any(|l| l.starts_with("export MORE_URL=http://")),
        "{}",
        minted.out
    );
    cli(&[
        "devbox",
        "mint-token",
        "box",
        "--gateway",
        "gw",
        "--secret",
        "CLI_KEY",
        "-o",
        "env",
    ])
    .failed(2, "--prefix");
    let tokens = cli(&["devbox", "tokens", "box", "-o", "json"]).json();
    assert_eq!(tokens["gateway_tokens"].as_array().unwrap().len(), 2);
    let table = cli(&["devbox", "tokens", &id]);
    assert!(table.ok().starts_with("ID "), "{}", table.out);

    // A second running devbox of the same name: the name is ambiguous (4), ids still work.
    let other = cli(&[
        "devbox", "register", "--name", "box", "--source", "10.0.0.1", "-o", "id",
    ]);
    let other_id = other.ok().trim().to_owned();
    cli(&["devbox", "shutdown", "box"]).failed(4, "give an id");
    let down = cli(&["devbox", "shutdown", &other_id, "-o", "json"]).json();
    assert_eq!(down["status"], "shutdown");
    // Only one running "box" is left: the name means it again.
    assert_eq!(cli(&["devbox", "get", "box", "-o", "id"]).ok().trim(), id);
    cli(&["devbox", "get", "nobody"]).failed(3, "no devbox is named");
    cli(&["devbox", "get", "dbx_01h8xg3r5y3vq6z8k9m2n4p6r8"]).failed(3, "404");

    // The default for register is the sandbox's environment, and the id goes to stderr.
    let env_lines = cli(&[
        "devbox",
        "register",
        "--source",
        "10.0.0.2",
        "--gateway",
        "E=gw:CLI_KEY",
    ]);
    assert!(
        env_lines.ok().contains("export E=gws_"),
        "{}",
        env_lines.out
    );
    assert!(
        env_lines.err.contains("registered devbox dbx_"),
        "{}",
        env_lines.err
    );

    // API keys: create (shown once), list, revoke; a revoked key is refused (5).
    let key = cli(&[
        "api-key", "create", "--name", "ci", "--scope", "launcher", "-o", "json",
    ])
    .json();
    let key_id = key["id"].as_str().unwrap().to_owned();
    let secret_key = key["key"].as_str().unwrap().to_owned();
    assert!(cli(&["api-key", "list", "-o", "id"]).ok().contains(&key_id));
    let as_launcher = run(
        &["devbox", "list", "--token", &secret_key, "-o", "id"],
        None,
        &[("AIRLOCK_URL", airlock.api.as_str())],
    );
    assert!(as_launcher.ok().contains(&id), "{}", as_launcher.out);
    cli(&["api-key", "revoke", &key_id]).ok();
    run(
        &["devbox", "list", "--token", &secret_key],
        None,
        &[("AIRLOCK_URL", airlock.api.as_str())],
    )
    .failed(5, "401");
    run(
        &["secret", "list"],
        None,
        &[("AIRLOCK_URL", airlock.api.as_str())],
    )
    .failed(2, "AIRLOCK_TOKEN");
    // --url beats the environment; an unreachable control plane is a plain error (1).
    let closed = airlock_testkit::free_port();
    run(
        &["secret", "list", "--url", &airlock.api],
        None,
        &[
            ("AIRLOCK_URL", &format!("http://127.0.0.1:{closed}")),
            ("AIRLOCK_TOKEN", ADMIN),
        ],
    )
    .ok();
    cli(&[
        "secret",
        "list",
        "--url",
        &format!("http://127.0.0.1:{closed}"),
    ])
    .failed(1, "cannot reach");

    // Accounts (this key is the operator's) and the audit trail with filters.
    let accounts = cli(&["account", "list", "-o", "json"]).json();
    assert!(!accounts["accounts"].as_array().unwrap().is_empty());
    let team = cli(&["account", "create", "--name", "team-b", "-o", "json"]).json();
    assert!(team["api_key"]["key"].as_str().is_some());
    let events = cli(&[
        "audit",
        "events",
        "--action",
        "devbox.shutdown",
        "--since",
        "1h",
        "-o",
        "json",
    ])
    .json();
    let events = events["events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["object_id"], other_id.as_str());
    let table = cli(&["audit", "events", "--object", &id]);
    assert!(table.ok().contains("devbox.register"), "{}", table.out);
    let requests = cli(&["audit", "requests", "-o", "json"]).json();
    assert!(requests["requests"].as_array().is_some());
    cli(&["audit", "requests", "--since", "soon"]).failed(2, "--since soon");

    // Deleting a gateway a running devbox uses is refused; an unused one goes, by name.
    cli(&["gateway", "delete", &first_id]).failed(2, "in use");
    let spare = cli(&[
        "gateway",
        "create",
        "--name",
        "spare",
        "--endpoint",
        "https://x.example",
        "-o",
        "id",
    ]);
    let spare = spare.ok().trim().to_owned();
    let deleted = cli(&["gateway", "delete", "spare", "-o", "id"]);
    assert_eq!(deleted.ok().trim(), spare);
    cli(&["gateway", "get", &spare]).failed(3, "404");
    // `health` probes the operations listener by default, whatever AIRLOCK_URL says.
    let ops_addr = airlock.ops.trim_start_matches("http://").to_owned();
    let probed = run(
        &["health"],
        None,
        &[
            ("AIRLOCK_METRICS_ADDR", &ops_addr),
            ("AIRLOCK_URL", &airlock.api),
        ],
    );
    assert!(probed.ok().contains("/readyz: 200"), "{}", probed.out);
    run(&["health", &format!("{}/nope", airlock.api)], None, &[]).failed(1, "404");

    let log = airlock.process.log();
    assert!(!log.contains("cli-sentinel-value"));
}

/// An `https://` control plane: trusted with `--ca-cert` (or AIRLOCK_CA_CERT), refused without.
#[tokio::test]
async fn https_control_plane_with_a_ca_cert() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    let ca_file = ca.write_pem(dir.path());
    let (cert, key) = ca.issue_pem(&["localhost", "127.0.0.1"]);
    let cert_file = dir.path().join("api-cert.pem");
    let key_file = dir.path().join("api-key.pem");
    std::fs::write(&cert_file, cert).unwrap();
    std::fs::write(&key_file, key).unwrap();
    let db = format!("sqlite://{}/airlock.db", dir.path().display());
    let airlock = Airlock::start_with(
        &[
            ("AIRLOCK_DATABASE_URL", &db),
            (
                "AIRLOCK_MASTER_KEY",
                "q2Vx0JqL3m0l2m8r8y6Wb5XyZ0a1b2c3d4e5f6g7h8k=",
            ),
            ("AIRLOCK_ADMIN_TOKEN", ADMIN),
            ("AIRLOCK_API_TLS_CERT_FILE", cert_file.to_str().unwrap()),
            ("AIRLOCK_API_TLS_KEY_FILE", key_file.to_str().unwrap()),
        ],
        Some(ca.client_config()),
    )
    .await;
    assert!(airlock.api.starts_with("https://localhost:"));
    let env = [
        ("AIRLOCK_URL", airlock.api.as_str()),
        ("AIRLOCK_TOKEN", ADMIN),
    ];
    let created = run(
        &[
            "secret",
            "create",
            "TLS_KEY",
            "--ca-cert",
            ca_file.to_str().unwrap(),
            "-o",
            "json",
        ],
        Some("v"),
        &env,
    )
    .json();
    assert_eq!(created["name"], "TLS_KEY");
    let mut with_env = env.to_vec();
    with_env.push(("AIRLOCK_CA_CERT", ca_file.to_str().unwrap()));
    assert!(run(&["secret", "list", "-o", "id"], None, &with_env)
        .ok()
        .starts_with("sec_"));
    // Without the CA the certificate is not trusted, and nothing is sent.
    let refused = run(&["secret", "list"], None, &env);
    refused.failed(1, "cannot reach");
    assert!(
        refused.err.to_lowercase().contains("certificate"),
        "{}",
        refused.err
    );
}

/// A devbox's tokens from the CLI: one revoked (the devbox and its other token keep working),
/// then the devbox shut down. Requests with the revoked or shut-down tokens are refused and
/// appear in `/v1/audit/requests` attributed to the account, devbox, gateway and token id.
#[tokio::test]
async fn refusals_after_revocation_are_attributed() {
    let dir = tempfile::tempdir().unwrap();
    let airlock = sqlite_airlock(dir.path()).await;
    let env = [
        ("AIRLOCK_URL", airlock.api.as_str()),
        ("AIRLOCK_TOKEN", ADMIN),
    ];
    let cli = |args: &[&str]| run(args, None, &env);
    run(&["secret", "create", "K"], Some("v"), &env).ok();
    // An upstream nobody listens on: accepted requests fail at the dial, refused ones earlier.
    let closed = airlock_testkit::free_port();
    let gw = cli(&[
        "gateway",
        "create",
        "--name",
        "local",
        "--endpoint",
        &format!("http://127.0.0.1:{closed}"),
        "-o",
        "id",
    ]);
    let gw = gw.ok().trim().to_owned();
    let dbx = cli(&[
        "devbox",
        "register",
        "--name",
        "agent",
        "--source",
        "127.0.0.1",
        "--gateway",
        "A=local:K",
        "--gateway",
        "B=local:K",
        "-o",
        "json",
    ])
    .json();
    let devbox = dbx["id"].as_str().unwrap().to_owned();
    let (a, b) = (
        dbx["environment"]["A"].as_str().unwrap().to_owned(),
        dbx["environment"]["B"].as_str().unwrap().to_owned(),
    );
    let send = |token: String| {
        let url = format!("http://{}/v1/x", airlock.proxy_addr);
        async move {
            TestRequest::get(&url)
                .bearer(&token)
                .send()
                .await
                .unwrap()
                .header("x-airlock-error")
                .unwrap_or_default()
        }
    };
    // Both tokens are known to the data plane.
    assert_eq!(send(a.clone()).await, "upstream_unreachable");
    assert_eq!(send(b.clone()).await, "upstream_unreachable");
    let tokens = cli(&["devbox", "tokens", "agent", "-o", "json"]).json();
    let token_a = tokens["gateway_tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["prefix"] == "A")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let revoked = cli(&["devbox", "revoke-token", "agent", &token_a, "-o", "json"]).json();
    assert_eq!(revoked["status"], "revoked");
    // The revocation reaches the data plane through the change feed.
    let mut code = String::new();
    for _ in 0..100 {
        code = send(a.clone()).await;
        if code == "revoked_token" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(code, "revoked_token");
    assert_eq!(send(b.clone()).await, "upstream_unreachable");
    let listed = cli(&["devbox", "tokens", "agent"]);
    assert!(listed.ok().contains("revoked") && listed.out.contains("active"));

    cli(&["devbox", "shutdown", "agent"]).ok();
    for _ in 0..100 {
        code = send(b.clone()).await;
        if code == "devbox_shutdown" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(code, "devbox_shutdown");
    assert_eq!(send(a.clone()).await, "revoked_token");

    // The audit trail is written in batches: wait for the last refusal's event.
    let count =
        |events: &[Value], code: &str| events.iter().filter(|e| e["error_code"] == code).count();
    let mut events = Vec::new();
    for _ in 0..100 {
        let listed = cli(&["audit", "requests", "--devbox", &devbox, "-o", "json"]).json();
        events = listed["requests"].as_array().unwrap().clone();
        if count(&events, "revoked_token") >= 2 && count(&events, "devbox_shutdown") >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let refused: Vec<(&str, &str)> = events
        .iter()
        .filter(|e| e["error_code"] != "upstream_unreachable")
        .map(|e| {
            assert_eq!(e["devbox_id"], devbox.as_str(), "{e}");
            assert_eq!(e["gateway_config_id"], gw.as_str(), "{e}");
            assert!(e["account_id"].as_str().unwrap().starts_with("acc_"), "{e}");
            (
                e["error_code"].as_str().unwrap(),
                e["token_id"].as_str().unwrap(),
            )
        })
        .collect();
    assert!(count(&events, "revoked_token") >= 2, "{events:?}");
    assert!(count(&events, "devbox_shutdown") >= 1, "{events:?}");
    assert!(
        refused
            .iter()
            .all(|(c, t)| *c == "devbox_shutdown" || (*c == "revoked_token" && *t == token_a)),
        "{refused:?}"
    );
    for token in [&a, &b] {
        assert!(!events
            .iter()
            .any(|e| e.to_string().contains(token.as_str())));
    }
}

/// Token listing and revocation across replicas on Postgres: a control plane and two proxy-only
/// data planes. One revoked token stops on both within the feed's delay while its sibling keeps
/// working, and both replicas' refusals are attributed in the shared audit trail.
#[tokio::test]
async fn revocation_reaches_two_replicas_on_postgres() {
    let url = airlock_testkit::pg::shared()
        .await
        .fresh_database()
        .await
        .unwrap();
    let common = [
        ("AIRLOCK_DATABASE_URL", url.as_str()),
        (
            "AIRLOCK_MASTER_KEY",
            "q2Vx0JqL3m0l2m8r8y6Wb5XyZ0a1b2c3d4e5f6g7h8k=",
        ),
        ("AIRLOCK_ADMIN_TOKEN", ADMIN),
        ("AIRLOCK_ALLOW_PRIVATE_UPSTREAMS", "127.0.0.0/8"),
    ];
    let control =
        Airlock::start(&[common.as_slice(), &[("AIRLOCK_ROLE", "control")]].concat()).await;
    let a = Airlock::start(&[common.as_slice(), &[("AIRLOCK_ROLE", "proxy")]].concat()).await;
    let b = Airlock::start(&[common.as_slice(), &[("AIRLOCK_ROLE", "proxy")]].concat()).await;
    let env = [
        ("AIRLOCK_URL", control.api.as_str()),
        ("AIRLOCK_TOKEN", ADMIN),
    ];
    let cli = |args: &[&str]| run(args, None, &env);
    run(&["secret", "create", "K"], Some("v"), &env).ok();
    let closed = airlock_testkit::free_port();
    cli(&[
        "gateway",
        "create",
        "--name",
        "local",
        "--endpoint",
        &format!("http://127.0.0.1:{closed}"),
    ])
    .ok();
    let dbx = cli(&[
        "devbox",
        "register",
        "--name",
        "agent",
        "--source",
        "127.0.0.1",
        "--gateway",
        "A=local:K",
        "--gateway",
        "B=local:K",
        "-o",
        "json",
    ])
    .json();
    let devbox = dbx["id"].as_str().unwrap().to_owned();
    let token = |p: &str| dbx["environment"][p].as_str().unwrap().to_owned();
    let code = |replica: &Airlock, token: String| {
        let url = format!("http://{}/v1/x", replica.proxy_addr);
        async move {
            TestRequest::get(&url)
                .bearer(&token)
                .send()
                .await
                .unwrap()
                .header("x-airlock-error")
                .unwrap_or_default()
        }
    };
    // Wait until both replicas know both tokens (the feed, or a load on first use).
    for replica in [&a, &b] {
        for p in ["A", "B"] {
            let mut seen = String::new();
            for _ in 0..100 {
                seen = code(replica, token(p)).await;
                if seen == "upstream_unreachable" {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            assert_eq!(seen, "upstream_unreachable");
        }
    }
    let tokens = cli(&["devbox", "tokens", "agent", "-o", "json"]).json();
    let token_a = tokens["gateway_tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["prefix"] == "A")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    cli(&["devbox", "revoke-token", "agent", &token_a]).ok();
    for replica in [&a, &b] {
        let mut seen = String::new();
        for _ in 0..100 {
            seen = code(replica, token("A")).await;
            if seen == "revoked_token" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(seen, "revoked_token");
        assert_eq!(code(replica, token("B")).await, "upstream_unreachable");
    }
    let listed = cli(&["devbox", "tokens", "agent", "-o", "json"]).json();
    let statuses: Vec<&str> = listed["gateway_tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == "revoked").count(),
        1,
        "{listed}"
    );
    // Both replicas' refusals, attributed to the account, devbox and token.
    let mut revoked = Vec::new();
    for _ in 0..100 {
        let listed = cli(&["audit", "requests", "--devbox", &devbox, "-o", "json"]).json();
        revoked = listed["requests"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["error_code"] == "revoked_token")
            .cloned()
            .collect();
        if revoked.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(revoked.len() >= 2, "{revoked:?}");
    for e in &revoked {
        assert_eq!(e["token_id"], token_a.as_str(), "{e}");
        assert!(e["account_id"].as_str().unwrap().starts_with("acc_"), "{e}");
    }
}
