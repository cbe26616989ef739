//! Events and change history under `/api/v1/…`, flat JSON arrays for
//! Grafana Infinity; times in RFC 3339 or epoch ms (`crate::params::Params`).
//!
//! - `GET /api/v1/events?cluster&namespace&kind&name&reason&type&from&to&limit`
//! - `GET /api/v1/changes?cluster&from&to&namespace&workload&kind&events&limit`:
//!   one timeline, newest first, of object changes (summary, who, patch),
//!   image digest changes, Node changes and events (`events=false` leaves
//!   events out).
//! - `GET /api/v1/objects/{kind}/{namespace}/{name}?at=T&cluster` and
//!   `/api/v1/objects/{kind}/{name}` (cluster-scoped, or namespace `_`): the
//!   object as it was at T, or 404.

use crate::kube::{error, store_error};
use crate::params::Params;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use kube_insight_core::parse_time_ms;
use kube_insight_core::time::{format_rfc3339_ms, now_ms};
use kube_insight_store::events::{ChangeQuery, EventQuery, EventStore};
use serde_json::{json, Value};
use std::sync::Arc;

/// Rows one answer may hold at most.
pub const MAX_ROWS: usize = 10_000;

#[derive(Clone)]
struct EvState {
    store: Arc<dyn EventStore>,
}

/// The three endpoints, for any outer router state (merge before the
/// outer router's auth layer so the token check covers them).
pub fn routes<S>(store: Arc<dyn EventStore>) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    Router::new()
        .route("/api/v1/events", get(events))
        .route("/api/v1/changes", get(changes))
        .route("/api/v1/objects/{kind}/{namespace}/{name}", get(object_ns))
        .route("/api/v1/objects/{kind}/{name}", get(object_cluster))
        .with_state(EvState { store })
}

fn opt(p: &Params, k: &str) -> Option<String> {
    p.get(k).map(str::to_string)
}

async fn events(State(st): State<EvState>, RawQuery(q): RawQuery) -> Response {
    let p = Params::parse(q.as_deref(), None);
    let range = match p.range("from", "to") {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let limit = match p.usize_or("limit", 1000, MAX_ROWS) {
        Ok(l) => l,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let query = EventQuery {
        cluster: opt(&p, "cluster"),
        namespace: opt(&p, "namespace"),
        kind: opt(&p, "kind"),
        name: opt(&p, "name"),
        reason: opt(&p, "reason"),
        event_type: opt(&p, "type"),
        range,
        limit,
    };
    let rows = match st.store.query_events(&query).await {
        Ok(r) => r,
        Err(e) => return store_error(e),
    };
    let out: Vec<Value> = rows
        .into_iter()
        .map(|e| {
            json!({
                "time": format_rfc3339_ms(e.last_ms),
                "first_time": format_rfc3339_ms(e.first_ms),
                "last_time": format_rfc3339_ms(e.last_ms),
                "cluster": e.cluster,
                "namespace": if e.involved.namespace.is_empty() { e.namespace.clone() } else { e.involved.namespace.clone() },
                "kind": e.involved.kind,
                "name": e.involved.name,
                "type": e.event_type,
                "reason": e.reason,
                "message": e.message,
                "count": e.count,
                "source": e.source_component,
                "host": e.source_host,
                "uid": e.uid,
                "event_name": e.name,
                "origin": e.origin.as_str(),
            })
        })
        .collect();
    Json(out).into_response()
}

async fn changes(State(st): State<EvState>, RawQuery(q): RawQuery) -> Response {
    let p = Params::parse(q.as_deref(), None);
    let range = match p.range("from", "to") {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let limit = match p.usize_or("limit", 1000, MAX_ROWS) {
        Ok(l) => l,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let include_events = match p.get("events") {
        None | Some("true") | Some("1") => true,
        Some("false") | Some("0") => false,
        Some(other) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("parameter events: {other:?} is not true or false"),
            )
        }
    };
    let query = ChangeQuery {
        cluster: opt(&p, "cluster"),
        namespace: opt(&p, "namespace"),
        workload: opt(&p, "workload"),
        kind: opt(&p, "kind"),
        range,
        limit,
        include_events,
    };
    let rows = match st.store.changes(&query).await {
        Ok(r) => r,
        Err(e) => return store_error(e),
    };
    let out: Vec<Value> = rows
        .into_iter()
        .map(|r| {
            json!({
                "time": format_rfc3339_ms(r.at_ms),
                "category": r.category,
                "change": r.change,
                "cluster": r.cluster,
                "namespace": r.namespace,
                "kind": r.kind,
                "name": r.name,
                "summary": r.summary,
                "who": r.manager,
                "gitops": r.gitops,
                "reason": r.reason,
                "count": r.count,
                "patch": r.patch.map(|p| p.to_string()),
                "gap_from": r.gap_from_ms.map(format_rfc3339_ms),
                "uid": r.uid,
                "resource_version": r.resource_version,
            })
        })
        .collect();
    Json(out).into_response()
}

async fn object_ns(
    State(st): State<EvState>,
    Path((kind, namespace, name)): Path<(String, String, String)>,
    RawQuery(q): RawQuery,
) -> Response {
    let ns = if namespace == "_" || namespace == "-" {
        String::new()
    } else {
        namespace
    };
    object(st, kind, ns, name, q).await
}

async fn object_cluster(
    State(st): State<EvState>,
    Path((kind, name)): Path<(String, String)>,
    RawQuery(q): RawQuery,
) -> Response {
    object(st, kind, String::new(), name, q).await
}

async fn object(
    st: EvState,
    kind: String,
    namespace: String,
    name: String,
    q: Option<String>,
) -> Response {
    let p = Params::parse(q.as_deref(), None);
    let at = match p.get("at") {
        None => now_ms(),
        Some(s) => match parse_time_ms(s) {
            Ok(t) => t,
            Err(e) => return error(StatusCode::BAD_REQUEST, format!("parameter at: {e}")),
        },
    };
    match st
        .store
        .object_at(p.get("cluster"), &kind, &namespace, &name, at)
        .await
    {
        Ok(Some(o)) => Json(json!({
            "cluster": o.cluster,
            "kind": o.kind,
            "namespace": o.namespace,
            "name": o.name,
            "uid": o.uid,
            "resource_version": o.resource_version,
            "version_time": format_rfc3339_ms(o.version_ms),
            "change": o.change.as_str(),
            "who": o.manager,
            "at": format_rfc3339_ms(at),
            "object": o.object,
        }))
        .into_response(),
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            format!(
                "{kind} {}{name} did not exist at {} (or is not watched)",
                if namespace.is_empty() {
                    String::new()
                } else {
                    format!("{namespace}/")
                },
                format_rfc3339_ms(at)
            ),
        ),
        Err(e) => store_error(e),
    }
}
