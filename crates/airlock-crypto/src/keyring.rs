//! The keyring: which master keys are loaded, which one encrypts, and the public
//! seal / open / rewrap operations.
//!
//! Rotation works like Vault's keyring: put the new key first (it becomes active and wraps every
//! new value), keep the old ones after it so existing rows still open, run `rewrap` over the
//! rows, then drop the old key. A retired key opens nothing, because the blob names the key that
//! wraps it and the keyring no longer holds it.

use std::fmt;

use crate::envelope;
use crate::key::HexId;
use crate::{CryptoError, KeyError, KeyId, MasterKey, SecretContext, SecretValue};

/// Several master keys: the first is active and encrypts; all of them decrypt.
pub struct Keyring {
    /// Never empty, ids pairwise distinct; `keys[0]` is the active key.
    keys: Vec<MasterKey>,
}

impl Keyring {
    /// Builds a keyring from keys in priority order. Refuses an empty list and two keys with the
    /// same id, since the id in a blob must name exactly one key.
    pub fn new(keys: Vec<MasterKey>) -> Result<Keyring, KeyError> {
        if keys.is_empty() {
            return Err(KeyError::Empty);
        }
        // Ids, not key bytes, are compared: they are public, and equal keys have equal ids.
        for (index, key) in keys.iter().enumerate() {
            if keys[..index].iter().any(|earlier| earlier.id() == key.id()) {
                return Err(KeyError::Duplicate { id: key.id() });
            }
        }
        Ok(Keyring { keys })
    }

    /// Parses a list of base64 keys separated by commas, whitespace or newlines, the first being
    /// the active one (the content of `AIRLOCK_MASTER_KEY` or of `AIRLOCK_MASTER_KEY_FILE`).
    /// A `#` starts a comment that runs to the end of its line, so both whole comment lines and
    /// a note after a key (`<key>  # retired 2025-06`) work; `#` is not a base64 character, so
    /// this never cuts a key short.
    pub fn parse(text: &str) -> Result<Keyring, KeyError> {
        let mut keys = Vec::new();
        for line in text.lines() {
            let content = line.split_once('#').map_or(line, |(before, _)| before);
            let entries = content
                .split(|c: char| c == ',' || c.is_whitespace())
                .filter(|entry| !entry.is_empty());
            for entry in entries {
                keys.push(MasterKey::decode(entry, Some(keys.len() + 1))?);
            }
        }
        Keyring::new(keys)
    }

    pub(crate) fn active(&self) -> Result<&MasterKey, CryptoError> {
        // `new` guarantees a first key; the error arm only avoids a panic path.
        self.keys.first().ok_or(CryptoError::UnknownKey(KeyId(0)))
    }

    pub(crate) fn find(&self, id: KeyId) -> Result<&MasterKey, CryptoError> {
        self.keys
            .iter()
            .find(|key| key.id() == id)
            .ok_or(CryptoError::UnknownKey(id))
    }

    /// The id of the key that wraps new values.
    pub fn active_id(&self) -> KeyId {
        self.keys.first().map_or(KeyId(0), MasterKey::id)
    }

    /// All loaded ids, the active one first.
    pub fn ids(&self) -> Vec<KeyId> {
        self.keys.iter().map(MasterKey::id).collect()
    }

    /// Encrypts `plaintext` for `ctx` under a fresh data key wrapped by the active key.
    pub fn seal(&self, ctx: &SecretContext<'_>, plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        envelope::seal(self.active()?, ctx, plaintext)
    }

    /// Decrypts a blob made by [`Keyring::seal`] (or [`Keyring::rewrap`]) for the same `ctx`.
    pub fn open(&self, ctx: &SecretContext<'_>, sealed: &[u8]) -> Result<SecretValue, CryptoError> {
        let id = envelope::check_layout(sealed)?;
        envelope::open(self.find(id)?, ctx, sealed)
    }

    /// Re-wraps the data key under the active master key; the value's ciphertext is untouched.
    /// Returns `Ok(None)` when the blob is already wrapped by the active key (without decrypting
    /// it, so a rotation sweep costs nothing for rows already done).
    ///
    /// Only the data-key wrap is authenticated here; a blob whose value part was altered is
    /// re-wrapped and then fails at `open`, exactly as it would have before.
    pub fn rewrap(
        &self,
        ctx: &SecretContext<'_>,
        sealed: &[u8],
    ) -> Result<Option<Vec<u8>>, CryptoError> {
        let id = envelope::check_layout(sealed)?;
        let active = self.active()?;
        if id == active.id() {
            return Ok(None);
        }
        envelope::rewrap(self.find(id)?, active, ctx, sealed).map(Some)
    }

    /// The id of the master key that wraps this blob (parses the header only).
    pub fn key_id_of(sealed: &[u8]) -> Result<KeyId, CryptoError> {
        envelope::parse_header(sealed)
    }
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("active", &HexId(self.active_id()))
            .field(
                "keys",
                &self
                    .keys
                    .iter()
                    .map(|key| HexId(key.id()))
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}
