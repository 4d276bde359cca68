//! Property tests of the meter (SECURITY #28): for arbitrary bytes, JSON-and-SSE-shaped token
//! soup, and mutated real responses, cutting the body anywhere changes nothing, the state stays
//! bounded, and the numbers keep their invariants. `airlock_llm::fuzz_meter` asserts all that on
//! each input; these tests feed it inputs that reach deep into the scanner.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly by design.

use airlock_llm::{fuzz_meter, Api, Meter};
use proptest::prelude::*;

/// Pieces of the dialects' syntax, so random input often parses far.
const TOKENS: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    ":",
    ",",
    "\"",
    "\\",
    "\\\"",
    " ",
    "\n",
    "\r",
    "\r\n",
    "\n\n",
    "data: ",
    "data:",
    "event: error\n",
    "event: message_delta\n",
    ": ping\n",
    "[DONE]",
    "\"usage\"",
    "\"model\"",
    "\"message\"",
    "\"response\"",
    "\"choices\"",
    "\"delta\"",
    "\"content\"",
    "\"text\"",
    "\"error\"",
    "\"type\"",
    "\"finish_reason\"",
    "\"stop\"",
    "\"prompt_tokens\"",
    "\"completion_tokens\"",
    "\"cached_tokens\"",
    "\"reasoning_tokens\"",
    "\"prompt_tokens_details\"",
    "\"input_tokens\"",
    "\"output_tokens\"",
    "\"cache_read_input_tokens\"",
    "\"cache_creation_input_tokens\"",
    "\"usageMetadata\"",
    "\"promptTokenCount\"",
    "\"candidatesTokenCount\"",
    "\"thoughtsTokenCount\"",
    "\"finishReason\"",
    "\"candidates\"",
    "\"parts\"",
    "\"modelVersion\"",
    "\"gpt-4o\"",
    "0",
    "7",
    "42",
    "-1",
    "1.5",
    "1e3",
    "99999999999999999999999",
    "null",
    "true",
    "false",
];

fn soup() -> impl Strategy<Value = Vec<u8>> {
    (
        any::<u8>(),
        prop::collection::vec(prop::sample::select(TOKENS), 0..200),
    )
        .prop_map(|(control, tokens)| {
            let mut data = vec![control];
            for token in tokens {
                data.extend_from_slice(token.as_bytes());
            }
            data
        })
}

const FIXTURES: &[(&str, Api, bool)] = &[
    ("openai_chat.json", Api::OpenaiCompletions, false),
    ("openai_chat_stream.sse", Api::OpenaiCompletions, true),
    ("openai_responses_stream.sse", Api::OpenaiResponses, true),
    (
        "anthropic_stream_cache_thinking.sse",
        Api::AnthropicMessages,
        true,
    ),
    ("anthropic_messages.json", Api::AnthropicMessages, false),
    ("gemini_stream.sse", Api::Gemini, true),
    ("gemini_stream_array.json", Api::Gemini, false),
];

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn control(api: Api, sse: bool) -> u8 {
    let index = Api::ALL.iter().position(|&a| a == api).unwrap() as u8;
    index | if sse { 8 } else { 0 }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn arbitrary_bytes(data in prop::collection::vec(any::<u8>(), 0..4096)) {
        fuzz_meter(&data);
    }

    #[test]
    fn token_soup(data in soup()) {
        fuzz_meter(&data);
    }

    /// A real response with a few bytes replaced, inserted or removed: still every promise.
    #[test]
    fn mutated_responses(
        which in 0..FIXTURES.len(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), 0..3u8, prop::sample::select(TOKENS)), 0..6),
    ) {
        let (name, api, sse) = FIXTURES[which];
        let mut body = fixture(name);
        for (at, kind, token) in edits {
            let at = at.index(body.len() + 1);
            match kind {
                0 => { body.splice(at..at, token.bytes()); }
                1 if at < body.len() => { body.remove(at); }
                _ => { body.splice(at..(at + token.len()).min(body.len()), token.bytes()); }
            }
        }
        let mut data = vec![control(api, sse)];
        data.extend_from_slice(&body);
        fuzz_meter(&data);
    }

    /// Any set of cut points, not just the fuzz body's pseudo-random ones.
    #[test]
    fn any_cuts_of_real_responses(
        which in 0..FIXTURES.len(),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..40),
    ) {
        let (name, api, sse) = FIXTURES[which];
        let body = fixture(name);
        let mut whole = Meter::new(api, sse);
        whole.feed(&body);
        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(body.len() + 1)).collect();
        points.sort_unstable();
        let mut cut = Meter::new(api, sse);
        let mut from = 0;
        for point in points.into_iter().chain([body.len()]) {
            cut.feed(&body[from..point]);
            from = point;
        }
        prop_assert_eq!(whole.finish(), cut.finish());
        prop_assert!(whole.finish().usage.exact);
    }
}

/// Inputs that once broke a promise, kept as regressions.
#[test]
fn regressions() {
    let cases: &[&[u8]] = &[
        b"",
        b"\x08data: {\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":1},\"choices\":[{\"finish_reason\":\"stop\"}]}",
        b"\x02{\"usage\":{\"input_tokens\":1099511627776,\"cache_read_input_tokens\":1099511627776,\"cache_creation_input_tokens\":1099511627776,\"output_tokens\":1}}",
        b"\x0a\r\r\n\rdata:{\"usage\":{\"input_tokens\":0}}\r",
    ];
    for data in cases {
        fuzz_meter(data);
    }
}
