//! Suspects under `/api/v1/suspects`: which change caused this degradation?
//! The model is `kube_insight_suspects` (this module only reads the
//! parameters and shapes the answer).
//!
//! - `GET /api/v1/suspects?cluster&namespace&workload&at&window&limit&format`:
//!   a JSON array, best first (see `Suspect`: `rank`, `score`, `time`,
//!   `time_ms`, `cluster`, `kind`, `namespace`, `name`, `workload`,
//!   `workload_namespace`, `category`, `summary`, `who`, `distance`, `why`,
//!   `score_parts`, `onset`). `namespace` and `workload` are required
//!   (`workload` may be `deploy/name`); `at` (RFC 3339, epoch s/ms, `now-…`)
//!   defaults to now, `window` (`2h`, 5m..7d) to 2 h, `limit` to 20 (≤ 200).
//!   The onset is in every element and in the headers
//!   `X-Kube-Insight-Onset` (RFC 3339), `X-Kube-Insight-Onset-Signal` and
//!   `X-Kube-Insight-Onset-Detected`, so an empty answer (200, `[]`) still
//!   says it. `format=frame` answers flat rows (`why` joined with " · ",
//!   `onset_time`, `onset_signal`, `onset_detected`) for Grafana Infinity;
//!   so does `/api/v1/suspects/frame`.
//! - `GET /api/v1/suspects/onset?` (same parameters): `{onset, topology,
//!   scope, capped, candidates}`: when and in which signal the symptom
//!   started, the workloads examined with their hops, and the caps that cut
//!   the work.

use crate::kube::{error, store_error};
use crate::params::Params;
use crate::ApiState;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use kube_insight_core::time::now_ms;
use kube_insight_core::{parse_duration, parse_time_ms};
use kube_insight_suspects::{
    frame, suspects, Answer, Error, Limits, SuspectsQuery, DEFAULT_WINDOW_MS,
};
use serde_json::json;
use std::sync::Arc;

/// Suspects answered at most.
pub const MAX_LIMIT: usize = 200;

pub fn routes() -> Router<Arc<ApiState>> {
    Router::new()
        .route("/api/v1/suspects", get(list))
        .route("/api/v1/suspects/frame", get(list_frame))
        .route("/api/v1/suspects/onset", get(onset))
}

/// The query of a request's parameters; errors name the parameter.
pub fn query_of(p: &Params) -> Result<SuspectsQuery, String> {
    let namespace = p
        .get("namespace")
        .ok_or("parameter namespace: required with workload (the symptom's namespace)")?;
    let workload = p
        .get("workload")
        .ok_or("parameter workload: required (the workload showing the symptom)")?;
    // `deploy/frontend` is the workload frontend.
    let workload = workload.rsplit('/').next().unwrap_or(workload);
    let at_ms = match p.get("at") {
        None => now_ms(),
        Some(s) => parse_time_ms(s).map_err(|e| format!("parameter at: {e}"))?,
    };
    let window_ms = match p.get("window") {
        None => DEFAULT_WINDOW_MS,
        Some(s) => parse_duration(s)
            .map_err(|e| format!("parameter window: {e}"))?
            .as_millis() as i64,
    };
    let limit = p.usize_or("limit", 20, MAX_LIMIT)?;
    let q = SuspectsQuery {
        cluster: p.get("cluster").map(str::to_string),
        namespace: namespace.to_string(),
        workload: workload.to_string(),
        at_ms,
        window_ms,
        limit,
    };
    q.validate().map_err(|e| e.to_string())?;
    Ok(q)
}

async fn answer(st: &ApiState, q: Option<&str>) -> Result<Answer, Response> {
    let p = Params::parse(q, None);
    let query = query_of(&p).map_err(|e| error(StatusCode::BAD_REQUEST, e))?;
    let limits = Limits {
        max_series: Limits::default().max_series.min(st.config.max_series),
        max_samples: Limits::default().max_samples.min(st.config.max_samples),
        ..Limits::default()
    };
    let store = st.store.clone();
    let run = async move { suspects(store.as_ref(), &query, &limits).await };
    match tokio::time::timeout(st.config.query_timeout, run).await {
        Err(_) => Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "suspects query took longer than the query timeout (KUBE_INSIGHT_API_QUERY_TIMEOUT); narrow window",
        )),
        Ok(Err(Error::InvalidQuery(e))) => Err(error(StatusCode::BAD_REQUEST, e)),
        Ok(Err(Error::Store(e))) => Err(store_error(e)),
        Ok(Ok(a)) => Ok(a),
    }
}

fn with_onset_headers(mut r: Response, a: &Answer) -> Response {
    let h = r.headers_mut();
    let mut put = |name: &'static str, v: &str| {
        if let Ok(v) = HeaderValue::from_str(v) {
            h.insert(name, v);
        }
    };
    put("x-kube-insight-onset", &a.onset.time);
    put("x-kube-insight-onset-signal", &a.onset.signal);
    put(
        "x-kube-insight-onset-detected",
        if a.onset.detected { "true" } else { "false" },
    );
    r
}

async fn list(State(st): State<Arc<ApiState>>, RawQuery(q): RawQuery) -> Response {
    let as_frame = Params::parse(q.as_deref(), None).get("format") == Some("frame");
    respond(&st, q.as_deref(), as_frame).await
}

async fn list_frame(State(st): State<Arc<ApiState>>, RawQuery(q): RawQuery) -> Response {
    respond(&st, q.as_deref(), true).await
}

async fn respond(st: &ApiState, q: Option<&str>, as_frame: bool) -> Response {
    if let Some(f) = Params::parse(q, None).get("format") {
        if f != "frame" && f != "json" {
            return error(
                StatusCode::BAD_REQUEST,
                format!("parameter format: {f:?} is not json or frame"),
            );
        }
    }
    match answer(st, q).await {
        Err(r) => r,
        Ok(a) => {
            let body = if as_frame {
                Json(frame(&a.suspects)).into_response()
            } else {
                Json(&a.suspects).into_response()
            };
            with_onset_headers(body, &a)
        }
    }
}

async fn onset(State(st): State<Arc<ApiState>>, RawQuery(q): RawQuery) -> Response {
    match answer(&st, q.as_deref()).await {
        Err(r) => r,
        Ok(a) => {
            let body = Json(json!({
                "onset": a.onset,
                "topology": a.topology,
                "scope": a.scope,
                "capped": a.capped,
                "candidates": a.candidates,
            }))
            .into_response();
            with_onset_headers(body, &a)
        }
    }
}
