//! The control plane's REST API, end to end over HTTP, on SQLite and on Postgres.
//!
//! Validation cases are tables of (body, field named in the error); after each refused call the
//! test checks that nothing was written.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use http::Method;
use serde_json::{json, Value};
use support::Harness;

const SECRET_VALUE: &str = "sk-sentinel-9f8e7d6c5b4a39281706";

async fn count(h: &Harness, path: &str) -> i64 {
    h.get(path).await["total_count"].as_i64().unwrap()
}

fn gateway_body() -> Value {
    json!({"name": "anthropic", "endpoint": "https://api.anthropic.com", "auth_mechanism": {"type": "header", "key": "x-api-key"}})
}

async fn setup_pair(h: &Harness) -> (String, String) {
    let secret = h
        .post(
            "/v1/secrets",
            json!({"name": "ANTHROPIC_KEY", "value": SECRET_VALUE}),
        )
        .await;
    let gw = h.post("/v1/gateway-configs", gateway_body()).await;
    (
        gw["id"].as_str().unwrap().to_owned(),
        secret["id"].as_str().unwrap().to_owned(),
    )
}

both!(gateway_config_lifecycle, |h: Harness| async move {
    let (_, secret_id) = setup_pair(&h).await;
    let created = h
        .post(
            "/v1/gateway-configs",
            json!({
                "name": "openai", "endpoint": "https://api.openai.com/v1/", "auth_mechanism": {"type": "bearer"},
                "description": "prod", "custom_headers": [{"name": "OpenAI-Organization", "value": "org-1"}, {"name": "x-extra", "secret": "ANTHROPIC_KEY"}]
            }),
        )
        .await;
    let id = created["id"].as_str().unwrap();
    assert!(id.starts_with("gwc_"));
    assert_eq!(created["endpoint"], "https://api.openai.com/v1");
    assert_eq!(created["auth_mechanism"], json!({"type": "bearer"}));
    assert_eq!(
        created["custom_headers"][0],
        json!({"name": "openai-organization", "value": "org-1"})
    );
    assert_eq!(
        created["custom_headers"][1],
        json!({"name": "x-extra", "secret": secret_id})
    );
    assert!(created["create_time_ms"].as_i64().unwrap() > 1_600_000_000_000);
    assert!(created["account_id"].as_str().unwrap().starts_with("acc_"));
    assert_eq!(h.get(&format!("/v1/gateway-configs/{id}")).await, created);

    let updated = h
        .post(
            &format!("/v1/gateway-configs/{id}"),
            json!({"custom_headers": [], "name": "openai2"}),
        )
        .await;
    assert_eq!(updated["custom_headers"], json!([]));
    assert_eq!(updated["name"], "openai2");
    assert_eq!(updated["endpoint"], "https://api.openai.com/v1");

    let listed = h.get("/v1/gateway-configs?search=openai").await;
    assert_eq!(listed["total_count"], 1);
    assert_eq!(listed["gateway_configs"][0]["id"], id);
    assert_eq!(
        h.get("/v1/gateway-configs?name=THROP").await["total_count"],
        1
    );
    assert_eq!(
        h.get(&format!("/v1/gateway-configs?id={id}")).await["total_count"],
        1
    );

    let deleted = h
        .post(&format!("/v1/gateway-configs/{id}/delete"), json!({}))
        .await;
    assert_eq!(deleted["id"], id);
    let (status, err) = h
        .call(Method::GET, &format!("/v1/gateway-configs/{id}"), None)
        .await;
    assert_eq!(status, 404);
    assert_eq!(err["type"], "error");
    assert_eq!(err["error"]["type"], "not_found_error");
});

both!(gateway_config_validation, |h: Harness| async move {
    setup_pair(&h).await;
    let nine: Vec<Value> = (0..9)
        .map(|i| json!({"name": format!("h{i}"), "value": "v"}))
        .collect();
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"endpoint": "https://x.com", "auth_mechanism": {"type": "bearer"}}),
            "missing field `name`",
        ),
        (
            json!({"name": "a", "endpoint": "https://x.com", "auth_mechanism": {"type": "bearer"}, "extra": 1}),
            "unknown field `extra`",
        ),
        (
            json!({"name": 5, "endpoint": "https://x.com", "auth_mechanism": {"type": "bearer"}}),
            "name: invalid type",
        ),
        (
            json!({"name": "", "endpoint": "https://x.com", "auth_mechanism": {"type": "bearer"}}),
            "name: must not be empty",
        ),
        (
            json!({"name": "a", "endpoint": "https://u:p@x.com", "auth_mechanism": {"type": "bearer"}}),
            "endpoint: must not contain user info",
        ),
        (
            json!({"name": "a", "endpoint": "https://x.com/v1?k=1", "auth_mechanism": {"type": "bearer"}}),
            "endpoint: must not have a query",
        ),
        (
            json!({"name": "a", "endpoint": "https://x.com/#f", "auth_mechanism": {"type": "bearer"}}),
            "endpoint: must not have a fragment",
        ),
        (
            json!({"name": "a", "endpoint": "http://8.8.8.8", "auth_mechanism": {"type": "bearer"}}),
            "endpoint: plaintext http://",
        ),
        (
            json!({"name": "a", "endpoint": "https://169.254.169.254", "auth_mechanism": {"type": "bearer"}}),
            "endpoint: the upstream resolves to a private",
        ),
        (
            json!({"name": "a", "endpoint": "ftp://x.com", "auth_mechanism": {"type": "bearer"}}),
            "endpoint: must be an absolute https://",
        ),
        (
            json!({"name": "a", "endpoint": "https://x.com", "auth_mechanism": {"type": "bearer", "key": "x"}}),
            "auth_mechanism.key: is not allowed for type bearer",
        ),
        (
            json!({"name": "a", "endpoint": "https://x.com", "auth_mechanism": {"type": "header"}}),
            "auth_mechanism.key: is required",
        ),
        (
            json!({"name": "a", "endpoint": "https://x.com", "auth_mechanism": {"type": "header", "key": "Host"}}),
            "auth_mechanism.key: host is a reserved header",
        ),
        (
            json!({"name": "a", "endpoint": "https://x.com", "auth_mechanism": {"type": "oauth"}}),
            "auth_mechanism.type: must be one of",
        ),
        (
            json!({"name": "a", "endpoint": "https://x.com", "auth_mechanism": {"type": "bearer"}, "custom_headers": nine}),
            "custom_headers: must have at most 8",
        ),
        (
            json!({"name": "a", "endpoint": "https://x.com", "auth_mechanism": {"type": "bearer"}, "custom_headers": [{"name": "transfer-encoding", "value": "x"}]}),
            "custom_headers[0].name: transfer-encoding is a reserved header",
        ),
        (
            json!({"name": "a", "endpoint": "https://x.com", "auth_mechanism": {"type": "bearer"}, "custom_headers": [{"name": "x-a", "value": "v", "secret": "ANTHROPIC_KEY"}]}),
            "custom_headers[0]: must have exactly one",
        ),
        (
            json!({"name": "a", "endpoint": "https://x.com", "auth_mechanism": {"type": "bearer"}, "custom_headers": [{"name": "x-a"}]}),
            "custom_headers[0]: must have exactly one",
        ),
        (
            json!({"name": "a", "endpoint": "https://x.com", "auth_mechanism": {"type": "bearer"}, "custom_headers": [{"name": "x-a", "secret": "NOPE"}]}),
            "custom_headers[0].secret: no secret NOPE",
        ),
        (
            json!({"name": "a", "endpoint": "https://x.com", "auth_mechanism": {"type": "bearer"}, "custom_headers": [{"name": "x-a", "value": "a\nb"}]}),
            "custom_headers[0].value: must be printable",
        ),
        (
            json!({"name": "a", "endpoint": "https://x.com", "auth_mechanism": {"type": "bearer"}, "custom_headers": [{"name": "authorization", "value": "v"}]}),
            "is the header the auth mechanism sets",
        ),
        (
            // The harness's data plane listens there (the policy knows its own listeners).
            json!({"name": "a", "endpoint": "http://127.0.0.1:7080/v1", "auth_mechanism": {"type": "bearer"}}),
            "endpoint: is one of Airlock's own listen addresses",
        ),
    ];
    for (body, expected) in cases {
        let (status, err) = h
            .call(Method::POST, "/v1/gateway-configs", Some(&body))
            .await;
        assert_eq!(status, 400, "{body}: {err}");
        let message = err["error"]["message"].as_str().unwrap();
        assert!(message.contains(expected), "{body}: {message}");
        assert_eq!(err["error"]["type"], "invalid_request_error");
    }
    let resp = airlock_testkit::TestRequest::post(&format!("{}/v1/gateway-configs", h.base))
        .bearer(support::ADMIN)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status, 400);
    assert!(resp.text().contains("not valid JSON"), "{}", resp.text());
    // A valid object followed by more bytes is refused whole, not read up to the first object.
    for trailing in [
        r#"{"name": "t", "endpoint": "https://x.com", "auth_mechanism": {"type": "bearer"}}{"name": "u"}"#,
        r#"{"name": "t", "endpoint": "https://x.com", "auth_mechanism": {"type": "bearer"}} trailing"#,
    ] {
        let resp = airlock_testkit::TestRequest::post(&format!("{}/v1/gateway-configs", h.base))
            .bearer(support::ADMIN)
            .body(trailing)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status, 400, "{trailing}");
        assert!(
            resp.text().contains("characters after the JSON object"),
            "{}",
            resp.text()
        );
    }
    assert_eq!(
        count(&h, "/v1/gateway-configs").await,
        1,
        "a refused create left a row"
    );
    let (status, _) = h
        .call(
            Method::GET,
            "/v1/gateway-configs/gwc_01h8xg3r5y3vq6z8k9m2n4p6r8",
            None,
        )
        .await;
    assert_eq!(status, 404);
});

both!(secrets_lifecycle_and_validation, |h: Harness| async move {
    let created = h
        .post(
            "/v1/secrets",
            json!({"name": "OPENAI_KEY", "value": SECRET_VALUE}),
        )
        .await;
    let id = created["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("sec_"));
    assert_eq!(created.as_object().unwrap().len(), 5, "{created}");
    assert_eq!(created["version"], 1, "{created}");
    assert!(!created.to_string().contains(SECRET_VALUE));
    assert_eq!(h.get("/v1/secrets/OPENAI_KEY").await["id"], id.as_str());
    assert_eq!(
        h.get(&format!("/v1/secrets/id/{id}")).await["name"],
        "OPENAI_KEY"
    );
    let listed = h.get("/v1/secrets").await;
    assert_eq!(listed["total_count"], 1);
    assert!(!listed.to_string().contains(SECRET_VALUE));

    let (status, err) = h
        .call(
            Method::POST,
            "/v1/secrets",
            Some(&json!({"name": "OPENAI_KEY", "value": "x"})),
        )
        .await;
    assert_eq!(status, 409, "{err}");

    let big = "x".repeat(64 * 1024 + 1);
    for (body, expected) in [
        (
            json!({"name": "1BAD", "value": "v"}),
            "name: must be an environment variable name",
        ),
        (
            json!({"name": "A-B", "value": "v"}),
            "name: must be an environment variable name",
        ),
        (json!({"name": "", "value": "v"}), "name: must not be empty"),
        (
            json!({"name": "OK", "value": ""}),
            "value: must not be empty",
        ),
        (
            json!({"name": "OK", "value": big}),
            "value: must be at most 65536 bytes",
        ),
        (json!({"name": "OK"}), "missing field `value`"),
        (json!({"name": "OK", "value": 12}), "value: invalid type"),
        (
            json!({"name": 7, "value": SECRET_VALUE}),
            "name: invalid type",
        ),
    ] {
        let (status, err) = h.call(Method::POST, "/v1/secrets", Some(&body)).await;
        assert_eq!(status, 400, "{err}");
        let message = err["error"]["message"].as_str().unwrap();
        assert!(message.contains(expected), "{message}");
        assert!(!message.contains(SECRET_VALUE));
    }
    assert_eq!(count(&h, "/v1/secrets").await, 1);

    let rotated = h
        .post("/v1/secrets/OPENAI_KEY", json!({"value": "sk-rotated"}))
        .await;
    assert!(rotated["update_time_ms"].as_i64() >= created["update_time_ms"].as_i64());
    assert_eq!(rotated["version"], 2, "{rotated}");
    let row = h
        .store
        .get_secret(
            &airlock_core::AccountId::from_trusted(created_account(&h).await),
            airlock_store::SecretRef::Id(&id),
        )
        .await
        .unwrap();
    assert_eq!(row.version, 2);
    h.post(
        &format!("/v1/secrets/id/{id}/update"),
        json!({"value": "sk-rotated-again"}),
    )
    .await;
    let (status, _) = h
        .call(
            Method::POST,
            "/v1/secrets/NOPE",
            Some(&json!({"value": "x"})),
        )
        .await;
    assert_eq!(status, 404);
    h.post(&format!("/v1/secrets/id/{id}/delete"), json!({}))
        .await;
    let (status, _) = h.call(Method::GET, "/v1/secrets/OPENAI_KEY", None).await;
    assert_eq!(status, 404);
    // The name is free again.
    h.post("/v1/secrets", json!({"name": "OPENAI_KEY", "value": "v"}))
        .await;
});

async fn created_account(h: &Harness) -> String {
    h.get("/v1/gateway-configs").await;
    let events = h.get("/v1/audit/events?limit=1").await;
    events["events"][0]["account_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

both!(devbox_register_mint_and_shutdown, |h: Harness| async move {
    let (gw, sec) = setup_pair(&h).await;
    let dbx = h
        .post(
            "/v1/devboxes",
            json!({"name": "agent-1", "source_addresses": ["10.0.3.17", "fd00:1::/64"], "gateways": {"ANTHROPIC": {"gateway": "anthropic", "secret": "ANTHROPIC_KEY"}}, "metadata": {"team": "a"}}),
        )
        .await;
    let id = dbx["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("dbx_"));
    assert_eq!(dbx["status"], "running");
    assert_eq!(dbx["source_addresses"], json!(["10.0.3.17", "fd00:1::/64"]));
    assert_eq!(
        dbx["gateway_specs"]["ANTHROPIC"],
        json!({"gateway_config_id": gw, "secret_id": sec})
    );
    assert_eq!(dbx["environment"]["ANTHROPIC_URL"], "http://127.0.0.1:7080");
    let token = dbx["environment"]["ANTHROPIC"].as_str().unwrap();
    airlock_core::token::check_format(airlock_core::SecretKind::Gateway, token).unwrap();
    let fetched = h.get(&format!("/v1/devboxes/{id}")).await;
    assert!(
        fetched.get("environment").is_none(),
        "the token is shown once"
    );
    assert!(!fetched.to_string().contains(token));
    assert_eq!(fetched["gateway_specs"], dbx["gateway_specs"]);

    let minted = h
        .post(
            &format!("/v1/devboxes/{id}/create_gateway_token"),
            json!({"gateway": gw, "secret": "ANTHROPIC_KEY"}),
        )
        .await;
    assert!(minted["token"].as_str().unwrap().starts_with("gws_"));
    assert_ne!(minted["token"], token);
    assert_eq!(minted["url"], "http://127.0.0.1:7080");
    assert_eq!(minted["devbox_id"], id.as_str());
    assert_eq!(minted["gateway_config_id"], gw.as_str());
    assert_eq!(minted["endpoint"], "https://api.anthropic.com");
    assert_eq!(
        minted["auth_mechanism"],
        json!({"type": "header", "key": "x-api-key"})
    );

    let updated = h
        .post(
            &format!("/v1/devboxes/{id}"),
            json!({"source_addresses": ["10.0.3.18"]}),
        )
        .await;
    assert_eq!(updated["source_addresses"], json!(["10.0.3.18"]));

    // In use: neither the gateway config nor the secret can be deleted.
    let (status, err) = h
        .call(
            Method::POST,
            &format!("/v1/gateway-configs/{gw}/delete"),
            None,
        )
        .await;
    assert_eq!(status, 400, "{err}");
    assert!(err["error"]["message"].as_str().unwrap().contains("in use"));
    let (status, _) = h
        .call(Method::POST, "/v1/secrets/ANTHROPIC_KEY/delete", None)
        .await;
    assert_eq!(status, 400);

    let down = h
        .post(&format!("/v1/devboxes/{id}/shutdown"), json!({}))
        .await;
    assert_eq!(down["status"], "shutdown");
    let (status, err) = h
        .call(
            Method::POST,
            &format!("/v1/devboxes/{id}/create_gateway_token"),
            Some(&json!({"gateway": gw, "secret": sec})),
        )
        .await;
    assert_eq!(status, 400, "{err}");
    h.post(&format!("/v1/gateway-configs/{gw}/delete"), json!({}))
        .await;
    assert_eq!(
        h.get("/v1/devboxes?status=shutdown").await["total_count"],
        1
    );
    assert_eq!(h.get("/v1/devboxes?status=running").await["total_count"], 0);
});

both!(devbox_validation, |h: Harness| async move {
    setup_pair(&h).await;
    for (body, expected) in [
        (
            json!({"source_addresses": []}),
            "source_addresses: must list at least one",
        ),
        (json!({}), "missing field `source_addresses`"),
        (
            json!({"source_addresses": ["10.0.0.1", "nope"]}),
            "source_addresses[1]: must be an IP address or CIDR",
        ),
        (
            json!({"source_addresses": ["10.0.0.0/33"]}),
            "source_addresses[0]",
        ),
        (
            json!({"source_addresses": ["10.0.0.1"], "gateways": {"1BAD": {"gateway": "anthropic", "secret": "ANTHROPIC_KEY"}}}),
            "gateways.1BAD: must be an environment variable name",
        ),
        (
            json!({"source_addresses": ["10.0.0.1"], "gateways": {"A": {"gateway": "nope", "secret": "ANTHROPIC_KEY"}}}),
            "gateways.A.gateway: no gateway config nope",
        ),
        (
            json!({"source_addresses": ["10.0.0.1"], "gateways": {"A": {"gateway": "anthropic", "secret": "NOPE"}}}),
            "gateways.A.secret: no secret NOPE",
        ),
        (
            json!({"source_addresses": ["10.0.0.1"], "gateways": {"A": {"gateway": "anthropic"}}}),
            "gateways.A.secret: is required",
        ),
        (
            json!({"source_addresses": ["10.0.0.1"], "gateways": {"A": {"gateway": "anthropic", "secret": "ANTHROPIC_KEY"}, "A_URL": {"gateway": "anthropic", "secret": "ANTHROPIC_KEY"}}}),
            "collides with A_URL",
        ),
        (
            json!({"source_addresses": ["10.0.0.1"], "metadata": {"k": 1}}),
            "metadata.k: must be a string",
        ),
        (
            json!({"source_addresses": "10.0.0.1"}),
            "source_addresses: invalid type",
        ),
    ] {
        let (status, err) = h.call(Method::POST, "/v1/devboxes", Some(&body)).await;
        assert_eq!(status, 400, "{body}: {err}");
        let message = err["error"]["message"].as_str().unwrap();
        assert!(message.contains(expected), "{body}: {message}");
    }
    assert_eq!(
        count(&h, "/v1/devboxes").await,
        0,
        "a refused register left a row"
    );
    let dbx = h
        .post("/v1/devboxes", json!({"source_addresses": ["0.0.0.0/0"]}))
        .await;
    assert_eq!(dbx["environment"], json!({}));
    let (status, _) = h
        .call(
            Method::POST,
            "/v1/devboxes/dbx_01h8xg3r5y3vq6z8k9m2n4p6r8/shutdown",
            None,
        )
        .await;
    assert_eq!(status, 404);
});

both!(
    accounts_are_sealed_from_each_other,
    |h: Harness| async move {
        let (gw, sec) = setup_pair(&h).await;
        let dbx = h
            .post("/v1/devboxes", json!({"source_addresses": ["10.0.0.1"]}))
            .await;
        let dbx_id = dbx["id"].as_str().unwrap();
        let b = h.post("/v1/accounts", json!({"name": "tenant-b"})).await;
        let b_key = b["api_key"]["key"].as_str().unwrap().to_owned();
        for path in [
            format!("/v1/gateway-configs/{gw}"),
            format!("/v1/secrets/id/{sec}"),
            "/v1/secrets/ANTHROPIC_KEY".into(),
            format!("/v1/devboxes/{dbx_id}"),
        ] {
            let (status, _) = h.call_as(&b_key, Method::GET, &path, None).await;
            assert_eq!(status, 404, "{path}");
        }
        for path in ["/v1/gateway-configs", "/v1/secrets", "/v1/devboxes"] {
            let (status, v) = h.call_as(&b_key, Method::GET, path, None).await;
            assert_eq!(
                (status, v["total_count"].as_i64()),
                (200, Some(0)),
                "{path}"
            );
        }
        let (status, _) = h
            .call_as(
                &b_key,
                Method::POST,
                &format!("/v1/secrets/id/{sec}/update"),
                Some(&json!({"value": "stolen"})),
            )
            .await;
        assert_eq!(status, 404);
        let (status, _) = h
            .call_as(
                &b_key,
                Method::POST,
                &format!("/v1/devboxes/{dbx_id}/shutdown"),
                None,
            )
            .await;
        assert_eq!(status, 404);
        let (status, _) = h
            .call_as(
                &b_key,
                Method::POST,
                &format!("/v1/devboxes/{dbx_id}/create_gateway_token"),
                Some(&json!({"gateway": gw, "secret": sec})),
            )
            .await;
        assert_eq!(status, 404);
        let own = h
            .call_as(
                &b_key,
                Method::POST,
                "/v1/devboxes",
                Some(&json!({"source_addresses": ["10.0.0.2"]})),
            )
            .await
            .1;
        let (status, err) = h
            .call_as(
                &b_key,
                Method::POST,
                &format!(
                    "/v1/devboxes/{}/create_gateway_token",
                    own["id"].as_str().unwrap()
                ),
                Some(&json!({"gateway": gw, "secret": sec})),
            )
            .await;
        assert_eq!(status, 400, "{err}");
        let (status, err) = h.call_as(&b_key, Method::POST, "/v1/gateway-configs", Some(&json!({"name": "x", "endpoint": "https://x.com", "auth_mechanism": {"type": "bearer"}, "custom_headers": [{"name": "x-k", "secret": sec}]}))).await;
        assert_eq!(status, 400, "{err}");
        // B is not an operator.
        let (status, _) = h
            .call_as(
                &b_key,
                Method::POST,
                "/v1/accounts",
                Some(&json!({"name": "c"})),
            )
            .await;
        assert_eq!(status, 403);
        let (status, _) = h
            .call_as(
                "not-a-key-at-all-000000000000",
                Method::GET,
                "/v1/secrets",
                None,
            )
            .await;
        assert_eq!(status, 401);
        let (status, _) = h.call_as("", Method::GET, "/v1/secrets", None).await;
        assert_eq!(status, 401);
    }
);

both!(launcher_scope, |h: Harness| async move {
    let (gw, _) = setup_pair(&h).await;
    let key = h
        .post(
            "/v1/api-keys",
            json!({"name": "orchestrator", "scope": "launcher"}),
        )
        .await;
    let launcher = key["key"].as_str().unwrap().to_owned();
    let (status, dbx) = h
        .call_as(&launcher, Method::POST, "/v1/devboxes", Some(&json!({"source_addresses": ["10.0.0.1"], "gateways": {"A": {"gateway": gw, "secret": "ANTHROPIC_KEY"}}})))
        .await;
    assert_eq!(status, 200, "{dbx}");
    let id = dbx["id"].as_str().unwrap();
    assert_eq!(
        h.call_as(
            &launcher,
            Method::GET,
            &format!("/v1/gateway-configs/{gw}"),
            None
        )
        .await
        .0,
        200
    );
    assert_eq!(
        h.call_as(
            &launcher,
            Method::POST,
            &format!("/v1/devboxes/{id}/create_gateway_token"),
            Some(&json!({"gateway": gw, "secret": "ANTHROPIC_KEY"}))
        )
        .await
        .0,
        200
    );
    assert_eq!(
        h.call_as(
            &launcher,
            Method::POST,
            &format!("/v1/devboxes/{id}/shutdown"),
            None
        )
        .await
        .0,
        200
    );
    for (method, path, body) in [
        (Method::GET, "/v1/secrets", None),
        (Method::GET, "/v1/secrets/ANTHROPIC_KEY", None),
        (
            Method::POST,
            "/v1/secrets",
            Some(json!({"name": "X", "value": "y"})),
        ),
        (
            Method::POST,
            "/v1/secrets/ANTHROPIC_KEY",
            Some(json!({"value": "y"})),
        ),
        (Method::POST, "/v1/gateway-configs", Some(gateway_body())),
        (
            Method::POST,
            &format!("/v1/gateway-configs/{gw}/delete"),
            None,
        ),
        (
            Method::POST,
            "/v1/api-keys",
            Some(json!({"name": "x", "scope": "admin"})),
        ),
        (Method::GET, "/v1/audit/events", None),
    ] {
        let (status, err) = h
            .call_as(&launcher, method.clone(), path, body.as_ref())
            .await;
        assert_eq!(status, 403, "{method} {path}: {err}");
        assert_eq!(err["error"]["type"], "permission_error");
    }
    assert_eq!(count(&h, "/v1/secrets").await, 1);
    h.post(
        &format!("/v1/api-keys/{}/revoke", key["id"].as_str().unwrap()),
        json!({}),
    )
    .await;
    assert_eq!(
        h.call_as(&launcher, Method::GET, "/v1/devboxes", None)
            .await
            .0,
        401
    );
});

both!(idempotency_keys, |h: Harness| async move {
    let send = |key: &'static str, header: &'static str, body: Value| {
        let base = h.base.clone();
        async move {
            let resp = airlock_testkit::TestRequest::post(&format!("{base}/v1/secrets"))
                .bearer(support::ADMIN)
                .header(header, key)
                .json(&body)
                .send()
                .await
                .unwrap();
            (
                resp.status.as_u16(),
                resp.json().unwrap(),
                resp.header("idempotent-replayed"),
            )
        }
    };
    let (s1, first, r1) = send("k-1", "Idempotency-Key", json!({"name": "A", "value": "v"})).await;
    let (s2, second, r2) = send("k-1", "Idempotency-Key", json!({"name": "A", "value": "v"})).await;
    assert_eq!((s1, s2), (200, 200));
    assert_eq!(first, second);
    assert_eq!((r1, r2.as_deref()), (None, Some("true")));
    let (s3, err, _) = send("k-1", "Idempotency-Key", json!({"name": "B", "value": "v"})).await;
    assert_eq!(s3, 400, "{err}");
    let (s4, a, _) = send("req-7", "x-request-id", json!({"name": "C", "value": "v"})).await;
    let (s5, b, _) = send("req-7", "x-request-id", json!({"name": "C", "value": "v"})).await;
    assert_eq!((s4, s5), (200, 200));
    assert_eq!(a, b);
    assert_eq!(count(&h, "/v1/secrets").await, 2);
    // A failed request is remembered too (4xx), so the retry sees the same answer.
    let (s6, _, _) = send("k-2", "Idempotency-Key", json!({"name": "A", "value": "v"})).await;
    let (s7, _, r7) = send("k-2", "Idempotency-Key", json!({"name": "A", "value": "v"})).await;
    assert_eq!((s6, s7, r7.as_deref()), (409, 409, Some("true")));
});

both!(pagination, |h: Harness| async move {
    for i in 0..25 {
        h.post("/v1/gateway-configs", json!({"name": format!("g{i}"), "endpoint": "https://x.com", "auth_mechanism": {"type": "bearer"}})).await;
    }
    let first = h.get("/v1/gateway-configs").await;
    assert_eq!(first["gateway_configs"].as_array().unwrap().len(), 20);
    assert_eq!(first["has_more"], true);
    assert_eq!(first["total_count"], 25);
    assert_eq!(first["gateway_configs"][0]["name"], "g24", "newest first");
    let mut seen = Vec::new();
    let mut after = String::new();
    loop {
        let page = h
            .get(&format!(
                "/v1/gateway-configs?limit=10&starting_after={after}&include_total_count=false"
            ))
            .await;
        assert!(page.get("total_count").is_none());
        let items = page["gateway_configs"].as_array().unwrap();
        seen.extend(items.iter().map(|g| g["name"].as_str().unwrap().to_owned()));
        if page["has_more"] == false {
            break;
        }
        after = items.last().unwrap()["id"].as_str().unwrap().to_owned();
    }
    assert_eq!(seen.len(), 25);
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 25);
    for bad in ["0", "5001", "abc", "-1"] {
        let (status, err) = h
            .call(
                Method::GET,
                &format!("/v1/gateway-configs?limit={bad}"),
                None,
            )
            .await;
        assert_eq!(status, 400, "{bad}");
        assert!(err["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("limit:"));
    }
    assert_eq!(
        h.get("/v1/gateway-configs?limit=5000").await["gateway_configs"]
            .as_array()
            .unwrap()
            .len(),
        25
    );
});

both!(audit_trail_records_every_write, |h: Harness| async move {
    let (gw, _) = setup_pair(&h).await;
    h.post(
        "/v1/secrets/ANTHROPIC_KEY",
        json!({"value": "sk-new-sentinel-value-123"}),
    )
    .await;
    let dbx = h.post("/v1/devboxes", json!({"source_addresses": ["10.0.0.1"], "gateways": {"A": {"gateway": gw, "secret": "ANTHROPIC_KEY"}}})).await;
    let id = dbx["id"].as_str().unwrap();
    let token = h
        .post(
            &format!("/v1/devboxes/{id}/create_gateway_token"),
            json!({"gateway": gw, "secret": "ANTHROPIC_KEY"}),
        )
        .await;
    h.post(&format!("/v1/devboxes/{id}/shutdown"), json!({}))
        .await;
    let events = h.get("/v1/audit/events?limit=100").await;
    let actions: Vec<&str> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for expected in [
        "secret.create",
        "gateway_config.create",
        "secret.rotate",
        "devbox.register",
        "devbox.create_gateway_token",
        "devbox.shutdown",
    ] {
        assert!(
            actions.contains(&expected),
            "{expected} missing from {actions:?}"
        );
    }
    let text = events.to_string();
    for leaked in [
        SECRET_VALUE,
        "sk-new-sentinel-value-123",
        dbx["environment"]["A"].as_str().unwrap(),
        token["token"].as_str().unwrap(),
    ] {
        assert!(!text.contains(leaked));
    }
    let e = &events["events"][0];
    assert_eq!(e["action"], "devbox.shutdown");
    assert!(e["api_key_id"].as_str().unwrap().starts_with("key_"));
    assert_eq!(e["client_addr"], "127.0.0.1");
    let filtered = h.get(&format!("/v1/audit/events?object_id={id}")).await;
    assert_eq!(filtered["total_count"], 3);
    assert_eq!(
        h.get("/v1/audit/events?action=secret.rotate").await["total_count"],
        1
    );
});

// SECURITY #19: a copy of the database yields neither secret values nor tokens.
both!(database_holds_no_plaintext, |h: Harness| async move {
    use base64::Engine;
    let (gw, _) = setup_pair(&h).await;
    let dbx = h
        .call(Method::POST, "/v1/devboxes", Some(&json!({"source_addresses": ["10.0.0.1"], "gateways": {"A": {"gateway": gw, "secret": "ANTHROPIC_KEY"}}})))
        .await
        .1;
    let token = dbx["environment"]["A"].as_str().unwrap().to_owned();
    // Idempotent replays are stored too; make one that holds a token.
    airlock_testkit::TestRequest::post(&format!(
        "{}/v1/devboxes/{}/create_gateway_token",
        h.base,
        dbx["id"].as_str().unwrap()
    ))
    .bearer(support::ADMIN)
    .header("Idempotency-Key", "mint-1")
    .json(&json!({"gateway": gw, "secret": "ANTHROPIC_KEY"}))
    .send()
    .await
    .unwrap();
    let dump: Vec<u8> = if h.url.starts_with("sqlite://") {
        h.store.close().await;
        let mut all = Vec::new();
        for entry in std::fs::read_dir(h.dir.path()).unwrap() {
            all.extend(std::fs::read(entry.unwrap().path()).unwrap());
        }
        all
    } else {
        let out = tokio::process::Command::new("pg_dump")
            .arg(&h.url)
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    assert!(dump.len() > 1000);
    let hex = |s: &str| s.bytes().map(|b| format!("{b:02x}")).collect::<String>();
    for needle in [
        SECRET_VALUE.to_owned(),
        base64::engine::general_purpose::STANDARD.encode(SECRET_VALUE),
        hex(SECRET_VALUE),
        token.clone(),
        support::ADMIN.to_owned(),
    ] {
        assert!(
            !dump.windows(needle.len()).any(|w| w == needle.as_bytes()),
            "the database holds {needle}"
        );
    }
    assert!(
        dump.windows(9).any(|w| w == b"ANTHROPIC"),
        "the dump should at least hold the names"
    );
});

both!(health_and_openapi, |h: Harness| async move {
    let (status, body) = airlock_testkit::http_get(&format!("{}/healthz", h.base))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body:?}");
    let (status, body) = airlock_testkit::http_get(&format!("{}/readyz", h.base))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body:?}");
    let (status, body) = airlock_testkit::http_get(&format!("{}/v1/openapi.json", h.base))
        .await
        .unwrap();
    assert_eq!(status, 200);
    let doc: Value = serde_json::from_slice(&body).unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let (status, _) = h.call(Method::GET, "/v1/nothing-here", None).await;
    assert_eq!(status, 404);
});

both!(
    idempotency_keys_are_bound_to_the_api_key,
    |h: Harness| async move {
        let launcher = h
            .post("/v1/api-keys", json!({"name": "l", "scope": "launcher"}))
            .await["key"]
            .as_str()
            .unwrap()
            .to_owned();
        let send = |key: String| {
            let base = h.base.clone();
            async move {
                let resp = airlock_testkit::TestRequest::post(&format!("{base}/v1/secrets"))
                    .bearer(&key)
                    .header("Idempotency-Key", "shared")
                    .json(&json!({"name": "S", "value": "v"}))
                    .send()
                    .await
                    .unwrap();
                resp.status.as_u16()
            }
        };
        assert_eq!(send(support::ADMIN.to_owned()).await, 200);
        assert_eq!(
            send(launcher).await,
            400,
            "another key must not replay the admin's result"
        );
        let (status, err) = h.call(Method::PUT, "/v1/secrets", None).await;
        assert_eq!(status, 405);
        assert_eq!(err["error"]["code"], "method_not_allowed");
    }
);

// SECURITY threat 3: every write of a gateway config stores a binding that checks under the
// keyring for exactly what was written, and a view never shows it.
both!(
    gateway_configs_are_bound_on_every_write,
    |h: Harness| async move {
        use airlock_core::binding::GATEWAY_BINDING;
        let (_, secret_id) = setup_pair(&h).await;
        let created = h
        .post(
            "/v1/gateway-configs",
            json!({"name": "bound", "endpoint": "https://api.example.com/v1", "auth_mechanism": {"type": "bearer"},
                   "custom_headers": [{"name": "x-org", "secret": secret_id}]}),
        )
        .await;
        let id = created["id"].as_str().unwrap().to_owned();
        assert!(created.get("binding").is_none(), "{created}");
        let account = airlock_core::AccountId::from_trusted(
            created["account_id"].as_str().unwrap().to_owned(),
        );
        let check = |row: &airlock_store::GatewayConfigRow| {
            let message = airlock_core::binding::gateway_binding_message(
                &row.account_id,
                &row.id,
                &row.endpoint,
                &row.auth,
                &row.custom_headers,
            );
            h.keyring
                .verify_binding(GATEWAY_BINDING, &message, row.binding.as_deref().unwrap())
                .is_ok()
        };
        let first = h.store.get_gateway_config(&account, &id).await.unwrap();
        assert!(check(&first));
        for update in [
            json!({"endpoint": "https://api.example.com/v2"}),
            json!({"auth_mechanism": {"type": "header", "key": "x-api-key"}}),
            json!({"custom_headers": []}),
            json!({"name": "renamed", "description": "labels are not bound"}),
        ] {
            let before = h.store.get_gateway_config(&account, &id).await.unwrap();
            h.post(&format!("/v1/gateway-configs/{id}"), update.clone())
                .await;
            let after = h.store.get_gateway_config(&account, &id).await.unwrap();
            assert!(check(&after), "{update}");
            let bound_fields_changed = update.get("name").is_none();
            assert_eq!(
                after.binding != before.binding,
                bound_fields_changed,
                "{update}"
            );
            // The old binding does not check for the new content.
            let message = airlock_core::binding::gateway_binding_message(
                &after.account_id,
                &after.id,
                &after.endpoint,
                &after.auth,
                &after.custom_headers,
            );
            if bound_fields_changed {
                assert!(h
                    .keyring
                    .verify_binding(
                        GATEWAY_BINDING,
                        &message,
                        before.binding.as_deref().unwrap()
                    )
                    .is_err());
            }
        }
    }
);

/// Every preset id the contract names.
const CONTRACT_PROVIDERS: [&str; 24] = [
    "anthropic",
    "openai",
    "google",
    "vertex",
    "azure-openai",
    "bedrock",
    "xai",
    "openrouter",
    "groq",
    "mistral",
    "cerebras",
    "deepseek",
    "together",
    "fireworks",
    "sambanova",
    "minimax",
    "huggingface",
    "perplexity",
    "cohere",
    "moonshot",
    "meta",
    "ollama",
    "vllm",
    "lmstudio",
];

/// The fields of a gateway view that a provider decides, for tables of expectations.
fn llm_fields(v: &Value) -> Value {
    json!({
        "type": v["type"],
        "provider": v["provider"],
        "endpoint": v["endpoint"],
        "auth_mechanism": v["auth_mechanism"],
        "api": v["api"],
        "custom_headers": v["custom_headers"],
        "models": v["models"],
    })
}

const ANTHROPIC_VERSION: &str = "2023-06-01";

both!(gateway_configs_from_presets, |h: Harness| async move {
    let bearer = json!({"type": "bearer"});
    let version = json!([{"name": "anthropic-version", "value": ANTHROPIC_VERSION}]);
    let full_model = json!({
        "id": "llama-3.3-70b", "name": "Llama 3.3 70B", "reasoning": true, "input": ["text", "image"],
        "cost": {"input": 0.59, "output": 0.79, "cacheRead": 0.000000001, "cacheWrite": 12345.123456789},
        "contextWindow": 131072, "maxTokens": 8192, "tools": false
    });
    let cases: Vec<(Value, Value)> = vec![
        // A preset alone: endpoint, auth, dialect and the required header all come from it.
        (
            json!({"name": "claude", "provider": "anthropic"}),
            json!({"type": "passthrough", "provider": "anthropic", "endpoint": "https://api.anthropic.com",
                   "auth_mechanism": {"type": "header", "key": "x-api-key"}, "api": "anthropic-messages",
                   "custom_headers": version, "models": []}),
        ),
        // Given fields win over the preset's, a header the caller set included.
        (
            json!({"name": "claude-via-proxy", "type": "passthrough", "provider": "anthropic",
                   "endpoint": "https://llm-proxy.example.com/anthropic", "auth_mechanism": bearer,
                   "custom_headers": [{"name": "Anthropic-Version", "value": "2024-01-01"}]}),
            json!({"type": "passthrough", "provider": "anthropic", "endpoint": "https://llm-proxy.example.com/anthropic",
                   "auth_mechanism": bearer, "api": "anthropic-messages",
                   "custom_headers": [{"name": "anthropic-version", "value": "2024-01-01"}], "models": []}),
        ),
        (
            json!({"name": "gpt", "provider": "openai", "api": "openai-responses"}),
            json!({"type": "passthrough", "provider": "openai", "endpoint": "https://api.openai.com/v1",
                   "auth_mechanism": bearer, "api": "openai-responses", "custom_headers": [], "models": []}),
        ),
        (
            json!({"name": "gemini", "provider": "google"}),
            json!({"type": "passthrough", "provider": "google", "endpoint": "https://generativelanguage.googleapis.com",
                   "auth_mechanism": {"type": "header", "key": "x-goog-api-key"}, "api": "gemini",
                   "custom_headers": [], "models": []}),
        ),
        // A per-resource preset with the endpoint of the operator's resource.
        (
            json!({"name": "azure", "provider": "azure-openai", "endpoint": "https://acme.openai.azure.com/openai/v1"}),
            json!({"type": "passthrough", "provider": "azure-openai", "endpoint": "https://acme.openai.azure.com/openai/v1",
                   "auth_mechanism": {"type": "header", "key": "api-key"}, "api": "openai-completions",
                   "custom_headers": [], "models": []}),
        ),
        // A local server's preset (the harness allows private upstreams), with a model list
        // whose prices come back as the numbers that were sent.
        (
            json!({"name": "local", "provider": "ollama", "models": [full_model, {"id": "tiny"}]}),
            json!({"type": "passthrough", "provider": "ollama", "endpoint": "http://localhost:11434/v1",
                   "auth_mechanism": bearer, "api": "openai-completions", "custom_headers": [],
                   "models": [full_model, {"id": "tiny", "reasoning": false, "input": ["text"]}]}),
        ),
        // A cache price that is not given is charged as plain input.
        (
            json!({"name": "custom", "endpoint": "https://llm.example.com/v1", "auth_mechanism": bearer,
                   "api": "openai-completions", "models": [{"id": "m", "cost": {"input": 3, "output": 15}}]}),
            json!({"type": "passthrough", "provider": null, "endpoint": "https://llm.example.com/v1",
                   "auth_mechanism": bearer, "api": "openai-completions", "custom_headers": [],
                   "models": [{"id": "m", "reasoning": false, "input": ["text"],
                               "cost": {"input": 3.0, "output": 15.0, "cacheRead": 3.0, "cacheWrite": 3.0}}]}),
        ),
        // Runloop's shape: no provider, not metered.
        (
            gateway_body(),
            json!({"type": "passthrough", "provider": null, "endpoint": "https://api.anthropic.com",
                   "auth_mechanism": {"type": "header", "key": "x-api-key"}, "api": "none",
                   "custom_headers": [], "models": []}),
        ),
    ];
    for (body, want) in cases {
        let created = h.post("/v1/gateway-configs", body.clone()).await;
        assert_eq!(llm_fields(&created), want, "{body}");
        let id = created["id"].as_str().unwrap();
        assert_eq!(h.get(&format!("/v1/gateway-configs/{id}")).await, created);
    }

    // Updates: a new provider brings its defaults; naming the same one changes nothing; the
    // required header survives a replaced list; models are replaced whole.
    let plain = h.post("/v1/gateway-configs", gateway_body()).await;
    let id = plain["id"].as_str().unwrap();
    let path = format!("/v1/gateway-configs/{id}");
    let updates: Vec<(Value, Value)> = vec![
        (
            json!({"provider": "openai"}),
            json!({"type": "passthrough", "provider": "openai", "endpoint": "https://api.openai.com/v1",
                   "auth_mechanism": bearer, "api": "openai-completions", "custom_headers": [], "models": []}),
        ),
        (
            json!({"provider": "openai", "api": "openai-responses", "models": [{"id": "gpt-5"}]}),
            json!({"type": "passthrough", "provider": "openai", "endpoint": "https://api.openai.com/v1",
                   "auth_mechanism": bearer, "api": "openai-responses", "custom_headers": [],
                   "models": [{"id": "gpt-5", "reasoning": false, "input": ["text"]}]}),
        ),
        (
            json!({"provider": "anthropic", "endpoint": "https://anthropic.example.com"}),
            json!({"type": "passthrough", "provider": "anthropic", "endpoint": "https://anthropic.example.com",
                   "auth_mechanism": {"type": "header", "key": "x-api-key"}, "api": "anthropic-messages",
                   "custom_headers": version, "models": [{"id": "gpt-5", "reasoning": false, "input": ["text"]}]}),
        ),
        (
            json!({"custom_headers": [], "models": []}),
            json!({"type": "passthrough", "provider": "anthropic", "endpoint": "https://anthropic.example.com",
                   "auth_mechanism": {"type": "header", "key": "x-api-key"}, "api": "anthropic-messages",
                   "custom_headers": version, "models": []}),
        ),
        (
            json!({"api": "none", "type": "passthrough"}),
            json!({"type": "passthrough", "provider": "anthropic", "endpoint": "https://anthropic.example.com",
                   "auth_mechanism": {"type": "header", "key": "x-api-key"}, "api": "none",
                   "custom_headers": version, "models": []}),
        ),
    ];
    for (body, want) in updates {
        let updated = h.post(&path, body.clone()).await;
        assert_eq!(llm_fields(&updated), want, "{body}");
        assert_eq!(h.get(&path).await, updated, "{body}");
    }
});

both!(gateway_llm_validation, |h: Harness| async move {
    setup_pair(&h).await;
    let bearer = json!({"type": "bearer"});
    let base = |extra: Value| {
        let mut body = json!({"name": "m", "endpoint": "https://x.com", "auth_mechanism": bearer});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };
    let model = |extra: Value| {
        let mut m = json!({"id": "m1"});
        for (k, v) in extra.as_object().unwrap() {
            m[k] = v.clone();
        }
        base(json!({"models": [{"id": "m0"}, m]}))
    };
    let cost = |c: Value| model(json!({"cost": c}));
    let many: Vec<Value> = (0..513).map(|i| json!({"id": format!("m{i}")})).collect();
    let eight: Vec<Value> = (0..8)
        .map(|i| json!({"name": format!("h{i}"), "value": "v"}))
        .collect();
    let non_negative = "must be a non-negative number with at most 9 decimals";
    let cases: Vec<(Value, String)> = vec![
        (json!({"name": "a", "provider": "nope"}), "provider: is not a known provider".into()),
        (json!({"name": "a", "provider": 7}), "provider: invalid type".into()),
        (json!({"name": "a", "type": "router", "provider": "openai"}), "provider: must be omitted for a router gateway".into()),
        (json!({"name": "a", "type": "proxy", "provider": "openai"}), "type: must be passthrough or router".into()),
        (json!({"name": "a", "auth_mechanism": bearer}), "endpoint: is required unless provider is given".into()),
        (json!({"name": "a", "endpoint": "https://x.com"}), "auth_mechanism: is required unless provider is given".into()),
        (json!({"name": "a", "provider": "azure-openai"}), "endpoint: is required with provider azure-openai".into()),
        (json!({"name": "a", "provider": "vertex"}), "endpoint: is required with provider vertex".into()),
        (json!({"name": "a", "provider": "bedrock", "auth_mechanism": bearer}), "endpoint: is required with provider bedrock".into()),
        (json!({"name": "a", "provider": "openai", "endpoint": "https://u:p@x.com"}), "endpoint: must not contain user info".into()),
        (base(json!({"api": "openai"})), "api: must be one of openai-completions, openai-responses, anthropic-messages, gemini, none".into()),
        (json!({"name": "a", "provider": "anthropic", "custom_headers": eight}), "custom_headers: must have at most 8 entries, the headers provider anthropic requires included".into()),
        (json!({"name": "a", "provider": "anthropic", "auth_mechanism": {"type": "header", "key": "anthropic-version"}}), "custom_headers[0].name: is the header the auth mechanism sets".into()),
        (base(json!({"models": many})), "models: must have at most 512 entries".into()),
        (base(json!({"models": {"id": "m"}})), "models: invalid type".into()),
        (model(json!({"id": "m0"})), "models[1].id: appears twice".into()),
        (model(json!({"id": ""})), "models[1].id: must be 1 to 256 characters".into()),
        (model(json!({"id": "x".repeat(257)})), "models[1].id: must be 1 to 256 characters".into()),
        (model(json!({"id": "my model"})), "models[1].id: must be visible ASCII".into()),
        (base(json!({"models": [{"name": "no id"}]})), "models[0]: missing field `id`".into()),
        (model(json!({"name": ""})), "models[1].name: must not be empty".into()),
        (model(json!({"reasoning": "yes"})), "models[1].reasoning: invalid type".into()),
        (model(json!({"tools": "yes"})), "models[1].tools: invalid type".into()),
        (model(json!({"input": []})), "models[1].input: must not be empty".into()),
        (model(json!({"input": ["text", "video"]})), "models[1].input[1]: must be text or image".into()),
        (model(json!({"contextWindow": 0})), "models[1].contextWindow: must be a positive integer".into()),
        (model(json!({"maxTokens": -1})), "models[1].maxTokens: invalid value".into()),
        (model(json!({"maxTokens": 1.5})), "models[1].maxTokens: invalid type".into()),
        (model(json!({"baseUrl": "https://x.com"})), "models[1].baseUrl: unknown field `baseUrl`".into()),
        (cost(json!({"input": -1, "output": 1})), format!("models[1].cost.input: {non_negative}")),
        (cost(json!({"input": 1, "output": 0.0000000001})), format!("models[1].cost.output: {non_negative}")),
        (cost(json!({"input": 1, "output": 1, "cacheRead": 1.1234567891})), format!("models[1].cost.cacheRead: {non_negative}")),
        (cost(json!({"input": 1, "output": 1, "cacheWrite": -0.5})), format!("models[1].cost.cacheWrite: {non_negative}")),
        (cost(json!({"input": 1e12, "output": 1})), "models[1].cost.input: is too large".into()),
        (cost(json!({"input": "3", "output": 1})), "models[1].cost.input: invalid type".into()),
        (cost(json!({"input": 3})), "models[1].cost: missing field `output`".into()),
        (cost(json!({"input": 3, "output": 1, "cache_read": 1})), "models[1].cost.cache_read: unknown field `cache_read`".into()),
    ];
    for (body, expected) in &cases {
        let (status, err) = h
            .call(Method::POST, "/v1/gateway-configs", Some(body))
            .await;
        assert_eq!(status, 400, "{body}: {err}");
        let message = err["error"]["message"].as_str().unwrap();
        assert!(message.contains(expected.as_str()), "{body}: {message}");
    }
    assert_eq!(
        count(&h, "/v1/gateway-configs").await,
        1,
        "a refused create left a row"
    );

    // The same rules on update, which leaves the config as it was.
    let created = h
        .post(
            "/v1/gateway-configs",
            json!({"name": "u", "provider": "anthropic"}),
        )
        .await;
    let path = format!("/v1/gateway-configs/{}", created["id"].as_str().unwrap());
    for (body, expected) in [
        (json!({"provider": "nope"}), "provider: is not a known provider"),
        (
            json!({"type": "router"}),
            "type: cannot be changed",
        ),
        (
            json!({"provider": "vertex"}),
            "endpoint: is required with provider vertex",
        ),
        (json!({"api": "gemini-2"}), "api: must be one of"),
        (
            json!({"models": [{"id": "a"}, {"id": "a"}]}),
            "models[1].id: appears twice",
        ),
        (
            json!({"models": [{"id": "a", "cost": {"input": 1, "output": -2}}]}),
            "models[0].cost.output: must be a non-negative number",
        ),
        (
            json!({"custom_headers": eight}),
            "custom_headers: must have at most 8 entries, the headers provider anthropic requires included",
        ),
    ] {
        let (status, err) = h.call(Method::POST, &path, Some(&body)).await;
        assert_eq!(status, 400, "{body}: {err}");
        let message = err["error"]["message"].as_str().unwrap();
        assert!(message.contains(expected), "{body}: {message}");
        assert_eq!(h.get(&path).await, created, "{body} changed the config");
    }
});

both!(providers_list, |h: Harness| async move {
    let listed = h.get("/v1/providers").await;
    let providers = listed["providers"].as_array().unwrap();
    assert!(providers.len() >= 24, "{} providers", providers.len());
    let ids: Vec<&str> = providers
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    for id in CONTRACT_PROVIDERS {
        assert_eq!(ids.iter().filter(|i| **i == id).count(), 1, "{id}");
    }
    let anthropic = providers.iter().find(|p| p["id"] == "anthropic").unwrap();
    assert_eq!(
        *anthropic,
        json!({"id": "anthropic", "name": "Anthropic", "endpoint": "https://api.anthropic.com",
               "endpoint_required": false, "auth_mechanism": {"type": "header", "key": "x-api-key"},
               "api": "anthropic-messages",
               "custom_headers": [{"name": "anthropic-version", "value": ANTHROPIC_VERSION}],
               "models": anthropic["models"]})
    );
    assert!(!anthropic["models"].as_array().unwrap().is_empty());
    for p in providers {
        // Every preset is a gateway config away, its dialect metered and its auth one of ours.
        assert!(
            ["bearer", "header"].contains(&p["auth_mechanism"]["type"].as_str().unwrap()),
            "{p}"
        );
        assert_ne!(p["api"], "none", "{p}");
        assert!(p
            .get("models")
            .is_none_or(|m| !m.as_array().unwrap().is_empty()));
        if p["endpoint_required"] == false {
            h.post(
                "/v1/gateway-configs",
                json!({"name": format!("from-{}", p["id"].as_str().unwrap()), "provider": p["id"]}),
            )
            .await;
        }
    }
    let required: Vec<&Value> = providers
        .iter()
        .filter(|p| p["endpoint_required"] == true)
        .map(|p| &p["id"])
        .collect();
    assert_eq!(
        required,
        [&json!("vertex"), &json!("azure-openai"), &json!("bedrock")]
    );
    // A launcher key may read the list too.
    let launcher = h
        .post("/v1/api-keys", json!({"name": "l", "scope": "launcher"}))
        .await["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, body) = h
        .call_as(&launcher, Method::GET, "/v1/providers", None)
        .await;
    assert_eq!((status, &body), (200, &listed));
    let (status, _) = h.call_as("", Method::GET, "/v1/providers", None).await;
    assert_eq!(status, 401);
});

/// A request event of `account`, metered when `llm` is given.
fn event(
    account: &airlock_core::AccountId,
    time_ms: i64,
    devbox: &airlock_core::DevboxId,
    gateway: &airlock_core::GatewayConfigId,
    llm: Option<airlock_core::Metered>,
) -> airlock_core::state::RequestAuditEvent {
    airlock_core::state::RequestAuditEvent {
        id: airlock_core::AuditId::generate(),
        time_ms,
        account_id: Some(account.clone()),
        devbox_id: Some(devbox.clone()),
        gateway_config_id: Some(gateway.clone()),
        token_id: None,
        secret_id: None,
        secret_version: None,
        method: "POST".into(),
        path: "/v1/messages".into(),
        status: 200,
        upstream_status: Some(200),
        latency_us: 1_000,
        ttfb_us: Some(500),
        bytes_in: 10,
        bytes_out: 20,
        client_addr: "10.0.0.1".parse().unwrap(),
        error_code: None,
        request_id: Some(format!("req-{time_ms}")),
        llm,
    }
}

fn metered(
    model: Option<&str>,
    provider: Option<&str>,
    input: u64,
    output: u64,
    cost_nanos: Option<u64>,
) -> airlock_core::Metered {
    airlock_core::Metered {
        provider: provider.map(str::to_owned),
        model: model.map(str::to_owned),
        usage: airlock_core::Usage {
            input_tokens: input,
            output_tokens: output,
            cache_read_tokens: input / 2,
            cache_write_tokens: input / 4,
            reasoning_tokens: output / 2,
            exact: cost_nanos.is_some(),
        },
        cost_nanos,
    }
}

both!(request_events_show_usage, |h: Harness| async move {
    use airlock_core::state::AuditSink;
    let account = airlock_core::AccountId::from_trusted(created_account(&h).await);
    let devbox = airlock_core::DevboxId::generate();
    let gateway = airlock_core::GatewayConfigId::generate();
    let t = 1_767_225_600_000; // 2026-01-01T00:00:00Z
    h.store
        .write_batch(&[
            event(&account, t, &devbox, &gateway, None),
            event(
                &account,
                t + 1,
                &devbox,
                &gateway,
                Some(metered(
                    Some("claude-sonnet-4-5"),
                    Some("anthropic"),
                    1_000,
                    100,
                    Some(4_215_000),
                )),
            ),
            event(
                &account,
                t + 2,
                &devbox,
                &gateway,
                Some(metered(None, None, 8, 0, None)),
            ),
        ])
        .await
        .unwrap();
    let listed = h.get("/v1/audit/requests").await;
    assert_eq!(listed["total_count"], 3);
    let requests = listed["requests"].as_array().unwrap();
    let llm = |r: &Value| json!({"provider": r["provider"], "model": r["model"], "usage": r["usage"], "cost_usd": r["cost_usd"]});
    // Newest first.
    assert_eq!(
        llm(&requests[0]),
        json!({"provider": null, "model": null, "cost_usd": null,
               "usage": {"input_tokens": 8, "output_tokens": 0, "cache_read_tokens": 4, "cache_write_tokens": 2,
                         "reasoning_tokens": 0, "exact": false}})
    );
    assert_eq!(
        llm(&requests[1]),
        json!({"provider": "anthropic", "model": "claude-sonnet-4-5", "cost_usd": "0.004215",
               "usage": {"input_tokens": 1000, "output_tokens": 100, "cache_read_tokens": 500, "cache_write_tokens": 250,
                         "reasoning_tokens": 50, "exact": true}})
    );
    assert_eq!(
        llm(&requests[2]),
        json!({"provider": null, "model": null, "usage": null, "cost_usd": null})
    );
    // Every field of the view, also for an event that was not metered.
    let mut keys: Vec<&str> = requests[2]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    let mut want = [
        "id",
        "time_ms",
        "account_id",
        "devbox_id",
        "gateway_config_id",
        "token_id",
        "secret_id",
        "secret_version",
        "method",
        "path",
        "status",
        "upstream_status",
        "latency_us",
        "ttfb_us",
        "bytes_in",
        "bytes_out",
        "client_addr",
        "error_code",
        "request_id",
        "provider",
        "model",
        "usage",
        "cost_usd",
    ];
    want.sort_unstable();
    assert_eq!(keys, want);
    assert_eq!(requests[2]["request_id"], format!("req-{t}"));
    assert_eq!(requests[2]["client_addr"], "10.0.0.1");
    let page = h
        .get("/v1/audit/requests?limit=1&include_total_count=false")
        .await;
    assert_eq!(page["has_more"], true);
    assert!(page.get("total_count").is_none());
});

both!(usage_aggregation, |h: Harness| async move {
    use airlock_core::state::AuditSink;
    let account = airlock_core::AccountId::from_trusted(created_account(&h).await);
    let other = h.post("/v1/accounts", json!({"name": "tenant-b"})).await;
    let other_key = other["api_key"]["key"].as_str().unwrap().to_owned();
    let other_account =
        airlock_core::AccountId::from_trusted(other["id"].as_str().unwrap().to_owned());
    let (d1, d2) = (
        airlock_core::DevboxId::generate(),
        airlock_core::DevboxId::generate(),
    );
    let (g1, g2) = (
        airlock_core::GatewayConfigId::generate(),
        airlock_core::GatewayConfigId::generate(),
    );
    let day = 86_400_000;
    let t = 1_767_225_600_000; // 2026-01-01T00:00:00Z
    let sonnet = Some("claude-sonnet-4-5");
    let gpt = Some("gpt-5");
    h.store
        .write_batch(&[
            event(
                &account,
                t,
                &d1,
                &g1,
                Some(metered(
                    sonnet,
                    Some("anthropic"),
                    1_000,
                    100,
                    Some(4_215_000),
                )),
            ),
            event(
                &account,
                t + 10,
                &d1,
                &g1,
                Some(metered(sonnet, Some("anthropic"), 2_000, 200, Some(1))),
            ),
            event(
                &account,
                t + day,
                &d2,
                &g2,
                Some(metered(gpt, Some("openai"), 400, 40, Some(3_000_000_000))),
            ),
            event(
                &account,
                t + day + 1,
                &d2,
                &g2,
                Some(metered(None, Some("openai"), 8, 0, None)),
            ),
            // Not metered: never counted.
            event(&account, t + 2, &d1, &g1, None),
            // Another account's, which the caller must never see.
            event(
                &other_account,
                t,
                &d1,
                &g1,
                Some(metered(sonnet, Some("anthropic"), 9_999, 9_999, Some(9))),
            ),
        ])
        .await
        .unwrap();
    let row = |keys: Value, n: u64, input: u64, output: u64, cost: Value, unpriced: u64| {
        let mut v = keys;
        for (k, val) in [
            ("requests", json!(n)),
            ("input_tokens", json!(input)),
            ("output_tokens", json!(output)),
            ("cache_read_tokens", json!(input / 2)),
            ("cache_write_tokens", json!(input / 4)),
            ("reasoning_tokens", json!(output / 2)),
            ("cost_usd", cost),
            ("unpriced_requests", json!(unpriced)),
        ] {
            v[k] = val;
        }
        v
    };
    let cases: Vec<(String, Value)> = vec![
        (
            String::new(),
            json!([row(json!({}), 4, 3_408, 340, json!("3.004215001"), 1)]),
        ),
        (
            "?group_by=model".into(),
            json!([
                row(
                    json!({"model": "claude-sonnet-4-5"}),
                    2,
                    3_000,
                    300,
                    json!("0.004215001"),
                    0
                ),
                row(json!({"model": "gpt-5"}), 1, 400, 40, json!("3"), 0),
                row(json!({"model": null}), 1, 8, 0, json!(null), 1),
            ]),
        ),
        (
            "?group_by=day,provider".into(),
            json!([
                row(
                    json!({"day": "2026-01-01", "provider": "anthropic"}),
                    2,
                    3_000,
                    300,
                    json!("0.004215001"),
                    0
                ),
                row(
                    json!({"day": "2026-01-02", "provider": "openai"}),
                    2,
                    408,
                    40,
                    json!("3"),
                    1
                ),
            ]),
        ),
        (
            format!("?group_by=devbox,gateway&devbox_id={d2}"),
            json!([row(
                json!({"devbox_id": d2.to_string(), "gateway_id": g2.to_string()}),
                2,
                408,
                40,
                json!("3"),
                1
            )]),
        ),
        (
            format!("?group_by=gateway&gateway_id={g1}&model=claude-sonnet-4-5"),
            json!([row(
                json!({"gateway_id": g1.to_string()}),
                2,
                3_000,
                300,
                json!("0.004215001"),
                0
            )]),
        ),
        (
            format!(
                "?start_time_ms={}&end_time_ms={}&group_by=model",
                t + 10,
                t + day + 1
            ),
            json!([
                row(
                    json!({"model": "claude-sonnet-4-5"}),
                    1,
                    2_000,
                    200,
                    json!("0.000000001"),
                    0
                ),
                row(json!({"model": "gpt-5"}), 1, 400, 40, json!("3"), 0),
            ]),
        ),
        (format!("?start_time_ms={}", t + 2 * day), json!([])),
        ("?model=nope&group_by=day".into(), json!([])),
        // Empty parameters are no filter, and a key named twice counts once.
        ("?group_by=model,model&devbox_id=&model=".into(), {
            let v = h.get("/v1/usage?group_by=model").await;
            v["usage"].clone()
        }),
    ];
    for (query, want) in cases {
        let got = h.get(&format!("/v1/usage{query}")).await;
        assert_eq!(got, json!({"usage": want}), "{query}");
    }
    // The other account sees its own only, even when it filters by this account's ids.
    let (status, theirs) = h
        .call_as(
            &other_key,
            Method::GET,
            &format!("/v1/usage?group_by=model&gateway_id={g1}"),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        theirs,
        json!({"usage": [row(json!({"model": "claude-sonnet-4-5"}), 1, 9_999, 9_999, json!("0.000000009"), 0)]})
    );
    for (query, expected) in [
        (
            "group_by=models",
            "group_by: must be a comma-separated list of model, provider, devbox, gateway, day",
        ),
        ("group_by=model;day", "group_by:"),
        (
            "devbox_id=nope",
            "devbox_id: must be an id of the form dbx_",
        ),
        (
            "devbox_id=gwc_01h8xg3r5y3vq6z8k9m2n4p6r8",
            "devbox_id: must be an id of the form dbx_",
        ),
        (
            "gateway_id=anthropic",
            "gateway_id: must be an id of the form gwc_",
        ),
        (
            "start_time_ms=yesterday",
            "start_time_ms: must be an integer",
        ),
        ("end_time_ms=1.5", "end_time_ms: must be an integer"),
        (
            "start_time_ms=10&end_time_ms=10",
            "end_time_ms: must be greater than start_time_ms",
        ),
        ("model=a%20b", "model: must be visible ASCII"),
        ("groupby=model", "unknown field `groupby`"),
    ] {
        let (status, err) = h
            .call(Method::GET, &format!("/v1/usage?{query}"), None)
            .await;
        assert_eq!(status, 400, "{query}: {err}");
        let message = err["error"]["message"].as_str().unwrap();
        assert!(message.contains(expected), "{query}: {message}");
    }
    let launcher = h
        .post("/v1/api-keys", json!({"name": "l", "scope": "launcher"}))
        .await["key"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        h.call_as(&launcher, Method::GET, "/v1/usage", None).await.0,
        403
    );
});

// Every operation the OpenAPI document describes is served by the router with that method
// (the paths themselves are checked against the route table by a unit test in lib.rs).
both!(openapi_methods_are_served, |h: Harness| async move {
    let (_, body) = airlock_testkit::http_get(&format!("{}/v1/openapi.json", h.base))
        .await
        .unwrap();
    let doc: Value = serde_json::from_slice(&body).unwrap();
    let mut checked = 0;
    for (path, ops) in doc["paths"].as_object().unwrap() {
        let concrete = path
            .replace("{id}", "x_00000000000000000000000000")
            .replace("{name}", "NAME");
        for method in ops.as_object().unwrap().keys() {
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let body = (method == Method::POST).then(|| json!({}));
            let (status, answer) = h.call(method.clone(), &concrete, body.as_ref()).await;
            assert_ne!(status, 405, "{method} {path}: {answer}");
            assert_ne!(
                answer["error"]["message"], "no such endpoint",
                "{method} {path}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 25, "{checked} operations");
});

both!(
    devbox_tokens_are_listed_and_revoked_one_by_one,
    |h: Harness| async move {
        use airlock_core::state::AuditSink;
        setup_pair(&h).await;
        let dbx = h
        .post(
            "/v1/devboxes",
            json!({"source_addresses": ["10.0.0.1"], "gateways": {"ANTHROPIC": {"gateway": "anthropic", "secret": "ANTHROPIC_KEY"}}}),
        )
        .await;
        let id = dbx["id"].as_str().unwrap().to_owned();
        let minted = h
            .post(
                &format!("/v1/devboxes/{id}/create_gateway_token"),
                json!({"gateway": "anthropic", "secret": "ANTHROPIC_KEY"}),
            )
            .await;
        let listed = h.get(&format!("/v1/devboxes/{id}/gateway_tokens")).await;
        let tokens = listed["gateway_tokens"].as_array().unwrap().clone();
        assert_eq!(tokens.len(), 2, "{listed}");
        // Newest first: the minted one, then the one of the registration (with its prefix).
        assert_eq!(tokens[1]["prefix"], "ANTHROPIC");
        assert_eq!(tokens[0]["prefix"], Value::Null);
        for t in &tokens {
            assert_eq!(t["status"], "active");
            assert_eq!(
                (t["use_count"].as_i64(), &t["last_used_time_ms"]),
                (Some(0), &Value::Null)
            );
            assert!(t["id"].as_str().unwrap().starts_with("gwt_"));
        }
        // Neither the token nor anything derived from it is listed.
        let text = listed.to_string();
        let secret_token = minted["token"].as_str().unwrap();
        assert!(
            !text.contains(secret_token) && !text.contains("gws_"),
            "{text}"
        );

        // Uses come from the request audit trail.
        let account = airlock_core::AccountId::from_trusted(created_account(&h).await);
        let token_id = tokens[1]["id"].as_str().unwrap().to_owned();
        let devbox = airlock_core::DevboxId::from_trusted(id.clone());
        let gateway = airlock_core::GatewayConfigId::generate();
        let with_token = |t: i64| {
            let mut e = event(&account, t, &devbox, &gateway, None);
            e.token_id = Some(airlock_core::TokenId::from_trusted(token_id.clone()));
            e
        };
        h.store
            .write_batch(&[with_token(1_000), with_token(3_000), with_token(2_000)])
            .await
            .unwrap();
        let listed = h.get(&format!("/v1/devboxes/{id}/gateway_tokens")).await;
        let used = &listed["gateway_tokens"][1];
        assert_eq!(
            (
                used["use_count"].as_i64(),
                used["last_used_time_ms"].as_i64()
            ),
            (Some(3), Some(3_000))
        );

        // Revoking one token leaves the devbox and the other token as they were; twice is fine.
        for _ in 0..2 {
            let revoked = h
                .post(
                    &format!("/v1/devboxes/{id}/gateway_tokens/{token_id}/revoke"),
                    json!({}),
                )
                .await;
            assert_eq!(revoked["status"], "revoked", "{revoked}");
            assert!(revoked["revoke_time_ms"].as_i64().is_some());
        }
        let listed = h.get(&format!("/v1/devboxes/{id}/gateway_tokens")).await;
        assert_eq!(listed["gateway_tokens"][0]["status"], "active");
        assert_eq!(
            h.get(&format!("/v1/devboxes/{id}")).await["status"],
            "running"
        );

        // Unknown ids, another devbox's token and another account: 404.
        let other = h
            .post("/v1/devboxes", json!({"source_addresses": ["10.0.0.2"]}))
            .await;
        let other_id = other["id"].as_str().unwrap();
        let b = h.post("/v1/accounts", json!({"name": "tenant-b"})).await;
        let b_key = b["api_key"]["key"].as_str().unwrap().to_owned();
        for (key, method, path) in [
            (
                None,
                Method::POST,
                format!("/v1/devboxes/{other_id}/gateway_tokens/{token_id}/revoke"),
            ),
            (
                None,
                Method::POST,
                format!("/v1/devboxes/{id}/gateway_tokens/gwt_01h8xg3r5y3vq6z8k9m2n4p6r8/revoke"),
            ),
            (
                None,
                Method::POST,
                format!("/v1/devboxes/{id}/gateway_tokens/not-an-id/revoke"),
            ),
            (
                None,
                Method::GET,
                "/v1/devboxes/dbx_01h8xg3r5y3vq6z8k9m2n4p6r8/gateway_tokens".to_owned(),
            ),
            (
                Some(&b_key),
                Method::GET,
                format!("/v1/devboxes/{id}/gateway_tokens"),
            ),
            (
                Some(&b_key),
                Method::POST,
                format!("/v1/devboxes/{id}/gateway_tokens/{token_id}/revoke"),
            ),
        ] {
            let body = (method == Method::POST).then(|| json!({}));
            let (status, err) = match key {
                Some(k) => h.call_as(k, method, &path, body.as_ref()).await,
                None => h.call(method, &path, body.as_ref()).await,
            };
            assert_eq!(status, 404, "{path}: {err}");
        }
    }
);

both!(
    scoped_tokens_are_validated_and_listed,
    |h: Harness| async move {
        setup_pair(&h).await;
        let dbx = h
            .post("/v1/devboxes", json!({"source_addresses": ["10.0.0.1"]}))
            .await;
        let id = dbx["id"].as_str().unwrap().to_owned();
        let path = format!("/v1/devboxes/{id}/create_gateway_token");
        let pair = |extra: Value| {
            let mut body = json!({"gateway": "anthropic", "secret": "ANTHROPIC_KEY"});
            body.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            body
        };
        for (extra, expected) in [
            (
                json!({"expires_in_s": 0}),
                "expires_in_s: must be a whole number",
            ),
            (
                json!({"expires_in_s": -5}),
                "expires_in_s: must be a whole number",
            ),
            (json!({"expires_in_s": "soon"}), "expires_in_s"),
            (
                json!({"allowed_methods": ["GE T"]}),
                "allowed_methods[0]: must be an HTTP method",
            ),
            (
                json!({"allowed_path_prefixes": ["v1/messages"]}),
                "allowed_path_prefixes[0]: must be a path",
            ),
            (
                json!({"allowed_path_prefixes": ["/v1/../admin"]}),
                "allowed_path_prefixes[0]: must be a plain path",
            ),
            (
                json!({"max_requests": 0}),
                "max_requests: must be a whole number of requests of at least 1",
            ),
            (
                json!({"max_requests": -3}),
                "max_requests: must be a whole number of requests of at least 1",
            ),
            (
                json!({"max_requests": "ten"}),
                "max_requests: must be a whole number",
            ),
        ] {
            let (status, err) = h
                .call(Method::POST, &path, Some(&pair(extra.clone())))
                .await;
            assert_eq!(status, 400, "{extra}: {err}");
            let message = err["error"]["message"].as_str().unwrap();
            assert!(message.contains(expected), "{extra}: {message}");
        }
        let listed = h.get(&format!("/v1/devboxes/{id}/gateway_tokens")).await;
        assert_eq!(
            listed["gateway_tokens"],
            json!([]),
            "a refused mint left a token"
        );

        let minted = h
            .post(
                &path,
                pair(json!({"expires_in_s": 3600, "allowed_methods": ["post"],
                        "allowed_path_prefixes": ["/v1/messages"]})),
            )
            .await;
        let expires = minted["expire_time_ms"].as_i64().unwrap();
        let now = airlock_core::time::now_ms();
        assert!(
            (now + 3_590_000..=now + 3_600_000).contains(&expires),
            "{expires}"
        );
        let listed = h.get(&format!("/v1/devboxes/{id}/gateway_tokens")).await;
        let t = &listed["gateway_tokens"][0];
        assert_eq!(t["allowed_methods"], json!(["POST"]));
        assert_eq!(t["allowed_path_prefixes"], json!(["/v1/messages"]));
        assert_eq!(t["expire_time_ms"], expires);
        assert_eq!(t["status"], "active");
        assert_eq!(t["max_requests"], Value::Null);
        h.post(&path, pair(json!({"max_requests": 25}))).await;
        let listed = h.get(&format!("/v1/devboxes/{id}/gateway_tokens")).await;
        assert!(listed["gateway_tokens"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["max_requests"] == 25));
        // An unscoped token lists null scopes.
        h.post(&path, pair(json!({}))).await;
        let listed = h.get(&format!("/v1/devboxes/{id}/gateway_tokens")).await;
        assert_eq!(listed["gateway_tokens"][0]["allowed_methods"], Value::Null);
    }
);

both!(
    limits_are_validated_set_and_reported,
    |h: Harness| async move {
        let (gateway_id, _) = setup_pair(&h).await;
        let dbx = h
            .post("/v1/devboxes", json!({"source_addresses": ["10.0.0.1"]}))
            .await;
        let id = dbx["id"].as_str().unwrap().to_owned();
        // Each bad limit is refused with its field's name, and nothing is written.
        for (limits, expected) in [
            (
                json!({"requests_per_minute": -1}),
                "limits.requests_per_minute: must not be negative",
            ),
            (
                json!({"tokens_per_day": "many"}),
                "limits.tokens_per_day: must be a whole number",
            ),
            (
                json!({"tokens_per_day": 1.5}),
                "limits.tokens_per_day: must be a whole number",
            ),
            (
                json!({"cost_usd_per_day": "-2"}),
                "limits.cost_usd_per_day: must not be negative",
            ),
            (
                json!({"cost_usd_per_day": "abc"}),
                "limits.cost_usd_per_day: must be a decimal number",
            ),
            (
                json!({"cost_usd_total": "0.0000000001"}),
                "limits.cost_usd_total: must have at most 9 decimals",
            ),
            (
                json!({"cost_usd_per_month": 5}),
                "limits.cost_usd_per_month: must be a decimal string",
            ),
            (
                json!({"requests_per_hour": 5}),
                "limits.requests_per_hour: is not a limit",
            ),
            (json!([1]), "limits: must be an object"),
        ] {
            for (method_path, body) in [
                (
                    format!("/v1/devboxes/{id}"),
                    json!({"limits": limits.clone()}),
                ),
                (
                    format!("/v1/gateway-configs/{gateway_id}"),
                    json!({"limits": limits.clone()}),
                ),
                ("/v1/account/limits".to_owned(), limits.clone()),
                (
                    "/v1/devboxes".to_owned(),
                    json!({"source_addresses": ["10.0.0.2"], "limits": limits.clone()}),
                ),
            ] {
                let (status, err) = h.call(Method::POST, &method_path, Some(&body)).await;
                assert_eq!(status, 400, "{method_path} {limits}: {err}");
                let message = err["error"]["message"].as_str().unwrap();
                let expected = if method_path == "/v1/account/limits" && !limits.is_object() {
                    "must be a JSON object"
                } else {
                    expected
                };
                assert!(
                    message.contains(expected),
                    "{method_path} {limits}: {message}"
                );
            }
        }
        assert_eq!(count(&h, "/v1/devboxes?include_total_count=true").await, 1);
        assert_eq!(
            h.get(&format!("/v1/devboxes/{id}/limits")).await,
            json!({"limits": {}})
        );

        // Set on all three levels; the status shows each limit with its window.
        h.post(
            &format!("/v1/devboxes/{id}"),
            json!({"limits": {"requests_per_minute": 10, "cost_usd_per_day": "12.5"}}),
        )
        .await;
        h.post(
            &format!("/v1/gateway-configs/{gateway_id}"),
            json!({"limits": {"tokens_per_day": "100000"}}),
        )
        .await;
        let account = h
            .post(
                "/v1/account/limits",
                json!({"cost_usd_total": "1000", "requests_per_day": null}),
            )
            .await;
        assert_eq!(account["limits"]["cost_usd_total"]["limit"], "1000");
        assert_eq!(
            account["limits"]["cost_usd_total"]["resets_at_ms"],
            Value::Null
        );
        let status = h.get(&format!("/v1/devboxes/{id}/limits")).await;
        let rpm = &status["limits"]["requests_per_minute"];
        assert_eq!(rpm["limit"], 10);
        assert_eq!(rpm["used"], 0);
        assert_eq!(rpm["remaining"], 10);
        let now = airlock_core::time::now_ms();
        let resets = rpm["resets_at_ms"].as_i64().unwrap();
        assert!(resets > now && resets <= now + 60_000, "{resets}");
        assert_eq!(status["limits"]["cost_usd_per_day"]["limit"], "12.5");
        assert_eq!(status["limits"]["cost_usd_per_day"]["remaining"], "12.5");
        let gw = h
            .get(&format!("/v1/gateway-configs/{gateway_id}/limits"))
            .await;
        assert_eq!(gw["limits"]["tokens_per_day"]["limit"], 100_000);
        // The devbox's addresses are untouched by a limits-only update; `{}` removes the limits.
        let got = h.get(&format!("/v1/devboxes/{id}")).await;
        assert_eq!(got["source_addresses"], json!(["10.0.0.1"]));
        h.post(&format!("/v1/devboxes/{id}"), json!({"limits": {}}))
            .await;
        assert_eq!(
            h.get(&format!("/v1/devboxes/{id}/limits")).await,
            json!({"limits": {}})
        );
        // Registration takes limits too.
        let limited = h
            .post(
                "/v1/devboxes",
                json!({"source_addresses": ["10.0.0.3"], "limits": {"tokens_per_minute": 500}}),
            )
            .await;
        let status = h
            .get(&format!(
                "/v1/devboxes/{}/limits",
                limited["id"].as_str().unwrap()
            ))
            .await;
        assert_eq!(status["limits"]["tokens_per_minute"]["limit"], 500);
        // An update with neither field is refused.
        let (code, _) = h
            .call(
                Method::POST,
                &format!("/v1/devboxes/{id}"),
                Some(&json!({})),
            )
            .await;
        assert_eq!(code, 400);
    }
);

both!(views_show_the_configured_limits, |h: Harness| async move {
    let (plain_id, _) = setup_pair(&h).await;
    let limited = h
        .post(
            "/v1/gateway-configs",
            json!({"name": "limited", "endpoint": "https://api.openai.com/v1/",
                    "auth_mechanism": {"type": "bearer"},
                    "limits": {"requests_per_minute": 7, "cost_usd_per_day": "2.5"}}),
        )
        .await;
    let expected = json!({"requests_per_minute": 7, "cost_usd_per_day": "2.5"});
    assert_eq!(limited["limits"], expected, "the create answer");
    let id = limited["id"].as_str().unwrap();
    let got = h.get(&format!("/v1/gateway-configs/{id}")).await;
    assert_eq!(got["limits"], expected, "GET");
    let plain = h.get(&format!("/v1/gateway-configs/{plain_id}")).await;
    assert_eq!(plain["limits"], json!({}), "no limits: an empty object");
    let listed = h.get("/v1/gateway-configs").await;
    let by_id = |list: &Value, field: &str, id: &str| {
        list[field]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["id"] == id)
            .unwrap()["limits"]
            .clone()
    };
    assert_eq!(by_id(&listed, "gateway_configs", id), expected);
    assert_eq!(by_id(&listed, "gateway_configs", &plain_id), json!({}));
    // An update shows the new object.
    let updated = h
        .post(
            &format!("/v1/gateway-configs/{id}"),
            json!({"limits": {"tokens_per_day": 1000}}),
        )
        .await;
    assert_eq!(updated["limits"], json!({"tokens_per_day": 1000}));

    let dbx = h
        .post(
            "/v1/devboxes",
            json!({"source_addresses": ["10.0.0.1"], "limits": {"requests_per_day": 40}}),
        )
        .await;
    assert_eq!(dbx["limits"], json!({"requests_per_day": 40}));
    let dbx_id = dbx["id"].as_str().unwrap();
    let other = h
        .post("/v1/devboxes", json!({"source_addresses": ["10.0.0.2"]}))
        .await;
    let got = h.get(&format!("/v1/devboxes/{dbx_id}")).await;
    assert_eq!(got["limits"], json!({"requests_per_day": 40}));
    let listed = h.get("/v1/devboxes").await;
    assert_eq!(
        by_id(&listed, "devboxes", dbx_id),
        json!({"requests_per_day": 40})
    );
    assert_eq!(
        by_id(&listed, "devboxes", other["id"].as_str().unwrap()),
        json!({})
    );
    let cleared = h
        .post(&format!("/v1/devboxes/{dbx_id}"), json!({"limits": {}}))
        .await;
    assert_eq!(cleared["limits"], json!({}));
});
