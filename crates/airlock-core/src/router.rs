//! A router gateway's settings: the provider backends behind one endpoint and how a request
//! picks among them (`docs/router.md`). Parsed and checked here; the control plane resolves
//! the names it was given into ids first, and the data plane only ever sees ids.

use std::collections::BTreeMap;

use crate::error::InvalidInput;
use crate::ids::{GatewayConfigId, SecretId};
use crate::limits::LimitKind;

/// At most this many backends behind one router.
pub const MAX_BACKENDS: usize = 16;
/// At most this many aliases.
pub const MAX_ALIASES: usize = 64;
/// The longest timeout before a backend's response head a router may set.
pub const MAX_TIMEOUT_MS: u64 = 600_000;
/// The default timeout before a backend's response head.
pub const DEFAULT_TIMEOUT_MS: u64 = 60_000;
/// The most attempts one request may make.
pub const MAX_ATTEMPTS: u32 = 8;

/// How a router orders the backends able to serve a request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Strategy {
    /// Lowest `priority` first, then the order of the list.
    #[default]
    Priority,
    /// Random, in proportion to `weight`.
    Weighted,
    /// Lowest peak-EWMA latency, of two random choices.
    Latency,
    /// Cheapest for the expected tokens.
    Cost,
}

impl Strategy {
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Priority => "priority",
            Strategy::Weighted => "weighted",
            Strategy::Latency => "latency",
            Strategy::Cost => "cost",
        }
    }

    pub fn parse(field: &str, text: &str) -> Result<Strategy, InvalidInput> {
        Ok(match text {
            "priority" => Strategy::Priority,
            "weighted" => Strategy::Weighted,
            "latency" => Strategy::Latency,
            "cost" => Strategy::Cost,
            _ => {
                return Err(InvalidInput::new(
                    field,
                    "must be priority, weighted, latency or cost",
                ))
            }
        })
    }
}

/// A provider's quota declared on a backend (`backends[i].limits`): requests per minute,
/// tokens (input + output) per minute and requests per day of the provider account behind it.
/// Counted across replicas like the limits (`docs/limits.md`), in the same UTC windows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BackendLimits {
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
    pub rpd: Option<u64>,
}

impl BackendLimits {
    /// The quotas' names, and the limit each is counted as.
    pub const NAMES: [(&'static str, LimitKind); 3] = [
        ("rpm", LimitKind::RequestsPerMinute),
        ("tpm", LimitKind::TokensPerMinute),
        ("rpd", LimitKind::RequestsPerDay),
    ];

    pub fn is_empty(&self) -> bool {
        self.iter().next().is_none()
    }

    /// The quota called `name`, as a mutable slot; `None` for an unknown name.
    pub fn slot(&mut self, name: &str) -> Option<&mut Option<u64>> {
        match name {
            "rpm" => Some(&mut self.rpm),
            "tpm" => Some(&mut self.tpm),
            "rpd" => Some(&mut self.rpd),
            _ => None,
        }
    }

    /// The quotas that are set: name, the limit it counts as, value.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, LimitKind, u64)> + '_ {
        let values = [self.rpm, self.tpm, self.rpd];
        Self::NAMES
            .into_iter()
            .zip(values)
            .filter_map(|((name, kind), v)| Some((name, kind, v?)))
    }

    /// A quota's name from the limit it counts as.
    pub fn name_of(kind: LimitKind) -> &'static str {
        Self::NAMES
            .iter()
            .find(|(_, k)| *k == kind)
            .map_or(kind.as_str(), |(name, _)| name)
    }
}

/// One backend: a gateway config (its endpoint, auth and dialect) and the secret it uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backend {
    /// The backend gateway config's name when the router was saved: what `name:model` pins.
    /// A label, not covered by the binding (the id is).
    pub name: String,
    pub gateway: GatewayConfigId,
    pub secret: SecretId,
    /// Share of the traffic under [`Strategy::Weighted`] (default 1; 0 = only as a fallback).
    pub weight: u32,
    /// Order under [`Strategy::Priority`]: lower first (default 0).
    pub priority: i32,
    /// The model ids this backend serves; empty: the models of its gateway config's model list,
    /// or any model when that list is empty too.
    pub models: Vec<String>,
    /// The provider's quota on this backend (empty: none declared).
    pub limits: BackendLimits,
}

/// A router gateway's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouterConfig {
    pub backends: Vec<Backend>,
    pub strategy: Strategy,
    /// Whether a failed attempt moves on to the next backend.
    pub fallback: bool,
    /// Attempts per request, the first included (default: the number of backends, at most
    /// [`MAX_ATTEMPTS`]).
    pub max_attempts: u32,
    /// Time allowed for each backend's response head.
    pub timeout_ms: u64,
    /// `name` → (backend index, model): an alias names one backend and one model.
    pub aliases: BTreeMap<String, (usize, String)>,
}

impl RouterConfig {
    /// Checks what does not need the store: counts and ranges. Backends are resolved and
    /// checked by the control plane (same account, a dialect, not a router).
    pub fn check(&self) -> Result<(), InvalidInput> {
        if self.backends.is_empty() {
            return Err(InvalidInput::new(
                "backends",
                "must name at least one backend",
            ));
        }
        if self.backends.len() > MAX_BACKENDS {
            return Err(InvalidInput::new(
                "backends",
                format!("must have at most {MAX_BACKENDS} entries"),
            ));
        }
        for (i, b) in self.backends.iter().enumerate() {
            for (j, m) in b.models.iter().enumerate() {
                crate::llm::ModelSpec::check_id(&format!("backends[{i}].models[{j}]"), m)?;
            }
        }
        if self.max_attempts == 0 || self.max_attempts > MAX_ATTEMPTS {
            return Err(InvalidInput::new(
                "max_attempts",
                format!("must be from 1 to {MAX_ATTEMPTS}"),
            ));
        }
        if self.timeout_ms == 0 || self.timeout_ms > MAX_TIMEOUT_MS {
            return Err(InvalidInput::new(
                "timeout_ms",
                format!("must be from 1 to {MAX_TIMEOUT_MS}"),
            ));
        }
        if self.aliases.len() > MAX_ALIASES {
            return Err(InvalidInput::new(
                "aliases",
                format!("must have at most {MAX_ALIASES} entries"),
            ));
        }
        for (name, (index, model)) in &self.aliases {
            let field = format!("aliases.{name}");
            crate::llm::ModelSpec::check_id(&field, name)?;
            if name == "auto" || name.contains(':') {
                return Err(InvalidInput::new(field, "must not be auto or contain ':'"));
            }
            if *index >= self.backends.len() {
                return Err(InvalidInput::new(field, "names no backend of this router"));
            }
            crate::llm::ModelSpec::check_id(&field, model)?;
        }
        Ok(())
    }

    /// The canonical bytes of what decides where each credential goes: every backend's
    /// gateway and secret, in order. Appended to the gateway binding, so a database writer
    /// cannot pair a backend with another secret.
    pub fn binding_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 * self.backends.len() + 16);
        out.extend_from_slice(b"router");
        out.extend_from_slice(&(self.backends.len() as u32).to_be_bytes());
        for b in &self.backends {
            for part in [b.gateway.as_str(), b.secret.as_str()] {
                out.extend_from_slice(&(part.len() as u32).to_be_bytes());
                out.extend_from_slice(part.as_bytes());
            }
        }
        out
    }
}

/// The endpoint a router config is stored with: routers have no upstream of their own, and
/// nothing is ever sent there (the data plane serves router tokens itself).
pub const ROUTER_PLACEHOLDER_ENDPOINT: &str = "https://router.invalid";

/// One backend's live health, as the data plane sees it (`GET …/status`).
#[derive(Clone, Debug, PartialEq)]
pub struct BackendStatus {
    pub name: String,
    pub gateway: GatewayConfigId,
    /// Neither in cooldown nor with its breaker open.
    pub healthy: bool,
    pub cooldown_until_ms: Option<i64>,
    pub latency_ewma_ms: Option<f64>,
    pub requests_last_minute: u64,
    pub errors_last_minute: u64,
    /// The provider's remaining requests in its window, where it reports them.
    pub remaining: Option<i64>,
    pub resets_in_ms: Option<i64>,
}

/// One attempt of a routed request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoutingAttempt {
    /// The backend's gateway config name.
    pub backend: String,
    pub model: String,
    /// `ok`, or why it failed: `connect_failed`, `timeout`, `rate_limited`, `upstream_5xx`,
    /// `error_event`, `unsupported`, `malformed`, `unavailable`, `bad_answer`.
    pub outcome: String,
    pub status: Option<u16>,
    pub elapsed_ms: u64,
}

/// How one request was routed (`GET …/routing-log`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoutingDecision {
    pub request_id: String,
    pub time_ms: i64,
    pub model_requested: String,
    /// The backend that served it, if one did.
    pub provider: Option<String>,
    pub model: Option<String>,
    pub attempts: Vec<RoutingAttempt>,
    /// The rule that ordered the candidates, and what was left out and why.
    pub reason: String,
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    pub elapsed_ms: u64,
}

/// Which backend would serve a request now (`POST …/route-preview`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoutePreview {
    /// The first candidate's backend name and model; `None` when none is available now.
    pub provider: Option<String>,
    pub model: Option<String>,
    /// Every candidate in the order they would be tried.
    pub candidates: Vec<(String, String)>,
    pub reason: String,
    /// Milliseconds until a backend is available (0: now).
    pub wait_ms: u64,
}

/// What the control plane may ask the data plane in the same process about its routers. A
/// process without a data plane has none, and answers 503 `no_data_plane`.
pub trait RouterInspector: Send + Sync + 'static {
    /// Each backend's health; `None` when the data plane has no such router.
    fn status(&self, id: &GatewayConfigId) -> Option<Vec<BackendStatus>>;
    /// The latest decisions, newest first; `None` when the data plane has no such router.
    fn routing_log(&self, id: &GatewayConfigId, limit: usize) -> Option<Vec<RoutingDecision>>;
    /// Which backend would serve `body` (as the client would send it to `path`) now; calls
    /// no provider. `Err` is a client error message (a 400).
    fn preview(
        &self,
        id: &GatewayConfigId,
        anthropic: bool,
        body: &[u8],
    ) -> Option<Result<RoutePreview, InvalidInput>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> RouterConfig {
        RouterConfig {
            backends: vec![Backend {
                name: "openai".into(),
                gateway: GatewayConfigId::generate(),
                secret: SecretId::generate(),
                weight: 1,
                priority: 0,
                models: vec![],
                limits: BackendLimits::default(),
            }],
            strategy: Strategy::Priority,
            fallback: true,
            max_attempts: 1,
            timeout_ms: DEFAULT_TIMEOUT_MS,
            aliases: BTreeMap::new(),
        }
    }

    #[test]
    fn checks_name_their_field() {
        type Change = Box<dyn Fn(&mut RouterConfig)>;
        let cases: Vec<(Change, &str)> = vec![
            (Box::new(|c| c.backends.clear()), "backends"),
            (Box::new(|c| c.max_attempts = 0), "max_attempts"),
            (Box::new(|c| c.max_attempts = 9), "max_attempts"),
            (Box::new(|c| c.timeout_ms = 0), "timeout_ms"),
            (
                Box::new(|c| {
                    c.aliases.insert("fast".into(), (3, "m".into()));
                }),
                "aliases.fast",
            ),
            (
                Box::new(|c| {
                    c.aliases.insert("auto".into(), (0, "m".into()));
                }),
                "aliases.auto",
            ),
        ];
        assert!(config().check().is_ok());
        for (change, field) in cases {
            let mut c = config();
            change(&mut c);
            assert_eq!(c.check().unwrap_err().field, field);
        }
    }

    #[test]
    fn binding_bytes_cover_each_pairing() {
        let a = config();
        let mut b = a.clone();
        b.backends[0].secret = SecretId::generate();
        assert_ne!(a.binding_bytes(), b.binding_bytes());
        let mut c = a.clone();
        c.backends[0].weight = 5;
        assert_eq!(a.binding_bytes(), c.binding_bytes());
    }
}
