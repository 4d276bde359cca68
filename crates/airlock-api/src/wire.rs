//! The JSON wire format: request bodies, query strings and views. Only this crate knows it.
//! Field names follow Runloop's agent-gateway API so that its generated SDKs work unchanged.

use std::collections::BTreeMap;

use airlock_core::llm::format_usd;
use airlock_core::{AuthMechanism, CustomHeader, HeaderSource, ModelSpec};
use airlock_store::{
    ApiKeyRow, AuditRow, DevboxRow, GatewayConfigRow, Listed, RequestEventRow, SecretRow, TokenInfo,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Number, Value};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuthMechanismIn {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub key: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CustomHeaderIn {
    pub name: String,
    #[serde(default)]
    pub secret: Option<String>,
    #[serde(default)]
    pub value: Option<String>,
}

/// One model of a gateway config's `models`, in Polpo's shape for custom model definitions.
/// Unknown fields are refused like everywhere else: a misspelt `contextwindow` or `cacheread`
/// would otherwise drop a limit or a price without a word.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct ModelIn {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub reasoning: Option<bool>,
    #[serde(default)]
    pub input: Option<Vec<String>>,
    #[serde(default)]
    pub cost: Option<CostIn>,
    #[serde(default)]
    pub context_window: Option<u64>,
    #[serde(default)]
    pub max_tokens: Option<u64>,
    #[serde(default)]
    pub tools: Option<bool>,
}

/// USD per million tokens, as JSON numbers. Kept as `Number` so that the handler, not serde,
/// says what is wrong with a value (negative, too many decimals).
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct CostIn {
    pub input: Number,
    pub output: Number,
    #[serde(default)]
    pub cache_read: Option<Number>,
    #[serde(default)]
    pub cache_write: Option<Number>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct GatewayConfigCreate {
    pub name: String,
    /// `passthrough` (the default) or `router` (refused until router gateways exist).
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    /// A preset id from `GET /v1/providers`; `endpoint`, `auth_mechanism` and `api` default from it.
    #[serde(default)]
    pub provider: Option<String>,
    /// Required unless `provider` is given.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Required unless `provider` is given.
    #[serde(default)]
    pub auth_mechanism: Option<AuthMechanismIn>,
    #[serde(default)]
    pub api: Option<String>,
    #[serde(default)]
    pub models: Option<Vec<ModelIn>>,
    #[serde(default)]
    pub custom_headers: Option<Vec<CustomHeaderIn>>,
    #[serde(default)]
    pub description: Option<String>,
    /// Router gateways (`type: router`): the backends and how requests pick among them.
    #[serde(default)]
    pub backends: Option<Vec<BackendIn>>,
    #[serde(default)]
    pub strategy: Option<String>,
    #[serde(default)]
    pub fallback: Option<bool>,
    #[serde(default)]
    pub max_attempts: Option<u32>,
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    #[serde(default)]
    pub aliases: Option<BTreeMap<String, String>>,
    /// Budgets and rate limits (`docs/limits.md`).
    #[serde(default)]
    pub limits: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct GatewayConfigUpdate {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub provider: Option<String>,
    #[serde(default)]
    pub endpoint: Option<String>,
    #[serde(default)]
    pub auth_mechanism: Option<AuthMechanismIn>,
    #[serde(default)]
    pub api: Option<String>,
    #[serde(default)]
    pub models: Option<Vec<ModelIn>>,
    #[serde(default)]
    pub custom_headers: Option<Vec<CustomHeaderIn>>,
    #[serde(default)]
    pub description: Option<String>,
    /// Router gateways (`type: router`): the backends and how requests pick among them.
    #[serde(default)]
    pub backends: Option<Vec<BackendIn>>,
    #[serde(default)]
    pub strategy: Option<String>,
    #[serde(default)]
    pub fallback: Option<bool>,
    #[serde(default)]
    pub max_attempts: Option<u32>,
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    #[serde(default)]
    pub aliases: Option<BTreeMap<String, String>>,
    /// Replaces the config's limits object (`{}` removes them).
    #[serde(default)]
    pub limits: Option<Value>,
}

/// One backend of a router gateway: a gateway config and the secret it uses, by id or name.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BackendIn {
    pub gateway: String,
    pub secret: String,
    #[serde(default)]
    pub weight: Option<u32>,
    #[serde(default)]
    pub priority: Option<i32>,
    #[serde(default)]
    pub models: Option<Vec<String>>,
    /// The provider's quota on this backend: `{"rpm", "tpm", "rpd"}` (`docs/router.md`).
    #[serde(default)]
    pub limits: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SecretCreate {
    pub name: String,
    pub value: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SecretUpdate {
    pub value: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct GatewayRefIn {
    pub gateway: String,
    /// Omitted for a router gateway (each backend names its own).
    #[serde(default)]
    pub secret: Option<String>,
}

/// `create_gateway_token`'s body: the pair, and an optional scope.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateTokenIn {
    pub gateway: String,
    /// Omitted for a router gateway.
    #[serde(default)]
    pub secret: Option<String>,
    /// The token expires this many seconds after it is minted.
    #[serde(default)]
    pub expires_in_s: Option<i64>,
    #[serde(default)]
    pub allowed_methods: Option<Vec<String>>,
    #[serde(default)]
    pub allowed_path_prefixes: Option<Vec<String>>,
    /// Requests the token may make in all, counted across replicas.
    #[serde(default)]
    pub max_requests: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DevboxRegister {
    #[serde(default)]
    pub name: Option<String>,
    pub source_addresses: Vec<String>,
    #[serde(default)]
    pub gateways: Option<BTreeMap<String, GatewayRefIn>>,
    #[serde(default)]
    pub metadata: Option<Map<String, Value>>,
    /// Budgets and rate limits (`docs/limits.md`).
    #[serde(default)]
    pub limits: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DevboxUpdate {
    /// Required unless `limits` is given.
    #[serde(default)]
    pub source_addresses: Option<Vec<String>>,
    /// Replaces the devbox's limits object (`{}` removes them).
    #[serde(default)]
    pub limits: Option<Value>,
}

/// An empty object; `POST …/delete` and `…/shutdown` take no fields.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Empty {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AccountCreate {
    pub name: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ApiKeyCreate {
    pub name: String,
    pub scope: String,
    /// Operators may create a key in another account.
    #[serde(default)]
    pub account_id: Option<String>,
}

/// Query string of list calls. Values arrive as text; `limit` and `include_total_count` are
/// parsed by hand so that a bad value gets a message naming the parameter.
#[derive(Deserialize, Default)]
pub(crate) struct ListQuery {
    pub limit: Option<String>,
    pub starting_after: Option<String>,
    pub include_total_count: Option<String>,
    pub name: Option<String>,
    pub id: Option<String>,
    pub search: Option<String>,
    pub status: Option<String>,
    pub object_id: Option<String>,
    pub action: Option<String>,
    pub devbox_id: Option<String>,
    pub gateway_config_id: Option<String>,
    pub secret_id: Option<String>,
    pub since_ms: Option<String>,
    pub until_ms: Option<String>,
}

pub(crate) fn auth_view(auth: &AuthMechanism) -> Value {
    match auth.key() {
        Some(key) => json!({"type": auth.kind(), "key": key}),
        None => json!({"type": auth.kind()}),
    }
}

pub(crate) fn headers_view(headers: &[CustomHeader]) -> Value {
    Value::Array(
        headers
            .iter()
            .map(|h| match &h.source {
                HeaderSource::Literal(v) => json!({"name": h.name, "value": v}),
                HeaderSource::Secret(id) => json!({"name": h.name, "secret": id.as_str()}),
            })
            .collect(),
    )
}

/// Nano-dollars per million tokens as the JSON number of dollars an operator wrote. Parsing
/// the exact decimal gives the `f64` nearest to it, whose shortest spelling (what serde_json
/// writes) is that decimal again for any price with up to 15 significant digits.
fn usd_number(nanos: u64) -> Value {
    let dollars = format_usd(nanos).parse::<f64>().unwrap_or(f64::MAX);
    Number::from_f64(dollars).map_or(Value::Null, Value::Number)
}

/// A model of a gateway config's list, in the Polpo shape it was given in.
pub(crate) fn model_view(m: &ModelSpec) -> Value {
    let mut out = Map::new();
    out.insert("id".into(), Value::from(m.id.as_str()));
    if let Some(name) = &m.name {
        out.insert("name".into(), Value::from(name.as_str()));
    }
    out.insert("reasoning".into(), Value::Bool(m.reasoning));
    let input = if m.images {
        json!(["text", "image"])
    } else {
        json!(["text"])
    };
    out.insert("input".into(), input);
    if let Some(c) = &m.cost {
        out.insert(
            "cost".into(),
            json!({
                "input": usd_number(c.input),
                "output": usd_number(c.output),
                "cacheRead": usd_number(c.cache_read),
                "cacheWrite": usd_number(c.cache_write),
            }),
        );
    }
    if let Some(n) = m.context_window {
        out.insert("contextWindow".into(), Value::from(n));
    }
    if let Some(n) = m.max_tokens {
        out.insert("maxTokens".into(), Value::from(n));
    }
    if let Some(t) = m.tools {
        out.insert("tools".into(), Value::Bool(t));
    }
    Value::Object(out)
}

pub(crate) fn gateway_view(g: &GatewayConfigRow) -> Value {
    if let Some(r) = &g.router {
        return router_view(g, r);
    }
    json!({
        "id": g.id.as_str(),
        "name": g.name.as_str(),
        "type": "passthrough",
        "provider": g.llm.provider,
        "endpoint": g.endpoint.to_string(),
        "auth_mechanism": auth_view(&g.auth),
        "api": g.llm.api.as_str(),
        "models": g.llm.models.iter().map(model_view).collect::<Vec<_>>(),
        "custom_headers": headers_view(&g.custom_headers),
        "description": g.description,
        "create_time_ms": g.create_time_ms,
        "account_id": g.account_id.as_str(),
    })
}

/// A router gateway: its backends by id, and its rules (no endpoint or auth of its own).
fn router_view(g: &GatewayConfigRow, r: &airlock_core::router::RouterConfig) -> Value {
    let backends: Vec<Value> = r
        .backends
        .iter()
        .map(|b| {
            let limits: Map<String, Value> = b
                .limits
                .iter()
                .map(|(name, _, v)| (name.to_owned(), Value::from(v)))
                .collect();
            json!({"name": b.name, "gateway": b.gateway.as_str(), "secret": b.secret.as_str(),
                "weight": b.weight, "priority": b.priority, "models": b.models, "limits": limits})
        })
        .collect();
    let aliases: Map<String, Value> = r
        .aliases
        .iter()
        .map(|(k, (i, m))| {
            let gateway = r.backends.get(*i).map_or("", |b| b.gateway.as_str());
            (k.clone(), Value::from(format!("{gateway}:{m}")))
        })
        .collect();
    json!({
        "id": g.id.as_str(),
        "name": g.name.as_str(),
        "type": "router",
        "backends": backends,
        "strategy": r.strategy.as_str(),
        "fallback": r.fallback,
        "max_attempts": r.max_attempts,
        "timeout_ms": r.timeout_ms,
        "aliases": aliases,
        "description": g.description,
        "create_time_ms": g.create_time_ms,
        "account_id": g.account_id.as_str(),
    })
}

pub(crate) fn secret_view(s: &SecretRow) -> Value {
    json!({
        "id": s.id.as_str(),
        "name": s.name.as_str(),
        "create_time_ms": s.create_time_ms,
        "update_time_ms": s.update_time_ms,
        "version": s.version,
    })
}

/// A gateway token in a devbox's token list: ids and times, never the token or its digest.
#[derive(Serialize)]
pub(crate) struct TokenView {
    pub id: String,
    pub devbox_id: String,
    pub gateway_config_id: String,
    /// `null` for a router gateway's token.
    pub secret_id: Option<String>,
    /// The environment-variable prefix, for tokens minted at registration.
    pub prefix: Option<String>,
    /// `active`, `revoked` or `expired`.
    pub status: &'static str,
    pub create_time_ms: i64,
    pub expire_time_ms: Option<i64>,
    pub revoke_time_ms: Option<i64>,
    /// The scope of a scoped token (`null` when unscoped).
    pub allowed_methods: Option<Vec<String>>,
    pub allowed_path_prefixes: Option<Vec<String>>,
    /// A scoped token's request budget (`null` when it has none).
    pub max_requests: Option<u64>,
    pub last_used_time_ms: Option<i64>,
    pub use_count: i64,
}

impl TokenView {
    pub(crate) fn of(t: &TokenInfo, now_ms: i64) -> TokenView {
        let status = if t.revoke_time_ms.is_some() {
            "revoked"
        } else if t.expire_time_ms.is_some_and(|e| e <= now_ms) {
            "expired"
        } else {
            "active"
        };
        TokenView {
            id: t.id.as_str().to_owned(),
            devbox_id: t.devbox_id.as_str().to_owned(),
            gateway_config_id: t.gateway_config_id.as_str().to_owned(),
            secret_id: t.secret_id.as_ref().map(|s| s.as_str().to_owned()),
            prefix: t.prefix.clone(),
            status,
            create_time_ms: t.create_time_ms,
            expire_time_ms: t.expire_time_ms,
            revoke_time_ms: t.revoke_time_ms,
            allowed_methods: t.scope.as_ref().map(|s| s.methods.clone()),
            allowed_path_prefixes: t.scope.as_ref().map(|s| s.path_prefixes.clone()),
            max_requests: t.scope.as_ref().and_then(|s| s.max_requests),
            last_used_time_ms: t.last_used_time_ms,
            use_count: t.use_count,
        }
    }
}

pub(crate) fn devbox_view(d: &DevboxRow) -> Value {
    let specs: Map<String, Value> = d
        .gateway_specs
        .iter()
        .map(|s| {
            (
                s.prefix.as_str().to_owned(),
                json!({"gateway_config_id": s.gateway_config_id.as_str(), "secret_id": s.secret_id.as_ref().map(|s| s.as_str())}),
            )
        })
        .collect();
    json!({
        "id": d.id.as_str(),
        "name": d.name,
        "status": d.status.as_str(),
        "create_time_ms": d.create_time_ms,
        "shutdown_time_ms": d.shutdown_time_ms,
        "source_addresses": d.source_addresses.to_strings(),
        "gateway_specs": specs,
        "metadata": serde_json::from_str::<Value>(&d.metadata).unwrap_or_else(|_| json!({})),
    })
}

pub(crate) fn api_key_view(k: &ApiKeyRow) -> Value {
    json!({
        "id": k.id.as_str(),
        "account_id": k.account_id.as_str(),
        "name": k.name,
        "scope": k.scope.as_str(),
        "create_time_ms": k.create_time_ms,
    })
}

pub(crate) fn audit_view(a: &AuditRow) -> Value {
    json!({
        "id": a.id,
        "time_ms": a.time_ms,
        "account_id": a.account_id.as_str(),
        "api_key_id": a.api_key_id.as_ref().map(|k| k.as_str()),
        "action": a.action,
        "object_type": a.object_type,
        "object_id": a.object_id,
        "detail": serde_json::from_str::<Value>(&a.detail).unwrap_or(Value::Null),
        "client_addr": a.client_addr,
    })
}

/// One proxied request (`GET /v1/audit/requests`). Every field is always present; the LLM
/// fields are null for a request that was not metered (a gateway whose `api` is `none`).
#[derive(Serialize)]
pub(crate) struct RequestEventView<'a> {
    id: &'a str,
    time_ms: i64,
    account_id: Option<&'a str>,
    devbox_id: Option<&'a str>,
    gateway_config_id: Option<&'a str>,
    token_id: Option<&'a str>,
    secret_id: Option<&'a str>,
    secret_version: Option<i64>,
    method: &'a str,
    path: &'a str,
    status: u16,
    upstream_status: Option<u16>,
    latency_us: i64,
    ttfb_us: Option<i64>,
    bytes_in: i64,
    bytes_out: i64,
    client_addr: String,
    error_code: Option<&'a str>,
    request_id: Option<&'a str>,
    provider: Option<&'a str>,
    model: Option<&'a str>,
    usage: Option<UsageView>,
    /// Dollars as a decimal string (never a float); null when the model's price is unknown.
    cost_usd: Option<String>,
}

/// The tokens of one metered request.
#[derive(Serialize)]
pub(crate) struct UsageView {
    input_tokens: u64,
    output_tokens: u64,
    cache_read_tokens: u64,
    cache_write_tokens: u64,
    reasoning_tokens: u64,
    exact: bool,
}

impl<'a> From<&'a RequestEventRow> for RequestEventView<'a> {
    fn from(r: &'a RequestEventRow) -> Self {
        let e = &r.event;
        let llm = e.llm.as_ref();
        RequestEventView {
            id: &r.id,
            time_ms: e.time_ms,
            account_id: e.account_id.as_ref().map(|v| v.as_str()),
            devbox_id: e.devbox_id.as_ref().map(|v| v.as_str()),
            gateway_config_id: e.gateway_config_id.as_ref().map(|v| v.as_str()),
            token_id: e.token_id.as_ref().map(|v| v.as_str()),
            secret_id: e.secret_id.as_ref().map(|v| v.as_str()),
            secret_version: e.secret_version,
            method: &e.method,
            path: &e.path,
            status: e.status,
            upstream_status: e.upstream_status,
            latency_us: e.latency_us,
            ttfb_us: e.ttfb_us,
            bytes_in: e.bytes_in,
            bytes_out: e.bytes_out,
            client_addr: e.client_addr.to_string(),
            error_code: e.error_code.as_deref(),
            request_id: e.request_id.as_deref(),
            provider: llm.and_then(|m| m.provider.as_deref()),
            model: llm.and_then(|m| m.model.as_deref()),
            usage: llm.map(|m| UsageView {
                input_tokens: m.usage.input_tokens,
                output_tokens: m.usage.output_tokens,
                cache_read_tokens: m.usage.cache_read_tokens,
                cache_write_tokens: m.usage.cache_write_tokens,
                reasoning_tokens: m.usage.reasoning_tokens,
                exact: m.usage.exact,
            }),
            cost_usd: llm.and_then(|m| m.cost_nanos).map(format_usd),
        }
    }
}

/// `{"requests": [...], "has_more", "total_count"?}`.
#[derive(Serialize)]
pub(crate) struct RequestEventList<'a> {
    pub requests: Vec<RequestEventView<'a>>,
    pub has_more: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_count: Option<i64>,
}

impl<'a> From<&'a Listed<RequestEventRow>> for RequestEventList<'a> {
    fn from(listed: &'a Listed<RequestEventRow>) -> Self {
        RequestEventList {
            requests: listed.items.iter().map(RequestEventView::from).collect(),
            has_more: listed.has_more,
            total_count: listed.total_count,
        }
    }
}

/// Query string of `GET /v1/usage`. Unknown parameters are refused: a misspelt filter would
/// otherwise widen the sum without a word.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct UsageQuery {
    pub start_time_ms: Option<String>,
    pub end_time_ms: Option<String>,
    pub group_by: Option<String>,
    pub devbox_id: Option<String>,
    pub gateway_id: Option<String>,
    pub model: Option<String>,
}

/// One group of `GET /v1/usage`. A key the query did not group by is absent (the outer
/// `None`); a key it grouped by whose value is unknown is null.
#[derive(Serialize)]
pub(crate) struct UsageRowView {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<Option<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<Option<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub devbox_id: Option<Option<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway_id: Option<Option<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub day: Option<Option<String>>,
    pub requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_tokens: u64,
    pub cache_write_tokens: u64,
    pub reasoning_tokens: u64,
    /// The sum of the known costs; null when no request of the group had one.
    pub cost_usd: Option<String>,
    /// Requests whose cost is unknown, so not in `cost_usd`.
    pub unpriced_requests: u64,
}

#[derive(Serialize)]
pub(crate) struct UsageList {
    pub usage: Vec<UsageRowView>,
}

/// One built-in provider preset (`GET /v1/providers`).
#[derive(Serialize)]
pub(crate) struct ProviderView {
    pub id: &'static str,
    pub name: &'static str,
    pub endpoint: &'static str,
    /// The endpoint is an example: a gateway config naming this provider must give its own.
    pub endpoint_required: bool,
    pub auth_mechanism: Value,
    pub api: &'static str,
    /// Headers the provider requires, added to a gateway config made from the preset.
    pub custom_headers: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub models: Option<Vec<&'static str>>,
}

#[derive(Serialize)]
pub(crate) struct ProviderList {
    pub providers: Vec<ProviderView>,
}

/// `{"<field>": [views], "has_more", "total_count"}`.
pub(crate) fn list_view<T>(field: &str, listed: &Listed<T>, view: impl Fn(&T) -> Value) -> Value {
    let mut out = Map::new();
    out.insert(
        field.to_owned(),
        Value::Array(listed.items.iter().map(view).collect()),
    );
    out.insert("has_more".into(), Value::Bool(listed.has_more));
    if let Some(total) = listed.total_count {
        out.insert("total_count".into(), Value::from(total));
    }
    Value::Object(out)
}
