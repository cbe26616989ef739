//! Side-by-side PromQL benchmark against a real Prometheus (issue 3): the same
//! deterministic cAdvisor-shaped samples are loaded into Prometheus 2.42 (by
//! remote write 1.0 over loopback, in timestamp order) and into kube-insight's
//! SQLite store (in-process through the store API, compacted into chunks and
//! 5-minute rollups by `maintain` as in production); then the real
//! `kube-insight run --targets api` binary serves that store alone, and the
//! same `query_range` calls go to both over HTTP, interleaved, answers compared.
//!
//! ```sh
//! cargo bench -p kube-insight --bench promql                          # full: 100k series, 24 h at 60 s
//! BENCH_SERIES=2000 BENCH_HOURS=3 BENCH_Q3_DAYS=1 cargo bench -p kube-insight --bench promql   # quick
//! ```
//! Env: BENCH_SERIES (100000 `container_cpu_usage_seconds_total` series; ~4
//! per pod, 500 namespaces, so `sum by (namespace, pod)` has ~25k groups),
//! BENCH_HOURS (24), BENCH_INTERVAL_S (60), BENCH_ITER (10 timed iterations per
//! query and side, after 2 warm-ups), BENCH_SKIP_24H (0; 1 skips the whole-range
//! query), BENCH_Q3_DAYS (7: the single-workload dataset, 20 pods at 15 s),
//! BENCH_SENDERS (4 concurrent remote-write requests / store writers),
//! BENCH_FUNCS (0; 1 adds Q4: issue 18's functions — deriv, predict_linear,
//! quantile_over_time, sort_desc of timestamp, count_values, absent_over_time
//! — over the last hour at 60 s),
//! BENCH_PERF (a directory: `perf record -g` of kube-insight during Q1's timed
//! runs, written there as perf-q1.data).
//!
//! Queries: Q1 `sum by (namespace, pod) (rate(container_cpu_usage_seconds_total[5m]))`
//! over the last 1 h at 60 s; Q2 the same over the last 6 h at 60 s, and over
//! the whole BENCH_HOURS at 60 s and at 300 s; Q3 `sum(rate(container_cpu_usage_seconds_total{namespace="shop",pod=~"shop-.*"}[30m]))`
//! over BENCH_Q3_DAYS at 600 s and 1800 s, with kube-insight's
//! `max_source_resolution` absent (its default, `auto`), `0s` (raw) and `5m`.
//! Reports latency (p50, p99, max), the ratio ours/Prometheus, samples
//! scanned, server CPU per query, peak RSS during each query, load times, and
//! whether the answers agree (a `!!` line when they do not).
//!
//! The stream is time-ordered for both sides (Prometheus rejects out-of-order
//! samples): dataset 2's older days first, then both datasets together, one
//! timestamp of dataset 1 at a time; every request of a timestamp is
//! acknowledged before the next timestamp is sent. kube-insight's store is
//! written with `maintain` every 30 min of data time, then once an hour after
//! the end, so every 2 h window is compacted (no head data at query time).
//! Responses are fetched without gzip on both sides.

// Tests and benches may unwrap: a panic is a failing run with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

/// Process guards and ports shared with the end-to-end tests.
#[path = "../../../tests/support/mod.rs"]
mod support;

use kube_insight_core::{Labels, Sample, TimeSeries};
use kube_insight_sources::prometheus::remote_write::{encode_request, proto};
use kube_insight_store::{DynStore, MetricBatch, StoreOptions};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::{dir_bytes, free_port, Proc};

const MIN_MS: i64 = 60_000;
const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 86_400_000;
const WINDOW_MS: i64 = 2 * HOUR_MS;
const CLUSTER: &str = "bench";
const CPU: &str = "container_cpu_usage_seconds_total";
const MEM: &str = "container_memory_working_set_bytes";
/// The single workload of Q3.
const SHOP_PODS: usize = 20;
const SHOP_INTERVAL_MS: i64 = 15_000;
/// Samples per remote-write request / store batch (Prometheus' max_samples_per_send).
const BATCH: usize = 2000;

fn env<T: std::str::FromStr>(k: &str, d: T) -> T {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

#[derive(Clone, Debug)]
struct Cfg {
    series: usize,
    hours: i64,
    interval_ms: i64,
    iter: usize,
    skip_24h: bool,
    q3_days: i64,
    senders: usize,
    /// Last sample < end; aligned to a 2 h window.
    end: i64,
}

impl Cfg {
    fn d1_ticks(&self) -> i64 {
        self.hours * HOUR_MS / self.interval_ms
    }
    fn d1_start(&self) -> i64 {
        self.end - self.d1_ticks() * self.interval_ms
    }
    fn d2_start(&self) -> i64 {
        self.end - self.q3_days * DAY_MS
    }
    fn d2_ticks(&self) -> i64 {
        self.q3_days * DAY_MS / SHOP_INTERVAL_MS
    }
}

// ---------------------------------------------------------------------------
// The data: dataset 1 (many pods, BENCH_HOURS at BENCH_INTERVAL_S) and
// dataset 2 (one workload, 7 days at 15 s), generated as one time-ordered
// stream so that both sides receive every series in timestamp order.

const DEPLOYS: [&str; 10] = [
    "api", "web", "worker", "cache", "gateway", "auth", "search", "billing", "orders", "notify",
];

fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

/// kubelet/cAdvisor labels of one container's series (`container` "" is the
/// pod cgroup, dropped as an empty label like Prometheus does).
fn cadvisor_labels(
    metric: &str,
    ns: &str,
    pod: &str,
    container: &str,
    image: &str,
    node: u64,
) -> Labels {
    let node_name = format!(
        "ip-10-0-{}-{}.eu-west-1.compute.internal",
        node / 250,
        node % 250
    );
    let mut l = vec![
        ("__name__", metric.to_string()),
        ("cluster", CLUSTER.to_string()),
        ("container", container.to_string()),
        ("endpoint", "https-metrics".to_string()),
        ("image", image.to_string()),
        (
            "instance",
            format!("10.0.{}.{}:10250", node / 250, node % 250),
        ),
        ("job", "kubelet".to_string()),
        ("metrics_path", "/metrics/cadvisor".to_string()),
        ("namespace", ns.to_string()),
        ("node", node_name),
        ("pod", pod.to_string()),
        ("service", "kubelet".to_string()),
    ];
    if metric == CPU {
        l.push(("cpu", "total".to_string()));
    }
    Labels::from_pairs(l)
}

/// Dataset 1: pod p has the pod cgroup, the pause container and 1–3 more
/// containers (app, istio-proxy, log-shipper): 4 series per pod on average.
fn d1_labels(n: usize) -> (Vec<Labels>, usize) {
    let mut out = Vec::with_capacity(n);
    let mut pod = 0u64;
    while out.len() < n {
        let ns = format!("team-{:03}", pod % 500);
        let q = pod / 500;
        let deploy = DEPLOYS[(q % 10) as usize];
        let rs = mix(pod % 500 * 16 + q % 10) & 0xff_ffff_ffff;
        let pod_name = format!("{deploy}-{rs:010x}-{:05x}", mix(pod) & 0xf_ffff);
        let node = mix(pod ^ 0x5151) % 230;
        let app_image = format!("registry.example.com/{ns}/{deploy}:1.{}.{}", q % 7, pod % 3);
        let mut containers: Vec<(&str, String)> = vec![
            ("", String::new()),
            ("POD", "registry.k8s.io/pause:3.9".into()),
            ("app", app_image),
        ];
        if pod % 3 >= 1 {
            containers.push(("istio-proxy", "docker.io/istio/proxyv2:1.20.3".into()));
        }
        if pod % 3 == 2 {
            containers.push((
                "log-shipper",
                "cr.fluentbit.io/fluent/fluent-bit:3.0".into(),
            ));
        }
        for (c, image) in containers {
            if out.len() < n {
                out.push(cadvisor_labels(CPU, &ns, &pod_name, c, &image, node));
            }
        }
        pod += 1;
    }
    (out, pod as usize)
}

/// Dataset 2: one deployment, 20 pods × 1 container, CPU counter and memory gauge.
fn d2_labels() -> Vec<(Labels, bool)> {
    let mut out = Vec::new();
    for j in 0..SHOP_PODS as u64 {
        let pod = format!("shop-frontend-6b7f9c8d4-{:05x}", mix(j + 77) & 0xf_ffff);
        let image = "registry.example.com/shop/frontend:4.2.1";
        let node = mix(j ^ 0x77) % 230;
        out.push((cadvisor_labels(CPU, "shop", &pod, "app", image, node), true));
        out.push((
            cadvisor_labels(MEM, "shop", &pod, "app", image, node),
            false,
        ));
    }
    out
}

/// One block of the stream: every sample with a timestamp in [from, to).
struct Step {
    /// Data time at which this block is complete.
    to: i64,
    /// Dataset 1 at one timestamp (one value per series).
    d1: Option<(i64, Vec<f64>)>,
    /// Dataset 2, per series (same order as `d2_labels`).
    d2: Vec<Vec<Sample>>,
}

struct Gen {
    cfg: Cfg,
    d1_n: usize,
    d1_vals: Vec<f64>,
    d1_rate: Vec<f64>,
    d1_reset: Vec<i64>,
    d2_vals: Vec<f64>,
    d2_counter: Vec<bool>,
    rng: u64,
    cursor: i64,
}

impl Gen {
    fn new(cfg: &Cfg, d1_n: usize, d2: &[(Labels, bool)]) -> Gen {
        let ticks = cfg.d1_ticks().max(1);
        let mut d1_rate = Vec::with_capacity(d1_n);
        let mut d1_vals = Vec::with_capacity(d1_n);
        let mut d1_reset = Vec::with_capacity(d1_n);
        for i in 0..d1_n as u64 {
            // Cores used: 0.002 to ~1.5, skewed towards small.
            let u = (mix(i) % 10_000) as f64 / 10_000.0;
            let rate = 0.002 + 1.5 * u * u * u;
            d1_rate.push(rate);
            d1_vals.push(rate * 3600.0 * (1 + mix(i ^ 0xabc) % 200) as f64);
            // ~1 % of the series restart once (counter reset).
            let k = (i.wrapping_mul(7919) % ticks as u64) as i64;
            d1_reset.push(if i % 97 == 5 && k > 0 {
                cfg.d1_start() + k * cfg.interval_ms
            } else {
                i64::MIN
            });
        }
        Gen {
            cfg: cfg.clone(),
            d1_n,
            d1_vals,
            d1_rate,
            d1_reset,
            d2_vals: d2
                .iter()
                .enumerate()
                .map(|(j, (_, c))| if *c { 1000.0 * j as f64 } else { 0.0 })
                .collect(),
            d2_counter: d2.iter().map(|(_, c)| *c).collect(),
            rng: 0x9e37_79b9_7f4a_7c15,
            cursor: cfg.d1_start().min(cfg.d2_start()),
        }
    }

    fn rand(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    fn next_step(&mut self) -> Option<Step> {
        let cfg = &self.cfg;
        let t = self.cursor;
        if t >= cfg.end {
            return None;
        }
        let d1_start = cfg.d1_start();
        let (to, d1_at) = if t < d1_start {
            ((t + HOUR_MS).min(d1_start), None)
        } else {
            (t + cfg.interval_ms, Some(t))
        };
        self.cursor = to;
        let d1 = d1_at.map(|t| {
            let step_s = self.cfg.interval_ms as f64 / 1000.0;
            for i in 0..self.d1_n {
                let r = self.rand();
                let inc = self.d1_rate[i] * step_s * (0.8 + (r % 4096) as f64 / 10240.0);
                self.d1_vals[i] = if self.d1_reset[i] == t {
                    inc
                } else {
                    self.d1_vals[i] + inc
                };
            }
            (t, self.d1_vals.clone())
        });
        // Dataset 2 samples in [t, to).
        let d2_start = self.cfg.d2_start();
        let first = ((t.max(d2_start) - d2_start) + SHOP_INTERVAL_MS - 1) / SHOP_INTERVAL_MS;
        let mut d2 = vec![Vec::new(); self.d2_vals.len()];
        let mut k = first;
        loop {
            let ts = d2_start + k * SHOP_INTERVAL_MS;
            if ts >= to || ts >= self.cfg.end {
                break;
            }
            let day_phase = (ts % DAY_MS) as f64 / DAY_MS as f64 * std::f64::consts::TAU;
            for (j, out) in d2.iter_mut().enumerate() {
                let r = self.rand();
                let pod = (j / 2) as f64;
                let shape = (day_phase + pod * 0.1).sin();
                let v = if self.d2_counter[j] {
                    let cores = 0.25 + 0.15 * shape + (r % 1000) as f64 / 20_000.0;
                    // Pod 3 restarts two days in.
                    if j / 2 == 3 && ts - d2_start == 2 * DAY_MS {
                        cores * 15.0
                    } else {
                        self.d2_vals[j] + cores * 15.0
                    }
                } else {
                    (300_000_000.0 + 50_000_000.0 * shape + ((r % 4096) * 4096) as f64).round()
                };
                self.d2_vals[j] = v;
                out.push(Sample::new(ts, v));
            }
            k += 1;
        }
        Some(Step { to, d1, d2 })
    }
}

enum Item<P> {
    Req(P, u64),
    /// Every request before this one must be acknowledged before the next is sent.
    Barrier(i64),
}

/// Generates the stream on a thread of its own and packages each step.
fn produce<P: Send + 'static>(
    cfg: &Cfg,
    d1: Arc<Vec<Labels>>,
    d2: Arc<Vec<(Labels, bool)>>,
    mut pack: impl FnMut(&Step, &mut dyn FnMut(P, u64)) + Send + 'static,
) -> (
    tokio::sync::mpsc::Receiver<Item<P>>,
    std::thread::JoinHandle<()>,
) {
    let (tx, rx) = tokio::sync::mpsc::channel::<Item<P>>(64);
    let cfg = cfg.clone();
    let h = std::thread::spawn(move || {
        let mut g = Gen::new(&cfg, d1.len(), &d2);
        while let Some(step) = g.next_step() {
            let mut closed = false;
            pack(&step, &mut |p, n| {
                if !closed && tx.blocking_send(Item::Req(p, n)).is_err() {
                    closed = true;
                }
            });
            if closed || tx.blocking_send(Item::Barrier(step.to)).is_err() {
                return;
            }
        }
    });
    (rx, h)
}

fn samples_total(cfg: &Cfg, d1_n: usize, d2_n: usize) -> u64 {
    d1_n as u64 * cfg.d1_ticks() as u64 + d2_n as u64 * cfg.d2_ticks() as u64
}

// ---------------------------------------------------------------------------
// Processes and /proc.

fn proc_status_kib(pid: u32, field: &str) -> u64 {
    proc_status_kib_file(&format!("/proc/{pid}/status"), field)
}

/// utime + stime in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the ")" that ends the command name: state is field 3.
    let rest = s.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let get = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    get(11) + get(12) // fields 14 and 15
}

fn clk_tck() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Polls VmRSS of the servers; `reset` starts a new peak.
struct RssPoller {
    peaks: Arc<Mutex<Vec<u64>>>,
    stop: Arc<AtomicBool>,
    pids: Vec<u32>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl RssPoller {
    fn start(pids: Vec<u32>) -> RssPoller {
        let peaks = Arc::new(Mutex::new(vec![0; pids.len()]));
        let stop = Arc::new(AtomicBool::new(false));
        let (p2, s2, pids2) = (peaks.clone(), stop.clone(), pids.clone());
        let handle = std::thread::spawn(move || {
            while !s2.load(Ordering::Relaxed) {
                for (i, pid) in pids2.iter().enumerate() {
                    let v = proc_status_kib(*pid, "VmRSS:");
                    let mut p = p2.lock().unwrap();
                    p[i] = p[i].max(v);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        RssPoller {
            peaks,
            stop,
            pids,
            handle: Some(handle),
        }
    }
    fn reset(&self) -> Vec<u64> {
        let now: Vec<u64> = self
            .pids
            .iter()
            .map(|p| proc_status_kib(*p, "VmRSS:"))
            .collect();
        *self.peaks.lock().unwrap() = now.clone();
        now
    }
    fn peaks(&self) -> Vec<u64> {
        self.peaks.lock().unwrap().clone()
    }
}

impl Drop for RssPoller {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

// ---------------------------------------------------------------------------
// Loading.

struct LoadReport {
    secs: f64,
    samples: u64,
    maintain_secs: f64,
    bytes_on_disk: u64,
    note: String,
}

async fn load_ours(
    cfg: &Cfg,
    d1: Arc<Vec<Labels>>,
    d2: Arc<Vec<(Labels, bool)>>,
    db: &Path,
) -> LoadReport {
    let url = format!("sqlite://{}", db.display());
    let opts = StoreOptions {
        max_series_per_cluster: 10_000_000,
        retention: kube_insight_store::Retention {
            metrics: Duration::from_secs(30 * 86400),
            ..Default::default()
        },
        ..Default::default()
    };
    let store: DynStore = kube_insight_store_sqlite::open(&url, opts)
        .await
        .expect("open store");
    let (d1c, d2c) = (d1.clone(), d2.clone());
    let (mut rx, producer) = produce::<MetricBatch>(cfg, d1, d2, move |step, emit| {
        if let Some((t, vals)) = &step.d1 {
            for (c, labels) in d1c.chunks(BATCH).enumerate() {
                let series: Vec<TimeSeries> = labels
                    .iter()
                    .enumerate()
                    .map(|(k, l)| {
                        TimeSeries::new(l.clone(), vec![Sample::new(*t, vals[c * BATCH + k])])
                    })
                    .collect();
                let n = series.len() as u64;
                emit(
                    MetricBatch {
                        cluster: CLUSTER.into(),
                        series,
                    },
                    n,
                );
            }
        }
        let n: usize = step.d2.iter().map(Vec::len).sum();
        if n > 0 {
            let series = d2c
                .iter()
                .zip(&step.d2)
                .map(|((l, _), s)| TimeSeries::new(l.clone(), s.clone()))
                .collect();
            emit(
                MetricBatch {
                    cluster: CLUSTER.into(),
                    series,
                },
                n as u64,
            );
        }
    });
    let started = Instant::now();
    let mut written = 0u64;
    let mut maintain = Duration::ZERO;
    let mut next_maintain = i64::MIN;
    let mut chunks = 0u64;
    let mut set = tokio::task::JoinSet::new();
    while let Some(item) = rx.recv().await {
        match item {
            Item::Req(batch, n) => {
                while set.len() >= cfg.senders {
                    written += set.join_next().await.unwrap().unwrap();
                }
                let store = store.clone();
                set.spawn(async move {
                    let r = store.write_samples(batch).await.expect("write_samples");
                    assert_eq!(r.samples_written, n, "store refused samples: {r:?}");
                    n
                });
            }
            Item::Barrier(t) => {
                while let Some(r) = set.join_next().await {
                    written += r.unwrap();
                }
                // Production runs maintenance periodically; here every 30 min of data time.
                if t >= next_maintain {
                    let m = Instant::now();
                    let r = store.maintain(t).await.expect("maintain");
                    chunks += r.chunks_written;
                    maintain += m.elapsed();
                    next_maintain = t - t.rem_euclid(30 * MIN_MS) + 30 * MIN_MS;
                }
            }
        }
    }
    producer.join().expect("producer");
    // Close every window (the last one ends at `end`): all data in chunks.
    let m = Instant::now();
    let r = store.maintain(cfg.end + HOUR_MS).await.expect("maintain");
    chunks += r.chunks_written;
    store.flush().await.expect("flush");
    maintain += m.elapsed();
    let secs = started.elapsed().as_secs_f64();
    let head = store.stats().head_samples;
    drop(store);
    let mut bytes = 0;
    for suffix in ["", "-wal", "-shm"] {
        let mut p = db.as_os_str().to_owned();
        p.push(suffix);
        bytes += std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
    }
    LoadReport {
        secs,
        samples: written,
        maintain_secs: maintain.as_secs_f64(),
        bytes_on_disk: bytes,
        note: format!("{chunks} chunks written, {head} samples left in the head"),
    }
}

async fn prom_metrics(client: &reqwest::Client, base: &str) -> BTreeMap<String, f64> {
    let text = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics body");
    let mut out: BTreeMap<String, f64> = BTreeMap::new();
    for l in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((name_labels, v)) = l.rsplit_once(' ') else {
            continue;
        };
        let name = name_labels.split('{').next().unwrap_or("");
        if let Ok(v) = v.parse::<f64>() {
            *out.entry(name.to_string()).or_default() += v;
        }
    }
    out
}

async fn load_prometheus(
    cfg: &Cfg,
    d1: Arc<Vec<Labels>>,
    d2: Arc<Vec<(Labels, bool)>>,
    base: &str,
) -> LoadReport {
    let to_proto = |l: &Labels| -> Vec<proto::Label> {
        l.iter()
            .map(|l| proto::Label {
                name: l.name.clone(),
                value: l.value.clone(),
            })
            .collect()
    };
    // The requests' label sets are built once; each step only sets the samples.
    let mut d1_reqs: Vec<proto::WriteRequest> = d1
        .chunks(BATCH)
        .map(|c| proto::WriteRequest {
            timeseries: c
                .iter()
                .map(|l| proto::TimeSeries {
                    labels: to_proto(l),
                    samples: vec![proto::Sample::default()],
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
        .collect();
    let mut d2_req = proto::WriteRequest {
        timeseries: d2
            .iter()
            .map(|(l, _)| proto::TimeSeries {
                labels: to_proto(l),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    let (mut rx, producer) = produce::<Vec<u8>>(cfg, d1, d2, move |step, emit| {
        if let Some((t, vals)) = &step.d1 {
            for (c, req) in d1_reqs.iter_mut().enumerate() {
                for (k, ts) in req.timeseries.iter_mut().enumerate() {
                    ts.samples[0] = proto::Sample {
                        value: vals[c * BATCH + k],
                        timestamp: *t,
                    };
                }
                let n = req.timeseries.len() as u64;
                emit(encode_request(req).expect("encode"), n);
            }
        }
        let n: usize = step.d2.iter().map(Vec::len).sum();
        if n > 0 {
            for (ts, s) in d2_req.timeseries.iter_mut().zip(&step.d2) {
                ts.samples = s
                    .iter()
                    .map(|s| proto::Sample {
                        value: s.value,
                        timestamp: s.timestamp_ms,
                    })
                    .collect();
            }
            emit(encode_request(&d2_req).expect("encode"), n as u64);
        }
    });
    let client = reqwest::Client::new();
    let before = prom_metrics(&client, base).await;
    let url = format!("{base}/api/v1/write");
    let started = Instant::now();
    let mut paused = 0.0;
    let mut sent = 0u64;
    let mut set = tokio::task::JoinSet::new();
    while let Some(item) = rx.recv().await {
        match item {
            Item::Req(body, n) => {
                while set.len() >= cfg.senders {
                    sent += set.join_next().await.unwrap().unwrap();
                }
                let (client, url) = (client.clone(), url.clone());
                set.spawn(async move {
                    loop {
                        let r = client
                            .post(&url)
                            .header("content-encoding", "snappy")
                            .header("content-type", "application/x-protobuf")
                            .header("x-prometheus-remote-write-version", "0.1.0")
                            .body(body.clone())
                            .send()
                            .await
                            .expect("remote write");
                        let status = r.status();
                        if status.is_success() {
                            return n;
                        }
                        let text = r.text().await.unwrap_or_default();
                        assert!(
                            status.is_server_error() || status.as_u16() == 429,
                            "Prometheus refused a remote write: {status}: {text}"
                        );
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                });
            }
            Item::Barrier(t) => {
                while let Some(r) = set.join_next().await {
                    sent += r.unwrap();
                }
                // Dataset 1's series are all created at its first timestamp;
                // Prometheus 2.42 was seen to lose a new series' first sample
                // when that coincides with a head compaction (the 7-day
                // prefix keeps it compacting): let it finish first.
                if t == cfg.d1_start() && cfg.d1_start() > cfg.d2_start() {
                    paused += prom_settle(&client, base).await;
                }
            }
        }
    }
    producer.join().expect("producer");
    let secs = started.elapsed().as_secs_f64() - paused;
    // Did Prometheus keep everything?
    let after = prom_metrics(&client, base).await;
    let delta =
        |k: &str| after.get(k).copied().unwrap_or(0.0) - before.get(k).copied().unwrap_or(0.0);
    let appended = delta("prometheus_tsdb_head_samples_appended_total") as u64;
    let refused = delta("prometheus_tsdb_out_of_order_samples_total")
        + delta("prometheus_tsdb_out_of_bound_samples_total");
    assert_eq!(
        appended, sent,
        "Prometheus appended {appended} samples of {sent} sent ({refused} out of order/bounds)"
    );
    assert_eq!(refused, 0.0, "Prometheus refused samples");
    let settle = prom_settle(&client, base).await;
    LoadReport {
        secs,
        samples: sent,
        maintain_secs: settle,
        bytes_on_disk: 0,
        note: format!(
            "{appended} samples appended (prometheus_tsdb_head_samples_appended_total), 0 refused; {} compactions; {paused:.0} s pause for compaction before dataset 1 (not counted)",
            after.get("prometheus_tsdb_compactions_total").copied().unwrap_or(0.0)
        ),
    }
}

/// Waits until Prometheus' compaction has settled: head ≤ 3 h, no new
/// compaction for 70 s and next to no CPU. Returns the seconds waited.
async fn prom_settle(client: &reqwest::Client, base: &str) -> f64 {
    let m = Instant::now();
    let mut last = (f64::NAN, Instant::now());
    let get = |m: &BTreeMap<String, f64>, k: &str| m.get(k).copied().unwrap_or(0.0);
    loop {
        let now = prom_metrics(client, base).await;
        let span =
            get(&now, "prometheus_tsdb_head_max_time") - get(&now, "prometheus_tsdb_head_min_time");
        let compactions = get(&now, "prometheus_tsdb_compactions_total");
        let cpu0 = get(&now, "process_cpu_seconds_total");
        if compactions != last.0 {
            last = (compactions, Instant::now());
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
        let cpu1 = get(
            &prom_metrics(client, base).await,
            "process_cpu_seconds_total",
        );
        if span <= (3 * HOUR_MS) as f64
            && last.1.elapsed() > Duration::from_secs(70)
            && cpu1 - cpu0 < 0.5
        {
            return m.elapsed().as_secs_f64();
        }
        if m.elapsed() > Duration::from_secs(900) {
            println!("warning: Prometheus' compaction did not settle within 15 min");
            return m.elapsed().as_secs_f64();
        }
    }
}

/// Samples a server returns, counted by PromQL over consecutive 2 h
/// windows [end − (k+1)·2h, end − k·2h) covering both datasets.
async fn count_stored(client: &reqwest::Client, instant_url: &str, cfg: &Cfg) -> u64 {
    let span = (cfg.hours * HOUR_MS).max(cfg.q3_days * DAY_MS);
    let windows = (span + WINDOW_MS - 1) / WINDOW_MS;
    let mut total = 0u64;
    for k in 0..windows {
        let t = cfg.end - 1 - k * WINDOW_MS;
        for metric in [CPU, MEM] {
            let p = [
                (
                    "query",
                    format!("sum(count_over_time({metric}[{}ms]))", WINDOW_MS - 1),
                ),
                ("time", format!("{}.{:03}", t / 1000, t % 1000)),
            ];
            let (_, body, status) = get(client, instant_url, &p).await;
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            assert!(
                status == 200 && v["status"] == "success",
                "counting samples on {instant_url}: HTTP {status}: {}",
                String::from_utf8_lossy(&body)
            );
            total += v["data"]["result"][0]["value"][1]
                .as_str()
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0) as u64;
        }
    }
    total
}

// ---------------------------------------------------------------------------
// Queries.

#[derive(Deserialize)]
struct Resp {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
struct Data {
    result: Vec<Row>,
    #[serde(default)]
    stats: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct Row {
    metric: BTreeMap<String, String>,
    values: Vec<(f64, String)>,
}

fn parse_value(s: &str) -> f64 {
    match s {
        "+Inf" | "Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        s => s.parse().unwrap_or(f64::NAN),
    }
}

struct Agreement {
    series: (usize, usize),
    points: usize,
    mismatched: usize,
    missing: usize,
    max_rel: f64,
    /// Relative differences of every compared point (for the median).
    rels: Vec<f64>,
    first: Option<String>,
    /// The first point that differs: labels and time (s).
    first_at: Option<(BTreeMap<String, String>, f64)>,
}

impl Agreement {
    fn agree(&self) -> bool {
        self.mismatched == 0 && self.missing == 0 && self.series.0 == self.series.1
    }
    fn median_rel(&self) -> f64 {
        pct(&self.rels, 0.5)
    }
}

fn compare(ours: &[Row], theirs: &[Row]) -> Agreement {
    let index: BTreeMap<&BTreeMap<String, String>, &Row> =
        theirs.iter().map(|r| (&r.metric, r)).collect();
    let mut a = Agreement {
        series: (ours.len(), theirs.len()),
        points: 0,
        mismatched: 0,
        missing: 0,
        max_rel: 0.0,
        rels: Vec::new(),
        first: None,
        first_at: None,
    };
    for r in ours {
        let Some(t) = index.get(&r.metric) else {
            a.missing += 1;
            a.first
                .get_or_insert_with(|| format!("{:?} only in ours", r.metric));
            continue;
        };
        let theirs: BTreeMap<i64, f64> = t
            .values
            .iter()
            .map(|(ts, v)| ((ts * 1000.0).round() as i64, parse_value(v)))
            .collect();
        if theirs.len() != r.values.len() {
            a.mismatched += r.values.len().abs_diff(theirs.len());
            a.first.get_or_insert_with(|| {
                format!(
                    "{:?}: {} points in ours, {} in Prometheus",
                    r.metric,
                    r.values.len(),
                    theirs.len()
                )
            });
        }
        for (ts, v) in &r.values {
            let v = parse_value(v);
            let Some(w) = theirs.get(&((ts * 1000.0).round() as i64)) else {
                a.mismatched += 1;
                continue;
            };
            a.points += 1;
            if v.is_nan() && w.is_nan() {
                continue;
            }
            let rel = (v - w).abs() / v.abs().max(w.abs()).max(1e-12);
            a.max_rel = a.max_rel.max(rel);
            a.rels.push(rel);
            if rel > 1e-6 && (v - w).abs() > 1e-9 {
                a.mismatched += 1;
                a.first_at.get_or_insert_with(|| (r.metric.clone(), *ts));
                if a.mismatched <= 3 {
                    let f = a.first.get_or_insert_with(String::new);
                    f.push_str(&format!(
                        "{}{:?} at {ts}: ours {v}, Prometheus {w}",
                        if f.is_empty() { "" } else { "; " },
                        r.metric
                    ));
                }
            }
        }
    }
    a
}

struct QSpec {
    name: String,
    expr: String,
    start: i64,
    end: i64,
    step_s: i64,
    /// kube-insight only: the max_source_resolution parameter.
    msr: Option<&'static str>,
    /// Stored samples of the matched series in [start − range, end] (computed).
    scanned_ours: u64,
}

/// Points of a regular grid (first, step, n) within [lo, hi].
fn grid_count(first: i64, step: i64, n: i64, lo: i64, hi: i64) -> u64 {
    let last = first + (n - 1) * step;
    if n <= 0 || hi < first || lo > last {
        return 0;
    }
    let a = if lo <= first {
        0
    } else {
        (lo - first + step - 1) / step
    };
    let b = if hi >= last {
        n - 1
    } else {
        (hi - first) / step
    };
    (b - a + 1).max(0) as u64
}

#[derive(Default)]
struct SideResult {
    lat_ms: Vec<f64>,
    error: Option<String>,
    bytes: usize,
    series: usize,
    cpu_ms_per_query: f64,
    rss_before_kib: u64,
    rss_peak_kib: u64,
    scanned: Option<u64>,
    peak_samples: Option<u64>,
}

struct QResult {
    spec: QSpec,
    ours: SideResult,
    prom: SideResult,
    agreement: Option<Agreement>,
}

async fn get(
    client: &reqwest::Client,
    url: &str,
    params: &[(&str, String)],
) -> (f64, Vec<u8>, u16) {
    let t = Instant::now();
    let r = client
        .get(url)
        .query(params)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = r.status().as_u16();
    let body = r.bytes().await.expect("body").to_vec();
    (t.elapsed().as_secs_f64() * 1000.0, body, status)
}

fn parse_resp(body: &[u8], status: u16) -> Result<Resp, String> {
    let r: Resp = serde_json::from_slice(body).map_err(|e| {
        format!(
            "HTTP {status}, not JSON ({e}): {}",
            String::from_utf8_lossy(&body[..body.len().min(300)])
        )
    })?;
    if r.status != "success" || status != 200 {
        return Err(format!(
            "HTTP {status}: {}",
            r.error.unwrap_or_else(|| "no error message".into())
        ));
    }
    Ok(r)
}

#[allow(clippy::too_many_arguments)]
async fn run_query(
    client: &reqwest::Client,
    spec: QSpec,
    ours_url: &str,
    prom_url: &str,
    iters: usize,
    rss: &RssPoller,
    pids: [u32; 2],
    tck: f64,
) -> QResult {
    let mut base = vec![
        ("query", spec.expr.clone()),
        ("start", (spec.start / 1000).to_string()),
        ("end", (spec.end / 1000).to_string()),
        ("step", spec.step_s.to_string()),
    ];
    let prom_params = base.clone();
    if let Some(v) = spec.msr {
        base.push(("max_source_resolution", v.into()));
    }
    let ours_params = base;
    let sides: [(&str, &[(&str, String)]); 2] =
        [(ours_url, &ours_params), (prom_url, &prom_params)];
    let mut res = [SideResult::default(), SideResult::default()];
    let before = rss.reset();
    res[0].rss_before_kib = before[0];
    res[1].rss_before_kib = before[1];
    // Warm-ups; the first answers are compared.
    let mut first: [Option<Vec<Row>>; 2] = [None, None];
    for w in 0..2 {
        for (i, (url, params)) in sides.iter().enumerate() {
            if res[i].error.is_some() {
                continue;
            }
            let (_, body, status) = get(client, url, params).await;
            match parse_resp(&body, status) {
                Ok(r) if w == 0 => {
                    let rows = r.data.map(|d| d.result).unwrap_or_default();
                    res[i].series = rows.len();
                    res[i].bytes = body.len();
                    first[i] = Some(rows);
                }
                Ok(_) => {}
                Err(e) => res[i].error = Some(e),
            }
        }
    }
    let agreement = match (&first[0], &first[1]) {
        (Some(a), Some(b)) => Some(compare(a, b)),
        _ => None,
    };
    drop(first);
    if let Some((labels, ts)) = agreement.as_ref().and_then(|a| a.first_at.clone()) {
        if spec.msr.is_none() && labels.contains_key("pod") {
            diagnose(client, ours_url, prom_url, &labels, ts).await;
        }
    }
    // BENCH_PERF=dir: a CPU profile of kube-insight over the timed runs of Q1.
    let perf = std::env::var("BENCH_PERF")
        .ok()
        .filter(|_| spec.name.starts_with("Q1"))
        .map(|dir| {
            let out = Path::new(&dir).join("perf-q1.data");
            Command::new("perf")
                .args(["record", "-F", "499", "-g", "-o"])
                .arg(&out)
                .args(["-p", &pids[0].to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("perf")
        });
    let cpu0 = [cpu_ticks(pids[0]), cpu_ticks(pids[1])];
    for _ in 0..iters {
        for (i, (url, params)) in sides.iter().enumerate() {
            if res[i].error.is_some() {
                continue;
            }
            let (ms, body, status) = get(client, url, params).await;
            if status != 200 {
                res[i].error = Some(format!(
                    "HTTP {status} on a timed run: {}",
                    String::from_utf8_lossy(&body[..body.len().min(300)])
                ));
                continue;
            }
            res[i].lat_ms.push(ms);
        }
    }
    if let Some(p) = perf {
        let _ = Command::new("kill")
            .args(["-INT", &p.id().to_string()])
            .status();
        let _ = p.wait_with_output();
    }
    let peaks = rss.peaks();
    for i in 0..2 {
        res[i].rss_peak_kib = peaks[i];
        let n = res[i].lat_ms.len().max(1) as f64;
        res[i].cpu_ms_per_query = (cpu_ticks(pids[i]) - cpu0[i]) as f64 / tck * 1000.0 / n;
    }
    res[0].scanned = Some(spec.scanned_ours);
    // Prometheus' own count of samples read, on one extra untimed call.
    if res[1].error.is_none() {
        let mut p = prom_params.clone();
        p.push(("stats", "all".into()));
        let (_, body, status) = get(client, prom_url, &p).await;
        if let Ok(r) = parse_resp(&body, status) {
            let s = r.data.and_then(|d| d.stats).unwrap_or_default();
            res[1].scanned = s["samples"]["totalQueryableSamples"].as_u64();
            res[1].peak_samples = s["samples"]["peakSamples"].as_u64();
        }
    }
    let [ours, prom] = res;
    QResult {
        spec,
        ours,
        prom,
        agreement,
    }
}

/// For a differing point: each side's per-series rate and raw samples there.
async fn diagnose(
    client: &reqwest::Client,
    ours_url: &str,
    prom_url: &str,
    labels: &BTreeMap<String, String>,
    ts: f64,
) {
    let sel = labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{v}\""))
        .collect::<Vec<_>>()
        .join(",");
    for expr in [
        format!("rate({CPU}{{{sel}}}[5m])"),
        format!("{CPU}{{{sel}}}[6m]"),
    ] {
        for (side, url) in [("ours", ours_url), ("Prometheus", prom_url)] {
            let url = url.replace("query_range", "query");
            let p = [("query", expr.clone()), ("time", format!("{ts}"))];
            let (_, body, _) = get(client, &url, &p).await;
            let text = String::from_utf8_lossy(&body);
            println!(
                "  diagnose {side} {expr} @{ts}: {}",
                text.chars().take(3000).collect::<String>()
            );
        }
    }
}

fn pct(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let rank = ((p * s.len() as f64).ceil() as usize).clamp(1, s.len());
    s[rank - 1]
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn side_cell(s: &SideResult) -> String {
    match &s.error {
        Some(e) => format!("error: {}", e.chars().take(120).collect::<String>()),
        None => format!(
            "{:.1} / {:.1} / {:.1}",
            pct(&s.lat_ms, 0.5),
            pct(&s.lat_ms, 0.99),
            pct(&s.lat_ms, 1.0)
        ),
    }
}

fn main() {
    // `cargo test --benches` runs benches with `--bench`-less args; do nothing then.
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    let now = kube_insight_core::time::now_ms();
    let cfg = Cfg {
        series: env("BENCH_SERIES", 100_000),
        hours: env("BENCH_HOURS", 24),
        interval_ms: env::<i64>("BENCH_INTERVAL_S", 60) * 1000,
        iter: env("BENCH_ITER", 10),
        skip_24h: env("BENCH_SKIP_24H", 0u8) != 0,
        q3_days: env("BENCH_Q3_DAYS", 7),
        senders: env("BENCH_SENDERS", 4),
        end: now - now.rem_euclid(WINDOW_MS),
    };
    assert!(cfg.hours >= 1 && cfg.q3_days >= 1 && cfg.interval_ms >= 1000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(bench(cfg));
}

async fn bench(cfg: Cfg) {
    let prom_bin = ["/usr/bin/prometheus", "/usr/local/bin/prometheus"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .expect("Prometheus is not installed (apt-get install -y prometheus)");
    let prom_version = Command::new(&prom_bin)
        .arg("--version")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .to_string()
        })
        .unwrap_or_default();
    let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("?")
        .trim()
        .to_string();
    let mem_gib = proc_status_kib_file("/proc/meminfo", "MemTotal:") as f64 / 1024.0 / 1024.0;
    let load_start = loadavg();
    let (d1, pods) = d1_labels(cfg.series);
    let d1 = Arc::new(d1);
    let d2 = Arc::new(d2_labels());
    let total = samples_total(&cfg, d1.len(), d2.len());
    println!(
        "machine: {} vCPU ({cpu_model}), {mem_gib:.0} GiB; {prom_version}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    println!(
        "dataset 1: {} series of {CPU} ({pods} pods in 500 namespaces, 13 labels), {} h at {} s, ~1% with a counter reset; dataset 2: {SHOP_PODS} pods × ({CPU}, {MEM}) in namespace shop, {} days at 15 s; end {} (aligned to 2 h); {total} samples in all",
        d1.len(),
        cfg.hours,
        cfg.interval_ms / 1000,
        cfg.q3_days,
        cfg.end / 1000
    );
    println!("load average at start: {load_start}");

    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("kube-insight.db");
    let prom_dir = dir.path().join("prometheus");
    std::fs::create_dir_all(&prom_dir).unwrap();

    // Prometheus first (idle while our store loads).
    let prom_port = free_port();
    let cfg_path = prom_dir.join("prometheus.yml");
    std::fs::write(&cfg_path, "global:\n  scrape_interval: 1m\n").unwrap();
    let mut cmd = Command::new(&prom_bin);
    cmd.arg(format!("--config.file={}", cfg_path.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            prom_dir.join("tsdb").display()
        ))
        .arg("--storage.tsdb.retention.time=30d")
        .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
        .arg("--web.enable-remote-write-receiver")
        .arg("--log.level=warn");
    let mut prom = Proc::spawn("prometheus", cmd, dir.path());
    let prom_base = format!("http://127.0.0.1:{prom_port}");
    wait_ready(&format!("{prom_base}/-/ready")).await;

    println!("loading kube-insight's store (in process)…");
    let ours_load = load_ours(&cfg, d1.clone(), d2.clone(), &db).await;
    assert_eq!(
        ours_load.samples, total,
        "kube-insight stored a different count"
    );
    println!(
        "  {} samples in {:.1} s ({:.0}/s; maintenance {:.1} s of it); {}; {:.2} B/sample on disk; load avg {}",
        ours_load.samples,
        ours_load.secs,
        ours_load.samples as f64 / ours_load.secs,
        ours_load.maintain_secs,
        ours_load.note,
        ours_load.bytes_on_disk as f64 / total as f64,
        loadavg()
    );
    println!(
        "loading Prometheus (remote write, {} concurrent requests)…",
        cfg.senders
    );
    let mut prom_load = load_prometheus(&cfg, d1.clone(), d2.clone(), &prom_base).await;
    prom_load.bytes_on_disk = dir_bytes(&prom_dir.join("tsdb"));
    println!(
        "  {} samples in {:.1} s ({:.0}/s), then {:.0} s until its compaction settled; {}; {:.2} B/sample on disk (blocks + WAL); load avg {}",
        prom_load.samples,
        prom_load.secs,
        prom_load.samples as f64 / prom_load.secs,
        prom_load.maintain_secs,
        prom_load.note,
        prom_load.bytes_on_disk as f64 / total as f64,
        loadavg()
    );
    drop(d1);

    // The real binary, api target only, on the store just written.
    let (api, ingest, ops) = (free_port(), free_port(), free_port());
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kube-insight"));
    cmd.arg("run")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("KUBE_INSIGHT_LOG", "warn")
        .env("KUBE_INSIGHT_TARGETS", "api")
        .env("KUBE_INSIGHT_STORE", format!("sqlite://{}", db.display()))
        .env("KUBE_INSIGHT_RETENTION_METRICS", "30d")
        .env("KUBE_INSIGHT_API_LISTEN", format!("127.0.0.1:{api}"))
        .env("KUBE_INSIGHT_INGEST_LISTEN", format!("127.0.0.1:{ingest}"))
        .env("KUBE_INSIGHT_OPS_LISTEN", format!("127.0.0.1:{ops}"));
    let mut ours = Proc::spawn("kube-insight", cmd, dir.path());
    wait_ready(&format!("http://127.0.0.1:{ops}/readyz")).await;
    let ours_url = format!("http://127.0.0.1:{api}/prometheus/api/v1/query_range");
    let prom_url = format!("{prom_base}/api/v1/query_range");
    // Both sides must answer with every sample loaded.
    let counter = reqwest::Client::new();
    let counted = [
        count_stored(&counter, &ours_url.replace("query_range", "query"), &cfg).await,
        count_stored(&counter, &prom_url.replace("query_range", "query"), &cfg).await,
    ];
    for (side, n) in ["kube-insight", "Prometheus"].iter().zip(counted) {
        if n == total {
            println!("  {side} answers count_over_time = {n}: every sample is there");
        } else {
            println!(
                "  !! {side} answers count_over_time = {n}, {} of {total} samples MISSING",
                total as i64 - n as i64
            );
        }
    }

    // Queries.
    let q12 = format!("sum by (namespace, pod) (rate({CPU}[5m]))");
    let q3 = format!("sum(rate({CPU}{{namespace=\"shop\",pod=~\"shop-.*\"}}[30m]))");
    let d1_first = cfg.d1_start();
    let d1_n = cfg.d1_ticks();
    let n_d1_series = cfg.series as u64;
    let scanned = |lo: i64, hi: i64, with_d1: bool| -> u64 {
        let d2_pts = grid_count(cfg.d2_start(), SHOP_INTERVAL_MS, cfg.d2_ticks(), lo, hi);
        let d1_pts = grid_count(d1_first, cfg.interval_ms, d1_n, lo, hi);
        SHOP_PODS as u64 * d2_pts + if with_d1 { n_d1_series * d1_pts } else { 0 }
    };
    let mut specs = Vec::new();
    let q1_start = cfg.end - HOUR_MS.min(cfg.hours * HOUR_MS);
    specs.push(QSpec {
        name: "Q1 1 h @60s".into(),
        expr: q12.clone(),
        start: q1_start,
        end: cfg.end,
        step_s: 60,
        msr: None,
        scanned_ours: scanned(q1_start - 5 * MIN_MS, cfg.end, true),
    });
    if cfg.hours > 6 {
        // A range within kube-insight's default 50M-sample limit at 100k series.
        let start = cfg.end - 6 * HOUR_MS;
        specs.push(QSpec {
            name: "Q2 6 h @60s".into(),
            expr: q12.clone(),
            start,
            end: cfg.end,
            step_s: 60,
            msr: None,
            scanned_ours: scanned(start - 5 * MIN_MS, cfg.end, true),
        });
    }
    if !cfg.skip_24h {
        for step in [60, 300] {
            specs.push(QSpec {
                name: format!("Q2 {} h @{step}s", cfg.hours),
                expr: q12.clone(),
                start: d1_first,
                end: cfg.end,
                step_s: step,
                msr: None,
                scanned_ours: scanned(d1_first - 5 * MIN_MS, cfg.end, true),
            });
        }
    }
    if env("BENCH_FUNCS", 0u8) != 0 {
        // Issue 18's functions, each over the last hour at 60 s like Q1.
        for (tag, expr, range_min) in [
            (
                "deriv",
                format!("sum by (namespace) (deriv({CPU}[10m]))"),
                10,
            ),
            (
                "predict_linear",
                format!("sum by (namespace) (predict_linear({CPU}[30m], 3600))"),
                30,
            ),
            (
                "quantile_over_time",
                format!("sum by (namespace) (quantile_over_time(0.9, {CPU}[5m]))"),
                5,
            ),
            (
                "sort_desc+timestamp",
                format!("sort_desc(max by (namespace) (timestamp({CPU})))"),
                5,
            ),
            (
                "count_values",
                format!("count_values(\"v\", count by (namespace, pod) ({CPU}))"),
                5,
            ),
            (
                "absent_over_time",
                format!("absent_over_time({CPU}{{namespace=\"none\"}}[5m])"),
                5,
            ),
        ] {
            specs.push(QSpec {
                name: format!("Q4 {tag} 1 h @60s"),
                expr,
                start: q1_start,
                end: cfg.end,
                step_s: 60,
                msr: None,
                scanned_ours: scanned(q1_start - range_min * MIN_MS, cfg.end, true),
            });
        }
    }
    let q3_start = cfg.d2_start();
    for step in [600, 1800] {
        // No parameter (kube-insight's default, `auto`), raw only, 5-minute rollups allowed.
        for msr in [None, Some("0s"), Some("5m")] {
            specs.push(QSpec {
                name: format!(
                    "Q3 {} d @{step}s{}",
                    cfg.q3_days,
                    msr.map(|v| format!(" max_source_resolution={v}"))
                        .unwrap_or_default()
                ),
                expr: q3.clone(),
                start: q3_start,
                end: cfg.end,
                step_s: step,
                msr,
                scanned_ours: scanned(q3_start - 30 * MIN_MS, cfg.end, false),
            });
        }
    }
    let client = reqwest::Client::builder()
        .no_gzip()
        .timeout(Duration::from_secs(600))
        .build()
        .unwrap();
    let pids = [ours.pid(), prom.pid()];
    let tck = clk_tck();
    let rss = RssPoller::start(pids.to_vec());
    let rss_start = rss.reset();
    let load_queries = loadavg();
    println!(
        "queries: {} iterations after 2 warm-ups, interleaved; RSS before: kube-insight {:.0} MiB, Prometheus {:.0} MiB; load avg {load_queries}",
        cfg.iter,
        mib(rss_start[0]),
        mib(rss_start[1])
    );
    let mut results = Vec::new();
    for spec in specs {
        let name = spec.name.clone();
        let r = run_query(
            &client, spec, &ours_url, &prom_url, cfg.iter, &rss, pids, tck,
        )
        .await;
        println!(
            "  {name}: ours {} ms, Prometheus {} ms (p50/p99/max); series {} / {}; load avg {}",
            side_cell(&r.ours),
            side_cell(&r.prom),
            r.ours.series,
            r.prom.series,
            loadavg()
        );
        if let Some(a) = &r.agreement {
            if !a.agree() {
                println!(
                    "  !! {name}: ANSWERS DISAGREE: series {} vs {}, {} missing, {} of {} points differ (max rel {:.3e}, median rel {:.3e}); first: {}",
                    a.series.0,
                    a.series.1,
                    a.missing,
                    a.mismatched,
                    a.points,
                    a.max_rel,
                    a.median_rel(),
                    a.first.clone().unwrap_or_default()
                );
            } else {
                println!(
                    "  {name}: answers agree ({} series, {} points, max rel diff {:.2e})",
                    a.series.0, a.points, a.max_rel
                );
            }
        }
        results.push(r);
    }
    let ours_hwm = proc_status_kib(pids[0], "VmHWM:");
    drop(rss);
    let load_end = loadavg();
    ours.stop();
    prom.stop();

    // Report.
    let cmdline = format!(
        "BENCH_SERIES={} BENCH_HOURS={} BENCH_INTERVAL_S={} BENCH_ITER={} BENCH_SKIP_24H={} BENCH_Q3_DAYS={} BENCH_SENDERS={} cargo bench -p kube-insight --bench promql",
        cfg.series,
        cfg.hours,
        cfg.interval_ms / 1000,
        cfg.iter,
        u8::from(cfg.skip_24h),
        cfg.q3_days,
        cfg.senders
    );
    println!();
    println!("```sh\n{cmdline}\n```");
    println!(
        "Machine: {} vCPU ({cpu_model}), {mem_gib:.0} GiB RAM; {prom_version}. Load average (1/5/15 min): start {load_start}, queries start {load_queries}, end {load_end}.",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    println!();
    println!("| load | samples | time | rate | on disk |");
    println!("|---|---|---|---|---|");
    println!(
        "| kube-insight, in-process `write_samples` ({} writers) + `maintain` | {} | {:.1} s (maintenance {:.1} s) | {:.0}/s | {:.2} B/sample |",
        cfg.senders,
        ours_load.samples,
        ours_load.secs,
        ours_load.maintain_secs,
        ours_load.samples as f64 / ours_load.secs,
        ours_load.bytes_on_disk as f64 / total as f64
    );
    println!(
        "| Prometheus, remote write over loopback ({} concurrent, client in the same process) | {} | {:.1} s (+{:.0} s until compaction settled) | {:.0}/s | {:.2} B/sample |",
        cfg.senders,
        prom_load.samples,
        prom_load.secs,
        prom_load.maintain_secs,
        prom_load.samples as f64 / prom_load.secs,
        prom_load.bytes_on_disk as f64 / total as f64
    );
    println!();
    println!("| query | kube-insight ms p50 / p99 / max | Prometheus ms p50 / p99 / max | ours/Prom p50 | ours/Prom p99 | series (ours / Prom) | answers | samples: ours (stored, computed) / Prom (totalQueryableSamples) | server CPU ms/query (ours / Prom) | peak RSS MiB (ours / Prom, +increase) |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for r in &results {
        let ratio = |p: f64| {
            let (a, b) = (pct(&r.ours.lat_ms, p), pct(&r.prom.lat_ms, p));
            if a.is_nan() || b.is_nan() {
                "—".to_string()
            } else {
                format!("{:.2}×", a / b)
            }
        };
        let answers = match &r.agreement {
            Some(a) if a.agree() => format!("agree (max rel {:.0e})", a.max_rel),
            Some(a) => format!(
                "**differ**: {}/{} points, rel max {:.1e}, median {:.1e}",
                a.mismatched,
                a.points,
                a.max_rel,
                a.median_rel()
            ),
            None => "—".into(),
        };
        println!(
            "| {} | {} | {} | {} | {} | {} / {} | {} | {} / {} | {:.0} / {:.0} | {:.0} (+{:.0}) / {:.0} (+{:.0}) |",
            r.spec.name,
            side_cell(&r.ours),
            side_cell(&r.prom),
            ratio(0.5),
            ratio(0.99),
            r.ours.series,
            r.prom.series,
            answers,
            r.ours.scanned.map(|v| v.to_string()).unwrap_or("—".into()),
            r.prom
                .scanned
                .map(|v| v.to_string())
                .unwrap_or("—".into()),
            r.ours.cpu_ms_per_query,
            r.prom.cpu_ms_per_query,
            mib(r.ours.rss_peak_kib),
            mib(r.ours.rss_peak_kib.saturating_sub(r.ours.rss_before_kib)),
            mib(r.prom.rss_peak_kib),
            mib(r.prom.rss_peak_kib.saturating_sub(r.prom.rss_before_kib)),
        );
    }
    println!();
    println!(
        "RSS before the queries: kube-insight {:.0} MiB (fresh process, store compacted), Prometheus {:.0} MiB (the process that ingested; head holds the last 1–3 h). kube-insight VmHWM at the end: {:.0} MiB. Response sizes (first warm-up): {}.",
        mib(rss_start[0]),
        mib(rss_start[1]),
        mib(ours_hwm),
        results
            .iter()
            .map(|r| format!(
                "{} {:.1} / {:.1} MB",
                r.spec.name,
                r.ours.bytes as f64 / 1e6,
                r.prom.bytes as f64 / 1e6
            ))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for r in &results {
        if let Some(p) = r.prom.peak_samples {
            println!("Prometheus peakSamples {}: {p}", r.spec.name);
        }
    }
}

fn proc_status_kib_file(path: &str, field: &str) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

async fn wait_ready(url: &str) {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(r) = client.get(url).send().await {
            if r.status().is_success() {
                return;
            }
        }
        assert!(Instant::now() < deadline, "{url} not ready after 120 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
