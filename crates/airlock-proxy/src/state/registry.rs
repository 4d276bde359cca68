//! The writer's side of the state: ids to slots (the [`Registry`]), how a snapshot's records
//! become slot values and changes to the token map, and the [`Builder`] that a full reload
//! fills page by page beside the live state.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use airlock_core::binding::GATEWAY_BINDING;
use airlock_core::state::{Change, GatewayRecord, StateSnapshot, TokenRecord};
use airlock_core::{
    AccountId, AuthMechanism, DevboxId, GatewayConfigId, HeaderSource, SecretId, TokenDigest,
    TokenId,
};
use airlock_crypto::Keyring;
use http::uri::{Authority, Scheme};
use http::{HeaderName, HeaderValue};

use super::entries::{
    Credential, CustomValue, DevboxSlot, DevboxState, GatewayEntry, GatewaySlot, SecretEntry,
    SecretSlot, Slot, TokenEntry,
};
use super::refusals::{Owner, Refusal};
use super::tokens::{self, TokenTables};
use super::{lock, State};

/// The writer's side: ids to slots. Only writers (the feed task, on-demand loads) touch it.
#[derive(Default)]
pub(crate) struct Registry {
    pub(super) devboxes: HashMap<DevboxId, Arc<DevboxSlot>>,
    gateways: HashMap<GatewayConfigId, Arc<GatewaySlot>>,
    secrets: HashMap<SecretId, Arc<SecretSlot>>,
    accounts: HashMap<AccountId, Arc<AccountId>>,
    /// Each router backend's health (cooldowns, breaker, latency), by gateway and secret: it
    /// outlives a change of the router's config, and two routers over one key share it.
    health: HashMap<(GatewayConfigId, SecretId), Arc<crate::router::Health>>,
    /// Each router's recent decisions, kept across changes of its config.
    logs: HashMap<GatewayConfigId, Arc<crate::router::RoutingLog>>,
    /// Bumped by every write, so that an on-demand load can tell whether the state moved while
    /// it was asking the database.
    pub(super) version: u64,
}

/// A change to the token map, computed under the registry lock and applied shard by shard.
pub(super) enum TokenOp {
    Put(Arc<TokenEntry>),
    Remove(TokenDigest, Refusal, Option<Arc<Owner>>),
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
    pub(super) fn absorb(
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
        if self.health.is_empty() && self.logs.is_empty() {
            self.health.clone_from(&live.health);
            self.logs.clone_from(&live.logs);
        }
        for r in &page.gateways {
            take(&mut self.gateways, &live.gateways, &r.id);
            for b in r.router.iter().flat_map(|r| r.backends.iter()) {
                take(&mut self.gateways, &live.gateways, &b.gateway);
                take(&mut self.secrets, &live.secrets, &b.secret);
            }
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
            if let Some(id) = &r.secret_id {
                take(&mut self.secrets, &live.secrets, id);
            }
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
                let owner = Owner {
                    account_id: self.account(&record.account_id),
                    devbox_id: record.devbox_id.clone(),
                    gateway_config_id: record.gateway_config_id.clone(),
                    token_id: record.id.clone(),
                };
                ops.push(TokenOp::Remove(
                    record.digest,
                    reason,
                    Some(Arc::new(owner)),
                ));
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
            && match (&record.secret_id, &entry.secret) {
                (Some(id), Some(slot)) => {
                    self.secrets.get(id).is_some_and(|s| Arc::ptr_eq(s, slot))
                }
                (None, None) => true,
                _ => false,
            }
    }

    pub(super) fn token_entry(&mut self, record: &TokenRecord) -> TokenEntry {
        TokenEntry {
            digest: record.digest,
            id: record.id.clone(),
            account_id: self.account(&record.account_id),
            expires_at_ms: record.expires_at_ms,
            scope: record.scope.clone().map(Box::new),
            since: self.version,
            devbox: self.devbox_slot(&record.devbox_id),
            gateway: self.gateway_slot(&record.gateway_config_id),
            secret: record.secret_id.as_ref().map(|id| self.secret_slot(id)),
        }
    }

    /// A router gateway's current entry, for the status endpoints (not the hot path).
    pub(super) fn router(&self, id: &GatewayConfigId) -> Option<Arc<crate::router::RouterEntry>> {
        self.gateways.get(id)?.load()?.router.clone()
    }

    /// Prepares a router's backends: each one's gateway and secret slots (filled as their
    /// records arrive), and its health, shared across config changes.
    fn router_entry(
        &mut self,
        record: &GatewayRecord,
        config: &airlock_core::router::RouterConfig,
    ) -> crate::router::RouterEntry {
        let backends = config
            .backends
            .iter()
            .enumerate()
            .map(|(i, b)| crate::router::BackendEntry {
                name: b.name.clone(),
                gateway_id: b.gateway.clone(),
                gateway: self.gateway_slot(&b.gateway),
                secret: self.secret_slot(&b.secret),
                weight: b.weight,
                priority: b.priority,
                models: b.models.clone(),
                quota: crate::quota::BackendQuota::new(&record.id, i, b.limits),
                health: self
                    .health
                    .entry((b.gateway.clone(), b.secret.clone()))
                    .or_default()
                    .clone(),
            })
            .collect();
        let log = self.logs.entry(record.id.clone()).or_default().clone();
        crate::router::RouterEntry::new(config, backends, log)
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
            router: record
                .router
                .as_ref()
                .map(|config| Arc::new(self.router_entry(record, config))),
            llm: record.llm.clone(),
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
    pub(super) registry: Registry,
    pub(super) tokens: TokenTables,
    pub(super) count: usize,
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
                tokens: TokenTables::new(),
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
                let table = self.built.tokens.table_for(&entry.digest.lookup_key());
                if tokens::put(table, entry) {
                    self.built.count += 1;
                }
            }
        }
    }

    pub(crate) fn finish(self) -> Built {
        self.built
    }
}
