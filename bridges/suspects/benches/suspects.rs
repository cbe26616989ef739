//! A suspects query over a 24 h window on a 10k-pod cluster in the
//! embedded store.
//!
//! ```text
//! cargo bench -p kube-insight-suspects --features testkit --bench suspects
//! KI_BENCH_DB=/tmp/suspects-10k cargo bench -p kube-insight-suspects --features testkit --bench suspects
//!     # keeps the written store in that directory and reads it on later runs
//! ```
//!
//! The store: 2,000 workloads in 40 namespaces, 5 pods each (10,000 pods),
//! every pod with Beyla's request counters (ok, 5xx, duration sum), cAdvisor
//! CPU throttling counters and working set, and KSM restarts (70k series),
//! a sample every 5 min over 24 h (20M samples); 2,000 Deployments and
//! 10,000 Pods in the object history plus 4,000 changes over the day; a
//! 2,000-workload, 10,000-pod, 20,000-edge topology saved every hour; and
//! the testkit's incident (`shop/frontend → checkout → payment`, 30 s
//! samples) wired into that graph, so the query walks a real neighbourhood
//! (24 workloads, 3 hops) of a large graph. Prints p50/p99 of 100 queries
//! (the first one cold) with the load average, then criterion's estimate.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a bench: a panic is a failed run

use criterion::{criterion_group, criterion_main, Criterion};
use kube_insight_core::event::ChangeKind;
use kube_insight_core::topology::{Edge, Graph, Node, Snapshot};
use kube_insight_core::{Labels, Sample, TimeSeries};
use kube_insight_store::{DynStore, MetricBatch, Store};
use kube_insight_suspects::testkit::{self, AT_MS, CLUSTER, T0};
use kube_insight_suspects::{suspects, Limits, SuspectsQuery};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::time::{Duration, Instant};

const WORKLOADS: usize = 2_000;
const PODS: usize = 5;
const NAMESPACES: usize = 40;
const EDGES: usize = 20_000;
const DAY_MS: i64 = 24 * 3_600_000;
const STEP_MS: i64 = 300_000;

fn workload(i: usize) -> (String, String) {
    (
        format!("ns-{:02}", i % NAMESPACES),
        format!("service-{i:04}"),
    )
}

fn pod(i: usize, p: usize) -> String {
    format!("service-{i:04}-5d8f9c7b6-{p:05}")
}

fn counter(labels: Labels, from: i64, per_step: f64) -> TimeSeries {
    let mut t = from;
    let mut v = 0.0;
    let mut s = Vec::new();
    while t <= AT_MS {
        s.push(Sample::new(t, v));
        v += per_step;
        t += STEP_MS;
    }
    TimeSeries::new(labels, s)
}

fn pod_series(i: usize, p: usize, from: i64, rng: &mut StdRng) -> Vec<TimeSeries> {
    let (ns, w) = workload(i);
    let pod = pod(i, p);
    let beyla = |name: &str, code: &str| {
        Labels::from_pairs([
            ("__name__", name),
            ("cluster", CLUSTER),
            ("k8s_namespace_name", ns.as_str()),
            ("k8s_owner_name", w.as_str()),
            ("k8s_pod_name", pod.as_str()),
            ("http_response_status_code", code),
        ])
    };
    let cadvisor = |name: &str| {
        Labels::from_pairs([
            ("__name__", name),
            ("cluster", CLUSTER),
            ("namespace", ns.as_str()),
            ("pod", pod.as_str()),
            ("container", "app"),
        ])
    };
    let rps: f64 = rng.random_range(1.0..50.0);
    let reqs = rps * STEP_MS as f64 / 1000.0;
    let mem: Vec<Sample> = (0..)
        .map(|k| from + k * STEP_MS)
        .take_while(|t| *t <= AT_MS)
        .map(|t| Sample::new(t, 2e8 + rng.random_range(0.0..1e7)))
        .collect();
    vec![
        counter(
            beyla("http_server_request_duration_seconds_count", "200"),
            from,
            reqs,
        ),
        counter(
            beyla("http_server_request_duration_seconds_count", "500"),
            from,
            reqs * 0.002,
        ),
        counter(
            beyla("http_server_request_duration_seconds_sum", "200"),
            from,
            reqs * 0.02,
        ),
        counter(cadvisor("container_cpu_cfs_periods_total"), from, 3000.0),
        counter(
            cadvisor("container_cpu_cfs_throttled_periods_total"),
            from,
            30.0,
        ),
        counter(
            cadvisor("kube_pod_container_status_restarts_total"),
            from,
            0.0,
        ),
        TimeSeries::new(cadvisor("container_memory_working_set_bytes"), mem),
    ]
}

fn big_graph(rng: &mut StdRng) -> Graph {
    let mut g = Graph::default();
    for i in 0..WORKLOADS {
        let (ns, w) = workload(i);
        g.add_node(Node::workload(&ns, &w, "Deployment"));
        for p in 0..PODS {
            g.add_node(Node::pod(&ns, &w, "Deployment", &pod(i, p)));
        }
    }
    let ids: Vec<String> = (0..WORKLOADS)
        .map(|i| {
            let (ns, w) = workload(i);
            format!("{ns}/{w}")
        })
        .collect();
    for _ in 0..EDGES {
        let (a, b) = (
            rng.random_range(0..WORKLOADS),
            rng.random_range(0..WORKLOADS),
        );
        if a != b {
            g.add_edge(Edge::new(&ids[a], &ids[b], true, true, true));
        }
    }
    // The incident's namespace, wired into the big graph.
    testkit::add_incident_graph(&mut g);
    for k in 0..6 {
        g.add_edge(Edge::new(&ids[k * 7], "shop/frontend", true, true, true));
        g.add_edge(Edge::new(
            "shop/checkout",
            &ids[k * 11 + 3],
            true,
            true,
            true,
        ));
    }
    g
}

async fn build(store: &dyn Store) {
    let started = Instant::now();
    let mut rng = StdRng::seed_from_u64(11);
    let from = AT_MS - DAY_MS;
    // Objects: every Deployment and Pod, then a day of changes.
    let ev = store.events();
    let mut objects = Vec::new();
    for i in 0..WORKLOADS {
        let (ns, w) = workload(i);
        let image = format!("registry.local/{ns}/{w}:1.0");
        objects.push(testkit::object(
            "Deployment",
            &ns,
            &w,
            1,
            from - 3_600_000,
            ChangeKind::Created,
            testkit::deployment(&ns, &w, &image, PODS as i64, &format!("{w}-config")),
        ));
        for p in 0..PODS {
            let name = pod(i, p);
            objects.push(testkit::object(
                "Pod",
                &ns,
                &name,
                2,
                from - 3_600_000,
                ChangeKind::Created,
                serde_json::json!({"kind": "Pod", "metadata": {"name": name, "namespace": ns},
                    "spec": {"nodeName": format!("node-{:03}", (i * PODS + p) % 300),
                             "containers": [{"name": "app", "image": image}]}}),
            ));
        }
        if objects.len() >= 2_000 {
            ev.write_objects(std::mem::take(&mut objects))
                .await
                .unwrap();
        }
    }
    for k in 0..4_000usize {
        let i = rng.random_range(0..WORKLOADS);
        let (ns, w) = workload(i);
        let at = from + (k as i64 * DAY_MS / 4_000);
        let image = format!("registry.local/{ns}/{w}:1.{}", k + 1);
        objects.push(testkit::object(
            "Deployment",
            &ns,
            &w,
            10 + k as u64,
            at,
            ChangeKind::Updated,
            testkit::deployment(&ns, &w, &image, PODS as i64, &format!("{w}-config")),
        ));
    }
    ev.write_objects(objects).await.unwrap();
    eprintln!("objects written in {:.1?}", started.elapsed());

    // The incident (its own small topology saves come first).
    testkit::write_incident(store).await;
    let topo = store.topology();
    let g = big_graph(&mut rng);
    let mut t = T0 + 3_600_000 + 60_000;
    while t <= AT_MS {
        topo.save_snapshot(
            CLUSTER,
            t,
            Snapshot {
                graph: g.clone(),
                stats: Default::default(),
            },
        )
        .await
        .unwrap();
        t += 600_000;
    }
    eprintln!("topology written in {:.1?}", started.elapsed());

    // Metrics of every pod.
    let mut batch = Vec::new();
    let mut samples = 0usize;
    for i in 0..WORKLOADS {
        for p in 0..PODS {
            for s in pod_series(i, p, from, &mut rng) {
                samples += s.samples.len();
                batch.push(s);
            }
        }
        if batch.len() >= 3_500 {
            store
                .write_samples(MetricBatch {
                    cluster: CLUSTER.into(),
                    series: std::mem::take(&mut batch),
                })
                .await
                .unwrap();
        }
    }
    store
        .write_samples(MetricBatch {
            cluster: CLUSTER.into(),
            series: batch,
        })
        .await
        .unwrap();
    store.flush().await.unwrap();
    store.maintain(AT_MS + 3 * 3_600_000).await.unwrap();
    eprintln!(
        "{samples} samples written, store built in {:.1?}",
        started.elapsed()
    );
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn query() -> SuspectsQuery {
    SuspectsQuery {
        cluster: None,
        namespace: "shop".into(),
        workload: "frontend".into(),
        at_ms: AT_MS,
        window_ms: DAY_MS,
        limit: 20,
    }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (dir, _tmp) = match std::env::var("KI_BENCH_DB") {
        Ok(d) => (std::path::PathBuf::from(d), None),
        Err(_) => {
            let t = tempfile::tempdir().unwrap();
            (t.path().to_path_buf(), Some(t))
        }
    };
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}/insight.db", dir.display());
    let marker = dir.join("built");
    let store: DynStore = rt.block_on(async {
        let s = kube_insight_store_sqlite::open(&url, testkit::options())
            .await
            .unwrap();
        if !marker.exists() {
            build(s.as_ref()).await;
            std::fs::write(&marker, b"ok").unwrap();
        }
        s
    });
    // Reads from a second instance: nothing of the writes cached.
    drop(store);
    let store: DynStore = rt.block_on(async {
        kube_insight_store_sqlite::open(&url, testkit::options())
            .await
            .unwrap()
    });
    let limits = Limits::default();
    let q = query();
    let mut times = Vec::new();
    let mut last = None;
    for _ in 0..100 {
        let t = Instant::now();
        let a = rt.block_on(suspects(store.as_ref(), &q, &limits)).unwrap();
        times.push(t.elapsed());
        last = Some(a);
    }
    let a = last.unwrap();
    let first = times[0];
    times.sort();
    let pct = |p: f64| times[((times.len() as f64 * p) as usize).min(times.len() - 1)];
    eprintln!(
        "suspects 24 h, 10k pods: cold {:.1?}, p50 {:.1?}, p99 {:.1?}, max {:.1?}; scope {} workloads, {} candidates, capped {:?}; top: {} {}/{} ({}); load average {}",
        first,
        pct(0.5),
        pct(0.99),
        times[times.len() - 1],
        a.scope.len(),
        a.candidates,
        a.capped,
        a.suspects.first().map(|s| s.category.name()).unwrap_or("-"),
        a.suspects.first().map(|s| s.kind.as_str()).unwrap_or("-"),
        a.suspects.first().map(|s| s.name.as_str()).unwrap_or("-"),
        a.onset.summary,
        load_average()
    );
    let mut g = c.benchmark_group("suspects");
    g.sample_size(20).measurement_time(Duration::from_secs(20));
    g.bench_function("24h_window_10k_pods", |b| {
        b.iter(|| rt.block_on(suspects(store.as_ref(), &q, &limits)).unwrap())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
