//! Prices and costs in integers: nano-dollars (1 USD = 10^9 nano-USD), never floats.
//!
//! A [`Price`] holds nano-USD per *million* tokens, so any price with up to 9 decimals per
//! million is exact ($3/M is `3_000_000_000`, $0.01875/M is `18_750_000`). [`cost_nanos`] sums
//! tokens × price and divides by a million once, rounding up, so a request is never
//! under-charged by rounding and the sum of parts cannot drift.
//!
//! Where prices come from, first match wins:
//! 1. the gateway's own model list ([`ModelSpec`]; its JSON shape, Polpo's custom model
//!    definitions, is the control plane's to parse), when the model is listed there with a cost;
//! 2. the bundled price table (genai-prices, pydantic's maintained data, pinned in Cargo.lock),
//!    for presets that map to one of its providers;
//! 3. nothing: the cost is null. A price is never guessed.

use std::time::SystemTime;

use crate::providers::preset;
use crate::usage::{Usage, MAX_TOKENS};
use genai_prices::{Calculator, PriceRequest, UsageKey};

pub use airlock_core::llm::{format_usd, parse_usd, Price, NANOS_PER_USD};
pub use airlock_core::ModelSpec;

/// The cost of `usage` at `price` in nano-USD: [`Price::cost_nanos`] (summed, divided by a
/// million once, rounded up, saturating).
pub fn cost_nanos(price: &Price, usage: &Usage) -> u64 {
    price.cost_nanos(usage)
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

/// The bundled table's context window (in tokens) of `model` at `provider_id`, when the table
/// has one: the model is matched as for a price (dated and aliased names too).
pub fn context_window(provider_id: &str, model: &str) -> Option<u64> {
    let provider = table_provider(provider_id)?;
    let usage = genai_prices::Usage::from_iter([(UsageKey::INPUT_TOKENS, 1.0)]);
    let request = PriceRequest::new(model, &usage).with_provider_id(provider);
    let matched = table().calculate(&request).ok()?;
    table()
        .providers()
        .find(|p| p.id() == matched.provider_id)?
        .models()
        .find(|m| m.id() == matched.model_id)?
        .context_window()
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
    listed_price(models, model).or_else(|| price_for(provider_id, model, input_tokens))
}

/// The price a gateway's own model list gives `model`, if it lists it with a cost.
pub fn listed_price(models: &[ModelSpec], model: &str) -> Option<Price> {
    models
        .iter()
        .find(|listed| listed.id == model)
        .and_then(|listed| listed.cost)
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
    fn context_windows_from_the_table() {
        for (provider, model) in [
            ("openai", "gpt-4o"),
            ("openai", "gpt-4o-2024-08-06"),
            ("anthropic", "claude-sonnet-4-5"),
            ("google", "gemini-2.5-flash"),
        ] {
            let window = context_window(provider, model);
            eprintln!("{provider} {model}: {window:?}");
            assert!(window.is_some_and(|w| w >= 100_000), "{provider} {model}");
        }
        assert_eq!(context_window("openai", "no-such-model-x"), None);
        assert_eq!(context_window("ollama", "llama3"), None);
    }

    #[test]
    fn the_gateway_list_wins_over_the_table() {
        let model = |id: &str, cost: Option<Price>| ModelSpec {
            id: id.into(),
            cost,
            ..ModelSpec::default()
        };
        let models = [
            model(
                "gpt-4o",
                Some(Price {
                    input: usd(1, 0),
                    output: usd(2, 0),
                    cache_read: usd(0, 500_000_000),
                    cache_write: usd(1, 0),
                }),
            ),
            model("gpt-4o-mini", None),
            model("house-model", Some(Price::default())),
        ];
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
