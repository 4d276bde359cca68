//! The JSON wire format: request bodies, query strings and views. Only this crate knows it.
//! Field names follow Runloop's agent-gateway API so that its generated SDKs work unchanged.

use std::collections::BTreeMap;

use airlock_core::{AuthMechanism, CustomHeader, HeaderSource};
use airlock_store::{
    ApiKeyRow, AuditRow, DevboxRow, GatewayConfigRow, Listed, RequestEventRow, SecretRow,
};
use serde::Deserialize;
use serde_json::{json, Map, Value};

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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct GatewayConfigCreate {
    pub name: String,
    pub endpoint: String,
    pub auth_mechanism: AuthMechanismIn,
    #[serde(default)]
    pub custom_headers: Option<Vec<CustomHeaderIn>>,
    #[serde(default)]
    pub description: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct GatewayConfigUpdate {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub endpoint: Option<String>,
    #[serde(default)]
    pub auth_mechanism: Option<AuthMechanismIn>,
    #[serde(default)]
    pub custom_headers: Option<Vec<CustomHeaderIn>>,
    #[serde(default)]
    pub description: Option<String>,
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
    pub secret: String,
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
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DevboxUpdate {
    pub source_addresses: Vec<String>,
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

pub(crate) fn gateway_view(g: &GatewayConfigRow) -> Value {
    json!({
        "id": g.id.as_str(),
        "name": g.name.as_str(),
        "endpoint": g.endpoint.to_string(),
        "auth_mechanism": auth_view(&g.auth),
        "custom_headers": headers_view(&g.custom_headers),
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
    })
}

pub(crate) fn devbox_view(d: &DevboxRow) -> Value {
    let specs: Map<String, Value> = d
        .gateway_specs
        .iter()
        .map(|s| {
            (
                s.prefix.as_str().to_owned(),
                json!({"gateway_config_id": s.gateway_config_id.as_str(), "secret_id": s.secret_id.as_str()}),
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

pub(crate) fn request_event_view(r: &RequestEventRow) -> Value {
    let e = &r.event;
    json!({
        "id": r.id,
        "time_ms": e.time_ms,
        "account_id": e.account_id.as_ref().map(|v| v.as_str()),
        "devbox_id": e.devbox_id.as_ref().map(|v| v.as_str()),
        "gateway_config_id": e.gateway_config_id.as_ref().map(|v| v.as_str()),
        "token_id": e.token_id.as_ref().map(|v| v.as_str()),
        "secret_id": e.secret_id.as_ref().map(|v| v.as_str()),
        "secret_version": e.secret_version,
        "method": e.method,
        "path": e.path,
        "status": e.status,
        "upstream_status": e.upstream_status,
        "latency_us": e.latency_us,
        "ttfb_us": e.ttfb_us,
        "bytes_in": e.bytes_in,
        "bytes_out": e.bytes_out,
        "client_addr": e.client_addr.to_string(),
        "error_code": e.error_code,
        "request_id": e.request_id,
    })
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
