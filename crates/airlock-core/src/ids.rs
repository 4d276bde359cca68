//! Typed, prefixed identifiers.
//!
//! An id is its type's prefix followed by 26 characters of Crockford base32 encoding 48 bits of
//! creation time (ms) and 80 random bits, as ULIDs do. Ids therefore sort by creation time as
//! plain strings, which is what list pagination (`starting_after`) relies on, and they carry no
//! meaning an attacker could exploit beyond that. Within one process, ids made in the same
//! millisecond still sort in the order they were made: the later one is the earlier one plus one
//! (ULID's monotonic mode), so a list shows them newest first however fast they were created.

use std::fmt;

use ring::rand::{SecureRandom, SystemRandom};

use crate::error::InvalidInput;

const CROCKFORD: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";
const BODY_LEN: usize = 26;

/// The last id value this process made, for monotonic ids within a millisecond.
static LAST: std::sync::Mutex<u128> = std::sync::Mutex::new(0);

/// 26 Crockford base32 characters for 128 bits: time first so that ids sort by creation.
pub(crate) fn new_ulid_body(now_ms: i64) -> String {
    let mut random = [0u8; 10];
    // The system RNG failing is not recoverable for a process that mints credentials.
    if SystemRandom::new().fill(&mut random).is_err() {
        panic!("system random number generator failed");
    }
    let mut value: u128 = (u128::from(now_ms.max(0) as u64) & 0xFFFF_FFFF_FFFF) << 80;
    for (i, b) in random.iter().enumerate() {
        value |= u128::from(*b) << (8 * (9 - i));
    }
    {
        let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
        // Not after the last id (the same millisecond, or a clock that stepped back): follow it
        // instead, so that one process's ids always sort in the order they were made.
        if value <= *last {
            value = *last + 1;
        }
        *last = value;
    }
    let mut out = [0u8; BODY_LEN];
    for (i, slot) in out.iter_mut().enumerate() {
        let shift = 5 * (BODY_LEN - 1 - i);
        *slot = CROCKFORD[((value >> shift) & 0x1F) as usize];
    }
    out.iter().map(|&c| c as char).collect()
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

            /// A new id stamped with the current time.
            pub fn generate() -> Self {
                Self(format!("{}{}", $prefix, new_ulid_body(crate::time::now_ms())))
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
        // The real clock, as `generate` uses it: other tests make ids at the same time through
        // the same process-wide state, and a fixed timestamp here would race with theirs.
        let ids: Vec<String> = (0..1000)
            .map(|_| new_ulid_body(crate::time::now_ms()))
            .collect();
        for pair in ids.windows(2) {
            assert!(pair[0] < pair[1], "{pair:?}");
        }
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
