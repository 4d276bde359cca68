//! Whole (non-streaming) responses from the backend's dialect to the client's, and the
//! mappings the stream translator shares: stop reasons and usage.

use serde_json::{json, Value};

use super::json::{field, parse_object, type_name, Object};
use super::request::arguments_object;
use super::TranslateError;

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

impl Tokens {
    /// Takes in an Anthropic `usage` object: the counts it has replace the ones before (a
    /// stream's `message_delta` carries running totals, some of them only).
    pub(super) fn update_from_anthropic(&mut self, usage: &Value) {
        if let Some(n) = count(usage.get("input_tokens")) {
            self.input = n;
        }
        if let Some(n) = count(usage.get("output_tokens")) {
            self.output = n;
        }
        if let Some(n) = count(usage.get("cache_read_input_tokens")) {
            self.cache_read = n;
        }
        if let Some(n) = count(usage.get("cache_creation_input_tokens")) {
            self.cache_write = n;
        }
        let details = usage.get("output_tokens_details");
        if let Some(n) = count(details.and_then(|d| d.get("thinking_tokens"))) {
            self.reasoning = Some(n);
        }
    }

    /// Reads an OpenAI `usage` object; `prompt_tokens` includes the cached ones.
    pub(super) fn from_openai(usage: &Value) -> Tokens {
        let prompt = count(usage.get("prompt_tokens")).unwrap_or(0);
        let details = usage.get("prompt_tokens_details");
        let cached = count(details.and_then(|d| d.get("cached_tokens"))).unwrap_or(0);
        let completion = usage.get("completion_tokens_details");
        Tokens {
            input: prompt.saturating_sub(cached),
            output: count(usage.get("completion_tokens")).unwrap_or(0),
            cache_read: cached.min(prompt),
            cache_write: 0,
            reasoning: count(completion.and_then(|d| d.get("reasoning_tokens"))),
        }
    }

    pub(super) fn prompt_tokens(&self) -> u64 {
        self.input
            .saturating_add(self.cache_read)
            .saturating_add(self.cache_write)
    }

    pub(super) fn openai_json(&self) -> Value {
        let prompt = self.prompt_tokens();
        let mut usage = json!({
            "prompt_tokens": prompt,
            "completion_tokens": self.output,
            "total_tokens": prompt.saturating_add(self.output),
            "prompt_tokens_details": {"cached_tokens": self.cache_read},
        });
        if let Some(reasoning) = self.reasoning {
            usage["completion_tokens_details"] = json!({"reasoning_tokens": reasoning});
        }
        usage
    }

    pub(super) fn anthropic_json(&self) -> Value {
        json!({
            "input_tokens": self.input,
            "cache_creation_input_tokens": self.cache_write,
            "cache_read_input_tokens": self.cache_read,
            "output_tokens": self.output,
        })
    }
}

/// Translates an Anthropic message into a Chat Completions response. `created` is the Unix
/// time in seconds to report (the crate reads no clock).
pub fn anthropic_to_openai_response(body: &[u8], created: u64) -> Result<Vec<u8>, TranslateError> {
    let root = parse_object(body)?;
    let id = field(&root, "", "id").str()?.unwrap_or("");
    let model = field(&root, "", "model").str()?.unwrap_or("");
    let mut text = String::new();
    let mut reasoning = String::new();
    let mut thinking_blocks = Vec::new();
    let mut tool_calls = Vec::new();
    for (at, block) in field(&root, "", "content").objects()? {
        match field(block, &at, "type").required_str()? {
            "text" => text.push_str(field(block, &at, "text").required_str()?),
            "tool_use" => {
                let id = field(block, &at, "id").required_str()?;
                let name = field(block, &at, "name").required_str()?;
                let input = field(block, &at, "input").value.cloned();
                let arguments = input.unwrap_or_else(|| json!({})).to_string();
                tool_calls.push(json!({
                    "id": id,
                    "type": "function",
                    "function": {"name": name, "arguments": arguments},
                }));
            }
            "thinking" => {
                let thinking = field(block, &at, "thinking").str()?.unwrap_or("");
                let signature = field(block, &at, "signature").str()?.unwrap_or("");
                reasoning.push_str(thinking);
                thinking_blocks.push(
                    json!({"type": "thinking", "thinking": thinking, "signature": signature}),
                );
            }
            "redacted_thinking" => {
                let data = field(block, &at, "data").str()?.unwrap_or("");
                thinking_blocks.push(json!({"type": "redacted_thinking", "data": data}));
            }
            // Server tools' blocks (web search and its results, code execution) have no
            // counterpart; what the model said about them is in its text.
            _ => {}
        }
    }
    let stop_reason = field(&root, "", "stop_reason").str()?;
    let mut message = json!({
        "role": "assistant",
        "content": if text.is_empty() && !tool_calls.is_empty() { Value::Null } else { json!(text) },
    });
    if !tool_calls.is_empty() {
        message["tool_calls"] = Value::Array(tool_calls);
    }
    if !thinking_blocks.is_empty() {
        message["reasoning_content"] = json!(reasoning);
        message["thinking_blocks"] = Value::Array(thinking_blocks);
    }
    let mut tokens = Tokens::default();
    if let Some(usage) = field(&root, "", "usage").object()? {
        tokens.update_from_anthropic(&Value::Object(usage.clone()));
    }
    let out = json!({
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{
            "index": 0,
            "message": message,
            "logprobs": null,
            "finish_reason": finish_reason_for(stop_reason.unwrap_or("end_turn")),
        }],
        "usage": tokens.openai_json(),
    });
    Ok(serde_json::to_vec(&out).unwrap_or_default())
}

/// Translates a Chat Completions response into an Anthropic message. Only the first choice is
/// kept (a translated request never asks for more).
pub fn openai_to_anthropic_response(body: &[u8]) -> Result<Vec<u8>, TranslateError> {
    let root = parse_object(body)?;
    let id = field(&root, "", "id").str()?.unwrap_or("");
    let model = field(&root, "", "model").str()?.unwrap_or("");
    let choices = field(&root, "", "choices").objects()?;
    let Some((at, choice)) = choices.first() else {
        return Err(TranslateError::malformed(
            "choices: must have at least one choice",
        ));
    };
    let message_at = format!("{at}.message");
    let message = field(choice, at, "message").object()?;
    let empty = Object::new();
    let message = message.unwrap_or(&empty);

    let mut content = Vec::new();
    // DeepSeek, vLLM and others return `reasoning_content`; OpenRouter and some others
    // `reasoning`. It has no signature, so it can be shown but not sent back to Anthropic.
    let reasoning = match field(message, &message_at, "reasoning_content").str()? {
        Some(text) => Some(text),
        None => field(message, &message_at, "reasoning")
            .str()
            .ok()
            .flatten(),
    };
    if let Some(reasoning) = reasoning.filter(|r| !r.is_empty()) {
        content.push(json!({"type": "thinking", "thinking": reasoning, "signature": ""}));
    }
    let text_field = field(message, &message_at, "content");
    match text_field.value {
        Some(Value::String(text)) if !text.is_empty() => {
            content.push(json!({"type": "text", "text": text}));
        }
        None | Some(Value::String(_)) => {}
        Some(Value::Array(_)) => {
            for (at, part) in text_field.objects()? {
                let text = match field(part, &at, "type").str()? {
                    Some("refusal") => field(part, &at, "refusal").str()?,
                    _ => field(part, &at, "text").str()?,
                };
                if let Some(text) = text.filter(|t| !t.is_empty()) {
                    content.push(json!({"type": "text", "text": text}));
                }
            }
        }
        Some(other) => {
            return Err(TranslateError::malformed(format!(
                "{}: must be a string or an array of content parts, not {}",
                text_field.path,
                type_name(other)
            )))
        }
    }
    let refusal = field(message, &message_at, "refusal").str()?;
    if let Some(refusal) = refusal.filter(|r| !r.is_empty()) {
        content.push(json!({"type": "text", "text": refusal}));
    }
    for (at, call) in field(message, &message_at, "tool_calls").objects()? {
        let id = field(call, &at, "id").str()?.unwrap_or("");
        let function_at = format!("{at}.function");
        let function = field(call, &at, "function").required_object()?;
        let name = field(function, &function_at, "name").required_str()?;
        let arguments = field(function, &function_at, "arguments")
            .str()?
            .unwrap_or("");
        content.push(json!({
            "type": "tool_use",
            "id": id,
            "name": name,
            "input": arguments_object(arguments),
        }));
    }

    let finish = field(choice, at, "finish_reason").str()?.unwrap_or("stop");
    let stop_reason = if refusal.is_some_and(|r| !r.is_empty()) {
        "refusal"
    } else {
        stop_reason_for(finish)
    };
    let tokens = match field(&root, "", "usage").object()? {
        Some(usage) => Tokens::from_openai(&Value::Object(usage.clone())),
        None => Tokens::default(),
    };
    let out = json!({
        "id": id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": null,
        "usage": tokens.anthropic_json(),
    });
    Ok(serde_json::to_vec(&out).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

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
