//! Why a token that is not in the map is refused: tombstones left by tokens that disappeared
//! (revoked, expired, their devbox shut down), and the negative cache of digests the database
//! did not know, in one small bounded cache, oldest evicted first.

use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasherDefault;
use std::sync::Arc;
use std::time::{Duration, Instant};

use airlock_core::{AccountId, DevboxId, GatewayConfigId, TokenDigest, TokenId};

use super::tokens::KeyHasher;

/// Tombstones and negative-cache entries kept at most.
const REFUSALS_CAP: usize = 65_536;
/// How long "the database does not know this digest" is believed.
const UNKNOWN_TTL: Duration = Duration::from_secs(30);

/// Why a token that is not in the map is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    Unknown,
    Revoked,
    Expired,
    DevboxShutdown,
}

/// Whose token a tombstone was, so that a refusal after a revocation or a shutdown is attributed
/// to its account, devbox and gateway in the audit trail (the token itself never is). The
/// negative cache has none.
#[derive(Debug)]
pub(crate) struct Owner {
    pub(crate) account_id: Arc<AccountId>,
    pub(crate) devbox_id: DevboxId,
    pub(crate) gateway_config_id: GatewayConfigId,
    pub(crate) token_id: TokenId,
}

struct Tomb {
    digest: TokenDigest,
    reason: Refusal,
    owner: Option<Arc<Owner>>,
    at: Instant,
    seq: u64,
}

/// Tombstones and the negative cache, bounded, oldest evicted first.
#[derive(Default)]
pub(super) struct Refusals {
    map: HashMap<u64, Tomb, BuildHasherDefault<KeyHasher>>,
    order: VecDeque<(u64, u64)>,
    seq: u64,
}

impl Refusals {
    pub(super) fn get(&self, digest: &TokenDigest) -> Option<Refusal> {
        self.get_owned(digest).map(|(reason, _)| reason)
    }

    /// The refusal and, for a tombstone, whose token it was.
    pub(super) fn get_owned(&self, digest: &TokenDigest) -> Option<(Refusal, Option<Arc<Owner>>)> {
        let tomb = self.map.get(&digest.lookup_key())?;
        if !tomb.digest.ct_eq(digest) {
            return None;
        }
        if tomb.reason == Refusal::Unknown && tomb.at.elapsed() > UNKNOWN_TTL {
            return None;
        }
        Some((tomb.reason, tomb.owner.clone()))
    }

    pub(super) fn put(&mut self, digest: TokenDigest, reason: Refusal) {
        self.put_owned(digest, reason, None);
    }

    pub(super) fn put_owned(
        &mut self,
        digest: TokenDigest,
        reason: Refusal,
        owner: Option<Arc<Owner>>,
    ) {
        let key = digest.lookup_key();
        self.seq += 1;
        self.map.insert(
            key,
            Tomb {
                digest,
                reason,
                owner,
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

    pub(super) fn forget(&mut self, digest: &TokenDigest) {
        let key = digest.lookup_key();
        if self.map.get(&key).is_some_and(|t| t.digest.ct_eq(digest)) {
            self.map.remove(&key);
        }
    }
}
