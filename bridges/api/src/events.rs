//! Events and change history under `/api/v1/…`, flat JSON arrays for
//! Grafana Infinity; times in RFC 3339 or epoch ms (`crate::params::Params`).
//!
//! - `GET /api/v1/events?cluster&namespace&kind&name&reason&type&from&to&limit`
//! - `GET /api/v1/changes?cluster&from&to&namespace&workload&kind&category&events&dependencies&limit`:
//!   one timeline, newest first, of object changes (summary, who, patch),
//!   image digest changes, Node changes, events, and the service graph's
//!   dependency changes (from the topology store). Every row has the same
//!   keys; `source` tells the signals apart (`kubernetes` or `topology`),
//!   `category` the kind of change (`object`, `image_digest`, `node`,
//!   `event`, `dependency`), and `workload` names the workload the row is
//!   about (empty when none: a ConfigMap, a Node). A dependency row is
//!   `kind: Dependency`, `name`: the edge id, `change`: `appeared` or
//!   `lost`, `namespace`/`workload`: its source end (its target end when the
//!   source is outside the cluster); the `namespace` and `workload` filters
//!   match either end. `events=false` leaves events out,
//!   `dependencies=false` dependency changes, `category` keeps the listed
//!   categories (comma-separated), `kind=dependency` keeps only dependency
//!   changes.
//!   The rows are the change feed ([`kube_insight_store::change_feed`]):
//!   status-only versions are left out unless `include=status`; a rollout
//!   or scale of a Deployment, StatefulSet or DaemonSet is one row (`group:
//!   rollout|scale`, `outcome: completed|stuck|rolled_back|in_progress`,
//!   `member_count`, `end_time`, `new_replicaset`, `images` with registry,
//!   repository, tag and digest), its members (ReplicaSets, Pods, the
//!   controller's versions and Normal events) listed under `members` with
//!   `expand=members`; other rows are `group: change`.
//! - `GET /api/v1/changes/workloads?` (same parameters): the workloads with
//!   changes in the range, `{cluster, namespace, workload, changes,
//!   first_change, last_change}`, most recently changed first (a dependency
//!   change counts for both ends). Dashboards list "the affected workloads"
//!   with it.
//! - `GET /api/v1/objects/{kind}/{namespace}/{name}?at=T&cluster` and
//!   `/api/v1/objects/{kind}/{name}` (cluster-scoped, or namespace `_`): the
//!   object as it was at T, or 404.

// Parameter helpers return a ready error response for the handler to send.
#![allow(clippy::result_large_err)]

use crate::kube::{error, store_error};
use crate::params::Params;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use kube_insight_core::parse_time_ms;
use kube_insight_core::time::{format_rfc3339_ms, now_ms};
use kube_insight_store::change_feed::{self, FeedItem, ImageChange, Outcome};
use kube_insight_store::events::{ChangeQuery, ChangeRow, EventQuery, EventStore};
use kube_insight_store::{DependencyChange, DependencyQuery, DynTopologyStore};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Rows one answer may hold at most.
pub const MAX_ROWS: usize = 10_000;

/// The change categories `category=` accepts.
pub const CATEGORIES: &[&str] = &["object", "image_digest", "node", "event", "dependency"];

#[derive(Clone)]
struct EvState {
    store: Arc<dyn EventStore>,
    topology: Option<DynTopologyStore>,
}

/// The endpoints over the event store alone (no dependency changes in
/// `/api/v1/changes`), for any outer router state (merge before the outer
/// router's auth layer so the token check covers them).
pub fn routes<S>(store: Arc<dyn EventStore>) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    routes_with_topology(store, None)
}

/// The endpoints, with the topology store's dependency changes merged into
/// `/api/v1/changes` when `topology` is given.
pub fn routes_with_topology<S>(
    store: Arc<dyn EventStore>,
    topology: Option<DynTopologyStore>,
) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    Router::new()
        .route("/api/v1/events", get(events))
        .route("/api/v1/changes", get(changes))
        .route("/api/v1/changes/workloads", get(changed_workloads))
        .route("/api/v1/objects/{kind}/{namespace}/{name}", get(object_ns))
        .route("/api/v1/objects/{kind}/{name}", get(object_cluster))
        .with_state(EvState { store, topology })
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

fn flag(p: &Params, key: &str) -> Result<bool, Response> {
    match p.get(key) {
        None | Some("true") | Some("1") => Ok(true),
        Some("false") | Some("0") => Ok(false),
        Some(other) => Err(error(
            StatusCode::BAD_REQUEST,
            format!("parameter {key}: {other:?} is not true or false"),
        )),
    }
}

/// One row of the merged timeline: its time, the (namespace, workload)
/// pairs it is about, and its JSON.
struct TimelineRow {
    at_ms: i64,
    cluster: String,
    workloads: Vec<(String, String)>,
    json: Value,
}

/// `namespace/name[/pod]` → (namespace, name); `None` for the outside and
/// other ids without a namespace.
fn node_parts(id: &str) -> Option<(&str, &str)> {
    let mut it = id.split('/');
    match (it.next(), it.next()) {
        (Some(ns), Some(name)) if !ns.is_empty() && !name.is_empty() => Some((ns, name)),
        _ => None,
    }
}

fn member_json(r: &ChangeRow) -> Value {
    json!({
        "time": format_rfc3339_ms(r.at_ms),
        "category": r.category,
        "change": r.change,
        "kind": r.kind,
        "name": r.name,
        "summary": r.summary,
        "who": r.manager,
        "reason": r.reason,
        "uid": r.uid,
        "resource_version": r.resource_version,
    })
}

fn image_json(i: &ImageChange) -> Value {
    json!({
        "container": i.container,
        "from": i.from.as_ref().map(|f| f.reference.clone()),
        "to": i.to.reference,
        "registry": i.to.registry,
        "repository": i.to.repository,
        "tag": i.to.tag,
        "digest": i.to.digest,
    })
}

/// A change-feed item as a `/api/v1/changes` row; its members listed with
/// `expand=members`.
fn feed_row(item: FeedItem, expand: bool) -> TimelineRow {
    let workload = item.workload();
    let workloads = if workload.is_empty() {
        Vec::new()
    } else {
        vec![(item.head.namespace.clone(), workload.clone())]
    };
    let summary = item.summary();
    let r = &item.head;
    let mut json = json!({
        "time": format_rfc3339_ms(r.at_ms),
        "source": "kubernetes",
        "category": r.category,
        "change": r.change,
        "cluster": r.cluster,
        "namespace": r.namespace,
        "workload": workload,
        "kind": r.kind,
        "name": r.name,
        "summary": summary,
        "who": r.manager,
        "gitops": r.gitops,
        "reason": r.reason,
        "count": r.count,
        "patch": r.patch.as_ref().map(|p| p.to_string()),
        "gap_from": r.gap_from_ms.map(format_rfc3339_ms),
        "uid": r.uid,
        "resource_version": r.resource_version,
        "group": item.kind.as_str(),
        "outcome": item.outcome.map(Outcome::as_str),
        "end_time": format_rfc3339_ms(item.end_ms),
        "member_count": item.members.len(),
        "new_replicaset": item.new_replicaset,
        "images": item.images.iter().map(image_json).collect::<Vec<_>>(),
    });
    if expand {
        json["members"] = Value::Array(item.members.iter().map(member_json).collect());
    }
    TimelineRow {
        at_ms: r.at_ms,
        cluster: r.cluster.clone(),
        workloads,
        json,
    }
}

/// A dependency change as a `/api/v1/changes` row (same keys as the
/// others; `source: topology`, `category: dependency`).
pub fn dependency_row(c: &DependencyChange) -> Value {
    dependency_timeline_row(c).json
}

fn dependency_timeline_row(c: &DependencyChange) -> TimelineRow {
    let ends: Vec<(String, String)> = [c.source.as_str(), c.target.as_str()]
        .into_iter()
        .filter_map(node_parts)
        .map(|(ns, w)| (ns.to_string(), w.to_string()))
        .collect();
    let (namespace, workload) = ends.first().cloned().unwrap_or_default();
    let arrow = if c.directed { "→" } else { "↔" };
    let what = c.kind.name();
    let json = json!({
        "time": format_rfc3339_ms(c.at_ms),
        "source": "topology",
        "category": "dependency",
        "change": what.strip_prefix("dependency ").unwrap_or(what),
        "cluster": c.cluster,
        "namespace": namespace,
        "workload": workload,
        "kind": "Dependency",
        "name": c.edge_id,
        "summary": format!("{} {arrow} {}: {what}", c.source, c.target),
        "who": null,
        "gitops": null,
        "reason": null,
        "count": null,
        "patch": null,
        "gap_from": null,
        "uid": "",
        "resource_version": "",
        "group": "change",
        "outcome": null,
        "end_time": format_rfc3339_ms(c.at_ms),
        "member_count": 0,
        "new_replicaset": null,
        "images": [],
    });
    TimelineRow {
        at_ms: c.at_ms,
        cluster: c.cluster.to_string(),
        workloads: ends,
        json,
    }
}

/// The merged timeline (newest first, at most `limit` rows) for the
/// parameters of `/api/v1/changes`.
async fn timeline(st: &EvState, p: &Params, limit: usize) -> Result<Vec<TimelineRow>, Response> {
    let range = p
        .range("from", "to")
        .map_err(|e| error(StatusCode::BAD_REQUEST, e))?;
    let include_events = flag(p, "events")?;
    let include_dependencies = flag(p, "dependencies")?;
    let categories: Option<Vec<String>> = match p.get("category") {
        None => None,
        Some(list) => {
            let mut out = Vec::new();
            for c in list.split(',').map(str::trim).filter(|c| !c.is_empty()) {
                if !CATEGORIES.contains(&c) {
                    return Err(error(
                        StatusCode::BAD_REQUEST,
                        format!(
                            "parameter category: {c:?} is not one of {}",
                            CATEGORIES.join(", ")
                        ),
                    ));
                }
                out.push(c.to_string());
            }
            Some(out)
        }
    };
    let wants = |c: &str| categories.as_ref().is_none_or(|l| l.iter().any(|x| x == c));
    let include_status = match p.get("include") {
        None => false,
        Some(list) => {
            let mut status = false;
            for x in list.split(',').map(str::trim).filter(|x| !x.is_empty()) {
                if x != "status" {
                    return Err(error(
                        StatusCode::BAD_REQUEST,
                        format!("parameter include: {x:?} is not status (the only thing left out by default)"),
                    ));
                }
                status = true;
            }
            status
        }
    };
    let expand = match p.get("expand") {
        None | Some("") => false,
        Some("members") => true,
        Some(other) => {
            return Err(error(
                StatusCode::BAD_REQUEST,
                format!("parameter expand: {other:?} is not members"),
            ))
        }
    };
    let kind = opt(p, "kind");
    let dependency_kind = kind
        .as_deref()
        .is_some_and(|k| k.eq_ignore_ascii_case("dependency"));
    let mut rows: Vec<TimelineRow> = Vec::new();

    let object_categories = ["object", "image_digest", "node", "event"];
    if !dependency_kind && object_categories.iter().any(|c| wants(c)) {
        let query = ChangeQuery {
            cluster: opt(p, "cluster"),
            namespace: opt(p, "namespace"),
            workload: opt(p, "workload"),
            kind: kind.clone(),
            range,
            // A category filter applies after the store's limit: ask for
            // the most, keep `limit` after filtering.
            limit: if categories.is_some() {
                MAX_ROWS
            } else {
                limit
            },
            include_events: include_events && wants("event"),
            include_status,
        };
        let found = change_feed::load(st.store.as_ref(), &query)
            .await
            .map_err(store_error)?;
        rows.extend(
            found
                .into_iter()
                .filter(|i| wants(&i.head.category))
                .map(|i| feed_row(i, expand)),
        );
    }

    if let Some(topology) = st.topology.as_ref().filter(|_| {
        include_dependencies && wants("dependency") && (kind.is_none() || dependency_kind)
    }) {
        let query = DependencyQuery {
            cluster: opt(p, "cluster"),
            range,
            limit: crate::topology::MAX_CHANGES,
        };
        let found = topology
            .dependency_changes(&query)
            .await
            .map_err(store_error)?;
        let namespace = p.get("namespace");
        let workload = p.get("workload");
        let end_matches = |id: &str| {
            let parts = node_parts(id);
            namespace.is_none_or(|ns| parts.is_some_and(|(n, _)| n == ns))
                && workload.is_none_or(|w| id == w || parts.is_some_and(|(_, n)| n == w))
        };
        rows.extend(
            found
                .iter()
                .filter(|c| end_matches(&c.source) || end_matches(&c.target))
                .map(dependency_timeline_row),
        );
    }
    // Newest first; a stable sort keeps each store's order among equals.
    rows.sort_by_key(|r| std::cmp::Reverse(r.at_ms));
    rows.truncate(limit);
    if expand {
        // One frame: every row has the key.
        for r in rows.iter_mut() {
            if r.json.get("members").is_none() {
                r.json["members"] = Value::Array(Vec::new());
            }
        }
    }
    Ok(rows)
}

async fn changes(State(st): State<EvState>, RawQuery(q): RawQuery) -> Response {
    let p = Params::parse(q.as_deref(), None);
    let limit = match p.usize_or("limit", 1000, MAX_ROWS) {
        Ok(l) => l,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    match timeline(&st, &p, limit).await {
        Ok(rows) => Json(rows.into_iter().map(|r| r.json).collect::<Vec<Value>>()).into_response(),
        Err(r) => r,
    }
}

async fn changed_workloads(State(st): State<EvState>, RawQuery(q): RawQuery) -> Response {
    let p = Params::parse(q.as_deref(), None);
    let limit = match p.usize_or("limit", MAX_ROWS, MAX_ROWS) {
        Ok(l) => l,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let rows = match timeline(&st, &p, MAX_ROWS).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    /// How often and when one workload changed.
    struct Touched {
        changes: u64,
        first_ms: i64,
        last_ms: i64,
    }
    // (cluster, namespace, workload) → its changes
    let mut seen: BTreeMap<(String, String, String), Touched> = BTreeMap::new();
    for r in &rows {
        for (ns, w) in &r.workloads {
            let e = seen
                .entry((r.cluster.clone(), ns.clone(), w.clone()))
                .or_insert(Touched {
                    changes: 0,
                    first_ms: i64::MAX,
                    last_ms: i64::MIN,
                });
            e.changes += 1;
            e.first_ms = e.first_ms.min(r.at_ms);
            e.last_ms = e.last_ms.max(r.at_ms);
        }
    }
    let mut out: Vec<_> = seen.into_iter().collect();
    out.sort_by(|a, b| b.1.last_ms.cmp(&a.1.last_ms).then_with(|| a.0.cmp(&b.0)));
    out.truncate(limit);
    Json(
        out.into_iter()
            .map(|((cluster, namespace, workload), t)| {
                json!({
                    "cluster": cluster,
                    "namespace": namespace,
                    "workload": workload,
                    "changes": t.changes,
                    "first_change": format_rfc3339_ms(t.first_ms),
                    "last_change": format_rfc3339_ms(t.last_ms),
                })
            })
            .collect::<Vec<Value>>(),
    )
    .into_response()
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
