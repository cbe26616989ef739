//! The topology API, with time travel:
//! - `GET /api/v1/topology?at=T[&cluster][&namespace][&focus=W&depth=N][&group=namespace|workload|pod|auto][&limit=N]`:
//!   `{cluster, at, version, group, folded, stale, nodes: [...], edges: [...]}`;
//!   `group=auto` groups by namespace until `namespace` or `focus` is given
//!   (the topology dashboard's "grouped by namespace until a namespace is
//!   chosen"); without `group`, workloads unless they exceed `limit`;
//! - `GET /api/v1/topology/nodes`, `/edges`, same parameters: flat arrays
//!   shaped as Grafana's Node Graph frames (a frame with a `source` field is
//!   the edges frame);
//! - `GET /api/v1/topology/diff?from=T1&to=T2[&factor=2]`: one row per node
//!   or edge that appeared, disappeared or (edges) changed traffic or error
//!   ratio by more than `factor`; with `&overlay=true` the union of both
//!   graphs coloured added/removed/changed/unchanged (`{nodes, edges}`, or
//!   one of them with `&frame=nodes|edges`);
//! - `format=dot` on `/api/v1/topology` and `/api/v1/topology/diff` (there:
//!   the overlay) answers Graphviz DOT (`text/vnd.graphviz`) instead of
//!   JSON: what `kube-insight topology --format dot` prints;
//! - `GET /api/v1/topology/changes?from&to[&cluster]`: "dependency
//!   appeared" / "dependency lost" records (also merged into
//!   `/api/v1/changes`, category `dependency`: see [`crate::events`]).
//!
//! Times are RFC 3339, epoch seconds or epoch milliseconds; `at` defaults to
//! now. Before the first snapshot the graph is empty (200, with a `note`);
//! a `focus` on a workload without traffic (no node at that time) is an
//! empty frame too (200), so Grafana shows "no data" rather than an error.

// Parameter helpers return a ready error response for the handler to send.
#![allow(clippy::result_large_err)]

use crate::params::Params;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use kube_insight_core::parse_time_ms;
use kube_insight_core::time::{format_rfc3339_ms, now_ms};
use kube_insight_core::topology::{
    self as topo, DiffOptions, Group, Snapshot, TopologyError, ViewOptions,
};
use kube_insight_store::{
    DependencyChange, DependencyQuery, DynTopologyStore, Error as StoreError, GraphAt,
};
use serde_json::{json, Value};
use std::sync::Arc;

/// Dependency changes one answer may list.
pub const MAX_CHANGES: usize = 100_000;

struct TopoState {
    store: DynTopologyStore,
}

/// The topology routes, to merge into the api router (before its auth layer).
pub fn routes<S: Clone + Send + Sync + 'static>(store: DynTopologyStore) -> Router<S> {
    Router::new()
        .route("/api/v1/topology", get(graph))
        .route("/api/v1/topology/nodes", get(nodes))
        .route("/api/v1/topology/edges", get(edges))
        .route("/api/v1/topology/diff", get(diff))
        .route("/api/v1/topology/changes", get(changes))
        .with_state(Arc::new(TopoState { store }))
}

fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(json!({ "error": msg.into() }))).into_response()
}

fn store_error(e: StoreError) -> Response {
    let status = match &e {
        StoreError::LimitExceeded { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        StoreError::InvalidQuery(_) | StoreError::Core(_) => StatusCode::BAD_REQUEST,
        e if e.is_retryable() => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    if status.is_server_error() {
        tracing::error!(error = %e, "api: topology store error");
    }
    error(status, e.to_string())
}

fn topo_error(e: TopologyError) -> Response {
    let status = match e {
        TopologyError::FocusNotFound { .. } => StatusCode::NOT_FOUND,
        _ => StatusCode::BAD_REQUEST,
    };
    error(status, e.to_string())
}

fn bad(msg: impl Into<String>) -> Response {
    error(StatusCode::BAD_REQUEST, msg)
}

/// `format`: `json` (the default) or `dot`; true for dot.
fn wants_dot(p: &Params) -> Result<bool, Response> {
    match p.get("format") {
        None | Some("json") => Ok(false),
        Some("dot") => Ok(true),
        Some(f) => Err(bad(format!("parameter format: {f:?} is not json or dot"))),
    }
}

/// A DOT answer.
fn dot(text: String) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/vnd.graphviz; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

fn time_param(p: &Params, key: &str) -> Result<i64, Response> {
    match p.get(key) {
        None => Ok(now_ms()),
        Some(s) => parse_time_ms(s).map_err(|e| bad(format!("parameter {key}: {e}"))),
    }
}

/// The view options from `namespace`, `focus`, `depth`, `group`, `limit`.
pub fn view_options(p: &Params) -> Result<ViewOptions, String> {
    let group = match p.get("group") {
        None => None,
        // Namespaces until a namespace (or a focus) narrows the view, then
        // the default (workloads).
        Some("auto") => {
            (p.get("namespace").is_none() && p.get("focus").is_none()).then_some(Group::Namespace)
        }
        Some(g) => Some(Group::parse(g).map_err(|e| format!("parameter group: {e}"))?),
    };
    let depth = match p.get("depth") {
        None => 1,
        Some(s) => s
            .parse::<usize>()
            .map_err(|_| format!("parameter depth: {s:?} is not a non-negative integer"))?
            .min(topo::MAX_DEPTH),
    };
    Ok(ViewOptions {
        namespace: p.get("namespace").map(str::to_string),
        focus: p.get("focus").map(str::to_string),
        depth,
        group,
        max_nodes: p.usize_or("limit", topo::DEFAULT_MAX_NODES, topo::MAX_NODES_LIMIT)?,
    })
}

/// The cluster asked for, or the only one with topology.
async fn cluster(store: &DynTopologyStore, p: &Params) -> Result<Option<String>, Response> {
    if let Some(c) = p.get("cluster") {
        return Ok(Some(c.to_string()));
    }
    let all = store.topology_clusters().await.map_err(store_error)?;
    match all.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(one.cluster.clone())),
        many => Err(bad(format!(
            "parameter cluster is required: topology is stored for {} clusters ({})",
            many.len(),
            many.iter()
                .take(10)
                .map(|c| c.cluster.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// The graph and stats of `cluster` at `at` (shared, not copied; empty
/// before the first snapshot).
async fn load(
    store: &DynTopologyStore,
    cluster: Option<&str>,
    at: i64,
) -> Result<(Arc<topo::Graph>, Arc<topo::Stats>, Option<GraphAt>), Response> {
    let Some(c) = cluster else {
        return Ok((Arc::default(), Arc::default(), None));
    };
    let Some(g) = store.graph_at(c, at).await.map_err(store_error)? else {
        return Ok((Arc::default(), Arc::default(), None));
    };
    let stats = store
        .stats_at(c, at)
        .await
        .map_err(store_error)?
        .map(|s| s.stats)
        .unwrap_or_default();
    Ok((g.graph.clone(), stats, Some(g)))
}

struct Shaped {
    cluster: Option<String>,
    at: i64,
    meta: Option<GraphAt>,
    view: topo::View,
}

async fn shaped(st: &TopoState, q: Option<&str>) -> Result<Shaped, Response> {
    let p = Params::parse(q, None);
    let at = time_param(&p, "at")?;
    let opts = view_options(&p).map_err(bad)?;
    let cluster = cluster(&st.store, &p).await?;
    let (graph, stats, meta) = load(&st.store, cluster.as_deref(), at).await?;
    // A focus on a workload without traffic (not in the graph, or no graph
    // yet) is an empty frame, not an error: Grafana shows "no data".
    let view = tokio::task::spawn_blocking(move || match topo::view_parts(&graph, &stats, &opts) {
        Err(topo::TopologyError::FocusNotFound { .. }) => {
            let unfocused = ViewOptions {
                focus: None,
                ..opts
            };
            topo::view_parts(&topo::Graph::default(), &stats, &unfocused)
        }
        other => other,
    })
    .await
    .map_err(|e| {
        error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("shaping the topology failed: {e}"),
        )
    })?
    .map_err(topo_error)?;
    Ok(Shaped {
        cluster,
        at,
        meta,
        view,
    })
}

async fn graph(State(st): State<Arc<TopoState>>, RawQuery(q): RawQuery) -> Response {
    let as_dot = match wants_dot(&Params::parse(q.as_deref(), None)) {
        Ok(d) => d,
        Err(r) => return r,
    };
    let s = match shaped(&st, q.as_deref()).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    if as_dot {
        return dot(topo::to_dot(&s.view.snapshot, None));
    }
    let mut out = json!({
        "cluster": s.cluster,
        "at": format_rfc3339_ms(s.at),
        "group": s.view.group.name(),
        "folded": s.view.folded,
        "focus": s.view.focus,
        "nodes": topo::node_rows(&s.view.snapshot, None),
        "edges": topo::edge_rows(&s.view.snapshot, None),
    });
    match &s.meta {
        Some(m) => {
            out["version"] = json!(format_rfc3339_ms(m.version_ms));
            out["first"] = json!(format_rfc3339_ms(m.first_ms));
            out["last"] = json!(format_rfc3339_ms(m.last_ms));
            out["stale"] = json!(s.at > m.last_ms.saturating_add(5 * 60_000));
        }
        None => out["note"] = json!("no topology saved at or before this time"),
    }
    Json(out).into_response()
}

async fn nodes(State(st): State<Arc<TopoState>>, RawQuery(q): RawQuery) -> Response {
    match shaped(&st, q.as_deref()).await {
        Ok(s) => Json(topo::node_rows(&s.view.snapshot, None)).into_response(),
        Err(r) => r,
    }
}

async fn edges(State(st): State<Arc<TopoState>>, RawQuery(q): RawQuery) -> Response {
    match shaped(&st, q.as_deref()).await {
        Ok(s) => Json(topo::edge_rows(&s.view.snapshot, None)).into_response(),
        Err(r) => r,
    }
}

/// Diff parameters: `factor` (> 1).
pub fn diff_options(p: &Params) -> Result<DiffOptions, String> {
    let mut o = DiffOptions::default();
    if let Some(f) = p.get("factor") {
        let v: f64 = f
            .parse()
            .map_err(|_| format!("parameter factor: {f:?} is not a number"))?;
        if !(v.is_finite() && v > 1.0) {
            return Err(format!(
                "parameter factor: {f:?} must be a number greater than 1"
            ));
        }
        o.factor = v;
    }
    Ok(o)
}

/// Flat rows of a diff: `{change, type, id, source, target, title, reason,
/// before_*, after_*}`.
pub fn diff_rows(d: &topo::Diff) -> Vec<Value> {
    let mut rows = Vec::new();
    let node = |change: &str, n: &topo::Node| {
        json!({"change": change, "type": "node", "id": n.id, "title": n.title(), "kind": n.workload_kind, "namespace": n.namespace,
               "source": null, "target": null, "reason": "", "before_bytes_per_s": null, "after_bytes_per_s": null,
               "before_error_ratio": null, "after_error_ratio": null})
    };
    let edge = |change: &str,
                e: &topo::Edge,
                reason: &str,
                b: Option<&topo::EdgeStats>,
                a: Option<&topo::EdgeStats>| {
        json!({"change": change, "type": "edge", "id": e.id, "title": e.id, "kind": if e.directed { "directed" } else { "undirected" },
               "namespace": "", "source": e.source, "target": e.target, "reason": reason,
               "before_bytes_per_s": b.and_then(|s| s.bytes_per_s), "after_bytes_per_s": a.and_then(|s| s.bytes_per_s),
               "before_error_ratio": b.and_then(|s| s.error_ratio), "after_error_ratio": a.and_then(|s| s.error_ratio)})
    };
    rows.extend(d.added_nodes.iter().map(|n| node("added", n)));
    rows.extend(d.removed_nodes.iter().map(|n| node("removed", n)));
    rows.extend(
        d.added_edges
            .iter()
            .map(|e| edge("added", e, "", None, None)),
    );
    rows.extend(
        d.removed_edges
            .iter()
            .map(|e| edge("removed", e, "", None, None)),
    );
    rows.extend(d.changed_edges.iter().map(|c| {
        edge(
            "changed",
            &c.edge,
            &c.reason,
            Some(&c.before),
            Some(&c.after),
        )
    }));
    rows
}

async fn diff(State(st): State<Arc<TopoState>>, RawQuery(q): RawQuery) -> Response {
    let p = Params::parse(q.as_deref(), None);
    let (Some(_), Some(_)) = (p.get("from"), p.get("to")) else {
        return bad("parameters from and to are required (the two moments to compare)");
    };
    let range = match p.range("from", "to") {
        Ok(r) => r,
        Err(e) => return bad(e),
    };
    let (opts, dopts) = match (view_options(&p), diff_options(&p)) {
        (Ok(o), Ok(d)) => (o, d),
        (Err(e), _) | (_, Err(e)) => return bad(e),
    };
    let as_dot = match wants_dot(&p) {
        Ok(d) => d,
        Err(r) => return r,
    };
    let cluster = match cluster(&st.store, &p).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let (a, b) = match (
        load(&st.store, cluster.as_deref(), range.start_ms).await,
        load(&st.store, cluster.as_deref(), range.end_ms).await,
    ) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(r), _) | (_, Err(r)) => return r,
    };
    // Both moments shaped alike: the same grouping, namespace and focus
    // (focus must exist in one of them), no cap until the union is known.
    let group = opts.group.unwrap_or({
        let big = |g: &topo::Graph| {
            g.nodes
                .values()
                .filter(|n| n.kind != topo::NodeKind::Pod)
                .count()
                > opts.max_nodes
        };
        if opts.namespace.is_none() && opts.focus.is_none() && (big(&a.0) || big(&b.0)) {
            Group::Namespace
        } else {
            Group::Workload
        }
    });
    let uncapped = ViewOptions {
        group: Some(group),
        max_nodes: usize::MAX / 2,
        ..opts.clone()
    };
    let shape = |g: &topo::Graph, s: &topo::Stats| match topo::view_parts(g, s, &uncapped) {
        Err(TopologyError::FocusNotFound { .. }) => Ok(Snapshot::default()),
        r => r.map(|v| v.snapshot),
    };
    let (va, vb) = match (shape(&a.0, &a.1), shape(&b.0, &b.1)) {
        (Ok(x), Ok(y)) => (x, y),
        (Err(e), _) | (_, Err(e)) => return topo_error(e),
    };
    let d = topo::diff(&va, &vb, &dopts);
    if !as_dot && p.get("overlay") != Some("true") {
        return Json(diff_rows(&d)).into_response();
    }
    let o = topo::overlay(&va, &vb, &d);
    let (snap, _) = topo::cap(
        o.snapshot,
        opts.max_nodes.clamp(2, topo::MAX_NODES_LIMIT),
        &[],
    );
    if as_dot {
        return dot(topo::to_dot(&snap, Some((&o.nodes, &o.edges))));
    }
    let nodes = topo::node_rows(&snap, Some(&o.nodes));
    let edges = topo::edge_rows(&snap, Some(&o.edges));
    match p.get("frame") {
        Some("nodes") => Json(nodes).into_response(),
        Some("edges") => Json(edges).into_response(),
        None => Json(json!({"from": format_rfc3339_ms(range.start_ms), "to": format_rfc3339_ms(range.end_ms), "group": group.name(), "nodes": nodes, "edges": edges})).into_response(),
        Some(f) => bad(format!("parameter frame: {f:?} must be nodes or edges")),
    }
}

/// Timeline rows for `/api/v1/changes`: `{time, cluster, kind, object,
/// source, target, directed, message}` with kind `dependency appeared` or
/// `dependency lost`.
pub fn change_rows(changes: &[DependencyChange]) -> Vec<Value> {
    changes
        .iter()
        .map(|c| {
            let arrow = if c.directed { "→" } else { "↔" };
            json!({
                "time": format_rfc3339_ms(c.at_ms),
                "cluster": c.cluster,
                "kind": c.kind.name(),
                "object": c.edge_id,
                "source": c.source,
                "target": c.target,
                "directed": c.directed,
                "message": format!("{} {arrow} {}: {}", c.source, c.target, c.kind.name()),
            })
        })
        .collect()
}

async fn changes(State(st): State<Arc<TopoState>>, RawQuery(q): RawQuery) -> Response {
    let p = Params::parse(q.as_deref(), None);
    let range = match p.range("from", "to") {
        Ok(r) => r,
        Err(e) => return bad(e),
    };
    let limit = match p.usize_or("limit", MAX_CHANGES, MAX_CHANGES) {
        Ok(l) => l,
        Err(e) => return bad(e),
    };
    let query = DependencyQuery {
        cluster: p.get("cluster").map(str::to_string),
        range,
        limit,
    };
    match st.store.dependency_changes(&query).await {
        Ok(c) => Json(change_rows(&c)).into_response(),
        Err(e) => store_error(e),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use kube_insight_store::conformance_topology::sample;
    use kube_insight_store::{StoreOptions, TopologyStore};
    use kube_insight_store_sqlite::topology::SqliteTopologyStore;
    use tower::ServiceExt;

    const T0: i64 = 1_764_000_000_000;

    async fn app() -> (Router, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteTopologyStore::open(&dir.path().join("insight.db"), StoreOptions::default())
            .await
            .unwrap();
        s.save_snapshot("prod", T0, sample(0)).await.unwrap();
        s.save_snapshot("prod", T0 + 60_000, sample(1))
            .await
            .unwrap();
        let store: DynTopologyStore = Arc::new(s);
        (routes(store), dir)
    }

    async fn get(app: &Router, uri: &str) -> (StatusCode, Value) {
        let r = app
            .clone()
            .oneshot(Request::get(uri).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = r.status();
        let body = axum::body::to_bytes(r.into_body(), 1 << 24).await.unwrap();
        (status, serde_json::from_slice(&body).unwrap())
    }

    #[tokio::test]
    async fn graph_nodes_and_edges_at_a_time() {
        let (app, _d) = app().await;
        let (s, v) = get(&app, &format!("/api/v1/topology?at={}", T0 + 1000)).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(v["cluster"], "prod");
        assert_eq!(v["group"], "workload");
        let want = topo::group(&sample(0), Group::Workload);
        assert_eq!(v["edges"].as_array().unwrap().len(), want.graph.edges.len());
        let (s, nodes) = get(&app, &format!("/api/v1/topology/nodes?at={}", T0 + 61_000)).await;
        assert_eq!(s, StatusCode::OK);
        let want = topo::group(&sample(1), Group::Workload);
        assert_eq!(nodes.as_array().unwrap().len(), want.graph.nodes.len());
        assert!(nodes[0].get("source").is_none());
        let (_, edges) = get(
            &app,
            "/api/v1/topology/edges?at=1764000061&focus=w0&depth=1",
        )
        .await;
        let ids: Vec<&str> = edges
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["outside--shop/w0", "shop/w0--shop/w1"]);
        // auto: namespaces until a namespace or a focus is chosen.
        let (s, v) = get(&app, "/api/v1/topology?at=1764000061&group=auto").await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(v["group"], "namespace");
        assert!(v["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["id"] == "shop"));
        for q in ["namespace=shop", "focus=w0", "namespace=All&focus=w0"] {
            let (s, v) = get(
                &app,
                &format!("/api/v1/topology?at=1764000061&group=auto&{q}"),
            )
            .await;
            assert_eq!(s, StatusCode::OK, "{q}: {v}");
            assert_eq!(v["group"], "workload", "{q}");
        }
        // namespace=All (a Grafana variable set to All) is no namespace.
        let (_, all) = get(&app, "/api/v1/topology?at=1764000061&namespace=All").await;
        let (_, none) = get(&app, "/api/v1/topology?at=1764000061").await;
        assert_eq!(all["nodes"], none["nodes"]);
        let (s, v) = get(&app, "/api/v1/topology?at=1764000061&group=pod").await;
        assert_eq!(s, StatusCode::OK);
        assert!(v["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["id"] == "shop/w0/w0-pod"));
        // Before the first snapshot: empty, with a note.
        let (s, v) = get(&app, "/api/v1/topology?at=1763000000").await;
        assert_eq!(s, StatusCode::OK);
        assert!(v["nodes"].as_array().unwrap().is_empty() && v["note"].is_string());
    }

    #[tokio::test]
    async fn bad_parameters_name_themselves() {
        let (app, _d) = app().await;
        for (uri, want) in [
            ("/api/v1/topology?at=soon", "parameter at"),
            ("/api/v1/topology?group=rack", "parameter group"),
            ("/api/v1/topology?depth=-1", "parameter depth"),
            ("/api/v1/topology/diff?from=1", "from and to"),
            (
                "/api/v1/topology/diff?from=1&to=2&factor=0.5",
                "parameter factor",
            ),
        ] {
            let (s, v) = get(&app, uri).await;
            assert_eq!(s, StatusCode::BAD_REQUEST, "{uri}: {v}");
            assert!(v["error"].as_str().unwrap().contains(want), "{uri}: {v}");
        }
        // A focus on a workload without traffic: an empty frame, not 404.
        for uri in [
            format!("/api/v1/topology?at={}&focus=nothing", T0 + 1),
            format!("/api/v1/topology?at={}&focus=shop/idle", T0 - 3_600_000),
        ] {
            let (s, v) = get(&app, &uri).await;
            assert_eq!(s, StatusCode::OK, "{uri}: {v}");
            assert!(v["nodes"].as_array().unwrap().is_empty(), "{uri}: {v}");
        }
        for path in ["nodes", "edges"] {
            let uri = format!("/api/v1/topology/{path}?at={}&focus=shop/idle", T0 + 1);
            let (s, v) = get(&app, &uri).await;
            assert_eq!(s, StatusCode::OK, "{uri}: {v}");
            assert_eq!(v, json!([]), "{uri}");
        }
    }

    #[tokio::test]
    async fn diff_overlay_and_changes() {
        let (app, _d) = app().await;
        let uri = format!("/api/v1/topology/diff?from={}&to={}", T0, T0 + 60_000);
        let (s, rows) = get(&app, &uri).await;
        assert_eq!(s, StatusCode::OK, "{rows}");
        let rows = rows.as_array().unwrap();
        assert!(
            rows.iter()
                .any(|r| r["change"] == "added" && r["id"] == "shop/w6"),
            "{rows:?}"
        );
        assert!(
            rows.iter()
                .any(|r| r["change"] == "changed" && r["reason"] == "traffic"),
            "{rows:?}"
        );
        let (_, o) = get(&app, &format!("{uri}&overlay=true")).await;
        let w6 = o["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["id"] == "shop/w6")
            .unwrap();
        assert_eq!(w6["color"], topo::Change::Added.color());
        let r = app
            .clone()
            .oneshot(
                Request::get(format!("{uri}&format=dot"))
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let text = axum::body::to_bytes(r.into_body(), 1 << 24).await.unwrap();
        let text = String::from_utf8(text.to_vec()).unwrap();
        assert!(
            text.starts_with("digraph topology") && text.contains(topo::Change::Added.color()),
            "{text}"
        );
        let (s, v) = get(&app, &format!("{uri}&format=png")).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
        let (_, e) = get(&app, &format!("{uri}&overlay=true&frame=edges")).await;
        assert!(e
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["source"].is_string() && e["color"].is_string()));
        let (_, c) = get(
            &app,
            &format!("/api/v1/topology/changes?from={}&to={}", T0, T0 + 60_000),
        )
        .await;
        let c = c.as_array().unwrap();
        assert!(!c.is_empty());
        assert!(c
            .iter()
            .all(|r| r["kind"] == "dependency appeared" || r["kind"] == "dependency lost"));
    }
}
