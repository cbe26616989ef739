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
use kube_insight_store::{EventStore, ObjectWrite, StoreOptions};
use kube_insight_store_sqlite::events::SqliteEventStore;
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
        object: sanitize(
            "Deployment",
            &raw,
            &kube_insight_core::event::SecretKey::from_bytes(&[7; 32]).unwrap(),
        )
        .unwrap(),
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

/// The event store and the topology store over one SQLite file, served with
/// the dependency changes merged into `/api/v1/changes`.
async fn app_with_topology() -> (Router, tempfile::TempDir, Vec<Value>) {
    use kube_insight_store::conformance_topology::sample;
    use kube_insight_store::{DependencyQuery, DynTopologyStore, TopologyStore};
    use kube_insight_store_sqlite::topology::SqliteTopologyStore;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("insight.db");
    let events = Arc::new(
        SqliteEventStore::open(&db, StoreOptions::default())
            .await
            .unwrap(),
    );
    events
        .write_objects(vec![
            write("api:1.4", "1", T0, ChangeKind::Created),
            write("api:1.5", "2", T0 + 10_000, ChangeKind::Updated),
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
    events.write_events(vec![ev]).await.unwrap();
    let topo = SqliteTopologyStore::open(&db, StoreOptions::default())
        .await
        .unwrap();
    topo.save_snapshot("prod", T0 + 300_000, sample(0))
        .await
        .unwrap();
    topo.save_snapshot("prod", T0 + 360_000, sample(1))
        .await
        .unwrap();
    let topo: DynTopologyStore = Arc::new(topo);
    let deps = topo
        .dependency_changes(&DependencyQuery {
            cluster: None,
            range: kube_insight_core::TimeRange::new(T0, T0 + 3_600_000).unwrap(),
            limit: 1000,
        })
        .await
        .unwrap();
    assert!(!deps.is_empty(), "the two samples differ in their edges");
    let want: Vec<Value> = deps
        .iter()
        .map(kube_insight_api::events::dependency_row)
        .collect();
    let router: Router = kube_insight_api::events::routes_with_topology(events, Some(topo));
    (router, dir, want)
}

fn keys(v: &Value) -> Vec<String> {
    v.as_object().unwrap().keys().cloned().collect()
}

#[tokio::test]
async fn changes_merge_the_topology_dependency_changes() {
    let (app, _d, want) = app_with_topology().await;
    let range = "from=2024-05-31T00:00:00Z&to=2024-06-01T00:00:00Z";
    let (s, v) = get(&app, &format!("/api/v1/changes?{range}")).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let rows = v.as_array().unwrap();
    // Every dependency change is there, told apart by source and category.
    let deps: Vec<&Value> = rows.iter().filter(|r| r["source"] == "topology").collect();
    assert_eq!(deps.len(), want.len(), "{v}");
    for w in &want {
        assert!(deps.contains(&w), "{w} missing from {v}");
        assert_eq!(w["category"], "dependency");
        assert_eq!(w["kind"], "Dependency");
        assert!(w["change"] == "appeared" || w["change"] == "lost", "{w}");
        assert!(w["summary"].as_str().unwrap().contains(": dependency "));
    }
    let kube: Vec<&Value> = rows
        .iter()
        .filter(|r| r["source"] == "kubernetes")
        .collect();
    assert_eq!(kube.len(), 3, "two versions and the BackOff event: {v}");
    // One frame for Infinity: the same keys on every row.
    assert!(rows.iter().all(|r| keys(r) == keys(&rows[0])), "{v}");
    // Newest first across both stores: the dependency changes (16:05,
    // 16:06) sit between the event (16:08:37) and the versions (16:00).
    let times: Vec<&str> = rows.iter().map(|r| r["time"].as_str().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "{times:?}");
    assert_eq!(rows[0]["category"], "event");
    assert_eq!(rows.last().unwrap()["category"], "object");
    // The workload each row is about.
    assert!(kube.iter().all(|r| r["workload"] == "api"), "{v}");
    assert!(deps
        .iter()
        .all(|r| r["namespace"] == "shop" && r["workload"].as_str().unwrap().starts_with('w')));

    // Filters.
    let (_, v) = get(&app, &format!("/api/v1/changes?{range}&dependencies=false")).await;
    assert_eq!(v.as_array().unwrap().len(), 3, "{v}");
    let (_, v) = get(&app, &format!("/api/v1/changes?{range}&kind=dependency")).await;
    assert_eq!(v.as_array().unwrap().len(), want.len(), "{v}");
    let (_, v) = get(&app, &format!("/api/v1/changes?{range}&kind=deploy")).await;
    assert!(
        v.as_array()
            .unwrap()
            .iter()
            .all(|r| r["kind"] == "Deployment"),
        "{v}"
    );
    let (_, v) = get(&app, &format!("/api/v1/changes?{range}&category=event")).await;
    let only: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["category"].as_str().unwrap())
        .collect();
    assert_eq!(only, ["event"], "{v}");
    let (_, v) = get(
        &app,
        &format!("/api/v1/changes?{range}&category=object,dependency"),
    )
    .await;
    assert_eq!(v.as_array().unwrap().len(), 2 + want.len(), "{v}");
    let (s, v) = get(&app, &format!("/api/v1/changes?{range}&category=rollout")).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        v["error"].as_str().unwrap().contains("parameter category"),
        "{v}"
    );
    let (s, v) = get(&app, &format!("/api/v1/changes?{range}&dependencies=maybe")).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("parameter dependencies"),
        "{v}"
    );
    // A workload filter matches either end of an edge.
    let one = want[0]["name"].as_str().unwrap().to_string();
    let end = one
        .split(['-', '>'])
        .find(|p| p.starts_with("shop/"))
        .unwrap()
        .trim_start_matches("shop/")
        .to_string();
    let (_, v) = get(&app, &format!("/api/v1/changes?{range}&workload={end}")).await;
    let rows = v.as_array().unwrap();
    assert!(!rows.is_empty());
    assert!(
        rows.iter()
            .all(|r| r["name"].as_str().unwrap().contains(&format!("shop/{end}"))),
        "{v}"
    );
    let (_, v) = get(
        &app,
        &format!("/api/v1/changes?{range}&namespace=elsewhere"),
    )
    .await;
    assert!(v.as_array().unwrap().is_empty(), "{v}");
    // All (a Grafana variable set to All) is no filter; the limit holds.
    let (_, all) = get(
        &app,
        &format!("/api/v1/changes?{range}&namespace=All&workload=All"),
    )
    .await;
    let (_, none) = get(&app, &format!("/api/v1/changes?{range}")).await;
    assert_eq!(all, none);
    let (_, v) = get(&app, &format!("/api/v1/changes?{range}&limit=2")).await;
    assert_eq!(v.as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn changed_workloads_list_what_the_timeline_touches() {
    let (app, _d, want) = app_with_topology().await;
    let range = "from=2024-05-31T00:00:00Z&to=2024-06-01T00:00:00Z";
    let (s, v) = get(&app, &format!("/api/v1/changes/workloads?{range}")).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let rows = v.as_array().unwrap();
    let api = rows.iter().find(|r| r["workload"] == "api").unwrap();
    assert_eq!(
        api["changes"], 3,
        "two versions and an event about its pod: {v}"
    );
    assert_eq!(api["namespace"], "shop");
    assert_eq!(api["cluster"], "prod");
    assert_eq!(api["first_change"], "2024-05-31T16:00:00.000Z");
    assert_eq!(api["last_change"], "2024-05-31T16:08:37.000Z");
    // Both ends of every changed edge are affected.
    for w in &want {
        for end in w["summary"]
            .as_str()
            .unwrap()
            .split(": ")
            .next()
            .unwrap()
            .split(' ')
        {
            if let Some(name) = end.strip_prefix("shop/") {
                assert!(rows.iter().any(|r| r["workload"] == name), "{name} in {v}");
            }
        }
    }
    // Most recently changed first.
    let last: Vec<&str> = rows
        .iter()
        .map(|r| r["last_change"].as_str().unwrap())
        .collect();
    assert!(last.windows(2).all(|w| w[0] >= w[1]), "{last:?}");
    // Without the dependency changes only api is left.
    let (_, v) = get(
        &app,
        &format!("/api/v1/changes/workloads?{range}&dependencies=false"),
    )
    .await;
    let names: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["workload"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["api"]);
}
