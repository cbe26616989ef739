//! Fluent Bit → kube-insight logs, end to end over loopback HTTP into SQLite.
//!
//! `cargo bench -p kube-insight-sources --bench fluent_bit` (full) or with
//! `KUBE_INSIGHT_BENCH_QUICK=1` (a few minutes at most, smaller data).
//!
//! Measures, with realistic records (containerd/CRI + kubernetes filter
//! metadata, like the shared fixture) from 500 pods, gzip `json_lines`
//! batches of 1,000 lines posted concurrently:
//! 1. max ingest rate: lines/s, raw body MB/s, gzip MB/s;
//! 2. p50/p99 latency per batch at 50 % of that rate (open loop);
//! 3. freshness: 2xx → the line is found by a `contains` query;
//! 4. disk: bytes per raw body byte and per `log`-field byte, after the
//!    hour is finalised;
//! 5. a `contains` search over 1 h of one workload writing 1 GB/h (scaled
//!    down in quick mode), written straight through the store;
//! 6. peak RSS of the whole process (client included).

#![allow(clippy::unwrap_used, clippy::expect_used)]

/// The binary's allocator (`bridges/kube-insight/src/main.rs`), so the bench
/// measures what runs.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use axum::Router;
use flate2::write::GzEncoder;
use kube_insight_core::log::{LineFilter, LogRecord, LogStreamKey, LogStreamMeta};
use kube_insight_core::TimeRange;
use kube_insight_sources::fluent_bit::FluentBitSource;
use kube_insight_sources::push::{mount, PushLimits};
use kube_insight_sources::TokenMap;
use kube_insight_store::{LogBatch, LogQuery, LogSelector, LogStore, LogStreamBatch, StoreOptions};
use kube_insight_store_sqlite::logs::SqliteLogStore;
use kube_insight_telemetry::Telemetry;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

const PODS: usize = 500;
const LINES_PER_BATCH: usize = 1000;
const TOKEN: &str = "bench-token-0123456789";

/// A small deterministic generator (no dependency on rand's API).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const PATHS: [&str; 8] = [
    "/api/orders",
    "/api/cart",
    "/healthz",
    "/api/users/me",
    "/static/app.js",
    "/api/search",
    "/metrics",
    "/api/payments",
];
const MSGS: [&str; 6] = [
    "request served",
    "cache miss",
    "upstream timeout",
    "retrying request",
    "connection reset by peer",
    "slow query",
];

/// One log line of a realistic mix: nginx access, zap JSON, klog, logfmt,
/// java-style.
fn log_line(r: &mut Rng, i: u64) -> String {
    let path = PATHS[r.below(8) as usize];
    let ms = r.below(900) + 1;
    match r.below(5) {
        0 => format!(
            "10.244.{}.{} - - [31/May/2024:16:08:{:02} +0000] \"GET {path}?id={} HTTP/1.1\" {} {} \"-\" \"Mozilla/5.0 (X11; Linux x86_64)\" {ms}ms",
            r.below(255), r.below(255), r.below(60), r.next() % 100_000, [200, 200, 200, 404, 503][r.below(5) as usize], r.below(50_000)
        ),
        1 => format!(
            "{{\"level\":\"{}\",\"ts\":\"2024-05-31T16:08:38.{:03}Z\",\"caller\":\"server/handler.go:{}\",\"msg\":\"{}\",\"path\":\"{path}\",\"latency_ms\":{ms},\"request_id\":\"{:016x}\"}}",
            ["info", "info", "warn", "error", "debug"][r.below(5) as usize], r.below(1000), r.below(400), MSGS[r.below(6) as usize], r.next()
        ),
        2 => format!(
            "I0531 16:08:{:02}.{:06}       1 reconciler.go:{}] \"{}\" object=\"shop/order-{}\" duration=\"{ms}ms\"",
            r.below(60), r.below(1_000_000), r.below(900), MSGS[r.below(6) as usize], r.below(10_000)
        ),
        3 => format!(
            "time=\"2024-05-31T16:08:37Z\" level={} msg=\"{}\" path={path} status={} bytes={} seq={i}",
            ["info", "warning", "error"][r.below(3) as usize], MSGS[r.below(6) as usize], [200, 500][r.below(2) as usize], r.below(90_000)
        ),
        _ => format!(
            "2024-05-31 16:08:37.{:03}  {} 1 --- [nio-8080-exec-{}] c.e.shop.OrderService : {} for order {} in {ms} ms",
            r.below(1000), ["INFO", "WARN", "ERROR"][r.below(3) as usize], r.below(20), MSGS[r.below(6) as usize], r.below(1_000_000)
        ),
    }
}

fn pod_meta(p: usize) -> (String, String, String) {
    let workload = format!("svc-{:02}", p % 50);
    let ns = format!("team-{}", p % 10);
    let pod = format!("{workload}-7c9d8f6b5-{:05x}", p * 7919 % 0xfffff);
    (ns, workload, pod)
}

/// A json_lines batch of 1,000 records (as Fluent Bit's tail + kubernetes
/// filter + http output produce them), and its raw and `log` byte counts.
fn batch_body(r: &mut Rng, seq: u64, t0_s: f64, marker: Option<&str>) -> (Vec<u8>, usize, usize) {
    let mut out = String::with_capacity(LINES_PER_BATCH * 1200);
    let mut log_bytes = 0;
    for i in 0..LINES_PER_BATCH {
        let p = (seq as usize * LINES_PER_BATCH + i) % PODS;
        let (ns, workload, pod) = pod_meta(p);
        let mut line = log_line(r, seq * LINES_PER_BATCH as u64 + i as u64);
        if i == 0 {
            if let Some(m) = marker {
                line = format!("freshness marker {m}");
            }
        }
        log_bytes += line.len();
        let t = t0_s + (seq as f64) * 0.01 + i as f64 * 0.000_01;
        let kube = serde_json::json!({
            "pod_name": pod,
            "namespace_name": ns,
            "pod_id": format!("7d0c2c4e-5b6a-4f3e-9d8c-{:012x}", p),
            "labels": {"app": workload, "pod-template-hash": "7c9d8f6b5", "app.kubernetes.io/part-of": "shop"},
            "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": "9102"},
            "host": format!("ip-10-0-{}-{}.eu-west-1.compute.internal", p % 20, p % 200),
            "pod_ip": format!("10.244.{}.{}", p % 250, p % 200),
            "container_name": workload,
            "docker_id": format!("{:064x}", p as u128 * 0x9e37_79b9_7f4a_7c15),
            "container_hash": format!("registry.example.com/shop/{workload}@sha256:{:064x}", p),
            "container_image": format!("registry.example.com/shop/{workload}:2.4.{}", p % 9)
        });
        // Fluent Bit's order: the date key first, then the record's keys.
        let rec = format!(
            "{{\"date\":{t:.6},\"time\":\"{}\",\"stream\":\"{}\",\"_p\":\"F\",\"log\":{},\"kubernetes\":{kube}}}",
            kube_insight_core::log::format_rfc3339_ns((t * 1e9) as i64),
            if i % 7 == 0 { "stderr" } else { "stdout" },
            serde_json::to_string(&line).unwrap(),
        );
        out.push_str(&rec);
        out.push('\n');
    }
    let raw = out.len();
    let mut e = GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(out.as_bytes()).unwrap();
    (e.finish().unwrap(), raw, log_bytes)
}

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|k| k.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

async fn post(client: &reqwest::Client, url: &str, body: Vec<u8>) -> Duration {
    let started = Instant::now();
    loop {
        let r = client
            .post(url)
            .header("content-type", "application/x-ndjson")
            .header("content-encoding", "gzip")
            .bearer_auth(TOKEN)
            .body(body.clone())
            .send()
            .await
            .unwrap();
        match r.status().as_u16() {
            200 | 204 => return started.elapsed(),
            429 | 503 => tokio::time::sleep(Duration::from_millis(50)).await, // as Fluent Bit: retry
            s => panic!(
                "unexpected status {s}: {}",
                r.text().await.unwrap_or_default()
            ),
        }
    }
}

fn main() {
    let quick = std::env::var("KUBE_INSIGHT_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(quick));
}

async fn run(quick: bool) {
    let batches = if quick { 120 } else { 600 };
    let concurrency = 8;
    let search_mb: usize = if quick { 200 } else { 1024 };
    println!("fluent_bit bench ({} mode): {batches} batches x {LINES_PER_BATCH} lines from {PODS} pods, concurrency {concurrency}", if quick { "quick" } else { "full" });

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("insight.db");
    let store = Arc::new(
        SqliteLogStore::open(&path, StoreOptions::default())
            .await
            .unwrap(),
    );
    let mut tokens = TokenMap::open("default");
    tokens.insert(TOKEN, "bench");
    let src = Arc::new(FluentBitSource::new(store.clone()));
    let app = mount(
        Router::new(),
        src,
        Arc::new(tokens),
        PushLimits::default(),
        Arc::new(Telemetry::new()),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/ingest/fluent-bit",
        listener.local_addr().unwrap()
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .unwrap();

    // Pre-generated bodies (generation is not what is measured).
    let t0_s = kube_insight_core::time::now_ms() as f64 / 1000.0 - 1800.0;
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let gen_started = Instant::now();
    let mut bodies = Vec::with_capacity(batches);
    let (mut raw_total, mut log_total, mut gz_total) = (0usize, 0usize, 0usize);
    for seq in 0..batches as u64 {
        let (gz, raw, log) = batch_body(&mut rng, seq, t0_s, None);
        raw_total += raw;
        log_total += log;
        gz_total += gz.len();
        bodies.push(gz);
    }
    println!(
        "  generated in {:.1}s: raw body {:.1} MB ({:.0} B/line), log field {:.1} MB ({:.0} B/line), gzip {:.1} MB",
        gen_started.elapsed().as_secs_f64(),
        raw_total as f64 / 1e6,
        raw_total as f64 / (batches * LINES_PER_BATCH) as f64,
        log_total as f64 / 1e6,
        log_total as f64 / (batches * LINES_PER_BATCH) as f64,
        gz_total as f64 / 1e6
    );

    // 1. Max rate: `concurrency` senders.
    let queue = Arc::new(std::sync::Mutex::new(bodies.into_iter()));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (q, c, u) = (queue.clone(), client.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let next = q.lock().unwrap().next();
                let Some(b) = next else { break };
                lat.push(post(&c, &u, b).await);
            }
            lat
        }));
    }
    let mut lat_max = Vec::new();
    for t in tasks {
        lat_max.extend(t.await.unwrap());
    }
    let secs = started.elapsed().as_secs_f64();
    let lines_s = (batches * LINES_PER_BATCH) as f64 / secs;
    lat_max.sort();
    println!(
        "  max rate: {:.0} lines/s, {:.1} MB/s raw body, {:.1} MB/s gzip ({:.1}s; batch p50 {:.0} ms, p99 {:.0} ms at saturation)",
        lines_s,
        raw_total as f64 / 1e6 / secs,
        gz_total as f64 / 1e6 / secs,
        secs,
        pct(&lat_max, 0.5).as_secs_f64() * 1e3,
        pct(&lat_max, 0.99).as_secs_f64() * 1e3
    );

    // 2. Latency at 50 % of the max rate (open loop), 3. freshness.
    let half_batches_s = lines_s / LINES_PER_BATCH as f64 / 2.0;
    let n2 = if quick { 60 } else { 240 };
    let mut rng2 = Rng(0x9e37_79b9_7f4a_7c15);
    let mut bodies2 = Vec::with_capacity(n2 as usize);
    for i in 0..n2 {
        let (gz, raw, log) = batch_body(&mut rng2, batches as u64 + i, t0_s, None);
        raw_total += raw;
        log_total += log;
        bodies2.push(gz);
    }
    let interval = Duration::from_secs_f64(1.0 / half_batches_s.max(0.1));
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut tasks = Vec::new();
    for b in bodies2 {
        tick.tick().await;
        let (c, u) = (client.clone(), url.clone());
        tasks.push(tokio::spawn(async move { post(&c, &u, b).await }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.push(t.await.unwrap());
    }
    lat.sort();
    println!(
        "  at 50% of max ({:.1} batches/s = {:.0} lines/s): batch latency p50 {:.0} ms, p99 {:.0} ms",
        half_batches_s,
        half_batches_s * LINES_PER_BATCH as f64,
        pct(&lat, 0.5).as_secs_f64() * 1e3,
        pct(&lat, 0.99).as_secs_f64() * 1e3
    );
    let marker = format!("m{:x}", rng2.next());
    let (body, raw, log) = batch_body(&mut rng2, batches as u64 + n2 + 1, t0_s, Some(&marker));
    raw_total += raw;
    log_total += log;
    post(&client, &url, body).await;
    let acked = Instant::now();
    let mut q = LogQuery::new(
        LogSelector::default(),
        TimeRange::new(0, i64::MAX / 1_000_000 - 1).unwrap(),
    );
    q.filter = LineFilter::new(Some(&marker), None).unwrap();
    q.limit = 1;
    loop {
        if !store.query_logs(&q).await.unwrap().rows.is_empty() {
            break;
        }
        assert!(
            acked.elapsed() < Duration::from_secs(30),
            "never searchable"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    println!(
        "  freshness: 2xx -> found by contains in {:.1} ms (the whole hour of all pods scanned)",
        acked.elapsed().as_secs_f64() * 1e3
    );

    // 4. Disk, before and after the hour is finalised.
    // Every body posted (phases 1-3).
    let (all_raw, all_log) = (raw_total as f64, log_total as f64);
    let report = |label: &str, u: &kube_insight_store_sqlite::logs::LogDiskUsage| {
        let used = u.log_table_bytes.unwrap_or(u.file_bytes - u.free_bytes) as f64;
        println!(
            "  disk {label}: log tables {:.1} MB = {:.3} x raw body, {:.2} x log field; blocks {:.1} MB for {:.1} MB raw ({:.1}x); file {:.1} MB ({:.1} MB free), wal {:.1} MB",
            used / 1e6,
            used / all_raw,
            used / all_log,
            u.block_data_bytes as f64 / 1e6,
            u.raw_bytes as f64 / 1e6,
            u.raw_bytes as f64 / u.block_data_bytes.max(1) as f64,
            u.file_bytes as f64 / 1e6,
            u.free_bytes as f64 / 1e6,
            u.wal_bytes as f64 / 1e6
        );
    };
    report("as ingested", &store.disk_usage().await.unwrap());
    let fin = Instant::now();
    store
        .maintain_logs(kube_insight_core::time::now_ms() + 3 * 3_600_000)
        .await
        .unwrap();
    let fin = fin.elapsed();
    report(
        &format!("after finalising the hour ({:.1}s)", fin.as_secs_f64()),
        &store.disk_usage().await.unwrap(),
    );

    // 5. Search over one workload's hour: `search_mb` of lines written
    // straight through the store (10 pods), finalised, then a rare token.
    let search_store = Arc::new(
        SqliteLogStore::open(&dir.path().join("search.db"), StoreOptions::default())
            .await
            .unwrap(),
    );
    let hour_ns = 3_600_000_000_000i64;
    let start_ns =
        (kube_insight_core::time::now_ms() * 1_000_000 - 3 * hour_ns) / hour_ns * hour_ns;
    let mut rng3 = Rng(0xdead_beef_cafe_f00d);
    let target = search_mb * 1_000_000;
    let mut written = 0usize;
    let mut lines_written = 0u64;
    let w_started = Instant::now();
    let per_stream = 1000;
    let mut wtasks = Vec::new();
    let sem = Arc::new(tokio::sync::Semaphore::new(4));
    let est_lines = target / 150;
    while written < target {
        let streams: Vec<LogStreamBatch> = (0..10)
            .map(|p| {
                let records: Vec<LogRecord> = (0..per_stream)
                    .map(|_| {
                        let i = lines_written;
                        lines_written += 1;
                        let mut line = log_line(&mut rng3, i);
                        if i == est_lines as u64 / 3 {
                            line.push_str(" needle-7f3a9c");
                        }
                        written += line.len();
                        LogRecord {
                            timestamp_ns: start_ns
                                + (i as i64 * (hour_ns / est_lines.max(1) as i64)).min(hour_ns - 1),
                            level: kube_insight_core::extract_level(&line),
                            line,
                            ..Default::default()
                        }
                    })
                    .collect();
                LogStreamBatch {
                    key: LogStreamKey::new(
                        "bench",
                        "shop",
                        format!("checkout-7c9d8f6b5-{p:05}"),
                        "checkout",
                    ),
                    meta: LogStreamMeta {
                        workload: Some(kube_insight_core::entity::Workload {
                            kind: "Deployment".into(),
                            name: "checkout".into(),
                        }),
                        ..Default::default()
                    },
                    records,
                }
            })
            .collect();
        let permit = sem.clone().acquire_owned().await.unwrap();
        let s = search_store.clone();
        wtasks.push(tokio::spawn(async move {
            s.write_logs(LogBatch {
                cluster: "bench".into(),
                streams,
            })
            .await
            .unwrap();
            drop(permit);
        }));
    }
    for t in wtasks {
        t.await.unwrap();
    }
    let wsecs = w_started.elapsed().as_secs_f64();
    search_store
        .maintain_logs(kube_insight_core::time::now_ms())
        .await
        .unwrap();
    let u = search_store.disk_usage().await.unwrap();
    println!(
        "  search data: {:.0} MB of lines ({} lines, 10 pods, 1 h) written via the store in {:.1}s ({:.0} lines/s); blocks {:.1} MB ({:.1}x)",
        written as f64 / 1e6,
        lines_written,
        wsecs,
        lines_written as f64 / wsecs,
        u.block_data_bytes as f64 / 1e6,
        u.raw_bytes as f64 / u.block_data_bytes.max(1) as f64
    );
    let range = TimeRange::new(start_ns / 1_000_000, (start_ns + hour_ns) / 1_000_000 - 1).unwrap();
    let mut q = LogQuery::new(
        LogSelector {
            cluster: Some("bench".into()),
            namespace: Some("shop".into()),
            workload: Some("checkout".into()),
            ..Default::default()
        },
        range,
    );
    q.filter = LineFilter::new(Some("needle-7f3a9c"), None).unwrap();
    q.limit = 100;
    for run in 0..2 {
        let s = Instant::now();
        let page = search_store.query_logs(&q).await.unwrap();
        println!(
            "  contains search over the workload's hour ({}): {} hit(s) in {:.0} ms, {:.0} MB scanned ({:.0} MB/s)",
            if run == 0 { "cold" } else { "warm" },
            page.rows.len(),
            s.elapsed().as_secs_f64() * 1e3,
            page.scanned_bytes as f64 / 1e6,
            page.scanned_bytes as f64 / 1e6 / s.elapsed().as_secs_f64()
        );
        assert_eq!(page.rows.len(), 1);
    }
    println!(
        "  peak RSS (server + client + generated bodies): {:.0} MB",
        peak_rss_mb()
    );
}
