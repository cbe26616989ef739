#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use super::*;
use crate::labels::Labels;
use crate::sample::{Sample, TimeSeries, STALE_NAN};

const T0: i64 = 1_764_000_000_000;

/// A tiny reader of the fixture's exposition lines (no escapes in it).
fn parse_fixture(text: &str) -> Vec<(Labels, f64, i64)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (name, rest) = l.split_once('{').unwrap();
            let (labels, tail) = rest.split_once('}').unwrap();
            let mut pairs = vec![("__name__".to_string(), name.to_string())];
            for kv in labels.split("\",") {
                let (k, v) = kv.split_once("=\"").unwrap();
                pairs.push((k.to_string(), v.trim_end_matches('"').to_string()));
            }
            let mut it = tail.split_whitespace();
            let v: f64 = it.next().unwrap().parse().unwrap();
            let t: i64 = it.next().unwrap().parse().unwrap();
            (Labels::from_pairs(pairs), v, t)
        })
        .collect()
}

fn beyla_fixture() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/fixtures/beyla-network-federate-sample.txt"
    ))
    .expect("shared fixture beyla-network-federate-sample.txt")
}

fn ts(pairs: &[(&str, &str)], samples: &[(i64, f64)]) -> TimeSeries {
    TimeSeries::new(
        Labels::from_pairs(pairs.iter().copied()),
        samples.iter().map(|&(t, v)| Sample::new(t, v)).collect(),
    )
}

fn flow(
    prefix: &str,
    src: (&str, &str, &str),
    dst: (&str, &str, &str),
    samples: &[(i64, f64)],
) -> TimeSeries {
    let name = format!("{prefix}_network_flow_bytes_total");
    ts(
        &[
            ("__name__", &name),
            ("k8s_src_namespace", src.0),
            ("k8s_src_owner_name", src.1),
            ("k8s_src_owner_type", src.2),
            ("k8s_dst_namespace", dst.0),
            ("k8s_dst_owner_name", dst.1),
            ("k8s_dst_owner_type", dst.2),
        ],
        samples,
    )
}

fn sg(
    name: &str,
    client: (&str, &str),
    server: (&str, &str),
    extra: &[(&str, &str)],
    samples: &[(i64, f64)],
) -> TimeSeries {
    let mut pairs = vec![
        ("__name__", name),
        ("client_namespace", client.0),
        ("client", client.1),
        ("server_namespace", server.0),
        ("server", server.1),
        ("connection_type", ""),
        ("source", "beyla"),
    ];
    pairs.extend_from_slice(extra);
    ts(&pairs, samples)
}

#[test]
fn fixture_single_scrape_gives_undirected_edges_and_the_outside_node() {
    let series: Vec<TimeSeries> = parse_fixture(&beyla_fixture())
        .into_iter()
        .map(|(l, v, t)| TimeSeries::new(l, vec![Sample::new(t, v)]))
        .collect();
    assert_eq!(series.len(), 5);
    let snap = derive(&series);
    let ids: Vec<&str> = snap.graph.nodes.keys().map(Name::as_str).collect();
    assert_eq!(
        ids,
        [
            "kube-system/coredns",
            "outside",
            "shop/cartservice",
            "shop/checkout",
            "shop/frontend",
            "shop/redis-cart"
        ]
    );
    let edges: Vec<&str> = snap.graph.edges.keys().map(Name::as_str).collect();
    assert_eq!(
        edges,
        [
            "kube-system/coredns--shop/frontend",
            "outside--shop/checkout",
            "shop/cartservice--shop/frontend",
            "shop/cartservice--shop/redis-cart",
        ],
        "A→B and B→A are one undirected edge; empty labels are the outside node"
    );
    assert!(snap
        .graph
        .edges
        .values()
        .all(|e| !e.directed && e.flow && !e.requests));
    // One scrape: alive, but no rate yet.
    assert!(snap.stats.edges.values().all(|s| s.bytes_per_s.is_none()));
    assert_eq!(
        snap.graph.nodes["shop/redis-cart"].workload_kind,
        "StatefulSet"
    );
    assert_eq!(snap.graph.nodes["outside"].kind, NodeKind::Outside);
}

#[test]
fn fixture_two_scrapes_give_byte_rates_summed_over_both_directions() {
    let mut series = Vec::new();
    for (l, v, t) in parse_fixture(&beyla_fixture()) {
        // One minute later every counter grew by 60 kB (1 kB/s).
        series.push(TimeSeries::new(
            l,
            vec![Sample::new(t, v), Sample::new(t + 60_000, v + 60_000.0)],
        ));
    }
    let snap = derive(&series);
    let st = &snap.stats.edges["shop/cartservice--shop/frontend"];
    assert_eq!(st.bytes_per_s, Some(2000.0), "both directions summed");
    assert_eq!(
        snap.stats.edges["outside--shop/checkout"].bytes_per_s,
        Some(1000.0)
    );
    assert_eq!(st.requests_per_s, None);
}

#[test]
fn counter_resets_are_increase_not_negative() {
    let s = [
        Sample::new(0, 100.0),
        Sample::new(10_000, 200.0),
        Sample::new(20_000, 50.0),
        Sample::new(30_000, 150.0),
    ];
    assert_eq!(counter_increase(&s), Some((250.0, 30.0)));
    let snap = derive(&[flow(
        "beyla",
        ("a", "x", "Deployment"),
        ("a", "y", "Deployment"),
        &[(0, 100.0), (10_000, 200.0), (20_000, 50.0), (30_000, 150.0)],
    )]);
    let st = snap.stats.edges["a/x--a/y"];
    assert!((st.bytes_per_s.unwrap() - 250.0 / 30.0).abs() < 1e-9);
    // Stale markers are not values.
    let s = [
        Sample::new(0, 1.0),
        Sample::new(1_000, 3.0),
        Sample::new(2_000, STALE_NAN),
    ];
    assert_eq!(counter_increase(&s), Some((2.0, 1.0)));
}

#[test]
fn obi_and_beyla_prefixes_are_one_source() {
    let a = derive(&[flow(
        "beyla",
        ("a", "x", "Deployment"),
        ("a", "y", "Deployment"),
        &[(0, 0.0), (10_000, 1000.0)],
    )]);
    let b = derive(&[flow(
        "obi",
        ("a", "x", "Deployment"),
        ("a", "y", "Deployment"),
        &[(0, 0.0), (10_000, 1000.0)],
    )]);
    assert_eq!(a, b);
    let both = derive(&[
        flow(
            "beyla",
            ("a", "x", "Deployment"),
            ("a", "y", "Deployment"),
            &[(0, 0.0), (10_000, 1000.0)],
        ),
        flow(
            "obi",
            ("a", "y", "Deployment"),
            ("a", "x", "Deployment"),
            &[(0, 0.0), (10_000, 1000.0)],
        ),
    ]);
    assert_eq!(both.stats.edges["a/x--a/y"].bytes_per_s, Some(200.0));
    assert_eq!(both.graph.edges.len(), 1);
}

#[test]
fn idle_flow_is_no_edge_and_a_workload_comes_back() {
    let busy = |v0: f64, v1: f64| {
        vec![flow(
            "beyla",
            ("a", "x", "Deployment"),
            ("b", "db", "StatefulSet"),
            &[(0, v0), (15_000, v1)],
        )]
    };
    let s1 = derive(&busy(0.0, 1500.0));
    assert_eq!(s1.graph.edges.len(), 1);
    let s2 = derive(&busy(1500.0, 1500.0));
    assert!(
        s2.graph.edges.is_empty(),
        "no traffic in the window: no edge"
    );
    assert!(
        s2.graph.nodes.is_empty(),
        "a workload seen only in idle flows is gone"
    );
    let s3 = derive(&busy(1500.0, 3000.0));
    assert_eq!(s3.graph, s1.graph, "it comes back as it was");
    let gone = s1.graph.delta_to(&s2.graph);
    assert_eq!(gone.removed_edges, vec!["a/x--b/db".to_string()]);
    let back = s2.graph.delta_to(&s3.graph);
    assert_eq!(back.added_edges.len(), 1);
    let mut g = s1.graph.clone();
    g.apply(&gone);
    assert_eq!(g, s2.graph);
    g.apply(&back);
    assert_eq!(g, s3.graph);
}

#[test]
fn service_graph_gives_directed_edges_with_rate_errors_and_latency() {
    let c = ("shop", "frontend");
    let s = ("shop", "cart");
    let mut series = vec![
        sg(SG_TOTAL, c, s, &[], &[(0, 1000.0), (60_000, 1600.0)]),
        sg(SG_FAILED, c, s, &[], &[(0, 10.0), (60_000, 40.0)]),
    ];
    // 600 requests: 300 ≤ 10 ms, 540 ≤ 50 ms, 594 ≤ 100 ms, all ≤ 1 s.
    for (le, inc) in [
        ("0.01", 300.0),
        ("0.05", 540.0),
        ("0.1", 594.0),
        ("1", 600.0),
        ("+Inf", 600.0),
    ] {
        series.push(sg(
            SG_SERVER_BUCKET,
            c,
            s,
            &[("le", le)],
            &[(0, 5.0), (60_000, 5.0 + inc)],
        ));
    }
    let snap = derive(&series);
    let e = &snap.graph.edges["shop/frontend->shop/cart"];
    assert!(e.directed && e.requests && !e.flow);
    let st = snap.stats.edges[&e.id];
    assert_eq!(st.requests_per_s, Some(10.0));
    assert_eq!(st.error_ratio, Some(0.05));
    assert!((st.p50_ms.unwrap() - 10.0).abs() < 1e-9, "{st:?}");
    // rank 570 lies in (50 ms, 100 ms]: 50 + 50 × 30/54.
    assert!(
        (st.p95_ms.unwrap() - (50.0 + 50.0 * 30.0 / 54.0)).abs() < 1e-6,
        "{st:?}"
    );
    assert!((st.p99_ms.unwrap() - 100.0).abs() < 1e-6, "{st:?}");
    // The server's health arcs come from what it serves.
    let ns = snap.stats.nodes["shop/cart"];
    assert_eq!(ns.requests_per_s, Some(10.0));
    assert_eq!(ns.error_ratio, Some(0.05));
    assert!(!snap.stats.nodes.contains_key("shop/frontend"));
}

#[test]
fn both_sources_merge_into_one_directed_edge_with_traffic_and_health() {
    let series = vec![
        flow(
            "beyla",
            ("shop", "frontend", "Deployment"),
            ("shop", "cart", "Deployment"),
            &[(0, 0.0), (10_000, 10_000.0)],
        ),
        flow(
            "beyla",
            ("shop", "cart", "Deployment"),
            ("shop", "frontend", "Deployment"),
            &[(0, 0.0), (10_000, 5_000.0)],
        ),
        sg(
            SG_TOTAL,
            ("shop", "frontend"),
            ("shop", "cart"),
            &[],
            &[(0, 0.0), (10_000, 100.0)],
        ),
        sg(
            SG_FAILED,
            ("shop", "frontend"),
            ("shop", "cart"),
            &[],
            &[(0, 0.0), (10_000, 1.0)],
        ),
        // Only the flows know this one.
        flow(
            "beyla",
            ("shop", "cart", "Deployment"),
            ("shop", "redis", "StatefulSet"),
            &[(0, 0.0), (10_000, 100.0)],
        ),
    ];
    let snap = derive(&series);
    let ids: Vec<&str> = snap.graph.edges.keys().map(Name::as_str).collect();
    assert_eq!(ids, ["shop/cart--shop/redis", "shop/frontend->shop/cart"]);
    let e = &snap.graph.edges["shop/frontend->shop/cart"];
    assert!(e.directed && e.flow && e.requests);
    let st = snap.stats.edges[&e.id];
    assert_eq!(st.bytes_per_s, Some(1500.0));
    assert_eq!(st.requests_per_s, Some(10.0));
    assert_eq!(st.error_ratio, Some(0.01));
    assert_eq!(
        snap.graph.nodes["shop/cart"].workload_kind, "Deployment",
        "flows name the kind the service graph lacks"
    );
}

#[test]
fn service_graph_without_namespace_resolves_a_unique_workload_or_goes_outside() {
    let series = vec![
        flow(
            "beyla",
            ("shop", "api", "Deployment"),
            ("shop", "web", "Deployment"),
            &[(0, 0.0), (10_000, 10.0)],
        ),
        sg(
            SG_TOTAL,
            ("", "web"),
            ("", "api"),
            &[],
            &[(0, 0.0), (10_000, 10.0)],
        ),
        sg(
            SG_TOTAL,
            ("shop", "api"),
            ("", "postgres.example.com"),
            &[],
            &[(0, 0.0), (10_000, 10.0)],
        ),
    ];
    let snap = derive(&series);
    assert!(snap.graph.edges.contains_key("shop/web->shop/api"));
    assert!(snap.graph.edges.contains_key("shop/api->outside"));
}

fn owners_and_stats() -> Vec<TimeSeries> {
    let w = &[(0, 1.0), (30_000, 1.0)];
    vec![
        ts(
            &[
                ("__name__", KSM_POD_OWNER),
                ("namespace", "shop"),
                ("pod", "api-5f6d7c8b9-qwz7p"),
                ("owner_kind", "ReplicaSet"),
                ("owner_name", "api-5f6d7c8b9"),
            ],
            w,
        ),
        ts(
            &[
                ("__name__", KSM_POD_OWNER),
                ("namespace", "shop"),
                ("pod", "api-5f6d7c8b9-zzzzz"),
                ("owner_kind", "ReplicaSet"),
                ("owner_name", "api-5f6d7c8b9"),
            ],
            w,
        ),
        ts(
            &[
                ("__name__", KSM_RS_OWNER),
                ("namespace", "shop"),
                ("replicaset", "api-5f6d7c8b9"),
                ("owner_kind", "Deployment"),
                ("owner_name", "api"),
            ],
            w,
        ),
        ts(
            &[
                ("__name__", KSM_POD_OWNER),
                ("namespace", "default"),
                ("pod", "standalone-debug"),
                ("owner_kind", ""),
                ("owner_name", ""),
            ],
            w,
        ),
        // A deleted pod: its series ended with a stale marker.
        ts(
            &[
                ("__name__", KSM_POD_OWNER),
                ("namespace", "shop"),
                ("pod", "api-old"),
                ("owner_kind", "ReplicaSet"),
                ("owner_name", "api-5f6d7c8b9"),
            ],
            &[(0, 1.0), (15_000, STALE_NAN)],
        ),
        ts(
            &[
                ("__name__", CADVISOR_CPU),
                ("namespace", "shop"),
                ("pod", "api-5f6d7c8b9-qwz7p"),
                ("container", "api"),
            ],
            &[(0, 10.0), (30_000, 25.0)],
        ),
        ts(
            &[
                ("__name__", CADVISOR_CPU),
                ("namespace", "shop"),
                ("pod", "api-5f6d7c8b9-zzzzz"),
                ("container", "api"),
            ],
            &[(0, 10.0), (30_000, 13.0)],
        ),
        // The pod-level cgroup row (no container) would double count.
        ts(
            &[
                ("__name__", CADVISOR_CPU),
                ("namespace", "shop"),
                ("pod", "api-5f6d7c8b9-qwz7p"),
            ],
            &[(0, 10.0), (30_000, 100.0)],
        ),
        ts(
            &[
                ("__name__", CADVISOR_MEM),
                ("namespace", "shop"),
                ("pod", "api-5f6d7c8b9-qwz7p"),
                ("container", "api"),
            ],
            &[(0, 1e8), (30_000, 2e8)],
        ),
        ts(
            &[
                ("__name__", CADVISOR_MEM),
                ("namespace", "shop"),
                ("pod", "api-5f6d7c8b9-zzzzz"),
                ("container", "api"),
            ],
            &[(30_000, 5e7)],
        ),
        ts(
            &[
                ("__name__", KSM_RESTARTS),
                ("namespace", "shop"),
                ("pod", "api-5f6d7c8b9-zzzzz"),
                ("container", "api"),
            ],
            &[(0, 3.0), (30_000, 5.0)],
        ),
    ]
}

#[test]
fn owners_make_workloads_and_pods_with_summed_stats() {
    let snap = derive(&owners_and_stats());
    let ids: Vec<&str> = snap.graph.nodes.keys().map(Name::as_str).collect();
    assert_eq!(
        ids,
        [
            "default/standalone-debug",
            "shop/api",
            "shop/api/api-5f6d7c8b9-qwz7p",
            "shop/api/api-5f6d7c8b9-zzzzz"
        ]
    );
    assert_eq!(snap.graph.nodes["shop/api"].workload_kind, "Deployment");
    assert_eq!(
        snap.graph.nodes["default/standalone-debug"].workload_kind,
        "Pod"
    );
    assert_eq!(
        snap.graph.nodes["shop/api/api-5f6d7c8b9-zzzzz"]
            .parent
            .as_deref(),
        Some("shop/api")
    );
    let p = snap.stats.nodes["shop/api/api-5f6d7c8b9-qwz7p"];
    assert_eq!(p.cpu_cores, Some(0.5));
    assert_eq!(p.memory_bytes, Some(2e8));
    let w = snap.stats.nodes["shop/api"];
    assert!((w.cpu_cores.unwrap() - 0.6).abs() < 1e-9);
    assert_eq!(w.memory_bytes, Some(2.5e8));
    assert_eq!(w.restarts, Some(2.0));
    // Flows naming the ReplicaSet land on the Deployment.
    let mut series = owners_and_stats();
    series.push(flow(
        "beyla",
        ("shop", "api-5f6d7c8b9", "ReplicaSet"),
        ("", "", ""),
        &[(0, 0.0), (10_000, 10.0)],
    ));
    let snap = derive(&series);
    assert!(
        snap.graph.edges.contains_key("outside--shop/api"),
        "{:?}",
        snap.graph.edges.keys()
    );
}

fn sample_cluster() -> Snapshot {
    let mut series = owners_and_stats();
    let f = |a: (&str, &str), b: (&str, &str), bytes: f64| {
        flow(
            "beyla",
            (a.0, a.1, "Deployment"),
            (b.0, b.1, "Deployment"),
            &[(0, 0.0), (10_000, bytes * 10.0)],
        )
    };
    series.extend([
        f(("shop", "web"), ("shop", "api"), 5000.0),
        f(("shop", "api"), ("shop", "db"), 3000.0),
        f(("shop", "db"), ("backup", "agent"), 100.0),
        f(("backup", "agent"), ("", ""), 50.0),
        f(("kube-system", "coredns"), ("shop", "api"), 10.0),
    ]);
    derive(&series)
}

#[test]
fn grouping_by_namespace_and_pod() {
    let snap = sample_cluster();
    let ns = group(&snap, Group::Namespace);
    let ids: Vec<&str> = ns.graph.nodes.keys().map(Name::as_str).collect();
    assert_eq!(ids, ["backup", "default", "kube-system", "outside", "shop"]);
    let edges: Vec<&str> = ns.graph.edges.keys().map(Name::as_str).collect();
    assert_eq!(
        edges,
        ["backup--outside", "backup--shop", "kube-system--shop"],
        "edges inside a namespace vanish"
    );
    assert_eq!(ns.stats.edges["backup--shop"].bytes_per_s, Some(100.0));
    assert!(
        (ns.stats.nodes["shop"].cpu_cores.unwrap() - 0.6).abs() < 1e-9,
        "pods are not counted twice"
    );
    let pods = group(&snap, Group::Pod);
    assert!(
        pods.graph
            .edges
            .contains_key("shop/api->shop/api/api-5f6d7c8b9-qwz7p"),
        "ownership links"
    );
    let wl = group(&snap, Group::Workload);
    assert!(wl.graph.nodes.values().all(|n| n.kind != NodeKind::Pod));
}

#[test]
fn focus_walks_depth_hops_and_errors_name_the_focus() {
    let snap = sample_cluster();
    let v = view(
        &snap,
        &ViewOptions {
            focus: Some("api".into()),
            depth: 1,
            ..Default::default()
        },
    )
    .unwrap();
    let ids: Vec<&str> = v.snapshot.graph.nodes.keys().map(Name::as_str).collect();
    assert_eq!(
        ids,
        ["kube-system/coredns", "shop/api", "shop/db", "shop/web"]
    );
    assert_eq!(v.focus.as_deref(), Some("shop/api"));
    let v2 = view(
        &snap,
        &ViewOptions {
            focus: Some("shop/api".into()),
            depth: 2,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(v2.snapshot.graph.nodes.contains_key("backup/agent"));
    assert!(!v2.snapshot.graph.nodes.contains_key("outside"));
    let e = view(
        &snap,
        &ViewOptions {
            focus: Some("nope".into()),
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(e.to_string().contains("\"nope\""), "{e}");
    // Namespace filter keeps direct peers in other namespaces.
    let v = view(
        &snap,
        &ViewOptions {
            namespace: Some("backup".into()),
            ..Default::default()
        },
    )
    .unwrap();
    let ids: Vec<&str> = v.snapshot.graph.nodes.keys().map(Name::as_str).collect();
    assert_eq!(ids, ["backup/agent", "outside", "shop/db"]);
}

#[test]
fn cap_folds_the_rest_into_n_others_and_large_graphs_default_to_namespaces() {
    let mut series = Vec::new();
    for i in 0..50 {
        series.push(flow(
            "beyla",
            ("hub", "center", "Deployment"),
            (&format!("ns{}", i % 5), &format!("w{i}"), "Deployment"),
            &[(0, 0.0), (1_000, 10.0 + i as f64)],
        ));
    }
    let snap = derive(&series);
    let v = view(
        &snap,
        &ViewOptions {
            group: Some(Group::Workload),
            max_nodes: 10,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(v.snapshot.graph.nodes.len(), 10);
    assert_eq!(v.folded, 42);
    assert_eq!(v.snapshot.graph.nodes[OTHERS_ID].name, "42 others");
    assert!(
        v.snapshot.graph.nodes.contains_key("hub/center"),
        "the busiest stay"
    );
    assert!(v.snapshot.graph.edges.contains_key("hub/center--others"));
    let folded = v.snapshot.stats.edges["hub/center--others"]
        .bytes_per_s
        .unwrap();
    assert!(folded > 42.0 * 10.0, "folded traffic is summed: {folded}");
    let v = view(
        &snap,
        &ViewOptions {
            max_nodes: 10,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(v.group, Group::Namespace);
    assert_eq!(v.snapshot.graph.nodes.len(), 6);
}

#[test]
fn diff_and_overlay() {
    let before = sample_cluster();
    let mut series = owners_and_stats();
    let f = |a: (&str, &str), b: (&str, &str), bytes: f64| {
        flow(
            "beyla",
            (a.0, a.1, "Deployment"),
            (b.0, b.1, "Deployment"),
            &[(0, 0.0), (10_000, bytes * 10.0)],
        )
    };
    series.extend([
        f(("shop", "web"), ("shop", "api"), 5100.0), // unchanged (within the factor)
        f(("shop", "api"), ("shop", "db"), 30000.0), // traffic ×10
        f(("shop", "db"), ("backup", "agent"), 100.0),
        f(("kube-system", "coredns"), ("shop", "api"), 10.0),
        f(("shop", "api"), ("shop", "cache"), 10.0), // new
    ]);
    let after = derive(&series);
    let d = diff(&before, &after, &DiffOptions::default());
    assert_eq!(
        d.added_nodes
            .iter()
            .map(|n| n.id.as_str())
            .collect::<Vec<_>>(),
        ["shop/cache"]
    );
    assert_eq!(
        d.removed_nodes
            .iter()
            .map(|n| n.id.as_str())
            .collect::<Vec<_>>(),
        ["outside"]
    );
    assert_eq!(
        d.added_edges
            .iter()
            .map(|e| e.id.as_str())
            .collect::<Vec<_>>(),
        ["shop/api--shop/cache"]
    );
    assert_eq!(
        d.removed_edges
            .iter()
            .map(|e| e.id.as_str())
            .collect::<Vec<_>>(),
        ["backup/agent--outside"]
    );
    assert_eq!(d.changed_edges.len(), 1);
    assert_eq!(d.changed_edges[0].edge.id, "shop/api--shop/db");
    assert_eq!(d.changed_edges[0].reason, "traffic");
    let o = overlay(&before, &after, &d);
    assert_eq!(o.nodes["shop/cache"], Change::Added);
    assert_eq!(o.nodes["outside"], Change::Removed);
    assert_eq!(o.nodes["shop/web"], Change::Unchanged);
    assert_eq!(o.edges["backup/agent--outside"], Change::Removed);
    assert_eq!(o.edges["shop/api--shop/db"], Change::Changed);
    assert!(
        o.snapshot.graph.edges.contains_key("backup/agent--outside"),
        "the union"
    );
    let rows = node_rows(&o.snapshot, Some(&o.nodes));
    let cache = rows.iter().find(|r| r["id"] == "shop/cache").unwrap();
    assert_eq!(cache["color"], "#2ca02c");
    assert!(
        cache.get("arc__ok").is_none(),
        "colour and arcs are not combined"
    );
}

#[test]
fn frames_follow_the_node_graph_contract() {
    let snap = sample_cluster();
    let nodes = node_rows(&snap, None);
    let edges = edge_rows(&snap, None);
    let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    let k0 = keys(&nodes[0]);
    for n in &nodes {
        assert_eq!(keys(n), k0, "every row has the same fields");
        let arcs: f64 = ["arc__ok", "arc__err", "arc__nodata"]
            .iter()
            .map(|k| n[*k].as_f64().unwrap())
            .sum();
        assert!((arcs - 1.0).abs() < 1e-9, "arcs sum to 1: {n}");
        assert!(
            n.get("source").is_none(),
            "a nodes frame has no source field"
        );
    }
    for req in [
        "id",
        "title",
        "subtitle",
        "mainstat",
        "secondarystat",
        "detail__namespace",
    ] {
        assert!(k0.contains(&req.to_string()), "{req}");
    }
    let api = nodes.iter().find(|n| n["id"] == "shop/api").unwrap();
    assert_eq!(api["title"], "api");
    assert_eq!(api["subtitle"], "Deployment · shop");
    assert_eq!(api["mainstat"], 0.6);
    assert_eq!(api["detail__pods"], 2);
    let e = edges
        .iter()
        .find(|e| e["id"] == "shop/api--shop/web")
        .unwrap();
    assert_eq!(e["source"], "shop/api");
    assert_eq!(e["target"], "shop/web");
    assert_eq!(e["mainstat"], "5.0 KB/s");
    for e in &edges {
        let ks = keys(e);
        for req in ["id", "source", "target", "mainstat", "secondarystat"] {
            assert!(ks.contains(&req.to_string()));
        }
    }
}

#[test]
fn dot_output_escapes_and_marks_direction() {
    let mut snap = sample_cluster();
    snap.graph
        .add_node(Node::workload("weird", "a\"b", "Deployment"));
    let dot = to_dot(&snap, None);
    assert!(dot.starts_with("digraph topology {"));
    assert!(dot.contains("\"weird/a\\\"b\""), "{dot}");
    assert!(dot.contains("\"shop/api\" -> \"shop/web\""));
    assert!(dot.contains("dir=none"));
    assert!(dot.trim_end().ends_with('}'));
}

#[test]
fn histogram_quantile_matches_prometheus_edges() {
    let b = [(0.1, 10.0), (1.0, 20.0), (f64::INFINITY, 20.0)];
    assert_eq!(histogram_quantile(0.5, &b), Some(0.1));
    assert_eq!(histogram_quantile(0.75, &b), Some(0.55));
    assert_eq!(histogram_quantile(0.5, &[(f64::INFINITY, 0.0)]), None);
    assert_eq!(
        histogram_quantile(0.5, &[(1.0, 3.0)]),
        None,
        "no +Inf bucket"
    );
    let b = [(0.1, 0.0), (f64::INFINITY, 5.0)];
    assert_eq!(
        histogram_quantile(0.9, &b),
        Some(0.1),
        "in +Inf: the highest finite bound"
    );
}

#[test]
fn ids_are_unambiguous() {
    assert_eq!(edge_id("b", "a", false), "a--b");
    assert_eq!(edge_id("b", "a", true), "b->a");
    let e = Edge::new("z", "a", false, true, false);
    assert_eq!((e.source.as_str(), e.target.as_str()), ("a", "z"));
    assert_eq!(Node::pod("ns", "w", "Deployment", "p").id, "ns/w/p");
    assert_eq!(
        Group::parse("bogus").unwrap_err().to_string(),
        "invalid group \"bogus\": expected namespace, workload or pod"
    );
    let _ = T0;
}

// ---------------------------------------------------------------------------
// The fast views against the plain oracle (`reference.rs`), on random graphs

/// A small deterministic generator (xorshift*), so failures replay.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len())]
    }
}

/// A random cluster: workloads in a few namespaces (some sharing a name
/// across namespaces), pods (some whose workload is not a node), the
/// outside node, edges between any of them (pods too), stats on some.
fn random_snapshot(rng: &mut Rng) -> Snapshot {
    let mut s = Snapshot::default();
    let namespaces = ["shop", "data", "kube-system"];
    let names = ["web", "api", "db", "cache", "queue", "auth", "search"];
    let mut ids: Vec<String> = Vec::new();
    for _ in 0..(3 + rng.below(14)) {
        let ns = *rng.pick(&namespaces);
        let name = *rng.pick(&names);
        let kind = *rng.pick(&["Deployment", "StatefulSet", ""]);
        let w = Node::workload(ns, name, kind);
        let present = rng.chance(90);
        for p in 0..rng.below(3) {
            let pod = Node::pod(ns, name, kind, &format!("{name}-{p}{}", rng.below(9)));
            ids.push(pod.id.to_string());
            s.graph.add_node(pod);
        }
        if present {
            ids.push(w.id.to_string());
            s.graph.add_node(w);
        }
    }
    if rng.chance(60) {
        s.graph.add_node(Node::outside());
        ids.push(OUTSIDE_ID.into());
    }
    if ids.len() >= 2 {
        for _ in 0..rng.below(40) {
            let a = rng.pick(&ids).clone();
            let b = if rng.chance(10) {
                // An edge to something that is not a node.
                "ghost/thing".to_string()
            } else {
                rng.pick(&ids).clone()
            };
            if a == b {
                continue;
            }
            let directed = rng.chance(40);
            let e = Edge::new(&a, &b, directed, rng.chance(80), directed || rng.chance(20));
            if rng.chance(75) {
                let v = |rng: &mut Rng| (rng.below(4) > 0).then(|| rng.below(100_000) as f64 / 7.0);
                s.stats.edges.insert(
                    e.id.clone(),
                    EdgeStats {
                        bytes_per_s: v(rng),
                        requests_per_s: v(rng),
                        error_ratio: (rng.below(3) > 0).then(|| rng.below(100) as f64 / 100.0),
                        p50_ms: v(rng),
                        p95_ms: v(rng),
                        p99_ms: v(rng),
                    },
                );
            }
            s.graph.add_edge(e);
        }
    }
    for id in &ids {
        if rng.chance(70) {
            let v = |rng: &mut Rng| (rng.below(4) > 0).then(|| rng.below(10_000) as f64 / 3.0);
            s.stats.nodes.insert(
                id.as_str().into(),
                NodeStats {
                    cpu_cores: v(rng),
                    memory_bytes: v(rng),
                    restarts: v(rng),
                    requests_per_s: v(rng),
                    error_ratio: (rng.below(3) > 0).then(|| rng.below(100) as f64 / 100.0),
                },
            );
        }
    }
    // Stats of things that are not in the graph are ignored by both.
    if rng.chance(30) {
        s.stats
            .edges
            .insert("nowhere--else".into(), EdgeStats::default());
    }
    s
}

fn random_options(rng: &mut Rng, snap: &Snapshot) -> ViewOptions {
    let node_ids: Vec<&Name> = snap.graph.nodes.keys().collect();
    let focus = match rng.below(6) {
        0 | 1 => None,
        2 if !node_ids.is_empty() => Some(rng.pick(&node_ids).to_string()),
        3 if !node_ids.is_empty() => {
            let id = rng.pick(&node_ids);
            Some(snap.graph.nodes[id.as_str()].name.to_string())
        }
        4 => Some(
            rng.pick(&["shop", "data", "web", "api", "nothing"])
                .to_string(),
        ),
        _ => Some("shop/web".into()),
    };
    ViewOptions {
        namespace: rng.chance(25).then(|| {
            rng.pick(&["shop", "data", "kube-system", "none"])
                .to_string()
        }),
        focus,
        depth: rng.below(4),
        group: *rng.pick(&[
            None,
            None,
            Some(Group::Namespace),
            Some(Group::Workload),
            Some(Group::Pod),
        ]),
        max_nodes: *rng.pick(&[2, 3, 5, 8, 300]),
    }
}

#[test]
fn views_cap_and_diff_match_the_plain_oracle_on_random_graphs() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut compared = (0, 0, 0);
    for round in 0..3_000 {
        let a = random_snapshot(&mut rng);
        let opts = random_options(&mut rng, &a);
        let fast = view(&a, &opts);
        let plain = reference::view_parts(&a.graph, &a.stats, &opts);
        assert_eq!(fast, plain, "round {round}: {opts:?}\n{a:#?}");
        compared.0 += usize::from(fast.is_ok());
        for g in [Group::Namespace, Group::Workload, Group::Pod] {
            assert_eq!(
                group(&a, g),
                reference::group_parts(&a.graph, &a.stats, g),
                "round {round}: {g:?}"
            );
        }
        let b = random_snapshot(&mut rng);
        let d = diff(&a, &b, &DiffOptions::default());
        assert_eq!(
            d,
            reference::diff(&a, &b, &DiffOptions::default()),
            "round {round}"
        );
        compared.1 += d.added_edges.len() + d.changed_edges.len();
        let delta = a.graph.delta_to(&b.graph);
        assert_eq!(
            delta,
            reference::delta_to(&a.graph, &b.graph),
            "round {round}"
        );
        let mut c = a.graph.clone();
        c.apply(&delta);
        assert_eq!(
            c, b.graph,
            "round {round}: the delta rebuilds the later graph"
        );
        let first: Vec<String> = a
            .graph
            .nodes
            .keys()
            .rev()
            .take(2)
            .map(|k| k.to_string())
            .collect();
        let max = 2 + rng.below(6);
        let (x, y) = (
            cap(a.clone(), max, &first),
            reference::cap(a.clone(), max, &first),
        );
        compared.2 += x.1;
        assert_eq!(x, y, "round {round}: cap {max}");
    }
    // The rounds exercised what they claim to.
    assert!(
        compared.0 > 1_000 && compared.1 > 1_000 && compared.2 > 1_000,
        "{compared:?}"
    );
}

#[test]
fn names_compare_hash_and_print_as_their_text() {
    let a = Name::from("shop/web");
    let b = Name::from(String::from("shop/web"));
    assert_eq!(a, b);
    assert!(!Name::ptr_eq(&a, &b));
    assert!(Name::ptr_eq(&a, &a.clone()));
    assert_eq!(a, "shop/web");
    assert_eq!("shop/web", a);
    assert_eq!(a, String::from("shop/web"));
    let (x, y) = (Name::from("a"), Name::from("b/c"));
    assert!(x < y);
    // Maps keyed by names are looked up by text.
    let m: BTreeMap<Name, u32> = [(a.clone(), 1)].into_iter().collect();
    assert_eq!(m.get("shop/web"), Some(&1));
    let h: FastMap<Name, u32> = [(a.clone(), 2)].into_iter().collect();
    assert_eq!(h.get("shop/web"), Some(&2));
    // Width and alignment in tables.
    assert_eq!(format!("[{:<10}]", a), "[shop/web  ]");
    assert_eq!(format!("{a:?}"), "\"shop/web\"");
    assert_eq!(
        serde_json::to_value(&a).unwrap(),
        serde_json::json!("shop/web")
    );
    let back: Name = serde_json::from_value(serde_json::json!("x/y")).unwrap();
    assert_eq!(back, "x/y");
    assert_eq!(Name::from_fmt(format_args!("{}/{}", "ns", "w")), "ns/w");
    assert!(Name::default().is_empty());
    let mut i = Interner::new();
    let x = i.intern("shop");
    assert!(Name::ptr_eq(&x, &i.intern("shop")));
    i.adopt(&a);
    assert!(Name::ptr_eq(&a, &i.intern("shop/web")));
    assert_eq!(i.len(), 2);
    assert_eq!(fx_hash("shop"), fx_hash(&String::from("shop")));
}

#[test]
fn sorted_lookup_answers_in_and_out_of_order_in_both_modes() {
    let map: BTreeMap<Name, u32> = (0..100u32)
        .map(|i| (Name::from(format!("k{:03}", i * 2)), i))
        .collect();
    for expected in [1, 1_000] {
        // In order, with misses between hits.
        let mut l = SortedLookup::new(&map, expected);
        for i in 0..200u32 {
            let want = (i % 2 == 0).then_some(i / 2);
            assert_eq!(l.get(&format!("k{i:03}")).copied(), want, "k{i:03}");
        }
        assert_eq!(l.get("zzz"), None);
        // Going back (and asking again) still answers right.
        assert_eq!(l.get("k010").copied(), Some(5));
        assert_eq!(l.get("k010").copied(), Some(5));
        assert_eq!(l.get("k000").copied(), Some(0));
        assert_eq!(l.get("a").copied(), None);
    }
    let empty: BTreeMap<Name, u32> = BTreeMap::new();
    assert_eq!(SortedLookup::new(&empty, 5).get("x"), None);
}

#[test]
fn merge_join_walks_both_sides_once() {
    let a: BTreeMap<Name, u8> = ["a", "c", "d"]
        .iter()
        .map(|k| (Name::from(*k), 1))
        .collect();
    let b: BTreeMap<Name, u8> = ["b", "c", "e"]
        .iter()
        .map(|k| (Name::from(*k), 2))
        .collect();
    let got: Vec<String> = merge_join(a.iter(), b.iter())
        .map(|j| match j {
            Joined::Left(k, _) => format!("<{k}"),
            Joined::Right(k, _) => format!(">{k}"),
            Joined::Both(k, _, _) => format!("={k}"),
        })
        .collect();
    assert_eq!(got, ["<a", ">b", "=c", "<d", ">e"]);
}
