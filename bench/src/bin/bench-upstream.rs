//! The upstream every benchmark arm talks to. One program, three modes, chosen by path:
//!
//! - `/instant`: a small JSON answer at once;
//! - `/delay`: the same answer after a fixed 50 ms (many requests in flight);
//! - `/sse`: `text/event-stream`, 64 events 20 ms apart, each written as its own chunk;
//! - `/echo-key`: the `x-api-key` it received, as the body (the propagation tool reads it).
//!
//! Every mode except `/echo-key` answers 401 unless `x-api-key` equals `--key`, so an arm that
//! did not swap the token for the real key shows up as errors, not as speed.
//!
//! `bench-upstream --addr 127.0.0.1:9100 --key sk-bench --threads 1`

use std::convert::Infallible;
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use http::{header, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};

const BODY: &[u8] =
    br#"{"id":"msg_bench","type":"message","content":[{"type":"text","text":"hello"}]}"#;
const DELAY: Duration = Duration::from_millis(50);
const SSE_EVENTS: usize = 64;
const SSE_GAP: Duration = Duration::from_millis(20);

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

fn full(status: StatusCode, body: &'static [u8], content_type: &'static str) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .body(Full::new(Bytes::from_static(body)).boxed())
        .unwrap_or_default()
}

async fn handle(key: &'static [u8], req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let path = path.as_str();
    if path == "/echo-key" {
        let seen = req
            .headers()
            .get("x-api-key")
            .map(|v| Bytes::copy_from_slice(v.as_bytes()))
            .unwrap_or_default();
        return Response::new(Full::new(seen).boxed());
    }
    if req.headers().get("x-api-key").map(|v| v.as_bytes()) != Some(key) {
        return full(
            StatusCode::UNAUTHORIZED,
            br#"{"error":"wrong key"}"#,
            "application/json",
        );
    }
    // Drain the request body (the benchmarks send none, but a client may).
    let _ = req.into_body().collect().await;
    match path {
        "/instant" => full(StatusCode::OK, BODY, "application/json"),
        "/delay" => {
            tokio::time::sleep(DELAY).await;
            full(StatusCode::OK, BODY, "application/json")
        }
        "/sse" => {
            let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(4);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(SSE_GAP);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                for i in 0..SSE_EVENTS {
                    tick.tick().await;
                    let event = format!("event: delta\ndata: {{\"n\":{i}}}\n\n");
                    if tx.send(Ok(Frame::data(Bytes::from(event)))).await.is_err() {
                        return;
                    }
                }
            });
            let stream = futures_util::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|f| (f, rx))
            });
            Response::builder()
                .header(header::CONTENT_TYPE, "text/event-stream")
                .header(header::CACHE_CONTROL, "no-cache")
                .body(StreamBody::new(stream).boxed())
                .unwrap_or_default()
        }
        _ => full(StatusCode::NOT_FOUND, b"{}", "application/json"),
    }
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let addr = arg(&args, "--addr").unwrap_or_else(|| "127.0.0.1:9100".into());
    let key: &'static [u8] = arg(&args, "--key")
        .unwrap_or_else(|| "sk-bench-real-key".into())
        .into_bytes()
        .leak();
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
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .with_context(|| format!("--addr {addr}"))?;
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| async move {
                    Ok::<_, Infallible>(handle(key, req).await)
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}
