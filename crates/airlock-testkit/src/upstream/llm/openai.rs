//! OpenAI: Chat Completions (`CompletionUsage` with `prompt_tokens_details` and
//! `completion_tokens_details`) and Responses (`ResponseUsage`, the `response.*` event stream),
//! shaped as `openai-python`'s types read them.

use std::sync::Arc;

use http::Method;
use serde_json::{json, Value};

use super::{
    joined, last_with_role, named_event, next_id, pieces, prompt_words, texts, tool_input_halves,
    unix_now, CacheWrites, Tokens, Turn, ERROR_MODEL, REASONING_SUMMARY, TOOL_INPUT,
};
use crate::upstream::{RecordedRequest, Reply, Responder};

/// Answers `POST …/chat/completions` and `POST …/responses` like OpenAI (and `GET …/models`);
/// 404 for anything else. See the [module docs](super) for what it says and counts.
pub fn openai_chat() -> Responder {
    Arc::new(reply)
}

fn error(status: u16, kind: &str, code: &str, message: &str) -> Reply {
    Reply::json(
        status,
        &json!({"error": {"message": message, "type": kind, "param": null, "code": code}}),
    )
    .with_header("x-should-retry", "false")
}

fn reply(req: &RecordedRequest) -> Reply {
    let path = req.path();
    if req.method == Method::GET && path.ends_with("/models") {
        return Reply::json(
            200,
            &json!({"object": "list", "data": [
                {"id": "gpt-test", "object": "model", "created": 1_700_000_000, "owned_by": "airlock-testkit"}
            ]}),
        );
    }
    let chat = path.ends_with("/chat/completions");
    if req.method != Method::POST || !(chat || path.ends_with("/responses")) {
        return error(
            404,
            "invalid_request_error",
            "unknown_url",
            &format!("Unknown request URL: {} {path}", req.method),
        );
    }
    let Some(body) = req.body_json() else {
        return error(
            400,
            "invalid_request_error",
            "invalid_json",
            "We could not parse the JSON body of your request.",
        );
    };
    let model = body["model"].as_str().unwrap_or("gpt-test");
    if model == ERROR_MODEL {
        return error(
            429,
            "requests",
            "rate_limit_exceeded",
            "Rate limit reached for error-model: the recording upstream always refuses it.",
        );
    }
    let reply = if chat {
        chat_completion(&body, model)
    } else {
        response(&body, model)
    };
    reply.with_header("x-request-id", &format!("req_airlock{}", next_id()))
}

// ---------------------------------------------------------------------------------------------
// Chat Completions

/// `usage` of a completion: `prompt_tokens` and `completion_tokens` include the cached input and
/// the reasoning, broken down in the details.
fn chat_usage(t: &Tokens) -> Value {
    let mut prompt_details = json!({"cached_tokens": t.cache_read, "audio_tokens": 0});
    if t.cache_write > 0 {
        prompt_details["cache_write_tokens"] = json!(t.cache_write);
    }
    json!({
        "prompt_tokens": t.input,
        "completion_tokens": t.output,
        "total_tokens": t.input + t.output,
        "prompt_tokens_details": prompt_details,
        "completion_tokens_details": {
            "reasoning_tokens": t.reasoning,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    })
}

fn chat_completion(body: &Value, model: &str) -> Reply {
    let messages = &body["messages"];
    let last_user = last_with_role(messages, "user")
        .map(|m| joined(&m["content"]))
        .unwrap_or_default();
    let turn = Turn::new(
        model,
        prompt_words(
            &Value::Null,
            messages.as_array().into_iter().flatten(),
            "content",
        ),
        &last_user,
        body["tools"][0]["function"]["name"]
            .as_str()
            .map(str::to_owned),
        false,
        CacheWrites::Reported,
    );
    let id = format!("chatcmpl-airlock{}", next_id());
    let created = unix_now();

    if body["stream"] != Value::Bool(true) {
        let (message, finish_reason) = match &turn.tool {
            Some(name) => (
                json!({"role": "assistant", "content": null, "refusal": null, "annotations": [],
                "tool_calls": [{
                    "id": format!("call_airlock{}", next_id()),
                    "type": "function",
                    "function": {"name": name, "arguments": TOOL_INPUT},
                }]}),
                "tool_calls",
            ),
            None => (
                json!({"role": "assistant", "content": turn.text, "refusal": null, "annotations": []}),
                "stop",
            ),
        };
        return Reply::json(
            200,
            &json!({
                "id": id,
                "object": "chat.completion",
                "created": created,
                "model": turn.model,
                "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish_reason}],
                "usage": chat_usage(&turn.tokens),
                "service_tier": "default",
                "system_fingerprint": "fp_airlock",
            }),
        );
    }

    // Like OpenAI: with `include_usage`, every chunk carries `usage: null` and a last chunk
    // with no choices carries the usage; without it, there is no usage anywhere.
    let include_usage = body["stream_options"]["include_usage"] == Value::Bool(true);
    let chunk = |choices: Value, usage: Option<Value>| {
        let mut chunk = json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": turn.model,
            "service_tier": "default",
            "system_fingerprint": "fp_airlock",
            "choices": choices,
        });
        if include_usage {
            chunk["usage"] = usage.unwrap_or(Value::Null);
        }
        format!("data: {chunk}\n\n")
    };
    let choice = |delta: Value, finish_reason: Value| {
        chunk(
            json!([{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason}]),
            None,
        )
    };
    let mut events = Vec::new();
    match &turn.tool {
        Some(name) => {
            events.push(choice(
                json!({"role": "assistant", "content": null, "tool_calls": [{
                    "index": 0,
                    "id": format!("call_airlock{}", next_id()),
                    "type": "function",
                    "function": {"name": name, "arguments": ""},
                }]}),
                Value::Null,
            ));
            for part in tool_input_halves() {
                events.push(choice(
                    json!({"tool_calls": [{"index": 0, "function": {"arguments": part}}]}),
                    Value::Null,
                ));
            }
            events.push(choice(json!({}), json!("tool_calls")));
        }
        None => {
            events.push(choice(
                json!({"role": "assistant", "content": "", "refusal": null}),
                Value::Null,
            ));
            for piece in pieces(&turn.text, 6) {
                events.push(choice(json!({"content": piece}), Value::Null));
            }
            events.push(choice(json!({}), json!("stop")));
        }
    }
    if include_usage {
        events.push(chunk(json!([]), Some(chat_usage(&turn.tokens))));
    }
    events.push("data: [DONE]\n\n".to_owned());
    Reply::sse(turn.spaced(events))
}

// ---------------------------------------------------------------------------------------------
// Responses

/// `usage` of a response: `input_tokens` and `output_tokens` include the cached input and the
/// reasoning, broken down in the details.
fn responses_usage(t: &Tokens) -> Value {
    json!({
        "input_tokens": t.input,
        "input_tokens_details": {"cached_tokens": t.cache_read, "cache_write_tokens": t.cache_write},
        "output_tokens": t.output,
        "output_tokens_details": {"reasoning_tokens": t.reasoning},
        "total_tokens": t.input + t.output,
    })
}

/// The input items of a Responses request: `input` as a string is one user message.
fn input_items(body: &Value) -> Vec<Value> {
    match &body["input"] {
        Value::String(text) => vec![json!({"role": "user", "content": text})],
        Value::Array(items) => items.clone(),
        _ => Vec::new(),
    }
}

fn response(body: &Value, model: &str) -> Reply {
    let items = input_items(body);
    let last_user = items
        .iter()
        .rev()
        .find(|i| i["role"] == "user")
        .map(|m| joined(&m["content"]))
        .unwrap_or_default();
    // Function tools are `{"type": "function", "name", "parameters"}` here, not nested.
    let tool = body["tools"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|t| t["type"] == "function")
        .and_then(|t| t["name"].as_str())
        .map(str::to_owned);
    let instruction_words: u64 = texts(&body["instructions"])
        .into_iter()
        .map(super::count_words)
        .sum();
    let turn = Turn::new(
        model,
        instruction_words + prompt_words(&Value::Null, &items, "content"),
        &last_user,
        tool,
        false,
        CacheWrites::Reported,
    );
    let id = format!("resp_airlock{}", next_id());
    let created = unix_now();
    let summary_asked = !body["reasoning"]["summary"].is_null();
    let reasoning_id = format!("rs_airlock{}", next_id());
    let item_id = format!(
        "{}_airlock{}",
        if turn.tool.is_some() { "fc" } else { "msg" },
        next_id()
    );
    let call_id = format!("call_airlock{}", next_id());

    let reasoning_item = |summary: bool| {
        let summary = if summary {
            json!([{"type": "summary_text", "text": REASONING_SUMMARY}])
        } else {
            json!([])
        };
        json!({"id": reasoning_id, "type": "reasoning", "summary": summary})
    };
    let answer_item = |done: bool| {
        let status = if done { "completed" } else { "in_progress" };
        match &turn.tool {
            Some(name) => json!({
                "id": item_id, "type": "function_call", "status": status, "name": name,
                "call_id": call_id, "arguments": if done { TOOL_INPUT } else { "" },
            }),
            None => json!({
                "id": item_id, "type": "message", "status": status, "role": "assistant",
                "content": if done {
                    json!([{"type": "output_text", "text": turn.text, "annotations": [], "logprobs": []}])
                } else {
                    json!([])
                },
            }),
        }
    };
    let mut output = Vec::new();
    if turn.reasoning {
        output.push(reasoning_item(summary_asked));
    }
    output.push(answer_item(true));
    let whole = |status: &str, output: Vec<Value>, usage: Value| {
        json!({
            "id": id,
            "object": "response",
            "created_at": created,
            "status": status,
            "background": false,
            "error": null,
            "incomplete_details": null,
            "instructions": body["instructions"],
            "max_output_tokens": body["max_output_tokens"],
            "model": turn.model,
            "output": output,
            "parallel_tool_calls": true,
            "previous_response_id": null,
            "reasoning": {"effort": if turn.reasoning { json!("medium") } else { Value::Null },
                "summary": body["reasoning"]["summary"]},
            "service_tier": "default",
            "store": true,
            "temperature": 1.0,
            "text": {"format": {"type": "text"}, "verbosity": "medium"},
            "tool_choice": "auto",
            "tools": body["tools"].as_array().cloned().unwrap_or_default(),
            "top_p": 1.0,
            "truncation": "disabled",
            "usage": usage,
            "user": null,
            "metadata": {},
        })
    };

    if body["stream"] != Value::Bool(true) {
        return Reply::json(
            200,
            &whole("completed", output, responses_usage(&turn.tokens)),
        );
    }

    let mut stream = ResponseEvents::default();
    let started = whole("in_progress", vec![], Value::Null);
    stream.push("response.created", json!({"response": started}));
    stream.push("response.in_progress", json!({"response": started}));
    let mut index = 0;
    if turn.reasoning {
        let at = |fields: Value| with_item(&reasoning_id, index, fields);
        stream.push(
            "response.output_item.added",
            json!({"output_index": index, "item": reasoning_item(false)}),
        );
        if summary_asked {
            let part = |text: &str| json!({"type": "summary_text", "text": text});
            for (kind, fields) in [
                ("part.added", json!({"part": part("")})),
                ("text.delta", json!({"delta": REASONING_SUMMARY})),
                ("text.done", json!({"text": REASONING_SUMMARY})),
                ("part.done", json!({"part": part(REASONING_SUMMARY)})),
            ] {
                let mut fields = at(fields);
                fields["summary_index"] = json!(0);
                stream.push(&format!("response.reasoning_summary_{kind}"), fields);
            }
        }
        stream.push(
            "response.output_item.done",
            json!({"output_index": index, "item": reasoning_item(summary_asked)}),
        );
        index += 1;
    }
    let at = |fields: Value| with_item(&item_id, index, fields);
    stream.push(
        "response.output_item.added",
        json!({"output_index": index, "item": answer_item(false)}),
    );
    match &turn.tool {
        Some(_) => {
            for part in tool_input_halves() {
                stream.push(
                    "response.function_call_arguments.delta",
                    at(json!({"delta": part})),
                );
            }
            stream.push(
                "response.function_call_arguments.done",
                at(json!({"arguments": TOOL_INPUT})),
            );
        }
        None => {
            let part = |text: &str| json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []});
            let text = |fields: Value| {
                let mut fields = at(fields);
                fields["content_index"] = json!(0);
                fields
            };
            stream.push(
                "response.content_part.added",
                text(json!({"part": part("")})),
            );
            for piece in pieces(&turn.text, 6) {
                stream.push(
                    "response.output_text.delta",
                    text(json!({"delta": piece, "logprobs": []})),
                );
            }
            stream.push(
                "response.output_text.done",
                text(json!({"text": turn.text, "logprobs": []})),
            );
            stream.push(
                "response.content_part.done",
                text(json!({"part": part(&turn.text)})),
            );
        }
    }
    stream.push(
        "response.output_item.done",
        json!({"output_index": index, "item": answer_item(true)}),
    );
    let usage = responses_usage(&turn.tokens);
    stream.push(
        "response.completed",
        json!({"response": whole("completed", output, usage)}),
    );
    Reply::sse(turn.spaced(stream.events))
}

/// A Responses event stream: each event named after its `type`, numbered in order.
#[derive(Default)]
struct ResponseEvents {
    events: Vec<String>,
}

impl ResponseEvents {
    fn push(&mut self, kind: &str, mut fields: Value) {
        fields["type"] = json!(kind);
        fields["sequence_number"] = json!(self.events.len());
        self.events.push(named_event(&fields));
    }
}

/// `fields` of an event about the output item `item_id` at `index`.
fn with_item(item_id: &str, index: usize, mut fields: Value) -> Value {
    fields["item_id"] = json!(item_id);
    fields["output_index"] = json!(index);
    fields
}
