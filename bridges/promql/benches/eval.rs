//! `sum by (namespace, pod) (rate(container_cpu_usage_seconds_total[5m]))`
//! over 100k cAdvisor-like series sampled every 15 s, as a 1 h range query at
//! a 60 s step.
//!
//! Run: `CARGO_TARGET_DIR=/work/target-promql cargo bench -p kube-insight-promql --bench eval`
//!
//! Two measurements:
//! * `query_range/memory_querier`: the whole query through `MemoryQuerier`
//!   (which copies the selected samples out of its store on every select);
//! * `query_range/eval_only`: the same query through a querier that hands
//!   over a pre-built copy (built outside the timed section), so the time is
//!   the engine's planning + evaluation.
//!
//! * `functions/<name>`: issue 18's functions over the same data and grid,
//!   beside the rate query, through `MemoryQuerier` (`BENCH_SERIES` series,
//!   default 100k; `BENCH_FUNCS_ONLY=1` skips the two runs above).
//!
//! Peak memory during one query (growth of the peak RSS, VmHWM, over the RSS
//! before it; Linux) is printed before the runs.

// A failing bench setup should panic with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use async_trait::async_trait;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use kube_insight_core::{Labels, Matcher, Sample, TimeRange, TimeSeries};
use kube_insight_promql::{Engine, MemoryQuerier, Querier, QuerierError, QueryResult, SelectHints};
use std::sync::Mutex;
use std::time::Instant;

/// (VmRSS, VmHWM) in KiB from /proc/self/status (Linux).
fn rss() -> (u64, u64) {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let get = |k: &str| {
        s.lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (get("VmRSS:"), get("VmHWM:"))
}

/// Resets VmHWM to the current RSS (Linux ≥ 4.0).
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn series_count() -> usize {
    std::env::var("BENCH_SERIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000)
}

/// Issue 18's functions, each beside the rate query it is compared with.
const FUNCTIONS: &[(&str, &str)] = &[
    ("rate", QUERY),
    (
        "deriv",
        "sum by (namespace, pod) (deriv(container_cpu_usage_seconds_total[5m]))",
    ),
    (
        "predict_linear",
        "sum by (namespace, pod) (predict_linear(container_cpu_usage_seconds_total[5m], 3600))",
    ),
    (
        "holt_winters",
        "sum by (namespace, pod) (holt_winters(container_cpu_usage_seconds_total[5m], 0.5, 0.5))",
    ),
    (
        "quantile_over_time",
        "sum by (namespace, pod) (quantile_over_time(0.9, container_cpu_usage_seconds_total[5m]))",
    ),
    (
        "timestamp",
        "max by (namespace) (timestamp(container_cpu_usage_seconds_total))",
    ),
    (
        "sort_desc",
        "sort_desc(sum by (namespace, pod) (rate(container_cpu_usage_seconds_total[5m])))",
    ),
    (
        "count_values",
        "count_values(\"v\", count by (namespace, pod) (container_cpu_usage_seconds_total))",
    ),
    (
        "absent_over_time",
        "absent_over_time(container_cpu_usage_seconds_total{namespace=\"none\"}[5m])",
    ),
    (
        "day_of_week",
        "count by (namespace) (day_of_week(container_cpu_usage_seconds_total))",
    ),
];
const STEP: i64 = 15_000;
const START: i64 = 1_700_000_000_000;
const HOUR: i64 = 3_600_000;
const QUERY: &str = "sum by (namespace, pod) (rate(container_cpu_usage_seconds_total[5m]))";

fn build() -> Vec<TimeSeries> {
    // 100 namespaces × 200 pods × 5 containers; samples from START-5m to START+1h.
    let from = START - 5 * 60_000;
    let n = ((START + HOUR - from) / STEP + 1) as usize;
    (0..series_count())
        .map(|i| {
            let ns = i / 1000;
            let pod = i / 5;
            let c = i % 5;
            let labels = Labels::from_pairs([
                ("__name__", "container_cpu_usage_seconds_total".to_string()),
                ("namespace", format!("ns-{ns}")),
                ("pod", format!("pod-{pod}-abcde")),
                ("container", format!("c{c}")),
                ("cpu", "total".to_string()),
                ("image", format!("registry.example/app-{c}:1.{ns}")),
                ("instance", format!("node-{}", i % 50)),
                ("job", "kubelet".to_string()),
            ]);
            let rate = 0.001 * ((i % 97) as f64 + 1.0);
            let samples = (0..n)
                .map(|k| Sample::new(from + k as i64 * STEP, rate * (k as f64) * 15.0))
                .collect();
            TimeSeries::new(labels, samples)
        })
        .collect()
}

/// Hands over a prepared copy once, so the copy is not timed.
struct Prepared(Mutex<Option<Vec<TimeSeries>>>);

#[async_trait]
impl Querier for Prepared {
    async fn select(
        &self,
        _m: &[Matcher],
        _r: TimeRange,
        _h: &SelectHints,
    ) -> Result<Vec<TimeSeries>, QuerierError> {
        Ok(self
            .0
            .lock()
            .map(|mut g| g.take())
            .ok()
            .flatten()
            .unwrap_or_default())
    }
}

fn run(rt: &tokio::runtime::Runtime, q: &dyn Querier) -> usize {
    run_query(rt, q, QUERY)
}

fn run_query(rt: &tokio::runtime::Runtime, q: &dyn Querier, query: &str) -> usize {
    let r = rt
        .block_on(Engine::default().query_range(q, query, START, START + HOUR, 60_000, None))
        .expect("query");
    match r {
        QueryResult::Matrix(m) => m.len(),
        _ => 0,
    }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let data = build();
    let samples: usize = data.iter().map(|s| s.samples.len()).sum();
    if std::env::var_os("BENCH_FUNCS_ONLY").is_some() {
        let mq = MemoryQuerier::new(data);
        println!(
            "functions bench: {} series, {samples} samples, 1 h at 60 s",
            series_count()
        );
        let mut g = c.benchmark_group("functions");
        g.sample_size(10);
        for (name, query) in FUNCTIONS {
            g.bench_function(*name, |b| b.iter(|| run_query(&rt, &mq, query)));
        }
        g.finish();
        return;
    }

    // One measured run each for the peak-heap report.
    let prepared = Prepared(Mutex::new(Some(data.clone())));
    reset_peak();
    let (base, _) = rss();
    let t = Instant::now();
    let groups = run(&rt, &prepared);
    let eval = t.elapsed();
    let peak_eval = rss().1.saturating_sub(base) * 1024;
    drop(prepared);

    let mq = MemoryQuerier::new(data);
    reset_peak();
    let (base, _) = rss();
    let t = Instant::now();
    let groups2 = run(&rt, &mq);
    let whole = t.elapsed();
    let peak_whole = rss().1.saturating_sub(base) * 1024;
    assert_eq!(groups, groups2);
    println!(
        "eval bench: {} series, {samples} samples, {groups} result series × 61 steps\n\
         eval only (data handed over, already resident): {eval:?}, peak RSS growth {:.1} MiB\n\
         whole query via MemoryQuerier (copies {:.1} MiB of samples): {whole:?}, peak RSS growth {:.1} MiB",
        series_count(),
        peak_eval as f64 / 1048576.0,
        (samples * 16) as f64 / 1048576.0,
        peak_whole as f64 / 1048576.0,
    );

    let mut g = c.benchmark_group("query_range");
    g.sample_size(10);
    g.bench_function("eval_only", |b| {
        b.iter_batched(
            || Prepared(Mutex::new(Some(mq.series().to_vec()))),
            |p| run(&rt, &p),
            BatchSize::PerIteration,
        )
    });
    g.bench_function("memory_querier", |b| b.iter(|| run(&rt, &mq)));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
