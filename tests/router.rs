//! Router gateways through the real binary, on PostgreSQL and on SQLite: backends and a router
//! made over the REST API, a devbox bound to the router without a secret, and the official
//! OpenAI and Anthropic SDKs talking to it. An Anthropic backend serves an OpenAI client and an
//! OpenAI backend an Anthropic client (translated, JSON and streams, a tool call); a backend
//! that answers 529 is failed over once; the SDK's Responses API is served (not streamed); a Gemini backend serves the OpenAI SDK (translated,
//! JSON and stream, with its own `x-goog-api-key`); a model naming another host is refused in the client's
//! dialect; each backend only ever sees its own key; the routing log says what happened.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use airlock_testkit::upstream::{self, RecordedRequest, RecordingUpstream, UpstreamOptions};
use airlock_testkit::{check_python_output, run_python, workspace_root, Reply};
use airlock_tests::Airlock;
use serde_json::{json, Value};

fn reply_to(prompt: &str) -> String {
    format!("Hello from the recording upstream. You said: {prompt}")
}

async fn script(name: &str, env: &[(&str, &str)]) -> Value {
    let out = run_python(&workspace_root().join("tests/python").join(name), env)
        .await
        .unwrap();
    let stdout = check_python_output(&out).unwrap();
    serde_json::from_str(stdout.lines().last().unwrap()).unwrap()
}

async fn router(database_url: &str) {
    // The Anthropic imitation, except that the model `flaky` gets a 529 (overloaded).
    let anthropic_responder: upstream::Responder = {
        let inner = upstream::anthropic_messages();
        Arc::new(move |req: &RecordedRequest| {
            if req.body_json().is_some_and(|b| b["model"] == "flaky") {
                Reply::json(
                    529,
                    &json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
                )
            } else {
                inner(req)
            }
        })
    };
    let start = |responder| RecordingUpstream::start(UpstreamOptions::plain().responder(responder));
    let anthropic = start(anthropic_responder).await.unwrap();
    let openai = start(upstream::openai_chat()).await.unwrap();
    let gemini = start(upstream::gemini()).await.unwrap();
    let airlock = Airlock::start_on(database_url, &[]).await;
    for (name, value) in [
        ("ANT_KEY", "real-ant-key-A"),
        ("OAI_KEY", "real-oai-key-O"),
        ("GEM_KEY", "real-gem-key-G"),
    ] {
        airlock
            .post("/v1/secrets", json!({"name": name, "value": value}))
            .await;
    }
    airlock
        .post(
            "/v1/gateway-configs",
            json!({"name": "claude", "provider": "anthropic", "endpoint": anthropic.url(),
                "models": [{"id": "claude-x", "cost": {"input": 3, "output": 15}}, {"id": "flaky"}]}),
        )
        .await;
    airlock
        .post(
            "/v1/gateway-configs",
            json!({"name": "gpt", "provider": "openai", "endpoint": format!("{}/v1", openai.url()),
                "models": [{"id": "gpt-x", "cost": {"input": 1, "output": 2}}, {"id": "flaky"}]}),
        )
        .await;
    airlock
        .post(
            "/v1/gateway-configs",
            json!({"name": "gem", "provider": "google", "endpoint": gemini.url(),
                "models": [{"id": "gemini-x", "cost": {"input": 5, "output": 20}}]}),
        )
        .await;
    let router = airlock
        .post(
            "/v1/gateway-configs",
            json!({"name": "llm", "type": "router", "backends": [
                {"gateway": "claude", "secret": "ANT_KEY", "priority": 0},
                {"gateway": "gpt", "secret": "OAI_KEY", "priority": 1},
                {"gateway": "gem", "secret": "GEM_KEY", "priority": 2},
            ]}),
        )
        .await;
    let router_id = router["id"].as_str().unwrap().to_owned();
    let dbx = airlock
        .post(
            "/v1/devboxes",
            json!({"source_addresses": ["127.0.0.1"], "gateways": {"LLM": {"gateway": "llm"}}}),
        )
        .await;
    let url = dbx["environment"]["LLM_URL"].as_str().unwrap().to_owned();
    let token = dbx["environment"]["LLM"].as_str().unwrap().to_owned();
    let env = [("LLM_URL", url.as_str()), ("LLM", token.as_str())];

    let out = script("router_openai.py", &env).await;
    let t = &out["translated"];
    assert_eq!(t["text"], reply_to("one two three"), "{out}");
    assert_eq!(t["finish"], "stop");
    assert_eq!(t["usage"]["prompt_tokens"], 11);
    assert_eq!(t["usage"]["completion_tokens"], 10);
    assert_eq!(t["provider"], "anthropic");
    assert_eq!(t["model"], "claude-x");
    assert_eq!(t["attempts"], "1");
    assert_eq!(out["translated_stream"]["text"], reply_to("stream this"));
    assert_eq!(out["translated_stream"]["usage"]["completion_tokens"], 9);
    assert_eq!(out["tool"]["name"], "get_weather");
    assert_eq!(out["tool"]["arguments"], r#"{"input":"test"}"#);
    assert_eq!(out["tool"]["finish"], "tool_calls");
    assert_eq!(out["failover"]["text"], reply_to("fail over"));
    assert_eq!(out["failover"]["provider"], "openai");
    assert_eq!(out["failover"]["attempts"], "2");
    assert_eq!(out["failover_stream"], reply_to("fail over streaming"));
    assert_eq!(out["refused"]["status"], 400, "{out}");
    // The Responses API, served over the Anthropic backend.
    assert_eq!(
        out["responses"]["text"],
        reply_to("respond to this"),
        "{out}"
    );
    assert_eq!(out["responses"]["status"], "completed");
    assert_eq!(out["responses"]["provider"], "anthropic");
    assert!(out["responses"]["output_tokens"].as_u64().unwrap() > 0);
    // A Gemini backend, translated both ways, JSON and stream.
    assert_eq!(out["gemini"]["text"], reply_to("ask gemini"), "{out}");
    assert_eq!(out["gemini"]["provider"], "google");
    assert_eq!(out["gemini"]["finish"], "stop");
    assert!(
        out["gemini"]["usage"]["completion_tokens"]
            .as_u64()
            .unwrap()
            > 0
    );
    assert_eq!(out["gemini_stream"]["text"], reply_to("stream gemini"));
    assert!(
        out["gemini_stream"]["usage"]["prompt_tokens"]
            .as_u64()
            .unwrap()
            > 0
    );
    let seen = gemini.requests();
    assert_eq!(seen.len(), 2, "one JSON and one streamed request");
    assert_eq!(seen[0].path(), "/v1beta/models/gemini-x:generateContent");
    assert_eq!(
        seen[1].path_and_query(),
        "/v1beta/models/gemini-x:streamGenerateContent?alt=sse"
    );
    for r in &seen {
        assert_eq!(
            r.header_str("x-goog-api-key").as_deref(),
            Some("real-gem-key-G")
        );
    }
    for id in ["auto", "claude-x", "gpt-x", "claude:claude-x", "gpt:gpt-x"] {
        assert!(
            out["models"].as_array().unwrap().contains(&json!(id)),
            "{id}: {out}"
        );
    }

    let out = script("router_anthropic.py", &env).await;
    assert_eq!(out["plain"]["text"], reply_to("one two three"), "{out}");
    assert_eq!(out["plain"]["stop"], "end_turn");
    assert_eq!(out["plain"]["usage"]["input_tokens"], 11);
    assert_eq!(out["stream"]["text"], reply_to("stream this"));
    assert_eq!(out["stream"]["stop"], "end_turn");
    assert!(out["stream"]["output_tokens"].as_u64().unwrap() > 0);
    assert_eq!(out["refused"]["status"], 400);
    assert_eq!(out["refused"]["type"], "invalid_request_error");

    // SECURITY #26: each backend saw only its own key, never the token.
    assert!(anthropic.received_contains(b"real-ant-key-A"));
    assert!(!anthropic.received_contains(b"real-oai-key-O"));
    assert!(openai.received_contains(b"real-oai-key-O"));
    assert!(!openai.received_contains(b"real-ant-key-A"));
    assert!(!anthropic.received_contains(token.as_bytes()));
    assert!(!openai.received_contains(token.as_bytes()));
    assert!(!gemini.received_contains(token.as_bytes()));
    for other in [&anthropic, &openai] {
        assert!(!other.received_contains(b"real-gem-key-G"));
    }
    assert!(!gemini.received_contains(b"real-ant-key-A"));
    assert!(!gemini.received_contains(b"real-oai-key-O"));
    // The flaky request reached the first backend once per attempt, no more.
    let flaky = anthropic
        .requests()
        .iter()
        .filter(|r| r.body_json().is_some_and(|b| b["model"] == "flaky"))
        .count();
    assert_eq!(flaky, 2, "one non-streamed and one streamed attempt");

    // The live state of this process's data plane.
    let (status, log) = airlock
        .call(
            http::Method::GET,
            &format!("/v1/gateway-configs/{router_id}/routing-log?limit=100"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{log}");
    let decisions = log["decisions"].as_array().unwrap();
    assert!(decisions.len() >= 9, "{log}");
    let failed_over = decisions
        .iter()
        .find(|d| d["model_requested"] == "flaky")
        .unwrap();
    assert_eq!(failed_over["attempts"][0]["outcome"], "upstream_5xx");
    assert_eq!(failed_over["attempts"][0]["status"], 529);
    assert_eq!(failed_over["attempts"][1]["outcome"], "ok");
    assert_eq!(failed_over["provider"], "gpt");
    let (status, s) = airlock
        .call(
            http::Method::GET,
            &format!("/v1/gateway-configs/{router_id}/status"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{s}");
    assert_eq!(s["backends"][1]["name"], "gpt");
    assert!(s["backends"][1]["requests_last_minute"].as_u64().unwrap() >= 1);
    let (status, p) = airlock
        .call(
            http::Method::POST,
            &format!("/v1/gateway-configs/{router_id}/route-preview"),
            Some(&json!({"model": "auto", "prefer": "cost", "messages": []})),
        )
        .await;
    assert_eq!(status, 200, "{p}");
    assert_eq!(p["provider"], "gpt", "the cheaper backend: {p}");
    assert_eq!(p["wait_ms"], 0);

    // Metering names the backend that served each request.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, listed) = airlock
            .call(http::Method::GET, "/v1/audit/requests?limit=100", None)
            .await;
        let events = listed["requests"].as_array().unwrap().clone();
        let served: Vec<&Value> = events
            .iter()
            .filter(|e| e["model"] == "claude-x" && e["status"] == 200)
            .collect();
        if served.len() >= 3 {
            assert!(
                served.iter().all(|e| e["provider"] == "anthropic"),
                "{listed}"
            );
            assert!(served
                .iter()
                .all(|e| e["gateway_config_id"] == router_id.as_str()));
            break;
        }
        assert!(Instant::now() < deadline, "{listed}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn router_on_postgres() {
    let url = airlock_testkit::pg::shared()
        .await
        .fresh_database()
        .await
        .unwrap();
    router(&url).await;
}

#[tokio::test]
async fn router_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("airlock.db").display());
    router(&url).await;
}

/// A provider quota through the real binary: two OpenAI-compatible backends, the first with
/// `limits: {"rpd": 2}`; the third request is served by the second, the status shows the first
/// backend's quota spent, the preview sums what is left, and the routing log says why.
#[tokio::test]
async fn a_backend_quota_shows_in_status_preview_and_log() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("airlock.db").display());
    let start =
        || RecordingUpstream::start(UpstreamOptions::plain().responder(upstream::openai_chat()));
    let (first, second) = (start().await.unwrap(), start().await.unwrap());
    let airlock = Airlock::start_on(url.as_str(), &[]).await;
    airlock
        .post("/v1/secrets", json!({"name": "KEY", "value": "real-key"}))
        .await;
    for (name, up) in [("first", &first), ("second", &second)] {
        airlock
            .post(
                "/v1/gateway-configs",
                json!({"name": name, "provider": "openai", "endpoint": format!("{}/v1", up.url())}),
            )
            .await;
    }
    let router = airlock
        .post(
            "/v1/gateway-configs",
            json!({"name": "llm", "type": "router", "backends": [
                {"gateway": "first", "secret": "KEY", "priority": 0, "limits": {"rpd": 2}},
                {"gateway": "second", "secret": "KEY", "priority": 1},
            ]}),
        )
        .await;
    assert_eq!(router["backends"][0]["limits"], json!({"rpd": 2}));
    let id = router["id"].as_str().unwrap();
    let dbx = airlock
        .post(
            "/v1/devboxes",
            json!({"source_addresses": ["127.0.0.1"], "gateways": {"LLM": {"gateway": "llm"}}}),
        )
        .await;
    let token = dbx["environment"]["LLM"].as_str().unwrap().to_owned();
    let body = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]});
    for _ in 0..3 {
        let r = airlock_testkit::TestRequest::post(&format!(
            "http://{}/v1/chat/completions",
            airlock.proxy_addr
        ))
        .bearer(&token)
        .json(&body)
        .send()
        .await
        .unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert_eq!(first.requests().len(), 2);
    assert_eq!(second.requests().len(), 1);

    let (status, live) = airlock
        .call(
            http::Method::GET,
            &format!("/v1/gateway-configs/{id}/status"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{live}");
    let rpd = &live["backends"][0]["quota"]["rpd"];
    assert_eq!(rpd["limit"], 2, "{live}");
    assert_eq!(rpd["used"], 2);
    assert_eq!(rpd["remaining"], 0);
    assert!(rpd["resets_at_ms"].as_i64().unwrap() > 0);
    assert_eq!(live["backends"][1]["quota"], json!({}));

    let (status, preview) = airlock
        .call(
            http::Method::POST,
            &format!("/v1/gateway-configs/{id}/route-preview"),
            Some(&body),
        )
        .await;
    assert_eq!(status, 200, "{preview}");
    assert_eq!(preview["remaining"], json!({"rpd": 0}), "{preview}");
    let (_, log) = airlock
        .call(
            http::Method::GET,
            &format!("/v1/gateway-configs/{id}/routing-log?limit=1"),
            None,
        )
        .await;
    let last = &log["decisions"][0];
    assert_eq!(last["provider"], "second");
    assert!(
        last["reason"]
            .as_str()
            .unwrap()
            .contains("first out of its rpd quota until"),
        "{log}"
    );
}
