//! The SQLite topology backend: the shared topology conformance suite (with
//! the default keyframe policy and with a tiny one, so reconstruction across
//! many keyframes is exercised), then what only the embedded store shows
//! (reopening, storage cost).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a panic is a failing test

use kube_insight_core::topology::Snapshot;
use kube_insight_store::conformance_topology::sample;
use kube_insight_store::{DynTopologyStore, StoreOptions, TopologyStore};
use kube_insight_store_sqlite::topology::{SqliteTopologyConfig, SqliteTopologyStore};
use std::sync::Arc;

async fn fresh(options: StoreOptions) -> (DynTopologyStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteTopologyStore::open(&dir.path().join("insight.db"), options)
        .await
        .unwrap();
    (Arc::new(store), dir)
}

fn tiny() -> SqliteTopologyConfig {
    SqliteTopologyConfig {
        max_deltas_per_keyframe: 3,
        stats_chain_minutes: 30,
        cache_entries: 1,
        ..Default::default()
    }
}

async fn fresh_tiny(options: StoreOptions) -> (DynTopologyStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteTopologyStore::open_with(&dir.path().join("insight.db"), options, tiny())
        .await
        .unwrap();
    (Arc::new(store), dir)
}

mod conformance {
    use super::*;
    kube_insight_store::topology_store_conformance_suite!(fresh);
}

mod conformance_tiny_keyframes {
    use super::*;
    kube_insight_store::topology_store_conformance_suite!(fresh_tiny);
}

const T0: i64 = 1_764_000_000_000;

#[tokio::test]
async fn reopening_resumes_deltas_and_reads_every_moment_from_disk() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("insight.db");
    let mut saved: Vec<(i64, Snapshot)> = Vec::new();
    {
        let s = SqliteTopologyStore::open_with(&path, StoreOptions::default(), tiny())
            .await
            .unwrap();
        for k in 0..10usize {
            let t = T0 + k as i64 * 15_000;
            s.save_snapshot("prod", t, sample(k)).await.unwrap();
            saved.push((t, sample(k)));
        }
    }
    let s = SqliteTopologyStore::open_with(&path, StoreOptions::default(), tiny())
        .await
        .unwrap();
    // The resumed writer computes deltas against the stored graph.
    let out = s
        .save_snapshot("prod", T0 + 150_000, sample(9))
        .await
        .unwrap();
    assert!(!out.structure_changed, "{out:?}");
    let e = s.save_snapshot("prod", T0, sample(0)).await.unwrap_err();
    assert!(e.to_string().contains("older than"), "{e}");
    let out = s
        .save_snapshot("prod", T0 + 165_000, sample(10))
        .await
        .unwrap();
    assert!(out.structure_changed);
    saved.push((T0 + 165_000, sample(10)));
    // A second instance (another process, e.g. the api role) reads from disk only.
    let reader = SqliteTopologyStore::open(&path, StoreOptions::default())
        .await
        .unwrap();
    for (t, snap) in &saved {
        let g = reader.graph_at("prod", *t).await.unwrap().unwrap();
        assert_eq!(*g.graph, snap.graph, "at {t}");
    }
    let bytes = s.table_bytes().await.unwrap();
    assert_eq!(bytes.len(), 4);
    assert!(
        bytes
            .iter()
            .any(|(t, rows, b)| *t == "topo_keyframes" && *rows >= 2 && *b > 0),
        "{bytes:?}"
    );
}

/// Another instance reads from disk only, with the smallest caches: every
/// read starts from a keyframe, a decoded chain or a graph another read
/// left (moved forward in place, or copied while an answer still holds it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_with_tiny_caches_reads_every_moment_in_any_order() {
    for cache_entries in [1, 2, 8] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("insight.db");
        let config = SqliteTopologyConfig {
            max_deltas_per_keyframe: 7,
            stats_chain_minutes: 4,
            cache_entries,
            ..Default::default()
        };
        let writer: DynTopologyStore = Arc::new(
            SqliteTopologyStore::open_with(&path, StoreOptions::default(), config.clone())
                .await
                .unwrap(),
        );
        let reader: DynTopologyStore = Arc::new(
            SqliteTopologyStore::open_with(&path, StoreOptions::default(), config)
                .await
                .unwrap(),
        );
        kube_insight_store::conformance_topology::check_reads_in_any_order(&writer, &reader).await;
    }
}

#[tokio::test]
async fn corrupt_rows_are_reported_not_panicked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("insight.db");
    let s = SqliteTopologyStore::open(&path, StoreOptions::default())
        .await
        .unwrap();
    s.save_snapshot("prod", T0, sample(0)).await.unwrap();
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute(
        "INSERT INTO topo_keyframes (cluster, t_ms, data) VALUES ('prod', ?1, x'0001ff')",
        [T0 + 5],
    )
    .unwrap();
    let reader = SqliteTopologyStore::open(&path, StoreOptions::default())
        .await
        .unwrap();
    let e = reader.graph_at("prod", T0 + 10).await.unwrap_err();
    assert!(
        e.to_string().contains("corrupt") && e.to_string().contains("keyframe"),
        "{e}"
    );
}

#[tokio::test]
async fn schema_is_idempotent_and_shares_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("insight.db");
    let conn = rusqlite::Connection::open(&path).unwrap();
    kube_insight_store_sqlite::topology::create_schema(&conn).unwrap();
    kube_insight_store_sqlite::topology::create_schema(&conn).unwrap();
    let s = SqliteTopologyStore::open(&path, StoreOptions::default())
        .await
        .unwrap();
    s.save_snapshot("prod", T0, sample(0)).await.unwrap();
    let n: i64 = conn
        .query_row("SELECT count(*) FROM topo_keyframes", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 1);
}
