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

/// `airlock_build_info` and the process's own gauges (`process_*`, the names Prometheus's client
/// libraries use), read from `/proc/self` at scrape time; on a system without `/proc` they are
/// left out.
pub(crate) fn register_process_metrics(registry: &mut Registry) {
    registry.register_collector(Box::new(ProcessCollector));
}

#[derive(Debug)]
struct ProcessCollector;

/// Clock ticks per second of `/proc/self/stat`'s times: `USER_HZ`, 100 on every Linux ABI.
const USER_HZ: f64 = 100.0;

/// What `/proc/self` says about this process.
#[derive(Debug, Default, PartialEq)]
struct ProcessStats {
    cpu_seconds: f64,
    start_time_seconds: Option<f64>,
    threads: i64,
    resident_bytes: i64,
    virtual_bytes: i64,
    open_fds: Option<i64>,
}

/// Parses `/proc/self/stat` (fields after the command name, which may hold spaces and
/// parentheses) and the boot time from `/proc/stat`.
fn parse_stat(stat: &str, boot_time: Option<f64>) -> Option<ProcessStats> {
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state); utime is field 14, stime 15, num_threads 20,
    // starttime 22, vsize 23, rss 24 (pages).
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
    let ticks = field(14)? + field(15)?;
    Some(ProcessStats {
        cpu_seconds: ticks as f64 / USER_HZ,
        start_time_seconds: boot_time
            .zip(field(22))
            .map(|(b, s)| b + s as f64 / USER_HZ),
        threads: i64::try_from(field(20)?).ok()?,
        resident_bytes: i64::try_from(field(24)?.saturating_mul(4096)).ok()?,
        virtual_bytes: i64::try_from(field(23)?).ok()?,
        open_fds: None,
    })
}

fn read_process_stats() -> Option<ProcessStats> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let boot_time = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("btime "))
            .and_then(|v| v.trim().parse::<f64>().ok())
    });
    let mut stats = parse_stat(&stat, boot_time)?;
    // VmRSS in /proc/self/status does not assume a page size.
    if let Some(kb) = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<i64>().ok())
        })
    {
        stats.resident_bytes = kb.saturating_mul(1024);
    }
    stats.open_fds = std::fs::read_dir("/proc/self/fd")
        .ok()
        .map(|d| i64::try_from(d.count()).unwrap_or(i64::MAX));
    Some(stats)
}

impl prometheus_client::collector::Collector for ProcessCollector {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::counter::ConstCounter;
        use prometheus_client::metrics::gauge::ConstGauge;
        {
            let info = ConstGauge::new(1i64);
            let mut family = encoder.encode_descriptor(
                "airlock_build_info",
                "Always 1; the labels say which build of Airlock this process runs.",
                None,
                info.metric_type(),
            )?;
            let labels = [("version", env!("CARGO_PKG_VERSION"))];
            info.encode(family.encode_family(&labels)?)?;
        }
        let Some(p) = read_process_stats() else {
            return Ok(());
        };
        let cpu = ConstCounter::new(p.cpu_seconds);
        cpu.encode(encoder.encode_descriptor(
            "process_cpu_seconds",
            "User and system CPU time this process has used, in seconds.",
            None,
            cpu.metric_type(),
        )?)?;
        for (name, help, value) in [
            (
                "process_resident_memory_bytes",
                "Resident memory of this process, in bytes.",
                Some(p.resident_bytes),
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory of this process, in bytes.",
                Some(p.virtual_bytes),
            ),
            (
                "process_threads",
                "Threads of this process.",
                Some(p.threads),
            ),
            (
                "process_open_fds",
                "File descriptors this process holds open (connections included).",
                p.open_fds,
            ),
        ] {
            if let Some(v) = value {
                let g = ConstGauge::new(v);
                g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)?;
            }
        }
        if let Some(start) = p.start_time_seconds {
            let g = ConstGauge::new(start);
            g.encode(encoder.encode_descriptor(
                "process_start_time_seconds",
                "When this process started, in seconds since the Unix epoch.",
                None,
                g.metric_type(),
            )?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod process_tests {
    use super::*;

    #[test]
    fn proc_stat_parses_with_odd_command_names() {
        let stat =
            "4242 (air lock) (x)) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 50 0 0 20 0 9 0 \
                    12345 104857600 2560 18446744073709551615";
        let p = parse_stat(stat, Some(1_700_000_000.0)).unwrap();
        assert_eq!(p.cpu_seconds, 3.0);
        assert_eq!(p.threads, 9);
        assert_eq!(p.virtual_bytes, 104_857_600);
        assert_eq!(p.resident_bytes, 2560 * 4096);
        assert_eq!(p.start_time_seconds, Some(1_700_000_123.45));
        assert!(parse_stat("garbage", None).is_none());
        // This very process, from the real /proc.
        let me = read_process_stats().unwrap();
        assert!(me.resident_bytes > 0 && me.threads >= 1 && me.open_fds.unwrap() > 0);
    }
}
