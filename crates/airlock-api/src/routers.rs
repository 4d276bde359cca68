//! A router gateway's live state (`docs/router.md`): each backend's health, the latest routing
//! decisions, and which backend would serve a request now. The state lives in the data plane's
//! memory; the control plane asks the data plane of its own process through
//! [`RouterInspector`](airlock_core::router::RouterInspector). A process without a data plane
//! answers 503 `no_data_plane`, and with several replicas each answers for its own traffic.

use airlock_core::router::{RouterInspector, RoutingDecision};
use airlock_core::{CounterKey, LimitScope};
use airlock_store::GatewayConfigRow;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::json::Query;
use crate::AppState;

/// The most decisions one `routing-log` answer holds (the data plane keeps as many).
const MAX_LOG: usize = 256;

#[derive(Deserialize, Default)]
pub(crate) struct LogQuery {
    pub limit: Option<String>,
}

/// The caller's router config and this process's data plane.
async fn router_of(
    state: &AppState,
    caller: &Caller,
    id: &str,
) -> ApiResult<(GatewayConfigRow, Arc<dyn RouterInspector>)> {
    let row = state
        .store
        .get_gateway_config(&caller.account.id, id)
        .await
        .map_err(|e| ApiError::for_object(e, "gateway config", id))?;
    if row.router.is_none() {
        return Err(ApiError::Invalid(format!(
            "gateway config {id} is not a router (type passthrough)"
        )));
    }
    let inspector = state.routers.clone().ok_or(ApiError::NoDataPlane)?;
    Ok((row, inspector))
}

/// Each backend's provider quotas (`backends[i].limits`) from the ledger, as `GET …/limits`
/// shows a limit: `{"rpm": {"limit", "used", "remaining", "resets_at_ms"}}` (`{}` without).
async fn quotas(state: &AppState, row: &GatewayConfigRow) -> ApiResult<Vec<Value>> {
    let Some(config) = &row.router else {
        return Ok(Vec::new());
    };
    let now = airlock_core::time::now_ms();
    let mut out = Vec::with_capacity(config.backends.len());
    for (i, b) in config.backends.iter().enumerate() {
        let mut quota = serde_json::Map::new();
        for (name, kind, limit) in b.limits.iter() {
            let window = kind.window();
            let key = CounterKey {
                scope: LimitScope::router_backend(&row.id, i),
                kind,
                window_start_ms: window.start(now),
            };
            let used = u64::try_from(state.store.limit_used(&key).await?).unwrap_or(0);
            quota.insert(
                name.to_owned(),
                json!({"limit": limit, "used": used, "remaining": limit.saturating_sub(used),
                    "resets_at_ms": window.end(now)}),
            );
        }
        out.push(Value::Object(quota));
    }
    Ok(out)
}

/// `GET /v1/gateway-configs/{id}/status`
pub(crate) async fn status(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let (row, inspector) = router_of(&state, &caller, &id).await?;
    let config = row.router.as_ref().ok_or(ApiError::Internal)?;
    // A router the data plane has not loaded yet (written a moment ago) shows its backends
    // with nothing learnt about them.
    let live = inspector.status(&row.id).unwrap_or_default();
    let quotas = quotas(&state, &row).await?;
    let backends: Vec<Value> = config
        .backends
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let s = live.get(i).filter(|s| s.gateway == b.gateway);
            json!({
                "name": b.name,
                "gateway": b.gateway.as_str(),
                "healthy": s.is_none_or(|s| s.healthy),
                "cooldown_until_ms": s.and_then(|s| s.cooldown_until_ms),
                "latency_ewma_ms": s.and_then(|s| s.latency_ewma_ms),
                "requests_last_minute": s.map_or(0, |s| s.requests_last_minute),
                "errors_last_minute": s.map_or(0, |s| s.errors_last_minute),
                "remaining": s.and_then(|s| s.remaining),
                "resets_in_ms": s.and_then(|s| s.resets_in_ms),
                "quota": quotas.get(i).cloned().unwrap_or_else(|| json!({})),
            })
        })
        .collect();
    Ok(Json(json!({
        "id": row.id.as_str(),
        "strategy": config.strategy.as_str(),
        "backends": backends,
    })))
}

fn decision_view(d: &RoutingDecision) -> Value {
    json!({
        "request_id": d.request_id,
        "time_ms": d.time_ms,
        "model_requested": d.model_requested,
        "provider": d.provider,
        "model": d.model,
        "attempts": d.attempts.iter().map(|a| json!({
            "backend": a.backend,
            "model": a.model,
            "outcome": a.outcome,
            "status": a.status,
            "elapsed_ms": a.elapsed_ms,
        })).collect::<Vec<_>>(),
        "reason": d.reason,
        "input_tokens": d.input_tokens,
        "output_tokens": d.output_tokens,
        "elapsed_ms": d.elapsed_ms,
    })
}

/// `GET /v1/gateway-configs/{id}/routing-log?limit=`
pub(crate) async fn routing_log(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Query(q): Query<LogQuery>,
) -> ApiResult<Json<Value>> {
    let limit = match q.limit.as_deref() {
        None => 50,
        Some(text) => match text.parse::<usize>() {
            Ok(n) if (1..=MAX_LOG).contains(&n) => n,
            _ => {
                return Err(ApiError::Invalid(format!(
                    "limit: must be an integer from 1 to {MAX_LOG}"
                )))
            }
        },
    };
    let (row, inspector) = router_of(&state, &caller, &id).await?;
    let decisions = inspector.routing_log(&row.id, limit).unwrap_or_default();
    Ok(Json(json!({
        "decisions": decisions.iter().map(decision_view).collect::<Vec<_>>(),
    })))
}

/// `POST /v1/gateway-configs/{id}/route-preview`: the body as the sandbox would send it (OpenAI
/// Chat Completions, or Anthropic Messages with an `anthropic-version` header); calls no
/// provider.
pub(crate) async fn preview(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let (row, inspector) = router_of(&state, &caller, &id).await?;
    let anthropic = headers.contains_key("anthropic-version");
    let Some(answer) = inspector.preview(&row.id, anthropic, &body) else {
        return Err(ApiError::NoDataPlane);
    };
    let p = answer?;
    // What the backends' provider quotas have left, summed by quota; null when none declares one.
    let mut remaining = serde_json::Map::new();
    for quota in quotas(&state, &row).await? {
        for (name, q) in quota.as_object().into_iter().flatten() {
            let left = q["remaining"].as_u64().unwrap_or(0);
            let sum = remaining.get(name).and_then(Value::as_u64).unwrap_or(0);
            remaining.insert(name.clone(), Value::from(sum.saturating_add(left)));
        }
    }
    let remaining = if remaining.is_empty() {
        Value::Null
    } else {
        Value::Object(remaining)
    };
    Ok(Json(json!({
        "provider": p.provider,
        "model": p.model,
        "candidates": p.candidates.iter().map(|(b, m)| json!({"backend": b, "model": m})).collect::<Vec<_>>(),
        "reason": p.reason,
        "wait_ms": p.wait_ms,
        "remaining": remaining,
    })))
}
