//! The logs cases of the storage conformance suite: written once, run by
//! every [`LogStore`] backend, which must all give the same answers.
//!
//! [`log_store_conformance_suite!`](crate::log_store_conformance_suite)
//! expands to one named `#[tokio::test]` per case:
//!
//! ```ignore
//! kube_insight_store::log_store_conformance_suite!(|options: StoreOptions| async move {
//!     let dir = tempfile::tempdir().unwrap();
//!     let store: Arc<dyn LogStore> = Arc::new(open_my_backend(dir.path(), options).await.unwrap());
//!     (store, dir) // the second element is kept alive for the test
//! });
//! ```
//!
//! Timestamps are near the wall clock (stores refuse records older than
//! retention); time-dependent cases inject `now` through
//! [`LogStore::maintain_logs`].
//!
//! Contract points the cases pin down (beyond the trait docs):
//! - `range` is inclusive in whole milliseconds.
//! - A page holds at most `limit` rows; `next_cursor` is `None` once no row
//!   is left; following cursors returns every row exactly once, in order.
//! - `contains` never matches across two lines.
//! - Maintenance (merging, finalising) never changes an answer.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic is a failing case

use crate::logs::{
    stream_hash, LogBatch, LogQuery, LogRateQuery, LogRow, LogSelector, LogStore, LogStreamBatch,
};
use crate::{Error, StoreOptions};
use kube_insight_core::entity::Workload;
use kube_insight_core::log::{LineFilter, LogRecord, LogStreamKey, LogStreamMeta, StdStream};
use kube_insight_core::{Level, TimeRange};
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

pub type DynLogStore = Arc<dyn LogStore>;

/// Every case, in the order the macro runs them.
pub const CASES: &[&str] = &[
    "logs_write_read_exact",
    "logs_newest_first",
    "logs_paging_with_cursors",
    "logs_paging_while_writing",
    "logs_contains",
    "logs_regex",
    "logs_level_filter",
    "logs_time_range_inclusive",
    "logs_selectors",
    "logs_retry_is_idempotent",
    "logs_all_or_nothing_and_empty",
    "logs_many_small_batches_then_maintenance",
    "logs_rate",
    "logs_retention",
    "logs_scan_limit",
    "logs_concurrent_writers_and_readers",
];

const MS: i64 = 1_000_000;
const SEC: i64 = 1_000 * MS;
const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;

/// The options a case runs with.
pub fn options_for(case: &str) -> StoreOptions {
    let mut o = StoreOptions::default();
    if case == "logs_retention" {
        o.retention.logs = std::time::Duration::from_secs(86_400);
    }
    o
}

#[macro_export]
macro_rules! log_store_conformance_suite {
    // A backend that needs a server: the factory takes the case's name and
    // returns `None` (after saying why) when there is none; the cases skip.
    (optional $factory:expr) => {
        $crate::log_store_conformance_suite!(@list optional $factory);
    };
    (@list $mode:ident $factory:expr) => {
        $crate::log_store_conformance_suite!(@$mode $factory;
            logs_write_read_exact,
            logs_newest_first,
            logs_paging_with_cursors,
            logs_paging_while_writing,
            logs_contains,
            logs_regex,
            logs_level_filter,
            logs_time_range_inclusive,
            logs_selectors,
            logs_retry_is_idempotent,
            logs_all_or_nothing_and_empty,
            logs_many_small_batches_then_maintenance,
            logs_rate,
            logs_retention,
            logs_scan_limit,
            logs_concurrent_writers_and_readers,
        );
    };
    (@optional $factory:expr; $($case:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let options = $crate::conformance_logs::options_for(stringify!($case));
                let Some((store, _guard)) = ($factory)(stringify!($case), options).await else {
                    return;
                };
                $crate::conformance_logs::$case(store).await;
            }
        )+
    };
    (@cases $factory:expr; $($case:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let options = $crate::conformance_logs::options_for(stringify!($case));
                let (store, _guard) = ($factory)(options).await;
                $crate::conformance_logs::$case(store).await;
            }
        )+
    };
    ($factory:expr) => {
        $crate::log_store_conformance_suite!(@list cases $factory);
    };
}

// ---------------------------------------------------------------------------
// Helpers

/// An hour ago, on a whole second, in nanoseconds.
fn t0() -> i64 {
    (kube_insight_core::time::now_ms() - HOUR_MS) / 1000 * 1000 * MS
}

fn key(ns: &str, pod: &str, container: &str) -> LogStreamKey {
    LogStreamKey::new("prod", ns, pod, container)
}

fn meta(workload: Option<&str>) -> LogStreamMeta {
    let mut m = LogStreamMeta {
        node: "node-1".into(),
        image: "registry.example.com/app:1.0".into(),
        pod_id: "7d0c2c4e-5b6a-4f3e-9d8c-1a2b3c4d5e6f".into(),
        container_id: "4f1c2d9e8b7a".into(),
        workload: workload.map(|w| Workload {
            kind: "Deployment".into(),
            name: w.into(),
        }),
        ..Default::default()
    };
    m.insert_label("app", workload.unwrap_or("bare"));
    m
}

fn rec(ts: i64, line: &str) -> LogRecord {
    LogRecord {
        timestamp_ns: ts,
        line: line.to_string(),
        level: kube_insight_core::extract_level(line),
        ..Default::default()
    }
}

fn stream(k: LogStreamKey, workload: Option<&str>, records: Vec<LogRecord>) -> LogStreamBatch {
    LogStreamBatch {
        key: k,
        meta: meta(workload),
        records,
    }
}

fn batch(streams: Vec<LogStreamBatch>) -> LogBatch {
    LogBatch {
        cluster: "prod".into(),
        streams,
    }
}

fn all_time() -> TimeRange {
    TimeRange::new(0, i64::MAX / 1_000_000 - 1).unwrap()
}

fn query(sel: LogSelector) -> LogQuery {
    let mut q = LogQuery::new(sel, all_time());
    q.limit = 100_000;
    q
}

fn everything() -> LogQuery {
    query(LogSelector::default())
}

async fn lines(store: &DynLogStore, q: &LogQuery) -> Vec<String> {
    store
        .query_logs(q)
        .await
        .unwrap()
        .rows
        .into_iter()
        .map(|r| r.record.line)
        .collect()
}

/// Follows cursors to the end with `limit` rows per page.
async fn all_pages(store: &DynLogStore, q: &LogQuery, limit: usize) -> (Vec<LogRow>, usize) {
    let mut q = q.clone();
    q.limit = limit;
    q.cursor = None;
    let mut out = Vec::new();
    let mut pages = 0;
    loop {
        let page = store.query_logs(&q).await.unwrap();
        pages += 1;
        assert!(
            page.rows.len() <= limit,
            "page of {} rows over limit {limit}",
            page.rows.len()
        );
        out.extend(page.rows);
        match page.next_cursor {
            Some(c) => q.cursor = Some(c),
            None => break,
        }
        assert!(pages < 100_000, "paging does not end");
    }
    (out, pages)
}

/// The sort key the contract defines (newest first).
fn order_key(r: &LogRow) -> (i64, std::cmp::Reverse<u64>) {
    (
        r.record.timestamp_ns,
        std::cmp::Reverse(stream_hash(&r.key)),
    )
}

fn assert_newest_first(rows: &[LogRow]) {
    for w in rows.windows(2) {
        assert!(
            order_key(&w[0]) >= order_key(&w[1]),
            "not newest first: {:?} then {:?}",
            w[0],
            w[1]
        );
    }
}

// ---------------------------------------------------------------------------
// Cases

/// Every field written comes back as written, with its stream and workload.
pub async fn logs_write_read_exact(store: DynLogStore) {
    let t = t0();
    let records = vec![
        LogRecord {
            timestamp_ns: t + 123_456_789,
            stream: StdStream::Stderr,
            line: "{\"level\":\"error\",\"msg\":\"upstream timeout ✓ ünïcødé\"}".into(),
            partial: false,
            truncated: false,
            level: Some(Level::Error),
            fields: Some("{\"trace_id\":\"abc\",\"n\":5}".into()),
        },
        LogRecord {
            timestamp_ns: t + 223_456_789,
            stream: StdStream::Stdout,
            line: "first half of a long line".into(),
            partial: true,
            truncated: true,
            level: None,
            fields: None,
        },
        LogRecord {
            timestamp_ns: t + 323_456_789,
            stream: StdStream::Stdout,
            line: String::new(),
            partial: false,
            truncated: false,
            level: Some(Level::Debug),
            fields: Some(String::new()),
        },
    ];
    let other = rec(t + 5, "other stream");
    let o = store
        .write_logs(batch(vec![
            stream(
                key("shop", "api-5f6d7c8b9-qwz7p", "api"),
                Some("api"),
                records.clone(),
            ),
            stream(key("default", "lonely", "main"), None, vec![other.clone()]),
        ]))
        .await
        .unwrap();
    assert_eq!(o.records_written, 4, "{o:?}");
    assert_eq!(o.streams_created, 2, "{o:?}");
    assert_eq!((o.records_duplicate, o.records_too_old), (0, 0), "{o:?}");

    let page = store.query_logs(&everything()).await.unwrap();
    assert_eq!(page.next_cursor, None);
    assert_eq!(page.rows.len(), 4);
    let want: Vec<&LogRecord> = records.iter().rev().collect();
    let got: Vec<&LogRecord> = page
        .rows
        .iter()
        .filter(|r| r.key.pod != "lonely")
        .map(|r| &r.record)
        .collect();
    assert_eq!(got, want, "records come back field by field, newest first");
    let api = &page.rows[0];
    assert_eq!(
        api.key,
        LogStreamKey::new("prod", "shop", "api-5f6d7c8b9-qwz7p", "api")
    );
    assert_eq!(api.workload.as_deref(), Some("api"));
    let lonely = page.rows.iter().find(|r| r.key.pod == "lonely").unwrap();
    assert_eq!(lonely.record, other);
    assert_eq!(lonely.workload, None);
    assert_eq!(
        page.rows.last().unwrap().key.pod,
        "lonely",
        "the oldest row is last"
    );
}

/// Rows of several streams interleave by time, newest first; equal times
/// are ordered by stream, then newest written first.
pub async fn logs_newest_first(store: DynLogStore) {
    let t = t0();
    let a = key("ns", "a", "c");
    let b = key("ns", "b", "c");
    store
        .write_logs(batch(vec![
            stream(
                a.clone(),
                None,
                vec![
                    rec(t + 1, "a1"),
                    rec(t + 4, "a4"),
                    rec(t + 4, "a4bis"),
                    rec(t + 9, "a9"),
                ],
            ),
            stream(
                b.clone(),
                None,
                vec![rec(t + 2, "b2"), rec(t + 4, "b4"), rec(t + 10, "b10")],
            ),
        ]))
        .await
        .unwrap();
    // Out of order within a write, and a later write with older records.
    store
        .write_logs(batch(vec![stream(
            a.clone(),
            None,
            vec![rec(t + 7, "a7"), rec(t + 3, "a3")],
        )]))
        .await
        .unwrap();
    let got = lines(&store, &everything()).await;
    let (first, second) = if stream_hash(&a) < stream_hash(&b) {
        ("a4bis", "b4")
    } else {
        ("b4", "a4bis")
    };
    let mut want = vec!["b10", "a9", "a7"];
    if first == "a4bis" {
        want.extend(["a4bis", "a4", "b4"]);
    } else {
        want.extend([first, second, "a4"]);
    }
    want.extend(["a3", "b2", "a1"]);
    assert_eq!(got, want);
}

fn paging_fixture(t: i64) -> Vec<LogStreamBatch> {
    // 3 streams, 300 records, many sharing a timestamp within and across streams.
    (0..3)
        .map(|s| {
            let recs = (0..100)
                .map(|i| rec(t + (i / 4) * MS, &format!("s{s} r{i:03}")))
                .collect();
            stream(key("ns", &format!("pod-{s}"), "c"), Some("w"), recs)
        })
        .collect()
}

/// Following cursors returns every row exactly once, in the same order as
/// one big page, for any page size.
pub async fn logs_paging_with_cursors(store: DynLogStore) {
    let t = t0();
    store.write_logs(batch(paging_fixture(t))).await.unwrap();
    let full = store.query_logs(&everything()).await.unwrap().rows;
    assert_eq!(full.len(), 300);
    assert_newest_first(&full);
    for limit in [1, 2, 3, 7, 64, 299, 300, 1000] {
        let (rows, pages) = all_pages(&store, &everything(), limit).await;
        assert_eq!(rows, full, "page size {limit}");
        assert!(
            pages >= 300usize.div_ceil(limit),
            "page size {limit}: {pages} pages"
        );
        let uniq: HashSet<&str> = rows.iter().map(|r| r.record.line.as_str()).collect();
        assert_eq!(uniq.len(), 300);
    }
    // A filtered query pages the same way.
    let mut q = everything();
    q.filter = LineFilter::new(Some("s1 "), None).unwrap();
    let (rows, _) = all_pages(&store, &q, 9).await;
    assert_eq!(rows.len(), 100);
    assert!(rows.iter().all(|r| r.key.pod == "pod-1"));
    // A cursor that is not one of ours is refused, not misread.
    assert!(crate::LogCursor::decode("garbage").is_err());
}

/// Rows newer than a page written while paging do not shift later pages.
pub async fn logs_paging_while_writing(store: DynLogStore) {
    let t = t0();
    store.write_logs(batch(paging_fixture(t))).await.unwrap();
    let full = store.query_logs(&everything()).await.unwrap().rows;
    let mut q = everything();
    q.limit = 50;
    let mut out = Vec::new();
    let mut i = 0;
    loop {
        let page = store.query_logs(&q).await.unwrap();
        out.extend(page.rows);
        // Newer records (after every existing row) arrive between pages.
        store
            .write_logs(batch(vec![stream(
                key("ns", "late", "c"),
                None,
                vec![rec(t + HOUR_MS * MS / 2 + i, &format!("late {i}"))],
            )]))
            .await
            .unwrap();
        i += 1;
        match page.next_cursor {
            Some(c) => q.cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(out, full);
}

/// `contains` is a case-sensitive substring of one line.
pub async fn logs_contains(store: DynLogStore) {
    let t = t0();
    store
        .write_logs(batch(vec![stream(
            key("ns", "p", "c"),
            None,
            vec![
                rec(t + 1, "GET /api/orders 200"),
                rec(t + 2, "upstream timeout on /api/orders"),
                rec(t + 3, "abc"),
                rec(t + 4, "def"),
                rec(t + 5, "Timeout (capitalised)"),
                rec(t + 6, "ünïcødé timeout ✓"),
            ],
        )]))
        .await
        .unwrap();
    let mut q = everything();
    q.filter = LineFilter::new(Some("timeout"), None).unwrap();
    assert_eq!(
        lines(&store, &q).await,
        vec!["ünïcødé timeout ✓", "upstream timeout on /api/orders"]
    );
    q.filter = LineFilter::new(Some("cd"), None).unwrap();
    assert!(
        lines(&store, &q).await.is_empty(),
        "\"abc\" then \"def\" must not match \"cd\""
    );
    q.filter = LineFilter::new(Some("ïcø"), None).unwrap();
    assert_eq!(lines(&store, &q).await.len(), 1);
    q.filter = LineFilter::new(Some("/api/orders"), None).unwrap();
    assert_eq!(lines(&store, &q).await.len(), 2);
}

/// `regex` is Rust regex syntax on the line, combined with `contains` (AND).
pub async fn logs_regex(store: DynLogStore) {
    let t = t0();
    store
        .write_logs(batch(vec![stream(
            key("ns", "p", "c"),
            None,
            vec![
                rec(t + 1, "GET /a 200 12ms"),
                rec(t + 2, "GET /b 503 5003ms"),
                rec(t + 3, "POST /c 500 1ms"),
                rec(t + 4, "get /d 502 2ms"),
            ],
        )]))
        .await
        .unwrap();
    let mut q = everything();
    q.filter = LineFilter::new(None, Some(r" 5\d\d ")).unwrap();
    assert_eq!(
        lines(&store, &q).await,
        vec!["get /d 502 2ms", "POST /c 500 1ms", "GET /b 503 5003ms"]
    );
    q.filter = LineFilter::new(Some("GET"), Some(r" 5\d\d ")).unwrap();
    assert_eq!(lines(&store, &q).await, vec!["GET /b 503 5003ms"]);
    q.filter = LineFilter::new(None, Some("(?i)^get ")).unwrap();
    assert_eq!(lines(&store, &q).await.len(), 3);
    q.filter = LineFilter::new(None, Some("^POST /c 500 1ms$")).unwrap();
    assert_eq!(lines(&store, &q).await, vec!["POST /c 500 1ms"]);
}

/// `levels` selects by level; `None` selects records without one.
pub async fn logs_level_filter(store: DynLogStore) {
    let t = t0();
    let k = key("ns", "p", "c");
    store
        .write_logs(batch(vec![stream(
            k.clone(),
            None,
            vec![
                rec(t + 1, "ERROR one"),
                rec(t + 2, "WARN two"),
                rec(t + 3, "plain three"),
                rec(t + 4, "level=error four"),
                rec(t + 5, "[debug] five"),
            ],
        )]))
        .await
        .unwrap();
    // A block with only info lines (pruned by its level counts).
    store
        .write_logs(batch(vec![stream(
            k,
            None,
            vec![rec(t + 6, "INFO six"), rec(t + 7, "INFO seven")],
        )]))
        .await
        .unwrap();
    let mut q = everything();
    q.levels = vec![Some(Level::Error)];
    assert_eq!(
        lines(&store, &q).await,
        vec!["level=error four", "ERROR one"]
    );
    q.levels = vec![Some(Level::Warn), Some(Level::Debug)];
    assert_eq!(lines(&store, &q).await, vec!["[debug] five", "WARN two"]);
    q.levels = vec![None];
    assert_eq!(lines(&store, &q).await, vec!["plain three"]);
    q.levels = vec![Some(Level::Fatal)];
    assert!(lines(&store, &q).await.is_empty());
    let page = store.query_logs(&everything()).await.unwrap();
    let levels: Vec<Option<Level>> = page.rows.iter().map(|r| r.record.level).collect();
    assert_eq!(
        levels,
        vec![
            Some(Level::Info),
            Some(Level::Info),
            Some(Level::Debug),
            Some(Level::Error),
            None,
            Some(Level::Warn),
            Some(Level::Error)
        ]
    );
}

/// Ranges are inclusive in whole milliseconds at both ends.
pub async fn logs_time_range_inclusive(store: DynLogStore) {
    let t = t0();
    let t_ms = t / MS;
    store
        .write_logs(batch(vec![stream(
            key("ns", "p", "c"),
            None,
            vec![
                rec(t - 1, "just before"),
                rec(t, "at start"),
                rec(t + 999_999, "end of the first ms"),
                rec(t + 5 * MS, "middle"),
                rec(t + 10 * MS + 999_999, "end of the last ms"),
                rec(t + 11 * MS, "just after"),
            ],
        )]))
        .await
        .unwrap();
    let mut q = everything();
    q.range = TimeRange::new(t_ms, t_ms + 10).unwrap();
    assert_eq!(
        lines(&store, &q).await,
        vec![
            "end of the last ms",
            "middle",
            "end of the first ms",
            "at start"
        ]
    );
    q.range = TimeRange::new(t_ms + 5, t_ms + 5).unwrap();
    assert_eq!(lines(&store, &q).await, vec!["middle"]);
    q.range = TimeRange::new(t_ms + 1, t_ms + 4).unwrap();
    assert!(lines(&store, &q).await.is_empty());
    q.range = TimeRange::new(t_ms - 10_000, t_ms - 1).unwrap();
    assert_eq!(lines(&store, &q).await, vec!["just before"]);
}

/// Every selector part narrows by exact match; workload by name.
pub async fn logs_selectors(store: DynLogStore) {
    let t = t0();
    store
        .write_logs(batch(vec![
            stream(
                key("shop", "api-1", "api"),
                Some("api"),
                vec![rec(t + 1, "api-1 api")],
            ),
            stream(
                key("shop", "api-1", "istio-proxy"),
                Some("api"),
                vec![rec(t + 2, "api-1 proxy")],
            ),
            stream(
                key("shop", "api-2", "api"),
                Some("api"),
                vec![rec(t + 3, "api-2 api")],
            ),
            stream(
                key("shop", "web-1", "web"),
                Some("web"),
                vec![rec(t + 4, "web-1 web")],
            ),
            stream(
                key("default", "api-1", "api"),
                Some("api"),
                vec![rec(t + 5, "default api-1")],
            ),
        ]))
        .await
        .unwrap();
    let mut staging = batch(vec![stream(
        key("shop", "api-1", "api"),
        Some("api"),
        vec![rec(t + 6, "staging api-1")],
    )]);
    staging.cluster = "staging".into();
    staging.streams[0].key.cluster = "ignored: the batch's cluster wins".into();
    store.write_logs(staging).await.unwrap();

    let sel =
        |c: Option<&str>, ns: Option<&str>, w: Option<&str>, p: Option<&str>, ct: Option<&str>| {
            LogSelector {
                cluster: c.map(Into::into),
                namespace: ns.map(Into::into),
                workload: w.map(Into::into),
                pod: p.map(Into::into),
                container: ct.map(Into::into),
            }
        };
    let n = |s: LogSelector| {
        let store = store.clone();
        async move { lines(&store, &query(s)).await }
    };
    assert_eq!(n(sel(None, None, None, None, None)).await.len(), 6);
    assert_eq!(
        n(sel(Some("staging"), None, None, None, None)).await,
        vec!["staging api-1"]
    );
    assert_eq!(
        n(sel(Some("prod"), Some("shop"), None, None, None))
            .await
            .len(),
        4
    );
    assert_eq!(
        n(sel(Some("prod"), Some("shop"), Some("api"), None, None)).await,
        vec!["api-2 api", "api-1 proxy", "api-1 api"]
    );
    assert_eq!(
        n(sel(Some("prod"), None, None, Some("api-1"), None)).await,
        vec!["default api-1", "api-1 proxy", "api-1 api"]
    );
    assert_eq!(
        n(sel(
            Some("prod"),
            Some("shop"),
            None,
            Some("api-1"),
            Some("api")
        ))
        .await,
        vec!["api-1 api"]
    );
    assert!(n(sel(Some("prod"), Some("nope"), None, None, None))
        .await
        .is_empty());
    let rows = store
        .query_logs(&query(sel(Some("staging"), None, None, None, None)))
        .await
        .unwrap()
        .rows;
    assert_eq!(rows[0].key.cluster, "staging");
}

/// Re-sending a stored batch (a retry) stores nothing new, also after
/// maintenance; a batch differing in one record is new.
pub async fn logs_retry_is_idempotent(store: DynLogStore) {
    let t = t0();
    let b = batch(paging_fixture(t));
    let o = store.write_logs(b.clone()).await.unwrap();
    assert_eq!(o.records_written, 300);
    let o = store.write_logs(b.clone()).await.unwrap();
    assert_eq!((o.records_written, o.records_duplicate), (0, 300), "{o:?}");
    store
        .maintain_logs(kube_insight_core::time::now_ms())
        .await
        .unwrap();
    let o = store.write_logs(b.clone()).await.unwrap();
    assert_eq!(o.records_written, 0, "a retry after maintenance: {o:?}");
    // Retries racing each other.
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (s, b) = (store.clone(), b.clone());
        tasks.push(tokio::spawn(async move { s.write_logs(b).await.unwrap() }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().records_written, 0);
    }
    assert_eq!(lines(&store, &everything()).await.len(), 300);
    let mut changed = b.clone();
    changed.streams[1].records[7].line.push('!');
    let o = store.write_logs(changed).await.unwrap();
    assert_eq!(o.records_written, 300, "a different batch is not a retry");
    assert_eq!(lines(&store, &everything()).await.len(), 600);
}

/// Empty batches are no-ops; a batch is stored whole.
pub async fn logs_all_or_nothing_and_empty(store: DynLogStore) {
    let o = store.write_logs(LogBatch::default()).await.unwrap();
    assert_eq!(o, Default::default());
    let o = store
        .write_logs(batch(vec![stream(key("ns", "p", "c"), None, vec![])]))
        .await
        .unwrap();
    assert_eq!(o.records_written, 0);
    assert!(lines(&store, &everything()).await.is_empty());
    // Records spanning several hours (and so several blocks) of many streams.
    let t = t0() - 5 * HOUR_MS * MS;
    let streams: Vec<LogStreamBatch> = (0..20)
        .map(|s| {
            let recs = (0..50)
                .map(|i| rec(t + i * 7 * 60 * SEC, &format!("s{s} i{i}")))
                .collect();
            stream(key("ns", &format!("p{s}"), "c"), None, recs)
        })
        .collect();
    let o = store.write_logs(batch(streams)).await.unwrap();
    assert_eq!(o.records_written, 1000);
    assert_eq!(lines(&store, &everything()).await.len(), 1000);
}

/// Many small writes to the same streams (which a backend may merge into
/// larger blocks) read back identically before and after maintenance.
pub async fn logs_many_small_batches_then_maintenance(store: DynLogStore) {
    let t = t0() - 3 * HOUR_MS * MS;
    let mut n = 0;
    for i in 0..70 {
        let recs_a = (0..3)
            .map(|j| {
                rec(
                    t + (i * 3 + j) * 50 * SEC,
                    &format!("a {i} {j} ERROR maybe"),
                )
            })
            .collect();
        let recs_b = vec![rec(t + i * 150 * SEC + 1, &format!("b {i}"))];
        store
            .write_logs(batch(vec![
                stream(key("ns", "a", "c"), Some("w"), recs_a),
                stream(key("ns", "b", "c"), Some("w"), recs_b),
            ]))
            .await
            .unwrap();
        n += 4;
    }
    let before = store.query_logs(&everything()).await.unwrap().rows;
    assert_eq!(before.len(), n);
    assert_newest_first(&before);
    let (paged, _) = all_pages(&store, &everything(), 13).await;
    assert_eq!(paged, before);
    let m = store
        .maintain_logs(kube_insight_core::time::now_ms())
        .await
        .unwrap();
    assert_eq!(m.rows_expired, 0, "{m:?}");
    let after = store.query_logs(&everything()).await.unwrap().rows;
    assert_eq!(after, before, "maintenance changes no answer");
    let (paged, _) = all_pages(&store, &everything(), 13).await;
    assert_eq!(paged, before);
    let mut q = everything();
    q.filter = LineFilter::new(Some("a 42 "), None).unwrap();
    assert_eq!(lines(&store, &q).await.len(), 3);
}

/// Counts per step and level, for buckets aligned to the epoch.
pub async fn logs_rate(store: DynLogStore) {
    let t = t0() / (60 * SEC) * (60 * SEC); // a whole minute
    let t_ms = t / MS;
    let mut recs = Vec::new();
    for i in 0..120 {
        let line = match i % 4 {
            0 => format!("ERROR e{i}"),
            1 => format!("INFO i{i}"),
            2 => format!("INFO i{i}"),
            _ => format!("plain {i}"),
        };
        recs.push(rec(t + i * SEC, &line));
    }
    store
        .write_logs(batch(vec![stream(key("ns", "p", "c"), None, recs)]))
        .await
        .unwrap();
    let q = LogRateQuery {
        selector: LogSelector::default(),
        range: TimeRange::new(t_ms, t_ms + 119_999).unwrap(),
        filter: LineFilter::default(),
        levels: vec![],
        step_ms: 60_000,
        max_scan_bytes: usize::MAX,
        max_points: 11_000,
    };
    let got: Vec<(i64, Option<Level>, u64)> = store
        .log_rate(&q)
        .await
        .unwrap()
        .into_iter()
        .map(|p| (p.timestamp_ms - t_ms, p.level, p.count))
        .collect();
    assert_eq!(
        got,
        vec![
            (0, None, 15),
            (0, Some(Level::Info), 30),
            (0, Some(Level::Error), 15),
            (60_000, None, 15),
            (60_000, Some(Level::Info), 30),
            (60_000, Some(Level::Error), 15),
        ]
    );
    let mut q2 = q.clone();
    q2.levels = vec![Some(Level::Error)];
    q2.filter = LineFilter::new(Some("e1"), None).unwrap();
    q2.range = TimeRange::new(t_ms, t_ms + 59_999).unwrap();
    let got: Vec<u64> = store
        .log_rate(&q2)
        .await
        .unwrap()
        .iter()
        .map(|p| p.count)
        .collect();
    assert_eq!(
        got,
        vec![2],
        "ERROR e12 and ERROR e16 (\"INFO i1\" is not an error)"
    );
    let mut q3 = q.clone();
    q3.step_ms = 1;
    q3.max_points = 1000;
    assert!(matches!(
        store.log_rate(&q3).await,
        Err(Error::LimitExceeded { .. })
    ));
}

/// Maintenance deletes records older than retention; later writes that old
/// are refused and counted; newer records stay.
pub async fn logs_retention(store: DynLogStore) {
    let now = kube_insight_core::time::now_ms();
    let old = (now - 20 * HOUR_MS) * MS;
    let new = (now - HOUR_MS) * MS;
    store
        .write_logs(batch(vec![
            stream(
                key("ns", "old", "c"),
                None,
                vec![rec(old, "old 1"), rec(old + 1, "old 2")],
            ),
            stream(
                key("ns", "both", "c"),
                None,
                vec![rec(old, "both old"), rec(new, "both new")],
            ),
        ]))
        .await
        .unwrap();
    // Six hours later the old records are past the 1-day retention.
    let later = now + 6 * HOUR_MS;
    let m = store.maintain_logs(later).await.unwrap();
    assert!(m.rows_expired >= 2, "{m:?}");
    assert_eq!(lines(&store, &everything()).await, vec!["both new"]);
    let o = store
        .write_logs(batch(vec![stream(
            key("ns", "old", "c"),
            None,
            vec![rec(old + 2, "too old"), rec(new + 1, "fine")],
        )]))
        .await
        .unwrap();
    assert_eq!((o.records_written, o.records_too_old), (1, 1), "{o:?}");
    assert_eq!(lines(&store, &everything()).await, vec!["fine", "both new"]);
    // Everything expires eventually, streams included.
    store.maintain_logs(now + 2 * DAY_MS).await.unwrap();
    assert!(lines(&store, &everything()).await.is_empty());
}

/// A query that would scan more than its budget fails with LimitExceeded
/// instead of answering slowly; a narrower one succeeds.
pub async fn logs_scan_limit(store: DynLogStore) {
    let t = t0();
    let big = "x".repeat(1000);
    for i in 0..20 {
        let recs = (0..100)
            .map(|j| rec(t + (i * 100 + j) * MS, &format!("{big} {i} {j}")))
            .collect();
        store
            .write_logs(batch(vec![stream(key("ns", "p", "c"), None, recs)]))
            .await
            .unwrap();
    }
    let mut q = everything();
    q.filter = LineFilter::new(Some("never there"), None).unwrap();
    q.max_scan_bytes = 500_000; // the data is ~2 MB
    match store.query_logs(&q).await {
        Err(Error::LimitExceeded { what, limit }) => {
            assert_eq!(limit, 500_000);
            assert!(what.contains("log"), "{what}");
        }
        other => panic!("expected LimitExceeded, got {other:?}"),
    }
    // Within budget, the same queries answer (the budget is counted in
    // whole blocks, so it is set well above the data here).
    q.max_scan_bytes = 100 << 20;
    assert!(store.query_logs(&q).await.unwrap().rows.is_empty());
    q.filter = LineFilter::default();
    q.limit = 10;
    let page = store.query_logs(&q).await.unwrap();
    assert_eq!(page.rows.len(), 10);
    assert!(page.next_cursor.is_some());
    assert!(page.rows[0].record.line.ends_with(" 19 99"));
}

/// Concurrent writers lose nothing and duplicate nothing; concurrent
/// readers always see whole batches.
pub async fn logs_concurrent_writers_and_readers(store: DynLogStore) {
    let t = t0();
    let writers = 8;
    let per = 25;
    let mut tasks = Vec::new();
    for w in 0..writers {
        let s = store.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..per {
                let recs = (0..10)
                    .map(|j| rec(t + (w * 1000 + i * 10 + j) * MS, &format!("w{w} b{i} r{j}")))
                    .collect();
                let o = s
                    .write_logs(batch(vec![stream(
                        key("ns", &format!("pod-{}", w % 3), "c"),
                        None,
                        recs,
                    )]))
                    .await
                    .unwrap();
                assert_eq!(o.records_written, 10);
            }
        }));
    }
    let reader = {
        let s = store.clone();
        tokio::spawn(async move {
            for _ in 0..20 {
                let rows = s.query_logs(&everything()).await.unwrap().rows;
                assert_eq!(rows.len() % 10, 0, "a reader saw part of a batch");
                let mut per_batch: BTreeMap<String, usize> = BTreeMap::new();
                for r in &rows {
                    let b = r.record.line.rsplit_once(' ').unwrap().0.to_string();
                    *per_batch.entry(b).or_default() += 1;
                }
                assert!(per_batch.values().all(|&n| n == 10), "{per_batch:?}");
                tokio::task::yield_now().await;
            }
        })
    };
    for t in tasks {
        t.await.unwrap();
    }
    reader.await.unwrap();
    let rows = store.query_logs(&everything()).await.unwrap().rows;
    assert_eq!(rows.len(), (writers * per * 10) as usize);
    let uniq: HashSet<&str> = rows.iter().map(|r| r.record.line.as_str()).collect();
    assert_eq!(uniq.len(), rows.len());
    assert_newest_first(&rows);
}
