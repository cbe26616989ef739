//! `/api/v1/events`, `/api/v1/changes` and `/api/v1/objects/…?at=` over a
//! real SQLite event store: shapes, filters, time forms, 404/400, and no
//! secret in any answer.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use kube_insight_core::event::{
    gitops_of, managers_of, parse_event, sanitize, ChangeKind, EventOrigin,
};
use kube_insight_store::conformance_events::raw_deployment;
use kube_insight_store::sqlite::events::SqliteEventStore;
use kube_insight_store::{EventStore, ObjectWrite, StoreOptions};
use serde_json::Value;
use std::sync::Arc;
use tower::ServiceExt;

const T0: i64 = 1_717_171_200_000; // 2024-05-31T16:00:00Z

fn write(image: &str, rv: &str, at: i64, change: ChangeKind) -> ObjectWrite {
    let raw = raw_deployment(image, 3, "argocd-controller");
    ObjectWrite {
        cluster: "prod".into(),
        group: "apps".into(),
        kind: "Deployment".into(),
        namespace: "shop".into(),
        name: "api".into(),
        uid: "dep-uid".into(),
        resource_version: rv.into(),
        at_ms: at,
        change,
        object: sanitize("Deployment", &raw).unwrap(),
        managers: managers_of(&raw),
        gitops: gitops_of(&raw),
        gap: None,
    }
}

async fn app() -> (Router, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        SqliteEventStore::open(&dir.path().join("insight.db"), StoreOptions::default())
            .await
            .unwrap(),
    );
    store
        .write_objects(vec![
            write("api:1.4", "1", T0, ChangeKind::Created),
            write("api:1.5", "2", T0 + 10_000, ChangeKind::Updated),
            write("api:1.6", "3", T0 + 10_500, ChangeKind::Updated),
        ])
        .await
        .unwrap();
    let fixture = std::fs::read_to_string(format!(
        "{}/../../../shared/fixtures/k8s-core-v1-event.json",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let ev = parse_event(
        &serde_json::from_str(&fixture).unwrap(),
        "prod",
        EventOrigin::Watch,
        0,
    )
    .unwrap();
    store.write_events(vec![ev]).await.unwrap();
    let router: Router = kube_insight_api::events::routes(store);
    (router, dir)
}

async fn get(app: &Router, uri: &str) -> (StatusCode, Value) {
    let r = app
        .clone()
        .oneshot(Request::get(uri).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = r.status();
    let bytes = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn changes_timeline_newest_first_with_patch_and_who() {
    let (app, _d) = app().await;
    let (s, v) = get(
        &app,
        "/api/v1/changes?from=2024-05-31T00:00:00Z&to=2024-06-01T00:00:00Z",
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let rows = v.as_array().unwrap();
    let brief: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| (r["time"].as_str().unwrap(), r["summary"].as_str().unwrap()))
        .collect();
    assert_eq!(
        brief,
        vec![
            ("2024-05-31T16:08:37.000Z", "BackOff: Back-off restarting failed container api in pod api-5f6d7c8b9-qwz7p_shop(c3d4e5f6-a7b8-4c9d-8e0f-1a2b3c4d5e6f) (x7)"),
            ("2024-05-31T16:00:10.500Z", "image api:1.5 → api:1.6 by argocd"),
            ("2024-05-31T16:00:10.000Z", "image api:1.4 → api:1.5 by argocd"),
            ("2024-05-31T16:00:00.000Z", "created (image api:1.4) by argocd"),
        ]
    );
    assert_eq!(rows[1]["who"], "argocd-controller");
    assert_eq!(rows[1]["category"], "object");
    assert!(rows[1]["patch"].as_str().unwrap().contains("api:1.6"));
    // Epoch ms, workload and kind filters, events left out.
    let (_, v) = get(
        &app,
        &format!(
            "/api/v1/changes?from={}&to={}&workload=api&kind=deploy&events=false",
            T0 + 1,
            T0 + 10_000
        ),
    )
    .await;
    assert_eq!(v.as_array().unwrap().len(), 1, "{v}");
    let (s, v) = get(&app, "/api/v1/changes?from=later").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        v["error"].as_str().unwrap().contains("parameter from"),
        "{v}"
    );
}

#[tokio::test]
async fn events_filters_and_shape() {
    let (app, _d) = app().await;
    let (s, v) = get(&app, "/api/v1/events?from=1717171200000&to=1717200000000&kind=Pod&namespace=shop&reason=BackOff&type=Warning").await;
    assert_eq!(s, StatusCode::OK);
    let rows = v.as_array().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["count"], 7);
    assert_eq!(rows[0]["first_time"], "2024-05-31T15:58:02.000Z");
    assert_eq!(rows[0]["name"], "api-5f6d7c8b9-qwz7p");
    let (_, v) = get(
        &app,
        "/api/v1/events?from=1717171200000&to=1717200000000&type=Normal",
    )
    .await;
    assert!(v.as_array().unwrap().is_empty());
}

#[tokio::test]
async fn objects_at_before_at_between_and_no_secrets() {
    let (app, _d) = app().await;
    let img = |v: &Value| {
        v["object"]
            .pointer("/spec/template/spec/containers/0/image")
            .unwrap()
            .as_str()
            .unwrap()
            .to_string()
    };
    let (s, _) = get(
        &app,
        "/api/v1/objects/deployment/shop/api?at=2024-05-31T15:59:59Z",
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, v) = get(
        &app,
        "/api/v1/objects/deploy/shop/api?at=2024-05-31T16:00:00Z",
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(img(&v), "api:1.4");
    let (_, v) = get(
        &app,
        "/api/v1/objects/deployments/shop/api?at=1717171205000",
    )
    .await;
    assert_eq!(img(&v), "api:1.4");
    let (_, v) = get(
        &app,
        "/api/v1/objects/Deployment/shop/api?at=2024-05-31T16:00:10.600Z",
    )
    .await;
    assert_eq!(img(&v), "api:1.6");
    assert_eq!(v["resource_version"], "3");
    let (s, v) = get(&app, "/api/v1/objects/deployment/shop/api?at=soon").await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    // No secret in any answer.
    let mut all = String::new();
    for uri in [
        "/api/v1/changes?from=0&to=1817171200000",
        "/api/v1/objects/deploy/shop/api?at=1717171210000",
        "/api/v1/events?from=0&to=1817171200000",
    ] {
        all.push_str(&get(&app, uri).await.1.to_string());
    }
    assert!(all.contains("sha256:"));
    assert!(!all.contains("hunter2"), "{all}");
    assert!(!all.contains("last-applied"), "{all}");
}
