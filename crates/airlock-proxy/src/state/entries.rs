//! What the token map holds: token entries, the slots they share (a devbox, a gateway config,
//! a secret: each object's current version), and those versions prepared for the hot path
//! (header names and values, URI parts, the opened secret in the forms a request sends).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use airlock_core::state::SecretRecord;
use airlock_core::TokenScope;
use airlock_core::{
    AccountId, DevboxId, GatewayConfigId, SecretId, SourceAddresses, TokenDigest, TokenId,
};
use airlock_crypto::{Keyring, SecretContext, SecretValue};
use arc_swap::ArcSwapOption;
use base64::Engine as _;
use http::uri::{Authority, Scheme};
use http::{HeaderName, HeaderValue};

use crate::scrub::Needle;
use crate::stage::Stage;

/// One object's current version, shared by every token that references the object.
pub(crate) struct Slot<K, T> {
    pub(crate) id: K,
    current: ArcSwapOption<T>,
    /// The object is present in the database but refused: a gateway config whose binding does
    /// not check. The slot is empty then; this only says why.
    pub(super) unverified: AtomicBool,
}

impl<K, T> Slot<K, T> {
    pub(super) fn new(id: K) -> Self {
        Slot {
            id,
            current: ArcSwapOption::empty(),
            unverified: AtomicBool::new(false),
        }
    }

    /// Whether the object was refused because its binding did not check.
    pub(crate) fn is_unverified(&self) -> bool {
        self.unverified.load(Ordering::Acquire)
    }

    /// The current version, for a request to keep until it ends.
    pub(crate) fn load(&self) -> Option<Arc<T>> {
        self.current.load_full()
    }

    pub(super) fn store(&self, value: Option<Arc<T>>) {
        self.current.store(value);
    }
}

pub(crate) type DevboxSlot = Slot<DevboxId, DevboxState>;
pub(crate) type GatewaySlot = Slot<GatewayConfigId, GatewayEntry>;
pub(crate) type SecretSlot = Slot<SecretId, SecretEntry>;

pub(crate) struct DevboxState {
    /// Shared with the account's other devboxes and tokens (a million devboxes need not hold a
    /// million copies of a few account ids).
    pub(crate) account_id: Arc<AccountId>,
    pub(crate) running: bool,
    pub(crate) source_addresses: SourceAddresses,
}

/// A token as the data plane keeps it: ids, expiry and its three slots.
pub(crate) struct TokenEntry {
    pub(crate) digest: TokenDigest,
    pub(crate) id: TokenId,
    pub(crate) account_id: Arc<AccountId>,
    pub(crate) expires_at_ms: Option<i64>,
    /// Allowed methods and path prefixes of a scoped token (403 `token_scope` outside them).
    pub(crate) scope: Option<Box<TokenScope>>,
    /// The registry version that inserted it: a full reload leaves tombstones only for tokens
    /// that were there before it started (a token inserted meanwhile is not "gone", just newer
    /// than the reload's snapshot).
    pub(super) since: u64,
    pub(crate) devbox: Arc<DevboxSlot>,
    pub(crate) gateway: Arc<GatewaySlot>,
    pub(crate) secret: Arc<SecretSlot>,
}

/// How the primary credential is placed.
pub(crate) enum Credential {
    Bearer,
    Header(HeaderName),
    Basic,
}

pub(crate) enum CustomValue {
    Literal(HeaderValue),
    Secret(Arc<SecretSlot>),
}

/// A gateway config, prepared for the hot path: everything a request needs is already a header
/// name, a header value or a URI part.
pub(crate) struct GatewayEntry {
    pub(crate) account_id: AccountId,
    pub(crate) scheme: Scheme,
    pub(crate) authority: Authority,
    /// `Host` sent upstream (the endpoint's authority, port only when not the default).
    pub(crate) host: HeaderValue,
    /// Empty or `/a/b`.
    pub(crate) base_path: Box<str>,
    pub(crate) credential: Credential,
    pub(crate) custom: Box<[(HeaderName, CustomValue)]>,
    /// The stages its requests go through (`stage`), chosen when the entry is built; empty for
    /// a plain passthrough gateway.
    pub(crate) stages: Box<[Arc<dyn Stage>]>,
    /// Its LLM settings, for pricing a reservation under a cost limit (`quota`).
    pub(crate) llm: airlock_core::state::LlmSettings,
}

/// A secret's current version, opened.
pub(crate) struct SecretEntry {
    pub(crate) account_id: AccountId,
    pub(crate) version: i64,
    /// The ciphertext it was opened from: a reload that finds the same version keeps the opened
    /// value only if the row still holds these bytes (a ciphertext swapped in the database must
    /// be opened, and fail, not be papered over by the value already in memory).
    pub(super) sealed: Box<[u8]>,
    /// `None` when it could not be opened (logged by id): its tokens answer `secret_unavailable`.
    pub(super) material: Option<Material>,
}

/// The opened value in the forms the hot path needs, built once per version.
pub(crate) struct Material {
    _value: SecretValue,
    /// `<secret>`, for a header credential or a custom header; `None` if not a valid header value.
    pub(crate) raw: Option<HeaderValue>,
    /// `Bearer <secret>`.
    pub(crate) bearer: Option<HeaderValue>,
    /// `Basic base64(<secret>)`.
    pub(crate) basic: Option<HeaderValue>,
    /// The bytes to scrub from response headers: the value itself and its base64 form.
    pub(crate) needles: [Needle; 2],
}

impl std::fmt::Debug for SecretEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretEntry")
            .field("account_id", &self.account_id)
            .field("version", &self.version)
            .field("opened", &self.material.is_some())
            .finish()
    }
}

impl SecretEntry {
    pub(crate) fn material(&self) -> Option<&Material> {
        self.material.as_ref()
    }

    pub(super) fn open(keyring: &Keyring, record: &SecretRecord) -> SecretEntry {
        let ctx = SecretContext {
            account_id: record.account_id.as_str(),
            secret_id: record.id.as_str(),
            version: record.version,
        };
        let material = match keyring.open(&ctx, &record.sealed) {
            Ok(value) => Some(Material::new(value)),
            Err(err) => {
                // The error names no key material; the id tells the operator which row to look at.
                tracing::error!(secret_id = %record.id, version = record.version, error = %err,
                    "cannot open a secret; requests that use it will fail");
                None
            }
        };
        SecretEntry {
            account_id: record.account_id.clone(),
            version: record.version,
            sealed: record.sealed.clone().into_boxed_slice(),
            material,
        }
    }
}

impl Material {
    fn new(value: SecretValue) -> Material {
        let bytes = value.expose();
        let sensitive = |v: Vec<u8>| {
            HeaderValue::from_maybe_shared(bytes::Bytes::from(v))
                .ok()
                .map(|mut h| {
                    h.set_sensitive(true);
                    h
                })
        };
        let b64 = zeroize::Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(bytes));
        let mut bearer = Vec::with_capacity(7 + bytes.len());
        bearer.extend_from_slice(b"Bearer ");
        bearer.extend_from_slice(bytes);
        let mut basic = Vec::with_capacity(6 + b64.len());
        basic.extend_from_slice(b"Basic ");
        basic.extend_from_slice(b64.as_bytes());
        Material {
            raw: sensitive(bytes.to_vec()),
            bearer: sensitive(bearer),
            basic: sensitive(basic),
            needles: [Needle::new(bytes), Needle::new(b64.as_bytes())],
            _value: value,
        }
    }

    /// The value of the credential header for this mechanism.
    pub(crate) fn credential(&self, credential: &Credential) -> Option<&HeaderValue> {
        match credential {
            Credential::Bearer => self.bearer.as_ref(),
            Credential::Header(_) => self.raw.as_ref(),
            Credential::Basic => self.basic.as_ref(),
        }
    }
}
