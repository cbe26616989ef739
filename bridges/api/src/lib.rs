//! The read API, served on the api listener:
//! - the kube-insight API, JSON under `/api/v1/...`, flat arrays of objects
//!   that Grafana's Infinity datasource turns into frames ([`kube`]);
//! - the Prometheus-compatible API under `/prometheus/api/v1/...`, for
//!   Grafana's built-in Prometheus datasource ([`prometheus`]).
//!
//! Every query takes a time range; nothing answers only "now".
//!
//! Tenancy: each bearer token maps to the clusters it may read
//! ([`ClusterScope`]). The guard answers 401 for an unknown token; for the
//! JSON API it answers 403 for a `cluster` outside the scope and fills in
//! the cluster of a single-cluster token; the Prometheus API restricts every
//! selection to the scope at the querier ([`prometheus::StoreQuerier`]).

pub mod events;
pub mod kube;
pub mod logs;
pub mod params;
pub mod prometheus;
pub mod suspects;
pub mod topology;

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
pub use kube_insight_core::ClusterScope;
use kube_insight_store::DynStore;
use kube_insight_telemetry::{labels, Telemetry};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Read API settings.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Bearer tokens and the clusters each may read; when not empty, every
    /// route needs one of them (`KUBE_INSIGHT_API_TOKEN` is one token with
    /// [`ClusterScope::All`], `KUBE_INSIGHT_API_TOKENS_FILE` lists them).
    pub tokens: Vec<(String, ClusterScope)>,
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
            tokens: Vec::new(),
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

/// The clusters the request's token may read, set by the guard; every
/// cluster when the router runs without tokens (or without the guard).
#[derive(Debug, Clone, Default)]
pub struct Scope(pub Arc<ClusterScope>);

impl<S: Send + Sync> FromRequestParts<S> for Scope {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(parts.extensions.get::<Scope>().cloned().unwrap_or_default())
    }
}

/// The token of an `Authorization: Bearer …` header.
fn bearer(req: &Request) -> Option<&str> {
    let v = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The scope of a listed token, comparing against every entry in constant
/// time per entry.
fn scope_of<'a>(tokens: &'a [(String, ClusterScope)], got: &str) -> Option<&'a ClusterScope> {
    let mut found = None;
    for (t, scope) in tokens {
        if ct_eq(got.as_bytes(), t.as_bytes()) {
            found = Some(scope);
        }
    }
    found
}

/// Bearer-token check, the token's cluster scope, and per-endpoint telemetry.
async fn guard(State(st): State<Arc<ApiState>>, mut req: Request, next: Next) -> Response {
    let endpoint = endpoint_label(req.uri().path());
    let scope = if st.config.tokens.is_empty() {
        ClusterScope::All
    } else {
        match bearer(&req).and_then(|got| scope_of(&st.config.tokens, got)) {
            Some(s) => s.clone(),
            None => {
                let mut r = (
                    StatusCode::UNAUTHORIZED,
                    "missing or wrong bearer token (KUBE_INSIGHT_API_TOKEN or KUBE_INSIGHT_API_TOKENS_FILE)\n",
                )
                    .into_response();
                r.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                return r;
            }
        }
    };
    if let Some(r) = scope_json_request(&scope, &mut req) {
        return r;
    }
    req.extensions_mut().insert(Scope(Arc::new(scope)));
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

/// Holds a JSON API request (`/api/v1/*`) to the token's clusters; `Some`
/// is the refusal. Every JSON endpoint reads its cluster from the `cluster`
/// query parameter ([`params::Params::get`]: the last value, `All` or empty
/// meaning none), so: any value outside the scope is 403; no effective
/// value (absent, or a last value of `All` or empty) with a single-cluster
/// scope becomes that cluster; none with a wider scope is 400 (the store
/// reads take one cluster or all). `/api/v1/clusters` filters its rows
/// itself; the Prometheus API is restricted at the querier.
fn scope_json_request(scope: &ClusterScope, req: &mut Request) -> Option<Response> {
    let path = req.uri().path();
    if scope.is_all() || !path.starts_with("/api/v1/") || path == "/api/v1/clusters" {
        return None;
    }
    let p = params::Params::parse(req.uri().query(), None);
    let named: Vec<&str> = p
        .all("cluster")
        .iter()
        .map(String::as_str)
        .filter(|c| !c.is_empty() && *c != params::ALL)
        .collect();
    if let Some(c) = named.iter().find(|c| !scope.allows(c)) {
        return Some(kube::error(
            StatusCode::FORBIDDEN,
            format!(
                "cluster {c:?} is outside this token's clusters ({}): ask for one of them, or use a token that reads {c:?}",
                scope.describe()
            ),
        ));
    }
    if p.get("cluster").is_some() {
        // The value the handler reads, checked above.
        return None;
    }
    let Some(one) = scope.single() else {
        return Some(kube::error(
            StatusCode::BAD_REQUEST,
            format!(
                "parameter cluster is required: this token reads several clusters ({}); GET /api/v1/clusters lists them",
                scope.describe()
            ),
        ));
    };
    let query = match req.uri().query() {
        Some(q) if !q.is_empty() => format!("{q}&cluster={one}"),
        _ => format!("cluster={one}"),
    };
    match format!("{}?{query}", req.uri().path()).parse::<Uri>() {
        Ok(uri) => {
            *req.uri_mut() = uri;
            None
        }
        Err(e) => Some(kube::error(
            StatusCode::BAD_REQUEST,
            format!("request uri: {e}"),
        )),
    }
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
        "/api/v1/clusters",
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
