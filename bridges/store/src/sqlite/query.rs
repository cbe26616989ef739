//! Read paths. Every read first matches series and copies the head data it
//! needs under the head's read lock, then reads SQLite chunks without any
//! lock. Taking the head first matters: a window compacted in between is
//! then seen twice (and deduplicated by timestamp), never missed.

use super::head::Head;
use super::{lock_read, Shared};
use crate::chunk;
use crate::error::{Error, Result};
use crate::metrics::{EntityQuery, SelectQuery, SeriesQuery};
use kube_insight_core::{
    entity::resolve_workload, Entity, Labels, Matcher, Sample, TimeRange, TimeSeries,
};
use rusqlite::params;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Ids of series matching `matchers` with data overlapping `range`.
fn matching(head: &Head, matchers: &[Matcher], range: TimeRange) -> Vec<u32> {
    head.match_ids(matchers)
        .into_iter()
        .filter(|id| {
            head.series
                .get(id)
                .is_some_and(|s| s.overlaps(range.start_ms, range.end_ms))
        })
        .collect()
}

/// A head window's appender bytes and out-of-order samples.
type WindowCopy = (Vec<u8>, Vec<(i64, f64)>);

/// Copy of one series' head data for a select.
struct Snapshot {
    id: u32,
    labels: Labels,
    windows: Vec<WindowCopy>,
}

pub(crate) fn select(shared: &Shared, q: &SelectQuery) -> Result<Vec<TimeSeries>> {
    let range = q.range;
    let (snaps, compacted_until, window_ms) = {
        let head = lock_read(&shared.head);
        let ids = matching(&head, &q.matchers, range);
        if ids.len() > q.max_series {
            return Err(Error::LimitExceeded {
                what: "series",
                limit: q.max_series,
            });
        }
        let w = head.window_ms;
        let snaps: Vec<Snapshot> = ids
            .iter()
            .filter_map(|id| head.series.get(id).map(|s| (id, s)))
            .map(|(&id, s)| Snapshot {
                id,
                labels: head.labels_of(s),
                windows: s
                    .windows
                    .iter()
                    .filter(|hw| {
                        hw.start_ms <= range.end_ms
                            && hw.start_ms.saturating_add(w) > range.start_ms
                    })
                    .map(|hw| (hw.app.bytes().to_vec(), hw.ooo().to_vec()))
                    .collect(),
            })
            .collect();
        (snaps, head.compacted_until, w)
    };
    // Chunks only exist for windows below `compacted_until`.
    let need_chunks = range.start_ms < compacted_until;
    let mut conn = if need_chunks {
        Some(shared.pool.get().map_err(|e| shared.sql_err(e))?)
    } else {
        None
    };
    let tx = match conn.as_mut() {
        // One read transaction: a consistent snapshot across series.
        Some(c) => Some(c.transaction().map_err(|e| shared.sql_err(e))?),
        None => None,
    };
    let mut stmt = match &tx {
        Some(tx) => Some(
            tx.prepare_cached(
                "SELECT start_ms, data FROM chunks
                 WHERE series_id = ?1 AND start_ms <= ?2 AND end_ms >= ?3
                 ORDER BY start_ms",
            )
            .map_err(|e| shared.sql_err(e))?,
        ),
        None => None,
    };
    let mut out = Vec::with_capacity(snaps.len());
    let mut total = 0usize;
    for snap in snaps {
        let mut samples: Vec<(i64, f64)> = Vec::new();
        if let Some(st) = stmt.as_mut() {
            // A chunk starting before range.start can still overlap it.
            let mut rows = st
                .query(params![snap.id, range.end_ms, range.start_ms])
                .map_err(|e| shared.sql_err(e))?;
            while let Some(r) = rows.next().map_err(|e| shared.sql_err(e))? {
                let start: i64 = r.get(0).map_err(|e| shared.sql_err(e))?;
                let data: Vec<u8> = r.get(1).map_err(|e| shared.sql_err(e))?;
                for s in chunk::ChunkIter::new(&data) {
                    let (t, v) = s.map_err(|e| {
                        Error::Corrupt(format!("chunk of series {} at {start}: {e}", snap.id))
                    })?;
                    if t > range.end_ms {
                        break;
                    }
                    if t >= range.start_ms {
                        samples.push((t, v));
                    }
                }
            }
        }
        for (bytes, ooo) in &snap.windows {
            for s in chunk::ChunkIter::new(bytes) {
                let (t, v) = s.map_err(|e| {
                    Error::Corrupt(format!("head chunk of series {}: {e}", snap.id))
                })?;
                if t > range.end_ms {
                    break;
                }
                if t >= range.start_ms {
                    samples.push((t, v));
                }
            }
            samples.extend(ooo.iter().copied().filter(|s| range.contains(s.0)));
        }
        if !samples.windows(2).all(|w| w[0].0 < w[1].0) {
            samples.sort_by_key(|s| s.0);
            samples.dedup_by_key(|s| s.0);
        }
        if samples.is_empty() {
            continue;
        }
        total += samples.len();
        if total > q.max_samples {
            return Err(Error::LimitExceeded {
                what: "samples",
                limit: q.max_samples,
            });
        }
        out.push(TimeSeries::new(
            snap.labels,
            samples
                .into_iter()
                .map(|(t, v)| Sample::new(t, v))
                .collect(),
        ));
    }
    let _ = window_ms;
    drop(stmt);
    if let Some(tx) = tx {
        tx.commit().map_err(|e| shared.sql_err(e))?;
    }
    out.sort_by(|a, b| a.labels.cmp(&b.labels));
    Ok(out)
}

pub(crate) fn series(shared: &Shared, q: &SeriesQuery) -> Result<Vec<Labels>> {
    let head = lock_read(&shared.head);
    let ids = matching(&head, &q.matchers, q.range);
    if ids.len() > q.limit {
        return Err(Error::LimitExceeded {
            what: "series",
            limit: q.limit,
        });
    }
    let mut out: Vec<Labels> = ids
        .iter()
        .filter_map(|id| head.series.get(id))
        .map(|s| head.labels_of(s))
        .collect();
    drop(head);
    out.sort();
    Ok(out)
}

/// `limit` caps the number of names returned.
pub(crate) fn label_names(shared: &Shared, q: &SeriesQuery) -> Result<Vec<String>> {
    let head = lock_read(&shared.head);
    let ids = matching(&head, &q.matchers, q.range);
    let mut syms = BTreeSet::new();
    for s in ids.iter().filter_map(|id| head.series.get(id)) {
        for p in s.labels.chunks_exact(2) {
            syms.insert(p[0]);
        }
    }
    let mut names: Vec<String> = syms
        .into_iter()
        .map(|n| head.syms.resolve(n).to_string())
        .collect();
    drop(head);
    names.sort();
    if names.len() > q.limit {
        return Err(Error::LimitExceeded {
            what: "label names",
            limit: q.limit,
        });
    }
    Ok(names)
}

/// `limit` caps the number of values returned.
pub(crate) fn label_values(shared: &Shared, name: &str, q: &SeriesQuery) -> Result<Vec<String>> {
    let head = lock_read(&shared.head);
    let Some(name_sym) = head.syms.get(name) else {
        return Ok(Vec::new());
    };
    let ids = matching(&head, &q.matchers, q.range);
    let mut syms = BTreeSet::new();
    for s in ids.iter().filter_map(|id| head.series.get(id)) {
        for p in s.labels.chunks_exact(2) {
            if p[0] == name_sym {
                syms.insert(p[1]);
            }
        }
    }
    let mut values: Vec<String> = syms
        .into_iter()
        .map(|v| head.syms.resolve(v).to_string())
        .filter(|v| !v.is_empty())
        .collect();
    drop(head);
    values.sort();
    if values.len() > q.limit {
        return Err(Error::LimitExceeded {
            what: "label values",
            limit: q.limit,
        });
    }
    Ok(values)
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

fn put_owner(map: &mut HashMap<NsKey, Owner>, key: NsKey, o: Owner) {
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
pub(crate) fn entities(shared: &Shared, q: &EntityQuery) -> Result<Vec<Entity>> {
    let head = lock_read(&shared.head);
    let ids: Vec<u32> = match &q.namespace {
        Some(ns) => head.match_ids(&[Matcher::eq("namespace", ns.as_str())]),
        None => head.all_ids().to_vec(),
    };
    let sym = |n: &str| head.syms.get(n);
    let (s_name, s_ns, s_pod, s_cont) = (
        sym("__name__"),
        sym("namespace"),
        sym("pod"),
        sym("container"),
    );
    let (s_kind, s_owner, s_ctl, s_rs, s_job) = (
        sym("owner_kind"),
        sym("owner_name"),
        sym("owner_is_controller"),
        sym("replicaset"),
        sym("job_name"),
    );
    let mut pod_owner: HashMap<NsKey, Owner> = HashMap::new();
    let mut parents: HashMap<(String, String, String, &'static str), Owner> = HashMap::new();
    let mut rows: BTreeMap<(String, String, String, String), (i64, i64)> = BTreeMap::new();
    for s in ids.iter().filter_map(|id| head.series.get(id)) {
        let cluster = head.syms.resolve(s.cluster);
        if q.cluster.as_deref().is_some_and(|c| c != cluster) {
            continue;
        }
        let ns = s.label(&head.syms, s_ns);
        let owner = || Owner {
            kind: s.label(&head.syms, s_kind).to_string(),
            name: s.label(&head.syms, s_owner).to_string(),
            controller: s.label(&head.syms, s_ctl) == "true",
            last_ms: s.last_ms,
        };
        match s.label(&head.syms, s_name) {
            "kube_pod_owner" => {
                let pod = s.label(&head.syms, s_pod);
                if !ns.is_empty() && !pod.is_empty() {
                    let key = (cluster.to_string(), ns.to_string(), pod.to_string());
                    put_owner(&mut pod_owner, key, owner());
                }
            }
            "kube_replicaset_owner" | "kube_job_owner" => {
                let (kind, obj) = if s.label(&head.syms, s_name) == "kube_replicaset_owner" {
                    ("ReplicaSet", s.label(&head.syms, s_rs))
                } else {
                    ("Job", s.label(&head.syms, s_job))
                };
                if !ns.is_empty() && !obj.is_empty() {
                    let key = (cluster.to_string(), ns.to_string(), obj.to_string(), kind);
                    let o = owner();
                    match parents.get(&key) {
                        Some(cur) if !o.better(cur) => {}
                        _ => {
                            parents.insert(key, o);
                        }
                    }
                }
            }
            _ => {}
        }
        if !s.overlaps(q.range.start_ms, q.range.end_ms) {
            continue;
        }
        if q.namespace.is_some() && ns.is_empty() {
            continue;
        }
        let (pod, container) = if ns.is_empty() {
            ("", "")
        } else {
            let pod = s.label(&head.syms, s_pod);
            let c = if pod.is_empty() {
                ""
            } else {
                s.label(&head.syms, s_cont)
            };
            (pod, if c == "POD" { "" } else { c })
        };
        let e = rows
            .entry((
                cluster.to_string(),
                ns.to_string(),
                pod.to_string(),
                container.to_string(),
            ))
            .or_insert((i64::MAX, i64::MIN));
        e.0 = e.0.min(s.first_ms);
        e.1 = e.1.max(s.last_ms);
    }
    drop(head);
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
