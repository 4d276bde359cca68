//! Envelope encryption for Airlock's secret values.
//!
//! A [`Keyring`] holds one or more master keys (key-encryption keys, from
//! `AIRLOCK_MASTER_KEY` / `AIRLOCK_MASTER_KEY_FILE`). [`Keyring::seal`] encrypts each secret version
//! under its own random data key and wraps that data key with the active master key;
//! [`Keyring::open`] reverses it; [`Keyring::rewrap`] moves a blob to the active key during
//! rotation. Both layers are AES-256-GCM and both are bound to a [`SecretContext`] (account,
//! secret id, version), so a database writer cannot swap, move or edit ciphertexts without
//! `open` failing. The exact byte format is documented in the `envelope` module and repeated
//! here because it is stored in databases and must never change silently:
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
//! [`Keyring::bind`] and [`Keyring::verify_binding`] make and check *bindings*: MACs under a key
//! derived from the master key over records that are stored in plaintext but must not be
//! changed outside the control plane (a gateway config's endpoint, credential placement and
//! headers). The format is in the `binding` module.
//!
//! Invariants: no IO and no async; key and plaintext bytes live only in zeroizing buffers and
//! are never formatted (`Debug` shows ids and lengths); error messages never contain key
//! material or input text; secret bytes are compared only in constant time.

mod binding;
mod envelope;
mod error;
mod key;
mod keyring;
mod secret;

pub use binding::BINDING_LEN;
pub use error::{CryptoError, KeyError};
pub use key::{KeyId, MasterKey};
pub use keyring::Keyring;
pub use secret::{SecretContext, SecretValue};
