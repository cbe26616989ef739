//! The kube-insight JSON API (`/api/v1/...`). Answers are flat arrays of
//! objects (Grafana Infinity turns each into a frame); errors are
//! `{"error": "..."}` with a 4xx/5xx status.

use crate::params::Params;
use crate::{ApiState, Scope};
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use kube_insight_core::time::format_rfc3339_ms;
use kube_insight_core::Entity;
use kube_insight_store::{EntityQuery, Error as StoreError};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Clusters one `/api/v1/clusters` answer lists unless `limit` says otherwise.
pub const DEFAULT_CLUSTERS: usize = 1000;

pub fn routes() -> Router<Arc<ApiState>> {
    Router::new()
        .route("/api/v1/entities", get(entities))
        .route("/api/v1/clusters", get(clusters))
}

/// A JSON error answer.
pub fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(json!({ "error": msg.into() }))).into_response()
}

/// Maps a store error to a status: limits and bad input are the caller's
/// (400/422), unavailability is 503, the rest 500.
pub fn store_error(e: StoreError) -> Response {
    let status = match &e {
        StoreError::LimitExceeded { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        StoreError::InvalidQuery(_) | StoreError::Core(_) => StatusCode::BAD_REQUEST,
        e if e.is_retryable() => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    if status.is_server_error() {
        tracing::error!(error = %e, "api: store error");
    }
    error(status, e.to_string())
}

/// `GET /api/v1/clusters?from&to&limit`: the clusters with metrics in the
/// range (the store's cluster index, [`kube_insight_store::MetricStore::clusters`]),
/// or with topology saved in it, by name, each with what is known cheaply:
/// `last_seen` (newest sample, `null` where the backend does not hold it),
/// `series` (in the range, `null` likewise), `topology_last_save`. Only the
/// token's clusters. More than `limit` (default [`DEFAULT_CLUSTERS`]) is 422.
async fn clusters(
    State(st): State<Arc<ApiState>>,
    Scope(scope): Scope,
    RawQuery(q): RawQuery,
) -> Response {
    let p = Params::parse(q.as_deref(), None);
    let range = match p.range("from", "to") {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let limit = match p.usize_or("limit", DEFAULT_CLUSTERS, st.config.max_rows) {
        Ok(l) => l,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let topology_store = st.store.topology();
    let (seen, topology) = tokio::join!(
        st.store.clusters(range, st.config.max_rows),
        topology_store.topology_clusters()
    );
    let (seen, topology) = match (seen, topology) {
        (Ok(s), Ok(t)) => (s, t),
        (Err(e), _) | (_, Err(e)) => return store_error(e),
    };
    #[derive(Default)]
    struct Row {
        last_seen: Option<i64>,
        series: Option<u64>,
        topology_last: Option<i64>,
    }
    let mut rows: BTreeMap<String, Row> = BTreeMap::new();
    for c in seen.into_iter().filter(|c| scope.allows(&c.cluster)) {
        let r = rows.entry(c.cluster).or_default();
        r.last_seen = c.last_seen_ms;
        r.series = c.series;
    }
    for t in topology
        .into_iter()
        .filter(|t| scope.allows(&t.cluster))
        .filter(|t| t.first_ms <= range.end_ms && t.last_ms >= range.start_ms)
    {
        rows.entry(t.cluster).or_default().topology_last = Some(t.last_ms);
    }
    if rows.len() > limit {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "more than {limit} clusters in the range: raise parameter limit (at most {}) or narrow from/to",
                st.config.max_rows
            ),
        );
    }
    let out: Vec<Value> = rows
        .into_iter()
        .map(|(cluster, r)| {
            json!({
                "cluster": cluster,
                "last_seen": r.last_seen.map(format_rfc3339_ms),
                "series": r.series,
                "topology_last_save": r.topology_last.map(format_rfc3339_ms),
            })
        })
        .collect();
    Json(out).into_response()
}

/// The depth `level` keeps of an entity row (`GET /api/v1/entities?level=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Level {
    Cluster,
    Namespace,
    Workload,
    Pod,
    Container,
}

impl Level {
    fn parse(s: &str) -> Result<Level, String> {
        Ok(match s {
            "cluster" => Level::Cluster,
            "namespace" => Level::Namespace,
            "workload" => Level::Workload,
            "pod" => Level::Pod,
            "container" => Level::Container,
            other => {
                return Err(format!(
                "parameter level: {other:?} is not one of cluster, namespace, workload, pod, container"
            ))
            }
        })
    }

    /// The row cut to this depth, or `None` when it does not reach it.
    fn cut(self, mut e: Entity) -> Option<Entity> {
        let reaches = match self {
            Level::Cluster => true,
            Level::Namespace => !e.namespace.is_empty(),
            Level::Workload => !e.workload.is_empty(),
            Level::Pod => !e.pod.is_empty(),
            Level::Container => !e.container.is_empty(),
        };
        if !reaches {
            return None;
        }
        if self < Level::Container {
            e.container.clear();
        }
        if self < Level::Pod {
            e.pod.clear();
        }
        if self < Level::Workload {
            e.workload.clear();
            e.workload_kind.clear();
        }
        if self < Level::Namespace {
            e.namespace.clear();
        }
        Some(e)
    }
}

/// `GET /api/v1/entities?cluster&namespace&workload&pod&level&from&to&limit`:
/// the cluster / namespace / workload / pod / container rows seen in the
/// range. `level` keeps one row per entity of that depth (a dashboard's
/// namespace list is then one row per namespace, not per container).
///
/// Bounded: the store builds at most `limit` rows (default and cap
/// `max_rows`); more is 422 naming the filter to add (`cluster`, whose
/// values `/api/v1/clusters` lists, then `namespace`), never a silently
/// cut list, so a Grafana variable shows the error rather than missing
/// values.
async fn entities(State(st): State<Arc<ApiState>>, RawQuery(q): RawQuery) -> Response {
    let p = Params::parse(q.as_deref(), None);
    let range = match p.range("from", "to") {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let limit = match p.usize_or("limit", st.config.max_rows, st.config.max_rows) {
        Ok(l) => l,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let level = match p.get("level").map(Level::parse).transpose() {
        Ok(l) => l,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let query = EntityQuery {
        cluster: p.get("cluster").map(str::to_string),
        namespace: p.get("namespace").map(str::to_string),
        range,
        limit,
    };
    let rows = match st.store.entities(&query).await {
        Ok(r) => r,
        Err(StoreError::LimitExceeded { .. }) => {
            let narrow = match (&query.cluster, &query.namespace) {
                (None, _) => "give parameter cluster (GET /api/v1/clusters lists them)",
                (Some(_), None) => "give parameter namespace",
                (Some(_), Some(_)) => "narrow from/to",
            };
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!(
                    "more than {limit} entity rows in the range: {narrow}, or raise parameter limit (at most {})",
                    st.config.max_rows
                ),
            );
        }
        Err(e) => return store_error(e),
    };
    let workload = p.get("workload");
    let pod = p.get("pod");
    let mut rows: Vec<Entity> = rows
        .into_iter()
        .filter(|e| workload.is_none_or(|w| e.workload == w))
        .filter(|e| pod.is_none_or(|x| e.pod == x))
        .collect();
    if let Some(level) = level {
        // One row per cut, first/last seen merged, in the tree's key order.
        let mut merged: BTreeMap<(String, String, String, String, String, String), Entity> =
            BTreeMap::new();
        for e in rows.into_iter().filter_map(|e| level.cut(e)) {
            let key = (
                e.cluster.clone(),
                e.namespace.clone(),
                e.workload_kind.clone(),
                e.workload.clone(),
                e.pod.clone(),
                e.container.clone(),
            );
            match merged.get_mut(&key) {
                Some(m) => {
                    m.first_seen_ms = m.first_seen_ms.min(e.first_seen_ms);
                    m.last_seen_ms = m.last_seen_ms.max(e.last_seen_ms);
                }
                None => {
                    merged.insert(key, e);
                }
            }
        }
        rows = merged.into_values().collect();
    }
    let out: Vec<Value> = rows
        .into_iter()
        .map(|e| {
            json!({
                "cluster": e.cluster,
                "namespace": e.namespace,
                "workload_kind": e.workload_kind,
                "workload": e.workload,
                "pod": e.pod,
                "container": e.container,
                "first_seen": format_rfc3339_ms(e.first_seen_ms),
                "last_seen": format_rfc3339_ms(e.last_seen_ms),
            })
        })
        .collect();
    Json(out).into_response()
}
