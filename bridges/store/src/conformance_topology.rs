//! The topology cases of the storage conformance suite: written once, run
//! by every [`TopologyStore`] backend, which must all give the same answers.
//!
//! [`topology_store_conformance_suite!`](crate::topology_store_conformance_suite)
//! expands to one `#[tokio::test]` per case; the factory gets the case's
//! [`StoreOptions`] and returns the store and a guard kept alive for the test:
//!
//! ```ignore
//! kube_insight_store::topology_store_conformance_suite!(|options: StoreOptions| async move {
//!     let dir = tempfile::tempdir().unwrap();
//!     let store: DynTopologyStore = Arc::new(open_my_backend(dir.path(), options).await.unwrap());
//!     (store, dir)
//! });
//! ```
//!
//! Backends may choose their keyframe policy; the cases only rely on the
//! contract: the first save of a cluster writes a keyframe, unchanged
//! structure writes no delta, stats keep the first save of each minute at
//! 1 % resolution.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic is a failing case

use crate::topology::{DependencyChangeKind, DependencyQuery, DynTopologyStore, STATS_MAX_AGE_MS};
use crate::{Error, StoreOptions};
use kube_insight_core::topology::{Edge, EdgeStats, Graph, Node, NodeStats, Snapshot, Stats};
use kube_insight_core::TimeRange;

pub const CASES: &[&str] = &[
    "topo_before_first_snapshot",
    "topo_exactly_on_keyframe",
    "topo_between_deltas",
    "topo_unchanged_graph_costs_nothing",
    "topo_stats_one_minute_resolution",
    "topo_after_retention",
    "topo_dependency_changes",
    "topo_clusters_are_separate",
    "topo_retry_and_out_of_order",
    "topo_reads_in_any_order",
];

const T0: i64 = 1_764_000_000_000; // on a whole minute
const DAY_MS: i64 = 86_400_000;

pub fn options_for(case: &str) -> StoreOptions {
    let mut o = StoreOptions::default();
    if case == "topo_after_retention" {
        o.retention.topology = std::time::Duration::from_secs(86_400);
    }
    o
}

#[macro_export]
macro_rules! topology_store_conformance_suite {
    // A backend that needs a server: the factory takes the case's name and
    // returns `None` (after saying why) when there is none; the cases skip.
    (optional $factory:expr) => {
        $crate::topology_store_conformance_suite!(@list optional $factory);
    };
    (@list $mode:ident $factory:expr) => {
        $crate::topology_store_conformance_suite!(@$mode $factory;
            topo_before_first_snapshot,
            topo_exactly_on_keyframe,
            topo_between_deltas,
            topo_unchanged_graph_costs_nothing,
            topo_stats_one_minute_resolution,
            topo_after_retention,
            topo_dependency_changes,
            topo_clusters_are_separate,
            topo_retry_and_out_of_order,
            topo_reads_in_any_order,
        );
    };
    (@optional $factory:expr; $($case:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let options = $crate::conformance_topology::options_for(stringify!($case));
                let Some((store, _guard)) = ($factory)(stringify!($case), options).await else {
                    return;
                };
                $crate::conformance_topology::$case(store).await;
            }
        )+
    };
    (@cases $factory:expr; $($case:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let options = $crate::conformance_topology::options_for(stringify!($case));
                let (store, _guard) = ($factory)(options).await;
                $crate::conformance_topology::$case(store).await;
            }
        )+
    };
    ($factory:expr) => {
        $crate::topology_store_conformance_suite!(@list cases $factory);
    };
}

/// A chain of `n` workloads in `ns`, each talking to the next, plus the
/// outside talking to the first; `version` changes which edges exist.
pub fn sample(version: usize) -> Snapshot {
    let mut s = Snapshot::default();
    let n = 6 + version % 4;
    for i in 0..n {
        s.graph
            .add_node(Node::workload("shop", &format!("w{i}"), "Deployment"));
        s.graph.add_node(Node::pod(
            "shop",
            &format!("w{i}"),
            "Deployment",
            &format!("w{i}-pod"),
        ));
        s.stats.nodes.insert(
            format!("shop/w{i}").into(),
            NodeStats {
                cpu_cores: Some(0.1 * (i + 1) as f64 + version as f64 * 0.01),
                memory_bytes: Some(1e8 * (i + 1) as f64),
                restarts: Some((version % 3) as f64),
                requests_per_s: None,
                error_ratio: None,
            },
        );
    }
    s.graph.add_node(Node::outside());
    for i in 1..n {
        if (i + version).is_multiple_of(5) {
            continue;
        }
        let e = Edge::new(
            &format!("shop/w{}", i - 1),
            &format!("shop/w{i}"),
            i % 2 == 0,
            true,
            i % 2 == 0,
        );
        s.stats.edges.insert(
            e.id.clone(),
            EdgeStats {
                bytes_per_s: Some(1000.0 * i as f64 * (1.0 + version as f64)),
                requests_per_s: (i % 2 == 0).then_some(5.0 * i as f64),
                error_ratio: (i % 2 == 0).then_some(0.02),
                p50_ms: (i % 2 == 0).then_some(12.0),
                p95_ms: (i % 2 == 0).then_some(80.0),
                p99_ms: None,
            },
        );
        s.graph.add_edge(e);
    }
    let e = Edge::new("outside", "shop/w0", false, true, false);
    s.stats.edges.insert(
        e.id.clone(),
        EdgeStats {
            bytes_per_s: Some(42.0),
            ..Default::default()
        },
    );
    s.graph.add_edge(e);
    s
}

fn close(a: Option<f64>, b: Option<f64>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => (a - b).abs() <= 0.01 * b.abs() + 1e-3,
        (None, None) => true,
        _ => false,
    }
}

fn assert_stats_close(got: &Stats, want: &Stats, what: &str) {
    assert_eq!(
        got.nodes.keys().collect::<Vec<_>>(),
        want.nodes.keys().collect::<Vec<_>>(),
        "{what}: node stats keys"
    );
    assert_eq!(
        got.edges.keys().collect::<Vec<_>>(),
        want.edges.keys().collect::<Vec<_>>(),
        "{what}: edge stats keys"
    );
    for (id, w) in &want.nodes {
        for (x, y) in got.nodes[id].to_array().iter().zip(w.to_array()) {
            assert!(close(*x, y), "{what}: node {id}: {x:?} vs {y:?}");
        }
    }
    for (id, w) in &want.edges {
        for (x, y) in got.edges[id].to_array().iter().zip(w.to_array()) {
            assert!(close(*x, y), "{what}: edge {id}: {x:?} vs {y:?}");
        }
    }
}

async fn graph(store: &DynTopologyStore, cluster: &str, t: i64) -> Option<Graph> {
    store
        .graph_at(cluster, t)
        .await
        .unwrap()
        .map(|g| (*g.graph).clone())
}

pub async fn topo_before_first_snapshot(store: DynTopologyStore) {
    assert!(graph(&store, "prod", T0).await.is_none(), "empty store");
    store.save_snapshot("prod", T0, sample(0)).await.unwrap();
    assert!(
        graph(&store, "prod", T0 - 1).await.is_none(),
        "before the first snapshot"
    );
    assert!(store.stats_at("prod", T0 - 1).await.unwrap().is_none());
    assert!(store.snapshot_at("prod", T0 - 1).await.unwrap().is_none());
    assert!(
        graph(&store, "other", T0 + 1).await.is_none(),
        "unknown cluster"
    );
}

pub async fn topo_exactly_on_keyframe(store: DynTopologyStore) {
    let s0 = sample(0);
    let out = store.save_snapshot("prod", T0, s0.clone()).await.unwrap();
    assert!(out.keyframe, "the first save of a cluster is a keyframe");
    assert!(out.stats_written);
    let g = store.graph_at("prod", T0).await.unwrap().unwrap();
    assert_eq!(*g.graph, s0.graph);
    assert_eq!((g.version_ms, g.first_ms, g.last_ms), (T0, T0, T0));
    let st = store.stats_at("prod", T0).await.unwrap().unwrap();
    assert_eq!(st.minute_ms, T0);
    assert_stats_close(&st.stats, &s0.stats, "stats on the keyframe");
    // After the last save the graph is the last one known.
    assert_eq!(graph(&store, "prod", T0 + DAY_MS).await.unwrap(), s0.graph);
    assert!(
        store
            .stats_at("prod", T0 + STATS_MAX_AGE_MS + 1)
            .await
            .unwrap()
            .is_none(),
        "stale stats are not the stats of that moment"
    );
}

pub async fn topo_between_deltas(store: DynTopologyStore) {
    // 40 saves 15 s apart, the structure changing on most of them (enough
    // for any keyframe policy to put keyframes in between).
    let mut saved: Vec<(i64, Snapshot)> = Vec::new();
    let mut keyframes = 0;
    for k in 0..40usize {
        let t = T0 + k as i64 * 15_000;
        let s = sample(k / 2);
        let out = store.save_snapshot("prod", t, s.clone()).await.unwrap();
        keyframes += usize::from(out.keyframe);
        saved.push((t, s));
    }
    assert!(keyframes >= 1);
    for (i, (t, s)) in saved.iter().enumerate() {
        assert_eq!(
            graph(&store, "prod", *t).await.unwrap(),
            s.graph,
            "at save {i}"
        );
        assert_eq!(
            graph(&store, "prod", t + 7_000).await.unwrap(),
            s.graph,
            "between saves {i} and {}",
            i + 1
        );
        if i > 0 {
            assert_eq!(
                graph(&store, "prod", t - 1).await.unwrap(),
                saved[i - 1].1.graph,
                "just before save {i}"
            );
        }
    }
    // Version: the save that produced the structure.
    let g = store
        .graph_at("prod", saved[3].0 + 1)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        g.version_ms, saved[2].0,
        "saves 2 and 3 have the same structure"
    );
}

pub async fn topo_unchanged_graph_costs_nothing(store: DynTopologyStore) {
    let s = sample(1);
    let first = store.save_snapshot("prod", T0, s.clone()).await.unwrap();
    assert!(first.bytes_written > 0);
    let (mut bytes, mut big_rows) = (0, 0);
    for k in 1..=240 {
        let out = store
            .save_snapshot("prod", T0 + k * 15_000, s.clone())
            .await
            .unwrap();
        assert!(!out.structure_changed && !out.keyframe, "save {k}: {out:?}");
        assert_eq!(out.dependency_changes, 0);
        if out.stats_written {
            // One row per minute: about a byte per unchanged entity (a
            // backend may restart its stats chain every 15 minutes).
            assert!(
                out.bytes_written <= first.bytes_written,
                "save {k}: {} bytes",
                out.bytes_written
            );
            big_rows += usize::from(out.bytes_written > 64);
        } else {
            assert_eq!(
                out.bytes_written, 0,
                "save {k}: an unchanged save within a minute writes nothing"
            );
        }
        bytes += out.bytes_written;
    }
    assert!(
        big_rows <= 4,
        "{big_rows} stats rows of an unchanged hour cost more than 64 bytes"
    );
    assert!(
        bytes <= 60 * 64 + 4 * first.bytes_written,
        "an unchanged hour cost {bytes} bytes"
    );
    let g = store
        .graph_at("prod", T0 + 3_600_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(g.version_ms, T0);
    assert_eq!(g.last_ms, T0 + 3_600_000);
}

pub async fn topo_stats_one_minute_resolution(store: DynTopologyStore) {
    // Saves every 15 s for 5 minutes, stats differing on every save.
    let mut firsts: Vec<(i64, Stats)> = Vec::new();
    for k in 0..20i64 {
        let t = T0 + k * 15_000;
        let mut s = sample(0);
        for e in s.stats.edges.values_mut() {
            e.bytes_per_s = e.bytes_per_s.map(|b| b * (1.0 + k as f64));
        }
        store.save_snapshot("prod", t, s.clone()).await.unwrap();
        if k % 4 == 0 {
            firsts.push((t, s.stats.clone()));
        }
    }
    for (m, want) in &firsts {
        for dt in [0, 14_999, 59_999] {
            let got = store.stats_at("prod", m + dt).await.unwrap().unwrap();
            assert_eq!(got.minute_ms, *m);
            assert_stats_close(&got.stats, want, &format!("minute {m} + {dt} ms"));
        }
    }
    // Stats and graph together.
    let (snap, g, st) = store
        .snapshot_at("prod", T0 + 61_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(snap.graph, *g.graph);
    assert_eq!(st.unwrap().minute_ms, T0 + 60_000);
}

pub async fn topo_after_retention(store: DynTopologyStore) {
    // Three days, a change every hour, stats every hour (each a new chain).
    let mut saved = Vec::new();
    for h in 0..72i64 {
        let t = T0 + h * 3_600_000;
        let s = sample(h as usize);
        store.save_snapshot("prod", t, s.clone()).await.unwrap();
        saved.push((t, s));
    }
    let now = T0 + 72 * 3_600_000;
    let before_changes = store
        .dependency_changes(&DependencyQuery {
            cluster: None,
            range: TimeRange::new(T0, now).unwrap(),
            limit: 100_000,
        })
        .await
        .unwrap();
    assert!(!before_changes.is_empty());
    let m = store.maintain_topology(now).await.unwrap();
    assert!(m.rows_expired > 0, "{m:?}");
    assert!(
        graph(&store, "prod", T0).await.is_none(),
        "three days ago is past the 1-day retention"
    );
    assert!(store.stats_at("prod", T0).await.unwrap().is_none());
    // Everything within the retention still reconstructs exactly.
    for (t, s) in saved.iter().filter(|(t, _)| *t >= now - DAY_MS) {
        assert_eq!(graph(&store, "prod", *t).await.unwrap(), s.graph, "at {t}");
        let st = store.stats_at("prod", *t).await.unwrap().unwrap();
        assert_stats_close(&st.stats, &s.stats, "after retention");
    }
    let after = store
        .dependency_changes(&DependencyQuery {
            cluster: None,
            range: TimeRange::new(T0, now).unwrap(),
            limit: 100_000,
        })
        .await
        .unwrap();
    assert!(after.iter().all(|c| c.at_ms >= now - DAY_MS));
    // Saving continues after retention.
    store
        .save_snapshot("prod", now + 1000, sample(0))
        .await
        .unwrap();
    assert_eq!(
        graph(&store, "prod", now + 1000).await.unwrap(),
        sample(0).graph
    );
    let c = store.topology_clusters().await.unwrap();
    assert_eq!(c.len(), 1);
    assert!(
        c[0].first_ms >= now - DAY_MS - 6 * 3_600_000 && c[0].first_ms <= now - DAY_MS,
        "{c:?}"
    );
}

pub async fn topo_dependency_changes(store: DynTopologyStore) {
    let mut s = Snapshot::default();
    for w in ["a", "b", "c"] {
        s.graph.add_node(Node::workload("ns", w, "Deployment"));
    }
    s.graph
        .add_edge(Edge::new("ns/a", "ns/b", false, true, false));
    let first = store.save_snapshot("prod", T0, s.clone()).await.unwrap();
    assert_eq!(
        first.dependency_changes, 0,
        "the first save is the baseline"
    );
    // b→c appears, then a–b disappears, then a–b comes back.
    let mut s2 = s.clone();
    s2.graph
        .add_edge(Edge::new("ns/b", "ns/c", true, true, true));
    assert_eq!(
        store
            .save_snapshot("prod", T0 + 15_000, s2.clone())
            .await
            .unwrap()
            .dependency_changes,
        1
    );
    let mut s3 = s2.clone();
    s3.graph.edges.remove("ns/a--ns/b");
    store
        .save_snapshot("prod", T0 + 30_000, s3.clone())
        .await
        .unwrap();
    store
        .save_snapshot("prod", T0 + 45_000, s2.clone())
        .await
        .unwrap();
    // A change of attributes only (flows now also see b→c) is no dependency change.
    let mut s4 = s2.clone();
    s4.graph
        .add_edge(Edge::new("ns/b", "ns/c", true, false, true));
    assert_eq!(
        store
            .save_snapshot("prod", T0 + 60_000, s4.clone())
            .await
            .unwrap()
            .dependency_changes,
        0
    );
    let all = store
        .dependency_changes(&DependencyQuery {
            cluster: Some("prod".into()),
            range: TimeRange::new(T0, T0 + 60_000).unwrap(),
            limit: 100,
        })
        .await
        .unwrap();
    let got: Vec<(i64, DependencyChangeKind, &str)> = all
        .iter()
        .map(|c| (c.at_ms - T0, c.kind, c.edge_id.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (15_000, DependencyChangeKind::Appeared, "ns/b->ns/c"),
            (30_000, DependencyChangeKind::Lost, "ns/a--ns/b"),
            (45_000, DependencyChangeKind::Appeared, "ns/a--ns/b"),
        ]
    );
    assert_eq!(
        (
            all[0].source.as_str(),
            all[0].target.as_str(),
            all[0].directed
        ),
        ("ns/b", "ns/c", true)
    );
    let some = store
        .dependency_changes(&DependencyQuery {
            cluster: None,
            range: TimeRange::new(T0 + 20_000, T0 + 40_000).unwrap(),
            limit: 100,
        })
        .await
        .unwrap();
    assert_eq!(some.len(), 1);
    let other = store
        .dependency_changes(&DependencyQuery {
            cluster: Some("other".into()),
            range: TimeRange::new(T0, T0 + 60_000).unwrap(),
            limit: 100,
        })
        .await
        .unwrap();
    assert!(other.is_empty());
    let e = store
        .dependency_changes(&DependencyQuery {
            cluster: None,
            range: TimeRange::new(T0, T0 + 60_000).unwrap(),
            limit: 2,
        })
        .await
        .unwrap_err();
    assert!(matches!(e, Error::LimitExceeded { .. }), "{e}");
}

pub async fn topo_clusters_are_separate(store: DynTopologyStore) {
    store.save_snapshot("a", T0, sample(0)).await.unwrap();
    store
        .save_snapshot("b", T0 + 1000, sample(1))
        .await
        .unwrap();
    store
        .save_snapshot("a", T0 + 2000, sample(2))
        .await
        .unwrap();
    assert_eq!(
        graph(&store, "a", T0 + 1500).await.unwrap(),
        sample(0).graph
    );
    assert_eq!(
        graph(&store, "b", T0 + 5000).await.unwrap(),
        sample(1).graph
    );
    assert_eq!(
        graph(&store, "a", T0 + 5000).await.unwrap(),
        sample(2).graph
    );
    assert!(graph(&store, "b", T0 + 500).await.is_none());
    let c = store.topology_clusters().await.unwrap();
    let names: Vec<(&str, i64, i64)> = c
        .iter()
        .map(|c| (c.cluster.as_str(), c.first_ms - T0, c.last_ms - T0))
        .collect();
    assert_eq!(names, [("a", 0, 2000), ("b", 1000, 1000)]);
}

pub async fn topo_retry_and_out_of_order(store: DynTopologyStore) {
    store.save_snapshot("prod", T0, sample(0)).await.unwrap();
    store
        .save_snapshot("prod", T0 + 15_000, sample(1))
        .await
        .unwrap();
    let retry = store
        .save_snapshot("prod", T0 + 15_000, sample(1))
        .await
        .unwrap();
    assert_eq!(
        retry,
        Default::default(),
        "a retry of the last save is a no-op"
    );
    let e = store
        .save_snapshot("prod", T0 + 1, sample(2))
        .await
        .unwrap_err();
    assert!(
        matches!(e, Error::InvalidQuery(_)) && e.to_string().contains("older than"),
        "{e}"
    );
    assert_eq!(
        graph(&store, "prod", T0 + 20_000).await.unwrap(),
        sample(1).graph
    );
}

/// Saves 120 snapshots (every 15 s, the structure changing at most of
/// them), then reads moments in a scrambled order, again and again, while
/// holding some answers: every read is that moment's graph, version and
/// stats, whatever was read (or cached) before. `reader` may be `writer`
/// or another instance on the same storage.
pub async fn check_reads_in_any_order(writer: &DynTopologyStore, reader: &DynTopologyStore) {
    let saved: Vec<(i64, Snapshot)> = (0..120usize)
        .map(|k| (T0 + k as i64 * 15_000, sample(k / 3 + k % 2)))
        .collect();
    let mut versions = Vec::new();
    for (i, (t, snap)) in saved.iter().enumerate() {
        writer
            .save_snapshot("prod", *t, snap.clone())
            .await
            .unwrap();
        let changed = i == 0 || saved[i - 1].1.graph != snap.graph;
        versions.push(if changed { *t } else { versions[i - 1] });
    }
    let mut held = Vec::new();
    let mut i = 7usize;
    for round in 0..400usize {
        i = (i * 37 + 11 + round) % saved.len();
        let (t, snap) = &saved[i];
        // Anywhere within the 15 s the save stands for.
        let at = t + (round % 3) as i64 * 6_000;
        let g = reader.graph_at("prod", at).await.unwrap().unwrap();
        assert_eq!(*g.graph, snap.graph, "round {round}: graph at {at}");
        assert_eq!(g.version_ms, versions[i], "round {round}: version at {at}");
        // Stats: those of the first save of the minute (saves start on a minute).
        let minute = at - at.rem_euclid(60_000);
        let first = usize::try_from((minute - T0) / 15_000).unwrap();
        let st = reader.stats_at("prod", at).await.unwrap().unwrap();
        assert_eq!(st.minute_ms, minute, "round {round}");
        assert_stats_close(
            &st.stats,
            &saved[first].1.stats,
            &format!("round {round}: stats at {at}"),
        );
        if round % 5 == 0 {
            held.push((g, st));
        }
        if held.len() > 6 {
            held.remove(0);
        }
    }
}

pub async fn topo_reads_in_any_order(store: DynTopologyStore) {
    check_reads_in_any_order(&store, &store).await;
}
