//! The console's small JSON endpoints, read by `console.js` with the session cookie: chart
//! series and a router's live status. Each is a view of a REST handler's answer.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::{Extension, Json};
use serde_json::{json, Value};

use super::pages::{list_query, named, names, request_events, usage_rows, UiError};
use super::Ui;
use crate::error::ApiError;
use crate::json::Query;
use crate::routers;
use crate::wire::UsageRowView;

/// A chart: x values (day labels or hour starts in seconds) and one series per label.
fn chart(x: Vec<Value>, series: BTreeMap<String, Vec<f64>>) -> Json<Value> {
    let series: Vec<Value> = series
        .into_iter()
        .map(|(label, values)| json!({"label": label, "values": values}))
        .collect();
    Json(json!({"x": x, "series": series}))
}

#[derive(serde::Deserialize)]
pub(crate) struct UsageChart {
    by: String,
    metric: String,
}

/// `GET /ui/data/usage?by=model|devbox|gateway&metric=requests|cost`: one series per key,
/// one value per UTC day.
pub(crate) async fn usage(
    State(state): State<crate::AppState>,
    Extension(ui): Extension<Ui>,
    Query(q): Query<UsageChart>,
) -> Result<Json<Value>, UiError> {
    let key: fn(&UsageRowView) -> Option<String> = match q.by.as_str() {
        "model" => |r| r.model.clone().flatten(),
        "devbox" => |r| r.devbox_id.clone().flatten(),
        "gateway" => |r| r.gateway_id.clone().flatten(),
        _ => return Err(ApiError::Invalid("by: must be model, devbox or gateway".into()).into()),
    };
    let cost = match q.metric.as_str() {
        "cost" => true,
        "requests" => false,
        _ => return Err(ApiError::Invalid("metric: must be requests or cost".into()).into()),
    };
    let rows = usage_rows(&state, &ui, &format!("day,{}", q.by)).await?;
    let names = names(&state, &ui).await?;
    let days: Vec<String> = rows
        .iter()
        .filter_map(|r| r.day.clone().flatten())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut series: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for r in &rows {
        let Some(day) = r.day.clone().flatten() else {
            continue;
        };
        let Ok(i) = days.binary_search(&day) else {
            continue;
        };
        let label = key(r).map_or_else(|| "(none)".into(), |id| named(&names, &id));
        let values = series.entry(label).or_insert_with(|| vec![0.0; days.len()]);
        values[i] += if cost {
            r.cost_usd
                .as_deref()
                .and_then(|c| c.parse::<f64>().ok())
                .unwrap_or(0.0)
        } else {
            r.requests as f64
        };
    }
    Ok(chart(days.into_iter().map(Value::String).collect(), series))
}

/// `GET /ui/data/traffic`: requests and errors (status ≥ 400) by hour, from the latest 5000
/// request events.
pub(crate) async fn traffic(
    State(state): State<crate::AppState>,
    Extension(ui): Extension<Ui>,
) -> Result<Json<Value>, UiError> {
    let events = request_events(&state, &ui, list_query(5000)).await?;
    let mut hours: BTreeMap<i64, (f64, f64)> = BTreeMap::new();
    for e in events["requests"].as_array().into_iter().flatten() {
        let Some(ms) = e["time_ms"].as_i64() else {
            continue;
        };
        let slot = hours.entry(ms.div_euclid(3_600_000) * 3600).or_default();
        slot.0 += 1.0;
        if e["status"].as_u64().unwrap_or(0) >= 400 {
            slot.1 += 1.0;
        }
    }
    let x = hours.keys().map(|h| Value::from(*h)).collect();
    let mut series = BTreeMap::new();
    series.insert("requests".to_owned(), hours.values().map(|v| v.0).collect());
    series.insert("errors".to_owned(), hours.values().map(|v| v.1).collect());
    Ok(chart(x, series))
}

/// `GET /ui/data/gateways/{id}/live`: a router's backends (health, cooldown, latency) and its
/// latest routing decisions.
pub(crate) async fn gateway_live(
    State(state): State<crate::AppState>,
    Extension(ui): Extension<Ui>,
    Path(id): Path<String>,
) -> Result<Json<Value>, UiError> {
    let caller = || Extension(ui.caller.clone());
    let Json(status) = routers::status(State(state.clone()), caller(), Path(id.clone())).await?;
    let log_query = Query(routers::LogQuery {
        limit: Some("20".into()),
    });
    let Json(log) = routers::routing_log(State(state), caller(), Path(id), log_query).await?;
    Ok(Json(json!({
        "backends": status["backends"],
        "decisions": log["decisions"],
        "now_ms": airlock_core::time::now_ms(),
    })))
}
