//! What the data plane knows, and the interface through which the store feeds it.
//!
//! The proxy never imports the store. It asks a [`StateSource`] for a full snapshot at start,
//! follows a [`ChangeFeed`] of object ids that changed, reloads just those objects, and falls back
//! to a periodic full reload. Secret values travel sealed ([`SecretRecord::sealed`]); the proxy
//! opens them with the keyring, so plaintext exists only in the data plane's memory.

use std::future::Future;
use std::net::IpAddr;

use crate::auth::{AuthMechanism, CustomHeader};
use crate::endpoint::Endpoint;
use crate::ids::{AccountId, AuditId, DevboxId, GatewayConfigId, SecretId, TokenId};
use crate::limits::{CounterKey, LimitsRecord};
use crate::llm::{Api, Metered, ModelSpec};
use crate::router::RouterConfig;
use crate::source::SourceAddresses;
use crate::token::{TokenDigest, TokenScope};

/// One gateway token as the data plane needs it.
#[derive(Clone, Debug)]
pub struct TokenRecord {
    pub id: TokenId,
    pub digest: TokenDigest,
    pub account_id: AccountId,
    pub devbox_id: DevboxId,
    pub gateway_config_id: GatewayConfigId,
    /// `None` for a token of a router gateway: each backend names its own secret.
    pub secret_id: Option<SecretId>,
    pub expires_at_ms: Option<i64>,
    pub revoked: bool,
    /// What the token may do; `None`: whatever its gateway allows.
    pub scope: Option<TokenScope>,
}

#[derive(Clone, Debug)]
pub struct DevboxRecord {
    pub id: DevboxId,
    pub account_id: AccountId,
    pub running: bool,
    pub source_addresses: SourceAddresses,
}

#[derive(Clone, Debug)]
pub struct GatewayRecord {
    pub id: GatewayConfigId,
    pub account_id: AccountId,
    pub endpoint: Endpoint,
    pub auth: AuthMechanism,
    pub custom_headers: Vec<CustomHeader>,
    /// The control plane's MAC over the fields above (`crate::binding`); the data plane uses
    /// the config only if it checks.
    pub binding: Option<Vec<u8>>,
    /// What the data plane knows of the endpoint's LLM traffic. Not covered by the binding:
    /// it decides what is metered and how it is priced, never where a credential goes.
    pub llm: LlmSettings,
    /// A router gateway's backends and rules (`type: router`); `None` for a plain gateway.
    /// The backends' gateway/secret pairs are covered by the binding.
    pub router: Option<RouterConfig>,
}

/// A gateway config's LLM settings: its provider preset, dialect and model list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LlmSettings {
    /// The preset id (`anthropic`, `openai`, …), if the config was made from one.
    pub provider: Option<String>,
    pub api: Api,
    /// The operator's model list; its prices win over the bundled table.
    pub models: Vec<ModelSpec>,
}

impl GatewayRecord {
    /// The bytes [`GatewayRecord::binding`] covers.
    pub fn binding_message(&self) -> Vec<u8> {
        let mut message = crate::binding::gateway_binding_message(
            &self.account_id,
            &self.id,
            &self.endpoint,
            &self.auth,
            &self.custom_headers,
        );
        if let Some(router) = &self.router {
            message.extend_from_slice(&router.binding_bytes());
        }
        message
    }
}

/// The current version of a secret, still sealed. Open it with
/// `SecretContext { account_id, secret_id: id, version }`.
#[derive(Clone)]
pub struct SecretRecord {
    pub id: SecretId,
    pub account_id: AccountId,
    pub version: i64,
    pub sealed: Vec<u8>,
}

impl std::fmt::Debug for SecretRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretRecord")
            .field("id", &self.id)
            .field("account_id", &self.account_id)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

/// A set of records: everything (a full load) or the current state of some objects (a partial
/// load, where an object that was asked for and is absent has been deleted).
#[derive(Clone, Debug, Default)]
pub struct StateSnapshot {
    pub tokens: Vec<TokenRecord>,
    pub devboxes: Vec<DevboxRecord>,
    pub gateways: Vec<GatewayRecord>,
    pub secrets: Vec<SecretRecord>,
}

/// An object that changed. The feed says *what* changed, never *how*: the data plane reloads it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Change {
    Token(TokenId),
    Devbox(DevboxId),
    GatewayConfig(GatewayConfigId),
    Secret(SecretId),
}

/// The store could not answer. The message names no secret.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{0}")]
pub struct SourceError(pub String);

/// What a feed reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FeedEvent {
    Changed(Change),
    /// Notifications may have been missed (a reconnect, a lagging receiver): reload everything.
    Resync,
}

/// A subscription to changes.
pub trait ChangeFeed: Send + 'static {
    /// The next event; an error means the feed is broken and should be subscribed to again.
    fn next(&mut self) -> impl Future<Output = Result<FeedEvent, SourceError>> + Send;
}

/// Where the data plane's state comes from. Implemented by the store.
pub trait StateSource: Send + Sync + 'static {
    type Feed: ChangeFeed;

    /// Every unrevoked, unexpired token of a running devbox, and the devboxes, gateway configs
    /// and current secret versions those tokens reference.
    fn load_all(&self) -> impl Future<Output = Result<StateSnapshot, SourceError>> + Send;

    /// The same records as [`load_all`](Self::load_all), handed to `page` a bounded piece at a
    /// time, so that a data plane with a million tokens never holds them all twice (once as
    /// records and once in its own form). Gateway configs and secrets come first, then
    /// devboxes, then tokens: a page may reference objects of earlier pages. The default hands
    /// over `load_all` as one page.
    fn load_all_paged<F>(&self, mut page: F) -> impl Future<Output = Result<(), SourceError>> + Send
    where
        F: FnMut(StateSnapshot) + Send,
    {
        async move {
            page(self.load_all().await?);
            Ok(())
        }
    }

    /// The current records of the given objects, plus, for a devbox, gateway config or secret, the
    /// active tokens that reference it (so that a new or changed token arrives with everything it
    /// needs).
    fn load_changed(
        &self,
        changes: &[Change],
    ) -> impl Future<Output = Result<StateSnapshot, SourceError>> + Send;

    /// One token by digest and the objects it references, for a token minted a moment ago whose
    /// notification has not arrived yet. `None` when unknown.
    fn load_token(
        &self,
        digest: &TokenDigest,
    ) -> impl Future<Output = Result<Option<StateSnapshot>, SourceError>> + Send;

    /// Starts following changes. Events that happen after this returns are delivered.
    fn subscribe(&self) -> impl Future<Output = Result<Self::Feed, SourceError>> + Send;

    /// The limits of every scope whose limits changed at or after `since_ms` (all of them for
    /// 0), emptied ones included. The default: a source without limits.
    fn limits_since(
        &self,
        _since_ms: i64,
    ) -> impl Future<Output = Result<Vec<LimitsRecord>, SourceError>> + Send {
        async { Ok(Vec::new()) }
    }

    /// Takes up to `want` of what is left of the counter `key` under `limit`, in one conditional
    /// update (`docs/limits.md`). The default: a source without a ledger.
    fn lease(
        &self,
        _key: &CounterKey,
        _limit: u64,
        _want: u64,
    ) -> impl Future<Output = Result<Lease, SourceError>> + Send {
        async { Err(SourceError("this source keeps no limit counters".into())) }
    }

    /// Adds `delta` to the counter `key`: negative returns an unspent lease, positive charges
    /// usage beyond what was leased.
    fn settle(
        &self,
        _key: &CounterKey,
        _delta: i64,
    ) -> impl Future<Output = Result<(), SourceError>> + Send {
        async { Err(SourceError("this source keeps no limit counters".into())) }
    }
}

/// What a [`StateSource::lease`] took.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Lease {
    /// How much was taken: `want`, or what was left, or 0.
    pub granted: u64,
    /// The counter after the lease.
    pub used: u64,
}

/// One proxied request, as the audit trail records it. Holds ids, never a token or a value.
#[derive(Clone, Debug)]
pub struct RequestAuditEvent {
    /// Assigned when the event is recorded, so that a batch written twice (a replayed spill file
    /// after a partial failure) is stored once.
    pub id: AuditId,
    pub time_ms: i64,
    pub account_id: Option<AccountId>,
    pub devbox_id: Option<DevboxId>,
    pub gateway_config_id: Option<GatewayConfigId>,
    pub token_id: Option<TokenId>,
    pub secret_id: Option<SecretId>,
    pub secret_version: Option<i64>,
    pub method: String,
    /// The request path without its query (the query may carry keys of other services).
    pub path: String,
    /// The status Airlock answered with.
    pub status: u16,
    pub upstream_status: Option<u16>,
    pub latency_us: i64,
    pub ttfb_us: Option<i64>,
    pub bytes_in: i64,
    pub bytes_out: i64,
    pub client_addr: IpAddr,
    /// Airlock's own error code (`x-airlock-error`), if it produced the response.
    pub error_code: Option<String>,
    /// The request's `x-request-id`: the client's when usable, else generated. `None` only for
    /// events recorded before request ids existed (an old spill file).
    pub request_id: Option<String>,
    /// Provider, model, usage and cost, for a gateway whose `api` is not `none`.
    pub llm: Option<Metered>,
}

/// Where request audit events go, in batches.
pub trait AuditSink: Send + Sync + 'static {
    fn write_batch(
        &self,
        events: &[RequestAuditEvent],
    ) -> impl Future<Output = Result<(), SourceError>> + Send;

    /// Records that limits were first hit in their windows (`limit.exceeded` in the
    /// control-plane audit trail). The default: a sink that keeps no such trail drops them.
    fn write_limit_hits(
        &self,
        _hits: &[crate::limits::LimitHit],
    ) -> impl Future<Output = Result<(), SourceError>> + Send {
        async { Ok(()) }
    }

    /// Whether the store takes one write at a time (SQLite): a writer that finds another one
    /// writing would wait for it, and the other may be the idle-priority one that the
    /// scheduler holds back. The default: writes run side by side (Postgres).
    fn single_writer(&self) -> bool {
        false
    }

    /// A sink on the same store for a writer of its own: its own connection, opened by the
    /// thread that first writes (the data plane's audit writers run on threads of their own,
    /// one of them at idle priority). `None` (the default) when the sink has nothing to gain
    /// from it; the writer then shares this one.
    fn dedicated(&self) -> Option<Self>
    where
        Self: Sized,
    {
        None
    }
}
