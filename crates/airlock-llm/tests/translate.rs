//! Golden tests of the translation between Chat Completions and Messages (SECURITY #30):
//! requests, responses, errors and streams in both directions, each fixture under
//! `tests/translate/<kind>/<direction>/` as `<case>.in.*` with its expected `<case>.out.*`
//! (`.out.txt` when the translation is refused: the error's kind and message).
//!
//! Streams are also fed split at every byte boundary and one byte at a time, and must give the
//! same bytes; each translated stream must be well-formed for the client's SDK.
//!
//! `BLESS=1 cargo test -p airlock-llm --test translate` writes the outputs as the new expected
//! files; review the diff before committing it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly by design.

#[allow(unreachable_pub)] // Shared by the test crates, public to each.
mod translate_support;

use std::path::{Path, PathBuf};

use airlock_llm::translate::{
    anthropic_to_openai_request, anthropic_to_openai_response, openai_to_anthropic_request,
    openai_to_anthropic_response, translate_error_body, translate_gemini_error_body,
    translate_gemini_response, translate_request_to_gemini, Dialect, ErrorKind, RequestOptions,
    StreamOptions, StreamTranslator, TranslateError,
};
use serde_json::{json, Value};
use translate_support::assert_well_formed;

const CREATED: u64 = 1_750_000_000;
/// The backend models the fixtures are translated for.
const ANTHROPIC_MODEL: &str = "claude-sonnet-4-5-20250929";
const OPENAI_MODEL: &str = "gpt-4.1";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/translate")
}

fn bless() -> bool {
    std::env::var_os("BLESS").is_some()
}

/// The cases of a directory: (name, input bytes), sorted by name.
fn cases(dir: &str) -> Vec<(String, Vec<u8>)> {
    let dir = root().join(dir);
    let mut cases: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter_map(|path| {
            let file = path.file_name()?.to_str()?.to_owned();
            let name = file
                .strip_suffix(".in.json")
                .or_else(|| file.strip_suffix(".in.sse"))?;
            Some((name.to_owned(), std::fs::read(&path).unwrap()))
        })
        .collect();
    cases.sort();
    assert!(!cases.is_empty(), "no cases in {}", dir.display());
    cases
}

enum Output {
    Json(Vec<u8>),
    Sse(Vec<u8>),
    Refused(TranslateError),
}

impl From<Result<Vec<u8>, TranslateError>> for Output {
    fn from(result: Result<Vec<u8>, TranslateError>) -> Self {
        match result {
            Ok(bytes) => Output::Json(bytes),
            Err(error) => Output::Refused(error),
        }
    }
}

/// Compares an output with the expected file (or writes it when blessing); returns a
/// description of the mismatch.
fn compare(dir: &str, name: &str, output: &Output) -> Option<String> {
    let base = root().join(dir).join(name);
    let (path, actual): (PathBuf, Vec<u8>) = match output {
        Output::Json(bytes) => {
            let value: Value = serde_json::from_slice(bytes).expect("output is json");
            let mut pretty = serde_json::to_vec_pretty(&value).unwrap();
            pretty.push(b'\n');
            (base.with_extension("out.json"), pretty)
        }
        Output::Sse(bytes) => (base.with_extension("out.sse"), bytes.clone()),
        Output::Refused(error) => {
            let kind = match error.kind {
                ErrorKind::Malformed => "malformed",
                ErrorKind::Unsupported => "unsupported",
            };
            (
                base.with_extension("out.txt"),
                format!("{kind}: {}\n", error.message).into_bytes(),
            )
        }
    };
    // `with_extension` replaces the last extension only; the name has none of its own.
    let path = PathBuf::from(format!(
        "{}.{}",
        base.display(),
        path.file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .rsplit_once(".out.")
            .unwrap()
            .1
    ))
    .with_file_name(format!(
        "{name}.out.{}",
        path.extension().unwrap().to_str().unwrap()
    ));
    if bless() {
        for stale in ["json", "sse", "txt"] {
            let _ = std::fs::remove_file(base.with_file_name(format!("{name}.out.{stale}")));
        }
        std::fs::write(&path, &actual).unwrap();
        return None;
    }
    let Ok(expected) = std::fs::read(&path) else {
        return Some(format!(
            "{dir}/{name}: no {} (run with BLESS=1)",
            path.display()
        ));
    };
    let same = match output {
        Output::Json(_) => {
            serde_json::from_slice::<Value>(&expected).ok()
                == serde_json::from_slice::<Value>(&actual).ok()
        }
        _ => expected == actual,
    };
    (!same).then(|| {
        format!(
            "{dir}/{name}: output differs from {}\n--- expected\n{}\n--- actual\n{}",
            path.display(),
            String::from_utf8_lossy(&expected),
            String::from_utf8_lossy(&actual)
        )
    })
}

fn run_dir(dir: &str, translate: impl Fn(&str, &[u8]) -> Output) -> usize {
    let cases = cases(dir);
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|(name, input)| compare(dir, name, &translate(name, input)))
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    cases.len()
}

#[test]
fn requests_openai_to_anthropic() {
    let n = run_dir("request/openai_to_anthropic", |_, body| {
        openai_to_anthropic_request(body, &RequestOptions::new(ANTHROPIC_MODEL)).into()
    });
    assert!(n >= 15, "{n} cases");
}

#[test]
fn requests_anthropic_to_openai() {
    let n = run_dir("request/anthropic_to_openai", |_, body| {
        anthropic_to_openai_request(body, &RequestOptions::new(OPENAI_MODEL)).into()
    });
    assert!(n >= 10, "{n} cases");
}

#[test]
fn responses_anthropic_to_openai() {
    run_dir("response/anthropic_to_openai", |_, body| {
        anthropic_to_openai_response(body, CREATED).into()
    });
}

#[test]
fn responses_openai_to_anthropic() {
    run_dir("response/openai_to_anthropic", |_, body| {
        openai_to_anthropic_response(body).into()
    });
}

/// The status is the last `_` part of the case's name.
fn status_of(name: &str) -> u16 {
    name.rsplit('_').next().unwrap().parse().unwrap()
}

#[test]
fn errors_both_ways() {
    for (dir, from) in [
        ("error/anthropic_to_openai", Dialect::AnthropicMessages),
        ("error/openai_to_anthropic", Dialect::OpenaiChat),
    ] {
        run_dir(dir, |name, body| {
            Output::Json(translate_error_body(from, status_of(name), body))
        });
    }
}

fn stream_opts(name: &str) -> StreamOptions {
    StreamOptions {
        created: CREATED,
        include_usage: !name.ends_with("no_usage"),
    }
}

/// Translates a stream fed in the given pieces.
fn translate_stream<'a>(
    from: Dialect,
    name: &str,
    pieces: impl IntoIterator<Item = &'a [u8]>,
) -> (Vec<u8>, StreamTranslator) {
    let mut translator = StreamTranslator::new(from, stream_opts(name));
    let mut out = Vec::new();
    for piece in pieces {
        translator.feed(piece, &mut out);
    }
    translator.finish(&mut out);
    (out, translator)
}

fn run_streams(dir: &str, from: Dialect) {
    run_dir(dir, |name, input| {
        let (whole, translator) = translate_stream(from, name, [input]);
        assert_well_formed(from.other(), &whole, true);
        for cut in 0..=input.len() {
            let (head, tail) = input.split_at(cut);
            let (out, other) = translate_stream(from, name, [head, tail]);
            assert!(
                out == whole,
                "{dir}/{name}: cut at byte {cut} changed the output"
            );
            assert_eq!(other.is_content_started(), translator.is_content_started());
            assert_eq!(other.upstream_error(), translator.upstream_error());
        }
        let (out, _) = translate_stream(from, name, input.chunks(1));
        assert!(
            out == whole,
            "{dir}/{name}: byte by byte changed the output"
        );
        // Output is written as soon as an event completes: feeding everything but the last
        // byte already gives every event before the last one.
        Output::Sse(whole)
    });
}

#[test]
fn streams_anthropic_to_openai() {
    run_streams("stream/anthropic_to_openai", Dialect::AnthropicMessages);
}

#[test]
fn streams_openai_to_anthropic() {
    run_streams("stream/openai_to_anthropic", Dialect::OpenaiChat);
}

const GEMINI_MODEL: &str = "gemini-2.5-flash";

#[test]
fn responses_api_both_ways() {
    use airlock_llm::translate::{openai_to_responses_response, responses_to_openai_request};
    run_dir("request/responses_to_openai", |_, body| {
        responses_to_openai_request(body).into()
    });
    run_dir("response/openai_to_responses", |_, body| {
        openai_to_responses_response(body, CREATED).into()
    });
}

#[test]
fn requests_to_gemini() {
    for (dir, client) in [
        ("request/openai_to_gemini", Dialect::OpenaiChat),
        ("request/anthropic_to_gemini", Dialect::AnthropicMessages),
    ] {
        run_dir(dir, |_, body| {
            translate_request_to_gemini(client, body, &RequestOptions::new(GEMINI_MODEL)).into()
        });
    }
}

#[test]
fn responses_from_gemini() {
    for (dir, client) in [
        ("response/gemini_to_openai", Dialect::OpenaiChat),
        ("response/gemini_to_anthropic", Dialect::AnthropicMessages),
    ] {
        run_dir(dir, |_, body| {
            translate_gemini_response(client, body, CREATED).into()
        });
    }
}

#[test]
fn errors_from_gemini() {
    for (dir, client) in [
        ("error/gemini_to_openai", Dialect::OpenaiChat),
        ("error/gemini_to_anthropic", Dialect::AnthropicMessages),
    ] {
        run_dir(dir, |name, body| {
            Output::Json(translate_gemini_error_body(client, status_of(name), body))
        });
    }
}

fn translate_gemini_stream<'a>(
    to: Dialect,
    name: &str,
    pieces: impl IntoIterator<Item = &'a [u8]>,
) -> (Vec<u8>, StreamTranslator) {
    let mut translator = StreamTranslator::from_gemini(to, stream_opts(name));
    let mut out = Vec::new();
    for piece in pieces {
        translator.feed(piece, &mut out);
    }
    translator.finish(&mut out);
    (out, translator)
}

#[test]
fn streams_from_gemini() {
    for (dir, to) in [
        ("stream/gemini_to_openai", Dialect::OpenaiChat),
        ("stream/gemini_to_anthropic", Dialect::AnthropicMessages),
    ] {
        run_dir(dir, |name, input| {
            let (whole, translator) = translate_gemini_stream(to, name, [input]);
            assert_well_formed(to, &whole, true);
            for cut in 0..=input.len() {
                let (head, tail) = input.split_at(cut);
                let (out, other) = translate_gemini_stream(to, name, [head, tail]);
                assert!(
                    out == whole,
                    "{dir}/{name}: cut at byte {cut} changed the output"
                );
                assert_eq!(other.is_content_started(), translator.is_content_started());
                assert_eq!(other.upstream_error(), translator.upstream_error());
            }
            Output::Sse(whole)
        });
        // What the router needs: content, and the error (Anthropic's type) it ended with.
        for (name, content, error) in [
            ("text", true, None),
            ("error_first_event", false, Some("overloaded_error")),
            ("error_mid_stream", true, Some("api_error")),
            ("truncated_before_finish", true, Some("api_error")),
        ] {
            let input = std::fs::read(root().join(dir).join(format!("{name}.in.sse"))).unwrap();
            let (_, t) = translate_gemini_stream(to, name, [input.as_slice()]);
            assert_eq!(t.is_content_started(), content, "{dir}/{name}");
            let got = t.upstream_error().map(|e| e.error_type.as_str());
            assert_eq!(got, error, "{dir}/{name}");
            assert!(t.is_done(), "{dir}/{name}");
        }
    }
}

/// What the router needs to know of each stream: whether content reached the client, and
/// the error it ended with (Anthropic's type).
#[test]
fn stream_flags_for_failover() {
    let cases: [(Dialect, &str, bool, Option<&str>); 9] = [
        (Dialect::AnthropicMessages, "text", true, None),
        (
            Dialect::AnthropicMessages,
            "error_first_event",
            false,
            Some("overloaded_error"),
        ),
        (
            Dialect::AnthropicMessages,
            "error_mid_stream",
            true,
            Some("overloaded_error"),
        ),
        (
            Dialect::AnthropicMessages,
            "truncated_before_message_stop",
            false,
            Some("api_error"),
        ),
        (Dialect::OpenaiChat, "text", true, None),
        (
            Dialect::OpenaiChat,
            "error_first_chunk",
            false,
            Some("rate_limit_error"),
        ),
        (
            Dialect::OpenaiChat,
            "error_mid_stream",
            true,
            Some("api_error"),
        ),
        (Dialect::OpenaiChat, "no_done_no_usage", true, None),
        (
            Dialect::OpenaiChat,
            "truncated_before_finish",
            true,
            Some("api_error"),
        ),
    ];
    for (from, name, content, error) in cases {
        let dir = match from {
            Dialect::AnthropicMessages => "stream/anthropic_to_openai",
            Dialect::OpenaiChat => "stream/openai_to_anthropic",
        };
        let input = std::fs::read(root().join(dir).join(format!("{name}.in.sse"))).unwrap();
        let (_, translator) = translate_stream(from, name, [input.as_slice()]);
        assert_eq!(translator.is_content_started(), content, "{dir}/{name}");
        let got = translator.upstream_error().map(|e| e.error_type.as_str());
        assert_eq!(got, error, "{dir}/{name}");
        assert_eq!(
            translator.failed_before_content(),
            error.is_some() && !content,
            "{dir}/{name}"
        );
        assert!(translator.is_done());
    }
}

/// A 200 whose first event is an error is known to have failed as soon as that event arrives,
/// before the body ends, so a router can retry without waiting.
#[test]
fn an_error_first_is_seen_at_once() {
    for (from, event) in [
        (
            Dialect::AnthropicMessages,
            &b"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n"[..],
        ),
        (
            Dialect::OpenaiChat,
            &b"data: {\"error\":{\"message\":\"busy\",\"type\":\"server_error\"}}\n\n"[..],
        ),
    ] {
        let mut translator = StreamTranslator::new(from, stream_opts("x"));
        let mut out = Vec::new();
        translator.feed(event, &mut out);
        assert!(translator.failed_before_content() && translator.is_done());
        assert!(!out.is_empty(), "the client's error event is written at once");
    }
    // Before the first content, output may exist (the role chunk) but no content.
    let mut translator = StreamTranslator::new(Dialect::AnthropicMessages, stream_opts("x"));
    let mut out = Vec::new();
    translator.feed(b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"model\":\"c\",\"usage\":{\"input_tokens\":1}}}\n\nevent: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n", &mut out);
    assert!(!translator.is_content_started() && !out.is_empty());
    translator.feed(b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n", &mut out);
    assert!(
        !translator.is_content_started(),
        "not before the blank line"
    );
    translator.feed(b"\n", &mut out);
    assert!(translator.is_content_started());
}

/// An event over the bound ends the stream with an error rather than growing without limit.
#[test]
fn oversized_events_end_the_stream() {
    for from in [Dialect::AnthropicMessages, Dialect::OpenaiChat] {
        let mut translator = StreamTranslator::new(from, stream_opts("x"));
        let mut out = Vec::new();
        translator.feed(b"data: {\"x\":\"", &mut out);
        let piece = vec![b'a'; 64 * 1024];
        for _ in 0..17 {
            translator.feed(&piece, &mut out);
            assert!(translator.buffered_bytes() <= airlock_llm::translate::MAX_EVENT_BYTES);
        }
        assert!(translator.is_done());
        assert!(translator.failed_before_content());
        assert_well_formed(from.other(), &out, true);
        let error = translator.upstream_error().unwrap();
        assert!(error.message.contains("larger than"), "{}", error.message);
    }
}

// ---------------------------------------------------------------------------------------------
// Round trips: what a client gets back from one dialect can be sent again through the other.
// ---------------------------------------------------------------------------------------------

fn fixture(path: &str) -> Vec<u8> {
    std::fs::read(root().join(path)).unwrap()
}

fn value(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap()
}

/// An Anthropic answer with thinking goes to an OpenAI client; the client sends the assistant
/// message back (with `thinking_blocks`); Anthropic gets the blocks with their signatures.
#[test]
fn thinking_signatures_survive_a_round_trip() {
    let original = value(&fixture(
        "response/anthropic_to_openai/thinking_with_signature.in.json",
    ));
    let response =
        anthropic_to_openai_response(&serde_json::to_vec(&original).unwrap(), 1).unwrap();
    let message = value(&response)["choices"][0]["message"].clone();
    let request = json!({
        "model": "x",
        "messages": [{"role": "user", "content": "What is 27 * 453?"}, message,
                     {"role": "user", "content": "Thanks"}],
    });
    let back = openai_to_anthropic_request(
        &serde_json::to_vec(&request).unwrap(),
        &RequestOptions::new(ANTHROPIC_MODEL),
    )
    .unwrap();
    let back = value(&back);
    assert_eq!(back["messages"][1]["content"], original["content"]);
}

/// The streamed form: the client puts the deltas together as OpenAI's SDK does with extra
/// fields (concatenating `reasoning_content`, keeping `thinking_blocks`); the signature arrives.
#[test]
fn streamed_thinking_carries_its_signature() {
    let input = fixture("stream/anthropic_to_openai/thinking_signature_cache.in.sse");
    let (out, _) = translate_stream(Dialect::AnthropicMessages, "x", [input.as_slice()]);
    let mut reasoning = String::new();
    let mut signature = String::new();
    for event in translate_support::events(&out) {
        if event.data == "[DONE]" {
            continue;
        }
        let chunk = value(event.data.as_bytes());
        let delta = &chunk["choices"][0]["delta"];
        reasoning.push_str(delta["reasoning_content"].as_str().unwrap_or(""));
        if let Some(blocks) = delta["thinking_blocks"].as_array() {
            signature.push_str(blocks[0]["signature"].as_str().unwrap());
        }
    }
    assert_eq!(
        reasoning,
        "The user asks for a list of numbers; I will answer with JSON."
    );
    assert_eq!(
        signature,
        "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds"
    );
}

/// Tool call ids, names, arguments and results keep their pairing through both directions.
#[test]
fn tool_calls_and_results_round_trip() {
    let original = fixture("request/openai_to_anthropic/tools_parallel_calls_and_results.in.json");
    let anthropic =
        openai_to_anthropic_request(&original, &RequestOptions::new(ANTHROPIC_MODEL)).unwrap();
    let back = anthropic_to_openai_request(&anthropic, &RequestOptions::new("gpt-4.1")).unwrap();
    let (original, back) = (value(&original), value(&back));
    let pick = |messages: &Value, role: &str| -> Vec<Value> {
        messages
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["role"] == role)
            .cloned()
            .collect()
    };
    let calls = |messages: &Value| -> Vec<(Value, Value, Value)> {
        pick(messages, "assistant")
            .iter()
            .flat_map(|m| m["tool_calls"].as_array().cloned().unwrap_or_default())
            .map(|c| {
                let arguments: Value =
                    serde_json::from_str(c["function"]["arguments"].as_str().unwrap()).unwrap();
                (c["id"].clone(), c["function"]["name"].clone(), arguments)
            })
            .collect()
    };
    assert_eq!(calls(&original["messages"]), calls(&back["messages"]));
    let results = |messages: &Value| -> Vec<(Value, String)> {
        pick(messages, "tool")
            .iter()
            .map(|m| {
                let content = match &m["content"] {
                    Value::String(s) => s.clone(),
                    parts => parts[0]["text"].as_str().unwrap().to_owned(),
                };
                (m["tool_call_id"].clone(), content)
            })
            .collect()
    };
    assert_eq!(results(&original["messages"]), results(&back["messages"]));
    assert_eq!(back["tool_choice"], "required");
    assert_eq!(back["parallel_tool_calls"], false);
}

/// Anthropic → OpenAI → Anthropic of a whole response keeps text, tool uses and stop reason.
#[test]
fn responses_round_trip() {
    for case in [
        "tool_use_parallel",
        "max_tokens",
        "text_end_turn_cache_usage",
    ] {
        let original = fixture(&format!("response/anthropic_to_openai/{case}.in.json"));
        let openai = anthropic_to_openai_response(&original, 1).unwrap();
        let back = value(&openai_to_anthropic_response(&openai).unwrap());
        let original = value(&original);
        assert_eq!(back["content"], original["content"], "{case}");
        assert_eq!(back["stop_reason"], original["stop_reason"], "{case}");
        assert_eq!(back["id"], original["id"], "{case}");
        let tokens = |u: &Value, k: &str| u[k].as_u64().unwrap_or(0);
        for key in ["output_tokens", "cache_read_input_tokens"] {
            assert_eq!(
                tokens(&back["usage"], key),
                tokens(&original["usage"], key),
                "{case} {key}"
            );
        }
        // OpenAI has no count of tokens written to the cache: they come back as plain input.
        let input =
            |u: &Value| tokens(u, "input_tokens") + tokens(u, "cache_creation_input_tokens");
        assert_eq!(input(&back["usage"]), input(&original["usage"]), "{case}");
    }
}

/// A refused translation answers 400 in the client's dialect.
#[test]
fn refusals_answer_in_the_clients_dialect() {
    let error = openai_to_anthropic_request(
        br#"{"model":"m","messages":[{"role":"user","content":"Hi"}],"n":2}"#,
        &RequestOptions::new(ANTHROPIC_MODEL),
    )
    .unwrap_err();
    assert_eq!(error.status(), 400);
    assert_eq!(error.kind, ErrorKind::Unsupported);
    let body = value(&error.body(Dialect::OpenaiChat));
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert_eq!(body["error"]["message"], error.message);
    let error = anthropic_to_openai_request(b"{", &RequestOptions::new(OPENAI_MODEL)).unwrap_err();
    assert_eq!(error.kind, ErrorKind::Malformed);
    let body = value(&error.body(Dialect::AnthropicMessages));
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "invalid_request_error");
}
