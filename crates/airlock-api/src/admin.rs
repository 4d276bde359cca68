//! Airlock's own endpoints: accounts, API keys, the audit trails, and the first start.

use airlock_core::token::{BearerSecret, SecretKind};
use airlock_core::{AccountId, ApiKeyId, Label, TokenDigest};
use airlock_store::{AccountRow, ApiKeyRow, AuditFilter, AuditRow, Scope, Store, StoreError};
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::{json, Value};

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::json::{Body, Query};
use crate::wire::{
    api_key_view, audit_view, list_view, AccountCreate, ApiKeyCreate, Empty, ListQuery,
    RequestEventList,
};
use crate::{int_param, page, AppState};

/// What the first start did about the admin key.
pub enum Bootstrap {
    /// Accounts existed and nothing changed.
    Existing,
    /// `AIRLOCK_ADMIN_TOKEN` was registered as an admin key of the operator account.
    FromSetting,
    /// A new key was generated: show it once.
    Generated(BearerSecret),
}

/// Shortest `AIRLOCK_ADMIN_TOKEN` accepted: it guards everything.
const MIN_ADMIN_TOKEN: usize = 24;

/// On first start, creates the operator account with an admin key: `AIRLOCK_ADMIN_TOKEN` if
/// given, else a generated one that the caller prints once. On later starts, a given
/// `AIRLOCK_ADMIN_TOKEN` that is not yet a key is added to the operator account.
pub async fn bootstrap(store: &Store, admin_token: Option<&str>) -> Result<Bootstrap, StoreError> {
    if let Some(t) = admin_token {
        if t.len() < MIN_ADMIN_TOKEN || t.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(StoreError::Config(format!(
                "AIRLOCK_ADMIN_TOKEN must be at least {MIN_ADMIN_TOKEN} characters without spaces"
            )));
        }
    }
    let now = airlock_core::time::now_ms();
    let key_row = |account: &AccountId, digest: TokenDigest| ApiKeyRow {
        id: ApiKeyId::generate(),
        account_id: account.clone(),
        name: "bootstrap admin".into(),
        scope: Scope::Admin,
        digest,
        create_time_ms: now,
        revoke_time_ms: None,
    };
    let system_audit = |account: &AccountId, key: &ApiKeyRow| AuditRow {
        id: airlock_core::AuditId::generate().into_string(),
        time_ms: now,
        account_id: account.clone(),
        api_key_id: None,
        action: "api_key.bootstrap".into(),
        object_type: "api_key".into(),
        object_id: key.id.as_str().to_owned(),
        detail: json!({"scope": "admin"}).to_string(),
        client_addr: None,
    };
    if let Some(operator) = store.operator_account().await? {
        let Some(t) = admin_token else {
            return Ok(Bootstrap::Existing);
        };
        let digest = TokenDigest::of(t);
        if store.api_key_by_digest(&digest).await?.is_some() {
            return Ok(Bootstrap::Existing);
        }
        let key = key_row(&operator.id, digest);
        return match store
            .insert_api_key(&key, &system_audit(&operator.id, &key))
            .await
        {
            Ok(()) => Ok(Bootstrap::FromSetting),
            // The digest exists but the key was revoked: a revocation outranks the setting.
            Err(StoreError::Conflict(_)) => {
                tracing::warn!("AIRLOCK_ADMIN_TOKEN names a revoked API key; it stays revoked");
                Ok(Bootstrap::Existing)
            }
            Err(e) => Err(e),
        };
    }
    let account = AccountRow {
        id: AccountId::generate(),
        name: "operator".into(),
        operator: true,
        create_time_ms: now,
    };
    let (digest, outcome) = match admin_token {
        Some(t) => (TokenDigest::of(t), Bootstrap::FromSetting),
        None => {
            let generated = BearerSecret::generate(SecretKind::ApiKey);
            (generated.digest(), Bootstrap::Generated(generated))
        }
    };
    let key = key_row(&account.id, digest);
    store
        .create_account(&account, Some(&key), Some(&system_audit(&account.id, &key)))
        .await?;
    Ok(outcome)
}

fn account_view(a: &AccountRow) -> Value {
    json!({"id": a.id.as_str(), "name": a.name, "operator": a.operator, "create_time_ms": a.create_time_ms})
}

/// `POST /v1/accounts` (operator): a new, sealed-off account and its first admin key.
pub(crate) async fn create_account(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Body(input): Body<AccountCreate>,
) -> ApiResult<Json<Value>> {
    caller.require_operator()?;
    let name = Label::parse("name", &input.name)?;
    let now = airlock_core::time::now_ms();
    let account = AccountRow {
        id: AccountId::generate(),
        name: name.as_str().to_owned(),
        operator: false,
        create_time_ms: now,
    };
    let secret = BearerSecret::generate(SecretKind::ApiKey);
    let key = ApiKeyRow {
        id: ApiKeyId::generate(),
        account_id: account.id.clone(),
        name: "first admin".into(),
        scope: Scope::Admin,
        digest: secret.digest(),
        create_time_ms: now,
        revoke_time_ms: None,
    };
    let audit = caller.audit(
        "account.create",
        "account",
        account.id.as_str(),
        json!({"name": account.name, "api_key_id": key.id.as_str()}),
    );
    state
        .store
        .create_account(&account, Some(&key), Some(&audit))
        .await?;
    let mut view = account_view(&account);
    if let Value::Object(m) = &mut view {
        m.insert(
            "api_key".into(),
            json!({"id": key.id.as_str(), "key": secret.expose(), "scope": "admin"}),
        );
    }
    Ok(Json(view))
}

pub(crate) async fn list_accounts(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    caller.require_operator()?;
    let listed = state.store.list_accounts(&page(&q)?).await?;
    Ok(Json(list_view("accounts", &listed, account_view)))
}

/// `POST /v1/api-keys` (admin): a key of this account, or of another one for an operator.
pub(crate) async fn create_api_key(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Body(input): Body<ApiKeyCreate>,
) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    let name = Label::parse("name", &input.name)?;
    let scope = Scope::parse(&input.scope)
        .ok_or_else(|| ApiError::Invalid("scope: must be admin or launcher".into()))?;
    let account_id = match input.account_id {
        Some(id) if id != caller.account.id.as_str() => {
            caller.require_operator()?;
            state
                .store
                .get_account(&id)
                .await
                .map_err(|e| ApiError::for_object(e, "account", &id))?;
            AccountId::from_trusted(id)
        }
        _ => caller.account.id.clone(),
    };
    let secret = BearerSecret::generate(SecretKind::ApiKey);
    let key = ApiKeyRow {
        id: ApiKeyId::generate(),
        account_id,
        name: name.as_str().to_owned(),
        scope,
        digest: secret.digest(),
        create_time_ms: airlock_core::time::now_ms(),
        revoke_time_ms: None,
    };
    let mut audit = caller.audit(
        "api_key.create",
        "api_key",
        key.id.as_str(),
        json!({"scope": scope.as_str(), "account_id": key.account_id.as_str()}),
    );
    audit.account_id = key.account_id.clone();
    state.store.insert_api_key(&key, &audit).await?;
    let mut view = api_key_view(&key);
    if let Value::Object(m) = &mut view {
        m.insert("key".into(), Value::from(secret.expose()));
    }
    Ok(Json(view))
}

pub(crate) async fn list_api_keys(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    let listed = state
        .store
        .list_api_keys(&caller.account.id, &page(&q)?)
        .await?;
    Ok(Json(list_view("api_keys", &listed, api_key_view)))
}

pub(crate) async fn revoke_api_key(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Body(_): Body<Empty>,
) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    let not_found = |e| ApiError::for_object(e, "api key", &id);
    let key = state
        .store
        .get_api_key(&caller.account.id, &id)
        .await
        .map_err(not_found)?;
    let audit = caller.audit("api_key.revoke", "api_key", key.id.as_str(), json!({}));
    state
        .store
        .revoke_api_key(
            &caller.account.id,
            &id,
            airlock_core::time::now_ms(),
            &audit,
        )
        .await
        .map_err(not_found)?;
    Ok(Json(api_key_view(&key)))
}

fn audit_filter(q: &ListQuery) -> ApiResult<AuditFilter> {
    let nonempty = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
    Ok(AuditFilter {
        object_id: nonempty(&q.object_id),
        action: nonempty(&q.action),
        devbox_id: nonempty(&q.devbox_id),
        gateway_config_id: nonempty(&q.gateway_config_id),
        secret_id: nonempty(&q.secret_id),
        since_ms: int_param("since_ms", &q.since_ms)?,
        until_ms: int_param("until_ms", &q.until_ms)?,
    })
}

/// `GET /v1/audit/events`: control-plane actions of this account.
pub(crate) async fn list_audit_events(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    let listed = state
        .store
        .list_audit_events(&caller.account.id, &audit_filter(&q)?, &page(&q)?)
        .await?;
    Ok(Json(list_view("events", &listed, audit_view)))
}

/// `GET /v1/audit/requests`: requests the data plane proxied for this account.
pub(crate) async fn list_request_events(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Response> {
    caller.require_admin()?;
    let listed = state
        .store
        .list_request_events(&caller.account.id, &audit_filter(&q)?, &page(&q)?)
        .await?;
    // Serialized here, while the views still borrow the rows.
    Ok(Json(RequestEventList::from(&listed)).into_response())
}
