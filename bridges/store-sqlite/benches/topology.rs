//! Topology time travel on a synthetic cluster: 2,000 workloads, 10,000
//! pods, 20,000 edges, a snapshot every 15 s over a simulated 24 h, 1 %
//! churn per hour (workloads, pods and edges replaced), traffic drifting a
//! few percent per minute.
//!
//! ```text
//! cargo bench -p kube-insight-store --bench topology                 # 24 h
//! KI_BENCH_HOURS=2 cargo bench -p kube-insight-store --bench topology   # quicker
//! KI_BENCH_DB=/tmp/topo-24h.db cargo bench -p kube-insight-store --bench topology
//!     # keeps the written store there, and on later runs reads it instead of
//!     # writing it again (same hours; reads only)
//! ```
//!
//! Prints structure bytes/day (keyframes + deltas + dependency changes),
//! edge-stat bytes/day (the edge part of the stats rows, measured with the
//! store's own codec) and all stats, the p50/p99 latency of a focus view at
//! depth 2 (with its parts: `graph_at`, `stats_at`, the view, the frames),
//! of the namespace-grouped graph and of a 24 h diff (each read from a
//! second store instance at a random moment, caches cold for the moment),
//! the CPU time the reads took (all threads, steadier than latency on a
//! shared machine) with the load average, and the peak RSS.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a bench: a panic is a failed run

use kube_insight_core::topology::{
    self as topo, Edge, EdgeStats, Node, NodeStats, Snapshot, Stats, ViewOptions,
};
use kube_insight_store::topology::{encode_stats, StatsChain};
use kube_insight_store::{StoreOptions, TopologyStore};
use kube_insight_store_sqlite::topology::SqliteTopologyStore;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::time::Instant;

const WORKLOADS: usize = 2_000;
const PODS_PER_WORKLOAD: usize = 5;
const EDGES: usize = 20_000;
const NAMESPACES: usize = 40;
const STEP_MS: i64 = 15_000;
const HOUR_MS: i64 = 3_600_000;
const T0: i64 = 1_764_000_000_000;

struct Sim {
    rng: StdRng,
    workloads: Vec<(String, String)>, // (namespace, name)
    next_id: usize,
    pods: Vec<(usize, String)>,       // (workload index, pod name)
    edges: Vec<(usize, usize, bool)>, // (a, b, directed)
    edge_base: Vec<(f64, Option<f64>)>,
    drift: Vec<f64>,
    node_drift: f64,
}

impl Sim {
    fn new() -> Sim {
        let mut rng = StdRng::seed_from_u64(7);
        let workloads: Vec<(String, String)> = (0..WORKLOADS)
            .map(|i| {
                (
                    format!("ns-{:02}", i % NAMESPACES),
                    format!("service-{i:04}"),
                )
            })
            .collect();
        let pods = (0..WORKLOADS * PODS_PER_WORKLOAD)
            .map(|i| {
                (
                    i / PODS_PER_WORKLOAD,
                    format!("{:05x}-{:05x}", i, rng.random::<u32>() & 0xfffff),
                )
            })
            .collect();
        let mut sim = Sim {
            rng,
            workloads,
            next_id: WORKLOADS,
            pods,
            edges: Vec::new(),
            edge_base: Vec::new(),
            drift: Vec::new(),
            node_drift: 1.0,
        };
        let mut seen = std::collections::HashSet::new();
        while sim.edges.len() < EDGES {
            let e = sim.random_edge();
            if seen.insert((e.0, e.1)) {
                sim.push_edge(e);
            }
        }
        sim
    }

    fn random_edge(&mut self) -> (usize, usize, bool) {
        // Mostly within a namespace, like real service meshes.
        let a = self.rng.random_range(0..self.workloads.len());
        let b = if self.rng.random_bool(0.7) {
            let ns = a % NAMESPACES;
            let k = self.rng.random_range(0..self.workloads.len() / NAMESPACES);
            (k * NAMESPACES + ns) % self.workloads.len()
        } else {
            self.rng.random_range(0..self.workloads.len())
        };
        let b = if a == b {
            (b + NAMESPACES) % self.workloads.len()
        } else {
            b
        };
        (a, b, self.rng.random_bool(0.3))
    }

    fn push_edge(&mut self, e: (usize, usize, bool)) {
        let bytes = 10f64.powf(self.rng.random_range(2.0..6.0));
        let req = e.2.then(|| 10f64.powf(self.rng.random_range(-1.0..3.0)));
        self.edges.push(e);
        self.edge_base.push((bytes, req));
        self.drift.push(1.0);
    }

    /// Replaces `n` pods, `w` workloads (their pods and edges move to the new
    /// name) and `e` edges.
    fn churn(&mut self, w: usize, p: usize, e: usize) {
        for _ in 0..w {
            let i = self.rng.random_range(0..self.workloads.len());
            self.workloads[i].1 = format!("service-{:04}", self.next_id);
            self.next_id += 1;
        }
        for _ in 0..p {
            let i = self.rng.random_range(0..self.pods.len());
            self.pods[i].1 = format!("{:05x}-{:05x}", i, self.rng.random::<u32>() & 0xfffff);
        }
        for _ in 0..e {
            let i = self.rng.random_range(0..self.edges.len());
            let new = self.random_edge();
            self.edges[i] = new;
            self.edge_base[i] = (
                10f64.powf(self.rng.random_range(2.0..6.0)),
                new.2.then(|| 10f64.powf(self.rng.random_range(-1.0..3.0))),
            );
            self.drift[i] = 1.0;
        }
    }

    /// Traffic drifts by up to ±3 % per minute.
    fn drift(&mut self) {
        for d in &mut self.drift {
            *d = (*d * (1.0 + self.rng.random_range(-0.03..0.03))).clamp(0.3, 3.0);
        }
        self.node_drift =
            (self.node_drift * (1.0 + self.rng.random_range(-0.02..0.02))).clamp(0.5, 2.0);
    }

    fn snapshot(&self) -> Snapshot {
        let mut s = Snapshot::default();
        let wid = |i: usize| topo::workload_id(&self.workloads[i].0, &self.workloads[i].1);
        for (i, (ns, name)) in self.workloads.iter().enumerate() {
            s.graph.add_node(Node::workload(ns, name, "Deployment"));
            s.stats.nodes.insert(
                wid(i).into(),
                NodeStats {
                    cpu_cores: Some(0.05 * (1 + i % 20) as f64 * self.node_drift),
                    memory_bytes: Some(5e7 * (1 + i % 10) as f64),
                    restarts: Some((i % 7 == 0) as u8 as f64),
                    requests_per_s: None,
                    error_ratio: None,
                },
            );
        }
        for (w, pod) in &self.pods {
            let (ns, name) = &self.workloads[*w];
            let n = Node::pod(ns, name, "Deployment", &format!("{name}-{pod}"));
            s.stats.nodes.insert(
                n.id.clone(),
                NodeStats {
                    cpu_cores: Some(0.01 * (1 + w % 20) as f64 * self.node_drift),
                    memory_bytes: Some(1e7 * (1 + w % 10) as f64),
                    restarts: Some(0.0),
                    requests_per_s: None,
                    error_ratio: None,
                },
            );
            s.graph.add_node(n);
        }
        for (i, (a, b, directed)) in self.edges.iter().enumerate() {
            let e = Edge::new(&wid(*a), &wid(*b), *directed, true, *directed);
            let (bytes, req) = self.edge_base[i];
            let d = self.drift[i];
            s.stats.edges.insert(
                e.id.clone(),
                EdgeStats {
                    bytes_per_s: Some(bytes * d),
                    requests_per_s: req.map(|r| r * d),
                    error_ratio: req.map(|_| if i % 50 == 0 { 0.02 * d } else { 0.0 }),
                    p50_ms: req.map(|_| 5.0 + (i % 30) as f64),
                    p95_ms: req.map(|_| 40.0 + (i % 100) as f64 * d),
                    p99_ms: req.map(|_| 120.0 + (i % 200) as f64 * d),
                },
            );
            s.graph.add_edge(e);
        }
        s
    }
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// CPU time of the whole process (all threads), seconds.
fn cpu_s() -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            // Fields after the command (which may hold spaces): utime is the
            // 14th field of the line, stime the 15th.
            let rest = &s[s.rfind(')')? + 2..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            let t = |i: usize| f.get(i)?.parse::<f64>().ok();
            Some((t(11)? + t(12)?) / 100.0)
        })
        .unwrap_or(0.0)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn pct(mut v: Vec<f64>, p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let hours: i64 = std::env::var("KI_BENCH_HOURS")
        .ok()
        .and_then(|h| h.parse().ok())
        .unwrap_or(24);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (path, reuse) = match std::env::var_os("KI_BENCH_DB") {
        Some(p) => {
            let p = std::path::PathBuf::from(p);
            let exists = p.exists();
            (p, exists)
        }
        None => (dir.path().join("insight.db"), false),
    };
    let store = rt
        .block_on(SqliteTopologyStore::open(&path, StoreOptions::default()))
        .unwrap();
    let mut sim = Sim::new();
    let steps = hours * HOUR_MS / STEP_MS;
    let per_step = |total_per_hour: f64| total_per_hour / (HOUR_MS / STEP_MS) as f64;
    let (mut cw, mut cp, mut ce) = (0.0, 0.0, 0.0);
    let mut edge_chain = StatsChain::default();
    let mut edge_stat_bytes = 0u64;
    let mut last_minute = i64::MIN;
    let started = Instant::now();
    let mut save_ms = Vec::new();
    let mut keyframes = 0;
    for k in 0..=steps {
        if reuse {
            eprintln!("  reusing the store written before at {}", path.display());
            break;
        }
        let t = T0 + k * STEP_MS;
        if k > 0 {
            cw += per_step(0.01 * WORKLOADS as f64);
            cp += per_step(0.01 * (WORKLOADS * PODS_PER_WORKLOAD) as f64);
            ce += per_step(0.01 * EDGES as f64);
            let (w, p, e) = (cw.floor(), cp.floor(), ce.floor());
            sim.churn(w as usize, p as usize, e as usize);
            cw -= w;
            cp -= p;
            ce -= e;
        }
        let minute = t - t.rem_euclid(60_000);
        if minute != last_minute {
            sim.drift();
        }
        let snap = sim.snapshot();
        if minute != last_minute {
            // The edge part of a stats row, with the store's codec.
            let edges_only = Stats {
                nodes: Default::default(),
                edges: snap.stats.edges.clone(),
            };
            let kf = edge_chain.len == 0
                || edge_chain.len >= kube_insight_store::topology::STATS_CHAIN_MINUTES;
            edge_stat_bytes += encode_stats(&mut edge_chain, &edges_only, kf).len() as u64;
            last_minute = minute;
        }
        let s0 = Instant::now();
        let out = rt.block_on(store.save_snapshot("bench", t, snap)).unwrap();
        save_ms.push(s0.elapsed().as_secs_f64() * 1000.0);
        keyframes += usize::from(out.keyframe);
        if k % 960 == 0 {
            eprintln!(
                "  simulated {:>5.1} h in {:>6.1} s",
                (k * STEP_MS) as f64 / HOUR_MS as f64,
                started.elapsed().as_secs_f64()
            );
        }
    }
    let write_s = started.elapsed().as_secs_f64();
    let day = 24.0 / hours as f64;
    let tables = rt.block_on(store.table_bytes()).unwrap();
    let bytes = |name: &str| {
        tables
            .iter()
            .find(|t| t.0 == name)
            .map(|t| (t.1, t.2))
            .unwrap_or((0, 0))
    };
    let (kf_rows, kf_b) = bytes("topo_keyframes");
    let (d_rows, d_b) = bytes("topo_deltas");
    let (dc_rows, dc_b) = bytes("topo_dependency_changes");
    let (st_rows, st_b) = bytes("topo_stats");
    let structure = (kf_b + d_b + dc_b) as f64 * day;

    // Reads at random moments, from a second store instance (as the api
    // role would: no writer state in memory).
    let reader = rt
        .block_on(SqliteTopologyStore::open(&path, StoreOptions::default()))
        .unwrap();
    let mut rng = StdRng::seed_from_u64(11);
    let end = T0 + steps * STEP_MS;
    let (gt, stt) = (std::cell::Cell::new(0.0), std::cell::Cell::new(0.0));
    // The last read's graph_at and stats_at times (ms).
    let last = std::cell::Cell::new((0.0, 0.0));
    let at = |r: &SqliteTopologyStore, t: i64| {
        let s0 = Instant::now();
        let g = rt.block_on(r.graph_at("bench", t)).unwrap().unwrap().graph;
        let g_ms = s0.elapsed().as_secs_f64() * 1000.0;
        gt.set(gt.get() + g_ms);
        let s0 = Instant::now();
        let st = rt.block_on(r.stats_at("bench", t)).unwrap().unwrap().stats;
        let s_ms = s0.elapsed().as_secs_f64() * 1000.0;
        stt.set(stt.get() + s_ms);
        last.set((g_ms, s_ms));
        (g, st)
    };
    let random_t = |rng: &mut StdRng| rng.random_range(T0 + 60_000..end);
    let load_before = load_average();
    let cpu0 = cpu_s();
    let mut focus = Vec::new();
    let mut focus_parts = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut focus_size, mut ns_size) = ((0usize, 0usize), (0usize, 0usize));
    let mut nsg = Vec::new();
    for _ in 0..200 {
        let t = random_t(&mut rng);
        let s0 = Instant::now();
        let (g, st) = at(&reader, t);
        let w = g
            .nodes
            .values()
            .filter(|n| n.kind == topo::NodeKind::Workload)
            .nth(rng.random_range(0..WORKLOADS))
            .unwrap()
            .id
            .to_string();
        let v0 = Instant::now();
        let v = topo::view_parts(
            &g,
            &st,
            &ViewOptions {
                focus: Some(w),
                depth: 2,
                ..Default::default()
            },
        )
        .unwrap();
        let view_ms = v0.elapsed().as_secs_f64() * 1000.0;
        focus_size.0 += v.snapshot.graph.nodes.len();
        focus_size.1 += v.snapshot.graph.edges.len();
        let f0 = Instant::now();
        std::hint::black_box(topo::node_rows(&v.snapshot, None));
        std::hint::black_box(topo::edge_rows(&v.snapshot, None));
        let frames_ms = f0.elapsed().as_secs_f64() * 1000.0;
        let total = s0.elapsed().as_secs_f64() * 1000.0;
        let (g_ms, s_ms) = last.get();
        focus_parts.0.push(g_ms);
        focus_parts.1.push(s_ms);
        focus_parts.2.push(view_ms);
        focus_parts.3.push(frames_ms);
        focus.push(total);

        let t = random_t(&mut rng);
        let s0 = Instant::now();
        let (g, st) = at(&reader, t);
        let v = topo::view_parts(&g, &st, &ViewOptions::default()).unwrap();
        assert_eq!(v.group, topo::Group::Namespace);
        ns_size.0 += v.snapshot.graph.nodes.len();
        ns_size.1 += v.snapshot.graph.edges.len();
        std::hint::black_box(topo::node_rows(&v.snapshot, None));
        std::hint::black_box(topo::edge_rows(&v.snapshot, None));
        nsg.push(s0.elapsed().as_secs_f64() * 1000.0);
    }
    let views_cpu = cpu_s() - cpu0;
    let cpu0 = cpu_s();
    let mut diffs = Vec::new();
    let mut diff_size = (0, 0, 0);
    for _ in 0..20 {
        let s0 = Instant::now();
        let (ga, sa) = at(&reader, T0 + 1);
        let (gb, sb) = at(&reader, end);
        let opts = ViewOptions {
            group: Some(topo::Group::Workload),
            max_nodes: usize::MAX / 2,
            ..Default::default()
        };
        let va = topo::view_parts(&ga, &sa, &opts).unwrap().snapshot;
        let vb = topo::view_parts(&gb, &sb, &opts).unwrap().snapshot;
        let d = topo::diff(&va, &vb, &Default::default());
        diff_size = (
            d.added_edges.len() + d.removed_edges.len(),
            d.changed_edges.len(),
            d.added_nodes.len() + d.removed_nodes.len(),
        );
        std::hint::black_box(&d);
        diffs.push(s0.elapsed().as_secs_f64() * 1000.0);
    }

    let diffs_cpu = cpu_s() - cpu0;
    println!("topology bench: {WORKLOADS} workloads, {} pods, {EDGES} edges, 15 s snapshots over {hours} h, 1 %/h churn", WORKLOADS * PODS_PER_WORKLOAD);
    if reuse {
        println!(
            "  writes: none (read the store written before at {})",
            path.display()
        );
    } else {
        println!("  writes: {} saves in {write_s:.1} s (save p50 {:.2} ms, p99 {:.2} ms), {keyframes} structure keyframes", steps + 1, pct(save_ms.clone(), 0.5), pct(save_ms, 0.99));
    }
    println!(
        "  structure: {:.2} MB/day  (keyframes {kf_rows} rows {:.2} MB, deltas {d_rows} rows {:.2} MB, dependency changes {dc_rows} rows {:.2} MB, over {hours} h)",
        structure / 1e6,
        kf_b as f64 / 1e6,
        d_b as f64 / 1e6,
        dc_b as f64 / 1e6
    );
    if reuse {
        println!("  stats: {:.2} MB/day incl. 12,000 node rows, {st_rows} rows (the edge part is measured while writing)", st_b as f64 * day / 1e6);
    } else {
        println!("  edge stats: {:.2} MB/day  (all stats incl. 12,000 node rows: {:.2} MB/day, {st_rows} rows)", edge_stat_bytes as f64 * day / 1e6, st_b as f64 * day / 1e6);
    }
    println!(
        "  focus depth 2:    p50 {:>7.2} ms  p99 {:>7.2} ms",
        pct(focus.clone(), 0.5),
        pct(focus, 0.99)
    );
    println!(
        "    answers: {} nodes and {} edges on average (namespace graph: {} and {})",
        focus_size.0 / 200,
        focus_size.1 / 200,
        ns_size.0 / 200,
        ns_size.1 / 200
    );
    println!(
        "    parts (p50/p99): graph_at {:.2}/{:.2} ms, stats_at {:.2}/{:.2} ms, view {:.2}/{:.2} ms, frames {:.2}/{:.2} ms",
        pct(focus_parts.0.clone(), 0.5),
        pct(focus_parts.0, 0.99),
        pct(focus_parts.1.clone(), 0.5),
        pct(focus_parts.1, 0.99),
        pct(focus_parts.2.clone(), 0.5),
        pct(focus_parts.2, 0.99),
        pct(focus_parts.3.clone(), 0.5),
        pct(focus_parts.3, 0.99)
    );
    println!(
        "  namespace graph:  p50 {:>7.2} ms  p99 {:>7.2} ms",
        pct(nsg.clone(), 0.5),
        pct(nsg, 0.99)
    );
    println!("  {hours} h diff:       p50 {:>7.2} ms  p99 {:>7.2} ms  ({} edges added/removed, {} changed, {} nodes added/removed)", pct(diffs.clone(), 0.5), pct(diffs, 0.99), diff_size.0, diff_size.1, diff_size.2);
    println!(
        "  (reads: graph_at {:.1} ms total, stats_at {:.1} ms total over 440 reads)",
        gt.get(),
        stt.get()
    );
    println!(
        "  CPU (all threads): {:.1} ms per focus + namespace pair, {:.1} ms per diff; load average {load_before} before the reads, {} after",
        views_cpu * 1000.0 / 200.0,
        diffs_cpu * 1000.0 / 20.0,
        load_average()
    );
    println!("  peak RSS: {:.0} MiB", peak_rss_kib() as f64 / 1024.0);
    let file = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    println!("  sqlite file: {:.1} MB", file as f64 / 1e6);
}
