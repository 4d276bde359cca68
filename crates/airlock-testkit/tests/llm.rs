//! The LLM imitations: their wire format and token counts by hand, and with the official Python
//! SDKs, which are the clients the end-to-end tests use (Gemini has no SDK in the environment).

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

/// The JSON payloads of an SSE body (`[DONE]` left out), CRLF or LF framed.
fn sse_json(body: &str) -> Vec<Value> {
    sse_events(&body.replace("\r\n", "\n"))
        .into_iter()
        .filter(|(_, data)| data != "[DONE]")
        .map(|(_, data)| serde_json::from_str(&data).expect("event data is JSON"))
        .collect()
}

async fn post(url: &str, body: &Value) -> anyhow::Result<airlock_testkit::HttpResponse> {
    TestRequest::post(url).json(body).send().await
}

/// `(prompt, cached, cache writes, completion, reasoning)` of a Chat Completions `usage`.
fn chat_usage(usage: &Value) -> [&Value; 5] {
    [
        &usage["prompt_tokens"],
        &usage["prompt_tokens_details"]["cached_tokens"],
        &usage["prompt_tokens_details"]["cache_write_tokens"],
        &usage["completion_tokens"],
        &usage["completion_tokens_details"]["reasoning_tokens"],
    ]
}

#[tokio::test]
async fn openai_wire_format() -> anyhow::Result<()> {
    let upstream = start(upstream::openai_chat()).await?;
    let url = format!("{}/v1/chat/completions", upstream.url());
    let messages = json!([{"role": "user", "content": "ping"}]);

    let response = post(&url, &json!({"model": "gpt-test", "messages": messages})).await?;
    assert_eq!(response.status, 200);
    let completion = response.json()?;
    assert_eq!(completion["object"], "chat.completion");
    assert_eq!(completion["choices"][0]["message"]["role"], "assistant");
    let text = completion["choices"][0]["message"]["content"].as_str();
    assert_eq!(
        text,
        Some("Hello from the recording upstream. You said: ping")
    );
    assert_eq!(completion["choices"][0]["finish_reason"], "stop");
    // 8 + 1 prompt word; the 8 words of the reply. No cache writes reported without a cache.
    assert_eq!(
        chat_usage(&completion["usage"]),
        [&json!(9), &json!(0), &Value::Null, &json!(8), &json!(0)]
    );
    assert_eq!(completion["usage"]["total_tokens"], 17);

    // A stream nobody asked the usage of has none, anywhere.
    let streaming = json!({"model": "gpt-test", "messages": messages, "stream": true});
    let response = post(&url, &streaming).await?;
    assert_eq!(
        response.header("content-type").as_deref(),
        Some("text/event-stream")
    );
    let events = sse_events(&response.text());
    assert_eq!(events.last().map(|e| e.1.as_str()), Some("[DONE]"));
    let mut text = String::new();
    for chunk in sse_json(&response.text()) {
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert!(chunk.get("usage").is_none(), "{chunk}");
        assert_eq!(
            chunk["choices"].as_array().map(Vec::len),
            Some(1),
            "{chunk}"
        );
        text.push_str(
            chunk["choices"][0]["delta"]["content"]
                .as_str()
                .unwrap_or_default(),
        );
    }
    assert_eq!(text, "Hello from the recording upstream. You said: ping");
    // Every event is written on its own, 50 ms after the previous one.
    assert_eq!(response.chunks.len(), events.len());

    // Asked for, the usage comes in a last chunk without choices; the others carry null.
    let mut asking = streaming.clone();
    asking["stream_options"] = json!({"include_usage": true});
    let chunks = sse_json(&post(&url, &asking).await?.text());
    let (last, rest) = chunks.split_last().unwrap();
    assert_eq!(last["choices"], json!([]));
    assert_eq!(
        chat_usage(&last["usage"]),
        [&json!(9), &json!(0), &Value::Null, &json!(8), &json!(0)]
    );
    assert!(rest
        .iter()
        .all(|c| c["usage"].is_null() && c.get("usage").is_some()));
    assert_eq!(rest.last().unwrap()["choices"][0]["finish_reason"], "stop");

    // Reasoning counts in the completion tokens; a cached prefix in the prompt tokens.
    let reasoning = post(
        &url,
        &json!({"model": "gpt-test-reason", "messages": messages}),
    )
    .await?
    .json()?;
    assert_eq!(
        chat_usage(&reasoning["usage"]),
        [&json!(9), &json!(0), &Value::Null, &json!(72), &json!(64)]
    );
    let cached = post(
        &url,
        &json!({"model": "gpt-test-cache", "messages": messages}),
    )
    .await?
    .json()?;
    assert_eq!(
        chat_usage(&cached["usage"]),
        [
            &json!(1289),
            &json!(1024),
            &json!(256),
            &json!(8),
            &json!(0)
        ]
    );
    // Every message counts, whatever its role.
    let long = json!({"model": "gpt-test", "messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "one two"}, {"type": "text", "text": "three"}]},
    ]});
    let completion = post(&url, &long).await?.json()?;
    assert_eq!(completion["usage"]["prompt_tokens"], 8 + 2 + 3);
    assert_eq!(completion["usage"]["completion_tokens"], 7 + 3);

    let tools = json!([{"type": "function", "function": {"name": "lookup", "parameters": {}}}]);
    let completion = post(
        &url,
        &json!({"model": "gpt-test", "messages": messages, "tools": tools}),
    )
    .await?
    .json()?;
    assert_eq!(completion["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(
        completion["choices"][0]["message"]["tool_calls"][0]["function"]["name"],
        "lookup"
    );
    assert_eq!(completion["usage"]["completion_tokens"], 8);
    let mut tool_stream = asking.clone();
    tool_stream["tools"] = tools;
    let chunks = sse_json(&post(&url, &tool_stream).await?.text());
    let arguments: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str())
        .collect();
    assert_eq!(arguments, r#"{"input":"test"}"#);
    assert_eq!(chunks.last().unwrap()["usage"]["completion_tokens"], 8);

    let response = post(&url, &json!({"model": "error-model", "messages": messages})).await?;
    assert_eq!(response.status, 429);
    assert_eq!(response.json()?["error"]["code"], "rate_limit_exceeded");
    Ok(())
}

/// `(input, cached, cache writes, output, reasoning)` of a Responses `usage`.
fn responses_usage(usage: &Value) -> [&Value; 5] {
    [
        &usage["input_tokens"],
        &usage["input_tokens_details"]["cached_tokens"],
        &usage["input_tokens_details"]["cache_write_tokens"],
        &usage["output_tokens"],
        &usage["output_tokens_details"]["reasoning_tokens"],
    ]
}

#[tokio::test]
async fn openai_responses_wire_format() -> anyhow::Result<()> {
    let upstream = start(upstream::openai_chat()).await?;
    let url = format!("{}/v1/responses", upstream.url());

    let response = post(
        &url,
        &json!({"model": "gpt-test", "input": "ping", "instructions": "be brief"}),
    )
    .await?
    .json()?;
    assert_eq!(response["object"], "response");
    assert_eq!(response["status"], "completed");
    assert_eq!(response["output"][0]["type"], "message");
    assert_eq!(
        response["output"][0]["content"][0]["text"],
        "Hello from the recording upstream. You said: ping"
    );
    // 8 + 1 input word + 2 instruction words.
    assert_eq!(
        responses_usage(&response["usage"]),
        [&json!(11), &json!(0), &json!(0), &json!(8), &json!(0)]
    );

    let input = json!([{"role": "user", "content": [{"type": "input_text", "text": "ping pong"}]}]);
    let streaming = json!({"model": "gpt-test-cache-reason", "input": input, "stream": true,
        "reasoning": {"summary": "auto"}});
    let response = post(&url, &streaming).await?;
    let events = sse_events(&response.text());
    let names: Vec<&str> = events.iter().map(|e| e.0.as_deref().unwrap()).collect();
    let mut expected = vec![
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.reasoning_summary_part.added",
        "response.reasoning_summary_text.delta",
        "response.reasoning_summary_text.done",
        "response.reasoning_summary_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.content_part.added",
    ];
    expected.extend(std::iter::repeat_n(
        "response.output_text.delta",
        names.len() - 14,
    ));
    expected.extend([
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]);
    assert_eq!(names, expected);
    let data = sse_json(&response.text());
    for (n, event) in data.iter().enumerate() {
        assert_eq!(event["sequence_number"], n, "{event}");
        assert_eq!(
            Some(event["type"].as_str().unwrap()),
            events[n].0.as_deref()
        );
    }
    assert!(data[0]["response"]["usage"].is_null());
    let completed = &data.last().unwrap()["response"];
    assert_eq!(completed["output"][0]["type"], "reasoning");
    assert_eq!(completed["output"][1]["type"], "message");
    // 8 + 2 words + 1024 read + 256 written; 9 reply words + 64 reasoning.
    assert_eq!(
        responses_usage(&completed["usage"]),
        [
            &json!(1290),
            &json!(1024),
            &json!(256),
            &json!(73),
            &json!(64)
        ]
    );

    let tools = json!([{"type": "function", "name": "lookup", "parameters": {"type": "object"}}]);
    let response = post(
        &url,
        &json!({"model": "gpt-test", "input": "ping", "tools": tools}),
    )
    .await?
    .json()?;
    assert_eq!(response["output"][0]["type"], "function_call");
    assert_eq!(response["output"][0]["name"], "lookup");
    assert_eq!(response["usage"]["output_tokens"], 8);

    let response = post(&url, &json!({"model": "error-model", "input": "x"})).await?;
    assert_eq!(response.status, 429);
    Ok(())
}

/// `(input, cache read, cache creation, output, thinking)` of an Anthropic `usage`.
fn anthropic_usage(usage: &Value) -> [&Value; 5] {
    [
        &usage["input_tokens"],
        &usage["cache_read_input_tokens"],
        &usage["cache_creation_input_tokens"],
        &usage["output_tokens"],
        &usage["output_tokens_details"]["thinking_tokens"],
    ]
}

#[tokio::test]
async fn anthropic_wire_format() -> anyhow::Result<()> {
    let upstream = start(upstream::anthropic_messages()).await?;
    let url = format!("{}/v1/messages", upstream.url());
    let request = json!({"model": "claude-test", "max_tokens": 64,
        "messages": [{"role": "user", "content": "ping"}]});

    let message = post(&url, &request).await?.json()?;
    assert_eq!(message["type"], "message");
    assert_eq!(message["content"][0]["type"], "text");
    assert_eq!(message["stop_reason"], "end_turn");
    assert_eq!(
        anthropic_usage(&message["usage"]),
        [&json!(9), &json!(0), &json!(0), &json!(8), &Value::Null]
    );

    let mut streaming = request.clone();
    streaming["stream"] = json!(true);
    let response = post(&url, &streaming).await?;
    let names: Vec<String> = sse_events(&response.text())
        .into_iter()
        .map(|(event, data)| {
            let data: Value = serde_json::from_str(&data).expect("event data is JSON");
            assert_eq!(event.as_deref(), data["type"].as_str());
            event.unwrap_or_default()
        })
        .collect();
    let mut expected = vec!["message_start", "ping", "content_block_start"];
    expected.extend(std::iter::repeat_n("content_block_delta", names.len() - 6));
    expected.extend(["content_block_stop", "message_delta", "message_stop"]);
    assert_eq!(names, expected);
    assert!(names.len() > 7, "several deltas: {names:?}");

    // Cache and thinking: input_tokens leave the cache out; message_start has a placeholder
    // output count, message_delta the final one.
    let mut thinking = streaming.clone();
    thinking["model"] = json!("claude-test-cache");
    thinking["thinking"] = json!({"type": "enabled", "budget_tokens": 1024});
    let data = sse_json(&post(&url, &thinking).await?.text());
    assert_eq!(
        anthropic_usage(&data[0]["message"]["usage"]),
        [
            &json!(9),
            &json!(1024),
            &json!(256),
            &json!(1),
            &Value::Null
        ]
    );
    assert_eq!(data[2]["content_block"]["type"], "thinking");
    assert_eq!(data[3]["delta"]["type"], "thinking_delta");
    assert_eq!(data[4]["delta"]["type"], "signature_delta");
    assert_eq!(data[6]["content_block"]["type"], "text");
    let delta = &data[data.len() - 2];
    assert_eq!(delta["type"], "message_delta");
    assert_eq!(
        anthropic_usage(&delta["usage"]),
        [&json!(9), &json!(1024), &json!(256), &json!(72), &json!(64)]
    );
    let mut whole = thinking.clone();
    whole["stream"] = json!(false);
    let message = post(&url, &whole).await?.json()?;
    assert_eq!(message["content"][0]["type"], "thinking");
    assert_eq!(message["content"][1]["type"], "text");
    assert_eq!(
        anthropic_usage(&message["usage"]),
        [&json!(9), &json!(1024), &json!(256), &json!(72), &json!(64)]
    );

    let mut with_tools = request.clone();
    with_tools["tools"] = json!([{"name": "lookup", "input_schema": {"type": "object"}}]);
    with_tools["system"] = json!("be brief");
    let message = post(&url, &with_tools).await?.json()?;
    assert_eq!(message["stop_reason"], "tool_use");
    assert_eq!(message["content"][0]["name"], "lookup");
    assert_eq!(
        anthropic_usage(&message["usage"]),
        [&json!(11), &json!(0), &json!(0), &json!(8), &Value::Null]
    );
    let counted = post(&format!("{url}/count_tokens"), &with_tools)
        .await?
        .json()?;
    assert_eq!(counted["input_tokens"], 11);

    let mut failing = request.clone();
    failing["model"] = json!("error-model");
    let response = post(&url, &failing).await?;
    assert_eq!(response.status, 429);
    assert_eq!(response.json()?["error"]["type"], "rate_limit_error");
    Ok(())
}

/// `(prompt, cached, candidates, thoughts, total)` of a Gemini `usageMetadata`.
fn gemini_usage(usage: &Value) -> [&Value; 5] {
    [
        &usage["promptTokenCount"],
        &usage["cachedContentTokenCount"],
        &usage["candidatesTokenCount"],
        &usage["thoughtsTokenCount"],
        &usage["totalTokenCount"],
    ]
}

#[tokio::test]
async fn gemini_wire_format() -> anyhow::Result<()> {
    let upstream = start(upstream::gemini()).await?;
    let base = format!("{}/v1beta/models", upstream.url());
    let request = json!({"contents": [{"role": "user", "parts": [{"text": "ping"}]}]});

    let response = post(&format!("{base}/gemini-test:generateContent"), &request)
        .await?
        .json()?;
    let candidate = &response["candidates"][0];
    assert_eq!(
        candidate["content"]["parts"][0]["text"],
        "Hello from the recording upstream. You said: ping"
    );
    assert_eq!(candidate["finishReason"], "STOP");
    assert_eq!(response["modelVersion"], "gemini-test");
    assert_eq!(
        gemini_usage(&response["usageMetadata"]),
        [&json!(9), &Value::Null, &json!(8), &Value::Null, &json!(17)]
    );

    // A stream over SSE: every chunk carries the running usage, the last one the final count
    // and the finish reason. The prompt counts the cached tokens; the candidates leave out the
    // thoughts, which come first when asked to be shown.
    let mut thoughtful = request.clone();
    thoughtful["generationConfig"] = json!({"thinkingConfig": {"includeThoughts": true}});
    let response = post(
        &format!("{base}/gemini-test-cache-reason:streamGenerateContent?alt=sse"),
        &thoughtful,
    )
    .await?;
    assert_eq!(
        response.header("content-type").as_deref(),
        Some("text/event-stream")
    );
    assert!(
        response.text().contains("\r\n\r\n"),
        "Google frames with CRLF"
    );
    let chunks = sse_json(&response.text());
    assert!(chunks.len() > 2, "{chunks:?}");
    assert_eq!(
        chunks[0]["candidates"][0]["content"]["parts"][0]["thought"],
        true
    );
    let mut previous = 0;
    for chunk in &chunks {
        let usage = &chunk["usageMetadata"];
        assert_eq!(usage["promptTokenCount"], 1033);
        assert_eq!(usage["thoughtsTokenCount"], 64);
        let candidates = usage["candidatesTokenCount"].as_u64().unwrap();
        assert!(candidates >= previous, "{chunk}");
        previous = candidates;
    }
    let last = chunks.last().unwrap();
    assert_eq!(last["candidates"][0]["finishReason"], "STOP");
    assert!(chunks[..chunks.len() - 1]
        .iter()
        .all(|c| c["candidates"][0]["finishReason"].is_null()));
    // 8 + 1 word + 1024 cached; 8 reply words; 64 thoughts.
    assert_eq!(
        gemini_usage(&last["usageMetadata"]),
        [
            &json!(1033),
            &json!(1024),
            &json!(8),
            &json!(64),
            &json!(1105)
        ]
    );

    // Without alt=sse the stream is one JSON array.
    let response = post(
        &format!("{base}/gemini-test:streamGenerateContent"),
        &request,
    )
    .await?;
    let array = response.json()?;
    let array = array.as_array().unwrap();
    assert!(array.len() > 1);
    assert_eq!(
        gemini_usage(&array.last().unwrap()["usageMetadata"]),
        [&json!(9), &Value::Null, &json!(8), &Value::Null, &json!(17)]
    );

    let mut with_tools = request.clone();
    with_tools["tools"] = json!([{"functionDeclarations": [{"name": "lookup"}]}]);
    with_tools["systemInstruction"] = json!({"parts": [{"text": "be brief"}]});
    let response = post(&format!("{base}/gemini-test:generateContent"), &with_tools)
        .await?
        .json()?;
    assert_eq!(
        response["candidates"][0]["content"]["parts"][0]["functionCall"]["name"],
        "lookup"
    );
    assert_eq!(response["usageMetadata"]["promptTokenCount"], 11);
    assert_eq!(response["usageMetadata"]["candidatesTokenCount"], 8);
    let counted = post(&format!("{base}/gemini-test:countTokens"), &with_tools)
        .await?
        .json()?;
    assert_eq!(counted["totalTokens"], 11);

    let response = post(&format!("{base}/error-model:generateContent"), &request).await?;
    assert_eq!(response.status, 429);
    assert_eq!(response.json()?["error"]["status"], "RESOURCE_EXHAUSTED");
    let response = post(&format!("{}/v1beta/files", upstream.url()), &request).await?;
    assert_eq!(response.status, 404);
    Ok(())
}

const OPENAI_SCRIPT: &str = r#"
import json, os, openai
client = openai.OpenAI(base_url=os.environ["UPSTREAM_URL"] + "/v1", api_key="test-key", max_retries=0)
out = {}
r = client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "hi sdk"}])
out["text"] = r.choices[0].message.content
out["usage"] = r.usage.model_dump(exclude_none=True)
chunks = list(client.chat.completions.create(
    model="gpt-test", messages=[{"role": "user", "content": "hi stream"}], stream=True))
out["stream"] = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
out["stream_usage"] = [c.usage is not None for c in chunks]
chunks = list(client.chat.completions.create(
    model="gpt-test-cache-reason", messages=[{"role": "user", "content": "hi stream"}], stream=True,
    stream_options={"include_usage": True}))
out["asked_usage"] = chunks[-1].usage.model_dump(exclude_none=True)
out["asked_choices"] = len(chunks[-1].choices)
r = client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "x"}],
    tools=[{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}])
out["tool"] = r.choices[0].message.tool_calls[0].function.name
r = client.responses.create(model="gpt-test-reason", input="hi responses")
out["responses_text"] = r.output_text
out["responses_usage"] = r.usage.model_dump(exclude_none=True)
with client.responses.stream(model="gpt-test-cache", input="hi responses stream") as stream:
    out["responses_stream"] = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
    out["responses_stream_usage"] = stream.get_final_response().usage.model_dump(exclude_none=True)
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
out["usage"] = m.usage.model_dump(exclude_none=True)
with client.messages.stream(model="claude-test-cache", max_tokens=2048,
        thinking={"type": "enabled", "budget_tokens": 1024},
        messages=[{"role": "user", "content": "hi stream"}]) as stream:
    for event in stream:
        if event.type == "message_delta":
            out["delta_usage"] = event.usage.model_dump(exclude_none=True)
    final = stream.get_final_message()
    out["stream"] = "".join(b.text for b in final.content if b.type == "text")
    out["stop"] = final.stop_reason
    out["blocks"] = [b.type for b in final.content]
    out["stream_usage"] = final.usage.model_dump(exclude_none=True)
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
    assert_eq!(
        out["text"], "Hello from the recording upstream. You said: hi sdk",
        "{out}"
    );
    let details = |reasoning: u64| {
        json!({"reasoning_tokens": reasoning, "audio_tokens": 0,
            "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0})
    };
    assert_eq!(
        out["usage"],
        json!({"prompt_tokens": 10, "completion_tokens": 9, "total_tokens": 19,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": details(0)})
    );
    assert_eq!(
        out["stream"],
        "Hello from the recording upstream. You said: hi stream"
    );
    // Not asked for: no chunk carried usage.
    assert!(
        out["stream_usage"]
            .as_array()
            .is_some_and(|u| !u.is_empty() && u.iter().all(|u| u == false)),
        "{out}"
    );
    // 8 + 2 words + 1024 cached + 256 written; 9 reply words + 64 reasoning.
    assert_eq!(
        out["asked_usage"],
        json!({"prompt_tokens": 1290, "completion_tokens": 73, "total_tokens": 1363,
            "prompt_tokens_details": {"cached_tokens": 1024, "cache_write_tokens": 256, "audio_tokens": 0},
            "completion_tokens_details": details(64)})
    );
    assert_eq!(out["asked_choices"], 0);
    assert_eq!(out["tool"], "lookup");
    assert_eq!(
        out["responses_text"],
        "Hello from the recording upstream. You said: hi responses"
    );
    assert_eq!(
        out["responses_usage"],
        json!({"input_tokens": 10, "output_tokens": 73, "total_tokens": 83,
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens_details": {"reasoning_tokens": 64}})
    );
    assert_eq!(
        out["responses_stream"],
        "Hello from the recording upstream. You said: hi responses stream"
    );
    assert_eq!(
        out["responses_stream_usage"],
        json!({"input_tokens": 1291, "output_tokens": 10, "total_tokens": 1301,
            "input_tokens_details": {"cached_tokens": 1024, "cache_write_tokens": 256},
            "output_tokens_details": {"reasoning_tokens": 0}})
    );
    assert_eq!(out["error"], 429);
    let requests = upstream
        .wait_for_requests(7, Duration::from_secs(1))
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
    assert_eq!(
        out["text"], "Hello from the recording upstream. You said: hi sdk",
        "{out}"
    );
    assert_eq!(
        out["usage"],
        json!({"input_tokens": 10, "output_tokens": 9, "cache_read_input_tokens": 0,
            "cache_creation_input_tokens": 0, "service_tier": "standard",
            "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0}})
    );
    assert_eq!(
        out["stream"],
        "Hello from the recording upstream. You said: hi stream"
    );
    assert_eq!(out["stop"], "end_turn");
    assert_eq!(out["blocks"], json!(["thinking", "text"]));
    // The SDK puts message_start's usage and message_delta's cumulative counts together: 8 + 2
    // words outside the cache; 9 reply words + 64 thinking.
    let usage = &out["stream_usage"];
    assert_eq!(
        [
            &usage["input_tokens"],
            &usage["cache_read_input_tokens"],
            &usage["cache_creation_input_tokens"],
            &usage["output_tokens"],
        ],
        [&json!(10), &json!(1024), &json!(256), &json!(73)],
        "{out}"
    );
    assert_eq!(
        out["delta_usage"],
        json!({"input_tokens": 10, "cache_read_input_tokens": 1024,
            "cache_creation_input_tokens": 256, "output_tokens": 73,
            "output_tokens_details": {"thinking_tokens": 64}})
    );
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
