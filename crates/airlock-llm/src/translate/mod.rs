//! Translation between the two chat dialects a router gateway serves: OpenAI Chat Completions
//! and Anthropic Messages; and from both to Gemini and back ([`gemini`], by way of Chat
//! Completions: [`translate_request_to_gemini`], [`translate_gemini_response`],
//! [`translate_gemini_error_body`], [`StreamTranslator::from_gemini`]); and OpenAI Responses
//! requests on the client side, not streamed, by way of Chat Completions ([`responses`]). When the backend the router picked speaks the other dialect than the
//! client, the request, the response (whole or streamed) and any error are rewritten here, as
//! pure functions of bytes (SECURITY #30: translation keeps meaning).
//!
//! | entry point | from → to |
//! |---|---|
//! | [`openai_to_anthropic_request`] / [`anthropic_to_openai_request`] | client's request → backend's, for [`RequestOptions::model`] |
//! | [`anthropic_to_openai_response`] / [`openai_to_anthropic_response`] | backend's 2xx body → client's |
//! | [`translate_error_body`] | backend's error body → client's shape (the status is kept by the caller) |
//! | [`error_body`], [`TranslateError::body`] | Airlock's own error in the client's dialect |
//! | [`StreamTranslator`] | backend's SSE → client's SSE, fed in any pieces ([`stream`](StreamTranslator) has the event tables) |
//! | [`translate_request`], [`translate_response`] | the same, by the client's or backend's [`Dialect`] |
//! | [`translate_request_typed`], then [`translate_parsed_request`] | the same for a caller that may hold the body parsed: the typed reading, and the `Value` one when it gives up |
//!
//! # How a router uses it
//!
//! 1. `RequestOptions::new(backend_model)` (then, when the operator's model list knows the
//!    model's output limit, set `default_max_tokens` to it; for a compatible provider that only
//!    knows `max_tokens`, set `max_tokens_field`; for a model without reasoning, `reasoning:
//!    false`). A [`TranslateError`] is answered 400 with [`TranslateError::body`] in the
//!    client's dialect; an [`ErrorKind::Unsupported`] one may instead be served by a backend
//!    of the client's own dialect.
//! 2. A 2xx body goes through the response function; a non-2xx body through
//!    [`translate_error_body`], status unchanged.
//! 3. A stream goes through a [`StreamTranslator`] with [`StreamOptions::include_usage`] as the
//!    client asked ([`crate::RequestInfo::include_usage`]). Until
//!    [`StreamTranslator::is_content_started`], the router may hold the output back; if
//!    [`StreamTranslator::failed_before_content`] turns true (a 200 whose first event is an
//!    error, or that ended early), the attempt failed and the next backend may be tried.
//!
//! # Invariants
//!
//! - **No IO, no clock, no panics.** `created` comes from the caller. Any bytes give a result:
//!   JSON or a [`TranslateError`] (property tests and [`fuzzing::fuzz_translate`]).
//! - **Nothing unknown is forwarded.** A translated body is built field by field from what this
//!   module understands; an unknown field is dropped, a field whose meaning would be lost is
//!   refused ([`ErrorKind::Unsupported`]).
//! - **Messages name fields, not values**: a path such as `messages[2].content[0].type` and, at
//!   most, a short enum word the client sent (a role, a block type).
//! - **Streams are bounded and cut-proof**: at most [`MAX_EVENT_BYTES`] of partial event, every
//!   complete event written at once, the same bytes however the input is cut.
//!
//! # Requests
//!
//! | OpenAI Chat Completions | Anthropic Messages | notes |
//! |---|---|---|
//! | `model` | `model` | the backend's, from [`RequestOptions::model`] |
//! | `system` / `developer` messages (string or text parts) | top-level `system` (a string, or text blocks when several or with `cache_control`) | system messages anywhere in the conversation are hoisted, in order; Anthropic → OpenAI joins blocks with a blank line into one `system` message |
//! | `user` content: string, `text`, `image_url` (data URL / http URL), `file` (PDF `file_data`) | `text`, `image` (`source: base64 / url`), `document` (PDF base64; Anthropic's `text` documents become text) | empty text is dropped (Anthropic refuses it); `detail` is dropped |
//! | `assistant` `content` / `refusal`, `tool_calls[]{id, function{name, arguments}}` | `text`, `tool_use{id, name, input}` | `arguments` (a JSON string) ↔ `input` (an object); invalid or non-object arguments become `{}` |
//! | `assistant` `thinking_blocks[]{type: thinking, thinking, signature}` / `{type: redacted_thinking, data}` (LiteLLM's extension), `reasoning_content` | `thinking` / `redacted_thinking` blocks, first in the turn | to Anthropic: only blocks with a signature (Anthropic verifies it); to OpenAI: dropped (Chat Completions cannot send reasoning back) |
//! | `tool` messages `{tool_call_id, content}` | `tool_result{tool_use_id, content}` blocks | consecutive tool messages (parallel calls) and the user message after them merge into one user turn, tool results first; to OpenAI, each result is a `tool` message and images in results move to the user message that follows |
//! | consecutive messages of one role | one turn | Anthropic wants user and assistant to alternate |
//! | `tools[]{type: function, function{name, description, parameters}}` | `tools[]{name, description, input_schema}` | no `parameters` → `{"type":"object","properties":{}}`; `strict` dropped; `cache_control` kept to Anthropic |
//! | `tool_choice`: `auto` / `none` / `required` / `{function{name}}` | `{type: auto}` / `{type: none}` / `{type: any}` / `{type: tool, name}` | `none` keeps the tools (a history with tool calls needs them defined); sent only with tools |
//! | `parallel_tool_calls: false` | `tool_choice.disable_parallel_tool_use: true` | |
//! | `max_completion_tokens`, else `max_tokens` | `max_tokens` (required) | none given → [`RequestOptions::default_max_tokens`] ([`DEFAULT_MAX_TOKENS`]); to OpenAI, the field named by [`MaxTokensField`] |
//! | `stop` (string or list) | `stop_sequences` | whitespace-only sequences dropped (Anthropic refuses them) |
//! | `temperature` (0–2) | `temperature` (0–1) | clamped to 1 towards Anthropic; dropped when thinking is on |
//! | `top_p` | `top_p` | dropped under 0.95 when thinking is on (Anthropic's rule) |
//! | `stream`, `stream_options.include_usage` | `stream` | to OpenAI, `include_usage: true` is always asked (Anthropic clients always get usage) |
//! | `user`, else `safety_identifier` | `metadata.user_id` | |
//! | `reasoning_effort` | `thinking: {type: enabled, budget_tokens}` | [`EFFORT_BUDGETS`], capped at 80 % of `max_tokens`, off under 1024 or with a forced tool; back: [`effort_for_budget`], only when [`RequestOptions::reasoning`] |
//! | `thinking` (an Anthropic object some OpenAI clients send) | `thinking` | passed as is |
//!
//! # Responses
//!
//! | OpenAI | Anthropic | notes |
//! |---|---|---|
//! | `id`, `model` | `id`, `model` | the upstream's, as they are |
//! | `created` | — | the caller's clock |
//! | `message.content` | `text` blocks | blocks are concatenated; no text and tool calls → `null` |
//! | `message.tool_calls` | `tool_use` blocks | ids kept |
//! | `message.reasoning_content` + `thinking_blocks` | `thinking` / `redacted_thinking` | OpenAI-compatible `reasoning_content` (or `reasoning`) → a `thinking` block with an empty signature |
//! | `message.refusal` | a `text` block, `stop_reason: refusal` | |
//! | `finish_reason`: `stop` / `length` / `tool_calls` / `content_filter` | `stop_reason`: `end_turn` (also `stop_sequence`, `pause_turn`) / `max_tokens` (also `model_context_window_exceeded`) / `tool_use` / `refusal` | back: `stop` → `end_turn` (which stop sequence matched is not reported by OpenAI) |
//! | `usage.prompt_tokens` | `input_tokens + cache_read_input_tokens + cache_creation_input_tokens` | |
//! | `usage.prompt_tokens_details.cached_tokens` | `cache_read_input_tokens` | |
//! | `usage.completion_tokens` | `output_tokens` | |
//! | `usage.completion_tokens_details.reasoning_tokens` | `output_tokens_details.thinking_tokens`, when reported | |
//!
//! Errors: see [`translate_error_body`]; streams: see [`StreamTranslator`].
//!
//! # Known limits
//!
//! | direction | what | what happens |
//! |---|---|---|
//! | OpenAI → Anthropic | `n > 1` | refused (`Unsupported`) |
//! | OpenAI → Anthropic | audio input and output (`input_audio`, `audio`, `modalities`) | refused |
//! | OpenAI → Anthropic | `response_format` `json_object` / `json_schema` | refused (not mapped to a forced tool: the answer would come back as a tool call) |
//! | OpenAI → Anthropic | `functions` / `function_call` (deprecated), `custom` tools, `allowed_tools` tool choice, `web_search_options` | refused |
//! | OpenAI → Anthropic | uploaded files (`file_id`), non-PDF files | refused |
//! | OpenAI → Anthropic | `logprobs`, `top_logprobs`, `logit_bias`, `seed`, `frequency_penalty`, `presence_penalty`, `prediction`, `store`, `metadata`, `service_tier`, `verbosity`, `image_url.detail`, message `name` | dropped |
//! | OpenAI → Anthropic | system messages in the middle of a conversation | hoisted to the top-level system prompt |
//! | OpenAI → Anthropic | `temperature` above 1 | clamped to 1 |
//! | OpenAI → Anthropic | `reasoning_content` without a signature (from another provider) | dropped (Anthropic refuses unsigned thinking) |
//! | OpenAI → Anthropic (response) | reasoning from an OpenAI-compatible backend | a `thinking` block with an empty signature: shown, but Anthropic refuses it if later sent to an Anthropic backend directly |
//! | OpenAI → Anthropic (response) | which stop sequence matched; cache writes (OpenAI reports none); choices after the first; `logprobs` | lost (`stop_sequence: null`) |
//! | Anthropic → OpenAI | thinking and redacted thinking in assistant turns | dropped (Chat Completions has no field to send them back) |
//! | Anthropic → OpenAI | `cache_control` | dropped (OpenAI caches on its own) |
//! | Anthropic → OpenAI | `top_k`, `service_tier`, `tool_result.is_error`, document titles of text documents, citations settings | dropped |
//! | Anthropic → OpenAI | server tools (`web_search_…`, `bash_…`, `code_execution_…`, …), `mcp_servers`, `container`, file and URL document sources, `search_result` and other block types | refused |
//! | Anthropic → OpenAI | several system blocks | joined into one system message |
//! | Anthropic → OpenAI (response) | `citations`, server tool use and results blocks | dropped; their text stays |
//! | Anthropic → OpenAI (response) | `cache_creation_input_tokens` | counted in `prompt_tokens`, not shown apart (OpenAI has no field) |
//! | both | JSON key order inside schemas and tool inputs | not kept (the contents are) |
//! | both | fields this module does not list | dropped |

mod chat_request;
mod errors;
#[doc(hidden)] // For the fuzz target and the property tests; not an API.
pub mod fuzzing;
pub mod gemini;
mod json;
mod messages_request;
mod request;
mod response;
pub mod responses;
mod sse;
mod stream;

pub use errors::{error_body, translate_error_body};
pub use gemini::{gemini_error_to_openai, gemini_to_openai_response, openai_to_gemini_request};
pub use request::{anthropic_to_openai_request, openai_to_anthropic_request};
pub use response::{anthropic_to_openai_response, openai_to_anthropic_response};
pub use responses::{openai_to_responses_response, responses_to_openai_request};
pub use stream::{
    StreamOptions, StreamTranslator, UpstreamError, MAX_EVENT_BYTES, MAX_ID_BYTES, MAX_TOOL_CALLS,
};

use serde_json::{Map, Value};

use crate::api::Api;

/// Translates a request from the client's dialect to the other one (the backend's).
pub fn translate_request(
    client: Dialect,
    body: &[u8],
    opts: &RequestOptions<'_>,
) -> Result<Vec<u8>, TranslateError> {
    if let Some(out) = translate_request_typed(client, body, opts) {
        return Ok(out);
    }
    translate_parsed_request(client, &json::parse_object(body)?, opts)
}

/// [`translate_request`] by a typed reading of the body, without `Value` trees: the fast way
/// for the requests most clients send (text and tools, both ways).
/// `None` when the body needs the `Value` reading, which the caller then runs
/// ([`translate_parsed_request`], with a body it may have parsed already); where both read
/// a body, they give the same bytes.
pub fn translate_request_typed(
    client: Dialect,
    body: &[u8],
    opts: &RequestOptions<'_>,
) -> Option<Vec<u8>> {
    match client {
        Dialect::OpenaiChat => chat_request::openai_to_anthropic_typed(body, opts),
        Dialect::AnthropicMessages => messages_request::anthropic_to_openai_typed(body, opts),
    }
}

/// [`translate_request`] of a body the caller has parsed already (a router reads every body to
/// route it, and need not write it out to have it read again).
pub fn translate_parsed_request(
    client: Dialect,
    body: &Map<String, Value>,
    opts: &RequestOptions<'_>,
) -> Result<Vec<u8>, TranslateError> {
    match client {
        Dialect::OpenaiChat => request::openai_to_anthropic(body, opts),
        Dialect::AnthropicMessages => request::anthropic_to_openai(body, opts),
    }
}

/// Translates a 2xx response body from the backend's dialect to the other one (the client's).
/// `created` is the Unix time in seconds reported to Chat Completions clients.
pub fn translate_response(
    backend: Dialect,
    body: &[u8],
    created: u64,
) -> Result<Vec<u8>, TranslateError> {
    match backend {
        Dialect::AnthropicMessages => anthropic_to_openai_response(body, created),
        Dialect::OpenaiChat => openai_to_anthropic_response(body),
    }
}

/// Translates a request in the client's dialect into a Gemini `generateContent` body (an
/// Anthropic request by way of Chat Completions; see [`gemini`]).
pub fn translate_request_to_gemini(
    client: Dialect,
    body: &[u8],
    opts: &RequestOptions<'_>,
) -> Result<Vec<u8>, TranslateError> {
    translate_parsed_request_to_gemini(client, &json::parse_object(body)?, opts)
}

/// [`translate_request_to_gemini`] of a body the caller has parsed already.
pub fn translate_parsed_request_to_gemini(
    client: Dialect,
    body: &Map<String, Value>,
    opts: &RequestOptions<'_>,
) -> Result<Vec<u8>, TranslateError> {
    match client {
        Dialect::OpenaiChat => gemini::openai_to_gemini(body, opts),
        Dialect::AnthropicMessages => {
            let openai = request::anthropic_to_openai(body, opts)?;
            openai_to_gemini_request(&openai, opts)
        }
    }
}

/// Translates a whole Gemini answer into the client's dialect.
pub fn translate_gemini_response(
    client: Dialect,
    body: &[u8],
    created: u64,
) -> Result<Vec<u8>, TranslateError> {
    let openai = gemini_to_openai_response(body, created)?;
    match client {
        Dialect::OpenaiChat => Ok(openai),
        Dialect::AnthropicMessages => openai_to_anthropic_response(&openai),
    }
}

/// Translates a Gemini error body into the client's dialect (the status is the caller's).
pub fn translate_gemini_error_body(client: Dialect, status: u16, body: &[u8]) -> Vec<u8> {
    let openai = gemini_error_to_openai(status, body);
    match client {
        Dialect::OpenaiChat => openai,
        Dialect::AnthropicMessages => translate_error_body(Dialect::OpenaiChat, status, &openai),
    }
}

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
