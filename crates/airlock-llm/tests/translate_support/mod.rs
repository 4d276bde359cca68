//! What the translation tests share: reading SSE output back into events, and checking that a
//! translated stream is well-formed in the client's dialect whatever went in.

#![allow(dead_code)] // Each test crate uses part of it.

use airlock_llm::translate::Dialect;
use serde_json::Value;

/// One event of a translated stream: its name (Anthropic) and its data.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub name: Option<String>,
    pub data: String,
}

/// Splits SSE output as the translator writes it (`event:` and `data:` lines, LF, a blank line
/// after each event). Panics on anything else: the translator writes nothing else.
pub fn events(out: &[u8]) -> Vec<Event> {
    let text = std::str::from_utf8(out).expect("translated streams are utf-8");
    assert!(
        text.is_empty() || text.ends_with("\n\n"),
        "every event ends with a blank line"
    );
    let mut events = Vec::new();
    for block in text.split_terminator("\n\n") {
        let mut name = None;
        let mut data = None;
        for line in block.split('\n') {
            if let Some(n) = line.strip_prefix("event: ") {
                assert!(
                    name.is_none() && data.is_none(),
                    "event line first: {block}"
                );
                name = Some(n.to_owned());
            } else if let Some(d) = line.strip_prefix("data: ") {
                assert!(data.is_none(), "one data line per event: {block}");
                data = Some(d.to_owned());
            } else {
                panic!("unexpected line {line:?}");
            }
        }
        let data = data.expect("every event has data");
        events.push(Event { name, data });
    }
    events
}

/// Checks that a translated stream is one the client's SDK can read to its end:
/// - Chat Completions: chunks of `chat.completion.chunk` with one choice (or none, with usage),
///   at most one `finish_reason`, tool call deltas whose first mention has id and name, then
///   `[DONE]` last; or an error, last.
/// - Messages: `message_start` first, blocks started and stopped in order with deltas of their
///   own kind (a late tool fragment may go to an earlier tool block), `message_delta` then
///   `message_stop` last; or an error, last.
///
/// `complete` says the stream was finished (so it must end with its last event or an error).
pub fn assert_well_formed(to: Dialect, out: &[u8], complete: bool) {
    let events = events(out);
    match to {
        Dialect::OpenaiChat => openai_well_formed(&events, complete),
        Dialect::AnthropicMessages => anthropic_well_formed(&events, complete),
    }
}

fn json(data: &str) -> Value {
    serde_json::from_str(data).unwrap_or_else(|e| panic!("data is json ({e}): {data}"))
}

fn openai_well_formed(events: &[Event], complete: bool) {
    let mut finished = false;
    let mut tools_seen: Vec<u64> = Vec::new();
    for (i, event) in events.iter().enumerate() {
        let last = i + 1 == events.len();
        assert!(
            event.name.is_none(),
            "chat completions events have no names"
        );
        if event.data == "[DONE]" {
            assert!(last, "[DONE] is last");
            continue;
        }
        let chunk = json(&event.data);
        if chunk.get("error").is_some() {
            assert!(last, "an error is last");
            let error = &chunk["error"];
            assert!(error["message"].is_string() && error["type"].is_string());
            continue;
        }
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert!(chunk["id"].is_string() && chunk["model"].is_string());
        assert!(chunk["created"].is_u64());
        let choices = chunk["choices"].as_array().expect("choices");
        if choices.is_empty() {
            assert!(chunk["usage"]["prompt_tokens"].is_u64(), "usage-only chunk");
            assert!(finished, "usage after the finish");
            continue;
        }
        assert_eq!(choices.len(), 1);
        let choice = &choices[0];
        assert_eq!(choice["index"], 0);
        assert!(!finished, "nothing after the finish but usage");
        if let Some(reason) = choice["finish_reason"].as_str() {
            assert!(["stop", "length", "tool_calls", "content_filter"].contains(&reason));
            finished = true;
        }
        let delta = &choice["delta"];
        for key in ["content", "reasoning_content"] {
            assert!(delta.get(key).is_none_or(Value::is_string), "{key}");
        }
        if let Some(calls) = delta.get("tool_calls") {
            for call in calls.as_array().expect("tool_calls is an array") {
                let index = call["index"].as_u64().expect("index");
                if !tools_seen.contains(&index) {
                    assert_eq!(index, tools_seen.len() as u64, "tool indexes count up");
                    assert!(call["id"].is_string() && call["function"]["name"].is_string());
                    assert_eq!(call["type"], "function");
                    tools_seen.push(index);
                }
                assert!(call["function"]["arguments"].is_string());
            }
        }
    }
    if complete {
        let last = events.last().expect("a finished stream says something");
        assert!(
            last.data == "[DONE]" || json(&last.data).get("error").is_some(),
            "a finished stream ends with [DONE] or an error"
        );
    }
}

fn anthropic_well_formed(events: &[Event], complete: bool) {
    #[derive(PartialEq)]
    enum Phase {
        Start,
        Message,
        Delta,
        Stopped,
    }
    let mut phase = Phase::Start;
    let mut open: Option<(u64, String)> = None;
    let mut blocks: Vec<String> = Vec::new();
    for (i, event) in events.iter().enumerate() {
        let last = i + 1 == events.len();
        let name = event.name.as_deref().expect("messages events have names");
        let data = json(&event.data);
        assert_eq!(data["type"], name, "the name is the data's type");
        match name {
            "error" => {
                assert!(last, "an error is last");
                assert!(data["error"]["type"].is_string() && data["error"]["message"].is_string());
            }
            "message_start" => {
                assert!(phase == Phase::Start, "one message_start, first");
                let message = &data["message"];
                assert_eq!(message["type"], "message");
                assert_eq!(message["role"], "assistant");
                assert!(message["usage"]["input_tokens"].is_u64());
                phase = Phase::Message;
            }
            "content_block_start" => {
                assert!(
                    phase == Phase::Message && open.is_none(),
                    "one block at a time"
                );
                let index = data["index"].as_u64().expect("index");
                assert_eq!(index, blocks.len() as u64, "block indexes count up");
                let kind = data["content_block"]["type"]
                    .as_str()
                    .expect("type")
                    .to_owned();
                match kind.as_str() {
                    "text" => assert!(data["content_block"]["text"].is_string()),
                    "thinking" => assert!(data["content_block"]["signature"].is_string()),
                    "tool_use" => {
                        assert!(data["content_block"]["id"].is_string());
                        assert!(data["content_block"]["name"].is_string());
                        assert!(data["content_block"]["input"].is_object());
                    }
                    other => panic!("unexpected block type {other}"),
                }
                blocks.push(kind.clone());
                open = Some((index, kind));
            }
            "content_block_delta" => {
                assert!(phase == Phase::Message);
                let index = data["index"].as_u64().expect("index");
                let kind = data["delta"]["type"].as_str().expect("delta type");
                let block = blocks.get(index as usize).expect("a started block");
                let expected = match block.as_str() {
                    "text" => "text_delta",
                    "thinking" => "thinking_delta",
                    _ => "input_json_delta",
                };
                assert_eq!(kind, expected);
                if open.as_ref().map(|(i, _)| *i) != Some(index) {
                    assert_eq!(kind, "input_json_delta", "only tool fragments come late");
                }
            }
            "content_block_stop" => {
                let index = data["index"].as_u64().expect("index");
                assert_eq!(
                    open.take().map(|(i, _)| i),
                    Some(index),
                    "stop the open block"
                );
            }
            "message_delta" => {
                assert!(
                    phase == Phase::Message && open.is_none(),
                    "blocks stopped first"
                );
                assert!(data["delta"]["stop_reason"].is_string());
                assert!(data["usage"]["output_tokens"].is_u64());
                phase = Phase::Delta;
            }
            "message_stop" => {
                assert!(
                    phase == Phase::Delta,
                    "message_delta comes before message_stop"
                );
                assert!(last, "message_stop is last");
                phase = Phase::Stopped;
            }
            other => panic!("unexpected event {other}"),
        }
    }
    if complete {
        let last = events.last().expect("a finished stream says something");
        let name = last.name.as_deref();
        assert!(
            name == Some("message_stop") || name == Some("error"),
            "a finished stream ends with message_stop or an error"
        );
    }
}
