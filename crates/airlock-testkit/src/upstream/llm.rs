//! Imitations of four LLM APIs, close enough to the real wire format that the official SDKs
//! parse every answer, and that report token usage a test can predict to the token:
//!
//! | responder | answers | shapes |
//! |---|---|---|
//! | [`openai_chat`] | `POST …/chat/completions`, `POST …/responses`, `GET …/models` | Chat Completions and Responses, JSON and SSE |
//! | [`anthropic_messages`] | `POST …/messages`, `POST …/messages/count_tokens` | Messages, JSON and SSE |
//! | [`gemini`] | `POST …/models/{model}:generateContent`, `:streamGenerateContent` (`?alt=sse`, else a streamed JSON array), `:countTokens` | Gemini API |
//!
//! The shapes follow the providers' API references and the types of their official SDKs
//! (`openai-python`, `anthropic-sdk-python`, the Gemini API reference): usage where each
//! provider puts it, tool calls, reasoning (Anthropic's thinking blocks, OpenAI's reasoning
//! items, Gemini's thought parts), OpenAI's usage-only last chunk only when the request asked
//! for it with `stream_options.include_usage`, Anthropic's placeholder output count in
//! `message_start` and cumulative `message_delta`, Gemini's running `usageMetadata` on every
//! chunk. Streamed events leave [`STREAM_GAP`] apart, each in its own write.
//!
//! # What the model says
//!
//! The assistant's text is `Hello from the recording upstream. You said: <last user text>`, so a
//! test sees its prompt made the round trip. When the request offers tools, the model calls the
//! first one with the arguments `{"input":"test"}` instead.
//!
//! # Token counts
//!
//! Counts are a fixed function of the request, so that a test can assert exact numbers. Let
//! `w` be the number of whitespace-separated words in every text part of the prompt (all
//! messages of every role, the system prompt or instructions; tool definitions and non-text
//! parts count nothing). Then, in Airlock's convention (input counts cached tokens, output
//! counts reasoning):
//!
//! | count | value |
//! |---|---|
//! | input | [`PROMPT_OVERHEAD`] + `w`, plus [`CACHE_READ_TOKENS`] + [`CACHE_WRITE_TOKENS`] for a *cache* model |
//! | cache read | [`CACHE_READ_TOKENS`] for a *cache* model, else 0 |
//! | cache write | [`CACHE_WRITE_TOKENS`] for a *cache* model, else 0 (Gemini never reports writes: creating a cache is a call of its own, so a Gemini *cache* model only reads) |
//! | output | the words of the reply text ([`REPLY_WORDS`] + the words of the last user text), or [`TOOL_CALL_TOKENS`] for a tool call; plus [`REASONING_TOKENS`] when reasoning |
//! | reasoning | [`REASONING_TOKENS`] when reasoning, else 0 |
//!
//! Each provider reports them in its own convention: Anthropic's `input_tokens` leaves the
//! cached tokens out, Gemini's `candidatesTokenCount` leaves the thoughts out, OpenAI's totals
//! include both.
//!
//! # Models that ask for something
//!
//! The model name selects behaviour (several may combine: `claude-test-cache-reason-slow`):
//! - containing `cache`: the prompt is said to follow a cached prefix (see above);
//! - containing `reason`: the model reasons first. Anthropic also reasons when the request
//!   enables `thinking`. Reasoning shows as a thinking block (Anthropic), a reasoning output item
//!   (Responses), thought parts when `thinkingConfig.includeThoughts` is set (Gemini), and only
//!   in the usage for Chat Completions (as OpenAI's reasoning models do);
//! - containing `slow`: a stream's second event follows the first after [`SLOW_PAUSE`], so a
//!   client that leaves after the first event is gone long before the usage is sent;
//! - [`ERROR_MODEL`]: a 429 rate-limit error in the provider's shape. Error responses carry
//!   `x-should-retry: false`, which the SDKs honour, so a test of the error path does not wait
//!   through the SDK's retries.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

mod anthropic;
mod gemini;
mod openai;

pub use self::anthropic::anthropic_messages;
pub use self::gemini::gemini;
pub use self::openai::openai_chat;

/// The pause between two streamed events.
pub const STREAM_GAP: Duration = Duration::from_millis(50);

/// The pause after a *slow* model's first streamed event.
pub const SLOW_PAUSE: Duration = Duration::from_secs(1);

/// The model name that gets a 429 rate-limit error.
pub const ERROR_MODEL: &str = "error-model";

/// Input tokens every request costs besides its words (roles, formatting), as real tokenizers
/// add a few.
pub const PROMPT_OVERHEAD: u64 = 8;

/// Words of the reply's fixed opening, `Hello from the recording upstream. You said:`.
pub const REPLY_WORDS: u64 = 7;

/// Output tokens of a tool call.
pub const TOOL_CALL_TOKENS: u64 = 8;

/// Input tokens a *cache* model reads from the prompt cache (OpenAI's smallest cacheable
/// prefix).
pub const CACHE_READ_TOKENS: u64 = 1024;

/// Input tokens a *cache* model writes to the prompt cache (except Gemini's).
pub const CACHE_WRITE_TOKENS: u64 = 256;

/// Output tokens a reasoning model spends on reasoning.
pub const REASONING_TOKENS: u64 = 64;

/// The arguments every imitated tool call carries.
const TOOL_INPUT: &str = r#"{"input":"test"}"#;

/// The opening of every reply.
const REPLY_OPENING: &str = "Hello from the recording upstream. You said:";

/// The summary of the imitated reasoning, where a dialect shows one.
const REASONING_SUMMARY: &str = "The user wants their words echoed back; I will do that.";

fn next_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

fn count_words(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

/// The texts of a `content`: a string, or the `text` of each part of a list (content blocks,
/// Gemini parts). Other parts (images, tool calls) have none.
fn texts(content: &Value) -> Vec<&str> {
    match content {
        Value::String(text) => vec![text.as_str()],
        Value::Array(parts) => parts.iter().filter_map(|p| p["text"].as_str()).collect(),
        _ => Vec::new(),
    }
}

/// The texts of a `content`, joined with spaces.
fn joined(content: &Value) -> String {
    texts(content).join(" ")
}

/// The words of every text of `contents`' `field`, plus those of `system`.
fn prompt_words<'a>(
    system: &Value,
    contents: impl IntoIterator<Item = &'a Value>,
    field: &str,
) -> u64 {
    let mut words: u64 = texts(system).into_iter().map(count_words).sum();
    for item in contents {
        words += texts(&item[field])
            .into_iter()
            .map(count_words)
            .sum::<u64>();
    }
    words
}

/// The last item of `items` whose `role` is `role`.
fn last_with_role<'a>(items: &'a Value, role: &str) -> Option<&'a Value> {
    items
        .as_array()
        .and_then(|m| m.iter().rev().find(|m| m["role"] == role))
}

/// What the imitated model does for one request, and what that costs in tokens.
struct Turn {
    model: String,
    /// The reply text, when the model answers in text.
    text: String,
    /// The tool the model calls instead, if the request offered one.
    tool: Option<String>,
    reasoning: bool,
    slow: bool,
    tokens: Tokens,
}

/// A turn's token counts in Airlock's convention (see the module docs); each dialect reports
/// them in its own.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Tokens {
    /// Every input token, cached ones included.
    input: u64,
    cache_read: u64,
    cache_write: u64,
    /// Every output token, reasoning included.
    output: u64,
    reasoning: u64,
}

impl Tokens {
    /// Input tokens neither read from nor written to the cache.
    fn uncached_input(&self) -> u64 {
        self.input - self.cache_read - self.cache_write
    }

    /// Output tokens that are not reasoning.
    fn visible_output(&self) -> u64 {
        self.output - self.reasoning
    }
}

/// Whether the dialect reports tokens written to the prompt cache.
#[derive(Clone, Copy, PartialEq, Eq)]
enum CacheWrites {
    Reported,
    Never,
}

impl Turn {
    /// The turn for a request to `model` whose prompt has `prompt_words` words and whose last
    /// user message says `last_user`; `tool` when the request offers tools; `asks_reasoning`
    /// when the request itself enables reasoning.
    fn new(
        model: &str,
        prompt_words: u64,
        last_user: &str,
        tool: Option<String>,
        asks_reasoning: bool,
        cache_writes: CacheWrites,
    ) -> Turn {
        let text = format!("{REPLY_OPENING} {last_user}");
        let reasoning = asks_reasoning || model.contains("reason");
        let cached = model.contains("cache");
        let cache_read = if cached { CACHE_READ_TOKENS } else { 0 };
        let cache_write = if cached && cache_writes == CacheWrites::Reported {
            CACHE_WRITE_TOKENS
        } else {
            0
        };
        let reasoning_tokens = if reasoning { REASONING_TOKENS } else { 0 };
        let answer = match &tool {
            Some(_) => TOOL_CALL_TOKENS,
            None => count_words(&text),
        };
        Turn {
            model: model.to_owned(),
            tool,
            reasoning,
            slow: model.contains("slow"),
            tokens: Tokens {
                input: PROMPT_OVERHEAD + prompt_words + cache_read + cache_write,
                cache_read,
                cache_write,
                output: answer + reasoning_tokens,
                reasoning: reasoning_tokens,
            },
            text,
        }
    }

    /// The turn's events as a stream: the first at once, the second after [`SLOW_PAUSE`] for a
    /// slow model, every other one [`STREAM_GAP`] after the previous.
    fn spaced(&self, events: Vec<String>) -> Vec<(Duration, String)> {
        events
            .into_iter()
            .enumerate()
            .map(|(i, e)| {
                let delay = match i {
                    0 => Duration::ZERO,
                    1 if self.slow => SLOW_PAUSE,
                    _ => STREAM_GAP,
                };
                (delay, e)
            })
            .collect()
    }
}

/// Splits `text` into at most `max` pieces at word boundaries; concatenated they give `text`,
/// and their word counts add up to the text's.
fn pieces(text: &str, max: usize) -> Vec<String> {
    let words: Vec<&str> = text.split_inclusive(' ').collect();
    if words.is_empty() {
        return vec![String::new()];
    }
    let per_piece = words.len().div_ceil(max.max(1));
    words.chunks(per_piece).map(|c| c.concat()).collect()
}

/// The tool call's arguments in two halves, as streams deliver them.
fn tool_input_halves() -> [&'static str; 2] {
    let (first, second) = TOOL_INPUT.split_at(TOOL_INPUT.len() / 2);
    [first, second]
}

/// An SSE event named after its data's `type` (Anthropic, Responses).
fn named_event(data: &Value) -> String {
    let kind = data["type"].as_str().unwrap_or("message");
    format!("event: {kind}\ndata: {data}\n\n")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn pieces_concatenate_to_the_text() {
        for (text, max) in [("a b c d e f g h", 3), ("one", 6), ("", 6), ("a b", 6)] {
            let p = pieces(text, max);
            assert!(p.len() <= max.max(1), "{text:?} gave {p:?}");
            assert_eq!(p.concat(), text);
            let words: u64 = p.iter().map(|p| count_words(p)).sum();
            assert_eq!(words, count_words(text));
        }
    }

    #[test]
    fn texts_read_strings_and_blocks() {
        let messages = json!([
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "reply"},
            {"role": "user", "content": [{"type": "text", "text": "second"}, {"type": "image"}, {"type": "text", "text": "part"}]},
        ]);
        let last = last_with_role(&messages, "user").unwrap();
        assert_eq!(joined(&last["content"]), "second part");
        assert!(last_with_role(&json!([]), "user").is_none());
        let system = json!("be brief please");
        let words = prompt_words(&system, messages.as_array().unwrap(), "content");
        assert_eq!(words, 3 + 1 + 1 + 2);
    }

    #[test]
    fn token_counts_follow_the_documented_formula() {
        assert_eq!(REPLY_WORDS, count_words(REPLY_OPENING));
        // (model, prompt words, last user text, tool, asks reasoning, cache writes) → tokens
        let cases = [
            (
                (
                    "gpt-test",
                    3,
                    "one two three",
                    false,
                    false,
                    CacheWrites::Reported,
                ),
                (11, 0, 0, 10, 0),
            ),
            (
                (
                    "gpt-test",
                    3,
                    "one two three",
                    true,
                    false,
                    CacheWrites::Reported,
                ),
                (11, 0, 0, TOOL_CALL_TOKENS, 0),
            ),
            (
                ("m-reason", 1, "hi", false, false, CacheWrites::Reported),
                (9, 0, 0, 8 + 64, 64),
            ),
            (
                ("m", 1, "hi", false, true, CacheWrites::Reported),
                (9, 0, 0, 8 + 64, 64),
            ),
            (
                ("m-cache", 2, "a b", false, false, CacheWrites::Reported),
                (10 + 1024 + 256, 1024, 256, 9, 0),
            ),
            (
                ("m-cache-reason", 2, "a b", false, false, CacheWrites::Never),
                (10 + 1024, 1024, 0, 9 + 64, 64),
            ),
        ];
        for ((model, words, last, tool, asks, writes), expected) in cases {
            let turn = Turn::new(
                model,
                words,
                last,
                tool.then(|| "lookup".to_owned()),
                asks,
                writes,
            );
            let t = turn.tokens;
            assert_eq!(
                (t.input, t.cache_read, t.cache_write, t.output, t.reasoning),
                expected,
                "{model}"
            );
            assert_eq!(t.uncached_input(), PROMPT_OVERHEAD + words);
        }
    }

    #[test]
    fn only_slow_models_pause_after_the_first_event() {
        let events = || vec!["a".to_owned(), "b".to_owned(), "c".to_owned()];
        let turn = |model| Turn::new(model, 0, "", None, false, CacheWrites::Reported);
        let delays = |model| -> Vec<Duration> {
            turn(model)
                .spaced(events())
                .into_iter()
                .map(|e| e.0)
                .collect()
        };
        assert_eq!(delays("gpt-test"), [Duration::ZERO, STREAM_GAP, STREAM_GAP]);
        assert_eq!(
            delays("gpt-test-slow"),
            [Duration::ZERO, SLOW_PAUSE, STREAM_GAP]
        );
    }
}
