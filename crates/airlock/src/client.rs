//! Admin commands that talk to a running control plane over its REST API
//! (`AIRLOCK_URL`, `AIRLOCK_TOKEN`).

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

pub(crate) struct ApiClient {
    base: String,
    token: String,
}

impl ApiClient {
    pub(crate) fn from_env() -> Result<ApiClient> {
        let base = std::env::var("AIRLOCK_URL").unwrap_or_else(|_| "http://127.0.0.1:7070".into());
        if !base.starts_with("http://") {
            bail!("AIRLOCK_URL: only http:// control planes are supported by the CLI");
        }
        let token = std::env::var("AIRLOCK_TOKEN")
            .context("AIRLOCK_TOKEN: set it to an Airlock API key")?;
        Ok(ApiClient {
            base: base.trim_end_matches('/').to_owned(),
            token,
        })
    }

    /// Sends a request and returns the JSON answer; an API error becomes an error with its message.
    pub(crate) async fn call(
        &self,
        method: http::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value> {
        let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
        let payload = body.map(|b| b.to_string()).unwrap_or_default();
        let req = http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header(
                http::header::AUTHORIZATION,
                format!("Bearer {}", self.token),
            )
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(payload)))?;
        let resp = client
            .request(req)
            .await
            .with_context(|| format!("cannot reach {}", self.base))?;
        let status = resp.status();
        let bytes = resp.into_body().collect().await?.to_bytes();
        let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if !status.is_success() {
            let message = value
                .pointer("/error/message")
                .and_then(Value::as_str)
                .unwrap_or("no message");
            bail!("{status}: {message}");
        }
        Ok(value)
    }
}

/// `GET url` (http:// only) and its status, for `airlock health`.
pub(crate) async fn get_status(url: &str) -> Result<http::StatusCode> {
    if !url.starts_with("http://") {
        bail!("{url}: only http:// URLs can be probed");
    }
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let req = http::Request::get(url).body(Full::new(Bytes::new()))?;
    let resp = client
        .request(req)
        .await
        .with_context(|| format!("cannot reach {url}"))?;
    Ok(resp.status())
}
