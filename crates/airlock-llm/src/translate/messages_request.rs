//! An Anthropic Messages request translated to Chat Completions from a typed reading
//! ([`crate::json`]), written through typed structs: no `Value` tree for the client's body or for
//! the backend's, but for the free-form JSON (a tool's `input_schema`, a call's `input`).
//!
//! It covers what agents send most: a system prompt, text, tool definitions, tool uses, tool
//! results of text, thinking blocks (dropped, as the `Value` translation drops them) and every
//! top-level field the translation maps. Anything else (images, documents, a tool result with
//! an image, server tools, a field the translation refuses, a value of the wrong type) makes it
//! give up, and [`super::request::anthropic_to_openai`] reads the body as a `Value`: that either
//! translates it or names the field at fault. Where this reading succeeds, it writes the same
//! bytes as the `Value` translation (keys in the same sorted order), which
//! [`super::fuzzing::fuzz_translate`] checks for every input.

use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;
use serde_json::Value;

use super::{effort_for_budget, MaxTokensField, RequestOptions};
use crate::json::{json_object, Checked, StrOr, Text};

json_object! {
    /// The fields of a Messages request the translation reads.
    struct MessagesRequest<'de> {
        system: StrOr<'de, SystemBlock<'de>> = "system",
        messages: Vec<Message<'de>> = "messages",
        max_tokens: u64 = "max_tokens",
        temperature: f64 = "temperature",
        top_p: f64 = "top_p",
        stop_sequences: Vec<Text<'de>> = "stop_sequences",
        tools: Vec<Tool<'de>> = "tools",
        tool_choice: ToolChoice<'de> = "tool_choice",
        stream: bool = "stream",
        metadata: Metadata<'de> = "metadata",
        thinking: Thinking<'de> = "thinking",
        // Refused by the translation: present, the `Value` reading says so.
        mcp_servers: Checked = "mcp_servers",
        container: Checked = "container",
    }
}

json_object! {
    struct SystemBlock<'de> {
        kind: Text<'de> = "type",
        text: Text<'de> = "text",
    }
}

json_object! {
    struct Message<'de> {
        role: Text<'de> = "role",
        content: StrOr<'de, Block<'de>> = "content",
    }
}

json_object! {
    /// A content block of any type; which fields count depends on the type.
    struct Block<'de> {
        kind: Text<'de> = "type",
        text: Text<'de> = "text",
        id: Text<'de> = "id",
        name: Text<'de> = "name",
        input: Value = "input",
        tool_use_id: Text<'de> = "tool_use_id",
        content: StrOr<'de, SystemBlock<'de>> = "content",
    }
}

json_object! {
    struct Tool<'de> {
        kind: Text<'de> = "type",
        name: Text<'de> = "name",
        description: Text<'de> = "description",
        input_schema: Value = "input_schema",
    }
}

json_object! {
    struct ToolChoice<'de> {
        kind: Text<'de> = "type",
        name: Text<'de> = "name",
        disable_parallel_tool_use: bool = "disable_parallel_tool_use",
    }
}

json_object! {
    struct Metadata<'de> {
        user_id: Text<'de> = "user_id",
    }
}

json_object! {
    struct Thinking<'de> {
        kind: Text<'de> = "type",
        budget_tokens: u64 = "budget_tokens",
    }
}

/// The Chat Completions request, its fields in the order a `Value` map writes them (sorted).
#[derive(Serialize)]
struct ChatRequest<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    max_completion_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u64>,
    messages: Vec<ChatMessage<'a>>,
    model: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    parallel_tool_calls: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_effort: Option<&'static str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    stop: Vec<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<StreamOptions>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<ChoiceOut<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<FunctionTool<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
}

#[derive(Serialize)]
struct StreamOptions {
    include_usage: bool,
}

#[derive(Serialize)]
struct FunctionTool<'a> {
    function: Function<'a>,
    #[serde(rename = "type")]
    kind: &'static str,
}

#[derive(Serialize)]
struct Function<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    name: &'a str,
    parameters: &'a Value,
}

enum ChoiceOut<'a> {
    Mode(&'static str),
    Function(&'a str),
}

impl Serialize for ChoiceOut<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            ChoiceOut::Mode(mode) => serializer.serialize_str(mode),
            ChoiceOut::Function(name) => {
                let mut map = serializer.serialize_map(None)?;
                map.serialize_entry("function", &Name { name })?;
                map.serialize_entry("type", "function")?;
                map.end()
            }
        }
    }
}

#[derive(Serialize)]
struct Name<'a> {
    name: &'a str,
}

/// A message of the Chat Completions request.
enum ChatMessage<'a> {
    /// A system or user message of one string.
    Text {
        role: &'static str,
        content: Text<'a>,
    },
    /// A user message of text parts.
    Parts(Vec<&'a str>),
    Tool {
        tool_call_id: &'a str,
        content: ToolContent<'a>,
    },
    Assistant {
        content: Option<String>,
        tool_calls: Vec<ToolCall<'a>>,
    },
}

enum ToolContent<'a> {
    Text(&'a str),
    Parts(Vec<&'a str>),
}

struct ToolCall<'a> {
    id: &'a str,
    name: &'a str,
    arguments: String,
}

/// `{"text": …, "type": "text"}`, a text part.
struct TextPart<'a>(&'a str);

impl Serialize for TextPart<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(2))?;
        map.serialize_entry("text", self.0)?;
        map.serialize_entry("type", "text")?;
        map.end()
    }
}

fn parts<'a>(texts: &'a [&'a str]) -> impl Iterator<Item = TextPart<'a>> + Clone + 'a {
    texts.iter().map(|text| TextPart(text))
}

impl Serialize for ChatMessage<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        match self {
            ChatMessage::Text { role, content } => {
                map.serialize_entry("content", &**content)?;
                map.serialize_entry("role", role)?;
            }
            ChatMessage::Parts(texts) => {
                map.serialize_entry("content", &Seq(parts(texts)))?;
                map.serialize_entry("role", "user")?;
            }
            ChatMessage::Tool {
                tool_call_id,
                content,
            } => {
                match content {
                    ToolContent::Text(text) => map.serialize_entry("content", text)?,
                    ToolContent::Parts(texts) => {
                        map.serialize_entry("content", &Seq(parts(texts)))?
                    }
                }
                map.serialize_entry("role", "tool")?;
                map.serialize_entry("tool_call_id", tool_call_id)?;
            }
            ChatMessage::Assistant {
                content,
                tool_calls,
            } => {
                map.serialize_entry("content", content)?;
                map.serialize_entry("role", "assistant")?;
                if !tool_calls.is_empty() {
                    map.serialize_entry("tool_calls", &Seq(tool_calls.iter()))?;
                }
            }
        }
        map.end()
    }
}

impl Serialize for ToolCall<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Call<'a> {
            arguments: &'a str,
            name: &'a str,
        }
        let mut map = serializer.serialize_map(Some(3))?;
        map.serialize_entry(
            "function",
            &Call {
                arguments: &self.arguments,
                name: self.name,
            },
        )?;
        map.serialize_entry("id", self.id)?;
        map.serialize_entry("type", "function")?;
        map.end()
    }
}

/// A sequence written from an iterator that can be cloned (walked once per write).
struct Seq<I>(I);

impl<I: Iterator + Clone> Serialize for Seq<I>
where
    I::Item: Serialize,
{
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.clone())
    }
}

/// A user turn: its tool results first, each a `tool` message, then the rest as one user
/// message. `None` for a block this reading leaves to the `Value` one.
fn user_messages<'a>(
    content: &'a StrOr<'_, Block<'_>>,
    out: &mut Vec<ChatMessage<'a>>,
) -> Option<()> {
    let blocks = match content {
        StrOr::Text(text) => {
            if !text.is_empty() {
                out.push(ChatMessage::Text {
                    role: "user",
                    content: Text(std::borrow::Cow::Borrowed(text)),
                });
            }
            return Some(());
        }
        StrOr::Parts(blocks) => blocks,
    };
    let mut texts = Vec::new();
    for block in blocks {
        match block.kind.as_deref()? {
            "text" => {
                let text = block.text.as_deref()?;
                if !text.is_empty() {
                    texts.push(text);
                }
            }
            "tool_result" => out.push(ChatMessage::Tool {
                tool_call_id: block.tool_use_id.as_deref()?,
                content: tool_result_content(block.content.as_ref())?,
            }),
            _ => return None,
        }
    }
    match texts.as_slice() {
        [] => {}
        [only] => out.push(ChatMessage::Text {
            role: "user",
            content: Text(std::borrow::Cow::Borrowed(only)),
        }),
        _ => out.push(ChatMessage::Parts(texts)),
    }
    Some(())
}

fn tool_result_content<'a>(
    content: Option<&'a StrOr<'_, SystemBlock<'_>>>,
) -> Option<ToolContent<'a>> {
    let blocks = match content {
        None => return Some(ToolContent::Text("")),
        Some(StrOr::Text(text)) => return Some(ToolContent::Text(text)),
        Some(StrOr::Parts(blocks)) => blocks,
    };
    let mut texts = Vec::new();
    for block in blocks {
        match block.kind.as_deref()? {
            "text" => texts.push(block.text.as_deref()?),
            _ => return None,
        }
    }
    Some(match texts.as_slice() {
        [] => ToolContent::Text(""),
        [only] => ToolContent::Text(only),
        _ => ToolContent::Parts(texts),
    })
}

/// An assistant turn as one assistant message (nothing when nothing is left).
fn assistant_message<'a>(content: &'a StrOr<'_, Block<'_>>) -> Option<Option<ChatMessage<'a>>> {
    let mut text = String::new();
    let mut tool_calls = Vec::new();
    match content {
        StrOr::Text(t) => text.push_str(t),
        StrOr::Parts(blocks) => {
            for block in blocks {
                match block.kind.as_deref()? {
                    "text" => text.push_str(block.text.as_deref()?),
                    "tool_use" => {
                        let id = block.id.as_deref()?;
                        let name = block.name.as_deref()?;
                        let arguments = match &block.input {
                            Some(input) => input.to_string(),
                            None => "{}".to_owned(),
                        };
                        tool_calls.push(ToolCall {
                            id,
                            name,
                            arguments,
                        });
                    }
                    "thinking" | "redacted_thinking" => {}
                    _ => return None,
                }
            }
        }
    }
    if text.is_empty() && tool_calls.is_empty() {
        return Some(None);
    }
    Some(Some(ChatMessage::Assistant {
        content: (!text.is_empty()).then_some(text),
        tool_calls,
    }))
}

/// The Chat Completions request for `body`, or `None` when this reading leaves it to the
/// `Value` one.
pub(super) fn anthropic_to_openai_typed(body: &[u8], opts: &RequestOptions<'_>) -> Option<Vec<u8>> {
    let request: MessagesRequest<'_> = serde_json::from_slice(body).ok()?;
    if request.mcp_servers.is_some() || request.container.is_some() {
        return None;
    }

    let mut messages = Vec::new();
    let system = match &request.system {
        None => None,
        Some(StrOr::Text(text)) => Some(Text(std::borrow::Cow::Borrowed(&**text))),
        Some(StrOr::Parts(blocks)) => {
            let mut texts = Vec::with_capacity(blocks.len());
            for block in blocks {
                if block.kind.as_deref()? != "text" {
                    return None;
                }
                texts.push(block.text.as_deref()?);
            }
            // Compatible providers do not all take content parts in a system message; the
            // blocks become paragraphs of one.
            Some(Text(std::borrow::Cow::Owned(texts.join("\n\n"))))
        }
    };
    if let Some(text) = system.filter(|text| !text.is_empty()) {
        messages.push(ChatMessage::Text {
            role: "system",
            content: text,
        });
    }
    for message in request.messages.as_ref()? {
        let content = message.content.as_ref()?;
        match message.role.as_deref()? {
            "user" => user_messages(content, &mut messages)?,
            "assistant" => messages.extend(assistant_message(content)?),
            _ => return None,
        }
    }

    let (max_completion_tokens, max_tokens) = match opts.max_tokens_field {
        MaxTokensField::MaxCompletionTokens => (request.max_tokens, None),
        MaxTokensField::MaxTokens => (None, request.max_tokens),
    };
    let stop = request
        .stop_sequences
        .iter()
        .flatten()
        .map(|s| &**s)
        .collect();

    let mut tools = Vec::new();
    for tool in request.tools.iter().flatten() {
        if tool.kind.as_deref().is_some_and(|kind| kind != "custom") {
            return None;
        }
        let parameters = tool.input_schema.as_ref().filter(|s| s.is_object())?;
        tools.push(FunctionTool {
            function: Function {
                description: tool.description.as_deref(),
                name: tool.name.as_deref()?,
                parameters,
            },
            kind: "function",
        });
    }
    let (mut tool_choice, mut parallel_tool_calls) = (None, None);
    if !tools.is_empty() {
        if let Some(choice) = &request.tool_choice {
            let kind = choice.kind.as_deref()?;
            tool_choice = Some(match kind {
                "auto" => ChoiceOut::Mode("auto"),
                "any" => ChoiceOut::Mode("required"),
                "none" => ChoiceOut::Mode("none"),
                "tool" => ChoiceOut::Function(choice.name.as_deref()?),
                _ => return None,
            });
            if choice.disable_parallel_tool_use == Some(true) && kind != "none" {
                parallel_tool_calls = Some(false);
            }
        }
    }

    let stream = request.stream == Some(true);
    let reasoning_effort = match &request.thinking {
        Some(thinking) => {
            let kind = thinking.kind.as_deref()?;
            if kind == "enabled" && opts.reasoning {
                thinking.budget_tokens.map(effort_for_budget)
            } else {
                None
            }
        }
        None => None,
    };

    let out = ChatRequest {
        max_completion_tokens,
        max_tokens,
        messages,
        model: opts.model,
        parallel_tool_calls,
        reasoning_effort,
        stop,
        stream: stream.then_some(true),
        // The Anthropic client always gets usage at the end of a stream.
        stream_options: stream.then_some(StreamOptions {
            include_usage: true,
        }),
        temperature: request.temperature,
        tool_choice,
        tools,
        top_p: request.top_p,
        user: request
            .metadata
            .as_ref()
            .and_then(|metadata| metadata.user_id.as_deref()),
    };
    serde_json::to_vec(&out).ok()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::translate::json::parse_object;
    use crate::translate::request::anthropic_to_openai;

    fn fixture(name: &str) -> Vec<u8> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/translate/request/anthropic_to_openai")
            .join(format!("{name}.in.json"));
        std::fs::read(path).unwrap()
    }

    /// What the typed reading gives for `body` under each option, checked against the `Value`
    /// reading; `None` when it leaves the body to that reading.
    fn typed(body: &[u8]) -> Option<Vec<u8>> {
        let mut first = None;
        for (reasoning, field) in [
            (true, MaxTokensField::MaxCompletionTokens),
            (false, MaxTokensField::MaxTokens),
        ] {
            let mut opts = RequestOptions::new("gpt-x");
            (opts.reasoning, opts.max_tokens_field) = (reasoning, field);
            let out = anthropic_to_openai_typed(body, &opts)?;
            let by_value = anthropic_to_openai(&parse_object(body).unwrap(), &opts).unwrap();
            assert_eq!(
                String::from_utf8_lossy(&out),
                String::from_utf8_lossy(&by_value),
                "{}",
                String::from_utf8_lossy(body)
            );
            first.get_or_insert(out);
        }
        first
    }

    #[test]
    fn reads_text_tools_and_tool_results() {
        for name in [
            "system_blocks_metadata_stop",
            "thinking_stream_dropped_blocks",
            "tool_choice_named",
            "tool_choice_none",
        ] {
            assert!(
                typed(&fixture(name)).is_some(),
                "{name} was left to the Value reading"
            );
        }
    }

    /// Every field the typed reading maps, with escapes and keys given twice.
    #[test]
    fn every_mapped_field_as_the_value_reading_writes_it() {
        let bodies = [
            r#"{"model":"claude","max_tokens":9,"max_tokens":700,"temperature":0.3,"top_p":0.9,
               "stop_sequences":["\n\nHuman:","END"],"stream":true,"metadata":{"user_id":"u-1","x":1},
               "thinking":{"type":"enabled","budget_tokens":9000},"top_k":5,
               "system":[{"type":"text","text":"be \"brief\"","cache_control":{"type":"ephemeral"}},{"type":"text","text":"caf\u00e9"}],
               "messages":[
                 {"role":"user","content":[{"type":"text","text":""},{"type":"text","text":"hi"},{"type":"text","text":"there"}]},
                 {"role":"assistant","content":[{"type":"thinking","thinking":"t","signature":"s"},{"type":"text","text":"ok "},
                   {"type":"tool_use","id":"t1","name":"f","input":{"b":1,"a":[2]}},{"type":"tool_use","id":"t2","name":"g","input":null},
                   {"type":"redacted_thinking","data":"d"}]},
                 {"role":"user","content":[{"type":"tool_result","tool_use_id":"t1","content":[{"type":"text","text":"r1"},{"type":"text","text":"r2"}]},
                   {"type":"tool_result","tool_use_id":"t2"},{"type":"text","text":"next","cache_control":{"type":"ephemeral"}}]},
                 {"role":"assistant","content":""},
                 {"role":"assistant","content":[{"type":"thinking","thinking":"only"}]},
                 {"role":"user","content":[{"type":"tool_result","tool_use_id":"t3","content":"plain","is_error":true},
                   {"type":"tool_result","tool_use_id":"t4","content":[{"type":"text","text":"one"}]},
                   {"type":"tool_result","tool_use_id":"t5","content":[]}]}],
               "tools":[{"name":"f","description":"d","input_schema":{"type":"object","properties":{"z":{},"a":{}}},"cache_control":{"type":"ephemeral"}},
                        {"type":"custom","name":"g","input_schema":{"type":"object"}}],
               "tool_choice":{"type":"any","disable_parallel_tool_use":true}}"#,
            r#"{"messages":[{"role":"user","content":"hi"}],"system":"sys","tool_choice":{"type":"tool","name":"f"},
               "tools":[{"name":"f","input_schema":{}}],"thinking":{"type":"disabled"},"stream":false}"#,
            r#"{"messages":[{"role":"user","content":""}],"system":"","tool_choice":{"type":"none","disable_parallel_tool_use":true},
               "tools":[{"name":"f","input_schema":{}}],"metadata":{}}"#,
            r#"{"messages":[],"system":[],"tool_choice":{"type":"auto"},"stop_sequences":[]}"#,
        ];
        for body in bodies {
            assert!(
                typed(body.as_bytes()).is_some(),
                "left to the Value reading: {body}"
            );
        }
    }

    #[test]
    fn leaves_the_rest_to_the_value_reading() {
        for name in [
            // Images and documents (also in a tool result), server tools, refusals and
            // malformed bodies.
            "images_and_documents",
            "tools_parallel_calls_and_results",
            "server_tool",
            "content_not_text",
            "not_json",
            "system_role_in_messages",
        ] {
            assert!(typed(&fixture(name)).is_none(), "{name} was read typed");
        }
        for body in [
            r#"{"messages":[{"role":"user","content":[{"type":"tool_result","tool_use_id":"t","content":[{"type":"image","source":{}}]}]}]}"#,
            r#"{"messages":[],"mcp_servers":[]}"#,
            r#"{"messages":[{"role":"user"}]}"#,
        ] {
            assert!(typed(body.as_bytes()).is_none(), "{body} was read typed");
        }
    }
}
