//! Who is calling: the API key in `Authorization: Bearer …`, its account and its scope.

use std::net::SocketAddr;

use airlock_core::TokenDigest;
use airlock_store::{AccountRow, ApiKeyRow, AuditRow, Scope};
use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::Response;

use crate::error::ApiError;
use crate::AppState;

/// Longest bearer value considered; anything longer is not a key of ours.
pub(crate) const MAX_KEY_LEN: usize = 256;

/// The authenticated caller, put into request extensions by [`authenticate`].
#[derive(Clone, Debug)]
pub struct Caller {
    pub account: AccountRow,
    pub key: ApiKeyRow,
    pub client_addr: Option<SocketAddr>,
}

impl Caller {
    /// Refuses launcher keys on calls that need an admin key.
    pub(crate) fn require_admin(&self) -> Result<(), ApiError> {
        match self.key.scope {
            Scope::Admin => Ok(()),
            Scope::Launcher => Err(ApiError::Forbidden(
                "this call needs an admin API key; this key has the launcher scope".into(),
            )),
        }
    }

    /// Refuses callers whose account is not an operator account.
    pub(crate) fn require_operator(&self) -> Result<(), ApiError> {
        self.require_admin()?;
        if self.account.operator {
            Ok(())
        } else {
            Err(ApiError::Forbidden(
                "this call needs an admin key of the operator account".into(),
            ))
        }
    }

    /// An audit row for an action by this caller.
    pub(crate) fn audit(
        &self,
        action: &str,
        object_type: &str,
        object_id: &str,
        detail: serde_json::Value,
    ) -> AuditRow {
        AuditRow {
            id: airlock_core::AuditId::generate().into_string(),
            time_ms: airlock_core::time::now_ms(),
            account_id: self.account.id.clone(),
            api_key_id: Some(self.key.id.clone()),
            action: action.to_owned(),
            object_type: object_type.to_owned(),
            object_id: object_id.to_owned(),
            detail: detail.to_string(),
            client_addr: self.client_addr.map(|a| a.ip().to_string()),
        }
    }
}

/// Middleware: resolves the API key or answers 401.
pub(crate) async fn authenticate(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let presented = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        })
        .filter(|k| !k.is_empty())
        .ok_or_else(|| {
            ApiError::Unauthenticated("missing API key: send Authorization: Bearer <key>".into())
        })?;
    if presented.len() > MAX_KEY_LEN {
        return Err(ApiError::Unauthenticated("invalid API key".into()));
    }
    let digest = TokenDigest::of(presented);
    let (key, account) = state
        .store
        .api_key_by_digest(&digest)
        .await?
        .ok_or_else(|| ApiError::Unauthenticated("invalid API key".into()))?;
    let client_addr = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    req.extensions_mut().insert(Caller {
        account,
        key,
        client_addr,
    });
    Ok(next.run(req).await)
}
