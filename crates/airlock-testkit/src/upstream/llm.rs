//! Imitations of the OpenAI Chat Completions and Anthropic Messages APIs, close enough to the
//! real wire format that the official SDKs parse every answer: whole responses, SSE streams
//! (chunks 50 ms apart), tool calls, and a rate-limit error for the model `error-model`.
//!
//! The assistant's text echoes the last user message, so a test can see its prompt made the
//! round trip. Error responses carry `x-should-retry: false`, which the SDKs honour, so a test of
//! the error path does not wait through the SDK's retries.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::Method;
use serde_json::{json, Value};

use super::{RecordedRequest, Reply, Responder};

/// The pause between two streamed events.
const STREAM_GAP: Duration = Duration::from_millis(50);

/// The model name that gets a 429 rate-limit error.
pub const ERROR_MODEL: &str = "error-model";

/// The arguments every imitated tool call carries.
const TOOL_INPUT: &str = r#"{"input":"test"}"#;

/// Answers `POST …/chat/completions` like OpenAI (and `GET …/models`); 404 for anything else.
pub fn openai_chat() -> Responder {
    Arc::new(openai_reply)
}

/// Answers `POST …/messages` like Anthropic (and `POST …/messages/count_tokens`); 404 for
/// anything else.
pub fn anthropic_messages() -> Responder {
    Arc::new(anthropic_reply)
}

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

/// The text of the last user message: a string, or the text parts of a list of content blocks.
fn last_user_text(messages: &Value) -> String {
    let Some(message) = messages
        .as_array()
        .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
    else {
        return String::new();
    };
    match &message["content"] {
        Value::String(text) => text.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

fn reply_text(body: &Value) -> String {
    format!(
        "Hello from the recording upstream. You said: {}",
        last_user_text(&body["messages"])
    )
}

fn count_tokens(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

/// Splits `text` into at most `max` pieces at word boundaries; concatenated they give `text`.
fn pieces(text: &str, max: usize) -> Vec<String> {
    let words: Vec<&str> = text.split_inclusive(' ').collect();
    if words.is_empty() {
        return vec![String::new()];
    }
    let per_piece = words.len().div_ceil(max.max(1));
    words.chunks(per_piece).map(|c| c.concat()).collect()
}

/// Events 50 ms apart, the first at once.
fn spaced(events: Vec<String>) -> Vec<(Duration, String)> {
    events
        .into_iter()
        .enumerate()
        .map(|(i, e)| (if i == 0 { Duration::ZERO } else { STREAM_GAP }, e))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// OpenAI

fn openai_error(status: u16, kind: &str, code: &str, message: &str) -> Reply {
    Reply::json(
        status,
        &json!({"error": {"message": message, "type": kind, "param": null, "code": code}}),
    )
    .with_header("x-should-retry", "false")
}

fn openai_reply(req: &RecordedRequest) -> Reply {
    let path = req.path();
    if req.method == Method::GET && path.ends_with("/models") {
        return Reply::json(
            200,
            &json!({"object": "list", "data": [
                {"id": "gpt-test", "object": "model", "created": 1_700_000_000, "owned_by": "airlock-testkit"}
            ]}),
        );
    }
    if req.method != Method::POST || !path.ends_with("/chat/completions") {
        return openai_error(
            404,
            "invalid_request_error",
            "unknown_url",
            &format!("Unknown request URL: {} {path}", req.method),
        );
    }
    let Some(body) = req.body_json() else {
        return openai_error(
            400,
            "invalid_request_error",
            "invalid_json",
            "We could not parse the JSON body of your request.",
        );
    };
    let model = body["model"].as_str().unwrap_or("gpt-test").to_owned();
    if model == ERROR_MODEL {
        return openai_error(
            429,
            "requests",
            "rate_limit_exceeded",
            "Rate limit reached for error-model: the recording upstream always refuses it.",
        );
    }
    let id = format!("chatcmpl-airlock{}", next_id());
    let created = unix_now();
    let tool = body["tools"][0]["function"]["name"]
        .as_str()
        .map(str::to_owned);
    let text = reply_text(&body);
    let prompt_tokens = count_tokens(&last_user_text(&body["messages"])) + 8;
    let completion_tokens = match &tool {
        Some(_) => 8,
        None => count_tokens(&text),
    };
    let usage = json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    });

    if body["stream"] != Value::Bool(true) {
        let (message, finish_reason) = match &tool {
            Some(name) => (
                json!({"role": "assistant", "content": null, "refusal": null, "tool_calls": [{
                    "id": format!("call_airlock{}", next_id()),
                    "type": "function",
                    "function": {"name": name, "arguments": TOOL_INPUT},
                }]}),
                "tool_calls",
            ),
            None => (
                json!({"role": "assistant", "content": text, "refusal": null}),
                "stop",
            ),
        };
        return Reply::json(
            200,
            &json!({
                "id": id,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "system_fingerprint": "fp_airlock",
                "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish_reason}],
                "usage": usage,
            }),
        )
        .with_header("x-request-id", &format!("req_airlock{}", next_id()));
    }

    let include_usage = body["stream_options"]["include_usage"] == Value::Bool(true);
    let chunk = |delta: Value, finish_reason: Value| {
        let mut chunk = json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": "fp_airlock",
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason}],
        });
        if include_usage {
            chunk["usage"] = Value::Null;
        }
        format!("data: {chunk}\n\n")
    };
    let mut events = Vec::new();
    match &tool {
        Some(name) => {
            events.push(chunk(
                json!({"role": "assistant", "content": null, "tool_calls": [{
                    "index": 0,
                    "id": format!("call_airlock{}", next_id()),
                    "type": "function",
                    "function": {"name": name, "arguments": ""},
                }]}),
                Value::Null,
            ));
            let (first, second) = TOOL_INPUT.split_at(TOOL_INPUT.len() / 2);
            for part in [first, second] {
                events.push(chunk(
                    json!({"tool_calls": [{"index": 0, "function": {"arguments": part}}]}),
                    Value::Null,
                ));
            }
            events.push(chunk(json!({}), json!("tool_calls")));
        }
        None => {
            events.push(chunk(
                json!({"role": "assistant", "content": "", "refusal": null}),
                Value::Null,
            ));
            for piece in pieces(&text, 6) {
                events.push(chunk(json!({"content": piece}), Value::Null));
            }
            events.push(chunk(json!({}), json!("stop")));
        }
    }
    if include_usage {
        let last = json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": "fp_airlock",
            "choices": [],
            "usage": usage,
        });
        events.push(format!("data: {last}\n\n"));
    }
    events.push("data: [DONE]\n\n".to_owned());
    Reply::sse(spaced(events))
}

// ---------------------------------------------------------------------------------------------
// Anthropic

fn anthropic_error(status: u16, kind: &str, message: &str) -> Reply {
    Reply::json(
        status,
        &json!({"type": "error", "error": {"type": kind, "message": message}}),
    )
    .with_header("x-should-retry", "false")
}

fn sse_event(data: &Value) -> String {
    let kind = data["type"].as_str().unwrap_or("message");
    format!("event: {kind}\ndata: {data}\n\n")
}

fn anthropic_reply(req: &RecordedRequest) -> Reply {
    let path = req.path();
    let counting = path.ends_with("/messages/count_tokens");
    if req.method != Method::POST || !(path.ends_with("/messages") || counting) {
        return anthropic_error(404, "not_found_error", &format!("Not found: {path}"));
    }
    let Some(body) = req.body_json() else {
        return anthropic_error(
            400,
            "invalid_request_error",
            "The request body is not valid JSON.",
        );
    };
    let model = body["model"].as_str().unwrap_or("claude-test").to_owned();
    if model == ERROR_MODEL {
        return anthropic_error(
            429,
            "rate_limit_error",
            "Rate limit reached for error-model: the recording upstream always refuses it.",
        );
    }
    let input_tokens = count_tokens(&last_user_text(&body["messages"])) + 8;
    if counting {
        return Reply::json(200, &json!({"input_tokens": input_tokens}));
    }
    if !body["max_tokens"].is_u64() {
        return anthropic_error(400, "invalid_request_error", "max_tokens: Field required");
    }
    let id = format!("msg_airlock{}", next_id());
    let tool = body["tools"][0]["name"].as_str().map(str::to_owned);
    let text = reply_text(&body);
    let (stop_reason, output_tokens) = match &tool {
        Some(_) => ("tool_use", 8),
        None => ("end_turn", count_tokens(&text)),
    };
    let tool_id = format!("toolu_airlock{}", next_id());

    if body["stream"] != Value::Bool(true) {
        let content = match &tool {
            Some(name) => json!([{
                "type": "tool_use",
                "id": tool_id,
                "name": name,
                "input": serde_json::from_str::<Value>(TOOL_INPUT).unwrap_or_default(),
            }]),
            None => json!([{"type": "text", "text": text}]),
        };
        return Reply::json(
            200,
            &json!({
                "id": id,
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": content,
                "stop_reason": stop_reason,
                "stop_sequence": null,
                "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
            }),
        )
        .with_header("request-id", &format!("req_airlock{}", next_id()));
    }

    let mut events = vec![sse_event(&json!({
        "type": "message_start",
        "message": {
            "id": id,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": null,
            "stop_sequence": null,
            "usage": {"input_tokens": input_tokens, "output_tokens": 1},
        },
    }))];
    match &tool {
        Some(name) => {
            events.push(sse_event(&json!({
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "tool_use", "id": tool_id, "name": name, "input": {}},
            })));
            let (first, second) = TOOL_INPUT.split_at(TOOL_INPUT.len() / 2);
            for part in [first, second] {
                events.push(sse_event(&json!({
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "input_json_delta", "partial_json": part},
                })));
            }
        }
        None => {
            events.push(sse_event(&json!({
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            })));
            for piece in pieces(&text, 6) {
                events.push(sse_event(&json!({
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": piece},
                })));
            }
        }
    }
    events.push(sse_event(
        &json!({"type": "content_block_stop", "index": 0}),
    ));
    events.push(sse_event(&json!({
        "type": "message_delta",
        "delta": {"stop_reason": stop_reason, "stop_sequence": null},
        "usage": {"output_tokens": output_tokens},
    })));
    events.push(sse_event(&json!({"type": "message_stop"})));
    Reply::sse(spaced(events))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_concatenate_to_the_text() {
        for (text, max) in [("a b c d e f g h", 3), ("one", 6), ("", 6), ("a b", 6)] {
            let p = pieces(text, max);
            assert!(p.len() <= max.max(1), "{text:?} gave {p:?}");
            assert_eq!(p.concat(), text);
        }
    }

    #[test]
    fn last_user_text_reads_strings_and_blocks() {
        let messages = json!([
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "reply"},
            {"role": "user", "content": [{"type": "text", "text": "second"}, {"type": "text", "text": "part"}]},
        ]);
        assert_eq!(last_user_text(&messages), "second part");
        assert_eq!(last_user_text(&json!([])), "");
    }
}
