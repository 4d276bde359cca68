//! Prices and costs in integers: nano-dollars (1 USD = 10^9 nano-USD), never floats.
//!
//! A [`Price`] holds nano-USD per *million* tokens, so any price with up to 9 decimals per
//! million is exact ($3/M is `3_000_000_000`, $0.01875/M is `18_750_000`). [`cost_nanos`] sums
//! tokens × price and divides by a million once, rounding up, so a request is never
//! under-charged by rounding and the sum of parts cannot drift.
//!
//! Where prices come from, first match wins:
//! 1. the gateway's own model list ([`ModelSpec`], Polpo's custom model definition shape), when
//!    the model is listed there with a cost;
//! 2. the bundled price table (genai-prices, pydantic's maintained data, pinned in Cargo.lock),
//!    for presets that map to one of its providers;
//! 3. nothing: the cost is null. A price is never guessed.

use std::time::SystemTime;

use genai_prices::{Calculator, PriceRequest, UsageKey};
use serde::{Deserialize, Serialize};

use crate::error::InvalidInput;
use crate::providers::preset;
use crate::usage::{sanitize_model, Usage, MAX_MODEL_LEN, MAX_TOKENS};

pub use airlock_core::llm::{format_usd, parse_usd, Price, NANOS_PER_USD};

/// The cost of `usage` at `price` in nano-USD: [`Price::cost_nanos`] (summed, divided by a
/// million once, rounded up, saturating).
pub fn cost_nanos(price: &Price, usage: &Usage) -> u64 {
    price.cost_nanos(usage)
}

/// A price given as a JSON number of dollars, made exact: the number's shortest decimal
/// spelling (what the operator wrote, for any price with up to 17 significant digits) must have
/// at most 9 decimals.
fn usd_from_number(value: f64) -> Result<u64, InvalidInput> {
    if !value.is_finite() {
        return Err(InvalidInput::new("", "must be a finite number"));
    }
    if value == 0.0 {
        return Ok(0);
    }
    // Display never uses an exponent for f64, so `1e-10` reads as 0.0000000001 and is refused.
    parse_usd("", &value.to_string())
}

pub use airlock_core::ModelSpec;

/// A custom model definition as Polpo writes it (`models` of a gateway config):
/// `{"id", "name"?, "reasoning"?, "input"?: ["text", "image"], "cost"?: {"input", "output",
/// "cacheRead", "cacheWrite"} (USD per million tokens), "contextWindow"?, "maxTokens"?}`.
/// Other fields of Polpo's shape (`api`, `provider`, `baseUrl`, ...) are ignored, so a Polpo
/// definition can be pasted as it is.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ModelDef {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<CostDef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_window: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
}

/// Prices in USD per million tokens, as JSON numbers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CostDef {
    #[serde(default)]
    pub input: Option<f64>,
    #[serde(default)]
    pub output: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_read: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write: Option<f64>,
}

/// The most models one gateway may list.
pub const MAX_MODELS: usize = 1000;

/// Validates one definition into the domain's [`ModelSpec`]. Errors name the field within it
/// (`cost.input`); the caller adds where the definition sits (`models[3]`).
pub fn parse_model(def: &ModelDef) -> Result<ModelSpec, InvalidInput> {
    let id = sanitize_model(def.id.as_bytes())
        .ok_or_else(|| InvalidInput::new("id", "must be 1 to 256 printable ascii characters"))?;
    let name = match &def.name {
        None => None,
        Some(name) if name.is_empty() || name.chars().count() > MAX_MODEL_LEN => {
            return Err(InvalidInput::new("name", "must be 1 to 256 characters"));
        }
        Some(name) if name.chars().any(char::is_control) => {
            return Err(InvalidInput::new(
                "name",
                "must not contain control characters",
            ));
        }
        Some(name) => Some(name.clone()),
    };
    let images = match &def.input {
        None => false,
        Some(kinds) if kinds.is_empty() => {
            return Err(InvalidInput::new("input", "must not be empty"));
        }
        Some(kinds) => {
            let mut images = false;
            for (i, kind) in kinds.iter().enumerate() {
                match kind.as_str() {
                    "text" => {}
                    "image" => images = true,
                    _ => {
                        return Err(InvalidInput::new(
                            format!("input[{i}]"),
                            "must be text or image",
                        ));
                    }
                }
            }
            images
        }
    };
    let cost = def
        .cost
        .as_ref()
        .map(parse_cost)
        .transpose()
        .map_err(|e| e.within("cost"))?;
    let tokens = |field: &str, value: Option<u64>| match value {
        Some(0) => Err(InvalidInput::new(field, "must be positive")),
        Some(n) if n > MAX_TOKENS => Err(InvalidInput::new(field, "is too large")),
        _ => Ok(value),
    };
    Ok(ModelSpec {
        id,
        name,
        reasoning: def.reasoning.unwrap_or(false),
        images,
        cost,
        context_window: tokens("contextWindow", def.context_window)?,
        max_tokens: tokens("maxTokens", def.max_tokens)?,
    })
}

/// The definition a model was parsed from, in its canonical form (for reads).
pub fn model_def(model: &ModelSpec) -> ModelDef {
    let mut input = vec!["text".to_owned()];
    if model.images {
        input.push("image".to_owned());
    }
    // An integer below 2^53 nano-USD divided by 10^9 is the f64 nearest the decimal, whose
    // shortest spelling is that decimal again.
    let usd = |nanos: u64| nanos as f64 / NANOS_PER_USD as f64;
    ModelDef {
        id: model.id.clone(),
        name: model.name.clone(),
        reasoning: Some(model.reasoning),
        input: Some(input),
        cost: model.cost.map(|cost| CostDef {
            input: Some(usd(cost.input)),
            output: Some(usd(cost.output)),
            cache_read: Some(usd(cost.cache_read)),
            cache_write: Some(usd(cost.cache_write)),
        }),
        context_window: model.context_window,
        max_tokens: model.max_tokens,
    }
}

/// `input` and `output` are required. A missing `cacheRead` or `cacheWrite` is charged as plain
/// input: the provider's cache price is unknown, and plain input never under-charges.
fn parse_cost(cost: &CostDef) -> Result<Price, InvalidInput> {
    let usd_per_million = |field: &str, value: Option<f64>| -> Result<Option<u64>, InvalidInput> {
        value
            .map(|value| {
                if value < 0.0 {
                    return Err(InvalidInput::new(field, "must not be negative"));
                }
                usd_from_number(value).map_err(|e| e.within(field))
            })
            .transpose()
    };
    let required = |field: &str, value: Option<f64>| {
        usd_per_million(field, value)?.ok_or_else(|| InvalidInput::new(field, "is required"))
    };
    let input = required("input", cost.input)?;
    let output = required("output", cost.output)?;
    Ok(Price {
        input,
        output,
        cache_read: usd_per_million("cacheRead", cost.cache_read)?.unwrap_or(input),
        cache_write: usd_per_million("cacheWrite", cost.cache_write)?.unwrap_or(input),
    })
}

/// Validates a gateway's whole model list: each definition, at most [`MAX_MODELS`], ids unique.
/// Errors name the place in the list (`[3].cost.input`); the caller adds `models`.
pub fn parse_models(defs: &[ModelDef]) -> Result<Vec<ModelSpec>, InvalidInput> {
    if defs.len() > MAX_MODELS {
        return Err(InvalidInput::new("", "must have at most 1000 models"));
    }
    let mut models: Vec<ModelSpec> = Vec::with_capacity(defs.len());
    for (i, def) in defs.iter().enumerate() {
        let model = parse_model(def).map_err(|e| e.within(&format!("[{i}]")))?;
        if models.iter().any(|other| other.id == model.id) {
            return Err(InvalidInput::new(format!("[{i}].id"), "is listed twice"));
        }
        models.push(model);
    }
    Ok(models)
}

/// The bundled price table, decoded on first use (tens of milliseconds; see [`warm_up`]).
fn table() -> &'static Calculator {
    Calculator::bundled()
}

/// Decodes the bundled price table now, so that the first request priced does not wait for it.
pub fn warm_up() {
    let _ = table();
}

/// The bundled table's id for an Airlock provider id: a preset's mapping, or the id itself when
/// it is one of the table's own. Local servers and presets the table lacks map to nothing.
fn table_provider(provider_id: &str) -> Option<&'static str> {
    match preset(provider_id) {
        Some(preset) => preset.price_provider,
        None => table()
            .providers()
            .map(|provider| provider.id())
            .find(|&id| id == provider_id),
    }
}

/// The bundled table's price of `model` at `provider`, now. See [`price_for_at`].
pub fn price_for(provider_id: &str, model: &str, input_tokens: u64) -> Option<Price> {
    price_for_at(provider_id, model, input_tokens, SystemTime::now())
}

/// The bundled table's price of `model` (as the upstream names it; the table matches dated and
/// aliased names) at `provider_id`, for a request of `input_tokens` input tokens (tiered models
/// charge a whole request at a higher rate past a threshold, such as 200k tokens) made at `at`.
///
/// The table's prices are `f64` dollars; each is turned into integer nano-USD per million by
/// rounding to the nearest, which is exact for every price with up to 9 decimals per million.
/// The table exposes prices only through its calculator, so they are read back by pricing
/// probe usages: a million output tokens gives the output price, and input, cache reads and
/// cache writes of the request's size give the other three (a model without a cache price
/// charges cached tokens as plain input, which is what the probe then reads).
pub fn price_for_at(
    provider_id: &str,
    model: &str,
    input_tokens: u64,
    at: SystemTime,
) -> Option<Price> {
    let provider = table_provider(provider_id)?;
    // At least one token, so that the input probe has something to divide.
    let tokens = input_tokens.clamp(1, MAX_TOKENS) as f64;
    let probe = |usage: &[(UsageKey, f64)]| {
        let usage = genai_prices::Usage::from_iter(usage.iter().cloned());
        let request = PriceRequest::new(model, &usage)
            .with_provider_id(provider)
            .with_timestamp(at);
        table().calculate(&request).ok()
    };
    let plain = probe(&[
        (UsageKey::INPUT_TOKENS, tokens),
        (UsageKey::OUTPUT_TOKENS, 1e6),
    ])?;
    let cache_read = probe(&[
        (UsageKey::INPUT_TOKENS, tokens),
        (UsageKey::CACHE_READ_TOKENS, tokens),
    ])?;
    let cache_write = probe(&[
        (UsageKey::INPUT_TOKENS, tokens),
        (UsageKey::CACHE_WRITE_TOKENS, tokens),
    ])?;
    let per_million = |usd: f64| nanos_per_million(usd * 1e6 / tokens);
    Some(Price {
        input: per_million(plain.input_price)?,
        output: nanos_per_million(plain.output_price)?,
        cache_read: per_million(cache_read.input_price)?,
        cache_write: per_million(cache_write.input_price)?,
    })
}

/// USD per million tokens as nano-USD per million, rounded to the nearest.
fn nanos_per_million(usd: f64) -> Option<u64> {
    let nanos = (usd * NANOS_PER_USD as f64).round();
    // 2^63 nano-USD per million tokens is beyond any price; refusing it keeps the cast exact.
    (nanos.is_finite() && (0.0..9.2e18).contains(&nanos)).then_some(nanos as u64)
}

/// The price of `model` for a gateway: its own model list first (a listed model with a cost),
/// then the bundled table for `provider_id`; `None` when neither knows it. `model` is best the
/// name the upstream reported (what answered), else the one requested.
pub fn resolve_price(
    models: &[ModelSpec],
    provider_id: &str,
    model: &str,
    input_tokens: u64,
) -> Option<Price> {
    if let Some(cost) = models
        .iter()
        .find(|listed| listed.id == model)
        .and_then(|listed| listed.cost)
    {
        return Some(cost);
    }
    price_for(provider_id, model, input_tokens)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;
    use crate::providers::presets;

    /// 2025-10-01T12:00:00Z: prices in the bundled table change over time (and DeepSeek's by
    /// the hour), so tests price at a fixed instant.
    fn at() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_759_320_000)
    }

    const fn usd(dollars: u64, nanos: u64) -> u64 {
        dollars * NANOS_PER_USD + nanos
    }

    fn usage(input: u64, output: u64, cache_read: u64, cache_write: u64) -> Usage {
        Usage {
            input_tokens: input,
            output_tokens: output,
            cache_read_tokens: cache_read,
            cache_write_tokens: cache_write,
            reasoning_tokens: 0,
            exact: true,
        }
    }

    #[test]
    fn costs_are_summed_then_rounded_up_once() {
        let sonnet = Price {
            input: usd(3, 0),
            output: usd(15, 0),
            cache_read: usd(0, 300_000_000),
            cache_write: usd(3, 750_000_000),
        };
        let cases = [
            (usage(0, 0, 0, 0), 0),
            // 1000 plain input at $3/M = $0.003, 200 output at $15/M = $0.003.
            (usage(1000, 200, 0, 0), 6_000_000),
            // 1 token at $3/M is 3000 nano-USD, exactly.
            (usage(1, 0, 0, 0), 3000),
            // 12426 input of which 10240 read and 2051 written, 87 output (the golden stream).
            (
                usage(12_426, 87, 10_240, 2051),
                135 * 3000 + 10_240 * 300 + 2051 * 3750 + 87 * 15_000,
            ),
        ];
        for (usage, nanos) in cases {
            assert_eq!(cost_nanos(&sonnet, &usage), nanos, "{usage:?}");
        }
        // Fractions of a nano-dollar round up, once, on the sum.
        let cheap = Price {
            input: 1,
            output: 1,
            cache_read: 1,
            cache_write: 1,
        };
        assert_eq!(cost_nanos(&cheap, &usage(1, 0, 0, 0)), 1);
        assert_eq!(cost_nanos(&cheap, &usage(999_999, 1, 0, 0)), 1);
        assert_eq!(cost_nanos(&cheap, &usage(1_000_000, 1, 0, 0)), 2);
        // The largest usage at the largest price saturates instead of wrapping.
        let max = Price {
            input: u64::MAX,
            output: u64::MAX,
            cache_read: u64::MAX,
            cache_write: u64::MAX,
        };
        let huge = usage(MAX_TOKENS, MAX_TOKENS, 0, 0);
        assert_eq!(cost_nanos(&max, &huge), u64::MAX);
    }

    #[test]
    fn usd_strings() {
        let cases = [
            (0, "0"),
            (1, "0.000000001"),
            (4_215_000, "0.004215"),
            (500_000_000, "0.5"),
            (usd(3, 0), "3"),
            (usd(12, 340_000_000), "12.34"),
            (u64::MAX, "18446744073.709551615"),
        ];
        for (nanos, text) in cases {
            assert_eq!(format_usd(nanos), text);
            assert_eq!(parse_usd("", text), Ok(nanos), "{text}");
        }
        assert_eq!(parse_usd("", "007.50"), Ok(usd(7, 500_000_000)));
        assert_eq!(parse_usd("", "0.000000000"), Ok(0));
    }

    #[test]
    fn bad_usd_strings_say_why() {
        let cases = [
            ("", "must not be empty"),
            ("-1", "must not be negative"),
            ("0.0000000001", "must have at most 9 decimals"),
            ("18446744073.709551616", "is too large"),
            ("99999999999999999999", "is too large"),
            (
                "1e3",
                "must be a decimal number of dollars such as 0.004215",
            ),
            ("+1", "must be a decimal number of dollars such as 0.004215"),
            (" 1", "must be a decimal number of dollars such as 0.004215"),
            (".5", "must be a decimal number of dollars such as 0.004215"),
            ("5.", "must be a decimal number of dollars such as 0.004215"),
            (
                "1.2.3",
                "must be a decimal number of dollars such as 0.004215",
            ),
            ("$1", "must be a decimal number of dollars such as 0.004215"),
        ];
        for (text, message) in cases {
            let error = parse_usd("", text).unwrap_err();
            assert_eq!(error.message, message, "{text:?}");
            assert_eq!(error.within("cost_usd_total").field, "cost_usd_total");
        }
    }

    fn def(json: &str) -> ModelDef {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn model_definitions_as_polpo_writes_them() {
        let model = parse_model(&def(
            r#"{"id":"qwen3-coder","name":"Qwen3 Coder","reasoning":true,"input":["text","image"],
                "cost":{"input":0.3,"output":1.2,"cacheRead":0.03,"cacheWrite":0.375},
                "contextWindow":262144,"maxTokens":65536,"api":"openai-completions","baseUrl":"x"}"#,
        ))
        .unwrap();
        assert_eq!(
            model,
            ModelSpec {
                id: "qwen3-coder".into(),
                name: Some("Qwen3 Coder".into()),
                reasoning: true,
                images: true,
                cost: Some(Price {
                    input: 300_000_000,
                    output: 1_200_000_000,
                    cache_read: 30_000_000,
                    cache_write: 375_000_000,
                }),
                context_window: Some(262_144),
                max_tokens: Some(65_536),
            }
        );
        // The canonical form parses back to the same model.
        assert_eq!(parse_model(&model_def(&model)), Ok(model));

        let minimal = parse_model(&def(r#"{"id":"m"}"#)).unwrap();
        assert_eq!(minimal.name, None);
        assert_eq!(minimal.cost, None);
        assert!(!minimal.images && !minimal.reasoning);

        // Missing cache prices are charged as plain input.
        let partial = parse_model(&def(r#"{"id":"m","cost":{"input":2,"output":8}}"#))
            .unwrap()
            .cost
            .unwrap();
        assert_eq!(
            (partial.cache_read, partial.cache_write),
            (usd(2, 0), usd(2, 0))
        );
    }

    #[test]
    fn bad_model_definitions_name_the_field() {
        let cases = [
            (
                r#"{"id":""}"#,
                "id",
                "must be 1 to 256 printable ascii characters",
            ),
            (
                r#"{"id":"a b\u0001"}"#,
                "id",
                "must be 1 to 256 printable ascii characters",
            ),
            (
                r#"{"id":"m","name":""}"#,
                "name",
                "must be 1 to 256 characters",
            ),
            (
                r#"{"id":"m","name":"a\nb"}"#,
                "name",
                "must not contain control characters",
            ),
            (r#"{"id":"m","input":[]}"#, "input", "must not be empty"),
            (
                r#"{"id":"m","input":["text","audio"]}"#,
                "input[1]",
                "must be text or image",
            ),
            (
                r#"{"id":"m","cost":{"output":1}}"#,
                "cost.input",
                "is required",
            ),
            (
                r#"{"id":"m","cost":{"input":1}}"#,
                "cost.output",
                "is required",
            ),
            (
                r#"{"id":"m","cost":{"input":-1,"output":1}}"#,
                "cost.input",
                "must not be negative",
            ),
            (
                r#"{"id":"m","cost":{"input":1,"output":0.0000000001}}"#,
                "cost.output",
                "must have at most 9 decimals",
            ),
            (
                r#"{"id":"m","cost":{"input":1,"output":1,"cacheRead":1e300}}"#,
                "cost.cacheRead",
                "is too large",
            ),
            (
                r#"{"id":"m","contextWindow":0}"#,
                "contextWindow",
                "must be positive",
            ),
            (
                r#"{"id":"m","maxTokens":2000000000000}"#,
                "maxTokens",
                "is too large",
            ),
        ];
        for (json, field, message) in cases {
            let error = parse_model(&def(json)).unwrap_err();
            assert_eq!(
                (error.field.as_str(), error.message.as_str()),
                (field, message),
                "{json}"
            );
        }
    }

    #[test]
    fn model_lists() {
        let defs = [
            def(r#"{"id":"a"}"#),
            def(r#"{"id":"b","cost":{"input":1}}"#),
        ];
        let error = parse_models(&defs).unwrap_err().within("models");
        assert_eq!(error.to_string(), "models[1].cost.output: is required");
        let defs = [def(r#"{"id":"a"}"#), def(r#"{"id":"a"}"#)];
        assert_eq!(parse_models(&defs).unwrap_err().field, "[1].id");
        let many = vec![def(r#"{"id":"a"}"#); MAX_MODELS + 1];
        assert_eq!(
            parse_models(&many).unwrap_err().message,
            "must have at most 1000 models"
        );
        assert_eq!(parse_models(&[]), Ok(vec![]));
    }

    #[test]
    fn bundled_prices() {
        let price = |input: f64, output: f64, cache_read: f64, cache_write: f64| {
            let nanos = |usd: f64| (usd * 1e9).round() as u64;
            Some(Price {
                input: nanos(input),
                output: nanos(output),
                cache_read: nanos(cache_read),
                cache_write: nanos(cache_write),
            })
        };
        let cases = [
            ("openai", "gpt-4o", 1000, price(2.5, 10.0, 1.25, 2.5)),
            (
                "openai",
                "gpt-4o-2024-08-06",
                1000,
                price(2.5, 10.0, 1.25, 2.5),
            ),
            ("azure-openai", "gpt-4o", 1000, price(2.5, 10.0, 1.25, 2.5)),
            (
                "anthropic",
                "claude-sonnet-4-5-20250929",
                1000,
                price(3.0, 15.0, 0.3, 3.75),
            ),
            (
                "anthropic",
                "claude-sonnet-4-5",
                200_000,
                price(3.0, 15.0, 0.3, 3.75),
            ),
            // Past 200k input tokens the whole request is charged at the long-context tier.
            (
                "anthropic",
                "claude-sonnet-4-5",
                200_001,
                price(6.0, 22.5, 0.6, 7.5),
            ),
            (
                "google",
                "gemini-2.5-pro",
                0,
                price(1.25, 10.0, 0.125, 1.25),
            ),
            (
                "vertex",
                "gemini-2.5-pro",
                300_000,
                price(2.5, 15.0, 0.25, 2.5),
            ),
            ("google", "gemini-2.5-flash", 10, price(0.3, 2.5, 0.03, 0.3)),
            (
                "groq",
                "llama-3.3-70b-versatile",
                10,
                price(0.59, 0.79, 0.59, 0.59),
            ),
            // A table id that is not a preset id is accepted as it is.
            (
                "x-ai",
                "grok-3-mini",
                10,
                price_for_at("xai", "grok-3-mini", 10, at()),
            ),
            ("openai", "no-such-model", 10, None),
            ("ollama", "llama3.2", 10, None),
            ("sambanova", "Meta-Llama-3.3-70B-Instruct", 10, None),
            ("my-own-provider", "gpt-4o", 10, None),
        ];
        for (provider, model, input_tokens, expected) in cases {
            assert_eq!(
                price_for_at(provider, model, input_tokens, at()),
                expected,
                "{provider} {model} {input_tokens}"
            );
        }
        assert!(price_for_at("xai", "grok-3-mini", 10, at()).is_some());
    }

    /// A preset's well-known models must be ones the price table knows, or they would show up
    /// in listings with a null cost.
    #[test]
    fn preset_models_are_priced() {
        for preset in presets() {
            if preset.price_provider.is_none() {
                continue;
            }
            for model in preset.models {
                assert!(
                    price_for_at(preset.id, model, 1000, at()).is_some(),
                    "{} {model}",
                    preset.id
                );
            }
        }
    }

    #[test]
    fn the_gateway_list_wins_over_the_table() {
        let models = parse_models(&[
            def(r#"{"id":"gpt-4o","cost":{"input":1,"output":2,"cacheRead":0.5,"cacheWrite":1}}"#),
            def(r#"{"id":"gpt-4o-mini"}"#),
            def(r#"{"id":"house-model","cost":{"input":0,"output":0}}"#),
        ])
        .unwrap();
        let listed = resolve_price(&models, "openai", "gpt-4o", 10).unwrap();
        assert_eq!((listed.input, listed.output), (usd(1, 0), usd(2, 0)));
        // Listed without a cost: the table prices it.
        assert_eq!(
            resolve_price(&models, "openai", "gpt-4o-mini", 10),
            price_for("openai", "gpt-4o-mini", 10)
        );
        assert_eq!(
            resolve_price(&models, "vllm", "house-model", 10),
            Some(Price::default())
        );
        assert_eq!(resolve_price(&models, "vllm", "other-model", 10), None);
    }

    /// Not an assertion (a timing is a benchmark): run with `--ignored --nocapture` to see what
    /// decoding the table and one lookup cost on this machine.
    #[test]
    #[ignore = "prints timings"]
    fn measure_table() {
        let start = std::time::Instant::now();
        warm_up();
        let load = start.elapsed();
        let start = std::time::Instant::now();
        let rounds = 1000;
        for _ in 0..rounds {
            assert!(price_for_at("openai", "gpt-4o-2024-08-06", 1000, at()).is_some());
        }
        let openai = start.elapsed() / rounds;
        let start = std::time::Instant::now();
        for _ in 0..rounds {
            let _ = price_for_at("openrouter", "qwen/qwen3-coder", 1000, at());
        }
        let openrouter = start.elapsed() / rounds;
        println!("table decode {load:?}, lookup openai {openai:?}, openrouter {openrouter:?}");
    }
}
