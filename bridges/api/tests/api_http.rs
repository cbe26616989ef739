//! The read API over real HTTP, on a store filled from the shared fixtures
//! (federation and kube-state-metrics shapes).

// Tests and benches may unwrap: a panic is a failing run with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use kube_insight_core::TimeRange;
use kube_insight_sources::metrics::ingest_series;
use kube_insight_sources::metrics::transform::LabelPolicy;
use kube_insight_sources::prometheus::exposition::parse_to_series;
use kube_insight_store::{DynStore, StoreOptions};
use kube_insight_telemetry::Telemetry;
use serde_json::Value;
use std::sync::Arc;

const FEDERATE: &str = include_str!("../../../../shared/fixtures/federate-sample.txt");
const KSM: &str = include_str!("../../../../shared/fixtures/kube-state-metrics-sample.txt");
/// KSM's direct-scrape fixture has no timestamps: give them one near the federate fixture's.
const KSM_TS: i64 = 1_717_171_700_000;

async fn filled_store() -> (DynStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let opts = StoreOptions {
        retention: kube_insight_store::Retention {
            metrics: std::time::Duration::from_secs(100 * 365 * 86_400),
            ..Default::default()
        },
        ..Default::default()
    };
    let store =
        kube_insight_store_sqlite::open(&format!("sqlite://{}/a.db", dir.path().display()), opts)
            .await
            .unwrap();
    for (text, ts) in [(FEDERATE, 0), (KSM, KSM_TS)] {
        let (series, report) = parse_to_series(text, ts);
        assert!(report.is_clean(), "{:?}", report.errors);
        ingest_series(
            &store,
            "prod",
            series,
            &LabelPolicy::default(),
            vec![],
            None,
        )
        .await
        .unwrap();
    }
    (store, dir)
}

async fn serve(store: DynStore, token: Option<&str>) -> String {
    let app = kube_insight_api::router(
        store,
        Arc::new(Telemetry::new()),
        kube_insight_api::ApiConfig {
            tokens: token
                .map(|t| (t.to_string(), kube_insight_api::ClusterScope::All))
                .into_iter()
                .collect(),
            ..Default::default()
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum_serve(listener, app).await });
    format!("http://{addr}")
}

async fn axum_serve(l: tokio::net::TcpListener, app: axum::Router) {
    axum::serve(l, app).await.unwrap();
}

async fn get(url: &str) -> (u16, Value) {
    let r = reqwest::get(url).await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

const RANGE: &str = "from=2024-05-31T00:00:00Z&to=2024-06-01T00:00:00Z";

#[tokio::test]
async fn entities_resolve_pods_to_their_deployment() {
    let (store, _d) = filled_store().await;
    let base = serve(store, None).await;
    let (status, rows) = get(&format!("{base}/api/v1/entities?{RANGE}")).await;
    assert_eq!(status, 200, "{rows}");
    let rows = rows.as_array().unwrap();
    let api = rows
        .iter()
        .find(|r| r["pod"] == "api-5f6d7c8b9-qwz7p" && r["container"] == "api")
        .unwrap_or_else(|| panic!("no api container row in {rows:?}"));
    assert_eq!(api["cluster"], "prod");
    assert_eq!(api["namespace"], "shop");
    assert_eq!(api["workload_kind"], "Deployment");
    assert_eq!(api["workload"], "api");
    assert!(api["first_seen"]
        .as_str()
        .unwrap()
        .starts_with("2024-05-31T"));
    // A namespace filter narrows; a range with no data is empty.
    let (_, shop) = get(&format!("{base}/api/v1/entities?{RANGE}&namespace=shop")).await;
    assert!(shop
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["namespace"] == "shop"));
    let (_, none) = get(&format!(
        "{base}/api/v1/entities?from=2020-01-01T00:00:00Z&to=2020-01-02T00:00:00Z"
    ))
    .await;
    assert_eq!(none, Value::Array(vec![]));
    let (status, err) = get(&format!("{base}/api/v1/entities?from=soon")).await;
    assert_eq!(status, 400);
    assert!(
        err["error"].as_str().unwrap().contains("parameter from"),
        "{err}"
    );
}

#[tokio::test]
async fn prometheus_metadata_endpoints_answer_like_prometheus() {
    let (store, _d) = filled_store().await;
    let base = serve(store, None).await;
    let range = "start=2024-05-31T00:00:00Z&end=2024-06-01T00:00:00Z";
    let (status, body) = get(&format!(
        "{base}/prometheus/api/v1/series?match[]=kube_pod_owner&{range}"
    ))
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "success");
    let series = body["data"].as_array().unwrap();
    assert_eq!(
        series.len(),
        5,
        "3 from the federate fixture, 2 from KSM: {series:?}"
    );
    assert!(series
        .iter()
        .all(|s| s["__name__"] == "kube_pod_owner" && s["cluster"] == "prod"));

    let (_, body) = get(&format!("{base}/prometheus/api/v1/labels?{range}")).await;
    let names: Vec<&str> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        names.contains(&"namespace") && names.contains(&"__name__") && names.contains(&"cluster"),
        "{names:?}"
    );
    assert!(
        !names.contains(&"id"),
        "cAdvisor's id label is dropped: {names:?}"
    );
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);

    let (_, body) = get(&format!(
        "{base}/prometheus/api/v1/label/namespace/values?{range}"
    ))
    .await;
    assert_eq!(
        body["data"],
        serde_json::json!(["default", "kube-system", "shop"])
    );

    // Errors: the Prometheus envelope and status codes.
    let (status, body) = get(&format!("{base}/prometheus/api/v1/series?{range}")).await;
    assert_eq!(status, 400);
    assert_eq!(body["status"], "error");
    assert_eq!(body["errorType"], "bad_data");
    let (status, body) = get(&format!("{base}/prometheus/api/v1/query?query=sum(")).await;
    assert_eq!(status, 400);
    assert_eq!(body["errorType"], "bad_data");
    let (status, body) = get(&format!(
        "{base}/prometheus/api/v1/query?query=holt_winters(up[5m],0.5,0.5)&time=1717171772"
    ))
    .await;
    assert_eq!(
        status, 200,
        "every function of Prometheus 2.42 is evaluated: {body}"
    );
    let (_, body) = get(&format!("{base}/prometheus/api/v1/status/buildinfo")).await;
    assert_eq!(body["status"], "success");
    assert_eq!(body["data"]["version"], "2.42.0");
}

async fn post(url: &str, form: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form.to_string())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

/// The rest of what Grafana's Prometheus datasource calls, GET and POST,
/// with Prometheus' error types and status codes.
#[tokio::test]
async fn prometheus_api_for_grafana_over_http() {
    let (store, _d) = filled_store().await;
    let base = serve(store, None).await;
    let api = format!("{base}/prometheus/api/v1");
    let range = "start=2024-05-31T00:00:00Z&end=2024-06-01T00:00:00Z";

    // query and query_range as POST forms.
    let (status, body) = post(
        &format!("{api}/query"),
        "query=count_values(%22v%22%2C+kube_pod_owner)&time=1717171772",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["resultType"], "vector");
    let (status, body) = post(
        &format!("{api}/query_range"),
        "query=sort_desc(absent(nonexistent))&start=1717171712&end=1717171772&step=30",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["data"]["result"][0]["values"]
            .as_array()
            .unwrap()
            .len(),
        3
    );

    // series, labels and label values as POST forms, with match[], start and end.
    let (status, body) = post(
        &format!("{api}/series"),
        &format!("match[]=kube_pod_owner&{range}"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"].as_array().unwrap().len(), 5);
    let (_, body) = post(
        &format!("{api}/labels"),
        &format!("match[]=kube_pod_owner&{range}"),
    )
    .await;
    assert!(
        body["data"]
            .as_array()
            .unwrap()
            .contains(&Value::from("owner_kind")),
        "{body}"
    );
    let (status, body) = post(
        &format!("{api}/label/namespace/values"),
        &format!("match[]=kube_pod_owner{{namespace=%22shop%22}}&{range}"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"], serde_json::json!(["shop"]));

    // format_query and parse_query.
    let (status, body) = get(&format!(
        "{api}/format_query?query=sum(rate(x%5B5m%5D))%2B1e9"
    ))
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"], "sum(rate(x[5m])) + 1e+09");
    let (_, body) = post(&format!("{api}/format_query"), "query=a+and+b").await;
    assert_eq!(body["data"], "a and b");
    let (status, body) = post(&format!("{api}/parse_query"), "query=up%7Bjob%3D%22a%22%7D").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["type"], "vectorSelector");
    assert_eq!(body["data"]["name"], "up");

    // The empty answers: exemplars, metadata, rules, alerts.
    let (status, body) = get(&format!("{api}/query_exemplars?query=up&{range}")).await;
    assert_eq!((status, body["data"].clone()), (200, serde_json::json!([])));
    let (status, body) = get(&format!("{api}/query_exemplars?{range}")).await;
    assert_eq!(
        (status, body["errorType"].as_str()),
        (400, Some("bad_data"))
    );
    let (_, body) = get(&format!("{api}/metadata")).await;
    assert_eq!(body["data"], serde_json::json!({}));
    let (_, body) = get(&format!("{api}/rules")).await;
    assert_eq!(body["data"], serde_json::json!({"groups": []}));
    let (_, body) = post(&format!("{api}/alerts"), "").await;
    assert_eq!(body["data"], serde_json::json!({"alerts": []}));

    // Errors: 400 bad_data for a bad parameter or query, 422 execution for
    // an evaluation error, with Prometheus' message.
    for (url, code, kind) in [
        (format!("{api}/query?query=up%5B"), 400, "bad_data"),
        (format!("{api}/query"), 400, "bad_data"),
        (
            format!("{api}/query?query=up&time=yesterday"),
            400,
            "bad_data",
        ),
        (
            format!("{api}/query_range?query=up&start=2&end=1&step=1"),
            400,
            "bad_data",
        ),
        (
            format!("{api}/query_range?query=up&start=1&end=2&step=0"),
            400,
            "bad_data",
        ),
        (format!("{api}/format_query?query=sum("), 400, "bad_data"),
        (format!("{api}/query?query=limitk(1,up)"), 400, "bad_data"),
        (
            format!("{api}/query?query=holt_winters(kube_pod_owner%5B5m%5D,2,0.5)&time=1717171772"),
            422,
            "execution",
        ),
        (
            format!("{api}/query?query=count_values(%22a%20b%22,kube_pod_owner)&time=1717171772"),
            422,
            "execution",
        ),
        (
            format!("{api}/query?query=kube_pod_owner%2Bon()kube_pod_owner&time=1717171772"),
            422,
            "execution",
        ),
    ] {
        let (status, body) = get(&url).await;
        assert_eq!(
            (status, body["errorType"].as_str()),
            (code, Some(kind)),
            "{url}: {body}"
        );
        assert_eq!(body["status"], "error");
    }
    let (_, body) = get(&format!(
        "{api}/query?query=count_values(%22a%20b%22,kube_pod_owner)&time=1717171772"
    ))
    .await;
    assert_eq!(body["error"], "invalid label name \"a b\"");
}

#[tokio::test]
async fn query_range_reads_the_stored_samples() {
    let (store, _d) = filled_store().await;
    let base = serve(store.clone(), None).await;
    // The fixture's api container CPU sample is at 1717171712345 ms.
    let (status, body) = get(&format!(
        "{base}/prometheus/api/v1/query_range?query=container_cpu_usage_seconds_total{{container=%22api%22}}&start=1717171712.345&end=1717171772.345&step=30"
    ))
    .await;
    assert_eq!(status, 200, "{body}");
    let result = body["data"]["result"].as_array().unwrap();
    assert_eq!(result.len(), 1, "{body}");
    assert_eq!(
        result[0]["values"][0],
        serde_json::json!([1717171712.345, "1234.567"])
    );
    assert_eq!(
        result[0]["values"].as_array().unwrap().len(),
        3,
        "lookback carries the sample for 5 minutes"
    );
    let _ = TimeRange::all();
}

/// `max_source_resolution` (Thanos' parameter) switches long-range reads
/// to the 5-minute rollups, stored ones after compaction included; the
/// answers stay within a bucket's share of the raw ones.
#[tokio::test]
async fn max_source_resolution_reads_rollups() {
    let (store, _d) = filled_store().await;
    let h = 3_600_000i64;
    let end = kube_insight_core::time::now_ms().div_euclid(2 * h) * 2 * h;
    let start = end - 8 * h;
    let labels = kube_insight_core::Labels::from_pairs([
        ("__name__", "requests_total"),
        ("cluster", "prod"),
        ("pod", "api-0"),
    ]);
    let samples = (0..8 * 240)
        .map(|i| kube_insight_core::Sample::new(start + i * 15_000 + 777, 10.0 * i as f64))
        .collect();
    store
        .write_samples(kube_insight_store::MetricBatch {
            cluster: "prod".into(),
            series: vec![kube_insight_core::TimeSeries::new(labels, samples)],
        })
        .await
        .unwrap();
    let base = serve(store.clone(), None).await;
    let url = |res: &str| {
        format!(
            "{base}/prometheus/api/v1/query_range?query=rate(requests_total[1h])&start={}&end={}&step=1800{res}",
            (start + 2 * h) / 1000,
            end / 1000
        )
    };
    let values = |body: &Value| -> Vec<f64> {
        body["data"]["result"][0]["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p[1].as_str().unwrap().parse().unwrap())
            .collect()
    };
    let (status, raw) = get(&url("&max_source_resolution=0s")).await;
    assert_eq!(status, 200, "{raw}");
    assert_eq!(values(&raw).len(), 13, "{raw}");
    for round in ["head", "compacted"] {
        for res in ["&max_source_resolution=5m", ""] {
            let (status, body) = get(&url(res)).await;
            assert_eq!(status, 200, "{body}");
            let (a, b) = (values(&raw), values(&body));
            assert_eq!(a.len(), b.len(), "{round}{res}: {body}");
            for (x, y) in a.iter().zip(&b) {
                assert!(
                    (x - y).abs() <= 1e-3 * x,
                    "{round}{res}: raw {x} rollups {y}"
                );
            }
        }
        store.maintain(end + 2 * h).await.unwrap();
    }
    let (status, body) = get(&url("&max_source_resolution=1m")).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["errorType"], "bad_data");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("max_source_resolution"),
        "{body}"
    );
}

#[tokio::test]
async fn the_api_token_is_required_when_set() {
    let (store, _d) = filled_store().await;
    let token = "api-token-0123456789";
    let base = serve(store, Some(token)).await;
    let r = reqwest::get(format!("{base}/api/v1/entities"))
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = reqwest::get(format!("{base}/prometheus/api/v1/labels"))
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = reqwest::Client::new()
        .get(format!("{base}/api/v1/entities?{RANGE}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}
