//! Airlock's control plane: the REST API on `AIRLOCK_API_ADDR`.
//!
//! A request passes [`auth::authenticate`] (API key → caller and account), then
//! [`idempotency::idempotent`] (POSTs with a key run once), then a thin handler that parses the
//! body into domain types, calls the store and renders a view. Every write records an audit
//! event in the same transaction. Tenancy: every query is scoped by the caller's account, so
//! another account's objects are simply not found.

mod admin;
mod auth;
mod devboxes;
mod error;
mod gateways;
mod idempotency;
mod json;
mod limits;
mod metrics;
mod providers;
mod routers;
mod secrets;
mod server;
mod ui;
mod usage;
mod wire;

use std::future::Future;
use std::sync::Arc;

use airlock_core::UpstreamPolicy;
use airlock_crypto::Keyring;
use airlock_store::{Page, Store};
use axum::extract::State;
use axum::middleware::from_fn_with_state;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, MethodRouter};
use axum::{Json, Router};
use http::StatusCode;
use serde_json::json;

pub use admin::{bootstrap, Bootstrap};
pub use auth::Caller;
pub use error::ApiError;
pub use metrics::ApiMetrics;
pub use server::ServeOptions;

use crate::error::ApiResult;
use crate::wire::ListQuery;

/// Default and largest page sizes (the contract's).
const DEFAULT_LIMIT: i64 = 20;
const MAX_LIMIT: i64 = 5000;

/// Everything a handler needs. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub keyring: Arc<Keyring>,
    /// The base URL sandboxes use to reach the data plane (`AIRLOCK_PUBLIC_URL`).
    pub public_url: String,
    pub policy: UpstreamPolicy,
    /// Whether the data plane in this process has loaded its state (always true when this
    /// process runs the control plane alone).
    pub data_plane_ready: Arc<dyn Fn() -> bool + Send + Sync>,
    /// Whether the process is shutting down: `/readyz` answers 503 from that moment, so load
    /// balancers stop sending new work while open requests finish.
    pub draining: Arc<dyn Fn() -> bool + Send + Sync>,
    /// Requests by route template and status (`airlock_api_requests_total`).
    pub metrics: ApiMetrics,
    /// The data plane in this process, for its routers' live status; `None` in a control-only
    /// process (those endpoints answer 503 `no_data_plane`).
    pub routers: Option<Arc<dyn airlock_core::router::RouterInspector>>,
}

/// Every route under `/v1` that takes an API key, in one table: the OpenAPI document is checked
/// against it (see the tests below).
fn v1_routes() -> Vec<(&'static str, MethodRouter<AppState>)> {
    vec![
        (
            "/gateway-configs",
            post(gateways::create).get(gateways::list),
        ),
        (
            "/gateway-configs/{id}",
            get(gateways::get).post(gateways::update),
        ),
        ("/gateway-configs/{id}/delete", post(gateways::delete)),
        ("/gateway-configs/{id}/status", get(routers::status)),
        (
            "/gateway-configs/{id}/routing-log",
            get(routers::routing_log),
        ),
        (
            "/gateway-configs/{id}/route-preview",
            post(routers::preview),
        ),
        ("/providers", get(providers::list)),
        ("/usage", get(usage::get)),
        ("/secrets", post(secrets::create).get(secrets::list)),
        (
            "/secrets/{name}",
            get(secrets::get_by_name).post(secrets::update_by_name),
        ),
        ("/secrets/{name}/delete", post(secrets::delete_by_name)),
        ("/secrets/id/{id}", get(secrets::get_by_id)),
        ("/secrets/id/{id}/update", post(secrets::update_by_id)),
        ("/secrets/id/{id}/delete", post(secrets::delete_by_id)),
        ("/devboxes", post(devboxes::register).get(devboxes::list)),
        ("/devboxes/{id}", get(devboxes::get).post(devboxes::update)),
        ("/devboxes/{id}/shutdown", post(devboxes::shutdown)),
        (
            "/devboxes/{id}/create_gateway_token",
            post(devboxes::create_gateway_token),
        ),
        ("/devboxes/{id}/gateway_tokens", get(devboxes::list_tokens)),
        (
            "/devboxes/{id}/gateway_tokens/{token_id}/revoke",
            post(devboxes::revoke_token),
        ),
        (
            "/accounts",
            post(admin::create_account).get(admin::list_accounts),
        ),
        (
            "/api-keys",
            post(admin::create_api_key).get(admin::list_api_keys),
        ),
        ("/api-keys/{id}/revoke", post(admin::revoke_api_key)),
        ("/audit/events", get(admin::list_audit_events)),
        ("/audit/requests", get(admin::list_request_events)),
        ("/devboxes/{id}/limits", get(limits::devbox_status)),
        ("/gateway-configs/{id}/limits", get(limits::gateway_status)),
        (
            "/account/limits",
            get(limits::account_status).post(limits::set_account),
        ),
    ]
}

/// The routes outside `/v1`'s authentication, besides `/v1/openapi.json`.
const OPEN_ROUTES: [&str; 3] = ["/healthz", "/readyz", "/v1/openapi.json"];

/// The whole API as a router.
pub fn router(state: AppState) -> Router {
    let v1 = v1_routes()
        .into_iter()
        .fold(Router::new(), |r, (path, route)| r.route(path, route))
        .layer(from_fn_with_state(state.clone(), idempotency::idempotent))
        .layer(from_fn_with_state(state.clone(), auth::authenticate));
    Router::new()
        .nest("/v1", v1)
        .route(
            OPEN_ROUTES[0],
            get(|| async { Json(json!({"status": "ok"})) }),
        )
        .route(OPEN_ROUTES[1], get(readyz))
        .route(OPEN_ROUTES[2], get(openapi))
        .merge(ui::router(state.clone()))
        .fallback(|| async { ApiError::NotFound("no such endpoint".into()) })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(axum::extract::DefaultBodyLimit::max(json::MAX_BODY))
        // Outermost, so that every answer is counted, refusals by the layers above included.
        .layer(from_fn_with_state(state.clone(), metrics::count))
        .with_state(state)
}

async fn readyz(State(state): State<AppState>) -> Response {
    let draining = (state.draining)();
    let db = state.store.ping().await.is_ok();
    let data_plane = (state.data_plane_ready)();
    let status = if db && data_plane && !draining {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({"database": db, "data_plane_loaded": data_plane, "draining": draining})),
    )
        .into_response()
}

/// The OpenAPI document of this API.
static OPENAPI: &str = include_str!("openapi.json");

async fn openapi() -> Response {
    ([(http::header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

/// Serves the API on a bound listener until `shutdown` resolves, then stops accepting and
/// lets open requests finish (up to `options.grace`). HTTP/1.1 and HTTP/2, over TLS when
/// `options.tls` is set.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    server::serve(listener, router(state), options, shutdown).await
}

/// Parses the paging part of a list query.
pub(crate) fn page(q: &ListQuery) -> ApiResult<Page> {
    let limit = match q.limit.as_deref() {
        None | Some("") => DEFAULT_LIMIT,
        Some(text) => match text.parse::<i64>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
            _ => {
                return Err(ApiError::Invalid(format!(
                    "limit: must be an integer from 1 to {MAX_LIMIT}"
                )))
            }
        },
    };
    let include_total_count = match q.include_total_count.as_deref() {
        None | Some("") | Some("true") | Some("1") => true,
        Some("false") | Some("0") => false,
        Some(_) => {
            return Err(ApiError::Invalid(
                "include_total_count: must be true or false".into(),
            ))
        }
    };
    Ok(Page {
        limit,
        starting_after: q.starting_after.clone().filter(|s| !s.is_empty()),
        include_total_count,
    })
}

/// Parses an optional integer query parameter.
pub(crate) fn int_param(name: &str, value: &Option<String>) -> ApiResult<Option<i64>> {
    value
        .as_deref()
        .filter(|v| !v.is_empty())
        .map(|v| {
            v.parse::<i64>()
                .map_err(|_| ApiError::Invalid(format!("{name}: must be an integer")))
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// The OpenAPI document describes exactly the routes the router serves: a route added
    /// without its description, or a description left behind, fails here. (Methods are checked
    /// against the running router in `tests/api.rs`.)
    #[test]
    fn openapi_documents_every_route() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).unwrap();
        let documented: BTreeSet<String> =
            doc["paths"].as_object().unwrap().keys().cloned().collect();
        let served: BTreeSet<String> = v1_routes()
            .into_iter()
            .map(|(path, _)| format!("/v1{path}"))
            .chain(OPEN_ROUTES.iter().map(|p| (*p).to_owned()))
            .collect();
        assert_eq!(documented, served);
    }
}
