//! What the domain knows of LLM traffic: the dialect a gateway's endpoint speaks, an operator's
//! model list with its prices, and the usage and cost of one request.
//!
//! These are plain data, parsed at the edge like everything else in this crate. How a provider's
//! bodies are read (usage extraction, streams), the provider presets and the bundled price table
//! live in `airlock-llm`, which builds on these types.
//!
//! Money is integers: nano-dollars (10⁻⁹ USD) for amounts, nano-dollars per million tokens for
//! prices, so a price with up to 9 decimals per million tokens is exact and a cost is one integer
//! division away from exact. The API shows amounts as decimal strings ([`format_usd`]).

use crate::error::InvalidInput;

/// The dialect spoken at a gateway's endpoint (the contract's `api`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Api {
    /// OpenAI Chat Completions (`POST …/chat/completions`), and every provider compatible with it.
    OpenaiCompletions,
    /// OpenAI Responses (`POST …/responses`).
    OpenaiResponses,
    /// Anthropic Messages (`POST …/messages`).
    AnthropicMessages,
    /// Google Gemini (`…:generateContent`, `…:streamGenerateContent`).
    Gemini,
    /// Opaque bytes: not metered, not translated.
    #[default]
    None,
}

impl Api {
    /// Every dialect, in the order the docs list them.
    pub const ALL: [Api; 5] = [
        Api::OpenaiCompletions,
        Api::OpenaiResponses,
        Api::AnthropicMessages,
        Api::Gemini,
        Api::None,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Api::OpenaiCompletions => "openai-completions",
            Api::OpenaiResponses => "openai-responses",
            Api::AnthropicMessages => "anthropic-messages",
            Api::Gemini => "gemini",
            Api::None => "none",
        }
    }

    pub fn parse(field: &str, text: &str) -> Result<Api, InvalidInput> {
        Api::ALL
            .into_iter()
            .find(|a| a.as_str() == text)
            .ok_or_else(|| {
                InvalidInput::new(
                    field,
                    "must be one of openai-completions, openai-responses, anthropic-messages, gemini, none",
                )
            })
    }

    /// Whether requests through such a gateway are metered.
    pub fn is_metered(self) -> bool {
        self != Api::None
    }
}

impl std::fmt::Display for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Nano-dollars in one US dollar.
pub const NANOS_PER_USD: u64 = 1_000_000_000;

/// Prices in nano-dollars per million tokens (so `$3.00 / M` is `3_000_000_000`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Price {
    pub input: u64,
    pub output: u64,
    pub cache_read: u64,
    pub cache_write: u64,
}

impl Price {
    /// The cost of `usage` in nano-dollars, rounded up (a fraction of a nano-dollar is charged,
    /// never dropped). `input_tokens` includes the cached ones, which are priced apart.
    pub fn cost_nanos(&self, usage: &Usage) -> u64 {
        let cached = usage
            .cache_read_tokens
            .saturating_add(usage.cache_write_tokens);
        let fresh = usage.input_tokens.saturating_sub(cached);
        let total: u128 = [
            (fresh, self.input),
            (usage.output_tokens, self.output),
            (usage.cache_read_tokens, self.cache_read),
            (usage.cache_write_tokens, self.cache_write),
        ]
        .iter()
        .map(|&(tokens, price)| u128::from(tokens) * u128::from(price))
        .sum();
        u64::try_from(total.div_ceil(1_000_000)).unwrap_or(u64::MAX)
    }
}

/// One model of an operator's model list (Polpo's custom model definition): what the router may
/// ask of it and, when given, its price, which wins over the bundled price table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ModelSpec {
    pub id: String,
    pub name: Option<String>,
    pub reasoning: bool,
    /// Accepts images besides text.
    pub images: bool,
    pub cost: Option<Price>,
    pub context_window: Option<u64>,
    pub max_tokens: Option<u64>,
    /// Takes tool (function) definitions and answers with tool calls; `None`: not said, the
    /// provider's default (`airlock_llm::providers::supports_tools`).
    pub tools: Option<bool>,
}

/// Longest model id accepted in a model list or recorded from a response.
pub const MAX_MODEL_LEN: usize = 256;

/// At most this many models in one gateway config's list.
pub const MAX_MODELS: usize = 512;

impl ModelSpec {
    /// Checks a model id: 1 to [`MAX_MODEL_LEN`] visible ASCII characters.
    pub fn check_id(field: &str, id: &str) -> Result<(), InvalidInput> {
        if id.is_empty() || id.len() > MAX_MODEL_LEN {
            return Err(InvalidInput::new(
                field,
                format!("must be 1 to {MAX_MODEL_LEN} characters"),
            ));
        }
        if !id.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(InvalidInput::new(
                field,
                "must be visible ASCII characters without spaces",
            ));
        }
        Ok(())
    }
}

/// Tokens of one request. Every count is of the request as the provider billed it;
/// `input_tokens` counts every input token, cached ones included, whatever the provider's own
/// convention.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_tokens: u64,
    pub cache_write_tokens: u64,
    /// Part of `output_tokens`.
    pub reasoning_tokens: u64,
    /// False when the numbers were estimated: the client left before the usage arrived, or the
    /// upstream sent none.
    pub exact: bool,
}

impl Usage {
    /// Input tokens billed at the plain input price: neither read from nor written to a cache.
    pub fn uncached_input_tokens(&self) -> u64 {
        self.input_tokens
            .saturating_sub(self.cache_read_tokens)
            .saturating_sub(self.cache_write_tokens)
    }

    /// All tokens, input and output.
    pub fn total_tokens(&self) -> u64 {
        self.input_tokens.saturating_add(self.output_tokens)
    }
}

/// What the audit trail records of an LLM request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Metered {
    /// The gateway config's provider preset, if it has one.
    pub provider: Option<String>,
    /// The model the upstream says answered (else the one the request named).
    pub model: Option<String>,
    pub usage: Usage,
    /// `None`: the model's price is unknown (never guessed).
    pub cost_nanos: Option<u64>,
}

/// An amount of nano-dollars as a decimal string of dollars: `4215000` → `"0.004215"`,
/// `3_000_000_000` → `"3"`. Trailing zeros are dropped; at most 9 decimals.
pub fn format_usd(nanos: u64) -> String {
    Usd::of(nanos).as_str().to_owned()
}

/// [`format_usd`] on the stack, for a caller that copies the text once into its own buffer
/// (a header value on every request under a cost limit).
pub struct Usd {
    /// `u64::MAX` nano-dollars is 11 digits, a point and 9 decimals.
    bytes: [u8; 24],
    start: usize,
    end: usize,
}

impl Usd {
    pub fn of(nanos: u64) -> Usd {
        let mut bytes = [b'0'; 24];
        let (mut whole, frac) = (nanos / NANOS_PER_USD, nanos % NANOS_PER_USD);
        // The decimals go in bytes 15..24 behind a point at 14, the whole part before it.
        let mut end = 24;
        if frac == 0 {
            end = 14;
        } else {
            bytes[14] = b'.';
            let mut f = frac;
            for slot in bytes[15..].iter_mut().rev() {
                *slot = b'0' + (f % 10) as u8;
                f /= 10;
            }
            while bytes[end - 1] == b'0' {
                end -= 1;
            }
        }
        let mut start = 14;
        loop {
            start -= 1;
            bytes[start] = b'0' + (whole % 10) as u8;
            whole /= 10;
            if whole == 0 {
                break;
            }
        }
        Usd { bytes, start, end }
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII digits and a point were written.
        std::str::from_utf8(&self.bytes[self.start..self.end]).unwrap_or("0")
    }
}

/// Parses a non-negative decimal amount of dollars with at most 9 decimals (`"12.5"`,
/// `"0.000000001"`) into nano-dollars. No sign, exponent, separators or bare `.5`; errors say why
/// without repeating the text.
pub fn parse_usd(field: &str, text: &str) -> Result<u64, InvalidInput> {
    let invalid = |message: &str| InvalidInput::new(field, message);
    if text.is_empty() {
        return Err(invalid("must not be empty"));
    }
    if text.starts_with('-') {
        return Err(invalid("must not be negative"));
    }
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let digits = |part: &str| part.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty()
        || !digits(whole)
        || !digits(fraction)
        || (text.contains('.') && fraction.is_empty())
    {
        return Err(invalid(
            "must be a decimal number of dollars such as 0.004215",
        ));
    }
    if fraction.len() > 9 {
        return Err(invalid("must have at most 9 decimals"));
    }
    let too_large = || invalid("is too large");
    let whole: u64 = whole.parse().map_err(|_| too_large())?;
    let fraction: u64 = format!("{fraction:0<9}").parse().map_err(|_| too_large())?;
    whole
        .checked_mul(NANOS_PER_USD)
        .and_then(|nanos| nanos.checked_add(fraction))
        .ok_or_else(too_large)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_names_round_trip() {
        for api in Api::ALL {
            assert_eq!(Api::parse("api", api.as_str()).unwrap(), api);
        }
        assert!(Api::parse("api", "openai").is_err());
        assert!(!Api::None.is_metered() && Api::Gemini.is_metered());
    }

    /// The stack formatting against the `format!` one it replaced, over every digit count and
    /// trailing-zero run.
    #[test]
    fn dollars_on_the_stack_as_format_wrote_them() {
        let by_format = |nanos: u64| {
            let (whole, frac) = (nanos / NANOS_PER_USD, nanos % NANOS_PER_USD);
            if frac == 0 {
                return whole.to_string();
            }
            let digits = format!("{frac:09}");
            format!("{whole}.{}", digits.trim_end_matches('0'))
        };
        let mut n = 1u64;
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..200_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            for nanos in [
                seed,
                seed >> (seed % 64),
                n,
                n - 1,
                n.saturating_mul(7),
                u64::MAX - (seed % 1000),
            ] {
                assert_eq!(Usd::of(nanos).as_str(), by_format(nanos), "{nanos}");
            }
            n = n.checked_mul(10).unwrap_or(1);
        }
    }

    #[test]
    fn dollars_format_and_parse() {
        for (nanos, text) in [
            (0, "0"),
            (1, "0.000000001"),
            (4_215_000, "0.004215"),
            (3_000_000_000, "3"),
            (12_500_000_000, "12.5"),
            (u64::MAX, "18446744073.709551615"),
        ] {
            assert_eq!(format_usd(nanos), text);
            assert_eq!(parse_usd("c", text).unwrap(), nanos, "{text}");
            assert_eq!(Usd::of(nanos).as_str(), text);
        }
        for (text, ok) in [
            ("12.50", Some(12_500_000_000)),
            (".5", None),
            ("007", Some(7_000_000_000)),
            ("", None),
            (".", None),
            ("1.", None),
            ("-1", None),
            ("+1", None),
            ("1e3", None),
            ("1,5", None),
            (" 1", None),
            ("0.0000000001", None),
            ("18446744074", None),
        ] {
            assert_eq!(parse_usd("c", text).ok(), ok, "{text:?}");
        }
        assert!(parse_usd("limits.cost_usd_per_day", "0.0000000001")
            .unwrap_err()
            .to_string()
            .contains("at most 9 decimals"));
    }

    #[test]
    fn costs_round_up_and_price_cached_tokens_apart() {
        // $3/M input, $15/M output, $0.30/M cache read, $3.75/M cache write (Claude Sonnet).
        let price = Price {
            input: 3_000_000_000,
            output: 15_000_000_000,
            cache_read: 300_000_000,
            cache_write: 3_750_000_000,
        };
        let usage = Usage {
            input_tokens: 1_000 + 2_000 + 500,
            output_tokens: 100,
            cache_read_tokens: 2_000,
            cache_write_tokens: 500,
            ..Usage::default()
        };
        // 1000×3000 + 100×15000 + 2000×300 + 500×3750 nano = 3e6 + 1.5e6 + 6e5 + 1.875e6
        assert_eq!(price.cost_nanos(&usage), 6_975_000);
        let one = Usage {
            input_tokens: 1,
            ..Usage::default()
        };
        let cheap = Price {
            input: 1,
            ..Price::default()
        };
        assert_eq!(
            cheap.cost_nanos(&one),
            1,
            "a fraction is charged, not dropped"
        );
        assert_eq!(Price::default().cost_nanos(&usage), 0);
    }
}
