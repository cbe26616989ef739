//! The cassandra backend under the SQLite benchmarks' workloads: metrics
//! samples/s next to CQL writes/s, write latency at half that rate, log
//! lines/s, and query latency. Needs a server:
//!
//! ```text
//! KUBE_INSIGHT_TEST_CASSANDRA=127.0.0.1:9042 cargo bench -p kube-insight-store-cassandra --bench cassandra
//! ```
//! Env: BENCH_SERIES (20000), BENCH_STEPS (20), BENCH_BATCH (2000 series per
//! request, like a Prometheus remote-write shard), BENCH_SENDERS (8),
//! BENCH_LOG_LINES (200000).
//! Without the variable it says so and exits.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a bench: a panic is a failed run

use kube_insight_core::log::{LineFilter, LogRecord, LogStreamKey, LogStreamMeta, StdStream};
use kube_insight_core::{Labels, Matcher, Sample, TimeRange, TimeSeries};
use kube_insight_store::{
    CassandraAuth, LogBatch, LogQuery, LogSelector, LogStreamBatch, MetricBatch, MetricStore,
    SelectQuery, Store, StoreOptions,
};
use kube_insight_store_cassandra::config::CassandraConfig;
use kube_insight_store_cassandra::CassandraStore;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn labels(i: usize) -> Labels {
    Labels::from_pairs([
        ("__name__", "container_cpu_usage_seconds_total".to_string()),
        ("cluster", "bench".to_string()),
        ("namespace", format!("ns-{}", i % 50)),
        ("pod", format!("pod-{}", i / 3)),
        ("container", format!("c-{}", i % 3)),
        ("job", "kubelet".to_string()),
        ("instance", format!("10.0.{}.{}:10250", i % 200, i % 250)),
    ])
}

fn cpu_ms() -> f64 {
    // utime + stime of this process, in ms (Linux).
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let f: Vec<&str> = s.rsplit_once(')')?.1.split_whitespace().collect();
            let t: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
            Some(t * 10.0)
        })
        .unwrap_or(f64::NAN)
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(((v.len() as f64 - 1.0) * p).round() as usize)
        .copied()
        .unwrap_or(f64::NAN)
}

fn main() {
    let Ok(host) = std::env::var("KUBE_INSIGHT_TEST_CASSANDRA") else {
        eprintln!(
            "skipped: set KUBE_INSIGHT_TEST_CASSANDRA=host:port to benchmark the cassandra backend"
        );
        return;
    };
    let series: usize = env("BENCH_SERIES", 20_000);
    let steps: i64 = env("BENCH_STEPS", 20);
    let per_req: usize = env("BENCH_BATCH", 2_000);
    let senders: usize = env("BENCH_SENDERS", 8);
    let log_lines: usize = env("BENCH_LOG_LINES", 200_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let keyspace = format!("ki_bench_{}", std::process::id());
        let config = CassandraConfig::from_url(
            "bench",
            vec![host.clone()],
            keyspace.clone(),
            &[],
            CassandraAuth::default(),
        )
        .unwrap();
        let opts = StoreOptions {
            max_series_per_cluster: 10_000_000,
            ..Default::default()
        };
        let store = Arc::new(CassandraStore::open(config, opts, true).await.unwrap());
        let t0 = kube_insight_core::time::now_ms() - steps * 15_000;
        let all_labels: Arc<Vec<Labels>> = Arc::new((0..series).map(labels).collect());

        // Metrics: every step, every series, in requests of `per_req` series.
        let (w0, _) = store.cql_requests();
        let cpu0 = cpu_ms();
        let start = Instant::now();
        let mut latencies = Vec::new();
        for step in 0..steps {
            let mut tasks = Vec::new();
            for sender in 0..senders {
                let (store, all_labels) = (store.clone(), all_labels.clone());
                tasks.push(tokio::spawn(async move {
                    let mut lat = Vec::new();
                    let mut i = sender * per_req;
                    while i < all_labels.len() {
                        let end = (i + per_req).min(all_labels.len());
                        let batch = MetricBatch {
                            cluster: "bench".into(),
                            series: all_labels[i..end]
                                .iter()
                                .enumerate()
                                .map(|(k, l)| {
                                    TimeSeries::new(
                                        l.clone(),
                                        vec![Sample::new(t0 + step * 15_000, (step as usize * 7 + k) as f64)],
                                    )
                                })
                                .collect(),
                        };
                        let t = Instant::now();
                        store.write_samples(batch).await.unwrap();
                        lat.push(t.elapsed().as_secs_f64() * 1000.0);
                        i += senders * per_req;
                    }
                    lat
                }));
            }
            for t in tasks {
                latencies.extend(t.await.unwrap());
            }
        }
        let secs = start.elapsed().as_secs_f64();
        let samples = series as f64 * steps as f64;
        let (w1, _) = store.cql_requests();
        let cpu = cpu_ms() - cpu0;
        println!(
            "metrics: {:.0} samples/s, {:.0} CQL writes/s ({:.1} samples per write), client CPU {:.0} ms per 100k samples, write p50 {:.1} ms p99 {:.1} ms",
            samples / secs,
            (w1 - w0) as f64 / secs,
            samples / (w1 - w0).max(1) as f64,
            cpu / samples * 100_000.0,
            pct(&mut latencies, 0.5),
            pct(&mut latencies, 0.99),
        );

        // Latency at half the rate: one request every 2x its mean time.
        let pace = Duration::from_secs_f64(secs / (samples / per_req as f64) * 2.0);
        let mut lat = Vec::new();
        for r in 0..(200.min(series / per_req.max(1) * 4)).max(20) {
            let i = (r * per_req) % series;
            let end = (i + per_req).min(series);
            let batch = MetricBatch {
                cluster: "bench".into(),
                series: all_labels[i..end]
                    .iter()
                    .map(|l| TimeSeries::new(l.clone(), vec![Sample::new(t0 + (steps + r as i64) * 15_000, 1.0)]))
                    .collect(),
            };
            let t = Instant::now();
            store.write_samples(batch).await.unwrap();
            lat.push(t.elapsed().as_secs_f64() * 1000.0);
            tokio::time::sleep(pace.saturating_sub(t.elapsed())).await;
        }
        println!(
            "metrics at 50 % rate: write p50 {:.1} ms p99 {:.1} ms",
            pct(&mut lat, 0.5),
            pct(&mut lat, 0.99)
        );

        // A workload's CPU over the written range (PromQL reads one select).
        let mut q = Vec::new();
        for ns in 0..20 {
            let t = Instant::now();
            let got = store
                .select(&SelectQuery {
                    matchers: vec![
                        Matcher::eq("__name__", "container_cpu_usage_seconds_total"),
                        Matcher::eq("namespace", format!("ns-{ns}")),
                    ],
                    range: TimeRange::new(t0, t0 + steps * 15_000).unwrap(),
                    max_series: 100_000,
                    max_samples: 50_000_000,
                    resolution: Default::default(),
                })
                .await
                .unwrap();
            assert!(!got.is_empty());
            q.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        println!(
            "select one namespace ({} series): p50 {:.1} ms p99 {:.1} ms",
            series / 50,
            pct(&mut q, 0.5),
            pct(&mut q, 0.99)
        );

        // Logs: batches of 500 lines over 20 streams, like one Fluent Bit flush.
        let logs = store.logs();
        let now_ns = kube_insight_core::time::now_ms() * 1_000_000;
        let start = Instant::now();
        let mut written = 0usize;
        let mut b = 0i64;
        while written < log_lines {
            let streams = (0..20)
                .map(|s| LogStreamBatch {
                    key: LogStreamKey::new("bench", "shop", format!("api-{s}"), "api"),
                    meta: LogStreamMeta::default(),
                    records: (0..25)
                        .map(|i| LogRecord {
                            timestamp_ns: now_ns - 3_600_000_000_000 + (b * 25 + i) * 1_000_000,
                            stream: StdStream::Stdout,
                            line: format!("GET /api/v1/orders/{b}-{i} 200 12ms user=42 trace=abcdef{s}"),
                            partial: false,
                            truncated: false,
                            level: None,
                            fields: None,
                        })
                        .collect(),
                })
                .collect();
            logs.write_logs(LogBatch {
                cluster: "bench".into(),
                streams,
            })
            .await
            .unwrap();
            written += 500;
            b += 1;
        }
        println!("logs: {:.0} lines/s", written as f64 / start.elapsed().as_secs_f64());
        let mut q = Vec::new();
        for _ in 0..10 {
            let mut lq = LogQuery::new(
                LogSelector {
                    cluster: Some("bench".into()),
                    namespace: Some("shop".into()),
                    ..Default::default()
                },
                TimeRange::new(now_ns / 1_000_000 - 7_200_000, now_ns / 1_000_000).unwrap(),
            );
            lq.filter = LineFilter::new(Some("orders/7-"), None).unwrap();
            lq.limit = 100;
            let t = Instant::now();
            logs.query_logs(&lq).await.unwrap();
            q.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        println!(
            "logs contains over the namespace: p50 {:.1} ms p99 {:.1} ms",
            pct(&mut q, 0.5),
            pct(&mut q, 0.99)
        );
        store.drop_keyspace().await.unwrap();
    });
}
