//! The store reads of a suspects query, each bounded: the topology at the
//! symptom time, the symptom signals of the workload and its neighbours,
//! the changes in the window, the objects needed to tell what a change
//! touches, and the log lines around the onset. Everything it decides is
//! done by the pure modules.

use crate::bins::{gauge_sum, ratio, CounterBins, Grid};
use crate::kube::{
    image_changes, node_facts, replicas, selects, template_facts, workload_change_category,
    TemplateFacts, WORKLOAD_KINDS,
};
use crate::model::{rank, Candidate, Category, OnsetInfo, Suspect};
use crate::pods::replicaset_contrast;
use crate::signals::{onsets, strongest_shift, Signal, SignalKind};
use crate::template::template;
use crate::Error;
use kube_insight_core::event::{workload_of_ref, ObjectRef};
use kube_insight_core::time::format_rfc3339_ms;
use kube_insight_core::topology::{Graph, NodeKind, OUTSIDE_ID};
use kube_insight_core::{Level, MatchOp, Matcher, TimeRange, TimeSeries};
use kube_insight_store::{
    ChangeQuery, ChangeRow, DependencyQuery, LogQuery, LogRateQuery, LogSelector, Resolution,
    SelectQuery, Store,
};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use tracing::debug;

/// Default look-back.
pub const DEFAULT_WINDOW_MS: i64 = 2 * 3_600_000;
/// Longest look-back a query may ask for.
pub const MAX_WINDOW_MS: i64 = 7 * 24 * 3_600_000;
/// Shortest look-back (the onset needs a baseline).
pub const MIN_WINDOW_MS: i64 = 5 * 60_000;

/// A suspects query.
#[derive(Debug, Clone)]
pub struct SuspectsQuery {
    pub cluster: Option<String>,
    pub namespace: String,
    pub workload: String,
    /// When the symptom is seen.
    pub at_ms: i64,
    /// How far back to look.
    pub window_ms: i64,
    /// Suspects returned at most.
    pub limit: usize,
}

impl SuspectsQuery {
    /// Checks the bounds; errors name the parameter.
    pub fn validate(&self) -> Result<(), Error> {
        if self.namespace.is_empty() {
            return Err(Error::InvalidQuery(
                "parameter namespace: required (the symptom's workload namespace)".into(),
            ));
        }
        if self.workload.is_empty() {
            return Err(Error::InvalidQuery(
                "parameter workload: required (the workload showing the symptom)".into(),
            ));
        }
        if !(MIN_WINDOW_MS..=MAX_WINDOW_MS).contains(&self.window_ms) {
            return Err(Error::InvalidQuery(format!(
                "parameter window: {} ms is outside 5m..7d",
                self.window_ms
            )));
        }
        Ok(())
    }
}

/// Caps on the work of one query; hitting one is said in the answer.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Bins of the signal grid.
    pub max_bins: usize,
    /// Workloads examined (the symptom's and its neighbours).
    pub max_scope: usize,
    /// Hops walked in the topology.
    pub max_depth: usize,
    /// Series one metric read may return.
    pub max_series: usize,
    /// Samples one metric read may return.
    pub max_samples: usize,
    /// Change rows read per namespace (and for Nodes).
    pub max_changes: usize,
    /// Object versions read to classify changes.
    pub max_object_reads: usize,
    /// Log lines read on each side of the onset.
    pub max_log_lines: usize,
    /// Candidates scored.
    pub max_candidates: usize,
    /// Namespaces whose changes are read.
    pub max_namespaces: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bins: 240,
            max_scope: 24,
            max_depth: 3,
            max_series: 2_000,
            max_samples: 2_000_000,
            max_changes: 2_000,
            max_object_reads: 80,
            max_log_lines: 2_000,
            max_candidates: 500,
            max_namespaces: 8,
        }
    }
}

/// The answer: the ranked suspects, the onset, and how the work went.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Answer {
    pub suspects: Vec<Suspect>,
    pub onset: OnsetInfo,
    /// The topology used (its save time and whether it is the nearest, not
    /// the one at the symptom time).
    pub topology: Option<String>,
    /// Caps that cut the work, one line each.
    pub capped: Vec<String>,
    /// Workloads examined, `namespace/name` → hops.
    pub scope: BTreeMap<String, usize>,
    pub candidates: usize,
}

/// A workload in scope.
#[derive(Debug, Clone)]
struct InScope {
    ns: String,
    name: String,
    distance: usize,
    /// How it relates to the symptom's workload ("2 hops downstream of shop/frontend").
    relation: String,
    kind: String,
}

struct Ctx<'a> {
    store: &'a dyn Store,
    q: &'a SuspectsQuery,
    limits: &'a Limits,
    grid: Grid,
    capped: Vec<String>,
    object_reads: usize,
}

impl Ctx<'_> {
    fn cap(&mut self, what: String) {
        if !self.capped.contains(&what) {
            debug!(cap = %what, "suspects query capped");
            self.capped.push(what);
        }
    }

    /// A metric read; a series or samples cap is noted and answered empty.
    async fn select(&mut self, matchers: Vec<Matcher>) -> Result<Vec<TimeSeries>, Error> {
        let name = matchers
            .iter()
            .find(|m| m.name == "__name__")
            .map(|m| m.value.clone())
            .unwrap_or_default();
        let q = SelectQuery {
            matchers,
            range: TimeRange {
                start_ms: self.grid.start_ms - self.grid.step_ms,
                end_ms: self.q.at_ms,
            },
            max_series: self.limits.max_series,
            max_samples: self.limits.max_samples,
            resolution: Resolution::Raw,
        };
        match self.store.select(&q).await {
            Ok(s) => Ok(s),
            Err(kube_insight_store::Error::LimitExceeded { what, limit }) => {
                self.cap(format!("{name}: {what} over {limit}, not read"));
                Ok(Vec::new())
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn object_at(
        &mut self,
        kind: &str,
        ns: &str,
        name: &str,
        at_ms: i64,
    ) -> Result<Option<serde_json::Value>, Error> {
        if self.object_reads >= self.limits.max_object_reads {
            self.cap(format!(
                "object reads: more than {}, the rest classified from the change summary",
                self.limits.max_object_reads
            ));
            return Ok(None);
        }
        self.object_reads += 1;
        Ok(self
            .store
            .events()
            .object_at(self.q.cluster.as_deref(), kind, ns, name, at_ms)
            .await?
            .map(|o| o.object))
    }
}

/// What the query needs per workload in scope.
#[derive(Default)]
struct WorkloadData {
    signals: Vec<Signal>,
    /// Beyla request and error counters with their pod label (for the
    /// ReplicaSet contrast).
    pod_requests: Vec<TimeSeries>,
    pod_errors: Vec<TimeSeries>,
    facts: Option<TemplateFacts>,
}

fn re_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if !c.is_ascii_alphanumeric() && c != '-' && c != '_' {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn m_eq(name: &str, value: &str) -> Matcher {
    Matcher::eq(name, value)
}

fn m_re(name: &str, value: &str) -> Result<Matcher, Error> {
    Matcher::new(MatchOp::RegexMatch, name, value).map_err(|e| Error::InvalidQuery(e.to_string()))
}

/// The pods of a workload by name (`name-<hash>-<id>`, `name-<n>`, `name-<id>`).
fn pod_regex(workload: &str) -> String {
    format!(
        "{}-([a-z0-9]{{1,10}}-)?[a-z0-9]{{1,10}}",
        re_escape(workload)
    )
}

/// Runs a suspects query against a store.
pub async fn suspects(
    store: &dyn Store,
    q: &SuspectsQuery,
    limits: &Limits,
) -> Result<Answer, Error> {
    q.validate()?;
    let start = q.at_ms - q.window_ms;
    let grid = Grid::over(start, q.at_ms, 15_000, limits.max_bins);
    let mut cx = Ctx {
        store,
        q,
        limits,
        grid,
        capped: Vec::new(),
        object_reads: 0,
    };
    let self_id = format!("{}/{}", q.namespace, q.workload);

    // 1. Topology at the symptom time.
    let (cluster, graph, topology_note) = topology_at(&mut cx, &self_id).await?;
    let scope = scope_of(&mut cx, graph.as_ref(), &q.namespace, &q.workload);

    // 2. Signals of every workload in scope.
    let mut data: HashMap<String, WorkloadData> = HashMap::new();
    for w in &scope {
        let d = workload_signals(&mut cx, w, w.distance == 0, cluster.as_deref()).await?;
        data.insert(format!("{}/{}", w.ns, w.name), d);
    }

    // 3. Onset of the symptom's workload.
    let end_bin = grid.len;
    let self_signals = data
        .get(&self_id)
        .map(|d| d.signals.as_slice())
        .unwrap_or(&[]);
    let found = onsets(self_signals);
    let onset = match found.first() {
        Some(o) => {
            let s = &self_signals[o.signal];
            let t = grid.time(o.onset.bin);
            let u = s.kind.unit();
            OnsetInfo {
                time: format_rfc3339_ms(t),
                time_ms: t,
                alarm_ms: grid.time(o.onset.alarm_bin),
                detected: true,
                signal: s.kind.name().to_string(),
                subject: s.subject.clone(),
                source: s.source.to_string(),
                baseline: Some(o.onset.baseline),
                value: Some(o.onset.after),
                unit: Some(u),
                summary: format!(
                    "{} of {} left its baseline of {} at {} (median since: {}; {} source)",
                    s.kind.name(),
                    s.subject,
                    u.fmt(o.onset.baseline),
                    format_rfc3339_ms(t),
                    u.fmt(o.onset.after),
                    s.source
                ),
            }
        }
        None => OnsetInfo {
            time: format_rfc3339_ms(q.at_ms),
            time_ms: q.at_ms,
            alarm_ms: q.at_ms,
            detected: false,
            signal: String::new(),
            subject: self_id.clone(),
            source: String::new(),
            baseline: None,
            value: None,
            unit: None,
            summary: if self_signals.is_empty() {
                format!("no request, saturation or log signal stored for {self_id} in the window; every change in the window is a candidate")
            } else {
                format!("no signal of {self_id} left its baseline in the window; every change in the window is a candidate")
            },
        },
    };

    // 4. Candidates up to one bin after the onset.
    let cand_range = TimeRange {
        start_ms: start,
        end_ms: (onset.alarm_ms + grid.step_ms).min(q.at_ms),
    };
    let mut cands = Vec::new();
    object_candidates(
        &mut cx,
        &scope,
        &mut data,
        graph.as_ref(),
        cand_range,
        cluster.as_deref(),
        &mut cands,
    )
    .await?;
    dependency_candidates(&mut cx, &scope, cand_range, cluster.as_deref(), &mut cands).await?;
    if onset.detected {
        log_candidates(
            &mut cx,
            &scope[0],
            onset.time_ms,
            cluster.as_deref(),
            &mut cands,
        )
        .await?;
    }
    if cands.len() > limits.max_candidates {
        cx.cap(format!(
            "candidates: {} found, the {} nearest the onset scored",
            cands.len(),
            limits.max_candidates
        ));
        cands.sort_by_key(|c: &Candidate| (onset.time_ms - c.time_ms).abs());
        cands.truncate(limits.max_candidates);
    }
    let n_candidates = cands.len();

    // 5. Evidence at each changed entity, then the ranking.
    for c in &mut cands {
        let key = format!("{}/{}", c.workload_namespace, c.workload);
        let Some(d) = data.get(&key) else {
            c.unmeasured = true;
            continue;
        };
        c.shift = strongest_shift(&d.signals, &grid, c.time_ms, end_bin);
        c.unmeasured = d.signals.is_empty();
        if matches!(
            c.category,
            Category::Image | Category::Spec | Category::Rollout
        ) {
            c.replicasets = replicaset_contrast(&d.pod_requests, &d.pod_errors, c.time_ms, q.at_ms);
        }
    }
    let mut header = vec![onset.summary.clone()];
    if let Some(n) = &topology_note {
        header.push(n.clone());
    }
    header.extend(cx.capped.iter().map(|c| format!("capped: {c}")));
    let suspects = rank(
        cands,
        &onset,
        grid.step_ms,
        q.window_ms,
        &header,
        q.limit.max(1),
    );
    Ok(Answer {
        suspects,
        onset,
        topology: topology_note,
        capped: cx.capped,
        scope: scope
            .iter()
            .map(|w| (format!("{}/{}", w.ns, w.name), w.distance))
            .collect(),
        candidates: n_candidates,
    })
}

/// The cluster and graph holding the workload at `at` (or the nearest
/// save), with a note on what was used.
async fn topology_at(
    cx: &mut Ctx<'_>,
    self_id: &str,
) -> Result<(Option<String>, Option<Graph>, Option<String>), Error> {
    let topo = cx.store.topology();
    let clusters: Vec<(String, i64, i64)> = match &cx.q.cluster {
        Some(c) => {
            let all = topo.topology_clusters().await?;
            match all.into_iter().find(|x| &x.cluster == c) {
                Some(x) => vec![(x.cluster, x.first_ms, x.last_ms)],
                None => vec![(c.clone(), i64::MIN, i64::MAX)],
            }
        }
        None => topo
            .topology_clusters()
            .await?
            .into_iter()
            .take(cx.limits.max_namespaces)
            .map(|x| (x.cluster, x.first_ms, x.last_ms))
            .collect(),
    };
    let mut fallback = None;
    for (c, first, _last) in &clusters {
        let at = cx.q.at_ms;
        let (g, nearest) = match topo.graph_at(c, at).await? {
            Some(g) => (Some(g), false),
            None if *first > at && *first != i64::MIN => (topo.graph_at(c, *first).await?, true),
            None => (None, false),
        };
        let Some(g) = g else { continue };
        let note = if nearest {
            format!(
                "no topology saved at {}; used the nearest, saved at {}",
                format_rfc3339_ms(at),
                format_rfc3339_ms(g.version_ms)
            )
        } else {
            format!(
                "topology of cluster {c} at {} (structure unchanged since {})",
                format_rfc3339_ms(at),
                format_rfc3339_ms(g.version_ms)
            )
        };
        if g.graph.nodes.contains_key(self_id) {
            return Ok((Some(c.clone()), Some((*g.graph).clone()), Some(note)));
        }
        if fallback.is_none() {
            fallback = Some(c.clone());
        }
    }
    let cluster = cx.q.cluster.clone().or(fallback);
    Ok((
        cluster,
        None,
        Some(format!(
            "{self_id} is not in any saved topology at {}: only its own changes are examined",
            format_rfc3339_ms(cx.q.at_ms)
        )),
    ))
}

/// The workload and its neighbours, breadth first, nearest first.
fn scope_of(cx: &mut Ctx<'_>, graph: Option<&Graph>, ns: &str, name: &str) -> Vec<InScope> {
    let self_id = format!("{ns}/{name}");
    let kind_of = |id: &str| {
        graph
            .and_then(|g| g.nodes.get(id))
            .map(|n| n.workload_kind.to_string())
            .unwrap_or_default()
    };
    let mut out = vec![InScope {
        ns: ns.to_string(),
        name: name.to_string(),
        distance: 0,
        relation: "the symptom's workload".to_string(),
        kind: kind_of(&self_id),
    }];
    let Some(g) = graph else {
        return out;
    };
    // id → (neighbour, this node calls it / it calls this / undirected)
    let mut adj: HashMap<&str, Vec<(&str, i8)>> = HashMap::new();
    for e in g.dependencies() {
        adj.entry(&e.source)
            .or_default()
            .push((&e.target, if e.directed { 1 } else { 0 }));
        adj.entry(&e.target)
            .or_default()
            .push((&e.source, if e.directed { -1 } else { 0 }));
    }
    let mut seen: BTreeMap<&str, (usize, i8)> = BTreeMap::new();
    seen.insert(&self_id, (0, 2));
    // Nearest first, and at the same distance dependencies (downstream:
    // a slow database explains a slow caller) before callers, so a capped
    // scope keeps the dependency chain.
    let rank_of = |dir: i8| match dir {
        1 | 2 => 0u8,
        0 => 1,
        _ => 2,
    };
    let mut queue: BTreeSet<(usize, u8, &str)> = BTreeSet::from([(0, 0, self_id.as_str())]);
    let mut truncated = false;
    while let Some((_, _, id)) = queue.pop_first() {
        let (d, dir) = seen[id];
        if d >= cx.limits.max_depth {
            continue;
        }
        let mut next: Vec<(&str, i8)> = adj.get(id).cloned().unwrap_or_default();
        next.sort();
        for (n, edir) in next {
            if seen.contains_key(n) || n == OUTSIDE_ID {
                continue;
            }
            let Some(node) = g.nodes.get(n) else { continue };
            if node.kind != NodeKind::Workload {
                continue;
            }
            if out.len() >= cx.limits.max_scope {
                truncated = true;
                break;
            }
            // The path's direction: the same all along, or mixed (0).
            let pdir = if dir == 2 || dir == edir { edir } else { 0 };
            seen.insert(n, (d + 1, pdir));
            queue.insert((d + 1, rank_of(pdir), n));
            let hops = if d + 1 == 1 {
                "1 hop".to_string()
            } else {
                format!("{} hops", d + 1)
            };
            let relation = match pdir {
                1 => format!("{hops} downstream of {self_id} (a dependency it calls)"),
                -1 => format!("{hops} upstream of {self_id} (a caller)"),
                _ => format!("{hops} from {self_id} in the topology"),
            };
            out.push(InScope {
                ns: node.namespace.to_string(),
                name: node.name.to_string(),
                distance: d + 1,
                relation,
                kind: node.workload_kind.to_string(),
            });
        }
    }
    if truncated {
        cx.cap(format!(
            "scope: the {} nearest workloads examined",
            cx.limits.max_scope
        ));
    }
    out
}

/// Beyla's application metrics of a workload: (requests, errors, duration
/// sums) for HTTP and gRPC servers, read by owner name (then by
/// Deployment name).
async fn beyla(
    cx: &mut Ctx<'_>,
    w: &InScope,
    cluster: Option<&str>,
) -> Result<(Vec<TimeSeries>, Vec<TimeSeries>, Vec<TimeSeries>), Error> {
    let families = [
        (
            "http_server_request_duration_seconds",
            "http_response_status_code",
            "5..",
        ),
        (
            "rpc_server_duration_seconds",
            "rpc_grpc_status_code",
            "[1-9][0-9]?",
        ),
    ];
    let (mut reqs, mut errs, mut sums) = (Vec::new(), Vec::new(), Vec::new());
    for owner_label in ["k8s_owner_name", "k8s_deployment_name"] {
        for (family, code_label, bad) in families {
            let base = |suffix: &str| {
                let mut m = vec![
                    m_eq("__name__", &format!("{family}_{suffix}")),
                    m_eq("k8s_namespace_name", &w.ns),
                    m_eq(owner_label, &w.name),
                ];
                if let Some(c) = cluster {
                    m.push(m_eq("cluster", c));
                }
                m
            };
            let r = cx.select(base("count")).await?;
            if r.is_empty() {
                continue;
            }
            let mut em = base("count");
            em.push(m_re(code_label, bad)?);
            errs.extend(cx.select(em).await?);
            sums.extend(cx.select(base("sum")).await?);
            reqs.extend(r);
        }
        if !reqs.is_empty() {
            break;
        }
    }
    Ok((reqs, errs, sums))
}

async fn workload_signals(
    cx: &mut Ctx<'_>,
    w: &InScope,
    saturation: bool,
    cluster: Option<&str>,
) -> Result<WorkloadData, Error> {
    let grid = cx.grid;
    let subject = format!("{}/{}", w.ns, w.name);
    let mut d = WorkloadData::default();
    let (reqs, errs, sums) = beyla(cx, w, cluster).await?;
    let push = |d: &mut WorkloadData, kind, subject: &str, source, values: Vec<Option<f64>>| {
        if values.iter().flatten().count() > 0 {
            d.signals.push(Signal {
                kind,
                subject: subject.to_string(),
                source,
                values,
            });
        }
    };
    if !reqs.is_empty() {
        let r = CounterBins::of(&grid, &reqs);
        let e = CounterBins::of(&grid, &errs);
        let s = CounterBins::of(&grid, &sums);
        push(
            &mut d,
            SignalKind::ErrorRatio,
            &subject,
            "beyla",
            ratio(&e, &r),
        );
        let lat: Vec<Option<f64>> = ratio(&s, &r)
            .into_iter()
            .map(|v| v.map(|x| x * 1000.0))
            .collect();
        push(&mut d, SignalKind::LatencyMean, &subject, "beyla", lat);
        push(
            &mut d,
            SignalKind::RequestRate,
            &subject,
            "beyla",
            r.rate.clone(),
        );
        d.pod_requests = reqs;
        d.pod_errors = errs;
    } else {
        // The service graph, server side, whole and per caller.
        let sg = |name: &str| {
            let mut m = vec![
                m_eq("__name__", name),
                m_eq("server", &w.name),
                m_eq("server_namespace", &w.ns),
            ];
            if let Some(c) = cluster {
                m.push(m_eq("cluster", c));
            }
            m
        };
        use kube_insight_core::topology::{SG_FAILED, SG_TOTAL};
        let total = cx.select(sg(SG_TOTAL)).await?;
        if !total.is_empty() {
            let failed = cx.select(sg(SG_FAILED)).await?;
            let sums = cx
                .select(sg("traces_service_graph_request_server_seconds_sum"))
                .await?;
            let counts = cx
                .select(sg("traces_service_graph_request_server_seconds_count"))
                .await?;
            let (r, e) = (
                CounterBins::of(&grid, &total),
                CounterBins::of(&grid, &failed),
            );
            push(
                &mut d,
                SignalKind::ErrorRatio,
                &subject,
                "service graph",
                ratio(&e, &r),
            );
            if !counts.is_empty() {
                let lat: Vec<Option<f64>> = ratio(
                    &CounterBins::of(&grid, &sums),
                    &CounterBins::of(&grid, &counts),
                )
                .into_iter()
                .map(|v| v.map(|x| x * 1000.0))
                .collect();
                push(
                    &mut d,
                    SignalKind::LatencyMean,
                    &subject,
                    "service graph",
                    lat,
                );
            }
            push(
                &mut d,
                SignalKind::RequestRate,
                &subject,
                "service graph",
                r.rate.clone(),
            );
            // Per caller: "errors of shop/checkout→shop/payment".
            let mut by_client: BTreeMap<String, (Vec<TimeSeries>, Vec<TimeSeries>)> =
                BTreeMap::new();
            for (list, failed) in [(&total, false), (&failed, true)] {
                for s in list {
                    let client = format!(
                        "{}/{}",
                        s.labels.get("client_namespace").unwrap_or(""),
                        s.labels.get("client").unwrap_or("")
                    );
                    let e = by_client.entry(client).or_default();
                    if failed {
                        e.1.push(s.clone());
                    } else {
                        e.0.push(s.clone());
                    }
                }
            }
            if by_client.len() > 1 {
                for (client, (t, f)) in by_client.into_iter().take(8) {
                    let edge = format!("{client}→{subject}");
                    let v = ratio(&CounterBins::of(&grid, &f), &CounterBins::of(&grid, &t));
                    push(&mut d, SignalKind::ErrorRatio, &edge, "service graph", v);
                }
            }
        }
    }
    if saturation {
        let pods = pod_regex(&w.name);
        let sel = |name: &str| -> Result<Vec<Matcher>, Error> {
            let mut m = vec![
                m_eq("__name__", name),
                m_eq("namespace", &w.ns),
                m_re("pod", &pods)?,
            ];
            if let Some(c) = cluster {
                m.push(m_eq("cluster", c));
            }
            Ok(m)
        };
        let throttled = cx
            .select(sel("container_cpu_cfs_throttled_periods_total")?)
            .await?;
        if !throttled.is_empty() {
            let periods = cx.select(sel("container_cpu_cfs_periods_total")?).await?;
            let v = ratio(
                &CounterBins::of(&grid, &throttled),
                &CounterBins::of(&grid, &periods),
            );
            push(&mut d, SignalKind::CpuThrottling, &subject, "cadvisor", v);
        }
        let restarts = cx
            .select(sel("kube_pod_container_status_restarts_total")?)
            .await?;
        if !restarts.is_empty() {
            let b = CounterBins::of(&grid, &restarts);
            push(
                &mut d,
                SignalKind::Restarts,
                &subject,
                "kube-state-metrics",
                b.inc,
            );
        }
        let mut oom = sel("kube_pod_container_status_last_terminated_reason")?;
        oom.push(m_eq("reason", "OOMKilled"));
        let oom = cx.select(oom).await?;
        if !oom.is_empty() {
            push(
                &mut d,
                SignalKind::OomKills,
                &subject,
                "kube-state-metrics",
                gauge_sum(&grid, &oom),
            );
        }
        let mem = cx
            .select(sel("container_memory_working_set_bytes")?)
            .await?;
        if !mem.is_empty() {
            push(
                &mut d,
                SignalKind::Memory,
                &subject,
                "cadvisor",
                gauge_sum(&grid, &mem),
            );
        }
        // Error lines per bin from the log store.
        let rq = LogRateQuery {
            selector: LogSelector {
                cluster: cluster.map(str::to_string),
                namespace: Some(w.ns.clone()),
                workload: Some(w.name.clone()),
                pod: None,
                container: None,
            },
            range: TimeRange {
                start_ms: grid.start_ms,
                end_ms: cx.q.at_ms,
            },
            filter: Default::default(),
            levels: vec![Some(Level::Error), Some(Level::Fatal)],
            step_ms: grid.step_ms,
            max_scan_bytes: 256 << 20,
            max_points: grid.len * 4 + 8,
        };
        match cx.store.logs().log_rate(&rq).await {
            Ok(points) if !points.is_empty() => {
                let mut v: Vec<Option<f64>> = vec![Some(0.0); grid.len];
                for p in points {
                    if let Some(i) = grid.bin(p.timestamp_ms.max(grid.start_ms)) {
                        v[i] = Some(v[i].unwrap_or(0.0) + p.count as f64);
                    }
                }
                push(&mut d, SignalKind::ErrorLogs, &subject, "logs", v);
            }
            Ok(_) => {}
            Err(kube_insight_store::Error::LimitExceeded { what, limit }) => {
                cx.cap(format!("error log rate of {subject}: {what} over {limit}"));
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(d)
}

/// The workload object of a scope member at `at` (its kind from the
/// topology, else the usual workload kinds in turn).
async fn workload_object(
    cx: &mut Ctx<'_>,
    w: &InScope,
    at: i64,
) -> Result<Option<serde_json::Value>, Error> {
    let kinds: Vec<&str> = if WORKLOAD_KINDS.contains(&w.kind.as_str()) {
        vec![w.kind.as_str()]
    } else {
        WORKLOAD_KINDS[..3].to_vec()
    };
    for k in kinds {
        if let Some(o) = cx.object_at(k, &w.ns, &w.name, at).await? {
            return Ok(Some(o));
        }
    }
    Ok(None)
}

fn base_candidate(r: &ChangeRow, w: &InScope, category: Category, summary: String) -> Candidate {
    let mut why = Vec::new();
    if w.distance > 0 {
        why.push(w.relation.clone());
    }
    Candidate {
        time_ms: r.at_ms,
        cluster: r.cluster.clone(),
        kind: r.kind.clone(),
        namespace: r.namespace.clone(),
        name: r.name.clone(),
        workload: w.name.clone(),
        workload_namespace: w.ns.clone(),
        category,
        summary,
        who: r.manager.clone(),
        distance: w.distance,
        why,
        shift: None,
        replicasets: None,
        unmeasured: false,
    }
}

/// Warning reasons that usually mean the pods suffer.
const WARNING_REASONS: &[&str] = &[
    "OOMKilling",
    "OOMKilled",
    "BackOff",
    "FailedScheduling",
    "Evicted",
    "Unhealthy",
    "FailedMount",
    "FailedCreatePodSandBox",
    "NodeNotReady",
    "FailedPreStopHook",
    "ProbeWarning",
];

async fn object_candidates(
    cx: &mut Ctx<'_>,
    scope: &[InScope],
    data: &mut HashMap<String, WorkloadData>,
    graph: Option<&Graph>,
    range: TimeRange,
    cluster: Option<&str>,
    out: &mut Vec<Candidate>,
) -> Result<(), Error> {
    let events = cx.store.events();
    // Pod templates at the end of the range (references, labels).
    for w in scope {
        let key = format!("{}/{}", w.ns, w.name);
        let obj = workload_object(cx, w, range.end_ms).await?;
        if let Some(d) = data.get_mut(&key) {
            d.facts = obj.as_ref().map(template_facts);
        }
    }
    // The nodes the symptom's pods ran on.
    // node → the nearest scope workload with a pod on it.
    let mut nodes: BTreeMap<String, &InScope> = BTreeMap::new();
    let self_w = &scope[0];
    let pods = pods_of(cx, graph, &self_w.ns, &self_w.name, range.end_ms).await?;
    for p in pods.iter().take(10) {
        if let Some(o) = cx.object_at("Pod", &self_w.ns, p, range.end_ms).await? {
            if let Some(n) = o.pointer("/spec/nodeName").and_then(|v| v.as_str()) {
                nodes.insert(n.to_string(), self_w);
            }
        }
    }

    let mut namespaces: Vec<&str> = Vec::new();
    for w in scope {
        if !namespaces.contains(&w.ns.as_str()) {
            namespaces.push(&w.ns);
        }
    }
    if namespaces.len() > cx.limits.max_namespaces {
        cx.cap(format!(
            "namespaces: changes of the {} nearest read",
            cx.limits.max_namespaces
        ));
        namespaces.truncate(cx.limits.max_namespaces);
    }
    let by_id: HashMap<(String, String), &InScope> = scope
        .iter()
        .map(|w| ((w.ns.clone(), w.name.clone()), w))
        .collect();

    // The nodes of every scope workload's pods, from kube-state-metrics.
    for ns in &namespaces {
        let mut m = vec![m_eq("__name__", "kube_pod_info"), m_eq("namespace", ns)];
        if let Some(c) = cluster {
            m.push(m_eq("cluster", c));
        }
        for s in cx.select(m).await? {
            let (Some(pod), Some(node)) = (s.labels.get("pod"), s.labels.get("node")) else {
                continue;
            };
            let w = workload_of_ref(&ObjectRef {
                kind: "Pod".into(),
                namespace: ns.to_string(),
                name: pod.to_string(),
                ..ObjectRef::default()
            });
            let Some(w) = w.and_then(|w| by_id.get(&(ns.to_string(), w)).copied()) else {
                continue;
            };
            let e = nodes.entry(node.to_string()).or_insert(w);
            if w.distance < e.distance {
                *e = w;
            }
        }
    }

    let mut rows: Vec<ChangeRow> = Vec::new();
    for ns in &namespaces {
        let q = ChangeQuery {
            cluster: cluster.map(str::to_string),
            namespace: Some(ns.to_string()),
            workload: None,
            kind: None,
            range,
            limit: cx.limits.max_changes,
            include_events: true,
            // Status writes are evidence here (an HPA at its maximum, a
            // Node's conditions, pods restarting): the model weighs them.
            include_status: true,
        };
        let got = events.changes(&q).await?;
        if got.len() >= cx.limits.max_changes {
            cx.cap(format!(
                "changes of namespace {ns}: the newest {} read",
                cx.limits.max_changes
            ));
        }
        rows.extend(got);
    }
    if !nodes.is_empty() {
        let q = ChangeQuery {
            cluster: cluster.map(str::to_string),
            namespace: None,
            workload: None,
            kind: Some("Node".to_string()),
            range,
            limit: cx.limits.max_changes,
            include_events: true,
            // Status writes are evidence here (an HPA at its maximum, a
            // Node's conditions, pods restarting): the model weighs them.
            include_status: true,
        };
        rows.extend(
            events
                .changes(&q)
                .await?
                .into_iter()
                .filter(|r| r.kind == "Node" && nodes.contains_key(&r.name)),
        );
    }
    // Oldest first, so the object reads go to the earliest changes when capped.
    rows.sort_by_key(|r| r.at_ms);

    for r in rows {
        if r.reason.is_some() {
            // An event.
            if r.change != "Warning" {
                continue;
            }
            let reason = r.reason.clone().unwrap_or_default();
            let target = if r.kind == "Node" {
                nodes.get(&r.name).copied()
            } else {
                workload_of_ref(&ObjectRef {
                    kind: r.kind.clone(),
                    namespace: r.namespace.clone(),
                    name: r.name.clone(),
                    ..ObjectRef::default()
                })
                .and_then(|w| by_id.get(&(r.namespace.clone(), w)).copied())
            };
            let Some(w) = target else { continue };
            let known = WARNING_REASONS.contains(&reason.as_str());
            let mut c = base_candidate(&r, w, Category::Event, format!("{reason}: {}", r.summary));
            c.kind = format!("Event/{}", r.kind);
            if let Some(n) = r.count {
                c.why
                    .push(format!("{reason} seen {n} times on {} {}", r.kind, r.name));
            }
            if !known {
                c.why
                    .push(format!("{reason} is not a reason known to hurt pods"));
            }
            out.push(c);
            continue;
        }
        match r.kind.as_str() {
            k if WORKLOAD_KINDS.contains(&k) => {
                let Some(w) = by_id.get(&(r.namespace.clone(), r.name.clone())).copied() else {
                    continue;
                };
                let after = cx.object_at(k, &r.namespace, &r.name, r.at_ms).await?;
                let before = cx.object_at(k, &r.namespace, &r.name, r.at_ms - 1).await?;
                let category = match &after {
                    Some(a) if r.change != "deleted" => {
                        match workload_change_category(before.as_ref(), a) {
                            Some("image") => Category::Image,
                            Some("scale") => Category::Scale,
                            Some(_) => Category::Spec,
                            None => continue, // status only: not a change
                        }
                    }
                    _ => Category::Spec,
                };
                let mut c = base_candidate(&r, w, category, r.summary.clone());
                if let Some(a) = &after {
                    for line in image_changes(before.as_ref(), a) {
                        c.why.push(line);
                    }
                    if category == Category::Scale {
                        if let (Some(b), Some(n)) =
                            (before.as_ref().and_then(replicas), replicas(a))
                        {
                            c.why.push(format!("replicas {b} → {n}"));
                        }
                    }
                }
                out.push(c);
            }
            "ReplicaSet" | "Pod" if r.category != "image_digest" => {} // rollout members
            "ConfigMap" | "Secret" => {
                let secret = r.kind == "Secret";
                for w in scope.iter().filter(|w| w.ns == r.namespace) {
                    let key = format!("{}/{}", w.ns, w.name);
                    let Some(f) = data.get(&key).and_then(|d| d.facts.as_ref()) else {
                        continue;
                    };
                    let refs = if secret { &f.secrets } else { &f.config_maps };
                    if !refs.contains(&r.name) {
                        continue;
                    }
                    let cat = if secret {
                        Category::Secret
                    } else {
                        Category::Config
                    };
                    let mut c = base_candidate(&r, w, cat, r.summary.clone());
                    c.why.push(format!(
                        "{} {} is referenced by the pod template of {key}",
                        r.kind, r.name
                    ));
                    out.push(c);
                }
            }
            "Service" | "NetworkPolicy" | "PodDisruptionBudget" | "HorizontalPodAutoscaler" => {
                // Both sides of the change: a selector edited away from a
                // workload selected it before (and the harm is that it no
                // longer does), one edited onto it selects it after.
                let before = cx
                    .object_at(&r.kind, &r.namespace, &r.name, r.at_ms - 1)
                    .await?;
                let after = if r.change == "deleted" {
                    None
                } else {
                    cx.object_at(&r.kind, &r.namespace, &r.name, r.at_ms)
                        .await?
                };
                if before.is_none() && after.is_none() {
                    continue;
                }
                let cat = match r.kind.as_str() {
                    "Service" => Category::Service,
                    "NetworkPolicy" => Category::NetworkPolicy,
                    "PodDisruptionBudget" => Category::Pdb,
                    _ => Category::Hpa,
                };
                for w in scope.iter().filter(|w| w.ns == r.namespace) {
                    let key = format!("{}/{}", w.ns, w.name);
                    let Some(f) = data.get(&key).and_then(|d| d.facts.as_ref()) else {
                        continue;
                    };
                    let sel = |o: &Option<serde_json::Value>| {
                        o.as_ref()
                            .and_then(|o| selects(&r.kind, o, &w.name, &f.labels))
                            == Some(true)
                    };
                    let why = match (sel(&before), sel(&after)) {
                        (false, false) => continue,
                        (true, false) if after.is_some() => {
                            format!(
                                "{} {} selected {key} before this change, and no longer does",
                                r.kind, r.name
                            )
                        }
                        (true, false) => {
                            format!("{} {} selected {key} until it was deleted", r.kind, r.name)
                        }
                        (false, true) if before.is_some() => {
                            format!("{} {} selects {key} since this change", r.kind, r.name)
                        }
                        _ => format!("{} {} selects {key}", r.kind, r.name),
                    };
                    let mut c = base_candidate(&r, w, cat, r.summary.clone());
                    c.why.push(why);
                    out.push(c);
                }
            }
            "Node" => {
                let w = nodes.get(&r.name).copied().unwrap_or(self_w);
                let mut c = base_candidate(&r, w, Category::Node, r.summary.clone());
                c.why.push(format!(
                    "pods of {}/{} ran on node {}",
                    w.ns, w.name, r.name
                ));
                if let Some(o) = cx.object_at("Node", "", &r.name, r.at_ms).await? {
                    let facts = node_facts(&o);
                    if !facts.is_empty() {
                        c.why.push(format!("node {}: {}", r.name, facts.join(", ")));
                        c.summary = format!("{} ({})", r.summary, facts.join(", "));
                    }
                }
                out.push(c);
            }
            _ if r.category == "image_digest" => {
                let Some(w) = workload_of_ref(&ObjectRef {
                    kind: r.kind.clone(),
                    namespace: r.namespace.clone(),
                    name: r.name.clone(),
                    ..ObjectRef::default()
                })
                .and_then(|w| by_id.get(&(r.namespace.clone(), w)).copied()) else {
                    continue;
                };
                out.push(base_candidate(&r, w, Category::Image, r.summary.clone()));
            }
            _ => {}
        }
    }
    Ok(())
}

/// The pods of a workload known to the topology at the end of the range,
/// else from its pods' change rows.
async fn pods_of(
    cx: &mut Ctx<'_>,
    graph: Option<&Graph>,
    ns: &str,
    workload: &str,
    at: i64,
) -> Result<Vec<String>, Error> {
    let q = ChangeQuery {
        cluster: cx.q.cluster.clone(),
        namespace: Some(ns.to_string()),
        workload: Some(workload.to_string()),
        kind: Some("Pod".to_string()),
        range: TimeRange {
            start_ms: cx.grid.start_ms,
            end_ms: at,
        },
        limit: 50,
        include_events: false,
        include_status: true,
    };
    let mut out: Vec<String> = Vec::new();
    for r in cx.store.events().changes(&q).await? {
        if r.kind == "Pod" && !out.contains(&r.name) {
            out.push(r.name);
        }
    }
    if let Some(g) = graph {
        let parent = format!("{ns}/{workload}");
        for n in g.nodes.values() {
            if n.parent.as_deref() == Some(parent.as_str()) && !out.contains(&n.name.to_string()) {
                out.push(n.name.to_string());
            }
        }
    }
    Ok(out)
}

async fn dependency_candidates(
    cx: &mut Ctx<'_>,
    scope: &[InScope],
    range: TimeRange,
    cluster: Option<&str>,
    out: &mut Vec<Candidate>,
) -> Result<(), Error> {
    let q = DependencyQuery {
        cluster: cluster.map(str::to_string),
        range,
        limit: cx.limits.max_changes,
    };
    let changes = match cx.store.topology().dependency_changes(&q).await {
        Ok(c) => c,
        Err(kube_insight_store::Error::LimitExceeded { what, limit }) => {
            cx.cap(format!(
                "{what}: more than {limit} in the window, none read"
            ));
            Vec::new()
        }
        Err(e) => return Err(e.into()),
    };
    if changes.len() >= cx.limits.max_changes {
        cx.cap(format!(
            "dependency changes: the first {} read",
            cx.limits.max_changes
        ));
    }
    let ids: HashMap<String, &InScope> = scope
        .iter()
        .map(|w| (format!("{}/{}", w.ns, w.name), w))
        .collect();
    for c in changes {
        let ends = [ids.get(&c.source), ids.get(&c.target)];
        let Some(w) = ends.iter().flatten().min_by_key(|w| w.distance).copied() else {
            continue;
        };
        let what = c.kind.name();
        let arrow = if c.directed { "→" } else { "↔" };
        let mut why = Vec::new();
        if w.distance > 0 {
            why.push(w.relation.clone());
        }
        why.push(format!(
            "the service graph's edge {} {arrow} {} {}",
            c.source,
            c.target,
            what.strip_prefix("dependency ").unwrap_or(what)
        ));
        out.push(Candidate {
            time_ms: c.at_ms,
            cluster: c.cluster.clone(),
            kind: "Dependency".to_string(),
            namespace: w.ns.clone(),
            name: c.edge_id.clone(),
            workload: w.name.clone(),
            workload_namespace: w.ns.clone(),
            category: Category::Dependency,
            summary: format!("{} {arrow} {}: {what}", c.source, c.target),
            who: None,
            distance: w.distance,
            why,
            shift: None,
            replicasets: None,
            unmeasured: false,
        });
    }
    Ok(())
}

/// Lines of `w` in `range`, at most `max` (newest first), and whether more were left.
async fn log_lines(
    cx: &mut Ctx<'_>,
    w: &InScope,
    cluster: Option<&str>,
    range: TimeRange,
) -> Result<(Vec<(i64, String)>, bool), Error> {
    let mut q = LogQuery::new(
        LogSelector {
            cluster: cluster.map(str::to_string),
            namespace: Some(w.ns.clone()),
            workload: Some(w.name.clone()),
            pod: None,
            container: None,
        },
        range,
    );
    q.limit = cx.limits.max_log_lines;
    q.max_scan_bytes = 64 << 20;
    match cx.store.logs().query_logs(&q).await {
        Ok(page) => Ok((
            page.rows
                .into_iter()
                .map(|r| (r.record.timestamp_ns / 1_000_000, r.record.line))
                .collect(),
            page.next_cursor.is_some(),
        )),
        Err(kube_insight_store::Error::LimitExceeded { .. }) => Ok((Vec::new(), true)),
        Err(e) => Err(e.into()),
    }
}

/// New line templates after the onset that the baseline never had.
async fn log_candidates(
    cx: &mut Ctx<'_>,
    w: &InScope,
    onset_ms: i64,
    cluster: Option<&str>,
    out: &mut Vec<Candidate>,
) -> Result<(), Error> {
    let before = TimeRange {
        start_ms: cx.grid.start_ms,
        end_ms: onset_ms - 1,
    };
    let after = TimeRange {
        start_ms: onset_ms - cx.grid.step_ms,
        end_ms: cx.q.at_ms,
    };
    let (base, base_more) = log_lines(cx, w, cluster, before).await?;
    let (new, new_more) = log_lines(cx, w, cluster, after).await?;
    if base_more || new_more {
        cx.cap(format!(
            "log lines of {}/{}: {} read on each side of the onset",
            w.ns, w.name, cx.limits.max_log_lines
        ));
    }
    if new.is_empty() {
        return Ok(());
    }
    let known: BTreeSet<String> = base.iter().map(|(_, l)| template(l)).collect();
    // template → (first time, count, example)
    let mut fresh: BTreeMap<String, (i64, usize, String)> = BTreeMap::new();
    for (t, line) in &new {
        let tpl = template(line);
        if tpl.is_empty() || known.contains(&tpl) {
            continue;
        }
        let e = fresh.entry(tpl).or_insert((*t, 0, line.clone()));
        e.0 = e.0.min(*t);
        e.1 += 1;
    }
    let mut fresh: Vec<(String, (i64, usize, String))> =
        fresh.into_iter().filter(|(_, v)| v.1 >= 2).collect();
    fresh.sort_by(|a, b| b.1 .1.cmp(&a.1 .1).then(a.0.cmp(&b.0)));
    for (tpl, (first, count, example)) in fresh.into_iter().take(3) {
        let mut example = example;
        kube_insight_core::log::truncate_utf8(&mut example, 160);
        out.push(Candidate {
            time_ms: first,
            cluster: cluster.unwrap_or_default().to_string(),
            kind: "LogPattern".to_string(),
            namespace: w.ns.clone(),
            name: tpl.clone(),
            workload: w.name.clone(),
            workload_namespace: w.ns.clone(),
            category: Category::LogPattern,
            summary: format!("new log line: {example}"),
            who: None,
            distance: 0,
            why: vec![format!(
                "{count} lines of a template never seen in the {} baseline lines read: {tpl}",
                base.len()
            )],
            shift: None,
            replicasets: None,
            unmeasured: false,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_names_of_a_workload() {
        let m = m_re("pod", &pod_regex("pay.v2")).unwrap();
        assert!(m.matches_value("pay.v2-7d9f8b6c4-x2x7k"));
        assert!(m.matches_value("pay.v2-0"));
        assert!(!m.matches_value("payxv2-0"));
        assert!(!m.matches_value("pay.v2-canary-7d9f8b6c4-x2x7k"));
    }

    #[test]
    fn query_bounds_name_the_parameter() {
        let q = SuspectsQuery {
            cluster: None,
            namespace: "shop".into(),
            workload: "".into(),
            at_ms: 0,
            window_ms: DEFAULT_WINDOW_MS,
            limit: 10,
        };
        assert!(q
            .validate()
            .unwrap_err()
            .to_string()
            .contains("parameter workload"));
        let q = SuspectsQuery {
            workload: "x".into(),
            window_ms: MAX_WINDOW_MS + 1,
            ..q
        };
        assert!(q
            .validate()
            .unwrap_err()
            .to_string()
            .contains("parameter window"));
    }
}
