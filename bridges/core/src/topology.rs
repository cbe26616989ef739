//! The topology model and everything pure about it: derivation from series,
//! grouping, focus, capping, diff and overlay, Grafana Node Graph frames and
//! Graphviz DOT.
//!
//! # Model
//! A [`Graph`] is the *structure*: nodes (workloads, their pods, the
//! "outside the cluster" node) and edges. [`Stats`] are the numbers of one
//! moment (traffic, requests, CPU…), kept apart because they change on
//! every snapshot while the structure rarely does.
//!
//! Node ids: a workload is `namespace/name` (a workload is identified by
//! namespace and name; its kind is an attribute, so Beyla reporting a
//! ReplicaSet in one version and its Deployment in another is one node), a
//! pod `namespace/workload/pod` (two slashes: never a workload id), a
//! namespace group its name, the outside node [`OUTSIDE_ID`] and the folded
//! rest of a capped answer [`OTHERS_ID`].
//!
//! Edge ids: a directed (client→server, from the service graph) edge is
//! `source->target`; an undirected one (network flows only: Beyla reports
//! packet direction, not who called whom) is `a--b` with `a < b`.
//!
//! Ids, names, namespaces and kinds are [`Name`]s: shared strings, so a
//! copy of a graph (the store rebuilds graphs at many moments from one
//! keyframe) costs reference counts, not allocations.
//!
//! # Cost of the views
//! The views walk a whole cluster's graph on every request, so they avoid
//! per-element tree lookups: stats are joined to nodes and edges by walking
//! both sorted maps together ([`SortedLookup`]), and the focus walk builds
//! one compact adjacency of the grouped graph and copies only what it reached.
//!
//! # Sources
//! - `beyla_network_flow_bytes_total` / `obi_network_flow_bytes_total`
//!   (labels `k8s_{src,dst}_{namespace,owner_name,owner_type}`): byte rate
//!   from counter deltas, resets handled, both directions summed; an
//!   endpoint without namespace or owner is the outside node.
//! - Beyla's service graph (`traces_service_graph_request_total`,
//!   `…_request_failed_total`, `…_request_server_seconds_bucket` or
//!   `…_request_client_seconds_bucket`; labels `client`, `client_namespace`,
//!   `server`, `server_namespace`): directed edges with request rate, error
//!   ratio and latency quantiles.
//! - kube-state-metrics `kube_pod_owner`, `kube_replicaset_owner`,
//!   `kube_job_owner`: pods and their workloads.
//! - cAdvisor `container_cpu_usage_seconds_total`,
//!   `container_memory_working_set_bytes` and KSM
//!   `kube_pod_container_status_restarts_total`: node stats.

use crate::entity::resolve_workload;
use crate::labels::Labels;
use crate::sample::{is_stale_nan, Sample, TimeSeries};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt::Write as _;
use thiserror::Error;

mod name;
pub use name::{fx_hash, FastHash, FastMap, FastSet, FxHasher, Interner, Name};

/// The node of every flow endpoint outside the cluster (no namespace or owner).
pub const OUTSIDE_ID: &str = "outside";
/// The node a capped answer folds the rest into.
pub const OTHERS_ID: &str = "others";

/// Flow counters, Beyla's and upstream OBI's names.
pub const FLOW_METRICS: [&str; 2] = [
    "beyla_network_flow_bytes_total",
    "obi_network_flow_bytes_total",
];
pub const SG_TOTAL: &str = "traces_service_graph_request_total";
pub const SG_FAILED: &str = "traces_service_graph_request_failed_total";
pub const SG_SERVER_BUCKET: &str = "traces_service_graph_request_server_seconds_bucket";
pub const SG_CLIENT_BUCKET: &str = "traces_service_graph_request_client_seconds_bucket";
pub const KSM_POD_OWNER: &str = "kube_pod_owner";
pub const KSM_RS_OWNER: &str = "kube_replicaset_owner";
pub const KSM_JOB_OWNER: &str = "kube_job_owner";
pub const CADVISOR_CPU: &str = "container_cpu_usage_seconds_total";
pub const CADVISOR_MEM: &str = "container_memory_working_set_bytes";
pub const KSM_RESTARTS: &str = "kube_pod_container_status_restarts_total";

/// Every metric name the derivation reads (for the target's selectors).
pub const INPUT_METRICS: [&str; 12] = [
    FLOW_METRICS[0],
    FLOW_METRICS[1],
    SG_TOTAL,
    SG_FAILED,
    SG_SERVER_BUCKET,
    SG_CLIENT_BUCKET,
    KSM_POD_OWNER,
    KSM_RS_OWNER,
    KSM_JOB_OWNER,
    CADVISOR_CPU,
    CADVISOR_MEM,
    KSM_RESTARTS,
];

/// Errors of the topology views. Lowercase, naming the input at fault.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum TopologyError {
    #[error("focus {focus:?} matches no node at this time (use a workload id such as shop/frontend, or a name)")]
    FocusNotFound { focus: String },
    #[error("focus {focus:?} is ambiguous: it matches {candidates}; use namespace/name")]
    FocusAmbiguous { focus: String, candidates: String },
    #[error("invalid group {input:?}: expected namespace, workload or pod")]
    InvalidGroup { input: String },
    #[error("invalid format {input:?}: expected table, json or dot")]
    InvalidFormat { input: String },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeKind {
    Workload,
    Pod,
    Namespace,
    Outside,
    Others,
}

impl NodeKind {
    pub fn code(self) -> u8 {
        match self {
            NodeKind::Workload => 0,
            NodeKind::Pod => 1,
            NodeKind::Namespace => 2,
            NodeKind::Outside => 3,
            NodeKind::Others => 4,
        }
    }

    pub fn from_code(c: u8) -> Option<NodeKind> {
        Some(match c {
            0 => NodeKind::Workload,
            1 => NodeKind::Pod,
            2 => NodeKind::Namespace,
            3 => NodeKind::Outside,
            4 => NodeKind::Others,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            NodeKind::Workload => "workload",
            NodeKind::Pod => "pod",
            NodeKind::Namespace => "namespace",
            NodeKind::Outside => "outside",
            NodeKind::Others => "others",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Node {
    pub id: Name,
    pub kind: NodeKind,
    pub namespace: Name,
    pub name: Name,
    /// `Deployment`, `StatefulSet`… for a workload (empty when only the
    /// service graph knows it); the pod's workload kind for a pod.
    pub workload_kind: Name,
    /// For a pod: its workload's id.
    pub parent: Option<Name>,
}

impl Node {
    pub fn workload(namespace: &str, name: &str, kind: &str) -> Node {
        Node {
            id: Name::from_fmt(format_args!("{namespace}/{name}")),
            kind: NodeKind::Workload,
            namespace: namespace.into(),
            name: name.into(),
            workload_kind: kind.into(),
            parent: None,
        }
    }

    pub fn pod(namespace: &str, workload: &str, workload_kind: &str, pod: &str) -> Node {
        Node {
            id: Name::from_fmt(format_args!("{namespace}/{workload}/{pod}")),
            kind: NodeKind::Pod,
            namespace: namespace.into(),
            name: pod.into(),
            workload_kind: workload_kind.into(),
            parent: Some(Name::from_fmt(format_args!("{namespace}/{workload}"))),
        }
    }

    pub fn outside() -> Node {
        Node {
            id: OUTSIDE_ID.into(),
            kind: NodeKind::Outside,
            namespace: Name::default(),
            name: "outside the cluster".into(),
            workload_kind: Name::default(),
            parent: None,
        }
    }

    fn namespace_group(ns: &Name) -> Node {
        Node {
            id: ns.clone(),
            kind: NodeKind::Namespace,
            namespace: ns.clone(),
            name: ns.clone(),
            workload_kind: "Namespace".into(),
            parent: None,
        }
    }

    /// The node's title in frames and DOT.
    pub fn title(&self) -> String {
        match self.kind {
            NodeKind::Outside => "Outside the cluster".to_string(),
            _ => self.name.to_string(),
        }
    }

    pub fn subtitle(&self) -> String {
        match self.kind {
            NodeKind::Workload if self.workload_kind.is_empty() => {
                format!("service · {}", self.namespace)
            }
            NodeKind::Workload => format!("{} · {}", self.workload_kind, self.namespace),
            NodeKind::Pod => format!("Pod · {}", self.namespace),
            NodeKind::Namespace => "Namespace".to_string(),
            NodeKind::Outside => "external".to_string(),
            NodeKind::Others => "folded".to_string(),
        }
    }
}

pub fn workload_id(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

/// The id of an edge between `a` and `b`.
pub fn edge_id(a: &str, b: &str, directed: bool) -> String {
    if directed {
        format!("{a}->{b}")
    } else if a <= b {
        format!("{a}--{b}")
    } else {
        format!("{b}--{a}")
    }
}

/// [`edge_id`] as a [`Name`] (one allocation).
fn edge_name(a: &str, b: &str, directed: bool) -> Name {
    if directed {
        Name::from_fmt(format_args!("{a}->{b}"))
    } else if a <= b {
        Name::from_fmt(format_args!("{a}--{b}"))
    } else {
        Name::from_fmt(format_args!("{b}--{a}"))
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Edge {
    pub id: Name,
    pub source: Name,
    pub target: Name,
    /// Client→server (known from the service graph); otherwise undirected.
    pub directed: bool,
    /// Seen in network flows.
    pub flow: bool,
    /// Seen in the service graph.
    pub requests: bool,
}

impl Edge {
    pub fn new(source: &str, target: &str, directed: bool, flow: bool, requests: bool) -> Edge {
        Edge::between(&source.into(), &target.into(), directed, flow, requests)
    }

    /// [`Edge::new`] sharing the endpoints' names.
    pub fn between(
        source: &Name,
        target: &Name,
        directed: bool,
        flow: bool,
        requests: bool,
    ) -> Edge {
        let (s, t) = if directed || source <= target {
            (source, target)
        } else {
            (target, source)
        };
        Edge {
            id: edge_name(s, t, directed),
            source: s.clone(),
            target: t.clone(),
            directed,
            flow,
            requests,
        }
    }
}

/// The structure: nodes and edges, keyed by id.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Graph {
    pub nodes: BTreeMap<Name, Node>,
    pub edges: BTreeMap<Name, Edge>,
}

/// What changed between two structures. A node or edge whose attributes
/// changed is removed and added again.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GraphDelta {
    pub added_nodes: Vec<Node>,
    pub removed_nodes: Vec<Name>,
    pub added_edges: Vec<Edge>,
    pub removed_edges: Vec<Name>,
}

impl GraphDelta {
    pub fn is_empty(&self) -> bool {
        self.added_nodes.is_empty()
            && self.removed_nodes.is_empty()
            && self.added_edges.is_empty()
            && self.removed_edges.is_empty()
    }

    pub fn len(&self) -> usize {
        self.added_nodes.len()
            + self.removed_nodes.len()
            + self.added_edges.len()
            + self.removed_edges.len()
    }
}

impl Graph {
    pub fn add_node(&mut self, n: Node) {
        self.nodes.insert(n.id.clone(), n);
    }

    pub fn add_edge(&mut self, e: Edge) {
        self.edges.insert(e.id.clone(), e);
    }

    /// The changes that turn `self` into `next` (one walk of both sorted maps).
    pub fn delta_to(&self, next: &Graph) -> GraphDelta {
        let mut d = GraphDelta::default();
        for side in merge_join(self.nodes.iter(), next.nodes.iter()) {
            match side {
                Joined::Both(_, a, b) if a == b => {}
                Joined::Both(id, _, b) => {
                    d.removed_nodes.push(id.clone());
                    d.added_nodes.push(b.clone());
                }
                Joined::Left(id, _) => d.removed_nodes.push(id.clone()),
                Joined::Right(_, b) => d.added_nodes.push(b.clone()),
            }
        }
        for side in merge_join(self.edges.iter(), next.edges.iter()) {
            match side {
                Joined::Both(_, a, b) if a == b => {}
                Joined::Both(id, _, b) => {
                    d.removed_edges.push(id.clone());
                    d.added_edges.push(b.clone());
                }
                Joined::Left(id, _) => d.removed_edges.push(id.clone()),
                Joined::Right(_, b) => d.added_edges.push(b.clone()),
            }
        }
        d
    }

    /// Applies a delta: removals first, then additions.
    pub fn apply(&mut self, d: &GraphDelta) {
        for id in &d.removed_nodes {
            self.nodes.remove(id);
        }
        for id in &d.removed_edges {
            self.edges.remove(id);
        }
        for n in &d.added_nodes {
            self.nodes.insert(n.id.clone(), n.clone());
        }
        for e in &d.added_edges {
            self.edges.insert(e.id.clone(), e.clone());
        }
    }

    /// [`Graph::apply`] taking the delta (no copies of what it adds).
    pub fn apply_owned(&mut self, d: GraphDelta) {
        for id in &d.removed_nodes {
            self.nodes.remove(id);
        }
        for id in &d.removed_edges {
            self.edges.remove(id);
        }
        for n in d.added_nodes {
            self.nodes.insert(n.id.clone(), n);
        }
        for e in d.added_edges {
            self.edges.insert(e.id.clone(), e);
        }
    }

    /// Workload-level dependencies: edges between two nodes that are not pods.
    pub fn dependencies(&self) -> impl Iterator<Item = &Edge> {
        self.edges.values().filter(|e| {
            self.nodes
                .get(&e.source)
                .is_none_or(|n| n.kind != NodeKind::Pod)
                && self
                    .nodes
                    .get(&e.target)
                    .is_none_or(|n| n.kind != NodeKind::Pod)
        })
    }
}

/// Numbers of one edge at one moment; `None` is "not known".
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EdgeStats {
    /// Both directions of the flow, bytes per second.
    pub bytes_per_s: Option<f64>,
    pub requests_per_s: Option<f64>,
    /// Failed / total requests, 0..1.
    pub error_ratio: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

/// Numbers of one node at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeStats {
    pub cpu_cores: Option<f64>,
    pub memory_bytes: Option<f64>,
    /// Container restarts in the window.
    pub restarts: Option<f64>,
    /// Requests served (incoming service-graph edges), per second.
    pub requests_per_s: Option<f64>,
    /// Failed share of the requests served.
    pub error_ratio: Option<f64>,
}

impl EdgeStats {
    pub const FIELDS: usize = 6;

    pub fn to_array(&self) -> [Option<f64>; 6] {
        [
            self.bytes_per_s,
            self.requests_per_s,
            self.error_ratio,
            self.p50_ms,
            self.p95_ms,
            self.p99_ms,
        ]
    }

    pub fn from_array(a: &[Option<f64>]) -> EdgeStats {
        let g = |i: usize| a.get(i).copied().flatten();
        EdgeStats {
            bytes_per_s: g(0),
            requests_per_s: g(1),
            error_ratio: g(2),
            p50_ms: g(3),
            p95_ms: g(4),
            p99_ms: g(5),
        }
    }
}

impl NodeStats {
    pub const FIELDS: usize = 5;

    pub fn to_array(&self) -> [Option<f64>; 5] {
        [
            self.cpu_cores,
            self.memory_bytes,
            self.restarts,
            self.requests_per_s,
            self.error_ratio,
        ]
    }

    pub fn from_array(a: &[Option<f64>]) -> NodeStats {
        let g = |i: usize| a.get(i).copied().flatten();
        NodeStats {
            cpu_cores: g(0),
            memory_bytes: g(1),
            restarts: g(2),
            requests_per_s: g(3),
            error_ratio: g(4),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.to_array().iter().all(Option::is_none)
    }
}

/// The stats of one moment, keyed by node and edge id.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Stats {
    pub nodes: BTreeMap<Name, NodeStats>,
    pub edges: BTreeMap<Name, EdgeStats>,
}

// ---------------------------------------------------------------------------
// Walking sorted maps together

/// One key of two sorted sequences walked together.
#[derive(Debug)]
pub enum Joined<'a, K, A, B> {
    Left(&'a K, &'a A),
    Right(&'a K, &'a B),
    Both(&'a K, &'a A, &'a B),
}

/// Walks two sequences sorted by key (two `BTreeMap`s' iterators) in one
/// pass: O(n + m) key comparisons, no tree lookups.
pub fn merge_join<'a, K: Ord + 'a, A: 'a, B: 'a>(
    a: impl Iterator<Item = (&'a K, &'a A)>,
    b: impl Iterator<Item = (&'a K, &'a B)>,
) -> impl Iterator<Item = Joined<'a, K, A, B>> {
    let mut a = a.peekable();
    let mut b = b.peekable();
    std::iter::from_fn(move || match (a.peek(), b.peek()) {
        (None, None) => None,
        (Some(_), None) => a.next().map(|(k, v)| Joined::Left(k, v)),
        (None, Some(_)) => b.next().map(|(k, v)| Joined::Right(k, v)),
        (Some((ka, _)), Some((kb, _))) => match ka.cmp(kb) {
            std::cmp::Ordering::Less => a.next().map(|(k, v)| Joined::Left(k, v)),
            std::cmp::Ordering::Greater => b.next().map(|(k, v)| Joined::Right(k, v)),
            std::cmp::Ordering::Equal => match (a.next(), b.next()) {
                (Some((k, x)), Some((_, y))) => Some(Joined::Both(k, x, y)),
                _ => None,
            },
        },
    })
}

/// Looks keys up in a sorted map when the keys come in increasing order:
/// a cursor that only moves forward (amortised O(1) per key) when many keys
/// are asked of a map of similar size, plain tree lookups when few are
/// asked of a big map. Keys asked out of order are still answered right
/// (by a tree lookup).
pub struct SortedLookup<'a, V> {
    map: &'a BTreeMap<Name, V>,
    cursor: Option<std::iter::Peekable<std::collections::btree_map::Iter<'a, Name, V>>>,
    /// The greatest key the cursor has passed (keys up to it are behind it).
    passed: Option<&'a Name>,
}

impl<'a, V> SortedLookup<'a, V> {
    /// `expected` is about how many keys will be asked.
    pub fn new(map: &'a BTreeMap<Name, V>, expected: usize) -> Self {
        let walk = expected.saturating_mul(8) >= map.len();
        SortedLookup {
            map,
            cursor: walk.then(|| map.iter().peekable()),
            passed: None,
        }
    }

    pub fn get(&mut self, key: &str) -> Option<&'a V> {
        let ahead = self.passed.is_none_or(|p| p.as_str() < key);
        let Some(cur) = self.cursor.as_mut().filter(|_| ahead) else {
            return self.map.get(key);
        };
        while let Some(&(k, _)) = cur.peek() {
            if k.as_str() < key {
                self.passed = Some(k);
                cur.next();
            } else {
                break;
            }
        }
        match cur.peek() {
            Some(&(k, v)) if k.as_str() == key => Some(v),
            _ => None,
        }
    }
}

/// A graph and its stats at one moment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    pub graph: Graph,
    pub stats: Stats,
}

// ---------------------------------------------------------------------------
// Derivation

/// Increase of a counter over its samples, resets handled (a drop means the
/// counter restarted from zero, so the new value is all increase), and the
/// seconds covered. `None` with fewer than two usable samples.
pub fn counter_increase(samples: &[Sample]) -> Option<(f64, f64)> {
    let mut it = samples
        .iter()
        .filter(|s| !is_stale_nan(s.value) && s.value.is_finite());
    let first = it.next()?;
    let (mut prev, mut last_t, mut n, mut inc) = (first.value, first.timestamp_ms, 1u32, 0.0);
    for s in it {
        inc += if s.value >= prev {
            s.value - prev
        } else {
            s.value
        };
        prev = s.value;
        last_t = s.timestamp_ms;
        n += 1;
    }
    (n >= 2).then(|| (inc, (last_t - first.timestamp_ms) as f64 / 1000.0))
}

/// The latest usable value (stale markers end a series: `None` then).
fn latest(samples: &[Sample]) -> Option<f64> {
    let last = samples.last()?;
    if is_stale_nan(last.value) || !last.value.is_finite() {
        return None;
    }
    Some(last.value)
}

/// Activity of one counter series in the window: `Some(rate)` when two or
/// more samples give one, `Some(None)` when a single sample says the series
/// is alive (it appeared in the window), `None` when there was no traffic.
fn counter_activity(samples: &[Sample]) -> Option<Option<f64>> {
    match counter_increase(samples) {
        Some((inc, secs)) if inc > 0.0 && secs > 0.0 => Some(Some(inc / secs)),
        Some(_) => None,
        None => {
            let alive = samples
                .iter()
                .filter(|s| !is_stale_nan(s.value) && s.value.is_finite())
                .count();
            (alive == 1).then_some(None)
        }
    }
}

fn label<'a>(l: &'a Labels, name: &str) -> &'a str {
    l.get(name).unwrap_or("")
}

/// Owner facts from kube-state-metrics.
#[derive(Default)]
struct Owners {
    /// (namespace, pod) → (kind, name) of the pod's direct owner.
    pods: BTreeMap<(String, String), (String, String)>,
    /// (namespace, kind, name) of a ReplicaSet/Job → its owner (kind, name).
    parents: HashMap<(String, String, String), (String, String)>,
}

impl Owners {
    fn workload_of(&self, ns: &str, kind: &str, name: &str) -> (String, String) {
        match resolve_workload(Some((kind, name)), |k, n| {
            self.parents
                .get(&(ns.to_string(), k.to_string(), n.to_string()))
                .cloned()
        }) {
            Some(w) => (w.kind, w.name),
            None => (kind.to_string(), name.to_string()),
        }
    }
}

/// Summed service-graph counters of one client→server pair.
#[derive(Default)]
struct SgAcc {
    total: f64,
    failed: f64,
    secs: f64,
    alive: bool,
    buckets: BTreeMap<u64, (f64, f64)>, // le bits order-preserving key → (le, increase)
    client_buckets: BTreeMap<u64, (f64, f64)>,
}

fn le_key(le: f64) -> u64 {
    // Order-preserving key for non-negative floats and +Inf.
    if le.is_infinite() {
        u64::MAX
    } else {
        le.max(0.0).to_bits()
    }
}

/// `histogram_quantile` over cumulative (le, count) buckets, linear
/// interpolation as Prometheus does. `None` without a +Inf bucket or counts.
pub fn histogram_quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    let (inf_le, total) = *buckets.last()?;
    if !inf_le.is_infinite() || total <= 0.0 || !(0.0..=1.0).contains(&q) {
        return None;
    }
    let rank = q * total;
    let mut prev_le = 0.0;
    let mut prev_count = 0.0;
    for &(le, count) in buckets {
        if count >= rank {
            if le.is_infinite() {
                return Some(prev_le);
            }
            let in_bucket = count - prev_count;
            if in_bucket <= 0.0 {
                return Some(le);
            }
            return Some(prev_le + (le - prev_le) * (rank - prev_count) / in_bucket);
        }
        prev_le = le;
        prev_count = count;
    }
    Some(prev_le)
}

fn quantiles(b: &BTreeMap<u64, (f64, f64)>) -> (Option<f64>, Option<f64>, Option<f64>) {
    let mut v: Vec<(f64, f64)> = b.values().copied().collect();
    // Buckets are cumulative already; enforce monotonicity (summing series
    // of different instances may leave small inversions).
    for i in 1..v.len() {
        if v[i].1 < v[i - 1].1 {
            v[i].1 = v[i - 1].1;
        }
    }
    let ms = |q| histogram_quantile(q, &v).map(|s| s * 1000.0);
    (ms(0.5), ms(0.95), ms(0.99))
}

/// Derives the snapshot of one moment from the series of the window before
/// it (every series' samples sorted by time, as `MetricStore::select`
/// returns them). Pure: the same series give the same snapshot.
pub fn derive(series: &[TimeSeries]) -> Snapshot {
    let mut owners = Owners::default();
    // Owners first: flows and stats resolve through them.
    for s in series {
        let l = &s.labels;
        match l.metric_name() {
            KSM_POD_OWNER => {
                if latest(&s.samples).is_none() {
                    continue;
                }
                let (ns, pod) = (label(l, "namespace"), label(l, "pod"));
                if ns.is_empty() || pod.is_empty() {
                    continue;
                }
                let (kind, name) = (label(l, "owner_kind"), label(l, "owner_name"));
                let entry = owners
                    .pods
                    .entry((ns.to_string(), pod.to_string()))
                    .or_default();
                // A pod with several owner rows: prefer a named one.
                if entry.1.is_empty() || entry.1 == "<none>" {
                    *entry = (kind.to_string(), name.to_string());
                }
            }
            KSM_RS_OWNER | KSM_JOB_OWNER => {
                if latest(&s.samples).is_none() {
                    continue;
                }
                let (child_kind, child) = if l.metric_name() == KSM_RS_OWNER {
                    ("ReplicaSet", label(l, "replicaset"))
                } else {
                    ("Job", label(l, "job_name"))
                };
                let (kind, name) = (label(l, "owner_kind"), label(l, "owner_name"));
                if child.is_empty() || kind.is_empty() || name.is_empty() || name == "<none>" {
                    continue;
                }
                owners.parents.insert(
                    (
                        label(l, "namespace").to_string(),
                        child_kind.to_string(),
                        child.to_string(),
                    ),
                    (kind.to_string(), name.to_string()),
                );
            }
            _ => {}
        }
    }

    let mut graph = Graph::default();
    let mut stats = Stats::default();
    // pod key → pod node id, workload id
    let mut pod_ids: HashMap<(String, String), (Name, Name)> = HashMap::new();
    for ((ns, pod), (kind, name)) in &owners.pods {
        let (wk, wn) = if name.is_empty() || name == "<none>" || kind.is_empty() {
            ("Pod".to_string(), pod.clone())
        } else {
            owners.workload_of(ns, kind, name)
        };
        let w = Node::workload(ns, &wn, &wk);
        let p = Node::pod(ns, &wn, &wk, pod);
        pod_ids.insert((ns.clone(), pod.clone()), (p.id.clone(), w.id.clone()));
        if wk != "Pod" {
            graph.add_node(p);
        } else {
            // A bare pod is its own workload.
            pod_ids.insert((ns.clone(), pod.clone()), (w.id.clone(), w.id.clone()));
        }
        graph.nodes.entry(w.id.clone()).or_insert(w);
    }

    // Flows: undirected pairs.
    let mut flows: BTreeMap<(String, String), (Option<f64>, bool)> = BTreeMap::new();
    let mut sg: BTreeMap<(String, String), SgAcc> = BTreeMap::new();
    let endpoint = |graph: &mut Graph, ns: &str, owner: &str, kind: &str| -> String {
        if ns.is_empty() || owner.is_empty() {
            graph
                .nodes
                .entry(OUTSIDE_ID.into())
                .or_insert_with(Node::outside);
            return OUTSIDE_ID.to_string();
        }
        let (wk, wn) = match kind {
            "ReplicaSet" | "Job" => owners.workload_of(ns, kind, owner),
            "Pod" => match owners.pods.get(&(ns.to_string(), owner.to_string())) {
                Some((k, n)) if !n.is_empty() && n != "<none>" => owners.workload_of(ns, k, n),
                _ => ("Pod".to_string(), owner.to_string()),
            },
            _ => (kind.to_string(), owner.to_string()),
        };
        let id = workload_id(ns, &wn);
        let node = graph
            .nodes
            .entry(id.as_str().into())
            .or_insert_with(|| Node::workload(ns, &wn, &wk));
        if node.workload_kind.is_empty() {
            node.workload_kind = wk.into();
        }
        id
    };
    for s in series {
        let l = &s.labels;
        let name = l.metric_name();
        if FLOW_METRICS.contains(&name) {
            let Some(rate) = counter_activity(&s.samples) else {
                continue;
            };
            let a = endpoint(
                &mut graph,
                label(l, "k8s_src_namespace"),
                label(l, "k8s_src_owner_name"),
                label(l, "k8s_src_owner_type"),
            );
            let b = endpoint(
                &mut graph,
                label(l, "k8s_dst_namespace"),
                label(l, "k8s_dst_owner_name"),
                label(l, "k8s_dst_owner_type"),
            );
            if a == b {
                continue; // traffic inside one workload is not an edge
            }
            let key = if a <= b { (a, b) } else { (b, a) };
            let e = flows.entry(key).or_insert((None, false));
            e.1 = true;
            if let Some(r) = rate {
                e.0 = Some(e.0.unwrap_or(0.0) + r);
            }
        } else if matches!(
            name,
            SG_TOTAL | SG_FAILED | SG_SERVER_BUCKET | SG_CLIENT_BUCKET
        ) {
            let client = label(l, "client");
            let server = label(l, "server");
            if client.is_empty() || server.is_empty() {
                continue;
            }
            let acc = sg
                .entry((
                    format!("{}\u{0}{}", label(l, "client_namespace"), client),
                    format!("{}\u{0}{}", label(l, "server_namespace"), server),
                ))
                .or_default();
            let inc = counter_increase(&s.samples);
            match name {
                SG_TOTAL => match (inc, counter_activity(&s.samples)) {
                    (Some((i, secs)), _) => {
                        acc.total += i;
                        acc.secs = acc.secs.max(secs);
                        acc.alive |= i > 0.0;
                    }
                    (None, Some(_)) => acc.alive = true,
                    _ => {}
                },
                SG_FAILED => acc.failed += inc.map_or(0.0, |x| x.0),
                _ => {
                    let Some(le) = l.get("le").and_then(|v| v.parse::<f64>().ok()) else {
                        continue;
                    };
                    let map = if name == SG_SERVER_BUCKET {
                        &mut acc.buckets
                    } else {
                        &mut acc.client_buckets
                    };
                    let e = map.entry(le_key(le)).or_insert((le, 0.0));
                    e.1 += inc.map_or(0.0, |x| x.0);
                }
            }
        }
    }

    // Service-graph endpoints: a named namespace is a workload; without
    // one, a workload of that name known in exactly one namespace, else
    // outside the cluster.
    let mut by_name: HashMap<Name, Vec<Name>> = HashMap::new();
    for n in graph
        .nodes
        .values()
        .filter(|n| n.kind == NodeKind::Workload)
    {
        by_name
            .entry(n.name.clone())
            .or_default()
            .push(n.id.clone());
    }
    let sg_endpoint = |graph: &mut Graph, key: &str| -> String {
        let (ns, name) = key.split_once('\u{0}').unwrap_or(("", key));
        if ns.is_empty() {
            if let Some([only]) = by_name.get(name).map(Vec::as_slice) {
                return only.to_string();
            }
            graph
                .nodes
                .entry(OUTSIDE_ID.into())
                .or_insert_with(Node::outside);
            return OUTSIDE_ID.to_string();
        }
        let id = workload_id(ns, name);
        graph
            .nodes
            .entry(id.as_str().into())
            .or_insert_with(|| Node::workload(ns, name, ""));
        id
    };
    let mut directed: BTreeMap<(String, String), EdgeStats> = BTreeMap::new();
    for ((c, s), acc) in &sg {
        if !acc.alive {
            continue;
        }
        let c = sg_endpoint(&mut graph, c);
        let s = sg_endpoint(&mut graph, s);
        if c == s {
            continue;
        }
        let rate = (acc.secs > 0.0).then(|| acc.total / acc.secs);
        let err = (acc.total > 0.0).then(|| (acc.failed / acc.total).clamp(0.0, 1.0));
        let (p50, p95, p99) = if acc.buckets.is_empty() {
            quantiles(&acc.client_buckets)
        } else {
            quantiles(&acc.buckets)
        };
        let e = directed.entry((c, s)).or_default();
        e.requests_per_s = match (e.requests_per_s, rate) {
            (Some(a), Some(b)) => Some(a + b),
            (a, b) => a.or(b),
        };
        e.error_ratio = e.error_ratio.or(err);
        e.p50_ms = e.p50_ms.or(p50);
        e.p95_ms = e.p95_ms.or(p95);
        e.p99_ms = e.p99_ms.or(p99);
    }

    // Merge: a flow pair known to the service graph gives its bytes to the
    // directed edge (the busier direction when both are known).
    let mut flow_used: BTreeSet<(String, String)> = BTreeSet::new();
    for ((c, s), st) in &directed {
        let key = if c <= s {
            (c.clone(), s.clone())
        } else {
            (s.clone(), c.clone())
        };
        let mut st = *st;
        let mut has_flow = false;
        if let Some((bytes, _)) = flows.get(&key) {
            let reverse = directed.get(&(s.clone(), c.clone()));
            let mine = st.requests_per_s.unwrap_or(0.0);
            let take = match reverse {
                None => true,
                Some(r) => {
                    let theirs = r.requests_per_s.unwrap_or(0.0);
                    mine > theirs || (mine == theirs && c < s)
                }
            };
            if take {
                st.bytes_per_s = *bytes;
                has_flow = true;
                flow_used.insert(key);
            }
        }
        let e = Edge::new(c, s, true, has_flow, true);
        stats.edges.insert(e.id.clone(), st);
        graph.add_edge(e);
    }
    for ((a, b), (bytes, _)) in &flows {
        if flow_used.contains(&(a.clone(), b.clone())) {
            continue;
        }
        let e = Edge::new(a, b, false, true, false);
        stats.edges.insert(
            e.id.clone(),
            EdgeStats {
                bytes_per_s: *bytes,
                ..Default::default()
            },
        );
        graph.add_edge(e);
    }

    // Node stats: pods from cAdvisor/KSM, summed into workloads.
    let mut pod_stats: HashMap<Name, NodeStats> = HashMap::new();
    for s in series {
        let l = &s.labels;
        let name = l.metric_name();
        if !matches!(name, CADVISOR_CPU | CADVISOR_MEM | KSM_RESTARTS) {
            continue;
        }
        let container = label(l, "container");
        if container.is_empty() || container == "POD" {
            continue; // pod-level cgroup rows would count twice
        }
        let Some((pod_id, _)) = pod_ids.get(&(
            label(l, "namespace").to_string(),
            label(l, "pod").to_string(),
        )) else {
            continue;
        };
        let st = pod_stats.entry(pod_id.clone()).or_default();
        let add = |slot: &mut Option<f64>, v: f64| *slot = Some(slot.unwrap_or(0.0) + v);
        match name {
            CADVISOR_CPU => {
                if let Some((inc, secs)) = counter_increase(&s.samples) {
                    if secs > 0.0 {
                        add(&mut st.cpu_cores, inc / secs);
                    }
                }
            }
            CADVISOR_MEM => {
                if let Some(v) = latest(&s.samples) {
                    add(&mut st.memory_bytes, v);
                }
            }
            _ => match counter_increase(&s.samples) {
                Some((inc, _)) => add(&mut st.restarts, inc),
                None if latest(&s.samples).is_some() => add(&mut st.restarts, 0.0),
                None => {}
            },
        }
    }
    for (pod_id, st) in pod_stats {
        let parent = graph.nodes.get(&pod_id).and_then(|n| n.parent.clone());
        if let Some(w) = parent {
            let ws = stats.nodes.entry(w).or_default();
            merge_node_stats(ws, &st);
        }
        stats.nodes.insert(pod_id, st);
    }
    // Health: requests served by each node.
    let mut served: HashMap<Name, (f64, f64)> = HashMap::new();
    for e in graph.edges.values().filter(|e| e.directed) {
        if let Some(st) = stats.edges.get(&e.id) {
            if let Some(r) = st.requests_per_s {
                let x = served.entry(e.target.clone()).or_default();
                x.0 += r;
                x.1 += r * st.error_ratio.unwrap_or(0.0);
            }
        }
    }
    for (id, (r, failed)) in served {
        let st = stats.nodes.entry(id).or_default();
        st.requests_per_s = Some(r);
        st.error_ratio = (r > 0.0)
            .then(|| (failed / r).clamp(0.0, 1.0))
            .or(Some(0.0));
    }
    stats.nodes.retain(|_, s| !s.is_empty());
    Snapshot { graph, stats }
}

fn merge_node_stats(into: &mut NodeStats, st: &NodeStats) {
    let sum = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(x), Some(y)) => Some(x + y),
        (x, y) => x.or(y),
    };
    let served_before = into.requests_per_s;
    let failed = into.requests_per_s.unwrap_or(0.0) * into.error_ratio.unwrap_or(0.0)
        + st.requests_per_s.unwrap_or(0.0) * st.error_ratio.unwrap_or(0.0);
    into.cpu_cores = sum(into.cpu_cores, st.cpu_cores);
    into.memory_bytes = sum(into.memory_bytes, st.memory_bytes);
    into.restarts = sum(into.restarts, st.restarts);
    into.requests_per_s = sum(into.requests_per_s, st.requests_per_s);
    if served_before.is_some() || st.requests_per_s.is_some() {
        let r = into.requests_per_s.unwrap_or(0.0);
        into.error_ratio = Some(if r > 0.0 {
            (failed / r).clamp(0.0, 1.0)
        } else {
            0.0
        });
    }
}

fn merge_edge_stats(into: &mut EdgeStats, st: &EdgeStats) {
    let sum = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(x), Some(y)) => Some(x + y),
        (x, y) => x.or(y),
    };
    let max = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(x), Some(y)) => Some(x.max(y)),
        (x, y) => x.or(y),
    };
    let failed = into.requests_per_s.unwrap_or(0.0) * into.error_ratio.unwrap_or(0.0)
        + st.requests_per_s.unwrap_or(0.0) * st.error_ratio.unwrap_or(0.0);
    let had_err = into.error_ratio.is_some() || st.error_ratio.is_some();
    into.bytes_per_s = sum(into.bytes_per_s, st.bytes_per_s);
    into.requests_per_s = sum(into.requests_per_s, st.requests_per_s);
    if had_err {
        let r = into.requests_per_s.unwrap_or(0.0);
        into.error_ratio = Some(if r > 0.0 {
            (failed / r).clamp(0.0, 1.0)
        } else {
            0.0
        });
    }
    // Latency of a merged edge: the slowest member's (an upper bound).
    into.p50_ms = max(into.p50_ms, st.p50_ms);
    into.p95_ms = max(into.p95_ms, st.p95_ms);
    into.p99_ms = max(into.p99_ms, st.p99_ms);
}

// ---------------------------------------------------------------------------
// Views: grouping, namespace filter, focus, cap

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Group {
    Namespace,
    Workload,
    Pod,
}

impl Group {
    pub fn parse(s: &str) -> Result<Group, TopologyError> {
        match s.trim() {
            "namespace" | "ns" => Ok(Group::Namespace),
            "workload" => Ok(Group::Workload),
            "pod" => Ok(Group::Pod),
            _ => Err(TopologyError::InvalidGroup {
                input: s.to_string(),
            }),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Group::Namespace => "namespace",
            Group::Workload => "workload",
            Group::Pod => "pod",
        }
    }
}

/// What a view shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ViewOptions {
    /// Nodes of this namespace and their direct peers.
    pub namespace: Option<String>,
    /// A node id (`shop/frontend`) or a unique name (`frontend`).
    pub focus: Option<String>,
    /// Hops from the focus (undirected).
    pub depth: usize,
    /// `None`: workloads, or namespaces when the workloads exceed `max_nodes`
    /// and neither namespace nor focus narrows the view.
    pub group: Option<Group>,
    /// At most this many nodes; the rest fold into one "N others" node.
    pub max_nodes: usize,
}

pub const DEFAULT_MAX_NODES: usize = 300;
pub const MAX_NODES_LIMIT: usize = 1500;
pub const MAX_DEPTH: usize = 10;

impl Default for ViewOptions {
    fn default() -> Self {
        ViewOptions {
            namespace: None,
            focus: None,
            depth: 1,
            group: None,
            max_nodes: DEFAULT_MAX_NODES,
        }
    }
}

/// A shaped graph, ready for frames.
#[derive(Clone, Debug, PartialEq)]
pub struct View {
    pub snapshot: Snapshot,
    pub group: Group,
    /// Nodes folded into the "others" node (0: none).
    pub folded: usize,
    /// The focus node's id, when focused.
    pub focus: Option<String>,
}

/// The id of the group a node falls in (`None`: a pod without workload at
/// workload level, which is dropped).
fn group_id(n: &Node, g: Group) -> Option<&Name> {
    match (g, n.kind) {
        (_, NodeKind::Outside | NodeKind::Others) => Some(&n.id),
        (Group::Namespace, _) => Some(&n.namespace),
        (Group::Workload, NodeKind::Pod) => n.parent.as_ref(),
        _ => Some(&n.id),
    }
}

fn same(a: &Name, b: &Name) -> bool {
    Name::ptr_eq(a, b) || a == b
}

/// Maps nodes to their group; pods keep their identity at `Group::Pod` and
/// are linked to their workload with a non-flow, non-request edge.
pub fn group(snap: &Snapshot, g: Group) -> Snapshot {
    group_parts(&snap.graph, &snap.stats, g)
}

/// [`group`] on borrowed parts (no copy of the input).
pub fn group_parts(graph: &Graph, stats: &Stats, g: Group) -> Snapshot {
    // Groups numbered in order of appearance: (id, node, merged stats); a
    // group without a node (the workload of pods it does not list) shows
    // nothing. Every node's group number, for its edges.
    let mut number: FastMap<&str, u32> = FastMap::default();
    let mut groups: Vec<(&Name, Option<Node>, Option<NodeStats>)> = Vec::new();
    let mut of_node: FastMap<&str, u32> =
        FastMap::with_capacity_and_hasher(graph.nodes.len(), FastHash::default());
    let mut node_stats = SortedLookup::new(&stats.nodes, graph.nodes.len());
    for n in graph.nodes.values() {
        let Some(gid) = group_id(n, g) else { continue };
        let i = *number.entry(gid.as_str()).or_insert_with(|| {
            groups.push((gid, None, None));
            (groups.len() - 1) as u32
        });
        of_node.insert(&n.id, i);
        // A pod folded into its workload is counted by the workload already
        // (workload stats sum their pods); so is a pod in its namespace.
        if !same(gid, &n.id) && n.kind == NodeKind::Pod {
            continue;
        }
        let (_, node, merged) = &mut groups[i as usize];
        if node.is_none() {
            *node = Some(match (g, n.kind) {
                (Group::Namespace, NodeKind::Workload | NodeKind::Pod | NodeKind::Namespace) => {
                    Node::namespace_group(&n.namespace)
                }
                _ => n.clone(),
            });
        }
        if let Some(st) = node_stats.get(&n.id) {
            merge_node_stats(merged.get_or_insert_with(NodeStats::default), st);
        }
    }
    let shown = |i: u32| groups[i as usize].1.is_some();
    let mut edge_at: FastMap<(u32, u32, bool), usize> = FastMap::default();
    let mut out_edges: Vec<(Edge, Option<EdgeStats>)> = Vec::new();
    let mut edge_stats = SortedLookup::new(&stats.edges, graph.edges.len());
    for e in graph.edges.values() {
        let (Some(&s), Some(&t)) = (
            of_node.get(e.source.as_str()),
            of_node.get(e.target.as_str()),
        ) else {
            continue;
        };
        if s == t || !shown(s) || !shown(t) {
            continue;
        }
        let (s, t) = if e.directed || groups[s as usize].0 <= groups[t as usize].0 {
            (s, t)
        } else {
            (t, s)
        };
        let at = match edge_at.entry((s, t, e.directed)) {
            std::collections::hash_map::Entry::Occupied(o) => {
                let x = &mut out_edges[*o.get()].0;
                x.flow |= e.flow;
                x.requests |= e.requests;
                *o.get()
            }
            std::collections::hash_map::Entry::Vacant(v) => {
                let (sid, tid) = (groups[s as usize].0, groups[t as usize].0);
                let ne = if same(sid, &e.source) && same(tid, &e.target) {
                    e.clone()
                } else {
                    Edge::between(sid, tid, e.directed, e.flow, e.requests)
                };
                out_edges.push((ne, None));
                v.insert(out_edges.len() - 1);
                out_edges.len() - 1
            }
        };
        if let Some(st) = edge_stats.get(&e.id) {
            merge_edge_stats(out_edges[at].1.get_or_insert_with(EdgeStats::default), st);
        }
    }
    if g == Group::Pod {
        for n in graph.nodes.values().filter(|n| n.kind == NodeKind::Pod) {
            let (Some(p), Some(&pod)) = (&n.parent, of_node.get(n.id.as_str())) else {
                continue;
            };
            let Some(&parent) = number.get(p.as_str()).filter(|&&i| shown(i)) else {
                continue;
            };
            let ne = Edge::between(p, &n.id, true, false, false);
            match edge_at.get(&(parent, pod, true)) {
                Some(&i) => out_edges[i].0 = ne,
                None => out_edges.push((ne, None)),
            }
        }
    }
    let mut out = Snapshot::default();
    let mut nodes = Vec::with_capacity(groups.len());
    let mut node_stats = Vec::new();
    for (_, node, merged) in groups {
        if let Some(n) = node {
            if let Some(st) = merged {
                node_stats.push((n.id.clone(), st));
            }
            nodes.push((n.id.clone(), n));
        }
    }
    out.graph.nodes = nodes.into_iter().collect();
    out.stats.nodes = node_stats.into_iter().collect();
    out.stats.edges = out_edges
        .iter()
        .filter_map(|(e, st)| st.map(|st| (e.id.clone(), st)))
        .collect();
    out.graph.edges = out_edges
        .into_iter()
        .map(|(e, _)| (e.id.clone(), e))
        .collect();
    out
}

fn subgraph(snap: &Snapshot, keep: impl Fn(&str) -> bool) -> Snapshot {
    subgraph_parts(&snap.graph, &snap.stats, keep)
}

fn subgraph_parts(graph: &Graph, stats: &Stats, keep: impl Fn(&str) -> bool) -> Snapshot {
    let mut out = Snapshot::default();
    let mut node_stats = SortedLookup::new(&stats.nodes, graph.nodes.len());
    let mut nodes = Vec::new();
    let mut nstats = Vec::new();
    for (id, n) in &graph.nodes {
        if keep(id) {
            nodes.push((id.clone(), n.clone()));
            if let Some(st) = node_stats.get(id) {
                nstats.push((id.clone(), *st));
            }
        }
    }
    let mut edge_stats = SortedLookup::new(&stats.edges, graph.edges.len());
    let mut edges = Vec::new();
    let mut estats = Vec::new();
    for e in graph.edges.values() {
        if keep(&e.source) && keep(&e.target) {
            edges.push((e.id.clone(), e.clone()));
            if let Some(st) = edge_stats.get(&e.id) {
                estats.push((e.id.clone(), *st));
            }
        }
    }
    // Already in key order: collecting is a linear bulk build.
    out.graph.nodes = nodes.into_iter().collect();
    out.graph.edges = edges.into_iter().collect();
    out.stats.nodes = nstats.into_iter().collect();
    out.stats.edges = estats.into_iter().collect();
    out
}

/// Resolves a focus: an exact id, or a unique node name.
pub fn resolve_focus(g: &Graph, focus: &str) -> Result<String, TopologyError> {
    if g.nodes.contains_key(focus) {
        return Ok(focus.to_string());
    }
    let matches: Vec<&Node> = g.nodes.values().filter(|n| n.name == focus).collect();
    match matches.as_slice() {
        [] => Err(TopologyError::FocusNotFound {
            focus: focus.to_string(),
        }),
        [one] => Ok(one.id.to_string()),
        many => Err(TopologyError::FocusAmbiguous {
            focus: focus.to_string(),
            candidates: many
                .iter()
                .take(5)
                .map(|n| n.id.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

/// Shapes a snapshot for an answer: namespace filter, grouping, focus
/// (breadth-first to `depth` hops), then the node cap.
pub fn view(snap: &Snapshot, opts: &ViewOptions) -> Result<View, TopologyError> {
    view_parts(&snap.graph, &snap.stats, opts)
}

/// [`view`] on borrowed parts: only what the answer keeps is copied.
pub fn view_parts(graph: &Graph, stats: &Stats, opts: &ViewOptions) -> Result<View, TopologyError> {
    let filtered;
    let (graph, stats) = match opts.namespace.as_deref() {
        Some(ns) => {
            let inside: FastSet<&str> = graph
                .nodes
                .values()
                .filter(|n| n.namespace == ns)
                .map(|n| n.id.as_str())
                .collect();
            let mut keep: FastSet<&str> = inside.clone();
            for e in graph.edges.values() {
                if inside.contains(e.source.as_str()) || inside.contains(e.target.as_str()) {
                    keep.insert(&e.source);
                    keep.insert(&e.target);
                }
            }
            filtered = subgraph_parts(graph, stats, |id| keep.contains(id));
            (&filtered.graph, &filtered.stats)
        }
        None => (graph, stats),
    };
    let workloads = graph
        .nodes
        .values()
        .filter(|n| n.kind != NodeKind::Pod)
        .count();
    let g = opts.group.unwrap_or(
        if opts.namespace.is_none() && opts.focus.is_none() && workloads > opts.max_nodes {
            Group::Namespace
        } else {
            Group::Workload
        },
    );
    let (grouped, focus_id, order) = match opts.focus.as_deref() {
        None => (group_parts(graph, stats, g), None, Vec::new()),
        Some(f) => {
            let (grouped, id, order) = focus_walk(graph, stats, g, f, opts.depth)?;
            (grouped, Some(id), order)
        }
    };
    let (capped, folded) = cap(grouped, opts.max_nodes.clamp(2, MAX_NODES_LIMIT), &order);
    Ok(View {
        snapshot: capped,
        group: g,
        folded,
        focus: focus_id,
    })
}

/// The focus part of a view: walks the grouped graph without building it
/// (one numbering of the groups and one compact adjacency), then groups
/// only what the walk reached. Returns the grouped part, the focus's group
/// id and the walk's order.
fn focus_walk(
    graph: &Graph,
    stats: &Stats,
    g: Group,
    f: &str,
    depth: usize,
) -> Result<(Snapshot, String, Vec<String>), TopologyError> {
    // Groups numbered in order of appearance; every node's group number.
    let mut gix: FastMap<&str, u32> =
        FastMap::with_capacity_and_hasher(graph.nodes.len(), FastHash::default());
    let mut gids: Vec<&Name> = Vec::new();
    let mut of_node: FastMap<&str, u32> =
        FastMap::with_capacity_and_hasher(graph.nodes.len(), FastHash::default());
    let mut members: Vec<(&Node, u32)> = Vec::with_capacity(graph.nodes.len());
    for n in graph.nodes.values() {
        let Some(x) = group_id(n, g) else { continue };
        let i = *gix.entry(x.as_str()).or_insert_with(|| {
            gids.push(x);
            (gids.len() - 1) as u32
        });
        of_node.insert(&n.id, i);
        members.push((n, i));
    }
    // Edges between groups, as a compact adjacency (CSR) that keeps the
    // order of the edges, then the pod→workload links at pod level.
    let mut ends: Vec<(&Edge, u32, u32)> = Vec::with_capacity(graph.edges.len());
    let mut links: Vec<(u32, u32)> = Vec::with_capacity(graph.edges.len());
    for e in graph.edges.values() {
        if let (Some(&a), Some(&b)) = (
            of_node.get(e.source.as_str()),
            of_node.get(e.target.as_str()),
        ) {
            ends.push((e, a, b));
            if a != b {
                links.push((a, b));
            }
        }
    }
    if g == Group::Pod {
        for (n, i) in &members {
            if n.kind != NodeKind::Pod {
                continue;
            }
            if let Some(&p) = n.parent.as_ref().and_then(|p| of_node.get(p.as_str())) {
                links.push((p, *i));
            }
        }
    }
    let mut start = vec![0u32; gids.len() + 1];
    for &(a, b) in &links {
        start[a as usize + 1] += 1;
        start[b as usize + 1] += 1;
    }
    for i in 1..start.len() {
        start[i] += start[i - 1];
    }
    let mut fill = start.clone();
    let mut adj = vec![0u32; links.len() * 2];
    for &(a, b) in &links {
        adj[fill[a as usize] as usize] = b;
        fill[a as usize] += 1;
        adj[fill[b as usize] as usize] = a;
        fill[b as usize] += 1;
    }
    // The focus: a group id, else a unique name.
    let from = match gix.get(f) {
        Some(&i) => i,
        None => {
            let mut found: Vec<u32> = Vec::new();
            for (n, i) in &members {
                let x = gids[*i as usize];
                let hit = if same(x, &n.id) {
                    n.name == f
                } else {
                    g == Group::Namespace
                        && n.kind != NodeKind::Outside
                        && n.kind != NodeKind::Others
                        && *x == f
                };
                if hit && !found.contains(i) {
                    found.push(*i);
                }
            }
            match found.as_slice() {
                [] => {
                    return Err(TopologyError::FocusNotFound {
                        focus: f.to_string(),
                    })
                }
                [one] => *one,
                many => {
                    return Err(TopologyError::FocusAmbiguous {
                        focus: f.to_string(),
                        candidates: many
                            .iter()
                            .take(5)
                            .map(|i| gids[*i as usize].as_str())
                            .collect::<Vec<_>>()
                            .join(", "),
                    })
                }
            }
        }
    };
    let max_depth = depth.min(MAX_DEPTH);
    let mut seen = vec![false; gids.len()];
    seen[from as usize] = true;
    let mut order: Vec<String> = Vec::new();
    let mut queue = VecDeque::from([(from, 0usize)]);
    while let Some((n, d)) = queue.pop_front() {
        order.push(gids[n as usize].to_string());
        if d >= max_depth {
            continue;
        }
        let (lo, hi) = (start[n as usize] as usize, start[n as usize + 1] as usize);
        for &m in &adj[lo..hi] {
            if !seen[m as usize] {
                seen[m as usize] = true;
                queue.push_back((m, d + 1));
            }
        }
    }
    // The members of the reached groups, and the edges between them.
    let mut sub = Snapshot::default();
    let kept: Vec<&Node> = members
        .iter()
        .filter(|(_, i)| seen[*i as usize])
        .map(|(n, _)| *n)
        .collect();
    let mut node_stats = SortedLookup::new(&stats.nodes, kept.len());
    sub.stats.nodes = kept
        .iter()
        .filter_map(|n| node_stats.get(&n.id).map(|st| (n.id.clone(), *st)))
        .collect();
    sub.graph.nodes = kept.iter().map(|n| (n.id.clone(), (*n).clone())).collect();
    let kept: Vec<&Edge> = ends
        .iter()
        .filter(|(_, a, b)| seen[*a as usize] && seen[*b as usize])
        .map(|(e, _, _)| *e)
        .collect();
    let mut edge_stats = SortedLookup::new(&stats.edges, kept.len());
    sub.stats.edges = kept
        .iter()
        .filter_map(|e| edge_stats.get(&e.id).map(|st| (e.id.clone(), *st)))
        .collect();
    sub.graph.edges = kept.iter().map(|e| (e.id.clone(), (*e).clone())).collect();
    let mut grouped = group_parts(&sub.graph, &sub.stats, g);
    // Pods of a reached workload that the walk did not reach.
    if g == Group::Pod {
        let keep: FastSet<&str> = gids
            .iter()
            .zip(&seen)
            .filter(|(_, s)| **s)
            .map(|(x, _)| x.as_str())
            .collect();
        grouped = subgraph(&grouped, |id| keep.contains(id));
    }
    Ok((grouped, gids[from as usize].to_string(), order))
}

/// Keeps `max` nodes (those in `first`, in order, then the busiest by
/// degree and traffic) and folds the rest into one "N others" node.
pub fn cap(snap: Snapshot, max: usize, first: &[String]) -> (Snapshot, usize) {
    if snap.graph.nodes.len() <= max {
        return (snap, 0);
    }
    let mut weight: FastMap<&str, f64> = FastMap::default();
    let mut edge_stats = SortedLookup::new(&snap.stats.edges, snap.graph.edges.len());
    for e in snap.graph.edges.values() {
        let st = edge_stats.get(&e.id).copied().unwrap_or_default();
        let w = 1.0
            + st.bytes_per_s.unwrap_or(0.0).max(0.0).ln_1p()
            + st.requests_per_s.unwrap_or(0.0).max(0.0).ln_1p();
        *weight.entry(&e.source).or_default() += w;
        *weight.entry(&e.target).or_default() += w;
    }
    let mut rank: Vec<&str> = snap.graph.nodes.keys().map(Name::as_str).collect();
    rank.sort_by(|a, b| {
        let (wa, wb) = (
            weight.get(a).copied().unwrap_or(0.0),
            weight.get(b).copied().unwrap_or(0.0),
        );
        wb.total_cmp(&wa).then_with(|| a.cmp(b))
    });
    let mut keep: FastSet<&str> = FastSet::default();
    for id in first.iter().map(String::as_str).chain(rank) {
        if keep.len() >= max - 1 {
            break;
        }
        if let Some((k, _)) = snap.graph.nodes.get_key_value(id) {
            keep.insert(k.as_str());
        }
    }
    let folded = snap.graph.nodes.len() - keep.len();
    let mut out = subgraph(&snap, |id| keep.contains(id));
    let others = Name::from(OTHERS_ID);
    out.graph.add_node(Node {
        id: others.clone(),
        kind: NodeKind::Others,
        namespace: Name::default(),
        name: format!("{folded} others").into(),
        workload_kind: Name::default(),
        parent: None,
    });
    let mut others_stats = NodeStats::default();
    for (id, st) in &snap.stats.nodes {
        if !keep.contains(id.as_str()) {
            merge_node_stats(&mut others_stats, st);
        }
    }
    if !others_stats.is_empty() {
        out.stats.nodes.insert(others.clone(), others_stats);
    }
    let mut edge_stats = SortedLookup::new(&snap.stats.edges, snap.graph.edges.len());
    for e in snap.graph.edges.values() {
        let (ks, kt) = (
            keep.contains(e.source.as_str()),
            keep.contains(e.target.as_str()),
        );
        if ks == kt {
            continue;
        }
        let (s, t) = if ks {
            (&e.source, &others)
        } else {
            (&others, &e.target)
        };
        let ne = Edge::between(s, t, e.directed, e.flow, e.requests);
        if let Some(st) = edge_stats.get(&e.id) {
            merge_edge_stats(out.stats.edges.entry(ne.id.clone()).or_default(), st);
        }
        match out.graph.edges.get_mut(&ne.id) {
            Some(x) => {
                x.flow |= ne.flow;
                x.requests |= ne.requests;
            }
            None => out.graph.add_edge(ne),
        }
    }
    (out, folded)
}

// ---------------------------------------------------------------------------
// Diff and overlay

/// How a node or edge fared between two moments.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    Added,
    Removed,
    Changed,
    Unchanged,
}

impl Change {
    pub fn name(self) -> &'static str {
        match self {
            Change::Added => "added",
            Change::Removed => "removed",
            Change::Changed => "changed",
            Change::Unchanged => "unchanged",
        }
    }

    /// The overlay colour.
    pub fn color(self) -> &'static str {
        match self {
            Change::Added => "#2ca02c",
            Change::Removed => "#d62728",
            Change::Changed => "#ff7f0e",
            Change::Unchanged => "#999999",
        }
    }
}

/// Node or edge id → how it fared (an overlay's colours).
pub type Changes = BTreeMap<String, Change>;

/// An edge whose numbers moved by more than the factor.
#[derive(Clone, Debug, PartialEq)]
pub struct EdgeChange {
    pub edge: Edge,
    pub before: EdgeStats,
    pub after: EdgeStats,
    /// `traffic`, `error_ratio` or both, comma separated.
    pub reason: String,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Diff {
    pub added_nodes: Vec<Node>,
    pub removed_nodes: Vec<Node>,
    pub added_edges: Vec<Edge>,
    pub removed_edges: Vec<Edge>,
    pub changed_edges: Vec<EdgeChange>,
}

/// Thresholds of a diff: a number "changed" when the larger of before and
/// after is more than `factor` times the smaller (each floored, so a move
/// from 0 to a trickle is not a change).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DiffOptions {
    pub factor: f64,
    pub min_bytes_per_s: f64,
    pub min_error_ratio: f64,
}

impl Default for DiffOptions {
    fn default() -> Self {
        DiffOptions {
            factor: 2.0,
            min_bytes_per_s: 1024.0,
            min_error_ratio: 0.01,
        }
    }
}

fn moved(a: Option<f64>, b: Option<f64>, floor: f64, factor: f64) -> bool {
    let (a, b) = (a.unwrap_or(0.0).max(floor), b.unwrap_or(0.0).max(floor));
    a.max(b) > factor * a.min(b)
}

pub fn diff(before: &Snapshot, after: &Snapshot, opts: &DiffOptions) -> Diff {
    let mut d = Diff::default();
    for side in merge_join(before.graph.nodes.iter(), after.graph.nodes.iter()) {
        match side {
            Joined::Left(_, n) => d.removed_nodes.push(n.clone()),
            Joined::Right(_, n) => d.added_nodes.push(n.clone()),
            Joined::Both(..) => {}
        }
    }
    let common = before.graph.edges.len().min(after.graph.edges.len());
    let mut stats_a = SortedLookup::new(&before.stats.edges, common);
    let mut stats_b = SortedLookup::new(&after.stats.edges, common);
    for side in merge_join(before.graph.edges.iter(), after.graph.edges.iter()) {
        let (id, e) = match side {
            Joined::Left(_, e) => {
                d.removed_edges.push(e.clone());
                continue;
            }
            Joined::Right(_, e) => {
                d.added_edges.push(e.clone());
                continue;
            }
            Joined::Both(id, _, e) => (id, e),
        };
        let a = stats_a.get(id).copied().unwrap_or_default();
        let b = stats_b.get(id).copied().unwrap_or_default();
        let mut why = Vec::new();
        if (a.bytes_per_s.is_some() || b.bytes_per_s.is_some())
            && moved(
                a.bytes_per_s,
                b.bytes_per_s,
                opts.min_bytes_per_s,
                opts.factor,
            )
        {
            why.push("traffic");
        }
        if (a.error_ratio.is_some() || b.error_ratio.is_some())
            && moved(
                a.error_ratio,
                b.error_ratio,
                opts.min_error_ratio,
                opts.factor,
            )
        {
            why.push("error_ratio");
        }
        if !why.is_empty() {
            d.changed_edges.push(EdgeChange {
                edge: e.clone(),
                before: a,
                after: b,
                reason: why.join(","),
            });
        }
    }
    d
}

/// The union of both graphs with each node and edge's [`Change`]; stats
/// are the later moment's (the earlier one's for removed parts).
#[derive(Clone, Debug, PartialEq)]
pub struct Overlay {
    pub snapshot: Snapshot,
    pub nodes: BTreeMap<String, Change>,
    pub edges: BTreeMap<String, Change>,
}

pub fn overlay(before: &Snapshot, after: &Snapshot, d: &Diff) -> Overlay {
    let mut snap = after.clone();
    let mut nodes: BTreeMap<String, Change> = after
        .graph
        .nodes
        .keys()
        .map(|k| (k.to_string(), Change::Unchanged))
        .collect();
    let mut edges: BTreeMap<String, Change> = after
        .graph
        .edges
        .keys()
        .map(|k| (k.to_string(), Change::Unchanged))
        .collect();
    for n in &d.added_nodes {
        nodes.insert(n.id.to_string(), Change::Added);
    }
    for n in &d.removed_nodes {
        nodes.insert(n.id.to_string(), Change::Removed);
        snap.graph.add_node(n.clone());
        if let Some(st) = before.stats.nodes.get(&n.id) {
            snap.stats.nodes.insert(n.id.clone(), *st);
        }
    }
    for e in &d.added_edges {
        edges.insert(e.id.to_string(), Change::Added);
    }
    for e in &d.removed_edges {
        edges.insert(e.id.to_string(), Change::Removed);
        snap.graph.add_edge(e.clone());
        if let Some(st) = before.stats.edges.get(&e.id) {
            snap.stats.edges.insert(e.id.clone(), *st);
        }
    }
    for c in &d.changed_edges {
        edges.insert(c.edge.id.to_string(), Change::Changed);
    }
    Overlay {
        snapshot: snap,
        nodes,
        edges,
    }
}

// ---------------------------------------------------------------------------
// Grafana Node Graph frames

/// Human-readable rate of bytes.
pub fn fmt_bytes_rate(v: f64) -> String {
    format!("{}/s", fmt_bytes(v))
}

pub fn fmt_bytes(v: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut v = v.max(0.0);
    let mut u = 0;
    while v >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{v:.0} {}", UNITS[u])
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn round(v: Option<f64>, digits: i32) -> Value {
    match v {
        Some(x) if x.is_finite() => {
            let p = 10f64.powi(digits);
            json!((x * p).round() / p)
        }
        _ => Value::Null,
    }
}

/// The edge's main stat: traffic, else request rate.
pub fn edge_mainstat(st: &EdgeStats) -> String {
    match (st.bytes_per_s, st.requests_per_s) {
        (Some(b), _) => fmt_bytes_rate(b),
        (None, Some(r)) => format!("{r:.2} req/s"),
        _ => String::new(),
    }
}

/// The edge's secondary stat: requests, errors and p95 where known.
pub fn edge_secondarystat(st: &EdgeStats) -> String {
    let mut parts = Vec::new();
    if let (Some(_), Some(r)) = (st.bytes_per_s, st.requests_per_s) {
        parts.push(format!("{r:.2} req/s"));
    }
    if let Some(e) = st.error_ratio {
        parts.push(format!("{:.1}% err", e * 100.0));
    }
    if let Some(p) = st.p95_ms {
        parts.push(format!("p95 {p:.0} ms"));
    }
    parts.join(" · ")
}

/// Node rows: `id, title, subtitle, mainstat` (CPU cores), `secondarystat`
/// (memory bytes), `arc__ok`/`arc__err`/`arc__nodata` (summing to 1),
/// `detail__*`, and `color` only when `changes` is given (an overlay:
/// then without arcs, which Grafana does not combine with a colour). Every
/// row has the same keys, so Infinity builds one frame.
pub fn node_rows(snap: &Snapshot, changes: Option<&BTreeMap<String, Change>>) -> Vec<Value> {
    let mut pods: HashMap<&str, usize> = HashMap::new();
    for n in snap.graph.nodes.values() {
        if let Some(p) = &n.parent {
            *pods.entry(p.as_str()).or_default() += 1;
        }
    }
    snap.graph
        .nodes
        .values()
        .map(|n| {
            let st = snap.stats.nodes.get(&n.id).copied().unwrap_or_default();
            let mut m = Map::new();
            m.insert("id".into(), json!(n.id));
            m.insert("title".into(), json!(n.title()));
            m.insert("subtitle".into(), json!(n.subtitle()));
            m.insert("mainstat".into(), round(st.cpu_cores, 3));
            m.insert("secondarystat".into(), round(st.memory_bytes, 0));
            match changes {
                None => {
                    let (ok, err, nodata) = match (st.requests_per_s, st.error_ratio) {
                        (Some(r), Some(e)) if r > 0.0 => (1.0 - e, e, 0.0),
                        _ => (0.0, 0.0, 1.0),
                    };
                    m.insert("arc__ok".into(), round(Some(ok), 4));
                    m.insert("arc__err".into(), round(Some(err), 4));
                    m.insert("arc__nodata".into(), round(Some(nodata), 4));
                }
                Some(c) => {
                    let ch = c.get(n.id.as_str()).copied().unwrap_or(Change::Unchanged);
                    m.insert("color".into(), json!(ch.color()));
                    m.insert("detail__change".into(), json!(ch.name()));
                }
            }
            m.insert(
                "detail__kind".into(),
                json!(if n.workload_kind.is_empty() {
                    n.kind.name()
                } else {
                    n.workload_kind.as_str()
                }),
            );
            m.insert("detail__namespace".into(), json!(n.namespace));
            m.insert(
                "detail__pods".into(),
                json!(pods.get(n.id.as_str()).copied().unwrap_or(0)),
            );
            m.insert("detail__cpu_cores".into(), round(st.cpu_cores, 3));
            m.insert("detail__memory_bytes".into(), round(st.memory_bytes, 0));
            m.insert("detail__restarts".into(), round(st.restarts, 0));
            m.insert("detail__requests_per_s".into(), round(st.requests_per_s, 3));
            m.insert("detail__error_ratio".into(), round(st.error_ratio, 4));
            Value::Object(m)
        })
        .collect()
}

/// Edge rows: `id, source, target, mainstat, secondarystat, color`,
/// `detail__*`. A frame of these is an edges frame (it has `source`).
pub fn edge_rows(snap: &Snapshot, changes: Option<&BTreeMap<String, Change>>) -> Vec<Value> {
    snap.graph
        .edges
        .values()
        .map(|e| {
            let st = snap.stats.edges.get(&e.id).copied().unwrap_or_default();
            let color = match changes {
                Some(c) => c
                    .get(e.id.as_str())
                    .copied()
                    .unwrap_or(Change::Unchanged)
                    .color(),
                None if st.error_ratio.unwrap_or(0.0) >= 0.05 => "#d62728",
                None if !e.flow && !e.requests => "#cccccc",
                None => "#999999",
            };
            let mut m = Map::new();
            m.insert("id".into(), json!(e.id));
            m.insert("source".into(), json!(e.source));
            m.insert("target".into(), json!(e.target));
            m.insert("mainstat".into(), json!(edge_mainstat(&st)));
            m.insert("secondarystat".into(), json!(edge_secondarystat(&st)));
            m.insert("color".into(), json!(color));
            m.insert(
                "detail__direction".into(),
                json!(if e.directed {
                    "client→server"
                } else {
                    "undirected"
                }),
            );
            let src = match (e.flow, e.requests) {
                (true, true) => "flows,service_graph",
                (true, false) => "flows",
                (false, true) => "service_graph",
                (false, false) => "ownership",
            };
            m.insert("detail__sources".into(), json!(src));
            m.insert("detail__bytes_per_s".into(), round(st.bytes_per_s, 1));
            m.insert("detail__requests_per_s".into(), round(st.requests_per_s, 3));
            m.insert("detail__error_ratio".into(), round(st.error_ratio, 4));
            m.insert("detail__p50_ms".into(), round(st.p50_ms, 2));
            m.insert("detail__p95_ms".into(), round(st.p95_ms, 2));
            m.insert("detail__p99_ms".into(), round(st.p99_ms, 2));
            if let Some(c) = changes {
                m.insert(
                    "detail__change".into(),
                    json!(c
                        .get(e.id.as_str())
                        .copied()
                        .unwrap_or(Change::Unchanged)
                        .name()),
                );
            }
            Value::Object(m)
        })
        .collect()
}

// ---------------------------------------------------------------------------
// DOT

fn dot_escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            c if c.is_control() => {}
            c => o.push(c),
        }
    }
    o
}

/// Graphviz DOT (`dot -Tpng`): boxes for workloads, an ellipse for the
/// outside, directed edges as arrows, undirected ones without heads;
/// colours from `changes` when given (an overlay), red for failing edges
/// otherwise.
pub fn to_dot(snap: &Snapshot, changes: Option<(&Changes, &Changes)>) -> String {
    let mut o = String::from("digraph topology {\n  rankdir=LR;\n  node [shape=box, style=\"rounded,filled\", fillcolor=\"#f5f5f5\", fontname=\"Helvetica\"];\n  edge [fontname=\"Helvetica\", fontsize=10];\n");
    for n in snap.graph.nodes.values() {
        let st = snap.stats.nodes.get(&n.id).copied().unwrap_or_default();
        let mut label = format!("{}\n{}", n.title(), n.subtitle());
        if let Some(c) = st.cpu_cores {
            let _ = write!(label, "\n{c:.2} cores");
        }
        if let Some(m) = st.memory_bytes {
            let _ = write!(label, " · {}", fmt_bytes(m));
        }
        let shape = match n.kind {
            NodeKind::Outside => "ellipse",
            NodeKind::Others => "folder",
            NodeKind::Namespace => "tab",
            NodeKind::Pod => "component",
            NodeKind::Workload => "box",
        };
        let color = match changes {
            Some((nodes, _)) => nodes
                .get(n.id.as_str())
                .copied()
                .unwrap_or(Change::Unchanged)
                .color(),
            None if st.error_ratio.unwrap_or(0.0) >= 0.05 => "#d62728",
            None => "#555555",
        };
        let _ = writeln!(
            o,
            "  \"{}\" [label=\"{}\", shape={shape}, color=\"{color}\"];",
            dot_escape(&n.id),
            dot_escape(&label)
        );
    }
    for e in snap.graph.edges.values() {
        let st = snap.stats.edges.get(&e.id).copied().unwrap_or_default();
        let mut label = edge_mainstat(&st);
        let sec = edge_secondarystat(&st);
        if !sec.is_empty() {
            label = format!("{label}\n{sec}");
        }
        let color = match changes {
            Some((_, edges)) => edges
                .get(e.id.as_str())
                .copied()
                .unwrap_or(Change::Unchanged)
                .color(),
            None if st.error_ratio.unwrap_or(0.0) >= 0.05 => "#d62728",
            None => "#777777",
        };
        let dir = if e.directed { "" } else { ", dir=none" };
        let style = if !e.flow && !e.requests {
            ", style=dashed"
        } else {
            ""
        };
        let _ = writeln!(
            o,
            "  \"{}\" -> \"{}\" [label=\"{}\", color=\"{color}\"{dir}{style}];",
            dot_escape(&e.source),
            dot_escape(&e.target),
            dot_escape(&label)
        );
    }
    o.push_str("}\n");
    o
}

#[cfg(test)]
mod reference;
#[cfg(test)]
mod tests;
