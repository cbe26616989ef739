//! The SQLite logs backend: the shared logs conformance suite, then what
//! only the embedded store shows (restart, failed transactions, block
//! merging, back-pressure).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a panic is a failing test

use kube_insight_core::log::{LogRecord, LogStreamKey, LogStreamMeta};
use kube_insight_core::TimeRange;
use kube_insight_store::conformance_logs::DynLogStore;
use kube_insight_store::{
    Error, LogBatch, LogQuery, LogSelector, LogStore, LogStreamBatch, StoreOptions,
};
use kube_insight_store_sqlite::logs::{SqliteLogConfig, SqliteLogStore};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

async fn fresh(options: StoreOptions) -> (DynLogStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteLogStore::open(&dir.path().join("insight.db"), options)
        .await
        .unwrap();
    (Arc::new(store), dir)
}

mod conformance {
    use super::*;
    kube_insight_store::log_store_conformance_suite!(fresh);
}

const MS: i64 = 1_000_000;

fn now_ns() -> i64 {
    kube_insight_core::time::now_ms() * MS
}

fn batch(pod: &str, t: i64, n: usize, tag: &str) -> LogBatch {
    LogBatch {
        cluster: "prod".into(),
        streams: vec![LogStreamBatch {
            key: LogStreamKey::new("prod", "ns", pod, "c"),
            meta: LogStreamMeta::default(),
            records: (0..n)
                .map(|i| LogRecord {
                    timestamp_ns: t + i as i64 * MS,
                    line: format!("{tag} line {i}"),
                    ..Default::default()
                })
                .collect(),
        }],
    }
}

fn all() -> LogQuery {
    let mut q = LogQuery::new(
        LogSelector::default(),
        TimeRange::new(0, i64::MAX / MS - 1).unwrap(),
    );
    q.limit = 1_000_000;
    q
}

async fn count(store: &SqliteLogStore) -> usize {
    store.query_logs(&all()).await.unwrap().rows.len()
}

fn blocks(path: &Path) -> Vec<(i64, i64)> {
    let c = rusqlite::Connection::open(path).unwrap();
    let mut st = c
        .prepare("SELECT tier, count FROM log_blocks ORDER BY id")
        .unwrap();
    st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// What was answered Ok is there after a restart, retries included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_a_restart_and_retries_stay_recognised() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("insight.db");
    let t = now_ns() - 3_600_000 * MS;
    let b = batch("p", t, 100, "a");
    {
        let store = SqliteLogStore::open(&path, StoreOptions::default())
            .await
            .unwrap();
        store.write_logs(b.clone()).await.unwrap();
    }
    let store = SqliteLogStore::open(&path, StoreOptions::default())
        .await
        .unwrap();
    assert_eq!(count(&store).await, 100);
    let o = store.write_logs(b).await.unwrap();
    assert_eq!(o.records_duplicate, 100, "{o:?}");
    assert_eq!(count(&store).await, 100);
}

/// A transaction that fails part-way (here a trigger refuses the third
/// stream's block) stores nothing of the batch; the retry stores it all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_failing_mid_batch_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("insight.db");
    let store = SqliteLogStore::open(&path, StoreOptions::default())
        .await
        .unwrap();
    let t = now_ns() - 3_600_000 * MS;
    let mut b = batch("p0", t, 10, "x");
    for p in ["p1", "poison", "p3"] {
        b.streams.push(batch(p, t, 10, "x").streams.remove(0));
    }
    let c = rusqlite::Connection::open(&path).unwrap();
    c.execute_batch(
        "CREATE TRIGGER poison BEFORE INSERT ON log_blocks
         WHEN (SELECT pod FROM log_streams WHERE id = NEW.stream_id) = 'poison'
         BEGIN SELECT RAISE(ABORT, 'injected failure'); END;",
    )
    .unwrap();
    let e = store.write_logs(b.clone()).await.unwrap_err();
    assert!(e.to_string().contains("injected failure"), "{e}");
    assert_eq!(
        count(&store).await,
        0,
        "nothing of the failed batch is visible"
    );
    let streams: i64 = c
        .query_row("SELECT count(*) FROM log_streams", [], |r| r.get(0))
        .unwrap();
    assert_eq!(streams, 0, "nor its streams");
    c.execute_batch("DROP TRIGGER poison").unwrap();
    let o = store.write_logs(b).await.unwrap();
    assert_eq!(
        o.records_written, 40,
        "the retry is not mistaken for a duplicate: {o:?}"
    );
    assert_eq!(o.streams_created, 4);
    assert_eq!(count(&store).await, 40);
}

/// Another connection holding the write lock makes writes fail with a
/// retryable error (503/429 upstream), not hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_database_is_a_retryable_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("insight.db");
    let config = SqliteLogConfig {
        busy_timeout: Duration::from_millis(100),
        ..Default::default()
    };
    let store = SqliteLogStore::open_with(&path, StoreOptions::default(), config)
        .await
        .unwrap();
    let locker = rusqlite::Connection::open(&path).unwrap();
    locker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let e = store
        .write_logs(batch("p", now_ns(), 5, "l"))
        .await
        .unwrap_err();
    assert!(e.is_retryable(), "{e}");
    locker.execute_batch("ROLLBACK").unwrap();
    store
        .write_logs(batch("p", now_ns(), 5, "l"))
        .await
        .unwrap();
    assert_eq!(count(&store).await, 5);
}

/// Small writes are merged size-tiered into compressed blocks, and a closed
/// hour is finalised into one sealed block per stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_blocks_are_merged_and_closed_hours_sealed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("insight.db");
    let config = SqliteLogConfig {
        fanout: 4,
        ..Default::default()
    };
    let store = SqliteLogStore::open_with(&path, StoreOptions::default(), config)
        .await
        .unwrap();
    // This hour's bucket: maintenance at `now` leaves it open, so it serves
    // as a barrier (merges run on the writer thread after the answer).
    let hour = 3_600_000 * MS;
    let t = now_ns() / hour * hour;
    let now_ms = kube_insight_core::time::now_ms();
    for i in 0..16 {
        store
            .write_logs(batch("p", t + i * 100 * MS, 10, &format!("w{i}")))
            .await
            .unwrap();
    }
    assert_eq!(store.maintain_logs(now_ms).await.unwrap().blocks_merged, 0);
    // 16 tier-0 → 4 tier-1 → 1 tier-2.
    assert_eq!(blocks(&path), vec![(2, 160)]);
    store
        .write_logs(batch("p", t + 5_000 * MS, 10, "tail"))
        .await
        .unwrap();
    store.maintain_logs(now_ms).await.unwrap();
    assert_eq!(blocks(&path).len(), 2);
    // Once the hour is closed (and the grace period past) it is sealed.
    let m = store.maintain_logs(now_ms + 2 * 3_600_000).await.unwrap();
    assert_eq!(m.blocks_merged, 2, "{m:?}");
    assert_eq!(blocks(&path), vec![(255, 170)]);
    assert_eq!(count(&store).await, 170);
    // Late records for a sealed hour get a new block, finalised next time.
    store
        .write_logs(batch("p", t + 10 * MS, 1, "late"))
        .await
        .unwrap();
    store.maintain_logs(now_ms + 2 * 3_600_000).await.unwrap();
    assert_eq!(blocks(&path), vec![(255, 170), (255, 1)]);
    let rows = store.query_logs(&all()).await.unwrap().rows;
    assert_eq!(rows.len(), 171);
    assert!(rows
        .windows(2)
        .all(|w| w[0].record.timestamp_ns >= w[1].record.timestamp_ns));
}

/// A full write queue answers Overloaded (429 upstream) instead of waiting
/// without bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_is_overloaded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("insight.db");
    let config = SqliteLogConfig {
        queue_capacity: 1,
        enqueue_timeout: Duration::from_millis(10),
        busy_timeout: Duration::from_secs(3),
        ..Default::default()
    };
    let store = Arc::new(
        SqliteLogStore::open_with(&path, StoreOptions::default(), config)
            .await
            .unwrap(),
    );
    // Hold the write lock so the writer thread blocks on its first batch.
    let locker = rusqlite::Connection::open(&path).unwrap();
    locker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let mut tasks = Vec::new();
    for i in 0..6 {
        let s = store.clone();
        tasks.push(tokio::spawn(async move {
            s.write_logs(batch(&format!("p{i}"), now_ns(), 3, "q"))
                .await
        }));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut overloaded = 0;
    tokio::time::sleep(Duration::from_millis(200)).await;
    locker.execute_batch("ROLLBACK").unwrap();
    for t in tasks {
        if let Err(Error::Overloaded(m)) = t.await.unwrap() {
            assert!(m.contains("queue is full"), "{m}");
            overloaded += 1;
        }
    }
    assert!(overloaded >= 3, "{overloaded} overloaded");
}
