//! Bindings: MACs under the master key over records that are stored in plaintext but must not
//! be changed by anyone who can only write to the database.
//!
//! A gateway config says where a secret is sent. Its endpoint is not secret, so it is not
//! encrypted, but a database writer who repoints it at their own host would receive the real
//! credential. The control plane therefore stores, next to each config, a binding computed over
//! the config's canonical bytes with a key derived from the active master key, and the data
//! plane checks it before it uses the config. Without a master key nobody can compute a binding
//! that checks.
//!
//! ```text
//! [0]      format version = 1
//! [1..5]   KeyId of the master key it was made with, u32 big-endian
//! [5..37]  HMAC-SHA256(K, u32-BE len || purpose || message)
//! ```
//!
//! K is HKDF-SHA256 of the master key (salt `airlock.binding.v1`, info `hmac-sha256`), so the
//! master key's AES use and this one never share a key. The purpose (for example
//! `airlock.gateway-config.v1`) keeps a binding made for one kind of record from checking for
//! another. Rotation works as for sealed values: a binding names its key, [`Keyring::rebind`]
//! checks it under that key and makes a new one under the active key, and a retired key checks
//! nothing.

use ring::{hkdf, hmac};

use crate::key::KEY_LEN;
use crate::{CryptoError, KeyId, Keyring, MasterKey};

const VERSION: u8 = 1;
const TAG_LEN: usize = 32;
/// The length of a binding.
pub const BINDING_LEN: usize = 1 + 4 + TAG_LEN;
const SALT: &[u8] = b"airlock.binding.v1";
const INFO: &[u8] = b"hmac-sha256";

/// The HMAC key for bindings made with `key`. Derived per operation, like the AES keys, so that
/// no expanded key lives longer than the operation that needs it.
fn hmac_key(key: &MasterKey) -> hmac::Key {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, SALT).extract(key.bytes());
    // `hmac::HMAC_SHA256` asks HKDF for exactly KEY_LEN bytes, which HKDF-SHA256 can always give.
    let okm = prk.expand(&[INFO], hmac::HMAC_SHA256);
    match okm {
        Ok(okm) => hmac::Key::from(okm),
        // Unreachable: 32 bytes are far below HKDF-SHA256's limit of 255 * 32.
        Err(_) => hmac::Key::new(hmac::HMAC_SHA256, &[0u8; KEY_LEN]),
    }
}

fn input(purpose: &str, message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + purpose.len() + message.len());
    out.extend_from_slice(&(purpose.len() as u32).to_be_bytes());
    out.extend_from_slice(purpose.as_bytes());
    out.extend_from_slice(message);
    out
}

fn make(key: &MasterKey, purpose: &str, message: &[u8]) -> Vec<u8> {
    let tag = hmac::sign(&hmac_key(key), &input(purpose, message));
    let mut out = Vec::with_capacity(BINDING_LEN);
    out.push(VERSION);
    out.extend_from_slice(&key.id().0.to_be_bytes());
    out.extend_from_slice(tag.as_ref());
    out
}

/// The key id a binding names, after checking its length and version.
fn header(binding: &[u8]) -> Result<KeyId, CryptoError> {
    // public: a length
    if binding.len() != BINDING_LEN {
        return Err(CryptoError::Truncated);
    }
    // public: the format byte
    if binding[0] != VERSION {
        return Err(CryptoError::UnsupportedVersion(binding[0]));
    }
    Ok(KeyId(u32::from_be_bytes([
        binding[1], binding[2], binding[3], binding[4],
    ])))
}

impl Keyring {
    /// A binding of `message` for `purpose`, made with the active master key.
    pub fn bind(&self, purpose: &str, message: &[u8]) -> Result<Vec<u8>, CryptoError> {
        Ok(make(self.active()?, purpose, message))
    }

    /// Checks that `binding` was made by [`Keyring::bind`] for this `purpose` and `message` with
    /// a loaded master key. The tag is compared in constant time (ring's `hmac::verify`).
    pub fn verify_binding(
        &self,
        purpose: &str,
        message: &[u8],
        binding: &[u8],
    ) -> Result<(), CryptoError> {
        let key = self.find(header(binding)?)?;
        hmac::verify(&hmac_key(key), &input(purpose, message), &binding[5..])
            .map_err(|_| CryptoError::BindingMismatch)
    }

    /// Checks a binding and makes it again with the active key, for a master key rotation.
    /// `Ok(None)` when it is already made with the active key (and checks).
    pub fn rebind(
        &self,
        purpose: &str,
        message: &[u8],
        binding: &[u8],
    ) -> Result<Option<Vec<u8>>, CryptoError> {
        self.verify_binding(purpose, message, binding)?;
        let active = self.active()?;
        // public: key ids
        if header(binding)? == active.id() {
            return Ok(None);
        }
        Ok(Some(make(active, purpose, message)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_and_round_trip() {
        let keyring = Keyring::new(vec![MasterKey::generate().unwrap()]).unwrap();
        let b = keyring.bind("p", b"message").unwrap();
        assert_eq!(b.len(), BINDING_LEN);
        assert_eq!(b[0], VERSION);
        assert_eq!(&b[1..5], &keyring.active_id().0.to_be_bytes());
        keyring.verify_binding("p", b"message", &b).unwrap();
        // Deterministic: the same record gives the same binding.
        assert_eq!(keyring.bind("p", b"message").unwrap(), b);
    }
}
