//! Golden tests of the streaming meter: real-shaped response bodies of each dialect, fed whole,
//! split at every byte boundary, byte by byte and at pseudo-random points, with LF, CRLF and CR
//! line ends. Every way of cutting a body must give the same, exact numbers.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly by design.

use airlock_llm::{Api, Meter, Reading, Usage};

struct Case {
    file: &'static str,
    api: Api,
    sse: bool,
    /// input, output, cache read, cache write, reasoning
    usage: (u64, u64, u64, u64, u64),
    model: Option<&'static str>,
    exact: bool,
    error: bool,
}

const fn case(
    file: &'static str,
    api: Api,
    usage: (u64, u64, u64, u64, u64),
    model: Option<&'static str>,
    exact: bool,
    error: bool,
) -> Case {
    let sse = file.as_bytes()[file.len() - 1] == b'e'; // `.sse`
    Case {
        file,
        api,
        sse,
        usage,
        model,
        exact,
        error,
    }
}

use Api::{
    AnthropicMessages as Anthropic, Gemini, OpenaiCompletions as Chat, OpenaiResponses as Responses,
};

/// (file, dialect, (input, output, cache read, cache write, reasoning), model, exact, error)
#[rustfmt::skip]
const CASES: &[Case] = &[
    case("openai_chat.json", Chat, (1117, 210, 1024, 0, 192), Some("o3-mini-2025-01-31"), true, false),
    case("openai_chat_stream.sse", Chat, (2006, 12, 1920, 0, 0), Some("gpt-4o-2024-08-06"), true, false),
    // No `stream_options.include_usage`: the output is estimated from 62 bytes of text.
    case("openai_chat_stream_no_usage.sse", Chat, (0, 16, 0, 0, 0), Some("gpt-4o-mini-2024-07-18"), false, false),
    case("openai_chat_stream_tools.sse", Chat, (81, 17, 0, 0, 0), Some("gpt-4.1-2025-04-14"), true, false),
    case("groq_chat_stream.sse", Chat, (48, 5, 0, 0, 0), Some("llama-3.3-70b-versatile"), true, false),
    case("openai_error.json", Chat, (0, 0, 0, 0, 0), None, false, true),
    case("openai_responses.json", Responses, (2400, 523, 2048, 0, 448), Some("gpt-5-mini-2025-08-07"), true, false),
    case("openai_responses_stream.sse", Responses, (1337, 9, 1152, 0, 0), Some("gpt-4.1-2025-04-14"), true, false),
    case("openai_responses_incomplete.sse", Responses, (20, 16, 0, 0, 0), Some("gpt-4.1-2025-04-14"), true, false),
    case("openai_responses_error.sse", Responses, (0, 0, 0, 0, 0), Some("gpt-4.1-2025-04-14"), false, true),
    // Anthropic's input_tokens leave out the cache: 21 + 188086 written.
    case("anthropic_messages.json", Anthropic, (188_107, 393, 0, 188_086, 0), Some("claude-sonnet-4-5-20250929"), true, false),
    // Ends without the blank line after its last event.
    case("anthropic_stream.sse", Anthropic, (11, 6, 0, 0, 0), Some("claude-3-opus-latest"), true, false),
    // 135 + 2051 written + 10240 read; message_delta repeats the input counts and adds thinking.
    case("anthropic_stream_cache_thinking.sse", Anthropic, (12_426, 87, 10_240, 2051, 67), Some("claude-opus-4-1-20250805"), true, false),
    // Overloaded mid-stream: the input is known from message_start, the output estimated from 48 bytes.
    case("anthropic_stream_error.sse", Anthropic, (4200, 12, 0, 0, 0), Some("claude-haiku-4-5-20251001"), false, true),
    case("anthropic_error.json", Anthropic, (0, 0, 0, 0, 0), None, false, true),
    // Thoughts are output: 17 + 992.
    case("gemini.json", Gemini, (4113, 1009, 4096, 0, 992), Some("gemini-2.5-flash"), true, false),
    case("gemini_stream.sse", Gemini, (9, 420, 0, 0, 403), Some("gemini-2.5-pro"), true, false),
    // A stream without alt=sse: one JSON array; tool-use prompt tokens are input (6 + 3).
    case("gemini_stream_array.json", Gemini, (9, 11, 0, 0, 0), Some("gemini-2.0-flash"), true, false),
    case("gemini_error.json", Gemini, (0, 0, 0, 0, 0), None, false, true),
    case("gemini_blocked.json", Gemini, (12, 0, 0, 0, 0), Some("gemini-2.5-flash"), true, false),
];

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn meter<'a>(api: Api, sse: bool, pieces: impl IntoIterator<Item = &'a [u8]>) -> Meter {
    let mut meter = Meter::new(api, sse);
    for piece in pieces {
        meter.feed(piece);
    }
    meter
}

fn expected(case: &Case) -> Reading {
    let (input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, reasoning_tokens) =
        case.usage;
    Reading {
        model: case.model.map(str::to_owned),
        usage: Usage {
            input_tokens,
            output_tokens,
            cache_read_tokens,
            cache_write_tokens,
            reasoning_tokens,
            exact: case.exact,
        },
    }
}

/// The body with every line end rewritten as `eol`, for SSE bodies.
fn with_line_ends(body: &[u8], eol: &[u8]) -> Vec<u8> {
    let text = String::from_utf8(body.to_vec())
        .unwrap()
        .replace("\r\n", "\n");
    text.replace('\n', std::str::from_utf8(eol).unwrap())
        .into_bytes()
}

/// A small deterministic generator, so a failure names a seed that reproduces it.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, bound: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 33) as usize) % bound.max(1)
    }
}

#[test]
fn golden_fixtures_whatever_the_cuts() {
    for case in CASES {
        let original = fixture(case.file);
        let bodies = if case.sse {
            vec![
                with_line_ends(&original, b"\n"),
                with_line_ends(&original, b"\r\n"),
                with_line_ends(&original, b"\r"),
            ]
        } else {
            vec![original]
        };
        let want = expected(case);
        for body in &bodies {
            let whole = meter(case.api, case.sse, [&body[..]]);
            assert_eq!(whole.finish(), want, "{} whole", case.file);
            assert_eq!(whole.saw_error(), case.error, "{} error", case.file);
            for at in 0..=body.len() {
                let split = meter(case.api, case.sse, [&body[..at], &body[at..]]);
                assert_eq!(split.finish(), want, "{} split at {at}", case.file);
            }
            let bytes = meter(case.api, case.sse, body.chunks(1));
            assert_eq!(bytes.finish(), want, "{} byte by byte", case.file);
            for seed in 0..20 {
                let mut rng = Lcg(seed);
                let mut pieces = Vec::new();
                let mut rest = &body[..];
                while !rest.is_empty() {
                    let n = rng.next(rest.len().min(64)) + 1;
                    pieces.push(&rest[..n]);
                    rest = &rest[n..];
                }
                let cut = meter(case.api, case.sse, pieces);
                assert_eq!(cut.finish(), want, "{} seed {seed}", case.file);
            }
        }
    }
}

/// SECURITY #29: a client that leaves after any prefix of the answer is billed something, and
/// what an unfinished answer reports is never exact.
#[test]
fn every_prefix_is_billed_and_sane() {
    for case in CASES.iter().filter(|case| !case.error) {
        let body = fixture(case.file);
        let full = meter(case.api, case.sse, [&body[..]]).finish();
        for at in 0..body.len() {
            let partial = meter(case.api, case.sse, [&body[..at]]);
            let estimated = partial.finish_estimated(1000);
            let usage = estimated.usage;
            assert!(usage.input_tokens > 0, "{} at {at}: input", case.file);
            assert!(usage.cache_read_tokens + usage.cache_write_tokens <= usage.input_tokens);
            assert!(usage.reasoning_tokens <= usage.output_tokens);
            assert!(
                usage.input_tokens <= full.usage.input_tokens.max(250),
                "{} at {at}",
                case.file
            );
            if estimated.usage.exact {
                assert_eq!(
                    estimated, full,
                    "{} at {at}: exact before the end",
                    case.file
                );
            }
        }
    }
}

#[test]
fn a_usage_that_does_not_add_up_is_not_exact() {
    type Counts = (u64, u64, u64, u64, u64);
    let cases: [(&[u8], Counts); 4] = [
        // cached more than the prompt: the prompt is raised to the cache.
        (br#"{"choices":[{"finish_reason":"stop"}],"usage":{"prompt_tokens":10,"completion_tokens":5,"prompt_tokens_details":{"cached_tokens":50}}}"#, (50, 5, 50, 0, 0)),
        // reasoning more than the output: the output is raised.
        (br#"{"choices":[{"finish_reason":"stop"}],"usage":{"prompt_tokens":10,"completion_tokens":5,"completion_tokens_details":{"reasoning_tokens":9}}}"#, (10, 9, 0, 0, 9)),
        // a negative count is ignored.
        (br#"{"choices":[{"finish_reason":"stop"}],"usage":{"prompt_tokens":-10,"completion_tokens":5}}"#, (0, 5, 0, 0, 0)),
        // an absurd count is ignored.
        (br#"{"choices":[{"finish_reason":"stop"}],"usage":{"prompt_tokens":10,"completion_tokens":18446744073709551615}}"#, (10, 0, 0, 0, 0)),
    ];
    for (body, (input, output, cache_read, cache_write, reasoning)) in cases {
        let metered = meter(Api::OpenaiCompletions, false, [body]).finish();
        let got = metered.usage;
        assert_eq!(
            (
                got.input_tokens,
                got.output_tokens,
                got.cache_read_tokens,
                got.cache_write_tokens,
                got.reasoning_tokens
            ),
            (input, output, cache_read, cache_write, reasoning),
            "{}",
            String::from_utf8_lossy(body)
        );
        assert!(!metered.usage.exact, "{}", String::from_utf8_lossy(body));
    }
}

/// SECURITY #28: whatever the upstream sends, the meter's memory stays the same.
#[test]
fn huge_lines_and_strings_keep_state_bounded() {
    const CHUNK: usize = 64 * 1024;
    const TOTAL: usize = 100 * 1024 * 1024;
    let filler = vec![b'a'; CHUNK];
    for (api, sse, head, tail) in [
        // One 100 MB SSE line inside a content string, then the real usage.
        (Api::OpenaiCompletions, true, &b"data: {\"choices\":[{\"delta\":{\"content\":\""[..], &b"\"}}]}\n\ndata: {\"choices\":[{\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":3}}\n\n"[..]),
        // One 100 MB JSON string in a key position, then the usage.
        (Api::AnthropicMessages, false, &b"{\"model\":\"claude\",\""[..], &b"\":1,\"usage\":{\"input_tokens\":7,\"output_tokens\":3}}"[..]),
        // A 100 MB model name: dropped, not kept.
        (Api::OpenaiResponses, false, &b"{\"model\":\""[..], &b"\",\"usage\":{\"input_tokens\":7,\"output_tokens\":3}}"[..]),
    ] {
        let mut meter = Meter::new(api, sse);
        let size = meter.state_bytes();
        assert!(size <= 16 * 1024, "{size} bytes of state");
        meter.feed(head);
        for _ in 0..TOTAL / CHUNK {
            meter.feed(&filler);
            assert_eq!(meter.state_bytes(), size);
        }
        meter.feed(tail);
        let metered = meter.finish();
        assert_eq!((metered.usage.input_tokens, metered.usage.output_tokens), (7, 3), "{api}");
        assert!(metered.usage.exact, "{api}");
        assert!(metered.model.as_ref().is_none_or(|m| m.len() <= 256));
    }
}

#[test]
fn api_none_meters_nothing() {
    let body = fixture("openai_chat.json");
    let metered = meter(Api::None, false, [&body[..]]);
    assert_eq!(metered.finish(), Reading::default());
    assert_eq!(metered.finish_estimated(4000), Reading::default());
}

#[test]
fn estimates_fill_what_is_missing() {
    // Nothing arrived at all: output 0, input from the request body, rounded up.
    let empty = Meter::new(Api::OpenaiCompletions, true);
    let metered = empty.finish_estimated(4001);
    assert_eq!(
        (
            metered.usage.input_tokens,
            metered.usage.output_tokens,
            metered.usage.exact
        ),
        (1001, 0, false)
    );
    // Anthropic's message_start gave the input exactly: it is kept, not estimated.
    let body = fixture("anthropic_stream_error.sse");
    let metered = meter(Api::AnthropicMessages, true, [&body[..]]).finish_estimated(1_000_000);
    assert_eq!(metered.usage.input_tokens, 4200);
}

/// Not an assertion (a timing is a benchmark): run with `--release --ignored --nocapture` to
/// see the meter's state size and throughput on this machine, fed in 16 KiB frames.
#[test]
#[ignore = "prints timings"]
fn measure_throughput() {
    const TARGET: usize = 64 * 1024 * 1024;
    let inputs = [
        ("openai_chat_stream.sse", Api::OpenaiCompletions, true),
        (
            "anthropic_stream_cache_thinking.sse",
            Api::AnthropicMessages,
            true,
        ),
        ("openai_responses_stream.sse", Api::OpenaiResponses, true),
        ("gemini_stream.sse", Api::Gemini, true),
        ("openai_responses.json", Api::OpenaiResponses, false),
    ];
    println!(
        "state: {} bytes",
        Meter::new(Api::OpenaiCompletions, true).state_bytes()
    );
    for (file, api, sse) in inputs {
        let one = fixture(file);
        let mut body = Vec::with_capacity(TARGET + one.len());
        while body.len() < TARGET {
            body.extend_from_slice(&one);
            if sse {
                body.extend_from_slice(b"\n\n");
            }
        }
        let start = std::time::Instant::now();
        let mut meter = Meter::new(api, sse);
        for frame in body.chunks(16 * 1024) {
            meter.feed(frame);
        }
        let metered = meter.finish();
        let elapsed = start.elapsed();
        let mb_s = body.len() as f64 / elapsed.as_secs_f64() / 1e6;
        println!(
            "{file}: {mb_s:.0} MB/s ({} input tokens last seen)",
            metered.usage.input_tokens
        );
    }
    // Generated text dominates real streams: one long content string.
    let mut body = b"data: {\"choices\":[{\"delta\":{\"content\":\"".to_vec();
    body.resize(TARGET, b'x');
    let start = std::time::Instant::now();
    let mut meter = Meter::new(Api::OpenaiCompletions, true);
    for frame in body.chunks(16 * 1024) {
        meter.feed(frame);
    }
    let mb_s = body.len() as f64 / start.elapsed().as_secs_f64() / 1e6;
    println!("one long content string: {mb_s:.0} MB/s");
}
