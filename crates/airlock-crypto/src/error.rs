//! Error types. Messages are lower-case, end without a period, and never contain key material,
//! plaintext or the text a key was parsed from: they end up in logs and HTTP responses.

use crate::KeyId;

/// Why a master key or a list of master keys could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The text held no key at all (empty, or only whitespace and comments).
    #[error("no master key given")]
    Empty,
    /// The text is not standard base64. Which byte was wrong is left out on purpose: the
    /// base64 crate's own message quotes it, and that byte is part of a key.
    #[error("{} is not valid base64", entry_label(.entry))]
    NotBase64 {
        /// 1-based position in a list given to [`crate::Keyring::parse`]; `None` for a single key.
        entry: Option<usize>,
    },
    /// The text decodes, but not to 32 bytes.
    #[error("{} is {len} bytes, need 32", entry_label(.entry))]
    WrongLength {
        /// 1-based position in a list given to [`crate::Keyring::parse`]; `None` for a single key.
        entry: Option<usize>,
        /// The decoded length.
        len: usize,
    },
    /// Two keys in one keyring have the same id (in practice: the same key listed twice).
    #[error("master key {id} is listed more than once")]
    Duplicate {
        /// The repeated id.
        id: KeyId,
    },
}

fn entry_label(entry: &Option<usize>) -> String {
    match entry {
        None => "master key".to_owned(),
        Some(position) => format!("master key #{position} in the list"),
    }
}

/// Why sealing, opening or re-wrapping a value failed.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    /// Shorter than the fixed part of the format (header, wrapped data key, nonce and tag).
    #[error("ciphertext is truncated")]
    Truncated,
    /// The first byte names a format this build does not know.
    #[error("unsupported ciphertext version {0}")]
    UnsupportedVersion(u8),
    /// The blob was wrapped by a master key that is not in the keyring (retired or never loaded).
    #[error("no master key with id {0} is loaded")]
    UnknownKey(KeyId),
    /// Authentication failed. One message for every cause (wrong context, altered byte, wrong
    /// key behind a matching id) so that the error says nothing an attacker could steer by.
    #[error("decryption failed: the ciphertext does not match its context or was altered")]
    Decrypt,
    /// A binding does not match its record: the record or the binding was changed, or it was
    /// made for another purpose. One message for every cause, as for [`CryptoError::Decrypt`].
    #[error("the binding does not match its record or was altered")]
    BindingMismatch,
    /// The value or its context exceeds what the format or AES-GCM can carry.
    #[error("value or context is too large to encrypt")]
    TooLarge,
    /// The operating system's random number generator reported a failure.
    #[error("random number generator failed")]
    Rng,
}
