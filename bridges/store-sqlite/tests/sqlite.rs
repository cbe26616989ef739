//! The SQLite backend: the shared conformance suite, then what only an
//! embedded store can show (restart replay, a crash, failed commits,
//! back-pressure, disk use).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a panic is a failing test

use kube_insight_core::{Labels, Matcher, Sample, TimeRange, TimeSeries, STALE_NAN};
use kube_insight_store::{
    DynStore, Error, MetricBatch, MetricStore, Resolution, SelectQuery, SeriesQuery, Store,
    StoreOptions,
};
use kube_insight_store_sqlite::{SqliteConfig, SqliteStore, SCHEMA_VERSION};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

async fn fresh(options: StoreOptions) -> (DynStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("insight.db"), options)
        .await
        .unwrap();
    (Arc::new(store), dir)
}

mod conformance {
    use super::*;
    kube_insight_store::store_conformance_suite!(fresh);
}

const HOUR: i64 = 3_600_000;

fn now() -> i64 {
    kube_insight_core::time::now_ms()
}

fn labels(i: usize) -> Labels {
    Labels::from_pairs([
        ("__name__", "container_cpu_usage_seconds_total".to_string()),
        ("cluster", "prod".to_string()),
        ("namespace", format!("ns-{}", i % 7)),
        ("pod", format!("pod-{i}")),
        ("container", "app".to_string()),
        ("job", "kubelet".to_string()),
    ])
}

/// `n` series, samples every 15 s for `steps` steps from `t0`.
fn batch(n: usize, t0: i64, steps: std::ops::Range<i64>) -> MetricBatch {
    MetricBatch {
        cluster: "prod".into(),
        series: (0..n)
            .map(|i| {
                TimeSeries::new(
                    labels(i),
                    steps
                        .clone()
                        .map(|s| Sample::new(t0 + s * 15_000, (s * 10 + i as i64) as f64 * 0.5))
                        .collect(),
                )
            })
            .collect(),
    }
}

fn select_all() -> SelectQuery {
    SelectQuery {
        matchers: vec![Matcher::eq("job", "kubelet")],
        range: TimeRange::all(),
        max_series: 1_000_000,
        max_samples: 100_000_000,
        resolution: Resolution::Raw,
    }
}

fn count(ts: &[TimeSeries]) -> usize {
    ts.iter().map(|s| s.samples.len()).sum()
}

async fn open(path: &Path) -> SqliteStore {
    SqliteStore::open(path, StoreOptions::default())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_replays_the_wal_and_keeps_dedup() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("insight.db");
    let t0 = now() - HOUR;
    let before = {
        let store = open(&path).await;
        let o = store.write_samples(batch(50, t0, 0..20)).await.unwrap();
        assert_eq!(o.samples_written, 1000);
        // A stale marker and an out-of-order sample survive too.
        let mut b = batch(1, t0, 0..0);
        b.series[0].samples = vec![Sample::new(t0 + 25 * 15_000, STALE_NAN)];
        store.write_samples(b).await.unwrap();
        let mut b = batch(1, t0, 0..0);
        b.series[0].samples = vec![Sample::new(t0 + 7_500, 1.0)];
        store.write_samples(b).await.unwrap();
        store.select(&select_all()).await.unwrap()
    };
    assert_eq!(count(&before), 1002);
    let store = open(&path).await;
    let stats = store.replay_stats().clone();
    assert_eq!(stats.series, 50);
    assert_eq!(stats.samples, 1002, "{stats:?}");
    assert_eq!(stats.rows, 3, "{stats:?}");
    let after = store.select(&select_all()).await.unwrap();
    assert_eq!(before.len(), after.len());
    for (a, b) in before.iter().zip(&after) {
        assert_eq!(a.labels, b.labels);
        assert_eq!(a.samples.len(), b.samples.len());
        for (x, y) in a.samples.iter().zip(&b.samples) {
            assert!(x.bit_eq(y), "{x:?} != {y:?}");
        }
    }
    // Dedup holds across the restart (steps 10..20, and the stale marker at
    // step 25 of series 0), and series are not re-created.
    let o = store.write_samples(batch(50, t0, 10..30)).await.unwrap();
    assert_eq!(o.series_created, 0, "{o:?}");
    assert_eq!(o.samples_duplicate, 501, "{o:?}");
    assert_eq!(o.samples_written, 499, "{o:?}");
    assert_eq!(store.stats().active_series, vec![("prod".to_string(), 50)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_after_compaction_keeps_chunks_late_samples_and_dedup() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("insight.db");
    let t0 = (now() - 8 * HOUR).div_euclid(2 * HOUR) * 2 * HOUR;
    let all_steps = 0..(6 * 240); // 6 h at 15 s
    {
        let store = open(&path).await;
        for part in all_steps.clone().step_by(120) {
            let mut b = batch(20, t0, part..part + 120);
            // Leave a gap to fill late.
            for s in &mut b.series {
                s.samples.retain(|x| x.timestamp_ms != t0 + 15_000);
            }
            store.write_samples(b).await.unwrap();
        }
        let r = store.maintain(now()).await.unwrap();
        assert!(r.chunks_written >= 40, "{r:?}");
        // Late sample into the compacted first window, not yet merged.
        let o = store.write_samples(batch(20, t0, 1..2)).await.unwrap();
        assert_eq!(o.samples_written, 20);
    }
    let store = open(&path).await;
    let got = store.select(&select_all()).await.unwrap();
    assert_eq!(got.len(), 20);
    assert_eq!(count(&got), 20 * 6 * 240);
    // Compacted and late samples are duplicates after the restart.
    let o = store.write_samples(batch(20, t0, 0..3)).await.unwrap();
    assert_eq!((o.samples_written, o.samples_duplicate), (0, 60), "{o:?}");
    store.maintain(now()).await.unwrap();
    let got = store.select(&select_all()).await.unwrap();
    assert_eq!(count(&got), 20 * 6 * 240);
    for s in &got {
        assert!(s
            .samples
            .windows(2)
            .all(|w| w[0].timestamp_ms < w[1].timestamp_ms));
    }
}

/// A commit that fails (here: another process holds the write lock) answers
/// a retryable error and leaves nothing visible; the retry then stores all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_visible_after_a_failed_commit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("insight.db");
    let config = SqliteConfig {
        busy_timeout: Duration::from_millis(100),
        ..Default::default()
    };
    let store = SqliteStore::open_with(&path, StoreOptions::default(), config)
        .await
        .unwrap();
    let t0 = now() - HOUR;
    store.write_samples(batch(2, t0, 0..5)).await.unwrap();

    let locker = rusqlite::Connection::open(&path).unwrap();
    locker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let e = store.write_samples(batch(4, t0, 5..10)).await.unwrap_err();
    assert!(e.is_retryable(), "{e}");
    assert!(matches!(e, Error::Unavailable(_)), "{e}");
    let got = store.select(&select_all()).await.unwrap();
    assert_eq!(got.len(), 2, "the new series must not be visible");
    assert_eq!(count(&got), 10, "the new samples must not be visible");
    let listed = store
        .series(&SeriesQuery {
            matchers: vec![],
            range: TimeRange::all(),
            limit: 100,
        })
        .await
        .unwrap();
    assert_eq!(listed.len(), 2);
    locker.execute_batch("ROLLBACK").unwrap();

    let o = store.write_samples(batch(4, t0, 5..10)).await.unwrap();
    assert_eq!(o.samples_written, 20, "{o:?}");
    assert_eq!(o.series_created, 2, "{o:?}");
    assert_eq!(count(&store.select(&select_all()).await.unwrap()), 30);
    drop(store);
    // And the failed attempt left nothing in the WAL either.
    let store = open(&path).await;
    assert_eq!(store.replay_stats().samples, 30);
}

/// When the writer cannot keep up, writes fail fast with a retryable
/// Overloaded instead of queueing without bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_overloaded_quickly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("insight.db");
    let config = SqliteConfig {
        queue_capacity: 2,
        enqueue_timeout: Duration::from_millis(50),
        busy_timeout: Duration::from_secs(3),
        ..Default::default()
    };
    let store = Arc::new(
        SqliteStore::open_with(&path, StoreOptions::default(), config)
            .await
            .unwrap(),
    );
    let locker = rusqlite::Connection::open(&path).unwrap();
    locker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let t0 = now() - HOUR;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for k in 0..12 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store.write_samples(batch(3, t0, k..k + 1)).await
        }));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut overloaded = 0;
    for t in tasks {
        if let Err(e) = t.await.unwrap() {
            assert!(e.is_retryable(), "{e}");
            if matches!(e, Error::Overloaded(_)) {
                overloaded += 1;
            }
        }
    }
    locker.execute_batch("ROLLBACK").unwrap();
    assert!(overloaded >= 5, "only {overloaded} overloaded answers");
    assert!(started.elapsed() < Duration::from_secs(10));
    // The store recovers.
    let o = store.write_samples(batch(3, t0, 100..101)).await.unwrap();
    assert_eq!(o.samples_written, 3);
}

/// Compaction stores about what the codec produces per sample, empties the
/// head and the head WAL, and reads come back identical.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_stores_compact_chunks_and_truncates_the_wal() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("insight.db");
    let store = open(&path).await;
    let t0 = (now() - 6 * HOUR).div_euclid(2 * HOUR) * 2 * HOUR;
    let n = 300usize;
    // 4 h of 15 s scrapes: counters that grow slowly, gauges that mostly hold.
    for step in (0..960).step_by(40) {
        let series = (0..n)
            .map(|i| {
                let s: Vec<Sample> = (step..step + 40)
                    .map(|k| {
                        let v = if i % 2 == 0 {
                            (k * (i as i64 % 5 + 1) * 1024) as f64
                        } else {
                            ((k / 40) * 4096 + 1_000_000) as f64
                        };
                        Sample::new(t0 + k * 15_000, v)
                    })
                    .collect();
                TimeSeries::new(labels(i), s)
            })
            .collect();
        store
            .write_samples(MetricBatch {
                cluster: "prod".into(),
                series,
            })
            .await
            .unwrap();
    }
    let before = store.select(&select_all()).await.unwrap();
    assert_eq!(count(&before), n * 960);
    assert_eq!(store.stats().head_samples, (n * 960) as u64);
    // Everything is older than window + grace at now + 3 h.
    let r = store.maintain(now() + 3 * HOUR).await.unwrap();
    assert_eq!(r.samples_compacted, (n * 960) as u64, "{r:?}");
    assert_eq!(r.chunks_written, (n * 2) as u64, "{r:?}");
    let stats = store.stats();
    assert_eq!(stats.head_samples, 0);
    assert_eq!(stats.active_series, vec![("prod".to_string(), 0)]);
    let after = store.select(&select_all()).await.unwrap();
    assert_eq!(before, after);
    store.flush().await.unwrap();
    drop(store);

    let c = rusqlite::Connection::open(&path).unwrap();
    let (bytes, samples): (i64, i64) = c
        .query_row(
            "SELECT sum(length(data)), sum(count) FROM chunks",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    let wal_rows: i64 = c
        .query_row("SELECT count(*) FROM head_wal", [], |r| r.get(0))
        .unwrap();
    let rollups: i64 = c
        .query_row("SELECT count(*) FROM rollups", [], |r| r.get(0))
        .unwrap();
    let per_sample = bytes as f64 / samples as f64;
    eprintln!("chunk bytes/sample {per_sample:.2}");
    assert_eq!(samples, (n * 960) as i64);
    assert!(per_sample < 2.0, "{per_sample}");
    assert_eq!(wal_rows, 0, "every WAL row is covered by chunks");
    assert_eq!(rollups, (n * 2) as i64);
    let store = open(&path).await;
    assert_eq!(store.replay_stats().samples, 0);
    assert_eq!(store.select(&select_all()).await.unwrap(), after);
}

/// Retention deletes rows and the file gives the pages back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_shrinks_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("insight.db");
    let store = open(&path).await;
    let t0 = (now() - 10 * 24 * HOUR).div_euclid(2 * HOUR) * 2 * HOUR;
    for step in (0..480).step_by(60) {
        store
            .write_samples(batch(500, t0, step..step + 60))
            .await
            .unwrap();
    }
    store.maintain(now()).await.unwrap();
    store.flush().await.unwrap();
    let full = std::fs::metadata(&path).unwrap().len();
    let r = store.maintain(now() + 5 * 24 * HOUR).await.unwrap();
    assert!(r.rows_expired >= 1000, "{r:?}");
    store.flush().await.unwrap();
    let shrunk = std::fs::metadata(&path).unwrap().len();
    assert!(
        shrunk * 3 < full,
        "file did not shrink enough: {full} -> {shrunk}"
    );
    assert!(store.select(&select_all()).await.unwrap().is_empty());
    assert!(store.stats().disk_bytes.unwrap() > 0);
}

#[tokio::test]
async fn schema_version_mismatch_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("insight.db");
    let store = open(&path).await;
    assert_eq!(store.check_schema().await.unwrap(), SCHEMA_VERSION);
    let c = rusqlite::Connection::open(&path).unwrap();
    c.execute("UPDATE schema_version SET version = 99", [])
        .unwrap();
    let e = store.check_schema().await.unwrap_err();
    assert!(
        matches!(
            e,
            Error::SchemaMismatch {
                found: 99,
                wanted: SCHEMA_VERSION
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("kube-insight schema apply"), "{e}");
    drop(store);
    let e = SqliteStore::open(&path, StoreOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::SchemaMismatch { found: 99, .. }), "{e}");
}

#[tokio::test]
async fn open_by_url_creates_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/sub/dir/insight.db", dir.path().display());
    let store = kube_insight_store_sqlite::open(&url, StoreOptions::default())
        .await
        .unwrap();
    assert_eq!(store.backend(), "sqlite");
    store.ping().await.unwrap();
    assert!(dir.path().join("sub/dir/insight.db").exists());
}

/// The child half of [`a_crash_loses_nothing_acknowledged`]: writes until
/// killed, printing each acknowledged batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_child() {
    let Ok(path) = std::env::var("KI_CRASH_CHILD_DB") else {
        return; // only runs as the child
    };
    let store = Arc::new(open(Path::new(&path)).await);
    let t0: i64 = std::env::var("KI_CRASH_T0").unwrap().parse().unwrap();
    for step in 0i64.. {
        store
            .write_samples(batch(100, t0, step..step + 1))
            .await
            .unwrap();
        println!("ACK {step}");
    }
}

/// Kills a writer process mid-stream (SIGKILL: no flush, no clean close)
/// and checks every acknowledged batch is there after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("insight.db");
    let t0 = now() - 3 * HOUR;
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
        .env("KI_CRASH_CHILD_DB", &path)
        .env("KI_CRASH_T0", t0.to_string())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let mut last_ack = -1i64;
    for line in BufReader::new(out).lines() {
        let line = line.unwrap();
        if let Some(n) = line.strip_prefix("ACK ") {
            last_ack = n.parse().unwrap();
            if last_ack >= 150 {
                break;
            }
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(last_ack >= 150);
    let store = open(&path).await;
    let got = store.select(&select_all()).await.unwrap();
    assert_eq!(got.len(), 100);
    for s in &got {
        // Every acknowledged step is there, in order, once.
        assert!(s.samples.len() as i64 > last_ack, "{}", s.samples.len());
        for (k, x) in s.samples.iter().enumerate() {
            assert_eq!(x.timestamp_ms, t0 + k as i64 * 15_000);
        }
    }
}
