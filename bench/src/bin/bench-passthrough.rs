//! Arm A1: the smallest hyper proxy that forwards without checking anything. It is the floor for
//! any Rust proxy built on hyper: whatever Airlock costs above it is Airlock's own work.
//!
//! Same shape as Airlock's data plane: hyper-util's auto server, one pooled hyper-util client,
//! bodies streamed both ways, `TCP_NODELAY` on both sides. No token check, no header swap.
//!
//! `bench-passthrough --addr 127.0.0.1:9101 --upstream 127.0.0.1:9100`

use std::convert::Infallible;
use std::sync::Arc;

use anyhow::{Context, Result};
use http::uri::{Authority, Scheme};
use http::{Request, Response, StatusCode, Uri};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

type Upstream = Client<HttpConnector, Incoming>;

async fn forward(
    client: &Upstream,
    authority: &Authority,
    req: Request<Incoming>,
) -> Response<http_body_util::Either<Incoming, http_body_util::Empty<bytes::Bytes>>> {
    let (mut parts, body) = req.into_parts();
    let mut uri = Uri::builder()
        .scheme(Scheme::HTTP)
        .authority(authority.clone());
    if let Some(pq) = parts.uri.path_and_query() {
        uri = uri.path_and_query(pq.clone());
    }
    match uri.build() {
        Ok(uri) => parts.uri = uri,
        Err(_) => return bad_gateway(),
    }
    match client.request(Request::from_parts(parts, body)).await {
        Ok(response) => response.map(http_body_util::Either::Left),
        Err(_) => bad_gateway(),
    }
}

fn bad_gateway() -> Response<http_body_util::Either<Incoming, http_body_util::Empty<bytes::Bytes>>>
{
    let mut r = Response::new(http_body_util::Either::Right(http_body_util::Empty::new()));
    *r.status_mut() = StatusCode::BAD_GATEWAY;
    r
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let addr = arg(&args, "--addr").unwrap_or_else(|| "127.0.0.1:9101".into());
    let upstream = arg(&args, "--upstream").unwrap_or_else(|| "127.0.0.1:9100".into());
    let authority: Arc<Authority> = Arc::new(upstream.parse().context("--upstream")?);
    let threads: usize = arg(&args, "--threads")
        .map(|t| t.parse())
        .transpose()
        .context("--threads")?
        .unwrap_or(1);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client: Arc<Upstream> = Arc::new(
            Client::builder(TokioExecutor::new())
                .pool_timer(TokioTimer::new())
                .pool_max_idle_per_host(256)
                .build(connector),
        );
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .with_context(|| format!("--addr {addr}"))?;
        let server = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            let client = client.clone();
            let authority = authority.clone();
            let server = server.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let client = client.clone();
                    let authority = authority.clone();
                    async move { Ok::<_, Infallible>(forward(&client, &authority, req).await) }
                });
                let _ = server.serve_connection(TokioIo::new(stream), service).await;
            });
        }
    })
}
