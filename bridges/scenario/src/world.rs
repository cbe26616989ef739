//! The cluster's state over time: workloads with their pod templates,
//! ReplicaSets and pods, the effects incidents put on them, the Kubernetes
//! changes to send (in time order), and the signals of one scrape: metric
//! samples (cAdvisor, kube-state-metrics, Beyla RED, service graph and
//! flows) and log records. Pure: no IO, deterministic for a seed.
//!
//! # Behaviour
//! A pod's latency is its own (baseline × saturation + effects) plus a
//! share of each callee's service latency; its error ratio is its own plus
//! a share of each callee's. CPU saturation follows traffic per pod against
//! the CPU limit (fewer replicas, more traffic or a lower limit throttle and
//! slow a workload down); a memory limit under the working set OOM-kills.

use crate::cluster::{self, rfc3339, Service, Template, NODES};
use kube_insight_core::{Labels, Sample, TimeSeries};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};

/// The scrape interval of the generated metrics (ms).
pub const STEP_MS: i64 = 15_000;

/// What an incident does to a workload's pods (or a node's) from a time on.
#[derive(Debug, Clone, Default)]
pub struct Effect {
    /// `namespace/name` of the workload whose pods it affects; empty for node effects.
    pub workload: String,
    /// Pods on this node (when set, instead of a workload).
    pub node: Option<String>,
    /// Only pods of this template revision or newer (a bad rollout's new pods).
    pub min_rev: Option<u64>,
    pub from_ms: i64,
    pub until_ms: Option<i64>,
    /// Added latency per request (ms).
    pub latency_ms: f64,
    /// Added error ratio.
    pub errors: f64,
    /// Traffic multiplier of the workload (1 = unchanged; 0 = unset).
    pub traffic: f64,
    /// Calls from the workload to this callee fail (a cut dependency).
    pub cut: Option<String>,
    /// The pods' metrics disappear (their node is gone).
    pub silent: bool,
    /// The error-log line template of the affected pods.
    pub log: Option<String>,
}

impl Effect {
    pub fn on(workload: &str, from_ms: i64) -> Effect {
        Effect {
            workload: workload.to_string(),
            from_ms,
            ..Default::default()
        }
    }

    fn active(&self, t: i64) -> bool {
        t >= self.from_ms && self.until_ms.is_none_or(|u| t < u)
    }
}

/// One change to send to the API server.
#[derive(Debug, Clone)]
pub enum Op {
    Apply(&'static str, Value),
    Delete(&'static str, Value),
}

#[derive(Debug, Clone)]
struct Pod {
    name: String,
    node: String,
    rev: u64,
    born_ms: i64,
    gone_ms: Option<i64>,
    restarts: u64,
    oom: bool,
}

#[derive(Debug, Clone)]
struct Workload {
    svc: Service,
    template: Template,
    rev: u64,
    generation: u64,
    replicas: u32,
    /// (min, max) of its HPA.
    hpa: Option<(u32, u32)>,
    /// (from, replicas) of each scale, and (from, HPA bounds) of each HPA change.
    replicas_at: Vec<(i64, u32)>,
    hpa_at: Vec<(i64, Option<(u32, u32)>)>,
    pods: Vec<Pod>,
    /// Old templates, for the ReplicaSets they own.
    templates: Vec<Template>,
}

impl Workload {
    fn id(&self) -> String {
        format!("{}/{}", self.svc.namespace, self.svc.name)
    }
}

/// The signals of one or more scrapes.
#[derive(Default)]
pub struct Batch {
    series: HashMap<u64, TimeSeries>,
    pub logs: Vec<Value>,
}

impl Batch {
    fn push(&mut self, labels: Labels, t: i64, v: f64) {
        self.series
            .entry(labels.fingerprint())
            .or_insert_with(|| TimeSeries::new(labels, Vec::new()))
            .samples
            .push(Sample::new(t, v));
    }

    pub fn samples(&self) -> usize {
        self.series.values().map(|s| s.samples.len()).sum()
    }

    /// The series, each with its samples in time order.
    pub fn take_series(&mut self) -> Vec<TimeSeries> {
        self.series.drain().map(|(_, s)| s).collect()
    }
}

/// The deterministic noise source (xorshift64*).
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// 1 ± `spread`.
    fn jitter(&mut self, spread: f64) -> f64 {
        1.0 + spread * (2.0 * self.next() - 1.0)
    }
}

const LE: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The cluster over time.
pub struct World {
    workloads: Vec<Workload>,
    effects: Vec<Effect>,
    /// Changes not yet sent, by time.
    pending: BTreeMap<(i64, u64), Op>,
    seq: u64,
    counters: HashMap<u64, f64>,
    nodes_ready: BTreeMap<String, bool>,
    rng: Rng,
    /// Services seen by callers as (latency ms, error ratio), last step.
    created: String,
}

impl World {
    /// The cluster as it was at `start_ms` (created two days before), its
    /// objects queued as the initial state.
    pub fn new(seed: u64, start_ms: i64) -> World {
        let created_ms = start_ms - 2 * 86_400_000;
        let created = rfc3339(created_ms);
        let workloads = cluster::services()
            .into_iter()
            .enumerate()
            .map(|(i, svc)| {
                let template = Template::of(&svc);
                let pods = (0..svc.replicas)
                    .map(|k| Pod {
                        name: pod_name(&svc, &template, 1, k),
                        node: NODES[(i + k as usize) % NODES.len()].to_string(),
                        rev: 1,
                        born_ms: created_ms,
                        gone_ms: None,
                        restarts: 0,
                        oom: false,
                    })
                    .collect();
                let hpa = matches!(svc.name, "frontend" | "cart" | "checkout" | "currency")
                    .then_some((svc.replicas, svc.replicas * 3));
                Workload {
                    replicas: svc.replicas,
                    svc,
                    templates: vec![template.clone()],
                    template,
                    rev: 1,
                    generation: 1,
                    hpa,
                    replicas_at: Vec::new(),
                    hpa_at: Vec::new(),
                    pods,
                }
            })
            .collect();
        let mut w = World {
            workloads,
            effects: Vec::new(),
            pending: BTreeMap::new(),
            seq: 0,
            counters: HashMap::new(),
            nodes_ready: NODES.iter().map(|n| (n.to_string(), true)).collect(),
            rng: Rng(seed.wrapping_mul(2_654_435_761).max(1)),
            created,
        };
        w.queue_initial(created_ms);
        w
    }

    fn queue_initial(&mut self, t: i64) {
        let c = self.created.clone();
        for n in NODES {
            self.queue(
                t,
                Op::Apply("nodes", cluster::node(n, true, &[], "kubelet", &c)),
            );
        }
        for i in 0..self.workloads.len() {
            let w = self.workloads[i].clone();
            let s = &w.svc;
            self.queue(
                t,
                Op::Apply(
                    plural(s.kind),
                    cluster::workload(s, &w.template, w.replicas, 1, "helm", &c, &c),
                ),
            );
            if s.kind == "Deployment" {
                self.queue(
                    t,
                    Op::Apply(
                        "replicasets",
                        cluster::replicaset(s, &w.template, w.replicas, 1, &c),
                    ),
                );
            }
            for p in &w.pods {
                self.queue(
                    t,
                    Op::Apply(
                        "pods",
                        cluster::pod(s, &w.template, &p.name, &p.node, true, &c),
                    ),
                );
            }
            self.queue(
                t,
                Op::Apply("services", cluster::service(s, s.name, "helm", &c)),
            );
            let cm = cluster::configmap(
                s.namespace,
                &cluster::configmap_name(s),
                &[("LOG_LEVEL", "info"), ("CACHE_TTL", "30s")],
                "helm",
                &c,
            );
            self.queue(t, Op::Apply("configmaps", cm));
            if let Some((min, max)) = w.hpa {
                self.queue(
                    t,
                    Op::Apply(
                        "horizontalpodautoscalers",
                        cluster::hpa(s, min, max, w.replicas, "helm", &c),
                    ),
                );
            }
        }
        for app in ["cart", "checkout"] {
            self.queue(
                t,
                Op::Apply("poddisruptionbudgets", cluster::pdb("shop", app, "1", &c)),
            );
        }
        self.queue(
            t,
            Op::Apply(
                "networkpolicies",
                cluster::network_policy(
                    "shop",
                    "shop-default",
                    "frontend",
                    None,
                    Some(&["loadgenerator"]),
                    &c,
                ),
            ),
        );
    }

    pub fn queue(&mut self, t: i64, op: Op) {
        self.seq += 1;
        self.pending.insert((t, self.seq), op);
    }

    /// The changes due by `t`, in time order.
    pub fn changes_until(&mut self, t: i64) -> Vec<Op> {
        let later = self.pending.split_off(&(t + 1, 0));
        let due = std::mem::replace(&mut self.pending, later);
        due.into_values().collect()
    }

    pub fn add_effect(&mut self, e: Effect) {
        self.effects.push(e);
    }

    /// Ends every effect still open at `t` (an incident resolved).
    pub fn end_effects(&mut self, t: i64) {
        for e in &mut self.effects {
            if e.until_ms.is_none() && e.from_ms <= t {
                e.until_ms = Some(t);
            }
        }
    }

    fn idx(&self, workload: &str) -> usize {
        self.workloads
            .iter()
            .position(|w| w.id() == workload || w.svc.name == workload)
            .unwrap_or(0)
    }

    pub fn service(&self, workload: &str) -> &Service {
        &self.workloads[self.idx(workload)].svc
    }

    /// The current template revision of a workload.
    pub fn revision(&self, workload: &str) -> u64 {
        self.workloads[self.idx(workload)].rev
    }

    /// Changes a workload's pod template at `t` (a rollout by `manager`): the
    /// workload's new version, a new ReplicaSet, new pods after 10 s, the old
    /// ones gone after 45 s, the scaling events. Returns the new revision.
    pub fn rollout(
        &mut self,
        t: i64,
        workload: &str,
        manager: &str,
        f: impl FnOnce(&mut Template),
    ) -> u64 {
        let i = self.idx(workload);
        let ts = rfc3339(t);
        let (old, new, svc, replicas, rev, generation) = {
            let w = &mut self.workloads[i];
            let old = w.template.clone();
            f(&mut w.template);
            w.rev += 1;
            w.generation += 1;
            w.templates.push(w.template.clone());
            (
                old,
                w.template.clone(),
                w.svc.clone(),
                w.replicas,
                w.rev,
                w.generation,
            )
        };
        let created = self.created.clone();
        self.queue(
            t,
            Op::Apply(
                plural(svc.kind),
                cluster::workload(&svc, &new, replicas, generation, manager, &ts, &created),
            ),
        );
        let up = t + 10_000;
        let down = t + 45_000;
        if svc.kind == "Deployment" {
            self.queue(
                t,
                Op::Apply(
                    "replicasets",
                    cluster::replicaset(&svc, &new, replicas, rev, &ts),
                ),
            );
            let old_rs = format!("{}-{}", svc.name, old.hash(&svc));
            let new_rs = format!("{}-{}", svc.name, new.hash(&svc));
            self.queue(
                t,
                Op::Apply(
                    "events",
                    cluster::event(
                        svc.namespace,
                        "Deployment",
                        svc.name,
                        "ScalingReplicaSet",
                        &format!("Scaled up replica set {new_rs} from 0 to {replicas}"),
                        false,
                        1,
                        &ts,
                        &ts,
                    ),
                ),
            );
            let mut old_rs_obj = cluster::replicaset(&svc, &old, 0, rev - 1, &created);
            old_rs_obj["metadata"]["managedFields"] = cluster::managed(
                "kube-controller-manager",
                &rfc3339(down),
                json!({"f:spec": {"f:replicas": {}}}),
                Some(&rfc3339(down)),
            );
            self.queue(down, Op::Apply("replicasets", old_rs_obj));
            self.queue(
                down,
                Op::Apply(
                    "events",
                    cluster::event(
                        svc.namespace,
                        "Deployment",
                        svc.name,
                        "ScalingReplicaSet",
                        &format!("Scaled down replica set {old_rs} from {replicas} to 0"),
                        false,
                        1,
                        &rfc3339(down),
                        &rfc3339(down),
                    ),
                ),
            );
        }
        let w = &mut self.workloads[i];
        let mut born = Vec::new();
        let mut gone = Vec::new();
        for p in w.pods.iter_mut().filter(|p| p.gone_ms.is_none()) {
            p.gone_ms = Some(if svc.kind == "StatefulSet" { up } else { down });
            gone.push(p.clone());
        }
        for k in 0..replicas {
            let p = Pod {
                name: pod_name(&svc, &new, rev, k),
                node: NODES[(i + k as usize + rev as usize) % NODES.len()].to_string(),
                rev,
                born_ms: up,
                gone_ms: None,
                restarts: 0,
                oom: false,
            };
            born.push(p.clone());
            w.pods.push(p);
        }
        for p in gone {
            let mut o = cluster::pod(&svc, &old, &p.name, &p.node, true, &created);
            o["metadata"]["deletionTimestamp"] = json!(rfc3339(p.gone_ms.unwrap_or(down)));
            self.queue(p.gone_ms.unwrap_or(down), Op::Delete("pods", o));
        }
        for p in born {
            self.queue(
                up,
                Op::Apply(
                    "pods",
                    cluster::pod(&svc, &new, &p.name, &p.node, true, &rfc3339(up)),
                ),
            );
        }
        rev
    }

    /// Rolls a workload back to its first template and replica count at
    /// `t` (an operator's fix, by `argocd-controller`).
    pub fn restore(&mut self, t: i64, workload: &str) {
        let i = self.idx(workload);
        let first = self.workloads[i].templates[0].clone();
        let base = self.workloads[i].svc.replicas;
        if self.workloads[i].template != first {
            self.rollout(t, workload, "argocd-controller", move |tpl| *tpl = first);
        }
        if self.workloads[i].replicas != base {
            self.scale(t + 1_000, workload, base, "argocd-controller");
        }
    }

    /// Scales a workload to `replicas` at `t` (by `manager`).
    pub fn scale(&mut self, t: i64, workload: &str, replicas: u32, manager: &str) {
        let i = self.idx(workload);
        let ts = rfc3339(t);
        let created = self.created.clone();
        let w = &mut self.workloads[i];
        let from = w.replicas;
        w.replicas = replicas;
        w.replicas_at.push((t, replicas));
        let svc = w.svc.clone();
        let template = w.template.clone();
        let rev = w.rev;
        let mut added = Vec::new();
        let mut removed = Vec::new();
        let alive: Vec<usize> = (0..w.pods.len())
            .filter(|&k| w.pods[k].gone_ms.is_none())
            .collect();
        if replicas < alive.len() as u32 {
            for &k in &alive[replicas as usize..] {
                w.pods[k].gone_ms = Some(t + 5_000);
                removed.push(w.pods[k].clone());
            }
        } else {
            for k in alive.len() as u32..replicas {
                let p = Pod {
                    name: pod_name(&svc, &template, rev, k + 100 * from),
                    node: NODES[(i + k as usize) % NODES.len()].to_string(),
                    rev,
                    born_ms: t + 10_000,
                    gone_ms: None,
                    restarts: 0,
                    oom: false,
                };
                added.push(p.clone());
                w.pods.push(p);
            }
        }
        let generation = w.generation;
        self.queue(
            t,
            Op::Apply(
                plural(svc.kind),
                cluster::workload(
                    &svc, &template, replicas, generation, manager, &ts, &created,
                ),
            ),
        );
        if svc.kind == "Deployment" {
            let rs = format!("{}-{}", svc.name, template.hash(&svc));
            self.queue(
                t,
                Op::Apply(
                    "replicasets",
                    cluster::replicaset(&svc, &template, replicas, rev, &ts),
                ),
            );
            let verb = if replicas > from { "up" } else { "down" };
            self.queue(
                t,
                Op::Apply(
                    "events",
                    cluster::event(
                        svc.namespace,
                        "Deployment",
                        svc.name,
                        "ScalingReplicaSet",
                        &format!("Scaled {verb} replica set {rs} from {from} to {replicas}"),
                        false,
                        1,
                        &ts,
                        &ts,
                    ),
                ),
            );
        }
        for p in removed {
            let mut o = cluster::pod(&svc, &template, &p.name, &p.node, true, &created);
            o["metadata"]["deletionTimestamp"] = json!(rfc3339(t + 5_000));
            self.queue(t + 5_000, Op::Delete("pods", o));
        }
        for p in added {
            self.queue(
                t + 10_000,
                Op::Apply(
                    "pods",
                    cluster::pod(
                        &svc,
                        &template,
                        &p.name,
                        &p.node,
                        true,
                        &rfc3339(t + 10_000),
                    ),
                ),
            );
        }
    }

    /// Changes a workload's HPA bounds at `t`.
    pub fn set_hpa(&mut self, t: i64, workload: &str, min: u32, max: u32, manager: &str) {
        let i = self.idx(workload);
        let before = self.workloads[i].hpa;
        if self.workloads[i].hpa_at.is_empty() {
            self.workloads[i].hpa_at.push((i64::MIN, before));
        }
        self.workloads[i].hpa = Some((min, max));
        self.workloads[i].hpa_at.push((t, Some((min, max))));
        let w = &self.workloads[i];
        let obj = cluster::hpa(&w.svc, min, max, w.replicas.min(max), manager, &rfc3339(t));
        self.queue(t, Op::Apply("horizontalpodautoscalers", obj));
    }

    /// A node's Ready condition (and taints) at `t`.
    pub fn set_node(&mut self, t: i64, node: &str, ready: bool, taints: &[(&str, &str)]) {
        self.nodes_ready.insert(node.to_string(), ready);
        let ts = rfc3339(t);
        let manager = if taints.is_empty() {
            "kube-controller-manager"
        } else {
            "kubectl-taint"
        };
        self.queue(
            t,
            Op::Apply("nodes", cluster::node(node, ready, taints, manager, &ts)),
        );
    }

    /// The pods of a workload on a node, now.
    pub fn pods_on(&self, node: &str) -> Vec<(String, String)> {
        self.workloads
            .iter()
            .flat_map(|w| {
                w.pods
                    .iter()
                    .filter(|p| p.gone_ms.is_none() && p.node == node)
                    .map(|p| (w.id(), p.name.clone()))
            })
            .collect()
    }

    /// A Warning or Normal event about an object at `t` (lasting `secs`).
    #[allow(clippy::too_many_arguments)]
    pub fn event(
        &mut self,
        t: i64,
        ns: &str,
        kind: &str,
        name: &str,
        reason: &str,
        message: &str,
        warning: bool,
        secs: i64,
    ) {
        let count = (secs / 15).max(1) as u32;
        let ev = cluster::event(
            ns,
            kind,
            name,
            reason,
            message,
            warning,
            count,
            &rfc3339(t),
            &rfc3339(t + secs * 1000),
        );
        self.queue(t, Op::Apply("events", ev));
    }

    /// Names of the live pods of a workload at `t`.
    pub fn pods_of(&self, workload: &str, t: i64) -> Vec<String> {
        self.workloads[self.idx(workload)]
            .pods
            .iter()
            .filter(|p| p.born_ms <= t && p.gone_ms.is_none_or(|g| t < g))
            .map(|p| p.name.clone())
            .collect()
    }

    /// The signals of the scrape at `t` (every `STEP_MS`, in time order).
    pub fn step(&mut self, t: i64, out: &mut Batch) {
        let dt = STEP_MS as f64 / 1000.0;
        let n = self.workloads.len();
        // Per workload: traffic multiplier and utilisation.
        let traffic: Vec<f64> = (0..n)
            .map(|i| {
                let id = self.workloads[i].id();
                self.effects
                    .iter()
                    .filter(|e| e.active(t) && e.workload == id && e.traffic > 0.0)
                    .map(|e| e.traffic)
                    .product::<f64>()
            })
            .collect();
        // Service-level (latency, errors) as callers see them, callees first.
        let mut seen: Vec<Option<(f64, f64)>> = vec![None; n];
        let mut pod_state: Vec<Vec<PodView>> = vec![Vec::new(); n];
        for _ in 0..n {
            for i in 0..n {
                if seen[i].is_some() {
                    continue;
                }
                let calls = self.workloads[i].svc.calls;
                let callees: Option<Vec<(String, usize, f64, f64)>> = calls
                    .iter()
                    .map(|c| {
                        let j = self.idx(c);
                        seen[j].map(|(l, e)| (self.workloads[j].id(), j, l, e))
                    })
                    .collect();
                let Some(callees) = callees else { continue };
                let views = self.pod_views(i, t, traffic[i], &callees);
                let live: Vec<&PodView> = views.iter().filter(|v| !v.silent || v.down).collect();
                let k = live.len().max(1) as f64;
                let lat = live.iter().map(|v| v.latency_ms).sum::<f64>() / k;
                let err = if live.is_empty() {
                    1.0
                } else {
                    live.iter().map(|v| v.errors).sum::<f64>() / k
                };
                seen[i] = Some((lat, err.min(1.0)));
                pod_state[i] = views;
            }
        }
        for i in 0..n {
            let views = std::mem::take(&mut pod_state[i]);
            self.emit_workload(i, t, dt, traffic[i], &views, out);
        }
        self.emit_edges(t, dt, &traffic, &seen, out);
        for (node, ready) in &self.nodes_ready {
            for (status, v) in [("true", *ready), ("false", false), ("unknown", !*ready)] {
                out.push(
                    labels(&[
                        ("__name__", "kube_node_status_condition"),
                        ("node", node),
                        ("condition", "Ready"),
                        ("status", status),
                    ]),
                    t,
                    f64::from(u8::from(v)),
                );
            }
        }
    }

    fn pod_views(
        &mut self,
        i: usize,
        t: i64,
        traffic: f64,
        callees: &[(String, usize, f64, f64)],
    ) -> Vec<PodView> {
        let w = &self.workloads[i];
        let id = w.id();
        let alive: Vec<usize> = (0..w.pods.len())
            .filter(|&k| w.pods[k].born_ms <= t && w.pods[k].gone_ms.is_none_or(|g| t < g))
            .collect();
        let serving = alive
            .iter()
            .filter(|&&k| {
                self.nodes_ready
                    .get(&w.pods[k].node)
                    .copied()
                    .unwrap_or(true)
            })
            .count()
            .max(1) as f64;
        // Utilisation: 35 % of the limit at baseline traffic per pod.
        let base_per_pod = w.svc.rps / f64::from(w.svc.replicas.max(1));
        let per_pod = w.svc.rps * traffic / serving;
        let need_mi = 0.45 * f64::from(w.svc.memory_limit_mi);
        let mut views = Vec::new();
        for &k in &alive {
            let p = &w.pods[k];
            // The pod's own template: a rollout's limits apply to its new pods.
            let tpl = w
                .templates
                .get(p.rev.saturating_sub(1) as usize)
                .unwrap_or(&w.template);
            let util = 0.45 * (per_pod / base_per_pod.max(1e-9)) * f64::from(w.svc.cpu_limit_m)
                / f64::from(tpl.cpu_limit_m.max(1));
            let sat = if util > 0.75 {
                1.0 + 12.0 * (util - 0.75)
            } else {
                1.0
            };
            let sat_err = ((util - 1.0) * 0.3).clamp(0.0, 0.5);
            // Queueing: a saturated server's requests wait.
            let queue_ms = (400.0 * (util - 0.75)).max(0.0);
            let oom = f64::from(tpl.memory_limit_mi) < need_mi;
            let mut v = PodView {
                pod: k,
                latency_ms: w.svc.base_ms * sat * self.rng.jitter(0.08) + queue_ms,
                errors: w.svc.base_err * self.rng.jitter(0.5) + sat_err,
                util: util.min(1.0),
                throttle: ((util - 0.75) * 1.5).clamp(0.0, 0.9),
                silent: false,
                down: false,
                oom,
                log: None,
                cut: Vec::new(),
            };
            if oom {
                v.errors += 0.3;
                v.log = Some("fatal error: runtime: out of memory".into());
            }
            for e in self.effects.iter().filter(|e| e.active(t)) {
                let hits = match &e.node {
                    Some(n) => *n == p.node,
                    None => e.workload == id && e.min_rev.is_none_or(|r| p.rev >= r),
                };
                if !hits {
                    continue;
                }
                v.latency_ms += e.latency_ms;
                v.errors += e.errors;
                if e.silent {
                    v.silent = true;
                    v.down = true;
                }
                if let Some(c) = &e.cut {
                    v.cut.push(c.clone());
                }
                if e.log.is_some() {
                    v.log.clone_from(&e.log);
                }
            }
            for (cid, _, l, err) in callees {
                let cname = cid.rsplit('/').next().unwrap_or(cid);
                if v.cut.iter().any(|c| c == cname || c == cid) {
                    v.errors += 0.8 / callees.len() as f64 + 0.2;
                    v.latency_ms += 1000.0 / callees.len() as f64;
                    if v.log.is_none() {
                        v.log = Some(format!("dial tcp {cname}:80: i/o timeout"));
                    }
                } else {
                    v.latency_ms += 0.6 * l;
                    v.errors += 0.8 * (err - 0.004).max(0.0);
                    if *err > 0.05 && v.log.is_none() {
                        v.log = Some(format!("error calling {cname}: rpc error: code = Unavailable desc = upstream returned 503"));
                    }
                }
            }
            v.errors = v.errors.clamp(0.0, 1.0);
            views.push(v);
        }
        views
    }

    fn emit_workload(
        &mut self,
        i: usize,
        t: i64,
        dt: f64,
        traffic: f64,
        views: &[PodView],
        out: &mut Batch,
    ) {
        let ns = self.workloads[i].svc.namespace;
        let name = self.workloads[i].svc.name;
        let kind = self.workloads[i].svc.kind;
        let http = self.workloads[i].svc.http;
        let rps = self.workloads[i].svc.rps * traffic;
        let serving = views.iter().filter(|v| !v.silent).count().max(1) as f64;
        let need_mi = 0.45 * f64::from(self.workloads[i].svc.memory_limit_mi);
        let image = self.workloads[i].template.image.clone();
        let replicas = at_time(
            &self.workloads[i].replicas_at,
            t,
            self.workloads[i].svc.replicas,
        );
        let hpa = if self.workloads[i].hpa_at.is_empty() {
            self.workloads[i].hpa
        } else {
            at_time(&self.workloads[i].hpa_at, t, None)
        };
        let ts = rfc3339(t);
        let kind_label = if kind == "Deployment" {
            "k8s_deployment_name"
        } else {
            "k8s_statefulset_name"
        };
        for v in views {
            let (pod, node, rev, restarts_before) = {
                let p = &self.workloads[i].pods[v.pod];
                (p.name.clone(), p.node.clone(), p.rev, p.restarts)
            };
            let tpl = self.workloads[i]
                .templates
                .get(rev.saturating_sub(1) as usize)
                .cloned()
                .unwrap_or_else(|| self.workloads[i].template.clone());
            let rs = format!("{name}-{}", tpl.hash(&self.workloads[i].svc));
            // kube-state-metrics (it reads the API server: a pod on a lost
            // node is still listed).
            let (owner_kind, owner_name) = if kind == "StatefulSet" {
                ("StatefulSet", name.to_string())
            } else {
                ("ReplicaSet", rs.clone())
            };
            out.push(
                labels(&[
                    ("__name__", "kube_pod_owner"),
                    ("namespace", ns),
                    ("pod", &pod),
                    ("owner_kind", owner_kind),
                    ("owner_name", &owner_name),
                    ("owner_is_controller", "true"),
                ]),
                t,
                1.0,
            );
            out.push(
                labels(&[
                    ("__name__", "kube_pod_info"),
                    ("namespace", ns),
                    ("pod", &pod),
                    ("node", &node),
                    ("created_by_kind", owner_kind),
                    ("created_by_name", &owner_name),
                ]),
                t,
                1.0,
            );
            let mut restarts = restarts_before;
            if v.oom && (t / STEP_MS) % 4 == 0 {
                restarts += 1;
                let p = &mut self.workloads[i].pods[v.pod];
                p.restarts = restarts;
                if !p.oom {
                    p.oom = true;
                    let msg = format!("Back-off restarting failed container {name} in pod {pod}");
                    self.event(t, ns, "Pod", &pod, "BackOff", &msg, true, 300);
                    self.event(
                        t,
                        ns,
                        "Pod",
                        &pod,
                        "OOMKilling",
                        &format!("Memory cgroup out of memory: Killed process (container {name})"),
                        true,
                        300,
                    );
                }
            }
            out.push(
                labels(&[
                    ("__name__", "kube_pod_container_status_restarts_total"),
                    ("namespace", ns),
                    ("pod", &pod),
                    ("container", name),
                ]),
                t,
                restarts as f64,
            );
            if restarts > 0 {
                out.push(
                    labels(&[
                        (
                            "__name__",
                            "kube_pod_container_status_last_terminated_reason",
                        ),
                        ("namespace", ns),
                        ("pod", &pod),
                        ("container", name),
                        ("reason", "OOMKilled"),
                    ]),
                    t,
                    1.0,
                );
            }
            // The kubelet's and Beyla's signals stop with the pod's node.
            if v.silent {
                continue;
            }
            // cAdvisor.
            let c = [
                ("namespace", ns),
                ("pod", pod.as_str()),
                ("container", name),
                ("image", image.as_str()),
            ];
            let cpu = v.util * f64::from(tpl.cpu_limit_m) / 1000.0;
            self.counter(
                out,
                &[&[("__name__", "container_cpu_usage_seconds_total")], &c[..]].concat(),
                t,
                cpu * dt,
            );
            let periods = dt * 10.0;
            self.counter(
                out,
                &[&[("__name__", "container_cpu_cfs_periods_total")], &c[..]].concat(),
                t,
                periods,
            );
            self.counter(
                out,
                &[
                    &[("__name__", "container_cpu_cfs_throttled_periods_total")],
                    &c[..],
                ]
                .concat(),
                t,
                periods * v.throttle,
            );
            let mem_mi = if v.oom {
                f64::from(tpl.memory_limit_mi) * 0.98
            } else {
                need_mi * self.rng.jitter(0.03)
            };
            out.push(
                labels(
                    &[
                        &[("__name__", "container_memory_working_set_bytes")],
                        &c[..],
                    ]
                    .concat(),
                ),
                t,
                mem_mi * 1_048_576.0,
            );
            let net = [
                ("namespace", ns),
                ("pod", pod.as_str()),
                ("container", ""),
                ("interface", "eth0"),
            ];
            let pod_rps = rps / serving;
            self.counter(
                out,
                &[
                    &[("__name__", "container_network_receive_bytes_total")],
                    &net[..],
                ]
                .concat(),
                t,
                pod_rps * dt * 900.0,
            );
            self.counter(
                out,
                &[
                    &[("__name__", "container_network_transmit_bytes_total")],
                    &net[..],
                ]
                .concat(),
                t,
                pod_rps * dt * 4200.0,
            );
            // Beyla RED (server side).
            if http {
                let reqs = pod_rps * dt * self.rng.jitter(0.05);
                let errs = reqs * v.errors;
                let mean_s = v.latency_ms / 1000.0;
                for (code, n) in [("200", reqs - errs), ("500", errs)] {
                    let base = [
                        ("k8s_namespace_name", ns),
                        (kind_label, name),
                        ("k8s_owner_name", name),
                        ("k8s_replicaset_name", rs.as_str()),
                        ("k8s_pod_name", pod.as_str()),
                        ("k8s_node_name", node.as_str()),
                        ("service_name", name),
                        ("service_namespace", ns),
                        ("http_request_method", "GET"),
                        ("http_response_status_code", code),
                    ];
                    for le in LE {
                        let frac = 1.0 - (-le / mean_s.max(1e-6)).exp();
                        let les = format!("{le}");
                        self.counter(
                            out,
                            &[
                                &[
                                    ("__name__", "http_server_request_duration_seconds_bucket"),
                                    ("le", les.as_str()),
                                ],
                                &base[..],
                            ]
                            .concat(),
                            t,
                            n * frac,
                        );
                    }
                    self.counter(
                        out,
                        &[
                            &[
                                ("__name__", "http_server_request_duration_seconds_bucket"),
                                ("le", "+Inf"),
                            ],
                            &base[..],
                        ]
                        .concat(),
                        t,
                        n,
                    );
                    self.counter(
                        out,
                        &[
                            &[("__name__", "http_server_request_duration_seconds_sum")],
                            &base[..],
                        ]
                        .concat(),
                        t,
                        n * mean_s,
                    );
                    self.counter(
                        out,
                        &[
                            &[("__name__", "http_server_request_duration_seconds_count")],
                            &base[..],
                        ]
                        .concat(),
                        t,
                        n,
                    );
                }
                // Logs: one access line, and error lines as errors go.
                let podv = self.workloads[i].pods[v.pod].clone();
                out.logs.push(log_record(
                    t,
                    ns,
                    name,
                    &podv.name,
                    &node,
                    &image,
                    &rs,
                    "stdout",
                    &format!(
                        "{{\"level\":\"info\",\"msg\":\"GET / 200 {:.1}ms\",\"ts\":\"{ts}\"}}",
                        v.latency_ms
                    ),
                ));
                let n_err = (v.errors * 20.0).round().min(8.0) as i64;
                for k in 0..n_err {
                    let line = v
                        .log
                        .clone()
                        .unwrap_or_else(|| "request failed: internal error".into());
                    out.logs.push(log_record(
                        t + k * 997,
                        ns,
                        name,
                        &podv.name,
                        &node,
                        &image,
                        &rs,
                        "stderr",
                        &format!(
                            "{{\"level\":\"error\",\"msg\":\"{}\",\"ts\":\"{ts}\"}}",
                            line.replace('"', "'")
                        ),
                    ));
                }
            }
        }
        let w = [("namespace", ns)];
        if kind == "Deployment" {
            out.push(
                labels(
                    &[
                        &[
                            ("__name__", "kube_deployment_spec_replicas"),
                            ("deployment", name),
                        ],
                        &w[..],
                    ]
                    .concat(),
                ),
                t,
                f64::from(replicas),
            );
            out.push(
                labels(
                    &[
                        &[
                            ("__name__", "kube_deployment_status_replicas_available"),
                            ("deployment", name),
                        ],
                        &w[..],
                    ]
                    .concat(),
                ),
                t,
                serving,
            );
            for (k, tpl) in self.workloads[i].templates.iter().enumerate() {
                let rs = format!("{name}-{}", tpl.hash(&self.workloads[i].svc));
                if k + 1 == self.workloads[i].rev as usize
                    || self.workloads[i]
                        .pods
                        .iter()
                        .any(|p| p.rev == k as u64 + 1 && p.gone_ms.is_none_or(|g| t < g))
                {
                    out.push(
                        labels(&[
                            ("__name__", "kube_replicaset_owner"),
                            ("namespace", ns),
                            ("replicaset", &rs),
                            ("owner_kind", "Deployment"),
                            ("owner_name", name),
                            ("owner_is_controller", "true"),
                        ]),
                        t,
                        1.0,
                    );
                }
            }
        } else {
            out.push(
                labels(
                    &[
                        &[
                            ("__name__", "kube_statefulset_replicas"),
                            ("statefulset", name),
                        ],
                        &w[..],
                    ]
                    .concat(),
                ),
                t,
                f64::from(replicas),
            );
        }
        if let Some((min, max)) = hpa {
            let h = [("namespace", ns), ("horizontalpodautoscaler", name)];
            out.push(
                labels(
                    &[
                        &[(
                            "__name__",
                            "kube_horizontalpodautoscaler_status_current_replicas",
                        )],
                        &h[..],
                    ]
                    .concat(),
                ),
                t,
                f64::from(replicas),
            );
            out.push(
                labels(
                    &[
                        &[("__name__", "kube_horizontalpodautoscaler_spec_max_replicas")],
                        &h[..],
                    ]
                    .concat(),
                ),
                t,
                f64::from(max),
            );
            out.push(
                labels(
                    &[
                        &[("__name__", "kube_horizontalpodautoscaler_spec_min_replicas")],
                        &h[..],
                    ]
                    .concat(),
                ),
                t,
                f64::from(min),
            );
        }
    }

    fn emit_edges(
        &mut self,
        t: i64,
        dt: f64,
        traffic: &[f64],
        seen: &[Option<(f64, f64)>],
        out: &mut Batch,
    ) {
        let n = self.workloads.len();
        for i in 0..n {
            let calls = self.workloads[i].svc.calls;
            for c in calls {
                let j = self.idx(c);
                let (cli, srv) = (self.workloads[i].svc.clone(), self.workloads[j].svc.clone());
                let callers = self
                    .workloads
                    .iter()
                    .filter(|w| w.svc.calls.contains(&srv.name))
                    .count()
                    .max(1) as f64;
                let id_i = self.workloads[i].id();
                let cut = self.effects.iter().any(|e| {
                    e.active(t) && e.workload == id_i && e.cut.as_deref() == Some(srv.name)
                });
                let rate = srv.rps * traffic[j].max(traffic[i]) / callers;
                let (lat, err) = seen[j].unwrap_or((1.0, 0.0));
                let (lat, err) = if cut { (1000.0, 1.0) } else { (lat, err) };
                let reqs = rate * dt;
                let sg = [
                    ("client", cli.name),
                    ("client_namespace", cli.namespace),
                    ("server", srv.name),
                    ("server_namespace", srv.namespace),
                    ("connection_type", ""),
                ];
                self.counter(
                    out,
                    &[
                        &[("__name__", "traces_service_graph_request_total")],
                        &sg[..],
                    ]
                    .concat(),
                    t,
                    reqs,
                );
                self.counter(
                    out,
                    &[
                        &[("__name__", "traces_service_graph_request_failed_total")],
                        &sg[..],
                    ]
                    .concat(),
                    t,
                    reqs * err,
                );
                for le in LE {
                    let frac = 1.0 - (-le / (lat / 1000.0).max(1e-6)).exp();
                    let les = format!("{le}");
                    self.counter(
                        out,
                        &[
                            &[
                                (
                                    "__name__",
                                    "traces_service_graph_request_server_seconds_bucket",
                                ),
                                ("le", les.as_str()),
                            ],
                            &sg[..],
                        ]
                        .concat(),
                        t,
                        reqs * frac,
                    );
                }
                self.counter(
                    out,
                    &[
                        &[
                            (
                                "__name__",
                                "traces_service_graph_request_server_seconds_bucket",
                            ),
                            ("le", "+Inf"),
                        ],
                        &sg[..],
                    ]
                    .concat(),
                    t,
                    reqs,
                );
                let bytes = if cut { 0.0 } else { reqs };
                for (a, b, per) in [(&cli, &srv, 900.0), (&srv, &cli, 4200.0)] {
                    let f = [
                        ("__name__", "beyla_network_flow_bytes_total"),
                        ("k8s_src_namespace", a.namespace),
                        ("k8s_src_owner_name", a.name),
                        ("k8s_src_owner_type", a.kind),
                        ("k8s_dst_namespace", b.namespace),
                        ("k8s_dst_owner_name", b.name),
                        ("k8s_dst_owner_type", b.kind),
                    ];
                    self.counter(out, &f, t, bytes * per);
                }
            }
        }
    }

    fn counter(&mut self, out: &mut Batch, pairs: &[(&str, &str)], t: i64, inc: f64) {
        let l = labels(pairs);
        let c = self.counters.entry(l.fingerprint()).or_insert(0.0);
        *c += inc.max(0.0);
        let v = *c;
        out.push(l, t, v);
    }
}

#[derive(Debug, Clone)]
struct PodView {
    pod: usize,
    latency_ms: f64,
    errors: f64,
    util: f64,
    throttle: f64,
    silent: bool,
    down: bool,
    oom: bool,
    log: Option<String>,
    cut: Vec<String>,
}

/// The value of a step function at `t`: the last entry from at or before `t`, else `initial`.
fn at_time<T: Copy>(steps: &[(i64, T)], t: i64, initial: T) -> T {
    steps
        .iter()
        .rev()
        .find(|(from, _)| *from <= t)
        .map_or(initial, |(_, v)| *v)
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    Labels::from_pairs(pairs.iter().copied())
}

fn plural(kind: &str) -> &'static str {
    match kind {
        "StatefulSet" => "statefulsets",
        _ => "deployments",
    }
}

fn pod_name(s: &Service, t: &Template, rev: u64, k: u32) -> String {
    if s.kind == "StatefulSet" {
        return format!("{}-{k}", s.name);
    }
    let suffix = &cluster::short_hash(&format!("{}{rev}{k}", s.name))[..5];
    format!("{}-{}-{suffix}", s.name, t.hash(s))
}

#[allow(clippy::too_many_arguments)]
fn log_record(
    t: i64,
    ns: &str,
    app: &str,
    pod: &str,
    node: &str,
    image: &str,
    rs: &str,
    stream: &str,
    line: &str,
) -> Value {
    let hash = rs.rsplit('-').next().unwrap_or("");
    json!({
        "date": t as f64 / 1000.0,
        "time": format!("{}.{:03}000000Z", rfc3339(t).trim_end_matches('Z'), t.rem_euclid(1000)),
        "stream": stream, "_p": "F", "log": line,
        "kubernetes": {"pod_name": pod, "namespace_name": ns, "pod_id": cluster::uid("Pod", ns, pod),
            "labels": {"app": app, "pod-template-hash": hash}, "host": node, "container_name": app,
            "container_image": image}
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn red_errors(b: &mut Batch, workload: &str) -> (f64, f64) {
        let mut ok = 0.0;
        let mut bad = 0.0;
        for s in b.take_series() {
            if s.labels.metric_name() == "http_server_request_duration_seconds_count"
                && s.labels.get("k8s_owner_name") == Some(workload)
            {
                let v = s.samples.last().map_or(0.0, |x| x.value) - s.samples[0].value;
                if s.labels.get("http_response_status_code") == Some("500") {
                    bad += v;
                } else {
                    ok += v;
                }
            }
        }
        (ok, bad)
    }

    #[test]
    fn a_bad_rollout_raises_errors_two_hops_up() {
        let t0 = 1_800_000_000_000;
        let mut w = World::new(1, t0);
        let mut b = Batch::default();
        for k in 0..20 {
            w.step(t0 + k * STEP_MS, &mut b);
        }
        let (ok, bad) = red_errors(&mut b, "frontend");
        assert!(bad / (ok + bad) < 0.02, "baseline {bad}/{ok}");
        let t1 = t0 + 20 * STEP_MS;
        let rev = w.rollout(t1, "shop/payment", "argocd-controller", |t| {
            t.image = "registry.local/shop/payment:2.2.0".into()
        });
        let mut e = Effect::on("shop/payment", t1);
        e.min_rev = Some(rev);
        e.errors = 0.5;
        w.add_effect(e);
        for k in 20..60 {
            w.step(t0 + k * STEP_MS, &mut b);
        }
        let (ok, bad) = red_errors(&mut b, "frontend");
        assert!(bad / (ok + bad) > 0.1, "after {bad}/{ok}");
        let changes = w.changes_until(t0 + 60 * STEP_MS);
        assert!(changes
            .iter()
            .any(|c| matches!(c, Op::Apply("replicasets", _))));
        assert!(changes.iter().any(|c| matches!(c, Op::Delete("pods", _))));
    }
}
