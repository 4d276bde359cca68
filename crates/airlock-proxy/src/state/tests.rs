//! The state's tests, and their fixtures: a keyring, and a token with its devbox, gateway
//! config and secret.

use airlock_core::binding::GATEWAY_BINDING;
use airlock_core::state::{DevboxRecord, GatewayRecord, SecretRecord, TokenRecord};
use airlock_core::{
    AccountId, AuthMechanism, BearerSecret, DevboxId, Endpoint, GatewayConfigId, SecretId,
    SecretKind, SourceAddresses, TokenId,
};
use airlock_crypto::{MasterKey, SecretContext};

use super::tokens::Bucket;
use super::*;

pub(crate) fn keyring() -> Arc<Keyring> {
    Arc::new(Keyring::new(vec![MasterKey::generate().unwrap()]).unwrap())
}

pub(crate) struct Fixture {
    pub(crate) account: AccountId,
    pub(crate) devbox: DevboxRecord,
    pub(crate) gateway: GatewayRecord,
    pub(crate) secret: SecretRecord,
}

pub(crate) fn fixture(keyring: &Keyring, value: &[u8]) -> Fixture {
    let account = AccountId::generate();
    let secret_id = SecretId::generate();
    let ctx = SecretContext {
        account_id: account.as_str(),
        secret_id: secret_id.as_str(),
        version: 1,
    };
    let sealed = keyring.seal(&ctx, value).unwrap();
    let mut gateway = GatewayRecord {
        id: GatewayConfigId::generate(),
        account_id: account.clone(),
        endpoint: Endpoint::parse("e", "https://api.example.com/v1").unwrap(),
        auth: AuthMechanism::Bearer,
        custom_headers: Vec::new(),
        binding: None,
        llm: Default::default(),
        router: None,
    };
    gateway.binding = Some(
        keyring
            .bind(GATEWAY_BINDING, &gateway.binding_message())
            .unwrap(),
    );
    Fixture {
        devbox: DevboxRecord {
            id: DevboxId::generate(),
            account_id: account.clone(),
            running: true,
            source_addresses: SourceAddresses::parse("s", &["127.0.0.1"]).unwrap(),
        },
        gateway,
        secret: SecretRecord {
            id: secret_id,
            account_id: account.clone(),
            version: 1,
            sealed,
        },
        account,
    }
}

pub(crate) fn token(f: &Fixture) -> (BearerSecret, TokenRecord) {
    let secret = BearerSecret::generate(SecretKind::Gateway);
    let record = TokenRecord {
        id: TokenId::generate(),
        digest: secret.digest(),
        account_id: f.account.clone(),
        devbox_id: f.devbox.id.clone(),
        gateway_config_id: f.gateway.id.clone(),
        secret_id: Some(f.secret.id.clone()),
        expires_at_ms: None,
        scope: None,
        revoked: false,
    };
    (secret, record)
}

fn snapshot(f: &Fixture, tokens: Vec<TokenRecord>) -> StateSnapshot {
    StateSnapshot {
        tokens,
        devboxes: vec![f.devbox.clone()],
        gateways: vec![f.gateway.clone()],
        secrets: vec![f.secret.clone()],
    }
}

#[test]
fn full_load_then_lookup() {
    let keys = keyring();
    let f = fixture(&keys, b"sk-one");
    let tokens: Vec<_> = (0..1000).map(|_| token(&f)).collect();
    let state = State::new(keys.clone());
    assert!(!state.ready());
    let all = snapshot(&f, tokens.iter().map(|t| t.1.clone()).collect());
    state.replace(build(&keys, &all), state.version());
    assert!(state.ready());
    assert_eq!(state.token_count(), 1000);
    for (secret, record) in &tokens {
        let entry = state.lookup(&secret.digest()).unwrap();
        assert_eq!(entry.id, record.id);
        let material = entry.secret.as_ref().unwrap().load().unwrap();
        let value = material
            .material()
            .unwrap()
            .credential(&Credential::Bearer)
            .unwrap();
        assert_eq!(value.as_bytes(), b"Bearer sk-one");
        assert!(value.is_sensitive());
    }
    let stranger = BearerSecret::generate(SecretKind::Gateway);
    assert!(state.lookup(&stranger.digest()).is_none());
    assert!(state.refusal(&stranger.digest()).is_none());
}

#[test]
fn changes_apply_through_slots() {
    let keys = keyring();
    let mut f = fixture(&keys, b"sk-one");
    let (t1, r1) = token(&f);
    let state = State::new(keys.clone());
    state.replace(
        build(&keys, &snapshot(&f, vec![r1.clone()])),
        state.version(),
    );
    let before = state.lookup(&t1.digest()).unwrap();
    let held = before.secret.as_ref().unwrap().load().unwrap();

    // Rotation: one new version of the secret; the running request keeps the old one.
    let ctx = SecretContext {
        account_id: f.account.as_str(),
        secret_id: f.secret.id.as_str(),
        version: 2,
    };
    f.secret.version = 2;
    f.secret.sealed = keys.seal(&ctx, b"sk-two").unwrap();
    state.apply(
        &StateSnapshot {
            secrets: vec![f.secret.clone()],
            ..Default::default()
        },
        &[Change::Secret(f.secret.id.clone())],
    );
    let now = state
        .lookup(&t1.digest())
        .unwrap()
        .secret
        .as_ref()
        .unwrap()
        .load()
        .unwrap();
    assert_eq!(now.version, 2);
    assert_eq!(
        now.material().unwrap().raw.as_ref().unwrap().as_bytes(),
        b"sk-two"
    );
    assert_eq!(
        held.material().unwrap().raw.as_ref().unwrap().as_bytes(),
        b"sk-one"
    );

    // A new token arrives with its references; then the devbox shuts down and the token is
    // revoked: it leaves the map with a tombstone.
    let (t2, r2) = token(&f);
    state.apply(
        &snapshot(&f, vec![r2.clone()]),
        &[Change::Token(r2.id.clone())],
    );
    assert_eq!(state.token_count(), 2);
    let mut down = f.devbox.clone();
    down.running = false;
    state.apply(
        &StateSnapshot {
            devboxes: vec![down],
            ..Default::default()
        },
        &[Change::Devbox(f.devbox.id.clone())],
    );
    assert!(
        !state
            .lookup(&t2.digest())
            .unwrap()
            .devbox
            .load()
            .unwrap()
            .running
    );
    let mut revoked = r2.clone();
    revoked.revoked = true;
    state.apply(
        &StateSnapshot {
            tokens: vec![revoked],
            ..Default::default()
        },
        &[Change::Token(r2.id.clone())],
    );
    assert!(state.lookup(&t2.digest()).is_none());
    assert_eq!(state.refusal(&t2.digest()), Some(Refusal::DevboxShutdown));
    assert_eq!(state.token_count(), 1);
    // The tombstone remembers whose token it was, for the audit trail.
    assert_owner(&state, &t2.digest(), &r2);

    // A secret asked for and absent is deleted.
    state.apply(
        &StateSnapshot::default(),
        &[Change::Secret(f.secret.id.clone())],
    );
    assert!(state
        .lookup(&t1.digest())
        .unwrap()
        .secret
        .as_ref()
        .unwrap()
        .load()
        .is_none());
}

#[test]
fn reload_leaves_tombstones_and_loads_are_dropped_when_the_state_moved() {
    let keys = keyring();
    let f = fixture(&keys, b"sk-one");
    let (t1, r1) = token(&f);
    let (t2, r2) = token(&f);
    let state = State::new(keys.clone());
    state.replace(
        build(&keys, &snapshot(&f, vec![r1.clone(), r2.clone()])),
        state.version(),
    );
    state.replace(
        build(&keys, &snapshot(&f, vec![r1.clone()])),
        state.version(),
    );
    assert!(state.lookup(&t1.digest()).is_some());
    assert!(state.lookup(&t2.digest()).is_none());
    assert_eq!(state.refusal(&t2.digest()), Some(Refusal::Revoked));
    assert_owner(&state, &t2.digest(), &r2);

    // A token that arrives while a reload is loading is not "gone" when the reload's older
    // snapshot lacks it: no tombstone, so the source is asked again.
    let started = state.version();
    let (t4, r4) = token(&f);
    state.apply(
        &snapshot(&f, vec![r4.clone()]),
        &[Change::Token(r4.id.clone())],
    );
    state.replace(build(&keys, &snapshot(&f, vec![r1.clone()])), started);
    assert!(state.lookup(&t4.digest()).is_none());
    assert_eq!(state.refusal(&t4.digest()), None);

    let (t3, r3) = token(&f);
    let seen = state.version();
    state.apply(&StateSnapshot::default(), &[]);
    assert!(!state.apply_loaded(&snapshot(&f, vec![r3.clone()]), seen));
    assert!(state.lookup(&t3.digest()).is_none());
    assert!(state.apply_loaded(&snapshot(&f, vec![r3]), state.version()));
    assert!(state.lookup(&t3.digest()).is_some());
}

/// A full reload in pages of one record, shaped as the store hands them over: the live
/// entries of unchanged tokens are kept (the same allocation), a token whose record changed
/// gets a new entry, objects are updated in their live slots (which a running request does
/// not see: it holds the versions it loaded), and a token absent from the load is dropped.
#[test]
fn a_paged_reload_keeps_unchanged_entries_and_updates_slots_in_place() {
    let keys = keyring();
    let mut f = fixture(&keys, b"sk-one");
    let (t1, r1) = token(&f);
    let (t2, r2) = token(&f);
    let (t3, r3) = token(&f);
    let state = Arc::new(State::new(keys.clone()));
    state.replace(
        build(
            &keys,
            &snapshot(&f, vec![r1.clone(), r2.clone(), r3.clone()]),
        ),
        state.version(),
    );
    let e1 = state.lookup(&t1.digest()).unwrap();
    let e2 = state.lookup(&t2.digest()).unwrap();
    let held = e1.secret.as_ref().unwrap().load().unwrap();

    // Meanwhile: the secret was rotated, t2's expiry changed, t3 is gone and t4 is new.
    f.secret.version = 2;
    f.secret.sealed = keys
        .seal(
            &SecretContext {
                account_id: f.account.as_str(),
                secret_id: f.secret.id.as_str(),
                version: 2,
            },
            b"sk-two",
        )
        .unwrap();
    let mut r2 = r2;
    r2.expires_at_ms = Some(airlock_core::time::now_ms() + 3_600_000);
    let (t4, r4) = token(&f);
    let started = state.version();
    let mut builder = Builder::new(keys.clone(), Some(state.clone()));
    builder.absorb(&StateSnapshot {
        gateways: vec![f.gateway.clone()],
        secrets: vec![f.secret.clone()],
        ..Default::default()
    });
    builder.absorb(&StateSnapshot {
        devboxes: vec![f.devbox.clone()],
        ..Default::default()
    });
    for r in [r1, r2, r4] {
        builder.absorb(&StateSnapshot {
            tokens: vec![r],
            ..Default::default()
        });
    }
    state.replace(builder.finish(), started);

    let now1 = state.lookup(&t1.digest()).unwrap();
    assert!(
        Arc::ptr_eq(&now1, &e1),
        "an unchanged token got a new entry"
    );
    let now2 = state.lookup(&t2.digest()).unwrap();
    assert!(!Arc::ptr_eq(&now2, &e2));
    assert!(now2.expires_at_ms.is_some());
    // One slot, updated in place: the kept entry sees the rotation; the request that loaded
    // version 1 keeps it.
    assert!(Arc::ptr_eq(
        now1.secret.as_ref().unwrap(),
        now2.secret.as_ref().unwrap()
    ));
    assert_eq!(now1.secret.as_ref().unwrap().load().unwrap().version, 2);
    assert_eq!(held.version, 1);
    assert!(state.lookup(&t4.digest()).is_some());
    assert!(state.lookup(&t3.digest()).is_none());
    assert_eq!(state.refusal(&t3.digest()), Some(Refusal::Revoked));
    assert_eq!(state.token_count(), 3);
}

#[test]
fn a_secret_that_does_not_open_is_unavailable_not_a_panic() {
    let keys = keyring();
    let mut f = fixture(&keys, b"sk-one");
    f.secret.sealed[20] ^= 1;
    let (t, r) = token(&f);
    let state = State::new(keys.clone());
    state.replace(build(&keys, &snapshot(&f, vec![r])), state.version());
    let secret = state
        .lookup(&t.digest())
        .unwrap()
        .secret
        .as_ref()
        .unwrap()
        .load()
        .unwrap();
    assert!(secret.material().is_none());
    assert!(!format!("{secret:?}").contains("sk-one"));
}

#[test]
fn buckets_keep_colliding_digests_apart() {
    let keys = keyring();
    let f = fixture(&keys, b"v");
    let mut reg = Registry::default();
    let (_, r1) = token(&f);
    let (_, mut r2) = token(&f);
    // Same first 8 bytes (the lookup key), different digest.
    let mut bytes = *r1.digest.as_bytes();
    bytes[31] ^= 0xff;
    r2.digest = TokenDigest::from_bytes(bytes);
    let e1 = Arc::new(reg.token_entry(&r1));
    let e2 = Arc::new(reg.token_entry(&r2));
    let b = Bucket::with(None, e1);
    let b = Bucket::with(Some(&b), e2);
    assert_eq!(b.entries().len(), 2);
    let b = b.without(&r1.digest).unwrap();
    assert_eq!(b.entries().len(), 1);
    assert!(b.entries()[0].digest.ct_eq(&r2.digest));
    assert!(b.without(&r2.digest).is_none());
}

/// A stale "the source does not know it" answer (an on-demand load asked before a full
/// reload removed the token) must not replace the reload's tombstone.
#[test]
fn an_unknown_answer_does_not_replace_a_tombstone() {
    let state = State::new(keyring());
    let revoked = TokenDigest::of("gws_revoked");
    lock(&state.refusals).put(revoked, Refusal::Revoked);
    state.remember_unknown(revoked);
    assert_eq!(state.refusal(&revoked), Some(Refusal::Revoked));
    let never = TokenDigest::of("gws_never_seen");
    assert_eq!(state.refusal(&never), None);
    state.remember_unknown(never);
    assert_eq!(state.refusal(&never), Some(Refusal::Unknown));
}

/// A tombstone carries the ids of the token's account, devbox, gateway and the token's own id.
fn assert_owner(state: &State, digest: &TokenDigest, record: &TokenRecord) {
    let (_, owner) = state.refusal_owned(digest).expect("a tombstone");
    let owner = owner.expect("the tombstone of a known token has its owner");
    assert_eq!(*owner.account_id, record.account_id);
    assert_eq!(owner.devbox_id, record.devbox_id);
    assert_eq!(owner.gateway_config_id, record.gateway_config_id);
    assert_eq!(owner.token_id, record.id);
}
