//! The data plane's one error type, and the one place where an error becomes a response.
//!
//! Every refusal or failure on the request path is a [`ProxyError`]. It knows where the fault
//! lies ([`Origin`]): the client (downstream), the upstream, or Airlock itself.
//! [`ProxyError::describe`] maps each kind to its status, its stable [`Code`] (sent as
//! `x-airlock-error` and in the JSON body) and the OpenAI/Anthropic-style error `type`, so that
//! SDKs of either family read it.
//!
//! Messages are fixed texts: nothing from the request (a token, a path, a header) and nothing
//! from the state (a secret) is ever put into one.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};

/// Where a failure came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The request was refused: the client has to change something.
    Downstream,
    /// The upstream could not be reached, refused the TLS handshake or did not answer.
    Upstream,
    /// Airlock itself (its state, its configuration).
    Internal,
}

/// Why a dial to the upstream was refused before any byte was sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Forbidden {
    /// The name resolved to an address the upstream policy does not allow.
    Policy(airlock_core::endpoint::DialRefused),
    /// The name resolved to one of Airlock's own listeners.
    OwnListener,
}

/// Everything that can go wrong between accepting a request and streaming its response.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("no gateway token was sent")]
    MissingToken,
    #[error("the gateway token is malformed")]
    MalformedToken,
    #[error("the gateway token is not known")]
    UnknownToken,
    #[error("the gateway token has been revoked")]
    RevokedToken,
    #[error("the gateway token has expired")]
    ExpiredToken,
    #[error("the request carries two different gateway tokens")]
    ConflictingTokens,
    #[error("a gateway token appears outside the headers that carry it")]
    MisplacedToken,
    #[error("the devbox of this token is shut down")]
    DevboxShutdown,
    #[error("the request comes from an address that this devbox does not allow")]
    AddressNotAllowed,
    /// A scoped token used with a method or path outside its scope.
    #[error("this gateway token does not allow this method or path")]
    TokenScope,
    #[error("{0}")]
    BadPath(&'static str),
    /// `CONNECT`, `TRACE` or `TRACK`; the text says which and why.
    #[error("{0}")]
    MethodNotAllowed(&'static str),
    /// A method longer than any real one (`rewrite::MAX_METHOD`).
    #[error("the request method is too long")]
    BadMethod,
    #[error("the request headers are larger than allowed")]
    HeadersTooLarge,
    /// The client's body broke off while a stage read it ahead.
    #[error("the request body could not be read")]
    ClientBodyFailed,
    #[error("websocket upgrades are not supported over this connection")]
    WebsocketUnsupported,
    #[error("the data plane has not loaded its state yet")]
    StateNotLoaded,
    #[error("the data plane cannot check this token right now; retry shortly")]
    StateUnavailable,
    #[error("the secret of this gateway cannot be used")]
    SecretUnavailable,
    #[error("the gateway config of this token is not available")]
    GatewayUnavailable,
    /// The config in the database does not match the binding the control plane made for it.
    #[error("the gateway config of this token failed its integrity check; nothing was sent")]
    GatewayUnverified,
    #[error("the upstream address is not allowed")]
    UpstreamForbidden(Forbidden),
    #[error("the upstream cannot be reached")]
    UpstreamUnreachable,
    #[error("the upstream's TLS certificate or handshake was refused")]
    UpstreamTls,
    #[error("connecting to the upstream timed out")]
    UpstreamConnectTimeout,
    #[error("the upstream did not answer in time")]
    UpstreamTimeout,
    #[error("the connection to the upstream failed before a response arrived")]
    UpstreamFailed,
    /// `AIRLOCK_UPSTREAM_MAX_CONCURRENCY` requests are already in flight to this upstream.
    #[error("too many requests are in flight to this upstream; retry shortly")]
    UpstreamBusy(std::time::Duration),
    /// Over a budget or rate limit (`docs/limits.md`); its window resets after the duration.
    #[error("this request is over the limit {}; retry later", .0.as_str())]
    LimitExceeded(airlock_core::LimitKind, std::time::Duration),
    /// A limit's lease is spent and its ledger cannot be reached (`AIRLOCK_LIMITS_ON_OUTAGE`).
    #[error("the limits of this request cannot be checked right now; retry shortly")]
    LimitsUnavailable,
    /// The devbox is over `AIRLOCK_DEVBOX_RATE_LIMIT`; retry after the duration.
    #[error("this devbox is over its request rate limit; retry later")]
    RateLimited(std::time::Duration),
    #[error("internal error: {0}")]
    Internal(&'static str),
    /// A setting the data plane cannot start with (only from [`crate::start`]).
    #[error("{0}")]
    Config(String),
}

/// The header that names Airlock's own error in an answer it made.
pub(crate) const X_AIRLOCK_ERROR: http::HeaderName =
    http::HeaderName::from_static("x-airlock-error");
/// An error's stable, machine-readable name: the `x-airlock-error` header and `error.code`.
///
/// The refusal metrics keep one counter per code, at the index `code as usize`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Code {
    MissingToken,
    MalformedToken,
    UnknownToken,
    RevokedToken,
    ExpiredToken,
    ConflictingTokens,
    MisplacedToken,
    DevboxShutdown,
    AddressNotAllowed,
    TokenScope,
    BadPath,
    MethodNotAllowed,
    BadMethod,
    HeadersTooLarge,
    BadRequestBody,
    WebsocketUnsupported,
    StateNotLoaded,
    StateUnavailable,
    SecretUnavailable,
    GatewayUnavailable,
    GatewayUnverified,
    UpstreamForbidden,
    UpstreamUnreachable,
    UpstreamTls,
    UpstreamTimeout,
    UpstreamFailed,
    UpstreamBusy,
    RateLimited,
    InternalError,
    LimitExceeded,
    LimitsUnavailable,
}

impl Code {
    /// Every code, in declaration order (so that `Code::ALL[code as usize] == code`).
    pub const ALL: [Code; 31] = [
        Code::MissingToken,
        Code::MalformedToken,
        Code::UnknownToken,
        Code::RevokedToken,
        Code::ExpiredToken,
        Code::ConflictingTokens,
        Code::MisplacedToken,
        Code::DevboxShutdown,
        Code::AddressNotAllowed,
        Code::TokenScope,
        Code::BadPath,
        Code::MethodNotAllowed,
        Code::BadMethod,
        Code::HeadersTooLarge,
        Code::BadRequestBody,
        Code::WebsocketUnsupported,
        Code::StateNotLoaded,
        Code::StateUnavailable,
        Code::SecretUnavailable,
        Code::GatewayUnavailable,
        Code::GatewayUnverified,
        Code::UpstreamForbidden,
        Code::UpstreamUnreachable,
        Code::UpstreamTls,
        Code::UpstreamTimeout,
        Code::UpstreamFailed,
        Code::UpstreamBusy,
        Code::RateLimited,
        Code::InternalError,
        Code::LimitExceeded,
        Code::LimitsUnavailable,
    ];

    /// The code as it is sent.
    pub const fn as_str(self) -> &'static str {
        match self {
            Code::MissingToken => "missing_token",
            Code::MalformedToken => "malformed_token",
            Code::UnknownToken => "unknown_token",
            Code::RevokedToken => "revoked_token",
            Code::ExpiredToken => "expired_token",
            Code::ConflictingTokens => "conflicting_tokens",
            Code::MisplacedToken => "misplaced_token",
            Code::DevboxShutdown => "devbox_shutdown",
            Code::AddressNotAllowed => "address_not_allowed",
            Code::TokenScope => "token_scope",
            Code::BadPath => "bad_path",
            Code::MethodNotAllowed => "method_not_allowed",
            Code::BadMethod => "bad_method",
            Code::HeadersTooLarge => "headers_too_large",
            Code::BadRequestBody => "bad_request_body",
            Code::WebsocketUnsupported => "websocket_unsupported",
            Code::StateNotLoaded => "state_not_loaded",
            Code::StateUnavailable => "state_unavailable",
            Code::SecretUnavailable => "secret_unavailable",
            Code::GatewayUnavailable => "gateway_unavailable",
            Code::GatewayUnverified => "gateway_unverified",
            Code::UpstreamForbidden => "upstream_forbidden",
            Code::UpstreamUnreachable => "upstream_unreachable",
            Code::UpstreamTls => "upstream_tls",
            Code::UpstreamTimeout => "upstream_timeout",
            Code::UpstreamFailed => "upstream_failed",
            Code::UpstreamBusy => "upstream_busy",
            Code::RateLimited => "rate_limited",
            Code::InternalError => "internal_error",
            Code::LimitExceeded => "limit_exceeded",
            Code::LimitsUnavailable => "limits_unavailable",
        }
    }
}

// `Code::ALL` is in declaration order, so that a code's discriminant is its index there.
const _: () = {
    let mut i = 0;
    while i < Code::ALL.len() {
        assert!(Code::ALL[i] as usize == i);
        i += 1;
    }
};

/// What an error turns into on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Described {
    pub origin: Origin,
    pub status: StatusCode,
    /// Stable, machine-readable; the `x-airlock-error` header and `error.code`.
    pub code: Code,
    /// The error family in OpenAI/Anthropic terms: `error.type`.
    pub kind: &'static str,
}

impl ProxyError {
    /// The single mapping from an error to its origin, status, code and type.
    pub fn describe(&self) -> Described {
        use Origin::{Downstream, Internal, Upstream};
        const AUTH: &str = "authentication_error";
        const PERMISSION: &str = "permission_error";
        const INVALID: &str = "invalid_request_error";
        const API: &str = "api_error";
        let (origin, status, code, kind) = match self {
            Self::MissingToken => (
                Downstream,
                StatusCode::UNAUTHORIZED,
                Code::MissingToken,
                AUTH,
            ),
            Self::MalformedToken => (
                Downstream,
                StatusCode::UNAUTHORIZED,
                Code::MalformedToken,
                AUTH,
            ),
            Self::UnknownToken => (
                Downstream,
                StatusCode::UNAUTHORIZED,
                Code::UnknownToken,
                AUTH,
            ),
            Self::RevokedToken => (
                Downstream,
                StatusCode::UNAUTHORIZED,
                Code::RevokedToken,
                AUTH,
            ),
            Self::ExpiredToken => (
                Downstream,
                StatusCode::UNAUTHORIZED,
                Code::ExpiredToken,
                AUTH,
            ),
            Self::ConflictingTokens => (
                Downstream,
                StatusCode::BAD_REQUEST,
                Code::ConflictingTokens,
                INVALID,
            ),
            Self::MisplacedToken => (
                Downstream,
                StatusCode::BAD_REQUEST,
                Code::MisplacedToken,
                INVALID,
            ),
            Self::DevboxShutdown => (
                Downstream,
                StatusCode::FORBIDDEN,
                Code::DevboxShutdown,
                PERMISSION,
            ),
            Self::AddressNotAllowed => (
                Downstream,
                StatusCode::FORBIDDEN,
                Code::AddressNotAllowed,
                PERMISSION,
            ),
            Self::TokenScope => (
                Downstream,
                StatusCode::FORBIDDEN,
                Code::TokenScope,
                PERMISSION,
            ),
            Self::BadPath(_) => (Downstream, StatusCode::BAD_REQUEST, Code::BadPath, INVALID),
            Self::MethodNotAllowed(_) => (
                Downstream,
                StatusCode::METHOD_NOT_ALLOWED,
                Code::MethodNotAllowed,
                INVALID,
            ),
            Self::BadMethod => (
                Downstream,
                StatusCode::BAD_REQUEST,
                Code::BadMethod,
                INVALID,
            ),
            Self::ClientBodyFailed => (
                Downstream,
                StatusCode::BAD_REQUEST,
                Code::BadRequestBody,
                INVALID,
            ),
            Self::HeadersTooLarge => (
                Downstream,
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                Code::HeadersTooLarge,
                INVALID,
            ),
            Self::WebsocketUnsupported => (
                Downstream,
                StatusCode::NOT_IMPLEMENTED,
                Code::WebsocketUnsupported,
                INVALID,
            ),
            Self::StateNotLoaded => (
                Internal,
                StatusCode::SERVICE_UNAVAILABLE,
                Code::StateNotLoaded,
                API,
            ),
            Self::StateUnavailable => (
                Internal,
                StatusCode::SERVICE_UNAVAILABLE,
                Code::StateUnavailable,
                API,
            ),
            Self::SecretUnavailable => (
                Internal,
                StatusCode::BAD_GATEWAY,
                Code::SecretUnavailable,
                API,
            ),
            Self::GatewayUnavailable => (
                Internal,
                StatusCode::BAD_GATEWAY,
                Code::GatewayUnavailable,
                API,
            ),
            Self::GatewayUnverified => (
                Internal,
                StatusCode::BAD_GATEWAY,
                Code::GatewayUnverified,
                API,
            ),
            Self::UpstreamForbidden(_) => (
                Upstream,
                StatusCode::BAD_GATEWAY,
                Code::UpstreamForbidden,
                API,
            ),
            Self::UpstreamUnreachable => (
                Upstream,
                StatusCode::BAD_GATEWAY,
                Code::UpstreamUnreachable,
                API,
            ),
            Self::UpstreamTls => (Upstream, StatusCode::BAD_GATEWAY, Code::UpstreamTls, API),
            Self::UpstreamConnectTimeout | Self::UpstreamTimeout => (
                Upstream,
                StatusCode::GATEWAY_TIMEOUT,
                Code::UpstreamTimeout,
                API,
            ),
            Self::UpstreamFailed => (Upstream, StatusCode::BAD_GATEWAY, Code::UpstreamFailed, API),
            Self::UpstreamBusy(_) => (
                Upstream,
                StatusCode::SERVICE_UNAVAILABLE,
                Code::UpstreamBusy,
                API,
            ),
            Self::RateLimited(_) => (
                Downstream,
                StatusCode::TOO_MANY_REQUESTS,
                Code::RateLimited,
                "rate_limit_error",
            ),
            Self::LimitExceeded(..) => (
                Downstream,
                StatusCode::TOO_MANY_REQUESTS,
                Code::LimitExceeded,
                "rate_limit_error",
            ),
            Self::LimitsUnavailable => (
                Internal,
                StatusCode::SERVICE_UNAVAILABLE,
                Code::LimitsUnavailable,
                API,
            ),
            Self::Internal(_) | Self::Config(_) => (
                Internal,
                StatusCode::INTERNAL_SERVER_ERROR,
                Code::InternalError,
                API,
            ),
        };
        Described {
            origin,
            status,
            code,
            kind,
        }
    }

    /// The JSON error response of the contract, with `x-airlock-error`.
    pub(crate) fn to_response<B>(&self, body: impl FnOnce(Bytes) -> B) -> Response<B> {
        let d = self.describe();
        let message = match self {
            Self::UpstreamForbidden(Forbidden::Policy(refused)) => refused.to_string(),
            Self::UpstreamForbidden(Forbidden::OwnListener) => {
                "the upstream resolves to one of airlock's own listeners".to_owned()
            }
            other => other.to_string(),
        };
        let json = serde_json::json!({
            "type": "error",
            "error": { "type": d.kind, "code": d.code.as_str(), "message": message },
        });
        let mut response = Response::new(body(Bytes::from(json.to_string())));
        *response.status_mut() = d.status;
        let headers = response.headers_mut();
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(&X_AIRLOCK_ERROR, HeaderValue::from_static(d.code.as_str()));
        if let Self::UpstreamBusy(wait) | Self::RateLimited(wait) | Self::LimitExceeded(_, wait) =
            self
        {
            // Whole seconds (RFC 9110), rounded up, at least 1: the SDKs' retry loops read it.
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            headers.insert(http::header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        if d.status == StatusCode::METHOD_NOT_ALLOWED {
            // RFC 9110 requires Allow on 405; every method but CONNECT, TRACE and TRACK is
            // proxied.
            headers.insert(
                http::header::ALLOW,
                HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_has_a_lower_case_message_and_a_json_body() {
        for err in [
            ProxyError::MissingToken,
            ProxyError::MalformedToken,
            ProxyError::UnknownToken,
            ProxyError::RevokedToken,
            ProxyError::ExpiredToken,
            ProxyError::ConflictingTokens,
            ProxyError::MisplacedToken,
            ProxyError::DevboxShutdown,
            ProxyError::AddressNotAllowed,
            ProxyError::TokenScope,
            ProxyError::BadPath("the path must not contain dot segments"),
            ProxyError::MethodNotAllowed("CONNECT is not supported"),
            ProxyError::MethodNotAllowed("TRACE and TRACK are not forwarded"),
            ProxyError::BadMethod,
            ProxyError::HeadersTooLarge,
            ProxyError::StateNotLoaded,
            ProxyError::SecretUnavailable,
            ProxyError::GatewayUnverified,
            ProxyError::UpstreamForbidden(Forbidden::OwnListener),
            ProxyError::UpstreamTimeout,
            ProxyError::UpstreamBusy(std::time::Duration::from_secs(1)),
            ProxyError::RateLimited(std::time::Duration::from_millis(1500)),
            ProxyError::LimitExceeded(
                airlock_core::LimitKind::TokensPerDay,
                std::time::Duration::from_secs(30),
            ),
            ProxyError::LimitsUnavailable,
        ] {
            let text = err.to_string();
            let first = text.chars().next().unwrap();
            assert!(
                !first.is_uppercase() || text.starts_with("CONNECT") || text.starts_with("TRACE"),
                "{text}"
            );
            assert!(!text.ends_with('.'), "{text}");
            let response = err.to_response(|b| b);
            let d = err.describe();
            assert_eq!(response.status(), d.status);
            assert_eq!(response.headers()["x-airlock-error"], d.code.as_str());
            let json: serde_json::Value = serde_json::from_slice(response.body()).unwrap();
            assert_eq!(json["type"], "error");
            assert_eq!(json["error"]["code"], d.code.as_str());
            assert_eq!(json["error"]["type"], d.kind);
            assert!(
                Code::ALL.contains(&d.code),
                "{:?} is missing from Code::ALL",
                d.code
            );
        }
    }

    #[test]
    fn busy_and_rate_limited_say_when_to_retry() {
        let busy = ProxyError::UpstreamBusy(std::time::Duration::from_secs(1)).to_response(|b| b);
        assert_eq!(busy.status(), 503);
        assert_eq!(busy.headers()["x-airlock-error"], "upstream_busy");
        assert_eq!(busy.headers()["retry-after"], "1");
        let limited =
            ProxyError::RateLimited(std::time::Duration::from_millis(1500)).to_response(|b| b);
        assert_eq!(limited.status(), 429);
        assert_eq!(limited.headers()["x-airlock-error"], "rate_limited");
        assert_eq!(limited.headers()["retry-after"], "2");
        let soon = ProxyError::RateLimited(std::time::Duration::from_millis(3)).to_response(|b| b);
        assert_eq!(soon.headers()["retry-after"], "1");
        let over = ProxyError::LimitExceeded(
            airlock_core::LimitKind::CostUsdPerDay,
            std::time::Duration::from_millis(90_500),
        )
        .to_response(|b| b);
        assert_eq!(over.status(), 429);
        assert_eq!(over.headers()["x-airlock-error"], "limit_exceeded");
        assert_eq!(over.headers()["retry-after"], "91");
        let body = String::from_utf8(over.body().to_vec()).unwrap();
        assert!(body.contains("cost_usd_per_day"), "{body}");
    }

    /// The codes are a contract with clients (SDKs, alerts, dashboards): their wire spelling
    /// never changes.
    #[test]
    fn codes_keep_their_wire_spelling() {
        let wire: Vec<&str> = Code::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(
            wire,
            [
                "missing_token",
                "malformed_token",
                "unknown_token",
                "revoked_token",
                "expired_token",
                "conflicting_tokens",
                "misplaced_token",
                "devbox_shutdown",
                "address_not_allowed",
                "token_scope",
                "bad_path",
                "method_not_allowed",
                "bad_method",
                "headers_too_large",
                "bad_request_body",
                "websocket_unsupported",
                "state_not_loaded",
                "state_unavailable",
                "secret_unavailable",
                "gateway_unavailable",
                "gateway_unverified",
                "upstream_forbidden",
                "upstream_unreachable",
                "upstream_tls",
                "upstream_timeout",
                "upstream_failed",
                "upstream_busy",
                "rate_limited",
                "internal_error",
                "limit_exceeded",
                "limits_unavailable",
            ]
        );
    }
}
