//! Shared helpers for the end-to-end tests: start the real `airlock` binary on a chosen
//! database and talk to it over HTTP.

#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use airlock_testkit::{airlock_binary, free_addr, AirlockProcess, TestRequest};
use serde_json::Value;

/// A running `airlock serve`.
pub struct Airlock {
    pub process: AirlockProcess,
    pub api: String,
    pub proxy_addr: SocketAddr,
    /// The operations listener: `/metrics`, `/healthz`, `/readyz`.
    pub ops: String,
    pub token: String,
    /// The client config for the control plane when it speaks TLS.
    pub api_tls: Option<Arc<rustls::ClientConfig>>,
}

pub const ADMIN: &str = "e2e-admin-token-0123456789abcdef";

/// The master key the tests start the binary with (base64 of 32 bytes).
pub const MASTER: &str = "q2Vx0JqL3m0l2m8r8y6Wb5XyZ0a1b2c3d4e5f6g7h8k=";

impl Airlock {
    /// Starts the binary with the given extra environment and waits until it is ready (its
    /// operations listener's `/readyz`, which every role serves).
    pub async fn start(extra: &[(&str, &str)]) -> Airlock {
        Airlock::start_with(extra, None).await
    }

    /// Starts the binary on `database_url` with the test master key and admin token, loopback
    /// upstreams allowed (the recording upstreams listen there), and `extra` after them.
    pub async fn start_on(database_url: &str, extra: &[(&str, &str)]) -> Airlock {
        let mut env = vec![
            ("AIRLOCK_DATABASE_URL", database_url),
            ("AIRLOCK_MASTER_KEY", MASTER),
            ("AIRLOCK_ADMIN_TOKEN", ADMIN),
            ("AIRLOCK_ALLOW_PRIVATE_UPSTREAMS", "127.0.0.0/8"),
        ];
        env.extend_from_slice(extra);
        Airlock::start(&env).await
    }

    /// Starts the binary; with `api_tls`, the control plane is reached over `https://` with
    /// that client config (the environment must then hold `AIRLOCK_API_TLS_*`).
    pub async fn start_with(
        extra: &[(&str, &str)],
        api_tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Airlock {
        let api_addr = free_addr();
        let proxy_addr = free_addr();
        let ops_addr = free_addr();
        let mut env = vec![
            ("AIRLOCK_API_ADDR".to_owned(), api_addr.to_string()),
            ("AIRLOCK_PROXY_ADDR".to_owned(), proxy_addr.to_string()),
            ("AIRLOCK_METRICS_ADDR".to_owned(), ops_addr.to_string()),
            ("AIRLOCK_LOG".to_owned(), "debug".to_owned()),
        ];
        let has_token = extra.iter().any(|(k, _)| *k == "AIRLOCK_ADMIN_TOKEN");
        for (k, v) in extra {
            env.push(((*k).to_owned(), (*v).to_owned()));
        }
        let mut process = AirlockProcess::spawn(&airlock_binary(), &["serve"], env).unwrap();
        let ops = format!("http://{ops_addr}");
        let wait = std::time::Duration::from_secs(60);
        process
            .wait_http_ok(&format!("{ops}/readyz"), wait)
            .await
            .unwrap();
        // The operations listener starts after both planes, so its /readyz covers the control
        // plane's listener too (and a proxy-only process has none).
        let api = match &api_tls {
            None => format!("http://{api_addr}"),
            Some(_) => format!("https://localhost:{}", api_addr.port()),
        };
        let token = if has_token {
            ADMIN.to_owned()
        } else {
            String::new()
        };
        Airlock {
            process,
            api,
            proxy_addr,
            ops,
            token,
            api_tls,
        }
    }

    pub async fn call(
        &self,
        method: http::Method,
        path: &str,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let mut req = TestRequest::new(method, &format!("{}{path}", self.api)).bearer(&self.token);
        if let Some(tls) = &self.api_tls {
            req = req.tls(tls.clone());
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.unwrap();
        (resp.status.as_u16(), resp.json().unwrap_or(Value::Null))
    }

    pub async fn post(&self, path: &str, body: Value) -> Value {
        let (status, v) = self.call(http::Method::POST, path, Some(&body)).await;
        assert_eq!(status, 200, "POST {path}: {v}");
        v
    }
}

/// Every YAML document in a file, with merge keys (`<<: *anchor`) applied, as JSON values.
pub fn yaml_documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_norway::Deserializer::from_str(&text)
        .map(|doc| {
            let mut value: serde_norway::Value = serde::Deserialize::deserialize(doc)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            value
                .apply_merge()
                .unwrap_or_else(|e| panic!("{}: merge keys: {e}", path.display()));
            serde_json::to_value(value).unwrap()
        })
        .filter(|v| !v.is_null())
        .collect()
}

/// A scalar YAML value as the string a process would see in its environment.
pub fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => panic!("not a scalar: {other}"),
    }
}

/// `deploy/compose.yaml`.
pub fn compose_file() -> Value {
    let docs = yaml_documents(&airlock_testkit::workspace_root().join("deploy/compose.yaml"));
    assert_eq!(docs.len(), 1);
    docs.into_iter().next().unwrap()
}

/// The environment compose gives a service (map or list form).
pub fn compose_env(service: &Value) -> BTreeMap<String, String> {
    match &service["environment"] {
        Value::Object(map) => map.iter().map(|(k, v)| (k.clone(), scalar(v))).collect(),
        Value::Array(list) => list
            .iter()
            .map(|item| {
                let (k, v) = item.as_str().unwrap().split_once('=').unwrap();
                (k.to_owned(), v.to_owned())
            })
            .collect(),
        Value::Null => BTreeMap::new(),
        other => panic!("environment: {other}"),
    }
}

/// The value of one sample (`name{labels}` as encoded) in a Prometheus scrape, 0 when absent.
pub fn sample(scrape: &str, series: &str) -> f64 {
    scrape
        .lines()
        .find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == series).then(|| value.parse().unwrap())
        })
        .unwrap_or(0.0)
}
