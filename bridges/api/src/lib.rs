//! The read API, served on the api listener:
//! - the kube-insight API, JSON under `/api/v1/...`, flat arrays of objects
//!   that Grafana's Infinity datasource turns into frames ([`kube`]);
//! - the Prometheus-compatible API under `/prometheus/api/v1/...`, for
//!   Grafana's built-in Prometheus datasource ([`prometheus`]).
//!
//! Every query takes a time range; nothing answers only "now".

pub mod events;
pub mod kube;
pub mod logs;
pub mod params;
pub mod prometheus;
pub mod suspects;
pub mod topology;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use kube_insight_store::DynStore;
use kube_insight_telemetry::{labels, Telemetry};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Read API settings.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Bearer token required on every route when set.
    pub token: Option<String>,
    /// Deadline of one query.
    pub query_timeout: Duration,
    /// Samples one query may load.
    pub max_samples: usize,
    /// Series one query may touch.
    pub max_series: usize,
    /// Rows an entity or listing answer may return.
    pub max_rows: usize,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            token: None,
            query_timeout: Duration::from_secs(120),
            max_samples: 50_000_000,
            max_series: 500_000,
            max_rows: 100_000,
        }
    }
}

/// Shared by every handler.
pub struct ApiState {
    pub store: DynStore,
    pub telemetry: Arc<Telemetry>,
    pub config: ApiConfig,
}

/// The api listener's router.
pub fn router(store: DynStore, telemetry: Arc<Telemetry>, config: ApiConfig) -> Router {
    let state = Arc::new(ApiState {
        store,
        telemetry,
        config,
    });
    let (log_store, event_store, topology_store) = (
        state.store.logs(),
        state.store.events(),
        state.store.topology(),
    );
    Router::new()
        .merge(kube::routes())
        .merge(prometheus::routes())
        .merge(suspects::routes())
        .merge(logs::routes(log_store))
        .merge(events::routes_with_topology(
            event_store,
            Some(topology_store.clone()),
        ))
        .merge(topology::routes(topology_store))
        .layer(axum::middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state)
}

/// Bearer-token check and per-endpoint telemetry.
async fn guard(State(st): State<Arc<ApiState>>, req: Request, next: Next) -> Response {
    let endpoint = endpoint_label(req.uri().path());
    if let Some(want) = &st.config.token {
        let got = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim);
        let ok = got.is_some_and(|g| ct_eq(g.as_bytes(), want.as_bytes()));
        if !ok {
            let mut r = (
                StatusCode::UNAUTHORIZED,
                "missing or wrong bearer token (KUBE_INSIGHT_API_TOKEN)\n",
            )
                .into_response();
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return r;
        }
    }
    let started = Instant::now();
    let resp = next.run(req).await;
    st.telemetry
        .api_seconds
        .get_or_create(&labels([("endpoint", endpoint)]))
        .observe(started.elapsed().as_secs_f64());
    st.telemetry
        .api_requests
        .get_or_create(&labels([
            ("endpoint", endpoint),
            ("code", resp.status().as_str()),
        ]))
        .inc();
    resp
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A bounded set of endpoint names for metric labels (never the raw path).
fn endpoint_label(path: &str) -> &'static str {
    const KNOWN: &[&str] = &[
        "/prometheus/api/v1/query_range",
        "/prometheus/api/v1/query",
        "/prometheus/api/v1/series",
        "/prometheus/api/v1/labels",
        "/prometheus/api/v1/label",
        "/prometheus/api/v1/metadata",
        "/prometheus/api/v1/status",
        "/api/v1/entities",
        "/api/v1/logs/rate",
        "/api/v1/logs",
        "/api/v1/events",
        "/api/v1/changes/workloads",
        "/api/v1/changes",
        "/api/v1/objects",
        "/api/v1/topology/nodes",
        "/api/v1/topology/edges",
        "/api/v1/topology/diff",
        "/api/v1/topology",
        "/api/v1/suspects/frame",
        "/api/v1/suspects/onset",
        "/api/v1/suspects",
    ];
    KNOWN
        .iter()
        .find(|k| path == **k || path.starts_with(&format!("{k}/")))
        .copied()
        .unwrap_or("other")
}
