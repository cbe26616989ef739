//! The watch's push endpoints (`kube_watch::ingest`) through the shared push
//! mount on a real loopback server backed by a SQLite store: the token's
//! cluster is enforced, re-sends are stored once, a bad body is 400, the
//! state route answers the checkpoint, live objects (paged) and the
//! cluster's own secret-hash key.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use axum::Router;
use kube_insight_core::event::ChangeKind;
use kube_insight_core::TimeRange;
use kube_insight_sources::kube_watch::ingest::{
    cluster_key, hex_encode, CheckpointWrite, StateResponse, WatchBatch, WatchIngestSource,
    WatchStateSource, STATE_PATH, WATCH_PATH,
};
use kube_insight_sources::push::{mount, PushLimits};
use kube_insight_sources::TokenMap;
use kube_insight_store::events::{ObjectWrite, WatchCheckpoint};
use kube_insight_store::{ChangeQuery, EventStore, StoreOptions};
use kube_insight_store_sqlite::events::SqliteEventStore;
use kube_insight_telemetry::Telemetry;
use serde_json::json;
use std::sync::Arc;

async fn server() -> (String, Arc<dyn EventStore>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn EventStore> = Arc::new(
        SqliteEventStore::open(&dir.path().join("insight.db"), StoreOptions::default())
            .await
            .unwrap(),
    );
    let mut tokens = TokenMap::open("default");
    tokens.insert("token-of-prod-0123456", "prod");
    tokens.insert("token-of-stage-012345", "stage");
    let tokens = Arc::new(tokens);
    let tel = Arc::new(Telemetry::new());
    let mut app = Router::new();
    app = mount(
        app,
        Arc::new(WatchIngestSource::new(store.clone())),
        tokens.clone(),
        PushLimits::default(),
        tel.clone(),
    );
    app = mount(
        app,
        Arc::new(WatchStateSource::new(store.clone())),
        tokens,
        PushLimits::default(),
        tel,
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, store, dir)
}

fn object(cluster: &str, uid: &str, rv: &str, image: &str) -> ObjectWrite {
    ObjectWrite {
        cluster: cluster.into(),
        group: "apps".into(),
        kind: "Deployment".into(),
        namespace: "shop".into(),
        name: format!("web-{uid}"),
        uid: uid.into(),
        resource_version: rv.into(),
        at_ms: 1_000 + rv.parse::<i64>().unwrap(),
        change: ChangeKind::Created,
        object: json!({"apiVersion":"apps/v1","kind":"Deployment",
            "metadata":{"name":format!("web-{uid}"),"namespace":"shop","uid":uid,"resourceVersion":rv},
            "spec":{"template":{"spec":{"containers":[{"name":"c","image":image}]}}}}),
        managers: Vec::new(),
        gitops: None,
        gap: None,
    }
}

async fn post(base: &str, path: &str, token: &str, body: Vec<u8>) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{base}{path}"))
        .bearer_auth(token)
        .body(body)
        .send()
        .await
        .unwrap()
}

async fn state(base: &str, token: &str, ask: serde_json::Value) -> StateResponse {
    let r = post(base, STATE_PATH, token, ask.to_string().into_bytes()).await;
    assert_eq!(r.status(), 200);
    serde_json::from_slice(&r.bytes().await.unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_cluster_is_enforced_and_resends_are_stored_once() {
    let (base, store, _d) = server().await;
    // The payload says "stage"; the token is prod's: recorded as prod.
    let batch = WatchBatch {
        objects: vec![
            object("stage", "u1", "10", "web:1"),
            object("stage", "u2", "11", "web:1"),
        ],
        events: Vec::new(),
        checkpoints: vec![CheckpointWrite {
            group: "apps".into(),
            kind: "Deployment".into(),
            checkpoint: WatchCheckpoint {
                resource_version: "11".into(),
                at_ms: 5_000,
            },
        }],
    };
    let body = serde_json::to_vec(&batch).unwrap();
    for _ in 0..3 {
        let r = post(&base, WATCH_PATH, "token-of-prod-0123456", body.clone()).await;
        assert_eq!(r.status(), 204, "{:?}", r.text().await);
    }
    let live = store
        .live_objects("prod", "apps", "Deployment")
        .await
        .unwrap();
    assert_eq!(live.len(), 2);
    let rows = store
        .changes(&ChangeQuery {
            cluster: None,
            namespace: None,
            workload: None,
            kind: None,
            range: TimeRange::new(0, i64::MAX / 2).unwrap(),
            limit: 100,
            include_events: false,
            include_status: true,
        })
        .await
        .unwrap();
    assert_eq!(rows.len(), 2, "three sends, one version each: {rows:?}");
    assert!(rows.iter().all(|r| r.cluster == "prod"));
    assert!(store
        .live_objects("stage", "apps", "Deployment")
        .await
        .unwrap()
        .is_empty());
    let cp = store
        .checkpoint("prod", "apps", "Deployment")
        .await
        .unwrap();
    assert_eq!(cp.unwrap().resource_version, "11");

    // The state route reads prod's, never stage's.
    let s = state(
        &base,
        "token-of-prod-0123456",
        json!({"op":"checkpoint","group":"apps","kind":"Deployment"}),
    )
    .await;
    assert_eq!(s.cluster, "prod");
    assert_eq!(s.checkpoint.unwrap().resource_version, "11");
    let s = state(
        &base,
        "token-of-stage-012345",
        json!({"op":"checkpoint","group":"apps","kind":"Deployment"}),
    )
    .await;
    assert_eq!(s.cluster, "stage");
    assert!(s.checkpoint.is_none());

    // Each cluster's key is derived from the installation's, per cluster.
    let key = store.secret_key().await.unwrap();
    let s = state(&base, "token-of-prod-0123456", json!({"op":"secret_key"})).await;
    assert_eq!(
        s.secret_key.unwrap(),
        hex_encode(cluster_key(&key, "prod").as_bytes())
    );
    let s2 = state(&base, "token-of-stage-012345", json!({"op":"secret_key"})).await;
    assert_ne!(
        s2.secret_key.unwrap(),
        hex_encode(cluster_key(&key, "prod").as_bytes())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_objects_are_paged_by_uid() {
    let (base, _store, _d) = server().await;
    let objects: Vec<ObjectWrite> = (0..2_500)
        .map(|i| object("prod", &format!("u{i:05}"), &format!("{}", 10 + i), "web:1"))
        .collect();
    let body = serde_json::to_vec(&WatchBatch {
        objects,
        ..Default::default()
    })
    .unwrap();
    let r = post(&base, WATCH_PATH, "token-of-prod-0123456", body).await;
    assert_eq!(r.status(), 204);
    let mut after: Option<String> = None;
    let mut got = Vec::new();
    let mut pages = 0;
    loop {
        let s = state(
            &base,
            "token-of-prod-0123456",
            json!({"op":"live_objects","group":"apps","kind":"Deployment","after":after}),
        )
        .await;
        pages += 1;
        got.extend(s.live.into_iter().map(|l| l.uid));
        match s.next_after {
            Some(a) => after = Some(a),
            None => break,
        }
    }
    assert_eq!(pages, 2);
    assert_eq!(got.len(), 2_500);
    let mut sorted = got.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted, got);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_bodies_and_tokens_are_refused() {
    let (base, _store, _d) = server().await;
    let r = post(
        &base,
        WATCH_PATH,
        "token-of-prod-0123456",
        b"{not json".to_vec(),
    )
    .await;
    assert_eq!(r.status(), 400);
    let text = r.text().await.unwrap();
    assert!(text.contains("watch batch: invalid JSON"), "{text}");
    let r = post(
        &base,
        STATE_PATH,
        "token-of-prod-0123456",
        br#"{"op":"drop_tables"}"#.to_vec(),
    )
    .await;
    assert_eq!(r.status(), 400);
    let r = post(&base, WATCH_PATH, "not-a-token-at-all", b"{}".to_vec()).await;
    assert_eq!(r.status(), 401);
    // An empty batch is fine.
    let r = post(&base, WATCH_PATH, "token-of-prod-0123456", b"{}".to_vec()).await;
    assert_eq!(r.status(), 204);
}
