//! The storage conformance suite: written once, run by every backend, which
//! must all give the same answers.
//!
//! Each `case_*` function takes a fresh, empty store and panics on a
//! deviation. [`store_conformance_suite!`](crate::store_conformance_suite)
//! expands to one named `#[tokio::test]` per case, so a failure names the
//! case (the precedent is quickwit's `metastore_test_suite!`):
//!
//! ```ignore
//! kube_insight_store::store_conformance_suite!(|options: StoreOptions| async move {
//!     let dir = tempfile::tempdir().unwrap();
//!     let store = open_my_backend(dir.path(), options).await.unwrap();
//!     (store, dir) // the second element is kept alive for the test
//! });
//! ```
//!
//! The factory gets the [`StoreOptions`] the case needs ([`options_for`]).
//! Timestamps are near the wall clock, because stores refuse samples older
//! than retention; time-dependent cases inject `now` through
//! [`crate::Store::maintain`].
//!
//! Contract points the cases pin down (beyond the trait docs):
//! - `select` leaves out series with no sample in the range.
//! - `label_names`/`label_values` apply `limit` to the number of names or
//!   values returned; `series` and `select` to the number of series.
//! - A re-sent sample (same series and timestamp) keeps the first value.
//! - The series cap counts a cluster's active series; series already known
//!   keep being written when the cap is reached.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic is a failing case

use crate::{
    DynStore, EntityQuery, Error, MetricBatch, Resolution, RollupField, SelectQuery, SeriesQuery,
};
use crate::{StoreOptions, WriteOutcome};
use kube_insight_core::{
    Entity, Labels, MatchOp, Matcher, Sample, TimeRange, TimeSeries, STALE_NAN, STALE_NAN_BITS,
};

/// Every case, in the order the macro runs them.
pub const CASES: &[&str] = &[
    "case_schema_and_ping",
    "case_write_read_exact",
    "case_time_range_inclusive",
    "case_matchers",
    "case_dedup_resent_and_overlapping",
    "case_out_of_order",
    "case_series_label_names_values",
    "case_limits",
    "case_series_cap",
    "case_series_cap_frees_idle_series",
    "case_too_old_samples",
    "case_retention",
    "case_compaction_boundary",
    "case_rollup_reads",
    "case_concurrent_writers",
    "case_entities",
];

const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;

/// The options a case runs with.
pub fn options_for(case: &str) -> StoreOptions {
    let mut o = StoreOptions::default();
    if case == "case_series_cap" || case == "case_series_cap_frees_idle_series" {
        o.max_series_per_cluster = 3;
    }
    o
}

/// Expands to one `#[tokio::test]` per conformance case. The argument is a
/// callable taking [`StoreOptions`] and returning a future of
/// `(DynStore, guard)`; the guard (a `TempDir`, a keyspace dropper…) lives
/// until the case ends.
#[macro_export]
macro_rules! store_conformance_suite {
    // A backend that needs a server: the factory takes the case's name and
    // returns `None` (after saying why) when there is none; the cases skip.
    (optional $factory:expr) => {
        $crate::store_conformance_suite!(@list optional $factory);
    };
    (@list $mode:ident $factory:expr) => {
        $crate::store_conformance_suite!(@$mode $factory;
            case_schema_and_ping,
            case_write_read_exact,
            case_time_range_inclusive,
            case_matchers,
            case_dedup_resent_and_overlapping,
            case_out_of_order,
            case_series_label_names_values,
            case_limits,
            case_series_cap,
            case_series_cap_frees_idle_series,
            case_too_old_samples,
            case_retention,
            case_compaction_boundary,
            case_rollup_reads,
            case_concurrent_writers,
            case_entities,
            case_clusters,
        );
    };
    (@optional $factory:expr; $($case:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let options = $crate::conformance::options_for(stringify!($case));
                let Some((store, _guard)) = ($factory)(stringify!($case), options).await else {
                    return;
                };
                $crate::conformance::$case(store).await;
            }
        )+
    };
    (@cases $factory:expr; $($case:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let options = $crate::conformance::options_for(stringify!($case));
                let (store, _guard) = ($factory)(options).await;
                $crate::conformance::$case(store).await;
            }
        )+
    };
    ($factory:expr) => {
        $crate::store_conformance_suite!(@list cases $factory);
    };
}

// ---------------------------------------------------------------------------
// Helpers

fn now() -> i64 {
    kube_insight_core::time::now_ms()
}

/// A multiple of 2 h (the default chunk window), some hours ago.
fn aligned_hours_ago(h: i64) -> i64 {
    (now() - h * HOUR).div_euclid(2 * HOUR) * 2 * HOUR
}

pub fn labels(pairs: &[(&str, &str)]) -> Labels {
    Labels::from_pairs(pairs.iter().copied())
}

/// A cAdvisor-shaped label set (13 labels), as the kubelet exposes it once
/// kube-insight dropped `id` and `name`.
pub fn cadvisor_labels(metric: &str, namespace: &str, pod: &str, container: &str) -> Labels {
    labels(&[
        ("__name__", metric),
        ("cluster", "prod"),
        ("container", container),
        ("cpu", "total"),
        ("endpoint", "https-metrics"),
        ("image", "registry.example.com/shop/api:2.4.1"),
        ("instance", "10.0.3.17:10250"),
        ("job", "kubelet"),
        ("metrics_path", "/metrics/cadvisor"),
        ("namespace", namespace),
        ("node", "node-a"),
        ("pod", pod),
        ("service", "kubelet"),
    ])
}

fn series(l: &Labels, samples: &[(i64, f64)]) -> TimeSeries {
    TimeSeries::new(
        l.clone(),
        samples.iter().map(|&(t, v)| Sample::new(t, v)).collect(),
    )
}

fn batch(cluster: &str, series: Vec<TimeSeries>) -> MetricBatch {
    MetricBatch {
        cluster: cluster.to_string(),
        series,
    }
}

async fn write(store: &DynStore, b: MetricBatch) -> WriteOutcome {
    store.write_samples(b).await.expect("write_samples")
}

fn m(op: MatchOp, name: &str, value: &str) -> Matcher {
    Matcher::new(op, name, value).unwrap()
}

fn eq(name: &str, value: &str) -> Matcher {
    Matcher::eq(name, value)
}

fn select_q(matchers: Vec<Matcher>, range: TimeRange) -> SelectQuery {
    SelectQuery {
        matchers,
        range,
        max_series: 100_000,
        max_samples: 10_000_000,
        resolution: Resolution::Raw,
    }
}

fn series_q(matchers: Vec<Matcher>, range: TimeRange) -> SeriesQuery {
    SeriesQuery {
        matchers,
        range,
        limit: 100_000,
    }
}

async fn select(store: &DynStore, matchers: Vec<Matcher>, range: TimeRange) -> Vec<TimeSeries> {
    store
        .select(&select_q(matchers, range))
        .await
        .expect("select")
}

fn range(start: i64, end: i64) -> TimeRange {
    TimeRange::new(start, end).unwrap()
}

/// Asserts samples equal `want` bit for bit (NaN payloads included).
#[track_caller]
fn assert_samples(got: &[Sample], want: &[(i64, f64)]) {
    let g: Vec<(i64, u64)> = got
        .iter()
        .map(|s| (s.timestamp_ms, s.value.to_bits()))
        .collect();
    let w: Vec<(i64, u64)> = want.iter().map(|&(t, v)| (t, v.to_bits())).collect();
    assert_eq!(g, w, "samples differ (values shown as bits)");
}

fn names(ts: &[TimeSeries]) -> Vec<String> {
    ts.iter().map(|s| s.labels.to_string()).collect()
}

// ---------------------------------------------------------------------------
// Cases

/// The schema applies idempotently and checks; the store answers pings.
pub async fn case_schema_and_ping(store: DynStore) {
    assert!(!store.backend().is_empty());
    store.ping().await.unwrap();
    let v = store.apply_schema().await.unwrap();
    assert!(v >= 1);
    assert_eq!(store.apply_schema().await.unwrap(), v, "idempotent");
    assert_eq!(store.check_schema().await.unwrap(), v);
    store.flush().await.unwrap();
}

/// What is written reads back exactly: every value bit for bit (NaN
/// payloads, stale markers, infinities, -0.0, subnormals), labels intact,
/// series sorted by labels.
pub async fn case_write_read_exact(store: DynStore) {
    let t0 = now() - HOUR;
    let values = [
        1.0,
        -0.0,
        f64::from_bits(1),
        f64::MAX,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::NAN,
        f64::from_bits(0x7ff8_0000_dead_beef),
        STALE_NAN,
        42.5,
        1.877e8,
        1.877e8,
    ];
    let want: Vec<(i64, f64)> = values
        .iter()
        .enumerate()
        .map(|(i, &v)| (t0 + i as i64 * 15_000, v))
        .collect();
    let a = cadvisor_labels("container_memory_working_set_bytes", "shop", "api-1", "api");
    let b = cadvisor_labels("container_memory_working_set_bytes", "shop", "api-0", "api");
    let gauge: Vec<(i64, f64)> = (0..40)
        .map(|i| (t0 + i * 15_000, 100.0 + i as f64))
        .collect();
    let out = write(
        &store,
        batch("prod", vec![series(&a, &want), series(&b, &gauge)]),
    )
    .await;
    assert_eq!(out.samples_written, (want.len() + gauge.len()) as u64);
    assert_eq!(out.series_created, 2);
    assert_eq!(out.samples_duplicate, 0);

    let got = select(
        &store,
        vec![eq("__name__", "container_memory_working_set_bytes")],
        TimeRange::all(),
    )
    .await;
    assert_eq!(got.len(), 2);
    // Sorted by labels: pod api-0 before api-1.
    assert_eq!(got[0].labels, b);
    assert_eq!(got[1].labels, a);
    assert_samples(&got[0].samples, &gauge);
    assert_samples(&got[1].samples, &want);
    assert!(got[1]
        .samples
        .iter()
        .any(|s| s.value.to_bits() == STALE_NAN_BITS));
}

/// Both ends of a range are inclusive; a series with nothing in the range is
/// left out of `select` and `series`.
pub async fn case_time_range_inclusive(store: DynStore) {
    let t0 = now() - HOUR;
    let l = labels(&[("__name__", "up"), ("job", "api")]);
    let s: Vec<(i64, f64)> = (0..5).map(|i| (t0 + i * 15_000, i as f64)).collect();
    write(&store, batch("prod", vec![series(&l, &s)])).await;
    let q = |a, b| select(&store, vec![eq("__name__", "up")], range(a, b));
    assert_samples(&q(t0 + 15_000, t0 + 45_000).await[0].samples, &s[1..4]);
    assert_samples(&q(t0, t0).await[0].samples, &s[..1]);
    assert_samples(&q(t0 + 60_000, t0 + 60_000).await[0].samples, &s[4..]);
    assert_samples(&q(t0 - 1, t0 + 1).await[0].samples, &s[..1]);
    assert!(
        q(t0 + 1, t0 + 14_999).await.is_empty(),
        "gap between samples"
    );
    assert!(q(t0 - 10_000, t0 - 1).await.is_empty(), "before");
    assert!(q(t0 + 60_001, t0 + HOUR).await.is_empty(), "after");
    let sq = |a, b| series_q(vec![eq("__name__", "up")], range(a, b));
    let listed = store.series(&sq(t0 + 60_000, t0 + HOUR)).await.unwrap();
    assert_eq!(listed, vec![l.clone()]);
    assert!(store
        .series(&sq(t0 + 60_001, t0 + HOUR))
        .await
        .unwrap()
        .is_empty());
    assert!(store
        .series(&sq(t0 - HOUR, t0 - 1))
        .await
        .unwrap()
        .is_empty());
}

/// The four matcher kinds, anchored regexes, AND of matchers, and absent
/// labels matching as "".
pub async fn case_matchers(store: DynStore) {
    let t0 = now() - HOUR;
    let a = labels(&[("__name__", "up"), ("job", "api"), ("instance", "a:9090")]);
    let b = labels(&[
        ("__name__", "up"),
        ("job", "api"),
        ("instance", "b:9090"),
        ("zone", "z1"),
    ]);
    let c = labels(&[("__name__", "up"), ("job", "db"), ("instance", "c:9090")]);
    let d = labels(&[("__name__", "other"), ("job", "api")]);
    write(
        &store,
        batch(
            "prod",
            [&a, &b, &c, &d]
                .iter()
                .map(|l| series(l, &[(t0, 1.0)]))
                .collect(),
        ),
    )
    .await;
    let all = TimeRange::all();
    let sel = |ms: Vec<Matcher>| select(&store, ms, all);
    let check = |got: Vec<TimeSeries>, want: &[&Labels]| {
        let got: Vec<Labels> = got.into_iter().map(|s| s.labels).collect();
        let mut want: Vec<Labels> = want.iter().map(|l| (*l).clone()).collect();
        want.sort();
        assert_eq!(got, want);
    };
    check(sel(vec![eq("__name__", "up")]).await, &[&a, &b, &c]);
    check(sel(vec![eq("job", "api")]).await, &[&a, &b, &d]);
    check(
        sel(vec![eq("__name__", "up"), eq("job", "api")]).await,
        &[&a, &b],
    );
    check(
        sel(vec![
            eq("__name__", "up"),
            m(MatchOp::NotEqual, "job", "api"),
        ])
        .await,
        &[&c],
    );
    check(
        sel(vec![m(MatchOp::RegexMatch, "instance", "(a|c):9090")]).await,
        &[&a, &c],
    );
    // Anchored: "a" alone matches no instance.
    check(
        sel(vec![m(MatchOp::RegexMatch, "instance", "a")]).await,
        &[],
    );
    check(
        sel(vec![
            eq("__name__", "up"),
            m(MatchOp::RegexNoMatch, "instance", "a.*"),
        ])
        .await,
        &[&b, &c],
    );
    // Absent labels are "".
    check(
        sel(vec![eq("__name__", "up"), eq("zone", "")]).await,
        &[&a, &c],
    );
    check(sel(vec![m(MatchOp::NotEqual, "zone", "")]).await, &[&b]);
    check(
        sel(vec![
            eq("__name__", "up"),
            m(MatchOp::RegexMatch, "zone", ".*"),
        ])
        .await,
        &[&a, &b, &c],
    );
    check(sel(vec![m(MatchOp::RegexMatch, "zone", ".+")]).await, &[&b]);
    check(
        sel(vec![
            eq("__name__", "up"),
            m(MatchOp::RegexNoMatch, "zone", "z1"),
        ])
        .await,
        &[&a, &c],
    );
    check(sel(vec![eq("nosuchlabel", "x")]).await, &[]);
    check(sel(vec![eq("__name__", "nosuchmetric")]).await, &[]);
}

/// A re-sent batch is all duplicates; overlapping batches store the overlap
/// once; a duplicate keeps the first value; duplicates inside one batch
/// count too.
pub async fn case_dedup_resent_and_overlapping(store: DynStore) {
    let t0 = now() - HOUR;
    let l = labels(&[("__name__", "requests_total"), ("job", "api")]);
    let first: Vec<(i64, f64)> = (0..10).map(|i| (t0 + i * 15_000, i as f64)).collect();
    let b = || batch("prod", vec![series(&l, &first)]);
    let o1 = write(&store, b()).await;
    assert_eq!((o1.samples_written, o1.samples_duplicate), (10, 0));
    let o2 = write(&store, b()).await;
    assert_eq!((o2.samples_written, o2.samples_duplicate), (0, 10));
    assert_eq!(o2.series_created, 0);

    // Overlap 5..10 with different values: the first values stay.
    let second: Vec<(i64, f64)> = (5..15).map(|i| (t0 + i * 15_000, -1.0)).collect();
    let o3 = write(&store, batch("prod", vec![series(&l, &second)])).await;
    assert_eq!((o3.samples_written, o3.samples_duplicate), (5, 5));

    // The same timestamp twice in one batch, and the same series twice.
    let t = t0 + 20 * 15_000;
    let o4 = write(
        &store,
        batch(
            "prod",
            vec![
                series(&l, &[(t, 7.0), (t, 8.0)]),
                series(&l, &[(t, 9.0), (t + 15_000, 10.0)]),
            ],
        ),
    )
    .await;
    assert_eq!(o4.samples_written, 2, "{o4:?}");
    assert_eq!(o4.samples_duplicate, 2, "{o4:?}");

    let got = select(&store, vec![eq("job", "api")], TimeRange::all()).await;
    assert_eq!(got.len(), 1);
    let mut want: Vec<(i64, f64)> = first.clone();
    want.extend(second[5..].iter().copied());
    want.push((t, 7.0));
    want.push((t + 15_000, 10.0));
    assert_samples(&got[0].samples, &want);
}

/// Samples arriving out of order are stored, read back sorted, and dedup
/// still applies to them.
pub async fn case_out_of_order(store: DynStore) {
    let t0 = now() - HOUR;
    let l = labels(&[("__name__", "g"), ("job", "x")]);
    let w = |s: Vec<(i64, f64)>| write(&store, batch("prod", vec![series(&l, &s)]));
    w(vec![(t0 + 30_000, 3.0), (t0 + 60_000, 6.0)]).await;
    let o = w(vec![(t0 + 45_000, 4.5), (t0 + 15_000, 1.5)]).await;
    assert_eq!(o.samples_written, 2);
    w(vec![(t0, 0.0)]).await;
    let o = w(vec![(t0 + 45_000, 99.0), (t0 + 75_000, 7.5)]).await;
    assert_eq!((o.samples_written, o.samples_duplicate), (1, 1));
    let got = select(&store, vec![eq("__name__", "g")], TimeRange::all()).await;
    assert_samples(
        &got[0].samples,
        &[
            (t0, 0.0),
            (t0 + 15_000, 1.5),
            (t0 + 30_000, 3.0),
            (t0 + 45_000, 4.5),
            (t0 + 60_000, 6.0),
            (t0 + 75_000, 7.5),
        ],
    );
}

/// `series`, `label_names` and `label_values`: sorted, filtered by matchers
/// and by the range.
pub async fn case_series_label_names_values(store: DynStore) {
    let t0 = now() - 2 * HOUR;
    let early = labels(&[("__name__", "up"), ("job", "b"), ("team", "x")]);
    let late = labels(&[("__name__", "up"), ("job", "a"), ("zone", "z")]);
    let other = labels(&[("__name__", "mem"), ("job", "c")]);
    write(
        &store,
        batch(
            "prod",
            vec![
                series(&early, &[(t0, 1.0)]),
                series(&late, &[(t0 + HOUR, 1.0)]),
                series(&other, &[(t0 + HOUR, 1.0)]),
            ],
        ),
    )
    .await;
    let all = TimeRange::all();
    let up = || vec![eq("__name__", "up")];
    assert_eq!(
        store.series(&series_q(up(), all)).await.unwrap(),
        vec![late.clone(), early.clone()],
        "sorted by labels: job=a before job=b"
    );
    assert_eq!(
        store
            .series(&series_q(up(), range(t0 + 1, t0 + 2 * HOUR)))
            .await
            .unwrap(),
        vec![late.clone()]
    );
    assert_eq!(
        store.label_names(&series_q(vec![], all)).await.unwrap(),
        vec!["__name__", "job", "team", "zone"]
    );
    assert_eq!(
        store
            .label_names(&series_q(vec![eq("job", "c")], all))
            .await
            .unwrap(),
        vec!["__name__", "job"]
    );
    assert_eq!(
        store
            .label_names(&series_q(vec![], range(t0 + 1, t0 + 2 * HOUR)))
            .await
            .unwrap(),
        vec!["__name__", "job", "zone"]
    );
    assert_eq!(
        store
            .label_values("job", &series_q(vec![], all))
            .await
            .unwrap(),
        vec!["a", "b", "c"]
    );
    assert_eq!(
        store
            .label_values("job", &series_q(up(), range(t0, t0)))
            .await
            .unwrap(),
        vec!["b"]
    );
    assert_eq!(
        store
            .label_values("__name__", &series_q(vec![], all))
            .await
            .unwrap(),
        vec!["mem", "up"]
    );
    assert!(store
        .label_values("zone", &series_q(vec![eq("job", "b")], all))
        .await
        .unwrap()
        .is_empty());
    assert!(store
        .label_values("nosuchlabel", &series_q(vec![], all))
        .await
        .unwrap()
        .is_empty());
}

/// Limits give [`Error::LimitExceeded`]; exactly at the limit is fine.
pub async fn case_limits(store: DynStore) {
    let t0 = now() - HOUR;
    let s: Vec<TimeSeries> = (0..5)
        .map(|i| {
            series(
                &labels(&[("__name__", "up"), ("pod", &format!("p{i}"))]),
                &[(t0, 1.0), (t0 + 15_000, 1.0)],
            )
        })
        .collect();
    write(&store, batch("prod", s)).await;
    let all = TimeRange::all();
    let mut q = select_q(vec![eq("__name__", "up")], all);
    q.max_series = 5;
    assert_eq!(store.select(&q).await.unwrap().len(), 5);
    q.max_series = 4;
    assert!(matches!(
        store.select(&q).await,
        Err(Error::LimitExceeded { .. })
    ));
    q.max_series = 5;
    q.max_samples = 10;
    assert_eq!(store.select(&q).await.unwrap().len(), 5);
    q.max_samples = 9;
    let e = store.select(&q).await.unwrap_err();
    assert!(matches!(e, Error::LimitExceeded { .. }), "{e}");
    let mut sq = series_q(vec![eq("__name__", "up")], all);
    sq.limit = 5;
    assert_eq!(store.series(&sq).await.unwrap().len(), 5);
    sq.limit = 4;
    assert!(matches!(
        store.series(&sq).await,
        Err(Error::LimitExceeded { .. })
    ));
    assert!(matches!(
        store.label_values("pod", &sq).await,
        Err(Error::LimitExceeded { .. })
    ));
    sq.limit = 1;
    assert!(matches!(
        store.label_names(&sq).await,
        Err(Error::LimitExceeded { .. })
    ));
    sq.limit = 2;
    assert_eq!(
        store.label_names(&sq).await.unwrap(),
        vec!["__name__", "pod"]
    );
}

/// With a cap of 3 active series per cluster, new series beyond it are
/// refused and counted, known series keep working, other clusters are not
/// affected.
pub async fn case_series_cap(store: DynStore) {
    let t0 = now() - HOUR;
    let l = |c: &str, i: usize| {
        labels(&[
            ("__name__", "up"),
            ("cluster", c),
            ("pod", &format!("p{i}")),
        ])
    };
    let s: Vec<TimeSeries> = (0..5)
        .map(|i| series(&l("c1", i), &[(t0, 1.0), (t0 + 15_000, 2.0)]))
        .collect();
    let o = write(&store, batch("c1", s)).await;
    assert_eq!(o.series_created, 3, "{o:?}");
    assert_eq!(o.series_rejected_limit, 2, "{o:?}");
    assert_eq!(o.samples_rejected_limit, 4, "{o:?}");
    assert_eq!(o.samples_written, 6, "{o:?}");
    let stored = store
        .series(&series_q(vec![eq("cluster", "c1")], TimeRange::all()))
        .await
        .unwrap();
    assert_eq!(stored.len(), 3);

    // Known series keep accepting samples; a new one is still refused.
    let known = stored[0].clone();
    let o = write(
        &store,
        batch(
            "c1",
            vec![
                series(&known, &[(t0 + 30_000, 3.0)]),
                series(&l("c1", 9), &[(t0 + 30_000, 3.0)]),
            ],
        ),
    )
    .await;
    assert_eq!(o.samples_written, 1, "{o:?}");
    assert_eq!(o.series_rejected_limit, 1, "{o:?}");
    assert_eq!(o.samples_rejected_limit, 1, "{o:?}");

    // Another cluster has its own cap.
    let o = write(
        &store,
        batch(
            "c2",
            (0..3).map(|i| series(&l("c2", i), &[(t0, 1.0)])).collect(),
        ),
    )
    .await;
    assert_eq!(o.series_created, 3, "{o:?}");
    assert_eq!(o.series_rejected_limit, 0, "{o:?}");
    let got = select(&store, vec![eq("__name__", "up")], TimeRange::all()).await;
    assert_eq!(got.len(), 6, "{:?}", names(&got));
}

/// At the cap, series not written for longer than the head grace stop
/// counting: a rollout's new pods get their series while the old pods'
/// series are still held (the clock is advanced by a maintenance pass).
pub async fn case_series_cap_frees_idle_series(store: DynStore) {
    let window = StoreOptions::default().chunk_window.as_millis() as i64;
    let grace = StoreOptions::default().head_grace.as_millis() as i64;
    // Samples at the writer's clock, in a window that stays open for the
    // whole case (its end more than a minute past the advanced clock).
    let mut t0 = now();
    if window - t0.rem_euclid(window) < grace + 120_000 {
        t0 = t0 - t0.rem_euclid(window) + window;
    }
    let l = |rollout: &str, i: usize| {
        labels(&[
            ("__name__", "up"),
            ("cluster", "c1"),
            ("pod", &format!("{rollout}-{i}")),
        ])
    };
    let old: Vec<TimeSeries> = (0..3).map(|i| series(&l("old", i), &[(t0, 1.0)])).collect();
    let o = write(&store, batch("c1", old)).await;
    assert_eq!(o.series_created, 3, "{o:?}");
    // At the cap and every series live: the new rollout is refused.
    let o = write(
        &store,
        batch("c1", vec![series(&l("new", 0), &[(t0, 1.0)])]),
    )
    .await;
    assert_eq!(o.series_rejected_limit, 1, "{o:?}");
    let stats = store.stats();
    assert_eq!(stats.series_cap, 3);
    assert_eq!(stats.live_series, vec![("c1".to_string(), 3)]);

    // The old pods stop sending; past the grace they no longer count.
    let later = now().max(t0) + grace + 1_000;
    store.maintain(later).await.unwrap();
    assert_eq!(store.stats().live_series, vec![]);
    let new: Vec<TimeSeries> = (0..3)
        .map(|i| series(&l("new", i), &[(t0 + 15_000, 2.0)]))
        .collect();
    let o = write(&store, batch("c1", new)).await;
    assert_eq!(o.series_created, 3, "{o:?}");
    assert_eq!(o.series_rejected_limit, 0, "{o:?}");
    assert_eq!(store.stats().live_series, vec![("c1".to_string(), 3)]);
    // The new ones count now: a fourth is refused.
    let o = write(
        &store,
        batch("c1", vec![series(&l("new", 9), &[(t0 + 15_000, 2.0)])]),
    )
    .await;
    assert_eq!(o.series_rejected_limit, 1, "{o:?}");
    // An old pod that sends again is known and accepted.
    let o = write(
        &store,
        batch("c1", vec![series(&l("old", 0), &[(t0 + 30_000, 3.0)])]),
    )
    .await;
    assert_eq!(o.samples_written, 1, "{o:?}");
    let got = select(&store, vec![eq("__name__", "up")], TimeRange::all()).await;
    assert_eq!(got.len(), 6, "{:?}", names(&got));
}

/// Samples older than retention are refused and counted, their neighbours
/// are kept.
pub async fn case_too_old_samples(store: DynStore) {
    let t = now();
    let l = labels(&[("__name__", "up"), ("job", "old")]);
    let o = write(
        &store,
        batch(
            "prod",
            vec![series(&l, &[(t - 20 * DAY, 1.0), (t - HOUR, 2.0)])],
        ),
    )
    .await;
    assert_eq!(o.samples_too_old, 1, "{o:?}");
    assert_eq!(o.samples_written, 1, "{o:?}");
    let only_old = labels(&[("__name__", "up"), ("job", "ancient")]);
    let o = write(
        &store,
        batch("prod", vec![series(&only_old, &[(t - 30 * DAY, 1.0)])]),
    )
    .await;
    assert_eq!(o.samples_too_old, 1, "{o:?}");
    assert_eq!(o.series_created, 0, "no series for nothing: {o:?}");
    let got = select(&store, vec![eq("__name__", "up")], TimeRange::all()).await;
    assert_eq!(got.len(), 1);
    assert_samples(&got[0].samples, &[(t - HOUR, 2.0)]);
}

/// `maintain(now)` deletes what is older than retention (14 d by default)
/// and keeps the rest; series not seen since are gone; writes older than
/// the injected now minus retention are refused.
pub async fn case_retention(store: DynStore) {
    let t = now();
    let old = labels(&[("__name__", "m"), ("age", "old")]);
    let both = labels(&[("__name__", "m"), ("age", "both")]);
    let recent = labels(&[("__name__", "m"), ("age", "recent")]);
    let old_s: Vec<(i64, f64)> = (0..20).map(|i| (t - 10 * DAY + i * 15_000, 1.0)).collect();
    let new_s: Vec<(i64, f64)> = (0..20).map(|i| (t - HOUR + i * 15_000, 2.0)).collect();
    let mut both_s = old_s.clone();
    both_s.extend(new_s.iter().copied());
    write(
        &store,
        batch(
            "prod",
            vec![
                series(&old, &old_s),
                series(&both, &both_s),
                series(&recent, &new_s),
            ],
        ),
    )
    .await;
    // Nothing expires yet.
    store.maintain(t).await.unwrap();
    assert_eq!(
        select(&store, vec![eq("__name__", "m")], TimeRange::all())
            .await
            .len(),
        3
    );
    // Five days later the old samples are 15 days old.
    let later = t + 5 * DAY;
    let report = store.maintain(later).await.unwrap();
    assert!(report.rows_expired > 0, "{report:?}");
    let got = select(&store, vec![eq("__name__", "m")], TimeRange::all()).await;
    assert_eq!(
        got.iter().map(|s| s.labels.clone()).collect::<Vec<_>>(),
        vec![both.clone(), recent.clone()]
    );
    assert_samples(&got[0].samples, &new_s);
    assert_samples(&got[1].samples, &new_s);
    let listed = store
        .series(&series_q(vec![eq("__name__", "m")], TimeRange::all()))
        .await
        .unwrap();
    assert_eq!(listed, vec![both.clone(), recent.clone()]);
    assert_eq!(
        store
            .label_values("age", &series_q(vec![], TimeRange::all()))
            .await
            .unwrap(),
        vec!["both", "recent"]
    );
    // Relative to the injected now, t - 10 d is past retention.
    let o = write(
        &store,
        batch("prod", vec![series(&recent, &[(t - 10 * DAY, 5.0)])]),
    )
    .await;
    assert_eq!(o.samples_too_old, 1, "{o:?}");
}

/// Data survives compaction: reads across the head/chunk boundary return
/// every sample once; a re-sent compacted sample is a duplicate; a late
/// sample for a compacted window is stored, visible at once and still once
/// after the next compaction.
pub async fn case_compaction_boundary(store: DynStore) {
    let t0 = aligned_hours_ago(8);
    let l = cadvisor_labels("container_cpu_usage_seconds_total", "shop", "api-0", "api");
    // 8 h of 30 s samples: four 2 h windows, the last one still open.
    let n = 8 * 120;
    let s: Vec<(i64, f64)> = (0..n)
        .filter(|i| i % 7 != 3) // leave gaps for late samples
        .map(|i| (t0 + i * 30_000, 1000.0 + i as f64 * 0.25))
        .collect();
    for part in s.chunks(100) {
        write(&store, batch("prod", vec![series(&l, part)])).await;
    }
    let all = || select(&store, vec![eq("pod", "api-0")], TimeRange::all());
    assert_samples(&all().await[0].samples, &s);
    let report = store.maintain(now()).await.unwrap();
    assert!(report.samples_compacted > 0, "{report:?}");
    assert!(report.chunks_written >= 2, "{report:?}");
    assert_samples(&all().await[0].samples, &s);
    // A range across the first window boundary, and one across head/chunks.
    for (a, b) in [
        (t0 + 2 * HOUR - 60_000, t0 + 2 * HOUR + 60_000),
        (t0 + 5 * HOUR, now()),
    ] {
        let got = select(&store, vec![eq("pod", "api-0")], range(a, b)).await;
        let want: Vec<(i64, f64)> = s.iter().copied().filter(|x| x.0 >= a && x.0 <= b).collect();
        assert_samples(&got[0].samples, &want);
    }
    // Re-sending compacted samples: all duplicates.
    let o = write(&store, batch("prod", vec![series(&l, &s[..50])])).await;
    assert_eq!((o.samples_written, o.samples_duplicate), (0, 50), "{o:?}");
    // A late sample in the first (compacted) window, plus a duplicate.
    let late = (t0 + 3 * 30_000, -7.0);
    let o = write(&store, batch("prod", vec![series(&l, &[late, s[1], late])])).await;
    assert_eq!((o.samples_written, o.samples_duplicate), (1, 2), "{o:?}");
    let mut want = s.clone();
    want.push(late);
    want.sort_by_key(|x| x.0);
    assert_samples(&all().await[0].samples, &want);
    store.maintain(now()).await.unwrap();
    assert_samples(&all().await[0].samples, &want);
    let o = write(&store, batch("prod", vec![series(&l, &[late])])).await;
    assert_eq!(o.samples_duplicate, 1, "{o:?}");
    store.flush().await.unwrap();
    assert_samples(&all().await[0].samples, &want);
}

/// Rollup reads: one synthetic sample per 5-minute bucket, the same before
/// and after compaction (head windows are rolled up on the fly exactly as
/// compaction will), equal to the rollups of the raw samples.
pub async fn case_rollup_reads(store: DynStore) {
    let t0 = aligned_hours_ago(8);
    let window = 2 * HOUR;
    let cpu = cadvisor_labels("container_cpu_usage_seconds_total", "shop", "api-0", "api");
    let mem = cadvisor_labels("container_memory_working_set_bytes", "shop", "api-0", "api");
    // 8 h at 15 s: four 2 h windows, the last one open. The counter resets
    // once mid-window and once on a window boundary; the gauge wobbles.
    let mut c = Vec::new();
    let mut g = Vec::new();
    let mut v = 5_000.0;
    for i in 0..8 * 240i64 {
        let t = t0 + i * 15_000;
        v = if i == 333 || t == t0 + window {
            1.5
        } else {
            v + 0.25 * (i % 5) as f64
        };
        c.push((t, v));
        g.push((t, 1e8 + ((i * 7919) % 1000) as f64));
    }
    for (a, b) in c.chunks(240).zip(g.chunks(240)) {
        write(
            &store,
            batch("prod", vec![series(&cpu, a), series(&mem, b)]),
        )
        .await;
    }
    let read = |field: RollupField, r: TimeRange| {
        let mut q = select_q(vec![eq("pod", "api-0")], r);
        q.resolution = Resolution::Rollup5m(field);
        let store = store.clone();
        async move { store.select(&q).await.expect("rollup select") }
    };
    let expect = |raw: &[(i64, f64)], field: RollupField, r: TimeRange| -> Vec<(i64, f64)> {
        use kube_insight_core::rollup::{rollup_5m_windowed, synthesize_range};
        synthesize_range(rollup_5m_windowed(raw, window), r, field, window)
    };
    let ranges = [
        TimeRange::all(),
        range(t0 + HOUR + 1, t0 + 5 * HOUR + 17 * 60_000),
        range(t0 + 6 * HOUR, now()),
    ];
    for round in ["head", "compacted"] {
        for r in ranges {
            for field in [
                RollupField::Counter,
                RollupField::Last,
                RollupField::Max,
                RollupField::Min,
                RollupField::Sum,
            ] {
                let got = read(field, r).await;
                assert_eq!(names(&got).len(), 2, "{round} {field:?} {r:?}");
                // Sorted by labels: cpu before memory.
                for (ts, raw) in got.iter().zip([&c, &g]) {
                    let want = expect(raw, field, r);
                    assert!(!want.is_empty());
                    assert_samples(&ts.samples, &want);
                }
            }
        }
        if round == "head" {
            let report = store.maintain(now()).await.unwrap();
            assert!(report.chunks_written >= 6, "{report:?}");
        }
    }
    // Raw reads are unchanged by the rollups beside them.
    let got = select(&store, vec![eq("pod", "api-0")], TimeRange::all()).await;
    assert_samples(&got[0].samples, &c);
    // 96 buckets of 5 minutes in 8 h, not 1,920 samples.
    assert_eq!(
        read(RollupField::Last, TimeRange::all()).await[0]
            .samples
            .len(),
        96
    );
}

/// Eight tasks write overlapping series and timestamps at once; every
/// sample is stored exactly once and the outcomes add up.
pub async fn case_concurrent_writers(store: DynStore) {
    let t0 = now() - 2 * HOUR;
    let n_series = 40usize;
    let mut tasks = Vec::new();
    for k in 0..8i64 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut total = WriteOutcome::default();
            // Task k writes steps [10k, 10k + 30): neighbours overlap.
            for chunk in (10 * k..10 * k + 30).collect::<Vec<_>>().chunks(5) {
                let b = batch(
                    "prod",
                    (0..n_series)
                        .map(|i| {
                            let l = cadvisor_labels(
                                "container_network_receive_bytes_total",
                                "shop",
                                &format!("api-{i}"),
                                "api",
                            );
                            let s: Vec<(i64, f64)> = chunk
                                .iter()
                                .map(|&st| (t0 + st * 15_000, (st * 1000 + i as i64) as f64))
                                .collect();
                            series(&l, &s)
                        })
                        .collect(),
                );
                let o = store.write_samples(b).await.unwrap();
                total.merge(&o);
            }
            total
        }));
    }
    let mut total = WriteOutcome::default();
    for t in tasks {
        total.merge(&t.await.unwrap());
    }
    let steps = 10 * 7 + 30; // union of [10k, 10k+30) for k in 0..8
    let unique = (steps * n_series) as u64;
    assert_eq!(total.samples_written, unique, "{total:?}");
    assert_eq!(
        total.samples_written + total.samples_duplicate,
        (8 * 30 * n_series) as u64
    );
    assert_eq!(total.series_created, n_series as u64);
    let got = select(
        &store,
        vec![eq("__name__", "container_network_receive_bytes_total")],
        TimeRange::all(),
    )
    .await;
    assert_eq!(got.len(), n_series);
    for s in &got {
        let i: i64 = s.labels.get("pod").unwrap()[4..].parse().unwrap();
        let want: Vec<(i64, f64)> = (0..steps as i64)
            .map(|st| (t0 + st * 15_000, (st * 1000 + i) as f64))
            .collect();
        assert_samples(&s.samples, &want);
    }
}

/// The entity tree: rows at the depth the labels reach, pods resolved to
/// their workload through kube-state-metrics owners (pod → ReplicaSet →
/// Deployment), filters and limit.
pub async fn case_entities(store: DynStore) {
    let t0 = now() - HOUR;
    let rs = "api-5f6d7c8b9";
    let pod = "api-5f6d7c8b9-qwz7p";
    let s = |l: Labels, a: i64, b: i64| series(&l, &[(t0 + a, 1.0), (t0 + b, 1.0)]);
    let base = |pairs: &[(&str, &str)]| {
        let mut l = labels(pairs);
        l.set("cluster", "prod");
        l
    };
    write(
        &store,
        batch(
            "prod",
            vec![
                s(
                    cadvisor_labels("container_cpu_usage_seconds_total", "shop", pod, "api"),
                    0,
                    60_000,
                ),
                // Pod-level cgroup (container="" is no label) and the sandbox.
                s(
                    base(&[
                        ("__name__", "container_cpu_usage_seconds_total"),
                        ("namespace", "shop"),
                        ("pod", pod),
                    ]),
                    15_000,
                    30_000,
                ),
                s(
                    base(&[
                        ("__name__", "container_memory_working_set_bytes"),
                        ("namespace", "shop"),
                        ("pod", pod),
                        ("container", "POD"),
                    ]),
                    0,
                    90_000,
                ),
                s(
                    base(&[
                        ("__name__", "kube_pod_owner"),
                        ("namespace", "shop"),
                        ("pod", pod),
                        ("owner_kind", "ReplicaSet"),
                        ("owner_name", rs),
                        ("owner_is_controller", "true"),
                    ]),
                    0,
                    15_000,
                ),
                s(
                    base(&[
                        ("__name__", "kube_replicaset_owner"),
                        ("namespace", "shop"),
                        ("replicaset", rs),
                        ("owner_kind", "Deployment"),
                        ("owner_name", "api"),
                        ("owner_is_controller", "true"),
                    ]),
                    0,
                    15_000,
                ),
                s(
                    base(&[
                        ("__name__", "kube_pod_owner"),
                        ("namespace", "default"),
                        ("pod", "standalone-debug"),
                        ("owner_kind", "<none>"),
                        ("owner_name", "<none>"),
                    ]),
                    0,
                    15_000,
                ),
                s(
                    base(&[
                        ("__name__", "kube_pod_owner"),
                        ("namespace", "db"),
                        ("pod", "pg-0"),
                        ("owner_kind", "StatefulSet"),
                        ("owner_name", "pg"),
                        ("owner_is_controller", "true"),
                    ]),
                    0,
                    15_000,
                ),
                s(
                    base(&[
                        ("__name__", "kube_pod_container_info"),
                        ("namespace", "db"),
                        ("pod", "pg-0"),
                        ("container", "postgres"),
                    ]),
                    0,
                    15_000,
                ),
                s(
                    base(&[
                        ("__name__", "kube_pod_info"),
                        ("namespace", "db"),
                        ("pod", "orphan"),
                    ]),
                    0,
                    15_000,
                ),
                s(
                    base(&[
                        ("__name__", "kube_namespace_status_phase"),
                        ("namespace", "shop"),
                    ]),
                    0,
                    15_000,
                ),
                s(
                    base(&[("__name__", "node_load1"), ("instance", "node-a")]),
                    0,
                    15_000,
                ),
            ],
        ),
    )
    .await;
    let q = |cluster: Option<&str>, ns: Option<&str>, limit| EntityQuery {
        cluster: cluster.map(str::to_string),
        namespace: ns.map(str::to_string),
        range: TimeRange::all(),
        limit,
    };
    let e = |ns: &str, wk: &str, w: &str, pod: &str, c: &str, a: i64, b: i64| Entity {
        cluster: "prod".into(),
        namespace: ns.into(),
        workload_kind: wk.into(),
        workload: w.into(),
        pod: pod.into(),
        container: c.into(),
        first_seen_ms: t0 + a,
        last_seen_ms: t0 + b,
    };
    let got = store.entities(&q(None, None, 100)).await.unwrap();
    let want = vec![
        e("", "", "", "", "", 0, 15_000),
        e("db", "", "", "orphan", "", 0, 15_000),
        e("db", "StatefulSet", "pg", "pg-0", "", 0, 15_000),
        e("db", "StatefulSet", "pg", "pg-0", "postgres", 0, 15_000),
        e(
            "default",
            "Pod",
            "standalone-debug",
            "standalone-debug",
            "",
            0,
            15_000,
        ),
        e("shop", "", "", "", "", 0, 15_000),
        e("shop", "Deployment", "api", pod, "", 0, 90_000),
        e("shop", "Deployment", "api", pod, "api", 0, 60_000),
    ];
    assert_eq!(got, want);
    let shop = store.entities(&q(None, Some("shop"), 100)).await.unwrap();
    assert_eq!(shop, want[5..].to_vec());
    assert!(store
        .entities(&q(Some("other"), None, 100))
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        store.entities(&q(Some("prod"), None, 100)).await.unwrap(),
        want
    );
    assert!(matches!(
        store.entities(&q(None, None, 3)).await,
        Err(Error::LimitExceeded { .. })
    ));
    // Out of range: nothing.
    let mut none = q(None, None, 100);
    none.range = range(t0 - 2 * HOUR, t0 - 1);
    assert!(store.entities(&none).await.unwrap().is_empty());
}

/// The clusters with series in a range, by name; a backend that keeps the
/// newest sample says it exactly; more than the limit is an error.
pub async fn case_clusters(store: DynStore) {
    let t0 = now() - 2 * HOUR;
    for (cluster, at) in [("b", t0), ("a", t0 + 60_000), ("c", t0 + 120_000)] {
        let l = labels(&[("__name__", "up"), ("cluster", cluster), ("job", "x")]);
        write(
            &store,
            batch(cluster, vec![series(&l, &[(t0 - 60_000, 1.0), (at, 1.0)])]),
        )
        .await;
    }
    let r = range(t0 - HOUR, now());
    let got = store.clusters(r, 10).await.expect("clusters");
    let names: Vec<&str> = got.iter().map(|c| c.cluster.as_str()).collect();
    assert_eq!(names, vec!["a", "b", "c"]);
    for (c, want) in got.iter().zip([t0 + 60_000, t0, t0 + 120_000]) {
        if let Some(last) = c.last_seen_ms {
            assert_eq!(last, want, "{}: the newest sample", c.cluster);
        }
        if let Some(n) = c.series {
            assert_eq!(n, 1, "{}", c.cluster);
        }
    }
    match store.clusters(r, 2).await {
        Err(crate::Error::LimitExceeded {
            what: "clusters",
            limit: 2,
        }) => {}
        other => panic!("3 clusters over a limit of 2: {other:?}"),
    }
    let long_ago = range(946_684_800_000, 946_771_200_000); // 2000-01-01, a day
    assert_eq!(
        store.clusters(long_ago, 10).await.expect("clusters"),
        vec![]
    );
}
