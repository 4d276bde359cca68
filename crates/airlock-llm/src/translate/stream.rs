//! Streams from the backend's dialect to the client's: [`StreamTranslator`] is fed the
//! upstream's SSE bytes in whatever pieces they arrive and writes the client's SSE bytes.
//!
//! Each upstream event is translated the moment its blank line arrives; nothing complete is
//! held back, so cutting the upstream body anywhere gives the same output bytes. Memory is
//! bounded: the partial event (at most [`MAX_EVENT_BYTES`]), the ids and model of the message
//! (each at most [`MAX_ID_BYTES`]), and a tool call table of at most [`MAX_TOOL_CALLS`] entries;
//! past a bound the client gets an error event and the stream ends.
//!
//! Anthropic → OpenAI:
//!
//! | upstream event | client chunks |
//! |---|---|
//! | `message_start` | a chunk with `delta: {role: "assistant", content: ""}` |
//! | `content_block_start` text / thinking | nothing (their text, if any, as a delta) |
//! | `content_block_start` tool_use | `tool_calls: [{index, id, type, function: {name, arguments: ""}}]`, `index` counting tool uses |
//! | `content_block_start` redacted_thinking | `thinking_blocks: [{type: "redacted_thinking", data}]` |
//! | `text_delta` | `content` |
//! | `input_json_delta` | `tool_calls: [{index, function: {arguments}}]` |
//! | `thinking_delta` | `reasoning_content` |
//! | `signature_delta` | `thinking_blocks: [{type: "thinking", thinking: "", signature}]` |
//! | `message_delta` | `delta: {}` with `finish_reason` |
//! | `message_stop` | the usage-only chunk (when asked for), then `data: [DONE]` |
//! | `error` | `data: {"error": {…}}`, end |
//! | `ping`, `content_block_stop`, `citations_delta`, server tool blocks | nothing |
//!
//! OpenAI → Anthropic:
//!
//! | upstream chunk | client events |
//! |---|---|
//! | the first chunk | `message_start` (usage zero: OpenAI reports it at the end) |
//! | `reasoning_content` / `reasoning` | a `thinking` block's `thinking_delta` (no signature) |
//! | `content`, `refusal` | a `text` block's `text_delta` |
//! | `tool_calls[i]` with a new `index` | the open block stopped, a `tool_use` block started (id, name) |
//! | `tool_calls[i].function.arguments` | `input_json_delta` on that call's block |
//! | `finish_reason` | the open block stopped |
//! | `usage` (the usage-only chunk) | kept for `message_delta` |
//! | `data: [DONE]` (or the end of the body after a `finish_reason`) | `message_delta` with `stop_reason` and usage, `message_stop` |
//! | `{"error": …}` | `event: error`, end |
//!
//! A block is opened on its first non-empty delta, and closed when the kind of delta changes
//! (text, thinking, another tool call), so blocks never interleave.

use serde::Serialize;
use serde_json::{json, Value};

use super::errors::{read_anthropic_error, read_openai_error, ErrorInfo};
use super::response::{finish_reason_for, stop_reason_for, Tokens};
use super::sse::SseReader;
use super::Dialect;
use crate::json::{json_object, Text};

/// The largest upstream event (its partial line and data) the translator holds: 1 MiB.
pub const MAX_EVENT_BYTES: usize = 1 << 20;
/// A message id or model name longer than this is replaced by an empty string.
pub const MAX_ID_BYTES: usize = 256;
/// The most tool calls one translated stream may carry.
pub const MAX_TOOL_CALLS: usize = 1024;

/// What the client asked of the stream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StreamOptions {
    /// The Unix time in seconds written as `created` in Chat Completions chunks.
    pub created: u64,
    /// The Chat Completions client asked for `stream_options.include_usage`: a usage-only
    /// chunk comes before `[DONE]`. (Anthropic clients always get usage.)
    pub include_usage: bool,
}

/// An error the upstream reported inside its stream (or the translator's own: a cut stream,
/// an event over the bound), in Anthropic's terms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamError {
    /// Anthropic's error type (`overloaded_error`, `rate_limit_error`, `api_error`, …).
    pub error_type: String,
    pub message: String,
}

/// Translates one streamed response. See the module documentation.
pub struct StreamTranslator {
    from: Dialect,
    /// The client's dialect: the other one, or either for a Gemini stream.
    to: Dialect,
    reader: SseReader,
    state: State,
    flags: Flags,
}

/// What the router asks of a stream, kept apart so that events can set it while the reader
/// is borrowed.
#[derive(Default)]
struct Flags {
    content_started: bool,
    error: Option<UpstreamError>,
    done: bool,
}

#[expect(
    clippy::enum_variant_names,
    reason = "each variant is named after the state type it holds"
)]
enum State {
    FromAnthropic(FromAnthropic),
    FromOpenai(FromOpenai),
    FromGemini(Box<FromGemini>),
}

impl StreamTranslator {
    /// A translator of a stream in `from` (the backend's dialect) into the other dialect.
    pub fn new(from: Dialect, opts: StreamOptions) -> Self {
        let state = match from {
            Dialect::AnthropicMessages => State::FromAnthropic(FromAnthropic::new(opts)),
            Dialect::OpenaiChat => State::FromOpenai(FromOpenai {
                typed: true,
                ..FromOpenai::default()
            }),
        };
        Self {
            from,
            to: from.other(),
            reader: SseReader::new(MAX_EVENT_BYTES),
            state,
            flags: Flags::default(),
        }
    }

    /// A translator of a Gemini stream (`streamGenerateContent?alt=sse`) into `to`, the
    /// client's dialect (see [`super::gemini`]). [`StreamTranslator::from`] reports the Chat
    /// Completions dialect, the one it goes through.
    pub fn from_gemini(to: Dialect, opts: StreamOptions) -> Self {
        let next = (to == Dialect::AnthropicMessages)
            .then(|| Box::new(StreamTranslator::new(Dialect::OpenaiChat, opts)));
        Self {
            from: Dialect::OpenaiChat,
            to,
            reader: SseReader::new(MAX_EVENT_BYTES),
            state: State::FromGemini(Box::new(FromGemini {
                created: opts.created,
                // An Anthropic client always gets usage: its translator needs the chunk.
                include_usage: opts.include_usage || next.is_some(),
                next,
                ..FromGemini::default()
            })),
            flags: Flags::default(),
        }
    }

    /// The same translator reading every event as a `Value` (for the fuzz target).
    pub(super) fn value_only(mut self) -> Self {
        match &mut self.state {
            State::FromAnthropic(state) => state.typed = false,
            State::FromOpenai(state) => state.typed = false,
            State::FromGemini(_) => {}
        }
        self
    }

    /// Reads a piece of the upstream body and appends the client's bytes for every event it
    /// completes to `out`.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        if self.flags.done {
            return;
        }
        let mut sink = Sink {
            out,
            to: self.to,
            flags: &mut self.flags,
            ending: false,
        };
        let state = &mut self.state;
        let overflow = self
            .reader
            .feed(chunk, &mut |name, data| state.event(name, data, &mut sink))
            .is_err();
        if overflow && !sink.flags.done {
            sink.fail(ErrorInfo::own(
                502,
                &format!("upstream sent an event larger than {MAX_EVENT_BYTES} bytes"),
            ));
        }
    }

    /// The upstream body ended: writes what the client still needs. A stream that ended
    /// before its last event gets an error event (and counts as an upstream error).
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if self.flags.done {
            return;
        }
        let mut sink = Sink {
            out,
            to: self.to,
            flags: &mut self.flags,
            ending: true,
        };
        let state = &mut self.state;
        self.reader
            .finish(&mut |name, data| state.event(name, data, &mut sink));
        if !sink.flags.done {
            state.end(&mut sink);
        }
        if !sink.flags.done {
            sink.fail(ErrorInfo::own(502, ENDED_EARLY));
        }
    }

    /// Whether any content (text, reasoning, a tool call) has been written for the client.
    /// Until then a router may still retry the request elsewhere.
    pub fn is_content_started(&self) -> bool {
        self.flags.content_started
    }

    /// The error the stream ended with, if it did.
    pub fn upstream_error(&self) -> Option<&UpstreamError> {
        self.flags.error.as_ref()
    }

    /// The stream failed before any content: a 200 whose first event was an error (or that
    /// ended before saying anything) is a failed attempt, not an answer.
    pub fn failed_before_content(&self) -> bool {
        self.flags.error.is_some() && !self.flags.content_started
    }

    /// The stream is over (its last event, or an error, was written); further input is ignored.
    pub fn is_done(&self) -> bool {
        self.flags.done
    }

    /// Bytes held for upstream events not yet complete.
    pub fn buffered_bytes(&self) -> usize {
        self.reader.buffered()
    }

    /// The dialect of the upstream stream.
    pub fn from(&self) -> Dialect {
        self.from
    }
}

/// Where translated events go, and the flags they set.
struct Sink<'a> {
    out: &'a mut Vec<u8>,
    to: Dialect,
    flags: &'a mut Flags,
    /// The body has ended: an event that does not parse was cut short.
    ending: bool,
}

impl Sink<'_> {
    fn openai(&mut self, chunk: &impl Serialize) {
        self.out.extend_from_slice(b"data: ");
        // Serializing these types cannot fail: string keys, no maps of other keys, no floats.
        let _ = serde_json::to_writer(&mut *self.out, chunk);
        self.out.extend_from_slice(b"\n\n");
    }

    fn anthropic(&mut self, name: &str, event: &impl Serialize) {
        self.out.extend_from_slice(b"event: ");
        self.out.extend_from_slice(name.as_bytes());
        self.out.extend_from_slice(b"\ndata: ");
        let _ = serde_json::to_writer(&mut *self.out, event);
        self.out.extend_from_slice(b"\n\n");
    }

    fn content(&mut self) {
        self.flags.content_started = true;
    }

    /// Writes the error in the client's dialect and ends the stream.
    fn fail(&mut self, info: ErrorInfo) {
        let body = info.to_json(self.to);
        match self.to {
            Dialect::OpenaiChat => self.openai(&body),
            Dialect::AnthropicMessages => self.anthropic("error", &body),
        }
        self.flags.error = Some(UpstreamError {
            error_type: info.anthropic_type,
            message: info.message,
        });
        self.flags.done = true;
    }
}

impl State {
    fn event(&mut self, name: &[u8], data: &[u8], sink: &mut Sink<'_>) {
        // Whatever follows the stream's end (or an error) is ignored.
        if sink.flags.done {
            return;
        }
        match self {
            State::FromAnthropic(state) => state.event(name, data, sink),
            State::FromOpenai(state) => state.event(data, sink),
            State::FromGemini(state) => state.event(data, sink),
        }
    }

    fn end(&mut self, sink: &mut Sink<'_>) {
        match self {
            // Anthropic's stream ends with `message_stop`, which sets `done`.
            State::FromAnthropic(_) => {}
            State::FromGemini(state) => state.end(sink),
            State::FromOpenai(state) => {
                // `[DONE]` is missing at the end of some providers' streams; a finish reason
                // is enough to know the answer is whole.
                if state.finish.is_some() {
                    state.complete(sink);
                }
            }
        }
    }
}

fn bounded(text: Option<&str>) -> String {
    text.filter(|t| t.len() <= MAX_ID_BYTES)
        .unwrap_or("")
        .to_owned()
}

fn str_at<'v>(value: &'v Value, key: &str) -> Option<&'v str> {
    value.get(key).and_then(Value::as_str)
}

fn not_json(sink: &mut Sink<'_>) {
    let message = if sink.ending {
        ENDED_EARLY
    } else {
        "upstream sent an event that is not json"
    };
    sink.fail(ErrorInfo::own(502, message));
}

const ENDED_EARLY: &str = "the upstream stream ended before its last event";

// ---------------------------------------------------------------------------------------------
// Anthropic → OpenAI
// ---------------------------------------------------------------------------------------------

#[derive(Serialize)]
struct Chunk<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: &'a [ChunkChoice<'a>],
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Value>,
}

#[derive(Serialize)]
struct ChunkChoice<'a> {
    index: u32,
    delta: Delta<'a>,
    logprobs: Option<()>,
    finish_reason: Option<&'a str>,
}

#[derive(Serialize, Default)]
struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    thinking_blocks: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<[ToolCallDelta<'a>; 1]>,
}

#[derive(Serialize)]
struct ToolCallDelta<'a> {
    index: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'a str>,
    function: FunctionDelta<'a>,
}

#[derive(Serialize)]
struct FunctionDelta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    arguments: &'a str,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Block {
    Text,
    Thinking,
    /// A tool use, with its position among the message's tool calls.
    Tool(u32),
    /// A block with no counterpart (server tool use and results).
    Other,
}

struct FromAnthropic {
    opts: StreamOptions,
    id: String,
    model: String,
    /// What every chunk starts with (`{"id":…,"choices":[`), written once per message rather
    /// than for every chunk: a stream is mostly small text deltas.
    head: Vec<u8>,
    /// Read `content_block_delta` events typed (see [`DeltaEvent`]); the fuzz target turns it
    /// off to check that the `Value` reading gives the same bytes.
    typed: bool,
    started: bool,
    tokens: Tokens,
    /// The open block: its index and kind.
    block: Option<(u64, Block)>,
    tools: u32,
    finished: bool,
}

impl FromAnthropic {
    fn new(opts: StreamOptions) -> Self {
        let mut state = Self {
            opts,
            id: String::new(),
            model: String::new(),
            head: Vec::new(),
            typed: true,
            started: false,
            tokens: Tokens::default(),
            block: None,
            tools: 0,
            finished: false,
        };
        state.write_head();
        state
    }

    /// Writes [`FromAnthropic::head`] for the current id and model: a [`Chunk`] with no
    /// choices and no usage, cut before its choices' closing `]}`.
    fn write_head(&mut self) {
        self.head.clear();
        // Serializing these types cannot fail: string keys, no maps of other keys, no floats.
        let _ = serde_json::to_writer(
            &mut self.head,
            &Chunk {
                id: &self.id,
                object: "chat.completion.chunk",
                created: self.opts.created,
                model: &self.model,
                choices: &[],
                usage: None,
            },
        );
        self.head
            .truncate(self.head.len().saturating_sub(b"]}".len()));
    }

    /// Writes the chunk of one choice: the bytes `Sink::openai` would write for the whole
    /// [`Chunk`].
    fn chunk(&self, sink: &mut Sink<'_>, delta: Delta<'_>, finish_reason: Option<&str>) {
        let choice = ChunkChoice {
            index: 0,
            delta,
            logprobs: None,
            finish_reason,
        };
        let out = &mut *sink.out;
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(&self.head);
        let _ = serde_json::to_writer(&mut *out, &choice);
        out.extend_from_slice(b"]}\n\n");
    }

    fn start(&mut self, sink: &mut Sink<'_>) {
        if !self.started {
            self.started = true;
            let delta = Delta {
                role: Some("assistant"),
                content: Some(""),
                ..Delta::default()
            };
            self.chunk(sink, delta, None);
        }
    }

    fn text(&self, sink: &mut Sink<'_>, text: &str) {
        if !text.is_empty() {
            sink.content();
            let delta = Delta {
                content: Some(text),
                ..Delta::default()
            };
            self.chunk(sink, delta, None);
        }
    }

    fn thinking(&self, sink: &mut Sink<'_>, text: &str) {
        if !text.is_empty() {
            sink.content();
            let delta = Delta {
                reasoning_content: Some(text),
                ..Delta::default()
            };
            self.chunk(sink, delta, None);
        }
    }

    fn thinking_block(&self, sink: &mut Sink<'_>, block: Value) {
        sink.content();
        let delta = Delta {
            thinking_blocks: Some(Value::Array(vec![block])),
            ..Delta::default()
        };
        self.chunk(sink, delta, None);
    }

    fn tool_delta(&self, sink: &mut Sink<'_>, call: ToolCallDelta<'_>) {
        sink.content();
        let delta = Delta {
            tool_calls: Some([call]),
            ..Delta::default()
        };
        self.chunk(sink, delta, None);
    }

    fn event(&mut self, name: &[u8], data: &[u8], sink: &mut Sink<'_>) {
        if self.typed {
            if let Ok(event) = serde_json::from_slice::<DeltaEvent<'_>>(data) {
                if event.kind.as_deref() == Some("content_block_delta") {
                    self.start(sink);
                    let delta = event.delta.unwrap_or_default();
                    return self.delta(sink, event.index.unwrap_or(0), &delta);
                }
            }
        }
        let Ok(event) = serde_json::from_slice::<Value>(data) else {
            return not_json(sink);
        };
        // The data's `type` names the event; the `event:` line is the fallback.
        let kind = match str_at(&event, "type") {
            Some(kind) => kind,
            None => std::str::from_utf8(name).unwrap_or(""),
        };
        match kind {
            "message_start" => {
                let message = event.get("message").unwrap_or(&Value::Null);
                self.id = bounded(str_at(message, "id"));
                self.model = bounded(str_at(message, "model"));
                self.write_head();
                if let Some(usage) = message.get("usage") {
                    self.tokens.update_from_anthropic(usage);
                }
                self.start(sink);
            }
            "content_block_start" => {
                self.start(sink);
                let index = event.get("index").and_then(Value::as_u64).unwrap_or(0);
                let block = event.get("content_block").unwrap_or(&Value::Null);
                let kind = match str_at(block, "type") {
                    Some("text") => {
                        self.text(sink, str_at(block, "text").unwrap_or(""));
                        Block::Text
                    }
                    Some("thinking") => {
                        self.thinking(sink, str_at(block, "thinking").unwrap_or(""));
                        Block::Thinking
                    }
                    Some("redacted_thinking") => {
                        let data = str_at(block, "data").unwrap_or("");
                        self.thinking_block(
                            sink,
                            json!({"type": "redacted_thinking", "data": data}),
                        );
                        Block::Other
                    }
                    Some("tool_use") => {
                        let tool = self.tools;
                        self.tools = self.tools.saturating_add(1);
                        self.tool_delta(
                            sink,
                            ToolCallDelta {
                                index: tool,
                                id: Some(str_at(block, "id").unwrap_or("")),
                                kind: Some("function"),
                                function: FunctionDelta {
                                    name: Some(str_at(block, "name").unwrap_or("")),
                                    arguments: "",
                                },
                            },
                        );
                        Block::Tool(tool)
                    }
                    _ => Block::Other,
                };
                self.block = Some((index, kind));
            }
            "content_block_delta" => {
                self.start(sink);
                let index = event.get("index").and_then(Value::as_u64).unwrap_or(0);
                let delta = event.get("delta").unwrap_or(&Value::Null);
                let text = |key| str_at(delta, key).map(|text| Text(text.into()));
                let delta = AnthropicDelta {
                    kind: text("type"),
                    text: text("text"),
                    thinking: text("thinking"),
                    signature: text("signature"),
                    partial_json: text("partial_json"),
                    ..AnthropicDelta::default()
                };
                self.delta(sink, index, &delta);
            }
            "content_block_stop" => self.block = None,
            "message_delta" => {
                self.start(sink);
                if let Some(usage) = event.get("usage") {
                    self.tokens.update_from_anthropic(usage);
                }
                let delta = event.get("delta").unwrap_or(&Value::Null);
                if let Some(stop) = str_at(delta, "stop_reason") {
                    if !self.finished {
                        self.finished = true;
                        self.chunk(sink, Delta::default(), Some(finish_reason_for(stop)));
                    }
                }
            }
            "message_stop" => {
                self.start(sink);
                if !self.finished {
                    self.finished = true;
                    self.chunk(sink, Delta::default(), Some("stop"));
                }
                if self.opts.include_usage {
                    sink.openai(&Chunk {
                        id: &self.id,
                        object: "chat.completion.chunk",
                        created: self.opts.created,
                        model: &self.model,
                        choices: &[],
                        usage: Some(self.tokens.openai_json()),
                    });
                }
                sink.out.extend_from_slice(b"data: [DONE]\n\n");
                sink.flags.done = true;
            }
            "error" => sink.fail(read_anthropic_error(None, data)),
            // `ping` and events this module does not know.
            _ => {}
        }
    }
    /// A `content_block_delta` for the block at `index`.
    fn delta(&mut self, sink: &mut Sink<'_>, index: u64, delta: &AnthropicDelta<'_>) {
        match delta.kind.as_deref() {
            Some("text_delta") => self.text(sink, delta.text.as_deref().unwrap_or("")),
            Some("thinking_delta") => {
                self.thinking(sink, delta.thinking.as_deref().unwrap_or(""));
            }
            Some("signature_delta") => {
                let signature = delta.signature.as_deref().unwrap_or("");
                self.thinking_block(
                    sink,
                    json!({"type": "thinking", "thinking": "", "signature": signature}),
                );
            }
            Some("input_json_delta") => {
                let fragment = delta.partial_json.as_deref().unwrap_or("");
                if let Some((open, Block::Tool(tool))) = self.block {
                    if open == index && !fragment.is_empty() {
                        self.tool_delta(
                            sink,
                            ToolCallDelta {
                                index: tool,
                                id: None,
                                kind: None,
                                function: FunctionDelta {
                                    name: None,
                                    arguments: fragment,
                                },
                            },
                        );
                    }
                }
            }
            _ => {}
        }
    }
}

json_object! {
    /// A `content_block_delta` event, most of an Anthropic stream: read typed, without a
    /// `Value` (see [`crate::json`]). Any other event, or one this reading refuses, is read
    /// as a `Value`, leniently; the two readings agree on every event this one accepts.
    struct DeltaEvent<'de> {
        kind: Text<'de> = "type",
        index: u64 = "index",
        delta: AnthropicDelta<'de> = "delta",
    }
}

json_object! {
    /// The `delta` of a `content_block_delta` event.
    struct AnthropicDelta<'de> {
        kind: Text<'de> = "type",
        text: Text<'de> = "text",
        thinking: Text<'de> = "thinking",
        signature: Text<'de> = "signature",
        partial_json: Text<'de> = "partial_json",
    }
}

// ---------------------------------------------------------------------------------------------
// OpenAI → Anthropic
// ---------------------------------------------------------------------------------------------

#[derive(Serialize)]
struct MessageStart<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    message: StartMessage<'a>,
}

#[derive(Serialize)]
struct StartMessage<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    role: &'static str,
    model: &'a str,
    content: [(); 0],
    stop_reason: Option<()>,
    stop_sequence: Option<()>,
    usage: Value,
}

#[derive(Serialize)]
struct BlockStart {
    #[serde(rename = "type")]
    kind: &'static str,
    index: u32,
    content_block: Value,
}

#[derive(Serialize)]
struct BlockDelta<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    index: u32,
    delta: DeltaBody<'a>,
}

#[derive(Serialize)]
#[serde(tag = "type")]
enum DeltaBody<'a> {
    #[serde(rename = "text_delta")]
    Text { text: &'a str },
    #[serde(rename = "thinking_delta")]
    Thinking { thinking: &'a str },
    #[serde(rename = "input_json_delta")]
    InputJson { partial_json: &'a str },
}

#[derive(Serialize)]
struct BlockStop {
    #[serde(rename = "type")]
    kind: &'static str,
    index: u32,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Open {
    Text,
    Thinking,
    /// A tool call, by its OpenAI `index`.
    Tool(u64),
}

#[derive(Default)]
struct FromOpenai {
    started: bool,
    id: String,
    model: String,
    /// The open block: its Anthropic index and kind.
    open: Option<(u32, Open)>,
    next_block: u32,
    /// Tool calls seen: OpenAI `index` → Anthropic block index.
    tools: Vec<(u64, u32)>,
    finish: Option<&'static str>,
    refusal: bool,
    tokens: Option<Tokens>,
    /// Read chunks typed (see [`ChunkIn`]); the fuzz target turns it off.
    typed: bool,
}

json_object! {
    /// A Chat Completions chunk, read typed, without a `Value` (see [`crate::json`]), but for
    /// the fields a chunk seldom has (`error`, `usage`, `x_groq`, tool calls). A chunk this
    /// reading refuses is read as a `Value`, leniently; the two agree on every chunk this one
    /// accepts.
    struct ChunkIn<'de> {
        id: Text<'de> = "id",
        model: Text<'de> = "model",
        error: Value = "error",
        usage: Value = "usage",
        x_groq: Value = "x_groq",
        choices: Vec<ChunkChoiceIn<'de>> = "choices",
    }
}

json_object! {
    struct ChunkChoiceIn<'de> {
        index: u64 = "index",
        delta: OpenaiDelta<'de> = "delta",
        finish_reason: Text<'de> = "finish_reason",
    }
}

json_object! {
    struct OpenaiDelta<'de> {
        reasoning_content: Text<'de> = "reasoning_content",
        reasoning: Text<'de> = "reasoning",
        content: Text<'de> = "content",
        refusal: Text<'de> = "refusal",
        tool_calls: Value = "tool_calls",
    }
}

impl<'v> ChunkIn<'v> {
    /// A chunk's fields as the `Value` reading takes them: a field of another type than the
    /// one expected is absent, and so is a choice's index.
    fn of_value(chunk: &'v Value) -> Self {
        let text = |value: &'v Value, key| str_at(value, key).map(|text| Text(text.into()));
        let choice = |choice: &'v Value| {
            let delta = choice.get("delta").unwrap_or(&Value::Null);
            ChunkChoiceIn {
                index: choice.get("index").and_then(Value::as_u64),
                delta: Some(OpenaiDelta {
                    reasoning_content: text(delta, "reasoning_content"),
                    reasoning: text(delta, "reasoning"),
                    content: text(delta, "content"),
                    refusal: text(delta, "refusal"),
                    tool_calls: delta.get("tool_calls").cloned(),
                    ..OpenaiDelta::default()
                }),
                finish_reason: text(choice, "finish_reason"),
                ..ChunkChoiceIn::default()
            }
        };
        ChunkIn {
            id: text(chunk, "id"),
            model: text(chunk, "model"),
            error: chunk.get("error").filter(|e| !e.is_null()).cloned(),
            usage: chunk.get("usage").cloned(),
            x_groq: chunk.get("x_groq").cloned(),
            choices: chunk
                .get("choices")
                .and_then(Value::as_array)
                .map(|choices| choices.iter().map(choice).collect()),
            ..ChunkIn::default()
        }
    }
}

impl FromOpenai {
    fn event(&mut self, data: &[u8], sink: &mut Sink<'_>) {
        if data == b"[DONE]" {
            self.start(sink);
            return self.complete(sink);
        }
        if self.typed {
            if let Ok(chunk) = serde_json::from_slice::<ChunkIn<'_>>(data) {
                return self.chunk(&chunk, data, sink);
            }
        }
        let Ok(chunk) = serde_json::from_slice::<Value>(data) else {
            return not_json(sink);
        };
        self.chunk(&ChunkIn::of_value(&chunk), data, sink);
    }

    fn chunk(&mut self, chunk: &ChunkIn<'_>, data: &[u8], sink: &mut Sink<'_>) {
        if chunk.error.is_some() {
            return sink.fail(read_openai_error(None, data));
        }
        if !self.started {
            self.id = bounded(chunk.id.as_deref());
            self.model = bounded(chunk.model.as_deref());
        }
        self.start(sink);
        // Groq reports usage in `x_groq.usage` on the last chunk instead.
        let usage = chunk.usage.as_ref().filter(|u| u.is_object()).or_else(|| {
            let groq = chunk.x_groq.as_ref().and_then(|x| x.get("usage"));
            groq.filter(|u| u.is_object())
        });
        if let Some(usage) = usage {
            self.tokens = Some(Tokens::from_openai(usage));
        }
        let Some(choices) = &chunk.choices else {
            return;
        };
        // Only the first choice is translated (a translated request asks for one).
        for choice in choices {
            if choice.index.unwrap_or(0) != 0 {
                continue;
            }
            let empty = OpenaiDelta::default();
            let delta = choice.delta.as_ref().unwrap_or(&empty);
            let reasoning = delta
                .reasoning_content
                .as_ref()
                .or(delta.reasoning.as_ref());
            if let Some(text) = reasoning.filter(|t| !t.is_empty()) {
                let index = self.ensure(Open::Thinking, sink);
                sink.content();
                sink.anthropic(
                    "content_block_delta",
                    &BlockDelta {
                        kind: "content_block_delta",
                        index,
                        delta: DeltaBody::Thinking { thinking: text },
                    },
                );
            }
            for (text, refusal) in [(&delta.content, false), (&delta.refusal, true)] {
                if let Some(text) = text.as_deref().filter(|t| !t.is_empty()) {
                    self.refusal |= refusal;
                    let index = self.ensure(Open::Text, sink);
                    sink.content();
                    sink.anthropic(
                        "content_block_delta",
                        &BlockDelta {
                            kind: "content_block_delta",
                            index,
                            delta: DeltaBody::Text { text },
                        },
                    );
                }
            }
            if let Some(calls) = delta.tool_calls.as_ref().and_then(Value::as_array) {
                for (position, call) in calls.iter().enumerate() {
                    if sink.flags.done {
                        return;
                    }
                    self.tool_call(position as u64, call, sink);
                }
            }
            if let Some(finish) = choice.finish_reason.as_deref() {
                self.close(sink);
                self.finish = Some(if self.refusal {
                    "refusal"
                } else {
                    stop_reason_for(finish)
                });
            }
        }
    }

    fn start(&mut self, sink: &mut Sink<'_>) {
        if self.started {
            return;
        }
        self.started = true;
        sink.anthropic(
            "message_start",
            &MessageStart {
                kind: "message_start",
                message: StartMessage {
                    id: &self.id,
                    kind: "message",
                    role: "assistant",
                    model: &self.model,
                    content: [],
                    stop_reason: None,
                    stop_sequence: None,
                    usage: json!({"input_tokens": 0, "output_tokens": 0}),
                },
            },
        );
    }

    fn close(&mut self, sink: &mut Sink<'_>) {
        if let Some((index, _)) = self.open.take() {
            sink.anthropic(
                "content_block_stop",
                &BlockStop {
                    kind: "content_block_stop",
                    index,
                },
            );
        }
    }

    /// The block for a kind of delta: the open one if it is of that kind, else a new one.
    fn ensure(&mut self, kind: Open, sink: &mut Sink<'_>) -> u32 {
        if let Some((index, open)) = self.open {
            if open == kind {
                return index;
            }
        }
        self.close(sink);
        let index = self.next_block;
        self.next_block = self.next_block.saturating_add(1);
        let block = match kind {
            Open::Text => json!({"type": "text", "text": ""}),
            Open::Thinking => json!({"type": "thinking", "thinking": "", "signature": ""}),
            Open::Tool(_) => json!({}),
        };
        self.begin(index, block, sink);
        self.open = Some((index, kind));
        index
    }

    fn begin(&mut self, index: u32, content_block: Value, sink: &mut Sink<'_>) {
        sink.anthropic(
            "content_block_start",
            &BlockStart {
                kind: "content_block_start",
                index,
                content_block,
            },
        );
    }

    fn tool_call(&mut self, position: u64, call: &Value, sink: &mut Sink<'_>) {
        let key = call
            .get("index")
            .and_then(Value::as_u64)
            .unwrap_or(position);
        let function = call.get("function").unwrap_or(&Value::Null);
        let block = match self.tools.iter().find(|(k, _)| *k == key) {
            Some(&(_, block)) => block,
            None => {
                if self.tools.len() >= MAX_TOOL_CALLS {
                    return sink.fail(ErrorInfo::own(
                        502,
                        &format!("upstream sent more than {MAX_TOOL_CALLS} tool calls"),
                    ));
                }
                self.close(sink);
                let index = self.next_block;
                self.next_block = self.next_block.saturating_add(1);
                // Some compatible providers leave out the id; Anthropic clients need one to
                // answer the call.
                let id = match str_at(call, "id").filter(|id| !id.is_empty()) {
                    Some(id) => id.to_owned(),
                    None => format!("call_{key}"),
                };
                let name = str_at(function, "name").unwrap_or("");
                self.begin(
                    index,
                    json!({"type": "tool_use", "id": id, "name": name, "input": {}}),
                    sink,
                );
                sink.content();
                self.open = Some((index, Open::Tool(key)));
                self.tools.push((key, index));
                index
            }
        };
        if let Some(fragment) = str_at(function, "arguments").filter(|f| !f.is_empty()) {
            // A fragment for a call whose block was closed (providers that interleave calls)
            // still goes to that call's block: Anthropic's SDKs assemble by index.
            sink.content();
            sink.anthropic(
                "content_block_delta",
                &BlockDelta {
                    kind: "content_block_delta",
                    index: block,
                    delta: DeltaBody::InputJson {
                        partial_json: fragment,
                    },
                },
            );
        }
    }

    /// The end: the open block stopped, `message_delta` with the stop reason and usage,
    /// `message_stop`.
    fn complete(&mut self, sink: &mut Sink<'_>) {
        self.close(sink);
        let tokens = self.tokens.unwrap_or_default();
        let mut usage = json!({"output_tokens": tokens.output});
        if self.tokens.is_some() {
            usage["input_tokens"] = json!(tokens.input);
            usage["cache_read_input_tokens"] = json!(tokens.cache_read);
        }
        let stop = self.finish.unwrap_or("end_turn");
        sink.anthropic(
            "message_delta",
            &json!({
                "type": "message_delta",
                "delta": {"stop_reason": stop, "stop_sequence": null},
                "usage": usage,
            }),
        );
        sink.anthropic("message_stop", &json!({"type": "message_stop"}));
        sink.flags.done = true;
    }
}

// ---------------------------------------------------------------------------------------------
// Gemini → OpenAI (→ Anthropic, through a second translator)
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
struct FromGemini {
    started: bool,
    created: u64,
    include_usage: bool,
    id: String,
    model: String,
    /// Tool calls so far (their OpenAI `index`).
    calls: usize,
    finish: Option<&'static str>,
    tokens: Option<Tokens>,
    /// Anthropic clients: the Chat Completions chunks go on through this translator.
    next: Option<Box<StreamTranslator>>,
}

impl FromGemini {
    fn chunk(&self, out: &mut Vec<u8>, delta: Value, finish: Option<&str>) {
        let chunk = json!({
            "id": self.id, "object": "chat.completion.chunk", "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        });
        out.extend_from_slice(b"data: ");
        let _ = serde_json::to_writer(&mut *out, &chunk);
        out.extend_from_slice(b"\n\n");
    }

    /// Hands Chat Completions bytes on: to the client, or through the Anthropic translator
    /// (whose flags become the stream's).
    fn emit(&mut self, bytes: &[u8], content: bool, sink: &mut Sink<'_>) {
        match &mut self.next {
            None => {
                sink.out.extend_from_slice(bytes);
                if content {
                    sink.content();
                }
            }
            Some(next) => {
                next.feed(bytes, sink.out);
                if next.is_content_started() {
                    sink.content();
                }
                if let Some(error) = next.upstream_error() {
                    sink.flags.error = Some(error.clone());
                }
                if next.is_done() {
                    sink.flags.done = true;
                }
            }
        }
    }

    fn event(&mut self, data: &[u8], sink: &mut Sink<'_>) {
        let Ok(chunk) = serde_json::from_slice::<Value>(data) else {
            return not_json(sink);
        };
        if let Some(error) = chunk.get("error").filter(|e| e.is_object()) {
            let status = error
                .get("code")
                .and_then(Value::as_u64)
                .and_then(|c| u16::try_from(c).ok())
                .filter(|c| (400..600).contains(c))
                .unwrap_or(500);
            let body = super::gemini::gemini_error_to_openai(status, data);
            return sink.fail(read_openai_error(Some(status), &body));
        }
        let mut out = Vec::new();
        if !self.started {
            self.started = true;
            self.id = super::gemini::answer_id(&chunk);
            self.model = super::gemini::answer_model(&chunk);
            self.chunk(&mut out, json!({"role": "assistant", "content": ""}), None);
        }
        if let Some(usage) = chunk.get("usageMetadata").filter(|u| u.is_object()) {
            self.tokens = Some(super::gemini::tokens_from_gemini(usage));
        }
        let said = super::gemini::read_response(&chunk);
        let content = !said.thoughts.is_empty() || !said.text.is_empty() || !said.calls.is_empty();
        if !said.thoughts.is_empty() {
            self.chunk(&mut out, json!({"reasoning_content": said.thoughts}), None);
        }
        if !said.text.is_empty() {
            self.chunk(&mut out, json!({"content": said.text}), None);
        }
        for (id, name, arguments) in &said.calls {
            if self.calls >= MAX_TOOL_CALLS {
                break;
            }
            let mut call = super::gemini::tool_call(self.calls, id, name, arguments);
            call["index"] = json!(self.calls);
            self.calls += 1;
            self.chunk(&mut out, json!({"tool_calls": [call]}), None);
        }
        if said.blocked {
            self.finish = Some("content_filter");
        } else if let Some(reason) = &said.finish {
            self.finish = Some(super::gemini::finish_reason_for_gemini(
                reason,
                self.calls > 0,
            ));
        }
        if let Some(finish) = self
            .finish
            .filter(|_| said.blocked || said.finish.is_some())
        {
            self.chunk(&mut out, json!({}), Some(finish));
        }
        self.emit(&out, content, sink);
    }

    /// The body ended: after a finish reason the answer is whole (Gemini sends no `[DONE]`).
    fn end(&mut self, sink: &mut Sink<'_>) {
        if self.finish.is_none() || sink.flags.done {
            return;
        }
        let mut out = Vec::new();
        if self.include_usage {
            let usage = self.tokens.unwrap_or_default().openai_json();
            let chunk = json!({
                "id": self.id, "object": "chat.completion.chunk", "created": self.created,
                "model": self.model, "choices": [], "usage": usage,
            });
            out.extend_from_slice(b"data: ");
            let _ = serde_json::to_writer(&mut out, &chunk);
            out.extend_from_slice(b"\n\n");
        }
        out.extend_from_slice(b"data: [DONE]\n\n");
        self.emit(&out, false, sink);
        sink.flags.done = true;
    }
}
