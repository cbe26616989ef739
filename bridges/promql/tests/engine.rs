//! Evaluator tests on hand-built series through the in-memory Querier.

// Test helpers may unwrap: a panic is a failing test with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use async_trait::async_trait;
use kube_insight_core::{Labels, Matcher, Sample, TimeRange, TimeSeries, STALE_NAN};
use kube_insight_promql::{
    Compat, Engine, EngineOptions, ErrorType, InstantSample, MemoryQuerier, PromqlError, Querier,
    QuerierError, QueryResult, RollupPolicy, SelectHints,
};
use std::time::Duration;

const M: i64 = 60_000;

fn ls(pairs: &[(&str, &str)]) -> Labels {
    Labels::from_pairs(pairs.iter().copied())
}

fn series(pairs: &[(&str, &str)], pts: &[(i64, f64)]) -> TimeSeries {
    TimeSeries::new(
        ls(pairs),
        pts.iter().map(|(t, v)| Sample::new(*t, *v)).collect(),
    )
}

/// Samples every `step` ms from `from` to `to` inclusive, value f(t).
fn regular(from: i64, to: i64, step: i64, f: impl Fn(i64) -> f64) -> Vec<(i64, f64)> {
    (0..)
        .map(|i| from + i * step)
        .take_while(|t| *t <= to)
        .map(|t| (t, f(t)))
        .collect()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn instant(q: &MemoryQuerier, query: &str, t: i64) -> Result<QueryResult, PromqlError> {
    rt().block_on(Engine::default().query(q, query, t, None))
}

fn vector(q: &MemoryQuerier, query: &str, t: i64) -> Vec<InstantSample> {
    match instant(q, query, t) {
        Ok(QueryResult::Vector(v)) => {
            let mut v = v;
            v.sort_by(|a, b| a.labels.cmp(&b.labels));
            v
        }
        other => panic!("{query}: expected a vector, got {other:?}"),
    }
}

fn one(q: &MemoryQuerier, query: &str, t: i64) -> f64 {
    let v = vector(q, query, t);
    assert_eq!(v.len(), 1, "{query}: {v:?}");
    v[0].value
}

fn range(
    q: &MemoryQuerier,
    query: &str,
    s: i64,
    e: i64,
    step: i64,
) -> Vec<(Labels, Vec<(i64, f64)>)> {
    match rt().block_on(Engine::default().query_range(q, query, s, e, step, None)) {
        Ok(QueryResult::Matrix(m)) => m.into_iter().map(|s| (s.labels, s.points)).collect(),
        other => panic!("{query}: expected a matrix, got {other:?}"),
    }
}

fn err(q: &MemoryQuerier, query: &str, t: i64) -> PromqlError {
    match instant(q, query, t) {
        Err(e) => e,
        Ok(v) => panic!("{query}: expected an error, got {v:?}"),
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

// A counter at 15 s that grows 1/s, with a reset at 10m to 0.
fn counter_with_reset() -> MemoryQuerier {
    MemoryQuerier::new(vec![series(
        &[("__name__", "c_total"), ("job", "a")],
        &regular(0, 20 * M, 15_000, |t| {
            if t < 10 * M {
                t as f64 / 1000.0
            } else {
                (t - 10 * M) as f64 / 1000.0
            }
        }),
    )])
}

#[test]
fn rate_increase_and_counter_resets() {
    let q = counter_with_reset();
    // Fully inside one segment: exactly 1/s.
    assert!(close(one(&q, "rate(c_total[5m])", 8 * M), 1.0));
    assert!(close(one(&q, "increase(c_total[5m])", 8 * M), 300.0));
    // Across the reset at 10m: increase still counts the growth (no negative jump).
    let inc = one(&q, "increase(c_total[5m])", 12 * M);
    // Samples 7m..12m (closed window): 585 + 120 (after reset) = 285+15 …
    // raw growth = (600-420-15) + 120 + reset-add; Prometheus adds the pre-reset value.
    assert!(inc > 250.0 && inc < 320.0, "{inc}");
    assert!(close(one(&q, "resets(c_total[5m])", 12 * M), 1.0));
    // irate after the reset uses the post-reset value.
    assert!(close(
        one(&q, "irate(c_total[1m])", 10 * M),
        0.0 / 15.0 + 0.0
    ));
    // delta does not treat the reset specially.
    let d = one(&q, "delta(c_total[1m])", 10 * M + 30_000);
    assert!(d < 0.0, "{d}");
    // Metric name dropped.
    assert_eq!(
        vector(&q, "rate(c_total[5m])", 8 * M)[0].labels,
        ls(&[("job", "a")])
    );
}

#[test]
fn extrapolation_edge_cases() {
    // Counter starts at 2m with value 1, +1 every 15 s: increase over [0, 5m]
    // extrapolates backwards only to the zero point (15 s before the first sample).
    let q = MemoryQuerier::new(vec![series(
        &[("__name__", "late_total")],
        &regular(2 * M, 10 * M, 15_000, |t| {
            1.0 + ((t - 2 * M) / 15_000) as f64
        }),
    )]);
    let inc = one(&q, "increase(late_total[5m])", 5 * M);
    // 13 samples over 180 s, growth 12; zero point 15 s before 2m (< 1.1×15 s);
    // end is exactly at a sample. Result = 12 × (180 + 15) / 180 = 13.
    assert!(close(inc, 13.0), "{inc}");
    // One sample in the window: no rate.
    let q1 = MemoryQuerier::new(vec![series(&[("__name__", "x")], &[(M, 1.0)])]);
    assert!(vector(&q1, "rate(x[5m])", 2 * M).is_empty());
    // Gap beyond 1.1× the interval at the end: half an interval is added.
    let q2 = MemoryQuerier::new(vec![series(
        &[("__name__", "g_total")],
        &regular(0, 2 * M, 15_000, |t| t as f64 / 1000.0),
    )]);
    let inc = one(&q2, "increase(g_total[5m])", 5 * M);
    // Samples 0..120 s (9 samples), window [0, 300]: start at edge (0 s),
    // end gap 180 s > 16.5 → +7.5 s. Growth 120 over 120 s → 127.5.
    assert!(close(inc, 127.5), "{inc}");
}

#[test]
fn staleness_and_lookback() {
    let q = MemoryQuerier::new(vec![series(
        &[("__name__", "g")],
        &[(0, 1.0), (M, 2.0), (2 * M, STALE_NAN), (3 * M, 4.0)],
    )]);
    assert_eq!(one(&q, "g", M + 30_000), 2.0);
    // The stale marker ends the series at once, not after the lookback.
    assert!(vector(&q, "g", 2 * M + 10_000).is_empty());
    assert_eq!(one(&q, "g", 3 * M), 4.0);
    // Lookback: 5 minutes, closed at its start (Prometheus 2.x).
    assert_eq!(one(&q, "g", 8 * M), 4.0);
    assert!(vector(&q, "g", 8 * M + 1).is_empty());
    // Stale markers never appear in range vectors.
    match instant(&q, "g[10m]", 3 * M).unwrap() {
        QueryResult::Matrix(m) => {
            let vals: Vec<f64> = m[0].points.iter().map(|p| p.1).collect();
            assert_eq!(vals, vec![1.0, 2.0, 4.0]);
        }
        other => panic!("{other:?}"),
    }
    assert!(close(one(&q, "count_over_time(g[10m])", 3 * M), 3.0));
    // Range query: points only where a sample is in lookback and not stale.
    let r = range(&q, "g", 0, 4 * M, M);
    let ts: Vec<i64> = r[0].1.iter().map(|p| p.0).collect();
    assert_eq!(ts, vec![0, M, 3 * M, 4 * M]);
}

#[test]
fn window_boundaries_follow_compat() {
    // Samples exactly at t-5m and t.
    let q = MemoryQuerier::new(vec![series(
        &[("__name__", "b")],
        &regular(0, 10 * M, M, |t| t as f64),
    )]);
    assert_eq!(one(&q, "count_over_time(b[5m])", 10 * M), 6.0);
    let e3 = Engine::new(EngineOptions {
        compat: Compat::Prometheus3,
        ..Default::default()
    });
    match rt()
        .block_on(e3.query(&q, "count_over_time(b[5m])", 10 * M, None))
        .unwrap()
    {
        QueryResult::Vector(v) => assert_eq!(v[0].value, 5.0),
        other => panic!("{other:?}"),
    }
    // Lookback: a sample exactly 5m old is visible in 2.x, not in 3.x.
    let q = MemoryQuerier::new(vec![series(&[("__name__", "b")], &[(0, 1.0)])]);
    assert_eq!(one(&q, "b", 5 * M), 1.0);
    match rt().block_on(e3.query(&q, "b", 5 * M, None)).unwrap() {
        QueryResult::Vector(v) => assert!(v.is_empty()),
        other => panic!("{other:?}"),
    }
}

#[test]
fn offset_and_at_modifiers() {
    let q = MemoryQuerier::new(vec![series(
        &[("__name__", "v")],
        &regular(0, 30 * M, M, |t| (t / M) as f64),
    )]);
    assert_eq!(one(&q, "v offset 5m", 20 * M), 15.0);
    assert_eq!(one(&q, "v offset -5m", 20 * M), 25.0);
    assert_eq!(one(&q, "v @ 600", 20 * M), 10.0);
    assert_eq!(one(&q, "v @ 600 offset 2m", 20 * M), 8.0);
    assert!(close(one(&q, "rate(v[5m] @ 600)", 20 * M), 1.0 / 60.0));
    // @ start() / end() in a range query: constant over all steps.
    let r = range(&q, "v @ start()", 10 * M, 20 * M, 5 * M);
    assert_eq!(r[0].1, vec![(10 * M, 10.0), (15 * M, 10.0), (20 * M, 10.0)]);
    let r = range(&q, "v @ end()", 10 * M, 20 * M, 5 * M);
    assert_eq!(r[0].1, vec![(10 * M, 20.0), (15 * M, 20.0), (20 * M, 20.0)]);
    // Instant query results carry the query time, whatever the @.
    let v = vector(&q, "v @ 600", 20 * M);
    assert_eq!(v[0].timestamp_ms, 20 * M);
}

fn ties() -> MemoryQuerier {
    MemoryQuerier::new(
        [("a", 5.0), ("b", 5.0), ("c", 7.0), ("d", 5.0), ("e", 1.0)]
            .iter()
            .map(|(i, v)| series(&[("__name__", "t"), ("i", i)], &[(0, *v)]))
            .collect(),
    )
}

fn names(v: &[InstantSample]) -> Vec<String> {
    v.iter()
        .map(|s| s.labels.get("i").unwrap_or("").to_string())
        .collect()
}

#[test]
fn topk_bottomk_with_ties() {
    let q = ties();
    // Ties resolve as Prometheus' container/heap does (checked against
    // Prometheus 2.42 by the differential test): for topk(2) a and b fill
    // the heap, c evicts the root a; d ties with the root b and is dropped.
    assert_eq!(names(&vector(&q, "topk(2, t)", 0)), vec!["b", "c"]);
    assert_eq!(names(&vector(&q, "topk(3, t)", 0)), vec!["a", "b", "c"]);
    assert_eq!(names(&vector(&q, "bottomk(2, t)", 0)), vec!["b", "e"]);
    assert!(vector(&q, "topk(0, t)", 0).is_empty());
    // topk keeps the metric name.
    assert_eq!(vector(&q, "topk(1, t)", 0)[0].labels.metric_name(), "t");
    assert_eq!(one(&q, "quantile(0.5, t)", 0), 5.0);
    assert_eq!(one(&q, "count(t)", 0), 5.0);
    assert_eq!(one(&q, "sum(t)", 0), 23.0);
    assert_eq!(one(&q, "max(t)", 0), 7.0);
    assert_eq!(one(&q, "min(t)", 0), 1.0);
    assert!(close(one(&q, "avg(t)", 0), 4.6));
}

#[test]
fn aggregation_grouping_drops_the_name() {
    let q = MemoryQuerier::new(vec![
        series(&[("__name__", "m"), ("ns", "a"), ("pod", "1")], &[(0, 1.0)]),
        series(&[("__name__", "m"), ("ns", "a"), ("pod", "2")], &[(0, 2.0)]),
        series(&[("__name__", "m"), ("ns", "b"), ("pod", "3")], &[(0, 4.0)]),
    ]);
    let v = vector(&q, "sum by (ns) (m)", 0);
    assert_eq!(v[0].labels, ls(&[("ns", "a")]));
    assert_eq!(v[0].value, 3.0);
    let v = vector(&q, "sum without (pod) (m)", 0);
    assert_eq!(v[1].labels, ls(&[("ns", "b")]));
    let v = vector(&q, "max by (__name__) (m)", 0);
    assert_eq!(v[0].labels, ls(&[("__name__", "m")]));
    assert_eq!(v[0].value, 4.0);
}

#[test]
fn histogram_quantile_with_inf_bucket() {
    let b = |le: &str, v: f64| {
        series(
            &[("__name__", "h_bucket"), ("le", le), ("job", "x")],
            &[(0, v)],
        )
    };
    let q = MemoryQuerier::new(vec![b("0.1", 10.0), b("0.5", 20.0), b("+Inf", 40.0)]);
    let v = vector(&q, "histogram_quantile(0.25, h_bucket)", 0);
    assert_eq!(v[0].labels, ls(&[("job", "x")]));
    assert!(close(v[0].value, 0.1));
    // The rank falls in the +Inf bucket: the largest finite bound.
    assert_eq!(one(&q, "histogram_quantile(0.9, h_bucket)", 0), 0.5);
    // Without a +Inf bucket: NaN.
    let q = MemoryQuerier::new(vec![b("0.1", 10.0), b("0.5", 20.0)]);
    assert!(one(&q, "histogram_quantile(0.5, h_bucket)", 0).is_nan());
    // Series without `le` are ignored.
    let q = MemoryQuerier::new(vec![series(&[("__name__", "h_bucket")], &[(0, 1.0)])]);
    assert!(vector(&q, "histogram_quantile(0.5, h_bucket)", 0).is_empty());
}

#[test]
fn label_replace_and_join() {
    let q = MemoryQuerier::new(vec![series(
        &[
            ("__name__", "up"),
            ("instance", "host:9100"),
            ("job", "node"),
        ],
        &[(0, 1.0)],
    )]);
    let v = vector(
        &q,
        r#"label_replace(up, "port", "$1", "instance", ".*:(\\d+)")"#,
        0,
    );
    assert_eq!(v[0].labels.get("port"), Some("9100"));
    assert_eq!(v[0].labels.metric_name(), "up");
    // A regex that does not match leaves the series unchanged.
    let v = vector(
        &q,
        r#"label_replace(up, "port", "$1", "instance", "nomatch(.*)")"#,
        0,
    );
    assert_eq!(
        v[0].labels,
        ls(&[
            ("__name__", "up"),
            ("instance", "host:9100"),
            ("job", "node")
        ])
    );
    // An empty replacement removes the label.
    let v = vector(&q, r#"label_replace(up, "job", "", "job", ".*")"#, 0);
    assert_eq!(v[0].labels.get("job"), None);
    let v = vector(&q, r#"label_join(up, "ij", "/", "instance", "job")"#, 0);
    assert_eq!(v[0].labels.get("ij"), Some("host:9100/node"));
    let e = err(&q, r#"label_replace(up, "a-b", "$1", "job", "(.*)")"#, 0);
    assert_eq!(e.error_type(), ErrorType::Execution);
    assert!(e.to_string().contains("a-b"), "{e}");
}

#[test]
fn vector_matching_and_cardinality_errors() {
    let q = MemoryQuerier::new(vec![
        series(
            &[("__name__", "usage"), ("pod", "p1"), ("c", "x")],
            &[(0, 2.0)],
        ),
        series(
            &[("__name__", "usage"), ("pod", "p1"), ("c", "y")],
            &[(0, 3.0)],
        ),
        series(
            &[("__name__", "info"), ("pod", "p1"), ("node", "n1")],
            &[(0, 1.0)],
        ),
        series(
            &[("__name__", "dup"), ("pod", "p1"), ("x", "1")],
            &[(0, 1.0)],
        ),
        series(
            &[("__name__", "dup"), ("pod", "p1"), ("x", "2")],
            &[(0, 1.0)],
        ),
    ]);
    let v = vector(&q, "usage * on (pod) group_left (node) info", 0);
    assert_eq!(v.len(), 2);
    assert_eq!(
        v[0].labels,
        ls(&[("c", "x"), ("node", "n1"), ("pod", "p1")])
    );
    let v = vector(&q, "info * on (pod) group_right (node) usage", 0);
    assert_eq!(v.len(), 2);
    // One-to-one with two matches on the left: error.
    let e = err(&q, "usage * on (pod) info", 0);
    assert_eq!(e.error_type(), ErrorType::Execution);
    assert!(
        e.to_string()
            .contains("many-to-one matching must be explicit"),
        "{e}"
    );
    // Duplicates on the "one" side: many-to-many error.
    let e = err(&q, "usage * on (pod) group_left dup", 0);
    assert!(
        e.to_string().contains("many-to-many matching not allowed"),
        "{e}"
    );
    assert!(e.to_string().contains("right hand-side"), "{e}");
    // Comparison keeps the name, arithmetic drops it; bool drops it too.
    assert_eq!(vector(&q, "usage > 2", 0)[0].labels.metric_name(), "usage");
    assert_eq!(vector(&q, "usage + 2", 0)[0].labels.metric_name(), "");
    let v = vector(&q, "usage > bool 2", 0);
    assert_eq!(
        v.iter().map(|s| s.value).collect::<Vec<_>>(),
        vec![0.0, 1.0]
    );
    // Set operators.
    assert_eq!(vector(&q, "usage and on (pod) info", 0).len(), 2);
    assert!(vector(&q, "usage unless on (pod) info", 0).is_empty());
    assert_eq!(vector(&q, "usage or info", 0).len(), 3);
    // Same labels after dropping the name: error as in Prometheus.
    let q = MemoryQuerier::new(vec![
        series(&[("__name__", "a"), ("k", "1")], &[(0, 1.0)]),
        series(&[("__name__", "b"), ("k", "1")], &[(0, 2.0)]),
    ]);
    for query in [
        r#"{__name__=~"a|b"} * 1"#,
        r#"-{__name__=~"a|b"}"#,
        r#"abs({__name__=~"a|b"})"#,
    ] {
        let e = err(&q, query, 0);
        assert_eq!(e.error_type(), ErrorType::Execution, "{query}");
        assert!(e.to_string().contains("same labelset"), "{e}");
    }
}

#[test]
fn empty_results_and_scalars() {
    let q = MemoryQuerier::default();
    assert!(vector(&q, "nothing", 0).is_empty());
    assert!(vector(&q, "sum(nothing)", 0).is_empty());
    assert!(vector(&q, "rate(nothing[5m])", 0).is_empty());
    assert!(range(&q, "nothing", 0, M, 15_000).is_empty());
    match instant(&q, "scalar(nothing)", 0).unwrap() {
        QueryResult::Scalar { value, .. } => assert!(value.is_nan()),
        other => panic!("{other:?}"),
    }
    match instant(&q, "1 + 2 * 3", 1_000).unwrap() {
        QueryResult::Scalar {
            timestamp_ms,
            value,
        } => assert_eq!((timestamp_ms, value), (1_000, 7.0)),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        instant(&q, "\"hi\"", 0).unwrap(),
        QueryResult::String { .. }
    ));
    // A scalar range query is a matrix with one label-less series.
    let r = range(&q, "time()", 0, 2 * M, M);
    assert_eq!(
        r,
        vec![(Labels::default(), vec![(0, 0.0), (M, 60.0), (2 * M, 120.0)])]
    );
    assert_eq!(one(&q, "vector(5)", 0), 5.0);
}

#[test]
fn functions_on_instant_vectors() {
    let q = MemoryQuerier::new(vec![series(&[("__name__", "g"), ("k", "v")], &[(0, -2.5)])]);
    assert_eq!(one(&q, "abs(g)", 0), 2.5);
    assert_eq!(one(&q, "ceil(g)", 0), -2.0);
    assert_eq!(one(&q, "floor(g)", 0), -3.0);
    // round: ties go up.
    assert_eq!(one(&q, "round(g)", 0), -2.0);
    assert_eq!(one(&q, "round(g, 2)", 0), -2.0);
    assert_eq!(one(&q, "clamp_min(g, 0)", 0), 0.0);
    assert_eq!(one(&q, "clamp_max(g, -3)", 0), -3.0);
    assert_eq!(one(&q, "clamp(g, -1, 1)", 0), -1.0);
    assert!(vector(&q, "clamp(g, 1, -1)", 0).is_empty());
    assert_eq!(vector(&q, "abs(g)", 0)[0].labels, ls(&[("k", "v")]));
    assert_eq!(one(&q, "-g", 0), 2.5);
    let q2 = MemoryQuerier::new(vec![series(
        &[("__name__", "o")],
        &regular(0, 10 * M, M, |t| {
            [3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0, 5.0, 3.0, 5.0][(t / M) as usize]
        }),
    )]);
    assert_eq!(one(&q2, "max_over_time(o[10m])", 10 * M), 9.0);
    assert_eq!(one(&q2, "min_over_time(o[10m])", 10 * M), 1.0);
    assert_eq!(one(&q2, "sum_over_time(o[10m])", 10 * M), 44.0);
    assert!(close(one(&q2, "avg_over_time(o[10m])", 10 * M), 4.0));
    assert_eq!(one(&q2, "last_over_time(o[10m])", 10 * M), 5.0);
    assert_eq!(one(&q2, "quantile_over_time(0.5, o[10m])", 10 * M), 4.0);
    assert_eq!(
        vector(&q2, "last_over_time(o[10m])", 10 * M)[0]
            .labels
            .metric_name(),
        "o"
    );
    assert_eq!(
        vector(&q2, "max_over_time(o[10m])", 10 * M)[0]
            .labels
            .metric_name(),
        ""
    );
    // Subquery: inner steps 5m..10m (closed window in 2.x, so 5m → 9 counts).
    assert_eq!(one(&q2, "max_over_time(o[5m:1m])", 10 * M), 9.0);
    assert_eq!(one(&q2, "max_over_time(o[4m:1m])", 10 * M), 6.0);
}

#[test]
fn constructs_of_other_releases_are_bad_data() {
    let q = MemoryQuerier::default();
    // Prometheus 2.42 (the default mode) does not know these 3.x names.
    for (query, what) in [
        ("mad_over_time(x[5m])", "mad_over_time"),
        (
            "double_exponential_smoothing(x[5m], 0.5, 0.5)",
            "double_exponential_smoothing",
        ),
        ("limitk(1, x)", "limitk"),
        ("limit_ratio(0.5, x)", "limit_ratio"),
        ("sort_by_label(x, \"a\")", "sort_by_label"),
        ("x{a=\"b\" or c=\"d\"}", "\"or\""),
    ] {
        let e = err(&q, query, 0);
        assert_eq!(e.error_type(), ErrorType::BadData, "{query}");
        assert!(e.to_string().contains(what), "{query}: {e}");
    }
    // Prometheus 3 dropped holt_winters.
    let v3 = Engine::new(EngineOptions {
        compat: Compat::Prometheus3,
        ..Default::default()
    });
    let e = rt()
        .block_on(v3.query(&q, "holt_winters(x[5m], 0.5, 0.5)", 0, None))
        .unwrap_err();
    assert_eq!(e.error_type(), ErrorType::BadData);
    assert!(e.to_string().contains("holt_winters"), "{e}");
    let e = err(&q, "sum(", 0);
    assert_eq!(e.error_type(), ErrorType::BadData);
    let e = rt()
        .block_on(Engine::default().query_range(&q, "x[5m]", 0, M, 15_000, None))
        .unwrap_err();
    assert_eq!(e.error_type(), ErrorType::BadData);
    assert!(e.to_string().contains("range vector"), "{e}");
}

#[test]
fn limits_are_enforced() {
    let q = MemoryQuerier::new(
        (0..50)
            .map(|i| {
                series(
                    &[("__name__", "m"), ("i", &i.to_string())],
                    &regular(0, 10 * M, 15_000, |t| t as f64),
                )
            })
            .collect(),
    );
    let small = Engine::new(EngineOptions {
        max_series: 10,
        ..Default::default()
    });
    let e = rt()
        .block_on(small.query(&q, "m", 5 * M, None))
        .unwrap_err();
    assert_eq!(e.error_type(), ErrorType::Execution);
    assert!(e.to_string().contains("too many series"), "{e}");
    let small = Engine::new(EngineOptions {
        max_samples: 100,
        ..Default::default()
    });
    let e = rt()
        .block_on(small.query(&q, "sum(rate(m[5m]))", 5 * M, None))
        .unwrap_err();
    assert!(e.to_string().contains("too many samples"), "{e}");
}

/// A querier that never answers in time.
struct Slow;

#[async_trait]
impl Querier for Slow {
    async fn select(
        &self,
        _m: &[Matcher],
        _r: TimeRange,
        _h: &SelectHints,
    ) -> Result<Vec<TimeSeries>, QuerierError> {
        tokio::time::sleep(Duration::from_secs(5)).await;
        Ok(vec![])
    }
}

struct Broken;

#[async_trait]
impl Querier for Broken {
    async fn select(
        &self,
        _m: &[Matcher],
        _r: TimeRange,
        _h: &SelectHints,
    ) -> Result<Vec<TimeSeries>, QuerierError> {
        Err(QuerierError::Storage("disk on fire".into()))
    }
}

#[test]
fn timeout_and_storage_errors() {
    let e = rt()
        .block_on(Engine::default().query(&Slow, "up", 0, Some(Duration::from_millis(50))))
        .unwrap_err();
    assert_eq!(e.error_type(), ErrorType::Timeout);
    // Evaluation deadline: a big query with a zero timeout.
    let q = MemoryQuerier::new(
        (0..2000)
            .map(|i| {
                series(
                    &[("__name__", "m"), ("i", &i.to_string())],
                    &regular(0, 60 * M, 15_000, |t| t as f64),
                )
            })
            .collect(),
    );
    let e = rt()
        .block_on(Engine::default().query_range(
            &q,
            "sum(rate(m[5m]))",
            0,
            60 * M,
            15_000,
            Some(Duration::from_nanos(1)),
        ))
        .unwrap_err();
    assert_eq!(e.error_type(), ErrorType::Timeout, "{e}");
    let e = rt()
        .block_on(Engine::default().query(&Broken, "up", 0, None))
        .unwrap_err();
    assert_eq!(e.error_type(), ErrorType::Internal);
    assert!(e.to_string().contains("disk on fire"));
}

#[test]
fn select_hints_carry_range_and_function() {
    use std::sync::Mutex;
    struct Rec(Mutex<Vec<(TimeRange, SelectHints)>>);
    #[async_trait]
    impl Querier for Rec {
        async fn select(
            &self,
            _m: &[Matcher],
            r: TimeRange,
            h: &SelectHints,
        ) -> Result<Vec<TimeSeries>, QuerierError> {
            self.0.lock().unwrap().push((r, h.clone()));
            Ok(vec![])
        }
    }
    let rec = Rec(Mutex::new(vec![]));
    rt().block_on(Engine::default().query_range(
        &rec,
        "sum(rate(x[5m] offset 1m)) + y",
        10 * M,
        20 * M,
        M,
        None,
    ))
    .unwrap();
    let got = rec.0.lock().unwrap().clone();
    assert_eq!(got.len(), 2);
    assert_eq!(
        got[0].0,
        TimeRange {
            start_ms: 4 * M,
            end_ms: 19 * M
        }
    );
    assert_eq!(got[0].1.range_ms, 5 * M);
    assert_eq!(got[0].1.step_ms, M);
    assert_eq!(got[0].1.func.as_deref(), Some("rate"));
    // Instant selector: lookback of 5 minutes before the first step.
    assert_eq!(
        got[1].0,
        TimeRange {
            start_ms: 5 * M,
            end_ms: 20 * M
        }
    );
    assert_eq!(got[1].1.range_ms, 0);
}

#[test]
fn range_query_over_all_steps() {
    let q = counter_with_reset();
    let r = range(&q, "rate(c_total[1m])", 2 * M, 8 * M, M);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].1.len(), 7);
    assert!(r[0].1.iter().all(|(_, v)| close(*v, 1.0)));
    // Series that only exist for part of the range get only their points.
    let q = MemoryQuerier::new(vec![
        series(&[("__name__", "a")], &[(0, 1.0)]),
        series(&[("__name__", "b")], &[(20 * M, 2.0)]),
    ]);
    let r = range(&q, r#"{__name__=~"a|b"} * 2"#, 0, 20 * M, 5 * M);
    // After the name is dropped both become {} — merged, as Prometheus does,
    // since they never collide on one step.
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].1, vec![(0, 2.0), (5 * M, 2.0), (20 * M, 4.0)]);
}

// ---------------------------------------------------------------------------
// Rollups

const H: i64 = 60 * M;

fn range_with(
    q: &MemoryQuerier,
    rollups: RollupPolicy,
    query: &str,
    s: i64,
    e: i64,
    step: i64,
) -> Vec<(Labels, Vec<(i64, f64)>)> {
    let engine = Engine::new(EngineOptions {
        rollups,
        ..Default::default()
    });
    match rt().block_on(engine.query_range(q, query, s, e, step, None)) {
        Ok(QueryResult::Matrix(m)) => m.into_iter().map(|s| (s.labels, s.points)).collect(),
        other => panic!("{query}: expected a matrix, got {other:?}"),
    }
}

/// Two days at 15 s (scrape jitter keeps samples off bucket edges): a
/// counter growing ~2/s with resets (one on a chunk-window edge) and a
/// wobbling gauge, for three pods.
fn two_days() -> MemoryQuerier {
    let mut out = Vec::new();
    for pod in ["a", "b", "c"] {
        let seed = pod.as_bytes()[0] as i64;
        let mut v = 0.0;
        let mut c = Vec::new();
        let mut g = Vec::new();
        for i in 0..(48 * 240) {
            let t = i * 15_000 + 1_234 + seed;
            v = if i == 1_000 || i == 2 * 480 {
                7.0
            } else {
                v + 30.0 + (i * seed % 3) as f64
            };
            c.push((t, v));
            g.push((t, 1e6 + ((i * 7_919 + seed) % 1_000) as f64));
        }
        out.push(series(&[("__name__", "cpu_total"), ("pod", pod)], &c));
        out.push(series(&[("__name__", "mem"), ("pod", pod)], &g));
    }
    MemoryQuerier::new(out)
}

#[track_caller]
fn assert_within(
    raw: &[(Labels, Vec<(i64, f64)>)],
    rolled: &[(Labels, Vec<(i64, f64)>)],
    rel: f64,
    what: &str,
) {
    assert_eq!(raw.len(), rolled.len(), "{what}: series");
    let mut worst = 0.0f64;
    for (a, b) in raw.iter().zip(rolled) {
        assert_eq!(a.0, b.0, "{what}: labels");
        assert_eq!(
            a.1.iter().map(|p| p.0).collect::<Vec<_>>(),
            b.1.iter().map(|p| p.0).collect::<Vec<_>>(),
            "{what}: steps"
        );
        for (x, y) in a.1.iter().zip(&b.1) {
            worst = worst.max((x.1 - y.1).abs() / x.1.abs().max(1e-300));
        }
    }
    assert!(
        worst <= rel,
        "{what}: worst relative difference {worst:e} > {rel:e}"
    );
}

#[test]
fn rollups_answer_like_raw_samples() {
    let q = two_days();
    let (s, e) = (6 * H, 48 * H - 30 * M);
    // Bucket-aligned windows, no sample on an edge: max, min, sum, last and
    // instant selectors are the raw answers.
    for (query, rel) in [
        ("max_over_time(mem[1h])", 0.0),
        ("min_over_time(mem[30m])", 0.0),
        ("last_over_time(mem[10m])", 0.0),
        ("mem", 0.0),
        ("sum by (pod) (mem)", 0.0),
        ("sum_over_time(mem[1h])", 1e-12),
        // The counter: a window's first and last buckets are cut where the
        // raw samples are not, so rate is within a bucket's share.
        ("rate(cpu_total[1h])", 1e-3),
        ("increase(cpu_total[2h])", 5e-3),
        ("sum(rate(cpu_total[6h]))", 1e-4),
    ] {
        let raw = range_with(&q, RollupPolicy::Never, query, s, e, 30 * M);
        let rolled = range_with(&q, RollupPolicy::Always, query, s, e, 30 * M);
        assert!(!raw.is_empty(), "{query}");
        assert_within(&raw, &rolled, rel, query);
        // `auto` picks the rollups at this step: the same answer.
        assert_eq!(
            range_with(&q, RollupPolicy::default(), query, s, e, 30 * M),
            rolled,
            "{query}"
        );
    }
    // What rollups cannot answer is read raw, whatever the policy.
    for query in [
        "avg_over_time(mem[1h])",
        "irate(cpu_total[10m])",
        "rate(cpu_total[5m])",
    ] {
        assert_eq!(
            range_with(&q, RollupPolicy::Always, query, s, e, 30 * M),
            range_with(&q, RollupPolicy::Never, query, s, e, 30 * M),
            "{query}"
        );
    }
}

#[test]
fn rollup_policy_picks_the_resolution() {
    use kube_insight_core::{Resolution, RollupField};
    let auto = RollupPolicy::default();
    assert_eq!(
        auto.resolution(Some("rate"), 60 * M, 30 * M),
        Resolution::Rollup5m(RollupField::Counter)
    );
    assert_eq!(
        auto.resolution(Some("rate"), 60 * M, 10 * M),
        Resolution::Raw,
        "fine step"
    );
    assert_eq!(
        auto.resolution(Some("rate"), 60 * M, 0),
        Resolution::Raw,
        "instant query"
    );
    assert_eq!(
        auto.resolution(Some("rate"), 5 * M, 30 * M),
        Resolution::Raw,
        "one bucket"
    );
    assert_eq!(
        auto.resolution(None, 0, H),
        Resolution::Rollup5m(RollupField::Last)
    );
    assert_eq!(
        auto.resolution(Some("max_over_time"), 5 * M, H),
        Resolution::Rollup5m(RollupField::Max)
    );
    assert_eq!(
        auto.resolution(Some("quantile_over_time"), H, H),
        Resolution::Raw
    );
    let always = RollupPolicy::Always;
    assert_eq!(
        always.resolution(Some("increase"), H, 0),
        Resolution::Rollup5m(RollupField::Counter)
    );
    assert_eq!(RollupPolicy::Never.resolution(None, 0, H), Resolution::Raw);
    assert_eq!(RollupPolicy::from_param("auto").unwrap(), auto);
    assert_eq!(RollupPolicy::from_param("0s").unwrap(), RollupPolicy::Never);
    assert_eq!(
        RollupPolicy::from_param("raw").unwrap(),
        RollupPolicy::Never
    );
    assert_eq!(RollupPolicy::from_param("5m").unwrap(), always);
    assert_eq!(RollupPolicy::from_param("1h").unwrap(), always);
    for bad in ["1m", "fast"] {
        let e = RollupPolicy::from_param(bad).unwrap_err();
        assert_eq!(e.error_type(), ErrorType::BadData, "{bad}");
        assert!(e.to_string().contains("max_source_resolution"), "{e}");
    }
}

/// A querier that, like the stores, stops once a selection holds more
/// samples than the engine's limit.
struct Limited(MemoryQuerier);

#[async_trait]
impl Querier for Limited {
    async fn select(
        &self,
        m: &[Matcher],
        r: TimeRange,
        h: &SelectHints,
    ) -> Result<Vec<TimeSeries>, QuerierError> {
        let out = self.0.select(m, r, h).await?;
        if out.iter().map(|s| s.samples.len()).sum::<usize>() > h.max_samples {
            return Err(QuerierError::TooManySamples {
                limit: h.max_samples,
            });
        }
        Ok(out)
    }
}

/// A range query over the samples limit is evaluated in time slices, and
/// its answer is the one-pass answer, point for point: windows, lookback,
/// offsets, `@ start()`/`@ end()`, subqueries and per-step aggregations all
/// depend on the step alone.
#[test]
fn range_queries_over_the_samples_limit_are_sliced_with_the_same_answer() {
    let hours = 6;
    let mut all = Vec::new();
    for i in 0..20 {
        let g = if i % 2 == 0 { "even" } else { "odd" };
        let name = format!("s{i}");
        // A counter with a reset in the middle, and a gap of 20 minutes.
        let pts: Vec<(i64, f64)> = regular(0, hours * 60 * M, 15_000, |t| {
            let base = if t < 3 * 60 * M { t } else { t - 3 * 60 * M };
            (base / 1000) as f64 * (i + 1) as f64
        })
        .into_iter()
        .filter(|(t, _)| !(100 * M..120 * M).contains(t))
        .collect();
        all.push(series(&[("__name__", "m"), ("g", g), ("i", &name)], &pts));
    }
    let total: usize = all.iter().map(|s| s.samples.len()).sum();
    let q = MemoryQuerier::new(all);
    let limited = Limited(q.clone());
    let queries = [
        "m",
        "sum by (g) (rate(m[5m]))",
        "increase(m[1h])",
        "count_over_time(m[30m])",
        "m offset 10m",
        "m @ start()",
        "rate(m[5m] @ end())",
        "max_over_time(rate(m[5m])[30m:1m])",
        "topk(3, m)",
        "sum(m) / count(m)",
        "time()",
        "scalar(sum(m))",
    ];
    let unlimited = Engine::new(EngineOptions {
        max_samples: usize::MAX,
        ..Default::default()
    });
    let small = Engine::new(EngineOptions {
        max_samples: 8_000,
        ..Default::default()
    });
    assert!(total > 3 * 8_000, "the data must need slicing: {total}");
    let (s, e, step) = (30 * M, hours * 60 * M, 60_000);
    for query in queries {
        let want = rt()
            .block_on(unlimited.query_range(&q, query, s, e, step, None))
            .unwrap();
        for querier in [&q as &dyn Querier, &limited] {
            let got = rt()
                .block_on(small.query_range(querier, query, s, e, step, None))
                .unwrap_or_else(|e| panic!("{query}: {e}"));
            assert_eq!(format!("{got:?}"), format!("{want:?}"), "{query}");
        }
    }
    // One step that alone is over the limit still fails, clearly.
    let tiny = Engine::new(EngineOptions {
        max_samples: 1_000,
        ..Default::default()
    });
    for querier in [&q as &dyn Querier, &limited] {
        let err = rt()
            .block_on(tiny.query_range(querier, "count_over_time(m[1h])", s, e, step, None))
            .unwrap_err();
        assert!(
            matches!(err, PromqlError::TooManySamples { limit: 1_000, .. }),
            "{err}"
        );
        assert_eq!(err.error_type(), ErrorType::Execution);
    }
    // The points returned, all slices together, are bounded too.
    let out_limit = Engine::new(EngineOptions {
        max_samples: 5_000,
        ..Default::default()
    });
    let err = rt()
        .block_on(out_limit.query_range(&q, "m", s, e, 15_000, None))
        .unwrap_err();
    assert!(matches!(err, PromqlError::TooManySamples { .. }), "{err}");
}

/// The functions and aggregations only Prometheus 3 has. Debian's Prometheus
/// is 2.42, so these are checked against values computed by hand and the
/// properties of Prometheus' own tests (promqltest/testdata/limit.test).
#[test]
fn prometheus3_functions() {
    let v3 = Engine::new(EngineOptions {
        compat: Compat::Prometheus3,
        ..Default::default()
    });
    let mut all = Vec::new();
    for (group, inst, k) in [
        ("production", "0", 10.0),
        ("production", "1", 20.0),
        ("canary", "0", 30.0),
        ("canary", "1", 40.0),
        ("canary", "2", 50.0),
        ("canary", "10", 60.0),
    ] {
        all.push(series(
            &[
                ("__name__", "http_requests"),
                ("group", group),
                ("instance", inst),
            ],
            &regular(0, 50 * M, 5 * M, |t| k * (t / (5 * M)) as f64),
        ));
    }
    all.push(series(
        &[("__name__", "g")],
        &[(0, 1.0), (M, 2.0), (2 * M, 4.0), (3 * M, 10.0)],
    ));
    let q = MemoryQuerier::new(all);
    let at = 50 * M;
    let run = |query: &str| -> Vec<InstantSample> {
        match rt().block_on(v3.query(&q, query, at, None)) {
            Ok(QueryResult::Vector(v)) => v,
            other => panic!("{query}: {other:?}"),
        }
    };
    let count = |query: &str| -> f64 { run(query).first().map_or(0.0, |s| s.value) };
    // limitk: k per group, a subset of the input, in input order.
    assert_eq!(
        count("count(limitk by (group) (1, http_requests) and http_requests)"),
        2.0
    );
    assert_eq!(
        count("count(limitk by (group) (2, http_requests) and http_requests)"),
        4.0
    );
    assert_eq!(count("count(limitk(100, http_requests))"), 6.0);
    assert!(run("limitk(0, http_requests)").is_empty());
    assert!(run("limitk(-1, http_requests)").is_empty());
    // limit_ratio: r and -(1 - r) are complements; ±1 and beyond keep everything.
    for r in ["0.2", "0.5", "0.8"] {
        let c = format!("{}", 1.0 - r.parse::<f64>().unwrap());
        let or =
            format!("count(limit_ratio({r}, http_requests) or limit_ratio(-{c}, http_requests))");
        let and =
            format!("count(limit_ratio({r}, http_requests) and limit_ratio(-{c}, http_requests))");
        assert_eq!(count(&or), 6.0, "{or}");
        assert!(run(&and).is_empty(), "{and}");
    }
    assert_eq!(count("count(limit_ratio(1.1, http_requests))"), 6.0);
    assert_eq!(count("count(limit_ratio(-1, http_requests))"), 6.0);
    assert!(run("limit_ratio(0, http_requests)").is_empty());
    // mad_over_time of 1, 2, 4, 10: median 3, deviations 2, 1, 1, 7 → 1.5.
    assert_eq!(one_with(&run("mad_over_time(g[10m] @ 180)")), 1.5);
    // double_exponential_smoothing is holt_winters renamed.
    let des = one_with(&run("double_exponential_smoothing(g[10m] @ 180, 0.5, 0.5)"));
    let hw = one(&q, "holt_winters(g[10m] @ 180, 0.5, 0.5)", at);
    assert_eq!(des, hw);
    // sort_by_label: natural order of the label, then the whole label set.
    let order: Vec<String> = run("sort_by_label(http_requests, \"instance\", \"group\")")
        .iter()
        .map(|s| {
            format!(
                "{}/{}",
                s.labels.get("instance").unwrap(),
                s.labels.get("group").unwrap()
            )
        })
        .collect();
    assert_eq!(
        order,
        [
            "0/canary",
            "0/production",
            "1/canary",
            "1/production",
            "2/canary",
            "10/canary"
        ]
    );
    let first = run("sort_by_label_desc(http_requests, \"instance\")");
    assert_eq!(first[0].labels.get("instance"), Some("10"));
}

fn one_with(v: &[InstantSample]) -> f64 {
    assert_eq!(v.len(), 1, "{v:?}");
    v[0].value
}

/// Stale markers (which promtool cannot write, so the differential corpus
/// has none): a series ended by one is absent right after it, for the new
/// functions as for selectors.
#[test]
fn stale_series_for_presence_functions() {
    let q = MemoryQuerier::new(vec![series(
        &[("__name__", "s"), ("job", "a")],
        &[(0, 1.0), (M, 2.0), (2 * M, STALE_NAN), (10 * M, 5.0)],
    )]);
    // Right after the marker: no sample, so absent() is 1 with the matcher's labels.
    assert_eq!(one(&q, "timestamp(s)", M + 30_000), 60.0);
    assert!(vector(&q, "timestamp(s)", 3 * M).is_empty());
    let a = vector(&q, r#"absent(s{job="a"})"#, 3 * M);
    assert_eq!(
        (a.len(), a[0].labels.get("job"), a[0].value),
        (1, Some("a"), 1.0)
    );
    assert!(vector(&q, "absent(s)", M).is_empty());
    // A window holding only the marker is empty.
    assert_eq!(one(&q, "absent_over_time(s[1m])", 3 * M - 1), 1.0);
    assert!(vector(&q, "present_over_time(s[1m])", 3 * M - 1).is_empty());
    assert_eq!(one(&q, "present_over_time(s[5m])", 3 * M), 1.0);
    assert_eq!(one(&q, "count_over_time(s[5m])", 3 * M), 2.0);
    // In a range query absent() fills exactly the steps without a sample.
    let r = range(&q, "absent(s)", 0, 12 * M, M);
    let steps: Vec<i64> = r[0].1.iter().map(|p| p.0 / M).collect();
    assert_eq!(steps, vec![2, 3, 4, 5, 6, 7, 8, 9]);
}
