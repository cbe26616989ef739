//! kube-eventer's webhook through the shared push mount on a real loopback
//! server: both fixture bodies, kube-eventer's own query parameters on the
//! URL, de-duplication against the watch, re-sends, broken bodies.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use axum::Router;
use kube_insight_core::event::{parse_event, EventOrigin};
use kube_insight_core::TimeRange;
use kube_insight_sources::kube_eventer::KubeEventerSource;
use kube_insight_sources::push::{mount, PushLimits};
use kube_insight_sources::TokenMap;
use kube_insight_store::{EventQuery, EventStore, StoreOptions};
use kube_insight_store_sqlite::events::SqliteEventStore;
use kube_insight_telemetry::Telemetry;
use std::sync::Arc;

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/../../../shared/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

async fn server() -> (String, Arc<dyn EventStore>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn EventStore> = Arc::new(
        SqliteEventStore::open(&dir.path().join("insight.db"), StoreOptions::default())
            .await
            .unwrap(),
    );
    let mut tokens = TokenMap::open("default");
    tokens.insert("tok", "prod");
    let app = mount(
        Router::new(),
        Arc::new(KubeEventerSource::new(store.clone())),
        Arc::new(tokens),
        PushLimits::default(),
        Arc::new(Telemetry::new()),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/ingest/kube-eventer?level=Normal&method=POST&header=Content-Type=application/json",
        listener.local_addr().unwrap()
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, store, dir)
}

async fn post(url: &str, body: Vec<u8>) -> reqwest::StatusCode {
    reqwest::Client::new()
        .post(url)
        .bearer_auth("tok")
        .body(body)
        .send()
        .await
        .unwrap()
        .status()
}

fn q() -> EventQuery {
    EventQuery {
        cluster: Some("prod".into()),
        namespace: None,
        kind: None,
        name: None,
        reason: None,
        event_type: None,
        range: TimeRange::new(0, i64::MAX / 2).unwrap(),
        limit: 100,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_body_is_deduplicated_against_the_watch() {
    let (url, store, _d) = server().await;
    // The watch saw the event first.
    let core: serde_json::Value =
        serde_json::from_slice(&fixture("k8s-core-v1-event.json")).unwrap();
    store
        .write_events(vec![
            parse_event(&core, "prod", EventOrigin::Watch, 0).unwrap()
        ])
        .await
        .unwrap();
    assert!(post(&url, fixture("kube-eventer-webhook-body.json"))
        .await
        .is_success());
    assert!(
        post(&url, fixture("kube-eventer-webhook-body-custom-full.json"))
            .await
            .is_success()
    );
    assert!(post(&url, fixture("event-exporter-webhook-body.json"))
        .await
        .is_success());
    let rows = store.query_events(&q()).await.unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(
        (rows[0].uid.as_str(), rows[0].count),
        ("0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d", 7)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_eventer_alone_resends_and_broken_bodies() {
    let (url, store, _d) = server().await;
    // Re-sent on MODIFIED and retried by hand: stored once.
    for _ in 0..3 {
        assert!(
            post(&url, fixture("kube-eventer-webhook-body-custom-full.json"))
                .await
                .is_success()
        );
    }
    // Unescaped newline and backslash in a message, CST time.
    let quirky = "\n{\n\t\"EventType\": \"Warning\",\n\t\"EventKind\": \"Node\",\n\t\"EventReason\": \"OOM\",\n\t\"EventTime\": \"2024-05-31 18:08:37 +0800 CST\",\n\t\"EventMessage\": \"killed C:\\tmp\nnext\"\n}";
    assert!(post(&url, quirky.as_bytes().to_vec()).await.is_success());
    let rows = store.query_events(&q()).await.unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    let oom = rows.iter().find(|e| e.reason == "OOM").unwrap();
    assert_eq!(oom.message, "killed C:\\tmp\nnext");
    assert_eq!(
        rows.iter().find(|e| e.reason == "BackOff").unwrap().count,
        7
    );
    assert_eq!(
        post(&url, b"{definitely not".to_vec()).await,
        reqwest::StatusCode::BAD_REQUEST
    );
    assert_eq!(
        post(&url, Vec::new()).await,
        reqwest::StatusCode::BAD_REQUEST
    );
    let r = reqwest::Client::new()
        .post(&url)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::UNAUTHORIZED);
}
