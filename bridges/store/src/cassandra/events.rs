//! Events and object history in Cassandra ([`CassandraEventStore`]), with
//! the same answers as the embedded store (the planning of versions, the
//! codecs and the timeline rows are shared: [`crate::event_codec`]).
//!
//! # Tables (see `schema.rs`)
//! - `event_occurrences ((cluster, day), at_ms, uid, cnt)`: one row per
//!   occurrence (a first sighting or a count update), in the day of its
//!   time, carrying the event (JSON) and its `first_ms`. A retry writes the
//!   same key and overwrites itself; a count++ is a new row; readers fold
//!   the rows of a uid (highest count, last time).
//! - `event_keys ((cluster, uid), cnt, at_ms)`: the occurrences of one
//!   event, for the write path: "seen before?" and "this count stored?".
//! - `event_content ((cluster, day, content), at_ms, uid, cnt)`: the same
//!   occurrences by (reason, involved kind, message), to match kube-eventer's
//!   uid-less copies with watched events within a second.
//! - `object_versions ((cluster, uid), seq)`: an object's versions: a merge
//!   patch from the previous one, and a full copy (`frame`, zstd JSON) at
//!   keyframes (`kf`).
//! - `object_changes ((cluster, day), at_ms, uid, seq)`: the timeline (every
//!   version but baselines), by the change's day.
//! - `object_latest ((cluster, resource, shard), uid)`: the last stored state
//!   of each object (the base of the next patch; `live_objects`), 16 shards
//!   per kind.
//! - `object_names ((cluster, object), uid)`: `kind/namespace/name` → uids.
//! - `watch_checkpoints ((cluster, resource))`.
//! - `event_catalog ((scope), cluster, day, resource)`: which (cluster, day)
//!   partitions hold occurrences (scope 0) or changes (scope 1), and which
//!   kinds hold objects (scope 2): a few thousand rows, so a query over any
//!   range reads only partitions that exist.
//!
//! # Time-to-live and retention
//! The event tables live `KUBE_INSIGHT_RETENTION_EVENTS`; the object tables
//! one day more ([`OBJECT_TTL_SLACK`]), and a version is stored with a full
//! copy when its chain's keyframe is older than 12 h (and the previous
//! version is rewritten as a keyframe when it is), so every version stays
//! rebuildable as long as it can be asked for. Maintenance rewrites the
//! keyframe of every live object halfway through its TTL, so the state of an
//! unchanged object never expires. Retention also takes effect through a
//! horizon (`now - retention`, with the `now` maintenance is given): reads
//! hide what is older, and whole day partitions before it are deleted, with
//! the state of each object at the cutoff kept as a keyframe.
//!
//! # Writes
//! Every statement is idempotent; nothing is batched across partitions.
//! Writes of one object (and events of one content) are serialised within
//! the process; a version is planned against the last stored state, so the
//! collector's single active replica (its Lease) stores each change once,
//! and a retried write rewrites the same rows.

use super::session::Db;
use crate::change_feed::is_status_only;
use crate::error::{Error, Result};
use crate::event_codec::{
    apply_patches, decode_object, decode_patch, encode_object, encode_patch, event_count,
    kind_matches, merge_timeline, plan_write, rv_num, EventLine, LatestState, VersionPlan,
    WritePlan, KEYFRAME_EVERY, TWIN_WINDOW_MS,
};
use crate::events::{
    ChangeQuery, ChangeRow, EventQuery, EventStore, EventWriteOutcome, LiveObject, ObjectAt,
    ObjectWrite, ObjectWriteOutcome, WatchCheckpoint,
};
use crate::StoreOptions;
use async_trait::async_trait;
use futures::stream::{self, StreamExt, TryStreamExt};
use kube_insight_core::event::{
    normalize_kind, workload_of_ref, ChangeKind, EventOrigin, KubeEvent, ObjectRef,
    SYNTHETIC_UID_PREFIX,
};
use scylla::value::MaybeUnset;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const DAY_MS: i64 = 86_400_000;
/// Catalog scopes.
const SCOPE_EVENTS: i32 = 0;
const SCOPE_CHANGES: i32 = 1;
const SCOPE_KINDS: i32 = 2;
/// Partitions of `object_latest` per kind.
pub const LATEST_SHARDS: i32 = 16;
/// A version chain's keyframe is never older than this when a version is
/// added to it (wall clock).
const KEYFRAME_MAX_AGE_MS: i64 = 12 * 3_600_000;
/// The object tables outlive the retention by this much, so a keyframe
/// outlives every version that needs it (see the module docs).
pub const OBJECT_TTL_SLACK: Duration = Duration::from_secs(86_400);
/// How often maintenance looks for keyframes to rewrite.
const REFRESH_EVERY_MS: i64 = 6 * 3_600_000;
/// A catalog row is rewritten (fresh TTL) at most this often per process.
const CATALOG_REWRITE_MS: i64 = 3_600_000;
/// Day partitions searched for the synthetic twins of a watched event.
const TWIN_MAX_DAYS: i32 = 3;
/// Requests one call runs in parallel.
const FANOUT: usize = 16;
/// Rows one query may answer (as the embedded store).
const MAX_ROWS: usize = 100_000;
/// Rows one query or maintenance step may read.
const MAX_SCAN_ROWS: usize = 1_000_000;
/// Versions of one object, occurrences of one event, uids of one name.
const MAX_PER_KEY: usize = 100_000;
const LOCK_STRIPES: usize = 64;
/// Write time of retention deletes: above every cell written.
const DELETE_TS_US: i64 = 1 << 62;
const ZSTD_LEVEL: i32 = 3;

// ---------------------------------------------------------------------------
// Statements (every one checked against the schema in the tests)

const KEY_W: &str = "INSERT INTO event_keys (cluster, uid, cnt, at_ms) VALUES (?, ?, ?, ?)";
const KEY_SAME_COUNT: &str =
    "SELECT at_ms FROM event_keys WHERE cluster = ? AND uid = ? AND cnt = ? LIMIT 1";
const KEY_SAME_AT: &str =
    "SELECT at_ms FROM event_keys WHERE cluster = ? AND uid = ? AND cnt = ? AND at_ms = ?";
const KEY_ANY: &str = "SELECT at_ms FROM event_keys WHERE cluster = ? AND uid = ? LIMIT 1";
const KEYS_OF: &str = "SELECT cnt, at_ms FROM event_keys WHERE cluster = ? AND uid = ?";
const KEY_DEL: &str =
    "DELETE FROM event_keys WHERE cluster = ? AND uid = ? AND cnt = ? AND at_ms = ?";
const KEYS_DEL: &str = "DELETE FROM event_keys WHERE cluster = ? AND uid = ?";
const OCC_W: &str = "INSERT INTO event_occurrences (cluster, day, at_ms, uid, cnt, first_ms, data) VALUES (?, ?, ?, ?, ?, ?, ?)";
const OCC_FROM: &str = "SELECT at_ms, uid, cnt, first_ms, data FROM event_occurrences WHERE cluster = ? AND day = ? AND at_ms >= ?";
const OCC_RANGE: &str = "SELECT at_ms, uid, cnt, first_ms, data FROM event_occurrences WHERE cluster = ? AND day = ? AND at_ms >= ? AND at_ms <= ?";
const OCC_DAY: &str =
    "SELECT at_ms, uid, cnt, data FROM event_occurrences WHERE cluster = ? AND day = ?";
const OCC_ROW_DEL: &str = "DELETE FROM event_occurrences WHERE cluster = ? AND day = ? AND at_ms = ? AND uid = ? AND cnt = ?";
const OCC_DAY_DEL: &str =
    "DELETE FROM event_occurrences USING TIMESTAMP ? WHERE cluster = ? AND day = ?";
const CONTENT_W: &str = "INSERT INTO event_content (cluster, day, content, at_ms, uid, cnt, first_ms) VALUES (?, ?, ?, ?, ?, ?, ?)";
const CONTENT_FROM: &str = "SELECT at_ms, uid, first_ms FROM event_content WHERE cluster = ? AND day = ? AND content = ? AND at_ms >= ?";
const CONTENT_RANGE: &str = "SELECT uid FROM event_content WHERE cluster = ? AND day = ? AND content = ? AND at_ms >= ? AND at_ms <= ?";
const CONTENT_ROW_DEL: &str = "DELETE FROM event_content WHERE cluster = ? AND day = ? AND content = ? AND at_ms = ? AND uid = ? AND cnt = ?";
const CONTENT_DEL: &str =
    "DELETE FROM event_content USING TIMESTAMP ? WHERE cluster = ? AND day = ? AND content = ?";
const VERSION_W: &str = "INSERT INTO object_versions (cluster, uid, seq, rv, at_ms, change, kf, meta, patch, frame) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
const VERSIONS_OF: &str =
    "SELECT seq, at_ms, change, kf, rv FROM object_versions WHERE cluster = ? AND uid = ?";
const VERSION_ROW: &str = "SELECT rv, at_ms, change, meta, patch FROM object_versions WHERE cluster = ? AND uid = ? AND seq = ?";
const VERSION_META: &str =
    "SELECT meta FROM object_versions WHERE cluster = ? AND uid = ? AND seq = ?";
const VERSION_CHAIN: &str = "SELECT seq, patch, frame FROM object_versions WHERE cluster = ? AND uid = ? AND seq >= ? AND seq <= ?";
const VERSIONS_DEL: &str =
    "DELETE FROM object_versions USING TIMESTAMP ? WHERE cluster = ? AND uid = ?";
const VERSIONS_BEFORE_DEL: &str =
    "DELETE FROM object_versions USING TIMESTAMP ? WHERE cluster = ? AND uid = ? AND seq < ?";
const CHANGE_W: &str =
    "INSERT INTO object_changes (cluster, day, at_ms, uid, seq, data) VALUES (?, ?, ?, ?, ?, ?)";
const CHANGES_RANGE: &str = "SELECT at_ms, uid, seq, data FROM object_changes WHERE cluster = ? AND day = ? AND at_ms >= ? AND at_ms <= ?";
const CHANGE_UIDS: &str = "SELECT uid FROM object_changes WHERE cluster = ? AND day = ?";
const CHANGES_DEL: &str =
    "DELETE FROM object_changes USING TIMESTAMP ? WHERE cluster = ? AND day = ?";
const LATEST_W: &str = "INSERT INTO object_latest (cluster, resource, shard, uid, namespace, name, rv, vrv, seq, at_ms, deleted, version_ms, keyframe_ms, object) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
const LATEST_Q: &str = "SELECT seq, rv, vrv, at_ms, deleted, version_ms, keyframe_ms, object, namespace, name, TTL(rv), WRITETIME(rv) FROM object_latest WHERE cluster = ? AND resource = ? AND shard = ? AND uid = ?";
/// The latest row rewritten by maintenance, at its own write time + 1 µs:
/// a newer version written meanwhile (by another process) wins.
const LATEST_REFRESH_W: &str = "INSERT INTO object_latest (cluster, resource, shard, uid, namespace, name, rv, vrv, seq, at_ms, deleted, version_ms, keyframe_ms, object) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) USING TIMESTAMP ?";
const LATEST_RV: &str = "UPDATE object_latest USING TTL ? SET rv = ? WHERE cluster = ? AND resource = ? AND shard = ? AND uid = ?";
const LATEST_SHARD: &str = "SELECT uid, namespace, name, rv, at_ms, deleted, object FROM object_latest WHERE cluster = ? AND resource = ? AND shard = ?";
const LATEST_AGES: &str = "SELECT uid, deleted, keyframe_ms FROM object_latest WHERE cluster = ? AND resource = ? AND shard = ?";
const LATEST_DEL: &str = "DELETE FROM object_latest USING TIMESTAMP ? WHERE cluster = ? AND resource = ? AND shard = ? AND uid = ?";
const NAME_W: &str = "INSERT INTO object_names (cluster, object, uid) VALUES (?, ?, ?)";
const NAME_UIDS: &str = "SELECT uid FROM object_names WHERE cluster = ? AND object = ?";
const NAME_DEL: &str =
    "DELETE FROM object_names USING TIMESTAMP ? WHERE cluster = ? AND object = ? AND uid = ?";
const CHECKPOINT_W: &str =
    "INSERT INTO watch_checkpoints (cluster, resource, rv, at_ms) VALUES (?, ?, ?, ?)";
const CHECKPOINT_Q: &str =
    "SELECT rv, at_ms FROM watch_checkpoints WHERE cluster = ? AND resource = ?";
const CATALOG_W: &str =
    "INSERT INTO event_catalog (scope, cluster, day, resource) VALUES (?, ?, ?, ?)";
const CATALOG_Q: &str = "SELECT cluster, day, resource FROM event_catalog WHERE scope = ?";
const CATALOG_DEL: &str =
    "DELETE FROM event_catalog USING TIMESTAMP ? WHERE scope = ? AND cluster = ? AND day = ?";

// ---------------------------------------------------------------------------
// Keys and encodings

/// The day partition of a time (clamped: query bounds may be far off).
pub fn day_of(ms: i64) -> i32 {
    ms.div_euclid(DAY_MS)
        .clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32
}

/// `group/kind` (never empty, also for the core group).
pub fn resource_key(group: &str, kind: &str) -> String {
    format!("{group}/{kind}")
}

/// `kind/namespace/name` with the kind normalized ([`normalize_kind`]).
pub fn object_key(kind: &str, namespace: &str, name: &str) -> String {
    format!("{}/{namespace}/{name}", normalize_kind(kind))
}

/// The `object_latest` shard of a uid.
pub fn latest_shard(uid: &str) -> i32 {
    (xxhash_rust::xxh3::xxh3_64(uid.as_bytes()) % LATEST_SHARDS as u64) as i32
}

/// The content key twins share: reason, involved kind and message.
pub fn content_hash(reason: &str, kind: &str, message: &str) -> i64 {
    let mut buf = Vec::with_capacity(reason.len() + kind.len() + message.len() + 24);
    for p in [reason, kind, message] {
        buf.extend_from_slice(&(p.len() as u64).to_le_bytes());
        buf.extend_from_slice(p.as_bytes());
    }
    xxhash_rust::xxh3::xxh3_64(&buf) as i64
}

fn stripe(key: &str) -> usize {
    (xxhash_rust::xxh3::xxh3_64(key.as_bytes()) % LOCK_STRIPES as u64) as usize
}

fn corrupt(what: &str, e: serde_json::Error) -> Error {
    Error::Corrupt(format!("{what}: {e}"))
}

/// One corrupt record never costs its neighbours: it is logged and left
/// out (`None`); every other error stands.
fn skip_corrupt<T>(r: Result<T>) -> Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(Error::Corrupt(why)) => {
            tracing::warn!(%why, "cassandra events: a corrupt record is skipped");
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// An event as stored in each of its occurrence rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct EventMeta {
    namespace: String,
    name: String,
    reason: String,
    #[serde(rename = "type")]
    event_type: String,
    message: String,
    involved: ObjectRef,
    source_component: String,
    source_host: String,
    workload: String,
    origin: EventOrigin,
    rv: String,
}

impl EventMeta {
    fn of(ev: &KubeEvent) -> EventMeta {
        EventMeta {
            namespace: ev.namespace.clone(),
            name: ev.name.clone(),
            reason: ev.reason.clone(),
            event_type: ev.event_type.clone(),
            message: ev.message.clone(),
            involved: ev.involved.clone(),
            source_component: ev.source_component.clone(),
            source_host: ev.source_host.clone(),
            workload: workload_of_ref(&ev.involved).unwrap_or_default(),
            origin: ev.origin,
            rv: ev.resource_version.clone(),
        }
    }

    fn encode(&self) -> Result<Vec<u8>> {
        serde_json::to_vec(self).map_err(|e| corrupt("encoding an event", e))
    }

    fn decode(b: &[u8], uid: &str) -> Result<EventMeta> {
        serde_json::from_slice(b).map_err(|e| corrupt(&format!("event {uid}"), e))
    }

    fn content(&self) -> i64 {
        content_hash(&self.reason, &self.involved.kind, &self.message)
    }
}

/// A timeline row as stored in `object_changes`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct ChangeRecord {
    change: String,
    category: String,
    namespace: String,
    kind: String,
    name: String,
    workload: String,
    rv: String,
    summary: String,
    manager: Option<String>,
    gitops: Option<String>,
    gap_from_ms: Option<i64>,
    patch: Option<Value>,
}

impl ChangeRecord {
    fn of(w: &ObjectWrite, v: &VersionPlan) -> ChangeRecord {
        ChangeRecord {
            change: v.change.as_str().into(),
            category: v.category.into(),
            namespace: w.namespace.clone(),
            kind: w.kind.clone(),
            name: w.name.clone(),
            workload: v.workload.clone(),
            rv: w.resource_version.clone(),
            summary: v.summary.clone(),
            manager: v.manager.clone(),
            gitops: w.gitops.clone(),
            gap_from_ms: w.gap.map(|g| g.0),
            patch: v.patch.clone(),
        }
    }

    fn row(self, cluster: &str, at_ms: i64, uid: &str) -> ChangeRow {
        ChangeRow {
            at_ms,
            category: self.category,
            change: self.change,
            cluster: cluster.to_string(),
            namespace: self.namespace,
            kind: self.kind,
            name: self.name,
            uid: uid.to_string(),
            resource_version: self.rv,
            summary: self.summary,
            manager: self.manager,
            gitops: self.gitops,
            patch: self.patch,
            reason: None,
            count: None,
            gap_from_ms: self.gap_from_ms,
        }
    }
}

/// What a version row says about its object (for `object_at` and retention).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct VersionMeta {
    group: String,
    kind: String,
    namespace: String,
    name: String,
    manager: Option<String>,
}

impl VersionMeta {
    fn encode(&self) -> Result<Vec<u8>> {
        serde_json::to_vec(self).map_err(|e| corrupt("encoding a version", e))
    }

    fn decode(b: &[u8], uid: &str) -> Result<VersionMeta> {
        serde_json::from_slice(b).map_err(|e| corrupt(&format!("a version of object {uid}"), e))
    }
}

// ---------------------------------------------------------------------------
// Pure read-side logic (unit-tested without a server)

/// One occurrence row as read back.
#[derive(Debug, Clone, PartialEq)]
struct Occurrence {
    at_ms: i64,
    uid: String,
    count: i64,
    first_ms: i64,
    data: Vec<u8>,
}

type OccurrenceRow = (i64, String, i64, Option<i64>, Option<Vec<u8>>);

impl Occurrence {
    fn from_row(r: OccurrenceRow) -> Option<Occurrence> {
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
struct EventFold {
    cluster: String,
    uid: String,
    max_count: i64,
    occurrences: i64,
    last_ms: i64,
    /// The smallest `first_ms` of its rows.
    first_ms: i64,
    /// The earliest occurrence.
    min_at: i64,
    /// (at, count) of the row whose event is kept: the earliest.
    kept: (i64, i64),
    data: Vec<u8>,
}

/// Folds occurrence rows by (cluster, uid).
#[derive(Debug, Default)]
struct EventFolds(HashMap<(String, String), EventFold>);

impl EventFolds {
    fn add(&mut self, cluster: &str, o: Occurrence) {
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

    fn into_folds(self) -> impl Iterator<Item = (EventFold, Result<EventMeta>)> {
        self.0.into_values().map(|f| {
            let meta = EventMeta::decode(&f.data, &f.uid);
            (f, meta)
        })
    }
}

/// The answer of `query_events` from the folded occurrences at or after the
/// range's start: filters, "first occurrence (or `first_ms`) at or before
/// the end", newest last occurrence first, then uid.
fn events_answer(folds: EventFolds, q: &EventQuery, limit: usize) -> Result<Vec<KubeEvent>> {
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
fn event_changes(
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
fn is_watched_twin(rows: &[(i64, String, i64)], t: i64, horizon: i64) -> bool {
    rows.iter().any(|(at, uid, first)| {
        !uid.starts_with(SYNTHETIC_UID_PREFIX)
            && *at >= horizon
            && ((*at - t).abs() <= TWIN_WINDOW_MS
                || (*first - TWIN_WINDOW_MS <= t && t <= *at + TWIN_WINDOW_MS))
    })
}

/// The day partitions of `event_content` to search for the synthetic twins
/// of a watched event spanning [lo, hi]: the newest [`TWIN_MAX_DAYS`].
fn twin_days(lo: i64, hi: i64) -> Vec<i32> {
    let (a, b) = (day_of(lo), day_of(hi));
    (a.max(b.saturating_sub(TWIN_MAX_DAYS - 1))..=b).collect()
}

/// Catalog rows (cluster, day, resource) of the wanted cluster (or all) with
/// a day in [lo, hi]: (cluster, day), newest day first.
fn pick_days(
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
struct VersionRow {
    seq: i64,
    at_ms: i64,
    change: ChangeKind,
    keyframe: bool,
    rv: String,
}

type VersionListRow = (
    i64,
    Option<i64>,
    Option<String>,
    Option<bool>,
    Option<String>,
);

impl VersionRow {
    fn from_row(r: VersionListRow) -> Option<VersionRow> {
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
fn visible(versions: &[VersionRow], horizon: i64) -> &[VersionRow] {
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
fn version_at(versions: &[VersionRow], at_ms: i64) -> Option<&VersionRow> {
    versions
        .iter()
        .filter(|v| v.at_ms <= at_ms)
        .max_by_key(|v| (v.at_ms, v.seq))
}

/// The keyframe version `seq` is rebuilt from.
fn keyframe_for(versions: &[VersionRow], seq: i64) -> Option<i64> {
    versions
        .iter()
        .filter(|v| v.keyframe && v.seq <= seq)
        .map(|v| v.seq)
        .max()
}

/// A version chain row: (seq, patch, frame).
type ChainRow = (i64, Option<Vec<u8>>, Option<Vec<u8>>);

/// An object rebuilt from its chain rows, sorted by seq: the last full
/// copy, then the patches after it, which must be contiguous.
fn rebuild_from(rows: &[ChainRow], uid: &str) -> Result<Value> {
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
enum Trim {
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

fn retention_plan(versions: &[VersionRow], horizon: i64) -> Trim {
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
enum RvCheck {
    Stored,
    NotStored,
    /// Only the object's version list can tell.
    Scan,
}

fn rv_check(latest: Option<&Latest>, w: &ObjectWrite) -> RvCheck {
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
fn keyframe_due(planned: bool, keyframe_ms: i64, wall: i64) -> bool {
    planned || wall - keyframe_ms > KEYFRAME_MAX_AGE_MS
}

/// The previous version is rewritten as a keyframe when its rows are old.
fn reanchor_due(version_ms: i64, wall: i64) -> bool {
    wall - version_ms > KEYFRAME_MAX_AGE_MS
}

/// Maintenance rewrites a live object's keyframe halfway through its TTL.
fn refresh_due(keyframe_ms: i64, wall: i64, retention_ms: i64) -> bool {
    wall - keyframe_ms > retention_ms / 2
}

/// Groups of events that must be written in order (same uid or same
/// content, by union-find); groups are independent.
fn event_groups(events: &[KubeEvent]) -> Vec<Vec<usize>> {
    fn find(p: &mut [usize], mut i: usize) -> usize {
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

// ---------------------------------------------------------------------------
// The store

/// The last stored state of an object with what the cassandra rows add.
#[derive(Debug, Clone)]
struct Latest {
    state: LatestState,
    /// The resourceVersion of version `seq`.
    vrv: String,
    namespace: String,
    name: String,
    /// Wall-clock times the row of version `seq` and its chain's keyframe
    /// were written.
    version_ms: i64,
    keyframe_ms: i64,
    /// Seconds the latest row has left.
    ttl: Option<i32>,
    /// When the latest row was last written (µs, Cassandra's write time).
    written_us: Option<i64>,
    /// Rebuilt from the versions (the latest row was missing).
    from_versions: bool,
}

type LatestRow = (
    Option<i64>,
    Option<String>,
    Option<String>,
    Option<i64>,
    Option<bool>,
    Option<i64>,
    Option<i64>,
    Option<Vec<u8>>,
    Option<String>,
    Option<String>,
    Option<i32>,
    Option<i64>,
);

type CatalogKey = (i32, String, i32, String);

/// The cassandra events store. Cheap to share behind an `Arc`.
pub struct CassandraEventStore {
    db: Arc<Db>,
    opts: StoreOptions,
    retention_ms: i64,
    /// Retention horizon set by maintenance (an injected `now` in tests).
    horizon: AtomicI64,
    now_floor: AtomicI64,
    last_refresh: AtomicI64,
    /// Catalog rows written by this process: when.
    catalog_written: Mutex<HashMap<CatalogKey, i64>>,
    event_locks: Vec<tokio::sync::Mutex<()>>,
    object_locks: Vec<tokio::sync::Mutex<()>>,
}

impl std::fmt::Debug for CassandraEventStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CassandraEventStore")
            .field("keyspace", &self.db.config.keyspace)
            .field("retention", &self.opts.retention.events)
            .finish_non_exhaustive()
    }
}

impl CassandraEventStore {
    pub fn new(db: Arc<Db>, opts: StoreOptions) -> CassandraEventStore {
        let retention_ms = opts.retention.events.as_millis().min(i64::MAX as u128) as i64;
        CassandraEventStore {
            db,
            opts,
            retention_ms,
            horizon: AtomicI64::new(i64::MIN),
            now_floor: AtomicI64::new(i64::MIN),
            last_refresh: AtomicI64::new(i64::MIN),
            catalog_written: Mutex::new(HashMap::new()),
            event_locks: (0..LOCK_STRIPES)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
            object_locks: (0..LOCK_STRIPES)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
        }
    }

    fn horizon(&self) -> i64 {
        self.horizon.load(Ordering::SeqCst)
    }

    fn object_ttl_secs(&self) -> i32 {
        (self.opts.retention.events + OBJECT_TTL_SLACK)
            .as_secs()
            .clamp(3600, super::schema::max_ttl_secs() as u64) as i32
    }

    // -----------------------------------------------------------------
    // Catalog

    /// Records catalog rows (each at most once an hour per process).
    async fn register(&self, keys: impl IntoIterator<Item = CatalogKey>) -> Result<()> {
        let wall = kube_insight_core::time::now_ms();
        let todo: BTreeSet<CatalogKey> = {
            let seen = self
                .catalog_written
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            keys.into_iter()
                .filter(|k| seen.get(k).is_none_or(|t| wall - t > CATALOG_REWRITE_MS))
                .collect()
        };
        if todo.is_empty() {
            return Ok(());
        }
        stream::iter(
            todo.iter()
                .map(|(scope, cluster, day, resource)| {
                    self.db.write(
                        CATALOG_W,
                        (*scope, cluster.as_str(), *day, resource.as_str()),
                    )
                })
                .collect::<Vec<_>>(),
        )
        .buffer_unordered(FANOUT)
        .try_collect::<Vec<()>>()
        .await?;
        let mut seen = self
            .catalog_written
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        for k in todo {
            seen.insert(k, wall);
        }
        Ok(())
    }

    /// The catalog rows of a scope: (cluster, day, resource).
    async fn catalog(&self, scope: i32) -> Result<Vec<(String, i32, String)>> {
        self.db
            .rows(CATALOG_Q, (scope,), MAX_SCAN_ROWS, "catalog rows")
            .await
    }

    async fn clusters_with_objects(&self) -> Result<Vec<String>> {
        let set: BTreeSet<String> = self
            .catalog(SCOPE_KINDS)
            .await?
            .into_iter()
            .map(|r| r.0)
            .collect();
        Ok(set.into_iter().collect())
    }

    // -----------------------------------------------------------------
    // Events: writes

    async fn write_events_all(&self, events: Vec<KubeEvent>) -> Result<EventWriteOutcome> {
        self.register(events.iter().map(|e| {
            (
                SCOPE_EVENTS,
                e.cluster.clone(),
                day_of(e.last_ms),
                String::new(),
            )
        }))
        .await?;
        let groups = event_groups(&events);
        let events = &events;
        let outs: Vec<EventWriteOutcome> = stream::iter(
            groups
                .into_iter()
                .map(|g| async move {
                    let mut out = EventWriteOutcome::default();
                    for i in g {
                        let ev = &events[i];
                        let content = content_hash(&ev.reason, &ev.involved.kind, &ev.message);
                        let _lock = self.event_locks[stripe(&content.to_string())].lock().await;
                        let o = self.write_event(ev, content).await?;
                        out.events_created += o.events_created;
                        out.occurrences_written += o.occurrences_written;
                        out.duplicates += o.duplicates;
                        out.matched_watch += o.matched_watch;
                    }
                    Ok::<_, Error>(out)
                })
                .collect::<Vec<_>>(),
        )
        .buffer_unordered(FANOUT)
        .try_collect()
        .await?;
        let mut total = EventWriteOutcome::default();
        for o in outs {
            total.events_created += o.events_created;
            total.occurrences_written += o.occurrences_written;
            total.duplicates += o.duplicates;
            total.matched_watch += o.matched_watch;
        }
        Ok(total)
    }

    async fn write_event(&self, ev: &KubeEvent, content: i64) -> Result<EventWriteOutcome> {
        let mut out = EventWriteOutcome::default();
        let synthetic = ev.is_synthetic();
        let cluster = ev.cluster.as_str();
        let uid = ev.uid.as_str();
        if synthetic && self.watched_twin(ev, content).await? {
            out.matched_watch = 1;
            return Ok(out);
        }
        // One occurrence per count: a re-send of the same count (another
        // replica, a re-list, kube-eventer) is a duplicate whatever its
        // time; uid-less events count their occurrences (count 0).
        let count = if synthetic {
            0
        } else {
            i64::try_from(ev.count).unwrap_or(i64::MAX)
        };
        let dup = if synthetic {
            let r = self
                .db
                .exec(KEY_SAME_AT, (cluster, uid, 0i64, ev.last_ms))
                .await?;
            !super::session::result_rows::<(i64,)>(KEY_SAME_AT, r)?.is_empty()
        } else {
            let r = self.db.exec(KEY_SAME_COUNT, (cluster, uid, count)).await?;
            !super::session::result_rows::<(i64,)>(KEY_SAME_COUNT, r)?.is_empty()
        };
        if dup {
            out.duplicates = 1;
        } else {
            let r = self.db.exec(KEY_ANY, (cluster, uid)).await?;
            let known = !super::session::result_rows::<(i64,)>(KEY_ANY, r)?.is_empty();
            let data = EventMeta::of(ev).encode()?;
            let d = day_of(ev.last_ms);
            let at = ev.last_ms;
            let first = ev.first_ms;
            futures::try_join!(
                self.db
                    .write(OCC_W, (cluster, d, at, uid, count, first, data)),
                self.db
                    .write(CONTENT_W, (cluster, d, content, at, uid, count, first)),
            )?;
            // The key last: once it is there, a re-send is a duplicate, so
            // a write that failed midway is retried whole.
            self.db.write(KEY_W, (cluster, uid, count, at)).await?;
            out.events_created = u64::from(!known);
            out.occurrences_written = 1;
        }
        if !synthetic {
            self.remove_synthetic_twins(ev, content).await?;
        }
        Ok(out)
    }

    /// A watched event this uid-less one is a copy of?
    async fn watched_twin(&self, ev: &KubeEvent, content: i64) -> Result<bool> {
        let t = ev.last_ms;
        let from = t - TWIN_WINDOW_MS;
        let h = self.horizon();
        // Occurrences from a second before; spans reaching back to it show
        // in the next day's partition at the latest.
        for d in day_of(from)..=day_of(t + TWIN_WINDOW_MS).saturating_add(1) {
            let rows: Vec<(i64, String, Option<i64>)> = self
                .db
                .rows(
                    CONTENT_FROM,
                    (ev.cluster.as_str(), d, content, from),
                    MAX_PER_KEY,
                    "occurrences of one event content",
                )
                .await?;
            let rows: Vec<(i64, String, i64)> = rows
                .into_iter()
                .map(|(at, uid, first)| (at, uid, first.unwrap_or(at)))
                .collect();
            if is_watched_twin(&rows, t, h) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// A watched event removes the uid-less copies that arrived first.
    async fn remove_synthetic_twins(&self, ev: &KubeEvent, content: i64) -> Result<()> {
        let lo = ev.first_ms.min(ev.last_ms) - TWIN_WINDOW_MS;
        let hi = ev.last_ms + TWIN_WINDOW_MS;
        let mut twins = BTreeSet::new();
        for d in twin_days(lo, hi) {
            let rows: Vec<(String,)> = self
                .db
                .rows(
                    CONTENT_RANGE,
                    (ev.cluster.as_str(), d, content, lo, hi),
                    MAX_PER_KEY,
                    "occurrences of one event content",
                )
                .await?;
            twins.extend(
                rows.into_iter()
                    .map(|r| r.0)
                    .filter(|u| u.starts_with(SYNTHETIC_UID_PREFIX)),
            );
        }
        for uid in twins {
            self.delete_event(&ev.cluster, &uid, content).await?;
        }
        Ok(())
    }

    /// Deletes every occurrence of one event.
    async fn delete_event(&self, cluster: &str, uid: &str, content: i64) -> Result<()> {
        let keys: Vec<(i64, i64)> = self
            .db
            .rows(
                KEYS_OF,
                (cluster, uid),
                MAX_PER_KEY,
                "occurrences of one event",
            )
            .await?;
        stream::iter(
            keys.into_iter()
                .map(|(cnt, at)| async move {
                    let d = day_of(at);
                    futures::try_join!(
                        self.db.write(OCC_ROW_DEL, (cluster, d, at, uid, cnt)),
                        self.db
                            .write(CONTENT_ROW_DEL, (cluster, d, content, at, uid, cnt)),
                    )?;
                    Ok::<_, Error>(())
                })
                .collect::<Vec<_>>(),
        )
        .buffer_unordered(FANOUT)
        .try_collect::<Vec<()>>()
        .await?;
        self.db.write(KEYS_DEL, (cluster, uid)).await
    }

    // -----------------------------------------------------------------
    // Events: reads

    /// Folds the occurrences of the given (cluster, day) partitions.
    async fn fold(
        &self,
        parts: Vec<(String, i32)>,
        from: i64,
        to: Option<i64>,
    ) -> Result<EventFolds> {
        let mut s = stream::iter(
            parts
                .into_iter()
                .map(|(cluster, d)| async move {
                    let rows: Vec<OccurrenceRow> = match to {
                        Some(to) => {
                            self.db
                                .rows(
                                    OCC_RANGE,
                                    (cluster.as_str(), d, from, to),
                                    MAX_SCAN_ROWS,
                                    "event occurrences",
                                )
                                .await?
                        }
                        None => {
                            self.db
                                .rows(
                                    OCC_FROM,
                                    (cluster.as_str(), d, from),
                                    MAX_SCAN_ROWS,
                                    "event occurrences",
                                )
                                .await?
                        }
                    };
                    Ok::<_, Error>((cluster, rows))
                })
                .collect::<Vec<_>>(),
        )
        .buffer_unordered(FANOUT);
        let mut folds = EventFolds::default();
        let mut scanned = 0usize;
        while let Some((cluster, rows)) = s.try_next().await? {
            scanned += rows.len();
            if scanned > MAX_SCAN_ROWS {
                return Err(Error::LimitExceeded {
                    what: "event occurrences",
                    limit: MAX_SCAN_ROWS,
                });
            }
            for o in rows.into_iter().filter_map(Occurrence::from_row) {
                folds.add(&cluster, o);
            }
        }
        Ok(folds)
    }

    async fn query_events_q(&self, q: &EventQuery) -> Result<Vec<KubeEvent>> {
        let limit = q.limit.clamp(1, MAX_ROWS);
        let start = q.range.start_ms.max(self.horizon());
        let catalog = self.catalog(SCOPE_EVENTS).await?;
        // An event is in the range when it had an occurrence at or after
        // its start and began before its end: every later day counts.
        let parts = pick_days(&catalog, q.cluster.as_deref(), day_of(start), i32::MAX);
        let folds = self.fold(parts, start, None).await?;
        events_answer(folds, q, limit)
    }

    // -----------------------------------------------------------------
    // Objects: writes

    async fn write_objects_all(&self, writes: Vec<ObjectWrite>) -> Result<ObjectWriteOutcome> {
        let mut groups: Vec<Vec<&ObjectWrite>> = Vec::new();
        let mut index: HashMap<(&str, &str), usize> = HashMap::new();
        for w in &writes {
            match index.get(&(w.cluster.as_str(), w.uid.as_str())) {
                Some(&i) => groups[i].push(w),
                None => {
                    index.insert((w.cluster.as_str(), w.uid.as_str()), groups.len());
                    groups.push(vec![w]);
                }
            }
        }
        let outs: Vec<ObjectWriteOutcome> = stream::iter(
            groups
                .into_iter()
                .map(|g| async move {
                    let mut out = ObjectWriteOutcome::default();
                    let Some(first) = g.first() else {
                        return Ok(out);
                    };
                    let _lock = self.object_locks[stripe(&first.uid)].lock().await;
                    for w in g {
                        out.merge(&self.write_object(w).await?);
                    }
                    Ok::<_, Error>(out)
                })
                .collect::<Vec<_>>(),
        )
        .buffer_unordered(FANOUT)
        .try_collect()
        .await?;
        let mut total = ObjectWriteOutcome::default();
        for o in &outs {
            total.merge(o);
        }
        Ok(total)
    }

    async fn write_object(&self, w: &ObjectWrite) -> Result<ObjectWriteOutcome> {
        let mut out = ObjectWriteOutcome::default();
        let resource = resource_key(&w.group, &w.kind);
        let shard = latest_shard(&w.uid);
        let latest = self.latest(&w.cluster, &resource, shard, &w.uid).await?;
        let stored = match rv_check(latest.as_ref(), w) {
            RvCheck::Stored => true,
            RvCheck::NotStored => false,
            RvCheck::Scan => self
                .version_rows(&w.cluster, &w.uid)
                .await?
                .iter()
                .any(|v| v.rv == w.resource_version),
        };
        match plan_write(latest.as_ref().map(|l| &l.state), stored, w, KEYFRAME_EVERY) {
            WritePlan::Duplicate => out.duplicates = 1,
            WritePlan::Stale => out.stale = 1,
            WritePlan::Unchanged => {
                if let Some(l) = &latest {
                    self.touch_rv(w, &resource, shard, l).await?;
                }
                out.unchanged = 1;
            }
            WritePlan::Version(v) => {
                self.store_version(w, &resource, shard, latest.as_ref(), &v)
                    .await?;
                out.versions_written = 1;
            }
        }
        Ok(out)
    }

    /// An unchanged write moves the last seen resourceVersion, keeping the
    /// row's time to live.
    async fn touch_rv(
        &self,
        w: &ObjectWrite,
        resource: &str,
        shard: i32,
        l: &Latest,
    ) -> Result<()> {
        if l.from_versions {
            let mut l = l.clone();
            l.state.rv = w.resource_version.clone();
            return self
                .write_latest(&w.cluster, resource, shard, &w.uid, &l)
                .await;
        }
        let ttl = l
            .ttl
            .filter(|t| *t > 0)
            .unwrap_or_else(|| self.object_ttl_secs());
        self.db
            .write(
                LATEST_RV,
                (
                    ttl,
                    w.resource_version.as_str(),
                    w.cluster.as_str(),
                    resource,
                    shard,
                    w.uid.as_str(),
                ),
            )
            .await
    }

    async fn store_version(
        &self,
        w: &ObjectWrite,
        resource: &str,
        shard: i32,
        latest: Option<&Latest>,
        v: &VersionPlan,
    ) -> Result<()> {
        let wall = kube_insight_core::time::now_ms();
        let cluster = w.cluster.as_str();
        let uid = w.uid.as_str();
        let mut keyframe_ms = latest.map_or(wall, |l| l.keyframe_ms);
        if let Some(l) = latest {
            // The previous version stays the state until this one's time:
            // when its rows are old, they get a fresh full copy.
            if reanchor_due(l.version_ms, wall)
                && self
                    .reanchor(cluster, uid, l.state.seq, &l.state.object)
                    .await?
            {
                keyframe_ms = wall;
            }
        }
        let keyframe = keyframe_due(v.keyframe, keyframe_ms, wall);
        if keyframe {
            keyframe_ms = wall;
        }
        let deleted = v.change == ChangeKind::Deleted;
        let blob = encode_object(&v.state, ZSTD_LEVEL)?;
        let frame = if keyframe {
            MaybeUnset::Set(blob.clone())
        } else {
            MaybeUnset::Unset
        };
        let patch = match &v.patch {
            Some(p) => MaybeUnset::Set(encode_patch(p)?.into_bytes()),
            None => MaybeUnset::Unset,
        };
        let meta = VersionMeta {
            group: w.group.clone(),
            kind: w.kind.clone(),
            namespace: w.namespace.clone(),
            name: w.name.clone(),
            manager: v.manager.clone(),
        }
        .encode()?;
        let mut catalog = vec![(SCOPE_KINDS, w.cluster.clone(), 0, resource.to_string())];
        let timeline = v.change != ChangeKind::Observed;
        if timeline {
            catalog.push((
                SCOPE_CHANGES,
                w.cluster.clone(),
                day_of(v.at_ms),
                String::new(),
            ));
        }
        self.register(catalog).await?;
        let record = if timeline {
            Some(
                serde_json::to_vec(&ChangeRecord::of(w, v))
                    .map_err(|e| corrupt("encoding a change", e))?,
            )
        } else {
            None
        };
        let version = self.db.write(
            VERSION_W,
            (
                cluster,
                uid,
                v.seq,
                w.resource_version.as_str(),
                v.at_ms,
                v.change.as_str(),
                keyframe,
                MaybeUnset::Set(meta),
                patch,
                frame,
            ),
        );
        let key = object_key(&w.kind, &w.namespace, &w.name);
        let name = self.db.write(NAME_W, (cluster, key.as_str(), uid));
        let change = async {
            match record {
                Some(r) => {
                    self.db
                        .write(CHANGE_W, (cluster, day_of(v.at_ms), v.at_ms, uid, v.seq, r))
                        .await
                }
                None => Ok(()),
            }
        };
        futures::try_join!(version, name, change)?;
        // The pointer last: until it moves, a retry plans the same version.
        let l = Latest {
            state: LatestState {
                rv: w.resource_version.clone(),
                seq: v.seq,
                deleted,
                at_ms: v.at_ms,
                object: Value::Null,
            },
            vrv: w.resource_version.clone(),
            namespace: w.namespace.clone(),
            name: w.name.clone(),
            version_ms: wall,
            keyframe_ms,
            ttl: None,
            written_us: None,
            from_versions: false,
        };
        let object = if deleted { Vec::new() } else { blob };
        self.write_latest_blob(cluster, resource, shard, uid, &l, object)
            .await
    }

    async fn write_latest(
        &self,
        cluster: &str,
        resource: &str,
        shard: i32,
        uid: &str,
        l: &Latest,
    ) -> Result<()> {
        let object = if l.state.deleted {
            Vec::new()
        } else {
            encode_object(&l.state.object, ZSTD_LEVEL)?
        };
        self.write_latest_blob(cluster, resource, shard, uid, l, object)
            .await
    }

    async fn write_latest_blob(
        &self,
        cluster: &str,
        resource: &str,
        shard: i32,
        uid: &str,
        l: &Latest,
        object: Vec<u8>,
    ) -> Result<()> {
        self.db
            .write(
                LATEST_W,
                (
                    cluster,
                    resource,
                    shard,
                    uid,
                    l.namespace.as_str(),
                    l.name.as_str(),
                    l.state.rv.as_str(),
                    l.vrv.as_str(),
                    l.state.seq,
                    l.state.at_ms,
                    l.state.deleted,
                    l.version_ms,
                    l.keyframe_ms,
                    object,
                ),
            )
            .await
    }

    /// Rewrites version `seq` with a full copy of `object` (its state) and a
    /// fresh time to live. `false` when the row is gone.
    async fn reanchor(&self, cluster: &str, uid: &str, seq: i64, object: &Value) -> Result<bool> {
        type Row = (
            Option<String>,
            Option<i64>,
            Option<String>,
            Option<Vec<u8>>,
            Option<Vec<u8>>,
        );
        let r = self.db.exec(VERSION_ROW, (cluster, uid, seq)).await?;
        let rows: Vec<Row> = super::session::result_rows(VERSION_ROW, r)?;
        let Some((Some(rv), Some(at_ms), Some(change), meta, patch)) = rows.into_iter().next()
        else {
            tracing::warn!(
                cluster,
                uid,
                seq,
                "cassandra events: a version to re-anchor is gone"
            );
            return Ok(false);
        };
        let frame = encode_object(object, ZSTD_LEVEL)?;
        self.db
            .write(
                VERSION_W,
                (
                    cluster,
                    uid,
                    seq,
                    rv.as_str(),
                    at_ms,
                    change.as_str(),
                    true,
                    MaybeUnset::from_option(meta),
                    MaybeUnset::from_option(patch),
                    MaybeUnset::Set(frame),
                ),
            )
            .await?;
        Ok(true)
    }

    // -----------------------------------------------------------------
    // Objects: reads

    /// The last stored state of an object: its `object_latest` row, or
    /// (when that is missing) rebuilt from its versions.
    async fn latest(
        &self,
        cluster: &str,
        resource: &str,
        shard: i32,
        uid: &str,
    ) -> Result<Option<Latest>> {
        let r = self
            .db
            .exec(LATEST_Q, (cluster, resource, shard, uid))
            .await?;
        let rows: Vec<LatestRow> = super::session::result_rows(LATEST_Q, r)?;
        if let Some((
            Some(seq),
            Some(rv),
            vrv,
            Some(at_ms),
            deleted,
            vms,
            kms,
            object,
            ns,
            name,
            ttl,
            written_us,
        )) = rows.into_iter().next()
        {
            let deleted = deleted.unwrap_or(false);
            let object = if deleted {
                Value::Null
            } else {
                decode_object(object.as_deref().unwrap_or_default())?
            };
            return Ok(Some(Latest {
                vrv: vrv.unwrap_or_else(|| rv.clone()),
                state: LatestState {
                    rv,
                    seq,
                    deleted,
                    at_ms,
                    object,
                },
                namespace: ns.unwrap_or_default(),
                name: name.unwrap_or_default(),
                version_ms: vms.unwrap_or(0),
                keyframe_ms: kms.unwrap_or(0),
                ttl,
                written_us,
                from_versions: false,
            }));
        }
        let versions = self.version_rows(cluster, uid).await?;
        let Some(last) = versions.last() else {
            return Ok(None);
        };
        tracing::warn!(
            cluster,
            uid,
            "cassandra events: no latest row; rebuilding it from the versions"
        );
        let object = self.rebuild(cluster, uid, last.seq, &versions).await?;
        let meta = self.version_meta(cluster, uid, last.seq).await?;
        Ok(Some(Latest {
            state: LatestState {
                rv: last.rv.clone(),
                seq: last.seq,
                deleted: last.change == ChangeKind::Deleted,
                at_ms: last.at_ms,
                object,
            },
            vrv: last.rv.clone(),
            namespace: meta
                .as_ref()
                .map(|m| m.namespace.clone())
                .unwrap_or_default(),
            name: meta.map(|m| m.name).unwrap_or_default(),
            version_ms: 0,
            keyframe_ms: 0,
            ttl: None,
            written_us: None,
            from_versions: true,
        }))
    }

    /// The versions of an object (without payloads), by seq.
    async fn version_rows(&self, cluster: &str, uid: &str) -> Result<Vec<VersionRow>> {
        let rows: Vec<VersionListRow> = self
            .db
            .rows(
                VERSIONS_OF,
                (cluster, uid),
                MAX_PER_KEY,
                "versions of one object",
            )
            .await?;
        Ok(rows.into_iter().filter_map(VersionRow::from_row).collect())
    }

    async fn version_meta(
        &self,
        cluster: &str,
        uid: &str,
        seq: i64,
    ) -> Result<Option<VersionMeta>> {
        let r = self.db.exec(VERSION_META, (cluster, uid, seq)).await?;
        let rows: Vec<(Option<Vec<u8>>,)> = super::session::result_rows(VERSION_META, r)?;
        match rows.into_iter().next().and_then(|r| r.0) {
            Some(b) => VersionMeta::decode(&b, uid).map(Some),
            None => Ok(None),
        }
    }

    /// Version `seq` of an object from its keyframe and patches.
    async fn rebuild(
        &self,
        cluster: &str,
        uid: &str,
        seq: i64,
        versions: &[VersionRow],
    ) -> Result<Value> {
        let k = keyframe_for(versions, seq).ok_or_else(|| {
            Error::Corrupt(format!(
                "object {uid} in cluster {cluster}: no keyframe at or before version {seq}"
            ))
        })?;
        let r = self.db.exec(VERSION_CHAIN, (cluster, uid, k, seq)).await?;
        let rows: Vec<ChainRow> = super::session::result_rows(VERSION_CHAIN, r)?;
        rebuild_from(&rows, uid)
    }

    async fn object_at_q(
        &self,
        cluster: Option<&str>,
        kind: &str,
        namespace: &str,
        name: &str,
        at_ms: i64,
    ) -> Result<Option<ObjectAt>> {
        let clusters = match cluster {
            Some(c) => vec![c.to_string()],
            None => self.clusters_with_objects().await?,
        };
        let key = object_key(kind, namespace, name);
        let mut uids: Vec<(String, String)> = Vec::new();
        for c in &clusters {
            let rows: Vec<(String,)> = self
                .db
                .rows(
                    NAME_UIDS,
                    (c.as_str(), key.as_str()),
                    MAX_PER_KEY,
                    "objects of one name",
                )
                .await?;
            uids.extend(rows.into_iter().map(|r| (c.clone(), r.0)));
        }
        let h = self.horizon();
        let lists: Vec<(String, String, Vec<VersionRow>)> = stream::iter(
            uids.into_iter()
                .map(|(c, uid)| async move {
                    let v = self.version_rows(&c, &uid).await?;
                    Ok::<_, Error>((c, uid, v))
                })
                .collect::<Vec<_>>(),
        )
        .buffered(FANOUT)
        .try_collect()
        .await?;
        let mut best: Option<(&str, &str, &[VersionRow], &VersionRow)> = None;
        for (c, uid, versions) in &lists {
            if let Some(v) = version_at(visible(versions, h), at_ms) {
                if best.is_none_or(|b| (v.at_ms, v.seq) > (b.3.at_ms, b.3.seq)) {
                    best = Some((c, uid, versions, v));
                }
            }
        }
        let Some((c, uid, versions, v)) = best else {
            return Ok(None);
        };
        if v.change == ChangeKind::Deleted {
            return Ok(None);
        }
        let meta = self.version_meta(c, uid, v.seq).await?.ok_or_else(|| {
            Error::Corrupt(format!(
                "object {uid} in cluster {c}: version {} has no metadata",
                v.seq
            ))
        })?;
        let object = self.rebuild(c, uid, v.seq, versions).await?;
        Ok(Some(ObjectAt {
            cluster: c.to_string(),
            group: meta.group,
            kind: meta.kind,
            namespace: namespace.to_string(),
            name: name.to_string(),
            uid: uid.to_string(),
            resource_version: v.rv.clone(),
            version_ms: v.at_ms,
            change: v.change,
            manager: meta.manager,
            object,
        }))
    }

    async fn changes_q(&self, q: &ChangeQuery) -> Result<Vec<ChangeRow>> {
        let limit = q.limit.clamp(1, MAX_ROWS);
        let kind = q.kind.as_deref().map(normalize_kind);
        let start = q.range.start_ms.max(self.horizon());
        let end = q.range.end_ms;
        if start > end {
            return Ok(Vec::new());
        }
        let catalog = self.catalog(SCOPE_CHANGES).await?;
        let parts = pick_days(&catalog, q.cluster.as_deref(), day_of(start), day_of(end));
        type Row = (i64, String, i64, Option<Vec<u8>>);
        let mut days = stream::iter(
            parts
                .into_iter()
                .map(|(cluster, d)| async move {
                    let rows: Vec<Row> = self
                        .db
                        .rows(
                            CHANGES_RANGE,
                            (cluster.as_str(), d, start, end),
                            MAX_SCAN_ROWS,
                            "changes",
                        )
                        .await?;
                    Ok::<_, Error>((cluster, d, rows))
                })
                .collect::<Vec<_>>(),
        )
        .buffered(FANOUT);
        let mut out: Vec<ChangeRow> = Vec::new();
        let mut scanned = 0usize;
        let mut day_rows: Vec<(i64, String, i64, ChangeRow)> = Vec::new();
        let mut current: Option<i32> = None;
        // Days arrive newest first: once a day is complete and the limit
        // reached, older days cannot come before what is kept.
        while let Some((cluster, d, rows)) = days.try_next().await? {
            if current != Some(d) {
                flush_day(&mut out, &mut day_rows);
                if out.len() >= limit {
                    break;
                }
                current = Some(d);
            }
            scanned += rows.len();
            if scanned > MAX_SCAN_ROWS {
                return Err(Error::LimitExceeded {
                    what: "changes",
                    limit: MAX_SCAN_ROWS,
                });
            }
            for (at, uid, seq, data) in rows {
                let Some(data) = data else { continue };
                let rec = serde_json::from_slice::<ChangeRecord>(&data)
                    .map_err(|e| corrupt(&format!("a change of object {uid}"), e));
                let Some(rec) = skip_corrupt(rec)? else {
                    continue;
                };
                if q.namespace.as_deref().is_some_and(|ns| rec.namespace != ns)
                    || q.workload
                        .as_deref()
                        .is_some_and(|w| rec.workload != w && rec.name != w)
                    || !kind_matches(kind.as_deref(), &rec.kind)
                {
                    continue;
                }
                let row = rec.row(&cluster, at, &uid);
                if !q.include_status && is_status_only(&row) {
                    continue;
                }
                day_rows.push((at, uid, seq, row));
            }
        }
        flush_day(&mut out, &mut day_rows);
        out.truncate(limit);
        let events = if q.include_events {
            let catalog = self.catalog(SCOPE_EVENTS).await?;
            let parts = pick_days(&catalog, q.cluster.as_deref(), day_of(start), day_of(end));
            let folds = self.fold(parts, start, Some(end)).await?;
            event_changes(folds, q, kind.as_deref(), limit)?
        } else {
            Vec::new()
        };
        Ok(merge_timeline(out, events, limit))
    }

    async fn live_objects_q(
        &self,
        cluster: &str,
        group: &str,
        kind: &str,
    ) -> Result<Vec<LiveObject>> {
        type Row = (
            String,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<i64>,
            Option<bool>,
            Option<Vec<u8>>,
        );
        let resource = resource_key(group, kind);
        let resource = resource.as_str();
        let shards: Vec<Vec<Row>> = stream::iter(
            (0..LATEST_SHARDS)
                .map(|shard| async move {
                    self.db
                        .rows(
                            LATEST_SHARD,
                            (cluster, resource, shard),
                            MAX_SCAN_ROWS,
                            "objects of one kind",
                        )
                        .await
                })
                .collect::<Vec<_>>(),
        )
        .buffered(FANOUT)
        .try_collect()
        .await?;
        let mut out = Vec::new();
        for (uid, ns, name, rv, at_ms, deleted, object) in shards.into_iter().flatten() {
            let (Some(rv), Some(at_ms)) = (rv, at_ms) else {
                continue;
            };
            if deleted.unwrap_or(false) {
                continue;
            }
            let object = decode_object(object.as_deref().unwrap_or_default())?;
            out.push(LiveObject {
                uid,
                namespace: ns.unwrap_or_default(),
                name: name.unwrap_or_default(),
                resource_version: rv,
                at_ms,
                object,
            });
            if out.len() > MAX_ROWS {
                return Err(Error::LimitExceeded {
                    what: "live objects",
                    limit: MAX_ROWS,
                });
            }
        }
        out.sort_by(|a, b| a.uid.cmp(&b.uid));
        Ok(out)
    }

    // -----------------------------------------------------------------
    // Maintenance

    async fn maintain(&self, now_ms: i64) -> Result<u64> {
        let now = now_ms.max(self.now_floor.fetch_max(now_ms, Ordering::SeqCst));
        self.horizon
            .fetch_max(now.saturating_sub(self.retention_ms), Ordering::SeqCst);
        let h = self.horizon();
        let first_kept = day_of(h);
        let mut expired = 0u64;
        for (cluster, d, _) in self.catalog(SCOPE_EVENTS).await? {
            if d < first_kept {
                expired += self.expire_event_day(&cluster, d).await?;
            }
        }
        let days: BTreeSet<(String, i32)> = self
            .catalog(SCOPE_CHANGES)
            .await?
            .into_iter()
            .filter(|r| r.1 < first_kept)
            .map(|r| (r.0, r.1))
            .collect();
        for (cluster, d) in days {
            expired += self.expire_change_day(&cluster, d, h).await?;
        }
        self.refresh().await?;
        let wall = kube_insight_core::time::now_ms();
        self.catalog_written
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, t| wall - *t <= CATALOG_REWRITE_MS);
        Ok(expired)
    }

    /// Deletes one day of occurrences (and their keys and content rows).
    async fn expire_event_day(&self, cluster: &str, d: i32) -> Result<u64> {
        type Row = (i64, String, i64, Option<Vec<u8>>);
        let rows: Vec<Row> = self
            .db
            .rows(
                OCC_DAY,
                (cluster, d),
                MAX_SCAN_ROWS,
                "event occurrences of a day",
            )
            .await?;
        let mut contents = BTreeSet::new();
        for (_, uid, _, data) in &rows {
            match data.as_deref().map(|b| EventMeta::decode(b, uid)) {
                Some(Ok(m)) => {
                    contents.insert(m.content());
                }
                Some(Err(e)) => {
                    tracing::warn!(cluster, uid = %uid, error = %e, "cassandra events: an expiring occurrence does not decode")
                }
                None => {}
            }
        }
        stream::iter(
            rows.iter()
                .map(|(at, uid, cnt, _)| self.db.write(KEY_DEL, (cluster, uid.as_str(), *cnt, *at)))
                .collect::<Vec<_>>(),
        )
        .buffer_unordered(FANOUT)
        .try_collect::<Vec<()>>()
        .await?;
        stream::iter(
            contents
                .iter()
                .map(|c| self.db.write(CONTENT_DEL, (DELETE_TS_US, cluster, d, *c)))
                .collect::<Vec<_>>(),
        )
        .buffer_unordered(FANOUT)
        .try_collect::<Vec<()>>()
        .await?;
        self.db
            .write(OCC_DAY_DEL, (DELETE_TS_US, cluster, d))
            .await?;
        self.db
            .write(CATALOG_DEL, (DELETE_TS_US, SCOPE_EVENTS, cluster, d))
            .await?;
        Ok(rows.len() as u64)
    }

    /// Retention of the objects changed on one day, then the day's timeline.
    async fn expire_change_day(&self, cluster: &str, d: i32, h: i64) -> Result<u64> {
        let rows: Vec<(String,)> = self
            .db
            .rows(CHANGE_UIDS, (cluster, d), MAX_SCAN_ROWS, "changes of a day")
            .await?;
        let uids: BTreeSet<String> = rows.into_iter().map(|r| r.0).collect();
        let counts: Vec<u64> = stream::iter(
            uids.iter()
                .map(|uid| async move {
                    let _lock = self.object_locks[stripe(uid)].lock().await;
                    skip_corrupt(self.expire_object(cluster, uid, h).await).map(|n| n.unwrap_or(0))
                })
                .collect::<Vec<_>>(),
        )
        .buffer_unordered(FANOUT)
        .try_collect()
        .await?;
        self.db
            .write(CHANGES_DEL, (DELETE_TS_US, cluster, d))
            .await?;
        self.db
            .write(CATALOG_DEL, (DELETE_TS_US, SCOPE_CHANGES, cluster, d))
            .await?;
        Ok(counts.into_iter().sum())
    }

    async fn expire_object(&self, cluster: &str, uid: &str, h: i64) -> Result<u64> {
        let versions = self.version_rows(cluster, uid).await?;
        match retention_plan(&versions, h) {
            Trim::Nothing => Ok(0),
            Trim::DropObject { rows } => {
                let last = versions.last().map_or(0, |v| v.seq);
                if let Some(m) = self.version_meta(cluster, uid, last).await? {
                    let resource = resource_key(&m.group, &m.kind);
                    let key = object_key(&m.kind, &m.namespace, &m.name);
                    self.db
                        .write(
                            LATEST_DEL,
                            (
                                DELETE_TS_US,
                                cluster,
                                resource.as_str(),
                                latest_shard(uid),
                                uid,
                            ),
                        )
                        .await?;
                    self.db
                        .write(NAME_DEL, (DELETE_TS_US, cluster, key.as_str(), uid))
                        .await?;
                }
                self.db
                    .write(VERSIONS_DEL, (DELETE_TS_US, cluster, uid))
                    .await?;
                Ok(rows)
            }
            Trim::Cut { keep, older, frame } => {
                if frame {
                    let object = self.rebuild(cluster, uid, keep, &versions).await?;
                    self.reanchor(cluster, uid, keep, &object).await?;
                }
                if older > 0 {
                    self.db
                        .write(VERSIONS_BEFORE_DEL, (DELETE_TS_US, cluster, uid, keep))
                        .await?;
                }
                Ok(older)
            }
        }
    }

    /// Keeps the state of unchanged live objects: rewrites keyframes halfway
    /// through their TTL (wall clock, every few hours).
    async fn refresh(&self) -> Result<()> {
        let wall = kube_insight_core::time::now_ms();
        let last = self.last_refresh.load(Ordering::SeqCst);
        if last != i64::MIN && wall - last < REFRESH_EVERY_MS {
            return Ok(());
        }
        self.last_refresh.store(wall, Ordering::SeqCst);
        let kinds: BTreeSet<(String, String)> = self
            .catalog(SCOPE_KINDS)
            .await?
            .into_iter()
            .map(|r| (r.0, r.2))
            .collect();
        let mut refreshed = 0u64;
        for (cluster, resource) in &kinds {
            let mut live = false;
            for shard in 0..LATEST_SHARDS {
                let rows: Vec<(String, Option<bool>, Option<i64>)> = self
                    .db
                    .rows(
                        LATEST_AGES,
                        (cluster.as_str(), resource.as_str(), shard),
                        MAX_SCAN_ROWS,
                        "objects of one kind",
                    )
                    .await?;
                live |= rows.iter().any(|r| !r.1.unwrap_or(false));
                let due: Vec<String> = rows
                    .into_iter()
                    .filter(|(_, deleted, kms)| {
                        !deleted.unwrap_or(false)
                            && refresh_due(kms.unwrap_or(0), wall, self.retention_ms)
                    })
                    .map(|r| r.0)
                    .collect();
                refreshed += due.len() as u64;
                stream::iter(
                    due.iter()
                        .map(|uid| async move {
                            skip_corrupt(
                                self.refresh_object(cluster, resource, shard, uid, wall)
                                    .await,
                            )
                            .map(|_| ())
                        })
                        .collect::<Vec<_>>(),
                )
                .buffer_unordered(FANOUT)
                .try_collect::<Vec<()>>()
                .await?;
            }
            if live {
                // Kinds with live objects stay listed.
                self.register([(SCOPE_KINDS, cluster.clone(), 0, resource.clone())])
                    .await?;
            }
        }
        if refreshed > 0 {
            tracing::info!(
                objects = refreshed,
                "cassandra events: keyframes of unchanged objects rewritten"
            );
        }
        Ok(())
    }

    async fn refresh_object(
        &self,
        cluster: &str,
        resource: &str,
        shard: i32,
        uid: &str,
        wall: i64,
    ) -> Result<()> {
        let _lock = self.object_locks[stripe(uid)].lock().await;
        let Some(mut l) = self.latest(cluster, resource, shard, uid).await? else {
            return Ok(());
        };
        if l.state.deleted
            || l.from_versions
            || !refresh_due(l.keyframe_ms, wall, self.retention_ms)
        {
            return Ok(());
        }
        let (group, kind) = resource.split_once('/').unwrap_or(("", resource));
        if !self
            .reanchor(cluster, uid, l.state.seq, &l.state.object)
            .await?
        {
            // The version row expired: write it back from the latest state.
            let meta = VersionMeta {
                group: group.to_string(),
                kind: kind.to_string(),
                namespace: l.namespace.clone(),
                name: l.name.clone(),
                manager: None,
            }
            .encode()?;
            let frame = encode_object(&l.state.object, ZSTD_LEVEL)?;
            self.db
                .write(
                    VERSION_W,
                    (
                        cluster,
                        uid,
                        l.state.seq,
                        l.vrv.as_str(),
                        l.state.at_ms,
                        ChangeKind::Observed.as_str(),
                        true,
                        MaybeUnset::Set(meta),
                        MaybeUnset::<Vec<u8>>::Unset,
                        MaybeUnset::Set(frame),
                    ),
                )
                .await?;
        }
        let key = object_key(kind, &l.namespace, &l.name);
        self.db.write(NAME_W, (cluster, key.as_str(), uid)).await?;
        l.version_ms = wall;
        l.keyframe_ms = wall;
        let Some(written_us) = l.written_us else {
            return self.write_latest(cluster, resource, shard, uid, &l).await;
        };
        let object = encode_object(&l.state.object, ZSTD_LEVEL)?;
        self.db
            .write(
                LATEST_REFRESH_W,
                (
                    cluster,
                    resource,
                    shard,
                    uid,
                    l.namespace.as_str(),
                    l.name.as_str(),
                    l.state.rv.as_str(),
                    l.vrv.as_str(),
                    l.state.seq,
                    l.state.at_ms,
                    l.state.deleted,
                    l.version_ms,
                    l.keyframe_ms,
                    object,
                    written_us.saturating_add(1),
                ),
            )
            .await
    }
}

/// Appends one day's timeline rows, newest first.
fn flush_day(out: &mut Vec<ChangeRow>, day: &mut Vec<(i64, String, i64, ChangeRow)>) {
    day.sort_by(|a, b| (b.0, &b.1, b.2).cmp(&(a.0, &a.1, a.2)));
    out.extend(day.drain(..).map(|r| r.3));
}

#[async_trait]
impl EventStore for CassandraEventStore {
    async fn secret_key(&self) -> Result<kube_insight_core::event::SecretKey> {
        super::schema::secret_key(&self.db).await
    }

    async fn write_events(&self, events: Vec<KubeEvent>) -> Result<EventWriteOutcome> {
        if events.is_empty() {
            return Ok(EventWriteOutcome::default());
        }
        self.write_events_all(events).await
    }

    async fn write_objects(&self, writes: Vec<ObjectWrite>) -> Result<ObjectWriteOutcome> {
        if writes.is_empty() {
            return Ok(ObjectWriteOutcome::default());
        }
        self.write_objects_all(writes).await
    }

    async fn query_events(&self, query: &EventQuery) -> Result<Vec<KubeEvent>> {
        self.query_events_q(query).await
    }

    async fn changes(&self, query: &ChangeQuery) -> Result<Vec<ChangeRow>> {
        self.changes_q(query).await
    }

    async fn object_at(
        &self,
        cluster: Option<&str>,
        kind: &str,
        namespace: &str,
        name: &str,
        at_ms: i64,
    ) -> Result<Option<ObjectAt>> {
        self.object_at_q(cluster, kind, namespace, name, at_ms)
            .await
    }

    async fn live_objects(
        &self,
        cluster: &str,
        group: &str,
        kind: &str,
    ) -> Result<Vec<LiveObject>> {
        self.live_objects_q(cluster, group, kind).await
    }

    async fn set_checkpoint(
        &self,
        cluster: &str,
        group: &str,
        kind: &str,
        cp: WatchCheckpoint,
    ) -> Result<()> {
        let resource = resource_key(group, kind);
        // The time only moves forward (as the embedded store).
        let at = match self.checkpoint(cluster, group, kind).await? {
            Some(old) => old.at_ms.max(cp.at_ms),
            None => cp.at_ms,
        };
        self.db
            .write(
                CHECKPOINT_W,
                (cluster, resource.as_str(), cp.resource_version.as_str(), at),
            )
            .await
    }

    async fn checkpoint(
        &self,
        cluster: &str,
        group: &str,
        kind: &str,
    ) -> Result<Option<WatchCheckpoint>> {
        let resource = resource_key(group, kind);
        let r = self
            .db
            .exec(CHECKPOINT_Q, (cluster, resource.as_str()))
            .await?;
        let rows: Vec<(Option<String>, Option<i64>)> =
            super::session::result_rows(CHECKPOINT_Q, r)?;
        Ok(rows.into_iter().next().and_then(|(rv, at)| {
            Some(WatchCheckpoint {
                resource_version: rv?,
                at_ms: at?,
            })
        }))
    }

    async fn maintain_events(&self, now_ms: i64) -> Result<u64> {
        self.maintain(now_ms).await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use kube_insight_core::TimeRange;
    use serde_json::json;

    const T0: i64 = 1_717_171_200_000;

    // -----------------------------------------------------------------
    // Statements against the schema (no server: every column, bind type,
    // returned type and key restriction checked here, see `cql_check`).
    use super::super::cql_check::{signature, table};

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn statements_match_the_schema() {
        // (statement, bind types as the code binds them, returned types as
        // the code reads them).
        let cases: &[(&str, &str, &str)] = &[
            (KEY_W, "text text bigint bigint", ""),
            (KEY_SAME_COUNT, "text text bigint", "bigint"),
            (KEY_SAME_AT, "text text bigint bigint", "bigint"),
            (KEY_ANY, "text text", "bigint"),
            (KEYS_OF, "text text", "bigint bigint"),
            (KEY_DEL, "text text bigint bigint", ""),
            (KEYS_DEL, "text text", ""),
            (OCC_W, "text int bigint text bigint bigint blob", ""),
            (OCC_FROM, "text int bigint", "bigint text bigint bigint blob"),
            (OCC_RANGE, "text int bigint bigint", "bigint text bigint bigint blob"),
            (OCC_DAY, "text int", "bigint text bigint blob"),
            (OCC_ROW_DEL, "text int bigint text bigint", ""),
            (OCC_DAY_DEL, "bigint text int", ""),
            (CONTENT_W, "text int bigint bigint text bigint bigint", ""),
            (CONTENT_FROM, "text int bigint bigint", "bigint text bigint"),
            (CONTENT_RANGE, "text int bigint bigint bigint", "text"),
            (CONTENT_ROW_DEL, "text int bigint bigint text bigint", ""),
            (CONTENT_DEL, "bigint text int bigint", ""),
            (
                VERSION_W,
                "text text bigint text bigint text boolean blob blob blob",
                "",
            ),
            (VERSIONS_OF, "text text", "bigint bigint text boolean text"),
            (VERSION_ROW, "text text bigint", "text bigint text blob blob"),
            (VERSION_META, "text text bigint", "blob"),
            (VERSION_CHAIN, "text text bigint bigint", "bigint blob blob"),
            (VERSIONS_DEL, "bigint text text", ""),
            (VERSIONS_BEFORE_DEL, "bigint text text bigint", ""),
            (CHANGE_W, "text int bigint text bigint blob", ""),
            (CHANGES_RANGE, "text int bigint bigint", "bigint text bigint blob"),
            (CHANGE_UIDS, "text int", "text"),
            (CHANGES_DEL, "bigint text int", ""),
            (
                LATEST_W,
                "text text int text text text text text bigint bigint boolean bigint bigint blob",
                "",
            ),
            (
                LATEST_Q,
                "text text int text",
                "bigint text text bigint boolean bigint bigint blob text text int bigint",
            ),
            (
                LATEST_REFRESH_W,
                "text text int text text text text text bigint bigint boolean bigint bigint blob bigint",
                "",
            ),
            (LATEST_RV, "int text text text int text", ""),
            (
                LATEST_SHARD,
                "text text int",
                "text text text text bigint boolean blob",
            ),
            (LATEST_AGES, "text text int", "text boolean bigint"),
            (LATEST_DEL, "bigint text text int text", ""),
            (NAME_W, "text text text", ""),
            (NAME_UIDS, "text text", "text"),
            (NAME_DEL, "bigint text text text", ""),
            (CHECKPOINT_W, "text text text bigint", ""),
            (CHECKPOINT_Q, "text text", "text bigint"),
            (CATALOG_W, "int text int text", ""),
            (CATALOG_Q, "int", "text int text"),
            (CATALOG_DEL, "bigint int text int", ""),
        ];
        for (cql, binds, returns) in cases {
            let (b, r) = signature(cql);
            assert_eq!(b, words(binds), "binds of {cql}");
            assert_eq!(r, words(returns), "columns of {cql}");
            for banned in [
                "ALLOW FILTERING",
                " IN ",
                " LIKE ",
                "GROUP BY",
                " IF ",
                "BATCH",
            ] {
                assert!(!cql.contains(banned), "{cql}");
            }
        }
    }

    #[test]
    fn corrupt_records_are_skipped_other_errors_stand() {
        assert_eq!(skip_corrupt(Ok(3)).unwrap(), Some(3));
        assert_eq!(
            skip_corrupt::<u8>(Err(Error::Corrupt("x".into()))).unwrap(),
            None
        );
        assert!(skip_corrupt::<u8>(Err(Error::Unavailable("down".into()))).is_err());
        // A bad occurrence row does not hide the good ones.
        let mut folds = EventFolds::default();
        folds.add("prod", occ(&event("good", 1, T0)));
        let mut bad = occ(&event("bad", 1, T0 + 1));
        bad.data = b"{".to_vec();
        folds.add("prod", bad);
        assert_eq!(
            uids(&events_answer(folds, &equery(), 10).unwrap()),
            ["good"]
        );
    }

    #[test]
    fn tables_have_small_or_bucketed_partitions() {
        for name in ["event_occurrences", "event_content", "object_changes"] {
            assert!(table(name).partition.contains(&"day".to_string()), "{name}");
        }
        // One small partition per key.
        assert_eq!(table("event_keys").partition, ["cluster", "uid"]);
        assert_eq!(table("object_versions").partition, ["cluster", "uid"]);
        assert_eq!(table("object_names").partition, ["cluster", "object"]);
        assert_eq!(
            table("watch_checkpoints").partition,
            ["cluster", "resource"]
        );
        assert_eq!(
            table("object_latest").partition,
            ["cluster", "resource", "shard"]
        );
        assert_eq!(table("event_catalog").partition, ["scope"]);
        let o = StoreOptions::default();
        let ttl = |n: &str| {
            let t = super::super::schema::TABLES
                .iter()
                .find(|t| t.name == n)
                .unwrap();
            (t.ttl)(&o)
        };
        assert_eq!(ttl("event_occurrences"), o.retention.events);
        assert_eq!(
            ttl("object_versions"),
            o.retention.events + OBJECT_TTL_SLACK
        );
    }

    // -----------------------------------------------------------------
    // Keys

    #[test]
    fn days_and_keys() {
        assert_eq!(day_of(0), 0);
        assert_eq!(day_of(DAY_MS - 1), 0);
        assert_eq!(day_of(-1), -1);
        assert_eq!(day_of(i64::MAX / 2), i32::MAX);
        assert_eq!(day_of(i64::MIN), i32::MIN);
        assert_eq!(day_of(T0), 19_874);
        assert_eq!(resource_key("", "Pod"), "/Pod");
        assert_eq!(resource_key("apps", "Deployment"), "apps/Deployment");
        assert_eq!(object_key("deploy", "shop", "api"), "deployment/shop/api");
        assert_eq!(
            object_key("Deployment", "shop", "api"),
            object_key("deployments", "shop", "api")
        );
        assert_eq!(object_key("Node", "", "n1"), "node//n1");
        for uid in ["a", "b", "dep-uid", ""] {
            assert!((0..LATEST_SHARDS).contains(&latest_shard(uid)));
        }
        assert_ne!(content_hash("a", "bc", "d"), content_hash("ab", "c", "d"));
        assert_eq!(content_hash("a", "b", "c"), content_hash("a", "b", "c"));
    }

    // -----------------------------------------------------------------
    // Events

    use crate::conformance_events::event;

    /// An occurrence row as `write_event` stores it.
    fn occ(ev: &KubeEvent) -> Occurrence {
        Occurrence {
            at_ms: ev.last_ms,
            uid: ev.uid.clone(),
            count: if ev.is_synthetic() {
                0
            } else {
                ev.count as i64
            },
            first_ms: ev.first_ms,
            data: EventMeta::of(ev).encode().unwrap(),
        }
    }

    fn equery() -> EventQuery {
        EventQuery {
            cluster: None,
            namespace: None,
            kind: None,
            name: None,
            reason: None,
            event_type: None,
            range: TimeRange::new(0, i64::MAX / 2).unwrap(),
            limit: 1000,
        }
    }

    /// What `query_events` reads (rows at or after the start) and answers.
    fn answer(events: &[KubeEvent], q: &EventQuery) -> Vec<KubeEvent> {
        let mut folds = EventFolds::default();
        for e in events.iter().filter(|e| e.last_ms >= q.range.start_ms) {
            folds.add(&e.cluster, occ(e));
        }
        events_answer(folds, q, q.limit).unwrap()
    }

    fn uids(rows: &[KubeEvent]) -> Vec<&str> {
        rows.iter().map(|e| e.uid.as_str()).collect()
    }

    #[test]
    fn occurrences_fold_into_one_event() {
        let rows = [event("e1", 7, T0 + 1000), event("e1", 8, T0 + 60_000)];
        let out = answer(&rows, &equery());
        assert_eq!(out.len(), 1);
        assert_eq!(
            (out[0].count, out[0].first_ms, out[0].last_ms),
            (8, T0, T0 + 60_000)
        );
        assert_eq!(out[0].involved.name, "api-5f6d7c8b9-qwz7p");
        assert_eq!(out[0].origin, EventOrigin::Watch);
        // Order of arrival does not matter.
        let rows = [event("e1", 8, T0 + 60_000), event("e1", 7, T0 + 1000)];
        assert_eq!(answer(&rows, &equery())[0].count, 8);
    }

    #[test]
    fn event_filters_and_overlap_as_the_suite() {
        let mut a = event("a", 1, T0 + 10_000);
        a.event_type = "Normal".into();
        a.reason = "Pulled".into();
        let mut b = event("b", 1, T0 + 20_000);
        b.involved.kind = "Node".into();
        b.involved.name = "node-1".into();
        b.involved.namespace = String::new();
        b.namespace = "default".into();
        let c = event("c", 3, T0 + 30_000);
        let all = [a, b, c];
        let q = |f: &dyn Fn(&mut EventQuery)| {
            let mut q = equery();
            f(&mut q);
            q
        };
        assert_eq!(uids(&answer(&all, &equery())), ["c", "b", "a"]);
        assert_eq!(
            uids(&answer(&all, &q(&|q| q.kind = Some("po".into())))),
            ["c", "a"]
        );
        assert_eq!(
            uids(&answer(&all, &q(&|q| q.kind = Some("nodes".into())))),
            ["b"]
        );
        assert_eq!(
            uids(&answer(&all, &q(&|q| q.event_type = Some("Normal".into())))),
            ["a"]
        );
        assert_eq!(
            uids(&answer(
                &all,
                &q(&|q| {
                    q.reason = Some("BackOff".into());
                    q.namespace = Some("shop".into());
                })
            )),
            ["c"]
        );
        assert_eq!(
            uids(&answer(&all, &q(&|q| q.name = Some("node-1".into())))),
            ["b"]
        );
        let range = |a, b| TimeRange::new(a, b).unwrap();
        assert_eq!(
            uids(&answer(
                &all,
                &q(&|q| q.range = range(T0 + 5_000, T0 + 9_000))
            )),
            ["c", "b", "a"]
        );
        assert_eq!(
            uids(&answer(
                &all,
                &q(&|q| q.range = range(T0 + 25_000, T0 + 40_000))
            )),
            ["c"]
        );
        assert!(answer(&all, &q(&|q| q.range = range(T0 - 9_000, T0 - 1))).is_empty());
        assert_eq!(answer(&all, &q(&|q| q.limit = 2)).len(), 2);
    }

    fn synthetic(last_ms: i64) -> KubeEvent {
        let mut e = event("", 1, last_ms);
        e.uid = KubeEvent::synthetic_uid("Pod", "", "", &e.reason, &e.message);
        e.namespace = String::new();
        e.involved.namespace = String::new();
        e.involved.name = String::new();
        e.first_ms = last_ms;
        e.origin = EventOrigin::KubeEventer;
        e
    }

    #[test]
    fn synthetic_events_count_their_occurrences() {
        let rows = [synthetic(T0 + 900_000), synthetic(T0 + 960_000)];
        let out = answer(&rows, &equery());
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].count, out[0].first_ms), (2, T0 + 900_000));
        assert_eq!(out[0].origin, EventOrigin::KubeEventer);
    }

    #[test]
    fn twins_within_a_second_or_a_span() {
        let w = |at: i64, first: i64| (at, "w1".to_string(), first);
        let s = |at: i64| (at, "synthetic:x".to_string(), at);
        assert!(is_watched_twin(&[w(T0 + 1000, T0)], T0 + 1000, i64::MIN));
        assert!(is_watched_twin(
            &[w(T0 + 1000, T0 + 1000)],
            T0 + 2000,
            i64::MIN
        ));
        assert!(!is_watched_twin(
            &[w(T0 + 1000, T0 + 1000)],
            T0 + 2001,
            i64::MIN
        ));
        // Inside the watched event's span.
        assert!(is_watched_twin(
            &[w(T0 + 600_000, T0)],
            T0 + 300_000,
            i64::MIN
        ));
        assert!(!is_watched_twin(
            &[w(T0 + 600_000, T0)],
            T0 + 700_000,
            i64::MIN
        ));
        // Another synthetic event is no twin; nor a watched one past retention.
        assert!(!is_watched_twin(&[s(T0)], T0, i64::MIN));
        assert!(!is_watched_twin(&[w(T0, T0)], T0, T0 + 1));
        // Searched partitions: at most three days, the newest.
        assert_eq!(twin_days(T0, T0 + 1000), vec![day_of(T0)]);
        assert_eq!(twin_days(T0 - 10 * DAY_MS, T0).len(), 3);
        assert_eq!(*twin_days(T0 - 10 * DAY_MS, T0).last().unwrap(), day_of(T0));
    }

    #[test]
    fn events_in_the_timeline() {
        let e = event("e1", 2, T0 + 12_000);
        let mut folds = EventFolds::default();
        folds.add("prod", occ(&e));
        let q = ChangeQuery {
            cluster: None,
            namespace: None,
            workload: Some("api".into()),
            kind: None,
            range: TimeRange::new(0, i64::MAX / 2).unwrap(),
            limit: 10,
            include_events: true,
            include_status: true,
        };
        let rows = event_changes(folds, &q, None, 10).unwrap();
        assert_eq!(rows.len(), 1);
        let r = &rows[0];
        assert_eq!(
            (
                r.at_ms,
                r.category.as_str(),
                r.change.as_str(),
                r.summary.as_str()
            ),
            (
                T0 + 12_000,
                "event",
                "Warning",
                "BackOff: Back-off restarting failed container api (x2)"
            )
        );
        assert_eq!((r.count, r.manager.as_deref()), (Some(2), Some("kubelet")));
        let mut folds = EventFolds::default();
        folds.add("prod", occ(&e));
        let q = ChangeQuery {
            workload: Some("web".into()),
            ..q
        };
        assert!(event_changes(folds, &q, None, 10).unwrap().is_empty());
    }

    #[test]
    fn groups_keep_uid_and_content_together() {
        let mut other = event("x", 1, T0);
        other.reason = "Killing".into();
        let evs = [
            event("e1", 7, T0),
            other,
            event("e2", 1, T0), // same content as e1
            synthetic(T0),      // same content as e1
            event("e1", 8, T0 + 1),
        ];
        let g = event_groups(&evs);
        assert_eq!(g, vec![vec![0, 2, 3, 4], vec![1]]);
    }

    #[test]
    fn catalog_days_newest_first() {
        let cat = vec![
            ("prod".to_string(), 10, String::new()),
            ("prod".to_string(), 12, String::new()),
            ("dev".to_string(), 11, String::new()),
        ];
        assert_eq!(
            pick_days(&cat, None, 0, i32::MAX),
            vec![
                ("prod".to_string(), 12),
                ("dev".to_string(), 11),
                ("prod".to_string(), 10)
            ]
        );
        assert_eq!(
            pick_days(&cat, Some("prod"), 11, 20),
            vec![("prod".to_string(), 12)]
        );
        assert!(pick_days(&cat, Some("other"), 0, 20).is_empty());
    }

    #[test]
    fn stored_records_round_trip() {
        let e = event("e1", 3, T0);
        let m = EventMeta::of(&e);
        assert_eq!(EventMeta::decode(&m.encode().unwrap(), "e1").unwrap(), m);
        assert_eq!(m.content(), content_hash("BackOff", "Pod", &e.message));
        let err = EventMeta::decode(b"{", "uid-9").unwrap_err().to_string();
        assert!(err.contains("uid-9"), "{err}");
        let v = VersionMeta {
            group: "apps".into(),
            kind: "Deployment".into(),
            namespace: "shop".into(),
            name: "api".into(),
            manager: Some("argocd".into()),
        };
        assert_eq!(VersionMeta::decode(&v.encode().unwrap(), "u").unwrap(), v);
        let rec = ChangeRecord {
            change: "updated".into(),
            category: "object".into(),
            namespace: "shop".into(),
            kind: "Deployment".into(),
            name: "api".into(),
            workload: "api".into(),
            rv: "105".into(),
            summary: "image a → b".into(),
            manager: None,
            gitops: Some("argocd app=shop-api".into()),
            gap_from_ms: Some(5),
            patch: Some(json!({"spec": {"replicas": 5}})),
        };
        let back: ChangeRecord =
            serde_json::from_slice(&serde_json::to_vec(&rec).unwrap()).unwrap();
        assert_eq!(back, rec.clone());
        let row = rec.row("prod", T0, "dep-uid");
        assert_eq!(
            (row.cluster.as_str(), row.uid.as_str(), row.gap_from_ms),
            ("prod", "dep-uid", Some(5))
        );
    }

    // -----------------------------------------------------------------
    // Versions

    fn v(seq: i64, at: i64, change: ChangeKind, keyframe: bool) -> VersionRow {
        VersionRow {
            seq,
            at_ms: at,
            change,
            keyframe,
            rv: (100 + seq).to_string(),
        }
    }

    /// The suite's retention case: 20 versions a second apart, one three
    /// days later; keyframes every 16.
    fn retention_case() -> Vec<VersionRow> {
        let mut vs: Vec<VersionRow> = (0..20)
            .map(|i| {
                let c = if i == 0 {
                    ChangeKind::Created
                } else {
                    ChangeKind::Updated
                };
                v(i, T0 + i * 1000, c, i % 16 == 0)
            })
            .collect();
        vs.push(v(20, T0 + 3 * DAY_MS - 1000, ChangeKind::Updated, false));
        vs
    }

    #[test]
    fn retention_keeps_the_state_at_the_cutoff() {
        let vs = retention_case();
        let h = T0 + 2 * DAY_MS;
        assert_eq!(
            retention_plan(&vs, h),
            Trim::Cut {
                keep: 19,
                older: 19,
                frame: true
            }
        );
        let seen = visible(&vs, h);
        assert_eq!(seen.first().unwrap().seq, 19);
        assert_eq!(version_at(seen, T0 + DAY_MS).unwrap().seq, 19);
        assert_eq!(version_at(seen, T0 + 3 * DAY_MS).unwrap().seq, 20);
        assert!(
            version_at(seen, T0 + 5_000).is_none(),
            "history before the cutoff is gone"
        );
        // After the cut (19 made a keyframe, 0..18 deleted): nothing more.
        let mut after: Vec<VersionRow> = vs[19..].to_vec();
        after[0].keyframe = true;
        assert_eq!(retention_plan(&after, h), Trim::Nothing);
        assert_eq!(keyframe_for(&after, 20), Some(19));
        // Nothing before the horizon yet.
        assert_eq!(retention_plan(&vs, T0 - 1), Trim::Nothing);
        assert_eq!(visible(&vs, i64::MIN).len(), 21);
    }

    #[test]
    fn deleted_objects_go_and_recreations_win() {
        let gone = vec![
            v(0, T0, ChangeKind::Created, true),
            v(1, T0 + 10_000, ChangeKind::Updated, false),
            v(2, T0 + 20_000, ChangeKind::Deleted, true),
        ];
        assert_eq!(
            retention_plan(&gone, T0 + 20_001),
            Trim::DropObject { rows: 3 }
        );
        assert!(visible(&gone, T0 + 20_001).is_empty());
        assert_eq!(visible(&gone, T0 + 20_000).len(), 2);
        assert_eq!(version_at(&gone, T0 + 19_999).unwrap().seq, 1);
        assert_eq!(
            version_at(&gone, T0 + 20_000).unwrap().change,
            ChangeKind::Deleted
        );
        assert!(version_at(&gone, T0 - 1).is_none());
        assert_eq!(keyframe_for(&gone, 1), Some(0));
    }

    #[test]
    fn chains_rebuild_from_the_last_full_copy() {
        let a = json!({"spec": {"image": "a", "replicas": 1}});
        let b = json!({"spec": {"image": "b", "replicas": 1}});
        let c = json!({"spec": {"image": "b", "replicas": 3}});
        let patch = |from: &Value, to: &Value| {
            Some(
                encode_patch(&kube_insight_core::event::merge_diff(from, to).unwrap())
                    .unwrap()
                    .into_bytes(),
            )
        };
        let frame = |o: &Value| Some(encode_object(o, 3).unwrap());
        let rows = vec![
            (4, None, frame(&a)),
            (5, patch(&a, &b), None),
            (6, patch(&b, &c), None),
        ];
        assert_eq!(rebuild_from(&rows, "u").unwrap(), c);
        assert_eq!(rebuild_from(&rows[..2], "u").unwrap(), b);
        // A re-anchored version in the middle is used as the base.
        let rows2 = vec![
            (4, None, frame(&a)),
            (5, patch(&a, &b), frame(&b)),
            (6, patch(&b, &c), None),
        ];
        assert_eq!(rebuild_from(&rows2, "u").unwrap(), c);
        let gap = vec![(4, None, frame(&a)), (6, patch(&b, &c), None)];
        let e = rebuild_from(&gap, "uid-3").unwrap_err().to_string();
        assert!(e.contains("uid-3") && e.contains("version 5"), "{e}");
        assert!(rebuild_from(&rows[1..], "u").is_err());
    }

    fn latest(rv: &str, vrv: &str) -> Latest {
        Latest {
            state: LatestState {
                rv: rv.into(),
                seq: 3,
                deleted: false,
                at_ms: T0,
                object: Value::Null,
            },
            vrv: vrv.into(),
            namespace: "shop".into(),
            name: "api".into(),
            version_ms: 0,
            keyframe_ms: 0,
            ttl: None,
            written_us: None,
            from_versions: false,
        }
    }

    fn write(rv: &str, change: ChangeKind) -> ObjectWrite {
        ObjectWrite {
            cluster: "prod".into(),
            group: "apps".into(),
            kind: "Deployment".into(),
            namespace: "shop".into(),
            name: "api".into(),
            uid: "dep-uid".into(),
            resource_version: rv.into(),
            at_ms: T0,
            change,
            object: json!({}),
            managers: Vec::new(),
            gitops: None,
            gap: None,
        }
    }

    #[test]
    fn resource_versions_are_looked_up_only_when_needed() {
        let l = latest("110", "110");
        assert_eq!(
            rv_check(None, &write("1", ChangeKind::Updated)),
            RvCheck::NotStored
        );
        assert_eq!(
            rv_check(Some(&l), &write("110", ChangeKind::Updated)),
            RvCheck::Stored
        );
        assert_eq!(
            rv_check(Some(&l), &write("111", ChangeKind::Updated)),
            RvCheck::NotStored
        );
        // Older: maybe stored (a duplicate), maybe not (stale).
        assert_eq!(
            rv_check(Some(&l), &write("100", ChangeKind::Updated)),
            RvCheck::Scan
        );
        assert_eq!(
            rv_check(Some(&l), &write("deleted-110", ChangeKind::Deleted)),
            RvCheck::Scan
        );
        // An unchanged write moved rv past the last version's.
        let l = latest("112", "110");
        assert_eq!(
            rv_check(Some(&l), &write("112", ChangeKind::Updated)),
            RvCheck::NotStored
        );
        assert_eq!(
            rv_check(Some(&l), &write("110", ChangeKind::Updated)),
            RvCheck::Stored
        );
        assert_eq!(
            rv_check(Some(&l), &write("112", ChangeKind::Deleted)),
            RvCheck::Scan
        );
    }

    /// Simulates the write rules over uneven write times and checks that
    /// every version stays rebuildable (its row and its chain up to its
    /// keyframe alive) for as long as it can be asked for: until the next
    /// version's time plus the retention.
    #[test]
    fn keyframes_outlive_the_versions_built_on_them() {
        const H: i64 = 3_600_000;
        let retention = 30 * DAY_MS;
        let ttl = retention + OBJECT_TTL_SLACK.as_millis() as i64;
        // Write times: bursts, slow drips, long pauses.
        let mut times = vec![0, H, 2 * H, 13 * H, 14 * H, 36 * H, 37 * H];
        for i in 0..40 {
            times.push(40 * H + i * 11 * H);
        }
        times.extend([60 * DAY_MS, 60 * DAY_MS + 1, 200 * DAY_MS]);
        // Per version: (written, keyframe written at, chain start seq).
        struct Row {
            written: i64,
            frame_written: Option<i64>,
        }
        let mut rows: Vec<Row> = Vec::new();
        let (mut version_ms, mut keyframe_ms) = (0i64, 0i64);
        for (seq, &wall) in times.iter().enumerate() {
            let seq = seq as i64;
            if seq > 0 && reanchor_due(version_ms, wall) {
                rows[seq as usize - 1].frame_written = Some(wall);
                rows[seq as usize - 1].written = wall;
                keyframe_ms = wall;
            }
            let kf = keyframe_due(seq == 0 || seq % KEYFRAME_EVERY == 0, keyframe_ms, wall);
            if kf {
                keyframe_ms = wall;
            }
            rows.push(Row {
                written: wall,
                frame_written: kf.then_some(wall),
            });
            version_ms = wall;
        }
        for seq in 0..rows.len() - 1 {
            // Asked for until the next version's time plus the retention.
            let needed_until = times[seq + 1] + retention;
            let base = (0..=seq)
                .rev()
                .find(|&k| rows[k].frame_written.is_some())
                .unwrap();
            for (k, row) in rows.iter().enumerate().take(seq + 1).skip(base) {
                let alive_until = row.written + ttl;
                assert!(
                    alive_until >= needed_until,
                    "version {seq} needs row {k} until {needed_until}, it lives until {alive_until}"
                );
            }
            let frame_until = rows[base].frame_written.unwrap() + ttl;
            assert!(
                frame_until >= needed_until,
                "keyframe {base} of version {seq}"
            );
        }
        assert!(refresh_due(0, retention / 2 + 1, retention));
        assert!(!refresh_due(0, retention / 2, retention));
    }
}
