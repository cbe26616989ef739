//! The SQLite events backend: the shared events conformance suite, then
//! what only the embedded store shows (restart, secret hygiene on disk,
//! two stores on one file).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a panic is a failing test

use kube_insight_core::event::ChangeKind;
use kube_insight_store::conformance_events::{raw_deployment, DynEventStore};
use kube_insight_store::{EventStore, ObjectWrite, StoreOptions};
use kube_insight_store_sqlite::events::SqliteEventStore;
use std::sync::Arc;

async fn fresh(options: StoreOptions) -> (DynEventStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteEventStore::open(&dir.path().join("insight.db"), options)
        .await
        .unwrap();
    (Arc::new(store), dir)
}

mod conformance {
    use super::*;
    kube_insight_store::event_store_conformance_suite!(fresh);
}

const T0: i64 = 1_717_171_200_000;

fn write(image: &str, rv: &str, at: i64) -> ObjectWrite {
    let raw = raw_deployment(image, 3, "kubectl-client-side-apply");
    ObjectWrite {
        cluster: "prod".into(),
        group: "apps".into(),
        kind: "Deployment".into(),
        namespace: "shop".into(),
        name: "api".into(),
        uid: "dep-uid".into(),
        resource_version: rv.into(),
        at_ms: at,
        change: ChangeKind::Updated,
        object: kube_insight_core::event::sanitize(
            "Deployment",
            &raw,
            &kube_insight_core::event::SecretKey::from_bytes(&[7; 32]).unwrap(),
        )
        .unwrap(),
        managers: kube_insight_core::event::managers_of(&raw),
        gitops: None,
        gap: None,
    }
}

/// Every byte of the database files.
fn all_bytes(dir: &std::path::Path) -> Vec<u8> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            out.extend(std::fs::read(p).unwrap());
        }
    }
    out
}

#[tokio::test]
async fn secrets_never_reach_the_file_and_history_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("insight.db");
    {
        let s = SqliteEventStore::open(&path, StoreOptions::default())
            .await
            .unwrap();
        s.write_objects(vec![
            write("api:1.4", "1", T0),
            write("api:1.5", "2", T0 + 1000),
        ])
        .await
        .unwrap();
    }
    let bytes = all_bytes(dir.path());
    let hay = String::from_utf8_lossy(&bytes);
    assert!(!hay.contains("hunter2"), "a secret reached the store file");
    let s = SqliteEventStore::open(&path, StoreOptions::default())
        .await
        .unwrap();
    let at = s
        .object_at(None, "deploy", "shop", "api", T0 + 500)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        at.object
            .pointer("/spec/template/spec/containers/0/image")
            .unwrap(),
        "api:1.4"
    );
    assert_eq!(at.manager.as_deref(), Some("kubectl-client-side-apply"));
    assert!(!at.object.to_string().contains("hunter2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_on_one_file_store_each_change_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("insight.db");
    let a = Arc::new(
        SqliteEventStore::open(&path, StoreOptions::default())
            .await
            .unwrap(),
    );
    let b = Arc::new(
        SqliteEventStore::open(&path, StoreOptions::default())
            .await
            .unwrap(),
    );
    let writes: Vec<ObjectWrite> = (0..50)
        .map(|i| {
            write(
                &format!("api:1.{i}"),
                &(10 + i).to_string(),
                T0 + i as i64 * 100,
            )
        })
        .collect();
    let mut tasks = Vec::new();
    for s in [a.clone(), b.clone()] {
        let ws = writes.clone();
        tasks.push(tokio::spawn(async move {
            let mut total = kube_insight_store::ObjectWriteOutcome::default();
            for w in ws {
                total.merge(&s.write_objects(vec![w]).await.unwrap());
            }
            total
        }));
    }
    let mut written = 0;
    for t in tasks {
        written += t.await.unwrap().versions_written;
    }
    assert_eq!(written, 50);
    let rows = a
        .changes(&kube_insight_store::ChangeQuery {
            cluster: None,
            namespace: None,
            workload: None,
            kind: None,
            range: kube_insight_core::TimeRange::new(0, i64::MAX / 2).unwrap(),
            limit: 1000,
            include_events: false,
            include_status: true,
        })
        .await
        .unwrap();
    assert_eq!(rows.len(), 49, "first is the baseline");
    for (i, r) in rows.iter().rev().enumerate() {
        assert_eq!(
            r.summary,
            format!(
                "image api:1.{i} → api:1.{} by kubectl-client-side-apply",
                i + 1
            )
        );
    }
}
