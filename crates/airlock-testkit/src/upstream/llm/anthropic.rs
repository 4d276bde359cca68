//! Anthropic Messages: `usage` with `input_tokens` that leave out the cache, beside
//! `cache_read_input_tokens` and `cache_creation_input_tokens`; thinking blocks with their
//! signature and `output_tokens_details.thinking_tokens`; streams whose `message_start` carries
//! a placeholder output count and whose `message_delta` carries the cumulative usage, shaped as
//! `anthropic-sdk-python`'s types read them.

use std::sync::Arc;

use http::Method;
use serde_json::{json, Value};

use super::{
    joined, last_with_role, named_event, next_id, pieces, prompt_words, tool_input_halves,
    CacheWrites, Tokens, Turn, ERROR_MODEL, PROMPT_OVERHEAD, REASONING_SUMMARY, TOOL_INPUT,
};
use crate::upstream::{RecordedRequest, Reply, Responder};

/// Answers `POST …/messages` like Anthropic (and `POST …/messages/count_tokens`); 404 for
/// anything else. See the [module docs](super) for what it says and counts.
pub fn anthropic_messages() -> Responder {
    Arc::new(reply)
}

/// An opaque signature, as every thinking block carries one.
const SIGNATURE: &str = "RXJ0QWlybG9ja1Rlc3RraXRUaGlua2luZ1NpZ25hdHVyZQ==";

fn error(status: u16, kind: &str, message: &str) -> Reply {
    Reply::json(
        status,
        &json!({"type": "error", "error": {"type": kind, "message": message}}),
    )
    .with_header("x-should-retry", "false")
}

/// `usage` as Anthropic reports it: `input_tokens` without the cache; `placeholder` for the
/// early copy in `message_start`, whose output count is not known yet.
fn usage(t: &Tokens, placeholder: bool) -> Value {
    let mut usage = json!({
        "input_tokens": t.uncached_input(),
        "cache_creation_input_tokens": t.cache_write,
        "cache_read_input_tokens": t.cache_read,
        "cache_creation": {"ephemeral_5m_input_tokens": t.cache_write, "ephemeral_1h_input_tokens": 0},
        "output_tokens": if placeholder { 1 } else { t.output },
        "service_tier": "standard",
    });
    if t.reasoning > 0 && !placeholder {
        usage["output_tokens_details"] = json!({"thinking_tokens": t.reasoning});
    }
    usage
}

fn reply(req: &RecordedRequest) -> Reply {
    let path = req.path();
    let counting = path.ends_with("/messages/count_tokens");
    if req.method != Method::POST || !(path.ends_with("/messages") || counting) {
        return error(404, "not_found_error", &format!("Not found: {path}"));
    }
    let Some(body) = req.body_json() else {
        return error(
            400,
            "invalid_request_error",
            "The request body is not valid JSON.",
        );
    };
    let model = body["model"].as_str().unwrap_or("claude-test");
    if model == ERROR_MODEL {
        return error(
            429,
            "rate_limit_error",
            "Rate limit reached for error-model: the recording upstream always refuses it.",
        );
    }
    let messages = &body["messages"];
    let words = prompt_words(
        &body["system"],
        messages.as_array().into_iter().flatten(),
        "content",
    );
    if counting {
        return Reply::json(200, &json!({"input_tokens": PROMPT_OVERHEAD + words}));
    }
    if !body["max_tokens"].is_u64() {
        return error(400, "invalid_request_error", "max_tokens: Field required");
    }
    let thinking = matches!(
        body["thinking"]["type"].as_str(),
        Some("enabled" | "adaptive")
    );
    let turn = Turn::new(
        model,
        words,
        &last_with_role(messages, "user")
            .map(|m| joined(&m["content"]))
            .unwrap_or_default(),
        body["tools"][0]["name"].as_str().map(str::to_owned),
        thinking,
        CacheWrites::Reported,
    );
    let id = format!("msg_airlock{}", next_id());
    let stop_reason = match &turn.tool {
        Some(_) => "tool_use",
        None => "end_turn",
    };
    let tool_id = format!("toolu_airlock{}", next_id());

    if body["stream"] != Value::Bool(true) {
        let mut content = Vec::new();
        if turn.reasoning {
            content.push(
                json!({"type": "thinking", "thinking": REASONING_SUMMARY, "signature": SIGNATURE}),
            );
        }
        content.push(match &turn.tool {
            Some(name) => json!({
                "type": "tool_use",
                "id": tool_id,
                "name": name,
                "input": serde_json::from_str::<Value>(TOOL_INPUT).unwrap_or_default(),
            }),
            None => json!({"type": "text", "text": turn.text}),
        });
        return Reply::json(
            200,
            &json!({
                "id": id,
                "type": "message",
                "role": "assistant",
                "model": turn.model,
                "content": content,
                "stop_reason": stop_reason,
                "stop_sequence": null,
                "usage": usage(&turn.tokens, false),
            }),
        )
        .with_header("request-id", &format!("req_airlock{}", next_id()));
    }

    let mut events = vec![
        named_event(&json!({
            "type": "message_start",
            "message": {
                "id": id,
                "type": "message",
                "role": "assistant",
                "model": turn.model,
                "content": [],
                "stop_reason": null,
                "stop_sequence": null,
                "usage": usage(&turn.tokens, true),
            },
        })),
        named_event(&json!({"type": "ping"})),
    ];
    let mut index = 0;
    if turn.reasoning {
        events.push(named_event(&json!({
            "type": "content_block_start",
            "index": index,
            "content_block": {"type": "thinking", "thinking": "", "signature": ""},
        })));
        events.push(named_event(&json!({
            "type": "content_block_delta",
            "index": index,
            "delta": {"type": "thinking_delta", "thinking": REASONING_SUMMARY},
        })));
        events.push(named_event(&json!({
            "type": "content_block_delta",
            "index": index,
            "delta": {"type": "signature_delta", "signature": SIGNATURE},
        })));
        events.push(named_event(
            &json!({"type": "content_block_stop", "index": index}),
        ));
        index += 1;
    }
    match &turn.tool {
        Some(name) => {
            events.push(named_event(&json!({
                "type": "content_block_start",
                "index": index,
                "content_block": {"type": "tool_use", "id": tool_id, "name": name, "input": {}},
            })));
            for part in tool_input_halves() {
                events.push(named_event(&json!({
                    "type": "content_block_delta",
                    "index": index,
                    "delta": {"type": "input_json_delta", "partial_json": part},
                })));
            }
        }
        None => {
            events.push(named_event(&json!({
                "type": "content_block_start",
                "index": index,
                "content_block": {"type": "text", "text": ""},
            })));
            for piece in pieces(&turn.text, 6) {
                events.push(named_event(&json!({
                    "type": "content_block_delta",
                    "index": index,
                    "delta": {"type": "text_delta", "text": piece},
                })));
            }
        }
    }
    events.push(named_event(
        &json!({"type": "content_block_stop", "index": index}),
    ));
    // The final counts, cumulative: input and cache counts repeated, output complete.
    let mut last = usage(&turn.tokens, false);
    if let Value::Object(fields) = &mut last {
        fields.remove("cache_creation");
        fields.remove("service_tier");
    }
    events.push(named_event(&json!({
        "type": "message_delta",
        "delta": {"stop_reason": stop_reason, "stop_sequence": null},
        "usage": last,
    })));
    events.push(named_event(&json!({"type": "message_stop"})));
    Reply::sse(turn.spaced(events))
}
