//! The API's one error type and its wire shape.
//!
//! `{"type": "error", "error": {"type": "...", "code": "...", "message": "..."}}` is readable by
//! OpenAI-style and Anthropic-style clients alike. Messages never contain a secret value or a
//! token: they name fields and ids only.

use airlock_core::InvalidInput;
use airlock_store::StoreError;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("this method is not allowed on this path")]
    MethodNotAllowed,
    #[error("the database is unavailable; retry later")]
    Unavailable,
    #[error("internal error")]
    Internal,
    /// A router's live state lives in the data plane; this process runs none.
    #[error("this process runs no data plane; ask a process that serves both planes")]
    NoDataPlane,
}

impl ApiError {
    fn parts(&self) -> (StatusCode, &'static str, &'static str) {
        match self {
            ApiError::Invalid(_) => (
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "invalid_request",
            ),
            ApiError::Unauthenticated(_) => (
                StatusCode::UNAUTHORIZED,
                "authentication_error",
                "unauthenticated",
            ),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "permission_error", "forbidden"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found_error", "not_found"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict_error", "conflict"),
            ApiError::TooLarge(_) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request_error",
                "request_too_large",
            ),
            ApiError::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "invalid_request_error",
                "method_not_allowed",
            ),
            ApiError::Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "api_error",
                "database_unavailable",
            ),
            ApiError::Internal => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "api_error",
                "internal_error",
            ),
            ApiError::NoDataPlane => (
                StatusCode::SERVICE_UNAVAILABLE,
                "api_error",
                "no_data_plane",
            ),
        }
    }

    /// A store error about one object: `NotFound` names the object (`devbox dbx_… not found`),
    /// everything else maps as usual.
    pub(crate) fn for_object(e: StoreError, what: &str, id: &str) -> Self {
        match e {
            StoreError::NotFound => ApiError::not_found(what, id),
            other => other.into(),
        }
    }

    pub fn not_found(what: &str, id: &str) -> Self {
        // Ids and names are echoed back; they are not secret, and the client sent them.
        ApiError::NotFound(format!("{what} {id} not found"))
    }
}

impl From<InvalidInput> for ApiError {
    fn from(e: InvalidInput) -> Self {
        ApiError::Invalid(e.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => ApiError::NotFound("not found".into()),
            StoreError::Conflict(m) => ApiError::Conflict(m),
            StoreError::Refused(m) => ApiError::Invalid(m),
            StoreError::Unavailable(detail) => {
                tracing::warn!(error = %detail, "database unavailable");
                ApiError::Unavailable
            }
            StoreError::Corrupt(detail) | StoreError::Config(detail) => {
                tracing::error!(error = %detail, "store error");
                ApiError::Internal
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, kind, code) = self.parts();
        let body = json!({"type": "error", "error": {"type": kind, "code": code, "message": self.to_string()}});
        (status, axum::Json(body)).into_response()
    }
}

pub(crate) type ApiResult<T> = Result<T, ApiError>;
