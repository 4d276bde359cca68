//! `/v1/gateway-configs`: an upstream endpoint and how to apply a credential to it.

use airlock_core::auth::{check_custom_headers, parse_header_name, parse_header_value};
use std::collections::BTreeMap;

use airlock_core::binding::GATEWAY_BINDING;
use airlock_core::llm::{parse_usd, MAX_MODELS};
use airlock_core::router::{self, RouterConfig, Strategy};
use airlock_core::state::LlmSettings;
use airlock_core::{
    Api, AuthMechanism, CustomHeader, Endpoint, GatewayConfigId, HeaderSource, InvalidInput, Label,
    ModelSpec, Price, SecretId, MAX_CUSTOM_HEADERS,
};
use airlock_llm::Preset;
use airlock_store::{GatewayConfigRow, GatewayFilter, SecretRef};
use axum::extract::{Path, State};
use axum::{Extension, Json};
use serde_json::{json, Number, Value};

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::json::{Body, Query};
use crate::providers;
use crate::wire::{
    gateway_view, list_view, AuthMechanismIn, BackendIn, CostIn, CustomHeaderIn, Empty,
    GatewayConfigCreate, GatewayConfigUpdate, ListQuery, ModelIn,
};
use crate::{page, AppState};

const MAX_DESCRIPTION: usize = 1024;

fn parse_auth(field: &str, a: &AuthMechanismIn) -> Result<AuthMechanism, InvalidInput> {
    AuthMechanism::parse(field, &a.kind, a.key.as_deref())
}

fn parse_endpoint(state: &AppState, text: &str) -> Result<Endpoint, InvalidInput> {
    let endpoint = Endpoint::parse("endpoint", text)?;
    state.policy.check_endpoint("endpoint", &endpoint)?;
    Ok(endpoint)
}

/// `type`: `passthrough` (the default) or `router`; `Some(true)` for a router.
fn parse_type(kind: Option<&str>) -> Result<Option<bool>, InvalidInput> {
    match kind {
        None => Ok(None),
        Some("passthrough") => Ok(Some(false)),
        Some("router") => Ok(Some(true)),
        Some(_) => Err(InvalidInput::new("type", "must be passthrough or router")),
    }
}

/// What a router's body says, as the create and update bodies both carry it.
struct RouterIn {
    backends: Option<Vec<BackendIn>>,
    strategy: Option<String>,
    fallback: Option<bool>,
    max_attempts: Option<u32>,
    timeout_ms: Option<u64>,
    aliases: Option<BTreeMap<String, String>>,
}

impl RouterIn {
    fn is_empty(&self) -> bool {
        self.backends.is_none()
            && self.strategy.is_none()
            && self.fallback.is_none()
            && self.max_attempts.is_none()
            && self.timeout_ms.is_none()
            && self.aliases.is_none()
    }

    /// The first router field given, for a plain gateway that must not have any.
    fn first_field(&self) -> Option<&'static str> {
        [
            ("backends", self.backends.is_some()),
            ("strategy", self.strategy.is_some()),
            ("fallback", self.fallback.is_some()),
            ("max_attempts", self.max_attempts.is_some()),
            ("timeout_ms", self.timeout_ms.is_some()),
            ("aliases", self.aliases.is_some()),
        ]
        .into_iter()
        .find_map(|(name, given)| given.then_some(name))
    }
}

/// Builds a router's settings over `current` (an update keeps what it does not give). Each
/// backend must be a gateway config of the caller's account that speaks a chat dialect and is
/// not a router itself, with a secret of the same account.
async fn parse_router(
    state: &AppState,
    caller: &Caller,
    self_id: &GatewayConfigId,
    input: RouterIn,
    current: Option<RouterConfig>,
) -> ApiResult<(RouterConfig, Vec<String>)> {
    let mut names: Vec<String> = Vec::new();
    let mut config = current.unwrap_or(RouterConfig {
        backends: Vec::new(),
        strategy: Strategy::Priority,
        fallback: true,
        max_attempts: 0,
        timeout_ms: router::DEFAULT_TIMEOUT_MS,
        aliases: BTreeMap::new(),
    });
    let backends_given = input.backends.is_some();
    if let Some(backends) = input.backends {
        if backends.is_empty() {
            return Err(InvalidInput::new("backends", "must name at least one backend").into());
        }
        if backends.len() > router::MAX_BACKENDS {
            return Err(InvalidInput::new(
                "backends",
                format!("must have at most {} entries", router::MAX_BACKENDS),
            )
            .into());
        }
        config.backends.clear();
        for (i, b) in backends.into_iter().enumerate() {
            let field = format!("backends[{i}]");
            let gateway = resolve(state, caller, &b.gateway)
                .await
                .map_err(|e| match e {
                    ApiError::NotFound(_) => ApiError::Invalid(format!(
                        "{field}.gateway: no gateway config {} in this account",
                        b.gateway
                    )),
                    other => other,
                })?;
            if gateway.router.is_some() || gateway.id == *self_id {
                return Err(InvalidInput::new(
                    format!("{field}.gateway"),
                    "must not be a router gateway",
                )
                .into());
            }
            if airlock_llm::Dialect::of(gateway.llm.api).is_none()
                && gateway.llm.api != airlock_llm::Api::Gemini
            {
                return Err(InvalidInput::new(
                    format!("{field}.gateway"),
                    "must have api openai-completions, anthropic-messages or gemini",
                )
                .into());
            }
            let secret = state
                .store
                .get_secret(&caller.account.id, secret_ref(&b.secret))
                .await
                .map_err(|e| match e {
                    airlock_store::StoreError::NotFound => ApiError::Invalid(format!(
                        "{field}.secret: no secret {} in this account",
                        b.secret
                    )),
                    other => other.into(),
                })?;
            let models = b.models.unwrap_or_default();
            for (j, m) in models.iter().enumerate() {
                ModelSpec::check_id(&format!("{field}.models[{j}]"), m)?;
            }
            let weight = b.weight.unwrap_or(1);
            if weight > 1_000_000 {
                return Err(InvalidInput::new(
                    format!("{field}.weight"),
                    "must be from 0 to 1000000",
                )
                .into());
            }
            let limits = b
                .limits
                .as_ref()
                .map(|l| crate::limits::parse_backend_limits(&format!("{field}.limits"), l))
                .transpose()?
                .unwrap_or_default();
            names.push(gateway.name.as_str().to_owned());
            config.backends.push(router::Backend {
                name: gateway.name.as_str().to_owned(),
                gateway: gateway.id,
                secret: secret.id,
                weight,
                priority: b.priority.unwrap_or(0),
                models,
                limits,
            });
        }
    } else {
        names = config.backends.iter().map(|b| b.name.clone()).collect();
    }
    if let Some(text) = &input.strategy {
        config.strategy = Strategy::parse("strategy", text)?;
    }
    if let Some(f) = input.fallback {
        config.fallback = f;
    }
    match input.max_attempts {
        Some(n) => config.max_attempts = n,
        // The default follows the backends: one attempt on each, at most MAX_ATTEMPTS.
        None if backends_given || config.max_attempts == 0 => {
            config.max_attempts = (config.backends.len() as u32).clamp(1, router::MAX_ATTEMPTS);
        }
        None => {}
    }
    if let Some(t) = input.timeout_ms {
        config.timeout_ms = t;
    }
    if let Some(aliases) = input.aliases {
        config.aliases.clear();
        for (name, target) in aliases {
            let field = format!("aliases.{name}");
            let (backend, model) = target.split_once(':').ok_or_else(|| {
                InvalidInput::new(&field, "must be <backend gateway name or id>:<model>")
            })?;
            let index = config
                .backends
                .iter()
                .zip(&names)
                .position(|(b, n)| b.gateway.as_str() == backend || n == backend)
                .ok_or_else(|| InvalidInput::new(&field, "names no backend of this router"))?;
            config.aliases.insert(name, (index, model.to_owned()));
        }
    } else if backends_given {
        // Indices into the old list mean nothing in the new one.
        config
            .aliases
            .retain(|_, (i, _)| *i < config.backends.len());
    }
    config.check()?;
    Ok((config, names))
}

/// The stored shape of a router: no endpoint, auth or headers of its own.
fn router_placeholder() -> Endpoint {
    // A constant that parses; the proxy never sends anything there.
    #[expect(clippy::expect_used, reason = "a constant, checked by a unit test")]
    Endpoint::parse("endpoint", router::ROUTER_PLACEHOLDER_ENDPOINT)
        .expect("the router placeholder parses")
}

/// Refuses the fields a router does not have.
fn refuse_plain_fields(fields: &[(&str, bool)]) -> Result<(), InvalidInput> {
    match fields.iter().find(|(_, given)| *given) {
        Some((name, _)) => Err(InvalidInput::new(
            *name,
            "must be omitted for a router gateway (each backend has its own)",
        )),
        None => Ok(()),
    }
}

/// The preset's endpoint. A preset whose endpoint names the operator's own resource (Azure,
/// Vertex, Bedrock) has only an example, which must never become a config's upstream.
fn preset_endpoint(state: &AppState, preset: &Preset) -> Result<Endpoint, InvalidInput> {
    if preset.endpoint_required {
        return Err(InvalidInput::new(
            "endpoint",
            format!(
                "is required with provider {}: its endpoint names your own resource, like {}",
                preset.id, preset.endpoint
            ),
        ));
    }
    // A local server's preset (Ollama on localhost) is refused like any private upstream until
    // the operator allows it; say where the endpoint came from, since the caller did not send one.
    parse_endpoint(state, preset.endpoint).map_err(|e| {
        InvalidInput::new(
            "endpoint",
            format!(
                "the {} preset's endpoint {} is refused ({}); give endpoint",
                preset.id, preset.endpoint, e.message
            ),
        )
    })
}

/// USD per million tokens, a JSON number with at most 9 decimals, as nano-dollars. The number
/// is read back through its shortest decimal spelling, which is what the operator wrote for
/// any price with up to 15 significant digits, so `0.1` is exactly 100 000 000.
fn parse_price(field: &str, n: &Number) -> Result<u64, InvalidInput> {
    let bad = || {
        InvalidInput::new(
            field,
            "must be a non-negative number with at most 9 decimals",
        )
    };
    let text = if let Some(u) = n.as_u64() {
        u.to_string()
    } else {
        match n.as_f64() {
            Some(0.0) => return Ok(0),
            // `Display` for f64 never writes an exponent: 1e-10 reads as 0.0000000001 and is
            // refused for its decimals instead of being rounded away.
            Some(f) if f > 0.0 && f.is_finite() => f.to_string(),
            _ => return Err(bad()),
        }
    };
    parse_usd(field, &text).map_err(|e| {
        if e.message.contains("too large") {
            e
        } else {
            bad()
        }
    })
}

fn parse_cost(field: &str, c: &CostIn) -> Result<Price, InvalidInput> {
    let input = parse_price(&format!("{field}.input"), &c.input)?;
    let optional = |name: &str, n: &Option<Number>| {
        n.as_ref()
            .map(|n| parse_price(&format!("{field}.{name}"), n))
            .transpose()
    };
    Ok(Price {
        input,
        output: parse_price(&format!("{field}.output"), &c.output)?,
        // A cache price the operator did not give is charged as plain input: it is unknown, and
        // plain input never under-charges (airlock-llm reads Polpo's shape the same way).
        cache_read: optional("cacheRead", &c.cache_read)?.unwrap_or(input),
        cache_write: optional("cacheWrite", &c.cache_write)?.unwrap_or(input),
    })
}

/// A gateway config's model list (Polpo's custom model definitions), every error naming the
/// model's place in the list and the field.
fn parse_models(input: Vec<ModelIn>) -> Result<Vec<ModelSpec>, InvalidInput> {
    if input.len() > MAX_MODELS {
        return Err(InvalidInput::new(
            "models",
            format!("must have at most {MAX_MODELS} entries"),
        ));
    }
    let mut out: Vec<ModelSpec> = Vec::with_capacity(input.len());
    for (i, m) in input.into_iter().enumerate() {
        let field = format!("models[{i}]");
        ModelSpec::check_id(&format!("{field}.id"), &m.id)?;
        if out.iter().any(|prev| prev.id == m.id) {
            return Err(InvalidInput::new(format!("{field}.id"), "appears twice"));
        }
        let name = m
            .name
            .map(|n| Label::parse(&format!("{field}.name"), &n))
            .transpose()?;
        let mut images = false;
        if let Some(kinds) = &m.input {
            if kinds.is_empty() {
                return Err(InvalidInput::new(
                    format!("{field}.input"),
                    "must not be empty",
                ));
            }
            for (j, kind) in kinds.iter().enumerate() {
                match kind.as_str() {
                    "text" => {}
                    "image" => images = true,
                    _ => {
                        return Err(InvalidInput::new(
                            format!("{field}.input[{j}]"),
                            "must be text or image",
                        ))
                    }
                }
            }
        }
        let positive = |name: &str, v: Option<u64>| match v {
            Some(0) => Err(InvalidInput::new(
                format!("{field}.{name}"),
                "must be a positive integer",
            )),
            _ => Ok(v),
        };
        out.push(ModelSpec {
            id: m.id,
            name: name.map(|n| n.as_str().to_owned()),
            reasoning: m.reasoning.unwrap_or(false),
            images,
            cost: m
                .cost
                .as_ref()
                .map(|c| parse_cost(&format!("{field}.cost"), c))
                .transpose()?,
            context_window: positive("contextWindow", m.context_window)?,
            max_tokens: positive("maxTokens", m.max_tokens)?,
            tools: m.tools,
        });
    }
    Ok(out)
}

/// Adds the provider's required headers and checks the whole list again: they count against
/// the limit of [`MAX_CUSTOM_HEADERS`] like any other.
fn finish_headers(
    preset: Option<&Preset>,
    auth: &AuthMechanism,
    headers: &mut Vec<CustomHeader>,
) -> Result<(), InvalidInput> {
    if let Some(p) = preset {
        let before = headers.len();
        providers::add_required_headers(p, headers);
        if headers.len() > MAX_CUSTOM_HEADERS && before <= MAX_CUSTOM_HEADERS {
            return Err(InvalidInput::new(
                "custom_headers",
                format!(
                    "must have at most {MAX_CUSTOM_HEADERS} entries, the headers provider {} requires included",
                    p.id
                ),
            ));
        }
    }
    check_custom_headers("custom_headers", auth, headers)
}

fn audit_detail(row: &GatewayConfigRow) -> Value {
    if let Some(r) = &row.router {
        return json!({
            "name": row.name.as_str(),
            "type": "router",
            "backends": r.backends.iter().map(|b| json!({"gateway": b.gateway.as_str(), "secret": b.secret.as_str()})).collect::<Vec<_>>(),
        });
    }
    json!({
        "name": row.name.as_str(),
        "endpoint": row.endpoint.to_string(),
        "provider": row.llm.provider,
        "api": row.llm.api.as_str(),
    })
}

fn parse_description(text: Option<String>) -> Result<Option<String>, InvalidInput> {
    match text {
        Some(d) if d.chars().count() > MAX_DESCRIPTION => Err(InvalidInput::new(
            "description",
            format!("must be at most {MAX_DESCRIPTION} characters"),
        )),
        other => Ok(other),
    }
}

/// Resolves custom headers; a secret may be named by `sec_` id or by name, and must exist in the
/// caller's account.
async fn parse_headers(
    state: &AppState,
    caller: &Caller,
    auth: &AuthMechanism,
    input: Vec<CustomHeaderIn>,
) -> ApiResult<Vec<CustomHeader>> {
    let mut out = Vec::with_capacity(input.len());
    if input.len() > airlock_core::MAX_CUSTOM_HEADERS {
        return Err(InvalidInput::new("custom_headers", "must have at most 8 entries").into());
    }
    for (i, h) in input.into_iter().enumerate() {
        let field = format!("custom_headers[{i}]");
        let name = parse_header_name(&format!("{field}.name"), &h.name)?;
        let source = match (h.secret, h.value) {
            (Some(secret), None) => {
                let row = state
                    .store
                    .get_secret(&caller.account.id, secret_ref(&secret))
                    .await
                    .map_err(|e| match e {
                        airlock_store::StoreError::NotFound => ApiError::Invalid(format!(
                            "{field}.secret: no secret {secret} in this account"
                        )),
                        other => other.into(),
                    })?;
                HeaderSource::Secret(row.id)
            }
            (None, Some(value)) => {
                HeaderSource::Literal(parse_header_value(&format!("{field}.value"), &value)?)
            }
            _ => {
                return Err(
                    InvalidInput::new(field, "must have exactly one of secret and value").into(),
                )
            }
        };
        out.push(CustomHeader { name, source });
    }
    check_custom_headers("custom_headers", auth, &out)?;
    Ok(out)
}

/// The config's binding: a MAC under the active master key over what decides where its secret
/// goes and how (endpoint, auth mechanism, custom headers). The data plane refuses a config
/// whose binding does not check, so a database writer cannot repoint it.
fn bind(state: &AppState, row: &GatewayConfigRow) -> ApiResult<Vec<u8>> {
    let message = row.binding_message();
    state.keyring.bind(GATEWAY_BINDING, &message).map_err(|e| {
        tracing::error!(error = %e, "binding a gateway config failed");
        ApiError::Internal
    })
}

pub(crate) fn secret_ref(text: &str) -> SecretRef<'_> {
    if SecretId::looks_like(text) {
        SecretRef::Id(text)
    } else {
        SecretRef::Name(text)
    }
}

/// A gateway config of the caller's account by `gwc_` id or by name (the newest of that name).
pub(crate) async fn resolve(
    state: &AppState,
    caller: &Caller,
    text: &str,
) -> ApiResult<GatewayConfigRow> {
    let found = if GatewayConfigId::looks_like(text) {
        state
            .store
            .get_gateway_config(&caller.account.id, text)
            .await
    } else {
        state
            .store
            .gateway_config_by_name(&caller.account.id, text)
            .await
    };
    found.map_err(|e| ApiError::for_object(e, "gateway config", text))
}

pub(crate) async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Body(input): Body<GatewayConfigCreate>,
) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    let name = Label::parse("name", &input.name)?;
    let router_in = RouterIn {
        backends: input.backends,
        strategy: input.strategy,
        fallback: input.fallback,
        max_attempts: input.max_attempts,
        timeout_ms: input.timeout_ms,
        aliases: input.aliases,
    };
    if parse_type(input.kind.as_deref())? == Some(true) {
        refuse_plain_fields(&[
            ("provider", input.provider.is_some()),
            ("endpoint", input.endpoint.is_some()),
            ("auth_mechanism", input.auth_mechanism.is_some()),
            ("api", input.api.is_some()),
            ("models", input.models.is_some()),
            ("custom_headers", input.custom_headers.is_some()),
        ])?;
        if router_in.backends.is_none() {
            return Err(InvalidInput::new("backends", "is required for a router gateway").into());
        }
        let id = GatewayConfigId::generate();
        let (config, _) = parse_router(&state, &caller, &id, router_in, None).await?;
        let description = parse_description(input.description)?;
        let limits = input
            .limits
            .as_ref()
            .map(crate::limits::parse_limits)
            .transpose()?;
        let now = airlock_core::time::now_ms();
        let mut row = GatewayConfigRow {
            id,
            account_id: caller.account.id.clone(),
            name,
            endpoint: router_placeholder(),
            auth: AuthMechanism::Bearer,
            custom_headers: Vec::new(),
            description,
            create_time_ms: now,
            update_time_ms: now,
            binding: None,
            llm: LlmSettings::default(),
            router: Some(config),
        };
        row.binding = Some(bind(&state, &row)?);
        let audit = caller.audit(
            "gateway_config.create",
            "gateway_config",
            row.id.as_str(),
            audit_detail(&row),
        );
        state.store.insert_gateway_config(&row, &audit).await?;
        let scope = airlock_core::LimitScope::GatewayConfig(row.id.clone());
        if let Some(limits) = limits.filter(|l| !l.is_empty()) {
            crate::limits::set(&state, &caller, &scope, &limits).await?;
        }
        let view = crate::limits::with_limits(&state, scope, gateway_view(&row)).await?;
        return Ok(Json(view));
    }
    if let Some(field) = router_in.first_field() {
        return Err(InvalidInput::new(field, "is only for a router gateway (type router)").into());
    }
    let preset = input
        .provider
        .as_deref()
        .map(|id| providers::find("provider", id))
        .transpose()?;
    // Given fields win over the preset's; without a preset, endpoint and auth are required as
    // they always were.
    let endpoint = match (&input.endpoint, preset) {
        (Some(text), _) => parse_endpoint(&state, text)?,
        (None, Some(p)) => preset_endpoint(&state, p)?,
        (None, None) => {
            return Err(
                InvalidInput::new("endpoint", "is required unless provider is given").into(),
            )
        }
    };
    let auth = match (&input.auth_mechanism, preset) {
        (Some(a), _) => parse_auth("auth_mechanism", a)?,
        (None, Some(p)) => providers::auth(p)?,
        (None, None) => {
            return Err(
                InvalidInput::new("auth_mechanism", "is required unless provider is given").into(),
            )
        }
    };
    let api = match (&input.api, preset) {
        (Some(text), _) => Api::parse("api", text)?,
        (None, Some(p)) => p.api,
        (None, None) => Api::None,
    };
    let models = parse_models(input.models.unwrap_or_default())?;
    let description = parse_description(input.description)?;
    let limits = input
        .limits
        .as_ref()
        .map(crate::limits::parse_limits)
        .transpose()?;
    let mut custom_headers = parse_headers(
        &state,
        &caller,
        &auth,
        input.custom_headers.unwrap_or_default(),
    )
    .await?;
    finish_headers(preset, &auth, &mut custom_headers)?;
    let now = airlock_core::time::now_ms();
    let mut row = GatewayConfigRow {
        id: GatewayConfigId::generate(),
        account_id: caller.account.id.clone(),
        name,
        endpoint,
        auth,
        custom_headers,
        description,
        create_time_ms: now,
        update_time_ms: now,
        binding: None,
        llm: LlmSettings {
            provider: preset.map(|p| p.id.to_owned()),
            api,
            models,
        },
        router: None,
    };
    row.binding = Some(bind(&state, &row)?);
    let audit = caller.audit(
        "gateway_config.create",
        "gateway_config",
        row.id.as_str(),
        audit_detail(&row),
    );
    state.store.insert_gateway_config(&row, &audit).await?;
    if let Some(limits) = limits.filter(|l| !l.is_empty()) {
        let scope = airlock_core::LimitScope::GatewayConfig(row.id.clone());
        crate::limits::set(&state, &caller, &scope, &limits).await?;
    }
    let scope = airlock_core::LimitScope::GatewayConfig(row.id.clone());
    let view = crate::limits::with_limits(&state, scope, gateway_view(&row)).await?;
    Ok(Json(view))
}

pub(crate) async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    let page = page(&q)?;
    let filter = GatewayFilter {
        id: q.id.filter(|s| !s.is_empty()),
        name: q.name.filter(|s| !s.is_empty()),
        search: q.search.filter(|s| !s.is_empty()),
    };
    let listed = state
        .store
        .list_gateway_configs(&caller.account.id, &filter, &page)
        .await?;
    let view = list_view("gateway_configs", &listed, gateway_view);
    let view = crate::limits::list_with_limits(
        &state,
        &caller.account.id,
        "gateway",
        "gateway_configs",
        view,
    )
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
        .get_gateway_config(&caller.account.id, &id)
        .await
        .map_err(|e| ApiError::for_object(e, "gateway config", &id))?;
    let scope = airlock_core::LimitScope::GatewayConfig(row.id.clone());
    let view = crate::limits::with_limits(&state, scope, gateway_view(&row)).await?;
    Ok(Json(view))
}

pub(crate) async fn update(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Body(input): Body<GatewayConfigUpdate>,
) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    let mut row = state
        .store
        .get_gateway_config(&caller.account.id, &id)
        .await
        .map_err(|e| ApiError::for_object(e, "gateway config", &id))?;
    if let Some(name) = input.name {
        row.name = Label::parse("name", &name)?;
    }
    let router_in = RouterIn {
        backends: input.backends,
        strategy: input.strategy,
        fallback: input.fallback,
        max_attempts: input.max_attempts,
        timeout_ms: input.timeout_ms,
        aliases: input.aliases,
    };
    let is_router = row.router.is_some();
    if let Some(want) = parse_type(input.kind.as_deref())? {
        if want != is_router {
            return Err(InvalidInput::new(
                "type",
                "cannot be changed; create a new gateway config",
            )
            .into());
        }
    }
    if is_router {
        refuse_plain_fields(&[
            ("provider", input.provider.is_some()),
            ("endpoint", input.endpoint.is_some()),
            ("auth_mechanism", input.auth_mechanism.is_some()),
            ("api", input.api.is_some()),
            ("models", input.models.is_some()),
            ("custom_headers", input.custom_headers.is_some()),
        ])?;
        if !router_in.is_empty() {
            let (config, _) =
                parse_router(&state, &caller, &row.id, router_in, row.router.take()).await?;
            row.router = Some(config);
        }
        if let Some(description) = input.description {
            row.description = parse_description(Some(description))?;
        }
        let limits = input
            .limits
            .as_ref()
            .map(crate::limits::parse_limits)
            .transpose()?;
        row.update_time_ms = airlock_core::time::now_ms();
        row.binding = Some(bind(&state, &row)?);
        let audit = caller.audit(
            "gateway_config.update",
            "gateway_config",
            row.id.as_str(),
            audit_detail(&row),
        );
        state
            .store
            .update_gateway_config(&row, &audit)
            .await
            .map_err(|e| ApiError::for_object(e, "gateway config", &id))?;
        let scope = airlock_core::LimitScope::GatewayConfig(row.id.clone());
        if let Some(limits) = limits {
            crate::limits::set(&state, &caller, &scope, &limits).await?;
        }
        let view = crate::limits::with_limits(&state, scope, gateway_view(&row)).await?;
        return Ok(Json(view));
    }
    if let Some(field) = router_in.first_field() {
        return Err(InvalidInput::new(field, "is only for a router gateway (type router)").into());
    }
    // A new provider brings its defaults, as on create: endpoint, auth and api follow it unless
    // given. Naming the config's own provider again changes nothing else.
    let switched = match &input.provider {
        Some(id) if row.llm.provider.as_deref() != Some(id.as_str()) => {
            let p = providers::find("provider", id)?;
            row.llm.provider = Some(p.id.to_owned());
            Some(p)
        }
        _ => None,
    };
    match (input.endpoint, switched) {
        (Some(endpoint), _) => row.endpoint = parse_endpoint(&state, &endpoint)?,
        (None, Some(p)) => row.endpoint = preset_endpoint(&state, p)?,
        (None, None) => {}
    }
    match (input.auth_mechanism, switched) {
        (Some(auth), _) => row.auth = parse_auth("auth_mechanism", &auth)?,
        (None, Some(p)) => row.auth = providers::auth(p)?,
        (None, None) => {}
    }
    match (input.api, switched) {
        (Some(api), _) => row.llm.api = Api::parse("api", &api)?,
        (None, Some(p)) => row.llm.api = p.api,
        (None, None) => {}
    }
    if let Some(models) = input.models {
        row.llm.models = parse_models(models)?;
    }
    if let Some(description) = input.description {
        row.description = parse_description(Some(description))?;
    }
    if let Some(headers) = input.custom_headers {
        row.custom_headers = parse_headers(&state, &caller, &row.auth, headers).await?;
    }
    let limits = input
        .limits
        .as_ref()
        .map(crate::limits::parse_limits)
        .transpose()?;
    // The provider's required headers stay whatever list replaced the old one, and a new auth
    // mechanism must not collide with the headers that stay.
    let preset = match &row.llm.provider {
        Some(id) => airlock_llm::preset(id),
        None => None,
    };
    finish_headers(preset, &row.auth, &mut row.custom_headers)?;
    row.update_time_ms = airlock_core::time::now_ms();
    row.binding = Some(bind(&state, &row)?);
    let audit = caller.audit(
        "gateway_config.update",
        "gateway_config",
        row.id.as_str(),
        audit_detail(&row),
    );
    state
        .store
        .update_gateway_config(&row, &audit)
        .await
        .map_err(|e| ApiError::for_object(e, "gateway config", &id))?;
    if let Some(limits) = limits {
        let scope = airlock_core::LimitScope::GatewayConfig(row.id.clone());
        crate::limits::set(&state, &caller, &scope, &limits).await?;
    }
    let scope = airlock_core::LimitScope::GatewayConfig(row.id.clone());
    let view = crate::limits::with_limits(&state, scope, gateway_view(&row)).await?;
    Ok(Json(view))
}

pub(crate) async fn delete(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Body(_): Body<Empty>,
) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    let row = state
        .store
        .get_gateway_config(&caller.account.id, &id)
        .await
        .map_err(|e| ApiError::for_object(e, "gateway config", &id))?;
    let audit = caller.audit(
        "gateway_config.delete",
        "gateway_config",
        row.id.as_str(),
        json!({"name": row.name.as_str()}),
    );
    state
        .store
        .delete_gateway_config(
            &caller.account.id,
            &row.id,
            airlock_core::time::now_ms(),
            &audit,
        )
        .await
        .map_err(|e| ApiError::for_object(e, "gateway config", &id))?;
    let scope = airlock_core::LimitScope::GatewayConfig(row.id.clone());
    let view = crate::limits::with_limits(&state, scope, gateway_view(&row)).await?;
    Ok(Json(view))
}
