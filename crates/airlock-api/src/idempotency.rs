//! Idempotency: a POST that carries `Idempotency-Key` (or `x-request-id`, which
//! Stainless-generated SDKs send on their automatic retries) is done once; a repeat within 24
//! hours returns the first result and changes nothing.
//!
//! The key is claimed before the handler runs, so two concurrent requests with one key cannot
//! both act. Results below 500 are stored and replayed; a 5xx releases the key so that a retry
//! can succeed. A key reused with a different method, path or body is refused.
//!
//! Stored results are sealed with the keyring like secret values, because some of them (a
//! registered devbox's environment, a minted token) show a token once: a database dump must
//! not yield it.

use airlock_store::IdempotencyBegin;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, Method, StatusCode};
use http_body_util::BodyExt;
use ring::digest::{digest, SHA256};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::json::MAX_BODY;
use crate::AppState;

const MAX_KEY: usize = 255;
/// Responses larger than this are not stored (lists are GETs; writes answer small views).
const MAX_STORED_RESPONSE: usize = 1024 * 1024;

pub(crate) async fn idempotent(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if req.method() != Method::POST {
        return Ok(next.run(req).await);
    }
    let key = req
        .headers()
        .get("idempotency-key")
        .or_else(|| req.headers().get("x-request-id"))
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let Some(key) = key else {
        return Ok(next.run(req).await);
    };
    if key.is_empty() || key.len() > MAX_KEY {
        return Err(ApiError::Invalid(format!(
            "Idempotency-Key must be 1 to {MAX_KEY} characters"
        )));
    }
    let Some(caller) = req.extensions().get::<Caller>().cloned() else {
        return Err(ApiError::Internal);
    };
    let (parts, body) = req.into_parts();
    let bytes = http_body_util::Limited::new(body, MAX_BODY)
        .collect()
        .await
        .map_err(|_| {
            ApiError::TooLarge(format!("the request body must be at most {MAX_BODY} bytes"))
        })?
        .to_bytes();
    // The fingerprint binds the key to this API key too, so that another key of the account
    // (a launcher key, say) cannot read an admin's stored result by replaying its key.
    let mut material = Vec::with_capacity(bytes.len() + 64);
    material.extend_from_slice(caller.key.id.as_str().as_bytes());
    material.push(0);
    material.extend_from_slice(parts.method.as_str().as_bytes());
    material.push(0);
    material.extend_from_slice(parts.uri.path().as_bytes());
    material.push(0);
    material.extend_from_slice(&bytes);
    let fingerprint: String = digest(&SHA256, &material)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let account = &caller.account.id;
    let now = airlock_core::time::now_ms();
    match state
        .store
        .idempotency_begin(account, &key, &fingerprint, now)
        .await?
    {
        IdempotencyBegin::Proceed => {}
        IdempotencyBegin::Replay { status, body } => {
            let status = StatusCode::from_u16(status).map_err(|_| ApiError::Internal)?;
            let body = unseal(&state, account.as_str(), &key, &body)?;
            let mut resp = (
                status,
                [(http::header::CONTENT_TYPE, "application/json")],
                body,
            )
                .into_response();
            resp.headers_mut()
                .insert("idempotent-replayed", HeaderValue::from_static("true"));
            return Ok(resp);
        }
        IdempotencyBegin::InProgress => {
            return Err(ApiError::Conflict(
                "a request with this idempotency key is still being processed".into(),
            ))
        }
        IdempotencyBegin::Mismatch => {
            return Err(ApiError::Invalid(
                "this idempotency key was already used for a different request".into(),
            ))
        }
    }
    let resp = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    let (parts, body) = resp.into_parts();
    let collected = http_body_util::Limited::new(body, MAX_STORED_RESPONSE)
        .collect()
        .await;
    let outcome = match collected {
        Ok(c) => Some(c.to_bytes()),
        Err(_) => None,
    };
    match (&outcome, parts.status.is_server_error()) {
        (Some(b), false) => {
            let sealed = seal(&state, account.as_str(), &key, b)?;
            if let Err(e) = state
                .store
                .idempotency_complete(account, &key, parts.status.as_u16(), &sealed)
                .await
            {
                tracing::warn!(error = %e, "could not store an idempotent result");
            }
        }
        _ => {
            if let Err(e) = state.store.idempotency_abandon(account, &key).await {
                tracing::warn!(error = %e, "could not release an idempotency key");
            }
        }
    }
    let body = match outcome {
        Some(b) => Body::from(b),
        None => return Err(ApiError::Internal),
    };
    Ok(Response::from_parts(parts, body))
}

fn context<'a>(account: &'a str, key: &'a str) -> airlock_crypto::SecretContext<'a> {
    airlock_crypto::SecretContext {
        account_id: account,
        secret_id: key,
        version: -1,
    }
}

fn seal(state: &AppState, account: &str, key: &str, body: &[u8]) -> Result<String, ApiError> {
    use base64::Engine;
    let sealed = state
        .keyring
        .seal(&context(account, key), body)
        .map_err(|_| ApiError::Internal)?;
    Ok(base64::engine::general_purpose::STANDARD.encode(sealed))
}

fn unseal(state: &AppState, account: &str, key: &str, stored: &str) -> Result<Vec<u8>, ApiError> {
    use base64::Engine;
    let sealed = base64::engine::general_purpose::STANDARD
        .decode(stored)
        .map_err(|_| ApiError::Internal)?;
    let value = state
        .keyring
        .open(&context(account, key), &sealed)
        .map_err(|_| ApiError::Internal)?;
    Ok(value.expose().to_vec())
}
