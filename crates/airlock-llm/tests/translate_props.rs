//! Property tests of the translation (SECURITY #30): for arbitrary bytes, dialect-shaped token
//! soup, real fixtures with bytes edited, and real fixtures with a JSON value swapped for one
//! of another type, no translation panics, every result is an error with a message or JSON,
//! cutting a stream anywhere changes nothing, and a translated stream is always well-formed in
//! the client's dialect. `airlock_llm::fuzz_translate` asserts the first promises on each
//! input; these tests also check the stream's shape.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly by design.

#[allow(unreachable_pub)] // Shared by the test crates, public to each.
mod translate_support;

use std::path::Path;

use airlock_llm::fuzz_translate;
use airlock_llm::translate::{
    anthropic_to_openai_request, anthropic_to_openai_response, openai_to_anthropic_request,
    openai_to_anthropic_response, Dialect, RequestOptions, StreamOptions, StreamTranslator,
};
use proptest::prelude::*;
use serde_json::{json, Value};
use translate_support::assert_well_formed;

/// Pieces of both dialects' syntax, so random input often parses far.
const TOKENS: &[&str] = &[
    "{", "}", "[", "]", ":", ",", "\"", "\\", " ", "\n", "\r\n", "\n\n", "data: ", "[DONE]",
    "event: error\n", "event: message_start\n", "event: content_block_delta\n",
    "{\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"model\":\"c\",\"usage\":{\"input_tokens\":3}}}",
    "{\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}",
    "{\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"t\",\"name\":\"f\",\"input\":{}}}",
    "{\"type\":\"content_block_start\",\"index\":2,\"content_block\":{\"type\":\"thinking\",\"thinking\":\"\"}}",
    "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"hi\"}}",
    "{\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"a\\\"\"}}",
    "{\"type\":\"content_block_delta\",\"index\":2,\"delta\":{\"type\":\"signature_delta\",\"signature\":\"s\"}}",
    "{\"type\":\"content_block_stop\",\"index\":0}",
    "{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\"},\"usage\":{\"output_tokens\":5}}",
    "{\"type\":\"message_stop\"}",
    "{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"busy\"}}",
    "{\"id\":\"c\",\"model\":\"g\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}]}",
    "{\"choices\":[{\"index\":0,\"delta\":{\"reasoning_content\":\"r\"}}]}",
    "{\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"c1\",\"function\":{\"name\":\"f\",\"arguments\":\"{\"}}]}}]}",
    "{\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":1,\"function\":{\"arguments\":\"}\"}}]}}]}",
    "{\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"1\"}}]}}]}",
    "{\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"length\"}]}",
    "{\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2}}",
    "{\"error\":{\"message\":\"m\",\"type\":\"server_error\"}}",
    "\"messages\"", "\"role\"", "\"user\"", "\"assistant\"", "\"tool\"", "\"system\"",
    "\"content\"", "\"tool_calls\"", "\"tool_use\"", "\"tool_result\"", "\"text\"", "\"type\"",
    "\"image_url\"", "\"url\"", "\"data:image/png;base64,AAAA\"", "\"thinking_blocks\"",
    "\"max_tokens\"", "null", "true", "0", "-1", "1e400", "\"\"",
];

fn soup() -> impl Strategy<Value = Vec<u8>> {
    (
        any::<u8>(),
        prop::collection::vec(prop::sample::select(TOKENS), 0..120),
    )
        .prop_map(|(control, tokens)| {
            let mut data = vec![control];
            for token in tokens {
                data.extend_from_slice(token.as_bytes());
            }
            data
        })
}

/// Every fixture input under `tests/translate/`, with the dialect it is in.
fn fixtures() -> Vec<(Dialect, bool, Vec<u8>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/translate");
    let mut all = Vec::new();
    for kind in ["request", "response", "error", "stream"] {
        for (direction, from) in [
            ("openai_to_anthropic", Dialect::OpenaiChat),
            ("anthropic_to_openai", Dialect::AnthropicMessages),
        ] {
            let dir = root.join(kind).join(direction);
            let mut paths: Vec<_> = std::fs::read_dir(&dir)
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.to_str().unwrap().contains(".in."))
                .collect();
            paths.sort();
            for path in paths {
                all.push((from, kind == "stream", std::fs::read(path).unwrap()));
            }
        }
    }
    all
}

fn translate_stream(from: Dialect, body: &[u8], cuts: &[usize]) -> Vec<u8> {
    let opts = StreamOptions {
        created: 1,
        include_usage: true,
    };
    let mut translator = StreamTranslator::new(from, opts);
    let mut out = Vec::new();
    let mut start = 0;
    for &cut in cuts.iter().chain([&body.len()]) {
        translator.feed(&body[start..cut], &mut out);
        start = cut;
    }
    translator.finish(&mut out);
    out
}

/// Every translation of a body in `from`'s dialect: nothing panics, streams are well-formed.
fn check_all(from: Dialect, body: &[u8]) {
    let control = u8::from(from == Dialect::AnthropicMessages);
    let mut data = vec![control];
    data.extend_from_slice(body);
    fuzz_translate(&data);
    let out = translate_stream(from, body, &[]);
    assert_well_formed(from.other(), &out, true);
}

/// All paths to values in a JSON document, as pointers.
fn pointers(value: &Value, at: String, out: &mut Vec<String>) {
    match value {
        Value::Object(fields) => {
            for (key, inner) in fields {
                pointers(
                    inner,
                    format!("{at}/{}", key.replace('~', "~0").replace('/', "~1")),
                    out,
                );
            }
        }
        Value::Array(items) => {
            for (i, inner) in items.iter().enumerate() {
                pointers(inner, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
    out.push(at);
}

const SWAPS: &[&str] = &[
    "null",
    "0",
    "-7",
    "1.5",
    "true",
    "\"\"",
    "\"x\"",
    "[]",
    "[null]",
    "{}",
    "{\"type\":\"text\"}",
    "18446744073709551616",
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn arbitrary_bytes(data in prop::collection::vec(any::<u8>(), 0..2048)) {
        fuzz_translate(&data);
    }

    #[test]
    fn token_soup(data in soup()) {
        fuzz_translate(&data);
        let from = if data[0] & 1 == 0 { Dialect::OpenaiChat } else { Dialect::AnthropicMessages };
        let out = translate_stream(from, &data[1..], &[]);
        assert_well_formed(from.other(), &out, true);
    }

    /// A real body with a few bytes replaced, inserted or removed.
    #[test]
    fn mutated_fixtures(
        which in any::<prop::sample::Index>(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), 0..3u8, prop::sample::select(TOKENS)), 0..6),
    ) {
        let all = fixtures();
        let (from, _, mut body) = all[which.index(all.len())].clone();
        for (at, kind, token) in edits {
            let at = at.index(body.len() + 1);
            match kind {
                0 => { body.splice(at..at, token.bytes()); }
                1 if at < body.len() => { body.remove(at); }
                _ => { body.splice(at..(at + token.len()).min(body.len()), token.bytes()); }
            }
        }
        check_all(from, &body);
        check_all(from.other(), &body);
    }

    /// A real JSON body with one value swapped for a value of another type: every field of
    /// every request and response shape is reached with every wrong type.
    #[test]
    fn type_confused_fixtures(which in any::<prop::sample::Index>(), node in any::<prop::sample::Index>(), swap in prop::sample::select(SWAPS)) {
        let all: Vec<_> = fixtures().into_iter().filter(|(_, stream, _)| !stream).collect();
        let (from, _, body) = &all[which.index(all.len())];
        let Ok(mut value) = serde_json::from_slice::<Value>(body) else { return Ok(()); };
        let mut paths = Vec::new();
        pointers(&value, String::new(), &mut paths);
        let path = &paths[node.index(paths.len())];
        let replacement: Value = serde_json::from_str(swap).unwrap();
        if path.is_empty() {
            value = replacement;
        } else if let Some(slot) = value.pointer_mut(path) {
            *slot = replacement;
        }
        let body = serde_json::to_vec(&value).unwrap();
        let opts = RequestOptions::new("m");
        for result in [
            openai_to_anthropic_request(&body, &opts),
            anthropic_to_openai_request(&body, &opts),
            anthropic_to_openai_response(&body, 1),
            openai_to_anthropic_response(&body),
        ] {
            match result {
                Ok(out) => { serde_json::from_slice::<Value>(&out).unwrap(); }
                Err(error) => prop_assert!(!error.message.is_empty()),
            }
        }
        check_all(*from, &body);
    }

    /// Any set of cut points through a real stream gives the same bytes.
    #[test]
    fn any_cuts_of_real_streams(
        which in any::<prop::sample::Index>(),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..40),
    ) {
        let all: Vec<_> = fixtures().into_iter().filter(|(_, stream, _)| *stream).collect();
        let (from, _, body) = &all[which.index(all.len())];
        let whole = translate_stream(*from, body, &[]);
        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(body.len() + 1)).collect();
        points.sort_unstable();
        prop_assert_eq!(translate_stream(*from, body, &points), whole);
    }
}

/// Inputs worth keeping as regressions: deep nesting, huge numbers, a request whose every
/// message is empty, a stream of only pings, tool deltas for unknown calls.
#[test]
fn regressions() {
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let cases: Vec<(Dialect, Vec<u8>)> = vec![
        (Dialect::OpenaiChat, deep.clone().into_bytes()),
        (Dialect::AnthropicMessages, format!("data: {deep}\n\n").into_bytes()),
        (Dialect::OpenaiChat, br#"{"messages":[{"role":"user","content":""},{"role":"assistant","content":[]}],"max_tokens":1e400}"#.to_vec()),
        (Dialect::AnthropicMessages, b"event: ping\ndata: {\"type\":\"ping\"}\n\n".repeat(100)),
        (Dialect::OpenaiChat, b"data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":5,\"function\":{\"arguments\":\"x\"}}]}}]}\n\ndata: [DONE]\n\n".to_vec()),
        (Dialect::AnthropicMessages, b"data: {\"type\":\"content_block_delta\",\"index\":9,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"x\"}}\n\n".to_vec()),
        (Dialect::OpenaiChat, json!({"messages":[{"role":"assistant","tool_calls":[{"id":"a","function":{"name":"f","arguments":"[1]"}}]}]}).to_string().into_bytes()),
    ];
    for (from, body) in cases {
        check_all(from, &body);
        check_all(from.other(), &body);
    }
}

/// More tool calls than the bound: the stream ends with an error, well-formed.
#[test]
fn too_many_tool_calls() {
    let mut body = Vec::new();
    for i in 0..=airlock_llm::translate::MAX_TOOL_CALLS {
        body.extend_from_slice(
            format!("data: {{\"choices\":[{{\"delta\":{{\"tool_calls\":[{{\"index\":{i},\"id\":\"c{i}\",\"function\":{{\"name\":\"f\",\"arguments\":\"{{}}\"}}}}]}}}}]}}\n\n").as_bytes(),
        );
    }
    let out = translate_stream(Dialect::OpenaiChat, &body, &[]);
    assert_well_formed(Dialect::AnthropicMessages, &out, true);
    let tail = String::from_utf8_lossy(&out[out.len().saturating_sub(300)..]).into_owned();
    assert!(
        tail.contains("event: error") && tail.contains("tool calls"),
        "{tail}"
    );
}
