//! `/v1/devboxes`: where a sandbox's traffic comes from, and the gateway tokens bound to it.

use std::collections::BTreeMap;

use airlock_core::token::{BearerSecret, SecretKind};
use airlock_core::{DevboxId, EnvName, InvalidInput, Label, SourceAddresses, TokenId, TokenScope};
use airlock_store::{
    DevboxRow, DevboxStatus, GatewayConfigRow, GatewaySpec, SecretRow, StoreError, TokenRow,
};
use axum::extract::{Path, State};
use axum::{Extension, Json};
use serde_json::{json, Map, Value};

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::gateways::{resolve, secret_ref};
use crate::json::{Body, Query};
use crate::wire::{
    auth_view, devbox_view, list_view, CreateTokenIn, DevboxRegister, DevboxUpdate, Empty,
    GatewayRefIn, ListQuery, TokenView,
};
use crate::{page, AppState};

const MAX_GATEWAYS: usize = 32;
const MAX_METADATA_KEYS: usize = 50;
const MAX_METADATA_TEXT: usize = 512;

fn parse_addresses(state_warn_id: &str, items: &[String]) -> Result<SourceAddresses, InvalidInput> {
    let addrs = SourceAddresses::parse("source_addresses", items)?;
    if addrs.allows_any() {
        tracing::warn!(devbox = %state_warn_id, "source_addresses allows every address: a stolen token works from anywhere");
    }
    Ok(addrs)
}

fn parse_metadata(input: Option<Map<String, Value>>) -> Result<String, InvalidInput> {
    let map = input.unwrap_or_default();
    if map.len() > MAX_METADATA_KEYS {
        return Err(InvalidInput::new(
            "metadata",
            format!("must have at most {MAX_METADATA_KEYS} keys"),
        ));
    }
    for (k, v) in &map {
        if k.is_empty() || k.len() > MAX_METADATA_TEXT {
            return Err(InvalidInput::new(
                "metadata",
                format!("keys must be 1 to {MAX_METADATA_TEXT} bytes"),
            ));
        }
        match v {
            Value::String(s) if s.len() <= MAX_METADATA_TEXT => {}
            _ => {
                return Err(InvalidInput::new(
                    format!("metadata.{k}"),
                    format!("must be a string of at most {MAX_METADATA_TEXT} bytes"),
                ))
            }
        }
    }
    Ok(Value::Object(map).to_string())
}

/// Resolves a `{gateway, secret}` pair of the caller's account by id or name. A router gateway
/// takes no secret (each backend names its own); any other gateway requires one.
async fn resolve_pair(
    state: &AppState,
    caller: &Caller,
    field: &str,
    r: &GatewayRefIn,
) -> ApiResult<(GatewayConfigRow, Option<SecretRow>)> {
    let gateway = resolve(state, caller, &r.gateway)
        .await
        .map_err(|e| match e {
            ApiError::NotFound(_) => ApiError::Invalid(format!(
                "{field}.gateway: no gateway config {} in this account",
                r.gateway
            )),
            other => other,
        })?;
    let name = match (&r.secret, gateway.router.is_some()) {
        (None, true) => return Ok((gateway, None)),
        (Some(_), true) => {
            return Err(ApiError::Invalid(format!(
                "{field}.secret: must be omitted for a router gateway (each backend names its own)"
            )))
        }
        (None, false) => return Err(ApiError::Invalid(format!("{field}.secret: is required"))),
        (Some(name), false) => name,
    };
    let secret = state
        .store
        .get_secret(&caller.account.id, secret_ref(name))
        .await
        .map_err(|e| match e {
            StoreError::NotFound => {
                ApiError::Invalid(format!("{field}.secret: no secret {name} in this account"))
            }
            other => other.into(),
        })?;
    Ok((gateway, Some(secret)))
}

fn mint(
    caller: &Caller,
    devbox: &DevboxId,
    gateway: &GatewayConfigRow,
    secret: Option<&SecretRow>,
    prefix: Option<EnvName>,
    expire_time_ms: Option<i64>,
    scope: Option<TokenScope>,
) -> (TokenRow, BearerSecret) {
    let token = BearerSecret::generate(SecretKind::Gateway);
    let row = TokenRow {
        id: TokenId::generate(),
        account_id: caller.account.id.clone(),
        devbox_id: devbox.clone(),
        gateway_config_id: gateway.id.clone(),
        secret_id: secret.map(|s| s.id.clone()),
        prefix,
        digest: token.digest(),
        create_time_ms: airlock_core::time::now_ms(),
        expire_time_ms,
        scope,
    };
    (row, token)
}

pub(crate) async fn register(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Body(input): Body<DevboxRegister>,
) -> ApiResult<Json<Value>> {
    let id = DevboxId::generate();
    let name = input
        .name
        .as_deref()
        .map(|n| Label::parse("name", n))
        .transpose()?;
    let source_addresses = parse_addresses(id.as_str(), &input.source_addresses)?;
    let metadata = parse_metadata(input.metadata)?;
    let limits = input
        .limits
        .as_ref()
        .map(crate::limits::parse_limits)
        .transpose()?;
    let gateways = input.gateways.unwrap_or_default();
    if gateways.len() > MAX_GATEWAYS {
        return Err(InvalidInput::new(
            "gateways",
            format!("must have at most {MAX_GATEWAYS} entries"),
        )
        .into());
    }
    let prefixes: BTreeMap<&str, EnvName> = gateways
        .keys()
        .map(|k| Ok((k.as_str(), EnvName::parse(&format!("gateways.{k}"), k)?)))
        .collect::<Result<_, InvalidInput>>()?;
    for k in gateways.keys() {
        if gateways.contains_key(&format!("{k}_URL")) {
            return Err(InvalidInput::new(
                format!("gateways.{k}_URL"),
                format!("collides with {k}_URL, the URL variable of gateway {k}"),
            )
            .into());
        }
    }
    let now = airlock_core::time::now_ms();
    let mut tokens = Vec::new();
    let mut environment = Map::new();
    let mut specs = Vec::new();
    for (key, r) in &gateways {
        let (gateway, secret) =
            resolve_pair(&state, &caller, &format!("gateways.{key}"), r).await?;
        let prefix = prefixes[key.as_str()].clone();
        let (row, token) = mint(
            &caller,
            &id,
            &gateway,
            secret.as_ref(),
            Some(prefix.clone()),
            None,
            None,
        );
        environment.insert(format!("{key}_URL"), Value::from(state.public_url.clone()));
        environment.insert(key.clone(), Value::from(token.expose()));
        specs.push(GatewaySpec {
            prefix,
            gateway_config_id: gateway.id.clone(),
            secret_id: secret.as_ref().map(|s| s.id.clone()),
        });
        tokens.push(row);
    }
    let row = DevboxRow {
        id,
        account_id: caller.account.id.clone(),
        name: name.map(|n| n.as_str().to_owned()),
        status: DevboxStatus::Running,
        source_addresses,
        metadata,
        create_time_ms: now,
        update_time_ms: now,
        shutdown_time_ms: None,
        gateway_specs: specs,
    };
    let audit = caller.audit(
        "devbox.register",
        "devbox",
        row.id.as_str(),
        json!({"source_addresses": row.source_addresses.to_strings(), "token_ids": tokens.iter().map(|t| t.id.as_str()).collect::<Vec<_>>()}),
    );
    state.store.register_devbox(&row, &tokens, &audit).await?;
    if let Some(limits) = limits.filter(|l| !l.is_empty()) {
        let scope = airlock_core::LimitScope::Devbox(row.id.clone());
        crate::limits::set(&state, &caller, &scope, &limits).await?;
    }
    let scope = airlock_core::LimitScope::Devbox(row.id.clone());
    let mut view = crate::limits::with_limits(&state, scope, devbox_view(&row)).await?;
    if let Value::Object(map) = &mut view {
        map.insert("environment".into(), Value::Object(environment));
    }
    Ok(Json(view))
}

pub(crate) async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    let status = match q.status.as_deref() {
        None | Some("") => None,
        Some("running") => Some(DevboxStatus::Running),
        Some("shutdown") => Some(DevboxStatus::Shutdown),
        Some(_) => {
            return Err(ApiError::Invalid(
                "status: must be running or shutdown".into(),
            ))
        }
    };
    let listed = state
        .store
        .list_devboxes(&caller.account.id, status, &page(&q)?)
        .await?;
    let view = list_view("devboxes", &listed, devbox_view);
    let view =
        crate::limits::list_with_limits(&state, &caller.account.id, "devbox", "devboxes", view)
            .await?;
    Ok(Json(view))
}

pub(crate) async fn get(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let row = state
        .store
        .get_devbox(&caller.account.id, &id)
        .await
        .map_err(|e| ApiError::for_object(e, "devbox", &id))?;
    let scope = airlock_core::LimitScope::Devbox(row.id.clone());
    let view = crate::limits::with_limits(&state, scope, devbox_view(&row)).await?;
    Ok(Json(view))
}

pub(crate) async fn update(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Body(input): Body<DevboxUpdate>,
) -> ApiResult<Json<Value>> {
    let current = state
        .store
        .get_devbox(&caller.account.id, &id)
        .await
        .map_err(|e| ApiError::for_object(e, "devbox", &id))?;
    if input.source_addresses.is_none() && input.limits.is_none() {
        return Err(
            InvalidInput::new("source_addresses", "is required unless limits is given").into(),
        );
    }
    let addrs = input
        .source_addresses
        .as_deref()
        .map(|a| parse_addresses(current.id.as_str(), a))
        .transpose()?;
    let limits = input
        .limits
        .as_ref()
        .map(crate::limits::parse_limits)
        .transpose()?;
    if let Some(addrs) = addrs {
        let audit = caller.audit(
            "devbox.update",
            "devbox",
            current.id.as_str(),
            json!({"source_addresses": addrs.to_strings()}),
        );
        state
            .store
            .update_devbox_addresses(
                &caller.account.id,
                &current.id,
                &addrs,
                airlock_core::time::now_ms(),
                &audit,
            )
            .await
            .map_err(|e| ApiError::for_object(e, "devbox", &id))?;
    }
    if let Some(limits) = limits {
        let scope = airlock_core::LimitScope::Devbox(current.id.clone());
        crate::limits::set(&state, &caller, &scope, &limits).await?;
    }
    let row = state
        .store
        .get_devbox(&caller.account.id, &id)
        .await
        .map_err(|e| ApiError::for_object(e, "devbox", &id))?;
    let scope = airlock_core::LimitScope::Devbox(row.id.clone());
    let view = crate::limits::with_limits(&state, scope, devbox_view(&row)).await?;
    Ok(Json(view))
}

pub(crate) async fn shutdown(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Body(_): Body<Empty>,
) -> ApiResult<Json<Value>> {
    let current = state
        .store
        .get_devbox(&caller.account.id, &id)
        .await
        .map_err(|e| ApiError::for_object(e, "devbox", &id))?;
    let audit = caller.audit("devbox.shutdown", "devbox", current.id.as_str(), json!({}));
    state
        .store
        .shutdown_devbox(
            &caller.account.id,
            &current.id,
            airlock_core::time::now_ms(),
            &audit,
        )
        .await
        .map_err(|e| ApiError::for_object(e, "devbox", &id))?;
    let row = state
        .store
        .get_devbox(&caller.account.id, &id)
        .await
        .map_err(|e| ApiError::for_object(e, "devbox", &id))?;
    let scope = airlock_core::LimitScope::Devbox(row.id.clone());
    let view = crate::limits::with_limits(&state, scope, devbox_view(&row)).await?;
    Ok(Json(view))
}

pub(crate) async fn create_gateway_token(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Body(input): Body<CreateTokenIn>,
) -> ApiResult<Json<Value>> {
    // Longest lifetime a scoped token may be given: ten years.
    const MAX_EXPIRES_IN_S: i64 = 10 * 365 * 24 * 3600;
    let max_requests = match &input.max_requests {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => match n.as_u64() {
            Some(n) if (1..=airlock_core::limits::MAX_LIMIT).contains(&n) => Some(n),
            _ => {
                return Err(InvalidInput::new(
                    "max_requests",
                    "must be a whole number of requests of at least 1",
                )
                .into())
            }
        },
        Some(_) => return Err(InvalidInput::new("max_requests", "must be a whole number").into()),
    };
    let now = airlock_core::time::now_ms();
    let expire_time_ms = match input.expires_in_s {
        None => None,
        Some(s) if (1..=MAX_EXPIRES_IN_S).contains(&s) => Some(now + s * 1000),
        Some(_) => {
            return Err(InvalidInput::new(
                "expires_in_s",
                format!("must be a whole number of seconds from 1 to {MAX_EXPIRES_IN_S}"),
            )
            .into())
        }
    };
    let scope = TokenScope::with_max_requests(
        TokenScope::parse(
            input.allowed_methods.as_deref().unwrap_or_default(),
            input.allowed_path_prefixes.as_deref().unwrap_or_default(),
        )?,
        max_requests,
    );
    let pair = GatewayRefIn {
        gateway: input.gateway,
        secret: input.secret,
    };
    let devbox = state
        .store
        .get_devbox(&caller.account.id, &id)
        .await
        .map_err(|e| ApiError::for_object(e, "devbox", &id))?;
    if devbox.status != DevboxStatus::Running {
        return Err(ApiError::Invalid(format!(
            "devbox {id} is shut down; tokens can only be minted for running devboxes"
        )));
    }
    let (gateway, secret) =
        resolve_pair(&state, &caller, "", &pair)
            .await
            .map_err(|e| match e {
                ApiError::Invalid(m) => ApiError::Invalid(m.trim_start_matches('.').to_owned()),
                other => other,
            })?;
    let (row, token) = mint(
        &caller,
        &devbox.id,
        &gateway,
        secret.as_ref(),
        None,
        expire_time_ms,
        scope,
    );
    let audit = caller.audit(
        "devbox.create_gateway_token",
        "devbox",
        devbox.id.as_str(),
        json!({"token_id": row.id.as_str(), "gateway_config_id": gateway.id.as_str(), "secret_id": secret.as_ref().map(|s| s.id.as_str())}),
    );
    state
        .store
        .insert_gateway_token(&row, &audit)
        .await
        .map_err(|e| ApiError::for_object(e, "devbox", &id))?;
    Ok(Json(json!({
        "token": token.expose(),
        "url": state.public_url,
        "devbox_id": devbox.id.as_str(),
        "gateway_config_id": gateway.id.as_str(),
        // A router has no endpoint or auth of its own (its backends do): null.
        "endpoint": gateway.router.is_none().then(|| gateway.endpoint.to_string()),
        "auth_mechanism": gateway.router.is_none().then(|| auth_view(&gateway.auth)),
        "expire_time_ms": row.expire_time_ms,
    })))
}

/// `GET /v1/devboxes/{id}/gateway_tokens`: the devbox's tokens, newest first, with their last
/// use and use count (from the request audit trail).
pub(crate) async fn list_tokens(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let devbox = DevboxId::parse("id", &id).map_err(|_| ApiError::not_found("devbox", &id))?;
    let tokens = state
        .store
        .list_gateway_tokens(&caller.account.id, &devbox)
        .await
        .map_err(|e| ApiError::for_object(e, "devbox", &id))?;
    let now = airlock_core::time::now_ms();
    let views: Vec<TokenView> = tokens.iter().map(|t| TokenView::of(t, now)).collect();
    Ok(Json(json!({ "gateway_tokens": views })))
}

/// `POST /v1/devboxes/{id}/gateway_tokens/{token_id}/revoke`: that token stops working on every
/// replica at once; the devbox and its other tokens keep working. Revoking twice is fine.
pub(crate) async fn revoke_token(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((id, token_id)): Path<(String, String)>,
    Body(_): Body<Empty>,
) -> ApiResult<Json<Value>> {
    let devbox = DevboxId::parse("id", &id).map_err(|_| ApiError::not_found("devbox", &id))?;
    let token = TokenId::parse("token_id", &token_id)
        .map_err(|_| ApiError::not_found("gateway token", &token_id))?;
    let audit = caller.audit(
        "gateway_token.revoke",
        "gateway_token",
        token.as_str(),
        json!({ "devbox_id": devbox.as_str() }),
    );
    let now = airlock_core::time::now_ms();
    state
        .store
        .revoke_gateway_token(&caller.account.id, &devbox, &token, now, &audit)
        .await
        .map_err(|e| ApiError::for_object(e, "gateway token", &token_id))?;
    let tokens = state
        .store
        .list_gateway_tokens(&caller.account.id, &devbox)
        .await
        .map_err(|e| ApiError::for_object(e, "devbox", &id))?;
    let view = tokens
        .iter()
        .find(|t| t.id == token)
        .map(|t| TokenView::of(t, now))
        .ok_or_else(|| ApiError::not_found("gateway token", &token_id))?;
    Ok(Json(serde_json::to_value(view).unwrap_or_default()))
}
