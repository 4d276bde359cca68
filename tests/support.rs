//! Shared helpers for the end-to-end tests: start the real `airlock` binary on a chosen
//! database and talk to it over HTTP.

#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

use std::net::SocketAddr;

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
}

pub const ADMIN: &str = "e2e-admin-token-0123456789abcdef";

impl Airlock {
    /// Starts the binary with the given extra environment and waits until it is ready (its
    /// operations listener's `/readyz`, which every role serves).
    pub async fn start(extra: &[(&str, &str)]) -> Airlock {
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
        let api = format!("http://{api_addr}");
        let ops = format!("http://{ops_addr}");
        process
            .wait_http_ok(&format!("{ops}/readyz"), std::time::Duration::from_secs(60))
            .await
            .unwrap();
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
        }
    }

    pub async fn call(
        &self,
        method: http::Method,
        path: &str,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let mut req = TestRequest::new(method, &format!("{}{path}", self.api)).bearer(&self.token);
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
