//! The ciphertext format and the AES-GCM operations behind [`crate::Keyring`].
//!
//! Every sealed value carries its own random 32-byte data key, wrapped by a master key:
//!
//! ```text
//! [0]      format version = 1
//! [1..5]   KeyId of the wrapping master key, u32 big-endian
//! [5..17]  nonce of the data-key wrap (random 12 bytes)
//! [17..65] the 32-byte data key sealed with AES-256-GCM under the master key (32 + 16 tag)
//! [65..77] nonce of the value (random 12 bytes)
//! [77..]   the value sealed with AES-256-GCM under the data key (len + 16 tag)
//! ```
//!
//! Both seals are bound to the [`SecretContext`] through one canonical byte string:
//!
//! ```text
//! b"airlock.secret.v1" || u32-BE len || account_id || u32-BE len || secret_id || i64-BE version
//! ```
//!
//! The data-key wrap authenticates that string followed by `b"|dek"` and the 5 header bytes
//! (version and key id); the value seal authenticates it followed by `b"|value"`. The length
//! prefixes make the encoding injective (`("ab", "c")` and `("a", "bc")` differ), the suffixes keep
//! the two uses apart, and covering the header means a blob cannot be relabelled as another key's.
//!
//! Why two layers: rotating the master key only re-wraps 48 bytes per value ([`rewrap`]) and
//! never touches the value's ciphertext; and because each data key seals exactly one value, the
//! value nonce can never repeat under a key. Wrap nonces are random under the master key, so a
//! master key should be rotated well before 2^32 seals (the same bound Vault uses).

use ring::aead::{Aad, LessSafeKey, Nonce, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::{Zeroize as _, Zeroizing};

use crate::key::{aead_key, KEY_LEN};
use crate::{CryptoError, KeyId, MasterKey, SecretContext, SecretValue};

/// The only format this build writes and reads.
pub(crate) const FORMAT_V1: u8 = 1;
/// AES-GCM tag length.
const TAG_LEN: usize = 16;
/// Version byte and key id: the part [`crate::Keyring::key_id_of`] reads.
pub(crate) const HEADER_LEN: usize = 5;
const WRAP_NONCE_AT: usize = HEADER_LEN;
const WRAPPED_KEY_AT: usize = WRAP_NONCE_AT + NONCE_LEN;
const WRAPPED_KEY_LEN: usize = KEY_LEN + TAG_LEN;
const VALUE_NONCE_AT: usize = WRAPPED_KEY_AT + WRAPPED_KEY_LEN;
const VALUE_AT: usize = VALUE_NONCE_AT + NONCE_LEN;
/// The shortest valid blob: everything around an empty value.
pub(crate) const MIN_LEN: usize = VALUE_AT + TAG_LEN;

const CONTEXT_LABEL: &[u8] = b"airlock.secret.v1";
const DATA_KEY_SUFFIX: &[u8] = b"|dek";
const VALUE_SUFFIX: &[u8] = b"|value";

/// Reads the header: the format version and the id of the wrapping key.
pub(crate) fn parse_header(sealed: &[u8]) -> Result<KeyId, CryptoError> {
    let Some(&version) = sealed.first() else {
        return Err(CryptoError::Truncated);
    };
    if version != FORMAT_V1 {
        return Err(CryptoError::UnsupportedVersion(version));
    }
    match sealed.get(1..HEADER_LEN) {
        Some(&[a, b, c, d]) => Ok(KeyId(u32::from_be_bytes([a, b, c, d]))),
        _ => Err(CryptoError::Truncated),
    }
}

/// Reads the header and checks that the blob is long enough for the rest of the layout, so the
/// fixed offsets below are in bounds.
pub(crate) fn check_layout(sealed: &[u8]) -> Result<KeyId, CryptoError> {
    let id = parse_header(sealed)?;
    if sealed.len() < MIN_LEN {
        return Err(CryptoError::Truncated);
    }
    Ok(id)
}

/// Encrypts `plaintext` under a fresh data key wrapped by `master`.
pub(crate) fn seal(
    master: &MasterKey,
    ctx: &SecretContext<'_>,
    plaintext: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let rng = SystemRandom::new();
    let context = context_bytes(ctx)?;
    let mut data_key = Zeroizing::new([0u8; KEY_LEN]);
    rng.fill(&mut data_key[..]).map_err(|_| CryptoError::Rng)?;
    let value_nonce = random_nonce(&rng)?;

    let total = MIN_LEN
        .checked_add(plaintext.len())
        .ok_or(CryptoError::TooLarge)?;
    // The buffer briefly holds the data key and the plaintext before they are encrypted in
    // place, so it is zeroizing (an early return wipes it) and sized exactly (no reallocation
    // leaves a stray copy).
    let mut out = Zeroizing::new(Vec::with_capacity(total));
    wrap_data_key(master, &context, &data_key, &rng, &mut out)?;
    out.extend_from_slice(&value_nonce);
    out.extend_from_slice(plaintext);
    let value_key = aead_key(&data_key[..])?;
    let tag = value_key
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(value_nonce),
            Aad::from(with_suffix(&context, VALUE_SUFFIX, &[])),
            &mut out[VALUE_AT..],
        )
        .map_err(|_| CryptoError::TooLarge)?;
    out.extend_from_slice(tag.as_ref());
    Ok(std::mem::take(&mut *out))
}

/// Decrypts a blob whose wrapping key is `master` (the caller looked it up by the header's id).
pub(crate) fn open(
    master: &MasterKey,
    ctx: &SecretContext<'_>,
    sealed: &[u8],
) -> Result<SecretValue, CryptoError> {
    // A context too large to have been sealed cannot match any blob.
    let context = context_bytes(ctx).map_err(|_| CryptoError::Decrypt)?;
    let data_key = unwrap_data_key(master, &context, sealed)?;
    let value_key = aead_key(&data_key[..])?;
    let (nonce, body) = split_at_checked(sealed, VALUE_NONCE_AT, VALUE_AT)?;
    let mut value = Zeroizing::new(body.to_vec());
    let len = open_in_place(
        &value_key,
        nonce,
        &with_suffix(&context, VALUE_SUFFIX, &[]),
        &mut value,
    )?;
    value.truncate(len);
    Ok(SecretValue::from_zeroizing(value))
}

/// Re-wraps the data key of `sealed` (wrapped by `old`) under `new`, keeping the value's nonce
/// and ciphertext byte for byte.
pub(crate) fn rewrap(
    old: &MasterKey,
    new: &MasterKey,
    ctx: &SecretContext<'_>,
    sealed: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let context = context_bytes(ctx).map_err(|_| CryptoError::Decrypt)?;
    let data_key = unwrap_data_key(old, &context, sealed)?;
    let rest = sealed.get(VALUE_NONCE_AT..).ok_or(CryptoError::Truncated)?;
    let mut out = Zeroizing::new(Vec::with_capacity(sealed.len()));
    wrap_data_key(new, &context, &data_key, &SystemRandom::new(), &mut out)?;
    out.extend_from_slice(rest);
    Ok(std::mem::take(&mut *out))
}

/// Appends header, wrap nonce and the wrapped data key to the empty buffer `out`.
fn wrap_data_key(
    master: &MasterKey,
    context: &[u8],
    data_key: &[u8; KEY_LEN],
    rng: &dyn SecureRandom,
    out: &mut Vec<u8>,
) -> Result<(), CryptoError> {
    let nonce = random_nonce(rng)?;
    out.push(FORMAT_V1);
    out.extend_from_slice(&master.id().0.to_be_bytes());
    let aad = with_suffix(context, DATA_KEY_SUFFIX, &out[..HEADER_LEN]);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(data_key);
    let sealed = master.aead().and_then(|key| {
        key.seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(&aad),
            &mut out[WRAPPED_KEY_AT..],
        )
        .map_err(|_| CryptoError::TooLarge)
    });
    match sealed {
        Ok(tag) => {
            out.extend_from_slice(tag.as_ref());
            Ok(())
        }
        Err(error) => {
            // The caller's buffer is zeroizing too; wiping here keeps this function safe on
            // its own.
            out.zeroize();
            Err(error)
        }
    }
}

/// Recovers the data key of `sealed`, authenticating it against the context and the header.
fn unwrap_data_key(
    master: &MasterKey,
    context: &[u8],
    sealed: &[u8],
) -> Result<Zeroizing<[u8; KEY_LEN]>, CryptoError> {
    let header = sealed.get(..HEADER_LEN).ok_or(CryptoError::Truncated)?;
    let aad = with_suffix(context, DATA_KEY_SUFFIX, header);
    let (nonce, wrapped) = split_at_checked(sealed, WRAP_NONCE_AT, WRAPPED_KEY_AT)?;
    let wrapped = wrapped
        .get(..WRAPPED_KEY_LEN)
        .ok_or(CryptoError::Truncated)?;
    let mut buffer = Zeroizing::new([0u8; WRAPPED_KEY_LEN]);
    buffer.copy_from_slice(wrapped);
    let len = open_in_place(&master.aead()?, nonce, &aad, &mut buffer[..])?;
    let mut data_key = Zeroizing::new([0u8; KEY_LEN]);
    match buffer.get(..len) {
        Some(plain) if len == KEY_LEN => data_key.copy_from_slice(plain),
        _ => return Err(CryptoError::Decrypt),
    }
    Ok(data_key)
}

/// Splits `sealed` into the 12-byte nonce at `nonce_at` and everything from `body_at` on.
fn split_at_checked(
    sealed: &[u8],
    nonce_at: usize,
    body_at: usize,
) -> Result<(&[u8], &[u8]), CryptoError> {
    match (sealed.get(nonce_at..body_at), sealed.get(body_at..)) {
        (Some(nonce), Some(body)) => Ok((nonce, body)),
        _ => Err(CryptoError::Truncated),
    }
}

/// Opens `in_out` in place and returns the plaintext length. Every failure, whatever its cause,
/// is the one generic decryption error.
fn open_in_place(
    key: &LessSafeKey,
    nonce: &[u8],
    aad: &[u8],
    in_out: &mut [u8],
) -> Result<usize, CryptoError> {
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| CryptoError::Decrypt)?;
    key.open_in_place(nonce, Aad::from(aad), in_out)
        .map(|plain| plain.len())
        .map_err(|_| CryptoError::Decrypt)
}

fn random_nonce(rng: &dyn SecureRandom) -> Result<[u8; NONCE_LEN], CryptoError> {
    let mut nonce = [0u8; NONCE_LEN];
    rng.fill(&mut nonce).map_err(|_| CryptoError::Rng)?;
    Ok(nonce)
}

/// The canonical encoding of a context (see the module doc).
fn context_bytes(ctx: &SecretContext<'_>) -> Result<Vec<u8>, CryptoError> {
    let account = ctx.account_id.as_bytes();
    let secret = ctx.secret_id.as_bytes();
    let mut out =
        Vec::with_capacity(CONTEXT_LABEL.len() + 4 + account.len() + 4 + secret.len() + 8);
    out.extend_from_slice(CONTEXT_LABEL);
    for field in [account, secret] {
        // A silent `as u32` would let two different long fields share an encoding.
        let len = u32::try_from(field.len()).map_err(|_| CryptoError::TooLarge)?;
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(field);
    }
    out.extend_from_slice(&ctx.version.to_be_bytes());
    Ok(out)
}

fn with_suffix(context: &[u8], suffix: &[u8], extra: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(context.len() + suffix.len() + extra.len());
    out.extend_from_slice(context);
    out.extend_from_slice(suffix);
    out.extend_from_slice(extra);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_offsets_match_the_documented_format() {
        assert_eq!(
            (
                HEADER_LEN,
                WRAPPED_KEY_AT,
                VALUE_NONCE_AT,
                VALUE_AT,
                MIN_LEN
            ),
            (5, 17, 65, 77, 93)
        );
    }

    #[test]
    fn context_encoding_is_canonical_and_length_prefixed() {
        let ctx = SecretContext {
            account_id: "ab",
            secret_id: "c",
            version: -2,
        };
        let mut expected = b"airlock.secret.v1".to_vec();
        expected.extend_from_slice(&[0, 0, 0, 2, b'a', b'b', 0, 0, 0, 1, b'c']);
        expected.extend_from_slice(&(-2i64).to_be_bytes());
        assert_eq!(context_bytes(&ctx).ok(), Some(expected.clone()));

        let shifted = SecretContext {
            account_id: "a",
            secret_id: "bc",
            version: -2,
        };
        assert_ne!(context_bytes(&shifted).ok(), Some(expected));
    }
}
