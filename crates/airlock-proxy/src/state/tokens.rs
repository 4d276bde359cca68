//! The token map: tokens by the first 8 bytes of their digest, in [`SHARDS`] shards that
//! readers use without a lock (see the module docs of `state`), and the constant-time
//! comparison of the full digest that a lookup ends with.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use airlock_core::TokenDigest;

use super::entries::TokenEntry;

/// Number of token shards. A power of two; see [`shard_of`].
pub(crate) const SHARDS: usize = 256;

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

pub(super) type Shard = HashMap<u64, Bucket, BuildHasherDefault<KeyHasher>>;

/// Compares two digests in constant time, as four 64-bit words: no early exit, and about a
/// tenth of the cost of a byte-by-byte `subtle` comparison, which the lookup profile showed.
pub(super) fn digest_eq(a: &TokenDigest, b: &TokenDigest) -> bool {
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
pub(super) fn shard_of(key: u64) -> usize {
    ((key >> 32) as usize) & (SHARDS - 1)
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
