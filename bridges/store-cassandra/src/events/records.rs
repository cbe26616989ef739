//! The pure read-side logic of the events backend: stored records and
//! their encodings, event folding, twins, version chains, retention plans
//! and resourceVersion checks (unit-tested without a server).

use super::*;

/// One occurrence row as read back.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Occurrence {
    pub(super) at_ms: i64,
    pub(super) uid: String,
    pub(super) count: i64,
    pub(super) first_ms: i64,
    pub(super) data: Vec<u8>,
}

pub(super) type OccurrenceRow = (i64, String, i64, Option<i64>, Option<Vec<u8>>);

impl Occurrence {
    pub(super) fn from_row(r: OccurrenceRow) -> Option<Occurrence> {
        let (at_ms, uid, count, first_ms, data) = r;
        Some(Occurrence {
            at_ms,
            uid,
            count,
            first_ms: first_ms.unwrap_or(at_ms),
            data: data?,
        })
    }
}

/// The occurrences of one event folded together.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct EventFold {
    pub(super) cluster: String,
    pub(super) uid: String,
    pub(super) max_count: i64,
    pub(super) occurrences: i64,
    pub(super) last_ms: i64,
    /// The smallest `first_ms` of its rows.
    pub(super) first_ms: i64,
    /// The earliest occurrence.
    pub(super) min_at: i64,
    /// (at, count) of the row whose event is kept: the earliest.
    pub(super) kept: (i64, i64),
    pub(super) data: Vec<u8>,
}

/// Folds occurrence rows by (cluster, uid).
#[derive(Debug, Default)]
pub(super) struct EventFolds(HashMap<(String, String), EventFold>);

impl EventFolds {
    pub(super) fn add(&mut self, cluster: &str, o: Occurrence) {
        match self.0.get_mut(&(cluster.to_string(), o.uid.clone())) {
            Some(f) => {
                f.max_count = f.max_count.max(o.count);
                f.occurrences += 1;
                f.last_ms = f.last_ms.max(o.at_ms);
                f.first_ms = f.first_ms.min(o.first_ms);
                f.min_at = f.min_at.min(o.at_ms);
                if (o.at_ms, o.count) < f.kept {
                    f.kept = (o.at_ms, o.count);
                    f.data = o.data;
                }
            }
            None => {
                let key = (cluster.to_string(), o.uid.clone());
                self.0.insert(
                    key,
                    EventFold {
                        cluster: cluster.to_string(),
                        uid: o.uid,
                        max_count: o.count,
                        occurrences: 1,
                        last_ms: o.at_ms,
                        first_ms: o.first_ms,
                        min_at: o.at_ms,
                        kept: (o.at_ms, o.count),
                        data: o.data,
                    },
                );
            }
        }
    }

    pub(super) fn into_folds(self) -> impl Iterator<Item = (EventFold, Result<EventMeta>)> {
        self.0.into_values().map(|f| {
            let meta = EventMeta::decode(&f.data, &f.uid);
            (f, meta)
        })
    }
}

/// The answer of `query_events` from the folded occurrences at or after the
/// range's start: filters, "first occurrence (or `first_ms`) at or before
/// the end", newest last occurrence first, then uid.
pub(super) fn events_answer(
    folds: EventFolds,
    q: &EventQuery,
    limit: usize,
) -> Result<Vec<KubeEvent>> {
    let kind = q.kind.as_deref().map(normalize_kind);
    let mut out = Vec::new();
    for (f, meta) in folds.into_folds() {
        let Some(m) = skip_corrupt(meta)? else {
            continue;
        };
        let eq = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
        let ns_ok = q
            .namespace
            .as_deref()
            .is_none_or(|ns| m.involved.namespace == ns || m.namespace == ns);
        if !ns_ok
            || !eq(&q.name, &m.involved.name)
            || !eq(&q.reason, &m.reason)
            || !eq(&q.event_type, &m.event_type)
            || !kind_matches(kind.as_deref(), &m.involved.kind)
            || f.first_ms.min(f.min_at) > q.range.end_ms
        {
            continue;
        }
        out.push(KubeEvent {
            count: event_count(&f.uid, f.max_count, f.occurrences),
            cluster: f.cluster,
            uid: f.uid,
            namespace: m.namespace,
            name: m.name,
            reason: m.reason,
            event_type: m.event_type,
            message: m.message,
            involved: m.involved,
            source_component: m.source_component,
            source_host: m.source_host,
            first_ms: f.first_ms.min(f.last_ms),
            last_ms: f.last_ms,
            resource_version: m.rv,
            origin: m.origin,
        });
    }
    out.sort_by(|a, b| b.last_ms.cmp(&a.last_ms).then_with(|| a.uid.cmp(&b.uid)));
    out.truncate(limit);
    Ok(out)
}

/// The events part of the timeline from the folded occurrences within the
/// range: newest first, at most `limit`.
pub(super) fn event_changes(
    folds: EventFolds,
    q: &ChangeQuery,
    kind: Option<&str>,
    limit: usize,
) -> Result<Vec<ChangeRow>> {
    let mut out = Vec::new();
    for (f, meta) in folds.into_folds() {
        let Some(m) = skip_corrupt(meta)? else {
            continue;
        };
        if q.namespace
            .as_deref()
            .is_some_and(|ns| m.involved.namespace != ns)
            || q.workload
                .as_deref()
                .is_some_and(|w| m.workload != w && m.involved.name != w)
            || !kind_matches(kind, &m.involved.kind)
        {
            continue;
        }
        out.push((
            f.uid.clone(),
            ChangeRow::from(EventLine {
                count: event_count(&f.uid, f.max_count, f.occurrences),
                cluster: f.cluster,
                uid: f.uid,
                at_ms: f.last_ms,
                event_type: m.event_type,
                namespace: m.involved.namespace,
                kind: m.involved.kind,
                name: m.involved.name,
                resource_version: m.rv,
                reason: m.reason,
                message: m.message,
                source_component: m.source_component,
            }),
        ));
    }
    out.sort_by(|a, b| b.1.at_ms.cmp(&a.1.at_ms).then_with(|| a.0.cmp(&b.0)));
    Ok(out.into_iter().take(limit).map(|r| r.1).collect())
}

/// Is one of these `event_content` rows (at, uid, first) a watched twin of
/// a uid-less event at `t`: an occurrence within a second of it, or an event
/// whose [first, last] span covers it?
pub(super) fn is_watched_twin(rows: &[(i64, String, i64)], t: i64, horizon: i64) -> bool {
    rows.iter().any(|(at, uid, first)| {
        !uid.starts_with(SYNTHETIC_UID_PREFIX)
            && *at >= horizon
            && ((*at - t).abs() <= TWIN_WINDOW_MS
                || (*first - TWIN_WINDOW_MS <= t && t <= *at + TWIN_WINDOW_MS))
    })
}

/// The day partitions of `event_content` to search for the synthetic twins
/// of a watched event spanning [lo, hi]: the newest [`TWIN_MAX_DAYS`].
pub(super) fn twin_days(lo: i64, hi: i64) -> Vec<i32> {
    let (a, b) = (day_of(lo), day_of(hi));
    (a.max(b.saturating_sub(TWIN_MAX_DAYS - 1))..=b).collect()
}

/// Catalog rows (cluster, day, resource) of the wanted cluster (or all) with
/// a day in [lo, hi]: (cluster, day), newest day first.
pub(super) fn pick_days(
    catalog: &[(String, i32, String)],
    cluster: Option<&str>,
    lo: i32,
    hi: i32,
) -> Vec<(String, i32)> {
    let set: BTreeSet<(i32, String)> = catalog
        .iter()
        .filter(|(c, d, _)| cluster.is_none_or(|w| w == c) && (lo..=hi).contains(d))
        .map(|(c, d, _)| (*d, c.clone()))
        .collect();
    set.into_iter().rev().map(|(d, c)| (c, d)).collect()
}

/// One version as the read side lists it (without payloads).
#[derive(Debug, Clone, PartialEq)]
pub(super) struct VersionRow {
    pub(super) seq: i64,
    pub(super) at_ms: i64,
    pub(super) change: ChangeKind,
    pub(super) keyframe: bool,
    pub(super) rv: String,
}

pub(super) type VersionListRow = (
    i64,
    Option<i64>,
    Option<String>,
    Option<bool>,
    Option<String>,
);

impl VersionRow {
    pub(super) fn from_row(r: VersionListRow) -> Option<VersionRow> {
        let (seq, at_ms, change, kf, rv) = r;
        Some(VersionRow {
            seq,
            at_ms: at_ms?,
            change: ChangeKind::parse(change.as_deref()?)?,
            keyframe: kf.unwrap_or(false),
            rv: rv.unwrap_or_default(),
        })
    }
}

/// The versions (sorted by seq) a reader sees once retention cut at
/// `horizon`: none of an object deleted before it; otherwise the last
/// version before it (the state at the cutoff) and every later one.
pub(super) fn visible(versions: &[VersionRow], horizon: i64) -> &[VersionRow] {
    let Some(last) = versions.last() else {
        return versions;
    };
    if last.change == ChangeKind::Deleted && last.at_ms < horizon {
        return &[];
    }
    match versions.iter().rposition(|v| v.at_ms < horizon) {
        Some(i) => &versions[i..],
        None => versions,
    }
}

/// The version in effect at `at_ms`: the latest at or before it.
pub(super) fn version_at(versions: &[VersionRow], at_ms: i64) -> Option<&VersionRow> {
    versions
        .iter()
        .filter(|v| v.at_ms <= at_ms)
        .max_by_key(|v| (v.at_ms, v.seq))
}

/// The keyframe version `seq` is rebuilt from.
pub(super) fn keyframe_for(versions: &[VersionRow], seq: i64) -> Option<i64> {
    versions
        .iter()
        .filter(|v| v.keyframe && v.seq <= seq)
        .map(|v| v.seq)
        .max()
}

/// A version chain row: (seq, patch, frame).
pub(super) type ChainRow = (i64, Option<Vec<u8>>, Option<Vec<u8>>);

/// An object rebuilt from its chain rows, sorted by seq: the last full
/// copy, then the patches after it, which must be contiguous.
pub(super) fn rebuild_from(rows: &[ChainRow], uid: &str) -> Result<Value> {
    let start = rows.iter().rposition(|r| r.2.is_some()).ok_or_else(|| {
        Error::Corrupt(format!("object {uid}: no full copy in its version chain"))
    })?;
    let base = decode_object(rows[start].2.as_deref().unwrap_or_default())?;
    let mut patches = Vec::new();
    for (expect, (seq, patch, _)) in (rows[start].0 + 1..).zip(&rows[start + 1..]) {
        if *seq != expect {
            return Err(Error::Corrupt(format!(
                "object {uid}: version {expect} is missing from its chain"
            )));
        }
        if let Some(p) = patch {
            patches.push(decode_patch(p, uid)?);
        }
    }
    Ok(apply_patches(base, &patches))
}

/// What retention does to one object's versions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Trim {
    Nothing,
    /// Deleted before the cutoff: every row goes.
    DropObject {
        rows: u64,
    },
    /// Versions before `keep` (the state at the cutoff) go; `frame`: `keep`
    /// must first get a full copy.
    Cut {
        keep: i64,
        older: u64,
        frame: bool,
    },
}

pub(super) fn retention_plan(versions: &[VersionRow], horizon: i64) -> Trim {
    let Some(last) = versions.last() else {
        return Trim::Nothing;
    };
    if last.change == ChangeKind::Deleted && last.at_ms < horizon {
        return Trim::DropObject {
            rows: versions.len() as u64,
        };
    }
    let Some(keep) = versions.iter().rev().find(|v| v.at_ms < horizon) else {
        return Trim::Nothing;
    };
    let older = versions.iter().filter(|v| v.seq < keep.seq).count() as u64;
    if older == 0 && keep.keyframe {
        return Trim::Nothing;
    }
    Trim::Cut {
        keep: keep.seq,
        older,
        frame: !keep.keyframe,
    }
}

/// Whether a write's resourceVersion may already be stored as a version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RvCheck {
    Stored,
    NotStored,
    /// Only the object's version list can tell.
    Scan,
}

pub(super) fn rv_check(latest: Option<&Latest>, w: &ObjectWrite) -> RvCheck {
    let Some(l) = latest else {
        return RvCheck::NotStored;
    };
    if l.vrv == w.resource_version {
        return RvCheck::Stored;
    }
    if l.state.rv == w.resource_version && w.change != ChangeKind::Deleted {
        // A duplicate either way (plan_write says so).
        return RvCheck::NotStored;
    }
    match (rv_num(&w.resource_version), rv_num(&l.state.rv)) {
        // Every stored version's rv is at most the last seen one.
        (Some(a), Some(b)) if a > b => RvCheck::NotStored,
        _ => RvCheck::Scan,
    }
}

/// A new version must carry a full copy when its chain's keyframe is old.
pub(super) fn keyframe_due(planned: bool, keyframe_ms: i64, wall: i64) -> bool {
    planned || wall - keyframe_ms > KEYFRAME_MAX_AGE_MS
}

/// The previous version is rewritten as a keyframe when its rows are old.
pub(super) fn reanchor_due(version_ms: i64, wall: i64) -> bool {
    wall - version_ms > KEYFRAME_MAX_AGE_MS
}

/// Maintenance rewrites a live object's keyframe halfway through its TTL.
pub(super) fn refresh_due(keyframe_ms: i64, wall: i64, retention_ms: i64) -> bool {
    wall - keyframe_ms > retention_ms / 2
}

/// Groups of events that must be written in order (same uid or same
/// content, by union-find); groups are independent.
pub(super) fn event_groups(events: &[KubeEvent]) -> Vec<Vec<usize>> {
    pub(super) fn find(p: &mut [usize], mut i: usize) -> usize {
        while p[i] != i {
            p[i] = p[p[i]];
            i = p[i];
        }
        i
    }
    let mut parent: Vec<usize> = (0..events.len()).collect();
    let mut first: HashMap<(u8, String), usize> = HashMap::new();
    for (i, e) in events.iter().enumerate() {
        let content = content_hash(&e.reason, &e.involved.kind, &e.message).to_string();
        for key in [(0u8, format!("{}\0{}", e.cluster, e.uid)), (1u8, content)] {
            match first.get(&key) {
                Some(&j) => {
                    let (a, b) = (find(&mut parent, i), find(&mut parent, j));
                    if a != b {
                        parent[a.max(b)] = a.min(b);
                    }
                }
                None => {
                    first.insert(key, i);
                }
            }
        }
    }
    let mut groups: std::collections::BTreeMap<usize, Vec<usize>> = Default::default();
    for i in 0..events.len() {
        let r = find(&mut parent, i);
        groups.entry(r).or_default().push(i);
    }
    groups.into_values().collect()
}
