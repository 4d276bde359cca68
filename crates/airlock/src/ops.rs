//! The operations listener (`AIRLOCK_METRICS_ADDR`), in every role: `GET /metrics` (Prometheus,
//! OpenMetrics text), `/healthz` (the process is up) and `/readyz` (it should get traffic).
//!
//! It is separate from the data plane's port, which answers any path for sandboxes, and from
//! the control plane's, which a proxy-only process does not have. It serves plain HTTP/1.1 and
//! is meant for a private network (a scraper, a kubelet); it shows no token, secret, path or
//! address.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::registry::Registry;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// What the listener reports on.
pub(crate) struct Ops {
    pub registry: Registry,
    /// The data plane of this process, if it runs one: ready once its state is loaded.
    pub data_plane: Option<Arc<airlock_proxy::DataPlane>>,
    /// The database, if this process runs the control plane: ready while it answers.
    pub store: Option<airlock_store::Store>,
    /// True once shutdown began: not ready any more, so that load balancers move away.
    pub draining: watch::Receiver<bool>,
}

pub(crate) async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("AIRLOCK_METRICS_ADDR: cannot listen on {addr}"))
}

/// Serves until the process exits (it must keep answering `/readyz` while the planes drain).
pub(crate) fn spawn(listener: TcpListener, ops: Ops) -> tokio::task::JoinHandle<()> {
    let ops = Arc::new(ops);
    tokio::spawn(async move {
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(err) => {
                    tracing::warn!(error = %err, "operations listener: cannot accept");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let ops = ops.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let ops = ops.clone();
                    async move { Ok::<_, Infallible>(handle(&ops, req).await) }
                });
                let served = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(10))
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
                if let Err(err) = served {
                    tracing::debug!(error = %err, "operations connection ended with an error");
                }
            });
        }
    })
}

fn respond(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    response
}

fn json_response(status: StatusCode, body: serde_json::Value) -> Response<Full<Bytes>> {
    respond(status, "application/json", body.to_string())
}

async fn handle(ops: &Ops, req: Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return json_response(
            StatusCode::METHOD_NOT_ALLOWED,
            json!({"error": "only GET and HEAD are served here"}),
        );
    }
    match req.uri().path() {
        "/metrics" => {
            let mut text = String::with_capacity(16 * 1024);
            if prometheus_client::encoding::text::encode(&mut text, &ops.registry).is_err() {
                return json_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    json!({"error": "cannot encode the metrics"}),
                );
            }
            respond(
                StatusCode::OK,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                text,
            )
        }
        "/healthz" => json_response(StatusCode::OK, json!({"status": "ok"})),
        "/readyz" => readyz(ops).await,
        _ => json_response(
            StatusCode::NOT_FOUND,
            json!({"error": "not found: try /metrics, /healthz or /readyz"}),
        ),
    }
}

async fn readyz(ops: &Ops) -> Response<Full<Bytes>> {
    let draining = *ops.draining.borrow();
    let loaded = ops.data_plane.as_ref().map(|dp| dp.ready());
    let database = match &ops.store {
        Some(store) => Some(matches!(
            tokio::time::timeout(Duration::from_secs(2), store.ping()).await,
            Ok(Ok(_))
        )),
        None => None,
    };
    let ready = !draining && loaded != Some(false) && database != Some(false);
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json_response(
        status,
        json!({
            "ready": ready,
            "draining": draining,
            "data_plane_loaded": loaded,
            "database": database,
        }),
    )
}
