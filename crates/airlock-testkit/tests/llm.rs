//! The OpenAI and Anthropic imitations: their wire format by hand, and with the official Python
//! SDKs, which are the clients the end-to-end tests use.

// Test code panics with the value on failure: that is its report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use airlock_testkit::upstream::{self, RecordingUpstream, UpstreamOptions};
use airlock_testkit::{check_python_output, run_python_code, TestRequest};
use serde_json::{json, Value};

async fn start(responder: upstream::Responder) -> anyhow::Result<RecordingUpstream> {
    RecordingUpstream::start(UpstreamOptions::plain().responder(responder)).await
}

/// The `data:` payloads of an SSE body, with their `event:` names (if any).
fn sse_events(body: &str) -> Vec<(Option<String>, String)> {
    body.split("\n\n")
        .filter(|block| !block.trim().is_empty())
        .map(|block| {
            let mut event = None;
            let mut data = String::new();
            for line in block.lines() {
                if let Some(name) = line.strip_prefix("event: ") {
                    event = Some(name.to_owned());
                } else if let Some(payload) = line.strip_prefix("data: ") {
                    data.push_str(payload);
                }
            }
            (event, data)
        })
        .collect()
}

#[tokio::test]
async fn openai_wire_format() -> anyhow::Result<()> {
    let upstream = start(upstream::openai_chat()).await?;
    let url = format!("{}/v1/chat/completions", upstream.url());
    let messages = json!([{"role": "user", "content": "ping"}]);

    let response = TestRequest::post(&url)
        .json(&json!({"model": "gpt-test", "messages": messages}))
        .send()
        .await?;
    assert_eq!(response.status, 200);
    let completion = response.json()?;
    assert_eq!(completion["object"], "chat.completion");
    assert_eq!(completion["choices"][0]["message"]["role"], "assistant");
    assert!(completion["choices"][0]["message"]["content"]
        .as_str()
        .is_some_and(|c| c.ends_with("You said: ping")));
    assert_eq!(completion["choices"][0]["finish_reason"], "stop");
    assert!(completion["usage"]["total_tokens"].as_u64().is_some());

    let response = TestRequest::post(&url)
        .json(&json!({"model": "gpt-test", "messages": messages, "stream": true}))
        .send()
        .await?;
    assert_eq!(
        response.header("content-type").as_deref(),
        Some("text/event-stream")
    );
    let events = sse_events(&response.text());
    assert_eq!(events.last().map(|e| e.1.as_str()), Some("[DONE]"));
    let mut text = String::new();
    for (_, data) in &events[..events.len() - 1] {
        let chunk: Value = serde_json::from_str(data)?;
        assert_eq!(chunk["object"], "chat.completion.chunk");
        text.push_str(
            chunk["choices"][0]["delta"]["content"]
                .as_str()
                .unwrap_or_default(),
        );
    }
    assert!(text.ends_with("You said: ping"), "{text}");
    // Every event is written on its own, 50 ms after the previous one.
    assert_eq!(response.chunks.len(), events.len());

    let response = TestRequest::post(&url)
        .json(&json!({"model": "gpt-test", "messages": messages,
            "tools": [{"type": "function", "function": {"name": "lookup", "parameters": {}}}]}))
        .send()
        .await?;
    let completion = response.json()?;
    assert_eq!(completion["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(
        completion["choices"][0]["message"]["tool_calls"][0]["function"]["name"],
        "lookup"
    );

    let response = TestRequest::post(&url)
        .json(&json!({"model": "error-model", "messages": messages}))
        .send()
        .await?;
    assert_eq!(response.status, 429);
    assert_eq!(response.json()?["error"]["code"], "rate_limit_exceeded");
    Ok(())
}

#[tokio::test]
async fn anthropic_wire_format() -> anyhow::Result<()> {
    let upstream = start(upstream::anthropic_messages()).await?;
    let url = format!("{}/v1/messages", upstream.url());
    let request = json!({"model": "claude-test", "max_tokens": 64,
        "messages": [{"role": "user", "content": "ping"}]});

    let message = TestRequest::post(&url)
        .json(&request)
        .send()
        .await?
        .json()?;
    assert_eq!(message["type"], "message");
    assert_eq!(message["content"][0]["type"], "text");
    assert_eq!(message["stop_reason"], "end_turn");
    assert!(message["usage"]["output_tokens"].as_u64().is_some());

    let mut streaming = request.clone();
    streaming["stream"] = json!(true);
    let response = TestRequest::post(&url).json(&streaming).send().await?;
    let names: Vec<String> = sse_events(&response.text())
        .into_iter()
        .map(|(event, data)| {
            let data: Value = serde_json::from_str(&data).expect("event data is JSON");
            assert_eq!(event.as_deref(), data["type"].as_str());
            event.unwrap_or_default()
        })
        .collect();
    let mut expected = vec!["message_start", "content_block_start"];
    expected.extend(std::iter::repeat_n("content_block_delta", names.len() - 5));
    expected.extend(["content_block_stop", "message_delta", "message_stop"]);
    assert_eq!(names, expected);
    assert!(names.len() > 6, "several deltas: {names:?}");

    let mut with_tools = request.clone();
    with_tools["tools"] = json!([{"name": "lookup", "input_schema": {"type": "object"}}]);
    let message = TestRequest::post(&url)
        .json(&with_tools)
        .send()
        .await?
        .json()?;
    assert_eq!(message["stop_reason"], "tool_use");
    assert_eq!(message["content"][0]["name"], "lookup");

    let mut failing = request.clone();
    failing["model"] = json!("error-model");
    let response = TestRequest::post(&url).json(&failing).send().await?;
    assert_eq!(response.status, 429);
    assert_eq!(response.json()?["error"]["type"], "rate_limit_error");
    Ok(())
}

const OPENAI_SCRIPT: &str = r#"
import json, os, openai
client = openai.OpenAI(base_url=os.environ["UPSTREAM_URL"] + "/v1", api_key="test-key", max_retries=0)
out = {}
r = client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "hi sdk"}])
out["text"] = r.choices[0].message.content
out["stream"] = "".join(
    c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model="gpt-test", messages=[{"role": "user", "content": "hi stream"}], stream=True) if c.choices)
r = client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "x"}],
    tools=[{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}])
out["tool"] = r.choices[0].message.tool_calls[0].function.name
try:
    client.chat.completions.create(model="error-model", messages=[{"role": "user", "content": "x"}])
except openai.RateLimitError as e:
    out["error"] = e.status_code
print(json.dumps(out))
"#;

const ANTHROPIC_SCRIPT: &str = r#"
import json, os, anthropic
client = anthropic.Anthropic(base_url=os.environ["UPSTREAM_URL"], api_key="test-key", max_retries=0)
out = {}
m = client.messages.create(model="claude-test", max_tokens=64, messages=[{"role": "user", "content": "hi sdk"}])
out["text"] = m.content[0].text
with client.messages.stream(model="claude-test", max_tokens=64,
        messages=[{"role": "user", "content": "hi stream"}]) as stream:
    out["stream"] = "".join(stream.text_stream)
    out["stop"] = stream.get_final_message().stop_reason
m = client.messages.create(model="claude-test", max_tokens=64, messages=[{"role": "user", "content": "x"}],
    tools=[{"name": "lookup", "input_schema": {"type": "object"}}])
out["tool"] = m.content[0].name
try:
    client.messages.create(model="error-model", max_tokens=8, messages=[{"role": "user", "content": "x"}])
except anthropic.RateLimitError as e:
    out["error"] = e.status_code
print(json.dumps(out))
"#;

async fn run_sdk(script: &str, upstream: &RecordingUpstream) -> anyhow::Result<Value> {
    let output = run_python_code(script, &[("UPSTREAM_URL", &upstream.url())]).await?;
    Ok(serde_json::from_str(check_python_output(&output)?.trim())?)
}

#[tokio::test]
async fn the_official_openai_sdk_reads_every_answer() -> anyhow::Result<()> {
    let upstream = start(upstream::openai_chat()).await?;
    let out = run_sdk(OPENAI_SCRIPT, &upstream).await?;
    assert!(
        out["text"]
            .as_str()
            .is_some_and(|t| t.ends_with("You said: hi sdk")),
        "{out}"
    );
    assert!(
        out["stream"]
            .as_str()
            .is_some_and(|t| t.ends_with("You said: hi stream")),
        "{out}"
    );
    assert_eq!(out["tool"], "lookup");
    assert_eq!(out["error"], 429);
    let requests = upstream
        .wait_for_requests(4, Duration::from_secs(1))
        .await?;
    assert_eq!(
        requests[0].header_str("authorization").as_deref(),
        Some("Bearer test-key")
    );
    Ok(())
}

#[tokio::test]
async fn the_official_anthropic_sdk_reads_every_answer() -> anyhow::Result<()> {
    let upstream = start(upstream::anthropic_messages()).await?;
    let out = run_sdk(ANTHROPIC_SCRIPT, &upstream).await?;
    assert!(
        out["text"]
            .as_str()
            .is_some_and(|t| t.ends_with("You said: hi sdk")),
        "{out}"
    );
    assert!(
        out["stream"]
            .as_str()
            .is_some_and(|t| t.ends_with("You said: hi stream")),
        "{out}"
    );
    assert_eq!(out["stop"], "end_turn");
    assert_eq!(out["tool"], "lookup");
    assert_eq!(out["error"], 429);
    let requests = upstream
        .wait_for_requests(4, Duration::from_secs(1))
        .await?;
    // Anthropic's SDK 2.x sends the key as a bearer token (1.x used `x-api-key`).
    let req = &requests[0];
    let key = req.header_str("x-api-key").or_else(|| {
        req.header_str("authorization")
            .and_then(|v| v.strip_prefix("Bearer ").map(str::to_owned))
    });
    assert_eq!(key.as_deref(), Some("test-key"), "{:?}", req.headers);
    Ok(())
}

#[test]
fn the_venv_has_the_runloop_client() -> anyhow::Result<()> {
    let output = std::process::Command::new(airlock_testkit::python())
        .args([
            "-c",
            "import runloop_api_client, openai, anthropic; print('ok')",
        ])
        .output()?;
    assert_eq!(check_python_output(&output)?.trim(), "ok");
    Ok(())
}
