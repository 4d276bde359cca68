//! The CLI's small HTTP client for a running control plane: `http://` or `https://` (rustls, the
//! web roots plus `--ca-cert`), one request per connection, and API errors turned into a
//! [`Failure`] whose kind decides the process's exit code.

use std::sync::Arc;

use anyhow::{anyhow, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// What went wrong, in the terms of the exit codes (docs/cli.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Anything else: the control plane is unreachable, a 5xx, a file that does not read.
    Error,
    /// The command line or the input it carried is wrong (also the API's 400).
    Usage,
    /// The object does not exist (404, or no object of that name).
    NotFound,
    /// The object's state forbids it, or a name means more than one object (409).
    Conflict,
    /// The API key is missing, wrong or not allowed to do this (401, 403).
    Denied,
}

impl Kind {
    pub(crate) fn exit_code(self) -> u8 {
        match self {
            Kind::Error => 1,
            Kind::Usage => 2,
            Kind::NotFound => 3,
            Kind::Conflict => 4,
            Kind::Denied => 5,
        }
    }

    fn of_status(status: http::StatusCode) -> Kind {
        match status.as_u16() {
            400 | 413 | 422 => Kind::Usage,
            401 | 403 => Kind::Denied,
            404 => Kind::NotFound,
            409 => Kind::Conflict,
            _ => Kind::Error,
        }
    }
}

/// An error with its exit code's kind.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) kind: Kind,
    pub(crate) message: String,
}

impl Failure {
    pub(crate) fn error(kind: Kind, message: impl Into<String>) -> anyhow::Error {
        anyhow::Error::new(Failure {
            kind,
            message: message.into(),
        })
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

/// Where the control plane is and how to talk to it.
pub(crate) struct ApiClient {
    base: String,
    host: String,
    port: u16,
    tls: Option<TlsConnector>,
    token: Option<String>,
}

impl ApiClient {
    /// `url` is `http://host:port` or `https://host:port` (a path is ignored); `ca_cert` is a PEM
    /// file of extra trust roots for an https control plane with a private CA.
    pub(crate) fn new(url: &str, token: Option<String>, ca_cert: Option<&str>) -> Result<Self> {
        let uri: http::Uri = url
            .parse()
            .map_err(|_| Failure::error(Kind::Usage, format!("--url {url}: not a URL")))?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => {
                return Err(Failure::error(
                    Kind::Usage,
                    format!("--url {url}: must start with http:// or https://"),
                ))
            }
        };
        let authority = uri
            .authority()
            .ok_or_else(|| Failure::error(Kind::Usage, format!("--url {url}: no host")))?;
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tls = if https {
            Some(TlsConnector::from(tls_config(ca_cert)?))
        } else {
            if ca_cert.is_some() {
                return Err(Failure::error(
                    Kind::Usage,
                    "--ca-cert is for https:// control planes",
                ));
            }
            None
        };
        Ok(ApiClient {
            base: format!("{}://{}", if https { "https" } else { "http" }, authority),
            host,
            port,
            tls,
            token,
        })
    }

    /// Sends a request and returns the JSON answer; an API error becomes a [`Failure`] with the
    /// status and the API's message.
    pub(crate) async fn call(
        &self,
        method: http::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value> {
        let Some(token) = &self.token else {
            return Err(Failure::error(
                Kind::Usage,
                "no API key: give --token or set AIRLOCK_TOKEN",
            ));
        };
        let payload = body.map(|b| b.to_string()).unwrap_or_default();
        let req = http::Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, self.host_header())
            .header(http::header::AUTHORIZATION, format!("Bearer {token}"))
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(payload)))?;
        let (status, bytes) = self.send(req).await?;
        let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if !status.is_success() {
            let message = value
                .pointer("/error/message")
                .and_then(Value::as_str)
                .unwrap_or("no message");
            return Err(Failure::error(
                Kind::of_status(status),
                format!("{status}: {message}"),
            ));
        }
        Ok(value)
    }

    /// `GET path` without an API key, and its status (for `airlock health`).
    pub(crate) async fn status(&self, path: &str) -> Result<http::StatusCode> {
        let req = http::Request::get(path)
            .header(http::header::HOST, self.host_header())
            .body(Full::new(Bytes::new()))?;
        Ok(self.send(req).await?.0)
    }

    fn host_header(&self) -> String {
        self.base
            .split_once("://")
            .map_or_else(String::new, |(_, a)| a.to_owned())
    }

    /// One request on a fresh connection: its status and whole body.
    pub(crate) async fn send(
        &self,
        req: http::Request<Full<Bytes>>,
    ) -> Result<(http::StatusCode, Bytes)> {
        let reach = || format!("cannot reach {}", self.base);
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .with_context(reach)?;
        let resp = match &self.tls {
            None => exchange(TokioIo::new(tcp), req).await,
            Some(tls) => {
                let name = ServerName::try_from(self.host.clone())
                    .map_err(|_| anyhow!("{}: not a TLS server name", self.host))?;
                let stream = tls.connect(name, tcp).await.with_context(reach)?;
                exchange(TokioIo::new(stream), req).await
            }
        };
        resp.with_context(reach)
    }
}

/// One HTTP/1.1 exchange on a fresh connection.
async fn exchange<T>(io: T, req: http::Request<Full<Bytes>>) -> Result<(http::StatusCode, Bytes)>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
    let driver = tokio::spawn(conn);
    let resp = sender.send_request(req).await?;
    let status = resp.status();
    let bytes = resp.into_body().collect().await?.to_bytes();
    driver.abort();
    Ok((status, bytes))
}

fn tls_config(ca_cert: Option<&str>) -> Result<Arc<ClientConfig>> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_cert {
        let pem = std::fs::read(path).with_context(|| format!("--ca-cert {path}"))?;
        let mut added = 0;
        for cert in rustls_pemfile::certs(&mut &pem[..]) {
            let cert = cert.with_context(|| format!("--ca-cert {path}: does not parse"))?;
            roots
                .add(cert)
                .with_context(|| format!("--ca-cert {path}: an unusable certificate"))?;
            added += 1;
        }
        if added == 0 {
            return Err(Failure::error(
                Kind::Usage,
                format!("--ca-cert {path}: no PEM certificate in it"),
            ));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| anyhow!("tls setup failed: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}
