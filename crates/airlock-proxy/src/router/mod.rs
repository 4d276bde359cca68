//! Router gateways: one endpoint and one `gws_` token over several provider backends
//! (`docs/router.md`).
//!
//! A router token's request never goes to the router's own (placeholder) endpoint. The router
//! serves `POST /v1/chat/completions` (OpenAI), `POST /v1/messages` (Anthropic) and
//! `GET /v1/models` itself, each in its own dialect:
//!
//! 1. **read** the body whole, up to [`BODY_CAP`] (413 beyond): a request that may be sent
//!    again must be buffered;
//! 2. **plan** (`select`): resolve `model` to backends, filter by capability and health,
//!    order by strategy;
//! 3. **attempt** each candidate in order, up to `max_attempts`: the body for the backend's
//!    dialect (`airlock_llm::translate` when it differs from the client's), the backend's own
//!    endpoint and credential (SECURITY #26: a backend's secret goes only to its endpoint),
//!    the head within `timeout_ms`. A connection failure, a timeout, a 429 (cooldown) or a
//!    5xx moves on to the next; so does a stream whose first event is an error. Once content
//!    has started, the response is the client's and no other backend is tried;
//! 4. **answer** in the client's dialect, with `x-airlock-provider`, `x-airlock-model` and
//!    `x-airlock-attempts`, and log the decision (`log`).
//!
//! The backend's stages (the meter) see the backend's request and response, so a routed
//! request is metered with the backend's provider, model and usage.

mod body;
mod health;
mod log;
mod select;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use airlock_core::router::{RouterConfig, Strategy};
use airlock_core::GatewayConfigId;
use airlock_llm::json::Members;
use airlock_llm::translate::{
    error_body, translate_error_body, translate_gemini_error_body, translate_gemini_response,
    translate_parsed_request, translate_parsed_request_to_gemini, translate_request_typed,
    translate_response, Dialect, ErrorKind, RequestOptions, StreamOptions, StreamTranslator,
};
use bytes::Bytes;
use http::{
    header, HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Version,
};
use http_body::Body as _;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::{Map, Value};

pub(crate) use self::body::RoutedBody;
pub(crate) use self::health::Health;
pub(crate) use self::log::{Attempt, Decision, RoutingLog};
use self::select::{Prefer, Refused, Want};
use crate::audit::Recorder;
use crate::body::{Kind, RequestBody};
use crate::error::ProxyError;
use crate::pipeline::Outcome;
use crate::rewrite::Route;
use crate::stage::{RequestHead, Runs};
use crate::state::{GatewaySlot, SecretSlot, TokenEntry};
use crate::RequestCtx;

/// The largest request body a router reads (413 beyond): it must hold the whole body to send
/// it again to another backend.
pub(crate) const BODY_CAP: usize = 8 * 1024 * 1024;
/// The largest non-streamed response body a router reads to translate it.
const RESPONSE_CAP: usize = 32 * 1024 * 1024;
/// The most bytes of a stream held back while waiting for its first content; past this the
/// stream is passed on as it is (and can no longer fail over).
const PEEK_CAP: usize = 1024 * 1024;

pub(crate) const X_PROVIDER: HeaderName = HeaderName::from_static("x-airlock-provider");
pub(crate) const X_MODEL: HeaderName = HeaderName::from_static("x-airlock-model");
pub(crate) const X_ATTEMPTS: HeaderName = HeaderName::from_static("x-airlock-attempts");

/// A router gateway, prepared for the hot path.
pub(crate) struct RouterEntry {
    pub(crate) strategy: Strategy,
    pub(crate) fallback: bool,
    pub(crate) max_attempts: u32,
    pub(crate) timeout: Duration,
    pub(crate) aliases: BTreeMap<String, (usize, String)>,
    pub(crate) backends: Box<[BackendEntry]>,
    pub(crate) log: Arc<RoutingLog>,
}

/// One backend: the slots of its gateway config and secret (shared with every token and router
/// that uses them, so a rotation is seen at once), and its health.
pub(crate) struct BackendEntry {
    pub(crate) name: String,
    pub(crate) gateway_id: GatewayConfigId,
    pub(crate) gateway: Arc<GatewaySlot>,
    pub(crate) secret: Arc<SecretSlot>,
    pub(crate) weight: u32,
    pub(crate) priority: i32,
    pub(crate) models: Vec<String>,
    /// The provider's quota declared on this backend, if any.
    pub(crate) quota: Option<crate::quota::BackendQuota>,
    pub(crate) health: Arc<Health>,
}

impl RouterEntry {
    pub(crate) fn new(
        config: &RouterConfig,
        backends: Vec<BackendEntry>,
        log: Arc<RoutingLog>,
    ) -> RouterEntry {
        RouterEntry {
            strategy: config.strategy,
            fallback: config.fallback,
            max_attempts: config.max_attempts.max(1),
            timeout: Duration::from_millis(config.timeout_ms),
            aliases: config.aliases.clone(),
            backends: backends.into_boxed_slice(),
            log,
        }
    }
}

/// What a router endpoint was asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Endpoint {
    Chat(Dialect),
    Models(Dialect),
    /// OpenAI Responses, not streamed: served as Chat Completions and answered as a response.
    Responses,
}

fn endpoint(method: &Method, path: &str, headers: &HeaderMap) -> Result<Endpoint, Dialect> {
    let path = path.strip_prefix("/v1").unwrap_or(path);
    match (method, path) {
        (&Method::POST, "/chat/completions") => Ok(Endpoint::Chat(Dialect::OpenaiChat)),
        (&Method::POST, "/messages") => Ok(Endpoint::Chat(Dialect::AnthropicMessages)),
        (&Method::POST, "/responses") => Ok(Endpoint::Responses),
        (&Method::GET, "/models") => Ok(Endpoint::Models(guess_dialect(headers))),
        _ => Err(if path.starts_with("/messages") {
            Dialect::AnthropicMessages
        } else {
            guess_dialect(headers)
        }),
    }
}

/// Anthropic's SDKs always send `anthropic-version`; anything else is answered as OpenAI.
fn guess_dialect(headers: &HeaderMap) -> Dialect {
    if headers.contains_key(&ANTHROPIC_VERSION) {
        Dialect::AnthropicMessages
    } else {
        Dialect::OpenaiChat
    }
}

/// An answer of the router's own: an error in the client's dialect.
struct Own {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after_s: Option<u64>,
}

impl Own {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Own {
        Own {
            status,
            code,
            message: message.into(),
            retry_after_s: None,
        }
    }
}

fn own_response(dialect: Dialect, own: &Own, record: &mut Recorder) -> Response<Kind> {
    record.answered(own.status.as_u16(), Some(own.code));
    let body = error_body(dialect, own.status.as_u16(), &own.message);
    let mut response = Response::new(Kind::Full(Some(body.into())));
    *response.status_mut() = own.status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(
        &crate::error::X_AIRLOCK_ERROR,
        HeaderValue::from_static(own.code),
    );
    if let Some(s) = own.retry_after_s {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(s));
    }
    response
}

/// Serves a request on a router token (the token, devbox, address and scope are checked).
pub(crate) async fn serve(
    shared: &RequestCtx,
    req: Request<Incoming>,
    token: &Arc<TokenEntry>,
    request_id: &HeaderValue,
    record: &mut Recorder,
) -> Result<Outcome, ProxyError> {
    let gateway = token
        .gateway
        .load()
        .ok_or(if token.gateway.is_unverified() {
            ProxyError::GatewayUnverified
        } else {
            ProxyError::GatewayUnavailable
        })?;
    let Some(router) = gateway.router.clone() else {
        // A token without a secret on a plain gateway: nothing to send.
        return Err(ProxyError::SecretUnavailable);
    };
    // The store never binds across accounts; a row that does was written by someone else.
    let devbox_account = token.devbox.load().map(|d| d.account_id.clone());
    if gateway.account_id != *token.account_id
        || devbox_account.is_none_or(|a| *a != *token.account_id)
    {
        return Err(ProxyError::Internal("the token's state is inconsistent"));
    }
    let dialect = match endpoint(req.method(), req.uri().path(), req.headers()) {
        Ok(Endpoint::Models(dialect)) => {
            record.answered(200, None);
            return Ok(answer(models(&router, dialect), None));
        }
        Ok(Endpoint::Chat(dialect)) => dialect,
        Ok(Endpoint::Responses) => Dialect::OpenaiChat,
        Err(dialect) => {
            let own = Own::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "a router gateway serves POST /v1/chat/completions, POST /v1/messages, POST /v1/responses and GET /v1/models",
            );
            return Ok(answer(own_response(dialect, &own, record), None));
        }
    };
    let responses =
        endpoint(req.method(), req.uri().path(), req.headers()) == Ok(Endpoint::Responses);
    let started = Instant::now();
    let (parts, body) = req.into_parts();
    let body = match read_body(body).await {
        Ok(body) => body,
        Err(own) => return Ok(answer(own_response(dialect, &own, record), None)),
    };
    // Budgets and rate limits (`quota`): the router token's account, devbox, gateway and scope
    // limits, reserved from the client's body (in its dialect; priced at the end, from the
    // serving backend's metered usage). The run goes last in the request's runs, after the
    // served backend's meter, so that it trues up with what the meter recorded.
    let client_api = if responses {
        airlock_core::Api::OpenaiResponses
    } else {
        dialect.api()
    };
    let ticket = match shared.quota.start(token, &parts.method, client_api, None) {
        Some((mut run, ticket)) => {
            run.request_body(Some(&mut body.clone()))?;
            ticket.admit(&shared.quota).await?;
            record.runs().push(run);
            Some(ticket)
        }
        None => None,
    };
    // A Responses request is served as the Chat Completions request it says.
    let body = if responses {
        match airlock_llm::translate::responses_to_openai_request(&body) {
            Ok(b) => Bytes::from(b),
            Err(e) => {
                let code = if e.kind == ErrorKind::Unsupported {
                    "unsupported"
                } else {
                    "invalid_request"
                };
                let own = Own::new(StatusCode::BAD_REQUEST, code, e.message);
                return Ok(answer(own_response(dialect, &own, record), None));
            }
        }
    } else {
        body
    };
    let mut route = Routing {
        shared,
        router: &router,
        token,
        client: dialect,
        request_id,
        attempts: Vec::new(),
        model_requested: String::new(),
        reason: String::new(),
        tokens: None,
    };
    let result = route.run(parts, body, record).await;
    let (response, served) = match result {
        Ok(done) => (done.response, Some(done.served)),
        Err(own) => (own_response(dialect, &own, record), None),
    };
    let response = if responses {
        as_response_object(response, record)
    } else {
        response
    };
    let (provider, model) = match &served {
        Some((p, m)) => (Some(p.clone()), Some(m.clone())),
        None => (None, None),
    };
    router.log.push(Decision {
        request_id: request_id.to_str().unwrap_or_default().to_owned(),
        time_ms: airlock_core::time::now_ms(),
        model_requested: route.model_requested,
        provider,
        model,
        attempts: route.attempts,
        reason: route.reason,
        input_tokens: route.tokens.map(|t| t.0),
        output_tokens: route.tokens.map(|t| t.1),
        elapsed_ms: started.elapsed().as_millis() as u64,
    });
    let mut response = response;
    if let Some(ticket) = &ticket {
        ticket.response_headers(response.headers_mut());
    }
    Ok(answer(response, None))
}

/// A Chat Completions answer as a Responses `response` object; errors are the same shape in
/// both and pass as they are.
fn as_response_object(response: Response<Kind>, record: &mut Recorder) -> Response<Kind> {
    if response.status() != StatusCode::OK {
        return response;
    }
    let (mut parts, kind) = response.into_parts();
    let Kind::Full(Some(body)) = kind else {
        return Response::from_parts(parts, kind);
    };
    let created = (airlock_core::time::now_ms() / 1000) as u64;
    match airlock_llm::translate::openai_to_responses_response(&body, created) {
        Ok(out) => {
            parts.headers.remove(header::CONTENT_LENGTH);
            Response::from_parts(parts, Kind::Full(Some(out.into())))
        }
        Err(_) => {
            let own = Own::new(
                StatusCode::BAD_GATEWAY,
                "upstream_failed",
                "the backend's answer could not be read",
            );
            own_response(Dialect::OpenaiChat, &own, record)
        }
    }
}

fn answer(response: Response<Kind>, permit: Option<crate::limits::GatePermit>) -> Outcome {
    Outcome::Response(response, permit)
}

/// `GET /v1/models`: every model the backends list, the aliases and `auto`.
fn models(router: &RouterEntry, dialect: Dialect) -> Response<Kind> {
    let mut ids: Vec<(String, String)> = vec![("auto".into(), "airlock".into())];
    for name in router.aliases.keys() {
        ids.push((name.clone(), "airlock".into()));
    }
    for b in router.backends.iter() {
        let listed: Vec<String> = if !b.models.is_empty() {
            b.models.clone()
        } else {
            b.gateway
                .load()
                .map(|g| g.llm.models.iter().map(|m| m.id.clone()).collect())
                .unwrap_or_default()
        };
        for m in listed {
            if !ids.iter().any(|(id, _)| *id == m) {
                ids.push((m.clone(), b.name.clone()));
            }
            ids.push((format!("{}:{m}", b.name), b.name.clone()));
        }
    }
    let body = match dialect {
        Dialect::OpenaiChat => serde_json::json!({
            "object": "list",
            "data": ids.iter().map(|(id, owner)| serde_json::json!({
                "id": id, "object": "model", "created": 0, "owned_by": owner,
            })).collect::<Vec<_>>(),
        }),
        Dialect::AnthropicMessages => serde_json::json!({
            "data": ids.iter().map(|(id, _)| serde_json::json!({
                "type": "model", "id": id, "display_name": id, "created_at": "1970-01-01T00:00:00Z",
            })).collect::<Vec<_>>(),
            "has_more": false,
            "first_id": ids.first().map(|i| i.0.clone()),
            "last_id": ids.last().map(|i| i.0.clone()),
        }),
    };
    let mut response = Response::new(Kind::Full(Some(body.to_string().into())));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// What a served request answered with.
struct Done {
    response: Response<Kind>,
    /// The backend's name and model.
    served: (String, String),
}

/// One routed request in flight.
struct Routing<'a> {
    shared: &'a RequestCtx,
    router: &'a RouterEntry,
    token: &'a Arc<TokenEntry>,
    client: Dialect,
    request_id: &'a HeaderValue,
    attempts: Vec<Attempt>,
    model_requested: String,
    reason: String,
    /// The served answer's input and output tokens, when it was read whole.
    tokens: Option<(u64, u64)>,
}

/// Why an attempt did not serve the request, and whether the next backend may be tried.
enum Failed {
    /// Try the next backend; `last` is what the client gets if none is left.
    Next(LastError),
    /// Answer the client with this at once (the client's fault, or content already started).
    Stop(Own),
}

/// What the client gets when every attempt failed.
enum LastError {
    Own(Own),
    /// The backend's own error response (a 429 or 5xx), translated.
    Upstream(Response<Kind>),
}

/// Why an attempt failed, the status the backend answered with (if any), and what next.
type AttemptError = (&'static str, Option<u16>, Failed);

/// A cause of a failed attempt after which the next backend may be tried; what the client
/// gets if it was the last.
enum Cause {
    /// The backend could not be used at all (its secret, endpoint or gate).
    Unavailable(&'static str),
    /// No head (or first content) within `timeout_ms`.
    Timeout,
    /// The connection could not be made (the `upstream_unreachable` code).
    Unreachable(&'static str),
    /// The answer or the stream broke off.
    BrokeOff(&'static str),
    /// The answer could not be read.
    BadAnswer,
    /// The stream's first event was an error.
    ErrorEvent(String),
}

impl Cause {
    fn failed(self, status: Option<u16>) -> AttemptError {
        let (why, own) = match self {
            Cause::Unavailable(m) => (
                "unavailable",
                Own::new(StatusCode::SERVICE_UNAVAILABLE, "no_backend_available", m),
            ),
            Cause::Timeout => (
                "timeout",
                Own::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    "upstream_timeout",
                    "no backend answered in time",
                ),
            ),
            Cause::Unreachable(code) => (
                "connect_failed",
                Own::new(
                    StatusCode::BAD_GATEWAY,
                    "upstream_unreachable",
                    format!("no backend could be reached ({code})"),
                ),
            ),
            Cause::BrokeOff(m) => (
                "connect_failed",
                Own::new(StatusCode::BAD_GATEWAY, "upstream_failed", m),
            ),
            Cause::BadAnswer => (
                "bad_answer",
                Own::new(
                    StatusCode::BAD_GATEWAY,
                    "upstream_failed",
                    "the backend's answer could not be read",
                ),
            ),
            Cause::ErrorEvent(m) => (
                "error_event",
                Own::new(StatusCode::BAD_GATEWAY, "upstream_failed", m),
            ),
        };
        (why, status, Failed::Next(LastError::Own(own)))
    }

    /// The same, after counting the failure toward the backend's breaker.
    fn counted(self, health: &Health, status: Option<u16>) -> AttemptError {
        health.failed(airlock_core::time::now_ms());
        self.failed(status)
    }
}

impl Routing<'_> {
    async fn run(
        &mut self,
        parts: http::request::Parts,
        body: Bytes,
        record: &mut Recorder,
    ) -> Result<Done, Own> {
        record.bytes_in(Arc::new(std::sync::atomic::AtomicU64::new(
            body.len() as u64
        )));
        // Anything but one JSON object fails here.
        let members = Members::parse(&body).map_err(|_| {
            Own::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "the request body must be a JSON object",
            )
        })?;
        let model = match members.read::<String>("model") {
            Some(m) if !m.is_empty() => m,
            _ => {
                return Err(Own::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "model: is required and must be a string",
                ))
            }
        };
        self.model_requested = model.clone();
        let prefer_text = match members.get("prefer") {
            Some(value) => Some(serde_json::from_str::<String>(value.get()).map_err(|_| {
                Own::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "prefer: must be auto, speed, quality or cost",
                )
            })?),
            None => parts
                .headers
                .get(&X_AIRLOCK_PREFER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        };
        let prefer = match prefer_text.as_deref() {
            None => Prefer::Auto,
            Some(text) => Prefer::parse(text).ok_or_else(|| {
                Own::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "prefer: must be auto, speed, quality or cost",
                )
            })?,
        };
        let stream = members.read::<bool>("stream").unwrap_or(false);
        let include_usage = members
            .read::<Value>("stream_options")
            .and_then(|o| o.get("include_usage").and_then(Value::as_bool))
            .unwrap_or(false);
        let max_tokens = max_tokens(&members);
        let images = has_images(&members);
        let tools = has_tools(&members);
        // The body as the backends get it: without `prefer`, with their own model.
        let mut client_body = ClientBody {
            members,
            body: &body,
            parsed: None,
        };
        let want = Want {
            model: &model,
            prefer,
            images,
            tools,
            // About four bytes a token: an estimate for the context window and the cost.
            input_tokens: (body.len() / 4) as u64,
            max_tokens,
        };
        // A backend's provider quota is reserved with the input estimate and the output cap.
        let quota_tokens = want
            .input_tokens
            .saturating_add(max_tokens.unwrap_or(crate::quota::DEFAULT_MAX_TOKENS));
        let now_ms = airlock_core::time::now_ms();
        let plan = select::plan(self.router, &want, now_ms, &self.shared.quota).map_err(
            |refused| match refused {
                Refused::UnknownBackend => Own::new(
                    StatusCode::BAD_REQUEST,
                    "unknown_backend",
                    "model: names no backend of this router (use <backend>:<model>, a model id, an alias or auto)",
                ),
                Refused::NoModel => Own::new(
                    StatusCode::NOT_FOUND,
                    "model_not_found",
                    "model: no backend of this router serves it",
                ),
                Refused::Incapable(why) => Own::new(
                    StatusCode::BAD_REQUEST,
                    "no_capable_backend",
                    format!("no backend can take this request: {why}"),
                ),
                Refused::Unavailable { wait_ms, reason } => {
                    self.reason = reason.clone();
                    let mut own = Own::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "no_backend_available",
                        format!("every backend able to serve this request is unavailable: {reason}"),
                    );
                    own.retry_after_s = Some(wait_ms.div_ceil(1000).max(1));
                    own
                }
            },
        )?;
        self.reason = plan.reason.clone();
        let max_attempts = if self.router.fallback {
            self.router.max_attempts as usize
        } else {
            1
        };
        let mut last: Option<LastError> = None;
        let mut unsupported: Option<String> = None;
        // The earliest end of a provider quota that left a backend out, and why.
        let mut out_of_quota: Option<(i64, String)> = None;
        for candidate in plan.candidates.into_iter() {
            if self.tried() >= max_attempts {
                break;
            }
            let backend = &self.router.backends[candidate.index];
            // The backend's provider quota: one request and the request's tokens, reserved
            // before it is tried (from this replica's lease; the ledger only when it is spent).
            let holds = match &backend.quota {
                None => None,
                Some(q) => {
                    let who = crate::quota::Who::of(self.token);
                    match self
                        .shared
                        .quota
                        .reserve_backend(q, quota_tokens, &who)
                        .await
                    {
                        Ok(holds) => Some(holds),
                        Err((kind, until)) => {
                            let note = select::out_of_quota(&backend.name, kind, until);
                            self.reason.push_str("; ");
                            self.reason.push_str(&note);
                            self.attempts.push(Attempt {
                                backend: backend.name.clone(),
                                model: candidate.model.clone(),
                                outcome: "quota".into(),
                                status: None,
                                elapsed_ms: 0,
                            });
                            if out_of_quota.as_ref().is_none_or(|(u, _)| until < *u) {
                                out_of_quota = Some((until, note));
                            }
                            continue;
                        }
                    }
                }
            };
            let attempt_started = Instant::now();
            let outcome = self
                .attempt(
                    backend,
                    &candidate,
                    &mut client_body,
                    stream,
                    include_usage,
                    &parts.headers,
                    record,
                )
                .await;
            let elapsed_ms = attempt_started.elapsed().as_millis() as u64;
            match outcome {
                Ok((response, status, tokens)) => {
                    // Trued up with the metered usage when the request ends (after the meter).
                    if let Some(holds) = holds {
                        record.runs().push(Box::new(holds));
                    }
                    self.tokens = tokens;
                    self.attempts.push(Attempt {
                        backend: backend.name.clone(),
                        model: candidate.model.clone(),
                        outcome: "ok".into(),
                        status: Some(status),
                        elapsed_ms,
                    });
                    let mut response = response;
                    self.stamp(&mut response, backend, &candidate);
                    return Ok(Done {
                        response,
                        served: (backend.name.clone(), candidate.model),
                    });
                }
                Err((why, status, failed)) => {
                    record.trace_attempt_failed(why, status);
                    self.attempts.push(Attempt {
                        backend: backend.name.clone(),
                        model: candidate.model.clone(),
                        outcome: why.into(),
                        status,
                        elapsed_ms,
                    });
                    match failed {
                        Failed::Stop(own) => return Err(own),
                        Failed::Next(LastError::Own(own)) if why == "unsupported" => {
                            unsupported = Some(own.message);
                        }
                        Failed::Next(err) => last = Some(err),
                    }
                }
            }
        }
        match (last, unsupported) {
            (Some(LastError::Upstream(mut response)), _) => {
                record.answered(response.status().as_u16(), Some("all_backends_failed"));
                let n = self.tried();
                response
                    .headers_mut()
                    .insert(X_ATTEMPTS, HeaderValue::from(n));
                Ok(Done {
                    response,
                    served: (String::new(), String::new()),
                })
            }
            (Some(LastError::Own(own)), _) => Err(own),
            (None, Some(message)) => Err(Own::new(StatusCode::BAD_REQUEST, "unsupported", message)),
            (None, None) if out_of_quota.is_some() => {
                let (until, note) = out_of_quota.unwrap_or_default();
                let mut own = Own::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "no_backend_available",
                    format!("every backend able to serve this request is unavailable: {note}"),
                );
                let wait_ms = u64::try_from(until - self.shared.quota.now()).unwrap_or(0);
                own.retry_after_s = Some(wait_ms.div_ceil(1000).max(1));
                Err(own)
            }
            (None, None) => Err(Own::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "no_backend_available",
                "no backend of this router is available",
            )),
        }
    }

    fn stamp(&self, response: &mut Response<Kind>, backend: &BackendEntry, c: &select::Candidate) {
        let headers = response.headers_mut();
        let provider = c.gateway.llm.provider.as_deref().unwrap_or(&backend.name);
        if let Ok(v) = HeaderValue::from_str(provider) {
            headers.insert(X_PROVIDER, v);
        }
        if let Ok(v) = HeaderValue::from_str(&c.model) {
            headers.insert(X_MODEL, v);
        }
        headers.insert(X_ATTEMPTS, HeaderValue::from(self.tried()));
    }

    /// The attempts that went to a backend (not those left out for a quota or refused as
    /// unsupported before anything was sent).
    fn tried(&self) -> usize {
        self.attempts
            .iter()
            .filter(|a| a.outcome != "unsupported" && a.outcome != "quota")
            .count()
    }

    /// One attempt on one backend. `Ok`: the response for the client (content started, or a
    /// whole answer). `Err`: why not, the status if there was one, and what to do next.
    #[expect(
        clippy::too_many_arguments,
        reason = "one attempt's inputs, each used once; a struct would only rename them"
    )]
    async fn attempt(
        &self,
        backend: &BackendEntry,
        candidate: &select::Candidate,
        client_body: &mut ClientBody<'_>,
        stream: bool,
        include_usage: bool,
        client_headers: &HeaderMap,
        record: &mut Recorder,
    ) -> Result<(Response<Kind>, u16, Option<(u64, u64)>), AttemptError> {
        let client = self.client;
        let gateway = &candidate.gateway;
        let unavailable = |message: &'static str| Cause::Unavailable(message).failed(None);
        // `None`: Gemini, translated from and to either client dialect.
        let gemini = gateway.llm.api == airlock_core::Api::Gemini;
        let backend_dialect = airlock_llm::translate::Dialect::of(gateway.llm.api);
        if backend_dialect.is_none() && !gemini {
            return Err(unavailable("a backend speaks no chat dialect"));
        }
        // The backend's own secret, of this token's account: never another's.
        let account = &*self.token.account_id;
        let Some(secret) = backend.secret.load().filter(|s| {
            // public: account ids, not the secret's value
            s.material().is_some() && &s.account_id == account && &gateway.account_id == account
        }) else {
            return Err(unavailable("a backend's secret cannot be used"));
        };
        let Ok(custom_secrets) = crate::pipeline::custom_secrets(gateway, account) else {
            return Err(unavailable("a backend's secret cannot be used"));
        };
        let route = Route {
            gateway: gateway.clone(),
            secret: secret.clone(),
            custom_secrets,
        };

        // The body in the backend's dialect, for the backend's model.
        let mut body = if backend_dialect == Some(client) {
            Bytes::from(client_body.with_model(&candidate.model))
        } else {
            let mut opts = RequestOptions::new(&candidate.model);
            if let Some(spec) = gateway.llm.models.iter().find(|m| m.id == candidate.model) {
                if let Some(max) = spec.max_tokens {
                    opts.default_max_tokens = max;
                }
                opts.reasoning = spec.reasoning;
            }
            // The typed reading first; the body parsed whole when it gives up.
            let typed = match gemini {
                true => None,
                false => translate_request_typed(client, client_body.body, &opts),
            };
            let translated = match typed {
                Some(out) => Ok(out),
                None => {
                    let Some(parsed) = client_body.parsed() else {
                        return Err(unavailable("the request body must be a JSON object"));
                    };
                    if gemini {
                        translate_parsed_request_to_gemini(client, parsed, &opts)
                    } else {
                        translate_parsed_request(client, parsed, &opts)
                    }
                }
            };
            match translated {
                Ok(b) => Bytes::from(b),
                Err(e) if e.kind == ErrorKind::Unsupported => {
                    return Err((
                        "unsupported",
                        None,
                        Failed::Next(LastError::Own(Own::new(
                            StatusCode::BAD_REQUEST,
                            "unsupported",
                            e.message,
                        ))),
                    ))
                }
                Err(e) => {
                    return Err((
                        "malformed",
                        None,
                        Failed::Stop(Own::new(
                            StatusCode::BAD_REQUEST,
                            "invalid_request",
                            e.message,
                        )),
                    ))
                }
            }
        };
        let Some(path) = backend_path(gateway, &candidate.model, stream) else {
            return Err(unavailable(
                "the model cannot name a deployment or model path",
            ));
        };
        let mut runs = Runs::start(
            &gateway.stages,
            &RequestHead {
                method: &Method::POST,
                path: &path,
            },
        );
        if runs.admit().is_err() {
            return Err(unavailable("a backend refused the request"));
        }
        if runs.body_cap().is_some() {
            let _ = runs.request_body(Some(&mut body));
        }

        // The backend's own endpoint, credential and headers: nothing of the client's but the
        // dialect's version headers.
        let mut path_and_query = String::with_capacity(gateway.base_path.len() + path.len());
        path_and_query.push_str(&gateway.base_path);
        path_and_query.push_str(&path);
        let uri = http::Uri::builder()
            .scheme(gateway.scheme.clone())
            .authority(gateway.authority.clone())
            .path_and_query(path_and_query)
            .build();
        let Ok(uri) = uri else {
            return Err(unavailable("a backend's endpoint is not usable"));
        };
        let mut headers = HeaderMap::with_capacity(8);
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if stream {
            headers.insert(
                header::ACCEPT,
                HeaderValue::from_static("text/event-stream"),
            );
        }
        if backend_dialect == Some(Dialect::AnthropicMessages) {
            let same = client == Dialect::AnthropicMessages;
            for name in [&ANTHROPIC_VERSION, &ANTHROPIC_BETA] {
                if let (true, Some(v)) = (same, client_headers.get(name)) {
                    headers.insert(name, v.clone());
                }
            }
            if !headers.contains_key(&ANTHROPIC_VERSION) {
                headers.insert(&ANTHROPIC_VERSION, HeaderValue::from_static("2023-06-01"));
            }
        }
        headers.insert(&crate::request_id::X_REQUEST_ID, self.request_id.clone());
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        if crate::rewrite::request_headers(&mut headers, &route, false).is_err() {
            return Err(unavailable("a backend's secret cannot be used"));
        }
        let mut upstream_req = Request::new(RequestBody::full(body));
        *upstream_req.method_mut() = Method::POST;
        *upstream_req.uri_mut() = uri;
        *upstream_req.version_mut() = Version::HTTP_11;
        *upstream_req.headers_mut() = headers;
        let (mut head, req_body) = upstream_req.into_parts();
        runs.upstream_request(&mut head);
        let mut upstream_req = Request::from_parts(head, req_body);

        let shared = self.shared;
        let Ok(permit) = shared.gates.enter(&gateway.scheme, &gateway.authority) else {
            return Err(unavailable("a backend has too many requests in flight"));
        };
        let health = &backend.health;
        let now = airlock_core::time::now_ms();
        let in_flight = health.begin(now);
        let deadline = tokio::time::Instant::now() + self.router.timeout;
        let sent_at = Instant::now();
        record.trace_upstream(&mut upstream_req, &gateway.authority, || {
            vec![
                opentelemetry::KeyValue::new("airlock.router.backend", backend.name.clone()),
                opentelemetry::KeyValue::new("gen_ai.request.model", candidate.model.clone()),
            ]
        });
        let sent = tokio::time::timeout_at(deadline, shared.client.request(upstream_req)).await;
        let response = match sent {
            Err(_) => return Err(Cause::Timeout.counted(health, None)),
            Ok(Err(err)) => {
                let (err, kind) = crate::upstream::classify(&err);
                shared.metrics.upstream_error(kind);
                let code = err.describe().code.as_str();
                return Err(Cause::Unreachable(code).counted(health, None));
            }
            Ok(Ok(response)) => response,
        };
        let now = airlock_core::time::now_ms();
        let status = response.status();
        health.answered(now, sent_at.elapsed(), response.headers());
        let (mut parts, incoming) = response.into_parts();
        crate::rewrite::response_headers(&mut parts.headers, &route, false);

        if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
            let why = if status == StatusCode::TOO_MANY_REQUESTS {
                health.cool_down(now, &parts.headers);
                "rate_limited"
            } else {
                health.failed(now);
                "upstream_5xx"
            };
            let body = read_capped(incoming, RESPONSE_CAP, deadline)
                .await
                .unwrap_or_default();
            let response = error_response(client, backend_dialect, status, &parts.headers, &body);
            drop(in_flight);
            return Err((
                why,
                Some(status.as_u16()),
                Failed::Next(LastError::Upstream(response)),
            ));
        }
        if !status.is_success() {
            // The client's request was refused (400, 401, 404, …): another backend would
            // refuse it too, or the operator must fix this one. Answer it, translated.
            health.succeeded();
            let body = read_capped(incoming, RESPONSE_CAP, deadline)
                .await
                .unwrap_or_default();
            let response = error_response(client, backend_dialect, status, &parts.headers, &body);
            record.upstream(status.as_u16());
            record.backend_secret(backend.secret.id.clone(), secret.version);
            return Ok((response, status.as_u16(), None));
        }
        runs.response_head(&mut parts);
        let translating = backend_dialect != Some(client);
        let sse = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim_start().starts_with("text/event-stream"));

        if !sse {
            // A whole answer: read it, meter it, translate it.
            let Some(mut whole) = read_capped(incoming, RESPONSE_CAP, deadline).await else {
                let cause = Cause::BrokeOff("the backend's answer broke off");
                return Err(cause.counted(health, Some(status.as_u16())));
            };
            runs.frame(&mut whole);
            // The answer's usage, for the routing log, as the backend's meter read it.
            let tokens = runs.usage();
            if let Some(rest) = runs.end() {
                whole = [whole, rest].concat().into();
            }
            let out = if translating {
                let created = (airlock_core::time::now_ms() / 1000) as u64;
                let translated = match backend_dialect {
                    Some(backend) => translate_response(backend, &whole, created),
                    None => translate_gemini_response(client, &whole, created),
                };
                match translated {
                    Ok(b) => Bytes::from(b),
                    Err(_) => return Err(Cause::BadAnswer.counted(health, Some(status.as_u16()))),
                }
            } else {
                whole
            };
            health.succeeded();
            let mut response = Response::new(Kind::Full(Some(out)));
            *response.status_mut() = status;
            let headers = response.headers_mut();
            if !translating {
                *headers = parts.headers;
                headers.remove(header::CONTENT_LENGTH);
                headers.remove(header::TRANSFER_ENCODING);
            }
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            self.adopt(record, runs, backend, &secret, status);
            return Ok((response, status.as_u16(), tokens));
        }

        // A stream: hold its events back until the first content (or an error) shows.
        let opts = StreamOptions {
            created: (airlock_core::time::now_ms() / 1000) as u64,
            include_usage,
        };
        let mut detector = match backend_dialect {
            Some(backend) => StreamTranslator::new(backend, opts),
            None => StreamTranslator::from_gemini(client, opts),
        };
        let mut incoming = incoming;
        let mut held: Vec<u8> = Vec::new();
        let mut raw_held: Vec<u8> = Vec::new();
        let mut ended = false;
        loop {
            if detector.is_content_started() || raw_held.len() > PEEK_CAP {
                break;
            }
            if detector.failed_before_content() {
                let message = detector.upstream_error().map_or_else(
                    || "the backend's stream failed".to_owned(),
                    |e| e.message.clone(),
                );
                return Err(Cause::ErrorEvent(message).counted(health, Some(status.as_u16())));
            }
            let frame = match tokio::time::timeout_at(deadline, incoming.frame()).await {
                Err(_) => return Err(Cause::Timeout.counted(health, Some(status.as_u16()))),
                Ok(frame) => frame,
            };
            match frame {
                Some(Ok(frame)) => {
                    let Ok(mut data) = frame.into_data() else {
                        continue;
                    };
                    runs.frame(&mut data);
                    raw_held.extend_from_slice(&data);
                    detector.feed(&data, &mut held);
                }
                Some(Err(_)) => {
                    let cause = Cause::BrokeOff("the backend's stream broke off");
                    return Err(cause.counted(health, Some(status.as_u16())));
                }
                None => {
                    if let Some(rest) = runs.end() {
                        raw_held.extend_from_slice(&rest);
                        detector.feed(&rest, &mut held);
                    }
                    detector.finish(&mut held);
                    ended = true;
                    if detector.failed_before_content() {
                        continue;
                    }
                    break;
                }
            }
        }
        health.succeeded();
        drop(in_flight);
        // The client gets the translated events when the dialects differ, else the backend's
        // own bytes; the translator that watched goes on translating.
        let (first, translator) = if translating {
            (held, Some(detector))
        } else {
            (raw_held, None)
        };
        let mut body = RoutedBody::new(
            Bytes::from(first),
            incoming,
            translator,
            client,
            route,
            permit,
        );
        if ended {
            body.mark_ended();
        }
        let mut response = Response::new(Kind::Routed(Box::new(body)));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        if !translating {
            *headers = parts.headers;
        }
        headers.remove(header::CONTENT_LENGTH);
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        self.adopt(record, runs, backend, &secret, status);
        // The stream's usage reaches the routing log when it ends (after the meter's finish).
        record.runs().push(Box::new(log::StreamTokens {
            log: self.router.log.clone(),
            request_id: self.request_id.to_str().unwrap_or_default().to_owned(),
        }));
        Ok((response, status.as_u16(), None))
    }

    /// The served attempt's stages become the request's, and its backend's secret the one
    /// the audit event names.
    fn adopt(
        &self,
        record: &mut Recorder,
        runs: Runs,
        backend: &BackendEntry,
        secret: &crate::state::SecretEntry,
        status: StatusCode,
    ) {
        // The limits' run (if any) stays last, after the backend's meter.
        let limits = std::mem::replace(record.runs(), runs);
        record.runs().append(limits);
        record.upstream(status.as_u16());
        record.backend_secret(backend.secret.id.clone(), secret.version);
    }
}

/// The `api-version` a router sends to Azure OpenAI's deployment API (its latest GA version).
pub(crate) const AZURE_API_VERSION: &str = "2024-10-21";

/// The path (and query) of a backend's chat endpoint, under its gateway's base path:
///
/// - Anthropic Messages: `/v1/messages`;
/// - Gemini: `/v1beta/models/{model}:generateContent` (`:streamGenerateContent?alt=sse` for a
///   stream), without `/v1beta` when the endpoint has a path of its own (`…/v1beta`, Vertex
///   AI's `…/publishers/google`);
/// - Azure OpenAI (`provider: azure-openai`) on a resource endpoint (no `/v1` at its end):
///   `/openai/deployments/{model}/chat/completions?api-version=…`, the backend's model naming
///   the deployment (no `/openai` when the endpoint ends with it); on the v1 API (`…/openai/v1`)
///   OpenAI's path, like every other Chat Completions backend: `/chat/completions`.
///
/// `None` when a model that goes into the path is not a plain name (letters, digits, `.`, `-`,
/// `_`): a client's model id never shapes a path (SECURITY #26).
fn backend_path(gateway: &crate::state::GatewayEntry, model: &str, stream: bool) -> Option<String> {
    let segment = || {
        let plain = model
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
        (plain && !model.is_empty() && model != "." && model != "..").then_some(model)
    };
    let base = &*gateway.base_path;
    Some(match gateway.llm.api {
        airlock_core::Api::AnthropicMessages => "/v1/messages".into(),
        airlock_core::Api::Gemini => {
            let prefix = if base.is_empty() { "/v1beta" } else { "" };
            let method = if stream {
                "streamGenerateContent?alt=sse"
            } else {
                "generateContent"
            };
            format!("{prefix}/models/{}:{method}", segment()?)
        }
        _ if gateway.llm.provider.as_deref() == Some("azure-openai") && !base.ends_with("/v1") => {
            let prefix = if base.ends_with("/openai") {
                ""
            } else {
                "/openai"
            };
            format!(
                "{prefix}/deployments/{}/chat/completions?api-version={AZURE_API_VERSION}",
                segment()?
            )
        }
        _ => "/chat/completions".into(),
    })
}

/// A backend's error response in the client's dialect, status kept (with its Retry-After).
fn error_response(
    client: Dialect,
    backend: Option<Dialect>,
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
) -> Response<Kind> {
    let out = if backend == Some(client) {
        // Same dialect: the backend's own error body, if it is JSON; else one of Airlock's.
        if serde_json::from_slice::<Value>(body).is_ok() {
            body.to_vec()
        } else {
            error_body(
                client,
                status.as_u16(),
                "the backend answered with an error",
            )
        }
    } else if let Some(backend) = backend {
        translate_error_body(backend, status.as_u16(), body)
    } else {
        translate_gemini_error_body(client, status.as_u16(), body)
    };
    let mut response = Response::new(Kind::Full(Some(out.into())));
    *response.status_mut() = status;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(v) = headers.get(header::RETRY_AFTER) {
        h.insert(header::RETRY_AFTER, v.clone());
    }
    response
}

/// The cap on the answer's tokens the client asked for: `max_completion_tokens`, else
/// `max_tokens`.
fn max_tokens(members: &Members<'_>) -> Option<u64> {
    ["max_completion_tokens", "max_tokens"]
        .iter()
        .find_map(|k| members.read::<u64>(k))
}

/// Whether the request defines tools: OpenAI's `tools` (or the deprecated `functions`),
/// Anthropic's `tools`.
fn has_tools(members: &Members<'_>) -> bool {
    ["tools", "functions"].iter().any(|k| {
        members.get(k).is_some_and(|value| {
            // A non-empty array: `[` and then anything but `]` (the value is valid JSON).
            let text = value.get().trim_start();
            text.strip_prefix('[')
                .is_some_and(|rest| !rest.trim_start().starts_with(']'))
        })
    })
}

/// Whether any message carries an image (either dialect's block shapes).
fn has_images(members: &Members<'_>) -> bool {
    let Some(messages) = members.get("messages") else {
        return false;
    };
    // A block's type is written `"image` or with an escape; most bodies have neither, and
    // need not be read.
    let text = messages.get();
    if !text.contains("image") && !text.contains("\\u") {
        return false;
    }
    let Ok(Value::Array(messages)) = serde_json::from_str::<Value>(text) else {
        return false;
    };
    messages.iter().any(|m| {
        m.get("content")
            .and_then(Value::as_array)
            .is_some_and(|blocks| {
                blocks.iter().any(|b| {
                    matches!(
                        b.get("type").and_then(Value::as_str),
                        Some("image_url" | "image")
                    )
                })
            })
    })
}

/// Reads the client's body whole, up to [`BODY_CAP`].
async fn read_body(mut body: Incoming) -> Result<Bytes, Own> {
    let too_large = || {
        Own::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request_too_large",
            format!("a router reads request bodies of at most {BODY_CAP} bytes"),
        )
    };
    if body.size_hint().lower() > BODY_CAP as u64 {
        return Err(too_large());
    }
    let mut out = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| {
            Own::new(
                StatusCode::BAD_REQUEST,
                "client_body_failed",
                "the request body could not be read",
            )
        })?;
        if let Ok(data) = frame.into_data() {
            if out.len() + data.len() > BODY_CAP {
                return Err(too_large());
            }
            out.extend_from_slice(&data);
        }
    }
    Ok(out.freeze())
}

/// Reads a backend's response body whole, up to `cap`, by `deadline`; `None` if it broke off,
/// was too large or too slow.
async fn read_capped(
    mut body: Incoming,
    cap: usize,
    deadline: tokio::time::Instant,
) -> Option<Bytes> {
    let mut out = bytes::BytesMut::new();
    loop {
        let frame = tokio::time::timeout_at(deadline, body.frame()).await.ok()?;
        match frame {
            None => return Some(out.freeze()),
            Some(Err(_)) => return None,
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    if out.len() + data.len() > cap {
                        return None;
                    }
                    out.extend_from_slice(&data);
                }
            }
        }
    }
}

/// A router's status for the control plane: each backend's health.
pub(crate) fn status(
    router: &RouterEntry,
    now_ms: i64,
) -> Vec<airlock_core::router::BackendStatus> {
    router
        .backends
        .iter()
        .map(|b| {
            let v = b.health.view(now_ms);
            airlock_core::router::BackendStatus {
                name: b.name.clone(),
                gateway: b.gateway_id.clone(),
                healthy: v.healthy,
                cooldown_until_ms: v.cooldown_until_ms,
                latency_ewma_ms: v.latency_ewma_ms,
                requests_last_minute: v.requests_last_minute,
                errors_last_minute: v.errors_last_minute,
                remaining: v.remaining,
                resets_in_ms: v.resets_in_ms,
            }
        })
        .collect()
}

/// Which backend would serve `body` now, without calling any: the same resolution, filters
/// and order as a request.
pub(crate) fn preview(
    router: &RouterEntry,
    client: Dialect,
    body: &[u8],
    quota: &crate::quota::Quota,
) -> Result<airlock_core::router::RoutePreview, airlock_core::InvalidInput> {
    use airlock_core::InvalidInput;
    let _ = client;
    let members =
        Members::parse(body).map_err(|_| InvalidInput::new("body", "must be a JSON object"))?;
    let model = members
        .read::<String>("model")
        .ok_or_else(|| InvalidInput::new("model", "is required and must be a string"))?;
    let prefer = match members.get("prefer") {
        None => Prefer::Auto,
        Some(v) => serde_json::from_str::<String>(v.get())
            .ok()
            .as_deref()
            .and_then(Prefer::parse)
            .ok_or_else(|| InvalidInput::new("prefer", "must be auto, speed, quality or cost"))?,
    };
    let want = Want {
        model: &model,
        prefer,
        images: has_images(&members),
        tools: has_tools(&members),
        input_tokens: (body.len() / 4) as u64,
        max_tokens: max_tokens(&members),
    };
    match select::plan(router, &want, airlock_core::time::now_ms(), quota) {
        Ok(plan) => {
            let candidates: Vec<(String, String)> = plan
                .candidates
                .iter()
                .map(|c| (router.backends[c.index].name.clone(), c.model.clone()))
                .collect();
            Ok(airlock_core::router::RoutePreview {
                provider: candidates.first().map(|c| c.0.clone()),
                model: candidates.first().map(|c| c.1.clone()),
                candidates,
                reason: plan.reason,
                wait_ms: 0,
            })
        }
        Err(Refused::Unavailable { wait_ms, reason }) => Ok(airlock_core::router::RoutePreview {
            provider: None,
            model: None,
            candidates: Vec::new(),
            reason,
            wait_ms,
        }),
        Err(Refused::UnknownBackend) => Err(InvalidInput::new(
            "model",
            "names no backend of this router",
        )),
        Err(Refused::NoModel) => Err(InvalidInput::new(
            "model",
            "no backend of this router serves it",
        )),
        Err(Refused::Incapable(why)) => Err(InvalidInput::new(
            "body",
            format!("no backend can take this request: {why}"),
        )),
    }
}

/// The client's `prefer`, when its body does not say.
const X_AIRLOCK_PREFER: HeaderName = HeaderName::from_static("x-airlock-prefer");

/// Anthropic's version headers, the only client headers a backend of its dialect gets.
const ANTHROPIC_VERSION: HeaderName = HeaderName::from_static("anthropic-version");
const ANTHROPIC_BETA: HeaderName = HeaderName::from_static("anthropic-beta");

/// The client's body, read once: a backend of the client's dialect gets it as the client wrote
/// it but for `prefer` (dropped) and `model` (the backend's own); a translation reads it parsed
/// whole, which is done on its first need.
struct ClientBody<'a> {
    members: Members<'a>,
    body: &'a [u8],
    parsed: Option<Map<String, Value>>,
}

impl ClientBody<'_> {
    /// The body with the backend's `model` and without `prefer`.
    fn with_model(&self, model: &str) -> Vec<u8> {
        self.members.write_with("prefer", ("model", model))
    }

    /// The body parsed whole, without `prefer`. (`None` cannot happen: a body that reads as
    /// members reads as a map.)
    fn parsed(&mut self) -> Option<&Map<String, Value>> {
        if self.parsed.is_none() {
            let mut map: Map<String, Value> = serde_json::from_slice(self.body).ok()?;
            map.remove("prefer");
            self.parsed = Some(map);
        }
        self.parsed.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(body: &str) -> Members<'_> {
        Members::parse(body.as_bytes()).unwrap()
    }

    #[test]
    fn images_in_either_dialect_and_escaped() {
        let cases = [
            (
                r#"{"messages":[{"role":"user","content":"an image of a cat"}]}"#,
                false,
            ),
            (
                r#"{"messages":[{"role":"user","content":[{"type":"text","text":"image"}]}]}"#,
                false,
            ),
            (
                r#"{"messages":[{"content":[{"type":"image_url","image_url":{"url":"x"}}]}]}"#,
                true,
            ),
            (
                r#"{"messages":[{"content":[{"type":"image","source":{}}]}]}"#,
                true,
            ),
            (
                r#"{"messages":[{"content":[{"type":"\u0069mage","source":{}}]}]}"#,
                true,
            ),
            (r#"{"messages":"image"}"#, false),
            (r#"{"model":"image"}"#, false),
        ];
        for (body, images) in cases {
            assert_eq!(has_images(&members(body)), images, "{body}");
        }
    }

    #[test]
    fn tools_only_when_listed() {
        let cases = [
            (r#"{"tools":[{"name":"a"}]}"#, true),
            (r#"{"functions":[ {"name":"a"} ]}"#, true),
            (r#"{"tools":[ ]}"#, false),
            (r#"{"tools":[],"functions":null}"#, false),
            (r#"{"tools":{"a":1}}"#, false),
            (r#"{"tools":"[1]"}"#, false),
            (r#"{}"#, false),
        ];
        for (body, tools) in cases {
            assert_eq!(has_tools(&members(body)), tools, "{body}");
        }
    }

    #[test]
    fn max_tokens_prefers_the_newer_field() {
        let cases = [
            (r#"{"max_tokens":10,"max_completion_tokens":20}"#, Some(20)),
            (
                r#"{"max_tokens":10,"max_completion_tokens":null}"#,
                Some(10),
            ),
            (r#"{"max_tokens":10.5}"#, None),
            (r#"{"max_tokens":-1}"#, None),
            (r#"{"max_tokens":"10"}"#, None),
        ];
        for (body, max) in cases {
            assert_eq!(max_tokens(&members(body)), max, "{body}");
        }
    }

    #[test]
    fn the_body_a_backend_gets() {
        let body = br#"{"prefer":"cost","model":"auto","messages":[{"role":"user","content":"hi"}],"max_tokens":5}"#;
        let mut client = ClientBody {
            members: Members::parse(body).unwrap(),
            body,
            parsed: None,
        };
        // The client's bytes, but for its model and `prefer`.
        assert_eq!(
            String::from_utf8(client.with_model("claude-haiku-4-5")).unwrap(),
            r#"{"model":"claude-haiku-4-5","messages":[{"role":"user","content":"hi"}],"max_tokens":5}"#
        );
        let parsed = client.parsed().unwrap();
        assert!(parsed.get("prefer").is_none());
        assert_eq!(parsed["model"], "auto");
        assert_eq!(parsed.len(), 3);
    }
}
