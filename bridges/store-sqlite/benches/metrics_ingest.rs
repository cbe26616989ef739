//! Metrics ingest into the embedded SQLite store, with realistic shapes:
//! cAdvisor/kube-state-metrics label sets of 13 labels, one sample per
//! series every 15 s, remote-write-like batches of 2,000 samples sent by 4
//! concurrent shards.
//!
//! ```text
//! cargo bench -p kube-insight-store --bench metrics_ingest            # full: 100k series
//! KI_BENCH_QUICK=1 cargo bench -p kube-insight-store --bench metrics_ingest   # < 2 min
//! ```
//!
//! Besides criterion's throughput group it prints, for the memory store
//! (`mem_series` series × 3 h of samples): ingest samples/s over the whole
//! run, RSS per active series (VmRSS delta), restart replay time, and the
//! bytes per sample on disk after compaction.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a bench: a panic is a failed run

/// The binary's allocator (`bridges/kube-insight/src/main.rs`), so RSS and
/// throughput are those of what runs.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use criterion::{BenchmarkId, Criterion, Throughput};
use kube_insight_core::{Labels, Sample, TimeSeries};
use kube_insight_store::{MetricBatch, MetricStore, Store, StoreOptions};
use kube_insight_store_sqlite::SqliteStore;
use std::sync::Arc;
use std::time::{Duration, Instant};

const STEP_MS: i64 = 15_000;
const BATCH: usize = 2_000;
const SHARDS: usize = 4;
const HOUR: i64 = 3_600_000;

/// Ten metrics per pod, as a kubelet + kube-state-metrics scrape mixes them.
const METRICS: [(&str, Kind); 10] = [
    ("container_cpu_usage_seconds_total", Kind::FloatCounter),
    ("container_network_receive_bytes_total", Kind::IntCounter),
    ("container_network_transmit_bytes_total", Kind::IntCounter),
    (
        "container_cpu_cfs_throttled_periods_total",
        Kind::SlowCounter,
    ),
    ("container_memory_working_set_bytes", Kind::Gauge),
    ("container_memory_rss", Kind::Gauge),
    ("container_fs_usage_bytes", Kind::Gauge),
    ("kube_pod_container_status_restarts_total", Kind::Constant),
    ("kube_pod_status_phase", Kind::Constant),
    ("kube_pod_container_resource_limits", Kind::Constant),
];

#[derive(Clone, Copy)]
enum Kind {
    /// cpu seconds: a float with microsecond resolution (high entropy).
    FloatCounter,
    /// bytes: integer increments of a few kB per scrape.
    IntCounter,
    /// increments now and then.
    SlowCounter,
    /// memory: moves by pages every few scrapes.
    Gauge,
    Constant,
}

/// Series `i`: 10 metrics per pod, 13 labels.
fn labels(i: usize) -> Labels {
    let pod = i / 10;
    let (metric, _) = METRICS[i % 10];
    let node = pod % 200;
    Labels::from_pairs([
        ("__name__", metric.to_string()),
        ("cluster", "prod".to_string()),
        ("container", format!("app-{}", pod % 3)),
        ("cpu", "total".to_string()),
        ("endpoint", "https-metrics".to_string()),
        (
            "image",
            format!("registry.example.com/team-{}/svc:1.{}", pod % 40, pod % 7),
        ),
        (
            "instance",
            format!("10.0.{}.{}:10250", node / 250, node % 250),
        ),
        ("job", "kubelet".to_string()),
        ("metrics_path", "/metrics/cadvisor".to_string()),
        ("namespace", format!("ns-{}", pod % 60)),
        ("node", format!("node-{node}")),
        ("pod", format!("svc-{}-7f9c6d5b8-{:05x}", pod % 400, pod)),
        ("service", "kubelet".to_string()),
    ])
}

/// Deterministic value of series `i` at step `k`.
fn value(i: usize, k: i64) -> f64 {
    let h = |x: u64| {
        let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let hk = h(((i as u64) << 24) ^ k as u64);
    match METRICS[i % 10].1 {
        Kind::FloatCounter => {
            let per_step = 20_000 + (h(i as u64) % 200_000) as i64; // µs of cpu per scrape
            ((k * per_step + (hk % 5_000) as i64) as f64) / 1e6 + i as f64
        }
        Kind::IntCounter => {
            let per_step = 1_000 + (h(i as u64) % 50_000) as i64;
            (k * per_step + (hk % 512) as i64) as f64
        }
        Kind::SlowCounter => (k / 20 + (h(i as u64) % 100) as i64) as f64,
        Kind::Gauge => {
            let base = 100_000_000 + (h(i as u64) % 1_000_000) as i64 * 4096;
            (base + ((k / 4) % 32) * 4096) as f64
        }
        Kind::Constant => (i % 3) as f64,
    }
}

/// One scrape of series `range` at step `k`, as batches of [`BATCH`]
/// samples. Labels are cloned from `all` (a decoder allocates them the same
/// way; formatting them anew each time would dominate the run).
fn scrape(all: &[Labels], range: std::ops::Range<usize>, t0: i64, k: i64) -> Vec<MetricBatch> {
    let ts = t0 + k * STEP_MS;
    let ids: Vec<usize> = range.collect();
    ids.chunks(BATCH)
        .map(|c| MetricBatch {
            cluster: "prod".into(),
            series: c
                .iter()
                .map(|&i| TimeSeries::new(all[i].clone(), vec![Sample::new(ts, value(i, k))]))
                .collect(),
        })
        .collect()
}

/// Sends batches through [`SHARDS`] concurrent writers; returns samples written.
async fn send(store: &Arc<SqliteStore>, batches: Vec<MetricBatch>) -> u64 {
    let mut shards: Vec<Vec<MetricBatch>> = (0..SHARDS).map(|_| Vec::new()).collect();
    for (n, b) in batches.into_iter().enumerate() {
        shards[n % SHARDS].push(b);
    }
    let mut tasks = Vec::new();
    for shard in shards {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = 0;
            for b in shard {
                n += store.write_samples(b).await.unwrap().samples_written;
            }
            n
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    total
}

/// jemalloc's view in MiB: (allocated, active, metadata, resident). The gap
/// between allocated and resident is fragmentation and unreturned pages.
#[cfg(not(target_env = "msvc"))]
fn jemalloc_mib() -> String {
    use tikv_jemalloc_ctl::{epoch, stats};
    let _ = epoch::advance();
    let mib = |v: Result<usize, _>| v.unwrap_or(0) as f64 / (1 << 20) as f64;
    format!(
        "jemalloc allocated {:.0} MiB, active {:.0}, metadata {:.0}, resident {:.0}",
        mib(stats::allocated::read()),
        mib(stats::active::read()),
        mib(stats::metadata::read()),
        mib(stats::resident::read()),
    )
}

#[cfg(target_env = "msvc")]
fn jemalloc_mib() -> String {
    String::new()
}

fn rss_kb() -> u64 {
    status_kb("VmRSS:")
}

/// A `/proc/self/status` figure in kB (`VmRSS:`, `VmHWM:` for the peak).
fn status_kb(key: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// CPU seconds used by the whole process (user + system), from
/// `/proc/self/stat` (clock ticks of 1/100 s).
fn cpu_secs() -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            let u: f64 = f.get(11)?.parse().ok()?;
            let k: f64 = f.get(12)?.parse().ok()?;
            Some((u + k) / 100.0)
        })
        .unwrap_or(0.0)
}

/// CPU seconds of the store's writer thread (the serial part of ingest).
fn writer_cpu_secs() -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    for t in tasks.flatten() {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if comm.trim() == "kube-insight-sq" {
            let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
            if let Some(rest) = stat.rsplit_once(')').map(|x| x.1) {
                let f: Vec<&str> = rest.split_whitespace().collect();
                let u: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0);
                let k: f64 = f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
                return (u + k) / 100.0;
            }
        }
    }
    0.0
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Ingests 3 h for `mem_series` series, then measures memory, restart and
/// disk. Prints one line per number.
fn report(rt: &tokio::runtime::Runtime, mem_series: usize, scrapes: i64) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("insight.db");
    let now = kube_insight_core::time::now_ms();
    let t0 = (now - scrapes * STEP_MS) / STEP_MS * STEP_MS;
    let all: Vec<Labels> = (0..mem_series).map(labels).collect();
    let rss0 = rss_kb();
    let store = Arc::new(
        rt.block_on(SqliteStore::open(&path, StoreOptions::default()))
            .unwrap(),
    );
    let mut busy = Duration::ZERO;
    let mut cpu = 0.0f64;
    let writer0 = writer_cpu_secs();
    let mut written = 0u64;
    // Generate a few batches at a time, as a remote-write receiver decodes
    // them: the transient memory stays bounded and out of the RSS figure.
    let step = BATCH * SHARDS * 2;
    // KI_BENCH_MAINTAIN_EVERY=N runs the maintenance pass every N scrapes of
    // data time, as `kube-insight run` does each minute: closed windows are
    // compacted out of the head, so memory is the steady state's.
    let maintain_every = env_usize("KI_BENCH_MAINTAIN_EVERY", 0) as i64;
    let mut peak_heap = 0usize;
    let mut peak_alloc = String::new();
    for k in 0..scrapes {
        if maintain_every > 0 && k > 0 && k % maintain_every == 0 {
            let heap = store.head_heap_bytes();
            if heap > peak_heap {
                peak_heap = heap;
                peak_alloc = format!(
                    "{}; VmRSS {} kB; head {:.0} MiB",
                    jemalloc_mib(),
                    rss_kb(),
                    heap as f64 / (1 << 20) as f64
                );
            }
            rt.block_on(store.maintain(t0 + k * STEP_MS)).unwrap();
        }
        for from in (0..mem_series).step_by(step) {
            let batches = scrape(&all, from..(from + step).min(mem_series), t0, k);
            let started = Instant::now();
            let c0 = cpu_secs();
            written += rt.block_on(send(&store, batches));
            cpu += cpu_secs() - c0;
            busy += started.elapsed();
        }
    }
    let writer_cpu = writer_cpu_secs() - writer0;
    let rss1 = rss_kb();
    let stats = store.stats();
    let heap = store.head_heap_bytes();
    if maintain_every > 0 {
        println!(
            "steady state (maintenance every {maintain_every} scrapes): peak VmHWM {} kB = {:.0} bytes per active series over the {rss0} kB before the store; peak head structures {:.0} B/series",
            status_kb("VmHWM:"),
            (status_kb("VmHWM:").saturating_sub(rss0) * 1024) as f64 / mem_series as f64,
            peak_heap.max(heap) as f64 / mem_series as f64,
        );
        println!("at the peak head: {peak_alloc}");
    }
    println!("at the end: {}", jemalloc_mib());
    println!(
        "ingest: {written} samples, {mem_series} series × {scrapes} scrapes, {:.0} samples/s wall (write time only, {SHARDS} shards × {BATCH}-sample batches); {:.2} CPU µs/sample over all threads, {:.2} on the writer thread",
        written as f64 / busy.as_secs_f64(),
        cpu * 1e6 / written as f64,
        writer_cpu * 1e6 / written as f64
    );
    println!(
        "memory: VmRSS {} → {} kB: {:.0} bytes per active series (head structures {:.0} B/series; {} active, {} head samples, {:.0} samples/series)",
        rss0,
        rss1,
        (rss1.saturating_sub(rss0) * 1024) as f64 / mem_series as f64,
        heap as f64 / mem_series as f64,
        stats.active_series.iter().map(|a| a.1).sum::<u64>(),
        stats.head_samples,
        stats.head_samples as f64 / mem_series as f64,
    );
    rt.block_on(store.flush()).unwrap();
    drop(store);
    let started = Instant::now();
    let store = Arc::new(
        rt.block_on(SqliteStore::open(&path, StoreOptions::default()))
            .unwrap(),
    );
    let replay = store.replay_stats().clone();
    println!(
        "restart: open + replay of {} WAL rows / {} samples in {:.2} s ({:.0} samples/s)",
        replay.rows,
        replay.samples,
        started.elapsed().as_secs_f64(),
        replay.samples as f64 / started.elapsed().as_secs_f64()
    );
    let started = Instant::now();
    let r = rt.block_on(store.maintain(now + 3 * HOUR)).unwrap();
    rt.block_on(store.flush()).unwrap();
    println!(
        "compaction: {} chunks, {} samples in {:.2} s",
        r.chunks_written,
        r.samples_compacted,
        started.elapsed().as_secs_f64()
    );
    drop(store);
    let c = rusqlite::Connection::open(&path).unwrap();
    let q = |sql: &str| -> (i64, i64) {
        c.query_row(sql, [], |r| {
            Ok((
                r.get::<_, Option<i64>>(0)?.unwrap_or(0),
                r.get::<_, Option<i64>>(1)?.unwrap_or(0),
            ))
        })
        .unwrap()
    };
    let (all_b, all_n) = q("SELECT sum(length(data)), sum(count) FROM chunks");
    let (full_b, full_n) = q("SELECT sum(length(data)), sum(count) FROM chunks WHERE count >= 470");
    let (roll_b, _) = q("SELECT sum(length(data)), count(*) FROM rollups");
    let file = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    if let Ok(keep) = std::env::var("KI_BENCH_KEEP") {
        std::fs::copy(&path, &keep).unwrap();
    }
    let mut per_metric = c
        .prepare(
            "SELECT s.name, sum(length(c.data)), sum(c.count) FROM chunks c
             JOIN series s ON s.id = c.series_id GROUP BY s.name ORDER BY s.name",
        )
        .unwrap();
    let rows: Vec<(String, i64, i64)> = per_metric
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    for (name, b, n) in rows {
        println!(
            "  chunk B/sample {:>5.2}  {name}",
            b as f64 / n.max(1) as f64
        );
    }
    println!(
        "disk: chunk data {:.2} B/sample over all chunks, {:.2} B/sample over full 2 h chunks; rollups {:.2} B/sample; file {:.2} B/sample ({} bytes)",
        all_b as f64 / all_n.max(1) as f64,
        full_b as f64 / full_n.max(1) as f64,
        roll_b as f64 / all_n.max(1) as f64,
        file as f64 / all_n.max(1) as f64,
        file
    );
}

fn main() {
    let quick = std::env::var("KI_BENCH_QUICK").is_ok_and(|v| v != "0");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mem_series = env_usize("KI_BENCH_MEM_SERIES", if quick { 20_000 } else { 100_000 });
    let scrapes = env_usize("KI_BENCH_SCRAPES", 720) as i64; // 3 h
    let tput_series = env_usize("KI_BENCH_SERIES", 100_000);
    println!(
        "metrics_ingest: quick={quick} mem_series={mem_series} scrapes={scrapes} tput_series={tput_series}"
    );
    report(&rt, mem_series, scrapes);

    // Criterion: one iteration = one scrape of every series.
    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(if quick { 2 } else { 5 }))
        .measurement_time(Duration::from_secs(if quick { 8 } else { 20 }))
        .configure_from_args();
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        rt.block_on(SqliteStore::open(
            &dir.path().join("insight.db"),
            StoreOptions::default(),
        ))
        .unwrap(),
    );
    let t0 = kube_insight_core::time::now_ms() / STEP_MS * STEP_MS - HOUR;
    let all: Vec<Labels> = (0..tput_series).map(labels).collect();
    // Create the series first: the steady state is known series.
    rt.block_on(send(&store, scrape(&all, 0..tput_series, t0, 0)));
    let mut k = 1i64;
    let mut g = c.benchmark_group("metrics_ingest");
    g.throughput(Throughput::Elements(tput_series as u64));
    g.bench_function(BenchmarkId::new("write_samples_scrape", tput_series), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let batches = scrape(&all, 0..tput_series, t0, k);
                k += 1;
                let started = Instant::now();
                let n = rt.block_on(send(&store, batches));
                total += started.elapsed();
                assert_eq!(n, tput_series as u64);
            }
            total
        })
    });
    g.finish();
    c.final_summary();
}
