//! The upstream every benchmark arm talks to. One program, chosen by path:
//!
//! - `/instant`: a small JSON answer at once;
//! - `/delay`: the same answer after a fixed 50 ms (many requests in flight);
//! - `/sse`: `text/event-stream`, 64 events 20 ms apart, each written as its own chunk;
//! - `POST /v1/messages`: a real-shaped Anthropic Messages answer at once, `usage` included
//!   (`input_tokens`, `cache_creation_input_tokens`, `cache_read_input_tokens`, `output_tokens`);
//!   with `"stream": true` in the body, Anthropic's SSE instead: exactly 64 events 20 ms apart
//!   like `/sse` (`message_start` with the input usage, `content_block_start`, 59 text deltas,
//!   `content_block_stop`, `message_delta` with the cumulative usage, `message_stop`);
//! - `POST /v1/chat/completions`: the same in OpenAI's Chat Completions dialect: a
//!   `chat.completion` with `usage`, or with `"stream": true` 64 SSE events 20 ms apart (a role
//!   chunk, text deltas, a `finish_reason` chunk, the usage-only chunk with `"choices": []` when
//!   the body sets `stream_options.include_usage`, and `data: [DONE]`); the number of text deltas
//!   makes up the 64 either way. A metering gateway that asks for the usage on the client's
//!   behalf and takes the usage chunk out again hands its client 63 of them;
//! - `/echo-key`: the `x-api-key` it received, as the body (the propagation tool reads it).
//!
//! Every mode except `/echo-key` answers 401 unless `x-api-key` equals `--key`, so an arm that
//! did not swap the token for the real key shows up as errors, not as speed. Every answer is
//! built once at start; a stream writes each event as its own chunk.
//!
//! `bench-upstream --addr 127.0.0.1:9100 --key sk-bench --threads 1`

use std::convert::Infallible;
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;

const BODY: &[u8] =
    br#"{"id":"msg_bench","type":"message","content":[{"type":"text","text":"hello"}]}"#;
const DELAY: Duration = Duration::from_millis(50);
const SSE_EVENTS: usize = 64;
const SSE_GAP: Duration = Duration::from_millis(20);

/// Models with a price in the bundled table, so a metering gateway also prices the answer.
const ANTHROPIC_MODEL: &str = "claude-sonnet-4-5-20250929";
const OPENAI_MODEL: &str = "gpt-4o-mini-2024-07-18";
const INPUT_TOKENS: u64 = 25;
const CACHE_READ_TOKENS: u64 = 2048;
/// Tokens of the non-streaming answers.
const OUTPUT_TOKENS: u64 = 12;
const ANSWER: &str = "Hello! How can I help you today?";

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// Every answer, built once.
struct Answers {
    sse: Vec<Bytes>,
    anthropic_json: Bytes,
    anthropic_sse: Vec<Bytes>,
    openai_json: Bytes,
    openai_sse: Vec<Bytes>,
    openai_sse_usage: Vec<Bytes>,
}

fn is_json(text: &[u8]) -> bool {
    serde_json::from_slice::<Value>(text).is_ok()
}

fn anthropic_event(name: &str, data: &str) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

fn openai_event(data: &str) -> Bytes {
    Bytes::from(format!("data: {data}\n\n"))
}

// The answers are written out by hand, not through `json!`, to keep the providers' key order
// (`type` first in Anthropic's events) and compact form: a streaming usage reader sees the same
// bytes it would see from the real APIs.
impl Answers {
    fn new() -> Answers {
        let sse = (0..SSE_EVENTS)
            .map(|i| Bytes::from(format!("event: delta\ndata: {{\"n\":{i}}}\n\n")))
            .collect();

        let id = "msg_01BenchUpstream000000000";
        let m = ANTHROPIC_MODEL;
        let (input, cached) = (INPUT_TOKENS, CACHE_READ_TOKENS);
        let usage = |output: u64| {
            format!(
                r#"{{"input_tokens":{input},"cache_creation_input_tokens":0,"cache_read_input_tokens":{cached},"cache_creation":{{"ephemeral_5m_input_tokens":0,"ephemeral_1h_input_tokens":0}},"output_tokens":{output},"service_tier":"standard"}}"#
            )
        };
        let anthropic_json = Bytes::from(format!(
            r#"{{"id":"{id}","type":"message","role":"assistant","model":"{m}","content":[{{"type":"text","text":"{ANSWER}"}}],"stop_reason":"end_turn","stop_sequence":null,"usage":{}}}"#,
            usage(OUTPUT_TOKENS)
        ));
        // message_start, content_block_start, the deltas, content_block_stop, message_delta,
        // message_stop: 64 in all.
        let deltas = SSE_EVENTS - 5;
        let mut anthropic_sse = vec![
            anthropic_event(
                "message_start",
                &format!(
                    r#"{{"type":"message_start","message":{{"id":"{id}","type":"message","role":"assistant","model":"{m}","content":[],"stop_reason":null,"stop_sequence":null,"usage":{}}}}}"#,
                    usage(1)
                ),
            ),
            anthropic_event(
                "content_block_start",
                r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
            ),
        ];
        anthropic_sse.extend((0..deltas).map(|i| {
            anthropic_event(
                "content_block_delta",
                &format!(
                    r#"{{"type":"content_block_delta","index":0,"delta":{{"type":"text_delta","text":"word{i} "}}}}"#
                ),
            )
        }));
        anthropic_sse.push(anthropic_event(
            "content_block_stop",
            r#"{"type":"content_block_stop","index":0}"#,
        ));
        // Cumulative: the usage so far, which replaces message_start's.
        anthropic_sse.push(anthropic_event(
            "message_delta",
            &format!(
                r#"{{"type":"message_delta","delta":{{"stop_reason":"end_turn","stop_sequence":null}},"usage":{}}}"#,
                usage(deltas as u64)
            ),
        ));
        anthropic_sse.push(anthropic_event(
            "message_stop",
            r#"{"type":"message_stop"}"#,
        ));

        let id = "chatcmpl-BenchUpstream0000000000000";
        let m = OPENAI_MODEL;
        let prompt = INPUT_TOKENS + CACHE_READ_TOKENS;
        let usage = |completion: u64| {
            let total = prompt + completion;
            format!(
                r#"{{"prompt_tokens":{prompt},"completion_tokens":{completion},"total_tokens":{total},"prompt_tokens_details":{{"cached_tokens":{cached},"audio_tokens":0}},"completion_tokens_details":{{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}}}"#
            )
        };
        let openai_json = Bytes::from(format!(
            r#"{{"id":"{id}","object":"chat.completion","created":1735689600,"model":"{m}","choices":[{{"index":0,"message":{{"role":"assistant","content":"{ANSWER}","refusal":null,"annotations":[]}},"logprobs":null,"finish_reason":"stop"}}],"usage":{},"service_tier":"default","system_fingerprint":"fp_bench"}}"#,
            usage(OUTPUT_TOKENS)
        ));
        // A role chunk, the deltas, a finish chunk, (the usage chunk), [DONE]: 64 in all.
        let openai_stream = |with_usage: bool| -> Vec<Bytes> {
            let deltas = SSE_EVENTS - 3 - usize::from(with_usage);
            let head = format!(
                r#"{{"id":"{id}","object":"chat.completion.chunk","created":1735689600,"model":"{m}","service_tier":"default","system_fingerprint":"fp_bench","choices":"#
            );
            // With include_usage, OpenAI puts `"usage":null` on every other chunk.
            let tail = if with_usage { r#","usage":null}"# } else { "}" };
            let chunk = |delta: &str, finish: &str| {
                openai_event(&format!(
                    r#"{head}[{{"index":0,"delta":{delta},"logprobs":null,"finish_reason":{finish}}}]{tail}"#
                ))
            };
            let mut events = vec![chunk(
                r#"{"role":"assistant","content":"","refusal":null}"#,
                "null",
            )];
            events.extend(
                (0..deltas).map(|i| chunk(&format!(r#"{{"content":"word{i} "}}"#), "null")),
            );
            events.push(chunk("{}", r#""stop""#));
            if with_usage {
                events.push(openai_event(&format!(
                    r#"{head}[],"usage":{}}}"#,
                    usage(deltas as u64)
                )));
            }
            events.push(Bytes::from_static(b"data: [DONE]\n\n"));
            events
        };
        let answers = Answers {
            sse,
            anthropic_json,
            anthropic_sse,
            openai_json,
            openai_sse: openai_stream(false),
            openai_sse_usage: openai_stream(true),
        };
        for stream in [
            &answers.sse,
            &answers.anthropic_sse,
            &answers.openai_sse,
            &answers.openai_sse_usage,
        ] {
            assert_eq!(stream.len(), SSE_EVENTS);
            for event in stream {
                let data = event
                    .split(|b| *b == b'\n')
                    .find_map(|line| line.strip_prefix(b"data: "))
                    .unwrap_or_default();
                assert!(data == b"[DONE]" || is_json(data), "{event:?}");
            }
        }
        assert!(is_json(&answers.anthropic_json) && is_json(&answers.openai_json));
        answers
    }
}

fn full(status: StatusCode, body: Bytes, content_type: &'static str) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .body(Full::new(body).boxed())
        .unwrap_or_default()
}

fn error(status: StatusCode, message: &'static str) -> Response<Body> {
    let body = format!(
        r#"{{"type":"error","error":{{"type":"invalid_request_error","message":"{message}"}}}}"#
    );
    full(status, Bytes::from(body), "application/json")
}

/// `events`, one chunk each, [`SSE_GAP`] apart; the first at once.
fn stream(events: &'static [Bytes]) -> Response<Body> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(4);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(SSE_GAP);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        for event in events {
            tick.tick().await;
            if tx.send(Ok(Frame::data(event.clone()))).await.is_err() {
                return;
            }
        }
    });
    let body =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|f| (f, rx)) });
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(StreamBody::new(body).boxed())
        .unwrap_or_default()
}

async fn handle(
    key: &'static [u8],
    answers: &'static Answers,
    req: Request<Incoming>,
) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let path = path.as_str();
    if path == "/echo-key" {
        let seen = req
            .headers()
            .get("x-api-key")
            .map(|v| Bytes::copy_from_slice(v.as_bytes()))
            .unwrap_or_default();
        return Response::new(Full::new(seen).boxed());
    }
    if req.headers().get("x-api-key").map(|v| v.as_bytes()) != Some(key) {
        return full(
            StatusCode::UNAUTHORIZED,
            Bytes::from_static(br#"{"error":"wrong key"}"#),
            "application/json",
        );
    }
    let llm = matches!(path, "/v1/messages" | "/v1/chat/completions");
    if llm && req.method() != Method::POST {
        return error(StatusCode::METHOD_NOT_ALLOWED, "POST only");
    }
    // Read the request body (the LLM paths look at it; for the others a client may send one).
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let json = |body: &[u8]| serde_json::from_slice::<Value>(body).ok();
    match path {
        "/instant" => full(StatusCode::OK, Bytes::from_static(BODY), "application/json"),
        "/delay" => {
            tokio::time::sleep(DELAY).await;
            full(StatusCode::OK, Bytes::from_static(BODY), "application/json")
        }
        "/sse" => stream(&answers.sse),
        "/v1/messages" => match json(&body) {
            None => error(StatusCode::BAD_REQUEST, "the body is not JSON"),
            Some(b) if b["stream"] == true => stream(&answers.anthropic_sse),
            Some(_) => full(
                StatusCode::OK,
                answers.anthropic_json.clone(),
                "application/json",
            ),
        },
        "/v1/chat/completions" => match json(&body) {
            None => error(StatusCode::BAD_REQUEST, "the body is not JSON"),
            Some(b) if b["stream"] == true => {
                if b["stream_options"]["include_usage"] == true {
                    stream(&answers.openai_sse_usage)
                } else {
                    stream(&answers.openai_sse)
                }
            }
            Some(_) => full(
                StatusCode::OK,
                answers.openai_json.clone(),
                "application/json",
            ),
        },
        _ => full(
            StatusCode::NOT_FOUND,
            Bytes::from_static(b"{}"),
            "application/json",
        ),
    }
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let addr = arg(&args, "--addr").unwrap_or_else(|| "127.0.0.1:9100".into());
    let key: &'static [u8] = arg(&args, "--key")
        .unwrap_or_else(|| "sk-bench-real-key".into())
        .into_bytes()
        .leak();
    let threads: usize = arg(&args, "--threads")
        .map(|t| t.parse())
        .transpose()
        .context("--threads")?
        .unwrap_or(1);
    let answers: &'static Answers = Box::leak(Box::new(Answers::new()));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .with_context(|| format!("--addr {addr}"))?;
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| async move {
                    Ok::<_, Infallible>(handle(key, answers, req).await)
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}
