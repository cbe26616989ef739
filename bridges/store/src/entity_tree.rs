//! The entity tree (cluster / namespace / workload / pod / container) from
//! series labels: pure, shared by every backend so they answer alike.

use crate::error::{Error, Result};
use crate::metrics::EntityQuery;
use kube_insight_core::{entity::resolve_workload, Entity};
use std::collections::{BTreeMap, HashMap};

/// What the tree needs of one series (absent labels are "").
#[derive(Debug, Clone, Copy)]
pub struct EntitySeries<'a> {
    /// The cluster the series was written for.
    pub cluster: &'a str,
    pub name: &'a str,
    pub namespace: &'a str,
    pub pod: &'a str,
    pub container: &'a str,
    pub owner_kind: &'a str,
    pub owner_name: &'a str,
    pub owner_is_controller: bool,
    pub replicaset: &'a str,
    pub job_name: &'a str,
    /// First and last sample of the series.
    pub first_ms: i64,
    pub last_ms: i64,
}

/// An owner fact from kube-state-metrics.
struct Owner {
    kind: String,
    name: String,
    controller: bool,
    last_ms: i64,
}

impl Owner {
    /// Keeps the better of two facts: the controller, then the latest.
    fn better(&self, other: &Owner) -> bool {
        (self.controller, self.last_ms) > (other.controller, other.last_ms)
    }
}

type NsKey = (String, String, String); // cluster, namespace, object name

fn put_owner<K: std::hash::Hash + Eq>(map: &mut HashMap<K, Owner>, key: K, o: Owner) {
    match map.get(&key) {
        Some(cur) if !o.better(cur) => {}
        _ => {
            map.insert(key, o);
        }
    }
}

/// The entity tree seen in a time range.
///
/// Semantics:
/// - Every series with data overlapping the range gives one row at the
///   depth its labels reach: `(cluster)`, `(cluster, namespace)`,
///   `(cluster, namespace, pod)` or `(cluster, namespace, pod, container)`.
///   The cluster is the one the series was written for; a `pod` counts only
///   with a `namespace`, a `container` only with a `pod`, and cAdvisor's
///   sandbox container `POD` counts as pod level. Rows with the same keys
///   merge, `first_seen_ms`/`last_seen_ms` being the min/max over their
///   series' first and last samples (not clipped to the range).
/// - Rows with a pod carry its workload, resolved with
///   [`resolve_workload`] from `kube_pod_owner{namespace,pod,owner_kind,owner_name}`
///   then `kube_replicaset_owner{namespace,replicaset,…}` (ReplicaSet →
///   Deployment) or `kube_job_owner{namespace,job_name,…}` (Job → CronJob).
///   Owner facts are used whatever their time (owners do not change); among
///   several, the controller (`owner_is_controller="true"`) and then the
///   latest wins. A pod whose fact says it has no owner is its own workload
///   (`Pod`, pod name); a pod with no owner fact has an empty workload.
/// - `cluster`/`namespace` filter the rows (a namespace filter drops
///   cluster-level rows). More rows than `limit` is [`Error::LimitExceeded`].
/// - Sorted by cluster, namespace, workload kind, workload, pod, container.
pub fn build<'a>(
    series: impl Iterator<Item = EntitySeries<'a>>,
    q: &EntityQuery,
) -> Result<Vec<Entity>> {
    let mut pod_owner: HashMap<NsKey, Owner> = HashMap::new();
    let mut parents: HashMap<(String, String, String, &'static str), Owner> = HashMap::new();
    let mut rows: BTreeMap<(String, String, String, String), (i64, i64)> = BTreeMap::new();
    for s in series {
        if q.cluster.as_deref().is_some_and(|c| c != s.cluster) {
            continue;
        }
        if q.namespace.as_deref().is_some_and(|n| n != s.namespace) {
            continue;
        }
        let ns = s.namespace;
        let owner = || Owner {
            kind: s.owner_kind.to_string(),
            name: s.owner_name.to_string(),
            controller: s.owner_is_controller,
            last_ms: s.last_ms,
        };
        match s.name {
            "kube_pod_owner" if !ns.is_empty() && !s.pod.is_empty() => {
                let key = (s.cluster.to_string(), ns.to_string(), s.pod.to_string());
                put_owner(&mut pod_owner, key, owner());
            }
            "kube_replicaset_owner" | "kube_job_owner" => {
                let (kind, obj) = if s.name == "kube_replicaset_owner" {
                    ("ReplicaSet", s.replicaset)
                } else {
                    ("Job", s.job_name)
                };
                if !ns.is_empty() && !obj.is_empty() {
                    let key = (s.cluster.to_string(), ns.to_string(), obj.to_string(), kind);
                    put_owner(&mut parents, key, owner());
                }
            }
            _ => {}
        }
        if !(s.first_ms <= q.range.end_ms && s.last_ms >= q.range.start_ms) {
            continue;
        }
        if q.namespace.is_some() && ns.is_empty() {
            continue;
        }
        let (pod, container) = if ns.is_empty() {
            ("", "")
        } else {
            let c = if s.pod.is_empty() { "" } else { s.container };
            (s.pod, if c == "POD" { "" } else { c })
        };
        let e = rows
            .entry((
                s.cluster.to_string(),
                ns.to_string(),
                pod.to_string(),
                container.to_string(),
            ))
            .or_insert((i64::MAX, i64::MIN));
        e.0 = e.0.min(s.first_ms);
        e.1 = e.1.max(s.last_ms);
    }
    if rows.len() > q.limit {
        return Err(Error::LimitExceeded {
            what: "entities",
            limit: q.limit,
        });
    }
    let mut out: Vec<Entity> = rows
        .into_iter()
        .map(|((cluster, namespace, pod, container), (first, last))| {
            let (workload_kind, workload) = if pod.is_empty() {
                (String::new(), String::new())
            } else {
                let key = (cluster.clone(), namespace.clone(), pod.clone());
                match pod_owner.get(&key) {
                    None => (String::new(), String::new()),
                    Some(o) => {
                        let w = resolve_workload(Some((&o.kind, &o.name)), |kind, name| {
                            let kind: &'static str = match kind {
                                "ReplicaSet" => "ReplicaSet",
                                "Job" => "Job",
                                _ => return None,
                            };
                            parents
                                .get(&(cluster.clone(), namespace.clone(), name.to_string(), kind))
                                .map(|p| (p.kind.clone(), p.name.clone()))
                        });
                        match w {
                            Some(w) => (w.kind, w.name),
                            None => ("Pod".to_string(), pod.clone()),
                        }
                    }
                }
            };
            Entity {
                cluster,
                namespace,
                workload_kind,
                workload,
                pod,
                container,
                first_seen_ms: first,
                last_seen_ms: last,
            }
        })
        .collect();
    out.sort_by(|a, b| {
        (
            &a.cluster,
            &a.namespace,
            &a.workload_kind,
            &a.workload,
            &a.pod,
            &a.container,
        )
            .cmp(&(
                &b.cluster,
                &b.namespace,
                &b.workload_kind,
                &b.workload,
                &b.pod,
                &b.container,
            ))
    });
    Ok(out)
}
