//! LLM metering through the real binary, on PostgreSQL and on SQLite: gateway configs with a
//! provider, an `api` and a priced `models` list made over the REST API; the official OpenAI and
//! Anthropic SDKs (and Gemini over plain HTTP) talking to the testkit's imitations through the
//! data plane with `gws_` tokens; then every request event's provider, model, usage and
//! `cost_usd` from `GET /v1/audit/requests`, and their sums from `GET /v1/usage`.
//!
//! The imitations count tokens by a fixed formula (`airlock_testkit::upstream::llm`): input =
//! 8 + the prompt's words (+ 1024 read and 256 written for a `cache` model, Gemini only reads),
//! output = the reply's words (7 + the prompt's) or 8 for a tool call (+ 64 reasoning for a
//! `reason` model or Anthropic's `thinking`). The prices below make every cost an exact number
//! of nano-dollars, so every count and cost is asserted exactly.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use airlock_core::llm::{format_usd, parse_usd};
use airlock_testkit::upstream::{self, RecordingUpstream, UpstreamOptions};
use airlock_testkit::{check_python_output, run_python, workspace_root};
use airlock_tests::Airlock;
use serde_json::{json, Value};

/// USD per million tokens: input, output, cache read, cache write. Each is a whole number of
/// nano-dollars per token (2.5 → 2500), so no cost is rounded.
type Price = [f64; 4];
const OPENAI_PRICE: Price = [2.5, 10.0, 0.25, 3.125];
const ANTHROPIC_PRICE: Price = [3.0, 15.0, 0.3, 3.75];
const GEMINI_PRICE: Price = [1.25, 10.0, 0.125, 1.5];

const OPENAI_MODELS: &[&str] = &[
    "gpt-plain",
    "gpt-stream",
    "gpt-stream-asked",
    "gpt-tool",
    "gpt-reason",
    "gpt-cache",
    "gpt-slow",
    "error-model",
    "gpt-responses",
    "gpt-responses-cache-reason",
];
const ANTHROPIC_MODELS: &[&str] = &[
    "claude-plain",
    "claude-cache-reason",
    "claude-tool",
    "claude-slow",
];
const GEMINI_MODELS: &[&str] = &["gemini-plain", "gemini-cache-reason"];

/// What one request event must say: the gateway it went through, its model, status and error
/// code, `(input, output, cache read, cache write, reasoning)` (always exact), and the cost.
struct Expected {
    gateway: &'static str,
    model: &'static str,
    status: u16,
    error_code: Option<&'static str>,
    usage: [u64; 5],
    cost: &'static str,
}

const fn ok(
    gateway: &'static str,
    model: &'static str,
    usage: [u64; 5],
    cost: &'static str,
) -> Expected {
    Expected {
        gateway,
        model,
        status: 200,
        error_code: None,
        usage,
        cost,
    }
}

/// Every metered request the scripts make, each exactly (the unpriced custom gateway's stream
/// is checked apart: its usage is an estimate).
const EXPECTED: &[Expected] = &[
    // OpenAI prices in nano-dollars per token: 2500 in, 10000 out, 250 read, 3125 written.
    // "one two three": 8 + 3 in; 7 + 3 out. 11 × 2500 + 10 × 10000.
    ok("openai", "gpt-plain", [11, 10, 0, 0, 0], "0.0001275"),
    // "again": 8 + 1 in; 7 + 1 out. 9 × 2500 + 8 × 10000.
    ok("openai", "gpt-plain", [9, 8, 0, 0, 0], "0.0001025"),
    // A stream the client did not ask the usage of: Airlock asked, so it is exact.
    ok("openai", "gpt-stream", [12, 11, 0, 0, 0], "0.00014"),
    ok("openai", "gpt-stream-asked", [11, 10, 0, 0, 0], "0.0001275"),
    // A tool call: 8 out. 11 × 2500 + 8 × 10000.
    ok("openai", "gpt-tool", [11, 8, 0, 0, 0], "0.0001075"),
    // 64 reasoning tokens inside the output: 11 × 2500 + 74 × 10000.
    ok("openai", "gpt-reason", [11, 74, 0, 0, 64], "0.0007675"),
    // 11 fresh + 1024 read + 256 written: 27500 + 256000 + 800000 + 10 × 10000.
    ok("openai", "gpt-cache", [1291, 10, 1024, 256, 0], "0.0011835"),
    // An error answer is free.
    Expected {
        gateway: "openai",
        model: "error-model",
        status: 429,
        error_code: None,
        usage: [0, 0, 0, 0, 0],
        cost: "0",
    },
    // The client left after the first chunk: the rest was drained, the usage is exact.
    Expected {
        gateway: "openai",
        model: "gpt-slow",
        status: 200,
        error_code: Some("client_disconnected"),
        usage: [11, 10, 0, 0, 0],
        cost: "0.0001275",
    },
    // Responses: "one two three" and "answer briefly": 8 + 5 in. 13 × 2500 + 10 × 10000.
    ok(
        "openai-responses",
        "gpt-responses",
        [13, 10, 0, 0, 0],
        "0.0001325",
    ),
    // 27500 + 256000 + 800000 + 74 × 10000.
    ok(
        "openai-responses",
        "gpt-responses-cache-reason",
        [1291, 74, 1024, 256, 64],
        "0.0018235",
    ),
    // Anthropic prices: 3000 in, 15000 out, 300 read, 3750 written.
    ok("anthropic", "claude-plain", [11, 10, 0, 0, 0], "0.000183"),
    // "think with the cache": 12 fresh + 1024 + 256; 11 + 64 out.
    // 36000 + 307200 + 960000 + 75 × 15000.
    ok(
        "anthropic",
        "claude-cache-reason",
        [1292, 75, 1024, 256, 64],
        "0.0024282",
    ),
    ok("anthropic", "claude-tool", [11, 8, 0, 0, 0], "0.000153"),
    Expected {
        gateway: "anthropic",
        model: "claude-slow",
        status: 200,
        error_code: Some("client_disconnected"),
        usage: [11, 10, 0, 0, 0],
        cost: "0.000183",
    },
    // Gemini prices: 1250 in, 10000 out, 125 read. 11 × 1250 + 10 × 10000.
    ok("gemini", "gemini-plain", [11, 10, 0, 0, 0], "0.00011375"),
    // 11 fresh + 1024 read (Gemini writes no cache here); 10 + 64 thoughts out.
    // 13750 + 128000 + 74 × 10000.
    ok(
        "gemini",
        "gemini-cache-reason",
        [1035, 74, 1024, 0, 64],
        "0.00088175",
    ),
];

/// The estimated stream, besides the exact ones.
const REQUESTS: usize = EXPECTED.len() + 1;

fn models(ids: &[&str], [input, output, cache_read, cache_write]: Price) -> Value {
    ids.iter()
        .map(|id| {
            json!({"id": id, "cost": {"input": input, "output": output,
                "cacheRead": cache_read, "cacheWrite": cache_write}})
        })
        .collect()
}

struct Rig {
    airlock: Airlock,
    openai: RecordingUpstream,
    _anthropic: RecordingUpstream,
    _gemini: RecordingUpstream,
    devbox: String,
    env: Value,
    /// Gateway config ids by name.
    gateways: BTreeMap<String, String>,
}

async fn rig(database_url: &str) -> Rig {
    let start = |responder| RecordingUpstream::start(UpstreamOptions::plain().responder(responder));
    let openai = start(upstream::openai_chat()).await.unwrap();
    let anthropic = start(upstream::anthropic_messages()).await.unwrap();
    let gemini = start(upstream::gemini()).await.unwrap();
    let airlock = Airlock::start_on(database_url, &[]).await;
    for name in ["OPENAI_KEY", "ANTHROPIC_KEY", "GEMINI_KEY"] {
        airlock
            .post(
                "/v1/secrets",
                json!({"name": name, "value": format!("real-{name}")}),
            )
            .await;
    }
    let bearer = json!({"type": "bearer"});
    let configs = [
        json!({"name": "openai", "provider": "openai", "api": "openai-completions",
            "endpoint": format!("{}/v1", openai.url()), "auth_mechanism": bearer,
            "models": models(OPENAI_MODELS, OPENAI_PRICE)}),
        json!({"name": "openai-responses", "provider": "openai", "api": "openai-responses",
            "endpoint": format!("{}/v1", openai.url()), "auth_mechanism": bearer,
            "models": models(OPENAI_MODELS, OPENAI_PRICE)}),
        // No provider: Airlock cannot know whether the server honours `stream_options`, so a
        // stream's usage is not asked for, and no model is priced.
        json!({"name": "custom-chat", "api": "openai-completions",
            "endpoint": format!("{}/v1", openai.url()), "auth_mechanism": bearer}),
        json!({"name": "anthropic", "provider": "anthropic", "api": "anthropic-messages",
            "endpoint": anthropic.url(), "auth_mechanism": {"type": "header", "key": "x-api-key"},
            "models": models(ANTHROPIC_MODELS, ANTHROPIC_PRICE)}),
        json!({"name": "gemini", "provider": "google", "api": "gemini",
            "endpoint": gemini.url(), "auth_mechanism": {"type": "header", "key": "x-goog-api-key"},
            "models": models(GEMINI_MODELS, GEMINI_PRICE)}),
    ];
    let mut gateways = BTreeMap::new();
    for config in configs {
        let view = airlock.post("/v1/gateway-configs", config.clone()).await;
        for field in ["provider", "api"] {
            assert_eq!(view[field], config[field], "{field}: {view}");
        }
        if let Some(list) = config["models"].as_array() {
            assert_eq!(view["models"].as_array().map(Vec::len), Some(list.len()));
            assert_eq!(view["models"][0]["id"], list[0]["id"]);
            assert_eq!(view["models"][0]["cost"], list[0]["cost"], "{view}");
        }
        gateways.insert(
            view["name"].as_str().unwrap().to_owned(),
            view["id"].as_str().unwrap().to_owned(),
        );
    }
    let key = |gateway: &str, secret: &str| json!({"gateway": gateway, "secret": secret});
    let dbx = airlock
        .post(
            "/v1/devboxes",
            json!({"source_addresses": ["127.0.0.1"], "gateways": {
                "OPENAI": key("openai", "OPENAI_KEY"),
                "OPENAI_RESPONSES": key("openai-responses", "OPENAI_KEY"),
                "CUSTOM": key("custom-chat", "OPENAI_KEY"),
                "ANTHROPIC": key("anthropic", "ANTHROPIC_KEY"),
                "GEMINI": key("gemini", "GEMINI_KEY"),
            }}),
        )
        .await;
    Rig {
        devbox: dbx["id"].as_str().unwrap().to_owned(),
        env: dbx["environment"].clone(),
        airlock,
        openai,
        _anthropic: anthropic,
        _gemini: gemini,
        gateways,
    }
}

impl Rig {
    fn env(&self, name: &str) -> String {
        self.env[name].as_str().unwrap().to_owned()
    }

    /// Runs a script of `tests/python` with the named variables of the devbox's environment.
    async fn script(&self, script: &str, names: &[&str]) -> Value {
        let vars: Vec<(&str, String)> = names.iter().map(|n| (*n, self.env(n))).collect();
        let env: Vec<(&str, &str)> = vars.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let out = run_python(&workspace_root().join("tests/python").join(script), &env)
            .await
            .unwrap();
        let stdout = check_python_output(&out).unwrap();
        serde_json::from_str(stdout.lines().last().unwrap()).unwrap()
    }

    async fn get(&self, path: &str) -> Value {
        let (status, body) = self.airlock.call(http::Method::GET, path, None).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    /// The devbox's request events, once all `n` have been written (a drained stream's event is
    /// written when the drain ends).
    async fn events(&self, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let path = format!("/v1/audit/requests?devbox_id={}&limit=100", self.devbox);
        loop {
            let listed = self.get(&path).await;
            let events = listed["requests"].as_array().unwrap();
            if events.len() >= n {
                assert_eq!(events.len(), n, "more events than requests: {listed}");
                return events.clone();
            }
            assert!(
                Instant::now() < deadline,
                "{} of {n} request events after 30 s: {listed}",
                events.len()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The body the upstream received for `model`.
    fn upstream_body(&self, model: &str) -> Value {
        let bodies: Vec<Value> = self
            .openai
            .requests()
            .iter()
            .filter_map(|r| r.body_json())
            .filter(|b| b["model"] == model)
            .collect();
        assert_eq!(bodies.len(), 1, "{model}: {bodies:?}");
        bodies.into_iter().next().unwrap()
    }
}

fn reply_to(prompt: &str) -> String {
    format!("Hello from the recording upstream. You said: {prompt}")
}

/// `[input, output, cache read, cache write, reasoning]` of an event's or a usage row's counts.
fn counts(v: &Value) -> [u64; 5] {
    [
        "input_tokens",
        "output_tokens",
        "cache_read_tokens",
        "cache_write_tokens",
        "reasoning_tokens",
    ]
    .map(|k| v[k].as_u64().unwrap_or_else(|| panic!("{k}: {v}")))
}

fn nanos(cost: &Value) -> u64 {
    parse_usd(
        "cost_usd",
        cost.as_str().unwrap_or_else(|| panic!("cost: {cost}")),
    )
    .unwrap()
}

/// What the OpenAI SDK saw.
fn check_openai_sdk(out: &Value) {
    assert_eq!(out["plain"]["text"], reply_to("one two three"), "{out}");
    let usage = &out["plain"]["usage"];
    assert_eq!(
        (&usage["prompt_tokens"], &usage["completion_tokens"]),
        (&json!(11), &json!(10))
    );
    assert_eq!(out["plain_again"]["text"], reply_to("again"));

    // Airlock asked for the stream's usage and took the usage-only chunk out again: the SDK saw
    // one choice in every chunk and no usage anywhere, as it would from OpenAI.
    let text =
        |chunks: &[Value]| -> String { chunks.iter().filter_map(|c| c[2].as_str()).collect() };
    for (case, prompt) in [
        ("stream", "stream four words please"),
        ("custom_stream", "no usage asked"),
    ] {
        let chunks = out[case].as_array().unwrap();
        assert!(chunks.len() > 2, "{case}: {chunks:?}");
        for chunk in chunks {
            assert_eq!(
                (&chunk[0], &chunk[1]),
                (&json!(1), &Value::Null),
                "{case}: {chunk}"
            );
        }
        assert_eq!(text(chunks), reply_to(prompt), "{case}");
    }
    // A client that asked gets the usage chunk.
    let chunks = out["stream_asked"].as_array().unwrap();
    let (last, rest) = chunks.split_last().unwrap();
    assert_eq!(last[0], 0);
    assert_eq!(
        (&last[1]["prompt_tokens"], &last[1]["completion_tokens"]),
        (&json!(11), &json!(10))
    );
    assert!(
        rest.iter().all(|c| c[0] == 1 && c[1].is_null()),
        "{chunks:?}"
    );
    assert_eq!(text(rest), reply_to("stream with usage"));

    assert_eq!(out["tool"]["name"], "get_weather");
    assert_eq!(out["tool"]["arguments"], r#"{"input":"test"}"#);
    assert_eq!(out["tool"]["usage"]["completion_tokens"], 8);
    let usage = &out["reason"];
    assert_eq!(
        (
            &usage["completion_tokens"],
            &usage["completion_tokens_details"]["reasoning_tokens"]
        ),
        (&json!(74), &json!(64))
    );
    let usage = &out["cache"];
    let details = &usage["prompt_tokens_details"];
    assert_eq!(
        (
            &usage["prompt_tokens"],
            &details["cached_tokens"],
            &details["cache_write_tokens"]
        ),
        (&json!(1291), &json!(1024), &json!(256))
    );
    assert_eq!(out["error"], 429);
    assert_eq!(out["abort_first"], json!([1, null]));

    assert_eq!(out["responses"]["text"], reply_to("one two three"));
    assert_eq!(
        (
            &out["responses"]["usage"]["input_tokens"],
            &out["responses"]["usage"]["output_tokens"]
        ),
        (&json!(13), &json!(10))
    );
    let stream = &out["responses_stream"];
    assert_eq!(stream["text"], reply_to("stream the response"));
    assert_eq!(stream["output"], json!(["reasoning", "message"]));
    assert_eq!(
        (
            &stream["usage"]["input_tokens"],
            &stream["usage"]["input_tokens_details"]["cached_tokens"],
            &stream["usage"]["output_tokens"],
            &stream["usage"]["output_tokens_details"]["reasoning_tokens"],
        ),
        (&json!(1291), &json!(1024), &json!(74), &json!(64))
    );
}

/// What the Anthropic SDK saw.
fn check_anthropic_sdk(out: &Value) {
    assert_eq!(out["plain"]["text"], reply_to("one two three"), "{out}");
    assert_eq!(
        (
            &out["plain"]["usage"]["input_tokens"],
            &out["plain"]["usage"]["output_tokens"]
        ),
        (&json!(11), &json!(10))
    );
    let stream = &out["stream"];
    assert_eq!(stream["blocks"], json!(["thinking", "text"]));
    assert_eq!(stream["text"], reply_to("think with the cache"));
    let events = stream["events"].as_array().unwrap();
    assert_eq!(events.first(), Some(&json!("message_start")));
    assert_eq!(events.last(), Some(&json!("message_stop")));
    // Anthropic's own convention: input_tokens without the cache.
    let usage = &stream["usage"];
    assert_eq!(
        (
            &usage["input_tokens"],
            &usage["cache_read_input_tokens"],
            &usage["cache_creation_input_tokens"],
            &usage["output_tokens"],
        ),
        (&json!(12), &json!(1024), &json!(256), &json!(75))
    );
    assert_eq!(out["tool"]["name"], "get_weather");
    assert_eq!(out["tool"]["input"], json!({"input": "test"}));
    assert_eq!(out["tool"]["usage"]["output_tokens"], 8);
    assert_eq!(out["abort_first"], "message_start");
}

/// What the plain HTTP client saw of Gemini.
fn check_gemini(out: &Value) {
    let plain = &out["plain"];
    assert_eq!(
        plain["candidates"][0]["content"]["parts"][0]["text"],
        reply_to("one two three"),
        "{out}"
    );
    assert_eq!(
        plain["usageMetadata"],
        json!({"promptTokenCount": 11, "candidatesTokenCount": 10, "totalTokenCount": 21,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 11}]})
    );
    assert_eq!(out["stream_content_type"], "text/event-stream");
    let chunks = out["stream"].as_array().unwrap();
    let text: String = chunks
        .iter()
        .filter_map(|c| c["candidates"][0]["content"]["parts"][0]["text"].as_str())
        .collect();
    assert_eq!(text, reply_to("stream from gemini"));
    let last = chunks.last().unwrap();
    assert_eq!(last["candidates"][0]["finishReason"], "STOP");
    let usage = &last["usageMetadata"];
    assert_eq!(
        [
            &usage["promptTokenCount"],
            &usage["cachedContentTokenCount"],
            &usage["candidatesTokenCount"],
            &usage["thoughtsTokenCount"],
            &usage["totalTokenCount"],
        ],
        [
            &json!(1035),
            &json!(1024),
            &json!(10),
            &json!(64),
            &json!(1109)
        ]
    );
}

/// Every event matches [`EXPECTED`] (in any order; a model's events sorted by input), and the
/// custom gateway's stream was estimated.
fn check_events(rig: &Rig, events: &[Value]) {
    let provider_of = |gateway: &str| match gateway {
        "openai" | "openai-responses" => Some("openai"),
        "anthropic" => Some("anthropic"),
        "gemini" => Some("google"),
        _ => None,
    };
    let mut by_model: BTreeMap<&str, Vec<&Value>> = BTreeMap::new();
    for e in events {
        by_model
            .entry(e["model"].as_str().unwrap())
            .or_default()
            .push(e);
    }
    for list in by_model.values_mut() {
        list.sort_by_key(|e| e["usage"]["input_tokens"].as_u64());
    }
    let mut expected: BTreeMap<&str, Vec<&Expected>> = BTreeMap::new();
    for x in EXPECTED {
        expected.entry(x.model).or_default().push(x);
    }
    for list in expected.values_mut() {
        list.sort_by_key(|x| x.usage[0]);
    }
    for (model, wanted) in &expected {
        let got = by_model.remove(model).unwrap_or_default();
        assert_eq!(got.len(), wanted.len(), "events of {model}: {got:?}");
        for (e, x) in got.into_iter().zip(wanted) {
            let gateway = &rig.gateways[x.gateway];
            assert_eq!(e["gateway_config_id"], gateway.as_str(), "{model}: {e}");
            assert_eq!(
                e["provider"].as_str(),
                provider_of(x.gateway),
                "{model}: {e}"
            );
            assert_eq!(e["status"], x.status, "{model}: {e}");
            // A streaming SDK closes its response as soon as it has read the last event, which
            // can be before the data plane has read the upstream's end of body: such a request
            // is recorded `client_disconnected`, with its full usage. Only the cases that leave
            // on purpose must say so.
            match x.error_code {
                Some(code) => assert_eq!(e["error_code"].as_str(), Some(code), "{model}: {e}"),
                None => assert!(
                    matches!(e["error_code"].as_str(), None | Some("client_disconnected")),
                    "{model}: {e}"
                ),
            }
            assert_eq!(counts(&e["usage"]), x.usage, "{model}: {e}");
            assert_eq!(e["usage"]["exact"], true, "{model}: {e}");
            assert_eq!(e["cost_usd"], x.cost, "{model}: {e}");
        }
    }
    // What is left: the stream through the gateway without a provider, whose usage nobody asked
    // for. It is estimated from what passed, and has no price.
    let rest: Vec<_> = by_model.into_iter().collect();
    assert_eq!(rest.len(), 1, "unexpected events: {rest:?}");
    let (model, custom) = &rest[0];
    assert_eq!(*model, "gpt-custom");
    let e = custom[0];
    assert_eq!(e["gateway_config_id"], rig.gateways["custom-chat"].as_str());
    assert_eq!(e["provider"], Value::Null);
    assert_eq!(e["usage"]["exact"], false, "{e}");
    let [input, output, ..] = counts(&e["usage"]);
    assert!(
        input > 0 && output > 0,
        "an estimate counts what passed: {e}"
    );
    assert_eq!(e["cost_usd"], Value::Null, "a price is never guessed: {e}");

    // The data plane asked the `openai` provider for the stream's usage, not the custom server.
    for model in ["gpt-stream", "gpt-slow"] {
        let body = rig.upstream_body(model);
        assert_eq!(
            body["stream_options"],
            json!({"include_usage": true}),
            "{model}"
        );
    }
    assert!(rig
        .upstream_body("gpt-custom")
        .get("stream_options")
        .is_none());
}

/// `GET /v1/usage` sums what the events say.
async fn check_usage(rig: &Rig, events: &[Value]) {
    let mut sums: BTreeMap<String, ([u64; 5], u64, u64, u64)> = BTreeMap::new();
    for e in events {
        let (tokens, requests, cost, unpriced) = sums
            .entry(e["model"].as_str().unwrap().to_owned())
            .or_default();
        for (sum, n) in tokens.iter_mut().zip(counts(&e["usage"])) {
            *sum += n;
        }
        *requests += 1;
        if e["cost_usd"].is_null() {
            *unpriced += 1;
        } else {
            *cost += nanos(&e["cost_usd"]);
        }
    }
    let rows = rig.get("/v1/usage?group_by=model").await;
    let rows = rows["usage"].as_array().unwrap();
    assert_eq!(rows.len(), sums.len(), "{rows:?}");
    for row in rows {
        let model = row["model"].as_str().unwrap();
        let (tokens, requests, cost, unpriced) = sums[model];
        assert_eq!(counts(row), tokens, "{row}");
        assert_eq!(row["requests"], requests, "{row}");
        assert_eq!(row["unpriced_requests"], unpriced, "{row}");
        if unpriced == requests {
            assert_eq!(row["cost_usd"], Value::Null, "{row}");
        } else {
            assert_eq!(row["cost_usd"], format_usd(cost), "{row}");
        }
        assert!(
            row.get("provider").is_none(),
            "not grouped by provider: {row}"
        );
    }
    // The one model asked twice, by hand: 127500 + 102500 nano-dollars.
    let plain = rows.iter().find(|r| r["model"] == "gpt-plain").unwrap();
    assert_eq!(
        (counts(plain), &plain["requests"], &plain["cost_usd"]),
        ([20, 18, 0, 0, 0], &json!(2), &json!("0.00023"))
    );

    // One gateway by provider: the four Anthropic requests, 183000 + 2428200 + 153000 + 183000.
    let path = format!(
        "/v1/usage?group_by=provider&gateway_id={}",
        rig.gateways["anthropic"]
    );
    let rows = rig.get(&path).await;
    assert_eq!(
        rows["usage"],
        json!([{"provider": "anthropic", "requests": 4, "input_tokens": 1325,
            "output_tokens": 103, "cache_read_tokens": 1024, "cache_write_tokens": 256,
            "reasoning_tokens": 64, "cost_usd": "0.0029472", "unpriced_requests": 0}])
    );
}

async fn metering(database_url: &str) {
    let rig = rig(database_url).await;
    let openai = rig
        .script(
            "metering_openai.py",
            &["OPENAI_URL", "OPENAI", "OPENAI_RESPONSES", "CUSTOM"],
        )
        .await;
    check_openai_sdk(&openai);
    let anthropic = rig
        .script("metering_anthropic.py", &["ANTHROPIC_URL", "ANTHROPIC"])
        .await;
    check_anthropic_sdk(&anthropic);
    let gemini = rig
        .script("metering_gemini.py", &["GEMINI_URL", "GEMINI"])
        .await;
    check_gemini(&gemini);

    let events = rig.events(REQUESTS).await;
    check_events(&rig, &events);
    check_usage(&rig, &events).await;
}

#[tokio::test]
async fn metering_on_postgres() {
    let url = airlock_testkit::pg::shared()
        .await
        .fresh_database()
        .await
        .unwrap();
    metering(&url).await;
}

#[tokio::test]
async fn metering_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("airlock.db").display());
    metering(&url).await;
}
