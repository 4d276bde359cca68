//! Master keys (key-encryption keys) and their public ids.
//!
//! A master key never encrypts a secret value directly: it only wraps the per-value data keys
//! (see [`crate::envelope`]). Its bytes live in a zeroizing buffer, leave it only through
//! [`MasterKey::to_base64`] (itself zeroizing), and are never formatted.

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ring::aead::{LessSafeKey, UnboundKey, AES_256_GCM};
use ring::digest;
use ring::rand::{SecureRandom as _, SystemRandom};
use zeroize::Zeroizing;

use crate::{CryptoError, KeyError};

/// Length of a master key and of a data key: both are AES-256 keys.
pub(crate) const KEY_LEN: usize = 32;

/// Domain separation for key ids, so the id can never collide with another use of SHA-256 over
/// the same bytes.
const KEY_ID_LABEL: &[u8] = b"airlock.kek-id.v1";

/// The public name of a master key: the first 4 bytes of SHA-256("airlock.kek-id.v1" || key),
/// read as a big-endian u32. It is written into every ciphertext header so that a keyring can
/// pick the right key without trial decryption. Displayed as 8 lower-case hex digits.
///
/// 32 bits of a hash reveal nothing useful about a 256-bit key; they are an address, not a check
/// (the AES-GCM tag is the check).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct KeyId(pub u32);

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08x}", self.0)
    }
}

/// Formats a [`KeyId`] in its hex form inside `Debug` output of the types that hold keys.
pub(crate) struct HexId(pub(crate) KeyId);

impl fmt::Debug for HexId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// A 32-byte key-encryption key. Zeroized on drop. `Debug` prints only its id, never bytes.
///
/// Deliberately not `Clone`: every copy of a master key is one more buffer to account for. Nor
/// `PartialEq` (SECURITY #14): keys are told apart by their public ids.
///
/// ```compile_fail
/// use airlock_crypto::MasterKey;
/// let _ = MasterKey::generate().unwrap() == MasterKey::generate().unwrap();
/// ```
///
/// ```
/// use airlock_crypto::MasterKey;
/// assert_ne!(MasterKey::generate().unwrap().id(), MasterKey::generate().unwrap().id());
/// ```
pub struct MasterKey {
    bytes: Zeroizing<[u8; KEY_LEN]>,
    id: KeyId,
}

impl MasterKey {
    /// Generates a new key from the operating system's random number generator.
    pub fn generate() -> Result<MasterKey, CryptoError> {
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        SystemRandom::new()
            .fill(&mut bytes[..])
            .map_err(|_| CryptoError::Rng)?;
        Ok(MasterKey::from_bytes(bytes))
    }

    /// Parses standard (padded) base64 of exactly 32 bytes; surrounding whitespace is ignored.
    /// The error says what is wrong but never repeats the input.
    pub fn from_base64(text: &str) -> Result<MasterKey, KeyError> {
        MasterKey::decode(text, None)
    }

    /// Shared by [`MasterKey::from_base64`] and [`crate::Keyring::parse`], which passes the key's
    /// position so that an error in a list says which entry is wrong.
    pub(crate) fn decode(text: &str, entry: Option<usize>) -> Result<MasterKey, KeyError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(KeyError::Empty);
        }
        // Reserve the full estimate up front so decoding never reallocates: a reallocation
        // would leave a copy of the key behind in freed memory that nothing zeroizes.
        let mut decoded =
            Zeroizing::new(Vec::with_capacity(base64::decoded_len_estimate(text.len())));
        STANDARD
            .decode_vec(text, &mut decoded)
            .map_err(|_| KeyError::NotBase64 { entry })?;
        if decoded.len() != KEY_LEN {
            return Err(KeyError::WrongLength {
                entry,
                len: decoded.len(),
            });
        }
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        bytes.copy_from_slice(&decoded);
        Ok(MasterKey::from_bytes(bytes))
    }

    fn from_bytes(bytes: Zeroizing<[u8; KEY_LEN]>) -> MasterKey {
        let mut hash = digest::Context::new(&digest::SHA256);
        hash.update(KEY_ID_LABEL);
        hash.update(&bytes[..]);
        let digest = hash.finish();
        let d = digest.as_ref();
        let id = KeyId(u32::from_be_bytes([d[0], d[1], d[2], d[3]]));
        MasterKey { bytes, id }
    }

    /// The key in standard base64, for writing it into `AIRLOCK_MASTER_KEY` once.
    pub fn to_base64(&self) -> Zeroizing<String> {
        // Exact capacity, again so that encoding never reallocates the buffer holding the key.
        let mut text = Zeroizing::new(String::with_capacity(
            base64::encoded_len(KEY_LEN, true).unwrap_or(0),
        ));
        STANDARD.encode_string(&self.bytes[..], &mut text);
        text
    }

    /// The key's public id.
    pub fn id(&self) -> KeyId {
        self.id
    }

    /// The key's bytes, for deriving the binding key (`crate::binding`).
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.bytes[..]
    }

    /// An AES-256-GCM key for wrapping and unwrapping data keys. Built per operation rather
    /// than cached, because ring does not zeroize its expanded key schedule: a short-lived one on
    /// the stack is better than one that lives as long as the process.
    pub(crate) fn aead(&self) -> Result<LessSafeKey, CryptoError> {
        aead_key(&self.bytes[..])
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MasterKey")
            .field("id", &HexId(self.id))
            .finish_non_exhaustive()
    }
}

/// Builds an AES-256-GCM key from 32 bytes. ring only refuses a wrong length, which the callers
/// rule out, so the error is mapped to the generic failure instead of a panic.
pub(crate) fn aead_key(bytes: &[u8]) -> Result<LessSafeKey, CryptoError> {
    UnboundKey::new(&AES_256_GCM, bytes)
        .map(LessSafeKey::new)
        .map_err(|_| CryptoError::Decrypt)
}
