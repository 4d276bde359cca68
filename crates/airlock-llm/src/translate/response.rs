//! Whole (non-streaming) responses from the backend's dialect to the client's, and the
//! mappings the stream translator shares: stop reasons and usage.

use serde::Serialize;
use serde_json::Value;

use super::json::{field, parse_object, type_name, Object};
use super::request::arguments_object;
use super::TranslateError;
use crate::json::{json_object, StrOr, Text};

/// Anthropic's `stop_reason` as OpenAI's `finish_reason`.
pub(super) fn finish_reason_for(stop_reason: &str) -> &'static str {
    match stop_reason {
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        // end_turn, stop_sequence, pause_turn (a server tool's loop paused) and any new one.
        _ => "stop",
    }
}

/// OpenAI's `finish_reason` as Anthropic's `stop_reason`.
pub(super) fn stop_reason_for(finish_reason: &str) -> &'static str {
    match finish_reason {
        "length" => "max_tokens",
        "tool_calls" | "function_call" => "tool_use",
        "content_filter" => "refusal",
        _ => "end_turn",
    }
}

/// Token counts in Anthropic's terms: `input` leaves out the cached tokens.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Tokens {
    pub(super) input: u64,
    pub(super) output: u64,
    pub(super) cache_read: u64,
    pub(super) cache_write: u64,
    pub(super) reasoning: Option<u64>,
}

fn count(value: Option<&Value>) -> Option<u64> {
    value.and_then(Value::as_u64)
}

json_object! {
    /// An Anthropic `usage` object: the counts a translation reports.
    struct AnthropicUsage<'de> {
        input_tokens: u64 = "input_tokens",
        output_tokens: u64 = "output_tokens",
        cache_read_input_tokens: u64 = "cache_read_input_tokens",
        cache_creation_input_tokens: u64 = "cache_creation_input_tokens",
        output_tokens_details: ThinkingTokens<'de> = "output_tokens_details",
    }
}

json_object! {
    /// `usage.output_tokens_details`.
    struct ThinkingTokens<'de> {
        thinking_tokens: u64 = "thinking_tokens",
    }
}

impl AnthropicUsage<'_> {
    /// The counts of a `usage` value, leniently: a count that is not a non-negative integer is
    /// left out (the typed reading refuses it, and the `Value` reading is what then runs).
    fn of_value(usage: &Value) -> Self {
        let details = usage.get("output_tokens_details");
        AnthropicUsage {
            input_tokens: count(usage.get("input_tokens")),
            output_tokens: count(usage.get("output_tokens")),
            cache_read_input_tokens: count(usage.get("cache_read_input_tokens")),
            cache_creation_input_tokens: count(usage.get("cache_creation_input_tokens")),
            output_tokens_details: Some(ThinkingTokens {
                thinking_tokens: count(details.and_then(|d| d.get("thinking_tokens"))),
                ..ThinkingTokens::default()
            }),
            ..AnthropicUsage::default()
        }
    }
}

impl Tokens {
    /// Takes in an Anthropic `usage` object: the counts it has replace the ones before (a
    /// stream's `message_delta` carries running totals, some of them only).
    pub(super) fn update_from_anthropic(&mut self, usage: &Value) {
        self.update(&AnthropicUsage::of_value(usage));
    }

    fn update(&mut self, usage: &AnthropicUsage<'_>) {
        if let Some(n) = usage.input_tokens {
            self.input = n;
        }
        if let Some(n) = usage.output_tokens {
            self.output = n;
        }
        if let Some(n) = usage.cache_read_input_tokens {
            self.cache_read = n;
        }
        if let Some(n) = usage.cache_creation_input_tokens {
            self.cache_write = n;
        }
        let details = usage.output_tokens_details.as_ref();
        if let Some(n) = details.and_then(|d| d.thinking_tokens) {
            self.reasoning = Some(n);
        }
    }

    /// Reads an OpenAI `usage` object; `prompt_tokens` includes the cached ones.
    pub(super) fn from_openai(usage: &Value) -> Tokens {
        OpenaiUsageIn::of_value(usage).tokens()
    }

    pub(super) fn prompt_tokens(&self) -> u64 {
        self.input
            .saturating_add(self.cache_read)
            .saturating_add(self.cache_write)
    }

    /// The counts as an OpenAI `usage` object.
    pub(super) fn openai_usage(&self) -> OpenaiUsage {
        let prompt = self.prompt_tokens();
        OpenaiUsage {
            completion_tokens: self.output,
            completion_tokens_details: self
                .reasoning
                .map(|reasoning_tokens| ReasoningTokens { reasoning_tokens }),
            prompt_tokens: prompt,
            prompt_tokens_details: CachedTokens {
                cached_tokens: self.cache_read,
            },
            total_tokens: prompt.saturating_add(self.output),
        }
    }

    pub(super) fn openai_json(&self) -> Value {
        serde_json::to_value(self.openai_usage()).unwrap_or(Value::Null)
    }
}

// What a translation writes is declared with its keys in sorted order: the order a
// `serde_json::Value` object (a `BTreeMap`) writes them in, which the `Value`-built bodies
// elsewhere in this module share.

/// An OpenAI `usage` object.
#[derive(Serialize)]
pub(super) struct OpenaiUsage {
    completion_tokens: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    completion_tokens_details: Option<ReasoningTokens>,
    prompt_tokens: u64,
    prompt_tokens_details: CachedTokens,
    total_tokens: u64,
}

#[derive(Serialize)]
struct ReasoningTokens {
    reasoning_tokens: u64,
}

#[derive(Serialize)]
struct CachedTokens {
    cached_tokens: u64,
}

json_object! {
    /// An Anthropic message (a whole answer): the fields a translation reads.
    struct AnthropicMessage<'de> {
        id: Text<'de> = "id",
        model: Text<'de> = "model",
        content: Vec<AnthropicBlock<'de>> = "content",
        stop_reason: Text<'de> = "stop_reason",
        usage: AnthropicUsage<'de> = "usage",
    }
}

json_object! {
    /// A content block of an Anthropic message; which fields count depends on its type.
    struct AnthropicBlock<'de> {
        kind: Text<'de> = "type",
        text: Text<'de> = "text",
        id: Text<'de> = "id",
        name: Text<'de> = "name",
        input: Value = "input",
        thinking: Text<'de> = "thinking",
        signature: Text<'de> = "signature",
        data: Text<'de> = "data",
    }
}

impl<'v> AnthropicMessage<'v> {
    /// Reads a message from its `Value`, checking each field the translation uses and naming
    /// the first that is wrong. Blocks of a type the translation skips keep only their type.
    fn read(root: &'v Object) -> Result<Self, TranslateError> {
        let text = |value: Option<&'v str>| value.map(|text| Text(text.into()));
        let id = text(field(root, "", "id").str()?);
        let model = text(field(root, "", "model").str()?);
        let mut content = Vec::new();
        for (at, block) in field(root, "", "content").objects()? {
            let kind = field(block, &at, "type").required_str()?;
            let mut read = AnthropicBlock {
                kind: text(Some(kind)),
                ..AnthropicBlock::default()
            };
            match kind {
                "text" => read.text = text(Some(field(block, &at, "text").required_str()?)),
                "tool_use" => {
                    read.id = text(Some(field(block, &at, "id").required_str()?));
                    read.name = text(Some(field(block, &at, "name").required_str()?));
                    read.input = field(block, &at, "input").value.cloned();
                }
                "thinking" => {
                    read.thinking = text(field(block, &at, "thinking").str()?);
                    read.signature = text(field(block, &at, "signature").str()?);
                }
                "redacted_thinking" => read.data = text(field(block, &at, "data").str()?),
                _ => {}
            }
            content.push(read);
        }
        Ok(AnthropicMessage {
            id,
            model,
            content: Some(content),
            stop_reason: text(field(root, "", "stop_reason").str()?),
            usage: field(root, "", "usage")
                .object()?
                .map(|usage| AnthropicUsage::of_value(&Value::Object(usage.clone()))),
            ..AnthropicMessage::default()
        })
    }

    /// The Chat Completions response for this message, or `None` when a field the translation
    /// needs is missing (which [`AnthropicMessage::read`] names).
    fn to_chat_completion(&self, created: u64) -> Option<Vec<u8>> {
        let mut text = String::new();
        let mut reasoning = String::new();
        let mut thinking_blocks = Vec::new();
        let mut tool_calls = Vec::new();
        for block in self.content.iter().flatten() {
            match block.kind.as_deref()? {
                "text" => text.push_str(block.text.as_deref()?),
                "tool_use" => tool_calls.push(ToolCall {
                    function: Function {
                        arguments: match &block.input {
                            Some(input) => input.to_string(),
                            None => "{}".to_owned(),
                        },
                        name: block.name.as_deref()?,
                    },
                    id: block.id.as_deref()?,
                    kind: "function",
                }),
                "thinking" => {
                    let thinking = block.thinking.as_deref().unwrap_or("");
                    reasoning.push_str(thinking);
                    thinking_blocks.push(ThinkingBlock::Thinking {
                        signature: block.signature.as_deref().unwrap_or(""),
                        thinking,
                        kind: "thinking",
                    });
                }
                "redacted_thinking" => thinking_blocks.push(ThinkingBlock::Redacted {
                    data: block.data.as_deref().unwrap_or(""),
                    kind: "redacted_thinking",
                }),
                // Server tools' blocks (web search and its results, code execution) have no
                // counterpart; what the model said about them is in its text.
                _ => {}
            }
        }
        let mut tokens = Tokens::default();
        if let Some(usage) = &self.usage {
            tokens.update(usage);
        }
        let stop_reason = self.stop_reason.as_deref().unwrap_or("end_turn");
        let thinking = !thinking_blocks.is_empty();
        let out = ChatCompletion {
            choices: [Choice {
                finish_reason: finish_reason_for(stop_reason),
                index: 0,
                logprobs: (),
                message: ChatMessage {
                    content: (!text.is_empty() || tool_calls.is_empty()).then_some(text.as_str()),
                    reasoning_content: thinking.then_some(reasoning.as_str()),
                    role: "assistant",
                    thinking_blocks,
                    tool_calls,
                },
            }],
            created,
            id: self.id.as_deref().unwrap_or(""),
            model: self.model.as_deref().unwrap_or(""),
            object: "chat.completion",
            usage: tokens.openai_usage(),
        };
        // Serializing these types cannot fail: their keys are strings and they hold no floats.
        serde_json::to_vec(&out).ok()
    }
}

#[derive(Serialize)]
struct ChatCompletion<'a> {
    choices: [Choice<'a>; 1],
    created: u64,
    id: &'a str,
    model: &'a str,
    object: &'static str,
    usage: OpenaiUsage,
}

#[derive(Serialize)]
struct Choice<'a> {
    finish_reason: &'static str,
    index: u32,
    logprobs: (),
    message: ChatMessage<'a>,
}

#[derive(Serialize)]
struct ChatMessage<'a> {
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_content: Option<&'a str>,
    role: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    thinking_blocks: Vec<ThinkingBlock<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<ToolCall<'a>>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum ThinkingBlock<'a> {
    Thinking {
        signature: &'a str,
        thinking: &'a str,
        #[serde(rename = "type")]
        kind: &'static str,
    },
    Redacted {
        data: &'a str,
        #[serde(rename = "type")]
        kind: &'static str,
    },
}

#[derive(Serialize)]
struct ToolCall<'a> {
    function: Function<'a>,
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
}

#[derive(Serialize)]
struct Function<'a> {
    arguments: String,
    name: &'a str,
}

/// Translates an Anthropic message into a Chat Completions response. `created` is the Unix
/// time in seconds to report (the crate reads no clock).
pub fn anthropic_to_openai_response(body: &[u8], created: u64) -> Result<Vec<u8>, TranslateError> {
    if let Ok(message) = serde_json::from_slice::<AnthropicMessage<'_>>(body) {
        if let Some(out) = message.to_chat_completion(created) {
            return Ok(out);
        }
    }
    anthropic_to_openai_by_value(body, created)
}

/// [`anthropic_to_openai_response`] by way of a `Value`: what runs when the typed reading
/// fails, to name what is wrong or to take what it was too strict for.
pub(super) fn anthropic_to_openai_by_value(
    body: &[u8],
    created: u64,
) -> Result<Vec<u8>, TranslateError> {
    let root = parse_object(body)?;
    AnthropicMessage::read(&root)?
        .to_chat_completion(created)
        .ok_or_else(|| TranslateError::malformed("body: not an Anthropic message"))
}

json_object! {
    /// An OpenAI `usage` object as read: the counts a translation reports.
    struct OpenaiUsageIn<'de> {
        prompt_tokens: u64 = "prompt_tokens",
        completion_tokens: u64 = "completion_tokens",
        prompt_tokens_details: CachedTokensIn<'de> = "prompt_tokens_details",
        completion_tokens_details: ReasoningTokensIn<'de> = "completion_tokens_details",
    }
}

json_object! {
    /// `usage.prompt_tokens_details`.
    struct CachedTokensIn<'de> {
        cached_tokens: u64 = "cached_tokens",
    }
}

json_object! {
    /// `usage.completion_tokens_details`.
    struct ReasoningTokensIn<'de> {
        reasoning_tokens: u64 = "reasoning_tokens",
    }
}

impl OpenaiUsageIn<'_> {
    /// The counts of a `usage` value, leniently (see [`AnthropicUsage::of_value`]).
    fn of_value(usage: &Value) -> Self {
        let prompt = usage.get("prompt_tokens_details");
        let completion = usage.get("completion_tokens_details");
        OpenaiUsageIn {
            prompt_tokens: count(usage.get("prompt_tokens")),
            completion_tokens: count(usage.get("completion_tokens")),
            prompt_tokens_details: Some(CachedTokensIn {
                cached_tokens: count(prompt.and_then(|d| d.get("cached_tokens"))),
                ..CachedTokensIn::default()
            }),
            completion_tokens_details: Some(ReasoningTokensIn {
                reasoning_tokens: count(completion.and_then(|d| d.get("reasoning_tokens"))),
                ..ReasoningTokensIn::default()
            }),
            ..OpenaiUsageIn::default()
        }
    }

    fn tokens(&self) -> Tokens {
        let prompt = self.prompt_tokens.unwrap_or(0);
        let details = self.prompt_tokens_details.as_ref();
        let cached = details.and_then(|d| d.cached_tokens).unwrap_or(0);
        let completion = self.completion_tokens_details.as_ref();
        Tokens {
            input: prompt.saturating_sub(cached),
            output: self.completion_tokens.unwrap_or(0),
            cache_read: cached.min(prompt),
            cache_write: 0,
            reasoning: completion.and_then(|d| d.reasoning_tokens),
        }
    }
}

json_object! {
    /// A Chat Completions response (a whole answer): the fields a translation reads.
    struct ChatCompletionIn<'de> {
        id: Text<'de> = "id",
        model: Text<'de> = "model",
        choices: Vec<ChoiceIn<'de>> = "choices",
        usage: OpenaiUsageIn<'de> = "usage",
    }
}

json_object! {
    struct ChoiceIn<'de> {
        message: ChatMessageIn<'de> = "message",
        finish_reason: Text<'de> = "finish_reason",
    }
}

json_object! {
    struct ChatMessageIn<'de> {
        reasoning_content: Text<'de> = "reasoning_content",
        reasoning: Text<'de> = "reasoning",
        content: ContentIn<'de> = "content",
        refusal: Text<'de> = "refusal",
        tool_calls: Vec<ToolCallIn<'de>> = "tool_calls",
    }
}

json_object! {
    /// A content part of a message (`text` or `refusal`; `cache_control` is read for a
    /// request's parts).
    struct PartIn<'de> {
        kind: Text<'de> = "type",
        text: Text<'de> = "text",
        refusal: Text<'de> = "refusal",
        cache_control: Value = "cache_control",
    }
}

json_object! {
    /// A tool call (`type` is read for a request's calls).
    struct ToolCallIn<'de> {
        kind: Text<'de> = "type",
        id: Text<'de> = "id",
        function: FunctionIn<'de> = "function",
    }
}

json_object! {
    struct FunctionIn<'de> {
        name: Text<'de> = "name",
        arguments: Text<'de> = "arguments",
    }
}

/// An assistant message's `content`: a string or an array of parts.
pub(super) type ContentIn<'de> = StrOr<'de, PartIn<'de>>;

impl<'v> ChatCompletionIn<'v> {
    /// Reads a response from its `Value`, checking each field the translation uses and naming
    /// the first that is wrong. Only the first choice is kept.
    fn read(root: &'v Object) -> Result<Self, TranslateError> {
        let text = |value: Option<&'v str>| value.map(|text| Text(text.into()));
        let id = text(field(root, "", "id").str()?);
        let model = text(field(root, "", "model").str()?);
        let choices = field(root, "", "choices").objects()?;
        let Some((at, choice)) = choices.first() else {
            return Err(TranslateError::malformed(
                "choices: must have at least one choice",
            ));
        };
        let message_at = format!("{at}.message");
        let mut message = ChatMessageIn::default();
        if let Some(read) = field(choice, at, "message").object()? {
            // DeepSeek, vLLM and others return `reasoning_content`; OpenRouter and some
            // others `reasoning`, read only when the first is absent, and leniently.
            message.reasoning_content = text(field(read, &message_at, "reasoning_content").str()?);
            if message.reasoning_content.is_none() {
                message.reasoning =
                    text(field(read, &message_at, "reasoning").str().ok().flatten());
            }
            let content = field(read, &message_at, "content");
            message.content = match content.value {
                None => None,
                Some(Value::String(one)) => Some(ContentIn::Text(Text(one.as_str().into()))),
                Some(Value::Array(_)) => {
                    let mut parts = Vec::new();
                    for (at, part) in content.objects()? {
                        let kind = field(part, &at, "type").str()?;
                        let mut read = PartIn {
                            kind: text(kind),
                            ..PartIn::default()
                        };
                        match kind {
                            Some("refusal") => {
                                read.refusal = text(field(part, &at, "refusal").str()?)
                            }
                            _ => read.text = text(field(part, &at, "text").str()?),
                        }
                        parts.push(read);
                    }
                    Some(ContentIn::Parts(parts))
                }
                Some(other) => {
                    return Err(TranslateError::malformed(format!(
                        "{}: must be a string or an array of content parts, not {}",
                        content.path(),
                        type_name(other)
                    )))
                }
            };
            message.refusal = text(field(read, &message_at, "refusal").str()?);
            let mut tool_calls = Vec::new();
            for (at, call) in field(read, &message_at, "tool_calls").objects()? {
                let id = text(field(call, &at, "id").str()?);
                let function_at = format!("{at}.function");
                let function = field(call, &at, "function").required_object()?;
                tool_calls.push(ToolCallIn {
                    id,
                    function: Some(FunctionIn {
                        name: text(Some(field(function, &function_at, "name").required_str()?)),
                        arguments: text(field(function, &function_at, "arguments").str()?),
                        ..FunctionIn::default()
                    }),
                    ..ToolCallIn::default()
                });
            }
            message.tool_calls = Some(tool_calls);
        }
        let finish_reason = text(field(choice, at, "finish_reason").str()?);
        let usage = field(root, "", "usage").object()?;
        Ok(ChatCompletionIn {
            id,
            model,
            choices: Some(vec![ChoiceIn {
                message: Some(message),
                finish_reason,
                ..ChoiceIn::default()
            }]),
            usage: usage.map(|usage| OpenaiUsageIn::of_value(&Value::Object(usage.clone()))),
            ..ChatCompletionIn::default()
        })
    }

    /// The Anthropic message for this response's first choice, or `None` when a field the
    /// translation needs is missing (which [`ChatCompletionIn::read`] names).
    fn to_anthropic_message(&self) -> Option<Vec<u8>> {
        let choice = self.choices.as_ref()?.first()?;
        let empty = ChatMessageIn::default();
        let message = choice.message.as_ref().unwrap_or(&empty);
        let mut content = Vec::new();
        // Reasoning has no signature, so it can be shown but not sent back to Anthropic.
        let reasoning = message
            .reasoning_content
            .as_ref()
            .or(message.reasoning.as_ref());
        if let Some(thinking) = reasoning.filter(|r| !r.is_empty()) {
            content.push(AnthropicBlockOut::Thinking {
                signature: "",
                thinking,
                kind: "thinking",
            });
        }
        match &message.content {
            Some(ContentIn::Text(one)) if !one.is_empty() => {
                content.push(AnthropicBlockOut::text(one))
            }
            Some(ContentIn::Parts(parts)) => {
                for part in parts {
                    let text = match part.kind.as_deref() {
                        Some("refusal") => part.refusal.as_deref(),
                        _ => part.text.as_deref(),
                    };
                    if let Some(text) = text.filter(|t| !t.is_empty()) {
                        content.push(AnthropicBlockOut::text(text));
                    }
                }
            }
            _ => {}
        }
        let refusal = message.refusal.as_deref().filter(|r| !r.is_empty());
        if let Some(refusal) = refusal {
            content.push(AnthropicBlockOut::text(refusal));
        }
        for call in message.tool_calls.iter().flatten() {
            let function = call.function.as_ref()?;
            content.push(AnthropicBlockOut::ToolUse {
                id: call.id.as_deref().unwrap_or(""),
                input: arguments_object(function.arguments.as_deref().unwrap_or("")),
                name: function.name.as_deref()?,
                kind: "tool_use",
            });
        }
        let finish = choice.finish_reason.as_deref().unwrap_or("stop");
        let stop_reason = if refusal.is_some() {
            "refusal"
        } else {
            stop_reason_for(finish)
        };
        let tokens = self
            .usage
            .as_ref()
            .map(OpenaiUsageIn::tokens)
            .unwrap_or_default();
        let out = AnthropicMessageOut {
            content,
            id: self.id.as_deref().unwrap_or(""),
            model: self.model.as_deref().unwrap_or(""),
            role: "assistant",
            stop_reason,
            stop_sequence: (),
            kind: "message",
            usage: AnthropicUsageOut {
                cache_creation_input_tokens: tokens.cache_write,
                cache_read_input_tokens: tokens.cache_read,
                input_tokens: tokens.input,
                output_tokens: tokens.output,
            },
        };
        serde_json::to_vec(&out).ok()
    }
}

#[derive(Serialize)]
struct AnthropicMessageOut<'a> {
    content: Vec<AnthropicBlockOut<'a>>,
    id: &'a str,
    model: &'a str,
    role: &'static str,
    stop_reason: &'static str,
    stop_sequence: (),
    #[serde(rename = "type")]
    kind: &'static str,
    usage: AnthropicUsageOut,
}

#[derive(Serialize)]
struct AnthropicUsageOut {
    cache_creation_input_tokens: u64,
    cache_read_input_tokens: u64,
    input_tokens: u64,
    output_tokens: u64,
}

#[derive(Serialize)]
#[serde(untagged)]
enum AnthropicBlockOut<'a> {
    Thinking {
        signature: &'static str,
        thinking: &'a str,
        #[serde(rename = "type")]
        kind: &'static str,
    },
    Text {
        text: &'a str,
        #[serde(rename = "type")]
        kind: &'static str,
    },
    ToolUse {
        id: &'a str,
        input: Value,
        name: &'a str,
        #[serde(rename = "type")]
        kind: &'static str,
    },
}

impl<'a> AnthropicBlockOut<'a> {
    fn text(text: &'a str) -> Self {
        AnthropicBlockOut::Text { text, kind: "text" }
    }
}

/// Translates a Chat Completions response into an Anthropic message. Only the first choice is
/// kept (a translated request never asks for more).
pub fn openai_to_anthropic_response(body: &[u8]) -> Result<Vec<u8>, TranslateError> {
    if let Ok(response) = serde_json::from_slice::<ChatCompletionIn<'_>>(body) {
        if let Some(out) = response.to_anthropic_message() {
            return Ok(out);
        }
    }
    openai_to_anthropic_by_value(body)
}

/// [`openai_to_anthropic_response`] by way of a `Value` (see [`anthropic_to_openai_by_value`]).
pub(super) fn openai_to_anthropic_by_value(body: &[u8]) -> Result<Vec<u8>, TranslateError> {
    let root = parse_object(body)?;
    ChatCompletionIn::read(&root)?
        .to_anthropic_message()
        .ok_or_else(|| TranslateError::malformed("body: not a Chat Completions response"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn stop_reasons_both_ways() {
        let cases = [
            ("end_turn", "stop", "end_turn"),
            ("stop_sequence", "stop", "end_turn"),
            ("pause_turn", "stop", "end_turn"),
            ("max_tokens", "length", "max_tokens"),
            ("model_context_window_exceeded", "length", "max_tokens"),
            ("tool_use", "tool_calls", "tool_use"),
            ("refusal", "content_filter", "refusal"),
        ];
        for (stop, finish, back) in cases {
            assert_eq!(finish_reason_for(stop), finish, "{stop}");
            assert_eq!(stop_reason_for(finish), back, "{finish}");
        }
        assert_eq!(stop_reason_for("function_call"), "tool_use");
    }

    #[test]
    fn usage_conventions() {
        let mut tokens = Tokens::default();
        tokens.update_from_anthropic(&json!({
            "input_tokens": 21, "cache_creation_input_tokens": 100, "cache_read_input_tokens": 1000,
            "output_tokens": 5
        }));
        let openai = tokens.openai_json();
        assert_eq!(openai["prompt_tokens"], 1121);
        assert_eq!(openai["prompt_tokens_details"]["cached_tokens"], 1000);
        assert_eq!(openai["total_tokens"], 1126);
        let back = Tokens::from_openai(&json!({
            "prompt_tokens": 1117, "completion_tokens": 210,
            "prompt_tokens_details": {"cached_tokens": 1024},
            "completion_tokens_details": {"reasoning_tokens": 192}
        }));
        assert_eq!(back.input, 93);
        assert_eq!(back.cache_read, 1024);
        assert_eq!(back.reasoning, Some(192));
        // A cached count above the prompt (a broken upstream) does not underflow.
        let odd = Tokens::from_openai(
            &json!({"prompt_tokens": 5, "prompt_tokens_details": {"cached_tokens": 9}}),
        );
        assert_eq!((odd.input, odd.cache_read), (0, 5));
    }
}
