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
//! Tokens live in the crate's `ShardMap` (`shardmap`): [`SHARDS`] hash maps keyed by
//! [`TokenDigest::lookup_key`], each behind an `ArcSwap`. A lookup is two atomic loads and one
//! probe, with no lock: readers never wait for writers. A writer clones one shard (about
//! `n / 256` entries), changes it and swaps it in, so adding a token costs microseconds even with
//! a million of them. Writers are serialised by the registry mutex, which readers never touch
//! (so a shard's own writer lock is never contended). A full reload builds a complete new set of
//! slots and shards aside (in a blocking thread), then swaps the shards in one by one; requests
//! keep running on the old shards meanwhile. Sharded `RwLock`s (dashmap-style) were the
//! alternative; they make readers and writers contend on the same shard lock, and a
//! million-token reload would have to hold them.
//!
//! Tokens that disappear (revoked, expired, their devbox shut down) leave a tombstone in a
//! small bounded cache, so that the next request can be told why it is refused without asking
//! the database; the same cache remembers digests the database did not know (a negative cache).
//!
//! # Files
//!
//! One job each: `tokens` is the sharded token map; `entries` is what it holds (token entries,
//! the slots they share, the versions prepared for the hot path); `refusals` is the tombstones
//! and the negative cache; `registry` is the writers' side (ids to slots, turning records into
//! slot values and token-map changes, the [`Builder`] of a full reload). This file is [`State`],
//! which ties them together for readers and writers.

mod entries;
mod refusals;
mod registry;
#[cfg(test)]
pub(crate) mod tests;
mod tokens;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use airlock_core::state::{Change, StateSnapshot};
use airlock_core::TokenDigest;
use airlock_crypto::Keyring;

pub(crate) use self::entries::{
    Credential, CustomValue, DevboxSlot, GatewayEntry, GatewaySlot, Material, SecretEntry,
    SecretSlot, TokenEntry,
};
use self::refusals::Refusals;
pub(crate) use self::refusals::{Owner, Refusal};
pub(crate) use self::registry::{build, Builder, Built};
use self::registry::{Registry, TokenOp};
use self::tokens::{Tokens, SHARDS};

/// The live state.
pub(crate) struct State {
    tokens: Tokens,
    registry: Mutex<Registry>,
    refusals: Mutex<Refusals>,
    count: AtomicUsize,
    ready: AtomicBool,
    keyring: Arc<Keyring>,
}

impl State {
    pub(crate) fn new(keyring: Arc<Keyring>) -> State {
        State {
            tokens: Tokens::default(),
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
        tokens::find(&self.tokens, digest)
    }

    /// Why a token absent from the map was refused before, if it was.
    #[cfg(test)]
    pub(crate) fn refusal(&self, digest: &TokenDigest) -> Option<Refusal> {
        lock(&self.refusals).get(digest)
    }

    /// Why a token absent from the map was refused before, and whose token it was (for the
    /// audit trail) if it was a live token once.
    pub(crate) fn refusal_owned(
        &self,
        digest: &TokenDigest,
    ) -> Option<(Refusal, Option<Arc<Owner>>)> {
        lock(&self.refusals).get_owned(digest)
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

    /// A router gateway's entry by id, for the status endpoints (takes the writers' lock
    /// briefly; never on the request path).
    pub(crate) fn router(
        &self,
        id: &airlock_core::GatewayConfigId,
    ) -> Option<Arc<crate::router::RouterEntry>> {
        lock(&self.registry).router(id)
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
            tokens,
            count,
        } = built;
        let old = {
            let mut reg = lock(&self.registry);
            let version = reg.version + 1;
            *reg = registry;
            reg.version = version;
            let old = self.tokens.replace_all(tokens);
            self.count.store(count, Ordering::Relaxed);
            old
        };
        self.ready.store(true, Ordering::Release);
        let now = airlock_core::time::now_ms();
        let mut gone = Vec::new();
        for (i, shard) in old.iter().enumerate() {
            let current = self.tokens.table(i);
            for (key, bucket) in shard.iter() {
                for entry in bucket.entries() {
                    let still = current
                        .get(key)
                        .is_some_and(|b| b.entries().iter().any(|e| e.digest.ct_eq(&entry.digest)));
                    if !still && entry.since <= started {
                        let owner = Owner {
                            account_id: entry.account_id.clone(),
                            devbox_id: entry.devbox.id.clone(),
                            gateway_config_id: entry.gateway.id.clone(),
                            token_id: entry.id.clone(),
                        };
                        gone.push((entry.digest, self.reason_gone(entry, now), owner));
                    }
                }
            }
        }
        if !gone.is_empty() {
            let mut refusals = lock(&self.refusals);
            for (digest, reason, owner) in gone {
                refusals.put_owned(digest, reason, Some(Arc::new(owner)));
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
                    .entry(self.tokens.index(&e.digest.lookup_key()))
                    .or_default()
                    .push(op),
                TokenOp::Remove(d, _, _) => by_shard
                    .entry(self.tokens.index(&d.lookup_key()))
                    .or_default()
                    .push(op),
                TokenOp::RemoveId(id) => by_id.push(id.clone()),
            }
        }
        let mut tombs = Vec::new();
        for (index, ops) in by_shard {
            self.tokens.update(index, |shard| {
                for op in ops {
                    match op {
                        TokenOp::Put(entry) => {
                            let digest = entry.digest;
                            if tokens::put(shard, entry) {
                                self.count.fetch_add(1, Ordering::Relaxed);
                            }
                            lock(&self.refusals).forget(&digest);
                        }
                        TokenOp::Remove(digest, reason, owner) => {
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
                            tombs.push((digest, reason, owner));
                        }
                        TokenOp::RemoveId(_) => {}
                    }
                }
            });
        }
        // A token row that vanished entirely (never happens through the store, which only
        // revokes) can only be found by scanning.
        for id in by_id {
            for index in 0..SHARDS {
                let hits: Vec<(u64, TokenDigest)> = self
                    .tokens
                    .table(index)
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
                self.tokens.update(index, |copy| {
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
                        tombs.push((digest, Refusal::Revoked, None));
                    }
                });
            }
        }
        if !tombs.is_empty() {
            let mut refusals = lock(&self.refusals);
            for (digest, reason, owner) in tombs {
                refusals.put_owned(digest, reason, owner);
            }
        }
    }
}

/// A poisoned lock means a writer panicked midway; the maps it guards are still valid (every
/// write is a whole-value swap), so carry on with them.
pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
