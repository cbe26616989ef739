//! Upgrading the embedded store from the previous release's schema
//! (version 1, kube-insight before the series columns were dropped): a store
//! file in exactly the layout version 1 wrote, with metrics in the head WAL,
//! in compacted chunks and in rollups, is opened by this build, migrated in
//! place, and reads back every sample it held.
//!
//! The file is made by writing with this build, then putting the `series`
//! table back into version 1's layout (its DDL verbatim, with the columns
//! version 1 filled: fingerprint, name, namespace, pod, container) and the
//! recorded version to 1, and dropping `install_keys` (added by version 3,
//! the secret-hash key). Every other table is unchanged since version 1, so
//! the result is the file version 1 would have left; opening it runs every
//! step since (1 → 2 → 3).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a panic is a failing test

use kube_insight_core::{Labels, Matcher, Sample, TimeRange, TimeSeries};
use kube_insight_store::{MetricBatch, MetricStore, Resolution, SelectQuery, Store, StoreOptions};
use kube_insight_store_sqlite::{SqliteStore, SCHEMA_VERSION};

const HOUR: i64 = 3_600_000;

/// Version 1's `series` table and indexes, as it created them.
const SERIES_V1: &str = "
CREATE TABLE series (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    fingerprint INTEGER NOT NULL,
    cluster     TEXT NOT NULL,
    labels      BLOB NOT NULL,
    name        TEXT NOT NULL,
    namespace   TEXT NOT NULL,
    pod         TEXT NOT NULL,
    container   TEXT NOT NULL,
    first_ms    INTEGER NOT NULL,
    last_ms     INTEGER NOT NULL
);
CREATE INDEX series_fingerprint ON series(fingerprint);
CREATE INDEX series_entity ON series(cluster, namespace, pod, container);
";

fn batch(t0: i64, steps: std::ops::Range<i64>) -> MetricBatch {
    MetricBatch {
        cluster: "prod".into(),
        series: (0..3)
            .map(|i| {
                TimeSeries::new(
                    Labels::from_pairs([
                        ("__name__", "container_memory_working_set_bytes".to_string()),
                        ("namespace", "shop".to_string()),
                        ("pod", format!("api-{i}")),
                        ("container", "api".to_string()),
                    ]),
                    steps
                        .clone()
                        .map(|s| Sample::new(t0 + s * 15_000, (s * 100 + i) as f64))
                        .collect(),
                )
            })
            .collect(),
    }
}

fn query() -> SelectQuery {
    SelectQuery {
        matchers: vec![Matcher::eq("namespace", "shop")],
        range: TimeRange::all(),
        max_series: 1000,
        max_samples: 1_000_000,
        resolution: Resolution::Raw,
    }
}

/// Rewrites a version-2 file into version 1's layout.
fn downgrade_to_v1(path: &std::path::Path) {
    let mut c = rusqlite::Connection::open(path).unwrap();
    let tx = c.transaction().unwrap();
    tx.execute_batch("ALTER TABLE series RENAME TO series_v2;")
        .unwrap();
    tx.execute_batch(SERIES_V1).unwrap();
    tx.execute_batch(
        "INSERT INTO series (id, fingerprint, cluster, labels, name, namespace, pod, container, first_ms, last_ms)
           SELECT id, id * 7919, cluster, labels, 'container_memory_working_set_bytes', 'shop', 'api-' || id, 'api', first_ms, last_ms
           FROM series_v2;
         DROP TABLE series_v2;
         DROP TABLE IF EXISTS install_keys;
         DELETE FROM schema_version;
         INSERT INTO schema_version (version) VALUES (1);",
    )
    .unwrap();
    tx.commit().unwrap();
    let columns: i64 = c
        .query_row(
            "SELECT count(*) FROM pragma_table_info('series')",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(columns, 10, "version 1's series table");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_of_the_previous_schema_is_migrated_and_reads_back() {
    assert_eq!(SCHEMA_VERSION, 3, "a new version: add its predecessor here");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("insight.db");
    let now = kube_insight_core::time::now_ms();
    // Two closed 2 h windows (compacted into chunks and rollups) and samples
    // of the open window (head, made durable in the WAL table).
    let t0 = (now - 5 * HOUR).div_euclid(2 * HOUR) * 2 * HOUR;
    let written = {
        let store = SqliteStore::open(&path, StoreOptions::default())
            .await
            .unwrap();
        store.write_samples(batch(t0, 0..960)).await.unwrap();
        let report = store.maintain(now).await.unwrap();
        assert!(report.chunks_written > 0, "{report:?}");
        store
            .write_samples(batch(t0, 960..(now - t0) / 15_000))
            .await
            .unwrap();
        store.flush().await.unwrap();
        store.select(&query()).await.unwrap()
    };
    assert_eq!(written.len(), 3);
    downgrade_to_v1(&path);

    // `kube-insight run` and `schema apply` open it through the URL.
    let url = format!("sqlite://{}", path.display());
    let store = kube_insight_store_sqlite::open(&url, StoreOptions::default())
        .await
        .unwrap();
    assert_eq!(store.check_schema().await.unwrap(), SCHEMA_VERSION);
    let columns: i64 = rusqlite::Connection::open(&path)
        .unwrap()
        .query_row(
            "SELECT count(*) FROM pragma_table_info('series')",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(columns, 5, "migrated to version 2's series table");
    let read = store.select(&query()).await.unwrap();
    assert_eq!(read.len(), written.len());
    for (a, b) in written.iter().zip(&read) {
        assert_eq!(a.labels, b.labels);
        assert_eq!(a.samples.len(), b.samples.len(), "{}", a.labels);
        assert!(a.samples.iter().zip(&b.samples).all(|(x, y)| x.bit_eq(y)));
    }
    // The rollups written under version 1 serve long-range reads.
    let mut rollup = query();
    rollup.resolution = Resolution::Rollup5m(kube_insight_core::RollupField::Max);
    rollup.range = TimeRange::new(t0, t0 + 4 * HOUR - 1).unwrap();
    let buckets = store.select(&rollup).await.unwrap();
    assert_eq!(buckets.len(), 3);
    assert_eq!(buckets[0].samples.len(), 48, "4 h of 5-minute buckets");
    // And it keeps taking writes: the series are found again, not re-created.
    let o = store
        .write_samples(batch(t0, (now - t0) / 15_000..(now - t0) / 15_000 + 2))
        .await
        .unwrap();
    assert_eq!(o.series_created, 0, "{o:?}");
}
