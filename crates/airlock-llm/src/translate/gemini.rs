//! Gemini as a router backend: Chat Completions requests as Gemini `generateContent` bodies,
//! and Gemini's answers (whole, streamed and errors) as Chat Completions. An Anthropic client
//! goes through Chat Completions on the way (Messages → Chat Completions → Gemini, and back), so
//! what that translation drops is dropped here too.
//!
//! # Requests (Chat Completions → Gemini)
//!
//! | Chat Completions | Gemini | notes |
//! |---|---|---|
//! | `model` | the URL path (`models/{model}:generateContent`) | not in the body |
//! | `system` / `developer` messages | `systemInstruction.parts[].text` | hoisted, in order |
//! | `user` text, `image_url` (data URL) | `contents[]{role: user, parts: [text / inlineData{mimeType, data}]}` | an http(s) image URL is refused (Gemini fetches no URLs) |
//! | `assistant` content, `tool_calls[]` | `{role: model, parts: [text / functionCall{name, args}]}` | `arguments` (a JSON string) → `args` (an object) |
//! | `tool` messages | `{role: user, parts: [functionResponse{name, response: {content}}]}` | the name comes from the assistant's call with that `tool_call_id`; JSON content is kept as JSON |
//! | consecutive turns of one role | one turn | |
//! | `tools[]{function{name, description, parameters}}` | `tools[{functionDeclarations[{name, description, parametersJsonSchema}]}]` | the JSON schema as it is (`parametersJsonSchema` takes JSON Schema, not OpenAPI's subset) |
//! | `tool_choice` `auto` / `none` / `required` / `{function{name}}` | `toolConfig.functionCallingConfig.mode` `AUTO` / `NONE` / `ANY` / `ANY` + `allowedFunctionNames` | |
//! | `max_completion_tokens`, else `max_tokens` | `generationConfig.maxOutputTokens` | none given: none sent (Gemini's default) |
//! | `stop` | `generationConfig.stopSequences` | |
//! | `temperature`, `top_p`, `seed`, `presence_penalty`, `frequency_penalty` | `temperature`, `topP`, `seed`, `presencePenalty`, `frequencyPenalty` | |
//! | `response_format: json_object` | `responseMimeType: application/json` | `json_schema` is refused |
//! | `reasoning_effort` | `thinkingConfig.thinkingBudget` ([`super::EFFORT_BUDGETS`]), `includeThoughts` | only when [`super::RequestOptions::reasoning`] |
//! | `stream` | the URL (`:streamGenerateContent?alt=sse`) | |
//!
//! # Answers (Gemini → Chat Completions)
//!
//! | Gemini | Chat Completions |
//! |---|---|
//! | `responseId`, `modelVersion` | `id` (`chatcmpl-…`), `model` |
//! | `candidates[0].content.parts[].text` | `message.content` (joined) |
//! | parts with `thought: true` | `message.reasoning_content` |
//! | `functionCall{name, args}` | `message.tool_calls[]{id: call_{n} (or Gemini's id), function{name, arguments}}` |
//! | `finishReason` `STOP` / `MAX_TOKENS` / `SAFETY`, `RECITATION`, `BLOCKLIST`, `PROHIBITED_CONTENT`, `SPII`, `IMAGE_SAFETY` / other | `finish_reason` `stop` (`tool_calls` when it called a function) / `length` / `content_filter` / `stop` |
//! | `promptFeedback.blockReason` without candidates | an empty answer with `finish_reason: content_filter` |
//! | `usageMetadata.promptTokenCount` + `toolUsePromptTokenCount` | `usage.prompt_tokens` |
//! | `cachedContentTokenCount` | `prompt_tokens_details.cached_tokens` |
//! | `candidatesTokenCount` + `thoughtsTokenCount` | `completion_tokens` (`completion_tokens_details.reasoning_tokens` = thoughts) |
//! | an error body `{"error": {code, message, status}}` | the client's error shape, the status kept |
//!
//! A stream (`alt=sse`: one `GenerateContentResponse` per `data:` event, each with the running
//! `usageMetadata`) becomes Chat Completions chunks: a role chunk first, a chunk per text,
//! thought or function call, the `finish_reason` chunk, the usage-only chunk (when asked) and
//! `data: [DONE]` when the body ends after a finish reason.

use serde_json::{json, Value};

use super::json::{field, parse_data_url, parse_object, shown, type_name, Object};
use super::request::{arguments_object, function_tools, refuse_unsupported_openai};
use super::response::Tokens;
use super::{budget_for_effort, RequestOptions, TranslateError};

/// Translates a Chat Completions request into a Gemini `generateContent` body (the model and
/// the streaming go in the URL, which is the caller's).
pub fn openai_to_gemini_request(
    body: &[u8],
    opts: &RequestOptions<'_>,
) -> Result<Vec<u8>, TranslateError> {
    openai_to_gemini(&parse_object(body)?, opts)
}

/// [`openai_to_gemini_request`] of a body already parsed.
pub(super) fn openai_to_gemini(
    root: &Object,
    opts: &RequestOptions<'_>,
) -> Result<Vec<u8>, TranslateError> {
    refuse_unsupported_openai(root, true)?;
    let mut system: Vec<Value> = Vec::new();
    let mut contents: Vec<(&'static str, Vec<Value>)> = Vec::new();
    // tool_call_id → function name, for functionResponse parts.
    let mut call_names: Vec<(String, String)> = Vec::new();
    let messages = field(root, "", "messages").objects()?;
    if messages.is_empty() {
        return Err(TranslateError::malformed(
            "messages: must be a non-empty array",
        ));
    }
    for (at, message) in &messages {
        let role = field(message, at, "role").required_str()?;
        match role {
            "system" | "developer" => {
                for text in texts(message, at)? {
                    system.push(json!({"text": text}));
                }
            }
            "user" => push(&mut contents, "user", user_parts(message, at)?),
            "assistant" => {
                let mut parts: Vec<Value> = texts(message, at)?
                    .into_iter()
                    .map(|t| json!({"text": t}))
                    .collect();
                for (call_at, call) in field(message, at, "tool_calls").objects()? {
                    let id = field(call, &call_at, "id").str()?.unwrap_or("");
                    let function_at = format!("{call_at}.function");
                    let function = field(call, &call_at, "function").required_object()?;
                    let name = field(function, &function_at, "name").required_str()?;
                    let arguments = field(function, &function_at, "arguments")
                        .str()?
                        .unwrap_or("{}");
                    call_names.push((id.to_owned(), name.to_owned()));
                    parts.push(
                        json!({"functionCall": {"name": name, "args": arguments_object(arguments)}}),
                    );
                }
                push(&mut contents, "model", parts);
            }
            "tool" => {
                let id = field(message, at, "tool_call_id").required_str()?;
                let Some((_, name)) = call_names.iter().rev().find(|(i, _)| i == id) else {
                    return Err(TranslateError::malformed(format!(
                        "{at}.tool_call_id: names no tool call of an earlier assistant message"
                    )));
                };
                let text = texts(message, at)?.join("");
                let content = match serde_json::from_str::<Value>(&text) {
                    Ok(value @ (Value::Object(_) | Value::Array(_))) => value,
                    _ => Value::String(text),
                };
                let part =
                    json!({"functionResponse": {"name": name, "response": {"content": content}}});
                push(&mut contents, "user", vec![part]);
            }
            other => {
                return Err(TranslateError::malformed(format!(
                    "{at}.role: {} is not a role of this dialect",
                    shown(other)
                )))
            }
        }
    }
    let mut out = serde_json::Map::new();
    out.insert(
        "contents".into(),
        Value::Array(
            contents
                .into_iter()
                .map(|(role, parts)| json!({"role": role, "parts": parts}))
                .collect(),
        ),
    );
    if !system.is_empty() {
        out.insert("systemInstruction".into(), json!({"parts": system}));
    }
    let tools = function_declarations(root)?;
    if !tools.is_empty() {
        out.insert(
            "tools".into(),
            json!([{"functionDeclarations": tools.clone()}]),
        );
        if let Some(config) = tool_config(root)? {
            out.insert("toolConfig".into(), config);
        }
    }
    let config = generation_config(root, opts)?;
    if !config.is_empty() {
        out.insert("generationConfig".into(), Value::Object(config));
    }
    Ok(serde_json::to_vec(&Value::Object(out)).unwrap_or_default())
}

/// Appends parts to the last turn when it has the same role, else starts a turn.
fn push(contents: &mut Vec<(&'static str, Vec<Value>)>, role: &'static str, parts: Vec<Value>) {
    if parts.is_empty() {
        return;
    }
    match contents.last_mut() {
        Some((last, existing)) if *last == role => existing.extend(parts),
        _ => contents.push((role, parts)),
    }
}

/// A message's text: the `content` string, or its `text` (and `refusal`) parts; empty texts
/// are left out.
fn texts(message: &Object, at: &str) -> Result<Vec<String>, TranslateError> {
    let content = field(message, at, "content");
    let mut out = Vec::new();
    match content.value {
        None => {}
        Some(Value::String(text)) => out.push(text.clone()),
        Some(Value::Array(_)) => {
            for (part_at, part) in content.objects()? {
                let kind = field(part, &part_at, "type").required_str()?;
                match kind {
                    "text" | "refusal" => {
                        let text = field(part, &part_at, kind).required_str()?;
                        out.push(text.to_owned());
                    }
                    other => {
                        return Err(TranslateError::unsupported(format!(
                            "{part_at}.type: {} parts are not supported here by this backend",
                            shown(other)
                        )))
                    }
                }
            }
        }
        Some(other) => {
            return Err(TranslateError::malformed(format!(
                "{}: must be a string or an array, not {}",
                content.path(),
                type_name(other)
            )))
        }
    }
    out.retain(|t| !t.is_empty());
    Ok(out)
}

fn user_parts(message: &Object, at: &str) -> Result<Vec<Value>, TranslateError> {
    let content = field(message, at, "content");
    let mut parts = Vec::new();
    match content.value {
        Some(Value::Array(_)) => {
            for (part_at, part) in content.objects()? {
                let kind = field(part, &part_at, "type").required_str()?;
                match kind {
                    "text" => {
                        let text = field(part, &part_at, "text").required_str()?;
                        if !text.is_empty() {
                            parts.push(json!({"text": text}));
                        }
                    }
                    "image_url" => {
                        let image_at = format!("{part_at}.image_url");
                        let image = field(part, &part_at, "image_url").required_object()?;
                        let url = field(image, &image_at, "url").required_str()?;
                        let Some((mime, data)) = parse_data_url(url) else {
                            return Err(TranslateError::unsupported(format!(
                                "{image_at}.url: only data URLs are supported by this backend"
                            )));
                        };
                        parts.push(json!({"inlineData": {"mimeType": mime, "data": data}}));
                    }
                    other => {
                        return Err(TranslateError::unsupported(format!(
                            "{part_at}.type: {} parts are not supported by this backend",
                            shown(other)
                        )))
                    }
                }
            }
        }
        _ => {
            for text in texts(message, at)? {
                parts.push(json!({"text": text}));
            }
        }
    }
    Ok(parts)
}

fn function_declarations(root: &Object) -> Result<Vec<Value>, TranslateError> {
    let mut out = Vec::new();
    for f in function_tools(root)? {
        let mut declaration = serde_json::Map::new();
        declaration.insert("name".into(), json!(f.name));
        if let Some(d) = f.description {
            declaration.insert("description".into(), json!(d));
        }
        if let Some(schema) = f.parameters {
            declaration.insert("parametersJsonSchema".into(), Value::Object(schema.clone()));
        }
        out.push(Value::Object(declaration));
    }
    Ok(out)
}

fn tool_config(root: &Object) -> Result<Option<Value>, TranslateError> {
    let choice = field(root, "", "tool_choice");
    let config = match choice.value {
        None => return Ok(None),
        Some(Value::String(mode)) => match mode.as_str() {
            "auto" => json!({"mode": "AUTO"}),
            "none" => json!({"mode": "NONE"}),
            "required" => json!({"mode": "ANY"}),
            other => {
                return Err(TranslateError::malformed(format!(
                    "tool_choice: {} is not a tool choice",
                    shown(other)
                )))
            }
        },
        Some(Value::Object(object)) => {
            let function = field(object, "tool_choice", "function").required_object()?;
            let name = field(function, "tool_choice.function", "name").required_str()?;
            json!({"mode": "ANY", "allowedFunctionNames": [name]})
        }
        Some(other) => {
            return Err(TranslateError::malformed(format!(
                "tool_choice: must be a string or an object, not {}",
                type_name(other)
            )))
        }
    };
    Ok(Some(json!({"functionCallingConfig": config})))
}

fn generation_config(
    root: &Object,
    opts: &RequestOptions<'_>,
) -> Result<serde_json::Map<String, Value>, TranslateError> {
    let mut config = serde_json::Map::new();
    let max = match field(root, "", "max_completion_tokens").u64()? {
        Some(n) => Some(n),
        None => field(root, "", "max_tokens").u64()?,
    };
    if let Some(n) = max {
        config.insert("maxOutputTokens".into(), json!(n));
    }
    let stop = field(root, "", "stop");
    let stops: Vec<Value> = match stop.value {
        None => Vec::new(),
        Some(Value::String(s)) => vec![json!(s)],
        Some(Value::Array(items)) => {
            for item in items {
                if !item.is_string() {
                    return Err(TranslateError::malformed(
                        "stop: must be a string or an array of strings",
                    ));
                }
            }
            items.clone()
        }
        Some(_) => {
            return Err(TranslateError::malformed(
                "stop: must be a string or an array of strings",
            ))
        }
    };
    if !stops.is_empty() {
        config.insert("stopSequences".into(), Value::Array(stops));
    }
    for (from, to) in [
        ("temperature", "temperature"),
        ("top_p", "topP"),
        ("presence_penalty", "presencePenalty"),
        ("frequency_penalty", "frequencyPenalty"),
    ] {
        if let Some(v) = field(root, "", from).f64()? {
            if let Some(n) = super::json::number(v) {
                config.insert(to.into(), n);
            }
        }
    }
    if let Some(seed) = field(root, "", "seed").value.filter(|s| s.is_i64()) {
        config.insert("seed".into(), seed.clone());
    }
    if let Some(format) = field(root, "", "response_format").object()? {
        if field(format, "response_format", "type").str()? == Some("json_object") {
            config.insert("responseMimeType".into(), json!("application/json"));
        }
    }
    if opts.reasoning {
        if let Some(effort) = field(root, "", "reasoning_effort").str()? {
            let cap = max.unwrap_or(u64::MAX / 2);
            if let Some(budget) = budget_for_effort(effort, cap) {
                config.insert(
                    "thinkingConfig".into(),
                    json!({"thinkingBudget": budget, "includeThoughts": true}),
                );
            }
        }
    }
    Ok(config)
}

/// Gemini's `finishReason` as Chat Completions' `finish_reason`.
pub(super) fn finish_reason_for_gemini(reason: &str, called: bool) -> &'static str {
    match reason {
        "MAX_TOKENS" => "length",
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY" => {
            "content_filter"
        }
        _ if called => "tool_calls",
        _ => "stop",
    }
}

/// Gemini's `usageMetadata` in Airlock's token terms.
pub(super) fn tokens_from_gemini(usage: &Value) -> Tokens {
    let n = |key: &str| usage.get(key).and_then(Value::as_u64).unwrap_or(0);
    let prompt = n("promptTokenCount").saturating_add(n("toolUsePromptTokenCount"));
    let cached = n("cachedContentTokenCount").min(prompt);
    let thoughts = n("thoughtsTokenCount");
    Tokens {
        input: prompt - cached,
        output: n("candidatesTokenCount").saturating_add(thoughts),
        cache_read: cached,
        cache_write: 0,
        reasoning: (thoughts > 0).then_some(thoughts),
    }
}

/// What one Gemini response (or stream chunk) says, in Chat Completions' pieces.
#[derive(Default)]
pub(super) struct Said {
    pub(super) text: String,
    pub(super) thoughts: String,
    /// `(id, name, arguments)`; the id is Gemini's, if it gave one.
    pub(super) calls: Vec<(Option<String>, String, String)>,
    pub(super) finish: Option<String>,
    pub(super) blocked: bool,
}

/// Reads the first candidate of a `GenerateContentResponse`.
pub(super) fn read_response(root: &Value) -> Said {
    let mut said = Said::default();
    let candidate = root
        .get("candidates")
        .and_then(Value::as_array)
        .and_then(|c| c.first());
    let Some(candidate) = candidate else {
        said.blocked = root
            .get("promptFeedback")
            .and_then(|f| f.get("blockReason"))
            .is_some();
        return said;
    };
    let parts = candidate
        .get("content")
        .and_then(|c| c.get("parts"))
        .and_then(Value::as_array);
    for part in parts.into_iter().flatten() {
        if let Some(call) = part.get("functionCall") {
            let name = call.get("name").and_then(Value::as_str).unwrap_or("");
            let args = call.get("args").cloned().unwrap_or_else(|| json!({}));
            let id = call.get("id").and_then(Value::as_str).map(str::to_owned);
            said.calls.push((
                id,
                name.to_owned(),
                serde_json::to_string(&args).unwrap_or_default(),
            ));
        } else if let Some(text) = part.get("text").and_then(Value::as_str) {
            if part.get("thought").and_then(Value::as_bool) == Some(true) {
                said.thoughts.push_str(text);
            } else {
                said.text.push_str(text);
            }
        }
    }
    said.finish = candidate
        .get("finishReason")
        .and_then(Value::as_str)
        .filter(|r| !r.is_empty() && *r != "FINISH_REASON_UNSPECIFIED")
        .map(str::to_owned);
    said
}

/// The `id` of a translated answer: Gemini's `responseId`, bounded.
pub(super) fn answer_id(root: &Value) -> String {
    let id = root
        .get("responseId")
        .and_then(Value::as_str)
        .filter(|i| i.len() <= super::MAX_ID_BYTES)
        .unwrap_or("");
    format!("chatcmpl-{id}")
}

pub(super) fn answer_model(root: &Value) -> String {
    root.get("modelVersion")
        .and_then(Value::as_str)
        .filter(|m| m.len() <= super::MAX_ID_BYTES)
        .unwrap_or("")
        .to_owned()
}

/// A tool call in Chat Completions' shape; `n` numbers the calls of the answer.
pub(super) fn tool_call(n: usize, id: &Option<String>, name: &str, arguments: &str) -> Value {
    let id = id
        .as_deref()
        .filter(|i| !i.is_empty() && i.len() <= super::MAX_ID_BYTES)
        .map_or_else(|| format!("call_{n}"), str::to_owned);
    json!({"id": id, "type": "function", "function": {"name": name, "arguments": arguments}})
}

/// Translates a whole Gemini `GenerateContentResponse` into a Chat Completions response.
pub fn gemini_to_openai_response(body: &[u8], created: u64) -> Result<Vec<u8>, TranslateError> {
    let root = Value::Object(parse_object(body)?);
    let said = read_response(&root);
    let mut message = serde_json::Map::new();
    message.insert("role".into(), json!("assistant"));
    let content = if said.text.is_empty() && !said.calls.is_empty() {
        Value::Null
    } else {
        Value::String(said.text.clone())
    };
    message.insert("content".into(), content);
    if !said.thoughts.is_empty() {
        message.insert("reasoning_content".into(), json!(said.thoughts));
    }
    if !said.calls.is_empty() {
        let calls: Vec<Value> = said
            .calls
            .iter()
            .enumerate()
            .map(|(n, (id, name, args))| tool_call(n, id, name, args))
            .collect();
        message.insert("tool_calls".into(), Value::Array(calls));
    }
    let finish = if said.blocked {
        "content_filter"
    } else {
        finish_reason_for_gemini(
            said.finish.as_deref().unwrap_or("STOP"),
            !said.calls.is_empty(),
        )
    };
    let mut out = json!({
        "id": answer_id(&root),
        "object": "chat.completion",
        "created": created,
        "model": answer_model(&root),
        "choices": [{"index": 0, "message": Value::Object(message), "finish_reason": finish, "logprobs": null}],
    });
    if let Some(usage) = root.get("usageMetadata").filter(|u| u.is_object()) {
        out["usage"] = tokens_from_gemini(usage).openai_json();
    }
    Ok(serde_json::to_vec(&out).unwrap_or_default())
}

/// A Gemini error body (`{"error": {"code", "message", "status"}}`) as a Chat Completions one:
/// the message kept, `type` from the status (`RESOURCE_EXHAUSTED` → `rate_limit_error`, …).
pub fn gemini_error_to_openai(status: u16, body: &[u8]) -> Vec<u8> {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let parsed = match parsed {
        Some(Value::Array(mut items)) if !items.is_empty() => Some(items.swap_remove(0)),
        other => other,
    };
    let error = parsed.as_ref().and_then(|v| v.get("error"));
    let message = error
        .and_then(|e| e.get("message"))
        .and_then(Value::as_str)
        .filter(|m| m.len() <= 4096)
        .map_or_else(
            || format!("upstream error (status {status})"),
            str::to_owned,
        );
    let code = error.and_then(|e| e.get("status")).and_then(Value::as_str);
    let kind = match (code, status) {
        (Some("RESOURCE_EXHAUSTED"), _) | (_, 429) => "rate_limit_error",
        (Some("UNAUTHENTICATED"), _) | (_, 401) => "authentication_error",
        (Some("PERMISSION_DENIED"), _) | (_, 403) => "permission_error",
        (Some("NOT_FOUND"), _) | (_, 404) => "not_found_error",
        (_, 500..=599) => "server_error",
        _ => "invalid_request_error",
    };
    let code = code
        .filter(|c| c.len() <= 64)
        .map_or(Value::Null, |c| json!(c));
    serde_json::to_vec(
        &json!({"error": {"message": message, "type": kind, "param": null, "code": code}}),
    )
    .unwrap_or_default()
}
