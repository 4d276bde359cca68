//! Request bodies from one dialect to the other. Both directions read the client's body whole
//! (the proxy caps request bodies before they get here), check every field they translate, and
//! build the backend's body from scratch: a field this module does not know is dropped rather
//! than passed on, so a translated body never carries something the backend cannot read. The
//! module docs list what each direction keeps, maps, drops and refuses.

use serde_json::{json, Value};

use super::json::{
    field, number, parse_data_url, parse_object, shown, type_name, Builder, Field, Object,
};
use super::{budget_for_effort, effort_for_budget, MaxTokensField, RequestOptions, TranslateError};

// ---------------------------------------------------------------------------------------------
// OpenAI Chat Completions → Anthropic Messages
// ---------------------------------------------------------------------------------------------

/// One Anthropic turn being built: consecutive OpenAI messages of the same Anthropic role
/// (a user message and the tool results around it, two assistant messages) merge into it,
/// because Anthropic wants user and assistant turns to alternate.
struct Turn {
    role: &'static str,
    blocks: Vec<Value>,
}

/// Translates a Chat Completions request into a Messages request for `opts.model`.
pub fn openai_to_anthropic_request(
    body: &[u8],
    opts: &RequestOptions<'_>,
) -> Result<Vec<u8>, TranslateError> {
    if let Some(out) = super::chat_request::openai_to_anthropic_typed(body, opts) {
        return Ok(out);
    }
    openai_to_anthropic(&parse_object(body)?, opts)
}

/// [`openai_to_anthropic_request`] of a body already parsed.
pub(super) fn openai_to_anthropic(
    root: &Object,
    opts: &RequestOptions<'_>,
) -> Result<Vec<u8>, TranslateError> {
    refuse_unsupported_openai(root, false)?;

    let mut system: Vec<Value> = Vec::new();
    let mut turns: Vec<Turn> = Vec::new();
    let messages_field = field(root, "", "messages");
    messages_field.required_array()?;
    for (at, message) in messages_field.objects()? {
        let role = field(message, &at, "role").required_str()?;
        match role {
            "system" | "developer" => {
                system.extend(text_parts(message, &at, TextPartsOf::System)?);
            }
            "user" => push(&mut turns, "user", user_blocks(message, &at)?),
            "assistant" => push(&mut turns, "assistant", assistant_blocks(message, &at)?),
            "tool" => push(&mut turns, "user", vec![tool_result(message, &at)?]),
            "function" => {
                return Err(TranslateError::unsupported(format!(
                "{at}.role: function messages (deprecated) cannot be translated; use tool messages"
            )))
            }
            other => {
                return Err(TranslateError::malformed(format!(
                    "{at}.role: must be one of system, developer, user, assistant, tool, not {}",
                    shown(other)
                )))
            }
        }
    }
    for turn in &mut turns {
        // Anthropic wants a user turn's tool results before anything else in it.
        turn.blocks
            .sort_by_key(|block| block.get("type") != Some(&json!("tool_result")));
    }

    let mut out = Builder::new();
    out.set("model", opts.model);

    let max_tokens = match field(root, "", "max_completion_tokens").u64()? {
        Some(cap) => Some(cap),
        None => field(root, "", "max_tokens").u64()?,
    }
    .unwrap_or(opts.default_max_tokens);
    out.set("max_tokens", max_tokens);

    match system.as_slice() {
        [] => {}
        [only] if only.get("cache_control").is_none() => {
            out.set("system", only.get("text").cloned().unwrap_or(Value::Null));
        }
        _ => {
            out.set("system", system);
        }
    }
    let messages: Vec<Value> = turns
        .into_iter()
        .map(|turn| json!({"role": turn.role, "content": turn.blocks}))
        .collect();
    out.set("messages", messages);

    // Tools and how they may be used.
    let tools = openai_tools(root)?;
    let choice = openai_tool_choice(field(root, "", "tool_choice"))?;
    let forced_tool = matches!(&choice, Some(c) if c["type"] == "any" || c["type"] == "tool");
    if !tools.is_empty() {
        let mut choice = choice;
        if field(root, "", "parallel_tool_calls").bool()? == Some(false) {
            let choice = choice.get_or_insert_with(|| json!({"type": "auto"}));
            if choice["type"] != "none" {
                choice["disable_parallel_tool_use"] = Value::Bool(true);
            }
        }
        out.set("tools", tools);
        out.set_opt("tool_choice", choice);
    }

    // Thinking: the client's own `thinking` object (an Anthropic extension some OpenAI clients
    // send) wins over `reasoning_effort`. Anthropic refuses thinking with a forced tool.
    let thinking = match field(root, "", "thinking").object()? {
        Some(thinking) => Some(Value::Object(thinking.clone())),
        None => field(root, "", "reasoning_effort")
            .str()?
            .and_then(|effort| budget_for_effort(effort, max_tokens))
            .map(|budget| json!({"type": "enabled", "budget_tokens": budget})),
    };
    let thinking = thinking.filter(|thinking| thinking["type"] != "disabled" && !forced_tool);
    let thinking_on = thinking.is_some();
    out.set_opt("thinking", thinking);

    // Anthropic takes temperatures up to 1 where OpenAI takes up to 2; and with thinking on it
    // refuses any temperature but the default and a top_p under 0.95.
    if !thinking_on {
        let temperature = field(root, "", "temperature").f64()?;
        out.set_opt(
            "temperature",
            temperature.map(|t| t.clamp(0.0, 1.0)).and_then(number),
        );
    }
    let top_p = field(root, "", "top_p").f64()?;
    let top_p = top_p.filter(|&p| !thinking_on || p >= 0.95);
    out.set_opt("top_p", top_p.and_then(number));

    let stop = stop_sequences(field(root, "", "stop"))?;
    if !stop.is_empty() {
        out.set("stop_sequences", stop);
    }

    if field(root, "", "stream").bool()? == Some(true) {
        out.set("stream", true);
    }
    let user = match field(root, "", "user").str()? {
        Some(user) => Some(user),
        None => field(root, "", "safety_identifier").str()?,
    };
    if let Some(user) = user {
        out.set("metadata", json!({ "user_id": user }));
    }
    Ok(out.into_bytes())
}

/// `stop` (a string or an array of strings) as Anthropic's `stop_sequences`, without the
/// whitespace-only ones Anthropic refuses.
pub(super) fn stop_sequences(stop: Field<'_, '_>) -> Result<Vec<String>, TranslateError> {
    let stop = match stop.value {
        None => Vec::new(),
        Some(Value::String(one)) => vec![one.clone()],
        Some(Value::Array(many)) => many
            .iter()
            .enumerate()
            .map(|(i, s)| match s {
                Value::String(s) => Ok(s.clone()),
                other => Err(TranslateError::malformed(format!(
                    "stop[{i}]: must be a string, not {}",
                    type_name(other)
                ))),
            })
            .collect::<Result<_, _>>()?,
        Some(other) => {
            return Err(TranslateError::malformed(format!(
                "stop: must be a string or an array of strings, not {}",
                type_name(other)
            )))
        }
    };
    // Anthropic refuses stop sequences made of whitespace only.
    Ok(stop.into_iter().filter(|s| !s.trim().is_empty()).collect())
}

/// Fields whose meaning Anthropic cannot carry: refused rather than silently dropped.
/// `json_object`: the backend has a JSON mode (Gemini), so `response_format: json_object` passes.
pub(super) fn refuse_unsupported_openai(
    root: &Object,
    json_object: bool,
) -> Result<(), TranslateError> {
    if field(root, "", "n").u64()?.is_some_and(|n| n > 1) {
        return Err(TranslateError::unsupported(
            "n: only one choice can be generated by this backend",
        ));
    }
    if field(root, "", "audio").value.is_some() {
        return Err(TranslateError::unsupported(
            "audio: audio output is not supported by this backend",
        ));
    }
    if let Some(modalities) = field(root, "", "modalities").array()? {
        if modalities.iter().any(|m| m != "text") {
            return Err(TranslateError::unsupported(
                "modalities: only text output is supported by this backend",
            ));
        }
    }
    if let Some(format) = field(root, "", "response_format").object()? {
        let kind = field(format, "response_format", "type").str()?;
        if kind.is_some_and(|kind| kind != "text" && !(json_object && kind == "json_object")) {
            return Err(TranslateError::unsupported(
                "response_format: json output formats are not supported by this backend",
            ));
        }
    }
    for key in ["functions", "function_call"] {
        if field(root, "", key).value.is_some() {
            return Err(TranslateError::unsupported(format!(
                "{key}: deprecated function calling cannot be translated; use tools"
            )));
        }
    }
    if field(root, "", "web_search_options").value.is_some() {
        return Err(TranslateError::unsupported(
            "web_search_options: web search is not supported by this backend",
        ));
    }
    Ok(())
}

/// Appends blocks to the last turn when it has the same role, else starts a turn. Empty
/// contributions (a message whose only text was empty) add nothing.
fn push(turns: &mut Vec<Turn>, role: &'static str, blocks: Vec<Value>) {
    if blocks.is_empty() {
        return;
    }
    match turns.last_mut() {
        Some(last) if last.role == role => last.blocks.extend(blocks),
        _ => turns.push(Turn { role, blocks }),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum TextPartsOf {
    System,
    Tool,
}

/// A text block, or nothing for empty text (Anthropic refuses empty text blocks).
fn text_block(text: &str, part: Option<&Object>) -> Option<Value> {
    if text.is_empty() {
        return None;
    }
    let mut block = json!({"type": "text", "text": text});
    if let Some(cache) = part
        .and_then(|p| p.get("cache_control"))
        .filter(|c| c.is_object())
    {
        block["cache_control"] = cache.clone();
    }
    Some(block)
}

/// The content of a system, developer or tool message: a string or text parts.
fn text_parts(message: &Object, at: &str, of: TextPartsOf) -> Result<Vec<Value>, TranslateError> {
    let content = field(message, at, "content");
    match content.value {
        None => Ok(Vec::new()),
        Some(Value::String(text)) => Ok(text_block(text, None).into_iter().collect()),
        Some(Value::Array(_)) => {
            let mut blocks = Vec::new();
            for (at, part) in content.objects()? {
                let kind = field(part, &at, "type").required_str()?;
                match kind {
                    "text" => {
                        let text = field(part, &at, "text").required_str()?;
                        blocks.extend(text_block(text, Some(part)));
                    }
                    // Tool results may hold images on Anthropic's side too.
                    "image_url" if of == TextPartsOf::Tool => blocks.push(image_block(part, &at)?),
                    other => {
                        return Err(TranslateError::malformed(format!(
                            "{at}.type: must be text here, not {}",
                            shown(other)
                        )))
                    }
                }
            }
            Ok(blocks)
        }
        Some(other) => Err(TranslateError::malformed(format!(
            "{}: must be a string or an array of content parts, not {}",
            content.path(),
            type_name(other)
        ))),
    }
}

fn user_blocks(message: &Object, at: &str) -> Result<Vec<Value>, TranslateError> {
    let content = field(message, at, "content");
    match content.value {
        None => Ok(Vec::new()),
        Some(Value::String(text)) => Ok(text_block(text, None).into_iter().collect()),
        Some(Value::Array(_)) => {
            let mut blocks = Vec::new();
            for (at, part) in content.objects()? {
                match field(part, &at, "type").required_str()? {
                    "text" => {
                        let text = field(part, &at, "text").required_str()?;
                        blocks.extend(text_block(text, Some(part)));
                    }
                    "image_url" => blocks.push(image_block(part, &at)?),
                    "file" => blocks.push(document_block(part, &at)?),
                    "input_audio" => {
                        return Err(TranslateError::unsupported(format!(
                            "{at}: audio input is not supported by this backend"
                        )))
                    }
                    other => {
                        return Err(TranslateError::malformed(format!(
                            "{at}.type: must be one of text, image_url, file, input_audio, not {}",
                            shown(other)
                        )))
                    }
                }
            }
            Ok(blocks)
        }
        Some(other) => Err(TranslateError::malformed(format!(
            "{}: must be a string or an array of content parts, not {}",
            content.path(),
            type_name(other)
        ))),
    }
}

/// `{"type":"image_url","image_url":{"url":…}}` (or, from some clients, the URL as a string)
/// as an image block: a base64 data URL becomes a base64 source, anything else a URL source.
fn image_block(part: &Object, at: &str) -> Result<Value, TranslateError> {
    let image = field(part, at, "image_url");
    let url = match image.value {
        Some(Value::String(url)) => url.as_str(),
        _ => {
            let image = image.required_object()?;
            field(image, &format!("{at}.image_url"), "url").required_str()?
        }
    };
    let source = match parse_data_url(url) {
        Some((media_type, data)) => {
            json!({"type": "base64", "media_type": media_type, "data": data})
        }
        None if url.starts_with("data:") => {
            return Err(TranslateError::malformed(format!(
                "{at}.image_url.url: a data url must be base64-encoded"
            )))
        }
        None => json!({"type": "url", "url": url}),
    };
    let mut block = json!({"type": "image", "source": source});
    if let Some(cache) = part.get("cache_control").filter(|c| c.is_object()) {
        block["cache_control"] = cache.clone();
    }
    Ok(block)
}

/// `{"type":"file","file":{"file_data":"data:application/pdf;base64,…"}}` as a document block.
/// Uploaded files (`file_id`) live at OpenAI and cannot be sent elsewhere.
fn document_block(part: &Object, at: &str) -> Result<Value, TranslateError> {
    let file_at = format!("{at}.file");
    let file = field(part, at, "file").required_object()?;
    let Some(data_url) = field(file, &file_at, "file_data").str()? else {
        return Err(TranslateError::unsupported(format!(
            "{file_at}: uploaded files (file_id) are not supported by this backend; send file_data"
        )));
    };
    match parse_data_url(data_url) {
        Some(("application/pdf", data)) => {
            let mut block = json!({
                "type": "document",
                "source": {"type": "base64", "media_type": "application/pdf", "data": data},
            });
            if let Some(name) = field(file, &file_at, "filename").str()? {
                block["title"] = json!(name);
            }
            Ok(block)
        }
        Some(_) => Err(TranslateError::unsupported(format!(
            "{file_at}.file_data: only pdf files are supported by this backend"
        ))),
        None => Err(TranslateError::malformed(format!(
            "{file_at}.file_data: must be a base64 data url"
        ))),
    }
}

fn assistant_blocks(message: &Object, at: &str) -> Result<Vec<Value>, TranslateError> {
    let mut blocks = Vec::new();
    // Thinking comes first in an Anthropic assistant turn. Only blocks with their signature
    // can be sent back (Anthropic checks it); text without one is the model's own summary and
    // is dropped.
    for (at, block) in field(message, at, "thinking_blocks").objects()? {
        match field(block, &at, "type").required_str()? {
            "thinking" => {
                let thinking = field(block, &at, "thinking").str()?.unwrap_or("");
                let signature = field(block, &at, "signature").str()?.unwrap_or("");
                if !signature.is_empty() {
                    blocks.push(
                        json!({"type": "thinking", "thinking": thinking, "signature": signature}),
                    );
                }
            }
            "redacted_thinking" => {
                let data = field(block, &at, "data").required_str()?;
                blocks.push(json!({"type": "redacted_thinking", "data": data}));
            }
            other => {
                return Err(TranslateError::malformed(format!(
                    "{at}.type: must be thinking or redacted_thinking, not {}",
                    shown(other)
                )))
            }
        }
    }
    let content = field(message, at, "content");
    match content.value {
        None => {}
        Some(Value::String(text)) => blocks.extend(text_block(text, None)),
        Some(Value::Array(_)) => {
            for (at, part) in content.objects()? {
                match field(part, &at, "type").required_str()? {
                    "text" => {
                        let text = field(part, &at, "text").required_str()?;
                        blocks.extend(text_block(text, Some(part)));
                    }
                    "refusal" => {
                        let text = field(part, &at, "refusal").required_str()?;
                        blocks.extend(text_block(text, None));
                    }
                    other => {
                        return Err(TranslateError::malformed(format!(
                            "{at}.type: must be text or refusal, not {}",
                            shown(other)
                        )))
                    }
                }
            }
        }
        Some(other) => {
            return Err(TranslateError::malformed(format!(
                "{}: must be a string or an array of content parts, not {}",
                content.path(),
                type_name(other)
            )))
        }
    }
    if let Some(refusal) = field(message, at, "refusal").str()? {
        blocks.extend(text_block(refusal, None));
    }
    for (at, call) in field(message, at, "tool_calls").objects()? {
        let kind = field(call, &at, "type").str()?.unwrap_or("function");
        if kind != "function" {
            return Err(TranslateError::unsupported(format!(
                "{at}.type: {} tool calls are not supported by this backend",
                shown(kind)
            )));
        }
        let id = field(call, &at, "id").required_str()?;
        let function_at = format!("{at}.function");
        let function = field(call, &at, "function").required_object()?;
        let name = field(function, &function_at, "name").required_str()?;
        let arguments = field(function, &function_at, "arguments")
            .str()?
            .unwrap_or("");
        blocks.push(json!({
            "type": "tool_use",
            "id": id,
            "name": name,
            "input": arguments_object(arguments),
        }));
    }
    Ok(blocks)
}

/// A tool call's `arguments` (a JSON string) as the object Anthropic's `input` must be. Models
/// sometimes emit invalid JSON; that, and anything but an object, becomes `{}`.
pub(super) fn arguments_object(arguments: &str) -> Value {
    match serde_json::from_str::<Value>(arguments) {
        Ok(Value::Object(input)) => Value::Object(input),
        _ => json!({}),
    }
}

fn tool_result(message: &Object, at: &str) -> Result<Value, TranslateError> {
    let id = field(message, at, "tool_call_id").required_str()?;
    let mut result = json!({"type": "tool_result", "tool_use_id": id});
    match field(message, at, "content").value {
        Some(Value::String(text)) if !text.is_empty() => result["content"] = json!(text),
        Some(Value::String(_)) | None => {}
        Some(_) => {
            let blocks = text_parts(message, at, TextPartsOf::Tool)?;
            if !blocks.is_empty() {
                result["content"] = Value::Array(blocks);
            }
        }
    }
    Ok(result)
}

/// One `function` tool of a Chat Completions request.
pub(super) struct FunctionTool<'a> {
    pub(super) tool: &'a Object,
    pub(super) name: &'a str,
    pub(super) description: Option<&'a str>,
    pub(super) parameters: Option<&'a Object>,
}

/// The request's `tools`, each a `function` tool (any other type is refused).
pub(super) fn function_tools(root: &Object) -> Result<Vec<FunctionTool<'_>>, TranslateError> {
    let mut tools = Vec::new();
    for (at, tool) in field(root, "", "tools").objects()? {
        let kind = field(tool, &at, "type").str()?.unwrap_or("function");
        if kind != "function" {
            return Err(TranslateError::unsupported(format!(
                "{at}.type: {} tools are not supported by this backend",
                shown(kind)
            )));
        }
        let function_at = format!("{at}.function");
        let function = field(tool, &at, "function").required_object()?;
        tools.push(FunctionTool {
            tool,
            name: field(function, &function_at, "name").required_str()?,
            description: field(function, &function_at, "description").str()?,
            parameters: field(function, &function_at, "parameters").object()?,
        });
    }
    Ok(tools)
}

fn openai_tools(root: &Object) -> Result<Vec<Value>, TranslateError> {
    let mut tools = Vec::new();
    for f in function_tools(root)? {
        let mut out = Builder::new();
        out.set("name", f.name);
        out.set_opt("description", f.description);
        // Anthropic requires a schema; OpenAI's default is a function without parameters.
        let schema = f.parameters.map_or_else(
            || json!({"type": "object", "properties": {}}),
            |schema| Value::Object(schema.clone()),
        );
        out.set("input_schema", schema);
        if let Some(cache) = f.tool.get("cache_control").filter(|c| c.is_object()) {
            out.set("cache_control", cache.clone());
        }
        tools.push(out.build());
    }
    Ok(tools)
}

pub(super) fn openai_tool_choice(choice: Field<'_, '_>) -> Result<Option<Value>, TranslateError> {
    match choice.value {
        None => Ok(None),
        Some(Value::String(mode)) => match mode.as_str() {
            "auto" => Ok(Some(json!({"type": "auto"}))),
            // Anthropic's `none` keeps the tools defined (a history with tool calls needs them)
            // while forbidding new calls.
            "none" => Ok(Some(json!({"type": "none"}))),
            "required" => Ok(Some(json!({"type": "any"}))),
            other => Err(TranslateError::malformed(format!(
                "tool_choice: must be auto, none, required or a function, not {}",
                shown(other)
            ))),
        },
        Some(Value::Object(named)) => {
            let kind = field(named, "tool_choice", "type")
                .str()?
                .unwrap_or("function");
            if kind != "function" {
                return Err(TranslateError::unsupported(format!(
                    "tool_choice.type: {} is not supported by this backend",
                    shown(kind)
                )));
            }
            let function = field(named, "tool_choice", "function").required_object()?;
            let name = field(function, "tool_choice.function", "name").required_str()?;
            Ok(Some(json!({"type": "tool", "name": name})))
        }
        Some(other) => Err(TranslateError::malformed(format!(
            "tool_choice: must be a string or an object, not {}",
            type_name(other)
        ))),
    }
}

// ---------------------------------------------------------------------------------------------
// Anthropic Messages → OpenAI Chat Completions
// ---------------------------------------------------------------------------------------------

/// Translates a Messages request into a Chat Completions request for `opts.model`.
pub fn anthropic_to_openai_request(
    body: &[u8],
    opts: &RequestOptions<'_>,
) -> Result<Vec<u8>, TranslateError> {
    if let Some(out) = super::messages_request::anthropic_to_openai_typed(body, opts) {
        return Ok(out);
    }
    anthropic_to_openai(&parse_object(body)?, opts)
}

/// [`anthropic_to_openai_request`] of a body already parsed.
pub(super) fn anthropic_to_openai(
    root: &Object,
    opts: &RequestOptions<'_>,
) -> Result<Vec<u8>, TranslateError> {
    for key in ["mcp_servers", "container"] {
        if field(root, "", key).value.is_some() {
            return Err(TranslateError::unsupported(format!(
                "{key}: not supported by this backend"
            )));
        }
    }

    let mut messages: Vec<Value> = Vec::new();
    let system = field(root, "", "system");
    let system_text = match system.value {
        None => None,
        Some(Value::String(text)) => Some(text.clone()),
        Some(Value::Array(_)) => {
            let mut texts = Vec::new();
            for (at, block) in system.objects()? {
                match field(block, &at, "type").required_str()? {
                    "text" => texts.push(field(block, &at, "text").required_str()?),
                    other => {
                        return Err(TranslateError::malformed(format!(
                            "{at}.type: must be text, not {}",
                            shown(other)
                        )))
                    }
                }
            }
            // Compatible providers do not all take content parts in a system message; the
            // blocks become paragraphs of one.
            Some(texts.join("\n\n"))
        }
        Some(other) => {
            return Err(TranslateError::malformed(format!(
                "system: must be a string or an array of text blocks, not {}",
                type_name(other)
            )))
        }
    };
    if let Some(text) = system_text.filter(|text| !text.is_empty()) {
        messages.push(json!({"role": "system", "content": text}));
    }

    let messages_field = field(root, "", "messages");
    messages_field.required_array()?;
    for (at, message) in messages_field.objects()? {
        match field(message, &at, "role").required_str()? {
            "user" => user_messages(message, &at, &mut messages)?,
            "assistant" => messages.extend(assistant_message(message, &at)?),
            other => {
                return Err(TranslateError::malformed(format!(
                    "{at}.role: must be user or assistant, not {}",
                    shown(other)
                )))
            }
        }
    }

    let mut out = Builder::new();
    out.set("model", opts.model);
    out.set("messages", messages);
    if let Some(cap) = field(root, "", "max_tokens").u64()? {
        let key = match opts.max_tokens_field {
            MaxTokensField::MaxCompletionTokens => "max_completion_tokens",
            MaxTokensField::MaxTokens => "max_tokens",
        };
        out.set(key, cap);
    }
    out.set_opt(
        "temperature",
        field(root, "", "temperature").f64()?.and_then(number),
    );
    out.set_opt("top_p", field(root, "", "top_p").f64()?.and_then(number));
    let stop = field(root, "", "stop_sequences");
    if let Some(sequences) = stop.array()? {
        let mut out_stop = Vec::new();
        for (i, sequence) in sequences.iter().enumerate() {
            match sequence {
                Value::String(s) => out_stop.push(s.clone()),
                other => {
                    return Err(TranslateError::malformed(format!(
                        "stop_sequences[{i}]: must be a string, not {}",
                        type_name(other)
                    )))
                }
            }
        }
        if !out_stop.is_empty() {
            out.set("stop", out_stop);
        }
    }

    let tools = anthropic_tools(root)?;
    if !tools.is_empty() {
        out.set("tools", tools);
        if let Some(choice) = field(root, "", "tool_choice").object()? {
            let kind = field(choice, "tool_choice", "type").required_str()?;
            let mapped = match kind {
                "auto" => json!("auto"),
                "any" => json!("required"),
                "none" => json!("none"),
                "tool" => {
                    let name = field(choice, "tool_choice", "name").required_str()?;
                    json!({"type": "function", "function": {"name": name}})
                }
                other => {
                    return Err(TranslateError::malformed(format!(
                        "tool_choice.type: must be auto, any, tool or none, not {}",
                        shown(other)
                    )))
                }
            };
            out.set("tool_choice", mapped);
            if field(choice, "tool_choice", "disable_parallel_tool_use").bool()? == Some(true)
                && kind != "none"
            {
                out.set("parallel_tool_calls", false);
            }
        }
    }

    if field(root, "", "stream").bool()? == Some(true) {
        out.set("stream", true);
        // The Anthropic client always gets usage at the end of a stream.
        out.set("stream_options", json!({"include_usage": true}));
    }
    if let Some(metadata) = field(root, "", "metadata").object()? {
        out.set_opt("user", field(metadata, "metadata", "user_id").str()?);
    }
    if let Some(thinking) = field(root, "", "thinking").object()? {
        let kind = field(thinking, "thinking", "type").required_str()?;
        let budget = field(thinking, "thinking", "budget_tokens").u64()?;
        if kind == "enabled" && opts.reasoning {
            out.set_opt("reasoning_effort", budget.map(effort_for_budget));
        }
    }
    Ok(out.into_bytes())
}

/// An Anthropic user turn as OpenAI messages: its tool results first, each a `tool` message
/// (OpenAI wants them right after the assistant's calls), then the rest as one user message.
/// Images inside tool results, which a `tool` message cannot hold, move to that user message.
fn user_messages(message: &Object, at: &str, out: &mut Vec<Value>) -> Result<(), TranslateError> {
    let content = field(message, at, "content");
    let blocks = match content.value {
        Some(Value::String(text)) => {
            if !text.is_empty() {
                out.push(json!({"role": "user", "content": text}));
            }
            return Ok(());
        }
        Some(Value::Array(_)) => content.objects()?,
        other => {
            return Err(TranslateError::malformed(format!(
                "{}: must be a string or an array of content blocks, not {}",
                content.path(),
                other.map_or("absent", type_name)
            )))
        }
    };
    let mut parts: Vec<Value> = Vec::new();
    for (at, block) in blocks {
        match field(block, &at, "type").required_str()? {
            "text" => {
                let text = field(block, &at, "text").required_str()?;
                if !text.is_empty() {
                    parts.push(json!({"type": "text", "text": text}));
                }
            }
            "image" => parts.push(image_part(block, &at)?),
            "document" => parts.push(document_part(block, &at)?),
            "tool_result" => {
                let id = field(block, &at, "tool_use_id").required_str()?;
                let content = tool_result_content(block, &at, &mut parts)?;
                out.push(json!({"role": "tool", "tool_call_id": id, "content": content}));
            }
            other => {
                return Err(TranslateError::unsupported(format!(
                    "{at}.type: {} blocks are not supported by this backend",
                    shown(other)
                )))
            }
        }
    }
    match parts.as_slice() {
        [] => {}
        [only] if only["type"] == "text" => {
            out.push(json!({"role": "user", "content": only["text"].clone()}));
        }
        _ => out.push(json!({"role": "user", "content": parts})),
    }
    Ok(())
}

/// A tool result's content as a `tool` message's: one string, or text parts. Its images go to
/// `images` (the user message that follows).
fn tool_result_content(
    block: &Object,
    at: &str,
    images: &mut Vec<Value>,
) -> Result<Value, TranslateError> {
    let content = field(block, at, "content");
    let texts = match content.value {
        None => return Ok(json!("")),
        Some(Value::String(text)) => return Ok(json!(text)),
        Some(Value::Array(_)) => {
            let mut texts = Vec::new();
            for (at, inner) in content.objects()? {
                match field(inner, &at, "type").required_str()? {
                    "text" => {
                        let text = field(inner, &at, "text").required_str()?;
                        texts.push(json!({"type": "text", "text": text}));
                    }
                    "image" => images.push(image_part(inner, &at)?),
                    other => {
                        return Err(TranslateError::unsupported(format!(
                        "{at}.type: {} blocks in tool results are not supported by this backend",
                        shown(other)
                    )))
                    }
                }
            }
            texts
        }
        Some(other) => {
            return Err(TranslateError::malformed(format!(
                "{}: must be a string or an array of content blocks, not {}",
                content.path(),
                type_name(other)
            )))
        }
    };
    Ok(match texts.as_slice() {
        [] => json!(""),
        [only] => only["text"].clone(),
        _ => Value::Array(texts),
    })
}

fn image_part(block: &Object, at: &str) -> Result<Value, TranslateError> {
    let source_at = format!("{at}.source");
    let source = field(block, at, "source").required_object()?;
    let url = match field(source, &source_at, "type").required_str()? {
        "base64" => {
            let media_type = field(source, &source_at, "media_type").required_str()?;
            let data = field(source, &source_at, "data").required_str()?;
            format!("data:{media_type};base64,{data}")
        }
        "url" => field(source, &source_at, "url").required_str()?.to_owned(),
        other => {
            return Err(TranslateError::unsupported(format!(
                "{source_at}.type: {} image sources are not supported by this backend",
                shown(other)
            )))
        }
    };
    Ok(json!({"type": "image_url", "image_url": {"url": url}}))
}

fn document_part(block: &Object, at: &str) -> Result<Value, TranslateError> {
    let source_at = format!("{at}.source");
    let source = field(block, at, "source").required_object()?;
    match field(source, &source_at, "type").required_str()? {
        "base64" => {
            let media_type = field(source, &source_at, "media_type").required_str()?;
            let data = field(source, &source_at, "data").required_str()?;
            let name = field(block, at, "title").str()?.unwrap_or("document.pdf");
            Ok(json!({
                "type": "file",
                "file": {"filename": name, "file_data": format!("data:{media_type};base64,{data}")},
            }))
        }
        "text" => {
            let data = field(source, &source_at, "data").required_str()?;
            Ok(json!({"type": "text", "text": data}))
        }
        other => Err(TranslateError::unsupported(format!(
            "{source_at}.type: {} document sources are not supported by this backend",
            shown(other)
        ))),
    }
}

/// An Anthropic assistant turn as one OpenAI assistant message: its texts joined, its tool
/// uses as `tool_calls`. Thinking blocks are dropped: Chat Completions has no way to send
/// reasoning back. `None` when nothing is left.
fn assistant_message(message: &Object, at: &str) -> Result<Option<Value>, TranslateError> {
    let content = field(message, at, "content");
    let mut text = String::new();
    let mut calls = Vec::new();
    match content.value {
        Some(Value::String(s)) => text.push_str(s),
        Some(Value::Array(_)) => {
            for (at, block) in content.objects()? {
                match field(block, &at, "type").required_str()? {
                    "text" => text.push_str(field(block, &at, "text").required_str()?),
                    "tool_use" => {
                        let id = field(block, &at, "id").required_str()?;
                        let name = field(block, &at, "name").required_str()?;
                        let input = field(block, &at, "input").value.cloned();
                        let arguments = input.unwrap_or_else(|| json!({})).to_string();
                        calls.push(json!({
                            "id": id,
                            "type": "function",
                            "function": {"name": name, "arguments": arguments},
                        }));
                    }
                    "thinking" | "redacted_thinking" => {}
                    other => {
                        return Err(TranslateError::unsupported(format!(
                            "{at}.type: {} blocks are not supported by this backend",
                            shown(other)
                        )))
                    }
                }
            }
        }
        other => {
            return Err(TranslateError::malformed(format!(
                "{}: must be a string or an array of content blocks, not {}",
                content.path(),
                other.map_or("absent", type_name)
            )))
        }
    }
    if text.is_empty() && calls.is_empty() {
        return Ok(None);
    }
    let mut out = json!({"role": "assistant", "content": if text.is_empty() { Value::Null } else { json!(text) }});
    if !calls.is_empty() {
        out["tool_calls"] = Value::Array(calls);
    }
    Ok(Some(out))
}

fn anthropic_tools(root: &Object) -> Result<Vec<Value>, TranslateError> {
    let mut tools = Vec::new();
    for (at, tool) in field(root, "", "tools").objects()? {
        let kind = field(tool, &at, "type").str()?.unwrap_or("custom");
        if kind != "custom" {
            return Err(TranslateError::unsupported(format!(
                "{at}.type: the server tool {} is not supported by this backend",
                shown(kind)
            )));
        }
        let name = field(tool, &at, "name").required_str()?;
        let mut function = Builder::new();
        function.set("name", name);
        function.set_opt("description", field(tool, &at, "description").str()?);
        let schema = field(tool, &at, "input_schema").required_object()?;
        function.set("parameters", Value::Object(schema.clone()));
        tools.push(json!({"type": "function", "function": function.build()}));
    }
    Ok(tools)
}
