//! One conformance suite for both backends: what the data plane relies on (snapshots, targeted
//! reloads, the change feed) and the store's transactional rules.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use airlock_core::state::{Change, ChangeFeed, FeedEvent, StateSource};
use airlock_core::token::{BearerSecret, SecretKind};
use airlock_core::*;
use airlock_store::*;

async fn open(postgres: bool) -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = if postgres {
        airlock_testkit::pg::shared()
            .await
            .fresh_database()
            .await
            .unwrap()
    } else {
        format!("sqlite://{}/t.db", dir.path().display())
    };
    let store = Store::connect(&url).await.unwrap();
    store.migrate().await.unwrap();
    // Migrating twice is harmless.
    store.migrate().await.unwrap();
    (store, dir)
}

fn audit(account: &AccountId, action: &str) -> AuditRow {
    AuditRow {
        id: AuditId::generate().into_string(),
        time_ms: time::now_ms(),
        account_id: account.clone(),
        api_key_id: None,
        action: action.into(),
        object_type: "test".into(),
        object_id: "x".into(),
        detail: "{}".into(),
        client_addr: None,
    }
}

struct World {
    account: AccountId,
    gateway: GatewayConfigRow,
    secret: SecretRow,
    devbox: DevboxRow,
    token: TokenRow,
}

async fn world(store: &Store) -> World {
    let now = time::now_ms();
    let account = AccountRow {
        id: AccountId::generate(),
        name: "a".into(),
        operator: true,
        create_time_ms: now,
    };
    store.create_account(&account, None, None).await.unwrap();
    let secret = SecretRow {
        id: SecretId::generate(),
        account_id: account.id.clone(),
        name: EnvName::parse("n", "KEY").unwrap(),
        version: 1,
        sealed: vec![1, 2, 3],
        key_id: 7,
        create_time_ms: now,
        update_time_ms: now,
    };
    store
        .insert_secret(&secret, &audit(&account.id, "secret.create"))
        .await
        .unwrap();
    let gateway = GatewayConfigRow {
        id: GatewayConfigId::generate(),
        account_id: account.id.clone(),
        name: Label::parse("n", "g").unwrap(),
        endpoint: Endpoint::parse("e", "https://api.example.com/v1").unwrap(),
        auth: AuthMechanism::Bearer,
        custom_headers: vec![CustomHeader {
            name: "x-k".into(),
            source: HeaderSource::Secret(secret.id.clone()),
        }],
        description: None,
        create_time_ms: now,
        update_time_ms: now,
        binding: Some(vec![7; 37]),
    };
    store
        .insert_gateway_config(&gateway, &audit(&account.id, "gateway_config.create"))
        .await
        .unwrap();
    let devbox = DevboxRow {
        id: DevboxId::generate(),
        account_id: account.id.clone(),
        name: None,
        status: DevboxStatus::Running,
        source_addresses: SourceAddresses::parse("s", &["10.0.0.1"]).unwrap(),
        metadata: "{}".into(),
        create_time_ms: now,
        update_time_ms: now,
        shutdown_time_ms: None,
        gateway_specs: vec![],
    };
    let token = TokenRow {
        id: TokenId::generate(),
        account_id: account.id.clone(),
        devbox_id: devbox.id.clone(),
        gateway_config_id: gateway.id.clone(),
        secret_id: secret.id.clone(),
        prefix: Some(EnvName::parse("p", "G").unwrap()),
        digest: BearerSecret::generate(SecretKind::Gateway).digest(),
        create_time_ms: now,
        expire_time_ms: None,
    };
    World {
        account: account.id,
        gateway,
        secret,
        devbox,
        token,
    }
}

async fn next_change(feed: &mut impl ChangeFeed) -> FeedEvent {
    tokio::time::timeout(Duration::from_secs(5), feed.next())
        .await
        .expect("no change arrived within 5 s")
        .unwrap()
}

async fn feed_and_snapshots(postgres: bool) {
    let (store, _dir) = open(postgres).await;
    let w = world(&store).await;
    let mut feed = store.subscribe().await.unwrap();
    store
        .register_devbox(
            &w.devbox,
            std::slice::from_ref(&w.token),
            &audit(&w.account, "devbox.register"),
        )
        .await
        .unwrap();
    let mut seen = vec![];
    for _ in 0..2 {
        seen.push(next_change(&mut feed).await);
    }
    assert!(
        seen.contains(&FeedEvent::Changed(Change::Devbox(w.devbox.id.clone()))),
        "{seen:?}"
    );
    assert!(
        seen.contains(&FeedEvent::Changed(Change::Token(w.token.id.clone()))),
        "{seen:?}"
    );

    let all = store.load_all().await.unwrap();
    assert_eq!(all.tokens.len(), 1);
    assert!(all.tokens[0].digest.ct_eq(&w.token.digest));
    assert_eq!(all.devboxes.len(), 1);
    assert_eq!(all.gateways.len(), 1);
    assert_eq!(all.gateways[0].custom_headers.len(), 1);
    assert_eq!(all.gateways[0].binding.as_deref(), Some(&[7u8; 37][..]));
    assert_eq!(all.secrets.len(), 1);
    assert_eq!(all.secrets[0].sealed, vec![1, 2, 3]);

    let one = store.load_token(&w.token.digest).await.unwrap().unwrap();
    assert_eq!(
        (
            one.tokens.len(),
            one.devboxes.len(),
            one.gateways.len(),
            one.secrets.len()
        ),
        (1, 1, 1, 1)
    );
    assert!(store
        .load_token(&BearerSecret::generate(SecretKind::Gateway).digest())
        .await
        .unwrap()
        .is_none());

    let mut rotated = w.secret.clone();
    rotated.version = 2;
    rotated.sealed = vec![9, 9];
    store
        .rotate_secret(&rotated, 1, &audit(&w.account, "secret.rotate"))
        .await
        .unwrap();
    assert_eq!(
        next_change(&mut feed).await,
        FeedEvent::Changed(Change::Secret(w.secret.id.clone()))
    );
    // A second rotation that still expects version 1 loses.
    assert!(matches!(
        store
            .rotate_secret(&rotated, 1, &audit(&w.account, "secret.rotate"))
            .await,
        Err(StoreError::Conflict(_))
    ));
    let changed = store
        .load_changed(&[Change::Secret(w.secret.id.clone())])
        .await
        .unwrap();
    assert_eq!(changed.secrets[0].version, 2);

    store
        .shutdown_devbox(
            &w.account,
            &w.devbox.id,
            time::now_ms(),
            &audit(&w.account, "devbox.shutdown"),
        )
        .await
        .unwrap();
    let mut seen = vec![];
    for _ in 0..2 {
        seen.push(next_change(&mut feed).await);
    }
    assert!(
        seen.contains(&FeedEvent::Changed(Change::Token(w.token.id.clone()))),
        "{seen:?}"
    );
    let changed = store
        .load_changed(&[
            Change::Token(w.token.id.clone()),
            Change::Devbox(w.devbox.id.clone()),
        ])
        .await
        .unwrap();
    assert!(changed.tokens.iter().all(|t| t.revoked));
    assert!(changed.devboxes.iter().all(|d| !d.running));
    assert!(store.load_all().await.unwrap().tokens.is_empty());
    assert!(store.load_token(&w.token.digest).await.unwrap().is_none());

    // Deleting the gateway config now succeeds and a reload no longer returns it.
    store
        .delete_gateway_config(
            &w.account,
            &w.gateway.id,
            time::now_ms(),
            &audit(&w.account, "gateway_config.delete"),
        )
        .await
        .unwrap();
    assert!(store
        .load_changed(&[Change::GatewayConfig(w.gateway.id.clone())])
        .await
        .unwrap()
        .gateways
        .is_empty());
}

async fn writes_are_all_or_nothing(postgres: bool) {
    let (store, _dir) = open(postgres).await;
    let w = world(&store).await;
    // A token whose secret does not exist violates a foreign key: the devbox must not be left behind.
    let mut bad = w.token.clone();
    bad.secret_id = SecretId::generate();
    assert!(store
        .register_devbox(&w.devbox, &[bad], &audit(&w.account, "devbox.register"))
        .await
        .is_err());
    let page = Page {
        limit: 10,
        starting_after: None,
        include_total_count: true,
    };
    assert_eq!(
        store
            .list_devboxes(&w.account, None, &page)
            .await
            .unwrap()
            .total_count,
        Some(0)
    );
    // A duplicate live secret name is a conflict and leaves one row.
    let mut dup = w.secret.clone();
    dup.id = SecretId::generate();
    assert!(matches!(
        store
            .insert_secret(&dup, &audit(&w.account, "secret.create"))
            .await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        store
            .list_secrets(&w.account, &page)
            .await
            .unwrap()
            .total_count,
        Some(1)
    );
    let events = store
        .list_audit_events(&w.account, &AuditFilter::default(), &page)
        .await
        .unwrap();
    assert_eq!(
        events.total_count,
        Some(2),
        "only the two successful writes are audited"
    );
}

#[tokio::test]
async fn sqlite_feed_and_snapshots() {
    feed_and_snapshots(false).await;
}

#[tokio::test]
async fn postgres_feed_and_snapshots() {
    feed_and_snapshots(true).await;
}

#[tokio::test]
async fn sqlite_writes_are_all_or_nothing() {
    writes_are_all_or_nothing(false).await;
}

#[tokio::test]
async fn postgres_writes_are_all_or_nothing() {
    writes_are_all_or_nothing(true).await;
}

#[tokio::test]
async fn bad_urls_are_refused_clearly() {
    for (url, expected) in [
        ("mysql://x", "must start with postgres:// or sqlite://"),
        ("sqlite://", "needs a file path"),
    ] {
        let err = Store::connect(url).await.unwrap_err().to_string();
        assert!(err.contains(expected), "{url}: {err}");
    }
}
