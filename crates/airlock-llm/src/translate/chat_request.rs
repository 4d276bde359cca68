//! A Chat Completions request translated to Anthropic Messages from a typed reading
//! ([`crate::json`]), written through typed structs: no `Value` tree for the client's body or
//! for the backend's, but for the few fields that are free-form JSON (a tool's `parameters`, a
//! call's `arguments`, `cache_control`, `thinking`, `tool_choice`, `stop`).
//!
//! It covers what clients send most: text in every role, tool definitions, tool calls and tool
//! results, and every top-level field the translation maps. Anything else (images, files,
//! audio, `thinking_blocks`, a field the translation refuses, a value of the wrong type) makes
//! it give up, and [`super::request::openai_to_anthropic`] reads the body as a `Value`: that
//! either translates it or names the field at fault. Where this reading succeeds, it writes the
//! same bytes as the `Value` translation (keys in the same sorted order), which
//! [`super::fuzzing::fuzz_translate`] checks for every input.

use std::borrow::Cow;

use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;
use serde_json::{json, Value};

use super::json::Field;
use super::request::{arguments_object, openai_tool_choice, stop_sequences};
use super::response::{ContentIn, PartIn, ToolCallIn};
use super::{budget_for_effort, RequestOptions};
use crate::json::{json_object, Checked, Text};

json_object! {
    /// The fields of a Chat Completions request the translation reads.
    struct ChatRequest<'de> {
        messages: Vec<Message<'de>> = "messages",
        max_completion_tokens: u64 = "max_completion_tokens",
        max_tokens: u64 = "max_tokens",
        tools: Vec<Tool<'de>> = "tools",
        tool_choice: Value = "tool_choice",
        parallel_tool_calls: bool = "parallel_tool_calls",
        thinking: Value = "thinking",
        reasoning_effort: Text<'de> = "reasoning_effort",
        temperature: f64 = "temperature",
        top_p: f64 = "top_p",
        stop: Value = "stop",
        stream: bool = "stream",
        user: Text<'de> = "user",
        safety_identifier: Text<'de> = "safety_identifier",
        // What the translation may refuse: present (but `n: 1`), the `Value` reading decides.
        n: u64 = "n",
        audio: Checked = "audio",
        modalities: Checked = "modalities",
        response_format: Checked = "response_format",
        functions: Checked = "functions",
        function_call: Checked = "function_call",
        web_search_options: Checked = "web_search_options",
    }
}

json_object! {
    /// A message of any role; which fields count depends on the role.
    struct Message<'de> {
        role: Text<'de> = "role",
        content: ContentIn<'de> = "content",
        refusal: Text<'de> = "refusal",
        tool_calls: Vec<ToolCallIn<'de>> = "tool_calls",
        tool_call_id: Text<'de> = "tool_call_id",
        thinking_blocks: Checked = "thinking_blocks",
    }
}

json_object! {
    struct Tool<'de> {
        kind: Text<'de> = "type",
        function: ToolFunction<'de> = "function",
        cache_control: Value = "cache_control",
    }
}

json_object! {
    struct ToolFunction<'de> {
        name: Text<'de> = "name",
        description: Text<'de> = "description",
        parameters: Value = "parameters",
    }
}

/// The Anthropic request, its fields in the order a `Value` map writes them (sorted).
#[derive(Serialize)]
struct MessagesRequest<'a> {
    max_tokens: u64,
    messages: Vec<Turn<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<Metadata<'a>>,
    model: &'a str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    stop_sequences: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    system: Option<System<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    thinking: Option<Cow<'a, Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tools: Option<Vec<ToolOut<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
}

#[derive(Serialize)]
struct Metadata<'a> {
    user_id: &'a str,
}

#[derive(Serialize)]
struct Turn<'a> {
    content: Vec<Block<'a>>,
    role: &'static str,
}

#[derive(Serialize)]
#[serde(untagged)]
enum System<'a> {
    Text(&'a str),
    Blocks(Vec<Block<'a>>),
}

#[derive(Serialize)]
struct ToolOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    cache_control: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    input_schema: Cow<'a, Value>,
    name: &'a str,
}

/// A content block of the Anthropic request.
enum Block<'a> {
    Text {
        text: &'a str,
        cache_control: Option<&'a Value>,
    },
    ToolUse {
        id: &'a str,
        name: &'a str,
        input: Value,
    },
    ToolResult {
        tool_use_id: &'a str,
        content: Option<ResultContent<'a>>,
    },
}

#[derive(Serialize)]
#[serde(untagged)]
enum ResultContent<'a> {
    Text(&'a str),
    Blocks(Vec<Block<'a>>),
}

impl Serialize for Block<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        match self {
            Block::Text {
                text,
                cache_control,
            } => {
                if let Some(cache) = cache_control {
                    map.serialize_entry("cache_control", cache)?;
                }
                map.serialize_entry("text", text)?;
                map.serialize_entry("type", "text")?;
            }
            Block::ToolUse { id, name, input } => {
                map.serialize_entry("id", id)?;
                map.serialize_entry("input", input)?;
                map.serialize_entry("name", name)?;
                map.serialize_entry("type", "tool_use")?;
            }
            Block::ToolResult {
                tool_use_id,
                content,
            } => {
                if let Some(content) = content {
                    map.serialize_entry("content", content)?;
                }
                map.serialize_entry("tool_use_id", tool_use_id)?;
                map.serialize_entry("type", "tool_result")?;
            }
        }
        map.end()
    }
}

/// A text block, or nothing for empty text (Anthropic refuses empty text blocks).
fn text_block<'a>(text: &'a str, cache_control: Option<&'a Value>) -> Option<Block<'a>> {
    (!text.is_empty()).then(|| Block::Text {
        text,
        cache_control: cache_control.filter(|c| c.is_object()),
    })
}

/// Which parts a message's content may have here: text always, refusals in assistant turns.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Parts {
    Text,
    TextOrRefusal,
}

/// The blocks of a message's `content`; `None` for a part this reading leaves to the `Value`
/// one (an image, a file, audio, anything unknown or incomplete).
fn content_blocks<'a>(content: Option<&'a ContentIn<'_>>, parts: Parts) -> Option<Vec<Block<'a>>> {
    let mut blocks = Vec::new();
    match content {
        None => {}
        Some(ContentIn::Text(text)) => blocks.extend(text_block(text, None)),
        Some(ContentIn::Parts(list)) => {
            for part in list {
                blocks.extend(part_block(part, parts)?);
            }
        }
    }
    Some(blocks)
}

fn part_block<'a>(part: &'a PartIn<'_>, parts: Parts) -> Option<Option<Block<'a>>> {
    match part.kind.as_deref()? {
        "text" => Some(text_block(
            part.text.as_deref()?,
            part.cache_control.as_ref(),
        )),
        "refusal" if parts == Parts::TextOrRefusal => {
            Some(text_block(part.refusal.as_deref()?, None))
        }
        _ => None,
    }
}

fn assistant_blocks<'a>(message: &'a Message<'_>) -> Option<Vec<Block<'a>>> {
    let mut blocks = content_blocks(message.content.as_ref(), Parts::TextOrRefusal)?;
    if let Some(refusal) = &message.refusal {
        blocks.extend(text_block(refusal, None));
    }
    for call in message.tool_calls.iter().flatten() {
        if call.kind.as_deref().is_some_and(|kind| kind != "function") {
            return None;
        }
        let function = call.function.as_ref()?;
        blocks.push(Block::ToolUse {
            id: call.id.as_deref()?,
            name: function.name.as_deref()?,
            input: arguments_object(function.arguments.as_deref().unwrap_or("")),
        });
    }
    Some(blocks)
}

fn tool_result<'a>(message: &'a Message<'_>) -> Option<Block<'a>> {
    let content = match &message.content {
        Some(ContentIn::Text(text)) if !text.is_empty() => Some(ResultContent::Text(text)),
        Some(ContentIn::Text(_)) | None => None,
        Some(parts) => {
            let blocks = content_blocks(Some(parts), Parts::Text)?;
            (!blocks.is_empty()).then_some(ResultContent::Blocks(blocks))
        }
    };
    Some(Block::ToolResult {
        tool_use_id: message.tool_call_id.as_deref()?,
        content,
    })
}

/// Appends blocks to the last turn when it has the same role, else starts a turn.
fn push<'a>(turns: &mut Vec<Turn<'a>>, role: &'static str, blocks: Vec<Block<'a>>) {
    if blocks.is_empty() {
        return;
    }
    match turns.last_mut() {
        Some(last) if last.role == role => last.content.extend(blocks),
        _ => turns.push(Turn {
            content: blocks,
            role,
        }),
    }
}

fn tools<'a>(request: &'a ChatRequest<'_>) -> Option<Vec<ToolOut<'a>>> {
    let mut out = Vec::new();
    for tool in request.tools.iter().flatten() {
        if tool.kind.as_deref().is_some_and(|kind| kind != "function") {
            return None;
        }
        let function = tool.function.as_ref()?;
        // Anthropic requires a schema; OpenAI's default is a function without parameters.
        let input_schema = match &function.parameters {
            None => Cow::Owned(json!({"type": "object", "properties": {}})),
            Some(schema) if schema.is_object() => Cow::Borrowed(schema),
            Some(_) => return None,
        };
        out.push(ToolOut {
            cache_control: tool.cache_control.as_ref().filter(|c| c.is_object()),
            description: function.description.as_deref(),
            input_schema,
            name: function.name.as_deref()?,
        });
    }
    Some(out)
}

/// The Anthropic request for `body`, or `None` when this reading leaves it to the `Value` one.
pub(super) fn openai_to_anthropic_typed(body: &[u8], opts: &RequestOptions<'_>) -> Option<Vec<u8>> {
    let request: ChatRequest<'_> = serde_json::from_slice(body).ok()?;
    // What `refuse_unsupported_openai` looks at.
    if request.n.is_some_and(|n| n > 1)
        || request.audio.is_some()
        || request.modalities.is_some()
        || request.response_format.is_some()
        || request.functions.is_some()
        || request.function_call.is_some()
        || request.web_search_options.is_some()
    {
        return None;
    }

    let mut system = Vec::new();
    let mut turns = Vec::new();
    for message in request.messages.as_ref()? {
        if message.thinking_blocks.is_some() {
            return None;
        }
        match message.role.as_deref()? {
            "system" | "developer" => {
                system.extend(content_blocks(message.content.as_ref(), Parts::Text)?)
            }
            "user" => push(
                &mut turns,
                "user",
                content_blocks(message.content.as_ref(), Parts::Text)?,
            ),
            "assistant" => push(&mut turns, "assistant", assistant_blocks(message)?),
            "tool" => push(&mut turns, "user", vec![tool_result(message)?]),
            _ => return None,
        }
    }
    for turn in &mut turns {
        // Anthropic wants a user turn's tool results before anything else in it.
        turn.content
            .sort_by_key(|block| !matches!(block, Block::ToolResult { .. }));
    }
    let max_tokens = request
        .max_completion_tokens
        .or(request.max_tokens)
        .unwrap_or(opts.default_max_tokens);
    let system = match system.as_slice() {
        [] => None,
        [Block::Text {
            text,
            cache_control: None,
        }] => Some(System::Text(text)),
        _ => Some(System::Blocks(system)),
    };

    let tools = tools(&request)?;
    let choice =
        openai_tool_choice(Field::of("", "tool_choice", request.tool_choice.as_ref())).ok()?;
    let forced_tool = matches!(&choice, Some(c) if c["type"] == "any" || c["type"] == "tool");
    let (tools, tool_choice) = if tools.is_empty() {
        (None, None)
    } else {
        let mut choice = choice;
        if request.parallel_tool_calls == Some(false) {
            let choice = choice.get_or_insert_with(|| json!({"type": "auto"}));
            if choice["type"] != "none" {
                choice["disable_parallel_tool_use"] = Value::Bool(true);
            }
        }
        (Some(tools), choice)
    };

    let thinking = match &request.thinking {
        Some(thinking) if thinking.is_object() => Some(Cow::Borrowed(thinking)),
        Some(_) => return None,
        None => request
            .reasoning_effort
            .as_deref()
            .and_then(|effort| budget_for_effort(effort, max_tokens))
            .map(|budget| Cow::Owned(json!({"type": "enabled", "budget_tokens": budget}))),
    };
    let thinking = thinking.filter(|thinking| thinking["type"] != "disabled" && !forced_tool);
    let thinking_on = thinking.is_some();
    // A JSON number read is finite, and so is what clamping it gives.
    let temperature = request
        .temperature
        .filter(|_| !thinking_on)
        .map(|t| t.clamp(0.0, 1.0));
    let top_p = request.top_p.filter(|&p| !thinking_on || p >= 0.95);
    let stop_sequences = stop_sequences(Field::of("", "stop", request.stop.as_ref())).ok()?;
    let user = request
        .user
        .as_deref()
        .or(request.safety_identifier.as_deref());

    let out = MessagesRequest {
        max_tokens,
        messages: turns,
        metadata: user.map(|user_id| Metadata { user_id }),
        model: opts.model,
        stop_sequences,
        stream: (request.stream == Some(true)).then_some(true),
        system,
        temperature,
        thinking,
        tool_choice,
        tools,
        top_p,
    };
    serde_json::to_vec(&out).ok()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::translate::json::parse_object;
    use crate::translate::request::openai_to_anthropic;

    fn fixture(name: &str) -> Vec<u8> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/translate/request/openai_to_anthropic")
            .join(format!("{name}.in.json"));
        std::fs::read(path).unwrap()
    }

    /// What the typed reading gives for a fixture, checked against the `Value` reading.
    fn typed(name: &str) -> Option<Vec<u8>> {
        let body = fixture(name);
        let opts = RequestOptions::new("claude-x");
        let out = openai_to_anthropic_typed(&body, &opts)?;
        let by_value = openai_to_anthropic(&parse_object(&body).unwrap(), &opts).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out),
            String::from_utf8_lossy(&by_value),
            "{name}"
        );
        Some(out)
    }

    #[test]
    fn reads_text_tools_and_tool_results() {
        for name in [
            "invalid_tool_arguments",
            "role_alternation_and_empty_text",
            "stream_with_usage_and_small_cap",
            "system_developer_text_default_max_tokens",
            "tool_choice_auto_without_tools",
            "tool_choice_named",
            "tool_choice_none_keeps_tools",
            "tools_parallel_calls_and_results",
        ] {
            assert!(
                typed(name).is_some(),
                "{name} was left to the Value reading"
            );
        }
    }

    /// Every field the typed reading maps, in one body, with escapes and keys given twice.
    #[test]
    fn every_mapped_field_as_the_value_reading_writes_it() {
        let opts = RequestOptions::new("claude-x");
        let bodies = [
            r#"{"model":"gpt","max_tokens":9,"max_tokens":700,"temperature":1.7,"top_p":0.5,
               "stop":["\n\n"," ","END"],"stream":true,"user":"u-1","safety_identifier":"s",
               "n":1,"audio":null,"parallel_tool_calls":false,"seed":7,"logit_bias":{"1":2},
               "messages":[
                 {"role":"developer","content":[{"type":"text","text":"be \"brief\"","cache_control":{"type":"ephemeral"}}]},
                 {"role":"user","name":"x","content":[{"type":"text","text":""},{"type":"text","text":"caf\u00e9"}]},
                 {"role":"assistant","content":[{"type":"refusal","refusal":"no"},{"type":"text","text":"ok","cache_control":{"type":"ephemeral"}}],
                  "refusal":"also no","tool_calls":[{"id":"c1","function":{"name":"f","arguments":"{\"b\":1,\"a\":[2]}"}}]},
                 {"role":"tool","tool_call_id":"c1","content":[{"type":"text","text":"r1"},{"type":"text","text":""}]},
                 {"role":"tool","tool_call_id":"c2","content":[]},
                 {"role":"user","content":"next"},
                 {"role":"system","content":"late system"}],
               "tools":[{"type":"function","cache_control":{"type":"ephemeral"},"function":{"name":"f","description":"d","parameters":{"type":"object","properties":{"z":{},"a":{}}}}},
                        {"function":{"name":"g"},"cache_control":"not an object"}],
               "tool_choice":"required"}"#,
            r#"{"messages":[{"role":"user","content":"hi"}],"thinking":{"type":"enabled","budget_tokens":2048},
               "temperature":0.2,"top_p":0.9,"max_completion_tokens":4096,"stop":"x","safety_identifier":"s-2"}"#,
            r#"{"messages":[{"role":"user","content":"hi"}],"reasoning_effort":"medium","max_tokens":8000,
               "tools":[{"type":"function","function":{"name":"f"}}],"tool_choice":{"type":"function","function":{"name":"f"}}}"#,
            r#"{"messages":[{"role":"user","content":"hi"}],"reasoning_effort":"low","max_tokens":8000,
               "tools":[{"type":"function","function":{"name":"f"}}],"tool_choice":"none","parallel_tool_calls":false,
               "thinking":null,"temperature":1,"top_p":0.97}"#,
            r#"{"messages":[],"thinking":{"type":"disabled"}}"#,
        ];
        for body in bodies {
            let typed = openai_to_anthropic_typed(body.as_bytes(), &opts)
                .unwrap_or_else(|| panic!("left to the Value reading: {body}"));
            let by_value =
                openai_to_anthropic(&parse_object(body.as_bytes()).unwrap(), &opts).unwrap();
            assert_eq!(
                String::from_utf8_lossy(&typed),
                String::from_utf8_lossy(&by_value),
                "{body}"
            );
        }
    }

    #[test]
    fn leaves_the_rest_to_the_value_reading() {
        for name in [
            // Images, files, audio and thinking blocks.
            "cache_control_and_string_image_url",
            "images_and_pdf",
            "audio_input",
            "thinking_signatures_round_trip",
            // What is refused or malformed: the `Value` reading names the field.
            "json_schema_response_format",
            "messages_not_an_array",
            "n_greater_than_one",
            "negative_max_tokens",
            "truncated_body",
            "unknown_role",
        ] {
            assert!(typed(name).is_none(), "{name} was read typed");
        }
    }
}
