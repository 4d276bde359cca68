//! Budgets and rate limits over the API: the `limits` object of devboxes, gateway configs and
//! the account, and the status of each limit (`GET …/limits`). See `docs/limits.md`.

use airlock_core::limits::Window;
use airlock_core::{CounterKey, InvalidInput, LimitKind, LimitScope, Limits};
use axum::extract::{Path, State};
use axum::{Extension, Json};
use serde_json::{json, Map, Value};

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::json::Body;
use crate::AppState;

/// Parses a `limits` object: every field optional (absent or `null`: no limit), counts as
/// whole numbers, costs as decimal strings of dollars with at most 9 decimals.
pub(crate) fn parse_limits(input: &Value) -> Result<Limits, InvalidInput> {
    let Value::Object(map) = input else {
        return Err(InvalidInput::new("limits", "must be an object"));
    };
    let mut limits = Limits::default();
    for (name, value) in map {
        let field = format!("limits.{name}");
        let kind = LimitKind::parse(name)
            .filter(|k| *k != LimitKind::MaxRequests)
            .ok_or_else(|| {
                InvalidInput::new(
                    field.as_str(),
                    "is not a limit (requests_per_minute, requests_per_day, tokens_per_minute, tokens_per_day, cost_usd_per_day, cost_usd_per_month, cost_usd_total)",
                )
            })?;
        let text = match (value, kind.measure()) {
            (Value::Null, _) => continue,
            (Value::String(s), airlock_core::limits::Measure::CostNanos) => s.clone(),
            (_, airlock_core::limits::Measure::CostNanos) => {
                return Err(InvalidInput::new(
                    field,
                    "must be a decimal string of dollars such as \"12.50\"",
                ))
            }
            (Value::Number(n), _) => n.to_string(),
            (Value::String(s), _) => s.clone(),
            _ => return Err(InvalidInput::new(field, "must be a whole number")),
        };
        limits.set(kind, Some(Limits::parse_value(kind, &field, &text)?));
    }
    Ok(limits)
}

/// Parses a router backend's `limits` (the provider's quota): `{"rpm", "tpm", "rpd"}`, each
/// optional, a whole number from 1; errors name `<field>.<quota>`.
pub(crate) fn parse_backend_limits(
    field: &str,
    input: &Value,
) -> Result<airlock_core::router::BackendLimits, InvalidInput> {
    let Value::Object(map) = input else {
        return Err(InvalidInput::new(field, "must be an object"));
    };
    let mut limits = airlock_core::router::BackendLimits::default();
    for (name, value) in map {
        let field = format!("{field}.{name}");
        let Some(slot) = limits.slot(name) else {
            return Err(InvalidInput::new(field, "is not a quota (rpm, tpm, rpd)"));
        };
        *slot = match value {
            Value::Null => None,
            Value::Number(n) if n.as_i64().is_some_and(|n| n < 0) => {
                return Err(InvalidInput::new(field, "must not be negative"))
            }
            Value::Number(n) => match n.as_u64() {
                Some(0) => return Err(InvalidInput::new(field, "must be at least 1")),
                Some(v) if v <= airlock_core::limits::MAX_LIMIT => Some(v),
                Some(_) => return Err(InvalidInput::new(field, "is too large")),
                None => return Err(InvalidInput::new(field, "must be a whole number")),
            },
            _ => return Err(InvalidInput::new(field, "must be a whole number")),
        };
    }
    Ok(limits)
}

/// A `limits` object as the API shows it.
pub(crate) fn limits_view(limits: &Limits) -> Value {
    let map: Map<String, Value> = limits
        .iter()
        .map(|(kind, v)| (kind.as_str().to_owned(), value_view(kind, v)))
        .collect();
    Value::Object(map)
}

fn value_view(kind: LimitKind, v: u64) -> Value {
    match kind.measure() {
        airlock_core::limits::Measure::CostNanos => Value::from(Limits::format_value(kind, v)),
        _ => Value::from(v),
    }
}

/// Adds the configured `limits` of `scope` (`{}` when none) to its object's view: configured
/// values only, what is used is under `GET …/limits`.
pub(crate) async fn with_limits(
    state: &AppState,
    scope: LimitScope,
    mut view: Value,
) -> ApiResult<Value> {
    let limits = state.store.get_limits(&scope).await?;
    if let Value::Object(map) = &mut view {
        map.insert("limits".into(), limits_view(&limits));
    }
    Ok(view)
}

/// Adds each view's configured `limits` to a list (`{"<field>": [views], …}`), from one query
/// for the account's scopes of `scope_kind` (`"devbox"`, `"gateway"`).
pub(crate) async fn list_with_limits(
    state: &AppState,
    account: &airlock_core::AccountId,
    scope_kind: &str,
    field: &str,
    mut list: Value,
) -> ApiResult<Value> {
    let by_id = state.store.limits_by_scope(account, scope_kind).await?;
    if let Some(Value::Array(items)) = list.get_mut(field) {
        for item in items {
            let limits = item
                .get("id")
                .and_then(Value::as_str)
                .and_then(|id| by_id.get(id))
                .copied()
                .unwrap_or_default();
            if let Value::Object(map) = item {
                map.insert("limits".into(), limits_view(&limits));
            }
        }
    }
    Ok(list)
}

/// Each limit of `scope` with what its current window has used.
async fn status(state: &AppState, scope: LimitScope) -> ApiResult<Json<Value>> {
    let limits = state.store.get_limits(&scope).await?;
    let now = airlock_core::time::now_ms();
    let mut out = Map::new();
    for (kind, limit) in limits.iter() {
        let window: Window = kind.window();
        let key = CounterKey {
            scope: scope.clone(),
            kind,
            window_start_ms: window.start(now),
        };
        let used = u64::try_from(state.store.limit_used(&key).await?).unwrap_or(0);
        out.insert(
            kind.as_str().to_owned(),
            json!({
                "limit": value_view(kind, limit),
                "used": value_view(kind, used),
                "remaining": value_view(kind, limit.saturating_sub(used)),
                "resets_at_ms": window.end(now),
            }),
        );
    }
    Ok(Json(json!({"limits": Value::Object(out)})))
}

pub(crate) async fn devbox_status(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let row = state
        .store
        .get_devbox(&caller.account.id, &id)
        .await
        .map_err(|e| ApiError::for_object(e, "devbox", &id))?;
    status(&state, LimitScope::Devbox(row.id)).await
}

pub(crate) async fn gateway_status(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let row = state
        .store
        .get_gateway_config(&caller.account.id, &id)
        .await
        .map_err(|e| ApiError::for_object(e, "gateway config", &id))?;
    status(&state, LimitScope::GatewayConfig(row.id)).await
}

pub(crate) async fn account_status(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<Value>> {
    status(&state, LimitScope::Account(caller.account.id.clone())).await
}

/// `POST /v1/account/limits`: the body is the whole `limits` object, which replaces the
/// account's.
pub(crate) async fn set_account(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Body(input): Body<Value>,
) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    let limits = parse_limits(&input)?;
    let scope = LimitScope::Account(caller.account.id.clone());
    set(&state, &caller, &scope, &limits).await?;
    status(&state, scope).await
}

/// Stores `limits` for `scope` of the caller's account, with an audit event.
pub(crate) async fn set(
    state: &AppState,
    caller: &Caller,
    scope: &LimitScope,
    limits: &Limits,
) -> ApiResult<()> {
    let audit = caller.audit(
        "limits.update",
        scope.kind(),
        scope.id(),
        json!({"limits": limits_view(limits)}),
    );
    state
        .store
        .set_limits(
            &caller.account.id,
            scope,
            limits,
            airlock_core::time::now_ms(),
            Some(&audit),
        )
        .await?;
    Ok(())
}
