//! A small incident written through the store traits, shared by the
//! store-level test, the API's HTTP test and the benchmark (feature
//! `testkit`).
//!
//! Namespace `shop`: `frontend → checkout → payment` (service graph), every
//! pod scraped every 30 s with Beyla's HTTP server metrics. At
//! [`CHANGE_MS`] `payment`'s image goes from `registry.local/shop/payment:2.1`
//! to `:2.2`; its new pod fails 30 % of requests from then on (the old pods
//! keep their 0.2 %), and the callers' errors follow (checkout 20 %,
//! frontend 10 %). Distractors: a ConfigMap that `frontend` references,
//! changed 50 min earlier with no effect; the node `node-a` (where
//! `frontend` runs) reporting `MemoryPressure` 30 min earlier; a rollout of
//! `ads` in namespace `other` (not connected) 2 min before the change.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test support: a panic is a failed setup

use kube_insight_core::event::ChangeKind;
use kube_insight_core::topology::{Edge, Graph, Node, Snapshot};
use kube_insight_core::{Labels, Sample, TimeSeries};
use kube_insight_store::{MetricBatch, ObjectWrite, Store};
use serde_json::{json, Value};

/// Start of the story (2024-05-31T16:00:00Z).
pub const T0: i64 = 1_717_171_200_000;
/// The bad image change.
pub const CHANGE_MS: i64 = T0 + 90 * 60_000;
/// When the symptom is looked at.
pub const AT_MS: i64 = T0 + 120 * 60_000;
pub const CLUSTER: &str = "prod";
const STEP: i64 = 30_000;

pub fn deployment(ns: &str, name: &str, image: &str, replicas: i64, config: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns, "uid": format!("uid-{ns}-{name}")},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "volumes": [{"name": "config", "configMap": {"name": config}}],
                    "containers": [{"name": "app", "image": image}]
                }
            }
        },
        "status": {"replicas": replicas}
    })
}

pub fn object(
    kind: &str,
    ns: &str,
    name: &str,
    rv: u64,
    at_ms: i64,
    change: ChangeKind,
    obj: Value,
) -> ObjectWrite {
    ObjectWrite {
        cluster: CLUSTER.into(),
        group: if kind == "Deployment" { "apps" } else { "" }.into(),
        kind: kind.into(),
        namespace: ns.into(),
        name: name.into(),
        uid: format!("uid-{kind}-{ns}-{name}"),
        resource_version: rv.to_string(),
        at_ms,
        change,
        object: obj,
        managers: Vec::new(),
        gitops: None,
        gap: None,
    }
}

/// One pod's traffic: `rps` requests a second from `from_ms` to `to_ms`,
/// a sample every `step_ms`.
#[derive(Debug, Clone, Copy)]
pub struct PodTraffic<'a> {
    pub ns: &'a str,
    pub workload: &'a str,
    pub pod: &'a str,
    pub from_ms: i64,
    pub to_ms: i64,
    pub step_ms: i64,
    pub rps: f64,
}

/// Beyla counters of one pod, with an error ratio by time, 20 ms per request.
pub fn beyla_pod(p: PodTraffic<'_>, error_ratio: impl Fn(i64) -> f64) -> Vec<TimeSeries> {
    let PodTraffic {
        ns,
        workload,
        pod,
        from_ms,
        to_ms,
        step_ms,
        rps,
    } = p;
    let labels = |name: &str, code: &str| {
        Labels::from_pairs([
            ("__name__", name),
            ("cluster", CLUSTER),
            ("k8s_namespace_name", ns),
            ("k8s_owner_name", workload),
            ("k8s_deployment_name", workload),
            ("k8s_pod_name", pod),
            ("http_response_status_code", code),
        ])
    };
    let (mut ok, mut bad, mut sum) = (Vec::new(), Vec::new(), Vec::new());
    let (mut n_ok, mut n_bad) = (0.0, 0.0);
    let mut t = from_ms;
    while t <= to_ms {
        let reqs = rps * step_ms as f64 / 1000.0;
        let e = error_ratio(t);
        n_ok += reqs * (1.0 - e);
        n_bad += reqs * e;
        ok.push(Sample::new(t, n_ok.round()));
        bad.push(Sample::new(t, n_bad.round()));
        sum.push(Sample::new(t, (n_ok + n_bad) * 0.02));
        t += step_ms;
    }
    vec![
        TimeSeries::new(
            labels("http_server_request_duration_seconds_count", "200"),
            ok,
        ),
        TimeSeries::new(
            labels("http_server_request_duration_seconds_count", "500"),
            bad,
        ),
        TimeSeries::new(
            labels("http_server_request_duration_seconds_sum", "200"),
            sum,
        ),
    ]
}

/// Adds the incident's workloads and edges to `g` (the bench wires them
/// into a large graph).
pub fn add_incident_graph(g: &mut Graph) {
    for w in ["frontend", "checkout", "payment"] {
        g.add_node(Node::workload("shop", w, "Deployment"));
    }
    g.add_node(Node::workload("other", "ads", "Deployment"));
    g.add_edge(Edge::new(
        "shop/frontend",
        "shop/checkout",
        true,
        true,
        true,
    ));
    g.add_edge(Edge::new("shop/checkout", "shop/payment", true, true, true));
}

fn graph() -> Graph {
    let mut g = Graph::default();
    add_incident_graph(&mut g);
    g.add_node(Node::pod(
        "shop",
        "frontend",
        "Deployment",
        "frontend-5d8f9c7b6-fe001",
    ));
    g
}

/// Writes the incident into `store`.
pub async fn write_incident(store: &dyn Store) {
    let ev = store.events();
    let before = T0 - 3_600_000;
    let mut objects = Vec::new();
    for (ns, w, img, cm) in [
        (
            "shop",
            "frontend",
            "registry.local/shop/frontend:1.0",
            "frontend-flags",
        ),
        (
            "shop",
            "checkout",
            "registry.local/shop/checkout:3.4",
            "checkout-config",
        ),
        (
            "shop",
            "payment",
            "registry.local/shop/payment:2.1",
            "payment-config",
        ),
        ("other", "ads", "registry.local/other/ads:1.0", "ads-config"),
    ] {
        objects.push(object(
            "Deployment",
            ns,
            w,
            1,
            before,
            ChangeKind::Created,
            deployment(ns, w, img, 2, cm),
        ));
        objects.push(object(
            "ConfigMap",
            ns,
            cm,
            2,
            before,
            ChangeKind::Created,
            json!({"kind": "ConfigMap", "metadata": {"name": cm, "namespace": ns}, "data": {"k": "sha256:aaa"}}),
        ));
    }
    objects.push(object(
        "Pod",
        "shop",
        "frontend-5d8f9c7b6-fe001",
        3,
        before,
        ChangeKind::Created,
        json!({"kind": "Pod", "metadata": {"name": "frontend-5d8f9c7b6-fe001", "namespace": "shop"},
               "spec": {"nodeName": "node-a", "containers": [{"name": "app", "image": "registry.local/shop/frontend:1.0"}]}}),
    ));
    let node = |pressure: &str| {
        json!({"kind": "Node", "metadata": {"name": "node-a"},
               "status": {"conditions": [{"type": "Ready", "status": "True"}, {"type": "MemoryPressure", "status": pressure}]}})
    };
    objects.push(object(
        "Node",
        "",
        "node-a",
        4,
        before,
        ChangeKind::Created,
        node("False"),
    ));
    // Distractors, then the cause.
    objects.push(object(
        "ConfigMap",
        "shop",
        "frontend-flags",
        10,
        T0 + 40 * 60_000,
        ChangeKind::Updated,
        json!({"kind": "ConfigMap", "metadata": {"name": "frontend-flags", "namespace": "shop"}, "data": {"k": "sha256:bbb"}}),
    ));
    objects.push(object(
        "Node",
        "",
        "node-a",
        11,
        T0 + 60 * 60_000,
        ChangeKind::Updated,
        node("True"),
    ));
    objects.push(object(
        "Deployment",
        "other",
        "ads",
        12,
        CHANGE_MS - 120_000,
        ChangeKind::Updated,
        deployment(
            "other",
            "ads",
            "registry.local/other/ads:1.1",
            2,
            "ads-config",
        ),
    ));
    objects.push(object(
        "Deployment",
        "shop",
        "payment",
        13,
        CHANGE_MS,
        ChangeKind::Updated,
        deployment(
            "shop",
            "payment",
            "registry.local/shop/payment:2.2",
            2,
            "payment-config",
        ),
    ));
    ev.write_objects(objects).await.unwrap();

    let topo = store.topology();
    for t in [T0 - 600_000, T0 + 3_600_000] {
        topo.save_snapshot(
            CLUSTER,
            t,
            Snapshot {
                graph: graph(),
                stats: Default::default(),
            },
        )
        .await
        .unwrap();
    }

    let from = T0 - 600_000;
    let mut series = Vec::new();
    let base = |_t: i64| 0.002;
    for pod in ["payment-6d4b7c9f8-pa001", "payment-6d4b7c9f8-pa002"] {
        series.extend(beyla_pod(
            PodTraffic {
                ns: "shop",
                workload: "payment",
                pod,
                from_ms: from,
                to_ms: AT_MS,
                step_ms: STEP,
                rps: 10.0,
            },
            base,
        ));
    }
    series.extend(beyla_pod(
        PodTraffic {
            ns: "shop",
            workload: "payment",
            pod: "payment-7f5c8d6b9-pa003",
            from_ms: CHANGE_MS + STEP,
            to_ms: AT_MS,
            step_ms: STEP,
            rps: 10.0,
        },
        |_| 0.3,
    ));
    let caller = |ratio: f64| move |t: i64| if t > CHANGE_MS + 60_000 { ratio } else { 0.002 };
    series.extend(beyla_pod(
        PodTraffic {
            ns: "shop",
            workload: "checkout",
            pod: "checkout-6c7d8e9f1-ch001",
            from_ms: from,
            to_ms: AT_MS,
            step_ms: STEP,
            rps: 20.0,
        },
        caller(0.2),
    ));
    series.extend(beyla_pod(
        PodTraffic {
            ns: "shop",
            workload: "frontend",
            pod: "frontend-5d8f9c7b6-fe001",
            from_ms: from,
            to_ms: AT_MS,
            step_ms: STEP,
            rps: 40.0,
        },
        caller(0.1),
    ));
    series.extend(beyla_pod(
        PodTraffic {
            ns: "other",
            workload: "ads",
            pod: "ads-5b6c7d8e9-ad001",
            from_ms: from,
            to_ms: AT_MS,
            step_ms: STEP,
            rps: 5.0,
        },
        base,
    ));
    store
        .write_samples(MetricBatch {
            cluster: CLUSTER.into(),
            series,
        })
        .await
        .unwrap();
}

/// Store options that keep the incident's 2024 timestamps (retention long
/// enough for any test run).
pub fn options() -> kube_insight_store::StoreOptions {
    let long = std::time::Duration::from_secs(100 * 365 * 86_400);
    kube_insight_store::StoreOptions {
        retention: kube_insight_store::Retention {
            metrics: long,
            logs: long,
            events: long,
            topology: long,
        },
        ..Default::default()
    }
}

/// A fresh SQLite store in `dir` with the incident written.
pub async fn incident_store(dir: &std::path::Path) -> kube_insight_store::DynStore {
    let store = kube_insight_store_sqlite::open(
        &format!("sqlite://{}/insight.db", dir.display()),
        options(),
    )
    .await
    .unwrap();
    write_incident(store.as_ref()).await;
    store
}
