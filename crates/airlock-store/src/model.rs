//! Rows as the store reads and writes them, in domain types.

use airlock_core::router::RouterConfig;
use airlock_core::state::LlmSettings;
use airlock_core::TokenScope;
use airlock_core::{
    AccountId, ApiKeyId, AuthMechanism, CustomHeader, DevboxId, Endpoint, EnvName, GatewayConfigId,
    Label, SecretId, SourceAddresses, TokenDigest, TokenId,
};

#[derive(Clone, Debug)]
pub struct AccountRow {
    pub id: AccountId,
    pub name: String,
    /// Operators may create and list accounts; the first account is one.
    pub operator: bool,
    pub create_time_ms: i64,
}

/// What an API key may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Everything in its account.
    Admin,
    /// What a sandbox orchestrator needs: register and shut down devboxes, mint tokens, read
    /// gateway configs. Never secrets.
    Launcher,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Admin => "admin",
            Scope::Launcher => "launcher",
        }
    }

    pub fn parse(text: &str) -> Option<Scope> {
        match text {
            "admin" => Some(Scope::Admin),
            "launcher" => Some(Scope::Launcher),
            _ => None,
        }
    }
}

#[derive(Clone, Debug)]
pub struct ApiKeyRow {
    pub id: ApiKeyId,
    pub account_id: AccountId,
    pub name: String,
    pub scope: Scope,
    pub digest: TokenDigest,
    pub create_time_ms: i64,
    pub revoke_time_ms: Option<i64>,
}

/// A secret's metadata and its current sealed value.
#[derive(Clone)]
pub struct SecretRow {
    pub id: SecretId,
    pub account_id: AccountId,
    pub name: EnvName,
    pub version: i64,
    pub sealed: Vec<u8>,
    pub key_id: u32,
    pub create_time_ms: i64,
    pub update_time_ms: i64,
}

impl std::fmt::Debug for SecretRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretRow")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Debug)]
pub struct GatewayConfigRow {
    pub id: GatewayConfigId,
    pub account_id: AccountId,
    pub name: Label,
    pub endpoint: Endpoint,
    pub auth: AuthMechanism,
    pub custom_headers: Vec<CustomHeader>,
    pub description: Option<String>,
    pub create_time_ms: i64,
    pub update_time_ms: i64,
    /// The MAC over endpoint, auth and custom headers made by the control plane
    /// (`airlock_core::binding`); `None` for rows written before migration 0003.
    pub binding: Option<Vec<u8>>,
    /// Provider preset, dialect and model list; rows written before migration 0004 read as the
    /// default (no provider, `api` none, no models).
    pub llm: LlmSettings,
    /// A router gateway's backends and rules; `None` for a plain gateway (and rows written
    /// before migration 0006).
    pub router: Option<RouterConfig>,
}

impl GatewayConfigRow {
    /// The bytes its binding covers (`airlock_core::binding`, plus a router's backend pairs).
    pub fn binding_message(&self) -> Vec<u8> {
        let mut message = airlock_core::binding::gateway_binding_message(
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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DevboxStatus {
    Running,
    Shutdown,
}

impl DevboxStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DevboxStatus::Running => "running",
            DevboxStatus::Shutdown => "shutdown",
        }
    }
}

#[derive(Clone, Debug)]
pub struct DevboxRow {
    pub id: DevboxId,
    pub account_id: AccountId,
    pub name: Option<String>,
    pub status: DevboxStatus,
    pub source_addresses: SourceAddresses,
    /// A JSON object, stored as text.
    pub metadata: String,
    pub create_time_ms: i64,
    pub update_time_ms: i64,
    pub shutdown_time_ms: Option<i64>,
    /// PREFIX → (gateway config, secret), from the tokens minted at registration.
    pub gateway_specs: Vec<GatewaySpec>,
}

#[derive(Clone, Debug)]
pub struct GatewaySpec {
    pub prefix: EnvName,
    pub gateway_config_id: GatewayConfigId,
    /// `None` for a router gateway.
    pub secret_id: Option<SecretId>,
}

#[derive(Clone, Debug)]
pub struct TokenRow {
    pub id: TokenId,
    pub account_id: AccountId,
    pub devbox_id: DevboxId,
    pub gateway_config_id: GatewayConfigId,
    /// `None` for a router gateway.
    pub secret_id: Option<SecretId>,
    /// The environment-variable prefix when minted at registration.
    pub prefix: Option<EnvName>,
    pub digest: TokenDigest,
    pub create_time_ms: i64,
    pub expire_time_ms: Option<i64>,
    /// Allowed methods and path prefixes; `None`: unscoped.
    pub scope: Option<TokenScope>,
}

/// A gateway token as a devbox's token list shows it: never its value or digest.
#[derive(Clone, Debug)]
pub struct TokenInfo {
    pub id: TokenId,
    pub devbox_id: DevboxId,
    pub gateway_config_id: GatewayConfigId,
    /// `None` for a router gateway.
    pub secret_id: Option<SecretId>,
    pub prefix: Option<String>,
    pub create_time_ms: i64,
    pub expire_time_ms: Option<i64>,
    pub revoke_time_ms: Option<i64>,
    pub scope: Option<TokenScope>,
    /// The time of the last request event that presented it, refused ones included.
    pub last_used_time_ms: Option<i64>,
    /// Request events that presented it.
    pub use_count: i64,
}

/// A control-plane audit event: who did what to which object, never a value.
#[derive(Clone, Debug)]
pub struct AuditRow {
    pub id: String,
    pub time_ms: i64,
    pub account_id: AccountId,
    pub api_key_id: Option<ApiKeyId>,
    pub action: String,
    pub object_type: String,
    pub object_id: String,
    /// A JSON object of ids and names, never a secret value or token.
    pub detail: String,
    pub client_addr: Option<String>,
}

/// A stored request event (the data plane's audit trail), as read back.
#[derive(Clone, Debug)]
pub struct RequestEventRow {
    pub id: String,
    pub event: airlock_core::state::RequestAuditEvent,
}

/// One page of a list.
#[derive(Clone, Debug, Default)]
pub struct Page {
    /// Items per page (the caller bounds it).
    pub limit: i64,
    /// Only items strictly after this id in list order (newest first).
    pub starting_after: Option<String>,
    /// Whether to count all matching items.
    pub include_total_count: bool,
}

#[derive(Clone, Debug)]
pub struct Listed<T> {
    pub items: Vec<T>,
    pub has_more: bool,
    pub total_count: Option<i64>,
}

/// Filters for listing gateway configs.
#[derive(Clone, Debug, Default)]
pub struct GatewayFilter {
    pub id: Option<String>,
    pub name: Option<String>,
    pub search: Option<String>,
}

/// Filters for audit listings. Times are inclusive bounds in Unix ms.
#[derive(Clone, Debug, Default)]
pub struct AuditFilter {
    pub object_id: Option<String>,
    pub action: Option<String>,
    pub devbox_id: Option<String>,
    pub gateway_config_id: Option<String>,
    pub secret_id: Option<String>,
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
}

/// What usage can be grouped by (`GET /v1/usage?group_by=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UsageKey {
    Model,
    Provider,
    Devbox,
    Gateway,
    /// The UTC calendar day of the request.
    Day,
}

/// Which metered request events a usage query sums. Times are Unix ms: `start_ms` inclusive,
/// `end_ms` exclusive, so that consecutive windows never count an event twice.
#[derive(Clone, Debug, Default)]
pub struct UsageFilter {
    pub start_ms: Option<i64>,
    pub end_ms: Option<i64>,
    pub devbox_id: Option<DevboxId>,
    pub gateway_config_id: Option<GatewayConfigId>,
    pub model: Option<String>,
}

/// At most this many groups in one usage answer; a query with more is refused rather than cut
/// short, so a total is never silently partial.
pub const MAX_USAGE_GROUPS: usize = 10_000;

/// One group of a usage query. A key field is `None` when the query did not group by it, and
/// also when it did and the events have no value there (a request whose model is unknown).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UsageRow {
    pub model: Option<String>,
    pub provider: Option<String>,
    pub devbox_id: Option<DevboxId>,
    pub gateway_config_id: Option<GatewayConfigId>,
    /// Days since 1970-01-01 (UTC).
    pub day: Option<i64>,
    pub requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_tokens: u64,
    pub cache_write_tokens: u64,
    pub reasoning_tokens: u64,
    /// The sum of the known costs; `None` when no request of the group had one.
    pub cost_nanos: Option<u64>,
    /// Requests of the group whose cost is unknown (not in `cost_nanos`).
    pub unpriced_requests: u64,
}
