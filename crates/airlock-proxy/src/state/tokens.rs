//! The token map: tokens by the first 8 bytes of their digest in a [`ShardMap`] of [`SHARDS`]
//! shards, which readers use without a lock (see the module docs of `state`), and the
//! constant-time comparison of the full digest that a lookup ends with.

use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use airlock_core::TokenDigest;

use super::entries::TokenEntry;
use crate::shardmap::{ShardMap, Table, Tables};

/// Number of token shards: a writer copies about `n / 256` entries.
pub(super) const SHARDS: usize = 256;

/// The digest is uniformly distributed, so its first 8 bytes are already a good hash: no need to
/// hash them again on every lookup.
#[derive(Default, Clone, Copy)]
pub(super) struct KeyHasher(u64);

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

type KeyHash = BuildHasherDefault<KeyHasher>;

/// Tokens by [`TokenDigest::lookup_key`].
pub(super) type Tokens = ShardMap<u64, Bucket, KeyHash, SHARDS>;
/// One shard of [`Tokens`].
pub(super) type TokenTable = Table<u64, Bucket, KeyHash>;
/// A complete token map, built aside by a full reload.
pub(super) type TokenTables = Tables<u64, Bucket, KeyHasher, SHARDS>;

/// The hot-path lookup: no lock, no allocation; the full digest is compared in constant time.
pub(super) fn find(tokens: &Tokens, digest: &TokenDigest) -> Option<Arc<TokenEntry>> {
    tokens
        .get_with(&digest.lookup_key(), |bucket| {
            bucket
                .entries()
                .iter()
                .find(|e| digest_eq(&e.digest, digest))
                .cloned()
        })
        .flatten()
}

/// Adds `entry` to the table of its shard; true when its lookup key is new there (a token more).
pub(super) fn put(table: &mut TokenTable, entry: Arc<TokenEntry>) -> bool {
    let key = entry.digest.lookup_key();
    let bucket = Bucket::with(table.get(&key), entry);
    table.insert(key, bucket).is_none()
}

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

/// Tokens under one lookup key: almost always one; a 64-bit collision is handled, not assumed away.
#[derive(Clone)]
pub(super) enum Bucket {
    One(Arc<TokenEntry>),
    Many(Box<[Arc<TokenEntry>]>),
}

impl Bucket {
    pub(super) fn entries(&self) -> &[Arc<TokenEntry>] {
        match self {
            Bucket::One(e) => std::slice::from_ref(e),
            Bucket::Many(v) => v,
        }
    }

    pub(super) fn with(self_: Option<&Bucket>, entry: Arc<TokenEntry>) -> Bucket {
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

    pub(super) fn without(&self, digest: &TokenDigest) -> Option<Bucket> {
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
