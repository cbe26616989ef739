//! `/api/v1/suspects` over real HTTP on loopback, on a SQLite store holding
//! the suspects testkit's incident: the answer's fields, the onset headers,
//! the frame, the companion onset endpoint, 400s naming the parameter, and
//! an empty 200.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use kube_insight_suspects::testkit::{incident_store, AT_MS, CHANGE_MS};
use kube_insight_telemetry::Telemetry;
use serde_json::Value;
use std::sync::Arc;

async fn serve(dir: &std::path::Path) -> String {
    let store = incident_store(dir).await;
    let app = kube_insight_api::router(
        store,
        Arc::new(Telemetry::new()),
        kube_insight_api::ApiConfig::default(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

async fn get(url: &str) -> (u16, reqwest::header::HeaderMap, Value) {
    let r = reqwest::get(url).await.unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, headers, r.json().await.unwrap())
}

#[tokio::test]
async fn suspects_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let base = serve(dir.path()).await;
    let q = format!("namespace=shop&workload=frontend&at={AT_MS}&window=2h");

    let (status, headers, body) = get(&format!("{base}/api/v1/suspects?{q}")).await;
    assert_eq!(status, 200, "{body}");
    let rows = body.as_array().unwrap();
    assert!(rows.len() >= 3, "{body}");
    let top = &rows[0];
    for key in [
        "rank",
        "score",
        "time",
        "time_ms",
        "cluster",
        "kind",
        "namespace",
        "name",
        "workload",
        "workload_namespace",
        "category",
        "summary",
        "who",
        "distance",
        "why",
        "score_parts",
        "onset",
    ] {
        assert!(top.get(key).is_some(), "{key} missing in {top}");
    }
    assert_eq!(top["rank"], 1);
    assert_eq!(top["kind"], "Deployment");
    assert_eq!(top["name"], "payment");
    assert_eq!(top["workload"], "payment");
    assert_eq!(top["category"], "image");
    assert_eq!(top["distance"], 2);
    assert_eq!(top["time_ms"], CHANGE_MS);
    assert_eq!(top["time"], "2024-05-31T17:30:00.000Z");
    assert!(top["why"].as_array().unwrap().iter().any(|w| w
        .as_str()
        .unwrap()
        .contains("the new ReplicaSet's pods (1) fail 30.0 %")));
    assert_eq!(top["onset"]["detected"], true);
    assert_eq!(top["onset"]["signal"], "error ratio");
    assert_eq!(headers["x-kube-insight-onset-detected"], "true");
    assert_eq!(headers["x-kube-insight-onset-signal"], "error ratio");
    assert_eq!(
        headers["x-kube-insight-onset"].to_str().unwrap(),
        top["onset"]["time"].as_str().unwrap()
    );
    // `deploy/frontend` names the same workload; `limit` cuts.
    let (status, _, one) = get(&format!(
        "{base}/api/v1/suspects?namespace=shop&workload=deploy/frontend&at={AT_MS}&limit=1"
    ))
    .await;
    assert_eq!(status, 200);
    assert_eq!(one.as_array().unwrap().len(), 1);
    assert_eq!(one[0]["name"], "payment");

    // The flat frame, both spellings.
    for url in [
        format!("{base}/api/v1/suspects?{q}&format=frame"),
        format!("{base}/api/v1/suspects/frame?{q}"),
    ] {
        let (status, _, f) = get(&url).await;
        assert_eq!(status, 200);
        let f = f.as_array().unwrap();
        assert_eq!(f.len(), rows.len());
        assert_eq!(f[0]["name"], "payment");
        assert!(f[0]["why"].as_str().unwrap().contains(" · "));
        assert_eq!(f[0]["onset_signal"], "error ratio");
        assert!(f[0]
            .as_object()
            .unwrap()
            .values()
            .all(|v| !v.is_array() && !v.is_object()));
    }

    // The companion endpoint.
    let (status, _, o) = get(&format!("{base}/api/v1/suspects/onset?{q}")).await;
    assert_eq!(status, 200, "{o}");
    assert_eq!(o["onset"]["signal"], "error ratio");
    assert_eq!(o["scope"]["shop/payment"], 2);
    assert!(o["candidates"].as_u64().unwrap() >= 3);

    // Nothing found is an empty array, 200, and still says the onset.
    let (status, headers, empty) = get(&format!(
        "{base}/api/v1/suspects?namespace=shop&workload=nobody&at={AT_MS}"
    ))
    .await;
    assert_eq!(status, 200);
    assert_eq!(empty, Value::Array(vec![]));
    assert_eq!(headers["x-kube-insight-onset-detected"], "false");
    let (status, _, empty) = get(&format!(
        "{base}/api/v1/suspects/frame?namespace=shop&workload=nobody&at={AT_MS}"
    ))
    .await;
    assert_eq!((status, empty), (200, Value::Array(vec![])));
}

#[tokio::test]
async fn bad_parameters_are_400_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let base = serve(dir.path()).await;
    for (q, param) in [
        (
            "namespace=shop&workload=frontend&at=yesterday",
            "parameter at",
        ),
        (
            "namespace=shop&workload=frontend&window=forever",
            "parameter window",
        ),
        (
            "namespace=shop&workload=frontend&window=30d",
            "parameter window",
        ),
        (
            "namespace=shop&workload=frontend&window=1m",
            "parameter window",
        ),
        ("namespace=shop", "parameter workload"),
        ("workload=frontend", "parameter namespace"),
        (
            "namespace=shop&workload=frontend&limit=x",
            "parameter limit",
        ),
        (
            "namespace=shop&workload=frontend&format=csv",
            "parameter format",
        ),
    ] {
        for path in [
            "/api/v1/suspects",
            "/api/v1/suspects/frame",
            "/api/v1/suspects/onset",
        ] {
            if param == "parameter format" && path != "/api/v1/suspects" {
                continue;
            }
            let (status, _, body) = get(&format!("{base}{path}?{q}")).await;
            assert_eq!(status, 400, "{path}?{q}: {body}");
            let msg = body["error"].as_str().unwrap();
            assert!(msg.contains(param), "{path}?{q}: {msg}");
        }
    }
}
