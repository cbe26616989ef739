//! The kube-insight JSON API (`/api/v1/...`). Answers are flat arrays of
//! objects (Grafana Infinity turns each into a frame); errors are
//! `{"error": "..."}` with a 4xx/5xx status.

use crate::params::Params;
use crate::ApiState;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use kube_insight_core::time::format_rfc3339_ms;
use kube_insight_store::{EntityQuery, Error as StoreError};
use serde_json::{json, Value};
use std::sync::Arc;

pub fn routes() -> Router<Arc<ApiState>> {
    Router::new().route("/api/v1/entities", get(entities))
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

/// `GET /api/v1/entities?cluster&namespace&workload&pod&from&to&limit`: the
/// cluster / namespace / workload / pod / container rows seen in the range.
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
    let query = EntityQuery {
        cluster: p.get("cluster").map(str::to_string),
        namespace: p.get("namespace").map(str::to_string),
        range,
        limit,
    };
    let rows = match st.store.entities(&query).await {
        Ok(r) => r,
        Err(e) => return store_error(e),
    };
    let workload = p.get("workload");
    let pod = p.get("pod");
    let out: Vec<Value> = rows
        .into_iter()
        .filter(|e| workload.is_none_or(|w| e.workload == w))
        .filter(|e| pod.is_none_or(|x| e.pod == x))
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
