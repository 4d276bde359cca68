//! Metering through the real data plane: a gateway with an `api` meters every POST's usage and
//! cost from the upstream's real-shaped answers (the fixtures of `airlock-llm`, taken from the
//! providers' API references and SDKs), JSON and SSE, streams asked for their usage and the
//! extra chunk taken out again, a client that leaves mid-stream (drained, still billed), error
//! answers (free), unknown models (no cost), and a plain passthrough gateway (nothing recorded).
//! Events are read back from the store, so the columns of migration 0004 are covered too.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly by design.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use airlock_core::state::{LlmSettings, RequestAuditEvent};
use airlock_core::{Api, AuthMechanism, ModelSpec, Price};
use airlock_testkit::upstream::Responder;
use airlock_testkit::{RecordedRequest, Reply, TestRequest};
use support::{Harness, Options};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/../airlock-llm/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A fixture's SSE events, each written `gap` after the previous one.
fn events(name: &str, gap: Duration) -> Vec<(Duration, String)> {
    let text = String::from_utf8(fixture(name))
        .unwrap()
        .replace("\r\n", "\n");
    text.split_inclusive("\n\n")
        .map(|e| (gap, e.to_owned()))
        .collect()
}

/// Claude Sonnet's list prices, as an operator would write them in `models`.
fn sonnet_price() -> Price {
    Price {
        input: 3_000_000_000,
        output: 15_000_000_000,
        cache_read: 300_000_000,
        cache_write: 3_750_000_000,
    }
}

fn llm(api: Api, provider: Option<&str>, models: Vec<ModelSpec>) -> LlmSettings {
    LlmSettings {
        provider: provider.map(str::to_owned),
        api,
        models,
    }
}

fn priced(id: &str, price: Price) -> ModelSpec {
    ModelSpec {
        id: id.into(),
        cost: Some(price),
        ..ModelSpec::default()
    }
}

/// The stored event of the last request through `gateway`.
async fn last_event(h: &Harness, gateway: &airlock_core::GatewayConfigId) -> RequestAuditEvent {
    for _ in 0..200 {
        if let Some(e) = h
            .seed
            .request_events()
            .await
            .into_iter()
            .find(|e| e.gateway_config_id.as_ref() == Some(gateway))
        {
            return e;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no event was stored for the gateway")
}

/// A responder that answers each path with a fixture, and keeps the request bodies it got.
fn fixtures(seen: Arc<Mutex<Vec<String>>>) -> Responder {
    Arc::new(move |req: &RecordedRequest| {
        let body = req.body_str();
        seen.lock().unwrap().push(body.clone());
        let path = req.path().to_owned();
        let gap = Duration::from_millis(20);
        match path.as_str() {
            "/v1/messages" if body.contains("\"stream\":true") => {
                Reply::sse(events("anthropic_stream_cache_thinking.sse", gap))
            }
            "/v1/messages" => Reply::json(
                200,
                &serde_json::from_slice(&fixture("anthropic_messages.json")).unwrap(),
            ),
            "/v1/slow/messages" => Reply::sse(events(
                "anthropic_stream_cache_thinking.sse",
                Duration::from_millis(150),
            )),
            "/v1/chat/completions" => {
                // Like OpenAI: the usage-only chunk only for a client that asked for it.
                let asked = body.contains("\"include_usage\":true");
                let all = events("openai_chat_stream.sse", gap);
                Reply::sse(
                    all.into_iter()
                        .filter(|(_, e)| asked || !e.contains("\"choices\":[]"))
                        .collect(),
                )
            }
            "/v1/limited/chat/completions" => Reply::json(
                429,
                &serde_json::json!({"error": {"message": "rate limited", "type": "requests"}}),
            ),
            p if p.ends_with(":generateContent") => Reply::json(
                200,
                &serde_json::from_slice(&fixture("gemini.json")).unwrap(),
            ),
            _ => Reply::json(200, &serde_json::json!({"ok": true})),
        }
    })
}

async fn harness() -> (Harness, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let h = Harness::start(
        support::sqlite().await,
        Options {
            responder: Some(fixtures(seen.clone())),
            ..Options::default()
        },
    )
    .await;
    (h, seen)
}

/// A gateway to the upstream at `/v1` with these LLM settings, and a token for it.
async fn metered(h: &Harness, settings: LlmSettings) -> (airlock_core::GatewayConfigId, String) {
    let gateway = h
        .seed
        .gateway_llm(
            &h.endpoint(""),
            AuthMechanism::Header {
                key: "x-api-key".into(),
            },
            Vec::new(),
            settings,
        )
        .await;
    let secret = h.seed.secret(&support::unique_name(), "sk-metering").await;
    let (_, tokens) = h.seed.devbox(&["127.0.0.1"], &[(&gateway, &secret)]).await;
    (gateway.id, tokens[0].expose().to_owned())
}

async fn post(h: &Harness, token: &str, path: &str, body: serde_json::Value) -> String {
    let response = TestRequest::post(&h.url(path))
        .header("x-api-key", token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(response.status.as_u16() < 500, "{}", response.text());
    response.text()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_and_cost_of_json_and_sse_answers() {
    let (h, _) = harness().await;
    let (gateway, token) = metered(
        &h,
        llm(
            Api::AnthropicMessages,
            Some("anthropic"),
            vec![priced("claude-opus-4-1-20250805", sonnet_price())],
        ),
    )
    .await;

    // A stream with cache reads, cache writes and thinking: Anthropic's input_tokens leave the
    // cache out (135 + 10 240 read + 2 051 written), and message_delta's counts are cumulative.
    let body = post(
        &h,
        &token,
        "/v1/messages",
        serde_json::json!({"model": "claude-opus-4-1", "max_tokens": 100, "stream": true}),
    )
    .await;
    assert!(body.contains("message_stop"), "{body}");
    let e = last_event(&h, &gateway).await;
    let m = e.llm.expect("a metered event");
    assert_eq!(m.provider.as_deref(), Some("anthropic"));
    assert_eq!(m.model.as_deref(), Some("claude-opus-4-1-20250805"));
    let u = m.usage;
    assert_eq!(
        (
            u.input_tokens,
            u.output_tokens,
            u.cache_read_tokens,
            u.cache_write_tokens,
            u.reasoning_tokens,
            u.exact
        ),
        (12_426, 87, 10_240, 2051, 67, true)
    );
    // 135 × $3/M + 87 × $15/M + 10 240 × $0.30/M + 2 051 × $3.75/M, in nano-dollars:
    // 405 000 + 1 305 000 + 3 072 000 + 7 691 250.
    assert_eq!(m.cost_nanos, Some(12_473_250));
    assert_eq!(airlock_core::llm::format_usd(12_473_250), "0.01247325");

    // The same in the metrics, labelled by gateway and model.
    let scrape = support::scrape(&h);
    let series = |name: &str, extra: &str| {
        format!(
            "{name}{{gateway=\"{}\",model=\"claude-opus-4-1-20250805\"{extra}}}",
            gateway.as_str()
        )
    };
    for (kind, n) in [
        ("input", 12_426.0),
        ("output", 87.0),
        ("cache_read", 10_240.0),
        ("cache_write", 2051.0),
        ("reasoning", 67.0),
    ] {
        let s = series(
            "airlock_proxy_llm_tokens_total",
            &format!(",kind=\"{kind}\""),
        );
        assert_eq!(support::sample(&scrape, &s), n, "{s}\n{scrape}");
    }
    let cost = support::sample(&scrape, &series("airlock_proxy_llm_cost_usd_total", ""));
    assert!((cost - 0.01247325).abs() < 1e-12, "{cost}");
    assert_eq!(
        support::sample(&scrape, &series("airlock_proxy_llm_requests_total", "")),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_answer_priced_from_the_bundled_table() {
    let (h, _) = harness().await;
    let (gateway, token) =
        metered(&h, llm(Api::AnthropicMessages, Some("anthropic"), vec![])).await;
    post(
        &h,
        &token,
        "/v1/messages",
        serde_json::json!({"model": "claude-sonnet-4-5", "max_tokens": 1024}),
    )
    .await;
    let m = last_event(&h, &gateway).await.llm.unwrap();
    assert_eq!(m.model.as_deref(), Some("claude-sonnet-4-5-20250929"));
    assert_eq!(
        (
            m.usage.input_tokens,
            m.usage.output_tokens,
            m.usage.cache_write_tokens,
            m.usage.exact
        ),
        (188_107, 393, 188_086, true)
    );
    // The bundled table knows Claude Sonnet 4.5; its price changes over time, so only its
    // presence and its order of magnitude are checked: 188k tokens written to the cache at a
    // few dollars per million is between $0.1 and $10.
    let cost = m
        .cost_nanos
        .expect("the bundled table prices claude-sonnet-4-5");
    assert!(
        (100_000_000..10_000_000_000).contains(&cost),
        "{cost} nano-dollars"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_is_asked_for_its_usage_and_the_extra_chunk_taken_out() {
    let (h, seen) = harness().await;
    let gpt = Price {
        input: 2_500_000_000,
        output: 10_000_000_000,
        cache_read: 1_250_000_000,
        cache_write: 2_500_000_000,
    };
    let (gateway, token) = metered(
        &h,
        llm(
            Api::OpenaiCompletions,
            Some("openai"),
            vec![priced("gpt-4o-2024-08-06", gpt)],
        ),
    )
    .await;
    // The client did not ask for the usage chunk.
    let body = post(
        &h,
        &token,
        "/v1/chat/completions",
        serde_json::json!({"model": "gpt-4o", "stream": true, "messages": []}),
    )
    .await;
    let sent = seen.lock().unwrap().last().cloned().unwrap();
    assert!(
        sent.contains("\"stream_options\":{\"include_usage\":true}"),
        "the upstream was not asked for the usage: {sent}"
    );
    assert!(
        !body.contains("\"choices\":[]"),
        "the client got a usage chunk it did not ask for: {body}"
    );
    assert!(body.contains("data: [DONE]"), "{body}");
    assert_eq!(
        body.matches("data: ").count(),
        events("openai_chat_stream.sse", Duration::ZERO).len() - 1,
        "{body}"
    );
    let m = last_event(&h, &gateway).await.llm.unwrap();
    assert_eq!(
        (
            m.usage.input_tokens,
            m.usage.output_tokens,
            m.usage.cache_read_tokens,
            m.usage.exact
        ),
        (2006, 12, 1920, true)
    );
    // 86 × $2.50/M + 1920 × $1.25/M + 12 × $10/M = 215 000 + 2 400 000 + 120 000.
    assert_eq!(m.cost_nanos, Some(2_735_000));

    // A client that asked for it gets it, once.
    let body = post(
        &h,
        &token,
        "/v1/chat/completions",
        serde_json::json!({"model": "gpt-4o", "stream": true, "messages": [],
            "stream_options": {"include_usage": true}}),
    )
    .await;
    assert_eq!(body.matches("\"choices\":[]").count(), 1, "{body}");
}

/// A body read ahead that arrives in pieces (chunked, written apart) is read whole: the meter
/// rewrites it (it asks for the stream's usage), and the upstream gets every byte of it; a body
/// in one piece is kept as it came, and rewritten the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_read_ahead_in_pieces_is_read_whole() {
    let (h, seen) = harness().await;
    let (_, token) = metered(&h, llm(Api::OpenaiCompletions, Some("openai"), Vec::new())).await;
    let prompt = "0123456789".repeat(1_000);
    let body = serde_json::json!({"model": "gpt-4o", "stream": true,
        "messages": [{"role": "user", "content": prompt}]})
    .to_string();
    let (a, rest) = body.split_at(3_000);
    let (b, c) = rest.split_at(4_000);
    for pieces in [vec![a, b, c], vec![body.as_str()]] {
        let mut stream = tokio::net::TcpStream::connect(h.proxy).await.unwrap();
        let head = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nx-api-key: {token}\r\n\
             content-type: application/json\r\ntransfer-encoding: chunked\r\n\
             connection: close\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        for piece in &pieces {
            let chunk = format!("{:x}\r\n{piece}\r\n", piece.len());
            stream.write_all(chunk.as_bytes()).await.unwrap();
            stream.flush().await.unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        stream.write_all(b"0\r\n\r\n").await.unwrap();
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.unwrap();
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.contains("data: [DONE]"), "{answer}");
        let sent = seen.lock().unwrap().last().cloned().unwrap();
        let sent: serde_json::Value = serde_json::from_str(&sent).unwrap();
        assert_eq!(sent["messages"][0]["content"], prompt.as_str());
        assert_eq!(sent["stream_options"]["include_usage"], true);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_mid_stream_is_still_billed() {
    let (h, _) = harness().await;
    let (gateway, token) = metered(
        &h,
        llm(
            Api::AnthropicMessages,
            Some("anthropic"),
            vec![priced("claude-opus-4-1-20250805", sonnet_price())],
        ),
    )
    .await;
    let mut stream = tokio::net::TcpStream::connect(h.proxy).await.unwrap();
    let body = r#"{"model":"claude-opus-4-1","max_tokens":100,"stream":true}"#;
    let request = format!(
        "POST /v1/slow/messages HTTP/1.1\r\nHost: localhost\r\nx-api-key: {token}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    // Read until the first event has arrived, then go away.
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains("message_start") {
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed early");
        got.extend_from_slice(&buf[..n]);
    }
    drop(stream);
    // The rest of the stream (about a second) is read without the client.
    let e = last_event(&h, &gateway).await;
    assert_eq!(e.error_code.as_deref(), Some("client_disconnected"));
    let m = e.llm.unwrap();
    assert_eq!(
        (m.usage.input_tokens, m.usage.output_tokens, m.usage.exact),
        (12_426, 87, true),
        "the drained stream's usage"
    );
    assert_eq!(m.cost_nanos, Some(12_473_250));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_cost_nothing_unknown_models_have_no_price_and_passthrough_is_not_metered() {
    let (h, _) = harness().await;
    // An error answer is not billed.
    let (gateway, token) = metered(&h, llm(Api::OpenaiCompletions, Some("openai"), vec![])).await;
    post(
        &h,
        &token,
        "/v1/limited/chat/completions",
        serde_json::json!({"model": "gpt-4o", "messages": []}),
    )
    .await;
    let e = last_event(&h, &gateway).await;
    assert_eq!(e.status, 429);
    let m = e.llm.unwrap();
    assert_eq!((m.usage.total_tokens(), m.usage.exact), (0, true));
    // The model the request named (the body was read to see whether it streams).
    assert_eq!(m.model.as_deref(), Some("gpt-4o"));
    assert_eq!(m.cost_nanos, Some(0));

    // Gemini names the model in the path; a local server's models have no price.
    let (gateway, token) = metered(&h, llm(Api::Gemini, Some("ollama"), vec![])).await;
    post(
        &h,
        &token,
        "/v1beta/models/gemini-2.5-flash:generateContent",
        serde_json::json!({"contents": []}),
    )
    .await;
    let m = last_event(&h, &gateway).await.llm.unwrap();
    assert_eq!(m.model.as_deref(), Some("gemini-2.5-flash"));
    assert_eq!(
        (
            m.usage.input_tokens,
            m.usage.output_tokens,
            m.usage.reasoning_tokens
        ),
        (4113, 1009, 992)
    );
    assert_eq!(m.cost_nanos, None, "a price was guessed");

    // A plain passthrough gateway records no LLM fields, and GETs are not metered.
    let s = h
        .simple(
            AuthMechanism::Header {
                key: "x-api-key".into(),
            },
            "sk-plain",
        )
        .await;
    post(
        &h,
        s.token.expose(),
        "/v1/messages",
        serde_json::json!({"model": "x"}),
    )
    .await;
    assert_eq!(last_event(&h, &s.gateway.id).await.llm, None);
    let (gateway, token) = metered(&h, llm(Api::AnthropicMessages, None, vec![])).await;
    let r = TestRequest::get(&h.url("/v1/models"))
        .header("x-api-key", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(last_event(&h, &gateway).await.llm, None);
}
