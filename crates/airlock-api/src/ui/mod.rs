//! The operator console: `GET /ui/` on the control plane (contract "Dashboard", SECURITY #32).
//!
//! Server-rendered HTML ([`html`]) plus a small script for charts and live refresh; the assets
//! (that script, the style sheet and uPlot, MIT) are embedded in the binary. A page handler
//! calls the same handler functions the REST API routes to, with the session's caller, so the
//! console sees exactly what the API shows and changes go through the same validation, scope
//! checks and audit trail; it never calls the API over HTTP.
//!
//! Every request passes [`security_headers`] (a strict CSP: no inline script or style, nothing
//! from another origin; `nosniff`; no referrer; no framing). Every page but sign-in and the
//! assets passes [`guard`]: a valid signed session cookie ([`session`]) whose API key still
//! exists and is not revoked, else a redirect to sign-in; and for a POST, a same-origin request
//! (`Sec-Fetch-Site`, `Origin`) whose form carries the session's CSRF token.

mod data;
mod html;
mod pages;
mod session;

use std::net::SocketAddr;

use airlock_core::TokenDigest;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::middleware::{from_fn, from_fn_with_state, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use http::{header, HeaderMap, HeaderValue, Method, StatusCode};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::server::ServedOverTls;
use crate::AppState;

use self::session::{Session, COOKIE, LIFETIME_MS};

/// Largest form body the console reads.
const MAX_FORM: usize = 64 * 1024;

const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'";

/// The signed-in operator of a request, put into its extensions by [`guard`].
#[derive(Clone)]
pub(crate) struct Ui {
    pub caller: Caller,
    pub session: Session,
    /// This session's CSRF token, for the forms of the page.
    pub csrf: String,
    /// Whether the key may change things (admin scope): launcher keys get no change buttons,
    /// and the handlers refuse their changes anyway.
    pub admin: bool,
}

/// The fields of a POSTed form, parsed by [`guard`] (which checked its CSRF token).
#[derive(Clone, Default)]
pub(crate) struct Form(Vec<(String, String)>);

impl Form {
    /// The field's value, or empty text.
    pub(crate) fn get(&self, name: &str) -> &str {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map_or("", |(_, v)| v.as_str())
    }
}

/// The console's routes, merged into the API's router.
pub(crate) fn router(state: AppState) -> Router<AppState> {
    let guarded = Router::new()
        .route("/ui/", get(pages::overview))
        .route("/ui/sign-out", post(sign_out))
        .route(
            "/ui/gateways",
            get(pages::gateways).post(pages::create_gateway),
        )
        .route(
            "/ui/gateways/{id}",
            get(pages::gateway).post(pages::update_gateway),
        )
        .route(
            "/ui/secrets",
            get(pages::secrets).post(pages::create_secret),
        )
        .route("/ui/secrets/{name}/rotate", post(pages::rotate_secret))
        .route(
            "/ui/devboxes",
            get(pages::devboxes).post(pages::register_devbox),
        )
        .route("/ui/devboxes/{id}", get(pages::devbox))
        .route("/ui/devboxes/{id}/shutdown", post(pages::shutdown_devbox))
        .route("/ui/usage", get(pages::usage))
        .route("/ui/audit", get(pages::audit))
        .route("/ui/data/usage", get(data::usage))
        .route("/ui/data/traffic", get(data::traffic))
        .route("/ui/data/gateways/{id}/live", get(data::gateway_live))
        .layer(from_fn_with_state(state, guard));
    Router::new()
        .route("/ui", get(|| async { redirect("/ui/", None) }))
        .route("/ui/sign-in", get(sign_in_page).post(sign_in))
        .route("/ui/assets/{name}", get(asset))
        .merge(guarded)
        .layer(from_fn(security_headers))
}

/// A 303 to `to`, with a cookie to set.
fn redirect(to: &str, cookie: Option<String>) -> Response {
    let mut resp = (StatusCode::SEE_OTHER, [(header::LOCATION, to.to_owned())]).into_response();
    if let Some(cookie) = cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        resp.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    resp
}

/// An HTML page with a status.
fn page(status: StatusCode, html: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        html,
    )
        .into_response()
}

/// A refusal as a small page without the nav bar.
fn refusal(status: StatusCode, message: &str) -> Response {
    let body = "<p><a href=\"/ui/\">Back to the console</a></p>";
    page(status, html::layout(None, "", "Refused", message, body))
}

async fn security_headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

/// The session cookie's value, if the request has one.
fn cookie_value(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
}

/// Whether a state-changing request comes from this console's own pages. A browser says so in
/// `Sec-Fetch-Site`, which decides when present. Otherwise an `Origin` must be this host; under
/// `Referrer-Policy: no-referrer` browsers send `Origin: null` on every form POST, so `null`
/// (like no `Origin` at all, from clients that are not browsers) proves nothing either way and
/// the CSRF token alone decides.
fn same_origin(headers: &HeaderMap, tls: bool) -> bool {
    if let Some(site) = headers.get("sec-fetch-site") {
        return site.as_bytes() == b"same-origin";
    }
    let Some(origin) = headers
        .get(header::ORIGIN)
        .filter(|o| o.as_bytes() != b"null")
    else {
        return true;
    };
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let scheme = if tls { "https" } else { "http" };
    origin.as_bytes() == format!("{scheme}://{host}").as_bytes()
}

fn served_over_tls(req: &Request) -> bool {
    req.extensions().get::<ServedOverTls>().is_some_and(|t| t.0)
}

/// The operator of a session cookie: the key must still exist and not be revoked.
async fn resolve(state: &AppState, value: &str, client_addr: Option<SocketAddr>) -> Option<Ui> {
    let session = Session::open(&state.keyring, value, airlock_core::time::now_ms()).ok()?;
    let account = state.store.get_account(&session.account_id).await.ok()?;
    let key = state
        .store
        .get_api_key(&account.id, &session.api_key_id)
        .await
        .ok()?;
    let csrf = session.csrf_token(&state.keyring)?;
    let admin = key.scope == airlock_store::Scope::Admin;
    Some(Ui {
        caller: Caller {
            account,
            key,
            client_addr,
        },
        session,
        csrf,
        admin,
    })
}

/// Middleware of every page but sign-in and the assets (see the module's documentation).
async fn guard(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let client_addr = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let ui = match cookie_value(req.headers()) {
        Some(value) => resolve(&state, value, client_addr).await,
        None => None,
    };
    let Some(ui) = ui else {
        return redirect("/ui/sign-in", None);
    };
    let mut req = req;
    if req.method() == Method::POST {
        if !same_origin(req.headers(), served_over_tls(&req)) {
            return refusal(StatusCode::FORBIDDEN, "cross-origin request refused");
        }
        let (parts, body) = req.into_parts();
        let Ok(bytes) = axum::body::to_bytes(body, MAX_FORM).await else {
            return refusal(StatusCode::PAYLOAD_TOO_LARGE, "the form is too large");
        };
        let Ok(fields) = serde_urlencoded::from_bytes::<Vec<(String, String)>>(&bytes) else {
            return refusal(StatusCode::BAD_REQUEST, "the form does not parse");
        };
        let form = Form(fields);
        if !ui.session.check_csrf(&state.keyring, form.get("csrf")) {
            return refusal(
                StatusCode::FORBIDDEN,
                "the form's CSRF token is missing or wrong: reload the page and try again",
            );
        }
        req = Request::from_parts(parts, Body::empty());
        req.extensions_mut().insert(form);
    }
    req.extensions_mut().insert(ui);
    next.run(req).await
}

fn sign_in_html(message: &str) -> String {
    let body = "<form method=\"post\" action=\"/ui/sign-in\" class=\"card signin\" id=\"sign-in\">\
<label>API key <input type=\"password\" name=\"api_key\" id=\"api_key\" autocomplete=\"off\" required></label>\
<button type=\"submit\">Sign in</button>\
<p class=\"hint\">An admin key sees and changes everything of its account; a launcher key sees \
devboxes only. The key is not stored in the browser: the session cookie names it by id.</p></form>";
    html::layout(None, "", "Sign in to Airlock", message, body)
}

async fn sign_in_page(State(state): State<AppState>, req: Request) -> Response {
    if let Some(value) = cookie_value(req.headers()) {
        if resolve(&state, value, None).await.is_some() {
            return redirect("/ui/", None);
        }
    }
    page(StatusCode::OK, sign_in_html(""))
}

/// `POST /ui/sign-in`: checks the key as the API's bearer authentication does and sets the
/// session cookie.
async fn sign_in(State(state): State<AppState>, headers: HeaderMap, req: Request) -> Response {
    let tls = served_over_tls(&req);
    if !same_origin(&headers, tls) {
        return refusal(StatusCode::FORBIDDEN, "cross-origin request refused");
    }
    let Ok(bytes): Result<Bytes, _> = axum::body::to_bytes(req.into_body(), MAX_FORM).await else {
        return refusal(StatusCode::PAYLOAD_TOO_LARGE, "the form is too large");
    };
    let form = Form(serde_urlencoded::from_bytes(&bytes).unwrap_or_default());
    let presented = form.get("api_key").trim();
    let found = if presented.is_empty() || presented.len() > crate::auth::MAX_KEY_LEN {
        None
    } else {
        match state
            .store
            .api_key_by_digest(&TokenDigest::of(presented))
            .await
        {
            Ok(found) => found,
            Err(e) => {
                let e = ApiError::from(e);
                return page(
                    StatusCode::SERVICE_UNAVAILABLE,
                    sign_in_html(&e.to_string()),
                );
            }
        }
    };
    let Some((key, account)) = found else {
        return page(StatusCode::UNAUTHORIZED, sign_in_html("invalid API key"));
    };
    let session = Session {
        api_key_id: key.id.as_str().to_owned(),
        account_id: account.id.as_str().to_owned(),
        expire_time_ms: airlock_core::time::now_ms() + LIFETIME_MS,
    };
    let Some(value) = session.seal(&state.keyring) else {
        return refusal(StatusCode::INTERNAL_SERVER_ERROR, "internal error");
    };
    redirect("/ui/", Some(set_cookie(&value, LIFETIME_MS / 1000, tls)))
}

/// The `Set-Cookie` value of a session (an empty value with `max_age` 0 clears it): only for
/// `/ui`, out of reach of scripts, never sent from another site, and over TLS only when the
/// console is served over TLS.
fn set_cookie(value: &str, max_age: i64, tls: bool) -> String {
    let secure = if tls { "; Secure" } else { "" };
    format!("{COOKIE}={value}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}")
}

/// `POST /ui/sign-out`: clears the cookie.
async fn sign_out(req: Request) -> Response {
    redirect(
        "/ui/sign-in",
        Some(set_cookie("", 0, served_over_tls(&req))),
    )
}

/// The embedded assets: name, content type, bytes.
const ASSETS: [(&str, &str, &[u8]); 4] = [
    (
        "console.js",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/console.js"),
    ),
    (
        "console.css",
        "text/css; charset=utf-8",
        include_bytes!("assets/console.css"),
    ),
    (
        "uPlot.iife.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/uPlot.iife.min.js"),
    ),
    (
        "uPlot.min.css",
        "text/css; charset=utf-8",
        include_bytes!("assets/uPlot.min.css"),
    ),
];

async fn asset(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|(n, _, _)| *n == name) {
        Some((_, content_type, bytes)) => (
            [
                (header::CONTENT_TYPE, *content_type),
                // Not versioned by URL, so cached for an hour, not for ever.
                (header::CACHE_CONTROL, "public, max-age=3600"),
            ],
            *bytes,
        )
            .into_response(),
        None => refusal(StatusCode::NOT_FOUND, "no such asset"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each case: `Sec-Fetch-Site`, `Origin`, whether the request passes (on plain HTTP to
    /// `console.example:8080`).
    #[test]
    fn same_origin_checks() {
        let cases: [(Option<&str>, Option<&str>, bool); 9] = [
            (Some("same-origin"), None, true),
            (Some("same-origin"), Some("null"), true),
            (Some("cross-site"), None, false),
            (
                Some("same-site"),
                Some("http://console.example:8080"),
                false,
            ),
            (Some("none"), None, false),
            (None, Some("http://console.example:8080"), true),
            (None, Some("https://console.example:8080"), false),
            (None, Some("http://evil.example"), false),
            (None, None, true),
        ];
        for (site, origin, want) in cases {
            let mut h = HeaderMap::new();
            h.insert(
                header::HOST,
                HeaderValue::from_static("console.example:8080"),
            );
            if let Some(s) = site {
                h.insert("sec-fetch-site", HeaderValue::from_str(s).unwrap());
            }
            if let Some(o) = origin {
                h.insert(header::ORIGIN, HeaderValue::from_str(o).unwrap());
            }
            assert_eq!(same_origin(&h, false), want, "{site:?} {origin:?}");
        }
    }

    #[test]
    fn cookies_are_secure_over_tls() {
        assert_eq!(
            set_cookie("v.t", 60, true),
            "airlock_console=v.t; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=60; Secure"
        );
        assert_eq!(
            set_cookie("", 0, false),
            "airlock_console=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0"
        );
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; airlock_console=v.t; b=2"),
        );
        assert_eq!(cookie_value(&h), Some("v.t"));
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("airlock_consolex=1"),
        );
        assert_eq!(cookie_value(&h), None);
    }
}
