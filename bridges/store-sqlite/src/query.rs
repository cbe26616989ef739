//! Read paths. Every read first matches series and copies the head data it
//! needs under the head's read lock, then reads SQLite chunks without any
//! lock. Taking the head first matters: a window compacted in between is
//! then seen twice (and deduplicated by timestamp), never missed.

use super::head::Head;
use super::{lock_read, Shared};
use kube_insight_core::rollup::{self, rollup_5m, RollupBucket};
use kube_insight_core::{Entity, Labels, Matcher, Sample, TimeRange, TimeSeries};
use kube_insight_store::chunk;
use kube_insight_store::entity_tree::{self, EntitySeries};
use kube_insight_store::error::{Error, Result};
use kube_insight_store::metrics::{EntityQuery, Resolution, RollupField, SelectQuery, SeriesQuery};
use rusqlite::params;
use std::collections::{BTreeMap, BTreeSet};

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
    let rollup = match q.resolution {
        Resolution::Raw => None,
        Resolution::Rollup5m(field) => Some(field),
    };
    let mut stmt = match &tx {
        Some(tx) => Some(
            tx.prepare_cached(if rollup.is_some() {
                // Rollup rows are keyed by their chunk window's start.
                "SELECT window_start_ms, data FROM rollups
                 WHERE series_id = ?1 AND window_start_ms <= ?2 AND window_start_ms > ?3
                 ORDER BY window_start_ms"
            } else {
                "SELECT start_ms, data FROM chunks
                 WHERE series_id = ?1 AND start_ms <= ?2 AND end_ms >= ?3
                 ORDER BY start_ms"
            })
            .map_err(|e| shared.sql_err(e))?,
        ),
        None => None,
    };
    // Chunks end at or after the range start; a rollup row covers the
    // window starting at its key, so it must start after start - window.
    let lower = match rollup {
        None => range.start_ms,
        Some(_) => range.start_ms.saturating_sub(window_ms),
    };
    let mut out = Vec::with_capacity(snaps.len());
    let mut total = 0usize;
    for snap in snaps {
        let stored = match stmt.as_mut() {
            Some(st) => {
                let mut rows = st
                    .query(params![snap.id, range.end_ms, lower])
                    .map_err(|e| shared.sql_err(e))?;
                let mut blobs = Vec::new();
                while let Some(r) = rows.next().map_err(|e| shared.sql_err(e))? {
                    let start: i64 = r.get(0).map_err(|e| shared.sql_err(e))?;
                    let data: Vec<u8> = r.get(1).map_err(|e| shared.sql_err(e))?;
                    blobs.push((start, data));
                }
                blobs
            }
            None => Vec::new(),
        };
        let samples = match rollup {
            None => raw_samples(snap.id, &stored, &snap.windows, range)?,
            Some(field) => {
                rollup_samples(snap.id, &stored, &snap.windows, range, field, window_ms)?
            }
        };
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
    drop(stmt);
    if let Some(tx) = tx {
        tx.commit().map_err(|e| shared.sql_err(e))?;
    }
    out.sort_by(|a, b| a.labels.cmp(&b.labels));
    Ok(out)
}

/// Samples of one series in `range`, from its stored chunks (`(start, blob)`)
/// and its head windows, sorted and one per timestamp.
fn raw_samples(
    id: u32,
    chunks: &[(i64, Vec<u8>)],
    head: &[WindowCopy],
    range: TimeRange,
) -> Result<Vec<(i64, f64)>> {
    let mut samples: Vec<(i64, f64)> = Vec::new();
    // Decodes one Gorilla chunk's samples within `range`.
    let mut take = |data: &[u8], what: &dyn Fn() -> String| -> Result<()> {
        for s in chunk::ChunkIter::new(data) {
            let (t, v) = s.map_err(|e| Error::Corrupt(format!("{}: {e}", what())))?;
            if t > range.end_ms {
                break;
            }
            if t >= range.start_ms {
                samples.push((t, v));
            }
        }
        Ok(())
    };
    // A chunk starting before range.start can still overlap it.
    for (start, data) in chunks {
        take(data, &|| format!("chunk of series {id} at {start}"))?;
    }
    for (bytes, _) in head {
        take(bytes, &|| format!("head chunk of series {id}"))?;
    }
    for (_, ooo) in head {
        samples.extend(ooo.iter().copied().filter(|s| range.contains(s.0)));
    }
    if !samples.windows(2).all(|w| w[0].0 < w[1].0) {
        samples.sort_by_key(|s| s.0);
        samples.dedup_by_key(|s| s.0);
    }
    Ok(samples)
}

/// One synthetic sample per 5-minute bucket in `range`: stored rollups of
/// compacted windows, and rollups computed here of head windows (each whole
/// window, as compaction will, so both agree).
fn rollup_samples(
    id: u32,
    rollups: &[(i64, Vec<u8>)],
    head: &[WindowCopy],
    range: TimeRange,
    field: RollupField,
    window_ms: i64,
) -> Result<Vec<(i64, f64)>> {
    let mut buckets: BTreeMap<i64, RollupBucket> = BTreeMap::new();
    for (bytes, ooo) in head {
        let mut samples = Vec::new();
        for s in chunk::ChunkIter::new(bytes) {
            samples.push(s.map_err(|e| Error::Corrupt(format!("head chunk of series {id}: {e}")))?);
        }
        if !ooo.is_empty() {
            samples.extend_from_slice(ooo);
            samples.sort_by_key(|s| s.0);
            samples.dedup_by_key(|s| s.0);
        }
        for b in rollup_5m(&samples) {
            buckets.insert(b.start_ms, b);
        }
    }
    for (start, data) in rollups {
        let decoded = chunk::decode_rollups(data)
            .map_err(|e| Error::Corrupt(format!("rollups of series {id} at {start}: {e}")))?;
        for b in decoded {
            // A window compacted while this read ran is in both: same buckets.
            buckets.entry(b.start_ms).or_insert(b);
        }
    }
    Ok(rollup::synthesize_range(
        buckets.into_values(),
        range,
        field,
        window_ms,
    ))
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

/// The clusters of the head's series overlapping `range`, with their
/// newest sample and series count.
pub(crate) fn clusters(
    shared: &Shared,
    range: TimeRange,
    limit: usize,
) -> Result<Vec<kube_insight_store::metrics::ClusterSeen>> {
    let head = lock_read(&shared.head);
    let mut by: BTreeMap<u32, (i64, u64)> = BTreeMap::new();
    for s in head
        .all_ids()
        .iter()
        .filter_map(|id| head.series.get(id))
        .filter(|s| s.overlaps(range.start_ms, range.end_ms))
    {
        let e = by.entry(s.cluster).or_insert((i64::MIN, 0));
        e.0 = e.0.max(s.last_ms);
        e.1 += 1;
    }
    if by.len() > limit {
        return Err(Error::LimitExceeded {
            what: "clusters",
            limit,
        });
    }
    let mut out: Vec<kube_insight_store::metrics::ClusterSeen> = by
        .into_iter()
        .map(|(c, (last, n))| kube_insight_store::metrics::ClusterSeen {
            cluster: head.syms.resolve(c).to_string(),
            last_seen_ms: Some(last),
            series: Some(n),
        })
        .collect();
    drop(head);
    out.sort_by(|a, b| a.cluster.cmp(&b.cluster));
    Ok(out)
}

/// The entity tree seen in a time range: the head's series, handed to
/// [`kube_insight_store::entity_tree::build`] (the semantics are documented there).
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
    let series = ids.iter().filter_map(|id| head.series.get(id)).map(|s| {
        let l = |n| s.label(&head.syms, n);
        EntitySeries {
            cluster: head.syms.resolve(s.cluster),
            name: l(s_name),
            namespace: l(s_ns),
            pod: l(s_pod),
            container: l(s_cont),
            owner_kind: l(s_kind),
            owner_name: l(s_owner),
            owner_is_controller: l(s_ctl) == "true",
            replicaset: l(s_rs),
            job_name: l(s_job),
            first_ms: s.first_ms,
            last_ms: s.last_ms,
        }
    });
    entity_tree::build(series, q)
}
