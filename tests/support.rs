//! Shared helpers for the end-to-end tests: start the real `airlock` binary on a chosen
//! database and talk to it over HTTP.

#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

use std::net::SocketAddr;
use std::sync::Arc;

use airlock_testkit::{airlock_binary, free_addr, AirlockProcess, TestRequest};
use serde_json::Value;

/// A running `airlock serve`.
pub struct Airlock {
    pub process: AirlockProcess,
    pub api: String,
    pub proxy_addr: SocketAddr,
    pub token: String,
    /// The client config for the control plane when it speaks TLS.
    pub api_tls: Option<Arc<rustls::ClientConfig>>,
}

pub const ADMIN: &str = "e2e-admin-token-0123456789abcdef";

impl Airlock {
    /// Starts the binary with the given extra environment and waits until it is ready.
    pub async fn start(extra: &[(&str, &str)]) -> Airlock {
        Airlock::start_with(extra, None).await
    }

    /// Starts the binary; with `api_tls`, the control plane is reached over `https://` with
    /// that client config (the environment must then hold `AIRLOCK_API_TLS_*`).
    pub async fn start_with(
        extra: &[(&str, &str)],
        api_tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Airlock {
        let api_addr = free_addr();
        let proxy_addr = free_addr();
        let mut env = vec![
            ("AIRLOCK_API_ADDR".to_owned(), api_addr.to_string()),
            ("AIRLOCK_PROXY_ADDR".to_owned(), proxy_addr.to_string()),
            ("AIRLOCK_LOG".to_owned(), "debug".to_owned()),
        ];
        let has_token = extra.iter().any(|(k, _)| *k == "AIRLOCK_ADMIN_TOKEN");
        for (k, v) in extra {
            env.push(((*k).to_owned(), (*v).to_owned()));
        }
        let mut process = AirlockProcess::spawn(&airlock_binary(), &["serve"], env).unwrap();
        let wait = std::time::Duration::from_secs(60);
        let api = match &api_tls {
            None => {
                let api = format!("http://{api_addr}");
                process
                    .wait_http_ok(&format!("{api}/readyz"), wait)
                    .await
                    .unwrap();
                api
            }
            Some(tls) => {
                let api = format!("https://localhost:{}", api_addr.port());
                process
                    .wait_https_ok(&format!("{api}/readyz"), tls.clone(), wait)
                    .await
                    .unwrap();
                api
            }
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
