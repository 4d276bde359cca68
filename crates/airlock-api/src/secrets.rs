//! `/v1/secrets`: credentials, stored sealed and never returned.

use airlock_core::{EnvName, InvalidInput, SecretId};
use airlock_crypto::SecretContext;
use airlock_store::{SecretRef, SecretRow, StoreError};
use axum::extract::{Path, State};
use axum::{Extension, Json};
use serde_json::{json, Value};
use zeroize::Zeroizing;

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::json::{Body, Query};
use crate::wire::{list_view, secret_view, Empty, ListQuery, SecretCreate, SecretUpdate};
use crate::{page, AppState};

/// Largest secret value.
pub(crate) const MAX_SECRET_VALUE: usize = 64 * 1024;

fn check_value(value: &str) -> Result<(), InvalidInput> {
    if value.is_empty() {
        return Err(InvalidInput::new("value", "must not be empty"));
    }
    if value.len() > MAX_SECRET_VALUE {
        return Err(InvalidInput::new(
            "value",
            format!("must be at most {MAX_SECRET_VALUE} bytes"),
        ));
    }
    Ok(())
}

fn seal(
    state: &AppState,
    account: &str,
    id: &SecretId,
    version: i64,
    value: &str,
) -> ApiResult<Vec<u8>> {
    let ctx = SecretContext {
        account_id: account,
        secret_id: id.as_str(),
        version,
    };
    state.keyring.seal(&ctx, value.as_bytes()).map_err(|e| {
        tracing::error!(error = %e, "sealing a secret failed");
        ApiError::Internal
    })
}

pub(crate) async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Body(input): Body<SecretCreate>,
) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    let value = Zeroizing::new(input.value);
    let name = EnvName::parse("name", &input.name)?;
    check_value(&value)?;
    let id = SecretId::generate();
    let now = airlock_core::time::now_ms();
    let row = SecretRow {
        sealed: seal(&state, caller.account.id.as_str(), &id, 1, &value)?,
        key_id: state.keyring.active_id().0,
        id,
        account_id: caller.account.id.clone(),
        name,
        version: 1,
        create_time_ms: now,
        update_time_ms: now,
    };
    let audit = caller.audit(
        "secret.create",
        "secret",
        row.id.as_str(),
        json!({"name": row.name.as_str(), "version": 1}),
    );
    state.store.insert_secret(&row, &audit).await?;
    Ok(Json(secret_view(&row)))
}

pub(crate) async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    let listed = state
        .store
        .list_secrets(&caller.account.id, &page(&q)?)
        .await?;
    Ok(Json(list_view("secrets", &listed, secret_view)))
}

async fn fetch(
    state: &AppState,
    caller: &Caller,
    by: SecretRef<'_>,
    shown: &str,
) -> ApiResult<SecretRow> {
    caller.require_admin()?;
    state
        .store
        .get_secret(&caller.account.id, by)
        .await
        .map_err(|e| ApiError::for_object(e, "secret", shown))
}

pub(crate) async fn get_by_name(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    Ok(Json(secret_view(
        &fetch(&state, &caller, SecretRef::Name(&name), &name).await?,
    )))
}

pub(crate) async fn get_by_id(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    Ok(Json(secret_view(
        &fetch(&state, &caller, SecretRef::Id(&id), &id).await?,
    )))
}

/// Rotation: the value becomes a new version. Every data plane picks it up from the change
/// feed; requests already running finish on the value they started with.
async fn rotate(
    state: &AppState,
    caller: &Caller,
    by: SecretRef<'_>,
    shown: &str,
    input: SecretUpdate,
) -> ApiResult<Json<Value>> {
    let value = Zeroizing::new(input.value);
    caller.require_admin()?;
    check_value(&value)?;
    // Two rotations racing: the loser re-reads and seals for the next version.
    for _ in 0..3 {
        let current = fetch(state, caller, by.clone(), shown).await?;
        let version = current.version + 1;
        let mut row = current.clone();
        row.version = version;
        row.sealed = seal(state, caller.account.id.as_str(), &row.id, version, &value)?;
        row.key_id = state.keyring.active_id().0;
        row.update_time_ms = airlock_core::time::now_ms();
        let audit = caller.audit(
            "secret.rotate",
            "secret",
            row.id.as_str(),
            json!({"name": row.name.as_str(), "version": version}),
        );
        match state
            .store
            .rotate_secret(&row, current.version, &audit)
            .await
        {
            Ok(()) => return Ok(Json(secret_view(&row))),
            Err(StoreError::Conflict(_)) => continue,
            Err(e) => return Err(ApiError::for_object(e, "secret", shown)),
        }
    }
    Err(ApiError::Conflict(
        "the secret is being changed concurrently; retry".into(),
    ))
}

pub(crate) async fn update_by_name(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    Body(input): Body<SecretUpdate>,
) -> ApiResult<Json<Value>> {
    rotate(&state, &caller, SecretRef::Name(&name), &name, input).await
}

pub(crate) async fn update_by_id(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Body(input): Body<SecretUpdate>,
) -> ApiResult<Json<Value>> {
    rotate(&state, &caller, SecretRef::Id(&id), &id, input).await
}

async fn delete(
    state: &AppState,
    caller: &Caller,
    by: SecretRef<'_>,
    shown: &str,
) -> ApiResult<Json<Value>> {
    let row = fetch(state, caller, by, shown).await?;
    let audit = caller.audit(
        "secret.delete",
        "secret",
        row.id.as_str(),
        json!({"name": row.name.as_str()}),
    );
    state
        .store
        .delete_secret(
            &caller.account.id,
            &row.id,
            airlock_core::time::now_ms(),
            &audit,
        )
        .await
        .map_err(|e| ApiError::for_object(e, "secret", shown))?;
    Ok(Json(secret_view(&row)))
}

pub(crate) async fn delete_by_name(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    Body(_): Body<Empty>,
) -> ApiResult<Json<Value>> {
    delete(&state, &caller, SecretRef::Name(&name), &name).await
}

pub(crate) async fn delete_by_id(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Body(_): Body<Empty>,
) -> ApiResult<Json<Value>> {
    delete(&state, &caller, SecretRef::Id(&id), &id).await
}
