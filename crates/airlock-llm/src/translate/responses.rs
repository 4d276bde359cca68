//! OpenAI's Responses API on the client side of a router, not streamed: a `POST /v1/responses`
//! body becomes a Chat Completions request (which the router serves like any other, translated
//! on to the backend's dialect), and the Chat Completions answer becomes a `response` object.
//!
//! # Requests (Responses → Chat Completions)
//!
//! | Responses | Chat Completions | notes |
//! |---|---|---|
//! | `instructions` | a first `system` message | |
//! | `input` (a string) | one `user` message | |
//! | `input[]` messages `{role, content}` (`type: message` or none) | messages of that role | `input_text` / `output_text` → `text` parts, `input_image` (`image_url`) → `image_url` parts |
//! | `input[]` `function_call{call_id, name, arguments}` | an `assistant` message's `tool_calls` | consecutive calls join one message |
//! | `input[]` `function_call_output{call_id, output}` | a `tool` message | |
//! | `input[]` `reasoning` items | dropped | |
//! | `tools[]{type: function, name, description, parameters}` | `tools[]{type: function, function{…}}` | `strict` dropped |
//! | `tool_choice` `auto` / `none` / `required` / `{type: function, name}` | the same / `{type: function, function{name}}` | |
//! | `max_output_tokens` | `max_completion_tokens` | |
//! | `temperature`, `top_p`, `parallel_tool_calls`, `user`, `safety_identifier` | the same | |
//! | `reasoning.effort` | `reasoning_effort` | |
//! | `text.format` `json_object` / `json_schema{name, schema, strict}` | `response_format` | |
//! | `stream: true`, `previous_response_id`, `conversation`, `background`, built-in tools (`web_search`, `file_search`, …), `input_file`, `input_audio` | refused (`Unsupported`) | a router keeps no conversation state |
//! | `store`, `metadata`, `include`, `truncation`, `prompt_cache_key`, `service_tier` | dropped | |
//!
//! # Answers (Chat Completions → Responses)
//!
//! `{id: resp_…, object: response, created_at, status, model, output, usage}`: the reasoning
//! (`reasoning_content`) as a `reasoning` item with a summary, the text as a `message` item with
//! one `output_text` part, each tool call as a `function_call` item (`call_id` = the tool call's
//! id). `finish_reason: length` → `status: incomplete` with `incomplete_details.reason:
//! max_output_tokens`, `content_filter` → `incomplete` with `content_filter`; usage as
//! `input_tokens` (`input_tokens_details.cached_tokens`), `output_tokens`
//! (`output_tokens_details.reasoning_tokens`), `total_tokens`.

use serde_json::{json, Value};

use super::json::{field, parse_object, shown, type_name, Object};
use super::TranslateError;

/// Translates a Responses request into a Chat Completions request for the same `model`.
pub fn responses_to_openai_request(body: &[u8]) -> Result<Vec<u8>, TranslateError> {
    let root = parse_object(body)?;
    if field(&root, "", "stream").bool()? == Some(true) {
        return Err(TranslateError::unsupported(
            "stream: streamed Responses are not supported by a router yet",
        ));
    }
    for key in [
        "previous_response_id",
        "conversation",
        "background",
        "prompt",
    ] {
        if field(&root, "", key)
            .value
            .is_some_and(|v| v != &Value::Bool(false))
        {
            return Err(TranslateError::unsupported(format!(
                "{key}: a router keeps no conversation state"
            )));
        }
    }
    let model = field(&root, "", "model").required_str()?;
    let mut messages: Vec<Value> = Vec::new();
    if let Some(instructions) = field(&root, "", "instructions").str()? {
        messages.push(json!({"role": "system", "content": instructions}));
    }
    let input = field(&root, "", "input");
    match input.value {
        None => return Err(TranslateError::malformed("input: is required")),
        Some(Value::String(text)) => messages.push(json!({"role": "user", "content": text})),
        Some(Value::Array(_)) => {
            for (at, item) in input.objects()? {
                input_item(item, &at, &mut messages)?;
            }
        }
        Some(other) => {
            return Err(TranslateError::malformed(format!(
                "input: must be a string or an array, not {}",
                type_name(other)
            )))
        }
    }
    let mut out = serde_json::Map::new();
    out.insert("model".into(), json!(model));
    out.insert("messages".into(), Value::Array(messages));
    let mut tools = Vec::new();
    for (at, tool) in field(&root, "", "tools").objects()? {
        let kind = field(tool, &at, "type").required_str()?;
        if kind != "function" {
            return Err(TranslateError::unsupported(format!(
                "{at}.type: {} tools are not supported by a router",
                shown(kind)
            )));
        }
        let mut function = serde_json::Map::new();
        function.insert(
            "name".into(),
            json!(field(tool, &at, "name").required_str()?),
        );
        if let Some(d) = field(tool, &at, "description").str()? {
            function.insert("description".into(), json!(d));
        }
        if let Some(p) = field(tool, &at, "parameters").object()? {
            function.insert("parameters".into(), Value::Object(p.clone()));
        }
        tools.push(json!({"type": "function", "function": function}));
    }
    if !tools.is_empty() {
        out.insert("tools".into(), Value::Array(tools));
    }
    match field(&root, "", "tool_choice").value {
        None => {}
        Some(Value::String(mode)) => {
            out.insert("tool_choice".into(), json!(mode));
        }
        Some(Value::Object(choice)) => {
            let name = field(choice, "tool_choice", "name").required_str()?;
            out.insert(
                "tool_choice".into(),
                json!({"type": "function", "function": {"name": name}}),
            );
        }
        Some(other) => {
            return Err(TranslateError::malformed(format!(
                "tool_choice: must be a string or an object, not {}",
                type_name(other)
            )))
        }
    }
    if let Some(n) = field(&root, "", "max_output_tokens").u64()? {
        out.insert("max_completion_tokens".into(), json!(n));
    }
    for key in [
        "temperature",
        "top_p",
        "parallel_tool_calls",
        "user",
        "safety_identifier",
    ] {
        if let Some(v) = field(&root, "", key).value {
            out.insert(key.into(), v.clone());
        }
    }
    if let Some(reasoning) = field(&root, "", "reasoning").object()? {
        if let Some(effort) = field(reasoning, "reasoning", "effort").str()? {
            out.insert("reasoning_effort".into(), json!(effort));
        }
    }
    if let Some(text) = field(&root, "", "text").object()? {
        if let Some(format) = field(text, "text", "format").object()? {
            match field(format, "text.format", "type").required_str()? {
                "text" => {}
                "json_object" => {
                    out.insert("response_format".into(), json!({"type": "json_object"}));
                }
                "json_schema" => {
                    let mut schema = serde_json::Map::new();
                    for key in ["name", "description", "schema", "strict"] {
                        if let Some(v) = format.get(key) {
                            schema.insert(key.into(), v.clone());
                        }
                    }
                    out.insert(
                        "response_format".into(),
                        json!({"type": "json_schema", "json_schema": schema}),
                    );
                }
                other => {
                    return Err(TranslateError::unsupported(format!(
                        "text.format.type: {} is not supported by a router",
                        shown(other)
                    )))
                }
            }
        }
    }
    Ok(serde_json::to_vec(&Value::Object(out)).unwrap_or_default())
}

fn input_item(item: &Object, at: &str, messages: &mut Vec<Value>) -> Result<(), TranslateError> {
    let kind = field(item, at, "type").str()?.unwrap_or("message");
    match kind {
        "message" => {
            let role = field(item, at, "role").required_str()?;
            if !matches!(role, "user" | "system" | "developer" | "assistant") {
                return Err(TranslateError::malformed(format!(
                    "{at}.role: {} is not a role of this dialect",
                    shown(role)
                )));
            }
            let content = field(item, at, "content");
            let content = match content.value {
                Some(Value::String(text)) => json!(text),
                Some(Value::Array(_)) => {
                    let mut parts = Vec::new();
                    for (part_at, part) in content.objects()? {
                        parts.push(content_part(part, &part_at)?);
                    }
                    Value::Array(parts)
                }
                _ => {
                    return Err(TranslateError::malformed(format!(
                        "{at}.content: must be a string or an array"
                    )))
                }
            };
            messages.push(json!({"role": role, "content": content}));
        }
        "function_call" => {
            let call = json!({
                "id": field(item, at, "call_id").required_str()?,
                "type": "function",
                "function": {
                    "name": field(item, at, "name").required_str()?,
                    "arguments": field(item, at, "arguments").str()?.unwrap_or("{}"),
                },
            });
            // Consecutive calls (parallel ones) join one assistant message.
            let last = messages.last_mut().filter(|m| {
                m["role"] == "assistant" && m.get("tool_calls").is_some_and(Value::is_array)
            });
            match last {
                Some(message) => {
                    if let Some(calls) = message["tool_calls"].as_array_mut() {
                        calls.push(call);
                    }
                }
                None => messages
                    .push(json!({"role": "assistant", "content": null, "tool_calls": [call]})),
            }
        }
        "function_call_output" => {
            let output = match field(item, at, "output").value {
                Some(Value::String(text)) => text.clone(),
                Some(other) => other.to_string(),
                None => String::new(),
            };
            messages.push(json!({
                "role": "tool",
                "tool_call_id": field(item, at, "call_id").required_str()?,
                "content": output,
            }));
        }
        "reasoning" => {}
        other => {
            return Err(TranslateError::unsupported(format!(
                "{at}.type: {} items are not supported by a router",
                shown(other)
            )))
        }
    }
    Ok(())
}

fn content_part(part: &Object, at: &str) -> Result<Value, TranslateError> {
    let kind = field(part, at, "type").required_str()?;
    Ok(match kind {
        "input_text" | "output_text" | "text" => {
            json!({"type": "text", "text": field(part, at, "text").required_str()?})
        }
        "refusal" => {
            json!({"type": "text", "text": field(part, at, "refusal").required_str()?})
        }
        "input_image" => {
            let Some(url) = field(part, at, "image_url").str()? else {
                return Err(TranslateError::unsupported(format!(
                    "{at}.image_url: images by file_id are not supported by a router"
                )));
            };
            json!({"type": "image_url", "image_url": {"url": url}})
        }
        other => {
            return Err(TranslateError::unsupported(format!(
                "{at}.type: {} parts are not supported by a router",
                shown(other)
            )))
        }
    })
}

/// Translates a Chat Completions answer into a Responses `response` object. `created` is the
/// Unix time in seconds.
pub fn openai_to_responses_response(body: &[u8], created: u64) -> Result<Vec<u8>, TranslateError> {
    let root = parse_object(body)?;
    let id = field(&root, "", "id").str()?.unwrap_or("");
    let id = id.strip_prefix("chatcmpl-").unwrap_or(id);
    let id: String = id.chars().take(super::MAX_ID_BYTES).collect();
    let model = field(&root, "", "model").str()?.unwrap_or("");
    let choices = field(&root, "", "choices").objects()?;
    let choice = choices.first().map(|(_, c)| *c);
    let empty = Object::new();
    let message = match choice {
        Some(c) => field(c, "choices[0]", "message")
            .object()?
            .unwrap_or(&empty),
        None => &empty,
    };
    let mut output = Vec::new();
    let reasoning = message
        .get("reasoning_content")
        .or_else(|| message.get("reasoning"))
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty());
    if let Some(text) = reasoning {
        output.push(json!({"type": "reasoning", "id": format!("rs_{id}"),
            "summary": [{"type": "summary_text", "text": text}]}));
    }
    let text = message
        .get("content")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty());
    let refusal = message
        .get("refusal")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty());
    if text.is_some() || refusal.is_some() {
        let mut content = Vec::new();
        if let Some(text) = text {
            content.push(json!({"type": "output_text", "text": text, "annotations": []}));
        }
        if let Some(refusal) = refusal {
            content.push(json!({"type": "refusal", "refusal": refusal}));
        }
        output.push(
            json!({"type": "message", "id": format!("msg_{id}"), "status": "completed",
            "role": "assistant", "content": content}),
        );
    }
    if let Some(calls) = message.get("tool_calls").and_then(Value::as_array) {
        for (n, call) in calls.iter().enumerate() {
            let call_id = call.get("id").and_then(Value::as_str).unwrap_or("");
            let function = call.get("function").unwrap_or(&Value::Null);
            output.push(json!({
                "type": "function_call",
                "id": format!("fc_{id}_{n}"),
                "call_id": call_id,
                "name": function.get("name").and_then(Value::as_str).unwrap_or(""),
                "arguments": function.get("arguments").and_then(Value::as_str).unwrap_or("{}"),
                "status": "completed",
            }));
        }
    }
    let finish = choice
        .and_then(|c| c.get("finish_reason"))
        .and_then(Value::as_str);
    let (status, incomplete) = match finish {
        Some("length") => ("incomplete", json!({"reason": "max_output_tokens"})),
        Some("content_filter") => ("incomplete", json!({"reason": "content_filter"})),
        _ => ("completed", Value::Null),
    };
    let mut out = json!({
        "id": format!("resp_{id}"),
        "object": "response",
        "created_at": created,
        "status": status,
        "error": null,
        "incomplete_details": incomplete,
        "instructions": null,
        "metadata": {},
        "model": model,
        "output": output,
        "parallel_tool_calls": true,
        "temperature": null,
        "tool_choice": "auto",
        "tools": [],
        "top_p": null,
    });
    if let Some(usage) = root.get("usage").filter(|u| u.is_object()) {
        let n = |v: Option<&Value>| v.and_then(Value::as_u64).unwrap_or(0);
        let input = n(usage.get("prompt_tokens"));
        let output_tokens = n(usage.get("completion_tokens"));
        out["usage"] = json!({
            "input_tokens": input,
            "input_tokens_details": {"cached_tokens": n(usage.pointer("/prompt_tokens_details/cached_tokens"))},
            "output_tokens": output_tokens,
            "output_tokens_details": {"reasoning_tokens": n(usage.pointer("/completion_tokens_details/reasoning_tokens"))},
            "total_tokens": input.saturating_add(output_tokens),
        });
    }
    Ok(serde_json::to_vec(&out).unwrap_or_default())
}
