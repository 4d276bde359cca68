//! Requests the data plane refuses, and how: the status, the `x-airlock-error` code, the JSON
//! error body, and that nothing reached the upstream (SECURITY #5, #13, #15). Paths and limits
//! are in the attack suite (`tests/attacks/`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly by design.

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use airlock_core::{AuthMechanism, BearerSecret, SecretKind};
use airlock_testkit::TestRequest;
use support::{code, get, Harness, Options};

const SECRET: &str = "sk-live-real-upstream-key-0123456789";

fn header_key() -> AuthMechanism {
    AuthMechanism::Header {
        key: "x-api-key".into(),
    }
}

/// A token whose checksum is wrong: same shape, one character changed.
fn bad_checksum(token: &BearerSecret) -> String {
    let mut bytes = token.expose().as_bytes().to_vec();
    let last = bytes.len() - 1;
    bytes[last] = if bytes[last] == b'a' { b'b' } else { b'a' };
    String::from_utf8(bytes).unwrap()
}

/// Headers, path, status, code, and whether the source may be asked.
type Case<'a> = (Vec<(&'a str, &'a str)>, &'a str, u16, &'a str, bool);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_refusals() {
    let h = Harness::sqlite().await;
    let s = h.simple(header_key(), SECRET).await;
    let other = h.simple(header_key(), SECRET).await;
    let stranger = BearerSecret::generate(SecretKind::Gateway);
    let t = s.token.expose();
    let bad = bad_checksum(&s.token);
    let bearer = format!("Bearer {t}");
    let basic = format!("Basic {t}");
    let api_key = BearerSecret::generate(SecretKind::ApiKey);
    let lookups = || h.source.token_lookups.load(Ordering::SeqCst);
    let leaky_path = format!("/x?key={t}");

    let cases: Vec<Case<'_>> = vec![
        (vec![], "/x", 401, "missing_token", false),
        (
            vec![("authorization", "Bearer sk-not-ours")],
            "/x",
            401,
            "missing_token",
            false,
        ),
        (
            vec![("x-api-key", api_key.expose())],
            "/x",
            401,
            "missing_token",
            false,
        ),
        (
            vec![("x-api-key", &bad)],
            "/x",
            401,
            "malformed_token",
            false,
        ),
        (
            vec![("authorization", "Bearer gws_tooshort")],
            "/x",
            401,
            "malformed_token",
            false,
        ),
        (
            vec![("x-api-key", t), ("api-key", other.token.expose())],
            "/x",
            400,
            "conflicting_tokens",
            false,
        ),
        (
            vec![("authorization", &bearer), ("x-goog-api-key", &bad)],
            "/x",
            400,
            "conflicting_tokens",
            false,
        ),
        (
            vec![("authorization", &basic)],
            "/x",
            400,
            "misplaced_token",
            false,
        ),
        (
            vec![("x-api-key", t), ("x-note", t)],
            "/x",
            400,
            "misplaced_token",
            false,
        ),
        (
            vec![("x-api-key", t)],
            &leaky_path,
            400,
            "misplaced_token",
            false,
        ),
        (
            vec![("x-api-key", stranger.expose())],
            "/x",
            401,
            "unknown_token",
            true,
        ),
    ];
    for (headers, path, status, expected, may_look_up) in cases {
        let before = lookups();
        let mut req = TestRequest::get(&h.url(path));
        for (n, v) in &headers {
            req = req.header(n, v);
        }
        let response = req.send().await.unwrap();
        assert_eq!(response.status, status, "{expected}: {}", response.text());
        assert_eq!(code(&response), expected);
        let json = response.json().unwrap();
        assert_eq!(json["type"], "error");
        assert_eq!(json["error"]["code"], expected);
        assert!(json["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
        assert!(
            !response.text().contains("gws_"),
            "{expected}: the body names a token"
        );
        if !may_look_up {
            assert_eq!(lookups(), before, "{expected}: the source was asked");
        }
    }
    assert!(h.upstream.requests().is_empty());
    assert_eq!(h.upstream.connections(), 0);

    // The unknown token was looked up once; asking again is answered from the negative cache.
    let before = lookups();
    let again = TestRequest::get(&h.url("/x"))
        .header("x-api-key", stranger.expose())
        .send()
        .await
        .unwrap();
    assert_eq!(code(&again), "unknown_token");
    assert_eq!(lookups(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_addresses_bind_the_token() {
    let h = Harness::sqlite().await;
    let gateway = h
        .seed
        .gateway(&h.endpoint("/v1"), header_key(), Vec::new())
        .await;
    let secret = h.seed.secret("K", SECRET).await;
    let (_, only_3) = h.seed.devbox(&["127.0.0.3"], &[(&gateway, &secret)]).await;
    let (_, net) = h
        .seed
        .devbox(&["127.0.0.0/30", "::1"], &[(&gateway, &secret)])
        .await;
    let from = |token: &BearerSecret, ip: &str| {
        TestRequest::get(&h.url("/x"))
            .header("x-api-key", token.expose())
            .from_ip(ip.parse().unwrap())
    };
    for (token, ip, forwarded_for, status, expected) in [
        (&only_3, "127.0.0.3", None, 200, ""),
        (&only_3, "127.0.0.1", None, 403, "address_not_allowed"),
        (
            &only_3,
            "127.0.0.2",
            Some("127.0.0.3"),
            403,
            "address_not_allowed",
        ),
        (&net, "127.0.0.2", None, 200, ""),
        (&net, "127.0.0.5", None, 403, "address_not_allowed"),
    ] {
        let mut req = from(&token[0], ip);
        if let Some(xff) = forwarded_for {
            req = req
                .header("x-forwarded-for", xff)
                .header("forwarded", &format!("for={xff}"));
        }
        let response = req.send().await.unwrap();
        assert_eq!(response.status, status, "{ip}: {}", response.text());
        assert_eq!(code(&response), expected, "{ip}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_tokens_are_refused() {
    let h = Harness::sqlite().await;
    let gateway = h
        .seed
        .gateway(&h.endpoint("/v1"), header_key(), Vec::new())
        .await;
    let secret = h.seed.secret("K", SECRET).await;
    let expires = airlock_core::time::now_ms() + 1_000;
    let (_, tokens) = h
        .seed
        .devbox_expiring(&["127.0.0.1"], &[(&gateway, &secret)], Some(expires))
        .await;
    assert_eq!(get(&h, "/x", &tokens[0]).await.status, 200);
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let response = get(&h, "/x", &tokens[0]).await;
    assert_eq!(response.status, 401);
    assert_eq!(code(&response), "expired_token");
}

/// A data plane whose source is down at start is not ready, answers 503 `state_not_loaded`,
/// and becomes ready by itself when the source comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_down_at_start() {
    let h = Harness::start(
        support::sqlite().await,
        Options {
            fail_loads: true,
            ..Options::default()
        },
    )
    .await;
    let s = h.simple(header_key(), SECRET).await;
    assert!(!h.plane.ready());
    let response = get(&h, "/x", &s.token).await;
    assert_eq!(response.status, 503);
    assert_eq!(code(&response), "state_not_loaded");
    // Requests without a valid token are still answered as such.
    assert_eq!(
        code(&TestRequest::get(&h.url("/x")).send().await.unwrap()),
        "missing_token"
    );
    h.source.fail_loads.store(false, Ordering::SeqCst);
    let plane = h.plane.clone();
    assert!(
        Harness::eventually(Duration::from_secs(10), || {
            let plane = plane.clone();
            async move { plane.ready() }
        })
        .await
    );
    assert_eq!(get(&h, "/x", &s.token).await.status, 200);
    assert!(h.plane.token_count() >= 1);
}

/// A scoped token works for its methods and path prefixes only: anything else gets 403
/// `token_scope` and nothing reaches the upstream (SECURITY #31).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scoped_tokens_stay_in_scope() {
    let h = Harness::sqlite().await;
    let s = h.simple(header_key(), SECRET).await;
    let token = BearerSecret::generate(SecretKind::Gateway);
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
        scope: airlock_core::TokenScope::parse(
            &["POST".to_owned()],
            &["/v1/messages".to_owned(), "/v1/models/".to_owned()],
        )
        .unwrap(),
    };
    let audit = airlock_store::AuditRow {
        id: airlock_core::AuditId::generate().into_string(),
        time_ms: airlock_core::time::now_ms(),
        account_id: h.seed.account.clone(),
        api_key_id: None,
        action: "devbox.create_gateway_token".into(),
        object_type: "devbox".into(),
        object_id: s.devbox.id.as_str().into(),
        detail: "{}".into(),
        client_addr: None,
    };
    h.seed
        .store
        .insert_gateway_token(&row, &audit)
        .await
        .unwrap();
    let t = token.expose();
    for (method, path, status) in [
        (http::Method::POST, "/v1/messages", 200),
        (http::Method::POST, "/v1/messages/count_tokens", 200),
        (http::Method::POST, "/v1/models/x", 200),
        (http::Method::GET, "/v1/messages", 403),
        (http::Method::POST, "/v1/messagesx", 403),
        (http::Method::POST, "/v1/models", 403),
        (http::Method::POST, "/v1/files", 403),
    ] {
        h.upstream.clear();
        let r = TestRequest::new(method.clone(), &h.url(path))
            .header("x-api-key", t)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status.as_u16(), status, "{method} {path}: {}", r.text());
        if status == 403 {
            assert_eq!(code(&r), "token_scope", "{method} {path}");
            assert!(
                h.upstream.requests().is_empty(),
                "{method} {path} was forwarded"
            );
        }
    }
    // The devbox's unscoped token is not affected.
    assert_eq!(get(&h, "/v1/files", &s.token).await.status, 200);
}
