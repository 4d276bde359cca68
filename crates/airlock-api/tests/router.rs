//! Router gateway configs through the REST API, on SQLite and on Postgres: creation with
//! backends by name or id, the views, field-named 400s for every rule (nothing written),
//! updates, tokens minted without a secret, deletion guards, and the live-state endpoints of a
//! control-only process (503 `no_data_plane`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use http::Method;
use serde_json::{json, Value};
use support::Harness;

async fn count(h: &Harness, path: &str) -> i64 {
    h.get(path).await["total_count"].as_i64().unwrap()
}

/// Two backends (Anthropic and OpenAI presets) with their secrets, and a plain gateway
/// without a dialect.
async fn setup(h: &Harness) -> (Value, Value, Value) {
    h.post(
        "/v1/secrets",
        json!({"name": "ANT_KEY", "value": "sk-ant-1"}),
    )
    .await;
    h.post(
        "/v1/secrets",
        json!({"name": "OAI_KEY", "value": "sk-oai-1"}),
    )
    .await;
    let ant = h
        .post(
            "/v1/gateway-configs",
            json!({"name": "claude", "provider": "anthropic"}),
        )
        .await;
    let oai = h
        .post(
            "/v1/gateway-configs",
            json!({"name": "gpt", "provider": "openai"}),
        )
        .await;
    let plain = h
        .post(
            "/v1/gateway-configs",
            json!({"name": "plain", "endpoint": "https://api.example.com", "auth_mechanism": {"type": "bearer"}}),
        )
        .await;
    (ant, oai, plain)
}

fn router_body() -> Value {
    json!({
        "name": "llm", "type": "router",
        "backends": [
            {"gateway": "claude", "secret": "ANT_KEY", "priority": 1, "models": ["claude-sonnet-4-5"]},
            {"gateway": "gpt", "secret": "OAI_KEY", "weight": 3},
        ],
        "strategy": "cost", "timeout_ms": 30000,
        "aliases": {"fast": "gpt:gpt-4o-mini"},
    })
}

both!(router_create_view_update, |h: Harness| async move {
    let (ant, oai, _) = setup(&h).await;
    let r = h.post("/v1/gateway-configs", router_body()).await;
    assert_eq!(r["type"], "router");
    assert_eq!(r["backends"][0]["gateway"], ant["id"]);
    assert_eq!(r["backends"][0]["name"], "claude");
    assert!(r["backends"][0]["secret"]
        .as_str()
        .unwrap()
        .starts_with("sec_"));
    assert_eq!(r["backends"][1]["weight"], 3);
    assert_eq!(r["backends"][1]["priority"], 0);
    assert_eq!(r["strategy"], "cost");
    assert_eq!(r["fallback"], true);
    assert_eq!(r["max_attempts"], 2);
    assert_eq!(r["timeout_ms"], 30000);
    assert_eq!(
        r["aliases"]["fast"],
        format!("{}:gpt-4o-mini", oai["id"].as_str().unwrap())
    );
    assert!(r.get("endpoint").is_none());
    assert!(!r.to_string().contains("sk-ant-1"));
    let id = r["id"].as_str().unwrap();
    assert_eq!(h.get(&format!("/v1/gateway-configs/{id}")).await, r);

    // Update: only what is given changes.
    let u = h
        .post(
            &format!("/v1/gateway-configs/{id}"),
            json!({"strategy": "latency", "fallback": false, "description": "d"}),
        )
        .await;
    assert_eq!(u["strategy"], "latency");
    assert_eq!(u["fallback"], false);
    assert_eq!(u["backends"], r["backends"]);
    assert_eq!(u["aliases"], r["aliases"]);
    let u = h
        .post(
            &format!("/v1/gateway-configs/{id}"),
            json!({"backends": [{"gateway": oai["id"], "secret": "OAI_KEY"}]}),
        )
        .await;
    assert_eq!(u["backends"].as_array().unwrap().len(), 1);
    assert_eq!(u["max_attempts"], 1);
    assert_eq!(
        u["aliases"],
        json!({}),
        "aliases into the old list are dropped"
    );

    // A backend or its secret cannot be deleted while the router uses it.
    let (status, err) = h
        .call(
            Method::POST,
            &format!("/v1/gateway-configs/{}/delete", oai["id"].as_str().unwrap()),
            Some(&json!({})),
        )
        .await;
    assert_eq!(status, 400, "{err}");
    assert!(err["error"]["message"].as_str().unwrap().contains("router"));
    let (status, _) = h
        .call(Method::POST, "/v1/secrets/OAI_KEY/delete", Some(&json!({})))
        .await;
    assert_eq!(status, 400);
});

both!(router_validation_names_the_field, |h: Harness| async move {
    let (_, _, _) = setup(&h).await;
    let r = h.post("/v1/gateway-configs", router_body()).await;
    let before = count(&h, "/v1/gateway-configs").await;
    let with = |patch: Value| {
        let mut b = router_body();
        for (k, v) in patch.as_object().unwrap() {
            b[k] = v.clone();
        }
        b
    };
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"name": "r", "type": "router"}),
            "backends: is required for a router gateway",
        ),
        (
            with(json!({"backends": []})),
            "backends: must name at least one backend",
        ),
        (
            with(json!({"backends": [{"gateway": "nope", "secret": "ANT_KEY"}]})),
            "backends[0].gateway: no gateway config nope",
        ),
        (
            with(json!({"backends": [{"gateway": "claude", "secret": "NOPE"}]})),
            "backends[0].secret: no secret NOPE",
        ),
        (
            with(json!({"backends": [{"gateway": "plain", "secret": "ANT_KEY"}]})),
            "backends[0].gateway: must have api openai-completions, anthropic-messages or gemini",
        ),
        (
            with(json!({"backends": [{"gateway": r["id"], "secret": "ANT_KEY"}]})),
            "backends[0].gateway: must not be a router gateway",
        ),
        (
            with(json!({"backends": [{"gateway": "claude"}]})),
            "backends[0]: missing field `secret`",
        ),
        (
            with(
                json!({"backends": [{"gateway": "claude", "secret": "ANT_KEY", "models": ["a b"]}]}),
            ),
            "backends[0].models[0]: must be visible ASCII",
        ),
        (
            with(
                json!({"backends": [{"gateway": "claude", "secret": "ANT_KEY", "weight": 2000000}]}),
            ),
            "backends[0].weight: must be from 0 to 1000000",
        ),
        (
            with(
                json!({"backends": [{"gateway": "claude", "secret": "ANT_KEY", "limits": {"rpm": -1}}]}),
            ),
            "backends[0].limits.rpm: must not be negative",
        ),
        (
            with(
                json!({"backends": [{"gateway": "claude", "secret": "ANT_KEY"}, {"gateway": "gpt", "secret": "OAI_KEY", "limits": {"tpm": "many"}}]}),
            ),
            "backends[1].limits.tpm: must be a whole number",
        ),
        (
            with(
                json!({"backends": [{"gateway": "claude", "secret": "ANT_KEY", "limits": {"rpd": 1.5}}]}),
            ),
            "backends[0].limits.rpd: must be a whole number",
        ),
        (
            with(
                json!({"backends": [{"gateway": "claude", "secret": "ANT_KEY", "limits": {"rpm": 0}}]}),
            ),
            "backends[0].limits.rpm: must be at least 1",
        ),
        (
            with(
                json!({"backends": [{"gateway": "claude", "secret": "ANT_KEY", "limits": {"rph": 5}}]}),
            ),
            "backends[0].limits.rph: is not a quota (rpm, tpm, rpd)",
        ),
        (
            with(json!({"backends": [{"gateway": "claude", "secret": "ANT_KEY", "limits": [5]}]})),
            "backends[0].limits: must be an object",
        ),
        (
            with(json!({"strategy": "fastest"})),
            "strategy: must be priority, weighted, latency or cost",
        ),
        (
            with(json!({"max_attempts": 0})),
            "max_attempts: must be from 1 to 8",
        ),
        (
            with(json!({"max_attempts": 9})),
            "max_attempts: must be from 1 to 8",
        ),
        (
            with(json!({"timeout_ms": 0})),
            "timeout_ms: must be from 1 to 600000",
        ),
        (
            with(json!({"aliases": {"x": "nobody:m"}})),
            "aliases.x: names no backend of this router",
        ),
        (
            with(json!({"aliases": {"x": "no-colon"}})),
            "aliases.x: must be <backend gateway name or id>:<model>",
        ),
        (
            with(json!({"aliases": {"auto": "gpt:m"}})),
            "aliases.auto: must not be auto",
        ),
        (
            with(json!({"endpoint": "https://x.com"})),
            "endpoint: must be omitted for a router gateway",
        ),
        (
            with(json!({"custom_headers": []})),
            "custom_headers: must be omitted for a router gateway",
        ),
        (
            json!({"name": "p", "provider": "openai", "backends": []}),
            "backends: is only for a router gateway",
        ),
        (
            json!({"name": "p", "provider": "openai", "strategy": "cost"}),
            "strategy: is only for a router gateway",
        ),
    ];
    for (body, expected) in &cases {
        let (status, err) = h
            .call(Method::POST, "/v1/gateway-configs", Some(body))
            .await;
        assert_eq!(status, 400, "{body}: {err}");
        let message = err["error"]["message"].as_str().unwrap();
        assert!(message.contains(expected), "{body}: {message}");
    }
    assert_eq!(
        count(&h, "/v1/gateway-configs").await,
        before,
        "a refused create left a row"
    );
    let id = r["id"].as_str().unwrap();
    for (body, expected) in [
        (json!({"type": "passthrough"}), "type: cannot be changed"),
        (
            json!({"provider": "openai"}),
            "provider: must be omitted for a router gateway",
        ),
        (
            json!({"backends": [{"gateway": "plain", "secret": "ANT_KEY"}]}),
            "backends[0].gateway: must have api",
        ),
    ] {
        let (status, err) = h
            .call(
                Method::POST,
                &format!("/v1/gateway-configs/{id}"),
                Some(&body),
            )
            .await;
        assert_eq!(status, 400, "{body}: {err}");
        assert!(
            err["error"]["message"].as_str().unwrap().contains(expected),
            "{err}"
        );
    }
    assert_eq!(
        h.get(&format!("/v1/gateway-configs/{id}")).await,
        r,
        "a refused update changed it"
    );
});

both!(router_backend_quotas_and_limits, |h: Harness| async move {
    setup(&h).await;
    let mut body = router_body();
    body["backends"][1]["limits"] = json!({"rpm": 2, "tpm": 40000, "rpd": null});
    body["limits"] = json!({"requests_per_day": 100});
    let r = h.post("/v1/gateway-configs", body).await;
    assert_eq!(r["backends"][0]["limits"], json!({}));
    assert_eq!(r["backends"][1]["limits"], json!({"rpm": 2, "tpm": 40000}));
    assert_eq!(
        r["limits"],
        json!({"requests_per_day": 100}),
        "a router keeps the limits given with it"
    );
    let id = r["id"].as_str().unwrap();
    assert_eq!(h.get(&format!("/v1/gateway-configs/{id}")).await, r);
    let status = h.get(&format!("/v1/gateway-configs/{id}/limits")).await;
    assert_eq!(status["limits"]["requests_per_day"]["limit"], 100);
    // An update of other fields keeps the quotas; new backends bring their own.
    let u = h
        .post(
            &format!("/v1/gateway-configs/{id}"),
            json!({"strategy": "priority", "limits": {"requests_per_minute": 5}}),
        )
        .await;
    assert_eq!(u["backends"], r["backends"]);
    assert_eq!(u["limits"], json!({"requests_per_minute": 5}));
    let u = h
        .post(
            &format!("/v1/gateway-configs/{id}"),
            json!({"backends": [{"gateway": "gpt", "secret": "OAI_KEY", "limits": {"rpd": 9}}]}),
        )
        .await;
    assert_eq!(u["backends"][0]["limits"], json!({"rpd": 9}));
});

both!(router_tokens_take_no_secret, |h: Harness| async move {
    let (ant, _, _) = setup(&h).await;
    let r = h.post("/v1/gateway-configs", router_body()).await;
    let dbx = h
        .post(
            "/v1/devboxes",
            json!({"source_addresses": ["10.0.0.1"], "gateways": {"LLM": {"gateway": "llm"}, "ANT": {"gateway": "claude", "secret": "ANT_KEY"}}}),
        )
        .await;
    assert!(dbx["environment"]["LLM"]
        .as_str()
        .unwrap()
        .starts_with("gws_"));
    assert_eq!(dbx["gateway_specs"]["LLM"]["secret_id"], Value::Null);
    assert_eq!(dbx["gateway_specs"]["LLM"]["gateway_config_id"], r["id"]);
    let id = dbx["id"].as_str().unwrap();
    let t = h
        .post(
            &format!("/v1/devboxes/{id}/create_gateway_token"),
            json!({"gateway": r["id"]}),
        )
        .await;
    assert!(t["token"].as_str().unwrap().starts_with("gws_"));
    let tokens = h.get(&format!("/v1/devboxes/{id}/gateway_tokens")).await;
    assert!(
        tokens.to_string().contains("\"secret_id\":null"),
        "{tokens}"
    );
    for (body, expected) in [
        (
            json!({"gateway": "llm", "secret": "ANT_KEY"}),
            "secret: must be omitted for a router gateway",
        ),
        (json!({"gateway": ant["id"]}), "secret: is required"),
    ] {
        let (status, err) = h
            .call(
                Method::POST,
                &format!("/v1/devboxes/{id}/create_gateway_token"),
                Some(&body),
            )
            .await;
        assert_eq!(status, 400, "{body}: {err}");
        assert!(
            err["error"]["message"].as_str().unwrap().contains(expected),
            "{err}"
        );
    }
    // This process runs no data plane: the live state is not here.
    let rid = r["id"].as_str().unwrap();
    for (method, path) in [
        (Method::GET, format!("/v1/gateway-configs/{rid}/status")),
        (
            Method::GET,
            format!("/v1/gateway-configs/{rid}/routing-log?limit=5"),
        ),
        (
            Method::POST,
            format!("/v1/gateway-configs/{rid}/route-preview"),
        ),
    ] {
        let (status, err) = h.call(method, &path, Some(&json!({"model": "auto"}))).await;
        assert_eq!(status, 503, "{path}: {err}");
        assert_eq!(err["error"]["code"], "no_data_plane");
    }
    let (status, _) = h
        .call(
            Method::GET,
            &format!("/v1/gateway-configs/{}/status", ant["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(status, 400, "not a router");
    let (status, _) = h
        .call(
            Method::GET,
            &format!("/v1/gateway-configs/{rid}/routing-log?limit=0"),
            None,
        )
        .await;
    assert_eq!(status, 400);
});
