//! Which backends may serve a request, and in which order they are tried.
//!
//! 1. **Resolve** the requested `model`: `auto` (every backend, each with its first model),
//!    an alias (one backend and model), `<backend name or gwc_ id>:<model>` (that backend), or
//!    a bare model id (every backend that lists it; backends without a list take any model).
//!    A `model` with a `:` that names no backend of this router is refused (SECURITY #26: a
//!    model name never chooses an upstream).
//! 2. **Filter** by capability, from the backend gateway's model list: tools (else the
//!    provider's default, `airlock_llm::providers::supports_tools`), images, and the context
//!    window against the input estimate plus `max_tokens` (else, for a request over
//!    [`TABLE_WINDOW_ABOVE`] tokens, the bundled price table's window); then by health: a backend in
//!    cooldown or with an open breaker is left out, and so is one whose provider quota
//!    (`limits`) this replica knows to be spent (`quota`, from memory).
//! 3. **Order** by strategy (or by `prefer`): priority, weighted random, latency (peak-EWMA of
//!    two random choices first), cost (cheapest for the expected tokens), quality (priciest).

use std::sync::Arc;

use airlock_core::{LimitKind, Price};

use super::{BackendEntry, RouterEntry};
use crate::quota::Quota;
use crate::state::GatewayEntry;
use airlock_core::router::Strategy;

/// Requests needing at most this many tokens (input estimate plus `max_tokens`) are not checked
/// against the bundled price table's context windows, only against the model list's.
pub(crate) const TABLE_WINDOW_ABOVE: u64 = 8_192;

/// What the client asked to optimise (`prefer` or `x-airlock-prefer`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Prefer {
    Auto,
    Speed,
    Quality,
    Cost,
}

impl Prefer {
    pub(crate) fn parse(text: &str) -> Option<Prefer> {
        Some(match text {
            "auto" => Prefer::Auto,
            "speed" => Prefer::Speed,
            "quality" => Prefer::Quality,
            "cost" => Prefer::Cost,
            _ => return None,
        })
    }
}

/// What selection needs to know of the request.
pub(crate) struct Want<'a> {
    pub(crate) model: &'a str,
    pub(crate) prefer: Prefer,
    pub(crate) images: bool,
    /// The request defines tools (OpenAI `tools` / `functions`, Anthropic `tools`).
    pub(crate) tools: bool,
    pub(crate) input_tokens: u64,
    pub(crate) max_tokens: Option<u64>,
}

/// A backend and the model it would be asked for.
pub(crate) struct Candidate {
    pub(crate) index: usize,
    pub(crate) model: String,
    pub(crate) gateway: Arc<GatewayEntry>,
}

/// Why no backend can take the request.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// `model` names something that is not a backend of this router (400).
    UnknownBackend,
    /// No backend serves that model (404).
    NoModel,
    /// Backends serve it, but none can take this request (400): too large, images.
    Incapable(String),
    /// Every capable backend is in cooldown or has its breaker open (503), until `wait_ms`
    /// from now.
    Unavailable { wait_ms: u64, reason: String },
}

/// The ordered candidates and the reason for the order.
pub(crate) struct Plan {
    pub(crate) candidates: Vec<Candidate>,
    pub(crate) reason: String,
}

/// The models a backend serves: its own list, else its gateway's model list; `None`: any.
fn served<'a>(backend: &'a BackendEntry, gateway: &'a GatewayEntry) -> Option<Vec<&'a str>> {
    if !backend.models.is_empty() {
        Some(backend.models.iter().map(String::as_str).collect())
    } else if !gateway.llm.models.is_empty() {
        Some(gateway.llm.models.iter().map(|m| m.id.as_str()).collect())
    } else {
        None
    }
}

/// Resolves, filters and orders. `now_ms` is the clock for cooldowns; `quota` knows which
/// backends' provider quotas are spent.
pub(crate) fn plan(
    router: &RouterEntry,
    want: &Want<'_>,
    now_ms: i64,
    quota: &Quota,
) -> Result<Plan, Refused> {
    let loaded: Vec<Option<Arc<GatewayEntry>>> =
        router.backends.iter().map(|b| b.gateway.load()).collect();
    let mut picked: Vec<Candidate> = Vec::new();
    let mut push = |index: usize, model: &str| {
        if let Some(gateway) = &loaded[index] {
            picked.push(Candidate {
                index,
                model: model.to_owned(),
                gateway: gateway.clone(),
            });
        }
    };
    let model = want.model;
    if model == "auto" {
        for (i, b) in router.backends.iter().enumerate() {
            if let Some(g) = &loaded[i] {
                if let Some(first) = served(b, g).and_then(|list| list.first().copied()) {
                    push(i, first);
                }
            }
        }
    } else if let Some((index, target)) = router.aliases.get(model) {
        push(*index, target);
    } else if let Some((name, rest)) = pinned(router, model) {
        for (i, b) in router.backends.iter().enumerate() {
            if b.name == name || b.gateway_id.as_str() == name {
                push(i, rest);
            }
        }
    } else {
        let mut explicit = Vec::new();
        let mut any = Vec::new();
        for (i, b) in router.backends.iter().enumerate() {
            if let Some(g) = &loaded[i] {
                match served(b, g) {
                    Some(list) if list.contains(&model) => explicit.push(i),
                    Some(_) => {}
                    None => any.push(i),
                }
            }
        }
        if explicit.is_empty() && model.contains(':') {
            // Not a backend name, not a listed model: it may name a host (SECURITY #26).
            return Err(Refused::UnknownBackend);
        }
        let chosen = if explicit.is_empty() { any } else { explicit };
        for i in chosen {
            push(i, model);
        }
    }
    if picked.is_empty() {
        return Err(Refused::NoModel);
    }

    // Capability, from the model list's metadata where it has the model (tools: else the
    // provider's default).
    let mut incapable = Vec::new();
    picked.retain(|c| {
        let spec = c.gateway.llm.models.iter().find(|m| m.id == c.model);
        if want.tools {
            let tools = spec.and_then(|s| s.tools).unwrap_or_else(|| {
                airlock_llm::providers::supports_tools(c.gateway.llm.provider.as_deref(), &c.model)
            });
            if !tools {
                incapable.push(format!(
                    "{} ({}) takes no tools",
                    router.backends[c.index].name, c.model
                ));
                return false;
            }
        }
        if want.images && spec.is_some_and(|s| !s.images) {
            incapable.push(format!("{} takes no images", router.backends[c.index].name));
            return false;
        }
        let need = want.input_tokens + want.max_tokens.unwrap_or(0);
        // The list's window, else (for a request larger than any model's smallest window) the
        // bundled table's: a table lookup is a model match, so small requests skip it.
        let window = spec.and_then(|s| s.context_window).or_else(|| {
            let provider = c.gateway.llm.provider.as_deref()?;
            (need > TABLE_WINDOW_ABOVE)
                .then(|| airlock_llm::price::context_window(provider, &c.model))
                .flatten()
        });
        if let Some(window) = window {
            if need > window {
                incapable.push(format!(
                    "{} has a context window of {window} tokens",
                    router.backends[c.index].name
                ));
                return false;
            }
        }
        true
    });
    if picked.is_empty() {
        return Err(Refused::Incapable(incapable.join("; ")));
    }

    // Health.
    let mut skipped = Vec::new();
    let mut earliest: Option<i64> = None;
    picked.retain(|c| {
        let backend = &router.backends[c.index];
        match backend.health.out_until(now_ms) {
            None => true,
            Some(until) => {
                let why = if backend.health.in_cooldown(now_ms) {
                    "in cooldown"
                } else {
                    "breaker open"
                };
                skipped.push(format!("{} {why} until {until}", backend.name));
                earliest = Some(earliest.map_or(until, |e| e.min(until)));
                false
            }
        }
    });
    // Provider quotas: a backend known to be out of one is left out like one in cooldown.
    picked.retain(|c| {
        let backend = &router.backends[c.index];
        let spent = backend.quota.as_ref().and_then(|q| quota.spent(q));
        match spent {
            None => true,
            Some((kind, until)) => {
                skipped.push(out_of_quota(&backend.name, Some(kind), until));
                // On the limits' clock: the wait is measured from its now.
                let until = now_ms + (until - quota.now()).max(0);
                earliest = Some(earliest.map_or(until, |e| e.min(until)));
                false
            }
        }
    });
    if picked.is_empty() {
        let wait_ms = earliest.map_or(0, |e| (e - now_ms).max(0) as u64);
        return Err(Refused::Unavailable {
            wait_ms,
            reason: skipped.join("; "),
        });
    }

    let strategy = match want.prefer {
        Prefer::Auto => Order::By(router.strategy),
        Prefer::Speed => Order::By(Strategy::Latency),
        Prefer::Cost => Order::By(Strategy::Cost),
        Prefer::Quality => Order::Quality,
    };
    let mut reason = order(router, &mut picked, strategy, want, now_ms).to_owned();
    for note in skipped.iter().chain(&incapable) {
        reason.push_str("; ");
        reason.push_str(note);
    }
    Ok(Plan {
        candidates: picked,
        reason,
    })
}

/// The routing log's note for a backend out of a quota: "openai out of its rpm quota until …"
/// (`kind` `None`: its quota could not be checked, the ledger being unreachable).
pub(crate) fn out_of_quota(backend: &str, kind: Option<LimitKind>, until: i64) -> String {
    match kind {
        Some(kind) => {
            let name = airlock_core::router::BackendLimits::name_of(kind);
            format!("{backend} out of its {name} quota until {until}")
        }
        None => format!("{backend} quota cannot be checked (limits unavailable) until {until}"),
    }
}

/// `<backend>:<model>` when the part before the first `:` names a backend of this router.
fn pinned<'a>(router: &RouterEntry, model: &'a str) -> Option<(&'a str, &'a str)> {
    let (name, rest) = model.split_once(':')?;
    let known = router
        .backends
        .iter()
        .any(|b| b.name == name || b.gateway_id.as_str() == name);
    (known && !rest.is_empty()).then_some((name, rest))
}

enum Order {
    By(Strategy),
    Quality,
}

fn order(
    router: &RouterEntry,
    picked: &mut [Candidate],
    order: Order,
    want: &Want<'_>,
    now_ms: i64,
) -> &'static str {
    match order {
        Order::By(Strategy::Priority) => {
            picked.sort_by_key(|c| router.backends[c.index].priority);
            "priority order"
        }
        Order::By(Strategy::Weighted) => {
            // Efraimidis–Spirakis: each key is u^(1/w); the largest first. Weight 0 goes last.
            let mut keyed: Vec<(f64, usize)> = picked
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let w = f64::from(router.backends[c.index].weight);
                    let key = if w > 0.0 {
                        random_unit().powf(1.0 / w)
                    } else {
                        -1.0
                    };
                    (key, i)
                })
                .collect();
            keyed.sort_by(|a, b| b.0.total_cmp(&a.0));
            apply_permutation(picked, keyed.iter().map(|k| k.1).collect());
            "weighted random"
        }
        Order::By(Strategy::Latency) => {
            let score = |c: &Candidate| router.backends[c.index].health.load_score(now_ms);
            let mut rest: Vec<usize> = (0..picked.len()).collect();
            rest.sort_by(|&a, &b| score(&picked[a]).total_cmp(&score(&picked[b])));
            if picked.len() > 2 {
                // Two random choices: the better of two goes first, so a burst does not all
                // go to the one backend with the best score.
                let a = (random_u64() % picked.len() as u64) as usize;
                let mut b = (random_u64() % (picked.len() as u64 - 1)) as usize;
                if b >= a {
                    b += 1;
                }
                let first = if score(&picked[a]) <= score(&picked[b]) {
                    a
                } else {
                    b
                };
                rest.retain(|&i| i != first);
                rest.insert(0, first);
            }
            apply_permutation(picked, rest);
            "lowest latency (peak EWMA, two random choices)"
        }
        Order::By(Strategy::Cost) => {
            let cost = |c: &Candidate| expected_cost(c, want);
            picked.sort_by_key(|c| cost(c).unwrap_or(u128::MAX));
            "cheapest capable backend"
        }
        Order::Quality => {
            let cost = |c: &Candidate| expected_cost(c, want);
            picked.sort_by_key(|c| std::cmp::Reverse(cost(c).unwrap_or(0)));
            "strongest capable backend (the priciest model)"
        }
    }
}

/// The output tokens expected when the request sets no cap.
const EXPECTED_OUTPUT: u64 = 1_024;

/// What the request would cost on this candidate, in nano-dollars × 10⁶; `None` when the
/// price is unknown.
fn expected_cost(c: &Candidate, want: &Want<'_>) -> Option<u128> {
    let price: Price = crate::meter::resolve_price(
        &c.gateway.llm.models,
        c.gateway.llm.provider.as_deref(),
        &c.model,
        want.input_tokens,
    )?;
    let output = want
        .max_tokens
        .unwrap_or(EXPECTED_OUTPUT)
        .min(EXPECTED_OUTPUT * 8);
    Some(
        u128::from(price.input) * u128::from(want.input_tokens)
            + u128::from(price.output) * u128::from(output),
    )
}

fn apply_permutation(picked: &mut [Candidate], order: Vec<usize>) {
    let mut taken: Vec<Option<Candidate>> = Vec::with_capacity(picked.len());
    // Move out by swapping with placeholders is not possible without Default; rebuild instead.
    let mut all: Vec<Candidate> = Vec::with_capacity(picked.len());
    for slot in picked.iter_mut() {
        all.push(Candidate {
            index: slot.index,
            model: std::mem::take(&mut slot.model),
            gateway: slot.gateway.clone(),
        });
    }
    taken.extend(all.into_iter().map(Some));
    for (slot, i) in picked.iter_mut().zip(order) {
        if let Some(c) = taken[i].take() {
            *slot = c;
        }
    }
}

/// A random number from the standard library's per-instance hash keys (no `rand` dependency
/// for two coin flips a request).
fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.finish()
}

/// A random number in (0, 1].
fn random_unit() -> f64 {
    ((random_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64
}
