//! The logs API, shaped for Grafana's logs panel through the Infinity
//! datasource:
//!
//! - `GET /api/v1/logs?cluster&namespace&workload&pod&container&from&to&contains&regex&level&limit&cursor`
//!   answers a flat JSON array, newest first, one object per line:
//!   `{"time": "2024-05-31T16:08:37.123456789Z", "line", "level", "stream",
//!   "cluster", "namespace", "workload", "pod", "container", "partial",
//!   "fields"}` (`time` is RFC 3339 UTC with nanoseconds; `level` is
//!   `trace|debug|info|warn|error|fatal` or `unknown`; `fields` is the
//!   record's extra JSON fields as a string, or absent). In Infinity, map
//!   `time` as the timestamp and `line` as the body (`format: logs`).
//!
//!   **Paging:** when more rows may follow, the answer carries the response
//!   header `X-Next-Cursor: <cursor>`; pass it back as `cursor=<cursor>` with
//!   the same other parameters for the next (older) page. The last page has
//!   no such header. With `envelope=true` the answer is instead
//!   `{"rows": [...], "next_cursor": "<cursor>" | null}`, for clients that
//!   cannot read headers (Infinity's cursor pagination reads
//!   `next_cursor`).
//! - `GET /api/v1/logs/rate?…&step` answers `[{"time", "level", "count"}]`:
//!   matching lines per step (default: the range / 300, at least 1 s) and
//!   level, buckets aligned to the epoch, empty buckets left out.
//!   With `by=workload`, `workload` is a list (comma-separated or repeated,
//!   at most [`MAX_RATE_WORKLOADS`]) and the answer is
//!   `[{"time", "workload", "count"}]`: one series per listed workload, the
//!   selected levels summed (what a Grafana multi-value variable renders
//!   with `${var:csv}`); an empty list answers `[]`.
//!
//! `from`/`to` are RFC 3339 or epoch (s or ms), default the last hour, both
//! inclusive. `level` is a comma list (`error,warn`; `unknown` for lines
//! without a level). `limit` defaults to 1000 and is capped at 5000.
//! Queries that would scan too much answer 422 with the reason.

// `super::` (not `crate::`) so that tests/logs_api.rs can compile this
// file before it is declared in lib.rs.
use super::kube::{error, store_error};
use super::params::Params;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use kube_insight_core::log::{format_rfc3339_ns, LineFilter};
use kube_insight_core::time::format_rfc3339_ms;
use kube_insight_core::{parse_duration, Level};
use kube_insight_store::logs::DEFAULT_MAX_SCAN_BYTES;
use kube_insight_store::{LogCursor, LogQuery, LogRateQuery, LogSelector, LogStore};
use serde_json::{json, Value};
use std::sync::Arc;

/// Workloads one `by=workload` rate answer may list.
pub const MAX_RATE_WORKLOADS: usize = 50;

/// The response header holding the cursor of the next page.
pub const NEXT_CURSOR_HEADER: &str = "x-next-cursor";

/// Limits of the logs endpoints.
#[derive(Debug, Clone)]
pub struct LogsApiConfig {
    pub default_limit: usize,
    pub max_limit: usize,
    /// Raw bytes one query may decompress before answering 422.
    pub max_scan_bytes: usize,
    /// Buckets one rate answer may hold.
    pub max_points: usize,
}

impl Default for LogsApiConfig {
    fn default() -> Self {
        LogsApiConfig {
            default_limit: 1000,
            max_limit: 5000,
            max_scan_bytes: DEFAULT_MAX_SCAN_BYTES,
            max_points: 11_000,
        }
    }
}

struct LogsState {
    store: Arc<dyn LogStore>,
    config: LogsApiConfig,
}

/// The logs routes, with their own state, to merge into the api router
/// (before its auth and telemetry layers).
pub fn routes<S: Clone + Send + Sync + 'static>(logs: Arc<dyn LogStore>) -> Router<S> {
    routes_with(logs, LogsApiConfig::default())
}

pub fn routes_with<S: Clone + Send + Sync + 'static>(
    logs: Arc<dyn LogStore>,
    config: LogsApiConfig,
) -> Router<S> {
    Router::new()
        .route("/api/v1/logs", get(logs_page))
        .route("/api/v1/logs/rate", get(logs_rate))
        .with_state(Arc::new(LogsState {
            store: logs,
            config,
        }))
}

/// The selector, range, filter and levels shared by both endpoints.
struct Common {
    selector: LogSelector,
    range: kube_insight_core::TimeRange,
    filter: LineFilter,
    levels: Vec<Option<Level>>,
}

fn common(p: &Params) -> Result<Common, String> {
    let range = p.range("from", "to")?;
    let filter = LineFilter::new(p.get("contains"), p.get("regex"))
        .map_err(|e| format!("parameter regex/contains: {e}"))?;
    let mut levels = Vec::new();
    for raw in p.all("level").iter().flat_map(|v| v.split(',')) {
        let l = raw.trim();
        if l.is_empty() {
            continue;
        }
        if l.eq_ignore_ascii_case("unknown") || l.eq_ignore_ascii_case("none") {
            levels.push(None);
            continue;
        }
        match Level::parse(l) {
            Some(level) => levels.push(Some(level)),
            None => {
                return Err(format!(
                    "parameter level: {l:?} is not a level; use trace, debug, info, warn, error, fatal or unknown"
                ))
            }
        }
    }
    let s = |k: &str| p.get(k).map(str::to_string);
    Ok(Common {
        selector: LogSelector {
            cluster: s("cluster"),
            namespace: s("namespace"),
            workload: s("workload"),
            pod: s("pod"),
            container: s("container"),
        },
        range,
        filter,
        levels,
    })
}

fn level_name(l: Option<Level>) -> &'static str {
    l.map_or("unknown", Level::as_str)
}

async fn logs_page(State(st): State<Arc<LogsState>>, RawQuery(q): RawQuery) -> Response {
    let p = Params::parse(q.as_deref(), None);
    let c = match common(&p) {
        Ok(c) => c,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let limit = match p.usize_or("limit", st.config.default_limit, st.config.max_limit) {
        Ok(l) => l,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let cursor = match p.get("cursor").map(LogCursor::decode).transpose() {
        Ok(c) => c,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("parameter cursor: {e}")),
    };
    let query = LogQuery {
        selector: c.selector,
        range: c.range,
        filter: c.filter,
        levels: c.levels,
        limit,
        cursor,
        max_scan_bytes: st.config.max_scan_bytes,
    };
    let page = match st.store.query_logs(&query).await {
        Ok(p) => p,
        Err(e) => return store_error(e),
    };
    let rows: Vec<Value> = page
        .rows
        .into_iter()
        .map(|r| {
            let mut o = json!({
                "time": format_rfc3339_ns(r.record.timestamp_ns),
                "line": r.record.line,
                "level": level_name(r.record.level),
                "stream": r.record.stream.as_str(),
                "cluster": r.key.cluster,
                "namespace": r.key.namespace,
                "workload": r.workload.unwrap_or_default(),
                "pod": r.key.pod,
                "container": r.key.container,
                "partial": r.record.partial,
            });
            if let (Some(f), Some(obj)) = (r.record.fields, o.as_object_mut()) {
                obj.insert("fields".into(), Value::String(f));
            }
            o
        })
        .collect();
    let next = page.next_cursor.map(|c| c.encode());
    let mut resp = if p.get("envelope") == Some("true") {
        Json(json!({ "rows": rows, "next_cursor": next })).into_response()
    } else {
        Json(rows).into_response()
    };
    if let Some(v) = next.and_then(|n| HeaderValue::from_str(&n).ok()) {
        resp.headers_mut()
            .insert(HeaderName::from_static(NEXT_CURSOR_HEADER), v);
    }
    resp
}

async fn logs_rate(State(st): State<Arc<LogsState>>, RawQuery(q): RawQuery) -> Response {
    let p = Params::parse(q.as_deref(), None);
    let c = match common(&p) {
        Ok(c) => c,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let step_ms = match p.get("step") {
        Some(s) => match parse_duration(s) {
            Ok(d) if d.as_millis() > 0 => d.as_millis().min(i64::MAX as u128) as i64,
            _ => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "parameter step: {s:?} is not a positive duration such as 30s, 1m or 60"
                    ),
                )
            }
        },
        None => {
            let span = c.range.end_ms.saturating_sub(c.range.start_ms);
            (span / 300).max(1000)
        }
    };
    match p.get("by") {
        None | Some("level") => {}
        Some("workload") => return rate_by_workload(&st, &p, c, step_ms).await,
        Some(other) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("parameter by: {other:?} must be level or workload"),
            )
        }
    }
    let query = LogRateQuery {
        selector: c.selector,
        range: c.range,
        filter: c.filter,
        levels: c.levels,
        step_ms,
        max_scan_bytes: st.config.max_scan_bytes,
        max_points: st.config.max_points,
    };
    match st.store.log_rate(&query).await {
        Ok(points) => Json(
            points
                .into_iter()
                .map(|pt| {
                    json!({
                        "time": format_rfc3339_ms(pt.timestamp_ms),
                        "level": level_name(pt.level),
                        "count": pt.count,
                    })
                })
                .collect::<Vec<Value>>(),
        )
        .into_response(),
        Err(e) => store_error(e),
    }
}

/// `by=workload`: one rate query per listed workload, levels summed.
async fn rate_by_workload(st: &LogsState, p: &Params, c: Common, step_ms: i64) -> Response {
    let mut workloads: Vec<&str> = Vec::new();
    for w in p.all("workload").iter().flat_map(|v| v.split(',')) {
        let w = w.trim();
        if !w.is_empty() && !workloads.contains(&w) {
            workloads.push(w);
        }
    }
    if workloads.len() > MAX_RATE_WORKLOADS {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "parameter workload: {} workloads listed, at most {MAX_RATE_WORKLOADS} with by=workload; narrow the selection",
                workloads.len()
            ),
        );
    }
    let mut rows: Vec<(i64, &str, u64)> = Vec::new();
    for w in workloads {
        let mut selector = c.selector.clone();
        selector.workload = Some(w.to_string());
        let query = LogRateQuery {
            selector,
            range: c.range,
            filter: c.filter.clone(),
            levels: c.levels.clone(),
            step_ms,
            max_scan_bytes: st.config.max_scan_bytes,
            max_points: st.config.max_points,
        };
        let points = match st.store.log_rate(&query).await {
            Ok(p) => p,
            Err(e) => return store_error(e),
        };
        let mut per_bucket: std::collections::BTreeMap<i64, u64> = Default::default();
        for pt in points {
            *per_bucket.entry(pt.timestamp_ms).or_default() += pt.count;
        }
        rows.extend(per_bucket.into_iter().map(|(t, n)| (t, w, n)));
    }
    rows.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(b.1)));
    Json(
        rows.into_iter()
            .map(|(t, w, n)| json!({"time": format_rfc3339_ms(t), "workload": w, "count": n}))
            .collect::<Vec<Value>>(),
    )
    .into_response()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use kube_insight_core::log::{LogRecord, LogStreamKey, LogStreamMeta};
    use kube_insight_store::{LogBatch, LogStreamBatch, StoreOptions};
    use kube_insight_store_sqlite::logs::SqliteLogStore;
    use tower::ServiceExt;

    const MS: i64 = 1_000_000;

    async fn app() -> (Router, tempfile::TempDir, i64) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteLogStore::open(&dir.path().join("insight.db"), StoreOptions::default())
            .await
            .unwrap();
        let t = (kube_insight_core::time::now_ms() - 600_000) * MS;
        let recs = (0..25)
            .map(|i| LogRecord {
                timestamp_ns: t + i * MS + 7,
                line: if i % 5 == 0 {
                    format!("ERROR request {i} failed")
                } else {
                    format!("INFO request {i} ok")
                },
                level: Some(if i % 5 == 0 {
                    Level::Error
                } else {
                    Level::Info
                }),
                fields: (i == 24).then(|| "{\"trace\":\"abc\"}".to_string()),
                ..Default::default()
            })
            .collect();
        store
            .write_logs(LogBatch {
                cluster: "prod".into(),
                streams: vec![LogStreamBatch {
                    key: LogStreamKey::new("prod", "shop", "api-1", "api"),
                    meta: LogStreamMeta::default(),
                    records: recs,
                }],
            })
            .await
            .unwrap();
        let router: Router = routes(Arc::new(store));
        (router, dir, t)
    }

    async fn get(app: &Router, uri: &str) -> (StatusCode, Option<String>, Value) {
        let r = app
            .clone()
            .oneshot(
                axum::http::Request::get(uri)
                    .body(axum::body::Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        let status = r.status();
        let cursor = r
            .headers()
            .get(NEXT_CURSOR_HEADER)
            .map(|v| v.to_str().unwrap().to_string());
        let body = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
        (status, cursor, serde_json::from_slice(&body).unwrap())
    }

    #[tokio::test]
    async fn pages_newest_first_with_a_cursor_header_and_grafana_fields() {
        let (app, _dir, t) = app().await;
        let from = t / MS - 1;
        let (s, cursor, body) = get(
            &app,
            &format!("/api/v1/logs?namespace=shop&from={from}&limit=10"),
        )
        .await;
        assert_eq!(s, 200, "{body}");
        let rows = body.as_array().unwrap();
        assert_eq!(rows.len(), 10);
        let first = &rows[0];
        assert_eq!(first["line"], "INFO request 24 ok");
        assert_eq!(first["time"], format_rfc3339_ns(t + 24 * MS + 7));
        assert!(
            first["time"].as_str().unwrap().ends_with("007Z"),
            "nanoseconds kept: {first}"
        );
        assert_eq!(first["level"], "info");
        assert_eq!(first["stream"], "stdout");
        assert_eq!(
            (
                first["namespace"].as_str(),
                first["pod"].as_str(),
                first["container"].as_str()
            ),
            (Some("shop"), Some("api-1"), Some("api"))
        );
        assert_eq!(first["fields"], "{\"trace\":\"abc\"}");
        assert!(rows[1].get("fields").is_none());
        let mut all: Vec<String> = rows
            .iter()
            .map(|r| r["line"].as_str().unwrap().to_string())
            .collect();
        let mut cursor = cursor.expect("more pages");
        loop {
            let (s, next, body) = get(
                &app,
                &format!("/api/v1/logs?namespace=shop&from={from}&limit=10&cursor={cursor}"),
            )
            .await;
            assert_eq!(s, 200);
            all.extend(
                body.as_array()
                    .unwrap()
                    .iter()
                    .map(|r| r["line"].as_str().unwrap().to_string()),
            );
            match next {
                Some(n) => cursor = n,
                None => break,
            }
        }
        assert_eq!(all.len(), 25);
        assert_eq!(all.last().unwrap(), "ERROR request 0 failed");
        // The envelope form carries the cursor in the body.
        let (_, _, body) = get(
            &app,
            &format!("/api/v1/logs?from={from}&limit=24&envelope=true"),
        )
        .await;
        assert_eq!(body["rows"].as_array().unwrap().len(), 24);
        assert!(body["next_cursor"].is_string());
    }

    #[tokio::test]
    async fn filters_and_rate() {
        let (app, _dir, t) = app().await;
        let from = t / MS - 1;
        let (_, cursor, body) = get(
            &app,
            &format!("/api/v1/logs?from={from}&level=error&contains=failed"),
        )
        .await;
        assert_eq!(body.as_array().unwrap().len(), 5);
        assert_eq!(cursor, None);
        let (_, _, body) = get(
            &app,
            &format!("/api/v1/logs?from={from}&regex=request%20(1%7C2)%5Cd%20&level=info,unknown"),
        )
        .await;
        assert_eq!(
            body.as_array().unwrap().len(),
            12,
            "10-24 less the errors 10, 15, 20: {body}"
        );
        let (_, _, body) = get(&app, &format!("/api/v1/logs?from={from}&pod=nope")).await;
        assert!(body.as_array().unwrap().is_empty());
        let (s, _, body) = get(
            &app,
            &format!("/api/v1/logs/rate?from={from}&to={}&step=1h", t / MS + 1000),
        )
        .await;
        assert_eq!(s, 200, "{body}");
        let total: u64 = body
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["count"].as_u64().unwrap())
            .sum();
        assert_eq!(total, 25);
        assert!(body
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["level"] == "error" && p["count"] == 5));
    }

    #[tokio::test]
    async fn rate_by_workload_sums_levels_per_listed_workload() {
        let (app, dir, t) = app().await;
        // A second workload with 3 error lines, in the same store file.
        let store = SqliteLogStore::open(&dir.path().join("insight.db"), StoreOptions::default())
            .await
            .unwrap();
        let meta = LogStreamMeta {
            workload: Some(kube_insight_core::Workload {
                kind: "Deployment".into(),
                name: "web".into(),
            }),
            ..Default::default()
        };
        store
            .write_logs(LogBatch {
                cluster: "prod".into(),
                streams: vec![LogStreamBatch {
                    key: LogStreamKey::new("prod", "shop", "web-7d9f8-abcde", "web"),
                    meta,
                    records: (0..3)
                        .map(|i| LogRecord {
                            timestamp_ns: t + i * MS,
                            line: format!("ERROR web {i}"),
                            level: Some(Level::Error),
                            ..Default::default()
                        })
                        .collect(),
                }],
            })
            .await
            .unwrap();
        let from = t / MS - 1;
        let to = t / MS + 60_000;
        let (s, _, body) = get(
            &app,
            &format!("/api/v1/logs/rate?from={from}&to={to}&step=1h&level=error&by=workload&workload=web,nope&workload=web"),
        )
        .await;
        assert_eq!(s, 200, "{body}");
        let rows = body.as_array().unwrap();
        assert!(!rows.is_empty());
        assert!(rows
            .iter()
            .all(|r| r["workload"] == "web" && r.get("level").is_none()));
        let total: u64 = rows.iter().map(|r| r["count"].as_u64().unwrap()).sum();
        assert_eq!(
            total, 3,
            "web's errors only, listed twice but counted once: {body}"
        );
        // Levels are summed: every level of web is 3 lines too.
        let (_, _, body) = get(
            &app,
            &format!("/api/v1/logs/rate?from={from}&to={to}&step=1h&by=workload&workload=web"),
        )
        .await;
        let rows = body.as_array().unwrap();
        assert_eq!(rows.len(), 1, "one bucket: {body}");
        assert_eq!(rows[0]["count"], 3);
        // An empty list answers nothing; by=level is the default shape.
        let (s, _, body) = get(
            &app,
            &format!("/api/v1/logs/rate?from={from}&to={to}&by=workload&workload="),
        )
        .await;
        assert_eq!((s, body), (StatusCode::OK, json!([])));
        let (s, _, body) = get(
            &app,
            &format!(
                "/api/v1/logs/rate?from={from}&to={to}&step=1h&by=level&namespace=All&pod=All"
            ),
        )
        .await;
        assert_eq!(s, 200);
        let total: u64 = body
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["count"].as_u64().unwrap())
            .sum();
        assert_eq!(total, 28, "All is no filter: both streams: {body}");
        let many: Vec<String> = (0..=MAX_RATE_WORKLOADS).map(|i| format!("w{i}")).collect();
        let (s, _, body) = get(
            &app,
            &format!(
                "/api/v1/logs/rate?from={from}&to={to}&by=workload&workload={}",
                many.join(",")
            ),
        )
        .await;
        assert_eq!(s, 422, "{body}");
        assert!(body["error"]
            .as_str()
            .unwrap()
            .contains("parameter workload"));
        let (s, _, body) = get(&app, "/api/v1/logs/rate?by=pod").await;
        assert_eq!(s, 400);
        assert!(body["error"].as_str().unwrap().contains("parameter by"));
    }

    #[tokio::test]
    async fn bad_parameters_are_400_naming_the_parameter() {
        let (app, _dir, _) = app().await;
        for (uri, word) in [
            ("/api/v1/logs?level=loud", "parameter level"),
            ("/api/v1/logs?regex=(", "regex"),
            ("/api/v1/logs?cursor=zzz", "parameter cursor"),
            ("/api/v1/logs?from=later", "parameter from"),
            ("/api/v1/logs?limit=-1", "parameter limit"),
            ("/api/v1/logs/rate?step=never", "parameter step"),
        ] {
            let (s, _, body) = get(&app, uri).await;
            assert_eq!(s, 400, "{uri}: {body}");
            assert!(
                body["error"].as_str().unwrap().contains(word),
                "{uri}: {body}"
            );
        }
        let (s, _, body) = get(&app, "/api/v1/logs/rate?from=0&to=1717171717000&step=1s").await;
        assert_eq!(s, 422, "too many points: {body}");
    }
}
