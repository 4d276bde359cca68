//! What each dialect reports where: the few JSON paths the meter reads, as data.
//!
//! A path is a list of steps from the top of one JSON document (an SSE event's data, a whole
//! body, or one element of a top-level array): an object key from the small vocabulary below, or
//! [`ANY`] for any element of an array. A key outside the vocabulary is [`OTHER`] and never
//! matches, so the scanner only keeps one byte per level however long the real keys are.

use crate::api::Api;

/// A key the rules never name.
pub(super) const OTHER: u8 = 0;
/// Any element of an array.
pub(super) const ANY: u8 = 0xff;

macro_rules! vocabulary {
    ($($id:ident = $value:literal => $text:literal,)*) => {
        $(pub(super) const $id: u8 = $value;)*

        /// The id of a key, or [`OTHER`].
        pub(super) fn key_id(key: &[u8]) -> u8 {
            match key {
                $($text => $id,)*
                _ => OTHER,
            }
        }

        #[cfg(test)]
        pub(super) const VOCABULARY: &[(u8, &[u8])] = &[$(($id, $text)),*];
    };
}

vocabulary! {
    USAGE = 1 => b"usage",
    MODEL = 2 => b"model",
    MESSAGE = 3 => b"message",
    RESPONSE = 4 => b"response",
    CHOICES = 5 => b"choices",
    DELTA = 6 => b"delta",
    CONTENT = 7 => b"content",
    TEXT = 8 => b"text",
    REASONING_CONTENT = 9 => b"reasoning_content",
    REASONING = 10 => b"reasoning",
    REFUSAL = 11 => b"refusal",
    TOOL_CALLS = 12 => b"tool_calls",
    FUNCTION = 13 => b"function",
    ARGUMENTS = 14 => b"arguments",
    FINISH_REASON = 15 => b"finish_reason",
    X_GROQ = 16 => b"x_groq",
    PROMPT_TOKENS = 17 => b"prompt_tokens",
    COMPLETION_TOKENS = 18 => b"completion_tokens",
    PROMPT_TOKENS_DETAILS = 19 => b"prompt_tokens_details",
    COMPLETION_TOKENS_DETAILS = 20 => b"completion_tokens_details",
    CACHED_TOKENS = 21 => b"cached_tokens",
    CACHE_WRITE_TOKENS = 22 => b"cache_write_tokens",
    REASONING_TOKENS = 23 => b"reasoning_tokens",
    INPUT_TOKENS = 24 => b"input_tokens",
    OUTPUT_TOKENS = 25 => b"output_tokens",
    INPUT_TOKENS_DETAILS = 26 => b"input_tokens_details",
    OUTPUT_TOKENS_DETAILS = 27 => b"output_tokens_details",
    CACHE_READ_INPUT_TOKENS = 28 => b"cache_read_input_tokens",
    CACHE_CREATION_INPUT_TOKENS = 29 => b"cache_creation_input_tokens",
    THINKING_TOKENS = 30 => b"thinking_tokens",
    THINKING = 31 => b"thinking",
    PARTIAL_JSON = 32 => b"partial_json",
    USAGE_METADATA = 33 => b"usageMetadata",
    PROMPT_TOKEN_COUNT = 34 => b"promptTokenCount",
    CANDIDATES_TOKEN_COUNT = 35 => b"candidatesTokenCount",
    CACHED_CONTENT_TOKEN_COUNT = 36 => b"cachedContentTokenCount",
    THOUGHTS_TOKEN_COUNT = 37 => b"thoughtsTokenCount",
    TOOL_USE_PROMPT_TOKEN_COUNT = 38 => b"toolUsePromptTokenCount",
    MODEL_VERSION = 39 => b"modelVersion",
    CANDIDATES = 40 => b"candidates",
    FINISH_REASON_CAMEL = 41 => b"finishReason",
    PROMPT_FEEDBACK = 42 => b"promptFeedback",
    BLOCK_REASON = 43 => b"blockReason",
    PARTS = 44 => b"parts",
    ERROR = 45 => b"error",
    TYPE = 46 => b"type",
    OUTPUT = 47 => b"output",
    SUMMARY = 48 => b"summary",
}

/// The longest key in the vocabulary: a longer key is [`OTHER`] without being compared.
pub(super) const MAX_KEY_LEN: usize = 27;

/// A raw count as the provider names it, before [`super::normalize`] turns it into Airlock's
/// convention.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Field {
    /// OpenAI `prompt_tokens`/`input_tokens`, Anthropic `input_tokens` (without cache), Gemini
    /// `promptTokenCount`.
    Input = 0,
    /// OpenAI `completion_tokens`/`output_tokens`, Anthropic `output_tokens`, Gemini
    /// `candidatesTokenCount` (without thoughts).
    Output = 1,
    CacheRead = 2,
    CacheWrite = 3,
    Reasoning = 4,
    /// Gemini `toolUsePromptTokenCount`: tool results fed back as input.
    ToolPrompt = 5,
}

pub(super) const FIELDS: usize = 6;

/// What the scanner does with the value at a matching path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Target {
    /// A token count. `last` marks the counts that only arrive once the answer is complete
    /// (Anthropic's `message_start` carries early counts that are not).
    Count(Field, Last),
    /// The model that answered (a string).
    Model,
    /// Generated text whose length the estimate counts when no usage arrives.
    Content,
    /// Anything but `null` or `false` here means the upstream reported an error.
    Error,
    /// A non-null string here means the answer is finished (a finish or block reason).
    Finish,
    /// An event's `type`; the value `error` marks an error.
    Type,
}

/// Whether a count is the answer's final one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Last {
    Yes,
    No,
}

pub(super) struct Rule {
    pub(super) path: &'static [u8],
    /// `path` as one number ([`packed_path`]), compared in one instruction.
    pub(super) packed: u64,
    pub(super) target: Target,
}

const fn rule(path: &'static [u8], target: Target) -> Rule {
    Rule {
        path,
        packed: packed_path(path),
        target,
    }
}

/// A path of at most [`MAX_PATH`] key ids as one number: its ids in the low bytes, its length
/// in the top one, so that two paths are equal exactly when their numbers are. (A longer path
/// is packed as no rule's: it matches none.)
pub(super) const fn packed_path(path: &[u8]) -> u64 {
    if path.len() > MAX_PATH {
        return u64::MAX;
    }
    let mut packed = (path.len() as u64) << 56;
    let mut i = 0;
    while i < path.len() {
        packed |= (path[i] as u64) << (8 * i);
        i += 1;
    }
    packed
}

const fn count(path: &'static [u8], field: Field) -> Rule {
    rule(path, Target::Count(field, Last::Yes))
}

use Field::{CacheRead, CacheWrite, Input, Output, Reasoning, ToolPrompt};
use Target::{Content, Error, Finish, Model, Type};

/// Chat Completions: `usage` in a body or the final chunk (or Groq's `x_groq.usage`), complete
/// once a `finish_reason` has been seen too.
static OPENAI_COMPLETIONS: [Rule; 27] = [
    count(&[USAGE, PROMPT_TOKENS], Input),
    count(&[USAGE, COMPLETION_TOKENS], Output),
    count(&[USAGE, PROMPT_TOKENS_DETAILS, CACHED_TOKENS], CacheRead),
    count(
        &[USAGE, PROMPT_TOKENS_DETAILS, CACHE_WRITE_TOKENS],
        CacheWrite,
    ),
    count(
        &[USAGE, COMPLETION_TOKENS_DETAILS, REASONING_TOKENS],
        Reasoning,
    ),
    count(&[X_GROQ, USAGE, PROMPT_TOKENS], Input),
    count(&[X_GROQ, USAGE, COMPLETION_TOKENS], Output),
    count(
        &[X_GROQ, USAGE, PROMPT_TOKENS_DETAILS, CACHED_TOKENS],
        CacheRead,
    ),
    count(
        &[X_GROQ, USAGE, COMPLETION_TOKENS_DETAILS, REASONING_TOKENS],
        Reasoning,
    ),
    rule(&[MODEL], Model),
    rule(&[CHOICES, ANY, FINISH_REASON], Finish),
    rule(&[ERROR], Error),
    rule(&[TYPE], Type),
    rule(&[CHOICES, ANY, DELTA, CONTENT], Content),
    rule(&[CHOICES, ANY, DELTA, REASONING_CONTENT], Content),
    rule(&[CHOICES, ANY, DELTA, REASONING], Content),
    rule(&[CHOICES, ANY, DELTA, REFUSAL], Content),
    rule(
        &[CHOICES, ANY, DELTA, TOOL_CALLS, ANY, FUNCTION, ARGUMENTS],
        Content,
    ),
    rule(&[CHOICES, ANY, MESSAGE, CONTENT], Content),
    rule(&[CHOICES, ANY, MESSAGE, REASONING_CONTENT], Content),
    rule(&[CHOICES, ANY, MESSAGE, REASONING], Content),
    rule(&[CHOICES, ANY, MESSAGE, REFUSAL], Content),
    rule(
        &[CHOICES, ANY, MESSAGE, TOOL_CALLS, ANY, FUNCTION, ARGUMENTS],
        Content,
    ),
    // Legacy completions (`/completions`) share the dialect.
    rule(&[CHOICES, ANY, TEXT], Content),
    rule(&[CHOICES, ANY, DELTA, FUNCTION, ARGUMENTS], Content),
    rule(&[CHOICES, ANY, MESSAGE, FUNCTION, ARGUMENTS], Content),
    rule(&[CHOICES, ANY, DELTA, TEXT], Content),
];

/// Responses: `response.usage` on the terminal events (`response.completed`, `.incomplete`,
/// `.failed`), or top-level `usage` in a body; earlier events carry `usage: null`.
static OPENAI_RESPONSES: [Rule; 21] = [
    count(&[RESPONSE, USAGE, INPUT_TOKENS], Input),
    count(&[RESPONSE, USAGE, OUTPUT_TOKENS], Output),
    count(
        &[RESPONSE, USAGE, INPUT_TOKENS_DETAILS, CACHED_TOKENS],
        CacheRead,
    ),
    count(
        &[RESPONSE, USAGE, INPUT_TOKENS_DETAILS, CACHE_WRITE_TOKENS],
        CacheWrite,
    ),
    count(
        &[RESPONSE, USAGE, OUTPUT_TOKENS_DETAILS, REASONING_TOKENS],
        Reasoning,
    ),
    count(&[USAGE, INPUT_TOKENS], Input),
    count(&[USAGE, OUTPUT_TOKENS], Output),
    count(&[USAGE, INPUT_TOKENS_DETAILS, CACHED_TOKENS], CacheRead),
    count(
        &[USAGE, INPUT_TOKENS_DETAILS, CACHE_WRITE_TOKENS],
        CacheWrite,
    ),
    count(&[USAGE, OUTPUT_TOKENS_DETAILS, REASONING_TOKENS], Reasoning),
    rule(&[RESPONSE, MODEL], Model),
    rule(&[MODEL], Model),
    rule(&[ERROR], Error),
    rule(&[RESPONSE, ERROR], Error),
    rule(&[TYPE], Type),
    // Streamed text, reasoning summaries and function arguments all arrive as `delta`.
    rule(&[DELTA], Content),
    rule(&[OUTPUT, ANY, CONTENT, ANY, TEXT], Content),
    rule(&[OUTPUT, ANY, CONTENT, ANY, REFUSAL], Content),
    rule(&[OUTPUT, ANY, SUMMARY, ANY, TEXT], Content),
    rule(&[OUTPUT, ANY, ARGUMENTS], Content),
    rule(&[OUTPUT, ANY, TEXT], Content),
];

/// Messages: `usage` in a body or in `message_delta` (cumulative), early counts in
/// `message_start`'s `message.usage`. `input_tokens` there excludes cache reads and writes.
static ANTHROPIC_MESSAGES: [Rule; 19] = [
    count(&[USAGE, INPUT_TOKENS], Input),
    count(&[USAGE, OUTPUT_TOKENS], Output),
    count(&[USAGE, CACHE_READ_INPUT_TOKENS], CacheRead),
    count(&[USAGE, CACHE_CREATION_INPUT_TOKENS], CacheWrite),
    count(&[USAGE, OUTPUT_TOKENS_DETAILS, THINKING_TOKENS], Reasoning),
    rule(
        &[MESSAGE, USAGE, INPUT_TOKENS],
        Target::Count(Input, Last::No),
    ),
    rule(
        &[MESSAGE, USAGE, OUTPUT_TOKENS],
        Target::Count(Output, Last::No),
    ),
    rule(
        &[MESSAGE, USAGE, CACHE_READ_INPUT_TOKENS],
        Target::Count(CacheRead, Last::No),
    ),
    rule(
        &[MESSAGE, USAGE, CACHE_CREATION_INPUT_TOKENS],
        Target::Count(CacheWrite, Last::No),
    ),
    rule(
        &[MESSAGE, USAGE, OUTPUT_TOKENS_DETAILS, THINKING_TOKENS],
        Target::Count(Reasoning, Last::No),
    ),
    rule(&[MODEL], Model),
    rule(&[MESSAGE, MODEL], Model),
    rule(&[ERROR], Error),
    rule(&[TYPE], Type),
    rule(&[DELTA, TEXT], Content),
    rule(&[DELTA, PARTIAL_JSON], Content),
    rule(&[DELTA, THINKING], Content),
    rule(&[CONTENT, ANY, TEXT], Content),
    rule(&[CONTENT, ANY, THINKING], Content),
];

/// Gemini: cumulative `usageMetadata` on every chunk of a stream (the last one wins), complete
/// once a chunk has carried a finish reason (or the prompt was blocked).
static GEMINI: [Rule; 11] = [
    count(&[USAGE_METADATA, PROMPT_TOKEN_COUNT], Input),
    count(&[USAGE_METADATA, CANDIDATES_TOKEN_COUNT], Output),
    count(&[USAGE_METADATA, CACHED_CONTENT_TOKEN_COUNT], CacheRead),
    count(&[USAGE_METADATA, THOUGHTS_TOKEN_COUNT], Reasoning),
    count(&[USAGE_METADATA, TOOL_USE_PROMPT_TOKEN_COUNT], ToolPrompt),
    rule(&[MODEL_VERSION], Model),
    rule(&[CANDIDATES, ANY, FINISH_REASON_CAMEL], Finish),
    rule(&[PROMPT_FEEDBACK, BLOCK_REASON], Finish),
    rule(&[ERROR], Error),
    rule(&[CANDIDATES, ANY, CONTENT, PARTS, ANY, TEXT], Content),
    rule(&[TYPE], Type),
];

/// The rules of a dialect; none for [`Api::None`].
pub(super) fn rules(api: Api) -> &'static [Rule] {
    match api {
        Api::OpenaiCompletions => &OPENAI_COMPLETIONS,
        Api::OpenaiResponses => &OPENAI_RESPONSES,
        Api::AnthropicMessages => &ANTHROPIC_MESSAGES,
        Api::Gemini => &GEMINI,
        Api::None => &[],
    }
}

/// Whether a dialect's final usage also needs a finish marker before it counts as final: Chat
/// Completions and Gemini may repeat running totals on every chunk, so usage alone does not say
/// the answer is over.
pub(super) fn needs_finish_marker(api: Api) -> bool {
    matches!(api, Api::OpenaiCompletions | Api::Gemini)
}

/// The longest path any rule names.
pub(super) const MAX_PATH: usize = 7;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vocabulary_is_consistent() {
        let mut seen = std::collections::HashSet::new();
        for &(id, text) in VOCABULARY {
            assert_eq!(key_id(text), id, "{}", String::from_utf8_lossy(text));
            assert!(id != OTHER && id != ANY);
            assert!(seen.insert(id), "duplicate id {id}");
            assert!(text.len() <= MAX_KEY_LEN);
        }
        assert!(VOCABULARY.iter().any(|(_, text)| text.len() == MAX_KEY_LEN));
        assert_eq!(key_id(b"usage "), OTHER);
        assert_eq!(key_id(b""), OTHER);
    }

    #[test]
    fn rules_are_well_formed() {
        for api in Api::ALL {
            let rules = rules(api);
            assert_eq!(rules.is_empty(), api == Api::None);
            for (i, rule) in rules.iter().enumerate() {
                assert!(!rule.path.is_empty() && rule.path.len() <= MAX_PATH);
                // The scanner rejects a value whose own key is unknown before comparing paths.
                assert!(!matches!(rule.path.last(), Some(&ANY | &OTHER)));
                assert!(!rule.path.contains(&OTHER));
                assert_eq!(rule.packed, packed_path(rule.path));
                for other in &rules[i + 1..] {
                    assert_ne!(rule.path, other.path, "{api}: one path, two rules");
                    assert_ne!(rule.packed, other.packed);
                }
            }
        }
    }
}
