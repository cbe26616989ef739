//! The Prometheus-compatible API under `/prometheus/api/v1/...`, for Grafana's
//! built-in Prometheus datasource: the same parameters (GET query string or
//! POST form), the same answer envelope (`status`, `data`, `errorType`,
//! `error`) and status codes. PromQL is evaluated by
//! [`kube_insight_promql::Engine`] over the store (see [`StoreQuerier`]).

use crate::params::Params;
use crate::{ApiState, Scope};
use async_trait::async_trait;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use kube_insight_core::{Matcher, TimeRange, TimeSeries};
use kube_insight_promql::error::{ErrorType, PromqlError, QuerierError};
use kube_insight_promql::params::{
    parse_duration_param, parse_match_selector, parse_range_params, parse_time_param,
};
use kube_insight_promql::querier::{Querier, SelectHints};
use kube_insight_promql::{Engine, EngineOptions, RollupPolicy};
use kube_insight_store::{DynStore, Error as StoreError, SelectQuery, SeriesQuery};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::sync::Arc;

pub fn routes() -> Router<Arc<ApiState>> {
    Router::new()
        .route("/prometheus/api/v1/query", get(query).post(query_post))
        .route(
            "/prometheus/api/v1/query_range",
            get(query_range).post(query_range_post),
        )
        .route("/prometheus/api/v1/series", get(series).post(series_post))
        .route("/prometheus/api/v1/labels", get(labels).post(labels_post))
        .route(
            "/prometheus/api/v1/label/{name}/values",
            get(label_values).post(label_values_post),
        )
        .route("/prometheus/api/v1/metadata", get(metadata).post(metadata))
        .route(
            "/prometheus/api/v1/query_exemplars",
            get(exemplars).post(exemplars_post),
        )
        .route(
            "/prometheus/api/v1/format_query",
            get(format_query).post(format_query_post),
        )
        .route(
            "/prometheus/api/v1/parse_query",
            get(parse_query).post(parse_query_post),
        )
        .route("/prometheus/api/v1/rules", get(rules).post(rules))
        .route("/prometheus/api/v1/alerts", get(alerts).post(alerts))
        .route(
            "/prometheus/api/v1/status/buildinfo",
            get(buildinfo).post(buildinfo),
        )
}

/// The engine reads the store through this adapter. `restrict` (the
/// token's [`crate::ClusterScope::matcher`]) is added to every selection, so
/// no expression can read a cluster outside the scope: a selector naming
/// another cluster selects nothing.
pub struct StoreQuerier {
    pub store: DynStore,
    pub restrict: Option<Matcher>,
}

impl StoreQuerier {
    pub fn new(store: DynStore, scope: &crate::ClusterScope) -> Self {
        StoreQuerier {
            store,
            restrict: scope.matcher(),
        }
    }
}

#[async_trait]
impl Querier for StoreQuerier {
    async fn select(
        &self,
        matchers: &[Matcher],
        range: TimeRange,
        hints: &SelectHints,
    ) -> Result<Vec<TimeSeries>, QuerierError> {
        let mut matchers = matchers.to_vec();
        matchers.extend(self.restrict.iter().cloned());
        let q = SelectQuery {
            matchers,
            range,
            max_series: if hints.max_series == 0 {
                usize::MAX
            } else {
                hints.max_series
            },
            max_samples: if hints.max_samples == 0 {
                usize::MAX
            } else {
                hints.max_samples
            },
            resolution: hints.resolution,
        };
        self.store.select(&q).await.map_err(|e| match e {
            StoreError::LimitExceeded {
                what: "samples",
                limit,
            } => QuerierError::TooManySamples { limit },
            StoreError::LimitExceeded { .. } => QuerierError::LimitExceeded(e.to_string()),
            e => QuerierError::Storage(e.to_string()),
        })
    }
}

fn success(data: Value) -> Response {
    Json(json!({"status": "success", "data": data})).into_response()
}

fn failure(kind: ErrorType, msg: impl Into<String>) -> Response {
    let status =
        StatusCode::from_u16(kind.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let msg = msg.into();
    if status.is_server_error() {
        tracing::warn!(error_type = kind.as_str(), error = %msg, "prometheus api error");
    }
    (
        status,
        Json(json!({"status": "error", "errorType": kind.as_str(), "error": msg})),
    )
        .into_response()
}

/// 403 for a selector naming (with `cluster="…"`) a cluster outside the
/// token's scope. Other selectors are held to the scope by the querier
/// ([`StoreQuerier::restrict`]): a regex over other clusters selects nothing.
fn out_of_scope<'a>(
    scope: &Scope,
    sets: impl IntoIterator<Item = &'a Vec<Matcher>>,
) -> Option<Response> {
    let c = sets.into_iter().flatten().find(|m| {
        m.name == "cluster"
            && m.op == kube_insight_core::MatchOp::Equal
            && !scope.0.allows(&m.value)
    })?;
    Some(
        (
            StatusCode::FORBIDDEN,
            Json(json!({
                "status": "error",
                "errorType": "forbidden",
                "error": format!(
                    "cluster {:?} is outside this token's clusters ({}): select one of them, or use a token that reads {:?}",
                    c.value,
                    scope.0.describe(),
                    c.value
                ),
            })),
        )
            .into_response(),
    )
}

/// [`out_of_scope`] for a query's selectors; a query that does not parse is
/// left to the engine, which names the error.
fn query_out_of_scope(scope: &Scope, expr: &str) -> Option<Response> {
    if scope.0.is_all() {
        return None;
    }
    let sets = kube_insight_promql::selector_matcher_sets(expr).ok()?;
    out_of_scope(scope, &sets)
}

fn promql_failure(e: PromqlError) -> Response {
    failure(e.error_type(), e.to_string())
}

fn store_failure(e: StoreError) -> Response {
    match &e {
        StoreError::LimitExceeded { .. } => failure(ErrorType::Execution, e.to_string()),
        StoreError::InvalidQuery(_) | StoreError::Core(_) => {
            failure(ErrorType::BadData, e.to_string())
        }
        _ if e.is_retryable() => failure(ErrorType::Unavailable, e.to_string()),
        _ => failure(ErrorType::Internal, e.to_string()),
    }
}

/// The engine for one request: the configured limits, and the rollup
/// policy of Thanos' `max_source_resolution` parameter (`auto` when absent).
fn engine(st: &ApiState, p: &Params) -> Result<Engine, PromqlError> {
    let rollups = match p.get("max_source_resolution") {
        Some(v) => RollupPolicy::from_param(v)?,
        None => RollupPolicy::default(),
    };
    Ok(Engine::new(EngineOptions {
        max_samples: st.config.max_samples,
        max_series: st.config.max_series,
        timeout: st.config.query_timeout,
        rollups,
        ..Default::default()
    }))
}

fn timeout_param(p: &Params) -> Result<Option<std::time::Duration>, PromqlError> {
    p.get("timeout")
        .map(|t| parse_duration_param("timeout", t))
        .transpose()
}

async fn query(State(st): State<Arc<ApiState>>, scope: Scope, RawQuery(q): RawQuery) -> Response {
    run_query(st, scope, Params::parse(q.as_deref(), None)).await
}

async fn query_post(
    State(st): State<Arc<ApiState>>,
    scope: Scope,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    run_query(st, scope, Params::parse(q.as_deref(), Some(&body))).await
}

async fn run_query(st: Arc<ApiState>, scope: Scope, p: Params) -> Response {
    let Some(expr) = p.get("query") else {
        return failure(ErrorType::BadData, "invalid parameter \"query\": missing");
    };
    if let Some(r) = query_out_of_scope(&scope, expr) {
        return r;
    }
    let time = match p.get("time") {
        Some(t) => match parse_time_param("time", t) {
            Ok(t) => t,
            Err(e) => return promql_failure(e),
        },
        None => kube_insight_core::time::now_ms(),
    };
    let timeout = match timeout_param(&p) {
        Ok(t) => t,
        Err(e) => return promql_failure(e),
    };
    let querier = StoreQuerier::new(st.store.clone(), &scope.0);
    let engine = match engine(&st, &p) {
        Ok(e) => e,
        Err(e) => return promql_failure(e),
    };
    match engine.query(&querier, expr, time, timeout).await {
        Ok(r) => result_response(&r),
        Err(e) => promql_failure(e),
    }
}

async fn query_range(
    State(st): State<Arc<ApiState>>,
    scope: Scope,
    RawQuery(q): RawQuery,
) -> Response {
    run_query_range(st, scope, Params::parse(q.as_deref(), None)).await
}

async fn query_range_post(
    State(st): State<Arc<ApiState>>,
    scope: Scope,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    run_query_range(st, scope, Params::parse(q.as_deref(), Some(&body))).await
}

async fn run_query_range(st: Arc<ApiState>, scope: Scope, p: Params) -> Response {
    let Some(expr) = p.get("query") else {
        return failure(ErrorType::BadData, "invalid parameter \"query\": missing");
    };
    if let Some(r) = query_out_of_scope(&scope, expr) {
        return r;
    }
    let (start, end, step) = match parse_range_params(
        p.get("start").unwrap_or(""),
        p.get("end").unwrap_or(""),
        p.get("step").unwrap_or(""),
    ) {
        Ok(v) => v,
        Err(e) => return promql_failure(e),
    };
    let timeout = match timeout_param(&p) {
        Ok(t) => t,
        Err(e) => return promql_failure(e),
    };
    let querier = StoreQuerier::new(st.store.clone(), &scope.0);
    let engine = match engine(&st, &p) {
        Ok(e) => e,
        Err(e) => return promql_failure(e),
    };
    match engine
        .query_range(&querier, expr, start, end, step, timeout)
        .await
    {
        Ok(r) => result_response(&r),
        Err(e) => promql_failure(e),
    }
}

fn result_response(r: &kube_insight_promql::QueryResult) -> Response {
    // The result serialises timestamps as raw JSON numbers; go through a
    // string so the envelope keeps them byte-exact.
    match serde_json::to_string(r) {
        Ok(data) => (
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            format!("{{\"status\":\"success\",\"data\":{data}}}"),
        )
            .into_response(),
        Err(e) => failure(ErrorType::Internal, format!("encoding the result: {e}")),
    }
}

/// `start`/`end` of the metadata endpoints: all time when absent.
fn metadata_range(p: &Params) -> Result<TimeRange, PromqlError> {
    let start = p
        .get("start")
        .map(|s| parse_time_param("start", s))
        .transpose()?
        .unwrap_or(i64::MIN / 4);
    let end = p
        .get("end")
        .map(|s| parse_time_param("end", s))
        .transpose()?
        .unwrap_or(i64::MAX / 4);
    TimeRange::new(start, end).map_err(|e| PromqlError::InvalidParam {
        param: "end".into(),
        reason: e.to_string(),
    })
}

/// Each `match[]` as matchers (a union of selectors).
fn match_sets(p: &Params, required: bool) -> Result<Vec<Vec<Matcher>>, PromqlError> {
    let sets: Vec<Vec<Matcher>> = p
        .all("match[]")
        .iter()
        .map(|s| parse_match_selector(s))
        .collect::<Result<_, _>>()?;
    if required && sets.is_empty() {
        return Err(PromqlError::InvalidParam {
            param: "match[]".into(),
            reason: "no match[] parameter provided".into(),
        });
    }
    Ok(sets)
}

async fn series(State(st): State<Arc<ApiState>>, scope: Scope, RawQuery(q): RawQuery) -> Response {
    run_series(st, scope, Params::parse(q.as_deref(), None)).await
}

async fn series_post(
    State(st): State<Arc<ApiState>>,
    scope: Scope,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    run_series(st, scope, Params::parse(q.as_deref(), Some(&body))).await
}

/// Runs one store lookup per `match[]` selector (all series when none is
/// given and none is required), each held to the token's clusters, and
/// returns the sorted union.
async fn union_over_selectors<T, F, Fut>(
    st: &ApiState,
    scope: &Scope,
    p: &Params,
    required: bool,
    lookup: F,
) -> Result<Vec<T>, Response>
where
    T: Ord,
    F: Fn(SeriesQuery) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<T>, StoreError>>,
{
    let (mut sets, range) = match_sets(p, required)
        .and_then(|s| Ok((s, metadata_range(p)?)))
        .map_err(promql_failure)?;
    if let Some(r) = out_of_scope(scope, &sets) {
        return Err(r);
    }
    if sets.is_empty() {
        sets.push(Vec::new());
    }
    let restrict = scope.0.matcher();
    let mut out = BTreeSet::new();
    for mut matchers in sets {
        matchers.extend(restrict.iter().cloned());
        let q = SeriesQuery {
            matchers,
            range,
            limit: st.config.max_series,
        };
        out.extend(lookup(q).await.map_err(store_failure)?);
    }
    Ok(out.into_iter().collect())
}

async fn run_series(st: Arc<ApiState>, scope: Scope, p: Params) -> Response {
    let store = st.store.clone();
    match union_over_selectors(&st, &scope, &p, true, |q| {
        let store = store.clone();
        async move { store.series(&q).await }
    })
    .await
    {
        Ok(mut rows) => {
            if let Some(l) = p
                .get("limit")
                .and_then(|l| l.parse::<usize>().ok())
                .filter(|l| *l > 0)
            {
                rows.truncate(l);
            }
            success(json!(rows))
        }
        Err(r) => r,
    }
}

async fn labels(State(st): State<Arc<ApiState>>, scope: Scope, RawQuery(q): RawQuery) -> Response {
    run_labels(st, scope, Params::parse(q.as_deref(), None)).await
}

async fn labels_post(
    State(st): State<Arc<ApiState>>,
    scope: Scope,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    run_labels(st, scope, Params::parse(q.as_deref(), Some(&body))).await
}

async fn run_labels(st: Arc<ApiState>, scope: Scope, p: Params) -> Response {
    let store = st.store.clone();
    match union_over_selectors(&st, &scope, &p, false, |q| {
        let store = store.clone();
        async move { store.label_names(&q).await }
    })
    .await
    {
        Ok(names) => success(json!(names)),
        Err(r) => r,
    }
}

async fn label_values(
    State(st): State<Arc<ApiState>>,
    scope: Scope,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    run_label_values(st, scope, name, Params::parse(q.as_deref(), None)).await
}

async fn label_values_post(
    State(st): State<Arc<ApiState>>,
    scope: Scope,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    run_label_values(st, scope, name, Params::parse(q.as_deref(), Some(&body))).await
}

async fn run_label_values(st: Arc<ApiState>, scope: Scope, name: String, p: Params) -> Response {
    if !kube_insight_core::labels::is_valid_label_name(&name) {
        return failure(ErrorType::BadData, format!("invalid label name: {name:?}"));
    }
    let store = st.store.clone();
    match union_over_selectors(&st, &scope, &p, false, |q| {
        let (store, name) = (store.clone(), name.clone());
        async move { store.label_values(&name, &q).await }
    })
    .await
    {
        Ok(values) => success(json!(values)),
        Err(r) => r,
    }
}

/// Metric metadata is not stored yet: an empty answer, as Prometheus gives
/// for unknown metrics (Grafana then shows no help text).
async fn metadata() -> Response {
    success(json!({}))
}

/// Exemplars are not stored: an empty list, once the parameters are
/// checked as Prometheus checks them.
async fn exemplars(RawQuery(q): RawQuery) -> Response {
    run_exemplars(Params::parse(q.as_deref(), None))
}

async fn exemplars_post(RawQuery(q): RawQuery, body: Bytes) -> Response {
    run_exemplars(Params::parse(q.as_deref(), Some(&body)))
}

fn run_exemplars(p: Params) -> Response {
    let checked = p
        .get("query")
        .ok_or_else(|| PromqlError::InvalidParam {
            param: "query".into(),
            reason: "missing".into(),
        })
        .and_then(|q| kube_insight_promql::parse(q).map(|_| ()))
        .and_then(|()| metadata_range(&p).map(|_| ()));
    match checked {
        Ok(()) => success(json!([])),
        Err(e) => promql_failure(e),
    }
}

async fn format_query(RawQuery(q): RawQuery) -> Response {
    run_format_query(Params::parse(q.as_deref(), None))
}

async fn format_query_post(RawQuery(q): RawQuery, body: Bytes) -> Response {
    run_format_query(Params::parse(q.as_deref(), Some(&body)))
}

/// `format_query`: the query laid out as Prometheus' prettifier does.
fn run_format_query(p: Params) -> Response {
    let Some(q) = p.get("query") else {
        return failure(ErrorType::BadData, "invalid parameter \"query\": missing");
    };
    match kube_insight_promql::format_query(q) {
        Ok(s) => success(json!(s)),
        Err(e) => promql_failure(e),
    }
}

async fn parse_query(RawQuery(q): RawQuery) -> Response {
    run_parse_query(Params::parse(q.as_deref(), None))
}

async fn parse_query_post(RawQuery(q): RawQuery, body: Bytes) -> Response {
    run_parse_query(Params::parse(q.as_deref(), Some(&body)))
}

/// `parse_query`: the syntax tree, as Prometheus (2.45 and later) writes it.
fn run_parse_query(p: Params) -> Response {
    let Some(q) = p.get("query") else {
        return failure(ErrorType::BadData, "invalid parameter \"query\": missing");
    };
    match kube_insight_promql::parse_query(q) {
        Ok(v) => success(v),
        Err(e) => promql_failure(e),
    }
}

async fn rules() -> Response {
    success(json!({"groups": []}))
}

async fn alerts() -> Response {
    success(json!({"alerts": []}))
}

/// Grafana reads `version` to pick the query features it may use:
/// kube-insight answers the PromQL of Prometheus 2.42 (every function and
/// operator, the same answers), so it reports 2.42.0.
async fn buildinfo() -> Response {
    success(json!({
        "version": "2.42.0",
        "revision": concat!("kube-insight-", env!("CARGO_PKG_VERSION")),
        "branch": "",
        "buildUser": "kube-insight",
        "buildDate": "",
        "goVersion": "",
    }))
}
