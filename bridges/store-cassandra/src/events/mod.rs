//! Events and object history in Cassandra ([`CassandraEventStore`]), with
//! the same answers as the embedded store (the planning of versions, the
//! codecs and the timeline rows are shared: [`kube_insight_store::event_codec`]).
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

mod maintain;
mod read;
mod records;
mod write;

use super::session::Db;
use async_trait::async_trait;
use futures::stream::{self, StreamExt, TryStreamExt};
use kube_insight_core::event::{
    normalize_kind, workload_of_ref, ChangeKind, EventOrigin, KubeEvent, ObjectRef,
    SYNTHETIC_UID_PREFIX,
};
use kube_insight_store::change_feed::is_status_only;
use kube_insight_store::error::{Error, Result};
use kube_insight_store::event_codec::{
    apply_patches, decode_object, decode_patch, encode_object, encode_patch, event_count,
    kind_matches, merge_timeline, plan_write, rv_num, EventLine, LatestState, VersionPlan,
    WritePlan, KEYFRAME_EVERY, TWIN_WINDOW_MS,
};
use kube_insight_store::events::{
    ChangeQuery, ChangeRow, EventQuery, EventStore, EventWriteOutcome, LiveObject, ObjectAt,
    ObjectWrite, ObjectWriteOutcome, WatchCheckpoint,
};
use kube_insight_store::StoreOptions;
use records::*;
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
    use crate::cql_check::{signature, table};

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
            let t = crate::schema::TABLES.iter().find(|t| t.name == n).unwrap();
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

    use kube_insight_store::conformance_events::event;

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
