//! Typed, prefixed identifiers.
//!
//! An id is its type's prefix followed by 26 characters of Crockford base32 encoding 48 bits of
//! creation time (ms), a 16-bit sequence and 64 random bits. Ids therefore sort by creation time
//! as plain strings, which is what list pagination (`starting_after`) relies on, and they carry no
//! meaning an attacker could exploit beyond that. Within one process, ids made in the same
//! millisecond still sort in the order they were made (the sequence counts them), so a list shows
//! them newest first however fast they were created; the random bits keep ids of different
//! processes apart.

use std::cell::Cell;
use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::InvalidInput;

const CROCKFORD: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";
const BODY_LEN: usize = 26;

/// The time and sequence part (`ms << 16 | sequence`) of the last id this process made. Audit ids
/// are made on the data plane's request path, so this is one atomic, not a lock.
static LAST: AtomicU64 = AtomicU64::new(0);

/// The next time-and-sequence value: `now_ms` with sequence 0, unless that is not after the last
/// one (the same millisecond, or a clock that stepped back); then the last one plus one, so that
/// one process's ids never go backwards.
fn next_clock(now_ms: i64) -> u64 {
    let now = (now_ms.max(0) as u64 & 0xFFFF_FFFF_FFFF) << 16;
    let step = |last: u64| Some(now.max(last + 1));
    match LAST.fetch_update(Ordering::AcqRel, Ordering::Acquire, step) {
        Ok(last) | Err(last) => now.max(last + 1),
    }
}

thread_local! {
    /// splitmix64 state, seeded from the standard library's per-thread random SipHash keys (which
    /// come from the OS). Ids must be unique, not secret: secrets and tokens take their bytes from
    /// the OS directly, and ids cost no system call (audit ids are made on every request).
    static RANDOM: Cell<u64> = Cell::new(RandomState::new().hash_one(std::thread::current().id()));
}

fn next_random() -> u64 {
    RANDOM.with(|s| {
        let mut z = s.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
        s.set(z);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    })
}

/// An id body made now, as 26 Crockford base32 bytes (no allocation): the request id uses it
/// as a header value.
pub fn ulid_bytes() -> [u8; BODY_LEN] {
    encode((u128::from(next_clock(crate::time::now_ms())) << 64) | u128::from(next_random()))
}

fn encode(value: u128) -> [u8; BODY_LEN] {
    let mut out = [0u8; BODY_LEN];
    for (i, slot) in out.iter_mut().enumerate() {
        let shift = 5 * (BODY_LEN - 1 - i);
        *slot = CROCKFORD[((value >> shift) & 0x1F) as usize];
    }
    out
}

/// 26 Crockford base32 characters for 128 bits: time and sequence first so that ids sort by
/// creation.
#[cfg(test)]
fn new_ulid_body(now_ms: i64) -> String {
    let value = (u128::from(next_clock(now_ms)) << 64) | u128::from(next_random());
    encode(value).iter().map(|&c| char::from(c)).collect()
}

fn valid_body(body: &str) -> bool {
    body.len() == BODY_LEN && body.bytes().all(|c| CROCKFORD.contains(&c))
}

macro_rules! prefixed_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            pub const PREFIX: &'static str = $prefix;

            /// A new id stamped with the current time: one allocation of its exact length
            /// (audit ids are made on every proxied request).
            pub fn generate() -> Self {
                let mut id = String::with_capacity($prefix.len() + BODY_LEN);
                id.push_str($prefix);
                id.extend(ulid_bytes().iter().map(|&c| char::from(c)));
                Self(id)
            }

            /// Parses an id as a client sends it; the field name goes into the error.
            pub fn parse(field: &str, text: &str) -> Result<Self, InvalidInput> {
                match text.strip_prefix($prefix) {
                    Some(body) if valid_body(body) => Ok(Self(text.to_owned())),
                    _ => Err(InvalidInput::new(
                        field,
                        concat!("must be an id of the form ", $prefix, "…"),
                    )),
                }
            }

            /// Whether `text` looks like an id of this type (as opposed to a name).
            pub fn looks_like(text: &str) -> bool {
                text.strip_prefix($prefix).is_some_and(valid_body)
            }

            /// Wraps a value read back from the store, which only ever holds ids it was given.
            pub fn from_trusted(text: String) -> Self {
                Self(text)
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

prefixed_id!(
    /// An account: the unit of tenancy. Every other object belongs to exactly one.
    AccountId, "acc_"
);
prefixed_id!(
    /// An API key of the control plane (the key's id, never the key).
    ApiKeyId, "key_"
);
prefixed_id!(
    /// A gateway config: an upstream endpoint and how to apply a credential to it.
    GatewayConfigId, "gwc_"
);
prefixed_id!(
    /// A secret (its value is versioned; the id stays).
    SecretId, "sec_"
);
prefixed_id!(
    /// A devbox record: which addresses a sandbox's traffic comes from.
    DevboxId, "dbx_"
);
prefixed_id!(
    /// A minted gateway token (the token's id, never the token).
    TokenId, "gwt_"
);
prefixed_id!(
    /// An audit event.
    AuditId, "aud_"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_sort_by_time() {
        let a = SecretId::generate();
        assert!(a.as_str().starts_with("sec_"));
        assert_eq!(SecretId::parse("id", a.as_str()), Ok(a.clone()));
        let early = new_ulid_body(1_000);
        let late = new_ulid_body(2_000);
        assert!(early < late);
    }

    #[test]
    fn ids_made_in_one_millisecond_sort_in_order() {
        // `generate` itself, on the real clock: other tests make ids at the same time through
        // the same process-wide state, and a fixed timestamp here would race with theirs.
        let ids: Vec<String> = (0..1000)
            .map(|_| AuditId::generate().as_str().to_owned())
            .collect();
        for pair in ids.windows(2) {
            assert!(pair[0] < pair[1], "{pair:?}");
        }
    }

    #[test]
    fn ids_from_many_threads_are_distinct() {
        let threads: Vec<_> = (0..8)
            .map(|_| std::thread::spawn(|| (0..2000).map(|_| ulid_bytes()).collect::<Vec<_>>()))
            .collect();
        let mut all = std::collections::HashSet::new();
        for t in threads {
            for id in t.join().unwrap() {
                assert!(all.insert(id), "a duplicate id");
            }
        }
        assert_eq!(all.len(), 16_000);
    }

    #[test]
    fn malformed_ids_are_refused() {
        for bad in [
            "",
            "sec_",
            "gwc_01h8xg3r5y3vq6z8k9m2n4p6r8",
            "sec_01H8XG3R5Y3VQ6Z8K9M2N4P6R8",
            "sec_01h8xg3r5y3vq6z8k9m2n4p6ri",
            "sec_01h8xg3r5y3vq6z8k9m2n4p6r8x",
        ] {
            let err = SecretId::parse("secret", bad).unwrap_err();
            assert_eq!(err.field, "secret", "{bad}");
        }
        assert!(SecretId::parse("s", "sec_01h8xg3r5y3vq6z8k9m2n4p6r8").is_ok());
    }
}
