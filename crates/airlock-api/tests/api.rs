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
    assert_eq!(created.as_object().unwrap().len(), 4, "{created}");
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
            "missing field `secret`",
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
