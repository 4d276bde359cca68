//! The operator console (`/ui/`) in a real browser, on PostgreSQL and on SQLite: Debian's
//! Chromium driven through chromedriver by `tests/python/console_browser.py` (selenium), against
//! the real binary, with the testkit's OpenAI imitation behind a gateway made in the console.
//! The script checks what the pages show; this file checks what the console changed, over the
//! API. Screenshots of every page land in `target/console-screenshots/<database>/`.
//!
//! Chromium and chromedriver must be installed: `scripts/test` installs them (Debian's
//! `chromium` and `chromium-driver`) when it runs as root; elsewhere this test fails saying so.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use airlock_testkit::upstream::{self, RecordingUpstream, UpstreamOptions};
use airlock_testkit::{check_python_output, run_python, workspace_root, TestRequest};
use airlock_tests::{Airlock, ADMIN};
use serde_json::Value;

/// The first of `names` found on PATH or in /usr/bin.
fn binary(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    names.iter().find_map(|name| {
        std::env::split_paths(&path)
            .chain([
                PathBuf::from("/usr/bin"),
                PathBuf::from("/usr/lib/chromium"),
            ])
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

fn browser() -> (PathBuf, PathBuf) {
    let chromium = binary(&["chromium", "chromium-browser"]);
    let driver = binary(&["chromedriver"]);
    match (chromium, driver) {
        (Some(c), Some(d)) => (c, d),
        _ => panic!(
            "the console test needs Chromium and chromedriver: run scripts/test as root (it \
             installs them) or `apt-get install chromium chromium-driver`"
        ),
    }
}

const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'";

/// Every `/ui` answer, signed in or not, a page, an asset, a redirect or a refusal, carries the
/// strict CSP and its companions; assets have their content types; without a session every
/// page but sign-in redirects there, and an API key in `Authorization` is no session.
async fn check_headers(airlock: &Airlock) {
    let cases: [(&str, u16, &str); 9] = [
        ("/ui/sign-in", 200, "text/html; charset=utf-8"),
        ("/ui/", 303, ""),
        ("/ui", 303, ""),
        ("/ui/audit", 303, ""),
        ("/ui/data/usage?by=model&metric=cost", 303, ""),
        (
            "/ui/assets/console.js",
            200,
            "text/javascript; charset=utf-8",
        ),
        (
            "/ui/assets/uPlot.iife.min.js",
            200,
            "text/javascript; charset=utf-8",
        ),
        ("/ui/assets/console.css", 200, "text/css; charset=utf-8"),
        ("/ui/assets/nope.js", 404, "text/html; charset=utf-8"),
    ];
    for (path, status, content_type) in cases {
        let resp = TestRequest::get(&format!("{}{path}", airlock.api))
            .bearer(ADMIN)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status.as_u16(), status, "{path}");
        assert_eq!(
            resp.header("content-security-policy").as_deref(),
            Some(CSP),
            "{path}"
        );
        assert_eq!(
            resp.header("x-content-type-options").as_deref(),
            Some("nosniff"),
            "{path}"
        );
        assert_eq!(
            resp.header("referrer-policy").as_deref(),
            Some("no-referrer"),
            "{path}"
        );
        if status == 303 {
            let to = resp.header("location").unwrap();
            assert!(to == "/ui/sign-in" || to == "/ui/", "{path}: {to}");
        } else {
            assert_eq!(
                resp.header("content-type").as_deref(),
                Some(content_type),
                "{path}"
            );
        }
    }
    // The sign-in form is refused from another site, and a wrong key sets no cookie.
    let post = |site: &'static str| {
        TestRequest::post(&format!("{}/ui/sign-in", airlock.api))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("sec-fetch-site", site)
            .body(format!("api_key={ADMIN}"))
    };
    let resp = post("cross-site").send().await.unwrap();
    assert_eq!(resp.status.as_u16(), 403);
    assert!(resp.header("set-cookie").is_none());
    let resp = post("same-origin").send().await.unwrap();
    assert_eq!(resp.status.as_u16(), 303);
    let cookie = resp.header("set-cookie").unwrap();
    for part in ["HttpOnly", "SameSite=Strict", "Path=/ui", "Max-Age=43200"] {
        assert!(cookie.contains(part), "{cookie}");
    }
    assert!(
        !cookie.contains("Secure") && !cookie.contains(ADMIN),
        "{cookie}"
    );
}

async fn console(database: &str, database_url: &str) {
    let (chromium, chromedriver) = browser();
    let openai =
        RecordingUpstream::start(UpstreamOptions::plain().responder(upstream::openai_chat()))
            .await
            .unwrap();
    let airlock = Airlock::start_on(database_url, &[]).await;
    check_headers(&airlock).await;
    let shots = workspace_root()
        .join("target/console-screenshots")
        .join(database);
    std::fs::create_dir_all(&shots).unwrap();
    let env = [
        ("AIRLOCK_API", airlock.api.clone()),
        ("AIRLOCK_ADMIN_TOKEN", ADMIN.to_owned()),
        ("UPSTREAM_URL", openai.url()),
        ("SCREENSHOTS", shots.display().to_string()),
        ("CHROMIUM", chromium.display().to_string()),
        ("CHROMEDRIVER", chromedriver.display().to_string()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let out = run_python(
        &workspace_root().join("tests/python/console_browser.py"),
        &env,
    )
    .await
    .unwrap();
    let stdout = check_python_output(&out).unwrap();
    let seen: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();

    // What the pages showed.
    assert_eq!(seen["xss_gateway_shown"], true);
    assert_eq!(seen["secret_version"], "2", "{seen}");
    assert_eq!(seen["devbox_status"], "shutdown", "{seen}");
    assert_eq!(
        seen["overview_request"].as_array().map(Vec::len),
        Some(1),
        "{seen}"
    );
    assert!(
        seen["live_backends"].as_str().unwrap().contains("yes"),
        "{seen}"
    );
    for (case, want) in [
        ("missing", 403),
        ("wrong", 403),
        ("cross_origin", 403),
        ("fetch_without_token", 403),
        ("with_token", 303),
    ] {
        assert_eq!(seen["csrf"][case], want, "{case}: {seen}");
    }
    // A forged cookie is sent to sign-in, as no cookie is.
    assert_eq!(seen["forged_cookie"], 303, "{seen}");
    assert_eq!(seen["after_sign_out"], "/ui/sign-in");
    assert_eq!(seen["launcher_buttons"], 0, "{seen}");
    assert_eq!(seen["launcher_secrets"], true, "{seen}");
    assert_eq!(seen["after_revoke"], "/ui/sign-in");
    for (page, sizes) in seen["phone_widths"].as_object().unwrap() {
        let (scroll, inner) = (sizes[0].as_i64().unwrap(), sizes[1].as_i64().unwrap());
        assert!(
            scroll <= inner,
            "{page} is wider than a phone: {scroll} > {inner}"
        );
    }

    // What the console changed, as the API sees it.
    let get = |path: String| {
        let airlock = &airlock;
        async move {
            let (status, body) = airlock.call(http::Method::GET, &path, None).await;
            assert_eq!(status, 200, "{path}: {body}");
            body
        }
    };
    let secret = get("/v1/secrets/OPENAI_KEY".into()).await;
    assert_eq!(secret["version"], 2, "{secret}");
    let box_id = seen["console_box"].as_str().unwrap();
    let devbox = get(format!("/v1/devboxes/{box_id}")).await;
    assert_eq!(devbox["status"], "shutdown");
    assert_eq!(
        devbox["metadata"]["note"],
        "<img src=x onerror=\"alert(2);document.title='pwned'\">"
    );
    let secrets = get("/v1/secrets?limit=100".into()).await;
    let names: Vec<&str> = secrets["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"CSRF_OK"), "{names:?}");
    for refused in ["CSRF_MISSING", "CSRF_WRONG", "CSRF_ORIGIN", "CSRF_FETCH"] {
        assert!(
            !names.contains(&refused),
            "{refused} was created: {names:?}"
        );
    }
    // The console's changes are in the audit trail under the signed-in key, like the API's.
    let events = get("/v1/audit/events?action=devbox.shutdown".into()).await;
    let event = &events["events"][0];
    assert_eq!(event["object_id"], box_id, "{events}");
    assert!(event["api_key_id"].as_str().unwrap().starts_with("key_"));
    for page in [
        "overview", "secrets", "devboxes", "usage", "audit", "router", "gateways",
    ] {
        for width in [1280, 390] {
            let file = shots.join(format!("{page}-{width}.png"));
            assert!(file.is_file(), "no screenshot {}", file.display());
        }
    }
}

#[tokio::test]
async fn console_on_postgres() {
    let url = airlock_testkit::pg::shared()
        .await
        .fresh_database()
        .await
        .unwrap();
    console("postgres", &url).await;
}

#[tokio::test]
async fn console_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("airlock.db").display());
    console("sqlite", &url).await;
}
