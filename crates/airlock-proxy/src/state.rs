//! The data plane's in-memory state: which tokens exist and what each one is bound to.
//!
//! # Shape
//!
//! A token entry points at three *slots*: its devbox, its gateway config and its secret. A slot
//! is an `ArcSwapOption` holding the object's current version, and every token of that object
//! shares the slot. So a secret rotation, a gateway update or a devbox shutdown is one pointer
//! store, seen by every token at once, however many tokens there are; and a request that loaded
//! the slots at its start keeps the versions it loaded (a rotation mid-stream changes nothing for
//! a running request).
//!
//! Tokens live in [`SHARDS`] hash maps keyed by [`TokenDigest::lookup_key`], each behind an
//! `ArcSwap`. A lookup is two atomic loads and one probe, with no lock: readers never wait for
//! writers. A writer clones one shard (about `n / 256` entries), changes it and swaps it in, so
//! adding a token costs microseconds even with a million of them. Writers are serialised by the
//! registry mutex, which readers never touch. A full reload builds a complete new set of slots
//! and shards aside (in a blocking thread), then swaps the shards in one by one; requests keep
//! running on the old shards meanwhile. Sharded `RwLock`s (dashmap-style) were the alternative;
//! they make readers and writers contend on the same shard lock, and a million-token reload
//! would have to hold them.
//!
//! Tokens that disappear (revoked, expired, their devbox shut down) leave a tombstone in a
//! small bounded cache, so that the next request can be told why it is refused without asking
//! the database; the same cache remembers digests the database did not know (a negative cache).

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use airlock_core::binding::GATEWAY_BINDING;
use airlock_core::state::{Change, GatewayRecord, SecretRecord, StateSnapshot, TokenRecord};
use airlock_core::{
    AccountId, AuthMechanism, DevboxId, GatewayConfigId, HeaderSource, SecretId, SourceAddresses,
    TokenDigest, TokenId,
};
use airlock_crypto::{Keyring, SecretContext, SecretValue};
use arc_swap::{ArcSwap, ArcSwapOption};
use base64::Engine as _;
use http::uri::{Authority, Scheme};
use http::{HeaderName, HeaderValue};

use crate::scrub::Needle;
use crate::stage::Stage;

/// Number of token shards. A power of two; see [`shard_of`].
pub(crate) const SHARDS: usize = 256;
/// Tombstones and negative-cache entries kept at most.
const REFUSALS_CAP: usize = 65_536;
/// How long "the database does not know this digest" is believed.
const UNKNOWN_TTL: Duration = Duration::from_secs(30);

/// The digest is uniformly distributed, so its first 8 bytes are already a good hash: no need to
/// hash them again on every lookup.
#[derive(Default, Clone, Copy)]
pub(crate) struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only u64 keys are hashed; this keeps the hasher total for any other use.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type Shard = HashMap<u64, Bucket, BuildHasherDefault<KeyHasher>>;

/// Compares two digests in constant time, as four 64-bit words: no early exit, and about a
/// tenth of the cost of a byte-by-byte `subtle` comparison, which the lookup profile showed.
fn digest_eq(a: &TokenDigest, b: &TokenDigest) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut diff = 0u64;
    for i in 0..4 {
        let word = |d: &[u8; 32]| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&d[i * 8..i * 8 + 8]);
            u64::from_ne_bytes(w)
        };
        diff |= word(a) ^ word(b);
    }
    std::hint::black_box(diff) == 0
}

/// The shard a key lives in. hashbrown indexes buckets with the low bits and tags them with the
/// top seven, so the shard is chosen from bits in between: within a shard, keys still differ in
/// the bits the table uses.
fn shard_of(key: u64) -> usize {
    ((key >> 32) as usize) & (SHARDS - 1)
}

/// Tokens under one lookup key: almost always one; a 64-bit collision is handled, not assumed away.
#[derive(Clone)]
enum Bucket {
    One(Arc<TokenEntry>),
    Many(Box<[Arc<TokenEntry>]>),
}

impl Bucket {
    fn entries(&self) -> &[Arc<TokenEntry>] {
        match self {
            Bucket::One(e) => std::slice::from_ref(e),
            Bucket::Many(v) => v,
        }
    }

    fn with(self_: Option<&Bucket>, entry: Arc<TokenEntry>) -> Bucket {
        let Some(existing) = self_ else {
            return Bucket::One(entry);
        };
        let mut v: Vec<Arc<TokenEntry>> = existing
            .entries()
            .iter()
            .filter(|e| !e.digest.ct_eq(&entry.digest))
            .cloned()
            .collect();
        if v.is_empty() {
            return Bucket::One(entry);
        }
        v.push(entry);
        Bucket::Many(v.into_boxed_slice())
    }

    fn without(&self, digest: &TokenDigest) -> Option<Bucket> {
        let v: Vec<Arc<TokenEntry>> = self
            .entries()
            .iter()
            .filter(|e| !e.digest.ct_eq(digest))
            .cloned()
            .collect();
        match v.len() {
            0 => None,
            1 => v.into_iter().next().map(Bucket::One),
            _ => Some(Bucket::Many(v.into_boxed_slice())),
        }
    }
}

/// One object's current version, shared by every token that references the object.
pub(crate) struct Slot<K, T> {
    pub(crate) id: K,
    current: ArcSwapOption<T>,
    /// The object is present in the database but refused: a gateway config whose binding does
    /// not check. The slot is empty then; this only says why.
    unverified: AtomicBool,
}

impl<K, T> Slot<K, T> {
    fn new(id: K) -> Self {
        Slot {
            id,
            current: ArcSwapOption::empty(),
            unverified: AtomicBool::new(false),
        }
    }

    /// Whether the object was refused because its binding did not check.
    pub(crate) fn is_unverified(&self) -> bool {
        self.unverified.load(Ordering::Acquire)
    }

    /// The current version, for a request to keep until it ends.
    pub(crate) fn load(&self) -> Option<Arc<T>> {
        self.current.load_full()
    }

    fn store(&self, value: Option<Arc<T>>) {
        self.current.store(value);
    }
}

pub(crate) type DevboxSlot = Slot<DevboxId, DevboxState>;
pub(crate) type GatewaySlot = Slot<GatewayConfigId, GatewayEntry>;
pub(crate) type SecretSlot = Slot<SecretId, SecretEntry>;

pub(crate) struct DevboxState {
    /// Shared with the account's other devboxes and tokens (a million devboxes need not hold a
    /// million copies of a few account ids).
    pub(crate) account_id: Arc<AccountId>,
    pub(crate) running: bool,
    pub(crate) source_addresses: SourceAddresses,
}

/// A token as the data plane keeps it: ids, expiry and its three slots.
pub(crate) struct TokenEntry {
    pub(crate) digest: TokenDigest,
    pub(crate) id: TokenId,
    pub(crate) account_id: Arc<AccountId>,
    pub(crate) expires_at_ms: Option<i64>,
    /// The registry version that inserted it: a full reload leaves tombstones only for tokens
    /// that were there before it started (a token inserted meanwhile is not "gone", just newer
    /// than the reload's snapshot).
    since: u64,
    pub(crate) devbox: Arc<DevboxSlot>,
    pub(crate) gateway: Arc<GatewaySlot>,
    pub(crate) secret: Arc<SecretSlot>,
}

/// How the primary credential is placed.
pub(crate) enum Credential {
    Bearer,
    Header(HeaderName),
    Basic,
}

pub(crate) enum CustomValue {
    Literal(HeaderValue),
    Secret(Arc<SecretSlot>),
}

/// A gateway config, prepared for the hot path: everything a request needs is already a header
/// name, a header value or a URI part.
pub(crate) struct GatewayEntry {
    pub(crate) account_id: AccountId,
    pub(crate) scheme: Scheme,
    pub(crate) authority: Authority,
    /// `Host` sent upstream (the endpoint's authority, port only when not the default).
    pub(crate) host: HeaderValue,
    /// Empty or `/a/b`.
    pub(crate) base_path: Box<str>,
    pub(crate) credential: Credential,
    pub(crate) custom: Box<[(HeaderName, CustomValue)]>,
    /// The stages its requests go through (`stage`), chosen when the entry is built; empty for
    /// a plain passthrough gateway.
    pub(crate) stages: Box<[Arc<dyn Stage>]>,
}

/// A secret's current version, opened.
pub(crate) struct SecretEntry {
    pub(crate) account_id: AccountId,
    pub(crate) version: i64,
    /// The ciphertext it was opened from: a reload that finds the same version keeps the opened
    /// value only if the row still holds these bytes (a ciphertext swapped in the database must
    /// be opened, and fail, not be papered over by the value already in memory).
    sealed: Box<[u8]>,
    /// `None` when it could not be opened (logged by id): its tokens answer `secret_unavailable`.
    material: Option<Material>,
}

/// The opened value in the forms the hot path needs, built once per version.
pub(crate) struct Material {
    _value: SecretValue,
    /// `<secret>`, for a header credential or a custom header; `None` if not a valid header value.
    pub(crate) raw: Option<HeaderValue>,
    /// `Bearer <secret>`.
    pub(crate) bearer: Option<HeaderValue>,
    /// `Basic base64(<secret>)`.
    pub(crate) basic: Option<HeaderValue>,
    /// The bytes to scrub from response headers: the value itself and its base64 form.
    pub(crate) needles: [Needle; 2],
}

impl std::fmt::Debug for SecretEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretEntry")
            .field("account_id", &self.account_id)
            .field("version", &self.version)
            .field("opened", &self.material.is_some())
            .finish()
    }
}

impl SecretEntry {
    pub(crate) fn material(&self) -> Option<&Material> {
        self.material.as_ref()
    }

    fn open(keyring: &Keyring, record: &SecretRecord) -> SecretEntry {
        let ctx = SecretContext {
            account_id: record.account_id.as_str(),
            secret_id: record.id.as_str(),
            version: record.version,
        };
        let material = match keyring.open(&ctx, &record.sealed) {
            Ok(value) => Some(Material::new(value)),
            Err(err) => {
                // The error names no key material; the id tells the operator which row to look at.
                tracing::error!(secret_id = %record.id, version = record.version, error = %err,
                    "cannot open a secret; requests that use it will fail");
                None
            }
        };
        SecretEntry {
            account_id: record.account_id.clone(),
            version: record.version,
            sealed: record.sealed.clone().into_boxed_slice(),
            material,
        }
    }
}

impl Material {
    fn new(value: SecretValue) -> Material {
        let bytes = value.expose();
        let sensitive = |v: Vec<u8>| {
            HeaderValue::from_maybe_shared(bytes::Bytes::from(v))
                .ok()
                .map(|mut h| {
                    h.set_sensitive(true);
                    h
                })
        };
        let b64 = zeroize::Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(bytes));
        let mut bearer = Vec::with_capacity(7 + bytes.len());
        bearer.extend_from_slice(b"Bearer ");
        bearer.extend_from_slice(bytes);
        let mut basic = Vec::with_capacity(6 + b64.len());
        basic.extend_from_slice(b"Basic ");
        basic.extend_from_slice(b64.as_bytes());
        Material {
            raw: sensitive(bytes.to_vec()),
            bearer: sensitive(bearer),
            basic: sensitive(basic),
            needles: [Needle::new(bytes), Needle::new(b64.as_bytes())],
            _value: value,
        }
    }

    /// The value of the credential header for this mechanism.
    pub(crate) fn credential(&self, credential: &Credential) -> Option<&HeaderValue> {
        match credential {
            Credential::Bearer => self.bearer.as_ref(),
            Credential::Header(_) => self.raw.as_ref(),
            Credential::Basic => self.basic.as_ref(),
        }
    }
}

/// Why a token that is not in the map is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    Unknown,
    Revoked,
    Expired,
    DevboxShutdown,
}

struct Tomb {
    digest: TokenDigest,
    reason: Refusal,
    at: Instant,
    seq: u64,
}

/// Tombstones and the negative cache, bounded, oldest evicted first.
#[derive(Default)]
struct Refusals {
    map: HashMap<u64, Tomb, BuildHasherDefault<KeyHasher>>,
    order: VecDeque<(u64, u64)>,
    seq: u64,
}

impl Refusals {
    fn get(&self, digest: &TokenDigest) -> Option<Refusal> {
        let tomb = self.map.get(&digest.lookup_key())?;
        if !tomb.digest.ct_eq(digest) {
            return None;
        }
        if tomb.reason == Refusal::Unknown && tomb.at.elapsed() > UNKNOWN_TTL {
            return None;
        }
        Some(tomb.reason)
    }

    fn put(&mut self, digest: TokenDigest, reason: Refusal) {
        let key = digest.lookup_key();
        self.seq += 1;
        self.map.insert(
            key,
            Tomb {
                digest,
                reason,
                at: Instant::now(),
                seq: self.seq,
            },
        );
        self.order.push_back((key, self.seq));
        while self.map.len() > REFUSALS_CAP {
            let Some((old, seq)) = self.order.pop_front() else {
                break;
            };
            if self.map.get(&old).is_some_and(|t| t.seq == seq) {
                self.map.remove(&old);
            }
        }
        // Entries overwritten in place leave stale order records; keep the queue bounded too.
        if self.order.len() > 2 * REFUSALS_CAP {
            let map = &self.map;
            self.order
                .retain(|(k, s)| map.get(k).is_some_and(|t| t.seq == *s));
        }
    }

    fn forget(&mut self, digest: &TokenDigest) {
        let key = digest.lookup_key();
        if self.map.get(&key).is_some_and(|t| t.digest.ct_eq(digest)) {
            self.map.remove(&key);
        }
    }
}

/// The writer's side: ids to slots. Only writers (the feed task, on-demand loads) touch it.
#[derive(Default)]
pub(crate) struct Registry {
    devboxes: HashMap<DevboxId, Arc<DevboxSlot>>,
    gateways: HashMap<GatewayConfigId, Arc<GatewaySlot>>,
    secrets: HashMap<SecretId, Arc<SecretSlot>>,
    accounts: HashMap<AccountId, Arc<AccountId>>,
    /// Bumped by every write, so that an on-demand load can tell whether the state moved while
    /// it was asking the database.
    version: u64,
}

/// A change to the token map, computed under the registry lock and applied shard by shard.
enum TokenOp {
    Put(Arc<TokenEntry>),
    Remove(TokenDigest, Refusal),
    RemoveId(TokenId),
}

impl Registry {
    fn devbox_slot(&mut self, id: &DevboxId) -> Arc<DevboxSlot> {
        self.devboxes
            .entry(id.clone())
            .or_insert_with(|| Arc::new(Slot::new(id.clone())))
            .clone()
    }

    fn gateway_slot(&mut self, id: &GatewayConfigId) -> Arc<GatewaySlot> {
        self.gateways
            .entry(id.clone())
            .or_insert_with(|| Arc::new(Slot::new(id.clone())))
            .clone()
    }

    fn secret_slot(&mut self, id: &SecretId) -> Arc<SecretSlot> {
        self.secrets
            .entry(id.clone())
            .or_insert_with(|| Arc::new(Slot::new(id.clone())))
            .clone()
    }

    fn account(&mut self, id: &AccountId) -> Arc<AccountId> {
        self.accounts
            .entry(id.clone())
            .or_insert_with(|| Arc::new(id.clone()))
            .clone()
    }

    /// Writes the records of `snapshot` into their slots and returns what to do to the token
    /// map. Objects named in `asked` and absent from the snapshot are gone.
    fn absorb(
        &mut self,
        keyring: &Keyring,
        snapshot: &StateSnapshot,
        asked: &[Change],
        now_ms: i64,
    ) -> Vec<TokenOp> {
        self.absorb_objects(keyring, snapshot, asked);
        self.token_ops(snapshot, asked, now_ms, None)
    }

    /// Takes over the live registry's slots (and shared account ids) for the objects `page`
    /// names, so that a full reload updates the live slots in place and can keep the live token
    /// entries whose records did not change (see [`Builder`]).
    fn inherit(&mut self, live: &Registry, page: &StateSnapshot) {
        fn take<K: Clone + Eq + std::hash::Hash, V: Clone>(
            mine: &mut HashMap<K, V>,
            live: &HashMap<K, V>,
            id: &K,
        ) {
            if !mine.contains_key(id) {
                if let Some(v) = live.get(id) {
                    mine.insert(id.clone(), v.clone());
                }
            }
        }
        for r in &page.secrets {
            take(&mut self.secrets, &live.secrets, &r.id);
        }
        for r in &page.gateways {
            take(&mut self.gateways, &live.gateways, &r.id);
            for h in &r.custom_headers {
                if let HeaderSource::Secret(id) = &h.source {
                    take(&mut self.secrets, &live.secrets, id);
                }
            }
        }
        for r in &page.devboxes {
            take(&mut self.devboxes, &live.devboxes, &r.id);
        }
        for r in &page.tokens {
            take(&mut self.devboxes, &live.devboxes, &r.devbox_id);
            take(&mut self.gateways, &live.gateways, &r.gateway_config_id);
            take(&mut self.secrets, &live.secrets, &r.secret_id);
            take(&mut self.accounts, &live.accounts, &r.account_id);
        }
    }

    /// Writes the devboxes, gateway configs and secrets of `snapshot` into their slots.
    fn absorb_objects(&mut self, keyring: &Keyring, snapshot: &StateSnapshot, asked: &[Change]) {
        self.version += 1;
        for record in &snapshot.secrets {
            let slot = self.secret_slot(&record.id);
            let current = slot.load();
            let same = current.as_ref().is_some_and(|c| {
                c.version == record.version
                    && c.account_id == record.account_id
                    // public: ciphertexts, compared only to notice a change.
                    && *c.sealed == *record.sealed
                    && c.material.is_some()
            });
            if !same {
                slot.store(Some(Arc::new(SecretEntry::open(keyring, record))));
            }
        }
        for record in &snapshot.gateways {
            let entry = self.gateway_entry(keyring, record);
            let slot = self.gateway_slot(&record.id);
            slot.unverified.store(
                matches!(entry, Err(Unusable::Unverified)),
                Ordering::Release,
            );
            slot.store(entry.ok().map(Arc::new));
        }
        for record in &snapshot.devboxes {
            let slot = self.devbox_slot(&record.id);
            // A reload sees every devbox again; most have not changed.
            let same = slot.load().is_some_and(|d| {
                d.running == record.running
                    && *d.account_id == record.account_id
                    && d.source_addresses == record.source_addresses
            });
            if !same {
                let state = DevboxState {
                    account_id: self.account(&record.account_id),
                    running: record.running,
                    source_addresses: record.source_addresses.clone(),
                };
                slot.store(Some(Arc::new(state)));
            }
        }
        for change in asked {
            match change {
                Change::Secret(id) if !snapshot.secrets.iter().any(|r| &r.id == id) => {
                    if let Some(slot) = self.secrets.get(id) {
                        slot.store(None);
                    }
                }
                Change::GatewayConfig(id) if !snapshot.gateways.iter().any(|r| &r.id == id) => {
                    if let Some(slot) = self.gateways.get(id) {
                        slot.store(None);
                    }
                }
                Change::Devbox(id) if !snapshot.devboxes.iter().any(|r| &r.id == id) => {
                    if let Some(slot) = self.devboxes.get(id) {
                        slot.store(None);
                    }
                }
                _ => {}
            }
        }
    }

    /// What to do to the token map for the tokens of `snapshot`. With `reuse`, a token whose
    /// live entry matches its record (same id, account, expiry and the very same slots) keeps
    /// that entry instead of a new copy.
    fn token_ops(
        &mut self,
        snapshot: &StateSnapshot,
        asked: &[Change],
        now_ms: i64,
        reuse: Option<&State>,
    ) -> Vec<TokenOp> {
        let mut ops = Vec::with_capacity(snapshot.tokens.len());
        for record in &snapshot.tokens {
            let expired = record.expires_at_ms.is_some_and(|t| t <= now_ms);
            if record.revoked || expired {
                let devbox_down = self
                    .devboxes
                    .get(&record.devbox_id)
                    .and_then(|s| s.load())
                    .is_none_or(|d| !d.running);
                let reason = if devbox_down {
                    Refusal::DevboxShutdown
                } else if record.revoked {
                    Refusal::Revoked
                } else {
                    Refusal::Expired
                };
                ops.push(TokenOp::Remove(record.digest, reason));
            } else {
                let live = reuse
                    .and_then(|state| state.lookup(&record.digest))
                    .filter(|e| self.unchanged(e, record));
                let entry = match live {
                    Some(entry) => entry,
                    None => Arc::new(self.token_entry(record)),
                };
                ops.push(TokenOp::Put(entry));
            }
        }
        for change in asked {
            if let Change::Token(id) = change {
                if !snapshot.tokens.iter().any(|t| &t.id == id) {
                    ops.push(TokenOp::RemoveId(id.clone()));
                }
            }
        }
        ops
    }

    /// Whether `entry` says what `record` says, with this registry's slots.
    fn unchanged(&self, entry: &TokenEntry, record: &TokenRecord) -> bool {
        entry.id == record.id
            && *entry.account_id == record.account_id
            && entry.expires_at_ms == record.expires_at_ms
            && self
                .devboxes
                .get(&record.devbox_id)
                .is_some_and(|s| Arc::ptr_eq(s, &entry.devbox))
            && self
                .gateways
                .get(&record.gateway_config_id)
                .is_some_and(|s| Arc::ptr_eq(s, &entry.gateway))
            && self
                .secrets
                .get(&record.secret_id)
                .is_some_and(|s| Arc::ptr_eq(s, &entry.secret))
    }

    fn token_entry(&mut self, record: &TokenRecord) -> TokenEntry {
        TokenEntry {
            digest: record.digest,
            id: record.id.clone(),
            account_id: self.account(&record.account_id),
            expires_at_ms: record.expires_at_ms,
            since: self.version,
            devbox: self.devbox_slot(&record.devbox_id),
            gateway: self.gateway_slot(&record.gateway_config_id),
            secret: self.secret_slot(&record.secret_id),
        }
    }

    /// Prepares a gateway config for the hot path, after checking its binding: a config changed
    /// outside the control plane (its endpoint repointed in the database, say) is refused, and
    /// nothing is ever sent for it. A config that cannot be prepared (which the control plane's
    /// validation should make impossible) is logged and treated as absent.
    fn gateway_entry(
        &mut self,
        keyring: &Keyring,
        record: &GatewayRecord,
    ) -> Result<GatewayEntry, Unusable> {
        let checked = match &record.binding {
            None => Err("it has no binding (written before migration 0003, or outside the API)"),
            Some(binding) => keyring
                .verify_binding(GATEWAY_BINDING, &record.binding_message(), binding)
                .map_err(|err| match err {
                    airlock_crypto::CryptoError::UnknownKey(_) => {
                        "its binding was made with a master key that is not loaded"
                    }
                    _ => "its endpoint, auth or custom headers do not match its binding (changed outside the API?)",
                }),
        };
        if let Err(why) = checked {
            tracing::error!(
                gateway_config_id = %record.id,
                "refusing a gateway config: {why}; its tokens get gateway_unverified"
            );
            return Err(Unusable::Unverified);
        }
        let endpoint = &record.endpoint;
        let fail = |what: &str| {
            tracing::error!(gateway_config_id = %record.id, "cannot use a gateway config: {what}");
            Err(Unusable::Invalid)
        };
        let scheme = match endpoint.scheme() {
            airlock_core::Scheme::Https => Scheme::HTTPS,
            airlock_core::Scheme::Http => Scheme::HTTP,
        };
        let Ok(authority) = Authority::try_from(endpoint.authority()) else {
            return fail("invalid endpoint authority");
        };
        let Ok(host) = HeaderValue::try_from(endpoint.authority()) else {
            return fail("invalid endpoint authority");
        };
        let credential = match &record.auth {
            AuthMechanism::Bearer => Credential::Bearer,
            AuthMechanism::Basic => Credential::Basic,
            AuthMechanism::Header { key } => match HeaderName::try_from(key.as_str()) {
                Ok(name) => Credential::Header(name),
                Err(_) => return fail("invalid credential header name"),
            },
        };
        let mut custom = Vec::with_capacity(record.custom_headers.len());
        for h in &record.custom_headers {
            let Ok(name) = HeaderName::try_from(h.name.as_str()) else {
                return fail("invalid custom header name");
            };
            let value = match &h.source {
                HeaderSource::Literal(v) => match HeaderValue::try_from(v.as_str()) {
                    Ok(v) => CustomValue::Literal(v),
                    Err(_) => return fail("invalid custom header value"),
                },
                HeaderSource::Secret(id) => CustomValue::Secret(self.secret_slot(id)),
            };
            custom.push((name, value));
        }
        Ok(GatewayEntry {
            account_id: record.account_id.clone(),
            scheme,
            authority,
            host,
            base_path: endpoint.base_path().into(),
            credential,
            custom: custom.into_boxed_slice(),
            stages: crate::stage::for_gateway(&record.llm),
        })
    }
}

/// Why a gateway config is not used.
enum Unusable {
    /// Its binding does not check.
    Unverified,
    /// It cannot be turned into header names and values.
    Invalid,
}

/// A complete state built aside by a full reload.
pub(crate) struct Built {
    registry: Registry,
    shards: Vec<Shard>,
    count: usize,
}

/// Builds a complete state from a full snapshot (tests and the property tests' fixtures).
pub(crate) fn build(keyring: &Arc<Keyring>, snapshot: &StateSnapshot) -> Built {
    let mut builder = Builder::new(keyring.clone(), None);
    builder.absorb(snapshot);
    builder.finish()
}

/// A full reload's new state, built page by page beside the live one.
///
/// It takes over the live state's slots, and the live token entries whose records did not
/// change, so that during a reload the process holds the live state plus the new hash tables
/// and one page of records, not two complete states (with a million tokens, the difference
/// between about 300 MB and over a gigabyte). Slots taken over are updated in place, which
/// requests see at once, as they see any change from the feed.
pub(crate) struct Builder {
    keyring: Arc<Keyring>,
    live: Option<Arc<State>>,
    built: Built,
    now_ms: i64,
}

impl Builder {
    pub(crate) fn new(keyring: Arc<Keyring>, live: Option<Arc<State>>) -> Builder {
        Builder {
            keyring,
            live,
            built: Built {
                registry: Registry::default(),
                shards: (0..SHARDS).map(|_| Shard::default()).collect(),
                count: 0,
            },
            now_ms: airlock_core::time::now_ms(),
        }
    }

    /// Adds one page of a full load.
    pub(crate) fn absorb(&mut self, page: &StateSnapshot) {
        let registry = &mut self.built.registry;
        if let Some(live) = &self.live {
            registry.inherit(&lock(&live.registry), page);
        }
        registry.absorb_objects(&self.keyring, page, &[]);
        let ops = registry.token_ops(page, &[], self.now_ms, self.live.as_deref());
        for op in ops {
            // A full load holds active tokens only; `token_ops` turns nothing else into a `Put`.
            if let TokenOp::Put(entry) = op {
                let key = entry.digest.lookup_key();
                let shard = &mut self.built.shards[shard_of(key)];
                let bucket = Bucket::with(shard.get(&key), entry);
                if shard.insert(key, bucket).is_none() {
                    self.built.count += 1;
                }
            }
        }
    }

    pub(crate) fn finish(self) -> Built {
        self.built
    }
}

/// The live state.
pub(crate) struct State {
    shards: Box<[ArcSwap<Shard>]>,
    registry: Mutex<Registry>,
    refusals: Mutex<Refusals>,
    count: AtomicUsize,
    ready: AtomicBool,
    keyring: Arc<Keyring>,
}

impl State {
    pub(crate) fn new(keyring: Arc<Keyring>) -> State {
        State {
            shards: (0..SHARDS)
                .map(|_| ArcSwap::from_pointee(Shard::default()))
                .collect(),
            registry: Mutex::new(Registry::default()),
            refusals: Mutex::new(Refusals::default()),
            count: AtomicUsize::new(0),
            ready: AtomicBool::new(false),
            keyring,
        }
    }

    pub(crate) fn keyring(&self) -> &Arc<Keyring> {
        &self.keyring
    }

    pub(crate) fn ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    pub(crate) fn token_count(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// The hot-path lookup: no lock, no allocation; the full digest is compared in constant time.
    pub(crate) fn lookup(&self, digest: &TokenDigest) -> Option<Arc<TokenEntry>> {
        let key = digest.lookup_key();
        let shard = self.shards[shard_of(key)].load();
        let bucket = shard.get(&key)?;
        bucket
            .entries()
            .iter()
            .find(|e| digest_eq(&e.digest, digest))
            .cloned()
    }

    /// Why a token absent from the map was refused before, if it was.
    pub(crate) fn refusal(&self, digest: &TokenDigest) -> Option<Refusal> {
        lock(&self.refusals).get(digest)
    }

    /// The source does not know this digest. A tombstone already there (revoked, shut down,
    /// expired) says more and stays: the on-demand load that ends here may have been asked
    /// before a full reload removed the token and left that tombstone.
    pub(crate) fn remember_unknown(&self, digest: TokenDigest) {
        let mut refusals = lock(&self.refusals);
        if refusals.get(&digest).is_none() {
            refusals.put(digest, Refusal::Unknown);
        }
    }

    /// The registry version, read before an on-demand load.
    pub(crate) fn version(&self) -> u64 {
        lock(&self.registry).version
    }

    /// Swaps in a state built by [`build`] from a snapshot loaded after the registry was at
    /// version `started`. Tokens that were known then and are no longer get a tombstone, worked
    /// out on the caller's (blocking) thread after the swap.
    pub(crate) fn replace(&self, built: Built, started: u64) {
        let Built {
            registry,
            shards,
            count,
        } = built;
        let old: Vec<Arc<Shard>> = {
            let mut reg = lock(&self.registry);
            let version = reg.version + 1;
            *reg = registry;
            reg.version = version;
            let old = self
                .shards
                .iter()
                .zip(shards)
                .map(|(slot, new)| slot.swap(Arc::new(new)))
                .collect();
            self.count.store(count, Ordering::Relaxed);
            old
        };
        self.ready.store(true, Ordering::Release);
        let now = airlock_core::time::now_ms();
        let mut gone = Vec::new();
        for (i, shard) in old.iter().enumerate() {
            let current = self.shards[i].load();
            for (key, bucket) in shard.iter() {
                for entry in bucket.entries() {
                    let still = current
                        .get(key)
                        .is_some_and(|b| b.entries().iter().any(|e| e.digest.ct_eq(&entry.digest)));
                    if !still && entry.since <= started {
                        gone.push((entry.digest, self.reason_gone(entry, now)));
                    }
                }
            }
        }
        if !gone.is_empty() {
            let mut refusals = lock(&self.refusals);
            for (digest, reason) in gone {
                refusals.put(digest, reason);
            }
        }
    }

    /// Why a token that a full reload no longer lists is gone: the reload does not say, so it is
    /// inferred from its devbox (as the new state sees it) and its expiry.
    fn reason_gone(&self, entry: &TokenEntry, now_ms: i64) -> Refusal {
        let reg = lock(&self.registry);
        let running = reg
            .devboxes
            .get(&entry.devbox.id)
            .and_then(|s| s.load())
            .is_some_and(|d| d.running);
        if !running {
            Refusal::DevboxShutdown
        } else if entry.expires_at_ms.is_some_and(|t| t <= now_ms) {
            Refusal::Expired
        } else {
            Refusal::Revoked
        }
    }

    /// Applies the current records of changed objects (the answer to `load_changed`).
    pub(crate) fn apply(&self, snapshot: &StateSnapshot, asked: &[Change]) {
        let mut reg = lock(&self.registry);
        let ops = reg.absorb(&self.keyring, snapshot, asked, airlock_core::time::now_ms());
        self.apply_ops(ops);
    }

    /// Applies an on-demand load, unless the state changed since `seen_version` (then the load
    /// may predate a revocation that was applied meanwhile, and it is dropped).
    pub(crate) fn apply_loaded(&self, snapshot: &StateSnapshot, seen_version: u64) -> bool {
        let mut reg = lock(&self.registry);
        if reg.version != seen_version {
            return false;
        }
        let ops = reg.absorb(&self.keyring, snapshot, &[], airlock_core::time::now_ms());
        self.apply_ops(ops);
        true
    }

    /// Runs token-map changes; the caller holds the registry lock, which serialises writers.
    fn apply_ops(&self, ops: Vec<TokenOp>) {
        let mut by_shard: HashMap<usize, Vec<TokenOp>> = HashMap::new();
        let mut by_id = Vec::new();
        for op in ops {
            match &op {
                TokenOp::Put(e) => by_shard
                    .entry(shard_of(e.digest.lookup_key()))
                    .or_default()
                    .push(op),
                TokenOp::Remove(d, _) => by_shard
                    .entry(shard_of(d.lookup_key()))
                    .or_default()
                    .push(op),
                TokenOp::RemoveId(id) => by_id.push(id.clone()),
            }
        }
        let mut tombs = Vec::new();
        for (index, ops) in by_shard {
            let mut shard = Shard::clone(&self.shards[index].load());
            for op in ops {
                match op {
                    TokenOp::Put(entry) => {
                        let key = entry.digest.lookup_key();
                        let digest = entry.digest;
                        let bucket = Bucket::with(shard.get(&key), entry);
                        if shard.insert(key, bucket).is_none() {
                            self.count.fetch_add(1, Ordering::Relaxed);
                        }
                        lock(&self.refusals).forget(&digest);
                    }
                    TokenOp::Remove(digest, reason) => {
                        let key = digest.lookup_key();
                        if let Some(bucket) = shard.get(&key) {
                            match bucket.without(&digest) {
                                Some(rest) => {
                                    shard.insert(key, rest);
                                }
                                None => {
                                    shard.remove(&key);
                                    self.count.fetch_sub(1, Ordering::Relaxed);
                                }
                            }
                        }
                        tombs.push((digest, reason));
                    }
                    TokenOp::RemoveId(_) => {}
                }
            }
            self.shards[index].store(Arc::new(shard));
        }
        // A token row that vanished entirely (never happens through the store, which only
        // revokes) can only be found by scanning.
        for id in by_id {
            for slot in self.shards.iter() {
                let shard = slot.load();
                let hits: Vec<(u64, TokenDigest)> = shard
                    .iter()
                    .flat_map(|(k, b)| {
                        b.entries()
                            .iter()
                            .filter(|e| e.id == id)
                            .map(move |e| (*k, e.digest))
                    })
                    .collect();
                if hits.is_empty() {
                    continue;
                }
                let mut copy = Shard::clone(&shard);
                for (key, digest) in hits {
                    match copy.get(&key).and_then(|b| b.without(&digest)) {
                        Some(rest) => {
                            copy.insert(key, rest);
                        }
                        None => {
                            copy.remove(&key);
                            self.count.fetch_sub(1, Ordering::Relaxed);
                        }
                    }
                    tombs.push((digest, Refusal::Revoked));
                }
                slot.store(Arc::new(copy));
            }
        }
        if !tombs.is_empty() {
            let mut refusals = lock(&self.refusals);
            for (digest, reason) in tombs {
                refusals.put(digest, reason);
            }
        }
    }
}

/// A poisoned lock means a writer panicked midway; the maps it guards are still valid (every
/// write is a whole-value swap), so carry on with them.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use airlock_core::state::DevboxRecord;
    use airlock_core::{BearerSecret, Endpoint, SecretKind};
    use airlock_crypto::MasterKey;

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
            secret_id: f.secret.id.clone(),
            expires_at_ms: None,
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
            let material = entry.secret.load().unwrap();
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
        let held = before.secret.load().unwrap();

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
        let now = state.lookup(&t1.digest()).unwrap().secret.load().unwrap();
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

        // A secret asked for and absent is deleted.
        state.apply(
            &StateSnapshot::default(),
            &[Change::Secret(f.secret.id.clone())],
        );
        assert!(state.lookup(&t1.digest()).unwrap().secret.load().is_none());
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
        let held = e1.secret.load().unwrap();

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
        assert!(Arc::ptr_eq(&now1.secret, &now2.secret));
        assert_eq!(now1.secret.load().unwrap().version, 2);
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
        let secret = state.lookup(&t.digest()).unwrap().secret.load().unwrap();
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
}
