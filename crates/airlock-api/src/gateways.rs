//! `/v1/gateway-configs`: an upstream endpoint and how to apply a credential to it.

use airlock_core::auth::{check_custom_headers, parse_header_name, parse_header_value};
use airlock_core::binding::{gateway_binding_message, GATEWAY_BINDING};
use airlock_core::{
    AuthMechanism, CustomHeader, Endpoint, GatewayConfigId, HeaderSource, InvalidInput, Label,
    SecretId,
};
use airlock_store::{GatewayConfigRow, GatewayFilter, SecretRef};
use axum::extract::{Path, State};
use axum::{Extension, Json};
use serde_json::{json, Value};

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::json::{Body, Query};
use crate::wire::{
    gateway_view, list_view, AuthMechanismIn, CustomHeaderIn, Empty, GatewayConfigCreate,
    GatewayConfigUpdate, ListQuery,
};
use crate::{page, AppState};

const MAX_DESCRIPTION: usize = 1024;

fn parse_auth(field: &str, a: &AuthMechanismIn) -> Result<AuthMechanism, InvalidInput> {
    AuthMechanism::parse(field, &a.kind, a.key.as_deref())
}

fn parse_endpoint(state: &AppState, text: &str) -> Result<Endpoint, InvalidInput> {
    let endpoint = Endpoint::parse("endpoint", text)?;
    state.policy.check_endpoint("endpoint", &endpoint)?;
    Ok(endpoint)
}

fn parse_description(text: Option<String>) -> Result<Option<String>, InvalidInput> {
    match text {
        Some(d) if d.chars().count() > MAX_DESCRIPTION => Err(InvalidInput::new(
            "description",
            format!("must be at most {MAX_DESCRIPTION} characters"),
        )),
        other => Ok(other),
    }
}

/// Resolves custom headers; a secret may be named by `sec_` id or by name, and must exist in the
/// caller's account.
async fn parse_headers(
    state: &AppState,
    caller: &Caller,
    auth: &AuthMechanism,
    input: Vec<CustomHeaderIn>,
) -> ApiResult<Vec<CustomHeader>> {
    let mut out = Vec::with_capacity(input.len());
    if input.len() > airlock_core::MAX_CUSTOM_HEADERS {
        return Err(InvalidInput::new("custom_headers", "must have at most 8 entries").into());
    }
    for (i, h) in input.into_iter().enumerate() {
        let field = format!("custom_headers[{i}]");
        let name = parse_header_name(&format!("{field}.name"), &h.name)?;
        let source = match (h.secret, h.value) {
            (Some(secret), None) => {
                let row = state
                    .store
                    .get_secret(&caller.account.id, secret_ref(&secret))
                    .await
                    .map_err(|e| match e {
                        airlock_store::StoreError::NotFound => ApiError::Invalid(format!(
                            "{field}.secret: no secret {secret} in this account"
                        )),
                        other => other.into(),
                    })?;
                HeaderSource::Secret(row.id)
            }
            (None, Some(value)) => {
                HeaderSource::Literal(parse_header_value(&format!("{field}.value"), &value)?)
            }
            _ => {
                return Err(
                    InvalidInput::new(field, "must have exactly one of secret and value").into(),
                )
            }
        };
        out.push(CustomHeader { name, source });
    }
    check_custom_headers("custom_headers", auth, &out)?;
    Ok(out)
}

/// The config's binding: a MAC under the active master key over what decides where its secret
/// goes and how (endpoint, auth mechanism, custom headers). The data plane refuses a config
/// whose binding does not check, so a database writer cannot repoint it.
fn bind(state: &AppState, row: &GatewayConfigRow) -> ApiResult<Vec<u8>> {
    let message = gateway_binding_message(
        &row.account_id,
        &row.id,
        &row.endpoint,
        &row.auth,
        &row.custom_headers,
    );
    state.keyring.bind(GATEWAY_BINDING, &message).map_err(|e| {
        tracing::error!(error = %e, "binding a gateway config failed");
        ApiError::Internal
    })
}

pub(crate) fn secret_ref(text: &str) -> SecretRef<'_> {
    if SecretId::looks_like(text) {
        SecretRef::Id(text)
    } else {
        SecretRef::Name(text)
    }
}

/// A gateway config of the caller's account by `gwc_` id or by name (the newest of that name).
pub(crate) async fn resolve(
    state: &AppState,
    caller: &Caller,
    text: &str,
) -> ApiResult<GatewayConfigRow> {
    let found = if GatewayConfigId::looks_like(text) {
        state
            .store
            .get_gateway_config(&caller.account.id, text)
            .await
    } else {
        state
            .store
            .gateway_config_by_name(&caller.account.id, text)
            .await
    };
    found.map_err(|e| ApiError::for_object(e, "gateway config", text))
}

pub(crate) async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Body(input): Body<GatewayConfigCreate>,
) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    let name = Label::parse("name", &input.name)?;
    let endpoint = parse_endpoint(&state, &input.endpoint)?;
    let auth = parse_auth("auth_mechanism", &input.auth_mechanism)?;
    let description = parse_description(input.description)?;
    let custom_headers = parse_headers(
        &state,
        &caller,
        &auth,
        input.custom_headers.unwrap_or_default(),
    )
    .await?;
    let now = airlock_core::time::now_ms();
    let mut row = GatewayConfigRow {
        id: GatewayConfigId::generate(),
        account_id: caller.account.id.clone(),
        name,
        endpoint,
        auth,
        custom_headers,
        description,
        create_time_ms: now,
        update_time_ms: now,
        binding: None,
        llm: Default::default(),
    };
    row.binding = Some(bind(&state, &row)?);
    let audit = caller.audit(
        "gateway_config.create",
        "gateway_config",
        row.id.as_str(),
        json!({"name": row.name.as_str(), "endpoint": row.endpoint.to_string()}),
    );
    state.store.insert_gateway_config(&row, &audit).await?;
    Ok(Json(gateway_view(&row)))
}

pub(crate) async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    let page = page(&q)?;
    let filter = GatewayFilter {
        id: q.id.filter(|s| !s.is_empty()),
        name: q.name.filter(|s| !s.is_empty()),
        search: q.search.filter(|s| !s.is_empty()),
    };
    let listed = state
        .store
        .list_gateway_configs(&caller.account.id, &filter, &page)
        .await?;
    Ok(Json(list_view("gateway_configs", &listed, gateway_view)))
}

pub(crate) async fn get(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let row = state
        .store
        .get_gateway_config(&caller.account.id, &id)
        .await
        .map_err(|e| ApiError::for_object(e, "gateway config", &id))?;
    Ok(Json(gateway_view(&row)))
}

pub(crate) async fn update(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Body(input): Body<GatewayConfigUpdate>,
) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    let mut row = state
        .store
        .get_gateway_config(&caller.account.id, &id)
        .await
        .map_err(|e| ApiError::for_object(e, "gateway config", &id))?;
    if let Some(name) = input.name {
        row.name = Label::parse("name", &name)?;
    }
    if let Some(endpoint) = input.endpoint {
        row.endpoint = parse_endpoint(&state, &endpoint)?;
    }
    if let Some(auth) = input.auth_mechanism {
        row.auth = parse_auth("auth_mechanism", &auth)?;
    }
    if let Some(description) = input.description {
        row.description = parse_description(Some(description))?;
    }
    match input.custom_headers {
        Some(headers) => {
            row.custom_headers = parse_headers(&state, &caller, &row.auth, headers).await?
        }
        // A new auth mechanism must not collide with the headers that stay.
        None => check_custom_headers("custom_headers", &row.auth, &row.custom_headers)?,
    }
    row.update_time_ms = airlock_core::time::now_ms();
    row.binding = Some(bind(&state, &row)?);
    let audit = caller.audit(
        "gateway_config.update",
        "gateway_config",
        row.id.as_str(),
        json!({"name": row.name.as_str(), "endpoint": row.endpoint.to_string()}),
    );
    state
        .store
        .update_gateway_config(&row, &audit)
        .await
        .map_err(|e| ApiError::for_object(e, "gateway config", &id))?;
    Ok(Json(gateway_view(&row)))
}

pub(crate) async fn delete(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Body(_): Body<Empty>,
) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    let row = state
        .store
        .get_gateway_config(&caller.account.id, &id)
        .await
        .map_err(|e| ApiError::for_object(e, "gateway config", &id))?;
    let audit = caller.audit(
        "gateway_config.delete",
        "gateway_config",
        row.id.as_str(),
        json!({"name": row.name.as_str()}),
    );
    state
        .store
        .delete_gateway_config(
            &caller.account.id,
            &row.id,
            airlock_core::time::now_ms(),
            &audit,
        )
        .await
        .map_err(|e| ApiError::for_object(e, "gateway config", &id))?;
    Ok(Json(gateway_view(&row)))
}
