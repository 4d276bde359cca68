//! The console's pages. Each reads and writes through the REST handlers' own functions
//! (`crate::devboxes::list`, `crate::secrets::update_by_name`, …) with the session's caller,
//! then renders what they answered; every user-controlled text goes through `html::esc`.

use std::fmt::Write as _;

use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use http::StatusCode;
use serde::de::DeserializeOwned;
use serde_json::{json, Map, Value};

use super::html::{button, cell, csrf_field, esc, layout, table, time};
use super::{page, redirect, Form, Ui};
use crate::error::ApiError;
use crate::json::{Body, Query};
use crate::wire::{ListQuery, UsageQuery};
use crate::{admin, devboxes, gateways, limits, providers, secrets, usage, AppState};

/// A failed change or read, shown as a page (the API's message, escaped).
pub(crate) struct UiError(ApiError);

impl From<ApiError> for UiError {
    fn from(e: ApiError) -> Self {
        UiError(e)
    }
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        let message = self.0.to_string();
        let status = self.0.into_response().status();
        super::refusal(status, &message)
    }
}

type PageResult = Result<Response, UiError>;

/// A handler's body from the JSON a form was turned into, parsed as the API parses it.
fn input<T: DeserializeOwned>(v: Value) -> Result<Body<T>, ApiError> {
    crate::json::parse(v.to_string().as_bytes()).map(Body)
}

/// A list query of up to `limit` items, without a total count.
pub(super) fn list_query(limit: u32) -> ListQuery {
    ListQuery {
        limit: Some(limit.to_string()),
        include_total_count: Some("false".into()),
        ..ListQuery::default()
    }
}

/// `GET /v1/usage` with this grouping.
pub(super) async fn usage_rows(
    state: &AppState,
    ui: &Ui,
    group_by: &str,
) -> Result<Vec<crate::wire::UsageRowView>, ApiError> {
    let q = UsageQuery {
        group_by: Some(group_by.to_owned()),
        ..UsageQuery::default()
    };
    let Json(list) =
        usage::get(State(state.clone()), Extension(ui.caller.clone()), Query(q)).await?;
    Ok(list.usage)
}

/// `GET /v1/audit/requests` with this query, as JSON.
pub(super) async fn request_events(
    state: &AppState,
    ui: &Ui,
    q: ListQuery,
) -> Result<Value, ApiError> {
    let resp =
        admin::list_request_events(State(state.clone()), Extension(ui.caller.clone()), Query(q))
            .await?;
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .map_err(|_| ApiError::Internal)?;
    serde_json::from_slice(&bytes).map_err(|_| ApiError::Internal)
}

/// Devbox and gateway names by id (the latest 500 of each), so charts and tables of usage show
/// names; an id without a name stays an id.
pub(super) async fn names(
    state: &AppState,
    ui: &Ui,
) -> Result<std::collections::HashMap<String, String>, ApiError> {
    let caller = || Extension(ui.caller.clone());
    let Json(d) = devboxes::list(State(state.clone()), caller(), Query(list_query(500))).await?;
    let Json(g) = gateways::list(State(state.clone()), caller(), Query(list_query(500))).await?;
    let rows = d["devboxes"].as_array().into_iter().flatten();
    let rows = rows.chain(g["gateway_configs"].as_array().into_iter().flatten());
    Ok(rows
        .filter_map(|v| Some((v["id"].as_str()?.to_owned(), v["name"].as_str()?.to_owned())))
        .collect())
}

/// An id with its name when it has one: `name (id)`.
pub(super) fn named(names: &std::collections::HashMap<String, String>, id: &str) -> String {
    match names.get(id) {
        Some(name) => format!("{name} ({id})"),
        None => id.to_owned(),
    }
}

/// The notice of a page after a change, from a fixed list (nothing from the URL is echoed).
fn notice(query: &Option<String>) -> &'static str {
    match query.as_deref().unwrap_or_default() {
        "done=created" => "Created.",
        "done=updated" => "Saved.",
        "done=rotated" => "Rotated: every token using this secret sends the new value now.",
        "done=registered" => {
            "Registered. Its tokens are never shown here: mint the sandbox's tokens with \
             `airlock devbox register` or the API."
        }
        "done=shutdown" => "Shut down: its tokens stopped working on every replica.",
        _ => "",
    }
}

/// A chart placeholder that `console.js` fills from a JSON endpoint of the console.
fn chart(id: &str, title: &str, source: &str) -> String {
    format!(
        "<section class=\"card chart-card\"><h2>{}</h2><div class=\"chart\" id=\"{}\" data-chart=\"{}\"></div></section>",
        esc(title),
        esc(id),
        esc(source)
    )
}

/// For a key without the admin scope, the page that says this one needs it (with a link to
/// the devboxes, which it may see); `None` for an admin key.
fn admin_only(ui: &Ui, active: &str, title: &str) -> Option<Response> {
    if ui.admin {
        return None;
    }
    let body = format!(
        "<p class=\"card\">{} needs an admin API key; this session's key ({}) has the {} scope. \
<a href=\"/ui/devboxes\">See the account's devboxes</a>.</p>",
        esc(title),
        esc(&ui.caller.key.name),
        esc(ui.caller.key.scope.as_str())
    );
    Some(page(
        StatusCode::OK,
        layout(Some(ui), active, title, "", &body),
    ))
}

fn usd(v: &Option<String>) -> String {
    v.as_deref()
        .map_or_else(|| "—".to_owned(), |c| format!("${}", esc(c)))
}

/// Top rows of a usage grouping by requests, as table rows.
fn top(
    rows: &[crate::wire::UsageRowView],
    key: impl Fn(&crate::wire::UsageRowView) -> Option<String>,
) -> Vec<Vec<String>> {
    let mut rows: Vec<_> = rows.iter().collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r.requests));
    rows.iter()
        .take(5)
        .map(|r| {
            vec![
                esc(&key(r).unwrap_or_else(|| "(none)".into())),
                r.requests.to_string(),
                (r.input_tokens + r.output_tokens).to_string(),
                usd(&r.cost_usd),
            ]
        })
        .collect()
}

/// One table row per item of a JSON list (none when it is not a list).
fn each(list: &Value, row: impl Fn(&Value) -> Vec<String>) -> Vec<Vec<String>> {
    list.as_array()
        .map(|items| items.iter().map(row).collect())
        .unwrap_or_default()
}

/// Rows of the request audit trail.
fn request_rows(v: &Value) -> Vec<Vec<String>> {
    each(&v["requests"], |r| {
        let tokens = if r["usage"].is_null() {
            "—".to_owned()
        } else {
            format!(
                "{} / {}",
                cell(&r["usage"]["input_tokens"]),
                cell(&r["usage"]["output_tokens"])
            )
        };
        let cost = r["cost_usd"]
            .as_str()
            .map_or_else(|| "—".to_owned(), |c| format!("${}", esc(c)));
        vec![
            time(&r["time_ms"]),
            cell(&r["devbox_id"]),
            cell(&r["gateway_config_id"]),
            format!("{} {}", cell(&r["method"]), cell(&r["path"])),
            cell(&r["status"]),
            cell(&r["model"]),
            tokens,
            cost,
            cell(&r["error_code"]),
        ]
    })
}

const REQUEST_HEAD: [&str; 9] = [
    "Time (UTC)",
    "Devbox",
    "Gateway",
    "Request",
    "Status",
    "Model",
    "Tokens in / out",
    "Cost",
    "Error",
];

/// `GET /ui/`: requests, errors and spend over time, top devboxes and models, recent requests.
pub(crate) async fn overview(
    State(state): State<AppState>,
    Extension(ui): Extension<Ui>,
) -> PageResult {
    if let Some(refused) = admin_only(&ui, "/ui/", "Overview") {
        return Ok(refused);
    }
    let total = usage_rows(&state, &ui, "").await?;
    let by_model = usage_rows(&state, &ui, "model").await?;
    let by_devbox = usage_rows(&state, &ui, "devbox").await?;
    let names = names(&state, &ui).await?;
    let recent = request_events(&state, &ui, list_query(10)).await?;
    let mut body = String::new();
    let t = total.first();
    let _ = write!(
        body,
        "<div class=\"tiles\"><div class=\"tile\"><span>Requests</span><strong id=\"total-requests\">{}</strong></div>\
<div class=\"tile\"><span>Tokens</span><strong>{}</strong></div>\
<div class=\"tile\"><span>Spend</span><strong id=\"total-spend\">{}</strong></div></div>",
        t.map_or(0, |t| t.requests),
        t.map_or(0, |t| t.input_tokens + t.output_tokens),
        t.map_or_else(|| "—".to_owned(), |t| usd(&t.cost_usd)),
    );
    body.push_str("<div class=\"grid\">");
    body.push_str(&chart(
        "chart-traffic",
        "Requests and errors by hour",
        "/ui/data/traffic",
    ));
    body.push_str(&chart(
        "chart-spend",
        "Spend by day, stacked by model (USD)",
        "/ui/data/usage?by=model&metric=cost",
    ));
    body.push_str("</div><div class=\"grid\"><section class=\"card\"><h2>Top models</h2>");
    body.push_str(&table(
        "top-models",
        &["Model", "Requests", "Tokens", "Spend"],
        &top(&by_model, |r| r.model.clone().flatten()),
    ));
    body.push_str("</section><section class=\"card\"><h2>Top devboxes</h2>");
    body.push_str(&table(
        "top-devboxes",
        &["Devbox", "Requests", "Tokens", "Spend"],
        &top(&by_devbox, |r| {
            r.devbox_id.clone().flatten().map(|id| named(&names, &id))
        }),
    ));
    body.push_str("</section></div><section class=\"card\"><h2>Recent requests</h2>");
    body.push_str(&table(
        "recent-requests",
        &REQUEST_HEAD,
        &request_rows(&recent),
    ));
    body.push_str("</section>");
    Ok(page(
        StatusCode::OK,
        layout(Some(&ui), "/ui/", "Overview", "", &body),
    ))
}

/// `GET /ui/gateways`: the list, and a form that creates one from a provider preset.
pub(crate) async fn gateways(
    State(state): State<AppState>,
    Extension(ui): Extension<Ui>,
    RawQuery(query): RawQuery,
) -> PageResult {
    if let Some(refused) = admin_only(&ui, "/ui/gateways", "Gateway configs") {
        return Ok(refused);
    }
    let Json(listed) = gateways::list(
        State(state.clone()),
        Extension(ui.caller.clone()),
        Query(list_query(200)),
    )
    .await?;
    let rows: Vec<Vec<String>> = each(&listed["gateway_configs"], |g| {
        vec![
            format!(
                "<a href=\"/ui/gateways/{}\">{}</a>",
                esc(g["id"].as_str().unwrap_or_default()),
                cell(&g["name"])
            ),
            cell(&g["type"]),
            cell(&g["provider"]),
            cell(&g["endpoint"]),
            cell(&g["description"]),
            time(&g["create_time_ms"]),
        ]
    });
    let mut body = String::new();
    body.push_str("<section class=\"card\">");
    body.push_str(&table(
        "gateways",
        &[
            "Name",
            "Type",
            "Provider",
            "Endpoint",
            "Description",
            "Created (UTC)",
        ],
        &rows,
    ));
    body.push_str("</section>");
    let Json(presets) = providers::list().await;
    let mut options = String::new();
    for p in &presets.providers {
        let _ = write!(
            options,
            "<option value=\"{}\">{} ({})</option>",
            esc(p.id),
            esc(p.name),
            esc(p.endpoint)
        );
    }
    let _ = write!(
        body,
        "<section class=\"card\"><h2>New gateway from a provider preset</h2>\
<form method=\"post\" action=\"/ui/gateways\" id=\"create-gateway\" class=\"stack\">{}\
<label>Name <input name=\"name\" id=\"gateway-name\" required maxlength=\"128\"></label>\
<label>Provider <select name=\"provider\" id=\"gateway-provider\">{options}</select></label>\
<label>Endpoint (empty: the preset's) <input name=\"endpoint\" id=\"gateway-endpoint\" placeholder=\"https://…\"></label>\
<label>Description <input name=\"description\" id=\"gateway-description\"></label>\
<button type=\"submit\">Create</button></form></section>",
        csrf_field(&ui)
    );
    Ok(page(
        StatusCode::OK,
        layout(
            Some(&ui),
            "/ui/gateways",
            "Gateway configs",
            notice(&query),
            &body,
        ),
    ))
}

/// Puts `field` into `body` unless the form left it empty.
fn put(body: &mut Map<String, Value>, form: &Form, field: &str) {
    let v = form.get(field).trim();
    if !v.is_empty() {
        body.insert(field.to_owned(), Value::String(v.to_owned()));
    }
}

/// `POST /ui/gateways`
pub(crate) async fn create_gateway(
    State(state): State<AppState>,
    Extension(ui): Extension<Ui>,
    Extension(form): Extension<Form>,
) -> PageResult {
    let mut body = Map::new();
    body.insert(
        "name".into(),
        Value::String(form.get("name").trim().to_owned()),
    );
    for field in ["provider", "endpoint", "description"] {
        put(&mut body, &form, field);
    }
    let Json(view) = gateways::create(
        State(state),
        Extension(ui.caller),
        input(Value::Object(body))?,
    )
    .await?;
    let id = view["id"].as_str().unwrap_or_default();
    Ok(redirect(&format!("/ui/gateways/{id}?done=created"), None))
}

/// `GET /ui/gateways/{id}`: its settings, an edit form, its limits, and for a router its
/// backends' live status and routing log (refreshed by `console.js`).
pub(crate) async fn gateway(
    State(state): State<AppState>,
    Extension(ui): Extension<Ui>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> PageResult {
    let Json(g) = gateways::get(
        State(state.clone()),
        Extension(ui.caller.clone()),
        Path(id.clone()),
    )
    .await?;
    let Json(lim) = limits::gateway_status(
        State(state.clone()),
        Extension(ui.caller.clone()),
        Path(id.clone()),
    )
    .await?;
    let gid = g["id"].as_str().unwrap_or_default().to_owned();
    let mut body = String::new();
    let _ = write!(
        body,
        "<section class=\"card\"><dl class=\"facts\">\
<dt>Name</dt><dd id=\"gateway-name-shown\">{}</dd><dt>Id</dt><dd>{}</dd><dt>Type</dt><dd>{}</dd>\
<dt>Provider</dt><dd>{}</dd><dt>API</dt><dd>{}</dd><dt>Endpoint</dt><dd>{}</dd>\
<dt>Authentication</dt><dd>{}</dd><dt>Description</dt><dd>{}</dd><dt>Created (UTC)</dt><dd>{}</dd></dl></section>",
        cell(&g["name"]),
        esc(&gid),
        cell(&g["type"]),
        cell(&g["provider"]),
        cell(&g["api"]),
        cell(&g["endpoint"]),
        cell(&g["auth_mechanism"]),
        cell(&g["description"]),
        time(&g["create_time_ms"]),
    );
    body.push_str(&limits_section(&lim));
    if g["type"] == "router" {
        let _ = write!(
            body,
            "<section class=\"card\" id=\"live\" data-live=\"/ui/data/gateways/{}/live\"><h2>Backends (live)</h2>\
<p class=\"hint\" id=\"live-status\">loading…</p>\
<div class=\"scroll\"><table id=\"live-backends\"><thead><tr><th>Backend</th><th>Gateway</th><th>Healthy</th>\
<th>Cooldown until (UTC)</th><th>Latency (ms)</th><th>Requests / errors last minute</th></tr></thead><tbody></tbody></table></div>\
<h2>Routing log</h2><div class=\"scroll\"><table id=\"routing-log\"><thead><tr><th>Time (UTC)</th><th>Model asked</th>\
<th>Served by</th><th>Attempts</th><th>Reason</th><th>ms</th></tr></thead><tbody></tbody></table></div></section>",
            esc(&gid)
        );
    }
    if ui.admin {
        let endpoint = if g["type"] == "router" {
            String::new()
        } else {
            format!(
                "<label>Endpoint <input name=\"endpoint\" value=\"{}\"></label>",
                esc(g["endpoint"].as_str().unwrap_or_default())
            )
        };
        let _ = write!(
            body,
            "<section class=\"card\"><h2>Edit</h2><form method=\"post\" action=\"/ui/gateways/{}\" id=\"edit-gateway\" class=\"stack\">{}\
<label>Description <input name=\"description\" id=\"gateway-edit-description\" value=\"{}\"></label>{endpoint}\
<button type=\"submit\">Save</button></form></section>",
            esc(&gid),
            csrf_field(&ui),
            esc(g["description"].as_str().unwrap_or_default()),
        );
    }
    let title = format!("Gateway {}", g["name"].as_str().unwrap_or_default());
    Ok(page(
        StatusCode::OK,
        layout(Some(&ui), "/ui/gateways", &title, notice(&query), &body),
    ))
}

/// A limits status (`GET …/limits`) as a table.
fn limits_section(v: &Value) -> String {
    let rows: Vec<Vec<String>> = v["limits"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(name, l)| {
                    vec![
                        esc(name),
                        cell(&l["limit"]),
                        cell(&l["used"]),
                        cell(&l["remaining"]),
                        time(&l["resets_at_ms"]),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    format!(
        "<section class=\"card\"><h2>Limits</h2>{}</section>",
        table(
            "limits",
            &["Limit", "Of", "Used", "Left", "Resets (UTC)"],
            &rows
        )
    )
}

/// `POST /ui/gateways/{id}`: description and endpoint.
pub(crate) async fn update_gateway(
    State(state): State<AppState>,
    Extension(ui): Extension<Ui>,
    Extension(form): Extension<Form>,
    Path(id): Path<String>,
) -> PageResult {
    let mut body = Map::new();
    body.insert(
        "description".into(),
        Value::String(form.get("description").to_owned()),
    );
    put(&mut body, &form, "endpoint");
    let Json(view) = gateways::update(
        State(state),
        Extension(ui.caller),
        Path(id),
        input(Value::Object(body))?,
    )
    .await?;
    let id = view["id"].as_str().unwrap_or_default();
    Ok(redirect(&format!("/ui/gateways/{id}?done=updated"), None))
}

/// `GET /ui/secrets`: names and versions, a rotate form each; never a value.
pub(crate) async fn secrets(
    State(state): State<AppState>,
    Extension(ui): Extension<Ui>,
    RawQuery(query): RawQuery,
) -> PageResult {
    if let Some(refused) = admin_only(&ui, "/ui/secrets", "Secrets") {
        return Ok(refused);
    }
    let Json(listed) = secrets::list(
        State(state.clone()),
        Extension(ui.caller.clone()),
        Query(list_query(200)),
    )
    .await?;
    let rows: Vec<Vec<String>> = each(&listed["secrets"], |s| {
        let name = s["name"].as_str().unwrap_or_default();
        vec![
                        cell(&s["name"]),
                        cell(&s["version"]),
                        time(&s["create_time_ms"]),
                        time(&s["update_time_ms"]),
                        format!(
                            "<form method=\"post\" action=\"/ui/secrets/{}/rotate\" class=\"inline rotate\">{}\
<input type=\"password\" name=\"value\" autocomplete=\"new-password\" placeholder=\"new value\" required>\
<button type=\"submit\">Rotate</button></form>",
                            esc(name),
                            csrf_field(&ui)
                        ),
                    ]
    });
    let mut body = String::from("<section class=\"card\">");
    body.push_str(&table(
        "secrets",
        &[
            "Name",
            "Version",
            "Created (UTC)",
            "Rotated (UTC)",
            "Rotate",
        ],
        &rows,
    ));
    let _ = write!(
        body,
        "</section><section class=\"card\"><h2>New secret</h2>\
<form method=\"post\" action=\"/ui/secrets\" id=\"create-secret\" class=\"stack\">{}\
<label>Name <input name=\"name\" id=\"secret-name\" required pattern=\"[A-Za-z_][A-Za-z0-9_]*\"></label>\
<label>Value <input type=\"password\" name=\"value\" id=\"secret-value\" autocomplete=\"new-password\" required></label>\
<button type=\"submit\">Create</button></form></section>",
        csrf_field(&ui)
    );
    Ok(page(
        StatusCode::OK,
        layout(Some(&ui), "/ui/secrets", "Secrets", notice(&query), &body),
    ))
}

/// `POST /ui/secrets`
pub(crate) async fn create_secret(
    State(state): State<AppState>,
    Extension(ui): Extension<Ui>,
    Extension(form): Extension<Form>,
) -> PageResult {
    let body = json!({"name": form.get("name").trim(), "value": form.get("value")});
    let _ = secrets::create(State(state), Extension(ui.caller), input(body)?).await?;
    Ok(redirect("/ui/secrets?done=created", None))
}

/// `POST /ui/secrets/{name}/rotate`
pub(crate) async fn rotate_secret(
    State(state): State<AppState>,
    Extension(ui): Extension<Ui>,
    Extension(form): Extension<Form>,
    Path(name): Path<String>,
) -> PageResult {
    let body = json!({"value": form.get("value")});
    let _ = secrets::update_by_name(State(state), Extension(ui.caller), Path(name), input(body)?)
        .await?;
    Ok(redirect("/ui/secrets?done=rotated", None))
}

/// A list of addresses as escaped `a, b` text.
fn addresses(v: &Value) -> String {
    let list: Vec<&str> = v
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    esc(&list.join(", "))
}

/// A devbox's metadata as a list of escaped `key: value` lines.
fn metadata(v: &Value) -> String {
    let Some(map) = v.as_object().filter(|m| !m.is_empty()) else {
        return "—".to_owned();
    };
    let mut out = String::from("<ul class=\"meta\">");
    for (k, v) in map {
        let _ = write!(out, "<li>{}: {}</li>", esc(k), cell(v));
    }
    out.push_str("</ul>");
    out
}

/// `GET /ui/devboxes`: the list with shutdown buttons, and a registration form.
pub(crate) async fn devboxes(
    State(state): State<AppState>,
    Extension(ui): Extension<Ui>,
    RawQuery(query): RawQuery,
) -> PageResult {
    let Json(listed) = devboxes::list(
        State(state.clone()),
        Extension(ui.caller.clone()),
        Query(list_query(200)),
    )
    .await?;
    let rows: Vec<Vec<String>> = each(&listed["devboxes"], |d| {
        let id = d["id"].as_str().unwrap_or_default();
        let action = if d["status"] == "running" {
            button(
                &ui,
                &format!("/ui/devboxes/{id}/shutdown"),
                "Shut down",
                "danger",
            )
        } else {
            String::new()
        };
        vec![
            format!(
                "<a href=\"/ui/devboxes/{}\">{}</a>",
                esc(id),
                esc(d["name"].as_str().unwrap_or(id))
            ),
            format!("<span class=\"status {0}\">{0}</span>", cell(&d["status"])),
            addresses(&d["source_addresses"]),
            metadata(&d["metadata"]),
            time(&d["create_time_ms"]),
            action,
        ]
    });
    let mut body = String::from("<section class=\"card\">");
    body.push_str(&table(
        "devboxes",
        &[
            "Devbox",
            "Status",
            "Source addresses",
            "Metadata",
            "Registered (UTC)",
            "",
        ],
        &rows,
    ));
    body.push_str("</section>");
    let _ = write!(
        body,
        "<section class=\"card\"><h2>Register a devbox</h2>\
<form method=\"post\" action=\"/ui/devboxes\" id=\"register-devbox\" class=\"stack\">{}\
<label>Name <input name=\"name\" id=\"devbox-name\"></label>\
<label>Source addresses (comma-separated IPs or CIDRs) <input name=\"source_addresses\" id=\"devbox-addresses\" required></label>\
<label>Metadata (one key=value a line) <textarea name=\"metadata\" id=\"devbox-metadata\" rows=\"3\"></textarea></label>\
<button type=\"submit\">Register</button>\
<p class=\"hint\">Tokens are minted with `airlock devbox register` or the API, which show them once; the console never shows a token.</p>\
</form></section>",
        csrf_field(&ui)
    );
    Ok(page(
        StatusCode::OK,
        layout(Some(&ui), "/ui/devboxes", "Devboxes", notice(&query), &body),
    ))
}

/// `POST /ui/devboxes`
pub(crate) async fn register_devbox(
    State(state): State<AppState>,
    Extension(ui): Extension<Ui>,
    Extension(form): Extension<Form>,
) -> PageResult {
    let addresses: Vec<&str> = form
        .get("source_addresses")
        .split([',', ' ', '\n'])
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .collect();
    let mut meta = Map::new();
    for line in form.get("metadata").lines() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .ok_or_else(|| ApiError::Invalid("metadata: each line must be key=value".into()))?;
        meta.insert(k.trim().to_owned(), Value::String(v.trim().to_owned()));
    }
    let mut body = json!({"source_addresses": addresses, "metadata": meta});
    let name = form.get("name").trim();
    if !name.is_empty() {
        body["name"] = Value::String(name.to_owned());
    }
    // The answer holds the devbox's new tokens; they are dropped here, never rendered.
    let Json(view) = devboxes::register(State(state), Extension(ui.caller), input(body)?).await?;
    let id = view["id"].as_str().unwrap_or_default();
    Ok(redirect(
        &format!("/ui/devboxes/{id}?done=registered"),
        None,
    ))
}

/// `GET /ui/devboxes/{id}`: its facts, tokens (ids, last use, use count), limits.
pub(crate) async fn devbox(
    State(state): State<AppState>,
    Extension(ui): Extension<Ui>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> PageResult {
    let caller = || Extension(ui.caller.clone());
    let Json(d) = devboxes::get(State(state.clone()), caller(), Path(id.clone())).await?;
    let Json(tokens) =
        devboxes::list_tokens(State(state.clone()), caller(), Path(id.clone())).await?;
    let Json(lim) = limits::devbox_status(State(state.clone()), caller(), Path(id.clone())).await?;
    let did = d["id"].as_str().unwrap_or_default().to_owned();
    let mut body = String::new();
    let _ = write!(
        body,
        "<section class=\"card\"><dl class=\"facts\"><dt>Name</dt><dd>{}</dd><dt>Id</dt><dd>{}</dd>\
<dt>Status</dt><dd id=\"devbox-status\">{}</dd><dt>Source addresses</dt><dd>{}</dd><dt>Metadata</dt><dd>{}</dd>\
<dt>Registered (UTC)</dt><dd>{}</dd><dt>Shut down (UTC)</dt><dd>{}</dd></dl>{}</section>",
        cell(&d["name"]),
        esc(&did),
        cell(&d["status"]),
        addresses(&d["source_addresses"]),
        metadata(&d["metadata"]),
        time(&d["create_time_ms"]),
        time(&d["shutdown_time_ms"]),
        if d["status"] == "running" {
            button(&ui, &format!("/ui/devboxes/{did}/shutdown"), "Shut down", "danger")
        } else {
            String::new()
        },
    );
    let rows: Vec<Vec<String>> = each(&tokens["gateway_tokens"], |t| {
        vec![
            cell(&t["id"]),
            cell(&t["prefix"]),
            cell(&t["gateway_config_id"]),
            cell(&t["status"]),
            time(&t["last_used_time_ms"]),
            cell(&t["use_count"]),
            time(&t["expire_time_ms"]),
        ]
    });
    body.push_str("<section class=\"card\"><h2>Gateway tokens</h2>");
    body.push_str(&table(
        "tokens",
        &[
            "Token id",
            "Prefix",
            "Gateway",
            "Status",
            "Last used (UTC)",
            "Uses",
            "Expires (UTC)",
        ],
        &rows,
    ));
    body.push_str("</section>");
    body.push_str(&limits_section(&lim));
    let title = format!("Devbox {}", d["name"].as_str().unwrap_or(&did));
    Ok(page(
        StatusCode::OK,
        layout(Some(&ui), "/ui/devboxes", &title, notice(&query), &body),
    ))
}

/// `POST /ui/devboxes/{id}/shutdown`
pub(crate) async fn shutdown_devbox(
    State(state): State<AppState>,
    Extension(ui): Extension<Ui>,
    Path(id): Path<String>,
) -> PageResult {
    let Json(view) = devboxes::shutdown(
        State(state),
        Extension(ui.caller),
        Path(id),
        input(json!({}))?,
    )
    .await?;
    let id = view["id"].as_str().unwrap_or_default();
    Ok(redirect(&format!("/ui/devboxes/{id}?done=shutdown"), None))
}

/// `GET /ui/usage`: charts by model, devbox and gateway per day, and the table behind them.
pub(crate) async fn usage(
    State(state): State<AppState>,
    Extension(ui): Extension<Ui>,
) -> PageResult {
    if let Some(refused) = admin_only(&ui, "/ui/usage", "Usage and cost") {
        return Ok(refused);
    }
    let rows = usage_rows(&state, &ui, "day,model,gateway,devbox").await?;
    let names = names(&state, &ui).await?;
    let mut body = String::from("<div class=\"grid\">");
    for (by, what) in [
        ("model", "model"),
        ("devbox", "devbox"),
        ("gateway", "gateway"),
    ] {
        body.push_str(&chart(
            &format!("chart-cost-{by}"),
            &format!("Spend by day, stacked by {what} (USD)"),
            &format!("/ui/data/usage?by={by}&metric=cost"),
        ));
        body.push_str(&chart(
            &format!("chart-requests-{by}"),
            &format!("Requests by day, stacked by {what}"),
            &format!("/ui/data/usage?by={by}&metric=requests"),
        ));
    }
    body.push_str("</div><section class=\"card\"><h2>By day, model, gateway and devbox</h2>");
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let key_named = |k: &Option<Option<String>>| {
                esc(&k
                    .clone()
                    .flatten()
                    .map_or_else(|| "(none)".into(), |id| named(&names, &id)))
            };
            let key = |k: &Option<Option<String>>| {
                esc(k.clone().flatten().as_deref().unwrap_or("(none)"))
            };
            vec![
                key(&r.day),
                key(&r.model),
                key_named(&r.gateway_id),
                key_named(&r.devbox_id),
                r.requests.to_string(),
                r.input_tokens.to_string(),
                r.output_tokens.to_string(),
                usd(&r.cost_usd),
            ]
        })
        .collect();
    body.push_str(&table(
        "usage",
        &[
            "Day (UTC)",
            "Model",
            "Gateway",
            "Devbox",
            "Requests",
            "Input tokens",
            "Output tokens",
            "Spend",
        ],
        &cells,
    ));
    body.push_str("</section>");
    Ok(page(
        StatusCode::OK,
        layout(Some(&ui), "/ui/usage", "Usage and cost", "", &body),
    ))
}

/// The audit page's filters, from its query string (a GET form).
#[derive(serde::Deserialize, Default)]
pub(crate) struct AuditFilter {
    #[serde(default)]
    devbox_id: String,
    #[serde(default)]
    gateway_config_id: String,
    #[serde(default)]
    action: String,
    #[serde(default)]
    object_id: String,
}

/// `GET /ui/audit`: requests and control-plane events, filtered.
pub(crate) async fn audit(
    State(state): State<AppState>,
    Extension(ui): Extension<Ui>,
    RawQuery(query): RawQuery,
) -> PageResult {
    if let Some(refused) = admin_only(&ui, "/ui/audit", "Audit trail") {
        return Ok(refused);
    }
    let f: AuditFilter =
        serde_urlencoded::from_str(query.as_deref().unwrap_or_default()).unwrap_or_default();
    let some = |s: &str| Some(s.trim().to_owned()).filter(|s| !s.is_empty());
    let mut rq = list_query(100);
    rq.devbox_id = some(&f.devbox_id);
    rq.gateway_config_id = some(&f.gateway_config_id);
    let requests = request_events(&state, &ui, rq).await?;
    let mut eq = list_query(100);
    eq.action = some(&f.action);
    eq.object_id = some(&f.object_id);
    let Json(events) = admin::list_audit_events(
        State(state.clone()),
        Extension(ui.caller.clone()),
        Query(eq),
    )
    .await?;
    let mut body = String::new();
    let _ = write!(
        body,
        "<form method=\"get\" action=\"/ui/audit\" class=\"card filters\" id=\"audit-filters\">\
<label>Devbox id <input name=\"devbox_id\" value=\"{}\"></label>\
<label>Gateway id <input name=\"gateway_config_id\" value=\"{}\"></label>\
<label>Action <input name=\"action\" value=\"{}\" placeholder=\"devbox.shutdown\"></label>\
<label>Object id <input name=\"object_id\" value=\"{}\"></label>\
<button type=\"submit\">Filter</button></form>",
        esc(&f.devbox_id),
        esc(&f.gateway_config_id),
        esc(&f.action),
        esc(&f.object_id),
    );
    body.push_str("<section class=\"card\"><h2>Requests</h2>");
    body.push_str(&table(
        "audit-requests",
        &REQUEST_HEAD,
        &request_rows(&requests),
    ));
    body.push_str("</section><section class=\"card\"><h2>Events</h2>");
    let rows: Vec<Vec<String>> = each(&events["events"], |e| {
        vec![
            time(&e["time_ms"]),
            cell(&e["action"]),
            format!("{} {}", cell(&e["object_type"]), cell(&e["object_id"])),
            cell(&e["api_key_id"]),
            cell(&e["client_addr"]),
            cell(&e["detail"]),
        ]
    });
    body.push_str(&table(
        "audit-events",
        &[
            "Time (UTC)",
            "Action",
            "Object",
            "API key",
            "Client",
            "Detail",
        ],
        &rows,
    ));
    body.push_str("</section>");
    Ok(page(
        StatusCode::OK,
        layout(Some(&ui), "/ui/audit", "Audit trail", "", &body),
    ))
}
