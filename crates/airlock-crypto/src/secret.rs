//! The two small types that travel with every sealed value: what it is bound to
//! ([`SecretContext`]) and what comes out of it ([`SecretValue`]).

use std::fmt;

use subtle::ConstantTimeEq as _;
use zeroize::Zeroizing;

/// What a ciphertext is bound to; it becomes the authenticated data of both AES-GCM operations.
/// Changing any field (another account, another secret, another version) makes `open` fail, so
/// someone who can write to the database cannot move a ciphertext to a row it was not made for.
#[derive(Clone, Copy, Debug)]
pub struct SecretContext<'a> {
    /// The account that owns the secret.
    pub account_id: &'a str,
    /// The secret's id.
    pub secret_id: &'a str,
    /// The secret's version; each version is sealed separately, with its own data key.
    pub version: i64,
}

/// A decrypted secret value. Zeroized on drop; `Debug` shows only its length.
///
/// `Clone` is written by hand so that every copy (the data plane keeps `Arc`'d snapshots) is a
/// fresh zeroizing buffer of exactly the right size. There is no `PartialEq`: compare with
/// [`SecretValue::ct_eq`], which runs in constant time (SECURITY #14):
///
/// ```compile_fail
/// use airlock_crypto::SecretValue;
/// let _ = SecretValue::new(b"a".to_vec()) == SecretValue::new(b"a".to_vec());
/// ```
///
/// ```
/// use airlock_crypto::SecretValue;
/// assert!(SecretValue::new(b"a".to_vec()).ct_eq(b"a"));
/// ```
pub struct SecretValue {
    bytes: Zeroizing<Vec<u8>>,
}

impl SecretValue {
    /// Takes ownership of `bytes`; they are zeroized when the value is dropped.
    pub fn new(bytes: Vec<u8>) -> SecretValue {
        SecretValue {
            bytes: Zeroizing::new(bytes),
        }
    }

    /// Used by `open`, which decrypts straight into a zeroizing buffer.
    pub(crate) fn from_zeroizing(bytes: Zeroizing<Vec<u8>>) -> SecretValue {
        SecretValue { bytes }
    }

    /// The plaintext. Callers should copy it only into places that are themselves wiped or
    /// short-lived (a header value on its way upstream).
    pub fn expose(&self) -> &[u8] {
        &self.bytes
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether the value is empty.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Constant-time equality with `other` (the length itself is not hidden).
    pub fn ct_eq(&self, other: &[u8]) -> bool {
        self.bytes.as_slice().ct_eq(other).into()
    }
}

impl Clone for SecretValue {
    fn clone(&self) -> SecretValue {
        let mut copy = Vec::with_capacity(self.bytes.len());
        copy.extend_from_slice(&self.bytes);
        SecretValue::new(copy)
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretValue(<redacted, {} bytes>)", self.bytes.len())
    }
}
