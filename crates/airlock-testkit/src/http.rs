//! A small HTTP client for tests, on hyper's connection-level API: one new connection per
//! request, HTTP/1.1 or HTTP/2 (by ALPN over TLS, by prior knowledge in plain text), optionally
//! from a chosen local address (to test source-address checks from 127.0.0.2 and the like), and
//! with the arrival time of every response body chunk (to test that streams are not buffered).
//!
//! [`http_get`] and [`http_request`] cover the common cases; [`TestRequest`] has the rest.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, Uri, Version};
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::ClientConfig;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::TlsConnector;

use crate::body::{self, AnyBody};

/// How long a request may take in all unless told otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// `GET url`: the status and the whole body.
pub async fn http_get(url: &str) -> Result<(StatusCode, Bytes)> {
    let response = TestRequest::get(url).send().await?;
    Ok((response.status, response.body))
}

/// A request with text headers and a whole body.
pub async fn http_request(
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Result<HttpResponse> {
    let mut request = TestRequest::new(method, url).body(body);
    for (name, value) in headers {
        request = request.header(name, value);
    }
    request.send().await
}

/// A response, read to the end.
#[derive(Clone, Debug)]
pub struct HttpResponse {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
    /// Each body chunk as it was read, with its arrival time measured from the response head.
    pub chunks: Vec<(Duration, Bytes)>,
    /// Over TLS: the leaf certificate the server presented.
    pub server_cert: Option<CertificateDer<'static>>,
}

impl HttpResponse {
    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON.
    pub fn json(&self) -> Result<serde_json::Value> {
        serde_json::from_slice(&self.body)
            .with_context(|| format!("response body is not JSON: {:?}", self.text()))
    }

    /// The first value of a header, as text (lossy).
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    }
}

enum RequestBody {
    Whole(Bytes),
    Chunks(Vec<(Duration, Bytes)>),
}

/// A request to build and send.
pub struct TestRequest {
    method: Method,
    url: String,
    headers: Vec<(String, Vec<u8>)>,
    body: RequestBody,
    local_ip: Option<IpAddr>,
    prelude: Vec<u8>,
    tls: Option<Arc<ClientConfig>>,
    http2: bool,
    timeout: Duration,
}

impl std::fmt::Debug for TestRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestRequest")
            .field("method", &self.method)
            .field("url", &self.url)
            .field("local_ip", &self.local_ip)
            .field("http2", &self.http2)
            .finish_non_exhaustive()
    }
}

impl TestRequest {
    pub fn new(method: Method, url: &str) -> Self {
        TestRequest {
            method,
            url: url.to_owned(),
            headers: Vec::new(),
            body: RequestBody::Whole(Bytes::new()),
            local_ip: None,
            prelude: Vec::new(),
            tls: None,
            http2: false,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    pub fn get(url: &str) -> Self {
        Self::new(Method::GET, url)
    }

    pub fn post(url: &str) -> Self {
        Self::new(Method::POST, url)
    }

    /// Adds a header (repeating a name sends it twice).
    pub fn header(self, name: &str, value: &str) -> Self {
        self.header_bytes(name, value.as_bytes())
    }

    /// Adds a header with a raw value.
    pub fn header_bytes(mut self, name: &str, value: &[u8]) -> Self {
        self.headers.push((name.to_owned(), value.to_vec()));
        self
    }

    /// Sets `Authorization: Bearer {token}`.
    pub fn bearer(self, token: &str) -> Self {
        self.header("authorization", &format!("Bearer {token}"))
    }

    /// The whole body.
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = RequestBody::Whole(body.into());
        self
    }

    /// A JSON body, with `content-type: application/json`.
    pub fn json(self, value: &serde_json::Value) -> Self {
        self.header("content-type", "application/json")
            .body(value.to_string())
    }

    /// A body sent in chunks, each after its delay (counted from the previous chunk), with
    /// chunked transfer coding over HTTP/1.1.
    pub fn body_chunks(mut self, chunks: Vec<(Duration, Bytes)>) -> Self {
        self.body = RequestBody::Chunks(chunks);
        self
    }

    /// Connects from this local address (any port), e.g. `127.0.0.2`.
    pub fn from_ip(mut self, ip: IpAddr) -> Self {
        self.local_ip = Some(ip);
        self
    }

    /// Bytes written on the connection right after it opens, before TLS and HTTP: a PROXY
    /// protocol header, as a load balancer would send it.
    pub fn prelude(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.prelude = bytes.into();
        self
    }

    /// The TLS config for `https://` URLs (for example [`crate::tls::TestCa::client_config`]).
    /// Its ALPN list decides between HTTP/2 and HTTP/1.1.
    pub fn tls(mut self, config: Arc<ClientConfig>) -> Self {
        self.tls = Some(config);
        self
    }

    /// Speaks HTTP/2 without negotiation on `http://` URLs.
    pub fn http2_prior_knowledge(mut self) -> Self {
        self.http2 = true;
        self
    }

    /// Gives up after `timeout` in all (connect, request and reading the body).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Connects, sends, and reads the response to its end.
    pub async fn send(self) -> Result<HttpResponse> {
        let timeout = self.timeout;
        let what = format!("{} {}", self.method, self.url);
        match tokio::time::timeout(timeout, self.send_inner()).await {
            Ok(result) => result.with_context(|| what.clone()),
            Err(_) => bail!("{what}: no complete response within {timeout:?}"),
        }
    }

    async fn send_inner(self) -> Result<HttpResponse> {
        let uri: Uri = self
            .url
            .parse()
            .with_context(|| format!("not a URL: {:?}", self.url))?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => bail!("only http:// and https:// URLs are supported"),
        };
        let host = uri
            .host()
            .context("the URL has no host")?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let mut stream = connect(&host, port, self.local_ip).await?;
        let _ = stream.set_nodelay(true);
        if !self.prelude.is_empty() {
            tokio::io::AsyncWriteExt::write_all(&mut stream, &self.prelude)
                .await
                .context("writing the prelude")?;
        }
        if https {
            let config = self
                .tls
                .clone()
                .context("an https:// URL needs a TLS client config: call .tls(..)")?;
            let name = ServerName::try_from(host.clone())
                .with_context(|| format!("{host:?} is not a valid TLS server name"))?;
            let stream = TlsConnector::from(config)
                .connect(name, stream)
                .await
                .context("TLS handshake")?;
            let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2".as_slice());
            let cert = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first().cloned());
            let mut response = self.exchange(stream, h2, uri).await?;
            response.server_cert = cert;
            Ok(response)
        } else {
            let h2 = self.http2;
            self.exchange(stream, h2, uri).await
        }
    }

    async fn exchange<I>(self, io: I, h2: bool, uri: Uri) -> Result<HttpResponse>
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let body: AnyBody = match self.body {
            RequestBody::Whole(bytes) => body::full(bytes),
            RequestBody::Chunks(chunks) => body::timed(chunks, std::future::pending()),
        };
        let mut request = Request::new(body);
        *request.method_mut() = self.method;
        if h2 {
            *request.version_mut() = Version::HTTP_2;
            *request.uri_mut() = uri.clone();
        } else {
            *request.version_mut() = Version::HTTP_11;
            let origin = uri.path_and_query().map(|pq| pq.as_str()).unwrap_or("/");
            *request.uri_mut() = origin.parse()?;
        }
        let headers = request.headers_mut();
        for (name, value) in &self.headers {
            headers.append(
                HeaderName::from_bytes(name.as_bytes())
                    .with_context(|| format!("invalid header name {name:?}"))?,
                HeaderValue::from_bytes(value)
                    .with_context(|| format!("invalid value for header {name:?}"))?,
            );
        }
        if !h2 && !headers.contains_key(http::header::HOST) {
            if let Some(authority) = uri.authority() {
                headers.insert(http::header::HOST, authority.as_str().parse()?);
            }
        }

        let io = TokioIo::new(io);
        let response = if h2 {
            let (mut sender, connection) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                    .await
                    .context("HTTP/2 handshake")?;
            tokio::spawn(connection);
            sender.send_request(request).await?
        } else {
            let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
                .await
                .context("HTTP/1.1 handshake")?;
            tokio::spawn(connection);
            sender.send_request(request).await?
        };

        let head_at = Instant::now();
        let (parts, mut incoming) = response.into_parts();
        let mut all = BytesMut::new();
        let mut chunks = Vec::new();
        while let Some(frame) = incoming.frame().await {
            let frame = frame.context("reading the response body")?;
            if let Ok(data) = frame.into_data() {
                all.extend_from_slice(&data);
                chunks.push((head_at.elapsed(), data));
            }
        }
        Ok(HttpResponse {
            status: parts.status,
            version: parts.version,
            headers: parts.headers,
            body: all.freeze(),
            chunks,
            server_cert: None,
        })
    }
}

/// Connects to the first address of `host` that accepts, from `local_ip` when given.
async fn connect(host: &str, port: u16, local_ip: Option<IpAddr>) -> Result<TcpStream> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .with_context(|| format!("resolving {host}"))?
        .filter(|addr| local_ip.is_none_or(|ip| ip.is_ipv4() == addr.is_ipv4()))
        .collect();
    let mut last_err = None;
    for addr in addrs {
        let attempt = match local_ip {
            None => TcpStream::connect(addr).await,
            Some(ip) => {
                let socket = if ip.is_ipv4() {
                    TcpSocket::new_v4()?
                } else {
                    TcpSocket::new_v6()?
                };
                socket
                    .bind(SocketAddr::new(ip, 0))
                    .with_context(|| format!("binding the client socket to {ip}"))?;
                socket.connect(addr).await
            }
        };
        match attempt {
            Ok(stream) => return Ok(stream),
            Err(err) => {
                last_err = Some(anyhow::Error::new(err).context(format!("connecting to {addr}")))
            }
        }
    }
    Err(last_err.unwrap_or_else(|| anyhow::anyhow!("{host} has no usable address")))
}
