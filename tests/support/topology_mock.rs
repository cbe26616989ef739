//! A served sequence of payloads for the topology end-to-end test: a small
//! shop whose Beyla flow counters, service-graph counters, owner facts and
//! cAdvisor series change from phase to phase, encoded as Prometheus remote
//! write bodies with timestamps near now.

// Tests and benches may unwrap: a panic is a failing run with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(dead_code)]

use kube_insight_core::{Labels, Sample, TimeSeries};
use std::collections::BTreeMap;

/// Which parts of the shop are busy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// frontend ↔ cartservice (and frontend→cartservice requests, 1 %
    /// failing), cartservice → redis-cart, frontend → coredns.
    A,
    /// redis-cart goes quiet; traffic from outside the cluster reaches checkout.
    B,
    /// redis-cart comes back; 30 % of frontend→cartservice requests fail.
    C,
}

/// Counters that keep growing across pushes (as real ones do).
#[derive(Default)]
pub struct Shop {
    counters: BTreeMap<String, f64>,
    last_ms: Option<i64>,
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    Labels::from_pairs(pairs.iter().filter(|(_, v)| !v.is_empty()).copied())
}

fn flow(src: (&str, &str, &str), dst: (&str, &str, &str)) -> Labels {
    labels(&[
        ("__name__", "beyla_network_flow_bytes_total"),
        ("job", "beyla"),
        ("k8s_src_namespace", src.0),
        ("k8s_src_owner_name", src.1),
        ("k8s_src_owner_type", src.2),
        ("k8s_dst_namespace", dst.0),
        ("k8s_dst_owner_name", dst.1),
        ("k8s_dst_owner_type", dst.2),
    ])
}

fn sg(name: &str, client: &str, server: &str) -> Labels {
    labels(&[
        ("__name__", name),
        ("client", client),
        ("client_namespace", "shop"),
        ("server", server),
        ("server_namespace", "shop"),
        ("source", "beyla"),
    ])
}

const FRONTEND: (&str, &str, &str) = ("shop", "frontend", "Deployment");
const CART: (&str, &str, &str) = ("shop", "cartservice", "Deployment");
const REDIS: (&str, &str, &str) = ("shop", "redis-cart", "StatefulSet");
const COREDNS: (&str, &str, &str) = ("kube-system", "coredns", "Deployment");
const CHECKOUT: (&str, &str, &str) = ("shop", "checkout", "Deployment");
const OUTSIDE: (&str, &str, &str) = ("", "", "");

impl Shop {
    /// The series of one push at `now_ms` in `phase`: every counter grows by
    /// its rate × the time since the previous push (0 when idle).
    pub fn push(&mut self, phase: Phase, now_ms: i64) -> Vec<TimeSeries> {
        let dt = self.last_ms.map_or(0.0, |l| (now_ms - l) as f64 / 1000.0);
        self.last_ms = Some(now_ms);
        let busy_redis = phase != Phase::B;
        let err = if phase == Phase::C { 0.3 } else { 0.01 };
        let rates: Vec<(Labels, f64)> = vec![
            (flow(FRONTEND, CART), 10_000.0),
            (flow(CART, FRONTEND), 5_000.0),
            (flow(CART, REDIS), if busy_redis { 2_000.0 } else { 0.0 }),
            (flow(FRONTEND, COREDNS), 100.0),
            (
                flow(OUTSIDE, CHECKOUT),
                if phase == Phase::B || phase == Phase::C {
                    500.0
                } else {
                    0.0
                },
            ),
            (
                sg(
                    "traces_service_graph_request_total",
                    "frontend",
                    "cartservice",
                ),
                20.0,
            ),
            (
                sg(
                    "traces_service_graph_request_failed_total",
                    "frontend",
                    "cartservice",
                ),
                20.0 * err,
            ),
            (
                labels(&[
                    ("__name__", "container_cpu_usage_seconds_total"),
                    ("namespace", "shop"),
                    ("pod", "frontend-7c9d8f6b5-x2k4q"),
                    ("container", "frontend"),
                ]),
                0.25,
            ),
            (
                labels(&[
                    ("__name__", "container_cpu_usage_seconds_total"),
                    ("namespace", "shop"),
                    ("pod", "cartservice-5f6d7c8b9-qwz7p"),
                    ("container", "server"),
                ]),
                0.5,
            ),
        ];
        let mut out = Vec::new();
        for (l, rate) in rates {
            let key = format!("{l:?}");
            // A quiet flow keeps its value; it is not created while quiet.
            if rate == 0.0 && !self.counters.contains_key(&key) {
                continue;
            }
            let v = self.counters.entry(key).or_insert(1_000.0);
            *v += rate * dt;
            out.push(TimeSeries::new(l, vec![Sample::new(now_ms, *v)]));
        }
        let gauge = |pairs: &[(&str, &str)], v: f64| {
            TimeSeries::new(labels(pairs), vec![Sample::new(now_ms, v)])
        };
        out.extend([
            gauge(
                &[
                    ("__name__", "kube_pod_owner"),
                    ("namespace", "shop"),
                    ("pod", "frontend-7c9d8f6b5-x2k4q"),
                    ("owner_kind", "ReplicaSet"),
                    ("owner_name", "frontend-7c9d8f6b5"),
                    ("owner_is_controller", "true"),
                ],
                1.0,
            ),
            gauge(
                &[
                    ("__name__", "kube_replicaset_owner"),
                    ("namespace", "shop"),
                    ("replicaset", "frontend-7c9d8f6b5"),
                    ("owner_kind", "Deployment"),
                    ("owner_name", "frontend"),
                    ("owner_is_controller", "true"),
                ],
                1.0,
            ),
            gauge(
                &[
                    ("__name__", "kube_pod_owner"),
                    ("namespace", "shop"),
                    ("pod", "cartservice-5f6d7c8b9-qwz7p"),
                    ("owner_kind", "ReplicaSet"),
                    ("owner_name", "cartservice-5f6d7c8b9"),
                    ("owner_is_controller", "true"),
                ],
                1.0,
            ),
            gauge(
                &[
                    ("__name__", "kube_replicaset_owner"),
                    ("namespace", "shop"),
                    ("replicaset", "cartservice-5f6d7c8b9"),
                    ("owner_kind", "Deployment"),
                    ("owner_name", "cartservice"),
                    ("owner_is_controller", "true"),
                ],
                1.0,
            ),
            gauge(
                &[
                    ("__name__", "container_memory_working_set_bytes"),
                    ("namespace", "shop"),
                    ("pod", "frontend-7c9d8f6b5-x2k4q"),
                    ("container", "frontend"),
                ],
                64e6,
            ),
            gauge(
                &[
                    ("__name__", "container_memory_working_set_bytes"),
                    ("namespace", "shop"),
                    ("pod", "cartservice-5f6d7c8b9-qwz7p"),
                    ("container", "server"),
                ],
                128e6,
            ),
        ]);
        out
    }
}

/// The edge ids the shop's topology has in `phase` (workload grouping).
pub fn expected_edges(phase: Phase) -> Vec<&'static str> {
    let mut e = vec![
        "kube-system/coredns--shop/frontend",
        "shop/frontend->shop/cartservice",
    ];
    if phase != Phase::B {
        e.push("shop/cartservice--shop/redis-cart");
    }
    if phase != Phase::A {
        e.push("outside--shop/checkout");
    }
    e.sort_unstable();
    e
}
