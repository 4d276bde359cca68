//! One conformance suite for both backends: what the data plane relies on (snapshots, targeted
//! reloads, the change feed) and the store's transactional rules.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use airlock_core::state::{self, AuditSink, Change, ChangeFeed, FeedEvent, StateSource};
use airlock_core::token::{BearerSecret, SecretKind};
use airlock_core::*;
use airlock_store::*;

async fn open(postgres: bool) -> (Store, tempfile::TempDir) {
    let (store, _, dir) = open_with_url(postgres).await;
    (store, dir)
}

/// A migrated store, its URL (for writes behind its back) and the directory of a SQLite file.
async fn open_with_url(postgres: bool) -> (Store, String, tempfile::TempDir) {
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
    (store, url, dir)
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
        llm: llm_settings(),
        router: None,
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
        secret_id: Some(secret.id.clone()),
        prefix: Some(EnvName::parse("p", "G").unwrap()),
        digest: BearerSecret::generate(SecretKind::Gateway).digest(),
        create_time_ms: now,
        expire_time_ms: None,
        scope: None,
    };
    World {
        account: account.id,
        gateway,
        secret,
        devbox,
        token,
    }
}

/// LLM settings with every field of a model list exercised: a priced model with all of its
/// options, and a bare one.
fn llm_settings() -> state::LlmSettings {
    state::LlmSettings {
        provider: Some("anthropic".into()),
        api: Api::AnthropicMessages,
        models: vec![
            ModelSpec {
                id: "claude-sonnet-4-5".into(),
                name: Some("Claude Sonnet 4.5 ünïcode".into()),
                reasoning: true,
                images: true,
                cost: Some(Price {
                    input: 3_000_000_000,
                    output: 15_000_000_000,
                    cache_read: 300_000_000,
                    cache_write: u64::MAX,
                }),
                context_window: Some(200_000),
                max_tokens: Some(64_000),
                tools: Some(true),
            },
            ModelSpec {
                id: "bare".into(),
                ..ModelSpec::default()
            },
        ],
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
    bad.secret_id = Some(SecretId::generate());
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

/// A record reduced to what the data plane reads of it, comparable and sortable.
fn token_key(t: &state::TokenRecord) -> String {
    format!(
        "{} {} {} {} {} {:?} {:?} {}",
        t.id,
        t.digest.to_hex(),
        t.account_id,
        t.devbox_id,
        t.gateway_config_id,
        t.secret_id,
        t.expires_at_ms,
        t.revoked
    )
}

fn devbox_key(d: &state::DevboxRecord) -> String {
    format!(
        "{} {} {} {:?}",
        d.id, d.account_id, d.running, d.source_addresses
    )
}

fn gateway_key(g: &state::GatewayRecord) -> String {
    format!(
        "{} {} {} {:?} {:?} {:?}",
        g.id, g.account_id, g.endpoint, g.auth, g.custom_headers, g.llm
    )
}

fn secret_key(s: &state::SecretRecord) -> String {
    format!("{} {} {} {:?}", s.id, s.account_id, s.version, s.sealed)
}

/// Every record of a snapshot (or of all pages put together), each kind sorted.
#[derive(Debug, PartialEq, Eq)]
struct Keys {
    tokens: Vec<String>,
    devboxes: Vec<String>,
    gateways: Vec<String>,
    secrets: Vec<String>,
}

fn keys<'a>(snapshots: impl IntoIterator<Item = &'a state::StateSnapshot>) -> Keys {
    let mut k = Keys {
        tokens: vec![],
        devboxes: vec![],
        gateways: vec![],
        secrets: vec![],
    };
    for s in snapshots {
        k.tokens.extend(s.tokens.iter().map(token_key));
        k.devboxes.extend(s.devboxes.iter().map(devbox_key));
        k.gateways.extend(s.gateways.iter().map(gateway_key));
        k.secrets.extend(s.secrets.iter().map(secret_key));
    }
    k.tokens.sort();
    k.devboxes.sort();
    k.gateways.sort();
    k.secrets.sort();
    k
}

fn token_row(w: &World, devbox: &DevboxId, expire_time_ms: Option<i64>) -> TokenRow {
    TokenRow {
        id: TokenId::generate(),
        devbox_id: devbox.clone(),
        digest: BearerSecret::generate(SecretKind::Gateway).digest(),
        expire_time_ms,
        scope: None,
        ..w.token.clone()
    }
}

/// Registers a running devbox with the given tokens (built by `token_row` for its id).
async fn devbox_with(
    store: &Store,
    w: &World,
    addr: &str,
    expiries: &[Option<i64>],
) -> (DevboxRow, Vec<TokenRow>) {
    let devbox = DevboxRow {
        id: DevboxId::generate(),
        source_addresses: SourceAddresses::parse("s", &[addr]).unwrap(),
        ..w.devbox.clone()
    };
    let tokens: Vec<TokenRow> = expiries
        .iter()
        .map(|e| token_row(w, &devbox.id, *e))
        .collect();
    store
        .register_devbox(&devbox, &tokens, &audit(&w.account, "devbox.register"))
        .await
        .unwrap();
    (devbox, tokens)
}

/// The paged full load hands over exactly what `load_all` returns, in pages no larger than
/// the store's page size, gateway configs and secrets first, and a devbox never after its
/// tokens; revoked and expired tokens, shut-down devboxes (and their tokens) and deleted
/// gateway configs and secrets are left out of both alike.
async fn paged_load_matches_load_all(postgres: bool) {
    const PAGE: usize = 3;
    let (store, url, _dir) = open_with_url(postgres).await;
    let store = store.with_load_page_size(PAGE);
    let w = world(&store).await;
    let now = time::now_ms();
    let later = now + 3_600_000;

    // What must be loaded: 6 running devboxes with 2 tokens each (one expiring later), plus the
    // world's gateway config (with a secret-backed custom header) and secret.
    let mut want_devboxes = vec![];
    let mut want_tokens = vec![];
    for i in 0..6 {
        let (d, t) = devbox_with(&store, &w, &format!("10.1.{i}.0/24"), &[None, Some(later)]).await;
        want_devboxes.push(d.id);
        want_tokens.extend(t.into_iter().map(|t| t.id));
    }
    // A second gateway config and secret of another account, with a devbox of its own.
    let other = world(&store).await;
    let (d, t) = devbox_with(&store, &other, "192.0.2.7", &[None]).await;
    want_devboxes.push(d.id);
    want_tokens.extend(t.into_iter().map(|t| t.id));

    // What must not be: an expired token and a revoked one on a running devbox (loaded: the
    // devbox and its third, live token), a shut-down devbox with its tokens, a deleted gateway
    // config and a deleted secret.
    let (d, t) = devbox_with(&store, &w, "10.2.0.1", &[Some(now - 1), None, None]).await;
    want_devboxes.push(d.id);
    want_tokens.push(t[2].id.clone());
    // The store revokes tokens only with their devbox's shutdown, so revoke one behind its back.
    let revoked = &t[1];
    let pool = sqlx::AnyPool::connect(&url).await.unwrap();
    sqlx::query("UPDATE gateway_tokens SET revoke_time_ms = $1 WHERE id = $2")
        .bind(now)
        .bind(revoked.id.as_str())
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let (down, _) = devbox_with(&store, &w, "10.3.0.1", &[None, None]).await;
    store
        .shutdown_devbox(
            &w.account,
            &down.id,
            now,
            &audit(&w.account, "devbox.shutdown"),
        )
        .await
        .unwrap();
    let unused_gateway = GatewayConfigRow {
        id: GatewayConfigId::generate(),
        name: Label::parse("n", "unused").unwrap(),
        custom_headers: vec![],
        ..w.gateway.clone()
    };
    store
        .insert_gateway_config(&unused_gateway, &audit(&w.account, "gateway_config.create"))
        .await
        .unwrap();
    store
        .delete_gateway_config(
            &w.account,
            &unused_gateway.id,
            now,
            &audit(&w.account, "gateway_config.delete"),
        )
        .await
        .unwrap();
    let unused_secret = SecretRow {
        id: SecretId::generate(),
        name: EnvName::parse("n", "UNUSED").unwrap(),
        ..w.secret.clone()
    };
    store
        .insert_secret(&unused_secret, &audit(&w.account, "secret.create"))
        .await
        .unwrap();
    store
        .delete_secret(
            &w.account,
            &unused_secret.id,
            now,
            &audit(&w.account, "secret.delete"),
        )
        .await
        .unwrap();

    let all = store.load_all().await.unwrap();
    let mut pages = vec![];
    store.load_all_paged(|p| pages.push(p)).await.unwrap();
    assert_eq!(keys(&pages), keys([&all]), "the pages differ from load_all");

    // And both hold exactly what is active.
    let ids = |v: Vec<String>| {
        let mut v: Vec<String> = v
            .into_iter()
            .map(|k| k.split(' ').next().unwrap().to_owned())
            .collect();
        v.sort();
        v
    };
    let sorted = |v: Vec<String>| {
        let mut v = v;
        v.sort();
        v
    };
    let all_keys = keys([&all]);
    assert_eq!(
        ids(all_keys.tokens.clone()),
        sorted(want_tokens.iter().map(|t| t.to_string()).collect())
    );
    assert_eq!(
        ids(all_keys.devboxes.clone()),
        sorted(want_devboxes.iter().map(|d| d.to_string()).collect())
    );
    assert_eq!(
        ids(all_keys.gateways.clone()),
        sorted(vec![w.gateway.id.to_string(), other.gateway.id.to_string()])
    );
    assert_eq!(
        ids(all_keys.secrets.clone()),
        sorted(vec![w.secret.id.to_string(), other.secret.id.to_string()])
    );
    assert!(all.tokens.iter().all(|t| !t.revoked));
    assert!(all.devboxes.iter().all(|d| d.running));

    // The shape of the pages: gateway configs and secrets alone in the first, then pages of at
    // most PAGE devboxes and tokens, so 8 devboxes and 15 tokens take at least 8.
    assert!(pages[0].tokens.is_empty() && pages[0].devboxes.is_empty());
    assert_eq!((pages[0].gateways.len(), pages[0].secrets.len()), (2, 2));
    assert!(pages.len() > (8 + 15) / PAGE, "{} pages", pages.len());
    let mut devboxes_so_far = std::collections::HashSet::new();
    for (i, p) in pages.iter().enumerate().skip(1) {
        let n = p.devboxes.len() + p.tokens.len();
        assert!((1..=PAGE).contains(&n), "page {i} holds {n} records");
        assert!(p.gateways.is_empty() && p.secrets.is_empty(), "page {i}");
        devboxes_so_far.extend(p.devboxes.iter().map(|d| d.id.clone()));
        for t in &p.tokens {
            assert!(
                devboxes_so_far.contains(&t.devbox_id),
                "page {i}: a token arrives before its devbox"
            );
        }
    }

    // The default page size holds all of it in one page after the first.
    let mut pages = vec![];
    store
        .with_load_page_size(DEFAULT_LOAD_PAGE)
        .load_all_paged(|p| pages.push(p))
        .await
        .unwrap();
    assert_eq!(pages.len(), 2);
    assert_eq!(keys(&pages), keys([&all]));
}

/// A request event with every field set, or (`sparse`) with every optional field empty.
fn request_event(account: &AccountId, i: usize, sparse: bool) -> state::RequestAuditEvent {
    let full = !sparse;
    state::RequestAuditEvent {
        id: AuditId::generate(),
        time_ms: 1_700_000_000_000 + i as i64,
        account_id: Some(account.clone()),
        devbox_id: full.then(DevboxId::generate),
        gateway_config_id: full.then(GatewayConfigId::generate),
        token_id: full.then(TokenId::generate),
        secret_id: full.then(SecretId::generate),
        secret_version: full.then_some(i as i64 + 1),
        method: ["GET", "POST", "DELETE"][i % 3].into(),
        // What COPY's text format escapes (a backslash, `\N`, which means NULL there) must come
        // back as it went in.
        path: format!("/v1/items/{i}/ünïcode\\N"),
        status: [200, 401, 502, 599][i % 4],
        upstream_status: full.then_some(201),
        latency_us: 10_000 + i as i64,
        ttfb_us: full.then_some(i as i64),
        bytes_in: i as i64 * 3,
        bytes_out: i64::MAX - i as i64,
        client_addr: if i.is_multiple_of(2) {
            "10.0.0.1".parse().unwrap()
        } else {
            "2001:db8::1".parse().unwrap()
        },
        error_code: if sparse {
            None
        } else {
            Some(format!("code_{i}"))
        },
        request_id: if sparse {
            None
        } else {
            Some(format!("req-{i}\t\\\r\n\\N"))
        },
        // Metered with a known cost, metered with an unknown one (and no model), not metered.
        llm: match (sparse, i % 3) {
            (false, 0) => Some(Metered {
                provider: Some("openai".into()),
                model: Some(format!("gpt-{i}")),
                usage: Usage {
                    input_tokens: 1_000 + i as u64,
                    output_tokens: 20,
                    cache_read_tokens: 300,
                    cache_write_tokens: 5,
                    reasoning_tokens: 7,
                    exact: true,
                },
                cost_nanos: Some(4_215_000 + i as u64),
            }),
            (false, 1) => Some(Metered {
                provider: None,
                model: None,
                usage: Usage {
                    input_tokens: 12,
                    exact: false,
                    ..Usage::default()
                },
                cost_nanos: None,
            }),
            _ => None,
        },
    }
}

/// The stored request events of an account, by id.
async fn stored_events(store: &Store, account: &AccountId) -> Vec<state::RequestAuditEvent> {
    let page = Page {
        limit: 10_000,
        starting_after: None,
        include_total_count: false,
    };
    let mut events: Vec<_> = store
        .list_request_events(account, &AuditFilter::default(), &page)
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|r| {
            assert_eq!(r.id, r.event.id.as_str());
            r.event
        })
        .collect();
    events.sort_by(|a, b| a.id.cmp(&b.id));
    events
}

/// Multi-row inserts of request events store each event once with every field intact, at
/// the sizes around a statement's capacity, and a batch written again (a replayed spill file)
/// adds nothing, even when it overlaps one written before. `dedicated`: written through the
/// handle the data plane's audit writers take (on SQLite, their own connection and statement; on
/// PostgreSQL, their own connection and `COPY`, which falls back to the insert for a batch
/// written before), read back through the store.
async fn request_events_round_trip(postgres: bool, dedicated: bool) {
    let (store, _dir) = open(postgres).await;
    let w = world(&store).await;
    let writer = if dedicated {
        store
            .dedicated()
            .expect("the store offers a dedicated sink")
    } else {
        store.clone()
    };
    for n in [
        0,
        1,
        EVENTS_PER_STATEMENT,
        EVENTS_PER_STATEMENT + 1,
        2 * EVENTS_PER_STATEMENT + 7,
    ] {
        // Each size gets its own account, so the listing shows just its events.
        let account = AccountRow {
            id: AccountId::generate(),
            name: format!("n{n}"),
            operator: false,
            create_time_ms: time::now_ms(),
        };
        store.create_account(&account, None, None).await.unwrap();
        let mut batch: Vec<_> = (0..n)
            .map(|i| request_event(&account.id, i, i % 5 == 4))
            .collect();
        batch.sort_by(|a, b| a.id.cmp(&b.id));
        let expected: Vec<String> = batch.iter().map(|e| format!("{e:?}")).collect();

        writer.insert_request_events(&batch).await.unwrap();
        let got: Vec<String> = stored_events(&store, &account.id)
            .await
            .iter()
            .map(|e| format!("{e:?}"))
            .collect();
        assert_eq!(got.len(), n, "{n} events written");
        assert_eq!(got, expected, "{n} events written");

        // The same batch again, through the sink the data plane uses: nothing more.
        writer.write_batch(&batch).await.unwrap();
        assert_eq!(stored_events(&store, &account.id).await.len(), n);

        // A batch that overlaps the stored ones stores only the new events.
        let fresh: Vec<_> = (0..3)
            .map(|i| request_event(&account.id, n + i, false))
            .collect();
        let mut overlapping = batch.clone();
        overlapping.extend(fresh.iter().cloned());
        writer.insert_request_events(&overlapping).await.unwrap();
        assert_eq!(stored_events(&store, &account.id).await.len(), n + 3);
    }
    // Another account's events were never touched.
    assert!(stored_events(&store, &w.account).await.is_empty());
}

/// A gateway config's LLM settings survive every way it is written and read: insert, get, by
/// name, list, update, and the data plane's full, paged and partial loads.
async fn gateway_llm_round_trip(postgres: bool) {
    let (store, _dir) = open(postgres).await;
    let w = world(&store).await;
    let want = llm_settings();
    let got = store
        .get_gateway_config(&w.account, w.gateway.id.as_str())
        .await
        .unwrap();
    assert_eq!(got.llm, want);
    assert_eq!(
        store
            .gateway_config_by_name(&w.account, "g")
            .await
            .unwrap()
            .llm,
        want
    );
    let page = Page {
        limit: 10,
        starting_after: None,
        include_total_count: false,
    };
    let listed = store
        .list_gateway_configs(&w.account, &GatewayFilter::default(), &page)
        .await
        .unwrap();
    assert_eq!(listed.items[0].llm, want);
    assert_eq!(store.load_all().await.unwrap().gateways[0].llm, want);
    let changed = store
        .load_changed(&[Change::GatewayConfig(w.gateway.id.clone())])
        .await
        .unwrap();
    assert_eq!(changed.gateways[0].llm, want);

    // An update replaces the settings, down to none at all.
    for llm in [
        state::LlmSettings {
            provider: None,
            api: Api::Gemini,
            models: vec![want.models[1].clone()],
        },
        state::LlmSettings::default(),
    ] {
        let row = GatewayConfigRow {
            llm: llm.clone(),
            update_time_ms: time::now_ms(),
            ..w.gateway.clone()
        };
        store
            .update_gateway_config(&row, &audit(&w.account, "gateway_config.update"))
            .await
            .unwrap();
        let got = store
            .get_gateway_config(&w.account, w.gateway.id.as_str())
            .await
            .unwrap();
        assert_eq!(got.llm, llm);
        assert_eq!(store.all_gateway_configs().await.unwrap()[0].llm, llm);
    }
}

/// Metered request events for usage queries: `(account, devbox, gateway, model, provider,
/// time_ms, input, output, cost)`.
type Metering<'a> = (
    &'a AccountId,
    &'a DevboxId,
    &'a GatewayConfigId,
    Option<&'a str>,
    Option<&'a str>,
    i64,
    u64,
    u64,
    Option<u64>,
);

fn metered_event(m: Metering<'_>) -> state::RequestAuditEvent {
    let (account, devbox, gateway, model, provider, time_ms, input, output, cost) = m;
    state::RequestAuditEvent {
        time_ms,
        account_id: Some(account.clone()),
        devbox_id: Some(devbox.clone()),
        gateway_config_id: Some(gateway.clone()),
        llm: Some(Metered {
            provider: provider.map(str::to_owned),
            model: model.map(str::to_owned),
            usage: Usage {
                input_tokens: input,
                output_tokens: output,
                cache_read_tokens: input / 10,
                cache_write_tokens: 1,
                reasoning_tokens: output / 2,
                exact: true,
            },
            cost_nanos: cost,
        }),
        ..request_event(account, 0, true)
    }
}

/// A usage row reduced to its keys and sums, for tables of expectations.
fn usage_line(r: &UsageRow) -> String {
    let mut parts = vec![];
    if let Some(v) = &r.model {
        parts.push(format!("model={v}"));
    }
    if let Some(v) = &r.provider {
        parts.push(format!("provider={v}"));
    }
    if let Some(v) = &r.devbox_id {
        parts.push(format!("devbox={v}"));
    }
    if let Some(v) = &r.gateway_config_id {
        parts.push(format!("gateway={v}"));
    }
    if let Some(v) = r.day {
        parts.push(format!("day={v}"));
    }
    parts.push(format!(
        "n={} in={} out={} cr={} cw={} rs={} cost={:?} unpriced={}",
        r.requests,
        r.input_tokens,
        r.output_tokens,
        r.cache_read_tokens,
        r.cache_write_tokens,
        r.reasoning_tokens,
        r.cost_nanos,
        r.unpriced_requests
    ));
    parts.join(" ")
}

/// Usage sums the metered events of one account only, grouped by any set of keys, filtered by
/// time (start inclusive, end exclusive), devbox, gateway config and model; events that were
/// not metered never count; unknown costs are left out of the sum and counted apart.
async fn usage_grouping_and_filters(postgres: bool) {
    let (store, _dir) = open(postgres).await;
    let w = world(&store).await;
    let other = world(&store).await;
    let (a, d1, d2) = (&w.account, &w.devbox.id, &DevboxId::generate());
    let (g1, g2) = (&w.gateway.id, &GatewayConfigId::generate());
    // Day 19_700 starts at 1_702_080_000_000 ms (2023-12-09 UTC).
    let day = |n: i64| n * 86_400_000;
    let t0 = day(19_700);
    let events = vec![
        metered_event((
            a,
            d1,
            g1,
            Some("m1"),
            Some("openai"),
            t0,
            100,
            10,
            Some(1_000),
        )),
        metered_event((
            a,
            d1,
            g1,
            Some("m1"),
            Some("openai"),
            t0 + 5,
            200,
            20,
            Some(2_000),
        )),
        metered_event((
            a,
            d2,
            g1,
            Some("m2"),
            Some("openai"),
            t0 + day(1) - 1,
            300,
            30,
            None,
        )),
        metered_event((
            a,
            d2,
            g2,
            Some("m2"),
            None,
            t0 + day(1),
            400,
            40,
            Some(4_000),
        )),
        metered_event((a, d2, g2, None, None, t0 + day(2), 500, 50, None)),
        // Another account's event and an unmetered event of this account never count.
        metered_event((
            &other.account,
            d1,
            g1,
            Some("m1"),
            Some("openai"),
            t0,
            9_000,
            9_000,
            Some(9_000),
        )),
        request_event(a, 1, true),
    ];
    store.insert_request_events(&events).await.unwrap();

    let all = UsageFilter::default();
    let k = |keys: &[UsageKey], filter: &UsageFilter| {
        let store = store.clone();
        let keys = keys.to_vec();
        let filter = filter.clone();
        let a = a.clone();
        async move {
            store
                .usage(&a, &filter, &keys)
                .await
                .unwrap()
                .iter()
                .map(usage_line)
                .collect::<Vec<_>>()
        }
    };
    use UsageKey::*;
    let cases: Vec<(&[UsageKey], UsageFilter, Vec<String>)> = vec![
        (
            &[],
            all.clone(),
            vec!["n=5 in=1500 out=150 cr=150 cw=5 rs=75 cost=Some(7000) unpriced=2".into()],
        ),
        (
            &[Model],
            all.clone(),
            vec![
                "model=m1 n=2 in=300 out=30 cr=30 cw=2 rs=15 cost=Some(3000) unpriced=0".into(),
                "model=m2 n=2 in=700 out=70 cr=70 cw=2 rs=35 cost=Some(4000) unpriced=1".into(),
                // Unknown values group together, last.
                "n=1 in=500 out=50 cr=50 cw=1 rs=25 cost=None unpriced=1".into(),
            ],
        ),
        (
            &[Day, Provider],
            all.clone(),
            vec![
                "provider=openai day=19700 n=3 in=600 out=60 cr=60 cw=3 rs=30 cost=Some(3000) unpriced=1".into(),
                "day=19701 n=1 in=400 out=40 cr=40 cw=1 rs=20 cost=Some(4000) unpriced=0".into(),
                "day=19702 n=1 in=500 out=50 cr=50 cw=1 rs=25 cost=None unpriced=1".into(),
            ],
        ),
        (
            // Keys repeat harmlessly, and the order given is the sort order.
            &[Gateway, Devbox, Gateway],
            all.clone(),
            {
                let mut v = vec![
                    format!("devbox={d1} gateway={g1} n=2 in=300 out=30 cr=30 cw=2 rs=15 cost=Some(3000) unpriced=0"),
                    format!("devbox={d2} gateway={g1} n=1 in=300 out=30 cr=30 cw=1 rs=15 cost=None unpriced=1"),
                    format!("devbox={d2} gateway={g2} n=2 in=900 out=90 cr=90 cw=2 rs=45 cost=Some(4000) unpriced=1"),
                ];
                // Sorted by gateway first, then devbox.
                v.sort_by_key(|l| {
                    let g = l.split(' ').nth(1).unwrap().to_owned();
                    let d = l.split(' ').next().unwrap().to_owned();
                    (g, d)
                });
                v
            },
        ),
        (
            &[Day],
            UsageFilter {
                start_ms: Some(t0 + 5),
                end_ms: Some(t0 + day(1)),
                ..all.clone()
            },
            vec!["day=19700 n=2 in=500 out=50 cr=50 cw=2 rs=25 cost=Some(2000) unpriced=1".into()],
        ),
        (
            &[Model],
            UsageFilter {
                devbox_id: Some(d2.clone()),
                gateway_config_id: Some(g2.clone()),
                ..all.clone()
            },
            vec![
                "model=m2 n=1 in=400 out=40 cr=40 cw=1 rs=20 cost=Some(4000) unpriced=0".into(),
                "n=1 in=500 out=50 cr=50 cw=1 rs=25 cost=None unpriced=1".into(),
            ],
        ),
        (
            &[],
            UsageFilter {
                model: Some("m1".into()),
                ..all.clone()
            },
            vec!["n=2 in=300 out=30 cr=30 cw=2 rs=15 cost=Some(3000) unpriced=0".into()],
        ),
        // Nothing matches: no rows, also without keys.
        (
            &[],
            UsageFilter {
                start_ms: Some(t0 + day(3)),
                ..all.clone()
            },
            vec![],
        ),
        (
            &[Model, Day],
            UsageFilter {
                model: Some("nope".into()),
                ..all.clone()
            },
            vec![],
        ),
    ];
    for (keys, filter, want) in cases {
        assert_eq!(k(keys, &filter).await, want, "{keys:?} {filter:?}");
    }
    // The other account sees only its own.
    let theirs = store
        .usage(&other.account, &all, &[UsageKey::Model])
        .await
        .unwrap();
    assert_eq!(
        theirs.iter().map(usage_line).collect::<Vec<_>>(),
        vec!["model=m1 n=1 in=9000 out=9000 cr=900 cw=1 rs=4500 cost=Some(9000) unpriced=0"]
    );
}

/// A database written by the release before migration 0004 upgrades in place: its gateway
/// configs read as unmetered (`api` none, no provider, no models) and its request events as not
/// metered, and both can be written with the new fields afterwards.
async fn migration_from_0003_keeps_old_rows(postgres: bool) {
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
    store.migrate_up_to(3).await.unwrap();
    // Rows as the 0003 release wrote them, in its own columns.
    let pool = sqlx::AnyPool::connect(&url).await.unwrap();
    let account = AccountId::generate();
    let gateway = GatewayConfigId::generate();
    let event = AuditId::generate();
    for (sql, binds) in [
        (
            "INSERT INTO accounts (id, name, operator, create_time_ms) VALUES ($1, 'old', 0, 1)",
            vec![account.to_string()],
        ),
        (
            "INSERT INTO gateway_configs (id, account_id, name, endpoint, auth_type, auth_key, custom_headers, description,
                create_time_ms, update_time_ms, binding)
             VALUES ($1, $2, 'old-gw', 'https://api.example.com/v1', 'bearer', NULL, '[]', NULL, 1, 1, NULL)",
            vec![gateway.to_string(), account.to_string()],
        ),
        (
            "INSERT INTO request_events (id, time_ms, account_id, method, path, status, latency_us, bytes_in, bytes_out,
                client_addr, request_id)
             VALUES ($1, 1700000000000, $2, 'POST', '/v1/messages', 200, 5, 1, 2, '10.0.0.1', 'req-old')",
            vec![event.to_string(), account.to_string()],
        ),
    ] {
        let mut q = sqlx::query(sql);
        for b in binds {
            q = q.bind(b);
        }
        q.execute(&pool).await.unwrap();
    }
    pool.close().await;

    store.migrate().await.unwrap();
    let row = store
        .get_gateway_config(&account, gateway.as_str())
        .await
        .unwrap();
    assert_eq!(row.llm, state::LlmSettings::default());
    assert_eq!(row.llm.api, Api::None);
    assert_eq!(row.endpoint.to_string(), "https://api.example.com/v1");
    let events = stored_events(&store, &account).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].request_id.as_deref(), Some("req-old"));
    assert!(events[0].llm.is_none());
    assert!(store
        .usage(&account, &UsageFilter::default(), &[])
        .await
        .unwrap()
        .is_empty());
    // The upgraded config takes the new fields.
    let mut updated = row.clone();
    updated.llm = llm_settings();
    store
        .update_gateway_config(&updated, &audit(&account, "gateway_config.update"))
        .await
        .unwrap();
    assert_eq!(
        store
            .get_gateway_config(&account, gateway.as_str())
            .await
            .unwrap()
            .llm,
        llm_settings()
    );
}

#[tokio::test]
async fn sqlite_gateway_llm_round_trip() {
    gateway_llm_round_trip(false).await;
}

#[tokio::test]
async fn postgres_gateway_llm_round_trip() {
    gateway_llm_round_trip(true).await;
}

#[tokio::test]
async fn sqlite_usage_grouping_and_filters() {
    usage_grouping_and_filters(false).await;
}

#[tokio::test]
async fn postgres_usage_grouping_and_filters() {
    usage_grouping_and_filters(true).await;
}

#[tokio::test]
async fn sqlite_migration_from_0003_keeps_old_rows() {
    migration_from_0003_keeps_old_rows(false).await;
}

#[tokio::test]
async fn postgres_migration_from_0003_keeps_old_rows() {
    migration_from_0003_keeps_old_rows(true).await;
}

#[tokio::test]
async fn sqlite_paged_load_matches_load_all() {
    paged_load_matches_load_all(false).await;
}

#[tokio::test]
async fn postgres_paged_load_matches_load_all() {
    paged_load_matches_load_all(true).await;
}

#[tokio::test]
async fn sqlite_request_events_round_trip() {
    request_events_round_trip(false, false).await;
}

#[tokio::test]
async fn postgres_request_events_round_trip() {
    request_events_round_trip(true, false).await;
}

#[tokio::test]
async fn sqlite_request_events_round_trip_through_the_audit_writers_connection() {
    request_events_round_trip(false, true).await;
}

#[tokio::test]
async fn postgres_request_events_round_trip_through_the_audit_writers_connection() {
    request_events_round_trip(true, true).await;
}

#[tokio::test]
async fn sqlite_feed_and_snapshots() {
    feed_and_snapshots(false).await;
}

#[tokio::test]
async fn postgres_feed_and_snapshots() {
    feed_and_snapshots(true).await;
}

/// A write that reads first (shutting a devbox down) waits for another connection's write lock
/// instead of failing at once with "database is locked": on SQLite a deferred transaction that
/// has read cannot wait for the lock, so the store's writes begin immediate. (CI once failed
/// here: a conflicting rotation's lock was still being rolled back when the shutdown read.)
#[tokio::test]
async fn sqlite_write_waits_for_another_writer() {
    use sqlx::{Connection, Executor};
    let (store, url, _dir) = open_with_url(false).await;
    let w = world(&store).await;
    store
        .register_devbox(
            &w.devbox,
            std::slice::from_ref(&w.token),
            &audit(&w.account, "devbox.register"),
        )
        .await
        .unwrap();
    let mut other = sqlx::SqliteConnection::connect(&url).await.unwrap();
    other.execute("BEGIN IMMEDIATE").await.unwrap();
    let release = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        other.execute("COMMIT").await.unwrap();
        other
    });
    store
        .shutdown_devbox(
            &w.account,
            &w.devbox.id,
            time::now_ms(),
            &audit(&w.account, "devbox.shutdown"),
        )
        .await
        .unwrap();
    release.await.unwrap();
    let devbox = store
        .get_devbox(&w.account, w.devbox.id.as_str())
        .await
        .unwrap();
    assert_eq!(devbox.status, DevboxStatus::Shutdown);
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

/// Limits and their ledger: a limits object round-trips and is seen by `limits_since`; a lease
/// takes what is asked, then only what is left, then nothing; a settle gives back and charges;
/// concurrent leases never grant more than the limit in all; a scoped token's `max_requests`
/// round-trips through the token's scope.
async fn limits_lease_and_settle(postgres: bool) {
    let (store, _dir) = open(postgres).await;
    let w = world(&store).await;
    let scope = LimitScope::Devbox(w.devbox.id.clone());
    assert!(store.get_limits(&scope).await.unwrap().is_empty());
    let mut limits = Limits::default();
    limits.set(LimitKind::RequestsPerMinute, Some(10));
    limits.set(LimitKind::CostUsdPerDay, Some(1_500_000_000));
    let t0 = time::now_ms();
    store
        .set_limits(
            &w.account,
            &scope,
            &limits,
            t0,
            Some(&audit(&w.account, "limits.update")),
        )
        .await
        .unwrap();
    assert_eq!(store.get_limits(&scope).await.unwrap(), limits);
    let seen = store.limits_since(t0).await.unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].scope, scope);
    assert_eq!(seen[0].limits, limits);
    assert!(store.limits_since(t0 + 1).await.unwrap().is_empty());
    // Removing them leaves an empty object that a data plane still sees (and drops).
    store
        .set_limits(&w.account, &scope, &Limits::default(), t0 + 2, None)
        .await
        .unwrap();
    let seen = store.limits_since(t0 + 1).await.unwrap();
    assert!(seen[0].limits.is_empty());

    let key = CounterKey {
        scope: scope.clone(),
        kind: LimitKind::RequestsPerMinute,
        window_start_ms: 60_000,
    };
    let lease = |want| {
        let store = store.clone();
        let key = key.clone();
        async move { store.lease(&key, 10, want).await.unwrap() }
    };
    assert_eq!(
        lease(4).await,
        state::Lease {
            granted: 4,
            used: 4
        }
    );
    assert_eq!(
        lease(4).await,
        state::Lease {
            granted: 4,
            used: 8
        }
    );
    assert_eq!(
        lease(4).await,
        state::Lease {
            granted: 2,
            used: 10
        }
    );
    assert_eq!(lease(4).await.granted, 0);
    // Three unspent go back; two beyond the leases are charged.
    store.settle(&key, -3).await.unwrap();
    assert_eq!(store.limit_used(&key).await.unwrap(), 7);
    store.settle(&key, 5).await.unwrap();
    assert_eq!(store.limit_used(&key).await.unwrap(), 12);
    assert_eq!(
        lease(1).await.granted,
        0,
        "a counter past its limit grants nothing"
    );
    // Another window, another counter.
    let next = CounterKey {
        window_start_ms: 120_000,
        ..key.clone()
    };
    assert_eq!(store.lease(&next, 10, 1).await.unwrap().granted, 1);

    // Concurrent leases of one unit: exactly the limit is granted in all.
    let race = CounterKey {
        window_start_ms: 180_000,
        ..key.clone()
    };
    let mut tasks = Vec::new();
    for _ in 0..40 {
        let store = store.clone();
        let race = race.clone();
        tasks.push(tokio::spawn(async move {
            store.lease(&race, 25, 1).await.unwrap().granted
        }));
    }
    let mut granted = 0;
    for t in tasks {
        granted += t.await.unwrap();
    }
    assert_eq!(granted, 25);
    assert_eq!(store.limit_used(&race).await.unwrap(), 25);

    // max_requests travels in the token's scope.
    let mut row = token_row(&w, &w.devbox.id, None);
    row.scope = TokenScope::with_max_requests(None, Some(7));
    store
        .register_devbox(
            &w.devbox,
            &[row.clone()],
            &audit(&w.account, "devbox.register"),
        )
        .await
        .unwrap();
    let snap = store.load_token(&row.digest).await.unwrap().unwrap();
    let t = snap.tokens.iter().find(|t| t.id == row.id).unwrap();
    assert_eq!(t.scope.as_ref().and_then(|s| s.max_requests), Some(7));
}

/// The limits of an account's devboxes come back by id in one query (the list views), and a
/// limit's first hit is written as a `limit.exceeded` audit event with ids only.
async fn limits_by_scope_and_hits(postgres: bool) {
    let (store, _dir) = open(postgres).await;
    let w = world(&store).await;
    let mut limits = Limits::default();
    limits.set(LimitKind::RequestsPerDay, Some(40));
    let scope = LimitScope::Devbox(w.devbox.id.clone());
    let now = time::now_ms();
    store
        .set_limits(&w.account, &scope, &limits, now, None)
        .await
        .unwrap();
    let gateway = LimitScope::GatewayConfig(w.gateway.id.clone());
    store
        .set_limits(&w.account, &gateway, &Limits::default(), now, None)
        .await
        .unwrap();
    let devboxes = store.limits_by_scope(&w.account, "devbox").await.unwrap();
    assert_eq!(devboxes.len(), 1);
    assert_eq!(devboxes[w.devbox.id.as_str()], limits);
    assert!(
        store
            .limits_by_scope(&w.account, "gateway")
            .await
            .unwrap()
            .is_empty(),
        "emptied limits are not listed"
    );

    let hit = airlock_core::LimitHit {
        time_ms: now,
        account_id: w.account.clone(),
        scope: scope.clone(),
        kind: LimitKind::RequestsPerDay,
        limit: 40,
        window_start_ms: 86_400_000,
        resets_at_ms: Some(172_800_000),
        devbox_id: w.devbox.id.clone(),
        gateway_config_id: w.gateway.id.clone(),
    };
    store.insert_limit_hits(&[hit]).await.unwrap();
    store.insert_limit_hits(&[]).await.unwrap();
    let listed = store
        .list_audit_events(
            &w.account,
            &AuditFilter {
                action: Some("limit.exceeded".into()),
                ..AuditFilter::default()
            },
            &Page {
                limit: 10,
                starting_after: None,
                include_total_count: false,
            },
        )
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 1);
    let e = &listed.items[0];
    assert_eq!(
        (e.object_type.as_str(), e.object_id.as_str()),
        ("devbox", w.devbox.id.as_str())
    );
    assert_eq!(e.api_key_id, None);
    let detail: serde_json::Value = serde_json::from_str(&e.detail).unwrap();
    assert_eq!(detail["limit"], "requests_per_day");
    assert_eq!(detail["value"], "40");
    assert_eq!(detail["window_start_ms"], 86_400_000);
    assert_eq!(detail["resets_at_ms"], 172_800_000);
    assert_eq!(detail["gateway_config_id"], w.gateway.id.as_str());
}

#[tokio::test]
async fn sqlite_limits_by_scope_and_hits() {
    limits_by_scope_and_hits(false).await;
}

#[tokio::test]
async fn postgres_limits_by_scope_and_hits() {
    limits_by_scope_and_hits(true).await;
}

#[tokio::test]
async fn sqlite_limits_lease_and_settle() {
    limits_lease_and_settle(false).await;
}

#[tokio::test]
async fn postgres_limits_lease_and_settle() {
    limits_lease_and_settle(true).await;
}

/// A router config round-trips; its token has no secret; a targeted reload of the router (or
/// its token) brings its backends' gateway configs and secrets; a database at 0005 keeps its
/// tokens through the rebuild of `gateway_tokens` (SQLite) and takes a router token after.
async fn router_round_trip(postgres: bool) {
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
    store.migrate_up_to(5).await.unwrap();
    // A token as the 0005 release wrote it, in its own columns.
    let pool = sqlx::AnyPool::connect(&url).await.unwrap();
    let (old_account, old_secret, old_gateway, old_devbox, old_token) = (
        AccountId::generate(),
        SecretId::generate(),
        GatewayConfigId::generate(),
        DevboxId::generate(),
        TokenId::generate(),
    );
    let digest = BearerSecret::generate(SecretKind::Gateway)
        .digest()
        .to_hex();
    for (sql, binds) in [
        (
            "INSERT INTO accounts (id, name, operator, create_time_ms) VALUES ($1, 'old', 0, 1)",
            vec![old_account.to_string()],
        ),
        (
            "INSERT INTO secrets (id, account_id, name, version, sealed, key_id, create_time_ms, update_time_ms)
             VALUES ($1, $2, 'OLD', 1, $3, 1, 1, 1)",
            vec![old_secret.to_string(), old_account.to_string(), String::new()],
        ),
        (
            "INSERT INTO gateway_configs (id, account_id, name, endpoint, auth_type, auth_key, custom_headers, description,
                create_time_ms, update_time_ms, binding)
             VALUES ($1, $2, 'old-gw', 'https://api.example.com/v1', 'bearer', NULL, '[]', NULL, 1, 1, NULL)",
            vec![old_gateway.to_string(), old_account.to_string()],
        ),
        (
            "INSERT INTO devboxes (id, account_id, name, status, source_addresses, metadata, create_time_ms, update_time_ms)
             VALUES ($1, $2, NULL, 'running', '[\"10.0.0.1\"]', '{}', 1, 1)",
            vec![old_devbox.to_string(), old_account.to_string()],
        ),
        (
            "INSERT INTO gateway_tokens (id, account_id, devbox_id, gateway_config_id, secret_id, prefix, digest, create_time_ms, scope)
             VALUES ($1, $2, $3, $4, $5, 'OLD', $6, 1, NULL)",
            vec![
                old_token.to_string(),
                old_account.to_string(),
                old_devbox.to_string(),
                old_gateway.to_string(),
                old_secret.to_string(),
                digest,
            ],
        ),
    ] {
        let mut q = sqlx::query(sql);
        for (i, b) in binds.into_iter().enumerate() {
            // The sealed value is a blob.
            q = if i == 2 && sql.contains("INTO secrets") {
                q.bind(vec![1u8, 2, 3])
            } else {
                q.bind(b)
            };
        }
        q.execute(&pool).await.unwrap();
    }
    pool.close().await;
    store.migrate().await.unwrap();
    let before = store.load_all().await.unwrap();
    let kept = before
        .tokens
        .iter()
        .find(|t| t.id == old_token)
        .expect("the token survived the migration");
    assert_eq!(kept.secret_id.as_ref(), Some(&old_secret));
    let w = world(&store).await;
    store
        .register_devbox(
            &w.devbox,
            std::slice::from_ref(&w.token),
            &audit(&w.account, "devbox.create"),
        )
        .await
        .unwrap();

    let mut aliases = std::collections::BTreeMap::new();
    aliases.insert("fast".to_owned(), (0, "claude-sonnet-4-5".to_owned()));
    let config = router::RouterConfig {
        backends: vec![router::Backend {
            name: "g".into(),
            gateway: w.gateway.id.clone(),
            secret: w.secret.id.clone(),
            weight: 3,
            priority: -2,
            models: vec!["claude-sonnet-4-5".into()],
            limits: router::BackendLimits {
                rpm: Some(2),
                tpm: None,
                rpd: Some(1000),
            },
        }],
        strategy: router::Strategy::Latency,
        fallback: false,
        max_attempts: 2,
        timeout_ms: 1234,
        aliases,
    };
    let now = time::now_ms();
    let row = GatewayConfigRow {
        id: GatewayConfigId::generate(),
        account_id: w.account.clone(),
        name: Label::parse("n", "router").unwrap(),
        endpoint: Endpoint::parse("e", router::ROUTER_PLACEHOLDER_ENDPOINT).unwrap(),
        auth: AuthMechanism::Bearer,
        custom_headers: vec![],
        description: None,
        create_time_ms: now,
        update_time_ms: now,
        binding: Some(vec![1; 37]),
        llm: state::LlmSettings::default(),
        router: Some(config.clone()),
    };
    store
        .insert_gateway_config(&row, &audit(&w.account, "gateway_config.create"))
        .await
        .unwrap();
    let read = store
        .get_gateway_config(&w.account, row.id.as_str())
        .await
        .unwrap();
    assert_eq!(read.router.as_ref(), Some(&config));
    assert_ne!(read.binding_message(), w.gateway.binding_message());

    let token = TokenRow {
        id: TokenId::generate(),
        gateway_config_id: row.id.clone(),
        secret_id: None,
        prefix: None,
        digest: BearerSecret::generate(SecretKind::Gateway).digest(),
        ..w.token.clone()
    };
    store
        .insert_gateway_token(&token, &audit(&w.account, "token.create"))
        .await
        .unwrap();
    let loaded = store.load_token(&token.digest).await.unwrap().unwrap();
    assert_eq!(loaded.tokens[0].secret_id, None);
    assert!(
        loaded.gateways.iter().any(|g| g.id == w.gateway.id),
        "the backend's config"
    );
    assert!(
        loaded.secrets.iter().any(|s| s.id == w.secret.id),
        "the backend's secret"
    );
    let router_record = loaded.gateways.iter().find(|g| g.id == row.id).unwrap();
    assert_eq!(router_record.router.as_ref(), Some(&config));
    let changed = store
        .load_changed(&[Change::GatewayConfig(row.id.clone())])
        .await
        .unwrap();
    assert!(changed.gateways.iter().any(|g| g.id == w.gateway.id));
    assert!(changed.secrets.iter().any(|s| s.id == w.secret.id));
    let all = store.load_all().await.unwrap();
    assert!(all
        .tokens
        .iter()
        .any(|t| t.id == token.id && t.secret_id.is_none()));
    let infos = store
        .list_gateway_tokens(&w.account, &w.devbox.id)
        .await
        .unwrap();
    assert!(infos
        .iter()
        .any(|t| t.id == token.id && t.secret_id.is_none()));
}

#[tokio::test]
async fn sqlite_router_round_trip() {
    router_round_trip(false).await;
}

#[tokio::test]
async fn postgres_router_round_trip() {
    router_round_trip(true).await;
}
