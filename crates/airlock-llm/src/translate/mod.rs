//! DOCS-PLACEHOLDER

mod errors;
#[doc(hidden)] // For the fuzz target and the property tests; not an API.
pub mod fuzzing;
mod json;
mod request;
mod response;
mod sse;
mod stream;

pub use errors::{error_body, translate_error_body};
pub use request::{anthropic_to_openai_request, openai_to_anthropic_request};
pub use response::{anthropic_to_openai_response, openai_to_anthropic_response};
pub use stream::{
    StreamOptions, StreamTranslator, UpstreamError, MAX_EVENT_BYTES, MAX_ID_BYTES, MAX_TOOL_CALLS,
};

use crate::api::Api;

/// The two dialects a router translates between.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dialect {
    /// OpenAI Chat Completions ([`Api::OpenaiCompletions`]).
    OpenaiChat,
    /// Anthropic Messages ([`Api::AnthropicMessages`]).
    AnthropicMessages,
}

impl Dialect {
    /// The dialect of a gateway's `api`, when it is one of the two this module translates.
    pub fn of(api: Api) -> Option<Dialect> {
        match api {
            Api::OpenaiCompletions => Some(Dialect::OpenaiChat),
            Api::AnthropicMessages => Some(Dialect::AnthropicMessages),
            Api::OpenaiResponses | Api::Gemini | Api::None => None,
        }
    }

    pub fn api(self) -> Api {
        match self {
            Dialect::OpenaiChat => Api::OpenaiCompletions,
            Dialect::AnthropicMessages => Api::AnthropicMessages,
        }
    }

    /// The other dialect.
    pub fn other(self) -> Dialect {
        match self {
            Dialect::OpenaiChat => Dialect::AnthropicMessages,
            Dialect::AnthropicMessages => Dialect::OpenaiChat,
        }
    }
}

/// Why a body could not be translated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The body is not valid in its own dialect (not JSON, a field of the wrong type, an
    /// unknown role). The client's fault: 400.
    Malformed,
    /// The body is valid but asks for something the other dialect cannot express (`n > 1`,
    /// audio, a JSON schema response format, a provider's server tool). Also a 400, but a
    /// router may instead pick a backend that speaks the client's dialect.
    Unsupported,
}

/// A body that could not be translated, with a message that names the field (never its
/// value). The proxy answers it with [`TranslateError::body`] in the client's dialect.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct TranslateError {
    pub kind: ErrorKind,
    pub message: String,
}

impl TranslateError {
    pub(crate) fn malformed(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Malformed,
            message: message.into(),
        }
    }

    pub(crate) fn unsupported(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Unsupported,
            message: message.into(),
        }
    }

    /// The HTTP status to answer with: always 400 (the body, not the gateway, is at fault).
    pub fn status(&self) -> u16 {
        400
    }

    /// The error as a body in `dialect` (the client's), for a 400 answer.
    pub fn body(&self, dialect: Dialect) -> Vec<u8> {
        error_body(dialect, self.status(), &self.message)
    }
}

/// Which field carries the output cap in a translated Chat Completions request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum MaxTokensField {
    /// `max_completion_tokens`: OpenAI's current name, the only one its reasoning models take.
    #[default]
    MaxCompletionTokens,
    /// `max_tokens`: the deprecated name, the only one some compatible providers know.
    MaxTokens,
}

/// What a request translation needs to know of the backend the router picked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestOptions<'a> {
    /// The backend's model id, written as the translated body's `model`.
    pub model: &'a str,
    /// Anthropic backends: the `max_tokens` sent when the OpenAI request sets no cap (Anthropic
    /// requires one). [`RequestOptions::new`] takes it from [`default_max_tokens`].
    pub default_max_tokens: u64,
    /// OpenAI backends: the field the output cap goes in.
    pub max_tokens_field: MaxTokensField,
    /// OpenAI backends: the model takes `reasoning_effort` (OpenAI's non-reasoning models
    /// refuse it), so Anthropic's `thinking` maps to it; otherwise `thinking` is dropped.
    pub reasoning: bool,
}

impl<'a> RequestOptions<'a> {
    /// Options for `model` with the defaults: the model's default output cap from
    /// [`default_max_tokens`], `max_completion_tokens`, reasoning on.
    pub fn new(model: &'a str) -> Self {
        Self {
            model,
            default_max_tokens: default_max_tokens(model),
            max_tokens_field: MaxTokensField::default(),
            reasoning: true,
        }
    }
}

/// The `max_tokens` sent to Anthropic when an OpenAI request sets no cap. OpenAI reads a
/// missing cap as "up to the model's limit", so the default is the model's own output limit
/// where it is known, and 4096 (every Claude model allows it) for the rest. First match wins.
pub const DEFAULT_MAX_TOKENS: &[(&str, u64)] = &[
    ("claude-opus-4-5", 64_000),
    ("claude-opus-4", 32_000),
    ("claude-sonnet-4", 64_000),
    ("claude-haiku-4", 64_000),
    ("claude-3-7-sonnet", 64_000),
    ("claude-3-5-sonnet", 8_192),
    ("claude-3-5-haiku", 8_192),
    ("claude-3-", 4_096),
];

/// The cap for models the table does not know.
pub const FALLBACK_MAX_TOKENS: u64 = 4_096;

/// The default output cap for `model` (see [`DEFAULT_MAX_TOKENS`]). Provider prefixes such as
/// Bedrock's `anthropic.` or Vertex AI's `publishers/anthropic/models/` are looked through.
pub fn default_max_tokens(model: &str) -> u64 {
    let name = model
        .rsplit(['/', '.'])
        .find(|part| part.starts_with("claude"));
    let name = name.unwrap_or(model);
    DEFAULT_MAX_TOKENS
        .iter()
        .find(|(prefix, _)| name.starts_with(prefix))
        .map_or(FALLBACK_MAX_TOKENS, |&(_, cap)| cap)
}

/// OpenAI's `reasoning_effort` as Anthropic's `thinking.budget_tokens`. The budget is also kept
/// below 80 % of `max_tokens` (thinking counts toward it, and Anthropic wants room for the
/// answer); when that leaves less than Anthropic's minimum of 1024, thinking stays off.
pub const EFFORT_BUDGETS: &[(&str, u64)] = &[
    ("minimal", 1_024),
    ("low", 2_048),
    ("medium", 8_192),
    ("high", 24_576),
    ("xhigh", 32_000),
];

/// Anthropic's smallest thinking budget.
pub const MIN_THINKING_BUDGET: u64 = 1_024;

/// Anthropic's `thinking.budget_tokens` as OpenAI's `reasoning_effort`: the first effort whose
/// budget in [`EFFORT_BUDGETS`] is at least the given one, `low` at least and `high` at most (the
/// two efforts every OpenAI reasoning model takes besides `medium`).
pub fn effort_for_budget(budget: u64) -> &'static str {
    if budget <= 2_048 {
        "low"
    } else if budget <= 8_192 {
        "medium"
    } else {
        "high"
    }
}

/// The thinking budget for an effort and an output cap; `None` when thinking stays off.
pub fn budget_for_effort(effort: &str, max_tokens: u64) -> Option<u64> {
    let (_, budget) = EFFORT_BUDGETS.iter().find(|(name, _)| *name == effort)?;
    let budget = (*budget).min(max_tokens.saturating_mul(4) / 5);
    (budget >= MIN_THINKING_BUDGET).then_some(budget)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_caps_per_model() {
        let cases = [
            ("claude-sonnet-4-5", 64_000),
            ("claude-sonnet-4-5-20250929", 64_000),
            ("claude-opus-4-1-20250805", 32_000),
            ("claude-opus-4-5-20251101", 64_000),
            ("claude-haiku-4-5", 64_000),
            ("claude-3-7-sonnet-latest", 64_000),
            ("claude-3-5-haiku-20241022", 8_192),
            ("claude-3-haiku-20240307", 4_096),
            ("anthropic.claude-sonnet-4-5-20250929-v1:0", 64_000),
            ("us.anthropic.claude-opus-4-1-20250805-v1:0", 32_000),
            ("publishers/anthropic/models/claude-3-5-sonnet-v2", 8_192),
            ("some-proxy-model", 4_096),
            ("", 4_096),
        ];
        for (model, cap) in cases {
            assert_eq!(default_max_tokens(model), cap, "{model}");
            assert_eq!(RequestOptions::new(model).default_max_tokens, cap);
        }
    }

    #[test]
    fn efforts_and_budgets() {
        let cases = [
            ("minimal", 64_000, Some(1_024)),
            ("low", 64_000, Some(2_048)),
            ("medium", 64_000, Some(8_192)),
            ("high", 64_000, Some(24_576)),
            ("xhigh", 64_000, Some(32_000)),
            ("high", 4_096, Some(3_276)),
            ("high", 1_280, Some(1_024)),
            ("high", 1_279, None),
            ("none", 64_000, None),
            ("bogus", 64_000, None),
        ];
        for (effort, max_tokens, budget) in cases {
            assert_eq!(budget_for_effort(effort, max_tokens), budget, "{effort}");
        }
        // Each effort survives a round trip through its budget, `minimal` as `low`.
        for (effort, budget) in EFFORT_BUDGETS {
            let back = effort_for_budget(*budget);
            let expected = match *effort {
                "minimal" => "low",
                "xhigh" => "high",
                other => other,
            };
            assert_eq!(back, expected);
        }
    }

    #[test]
    fn dialects() {
        for dialect in [Dialect::OpenaiChat, Dialect::AnthropicMessages] {
            assert_eq!(Dialect::of(dialect.api()), Some(dialect));
            assert_ne!(dialect.other(), dialect);
        }
        assert_eq!(Dialect::of(Api::Gemini), None);
    }
}
