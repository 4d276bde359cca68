//! `airlock_api_requests_total{route, code}`: control-plane requests by route template (never the
//! raw path, which holds ids and names) and status.

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use crate::AppState;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Labels {
    /// The route template, as `/v1/secrets/{name}`; `unmatched` for paths no route knows.
    route: String,
    code: u16,
}

/// The control plane's metrics. Cheap to clone (the counters are shared).
#[derive(Clone, Debug, Default)]
pub struct ApiMetrics {
    requests: Family<Labels, Counter>,
}

impl ApiMetrics {
    /// Adds the control plane's metrics to a Prometheus registry.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "airlock_api_requests",
            // prometheus-client adds the final period.
            "Control-plane requests by route template and HTTP status",
            self.requests.clone(),
        );
    }
}

/// Counts every request once its response exists.
pub(crate) async fn count(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_owned();
    let response = next.run(req).await;
    let labels = Labels {
        route,
        code: response.status().as_u16(),
    };
    state.metrics.requests.get_or_create(&labels).inc();
    response
}
