//! End-to-end metrics ingest benchmark: a realistic cAdvisor + kube-state-metrics
//! workload pushed through the real push mount (remote write over loopback
//! HTTP) or pulled by the real federation source, into the real SQLite store.
//!
//! ```sh
//! cargo bench -p kube-insight --bench ingest                       # full: 100k series, 2 h
//! BENCH_SERIES=20000 BENCH_HOURS=1 cargo bench -p kube-insight --bench ingest   # quick
//! ```
//! Env: BENCH_SERIES (100000), BENCH_HOURS (2), BENCH_INTERVAL_S (15),
//! BENCH_CHURN_PER_HOUR (0.10), BENCH_MODE (remote_write|federate|both, both),
//! BENCH_SENDERS (4), BENCH_PROMTOOL_SERIES (5000; 0 skips the Prometheus ratio).
//! BENCH_KEEP_DIR=1 keeps the Prometheus-ratio run's directories and prints where.
//! Reports samples/s, bytes per sample on disk after compaction, peak RSS per
//! active series, freshness (2xx → queryable), and bytes/sample vs Prometheus'
//! TSDB (`promtool tsdb create-blocks-from openmetrics`) on the same samples.

// Tests and benches may unwrap: a panic is a failing run with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

/// Shared with the end-to-end tests and the PromQL bench.
#[path = "../../../tests/support/mod.rs"]
mod support;

/// The binary's allocator (`src/main.rs`), so the bench measures what runs.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use axum::Router;
use kube_insight_core::{Labels, Matcher, Sample, TimeRange, TimeSeries};
use kube_insight_sources::metrics::transform::LabelPolicy;
use kube_insight_sources::metrics::{FederateConfig, FederateSource, RemoteWriteSource};
use kube_insight_sources::prometheus::remote_write::encode;
use kube_insight_sources::pull::PullSource;
use kube_insight_sources::push::{mount, PushLimits};
use kube_insight_sources::TokenMap;
use kube_insight_store::{DynStore, SelectQuery, StoreOptions};
use kube_insight_telemetry::Telemetry;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::dir_bytes;

fn env<T: std::str::FromStr>(k: &str, d: T) -> T {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

const T0: i64 = 1_750_000_000_000 / 7_200_000 * 7_200_000; // aligned to a 2 h window

/// A deterministic workload: label sets shaped like kubelet/cAdvisor and
/// kube-state-metrics, values like counters and gauges.
struct Workload {
    series: Vec<(Labels, bool)>, // (labels, is_counter)
    values: Vec<f64>,
    next_pod: u64,
    rng: u64,
}

impl Workload {
    fn new(n: usize) -> Self {
        let mut w = Workload {
            series: Vec::with_capacity(n),
            values: vec![0.0; n],
            next_pod: 0,
            rng: 0x9e37_79b9_7f4a_7c15,
        };
        while w.series.len() < n {
            let pod = w.next_pod;
            w.next_pod += 1;
            for (labels, counter) in Self::pod_series(pod) {
                if w.series.len() < n {
                    w.series.push((labels, counter));
                }
            }
        }
        w
    }

    /// 10 series per pod: 7 cAdvisor, 3 kube-state-metrics.
    fn pod_series(pod: u64) -> Vec<(Labels, bool)> {
        let ns = format!("team-{}", pod % 40);
        let deploy = format!("svc-{}", pod / 8 % 2000);
        let pod_name = format!("{deploy}-7c9d8f6b5-{pod:05x}");
        let node = format!(
            "ip-10-0-{}-{}.eu-west-1.compute.internal",
            pod % 7,
            pod % 250
        );
        let image = format!(
            "registry.example.com/{ns}/{deploy}:1.{}.{}",
            pod % 5,
            pod % 3
        );
        let cadvisor = |name: &str, extra: &[(&str, &str)]| {
            let mut l = vec![
                ("__name__", name.to_string()),
                ("container", "app".to_string()),
                ("endpoint", "https-metrics".to_string()),
                ("image", image.clone()),
                ("instance", node.clone()),
                ("job", "kubelet".to_string()),
                ("metrics_path", "/metrics/cadvisor".to_string()),
                ("namespace", ns.clone()),
                ("node", node.clone()),
                ("pod", pod_name.clone()),
                ("service", "kubelet".to_string()),
            ];
            for (k, v) in extra {
                l.push((k, v.to_string()));
            }
            Labels::from_pairs(l)
        };
        let ksm = |name: &str, extra: &[(&str, String)]| {
            let mut l = vec![
                ("__name__", name.to_string()),
                ("instance", "10.0.3.4:8080".to_string()),
                ("job", "kube-state-metrics".to_string()),
                ("namespace", ns.clone()),
                ("pod", pod_name.clone()),
                ("uid", format!("7d0c2c4e-{pod:08x}")),
            ];
            for (k, v) in extra {
                l.push((k, v.clone()));
            }
            Labels::from_pairs(l)
        };
        vec![
            (
                cadvisor("container_cpu_usage_seconds_total", &[("cpu", "total")]),
                true,
            ),
            (cadvisor("container_memory_working_set_bytes", &[]), false),
            (cadvisor("container_memory_rss", &[]), false),
            (
                cadvisor(
                    "container_network_receive_bytes_total",
                    &[("interface", "eth0")],
                ),
                true,
            ),
            (
                cadvisor(
                    "container_network_transmit_bytes_total",
                    &[("interface", "eth0")],
                ),
                true,
            ),
            (
                cadvisor(
                    "container_fs_writes_bytes_total",
                    &[("device", "/dev/nvme0n1")],
                ),
                true,
            ),
            (
                cadvisor("container_cpu_cfs_throttled_periods_total", &[]),
                true,
            ),
            (
                ksm(
                    "kube_pod_owner",
                    &[
                        ("owner_kind", "ReplicaSet".into()),
                        ("owner_name", format!("{deploy}-7c9d8f6b5")),
                        ("owner_is_controller", "true".into()),
                    ],
                ),
                false,
            ),
            (
                ksm("kube_pod_status_phase", &[("phase", "Running".into())]),
                false,
            ),
            (
                ksm(
                    "kube_pod_container_status_restarts_total",
                    &[("container", "app".into())],
                ),
                true,
            ),
        ]
    }

    fn rand(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    /// Replaces `n` series (whole pods) with new pods: churn.
    fn churn(&mut self, n: usize) {
        let mut done = 0;
        while done < n {
            let victim = (self.rand() as usize % (self.series.len() / 10).max(1)) * 10;
            let pod = self.next_pod;
            self.next_pod += 1;
            for (i, s) in Self::pod_series(pod).into_iter().enumerate() {
                if victim + i < self.series.len() {
                    self.series[victim + i] = s;
                    self.values[victim + i] = 0.0;
                }
            }
            done += 10;
        }
    }

    /// One scrape at `t`: every active series gets a sample.
    fn scrape(&mut self, t: i64) -> Vec<TimeSeries> {
        let mut out = Vec::with_capacity(self.series.len());
        for i in 0..self.series.len() {
            let r = self.rand();
            let counter = self.series[i].1;
            let v = if counter {
                self.values[i] + (r % 1000) as f64 / 100.0
            } else if self.series[i].0.metric_name().starts_with("kube_") {
                1.0
            } else {
                let base = 200_000_000.0 + (i % 1000) as f64 * 1_000_000.0;
                base + ((r % 4096) as f64) * 4096.0
            };
            self.values[i] = v;
            out.push(TimeSeries::new(
                self.series[i].0.clone(),
                vec![Sample::new(t, v)],
            ));
        }
        out
    }
}

fn rss_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

struct Report {
    mode: &'static str,
    samples: u64,
    secs: f64,
    bytes_on_disk: u64,
    peak_rss_kib: u64,
    base_rss_kib: u64,
    active_series: usize,
    fresh_ms: Vec<f64>,
}

impl Report {
    fn print(&self) {
        let mut f = self.fresh_ms.clone();
        f.sort_by(|a, b| a.total_cmp(b));
        let pct = |p: f64| {
            f.get(((f.len() as f64 - 1.0) * p) as usize)
                .copied()
                .unwrap_or(f64::NAN)
        };
        println!(
            "{}: {} samples in {:.1}s = {:.0} samples/s; {:.2} bytes/sample on disk after compaction; peak RSS {} MiB ({} MiB before start) = {:.0} B per active series ({}); freshness 2xx→queryable p50 {:.2} ms p99 {:.2} ms max {:.2} ms (n={})",
            self.mode,
            self.samples,
            self.secs,
            self.samples as f64 / self.secs,
            self.bytes_on_disk as f64 / self.samples as f64,
            self.peak_rss_kib / 1024,
            self.base_rss_kib / 1024,
            (self.peak_rss_kib.saturating_sub(self.base_rss_kib) as f64 * 1024.0) / self.active_series as f64,
            self.active_series,
            pct(0.5),
            pct(0.99),
            f.last().copied().unwrap_or(f64::NAN),
            f.len()
        );
    }
}

async fn open(dir: &std::path::Path) -> DynStore {
    let url = format!("sqlite://{}/bench.db", dir.display());
    let opts = StoreOptions {
        max_series_per_cluster: 10_000_000,
        retention: kube_insight_store::Retention {
            metrics: Duration::from_secs(3650 * 86400),
            ..Default::default()
        },
        ..Default::default()
    };
    kube_insight_store_sqlite::open(&url, opts)
        .await
        .expect("open store")
}

async fn latest_ts(store: &DynStore, labels: &Labels) -> Option<i64> {
    let matchers: Vec<Matcher> = labels
        .iter()
        .map(|l| Matcher::eq(l.name.clone(), l.value.clone()))
        .collect();
    let r = store
        .select(&SelectQuery {
            matchers,
            range: TimeRange::new(T0 - 86_400_000, T0 + 30 * 86_400_000).ok()?,
            max_series: 10,
            max_samples: 1_000_000,
            resolution: Default::default(),
        })
        .await
        .ok()?;
    r.first()
        .and_then(|s| s.samples.last())
        .map(|s| s.timestamp_ms)
}

async fn compact_and_measure(store: &DynStore, dir: &std::path::Path, end: i64) -> u64 {
    store.maintain(end + 4 * 3_600_000).await.expect("maintain");
    store.flush().await.expect("flush");
    // Which file holds the bytes: the database, its WAL, the logs' files.
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| {
            let len = e.metadata().map(|m| m.len()).unwrap_or(0);
            format!(
                "{} {:.1} MB",
                e.file_name().to_string_lossy(),
                len as f64 / 1e6
            )
        })
        .collect();
    files.sort();
    println!("on disk after compaction: {}", files.join(", "));
    dir_bytes(dir)
}

async fn bench_remote_write(
    series: usize,
    hours: f64,
    interval_s: i64,
    churn: f64,
    senders: usize,
) -> Report {
    let dir = tempfile::tempdir().expect("tempdir");
    let base_rss = rss_kib("VmRSS:");
    let store = open(dir.path()).await;
    let tel = Arc::new(Telemetry::new());
    let src = Arc::new(RemoteWriteSource::new(
        store.clone(),
        LabelPolicy::default(),
    ));
    let limits = PushLimits {
        max_in_flight: senders * 2,
        ..Default::default()
    };
    let app = mount(
        Router::new(),
        src,
        Arc::new(TokenMap::open("bench")),
        limits,
        tel,
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let url = format!("http://{addr}/ingest/prometheus/api/v1/write");

    // Producer: generates and encodes batches of 2000 samples (Prometheus' max_samples_per_send).
    let scrapes = (hours * 3600.0 / interval_s as f64) as i64;
    let churn_per_scrape = ((series as f64 * churn) * interval_s as f64 / 3600.0).round() as usize;
    let (tx, rx) = tokio::sync::mpsc::channel::<(Vec<u8>, usize, Labels, i64)>(senders * 4);
    let producer = std::thread::spawn(move || {
        let mut w = Workload::new(series);
        for k in 0..scrapes {
            let t = T0 + k * interval_s * 1000;
            if churn_per_scrape > 0 && k > 0 {
                w.churn(churn_per_scrape);
            }
            let all = w.scrape(t);
            for chunk in all.chunks(2000) {
                let body = encode(chunk, &[]).expect("encode");
                let probe = chunk[chunk.len() - 1].labels.clone();
                if tx.blocking_send((body, chunk.len(), probe, t)).is_err() {
                    return;
                }
            }
        }
    });
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let sent = Arc::new(AtomicU64::new(0));
    let fresh = Arc::new(std::sync::Mutex::new(Vec::new()));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for sid in 0..senders {
        let (rx, sent, fresh, url, store) = (
            rx.clone(),
            sent.clone(),
            fresh.clone(),
            url.clone(),
            store.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut n = 0u64;
            loop {
                let item = rx.lock().await.recv().await;
                let Some((body, samples, probe, t)) = item else {
                    break;
                };
                loop {
                    let r = client
                        .post(&url)
                        .header("content-encoding", "snappy")
                        .header("content-type", "application/x-protobuf")
                        .body(body.clone())
                        .send()
                        .await
                        .expect("post");
                    if r.status().is_success() {
                        break;
                    }
                    assert!(
                        r.status().as_u16() == 503 || r.status().as_u16() == 429,
                        "status {}",
                        r.status()
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                let acked = Instant::now();
                sent.fetch_add(samples as u64, Ordering::Relaxed);
                n += 1;
                if sid == 0 && n.is_multiple_of(50) {
                    // Freshness: how long after the 2xx is the newest sample queryable?
                    loop {
                        if latest_ts(&store, &probe).await == Some(t) {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    fresh
                        .lock()
                        .expect("lock")
                        .push(acked.elapsed().as_secs_f64() * 1000.0);
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("sender");
    }
    let _ = producer.join();
    let secs = started.elapsed().as_secs_f64();
    let peak = rss_kib("VmHWM:");
    let end = T0 + scrapes * interval_s * 1000;
    let bytes = compact_and_measure(&store, dir.path(), end).await;
    let fresh_ms = fresh.lock().expect("lock").clone();
    Report {
        mode: "remote_write",
        samples: sent.load(Ordering::Relaxed),
        secs,
        bytes_on_disk: bytes,
        peak_rss_kib: peak,
        base_rss_kib: base_rss,
        active_series: series,
        fresh_ms,
    }
}

/// Serves one exposition body per scrape; the real FederateSource pulls each.
async fn bench_federate(series: usize, hours: f64, interval_s: i64, churn: f64) -> Report {
    let dir = tempfile::tempdir().expect("tempdir");
    let base_rss = rss_kib("VmRSS:");
    let store = open(dir.path()).await;
    let body = Arc::new(std::sync::Mutex::new(Arc::new(String::new())));
    let b2 = body.clone();
    let app = Router::new().route(
        "/federate",
        axum::routing::get(move || {
            let b = b2.lock().expect("lock").clone();
            async move { (*b).clone() }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let src = FederateSource::new(
        store.clone(),
        FederateConfig {
            base_url: format!("http://{addr}"),
            matchers: vec!["{job=~\".+\"}".into()],
            cluster: "bench".into(),
            policy: LabelPolicy::default(),
            max_body_bytes: 1 << 30,
        },
    )
    .expect("source");
    let scrapes = (hours * 3600.0 / interval_s as f64) as i64;
    let churn_per_scrape = ((series as f64 * churn) * interval_s as f64 / 3600.0).round() as usize;
    let mut w = Workload::new(series);
    let mut total = 0u64;
    let mut busy = Duration::ZERO;
    let mut text_bytes = 0usize;
    for k in 0..scrapes {
        let t = T0 + k * interval_s * 1000;
        if churn_per_scrape > 0 && k > 0 {
            w.churn(churn_per_scrape);
        }
        let mut text = String::with_capacity(series * 250);
        for s in w.scrape(t) {
            text.push_str(s.labels.metric_name());
            text.push('{');
            let mut first = true;
            for l in s.labels.iter().filter(|l| l.name != "__name__") {
                if !first {
                    text.push(',');
                }
                first = false;
                text.push_str(&format!("{}=\"{}\"", l.name, l.value));
            }
            text.push_str(&format!("}} {} {}\n", s.samples[0].value, t));
        }
        text_bytes += text.len();
        *body.lock().expect("lock") = Arc::new(text);
        let started = Instant::now();
        let r = src.pull_once(Duration::from_secs(60)).await.expect("pull");
        busy += started.elapsed();
        total += r.accepted;
    }
    let peak = rss_kib("VmHWM:");
    let end = T0 + scrapes * interval_s * 1000;
    let bytes = compact_and_measure(&store, dir.path(), end).await;
    println!(
        "federate: {:.1} MB of exposition text pulled, parsed and stored at {:.1} MB/s",
        text_bytes as f64 / 1e6,
        text_bytes as f64 / 1e6 / busy.as_secs_f64()
    );
    Report {
        mode: "federate",
        samples: total,
        secs: busy.as_secs_f64(),
        bytes_on_disk: bytes,
        peak_rss_kib: peak,
        base_rss_kib: base_rss,
        active_series: series,
        fresh_ms: Vec::new(),
    }
}

/// The same samples into kube-insight's store and into Prometheus' TSDB
/// (promtool), bytes per sample side by side.
async fn bench_vs_prometheus(series: usize, hours: f64, interval_s: i64) {
    let Ok(promtool) = which("promtool") else {
        println!(
            "prometheus ratio: skipped, promtool not installed (apt-get install -y prometheus)"
        );
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir.path().join("ki")).await;
    let om_path = dir.path().join("samples.om");
    let mut om = std::io::BufWriter::new(std::fs::File::create(&om_path).expect("om"));
    use std::io::Write;
    let scrapes = (hours * 3600.0 / interval_s as f64) as i64;
    let mut w = Workload::new(series);
    // OpenMetrics wants each family's samples together: collect per series.
    let mut per_series: Vec<Vec<Sample>> = vec![Vec::new(); series];
    let mut samples = 0u64;
    for k in 0..scrapes {
        let t = T0 + k * interval_s * 1000;
        let batch = w.scrape(t);
        for (i, s) in batch.iter().enumerate() {
            per_series[i].push(s.samples[0]);
        }
        samples += batch.len() as u64;
        for chunk in batch.chunks(2000) {
            store
                .write_samples(kube_insight_store::MetricBatch {
                    cluster: "bench".into(),
                    series: chunk.to_vec(),
                })
                .await
                .expect("write");
        }
    }
    let mut order: Vec<usize> = (0..series).collect();
    order.sort_by(|a, b| {
        w.series[*a]
            .0
            .metric_name()
            .cmp(w.series[*b].0.metric_name())
    });
    let mut last_family = String::new();
    for i in order {
        let labels = &w.series[i].0;
        let name = labels.metric_name();
        if name != last_family {
            writeln!(om, "# TYPE {name} gauge").expect("write");
            last_family = name.to_string();
        }
        let ls: Vec<String> = labels
            .iter()
            .filter(|l| l.name != "__name__")
            .map(|l| format!("{}=\"{}\"", l.name, l.value))
            .collect();
        for s in &per_series[i] {
            writeln!(
                om,
                "{name}{{{}}} {} {}",
                ls.join(","),
                s.value,
                s.timestamp_ms as f64 / 1000.0
            )
            .expect("write");
        }
    }
    writeln!(om, "# EOF").expect("write");
    drop(om);
    let end = T0 + scrapes * interval_s * 1000;
    let ours = compact_and_measure(&store, &dir.path().join("ki"), end).await;
    let out = dir.path().join("tsdb");
    let status = std::process::Command::new(promtool)
        .args(["tsdb", "create-blocks-from", "openmetrics"])
        .arg(&om_path)
        .arg(&out)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("promtool");
    assert!(status.success(), "promtool failed");
    let theirs = dir_bytes(&out);
    println!(
        "bytes/sample, same {samples} samples ({series} series x {scrapes} scrapes): kube-insight {:.3}, Prometheus TSDB {:.3}, ratio {:.2}x",
        ours as f64 / samples as f64,
        theirs as f64 / samples as f64,
        ours as f64 / theirs as f64
    );
    if std::env::var_os("BENCH_KEEP_DIR").is_some() {
        // For a closer look (sqlite3 … 'SELECT name, SUM(pgsize) FROM dbstat …').
        println!("kept {}", dir.path().display());
        std::mem::forget(dir);
    }
}

fn which(name: &str) -> Result<std::path::PathBuf, ()> {
    std::env::var_os("PATH")
        .and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(name))
                .find(|p| p.is_file())
        })
        .ok_or(())
}

fn main() {
    // `cargo test --benches` runs benches with `--bench`-less args; do nothing then.
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    let series: usize = env("BENCH_SERIES", 100_000);
    let hours: f64 = env("BENCH_HOURS", 2.0);
    let interval: i64 = env("BENCH_INTERVAL_S", 15);
    let churn: f64 = env("BENCH_CHURN_PER_HOUR", 0.10);
    let mode: String = env("BENCH_MODE", "both".to_string());
    let senders: usize = env("BENCH_SENDERS", 4);
    let prom_series: usize = env("BENCH_PROMTOOL_SERIES", 5_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    println!(
        "workload: {series} active series (cAdvisor + KSM shapes, ~12 labels), {hours} h at {interval} s, {:.0}% churn/h; {} cores",
        churn * 100.0,
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
    );
    rt.block_on(async {
        if mode == "remote_write" || mode == "both" {
            bench_remote_write(series, hours, interval, churn, senders)
                .await
                .print();
        }
        if mode == "federate" || mode == "both" {
            bench_federate(series, hours, interval, churn).await.print();
        }
        if prom_series > 0 {
            bench_vs_prometheus(prom_series, hours, interval).await;
        }
    });
}
