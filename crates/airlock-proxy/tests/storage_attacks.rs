//! Someone who can write to the database (SECURITY threat 3, rows #17 and #19): ciphertexts
//! swapped, copied or altered, rows moved to another account, and a gateway config repointed at
//! the attacker's host, its credential placement or headers changed, or its binding copied or
//! removed. Each change is made in SQL behind the store's back, on SQLite and on Postgres; the
//! data plane picks it up on its next resync and refuses the token, with a code that says why
//! in the response and in the audit row, and nothing reaches the upstream or the attacker.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly by design.

mod support;

use std::time::Duration;

use airlock_core::AuthMechanism;
use airlock_testkit::Sinkhole;
use support::{code, get, Db, Harness, Options, Seed};

const SECRET: &str = "sk-live-storage-attack-key-5e6f7a";

fn header_key() -> AuthMechanism {
    AuthMechanism::Header {
        key: "x-api-key".into(),
    }
}

async fn harness(db: Db) -> Harness {
    Harness::start(
        db,
        Options {
            // Raw SQL sends no change notification; the periodic resync finds it.
            configure: Box::new(|c| c.resync_interval = Duration::from_millis(200)),
            ..Options::default()
        },
    )
    .await
}

/// Waits until the token's requests get `expected`, and checks that nothing went upstream.
async fn refused(h: &Harness, token: &airlock_core::BearerSecret, expected: &str, what: &str) {
    let got = Harness::eventually(Duration::from_secs(5), || async {
        code(&get(h, "/x", token).await) == expected
    })
    .await;
    // Requests sent before the resync went through; from here on nothing may.
    h.upstream.clear();
    let last = get(h, "/x", token).await;
    assert!(
        got,
        "{what}: expected {expected}, got {} {}",
        last.status,
        last.text()
    );
    assert_eq!(code(&last), expected, "{what}");
    assert!(last.status.is_server_error(), "{what}");
    assert!(!last.text().contains(SECRET), "{what}");
    assert!(
        h.upstream.requests().is_empty(),
        "{what}: the upstream got a request"
    );
    assert_eq!(h.upstream.connections(), 0, "{what}");
}

async fn works(h: &Harness, token: &airlock_core::BearerSecret, what: &str) {
    let ok = Harness::eventually(Duration::from_secs(5), || async {
        get(h, "/x", token).await.status == 200
    })
    .await;
    assert!(ok, "{what}: the restored row does not work again");
}

async fn storage_attacks(db: Db) {
    let h = harness(db).await;
    let evil = Sinkhole::start().await.unwrap();
    let a = h.simple(header_key(), SECRET).await;
    let b = h.simple(header_key(), "sk-the-other-secret").await;
    assert_eq!(get(&h, "/x", &a.token).await.status, 200);
    let (ga, sa) = (a.gateway.id.as_str(), a.secret.id.as_str());
    let (gb, sb) = (b.gateway.id.as_str(), b.secret.id.as_str());
    let other = Seed::new(h.seed.store.clone(), h.seed.keyring.clone()).await;
    let acc = h.seed.account.as_str().to_owned();
    let acc_b = other.account.as_str().to_owned();
    let e = evil.addr().port();
    let db = &h.db;

    // The gateway config: every bound field, changed alone, and the binding itself.
    let gateway_attacks: Vec<(&str, String)> = vec![
        ("endpoint repointed to the attacker", format!("UPDATE gateway_configs SET endpoint = 'https://localhost:{e}/v1' WHERE id = '{ga}'")),
        ("endpoint repointed over plain http", format!("UPDATE gateway_configs SET endpoint = 'http://127.0.0.1:{e}' WHERE id = '{ga}'")),
        ("base path changed", format!("UPDATE gateway_configs SET endpoint = endpoint || '/admin' WHERE id = '{ga}'")),
        ("credential header renamed", format!("UPDATE gateway_configs SET auth_key = 'x-leak' WHERE id = '{ga}'")),
        ("auth mechanism changed", format!("UPDATE gateway_configs SET auth_type = 'bearer', auth_key = NULL WHERE id = '{ga}'")),
        ("custom headers added", format!("UPDATE gateway_configs SET custom_headers = '[{{\"name\":\"x-copy\",\"secret\":\"{sa}\"}}]' WHERE id = '{ga}'")),
        ("binding removed", format!("UPDATE gateway_configs SET binding = NULL WHERE id = '{ga}'")),
        ("binding and endpoint copied from another config", format!("UPDATE gateway_configs SET binding = (SELECT binding FROM gateway_configs WHERE id = '{gb}'), endpoint = 'https://localhost:{e}/v1' WHERE id = '{ga}'")),
        ("moved to another account", format!("UPDATE gateway_configs SET account_id = '{acc_b}' WHERE id = '{ga}'")),
    ];
    let original = format!(
        "UPDATE gateway_configs SET endpoint = '{}', auth_type = 'header', auth_key = 'x-api-key', custom_headers = '[]', account_id = '{acc}', binding = $1 WHERE id = '{ga}'",
        a.gateway.endpoint
    );
    for (what, sql) in gateway_attacks {
        db.tamper(&sql, None).await;
        refused(&h, &a.token, "gateway_unverified", what).await;
        assert_eq!(
            evil.connections(),
            0,
            "{what}: the attacker's host was contacted"
        );
        db.tamper(&original, a.gateway.binding.as_deref()).await;
        works(&h, &a.token, what).await;
    }
    // The refusals are in the audit trail with their reason.
    let events = h.seed.request_events().await;
    let unverified = events
        .iter()
        .filter(|e| e.error_code.as_deref() == Some("gateway_unverified"))
        .count();
    assert!(
        unverified >= 9,
        "{unverified} audit rows say gateway_unverified"
    );

    // The secret: swapped, copied, altered, moved.
    let restore_secret = format!(
        "UPDATE secrets SET sealed = $1, account_id = '{acc}', version = 1 WHERE id = '{sa}'"
    );
    let mut flipped = a.secret.sealed.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    let mut relabelled = a.secret.sealed.clone();
    relabelled[1] ^= 0xff;
    let secret_attacks: Vec<(&str, String, Option<Vec<u8>>)> = vec![
        ("ciphertext copied from another secret", format!("UPDATE secrets SET sealed = (SELECT sealed FROM secrets WHERE id = '{sb}') WHERE id = '{sa}'"), None),
        ("one byte flipped", format!("UPDATE secrets SET sealed = $1 WHERE id = '{sa}'"), Some(flipped)),
        ("key id relabelled", format!("UPDATE secrets SET sealed = $1 WHERE id = '{sa}'"), Some(relabelled)),
        ("truncated", format!("UPDATE secrets SET sealed = $1 WHERE id = '{sa}'"), Some(a.secret.sealed[..40].to_vec())),
        ("version changed", format!("UPDATE secrets SET version = 2 WHERE id = '{sa}'"), None),
    ];
    for (what, sql, bytes) in secret_attacks {
        db.tamper(&sql, bytes.as_deref()).await;
        refused(&h, &a.token, "secret_unavailable", what).await;
        db.tamper(&restore_secret, Some(&a.secret.sealed)).await;
        works(&h, &a.token, what).await;
    }
    // Both secrets' ciphertexts swapped: neither token works.
    db.tamper(
        &format!("UPDATE secrets SET sealed = $1 WHERE id = '{sa}'"),
        Some(&b.secret.sealed),
    )
    .await;
    db.tamper(
        &format!("UPDATE secrets SET sealed = $1 WHERE id = '{sb}'"),
        Some(&a.secret.sealed),
    )
    .await;
    refused(&h, &a.token, "secret_unavailable", "swapped (a)").await;
    refused(&h, &b.token, "secret_unavailable", "swapped (b)").await;
    db.tamper(
        &format!("UPDATE secrets SET sealed = $1 WHERE id = '{sb}'"),
        Some(&b.secret.sealed),
    )
    .await;
    db.tamper(&restore_secret, Some(&a.secret.sealed)).await;
    works(&h, &a.token, "swapped").await;

    // The token pointed at another account's (intact) secret: the accounts disagree.
    let foreign = other.secret("FOREIGN", "sk-another-tenant").await;
    let token_id = format!("devbox_id = '{}'", a.devbox.id.as_str());
    db.tamper(
        &format!(
            "UPDATE gateway_tokens SET secret_id = '{}' WHERE {token_id}",
            foreign.id.as_str()
        ),
        None,
    )
    .await;
    refused(
        &h,
        &a.token,
        "internal_error",
        "token pointed at another account's secret",
    )
    .await;
    assert!(!h.upstream.received_contains(b"sk-another-tenant"));
    db.tamper(
        &format!("UPDATE gateway_tokens SET secret_id = '{sa}' WHERE {token_id}"),
        None,
    )
    .await;
    works(&h, &a.token, "token restored").await;

    // A secret moved to another account: refused on its own, and still refused when the
    // devbox, the gateway config and the token are moved along with it (the ciphertext and the
    // binding name the account they were made for).
    db.tamper(
        &format!("UPDATE secrets SET account_id = '{acc_b}' WHERE id = '{sa}'"),
        None,
    )
    .await;
    refused(
        &h,
        &a.token,
        "secret_unavailable",
        "secret moved to another account",
    )
    .await;
    let devbox = a.devbox.id.as_str();
    for table in ["devboxes", "gateway_configs", "gateway_tokens"] {
        let key = match table {
            "devboxes" => format!("id = '{devbox}'"),
            "gateway_configs" => format!("id = '{ga}'"),
            _ => format!("devbox_id = '{devbox}'"),
        };
        db.tamper(
            &format!("UPDATE {table} SET account_id = '{acc_b}' WHERE {key}"),
            None,
        )
        .await;
    }
    refused(
        &h,
        &a.token,
        "gateway_unverified",
        "everything moved to another account",
    )
    .await;
    assert_eq!(evil.connections(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_attacks_sqlite() {
    storage_attacks(support::sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_attacks_postgres() {
    storage_attacks(support::postgres().await).await;
}
